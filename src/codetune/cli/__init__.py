"""The `codetune` command: the one place that knows argparse.

`COMMANDS` is the table of subcommands; each entry adds its parser, whose `func` parses the
flags, builds the typed config and calls one library function. User errors (`CodetuneError`,
and an output folder that cannot be written) print one line without a traceback and exit with
status 2. No library module imports this package.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable

from codetune import __version__
from codetune.cli import (
    complete,
    config,
    data,
    demo,
    eval,
    export,
    index,
    merge,
    recipes,
    serve,
    train,
)
from codetune.errors import CodetuneError
from codetune.outputs import write_error

COMMANDS: list[Callable] = [
    data.add_prepare, index.add_index, data.add_stats, data.add_preview, train.add_train,
    eval.add_eval, merge.add_merge, export.add_export, complete.add_complete, serve.add_serve,
    serve.add_editor_config, recipes.add_recipes, config.add_config, demo.add_demo,
]


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

        print(f"error: {write_error(e, e.filename or 'the output folder')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing incomplete was left behind", file=sys.stderr)
        return 130
