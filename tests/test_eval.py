"""`codetune eval` and `codetune merge`: hand-checked metrics, tasks, reports, equivalence."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from codetune.cli import main
from codetune.config import EvalConfig
from codetune.errors import CodetuneError
from codetune.evaluation.tasks import (
    block_candidates,
    edit_similarity,
    exact_match,
    make_tasks,
    paired_bootstrap,
)

SRC = """import os


def load(path):
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    with open(path) as fh:
        return fh.read()


class Store:
    def __init__(self, root):
        self.root = root
"""


def test_metrics_by_hand():
    assert exact_match("  return x\n", "return x") == 1.0
    assert exact_match("return y", "return x") == 0.0
    assert edit_similarity("return x", "return x") == 1.0
    assert edit_similarity("abcd", "abce") == pytest.approx(0.75)  # 1 edit in 4 characters
    assert edit_similarity("", "abc") == 0.0
    assert edit_similarity("  ", "") == 1.0


def test_paired_bootstrap_interval():
    a = np.zeros(200)
    b = np.r_[np.ones(100), np.zeros(100)]
    d, lo, hi = paired_bootstrap(a, b, n=2000, seed=1)
    assert d == pytest.approx(0.5) and lo < 0.5 < hi and lo > 0.35 and hi < 0.65
    d, lo, hi = paired_bootstrap(np.ones(50), np.ones(50))
    assert (d, lo, hi) == (0.0, 0.0, 0.0)
    # Weighted (bytes): the statistic is the difference of the pooled ratio.
    d, _, _ = paired_bootstrap(np.array([1.0, 3.0]), np.array([0.0, 2.0]), weights=[1, 3])
    assert d == pytest.approx(-1.0)


def test_tasks_are_deterministic_and_reassemble():
    tasks = make_tasks("r", "a.py", SRC, seed=0, single=3, multi=2)
    assert tasks == make_tasks("r", "a.py", SRC, seed=0, single=3, multi=2)
    assert tasks != make_tasks("r", "a.py", SRC, seed=1, single=3, multi=2)
    for t in tasks:
        assert t.prefix + t.middle + t.suffix == SRC
        if t.kind == "single_line":
            assert "\n" not in t.middle and t.middle.strip() and not t.middle[0].isspace()
            assert t.suffix.startswith("\n")
        else:
            assert t.middle.endswith("\n") and t.prefix.endswith(":\n")
    kinds = [t.kind for t in tasks]
    assert kinds.count("single_line") == 3 and kinds.count("multi_line") == 2


def test_block_candidates_follow_indentation():
    lines = SRC.splitlines(keepends=True)
    bodies = {"".join(lines[a:b]) for a, b in block_candidates(lines, 8)}
    assert "        raise FileNotFoundError(path)\n" in bodies
    assert "        self.root = root\n" in bodies
    assert any(b.startswith("    if not os.path.exists") for b in bodies)


class _Uniform(torch.nn.Module):
    """A 'model' whose next-token distribution is uniform over V: every token costs ln V."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        class Out:
            logits = torch.zeros(*input_ids.shape, self.vocab)
        return Out()


def test_bits_per_byte_by_hand(tiny_run):
    from transformers import AutoTokenizer

    from codetune.evaluation.bpb import ltr_nll
    from codetune.infer.loader import Loaded
    from codetune.tokens.fim import detect_fim

    tok = AutoTokenizer.from_pretrained(str(tiny_run["tok"]))
    loaded = Loaded(_Uniform(len(tok)), tok, detect_fim(tok), "uniform")
    text = "def add(a, b):\n    return a + b\n" * 3
    n_tok = len(tok(text, add_special_tokens=False)["input_ids"])
    for window in (7, 1000):  # windowing must not change the count of scored tokens
        nats = ltr_nll(loaded, text, window)
        assert nats == pytest.approx(n_tok * math.log(len(tok)), rel=1e-5)
    bpb = nats / math.log(2) / len(text.encode())
    assert bpb == pytest.approx(n_tok * math.log2(len(tok)) / len(text.encode()), rel=1e-5)


def test_eval_run_folder_reports_and_tuned_beats_base(tiny_run, tmp_path):
    from codetune.evaluation.run import evaluate

    out = tmp_path / "eval"
    cfg = EvalConfig(max_new_tokens_single=8, max_new_tokens_multi=16, bootstrap=300)
    res = evaluate(str(tiny_run["run"]), cfg, out, progress=False)
    for f in ("report.md", "eval.json", "eval.png"):
        assert (out / f).is_file()
    doc = json.loads((out / "eval.json").read_text())
    assert doc["models"] == ["base", "tuned"]
    assert len(doc["task_records"]) == res.tasks > 0
    rec = doc["task_records"][0]
    assert {"prefix", "middle", "suffix", "base", "tuned"} <= set(rec)
    assert "output" in rec["base"] and "output" in rec["tuned"]
    m = res.metrics
    assert {"single_line_exact_match", "multi_line_edit_similarity", "bits_per_byte_ltr",
            "bits_per_byte_fim"} <= set(m)
    # Trained on this repetitive corpus: held-out bits per byte fall, outside the interval.
    for k in ("bits_per_byte_ltr", "bits_per_byte_fim"):
        assert m[k].values["tuned"] < m[k].values["base"] and m[k].ci95[1] < 0, m[k]
        assert m[k].real_change == 1
        assert doc["metrics"][k]["ci95"] == list(m[k].ci95)  # eval.json keeps its layout
    assert "helped" in res.verdict
    report = (out / "report.md").read_text()
    assert "bits per byte ltr" in report and "95 % CI" in report


def test_eval_cli_and_forgetting_benchmark(tiny_run, tmp_path, capsys):
    bench = tmp_path / "bench.jsonl"
    bench.write_text("\n".join(json.dumps({"prompt": "def f(x):\n    ", "suffix": "\n",
                                           "canonical_solution": f"return x + {i}"})
                               for i in range(3)) + "\n")
    assert main(["eval", str(tiny_run["run"]), "-o", str(tmp_path / "e"), "-q",
                 "--forgetting", str(bench), "-s", "eval.bpb=false",
                 "-s", "eval.max_new_tokens_multi=8"]) == 0
    assert "codetune eval" in capsys.readouterr().out
    doc = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert doc["metrics"]["benchmark_single_line_exact_match"]["n"] == 3
    assert len(doc["benchmark_records"]) == 3
    assert main(["eval", "--model", str(tiny_run["base"]), "-q"]) == 2
    assert "--dataset" in capsys.readouterr().err
    with pytest.raises(CodetuneError, match="forgetting benchmark"):
        from codetune.evaluation.run import load_benchmark

        load_benchmark(str(tmp_path / "missing.jsonl"))


def test_merge_matches_base_plus_adapter(tiny_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from codetune.infer.loader import load
    from codetune.merge import merge

    out = tmp_path / "merged"
    r = merge(tiny_run["run"], out, dtype="float32")
    assert r["max_abs_logit_diff"] <= 1e-3
    for f in ("model.safetensors", "tokenizer_config.json", "generation_config.json",
              "codetune_merge.json"):
        assert (out / f).is_file(), f
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    ref = load(str(tiny_run["run"]), dtype="float32")
    ids = torch.tensor([[3, 17, 42, 99, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, ref.model(ids).logits, atol=1e-4)
    gen = json.loads((out / "generation_config.json").read_text())
    assert ref.fim.middle_id in gen["eos_token_id"]  # plain generate() stops like codetune
    with pytest.raises(CodetuneError, match="already"):  # exists / holds a merged model
        merge(tiny_run["run"], out)
    assert not list(tmp_path.glob(".merged.partial-*"))
    # bf16, as the reference notebook merged: within bf16 tolerance, and said so.
    r16 = merge(tiny_run["run"], tmp_path / "m16")
    assert r16["dtype"] == "bfloat16" and r16["max_abs_logit_diff"] <= r16["tolerance"]


def test_a_merge_out_of_tolerance_falls_back_to_float32_and_names_real_flags(
        tiny_run, tmp_path, monkeypatch, capsys):
    """A bf16 merge of a real 0.5B QLoRA run was 1.05 off: the merge is redone in float32 and
    says so; where nothing is within tolerance the error names no flag that would not help,
    and with the fallback off it names the caller's own flag."""
    from codetune import merge as M

    monkeypatch.setitem(M.TOLERANCE, "bfloat16", -1.0)  # no bf16 merge can pass
    r = M.merge(tiny_run["run"], tmp_path / "m", flag="--merge-dtype")
    assert (r["dtype"], r["dtype_requested"]) == ("float32", "bfloat16")
    assert "bfloat16 merge differs" in r["fallback"]
    assert "merging in float32 instead" in capsys.readouterr().err
    assert json.loads((tmp_path / "m" / "codetune_merge.json").read_text())["dtype"] == "float32"
    with pytest.raises(CodetuneError, match=r"Try --merge-dtype float32"):
        M.merge(tiny_run["run"], tmp_path / "n", flag="--merge-dtype", fallback=False)
    monkeypatch.setitem(M.TOLERANCE, "float32", -1.0)
    with pytest.raises(CodetuneError) as e:
        M.merge(tiny_run["run"], tmp_path / "o", flag="--merge-dtype")
    assert "float32 merge differs" in str(e.value) and "Try" not in str(e.value)
    assert not (tmp_path / "n").exists() and not (tmp_path / "o").exists()


def test_merge_says_when_it_could_not_check_on_held_out_code(tiny_run, tmp_path, capsys):
    import shutil

    from codetune.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    for name in ("config.yaml", "run.json"):  # run.json's record is what merge goes by
        f = run / name
        f.write_text(f.read_text().replace(str(tiny_run["ds"].resolve()), str(tmp_path / "gone"))
                     .replace(str(tiny_run["ds"]), str(tmp_path / "gone")))
        assert str(tmp_path / "gone") in f.read_text()
    assert main(["merge", str(run), "-o", str(tmp_path / "m"), "--dtype", "float32"]) == 0
    said = capsys.readouterr().out
    assert "not held-out code" in said and "held-out inputs" not in said
    rec = json.loads((tmp_path / "m" / "codetune_merge.json").read_text())
    assert rec["verified_on"].startswith("token ids") and str(tmp_path / "gone") in rec[
        "verified_on"]
    from codetune.merge import merge

    ok = merge(tiny_run["run"], tmp_path / "m2", dtype="float32")  # the dataset is there
    assert ok["verified_on"].endswith("held-out inputs")


def test_merge_refuses_non_runs(tmp_path):
    from codetune.merge import merge

    with pytest.raises(CodetuneError, match="not a codetune run folder"):
        merge(tmp_path, tmp_path / "out")


def forced(loaded, plan: dict[tuple[int, ...], list[int]]):
    """Make `loaded`'s real model (under its adapter, and with it disabled) generate `plan[prompt]`
    for each prompt, then EOS, through `model.generate`: a forward hook overwrites the last
    position's logits. Rows are told apart at the prefill by their (left-padded) prompt."""
    inner = loaded.model.get_base_model()
    pad, eos = loaded.tokenizer.pad_token_id, loaded.fim.eos_id
    state: dict = {}

    def hook(module, args, kwargs, output):
        ids = kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]
        if ids.shape[1] > 1:  # the prefill: which prompt is in which row
            rows = [r.tolist() for r in ids]
            state["plans"] = [plan[tuple(r[next(i for i, t in enumerate(r) if t != pad):])]
                              for r in rows]
            state["step"] = 0
        else:
            state["step"] += 1
        logits = torch.full_like(output.logits[:, -1, :], -1e9)
        for i, script in enumerate(state["plans"]):
            logits[i, script[state["step"]] if state["step"] < len(script) else eos] = 0.0
        output.logits[:, -1, :] = logits
        return output

    return inner.register_forward_hook(hook, with_kwargs=True)


RUNS_ON_FILE = """def view_{i}(request):
    user_{i} = request.user
    if not user_{i}.ok:
        return None

    items_{i} = load(user_{i})
    return items_{i}


def main_{i}():
    print(view_{i}(None))
"""


@pytest.mark.slow
def test_eval_counts_and_cuts_a_middle_that_runs_into_the_suffix(tiny_run, tmp_path, monkeypatch,
                                                                  capsys):
    """A model that writes each hole's middle and then goes on with its suffix (as a real 0.5B
    model did): the multi-line tasks score exact match 1 once cut, and the report counts it."""
    from codetune import infer as inference
    from codetune.data import store
    from codetune.data.prepare import prepare
    from codetune.evaluation import run as E
    from codetune.evaluation.report import print_summary
    from codetune.infer import loader

    from .conftest import prep_cfg

    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(8):  # every line names its file: no two prompts alike
        (repo / f"v{i}.py").write_text(RUNS_ON_FILE.format(i=i))
    prepare([str(repo)], tmp_path / "ds", prep_cfg(valid_fraction=0.5, dedup_near=False),
            progress=False)
    loaded = inference.load(str(tiny_run["run"]))
    cfg = EvalConfig(max_new_tokens_single=32, max_new_tokens_multi=128, multi_line_per_file=3,
                     bpb=False, bootstrap=50)
    fitted = E.fit_to_model(cfg, inference.context_window(loaded))
    tasks = E.build_tasks(store.held_out_files(str(tmp_path / "ds"), None), fitted)
    tok = loaded.tokenizer
    plan = {tuple(E.task_prompt(loaded, t, fitted.prompt_tokens)):
            tok.encode(t.middle + t.suffix, add_special_tokens=False) for t in tasks}
    assert len(plan) == len(tasks)
    multi = [t for t in tasks if t.kind == "multi_line"]
    runs_on = [t for t in multi if t.suffix.strip()]  # a middle with code after it to repeat
    assert runs_on and any(t.kind == "single_line" for t in tasks)
    assert any(t.middle == "        return None\n" for t in runs_on)  # the real-model case
    handle = forced(loaded, plan)
    try:
        monkeypatch.setattr(loader, "load", lambda *a, **kw: loaded)
        res = E.evaluate(str(tiny_run["run"]), cfg, tmp_path / "e", dataset=str(tmp_path / "ds"),
                         progress=False)
        print_summary(res)
        # batched generation stopped where the suffix started over, not at the token budget
        prompts = [E.task_prompt(loaded, t, fitted.prompt_tokens) for t in runs_on]
        params = inference.GenParams(max_new_tokens=128, greedy=True)
        for t, p, g in zip(runs_on, prompts, inference.generations(
                loaded, prompts, params, [(t.prefix, t.suffix) for t in runs_on]), strict=True):
            assert (g.text, g.finish_reason, g.trimmed_suffix) == (t.middle, "stop", True)
            assert g.completion_tokens < len(plan[tuple(p)]) - 1
    finally:
        handle.remove()
    m = res.metrics
    for name in ("base", "tuned"):
        assert m["multi_line_exact_match"].values[name] == 1.0
        # ended at the line end, not trimmed
        assert m["single_line_exact_match"].values[name] == 1.0
    trims = res.suffix_trims
    assert trims["multi_line"] == {"n": len(multi), "base": len(runs_on), "tuned": len(runs_on)}
    assert trims["single_line"]["base"] == trims["single_line"]["tuned"] == 0
    assert trims["all"]["n"] == len(tasks)
    doc = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert doc["suffix_trims"] == trims
    recs = {r["task_id"]: r for r in doc["task_records"]}
    for t in multi:
        rec = recs[t.task_id]
        assert rec["tuned"]["trimmed_suffix"] == bool(t.suffix.strip())
        assert rec["tuned"]["output"].strip() == t.middle.strip()
    line = (f"base {len(runs_on)}/{len(tasks)} (single-line 0/{trims['single_line']['n']}, "
            f"multi-line {len(runs_on)}/{len(multi)})")
    assert line in (tmp_path / "e" / "report.md").read_text()
    assert line in capsys.readouterr().out


def test_verdict_from_typed_scores():
    from codetune.evaluation.report import Score, _verdict

    better = Score(10, False, {"base": 0.1, "tuned": 0.3}, 0.2, (0.05, 0.35))
    worse_bpb = Score(10, True, {"base": 1.0, "tuned": 1.2}, 0.2, (0.1, 0.3))
    unclear = Score(10, False, {"base": 0.1, "tuned": 0.12}, 0.02, (-0.05, 0.09))
    assert (better.real_change, worse_bpb.real_change, unclear.real_change) == (1, -1, 0)
    v = _verdict({"exact_match": better, "bits_per_byte": worse_bpb, "edit": unclear})
    assert v == "fine-tuning helped on exact match; it hurt on bits per byte (95 % bootstrap " \
                "intervals)"
    assert _verdict({"edit": unclear}).startswith("no difference")
    assert better.to_dict() == {"n": 10, "lower_is_better": False, "base": 0.1, "tuned": 0.3,
                                "delta": 0.2, "ci95": [0.05, 0.35]}


@pytest.mark.slow
def test_eval_2x2_with_repository_context(tiny_run, tmp_path, capsys):
    """eval.context=both: base and tuned, each with and without snippets of the train files;
    paired comparisons for "context helped" and "tuning helped"; no held-out file in any
    prompt's context."""
    import pyarrow.parquet as pq

    from codetune.cli import main
    from codetune.context import RepoIndex, index_dataset
    from codetune.data.prepare import prepare

    from .conftest import prep_cfg

    repo = tmp_path / "shop"
    (repo / "shop").mkdir(parents=True)
    for k in range(4):  # (several, so that some are train files whatever the split)
        (repo / "shop" / f"money_{k}.py").write_text(
            f"def cents_{k}(x):\n    return round(x * {10 ** (k + 1)})\n")
    for i in range(14):  # short files: a whole one fits the tiny model's context budget
        (repo / "shop" / f"views_{i}.py").write_text(
            f"from shop.money_{i % 4} import cents_{i % 4}\n\n\ndef view_{i}(order):\n"
            f"    net = order.total_{i}\n    return cents_{i % 4}(net * {i + 2})\n")
    ds = tmp_path / "ds"
    prepare([str(repo)], ds, prep_cfg(valid_fraction=0.3, dedup_near=False), progress=False,
            context_index=index_dataset)
    held = {r["path"] for f in (ds / "data").glob("validation-*.parquet")
            for r in pq.read_table(f, columns=["path"]).to_pylist()}
    assert held and not held & {p for _, p, _ in RepoIndex.for_dataset(ds).files()}
    out = tmp_path / "eval"
    args = ["-s", "eval.bootstrap=50", "-s", "eval.max_tasks=12",
            "-s", "eval.max_new_tokens_multi=8", "-s", "eval.repo_context_tokens=150"]
    # eval.bpb=false: no bits per byte at all, the holes' included
    assert main(["eval", str(tiny_run["run"]), "--dataset", str(ds), "-o", str(out), "-q",
                 "-s", "eval.bpb=false", *args]) == 0
    doc = json.loads((out / "eval.json").read_text())
    assert not [m for m in doc["metrics"] if "bits_per_byte" in m]
    assert main(["eval", str(tiny_run["run"]), "--dataset", str(ds), "-o", str(out), "-q",
                 *args]) == 0
    doc = json.loads((out / "eval.json").read_text())
    assert doc["models"] == ["base+repo", "base", "tuned+repo", "tuned"]
    assert doc["context"]["settings"] == ["file", "repo"] and doc["context"]["with_snippets"] > 0
    for rec in doc["task_records"]:
        assert not set(rec["context"]) & held  # train files only, never a held-out one
        assert rec["path"] not in rec["context"]
    for metric in ("single_line_exact_match", "hole_bits_per_byte",
                   "cross_file_single_line_exact_match", "cross_file_hole_bits_per_byte"):
        comp = doc["metrics"][metric]["comparisons"]
        assert {"context (base)", "context (tuned)", "tuning (with context)"} <= set(comp)
    # cross-file: `return cents_k(...)` names what only shop/money_k.py defines (import aside)
    cross = [r for r in doc["task_records"] if r["cross_file"]]
    assert cross and doc["context"]["cross_file"] == len(cross)
    # the import-aware retrieval brings each of them the definition it needs
    assert doc["context"]["definition_found"] == len(cross)
    assert f"{len(cross)} of these {len(cross)} found" in (out / "report.md").read_text()
    assert all("cents_" in r["middle"] and "money_" not in r["path"] for r in cross)
    assert doc["metrics"]["cross_file_single_line_exact_match"]["n"] == sum(
        r["kind"] in ("single_line", "cross_file") for r in cross)
    # and the import-use holes: each held-out view's first call of its imported cents_k,
    # scored only among the cross-file metrics (the random-hole ones stay random)
    uses = [r for r in doc["task_records"] if r["kind"] == "cross_file"]
    assert uses and all(r["middle"].startswith("return cents_") and r["cross_file"]
                        for r in uses)
    assert doc["context"]["import_use"] == len(uses)
    assert doc["metrics"]["single_line_exact_match"]["n"] == sum(
        r["kind"] == "single_line" for r in doc["task_records"])
    report = (out / "report.md").read_text()
    assert "## Repository context" in report and "**Context: repository context" in report
    assert "Context: repository context" in capsys.readouterr().out
    # --context off: exactly the file-level evaluation, no hole metric
    assert main(["eval", str(tiny_run["run"]), "--dataset", str(ds), "-o", str(out), "-q",
                 "-s", "eval.bpb=false", "-s", "eval.bootstrap=50", "-s", "eval.max_tasks=4",
                 "--context", "off"]) == 0
    doc = json.loads((out / "eval.json").read_text())
    assert doc["models"] == ["base", "tuned"] and "hole_bits_per_byte" not in doc["metrics"]
    assert "context" not in doc["task_records"][0]
    # --context on: only the context setting, under the models' own names
    assert main(["eval", str(tiny_run["run"]), "--dataset", str(ds), "-o", str(out), "-q",
                 "-s", "eval.bpb=false", "-s", "eval.bootstrap=50", "-s", "eval.max_tasks=4",
                 "--context", "on", "--context-tokens", "100"]) == 0
    doc = json.loads((out / "eval.json").read_text())
    assert doc["models"] == ["base", "tuned"] and doc["context"]["settings"] == ["repo"]
    assert doc["context"]["tokens"] == 100


def test_context_on_needs_an_index_and_off_is_the_file_prompt(tiny_run, tmp_path):
    from codetune.config import EvalConfig
    from codetune.errors import CodetuneError
    from codetune.evaluation.context import context_prompt
    from codetune.evaluation.run import context_settings, task_prompt
    from codetune.evaluation.tasks import make_tasks
    from codetune.infer.loader import load
    from codetune.tokens.fim import RepoContext

    ds = tiny_run["ds"]
    bare = tmp_path / "bare"  # a dataset prepared without its index
    shutil.copytree(ds, bare)
    shutil.rmtree(bare / "context", ignore_errors=True)
    assert context_settings(EvalConfig(context="auto"), str(bare)) == (["file"], None)
    with pytest.raises(CodetuneError, match="prepare it again"):
        context_settings(EvalConfig(context="both"), str(bare))
    assert context_settings(EvalConfig(context="off"), str(ds)) == (["file"], None)
    loaded = load(str(tiny_run["run"]))
    text = "import os\n\n\ndef f(x):\n    y = x + 1\n    return y\n" * 3
    task = make_tasks("r", "a.py", text, 0, 2, 1, 8)[0]
    plain = task_prompt(loaded, task, 64)
    assert context_prompt(loaded, task, 64, None) == plain
    ctx = RepoContext(repo="r", path="a.py", snippets=(("lib/util.py", "def helper_q(): pass\n"),))
    ids = context_prompt(loaded, task, 64, ctx)
    shown = loaded.tokenizer.decode(ids)
    assert "lib/util.py" in shown and "def helper_q(): pass" in shown and "a.py" in shown
    # the context comes in front: the prompt still ends as the file-level one does
    assert len(ids) > len(plain) and ids[-6:] == plain[-6:]


def test_repository_context_never_overflows_a_short_window(tiny_run, tmp_path):
    """The context budget counts snippet text, not the paths and separators around each
    snippet: many small snippets with long paths must still leave the prompt, its generation
    and the hole inside the model's positions (the tiny model has 512), as codetune-mini's
    1024 must on a real repository."""
    from codetune.context import index_dataset
    from codetune.data.prepare import prepare

    from .conftest import prep_cfg

    repo = tmp_path / "shop"
    deep = "shop/" + "/".join(f"a_rather_long_package_name_number_{k}" for k in range(2))
    for i in range(30):  # each file defines one helper and calls many of the others
        calls = "".join(f"    total = h{(i * 7 + k) % 30}(total) * {k}\n" for k in range(30))
        (repo / deep / f"helpers_{i}").mkdir(parents=True)
        (repo / deep / f"helpers_{i}" / f"module_with_a_long_name_{i}.py").write_text(
            f"def h{i}(x):\n    return x + {i}\n\n\ndef run_{i}(total):\n{calls}"
            "    return total\n")
    ds = tmp_path / "ds"
    prepare([str(repo)], ds, prep_cfg(valid_fraction=0.3, dedup_near=False), progress=False,
            context_index=index_dataset)
    from codetune.cli import main

    out = tmp_path / "eval"
    assert main(["eval", str(tiny_run["run"]), "--dataset", str(ds), "-o", str(out), "-q",
                 "-s", "eval.bootstrap=20", "-s", "eval.max_tasks=6",
                 "-s", "eval.max_new_tokens_multi=8", "-s", "eval.max_new_tokens_single=8",
                 "--context", "both", "--context-tokens", "400"]) == 0  # (bpb on: holes scored)
    doc = json.loads((out / "eval.json").read_text())
    assert doc["context"]["with_snippets"] > 0
    assert 0 <= doc["context"]["definition_found"] <= doc["context"]["cross_file"]
    assert "hole_bits_per_byte" in doc["metrics"]


def test_cross_file_tasks_need_a_name_only_another_file_defines():
    from codetune.context import Snippet
    from codetune.evaluation.context import defines_any, needed_names
    from codetune.evaluation.tasks import Task
    from codetune.tokens.fim import RepoContext

    class Index:  # two chunks of the repository's other files
        chunks = [Snippet("r", "lib/money.py", 1, 3, "def to_cents(x):\n    return x\n"
                          "RATE = 3\n", 0.0, "bm25"),
                  Snippet("r", "app.py", 1, 2, "def local_helper():\n    pass\n", 0.0, "bm25")]

        def __len__(self):
            return len(self.chunks)

        def chunk(self, i):
            return self.chunks[i]

    def task(prefix, middle, suffix="", path="app.py", repo="r"):
        return Task("t", "single_line", repo, path, prefix, middle, suffix)

    tasks = [
        task("from lib.money import to_cents\n", "y = to_cents(2)\n"),  # only the import: yes
        task("x = to_cents(1)\n", "y = to_cents(2)\n"),  # the file uses it already: no
        task("", "y = local_helper()\n"),  # defined in this same file: no
        task("", "y = RATE * 2\n"),  # a top-level constant of another file: yes
        task("", "y = to_cents(2)\n", repo="other"),  # another repository: no
        task("", "y = len(x)\n"),  # nothing of the repository: no
    ]
    assert [bool(n) for n in needed_names(Index(), tasks)] == [
        True, False, False, True, False, False]

    # what each needs, and whether a context brought its definition
    assert needed_names(Index(), [*tasks[:2], tasks[3]]) == [{"to_cents"}, set(), {"RATE"}]
    # a name inside a string literal is no use of it (an `__all__` entry, a message)
    assert needed_names(Index(), [task("", '    "to_cents",\n'),
                                  task("", "log('RATE is low')\n")]) == [set(), set()]
    stub = RepoContext("r", "app.py", (("lib/money.py", "def to_cents(x): ...\n"),))
    other = RepoContext("r", "app.py", (("lib/money.py", "y = to_cents(4)\nRATE = 3\n"),))
    assert defines_any(stub, {"to_cents"}) and defines_any(other, {"RATE"})
    assert not defines_any(other, {"to_cents"})  # a call is not the definition
    assert not defines_any(None, {"to_cents"}) and not defines_any(stub, set())


def test_import_use_tasks_are_first_uses_of_imported_repository_definitions(tmp_path):
    from codetune.context import build_index
    from codetune.evaluation.context import import_use_tasks

    lib = "def to_cents(x):\n    return round(x * 100)\n\n\nRATE = 3\n"
    app = ("from lib.money import (\n    to_cents,\n)\nimport lib.money as m\nimport os\n\n\n"
           "def a():\n    return to_cents(1)\n\n\n"  # the first use of to_cents: a hole
           "def b():\n    return to_cents(2)\n\n\n"  # used before: not
           "def c():\n    # m.RATE in a comment is no use\n"
           "    x = m.RATE + os.sep\n")  # the first use of m.RATE: a hole
    index = build_index([("r", "lib/money.py", lib)], tmp_path / "ix", neighbours=False)
    tasks = import_use_tasks(index, "r", "app.py", app, 0, 5)
    assert [(t.kind, t.middle) for t in tasks] == [("cross_file", "return to_cents(1)"),
                                                   ("cross_file", "x = m.RATE + os.sep")]
    t = tasks[0]
    assert t.prefix + t.middle + t.suffix == app and t.prefix.endswith("def a():\n    ")
    assert import_use_tasks(index, "r", "app.py", app, 0, 5) == tasks  # the same every run
    assert len(import_use_tasks(index, "r", "app.py", app, 0, 1)) == 1
    assert import_use_tasks(index, "other", "app.py", app, 0, 5) == []  # not its repository
    assert import_use_tasks(index, "r", "app.js", app, 0, 5) == []  # Python only
    # a name inside a string literal is not a use of it
    said = app.replace("def a():\n", "def a():\n    print('to_cents, documented')\n")
    assert [t.middle for t in import_use_tasks(index, "r", "app.py", said, 0, 5)] == [
        "return to_cents(1)", "x = m.RATE + os.sep"]
    # what each needs is the name it was chosen for, though the import statement that
    # brought it in spans lines, and later uses in the suffix still count
    from codetune.evaluation.context import needed_names

    assert needed_names(index, tasks) == [{"to_cents"}, {"RATE"}]


def test_context_verdict_wording():
    from codetune.evaluation.report import Score, _context_verdict

    def score(lo, hi, lower=False):
        return Score(10, lower, {"tuned": 0.5, "tuned+repo": 0.5},
                     comparisons={"context (tuned)": ((lo + hi) / 2, lo, hi)})

    assert _context_verdict({}) == ""
    assert _context_verdict({"em": score(-0.1, 0.1)}).startswith("repository context made no")
    assert _context_verdict({"em": score(0.1, 0.3)}).startswith(
        "repository context helped the fine-tuned model on em")
    hurt = _context_verdict({"em": score(-0.3, -0.1), "bpb": score(0.01, 0.02, lower=True)})
    assert hurt.startswith("repository context hurt the fine-tuned model on em, bpb")
    assert "--context-tokens 0" in hurt and "data.context=repo" in hurt  # the remedy
    assert "--context-tokens" not in _context_verdict({"em": score(0.1, 0.3)})
    both = _context_verdict({"em": score(0.1, 0.3), "bpb": score(0.01, 0.02, lower=True)})
    assert both.startswith("repository context helped the fine-tuned model on em; it hurt on bpb")
    assert "--context-tokens" not in both  # a mixed verdict is no call to turn it off


def test_holes_are_scored_from_the_generations_prefill(tiny_run):
    """predict(score=True): the same greedy completions as without scoring, and each hole's
    nats equal to a pass of its own (`hole_nll`), with and without repository context."""
    from codetune.config import EvalConfig
    from codetune.data.store import held_out_files
    from codetune.evaluation.context import hole_nll
    from codetune.evaluation.run import build_tasks, hole, predict
    from codetune.infer import loader
    from codetune.tokens.fim import RepoContext

    loaded = loader.load(str(tiny_run["run"]), quantization="none", dtype="float32")
    cfg = EvalConfig(max_tasks=10, prompt_tokens=200, max_new_tokens_single=6,
                     max_new_tokens_multi=8, batch_size=4)
    tasks = build_tasks(held_out_files(str(tiny_run["ds"]), 4), cfg)
    assert {t.kind for t in tasks} == {"single_line", "multi_line"}
    ctxs = [RepoContext(repo=t.repo_id, path=t.path,
                        snippets=((f"lib_{i}.py", f"def helper_{i}(x):\n    return x\n"),))
            for i, t in enumerate(tasks)]
    for contexts in (None, ctxs):
        plain = predict(loaded, tasks, cfg, contexts=contexts)
        scored = predict(loaded, tasks, cfg, contexts=contexts, score=True)
        assert [g.text for g in scored] == [g.text for g in plain]
        assert all(g.nll is None for g in plain)
        for i, (t, g) in enumerate(zip(tasks, scored, strict=True)):
            ref = hole_nll(loaded, t, cfg.prompt_tokens, None if contexts is None else ctxs[i])
            got = hole(t, g)
            assert got[1] == ref[1] and abs(got[0] - ref[0]) < 1e-3 * max(1.0, ref[0]), (i, got,
                                                                                         ref)
