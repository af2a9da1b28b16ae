"""`codetune prepare`: repositories in, a clean training set out.

Flow: sources list candidate files -> worker processes filter, redact and hash each file
(`filters.FileFilter`) -> this process assigns the held-out split, deduplicates (exact, then
MinHash LSH), and streams kept rows into a staging parquet file -> a final pass writes the
shards per split, leaving out train files found to leak into validation -> the repository
context index of the train split (when the caller passes `context_index`) -> manifest and report.

Results come back in input order (`imap`), so the output is the same for any `--workers`.
Memory holds the dedup index (hash per file, MinHash signature per file) and one row group;
file contents are streamed.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import multiprocessing
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from codetune import __version__, outputs
from codetune.config import PrepareConfig
from codetune.data import report, store
from codetune.data.dedup import NearDupIndex
from codetune.data.filters import FileFilter, Result
from codetune.data.sources import Candidate, Source, SourceInfo, open_source, printable_path
from codetune.errors import CodetuneError

CHARS_PER_TOKEN = 3.6  # the reference notebook's default estimate; `codetune stats --tokenizer` measures it


def default_cache_dir() -> Path:
    base = os.environ.get("CODETUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "codetune")
    return Path(base) / "git"


def split_of(repo_id: str, path: str, cfg: PrepareConfig) -> tuple[str, float]:
    """("train" | "validation", u) with u uniform in [0, 1) from a hash of (seed, repo[, path]):
    the same file lands in the same split on every run and machine."""
    key = repo_id if cfg.split_by == "repo" else f"{repo_id}\0{path}"
    digest = hashlib.sha256(f"{cfg.seed}\0{key}".encode("utf-8", "surrogateescape")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return ("validation" if u < cfg.valid_fraction else "train"), u


@dataclass
class Summary:
    """What `prepare` returns and prints."""

    out_dir: Path
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(store.SPLITS, 0))
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(store.SPLITS, 0))
    dropped: Counter = field(default_factory=Counter)
    secrets_found: int = 0
    files_with_secrets: int = 0
    input_bytes: int = 0
    seconds: float = 0.0
    content_hash: str = ""
    warnings: list[str] = field(default_factory=list)
    shards: dict[str, list[str]] = field(default_factory=dict)
    languages: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    context: dict[str, Any] | None = None  # the manifest's entry for DIR/context, if built
    jobs: list[str] = field(default_factory=list)  # prepare.executor=slurm: what was submitted


class _Kept:
    """Bookkeeping for one kept file, for dedup decisions made after it was staged."""

    __slots__ = ("split", "repo_id", "path", "num_bytes", "language")

    def __init__(self, split: str, repo_id: str, path: str, num_bytes: int, language: str):
        self.split, self.repo_id, self.path = split, repo_id, path
        self.num_bytes, self.language = num_bytes, language

    @property
    def label(self) -> str:
        return f"{self.repo_id}/{self.path}"


# --------------------------------------------------------------------------- workers

_FILTER: FileFilter | None = None


def _init_worker(cfg: PrepareConfig) -> None:
    global _FILTER
    _FILTER = FileFilter(cfg)


def _work(cand: Candidate) -> Result:
    assert _FILTER is not None
    return _FILTER.process(cand)


@contextlib.contextmanager
def _pool(cfg: PrepareConfig, workers: int):
    """Yields a function mapping candidates to results, in order, on `workers` processes.

    On Linux the workers are forked, so they start with the modules this process already
    imported (detect-secrets, numpy: ~1 s per spawned worker otherwise). The pool is made
    before any progress-bar thread exists, which is what makes forking safe."""
    if workers <= 1:
        filt = FileFilter(cfg)
        yield lambda cands: map(filt.process, cands)
        return
    from codetune.data import secrets  # noqa: F401  (heavy: detect_secrets; once, before the fork)

    # imap has no back-pressure: workers faster than this process would pile finished files
    # (with their text) up in memory. A semaphore bounds the files in flight.
    in_flight = threading.BoundedSemaphore(64 * workers)

    def throttled(cands: Iterator[Candidate]) -> Iterator[Candidate]:
        for c in cands:
            in_flight.acquire()
            yield c

    def run(cands: Iterator[Candidate]) -> Iterator[Result]:
        for res in pool.imap(_work, throttled(cands), chunksize=8):
            in_flight.release()
            yield res

    method = "fork" if sys.platform == "linux" else "spawn"
    with multiprocessing.get_context(method).Pool(
            workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        yield run


# --------------------------------------------------------------------------- main entry


ContextIndexer = Callable[[Path, list[Path]], dict[str, Any]]


def prepare(sources: list[str], out_dir: str | Path, cfg: PrepareConfig,
            overwrite: bool = False, progress: bool = True,
            context_index: ContextIndexer | None = None) -> Summary:
    """Build a prepared dataset at `out_dir` from `sources` (see the module docstring).

    `context_index(folder, train_shards)` builds the repository index of the train split in
    the staging folder (so it is renamed into place with the dataset) and returns the
    manifest's `context` entry: pass `codetune.context.index_dataset` (the CLI does). It is
    a parameter because `data` sits below `context` in the layers; `prepare.context_index=
    false` skips it. `prepare.executor` runs the same build as datatrove tasks
    (`codetune.data.scale`)."""
    if not sources:
        raise CodetuneError("give at least one SOURCE: a folder, a git URL, a Hub dataset "
                            "(hf://datasets/OWNER/NAME) or parquet/JSON files")
    if cfg.executor:
        from codetune.data.scale import prepare_scaled  # (a cycle: data.scale imports this module)

        return prepare_scaled(sources, out_dir, cfg, overwrite, progress, context_index)
    out = outputs.check(out_dir, overwrite, "dataset",
                        inputs=[("source", p) for s in sources for p in _local_paths(s)])
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    opened = [open_source(s, cfg, cache) for s in sources]  # clone/validate before writing
    if cfg.repo_name is not None:
        _check_repo_name(cfg.repo_name, opened)
    workers = cfg.workers or os.cpu_count() or 1
    started = time.perf_counter()
    with outputs.staged(out, overwrite, "dataset", checked=True) as tmp:
        summary = _build(opened, tmp, out, cfg, workers, progress)
        if context_index is not None and cfg.context_index:
            summary.context = context_index(
                tmp, [tmp / "data" / name for name in summary.shards["train"]])
        summary.seconds = time.perf_counter() - started
        report.write(tmp, summary, [s.info for s in opened], cfg)
        _write_manifest(tmp, summary, [s.info for s in opened], cfg)
    return summary


def _local_paths(spec: str) -> list[str]:
    """The files and folders on this machine that SOURCE `spec` reads (none for the Hub)."""
    if spec.startswith(("hf://", "hub:")):
        return []
    spec = spec.removeprefix("dataset:")
    if spec.startswith("file://"):
        spec = unquote(urlparse(spec).path)
    elif "://" in spec:
        return []
    spec = spec.split("#", 1)[0] if "#" in spec and not os.path.exists(spec) else spec
    if any(ch in spec for ch in "*?[") and not os.path.exists(spec):
        return glob.glob(spec)
    return [spec]


def _check_repo_name(name: str, opened: list[Source]) -> None:
    """prepare.repo_name (which `open_source` gave the source) names one folder/git source."""
    if not name.strip():
        raise CodetuneError("prepare.repo_name is empty; give a name such as acme/billing")
    if len(opened) != 1 or opened[0].info.kind == "dataset":
        raise CodetuneError(
            "--repo-name names the repository of a single folder or git SOURCE; with "
            f"{len(opened)} source(s) ({', '.join(s.info.kind for s in opened)}) leave it out "
            "(a dataset source takes its names from --repo-column)")


def _candidates(opened: list[Source], skip: list[Path]) -> tuple[Iterator[Candidate], int | None]:
    """All candidates in order, and their count when every source is a listing (not a stream)."""
    skip_s = [str(p) + os.sep for p in skip]
    lists, total = [], 0
    for src in opened:
        if src.info.kind == "dataset":
            lists.append(src.candidates)
            total = None
        else:
            # Listing is cheap and gives the progress bar a total; our own output is never input.
            items = [c for c in src.candidates
                     if not (c.fs_path and any(c.fs_path.startswith(p) for p in skip_s))]
            lists.append(items)
            if total is not None:
                total += len(items)

    def chain() -> Iterator[Candidate]:
        for it in lists:
            yield from it
    return chain(), total


def _build(opened: list[Source], tmp: Path, out: Path, cfg: PrepareConfig, workers: int,
           progress: bool) -> Summary:

    summary = Summary(out)
    cands, total = _candidates(opened, [tmp, out])
    with Scan(tmp, cfg, summary) as scan, contextlib.ExitStack() as stack:
        staging = store.RowWriter(tmp / "staging.parquet", with_id=True)
        run = stack.enter_context(_pool(cfg, workers))
        bar = stack.enter_context(report.progress_bar(total, progress))
        for res in run(cands):
            bar(res.num_bytes)
            kept = scan.take(res)
            if kept is not None:
                staging.add(staged_row(res, *kept))
        staging.close()
        leaks, move = scan.finish()
    summary.shards = store.write_shards(tmp / "staging.parquet", tmp, leaks, move,
                                        summary.bytes, cfg.shard_bytes)
    (tmp / "staging.parquet").unlink()
    summary.content_hash = _content_hash(tmp, summary.shards)
    return summary


def staged_row(res: Result, rid: int, split: str, nbytes: int) -> dict[str, Any]:
    """The staging parquet row of a kept file (`id` = `rid`, what `write_shards` filters on)."""
    return {"id": rid, "repo_id": res.repo_id, "path": printable_path(res.path),
            "language": res.language, "content": res.content, "split": split,
            "num_bytes": nbytes, "sha256": res.sha256.hex(),
            "secrets_redacted": len(res.secrets)}


class Scan:
    """The decisions `prepare` takes over filter results in input order: secrets and drops
    recorded (`dropped.jsonl`, `secrets.jsonl` in `folder`), the held-out split, exact and near
    dedup; at the end the train files that leak into validation and the tiny-corpus hold-out.

    The one copy of these rules: the single-machine path feeds results as its workers finish;
    the distributed path (`data/scale`) replays every task's results in the same input order in
    one global task (`nbytes` given, the content stays on disk), so both decide alike."""

    def __init__(self, folder: Path, cfg: PrepareConfig, summary: Summary):
        self.cfg, self.summary = cfg, summary
        self.dedup = _Dedup(cfg)
        self.best_train: tuple[float, int] | None = None  # lowest split hash among train files
        self.examples: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._files = contextlib.ExitStack()  # closed by __exit__ or finish()
        self.dropped_f = self._files.enter_context(
            open(folder / "dropped.jsonl", "w", encoding="utf-8"))  # noqa: SIM115
        self.secrets_f = self._files.enter_context(
            open(folder / "secrets.jsonl", "w", encoding="utf-8"))  # noqa: SIM115

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc: object) -> None:
        self._files.close()

    def drop(self, repo: str, path: str, reason: str, detail: str) -> None:
        self.summary.dropped[reason] += 1
        self.dropped_f.write(json.dumps({"repo_id": repo, "path": path, "reason": reason,
                                         "detail": detail}, ensure_ascii=False) + "\n")
        if len(self.examples[reason]) < 5:
            self.examples[reason].append((f"{repo}/{path}", detail))

    def take(self, res: Result, nbytes: int | None = None) -> tuple[int, str, int] | None:
        """(id, split, content bytes) of a kept file; None when `res` is dropped."""
        summary = self.summary
        path = printable_path(res.path)
        summary.input_bytes += res.num_bytes
        if res.secrets:
            summary.secrets_found += len(res.secrets)
            summary.files_with_secrets += 1
            action = "dropped file" if res.reason == "secret" else "redacted"
            for line, kind, masked in res.secrets:
                self.secrets_f.write(json.dumps(
                    {"repo_id": res.repo_id, "path": path, "line": line, "kind": kind,
                     "masked": masked, "action": action}, ensure_ascii=False) + "\n")
        if res.reason:
            self.drop(res.repo_id, path, res.reason, res.detail)
            return None
        split, u = split_of(res.repo_id, res.path, self.cfg)
        dup = self.dedup.check(res, split)
        if dup:
            self.drop(res.repo_id, path, *dup)
            return None
        if nbytes is None:
            nbytes = len(res.content.encode("utf-8", "surrogatepass"))
        rid = self.dedup.add(res, _Kept(split, res.repo_id, path, nbytes, res.language))
        if split == "train" and (self.best_train is None or u < self.best_train[0]):
            self.best_train = (u, rid)
        return rid, split, nbytes

    def finish(self) -> tuple[set[int], set[int]]:
        """Records the leaks, picks the tiny-corpus hold-out and fills the summary's counts;
        returns (ids to leave out, ids to move to validation) for `store.write_shards`."""
        summary, cfg, kept = self.summary, self.cfg, self.dedup.kept
        for rid in sorted(self.dedup.leaks):  # train files staged before the validation file
            k = kept.pop(rid)
            self.drop(k.repo_id, k.path, "leaks_validation",
                      "(near-)duplicates a validation file listed after it")
        self._files.close()

        # Tiny corpora: hashing may send no file at all to validation; hold out the train file
        # with the lowest split hash so eval always has something (same file on every run).
        move: set[int] = set()
        splits = Counter(k.split for k in kept.values())
        best = self.best_train
        if cfg.valid_fraction > 0 and splits["validation"] == 0 and splits["train"] >= 2 \
                and best is not None and best[1] in kept:
            move.add(best[1])
            kept[best[1]].split = "validation"
            summary.warnings.append("no file hashed into validation; held out one file so "
                                    "that eval has data (raise --valid-fraction for more)")
        for k in kept.values():
            summary.kept[k.split] += 1
            summary.bytes[k.split] += k.num_bytes
        summary.languages = _languages(kept)
        summary.examples = dict(self.examples)
        if cfg.split_by == "repo" and cfg.valid_fraction > 0 and min(summary.kept.values()) == 0:
            summary.warnings.append("split_by=repo put every repository in one split; add "
                                    "repositories or use split_by=file")
        return self.dedup.leaks, move


class _Dedup:
    """Exact and near-duplicate decisions over the files kept so far.

    Within a split the first file wins. Across splits the validation file always wins, so
    nothing held out has a (near-)copy in train: a later train copy is dropped, and an earlier
    one, already staged, is recorded in `leaks` and left out when the shards are written."""

    def __init__(self, cfg: PrepareConfig):
        self.exact: dict[bytes, int] | None = {} if cfg.dedup_exact else None
        self.near = NearDupIndex(cfg.near_dup_threshold, cfg.minhash_perms) \
            if cfg.dedup_near else None
        self.kept: dict[int, _Kept] = {}
        self.leaks: set[int] = set()

    def check(self, res: Result, split: str) -> tuple[str, str] | None:
        """(reason, detail) if `res` must be dropped; marks train files it makes leak."""
        if self.exact is not None:
            other = self.exact.get(res.sha256)
            if other is not None and other not in self.leaks:
                o = self.kept[other]
                if split == o.split:
                    return "exact_duplicate", f"same as {o.label}"
                if split == "train":
                    return "leaks_validation", f"identical to validation file {o.label}"
                self._leak(other)
        if self.near is not None and res.signature is not None:
            hits = self.near.query(res.signature)
            for k, sim in hits:  # best first
                o = self.kept[k]
                if split == "train" and o.split == "validation":
                    return "leaks_validation", f"Jaccard {sim:.2f} with validation file {o.label}"
            for k, sim in hits:
                if self.kept[k].split == split:
                    return "near_duplicate", f"Jaccard {sim:.2f} with {self.kept[k].label}"
            for k, _ in hits:  # only train files left: they near-duplicate this validation file
                self._leak(k)
        return None

    def add(self, res: Result, info: _Kept) -> int:
        rid = len(self.kept)  # kept only grows while scanning (leaks are popped at the end)
        self.kept[rid] = info
        if self.exact is not None:
            self.exact[res.sha256] = rid
        if self.near is not None and res.signature is not None:
            self.near.insert(rid, res.signature)
        return rid

    def _leak(self, rid: int) -> None:
        self.leaks.add(rid)
        if self.near is not None and rid in self.near:
            self.near.remove(rid)


def _languages(kept: dict[int, _Kept]) -> dict[str, dict[str, int]]:
    langs: dict[str, dict[str, int]] = {}
    for k in kept.values():
        d = langs.setdefault(k.language, {"files": 0, "bytes": 0})
        d["files"] += 1
        d["bytes"] += k.num_bytes
    return dict(sorted(langs.items(), key=lambda kv: -kv[1]["bytes"]))


def _content_hash(folder: Path, shards: dict[str, list[str]]) -> str:
    """sha256 over (split, repo_id, path, content sha256) of every row in shard order:
    independent of shard sizes and compression, equal for equal datasets."""
    h = hashlib.sha256()
    for split in store.SPLITS:
        for name in shards[split]:
            for row in store.iter_rows(folder / "data" / name,
                                       ["split", "repo_id", "path", "sha256"]):
                h.update("\0".join((row["split"], row["repo_id"], row["path"], row["sha256"]))
                         .encode("utf-8") + b"\n")
    return "sha256:" + h.hexdigest()


def _write_manifest(folder: Path, summary: Summary, infos: list[SourceInfo],
                    cfg: PrepareConfig) -> None:
    splits = {
        s: {"files": summary.kept[s], "bytes": summary.bytes[s],
            "estimated_tokens": round(summary.bytes[s] / CHARS_PER_TOKEN),
            "shards": summary.shards[s]}
        for s in store.SPLITS
    }
    store.write_json(folder / "manifest.json", {
        "format": store.FORMAT,
        "version": store.FORMAT_VERSION,
        "complete": True,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "codetune_version": __version__,
        "sources": [asdict(i) for i in infos],
        "options": asdict(cfg),
        "splits": splits,
        "token_estimate": f"bytes / {CHARS_PER_TOKEN} (the reference notebook's default chars per token); "
                          "`codetune stats DIR --tokenizer MODEL` measures the real ratio",
        "languages": summary.languages,
        "dropped": dict(sorted(summary.dropped.items())),
        "secrets": {"action": cfg.secrets, "findings": summary.secrets_found,
                    "files": summary.files_with_secrets},
        "input_bytes": summary.input_bytes,
        "seconds": round(summary.seconds, 2),
        "content_hash": summary.content_hash,
        # checked by every later stage: a truncated or replaced shard is caught up front
        "shard_bytes": {name: (folder / "data" / name).stat().st_size
                        for split in store.SPLITS for name in summary.shards[split]},
        "warnings": summary.warnings,
        "files": {"report": "report.md", "dropped": "dropped.jsonl", "secrets": "secrets.jsonl"},
        # the repository index of the train split (codetune.context), absent if not built
        **({"context": summary.context} if summary.context else {}),
    })
