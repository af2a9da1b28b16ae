"""What several commands share: the config flags.

Every command that builds a config takes it the same way: `-c YAML` (a file of sections),
`-s section.key=value` (repeatable), and for `train` also bare `section.key=value` words. A
flag that stands for a config key (`--valid-fraction` is `prepare.valid_fraction`) is added by
`config_flag`, which takes its help, default, type and choices from the config field and records
the key; `flag_items` turns the flags given into overrides without naming a key again. Defaults
are written once, in config.py, and `codetune config` prints them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any

from codetune import config
from codetune.config import RunConfig, strip_optional

CONFIG_KEYS = "config_keys"
"""The parsed namespace's {dest: "section.key"} of the flags added by `config_flag`."""


def config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="YAML", help="a YAML file with config sections")
    p.add_argument("-s", "--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. -s prepare.max_line_length=2000 "
                        "(see `codetune config`)")


def file_items(path: str | None) -> list[str]:
    """A YAML config file as `section.key=value` items (for commands that take overrides)."""
    if path is None:
        return []

    cfg = config.load(path)  # validates the file: unknown keys name themselves here
    base = config.flatten(config.RunConfig())
    return [f"{k}={json.dumps(v)}" for k, v in config.flatten(cfg).items() if base[k] != v]


def choices(literal: Any) -> list[str]:
    """The values of a config `Literal`, as the `choices` of a flag that is no config key."""
    return list(typing.get_args(literal))


def config_flag(p: Any, flag: str, key: str, **kw: Any) -> None:
    """Add `flag` (to a parser or an argument group), which sets config key `key`
    ("section.name"), and record the key for `flag_items`. Help and default come from the
    config field, and so do `type` (int, float), `choices` (a Literal) and, for a bool,
    `store_true`. A `help` given here replaces the field's (then it states any default itself);
    `action="store_false"` makes a flag that turns a true default off. A flag left out is None,
    so the config's value (default, -c file or -s) stands."""
    section, name = key.split(".")
    cls = type(getattr(RunConfig(), section))
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = getattr(cls(), name)
    hint = strip_optional(typing.get_type_hints(cls)[name])
    if typing.get_origin(hint) is typing.Literal:
        kw.setdefault("choices", choices(hint))
    elif hint is bool:
        kw.setdefault("action", "store_true")
    elif hint in (int, float) and "action" not in kw:
        kw.setdefault("type", hint)
    if "help" in kw:
        kw["help"] = f"{kw['help']} (config key {key})"
    else:
        shown = "none" if default is None else default
        kw["help"] = f"{field.metadata.get('help', '')} (default: {shown}; config key {key})"
    action = p.add_argument(flag, default=None, **kw)
    keys = p.get_default(CONFIG_KEYS)  # a group shares its parser's defaults
    if keys is None:
        keys = {}
        p.set_defaults(**{CONFIG_KEYS: keys})
    keys[action.dest] = key


def flag_items(args: argparse.Namespace, overrides: dict[str, object] | None = None) -> list[str]:
    """The config flags given, and `overrides` (values that are no flag: a positional DATASET),
    as `section.key=value` items; a flag left out, or a None, is no item."""
    given: dict[str, object] = {key: getattr(args, dest)
                                for dest, key in getattr(args, CONFIG_KEYS, {}).items()}
    given.update(overrides or {})
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in given.items()
            if v is not None]


def build_config(args: argparse.Namespace, overrides: dict[str, object] | None = None,
                 defaults: dict[str, object] | None = None):
    """The validated config of a command: `defaults` ({"section.key": value} the command
    derives; lowest), then the -c file, -s overrides, and the flags (`flag_items`), which win
    over -s."""
    items = list(getattr(args, "set", None) or []) + flag_items(args, overrides)
    return config.load(getattr(args, "config", None), items, defaults=defaults)
