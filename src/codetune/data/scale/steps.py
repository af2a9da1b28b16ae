"""The datatrove steps of a distributed `prepare`: each one calls codetune's own code.

Stage "scan" (`tasks` tasks, any executor): `ReadPlan` -> `FilterFiles` -> `WriteResults`.
    Task r takes plan chunks r, r + tasks, ... (chunks never span sources) and, per chunk,
    writes `results/CHUNK.rows`: every file's outcome (drop reason, secrets found, sha256,
    MinHash signature) and, for a file that passed the filters, its redacted content. The file
    appears by rename once complete: it is the chunk's completion mark, so a rerun task skips
    finished chunks and never doubles rows.
Stage "final" (one task): `GlobalDedup` -> `WriteShards` -> `Finish`.
    `GlobalDedup` replays every result in plan order through `prepare.Scan` (the one copy of
    the drop/secret records, split and exact + MinHash dedup rules) and stages the kept rows
    as the single-machine path does, so its decisions depend neither on the task count nor on
    the order tasks finished. Where the final task runs in the calling process while the scan
    tasks run (`follow`: local processes, a Ray on this machine), it replays chunk k as soon as
    chunk k and all before it are written, so only the last chunks, the shards and the report
    remain after the scan. `WriteShards` writes the shards with `store.write_shards`; `Finish`
    writes the index, report and manifest and renames the folder into place
    (`outputs.commit`): nothing reaches DIR before that.

Formats, chosen so that a scan task needs neither pyarrow nor pandas (~0.5 s of imports per
process, which pyarrow pays on its first array): a plan chunk is one JSON list; a results
file is, per file in plan order, one JSON line (ASCII: a path's undecodable bytes travel as
`\\udcXX` escapes and come back identical), then the raw signature and content bytes it
announces (UTF-8 with `surrogatepass`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from codetune import outputs
from codetune.config import PrepareConfig
from codetune.data import report, secrets, store  # noqa: F401  (secrets: see below)
from codetune.data.filters import FileFilter, Result
from codetune.data.prepare import (
    Scan,
    Summary,
    _content_hash,
    _write_manifest,
    staged_row,
)
from codetune.data.sources import Candidate, SourceInfo

# The secret scanner (detect-secrets) is imported with this module, which the driver loads
# before datatrove forks the task processes: every task starts with it, instead of importing
# it again per task as FileFilter would. Nothing here imports scipy (dedup computes
# datasketch's MinHash and LSH in numpy), which a fresh Ray worker would pay ~1.4 s for.

STATE = "state.json"  # the plan is complete and matches this fingerprint (see scale/__init__)


def plan_row(seq: int, c: Candidate) -> list[Any]:
    return [seq, c.repo_id, c.path, c.fs_path, c.content, c.root, c.reason, c.detail,
            c.has_path]


def plan_file(work: Path, k: int) -> Path:
    return work / "plan" / f"{k:06d}.json"


def results_file(work: Path, k: int) -> Path:
    return work / "results" / f"{k:06d}.rows"


def write_plan_chunk(work: Path, k: int, rows: list[list[Any]]) -> None:
    plan_file(work, k).write_text(json.dumps(rows), encoding="ascii")


def read_plan_chunk(work: Path, k: int) -> list[tuple[int, Candidate]]:
    rows = json.loads(plan_file(work, k).read_text(encoding="ascii"))
    return [(seq, Candidate(repo, path, fs_path=fs_path, content=content, root=root,
                            reason=reason, detail=detail, has_path=has_path))
            for seq, repo, path, fs_path, content, root, reason, detail, has_path in rows]


def load_state(work: Path) -> dict[str, Any]:
    return json.loads((work / STATE).read_text(encoding="utf-8"))


def write_result(fh, seq: int, res: Result) -> None:
    """One file's outcome onto a results file: its JSON line, signature, content."""
    sig = b"" if res.signature is None else res.signature.tobytes()
    content = b"" if res.reason is not None or res.content is None else \
        res.content.encode("utf-8", "surrogatepass")
    head = {"seq": seq, "repo_id": res.repo_id, "path": res.path, "language": res.language,
            "reason": res.reason, "detail": res.detail, "sha256": res.sha256.hex(),
            "secrets": res.secrets, "num_bytes": res.num_bytes, "sig": len(sig),
            "content": len(content) if res.reason is None else None}
    fh.write(json.dumps(head).encode("ascii") + b"\n")
    fh.write(sig)
    fh.write(content)


def read_results(path: Path) -> Iterator[tuple[int, Result, int]]:
    """(seq, result with its content, content bytes) of each file of one results file."""
    with open(path, "rb") as fh:
        while line := fh.readline():
            h = json.loads(line)
            sig = np.frombuffer(fh.read(h["sig"]), np.uint32) if h["sig"] else None
            n = h["content"]
            content = None if n is None else fh.read(n).decode("utf-8", "surrogatepass")
            yield h["seq"], Result(h["repo_id"], h["path"], language=h["language"],
                                   content=content, reason=h["reason"], detail=h["detail"],
                                   sha256=bytes.fromhex(h["sha256"]), signature=sig,
                                   secrets=[tuple(x) for x in h["secrets"]],
                                   num_bytes=h["num_bytes"]), n or 0


def process_safely(filt: FileFilter, cand: Candidate) -> Result:
    """`FileFilter.process`, with an unexpected error on one file recorded as that file's drop
    (reason `error`) instead of failing the task and, with it, the whole job."""
    try:
        return filt.process(cand)
    except Exception as e:  # noqa: BLE001  (any bug or OS oddity on one file: record it)
        detail = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        return Result(cand.repo_id, cand.path, reason="error", detail=detail)


# --------------------------------------------------------------------------- stage "scan"


class ReadPlan(PipelineStep):
    """One reader per chunk of a source's listing: the candidates of this task's chunks."""

    name = "codetune plan"
    type = "📖 - READER"

    def __init__(self, work: str):
        super().__init__()
        self.work = work

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        work = Path(self.work)
        for k in range(rank, load_state(work)["chunks"], world_size):
            if results_file(work, k).exists():
                self.stat_update("chunks_already_done")
                continue
            rows = read_plan_chunk(work, k)
            self.stat_update("chunks")
            for i, (seq, cand) in enumerate(rows):
                yield Document(text="", id=str(seq),
                               metadata={"chunk": k, "seq": seq, "candidate": cand,
                                         "last": i == len(rows) - 1})


class FilterFiles(PipelineStep):
    """codetune's filters (each drop with its reason), notebooks, secret redaction, sha256 and
    MinHash signature: `FileFilter.process`, the code the single-machine workers run."""

    name = "codetune filters + secrets + hashes"
    type = "🔻 - FILTER"

    def __init__(self, cfg: PrepareConfig):
        super().__init__()
        self.cfg = cfg

    def run(self, data, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        filt = FileFilter(self.cfg)
        for doc in data:
            with self.track_time():
                res = process_safely(filt, doc.metadata.pop("candidate"))
            self.stat_update(f"dropped_{res.reason}" if res.reason else "passed")
            self.stat_update("input_bytes", value=res.num_bytes, unit="file")
            doc.metadata["result"] = res
            yield doc


class WriteResults(PipelineStep):
    """Per chunk, the results file (its completion mark: written under a name of this attempt's
    own, then renamed)."""

    name = "codetune per-chunk results"
    type = "💽 - WRITER"

    def __init__(self, work: str, cfg: PrepareConfig):
        super().__init__()
        self.work, self.cfg = work, cfg

    def run(self, data, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        work = Path(self.work)
        fh = None
        try:
            for doc in data:
                k, res = doc.metadata["chunk"], doc.metadata.pop("result")
                if fh is None:
                    # A name of this attempt's own: a file left open by a failed attempt
                    # (closed whenever it is collected) must never write into this one's.
                    fh = open(results_file(work, k).with_suffix(  # noqa: SIM115
                        f".{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"), "wb")
                write_result(fh, doc.metadata["seq"], res)
                if doc.metadata["last"]:
                    with self.track_time("chunk"):
                        self._close_chunk(work, k, fh)
                    self.stat_update("chunks_written")
                    fh = None
                yield doc
        except BaseException:
            if fh is not None:  # the chunk this attempt did not finish: leave no file
                with contextlib.suppress(Exception):
                    fh.close()
                Path(fh.name).unlink(missing_ok=True)
            raise

    @staticmethod
    def _close_chunk(work: Path, k: int, fh) -> None:
        fh.close()
        os.replace(fh.name, results_file(work, k))


# --------------------------------------------------------------------------- stage "final"


class _Staging(store.RowWriter):
    """`store.RowWriter` (the single path's staging), uncompressed: `write_shards` reads it
    once, right after, and compresses the shards, so zstd here would be a second pass over
    every kept byte in the one serial task (0.08 s of its 0.5 s on the 31 MB stdlib)."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

        super().__init__(path, with_id=True)
        self.writer.close()  # the zstd writer RowWriter opens: replaced, same file and schema
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="none")


def _drain(data) -> None:
    if data:
        deque(data, maxlen=0)


# Scans running in this process's other thread, by work folder: set once the scan has ended
# (finished or failed). A following final task waits for chunks only while it is unset.
_SCANS: dict[str, threading.Event] = {}
_POLL_S = 0.02  # a results file is looked for every 20 ms: ~0 CPU, and a chunk takes seconds


@contextlib.contextmanager
def scan_running(work: Path) -> Iterator[threading.Event]:
    """Registers a scan of `work` running beside a following final task; set the event when
    the scan ends."""
    done = _SCANS[str(work)] = threading.Event()
    try:
        yield done
    finally:
        done.set()
        _SCANS.pop(str(work), None)


def wait_for_chunk(work: Path, k: int) -> bool:
    """Block until chunk k's results are written; False if the scan ended without them (or no
    scan of `work` runs beside this process)."""
    path = results_file(work, k)
    while not path.exists():
        done = _SCANS.get(str(work))
        if done is None or done.wait(_POLL_S):
            return path.exists()
    return True


def iter_results(work: Path, chunks: int,
                 follow: bool = False) -> Iterator[tuple[int, Result, int]]:
    """(seq, result, content bytes) of every file, in plan order; with `follow`, waiting for
    each chunk while the scan beside this process writes it."""
    for k in range(chunks):
        path = results_file(work, k)
        if not (wait_for_chunk(work, k) if follow else path.exists()):
            raise FileNotFoundError(f"{path}: the scan stage did not finish chunk {k}")
        yield from read_results(path)


class GlobalDedup(PipelineStep):
    """Every result in plan order through `prepare.Scan`: drops and secrets recorded, split,
    exact + MinHash dedup, leaks, the tiny-corpus hold-out; the kept rows staged in
    `dataset/staging.parquet`, as `prepare._build` does (uncompressed: `_Staging`). Memory: the dedup index, as in the
    single-machine path, and one row group of the staging file."""

    name = "codetune global dedup + split"
    type = "🫂 - DEDUP"

    def __init__(self, work: str, out: str, cfg: PrepareConfig, follow: bool = False):
        super().__init__()
        self.work, self.out, self.cfg, self.follow = work, out, cfg, follow

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        _drain(data)
        work = Path(self.work)
        folder = work / "dataset"
        if folder.exists():
            shutil.rmtree(folder)  # a final task that died midway starts over
        folder.mkdir()
        summary = Summary(Path(self.out))
        dropped = 0
        with Scan(folder, self.cfg, summary) as scan:
            staging = _Staging(folder / "staging.parquet")
            for _, res, nbytes in iter_results(work, load_state(work)["chunks"], self.follow):
                kept = scan.take(res, nbytes)
                if kept is not None:
                    staging.add(staged_row(res, *kept))
                elif res.reason is None:
                    dropped += 1
            staging.close()
            leaks, move = scan.finish()
        self.stat_update("kept", value=sum(summary.kept.values()))
        self.stat_update("dropped_duplicates", value=dropped + len(leaks))
        yield Document(text="", id="decisions",
                       metadata={"summary": summary, "drop": leaks, "move": move})


class WriteShards(PipelineStep):
    """The staged rows, in plan order, into the shards (`store.write_shards`, as the
    single-machine path)."""

    name = "codetune shards"
    type = "💽 - WRITER"

    def __init__(self, work: str, cfg: PrepareConfig):
        super().__init__()
        self.work, self.cfg = work, cfg

    def run(self, data, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        folder = Path(self.work) / "dataset"
        for doc in data:
            summary = doc.metadata["summary"]
            with self.track_time("dataset"):
                summary.shards = store.write_shards(
                    folder / "staging.parquet", folder, doc.metadata["drop"],
                    doc.metadata["move"], summary.bytes, self.cfg.shard_bytes)
            (folder / "staging.parquet").unlink()
            summary.content_hash = _content_hash(folder, summary.shards)
            yield doc


class Finish(PipelineStep):
    """The repository index (through the caller's `context_index`), report and manifest; then
    the folder is renamed to DIR, checked again against the overwrite rules first."""

    name = "codetune manifest + report + index"
    type = "🏁 - FINISH"

    def __init__(self, work: str, out: str, cfg: PrepareConfig, overwrite: bool,
                 inputs: list[tuple[str, str]], started: float, context_index=None):
        super().__init__()
        self.work, self.out, self.cfg, self.overwrite = work, out, cfg, overwrite
        self.inputs, self.started, self.context_index = inputs, started, context_index

    def run(self, data, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        work, cfg = Path(self.work), self.cfg
        folder = work / "dataset"
        infos = [SourceInfo(**i) for i in load_state(work)["infos"]]
        for doc in data:
            summary = doc.metadata["summary"]
            if self.context_index is not None and cfg.context_index:
                summary.context = self.context_index(
                    folder, [folder / "data" / name for name in summary.shards["train"]])
            summary.seconds = time.time() - self.started
            report.write(folder, summary, infos, cfg)
            _write_manifest(folder, summary, infos, cfg)
            outputs.record_written(folder, "dataset")
            out = outputs.check(self.out, self.overwrite, "dataset", inputs=self.inputs)
            outputs.commit(folder, out)
            # The plan and the intermediates are spent; the logs stay until the next run.
            (work / STATE).unlink()
            for sub in ("plan", "results"):
                shutil.rmtree(work / sub, ignore_errors=True)
            yield doc
