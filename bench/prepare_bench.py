"""Benchmark `codetune prepare` on the Python standard library of this interpreter.

    python bench/prepare_bench.py [--corpus DIR] [--workers 1 2]

Prints, for the same corpus in the same run:
- the baseline: listing + reading every file in one process (the I/O ceiling);
- `prepare` end to end (filters, secret scan, exact + MinHash dedup, split, parquet) with 1
  and N worker processes: MB/s, MB/s per core, the speed-up of N workers over 1, and the
  ratio to the 5 MB/s-per-core target;
- peak memory (main process and largest worker) on half the corpus and on all of it, so growth
  with corpus size can be compared with the size of the dedup index.

Each measurement runs in a fresh subprocess so peak RSS is its own. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

TARGET_MB_S_PER_CORE = 5.0

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from codetune.config import PrepareConfig
from codetune.data.prepare import prepare
src, out, workers, exclude = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
cfg = PrepareConfig(workers=workers, exclude=exclude)
t = time.perf_counter()
s = prepare([src], out, cfg, progress=False)
dt = time.perf_counter() - t
print(json.dumps({
    "seconds": dt, "input_mb": s.input_bytes / 1e6, "kept": sum(s.kept.values()),
    "dropped": sum(s.dropped.values()), "secrets": s.secrets_found,
    "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
}))
"""


def read_baseline(corpus: Path) -> tuple[float, float]:
    """(MB, seconds) to list and read every file below `corpus` (skipping site-packages)."""
    t = time.perf_counter()
    total = 0
    for dirpath, dirnames, filenames in os.walk(corpus):
        dirnames[:] = [d for d in dirnames if d not in ("site-packages", "__pycache__")]
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    total += len(fh.read(1_000_001))
    return total / 1e6, time.perf_counter() - t


def run_prepare(corpus: Path, workers: int, exclude: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-c", _CHILD, str(corpus), f"{tmp}/ds", str(workers),
                            json.dumps(exclude)], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"prepare failed:\n{r.stderr}")
        return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    ap.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = ap.parse_args()

    print(f"corpus: {args.corpus}  (cores: {os.cpu_count()}, python {sys.version.split()[0]})")
    read_baseline(args.corpus)  # warm the page cache so every run reads from memory
    mb, secs = read_baseline(args.corpus)
    base = mb / secs
    print(f"baseline  list+read only      : {mb:7.1f} MB in {secs:5.2f} s = {base:7.1f} MB/s")

    results = {}
    for w in sorted(set(args.workers)):
        r = run_prepare(args.corpus, w, [])
        rate = r["input_mb"] / r["seconds"]
        results[w] = rate
        print(f"prepare   workers={w:<2}           : {r['input_mb']:7.1f} MB in "
              f"{r['seconds']:5.2f} s = {rate:6.2f} MB/s ({rate / w:5.2f} MB/s per core; "
              f"{rate / w / TARGET_MB_S_PER_CORE:4.2f}x the 5 MB/s/core target; "
              f"{base / rate:5.1f}x slower than reading) kept {r['kept']}, dropped "
              f"{r['dropped']}, secrets {r['secrets']}; peak RSS main {r['rss_main_mb']:.0f} MB, "
              f"worker {r['rss_worker_mb']:.0f} MB")
    if len(results) > 1:
        lo, hi = min(results), max(results)
        print(f"scaling   workers {hi} vs {lo}        : {results[hi] / results[lo]:.2f}x "
              f"(ideal {hi / lo:.0f}x)")

    # Memory vs corpus size: the test suite is about half of the standard library.
    w = max(results)
    half = run_prepare(args.corpus, w, ["test/*", "*/test/*", "idlelib/*"])
    full = run_prepare(args.corpus, w, [])
    grow = full["rss_main_mb"] - half["rss_main_mb"]
    extra_files = full["kept"] - half["kept"]
    print(f"memory    {half['input_mb']:.0f} MB corpus -> peak main RSS {half['rss_main_mb']:.0f} MB;"
          f" {full['input_mb']:.0f} MB -> {full['rss_main_mb']:.0f} MB "
          f"(+{grow:.0f} MB for +{extra_files} kept files = "
          f"{grow * 1e6 / max(extra_files, 1):.0f} bytes per file; MinHash signatures alone are "
          f"512 bytes per file); worker peak {full['rss_worker_mb']:.0f} MB")


if __name__ == "__main__":
    main()
