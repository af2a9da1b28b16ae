"""The dataset folder on disk: parquet shards, `manifest.json`, and how it is written safely.

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
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError

FORMAT = "codetune-dataset"
FORMAT_VERSION = 1
SPLITS = ("train", "validation")
_ROW_GROUP_BYTES = 8 << 20  # bounds the memory of one buffered row group


def schema():
    import pyarrow as pa

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
        import pyarrow as pa
        import pyarrow.parquet as pq

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
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def iter_rows(path: Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a parquet file, one row group in memory at a time."""
    import pyarrow.parquet as pq

    with reading(path):
        f = pq.ParquetFile(str(path))
        for i in range(f.num_row_groups):
            yield from f.read_row_group(i, columns=columns).to_pylist()


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn pyarrow's errors on a damaged file ("Parquet magic bytes not found", "ZSTD
    decompression failed") into one line that names the file and the remedy."""
    import pyarrow as pa

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


def write_shards(staging: Path, out: Path, drop_ids: set[int], move_ids: set[int],
                 split_bytes: dict[str, int], shard_bytes: int) -> dict[str, list[str]]:
    """Copy staging rows into `out/data/{split}-NNNNN-of-MMMMM.parquet`, leaving out `drop_ids`
    and moving `move_ids` from train to validation. Returns the shard names per split.

    Works on Arrow columns a row group at a time (no Python objects per row): rows go to the
    shard their running byte offset falls in, so shards are about `shard_bytes` each."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = out / "data"
    data.mkdir()
    nshards = {s: max(1, math.ceil(split_bytes[s] / shard_bytes)) for s in SPLITS}
    per_shard = {s: max(1, math.ceil(split_bytes[s] / nshards[s])) for s in SPLITS}
    written = dict.fromkeys(SPLITS, 0)
    writers: dict[tuple[str, int], pq.ParquetWriter] = {}
    drop = np.fromiter(drop_ids, dtype=np.int64, count=len(drop_ids))
    move = np.fromiter(move_ids, dtype=np.int64, count=len(move_ids))
    sch = schema()
    src = pq.ParquetFile(str(staging))
    try:
        for i in range(src.num_row_groups):
            t = src.read_row_group(i)
            ids = t.column("id").to_numpy()
            keep = ~np.isin(ids, drop)
            split = t.column("split").to_numpy(zero_copy_only=False).astype(object)
            split[np.isin(ids, move)] = "validation"
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
