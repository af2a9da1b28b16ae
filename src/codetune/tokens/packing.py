"""Packing documents into constant-length training sequences.

Documents (token ids + a loss mask, EOS appended) are concatenated and cut into sequences of
exactly `seq_length` tokens, as the reference notebook's ConstantLengthDataset did, with three differences:

- `position_ids` restart at 0 at every document start. With them (and `attention_mask=None`,
  `use_cache=False`) transformers builds a block-diagonal causal mask for sdpa/eager and uses
  the varlen kernels of flash-attention, so a token never attends to the previous document.
  `mode="concat"` leaves them out: plain concatenation, as the reference notebook trained (attention crosses
  documents).
- the label of each document's first token is -100 (in packed mode): predicting it from an
  unrelated preceding document teaches nothing.
- the tail of a document that does not fit is carried into the next sequence instead of being
  dropped at the end of each buffer.
- a document may have a *lead*: its first `lead` tokens (repository context: other files'
  snippets and its own path) are laid out again, without loss, in front of every continuation
  chunk, so each sequence that holds part of the file also holds its context.

Invariant used for resuming: right after a sequence is emitted, the pending tokens are a suffix
of the most recently added document (a sequence is emitted as soon as enough tokens are
pending), or its lead and such a suffix, so `(document key, offset into it)` describes the packer
state completely: `add(ids, mask, key, offset, lead)` re-creates it.

Pure numpy on ints; knows nothing of tokenizers or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100


@dataclass
class Sequence:
    """One training sequence; all arrays of shape (seq_length,)."""

    input_ids: np.ndarray  # int64
    labels: np.ndarray  # int64, IGNORE_INDEX where no loss
    position_ids: np.ndarray | None  # int64; None in concat mode
    pending: tuple[object, int] | None  # (doc key, offset) still to emit after this sequence
    segments: list[tuple[int, object, int]]  # (start in sequence, doc key, offset in doc)


class Packer:
    """Accumulates documents and emits constant-length `Sequence`s.

    Tracks, for reporting, how many tokens would attend across a document boundary without
    per-document position ids: every token after the first document start in its sequence.
    """

    def __init__(self, seq_length: int, mode: str = "packed"):
        if seq_length < 2:
            raise ValueError("seq_length must be at least 2")
        if mode not in ("packed", "concat"):
            raise ValueError(f"unknown packing mode {mode!r}")
        self.seq_length = seq_length
        self.mode = mode
        self._ids: list[np.ndarray] = []
        self._mask: list[np.ndarray] = []
        self._starts: list[bool] = []  # does this chunk begin at a document start?
        self._keys: list[tuple[object, int]] = []  # (doc key, offset of the chunk in the doc)
        self._leads: list[tuple[np.ndarray, np.ndarray] | None] = []  # doc's lead, to repeat
        self._n = 0
        self.tokens_added = 0
        self.tokens_total = 0
        self.tokens_cross_doc = 0

    def add(self, ids: np.ndarray, loss_mask: np.ndarray, key: object = None,
            offset: int = 0, lead: int = 0) -> list[Sequence]:
        """Add one document (from `offset` on, when resuming inside it); returns the sequences
        completed by it. `ids` already ends with EOS. `lead`: its first `lead` tokens are its
        context, repeated (without loss) before each chunk that continues it in a later
        sequence; ignored unless shorter than 3/4 of a sequence (each chunk must make way)."""
        if len(ids) != len(loss_mask):
            raise ValueError("ids and loss_mask differ in length")
        if offset >= len(ids):
            return []
        ids = np.asarray(ids, dtype=np.int64)
        loss_mask = np.asarray(loss_mask, dtype=bool)
        keep = (ids[:lead], np.zeros(lead, bool)) if 0 < lead < len(ids) and \
            lead <= self.seq_length * 3 // 4 else None
        if offset and keep is not None:  # a continuation: behind the lead again
            offset = max(offset, lead)
            chunk = np.concatenate([keep[0], ids[offset:]])
            cmask = np.concatenate([keep[1], loss_mask[offset:]])
        else:
            chunk, cmask = ids[offset:], loss_mask[offset:]
        self._ids.append(chunk)
        self._mask.append(cmask)
        self._starts.append(offset == 0)
        self._keys.append((key, offset))
        self._leads.append(keep)
        self._n += len(chunk)
        self.tokens_added += len(chunk)
        out = []
        while self._n >= self.seq_length:
            out.append(self._emit())
        return out

    def flush(self, pad_id: int) -> Sequence | None:
        """The last partial sequence, padded (pad tokens get no loss): for finite eval streams."""
        if self._n == 0:
            return None
        pad = self.seq_length - self._n
        self._ids.append(np.full(pad, pad_id, dtype=np.int64))
        self._mask.append(np.zeros(pad, dtype=bool))
        self._starts.append(True)
        self._keys.append((None, 0))
        self._leads.append(None)
        self._n = self.seq_length
        seq = self._emit()
        seq.pending = None
        return seq

    def _emit(self) -> Sequence:
        L = self.seq_length
        ids = np.empty(L, dtype=np.int64)
        mask = np.empty(L, dtype=bool)
        pos = np.empty(L, dtype=np.int64)
        filled, first_boundary = 0, None
        segments = []
        while filled < L:
            chunk, cmask = self._ids[0], self._mask[0]
            segments.append((filled, *self._keys[0]))
            take = min(L - filled, len(chunk))
            ids[filled:filled + take] = chunk[:take]
            mask[filled:filled + take] = cmask[:take]
            # A chunk continuing a document from the previous sequence also restarts at 0:
            # it cannot see that document's earlier tokens either way.
            pos[filled:filled + take] = np.arange(take)
            if filled > 0 and self._starts[0]:
                if first_boundary is None:
                    first_boundary = filled
                if self.mode == "packed":
                    mask[filled] = False  # a document's first token, predicted across a boundary
            filled += take
            if take == len(chunk):
                for q in (self._ids, self._mask, self._starts, self._keys, self._leads):
                    q.pop(0)
            else:
                self._carry(take)
        self._n -= L
        self.tokens_total += L
        if first_boundary is not None:
            self.tokens_cross_doc += L - first_boundary
        labels = np.where(mask, ids, IGNORE_INDEX)
        pending = self._keys[0] if self._keys else None
        return Sequence(ids, labels, pos if self.mode == "packed" else None, pending, segments)

    def _carry(self, take: int) -> None:
        """The first chunk lost its first `take` tokens to a sequence: keep the rest, behind
        the document's lead again if it has one (from the lead on: a chunk split inside its
        lead starts over, its emitted part was context only, without loss)."""
        chunk, cmask = self._ids[0], self._mask[0]
        key, off = self._keys[0]
        lead = self._leads[0]
        if lead is None:
            rest, rmask, off = chunk[take:], cmask[take:], off + take
        else:  # chunk = lead + doc[was:] (a first chunk: doc[0:], whose first n tokens are the lead)
            n = len(lead[0])
            was = off if off else n
            off = was + max(take - n, 0)
            rest = np.concatenate([lead[0], chunk[n + off - was:]])
            rmask = np.concatenate([lead[1], cmask[n + off - was:]])
            extra = len(rest) - (len(chunk) - take)
            self._n += extra
            self.tokens_added += extra
        self._ids[0], self._mask[0] = rest, rmask
        self._starts[0] = False
        self._keys[0] = (key, off)

    @property
    def cross_doc_share(self) -> float:
        """Share of emitted tokens that would attend across a document boundary without
        per-document position ids (what concat mode trains with)."""
        return self.tokens_cross_doc / self.tokens_total if self.tokens_total else 0.0
