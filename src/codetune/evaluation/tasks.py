"""Infilling tasks cut from held-out files, and the metrics that score them.

Pure functions on strings (plus a seeded numpy generator): no model, no tokenizer.

- single-line: a non-blank line is masked from its first non-space character to the end of
  the line (the indentation stays in the prefix, as the cursor would); the answer is the rest of
  that line, so generation stops at a newline.
- multi-line: a block body is masked: the lines after a header line that are indented deeper
  than it (a function, loop or `if` body in any indentation-structured code), up to
  `max_block_lines`; the answer is those lines, newlines included.

Metrics: exact match after stripping surrounding whitespace, and edit similarity
(1 - normalised Levenshtein distance, rapidfuzz), both in [0, 1].
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Task:
    task_id: str
    kind: str  # "single_line" | "multi_line" | "cross_file" (a single line; see context.py)
    repo_id: str
    path: str
    prefix: str
    middle: str
    suffix: str

    def to_dict(self) -> dict:
        return asdict(self)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _file_rng(seed: int, repo_id: str, path: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\0{repo_id}\0{path}".encode("utf-8", "surrogatepass"))
    return np.random.default_rng(int.from_bytes(digest.digest()[:8], "big"))


def single_line_candidates(lines: list[str], min_chars: int = 6) -> list[int]:
    return [i for i, ln in enumerate(lines) if len(ln.strip()) >= min_chars]


def block_candidates(lines: list[str], max_block_lines: int) -> list[tuple[int, int]]:
    """(first, end) line ranges of block bodies: lines after a header that are indented deeper
    than the header (blank lines inside allowed), at least one non-blank line."""
    out = []
    for h, header in enumerate(lines[:-1]):
        if not header.strip():
            continue
        base = _indent(header)
        j, last = h + 1, None
        while j < len(lines) and j - (h + 1) < max_block_lines:
            ln = lines[j]
            if ln.strip():
                if _indent(ln) <= base:
                    break
                last = j
            j += 1
        if last is not None and (j >= len(lines) or not lines[j].strip()
                                 or _indent(lines[j]) <= base):
            out.append((h + 1, last + 1))
    return out


def line_starts(lines: list[str]) -> list[int]:
    """The offset of each line of `lines` (ends kept) in their text, and the text's length."""
    return np.cumsum([0] + [len(ln) for ln in lines]).tolist()


def line_task(repo_id: str, path: str, text: str, lines: list[str], starts: list[int],
              li: int, kind: str) -> Task:
    """The hole of line `li` of `text` (`lines` with ends kept, `starts` their offsets): the
    line from its indentation to its end, newline excluded."""
    line = lines[li]
    a = starts[li] + _indent(line)
    b = starts[li] + len(line.rstrip("\r\n"))
    return Task(f"{repo_id}/{path}#L{li + 1}", kind, repo_id, path, text[:a], text[a:b],
                text[b:])


def make_tasks(repo_id: str, path: str, text: str, seed: int, single: int, multi: int,
               max_block_lines: int = 8) -> list[Task]:
    """Up to `single` single-line and `multi` multi-line tasks from one file, the same on every
    run for the same (seed, repo, path, text)."""
    rng = _file_rng(seed, repo_id, path)
    lines = text.splitlines(keepends=True)
    starts = line_starts(lines)
    tasks = []
    cands = single_line_candidates(lines)
    picks = rng.choice(len(cands), size=min(single, len(cands)), replace=False).tolist() \
        if cands else []
    tasks += [line_task(repo_id, path, text, lines, starts, cands[i], "single_line")
              for i in sorted(picks)]
    blocks = block_candidates(lines, max_block_lines)
    if blocks:
        picks = rng.choice(len(blocks), size=min(multi, len(blocks)), replace=False).tolist()
        for i in sorted(picks):
            first, end = blocks[i]
            a, b = starts[first], starts[end]
            tasks.append(Task(f"{repo_id}/{path}#L{first + 1}-{end}", "multi_line", repo_id,
                              path, text[:a], text[a:b], text[b:]))
    return tasks


def exact_match(pred: str, truth: str) -> float:
    return float(pred.strip() == truth.strip())


def edit_similarity(pred: str, truth: str) -> float:
    from rapidfuzz.distance import Levenshtein

    p, t = pred.strip(), truth.strip()
    if not p and not t:
        return 1.0
    return float(Levenshtein.normalized_similarity(p, t))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 1000, seed: int = 0,
                     weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """Mean of (b - a) and its 95 % percentile interval over `n` resamples of the items.
    With `weights` (e.g. bytes per file) the statistic is sum(w*(b-a)) / sum(w)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    w = np.ones(len(a)) if weights is None else np.asarray(weights, float)
    d = (b - a) * w
    point = float(d.sum() / w.sum()) if len(d) else 0.0
    if len(d) < 2:
        return point, point, point
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n, len(d)))
    stats = d[idx].sum(axis=1) / w[idx].sum(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, float(lo), float(hi)
