"""The execution sandbox of `codetune eval --benchmark`: what model-written code can and cannot
do to the machine. Each misbehaving program must end as a failed task, not a failed run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from codetune.evaluation.sandbox import Limits, cgroup_root, run_program, run_programs

QUICK = Limits(timeout_s=2.0)


def _dead(pid: int) -> bool:
    """Gone, or a zombie (an orphan whose reaper has not reaped it yet: it runs no code)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def _all_dead(pids: list[int], within: float = 5.0) -> list[int]:
    deadline = time.monotonic() + within
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if not _dead(p)]
        if alive:
            time.sleep(0.05)
    return alive


def test_a_program_passes_only_when_it_runs_to_its_end():
    assert run_program("assert sum([1, 2]) == 3\nprint('ok')").status == "passed"
    failed = run_program("raise ValueError('wrong answer')")
    assert failed.status == "failed" and "ValueError: wrong answer" in failed.detail
    # Leaving early is not passing, whatever the exit status.
    for early in ("import sys; sys.exit(0)", "import os; os._exit(0)", "exit()"):
        assert run_program(early).status == "failed", early
    assert run_program("def f(:\n").status == "failed"


def test_an_infinite_loop_is_a_timeout():
    out = run_program("while True:\n    pass\n", Limits(timeout_s=1.0))
    assert out.status == "timeout" and not out.passed
    assert out.seconds < 5


def test_a_10_gb_allocation_is_a_memory_error():
    out = run_program("x = bytearray(10 * 1024 ** 3)\nprint(len(x))", QUICK)
    assert out.status == "failed" and "MemoryError" in out.detail


def test_a_write_outside_the_temporary_folder_fails(tmp_path):
    target = tmp_path / "escaped.txt"
    for program in (f"open({str(target)!r}, 'w').write('x')",
                    f"import pathlib; pathlib.Path({str(target)!r}).write_text('x')",
                    f"import os; os.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))",
                    f"import os; os.chdir({str(tmp_path)!r}); open('escaped.txt', 'a')",
                    f"import os; os.mkdir({str(tmp_path / 'd')!r})"):
        out = run_program(program, QUICK)
        assert out.status == "failed" and "PermissionError" in out.detail, (program, out)
    assert list(tmp_path.iterdir()) == []
    # Inside its own folder a program may write, read and delete (tempfile works).
    ok = run_program("import tempfile, os\nfd, p = tempfile.mkstemp()\nos.write(fd, b'x')\n"
                     "os.close(fd)\nassert open(p).read() == 'x'\nos.remove(p)", QUICK)
    assert ok.passed, ok


def test_filling_the_disk_stops_at_the_file_size_limit():
    program = "f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * 65536)\n"
    out = run_program(program, Limits(timeout_s=5.0, file_bytes=1 << 20))
    assert out.status in ("failed", "killed") and out.status != "timeout"
    assert "File too large" in out.detail or "file size" in out.detail


def test_process_creation_is_refused_by_the_guard():
    for program in ("import os; os.fork()", "import subprocess; subprocess.run(['true'])",
                    "import os; os.system('true')",
                    "import multiprocessing as m; p = m.Process(target=print); p.start()"):
        out = run_program(program, QUICK)
        assert out.status == "failed" and "PermissionError" in out.detail, (program, out)


FORK_LOOP = """
import os, time
for i in range(200):  # bounded by the test; the sandbox must clean up whatever gets started
    try:
        pid = os.fork()
    except OSError:
        break  # a cgroup's pids.max
    if pid == 0:
        {child}
        open(os.path.join({pids!r}, str(os.getpid())), 'w').close()
        time.sleep(600)
        os._exit(0)
{parent}
"""


@pytest.mark.parametrize("cgroup", [False, True], ids=["process-group", "cgroup"])
@pytest.mark.parametrize("parent", ["hangs", "returns"])
def test_a_fork_loop_leaves_no_child_alive(tmp_path, cgroup, parent):
    """The process layer alone (guard off, as code that gets past the guard would): children
    that outlive the program, or a program killed at its timeout, die with it. CI runs as root,
    which RLIMIT_NPROC does not bind: the process group (and a cgroup, where there is one) does."""
    if cgroup and cgroup_root() is None:
        pytest.skip("no writable cgroup hierarchy here")
    pids = tmp_path / "pids"
    pids.mkdir()
    program = FORK_LOOP.format(child="pass", pids=str(pids),
                               parent="while True:\n    pass" if parent == "hangs" else "")
    out = run_program(program, Limits(timeout_s=2.0, guard=False, cgroup=cgroup))
    assert out.status == ("timeout" if parent == "hangs" else "passed"), out
    started = [int(p.name) for p in pids.iterdir()]
    assert started, "no child was started: the test tests nothing"
    assert _all_dead(started) == []


def test_a_child_that_leaves_the_process_group_dies_with_the_cgroup(tmp_path):
    if cgroup_root() is None:
        pytest.skip("no writable cgroup hierarchy here")
    pids = tmp_path / "pids"
    pids.mkdir()
    program = FORK_LOOP.replace("range(200)", "range(3)").format(
        child="os.setsid()", pids=str(pids), parent="time.sleep(0.5)")
    out = run_program(program, Limits(timeout_s=5.0, guard=False))
    assert out.passed, out
    started = [int(p.name) for p in pids.iterdir()]
    assert len(started) == 3 and _all_dead(started) == []


def test_no_secret_of_the_environment_reaches_the_program(monkeypatch):
    secrets = {"HF_TOKEN": "hf_sandboxtestsecret", "OPENAI_API_KEY": "sk-sandboxtestsecret",
               "HTTPS_PROXY": "http://proxy.internal:3128", "AWS_SECRET_ACCESS_KEY": "awssecret"}
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    out = run_program("import os\nprint(dict(os.environ))\n"
                      "print(open('/proc/self/environ', 'rb').read())", QUICK)
    assert out.passed, out
    for k, v in secrets.items():
        assert k not in out.output and v not in out.output
    assert "codetune-sandbox-" in out.output  # HOME and TMPDIR are its own folder


def test_programs_run_in_parallel_and_keep_their_order():
    progs = [f"print({i})" if i % 3 else f"raise SystemExit({i})" for i in range(7)]
    seen = []
    outs = run_programs(progs, QUICK, workers=3, progress=seen.append)
    assert len(seen) == 7
    for i, o in enumerate(outs):
        assert o.passed == bool(i % 3)
        if o.passed:
            assert o.output.strip() == str(i)
