"""`RepoIndex`: a repository index on disk, and retrieval from it.

Layout of an index folder (written by `build.py`, atomically: built beside and renamed):

    index.json          {"format": "codetune-index", "version", "source", "counts", "repos",
                         "chunking", "neighbours", "bytes" (size of every file below)}
    files.parquet       one row per file, sorted by (repo_id, path): repo_id, path, sha256,
                        chunk_start, chunk_end, nb_start, nb_end (row ranges in the tables below)
    chunks.parquet      one row per chunk, grouped by file: file, start_line, end_line, text,
                        tokens (ids into the repository's BM25 vocabulary)
    defs.parquet        top-level Python definitions: chunk, name
    neighbours.parquet  per file, its ranked context from other files: file, chunk, score,
                        reason (0 import, 1 bm25)
    bm25/NNNNN/         one bm25s index per repository (`BM25.save`: CSC arrays, vocabulary)

Each repository has its own BM25 index: retrieval never leaves the repository of the file
being completed, and a word's rarity is judged within that repository.

An index is loaded whole into memory (the chunk texts as one Arrow array, about the size of
the code) and never changes after loading: `update` builds a new one and swaps it in with
one assignment, so a server thread retrieving meanwhile sees the old or the new, never a mix.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from codetune import outputs
from codetune.context import bm25
from codetune.context.budget import Snippet
from codetune.context.chunks import is_python, stub_view, tokenize
from codetune.context.imports import (
    Imported,
    ModuleMap,
    Use,
    import_targets,
    imported_uses,
    parse_imports,
)
from codetune.errors import CodetuneError

FORMAT_VERSION = 1
REASONS = ("import", "bm25")  # neighbours.parquet `reason` codes
QUERY_PREFIX_LINES = 25  # the query: the code just before the cursor ...
QUERY_SUFFIX_LINES = 5  # ... and just after it
_DEFINED = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", re.M)  # a definition's name
TABLES = ("files.parquet", "chunks.parquet", "defs.parquet", "neighbours.parquet")


@dataclass(frozen=True)
class BuildStats:
    """What one build or update did. `chunked` files were read and cut into chunks; `reused`
    ones kept their chunks from the previous index (same sha256); `removed` were in the
    previous index and are gone."""

    files: int
    chunks: int
    chunked: int
    reused: int
    removed: int
    seconds: float
    bm25_seconds: float
    neighbour_seconds: float
    changed: bool = True  # False: nothing differed, nothing was written


@dataclass
class _State:
    """Everything loaded from one index folder; never mutated after loading except the lazy
    per-repository caches (each filled by one assignment)."""

    info: dict[str, Any]
    repo: list[str]  # per file
    path: list[str]
    sha: list[str]
    chunk_start: np.ndarray
    chunk_end: np.ndarray
    nb_start: np.ndarray
    nb_end: np.ndarray
    chunk_file: np.ndarray
    start_line: np.ndarray
    end_line: np.ndarray
    text: Any  # pyarrow string array
    defs: dict[int, dict[str, int]]  # file row -> name -> chunk id
    nb_chunk: np.ndarray
    nb_score: np.ndarray
    nb_reason: np.ndarray
    file_of: dict[tuple[str, str], int]
    repos: list[dict[str, Any]]
    repo_of: dict[str, int]
    bm: dict[int, Any] = field(default_factory=dict)  # repo -> bm25s.BM25 or None
    modules: dict[int, ModuleMap] = field(default_factory=dict)
    imports: dict[int, list[Imported]] = field(default_factory=dict)
    tokens: Any = None  # (flat int32, offsets) once an update needs them


class RepoIndex:
    """A loaded index; see the module docstring. Open with `RepoIndex.open(path)` or
    `RepoIndex.for_dataset(dataset_dir)`; build with `build_index` or `index_tree`."""

    last_build: BuildStats | None = None  # what built or last updated this index, if known

    def __init__(self, path: Path, state: _State, remedy: str):
        self.path, self._s, self._remedy = path, state, remedy

    def __reduce__(self):  # DataLoader workers: each loads its own copy from disk
        return (RepoIndex.open, (self.path,))

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | Path, *, remedy: str | None = None) -> RepoIndex:
        """Load the index at `path`, or a CodetuneError naming the command that rebuilds it."""
        path = Path(path)
        remedy = remedy or ("build it with `codetune index REPO -o {path}`, or prepare a "
                            "dataset with `codetune prepare` (its index is DATASET/context)")
        remedy = remedy.replace("{path}", str(path))
        info = _read_info(path, remedy)
        try:
            state = _load(path, info)
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise CodetuneError(f"the repository index {path} is damaged ({_short(e)}); "
                                f"{remedy}") from None
        return cls(path, state, remedy)

    @classmethod
    def for_dataset(cls, dataset_dir: str | Path) -> RepoIndex | None:
        """The index `codetune prepare` built from the train split of a dataset, or None for
        a dataset prepared without one (older codetune, or `prepare.context_index=false`)."""
        from codetune.data import store

        man = store.load_manifest(dataset_dir)
        entry = man.get("context")
        if not entry:
            return None
        remedy = (f"prepare the dataset again with `codetune prepare SOURCE... -o {dataset_dir} "
                  "--overwrite`")
        return cls.open(Path(dataset_dir) / entry["path"], remedy=remedy)

    # ------------------------------------------------------------------ facts

    @property
    def info(self) -> dict[str, Any]:
        """The parsed index.json."""
        return self._s.info

    @property
    def repos(self) -> list[str]:
        return [r["repo_id"] for r in self._s.repos]

    @property
    def root(self) -> Path | None:
        """The working tree an index built by `codetune index` reads, else None."""
        src = self._s.info.get("source", {})
        return Path(src["root"]) if src.get("kind") == "tree" else None

    def __len__(self) -> int:
        return len(self._s.chunk_file)

    def files(self) -> list[tuple[str, str, str]]:
        """(repo_id, path, sha256) of every indexed file, in index order."""
        s = self._s
        return list(zip(s.repo, s.path, s.sha, strict=True))

    def chunk(self, i: int, score: float = 0.0, reason: str = "bm25") -> Snippet:
        """Chunk `i` (0 <= i < len(index)) as a Snippet. The chunk of an imported Python
        definition (`reason="import"`) comes as its stub view (`chunks.stub_view`): headers,
        docstring first lines, bodies elided."""
        s = self._s
        f = int(s.chunk_file[i])
        text = s.text[i].as_py()
        if reason == "import" and is_python(s.path[f]):
            text = stub_view(text)
        return Snippet(s.repo[f], s.path[f], int(s.start_line[i]), int(s.end_line[i]),
                       text, float(score), reason)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ retrieval

    def retrieve(self, prefix: str, suffix: str = "", path: str = "",
                 repo_id: str | None = None, k: int = 20) -> list[Snippet]:
        """Up to `k` snippets of other files of the repository, best first: definitions of
        the names the file imports (Python; those used near the cursor first; at most half of
        `k`), then BM25 hits for the code around the cursor (the last 25 lines of `prefix`
        and the first 5 of `suffix`). Never a chunk of `path` itself. A repository the index
        does not hold (a held-out one) gets no snippets."""
        s = self._s
        path = self._relative(path)
        r = self._repo(repo_id, path)
        if r is None or k <= 0:
            return []
        rinfo = s.repos[r]
        repo = rinfo["repo_id"]
        c0, c1 = rinfo["chunks"]
        own = s.file_of.get((repo, path))
        window = "\n".join(prefix.split("\n")[-QUERY_PREFIX_LINES:] +
                           suffix.split("\n")[:QUERY_SUFFIX_LINES])
        scores = self._scores(r, tokenize(window))
        if own is not None:
            scores[s.chunk_start[own] - c0:s.chunk_end[own] - c0] = 0
        picked: list[int] = []
        if is_python(path):
            picked = self._import_chunks(r, prefix + suffix, path, window, max(1, k // 2),
                                            seen=prefix)
        out = [self.chunk(c, scores[c - c0], "import") for c in picked]
        scores[[c - c0 for c in picked]] = 0
        out += [self.chunk(c0 + i, scores[i], "bm25") for i in _top(scores, k - len(out))]
        return out

    def neighbours(self, repo_id: str, path: str) -> list[Snippet]:
        """The ranked context of a file of the index, computed when it was built: snippets of
        other files of its repository (definitions it imports first, then BM25 hits for its
        own content). [] for a file the index does not hold (a held-out file)."""
        s = self._s
        if not s.info.get("neighbours"):
            raise CodetuneError(f"the index {self.path} was built without neighbours; build "
                                "it with `codetune prepare` or `codetune index --neighbours`")
        f = s.file_of.get((repo_id, path))
        if f is None:
            return []
        return [self.chunk(int(s.nb_chunk[j]), float(s.nb_score[j]), REASONS[s.nb_reason[j]])
                for j in range(s.nb_start[f], s.nb_end[f])]

    def window_neighbours(self, repo_id: str, path: str, text: str) -> list[Snippet]:
        """The file's precomputed `neighbours`, ranked again for one window of it (`text`):
        the imported definitions whose name the window spells first (in their precomputed
        order), then the others by their BM25 score for the window's own code (ties in the
        precomputed order). What training lays in front of each window of a long file with
        data.context_select=window, as eval and serving retrieve around each cursor. Chosen
        among the file's neighbours only: no retrieval over the repository while streaming."""
        nbs = self.neighbours(repo_id, path)
        if not nbs:
            return nbs
        words = set(tokenize(text))
        s = self._s
        f = s.file_of[(repo_id, path)]
        r = self._repo(repo_id, path)
        c0 = s.repos[r]["chunks"][0]
        scores = self._scores(r, sorted(words))
        chunk = [int(s.nb_chunk[j]) for j in range(s.nb_start[f], s.nb_end[f])]

        def named(snip: Snippet) -> bool:
            m = _DEFINED.search(snip.text)
            return snip.reason == "import" and m is not None and m.group(1) in words

        first = [k for k, sn in enumerate(nbs) if named(sn)]
        rest = sorted((k for k in range(len(nbs)) if k not in set(first)),
                      key=lambda k: -float(scores[chunk[k] - c0]))  # sorted() is stable
        return [replace(nbs[k], score=float(scores[chunk[k] - c0]))
                for k in first + rest]

    # ------------------------------------------------------------------ updating

    def update(self, root: str | Path | None = None) -> BuildStats:
        """Re-index the working tree `root` (default: the one this index was built from):
        files whose sha256 changed are chunked again, deleted ones dropped, new ones added,
        the BM25 statistics rebuilt from the stored chunks. The new index replaces this one
        on disk and in this object (one assignment: a thread retrieving meanwhile sees the old
        index or the new one). Call it from one thread at a time."""
        from codetune.context.build import filters_config, index_tree

        root = Path(root) if root is not None else self.root
        if root is None:
            raise CodetuneError(f"the index {self.path} was built by `codetune prepare` from a "
                                "dataset's train split; prepare the dataset again to change it")
        new = index_tree(root, self.path, previous=self,
                         neighbours=bool(self._s.info.get("neighbours")),
                         cfg=filters_config(self._s.info.get("source", {}).get("filters")))
        if new.last_build.changed:
            self._s = new._s
        self.last_build = new.last_build
        return new.last_build

    def refresh(self) -> BuildStats:
        """`update()` of the tree this index was built from: cheap when nothing changed
        (each file is hashed, nothing is written). For a server to call periodically."""
        return self.update()

    # ------------------------------------------------------------------ internals

    def _relative(self, path: str) -> str:
        path = path.replace("\\", "/")
        root = self.root
        if root is not None and os.path.isabs(path):
            rel = os.path.relpath(path, root).replace("\\", "/")
            if not rel.startswith("../"):
                path = rel
        while path.startswith("./"):
            path = path[2:]
        return path

    def _repo(self, repo_id: str | None, path: str) -> int | None:
        s = self._s
        if repo_id is not None:
            return s.repo_of.get(repo_id)
        if len(s.repos) <= 1:
            return 0 if s.repos else None
        holders = [i for i, r in enumerate(s.repos) if (r["repo_id"], path) in s.file_of]
        if len(holders) == 1:
            return holders[0]
        raise CodetuneError(f"the index {self.path} holds {len(s.repos)} repositories; pass "
                            "repo_id to say which one the file belongs to")

    def _bm25(self, r: int):
        return self._s.bm[r]

    def _scores(self, r: int, tokens: list[str]) -> np.ndarray:
        """BM25 score of every chunk of repository `r` (a fresh float32 array) for `tokens`."""
        c0, c1 = self._s.repos[r]["chunks"]
        bm = self._bm25(r)
        if bm is None:
            return np.zeros(c1 - c0, dtype=np.float32)
        vocab = bm.vocab_dict
        ids = np.fromiter({vocab[t] for t in tokens if t in vocab}, dtype=np.int32)
        return np.array(bm25.scores(bm, np.sort(ids)), dtype=np.float32)

    def imported_uses(self, text: str, path: str, repo_id: str | None = None) -> list[Use]:
        """The definitions of other indexed files of the repository that the Python file
        `text` (at `path`) imports and uses (`imports.imported_uses`); [] for other languages
        and for a repository the index does not hold."""
        path = self._relative(path)
        r = self._repo(repo_id, path)
        if r is None or not is_python(path):
            return []
        return imported_uses(text, path, *self._import_env(r))

    def _import_env(self, r: int) -> tuple[ModuleMap, Any, Any]:
        """(module map, `defines(file)`, `imports_of(file)`) of repository `r`, for imports."""
        s = self._s
        repo = s.repos[r]["repo_id"]
        if r not in s.modules:
            f0, f1 = s.repos[r]["files"]
            s.modules[r] = ModuleMap(s.path[f0:f1])

        def defines(p: str) -> Mapping[str, int]:
            f = s.file_of.get((repo, p))
            return s.defs.get(f, {}) if f is not None else {}

        def imports_of(p: str) -> list[Imported]:
            f = s.file_of[(repo, p)]
            if f not in s.imports:
                body = "\n".join(s.text[i].as_py()
                                 for i in range(s.chunk_start[f], s.chunk_end[f]))
                s.imports[f] = parse_imports(body, p)
            return s.imports[f]

        return s.modules[r], defines, imports_of

    def _import_chunks(self, r: int, text: str, path: str, window: str, limit: int,
                       seen: str | None = None) -> list[int]:
        """Chunk ids of the definitions `text` imports from other files of repository `r`
        (`import_targets`' order; `seen`: the code before the cursor)."""
        modules, defines, imports_of = self._import_env(r)
        out: list[int] = []
        for p, name in import_targets(text, path, window, modules, defines, imports_of,
                                      seen):
            c = defines(p)[name]
            if c not in out:
                out.append(c)
                if len(out) >= limit:
                    break
        return out


def _top(scores: np.ndarray, n: int) -> list[int]:
    """Indices of the `n` highest positive scores, best first; ties by lower index, so the
    order is the same on every run and machine."""
    if n <= 0:
        return []
    pos = np.flatnonzero(scores > 0)
    if len(pos) > n:
        cut = np.partition(scores[pos], len(pos) - n)[len(pos) - n]
        pos = pos[scores[pos] >= cut]  # every tie at the cut survives, then a stable sort
    order = np.lexsort((pos, -scores[pos]))
    return pos[order][:n].tolist()


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _read_info(path: Path, remedy: str) -> dict[str, Any]:
    if not path.is_dir():
        raise CodetuneError(f"no repository index at {path}; {remedy}")
    if outputs.kind_of(path) != "index":
        raise CodetuneError(f"{path} is not a codetune repository index (no index.json); "
                            f"{remedy}")
    info = json.loads((path / "index.json").read_text(encoding="utf-8"))
    if info.get("version", 0) > FORMAT_VERSION:
        raise CodetuneError(f"{path} was written by a newer codetune (index format version "
                            f"{info['version']}); upgrade codetune")
    if not info.get("complete"):
        raise CodetuneError(f"the repository index {path} is incomplete; {remedy}")
    for name, size in info.get("bytes", {}).items():
        p = path / name
        if not p.is_file() or p.stat().st_size != size:
            raise CodetuneError(f"the repository index {path} is damaged ({name} is missing or "
                                f"changed size); {remedy}")
    return info


def _load(path: Path, info: dict[str, Any]) -> _State:
    import pyarrow.parquet as pq

    files = pq.read_table(path / "files.parquet")
    chunks = pq.read_table(path / "chunks.parquet",
                           columns=["file", "start_line", "end_line", "text"])
    defs = pq.read_table(path / "defs.parquet")
    nbs = pq.read_table(path / "neighbours.parquet")
    repo = files.column("repo_id").to_pylist()
    paths = files.column("path").to_pylist()
    chunk_file = chunks.column("file").to_numpy()
    by_file: dict[int, dict[str, int]] = {}
    for c, name in zip(defs.column("chunk").to_pylist(), defs.column("name").to_pylist(),
                       strict=True):
        by_file.setdefault(int(chunk_file[c]), {})[name] = c
    counts = info["counts"]
    if len(paths) != counts["files"] or len(chunk_file) != counts["chunks"]:
        raise ValueError("row counts differ from index.json")
    repos = info["repos"]
    # Loaded now, not on first use: `update` may replace the folder under a running server.
    bms = {i: bm25.load(path / r["bm25"]) if r["bm25"] else None for i, r in enumerate(repos)}
    return _State(
        info=info, repo=repo, path=paths, sha=files.column("sha256").to_pylist(),
        chunk_start=files.column("chunk_start").to_numpy(),
        chunk_end=files.column("chunk_end").to_numpy(),
        nb_start=files.column("nb_start").to_numpy(), nb_end=files.column("nb_end").to_numpy(),
        chunk_file=chunk_file, start_line=chunks.column("start_line").to_numpy(),
        end_line=chunks.column("end_line").to_numpy(),
        text=chunks.column("text").combine_chunks(), defs=by_file,
        nb_chunk=nbs.column("chunk").to_numpy(), nb_score=nbs.column("score").to_numpy(),
        nb_reason=nbs.column("reason").to_numpy(),
        file_of={(r, p): i for i, (r, p) in enumerate(zip(repo, paths, strict=True))},
        repos=repos, repo_of={r["repo_id"]: i for i, r in enumerate(repos)}, bm=bms)


def stored_tokens(index: RepoIndex) -> tuple[np.ndarray, np.ndarray]:
    """(flat token ids, per-chunk offsets) of every chunk, ids into each chunk's repository
    vocabulary: what an update reuses for unchanged files. Read on first use."""
    s = index._s
    if s.tokens is None:
        import pyarrow.parquet as pq

        col = pq.read_table(index.path / "chunks.parquet", columns=["tokens"]).column(0)
        arr = col.combine_chunks()
        s.tokens = (arr.values.to_numpy(), arr.offsets.to_numpy().astype(np.int64))
    return s.tokens


def repo_vocabulary(index: RepoIndex, r: int) -> list[str]:
    bm = index._bm25(r)
    return bm25.vocabulary(bm) if bm is not None else []
