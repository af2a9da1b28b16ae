"""The dataset folder on disk: parquet shards, `manifest.json`, how it is written safely, and
how every stage reads it back (`resolve_files`, `held_out_files`, a run's `run_dataset`).

Layout (what `datasets.load_dataset("parquet", data_dir=DIR + "/data")` and
`load_dataset(DIR)` read as a DatasetDict with `train` and `validation` splits):

    DIR/data/train-00000-of-00002.parquet ...   columns: see SCHEMA
    DIR/data/validation-00000-of-00001.parquet
    DIR/manifest.json    sources + commits, options, counts, sizes, content hash ("complete")
    DIR/report.md        what was dropped and why, secrets found (values masked)
    DIR/dropped.jsonl    one line per dropped file: repo_id, path, reason, detail
    DIR/secrets.jsonl    one line per secret: repo_id, path, line, kind, masked value

Safety: everything is built in a hidden sibling folder (`outputs.staged`) and renamed into
place only when complete, so an interrupted run never leaves a folder that looks finished, and
`--overwrite` replaces an old dataset only once the new one is whole. `manifest.json` (with
`"format": "codetune-dataset"`) is the mark of completeness that every later stage checks
through `load_manifest`, and what `--overwrite` checks before it replaces a folder.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError

FORMAT = "codetune-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "validation")
_ROW_GROUP_BYTES = 8 << 20  # bounds the memory of one buffered row group


def schema():
    import pyarrow as pa  # heavy: pyarrow, ~0.3 s

    return pa.schema([
        ("repo_id", pa.string()),
        ("path", pa.string()),
        ("language", pa.string()),
        ("content", pa.large_string()),
        ("split", pa.string()),
        ("num_bytes", pa.int64()),
        ("sha256", pa.string()),
        ("secrets_redacted", pa.int32()),
    ])


class RowWriter:
    """Buffers rows and writes them to one parquet file in row groups of ~8 MB."""

    def __init__(self, path: Path, with_id: bool = False):
        import pyarrow as pa  # heavy: pyarrow, ~0.3 s
        import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

        self.schema = schema()
        if with_id:
            self.schema = self.schema.insert(0, pa.field("id", pa.int64()))
        self.path = path
        self.writer = pq.ParquetWriter(str(path), self.schema, compression="zstd")
        self.rows: list[dict[str, Any]] = []
        self.buffered = 0
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.buffered += row["num_bytes"]
        self.count += 1
        if self.buffered >= _ROW_GROUP_BYTES or len(self.rows) >= 20_000:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa  # heavy: pyarrow, ~0.3 s

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def iter_rows(path: Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a parquet file, one row group in memory at a time."""
    import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

    with reading(path):
        f = pq.ParquetFile(str(path))
        for i in range(f.num_row_groups):
            yield from f.read_row_group(i, columns=columns).to_pylist()


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn pyarrow's errors on a damaged file ("Parquet magic bytes not found", "ZSTD
    decompression failed") into one line that names the file and the remedy."""
    import pyarrow as pa  # heavy: pyarrow, ~0.3 s

    try:
        yield
    except (pa.ArrowException, OSError) as e:
        path = Path(path)
        root = path.parent.parent
        if (root / "manifest.json").is_file():
            fix = (f"the dataset {root} is damaged; prepare it again with `codetune prepare "
                   f"SOURCE... -o {root} --overwrite`")
        else:
            fix = "replace the file, or prepare a dataset from its source with `codetune prepare`"
        what = (os.strerror(e.errno) if isinstance(e, OSError) and e.errno
                else str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise CodetuneError(f"cannot read {path}: {what}; {fix}") from None


def write_shards(staging: Path | list[Path], out: Path, drop_ids: set[int], move_ids: set[int],
                 split_bytes: dict[str, int], shard_bytes: int) -> dict[str, list[str]]:
    """Copy staging rows into `out/data/{split}-NNNNN-of-MMMMM.parquet`, leaving out `drop_ids`
    and moving `move_ids` from train to validation. Returns the shard names per split.
    `staging` may be several files (the distributed path's per-chunk files), read in order.

    Works on Arrow columns a row group at a time (no Python objects per row): rows go to the
    shard their running byte offset falls in, so shards are about `shard_bytes` each."""
    import numpy as np  # heavy: numpy, ~0.1 s
    import pyarrow as pa  # heavy: pyarrow, ~0.3 s
    import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

    data = out / "data"
    data.mkdir()
    nshards = {s: max(1, math.ceil(split_bytes[s] / shard_bytes)) for s in SPLITS}
    per_shard = {s: max(1, math.ceil(split_bytes[s] / nshards[s])) for s in SPLITS}
    written = dict.fromkeys(SPLITS, 0)
    writers: dict[tuple[str, int], pq.ParquetWriter] = {}
    drop = np.sort(np.fromiter(drop_ids, dtype=np.int64, count=len(drop_ids)))
    move = np.sort(np.fromiter(move_ids, dtype=np.int64, count=len(move_ids)))
    sch = schema()
    groups = ((f, i) for f in map(pq.ParquetFile, map(str, staging if isinstance(staging, list)
                                                       else [staging]))
              for i in range(f.num_row_groups))
    try:
        for src, i in groups:
            t = src.read_row_group(i)
            ids = t.column("id").to_numpy()
            keep = ~_member(ids, drop)
            split = t.column("split").to_numpy(zero_copy_only=False).astype(object)
            split[_member(ids, move)] = "validation"
            t = t.set_column(t.schema.get_field_index("split"), "split",
                             pa.array(split, pa.string())).drop_columns(["id"]).select(sch.names)
            for name in SPLITS:
                mask = keep & (split == name)
                if not mask.any():
                    continue
                sub = t.filter(pa.array(mask))
                nb = sub.column("num_bytes").to_numpy()
                start = written[name] + np.cumsum(nb) - nb  # bytes before each row
                shard = np.minimum(start // per_shard[name], nshards[name] - 1)
                written[name] += int(nb.sum())
                for idx in np.unique(shard):
                    key = (name, int(idx))
                    if key not in writers:
                        fname = f"{name}-{int(idx):05d}-of-{nshards[name]:05d}.parquet"
                        writers[key] = pq.ParquetWriter(str(data / fname), sch,
                                                        compression="zstd")
                    writers[key].write_table(sub.filter(pa.array(shard == idx)))
            pa.default_memory_pool().release_unused()  # keep RSS flat across row groups
    finally:
        for w in writers.values():
            w.close()
    # An empty split has no shard: `datasets` refuses a split whose files hold no rows.
    return {s: sorted(f"{n}-{i:05d}-of-{nshards[n]:05d}.parquet" for n, i in writers if n == s)
            for s in SPLITS}


def _member(ids, sorted_ids):
    """`np.isin(ids, sorted_ids)` in O(len(ids) log n): millions of dropped ids at organization
    scale would make isin's sort of both arrays, per row group, the slowest part of the pass."""
    import numpy as np  # heavy: numpy, ~0.1 s

    if len(sorted_ids) == 0:
        return np.zeros(len(ids), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return sorted_ids[at] == ids


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- reading back


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a complete prepared dataset, or a CodetuneError saying what to do."""
    path = Path(path)
    man = path / "manifest.json"
    if not path.is_dir():
        raise CodetuneError(f"{path} is not a folder; give the folder written by "
                            "`codetune prepare ... -o DIR`")
    if not man.is_file():
        raise CodetuneError(f"{path} is not a prepared dataset (no manifest.json); create one "
                            f"with `codetune prepare SOURCE... -o {path}`")
    again = f"prepare it again with `codetune prepare SOURCE... -o {path} --overwrite`"
    try:
        data = json.loads(man.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CodetuneError(f"{man} is corrupt ({str(e).splitlines()[0][:200]}); "
                            f"{again}") from None
    except OSError as e:
        raise CodetuneError(f"cannot read {man} ({e.strerror or e}); {again}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not data.get("complete"):
        raise CodetuneError(f"{man} is not a complete codetune dataset manifest; {again}")
    version = data.get("version", 0)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CodetuneError(f"{path} was written by a newer codetune (format version "
                            f"{version}); upgrade codetune")
    problem = manifest_problem(data)
    if problem:
        raise CodetuneError(f"{man} is damaged ({problem}); {again}")
    sizes = data.get("shard_bytes", {})
    for split, info in data["splits"].items():
        for shard in info["shards"]:
            p = path / "data" / shard
            if not p.is_file():
                raise CodetuneError(f"shard data/{shard} of split {split} is missing from "
                                    f"{path}; prepare the dataset again with --overwrite")
            if shard in sizes and p.stat().st_size != sizes[shard]:
                raise CodetuneError(
                    f"shard {p} is damaged ({p.stat().st_size} bytes, {sizes[shard]} when "
                    f"written); prepare the dataset again with `codetune prepare SOURCE... "
                    f"-o {path} --overwrite`")
    return data


# What the stages read from a manifest, by key: the type each must have. `manifest_problem`
# checks a manifest against it before anything indexes into it, so a damaged file is one line.
_SHARD_NAME = re.compile(r"[A-Za-z0-9][\w.-]*\.parquet")


def manifest_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with a parsed manifest's structure, or None (format/complete checked by
    the caller): the version, the splits and their shard names, the sizes, the hash."""
    def count(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    if not count(data.get("version", 0)):
        return f"version is {data.get('version')!r}, not a number"
    splits = data.get("splits")
    if not isinstance(splits, dict) or not splits:
        return "no splits"
    for split, info in splits.items():
        if split not in SPLITS:
            return f"unknown split {split!r}"
        if not isinstance(info, dict) or not isinstance(info.get("shards"), list):
            return f"split {split} lists no shards"
        for shard in info["shards"]:
            if not isinstance(shard, str) or not _SHARD_NAME.fullmatch(shard):
                return f"split {split} names a shard {str(shard)[:60]!r} that is not a file name"
        for key in ("files", "bytes"):
            if key in info and not count(info[key]):
                return f"splits.{split}.{key} is {info[key]!r}"
    sizes = data.get("shard_bytes", {})
    if not isinstance(sizes, dict) or not all(count(v) for v in sizes.values()):
        return "shard_bytes is not a table of sizes"
    if not isinstance(data.get("content_hash"), str):
        return "content_hash is missing"
    ctx = data.get("context")
    if ctx is not None and not (isinstance(ctx, dict) and isinstance(ctx.get("path"), str)
                                and ".." not in ctx["path"]
                                and not ctx["path"].startswith("/")):
        return "context is not an index entry inside the dataset"
    return None


def shard_paths(path: str | Path, split: str) -> list[Path]:
    """Parquet files of one split of a prepared dataset (checked complete)."""
    data = load_manifest(path)
    if split not in data["splits"]:
        raise CodetuneError(f"split {split!r} not in {path}; it has {', '.join(data['splits'])}")
    return [Path(path) / "data" / s for s in data["splits"][split]["shards"]]


def resolve_files(source: str | Path, split: str) -> tuple[list[str], str | None]:
    """Parquet files of `split` and the text column: a prepared dataset folder (its manifest
    names the shards) or parquet files / a glob (the split is ignored; column from config)."""
    path = Path(source)
    if path.is_dir() and (path / "manifest.json").exists():
        return [str(p) for p in shard_paths(path, split)], "content"
    if path.is_dir():
        load_manifest(path)  # raises the "not a prepared dataset" error with its remedy
    files = sorted(glob.glob(str(source))) if any(c in str(source) for c in _GLOB) else (
        [str(source)] if path.is_file() else [])
    if not files:
        raise CodetuneError(f"no dataset at {source}: give a folder written by `codetune "
                            "prepare`, or parquet files with a text column")
    bad = [f for f in files if not f.endswith(".parquet")]
    if bad:
        raise CodetuneError(f"{bad[0]} is not a parquet file; run `codetune prepare "
                            f"dataset:{bad[0]} -o DIR` to turn it into a dataset")
    return files, None


def held_out_files(dataset: str | Path, max_files: int | None) -> list[dict[str, str]]:
    """The held-out (validation) files of `dataset`, as {"repo_id", "path", "content"}: the
    first `max_files` (all when None or 0). What eval scores, and merge and export probe."""
    import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

    files, column = resolve_files(dataset, "validation")
    rows = []
    for f in files:
        with reading(f):
            t = pq.read_table(f, columns=["repo_id", "path", column or "content"])
        rows += [{"repo_id": r, "path": p, "content": c} for r, p, c in zip(
            t.column(0).to_pylist(), t.column(1).to_pylist(), t.column(2).to_pylist(),
            strict=True)]
    if not rows:
        raise CodetuneError(f"{dataset} has no held-out (validation) files to evaluate on; "
                            "prepare it with --valid-fraction above 0")
    return rows[:max_files] if max_files else rows


# --------------------------------------------------------------------------- a run's dataset
#
# A run's config.yaml keeps `data.dataset` as typed (often relative to the folder `train` ran
# in); its run.json records the absolute path and the manifest's content hash. Every command
# that reads a run's dataset (eval, merge's and export's checks, train --resume, serve's
# context) finds it here, from run.json, never relative to the current folder: a folder that
# happens to hold a dataset of the same name is not the run's dataset.

RUN_RECORD = "run.json"  # written by `codetune train` (train/rundir.py); its "dataset" entry
_GLOB = "*?["


def dataset_identity(dataset: str | Path) -> dict[str, Any]:
    """{"path": absolute path, "content_hash": the manifest's, or None for parquet files} of the
    dataset at `dataset`: what run.json records. CodetuneError if there is none, or it is
    damaged."""
    path = Path(dataset)
    if path.is_dir():
        return {"path": str(path.resolve()), "content_hash": load_manifest(path)["content_hash"]}
    if path.is_file() or any(c in str(dataset) for c in _GLOB):  # parquet files: no hash
        return {"path": os.path.abspath(dataset), "content_hash": None}
    raise CodetuneError(f"no dataset at {dataset}: give a folder written by `codetune prepare`")


@dataclass
class RunDataset:
    """The dataset a command reads for a run, and how it relates to the one it trained on."""

    path: str  # absolute: what to read
    content_hash: str | None
    recorded: str | None  # the path run.json records (an old run: config.yaml's, as typed)
    recorded_hash: str | None
    overridden: bool = False  # an explicit --dataset with other (or unknown) content
    note: str = ""  # one line for the user: moved, unchecked, or overridden; "" if none

    @property
    def instead_of(self) -> str:
        """The recorded dataset in words: `PATH (content hash H)`."""
        hashed = f" (content hash {self.recorded_hash})" if self.recorded_hash else ""
        return f"{self.recorded}{hashed}"


def recorded_dataset(run_dir: str | Path) -> dict[str, Any]:
    """run.json's "dataset" entry ({"path", "content_hash"}), or {} if there is none."""
    try:
        rec = json.loads((Path(run_dir) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # missing, garbled, nested too deep
        return {}
    ds = rec.get("dataset") if isinstance(rec, dict) else None
    return ds if isinstance(ds, dict) else {}


def run_dataset(run_dir: str | Path, typed: str | None, given: str | None = None,
                warn=None) -> RunDataset:
    """The dataset of the run in `run_dir`, found and checked against run.json.

    `typed`: the run's config.yaml `data.dataset` (used only by runs too old to record an
    absolute path, then relative to the current folder); `given`: an explicit `--dataset`,
    accepted as the run's own when its content hash matches (the dataset moved), else as an
    override (`overridden`, said in `note`; the caller decides whether it may). Without
    `given`, a dataset that moved, or whose content changed, is a CodetuneError naming both
    paths and `--dataset NEWPATH`. `warn` (default: stderr) gets `note`."""
    run_dir = Path(run_dir)
    rec = recorded_dataset(run_dir)
    rpath, rhash = rec.get("path"), rec.get("content_hash")
    rpath = rpath if isinstance(rpath, str) and os.path.isabs(rpath) else None
    rhash = rhash if isinstance(rhash, str) and rhash else None
    found = _find(run_dir, rpath, rhash, typed, given)
    if found.note:
        (warn or (lambda m: print(m, file=sys.stderr)))(found.note)
    return found


def _find(run_dir: Path, rpath: str | None, rhash: str | None, typed: str | None,
          given: str | None) -> RunDataset:
    def at(where: str) -> RunDataset:
        ident = dataset_identity(where)
        return RunDataset(ident["path"], ident["content_hash"], rpath or typed, rhash)

    def same(ds: RunDataset) -> bool | None:
        if rhash and ds.content_hash:
            return ds.content_hash == rhash
        return ds.path == rpath if rpath else None  # parquet files, or an old run: the path

    if given is not None:
        ds = at(given)
        match = same(ds)
        if match:
            if ds.path != rpath:
                ds.note = (f"note: {run_dir}'s dataset {rpath or typed} is now at {ds.path} "
                           "(the same content)")
            return ds
        ds.overridden = True
        ds.note = f"note: using {ds.path} instead of {run_dir}'s dataset {ds.instead_of}"
        return ds
    if rpath is None and typed is None:
        raise CodetuneError(f"{run_dir} records no dataset; pass --dataset DIR (a folder "
                            "written by `codetune prepare`)")
    fix = "pass --dataset NEWPATH where the dataset is now"
    hashed = f" (content hash {rhash})" if rhash else ""
    if rpath is not None and not Path(rpath).exists() and not any(c in rpath for c in _GLOB):
        # Gone. A copy with the recorded content in the current folder (the project moved, the
        # run and its dataset with it) is the run's; anything else there is not.
        here = Path(typed) if typed and not Path(typed).is_absolute() else None
        if here is None or not here.exists():
            raise CodetuneError(f"the dataset {run_dir} was trained on, {rpath}, is gone "
                                f"(moved or deleted); {fix}{hashed}")
        try:
            ds = at(str(here))
        except CodetuneError as e:
            raise CodetuneError(f"the dataset {run_dir} was trained on, {rpath}, is gone, and "
                                f"{here.absolute()} here is not it ({str(e).split('; ')[0]})"
                                f"; {fix}{hashed}") from None
        if not (rhash and ds.content_hash == rhash):
            raise CodetuneError(f"the dataset {run_dir} was trained on, {rpath}, is gone, and "
                                f"{ds.path} here holds other data (content hash "
                                f"{ds.content_hash}, not {rhash}); {fix}")
        ds.note = f"note: {run_dir}'s dataset {rpath} is gone; using {ds.path} (the same content)"
        return ds
    if rpath is None and not any(c in typed for c in _GLOB) and not Path(typed).exists():
        raise CodetuneError(f"{run_dir} records its dataset only as {typed!r}, relative to the "
                            "folder `train` ran in, and there is none here; run from that "
                            "folder, or pass --dataset PATH")
    ds = at(rpath or typed)  # typed: an old run's, relative to the current folder
    match = same(ds)
    if match is False and rpath:
        raise CodetuneError(f"the dataset at {ds.path} changed since {run_dir} was trained on "
                            f"it (content hash {ds.content_hash}, recorded {rhash}); {fix}, "
                            f"or --dataset {ds.path} to use it as it is")
    if match is False:
        raise CodetuneError(f"{ds.path} (found as {typed!r} in the current folder) is not the "
                            f"dataset {run_dir} was trained on (content hash {ds.content_hash}, "
                            f"recorded {rhash}); run from the folder `train` ran in, or {fix}")
    if match is None or not rhash:
        ds.note = (f"warning: {run_dir} recorded no content hash for its dataset; using "
                   f"{ds.path} unchecked")
    return ds
