"""bench/context_layout_bench.py: each layout of repository context is the one it names, and
its table compares each with the model's completions without context. The figures of a real
model go in bench/RESULTS.md; names, paths and texts here are generated."""

from __future__ import annotations

import json
import random
import string

import pytest

from codetune.context import Snippet, index_dataset
from codetune.data.prepare import prepare

from .conftest import bench_module, prep_cfg


def _name(rng: random.Random, n: int = 8) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(n))


def _snippets(rng: random.Random) -> list[Snippet]:
    """Best-first snippets of a few files, each file's chunks out of line order."""
    out = []
    for _ in range(rng.randint(2, 4)):
        path = f"{_name(rng)}/{_name(rng)}.py"
        starts = sorted(rng.sample(range(1, 200, 10), rng.randint(1, 3)))
        for s in starts:
            end = s + rng.randint(0, 9)  # adjacent chunks (end + 1 == next start) can occur
            text = "\n".join(f"v_{_name(rng, 4)} = {i}" for i in range(s, end + 1))
            out.append(Snippet("r", path, s, end, text, rng.random(), "bm25"))
    rng.shuffle(out)
    return out


def test_merged_joins_each_files_snippets_in_line_order_best_file_last():
    bench = bench_module("context_layout_bench")
    rng = random.Random()
    for _ in range(20):
        chosen = _snippets(rng)
        blocks = bench.merged(chosen)
        order = list(dict.fromkeys(s.path for s in chosen))  # best file first
        assert [p for p, _ in blocks] == order[::-1]
        for path, text in blocks:
            mine = sorted((s for s in chosen if s.path == path), key=lambda s: s.start_line)
            expected, last = [], None
            for s in mine:
                if last is not None and s.start_line > last + 1:
                    expected.append("...")
                expected += s.text.splitlines()
                last = s.end_line
            assert text.splitlines() == expected


def test_each_layout_is_the_context_it_names():
    bench = bench_module("context_layout_bench")
    rng = random.Random()
    chosen = _snippets(rng)
    repo, path = _name(rng), f"{_name(rng)}.py"
    best_last = tuple((s.path, s.text) for s in reversed(chosen))
    got = {name: bench.layout_context(name, chosen, repo, path) for name in bench.LAYOUTS}
    assert got["tokens"] == (got["tokens"][0], False) and got["tokens"][0].snippets == best_last
    assert got["comments"][1] and got["comments"][0] == got["tokens"][0]
    for empty in ("tokens-empty", "comments-path"):
        ctx, comments = got[empty]
        assert (ctx.repo, ctx.path, ctx.snippets, comments) == \
            (repo, path, (), empty == "comments-path")
    assert got["tokens-nopath"][0].path is None
    assert got["tokens-nopath"][0].snippets == best_last
    assert got["tokens-bestfirst"][0].snippets == best_last[::-1]
    assert got["tokens-merged"][0].snippets == bench.merged(chosen)
    assert bench.check_layout("tokens-budget=128") == "tokens-budget=128"
    for bad in ("tokens-budget=x", "tokens-budget=-1", _name(rng)):
        with pytest.raises(Exception, match="unknown layout"):
            bench.check_layout(bad)


def test_table_compares_each_layout_with_no_context_on_the_same_tasks():
    bench = bench_module("context_layout_bench")
    from codetune.evaluation.tasks import Task

    rng = random.Random()
    tasks = [Task(f"t{i}", "cross_file", "r", "a.py", "", f"x_{_name(rng)}()", "")
             for i in range(rng.randint(20, 40))]
    alone = [t.middle if rng.random() < 0.3 else _name(rng) for t in tasks]
    better = [t.middle for t in tasks]  # every hole right
    rows = bench.score_rows(tasks, alone, {"tokens": better}, {"tokens": 12.0}, boot=200)
    ref = sum(p == t.middle for p, t in zip(alone, tasks, strict=True)) / len(tasks)
    assert rows[0]["layout"] == "no context" and rows[0]["em"] == pytest.approx(ref)
    assert rows[1]["em"] == 1.0 and rows[1]["em_delta"] == pytest.approx(1.0 - ref)
    lo, hi = rows[1]["em_ci95"]
    assert lo <= rows[1]["em_delta"] <= hi
    md = bench.format_table(rows).splitlines()
    assert md[0].startswith("| layout | n | exact match |")
    cells = [c.strip() for c in md[3].strip("|").split("|")]
    assert cells[:3] == ["tokens", str(len(tasks)), "100.0 %"]
    assert cells[3] == f"{100 * (1 - ref):+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
    assert cells[-1] == "12 s"


@pytest.mark.slow
def test_bench_asks_an_evals_tasks_again_under_each_layout(tiny_run, tmp_path):
    """End to end on the tiny model: tasks from an eval.json, its index, two layouts, the
    table and every completion written."""
    bench = bench_module("context_layout_bench")
    ds = tmp_path / "ds"
    prepare([str(tiny_run["repo"])], ds, prep_cfg(valid_fraction=0.15, dedup_near=False),
            progress=False, context_index=index_dataset)
    rng = random.Random()
    records = []
    for i, f in enumerate(sorted(tiny_run["repo"].glob("*.py"))[:5]):
        lines = f.read_text().splitlines(keepends=True)
        k = rng.randrange(1, len(lines) - 1)
        records.append({"task_id": f"{f.name}#L{k}", "kind": "cross_file", "repo_id": "repo",
                        "path": f.name, "prefix": "".join(lines[:k]),
                        "middle": lines[k].rstrip("\n"), "suffix": "\n" + "".join(lines[k + 1:]),
                        "base": {"output": lines[k].rstrip("\n") if i % 2 else ""}})
    eval_json = tmp_path / "eval.json"
    eval_json.write_text(json.dumps({"task_records": records, "context": {"tokens": 64}}))
    out = tmp_path / "out"
    assert bench.main([str(tiny_run["base"]), str(eval_json), str(ds), "--out", str(out),
                       "--layouts", "tokens", "comments-path", "--prompt-tokens", "200",
                       "--bootstrap", "20"]) == 0
    doc = json.loads((out / "layouts.json").read_text())
    assert doc["tasks"] == [r["task_id"] for r in records]
    assert set(doc["outputs"]) == {"tokens", "comments-path"}
    assert all(len(v) == len(records) for v in doc["outputs"].values())
    assert [r["layout"] for r in doc["rows"]] == ["no context", "tokens", "comments-path"]
    assert doc["rows"][0]["em"] == pytest.approx(2 / 5)
    md = (out / "layouts.md").read_text()
    assert "| no context | 5 | 40.0 % |" in md and "| comments-path | 5 |" in md
