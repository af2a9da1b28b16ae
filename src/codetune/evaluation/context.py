"""Repository context in eval: each task with and without snippets of the repository's other
files, and how much the model's probability of the hole changes.

Snippets come from the dataset's index, which holds the train split only: a held-out file
never sees itself, and no held-out file is in any task's context. The hole's bits per byte are
the model's negative log-likelihood of the middle, in bits, over its UTF-8 bytes: scored on the
same tokens with and without context, so the difference is the context's worth alone.
"""

from __future__ import annotations

import re
from typing import Any

from codetune.evaluation.bpb import _nll, fit_lines
from codetune.evaluation.tasks import Task


def task_contexts(index: Any, loaded: Any, tasks: list[Task], budget: int,
                  prompt_budget: int, window: int | None = None,
                  room: int = 0) -> list[tuple[Any, list[str]]]:
    """The `tokens.fim.RepoContext` of each task (retrieved around its hole, `budget` tokens),
    and the paths of its snippets. With the model's `window`, snippets are dropped (the least
    relevant first; `context.repo_context`) until the task's prompt (its file part cut to
    `prompt_budget`) leaves `room` tokens for the generation and the hole's own tokens: the
    budget counts each snippet's text, not the paths and separators around it, and a model as
    short as codetune-mini's 1024 positions has no slack for those. Where not even the
    repository name and the file's path fit, the task's context is None: its file-level
    prompt."""
    from codetune.context import repo_context
    from codetune.infer.prompts import fim_prompt
    from codetune.tokens.fim import token_counter

    count = token_counter(loaded.tokenizer)

    out = []
    for t in tasks:
        snippets = index.retrieve(t.prefix, t.suffix, t.path, t.repo_id)
        fits = None
        if window:
            limit = window - max(room, len(middle_ids(loaded, t)))
            prefix, suffix = fitted(loaded, t, prompt_budget)  # the same cut for every try

            def fits(ctx, prefix=prefix, suffix=suffix, limit=limit):
                return len(fim_prompt(loaded, prefix, suffix, repo=ctx)) <= limit
        ctx, chosen = repo_context(snippets, budget, count, t.repo_id, t.path, fits)
        out.append((ctx, [s.path for s in chosen]))  # best first; the prompt has them best last
    return out


def middle_ids(loaded: Any, task: Task) -> list[int]:
    """The hole's own tokens, as the model predicts them after the FIM middle sentinel."""
    from codetune.tokens.fim import encode_pieces

    return list(encode_pieces(loaded.tokenizer, loaded.fim, "", task.middle, "")[1])


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
    prompt = context_prompt(loaded, task, budget, ctx)
    middle = middle_ids(loaded, task)
    if not middle:
        return 0.0, 0
    return (_nll(loaded.model, prompt + middle, score_from=len(prompt)),
            len(task.middle.encode("utf-8", "surrogatepass")))


# Cross-file tasks (CrossCodeEval's idea, by a cheaper test): the hole names something the file
# itself never mentions (import lines aside) but another train file of the repository defines.
# Random holes rarely need another file; these are the ones where repository context can help.
_DEFINES = re.compile(r"\b(?:def|class|func|fn|function|struct|interface|enum|trait|type)"
                      r"\s+([A-Za-z_]\w*)|^(?:export\s+)?(?:const\s+|let\s+|var\s+)?"
                      r"([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)", re.M)
_NAME = re.compile(r"[A-Za-z_]\w{2,}")
_IMPORT_LINE = re.compile(r"^\s*(?:from\s+\S+\s+import\b|import\b|#\s*include\b|use\b|require\b)"
                          r".*$", re.M)


def definitions(index: Any) -> dict[tuple[str, str], set[str]]:
    """{(repo_id, name): paths of the indexed files that define `name`} (by pattern: `def`,
    `class`, `func`, `fn`, ... and top-level assignments)."""
    out: dict[tuple[str, str], set[str]] = {}
    for i in range(len(index)):
        s = index.chunk(i)
        for m in _DEFINES.finditer(s.text):
            out.setdefault((s.repo_id, m.group(1) or m.group(2)), set()).add(s.path)
    return out


def needed_names(index: Any, tasks: list[Task]) -> list[set[str]]:
    """Per task: the names its middle spells (outside string literals) that another indexed
    file of its repository defines and the rest of its own file never mentions (import
    statements aside). A task with
    any is cross-file. An import-use hole (kind "cross_file") is chosen where its prefix never
    spelled the name: only its prefix counts as the rest."""
    from codetune.context.imports import without_imports

    defined = definitions(index)
    out = []
    for t in tasks:
        if t.kind == "cross_file":  # chosen for the imported names it uses first: those
            out.append(_first_uses(index, t))
            continue
        seen = t.prefix + "\n" + t.suffix
        rest = set(_NAME.findall(without_imports(seen)))  # `from m import (a,\n b)` whole
        spelled = set(_NAME.findall(_STRING.sub('""', t.middle)))  # a string is no use
        out.append({n for n in spelled - rest if defined.get((t.repo_id, n), set()) - {t.path}})
    return out


_PROSE = frozenset({"Markdown", "MDX", "reStructuredText", "TeX"})
_COMMENT = re.compile(r"^\s*(?:#|//|/\*|\*|--|;|%)")


def code_hole(task: Task) -> bool:
    """Is the hole a line of code, where another file's definition can be what it needs?
    Not documentation or data (Markdown, reStructuredText, JSON, ...), not an import or
    re-export line (`from .x import y` is predictable from nothing but the index itself, and
    is no use of the name), not a comment: CrossCodeEval counts only code lines that use an
    imported name, and so do the cross-file metrics."""
    from codetune.data.languages import DATA_LANGUAGES, LanguageTable

    lang = LanguageTable().classify(task.path)[0]  # None: a language the user added: code
    if lang in _PROSE or lang in DATA_LANGUAGES:
        return False
    lines = [ln for ln in task.middle.splitlines() if ln.strip()]
    return bool(lines) and not all(_IMPORT_LINE.match(ln) or _COMMENT.match(ln)
                                   for ln in lines)


def _first_uses(index: Any, t: Task) -> set[str]:
    """The definitions (by name) that an import-use hole uses and its prefix never did: the
    selection of `import_use_tasks`, on the same patterns."""
    uses = index.imported_uses(t.prefix + t.middle + t.suffix, t.path, t.repo_id)
    from codetune.context.imports import without_imports

    before = _STRING.sub('""', "\n".join(ln for ln in without_imports(t.prefix).splitlines()
                                          if not ln.lstrip().startswith("#")))
    middle = _STRING.sub('""', t.middle)
    out = set()
    for u in uses:
        pat = re.compile(rf"(?<![\w.]){re.escape(u.spelled)}\b")
        if pat.search(middle) and not pat.search(before):
            out.add(u.name)
    return out


def defines_any(ctx: Any, names: set[str]) -> bool:
    """Does one of the context's snippets define (by `definitions`' patterns) one of `names`?
    Whether retrieval brought what the hole needs, whatever the model makes of it."""
    return ctx is not None and any((m.group(1) or m.group(2)) in names
                                   for _, text in ctx.snippets for m in _DEFINES.finditer(text))


# Import-use tasks (CrossCodeEval's selection, by the index's own import resolution): a
# single-line hole at the first line that uses a definition the file imports from another file
# of its repository. Before that line the file never spells the name outside its imports, so
# the prompt cannot show how it is called; the repository context can. Python files only.
_OPEN_PAREN_IMPORT = re.compile(r"^\s*from\s+\S+\s+import\s*\([^)]*$")
_STRING = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'")


def import_use_tasks(index: Any, repo_id: str, path: str, text: str, seed: int,
                     n: int) -> list[Task]:
    """Up to `n` such holes of one held-out file (the same on every run), kind "cross_file"."""
    from codetune.evaluation.tasks import _file_rng, line_starts, line_task

    if n <= 0:
        return []
    uses = index.imported_uses(text, path, repo_id)
    if not uses:
        return []
    pats = {u.spelled: re.compile(rf"(?<![\w.]){re.escape(u.spelled)}\b") for u in uses}
    lines = text.splitlines(keepends=True)
    starts = line_starts(lines)
    seen: set[str] = set()
    cands, in_import = [], False
    for li, line in enumerate(lines):
        if in_import:  # the names of a parenthesized `from m import (a,\n b)`
            in_import = ")" not in line
            continue
        if _IMPORT_LINE.match(line):
            in_import = bool(_OPEN_PAREN_IMPORT.match(line))
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        code = _STRING.sub('""', line)  # a name inside a string literal is no use of it
        hits = {s for s, p in pats.items() if p.search(code)}
        if hits - seen and len(stripped) >= 6:
            cands.append(li)
        seen |= hits
    if not cands:
        return []
    rng = _file_rng(seed, repo_id, path + "\0import-use")
    picks = sorted(rng.choice(len(cands), size=min(n, len(cands)), replace=False).tolist())
    return [line_task(repo_id, path, text, lines, starts, cands[i], "cross_file")
            for i in picks]
