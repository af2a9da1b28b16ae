"""Training measurements: throughput, MFU, the loss curve and the run summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

# Dense bf16 peak of common training GPUs, TFLOP/s (vendor datasheets, no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0,
               "L4": 121.0, "RTX 4090": 165.0, "RTX 3090": 71.0, "A6000": 155.0, "V100": 125.0}


def peak_flops() -> float | None:
    """Peak bf16 FLOP/s of the current CUDA device, if known (None on CPU / unknown GPUs)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        name = torch.cuda.get_device_name()
    except Exception:  # pragma: no cover - no torch / driver trouble
        return None
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


class Throughput:
    """Tokens/s and MFU between two log calls. `flops_per_token` maps convention name ->
    training FLOPs per token (see `model.flops_per_token`)."""

    def __init__(self, tokens_per_step: int, flops_per_token: dict[str, float],
                 world_size: int = 1):
        self.tokens_per_step = tokens_per_step
        self.flops = flops_per_token
        self.peak = peak_flops()
        self.world_size = world_size
        self._t = time.perf_counter()
        self._step = 0
        self.history: list[float] = []

    def reset(self, step: int) -> None:
        self._t, self._step = time.perf_counter(), step

    def measure(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        steps, dt = step - self._step, now - self._t
        self._t, self._step = now, step
        if steps <= 0 or dt <= 0:
            return {}
        tps = steps * self.tokens_per_step / dt
        self.history.append(tps)
        out = {"tokens_per_second": round(tps, 1)}
        if self.peak:
            for name, f in self.flops.items():
                out[f"mfu_{name}"] = round(tps * f / (self.peak * self.world_size), 4)
        return out


def plot_losses(log_history: list[dict[str, Any]], path: Path) -> None:
    """loss_curve.png: train loss and every eval loss against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list[int], list[float]]] = {}
    for rec in log_history:
        for key, label in (("loss", "train"), ("eval_ltr_loss", "eval (left-to-right)"),
                           ("eval_fim_loss", "eval (FIM)")):
            if key in rec and "step" in rec:
                xs, ys = series.setdefault(label, ([], []))
                xs.append(rec["step"])
                ys.append(rec[key])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("codetune training")
    ax.grid(alpha=0.3)
    if series:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_metrics(path: Path, log_history: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"summary": summary, "log_history": log_history}, indent=1))
    tmp.replace(path)
