"""Repository context in the FIM layout: exact prompts and samples for each family, the
fallback for families without repo tokens, and the file-level prompt unchanged without it."""

from __future__ import annotations

import numpy as np
import pytest

from codetune.tokens import fim as F
from codetune.tokens.fim import FIM_FORMATS, FimTokens, RepoContext

CTX = RepoContext(repo="acme/shop", path="shop/cart.py",
                  snippets=(("shop/money.py", "def cents(x):\n    return round(x * 100)"),
                            ("shop/items.py", "class Item:\n    price = 0\n")))
PREFIX, SUFFIX = "def total(items):\n    ", "\n    return t\n"


def _text(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=False)


def test_qwen_layout_is_its_repo_level_pretraining_format(toks):
    tok = toks["qwen2.5-coder"]
    fim = F.detect_fim(tok)
    assert _text(tok, F.build_prompt(tok, fim, PREFIX, SUFFIX, repo=CTX)) == (
        "<|repo_name|>acme/shop\n"
        "<|file_sep|>shop/money.py\ndef cents(x):\n    return round(x * 100)\n"
        "<|file_sep|>shop/items.py\nclass Item:\n    price = 0\n"
        "<|file_sep|>shop/cart.py\n"
        "<|fim_prefix|>def total(items):\n    <|fim_suffix|>\n    return t\n<|fim_middle|>")


def test_starcoder2_layout_puts_the_path_inside_the_fim_prefix(toks):
    tok = toks["starcoder"]
    fim = F.detect_fim(tok)
    assert _text(tok, F.build_prompt(tok, fim, PREFIX, SUFFIX, repo=CTX)) == (
        "<repo_name>acme/shop"
        "<file_sep>shop/money.py\ndef cents(x):\n    return round(x * 100)\n"
        "<file_sep>shop/items.py\nclass Item:\n    price = 0\n"
        "<file_sep><fim_prefix>shop/cart.py\ndef total(items):\n    "
        "<fim_suffix>\n    return t\n<fim_middle>")
    # SPM: the path leads the prefix after [M]
    assert _text(tok, F.build_prompt(tok, fim, PREFIX, SUFFIX, spm=True, repo=CTX)).endswith(
        "<file_sep><fim_prefix><fim_suffix>\n    return t\n<fim_middle>shop/cart.py\n"
        "def total(items):\n    ")


@pytest.mark.parametrize("family", ["deepseek-coder", "codellama"])
def test_families_without_repo_tokens_get_path_comments_in_the_prefix(toks, family):
    tok = toks[family]
    fim = F.detect_fim(tok)
    assert fim.file_sep_id is None
    pre, head = F.repo_context_text(fim, CTX)
    assert pre == "" and head == ("# path: shop/money.py\ndef cents(x):\n    return round(x * "
                                  "100)\n# path: shop/items.py\nclass Item:\n    price = 0\n"
                                  "# path: shop/cart.py\n")
    # the same prompt as without context, the comments at the head of the prefix
    plain = _text(tok, F.build_prompt(tok, fim, PREFIX, SUFFIX))
    marker = fim.format.prefix.lstrip("▁") + (" " if fim.format.sentencepiece_spacing else "")
    assert _text(tok, F.build_prompt(tok, fim, PREFIX, SUFFIX, repo=CTX)) == \
        plain.replace(marker, marker + head, 1)
    assert F.line_comment("web/app.ts") == "//" and F.line_comment("db/q.sql") == "--"
    assert F.line_comment("a.py") == "#" and F.line_comment("Makefile") == "#"


@pytest.mark.parametrize("family", ["starcoder", "qwen2.5-coder", "deepseek-coder",
                                    "codellama"])
def test_without_context_the_prompt_is_exactly_the_file_level_one(toks, family):
    tok = toks[family]
    fim = F.detect_fim(tok)
    for spm in (False, True):
        assert F.build_prompt(tok, fim, PREFIX, SUFFIX, spm) == \
            F.build_prompt(tok, fim, PREFIX, SUFFIX, spm, repo=None)
    assert F.encode_repo_context(tok, fim, None) == ([], [])


def test_a_snippet_cannot_forge_a_separator(toks):
    tok = toks["qwen2.5-coder"]
    fim = F.detect_fim(tok)
    evil = RepoContext(repo="r", path="a.py", snippets=(("b.py", "x = '<|file_sep|>'"),))
    pre, _ = F.encode_repo_context(tok, fim, evil)
    assert pre.count(fim.file_sep_id) == 2  # the snippet's and the current file's, not a third


# --- training samples: exact ids and masks on a hand-built token table ------------------------

P, S, M, SEP, REPO = 1, 2, 3, 5, 6
REPO_FIM = FimTokens(format=FIM_FORMATS["qwen2.5-coder"], prefix_id=P, suffix_id=S,
                     middle_id=M, eos_id=0, file_sep_id=SEP, repo_name_id=REPO)


class Rng:
    """Scripted draws: FIM or not, the two split points, SPM or not."""

    def __init__(self, fim: int, bounds: tuple[int, int], spm: int = 0):
        self.draws = [fim, spm]
        self.bounds = bounds

    def binomial(self, n, p):
        return self.draws.pop(0)

    def integers(self, low, high, size):
        return np.array(self.bounds)


def test_psm_and_spm_samples_with_context_exact():
    doc, pre, head = [10, 11, 12, 13, 14, 15], [REPO, 40, SEP, 41, SEP], [42]
    ids, mask = F.permute(doc, Rng(1, (2, 4)), REPO_FIM, preamble=pre, head=head)
    assert ids.tolist() == [REPO, 40, SEP, 41, SEP, P, 42, 10, 11, S, 14, 15, M, 12, 13]
    assert mask.tolist() == [False] * 5 + [True, False] + [True] * 8
    ids, mask = F.permute(doc, Rng(1, (2, 4), spm=1), REPO_FIM, preamble=pre, head=head)
    assert ids.tolist() == [REPO, 40, SEP, 41, SEP, P, S, 14, 15, M, 42, 10, 11, 12, 13]
    assert mask.tolist() == [False] * 5 + [True] * 5 + [False] + [True] * 4
    ids, mask = F.permute(doc, Rng(1, (2, 4)), REPO_FIM, middle_loss_only=True, preamble=pre,
                          head=head)
    assert mask.tolist() == [False] * 13 + [True, True]


def test_a_sample_left_to_right_keeps_its_context_masked():
    doc, pre, head = [10, 11, 12], [REPO, 40, SEP], [42]
    ids, mask = F.permute(doc, Rng(0, (0, 0)), REPO_FIM, preamble=pre, head=head)
    assert ids.tolist() == [REPO, 40, SEP, 42, 10, 11, 12]
    assert mask.tolist() == [False] * 4 + [True] * 3
    # the context does not change the document's random draws
    a = F.permute(doc, np.random.default_rng(3), REPO_FIM, 0.9)
    b = F.permute(doc, np.random.default_rng(3), REPO_FIM, 0.9, preamble=pre, head=head)
    assert P in a[0].tolist()  # (FIM was drawn)
    rest = b[0].tolist()[len(pre):]
    rest.remove(42)  # the head
    assert rest == a[0].tolist()
