"""The base model: how it is loaded and how it is made trainable (where it comes from is
`codetune.model.source`; its parameter counts and FLOPs are in `codetune.metrics`).

    load_tokenizer(cfg.model or name)    the one tokenizer loader, with errors users can act on
    load_model(cfg, tokenizer)           4-bit NF4/FP4 (QLoRA), 8-bit or unquantized, on the right device
    prepare_for_training(model, cfg)     k-bit preparation, non-reentrant checkpointing, LoRA
    lora_targets(model, spec)            the LoRA target table per architecture

torch, transformers, peft and bitsandbytes are imported inside the functions that use them, so
`import codetune.model` stays cheap and works without a GPU stack.
"""


from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codetune.config import ModelConfig, RunConfig
from codetune.errors import CodetuneError
from codetune.model.source import ModelSource, hf_call, resolve_source

if TYPE_CHECKING:
    import torch


log = logging.getLogger(__name__)


__all__ = [
    "available_memory",
    "compute_dtype",
    "gguf_to_folder",
    "inference_quantization",
    "load_model",
    "load_tokenizer",
    "resolve_attn_implementation",
]


def _model_cfg(cfg: Any) -> ModelConfig:
    return getattr(cfg, "model", cfg)


def compute_dtype(model_cfg: ModelConfig) -> torch.dtype:
    """The compute dtype: `model.dtype`, or for "auto" bfloat16 on a CUDA GPU that has it and
    float32 otherwise (CPU, or an older GPU; float16 needs loss scaling, so it is opt-in)."""
    import torch  # heavy: torch

    model_cfg = _model_cfg(model_cfg)
    if model_cfg.dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, model_cfg.dtype)


def _weight_dtype(model_cfg: ModelConfig) -> torch.dtype:
    # Full fine-tuning keeps float32 master weights under dtype=auto (the Trainer autocasts to
    # bf16): AdamW updates of ~lr * 1e-3 vanish when added to bf16 weights (8-bit mantissa).
    # LoRA trains float32 adapters (peft upcasts them), so the frozen base can stay bf16.
    import torch  # heavy: torch

    if model_cfg.finetune == "full" and model_cfg.dtype == "auto":
        return torch.float32
    return compute_dtype(model_cfg)


def default_device_map() -> dict[str, Any] | None:
    """The whole model on one device: this rank's GPU under torchrun/accelerate (LOCAL_RANK),
    else GPU 0, else the CPU. 4-bit models must be placed per rank like this for DDP.
    Under FSDP: None, FSDP places (and shards) the weights itself."""
    import torch  # heavy: torch

    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return None
    local_rank = os.environ.get("LOCAL_RANK")
    if torch.cuda.is_available():
        return {"": int(local_rank) if local_rank is not None else 0}
    return {"": "cpu"}


def resolve_attn_implementation(requested: str, model_class: Any, dtype: torch.dtype,
                                cuda: bool | None = None) -> str | None:
    """The attention kernel to ask transformers for.

    auto: flash_attention_2 when `flash_attn` is importable, CUDA is present, the dtype is
    bf16/fp16 and the model class declares `_supports_flash_attn`; else sdpa when the class has
    `_supports_sdpa`; else eager. An unknown class (remote code) gets None: transformers' own
    default (sdpa, falling back to eager). An explicit choice the machine cannot run is an error.
    """
    import torch  # heavy: torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    has_fa = importlib.util.find_spec("flash_attn") is not None
    supports_fa = bool(getattr(model_class, "_supports_flash_attn", False)
                       or getattr(model_class, "_supports_flash_attn_2", False))
    supports_sdpa = bool(getattr(model_class, "_supports_sdpa", False))
    cls_name = getattr(model_class, "__name__", "this model")
    if requested == "flash_attention_2":
        if not cuda:
            raise CodetuneError(
                "model.attn_implementation=flash_attention_2 needs a CUDA GPU and none is "
                "visible; use model.attn_implementation=auto (sdpa on this machine)")
        if not has_fa:
            raise CodetuneError(
                "model.attn_implementation=flash_attention_2 needs the flash_attn package: "
                "pip install flash-attn --no-build-isolation, or use "
                "model.attn_implementation=sdpa")
        if model_class is not None and not supports_fa:
            raise CodetuneError(f"{cls_name} does not support flash_attention_2; use "
                                "model.attn_implementation=sdpa (or auto)")
        return "flash_attention_2"
    if requested == "sdpa":
        if model_class is not None and not supports_sdpa:
            raise CodetuneError(f"{cls_name} does not support sdpa attention; use "
                                "model.attn_implementation=eager (or auto)")
        return "sdpa"
    if requested == "eager":
        return "eager"
    if cuda and has_fa and supports_fa and dtype in (torch.bfloat16, torch.float16):
        return "flash_attention_2"
    if model_class is None:
        return None
    return "sdpa" if supports_sdpa else "eager"


def _quantization_config(model_cfg: ModelConfig, dtype: torch.dtype) -> Any:
    if model_cfg.quantization == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise CodetuneError(
            f"model.quantization={model_cfg.quantization} needs bitsandbytes: pip install "
            "bitsandbytes (or set model.quantization=none to load unquantized weights)")
    from transformers import BitsAndBytesConfig  # heavy: transformers

    if model_cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    # FSDP shards flat parameters of one dtype: under FSDP the packed 4-bit weights must be
    # stored in the compute dtype (the FSDP+QLoRA recipe of Answer.AI / the peft docs).
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=model_cfg.quant_type,
        bnb_4bit_use_double_quant=model_cfg.double_quant, bnb_4bit_compute_dtype=dtype,
        **({"bnb_4bit_quant_storage": dtype} if fsdp else {}))


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def load_tokenizer(model: ModelConfig | RunConfig | str, trust_remote_code: bool = False) -> Any:
    """The one way codetune loads a tokenizer, as training, preview, stats, eval and serving
    all see it: a Hub id, a model folder or .gguf file (`model.source`), or a folder holding
    tokenizer files only (a run folder: the run's tokenizer, with any FIM tokens it added; a
    tokenizer saved on its own). Unchanged: FIM tokens are added by `tokens.fim` when asked."""
    from transformers import AutoTokenizer  # heavy: transformers

    if isinstance(model, str):
        model = ModelConfig(name=model, trust_remote_code=trust_remote_code)
    model_cfg = _model_cfg(model)
    folder = Path(model_cfg.name or "")
    if (folder.is_dir() and not (folder / "config.json").is_file()
            and any((folder / f).is_file() for f in _TOKENIZER_FILES)):
        try:
            return AutoTokenizer.from_pretrained(
                str(folder), trust_remote_code=model_cfg.trust_remote_code)
        except (OSError, ValueError) as e:
            raise CodetuneError(f"could not load the tokenizer in {folder}: {e}; give a folder "
                                "written by save_pretrained, or a Hub model id") from None
    src = resolve_source(model_cfg.name, model_cfg.revision, hash_weights=False)
    return hf_call(src, "tokenizer", AutoTokenizer.from_pretrained, src.path,
                    trust_remote_code=model_cfg.trust_remote_code, **src.load_kwargs())


def available_memory() -> int:
    """Bytes free on the device inference will use: this GPU's free memory, else the
    machine's available RAM."""
    import torch  # heavy: torch

    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as fh:
            info = dict(line.split(":", 1) for line in fh)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def parameter_count(model_cfg: ModelConfig) -> int:
    """Parameters of the model `model_cfg` names, counted on the meta device (no weights)."""
    from accelerate import init_empty_weights  # heavy: accelerate
    from transformers import AutoConfig, AutoModelForCausalLM  # heavy: transformers

    src = resolve_source(model_cfg.name, model_cfg.revision, hash_weights=False)
    hf_config = hf_call(src, "model", AutoConfig.from_pretrained, src.path,
                        trust_remote_code=model_cfg.trust_remote_code, **src.load_kwargs())
    with init_empty_weights():
        m = AutoModelForCausalLM.from_config(hf_config,
                                             trust_remote_code=model_cfg.trust_remote_code)
    return sum(p.numel() for p in m.parameters())


def inference_quantization(model_cfg: ModelConfig, requested: str, trained: str) -> str:
    """How to load weights for generation and scoring. `requested` "auto" means unquantized
    where it fits (a run trained in 4 bits is dequantized): bitsandbytes' 4-bit matmuls are
    slow, far slower on a CPU (a real 0.5B model's eval did not finish one batch of 8 holes in
    8 minutes in 4 bits; 53-100 s in float32). It falls back to the run's own quantization
    when the unquantized weights would not fit in 70 % of the free memory."""
    if requested != "auto":
        return requested
    if trained == "none":
        return "none"
    try:
        need = parameter_count(model_cfg) * compute_dtype(model_cfg).itemsize
    except Exception as e:  # unknown architecture: keep what training used
        log.warning("could not size %s (%s); loading it %s as trained", model_cfg.name, e,
                    trained)
        return trained
    if need <= 0.7 * available_memory():
        return "none"
    log.warning("%s needs %.1f GB unquantized, more than fits; loading it %s as trained",
                model_cfg.name, need / 1e9, trained)
    return trained


def load_model(cfg: RunConfig | ModelConfig, tokenizer: Any = None,
               device_map: Any = None) -> Any:
    """Load the base causal LM as `cfg.model` says (quantization, dtype, attention kernel).

    `device_map` defaults to `default_device_map()` (one whole copy per process). With a
    `tokenizer` longer than the embedding matrix (tokens added), the embeddings are resized
    to `len(tokenizer)`; a model whose vocabulary is padded past the tokenizer is left alone.
    """
    from transformers import AutoConfig, AutoModelForCausalLM  # heavy: transformers

    model_cfg = _model_cfg(cfg)
    src = resolve_source(model_cfg.name, model_cfg.revision, hash_weights=False)
    remote = model_cfg.trust_remote_code
    hf_config = hf_call(src, "model", AutoConfig.from_pretrained, src.path,
                         trust_remote_code=remote, **src.load_kwargs())
    model_class = _causal_lm_class(hf_config, remote)
    dtype = compute_dtype(model_cfg)
    attn = resolve_attn_implementation(model_cfg.attn_implementation, model_class, dtype)
    quant = _quantization_config(model_cfg, dtype)
    kw: dict[str, Any] = {"dtype": _weight_dtype(model_cfg) if quant is None else dtype,
                          "device_map": device_map or default_device_map(),
                          "trust_remote_code": remote, **src.load_kwargs()}
    if attn is not None:
        kw["attn_implementation"] = attn
    if src.kind == "gguf" and quant is not None:
        # transformers will not quantize while reading a GGUF file: dequantize it to a temporary
        # folder first (TMPDIR; as large as the unquantized model), then load that quantized.
        with tempfile.TemporaryDirectory(prefix="codetune-gguf-") as tmp:
            log.warning("dequantizing %s into %s to load it in %s", src.gguf_file, tmp,
                        model_cfg.quantization)
            gguf_to_folder(src, tmp, dtype=dtype, trust_remote_code=remote)
            del kw["gguf_file"]
            model = hf_call(src, "model", AutoModelForCausalLM.from_pretrained, tmp,
                             quantization_config=quant, **kw)
    else:
        if quant is not None:
            kw["quantization_config"] = quant
        model = hf_call(src, "model", AutoModelForCausalLM.from_pretrained, src.path, **kw)
        if src.kind == "gguf":
            _forget_gguf(model)
    if tokenizer is not None:
        rows = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > rows:
            model.resize_token_embeddings(len(tokenizer))
        if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
            model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _forget_gguf(model: Any) -> None:
    """Drop the GGUF quantization marker of a model read from a .gguf file.

    The weights are already dequantized (plain float tensors), but the marker makes transformers
    refuse `save_pretrained` and the Trainer treat the model as "purely quantized"."""
    model.hf_quantizer = None
    # The Trainer reads `is_quantized` and then dereferences `hf_quantizer`: both must go, or a
    # dequantized GGUF base fails with "'NoneType' object has no attribute
    # 'quantization_config'" when trained with plain LoRA or in full.
    model.is_quantized = False
    for attr in ("quantization_method", "is_loaded_in_4bit", "is_loaded_in_8bit"):
        if attr in vars(model):
            delattr(model, attr)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def gguf_to_folder(source: ModelSource | str, out_dir: str | Path, dtype: Any = None,
                   trust_remote_code: bool = False) -> Path:
    """Write a .gguf model as an ordinary transformers folder (config, safetensors, tokenizer),
    dequantized to `dtype` (default float32). Needs the `gguf` package."""
    import torch  # heavy: torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: transformers

    src = source if isinstance(source, ModelSource) else resolve_source(source, hash_weights=False)
    if src.kind != "gguf":
        raise ValueError(f"{src.path} is not a .gguf source")
    kw = {"trust_remote_code": trust_remote_code, **src.load_kwargs()}
    model = hf_call(src, "model", AutoModelForCausalLM.from_pretrained, src.path,
                     dtype=dtype or torch.float32, device_map={"": "cpu"}, **kw)
    _forget_gguf(model)
    out = Path(out_dir)
    model.save_pretrained(str(out))
    hf_call(src, "tokenizer", AutoTokenizer.from_pretrained, src.path, **kw).save_pretrained(
        str(out))
    return out


def _causal_lm_class(hf_config: Any, trust_remote_code: bool) -> Any:
    """The transformers class that will be instantiated, or None for remote code."""
    # heavy: transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(hf_config)]
    except KeyError:
        pass
    auto_map = getattr(hf_config, "auto_map", None) or {}
    if "AutoModelForCausalLM" in auto_map:
        if not trust_remote_code:
            raise CodetuneError(
                f"this model ({hf_config.model_type}) ships its own modelling code; run it only "
                "if you trust its repository: model.trust_remote_code=true") from None
        return None
    raise CodetuneError(
        f"model type {hf_config.model_type!r} is not a causal language model transformers can "
        "train (no AutoModelForCausalLM class); pick a decoder-only code model") from None


