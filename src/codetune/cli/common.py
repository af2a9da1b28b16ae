"""What several commands share: the config flags.

Every command that builds a config takes it the same way: `-c YAML` (a file of sections),
`-s section.key=value` (repeatable), and for `train` also bare `section.key=value` words. A
flag that stands for a config key (`--valid-fraction` is `prepare.valid_fraction`) takes its
help and default from the config field (`config_flag`): defaults are written once, in
config.py, and `codetune config` prints them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing


def config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="YAML", help="a YAML file with config sections")
    p.add_argument("-s", "--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. -s prepare.max_line_length=2000 "
                        "(see `codetune config`)")


def file_items(path: str | None) -> list[str]:
    """A YAML config file as `section.key=value` items (for commands that take overrides)."""
    if path is None:
        return []
    from codetune import config

    cfg = config.load(path)  # validates the file: unknown keys name themselves here
    base = config.flatten(config.RunConfig())
    return [f"{k}={json.dumps(v)}" for k, v in config.flatten(cfg).items() if base[k] != v]


def config_flag(p: argparse.ArgumentParser, flag: str, key: str, **kw) -> None:
    """Add `flag`, which sets config key `key` ("section.name"); help and default come from
    the config field."""
    from codetune.config import RunConfig

    section, name = key.split(".")
    cls = type(getattr(RunConfig(), section))
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = getattr(cls(), name)
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) is typing.Literal and "choices" not in kw:
        kw["choices"] = list(typing.get_args(hint))
    shown = "none" if default is None else default
    p.add_argument(flag, help=f"{field.metadata.get('help', '')} (default: {shown}; "
                              f"config key {key})", **kw)


def build_config(args: argparse.Namespace, flag_overrides: dict[str, object]):
    from codetune import config

    # Flags are overrides too, applied after -s so an explicit flag wins.
    items = list(args.set)
    for key, value in flag_overrides.items():
        if value is not None:
            items.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return config.load(args.config, items)
