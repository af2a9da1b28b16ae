"""Repository context for served completions.

Where it comes from: the index of the served run's dataset (the train files, as in training),
or with `--context PATH` an index of a live working tree, re-indexed every few seconds in a
thread of its own (only files whose hash changed are read again; `context.RepoIndex.refresh`).

How a request gets it: retrieval on the code around the cursor (`RepoIndex.retrieve`, never a
chunk of the file being completed: by path when the request names it, and by content, since an
editor's `/infill` does not say which file it is in), snippets the client sent (llama.cpp's
`input_extra`) first, packed into `--context-tokens` and the least relevant dropped until the
prompt fits `--max-prompt-tokens` (`context.repo_context`, as in training and eval). A prompt
the client already laid out with repository context is taken as given; one laid out with the
repository name and the file's path but no snippets (the `editor-config continue` template)
gets them. The response names the files used.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("codetune.serve")

REFRESH_SECONDS = 5.0


@dataclass
class Hole:
    """What a request asks to complete, and what it says about where it is."""

    prefix: str
    suffix: str
    path: str | None = None
    repo: str | None = None
    extra: list[tuple[str, str]] = field(default_factory=list)  # client snippets (path, text)


class ServeContext:
    """An index, the budget, and (for a live tree) the thread that keeps the index current."""

    def __init__(self, index: Any, budget: int, live: bool = False,
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.index, self.budget, self.live = index, budget, live
        self.refresh_seconds = refresh_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.live and self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="codetune-index",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                stats = self.index.refresh()
                if getattr(stats, "changed", 0) or getattr(stats, "removed", 0):
                    log.info("context index refreshed: %s", stats)
            except Exception:  # a file vanished mid-read, a full disk: keep serving
                log.exception("refreshing the context index failed; keeping the last one")

    def repo_name(self, hole: Hole) -> str | None:
        if hole.repo:
            return hole.repo
        repos = self.index.repos
        return repos[0] if len(repos) == 1 else None

    def snippets(self, hole: Hole) -> list[Any]:
        """Ranked snippets for `hole`: the client's first, then retrieved ones."""
        from codetune.context import Snippet, outside

        repo = self.repo_name(hole)
        theirs = [Snippet(repo or "", p, 1, t.count("\n") + 1, t, 0.0, "bm25")
                  for p, t in hole.extra if t.strip()]
        try:
            found = self.index.retrieve(hole.prefix, hole.suffix, hole.path or "", repo)
        except Exception as e:  # several repositories and none named: no retrieval
            log.debug("no retrieval for this request: %s", e)
            found = []
        return theirs + outside(found, hole.prefix, hole.suffix)

    def prompt(self, loaded: Any, hole: Hole, max_prompt: int) -> tuple[list[int], list[str]]:
        """(prompt ids, paths of the snippets used): the FIM prompt of `hole` with as much
        context as fits both the budget and `max_prompt` tokens, the least relevant snippets
        dropped first (`context.repo_context`, as eval does). Runs in the tokenizer pool."""
        from codetune.context import repo_context
        from codetune.infer.prompts import fim_prompt
        from codetune.tokens.fim import token_counter

        if self.budget <= 0:  # off: exactly the file-level prompt
            return fim_prompt(loaded, hole.prefix, hole.suffix), []
        count = token_counter(loaded.tokenizer, maxsize=256)
        built: dict[Any, list[int]] = {}  # each context tried -> its prompt (built once)

        def fits(ctx: Any) -> bool:
            built[ctx] = fim_prompt(loaded, hole.prefix, hole.suffix, repo=ctx)
            return len(built[ctx]) <= max_prompt

        ctx, chosen = repo_context(self.snippets(hole), self.budget, count,
                                   self.repo_name(hole), hole.path, fits)
        ids = built[ctx] if ctx in built else fim_prompt(loaded, hole.prefix, hole.suffix,
                                                          repo=ctx)
        return ids, [s.path for s in chosen]


def open_context(target: str, tree: str | None, budget: int) -> ServeContext | None:
    """The context source of `codetune serve TARGET`: `--context PATH` (a working tree, indexed
    now and followed), else the index of the run's dataset, else none."""
    if budget <= 0:
        return None
    from codetune.context import RepoIndex, index_tree

    if tree is not None:
        return ServeContext(index_tree(tree), budget, live=True)
    from codetune.infer.loader import is_run_dir, run_config

    if not is_run_dir(target):
        return None
    from codetune.data.store import run_dataset

    dataset = run_config(target).data.dataset
    try:  # the run's own dataset, by run.json's path and content hash
        dataset = run_dataset(target, dataset, warn=log.warning).path
        index = RepoIndex.for_dataset(dataset)
    except Exception as e:  # the dataset moved, changed or was deleted: serve without context
        log.warning("no repository context: the run's dataset %s cannot be read (%s); give "
                    "--context PATH to index a working tree", dataset, str(e).split("; ")[0])
        return None
    return ServeContext(index, budget) if index is not None else None


def parse_repo_prompt(loaded: Any, ids: list[int]) -> Hole | None:
    """A raw prompt laid out with the repository name and the file's path but no snippets
    (`<|repo_name|>r\\n<|file_sep|>path\\n<|fim_prefix|>...`): its hole, to add snippets to.
    Any other prompt (file-level, or already with context) is None: taken as given."""
    from codetune.infer.prompts import prompt_hole

    fim = loaded.fim
    if fim is None or fim.file_sep_id is None or ids.count(fim.file_sep_id) != 1:
        return None
    hole = prompt_hole(loaded, ids)
    if hole is None:
        return None
    tok = loaded.tokenizer
    sep = ids.index(fim.file_sep_id)
    head = ids[:sep]
    repo = None
    if fim.repo_name_id is not None and fim.repo_name_id in head:
        at = head.index(fim.repo_name_id)
        repo = tok.decode(head[at + 1:], skip_special_tokens=True).strip() or None
    prefix, suffix = hole
    if fim.format.path_in_fim_prefix:  # StarCoder2: "[P] path\nprefix"
        path, _, prefix = prefix.partition("\n")
    else:
        after = ids[sep + 1:ids.index(fim.prefix_id, sep)]
        path = tok.decode(after, skip_special_tokens=True).strip()
    return Hole(prefix, suffix, path=path or None, repo=repo)
