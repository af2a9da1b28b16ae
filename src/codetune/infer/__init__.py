"""Inference: loading a run or model, prompts, generation, where a completion ends, and
`complete`. The names below are the public API (what a notebook user calls); the code lives in
the submodules."""

from codetune.infer.complete import Completion, complete, hole_in_file
from codetune.infer.finish import Finisher, cut_at_stops, trim_completion
from codetune.infer.generate import (
    GREEDY_BELOW,
    Generation,
    GenParams,
    TokenStream,
    generate,
    generations,
)
from codetune.infer.loader import (
    Loaded,
    check_run_finished,
    context_window,
    is_run_dir,
    load,
    load_tokenizer,
    run_config,
)
from codetune.infer.prompts import (
    completion_prompt,
    fim_prompt,
    plain_prompt,
    prompt_hole,
    raw_prompt,
    stop_ids,
)

__all__ = ["GREEDY_BELOW", "Completion", "Finisher", "GenParams", "Generation", "Loaded",
           "TokenStream", "check_run_finished", "complete", "completion_prompt",
           "context_window", "cut_at_stops", "fim_prompt", "generate", "generations",
           "hole_in_file", "is_run_dir", "load", "load_tokenizer", "plain_prompt",
           "prompt_hole", "raw_prompt", "run_config", "stop_ids", "trim_completion"]
