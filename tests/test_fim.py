"""FIM: the registry, detection from tiny tokenizers of each family, and the transformation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codetune.errors import CodetuneError
from codetune.tokens.fim import (
    FIM_FORMATS,
    FimFormat,
    FimTokens,
    add_fim_tokens,
    build_prompt,
    decode_middle,
    detect_fim,
    encode_fim,
    encode_pieces,
    permute,
    permute_text,
    register_fim_format,
    split_chars,
)

from .tiny import build_tokenizer

P, S, M, EOT = 1, 2, 3, 4
PLAIN = FimTokens(format=FIM_FORMATS["starcoder"], prefix_id=P, suffix_id=S, middle_id=M,
                  eos_id=0)
WITH_EOT = FimTokens(format=FIM_FORMATS["codellama"], prefix_id=P, suffix_id=S, middle_id=M,
                     eos_id=0, eot_id=EOT)
DOC = [10, 11, 12, 13, 14, 15]


class StubRng:
    """Hands out fixed draws and records the call order, to pin permute's draw sequence."""

    def __init__(self, fim: int, bounds: tuple[int, int], spm: int = 0):
        self._binomial = iter([fim, spm])
        self.bounds = bounds
        self.calls: list[tuple] = []

    def binomial(self, n, p):
        self.calls.append(("binomial", n, p))
        return next(self._binomial)

    def integers(self, low, high, size):
        self.calls.append(("integers", low, high, size))
        return np.array(self.bounds[::-1])  # reversed: permute must sort


# --- exact outputs ---------------------------------------------------------------------------

def test_psm_exact():
    rng = StubRng(fim=1, bounds=(2, 4), spm=0)
    ids, mask = permute(DOC, rng, PLAIN, fim_rate=0.3, spm_rate=0.7)
    assert ids.tolist() == [P, 10, 11, S, 14, 15, M, 12, 13]
    assert ids.dtype == np.int64 and mask.dtype == bool and mask.all()
    assert rng.calls == [("binomial", 1, 0.3), ("integers", 0, 7, 2), ("binomial", 1, 0.7)]


def test_spm_exact():
    ids, mask = permute(DOC, StubRng(fim=1, bounds=(2, 4), spm=1), PLAIN)
    assert ids.tolist() == [P, S, 14, 15, M, 10, 11, 12, 13]


def test_no_fim_returns_document():
    rng = StubRng(fim=0, bounds=(2, 4))
    ids, mask = permute(DOC, rng, PLAIN, middle_loss_only=True)
    assert ids.tolist() == DOC and mask.all() and len(rng.calls) == 1


def test_edge_splits():
    ids, _ = permute(DOC, StubRng(1, (0, 0)), PLAIN)  # empty prefix and middle
    assert ids.tolist() == [P, S, *DOC, M]
    ids, _ = permute(DOC, StubRng(1, (6, 6), spm=1), PLAIN)  # everything is prefix
    assert ids.tolist() == [P, S, M, *DOC]
    ids, _ = permute([], StubRng(1, (0, 0)), PLAIN)
    assert ids.tolist() == [P, S, M]


def test_middle_loss_only_masks_exactly_the_middle():
    ids, mask = permute(DOC, StubRng(1, (2, 4), 0), PLAIN, middle_loss_only=True)
    assert ids[mask].tolist() == [12, 13]
    ids, mask = permute(DOC, StubRng(1, (2, 4), 1), PLAIN, middle_loss_only=True)
    assert ids[mask].tolist() == [12, 13]


def test_eot_closes_the_middle_and_counts_in_the_loss():
    ids, mask = permute(DOC, StubRng(1, (2, 4), 0), WITH_EOT, middle_loss_only=True)
    assert ids.tolist() == [P, 10, 11, S, 14, 15, M, 12, 13, EOT]
    assert ids[mask].tolist() == [12, 13, EOT]
    ids, _ = permute(DOC, StubRng(1, (2, 4), 1), WITH_EOT)
    assert ids.tolist() == [P, S, 14, 15, M, 10, 11, 12, 13, EOT]
    assert WITH_EOT.n_added == 4 and PLAIN.n_added == 3


def test_truncate_or_pad_exact():
    doc = list(range(10, 20))
    ids, _ = permute(doc, StubRng(1, (2, 4), 0), PLAIN, truncate_or_pad=True)
    assert ids.tolist() == [P, 10, 11, S, 14, 15, 16, M, 12, 13]  # suffix lost 17, 18, 19
    rng = StubRng(1, (2, 7), 0)  # suffix of 3 tokens is not longer than the 3 added: unchanged
    ids, _ = permute(doc, rng, PLAIN, truncate_or_pad=True)
    assert ids.tolist() == doc and len(rng.calls) == 2  # as the reference notebook: no SPM draw


# --- properties over many random samples ------------------------------------------------------

def seed_permute(sample, rng, fim_rate, spm_rate, truncate_or_pad):
    """The reference notebook's permute, transcribed for numpy.random.Generator, as the reference."""
    if rng.binomial(1, fim_rate):
        b = sorted(rng.integers(0, len(sample) + 1, size=2))
        prefix, middle, suffix = sample[:b[0]], sample[b[0]:b[1]], sample[b[1]:]
        if truncate_or_pad:
            diff = len(prefix) + len(middle) + len(suffix) + 3 - len(sample)
            if len(suffix) <= diff:
                return sample
            suffix = suffix[:len(suffix) - diff]
        if rng.binomial(1, spm_rate):
            return [P, S, *suffix, M, *prefix, *middle]
        return [P, *prefix, S, *suffix, M, *middle]
    return sample


def random_docs(n: int, seed: int = 0) -> list[list[int]]:
    g = np.random.default_rng(seed)
    return [g.integers(100, 5000, size=int(g.integers(0, 60))).tolist() for _ in range(n)]


@pytest.mark.parametrize("truncate_or_pad", [False, True])
def test_matches_the_seed_algorithm(truncate_or_pad):
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    for doc in random_docs(500):
        ids, _ = permute(np.array(doc), a, PLAIN, 0.6, 0.4, truncate_or_pad)
        assert ids.tolist() == seed_permute(doc, b, 0.6, 0.4, truncate_or_pad)


def reassemble(ids: list[int]) -> tuple[list[int], bool]:
    """Undo a FIM permutation: (document, was_spm). Each sentinel must occur exactly once."""
    assert [ids.count(t) for t in (P, S, M)] == [1, 1, 1]
    s, m = ids.index(S), ids.index(M)
    if s == 1:  # SPM: [P][S] suffix [M] prefix middle
        return ids[m + 1:] + ids[2:m], True
    return ids[1:s] + ids[m + 1:] + ids[s + 1:m], False


def test_conservation_and_rates():
    rng = np.random.default_rng(3)
    n_fim = n_spm = 0
    docs = random_docs(4000, seed=1)
    for doc in docs:
        ids, mask = permute(doc, rng, PLAIN, fim_rate=0.3, spm_rate=0.7)
        assert mask.shape == ids.shape and mask.all()
        if len(ids) == len(doc):
            assert ids.tolist() == doc
            continue
        assert len(ids) == len(doc) + 3
        back, spm = reassemble(ids.tolist())
        assert back == doc
        n_fim += 1
        n_spm += spm
    assert abs(n_fim / len(docs) - 0.3) < 0.03
    assert abs(n_spm / n_fim - 0.7) < 0.04


def test_truncate_or_pad_keeps_length():
    rng = np.random.default_rng(5)
    for doc in random_docs(1000, seed=2):
        ids, mask = permute(doc, rng, PLAIN, fim_rate=0.9, truncate_or_pad=True,
                            middle_loss_only=True)
        assert len(ids) == len(doc) == len(mask)
        if ids.tolist() != doc:  # the suffix ends the document: its last 3 tokens are cut
            assert reassemble(ids.tolist())[0] == doc[:-3]


def test_deterministic_per_seed():
    docs = random_docs(200)

    def run(seed):
        rng = np.random.default_rng(seed)
        return [permute(d, rng, PLAIN)[0].tolist() for d in docs]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_middle_loss_only_over_many_samples():
    rng, twin = np.random.default_rng(9), np.random.default_rng(9)
    for doc in random_docs(500, seed=4):
        ids, mask = permute(doc, rng, WITH_EOT, middle_loss_only=True)
        if not twin.binomial(1, 0.5):  # the twin replays the documented draws
            assert ids.tolist() == doc and mask.all()
            continue
        lo, hi = sorted(twin.integers(0, len(doc) + 1, size=2))
        twin.binomial(1, 0.5)
        n_true = hi - lo + 1  # the middle and the EOT closing it, at the end
        assert ids[mask].tolist() == [*doc[lo:hi], EOT]
        assert mask[len(mask) - n_true:].all() and not mask[:len(mask) - n_true].any()


# --- character-level split --------------------------------------------------------------------

TEXT = "def grüß(x):\n    return '☃ 🎉 naïve' + x  # ünïcödé\n"


def test_split_chars_reassembles_and_respects_characters():
    rng = np.random.default_rng(0)
    seen_fim = 0
    for _ in range(300):
        parts = split_chars(TEXT, rng, fim_rate=0.5)
        if parts is None:
            continue
        seen_fim += 1
        assert "".join(parts) == TEXT
        for piece in parts:  # each piece is whole characters: round-trips through UTF-8
            assert piece.encode("utf-8").decode("utf-8") == piece
    assert 100 < seen_fim < 200
    assert split_chars(TEXT, np.random.default_rng(0), fim_rate=0.0) is None


# --- tokenizers of each family ----------------------------------------------------------------

FAMILIES = ["starcoder", "qwen2.5-coder", "deepseek-coder", "codellama"]


@pytest.mark.parametrize("family", FAMILIES)
def test_detect_each_family(toks, family):
    tok = toks[family]
    fim = detect_fim(tok)
    assert fim.family == family
    fmt = FIM_FORMATS[family]
    assert [fim.prefix_id, fim.suffix_id, fim.middle_id] == tok.convert_tokens_to_ids(
        list(fmt.sentinels))
    assert detect_fim(tok, family) == fim
    for i in (fim.prefix_id, fim.suffix_id, fim.middle_id, fim.eos_id):
        assert i in fim.stop_ids
    assert fim.eos_id == tok.convert_tokens_to_ids(fmt.eos)
    assert all(s and s in tok.decode(fim.stop_ids) for s in fim.stop_strings)


def test_detect_details(toks):
    sc = detect_fim(toks["starcoder"])
    conv = toks["starcoder"].convert_tokens_to_ids
    assert sc.pad_id == conv("<fim_pad>") and sc.file_sep_id == conv("<file_sep>")
    assert sc.file_sep_id in sc.stop_ids and sc.eot_id is None and sc.bos_id is None
    qw = detect_fim(toks["qwen2.5-coder"])
    assert toks["qwen2.5-coder"].convert_tokens_to_ids("<|im_end|>") in qw.stop_ids
    assert "<|file_sep|>" in qw.stop_strings
    cl = detect_fim(toks["codellama"])
    conv = toks["codellama"].convert_tokens_to_ids
    assert cl.eot_id == conv("▁<EOT>") and cl.eot_id in cl.stop_ids and cl.n_added == 4
    assert cl.bos_id == conv("<s>") and cl.eos_id == conv("</s>")
    assert "<EOT>" in cl.stop_strings


def test_no_fim_tokens_is_a_clear_error(toks):
    with pytest.raises(CodetuneError) as e:
        detect_fim(toks["none"])
    msg = str(e.value)
    assert "fim.rate=0" in msg and "fim.add_tokens=true" in msg and "\n" not in msg


def test_explicit_family_the_tokenizer_lacks(toks):
    with pytest.raises(CodetuneError, match=r"lacks the codellama.*have: starcoder"):
        detect_fim(toks["starcoder"], "codellama")
    with pytest.raises(CodetuneError, match="unknown fim.format 'starcoderr'"):
        detect_fim(toks["starcoder"], "starcoderr")


def test_add_fim_tokens_then_detect(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        str(build_tokenizer(tmp_path / "t", specials=["<|endoftext|>"])))
    before = len(tok)
    assert add_fim_tokens(tok) == 4 and len(tok) == before + 4
    assert add_fim_tokens(tok) == 0
    fim = detect_fim(tok)
    assert fim.family == "starcoder" and fim.pad_id is not None
    assert tok.encode("<fim_middle>", add_special_tokens=False) == [fim.middle_id]


def test_add_fim_tokens_on_sentencepiece_tokenizer(toks):
    import copy

    tok = copy.deepcopy(toks["codellama"])
    # CodeLlama already has FIM tokens: adding StarCoder's makes detection ambiguous, by design.
    assert add_fim_tokens(tok) == 4
    with pytest.raises(CodetuneError, match="several families"):
        detect_fim(tok)
    assert detect_fim(tok, "starcoder").middle_id == tok.convert_tokens_to_ids("<fim_middle>")


def test_sentinel_that_is_not_one_token_is_rejected(tmp_path):
    """`<fim_prefix>` etc. in the BPE vocabulary but not registered as added tokens: they exist
    by convert_tokens_to_ids, yet encoding the text splits them into pieces."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    build_tokenizer(tmp_path / "t", specials=["<|endoftext|>"])
    spec = json.loads((tmp_path / "t" / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"):
        vocab[t] = len(vocab)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                  eos_token="<|endoftext|>")
    assert tok.convert_tokens_to_ids("<fim_prefix>") == vocab["<fim_prefix>"]
    with pytest.raises(CodetuneError, match="not registered as a special token"):
        detect_fim(tok)


def test_registry():
    extra = FimFormat(family="test-fam", prefix="<pre>", suffix="<suf>", middle="<mid>")
    try:
        assert register_fim_format(extra) is extra and FIM_FORMATS["test-fam"] is extra
        register_fim_format(extra)  # the same again is fine
        with pytest.raises(ValueError):
            register_fim_format(FimFormat("test-fam", "<a>", "<b>", "<c>"))
    finally:
        FIM_FORMATS.pop("test-fam", None)
    with pytest.raises(ValueError):
        register_fim_format(FimFormat("auto", "<a>", "<b>", "<c>"))


# --- text encoding and prompts -----------------------------------------------------------------

PRE, SUF = "def f(x):\n", "    return y\n"
EXPECTED_PROMPTS = {
    "starcoder": ("<fim_prefix>{p}<fim_suffix>{s}<fim_middle>",
                  "<fim_prefix><fim_suffix>{s}<fim_middle>{p}"),
    "qwen2.5-coder": ("<|fim_prefix|>{p}<|fim_suffix|>{s}<|fim_middle|>",
                      "<|fim_prefix|><|fim_suffix|>{s}<|fim_middle|>{p}"),
    "deepseek-coder": ("<｜fim▁begin｜>{p}<｜fim▁hole｜>{s}<｜fim▁end｜>",
                       "<｜fim▁begin｜><｜fim▁hole｜>{s}<｜fim▁end｜>{p}"),
    # codellama's reference: "<PRE> {pre} <SUF>{suf} <MID>" and "<PRE> <SUF>{suf} <MID> {pre}"
    "codellama": ("<s> <PRE> {p} <SUF>{s} <MID>", "<s> <PRE> <SUF>{s} <MID> {p}"),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spm", [False, True])
def test_build_prompt_decodes_to_the_family_format(toks, family, spm):
    tok = toks[family]
    fim = detect_fim(tok)
    ids = build_prompt(tok, fim, PRE, SUF, spm=spm)
    assert tok.decode(ids) == EXPECTED_PROMPTS[family][spm].format(p=PRE, s=SUF)
    # the same code path as training: a training example with an empty middle, cut at the middle
    train, _ = encode_fim(tok, fim, PRE, "", SUF, spm=spm)
    bos = [] if fim.bos_id is None else [fim.bos_id]
    assert ids == bos + train.tolist()[:len(ids) - len(bos)]


def test_codellama_spacing(toks):
    tok = toks["codellama"]
    fim = detect_fim(tok)
    p, m, s = encode_pieces(tok, fim, "x = 1\n", "  y = 2\n", "z = 3\n")
    pieces = tok.convert_ids_to_tokens
    assert pieces(p)[0].startswith("▁")  # the prefix gets SentencePiece's leading space
    assert not pieces(s)[0].startswith("▁")  # the suffix does not
    assert pieces(m)[0].startswith("▁▁") and decode_middle(tok, fim, m) == "  y = 2\n"
    assert build_prompt(tok, fim, "", SUF)[:3] == [fim.bos_id, fim.prefix_id, fim.suffix_id]


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_fim_middle_round_trips(toks, family):
    """Split on characters, tokenized separately: the middle decodes back exactly, even where the
    split falls next to multi-byte characters."""
    tok = toks[family]
    fim = detect_fim(tok)
    rng = np.random.default_rng(1)
    for _ in range(40):
        parts = split_chars(TEXT, rng, fim_rate=1.0)
        assert parts is not None
        prefix, middle, suffix = parts
        ids, mask = encode_fim(tok, fim, prefix, middle, suffix, spm=bool(rng.integers(2)),
                               middle_loss_only=True)
        body = ids[mask].tolist()
        if fim.eot_id is not None:
            assert body[-1] == fim.eot_id
            body = body[:-1]
        assert decode_middle(tok, fim, body) == middle
        _, m, _ = encode_pieces(tok, fim, prefix, middle, suffix)
        assert body == m


def test_text_that_spells_a_sentinel_stays_text(toks):
    tok = toks["starcoder"]
    fim = detect_fim(tok)
    ids, _ = encode_fim(tok, fim, "a = '<fim_prefix>'\n", "b", "c")
    assert ids.tolist().count(fim.prefix_id) == 1


def test_permute_text(toks):
    tok = toks["qwen2.5-coder"]
    fim = detect_fim(tok)
    a = [permute_text(tok, TEXT, np.random.default_rng(s), fim)[0].tolist() for s in range(20)]
    b = [permute_text(tok, TEXT, np.random.default_rng(s), fim)[0].tolist() for s in range(20)]
    assert a == b
    whole = tok.encode(TEXT, add_special_tokens=False)
    n_plain = sum(x == whole for x in a)
    assert 0 < n_plain < 20
    assert all(x.count(fim.middle_id) == 1 for x in a if x != whole)



# --- editor-shaped spans (fim.split=line) -----------------------------------------------------

CODE = "def area(r):\n    pi = 3.14\n\n    return pi * r * r\n"
#       0           12 13  17        26 27 28 32                       48


class ScriptedRng:
    """Hands out scripted draws for split_lines and records them: binomial, random, then the
    integers calls in order."""

    def __init__(self, fim: int, u: float, ints: list):
        self._fim, self._u, self._ints = fim, u, iter(ints)
        self.calls: list[tuple] = []

    def binomial(self, n, p):
        self.calls.append(("binomial", n, p))
        return self._fim

    def random(self):
        self.calls.append(("random",))
        return self._u

    def integers(self, low, high, size=None):
        self.calls.append(("integers", low, high, size))
        value = next(self._ints)
        return np.array(value) if size is not None else value


@pytest.mark.parametrize("u, ints, expected, calls", [
    # rest of line: line 1 of the non-blank lines [0, 1, 3] is "    pi = 3.14", text from
    # offset 17 (after the indentation) to 26; the cursor drawn at 22
    (0.30, [1, 22], ("def area(r):\n    pi = ", "3.14", "\n\n    return pi * r * r\n"),
     [("integers", 0, 3, None), ("integers", 17, 26, None)]),
    # cursor right after the indentation: eval's single-line hole
    (0.54, [2, 32], ("def area(r):\n    pi = 3.14\n\n    ", "return pi * r * r",
                     "\n"), [("integers", 0, 3, None), ("integers", 32, 49, None)]),
    # whole lines: 3 lines from line 1, blank line and newlines included
    (0.60, [1, 3], ("def area(r):\n", "    pi = 3.14\n\n    return pi * r * r\n", ""),
     [("integers", 0, 3, None), ("integers", 1, 9, None)]),
    # more lines than the file has left: up to its end
    (0.99, [0, 8], ("", CODE, ""), [("integers", 0, 3, None), ("integers", 1, 9, None)]),
    # inside a line: two points in [0, 12] of "def area(r):" (no indentation), sorted
    (0.01, [0, [9, 4]], ("def ", "area(", "r):\n    pi = 3.14\n\n    return pi * r * r\n"),
     [("integers", 0, 3, None), ("integers", 0, 13, 2)]),
])
def test_split_lines_exact(u, ints, expected, calls):
    from codetune.tokens.fim import split_lines

    rng = ScriptedRng(1, u, ints)
    assert split_lines(CODE, rng, fim_rate=0.4) == expected
    assert rng.calls == [("binomial", 1, 0.4), ("random",), *calls]


def test_split_lines_no_fim_and_blank_text():
    from codetune.tokens.fim import split_lines

    rng = ScriptedRng(0, 0.5, [])
    assert split_lines(CODE, rng) is None and rng.calls == [("binomial", 1, 0.5)]
    assert split_lines("\n  \n\t\n", ScriptedRng(1, 0.5, [])) is None


def test_split_lines_shapes_over_many_draws():
    """Every split reassembles the text; the kinds come in about the documented shares and
    each has its shape: a rest-of-line middle ends at a line end and holds no newline, a
    whole-lines middle starts at a line start and ends after a newline (or the text's end)."""
    from codetune.tokens.fim import split_lines

    text = TEXT if TEXT.strip() else CODE
    rest = lines = 0
    n = 2000
    for seed in range(n):
        parts = split_lines(text, np.random.default_rng(seed), fim_rate=1.0)
        assert parts is not None and "".join(parts) == text
        prefix, middle, suffix = parts
        if "\n" not in middle and (suffix.startswith("\n") or not suffix) and middle:
            rest += 1
        if (not prefix or prefix.endswith("\n")) and (middle.endswith("\n") or not suffix):
            lines += 1
    # rest-of-line 50 % (plus inside-line spans that happen to reach the end), lines 45 %
    assert 0.45 < rest / n < 0.62 and 0.38 < lines / n < 0.52, (rest / n, lines / n)


def test_split_lines_ids_exact(toks):
    """The line split feeds the same assembly as every FIM sample: the pieces, tokenized apart,
    between the family's sentinels."""
    from codetune.tokens.fim import split_lines

    tok = toks["starcoder"]
    fim = detect_fim(tok)
    prefix, middle, suffix = split_lines(CODE, ScriptedRng(1, 0.3, [1, 22]), fim_rate=1.0)
    ids, mask = encode_fim(tok, fim, prefix, middle, suffix, spm=False, middle_loss_only=True)
    enc = [tok.encode(x, add_special_tokens=False) for x in (prefix, middle, suffix)]
    assert ids.tolist() == [fim.prefix_id, *enc[0], fim.suffix_id, *enc[2], fim.middle_id,
                            *enc[1]]
    assert mask.tolist() == [False] * (3 + len(enc[0]) + len(enc[2])) + [True] * len(enc[1])
    assert tok.decode(enc[1]) == "3.14"
