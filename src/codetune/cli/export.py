"""Subcommand: export."""

from __future__ import annotations

import argparse

from codetune.cli.common import choices
from codetune.config import WeightDtype


def add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="a run or merged model for llama.cpp (GGUF), Ollama, Tabby or vLLM",
        description="Export a run folder (merged first) or a merged model folder. gguf: one "
                    "GGUF file with the tokenizer and FIM token ids, read back and checked "
                    "against the model; ollama: the GGUF and a Modelfile that takes `suffix`; "
                    "tabby: Tabby's model folder; vllm: the `vllm serve` command and a client.")
    p.add_argument("source", metavar="RUN_OR_MERGED")
    p.add_argument("--to", required=True, choices=["gguf", "ollama", "tabby", "vllm"])
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.add_argument("--type", default="F16", metavar="TYPE",
                   help="GGUF type: F16 (default), BF16, Q8_0 (written by codetune), or a "
                        "llama-quantize type such as Q4_K_M (needs llama.cpp)")
    p.add_argument("--name", help="the model's name in Ollama / vLLM and in the file "
                                  "(default: OUT's folder name)")
    p.add_argument("--converter", default="auto", choices=["auto", "codetune", "llama.cpp"],
                   help="who writes the GGUF: llama.cpp's convert_hf_to_gguf.py when "
                        "installed (LLAMA_CPP_DIR or PATH), else codetune (default: auto)")
    p.add_argument("--merge-dtype", default="bfloat16", choices=choices(WeightDtype),
                   help="dtype of the merge, for a LoRA run (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it is an earlier export")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from codetune.export import export  # heavy: numpy

    r = export(args.source, args.to, args.output, ftype=args.type, name=args.name,
               overwrite=args.overwrite, converter=args.converter, merge_dtype=args.merge_dtype)
    check = r.get("check")
    if check:
        print(f"exported {r['gguf']} ({r['type']}) to {r['out_dir']} in {r['seconds']:.1f} s; "
              f"checked against the model: largest |logit difference| "
              f"{check['max_abs_logit_diff']:.3g}, top-1 agreement "
              f"{check['top1_agreement']:.2%} ({check['positions']} positions)")
    else:
        print(f"exported to {r['out_dir']}: {r['command']}")
    print(f"next: see {r['out_dir']}/README.md")
    return 0
