"""Subcommand: complete, and the TARGET flags it shares with serve."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from codetune.cli.common import build_config, choices, config_args, config_flag
from codetune.config import Dtype, Quantization
from codetune.errors import CodetuneError
from codetune.mini import default_model, default_model_note


def add_model_args(p: argparse.ArgumentParser) -> None:
    """TARGET and how to load it: shared by complete and serve."""
    p.add_argument("target", metavar="TARGET", nargs="?",
                   help="a run folder (base + adapter), a merged model folder, or a base model "
                        "(Hub id or folder); default: the bundled codetune-mini")
    p.add_argument("--adapter", metavar="DIR", help="a LoRA adapter folder to apply to a base model")
    p.add_argument("--no-adapter", action="store_true",
                   help="use a run folder's base model without its adapter (to compare)")
    p.add_argument("--quantization", choices=choices(Quantization), default="auto",
                   help="auto: unquantized where it fits (a 4-bit run's base is dequantized: "
                        "faster), else as the run was trained")
    p.add_argument("--dtype", choices=choices(Dtype), default="auto")


def resolve_target(args: argparse.Namespace) -> str:
    """TARGET, or the bundled codetune-mini (saying so) when none is given."""
    if args.target is None:
        args.target = default_model()
        print(default_model_note(), file=sys.stderr)
    return args.target


def load_target(args: argparse.Namespace) -> Any:
    from codetune.infer import loader  # lazy: codetune.infer is ~20 ms of `codetune --help`

    return loader.load(resolve_target(args), adapter=args.adapter, quantization=args.quantization,
                dtype=args.dtype, with_adapter=not args.no_adapter)


def add_complete(sub) -> None:
    p = sub.add_parser(
        "complete", help="fill in the middle (or continue a prefix) with a model or run",
        description="Complete code at a hole: --prefix/--suffix text, or --file/--line/--column "
                    "(the hole at that cursor). Prints only the generated text.")
    add_model_args(p)
    p.add_argument("--prefix", help="the code before the hole")
    p.add_argument("--suffix", help="the code after the hole (default: none)")
    p.add_argument("--file", metavar="PATH", help="a source file; the hole is at --line/--column")
    p.add_argument("--line", type=int, metavar="N", help="cursor line, from 1")
    p.add_argument("--column", type=int, metavar="C",
                   help="cursor column, from 1 (default: the end of the line)")
    # the sampling settings: the config's `generation` section (defaults, help, checks)
    config_flag(p, "--max-new-tokens", "generation.max_new_tokens")
    config_flag(p, "--temperature", "generation.temperature")
    config_flag(p, "--top-p", "generation.top_p")
    config_flag(p, "--top-k", "generation.top_k")
    config_flag(p, "--greedy", "generation.greedy")
    config_flag(p, "--seed", "generation.seed")
    config_flag(p, "--stop", "generation.stop", action="append", metavar="TEXT",
                help="also stop at this text (repeatable), e.g. --stop $'\\n' for one line")
    p.add_argument("--json", action="store_true",
                   help="print {text, finish_reason, mode, prompt_tokens, completion_tokens, "
                        "trimmed_suffix}")
    config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from codetune.infer.complete import complete, hole_in_file  # lazy: as in load_target

    if args.file is not None:
        if args.prefix is not None or args.suffix is not None:
            raise CodetuneError("give either --file/--line or --prefix/--suffix, not both")
        if args.line is None:
            raise CodetuneError("--file needs --line N (and optionally --column C)")
        prefix, suffix = hole_in_file(args.file, args.line, args.column)
    elif args.prefix is None:
        raise CodetuneError("nothing to complete: give --prefix TEXT [--suffix TEXT], or "
                            "--file PATH --line N [--column C]")
    else:
        if args.line is not None or args.column is not None:
            raise CodetuneError("--line/--column go with --file")
        prefix, suffix = args.prefix, args.suffix
    params = build_config(args).generation  # checked before the (slow) model load
    loaded = load_target(args)
    out = sys.stdout
    echo = None if args.json else (lambda piece: (out.write(piece), out.flush()))
    result = complete(loaded, prefix, suffix, params, on_text=echo)
    if args.json:
        print(json.dumps({**asdict(result), "model": loaded.description}, ensure_ascii=False))
    elif not result.text.endswith("\n"):
        out.write("\n")
    return 0
