"""Subcommand: eval."""

from __future__ import annotations

import argparse
import sys

from codetune.cli.common import build_config, config_args, config_flag
from codetune.errors import CodetuneError


def add_eval(sub) -> None:
    p = sub.add_parser(
        "eval", help="base vs fine-tuned on held-out files: infilling and bits per byte",
        description="Evaluate a run folder (its base model vs base + adapter) on the held-out "
                    "split of its dataset, or --model [--adapter] on --dataset. --gguf FILE adds "
                    "the exported file, run by llama.cpp, on the same prompts; --engine "
                    "llama.cpp evaluates a .gguf --model through llama.cpp alone.")
    p.add_argument("target", nargs="?", metavar="RUN_DIR",
                   help="a folder written by `codetune train`")
    p.add_argument("--model", help="evaluate this model instead of a run folder")
    p.add_argument("--adapter", help="a LoRA adapter folder to apply to --model")
    p.add_argument("--dataset", help="a `codetune prepare` folder (default: the one the run "
                                     "trained on, as its run.json records it; another is named "
                                     "in the report)")
    p.add_argument("-o", "--output", help="report folder (default RUN_DIR/eval)")
    config_flag(p, "--forgetting", "eval.forgetting", metavar="JSONL")
    config_flag(p, "--benchmark", "eval.benchmark", metavar="humaneval-infill[:single|:multi]")
    config_flag(p, "--benchmark-tasks", "eval.benchmark_tasks", metavar="N|all", type=_all_is_null)
    config_flag(p, "--context", "eval.context")
    config_flag(p, "--context-tokens", "eval.repo_context_tokens")
    config_flag(p, "--quantization", "eval.quantization")
    config_flag(p, "--engine", "eval.engine")
    config_flag(p, "--gguf", "eval.gguf", action="append", metavar="FILE",
                help="a GGUF file to evaluate after the model through llama.cpp's llama-server, "
                     "on the same tasks and prompts, compared with tuned (repeatable; write one "
                     "with `codetune export RUN --to gguf`)")
    config_flag(p, "--server", "eval.server", metavar="URL")
    p.add_argument("-q", "--quiet", action="store_true")
    config_args(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from codetune.evaluation.report import print_summary
    from codetune.evaluation.run import evaluate

    target = args.model or args.target
    if args.model and args.target:
        raise CodetuneError("give either a run folder or --model, not both")
    extra: list[str] = []
    if target is None:
        from codetune.mini import default_model, default_model_note, mini_eval_overrides

        if args.dataset is None:
            raise CodetuneError("give a run folder (codetune eval runs/x), or --model and "
                                "--dataset")
        target = default_model()
        print(default_model_note(), file=sys.stderr)
        extra = mini_eval_overrides()
    args.set = extra + list(args.set)
    cfg = build_config(args)
    result = evaluate(target, cfg.eval, args.output, dataset=args.dataset,
                      adapter=args.adapter, progress=not args.quiet)
    print_summary(result)
    return 0


def _all_is_null(value: str) -> str:
    """--benchmark-tasks all: every task (eval.benchmark_tasks=null)."""
    return "null" if value == "all" else value
