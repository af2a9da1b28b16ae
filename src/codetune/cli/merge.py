"""Subcommand: merge."""

from __future__ import annotations

import argparse

from codetune.cli.common import choices
from codetune.config import WeightDtype


def add_merge(sub) -> None:
    p = sub.add_parser("merge", help="fold a run's adapter into its base model (safetensors)")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--dtype", default="bfloat16", choices=choices(WeightDtype))
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    from codetune.merge import merge  # lazy: infer and model.load, ~30 ms of `codetune --help`

    r = merge(args.run, args.output, args.dtype, args.overwrite)
    print(f"merged into {r['out_dir']} ({r['dtype']}); logits match base + adapter within "
          f"{r['max_abs_logit_diff']:.2g} (tolerance {r['tolerance']}) on "
          f"{r['verified_on']}")
    return 0
