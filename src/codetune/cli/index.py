"""Subcommand: index (the repository context index of a working tree)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codetune import outputs
from codetune.cli.common import build_config, config_args
from codetune.errors import CodetuneError


def add_index(sub) -> None:
    p = sub.add_parser(
        "index", help="index a working tree for repository context (incremental)",
        description="Build or update the repository context index of a working tree: code "
                    "chunks with BM25 and Python import resolution, for prompts that show "
                    "the model other files of the repository. Running it again re-reads only "
                    "files whose content changed. `codetune prepare` builds the index of a "
                    "dataset's train split itself (DATASET/context).")
    p.add_argument("path", metavar="PATH", help="the working tree (a folder; git's tracked "
                                                "files when it is a git work tree)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="index folder (default: PATH/.codetune/index, kept out of git and "
                        "out of `codetune prepare PATH` by a .gitignore)")
    p.add_argument("--neighbours", action="store_true",
                   help="also precompute each file's neighbours (what training uses)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an index that OUT holds for another working tree")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    config_args(p)
    p.set_defaults(func=_run_index)


def _run_index(args: argparse.Namespace) -> int:
    from codetune.context import RepoIndex, index_tree  # heavy: numpy
    from codetune.context.build import DEFAULT_DIR, describe  # heavy: numpy

    cfg = build_config(args)  # the prepare.* filters decide which files are indexed
    root = Path(args.path).absolute()
    out = Path(args.output).absolute() if args.output else root / DEFAULT_DIR
    previous = None
    if outputs.kind_of(out) == "index":
        try:
            previous = RepoIndex.open(out)
        except CodetuneError as e:  # damaged: it is only derived data, so build it afresh
            print(f"note: {e}; rebuilding it from scratch", file=sys.stderr)
        if previous is not None and (previous.root is None or
                                     previous.root.resolve() != root.resolve()):
            if not args.overwrite:
                raise CodetuneError(
                    f"{out} holds the index of {previous.root or 'a dataset'}, not of {root}; "
                    "pass --overwrite to replace it, or choose another -o folder")
            previous = None
    index = index_tree(root, args.output, previous=previous, neighbours=args.neighbours,
                       cfg=cfg.prepare)
    if not args.quiet:
        print(f"{index.path}: {describe(index)}")
    return 0
