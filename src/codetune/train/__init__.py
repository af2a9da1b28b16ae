"""`codetune train`: the trainer, LoRA setup, the loss, checkpoints, the run folder and
telemetry. `train` is the entry point."""

from codetune.train.rundir import resume_config
from codetune.train.trainer import TrainResult, train

__all__ = ["TrainResult", "resume_config", "train"]
