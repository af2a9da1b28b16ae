"""`codetune eval`: did fine-tuning help, on the user's own held-out code?

Base and fine-tuned model run the same tasks, cut deterministically from the held-out split
of the run's dataset (files never trained on): single- and multi-line infilling, greedy and
batched, scored by exact match and edit similarity; plus bits per byte of the held-out files,
left-to-right and in FIM form (bits per *byte*, so models with different tokenizers compare).
Every difference comes with a paired bootstrap 95 % interval. Outputs in OUT (default
RUN/eval): report.md, eval.json (every task with both outputs), eval.png.

Completions end as in `complete` and `serve` (`inference.Finisher`): a middle that goes on into
the suffix is cut where the suffix starts over, and how often that happened, per model, is
reported (`suffix_trims`): a model that rarely emits EOS after the middle shows up there.

For a LoRA run the base is the same loaded model with its adapter disabled: one load, the
same tokenizer (with any FIM tokens the run added), the same prompts.

`--benchmark humaneval-infill` (eval.benchmark) adds a public benchmark generated the same way
and scored by running the code (`evaluation.benchmarks`, `evaluation.sandbox`): did it forget?
"""


from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from codetune import outputs
from codetune.config import EvalConfig
from codetune.data import store
from codetune.errors import CodetuneError
from codetune.evaluation.bpb import fim_nll, fim_split, ltr_nll
from codetune.evaluation.context import context_prompt, middle_ids
from codetune.evaluation.report import EvalResult, suffix_trims, summarise, write
from codetune.evaluation.tasks import Task, make_tasks
from codetune.model.source import resolve_source


def build_tasks(rows: list[dict[str, str]], cfg: EvalConfig) -> list[Task]:
    tasks = [t for r in rows for t in make_tasks(
        r["repo_id"], r["path"], r["content"], cfg.seed, cfg.single_line_per_file,
        cfg.multi_line_per_file, cfg.max_block_lines)]
    return capped(tasks, cfg.max_tasks, cfg.seed)


def capped(tasks: list[Task], n: int, seed: int) -> list[Task]:
    """At most `n` of `tasks`: a seeded sample, in their order, when there are more."""
    if len(tasks) <= n:
        return tasks
    keep = np.sort(np.random.default_rng(seed).choice(len(tasks), n, replace=False))
    return [tasks[i] for i in keep]


def load_benchmark(path: str) -> list[Task]:
    """A local FIM benchmark: JSON lines with prefix/middle/suffix (or HumanEval-infilling's
    prompt/canonical_solution/suffix)."""
    p = Path(path)
    if not p.is_file():
        raise CodetuneError(f"forgetting benchmark {path} not found; give a local .jsonl file")
    tasks = []
    with open(p, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                prefix = r.get("prefix", r.get("prompt"))
                middle = r.get("middle", r.get("canonical_solution"))
                suffix = r["suffix"]
            except (json.JSONDecodeError, KeyError, AttributeError):
                raise CodetuneError(f"{path} line {i + 1} is not a FIM task (needs prefix/"
                                    "middle/suffix or prompt/canonical_solution/suffix)") from None
            if prefix is None or middle is None:
                raise CodetuneError(f"{path} line {i + 1} lacks a prefix or middle")
            kind = "single_line" if "\n" not in middle.strip("\n") else "multi_line"
            tasks.append(Task(str(r.get("task_id", i)), kind, "benchmark", p.name,
                              prefix, middle, suffix))
    return tasks




def task_prompt(loaded, task: Task, budget: int) -> list[int]:
    """The task's file-level FIM prompt, cut to `budget` tokens around the hole."""
    return context_prompt(loaded, task, budget, None)


def task_prompts(loaded, tasks: list[Task], cfg: EvalConfig,
                 contexts: list[Any] | None = None) -> list[list[int]]:
    """Each task's prompt ids: its FIM prompt cut to eval.prompt_tokens, with its repository
    context (`tokens.fim.RepoContext`) in front where `contexts` gives one."""
    return [context_prompt(loaded, t, cfg.prompt_tokens, None if contexts is None else contexts[i])
            for i, t in enumerate(tasks)]


def predict(loaded, tasks: list[Task], cfg: EvalConfig, bar=None,
            contexts: list[Any] | None = None, score: bool = False,
            prompts: list[list[int]] | None = None, engine: Any = None) -> list[Any]:
    """Greedy completions (`inference.Generation`) of all tasks, batched by kind and prompt
    length; single-line tasks end at the line end. `contexts`: each task's repository context
    (`tokens.fim.RepoContext`), in front of its prompt; `prompts`: the prompts themselves,
    already built (`task_prompts`). `score`: each Generation's `nll` is also the hole's true
    middle scored after the prompt, from the same prefill (`hole`). `engine`: a
    `LlamaServer` that generates instead of the torch model (its slots are the batch; it
    cannot score)."""
    from codetune.infer.generate import GenParams, generations

    out: list[Any] = [None] * len(tasks)
    if prompts is None:
        prompts = task_prompts(loaded, tasks, cfg, contexts)
    if engine is not None and score:
        raise ValueError("llama-server cannot score given tokens: score=True is torch-only")
    middles = [middle_ids(loaded, t) for t in tasks] if score else None
    for kinds, max_new, stop in ((("single_line", "cross_file"), cfg.max_new_tokens_single,
                                  ("\n",)),
                                 (("multi_line",), cfg.max_new_tokens_multi, ())):
        idx = sorted((i for i, t in enumerate(tasks) if t.kind in kinds),
                     key=lambda i: len(prompts[i]))
        params = GenParams(max_new_tokens=max_new, greedy=True, stop=stop)
        if engine is not None:  # the server batches over its slots itself
            done = engine.generations(loaded, [prompts[i] for i in idx], params,
                                      [(tasks[i].prefix, tasks[i].suffix) for i in idx],
                                      bar.update if bar is not None else None)
            for i, g in zip(idx, done, strict=True):
                out[i] = g
            continue
        for s in range(0, len(idx), cfg.batch_size):
            batch = idx[s:s + cfg.batch_size]
            done = generations(loaded, [prompts[i] for i in batch], params,
                               [(tasks[i].prefix, tasks[i].suffix) for i in batch],
                               [middles[i] for i in batch] if middles is not None else None)
            for i, g in zip(batch, done, strict=True):
                out[i] = g
            if bar is not None:
                bar.update(len(batch))
    return out


def hole(task: Task, generation: Any) -> tuple[float, int]:
    """(nats, bytes) of a task's middle from a `predict(score=True)` generation: what
    `evaluation.context.hole_nll` computes in a pass of its own."""
    if generation.nll is None:  # an empty middle
        return 0.0, 0
    return generation.nll, len(task.middle.encode("utf-8", "surrogatepass"))


def fit_to_model(cfg: EvalConfig, window: int | None) -> EvalConfig:
    """Shrink prompt and scoring budgets to a model with a short context (e.g. the bundled
    codetune-mini's 1024 positions): a prompt plus its generation, and a FIM scoring sequence
    (up to twice `bpb_window` tokens), must fit."""
    import dataclasses

    if not window:
        return cfg
    room = window - max(cfg.max_new_tokens_multi, cfg.max_new_tokens_single) - 4
    # repository context gets at most a third of what the window leaves, the file the rest
    # (only when context is on; with and without it the file's cut is the same)
    repo = min(cfg.repo_context_tokens, room // 3) if cfg.context != "off" else 0
    prompt = min(cfg.prompt_tokens, room - repo)
    if prompt < 16:
        raise CodetuneError(f"the model's {window} positions leave no room for a prompt; lower "
                            "eval.max_new_tokens_multi")
    return dataclasses.replace(cfg, prompt_tokens=prompt, repo_context_tokens=repo,
                               bpb_window=min(cfg.bpb_window, (window - 1) // 2))


def context_settings(cfg: EvalConfig, dataset: str) -> tuple[list[str], Any]:
    """(["file"], ["repo"] or ["file", "repo"]; the dataset's index or None) for eval.context."""
    if cfg.context == "off":
        return ["file"], None
    from codetune.context import RepoIndex

    index = RepoIndex.for_dataset(dataset) if Path(dataset).is_dir() else None
    if index is None:
        if cfg.context != "auto":
            raise CodetuneError(f"eval.context={cfg.context} needs the repository index of "
                                f"{dataset}, and it has none; prepare it again with "
                                "`codetune prepare ... --overwrite` (or eval.context=off)")
        return ["file"], None
    return (["repo"] if cfg.context == "on" else ["file", "repo"]), index


def _check_engine(target: str, cfg: EvalConfig, is_run: bool, adapter: str | None) -> None:
    """eval.engine=llama.cpp takes a .gguf --model, or a running server (eval.server)."""
    if cfg.engine != "llama.cpp":
        return
    if (is_run and not cfg.server) or adapter:  # (a run with a server: its tokenizer)
        raise CodetuneError(
            "eval.engine=llama.cpp runs a GGUF file, not a run folder or an adapter: export it "
            "(`codetune export RUN --to gguf -o DIR`) and give the file with --gguf (compared "
            "with the run's base and tuned) or as --model")
    if not cfg.server and not str(target).endswith(".gguf"):
        raise CodetuneError(
            f"eval.engine=llama.cpp runs a .gguf file and {target} is none: give --model "
            "FILE.gguf (write one with `codetune export MODEL --to gguf -o DIR`), or --server "
            "URL of a running llama-server with --model naming its tokenizer")


def evaluate(target: str, cfg: EvalConfig, out_dir: str | Path | None = None,
             dataset: str | None = None, adapter: str | None = None,
             progress: bool = True) -> EvalResult:
    """Evaluate `target` (a run folder: base vs fine-tuned; or a model [+ adapter])."""
    from tqdm.auto import tqdm

    from codetune.infer import loader

    is_run = loader.is_run_dir(target)
    override = ""  # what an explicit --dataset replaced, for the report
    if is_run:  # the run's own dataset by run.json, never one that happens to be here
        found = store.run_dataset(target, loader.run_config(target).data.dataset, dataset)
        dataset = found.path
        if found.overridden:
            override = found.instead_of
    elif not (cfg.engine == "llama.cpp" and cfg.server and Path(target).is_dir()):
        # a model (with a server: perhaps a tokenizer folder only): a path that does not
        # exist says so before anything else
        resolve_source(target, hash_weights=False)
    _check_engine(target, cfg, is_run, adapter)
    if not is_run and dataset is None and not (cfg.benchmark or cfg.forgetting):
        raise CodetuneError("give --dataset (a `codetune prepare` folder) when evaluating "
                            "a model rather than a run folder, or --benchmark "
                            "humaneval-infill to check only what it forgot")
    # (a model with a benchmark and no dataset: the benchmark alone, no held-out tasks)
    # Everything that can fail cheaply fails before the model is loaded: the output folder
    # (an earlier report of ours is replaced, anything else refused) and the held-out data.
    out = outputs.check(Path(out_dir) if out_dir else (
        Path(target) / "eval" if is_run or adapter else Path("eval-" + Path(target).name)),
        False, "eval", replace_own=True,
        inputs=[("dataset", dataset), ("model", target), ("adapter", adapter)],
        home=target if is_run or adapter else None)  # RUN/eval: the default place
    rows = store.held_out_files(dataset, cfg.max_files) if dataset is not None else []
    public, public_info = [], {}  # --benchmark: a public benchmark, scored by running the code
    if cfg.benchmark:
        from codetune.evaluation.benchmarks import benchmark_tasks

        public, public_info = benchmark_tasks(cfg.benchmark, cfg.benchmark_tasks, cfg.seed)
    llama: list[Any] = []  # llama.cpp variants: checked (files, server, tokenizer) before loading
    if cfg.engine == "llama.cpp" or cfg.gguf or cfg.server:
        from codetune.evaluation.engines import llama_variants

        tokenizer, fim = loader.tokenizer_and_fim(target)
        if fim is None:
            raise CodetuneError(f"{target} has no FIM tokens: infilling cannot be evaluated. "
                                "Train with FIM (fim.rate > 0) or use a FIM model.")
        llama = llama_variants(cfg, target, tokenizer, fim, set())
    if cfg.engine == "llama.cpp":  # no torch weights: the tokenizer builds the prompts
        loaded = loader.Loaded(None, tokenizer, fim, llama[0].what)
        window = llama[0].window
    else:
        loaded = loader.load(target, adapter=adapter, quantization=cfg.quantization,
                             dtype=cfg.dtype)
        window = loader.context_window(loaded)
    if loaded.run_dir is None and adapter is not None:
        loaded.run_dir = Path(adapter)
    if loaded.fim is None:
        raise CodetuneError(f"{loaded.description} has no FIM tokens: infilling cannot be "
                            "evaluated. Train with FIM (fim.rate > 0) or use a FIM model.")
    cfg = fit_to_model(cfg, window)
    tasks = build_tasks(rows, cfg)
    bench = load_benchmark(cfg.forgetting) if cfg.forgetting else []
    settings, index = context_settings(cfg, str(dataset)) if rows else (["file"], None)
    contexts: list[Any] = []  # each task's (RepoContext, paths), from train files only
    cross: list[bool] = []  # each task: does it name something only another file defines?
    found = 0  # cross-file tasks whose context defines such a name
    if index is not None:
        from codetune.evaluation.context import (
            code_hole,
            defines_any,
            import_use_tasks,
            needed_names,
            task_contexts,
        )

        uses = capped([t for r in rows for t in import_use_tasks(
            index, r["repo_id"], r["path"], r["content"], cfg.seed, cfg.cross_file_per_file)],
            cfg.max_tasks, cfg.seed)
        tasks += uses
        needed = needed_names(index, tasks)
        # cross-file: an import-use hole, or a random hole on a code line that needs a name
        # only another file defines (not docs, not an import or re-export line: `code_hole`)
        cross = [t.kind == "cross_file" or (bool(n) and code_hole(t))
                 for t, n in zip(tasks, needed, strict=True)]

        contexts = task_contexts(index, loaded, tasks, cfg.repo_context_tokens,
                                 cfg.prompt_tokens, window,
                                 max(cfg.max_new_tokens_multi, cfg.max_new_tokens_single) + 1)
        found = sum(defines_any(c, n) for (c, _), n in zip(contexts, needed, strict=True))
    from codetune.evaluation.engines import comparisons, slot_context, torch_variants

    variants = (torch_variants(loaded) if cfg.engine == "torch" else []) + llama
    # the same prompt ids for every variant, built once with the run's tokenizer
    file_prompts = task_prompts(loaded, tasks, cfg) if "file" in settings else []
    repo_prompts = task_prompts(loaded, tasks, cfg, [c for c, _ in contexts]) \
        if "repo" in settings else []
    bench_prompts = task_prompts(loaded, bench, cfg)
    public_prompts = task_prompts(loaded, [b.task for b in public], cfg)
    slot_ctx = slot_context([file_prompts, repo_prompts, bench_prompts, public_prompts],
                            max(cfg.max_new_tokens_multi, cfg.max_new_tokens_single), window)
    timings: dict[str, dict[str, float]] = {}
    preds: dict[str, list[str]] = {}
    bench_preds: dict[str, list[str]] = {}
    public_preds: dict[str, list[str]] = {}
    trims: dict[str, dict[str, list[bool]]] = {}  # model -> "tasks"/"benchmark" -> per item
    bpb: dict[str, dict[str, list[float]]] = {}
    holes: dict[str, list[tuple[float, int]]] = {}  # name -> (nats, bytes) of each hole
    started = time.perf_counter()
    n_gen = 0
    # the 2x2's hole bits per byte: each hole scored with and without context, from the
    # prefill its generation runs anyway (`predict(score=True)`); eval.bpb=false: not at all
    scoring = settings == ["file", "repo"] and cfg.bpb
    for variant in variants:
        name, begun = variant.name, time.perf_counter()
        # a llama.cpp variant's pass includes starting its server: what a user waits for too
        with variant.open(slot_ctx) as engine:
            score = scoring and engine is None  # llama-server cannot score given tokens
            with tqdm(total=len(tasks) * len(settings) + len(bench) + len(public),
                      desc=f"{name}: infilling", unit="task", disable=not progress) as bar:
                if "repo" in settings:  # the same tasks with repository context: name+repo
                    label = name if settings == ["repo"] else f"{name}+repo"
                    with_ctx = predict(loaded, tasks, cfg, bar, score=score,
                                       prompts=repo_prompts, engine=engine)
                    preds[label] = [g.text for g in with_ctx]
                    trims[label] = {"tasks": [g.trimmed_suffix for g in with_ctx],
                                    "benchmark": [False] * len(bench)}  # (file-level only)
                    if score:  # and with it: what the context is worth
                        holes[label] = [hole(t, g) for t, g in zip(tasks, with_ctx, strict=True)]
                    n_gen += len(tasks)
                done = predict(loaded, tasks, cfg, bar, score=score, prompts=file_prompts,
                               engine=engine) if "file" in settings else []
                if score:  # the hole's bits per byte, without context
                    holes[name] = [hole(t, g) for t, g in zip(tasks, done, strict=True)]
                bench_done = predict(loaded, bench, cfg, bar, prompts=bench_prompts,
                                     engine=engine) if bench else []
                public_preds[name] = [g.text for g in predict(
                    loaded, [b.task for b in public], cfg, bar, prompts=public_prompts,
                    engine=engine)] if public else []
            if "file" in settings:
                preds[name] = [g.text for g in done]
                trims[name] = {"tasks": [g.trimmed_suffix for g in done],
                               "benchmark": [g.trimmed_suffix for g in bench_done]}
            bench_preds[name] = [g.text for g in bench_done]
            n_gen += len(tasks) * ("file" in settings) + len(bench) + len(public)
            made, took = (len(tasks) * len(settings) + len(bench) + len(public),
                          time.perf_counter() - begun)
            timings[name] = {"seconds": round(took, 1), "tasks": made,
                             "tasks_per_second": round(made / max(took, 1e-9), 2)}
            if cfg.bpb and rows and engine is None:
                ltr, fim = [], []
                for r in tqdm(rows, desc=f"{name}: bits per byte", disable=not progress):
                    ltr.append(ltr_nll(loaded, r["content"], cfg.bpb_window))
                    parts = fim_split(r["content"], cfg.seed, f"{r['repo_id']}/{r['path']}")
                    fim.append(fim_nll(loaded, parts, cfg.bpb_window) if parts else (0.0, 0))
                bpb[name] = {"ltr_nll": ltr, "fim_nll": [f[0] for f in fim],
                             "fim_bytes": [f[1] for f in fim]}
    seconds = time.perf_counter() - started
    llama_names = [v.name for v in llama]
    result = summarise(tasks, preds, bench, bench_preds, rows, bpb, cfg, holes, cross,
                       comparisons(list(preds), llama_names, settings))
    result.context = {"settings": settings, "tokens": cfg.repo_context_tokens,
                      "with_snippets": sum(1 for _, p in contexts if p), "tasks": len(tasks),
                      "cross_file": sum(cross), "definition_found": found,
                      "import_use": sum(t.kind == "cross_file" for t in tasks),
                      "paths": [p for _, p in contexts],
                      "cross_file_tasks": cross} if index is not None else {}
    result.suffix_trims = suffix_trims(tasks, bench, trims)
    result.target, result.model, result.dataset = str(target), loaded.description, str(dataset)
    result.dataset_instead_of = override
    result.fim_format = loaded.fim.family
    result.seconds = round(seconds, 1)
    result.tasks_per_second = round(n_gen / max(seconds, 1e-9), 2)
    result.out_dir = str(out)
    result.engines = {v.name: {"engine": v.engine, "what": v.what} for v in variants}
    result.timings = timings
    extra = {}
    if public:
        from codetune.evaluation.benchmarks import score_benchmark

        scored = score_benchmark(public, public_preds, cfg, public_info, progress)
        result.metrics.update(scored.metrics)
        result.forgetting_verdict, result.benchmark = scored.verdict, scored.info
        extra["public_benchmark_records"] = scored.records
    write(out, result, tasks, preds, bench, bench_preds, rows, bpb, trims, extra)
    return result
