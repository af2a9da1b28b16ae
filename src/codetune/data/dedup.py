"""Exact and near-duplicate detection.

Near-duplicates follow the StarCoder/BigCode recipe: a file is the set of its word 5-grams
(words = runs of `[A-Za-z0-9_]`), two files are near-duplicates when the Jaccard similarity of
those sets is at least 0.7, estimated with MinHash and found with LSH (datasketch).

Speed: hashing each shingle through datasketch's default SHA-1 costs ~1 µs a shingle in Python,
slower than the rest of `prepare` together. Instead each *word* is hashed once with CRC-32
(C speed) and the n-gram hashes are mixed from the word hashes with vectorised numpy; those
32-bit shingle hashes are handed to datasketch's `update_batch` with an identity hash, so its
permutations, schemes and LSH are used unchanged.
"""

from __future__ import annotations

import functools
import re
import zlib

import numpy as np

_WORD = re.compile(rb"[A-Za-z0-9_]+")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio), spreads bits
_CHUNK = 2048  # shingles per update_batch call: keeps the (chunk, perms) temporaries at ~1 MB
SCHEME = "affine32"  # datasketch 2.x: 32-bit signatures, half the memory of the legacy scheme


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """uint64 hashes (< 2**32) of the word n-grams of `text`, repeats included. Files with fewer
    than `ngram` words are one shingle of all their words."""
    words = _WORD.findall(text.encode("utf-8", "surrogatepass"))
    if not words:
        return np.zeros(0, dtype=np.uint64)
    wh = np.fromiter(map(zlib.crc32, words), dtype=np.uint64, count=len(words))
    n = min(ngram, len(wh))
    # h = sum_j wh[i+j] * MIX^(j+1), wrapping mod 2**64: order-sensitive, cheap, vectorised.
    h = np.zeros(len(wh) - n + 1, dtype=np.uint64)
    mult = np.uint64(1)
    with np.errstate(over="ignore"):
        for j in range(n):
            mult = mult * _MIX
            h += wh[j : len(wh) - n + 1 + j] * mult
        h ^= h >> np.uint64(29)
    # Repeats are harmless (MinHash takes a minimum), so no np.unique: it costs a sort.
    return h & np.uint64(0xFFFFFFFF)


def _identity(x: int) -> int:
    return x


@functools.cache
def _permutations(num_perm: int) -> np.ndarray:
    """datasketch's permutations for `num_perm` (seed 1): drawn once, not for every MinHash."""
    from datasketch import MinHash  # heavy: datasketch (scipy), ~0.6 s

    return MinHash(num_perm=num_perm, scheme=SCHEME).permutations


def _new_minhash(num_perm: int, hashvalues: np.ndarray | None = None):
    from datasketch import MinHash  # heavy: datasketch (scipy), ~0.6 s

    return MinHash(num_perm=num_perm, hashvalues=hashvalues, hashfunc=_identity, scheme=SCHEME,
                   permutations=_permutations(num_perm))


def minhash_signature(text: str, ngram: int = 5, num_perm: int = 128) -> np.ndarray | None:
    """The MinHash signature of `text` (uint32 array of `num_perm`), as datasketch computes it;
    None for a text without a single word (nothing to compare; exact dedup still applies)."""
    hashes = shingle_hashes(text, ngram).tolist()
    if not hashes:
        return None
    m = _new_minhash(num_perm)
    for i in range(0, len(hashes), _CHUNK):
        m.update_batch(hashes[i : i + _CHUNK])
    return np.asarray(m.hashvalues, dtype=np.uint32)


class NearDupIndex:
    """MinHash LSH over the kept files. Candidates from LSH are confirmed with the estimated
    Jaccard similarity, so a band collision alone never drops a file.

    Memory: per file its signature (num_perm * 4 bytes) plus LSH band keys; this is the only
    state of `prepare` that grows with the corpus.
    """

    def __init__(self, threshold: float = 0.7, num_perm: int = 128):
        from datasketch import MinHashLSH  # heavy: datasketch (scipy), ~0.6 s

        self.threshold = threshold
        self.num_perm = num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.signatures: dict[int, np.ndarray] = {}

    def _minhash(self, sig: np.ndarray):
        return _new_minhash(self.num_perm, sig)

    def query(self, sig: np.ndarray) -> list[tuple[int, float]]:
        """Keys of indexed files whose estimated Jaccard with `sig` is >= threshold, best first."""
        hits = []
        for key in self.lsh.query(self._minhash(sig)):
            sim = float(np.mean(self.signatures[key] == sig))
            if sim >= self.threshold:
                hits.append((key, sim))
        return sorted(hits, key=lambda kv: (-kv[1], kv[0]))

    def insert(self, key: int, sig: np.ndarray) -> None:
        self.lsh.insert(key, self._minhash(sig))
        self.signatures[key] = sig

    def remove(self, key: int) -> None:
        self.lsh.remove(key)
        del self.signatures[key]

    def __contains__(self, key: int) -> bool:
        return key in self.signatures
