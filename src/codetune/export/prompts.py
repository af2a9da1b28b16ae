"""The FIM prompt as text, for serving tools that build it from a template.

Every layout comes from the FIM registry (`tokens.fim.FIM_FORMATS`): PSM order, the family's
sentinels, no second copy of any token here. Two spellings of the sentinels, for the two kinds
of tokenizer that will read the text:

- `hf_template`: Hugging Face tokenizers (vLLM, TGI, codetune serve) match an added token by its
  vocabulary string, "▁<PRE>" included; a SentencePiece family (CodeLlama) gets a space after
  the prefix sentinel, so its prefix is encoded with the leading "▁" training used
  (`serve.app.fim_info`).
- `llama_cpp_template`: llama.cpp-based tools (Ollama, Tabby, llama-server) take CodeLlama's
  reference text "<PRE> {prefix} <SUF>{suffix} <MID>" (codellama's generation.py; the same as
  Ollama's own codellama template): each "▁" a space, the first one dropped because the
  tokenizer adds it. Other families are spelled as in the vocabulary in both.
"""

from __future__ import annotations

from typing import Any


def hf_template(fmt: Any, prefix: str, suffix: str) -> str:
    first = fmt.prefix + (" " if fmt.sentencepiece_spacing else "")
    return f"{first}{prefix}{fmt.suffix}{suffix}{fmt.middle}"


def llama_cpp_template(fmt: Any, prefix: str, suffix: str) -> str:
    if not fmt.sentencepiece_spacing:
        return f"{fmt.prefix}{prefix}{fmt.suffix}{suffix}{fmt.middle}"
    p, s, m = (t.replace("▁", " ") for t in fmt.sentinels)
    return f"{p.lstrip()} {prefix}{s}{suffix}{m}"


def stop_texts(fim: Any) -> list[str]:
    """Every FIM sentinel, file/repo separator, EOT and EOS as generated text (llama.cpp
    spelling; for a SentencePiece family "▁" is a space and outer spaces are dropped, so
    "<EOT>" also matches " <EOT>"; DeepSeek's "▁" inside its tokens is a character)."""
    out: list[str] = []
    for s in fim.stop_strings:
        t = s.replace("▁", " ").strip() if fim.format.sentencepiece_spacing else s
        if t and t not in out:
            out.append(t)
    return out
