"""Building a repository index: from (repo_id, path, text) files, a working tree, or the train
split of a prepared dataset; incrementally when a previous index is given.

Incremental: a file whose (repository, path, sha256) is in the previous index keeps its chunks
and their tokens (read back from `chunks.parquet`) and is not cut or tokenized again; only
changed and new files are. Then, per repository, the vocabulary is renumbered (sorted, so a
fresh build and an update give the same files), the BM25 matrix is rebuilt from all the
chunks' tokens, and neighbours are recomputed: both depend on every file of the repository.

Neighbours (for training, computed once here rather than per sample while streaming): for
each file, up to 16 chunks of other files of its repository. First the definitions its
imports point at (Python, at most 8, the names it uses most first), then BM25 hits for a query
made of the file's own 64 most distinctive tokens (term frequency in the file x IDF, counting
only tokens that other files contain too, since the others cannot match anything).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from codetune import __version__, outputs
from codetune.context import bm25
from codetune.context.chunks import (
    IDENTIFIER,
    MAX_LINES,
    MIN_LINES,
    TARGET_LINES,
    chunk_lines,
    is_python,
    python_definitions,
    split_identifier,
)
from codetune.context.imports import ModuleMap, import_targets, parse_imports
from codetune.context.index import (
    FORMAT_VERSION,
    TABLES,
    BuildStats,
    RepoIndex,
    _top,
    repo_vocabulary,
    stored_tokens,
)
from codetune.errors import CodetuneError

NEIGHBOURS = 16
NEIGHBOUR_IMPORTS = 8
NEIGHBOUR_QUERY_TOKENS = 64
DEFAULT_DIR = Path(".codetune") / "index"  # inside the working tree; see `index_tree`


@dataclass
class _File:
    """One file's chunks while building; token ids are provisional (`_Vocab`)."""

    sha: str
    starts: list[int]
    ends: list[int]
    texts: list[str]
    tokens: np.ndarray  # int32, all chunks' tokens one after another
    lengths: list[int]  # tokens per chunk
    defs: dict[str, int]  # top-level name -> chunk index within the file


class _Vocab:
    """Token -> provisional id for one build. Identifiers repeat far more than they are new,
    so each is split once and its token ids cached: tokenizing a chunk is one regex pass and
    C-level lookups."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}  # insertion order is id order
        self._ident: dict[str, tuple[int, ...]] = {}

    def id(self, tok: str) -> int:
        return self.ids.setdefault(tok, len(self.ids))

    def tokens(self) -> list[str]:
        return list(self.ids)

    def encode(self, text: str) -> list[int]:
        idents = IDENTIFIER.findall(text)
        cache, ids = self._ident, self.ids
        for ident in set(idents).difference(cache):
            cache[ident] = tuple([ids.setdefault(t, len(ids)) for t in split_identifier(ident)])
        return list(itertools.chain.from_iterable(map(cache.__getitem__, idents)))


def build_index(files: Iterable[tuple[str, str, str]], out_dir: str | Path, *,
                previous: RepoIndex | None = None, neighbours: bool = True,
                source: dict[str, Any] | None = None) -> RepoIndex:
    """Index `files`, (repo_id, path, text) triples, into `out_dir` and return it loaded.

    With `previous`, files whose text has the same sha256 as there are not chunked again (see
    the module docstring); `RepoIndex.last_build` says how many were. `out_dir` may hold an
    earlier index (replaced once the new one is complete); anything else there is refused."""
    entries = ((r, p, hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest(), t)
               for r, p, t in files)
    out = Path(out_dir)
    return _opened(out, previous,
                   _build(entries, out, previous, neighbours, source or {"kind": "files"}))


# The prepare.* settings that decide which files of a working tree are indexed and what their
# text becomes; an index records them so that `RepoIndex.update()` filters as its build did.
TREE_FILTERS = ("max_file_bytes", "max_line_length", "max_mean_line_length",
                "min_alphanum_fraction", "data_file_min_bytes", "data_file_max_bytes",
                "autogen_markers", "autogen_lines", "vendored_dirs", "lock_files", "include",
                "exclude", "languages", "notebook_markdown", "secrets", "secret_placeholder",
                "git_submodules")


def tree_filters(cfg: Any) -> dict[str, Any]:
    """The TREE_FILTERS of a PrepareConfig, as JSON."""
    return json.loads(json.dumps({k: getattr(cfg, k) for k in TREE_FILTERS}))


def filters_config(filters: Mapping[str, Any] | None) -> Any:
    """The PrepareConfig an index was built with, from its recorded `tree_filters` (defaults
    for an index written before they were recorded, or for a setting since added)."""
    from codetune.config import PrepareConfig

    cfg = PrepareConfig()
    for k, v in (filters or {}).items():
        if k in TREE_FILTERS:
            setattr(cfg, k, copy.deepcopy(v))
    return cfg


def index_tree(root: str | Path, out_dir: str | Path | None = None, *,
               previous: RepoIndex | None = None, neighbours: bool = False,
               cfg=None) -> RepoIndex:
    """Index the working tree at `root`: the files `codetune prepare` would read from it
    (git's tracked files or .gitignore rules, no symlinks followed, the same filters, secrets
    redacted), into `out_dir` (default `root/.codetune/index`, with a `.gitignore` that keeps
    it out of git and out of `prepare`). An index of the same tree at `out_dir` is updated
    incrementally; a file is hashed before anything else, so an unchanged one is never
    filtered or chunked again."""
    from codetune.config import PrepareConfig
    from codetune.data.filters import FileFilter, _Drop
    from codetune.data.sources import Candidate, open_source, printable_path

    root = Path(root).absolute()
    if not root.is_dir():
        raise CodetuneError(f"{root} is not a folder; `codetune index` reads a working tree "
                            "(for a dataset, `codetune prepare` builds DATASET/context)")
    if out_dir is None:
        out = root / DEFAULT_DIR
        _make_own_dir(out.parent)
    else:
        out = Path(out_dir).absolute()
    cfg = dataclasses.replace(cfg or PrepareConfig(), dedup_near=False)
    src = open_source(str(root), cfg, Path(os.devnull))
    if src.info.kind != "folder":
        raise CodetuneError(f"{root} is not a working tree (a bare git repository?); give "
                            "the folder you edit the code in")
    repo_id = src.info.repo_id
    filt = FileFilter(cfg)
    if previous is not None and previous.info.get("secret_rules") != _secret_rules():
        previous = None  # chunked under older secret rules: reuse none of it
    filters = tree_filters(cfg)
    if previous is not None and previous.info.get("source", {}).get("filters") != filters:
        # filtered (or redacted) under other settings, or unrecorded ones: an unchanged file
        # is reused unfiltered, so reuse none of it
        previous = None
    known: Mapping[tuple[str, str], int] = previous._s.file_of if previous is not None else {}
    prev_sha = previous._s.sha if previous is not None else []

    def entries() -> Iterator[tuple[str, str, str, str | None]]:
        for cand in src.candidates:
            if cand.reason or cand.fs_path is None or filt.check_path(cand.path)[1]:
                continue
            try:  # read once, hash, and filter only what changed
                raw = filt.read(cand)
            except (OSError, _Drop):
                continue  # vanished, too large or not a regular file: never indexed
            path = printable_path(cand.path)
            sha = hashlib.sha256(raw).hexdigest()
            f = known.get((repo_id, path))
            if f is not None and prev_sha[f] == sha:
                yield repo_id, path, sha, None
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            res = filt.process(Candidate(repo_id, cand.path, content=text))
            if res.reason is None:
                yield repo_id, path, sha, res.content

    source = {"kind": "tree", "root": str(root), "repo_id": repo_id,
              "commit": src.info.commit, "filters": filters}
    return _opened(out, previous, _build(entries(), out, previous, neighbours, source))


def index_dataset(folder: Path, train_shards: list[Path]) -> dict[str, Any]:
    """Build `folder/context` from a dataset's train shards (what `codetune prepare` calls, in
    its staging folder); returns the manifest's `context` entry. Held-out files are never
    read: they are in other shards."""
    from codetune.data import store

    def rows() -> Iterator[tuple[str, str, str, str | None]]:
        for shard in train_shards:
            for row in store.iter_rows(shard, ["repo_id", "path", "content", "sha256"]):
                yield row["repo_id"], row["path"], row["sha256"], row["content"]

    st, counts = _build(rows(), folder / "context", None, True,
                        {"kind": "dataset", "split": "train"})
    return {"path": "context", "format_version": FORMAT_VERSION, "split": "train",
            "files": st.files, "chunks": st.chunks, "neighbours": counts["neighbours"],
            "seconds": round(st.seconds, 2)}


# --------------------------------------------------------------------------- the build


def _opened(out: Path, previous: RepoIndex | None,
            built: tuple[BuildStats, dict[str, int]]) -> RepoIndex:
    """The index a build wrote (or `previous`, when nothing changed), with its stats."""
    stats = built[0]
    if not stats.changed and previous is not None:
        index = RepoIndex(previous.path, previous._s, previous._remedy)
    else:
        index = RepoIndex.open(out)
    index.last_build = stats
    return index


def _build(entries: Iterable[tuple[str, str, str, str | None]], out: Path,
           previous: RepoIndex | None, neighbours: bool,
           source: dict[str, Any]) -> tuple[BuildStats, dict[str, int]]:
    """Write the index of `entries` to `out`; returns what it did and the counts written.
    Entries are (repo_id, path, sha256, text); text None means "unchanged: reuse"."""
    started = time.perf_counter()
    vocab = _Vocab()
    repos: dict[str, dict[str, _File]] = {}
    chunked = reused = 0
    old_ids: dict[int, np.ndarray] = {}  # previous repo -> its token ids as provisional ids
    for repo_id, path, sha, text in entries:
        files = repos.setdefault(repo_id, {})
        if path in files:
            continue  # a repeated path (dataset rows): the first one wins
        f = _reuse(previous, repo_id, path, sha, vocab, old_ids) if previous else None
        if f is not None:
            reused += 1
        elif text is not None:
            f = _chunk_file(sha, path, text, vocab)
            chunked += 1
        else:
            continue
        files[path] = f
    removed = 0
    if previous is not None:
        removed = sum(1 for r, p, _ in previous.files() if p not in repos.get(r, {}))
        if not chunked and not removed and \
                bool(previous.info.get("neighbours")) == neighbours:
            return (BuildStats(reused, len(previous), 0, reused, 0,
                               time.perf_counter() - started, 0.0, 0.0, changed=False),
                    previous.info["counts"])

    t_bm = t_nb = 0.0
    with outputs.staged(out, True, "index", replace_own=True) as tmp:
        w = _Writer(tmp)
        for repo_id in sorted(repos):
            t = time.perf_counter()
            part = _assemble(repo_id, repos.pop(repo_id), vocab)
            t_bm += time.perf_counter() - t
            t = time.perf_counter()
            nbs = _neighbours(part) if neighbours else [[] for _ in part.paths]
            t_nb += time.perf_counter() - t
            w.add(part, nbs)
        stats = BuildStats(w.n_files, w.n_chunks, chunked, reused, removed,
                           time.perf_counter() - started, t_bm, t_nb)
        counts = w.finish(source, neighbours, stats)
    return dataclasses.replace(stats, seconds=time.perf_counter() - started), counts


def _chunk_file(sha: str, path: str, text: str, vocab: _Vocab) -> _File:
    chunks = chunk_lines(text)
    toks = [vocab.encode(c.text) for c in chunks]
    lengths = [len(t) for t in toks]
    flat = np.fromiter(itertools.chain.from_iterable(toks), dtype=np.int32, count=sum(lengths))
    defs = python_definitions(chunks) if path.endswith((".py", ".pyi")) else {}
    return _File(sha, [c.start_line for c in chunks], [c.end_line for c in chunks],
                 [c.text for c in chunks], flat, lengths, defs)


def _reuse(prev: RepoIndex, repo_id: str, path: str, sha: str, vocab: _Vocab,
           old_ids: dict[int, np.ndarray]) -> _File | None:
    """The file as stored in `prev`, if its sha256 is unchanged; its token ids translated
    from the previous repository vocabulary into this build's."""
    s = prev._s
    f = s.file_of.get((repo_id, path))
    if f is None or s.sha[f] != sha:
        return None
    r = s.repo_of[repo_id]
    if r not in old_ids:
        old_ids[r] = np.array([vocab.id(t) for t in repo_vocabulary(prev, r)] or [0],
                              dtype=np.int32)
    flat, offsets = stored_tokens(prev)
    c0, c1 = int(s.chunk_start[f]), int(s.chunk_end[f])
    ids = old_ids[r][flat[offsets[c0]:offsets[c1]]]
    defs = {name: c - c0 for name, c in s.defs.get(f, {}).items()}
    return _File(sha, s.start_line[c0:c1].tolist(), s.end_line[c0:c1].tolist(),
                 s.text.slice(c0, c1 - c0).to_pylist(), ids,
                 np.diff(offsets[c0:c1 + 1]).tolist(), defs)


@dataclass
class _Part:
    """One repository, assembled: files sorted by path, token ids into its sorted vocabulary,
    its BM25 index. Chunk numbers are local to the repository."""

    repo_id: str
    paths: list[str]
    files: list[_File]
    file_chunks: np.ndarray  # chunk offset of each file, len(files) + 1
    flat: np.ndarray
    offsets: np.ndarray  # token offset of each chunk, chunks + 1
    vocab: list[str]
    bm: Any  # bm25s.BM25, or None when no chunk has a token


def _assemble(repo_id: str, files: dict[str, _File], vocab: _Vocab) -> _Part:
    paths = sorted(files)
    fl = [files[p] for p in paths]
    file_chunks = np.zeros(len(fl) + 1, dtype=np.int64)
    file_chunks[1:] = np.cumsum([len(f.starts) for f in fl])
    lengths = [n for f in fl for n in f.lengths]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    prov = np.concatenate([f.tokens for f in fl]) if fl else np.zeros(0, np.int32)
    used = np.unique(prov)
    every = vocab.tokens()
    toks = [every[i] for i in used.tolist()]
    order = sorted(range(len(toks)), key=toks.__getitem__)
    remap = np.zeros(len(every), dtype=np.int32)
    remap[used[order]] = np.arange(len(order), dtype=np.int32)
    flat = remap[prov]
    sorted_vocab = [toks[i] for i in order]
    bm = bm25.build(flat, offsets, sorted_vocab) if sorted_vocab else None
    return _Part(repo_id, paths, fl, file_chunks, flat, offsets, sorted_vocab, bm)


def _neighbours(part: _Part) -> list[list[tuple[int, float, int]]]:
    """Per file of `part`: [(repo-local chunk, score, reason code)], best first."""
    n_chunks = len(part.offsets) - 1
    chunk_texts = [t for f in part.files for t in f.texts]
    defs = {p: {name: int(part.file_chunks[i]) + c for name, c in f.defs.items()}
            for i, (p, f) in enumerate(zip(part.paths, part.files, strict=True))}
    modules = ModuleMap(part.paths)
    imports: dict[str, list] = {}

    def body(i: int) -> str:
        return "\n".join(chunk_texts[part.file_chunks[i]:part.file_chunks[i + 1]])

    index_of = {p: i for i, p in enumerate(part.paths)}

    def imports_of(p: str) -> list:
        if p not in imports:
            imports[p] = parse_imports(body(index_of[p]), p)
        return imports[p]

    if part.bm is not None:
        df = bm25.document_frequencies(part.bm)
        idf = np.log(1 + (n_chunks - df + 0.5) / (df + 0.5))
    out = []
    for i, p in enumerate(part.paths):
        a, b = int(part.file_chunks[i]), int(part.file_chunks[i + 1])
        picked: list[int] = []
        if is_python(p):
            text = body(i)
            for tp, name in import_targets(text, p, text, modules,
                                           lambda q: defs.get(q, {}), imports_of):
                c = defs[tp][name]
                if c not in picked:
                    picked.append(c)
                    if len(picked) >= NEIGHBOUR_IMPORTS:
                        break
        if part.bm is None:
            out.append([(c, 0.0, 0) for c in picked])
            continue
        query = _file_query(part.flat[part.offsets[a]:part.offsets[b]],
                            np.diff(part.offsets[a:b + 1]), df, idf)
        sc = np.array(bm25.scores(part.bm, query), dtype=np.float32)
        sc[a:b] = 0
        row = [(c, float(sc[c]), 0) for c in picked]
        sc[picked] = 0
        row += [(c, float(sc[c]), 1) for c in _top(sc, NEIGHBOURS - len(picked))]
        out.append(row)
    return out


def _file_query(ids: np.ndarray, lengths: np.ndarray, df: np.ndarray,
                idf: np.ndarray) -> np.ndarray:
    """The neighbour query of one file: its NEIGHBOUR_QUERY_TOKENS tokens of highest
    tf x idf among those some other file has too (sorted ids). `ids` are the file's tokens,
    chunk after chunk, `lengths` the tokens per chunk; `df` chunks per token in the
    repository. One sort of (token, chunk) pairs gives both tf and the file's own df."""
    n = len(lengths)
    if len(ids) == 0:
        return ids
    key = ids.astype(np.int64) * n + np.repeat(np.arange(n, dtype=np.int64), lengths)
    key.sort()
    tok_all = key // n
    starts = np.flatnonzero(np.r_[True, tok_all[1:] != tok_all[:-1]])
    tok = tok_all[starts]
    tf = np.diff(np.r_[starts, len(key)])
    new_pair = np.r_[True, key[1:] != key[:-1]].astype(np.int64)
    own_df = np.add.reduceat(new_pair, starts)
    keep = df[tok] > own_df
    tok, weight = tok[keep], tf[keep] * idf[tok[keep]]
    return np.sort(tok[np.argsort(-weight, kind="stable")[:NEIGHBOUR_QUERY_TOKENS]])


class _Writer:
    """Appends repositories to the tables of an index folder, then writes index.json."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: dict[str, list] = {k: [] for k in ("repo_id", "path", "sha256", "chunk_start",
                                                        "chunk_end", "nb_start", "nb_end")}
        self.chunks: dict[str, list] = {k: [] for k in ("file", "start_line", "end_line", "text")}
        self.tok_flat: list[np.ndarray] = []
        self.tok_lengths: list[np.ndarray] = []
        self.defs: dict[str, list] = {"chunk": [], "name": []}
        self.nbs: dict[str, list] = {"file": [], "chunk": [], "score": [], "reason": []}
        self.repos: list[dict[str, Any]] = []
        self.n_files = self.n_chunks = 0

    def add(self, part: _Part, nbs: list[list[tuple[int, float, int]]]) -> None:
        f0, c0 = self.n_files, self.n_chunks
        bm_rel = None
        if part.bm is not None:
            bm_rel = f"bm25/{len(self.repos):05d}"
            bm25.save(part.bm, self.folder / bm_rel)
        for i, (p, f) in enumerate(zip(part.paths, part.files, strict=True)):
            fid = f0 + i
            a = c0 + int(part.file_chunks[i])
            n_nb = len(self.nbs["file"])
            self.files["repo_id"].append(part.repo_id)
            self.files["path"].append(p)
            self.files["sha256"].append(f.sha)
            self.files["chunk_start"].append(a)
            self.files["chunk_end"].append(a + len(f.starts))
            self.files["nb_start"].append(n_nb)
            self.files["nb_end"].append(n_nb + len(nbs[i]))
            self.chunks["file"].extend([fid] * len(f.starts))
            self.chunks["start_line"].extend(f.starts)
            self.chunks["end_line"].extend(f.ends)
            self.chunks["text"].extend(f.texts)
            for name, c in f.defs.items():
                self.defs["chunk"].append(a + c)
                self.defs["name"].append(name)
            for c, score, reason in nbs[i]:
                self.nbs["file"].append(fid)
                self.nbs["chunk"].append(c0 + c)
                self.nbs["score"].append(score)
                self.nbs["reason"].append(reason)
        self.tok_flat.append(part.flat)
        self.tok_lengths.append(np.diff(part.offsets))
        n_chunks = int(part.file_chunks[-1])
        self.repos.append({"repo_id": part.repo_id, "files": [f0, f0 + len(part.paths)],
                           "chunks": [c0, c0 + n_chunks], "bm25": bm_rel,
                           "vocabulary": len(part.vocab)})
        self.n_files += len(part.paths)
        self.n_chunks += n_chunks

    def finish(self, source: dict[str, Any], neighbours: bool,
               stats: BuildStats) -> dict[str, int]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        lengths = np.concatenate(self.tok_lengths) if self.tok_lengths else np.zeros(0, int)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        offsets[1:] = np.cumsum(lengths)
        flat = np.concatenate(self.tok_flat) if self.tok_flat else np.zeros(0, np.int32)
        tables = {
            "files.parquet": pa.table({
                "repo_id": pa.array(self.files["repo_id"], pa.string()),
                "path": pa.array(self.files["path"], pa.string()),
                "sha256": pa.array(self.files["sha256"], pa.string()),
                **{k: pa.array(self.files[k], pa.int64())
                   for k in ("chunk_start", "chunk_end", "nb_start", "nb_end")}}),
            "chunks.parquet": pa.table({
                "file": pa.array(self.chunks["file"], pa.int32()),
                "start_line": pa.array(self.chunks["start_line"], pa.int32()),
                "end_line": pa.array(self.chunks["end_line"], pa.int32()),
                "text": pa.array(self.chunks["text"], pa.large_string()),
                "tokens": pa.ListArray.from_arrays(pa.array(offsets),
                                                   pa.array(flat, pa.int32()))}),
            "defs.parquet": pa.table({"chunk": pa.array(self.defs["chunk"], pa.int32()),
                                      "name": pa.array(self.defs["name"], pa.string())}),
            "neighbours.parquet": pa.table({
                "file": pa.array(self.nbs["file"], pa.int32()),
                "chunk": pa.array(self.nbs["chunk"], pa.int32()),
                "score": pa.array(self.nbs["score"], pa.float32()),
                "reason": pa.array(self.nbs["reason"], pa.int8())}),
        }
        for name in TABLES:
            pq.write_table(tables[name], self.folder / name, compression="zstd")
        sizes = {str(p.relative_to(self.folder)): p.stat().st_size
                 for p in sorted(self.folder.rglob("*")) if p.is_file()}
        import bm25s

        counts = {"repos": len(self.repos), "files": self.n_files, "chunks": self.n_chunks,
                  "neighbours": len(self.nbs["file"])}
        outputs.write_json(self.folder / "index.json", {
            **outputs.mark("index"),
            "version": FORMAT_VERSION,
            "complete": True,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "codetune_version": __version__,
            "bm25s_version": bm25s.__version__,
            "secret_rules": _secret_rules(),  # the rules that redacted the text chunked here
            "source": source,
            "chunking": {"target_lines": TARGET_LINES, "min_lines": MIN_LINES,
                         "max_lines": MAX_LINES, "tokens": "identifier-v1"},
            "neighbours": {"per_file": NEIGHBOURS, "imports": NEIGHBOUR_IMPORTS,
                           "query_tokens": NEIGHBOUR_QUERY_TOKENS} if neighbours else None,
            "counts": counts,
            "build": {"chunked": stats.chunked, "reused": stats.reused,
                      "removed": stats.removed},
            "repos": self.repos,
            "bytes": sizes,
        })
        return counts


def _secret_rules() -> int:
    from codetune.data.secrets import RULES  # heavy (detect-secrets): only when building

    return RULES


def _make_own_dir(folder: Path) -> None:
    """`ROOT/.codetune/`, with a `.gitignore` of `*`: git leaves it alone, and `prepare` and
    `index` skip it when they walk ROOT as a plain folder."""
    try:
        folder.mkdir(exist_ok=True)
        ignore = folder / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# written by codetune: nothing here is source code\n*\n",
                              encoding="utf-8")
    except OSError as e:
        raise outputs.write_error(e, folder) from None


def describe(index: RepoIndex) -> str:
    """One line about an index and its last build, for the CLI."""
    c = index.info["counts"]
    line = (f"{c['files']} files, {c['chunks']} chunks in {c['repos']} "
            f"repositor{'y' if c['repos'] == 1 else 'ies'}")
    st = index.last_build
    if st is not None:
        if not st.changed:
            return f"{line}; nothing changed"
        line += (f"; chunked {st.chunked}, reused {st.reused}, removed {st.removed} "
                 f"in {st.seconds:.1f} s")
    return line

