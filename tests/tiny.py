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
