"""The training and eval streams: parquet rows -> tokens -> FIM -> packed sequences.

Order and resumability. The documents of a split are addressed by *position* in a per-epoch
order that is a pure function of (seed, epoch): the parquet row groups are permuted, grouped
into windows of at least `shuffle_buffer` documents, and the rows of each window permuted
(a buffer shuffle that needs no buffer state). Position p goes to reader `p % R`, where
R = world_size * num_workers and reader = rank * num_workers + worker: every rank and worker
reads a disjoint, interleaved share. FIM randomness for a document is drawn from a generator
seeded with (seed, epoch, position), so it is the same whenever that document is seen again.

Repository context (`data.context=repo`): each document is preceded by its repository's name
and snippets of other train files of the same repository (`tokens.fim.RepoContext`), from a
`context` callable the trainer builds on the dataset's index. The snippets of a file are fixed
at index time, so a document encodes to the same ids whenever it is seen again and resuming
stays exact; the context is masked out of the loss. A file longer than a sequence is cut into
windows that each fit one sequence behind the context (each FIM-transformed on its own), and
the packer repeats the context before any part of a window it carries into the next sequence:
no file token is trained without its repository context in view. A window's packer key is
(position, window).

A reader's whole state is therefore {epoch, next position, pending (key, offset)}: the
packer's leftover is always the tail of one document (see `packing.py`), re-created on resume
by encoding that document again. `state_dict()` / `load_state_dict()` follow the protocol of
torchdata's `StatefulDataLoader`, which calls them inside each worker, so a resumed run yields
exactly the sequences an uninterrupted one would, with any number of workers.
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from codetune.config import DataConfig, FimConfig
from codetune.data import store
from codetune.errors import CodetuneError
from codetune.tokens import fim as F
from codetune.tokens.packing import IGNORE_INDEX, Packer, Sequence

try:  # the stream is a torch IterableDataset when torch is there (always, for training)
    from torch.utils.data import IterableDataset as _Base
except ImportError:  # pragma: no cover - prepare-only installs
    _Base = object  # type: ignore[assignment,misc]


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Unit:
    """One parquet row group: the smallest piece read at once."""

    file: str
    row_group: int
    rows: int


def list_units(files: list[str], column: str) -> list[Unit]:
    import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

    units = []
    for f in files:
        with store.reading(f):
            meta = pq.ParquetFile(f).metadata
        if column not in meta.schema.names:
            raise CodetuneError(f"{f} has no column '{column}' (columns: "
                                f"{', '.join(meta.schema.names)}); set data.text_column")
        units += [Unit(f, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)
                  if meta.row_group(i).num_rows]
    return units


class EpochOrder:
    """The document order of one epoch: permuted row groups in windows, rows permuted per
    window. `doc(p)` -> (unit index, row) for global position p, loading nothing."""

    def __init__(self, units: list[Unit], seed: int, epoch: int, window_docs: int,
                 shuffle: bool):
        self.units, self.seed, self.epoch, self.shuffle = units, seed, epoch, shuffle
        order = (np.random.default_rng([seed, epoch, 0]).permutation(len(units)) if shuffle
                 else np.arange(len(units)))
        self.windows: list[list[int]] = []
        current, n = [], 0
        for u in order.tolist():
            current.append(u)
            n += units[u].rows
            if n >= window_docs:
                self.windows.append(current)
                current, n = [], 0
        if current:
            self.windows.append(current)
        sizes = [sum(units[u].rows for u in w) for w in self.windows]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()
        self.total = self.starts[-1]
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def window_of(self, p: int) -> int:
        return bisect.bisect_right(self.starts, p) - 1

    def _window(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None or self._cache[0] != w:
            unit_of = np.concatenate([np.full(self.units[u].rows, u) for u in self.windows[w]])
            row_of = np.concatenate([np.arange(self.units[u].rows) for u in self.windows[w]])
            if self.shuffle:
                perm = np.random.default_rng([self.seed, self.epoch, 1, w]).permutation(
                    len(unit_of))
                unit_of, row_of = unit_of[perm], row_of[perm]
            self._cache = (w, unit_of, row_of)
        return self._cache[1], self._cache[2]

    def doc(self, p: int) -> tuple[int, int]:
        w = self.window_of(p)
        unit_of, row_of = self._window(w)
        i = p - self.starts[w]
        return int(unit_of[i]), int(row_of[i])


class TextCache:
    """Text columns of recently used row groups (one window's worth is enough); with
    `meta`, also each row's (repo_id, path), for repository context."""

    def __init__(self, units: list[Unit], column: str, keep: int = 64, meta: bool = False):
        self.units, self.column, self.keep, self.meta = units, column, keep, meta
        self._data: dict[int, list[str]] = {}
        self._meta: dict[int, list[tuple[str, str]]] = {}

    def _load(self, unit: int) -> None:
        import pyarrow.parquet as pq  # heavy: pyarrow, ~0.3 s

        if len(self._data) >= self.keep:
            old = next(iter(self._data))
            self._data.pop(old)
            self._meta.pop(old, None)
        u = self.units[unit]
        cols = [self.column, "repo_id", "path"] if self.meta else [self.column]
        with store.reading(u.file):
            table = pq.ParquetFile(u.file).read_row_group(u.row_group, columns=cols)
        self._data[unit] = table.column(0).to_pylist()
        if self.meta:
            self._meta[unit] = list(zip(table.column(1).to_pylist(),
                                        table.column(2).to_pylist(), strict=True))

    def get(self, unit: int, row: int) -> str:
        if unit not in self._data:
            self._load(unit)
        text = self._data[unit][row]
        return text if isinstance(text, str) else ""

    def meta_of(self, unit: int, row: int) -> tuple[str, str]:
        """(repo_id, path) of a row (load it with `get` first)."""
        if unit not in self._meta:
            self._load(unit)
        return self._meta[unit][row]


# --------------------------------------------------------------------------- encoding


class Encoder:
    """Text -> (ids, loss mask) with EOS appended and document-level FIM applied.

    Document-level FIM draws from `rng_for(key)`, so a document gets the same permutation
    every time it is encoded (which is what makes resuming inside it exact)."""

    def __init__(self, tokenizer, fim_tokens, fim_cfg: FimConfig, seed: int,
                 fim_rate: float | None = None, context=None, repo_tokens=None,
                 seq_length: int | None = None):
        self.tok = tokenizer
        self.seq_length = seq_length  # long files with repository context are cut to fit it
        self.fim = fim_tokens
        self.cfg = fim_cfg
        self.seed = seed
        # Repository context: `context(repo_id, path, text)` -> tokens.fim.RepoContext; laid
        # out with the family's repo tokens (`repo_tokens`: FimTokens, even when FIM is off).
        self.context = context
        self.repo_tokens = repo_tokens if repo_tokens is not None else fim_tokens
        self._ctx_cache: dict[tuple[str, str], tuple[list[int], list[int], Any]] = {}
        self.rate = fim_cfg.rate if fim_rate is None else fim_rate
        if self.rate > 0 and fim_tokens is None:
            raise ValueError("FIM requested without FIM tokens")
        # The family's end-of-document token when FIM is known (an instruct tokenizer's
        # eos_token is often an end-of-turn), else the tokenizer's EOS.
        eos = fim_tokens.eos_id if fim_tokens is not None else tokenizer.eos_token_id
        if eos is None:
            raise CodetuneError("the tokenizer has no EOS token, needed between packed "
                                "documents; set tokenizer.eos_token in its tokenizer_config")
        self.eos = np.array([eos], dtype=np.int64)
        # Families whose tokenizer starts every text with BOS (Llama, DeepSeek) were trained
        # with it at each document start; inference prompts carry it too (fim.build_prompt).
        probe = tokenizer("a")["input_ids"]
        bos = tokenizer.bos_token_id
        self.bos = np.array([bos] if bos is not None and probe and probe[0] == bos else [],
                            dtype=np.int64)
        self.doc_level = self.rate > 0 and fim_cfg.level == "document"
        self.ctx_level = self.rate > 0 and fim_cfg.level == "context"

    def rng_for(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *key])

    def tokenize(self, texts: list[str]) -> list[np.ndarray]:
        # split_special_tokens: a file that *contains* the text "<|endoftext|>" or
        # "<fim_prefix>" must not inject those control tokens into training data.
        out = self.tok(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        return [np.asarray(ids, dtype=np.int64) for ids in out]

    def repo_context(self, meta: tuple[str, str] | None, text: str
                     ) -> tuple[list[int], list[int], Any]:
        """(preamble ids, head ids, RepoContext) of a document; empty without context. A
        file's context is fixed (its snippets come from the index), so it is encoded once."""
        if self.context is None or meta is None:
            return [], [], None
        if meta not in self._ctx_cache:
            ctx = self.context(meta[0], meta[1], text)
            encoded = ([], []) if ctx is None else self._encode_context(ctx)
            if len(self._ctx_cache) >= 4096:  # bounded: one entry per file of a window
                self._ctx_cache.pop(next(iter(self._ctx_cache)))
            self._ctx_cache[meta] = (*encoded, ctx)
        return self._ctx_cache[meta]

    def encode(self, texts: list[str], keys: list[tuple[int, int]],
               metas: list[tuple[str, str]] | None = None
               ) -> list[list[tuple[np.ndarray, np.ndarray, int]]]:
        """Encode documents; `keys` are (epoch, position), the FIM random seed of each;
        `metas` their (repo_id, path), for repository context. Each document gives a list of
        pieces (ids, loss mask, lead): one, unless it has repository context and is longer
        than a sequence (`seq_length`): then it is cut into windows that each fit one sequence
        behind the context, each FIM-transformed on its own, so no part of a long file is
        trained without its context. `lead`: how many leading tokens are context, which the
        packer repeats before a piece's continuation in the next sequence."""

        ctxs = [self.repo_context(metas[i] if metas else None, t) for i, t in enumerate(texts)]
        out: list[list[tuple[np.ndarray, np.ndarray, int]] | None] = [None] * len(texts)
        plain_idx, plain_texts = [], []
        for i, (text, key) in enumerate(zip(texts, keys, strict=True)):
            if self.doc_level and self.cfg.split != "token" and ctxs[i][2] is None:
                piece = self._char_fim(text, self.rng_for(*key), ctxs[i])
                if piece is not None:
                    out[i] = [piece]
                    continue
            plain_idx.append(i)
            plain_texts.append(text)
        for i, ids in zip(plain_idx, self.tokenize(plain_texts) if plain_texts else [],
                          strict=True):
            wins = (self._windows(len(ids), ctxs[i]) if ctxs[i][2] is not None
                    else [(0, len(ids))])
            if len(wins) == 1:  # fits: as it is, with the document's own FIM draw
                out[i] = [self._piece(ids, texts[i], self.rng_for(*keys[i]), ctxs[i])]
            else:
                out[i] = [self._piece(ids[a:b], None, self.rng_for(*keys[i], w),
                                      self.window_context(metas[i] if metas else None,
                                                          ids[a:b], ctxs[i]))
                          for w, (a, b) in enumerate(wins)]
        return out  # type: ignore[return-value]

    def _encode_context(self, ctx: Any) -> tuple[list[int], list[int]]:
        if self.repo_tokens is not None:
            return F.encode_repo_context(self.tok, self.repo_tokens, ctx)
        return [], self.tokenize([F.fallback_context_text(ctx)])[0].tolist()

    def window_context(self, meta: tuple[str, str] | None, ids: np.ndarray,
                       file_ctx: tuple[list[int], list[int], Any]
                       ) -> tuple[list[int], list[int], Any]:
        """The context of one window of a long file: the file's own (`file_ctx`), unless the
        provider chooses per window (`per_window`, data.context_select=window); then the one
        it chooses for the window's text, within the tokens of the file's context, which the
        windows were cut to fit behind (where nothing fits, the file's own)."""
        if meta is None or not getattr(self.context, "per_window", False):
            return file_ctx
        limit = len(file_ctx[0]) + len(file_ctx[1])

        def fits(ctx: Any) -> bool:
            pre, head = self._encode_context(ctx)
            return len(pre) + len(head) <= limit

        ctx = self.context(meta[0], meta[1], self.tok.decode(ids.tolist()), fits=fits)
        if ctx is None:
            return file_ctx
        return (*self._encode_context(ctx), ctx)

    def _windows(self, n: int, ctx: tuple[list[int], list[int], Any]) -> list[tuple[int, int]]:
        """Token ranges of the windows of an n-token file behind its context `ctx`: near-equal,
        each fitting one sequence with the context, the FIM sentinels, BOS and EOS."""
        pre, head, _ = ctx
        extra = len(self.bos) + len(pre) + len(head) + 1 + (self.fim.n_added if self.rate > 0
                                                             else 0)
        room = self.seq_length - extra if self.seq_length else 0
        if room < 8 or n <= room:  # no sequence length known, or no room left beside the context
            return [(0, n)]
        k = -(-n // room)
        bounds = np.linspace(0, n, k + 1).round().astype(int).tolist()
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def _char_fim(self, text: str, rng: np.random.Generator,
                  ctx: tuple[list[int], list[int], Any]
                  ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """Character-level FIM of one text (fim.split=char, or line: editor-shaped spans), or
        None when the draw says no."""
        split = F.split_lines if self.cfg.split == "line" else F.split_chars
        parts = split(text, rng, self.rate)
        if parts is None:
            return None
        spm = bool(rng.binomial(1, self.cfg.spm_rate))
        ids, mask = F.encode_fim(self.tok, self.fim, *parts, spm=spm,
                                 middle_loss_only=self.cfg.middle_loss_only, repo=ctx[2])
        return self._finish(np.asarray(ids, np.int64), np.asarray(mask, bool), ctx)

    def _piece(self, ids: np.ndarray, text: str | None, rng: np.random.Generator,
               ctx: tuple[list[int], list[int], Any]) -> tuple[np.ndarray, np.ndarray, int]:
        """One document or window: FIM as configured, behind its context, BOS/EOS added."""
        pre, head, _ = ctx
        if self.doc_level and self.cfg.split != "token":
            piece = self._char_fim(self.tok.decode(ids.tolist()) if text is None else text,
                                   rng, ctx)
            if piece is not None:
                return piece
            # (the draw said no FIM: the tokens as they are; the draw is the same one)
        if self.doc_level and self.cfg.split == "token":
            ids, mask = F.permute(ids, rng, self.fim, self.rate, self.cfg.spm_rate,
                                  self.cfg.truncate_or_pad, self.cfg.middle_loss_only, pre,
                                  head)
        elif pre or head:
            ids, mask = F.with_context(ids, pre, head)
        else:
            mask = np.ones(len(ids), dtype=bool)
        return self._finish(ids, mask, ctx)

    def _finish(self, ids: np.ndarray, mask: np.ndarray,
                ctx: tuple[list[int], list[int], Any]) -> tuple[np.ndarray, np.ndarray, int]:
        """BOS + ids + EOS, and the lead: the context in front of the file's own tokens (the
        preamble; then the FIM prefix sentinel and, in PSM, the path head; or, unpermuted,
        the head)."""
        nb, (pre, head, repo) = len(self.bos), ctx
        lead = 0
        if repo is not None:
            at = nb + len(pre)
            lead = at + len(head)
            if self.fim is not None and len(ids) > len(pre) and ids[len(pre)] == \
                    self.fim.prefix_id:  # FIM: [P] head prefix... (PSM) or [P][S]... (SPM)
                psm = head and ids[len(pre) + 1:len(pre) + 1 + len(head)].tolist() == head
                lead = at + 1 + (len(head) if psm else 0)
        return (np.concatenate([self.bos, ids, self.eos]),
                np.concatenate([np.ones(nb, bool), mask, [True]]), lead)

    def context_fim(self, seq: Sequence, epoch: int) -> Sequence:
        """Context-level FIM: permute each document segment of a packed sequence in place,
        keeping its length (truncate_or_pad), so positions and boundaries stay valid."""
        ids, labels = seq.input_ids.copy(), seq.labels.copy()
        bounds = [s[0] for s in seq.segments] + [len(ids)]
        for (start, key, offset), end in zip(seq.segments, bounds[1:], strict=True):
            if key is None:  # padding
                continue
            stop = end - 1 if ids[end - 1] == self.eos[0] else end  # keep EOS last
            if stop - start < 4:
                continue
            rng = self.rng_for(epoch, int(key), int(offset), 7)
            new, mask = F.permute(ids[start:stop], rng, self.fim, self.rate, self.cfg.spm_rate,
                                  True, self.cfg.middle_loss_only)
            if len(new) != stop - start:  # truncate_or_pad keeps the length by contract
                raise AssertionError("context FIM changed the segment length")
            ids[start:stop] = new
            keep = labels[start:stop] != IGNORE_INDEX
            labels[start:stop] = np.where(mask & keep, new, IGNORE_INDEX)
        return Sequence(ids, labels, seq.position_ids, seq.pending, seq.segments)


# --------------------------------------------------------------------------- the stream


def _reader() -> tuple[int, int]:
    """(this DataLoader worker, number of workers); (0, 1) in the main process."""
    try:
        from torch.utils.data import get_worker_info  # torch: optional (prepare-only installs)
    except ImportError:  # pragma: no cover
        return 0, 1
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes): torch.distributed's when a process group is
    up (the truth, however it was started), else torchrun's RANK / WORLD_SIZE, else (0, 1).
    The one answer the stream (which share of the data to read) and the trainer use."""
    try:
        import torch.distributed as dist  # torch: optional (prepare-only installs)

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class TrainingStream(_Base):
    """Packed training (infinite, shuffled) or eval (finite, in order, last sequence padded)
    sequences from the parquet files of one split.

    Yields dicts of int64 tensors: `input_ids`, `labels` and (packed mode) `position_ids`,
    each of shape (seq_length,).
    """

    def __init__(self, files: list[str], column: str, tokenizer, fim_tokens,
                 data_cfg: DataConfig, fim_cfg: FimConfig, seed: int = 0, train: bool = True,
                 fim_rate: float | None = None, rank: int | None = None,
                 world_size: int | None = None, context=None, repo_tokens=None):
        self.files, self.column = files, column
        self.data_cfg, self.fim_cfg = data_cfg, fim_cfg
        self.seed, self.train = seed, train
        self.encoder = Encoder(tokenizer, fim_tokens, fim_cfg, seed, fim_rate, context,
                               repo_tokens, data_cfg.seq_length)
        self.units = list_units(files, column)
        self.num_docs = sum(u.rows for u in self.units)
        if not self.num_docs:
            raise CodetuneError(f"the {'training' if train else 'eval'} data has no documents "
                                f"({', '.join(files) or 'no files'})")
        r, w = rank_and_world()
        self.rank = r if rank is None else rank
        self.world_size = w if world_size is None else world_size
        self._state: dict[str, Any] | None = None  # loaded, to resume from
        self._live: dict[str, Any] | None = None  # after the last yielded sequence
        self.cross_doc_share = 0.0

    # -- resume protocol (torchdata StatefulDataLoader calls these inside each worker)
    def state_dict(self) -> dict[str, Any]:
        worker, workers = _reader()
        if self._live is not None:
            return dict(self._live)
        if self._state is not None:
            return dict(self._state)
        return self._initial(self.rank * workers + worker, self.world_size * workers)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state = dict(state)

    @staticmethod
    def _initial(reader: int, readers: int) -> dict[str, Any]:
        return {"epoch": 0, "next": reader, "pending": None, "reader": reader,
                "readers": readers}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch  # heavy: torch (optional)

        for seq in self.sequences():
            item = {"input_ids": torch.from_numpy(seq.input_ids),
                    "labels": torch.from_numpy(seq.labels)}
            if seq.position_ids is not None:
                item["position_ids"] = torch.from_numpy(seq.position_ids)
            yield item

    def sequences(self) -> Iterator[Sequence]:
        """The numpy sequences (what `__iter__` wraps in tensors)."""
        worker, workers = _reader()
        reader, readers = self.rank * workers + worker, self.world_size * workers
        state = dict(self._state) if self._state is not None else self._initial(reader, readers)
        if (state["reader"], state["readers"]) != (reader, readers):
            raise CodetuneError(
                f"this stream position was saved by reader {state['reader']} of "
                f"{state['readers']} (ranks x DataLoader workers) but is loaded by reader "
                f"{reader} of {readers}; resume with the same number of processes and workers")
        cfg = self.data_cfg
        packer = Packer(cfg.seq_length, cfg.packing)
        with_meta = self.encoder.context is not None
        cache = TextCache(self.units, self.column, meta=with_meta)

        def metas(docs: list[tuple[int, int]]) -> list[tuple[str, str]] | None:
            return [cache.meta_of(*d) for d in docs] if with_meta else None
        epoch, pos = state["epoch"], state["next"]
        order = EpochOrder(self.units, self.seed, epoch, cfg.shuffle_buffer, self.train)

        def emit(seqs: list[Sequence], next_pos: int) -> Iterator[Sequence]:
            for seq in seqs:
                if self.encoder.ctx_level:
                    seq = self.encoder.context_fim(seq, epoch)
                self._live = {"epoch": epoch, "next": next_pos, "pending": seq.pending,
                              "reader": reader, "readers": readers}
                self.cross_doc_share = packer.cross_doc_share
                yield seq

        def add(p: int, pieces, first: int = 0, offset: int = 0) -> Iterator[Sequence]:
            for w in range(first, len(pieces)):  # key: p, or (p, window) for a cut file
                ids, mask, lead = pieces[w]
                key = p if len(pieces) == 1 else (p, w)
                yield from emit(packer.add(ids, mask, key=key, offset=offset if w == first
                                           else 0, lead=lead), p + readers)

        if state["pending"] is not None:  # re-create the packer's leftover, then go on
            key, offset = state["pending"]
            p, w = (key, 0) if isinstance(key, int) else (int(key[0]), int(key[1]))
            doc = order.doc(p)
            pieces, = self.encoder.encode([cache.get(*doc)], [(epoch, p)], metas([doc]))
            yield from add(p, pieces, w, offset)
        tokens_at_epoch_start = -1  # the first epoch may start mid-way (resume)
        while True:
            while pos < order.total:
                batch = list(range(pos, min(order.total, pos + readers * cfg.tokenize_batch),
                                   readers))
                docs = [order.doc(p) for p in batch]
                texts = [cache.get(*d) for d in docs]
                encoded = self.encoder.encode(texts, [(epoch, p) for p in batch], metas(docs))
                for p, pieces in zip(batch, encoded, strict=True):
                    yield from add(p, pieces)
                pos = batch[-1] + readers
            if not self.train:
                last = packer.flush(self.encoder.tok.pad_token_id
                                    if self.encoder.tok.pad_token_id is not None
                                    else int(self.encoder.eos[0]))
                yield from emit([last] if last is not None else [], pos)
                return
            if packer.tokens_added == tokens_at_epoch_start:
                raise CodetuneError("the training data produced no tokens for this reader; "
                                    "is the dataset empty, or smaller than the number of "
                                    "ranks x DataLoader workers?")
            tokens_at_epoch_start = packer.tokens_added
            # Next epoch: the leftover carries over, position restarts at this reader's slot.
            epoch += 1
            pos = reader
            order = EpochOrder(self.units, self.seed, epoch, cfg.shuffle_buffer, self.train)


def resolve_fim(tokenizer, fim_cfg: FimConfig):
    """The FIM tokens for training, or None when FIM is off; errors name the remedy."""
    if fim_cfg.rate == 0:
        return None
    try:
        return F.detect_fim(tokenizer, fim_cfg.format)
    except CodetuneError:
        if not fim_cfg.add_tokens:
            raise
    F.add_fim_tokens(tokenizer)
    return F.detect_fim(tokenizer, "starcoder")


def make_stream(cfg, tokenizer, split: str, seed: int = 0, fim_rate: float | None = None,
                fim_tokens=None, context=None, **kw) -> TrainingStream:
    """The stream of `split` of `cfg.data.dataset` (train: infinite and shuffled).

    `context(repo_id, path, text) -> RepoContext | None` adds repository context to every
    document (data.context=repo; the trainer builds it on the dataset's index)."""
    if cfg.data.dataset is None:
        raise CodetuneError("no dataset given; pass one (a `codetune prepare` folder) or set "
                            "data.dataset")
    files, column = store.resolve_files(cfg.data.dataset, split)
    if fim_tokens is None and (cfg.fim.rate if fim_rate is None else fim_rate) > 0:
        fim_tokens = resolve_fim(tokenizer, cfg.fim)
    repo_tokens = fim_tokens
    if context is not None and repo_tokens is None:  # the repo layout even without FIM
        try:
            repo_tokens = F.detect_fim(tokenizer, cfg.fim.format)
        except CodetuneError:
            repo_tokens = None  # no FIM tokens at all: the path-comment layout
    if context is not None and column is None:
        raise CodetuneError("data.context=repo needs a dataset written by `codetune prepare` "
                            "(with repo_id and path columns and an index)")
    return TrainingStream(files, column or cfg.data.text_column, tokenizer, fim_tokens,
                          cfg.data, cfg.fim, seed=seed, train=split == "train",
                          fim_rate=fim_rate, context=context, repo_tokens=repo_tokens, **kw)


def preview(cfg, tokenizer, split: str = "train", n: int = 2, context=None) -> str:
    """Human-readable view of the first `n` sequences: what `codetune preview` prints
    (`context`: as for `make_stream`, to show the repository layout)."""
    stream = make_stream(cfg, tokenizer, split, context=context)
    seqs = list(itertools.islice(stream.sequences(), max(n, 20)))
    fim = stream.encoder.fim
    lines = []
    if fim is not None:
        lines.append(f"FIM format: {fim.family} (rate {stream.encoder.rate}, SPM rate "
                     f"{cfg.fim.spm_rate}, {cfg.fim.level} level, {cfg.fim.split} split)")
        ids = np.concatenate([s.input_ids for s in seqs])
        lines.append(f"FIM examples in the first {len(seqs)} sequences: "
                     f"{int((ids == fim.middle_id).sum())}")
    else:
        lines.append("FIM: off (fim.rate=0)")
    if context is not None:
        ids = np.concatenate([s.input_ids for s in seqs])
        labels = np.concatenate([s.labels for s in seqs])
        masked = int(((labels == IGNORE_INDEX) & (ids != (stream.encoder.tok.pad_token_id
                                                          or -1))).sum())
        lines.append(f"repository context: up to {cfg.data.context_tokens} tokens a file, from "
                     f"the dataset's index; {masked / max(len(ids), 1):.1%} of the tokens are "
                     "context or document starts (no loss)")
    lines.append(f"{len(seqs) * cfg.data.seq_length:,} tokens; "
                 f"{stream.cross_doc_share:.1%} of them would attend across a document "
                 f"boundary without per-document positions (packing={cfg.data.packing})")
    for i, seq in enumerate(seqs[:n]):
        trained = int((seq.labels != IGNORE_INDEX).sum())
        lines.append(f"\n===== sequence {i} ({len(seq.segments)} segments, {trained} tokens "
                     "with loss) =====")
        lines.append(tokenizer.decode(seq.input_ids.tolist(), skip_special_tokens=False))
    return "\n".join(lines)
