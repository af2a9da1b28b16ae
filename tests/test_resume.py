"""`--resume` semantics: a finished run is left alone, overrides go on top of the run's own
config, and a damaged checkpoint record falls back to the previous checkpoint."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from codetune import config
from codetune.cli import main
from codetune.errors import CodetuneError
from codetune.train import checkpoints
from codetune.train.rundir import resume_config
from codetune.train.trainer import train


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Path:
    """A finished 4-step run with settings that differ from every default."""
    items = {"model.name": str(tiny_run["base"]), "data.dataset": str(tiny_run["ds"]),
             "model.quantization": "none", "model.dtype": "float32", "data.seq_length": 64,
             "data.max_eval_sequences": 2, "train.batch_size": 2, "train.max_steps": 4,
             "train.save_steps": 2, "train.warmup_steps": 1, "train.eval_steps": 0,
             "train.logging_steps": 1, "train.lr_scheduler": "constant",
             "train.report_to": "none"}
    out = tmp_path_factory.mktemp("resume") / "run"
    train(config.load(None, [f"{k}={v}" for k, v in items.items()]), out, progress=False)
    return out


def test_resume_of_a_finished_run_trains_nothing(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = _digest(copy / "adapter_model.safetensors")
    ckpts = sorted(p.name for p in (copy / "checkpoints").iterdir())
    assert main(["train", "-o", str(copy), "--resume", "-q"]) == 0
    err = capsys.readouterr().err
    assert "finished at step 4" in err and "train.max_steps" in err
    assert _digest(copy / "adapter_model.safetensors") == before
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ckpts


def test_resume_starts_from_the_runs_own_config(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = resume_config(copy, ["train.max_steps=6"])
    assert (cfg.train.batch_size, cfg.train.warmup_steps, cfg.train.save_steps) == (2, 1, 2)
    assert cfg.train.max_steps == 6 and cfg.data.seq_length == 64
    assert "train.max_steps: 4 -> 6" in capsys.readouterr().err
    # continuing a finished run by raising max_steps trains exactly the extra steps
    assert main(["train", "-o", str(copy), "--resume", "-q", "train.max_steps=6"]) == 0
    state = json.loads((copy / "checkpoints" / "checkpoint-6" / "trainer_state.json")
                       .read_text())
    assert state["global_step"] == 6
    saved = config.load(copy / "config.yaml")
    assert (saved.train.batch_size, saved.train.warmup_steps, saved.train.max_steps) == (2, 1, 6)


def test_resume_refuses_overrides_that_break_exact_resume(run, capsys):
    before = (run / "config.yaml").read_text()
    with pytest.raises(CodetuneError, match="data.seq_length.*--force"):
        resume_config(run, ["data.seq_length=256", "train.max_steps=42"])
    with pytest.raises(CodetuneError, match="train.batch_size"):
        resume_config(run, ["train.batch_size=16"])
    assert resume_config(run, ["train.batch_size=16"], force=True).train.batch_size == 16
    assert main(["train", "-o", str(run), "--resume", "data.seq_length=256"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == before


def test_resume_of_a_missing_run_says_there_is_none(tmp_path, capsys):
    assert main(["train", "-o", str(tmp_path / "nope"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no run to resume" in err and "config.yaml does not exist" not in err
    assert main(["train", "recipe.yaml", "-o", str(tmp_path / "nope"), "--resume"]) == 2
    assert "no run to resume" in capsys.readouterr().err


@pytest.mark.parametrize("record", [
    {"files": []},
    [1, 2],
    {"files": {"adapter_model.safetensors": {"bytes": "12", "sha256": 1}}},
    {"files": {"../../escape": {"bytes": 1, "sha256": "00"}}},
])
def test_a_completion_record_of_the_wrong_shape_is_skipped(run, tmp_path, record, capsys):
    root = tmp_path / "checkpoints"
    shutil.copytree(run / "checkpoints", root)
    newest = checkpoints.latest(root)
    (newest / checkpoints.MARKER).write_text(json.dumps(record))
    fallback = checkpoints.latest(root)
    assert fallback is not None and fallback != newest
    assert checkpoints.step_of(fallback) < checkpoints.step_of(newest)
    assert "wrong shape" in capsys.readouterr().err


def test_an_unlisted_corrupt_file_is_not_trusted(run, tmp_path, capsys):
    """`{"files": {}}` used to pass the check; then a corrupted optimizer.pt failed to unpickle
    deep inside the Trainer. Every file must be listed and sealed."""
    root = tmp_path / "checkpoints"
    shutil.copytree(run / "checkpoints", root)
    newest = checkpoints.latest(root)
    (newest / checkpoints.MARKER).write_text(json.dumps({"files": {}}))
    (newest / "optimizer.pt").write_bytes(b"not a pickle")
    assert checkpoints.verify(newest) is not None
    assert checkpoints.latest(root) != newest
    # and listed-but-altered, with a record of the right shape, is caught by its checksum
    rec = {"files": {str(p.relative_to(newest)): {"bytes": p.stat().st_size, "sha256": "0" * 64}
                     for p in newest.rglob("*") if p.is_file() and p.name != checkpoints.MARKER}}
    (newest / checkpoints.MARKER).write_text(json.dumps(rec))
    assert "checksum" in checkpoints.verify(newest)


def test_resume_falls_back_past_a_bad_record_and_finishes(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "adapter_model.safetensors").unlink()  # as if killed before the final save
    newest = checkpoints.latest(copy / "checkpoints")
    (newest / checkpoints.MARKER).write_text(json.dumps({"files": []}))
    assert main(["train", "-o", str(copy), "--resume", "-q"]) == 0
    assert "skipping checkpoint-4" in capsys.readouterr().err
    assert (copy / "adapter_model.safetensors").is_file()
    assert checkpoints.verify(copy / "checkpoints" / "checkpoint-4") is None  # re-saved whole


def test_killed_after_the_last_checkpoint_resumes_without_an_extra_step(run, tmp_path):
    """The Trainer, resumed at step == max_steps, used to train one step more and change the
    adapter. Now the final weights are the last checkpoint's, and no checkpoint-5 appears."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    last = copy / "checkpoints" / "checkpoint-4"
    (copy / "adapter_model.safetensors").unlink()
    (copy / "metrics.json").unlink()
    assert main(["train", "-o", str(copy), "--resume", "-q"]) == 0
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["checkpoint-2",
                                                                         "checkpoint-4"]
    assert _digest(copy / "adapter_model.safetensors") == _digest(
        last / "adapter_model.safetensors")
    assert json.loads((copy / "metrics.json").read_text())["summary"]["steps"] == 4
