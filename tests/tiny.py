"""Tiny tokenizers (and later models) built locally, so tests never need the Hub."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Order:\n    def __init__(self, order_id, total):\n        self.order_id = order_id\n"
    "        self.total = total\n",
    "for item in items:\n    if item.price > 0:\n        total += item.price * item.qty\n",
    "import os\nimport sys\n\nprint(os.path.join('a', 'b'), sys.argv)\n",
    "function total(items) {\n  return items.reduce((s, i) => s + i.price, 0);\n}\n",
]

QWEN_SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                 "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>"]
DEEPSEEK_SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁hole｜>",
                     "<｜fim▁begin｜>", "<｜fim▁end｜>"]
STARCODER_SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>",
                      "<fim_pad>", "<file_sep>", "<repo_name>"]


def build_tokenizer(path: Path, specials: list[str] | None = None, vocab_size: int = 600,
                    eos: str = "<|endoftext|>") -> Path:
    """A byte-level BPE tokenizer trained on a little code, saved where AutoTokenizer loads it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(STARCODER_SPECIALS if specials is None else specials)
    if eos not in specials:
        specials.insert(0, eos)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=eos,
                                   unk_token=eos,
                                   extra_special_tokens=[s for s in specials if s != eos])
    fast.save_pretrained(str(path))
    return path


CODELLAMA_SPECIALS = ["▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"]


def build_codellama_tokenizer(path: Path, vocab_size: int = 700) -> Path:
    """A SentencePiece-style (Metaspace + byte-fallback BPE) tokenizer in CodeLlama's own class.

    Like CodeLlama's: `encode` prepends BOS `<s>` and a dummy leading "▁"; the FIM sentinels
    `▁<PRE>` `▁<SUF>` `▁<MID>` `▁<EOT>` are special tokens; unknown characters fall back to
    `<0xNN>` byte tokens; the decoder drops the first leading space.
    """
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CodeLlamaTokenizer

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                 split=False)
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, max_token_length=16,
                                  special_tokens=["<unk>", "<s>", "</s>", *byte_tokens])
    tok.train_from_iterator(CORPUS * 20, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # CodeLlamaTokenizer's defaults add the four sentinels (and <FILL_ME>) as special tokens.
    fast = CodeLlamaTokenizer(vocab=model["vocab"], merges=merges)
    fast.save_pretrained(str(path))
    return path


def build_model(path: Path, arch: str, tokenizer_path: Path, *, layers: int = 2,
                hidden: int = 64, heads: int = 4, seed: int = 0) -> Path:
    """A tiny randomly initialised causal LM of `arch` ("gpt_bigcode", "llama" or "qwen2"),
    saved with `save_pretrained` together with the tokenizer at `tokenizer_path`, so that
    `from_pretrained(path)` works offline. Vocabulary = len(tokenizer), 512 positions.

    gpt_bigcode is multi-query with tied embeddings (like StarCoderBase); llama and qwen2 use
    2 key/value heads (grouped-query) and an untied LM head (like CodeLlama / Qwen2.5-Coder-7B).
    """
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GPTBigCodeConfig,
        LlamaConfig,
        Qwen2Config,
    )

    tok = AutoTokenizer.from_pretrained(str(tokenizer_path))
    common = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id,
              "eos_token_id": tok.eos_token_id}
    if arch == "gpt_bigcode":
        cfg = GPTBigCodeConfig(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=512,
                               multi_query=True, **common)
    elif arch in ("llama", "qwen2"):
        cls = LlamaConfig if arch == "llama" else Qwen2Config
        cfg = cls(hidden_size=hidden, intermediate_size=2 * hidden + 32,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=2,
                  max_position_embeddings=512, tie_word_embeddings=False, **common)
    else:
        raise ValueError(f"unknown tiny arch {arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    path = Path(path)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def build_llama_gguf(model_dir: Path, out_file: Path) -> Path:
    """Write the tiny llama at `model_dir` (from `build_model(..., "llama", ...)`, byte-level BPE
    tokenizer) as an F32 GGUF file the way llama.cpp's converter lays it out: llama.cpp tensor
    names, q/k rows permuted for its rotary layout, a "gpt2" tokenizer. Needs the `gguf` package.
    """
    import json

    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    tj = json.loads((model_dir / "tokenizer.json").read_text())
    w = gguf.GGUFWriter(str(out_file), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_vocab_size(cfg["vocab_size"])
    tokens = {i: t for t, i in tj["model"]["vocab"].items()}
    special = {a["id"] for a in tj["added_tokens"]}
    tokens.update({a["id"]: a["content"] for a in tj["added_tokens"]})
    w.add_tokenizer_model("gpt2")
    w.add_token_list([tokens[i] for i in range(len(tokens))])
    w.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])

    def permute(x: np.ndarray, heads: int) -> np.ndarray:  # llama.cpp's rotary row order
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2) \
            .reshape(x.shape)

    names = {"model.embed_tokens.weight": "token_embd.weight",
             "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                 "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg["num_hidden_layers"]):
        names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{g}.weight"
                      for hf, g in per_layer.items()})
    for key, value in load_file(str(model_dir / "model.safetensors")).items():
        value = value.astype(np.float32)
        if key.endswith("q_proj.weight"):
            value = permute(value, cfg["num_attention_heads"])
        elif key.endswith("k_proj.weight"):
            value = permute(value, cfg["num_key_value_heads"])
        w.add_tensor(names[key], np.ascontiguousarray(value))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(out_file)
