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
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from codetune import outputs
from codetune.config import EvalConfig
from codetune.data import store
from codetune.errors import CodetuneError
from codetune.evaltasks import Task, edit_similarity, exact_match, make_tasks, paired_bootstrap

LN2 = math.log(2)


# --------------------------------------------------------------------------- data


def held_out_files(dataset: str, max_files: int | None) -> list[dict[str, str]]:
    import pyarrow.parquet as pq

    from codetune.tokens.stream import resolve_files

    files, column = resolve_files(dataset, "validation")
    rows = []
    for f in files:
        with store.reading(f):
            t = pq.read_table(f, columns=["repo_id", "path", column or "content"])
        rows += [{"repo_id": r, "path": p, "content": c} for r, p, c in zip(
            t.column(0).to_pylist(), t.column(1).to_pylist(), t.column(2).to_pylist(),
            strict=True)]
    if not rows:
        raise CodetuneError(f"{dataset} has no held-out (validation) files to evaluate on; "
                            "prepare it with --valid-fraction above 0")
    return rows[:max_files] if max_files else rows


def build_tasks(rows: list[dict[str, str]], cfg: EvalConfig) -> list[Task]:
    tasks = [t for r in rows for t in make_tasks(
        r["repo_id"], r["path"], r["content"], cfg.seed, cfg.single_line_per_file,
        cfg.multi_line_per_file, cfg.max_block_lines)]
    if len(tasks) > cfg.max_tasks:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(tasks), cfg.max_tasks,
                                                              replace=False))
        tasks = [tasks[i] for i in keep]
    return tasks


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


# --------------------------------------------------------------------------- prompts


def _fit(tok, text: str, budget: int, keep_end: bool) -> str:
    """Whole lines of `text`, dropped from the start (keep_end) or the end, until it fits
    `budget` tokens."""
    if len(tok(text, add_special_tokens=False)["input_ids"]) <= budget:
        return text
    lines = text.splitlines(keepends=True)
    lo, hi = 0, len(lines)  # binary search on how many lines to keep
    while lo < hi:
        mid = (lo + hi + 1) // 2
        part = "".join(lines[-mid:] if keep_end else lines[:mid])
        if len(tok(part, add_special_tokens=False)["input_ids"]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return "".join(lines[-lo:] if keep_end else lines[:lo]) if lo else ""


def task_prompt(loaded, task: Task, budget: int) -> list[int]:
    from codetune.inference import fim_prompt

    tok = loaded.tokenizer
    prefix = _fit(tok, task.prefix, budget * 3 // 4, keep_end=True)
    suffix = _fit(tok, task.suffix, budget // 4, keep_end=False)
    return fim_prompt(loaded, prefix, suffix)


def predict(loaded, tasks: list[Task], cfg: EvalConfig, bar=None) -> list[Any]:
    """Greedy completions (`inference.Generation`) of all tasks, batched by kind and prompt
    length; single-line tasks end at the line end."""
    from codetune.inference import GenParams, generations

    out: list[Any] = [None] * len(tasks)
    prompts = [task_prompt(loaded, t, cfg.context_tokens) for t in tasks]
    for kind, max_new, stop in (("single_line", cfg.max_new_tokens_single, ("\n",)),
                                ("multi_line", cfg.max_new_tokens_multi, ())):
        idx = sorted((i for i, t in enumerate(tasks) if t.kind == kind),
                     key=lambda i: len(prompts[i]))
        params = GenParams(max_new_tokens=max_new, greedy=True, stop=stop)
        for s in range(0, len(idx), cfg.batch_size):
            batch = idx[s:s + cfg.batch_size]
            done = generations(loaded, [prompts[i] for i in batch], params,
                               [(tasks[i].prefix, tasks[i].suffix) for i in batch])
            for i, g in zip(batch, done, strict=True):
                out[i] = g
            if bar is not None:
                bar.update(len(batch))
    return out


# --------------------------------------------------------------------------- bits per byte


def _nll(model, ids: list[int], score_from: int, mask: list[bool] | None = None) -> float:
    """Sum of -log p (nats) of ids[t] for t >= score_from (and mask[t] when given)."""
    import torch

    x = torch.tensor([ids], device=next(model.parameters()).device)
    with torch.no_grad():
        logits = model(input_ids=x).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    target = x[0, 1:]
    tok_lp = logp.gather(1, target[:, None])[:, 0]
    keep = torch.zeros_like(tok_lp, dtype=torch.bool)
    keep[max(score_from - 1, 0):] = True
    if mask is not None:
        keep &= torch.tensor(mask[1:], device=keep.device)
    return float(-(tok_lp[keep]).sum())


def ltr_nll(loaded, text: str, window: int) -> float:
    """Nats of `text` left to right: windows of `window` tokens, each starting after an EOS
    (the document separator the model was trained with)."""
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = loaded.fim.eos_id if loaded.fim is not None else loaded.tokenizer.eos_token_id
    total = 0.0
    for s in range(0, len(ids), window):
        chunk = [eos] + ids[s:s + window]
        total += _nll(loaded.model, chunk, score_from=1)
    return total


def fim_split(text: str, seed: int, key: str) -> tuple[str, str, str] | None:
    import hashlib

    if len(text) < 3:
        return None
    h = int.from_bytes(hashlib.sha256(f"{seed}\0bpb\0{key}".encode(
        "utf-8", "surrogatepass")).digest()[:8], "big")
    a, b = sorted(np.random.default_rng(h).integers(0, len(text) + 1, size=2).tolist())
    return (text[:a], text[a:b], text[b:]) if b > a else None


def fim_nll(loaded, parts: tuple[str, str, str], budget: int) -> tuple[float, int]:
    """(nats, bytes) of the middle given prefix and suffix, in PSM form."""
    from codetune.tokens.fim import encode_fim

    prefix, middle, suffix = parts
    tok = loaded.tokenizer
    prefix = _fit(tok, prefix, budget // 2, keep_end=True)
    suffix = _fit(tok, suffix, budget // 4, keep_end=False)
    ids, mask = encode_fim(tok, loaded.fim, prefix, middle, suffix, spm=False,
                           middle_loss_only=True)
    ids, mask = [int(i) for i in ids], [bool(m) for m in mask]
    # The middle may exceed the window: score its first budget tokens, bytes to match.
    if len(ids) > 2 * budget:
        ids, mask = ids[:2 * budget], mask[:2 * budget]
        kept = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
        nbytes = len(kept.encode("utf-8", "surrogatepass"))
    else:
        nbytes = len(middle.encode("utf-8", "surrogatepass"))
    return _nll(loaded.model, ids, score_from=0, mask=mask), nbytes


# --------------------------------------------------------------------------- main entry


def fit_to_model(cfg: EvalConfig, window: int | None) -> EvalConfig:
    """Shrink prompt and scoring budgets to a model with a short context (e.g. the bundled
    codetune-mini's 1024 positions): a prompt plus its generation, and a FIM scoring sequence
    (up to twice `bpb_window` tokens), must fit."""
    import dataclasses

    if not window:
        return cfg
    ctx = min(cfg.context_tokens, window - max(cfg.max_new_tokens_multi,
                                               cfg.max_new_tokens_single) - 4)
    if ctx < 16:
        raise CodetuneError(f"the model's {window} positions leave no room for a prompt; lower "
                            "eval.max_new_tokens_multi")
    return dataclasses.replace(cfg, context_tokens=ctx,
                               bpb_window=min(cfg.bpb_window, (window - 1) // 2))


def _variants(loaded) -> list[tuple[str, Any]]:
    """(name, context manager factory) per model compared: base (adapter off) and tuned."""
    if loaded.run_dir is not None and hasattr(loaded.model, "disable_adapter"):
        return [("base", loaded.model.disable_adapter), ("tuned", contextlib.nullcontext)]
    return [("model", contextlib.nullcontext)]


def evaluate(target: str, cfg: EvalConfig, out_dir: str | Path | None = None,
             dataset: str | None = None, adapter: str | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Evaluate `target` (a run folder: base vs fine-tuned; or a model [+ adapter])."""
    from tqdm.auto import tqdm

    from codetune import inference

    is_run = inference.is_run_dir(target)
    if dataset is None:
        if not is_run:
            raise CodetuneError("give --dataset (a `codetune prepare` folder) when evaluating "
                                "a model rather than a run folder")
        dataset = inference.run_config(target).data.dataset
    # Everything that can fail cheaply fails before the model is loaded: the output folder
    # (an earlier report of ours is replaced, anything else refused) and the held-out data.
    out = outputs.check(Path(out_dir) if out_dir else (
        Path(target) / "eval" if is_run or adapter else Path("eval-" + Path(target).name)),
        False, "eval", replace_own=True)
    rows = held_out_files(dataset, cfg.max_files)
    loaded = inference.load(target, adapter=adapter, quantization=cfg.quantization,
                            dtype=cfg.dtype)
    if loaded.run_dir is None and adapter is not None:
        loaded.run_dir = Path(adapter)
    if loaded.fim is None:
        raise CodetuneError(f"{loaded.description} has no FIM tokens: infilling cannot be "
                            "evaluated. Train with FIM (fim.rate > 0) or use a FIM model.")
    cfg = fit_to_model(cfg, inference.context_window(loaded))
    tasks = build_tasks(rows, cfg)
    bench = load_benchmark(cfg.forgetting) if cfg.forgetting else []
    variants = _variants(loaded)
    preds: dict[str, list[str]] = {}
    bench_preds: dict[str, list[str]] = {}
    trims: dict[str, dict[str, list[bool]]] = {}  # model -> "tasks"/"benchmark" -> per item
    bpb: dict[str, dict[str, list[float]]] = {}
    started = time.perf_counter()
    n_gen = 0
    for name, ctx in variants:
        with ctx():
            with tqdm(total=len(tasks) + len(bench), desc=f"{name}: infilling",
                      disable=not progress) as bar:
                done = predict(loaded, tasks, cfg, bar)
                bench_done = predict(loaded, bench, cfg, bar) if bench else []
            preds[name], bench_preds[name] = [g.text for g in done], [g.text for g in bench_done]
            trims[name] = {"tasks": [g.trimmed_suffix for g in done],
                           "benchmark": [g.trimmed_suffix for g in bench_done]}
            n_gen += len(tasks) + len(bench)
            if cfg.bpb:
                ltr, fim = [], []
                for r in tqdm(rows, desc=f"{name}: bits per byte", disable=not progress):
                    ltr.append(ltr_nll(loaded, r["content"], cfg.bpb_window))
                    parts = fim_split(r["content"], cfg.seed, f"{r['repo_id']}/{r['path']}")
                    fim.append(fim_nll(loaded, parts, cfg.bpb_window) if parts else (0.0, 0))
                bpb[name] = {"ltr_nll": ltr, "fim_nll": [f[0] for f in fim],
                             "fim_bytes": [f[1] for f in fim]}
    seconds = time.perf_counter() - started
    result = _summarise(tasks, preds, bench, bench_preds, rows, bpb, cfg)
    result["suffix_trims"] = suffix_trims(tasks, bench, trims)
    result.update(target=str(target), model=loaded.description, dataset=str(dataset),
                  fim_format=loaded.fim.family, seconds=round(seconds, 1),
                  tasks_per_second=round(n_gen / max(seconds, 1e-9), 2))
    _write(out, result, tasks, preds, bench, bench_preds, rows, bpb, trims)
    result["out_dir"] = str(out)
    return result


def suffix_trims(tasks: list[Task], bench: list[Task],
                 trims: dict[str, dict[str, list[bool]]]) -> dict[str, dict[str, int]]:
    """How many completions were cut where they started repeating the suffix, by task kind
    (plus "all" and "benchmark"): {kind: {"n": tasks, model: count, ...}}."""
    out: dict[str, dict[str, int]] = {}
    groups = [(k, "tasks", [i for i, t in enumerate(tasks) if t.kind == k])
              for k in ("single_line", "multi_line")]
    groups.append(("all", "tasks", list(range(len(tasks)))))
    if bench:
        groups.append(("benchmark", "benchmark", list(range(len(bench)))))
    for kind, source, idx in groups:
        if idx:
            out[kind] = {"n": len(idx), **{name: int(sum(t[source][i] for i in idx))
                                           for name, t in trims.items()}}
    return out


def _trims_line(result: dict[str, Any]) -> str:
    """One sentence: how often each model's middle ran on into the suffix and was cut."""
    trims = result.get("suffix_trims") or {}
    if "all" not in trims:
        return ""
    parts = []
    for name in result["models"]:
        kinds = ", ".join(f"{k.replace('_', '-')} {trims[k][name]}/{trims[k]['n']}"
                          for k in ("single_line", "multi_line", "benchmark") if k in trims)
        parts.append(f"{name} {trims['all'][name]}/{trims['all']['n']} ({kinds})")
    return ("Completions cut where they started repeating the suffix: " + "; ".join(parts)
            + ".")


def _scores(tasks: list[Task], preds: list[str], kind: str) -> tuple[np.ndarray, np.ndarray]:
    idx = [i for i, t in enumerate(tasks) if t.kind == kind]
    em = np.array([exact_match(preds[i], tasks[i].middle) for i in idx])
    es = np.array([edit_similarity(preds[i], tasks[i].middle) for i in idx])
    return em, es


def _summarise(tasks, preds, bench, bench_preds, rows, bpb, cfg: EvalConfig) -> dict[str, Any]:
    names = list(preds)
    metrics: dict[str, dict[str, Any]] = {}

    def add(metric: str, values: dict[str, np.ndarray], weights=None, lower_better=False):
        m: dict[str, Any] = {"n": int(len(next(iter(values.values())))),
                             "lower_is_better": lower_better}
        for n, v in values.items():
            w = np.ones(len(v)) if weights is None else np.asarray(weights, float)
            m[n] = float((v * w).sum() / w.sum()) if len(v) and w.sum() > 0 else None
        if "base" in values and "tuned" in values and m["n"]:
            d, lo, hi = paired_bootstrap(values["base"], values["tuned"], cfg.bootstrap,
                                         cfg.seed, weights)
            m.update(delta=d, ci95=[lo, hi])
        metrics[metric] = m

    for kind in ("single_line", "multi_line"):
        per = {n: _scores(tasks, preds[n], kind) for n in names}
        if len(next(iter(per.values()))[0]):
            add(f"{kind}_exact_match", {n: p[0] for n, p in per.items()})
            add(f"{kind}_edit_similarity", {n: p[1] for n, p in per.items()})
    if bench:
        for kind in ("single_line", "multi_line"):
            per = {n: _scores(bench, bench_preds[n], kind) for n in names}
            if len(next(iter(per.values()))[0]):
                add(f"benchmark_{kind}_exact_match", {n: p[0] for n, p in per.items()})
    if bpb:
        nbytes = np.array([len(r["content"].encode("utf-8", "surrogatepass")) for r in rows])
        ok = nbytes > 0
        add("bits_per_byte_ltr", {n: np.array(b["ltr_nll"])[ok] / LN2 / nbytes[ok]
                                  for n, b in bpb.items()}, weights=nbytes[ok], lower_better=True)
        fb = np.array(next(iter(bpb.values()))["fim_bytes"])
        okf = fb > 0
        add("bits_per_byte_fim", {n: np.array(b["fim_nll"])[okf] / LN2 / fb[okf]
                                  for n, b in bpb.items()}, weights=fb[okf], lower_better=True)
    return {"models": names, "tasks": len(tasks), "files": len(rows), "metrics": metrics,
            "verdict": _verdict(metrics)}


def _verdict(metrics: dict[str, dict[str, Any]]) -> str:
    """One sentence: which differences are outside their 95 % interval, and which way."""
    better, worse = [], []
    for name, m in metrics.items():
        if "ci95" not in m:
            continue
        lo, hi = m["ci95"]
        good = (hi < 0) if m["lower_is_better"] else (lo > 0)
        bad = (lo > 0) if m["lower_is_better"] else (hi < 0)
        (better if good else worse if bad else []).append(name.replace("_", " "))
    if not better and not worse:
        return "no difference between base and fine-tuned is outside its 95 % interval"
    parts = []
    if better:
        parts.append("fine-tuning helped on " + ", ".join(better))
    if worse:
        parts.append("it hurt on " + ", ".join(worse))
    return "; ".join(parts) + " (95 % bootstrap intervals)"


# --------------------------------------------------------------------------- outputs


def _write(out: Path, result, tasks, preds, bench, bench_preds, rows, bpb, trims) -> None:
    """report.md, eval.json and eval.png, built beside `out` and swapped in when complete."""
    with outputs.staged(out, False, "eval", replace_own=True) as tmp:
        _write_files(tmp, result, tasks, preds, bench, bench_preds, rows, bpb, trims)


def _write_files(out: Path, result, tasks, preds, bench, bench_preds, rows, bpb, trims) -> None:
    names = result["models"]
    task_recs = []
    for i, t in enumerate(tasks):
        rec = t.to_dict()
        for n in names:
            rec[n] = {"output": preds[n][i], "exact_match": exact_match(preds[n][i], t.middle),
                      "edit_similarity": edit_similarity(preds[n][i], t.middle),
                      "trimmed_suffix": trims[n]["tasks"][i]}
        task_recs.append(rec)
    files = []
    for j, r in enumerate(rows):
        rec = {"repo_id": r["repo_id"], "path": r["path"],
               "bytes": len(r["content"].encode("utf-8", "surrogatepass"))}
        for n, b in bpb.items():
            rec[n] = {"ltr_nll": b["ltr_nll"][j], "fim_nll": b["fim_nll"][j],
                      "fim_bytes": b["fim_bytes"][j]}
        files.append(rec)
    doc = {**outputs.mark("eval"), **result, "task_records": task_recs, "file_records": files,
           "benchmark_records": [dict(t.to_dict(), **{n: bench_preds[n][i] for n in names})
                                 for i, t in enumerate(bench)]}
    (out / "eval.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    (out / "report.md").write_text(report_markdown(result, task_recs), encoding="utf-8")
    plot(result, out / "eval.png")


def report_markdown(result: dict[str, Any], task_recs: list[dict]) -> str:
    names = result["models"]
    lines = ["# codetune eval", "", f"**{result['verdict'].capitalize()}.**", "",
             f"Model: {result['model']}  ", f"Held-out data: {result['dataset']} "
             f"({result['files']} files, {result['tasks']} infilling tasks; FIM format "
             f"{result['fim_format']})  ",
             f"Time: {result['seconds']} s ({result['tasks_per_second']} tasks/s)", ""]
    if _trims_line(result):
        lines += [_trims_line(result) + " (Each is cut there, as `complete` and `serve` "
                  "do; a model that stops by itself after the middle needs none.)", ""]
    head = "| metric | " + " | ".join(names) + (" | Δ (tuned − base) | 95 % CI | n |"
                                                 if "base" in names else " | n |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name, m in result["metrics"].items():
        cells = [f"{m[n]:.4f}" if m.get(n) is not None else "–" for n in names]
        row = f"| {name.replace('_', ' ')}{' (lower is better)' if m['lower_is_better'] else ''}"
        row += " | " + " | ".join(cells)
        if "delta" in m:
            row += f" | {m['delta']:+.4f} | [{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}]"
        elif "base" in names:
            row += " | | "
        lines.append(row + f" | {m['n']} |")
    if "base" in names:
        changed = [r for r in task_recs if r["base"]["exact_match"] != r["tuned"]["exact_match"]]
        lines += ["", f"## Tasks where the two differ ({len(changed)}; all in eval.json)", ""]
        for r in changed[:10]:
            lines += [f"### {r['task_id']} ({r['kind'].replace('_', ' ')})", "",
                      "expected:", "```", r["middle"].rstrip("\n"), "```",
                      f"base ({'right' if r['base']['exact_match'] else 'wrong'}):", "```",
                      r["base"]["output"].rstrip("\n"), "```",
                      f"fine-tuned ({'right' if r['tuned']['exact_match'] else 'wrong'}):",
                      "```", r["tuned"]["output"].rstrip("\n"), "```", ""]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result["models"]
    m = result["metrics"]
    acc = [k for k in m if not m[k]["lower_is_better"]]
    bpb = [k for k in m if m[k]["lower_is_better"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110,
                             gridspec_kw={"width_ratios": [max(len(acc), 1), max(len(bpb), 1)]})
    for ax, keys, title in ((axes[0], acc, "infilling (higher is better)"),
                            (axes[1], bpb, "bits per byte (lower is better)")):
        x = np.arange(len(keys))
        width = 0.8 / max(len(names), 1)
        for j, n in enumerate(names):
            vals = [m[k][n] or 0.0 for k in keys]
            ax.bar(x + j * width, vals, width, label=n)
        ax.set_xticks(x + width * (len(names) - 1) / 2)
        ax.set_xticklabels([k.replace("_", "\n") for k in keys], fontsize=7)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(result["verdict"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    names = result["models"]
    t = Table(title=f"codetune eval ({result['tasks']} tasks, {result['files']} held-out files)",
              show_edge=False)
    t.add_column("metric")
    for n in names:
        t.add_column(n, justify="right")
    if "base" in names:
        t.add_column("Δ", justify="right")
        t.add_column("95 % CI", justify="right")
    for name, m in result["metrics"].items():
        row = [name.replace("_", " ")] + [f"{m[n]:.4f}" if m.get(n) is not None else "–"
                                           for n in names]
        if "delta" in m:
            row += [f"{m['delta']:+.4f}", f"[{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]"]
        elif "base" in names:
            row += ["", ""]
        t.add_row(*row)
    Console().print(t)
    if _trims_line(result):
        print(_trims_line(result))
    print(f"{result['verdict']}. {result['tasks_per_second']} tasks/s. "
          f"Report: {result['out_dir']}/report.md")
