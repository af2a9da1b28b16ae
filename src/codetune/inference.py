"""Loading a model for inference and generating completions: shared by eval, complete, serve.

A *target* is one of
- a run folder written by `codetune train` (base model from its run.json + the adapter; the
  run's tokenizer, which carries any FIM tokens added for training),
- a merged model folder written by `codetune merge` (or any causal LM folder / Hub id / .gguf).

Prompts are built with the same FIM registry as training (`tokens.fim.build_prompt`), and
generation stops at every FIM sentinel, EOS and file separator of the family, so the model
output is only the infill: the prompt is never echoed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    fim: Any  # FimTokens, or None when the tokenizer has no FIM tokens
    description: str  # one line: what was loaded
    run_dir: Path | None = None  # the run folder, when the target is one


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "run.json").is_file() and (Path(path) / "config.yaml").is_file()


def run_config(run_dir: str | Path):
    from codetune import config

    return config.load(Path(run_dir) / "config.yaml")


def load(target: str, adapter: str | None = None, quantization: str = "none",
         dtype: str = "auto", with_adapter: bool = True) -> Loaded:
    """Load `target` (run folder, model folder, Hub id, .gguf) ready for generation.

    `with_adapter=False` on a run folder gives its *base* model (with the run's tokenizer, so
    base and fine-tuned see identical token ids): what `eval` compares against."""
    from codetune import model as M
    from codetune.tokens.fim import detect_fim

    run_dir = Path(target) if is_run_dir(target) else None
    if run_dir is not None:
        cfg = run_config(run_dir)
        model_cfg = dataclasses.replace(cfg.model, quantization=quantization, dtype=dtype)
        fmt = cfg.fim.format
        adapter = str(run_dir) if with_adapter and cfg.model.finetune == "lora" else None
        if cfg.model.finetune == "full" and with_adapter:
            model_cfg = dataclasses.replace(model_cfg, name=str(run_dir), revision=None)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(run_dir))  # with any added FIM tokens
    else:
        from codetune.config import ModelConfig

        model_cfg = ModelConfig(name=target, quantization=quantization, dtype=dtype)
        fmt = "auto"
        tokenizer = M.load_tokenizer(model_cfg)
    model = M.load_model(model_cfg, tokenizer)
    what = f"{model_cfg.name}"
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        what += f" + adapter {adapter}"
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        fim = detect_fim(tokenizer, fmt)
    except CodetuneError:
        fim = None
    return Loaded(model, tokenizer, fim, what, run_dir)


@dataclass
class GenParams:
    """Sampling settings. The defaults are the seed's (temperature 0.2, top-k 50, top-p 0.95,
    128 new tokens); `greedy=True` ignores the sampling ones."""

    max_new_tokens: int = 128
    temperature: float = 0.2
    top_k: int = 50
    top_p: float = 0.95
    greedy: bool = False
    stop: tuple[str, ...] = ()  # extra stop strings (e.g. "\n" for one-line completion)
    seed: int | None = None


def fim_prompt(loaded: Loaded, prefix: str, suffix: str) -> list[int]:
    """Token ids of the FIM prompt (PSM) for this model family."""
    from codetune.tokens.fim import build_prompt

    if loaded.fim is None:
        raise CodetuneError(
            "this model's tokenizer has no Fill-in-the-Middle tokens, so it cannot infill; "
            "give only a prefix (left-to-right completion) or use a FIM-trained model")
    return build_prompt(loaded.tokenizer, loaded.fim, prefix, suffix)


def stop_ids(loaded: Loaded) -> list[int]:
    ids = set(loaded.fim.stop_ids) if loaded.fim is not None else set()
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return sorted(ids)


def cut_at_stops(text: str, stops: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _decode(loaded: Loaded, ids: list[int]) -> str:
    if loaded.fim is not None:
        from codetune.tokens.fim import decode_middle

        return decode_middle(loaded.tokenizer, loaded.fim, ids)
    return loaded.tokenizer.decode(ids, skip_special_tokens=True)


def generate(loaded: Loaded, prompts: list[list[int]], params: GenParams) -> list[str]:
    """Complete a batch of prompts (token ids); returns only the generated text of each, cut at
    the first stop token or stop string. Left-padded batch, KV cache on."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    if not prompts:
        return []
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    device = next(model.parameters()).device
    kw: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "eos_token_id": stop_ids(loaded),
                          "pad_token_id": pad, "use_cache": True}
    if params.greedy:
        kw["do_sample"] = False
    else:
        kw.update(do_sample=True, temperature=params.temperature, top_k=params.top_k,
                  top_p=params.top_p)
        if params.seed is not None:
            torch.manual_seed(params.seed)
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
    stops = set(stop_ids(loaded))
    texts = []
    for row in out[:, width:].tolist():
        new = []
        for t in row:
            if t in stops:
                break
            new.append(t)
        text, _ = cut_at_stops(_decode(loaded, new), params.stop)
        texts.append(text)
    return texts


def describe_run(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())
