"""Loading a model for inference: a run folder (base + adapter, the run's tokenizer), a
merged model folder, a Hub id or a .gguf file; shared by eval, complete, serve and merge."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune import config
from codetune.config import ModelConfig
from codetune.errors import CodetuneError
from codetune.model import load as M


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    fim: Any  # FimTokens, or None when the tokenizer has no FIM tokens
    description: str  # one line: what was loaded
    run_dir: Path | None = None  # the run folder, when the target is one
    quantization: str = "none"  # how the weights were loaded: none, 8bit or 4bit


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "run.json").is_file() and (Path(path) / "config.yaml").is_file()


def run_config(run_dir: str | Path):
    return config.load(Path(run_dir) / "config.yaml")


def check_run_finished(run_dir: Path, finetune: str) -> None:
    """A run folder holds weights only once training ended: one killed before that has
    run.json and config.yaml but no adapter (and no tokenizer), and loading it would fail
    deep inside transformers with advice that does not apply."""
    weights = (["adapter_model.safetensors", "adapter_model.bin"] if finetune == "lora" else
               ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"])
    if any((run_dir / w).is_file() for w in weights):
        return
    # (train's checkpoint module is not imported here: infer and train stay independent)
    saved = sorted((run_dir / "checkpoints").glob("checkpoint-*"),
                   key=lambda p: int(p.name.rpartition("-")[2]) if p.name[-1].isdigit() else -1)
    last = saved[-1] if saved else None
    hint = (f"; its newest checkpoint can be used meanwhile: --model BASE --adapter {last}"
            if last is not None and finetune == "lora" else "")
    raise CodetuneError(f"{run_dir} has no trained weights: its training stopped before the "
                        f"end. Finish it with `codetune train -o {run_dir} --resume`{hint}")


def load(target: str, adapter: str | None = None, quantization: str = "auto",
         dtype: str = "auto", with_adapter: bool = True) -> Loaded:
    """Load `target` (run folder, model folder, Hub id, .gguf) ready for generation.

    `quantization="auto"` loads the weights unquantized where they fit, even for a run trained
    in 4 bits (see `model.inference_quantization`); "none", "8bit", "4bit" force one.
    `with_adapter=False` on a run folder gives its *base* model (with the run's tokenizer, so
    base and fine-tuned see identical token ids): what `eval` compares against."""
    from codetune.tokens.fim import detect_fim  # tokens.fim imports numpy (~0.1 s)

    run_dir = Path(target) if is_run_dir(target) else None
    if run_dir is not None:
        cfg = run_config(run_dir)
        check_run_finished(run_dir, cfg.model.finetune)
        quant = M.inference_quantization(dataclasses.replace(cfg.model, dtype=dtype),
                                         quantization, cfg.model.quantization)
        model_cfg = dataclasses.replace(cfg.model, quantization=quant, dtype=dtype)
        fmt = cfg.fim.format
        adapter = str(run_dir) if with_adapter and cfg.model.finetune == "lora" else None
        if cfg.model.finetune == "full" and with_adapter:
            model_cfg = dataclasses.replace(model_cfg, name=str(run_dir), revision=None)
        tokenizer = M.load_tokenizer(str(run_dir))  # the run's, with any added FIM tokens
    else:
        quant = "none" if quantization == "auto" else quantization
        model_cfg = ModelConfig(name=target, quantization=quant, dtype=dtype)
        fmt = "auto"
        tokenizer = M.load_tokenizer(model_cfg)
    model = M.load_model(model_cfg, tokenizer)
    what = f"{model_cfg.name}"
    if adapter is not None:
        from peft import PeftModel  # heavy: peft

        model = PeftModel.from_pretrained(model, adapter)
        what += f" + adapter {adapter}"
    if quant != "none":
        what += f" ({quant})"
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        fim = detect_fim(tokenizer, fmt)
    except CodetuneError:
        fim = None
    return Loaded(model, tokenizer, fim, what, run_dir, quant)


def context_window(loaded: Loaded) -> int | None:
    """The model's maximum sequence length in tokens (prompt + generated), from its config."""
    cfg = getattr(loaded.model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
        n = getattr(cfg, key, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def tokenizer_and_fim(target: str) -> tuple[Any, Any]:
    """(tokenizer, FimTokens or None) of a target, without loading the weights: a run folder's
    own tokenizer and FIM format, else the model's."""
    from codetune.tokens.fim import detect_fim  # tokens.fim imports numpy (~0.1 s)

    tokenizer = M.load_tokenizer(str(target))
    fmt = run_config(target).fim.format if is_run_dir(target) else "auto"
    try:
        return tokenizer, detect_fim(tokenizer, fmt)
    except CodetuneError:
        return tokenizer, None
