"""`codetune demo` end to end on the bundled sample project, with a reduced step count: the
fine-tuned model must compress the held-out files better than the base did."""

from __future__ import annotations

import argparse
import json
import subprocess

import pytest

from codetune import demo


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    lines: list[str] = []
    doc = demo.run_demo(str(demo.sample_path()), steps=40, out=out, max_eval_files=4,
                        overrides=["eval.max_tasks=8", "eval.bootstrap=50",
                                   "eval.max_new_tokens_multi=24"],
                        progress=False, echo=lines.append)
    return doc, "\n".join(lines), out


@pytest.mark.slow
def test_demo_fine_tuning_lowers_heldout_bits_per_byte(demo_run):
    doc, _, _ = demo_run
    assert doc["heldout_files"] > 0 and doc["train_files"] > doc["heldout_files"]
    assert doc["bpb_tuned"] < doc["bpb_base"], doc


@pytest.mark.slow  # the demo_run fixture runs the whole demo (minutes)
def test_demo_writes_report_chart_and_summary(demo_run):
    doc, text, out = demo_run
    assert (out / "run" / "eval" / "report.md").is_file()
    assert (out / "run" / "eval" / "eval.png").stat().st_size > 0
    saved = json.loads((out / "demo.json").read_text())
    assert saved["bpb_tuned"] == doc["bpb_tuned"]
    assert "single_line_exact_match" in saved["exact_match"]


@pytest.mark.slow  # the demo_run fixture runs the whole demo (minutes)
def test_demo_prints_before_after_and_next_commands(demo_run):
    doc, text, _ = demo_run
    assert "before (base):" in text and "after (tuned):" in text
    assert doc["example"]["kind"] in ("single_line", "multi_line")
    for cmd in ("codetune prepare", "codetune train starcoderbase-1b-qlora", "codetune eval",
                "codetune merge", "codetune serve"):
        assert cmd in text, cmd


@pytest.mark.slow  # the demo_run fixture runs the whole demo (minutes)
def test_demo_trains_in_repo_mode_and_shows_what_context_did(demo_run):
    doc, text, out = demo_run
    cfg = (out / "run" / "config.yaml").read_text()
    assert "context: repo" in cfg
    c = doc["context"]
    assert c["hole_bpb_file"] > 0 and c["hole_bpb_repo"] > 0
    assert c["ci95"][0] <= c["delta"] <= c["ci95"][1]
    assert f"repository context: {c['line']}" in text
    # and on the cross-file holes: the sample's held-out files use what they import
    x = c["cross_file"]
    assert c["cross_file_holes"] >= 10 and x["ci95"][0] <= x["delta"] <= x["ci95"][1]
    assert f"{c['cross_file_holes']} cross-file holes:" in c["line"]
    assert "the snippets held that definition for " in c["line"]
    assert all(len(row) <= 160 for row in c["line"].splitlines())
    report = (out / "run" / "eval" / "report.md").read_text()
    assert "## Repository context" in report


def test_sample_project_is_packaged():
    root = demo.sample_path()
    files = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    assert 30 <= len(files) <= 60
    assert sum(p.stat().st_size for p in files) < 400_000


def test_resolve_source(tmp_path):
    assert demo.resolve_source("some/dir") == ("some/dir", "given")
    plain = tmp_path / "plain"
    plain.mkdir()
    src, how = demo.resolve_source(None, cwd=plain)
    assert src == str(demo.sample_path()) and "sample" in how
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    src, how = demo.resolve_source(None, cwd=repo / "pkg")
    assert src == str(repo.resolve()) and "git" in how


def test_pick_example_prefers_a_fix():
    def rec(kind, base_em, tuned_em, base_es, tuned_es):
        return {"kind": kind, "base": {"exact_match": base_em, "edit_similarity": base_es},
                "tuned": {"exact_match": tuned_em, "edit_similarity": tuned_es}}

    recs = [rec("multi_line", False, False, 0.1, 0.9), rec("single_line", False, True, 0.5, 1.0),
            rec("single_line", True, True, 1.0, 1.0)]
    assert demo.pick_example(recs) is recs[1]
    assert demo.pick_example([recs[0], recs[2]]) is recs[2]  # single-line before multi-line
    assert demo.pick_example([]) is None


def test_parser():
    parser = argparse.ArgumentParser()
    from codetune.cli import demo as demo_cli

    demo_cli.add_demo(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "proj", "--steps", "5", "-o", "x"])
    assert (args.path, args.steps, args.output) == ("proj", 5, "x")
    assert parser.parse_args(["demo"]).steps == demo.DEFAULT_STEPS
