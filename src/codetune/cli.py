"""The `codetune` command: a dispatch table of subcommands.

Each subcommand parses its flags, builds the typed config, and calls one library function.
User errors (`CodetuneError`) print one paragraph without a traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from codetune import __version__
from codetune.errors import CodetuneError

SOURCE_HELP = """\
SOURCE may be, in any mix:
  a folder               a git work tree uses the files git tracks; else .gitignore applies
  a git URL or bare repo https://host/org/repo.git, git@host:org/repo, file:///srv/repo.git;
                         URL#REF picks a branch, tag or commit; cloned shallow into a cache
  a Hub dataset          hf://datasets/OWNER/NAME (streamed; text column: --text-column)
  dataset files          data.parquet, rows.jsonl, 'dump/*.parquet' or dataset:PATH
"""


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="YAML", help="a YAML file with config sections")
    p.add_argument("-s", "--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. -s prepare.max_line_length=2000 "
                        "(see `codetune config`)")


def _build_config(args: argparse.Namespace, flag_overrides: dict[str, object]):
    from codetune import config

    # Flags are overrides too, applied after -s so an explicit flag wins.
    items = list(args.set)
    for key, value in flag_overrides.items():
        if value is not None:
            items.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return config.load(args.config, items)


# --------------------------------------------------------------------------- prepare


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare", help="repositories in, a clean deduplicated secret-free dataset out",
        description="Build a training dataset (parquet + manifest + report) from code.",
        epilog=SOURCE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="dataset folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset folder (only once the new one is complete)")
    p.add_argument("--valid-fraction", type=float, help="held-out share (default 0.05)")
    p.add_argument("--split-by", choices=["file", "repo"], help="hold out files or whole repos")
    p.add_argument("--secrets", choices=["redact", "drop-file", "off"],
                   help="redact credentials (default), drop files holding them, or do nothing")
    p.add_argument("--workers", type=int, help="scanning processes (default: one per core)")
    p.add_argument("--include", action="append", metavar="GLOB", help="keep only matching paths")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="drop matching paths")
    p.add_argument("--text-column", help="text column of dataset sources (default content)")
    p.add_argument("--near-dup-threshold", type=float, help="Jaccard threshold (default 0.7)")
    p.add_argument("--no-near-dedup", action="store_true", help="skip MinHash near-dedup")
    p.add_argument("--notebook-markdown", action="store_true",
                   help="keep notebook markdown cells as comments")
    p.add_argument("--submodules", action="store_true", help="follow git submodules")
    p.add_argument("--seed", type=int, help="seed of the held-out split (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    _config_args(p)
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from codetune.data.prepare import prepare
    from codetune.data.report import print_summary

    cfg = _build_config(args, {
        "prepare.valid_fraction": args.valid_fraction,
        "prepare.split_by": args.split_by,
        "prepare.secrets": args.secrets,
        "prepare.workers": args.workers,
        "prepare.include": args.include,
        "prepare.exclude": args.exclude,
        "prepare.text_column": args.text_column,
        "prepare.near_dup_threshold": args.near_dup_threshold,
        "prepare.dedup_near": False if args.no_near_dedup else None,
        "prepare.notebook_markdown": True if args.notebook_markdown else None,
        "prepare.git_submodules": True if args.submodules else None,
        "prepare.seed": args.seed,
    })
    summary = prepare(args.sources, args.output, cfg.prepare, overwrite=args.overwrite,
                      progress=not args.quiet and sys.stderr.isatty())
    if not args.quiet:
        print_summary(summary)
    return 0


# --------------------------------------------------------------------------- stats


def _add_stats(sub) -> None:
    p = sub.add_parser("stats", help="files, bytes, languages and token estimates of a dataset")
    p.add_argument("dataset", metavar="DATASET", help="a folder written by `codetune prepare`")
    p.add_argument("--tokenizer", metavar="NAME_OR_PATH",
                   help="measure characters per token with this tokenizer (Hub id or folder)")
    p.add_argument("--sample", type=int, default=400, help="files sampled for the token ratio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=_run_stats)


def _run_stats(args: argparse.Namespace) -> int:
    from codetune.data.stats import dataset_stats, load_tokenizer, print_stats

    if args.sample < 1:
        raise CodetuneError("--sample must be at least 1")
    tok = load_tokenizer(args.tokenizer, args.trust_remote_code) if args.tokenizer else None
    st = dataset_stats(args.dataset, tok, args.sample, args.seed)
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print_stats(st)
    return 0


# --------------------------------------------------------------------------- train


def _split_recipe(items: list[str]) -> tuple[str | None, list[str]]:
    """`[recipe.yaml] [section.key=value ...]` -> (recipe, overrides)."""
    recipe, overrides = None, []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif recipe is None and item.endswith((".yaml", ".yml")):
            recipe = item
        else:
            raise CodetuneError(f"unexpected argument {item!r}: give one recipe .yaml file and "
                                "section.key=value overrides, e.g. train.max_steps=10")
    return recipe, overrides


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="fine-tune a code model (QLoRA by default) on a prepared dataset",
        description="Fine-tune with Fill-in-the-Middle and packing. RECIPE is a YAML preset "
                    "(see recipes/); KEY=VALUE pairs override any config key.")
    p.add_argument("args", nargs="*", metavar="[RECIPE] [KEY=VALUE]")
    p.add_argument("--model", help="Hub id, local model folder or .gguf file")
    p.add_argument("--revision", help="Hub revision of the model")
    p.add_argument("--dataset", help="a folder written by `codetune prepare`")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last complete checkpoint in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--force", action="store_true",
                   help="resume even if the base model, LoRA shape or dataset changed")
    p.add_argument("--push-to-hub", action="store_true", help="push the adapter to the Hub")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from codetune import config
    from codetune.train import check_output, print_summary, resume_config, train

    if args.resume and args.overwrite:
        raise CodetuneError("--resume and --overwrite contradict each other; pick one")
    recipe, overrides = _split_recipe(args.args)
    flags = {"model.name": args.model, "model.revision": args.revision,
             "data.dataset": args.dataset,
             "train.push_to_hub": True if args.push_to_hub else None,
             "model.trust_remote_code": True if args.trust_remote_code else None}
    items = overrides + [f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                         for k, v in flags.items() if v is not None]
    if args.resume:
        check_output(Path(args.output).absolute(), resume=True, overwrite=False)
        if recipe is not None:
            raise CodetuneError(f"--resume continues with the run's own config.yaml; drop "
                                f"{recipe} and give only KEY=VALUE overrides")
        cfg = resume_config(args.output, items, force=args.force)
    else:
        cfg = config.load(recipe, items)
    result = train(cfg, args.output, resume=args.resume, overwrite=args.overwrite,
                   force=args.force, progress=not args.quiet)
    if int(os.environ.get("RANK", 0)) == 0 and not result.already_finished:
        print_summary(result)
    return 0


# --------------------------------------------------------------------------- eval, merge


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval", help="base vs fine-tuned on held-out files: infilling and bits per byte",
        description="Evaluate a run folder (its base model vs base + adapter) on the held-out "
                    "split of its dataset, or --model [--adapter] on --dataset.")
    p.add_argument("target", nargs="?", metavar="RUN_DIR",
                   help="a folder written by `codetune train`")
    p.add_argument("--model", help="evaluate this model instead of a run folder")
    p.add_argument("--adapter", help="a LoRA adapter folder to apply to --model")
    p.add_argument("--dataset", help="a `codetune prepare` folder (default: the run's)")
    p.add_argument("-o", "--output", help="report folder (default RUN_DIR/eval)")
    p.add_argument("--forgetting", metavar="JSONL",
                   help="a local FIM benchmark to check the model did not forget general code")
    p.add_argument("--quantization", choices=["auto", "none", "8bit", "4bit"],
                   help="how to load the weights (eval.quantization; auto: unquantized where "
                        "they fit, even for a 4-bit run)")
    p.add_argument("-q", "--quiet", action="store_true")
    _config_args(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from codetune.evaluate import evaluate, print_summary

    target = args.model or args.target
    if args.model and args.target:
        raise CodetuneError("give either a run folder or --model, not both")
    extra: list[str] = []
    if target is None:
        from codetune.mini import default_model, default_model_note, mini_eval_overrides

        if args.dataset is None:
            raise CodetuneError("give a run folder (codetune eval runs/x), or --model and "
                                "--dataset")
        target = default_model()
        print(default_model_note(), file=sys.stderr)
        extra = mini_eval_overrides()
    args.set = extra + list(args.set)
    cfg = _build_config(args, {"eval.forgetting": args.forgetting,
                               "eval.quantization": args.quantization})
    result = evaluate(target, cfg.eval, args.output, dataset=args.dataset,
                      adapter=args.adapter, progress=not args.quiet)
    print_summary(result)
    return 0


def _add_merge(sub) -> None:
    p = sub.add_parser("merge", help="fold a run's adapter into its base model (safetensors)")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    from codetune.export import merge

    r = merge(args.run, args.output, args.dtype, args.overwrite)
    print(f"merged into {r['out_dir']} ({r['dtype']}); logits match base + adapter within "
          f"{r['max_abs_logit_diff']:.2g} (tolerance {r['tolerance']}) on "
          f"{r['verified_inputs']} held-out inputs")
    return 0


# --------------------------------------------------------------------------- preview


def _add_preview(sub) -> None:
    p = sub.add_parser(
        "preview", help="show training sequences as the model will see them (FIM, packing)",
        description="Decode a few packed training sequences with their FIM sentinels visible, "
                    "and report the FIM format, rates and the share of tokens that would "
                    "attend across documents without per-document positions.")
    p.add_argument("dataset", metavar="DATASET", help="a folder written by `codetune prepare`")
    p.add_argument("--tokenizer", required=True, metavar="NAME_OR_PATH")
    p.add_argument("-n", "--sequences", type=int, default=2, help="sequences to print")
    p.add_argument("--split", default="train", choices=["train", "validation"])
    p.add_argument("--trust-remote-code", action="store_true")
    _config_args(p)
    p.set_defaults(func=_run_preview)


def _run_preview(args: argparse.Namespace) -> int:
    from codetune.data.stats import load_tokenizer
    from codetune.tokens.stream import preview

    cfg = _build_config(args, {"data.dataset": args.dataset})
    tok = load_tokenizer(args.tokenizer, args.trust_remote_code)
    print(preview(cfg, tok, args.split, args.sequences))
    return 0


# --------------------------------------------------------------------------- config


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print every config key with its default and meaning")
    _config_args(p)
    p.set_defaults(func=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    from codetune import config

    print(config.describe(_build_config(args, {})))
    return 0


# --------------------------------------------------------------------------- complete / serve


def _add_complete(sub) -> None:
    from codetune.complete import add_parser

    add_parser(sub)


def _add_serve(sub) -> None:  # serve and editor-config
    from codetune.serve import add_parser

    add_parser(sub)


def _add_demo(sub) -> None:
    from codetune.demo import add_parser

    add_parser(sub)


COMMANDS: list[Callable] = [_add_prepare, _add_stats, _add_preview, _add_train, _add_eval,
                             _add_merge, _add_complete, _add_serve, _add_config, _add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codetune",
        description="Fine-tune a code LLM on your own repositories and prove it helped.")
    parser.add_argument("--version", action="version", version=f"codetune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CodetuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # A folder that cannot be written, a full disk: the user's to fix, so one line, not a
        # traceback. The commands build outputs beside their final place, so nothing is half
        # written. Any other OSError is a bug and keeps its traceback.
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        from codetune.outputs import write_error

        print(f"error: {write_error(e, e.filename or 'the output folder')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing incomplete was left behind", file=sys.stderr)
        return 130
