"""The datatrove steps of a distributed `prepare`: each one calls codetune's own code.

Stage "scan" (`tasks` tasks, any executor): `ReadPlan` -> `FilterFiles` -> `WriteResults`.
    Task r takes plan chunks r, r + tasks, ... (chunks never span sources) and, per chunk,
    writes `results/CHUNK.parquet` (every file's outcome: drop reason, secrets found, sha256,
    MinHash signature; no content) and `staging/CHUNK.parquet` (the rows that passed the
    filters, redacted, with their split). A chunk's results file appears last, by rename: it is
    the chunk's completion mark, so a rerun task skips finished chunks and never doubles rows.
Stage "final" (one task): `GlobalDedup` -> `WriteShards` -> `Finish`.
    `GlobalDedup` replays every result in plan order through `prepare.Scan` (the one copy of
    the drop/secret records, split and exact + MinHash dedup rules), so its decisions depend
    neither on the task count nor on the order tasks finished. `WriteShards` copies the kept
    staging rows with `store.write_shards`; `Finish` writes the index, report and manifest and
    renames the folder into place (`outputs.commit`): nothing reaches DIR before that.

Strings cross the files as UTF-8 with `surrogatepass`, so a path holding undecodable bytes
(surrogate escapes) comes back identical.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from array import array
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasketch  # noqa: F401  (see below)
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
    split_of,
    staged_row,
)
from codetune.data.sources import Candidate, SourceInfo

# datasketch (~1.4 s: it imports scipy) and the secret scanner are imported with this module,
# which the driver (and each Ray actor) loads before datatrove forks the task processes: every
# task starts with them, instead of importing them again per task as FileFilter would.

STATE = "state.json"  # the plan is complete and matches this fingerprint (see scale/__init__)


def enc(s: str | None) -> bytes | None:
    return None if s is None else s.encode("utf-8", "surrogatepass")


def dec(b: bytes | None) -> str | None:
    return None if b is None else b.decode("utf-8", "surrogatepass")


def plan_schema():
    import pyarrow as pa  # heavy: pyarrow, ~0.3 s

    return pa.schema([("seq", pa.int64()), ("repo_id", pa.binary()), ("path", pa.binary()),
                      ("fs_path", pa.binary()), ("content", pa.large_binary()),
                      ("root", pa.binary()), ("reason", pa.string()), ("detail", pa.binary()),
                      ("has_path", pa.bool_())])


def results_schema():
    import pyarrow as pa  # heavy: pyarrow, ~0.3 s

    return pa.schema([("seq", pa.int64()), ("repo_id", pa.binary()), ("path", pa.binary()),
                      ("language", pa.string()), ("reason", pa.string()),
                      ("detail", pa.binary()), ("sha256", pa.binary()),
                      ("signature", pa.binary()), ("secrets", pa.string()),
                      ("num_bytes", pa.int64()), ("content_bytes", pa.int64())])


def plan_row(seq: int, c: Candidate) -> dict[str, Any]:
    return {"seq": seq, "repo_id": enc(c.repo_id), "path": enc(c.path), "fs_path": enc(c.fs_path),
            "content": enc(c.content), "root": enc(c.root), "reason": c.reason,
            "detail": enc(c.detail), "has_path": c.has_path}


def load_state(work: Path) -> dict[str, Any]:
    return json.loads((work / STATE).read_text(encoding="utf-8"))


def _write_atomic(table, path: Path) -> None:
    import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, str(tmp), compression="zstd")
    os.replace(tmp, path)


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
        import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

        work = Path(self.work)
        for k in range(rank, load_state(work)["chunks"], world_size):
            if (work / "results" / f"{k:06d}.parquet").exists():
                self.stat_update("chunks_already_done")
                continue
            rows = pq.read_table(str(work / "plan" / f"{k:06d}.parquet")).to_pylist()
            self.stat_update("chunks")
            for r in rows:
                cand = Candidate(dec(r["repo_id"]), dec(r["path"]), fs_path=dec(r["fs_path"]),
                                 content=dec(r["content"]), root=dec(r["root"]),
                                 reason=r["reason"], detail=dec(r["detail"]),
                                 has_path=r["has_path"])
                yield Document(text="", id=str(r["seq"]),
                               metadata={"chunk": k, "seq": r["seq"], "candidate": cand,
                                         "last": r is rows[-1]})


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
    """Per chunk: the staging rows (content, split) and then the results file (its mark)."""

    name = "codetune per-chunk results"
    type = "💽 - WRITER"

    def __init__(self, work: str, cfg: PrepareConfig):
        super().__init__()
        self.work, self.cfg = work, cfg

    def run(self, data, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        work = Path(self.work)
        rows: list[dict[str, Any]] = []
        staging: store.RowWriter | None = None
        try:
            for doc in data:
                k, seq, res = doc.metadata["chunk"], doc.metadata["seq"], doc.metadata["result"]
                if staging is None:
                    # A name of this attempt's own: a writer left open by a failed attempt
                    # (closed whenever it is collected) must never write into this one's file.
                    staging = store.RowWriter(
                        work / "staging" / f"{k:06d}.parquet.{os.getpid()}-{uuid.uuid4().hex[:8]}"
                                           ".tmp", with_id=True)
                nbytes = 0
                if res.reason is None:
                    nbytes = len(res.content.encode("utf-8", "surrogatepass"))
                    split = split_of(res.repo_id, res.path, self.cfg)[0]
                    staging.add(staged_row(res, seq, split, nbytes))
                rows.append(self._row(seq, res, nbytes))
                if doc.metadata["last"]:
                    with self.track_time("chunk"):
                        self._close_chunk(work, k, staging, rows)
                    self.stat_update("chunks_written")
                    rows, staging = [], None
                yield doc
        except BaseException:
            if staging is not None:  # the chunk this attempt did not finish: leave no file
                with contextlib.suppress(Exception):
                    staging.writer.close()
                staging.path.unlink(missing_ok=True)
            raise

    @staticmethod
    def _row(seq: int, res: Result, nbytes: int) -> dict[str, Any]:
        sig = res.signature
        return {"seq": seq, "repo_id": enc(res.repo_id), "path": enc(res.path),
                "language": res.language, "reason": res.reason, "detail": enc(res.detail),
                "sha256": res.sha256, "signature": None if sig is None else sig.tobytes(),
                "secrets": json.dumps([list(s) for s in res.secrets]) if res.secrets else None,
                "num_bytes": res.num_bytes, "content_bytes": nbytes}

    @staticmethod
    def _close_chunk(work: Path, k: int, staging: store.RowWriter,
                     rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa  # heavy: pyarrow, ~0.3 s

        staging.close()
        os.replace(staging.path, work / "staging" / f"{k:06d}.parquet")
        _write_atomic(pa.Table.from_pylist(rows, schema=results_schema()),
                      work / "results" / f"{k:06d}.parquet")


# --------------------------------------------------------------------------- stage "final"


def _drain(data) -> None:
    if data:
        deque(data, maxlen=0)


def iter_results(work: Path, chunks: int) -> Iterator[tuple[int, Result, int]]:
    """(seq, result without content, content bytes) of every file, in plan order."""
    import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

    for k in range(chunks):
        path = work / "results" / f"{k:06d}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{path}: the scan stage did not finish chunk {k}")
        f = pq.ParquetFile(str(path))
        for g in range(f.num_row_groups):
            for r in f.read_row_group(g).to_pylist():
                sig = r["signature"]
                res = Result(dec(r["repo_id"]), dec(r["path"]), language=r["language"],
                             reason=r["reason"], detail=dec(r["detail"]),
                             sha256=r["sha256"] or b"", num_bytes=r["num_bytes"],
                             signature=None if sig is None else np.frombuffer(sig, np.uint32),
                             secrets=[tuple(s) for s in json.loads(r["secrets"] or "[]")])
                yield r["seq"], res, r["content_bytes"]


class GlobalDedup(PipelineStep):
    """Every result in plan order through `prepare.Scan`: drops and secrets recorded, split,
    exact + MinHash dedup, leaks, the tiny-corpus hold-out. Memory: the dedup index, as in the
    single-machine path, plus 8 bytes per kept file (its plan position)."""

    name = "codetune global dedup + split"
    type = "🫂 - DEDUP"

    def __init__(self, work: str, out: str, cfg: PrepareConfig):
        super().__init__()
        self.work, self.out, self.cfg = work, out, cfg

    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        _drain(data)
        work = Path(self.work)
        folder = work / "dataset"
        if folder.exists():
            shutil.rmtree(folder)  # a final task that died midway starts over
        folder.mkdir()
        summary = Summary(Path(self.out))
        seq_of_rid = array("q")  # rid -> seq: ids are handed out 0, 1, 2, ... as files are kept
        drop = array("q")  # staged in the scan stage but dropped here (duplicates)
        with Scan(folder, self.cfg, summary) as scan:
            for seq, res, nbytes in iter_results(work, load_state(work)["chunks"]):
                kept = scan.take(res, nbytes)
                if kept is not None:
                    seq_of_rid.append(seq)
                elif res.reason is None:
                    drop.append(seq)
            leaks, move = scan.finish()
        drop.extend(seq_of_rid[r] for r in leaks)
        self.stat_update("kept", value=len(seq_of_rid) - len(leaks))
        self.stat_update("dropped_duplicates", value=len(drop))
        yield Document(text="", id="decisions", metadata={
            "summary": summary, "drop": drop, "move": array("q", (seq_of_rid[r] for r in move))})


class WriteShards(PipelineStep):
    """The kept staging rows, in plan order, into DIR's shards (`store.write_shards`)."""

    name = "codetune shards"
    type = "💽 - WRITER"

    def __init__(self, work: str, cfg: PrepareConfig):
        super().__init__()
        self.work, self.cfg = work, cfg

    def run(self, data, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        work = Path(self.work)
        for doc in data:
            summary = doc.metadata["summary"]
            files = [work / "staging" / f"{k:06d}.parquet"
                     for k in range(load_state(work)["chunks"])]
            with self.track_time("dataset"):
                summary.shards = store.write_shards(
                    files, work / "dataset", doc.metadata["drop"], doc.metadata["move"],
                    summary.bytes, self.cfg.shard_bytes)
            summary.content_hash = _content_hash(work / "dataset", summary.shards)
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
            for sub in ("plan", "results", "staging"):
                shutil.rmtree(work / sub, ignore_errors=True)
            yield doc
