"""What `codetune export` starts from: a run folder or a model folder, checked before any work.

    a LoRA run      (run.json + config.yaml + adapter)   merged first, into a temporary folder
    a full run      (run.json + config.yaml + weights)    the folder is the model
    a model folder  (config.json; `codetune merge` output, or any causal LM folder)

Where it came from (run, base model, dataset content hash) is read from the run's run.json, or
for a merged model from its codetune_merge.json and the run that names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError
from codetune.infer import loader
from codetune.merge import merge


@dataclass
class Source:
    path: Path
    kind: str  # "lora-run", "full-run" or "model"
    run_dir: Path | None = None  # the run (given, or the one a merged model came from)
    cfg: Any = None  # the run's RunConfig
    run_record: dict[str, Any] = field(default_factory=dict)
    merge_record: dict[str, Any] = field(default_factory=dict)

    @property
    def added_tokens(self) -> bool:
        return bool(self.cfg is not None and self.cfg.fim.add_tokens)

    @property
    def fim_format(self) -> str:
        return self.cfg.fim.format if self.cfg is not None else "auto"

    def provenance(self) -> dict[str, Any]:
        rec, cfg = self.run_record, self.cfg
        base = rec.get("base_model") or self.merge_record.get("base_model")
        if base is None and cfg is not None:
            base = {"name": cfg.model.name, "revision": cfg.model.revision}
        return {"source": str(self.path), "kind": self.kind,
                "run": str(self.run_dir) if self.run_dir else None, "base_model": base,
                "dataset": rec.get("dataset"), "fim_format": rec.get("fim_format"),
                "finetune": rec.get("finetune"), "lora": rec.get("lora"),
                "merge": {k: self.merge_record[k] for k in ("dtype", "max_abs_logit_diff")
                          if k in self.merge_record} or None}


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve(path: str | Path) -> Source:
    path = Path(path)
    if loader.is_run_dir(path):
        cfg = loader.run_config(path)
        loader.check_run_finished(path, cfg.model.finetune)
        kind = "lora-run" if cfg.model.finetune == "lora" else "full-run"
        if kind == "lora-run" and not (path / "adapter_config.json").is_file():
            raise CodetuneError(f"the adapter in {path} cannot be merged: adapter_config.json "
                                "is missing; give the folder `codetune train` wrote, intact")
        return Source(path.resolve(), kind, path.resolve(), cfg, _json(path / "run.json"))
    if (path / "config.json").is_file():
        merge = _json(path / "codetune_merge.json")
        run = Path(merge["run"]) if isinstance(merge.get("run"), str) else None
        src = Source(path.resolve(), "model", merge_record=merge)
        if run is not None and loader.is_run_dir(run):
            src.run_dir, src.cfg = run, loader.run_config(run)
            src.run_record = _json(run / "run.json")
        return src
    raise CodetuneError(f"{path} is neither a codetune run folder (run.json + config.yaml) nor "
                        "a model folder (config.json); give the folder `codetune train` or "
                        "`codetune merge` wrote")


def model_type(src: Source) -> str | None:
    """The architecture (HF model_type) of what will be exported, read from config files only
    (the base model's for a LoRA run: a local folder, or the Hub cache); None when unknown."""
    if src.kind != "lora-run":
        return _json(src.path / "config.json").get("model_type")
    try:
        from transformers import AutoConfig  # heavy: transformers

        cfg = AutoConfig.from_pretrained(src.cfg.model.name, revision=src.cfg.model.revision,
                                         trust_remote_code=False)
        return getattr(cfg, "model_type", None)
    except (OSError, ValueError):
        return None  # the merge will say what is wrong with the base


def merged(src: Source, work: Path, dtype: str, echo: Any) -> tuple[Path, dict[str, Any] | None]:
    """A model folder for `src`: a LoRA run merged into `work/merged`, else the folder itself."""
    if src.kind != "lora-run":
        return src.path, None

    echo(f"merging the adapter of {src.path} into its base ({dtype}) ...")
    try:
        record = merge(src.path, work / "merged", dtype=dtype, flag="--merge-dtype", echo=echo)
    except CodetuneError:
        raise
    except Exception as e:  # peft, safetensors, torch: whatever stops the merge, said in a line
        detail = str(e).splitlines()[0] if str(e) else ""
        raise CodetuneError(f"the adapter of {src.path} cannot be merged into its base "
                            f"({type(e).__name__}: {detail}); check the run folder, or train "
                            "it again") from None
    echo(f"merged: logits within {record['max_abs_logit_diff']:.3g} of base + adapter")
    return work / "merged", record

