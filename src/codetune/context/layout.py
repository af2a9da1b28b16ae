"""From ranked snippets to the repository context of one prompt or sample
(`tokens.fim.RepoContext`): packed into a token budget, the most relevant last (nearest the
hole, where a left-to-right model attends most), and, where the file being completed is not
known by path, without snippets of that file itself.

`repo_context` is the one place that fits snippets to a budget: training (`context_providers`),
eval (`task_contexts`) and serving (`ServeContext.prompt`) all call it, so the same snippets
and budget give the same context, and the same prompt, in all three. Eval and serving also pass
`fits`, whether the whole prompt with a context fits the model; training's samples are cut to
`data.seq_length` after the context is laid out, so it passes none."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from codetune.context.budget import Snippet, pack
from codetune.tokens.fim import RepoContext

# Tokens a snippet costs beyond its text: the file separator (or path comment) and its path.
PER_SNIPPET = 8


def repo_context(snippets: Iterable[Snippet], budget: int, count_tokens: Callable[[str], int],
                 repo: str | None, path: str | None,
                 fits: Callable[[RepoContext], bool] | None = None,
                 ) -> tuple[RepoContext | None, list[Snippet]]:
    """The RepoContext of the snippets that fit in `budget` tokens, and those snippets (in rank
    order, best first).

    `budget` counts each snippet's text and PER_SNIPPET, not the repository name and the
    file's path around them, nor the file itself. With `fits(ctx) -> bool` (does the prompt
    with this context fit the model?), the least relevant snippets are dropped until it does;
    where not even the repository name and the path fit with no snippet, the context is None
    (the file-level prompt). Never None without `fits`."""
    chosen = pack(snippets, budget, count_tokens, per_snippet=PER_SNIPPET) if budget > 0 else []

    def keep(k: int) -> RepoContext:  # the k most relevant, the best last
        return RepoContext(repo=repo, path=path,
                           snippets=tuple((s.path, s.text) for s in reversed(chosen[:k])))

    ctx = keep(len(chosen))
    if fits is None or fits(ctx):
        return ctx, chosen
    if not chosen or not fits(keep(0)):
        return None, []
    # The most snippets that fit, by bisection: a prompt grows with each snippet kept (each is
    # encoded apart, behind its own separator), so this is what dropping the least relevant one
    # at a time would keep, in log2 prompt builds instead of one a snippet.
    lo, hi = 0, len(chosen)  # keep(lo) fits, keep(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(keep(mid)):
            lo = mid
        else:
            hi = mid
    return keep(lo), chosen[:lo]


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
