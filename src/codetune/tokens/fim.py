"""Fill-in-the-Middle: the format registry, detection from a tokenizer, and the transformation.

A document is split into prefix / middle / suffix and rearranged so a left-to-right model learns
to write the middle after seeing both sides (Bavarian et al. 2022, arXiv:2207.14255):

    PSM  [P] prefix [S] suffix [M] middle
    SPM  [P] [S] suffix [M] prefix middle      (the bigcode/seed variant; CodeLlama's too)

where [P] [S] [M] are the family's sentinel tokens. Formats with an end-of-infill token (CodeLlama's
``▁<EOT>``) close the middle with it, as the base model was pretrained to; the others rely on the
EOS that the packer appends after every document.

Repository context (`RepoContext`: the repository's name, the file's path, snippets of other
files) goes in front, as each family was pretrained on whole repositories:

    Qwen2.5-Coder  <|repo_name|>repo\n<|file_sep|>a.py\n{a}<|file_sep|>cur.py\n[P] prefix [S] ...
    StarCoder2     <repo_name>repo<file_sep>a.py\n{a}<file_sep>[P] cur.py\n prefix [S] ...
    no repo tokens [P] # path: a.py\n{a}# path: cur.py\n prefix [S] ...   (CodeLlama, DeepSeek)

(the StarCoder2 report applies FIM per file, its path inside the permuted text; without repo
tokens the path is a comment in the file's language, as DeepSeek-Coder's repository-level
pretraining wrote it). The context never carries loss: the model learns to use it, not to
memorise other files' code.

Two paths produce the same layout through one assembly function (`_assemble`), so training data and
inference prompts can never disagree:

- `permute` works on token ids (split points on token boundaries): the reference notebook's algorithm, fast.
- `split_chars` + `encode_fim` (or `permute_text`) split on characters and tokenize the three
  pieces separately, and `build_prompt` builds the inference prompt with the same code.

Units: ids are token ids (numpy int64 in, int64 out); `split_chars` counts Python characters
(code points). The RNG is an injected `numpy.random.Generator`; nothing here imports torch, and
transformers is touched only through the tokenizer object passed in.

Ids returned by `permute` / `encode_fim` are one document's body: no BOS, no EOS. The packer
puts `FimTokens.bos_id` (when not None) before it and EOS after it; `build_prompt` returns a
complete model input and so starts with `bos_id` itself.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codetune.errors import CodetuneError

__all__ = [
    "FIM_FORMATS",
    "FimFormat",
    "FimTokens",
    "RepoContext",
    "add_fim_tokens",
    "build_prompt",
    "decode_middle",
    "detect_fim",
    "encode_fim",
    "encode_pieces",
    "permute",
    "permute_text",
    "register_fim_format",
    "split_chars",
    "split_lines",
]


# ---------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class FimFormat:
    """One family's FIM sentinels, spelled exactly as they appear in its tokenizer's vocabulary.

    `prefix` / `suffix` / `middle` are required; the others are optional (None, or absent from a
    given tokenizer). `eot`, when the tokenizer has it, closes every middle in training and stops
    generation (CodeLlama). `eos` is the family's end-of-document token; when the tokenizer lacks
    it, the tokenizer's own `eos_token` is used. `extra_stops` are further tokens generation should
    stop on when present (e.g. a chat end-of-turn in an instruct variant's vocabulary).

    `sentencepiece_spacing`: the tokenizer adds SentencePiece's dummy leading space when encoding
    a string. CodeLlama's convention, followed here: the prefix is encoded with that space, the
    suffix and the middle without it (they continue text rather than start it).
    """

    family: str
    prefix: str
    suffix: str
    middle: str
    pad: str | None = None
    eot: str | None = None
    file_sep: str | None = None
    repo_name: str | None = None
    eos: str | None = None
    extra_stops: tuple[str, ...] = ()
    sentencepiece_spacing: bool = False
    # Repository layout (used only where the tokenizer has `file_sep`): a newline after the
    # repository name (Qwen2.5-Coder); the current file's path inside the FIM prefix rather
    # than after its file separator (StarCoder2, which applied FIM per file, path included).
    repo_name_newline: bool = False
    path_in_fim_prefix: bool = False

    @property
    def sentinels(self) -> tuple[str, str, str]:
        return (self.prefix, self.suffix, self.middle)


# Keyed by family. Detection walks this table in insertion order and matches on the tokens, never
# on a model name: any tokenizer with `<|fim_prefix|>`-style tokens (CodeGemma too) resolves to the
# "qwen2.5-coder" layout, which is the same token order.
FIM_FORMATS: dict[str, FimFormat] = {}


def register_fim_format(fmt: FimFormat, *, replace: bool = False) -> FimFormat:
    """Add `fmt` to `FIM_FORMATS` under `fmt.family`; re-registering a different format for an
    existing family needs `replace=True` (so a typo cannot silently shadow a built-in)."""
    if fmt.family == "auto":
        raise ValueError("'auto' is reserved for detection and cannot name a FIM format")
    old = FIM_FORMATS.get(fmt.family)
    if old is not None and old != fmt and not replace:
        raise ValueError(f"FIM family {fmt.family!r} is already registered; pass replace=True")
    FIM_FORMATS[fmt.family] = fmt
    return fmt


# StarCoder, StarCoderBase, StarCoder2 (the reference notebook's model family).
register_fim_format(FimFormat(
    family="starcoder", prefix="<fim_prefix>", suffix="<fim_suffix>", middle="<fim_middle>",
    pad="<fim_pad>", file_sep="<file_sep>", repo_name="<repo_name>", eos="<|endoftext|>",
    path_in_fim_prefix=True,
))
# SantaCoder spells the same tokens with dashes.
register_fim_format(FimFormat(
    family="santacoder", prefix="<fim-prefix>", suffix="<fim-suffix>", middle="<fim-middle>",
    pad="<fim-pad>", eos="<|endoftext|>",
))
register_fim_format(FimFormat(
    family="qwen2.5-coder", prefix="<|fim_prefix|>", suffix="<|fim_suffix|>",
    middle="<|fim_middle|>", pad="<|fim_pad|>", file_sep="<|file_sep|>",
    repo_name="<|repo_name|>", eos="<|endoftext|>", extra_stops=("<|im_end|>",),
    repo_name_newline=True,
))
# The leading "▁" is part of each token in CodeLlama's vocabulary (ids 32007-32010 there): see
# CodeLlamaTokenizer's prefix_token/... defaults and codellama's llama/tokenizer.py. Its reference
# prompt (llama/generation.py, infilling_prompt_tokens) is
#   PSM: <s>▁<PRE> encode(pre) ▁<SUF> encode_infilling(suf) ▁<MID>   i.e. "<PRE> {pre} <SUF>{suf} <MID>"
#   SPM: <s>▁<PRE> ▁<SUF> encode_infilling(suf) ▁<MID> encode(pre)   i.e. "<PRE> <SUF>{suf} <MID> {pre}"
# where encode() adds SentencePiece's leading space and encode_infilling() does not; the model
# ends an infill with ▁<EOT>.
register_fim_format(FimFormat(
    family="codellama", prefix="▁<PRE>", suffix="▁<SUF>", middle="▁<MID>", eot="▁<EOT>",
    eos="</s>", sentencepiece_spacing=True,
))
# DeepSeek-Coder: begin = prefix, hole = where the middle goes (so it plays the suffix sentinel's
# part), end = middle. The bars are U+FF5C and the underscores U+2581.
register_fim_format(FimFormat(
    family="deepseek-coder", prefix="<｜fim▁begin｜>", suffix="<｜fim▁hole｜>",
    middle="<｜fim▁end｜>", eos="<｜end▁of▁sentence｜>",
))


# ---------------------------------------------------------------------------------------------
# Detection


@dataclass(frozen=True)
class FimTokens:
    """A `FimFormat` resolved against one tokenizer: every id checked to be a single token.

    `stop_ids`: what generation must stop on (EOS, EOT, file / repo separators and every FIM
    sentinel). `stop_strings`: the same tokens as they appear in decoded text, for servers that
    stop on strings. `bos_id` is set only when the tokenizer itself prepends BOS on encode (Llama
    style); then every sequence, training and inference, starts with it.

    Built by `detect_fim`; tests may build one by hand (stop_ids / stop_strings then default to
    the ids above and the format's strings).
    """

    format: FimFormat
    prefix_id: int
    suffix_id: int
    middle_id: int
    eos_id: int
    pad_id: int | None = None
    eot_id: int | None = None
    file_sep_id: int | None = None
    repo_name_id: int | None = None
    bos_id: int | None = None
    stop_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.stop_ids:
            ids = (self.eos_id, self.eot_id, self.file_sep_id, self.repo_name_id,
                   self.prefix_id, self.suffix_id, self.middle_id, self.pad_id)
            object.__setattr__(self, "stop_ids", _unique(i for i in ids if i is not None))
        if not self.stop_strings:
            f = self.format
            strs = (f.eos, f.eot, f.file_sep, f.repo_name, f.prefix, f.suffix, f.middle, f.pad)
            object.__setattr__(self, "stop_strings", _unique(s for s in strs if s))

    @property
    def family(self) -> str:
        return self.format.family

    @property
    def n_added(self) -> int:
        """Tokens a FIM permutation adds to a document: 3 sentinels, plus EOT when it closes the
        middle (CodeLlama). A packer budgeting sequence length needs this."""
        return 3 if self.eot_id is None else 4


def detect_fim(tokenizer: Any, family: str = "auto") -> FimTokens:
    """Find which FIM format `tokenizer` speaks, from its vocabulary, and resolve the ids.

    `family="auto"` picks the one registered family whose prefix/suffix/middle tokens are all in
    the vocabulary; none or several is an error (several: name one with `fim.format`). Every
    sentinel found must be one token both ways: `convert_tokens_to_ids(tok)` gives its vocabulary
    id and `encode(tok, add_special_tokens=False)` gives exactly `[that id]`; a sentinel that is in
    the vocabulary but not registered as an added token would otherwise be split into pieces and
    FIM would silently train on garbage.
    """
    vocab = tokenizer.get_vocab()
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    present = [f for f in FIM_FORMATS.values() if all(t in vocab for t in f.sentinels)]
    if family == "auto":
        if not present:
            raise CodetuneError(_no_fim_message(name))
        if len(present) > 1:
            raise CodetuneError(
                f"tokenizer {name} has the FIM tokens of several families "
                f"({', '.join(f.family for f in present)}); set `fim.format` to the one the "
                "model was trained with.")
        fmt = present[0]
    elif family not in FIM_FORMATS:
        raise CodetuneError(
            f"unknown fim.format {family!r}; choose auto or one of: {', '.join(FIM_FORMATS)}.")
    else:
        fmt = FIM_FORMATS[family]
        if fmt not in present:
            missing = [t for t in fmt.sentinels if t not in vocab]
            has = ", ".join(f.family for f in present) or "none"
            raise CodetuneError(
                f"tokenizer {name} lacks the {family} FIM tokens {missing}. Families it does "
                f"have: {has}. Set `fim.format` to one of those (or auto), or `fim.rate=0` to "
                "train without FIM, or `fim.add_tokens=true` to add StarCoder-style tokens.")
    return _resolve(tokenizer, fmt, vocab, name)


def _no_fim_message(name: str) -> str:
    fams = ", ".join(FIM_FORMATS)
    return (
        f"tokenizer {name} has no Fill-in-the-Middle tokens of any known family ({fams}), so "
        "FIM training is impossible as it stands. Either pass `fim.rate=0` to train without FIM "
        "(plain left-to-right completion), or `fim.add_tokens=true` to add StarCoder-style "
        "tokens (<fim_prefix>, <fim_suffix>, <fim_middle>, <fim_pad>) whose new embeddings are "
        "then trained from scratch (slower to learn; the embedding and output layers must be "
        "trainable).")


def _resolve(tokenizer: Any, fmt: FimFormat, vocab: dict[str, int], name: str) -> FimTokens:
    def single(tok: str | None) -> int | None:
        if tok is None or tok not in vocab:
            return None
        return _single_id(tokenizer, tok, vocab, name)

    prefix_id, suffix_id, middle_id = (single(t) for t in fmt.sentinels)
    assert prefix_id is not None and suffix_id is not None and middle_id is not None
    pad_id, eot_id = single(fmt.pad), single(fmt.eot)
    file_sep_id, repo_name_id = single(fmt.file_sep), single(fmt.repo_name)
    # The family's own end-of-document token first: an instruct variant's eos_token is often a
    # chat end-of-turn, but FIM was pretrained with the document separator.
    eos_id = single(fmt.eos)
    if eos_id is None:
        eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise CodetuneError(
            f"tokenizer {name} has no end-of-sequence token; set `eos_token` in its "
            "tokenizer_config.json so documents can be separated.")
    roles = {"prefix": prefix_id, "suffix": suffix_id, "middle": middle_id, "pad": pad_id,
             "eot": eot_id, "file_sep": file_sep_id, "eos": eos_id}
    seen: dict[int, str] = {}
    for role, i in roles.items():
        if i is None:
            continue
        if i in seen:
            raise CodetuneError(
                f"tokenizer {name}: the {fmt.family} FIM {role} and {seen[i]} tokens share id "
                f"{i}; the tokenizer is misconfigured.")
        seen[i] = role
    stops = [eos_id, tokenizer.eos_token_id, eot_id, file_sep_id, repo_name_id,
             prefix_id, suffix_id, middle_id, pad_id]
    stops += [single(t) for t in fmt.extra_stops]
    stop_ids = _unique(i for i in stops if i is not None)
    # Decoded forms (CodeLlama's ▁<EOT> decodes to " <EOT>"), stripped so a substring test works.
    stop_strings = _unique(s for s in (tokenizer.decode([i]).strip() for i in stop_ids) if s)
    return FimTokens(
        format=fmt, prefix_id=prefix_id, suffix_id=suffix_id, middle_id=middle_id,
        eos_id=eos_id, pad_id=pad_id, eot_id=eot_id, file_sep_id=file_sep_id,
        repo_name_id=repo_name_id, bos_id=auto_bos(tokenizer), stop_ids=stop_ids,
        stop_strings=stop_strings)


def _single_id(tokenizer: Any, tok: str, vocab: dict[str, int], name: str) -> int:
    i = tokenizer.convert_tokens_to_ids(tok)
    enc = list(tokenizer.encode(tok, add_special_tokens=False))
    if i != vocab[tok] or enc != [i]:
        raise CodetuneError(
            f"tokenizer {name}: FIM token {tok!r} is in the vocabulary (id {vocab[tok]}) but "
            f"encodes to {enc}, not to that one id, so it is not registered as a special token. "
            "Register it (tokenizer.add_special_tokens) or fix the tokenizer files, or pass "
            "`fim.rate=0`.")
    return int(i)


def auto_bos(tokenizer: Any) -> int | None:
    """BOS id if the tokenizer prepends it on a default encode (Llama, DeepSeek), else None."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    with_special = list(tokenizer.encode("a"))
    bare = list(tokenizer.encode("a", add_special_tokens=False))
    return int(bos) if with_special[:1] == [bos] and bare[:1] != [bos] else None


def _unique(items: Any) -> tuple:
    return tuple(dict.fromkeys(items))


def add_fim_tokens(tokenizer: Any) -> int:
    """Add the StarCoder-style sentinels (prefix, suffix, middle, pad) as special tokens.

    Returns how many were new; the caller must then resize the model's embeddings
    (`model.resize_token_embeddings(len(tokenizer))`) and train them. Call it only when
    `detect_fim` found nothing: on a tokenizer that already has another family's tokens,
    detection would then report two families.
    """
    from tokenizers import AddedToken  # heavy: tokenizers (Rust)

    fmt = FIM_FORMATS["starcoder"]
    vocab = tokenizer.get_vocab()
    new = [t for t in (fmt.prefix, fmt.suffix, fmt.middle, fmt.pad) if t not in vocab]
    if not new:
        return 0
    # normalized=False: a SentencePiece-style normalizer must not turn them into "▁<fim_...>".
    added = [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False)
             for t in new]
    return int(tokenizer.add_tokens(added, special_tokens=True))


# ---------------------------------------------------------------------------------------------
# Repository context


@dataclass(frozen=True)
class RepoContext:
    """The rest of the repository, for a repo-level sample or prompt: the repository's name,
    the path of the file being completed, and snippets of other files as (path, text), in
    prompt order. Callers put the most relevant snippet last, nearest the hole."""

    repo: str | None = None
    path: str | None = None
    snippets: tuple[tuple[str, str], ...] = ()


# Line comments of languages that have no "#": the no-repo-token fallback writes the path as a
# comment the file's own language would accept.
_SLASH = (".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".java", ".js", ".jsx", ".ts", ".tsx",
          ".go", ".rs", ".swift", ".kt", ".kts", ".scala", ".dart", ".php", ".m", ".proto",
          ".zig", ".groovy", ".gradle", ".sol", ".vue", ".svelte")
_DASH = (".sql", ".lua", ".hs", ".elm", ".ada", ".adb", ".vhd")
_SEMI = (".clj", ".cljs", ".el", ".lisp", ".scm", ".asm", ".s")
_PERCENT = (".tex", ".erl", ".m4")


def line_comment(path: str) -> str:
    """The line-comment marker of `path`'s language ("#" where unknown)."""
    ext = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    for marker, exts in (("//", _SLASH), ("--", _DASH), (";", _SEMI), ("%", _PERCENT)):
        if ext in exts:
            return marker
    return "#"


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def repo_context_text(fim: FimTokens, ctx: RepoContext) -> tuple[str, str]:
    """(text before [P], text at the start of the FIM prefix) of `ctx`, sentinels spelled out:
    what `encode_repo_context` encodes, for display and for servers that send text."""
    f = fim.format
    if fim.file_sep_id is not None:
        pre = ""
        if ctx.repo and fim.repo_name_id is not None:
            pre += f.repo_name + ctx.repo + ("\n" if f.repo_name_newline else "")
        for path, text in ctx.snippets:
            pre += f"{f.file_sep}{path}\n{_with_newline(text)}"
        pre += f.file_sep
        here = f"{ctx.path}\n" if ctx.path else ""
        return (pre, here) if f.path_in_fim_prefix else (pre + here, "")
    return "", fallback_context_text(ctx)


def fallback_context_text(ctx: RepoContext) -> str:
    """The layout for a family without repository tokens (or no FIM tokens at all): each
    snippet behind its path as a comment of the file's language, then the file's own path."""
    c = line_comment(ctx.path or "")
    head = "".join(f"{c} path: {p}\n{_with_newline(t)}" for p, t in ctx.snippets)
    if ctx.path:
        head += f"{c} path: {ctx.path}\n"
    return head


def token_counter(tokenizer: Any, maxsize: int = 65536) -> Callable[[str], int]:
    """`count(text)`: the number of tokens `text` encodes to as a snippet of repository context
    (no special tokens added, sentinel-like text not turned into sentinels), cached: what
    `context.pack` budgets with."""
    @functools.lru_cache(maxsize=maxsize)
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, split_special_tokens=True)
                   ["input_ids"])
    return count


def encode_repo_context(tokenizer: Any, fim: FimTokens, ctx: RepoContext | None
                        ) -> tuple[list[int], list[int]]:
    """(preamble ids, before [P]; head ids, at the start of the FIM prefix) for `ctx`.

    Sentinels go in as their ids; the text between them is encoded with special tokens split,
    so a snippet that contains "<file_sep>" as text cannot forge a separator. Empty for None."""
    if ctx is None:
        return [], []
    f = fim.format
    if fim.file_sep_id is not None:
        pre: list[int] = []
        if ctx.repo and fim.repo_name_id is not None:
            pre += [fim.repo_name_id, *_encode(tokenizer, ctx.repo + (
                "\n" if f.repo_name_newline else ""))]
        for path, text in ctx.snippets:
            pre += [fim.file_sep_id, *_encode(tokenizer, f"{path}\n{_with_newline(text)}")]
        pre.append(fim.file_sep_id)
        here = _encode(tokenizer, f"{ctx.path}\n") if ctx.path else []
        return (pre, here) if f.path_in_fim_prefix else (pre + here, [])
    _, head = repo_context_text(fim, ctx)
    return [], _encode(tokenizer, head) if head else []


# ---------------------------------------------------------------------------------------------
# Transformation


def _assemble(prefix: Any, middle: Any, suffix: Any, fim: FimTokens, spm: bool,
              middle_loss_only: bool, preamble: Any = (), head: Any = ()
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """Lay out the pieces (int sequences) in one preallocated int64 array:

        PSM  preamble [P] head prefix [S] suffix [M] middle
        SPM  preamble [P] [S] suffix [M] head prefix middle

    `preamble` and `head` are repository context (`encode_repo_context`), never trained on.
    Returns (ids, loss_mask, m0) where m0 is the index of the first middle token, the same in
    both layouts: the preamble, 3 sentinels, the head, prefix and suffix precede it.
    """
    n_r, n_h = len(preamble), len(head)
    n_p, n_m, n_s = n_h + len(prefix), len(middle), len(suffix)  # n_p: head + prefix
    m0 = n_r + 3 + n_p + n_s
    out = np.empty(m0 + n_m + (fim.eot_id is not None), dtype=np.int64)
    out[:n_r] = preamble
    out[n_r] = fim.prefix_id
    if spm:  # [P][S] suffix [M] head prefix middle
        at = n_r + 1
        out[at] = fim.suffix_id
        out[at + 1:at + 1 + n_s] = suffix
        out[at + 1 + n_s] = fim.middle_id
        out[at + 2 + n_s:at + 2 + n_s + n_h] = head
        out[at + 2 + n_s + n_h:m0] = prefix
        head_at = at + 2 + n_s
    else:  # [P] head prefix [S] suffix [M] middle
        at = n_r + 1
        out[at:at + n_h] = head
        out[at + n_h:at + n_p] = prefix
        out[at + n_p] = fim.suffix_id
        out[at + 1 + n_p:at + 1 + n_p + n_s] = suffix
        out[at + 1 + n_p + n_s] = fim.middle_id
        head_at = at
    out[m0:m0 + n_m] = middle
    if fim.eot_id is not None:
        out[-1] = fim.eot_id
    if middle_loss_only:
        mask = np.zeros(out.shape[0], dtype=bool)
        mask[m0:] = True  # the middle and, where the format has one, the EOT closing it
    else:
        mask = np.ones(out.shape[0], dtype=bool)
        mask[:n_r] = False  # other files' code: context, not a target
        mask[head_at:head_at + n_h] = False
    return out, mask, m0


def with_context(ids: Any, preamble: Any = (), head: Any = ()) -> tuple[np.ndarray, np.ndarray]:
    """A left-to-right (not FIM) document behind its repository context: (ids, loss_mask),
    the context masked."""
    ctx = np.asarray([*preamble, *head], dtype=np.int64)
    body = np.asarray(ids, dtype=np.int64)
    mask = np.concatenate([np.zeros(len(ctx), bool), np.ones(len(body), bool)])
    return np.concatenate([ctx, body]), mask


def permute(ids: Any, rng: np.random.Generator, fim: FimTokens, fim_rate: float = 0.5,
            spm_rate: float = 0.5, truncate_or_pad: bool = False,
            middle_loss_only: bool = False, preamble: Any = (),
            head: Any = ()) -> tuple[np.ndarray, np.ndarray]:
    """FIM-permute one document's token ids with probability `fim_rate` (the reference notebook's algorithm).

    ids: (n,) ints, the document without BOS/EOS. Returns (new_ids, loss_mask): new_ids int64 of
    shape (n + fim.n_added,) when FIM is applied, else `ids` itself as int64 (shape (n,), possibly
    sharing memory with the input: do not write to it); loss_mask bool of the same shape, True
    where the token is a training target.

    Draws, in this order (so a seed reproduces a run): `rng.binomial(1, fim_rate)`; if FIM,
    `rng.integers(0, n + 1, size=2)` sorted into the two split points (units: tokens); then, unless
    the truncate_or_pad early return below fires, `rng.binomial(1, spm_rate)` picks SPM over PSM.

    truncate_or_pad: keep the length n by cutting `fim.n_added` tokens off the end of the suffix;
    when the suffix is not longer than that, the document is returned unchanged. Split on token
    boundaries, a FIM sample is always exactly `n_added` tokens longer, so the reference notebook's padding
    branch (a relic of Megatron's character-level variant) can never fire and is not reproduced.

    middle_loss_only: when FIM is applied, loss_mask is True only on the middle tokens (and the
    EOT closing them, for formats that have one); the EOS the packer appends after the document
    should be True too, so the model learns where a middle ends. Without FIM the mask is all True.

    preamble / head: repository context (`encode_repo_context`), placed as `_assemble` lays it
    out, or in front of a document left unpermuted (`with_context`); masked. The split points
    are drawn on `ids` alone, so the draws do not depend on the context.
    """
    sample = np.asarray(ids, dtype=np.int64)
    n = sample.shape[0]
    plain = (with_context(sample, preamble, head) if len(preamble) or len(head) else
             (sample, np.ones(n, dtype=bool)))
    if not rng.binomial(1, fim_rate):
        return plain
    lo, hi = sorted(rng.integers(0, n + 1, size=2).tolist())
    end = n
    if truncate_or_pad:
        if n - hi <= fim.n_added:
            return plain
        end = n - fim.n_added
    spm = bool(rng.binomial(1, spm_rate))
    out, mask, _ = _assemble(sample[:lo], sample[lo:hi], sample[hi:end], fim, spm,
                             middle_loss_only, preamble, head)
    return out, mask


def split_chars(text: str, rng: np.random.Generator,
                fim_rate: float = 0.5) -> tuple[str, str, str] | None:
    """With probability `fim_rate`, split `text` into (prefix, middle, suffix); else None.

    Split points are drawn like `permute`'s (`binomial`, then `integers(0, len + 1, size=2)`
    sorted) but count Python characters (code points), so no split falls inside a UTF-8
    multi-byte character. (A grapheme cluster such as an emoji with a modifier can be split.)
    """
    if not rng.binomial(1, fim_rate):
        return None
    lo, hi = sorted(rng.integers(0, len(text) + 1, size=2).tolist())
    return text[:lo], text[lo:hi], text[hi:]


# Editor-shaped spans (`fim.split=line`): shares of the three kinds, after Refact's FIM v2.
LINE_SPANS = (("inside", 0.05), ("rest_of_line", 0.50), ("lines", 0.45))
MAX_SPAN_LINES = 8


def split_lines(text: str, rng: np.random.Generator,
                fim_rate: float = 0.5) -> tuple[str, str, str] | None:
    """With probability `fim_rate`, split `text` where an editor asks for code; else None.

    What editors request is not a random stretch of characters but, from a cursor: the rest of
    the current line, a few whole lines (a block body), or, rarely, a gap inside a line. The
    kinds (`LINE_SPANS`), on a line chosen uniformly among the non-blank ones:

        inside        two points inside the line's text (after its indentation), sorted
        rest_of_line  from a point in the line's text to its end, newline excluded: the
                      model learns to stop at the end of the line (eval's single-line hole is
                      the case of a cursor right after the indentation)
        lines         whole lines from the chosen one, 1..MAX_SPAN_LINES of them, newlines
                      included (eval's multi-line hole: a block body)

    Draws, in this order: `binomial(1, fim_rate)`; `random()` for the kind; `integers` for the
    line; then `integers` for the points (inside: two in [a, b], rest_of_line: one in [a, b),
    lines: the count), where a is the line's first non-blank character and b its end. A text
    without a non-blank line is not split (None). Units: Python characters."""
    if not rng.binomial(1, fim_rate):
        return None
    u = float(rng.random())
    lines = text.splitlines(keepends=True)
    starts = np.cumsum([0] + [len(ln) for ln in lines]).tolist()
    cands = [i for i, ln in enumerate(lines) if ln.strip()]
    if not cands:
        return None
    li = cands[int(rng.integers(0, len(cands)))]
    line = lines[li]
    a = starts[li] + len(line) - len(line.lstrip(" \t"))
    b = starts[li] + len(line.rstrip("\r\n"))
    if u < LINE_SPANS[0][1]:
        lo, hi = sorted(rng.integers(a, b + 1, size=2).tolist())
    elif u < LINE_SPANS[0][1] + LINE_SPANS[1][1]:
        lo, hi = int(rng.integers(a, b)), b
    else:
        k = int(rng.integers(1, MAX_SPAN_LINES + 1))
        lo, hi = starts[li], starts[min(li + k, len(lines))]
    return text[:lo], text[lo:hi], text[hi:]


_ANCHORS = ("☺", "\u2063", "§")  # rare characters no tokenizer merges with what follows


def _encode(tokenizer: Any, text: str) -> list[int]:
    # split_special_tokens: code that contains "<fim_prefix>" as text (a FIM tool's own source)
    # must not turn into the sentinel id.
    return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))


def _encode_continuation(tokenizer: Any, text: str) -> list[int]:
    """Encode `text` as it continues earlier text: without SentencePiece's dummy leading space.

    The anchor trick from codellama's `encode_infilling`: encode anchor + text and drop the
    anchor's tokens, checked rather than assumed to be a fixed count.
    """
    if not text:
        return []
    for anchor in _ANCHORS:
        head = _encode(tokenizer, anchor)
        ids = _encode(tokenizer, anchor + text)
        if ids[:len(head)] == head:
            return ids[len(head):]
    raise RuntimeError(f"cannot encode {text[:20]!r} without a leading space with this tokenizer")


def encode_pieces(tokenizer: Any, fim: FimTokens, prefix: str, middle: str,
                  suffix: str, after_head: bool = False) -> tuple[list[int], list[int], list[int]]:
    """Tokenize the three pieces separately, with the family's spacing rules.

    Separately, so that a middle always starts on a token boundary, as it does at inference where
    the model generates it after the [M] sentinel. With `sentencepiece_spacing` (CodeLlama) the
    prefix gets the tokenizer's leading space and middle and suffix do not. (CodeLlama's paper
    encodes prefix + middle in one piece in SPM; separate pieces match the inference prompt,
    where the prefix is encoded alone.)
    """
    if fim.format.sentencepiece_spacing:
        # behind a context head the prefix continues text, so it gets no leading space
        first = _encode_continuation if after_head else _encode
        return (first(tokenizer, prefix), _encode_continuation(tokenizer, middle),
                _encode_continuation(tokenizer, suffix))
    return _encode(tokenizer, prefix), _encode(tokenizer, middle), _encode(tokenizer, suffix)


def encode_fim(tokenizer: Any, fim: FimTokens, prefix: str, middle: str, suffix: str,
               spm: bool = False, middle_loss_only: bool = False,
               repo: RepoContext | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A FIM training example from text: (ids int64, loss_mask bool), like `permute`'s output.

    No BOS/EOS (the packer adds them); loss_mask follows `permute`'s convention.
    """
    pre, head = encode_repo_context(tokenizer, fim, repo)
    p, m, s = encode_pieces(tokenizer, fim, prefix, middle, suffix, after_head=bool(head))
    out, mask, _ = _assemble(p, m, s, fim, spm, middle_loss_only, pre, head)
    return out, mask


def permute_text(tokenizer: Any, text: str, rng: np.random.Generator, fim: FimTokens,
                 fim_rate: float = 0.5, spm_rate: float = 0.5,
                 middle_loss_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The character-level counterpart of `permute`: split `text` with `split_chars`, draw SPM
    with `rng.binomial(1, spm_rate)`, and `encode_fim`; without FIM, encode `text` whole."""
    parts = split_chars(text, rng, fim_rate)
    if parts is None:
        ids = np.asarray(_encode(tokenizer, text), dtype=np.int64)
        return ids, np.ones(ids.shape[0], dtype=bool)
    spm = bool(rng.binomial(1, spm_rate))
    prefix, middle, suffix = parts
    return encode_fim(tokenizer, fim, prefix, middle, suffix, spm, middle_loss_only)


def build_prompt(tokenizer: Any, fim: FimTokens, prefix: str, suffix: str,
                 spm: bool = False, repo: RepoContext | None = None) -> list[int]:
    """The inference prompt: a training example with an empty middle, cut after the [M]
    sentinel (PSM) or after the prefix (SPM), with BOS in front when the tokenizer uses one.

        PSM  [BOS] [repository context] [P] prefix [S] suffix [M]
        SPM  [BOS] [repository context] [P] [S] suffix [M] prefix

    Without `repo` the prompt is exactly the file-level one. Generate until any of
    `fim.stop_ids`; decode the new tokens with `decode_middle`.
    """
    pre, head = encode_repo_context(tokenizer, fim, repo)
    p, _, s = encode_pieces(tokenizer, fim, prefix, "", suffix, after_head=bool(head))
    out, _, m0 = _assemble(p, (), s, fim, spm, False, pre, head)
    ids = out[:m0].tolist()
    return ids if fim.bos_id is None else [fim.bos_id, *ids]


def decode_middle(tokenizer: Any, fim: FimTokens, ids: Any,
                  skip_special_tokens: bool = True) -> str:
    """Decode generated middle tokens to text, keeping a leading space.

    SentencePiece decoders drop the first token's leading space (CodeLlama's decoder strips it),
    which would eat the indentation of an infill: decode behind an anchor and cut it off, as
    codellama's `decode_infilling` does.
    """
    ids = [int(i) for i in ids]
    if not fim.format.sentencepiece_spacing:
        return tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    anchor = _ANCHORS[0]
    head = _encode(tokenizer, anchor)
    text = tokenizer.decode(head + ids, skip_special_tokens=skip_special_tokens)
    return text.split(anchor, 1)[1] if anchor in text else text
