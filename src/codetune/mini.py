"""codetune-mini: the small code model that ships inside the package.

A 4-layer GPT-BigCode (StarCoder architecture, so LoRA targets and the StarCoder FIM format apply)
with its own 8k byte-level BPE tokenizer, pretrained on the Python standard library by
`scripts/build_mini.py`. It lets every command run offline on a CPU when no `--model` is given,
and it is what `codetune demo` fine-tunes. Its measured quality is in `MODEL_CARD.md` beside the
weights; it is a demonstration model, not an assistant.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError

__all__ = ["MINI_NAME", "MINI_PATH", "REAL_RECIPE", "default_model", "default_model_note",
           "heldout_info", "mini_available", "mini_eval_overrides", "mini_train_overrides"]

MINI_NAME = "codetune-mini"
REAL_RECIPE = "starcoderbase-1b-qlora"
# The installed package's copy (a real directory for regular and editable installs).
MINI_PATH: Path = Path(str(resources.files("codetune") / "assets" / MINI_NAME))

# The model's 1024 positions: codetune eval's defaults (1536-token prompts, 1024-token scoring
# windows, FIM scoring up to twice that) would run past them.
_N_POSITIONS = 1024
_EVAL_FIT = {"prompt_tokens": 768, "bpb_window": 511}


def mini_available() -> bool:
    """True when the packaged weights and tokenizer are installed."""
    return all((MINI_PATH / f).is_file() for f in
               ("config.json", "model.safetensors", "tokenizer.json"))


def default_model() -> str:
    """The folder of codetune-mini, for `--model` when none is given; a clear error when the
    package was installed without its data files."""
    if not mini_available():
        raise CodetuneError(f"no --model given and the bundled {MINI_NAME} is missing from "
                            f"{MINI_PATH} (reinstall codetune); or pass --model, e.g. "
                            f"the recipe {REAL_RECIPE} on a GPU")
    return str(MINI_PATH)


def default_model_note() -> str:
    """The one line printed when a command falls back to codetune-mini."""
    return (f"note: no --model given, using the bundled {MINI_NAME} (5 M params, a demo model "
            f"trained on the Python stdlib); for real work use {REAL_RECIPE} on a GPU")


def mini_eval_overrides(current: Any | None = None) -> list[str]:
    """`eval.*` overrides that keep codetune eval inside codetune-mini's 1024 positions.

    With `current` (an EvalConfig), only the keys whose value is too large are returned."""
    out = []
    for key, limit in _EVAL_FIT.items():
        if current is None or getattr(current, key) > limit:
            out.append(f"eval.{key}={limit}")
    return out


def mini_train_overrides(current: Any | None = None) -> list[str]:
    """`data.seq_length` within codetune-mini's 1024 positions (the default 2048 would index past
    its position embeddings). With `current` (a DataConfig), only when it is too long."""
    if current is None or current.seq_length > _N_POSITIONS:
        return [f"data.seq_length={_N_POSITIONS}"]
    return []


def heldout_info() -> dict[str, Any]:
    """heldout.json: the stdlib files kept out of pretraining, the Python version, the hash of
    the file list."""
    return json.loads((MINI_PATH / "heldout.json").read_text(encoding="utf-8"))
