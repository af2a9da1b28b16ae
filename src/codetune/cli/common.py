"""What several commands share: the config flags."""

from __future__ import annotations

import argparse
import json


def config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="YAML", help="a YAML file with config sections")
    p.add_argument("-s", "--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. -s prepare.max_line_length=2000 "
                        "(see `codetune config`)")


def build_config(args: argparse.Namespace, flag_overrides: dict[str, object]):
    from codetune import config

    # Flags are overrides too, applied after -s so an explicit flag wins.
    items = list(args.set)
    for key, value in flag_overrides.items():
        if value is not None:
            items.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return config.load(args.config, items)
