"""Bits per byte of held-out files, left to right and in FIM form: the model's negative
log-likelihood in nats, divided by ln 2 and by the bytes scored, so models with different
tokenizers compare."""

from __future__ import annotations

import math

import numpy as np

LN2 = math.log(2)

def fit_lines(tok, text: str, budget: int, keep_end: bool) -> str:
    """Whole lines of `text`, dropped from the start (keep_end) or the end, until it fits
    `budget` tokens."""
    if len(tok(text, add_special_tokens=False)["input_ids"]) <= budget:
        return text
    lines = text.splitlines(keepends=True)
    lo, hi = 0, len(lines)  # binary search on how many lines to keep
    while lo < hi:
        mid = (lo + hi + 1) // 2
        part = "".join(lines[-mid:] if keep_end else lines[:mid])
        if len(tok(part, add_special_tokens=False)["input_ids"]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return "".join(lines[-lo:] if keep_end else lines[:lo]) if lo else ""


def _nll(model, ids: list[int], score_from: int, mask: list[bool] | None = None) -> float:
    """Sum of -log p (nats) of ids[t] for t >= score_from (and mask[t] when given)."""
    import torch

    x = torch.tensor([ids], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=x).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    target = x[0, 1:]
    tok_lp = logp.gather(1, target[:, None])[:, 0]
    keep = torch.zeros_like(tok_lp, dtype=torch.bool)
    keep[max(score_from - 1, 0):] = True
    if mask is not None:
        keep &= torch.tensor(mask[1:], device=keep.device)
    return float(-(tok_lp[keep]).sum())


def ltr_nll(loaded, text: str, window: int) -> float:
    """Nats of `text` left to right: windows of `window` tokens, each starting after an EOS
    (the document separator the model was trained with)."""
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = loaded.fim.eos_id if loaded.fim is not None else loaded.tokenizer.eos_token_id
    total = 0.0
    for s in range(0, len(ids), window):
        chunk = [eos] + ids[s:s + window]
        total += _nll(loaded.model, chunk, score_from=1)
    return total


def fim_split(text: str, seed: int, key: str) -> tuple[str, str, str] | None:
    import hashlib

    if len(text) < 3:
        return None
    h = int.from_bytes(hashlib.sha256(f"{seed}\0bpb\0{key}".encode(
        "utf-8", "surrogatepass")).digest()[:8], "big")
    a, b = sorted(np.random.default_rng(h).integers(0, len(text) + 1, size=2).tolist())
    return (text[:a], text[a:b], text[b:]) if b > a else None


def fim_nll(loaded, parts: tuple[str, str, str], budget: int) -> tuple[float, int]:
    """(nats, bytes) of the middle given prefix and suffix, in PSM form."""
    from codetune.tokens.fim import encode_fim

    prefix, middle, suffix = parts
    tok = loaded.tokenizer
    prefix = fit_lines(tok, prefix, budget // 2, keep_end=True)
    suffix = fit_lines(tok, suffix, budget // 4, keep_end=False)
    ids, mask = encode_fim(tok, loaded.fim, prefix, middle, suffix, spm=False,
                           middle_loss_only=True)
    ids, mask = [int(i) for i in ids], [bool(m) for m in mask]
    # The middle may exceed the window: score its first budget tokens, bytes to match.
    if len(ids) > 2 * budget:
        ids, mask = ids[:2 * budget], mask[:2 * budget]
        kept = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
        nbytes = len(kept.encode("utf-8", "surrogatepass"))
    else:
        nbytes = len(middle.encode("utf-8", "surrogatepass"))
    return _nll(loaded.model, ids, score_from=0, mask=mask), nbytes
