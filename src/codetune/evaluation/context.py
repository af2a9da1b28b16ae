"""Repository context in eval: each task with and without snippets of the repository's other
files, and how much the model's probability of the hole changes.

Snippets come from the dataset's index, which holds the train split only: a held-out file
never sees itself, and no held-out file is in any task's context. The hole's bits per byte are
the model's negative log-likelihood of the middle, in bits, over its UTF-8 bytes: scored on the
same tokens with and without context, so the difference is the context's worth alone.
"""

from __future__ import annotations

import functools
from typing import Any

from codetune.evaluation.bpb import _nll, fit_lines
from codetune.evaluation.tasks import Task


def task_contexts(index: Any, tokenizer: Any, tasks: list[Task], budget: int) -> list[Any]:
    """The `tokens.fim.RepoContext` of each task (retrieved around its hole, `budget` tokens),
    and the paths used, per task."""
    from codetune.context import repo_context

    @functools.lru_cache(maxsize=65536)
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False,
                             split_special_tokens=True)["input_ids"])

    out = []
    for t in tasks:
        snippets = index.retrieve(t.prefix, t.suffix, t.path, t.repo_id)
        ctx, chosen = repo_context(snippets, budget, count, t.repo_id, t.path)
        out.append((ctx, [s.path for s in chosen]))
    return out


def fitted(loaded: Any, task: Task, budget: int) -> tuple[str, str]:
    """The task's prefix and suffix cut to `budget` tokens (3/4 prefix, 1/4 suffix), whole
    lines kept: the same cut with and without context."""
    tok = loaded.tokenizer
    return (fit_lines(tok, task.prefix, budget * 3 // 4, keep_end=True),
            fit_lines(tok, task.suffix, budget // 4, keep_end=False))


def context_prompt(loaded: Any, task: Task, budget: int, ctx: Any) -> list[int]:
    """The task's FIM prompt, with repository context `ctx` (None: the file-level prompt)."""
    from codetune.infer.prompts import fim_prompt

    prefix, suffix = fitted(loaded, task, budget)
    return fim_prompt(loaded, prefix, suffix, repo=ctx)


def hole_nll(loaded: Any, task: Task, budget: int, ctx: Any) -> tuple[float, int]:
    """(nats of the middle given the prompt, bytes of the middle)."""
    from codetune.tokens.fim import encode_pieces

    prompt = context_prompt(loaded, task, budget, ctx)
    _, middle, _ = encode_pieces(loaded.tokenizer, loaded.fim, "", task.middle, "")
    if not middle:
        return 0.0, 0
    return (_nll(loaded.model, prompt + list(middle), score_from=len(prompt)),
            len(task.middle.encode("utf-8", "surrogatepass")))
