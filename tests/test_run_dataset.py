"""A run's dataset is the one run.json records (absolute path + content hash), wherever a
command runs from: a folder that happens to hold a dataset of the same relative name is never
scored, probed or resumed on in its place (`data.store.run_dataset`, used by every reader)."""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from codetune import config
from codetune.cli import main
from codetune.data import store
from codetune.errors import CodetuneError

from .conftest import prep_cfg

DECOY_FILE = "def decoy_{i}(x):\n    return [x] * {i}\n"


def _held_out(ds: Path) -> int:
    return json.loads((ds / "manifest.json").read_text())["splits"]["validation"]["files"]


@pytest.fixture(scope="module")
def decoy(tmp_path_factory) -> Path:
    """Another prepared dataset, with another number of held-out files."""
    from codetune.data.prepare import prepare

    root = tmp_path_factory.mktemp("decoy")
    (root / "repo").mkdir()
    for i in range(12):
        (root / "repo" / f"d_{i}.py").write_text(DECOY_FILE.format(i=i))
    prepare([str(root / "repo")], root / "ds", prep_cfg(valid_fraction=0.1, dedup_near=False),
            progress=False)
    return root / "ds"


@pytest.fixture
def scene(tiny_run, decoy, tmp_path, monkeypatch):
    """A copy of the tiny run whose config.yaml says `data.dataset: ds` (as typed in the folder
    it trained in), and a current folder with a random name that holds a decoy `ds`."""
    run = tmp_path / f"run-{secrets.token_hex(3)}"
    shutil.copytree(tiny_run["run"], run, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    cfg = config.load(run / "config.yaml")
    cfg.data.dataset = "ds"
    config.dump(cfg, run / "config.yaml")
    here = tmp_path / f"elsewhere-{secrets.token_hex(4)}"
    here.mkdir()
    shutil.copytree(decoy, here / "ds")
    monkeypatch.chdir(here)
    ds = tiny_run["ds"].resolve()
    assert _held_out(ds) != _held_out(decoy), "the decoy must be told apart by its count"
    return SimpleNamespace(run=run, here=here, decoy=here / "ds", ds=ds, tiny=tiny_run)


def _move_dataset(scene) -> tuple[Path, Path]:
    """The run's dataset copied to a new place, and run.json's record pointed at a path that is
    gone: as if the dataset was moved after training."""
    moved = scene.here.parent / f"moved-{secrets.token_hex(3)}"
    shutil.copytree(scene.ds, moved)
    gone = scene.here.parent / f"gone-{secrets.token_hex(3)}"
    rec = json.loads((scene.run / "run.json").read_text())
    rec["dataset"]["path"] = str(gone)
    (scene.run / "run.json").write_text(json.dumps(rec))
    return moved, gone


def _one_line_naming(said: str, *paths) -> None:
    """`said` (a CLI's stderr: its error line; or a description) is one line naming `paths`."""
    assert "Traceback" not in said
    errors = [line for line in said.splitlines() if line.startswith("error:")]
    line = errors[0] if "error:" in said else said
    assert len(errors) <= 1 and line.strip() and "\n" not in line.strip(), said
    for p in paths:
        assert str(p) in line, (p, said)


EVAL = ["-q", "-s", "eval.bpb=false", "-s", "eval.max_tasks=2",
        "-s", "eval.max_new_tokens_single=4", "-s", "eval.max_new_tokens_multi=4"]


def test_eval_from_another_folder_scores_the_runs_own_dataset(scene, capsys):
    out = scene.here / "report"
    assert main(["eval", str(scene.run), "-o", str(out), *EVAL]) == 0
    doc = json.loads((out / "eval.json").read_text())
    assert doc["dataset"] == str(scene.ds)
    assert doc["files"] == _held_out(scene.ds) != _held_out(scene.decoy)
    assert doc["dataset_instead_of"] == ""


def test_a_moved_dataset_is_refused_by_name_and_found_again_by_hash(scene, capsys):
    moved, gone = _move_dataset(scene)
    capsys.readouterr()
    out = scene.here / "report"
    assert main(["eval", str(scene.run), "-o", str(out), *EVAL]) == 2
    _one_line_naming(capsys.readouterr().err, gone, scene.decoy, "--dataset NEWPATH")
    assert not out.exists()  # nothing scored, nothing written
    # the moved copy, named: the same content hash, so the run's own (no override reported)
    assert main(["eval", str(scene.run), "-o", str(out), "--dataset", str(moved), *EVAL]) == 0
    doc = json.loads((out / "eval.json").read_text())
    assert (doc["dataset"], doc["dataset_instead_of"]) == (str(moved.resolve()), "")
    assert doc["files"] == _held_out(scene.ds)
    # other data, named: scored, and the report says instead of what
    assert main(["eval", str(scene.run), "-o", str(out), "--dataset", "ds", *EVAL]) == 0
    doc = json.loads((out / "eval.json").read_text())
    assert doc["files"] == _held_out(scene.decoy) and doc["dataset"] == str(scene.decoy)
    assert str(gone) in doc["dataset_instead_of"]
    report = (out / "report.md").read_text()
    assert "instead of the run's own" in report and str(gone) in report


def test_export_and_merge_probe_the_runs_own_held_out_code(scene):
    from codetune.export import source
    from codetune.infer.probe import probe_texts
    from codetune.merge import _probe_inputs
    from codetune.model.load import load_tokenizer

    src = source.resolve(scene.run)
    probe = probe_texts(src.run_dir, 4, src.cfg)  # what export checks a GGUF file on
    assert probe.where == f"{min(4, _held_out(scene.ds))} held-out files of {scene.ds}"
    assert probe.held_out and all("handle_" in t for t in probe.texts)  # not the decoy's
    loaded = SimpleNamespace(run_dir=scene.run, tokenizer=load_tokenizer(str(scene.run)))
    assert _probe_inputs(loaded)[1].endswith("held-out inputs")
    # moved, with a decoy here: neither probes the decoy; both say why, naming both paths
    _, gone = _move_dataset(scene)
    src = source.resolve(scene.run)
    probe = probe_texts(src.run_dir, 4, src.cfg)
    assert "built-in code snippets" in probe.where and not probe.held_out
    assert not any("decoy_" in t for t in probe.texts)
    _one_line_naming(probe.where, gone, scene.decoy)
    _, said = _probe_inputs(loaded)
    assert said.startswith("token ids")
    _one_line_naming(said, gone, scene.decoy)


def test_serve_context_never_comes_from_a_decoy(scene, caplog):
    from codetune.serve.context import open_context

    with caplog.at_level("WARNING", logger="codetune.serve"):
        open_context(str(scene.run), None, 256)
    assert not caplog.records  # the recorded dataset, found and matching
    _, gone = _move_dataset(scene)
    with caplog.at_level("WARNING", logger="codetune.serve"):
        assert open_context(str(scene.run), None, 256) is None
    _one_line_naming(caplog.records[-1].getMessage(), gone, scene.decoy)


@pytest.mark.slow
def test_resume_from_another_folder_trains_on_the_runs_own_dataset(scene, capsys):
    shutil.copytree(scene.tiny["run"] / "checkpoints", scene.run / "checkpoints")
    before = {f: (scene.run / f).read_bytes() for f in ("config.yaml", "run.json")}
    record = json.loads(before["run.json"])["dataset"]
    steps = config.load(scene.run / "config.yaml").train.max_steps + 2
    # moved, with a decoy here: refused in one line naming both, the run untouched
    moved, gone = _move_dataset(scene)
    moved_before = (scene.run / "run.json").read_bytes()
    assert main(["train", "-o", str(scene.run), "--resume", "-q",
                 f"train.max_steps={steps}"]) == 2
    _one_line_naming(capsys.readouterr().err, gone, scene.decoy)
    assert (scene.run / "run.json").read_bytes() == moved_before
    assert (scene.run / "config.yaml").read_bytes() == before["config.yaml"]
    # the decoy named: other data, refused without --force
    assert main(["train", "-o", str(scene.run), "--resume", "-q", "--dataset",
                 str(scene.decoy), f"train.max_steps={steps}"]) == 2
    assert "--force" in capsys.readouterr().err
    # the moved copy named: the same content, so the same run; run.json records its new place
    assert main(["train", "-o", str(scene.run), "--resume", "-q", "--dataset", str(moved),
                 f"train.max_steps={steps}"]) == 0
    rec = json.loads((scene.run / "run.json").read_text())["dataset"]
    assert rec == {"path": str(moved.resolve()), "content_hash": record["content_hash"]}
    assert (scene.run / "checkpoints" / f"checkpoint-{steps}").is_dir()
    # and put back where it was: resumed from the decoy's folder, on the recorded dataset
    (scene.run / "run.json").write_bytes(before["run.json"])
    assert main(["train", "-o", str(scene.run), "--resume", "-q",
                 f"train.max_steps={steps + 2}"]) == 0
    assert json.loads((scene.run / "run.json").read_text())["dataset"] == record
    assert config.load(scene.run / "config.yaml").data.dataset == str(moved)  # as typed


def _run_dir(tmp_path: Path, dataset: dict | None) -> Path:
    run = tmp_path / f"r-{secrets.token_hex(3)}"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"dataset": dataset} if dataset else {}))
    return run


def test_run_dataset_rules(scene, tmp_path):
    ident = store.dataset_identity(scene.ds)
    decoy_hash = store.dataset_identity(scene.decoy)["content_hash"]
    said: list[str] = []
    # recorded and there: the decoy here is never looked at
    found = store.run_dataset(_run_dir(tmp_path, ident), "ds", warn=said.append)
    assert (found.path, found.overridden, said) == (str(scene.ds), False, [])
    # recorded path now holds other content: refused, both hashes named
    changed = dict(ident, path=str(scene.decoy))
    run = _run_dir(tmp_path, changed)
    with pytest.raises(CodetuneError, match=decoy_hash) as e:
        store.run_dataset(run, "ds")
    assert ident["content_hash"] in str(e.value) and "changed since" in str(e.value)
    # ... which a resume takes only with --force
    from codetune.train.rundir import resume_dataset

    config.dump(config.load(None, ["data.dataset=ds"]), run / "config.yaml")
    with pytest.raises(CodetuneError, match="changed since"):
        resume_dataset(run, "ds", force=False)
    assert resume_dataset(run, "ds", force=True) == str(scene.decoy)
    # gone, and the same content here (the project moved): taken, with a note
    gone = dict(ident, path=str(tmp_path / f"gone-{secrets.token_hex(3)}"))
    (scene.here / "same").symlink_to(scene.ds)
    found = store.run_dataset(_run_dir(tmp_path, gone), "same", warn=said.append)
    assert found.path == str(scene.ds) and "the same content" in said[-1]
    # an old run with no absolute path: relative to here, but checked by hash
    old = {"path": "ds", "content_hash": ident["content_hash"]}
    with pytest.raises(CodetuneError, match="not the dataset"):
        store.run_dataset(_run_dir(tmp_path, old), "ds")
    assert store.run_dataset(_run_dir(tmp_path, old), "same").path == str(scene.ds)
    # ... and one with no hash either: used, with a warning
    found = store.run_dataset(_run_dir(tmp_path, None), "ds", warn=said.append)
    assert found.path == str(scene.decoy) and "no content hash" in said[-1]
