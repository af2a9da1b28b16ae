"""Subcommand: complete, and the TARGET flags it shares with serve."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from codetune.errors import CodetuneError
from codetune.infer.complete import complete, hole_in_file


def add_model_args(p: argparse.ArgumentParser) -> None:
    """TARGET and how to load it: shared by complete and serve."""
    p.add_argument("target", metavar="TARGET", nargs="?",
                   help="a run folder (base + adapter), a merged model folder, or a base model "
                        "(Hub id or folder); default: the bundled codetune-mini")
    p.add_argument("--adapter", metavar="DIR", help="a LoRA adapter folder to apply to a base model")
    p.add_argument("--no-adapter", action="store_true",
                   help="use a run folder's base model without its adapter (to compare)")
    p.add_argument("--quantization", choices=["auto", "none", "8bit", "4bit"], default="auto",
                   help="auto: unquantized where it fits (a 4-bit run's base is dequantized: "
                        "faster), else as the run was trained")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], default="auto")


def resolve_target(args: argparse.Namespace) -> str:
    """TARGET, or the bundled codetune-mini (saying so) when none is given."""
    if args.target is None:
        from codetune.mini import default_model, default_model_note

        args.target = default_model()
        print(default_model_note(), file=sys.stderr)
    return args.target


def load_target(args: argparse.Namespace) -> Any:
    from codetune.infer import loader

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
    from codetune.infer.generate import GenParams

    d = GenParams()  # the seed's sampling settings, written once there
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="%(default)s")
    p.add_argument("--temperature", type=float, default=d.temperature, help="%(default)s")
    p.add_argument("--top-p", type=float, default=d.top_p, help="%(default)s")
    p.add_argument("--top-k", type=int, default=d.top_k, help="%(default)s (0: off)")
    p.add_argument("--greedy", action="store_true", help="always take the likeliest token")
    p.add_argument("--seed", type=int, help="sampling seed (reproducible output)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="also stop at this text (repeatable), e.g. --stop $'\\n' for one line")
    p.add_argument("--json", action="store_true",
                   help="print {text, finish_reason, mode, prompt_tokens, completion_tokens, "
                        "trimmed_suffix}")
    p.set_defaults(func=run)


def gen_params(args: argparse.Namespace) -> Any:
    from codetune.infer.generate import GenParams

    if args.max_new_tokens < 1:
        raise CodetuneError("--max-new-tokens must be at least 1")
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
        raise CodetuneError("--temperature must be >= 0, --top-p in (0, 1] and --top-k >= 0")
    return GenParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                     top_k=args.top_k, top_p=args.top_p, greedy=args.greedy,
                     stop=tuple(args.stop), seed=args.seed)


def run(args: argparse.Namespace) -> int:
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
    params = gen_params(args)  # checked before the (slow) model load
    loaded = load_target(args)
    out = sys.stdout
    echo = None if args.json else (lambda piece: (out.write(piece), out.flush()))
    result = complete(loaded, prefix, suffix, params, on_text=echo)
    if args.json:
        print(json.dumps({**asdict(result), "model": loaded.description}, ensure_ascii=False))
    elif not result.text.endswith("\n"):
        out.write("\n")
    return 0
