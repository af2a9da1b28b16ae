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


def context_window(loaded: Loaded) -> int | None:
    """The model's maximum sequence length in tokens (prompt + generated), from its config."""
    cfg = getattr(loaded.model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
        n = getattr(cfg, key, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def _bos(loaded: Loaded) -> list[int]:
    from codetune.tokens.fim import _auto_bos

    bos = _auto_bos(loaded.tokenizer)
    return [] if bos is None else [bos]


def plain_prompt(loaded: Loaded, text: str) -> list[int]:
    """Left-to-right prompt: `text` taken literally (a "<fim_prefix>" in it stays text), with BOS
    when the tokenizer uses one."""
    ids = loaded.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
    return _bos(loaded) + list(ids)


def raw_prompt(loaded: Loaded, text: str) -> list[int]:
    """A prompt the client formatted itself (llm-vscode, Continue templates send
    "<fim_prefix>...<fim_suffix>...<fim_middle>"): special tokens in `text` ARE recognised."""
    ids = list(loaded.tokenizer.encode(text, add_special_tokens=False))
    bos = _bos(loaded)
    return ids if ids[:1] == bos else bos + ids


def completion_prompt(loaded: Loaded, prefix: str, suffix: str | None) -> tuple[list[int], str]:
    """(prompt ids, mode): a FIM prompt when the model has FIM tokens ("fim"); with no suffix and
    no FIM tokens, plain left-to-right completion of `prefix` ("plain")."""
    if loaded.fim is None and not suffix:
        return plain_prompt(loaded, prefix), "plain"
    return fim_prompt(loaded, prefix, suffix or ""), "fim"


def _holdback(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` must not be shown yet: the longest tail that could
    still grow into a stop string, and an unfinished UTF-8 character (decoded as U+FFFD)."""
    keep = len(text) - len(text.rstrip("\ufffd"))
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    return keep


class TokenStream:
    """Generate for one prompt; iterate to get the text in pieces (never past a stop).

    After iteration: `text` (the whole completion), `finish_reason` ("stop": a stop token or
    string; "length": max_new_tokens or the context window; "cancelled": `cancel` was set;
    "timeout": `deadline` (time.monotonic()) passed), `prompt_tokens`, `completion_tokens`.

    The prompt plus max_new_tokens is clamped to the context window; a prompt that fills it is a
    CodetuneError. Sampling draws from a per-stream torch.Generator, so a seed reproduces a stream
    even when other threads generate in between.
    """

    def __init__(self, loaded: Loaded, prompt: list[int], params: GenParams, *,
                 cancel: Any = None, deadline: float | None = None, lock: Any = None) -> None:
        if not prompt:
            raise CodetuneError("the prompt is empty; give some text to complete")
        window = context_window(loaded)
        budget = params.max_new_tokens
        if window is not None:
            if len(prompt) >= window:
                raise CodetuneError(
                    f"the prompt is {len(prompt)} tokens; this model's context window is {window} "
                    "tokens; shorten the prefix/suffix")
            budget = min(budget, window - len(prompt))
        self.loaded, self.prompt, self.params, self.budget = loaded, prompt, params, budget
        self.cancel, self.deadline, self.lock = cancel, deadline, lock
        self.text = ""
        self.finish_reason: str | None = None
        self.prompt_tokens = len(prompt)
        self.completion_tokens = 0

    def __iter__(self):
        import contextlib
        import time

        import torch

        loaded, params = self.loaded, self.params
        model = loaded.model
        device = getattr(model, "device", None) or next(model.parameters()).device
        stops = set(stop_ids(loaded))
        strings = tuple(s for s in params.stop if s)
        greedy = params.greedy or params.temperature <= 0
        warp = None if greedy else _warpers(params)
        gen = torch.Generator(device=device)
        if params.seed is not None:
            gen.manual_seed(params.seed)
        else:
            gen.seed()
        lock = self.lock if self.lock is not None else contextlib.nullcontext()
        cache_kw = _cache_name(model)
        ids = torch.tensor([self.prompt], dtype=torch.long, device=device)
        cache, new, shown = None, [], 0
        self.finish_reason = "length"
        for _ in range(self.budget):
            if self.cancel is not None and self.cancel.is_set():
                self.finish_reason = "cancelled"
                break
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.finish_reason = "timeout"
                break
            with lock, torch.inference_mode():
                out = model(input_ids=ids, use_cache=True, **{cache_kw: cache})
                logits = out.logits[:, -1, :].float()  # (1, vocab)
                cache = getattr(out, cache_kw)
                if greedy:
                    token = int(logits.argmax(-1))
                else:
                    probs = torch.softmax(warp(ids, logits), dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=gen))
            if token in stops:
                self.finish_reason = "stop"
                break
            new.append(token)
            self.completion_tokens = len(new)
            text, hit = cut_at_stops(_decode(loaded, new), strings)
            self.text = text
            if hit:
                self.finish_reason = "stop"
                break
            ready = len(text) - _holdback(text, strings)
            if ready > shown:
                yield text[shown:ready]
                shown = ready
            ids = torch.tensor([[token]], dtype=torch.long, device=device)
        if len(self.text) > shown and self.finish_reason in ("stop", "length"):
            yield self.text[shown:]

    def run(self) -> str:
        """Generate to the end; returns `text`."""
        for _ in self:
            pass
        return self.text


def _cache_name(model: Any) -> str:
    """The KV-cache argument of the model's forward: `cache` in recent transformers (5.2x),
    `past_key_values` before (still accepted there, with a deprecation warning per process)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _warpers(params: GenParams):
    """The sampling warpers in `model.generate`'s order: temperature, top-k, top-p."""
    from transformers import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warp = LogitsProcessorList()
    if params.temperature != 1.0:
        warp.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k and params.top_k > 0:
        warp.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        warp.append(TopPLogitsWarper(params.top_p))
    return warp


def load_tokenizer(target: str) -> tuple[Any, Any]:
    """(tokenizer, FimTokens or None) of a target, without loading the weights: a run folder's
    own tokenizer and FIM format, else the model's."""
    from codetune.tokens.fim import detect_fim

    if is_run_dir(target):
        from transformers import AutoTokenizer

        tokenizer, fmt = AutoTokenizer.from_pretrained(str(target)), run_config(target).fim.format
    else:
        from codetune import model as M
        from codetune.config import ModelConfig

        tokenizer, fmt = M.load_tokenizer(ModelConfig(name=target)), "auto"
    try:
        return tokenizer, detect_fim(tokenizer, fmt)
    except CodetuneError:
        return tokenizer, None
