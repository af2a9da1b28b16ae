"""The real-model loop: prepare -> train -> eval 2x2 -> HumanEval-infill, on real repositories.

    python bench/quality_bench.py MODEL REPO [REPO ...] [--out bench/out/quality]
        [--steps 24] [--seq 1024] [--train KEY=VALUE ...] [--eval KEY=VALUE ...]
        [--benchmark-tasks 30] [--tag NAME]

MODEL is a local model folder (e.g. the float32 Qwen2.5-Coder-0.5B that
`../shared/models/qwen2.5-coder-0.5b.sh` builds); each REPO a folder of a public project (an
unpacked sdist). Nothing is downloaded here. For each repository, each stage runs as the user
would run it, as its own `codetune` process:

1. `codetune prepare REPO` with 20 % of the files held out (by file), with the repository index;
2. `codetune train` (LoRA, unquantized: fp32 on a CPU, bf16 on a GPU);
3. `codetune eval RUN --context both --benchmark humaneval-infill`: base and tuned, each with
   and without repository context, on single-line, multi-line and cross-file holes, plus the
   HumanEval-infill sample (did it forget?).

It writes OUT/<repo>/{dataset,run,...} and OUT/quality.md / quality.json: one table per
repository with every metric of the 2x2, the paired 95 % intervals (tuned - base; context on
base and on tuned), and the wall time and peak memory of each stage (`os.wait4` of the stage's
process). Not part of the test suite; `format_table` is tested on a tiny model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Columns of the table: the means of the 2x2, then the paired differences with their intervals.
MODELS = ("base", "tuned", "base+repo", "tuned+repo")
DIFFS = (("tuned - base", None), ("context (base)", "context (base)"),
         ("context (tuned)", "context (tuned)"))
# Metric order: what an editor user feels first.
ORDER = ("single_line_exact_match", "single_line_edit_similarity",
         "cross_file_single_line_exact_match", "cross_file_single_line_edit_similarity",
         "multi_line_exact_match", "multi_line_edit_similarity",
         "cross_file_multi_line_exact_match", "hole_bits_per_byte",
         "cross_file_hole_bits_per_byte", "humaneval_infill_pass_at_1",
         "humaneval_infill_single_line_pass_at_1", "humaneval_infill_multi_line_pass_at_1",
         "bits_per_byte_ltr", "bits_per_byte_fim")
PERCENT = ("exact_match", "pass_at_1")  # shares: shown in %, differences in points


def run_stage(name: str, argv: list[str], log: Path) -> dict[str, Any]:
    """Run one `codetune` stage as its own process; its wall time, peak RSS and exit code."""
    t = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "codetune", *argv], stdout=fh,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rec = {"stage": name, "seconds": round(time.perf_counter() - t, 1),
           "peak_rss_mb": round(usage.ru_maxrss / 1024), "exit": proc.returncode,
           "log": str(log)}
    print(f"  {name}: {rec['seconds']:.0f} s, peak {rec['peak_rss_mb']} MB, exit "
          f"{rec['exit']}", flush=True)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        raise SystemExit(f"{name} failed (exit {proc.returncode}); see {log}:\n" +
                         "\n".join(tail))
    return rec


def one_repo(model: str, repo: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    ds, run = out / "dataset", out / "run"
    stages = [run_stage("prepare", ["prepare", str(repo), "-o", str(ds), "--overwrite", "-q",
                                    "--valid-fraction", str(args.valid_fraction),
                                    "--split-by", "file", "--repo-name", repo.name],
                        out / "prepare.log")]
    train = ["train", "--model", model, "--dataset", str(ds), "-o", str(run), "--overwrite",
             "-q", "model.quantization=none", f"train.max_steps={args.steps}",
             f"data.seq_length={args.seq}", f"train.save_steps={args.steps}",
             "train.report_to=none", *args.train]
    stages.append(run_stage("train", train, out / "train.log"))
    ev = ["eval", str(run), "-q", "--context", "both", "--benchmark", "humaneval-infill",
          "--benchmark-tasks", str(args.benchmark_tasks)]
    for item in args.eval:
        ev += ["-s", item]
    stages.append(run_stage("eval", ev, out / "eval.log"))
    report = json.loads((run / "eval" / "eval.json").read_text(encoding="utf-8"))
    return {"repo": repo.name, "path": str(repo), "stages": stages,
            "tasks": report.get("tasks"),
            "metrics": report["metrics"]}


def _fmt(x: float | None, metric: str) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f} %" if metric.endswith(PERCENT) else f"{x:.3f}"


def _diff(d: float, lo: float, hi: float, metric: str, lower_better: bool) -> str:
    mark = ""
    if lo > 0 or hi < 0:
        mark = " ✓" if (lo > 0) != lower_better else " ✗"
    if metric.endswith(PERCENT):
        return f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{mark}"
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]{mark}"


def format_table(record: dict[str, Any]) -> str:
    """One repository's results as a Markdown table: the means of each model (exact match and
    pass@1 in %, the rest as is) and the paired differences with their 95 % intervals (shares
    in points; ✓ better / ✗ worse outside the interval), then the stages' time and memory."""
    metrics = record["metrics"]
    names = [m for m in ORDER if m in metrics] + sorted(set(metrics) - set(ORDER))
    models = [m for m in MODELS if any(m in metrics[k] for k in names)] or ["model"]
    diffs = [(label, key) for label, key in DIFFS
             if any((key is None and metrics[k].get("delta") is not None) or
                    (key is not None and key in metrics[k].get("comparisons", {}))
                    for k in names)]
    head = ["metric", "n", *models, *(label for label, _ in diffs)]
    lines = [f"### {record['repo']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in names:
        m = metrics[k]
        row = [k.replace("_", " "), str(m.get("n", ""))]
        row += [_fmt(m.get(name), k) for name in models]
        for _label, key in diffs:
            if key is None and m.get("delta") is not None:
                lo, hi = m["ci95"]
                row.append(_diff(m["delta"], lo, hi, k, m["lower_is_better"]))
            elif key is not None and key in m.get("comparisons", {}):
                c = m["comparisons"][key]
                row.append(_diff(c["delta"], *c["ci95"], k, m["lower_is_better"]))
            else:
                row.append("–")
        lines.append("| " + " | ".join(row) + " |")
    if record.get("stages"):
        lines += ["", "| stage | wall time | peak memory |", "|---|---|---|"]
        for s in record["stages"]:
            lines.append(f"| {s['stage']} | {s['seconds'] / 60:.1f} min | "
                         f"{s['peak_rss_mb'] / 1024:.1f} GiB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("repos", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("bench/out/quality"))
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--valid-fraction", type=float, default=0.2)
    ap.add_argument("--benchmark-tasks", type=int, default=30)
    ap.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                    help="a train config override (repeatable), e.g. lora.r=16")
    ap.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE",
                    help="an eval config override (repeatable), e.g. eval.max_tasks=100")
    ap.add_argument("--tag", default="", help="a name for this run in quality.md")
    args = ap.parse_args(argv)
    for r in args.repos:
        if not r.is_dir():
            raise SystemExit(f"{r} is not a folder; give an unpacked project")
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for repo in args.repos:
        print(f"{repo.name}:", flush=True)
        records.append(one_repo(args.model, repo.resolve(), args.out / repo.name, args))
    doc = {"model": args.model, "tag": args.tag, "steps": args.steps, "seq": args.seq,
           "train": args.train, "eval": args.eval, "records": records}
    (args.out / "quality.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    md = (f"## {args.tag or 'quality'}: {Path(args.model).name}, {args.steps} steps x "
          f"{args.seq} tokens, {' '.join(args.train)}\n\n" +
          "\n".join(format_table(r) for r in records))
    (args.out / "quality.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
