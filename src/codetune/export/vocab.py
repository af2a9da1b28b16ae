"""The tokenizer as GGUF metadata, laid out the way llama.cpp's `convert_hf_to_gguf.py` does.

Two shapes, chosen from the tokenizer itself (its `tokenizer.json` form), never from a model name:

- byte-level BPE (StarCoder, StarCoder2, Qwen2.5-Coder, DeepSeek-Coder, codetune-mini):
  `tokenizer.ggml.model = "gpt2"`, the tokens in id order, their types (added special tokens
  CONTROL, and so are those that look special to llama.cpp's converter (`<|...|>`) and every
  FIM sentinel, separator, EOS and EOT; other added tokens USER_DEFINED, the rest NORMAL;
  ids without a token `[PADn]` UNUSED), the merges, and `tokenizer.ggml.pre`, the
  pre-tokenizer llama.cpp must imitate.
  llama.cpp names the pre-tokenizer by a hash of the token ids of a fixed text
  (`get_vocab_base_pre`); the hashes of the families codetune trains are in `PRE_BY_HASH`. A
  tokenizer whose hash is not there (a tokenizer trained from scratch, like codetune-mini's) is
  recognised by the shape of its pre-tokenizer (`_pre_by_shape`), or refused.
- SentencePiece-style BPE with byte fallback (CodeLlama): `tokenizer.ggml.model = "llama"`,
  tokens, scores and types as `_set_vocab_sentencepiece` writes them (byte tokens `<0xNN>`
  BYTE, `<unk>` UNKNOWN, special tokens CONTROL). llama.cpp's SentencePiece tokenizer merges the
  adjacent pair whose joined token has the highest score, so a token's score is minus the rank of
  the merge that makes it: the same merge order as the `tokenizer.json` (what a real
  `tokenizer.model` holds for a BPE SentencePiece model, whose scores fall with the id).

The FIM sentinel ids come from the FIM registry (`tokens.fim.detect_fim`), so the file names
exactly the tokens training used: `tokenizer.ggml.fim_{pre,suf,mid,pad,rep,sep}_token_id`, plus
EOS / BOS / EOT / padding and whether BOS is prepended.
"""

from __future__ import annotations

import json
from hashlib import sha256
from typing import Any

from codetune.errors import CodetuneError
from codetune.tokens.fim import auto_bos

# llama.cpp's text for naming a pre-tokenizer (convert_hf_to_gguf.py, get_vocab_base_pre): the
# sha256 of str(tokenizer.encode(CHECK_TEXT)) identifies how a tokenizer splits text.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL")

# The entries of llama.cpp's get_vocab_base_pre for the families codetune's recipes train
# (ggml-org/llama.cpp, conversion/base.py), with the model each hash was taken from.
PRE_BY_HASH = {
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",  # starcoder2-3b
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5-7B
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
}

# Qwen2's split pattern (its tokenizer.json), which llama.cpp implements as pre type "qwen2".
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# gguf.TokenType values (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def tokenizer_spec(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer as loaded (its `tokenizer.json` form). Loaded, not read from the file:
    transformers may replace parts on load (a Qwen2 model folder's tokenizer gets Qwen2's
    split pattern whatever the file says), and what training saw is what the GGUF must say."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise CodetuneError("GGUF export needs a fast tokenizer (tokenizer.json); this one is "
                            f"{type(tokenizer).__name__}")
    return json.loads(backend.to_str())


def kind(spec: dict[str, Any]) -> str:
    """"gpt2" (byte-level BPE) or "llama" (SentencePiece-style BPE with byte fallback)."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise CodetuneError(f"the tokenizer is a {model.get('type')} model; GGUF export supports "
                            "BPE tokenizers (byte-level, or SentencePiece-style with byte fallback)")
    if _types(spec.get("pre_tokenizer")) & {"ByteLevel"}:
        return "gpt2"
    if model.get("byte_fallback"):
        return "llama"
    raise CodetuneError("the tokenizer is neither byte-level BPE nor BPE with byte fallback; "
                        "llama.cpp could not reproduce it")


def _types(spec: dict | None) -> set[str]:
    if not spec:
        return set()
    if spec.get("type") == "Sequence":
        out: set[str] = set()
        for part in spec.get("pretokenizers", []):
            out |= _types(part)
        return out
    return {spec["type"]}


def pre_type(tokenizer: Any, spec: dict[str, Any]) -> str:
    """llama.cpp's name for how this byte-level tokenizer splits text before BPE."""
    chk = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if chk in PRE_BY_HASH:
        return PRE_BY_HASH[chk]
    found = _pre_by_shape(spec.get("pre_tokenizer"))
    if found is None:
        raise CodetuneError(
            "llama.cpp would not know how this tokenizer splits text (its pre-tokenizer is "
            f"neither a known model's, hash {chk[:12]}…, nor GPT-2's, StarCoder's or Qwen2's "
            "shape). Install llama.cpp and set LLAMA_CPP_DIR so its converter is used "
            "(`--converter llama.cpp`), after adding the model to convert_hf_to_gguf_update.py.")
    return found


def _pre_by_shape(pre: dict | None) -> str | None:
    if not pre:
        return None
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    types = [p.get("type") for p in parts]
    if types == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"  # GPT-2's regex inside ByteLevel
    if (types == ["Digits", "ByteLevel"] and parts[0].get("individual_digits")
            and parts[1].get("use_regex", True)):
        return "starcoder"  # one token per digit, then GPT-2's regex (llama.cpp's STARCODER)
    if types == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        pattern = (parts[0].get("pattern") or {}).get("Regex")
        if pattern == QWEN2_SPLIT:
            return "qwen2"
    return None


def _id_to_token(spec: dict[str, Any], size: int) -> dict[int, str]:
    tokens = {i: t for t, i in spec["model"]["vocab"].items() if i < size}
    tokens.update({a["id"]: a["content"] for a in spec.get("added_tokens", []) if a["id"] < size})
    return tokens


def _merges(spec: dict[str, Any]) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]


def metadata(tokenizer: Any, fim: Any, vocab_size: int) -> dict[str, Any]:
    """Everything the GGUF file says about the tokenizer, as `{gguf key: value}`; arrays as
    lists. `vocab_size` is the model's (its embedding rows), which may exceed the tokenizer's."""
    import gguf  # optional: gguf (the export extra)

    K = gguf.Keys.Tokenizer
    spec = tokenizer_spec(tokenizer)
    shape = kind(spec)
    n = max(vocab_size, len(tokenizer))
    by_id = _id_to_token(spec, n)
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    tokens, types, scores = [], [], []
    rank = {m.replace(" ", ""): r for r, m in reversed(list(enumerate(_merges(spec))))}
    for i in range(n):
        tok = by_id.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            scores.append(-1000.0)
            continue
        tokens.append(tok)
        a = added.get(i)
        if shape == "gpt2":
            types.append(NORMAL if a is None else
                         CONTROL if a.get("special") or looks_special(tok) else USER_DEFINED)
            continue
        if i == tokenizer.unk_token_id:
            types.append(UNKNOWN)
        elif len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            types.append(BYTE)
        elif a is not None:
            types.append(CONTROL if a.get("special") else USER_DEFINED)
        else:
            types.append(NORMAL)
        # minus the rank of the merge that makes the token; single characters and specials,
        # which no merge makes, 0 (never compared: llama.cpp only scores joined pairs)
        scores.append(-float(rank[tok]) if tok in rank and types[-1] == NORMAL else 0.0)
    meta: dict[str, Any] = {K.MODEL: shape, K.LIST: tokens, K.TOKEN_TYPE: types}
    if shape == "gpt2":
        meta[K.PRE] = pre_type(tokenizer, spec)
        meta[K.MERGES] = _merges(spec)
    else:
        meta[K.PRE] = "default"  # what convert_hf_to_gguf.py writes for SentencePiece vocabularies
        meta[K.SCORES] = scores
        pre = spec.get("pre_tokenizer") or {}
        meta[K.ADD_PREFIX] = pre.get("prepend_scheme", "always") != "never"
    bos = auto_bos(tokenizer)
    meta[K.ADD_BOS] = bos is not None
    meta[K.ADD_EOS] = False
    ids = special_ids(tokenizer, fim, sentencepiece=shape == "llama")
    meta.update(ids)
    # every sentinel, separator and end token CONTROL, whatever the tokenizer's `special` flag:
    # llama.cpp prints a token of any other type as text (and overrides the type, with a
    # warning at load, only for the spellings it knows)
    for key in ids:
        if key in (K.BOS_ID, K.PAD_ID, K.UNK_ID):
            continue  # a tokenizer may pad with an ordinary token, which must stay one
        if key in meta and types[meta[key]] in (NORMAL, USER_DEFINED):
            types[meta[key]] = CONTROL
    return meta


def special_ids(tokenizer: Any, fim: Any, sentencepiece: bool = False) -> dict[str, int]:
    """The GGUF keys naming special tokens: BOS, EOS (the FIM family's), padding, unknown (for
    SentencePiece), and with FIM the sentinels, separators and EOT (or the family's end of turn
    present in the vocabulary, Qwen's <|im_end|>)."""
    import gguf  # optional: gguf (the export extra)

    K = gguf.Keys.Tokenizer
    ids = {K.BOS_ID: tokenizer.bos_token_id,
           K.EOS_ID: fim.eos_id if fim is not None else tokenizer.eos_token_id,
           K.PAD_ID: tokenizer.pad_token_id,
           K.UNK_ID: tokenizer.unk_token_id if sentencepiece else None}
    if fim is not None:
        ids.update({K.FIM_PRE_ID: fim.prefix_id, K.FIM_SUF_ID: fim.suffix_id,
                    K.FIM_MID_ID: fim.middle_id, K.FIM_PAD_ID: fim.pad_id,
                    K.FIM_REP_ID: fim.repo_name_id, K.FIM_SEP_ID: fim.file_sep_id,
                    K.EOT_ID: fim.eot_id if fim.eot_id is not None else _extra_stop(tokenizer, fim)})
    return {k: int(v) for k, v in ids.items() if v is not None}


def looks_special(token: str) -> bool:
    """llama.cpp's converter's rule for an added token its tokenizer does not mark special
    (TextModel.does_token_look_special): `<|...|>`, DeepSeek's `<｜...｜>`, `<pad>`."""
    return token == "<pad>" or (token.startswith("<|") and token.endswith("|>")) or \
        (token.startswith("<｜") and token.endswith("｜>"))


def _extra_stop(tokenizer: Any, fim: Any) -> int | None:
    """An end-of-turn token of the family present in this vocabulary (Qwen's <|im_end|>)."""
    vocab = tokenizer.get_vocab()
    return next((vocab[s] for s in fim.format.extra_stops if s in vocab), None)
