"""Unit checks of the pieces prepare is built from: languages, notebooks, line statistics,
MinHash near-duplicates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codetune.config import PrepareConfig
from codetune.data.dedup import NearDupIndex, minhash_signature, shingle_hashes
from codetune.data.filters import FileFilter, alphanum_fraction
from codetune.data.languages import LanguageTable
from codetune.data.notebooks import NotebookError, notebook_to_source
from codetune.data.sources import Candidate


def test_language_table_and_user_extensions():
    t = LanguageTable({".mojo": "Mojo", "Tiltfile": "Starlark"})
    assert t.classify("a/b/x.py") == ("Python", None, "")
    assert t.classify("Dockerfile") == ("Dockerfile", None, "")
    assert t.classify("pkg/kernel.mojo") == ("Mojo", None, "")
    assert t.classify("Tiltfile") == ("Starlark", None, "")
    assert t.classify("img/a.PNG") == (None, "non_code", "image")
    assert t.classify("w/model.safetensors") == (None, "non_code", "model_weights")
    assert t.classify("notes.xyz") == (None, "unknown_language", ".xyz")


def test_notebook_code_only_and_markdown_as_comments():
    nb = {"cells": [{"cell_type": "markdown", "source": "# Title\nText"},
                    {"cell_type": "code", "source": ["x = 1\n", "y = 2"]},
                    {"cell_type": "raw", "source": "ignored"},
                    {"cell_type": "code", "source": "   "}],
          "metadata": {"language_info": {"name": "python"}}}
    src, lang = notebook_to_source(json.dumps(nb))
    assert src == "x = 1\ny = 2\n" and lang == "Python"
    src, _ = notebook_to_source(json.dumps(nb), keep_markdown=True)
    assert src == "# # Title\n# Text\n\n\nx = 1\ny = 2\n"


@pytest.mark.parametrize("text, match", [
    ("{", "not valid JSON"),
    ("[1, 2]", "no 'cells' list"),
    ('{"cells": [3]}', "cell 0 is not an object"),
    ('{"cells": [{"cell_type": "code", "source": [1, 2]}]}', "non-text source"),
])
def test_malformed_notebooks_raise_with_reason(text, match):
    with pytest.raises(NotebookError, match=match):
        notebook_to_source(text)


def test_alphanum_fraction_matches_isalnum():
    for text in ["abc 123 !!", "#### ----", "Größe = 3 # ü", "x" * 10]:
        assert alphanum_fraction(text) == pytest.approx(sum(c.isalnum() for c in text) / len(text))


def test_content_row_filters_without_a_path():
    f = FileFilter(PrepareConfig(secrets="off"))
    ok = f.process(Candidate("r", "row-1", content="def f():\n    return 1\n", has_path=False))
    assert ok.reason is None and ok.language == "Unknown"
    assert f.process(Candidate("r", "x.py", content="a" * 2_000_000)).reason == "too_large"
    assert f.process(Candidate("r", "x.py", content="x\0y")).reason == "binary"


def _jaccard(a: str, b: str) -> float:
    sa, sb = set(shingle_hashes(a, 5).tolist()), set(shingle_hashes(b, 5).tolist())
    return len(sa & sb) / len(sa | sb)


def test_minhash_estimates_jaccard():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in rng.integers(0, 5000, size=600)]
    a = " ".join(words)
    for k in (30, 120, 300):
        b = " ".join(words[:-k] + [f"z{i}" for i in range(k)])
        est = float(np.mean(minhash_signature(a) == minhash_signature(b)))
        assert est == pytest.approx(_jaccard(a, b), abs=0.12)


def test_near_dup_index_confirms_with_threshold():
    idx = NearDupIndex(threshold=0.7)
    base = " ".join(f"token{i}" for i in range(400))
    idx.insert(1, minhash_signature(base))
    near = base.replace("token200", "changed")
    far = " ".join(f"other{i}" for i in range(400))
    assert [k for k, _ in idx.query(minhash_signature(near))] == [1]
    assert idx.query(minhash_signature(far)) == []
    idx.remove(1)
    assert idx.query(minhash_signature(near)) == []
    assert minhash_signature("+++ ---") is None
