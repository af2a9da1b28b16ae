"""Nothing lost: which folders codetune may replace, and how every command fails on bad input
without touching what was there (the cases a hostile try found)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from codetune import config, outputs
from codetune.cli import main
from codetune.data.prepare import prepare
from codetune.errors import CodetuneError
from codetune.train.trainer import train

from .conftest import prep_cfg


def _tree(path: Path) -> dict[str, str]:
    """Every file under `path` with the sha256 of its bytes: to prove nothing changed."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _repo(path: Path, n: int = 12) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (path / f"mod_{i}.py").write_text(f"def f_{i}(x):\n    return x * {i} + {i * 7}\n"
                                          f"\n\nclass C{i}:\n    value = {i}\n")
    return path


def _run_cfg(tiny_run, **over):
    items = {"model.name": str(tiny_run["base"]), "data.dataset": str(tiny_run["ds"]),
             "model.quantization": "none", "model.dtype": "float32", "data.seq_length": 64,
             "data.max_eval_sequences": 2, "train.batch_size": 2, "train.max_steps": 2,
             "train.save_steps": 2, "train.eval_steps": 0, "train.logging_steps": 1,
             "train.report_to": "none"}
    items.update(over)
    return config.load(None, [f"{k}={v}" for k, v in items.items()])


@pytest.fixture(scope="module")
def finished_run(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "run"
    train(_run_cfg(tiny_run), out, progress=False)
    return out


# --------------------------------------------------------------------------- recognising ours


def test_a_file_named_like_ours_is_not_enough(tmp_path, tiny_run, finished_run):
    webapp = tmp_path / "webapp"
    webapp.mkdir()
    (webapp / "manifest.json").write_text(json.dumps({"name": "Shop", "start_url": "/"}))
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    (experiment / "run.json").write_text(json.dumps({"lr": 0.1, "base_model": "mine"}))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "run.json").write_text("[1, 2")
    assert outputs.kind_of(webapp) is None
    assert outputs.kind_of(experiment) is None
    assert outputs.kind_of(garbage) is None
    assert outputs.kind_of(tiny_run["ds"]) == "dataset"
    assert outputs.kind_of(finished_run) == "run"


def test_runs_written_before_the_format_field_are_still_ours(tmp_path, finished_run):
    old = tmp_path / "old_run"
    shutil.copytree(finished_run, old)
    rec = json.loads((old / "run.json").read_text())
    del rec["format"]
    (old / "run.json").write_text(json.dumps(rec))
    assert outputs.kind_of(old) == "run"


def test_prepare_overwrite_refuses_a_web_app_with_a_manifest(tmp_path):
    webapp = tmp_path / "webapp"
    (webapp / "static").mkdir(parents=True)
    (webapp / "manifest.json").write_text(json.dumps({"name": "Shop", "icons": []}))
    (webapp / "static" / "app.js").write_text("console.log('shop')\n")
    before = _tree(webapp)
    with pytest.raises(CodetuneError, match="not a codetune dataset.*even with --overwrite"):
        prepare([str(_repo(tmp_path / "repo"))], webapp, prep_cfg(), overwrite=True,
                progress=False)
    assert _tree(webapp) == before


def test_train_overwrite_refuses_an_experiment_with_its_own_run_json(tmp_path, tiny_run):
    exp = tmp_path / "experiment"
    exp.mkdir()
    (exp / "run.json").write_text(json.dumps({"seed": 1, "notes": "three weeks of sweeps"}))
    (exp / "results.csv").write_text("lr,loss\n0.1,2.3\n")
    before = _tree(exp)
    with pytest.raises(CodetuneError, match="not a codetune run folder"):
        train(_run_cfg(tiny_run), exp, overwrite=True, progress=False)
    assert _tree(exp) == before


def test_overwrite_on_a_symlink_is_refused_with_one_line(tmp_path, tiny_run, finished_run,
                                                        capsys):
    link = tmp_path / "latest"
    link.symlink_to(finished_run)
    before = _tree(finished_run)
    assert main(["train", "-o", str(link), "--overwrite", "--model", str(tiny_run["base"]),
                 "--dataset", str(tiny_run["ds"]), "train.max_steps=1"]) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and "Traceback" not in err and len(err.splitlines()) == 1
    ds_link = tmp_path / "ds-link"
    ds_link.symlink_to(tiny_run["ds"])
    assert main(["prepare", str(_repo(tmp_path / "repo")), "-o", str(ds_link),
                 "--overwrite", "-q"]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert _tree(finished_run) == before and link.is_symlink() and ds_link.is_symlink()


def test_prepare_skips_codetune_outputs_inside_the_source(tmp_path):
    """prepare never writes into a source, but a dataset moved or copied into one later is
    codetune's output, not code: it is skipped as a whole."""
    src = _repo(tmp_path / "src")
    prepare([str(src)], tmp_path / "ds", prep_cfg(valid_fraction=0.0), progress=False)
    shutil.move(tmp_path / "ds", src / "ds")
    prepare([str(src)], tmp_path / "ds2", prep_cfg(valid_fraction=0.0), progress=False)
    shutil.move(tmp_path / "ds2", src / "ds2")
    out = src / "ds2"
    import pyarrow.parquet as pq

    paths = {p for f in (out / "data").glob("*.parquet")
             for p in pq.read_table(f, columns=["path"]).column("path").to_pylist()}
    assert paths == {f"mod_{i}.py" for i in range(12)}
    dropped = [json.loads(x) for x in (out / "dropped.jsonl").read_text().splitlines()]
    assert {(d["path"], d["reason"]) for d in dropped} == {("ds/", "codetune_output")}

    # the same inside a git work tree where the earlier dataset was committed by mistake
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run(["git", "-C", str(src), "add", "-A"], check=True)
    out3 = tmp_path / "ds3"
    prepare([str(src)], out3, prep_cfg(valid_fraction=0.0), progress=False)
    reasons = {json.loads(x)["path"]: json.loads(x)["reason"]
               for x in (out3 / "dropped.jsonl").read_text().splitlines()}
    assert reasons.get("ds/") == "codetune_output" and reasons.get("ds2/") == "codetune_output"
    assert not any(p.startswith(("ds/", "ds2/")) for p in reasons if p not in ("ds/", "ds2/"))


# --------------------------------------------------------------------------- --overwrite order


@pytest.mark.parametrize("typo", ["data.dataset", "model.name"])
def test_train_overwrite_with_a_typo_keeps_the_old_run(tmp_path, tiny_run, finished_run, typo):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = _tree(run)
    bad = {typo: str(tmp_path / "no-such-thing")}
    with pytest.raises(CodetuneError):
        train(_run_cfg(tiny_run, **bad), run, overwrite=True, progress=False)
    assert _tree(run) == before
    assert not [p for p in tmp_path.iterdir() if outputs.is_partial(p.name)]


@pytest.mark.slow
def test_train_overwrite_replaces_the_old_run_only_when_done(tmp_path, tiny_run, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "logs").mkdir(exist_ok=True)  # a folder of the run's own: replaced with it
    (run / "logs" / "old-marker.txt").write_text("old")
    train(_run_cfg(tiny_run, **{"train.max_steps": 1, "train.save_steps": 1}), run,
          overwrite=True, progress=False)
    assert not (run / "logs" / "old-marker.txt").exists()
    assert (run / "adapter_config.json").is_file()
    assert json.loads((run / "checkpoints" / "checkpoint-1" / "trainer_state.json")
                      .read_text())["global_step"] == 1
    assert not [p for p in tmp_path.iterdir() if outputs.is_partial(p.name)]


def test_a_failed_train_leaves_no_run_that_looks_started(tmp_path, tiny_run, finished_run,
                                                         monkeypatch):
    """A failure after the folder was made and before the first checkpoint: the new folder is
    removed and, with --overwrite, the old run is put back."""
    import transformers

    def boom(self, *a, **k):
        raise CodetuneError("out of GPU memory (simulated)")

    monkeypatch.setattr(transformers.Trainer, "train", boom)
    fresh = tmp_path / "fresh"
    with pytest.raises(CodetuneError, match="simulated"):
        train(_run_cfg(tiny_run), fresh, progress=False)
    assert not fresh.exists()
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = _tree(run)
    with pytest.raises(CodetuneError, match="simulated"):
        train(_run_cfg(tiny_run), run, overwrite=True, progress=False)
    assert _tree(run) == before
    assert not [p for p in tmp_path.iterdir() if outputs.is_partial(p.name)]


def test_demo_refuses_a_foreign_folder_and_needs_overwrite_for_its_own(tmp_path):
    from codetune import demo

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(CodetuneError, match="not a codetune demo folder"):
        demo.run_demo(str(demo.sample_path()), steps=1, out=precious, overwrite=True,
                      progress=False, echo=lambda s: None)
    assert (precious / "thesis.tex").read_text() == "years of work"
    earlier = tmp_path / "codetune-demo"
    earlier.mkdir()
    outputs.write_json(earlier / "demo.json", {**outputs.mark("demo"), "complete": False})
    with pytest.raises(CodetuneError, match="--overwrite"):
        demo.run_demo(str(demo.sample_path()), steps=1, out=earlier, progress=False,
                      echo=lambda s: None)


# --------------------------------------------------------------------------- one line, exit 2


@contextlib.contextmanager
def _read_only(folder: Path):
    """Make `folder` unwritable, even for root (CI runs as root, which ignores mode bits):
    mode bits for a normal user; else a read-only tmpfs mounted over it, or the immutable
    attribute. Falls back to refusing mkdir/open-for-write under it if the machine allows
    none of these."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "none", str(folder)],
                      capture_output=True).returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["umount", str(folder)], check=True)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if Path(self).absolute().is_relative_to(folder.absolute()):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "mkdir", mkdir)
        yield


def test_unwritable_output_parent_is_one_line_for_every_command(tmp_path, tiny_run,
                                                                finished_run, capsys):
    ro = tmp_path / "ro"
    src = _repo(tmp_path / "repo")
    commands = {
        "prepare": ["prepare", str(src), "-o", str(ro / "ds"), "-q"],
        "train": ["train", "--model", str(tiny_run["base"]), "--dataset", str(tiny_run["ds"]),
                  "-o", str(ro / "run"), "-q", "model.quantization=none",
                  "model.dtype=float32", "data.seq_length=64", "train.max_steps=1"],
        "merge": ["merge", str(finished_run), "-o", str(ro / "merged")],
        "eval": ["eval", str(finished_run), "-o", str(ro / "eval"), "-q",
                 "-s", "eval.max_files=1", "-s", "eval.bpb=false"],
    }
    with _read_only(ro):
        for name, argv in commands.items():
            assert main(argv) == 2, name
            err = capsys.readouterr().err
            last = err.strip().splitlines()[-1]  # after any loading bars
            assert last.startswith("error: ") and "Traceback" not in err, (name, err)
            assert str(ro) in last and "-o" in last, (name, err)
    assert not list(ro.iterdir())


@pytest.fixture
def damaged_ds(tmp_path, tiny_run) -> dict[str, Path]:
    """Copies of the tiny dataset with one shard truncated, and one corrupted in place."""
    out = {}
    for kind in ("truncated", "corrupt"):
        ds = tmp_path / kind
        shutil.copytree(tiny_run["ds"], ds)
        shard = sorted((ds / "data").glob("train-*.parquet"))[0]
        data = bytearray(shard.read_bytes())
        if kind == "truncated":
            shard.write_bytes(data[: len(data) // 2])
        else:  # same size, so only reading it can tell: flip the bytes of the data pages
            for i in range(8, len(data) // 2):
                data[i] ^= 0x5A
            shard.write_bytes(data)
            # an older manifest without shard sizes: the damage shows at read time
            man = json.loads((ds / "manifest.json").read_text())
            man.pop("shard_bytes", None)
            (ds / "manifest.json").write_text(json.dumps(man))
        out[kind] = ds
    return out


@pytest.mark.parametrize("kind", ["truncated", "corrupt"])
def test_a_damaged_shard_is_one_line_naming_the_file(kind, damaged_ds, tiny_run, tmp_path,
                                                     capsys):
    ds = damaged_ds[kind]
    commands = [
        ["stats", str(ds)],
        ["train", "--model", str(tiny_run["base"]), "--dataset", str(ds), "-o",
         str(tmp_path / "run"), "-q", "model.quantization=none", "model.dtype=float32",
         "data.seq_length=64", "train.max_steps=2", "train.eval_steps=0"],
        ["preview", str(ds), "--tokenizer", str(tiny_run["tok"]), "-n", "1"],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and "train-00000" in err, (argv, err)
        assert "codetune prepare" in err, err
    assert not (tmp_path / "run").exists()  # a failed train leaves nothing that looks started


def test_commands_on_a_run_killed_before_its_first_checkpoint(tmp_path, finished_run, capsys):
    """run.json and config.yaml, no weights, no tokenizer: every command says to resume it
    (it used to say "install sentencepiece or tiktoken")."""
    killed = tmp_path / "killed"
    killed.mkdir()
    for f in ("run.json", "config.yaml"):
        shutil.copy(finished_run / f, killed / f)
    for argv in (["eval", str(killed), "-q"], ["merge", str(killed), "-o", str(tmp_path / "m")],
                 ["complete", str(killed), "--prefix", "def "],
                 ["serve", str(killed), "--port", "0"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and "sentencepiece" not in err, (argv, err)
        assert err.splitlines()[-1].startswith("error: ") and "--resume" in err, (argv, err)
    assert not (tmp_path / "m").exists() and not (killed / "eval").exists()


def test_eval_replaces_its_own_report_and_refuses_a_foreign_folder(tmp_path, finished_run,
                                                                  tiny_run, capsys):
    args = ["-q", "-s", "eval.max_files=2", "-s", "eval.bpb=false", "-s", "eval.max_tasks=2",
            "-s", "eval.bootstrap=10"]
    out = tmp_path / "report"
    assert main(["eval", str(finished_run), "-o", str(out), *args]) == 0
    assert outputs.kind_of(out) == "eval"
    before = out.stat().st_ino
    assert main(["eval", str(finished_run), "-o", str(out), *args]) == 0
    assert out.stat().st_ino != before and (out / "report.md").is_file()  # a new folder
    (out / "notes.txt").write_text("mine, beside the report")  # not codetune's: refused
    assert main(["eval", str(finished_run), "-o", str(out), *args]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine, beside the report"
    (out / "notes.txt").unlink()
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.md").write_text("mine")
    assert main(["eval", str(finished_run), "-o", str(foreign), *args]) == 2
    assert "not a codetune evaluation report" in capsys.readouterr().err
    assert (foreign / "todo.md").read_text() == "mine"
    # a damaged held-out shard: one line, before any model is loaded
    bad = tmp_path / "ds"
    shutil.copytree(tiny_run["ds"], bad)
    val = sorted((bad / "data").glob("validation-*.parquet"))[0]
    val.write_bytes(val.read_bytes()[:100])
    assert main(["eval", str(finished_run), "--dataset", str(bad), "-o",
                 str(tmp_path / "r2"), *args]) == 2
    err = capsys.readouterr().err
    assert "validation-00000" in err and "codetune prepare" in err and "Traceback" not in err
