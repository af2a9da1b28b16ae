"""Subcommands: prepare, stats, preview."""

from __future__ import annotations

import argparse
import json
import sys

from codetune.cli.common import build_config, config_args, config_flag
from codetune.errors import CodetuneError

SOURCE_HELP = """\
SOURCE may be, in any mix:
  a folder               a git work tree uses the files git tracks; else .gitignore applies
  a git URL or bare repo https://host/org/repo.git, git@host:org/repo, file:///srv/repo.git;
                         URL#REF picks a branch, tag or commit; cloned shallow into a cache
  a Hub dataset          hf://datasets/OWNER/NAME (streamed; text column: --text-column)
  dataset files          data.parquet, rows.jsonl, 'dump/*.parquet' or dataset:PATH
"""


def add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare", help="repositories in, a clean deduplicated secret-free dataset out",
        description="Build a training dataset (parquet + manifest + report) from code.",
        epilog=SOURCE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="dataset folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset folder (only once the new one is complete)")
    config_flag(p, "--valid-fraction", "prepare.valid_fraction")
    config_flag(p, "--split-by", "prepare.split_by")
    config_flag(p, "--secrets", "prepare.secrets")
    config_flag(p, "--workers", "prepare.workers")
    config_flag(p, "--executor", "prepare.executor")
    config_flag(p, "--tasks", "prepare.tasks")
    config_flag(p, "--include", "prepare.include", action="append", metavar="GLOB",
                help="keep only matching paths (repeatable)")
    config_flag(p, "--exclude", "prepare.exclude", action="append", metavar="GLOB",
                help="drop matching paths (repeatable)")
    config_flag(p, "--text-column", "prepare.text_column")
    config_flag(p, "--repo-name", "prepare.repo_name")
    config_flag(p, "--near-dup-threshold", "prepare.near_dup_threshold")
    config_flag(p, "--no-near-dedup", "prepare.dedup_near", action="store_false",
                help="skip MinHash near-dedup")
    config_flag(p, "--notebook-markdown", "prepare.notebook_markdown")
    config_flag(p, "--submodules", "prepare.git_submodules")
    config_flag(p, "--seed", "prepare.seed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    config_args(p)
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from codetune.context import index_dataset  # heavy: numpy (codetune.context)
    from codetune.data.prepare import prepare  # heavy: numpy
    from codetune.data.report import print_summary  # heavy: rich, numpy

    cfg = build_config(args)
    summary = prepare(args.sources, args.output, cfg.prepare, overwrite=args.overwrite,
                      progress=not args.quiet and sys.stderr.isatty(),
                      context_index=index_dataset)
    if summary.jobs:  # --executor slurm: submitted (or, dry run, written), not yet run
        dry = cfg.prepare.slurm_dry_run
        print(("sbatch scripts written (not submitted):\n  " if dry else
               "submitted Slurm jobs: ") + ("\n  ".join if dry else " ".join)(summary.jobs))
        print(f"{args.output} appears when the final job ends; run the same command again "
              "to resume a run whose jobs failed")
    elif not args.quiet:
        print_summary(summary)
    return 0


def add_stats(sub) -> None:
    p = sub.add_parser("stats", help="files, bytes, languages and token estimates of a dataset")
    p.add_argument("dataset", metavar="DATASET", help="a folder written by `codetune prepare`")
    p.add_argument("--tokenizer", metavar="NAME_OR_PATH",
                   help="measure characters per token with this tokenizer (Hub id or folder)")
    p.add_argument("--sample", type=int, default=400,
                   help="files sampled for the token ratio (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=_run_stats)


def _run_stats(args: argparse.Namespace) -> int:
    from codetune.data.stats import dataset_stats, print_stats  # heavy: numpy
    from codetune.model.load import load_tokenizer  # lazy: ~10 ms of `codetune --help`

    if args.sample < 1:
        raise CodetuneError("--sample must be at least 1")
    tok = load_tokenizer(args.tokenizer, args.trust_remote_code) if args.tokenizer else None
    st = dataset_stats(args.dataset, tok, args.sample, args.seed)
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print_stats(st)
    return 0


def add_preview(sub) -> None:
    p = sub.add_parser(
        "preview", help="show training sequences as the model will see them (FIM, packing)",
        description="Decode a few packed training sequences with their FIM sentinels visible, "
                    "and report the FIM format, rates and the share of tokens that would "
                    "attend across documents without per-document positions.")
    p.add_argument("dataset", metavar="DATASET", help="a folder written by `codetune prepare`")
    p.add_argument("--tokenizer", required=True, metavar="NAME_OR_PATH")
    p.add_argument("-n", "--sequences", type=int, default=2,
                   help="sequences to print (default: %(default)s)")
    p.add_argument("--split", default="train", choices=["train", "validation"])
    p.add_argument("--trust-remote-code", action="store_true")
    config_args(p)
    p.set_defaults(func=_run_preview)


def _run_preview(args: argparse.Namespace) -> int:
    from codetune.model.load import load_tokenizer  # lazy: ~10 ms of `codetune --help`
    from codetune.tokens.stream import preview  # heavy: torch

    cfg = build_config(args, {"data.dataset": args.dataset})
    tok = load_tokenizer(args.tokenizer, args.trust_remote_code)
    context = None
    if cfg.data.context == "repo":  # the layout training will see, from the dataset's index
        from codetune.train.trainer import context_providers  # lazy: ~15 ms of --help

        train_ctx, held_out_ctx = context_providers(cfg, tok)
        context = train_ctx if args.split == "train" else held_out_ctx
    print(preview(cfg, tok, args.split, args.sequences, context=context))
    return 0
