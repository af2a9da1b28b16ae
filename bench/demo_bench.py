"""Time the default `codetune demo` end to end (run by hand, never in CI's pass/fail).

    python bench/demo_bench.py            # the default demo on the bundled sample project
    python bench/demo_bench.py --steps 60

Runs `codetune demo` as a user would (a subprocess, from a folder outside any git repository,
so the default source is the bundled sample), with torch limited to 2 threads to match the
2-core CI machine. Reports wall time as a ratio to the 5-minute target, base vs fine-tuned
held-out bits per byte and exact match, from the demo's own demo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 300.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, help="LoRA steps (default: the demo's default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="keep the demo output in this folder")
    args = ap.parse_args()

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep.absolute() if args.keep else Path(tmp) / "demo"
        cmd = [sys.executable, "-m", "codetune", "demo", "-q", "-o", str(out)]
        if args.steps:
            cmd += ["--steps", str(args.steps)]
        if args.keep:
            cmd += ["--overwrite"]  # replaces an earlier demo kept there, never anything else
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, text=True, capture_output=True, check=False)
        wall = time.perf_counter() - t
        print(proc.stdout)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            return proc.returncode
        doc = json.loads((out / "demo.json").read_text())

    print(f"codetune demo (default, {os.cpu_count()} cores visible, {args.threads} threads): "
          f"{wall:.0f} s wall = {wall / TARGET_S:.2f} x the {TARGET_S:.0f} s target "
          f"({'met' if wall <= TARGET_S else 'MISSED'})")
    print(f"  stages: {doc['timings']} s; {doc['steps']} LoRA steps, base quantization "
          f"{doc['quantization']}")
    ok = doc["bpb_tuned"] < doc["bpb_base"]
    print(f"  held-out bits per byte: base {doc['bpb_base']:.3f} -> fine-tuned "
          f"{doc['bpb_tuned']:.3f} (ratio {doc['bpb_tuned'] / doc['bpb_base']:.3f}; "
          f"{'lower' if ok else 'NOT lower'})")
    for kind, m in doc["exact_match"].items():
        print(f"  {kind.replace('_', ' ')}: base {m['base']:.1%} -> fine-tuned "
              f"{m['tuned']:.1%} ({m['n']} holes)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
