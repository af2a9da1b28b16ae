"""Loading a model for inference and generating completions: shared by eval, complete, serve.

A *target* is one of
- a run folder written by `codetune train` (base model from its run.json + the adapter; the
  run's tokenizer, which carries any FIM tokens added for training),
- a merged model folder written by `codetune merge` (or any causal LM folder / Hub id / .gguf).

Prompts are built with the same FIM registry as training (`tokens.fim.build_prompt`), and
generation stops at every FIM sentinel, EOS and file separator of the family, so the model
output is only the infill: the prompt is never echoed. Where a completion ends is decided by one
`Finisher` (stop strings, and a middle that starts to repeat the suffix), used token by token by
`GenerationStream` (complete, serve) and by `generations` (eval), so they cannot disagree.
"""


from __future__ import annotations

import contextlib
import copy
import inspect
import time
from dataclasses import dataclass
from typing import Any

from codetune.config import GREEDY_BELOW, GenerationConfig  # noqa: F401 - re-exported
from codetune.errors import CodetuneError
from codetune.infer.finish import Finisher
from codetune.infer.loader import Loaded, context_window
from codetune.infer.prompts import decode, prompt_hole, stop_ids

GenParams = GenerationConfig
"""Sampling settings: config.py's `generation` section, defined there once (the defaults are
the reference notebook's: temperature 0.2, top-k 50, top-p 0.95, 128 new tokens; `greedy=True`,
or a temperature under `GREEDY_BELOW`, ignores the sampling ones)."""


def _finisher(params: GenParams, hole: tuple[str | None, str | None] | None) -> Finisher:
    prefix, suffix = hole or (None, None)
    return Finisher(params.stop, suffix=suffix, prefix=prefix)


class _Ending:
    """One completion in progress: its tokens, their text, and where its `Finisher` ended it.
    `GenerationStream` and `generations` both feed it token by token, so they end alike."""

    def __init__(self, loaded: Loaded, finisher: Finisher, stops: set[int]) -> None:
        self.loaded, self.finisher, self.stops = loaded, finisher, stops
        self.tokens: list[int] = []
        self.raw = ""  # the decoded tokens, uncut
        self.text: str | None = None  # the completion, once ended
        self.reason: str | None = None
        self.trimmed_suffix = False

    def push(self, token: int) -> bool:
        """Add one generated token; True once the completion has ended."""
        if self.text is not None:
            return True
        if token in self.stops:
            self.end("stop")
            return True
        self.tokens.append(token)
        self.raw = decode(self.loaded, self.tokens)
        text, why = self.finisher.step(self.raw)
        if why is not None:
            self.text, self.reason, self.trimmed_suffix = text, "stop", why == "suffix"
            return True
        return False

    def end(self, reason: str) -> None:
        """Generation stopped (`reason`: "stop", "length", "cancelled", "timeout"); a no-op
        once ended. A text that the suffix rules cut after running out of tokens is complete,
        so it reports "stop", not "length"."""
        if self.text is None:
            text, why = self.finisher.finish(self.raw)
            self.text, self.trimmed_suffix = text, why == "suffix"
            self.reason = "stop" if why and reason == "length" else reason


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (stop token, stop string, the suffix starting over) or "length"
    trimmed_suffix: bool  # the middle went on into the suffix and was cut there
    completion_tokens: int
    nll: float | None = None  # nats of the ids asked for with `generations(score=...)`


def generate(loaded: Loaded, prompts: list[list[int]], params: GenParams,
             holes: list[tuple[str | None, str | None] | None] | None = None) -> list[str]:
    """The texts of `generations`."""
    return [g.text for g in generations(loaded, prompts, params, holes)]


def generations(loaded: Loaded, prompts: list[list[int]], params: GenParams,
                holes: list[tuple[str | None, str | None] | None] | None = None,
                score: list[list[int]] | None = None) -> list[Generation]:
    """Complete a batch of prompts (token ids); only the generated text of each, ended by a
    `Finisher` (stop tokens, stop strings, the suffix starting over). `holes`: the (prefix,
    suffix) of each prompt; by default read back from FIM prompts (`prompt_hole`). Left-padded
    batch, KV cache on; a row that has ended is padded until the whole batch has.

    `score`: ids to score after each prompt, teacher-forced (eval: the hole's true middle);
    each Generation's `nll` is their negative log-likelihood in nats. They are scored from the
    generation's own prefill (`_prefill`): the prompt is run once for both, so scoring costs
    only the scored tokens, where a separate pass costs a whole prompt again."""
    import torch  # heavy: torch
    from transformers import StoppingCriteria, StoppingCriteriaList  # heavy: transformers

    tok, model = loaded.tokenizer, loaded.model
    if not prompts:
        return []
    holes = holes if holes is not None else [prompt_hole(loaded, p) for p in prompts]
    stops = set(stop_ids(loaded))
    ends = [_Ending(loaded, _finisher(params, h), stops) for h in holes]

    class Ended(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):  # (B, T) -> (B,) bool
            done = [e.push(t) for e, t in zip(ends, input_ids[:, -1].tolist(), strict=True)]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    device = next(model.parameters()).device
    kw: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "eos_token_id": stop_ids(loaded),
                          "pad_token_id": pad, "use_cache": True,
                          "stopping_criteria": StoppingCriteriaList([Ended()])}
    if params.is_greedy:
        kw["do_sample"] = False
    else:
        kw.update(do_sample=True, temperature=params.temperature, top_k=params.top_k,
                  top_p=params.top_p)
        if params.seed is not None:
            torch.manual_seed(params.seed)
    ids, mask = ids.to(device), mask.to(device)
    nll: list[float | None] = [None] * len(prompts)
    with torch.no_grad():
        if score is not None:
            cache = _prefill(model, ids, mask)
            nll = _score(model, ids, mask, cache, score)
            kw[_cache_name(model)] = cache
        model.generate(input_ids=ids, attention_mask=mask, **kw)
    out = []
    for e, n in zip(ends, nll, strict=True):
        e.end("length")
        out.append(Generation(e.text or "", e.reason or "length", e.trimmed_suffix,
                              len(e.tokens), n))
    return out


def _positions(mask):
    """Position ids of a left-padded batch, as `generate` computes them (pads at 1)."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def _prefill(model, ids, mask):
    """The KV cache of every prompt but its last token, (B, W-1): what `generate` continues
    from when handed it (it runs the last token itself, then decodes), and what `_score`
    copies to run the scored ids after the prompt."""
    from transformers import DynamicCache  # heavy: transformers

    cache = DynamicCache(config=model.config)
    if ids.shape[1] > 1:
        model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
              position_ids=_positions(mask)[:, :-1], use_cache=True, logits_to_keep=1,
              **{_cache_name(model): cache})
    return cache


def _score(model, ids, mask, cache, score: list[list[int]]) -> list[float | None]:
    """Nats of `score[i]` after prompt i: the prompt's last token and the scored ids, run on
    a copy of the prefill (right-padded, masked), each scored id predicted from the position
    before it. Rows with nothing to score get None."""
    import torch  # heavy: torch

    n = max((len(s) for s in score), default=0)
    if n == 0:
        return [None] * len(score)
    b = ids.shape[0]
    x = torch.full((b, n + 1), 0, dtype=ids.dtype, device=ids.device)
    m = torch.zeros((b, n + 1), dtype=mask.dtype, device=ids.device)
    x[:, 0], m[:, 0] = ids[:, -1], 1
    for i, s in enumerate(score):
        x[i, 1:1 + len(s)] = torch.tensor(s, dtype=ids.dtype)
        m[i, 1:1 + len(s)] = 1
    full = torch.cat([mask, m[:, 1:]], dim=1)
    pos = _positions(mask)[:, -1:] + torch.arange(n + 1, device=ids.device)
    logits = model(input_ids=x, attention_mask=full, position_ids=pos, use_cache=True,
                   **{_cache_name(model): copy.deepcopy(cache)}).logits  # (B, n+1, V)
    out: list[float | None] = []
    for i, s in enumerate(score):
        if not s:
            out.append(None)
            continue
        lg = logits[i, :len(s)].float()  # position t predicts score[i][t]
        target = torch.tensor(s, device=lg.device)
        out.append(float((torch.logsumexp(lg, -1) - lg.gather(1, target[:, None])[:, 0]).sum()))
    return out


class GenerationStream:
    """Generate for one prompt; iterate to get the text in pieces (never past where it ends).

    After iteration: `text` (the whole completion), `finish_reason` ("stop": a stop token or
    string, or the suffix starting over; "length": max_new_tokens or the context window;
    "cancelled": `cancel` was set; "timeout": `deadline` (time.monotonic()) passed),
    `trimmed_suffix` (the middle went on into the suffix and was cut there: see `Finisher`),
    `prompt_tokens`, `completion_tokens`.

    `prefix` and `suffix`: the hole the prompt is for, which the `Finisher` watches for the
    suffix starting over; by default read back from a FIM prompt (`prompt_hole`). Text that may
    still be cut (the start of a stop string or of the suffix) is held back from the pieces
    until that is decided.

    The prompt plus max_new_tokens is clamped to the context window; a prompt that fills it is a
    CodetuneError. Sampling draws from a per-stream torch.Generator, so a seed reproduces a stream
    even when other threads generate in between.
    """

    def __init__(self, loaded: Loaded, prompt: list[int], params: GenParams, *,
                 cancel: Any = None, deadline: float | None = None, lock: Any = None,
                 prefix: str | None = None, suffix: str | None = None) -> None:
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
        self.hole = (prefix, suffix) if suffix is not None else None
        self.text = ""
        self.finish_reason: str | None = None
        self.trimmed_suffix = False
        self.prompt_tokens = len(prompt)
        self.completion_tokens = 0

    def __iter__(self):
        import torch  # heavy: torch

        loaded, params = self.loaded, self.params
        model = loaded.model
        device = getattr(model, "device", None) or next(model.parameters()).device
        hole = self.hole or prompt_hole(loaded, self.prompt)  # here: off the event loop
        ending = _Ending(loaded, _finisher(params, hole), set(stop_ids(loaded)))
        greedy = params.is_greedy
        warp = None if greedy else _warpers(params)
        gen = torch.Generator(device=device)
        if params.seed is not None:
            gen.manual_seed(params.seed)
        else:
            gen.seed()
        lock = self.lock if self.lock is not None else contextlib.nullcontext()
        cache_kw = _cache_name(model)
        ids = torch.tensor([self.prompt], dtype=torch.long, device=device)
        cache, shown, reason = None, 0, "length"
        for _ in range(self.budget):
            if self.cancel is not None and self.cancel.is_set():
                reason = "cancelled"
                break
            if self.deadline is not None and time.monotonic() > self.deadline:
                reason = "timeout"
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
            done = ending.push(token)
            self.completion_tokens = len(ending.tokens)
            if done:
                break
            self.text = raw = ending.raw
            ready = len(raw) - ending.finisher.holdback(raw)
            if ready > shown:
                yield raw[shown:ready]
                shown = ready
            ids = torch.tensor([[token]], dtype=torch.long, device=device)
        ending.end(reason)
        text = ending.text or ""
        # never take back what was shown (holdback keeps every cut point after it)
        self.text = text if len(text) >= shown else ending.raw[:shown]
        self.finish_reason, self.trimmed_suffix = ending.reason, ending.trimmed_suffix
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
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _warpers(params: GenParams):
    """The sampling warpers in `model.generate`'s order: temperature, top-k, top-p."""
    from transformers import (  # heavy: transformers
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
