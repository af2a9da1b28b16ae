"""A retrieved snippet, and packing ranked snippets into a token budget.

The caller owns the tokenizer: `pack` gets a `count_tokens(text) -> int` and never imports a
model or tokenizer, so the same function sizes training samples, served prompts and eval
prompts, whichever tokenizer they use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

Reason = Literal["import", "bm25"]


@dataclass(frozen=True)
class Snippet:
    """Lines `start_line`..`end_line` (1-based, inclusive) of `path` in repository `repo_id`.

    `reason` says why it was chosen: "import" (it defines a name the current file imports
    from another file of the repository; these rank first) or "bm25" (lexically close to the
    code around the cursor). `score` is the BM25 score of the snippet for the query (0 when
    nothing matched); lists of snippets are in rank order, which is not always score order."""

    repo_id: str
    path: str
    start_line: int
    end_line: int
    text: str
    score: float
    reason: Reason


def pack(snippets: Iterable[Snippet], budget: int, count_tokens: Callable[[str], int], *,
         per_snippet: int = 0) -> list[Snippet]:
    """The snippets that fit in `budget` tokens, in rank order.

    Each snippet costs `count_tokens(text) + per_snippet` (the caller's separator and file
    header). Greedy in rank order: a snippet that does not fit is skipped and smaller ones
    after it may still fit. A snippet overlapping the lines of one already taken from the
    same file, or with the same text as one taken (a file copied into two places), is
    skipped before it is counted, so `count_tokens` runs at most once per snippet taken or
    skipped for size."""
    taken: list[Snippet] = []
    spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
    texts: set[str] = set()
    left = budget
    for s in snippets:
        if left <= per_snippet:
            break
        key = (s.repo_id, s.path)
        if s.text in texts or any(a <= s.end_line and s.start_line <= b
                                  for a, b in spans.get(key, ())):
            continue
        cost = count_tokens(s.text) + per_snippet
        if cost > left:
            continue
        taken.append(s)
        spans.setdefault(key, []).append((s.start_line, s.end_line))
        texts.add(s.text)
        left -= cost
    return taken
