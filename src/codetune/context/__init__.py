"""Repository context: an index of a repository's code chunks, retrieval of the snippets of
other files that help complete the current one, and packing them into a token budget.

Knows no model and no tokenizer (the caller passes `count_tokens`). Used by training (the
precomputed `neighbours` of each train file), serving (`retrieve` on a live working tree,
kept current with `refresh`) and eval (`retrieve` on the train-split index of the dataset, so
held-out files never see themselves).

    from codetune.context import RepoIndex, build_index, pack
    index = RepoIndex.for_dataset("datasets/my-code")      # None for an older dataset
    snippets = index.retrieve(prefix, suffix, path="pkg/app.py", repo_id="org/repo")
    chosen = pack(snippets, budget=512, count_tokens=lambda t: len(tok(t).input_ids))
"""

from codetune.context.budget import Snippet, pack
from codetune.context.build import build_index, index_dataset, index_tree
from codetune.context.index import BuildStats, RepoIndex
from codetune.context.layout import outside, repo_context

__all__ = ["BuildStats", "RepoIndex", "Snippet", "build_index", "index_dataset", "index_tree",
           "outside", "pack", "repo_context"]
