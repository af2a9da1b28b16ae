"""Speed of `codetune eval --benchmark humaneval-infill` (run by hand, never in CI's pass/fail).

    python bench/benchmark_bench.py                  # execution, sandbox overhead, generation
    python bench/benchmark_bench.py --model runs/x   # generation with another model
    python bench/benchmark_bench.py --size-0.5b      # also: the default sample's generation
                                                     # time for a 0.5B model's shape
    python bench/benchmark_bench.py --tasks 100      # a larger generation sample

- execution: the canonical programs of a seeded sample of 200 tasks (--exec-tasks), in the
  sandbox, workers = the usable cores: tasks/s.
- sandbox overhead: the same programs one at a time, each as plain `python -c PROGRAM` (the
  baseline), in the sandbox without guard and cgroup (process group, rlimits, fresh folder and
  environment), and in the full sandbox: ms per program and the ratio to the baseline, all in
  this run.
- generation: `evaluation.run.predict` (greedy, batched, the model's FIM prompts) on the
  default sample (eval.benchmark_tasks, or --tasks) with the bundled codetune-mini (or --model):
  tasks/s per subset.
- --size-0.5b: a randomly initialised Qwen2 with Qwen2.5-Coder-0.5B's shape (24 layers, hidden
  896, 151,936-token vocabulary, float32) timed on the default sample's batches: each batch is
  prefilled at its longest prompt and decoded for its longest reference middle (a model that
  stops where the answer ends) and, for multi-line, up to eval.max_new_tokens_multi (one that
  never stops early). Prompt and middle lengths in tokens are characters / CHARS_PER_TOKEN.
  Weights do not change the time of a forward pass, so this sizes the default without the
  real model (no Hub access here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CHARS_PER_TOKEN = 3.5  # Qwen2.5's BPE on Python source, roughly


def _per_program(fn, programs: list[str], repeat: int) -> float:
    """Median over `repeat` passes of the mean seconds per program."""
    fn(programs[0])  # warm the page cache
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        for p in programs:
            fn(p)
        runs.append((time.perf_counter() - t) / len(programs))
    return statistics.median(runs)


def bench_execution(tasks, repeat: int) -> None:
    from codetune.evaluation.sandbox import Limits, run_program, run_programs, workers_default

    programs = [t.program(t.task.middle) for t in tasks]
    t = time.perf_counter()
    outs = run_programs(programs)
    dt = time.perf_counter() - t
    ok = sum(o.passed for o in outs)
    print(f"execution: {len(programs)} canonical programs in {dt:.1f} s = "
          f"{len(programs) / dt:.1f} tasks/s with {workers_default()} workers "
          f"({ok} passed)")

    few = programs[:40]
    plain = _per_program(lambda p: subprocess.run([sys.executable, "-c", p],
                                                  capture_output=True, check=False), few, repeat)
    bare = _per_program(lambda p: run_program(p, Limits(guard=False, cgroup=False)), few, repeat)
    no_cg = _per_program(lambda p: run_program(p, Limits(cgroup=False)), few, repeat)
    full = _per_program(run_program, few, repeat)
    print(f"sandbox overhead, {len(few)} programs one at a time, median of {repeat}:")
    print("| path | ms per program | vs plain python -c |")
    print("|---|---|---|")
    for name, s in (("plain `python -c PROGRAM`", plain),
                    ("sandbox: process group, rlimits, folder, env (no guard, no cgroup)", bare),
                    ("sandbox + guard (no cgroup)", no_cg), ("full sandbox (guard + cgroup)", full)):
        print(f"| {name} | {1000 * s:.1f} | {s / plain:.2f}x |")


def bench_generation(tasks, model: str | None) -> None:
    from codetune.config import EvalConfig
    from codetune.evaluation.run import fit_to_model, predict
    from codetune.infer import loader
    from codetune.mini import MINI_PATH

    loaded = loader.load(model or str(MINI_PATH), dtype="float32")
    cfg = fit_to_model(EvalConfig(), loader.context_window(loaded))
    for kind in ("single_line", "multi_line"):
        sub = [t.task for t in tasks if t.task.kind == kind]
        predict(loaded, sub[:2], cfg)  # warm-up
        t = time.perf_counter()
        done = predict(loaded, sub, cfg)
        dt = time.perf_counter() - t
        toks = sum(g.completion_tokens for g in done)
        print(f"generation ({loaded.description}), {kind.replace('_', '-')}: {len(sub)} tasks "
              f"in {dt:.1f} s = {len(sub) / dt:.2f} tasks/s ({toks / dt:.0f} new tokens/s)")


def size_05b(tasks) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from codetune.config import EvalConfig

    cfg = EvalConfig()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
        tie_word_embeddings=True)).eval()
    n_params = sum(p.numel() for p in model.parameters())

    def run(batch: int, prompt: int, new: int) -> float:
        ids = torch.randint(0, 151936, (batch, prompt))
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
        return time.perf_counter() - t

    run(2, 16, 2)  # warm-up
    budget = {"single_line": cfg.max_new_tokens_single, "multi_line": cfg.max_new_tokens_multi}
    total = {"stops at the answer": 0.0, "never stops early": 0.0}
    for kind in ("single_line", "multi_line"):
        before = dict(total)
        sub = sorted((t.task for t in tasks if t.task.kind == kind),
                     key=lambda t: len(t.prefix) + len(t.suffix))
        for s in range(0, len(sub), cfg.batch_size):
            b = sub[s:s + cfg.batch_size]
            prompt = min(int(max(len(t.prefix) + len(t.suffix) for t in b) / CHARS_PER_TOKEN),
                         cfg.prompt_tokens) + 3
            ref = min(int(max(len(t.middle) for t in b) / CHARS_PER_TOKEN) + 2, budget[kind])
            dt = run(len(b), prompt, ref)
            total["stops at the answer"] += dt
            total["never stops early"] += dt if kind == "single_line" else \
                run(len(b), prompt, budget[kind])
        print(f"  {kind.replace('_', '-')} ({len(sub)} tasks): " + "; ".join(
            f"{k} {total[k] - before[k]:.0f} s" for k in total), flush=True)
    print(f"generation, Qwen2.5-Coder-0.5B's shape ({n_params / 1e6:.0f} M parameters, "
          f"float32, {torch.get_num_threads()} threads), the {len(tasks)}-task sample, one "
          f"model: " + "; ".join(f"{k}: {v:.0f} s" for k, v in total.items())
          + " (base + fine-tuned: twice that)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, help="generation sample (default: eval.benchmark_tasks)")
    ap.add_argument("--exec-tasks", type=int, default=200, help="execution sample (200)")
    ap.add_argument("--model", help="model for the generation figure (default codetune-mini)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size-0.5b", dest="size", action="store_true")
    ap.add_argument("--skip-generation", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from codetune.config import EvalConfig
    from codetune.evaluation.benchmarks import benchmark_tasks

    tasks, info = benchmark_tasks("humaneval-infill", args.tasks or EvalConfig().benchmark_tasks,
                                  seed=0)
    print(f"generation sample, {info['tasks']} tasks: " + ", ".join(
        f"{k} {v['n']}" for k, v in info["sample"].items()) + f"; {os.cpu_count()} cores")
    bench_execution(benchmark_tasks("humaneval-infill", args.exec_tasks, seed=0)[0], args.repeat)
    if not args.skip_generation:
        bench_generation(tasks, args.model)
    if args.size:
        size_05b(tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
