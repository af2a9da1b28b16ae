"""`--resume` semantics: a finished run is left alone, overrides go on top of the run's own
config, and a damaged checkpoint record falls back to the previous checkpoint."""

from __future__ import annotations

import hashlib
import json
import random
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


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["deep", "digits"])
def test_a_record_nested_too_deep_or_with_a_huge_integer_is_corrupt(run, tmp_path, kind,
                                                                   capsys):
    """json.loads raises RecursionError past its nesting limit and ValueError past Python's
    4300-digit integer limit: either used to escape as a traceback. Now the checkpoint is
    corrupt like any other: skipped, and the run resumes from the one before."""
    rng = random.Random()
    depth, digits = rng.randint(100_000, 400_000), rng.randint(4_301, 60_000)
    huge = str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=digits - 1))
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "adapter_model.safetensors").unlink()  # killed before the final save
    newest = checkpoints.latest(copy / "checkpoints")
    marker = newest / checkpoints.MARKER
    marker.write_text(
        _nested(depth) if kind == "deep" else
        '{"files": {"adapter_model.safetensors": {"bytes": ' + huge + ', "sha256": "0"}}}')
    assert checkpoints.verify(newest) == "unreadable completion record", (depth, digits)
    assert main(["train", "-o", str(copy), "--resume", "-q"]) == 0
    assert f"skipping {newest.name}: unreadable completion record" in capsys.readouterr().err
    assert checkpoints.verify(newest) is None  # saved again, whole
    # an integer short enough to parse, but no file size: the wrong shape, not a long warning
    rec = json.loads((newest / checkpoints.MARKER).read_text())
    name = sorted(rec["files"])[0]
    rec["files"][name]["bytes"] = int(huge[:rng.randint(20, 4_300)])
    (newest / checkpoints.MARKER).write_text(json.dumps(rec))
    assert checkpoints.verify(newest) == "completion record of the wrong shape"


def _without(checkpoint: Path, name: str) -> None:
    """`checkpoint` sealed again without `name`: complete by its record, but partial."""
    (checkpoint / name).unlink()
    rec = json.loads((checkpoint / checkpoints.MARKER).read_text())
    checkpoints.seal(checkpoint, {k: v for k, v in rec.items() if k != "files"})
    assert checkpoints.verify(checkpoint) is None


STATE_FILES = ["optimizer.pt", "scheduler.pt", "rng_state.pth"]


@pytest.mark.parametrize("name", STATE_FILES)
def test_an_older_whole_checkpoint_beats_a_newer_partial_one(run, tmp_path, name, capsys):
    root = tmp_path / "checkpoints"
    shutil.copytree(run / "checkpoints", root)
    _without(root / "checkpoint-4", name)
    assert checkpoints.for_resume(root) == (root / "checkpoint-2", [])
    err = capsys.readouterr().err
    assert f"skipping checkpoint-4: it lacks {name}" in err and "checkpoint-2" in err
    _without(root / "checkpoint-2", name)  # none whole: the newest, and what it lacks
    assert checkpoints.for_resume(root) == (root / "checkpoint-4", [name])


@pytest.mark.slow
@pytest.mark.parametrize("name", STATE_FILES)
def test_resume_without_optimizer_scheduler_or_rng_state_warns_and_keeps_the_rest(
        run, tmp_path, name, capsys):
    """The Trainer used to resume silently with a fresh optimizer *and* a schedule restarted
    at step 0 when either file was missing. Now it says what is lost, keeps what is there,
    and puts the schedule at the checkpoint's step."""
    import torch

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for ck in (copy / "checkpoints").iterdir():
        _without(ck, name)
    assert main(["train", "-o", str(copy), "--resume", "-q", "train.max_steps=6"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "exact" in line]
    assert len(warning) == 1 and f"from checkpoint-4 without {name}" in warning[0]
    saved = copy / "checkpoints" / "checkpoint-6"
    assert torch.load(saved / "scheduler.pt", weights_only=True)["last_epoch"] == 6
    opt = torch.load(saved / "optimizer.pt", weights_only=True)["state"]
    steps = {int(s["step"]) for s in opt.values()}
    assert steps == ({2} if name == "optimizer.pt" else {6})  # fresh only when it was lost


@pytest.mark.slow
@pytest.mark.parametrize("where", ["model load", "optimizer load", "rng load", "first batch"])
def test_a_failed_resume_leaves_config_and_run_json_as_they_were(run, tmp_path, monkeypatch,
                                                                 where):
    from transformers import Trainer

    from codetune.model import load as M

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {f: (copy / f).read_bytes() for f in ("config.yaml", "run.json")}
    tag = f"crash-{random.randrange(10**9)}"

    def boom(*args, **kwargs):
        raise RuntimeError(tag)

    target = {"model load": (M, "load_model"),
              "optimizer load": (Trainer, "_load_optimizer_and_scheduler"),
              "rng load": (Trainer, "_load_rng_state"),
              "first batch": (Trainer, "get_batch_samples")}[where]
    monkeypatch.setattr(*target, boom)
    with pytest.raises(RuntimeError, match=tag):
        main(["train", "-o", str(copy), "--resume", "-q", "train.max_steps=6"])
    assert {f: (copy / f).read_bytes() for f in before} == before
    monkeypatch.undo()  # and the same resume, not failing, does write them
    assert main(["train", "-o", str(copy), "--resume", "-q", "train.max_steps=6"]) == 0
    assert config.load(copy / "config.yaml").train.max_steps == 6
