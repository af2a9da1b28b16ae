"""`--to vllm`: the exact commands to serve the model with vLLM, and a client that can use it.

- A LoRA run: the adapter on its base, `vllm serve BASE --enable-lora --lora-modules
  NAME=RUN --max-lora-rank R`. vLLM accepts only the ranks in `MAX_LORA_RANKS`
  (vllm/config/lora.py, `MaxLoRARanks`; default 16), so R is the run's `lora.r` rounded up to
  one of them. Clients send `model: NAME`.
- A run that added FIM tokens (`fim.add_tokens`: the vocabulary changed, which an adapter on
  the unchanged base cannot carry), a full fine-tune, or a merged model: `vllm serve MODEL`.
  For the added-tokens run the merged model is written into OUT/model.

vLLM's /v1/completions rejects `suffix`, so `client.py` formats the FIM prompt itself, in the
HF tokenizer's spelling (`prompts.hf_template`), and stops on the FIM token ids
(`stop_token_ids`, a vLLM extension: stop strings would never match special tokens, which vLLM
leaves out of the text). `codetune serve --upstream` puts codetune's API in front instead.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError
from codetune.export.prompts import hf_template
from codetune.infer.generate import GenParams

MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank(r: int) -> int:
    """The smallest rank vLLM accepts for --max-lora-rank that holds an adapter of rank r."""
    for allowed in MAX_LORA_RANKS:
        if allowed >= r:
            return allowed
    raise CodetuneError(f"LoRA rank {r} is above vLLM's largest --max-lora-rank "
                        f"({MAX_LORA_RANKS[-1]}); export the merged model instead "
                        "(`codetune merge RUN -o MERGED`, then `codetune export MERGED --to vllm`)")


def serve_command(model: str, name: str, *, revision: str | None = None,
                  adapter: str | None = None, rank: int | None = None) -> str:
    q = shlex.quote
    cmd = ["vllm", "serve", q(model)]
    if revision:
        cmd += ["--revision", q(revision)]
    if adapter is None:
        cmd += ["--served-model-name", q(name)]
    else:
        cmd += ["--enable-lora", "--lora-modules", q(f"{name}={adapter}"),
                "--max-lora-rank", str(rank)]
    return " ".join(cmd)


def client_script(fim: Any, name: str, port: int = 8000) -> str:
    d = GenParams()
    head, _, rest = hf_template(fim.format, "\x00", "\x01").partition("\x00")
    middle, _, tail = rest.partition("\x01")
    return f'''"""Fill a hole with {name} served by vLLM (`vllm serve ...`, see README.md).

vLLM's /v1/completions rejects `suffix`, so the FIM prompt is formatted here, exactly as
codetune trained the model ({fim.family} format)."""
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="EMPTY")
prefix = "def fib(n):\\n    a, b = 0, 1\\n    "
suffix = "\\n    return a\\n"
prompt = {head!r} + prefix + {middle!r} + suffix + {tail!r}
out = client.completions.create(
    model={name!r}, prompt=prompt, max_tokens={d.max_new_tokens}, temperature={d.temperature},
    top_p={d.top_p},
    # every FIM sentinel, separator and EOS: vLLM leaves special tokens out of the text, so stop
    # strings would not match them
    extra_body={{"stop_token_ids": {list(fim.stop_ids)}, "top_k": {d.top_k}}},
)
print(out.choices[0].text)
'''


def write(folder: Path, fim: Any, name: str, command: str, source: str,
          note: str) -> str:
    """client.py in `folder`; returns the README section."""
    if fim is None:
        raise CodetuneError("the model's tokenizer has no FIM tokens, so there is no FIM "
                            "prompt to send; export a FIM-trained run")
    (folder / "client.py").write_text(client_script(fim, name), encoding="utf-8")
    return f"""## Run it with vLLM

{note}

```bash
{command}
python client.py          # a FIM completion through the OpenAI client
```

vLLM's `/v1/completions` does not accept `suffix`; `client.py` sends the FIM prompt already
formatted. To keep codetune's API (`suffix`, `/generate`, API key, limits, the stop tokens and
the suffix-repetition trimming) in front of vLLM's batching:

```bash
codetune serve {shlex.quote(source)} --upstream http://127.0.0.1:8000 --upstream-model {shlex.quote(name)} --port 8001
codetune editor-config continue --url http://127.0.0.1:8001
```
"""
