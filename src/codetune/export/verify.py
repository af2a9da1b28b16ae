"""Read an exported GGUF file back and check it against the model it came from.

Two readers, whichever the installed transformers allows (tried, not assumed):

- transformers: `AutoModelForCausalLM.from_pretrained(dir, gguf_file=name)` rebuilds config
  and weights from the file (transformers 5.x does for llama, qwen2 and starcoder2);
- the `gguf` package: where transformers refuses the architecture (GPT-BigCode, llama.cpp's
  "starcoder", in transformers 5.24), every tensor is read back (`reader`, which agrees with
  `gguf.GGUFReader` and is much faster on large vocabularies), dequantized
  (`gguf.quants.dequantize`), mapped back to its HF name and compared with the original tensor
  by tensor; the logits are then those of the original model with the file's tensors
  substituted.

transformers is used only where it rebuilds the file as the original model: where it reads a
field differently (5.24 maps no rope scaling for llama, so DeepSeek-Coder's linear factor would be
lost; no rope theta for starcoder2) the `gguf` reader path is taken instead. Either way the
logits of both models on held-out text (`infer.probe`: the run's held-out files, else built-in
snippets; and on a FIM prompt cut from each) are compared: the largest |difference| and the
share of positions whose top-1 token agrees. The metadata is read back too: the architecture
keys against config.json, every token string, and each FIM key pointing at the registry's
sentinel.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from codetune.export import reader
from codetune.export.gguf import model_config, rope, tensor_names, unpermute
from codetune.export.vocab import CONTROL
from codetune.infer.probe import logits
from codetune.tokens.fim import auto_bos, build_prompt


def probe_ids(tokenizer: Any, fim: Any, texts: list[str], length: int,
              window: int | None) -> list[list[int]]:
    """Token ids to compare logits on: each text's first `length` tokens, and a FIM prompt
    (the family's, as training builds it) cut from it."""
    bos = auto_bos(tokenizer)
    limit = min(length, (window or length + 1) - 1)
    out = []
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        ids = ([bos] if bos is not None else []) + list(ids)
        if len(ids) >= 2:
            out.append(ids[:limit])
        if fim is not None and len(text) > 30:
            third = len(text) // 3
            prompt = build_prompt(tokenizer, fim, text[:third], text[2 * third:])
            out.append(prompt[-limit:] if len(prompt) > limit else prompt)
    return out


def compare(a: list[Any], b: list[Any]) -> dict[str, float]:
    """Largest |logit difference| and top-1 agreement over every position of every input."""
    diff, agree, total = 0.0, 0, 0
    for x, y in zip(a, b, strict=True):
        diff = max(diff, float((x - y).abs().max()))
        agree += int((x.argmax(-1) == y.argmax(-1)).sum())
        total += x.shape[0]
    return {"max_abs_logit_diff": diff, "top1_agreement": agree / max(total, 1),
            "positions": total}


def read_metadata(path: Path) -> dict[str, Any]:
    """Every key of the file as a Python value (arrays as lists)."""
    return reader.read(path)[0]


def check_tokenizer(meta: dict[str, Any], tokenizer: Any, fim: Any) -> dict[str, Any]:
    """The file's token list against the tokenizer's vocabulary, and each FIM key against the
    registry's sentinel (present, naming that token, of type CONTROL so that llama.cpp never
    prints it as text); a list of what disagrees, each with its remedy (empty: all agree)."""
    import gguf  # optional: gguf (the export extra)

    K = gguf.Keys.Tokenizer
    tokens = meta.get(K.LIST) or []
    types = meta.get(K.TOKEN_TYPE) or []
    vocab = tokenizer.get_vocab()
    wrong = [f"token {i}: {t!r} in the file, {tok!r} in the tokenizer"
             for tok, i in vocab.items() if i < len(tokens) and (t := tokens[i]) != tok][:5]
    if fim is not None:
        f = fim.format
        for key, want in ((K.FIM_PRE_ID, f.prefix), (K.FIM_SUF_ID, f.suffix),
                          (K.FIM_MID_ID, f.middle), (K.FIM_PAD_ID, f.pad),
                          (K.FIM_REP_ID, f.repo_name), (K.FIM_SEP_ID, f.file_sep),
                          (K.EOT_ID, f.eot)):
            if want is None or want not in vocab:
                continue
            got = meta.get(key)
            if got is None:
                wrong.append(f"{key} is missing (the {want!r} sentinel, id {vocab[want]}): "
                             "llama.cpp's /infill needs the FIM ids; codetune writes them from "
                             "its FIM registry (--converter codetune, or llama.cpp's converter "
                             "followed by codetune's added keys): export again")
            elif not 0 <= got < len(tokens):
                wrong.append(f"{key} is {got}, past the file's {len(tokens)} tokens (the "
                             f"tokenizer's {want!r} is id {vocab[want]}): resize the model's "
                             "embeddings to the tokenizer and export again")
            elif tokens[got] != want:
                wrong.append(f"{key} is {got} ({tokens[got]!r}), not {want!r}")
            elif types and types[got] != CONTROL:
                wrong.append(f"{key}'s token {want!r} has token type {types[got]}, not CONTROL "
                             f"({CONTROL}): llama.cpp would print it as text")
    return {"tokens": len(tokens), "problems": wrong}


# config fields a model rebuilt from the file must share with the original for its logits to
# mean anything (transformers reads no rope scaling for llama, no rope theta for starcoder2)
_SAME = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
         "intermediate_size", "vocab_size")


def _transformers_reads(path: Path, original: Any) -> str | None:
    """None if transformers rebuilds this file as the original model, else why not: it refuses
    the architecture, or reads a field differently (found from the metadata alone)."""
    from transformers import AutoConfig  # heavy: transformers

    try:
        cfg = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, NotImplementedError, KeyError, OSError) as e:
        return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    for name in _SAME:
        if getattr(cfg, name, None) != getattr(original, name, None):
            return f"transformers reads {name} as {getattr(cfg, name, None)}, not " \
                   f"{getattr(original, name, None)}"
    mine = getattr(original, "rope_parameters", None) or {}
    theirs = getattr(cfg, "rope_parameters", None) or {}
    if mine or theirs:
        a, b = ((r.get("rope_type"), r.get("factor"), float(r.get("rope_theta") or 0))
                for r in (mine, theirs))
        if a != b:
            return f"transformers reads rope as {theirs}, not {mine}"
    return None


def check_hparams(meta: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """The file's architecture keys against the model's config.json."""
    arch = meta.get("general.architecture")
    t = cfg["model_type"]
    want = {"block_count": cfg.get("num_hidden_layers", cfg.get("n_layer")),
            "embedding_length": cfg.get("hidden_size", cfg.get("n_embd")),
            "attention.head_count": cfg.get("num_attention_heads", cfg.get("n_head")),
            "context_length": cfg.get("max_position_embeddings", cfg.get("n_positions"))}
    if t != "gpt_bigcode":
        want["attention.head_count_kv"] = cfg.get("num_key_value_heads") or \
            cfg["num_attention_heads"]
        theta, factor = rope(cfg)
        if theta is not None:
            want["rope.freq_base"] = theta
        if factor is not None:
            want["rope.scaling.factor"] = factor
    bad = []
    for key, value in want.items():
        got = meta.get(f"{arch}.{key}")
        if got is None or abs(float(got) - float(value)) > 1e-6 * max(1.0, abs(float(value))):
            bad.append(f"{arch}.{key} is {got}, the model has {value}")
    return bad


def _substitute(path: Path, model: Any, cfg: dict[str, Any]) -> dict[str, float]:
    """Replace every weight of `model` (in place, one tensor at a time) with the file's,
    dequantized; returns the largest |difference| per kind of tensor."""
    import torch  # heavy: torch

    params = dict(model.named_parameters())
    back = {g: h for h, g in tensor_names(cfg, list(model.state_dict())).items()}
    heads = cfg.get("num_attention_heads")
    kv_heads = cfg.get("num_key_value_heads") or heads
    worst: dict[str, float] = {}
    seen = set()
    for t in reader.read(path)[1]:
        hf = back[t.name]
        target = params[hf]
        data = reader.values(path, t).reshape(target.shape)
        if cfg["model_type"] == "llama" and hf.endswith(("q_proj.weight", "k_proj.weight")):
            data = unpermute(data, heads if "q_proj" in hf else kv_heads)
        value = torch.from_numpy(data.copy()).to(target.dtype).to(target.device)
        # per kind of tensor across blocks: "attn_qkv.weight", "token_embd.weight", ...
        kind = t.name.split(".", 2)[2] if t.name.startswith("blk.") else t.name
        with torch.no_grad():
            worst[kind] = max(worst.get(kind, 0.0), float((value - target).abs().max()))
            target.copy_(value)
        seen.add(hf)
    missing = set(back.values()) - seen
    if missing:
        raise ValueError(f"tensors missing from {path.name}: {sorted(missing)[:5]}")
    return worst


def verify(path: Path, model_dir: Path, tokenizer: Any, fim: Any, texts: list[str],
           length: int = 128) -> dict[str, Any]:
    """Reload `path` and compare it with the model at `model_dir`; returns the figures.

    One model in memory at a time (float32, on the GPU when there is one): the original's
    logits are taken first, then the file's model replaces it (or its weights, in place)."""
    import torch  # heavy: torch
    from transformers import AutoModelForCausalLM  # heavy: transformers

    path, model_dir = Path(path), Path(model_dir)
    cfg = model_config(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model = model.to(device).eval()
    window = getattr(model.config, "max_position_embeddings", None) or \
        getattr(model.config, "n_positions", None)
    inputs = probe_ids(tokenizer, fim, texts, length, window)
    expected = logits(model, inputs)
    refused = _transformers_reads(path, model.config)
    result: dict[str, Any] = {}
    if refused is None:
        del model
        gc.collect()
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32).to(device).eval()
        result["reader"] = "transformers"
    else:
        result.update(reader="gguf", transformers_refused=refused,
                      max_abs_tensor_diff=_substitute(path, model, cfg))
    result.update(compare(expected, logits(model, inputs)))
    result["inputs"] = len(inputs)
    meta = read_metadata(path)
    result["tokenizer"] = check_tokenizer(meta, tokenizer, fim)
    result["hparams_problems"] = check_hparams(meta, cfg)
    del model
    gc.collect()
    return result
