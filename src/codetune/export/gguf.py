"""A model folder (merged, or a full fine-tune) as one GGUF file, for llama.cpp and its kin.

Written by llama.cpp's own `convert_hf_to_gguf.py` when it is installed (`llama_cpp.find`),
otherwise by the `gguf` package's writer, here, laid out as that converter lays it out:

    arch         HF model_type -> gguf.MODEL_ARCH: qwen2 -> QWEN2, starcoder2 -> STARCODER2,
                 gpt_bigcode -> STARCODER (llama.cpp's name for GPT-BigCode), llama -> LLAMA
    tensors      names from gguf.get_tensor_name_map(arch, blocks); llama's q/k rows permuted
                 into llama.cpp's rotary order (LlamaModel.permute); a tied lm_head left out
    dtypes       1-D tensors (norms, biases) and GPT-BigCode's position table stay F32, as
                 llama.cpp keeps them; 2-D weights F16 / BF16 / Q8_0 (Q8_0 needs rows of a
                 multiple of 32 values; other rows fall back to F16, as llama.cpp does)
    metadata     the hyperparameters TextModel.set_gguf_parameters writes, file type, quant
                 version, codetune's sampling defaults (general.sampling.*), the tokenizer
                 with its FIM tokens (`vocab.metadata`) and its chat template, if any

Tensors are converted and written one at a time (header and tensor table first), so memory
holds one tensor, not the model. K-quants (Q4_K_M, ...) have no Python quantizer: an F16 file is
written and `llama-quantize` turns it into the requested type (`llama_cpp.quantize`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from codetune.errors import CodetuneError
from codetune.export import vocab

# HF model_type -> gguf.MODEL_ARCH member name
ARCHS = {"qwen2": "QWEN2", "starcoder2": "STARCODER2", "gpt_bigcode": "STARCODER",
         "llama": "LLAMA"}
SUPPORTED = "Qwen2 (Qwen2.5-Coder), StarCoder2, GPT-BigCode (StarCoder, codetune-mini), Llama " \
            "(CodeLlama, DeepSeek-Coder)"
NATIVE_TYPES = ("F32", "F16", "BF16", "Q8_0")  # written here; anything else via llama-quantize


def file_types() -> dict[str, Any]:
    """Every llama.cpp file type by its `--type` name (F16, Q8_0, Q4_K_M, ...)."""
    import gguf  # optional: gguf (the export extra)

    types = {t.name.removeprefix("MOSTLY_"): t for t in gguf.LlamaFileType
             if t.name.startswith("MOSTLY_") or t.name == "ALL_F32"}
    types["F32"] = types.pop("ALL_F32")
    return types


def check_type(name: str) -> str:
    """The canonical `--type` name, or a CodetuneError listing the valid ones."""
    types = file_types()
    up = name.upper()
    if up not in types:
        raise CodetuneError(f"unknown --type {name!r}; choose F16, BF16, Q8_0 (written by "
                            f"codetune) or a llama-quantize type: {', '.join(sorted(types))}")
    return up


def model_config(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise CodetuneError(f"{model_dir} has no config.json; give a run folder or a model "
                            "folder written by `codetune merge`")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("model_type") not in ARCHS:
        raise CodetuneError(f"cannot export a {cfg.get('model_type')!r} model to GGUF; "
                            f"supported architectures: {SUPPORTED}")
    return cfg


def rope(cfg: dict[str, Any]) -> tuple[float | None, float | None]:
    """(rope theta, linear scaling factor or None) of a config (transformers 5's
    `rope_parameters`, or 4.x's `rope_theta` + `rope_scaling`). DeepSeek-Coder uses linear
    scaling (factor 4); any other scaling is refused rather than written wrong."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind not in ("default", "linear"):
        raise CodetuneError(f"rope scaling {kind!r} is not written by codetune's GGUF writer; "
                            "install llama.cpp (LLAMA_CPP_DIR) to convert with its converter")
    theta = params.get("rope_theta", cfg.get("rope_theta"))
    factor = params.get("factor", scaling.get("factor")) if kind == "linear" else None
    return (float(theta) if theta is not None else None,
            float(factor) if factor is not None else None)


def hyperparameters(w: Any, cfg: dict[str, Any]) -> None:
    """The architecture keys of TextModel.set_gguf_parameters (and its per-arch overrides)."""
    t = cfg["model_type"]
    if t == "gpt_bigcode":  # StarCoderModel.set_gguf_parameters
        w.add_context_length(cfg["n_positions"])
        w.add_embedding_length(cfg["n_embd"])
        w.add_feed_forward_length(cfg.get("n_inner") or 4 * cfg["n_embd"])
        w.add_block_count(cfg["n_layer"])
        w.add_head_count(cfg["n_head"])
        # llama.cpp writes 1 (multi-query, as every StarCoder is); a multi-head model keeps its
        # key/value heads, which llama.cpp's graph reads from this key
        w.add_head_count_kv(1 if cfg.get("multi_query", True) else cfg["n_head"])
        w.add_layer_norm_eps(cfg["layer_norm_epsilon"])
        return
    heads = cfg["num_attention_heads"]
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(heads)
    w.add_head_count_kv(cfg.get("num_key_value_heads") or heads)
    import gguf  # optional: gguf (the export extra)

    theta, factor = rope(cfg)
    if theta is not None:
        w.add_rope_freq_base(theta)
    if factor is not None:  # LlamaModel / TextModel write linear scaling so
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(factor)
    if t == "starcoder2":
        w.add_layer_norm_eps(cfg["norm_epsilon"])
        return
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    if t == "llama":  # LlamaModel.set_gguf_parameters
        w.add_vocab_size(cfg["vocab_size"])
        w.add_rope_dimension_count(cfg.get("head_dim") or cfg["hidden_size"] // heads)


def _shards(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / n for n in names]
    single = model_dir / "model.safetensors"
    if not single.is_file():
        raise CodetuneError(f"{model_dir} has no model.safetensors; GGUF export reads safetensors "
                            "weights (what `codetune merge` and `codetune train` write)")
    return [single]


def _permute(x: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout for llama q/k rows (convert_hf_to_gguf.py, LlamaModel.permute):
    within each head, the two rotary halves interleaved. (out, in) -> (out, in)."""
    return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2) \
        .reshape(x.shape)


def unpermute(x: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of `_permute` (for reading a file back)."""
    return x.reshape(heads, x.shape[0] // heads // 2, 2, *x.shape[1:]).swapaxes(1, 2) \
        .reshape(x.shape)


def tensor_names(cfg: dict[str, Any], hf_names: list[str]) -> dict[str, str]:
    """HF tensor name -> GGUF tensor name, for the tensors that go into the file."""
    import gguf  # optional: gguf (the export extra)

    arch = getattr(gguf.MODEL_ARCH, ARCHS[cfg["model_type"]])
    blocks = cfg.get("num_hidden_layers", cfg.get("n_layer"))
    nmap = gguf.get_tensor_name_map(arch, blocks)
    tied = cfg.get("tie_word_embeddings", cfg["model_type"] in ("gpt_bigcode", "starcoder2"))
    out = {}
    for name in hf_names:
        if name == "lm_head.weight" and tied:
            continue  # llama.cpp reads the output projection from token_embd when absent
        if name.endswith(("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")):
            continue  # buffers, not weights
        base, dot, suffix = name.rpartition(".")
        mapped = nmap.get_name(base)
        if mapped is None:
            raise CodetuneError(f"no GGUF name for tensor {name} of this {cfg['model_type']} "
                                "model; convert it with llama.cpp's converter (LLAMA_CPP_DIR)")
        out[name] = f"{mapped}{dot}{suffix}"
    return out


def _tensors(model_dir: Path, order: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, float32 array) for the tensors in `order`, one at a time, in that order (the
    order of the tensor table)."""
    import torch  # heavy: torch

    where = {}
    for shard in _shards(model_dir):
        with safe_open(str(shard), framework="pt") as f:
            where.update(dict.fromkeys(f.keys(), shard))
    for key in order:
        with safe_open(str(where[key]), framework="pt") as f:
            yield key, f.get_tensor(key).to(torch.float32).numpy()


def _shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for shard in _shards(model_dir):
        with safe_open(str(shard), framework="pt") as f:
            shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})  # noqa: SIM118
    return shapes


def _qtype(gguf_name: str, shape: tuple[int, ...], ftype: str) -> Any:
    """The GGML type of one tensor in a file of type `ftype`."""
    import gguf  # optional: gguf (the export extra)

    Q = gguf.GGMLQuantizationType
    if len(shape) <= 1 or gguf_name.startswith("position_embd") or ftype == "F32":
        return Q.F32
    if ftype == "BF16":
        return Q.BF16
    if ftype == "Q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        return Q.Q8_0
    return Q.F16


def _encode(data: np.ndarray, qtype: Any) -> np.ndarray:
    import gguf  # optional: gguf (the export extra)

    Q = gguf.GGMLQuantizationType
    if qtype == Q.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == Q.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)


def write(model_dir: str | Path, out_file: str | Path, ftype: str, *, tokenizer: Any, fim: Any,
          name: str, sampling: dict[str, float] | None = None) -> dict[str, Any]:
    """Write the model at `model_dir` as a GGUF file of type `ftype` (F32, F16, BF16, Q8_0)."""
    import gguf  # optional: gguf (the export extra)

    model_dir, out_file = Path(model_dir), Path(out_file)
    cfg = model_config(model_dir)
    if ftype not in NATIVE_TYPES:
        raise ValueError(f"{ftype} is written by llama-quantize, not here")
    arch = gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, ARCHS[cfg["model_type"]])]
    names = tensor_names(cfg, list(_shapes(model_dir)))
    vocab_size = cfg["vocab_size"]
    meta = vocab.metadata(tokenizer, fim, vocab_size)

    w = gguf.GGUFWriter(str(out_file), arch)
    w.add_name(name)
    hyperparameters(w, cfg)
    w.add_file_type(file_types()[ftype].value)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in (sampling or {}).items():  # llama.cpp's defaults when a request sets none
        getattr(w, f"add_sampling_{key}")(value)
    if fim is not None:
        w.add_string("codetune.fim_format", fim.family)
    for key, value in meta.items():
        _add(w, key, value)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:  # llama-server's /v1/chat/completions reads it
        w.add_chat_template(template)

    # the tensor table first (from the shapes alone), then the data one tensor at a time
    Q = gguf.GGMLQuantizationType
    heads = cfg.get("num_attention_heads")
    kv_heads = cfg.get("num_key_value_heads") or heads
    shapes = _shapes(model_dir)
    qtypes = {}
    for hf_name, gname in names.items():
        shape, qtype = shapes[hf_name], _qtype(gname, shapes[hf_name], ftype)
        qtypes[hf_name] = qtype
        if qtype in (Q.F32, Q.F16):
            dtype = np.float32 if qtype == Q.F32 else np.float16
            w.add_tensor_info(gname, shape, np.dtype(dtype),
                              math.prod(shape) * np.dtype(dtype).itemsize)
        else:
            raw = gguf.quant_shape_to_byte_shape(shape, qtype)
            w.add_tensor_info(gname, raw, np.dtype(np.uint8), math.prod(raw), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for hf_name, data in _tensors(model_dir, list(names)):
        w.write_tensor_data(_encode(_layout(cfg, hf_name, data, heads, kv_heads), qtypes[hf_name]))
    w.close()
    counts: dict[str, int] = {}
    for q in qtypes.values():
        counts[q.name] = counts.get(q.name, 0) + 1
    return {"arch": arch, "tensors": counts, "tokenizer": meta[gguf.Keys.Tokenizer.MODEL],
            "pre_tokenizer": meta[gguf.Keys.Tokenizer.PRE]}


def _layout(cfg: dict[str, Any], hf_name: str, data: np.ndarray, heads: int | None,
            kv_heads: int | None) -> np.ndarray:
    if cfg["model_type"] == "llama":
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return _permute(data, heads)
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return _permute(data, kv_heads)
    return data


def _add(w: Any, key: str, value: Any) -> None:
    import gguf  # optional: gguf (the export extra)

    T = gguf.GGUFValueType
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    elif key == gguf.Keys.Tokenizer.TOKEN_TYPE:
        w.add_key_value(key, list(value), T.ARRAY, sub_type=T.INT32)
    elif key == gguf.Keys.Tokenizer.SCORES:
        w.add_key_value(key, list(value), T.ARRAY, sub_type=T.FLOAT32)
    else:
        w.add_array(key, list(value))
