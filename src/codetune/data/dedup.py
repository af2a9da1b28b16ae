"""Exact and near-duplicate detection.

Near-duplicates follow the StarCoder/BigCode recipe: a file is the set of its word 5-grams
(words = runs of `[A-Za-z0-9_]`), two files are near-duplicates when the Jaccard similarity of
those sets is at least 0.7, estimated with MinHash and found with LSH (datasketch's, see below).

Speed: hashing each shingle through datasketch's default SHA-1 costs ~1 µs a shingle in Python,
slower than the rest of `prepare` together. Instead each *word* is hashed once with CRC-32
(C speed) and the n-gram hashes are mixed from the word hashes with vectorised numpy.

The MinHash and the LSH are datasketch's (2.x, scheme "affine32", seed 1, bands and rows from
its `_optimal_param`), computed here in numpy with the same arithmetic, so signatures and LSH
candidates are bit for bit datasketch's (tests/test_prepare_scale.py compares them) without
importing it: datasketch imports scipy (~0.6 s CPU, 1.4 s on a busy machine), which every
fresh process of a distributed prepare would pay again, and its per-shingle Python hashing and
per-query MinHash objects were a third of a file's filter time.
"""

from __future__ import annotations

import functools
import re
import zlib

import numpy as np

_WORD = re.compile(rb"[A-Za-z0-9_]+")
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio), spreads bits
_CHUNK = 2048  # shingles per step: keeps the (chunk, perms) temporaries at ~1 MB


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


_FULL = np.uint32(0xFFFFFFFF)


@functools.cache
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutations for `num_perm` (`MinHash._init_permutations`, seed 1):
    h -> a * h + b mod 2**32 with `a` odd."""
    gen = np.random.RandomState(1)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a.reshape(1, -1), b.reshape(1, -1)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, which datasketch applies to every input hash first."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def minhash_signature(text: str, ngram: int = 5, num_perm: int = 128) -> np.ndarray | None:
    """The MinHash signature of `text` (uint32 array of `num_perm`), as datasketch's
    `MinHash(num_perm, scheme="affine32").update_batch` computes it from the shingle hashes;
    None for a text without a single word (nothing to compare; exact dedup still applies)."""
    hashes = shingle_hashes(text, ngram)
    if not len(hashes):
        return None
    a, b = _permutations(num_perm)
    x = _fmix32(hashes.astype(np.uint32)).reshape(-1, 1)
    sig = np.full(num_perm, _FULL, dtype=np.uint32)
    for i in range(0, len(x), _CHUNK):
        np.minimum(sig, (x[i : i + _CHUNK] * a + b).min(axis=0), out=sig)
    return sig


@functools.cache
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising the false positive + false negative probability, weights 0.5 /
    0.5: datasketch's `_optimal_param`, with its scipy `quad` replaced by Gauss-Legendre
    quadrature, exact for these integrands (polynomials of degree b * r <= num_perm) up to
    rounding. (0.7, 128) -> (14, 9)."""
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 8)
    lo = threshold / 2 * nodes + threshold / 2  # nodes on [0, threshold] and [threshold, 1]
    hi = (1 - threshold) / 2 * nodes + (1 + threshold) / 2
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = threshold / 2 * float(np.dot(weights, 1 - (1 - lo ** float(r)) ** float(b)))
            fn = (1 - threshold) / 2 * float(np.dot(weights, (1 - hi ** float(r)) ** float(b)))
            if fp * 0.5 + fn * 0.5 < best:
                best, opt = fp * 0.5 + fn * 0.5, (b, r)
    return opt


class NearDupIndex:
    """MinHash LSH over the kept files. Candidates from LSH are confirmed with the estimated
    Jaccard similarity, so a band collision alone never drops a file.

    The candidates are datasketch's `MinHashLSH.query`'s: the files sharing at least one band
    (the same `rows` values at the same positions). A band is looked up by a 64-bit key mixed
    from its values and confirmed on the stored signature, so a key collision never adds one.

    Memory, per file: its signature (num_perm * 4 bytes, in one growing array) and one dict
    entry per band (~100 bytes): ~2 KB at 128 permutations, where datasketch's dicts of band
    bytes and MinHash objects took ~6 KB. This is the only state of `prepare` that grows with
    the corpus.
    """

    def __init__(self, threshold: float = 0.7, num_perm: int = 128):
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands, self.rows = lsh_params(threshold, num_perm)
        # one key per band: sum of the band's values times odd 64-bit multipliers (wrapping)
        mult = np.random.RandomState(7).randint(0, 1 << 62, (1, self.rows), dtype=np.uint64)
        self._mult = mult * np.uint64(2) + np.uint64(1)
        self.tables: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        self._sigs = np.empty((0, num_perm), dtype=np.uint32)  # row = slot of a key
        self._slot: dict[int, int] = {}  # key -> row of _sigs
        self._free: list[int] = []

    def _keys(self, sig: np.ndarray) -> list[int]:
        band = sig[: self.bands * self.rows].reshape(self.bands, self.rows).astype(np.uint64)
        with np.errstate(over="ignore"):
            h = (band * self._mult).sum(axis=1, dtype=np.uint64)
        return h.tolist()

    def _band_equal(self, key: int, sig: np.ndarray, band: int) -> bool:
        lo, hi = band * self.rows, (band + 1) * self.rows
        return bool(np.array_equal(self._sigs[self._slot[key], lo:hi], sig[lo:hi]))

    def query(self, sig: np.ndarray) -> list[tuple[int, float]]:
        """Keys of indexed files whose estimated Jaccard with `sig` is >= threshold, best first."""
        found: set[int] = set()
        for band, (table, h) in enumerate(zip(self.tables, self._keys(sig), strict=True)):
            hit = table.get(h)
            if hit is None:
                continue
            for key in (hit,) if isinstance(hit, int) else hit:
                if key not in found and self._band_equal(key, sig, band):
                    found.add(key)
        hits = []
        for key in found:
            sim = float(np.mean(self._sigs[self._slot[key]] == sig))
            if sim >= self.threshold:
                hits.append((key, sim))
        return sorted(hits, key=lambda kv: (-kv[1], kv[0]))

    def insert(self, key: int, sig: np.ndarray) -> None:
        if key in self._slot:
            raise ValueError(f"key {key} is already indexed")
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._slot)
            if slot == len(self._sigs):  # grow by half: amortised O(1) appends
                grown = np.empty((max(1024, slot * 3 // 2), self.num_perm), dtype=np.uint32)
                grown[:slot] = self._sigs[:slot]
                self._sigs = grown
        self._sigs[slot] = sig
        self._slot[key] = slot
        for table, h in zip(self.tables, self._keys(sig), strict=True):
            hit = table.get(h)
            if hit is None:
                table[h] = key
            elif isinstance(hit, int):
                table[h] = [hit, key]
            else:
                hit.append(key)

    def remove(self, key: int) -> None:
        sig = self._sigs[self._slot[key]]
        for table, h in zip(self.tables, self._keys(sig), strict=True):
            hit = table[h]
            if isinstance(hit, int):
                del table[h]
            else:
                hit.remove(key)
                if len(hit) == 1:
                    table[h] = hit[0]
        self._free.append(self._slot.pop(key))

    def __contains__(self, key: int) -> bool:
        return key in self._slot
