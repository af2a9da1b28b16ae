"""`codetune prepare --executor local|ray|slurm`: the same dataset as the single-machine path,
built as datatrove tasks (the `scale` extra), resumable, on one machine, Ray or Slurm.

Shape (the steps are in `steps.py`, the executors in `executors.py`):

1. here, in the calling process: the overwrite guard, sources opened (git clones) and listed
   as today, the listing cut into chunks that never span a source -> `WORK/plan/`;
2. stage "scan", `prepare.tasks` tasks on the executor: filters, notebooks, secrets, hashes,
   MinHash signatures and the redacted text, per chunk (`WORK/results/`);
3. stage "final", one task: global exact + near dedup and split in plan order
   (`prepare.Scan`, shared with the single-machine path), shards, index, report, manifest,
   and the rename into DIR. On `local` and on a Ray on this machine it runs here, in this
   process; with the scan in other processes it runs beside it, replaying each chunk as soon
   as it and all before it are written (one local worker: the scan runs in one forked
   process, so `--workers` counts scan processes on every executor).

WORK is `prepare.work_dir`, by default `.DIR.partial-scale` beside DIR (hidden, on the same
file system, skipped as a build folder if it ever sits inside a source). It holds datatrove's
logging folders (`logs/scan`, `logs/final`: per-task logs, stats and the completion markers
that make a rerun skip finished tasks) and `state.json`, the fingerprint of the run (sources,
commits, options, DIR). Rerunning the same command resumes; a different one starts afresh.
Source folders must not change between a killed run and its resumption. Space: the results
hold the kept text uncompressed, and the final task stages it once more (uncompressed) before
writing the zstd shards, so WORK peaks at about twice the kept text.

On Ray and Slurm every node must see the sources, WORK and DIR at the same paths (a shared
file system) and import codetune with the extra installed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codetune import __version__, outputs
from codetune.config import PrepareConfig
from codetune.data import prepare as single
from codetune.data import store
from codetune.data.prepare import Summary, _candidates
from codetune.data.scale import executors
from codetune.data.sources import open_source
from codetune.errors import CodetuneError

MARK = "codetune-scale.json"  # names a folder as a prepare work folder (safe to clear)
# Settings that change how or where the run goes, not what it produces: a resumed run may
# change them (start on `local`, finish on `ray`).
RUN_ONLY = {"executor", "workers", "tasks", "work_dir", "mem_per_cpu_gb", "ray_address",
            "ray_connect_timeout", "slurm_partition", "slurm_time", "slurm_cpus_per_task",
            "slurm_qos", "slurm_env_command", "slurm_sbatch_args", "slurm_dry_run",
            "context_index", "shard_bytes", "cache_dir"}
FILES_PER_TASK_SLURM = 20_000  # prepare.tasks=0 on slurm: one array task per this many files
# A task takes every `tasks`-th chunk of the plan. Files differ in cost (a few large ones), so
# a task's share evens out only over many chunks: on the standard library 4 chunks per task
# gave 2 tasks 62/38 % of the CPU time, 16 gave 51/49 %. A chunk costs two small files.
CHUNKS_PER_TASK = 16
MIN_CHUNK = 50  # files: below, a chunk's files and bookkeeping would cost more than its work
# The final task's dedup state: 2.4 KB per kept file measured (the signature, 14 LSH band
# entries, the exact hash and the file's bookkeeping; 100,000 files), sized per listed file,
# which is what the plan knows, with room for the Python heap's slack.
FINAL_GB_PER_MILLION_FILES = 3.0


def work_folder(out: Path, cfg: PrepareConfig) -> Path:
    return Path(cfg.work_dir).absolute() if cfg.work_dir else \
        out.parent / f".{out.name}.partial-scale"


def prepare_scaled(sources: list[str], out_dir: str | Path, cfg: PrepareConfig,
                   overwrite: bool = False, progress: bool = True, context_index=None):
    """`prepare` on `cfg.executor` (see the module docstring). Returns the `Summary` read back
    from the written dataset; on Slurm, which runs later, one whose `jobs` lists what was
    submitted (DIR appears when the final job ends)."""
    executors.require(cfg.executor)
    started = time.time()
    inputs = [("source", p) for s in sources for p in single._local_paths(s)]
    out = outputs.check(out_dir, overwrite, "dataset", inputs=inputs)
    work = work_folder(out, cfg)
    outputs.check_inputs(work, inputs)
    executors.preflight(cfg)
    quiet = not progress
    with (executors.ray_session(cfg, quiet) if cfg.executor == "ray"
          else contextlib.nullcontext()):
        if cfg.executor == "ray":
            executors.warm_ray(cfg)
        cache = Path(cfg.cache_dir) if cfg.cache_dir else single.default_cache_dir()
        opened = [open_source(s, cfg, cache) for s in sources]
        if cfg.repo_name is not None:
            single._check_repo_name(cfg.repo_name, opened)
        state = _plan(work, out, opened, cfg)
        from codetune.data.scale import steps  # optional: datatrove (the scale extra)

        w = str(work)
        here = executors.final_here(cfg)
        # Beside the scan, which runs in other processes (one local worker: one forked
        # process, `executors.run_forked`), so the final task uses a core of its own.
        follow = here
        scan = [steps.ReadPlan(w), steps.FilterFiles(cfg), steps.WriteResults(w, cfg)]
        final = [steps.GlobalDedup(w, str(out), cfg, follow), steps.WriteShards(w, cfg),
                 steps.Finish(w, str(out), cfg, overwrite, inputs, started, context_index)]
        final_gb = max(cfg.mem_per_cpu_gb,
                       2.0 + FINAL_GB_PER_MILLION_FILES * state["listed"] / 1e6)
        a, b = executors.build(cfg, scan, final, state["tasks"], work / "logs", final_gb, here)
        if cfg.executor == "slurm":
            jobs = executors.submit_slurm(b, cfg.slurm_dry_run, work / "sbatch")
            summary = single.Summary(out)
            summary.jobs = jobs
            return summary
        if follow:
            _run_beside(a, b, work)
        else:
            _run_stage(a, "scan", work)
            _run_stage(b, "final", work, executors.run_here if here else None)
    summary = summary_of(out)
    shutil.rmtree(work, ignore_errors=True)
    return summary


def _run_stage(executor, name: str, work: Path, run=None) -> None:
    """Run one stage (`run(executor)`, by default `executor.run()`); any unfinished task is one
    line naming its log and the resume."""
    error = None
    try:
        run(executor) if run else executor.run()
    except Exception as e:  # a task's exception (local) arrives here as it was raised
        error = str(e) if isinstance(e, executors.ScanFailed) else executors.task_error(e)
    left = executor.get_incomplete_ranks()
    if left or error:
        log = work / "logs" / name / "logs" / f"task_{(left or [0])[0]:05d}.log"
        raise CodetuneError(
            f"the {name} stage did not finish ({len(left)} of {executor.world_size} tasks left"
            f"{'; ' + error if error else ''}); see {log}. Run the same command again to resume:"
            " finished tasks are not redone.")


def _run_beside(scan, final, work: Path) -> None:
    """The scan stage on its executor, from a thread; the final task here meanwhile, replaying
    each chunk as the scan writes it (`steps.GlobalDedup` with `follow`). A failed scan is the
    error reported (the final task then stops at the first chunk it lacks)."""
    from datatrove.executor import LocalPipelineExecutor  # optional: datatrove (scale extra)

    from codetune.data.scale import steps  # optional: datatrove (the scale extra)

    failed: list[BaseException] = []
    with steps.scan_running(work) as done:
        # datatrove runs one local worker's tasks in the calling process: fork it instead
        alone = isinstance(scan, LocalPipelineExecutor) and scan.workers == 1
        run = executors.run_forked if alone else None

        def scan_stage() -> None:
            try:
                _run_stage(scan, "scan", work, run)
            except BaseException as e:  # noqa: BLE001  (re-raised in the calling thread)
                failed.append(e)
            finally:
                done.set()

        thread = threading.Thread(target=scan_stage, name="codetune-scan", daemon=True)
        thread.start()
        try:
            # The local executor forks its processes as it starts: nothing else runs here
            # until a first chunk shows they are up (a fork beside a busy thread can copy a
            # lock that thread holds).
            steps.wait_for_chunk(work, 0)
            _run_stage(final, "final", work, executors.run_here)
        except Exception:
            thread.join()  # the scan's own error, if it failed, is the one to report
            if failed:
                raise failed[0] from None
            raise
        thread.join()


def _fingerprint(out: Path, opened: list, cfg: PrepareConfig) -> str:
    what = {"version": __version__, "out": str(out),
            "sources": [(s.info.spec, s.info.kind, s.info.repo_id, s.info.location,
                         s.info.commit, s.info.ref) for s in opened],
            "options": {k: v for k, v in asdict(cfg).items() if k not in RUN_ONLY}}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _plan(work: Path, out: Path, opened: list, cfg: PrepareConfig) -> dict[str, Any]:
    """The plan of this run: reused when WORK holds one with the same fingerprint (and task
    count, when given), else listed afresh into an emptied WORK."""
    from codetune.data.scale import steps  # optional: datatrove (the scale extra)

    fp = _fingerprint(out, opened, cfg)
    state_file = work / steps.STATE
    if state_file.is_file():
        state = steps.load_state(work)
        if state.get("fingerprint") == fp and cfg.tasks in (0, state["tasks"]):
            print(f"note: resuming the prepare in {work} (delete it to start afresh)",
                  file=sys.stderr)
            return state
    _clear(work)
    return _write_plan(work, out, opened, cfg, fp)


def _clear(work: Path) -> None:
    if work.exists() and any(work.iterdir()) and not (work / MARK).is_file():
        raise CodetuneError(f"{work} exists and is not a codetune prepare work folder; choose "
                            "an empty or new prepare.work_dir")
    shutil.rmtree(work, ignore_errors=True)
    try:
        work.mkdir(parents=True)
        store.write_json(work / MARK, {"format": "codetune-scale-work"})
    except OSError as e:
        raise outputs.write_error(e, work.parent) from None


def _write_plan(work: Path, out: Path, opened: list, cfg: PrepareConfig,
                fp: str) -> dict[str, Any]:
    """List every source as the single-machine path does (`_candidates`, our own folders
    skipped) and cut the listing into chunks of about `total / (CHUNKS_PER_TASK * tasks)`
    files."""
    from codetune.data.scale import steps  # optional: datatrove (the scale extra)

    listings = [_candidates([s], [work, out]) for s in opened]
    known = sum(n for _, n in listings if n is not None)
    if cfg.tasks:
        tasks = cfg.tasks
    elif cfg.executor == "slurm":
        tasks = min(1000, max(1, math.ceil(known / FILES_PER_TASK_SLURM)))
    elif cfg.executor == "ray":
        tasks = cfg.workers or executors.ray_cpus()
    else:
        tasks = cfg.workers or os.cpu_count() or 1
    size = min(20_000, max(MIN_CHUNK, math.ceil(known / (CHUNKS_PER_TASK * tasks)))) \
        if known else 2_000
    (work / "plan").mkdir()
    (work / "results").mkdir()
    seq = chunks = 0
    for cands, _ in listings:
        rows: list[list[Any]] = []
        for c in cands:
            rows.append(steps.plan_row(seq, c))
            seq += 1
            if len(rows) == size:
                steps.write_plan_chunk(work, chunks, rows)
                chunks, rows = chunks + 1, []
        if rows:
            steps.write_plan_chunk(work, chunks, rows)
            chunks += 1
    state = {"format": "codetune-scale-plan", "fingerprint": fp, "tasks": tasks,
             "chunks": chunks, "listed": seq, "infos": [asdict(s.info) for s in opened],
             "created": datetime.now(UTC).isoformat(timespec="seconds")}
    store.write_json(work / steps.STATE, state)  # last: the plan is complete
    return state


def summary_of(out: Path):
    """A `Summary` of the dataset at `out`, from its manifest and dropped.jsonl."""
    man = store.load_manifest(out)
    s = Summary(out)
    for split, info in man["splits"].items():
        s.kept[split], s.bytes[split], s.shards[split] = info["files"], info["bytes"], \
            info["shards"]
    s.dropped = Counter(man["dropped"])
    s.secrets_found, s.files_with_secrets = man["secrets"]["findings"], man["secrets"]["files"]
    s.input_bytes, s.seconds = man["input_bytes"], man["seconds"]
    s.content_hash, s.warnings = man["content_hash"], man["warnings"]
    s.languages, s.context = man["languages"], man.get("context")
    examples: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with open(out / "dropped.jsonl", encoding="utf-8") as fh:
        for d in map(json.loads, fh):
            if len(examples[d["reason"]]) < 5:
                examples[d["reason"]].append((f"{d['repo_id']}/{d['path']}", d["detail"]))
    s.examples = dict(examples)
    return s
