"""`codetune stats`: sizes per split and language, and token estimates from a real tokenizer."""

from __future__ import annotations

import pytest

from codetune.cli import main
from codetune.data.prepare import prepare
from codetune.data.stats import dataset_stats
from codetune.errors import CodetuneError
from codetune.model.load import load_tokenizer

from .conftest import prep_cfg
from .tiny import CORPUS, build_tokenizer


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    repo = root / "repo"
    repo.mkdir()
    for i, text in enumerate(CORPUS):
        ext = "js" if "function" in text else "py"
        (repo / f"f{i}.{ext}").write_text(text + f"# file {i}\n" * (i + 1))
    prepare([str(repo)], root / "ds", prep_cfg(valid_fraction=0.3, seed=1), progress=False)
    return root / "ds"


def test_counts_per_split_and_language(small_dataset):
    st = dataset_stats(small_dataset)
    assert st["files"] == len(CORPUS)
    assert st["splits"]["train"]["files"] + st["splits"]["validation"]["files"] == len(CORPUS)
    assert st["languages"]["JavaScript"]["files"] == 1
    assert st["languages"]["Python"]["files"] == len(CORPUS) - 1
    assert st["bytes"] == sum(d["bytes"] for d in st["languages"].values())


def test_token_ratio_measured_with_a_tokenizer(small_dataset, tmp_path):
    tok = load_tokenizer(str(build_tokenizer(tmp_path / "tok")))
    st = dataset_stats(small_dataset, tok, sample=3, seed=0)
    t = st["tokenizer"]
    assert t["sampled_files"] == 3
    # Recompute by hand on the whole dataset: the sample ratio must be in the same range.
    import datasets

    ds = datasets.load_dataset(str(small_dataset))
    texts = [r for s in ds for r in ds[s]["content"]]
    ratio = sum(map(len, texts)) / sum(len(tok(x, add_special_tokens=False)["input_ids"])
                                       for x in texts)
    assert 1.0 < t["chars_per_token"] < 10 and abs(t["chars_per_token"] - ratio) < 1.0
    for s in st["splits"].values():
        assert s["estimated_tokens"] == round(s["bytes"] / t["bytes_per_token"])


def test_missing_tokenizer_names_the_remedy(tmp_path, small_dataset, capsys):
    with pytest.raises(CodetuneError, match="does not exist; check the path"):
        load_tokenizer(str(tmp_path / "nope"))
    assert main(["stats", str(small_dataset), "--tokenizer", str(tmp_path / "nope")]) == 2
    assert "give a Hub id" in capsys.readouterr().err
