"""Packing on plain integers: exact outputs, conservation, boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from codetune.tokens.packing import IGNORE_INDEX, Packer

EOS = 0


def doc(*ids: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([*ids, EOS], dtype=np.int64)
    return a, np.ones(len(a), dtype=bool)


def test_exact_sequences_positions_and_labels():
    p = Packer(4)
    out = p.add(*doc(1, 2), key="a")
    assert out == []
    (s1,) = p.add(*doc(3, 4, 5), key="b")  # pending: [1 2 0] + [3 4 5 0] -> emit 4
    assert s1.input_ids.tolist() == [1, 2, 0, 3]
    assert s1.position_ids.tolist() == [0, 1, 2, 0]
    assert s1.labels.tolist() == [1, 2, 0, IGNORE_INDEX]  # doc b's first token: no loss
    assert s1.pending == ("b", 1)
    assert s1.segments == [(0, "a", 0), (3, "b", 0)]
    (s2,) = p.add(*doc(6), key="c")  # [4 5 0] + [6 0] -> emit [4 5 0 6]
    assert s2.input_ids.tolist() == [4, 5, 0, 6]
    assert s2.position_ids.tolist() == [0, 1, 2, 0]  # continuation restarts at 0 too
    assert s2.labels.tolist() == [4, 5, 0, IGNORE_INDEX]
    assert s2.pending == ("c", 1)
    last = p.flush(pad_id=9)
    assert last.input_ids.tolist() == [0, 9, 9, 9]
    assert last.labels.tolist() == [0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]


def test_long_document_spans_several_sequences():
    p = Packer(3)
    seqs = p.add(*doc(*range(1, 9)), key=7)  # 9 tokens -> 3 sequences, nothing pending
    assert [s.input_ids.tolist() for s in seqs] == [[1, 2, 3], [4, 5, 6], [7, 8, 0]]
    assert [s.pending for s in seqs] == [(7, 3), (7, 6), None]
    assert all(s.labels.tolist() == s.input_ids.tolist() for s in seqs)


def test_seed_mode_has_no_positions_and_full_labels():
    p = Packer(4, mode="concat")
    p.add(*doc(1, 2))
    (s,) = p.add(*doc(3, 4, 5))
    assert s.position_ids is None
    assert s.labels.tolist() == s.input_ids.tolist()


def test_conservation_and_cross_doc_share():
    rng = np.random.default_rng(0)
    p = Packer(16)
    docs, seqs = [], []
    for i in range(200):
        ids = rng.integers(1, 50, size=int(rng.integers(1, 40)))
        docs.append(ids)
        seqs += p.add(*doc(*ids.tolist()), key=i)
    emitted = np.concatenate([s.input_ids for s in seqs])
    stream = np.concatenate([np.append(d, EOS) for d in docs])
    assert emitted.tolist() == stream[: len(emitted)].tolist()  # order kept, nothing lost
    assert len(stream) - len(emitted) < 16  # only the last partial sequence is pending
    # Cross-document share by hand: tokens after the first document start in each sequence.
    cross = 0
    for s in seqs:
        starts = [a for a, _, off in s.segments if off == 0 and a > 0]
        cross += 16 - starts[0] if starts else 0
    assert p.cross_doc_share == pytest.approx(cross / (16 * len(seqs)))
    assert 0.3 < p.cross_doc_share < 0.9


def test_resume_from_pending_matches():
    docs = [doc(*range(10 * i + 1, 10 * i + 1 + n)) for i, n in enumerate([5, 9, 2, 7, 11])]
    full = Packer(6)
    seqs = [s for i, d in enumerate(docs) for s in full.add(*d, key=i)]
    # Stop after the 3rd sequence; a new packer fed (pending doc from offset) + the rest
    # must produce exactly the remaining sequences.
    cut = 3
    key, offset = seqs[cut - 1].pending
    resumed = Packer(6)
    rest = resumed.add(*docs[key], key=key, offset=offset)
    for i in range(key + 1, len(docs)):
        rest += resumed.add(*docs[i], key=i)
    assert [s.input_ids.tolist() for s in rest] == [s.input_ids.tolist() for s in seqs[cut:]]
    assert [s.labels.tolist() for s in rest] == [s.labels.tolist() for s in seqs[cut:]]


def test_lead_is_repeated_before_each_continuation_without_loss():
    # a document whose first 2 tokens (91 92) are its context: every chunk that continues it
    # in a later sequence starts with them again, masked, and positions restart there
    ids = np.array([91, 92, 1, 2, 3, 4, 5, 6, 7, 0], dtype=np.int64)
    mask = np.array([False, False] + [True] * 8)
    p = Packer(5)
    seqs = p.add(ids, mask, key="d", lead=2)
    assert [s.input_ids.tolist() for s in seqs] == [[91, 92, 1, 2, 3], [91, 92, 4, 5, 6]]
    assert [s.labels.tolist()[:2] for s in seqs] == [[IGNORE_INDEX] * 2] * 2
    assert seqs[1].labels.tolist()[2:] == [4, 5, 6]
    assert seqs[1].position_ids.tolist() == [0, 1, 2, 3, 4]
    assert [s.pending for s in seqs] == [("d", 5), ("d", 8)]
    last = p.flush(pad_id=9)
    assert last.input_ids.tolist() == [91, 92, 7, 0, 9]
    assert last.labels.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 7, 0, IGNORE_INDEX]
    # every file token is trained on exactly once
    trained = [t for s in [*seqs, last] for t in s.labels.tolist() if t != IGNORE_INDEX]
    assert trained == [1, 2, 3, 4, 5, 6, 7, 0]


def test_lead_split_inside_itself_starts_the_document_over():
    # a sequence that ends inside the lead holds context only (no loss): the whole document
    # follows in the next sequence, and nothing of the file is lost or trained twice
    a = np.array([5, 6, 0], dtype=np.int64)
    ids = np.array([91, 92, 93, 1, 2, 0], dtype=np.int64)
    mask = np.array([False] * 3 + [True] * 3)
    p = Packer(5)
    p.add(a, np.ones(3, bool), key="a")
    s1, s2 = p.add(ids, mask, key="b", lead=3)
    assert s1.input_ids.tolist() == [5, 6, 0, 91, 92]
    assert s1.labels.tolist()[3:] == [IGNORE_INDEX] * 2
    assert s2.input_ids.tolist() == [91, 92, 93, 1, 2]
    assert s2.labels.tolist() == [IGNORE_INDEX] * 3 + [1, 2]
    assert s2.pending == ("b", 5)
    (s3,) = p.add(*doc(8), key="c")
    assert s3.input_ids.tolist() == [91, 92, 93, 0, 8]
    assert s3.labels.tolist() == [IGNORE_INDEX] * 3 + [0, IGNORE_INDEX]


def test_resume_with_leads_matches():
    rng = np.random.default_rng(3)
    docs = []
    for i in range(40):
        lead = int(rng.integers(0, 6))
        body = rng.integers(1, 50, size=int(rng.integers(1, 30))).tolist()
        ids = np.array([100 + i] * lead + body + [EOS], dtype=np.int64)
        docs.append((ids, np.array([False] * lead + [True] * (len(body) + 1)), lead))
    full = Packer(8)
    seqs = [s for i, (ids, m, ld) in enumerate(docs) for s in full.add(ids, m, key=i, lead=ld)]
    trained = [t for s in seqs for t in s.labels.tolist() if t != IGNORE_INDEX]
    assert len(trained) > 100
    for cut in range(1, len(seqs)):
        resumed = Packer(8)
        if seqs[cut - 1].pending is None:  # ended on a document boundary
            key, rest = seqs[cut - 1].segments[-1][1], []
        else:
            key, offset = seqs[cut - 1].pending
            ids, m, ld = docs[key]
            rest = resumed.add(ids, m, key=key, offset=offset, lead=ld)
        for i in range(key + 1, len(docs)):
            rest += resumed.add(*docs[i][:2], key=i, lead=docs[i][2])
        assert [s.input_ids.tolist() for s in rest] == [s.input_ids.tolist() for s in
                                                         seqs[cut:]], cut
        assert [s.labels.tolist() for s in rest] == [s.labels.tolist() for s in seqs[cut:]]
    # each sequence a document continues in starts with that document's lead
    for s in seqs:
        start, key, off = s.segments[0]
        if off and docs[key][2]:
            assert s.input_ids[:docs[key][2]].tolist() == [100 + key] * docs[key][2]
