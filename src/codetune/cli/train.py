"""Subcommands: train, eval, merge."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from codetune.cli.common import build_config, config_args, config_flag
from codetune.errors import CodetuneError


def _split_recipe(items: list[str]) -> tuple[str | None, list[str]]:
    """`[RECIPE] [section.key=value ...]` -> (recipe file, overrides). RECIPE is a shipped
    recipe's name (`codetune recipes`) or a YAML file."""
    from codetune.recipes import resolve

    recipe, overrides = None, []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif recipe is None:
            recipe = str(resolve(item))
        else:
            raise CodetuneError(f"unexpected argument {item!r}: give one recipe (a name from "
                                "`codetune recipes`, or a YAML file) and section.key=value "
                                "overrides, e.g. train.max_steps=10")
    return recipe, overrides


def add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="fine-tune a code model (QLoRA by default) on a prepared dataset",
        description="Fine-tune with Fill-in-the-Middle and packing. RECIPE is a shipped "
                    "recipe's name (`codetune recipes`) or a YAML file; KEY=VALUE words and "
                    "-s KEY=VALUE override any config key (`codetune config`).")
    p.add_argument("args", nargs="*", metavar="[RECIPE] [KEY=VALUE]")
    p.add_argument("--model", help="Hub id, local model folder or .gguf file")
    p.add_argument("--revision", help="Hub revision of the model")
    p.add_argument("--dataset", help="a folder written by `codetune prepare` (with --resume: "
                                     "where the run's dataset moved to)")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last complete checkpoint in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--force", action="store_true",
                   help="resume even if the base model, LoRA shape or dataset changed")
    p.add_argument("--push-to-hub", action="store_true", help="push the adapter to the Hub")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    config_args(p)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from codetune import config
    from codetune.train.rundir import check_output, resume_config
    from codetune.train.trainer import print_summary, train

    if args.resume and args.overwrite:
        raise CodetuneError("--resume and --overwrite contradict each other; pick one")
    if args.resume:  # "no run to resume" before anything else is looked at
        check_output(Path(args.output).absolute(), resume=True, overwrite=False)
    recipe, overrides = _split_recipe(args.args)
    if args.config is not None:
        if recipe is not None:
            raise CodetuneError(f"give the config once: a RECIPE ({recipe}) or -c "
                                f"{args.config}, not both")
        recipe = str(args.config)
    overrides += list(args.set)
    flags = {"model.name": args.model, "model.revision": args.revision,
             "data.dataset": args.dataset,
             "train.push_to_hub": True if args.push_to_hub else None,
             "model.trust_remote_code": True if args.trust_remote_code else None}
    items = overrides + [f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                         for k, v in flags.items() if v is not None]
    if args.resume:
        if recipe is not None:
            raise CodetuneError(f"--resume continues with the run's own config.yaml; drop "
                                f"{recipe} and give only KEY=VALUE overrides")
        cfg = resume_config(args.output, items, force=args.force)
    else:
        cfg = config.load(recipe, items)
    result = train(cfg, args.output, resume=args.resume, overwrite=args.overwrite,
                   force=args.force, progress=not args.quiet)
    if int(os.environ.get("RANK", 0)) == 0 and not result.already_finished:
        print_summary(result)
    return 0


def add_eval(sub) -> None:
    p = sub.add_parser(
        "eval", help="base vs fine-tuned on held-out files: infilling and bits per byte",
        description="Evaluate a run folder (its base model vs base + adapter) on the held-out "
                    "split of its dataset, or --model [--adapter] on --dataset.")
    p.add_argument("target", nargs="?", metavar="RUN_DIR",
                   help="a folder written by `codetune train`")
    p.add_argument("--model", help="evaluate this model instead of a run folder")
    p.add_argument("--adapter", help="a LoRA adapter folder to apply to --model")
    p.add_argument("--dataset", help="a `codetune prepare` folder (default: the one the run "
                                     "trained on, as its run.json records it; another is named "
                                     "in the report)")
    p.add_argument("-o", "--output", help="report folder (default RUN_DIR/eval)")
    p.add_argument("--forgetting", metavar="JSONL",
                   help="a local FIM benchmark to check the model did not forget general code")
    config_flag(p, "--benchmark", "eval.benchmark", metavar="humaneval-infill[:single|:multi]")
    config_flag(p, "--benchmark-tasks", "eval.benchmark_tasks", metavar="N|all")
    config_flag(p, "--context", "eval.context")
    config_flag(p, "--context-tokens", "eval.repo_context_tokens", type=int)
    p.add_argument("--quantization", choices=["auto", "none", "8bit", "4bit"],
                   help="how to load the weights (eval.quantization; auto: unquantized where "
                        "they fit, even for a 4-bit run)")
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
    tasks = args.benchmark_tasks
    cfg = build_config(args, {"eval.forgetting": args.forgetting,
                               "eval.quantization": args.quantization,
                               "eval.benchmark": args.benchmark,
                               "eval.context": args.context,
                               "eval.repo_context_tokens": args.context_tokens,
                               "eval.benchmark_tasks": "null" if tasks == "all" else tasks})
    result = evaluate(target, cfg.eval, args.output, dataset=args.dataset,
                      adapter=args.adapter, progress=not args.quiet)
    print_summary(result)
    return 0


def add_merge(sub) -> None:
    p = sub.add_parser("merge", help="fold a run's adapter into its base model (safetensors)")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    from codetune.merge import merge

    r = merge(args.run, args.output, args.dtype, args.overwrite)
    print(f"merged into {r['out_dir']} ({r['dtype']}); logits match base + adapter within "
          f"{r['max_abs_logit_diff']:.2g} (tolerance {r['tolerance']}) on "
          f"{r['verified_on']}")
    return 0
