"""Nothing lost, nothing written outside: every output folder is checked against the command's
inputs and against files codetune did not write, and every export name stays inside OUT.
Names and layouts are generated in the tests (the classes, not one quoted example)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import socket
import string
import subprocess
from pathlib import Path

import pytest

from codetune import outputs
from codetune.cli import main
from codetune.data.prepare import prepare
from codetune.errors import CodetuneError
from codetune.export.pipeline import check_name, default_name

from .conftest import prep_cfg


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and ".git/" not in str(p)}


def _name(rng: random.Random, n: int = 8) -> str:
    return rng.choice(string.ascii_lowercase) + "".join(
        rng.choice(string.ascii_lowercase + string.digits + "_-") for _ in range(n - 1))


def _git_repo(path: Path, rng: random.Random, files: int = 6) -> Path:
    path.mkdir(parents=True)
    for i in range(files):
        (path / f"{_name(rng)}_{i}.py").write_text(
            f"def f_{i}(x):\n    return x * {rng.randint(2, 99)}\n\n\nVALUE_{i} = {i}\n")
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.email=t@t", "-c", "user.name=t",
                    "commit", "-qm", "init"], check=True)
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("error: "), err
    return last


# --------------------------------------------------------------------------- inputs vs output


@pytest.mark.parametrize("seed", range(3))
def test_prepare_never_writes_over_around_or_into_a_source(tmp_path, capsys, seed):
    rng = random.Random(seed)
    ds = tmp_path / _name(rng)
    prepare([str(_git_repo(tmp_path / "first", rng))], ds, prep_cfg(), progress=False)
    # a repository somewhere inside the earlier dataset, at a generated depth
    inner = ds.joinpath(*[_name(rng) for _ in range(rng.randint(1, 3))])
    src = _git_repo(inner, rng)
    before_src, before_ds = _tree(src), _tree(ds)
    assert main(["prepare", str(src), "-o", str(ds), "--overwrite", "-q"]) == 2
    assert "holds the source" in _one_error_line(capsys)
    assert _tree(src) == before_src and _tree(ds) == before_ds

    # the other way round: an output inside the source, or the source itself
    other = _git_repo(tmp_path / _name(rng), rng)
    before = _tree(other)
    for out in (other / _name(rng), other / _name(rng) / _name(rng), other):
        assert main(["prepare", str(other), "-o", str(out), "--overwrite", "-q"]) == 2
        assert "-o folder outside" in _one_error_line(capsys)
    assert _tree(other) == before
    assert not [p for p in other.iterdir() if p.is_dir() and p.name != ".git"]
    # the same through a file:// URL and a URL#ref form
    for spec in (other.as_uri(), f"{other}#HEAD"):
        assert main(["prepare", spec, "-o", str(other / "ds"), "-q"]) == 2
        _one_error_line(capsys)
    assert not (other / "ds").exists()


def test_train_merge_export_and_eval_refuse_outputs_over_their_inputs(tmp_path, tiny_run,
                                                                     capsys):
    rng = random.Random(7)
    run, ds = tiny_run["run"], tiny_run["ds"]
    before_run, before_ds = _tree(run), _tree(ds)
    train_args = ["--model", str(tiny_run["base"]), "-q", "model.quantization=none",
                  "model.dtype=float32", "data.seq_length=64", "train.max_steps=1"]
    cases = {
        "train into its dataset": ["train", "--dataset", str(ds), "-o",
                                   str(ds / _name(rng)), *train_args],
        "train over its dataset's parent": ["train", "--dataset", str(ds), "-o",
                                            str(ds.parent), "--overwrite", *train_args],
        "merge into its run": ["merge", str(run), "-o", str(run / _name(rng))],
        "merge over its run": ["merge", str(run), "-o", str(run.parent), "--overwrite"],
        "export into its run": ["export", str(run), "--to", "gguf", "-o",
                                str(run / _name(rng))],
        "export over its run": ["export", str(run), "--to", "gguf", "-o", str(run.parent),
                                "--overwrite"],
        "eval into its dataset": ["eval", str(run), "-o", str(ds / _name(rng)), "-q"],
        "eval over its run": ["eval", str(run), "-o", str(run.parent), "-q"],
    }
    for what, argv in cases.items():
        assert main(argv) == 2, what
        line = _one_error_line(capsys)
        assert "output folder" in line and ("inside" in line or "holds" in line), (what, line)
    assert _tree(run) == before_run and _tree(ds) == before_ds


def test_eval_still_writes_its_report_inside_the_run(tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    assert main(["eval", str(run), "-q", "-s", "eval.max_files=1", "-s", "eval.bpb=false",
                 "-s", "eval.max_tasks=1", "-s", "eval.bootstrap=10"]) == 0
    assert outputs.kind_of(run / "eval") == "eval"


def test_the_demo_inside_a_git_checkout_reads_its_committed_files(tmp_path, monkeypatch):
    from codetune import demo

    rng = random.Random(3)
    repo = _git_repo(tmp_path / _name(rng), rng)
    out = repo / "codetune-demo"
    source, how = demo._outside(str(repo), "the current git repository", out.absolute())
    assert source == repo.resolve().as_uri() and "committed" in how
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CodetuneError, match="outside"):
        demo._outside(str(plain), "given", (plain / "x").absolute())
    assert demo._outside(str(plain), "given", tmp_path / "elsewhere") == (str(plain), "given")


# --------------------------------------------------------------------------- foreign files


def _foreign_entries(folder: Path, rng: random.Random) -> list[str]:
    names = []
    for _ in range(rng.randint(1, 3)):
        name = _name(rng) + rng.choice([".txt", ".md", "", ".py"])
        if rng.random() < 0.3:
            (folder / name).mkdir()
            (folder / name / "kept.txt").write_text(_name(rng))
            names.append(name + "/")
        else:
            (folder / name).write_text(_name(rng, 20))
            names.append(name)
    return names


@pytest.mark.parametrize("seed", range(2))
def test_overwrite_refuses_a_folder_holding_files_codetune_did_not_write(tmp_path, tiny_run,
                                                                        capsys, seed):
    rng = random.Random(100 + seed)
    ds = tmp_path / "ds"
    shutil.copytree(tiny_run["ds"], ds)
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    src = _git_repo(tmp_path / "src", rng)
    for folder, kind, argv in (
        (ds, "dataset", ["prepare", str(src), "-o", str(ds), "--overwrite", "-q"]),
        (run, "run", ["train", "--model", str(tiny_run["base"]), "--dataset",
                      str(tiny_run["ds"]), "-o", str(run), "--overwrite", "-q",
                      "model.quantization=none", "model.dtype=float32",
                      "data.seq_length=64", "train.max_steps=1"]),
    ):
        assert outputs.foreign(folder, kind) == []
        names = _foreign_entries(folder, rng)
        assert outputs.foreign(folder, kind) == sorted(names)
        before = _tree(folder)
        assert main(argv) == 2, argv
        line = _one_error_line(capsys)
        assert all(n in line for n in names) and "did not write" in line, line
        assert _tree(folder) == before


def test_every_kind_codetune_writes_is_all_its_own(tiny_run, tmp_path):
    """The names each command writes are the ones `--overwrite` may replace: a writer that
    adds a file without `outputs.OWN_NAMES` knowing would make its own output unreplaceable."""
    assert outputs.kind_of(tiny_run["ds"]) == "dataset"
    assert outputs.foreign(tiny_run["ds"], "dataset") == []
    assert outputs.foreign(tiny_run["run"], "run") == []
    # the record of what was written, in the marker, covers even names the patterns do not
    ds = tmp_path / "ds"
    shutil.copytree(tiny_run["ds"], ds)
    man = json.loads((ds / "manifest.json").read_text())
    assert set(man["written"]) == {p.name for p in tiny_run["ds"].iterdir()}
    (ds / "future-file.bin").write_text("x")
    assert outputs.foreign(ds, "dataset") == ["future-file.bin"]
    man["written"].append("future-file.bin")
    (ds / "manifest.json").write_text(json.dumps(man))
    assert outputs.foreign(ds, "dataset") == []


# --------------------------------------------------------------------------- export --name


def test_an_export_name_is_a_name_never_a_path(tmp_path):
    rng = random.Random(11)
    bad = ["..", ".", "", "a/b", "/" + _name(rng), "a\\b", "x\0y", "-x", "a..b"]
    for _ in range(40):
        depth = rng.randint(1, 4)
        bad.append("/".join([".."] * depth + [_name(rng)]))
        bad.append(str(tmp_path / _name(rng)))
        bad.append(_name(rng) + "/" + _name(rng))
        bad.append(_name(rng) + "/../../" + _name(rng))
    for name in bad:
        with pytest.raises(CodetuneError, match="not a plain name"):
            check_name(name)
    for _ in range(20):
        ok = _name(rng) + rng.choice(["", "-v1", ".q8", "_2"])
        assert check_name(ok) == ok
    assert default_name(Path("/x/my model (v2)")) == "my-model-v2"
    assert check_name(default_name(Path("/x/.."))) == "model"
    with pytest.raises(CodetuneError, match="outside"):
        outputs.inside(tmp_path, "../escape.gguf")
    with pytest.raises(CodetuneError, match="outside"):
        outputs.inside(tmp_path, str(tmp_path.parent / "abs.gguf"))
    assert outputs.inside(tmp_path, "ggml/model.gguf") == tmp_path / "ggml" / "model.gguf"


def test_export_with_a_path_as_name_writes_nothing_anywhere(tmp_path, tiny_run, capsys):
    rng = random.Random(5)
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    victim = tmp_path / f"{_name(rng)}.F16.gguf"
    victim.write_text("the user's file")
    before = _tree(tmp_path)
    for name in (f"../../{victim.name.removesuffix('.F16.gguf')}", f"../../{_name(rng)}",
                 str(tmp_path / _name(rng))):
        assert main(["export", str(tiny_run["run"]), "--to", "gguf", "-o",
                     str(work / "out"), "--name", name]) == 2
        assert "not a plain name" in _one_error_line(capsys)
    assert _tree(tmp_path) == before and victim.read_text() == "the user's file"
    assert not (work / "out").exists()


# --------------------------------------------------------------------------- one line


def test_serve_rejects_a_bad_or_busy_port_before_loading(tiny_run, capsys):
    rng = random.Random(9)
    for port in (-1, 65536, rng.randint(65537, 10**6), -rng.randint(2, 10**5)):
        assert main(["serve", str(tiny_run["run"]), "--port", str(port)]) == 2
        line = _one_error_line(capsys)
        assert f"--port {port}" in line and "65535" in line
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", str(tiny_run["run"]), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert "already in use" in err and "--port" in err and "Traceback" not in err
        assert "Loading weights" not in err  # refused before the model was loaded


def _damaged_manifests(rng: random.Random):
    """(what, manifest -> the damaged file's text)."""
    def js(f):
        return lambda m: json.dumps(f(m))

    yield "a list", js(lambda m: [m])
    yield "no splits", js(lambda m: {k: v for k, v in m.items() if k != "splits"})
    yield "version as text", js(lambda m: {**m, "version": str(rng.randint(2, 99))})
    yield "splits as a list", js(lambda m: {**m, "splits": list(m["splits"])})
    yield "shards not a list", js(lambda m: {**m, "splits": {"train": {"shards": _name(rng)}}})
    yield "a path as shard", js(lambda m: {**m, "splits": {"train": {"shards": [
        "../" * rng.randint(1, 4) + _name(rng) + ".parquet"]}}})
    yield "sizes not numbers", js(lambda m: {**m, "shard_bytes": {
        s: _name(rng) for s in m["shard_bytes"]}})
    depth = rng.randint(100_000, 200_000)
    yield "nested deep", lambda m: "[" * depth + "]" * depth


def test_a_damaged_manifest_is_one_line_saying_prepare_again(tmp_path, tiny_run, capsys):
    rng = random.Random(21)
    for what, damage in _damaged_manifests(rng):
        ds = tmp_path / _name(rng)
        shutil.copytree(tiny_run["ds"], ds)
        man = json.loads((ds / "manifest.json").read_text())
        (ds / "manifest.json").write_text(damage(man))
        for argv in (["stats", str(ds)],
                     ["train", "--model", str(tiny_run["base"]), "--dataset", str(ds), "-o",
                      str(tmp_path / "run"), "-q", "model.quantization=none",
                      "model.dtype=float32", "data.seq_length=64", "train.max_steps=1"]):
            assert main(argv) == 2, (what, argv)
            line = _one_error_line(capsys)
            assert "codetune prepare" in line, (what, line)
        assert not (tmp_path / "run").exists()


def test_a_git_source_that_fails_is_one_line_with_gits_first_error(tmp_path, capsys):
    rng = random.Random(4)
    for _ in range(2):
        url = f"file:///{_name(rng)}/{_name(rng)}/{_name(rng)}.git"
        assert main(["prepare", url, "-o", str(tmp_path / _name(rng)), "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "does not appear to be a git repository" in err and url in err, err


def test_eval_of_a_path_that_does_not_exist_says_so(tmp_path, capsys):
    rng = random.Random(8)
    for argv in (["eval", str(tmp_path / _name(rng))],
                 ["eval", "--model", str(tmp_path / _name(rng)), "--dataset", str(tmp_path)]):
        assert main(argv) == 2
        assert "does not exist" in _one_error_line(capsys)
