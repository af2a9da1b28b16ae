"""Subcommands: prepare, stats, preview, config."""

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
    config_flag(p, "--valid-fraction", "prepare.valid_fraction", type=float)
    config_flag(p, "--split-by", "prepare.split_by")
    config_flag(p, "--secrets", "prepare.secrets")
    config_flag(p, "--workers", "prepare.workers", type=int)
    config_flag(p, "--executor", "prepare.executor", choices=["local", "ray", "slurm"])
    config_flag(p, "--tasks", "prepare.tasks", type=int)
    p.add_argument("--include", action="append", metavar="GLOB", help="keep only matching paths")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="drop matching paths")
    config_flag(p, "--text-column", "prepare.text_column")
    config_flag(p, "--repo-name", "prepare.repo_name")
    config_flag(p, "--near-dup-threshold", "prepare.near_dup_threshold", type=float)
    p.add_argument("--no-near-dedup", action="store_true", help="skip MinHash near-dedup")
    p.add_argument("--notebook-markdown", action="store_true",
                   help="keep notebook markdown cells as comments")
    p.add_argument("--submodules", action="store_true", help="follow git submodules")
    config_flag(p, "--seed", "prepare.seed", type=int)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    config_args(p)
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from codetune.context import index_dataset
    from codetune.data.prepare import prepare
    from codetune.data.report import print_summary

    cfg = build_config(args, {
        "prepare.valid_fraction": args.valid_fraction,
        "prepare.split_by": args.split_by,
        "prepare.secrets": args.secrets,
        "prepare.workers": args.workers,
        "prepare.executor": args.executor,
        "prepare.tasks": args.tasks,
        "prepare.include": args.include,
        "prepare.exclude": args.exclude,
        "prepare.text_column": args.text_column,
        "prepare.repo_name": args.repo_name,
        "prepare.near_dup_threshold": args.near_dup_threshold,
        "prepare.dedup_near": False if args.no_near_dedup else None,
        "prepare.notebook_markdown": True if args.notebook_markdown else None,
        "prepare.git_submodules": True if args.submodules else None,
        "prepare.seed": args.seed,
    })
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
    from codetune.data.stats import dataset_stats, print_stats
    from codetune.model.load import load_tokenizer

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
    from codetune.model.load import load_tokenizer
    from codetune.tokens.stream import preview

    cfg = build_config(args, {"data.dataset": args.dataset})
    tok = load_tokenizer(args.tokenizer, args.trust_remote_code)
    context = None
    if cfg.data.context == "repo":  # the layout training will see, from the dataset's index
        from codetune.train.trainer import context_providers

        train_ctx, held_out_ctx = context_providers(cfg, tok)
        context = train_ctx if args.split == "train" else held_out_ctx
    print(preview(cfg, tok, args.split, args.sequences, context=context))
    return 0


def add_recipes(sub) -> None:
    p = sub.add_parser("recipes", help="list the shipped training recipes (model, method, "
                                       "memory, the command)")
    p.add_argument("--path", metavar="NAME", help="print the file of recipe NAME (for "
                                                 "accelerate's --config_file, or to copy)")
    p.set_defaults(func=_run_recipes)


def _run_recipes(args: argparse.Namespace) -> int:
    from codetune import recipes

    if args.path:
        print(recipes.resolve(args.path))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="codetune recipes", show_lines=False)
    table.add_column("recipe", no_wrap=True)
    for col in ("model", "method", "memory"):
        table.add_column(col, overflow="fold")
    found = recipes.available()
    for r in found:
        table.add_row(r.name, r.model, r.method, r.memory)
    Console().print(table)
    for r in found:
        print(r.command)
    print(f"(files in {recipes.recipes_dir()}; copy one to change it, or override keys: "
          "codetune train NAME ... train.max_steps=500)")
    return 0


def add_config(sub) -> None:
    p = sub.add_parser("config", help="print every config key with its default and meaning")
    config_args(p)
    p.set_defaults(func=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    from codetune import config

    print(config.describe(build_config(args, {})))
    return 0
