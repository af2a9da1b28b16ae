"""Subcommand: recipes (the shipped training recipes)."""

from __future__ import annotations

import argparse

from codetune import recipes


def add_recipes(sub) -> None:
    p = sub.add_parser("recipes", help="list the shipped training recipes (model, method, "
                                       "memory, the command)")
    p.add_argument("--path", metavar="NAME", help="print the file of recipe NAME (for "
                                                 "accelerate's --config_file, or to copy)")
    p.set_defaults(func=_run_recipes)


def _run_recipes(args: argparse.Namespace) -> int:
    if args.path:
        print(recipes.resolve(args.path))
        return 0
    from rich.console import Console  # heavy: rich, ~70 ms
    from rich.table import Table  # heavy: rich

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
