"""Subcommand: train."""

from __future__ import annotations

import argparse
from pathlib import Path

from codetune import config
from codetune.cli.common import config_args, config_flag, flag_items
from codetune.errors import CodetuneError
from codetune.recipes import resolve


def _split_recipe(items: list[str]) -> tuple[str | None, list[str]]:
    """`[RECIPE] [section.key=value ...]` -> (recipe file, overrides). RECIPE is a shipped
    recipe's name (`codetune recipes`) or a YAML file."""
    recipe, overrides = None, []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif recipe is None:
            recipe = str(resolve(item))
        else:
            raise CodetuneError(f"unexpected argument {item!r}: give one recipe (a name from "
                                "`codetune recipes`, or a YAML file) and section.key=value "
                                "overrides, e.g. train.max_steps=10")
    return recipe, overrides


def add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="fine-tune a code model (QLoRA by default) on a prepared dataset",
        description="Fine-tune with Fill-in-the-Middle and packing. RECIPE is a shipped "
                    "recipe's name (`codetune recipes`) or a YAML file; KEY=VALUE words and "
                    "-s KEY=VALUE override any config key (`codetune config`).")
    p.add_argument("args", nargs="*", metavar="[RECIPE] [KEY=VALUE]")
    config_flag(p, "--model", "model.name")
    config_flag(p, "--revision", "model.revision")
    config_flag(p, "--dataset", "data.dataset",
                help="a folder written by `codetune prepare` (with --resume: where the run's "
                     "dataset moved to)")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last complete checkpoint in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--force", action="store_true",
                   help="resume even if the base model, LoRA shape or dataset changed")
    config_flag(p, "--push-to-hub", "train.push_to_hub")
    config_flag(p, "--trust-remote-code", "model.trust_remote_code")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    config_args(p)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    # lazy: codetune.train is ~15 ms of `codetune --help`
    from codetune.train.rundir import check_output, resume_config
    from codetune.train.trainer import print_summary, train

    if args.resume and args.overwrite:
        raise CodetuneError("--resume and --overwrite contradict each other; pick one")
    if args.resume:  # "no run to resume" before anything else is looked at
        check_output(Path(args.output).absolute(), resume=True, overwrite=False)
    recipe, overrides = _split_recipe(args.args)
    if args.config is not None:
        if recipe is not None:
            raise CodetuneError(f"give the config once: a RECIPE ({recipe}) or -c "
                                f"{args.config}, not both")
        recipe = str(args.config)
    items = overrides + list(args.set) + flag_items(args)
    if args.resume:
        if recipe is not None:
            raise CodetuneError(f"--resume continues with the run's own config.yaml; drop "
                                f"{recipe} and give only KEY=VALUE overrides")
        cfg = resume_config(args.output, items, force=args.force)
    else:
        cfg = config.load(recipe, items)
    result = train(cfg, args.output, resume=args.resume, overwrite=args.overwrite,
                   force=args.force, progress=not args.quiet)
    from codetune.tokens.stream import rank_and_world  # heavy: torch

    if rank_and_world()[0] == 0 and not result.already_finished:
        print_summary(result)
    return 0
