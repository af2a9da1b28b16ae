"""`codetune stats`: what is in a prepared dataset, and how many tokens it is for a tokenizer.

Characters per token are estimated as the reference notebook did (`chars_token_ratio`, 400 files), but from a
seeded random sample of all files rather than the first ones of the stream, and bytes per token
are reported too: token counts per split are estimated from bytes, which the manifest knows
exactly without reading the text again.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from codetune.data import store
from codetune.errors import CodetuneError


def dataset_stats(path: str | Path, tokenizer=None, sample: int = 400, seed: int = 0
                  ) -> dict[str, Any]:
    import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

    path = Path(path)
    man = store.load_manifest(path)
    out: dict[str, Any] = {"dataset": str(path), "content_hash": man["content_hash"],
                           "splits": {}, "languages": {}}
    langs: dict[str, Counter] = defaultdict(Counter)
    for split in store.SPLITS:
        files = nbytes = 0
        for shard in store.shard_paths(path, split):
            with store.reading(shard):
                t = pq.read_table(shard, columns=["language", "num_bytes"])
            files += t.num_rows
            b = t.column("num_bytes").to_pylist()
            nbytes += sum(b)
            for lang, n in zip(t.column("language").to_pylist(), b, strict=True):
                langs[lang]["files"] += 1
                langs[lang]["bytes"] += n
        out["splits"][split] = {"files": files, "bytes": nbytes}
    out["languages"] = {k: dict(v) for k, v in
                        sorted(langs.items(), key=lambda kv: -kv[1]["bytes"])}
    out["files"] = sum(s["files"] for s in out["splits"].values())
    out["bytes"] = sum(s["bytes"] for s in out["splits"].values())
    if tokenizer is not None:
        texts = _sample_texts(path, sample, seed)
        chars = sum(len(t) for t in texts)
        nbytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        ntok = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        if ntok == 0:
            raise CodetuneError("the sampled files produced no tokens; is the dataset empty?")
        out["tokenizer"] = {
            "name": getattr(tokenizer, "name_or_path", str(tokenizer)),
            "sampled_files": len(texts),
            "chars_per_token": chars / ntok,
            "bytes_per_token": nbytes / ntok,
        }
        for s in out["splits"].values():
            s["estimated_tokens"] = round(s["bytes"] / out["tokenizer"]["bytes_per_token"])
    return out


def _sample_texts(path: Path, k: int, seed: int) -> list[str]:
    """`k` file texts drawn uniformly without replacement (seeded) from both splits."""
    import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

    shards = [p for s in store.SPLITS for p in store.shard_paths(path, s)]
    counts = []
    for p in shards:
        with store.reading(p):
            counts.append(pq.ParquetFile(p).metadata.num_rows)
    total = sum(counts)
    if total == 0:
        return []
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(k, total), replace=False))
    texts, offset = [], 0
    for shard, n in zip(shards, counts, strict=True):
        local = picks[(picks >= offset) & (picks < offset + n)] - offset
        if len(local):
            with store.reading(shard):
                col = pq.read_table(shard, columns=["content"]).column("content")
            texts += [col[int(i)].as_py() for i in local]
        offset += n
    return texts


def print_stats(st: dict[str, Any]) -> None:
    from rich.console import Console  # heavy: rich, ~70 ms
    from rich.table import Table  # heavy: rich

    console = Console()
    t = Table(title=f"{st['dataset']}  ({st['content_hash'][:19]}…)", show_edge=False)
    t.add_column("split")
    t.add_column("files", justify="right")
    t.add_column("MB", justify="right")
    has_tok = "tokenizer" in st
    if has_tok:
        t.add_column("est. tokens", justify="right")
    for split, s in st["splits"].items():
        row = [split, str(s["files"]), f"{s['bytes'] / 1e6:.2f}"]
        if has_tok:
            row.append(f"{s['estimated_tokens']:,}")
        t.add_row(*row)
    console.print(t)
    lt = Table(show_edge=False)
    lt.add_column("language")
    lt.add_column("files", justify="right")
    lt.add_column("MB", justify="right")
    for lang, d in st["languages"].items():
        lt.add_row(lang, str(d["files"]), f"{d['bytes'] / 1e6:.3f}")
    console.print(lt)
    if has_tok:
        tk = st["tokenizer"]
        console.print(f"tokenizer {tk['name']}: {tk['chars_per_token']:.2f} characters per token "
                      f"({tk['bytes_per_token']:.2f} bytes), from {tk['sampled_files']} files")
