"""codetune-mini, the model that ships in the package: it loads offline from the installed
package, speaks the StarCoder FIM format, and compresses held-out stdlib files to under 0.75x the
bits per byte of `lzma -9` compressing each file alone."""

from __future__ import annotations

import json
import lzma
import math
import sysconfig
from importlib import resources
from pathlib import Path

import pytest

from codetune import mini

# A small fixed subset of heldout.json (files the model never trained on), for speed.
N_FILES = 6
MAX_BYTES = 12_000


@pytest.fixture(scope="module")
def loaded():
    from codetune import infer as inference

    return inference.load(str(mini.MINI_PATH))


def test_packaged_with_the_installed_package():
    pkg = Path(str(resources.files("codetune")))
    assert pkg / "assets" / "codetune-mini" == mini.MINI_PATH
    assert mini.mini_available()
    weights = mini.MINI_PATH / "model.safetensors"
    assert weights.stat().st_size <= 40 * 1024 * 1024
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "MODEL_CARD.md", "heldout.json"):
        assert (mini.MINI_PATH / name).is_file(), name
    assert mini.default_model() == str(mini.MINI_PATH)


def test_loads_offline_as_starcoder_architecture(loaded, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = loaded.model.config
    assert cfg.model_type == "gpt_bigcode"
    assert 4_000 <= cfg.vocab_size <= 16_384
    assert loaded.fim is not None and loaded.fim.family == "starcoder"
    tok = loaded.tokenizer
    for special in ("<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>",
                    "<fim_pad>", "<file_sep>", "<repo_name>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special
    gen = json.loads((mini.MINI_PATH / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert {loaded.fim.eos_id, loaded.fim.prefix_id, loaded.fim.middle_id} <= set(eos)


def test_default_model_note_names_the_real_recipe():
    note = mini.default_model_note()
    assert "\n" not in note
    assert "codetune-mini" in note and mini.REAL_RECIPE in note


def test_eval_overrides_fit_the_context():
    from codetune import config

    cfg = config.load(None, mini.mini_eval_overrides()).eval
    n_pos = json.loads((mini.MINI_PATH / "config.json").read_text())["n_positions"]
    assert cfg.prompt_tokens + cfg.max_new_tokens_multi + 4 <= n_pos
    assert 2 * cfg.bpb_window + 1 <= n_pos  # FIM scoring keeps up to 2 x window tokens
    assert mini.mini_eval_overrides(cfg) == []
    data = config.load(None, mini.mini_train_overrides()).data
    assert data.seq_length <= n_pos and mini.mini_train_overrides(data) == []


def test_heldout_record():
    info = mini.heldout_info()
    assert len(info["file_list_sha256"]) == 64
    assert info["python_version"].count(".") == 2
    assert len(info["heldout"]) >= 20
    assert all(p.endswith(".py") and not p.startswith("test/") for p in info["heldout"])


def _heldout_texts() -> list[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for rel in mini.heldout_info()["heldout"]:
        p = root / rel
        if p.is_file() and p.stat().st_size <= MAX_BYTES:
            out.append((rel, p.read_text(encoding="utf-8")))
        if len(out) == N_FILES:
            break
    return out


def test_bits_per_byte_under_three_quarters_of_per_file_lzma(loaded):
    """Measured the way `codetune eval` measures it (`ltr_nll`: EOS-started windows)."""
    from codetune.evaluation.bpb import ltr_nll

    files = _heldout_texts()
    assert len(files) == N_FILES, "the held-out stdlib files are missing from this Python"
    model_bits = lzma_bits = nbytes = 0.0
    for _, text in files:
        data = text.encode("utf-8")
        model_bits += ltr_nll(loaded, text, window=1023) / math.log(2)
        lzma_bits += 8 * len(lzma.compress(data, preset=9))
        nbytes += len(data)
    bpb, lz = model_bits / nbytes, lzma_bits / nbytes
    # The quality target, 0.75x lzma, on this subset too (the packaged model: ~0.60x
    # here, 0.68x on all 40 held-out files; the 2.4 M-token build of before was ~0.85x).
    assert bpb < 0.75 * lz, f"codetune-mini {bpb:.3f} bpb vs lzma -9 {lz:.3f} on {len(files)} files"
