"""datatrove executors for `prepare.executor`: local processes, a Ray cluster, Slurm arrays.

On `local`, and on a Ray whose nodes are all this machine, the final task runs in the calling
process (`final_here`), beside the scan, following its chunks (see `steps`). On Ray the scan
tasks are plain Ray tasks (`RayTasksExecutor`), not datatrove's actor per task.

Each is checked before any work: the `scale` extra is installed, the Ray cluster answers
within `prepare.ray_connect_timeout` (a TCP probe first, so an unreachable head is one line
after seconds, not a hang), `sbatch` is on PATH and a partition is named.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from codetune.config import PrepareConfig
from codetune.errors import CodetuneError

EXTRA = 'pip install "codetune[scale]"'


def require(executor: str) -> None:
    """datatrove (and Ray for `ray`) importable, else one line naming the extra."""
    for module in ("datatrove", "ray") if executor == "ray" else ("datatrove",):
        try:
            __import__(module)
        except ImportError:
            raise CodetuneError(
                f"--executor {executor} needs {module}, which is not installed; install the "
                f"scale extra: {EXTRA}") from None


def preflight(cfg: PrepareConfig) -> None:
    """What can be checked before cloning or listing anything."""
    if cfg.executor == "slurm":
        if not cfg.slurm_partition:
            raise CodetuneError("--executor slurm needs a partition: -s prepare.slurm_partition="
                                "NAME (`sinfo -s` lists them)")
        if not cfg.slurm_dry_run and shutil.which("sbatch") is None:
            raise CodetuneError("sbatch is not on PATH: --executor slurm submits jobs from a "
                                "Slurm login node; run it there, or pass -s prepare.slurm_dry_run"
                                "=true to write the job scripts without submitting them")
    if cfg.executor == "ray" and cfg.ray_address:
        probe_ray(cfg.ray_address, cfg.ray_connect_timeout)


def probe_ray(address: str, timeout: float) -> None:
    """Open (and close) a TCP connection to the head named by `address`, or fail in one line."""
    if address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        host, port = hostport, "10001" if address.startswith("ray://") else "6379"
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise CodetuneError(
            f"the Ray cluster at {address} cannot be reached ({why} within {timeout:g} s); "
            "start it (`ray start --head`) or fix prepare.ray_address") from None


@contextlib.contextmanager
def ray_session(cfg: PrepareConfig, quiet: bool) -> Iterator[None]:
    """Connected to `prepare.ray_address`, or to a Ray started here for the run (stopped after).
    A session the caller already opened (`ray.init` in a notebook or a test) is used as is."""
    import ray  # optional: ray (the scale extra)

    if ray.is_initialized():
        yield
        return
    try:
        if cfg.ray_address:
            ray.init(address=cfg.ray_address, log_to_driver=not quiet)
        else:
            ray.init(num_cpus=cfg.workers or None, include_dashboard=False,
                     log_to_driver=not quiet)
    except Exception as e:  # ConnectionError, RuntimeError, ValueError: all the same to a user
        where = cfg.ray_address or "this machine"
        raise CodetuneError(f"cannot start Ray on {where}: {str(e).splitlines()[0][:200]}; "
                            "check prepare.ray_address and `ray status`") from None
    try:
        yield
    finally:
        ray.shutdown()


def ray_cpus() -> int:
    import ray  # optional: ray (the scale extra)

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def ray_is_local() -> bool:
    """Every live node of the connected Ray cluster is this machine (a Ray started here, or
    `ray start --head` on it): its driver sees WORK and DIR and the memory the final task
    needs is this machine's."""
    import ray  # optional: ray (the scale extra)

    here = ray.util.get_node_ip_address()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return bool(nodes) and all(n.get("NodeManagerAddress") == here for n in nodes)


def warm_ray(cfg: PrepareConfig) -> None:
    """Have Ray's worker processes import what a scan task needs (datatrove, codetune, the
    secret scanner: ~0.7 s of CPU each) now, while this process opens and lists the sources,
    instead of after the plan is written. Ray keeps a job's workers and reuses them for its
    later tasks, so the scan tasks start on warm ones. Not waited for: one that fails leaves
    a scan task to fail with the same error."""
    import ray  # optional: ray (the scale extra)

    n = min(cfg.tasks or 10**9, cfg.workers or 10**9, ray_cpus())
    warm = ray.remote(_warm).options(num_cpus=1)
    for _ in range(n):
        warm.remote()


def _warm() -> None:
    import codetune.data.scale.ray_tasks  # noqa: F401  (datatrove's executors)
    import codetune.data.scale.steps  # noqa: F401  (codetune's filters, detect-secrets)


def final_here(cfg: PrepareConfig) -> bool:
    """Whether the final task runs in this process, following the scan."""
    return cfg.executor == "local" or (cfg.executor == "ray" and ray_is_local())


def build(cfg: PrepareConfig, scan: list, final: list, tasks: int, logs: Path,
          final_mem_gb: float, here: bool) -> tuple[Any, Any]:
    """The (scan, final) executors; `final` runs after `scan` (Slurm: afterok dependency), or,
    with `here`, is a one-task local executor for `run_here`."""
    kind = cfg.executor
    from datatrove.executor import LocalPipelineExecutor  # optional: datatrove (the scale extra)

    b = LocalPipelineExecutor(final, tasks=1, workers=1, logging_dir=str(logs / "final")) \
        if here else None
    if kind == "local":
        # fork: the task processes start with codetune, datatrove and detect-secrets already
        # imported (forkserver would import them again in every task, ~1 s each).
        method = "fork" if sys.platform == "linux" else "spawn"
        workers = cfg.workers or os.cpu_count() or 1
        a = LocalPipelineExecutor(scan, tasks=tasks, workers=min(workers, tasks),
                                  logging_dir=str(logs / "scan"), start_method=method)
        return a, b
    if kind == "ray":
        from codetune.data.scale.ray_tasks import RayTasksExecutor  # optional: datatrove, ray

        a = RayTasksExecutor(scan, tasks=tasks, workers=cfg.workers or -1,
                             logging_dir=str(logs / "scan"), mem_per_cpu_gb=cfg.mem_per_cpu_gb)
        b = b or RayTasksExecutor(final, tasks=1, workers=1, logging_dir=str(logs / "final"),
                                  mem_per_cpu_gb=final_mem_gb)
        return a, b
    from datatrove.executor import SlurmPipelineExecutor  # optional: datatrove (the scale extra)

    env = cfg.slurm_env_command or (f"source {sys.prefix}/bin/activate"
                                    if sys.prefix != sys.base_prefix else None)
    common = dict(partition=cfg.slurm_partition, time=cfg.slurm_time,
                  qos=cfg.slurm_qos or "", env_command=env,
                  sbatch_args=dict(cfg.slurm_sbatch_args), mail_type="FAIL")
    a = SlurmPipelineExecutor(scan, tasks=tasks, workers=cfg.workers or -1,
                              cpus_per_task=cfg.slurm_cpus_per_task,
                              mem_per_cpu_gb=math.ceil(cfg.mem_per_cpu_gb),
                              job_name="codetune-prepare-scan", logging_dir=str(logs / "scan"),
                              **common)
    b = SlurmPipelineExecutor(final, tasks=1, cpus_per_task=1,
                              mem_per_cpu_gb=math.ceil(final_mem_gb), depends=a,
                              job_name="codetune-prepare-final", logging_dir=str(logs / "final"),
                              **common)
    return a, b


def run_here(executor) -> None:
    """A one-task stage in this process: datatrove's task run (its log, stats and completion
    mark) without `LocalPipelineExecutor.run`'s manager process and pipeline copy."""
    if executor.get_incomplete_ranks():
        executor.save_executor_as_json()
        executor._run_for_rank(0)


def task_error(e: BaseException) -> str:
    """A task's exception in one line: "Type: first line of its message"."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}" if str(e) else type(e).__name__


class ScanFailed(RuntimeError):
    """A task's error in the forked scan process (`run_forked`), as "Type: message"."""


def run_forked(executor) -> None:
    """A local stage of one worker in one forked process (datatrove would run its tasks in
    this one), so that the final task can follow it here on another core. A task's error comes
    back as `ScanFailed` with its type and first line; its log has the traceback."""
    import multiprocessing

    ctx = multiprocessing.get_context(executor.start_method)
    get, put = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run_and_tell, args=(executor, put), name="codetune-scan")
    proc.start()
    put.close()
    try:
        error = get.recv()
    except EOFError:  # died without a word (killed)
        error = None
    proc.join()
    if error or proc.exitcode:
        raise ScanFailed(error or f"the scan process exited with code {proc.exitcode}")


def _run_and_tell(executor, put) -> None:
    error = None
    try:
        executor.run()
    except BaseException as e:  # noqa: BLE001  (told to the parent, which reports it)
        error = task_error(e)
    put.send(error)
    put.close()


def submit_slurm(final, dry_run: bool, scripts: Path) -> list[str]:
    """Submit the final executor (and, through `depends`, the scan) with sbatch. A dry run
    writes each script that would be submitted to `scripts/` instead and returns their paths.

    datatrove has no dry-run switch; its one call into sbatch (`launch_slurm_job`) is swapped
    for the length of the submission."""
    from datatrove.executor import slurm  # optional: datatrove (the scale extra)

    submitted: list[str] = []
    real = slurm.launch_slurm_job

    def dry(contents: str, retriever, *args: str) -> str:
        n = len(submitted)
        path = scripts / f"{n:02d}.sbatch"
        extra = "".join(f"# sbatch {a}\n" for a in args)
        path.write_text(contents if not extra else contents + extra, encoding="utf-8")
        submitted.append(str(path))
        return f"DRYRUN{n}"

    def wet(contents: str, retriever, *args: str) -> str:
        try:
            job = real(contents, retriever, *args)
        except subprocess.CalledProcessError as e:
            raise CodetuneError(f"sbatch refused the job (exit {e.returncode}; its message is "
                                "above); check prepare.slurm_* settings") from None
        submitted.append(str(job))
        return job

    scripts.mkdir(parents=True, exist_ok=True)
    slurm.launch_slurm_job = dry if dry_run else wet
    try:
        final.run()
    finally:
        slurm.launch_slurm_job = real
    return submitted
