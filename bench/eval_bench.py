"""What `codetune eval --context both` costs per task: the hole scoring of the 2x2 from its own
prompt passes (before) against from the generation's prefill (now), in one run.

    python bench/eval_bench.py MODEL DATASET [--tasks 24] [--batch 8] [--order now-first]

MODEL: a local model folder (the float32 Qwen2.5-Coder-0.5B of ../shared/models/); DATASET: a
`codetune prepare` folder with its repository index (held-out files of a real project). For
the same tasks (eval's own selection: single-line, multi-line and import-use holes), with and
without repository context, one model:

- before: `predict` (greedy, batched), then `hole_nll` for each task, one forward pass of its
  whole prompt + middle each (what eval did);
- now: `predict(score=True)`: each hole scored from the prefill of its own generation.

Prints tasks per minute of each path and the ratio, how many greedy completions are
identical (the target: all), and the largest difference in a hole's nats. Not a test.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--tasks", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--order", choices=["now-first", "before-first"], default="before-first")
    args = ap.parse_args(argv)

    import torch

    from codetune.config import EvalConfig
    from codetune.context import RepoIndex
    from codetune.data.store import held_out_files
    from codetune.evaluation.context import hole_nll, import_use_tasks, task_contexts
    from codetune.evaluation.run import (
        build_tasks,
        capped,
        fit_to_model,
        hole,
        predict,
    )
    from codetune.infer import loader

    loaded = loader.load(args.model, quantization="none", dtype="float32")
    window = loader.context_window(loaded)
    cfg = fit_to_model(EvalConfig(max_tasks=args.tasks, batch_size=args.batch), window)
    rows = held_out_files(str(args.dataset), None)
    index = RepoIndex.for_dataset(args.dataset)
    if index is None:
        raise SystemExit(f"{args.dataset} has no repository index; prepare it with one")
    tasks = build_tasks(rows, cfg)
    tasks += capped([t for r in rows for t in import_use_tasks(
        index, r["repo_id"], r["path"], r["content"], cfg.seed, cfg.cross_file_per_file)],
        max(1, args.tasks // 3), cfg.seed)
    contexts = [c for c, _ in task_contexts(
        index, loaded, tasks, cfg.repo_context_tokens, cfg.prompt_tokens, window,
        max(cfg.max_new_tokens_multi, cfg.max_new_tokens_single) + 1)]
    kinds = {k: sum(t.kind == k for t in tasks) for k in ("single_line", "multi_line",
                                                          "cross_file")}
    print(f"{Path(args.model).name} on {args.dataset.name}: {len(tasks)} tasks {kinds}, "
          f"x2 (with and without context); {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}", flush=True)

    def before():
        out = {}
        for setting, ctx in (("repo", contexts), ("file", None)):
            gens = predict(loaded, tasks, cfg, contexts=ctx)
            holes = [hole_nll(loaded, t, cfg.prompt_tokens, None if ctx is None else ctx[i])
                     for i, t in enumerate(tasks)]
            out[setting] = ([g.text for g in gens], holes)
        return out

    def now():
        out = {}
        for setting, ctx in (("repo", contexts), ("file", None)):
            gens = predict(loaded, tasks, cfg, contexts=ctx, score=True)
            out[setting] = ([g.text for g in gens],
                            [hole(t, g) for t, g in zip(tasks, gens, strict=True)])
        return out

    runs = {}
    order = ["before", "now"] if args.order == "before-first" else ["now", "before"]
    for name in order:
        t = time.perf_counter()
        runs[name] = ({"before": before, "now": now}[name](), time.perf_counter() - t)
        n = 2 * len(tasks)
        print(f"{name:>6}: {runs[name][1]:7.1f} s, {60 * n / runs[name][1]:6.2f} tasks/min",
              flush=True)
    (a, ta), (b, tb) = runs["before"], runs["now"]
    same = sum(x == y for s in a for x, y in zip(a[s][0], b[s][0], strict=True))
    diff = max(abs(x[0] - y[0]) for s in a for x, y in zip(a[s][1], b[s][1], strict=True))
    rel = max(abs(x[0] - y[0]) / max(1.0, abs(x[0])) for s in a
              for x, y in zip(a[s][1], b[s][1], strict=True))
    print(f"ratio now/before: {ta / tb:.2f}x tasks per minute; identical completions "
          f"{same}/{2 * len(tasks)}; largest hole difference {diff:.4g} nats "
          f"({100 * rel:.3f} % of the hole's nats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
