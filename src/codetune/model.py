"""The base model: where it comes from, how it is loaded, and how it is made trainable.

    resolve_source(name, revision)       Hub id / local folder / local .gguf  -> ModelSource
    load_tokenizer(cfg.model)            the tokenizer, with errors users can act on
    load_model(cfg, tokenizer)           4-bit NF4/FP4 (QLoRA), 8-bit or unquantized, on the right device
    prepare_for_training(model, cfg)     k-bit preparation, non-reentrant checkpointing, LoRA
    lora_targets(model, spec)            the LoRA target table per architecture
    count_params(model)                  totals and N (the matmul parameters) for MFU
    flops_per_token(cfg, N, seq_len)     the two MFU conventions

torch, transformers, peft and bitsandbytes are imported inside the functions that use them, so
`import codetune.model` stays cheap and works without a GPU stack.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

from codetune.errors import CodetuneError

if TYPE_CHECKING:
    import torch

    from codetune.config import ModelConfig, RunConfig

log = logging.getLogger(__name__)

__all__ = [
    "LORA_TARGETS",
    "ModelSource",
    "compute_dtype",
    "count_params",
    "flops_per_token",
    "gguf_to_folder",
    "load_model",
    "load_tokenizer",
    "lora_targets",
    "prepare_for_training",
    "resolve_attn_implementation",
    "resolve_source",
]

# ---------------------------------------------------------------------------------------------
# Where the model comes from

WEIGHT_GLOBS = ("*.safetensors", "*.bin")
NOT_WEIGHTS = {"training_args.bin", "optimizer.bin", "scheduler.bin"}
_HASH_CHUNK = 8 << 20  # bytes read at a time: a 14 GB checkpoint is hashed in constant memory


@dataclass(frozen=True)
class ModelSource:
    """Where a base model comes from, and what identifies it in a run record.

    kind      "hub": `path` is a Hub id (`revision` a branch, tag or commit; None = default branch).
              "folder": `path` is a local folder with config.json and weight files.
              "gguf": `path` is the folder holding the file `gguf_file` (transformers loads it
              with `from_pretrained(path, gguf_file=gguf_file)` and dequantizes it).
    identity  "hub:<id>@<revision or main>", or for local weights "sha256:<hex>": for a .gguf the
              file's own sha256 (what `sha256sum` prints); for a folder the sha256 of the lines
              "<relative path>\\0<sha256 of the file>\\n" over its *.safetensors / *.bin files,
              sorted by path. None when resolved with `hash_weights=False`.
    """

    kind: Literal["hub", "folder", "gguf"]
    path: str
    revision: str | None = None
    gguf_file: str | None = None
    identity: str | None = None

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `from_pretrained(self.path, **kwargs)`."""
        kw: dict[str, Any] = {}
        if self.revision is not None:
            kw["revision"] = self.revision
        if self.gguf_file is not None:
            kw["gguf_file"] = self.gguf_file
        return kw

    def record(self) -> dict[str, Any]:
        """A JSON-ready description for the run record."""
        return asdict(self)


def resolve_source(name: str | None, revision: str | None = None, *,
                   hash_weights: bool = True) -> ModelSource:
    """Classify `name` as a local .gguf file, a local model folder or a Hub id.

    A path that exists wins over a Hub id of the same spelling (as in transformers). A name that
    looks like a path (ends in .gguf, starts with / . ~, or has more than one slash) but does
    not exist is an error here rather than a confusing Hub lookup. Nothing is cached: hashing
    streams every weight file once per call (pass `hash_weights=False` when only loading).
    """
    if not name or not str(name).strip():
        raise CodetuneError("no base model given: set model.name (or --model) to a Hub id such as "
                            "bigcode/starcoderbase-1b, a local model folder, or a .gguf file")
    name = str(name).strip()
    path = Path(name).expanduser()
    if path.exists():
        if revision is not None:
            log.warning("model.revision=%s is ignored for the local path %s", revision, path)
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise CodetuneError(
                    f"{path} is a file but not a .gguf file; give the model folder (with "
                    "config.json and the weights) or a .gguf file")
            return _gguf_source(path, hash_weights)
        return _folder_source(path, hash_weights)
    if _looks_like_path(name):
        raise CodetuneError(
            f"model path {name} does not exist; check the path (relative paths are taken from "
            f"{Path.cwd()}), or give a Hub id such as bigcode/starcoderbase-1b")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise CodetuneError(
            f"model {name!r} is neither an existing local path nor a valid Hub id; give a Hub "
            "id (org/name, e.g. bigcode/starcoderbase-1b), a local model folder or a .gguf file"
        ) from None
    return ModelSource("hub", name, revision, None, f"hub:{name}@{revision or 'main'}")


def _looks_like_path(name: str) -> bool:
    return (name.lower().endswith(".gguf") or name.startswith(("/", ".", "~"))
            or name.count("/") > 1 or "\\" in name or os.path.isabs(name))


def _gguf_source(path: Path, hash_weights: bool) -> ModelSource:
    _require_gguf(path)
    path = path.resolve()
    ident = "sha256:" + _sha256_file(path).hex() if hash_weights else None
    return ModelSource("gguf", str(path.parent), None, path.name, ident)


def _require_gguf(path: Path) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise CodetuneError(
            f"{path} is a GGUF file, and reading GGUF needs the `gguf` package: "
            "pip install gguf (transformers then dequantizes the file on load)")


def _folder_source(path: Path, hash_weights: bool) -> ModelSource:
    path = path.resolve()
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _gguf_source(ggufs[0], hash_weights)
        if ggufs:
            raise CodetuneError(
                f"{path} holds several .gguf files ({', '.join(g.name for g in ggufs[:4])}); "
                f"name one: model.name={ggufs[0]}")
        if (path / "adapter_config.json").is_file():
            raise CodetuneError(
                f"{path} is a LoRA adapter, not a base model; give its base model as model.name "
                "(its adapter_config.json names it under base_model_name_or_path), or merge it "
                "first with `codetune merge`")
        raise CodetuneError(
            f"{path} is not a model folder: it has no config.json; give the folder written by "
            "save_pretrained (config.json, tokenizer files, *.safetensors) or a .gguf file")
    weights = _weight_files(path)
    if not weights:
        raise CodetuneError(
            f"{path} has a config.json but no weight files (*.safetensors or *.bin); copy the "
            "weights into it, or give a Hub id")
    ident = None
    if hash_weights:
        outer = hashlib.sha256()
        for f in weights:
            rel = f.relative_to(path).as_posix()
            outer.update(rel.encode() + b"\0" + _sha256_file(f).hex().encode() + b"\n")
        ident = "sha256:" + outer.hexdigest()
    return ModelSource("folder", str(path), None, None, ident)


def _weight_files(folder: Path) -> list[Path]:
    found = set()
    for pattern in WEIGHT_GLOBS:
        for f in folder.rglob(pattern):
            rel = f.relative_to(folder)
            if f.is_file() and f.name not in NOT_WEIGHTS and not any(
                    p.startswith(".") for p in rel.parts):
                found.add(f)
    return sorted(found, key=lambda f: f.relative_to(folder).as_posix())


def _sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.digest()


# ---------------------------------------------------------------------------------------------
# Errors from the Hub, turned into remedies


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _explain(src: ModelSource, exc: BaseException, what: str) -> CodetuneError | None:
    """A CodetuneError for a failure users can fix (missing, gated, offline), else None."""
    from huggingface_hub import errors as hf

    name = src.path
    page = f"https://huggingface.co/{name}"
    missing_help = (
        "Check the spelling of the Hub id (e.g. bigcode/starcoderbase-1b) and the network "
        "connection (with HF_HUB_OFFLINE=1 only models already in the Hugging Face cache "
        "load); a private or gated model also needs `hf auth login` and its licence accepted "
        "on its page. Or give a local model folder (config.json + weights) or a .gguf file: "
        "model.name=/path/to/model.")
    for e in _chain(exc):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(e, hf.GatedRepoError) or (
                status in (401, 403) and not isinstance(e, hf.RepositoryNotFoundError)):
            return CodetuneError(
                f"{name} is a gated or private model (HTTP {status or '401/403'}) and this "
                f"machine may not read it: run `hf auth login` with a token of an account that "
                f"has access, and accept the licence on {page}; then retry.")
        if isinstance(e, hf.RevisionNotFoundError):
            return CodetuneError(
                f"revision {src.revision!r} of {name} does not exist; check model.revision "
                f"(a branch, tag or commit listed on {page}/tree/main), or drop it for the "
                "default branch.")
        if isinstance(e, hf.RepositoryNotFoundError):
            return CodetuneError(f"{what} {name!r} was not found on the Hugging Face Hub. "
                                 + missing_help)
        if isinstance(e, hf.LocalEntryNotFoundError | hf.OfflineModeIsEnabled) or (
                type(e).__name__ in ("ConnectError", "ConnectTimeout", "gaierror")):
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
            why = ("HF_HUB_OFFLINE is set and it is not in the local cache" if offline else
                   "the Hub could not be reached and it is not in the local cache")
            return CodetuneError(f"{what} {name!r} could not be loaded: {why}. " + missing_help)
        if isinstance(e, hf.EntryNotFoundError):
            return CodetuneError(
                f"{name} has no {getattr(e, 'filename', None) or 'config.json'}: it is not a "
                "transformers model repository; pick a model repo that has config.json and "
                "safetensors weights, or a local .gguf file.")
    return None


def _hf_call(src: ModelSource, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except (OSError, ValueError) as e:
        err = _explain(src, e, what) if src.kind == "hub" else None
        if err is not None:
            raise err from None
        if src.kind != "hub" and isinstance(e, OSError):
            raise CodetuneError(f"could not load the {what} from {src.path}: {e}") from None
        raise


# ---------------------------------------------------------------------------------------------
# Loading


def _model_cfg(cfg: Any) -> ModelConfig:
    return getattr(cfg, "model", cfg)


def compute_dtype(model_cfg: ModelConfig) -> torch.dtype:
    """The compute dtype: `model.dtype`, or for "auto" bfloat16 on a CUDA GPU that has it and
    float32 otherwise (CPU, or an older GPU; float16 needs loss scaling, so it is opt-in)."""
    import torch

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
    import torch

    if model_cfg.finetune == "full" and model_cfg.dtype == "auto":
        return torch.float32
    return compute_dtype(model_cfg)


def default_device_map() -> dict[str, Any] | None:
    """The whole model on one device: this rank's GPU under torchrun/accelerate (LOCAL_RANK),
    else GPU 0, else the CPU. 4-bit models must be placed per rank like this for DDP.
    Under FSDP: None, FSDP places (and shards) the weights itself."""
    import torch

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
    import torch

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
    from transformers import BitsAndBytesConfig

    if model_cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    # FSDP shards flat parameters of one dtype: under FSDP the packed 4-bit weights must be
    # stored in the compute dtype (the FSDP+QLoRA recipe of Answer.AI / the peft docs).
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=model_cfg.quant_type,
        bnb_4bit_use_double_quant=model_cfg.double_quant, bnb_4bit_compute_dtype=dtype,
        **({"bnb_4bit_quant_storage": dtype} if fsdp else {}))


def load_tokenizer(model_cfg: ModelConfig) -> Any:
    """The base model's tokenizer (Hub, folder or .gguf), unchanged: FIM tokens are added by
    `codetune.tokens.fim` when asked."""
    from transformers import AutoTokenizer

    model_cfg = _model_cfg(model_cfg)
    src = resolve_source(model_cfg.name, model_cfg.revision, hash_weights=False)
    return _hf_call(src, "tokenizer", AutoTokenizer.from_pretrained, src.path,
                    trust_remote_code=model_cfg.trust_remote_code, **src.load_kwargs())


def load_model(cfg: RunConfig | ModelConfig, tokenizer: Any = None,
               device_map: Any = None) -> Any:
    """Load the base causal LM as `cfg.model` says (quantization, dtype, attention kernel).

    `device_map` defaults to `default_device_map()` (one whole copy per process). With a
    `tokenizer` longer than the embedding matrix (tokens added), the embeddings are resized
    to `len(tokenizer)`; a model whose vocabulary is padded past the tokenizer is left alone.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    model_cfg = _model_cfg(cfg)
    src = resolve_source(model_cfg.name, model_cfg.revision, hash_weights=False)
    remote = model_cfg.trust_remote_code
    hf_config = _hf_call(src, "model", AutoConfig.from_pretrained, src.path,
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
            model = _hf_call(src, "model", AutoModelForCausalLM.from_pretrained, tmp,
                             quantization_config=quant, **kw)
    else:
        if quant is not None:
            kw["quantization_config"] = quant
        model = _hf_call(src, "model", AutoModelForCausalLM.from_pretrained, src.path, **kw)
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
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def gguf_to_folder(source: ModelSource | str, out_dir: str | Path, dtype: Any = None,
                   trust_remote_code: bool = False) -> Path:
    """Write a .gguf model as an ordinary transformers folder (config, safetensors, tokenizer),
    dequantized to `dtype` (default float32). Needs the `gguf` package."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = source if isinstance(source, ModelSource) else resolve_source(source, hash_weights=False)
    if src.kind != "gguf":
        raise ValueError(f"{src.path} is not a .gguf source")
    kw = {"trust_remote_code": trust_remote_code, **src.load_kwargs()}
    model = _hf_call(src, "model", AutoModelForCausalLM.from_pretrained, src.path,
                     dtype=dtype or torch.float32, device_map={"": "cpu"}, **kw)
    _forget_gguf(model)
    out = Path(out_dir)
    model.save_pretrained(str(out))
    _hf_call(src, "tokenizer", AutoTokenizer.from_pretrained, src.path, **kw).save_pretrained(
        str(out))
    return out


def _causal_lm_class(hf_config: Any, trust_remote_code: bool) -> Any:
    """The transformers class that will be instantiated, or None for remote code."""
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


# ---------------------------------------------------------------------------------------------
# LoRA targets

_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    # the seed's list; q_attn exists only where GPT-BigCode has cross-attention
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
    `LORA_TARGETS[model.config.model_type]`, keeping the names present in this model (a name
    absent here is logged: the table covers variants). A comma list is checked against the
    model: a name matching no linear/embedding layer is an error, except names of this
    architecture's table, which are dropped with a warning (so the seed's `q_attn` works).
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
    if absent:
        log.warning("LoRA targets %s do not exist in this %s model; training %s",
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


# ---------------------------------------------------------------------------------------------
# Preparing for training


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
    (`...token_adapter.trainable_tokens_delta`), so the adapter is complete without saving the
    whole embedding matrix: `save_pretrained(..., save_embedding_layers=False)` is enough.
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
    if gc:
        model.config.use_cache = False
    return model


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

