"""Repository context: chunks, tokens, BM25, import-aware selection, packing, the index built
by prepare (train split only) and by `codetune index` (incremental)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from codetune.cli import main
from codetune.context import RepoIndex, Snippet, build_index, index_dataset, index_tree, pack
from codetune.context import bm25 as bm25_mod
from codetune.context import build as build_mod
from codetune.context.chunks import (
    Chunk,
    chunk_lines,
    identifier_tokens,
    python_definitions,
    tokenize,
)
from codetune.context.imports import Imported, parse_imports
from codetune.data import store
from codetune.data.prepare import prepare, split_of
from codetune.errors import CodetuneError

from .conftest import prep_cfg

REPO = {
    "shop/__init__.py": "from .money import Money\n",
    "shop/money.py": (
        '"""Amounts of money."""\n\n\nclass Money:\n    def __init__(self, cents):\n'
        "        self.cents = cents\n\n    def add(self, other):\n"
        "        return Money(self.cents + other.cents)\n\n\nZERO = Money(0)\n"),
    "shop/tax.py": (
        'def vat_rate(country):\n    rates = {"de": 19, "fr": 20, "nl": 21}\n'
        "    return rates[country]\n\n\ndef apply_vat(amount, country):\n"
        "    return amount * (100 + vat_rate(country)) // 100\n"),
    "shop/http_client.py": (
        "import socket\n\n\ndef open_connection(host, port, timeout):\n"
        "    sock = socket.create_connection((host, port), timeout)\n    return sock\n"),
    "shop/cart.py": (
        "from shop import Money\nfrom shop.tax import apply_vat\nimport shop.http_client as net\n"
        "\n\ndef total(items, country):\n    subtotal = sum(item.price for item in items)\n"
        "    return apply_vat(subtotal, country)\n\n\ndef fetch_prices(host):\n"
        "    conn = net.open_connection(host, 443, 5)\n    return conn\n"),
    "README.md": "# shop\n\nA small shop: carts, money and VAT rates per country.\n",
}


def _chunk_text(index_dir: Path) -> str:
    """Every chunk's text of an index on disk (the parquet file itself is compressed)."""
    return "\n".join(pq.read_table(index_dir / "chunks.parquet").column("text").to_pylist())


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> RepoIndex:
    out = tmp_path_factory.mktemp("shop") / "idx"
    return build_index([("acme/shop", p, t) for p, t in REPO.items()], out)


# --------------------------------------------------------------------------- chunks, tokens


def _fn(name: str, n: int) -> str:
    return f"def {name}(x):\n" + "".join(f"    x = x + {i}\n" for i in range(n)) + \
        "    return x\n"


def test_chunks_cut_before_definitions_and_skip_blank_edges():
    text = ("import os\n\n\n" + _fn("alpha", 10) + "\n\n@cache\n" + _fn("beta", 3) +
            "\n\nclass Gamma:\n    size = 1\n" +
            "\n".join(f"    v{i} = {i}" for i in range(25)) + "\n")
    chunks = chunk_lines(text)
    # 1-15: import + alpha (cut before the decorator, not between it and `def beta`);
    # 18-23: beta (blank lines 16-17 and 24-25 belong to no chunk); 26-40: the class up to
    # its 15th line (no better cut in lines 8..20 of the chunk); 41-52: the rest.
    assert [(c.start_line, c.end_line) for c in chunks] == [(1, 15), (18, 23), (26, 40),
                                                           (41, 52)]
    lines = text.split("\n")
    for c in chunks:
        assert c.text == "\n".join(lines[c.start_line - 1:c.end_line])
    assert chunks[1].text.startswith("@cache\ndef beta(x):")
    assert python_definitions(chunks) == {"alpha": 0, "beta": 1, "Gamma": 2}
    assert chunk_lines("") == [] and chunk_lines("\n\n  \n") == []
    assert chunk_lines("x = 1") == [Chunk(1, 1, "x = 1")]


def test_long_lines_end_a_chunk_sooner():
    text = "\n".join("y" * 900 for _ in range(10))
    assert [(c.start_line, c.end_line) for c in chunk_lines(text)] == [
        (1, 3), (4, 6), (7, 9), (10, 10)]


def test_identifier_tokens_exact():
    assert identifier_tokens("parseHTTPHeader") == ("parsehttpheader", "parse", "http", "header")
    assert identifier_tokens("max_retries") == ("max_retries", "max", "retries")
    assert identifier_tokens("Value") == ("value",)
    assert identifier_tokens("__init__") == ("__init__", "init")
    assert identifier_tokens("self") == () and identifier_tokens("x") == ()
    assert identifier_tokens("getX2Value") == ("getx2value", "get", "value")
    assert identifier_tokens("prix_café") == ("prix_café", "prix", "café")
    assert tokenize("self.max_retries = getUrl(the_url, 3)  # retry it") == [
        "max_retries", "max", "retries", "geturl", "get", "url", "the_url", "url", "retry"]


def test_python_definitions_top_level_only():
    text = ("X: int = 1\nY = 2\nif Y == 2:\n    Z = 3\nelse: W = 4\n\n"
            "async def fetch():\n    inner = 1\n\n\nclass Box(Base):\n    pass\n")
    assert python_definitions(chunk_lines(text)) == {"X": 0, "Y": 0, "fetch": 0, "Box": 0}


def test_parse_imports_forms():
    text = ("import os, shop.http_client as net\nfrom shop.tax import (apply_vat,  # vat\n"
            "    vat_rate as rate)\nfrom . import money\nfrom ..util import *\n"
            "def f():\n    from .money import Money\n")
    got = [(i.module, i.name, i.local) for i in parse_imports(text, "shop/cart/views.py")]
    assert got == [("os", None, "os"), ("shop.http_client", None, "net"),
                   ("shop.tax", "apply_vat", "apply_vat"), ("shop.tax", "vat_rate", "rate"),
                   ("shop.cart", "money", "money"), ("shop.cart.money", "Money", "Money")]
    assert isinstance(parse_imports(text, "a.py")[0], Imported)


# --------------------------------------------------------------------------- BM25


def test_bm25_matrix_equals_the_one_bm25s_builds():
    import bm25s

    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 40, size=int(rng.integers(0, 30))).tolist() for _ in range(200)]
    vocab = [f"t{i:02d}" for i in range(40)]
    ref = bm25s.BM25()
    ref.index((docs, {t: i for i, t in enumerate(vocab)}), create_empty_token=False,
              show_progress=False)
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(d) for d in docs])
    ours = bm25_mod.build(np.array([t for d in docs for t in d], dtype=np.int32), offsets, vocab)
    for key in ("data", "indices", "indptr"):
        assert np.array_equal(ours.scores[key], ref.scores[key]), key
        assert ours.scores[key].dtype == ref.scores[key].dtype, key
    assert ours.scores["num_docs"] == ref.scores["num_docs"]
    assert ours.vocab_dict == ref.vocab_dict


def test_bm25_ranks_the_relevant_chunk_first(shop):
    hits = shop.retrieve("# look up the vat rates of a country", path="notes.txt")
    assert hits[0].path == "shop/tax.py" and hits[0].reason == "bm25"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    hits = shop.retrieve("sock = open the socket connection to host and port", path="x.txt")
    assert hits[0].path == "shop/http_client.py"
    assert shop.retrieve("no known word here qqq", path="x.txt") == []


def test_imported_definitions_rank_first(shop):
    prefix = ("from shop.tax import apply_vat\nfrom shop import Money\n\n\n"
              "def checkout(cart, country):\n    price = Money(cart.cents)\n"
              "    # the vat rates of the country\n    return ")
    hits = shop.retrieve(prefix, "\n", path="shop/checkout.py")
    # apply_vat is imported and used nowhere yet: the code at the cursor is where it will be,
    # so it comes first; then Money, used in the window. `from shop import Money` is followed
    # through the re-export in shop/__init__.py to its definition.
    assert [(h.path, h.reason) for h in hits[:2]] == [("shop/tax.py", "import"),
                                                      ("shop/money.py", "import")]
    assert all(h.reason == "bm25" for h in hits[2:])
    assert "shop/tax.py" not in [h.path for h in hits[2:]]  # never the same chunk twice
    # `import pkg.mod as m` then `m.name`: the definition of name.
    hits = shop.retrieve("import shop.http_client as net\n\nconn = net.open_connection(",
                         path="shop/sync.py")
    assert (hits[0].path, hits[0].reason) == ("shop/http_client.py", "import")
    # an imported definition comes as its stub: how to call it, not its body
    assert hits[0].text == "def open_connection(host, port, timeout):\n    ..."


def test_stub_view_keeps_headers_docstrings_and_assignments():
    from codetune.context.chunks import stub_view

    src = ('''RATE: float = 0.2\n\n\n@dataclass(frozen=True)\nclass Money:\n'''
           '''    """Cents of one currency.\n\n    More words.\n    """\n\n    cents: int\n\n'''
           '''    def add(self, other: "Money",\n            *, rounding: str = "half") -> "Money":\n'''
           '''        r\'\'\'Sum of two amounts.\'\'\'\n        return Money(self.cents + other.cents)\n\n'''
           '''def one(x): return x  # a one-liner stays whole\n''')
    assert stub_view(src) == (
        '''RATE: float = 0.2\n@dataclass(frozen=True)\nclass Money:\n'''
        '''    """Cents of one currency."""\n'''  # the docstring's first line, closed
        '''    def add(self, other: "Money",\n            *, rounding: str = "half") -> "Money":\n'''
        '''        r\'\'\'Sum of two amounts.\'\'\'\n        ...\n'''
        '''def one(x): return x  # a one-liner stays whole\n''')
    body = "    total = 0\n    for x in xs:\n        total += x\n"
    assert stub_view(body) == body  # nothing to show as a stub: the chunk as it is


def test_retrieve_never_returns_the_file_being_completed(shop, tmp_path):
    for path, text in REPO.items():
        cut = len(text) // 2
        for h in shop.retrieve(text[:cut], text[cut:], path=path, repo_id="acme/shop"):
            assert h.path != path
    # The same through a working-tree index, given an absolute path or ./relative one.
    root = _write(tmp_path / "shop", REPO)
    idx = index_tree(root, tmp_path / "idx")
    text = REPO["shop/tax.py"]
    for path in (str(root / "shop" / "tax.py"), "./shop/tax.py"):
        hits = idx.retrieve(text, path=path)
        assert hits and all(h.path != "shop/tax.py" for h in hits)
    assert shop.retrieve("vat", path="shop/tax.py", repo_id="someone/else") == []


# --------------------------------------------------------------------------- pack


def _snip(path: str, a: int, b: int, text: str, reason: str = "bm25") -> Snippet:
    return Snippet("r", path, a, b, text, 1.0, reason)  # type: ignore[arg-type]


def test_pack_exact():
    s = [
        _snip("a.py", 1, 10, "one two three", "import"),  # 3 words
        _snip("a.py", 5, 12, "overlaps the first"),  # same file, lines 5-12: skipped
        _snip("b.py", 1, 4, "a b c d e f g h"),  # 8: does not fit after the first
        _snip("c.py", 1, 3, "one two three"),  # same text as the first: skipped
        _snip("a.py", 11, 20, "four five"),  # 2: fits
        _snip("d.py", 1, 2, "six"),  # 1: fits, budget now spent
        _snip("e.py", 1, 2, "seven"),
    ]
    counted = []

    def count(text: str) -> int:
        counted.append(text)
        return len(text.split())

    assert pack(s, 6, count) == [s[0], s[4], s[5]]
    assert counted == ["one two three", "a b c d e f g h", "four five", "six"]
    # With 1 token of header each: 4 taken, then "four five" costs 3 > 2 left, "six" costs 2.
    assert pack(s, 6, count, per_snippet=1) == [s[0], s[5]]
    assert pack(s, 100, count) == [s[0], s[2], s[4], s[5], s[6]]
    assert pack(s, 2, count) == [s[4]]
    assert pack([], 10, count) == [] and pack(s, 0, count) == []



def test_repo_context_drops_the_least_relevant_until_the_prompt_fits():
    """The one fitting of snippets to a budget and a prompt limit (training, eval, serve)."""
    from codetune.context import repo_context
    from codetune.context.layout import PER_SNIPPET
    from codetune.tokens.fim import RepoContext

    s = [_snip(f"{c}.py", 1, 2, " ".join([c] * n)) for c, n in zip("abcdef", (5, 3, 4, 2, 6, 1),
                                                                    strict=True)]

    def count(text: str) -> int:
        return len(text.split())

    def size(ctx):  # a prompt: 10 tokens of file, 2 of header, each snippet its text + 1
        return 12 + sum(count(t) + 1 for _, t in ctx.snippets)

    tried = []

    def under(limit):
        def fits(ctx):
            tried.append(len(ctx.snippets))
            return size(ctx) <= limit
        return fits

    budget = 4 * (PER_SNIPPET + 6)  # a, b, c, d fit; e (6 words) no longer does; f does
    ctx, chosen = repo_context(s, budget, count, "r", "x.py")
    assert chosen == [s[0], s[1], s[2], s[3], s[5]]
    assert ctx == RepoContext("r", "x.py", tuple((x.path, x.text) for x in reversed(chosen)))
    assert repo_context(s, budget, count, "r", "x.py", under(10_000)) == (ctx, chosen)
    # 12 + (6 + 4 + 5) = 27: a, b, c fit; d (3 more) does not. The best stay, the best last.
    for limit in (27, 29):
        tried.clear()
        small, kept = repo_context(s, budget, count, "r", "x.py", under(limit))
        assert kept == [s[0], s[1], s[2]] and small.snippets == (("c.py", s[2].text),
                                                                  ("b.py", s[1].text),
                                                                  ("a.py", s[0].text))
        assert len(tried) <= 5  # bisection, not one prompt a snippet
    assert repo_context(s, budget, count, "r", "x.py", under(12)) == (
        RepoContext("r", "x.py", ()), [])  # the header alone
    assert repo_context(s, budget, count, "r", "x.py", under(11)) == (None, [])  # nothing fits
    assert repo_context([], budget, count, "r", "x.py", under(11)) == (None, [])
    assert repo_context(s, 0, count, "r", "x.py") == (RepoContext("r", "x.py", ()), [])

# --------------------------------------------------------------------------- prepare


def _modules(n: int) -> dict[str, str]:
    files = {}
    for i in range(n):
        files[f"app/mod_{i}.py"] = (
            f"from app.mod_{(i + 1) % n} import helper_{(i + 1) % n}\n\n\n"
            f"def helper_{i}(value):\n    total = value * {i + 2}\n"
            f"    return helper_{(i + 1) % n}(total) + {i}\n\n\n"
            f"class Record{i}:\n    field_{i} = {i}\n")
    return files


def test_prepare_indexes_the_train_split_only(tmp_path):
    cfg = prep_cfg(valid_fraction=0.3, dedup_near=False)
    files = _modules(12)
    held = [p for p in files if split_of("repo", p, cfg)[0] == "validation"]
    assert held and len(held) < len(files)
    canary = "zqxheldoutcanary"
    for p in held:
        files[p] += f"\n\ndef {canary}_fn():\n    return '{canary.upper()}'\n"
    _write(tmp_path / "repo", files)
    out = tmp_path / "ds"
    summary = prepare([str(tmp_path / "repo")], out, cfg, progress=False,
                      context_index=index_dataset)
    assert summary.kept["validation"] == len(held)

    man = store.load_manifest(out)
    assert man["context"]["path"] == "context" and man["context"]["split"] == "train"
    assert man["context"]["files"] == summary.kept["train"]
    ctx = out / "context"
    for p in ctx.rglob("*"):  # every stored byte, and every parquet value decompressed
        if p.is_file():
            assert canary not in p.read_bytes().decode("utf-8", "replace").lower(), p
            if p.suffix == ".parquet":
                assert canary not in json.dumps(pq.read_table(p).to_pylist()).lower(), p
    idx = RepoIndex.for_dataset(out)
    assert idx is not None and idx.info["source"] == {"kind": "dataset", "split": "train"}
    assert {p for _, p, _ in idx.files()} == set(files) - set(held)
    for p in files:
        for s in idx.neighbours("repo", p):
            assert s.path not in held and s.path != p and canary not in s.text.lower()
    for p in held:
        assert idx.neighbours("repo", p) == []
        assert all(h.path not in held for h in idx.retrieve(files[p], path=p))
    # A train file's neighbours: first the definition it imports, then BM25 hits.
    train = sorted(set(files) - set(held))
    for p in train:
        i = int(p.split("_")[1].split(".")[0])
        target = f"app/mod_{(i + 1) % 12}.py"
        nb = idx.neighbours("repo", p)
        if target not in held:
            assert (nb[0].path, nb[0].reason) == (target, "import")
        assert nb and all(s.reason == "bm25" for s in nb[1:])
    # Nor in any repo-mode training sample, or any eval task's context.
    from transformers import AutoTokenizer

    from codetune import config
    from codetune.evaluation.context import task_contexts
    from codetune.evaluation.tasks import make_tasks
    from codetune.tokens.stream import make_stream
    from codetune.train.trainer import context_providers

    from .tiny import build_tokenizer

    tok = AutoTokenizer.from_pretrained(str(build_tokenizer(tmp_path / "tok")))
    run = config.load(None, [f"data.dataset={out}", "data.context=repo", "data.seq_length=256",
                             "data.context_tokens=96", "fim.rate=0.5"])
    stream = make_stream(run, tok, "train", context=context_providers(run, tok)[0])
    it = iter(stream)
    sample_text = "".join(tok.decode(list(next(it)["input_ids"])) for _ in range(60))
    assert "<file_sep>" in sample_text and canary not in sample_text.lower()
    tasks = [t for p in held for t in make_tasks("repo", p, files[p], 0, 4, 2, 8)]
    assert tasks
    for ctx, paths in task_contexts(idx, SimpleNamespace(tokenizer=tok), tasks, 200, 512):
        assert not set(paths) & set(held)
        assert all(canary not in text.lower() for _, text in ctx.snippets)
    # The dataset still loads as train + validation only.
    import datasets

    assert set(datasets.load_dataset(str(out))) == {"train", "validation"}


def test_older_dataset_has_no_index(tmp_path):
    _write(tmp_path / "repo", _modules(3))
    prepare([str(tmp_path / "repo")], tmp_path / "ds", prep_cfg(), progress=False)
    assert "context" not in store.load_manifest(tmp_path / "ds")
    assert RepoIndex.for_dataset(tmp_path / "ds") is None
    prepare([str(tmp_path / "repo")], tmp_path / "ds2", prep_cfg(context_index=False),
            progress=False, context_index=index_dataset)
    assert RepoIndex.for_dataset(tmp_path / "ds2") is None


# --------------------------------------------------------------------------- incremental


def _same_index(a: RepoIndex, b: RepoIndex) -> None:
    for name in ("files.parquet", "chunks.parquet", "defs.parquet", "neighbours.parquet"):
        assert pq.read_table(a.path / name).equals(pq.read_table(b.path / name)), name
    bm_a = sorted(p.relative_to(a.path) for p in (a.path / "bm25").rglob("*"))
    assert bm_a == sorted(p.relative_to(b.path) for p in (b.path / "bm25").rglob("*"))
    for rel in bm_a:
        if (a.path / rel).is_file():
            assert (a.path / rel).read_bytes() == (b.path / rel).read_bytes(), rel


def test_update_equals_a_fresh_build_and_rechunks_only_what_changed(tmp_path, monkeypatch):
    root = _write(tmp_path / "tree", {**REPO, **_modules(6)})
    idx = index_tree(root, tmp_path / "idx", neighbours=True)
    assert idx.last_build.chunked == len(REPO) + 6
    before = (tmp_path / "idx" / "index.json").stat().st_mtime_ns

    assert idx.refresh().changed is False  # nothing changed: nothing chunked or written
    assert (tmp_path / "idx" / "index.json").stat().st_mtime_ns == before

    (root / "shop" / "tax.py").write_text(REPO["shop/tax.py"].replace("19", "16"))
    (root / "app" / "mod_3.py").unlink()
    _write(root, {"shop/shipping.py": "def shipping_cost(weight, country):\n"
                                      "    return weight * 2 if country == 'de' else 9\n"})
    calls = []
    real = build_mod.chunk_lines
    monkeypatch.setattr(build_mod, "chunk_lines", lambda text: calls.append(text) or real(text))
    stats = idx.update()
    assert (stats.chunked, stats.removed, stats.reused) == (2, 1, len(REPO) + 4)
    assert sorted(calls) == sorted([(root / "shop" / "tax.py").read_text(),
                                    (root / "shop" / "shipping.py").read_text()])
    monkeypatch.undo()

    fresh = index_tree(root, tmp_path / "fresh", neighbours=True)
    _same_index(RepoIndex.open(tmp_path / "idx"), fresh)
    _same_index(idx, fresh)
    for q, path in [("vat rates of the country", "x.py"), ("shipping cost weight", "y.py"),
                    ("from shop.tax import apply_vat\napply_vat(", "shop/z.py")]:
        assert idx.retrieve(q, path=path) == fresh.retrieve(q, path=path)
        assert idx.retrieve(q, path=path)
    assert idx.neighbours("tree", "app/mod_2.py") == fresh.neighbours("tree", "app/mod_2.py")
    assert "16" in idx.retrieve("vat_rate rates", path="q.txt")[0].text


# --------------------------------------------------------------------------- CLI, errors


def test_index_command_then_prepare_skips_the_index(tmp_path, capsys):
    root = _write(tmp_path / "tree", REPO)
    assert main(["index", str(root)]) == 0
    out = root / ".codetune" / "index"
    assert "6 files" in capsys.readouterr().out
    assert (root / ".codetune" / ".gitignore").read_text().endswith("*\n")
    assert RepoIndex.open(out).root == root
    (root / "shop" / "tax.py").write_text("def vat_rate(country):\n    return 0\n")
    assert main(["index", str(root)]) == 0
    assert "chunked 1, reused 5, removed 0" in capsys.readouterr().out
    assert main(["index", str(root)]) == 0
    assert "nothing changed" in capsys.readouterr().out
    with open(out / "chunks.parquet", "r+b") as fh:  # damaged: rebuilt, it is derived data
        fh.truncate(50)
    assert main(["index", str(root)]) == 0
    assert "rebuilding it from scratch" in capsys.readouterr().err
    assert len(RepoIndex.open(out)) > 0

    assert main(["prepare", str(root), "-o", str(tmp_path / "ds"), "--workers", "1",
                 "-q"]) == 0
    rows = [r for s in store.SPLITS for p in store.shard_paths(tmp_path / "ds", s)
            for r in pq.read_table(p).to_pylist()]
    assert {r["path"] for r in rows} == set(REPO)  # nothing of .codetune/ was read
    assert RepoIndex.for_dataset(tmp_path / "ds") is not None
    # Without its .gitignore the index folder is still recognised as codetune's own.
    (root / ".codetune" / ".gitignore").unlink()
    assert main(["prepare", str(root), "-o", str(tmp_path / "ds2"), "--workers", "1",
                 "-q"]) == 0
    dropped = (tmp_path / "ds2" / "dropped.jsonl").read_text()
    assert '".codetune/index/", "reason": "codetune_output"' in dropped
    # An index of another tree is not replaced without --overwrite.
    other = _write(tmp_path / "other", {"a.py": "x = 1\n"})
    assert main(["index", str(other), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_missing_or_damaged_index_names_the_fix(tmp_path, shop):
    with pytest.raises(CodetuneError, match="codetune index"):
        RepoIndex.open(tmp_path / "nowhere")
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shop.path, copy)
    with open(copy / "chunks.parquet", "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(CodetuneError, match="damaged.*codetune index"):
        RepoIndex.open(copy)
    _write(tmp_path / "repo", _modules(3))
    prepare([str(tmp_path / "repo")], tmp_path / "ds", prep_cfg(), progress=False,
            context_index=index_dataset)
    (tmp_path / "ds" / "context" / "files.parquet").write_bytes(b"garbage")
    with pytest.raises(CodetuneError, match="damaged.*codetune prepare"):
        RepoIndex.for_dataset(tmp_path / "ds")
    with pytest.raises(CodetuneError, match="without neighbours"):
        index_tree(_write(tmp_path / "t", REPO), tmp_path / "i").neighbours("t", "shop/tax.py")


def test_index_pickles_for_dataloader_workers(shop):
    copy = pickle.loads(pickle.dumps(shop))
    q = "from shop.tax import apply_vat\nprice = apply_vat("
    assert copy.retrieve(q, path="shop/a.py") == shop.retrieve(q, path="shop/a.py")
    assert len(pickle.dumps(shop)) < 1000  # reopened from its path, not copied


def test_empty_input_gives_an_empty_index(tmp_path):
    idx = build_index([], tmp_path / "idx")
    assert len(idx) == 0 and idx.repos == []
    assert idx.retrieve("anything", path="a.py") == []


def test_an_index_built_under_older_secret_rules_is_rebuilt_not_updated(tmp_path):
    """Chunks reused by hash keep whatever the rules of their day missed: after the rules
    change, `update` chunks everything again, so a value they now catch leaves the index."""
    import random
    import string

    rng = random.Random(17)
    value = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(14))
    root = _write(tmp_path / "tree", {**REPO, "deploy/settings.py":
                                      f'DB_HOST = "db"\nDB_PASSWORD = "{value}"\n'})
    index_tree(root, tmp_path / "idx")
    info = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert info["secret_rules"] >= 2
    assert value not in _chunk_text(tmp_path / "idx")
    # an index from before: rules 1, and the value left in its chunks as those rules did
    info["secret_rules"] = 1
    (tmp_path / "idx" / "index.json").write_text(json.dumps(info))
    stats = RepoIndex.open(tmp_path / "idx").update()
    assert stats.reused == 0 and stats.chunked == len(REPO) + 1
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["secret_rules"] >= 2


def test_only_code_lines_count_as_cross_file_holes():
    """CrossCodeEval's selection: a line of code in a code file. Docs, data files, import and
    re-export lines and comments never count, whatever names they spell; names and paths
    are generated so no fixed example carries the rule."""
    from codetune.evaluation.context import code_hole
    from codetune.evaluation.tasks import Task

    rng = np.random.default_rng(7)
    for _ in range(20):
        name = "".join(rng.choice(list("abcdefghijklmnop"), 8)) + "_x"
        mod = "".join(rng.choice(list("qrstuvwxyz"), 6))

        def task(path, middle):
            return Task("t", "single_line", "r", path, "pre\n", middle, "\nsuf")

        assert code_hole(task(f"{mod}/core.py", f"    result = {name}(value)\n"))
        assert code_hole(task(f"src/{mod}.ts", f"  const v = {name}.run();\n"))
        for path in (f"docs/{mod}.md", f"{mod}.rst", f"conf/{mod}.json", f"{mod}.yaml"):
            assert not code_hole(task(path, f"Call `{name}(value)` to start.\n"))
        assert not code_hole(task(f"{mod}/__init__.py", f"from .{mod} import {name}\n"))
        assert not code_hole(task(f"{mod}/a.py", f"import {mod}.{name} as x\n"))
        assert not code_hole(task(f"{mod}/a.py", f"    # see {name} for details\n"))
        assert not code_hole(task(f"{mod}/a.py", "   \n"))
        # a path in a language the user added to prepare.languages is code
        assert code_hole(task(f"{mod}/job.{mod[:3]}x", f"run {name}\n"))


def test_window_neighbours_rank_for_each_window(tmp_path):
    """A long file that imports two definitions and uses one in each half: each half's ranking
    puts the definition it spells first; both come from the file's precomputed neighbours
    only. Names are generated, so no fixed example carries the rule."""
    rng = np.random.default_rng(11)
    a, b = ("".join(rng.choice(list("abcdefghij"), 7)) + s for s in ("_one", "_two"))
    files = {"pkg/defs_a.py": f"def {a}(x):\n    return x + 1\n",
             "pkg/defs_b.py": f"def {b}(y):\n    return y * 2\n",
             "pkg/long.py": (f"from pkg.defs_a import {a}\nfrom pkg.defs_b import {b}\n\n\n"
                             + "".join(f"def first_{i}(v):\n    return {a}(v) + {i}\n\n\n"
                                       for i in range(30))
                             + "".join(f"def second_{i}(w):\n    return {b}(w) - {i}\n\n\n"
                                       for i in range(30)))}
    idx = index_tree(_write(tmp_path / "tree", files), tmp_path / "idx", neighbours=True)
    repo = idx.chunk(0).repo_id  # one repository: the tree's
    text = files["pkg/long.py"]
    half = text.index("def second_0")
    pool = {(s.path, s.text) for s in idx.neighbours(repo, "pkg/long.py")}
    for window, want in ((text[:half], "pkg/defs_a.py"), (text[half:], "pkg/defs_b.py")):
        ranked = idx.window_neighbours(repo, "pkg/long.py", window)
        assert ranked[0].path == want
        assert {(s.path, s.text) for s in ranked} == pool  # the same snippets, reordered
    assert idx.window_neighbours(repo, "pkg/missing.py", "anything") == []


def test_retrieval_ranks_the_imports_the_cursor_is_about_to_use_first(tmp_path):
    """At a cursor, the imported definitions first that nothing visible uses yet (the code
    being written is where they are used), then those near the cursor, then those the code
    before the cursor never used, then the rest. Names are generated."""
    rng = np.random.default_rng(5)
    names = ["".join(rng.choice(list("abcdefghijklmnop"), 6)) + f"_{k}" for k in range(5)]
    early, near, later, unused, far = names
    idx = build_index([("r", f"lib/m{k}.py", f"def {n}(v):\n    return v + {k}\n")
                       for k, n in enumerate(names)], tmp_path / "ix", neighbours=False)
    imports = "".join(f"from lib.m{k} import {n}\n" for k, n in enumerate(names)) + "\n\n"
    filler = "".join(f"x_{i} = {i}\n" for i in range(40))  # pushes `early` out of the window
    prefix = imports + f"a = {early}(1)\n" + filler + f"b = {near}(2)\n"
    suffix = f"\nc = {later}(3)\n" + filler + f"d = {far}(4)\n"
    got = [s.text.split("(")[0].split()[-1] for s in idx.retrieve(prefix, suffix, "app.py", "r")
           if s.reason == "import"]
    # (near and later are both in the window, once: the one the prompt never showed first)
    assert got == [unused, later, near, far, early]
    # without a cursor (a whole file's neighbours at index time) the import order stays
    from codetune.context.imports import import_targets

    whole = prefix + suffix
    modules, defines, imports_of = idx._import_env(0)
    assert [n for _, n in import_targets(whole, "app.py", "", modules, defines,
                                         imports_of)] == names


def test_update_filters_as_the_build_did_and_new_filters_rebuild(tmp_path):
    """`codetune index -s prepare.exclude=...` then `update()` (what serve's refresh calls):
    the update keeps the build's filters. Re-indexing under other filters chunks everything
    again, so an unchanged file is never reused from text those filters would now change."""
    import random
    import string

    from codetune.config import PrepareConfig

    rng = random.Random()
    folder = "".join(rng.choice(string.ascii_lowercase) for _ in range(9))
    value = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(16))
    root = _write(tmp_path / "tree", {**REPO, f"{folder}/gen.py": "def made():\n    return 1\n",
                                      "deploy/settings.py":
                                      f'DB_HOST = "db"\nDB_PASSWORD = "{value}"\n'})
    out = tmp_path / "idx"
    cfg = PrepareConfig(exclude=[f"{folder}/*"], secrets="off")
    idx = index_tree(root, out, cfg=cfg)
    paths = {p for _, p, _ in idx.files()}
    assert "deploy/settings.py" in paths and f"{folder}/gen.py" not in paths
    assert value in _chunk_text(out)
    (root / "shop" / "tax.py").write_text("def vat_rate(country):\n    return 0\n")
    stats = idx.update()
    assert (stats.chunked, stats.removed) == (1, 0)
    assert {p for _, p, _ in RepoIndex.open(out).files()} == paths
    # the same tree under the default filters (secrets redacted): nothing reused
    stats = index_tree(root, out, previous=RepoIndex.open(out)).last_build
    assert stats.reused == 0
    assert value not in _chunk_text(out)
    # an index that recorded no filters (written before they were) is rebuilt, not updated
    info = json.loads((out / "index.json").read_text())
    del info["source"]["filters"]
    (out / "index.json").write_text(json.dumps(info))
    assert RepoIndex.open(out).update().reused == 0
