"""The command line: help without heavy imports, user errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from codetune.cli import main


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "codetune", *args], capture_output=True,
                          text=True, **kw)


def test_help_works_without_torch_import():
    code = ("import sys; from codetune.cli import build_parser; build_parser(); "
            "import codetune.data.prepare; assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = run("--help")
    assert r.returncode == 0 and "prepare" in r.stdout and "stats" in r.stdout


@pytest.mark.parametrize("args, match", [
    (["prepare", "/no/such/folder", "-o", "OUT"], "does not exist"),
    (["prepare", "SRC", "-o", "OUT", "-s", "prepare.valid_fraction=2"], "valid_fraction"),
    (["stats", "/no/such/dataset"], "not a folder"),
    (["stats", "."], "not a prepared dataset"),
])
def test_user_errors_are_one_paragraph_without_traceback(args, match, tmp_path):
    (tmp_path / "SRC").mkdir()
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert match in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ")
    assert not (tmp_path / "OUT").exists()


def test_wrong_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["prepare", "x", "-o", "y", "--secrets", "sometimes"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_prepare_then_stats_json(tmp_path, capsys):
    src = tmp_path / "repo"
    src.mkdir()
    for i in range(5):
        (src / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + helper_{i}(x)\n")
    assert main(["prepare", str(src), "-o", str(tmp_path / "ds"), "--workers", "1",
                 "--valid-fraction", "0.2", "--exclude", "m4.py"]) == 0
    capsys.readouterr()
    assert main(["stats", str(tmp_path / "ds"), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["files"] == 4 and st["languages"]["Python"]["files"] == 4
    assert main(["stats", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "Python" in out and "train" in out
    assert main(["config", "-s", "prepare.seed=3"]) == 0
    assert "seed: 3" in capsys.readouterr().out


def test_bitsandbytes_optional_kernel_notice_is_dropped_and_nothing_else(caplog):
    import logging

    import codetune  # noqa: F401 - installs the filter

    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please",
                    "No module named 'kernels'")
        log.warning("some other problem")
    assert [r.getMessage() for r in caplog.records] == ["some other problem"]
