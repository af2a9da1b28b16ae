"""`RayTasksExecutor`: datatrove's `RayPipelineExecutor` with each task a plain Ray task.

datatrove 0.10 runs every task in a new actor, in a placement group of its own, which forks a
process pool for the task: each task pays a fresh process that imports datatrove, codetune and
detect-secrets again (~1 s of CPU, 2-3 s measured on a busy 2-core machine, with scipy then)
and the placement group's round trips. A Ray task runs on one of Ray's worker processes, which Ray
keeps and reuses for the job's later tasks, so those imports are paid once per worker. The task
itself is datatrove's (`RayPipelineExecutor._run_for_rank`: the pipeline, its log, stats and
completion mark), and so are the options (`cpus_per_task`, `mem_per_cpu_gb`, `workers`).

A task that raises is not retried (the error is the file's or the code's, and the stage reports
it); one whose worker process dies is, up to `RETRIES` times, by Ray.
"""

from __future__ import annotations

import json

from datatrove.executor import RayPipelineExecutor
from datatrove.utils.stats import PipelineStats

RETRIES = 3


def _run_rank(executor: RayPipelineExecutor, rank: int) -> None:
    executor._run_for_rank(rank)  # logs to a local folder, copied to logging_dir at the end


class RayTasksExecutor(RayPipelineExecutor):
    """Runs the incomplete ranks as Ray tasks, at most `workers` at a time; raises the first
    task's error after the others have finished (their work is kept for a resume)."""

    def run(self) -> None:
        import ray  # optional: ray (the scale extra)

        self._launched = True
        ranks = self.get_incomplete_ranks(range(self.world_size))
        if not ranks:
            return
        self.save_executor_as_json()
        ref = ray.put(self)
        task = ray.remote(_run_rank).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
            memory=int(self.mem_per_cpu_gb * self.cpus_per_task * 2**30),
            max_retries=RETRIES, retry_exceptions=False, **(self.ray_remote_kwargs or {}))
        todo, running, errors = list(ranks), [], []
        while todo or running:
            while todo and len(running) < self.workers:
                running.append(task.remote(ref, todo.pop(0)))
            done, running = ray.wait(running, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayTaskError as e:  # the task's own exception, as raised
                errors.append(e.cause if isinstance(e.cause, Exception) else e)
            except Exception as e:  # noqa: BLE001  (worker lost more than RETRIES times, ...)
                errors.append(e)
        if errors:
            raise errors[0]
        stats = PipelineStats()
        for rank in range(self.world_size):
            with self.logging_dir.open(f"stats/{rank:05d}.json", "r") as f:
                stats += PipelineStats.from_json(json.load(f))
        with self.logging_dir.open("stats.json", "wt") as f:
            stats.save_to_disk(f)
