"""`codetune eval` of the artifact users run: a GGUF through llama.cpp's llama-server, against
the torch engine on the same tasks, the same prompt ids and the same CPU, in one eval run.

    python bench/eval_engine_bench.py MODEL DATASET [--gguf FILE] [--tasks 40] [--kind single]
                                      [--threads N]

MODEL: a local transformers folder (the float32 Qwen2.5-Coder-0.5B); it is exported once with
`codetune export MODEL --to gguf --type F16` into a temporary folder unless --gguf names a file
already exported from it. DATASET: a `codetune prepare` folder of a public repository. One
`evaluate(MODEL, eval.gguf=[F16])`: variant `model` (torch, float32, batches of
eval.batch_size) then `gguf:F16` (llama-server, as many slots; its time includes starting the
server). Repository context off, bits per byte off: infilling only, what both engines do.

Prints tasks per minute of each engine and the ratio llama.cpp / torch, and how many
completions are identical. Needs llama-server (bash scripts/llama-cpp.sh). Not a test.

On a VM whose cores other work shares (load average above the core count), llama.cpp's
threads wait for each other by spinning and lose most of their speed: compare --threads 1
with the default, and say which, with the load average the script prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--gguf", help="an F16 (or any) GGUF exported from MODEL; default: export one")
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--kind", choices=["single", "multi", "both"], default="single")
    ap.add_argument("--batch", type=int, default=8, help="torch batch = llama-server slots")
    ap.add_argument("--threads", type=int, help="llama-server threads (eval.llama_threads; "
                                                 "default: one per CPU, as torch)")
    args = ap.parse_args(argv)

    from codetune import runtimes
    from codetune.config import EvalConfig
    from codetune.evaluation.run import evaluate
    from codetune.export import export

    if runtimes.binary("llama-server") is None:
        raise SystemExit(runtimes.missing("llama-server"))
    with tempfile.TemporaryDirectory(prefix="eval-engine-bench-") as tmp:
        gguf = args.gguf
        if gguf is None:
            r = export(args.model, "gguf", Path(tmp) / "gguf", ftype="F16",
                       echo=lambda m: print(m, file=sys.stderr))
            gguf = str(Path(tmp) / "gguf" / r["gguf"])
        cfg = EvalConfig(max_tasks=args.tasks, context="off", bpb=False, cross_file_per_file=0,
                         batch_size=args.batch, gguf=[gguf], llama_threads=args.threads,
                         # enough per file for --tasks from a small held-out split (a seeded
                         # sample of --tasks when there are more)
                         single_line_per_file=0 if args.kind == "multi" else 8,
                         multi_line_per_file=0 if args.kind == "single" else 4)
        cfg.validate()
        res = evaluate(args.model, cfg, Path(tmp) / "eval", dataset=str(args.dataset))
        doc = json.loads((Path(tmp) / "eval" / "eval.json").read_text())
    names = res.models
    torch_name, llama_name = names[0], names[1]
    t, ll = res.timings[torch_name], res.timings[llama_name]
    same = sum(r[torch_name]["output"] == r[llama_name]["output"] for r in doc["task_records"])
    print(f"{Path(args.model).name} on {args.dataset.name}: {res.tasks} {args.kind}-line tasks; "
          f"{len(os.sched_getaffinity(0))} CPUs, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f}; llama-server threads "
          f"{args.threads or len(os.sched_getaffinity(0))}, torch threads {_torch_threads()}")
    for name, tm, what in ((torch_name, t, "torch"), (llama_name, ll, "llama.cpp")):
        print(f"{what:>9} ({name}): {tm['seconds']:7.1f} s, "
              f"{60 * tm['tasks'] / max(tm['seconds'], 1e-9):7.1f} tasks/min")
    print(f"ratio llama.cpp / torch: {t['seconds'] / max(ll['seconds'], 1e-9):.2f}x tasks per "
          f"minute; identical completions {same}/{res.tasks}")
    for k, m in res.metrics.items():
        print(f"  {k}: " + ", ".join(f"{n} {m.values.get(n):.4f}" for n in names
                                     if m.values.get(n) is not None))
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
