"""Subcommand: demo."""

from __future__ import annotations

import argparse
import sys

from codetune.cli.common import config_args, file_items
from codetune.demo import DEFAULT_STEPS, run_demo, sample_path
from codetune.demo import __doc__ as DEMO_DOC


def add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="the whole loop on a small model in a few minutes, offline, on a CPU",
        description=DEMO_DOC.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", metavar="PATH",
                   help="project to fine-tune on (default: the current git repository, "
                        "else the bundled sample project)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help="LoRA steps (default: %(default)s)")
    p.add_argument("-o", "--output", default="codetune-demo", metavar="DIR",
                   help="where the dataset, run, report and chart go")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier demo folder (only once the new one is complete)")
    p.add_argument("--sample", action="store_true",
                   help="use the bundled sample project even inside a git repository")
    config_args(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    path = str(sample_path()) if args.sample else args.path
    run_demo(path, args.steps, args.output, overwrite=args.overwrite,
             overrides=file_items(args.config) + list(args.set),
             progress=not args.quiet and sys.stderr.isatty())
    return 0
