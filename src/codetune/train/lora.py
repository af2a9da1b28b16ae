"""LoRA on a loaded base: which modules to adapt, k-bit preparation, added FIM tokens.

`prepare_for_training` turns a model from `model.load.load_model` into what the Trainer
trains: a PeftModel (LoRA) or the model itself (full fine-tuning), with gradient
checkpointing and, for a run that added FIM tokens, their embedding rows trainable."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from codetune.errors import CodetuneError

if TYPE_CHECKING:
    from codetune.config import RunConfig

log = logging.getLogger(__name__)

_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    # the reference notebook's list; q_attn exists only where GPT-BigCode has cross-attention
    "gpt_bigcode": ("c_proj", "c_attn", "q_attn", "c_fc"),
    "llama": _LLAMA_LIKE,  # CodeLlama, DeepSeek-Coder (v1) are model_type llama
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,  # Qwen2.5-Coder
    "qwen3": _LLAMA_LIKE,
    "starcoder2": ("q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"),
}


def _is_lora_target(module: Any) -> bool:
    import torch
    from transformers.pytorch_utils import Conv1D

    # bitsandbytes Linear4bit / Linear8bitLt subclass nn.Linear
    return isinstance(module, torch.nn.Linear | torch.nn.Embedding | Conv1D)


def _matches(target: str, module_name: str) -> bool:
    # peft's rule for a list entry: the full name, or its dotted suffix
    return module_name == target or module_name.endswith("." + target)


def lora_targets(model: Any, spec: str) -> list[str] | str:
    """The `target_modules` for peft from `lora.target_modules`.

    "all-linear" passes through (peft: every linear layer but the LM head). "auto" uses
    `LORA_TARGETS[model.config.model_type]`, keeping the names present in this model (the
    table covers variants, such as GPT-BigCode's cross-attention `q_attn`, which no code
    model has; an absent one is logged at debug level). A comma list is checked against the
    model: a name matching no linear/embedding layer is an error, except names of this
    architecture's table, which are dropped with a warning (so the reference notebook's `q_attn` works).
    """
    spec = spec.strip()
    if spec == "all-linear":
        return spec
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    names = [n for n, m in model.named_modules() if _is_lora_target(m)]
    table = LORA_TARGETS.get(model_type or "", ())
    if spec == "auto":
        if not table:
            raise CodetuneError(
                f"no LoRA target table for model type {model_type!r}; set "
                "lora.target_modules=all-linear (every linear layer except the LM head) or name "
                f"the layers, e.g. lora.target_modules={','.join(_linear_leaf_names(model)[:4])}")
        wanted, known = list(table), set(table)
    else:
        wanted = list(dict.fromkeys(x.strip() for x in spec.split(",") if x.strip()))
        known = set(table)
    kept, absent = [], []
    for target in wanted:
        (kept if any(_matches(target, n) for n in names) else absent).append(target)
    unknown = [t for t in absent if t not in known]
    if unknown:
        raise CodetuneError(
            f"lora.target_modules names {', '.join(unknown)}, which match no linear layer of "
            f"this {model_type} model; its linear layers include "
            f"{', '.join(_linear_leaf_names(model)[:8])} (or use auto / all-linear)")
    if absent:  # "auto": expected (the table covers variants), so said only at debug level
        (log.debug if spec == "auto" else log.warning)(
            "LoRA targets %s do not exist in this %s model; training %s",
            ", ".join(absent), model_type, ", ".join(kept))
    if not kept:
        raise CodetuneError(f"none of the LoRA targets {', '.join(wanted)} exist in this model; "
                            "use lora.target_modules=all-linear")
    return kept


def _linear_leaf_names(model: Any) -> list[str]:
    """Distinct last components of the linear layers' names (the LM head last), as examples."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    leaves = [n.rsplit(".", 1)[-1] for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear | Conv1D) and "lora_" not in n and m is not head]
    return list(dict.fromkeys(leaves)) or ["lm_head"]


def _is_bnb_quantized(model: Any) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False)
                or getattr(model, "is_loaded_in_8bit", False))


def _enable_checkpointing(model: Any) -> None:
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def prepare_for_training(model: Any, cfg: RunConfig, new_token_ids: Sequence[int] = ()) -> Any:
    """Make `model` trainable as `cfg` says and return it (a PeftModel for LoRA).

    Quantized models go through `peft.prepare_model_for_kbit_training` (freezes the base, casts
    norms/embeddings to float32). Gradient checkpointing, when on, is non-reentrant (the
    reentrant variant needs inputs that require grad and breaks with frozen embeddings).

    `new_token_ids` are tokens added to the tokenizer (rows the caller already created with
    `model.resize_token_embeddings(len(tokenizer))`). With LoRA exactly those rows train, via
    peft's `trainable_token_indices`: the input embedding's rows, and the LM head's rows too —
    through the tie when the head shares the embedding matrix, or as their own trainable rows
    when it does not. peft stores the rows' values (not deltas) in the adapter
    (`...token_adapter.trainable_tokens_delta`), so the adapter is complete without the whole
    embedding matrix. peft's default ("auto") would still save both full matrices once it sees
    the vocabulary resized (2 x 32k x 4096 bf16 = 0.5 GB for a 7B Llama, ten times its LoRA
    weights), so the returned model's `save_pretrained` — what the Trainer calls — defaults to
    `save_embedding_layers=False`. Loading needs the base resized to the run's tokenizer first,
    as `codetune.inference` does.
    """
    gc = cfg.train.gradient_checkpointing
    quantized = _is_bnb_quantized(model)
    if cfg.model.finetune == "full":
        if quantized:
            raise CodetuneError("model.finetune=full cannot train quantized weights; load with "
                                "model.quantization=none")
        for p in model.parameters():
            p.requires_grad_(True)
        if gc:
            _enable_checkpointing(model)
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if quantized:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*gradient_checkpointing_enable.*",
                                        category=FutureWarning)
                model = prepare_model_for_kbit_training(
                    model, use_gradient_checkpointing=gc,
                    gradient_checkpointing_kwargs={"use_reentrant": False})
        elif gc:
            _enable_checkpointing(model)
        lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          bias=cfg.lora.bias, task_type="CAUSAL_LM",
                          target_modules=lora_targets(model, cfg.lora.target_modules),
                          trainable_token_indices=_token_indices(model, new_token_ids))
        model = get_peft_model(model, lcfg)
        if new_token_ids:
            _save_rows_not_matrices(model)
    if gc:
        model.config.use_cache = False
    return model


def _save_rows_not_matrices(model: Any) -> None:
    save = model.save_pretrained

    def save_pretrained(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("save_embedding_layers", False)
        return save(*args, **kwargs)

    model.save_pretrained = save_pretrained


def _token_indices(model: Any, new_token_ids: Sequence[int]) -> list[int] | dict | None:
    ids = sorted({int(i) for i in new_token_ids})
    if not ids:
        return None
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    rows = emb.weight.shape[0]
    if ids[0] < 0 or ids[-1] >= rows:
        raise ValueError(f"new token ids {ids[0]}..{ids[-1]} are outside the embedding matrix "
                         f"({rows} rows); call model.resize_token_embeddings(len(tokenizer)) "
                         "first")
    if head is None or head.weight is emb.weight:
        return ids  # peft ties the LM head's rows to the embedding's
    names = {id(m): n for n, m in model.named_modules()}
    return {names[id(emb)]: ids, names[id(head)]: ids}
