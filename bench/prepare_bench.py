"""Benchmark `codetune prepare` on the Python standard library of this interpreter.

    python bench/prepare_bench.py [--corpus DIR] [--workers 1 2]

Prints, for the same corpus in the same run:
- the baseline: listing + reading every file in one process (the I/O ceiling);
- `prepare` end to end (filters, secret scan, exact + MinHash dedup, split, parquet) with 1
  and N worker processes: MB/s, MB/s per core, the speed-up of N workers over 1, and the
  ratio to the 5 MB/s-per-core target;
- peak memory (main process and largest worker) on half the corpus and on all of it, so growth
  with corpus size can be compared with the size of the dedup index.

With `--scale` it compares instead, on the same corpus in the same run, today's process pool
with `prepare --executor local` and `--executor ray` (the `scale` extra) at 1 and N workers:
MB/s, the speed-up of N over 1, each against today's pool, the time of the two stages (the
parallel per-file scan; the one-task global dedup + shards, of which only the part after the
scan counts where it runs beside it) for the projection in bench/RESULTS.md, CPU seconds per
MB (the run and every process it started, reaped by its end: the task processes, and with
Ray, started in the run, Ray's daemons and workers) and the load average (1 min) when the
counted run started. Ray is started
(`ray.init(num_cpus=N)`) before the clock starts, as a cluster would already be running.

Each measurement runs in a fresh subprocess so peak RSS is its own. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


_SCALE_CHILD = r"""
import json, resource, sys, time
from codetune.config import PrepareConfig
from codetune.data.prepare import prepare
src, out, workers, executor = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
stages = {}
if executor != "none":
    import codetune.data.scale as sc
    run_stage = sc._run_stage
    def timed(ex, name, work, run=None):
        t = time.perf_counter()
        try:
            run_stage(ex, name, work, run)
        finally:
            stages[name] = (t, time.perf_counter())
    sc._run_stage = timed
if executor == "ray":
    import ray
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
cfg = PrepareConfig(workers=workers, executor=None if executor == "none" else executor,
                    context_index=False)
t = time.perf_counter()
s = prepare([src], out, cfg, progress=False)
dt = time.perf_counter() - t
print(json.dumps({
    "seconds": dt, "input_mb": s.input_bytes / 1e6, "kept": sum(s.kept.values()),
    "hash": s.content_hash, "stages": stages,
    "rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def run_scale(corpus: Path, workers: int, executor: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        load = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([sys.executable, "-c", _SCALE_CHILD, str(corpus), f"{tmp}/ds",
                            str(workers), executor], capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0:
            sys.exit(f"prepare --executor {executor} failed:\n{r.stderr[-4000:]}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        # CPU of the run and of every process it started (Ray's too: ray.shutdown reaps them)
        out["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        out["load"] = load
        return out


def scale_main(corpus: Path, workers: list[int], executors: list[str], repeat: int) -> None:
    """Today's pool vs the datatrove executors, 1 vs N workers, one table. Each configuration
    runs `repeat` times, interleaved, and the fastest run counts: on a shared machine the
    others only add time that is not the code's."""
    runs: dict[tuple[str, int], dict] = {}
    for _ in range(repeat):
        for ex in ["none", *executors]:
            for w in workers:
                r = run_scale(corpus, w, ex)
                if (ex, w) not in runs or r["seconds"] < runs[ex, w]["seconds"]:
                    runs[ex, w] = r
    rates: dict[tuple[str, int], float] = {}
    hashes = set()
    for ex in ["none", *executors]:
        for w in workers:
            r = runs[ex, w]
            rate = r["input_mb"] / r["seconds"]
            rates[ex, w] = rate
            hashes.add(r["hash"])
            st = r["stages"]
            stage = ""
            if st:  # the final task's time after the scan ended: what the scan did not hide
                (s0, s1), (f0, f1) = st["scan"], st["final"]
                stage = (f"; scan {s1 - s0:5.2f} s + final {f1 - max(f0, s1):5.2f} s"
                         f"{' (beside the scan)' if f0 < s1 else ''}")
            name = "today (pool)" if ex == "none" else f"--executor {ex}"
            print(f"{name:<17} workers={w}: {r['input_mb']:6.1f} MB in {r['seconds']:5.2f} s = "
                  f"{rate:6.2f} MB/s ({rate / rates['none', w]:4.2f}x today at {w}; "
                  f"{rate / rates.get((ex, workers[0]), rate):4.2f}x itself at {workers[0]})"
                  f"{stage}; CPU {r['cpu_s'] / r['input_mb']:.3f} s/MB; "
                  f"peak RSS main {r['rss_main_mb']:.0f} MB; load {r['load']:.1f}")
    print(f"same dataset (content hash) in every run: {len(hashes) == 1}")


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
    ap.add_argument("--scale", action="store_true",
                    help="compare today's pool with prepare --executor local/ray")
    ap.add_argument("--executors", nargs="+", default=["local", "ray"],
                    choices=["local", "ray"], help="with --scale (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="with --scale: runs per configuration, fastest counts (default: 3)")
    args = ap.parse_args()
    if args.scale:
        print(f"corpus: {args.corpus}  (cores: {os.cpu_count()}, python "
              f"{sys.version.split()[0]})")
        read_baseline(args.corpus)  # warm the page cache
        scale_main(args.corpus, sorted(set(args.workers)), args.executors, args.repeat)
        return

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
