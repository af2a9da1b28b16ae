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


def test_config_flags_set_their_keys_and_take_choices_from_the_config():
    """A flag made by `config_flag` records its key: the parsed flags become the overrides, a
    flag left out leaves the config's value, and a Literal's values are the flag's choices."""
    import typing

    from codetune import config
    from codetune.cli import build_parser
    from codetune.cli.common import build_config

    parser = build_parser()
    args = parser.parse_args(["prepare", "SRC", "-o", "OUT", "--no-near-dedup", "--submodules",
                              "--include", "a/*", "--include", "b/*", "--executor", "ray",
                              "-s", "prepare.seed=4", "-s", "prepare.workers=3", "--seed", "5"])
    p = build_config(args).prepare
    assert (p.dedup_near, p.git_submodules, p.include, p.executor) == (False, True,
                                                                       ["a/*", "b/*"], "ray")
    assert (p.seed, p.workers) == (5, 3)  # a flag wins over -s; -s stands where no flag is given
    assert p.notebook_markdown is False and p.valid_fraction == 0.05
    args = parser.parse_args(["complete", "--prefix", "x", "--stop", "\n", "--greedy",
                              "--top-k", "3"])
    g = build_config(args).generation
    assert (g.stop, g.greedy, g.top_k, g.temperature) == (["\n"], True, 3, 0.2)
    args = parser.parse_args(["eval", "runs/x", "--benchmark-tasks", "all", "--context", "off"])
    e = build_config(args).eval
    assert (e.benchmark_tasks, e.context) == (None, "off")
    sub = next(a for a in parser._actions if a.dest == "command").choices
    flags = {(cmd, o): a for cmd, sp in sub.items() for a in sp._actions for o in a.option_strings}
    literal = {("eval", "--quantization"): config.Quantization,
               ("complete", "--quantization"): config.Quantization,
               ("serve", "--dtype"): config.Dtype, ("merge", "--dtype"): config.WeightDtype,
               ("export", "--merge-dtype"): config.WeightDtype,
               ("prepare", "--executor"): typing.get_type_hints(config.PrepareConfig)["executor"],
               ("eval", "--context"): typing.get_type_hints(config.EvalConfig)["context"]}
    for flag, hint in literal.items():
        want = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is not typing.Literal:  # Literal[...] | None
            want = list(typing.get_args(want[0]))
        assert list(flags[flag].choices) == want, flag
