"""Benchmark the training stream against the reference notebook's ConstantLengthDataset + permute.

    python bench/pipeline_bench.py [--sequences 600] [--seq-length 2048]

Same corpus (this interpreter's standard library, prepared by `codetune prepare`), same
tokenizer (a 16k byte-level BPE with the StarCoder FIM tokens, trained here on part of that
corpus, since the Hub is not reachable), same settings (FIM rate 0.5, SPM rate 0.5,
seq_length 2048, shuffle buffer 5000), same run. Prints tokens/s of finished training
sequences for both in one process and the ratio, then codetune's stream under a DataLoader
with 1 and 2 workers (scaling). Target (issue 3): >= 1.5x the reference notebook in one process. Then the
stream in repository mode (data.context=repo: each file behind up to 512 tokens of snippets of
other files, from the index `prepare` builds; issue 10's target: still >= 1.5x the reference notebook).

Tokenizer threads are off (TOKENIZERS_PARALLELISM=false, which DataLoader workers get anyway
after fork), so every figure is one process on one core and worker scaling is visible.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import random
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, IterableDataset  # noqa: E402

# ----------------------------------------------------------------------------- the reference notebook
# A faithful copy of the reference notebook's data code, except that the FIM token ids are looked
# up by name: the reference notebook's slice of the tokenizer's special-token list is wrong for most
# tokenizers, and codetune must not contain it.


def seed_permute(sample, np_rng, suffix_tok_id, prefix_tok_id, middle_tok_id, pad_tok_id,
                 fim_rate=0.5, fim_spm_rate=0.5, truncate_or_pad=False):
    if np_rng.binomial(1, fim_rate):
        boundaries = list(np_rng.randint(low=0, high=len(sample) + 1, size=2))
        boundaries.sort()
        prefix = np.array(sample[: boundaries[0]], dtype=np.int64)
        middle = np.array(sample[boundaries[0]: boundaries[1]], dtype=np.int64)
        suffix = np.array(sample[boundaries[1]:], dtype=np.int64)
        if truncate_or_pad:
            new_length = suffix.shape[0] + prefix.shape[0] + middle.shape[0] + 3
            diff = new_length - len(sample)
            if diff > 0:
                if suffix.shape[0] <= diff:
                    return sample, np_rng
                suffix = suffix[: suffix.shape[0] - diff]
            elif diff < 0:
                suffix = np.concatenate([suffix, np.full((-1 * diff), pad_tok_id)])
        if np_rng.binomial(1, fim_spm_rate):
            new_sample = np.concatenate([[prefix_tok_id, suffix_tok_id], suffix,
                                         [middle_tok_id], prefix, middle])
        else:
            new_sample = np.concatenate([[prefix_tok_id], prefix, [suffix_tok_id], suffix,
                                         [middle_tok_id], middle])
    else:
        new_sample = sample
    return list(new_sample), np_rng


@functools.cache
def seed_fim_ids(tokenizer):
    v = tokenizer.get_vocab()
    return v["<fim_suffix>"], v["<fim_prefix>"], v["<fim_middle>"], v["<fim_pad>"]


class SeedConstantLengthDataset(IterableDataset):
    def __init__(self, tokenizer, dataset, infinite=False, seq_length=1024,
                 num_of_sequences=1024, chars_per_token=3.6, content_field="content",
                 fim_rate=0.5, fim_spm_rate=0.5, seed=0):
        self.tokenizer = tokenizer
        self.concat_token_id = tokenizer.eos_token_id
        self.dataset = dataset
        self.seq_length = seq_length
        self.infinite = infinite
        self.current_size = 0
        self.max_buffer_size = seq_length * chars_per_token * num_of_sequences
        self.content_field = content_field
        self.fim_rate = fim_rate
        self.fim_spm_rate = fim_spm_rate
        self.seed = seed
        (self.suffix_tok_id, self.prefix_tok_id, self.middle_tok_id,
         self.pad_tok_id) = seed_fim_ids(self.tokenizer)
        if not self.suffix_tok_id and self.fim_rate > 0:
            self.fim_rate = 0

    def __iter__(self):
        iterator = iter(self.dataset)
        more_examples = True
        np_rng = np.random.RandomState(seed=self.seed)
        while more_examples:
            buffer, buffer_len = [], 0
            while True:
                if buffer_len >= self.max_buffer_size:
                    break
                try:
                    buffer.append(next(iterator)[self.content_field])
                    buffer_len += len(buffer[-1])
                except StopIteration:
                    if self.infinite:
                        iterator = iter(self.dataset)
                    else:
                        more_examples = False
                        break
            tokenized_inputs = self.tokenizer(buffer, truncation=False)["input_ids"]
            all_token_ids = []
            for tokenized_input in tokenized_inputs:
                if self.fim_rate > 0:
                    tokenized_input, np_rng = seed_permute(
                        tokenized_input, np_rng, self.suffix_tok_id, self.prefix_tok_id,
                        self.middle_tok_id, self.pad_tok_id, fim_rate=self.fim_rate,
                        fim_spm_rate=self.fim_spm_rate, truncate_or_pad=False)
                all_token_ids.extend(tokenized_input + [self.concat_token_id])
            examples = []
            for i in range(0, len(all_token_ids), self.seq_length):
                input_ids = all_token_ids[i: i + self.seq_length]
                if len(input_ids) == self.seq_length:
                    examples.append(input_ids)
            random.shuffle(examples)
            for example in examples:
                self.current_size += 1
                yield {"input_ids": torch.LongTensor(example), "labels": torch.LongTensor(example)}


# ----------------------------------------------------------------------------- setup


def build_corpus(tmp: Path) -> Path:
    from codetune.config import PrepareConfig
    from codetune.context import index_dataset
    from codetune.data.prepare import prepare

    out = tmp / "stdlib"
    prepare([sysconfig.get_paths()["stdlib"]], out, PrepareConfig(workers=os.cpu_count() or 1),
            progress=False, context_index=index_dataset)
    return out


def build_tokenizer(dataset: Path, tmp: Path):
    """A 16k byte-level BPE with the StarCoder special tokens, trained on ~6 MB of the corpus."""
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from codetune.data.store import resolve_files

    files, _ = resolve_files(dataset, "train")
    texts = pq.read_table(files[0], columns=["content"])["content"].to_pylist()[:600]
    specials = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
                "<file_sep>", "<repo_name>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=16384, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=specials[0], bos_token=specials[0],
                            unk_token=specials[0], extra_special_tokens=specials[1:]
                            ).save_pretrained(str(tmp / "tok"))
    return AutoTokenizer.from_pretrained(str(tmp / "tok"))


def codetune_stream(dataset: Path, tok, seq_length: int, repo: bool = False):
    import dataclasses

    from codetune import config
    from codetune.config import DataConfig, FimConfig
    from codetune.data.store import resolve_files
    from codetune.tokens.fim import detect_fim
    from codetune.tokens.stream import TrainingStream

    files, col = resolve_files(dataset, "train")
    data = dataclasses.replace(DataConfig(), seq_length=seq_length)
    context = None
    if repo:
        from codetune.train.trainer import context_providers

        cfg = config.load(None, [f"data.dataset={dataset}", "data.context=repo",
                                 f"data.seq_length={seq_length}"])
        data, context = cfg.data, context_providers(cfg, tok)[0]
    return TrainingStream(files, col, tok, detect_fim(tok), data, FimConfig(), seed=0,
                          context=context)


def rate(iterable, n: int, seq_length: int, per_item: int = 1) -> tuple[float, float]:
    """(tokens/s, seconds) for n sequences (the first item's latency included, as a trainer
    waiting for its first batch would see it)."""
    t = time.perf_counter()
    count = 0
    for item in itertools.islice(iterable, n // per_item):
        count += item["input_ids"].shape[0] if per_item > 1 else 1
    dt = time.perf_counter() - t
    return count * seq_length / dt, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=3000)
    ap.add_argument("--seq-length", type=int, default=2048)
    args = ap.parse_args()
    n, L = args.sequences, args.seq_length
    from datasets import load_dataset

    from codetune.data.store import resolve_files

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        dataset = build_corpus(tmp)
        tok = build_tokenizer(dataset, tmp)
        files, _ = resolve_files(dataset, "train")
        print(f"corpus: stdlib train split, {len(files)} shard(s); tokenizer: 16k BPE; "
              f"{n} sequences of {L}; python {sys.version.split()[0]}, {os.cpu_count()} cores")

        hub_like = load_dataset("parquet", data_files=files, split="train", streaming=True)
        seed_ds = SeedConstantLengthDataset(tok, hub_like.shuffle(buffer_size=5000, seed=0),
                                            infinite=True, seq_length=L, fim_rate=0.5,
                                            fim_spm_rate=0.5, seed=0)
        seed_tps, seed_s = rate(iter(seed_ds), n, L)
        print(f"seed ConstantLengthDataset + permute : {seed_tps:10,.0f} tokens/s "
              f"({seed_s:.1f} s)")
        ours_tps, ours_s = rate(iter(codetune_stream(dataset, tok, L)), n, L)
        print(f"codetune TrainingStream (1 process)     : {ours_tps:10,.0f} tokens/s "
              f"({ours_s:.1f} s)  -> {ours_tps / seed_tps:.2f}x the reference notebook (target >= 1.5x)")

        repo_tps, repo_s = rate(iter(codetune_stream(dataset, tok, L, repo=True)), n, L)
        print(f"codetune TrainingStream, repo context   : {repo_tps:10,.0f} tokens/s "
              f"({repo_s:.1f} s)  -> {repo_tps / seed_tps:.2f}x the reference notebook (target >= 1.5x), "
              f"{repo_tps / ours_tps:.2f}x file mode")

        results = {}
        for workers in (1, 2):
            dl = DataLoader(codetune_stream(dataset, tok, L), batch_size=8, num_workers=workers)
            results[workers], secs = rate(iter(dl), n, L, per_item=8)
            print(f"codetune TrainingStream, {workers} DataLoader worker(s): "
                  f"{results[workers]:10,.0f} tokens/s ({secs:.1f} s)")
        print(f"scaling 1 -> 2 workers: {results[2] / results[1]:.2f}x (ideal 2x; the "
              "DataLoader's consumer shares the same 2 cores)")
        # The stream alone, as 2 data-parallel ranks in 2 processes with no consumer.
        import multiprocessing as mp

        global _RANK_ARGS
        _RANK_ARGS = (dataset, tok, L, n)
        t = time.perf_counter()
        with mp.get_context("fork").Pool(2) as pool:
            pool.map(_rank_run, [0, 1])
        two = n * L / (time.perf_counter() - t)
        print(f"codetune TrainingStream, 2 ranks x 1 process, no consumer: {two:10,.0f} tokens/s "
              f"-> {two / ours_tps:.2f}x one process")


_RANK_ARGS: tuple = ()


def _rank_run(rank: int) -> None:
    dataset, tok, L, n = _RANK_ARGS
    s = codetune_stream(dataset, tok, L)
    s.rank, s.world_size = rank, 2
    for _ in itertools.islice(s.sequences(), n // 2):
        pass


if __name__ == "__main__":
    main()
