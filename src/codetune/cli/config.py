"""Subcommand: config (every config key with its default and meaning)."""

from __future__ import annotations

import argparse

from codetune import config
from codetune.cli.common import build_config, config_args


def add_config(sub) -> None:
    p = sub.add_parser("config", help="print every config key with its default and meaning")
    config_args(p)
    p.set_defaults(func=_run_config)


def _run_config(args: argparse.Namespace) -> int:
    print(config.describe(build_config(args)))
    return 0
