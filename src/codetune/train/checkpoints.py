"""Checkpoints that are either complete or ignored.

The Hugging Face Trainer writes `checkpoint-N/` in place, so a run killed while saving leaves a
folder that looks like a checkpoint and is not. codetune writes each checkpoint under a hidden
temporary name, records the size and sha256 of every file in `codetune_checkpoint.json`, and
renames the folder to `checkpoint-N` only then. Resuming takes the newest checkpoint whose files
all match their record; anything else (a leftover temporary folder, a truncated file) is skipped
with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

MARKER = "codetune_checkpoint.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def tmp_name(step: int) -> str:
    return f".tmp-checkpoint-{step}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal(folder: Path, extra: dict | None = None) -> None:
    """Record every file of `folder` (size + sha256) in the marker, written last."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MARKER:
            files[str(p.relative_to(folder))] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"files": files, **(extra or {})}, indent=1))
    os.replace(tmp, folder / MARKER)


def finalize(tmp: Path, final: Path) -> None:
    """Rename a sealed temporary checkpoint into place (replacing a stale one of that step)."""
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)


def verify(folder: Path) -> str | None:
    """None if `folder` is a complete checkpoint, else why not. Complete means: a completion
    record of the right shape that lists every file in the folder, and every file matches its
    size and checksum. A file the record does not list was not sealed, so it is not trusted."""
    marker = folder / MARKER
    if not marker.is_file():
        return "no completion record (interrupted while saving?)"
    try:
        record = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        # ValueError: not JSON, or an integer past Python's 4300-digit parsing limit;
        # RecursionError: nested deeper than the parser goes. Corrupt either way.
        return "unreadable completion record"
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or not files or not all(
            isinstance(rel, str) and not rel.startswith("/") and ".." not in Path(rel).parts
            and isinstance(rec, dict) and type(rec.get("bytes")) is int
            and 0 <= rec["bytes"] < 1 << 63 and isinstance(rec.get("sha256"), str)
            for rel, rec in files.items()):
        return "completion record of the wrong shape"
    present = {str(p.relative_to(folder)) for p in folder.rglob("*")
               if p.is_file() and p.name != MARKER}
    unsealed = sorted(present - files.keys())
    if unsealed:
        return f"{unsealed[0]} is not in the completion record"
    for rel, rec in files.items():
        p = folder / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != rec["bytes"]:
            return f"{rel} is truncated ({p.stat().st_size} of {rec['bytes']} bytes)"
        if _sha256(p) != rec["sha256"]:
            return f"{rel} is corrupt (checksum mismatch)"
    return None


def step_of(checkpoint: Path) -> int:
    """The optimizer step a `checkpoint-N` folder was saved at."""
    return int(_NAME.match(checkpoint.name).group(1))


def latest(run_checkpoints: Path, quiet: bool = False) -> Path | None:
    """The newest complete checkpoint under `run_checkpoints`, warning about skipped ones."""
    if not run_checkpoints.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in run_checkpoints.iterdir()
                    if (m := _NAME.match(p.name)) and p.is_dir()), reverse=True)
    for _, path in found:
        why = verify(path)
        if why is None:
            return path
        if not quiet:
            print(f"warning: skipping {path.name}: {why}", file=sys.stderr)
    return None


# What an exact resume needs besides the weights and the data position (the Trainer's names;
# the RNG state is per rank when several processes trained).
STATE = {"optimizer.pt": "the optimizer's moments start again from zero",
         "scheduler.pt": "the learning-rate schedule is rebuilt at the checkpoint's step",
         "rng_state.pth": "dropout and other random draws differ from an uninterrupted run"}
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
           "model.safetensors.index.json", "pytorch_model.bin")


def missing_state(checkpoint: Path, world_size: int = 1) -> list[str]:
    """The files of STATE that `checkpoint` lacks (a sealed checkpoint can: the seal lists
    what was there, not what should be). Every rank's RNG file is checked, so that all ranks
    choose the same checkpoint."""
    rng = ["rng_state.pth"] if world_size == 1 else [f"rng_state_{r}.pth"
                                                      for r in range(world_size)]
    return [name for name in ("optimizer.pt", "scheduler.pt", *rng)
            if not (checkpoint / name).is_file()]


def for_resume(run_checkpoints: Path,
               world_size: int = 1) -> tuple[Path | None, list[str]]:
    """(checkpoint to resume from, the STATE files it lacks). The newest complete checkpoint
    that holds everything an exact resume needs; failing that, the newest complete one with
    weights (to resume from weights and data position only: the caller warns). An older whole
    checkpoint beats a newer partial one: re-training a few steps costs minutes, while a fresh
    optimizer changes the rest of the run for good."""
    if not run_checkpoints.is_dir():
        return None, []
    found = sorted(((int(m.group(1)), p) for p in run_checkpoints.iterdir()
                    if (m := _NAME.match(p.name)) and p.is_dir()), reverse=True)
    partial: tuple[Path, list[str]] | None = None
    for _, path in found:
        why = verify(path)
        if why is None and not any((path / w).is_file() for w in WEIGHTS):
            why = "no model weights"
        if why is not None:
            print(f"warning: skipping {path.name}: {why}", file=sys.stderr)
            continue
        lacks = missing_state(path, world_size)
        if not lacks:
            if partial is not None:
                print(f"warning: skipping {partial[0].name}: it lacks {', '.join(partial[1])};"
                      f" resuming exactly from the older {path.name} instead", file=sys.stderr)
            return path, []
        if partial is None:
            partial = (path, lacks)
    return partial if partial is not None else (None, [])


def clean_partial(run_checkpoints: Path) -> None:
    """Remove temporary folders of saves that never completed."""
    if run_checkpoints.is_dir():
        for p in run_checkpoints.glob(".tmp-checkpoint-*"):
            shutil.rmtree(p, ignore_errors=True)


def complete_steps(run_checkpoints: Path) -> list[int]:
    """The steps of the complete (sealed, intact) checkpoints, oldest first."""
    if not run_checkpoints.is_dir():
        return []
    return sorted(int(m.group(1)) for p in run_checkpoints.iterdir()
                  if (m := _NAME.match(p.name)) and p.is_dir() and verify(p) is None)


def best_step(log_history: list[dict], saved: list[int], final: int) -> dict | None:
    """The step whose weights to keep under `train.keep=best`: the lowest held-out loss among
    the steps that were evaluated and whose weights exist (`saved` checkpoints, and `final`,
    the weights in memory at the end). A step's loss is the mean of its `eval_*_loss` entries
    (eval runs one per held-out set). None when no such step was evaluated.

    Returns {"step", "loss", "losses": {step: loss} of every candidate, "why"}; ties go to
    the later step (more training for the same held-out loss)."""
    per_step: dict[int, list[float]] = {}
    for rec in log_history:
        step = rec.get("step")
        for k, v in rec.items():
            if k.startswith("eval_") and k.endswith("_loss") and isinstance(v, int | float):
                per_step.setdefault(int(step), []).append(float(v))
    candidates = {s: sum(v) / len(v) for s, v in per_step.items() if s in set(saved) | {final}}
    if not candidates:
        return None
    step = min(candidates, key=lambda s: (candidates[s], -s))
    why = (f"lowest held-out loss {candidates[step]:.4f} of {len(candidates)} evaluated "
           f"checkpoint{'s' if len(candidates) != 1 else ''}"
           + ("" if step == final else f" (the last, step {final}: {candidates[final]:.4f})"
              if final in candidates else ""))
    return {"step": step, "loss": candidates[step], "losses": dict(sorted(candidates.items())),
            "why": why}
