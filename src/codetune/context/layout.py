"""From ranked snippets to the repository context of one prompt or sample
(`tokens.fim.RepoContext`): packed into a token budget, the most relevant last (nearest the
hole, where a left-to-right model attends most), and, where the file being completed is not
known by path, without snippets of that file itself."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from codetune.context.budget import Snippet, pack
from codetune.tokens.fim import RepoContext

# Tokens a snippet costs beyond its text: the file separator (or path comment) and its path.
PER_SNIPPET = 8


def repo_context(snippets: Iterable[Snippet], budget: int, count_tokens: Callable[[str], int],
                 repo: str | None, path: str | None) -> tuple[RepoContext, list[Snippet]]:
    """The RepoContext of the snippets that fit in `budget` tokens, and those snippets (in rank
    order, best first)."""
    chosen = pack(snippets, budget, count_tokens, per_snippet=PER_SNIPPET) if budget > 0 else []
    ctx = RepoContext(repo=repo, path=path,
                      snippets=tuple((s.path, s.text) for s in reversed(chosen)))
    return ctx, chosen


def _lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if len(line.strip()) > 3}


def outside(snippets: Sequence[Snippet], *texts: str, share: float = 0.5) -> list[Snippet]:
    """The snippets not taken from the code in `texts` (the prefix and suffix being completed):
    a snippet most of whose lines occur there is the current file's own, seen under another
    path or an older version of it. For requests that do not say which file they complete."""
    here = set().union(*(_lines(t) for t in texts))
    out = []
    for s in snippets:
        lines = _lines(s.text)
        if not lines or len(lines & here) < share * len(lines):
            out.append(s)
    return out
