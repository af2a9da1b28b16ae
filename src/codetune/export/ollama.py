"""`--to ollama`: a folder Ollama builds a model from (`ollama create NAME -f Modelfile`).

    model.gguf   the GGUF file
    Modelfile    FROM ./model.gguf; a TEMPLATE that branches on .Suffix (Ollama answers
                 "does not support insert" to a request with `suffix` unless the template
                 mentions .Suffix: ollama/ollama#5207, docs/template.md "Suffix"); a stop
                 PARAMETER for every FIM sentinel, separator and EOS; codetune's sampling
                 defaults (infer.generate.GenParams)

Template syntax: Go templates over Ollama's variables .Prompt, .Suffix, with `{{-` trimming the
whitespace before it, as in Ollama's own FIM templates (codellama:code, qwen2.5-coder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codetune.export.prompts import llama_cpp_template, stop_texts
from codetune.infer.generate import GenParams

GGUF_NAME = "model.gguf"


def modelfile(fim: Any, context: int | None) -> str:
    d = GenParams()
    fill = llama_cpp_template(fim.format, "{{ .Prompt }}", "{{ .Suffix }}")
    lines = [f"FROM ./{GGUF_NAME}", "",
             "# with a suffix: the FIM prompt codetune trained on; without: plain completion",
             f'TEMPLATE """{{{{- if .Suffix }}}}{fill}{{{{- else }}}}{{{{ .Prompt }}}}{{{{- end }}}}"""',
             ""]
    lines += [f'PARAMETER stop "{s}"' for s in stop_texts(fim)]
    lines += [f"PARAMETER temperature {d.temperature}", f"PARAMETER top_p {d.top_p}",
              f"PARAMETER top_k {d.top_k}", f"PARAMETER num_predict {d.max_new_tokens}"]
    if context:
        lines.append(f"PARAMETER num_ctx {min(context, 8192)}")
    return "\n".join(lines) + "\n"


def write(folder: Path, fim: Any, name: str, context: int | None) -> str:
    """The Modelfile in `folder` (the GGUF is already there); returns the README section."""
    (folder / "Modelfile").write_text(modelfile(fim, context), encoding="utf-8")
    return f"""## Run it with Ollama

```bash
ollama create {name} -f Modelfile      # in this folder
ollama run {name} 'def fib(n):'         # plain completion
curl http://127.0.0.1:11434/api/generate -d '{{"model": "{name}", "prompt": "def fib(n):\\n    ",
  "suffix": "\\n    return a\\n", "options": {{"temperature": 0}}, "stream": false}}'
```

With `suffix`, Ollama fills the Modelfile's TEMPLATE with the FIM prompt the model was trained
on; generation stops at every FIM sentinel and EOS (the `PARAMETER stop` lines).

### Continue (VS Code / JetBrains), `~/.continue/config.yaml`

```yaml
models:
  - name: {name}
    provider: ollama
    model: {name}
    roles:
      - autocomplete
```

### llama.vscode

llama.vscode talks to llama.cpp's `llama-server`, which reads the FIM tokens from the GGUF
metadata (`tokenizer.ggml.fim_*_token_id`) for its `/infill` endpoint:

```bash
llama-server -m {GGUF_NAME} --port 8012 --ctx-size 0 --cache-reuse 256
```

and in VS Code settings: `"llama-vscode.endpoint": "http://127.0.0.1:8012"`.
"""
