"""`--to tabby`: the model folder Tabby serves (TabbyML/tabby MODEL_SPEC.md):

    tabby.json                      {"prompt_template": "<fim_prefix>{prefix}<fim_suffix>..."}
    ggml/model-00001-of-00001.gguf  the GGUF file (llama.cpp's shard naming, 1-based)

`prompt_template` is optional in the spec; when present Tabby treats the model as a FIM model
and replaces `{prefix}` and `{suffix}`. Tabby runs the file with llama.cpp, so the sentinels are
spelled as llama.cpp reads them (`prompts.llama_cpp_template`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codetune.export.prompts import llama_cpp_template

GGUF_PATH = "ggml/model-00001-of-00001.gguf"


def write(folder: Path, fim: Any, name: str) -> str:
    """tabby.json in `folder` (the GGUF is already at GGUF_PATH); returns the README section."""
    spec = {"prompt_template": llama_cpp_template(fim.format, "{prefix}", "{suffix}")}
    (folder / "tabby.json").write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return f"""## Run it with Tabby

```bash
tabby serve --model $(pwd) --device cuda     # in this folder: an absolute path to it
```

or in `~/.tabby/config.toml`:

```toml
[model.completion.local]
model_id = "/absolute/path/to/{name}"
```

`tabby.json` holds the FIM prompt template the model was trained with:
`{spec["prompt_template"]}`.
"""
