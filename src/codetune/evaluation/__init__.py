"""`codetune eval`: tasks cut from held-out files, bits per byte, base vs fine-tuned with
paired bootstrap intervals, and the report. `evaluate` is the entry point. A public benchmark
(`benchmark_tasks`, `score_benchmark`) checks forgetting by running the code in the sandbox
(`run_programs`)."""

from codetune.evaluation.benchmarks import benchmark_tasks, score_benchmark
from codetune.evaluation.bpb import fim_nll, fim_split, ltr_nll
from codetune.evaluation.report import print_summary, report_markdown
from codetune.evaluation.run import (
    evaluate,
    fit_to_model,
    load_benchmark,
    predict,
    task_prompt,
)
from codetune.evaluation.sandbox import run_program, run_programs

__all__ = ["benchmark_tasks", "evaluate", "fim_nll", "fim_split", "fit_to_model",
           "load_benchmark", "ltr_nll", "predict", "print_summary", "report_markdown",
           "run_program", "run_programs", "score_benchmark", "task_prompt"]
