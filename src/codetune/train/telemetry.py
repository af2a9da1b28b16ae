"""Training measurements: parameter counts and FLOPs per token, throughput and MFU, the loss
curve and the run summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
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
    training FLOPs per token (see `flops_per_token`)."""

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


# ---------------------------------------------------------------------------------------------
# Sizes and FLOPs


def _logical_numel(p: Any) -> int:
    # bitsandbytes Params4bit store two 4-bit values per uint8; the quant state keeps the shape
    qs = getattr(p, "quant_state", None)
    shape = getattr(qs, "shape", None)
    if shape is not None:
        n = 1
        for d in shape:
            n *= int(d)
        return n
    return p.numel()


def count_params(model: Any) -> dict[str, int]:
    """Parameter counts, logical (a 4-bit weight counts as its unpacked shape).

    total / trainable        every parameter once (tied matrices once), as peft reports them.
    matmul_non_embedding     N for MFU: in*out of every matmul layer of the base model
                             (Linear, bitsandbytes Linear4bit/8bitLt, GPT-2 Conv1D), which leaves
                             out the input and position embeddings but includes the LM head, also
                             when it is tied to the input embedding (it is a matmul all the same).
    matmul_adapter           the same for LoRA's lora_A / lora_B layers (not part of N).
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    total = trainable = 0
    for p in model.parameters():
        n = _logical_numel(p)
        total += n
        if p.requires_grad:
            trainable += n
    matmul = adapter = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            n = int(m.in_features) * int(m.out_features)
        elif isinstance(m, Conv1D):
            n = int(m.weight.shape[0]) * int(m.weight.shape[1])
        else:
            continue
        if any(part.startswith("lora_") for part in name.split(".")):
            adapter += n
        else:
            matmul += n
    return {"total": total, "trainable": trainable, "matmul_non_embedding": matmul,
            "matmul_adapter": adapter}


def _cfg_get(c: Any, *names: str) -> Any:
    for n in names:
        v = getattr(c, n, None)
        if v is not None:
            return v
    raise ValueError(f"model config has none of {names}")


def flops_per_token(model_cfg_like: Any, n_matmul: int | dict[str, int], seq_len: int,
                    n_adapter: int = 0) -> dict[str, float]:
    """Training FLOPs per token under the two conventions MFU is reported in.

    N = `n_matmul`: the matmul parameters excluding the input embedding and including the LM head
    (`count_params(model)["matmul_non_embedding"]`; the whole count_params dict is accepted, and
    then its `matmul_adapter` is used as `n_adapter`). A matmul with N weights costs 2N FLOPs per
    token forward, and 2N more for each gradient in backward (w.r.t. inputs, w.r.t. weights).

    "6N"            Kaplan et al. 2020 (and Chinchilla): forward 2N + backward 4N, attention
                    scores ignored. The number most MFU figures use; it counts the weight
                    gradients of every matmul, as in full fine-tuning.
    "4N+attention"  what LoRA/QLoRA training on this model actually computes: forward 2N +
                    input gradients 2N (the frozen base weights get no weight gradient), + 6 *
                    n_adapter for the adapters, + attention 12 * n_layer * d_attn * seq_len, the
                    attention term of PaLM (Chowdhery et al. 2022, App. B: QK^T and AV, 2 * 2 *
                    seq_len * d_attn per layer forward, 3x for forward + backward, the causal
                    mask not discounted). d_attn = n_heads * head_dim.

    Gradient-checkpointing's recomputed forward is not counted in either (MFU, not HFU). For the
    seed's run (starcoderbase-1b, N = 1.12e9, seq 2048, 4,261 tokens/s on an A100 at 312 TFLOP/s)
    these give 9.2 % and 7.8 % MFU; the "7-8 %" noted in the mission is the second.

    `model_cfg_like`: a transformers config, a model (its `.config` is used) or a mapping with
    num_hidden_layers / num_attention_heads / hidden_size (GPT-BigCode's n_layer / n_head /
    n_embd also work) and optionally head_dim.
    """
    if isinstance(n_matmul, dict):
        n_adapter = n_adapter or int(n_matmul.get("matmul_adapter", 0))
        n_matmul = int(n_matmul["matmul_non_embedding"])
    c = model_cfg_like
    if isinstance(c, dict):
        c = SimpleNamespace(**c)
    c = getattr(c, "config", c)
    if hasattr(c, "get_text_config"):
        c = c.get_text_config()
    n_layer = int(_cfg_get(c, "num_hidden_layers", "n_layer"))
    n_head = int(_cfg_get(c, "num_attention_heads", "n_head"))
    head_dim = getattr(c, "head_dim", None) or int(_cfg_get(c, "hidden_size", "n_embd")) // n_head
    attention = 12.0 * n_layer * n_head * int(head_dim) * int(seq_len)
    return {"6N": 6.0 * n_matmul,
            "4N+attention": 4.0 * n_matmul + 6.0 * n_adapter + attention}


def _clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_callback(live: bool, stream: Any = None):
    """A TrainerCallback that shows training as one live bar on a terminal (step, loss,
    tokens/s, ETA; evaluation as a second bar) and, when output goes to a file or a CI log, one
    plain line per logging step and per evaluation. It replaces the Trainer's own printer,
    which prints raw dicts of strings."""
    import sys

    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    out = stream or sys.stderr

    class Progress(TrainerCallback):
        bar = eval_bar = None
        last: dict[str, float] = {}

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.step0 = time.perf_counter(), state.global_step
            if live:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train",
                                unit="step", file=out, dynamic_ncols=True)

        def _eta(self, state) -> str:
            done = state.global_step - self.step0
            if done <= 0:
                return "?"
            per = (time.perf_counter() - self.t0) / done
            return _clock(per * (state.max_steps - state.global_step))

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" in logs:
                self.last = {"loss": float(logs["loss"]),
                             "tok/s": float(logs.get("tokens_per_second", 0) or 0)}
                if self.bar is not None:
                    self.bar.set_postfix_str(f"loss {self.last['loss']:.4f}, "
                                             f"{self.last['tok/s']:,.0f} tok/s", refresh=True)
                else:
                    tps = f"  {self.last['tok/s']:,.0f} tok/s" if self.last["tok/s"] else ""
                    print(f"step {state.global_step}/{state.max_steps}  loss "
                          f"{self.last['loss']:.4f}{tps}  eta {self._eta(state)}", file=out,
                          flush=True)

        def on_prediction_step(self, args, state, control, **kw):
            if live:
                if self.eval_bar is None:
                    self.eval_bar = tqdm(desc="eval", unit="batch", leave=False, file=out,
                                         dynamic_ncols=True)
                self.eval_bar.update(1)

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if self.eval_bar is not None:
                self.eval_bar.close()
                self.eval_bar = None
            losses = {k.removeprefix("eval_").removesuffix("_loss"): v
                      for k, v in (metrics or {}).items()
                      if k.startswith("eval_") and k.endswith("_loss")}
            if losses:
                text = ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
                line = f"step {state.global_step}/{state.max_steps}  eval loss: {text}"
                if self.bar is not None:
                    self.bar.write(line, file=out)
                else:
                    print(line, file=out, flush=True)

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return Progress()
