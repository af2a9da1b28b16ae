"""BM25 over one repository's chunks, with the `bm25s` library.

bm25s scores a query from a sparse (documents x vocabulary) matrix of precomputed BM25 term
weights (Lucene variant, k1=1.5, b=0.75) and saves/loads it as `.npy` files plus a vocabulary
JSON. Its own `BM25.index` fills that matrix with a Python loop per document (a `Counter` and
a set intersection each): 10 s for the 60k chunks of the standard library on the 2-core VM,
more than reading and chunking them. `build` fills the same matrix with a handful of numpy
calls over all documents at once, using bm25s's own term-frequency and IDF functions and its
CSC builder, and leaves everything else (scoring, top-k, save, load) to bm25s. A test checks
that the matrix equals the one `BM25.index` builds, entry for entry, so an upgrade of bm25s
that changed its internals would fail there rather than rank differently.

Token ids are positions in the repository's sorted vocabulary, so the same chunks give the
same files byte for byte however the index was reached (a fresh build or an update).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build(flat: np.ndarray, offsets: np.ndarray, vocab: list[str]):
    """A `bm25s.BM25` over the documents `flat[offsets[i]:offsets[i + 1]]` (token ids into
    `vocab`, which must be sorted)."""
    import bm25s
    from bm25s import scoring

    bm = bm25s.BM25()
    n_docs, n_vocab = len(offsets) - 1, len(vocab)
    lengths = np.diff(offsets).astype(np.int64)
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    pairs, tf = np.unique(doc * n_vocab + flat.astype(np.int64), return_counts=True)
    rows, cols = pairs // n_vocab, pairs % n_vocab
    df = np.bincount(cols, minlength=n_vocab)
    idf = scoring._build_idf_array(dict(enumerate(df.tolist())), n_docs,
                                   scoring._select_idf_scorer(bm.idf_method), bm.dtype)
    # l_avg as a numpy float64 and l_d as float64, as bm25s's per-document loop has them:
    # the arithmetic, and so every float32 weight, is the same.
    tfc = scoring._select_tfc_scorer(bm.method)(
        tf_array=tf.astype(bm.dtype), l_d=lengths[rows].astype(np.float64),
        l_avg=lengths.mean() if n_docs else np.float64(0), k1=bm.k1, b=bm.b, delta=bm.delta)
    weights = (idf[cols] * tfc).astype(bm.dtype)
    data, indices, indptr = bm._np_csc(weights, rows.astype(bm.int_dtype),
                                       cols.astype(bm.int_dtype), (n_docs, n_vocab))
    bm.scores = {"data": data.astype(bm.dtype), "indices": indices, "indptr": indptr,
                 "num_docs": n_docs}
    bm.vocab_dict = {tok: i for i, tok in enumerate(vocab)}
    bm.unique_token_ids_set = set(range(n_vocab))
    bm.nonoccurrence_array = None
    return bm


def save(bm, folder: Path) -> None:
    bm.save(str(folder), show_progress=False)


def load(folder: Path):
    import bm25s

    return bm25s.BM25.load(str(folder), show_progress=False)


def vocabulary(bm) -> list[str]:
    """The tokens of a loaded index, by id."""
    vocab = [""] * len(bm.vocab_dict)
    for tok, i in bm.vocab_dict.items():
        vocab[i] = tok
    return vocab


def scores(bm, token_ids: np.ndarray) -> np.ndarray:
    """BM25 score of every chunk of the repository (float32, one per chunk) for a query given
    as distinct token ids."""
    if len(token_ids) == 0:
        return np.zeros(bm.scores["num_docs"], dtype=np.float32)
    return bm.get_scores_from_ids(token_ids)


def document_frequencies(bm) -> np.ndarray:
    """How many chunks hold each token (the column lengths of the CSC matrix)."""
    return np.diff(bm.scores["indptr"])
