"""bench/quality_bench.py, the real-model loop, run end to end on a tiny model: each stage as
its own process, the table of the 2x2 with its intervals, stage times and memory. The figures
of a real model go in bench/RESULTS.md; this only checks the loop and the table."""

from __future__ import annotations

import json

import pytest

from .conftest import bench_module


@pytest.mark.slow
def test_quality_bench_runs_the_loop_and_writes_the_table(tiny_run, tmp_path):
    bench = bench_module("quality_bench")
    repo = tmp_path / "shop"
    (repo / "shop").mkdir(parents=True)
    for k in range(4):
        (repo / "shop" / f"money_{k}.py").write_text(
            f"def cents_{k}(x):\n    return round(x * {10 ** (k + 1)})\n")
    for i in range(16):
        (repo / "shop" / f"views_{i}.py").write_text(
            f"from shop.money_{i % 4} import cents_{i % 4}\n\n\ndef view_{i}(order):\n"
            f"    net = order.total_{i}\n    return cents_{i % 4}(net * {i + 2})\n")
    out = tmp_path / "q"
    assert bench.main([str(tiny_run["base"]), str(repo), "--out", str(out), "--steps", "2",
                       "--seq", "64", "--benchmark-tasks", "2", "--tag", "tiny",
                       "--valid-fraction", "0.3",
                       "--train", "model.dtype=float32", "--train", "train.batch_size=2",
                       "--eval", "eval.max_tasks=6", "--eval", "eval.bootstrap=20",
                       "--eval", "eval.max_new_tokens_multi=8",
                       "--eval", "eval.repo_context_tokens=100"]) == 0
    doc = json.loads((out / "quality.json").read_text())
    (rec,) = doc["records"]
    assert [s["stage"] for s in rec["stages"]] == ["prepare", "train", "eval"]
    assert all(s["exit"] == 0 and s["seconds"] > 0 and s["peak_rss_mb"] > 50
               for s in rec["stages"])
    eval_doc = json.loads((out / "shop" / "run" / "eval" / "eval.json").read_text())
    assert rec["metrics"] == eval_doc["metrics"]
    md = (out / "quality.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert head[:6] == ["metric", "n", "base", "tuned", "base+repo", "tuned+repo"]
    assert {"tuned - base", "context (base)", "context (tuned)"} <= set(head)
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")]
            for r in table[1:]}
    sl = rows["single line exact match"]
    m = eval_doc["metrics"]["single_line_exact_match"]
    assert sl[1] == str(m["n"]) and sl[2] == f"{100 * m['base']:.1f} %"
    lo, hi = m["ci95"]
    assert sl[head.index("tuned - base")].startswith(
        f"{100 * m['delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    assert rows["humaneval infill pass at 1"][2].endswith(" %")  # the forgetting check
    assert {"prepare", "train", "eval"} <= {r.split("|")[1].strip() for r in
                                            md.splitlines() if r.startswith("| ")}


def test_format_table_marks_differences_outside_their_interval():
    bench = bench_module("quality_bench")
    rec = {"repo": "r", "metrics": {
        "single_line_exact_match": {"n": 100, "lower_is_better": False, "base": 0.1,
                                    "tuned": 0.2, "delta": 0.1, "ci95": [0.03, 0.17]},
        "bits_per_byte_ltr": {"n": 9, "lower_is_better": True, "base": 0.9, "tuned": 0.8,
                              "delta": -0.1, "ci95": [-0.15, -0.05]},
        "multi_line_edit_similarity": {"n": 50, "lower_is_better": False, "base": 0.5,
                                       "tuned": 0.45, "delta": -0.05, "ci95": [-0.1, 0.01]}}}
    md = bench.format_table(rec)
    rows = {r.split("|")[1].strip(): r for r in md.splitlines() if r.startswith("| ")}
    assert rows["single line exact match"].rstrip(" |").endswith("+10.0 [+3.0, +17.0] ✓")
    assert rows["bits per byte ltr"].rstrip(" |").endswith("-0.100 [-0.150, -0.050] ✓")
    assert rows["multi line edit similarity"].rstrip(" |").endswith("-0.050 [-0.100, +0.010]")
    assert "base+repo" not in md  # no 2x2, no empty columns
