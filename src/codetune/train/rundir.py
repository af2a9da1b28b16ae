"""The run folder: what `train` checks before it starts, records, and resumes from.

    RUN/run.json         base model identity (Hub id + revision, or file hash), dataset content
                         hash, FIM format, LoRA shape, versions: what --resume checks
    RUN/config.yaml      the resolved configuration; --resume starts from it
    RUN/checkpoints/     complete checkpoints (see checkpoints.py)"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codetune import __version__, outputs
from codetune.config import RunConfig
from codetune.errors import CodetuneError
from codetune.train import checkpoints

RUN_RECORD = "run.json"


def check_output(out: Path, resume: bool, overwrite: bool,
                 inputs: list[tuple[str, str | Path | None]] | tuple = ()) -> None:
    """Fail early, before any model is loaded, if `out` cannot take this run (`inputs`: the
    dataset and base model, which the run folder may neither hold nor lie inside)."""
    if resume:
        if out.is_symlink() or not (out / RUN_RECORD).is_file():
            raise CodetuneError(f"there is no run to resume in {out} (no {RUN_RECORD}); start "
                                "it without --resume")
        if outputs.kind_of(out) != "run":
            raise CodetuneError(f"{out} is not a codetune run ({out / RUN_RECORD} was not "
                                "written by codetune); nothing to resume")
        return
    if not overwrite and outputs.kind_of(out) == "run":
        raise CodetuneError(f"{out} already holds a run; pass --resume to continue it, "
                            "--overwrite to start over, or choose another -o folder")
    outputs.check(out, overwrite, "run", inputs=inputs)


# Overrides that leave an interrupted run resumable exactly: they change when it stops, saves,
# logs and evaluates, not what it trains on or how. Anything else needs --force.
RESUME_SAFE = {
    "train.max_steps", "train.save_steps", "train.eval_steps", "train.logging_steps",
    "train.save_total_limit", "train.report_to", "train.push_to_hub", "train.hub_model_id",
    "train.keep",
    "data.max_eval_sequences", "data.eval_ltr", "data.eval_fim",
}


def resume_config(out: str | Path, overrides: list[str], force: bool = False,
                  echo=None) -> RunConfig:
    """The config of the run in `out` (its own config.yaml) with `overrides` on top. Each
    change is printed; one that breaks exact resume (batch, sequence length, data, ...) is
    refused unless `force`."""
    from codetune import config

    say = echo or (lambda m: print(m, file=sys.stderr))
    out = Path(out)
    check_output(out.absolute(), resume=True, overwrite=False)
    own = out / "config.yaml"
    if not own.is_file():
        raise CodetuneError(f"{own} is missing, so the run cannot be resumed as it was "
                            "started; start a new run in another folder")
    base = config.load(own)
    cfg = config.load(own, overrides)
    changed = config.changes(base, cfg)
    for key, old, new in changed:
        say(f"resume override: {key}: {old!r} -> {new!r}")
    unsafe = [k for k, _, _ in changed if k not in RESUME_SAFE and not k.startswith("eval.")]
    if "data.dataset" in unsafe:  # a dataset that moved is the same data: not a change
        from codetune.data import store

        found = store.run_dataset(out, base.data.dataset, cfg.data.dataset, warn=lambda m: None)
        if not found.overridden:
            unsafe.remove("data.dataset")
    if unsafe and not force:
        raise CodetuneError(
            f"changing {', '.join(unsafe)} would break exact resume (the data order, batches "
            "or model would differ from the interrupted run); resume without it, pass --force "
            "to resume anyway, or start a new run in another folder")
    return cfg


def finished_step(out: Path, max_steps: int) -> int | None:
    """The step a finished run stopped at (its newest complete checkpoint reached
    `max_steps` and the final weights were saved), else None."""
    last = checkpoints.latest(out / "checkpoints", quiet=True)
    if last is None or checkpoints.step_of(last) < max_steps:
        return None
    weights = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
    if not (out / "metrics.json").is_file() or not any((out / f).is_file() for f in weights):
        return None  # killed after the last checkpoint, before the final save: resume it
    return checkpoints.step_of(last)


def _dataset_identity(cfg: RunConfig) -> dict[str, Any]:
    from codetune.data import store

    return store.dataset_identity(cfg.data.dataset or "")


def _run_record(cfg: RunConfig, source, fim_tokens, dataset: dict, counts: dict) -> dict:
    import peft
    import torch
    import transformers

    return {
        **outputs.mark("run"),
        "codetune_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
        "base_model": source.record() if hasattr(source, "record") else asdict(source),
        "dataset": dataset,
        "fim_format": fim_tokens.family if fim_tokens is not None else None,
        "finetune": cfg.model.finetune,
        "lora": asdict(cfg.lora) if cfg.model.finetune == "lora" else None,
        "quantization": cfg.model.quantization,
        "seq_length": cfg.data.seq_length,
        "params": counts,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__},
    }


def _check_resume_compatible(out: Path, record: dict, force: bool) -> None:
    old = json.loads((out / RUN_RECORD).read_text())
    problems = []
    for key, what in (("base_model", "base model"), ("dataset", "dataset"),
                      ("lora", "LoRA shape"), ("finetune", "fine-tuning mode"),
                      ("seq_length", "sequence length"), ("fim_format", "FIM format")):
        if key == "dataset" and _same_dataset(old.get(key), record.get(key)):
            continue  # moved (same content hash), or recorded before paths were absolute
        if old.get(key) != record.get(key):
            problems.append(f"{what}: was {old.get(key)!r}, now {record.get(key)!r}")
    if problems and not force:
        raise CodetuneError(
            "refusing to resume: this run was started with a different setup ("
            + "; ".join(problems) + "). Resume with the original settings, start a new run in "
            "another folder, or pass --force to resume anyway.")


def _same_dataset(old: Any, new: Any) -> bool:
    """The same dataset content: equal content hashes, else (parquet files, no hash) equal
    absolute paths (an old record's relative path taken from the current folder, as before)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return old == new
    if old.get("content_hash") or new.get("content_hash"):
        return old.get("content_hash") == new.get("content_hash")
    return os.path.abspath(str(old.get("path"))) == os.path.abspath(str(new.get("path")))


def resume_dataset(out: Path, dataset: str | None, force: bool, quiet: bool = False) -> str:
    """The dataset (absolute path) to resume the run in `out` on: its own, found by run.json
    (`store.run_dataset`). A `dataset` other than config.yaml's is an explicit --dataset: taken
    when it holds the recorded content (the dataset moved), else only with `force`."""
    from codetune import config
    from codetune.data import store

    own_file = out / "config.yaml"
    own = config.load(own_file).data.dataset if own_file.is_file() else None
    notes: list[str] = []
    given = dataset if dataset != own else None
    try:
        found = store.run_dataset(out, own, given, warn=notes.append)
    except CodetuneError:
        # changed where it lies, and --force: that folder as it is now, as if named
        recorded = store.recorded_dataset(out).get("path")
        if not force or given is not None or not isinstance(recorded, str) or not os.path.isabs(
                recorded) or not os.path.exists(recorded):
            raise
        found = store.run_dataset(out, own, recorded, warn=notes.append)
    if found.overridden and not force:
        raise CodetuneError(
            f"{found.path} (--dataset) is not the dataset {out} was trained on, "
            f"{found.instead_of}, and resuming on other data breaks exact resume; give the "
            "original's new place, pass --force to resume anyway, or start a new run in "
            "another folder")
    for note in [] if quiet else notes:
        print(note, file=sys.stderr)
    return found.path


def write_run_files(out: Path, cfg: RunConfig, dataset: str | None, record: dict) -> None:
    """config.yaml (with `data.dataset` as the user gave it) and run.json, each written whole
    (a temporary name, then a rename)."""
    import copy

    from codetune.config import dump

    saved = copy.deepcopy(cfg)
    saved.data.dataset = dataset
    tmp = out / "config.yaml.tmp"
    dump(saved, tmp)
    os.replace(tmp, out / "config.yaml")
    outputs.write_json(out / RUN_RECORD, record)
