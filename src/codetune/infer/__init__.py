"""Inference: loading a run or model, prompts, generation, where a completion ends, and
`complete`; llama.cpp's llama-server as an engine (`LlamaServer`). The names below are the public API (what a notebook user calls); the code lives in
the submodules."""

from codetune.infer.complete import Completion, complete, hole_in_file
from codetune.infer.finish import Finisher, cut_at_stops, trim_completion
from codetune.infer.generate import (
    GREEDY_BELOW,
    Generation,
    GenerationStream,
    GenParams,
    generate,
    generations,
)
from codetune.infer.llama_server import LlamaServer
from codetune.infer.loader import (
    Loaded,
    check_run_finished,
    context_window,
    is_run_dir,
    load,
    run_config,
    tokenizer_and_fim,
)
from codetune.infer.prompts import (
    completion_prompt,
    fim_prompt,
    plain_prompt,
    prompt_hole,
    raw_prompt,
    stop_ids,
)

__all__ = ["GREEDY_BELOW", "Completion", "Finisher", "GenParams", "Generation", "LlamaServer",
           "Loaded",
           "GenerationStream", "check_run_finished", "complete", "completion_prompt",
           "context_window", "cut_at_stops", "fim_prompt", "generate", "generations",
           "hole_in_file", "is_run_dir", "load", "plain_prompt",
           "prompt_hole", "raw_prompt", "run_config", "stop_ids", "tokenizer_and_fim", "trim_completion"]
