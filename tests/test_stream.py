"""The training/eval stream: determinism, conservation, resume, workers and ranks."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

from codetune.config import DataConfig, FimConfig
from codetune.data.prepare import prepare
from codetune.data.store import resolve_files
from codetune.errors import CodetuneError
from codetune.tokens.stream import TrainingStream

from .conftest import prep_cfg
from .tiny import CORPUS, build_tokenizer


def _file(i: int) -> str:
    body = CORPUS[i % len(CORPUS)]
    return f"# module {i}\n" + body * (1 + i % 4) + f"VALUE_{i} = {i * 7}\n"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    repo = root / "repo"
    repo.mkdir()
    for i in range(60):
        (repo / f"m{i:02d}.py").write_text(_file(i))
    # Small shards and row groups so windows, shuffling and row-group reads are exercised.
    prepare([str(repo)], root / "ds",
            prep_cfg(valid_fraction=0.2, seed=0, dedup_near=False, shard_bytes=2000),
            progress=False)
    return root / "ds"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tokenizer(tmp_path_factory.mktemp("tok") / "t"))


def make(dataset, tok, split="train", fim_rate=0.0, seq=32, fim=None, **kw) -> TrainingStream:
    files, col = resolve_files(dataset, split)
    data = dataclasses.replace(DataConfig(), seq_length=seq, shuffle_buffer=7, tokenize_batch=5)
    fim_cfg = dataclasses.replace(FimConfig(), rate=fim_rate, **(fim or {}))
    fim_tokens = None
    if fim_rate > 0:
        from codetune.tokens.fim import detect_fim

        fim_tokens = detect_fim(tok)
    return TrainingStream(files, col or "content", tok, fim_tokens, data, fim_cfg, seed=3,
                       train=split == "train", **kw)


def take(stream, n):
    return [s for s in itertools.islice(stream.sequences(), n)]


def test_deterministic_per_seed_and_shuffled(dataset, tok):
    a = [s.input_ids.tolist() for s in take(make(dataset, tok), 20)]
    b = [s.input_ids.tolist() for s in take(make(dataset, tok), 20)]
    assert a == b
    other = make(dataset, tok)
    other.seed = 4
    assert [s.input_ids.tolist() for s in take(other, 20)] != a


def test_eval_stream_is_finite_and_conserves_every_token(dataset, tok):
    import pyarrow.parquet as pq

    files, _ = resolve_files(dataset, "validation")
    texts = [t for f in files for t in pq.read_table(f, columns=["content"])["content"]
             .to_pylist()]
    expected = np.concatenate([np.append(tok(t, add_special_tokens=False)["input_ids"],
                                         tok.eos_token_id) for t in texts])
    seqs = list(make(dataset, tok, "validation").sequences())
    got = np.concatenate([s.input_ids for s in seqs])
    assert got[: len(expected)].tolist() == expected.tolist()  # same order, nothing lost
    assert (got[len(expected):] == tok.eos_token_id).all()  # then padding only
    n_pad = len(got) - len(expected)
    assert (seqs[-1].labels[len(seqs[-1].labels) - n_pad:] == -100).all()


def test_items_are_tensors_with_positions(dataset, tok):
    item = next(iter(make(dataset, tok)))
    assert set(item) == {"input_ids", "labels", "position_ids"}
    assert all(v.dtype == torch.int64 and v.shape == (32,) for v in item.values())
    seed_mode = make(dataset, tok)
    seed_mode.data_cfg = dataclasses.replace(seed_mode.data_cfg, packing="concat")
    assert set(next(iter(seed_mode))) == {"input_ids", "labels"}


def test_reports_cross_document_share(dataset, tok):
    s = make(dataset, tok)
    take(s, 30)
    assert 0.05 < s.cross_doc_share < 0.95


FIM_MODES = [
    (0.0, {}),
    (0.5, {}),  # document level, token split (the reference notebook)
    (0.5, {"split": "char", "middle_loss_only": True}),
    (0.5, {"split": "line"}),  # editor-shaped spans
    (0.9, {"level": "context"}),
]


@pytest.mark.parametrize("rate, fim", FIM_MODES)
def test_resume_mid_stream_gives_the_same_sequences(dataset, tok, rate, fim):
    full = [(s.input_ids.tolist(), s.labels.tolist())
            for s in take(make(dataset, tok, fim_rate=rate, fim=fim), 60)]
    for cut in (1, 17, 41):  # 41 is past the first epoch of this small split
        s = make(dataset, tok, fim_rate=rate, fim=fim)
        take(s, cut)
        state = s.state_dict()
        resumed = make(dataset, tok, fim_rate=rate, fim=fim)
        resumed.load_state_dict(state)
        rest = [(x.input_ids.tolist(), x.labels.tolist()) for x in take(resumed, 60 - cut)]
        assert rest == full[cut:], cut


@pytest.mark.parametrize("rate, fim", FIM_MODES[1:])
def test_fim_sequences_carry_sentinels(dataset, tok, rate, fim):
    from codetune.tokens.fim import detect_fim

    f = detect_fim(tok)
    seqs = take(make(dataset, tok, fim_rate=rate, fim=fim), 40)
    ids = np.concatenate([s.input_ids for s in seqs])
    n_pre, n_mid = (ids == f.prefix_id).sum(), (ids == f.middle_id).sum()
    assert n_pre > 5 and abs(int(n_pre) - int(n_mid)) <= 2  # one of each per FIM example
    if fim.get("level") == "context":
        assert all(len(s.input_ids) == 32 for s in seqs)
    if fim.get("middle_loss_only"):
        labels = np.concatenate([s.labels for s in seqs])
        assert (labels[ids == f.prefix_id] == -100).all()


def test_resume_with_stateful_dataloader_workers(dataset, tok):
    from torchdata.stateful_dataloader import StatefulDataLoader

    def loader(stream):
        return StatefulDataLoader(stream, batch_size=2, num_workers=2)

    full = [b["input_ids"] for b in itertools.islice(loader(make(dataset, tok)), 12)]
    dl = loader(make(dataset, tok))
    it = iter(dl)
    head = [next(it)["input_ids"] for _ in range(5)]
    state = dl.state_dict()
    del it, dl
    dl2 = loader(make(dataset, tok))
    dl2.load_state_dict(state)
    tail = [b["input_ids"] for b in itertools.islice(dl2, 7)]
    assert all(torch.equal(a, b) for a, b in zip(head + tail, full, strict=True))


def test_ranks_read_disjoint_documents(dataset, tok):
    seen = []
    for rank in range(2):
        s = make(dataset, tok, "validation", rank=rank, world_size=2)
        keys = {k for seq in s.sequences() for _, k, _ in seq.segments if k is not None}
        seen.append(keys)
    total = make(dataset, tok, "validation").num_docs
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(total))


def test_resume_with_other_world_size_is_refused(dataset, tok):
    s = make(dataset, tok, rank=0, world_size=2)
    take(s, 3)
    other = make(dataset, tok, rank=0, world_size=1)
    other.load_state_dict(s.state_dict())
    with pytest.raises(CodetuneError, match="same number of processes"):
        take(other, 1)


def test_text_with_control_token_strings_is_not_a_control_token(tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["x = '<|endoftext|><fim_prefix>'\n"] * 3}),
                   tmp_path / "d.parquet")
    s = make(tmp_path / "d.parquet", tok, "validation")
    ids = np.concatenate([q.input_ids for q in s.sequences()])
    assert (ids == tok.convert_tokens_to_ids("<fim_prefix>")).sum() == 0
    assert (ids == tok.eos_token_id).sum() >= 3  # only the separators (and padding)


def test_bad_dataset_paths(tmp_path, tok):
    with pytest.raises(CodetuneError, match="not a prepared dataset"):
        resolve_files(tmp_path, "train")
    (tmp_path / "x.jsonl").write_text("{}\n")
    with pytest.raises(CodetuneError, match="not a parquet file"):
        resolve_files(tmp_path / "x.jsonl", "train")


def test_preview_command_shows_sentinels_and_share(dataset, tok, tmp_path, capsys):
    from codetune.cli import main

    tok.save_pretrained(str(tmp_path / "tok"))
    assert main(["preview", str(dataset), "--tokenizer", str(tmp_path / "tok"), "-n", "1",
                 "-s", "data.seq_length=64", "-s", "fim.rate=1.0"]) == 0
    out = capsys.readouterr().out
    assert "FIM format: starcoder" in out and "<fim_prefix>" in out
    assert "would attend across a document boundary" in out


def test_no_fim_tokens_names_both_remedies(dataset, tmp_path):
    from codetune import config
    from codetune.tokens.stream import make_stream

    plain = build_tokenizer(tmp_path / "plain", specials=["<|endoftext|>"])
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(plain)
    assert len(t) == 365
    cfg = config.load(None, [f"data.dataset={dataset}"])
    with pytest.raises(CodetuneError, match=r"fim.rate=0.*fim.add_tokens=true|fim.add_tokens"):
        make_stream(cfg, t, "train")
    assert make_stream(config.load(None, [f"data.dataset={dataset}", "fim.rate=0"]), t,
                       "train").encoder.fim is None
    s = make_stream(config.load(None, [f"data.dataset={dataset}", "fim.add_tokens=true"]), t,
                    "train")
    assert s.encoder.fim.family == "starcoder" and len(t) == 369  # four sentinels added


# --- repository context (data.context=repo) ----------------------------------------------------


def _ctx(calls: list | None = None):
    """A stand-in for the index: each file's context is the two files before it."""
    from codetune.tokens.fim import RepoContext

    def context(repo_id, path, text):
        if calls is not None:
            calls.append(path)
        i = int(path[1:3])
        return RepoContext(repo=repo_id, path=path,
                           snippets=tuple((f"m{j:02d}.py", f"VALUE_{j} = {j * 7}\n")
                                          for j in (i - 2, i - 1) if j >= 0))
    return context


REPO_MODES = [(0.0, {}), (0.5, {}), (0.5, {"split": "char"}), (0.5, {"split": "line"})]


@pytest.mark.parametrize("rate, fim", REPO_MODES)
def test_repo_context_resume_is_exact(dataset, tok, rate, fim):
    full = [(s.input_ids.tolist(), s.labels.tolist())
            for s in take(make(dataset, tok, fim_rate=rate, fim=fim, seq=64, context=_ctx()), 40)]
    for cut in (1, 13, 29):
        s = make(dataset, tok, fim_rate=rate, fim=fim, seq=64, context=_ctx())
        take(s, cut)
        resumed = make(dataset, tok, fim_rate=rate, fim=fim, seq=64, context=_ctx())
        resumed.load_state_dict(s.state_dict())
        rest = [(x.input_ids.tolist(), x.labels.tolist()) for x in take(resumed, 40 - cut)]
        assert rest == full[cut:], cut


def test_repo_context_is_laid_out_and_never_trained_on(dataset, tok):
    from codetune.tokens.fim import detect_fim

    f = detect_fim(tok)
    calls: list[str] = []
    s = make(dataset, tok, fim_rate=0.0, seq=64, context=_ctx(calls),
             repo_tokens=f)
    seqs = take(s, 30)
    ids = np.concatenate([x.input_ids for x in seqs])
    labels = np.concatenate([x.labels for x in seqs])
    assert (ids == f.repo_name_id).sum() > 0 and (ids == f.file_sep_id).sum() > 0
    # the separators and repo names are context: never a target
    sep = np.isin(ids, [f.repo_name_id, f.file_sep_id])
    assert (labels[sep] == -100).all()
    # a document's context is computed once, however often the stream sees the file
    assert len(calls) == len(set(calls))
    text = tok.decode(seqs[0].input_ids.tolist(), skip_special_tokens=False)
    assert "<repo_name>" in text and "<file_sep>" in text


def test_preview_shows_the_repo_layout(tmp_path, capsys):
    from codetune.cli import main
    from codetune.context import index_dataset

    from .tiny import build_tokenizer as bt

    repo = tmp_path / "shop"
    (repo / "shop").mkdir(parents=True)
    (repo / "shop" / "money.py").write_text("def cents(x):\n    return round(x * 100)\n")
    for i in range(6):
        (repo / "shop" / f"v{i}.py").write_text(f"from shop.money import cents\n\nV{i} = "
                                                f"cents({i})\n" * 3)
    prepare([str(repo)], tmp_path / "ds", prep_cfg(valid_fraction=0.0, dedup_near=False),
            progress=False, context_index=index_dataset)
    tok = bt(tmp_path / "tok")
    assert main(["preview", str(tmp_path / "ds"), "--tokenizer", str(tok), "-n", "1",
                 "-s", "data.context=repo", "-s", "data.context_tokens=64",
                 "-s", "data.seq_length=256", "-s", "fim.rate=0"]) == 0
    out = capsys.readouterr().out
    assert "repository context: up to 64 tokens" in out
    assert "<repo_name>shop<file_sep>shop/money.py\ndef cents(x):" in out


@pytest.mark.parametrize("rate, fim", REPO_MODES)
def test_every_sequence_of_a_long_file_holds_its_context(dataset, tok, rate, fim):
    # files longer than a sequence are cut into windows that each fit one behind the context,
    # and a window that packing splits continues behind its context again: no sequence trains
    # on a file without that file's repository context in front of it
    from codetune.tokens.fim import detect_fim

    f = detect_fim(tok)
    seqs = take(make(dataset, tok, fim_rate=rate, fim=fim, seq=128, context=_ctx(),
                     repo_tokens=f), 80)
    cut = continued = 0
    for s in seqs:
        for start, key, offset in s.segments:
            assert s.input_ids[start] == f.repo_name_id, (key, offset)
            assert s.labels[start] == -100
            cut += not isinstance(key, int)
            continued += offset > 0
    assert cut > 20 and continued > 20  # both happened, often


def test_repo_mode_trains_each_file_token_once(dataset, tok):
    # the held-out stream, in order, without FIM: the trained tokens are the files' tokens,
    # each window closed by EOS, the repeated context never among them
    import pyarrow.parquet as pq

    from codetune.tokens.fim import detect_fim

    f = detect_fim(tok)
    files, col = resolve_files(dataset, "validation")
    texts = [t for p in files for t in pq.read_table(p, columns=[col or "content"]).column(0)
             .to_pylist()]
    s = make(dataset, tok, "validation", fim_rate=0.0, seq=96, context=_ctx(), repo_tokens=f)
    seqs = list(s.sequences())
    trained = np.concatenate([x.labels[x.labels != -100] for x in seqs])
    eos = s.encoder.eos[0]
    want = np.concatenate([tok(t, add_special_tokens=False)["input_ids"] for t in texts])
    assert trained[trained != eos].tolist() == want.tolist()
    assert (trained == eos).sum() > len(texts)  # more windows than files: some were cut


def _window_ctx(seen: list):
    """A per-window provider: the snippet names the window's first line, and its length is
    kept inside what `fits` allows (shorter snippets when it does not fit)."""
    from codetune.tokens.fim import RepoContext

    def context(repo_id, path, text, fits=None):
        first = text.strip().splitlines()[0] if text.strip() else ""
        for n in (2, 1, 0):
            ctx = RepoContext(repo=repo_id, path=path, snippets=tuple(
                (f"ctx_{k}.py", f"# for: {first}\n") for k in range(n)))
            if fits is None or fits(ctx):
                if fits is not None:
                    seen.append((path, first))
                return ctx
        return None
    context.per_window = True
    return context


def test_context_per_window_follows_each_window(dataset, tok):
    """data.context_select=window: each window of a long file gets the context chosen for its
    own text, no longer than the file's (so every window still fits one sequence with it),
    and resuming still gives the same sequences."""
    from codetune.tokens.fim import detect_fim

    f = detect_fim(tok)
    seen: list = []
    seqs = take(make(dataset, tok, seq=128, context=_window_ctx(seen), repo_tokens=f), 60)
    by_file: dict = {}
    for path, first in seen:
        by_file.setdefault(path, set()).add(first)
    assert any(len(v) > 1 for v in by_file.values())  # windows of one file differ
    for s in seqs:
        assert len(s.input_ids) <= 128
        for start, _key, _offset in s.segments:
            assert s.input_ids[start] == f.repo_name_id
    texts = [tok.decode(s.input_ids.tolist()) for s in seqs]
    assert any("# for: " in t for t in texts)
    full = [x.input_ids.tolist() for x in take(make(dataset, tok, seq=128,
                                                   context=_window_ctx([]), repo_tokens=f), 30)]
    s = make(dataset, tok, seq=128, context=_window_ctx([]), repo_tokens=f)
    take(s, 11)
    resumed = make(dataset, tok, seq=128, context=_window_ctx([]), repo_tokens=f)
    resumed.load_state_dict(s.state_dict())
    assert [x.input_ids.tolist() for x in take(resumed, 19)] == full[11:]
