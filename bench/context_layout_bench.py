"""Which layout of repository context pays on a given model? One change at a time, on the
cross-file tasks of an eval that already ran with `--context both`.

    codetune eval --model MODEL --dataset DATASET --context both -o EVAL ...
    python bench/context_layout_bench.py MODEL EVAL/eval.json DATASET \
        [--adapter RUN] [--layouts tokens tokens-empty comments ...] [--out DIR]

The eval's own tasks (their prefix, hole and suffix, as eval.json records them) are asked again
with their repository context laid out another way; each layout's exact match and edit
similarity are compared with the eval's own completions of the same tasks *without* context
(paired bootstrap, 95 %), so a layout is judged against what the model does alone. Layouts:

- `tokens`: what codetune does (the family's `<repo_name>` / `<file_sep>` layout, the retrieved
  snippets in the budget, the most relevant nearest the hole);
- `tokens-empty`: the same layout with no snippet (the repository name and the file's path): the
  cost of the layout itself;
- `tokens-merged`: the snippets of one file joined into one block, in line order, behind a
  single `<file_sep>` (a file's own text, as in pretraining, rather than chunks);
- `tokens-nopath`: no path of the current file after the last separator;
- `tokens-bestfirst`: the most relevant snippet first, farthest from the hole;
- `tokens-budget=N`: a budget of N tokens instead of eval.repo_context_tokens;
- `comments`: the layout of families without repository tokens (each snippet behind a
  `# path:` comment, inside the FIM prefix), forced on this one;
- `comments-path`: that layout with the file's path comment only.

Writes DIR/layouts.json (every completion) and DIR/layouts.md (the table). Not part of the test
suite; tests/test_context_layout_bench.py checks the layouts and the table on a tiny model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

LAYOUTS = ("tokens", "tokens-empty", "tokens-merged", "tokens-nopath", "tokens-bestfirst",
           "comments", "comments-path")
DEFAULT = ("tokens", "tokens-empty", "tokens-merged", "comments", "comments-path")


def check_layout(name: str) -> str:
    if name in LAYOUTS:
        return name
    if name.startswith("tokens-budget="):
        try:
            if int(name.split("=", 1)[1]) >= 0:
                return name
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(
        f"unknown layout {name!r}: one of {', '.join(LAYOUTS)}, or tokens-budget=N")


def merged(chosen: list[Any]) -> tuple[tuple[str, str], ...]:
    """(path, text) blocks, one per file of `chosen` (Snippets, best first): its snippets in
    line order, with "..." where lines between them were left out; the blocks best last."""
    groups: OrderedDict[str, list[Any]] = OrderedDict()
    for s in chosen:
        groups.setdefault(s.path, []).append(s)
    blocks = []
    for path, snips in groups.items():
        text, last = "", None
        for s in sorted(snips, key=lambda s: s.start_line):
            if text and not text.endswith("\n"):
                text += "\n"
            if last is not None and s.start_line > last + 1:
                text += "...\n"
            text += s.text
            last = s.end_line
        blocks.append((path, text))
    return tuple(reversed(blocks))


def layout_context(layout: str, chosen: list[Any], repo: str | None, path: str
                   ) -> tuple[Any, bool]:
    """(RepoContext, laid out as comments?) of a task under `layout`, from the snippets that
    `context.repo_context` chose for it (best first). The budget layouts choose again; they
    are handled by the caller."""
    from codetune.tokens.fim import RepoContext

    best_last = tuple((s.path, s.text) for s in reversed(chosen))
    if layout in ("tokens", "comments") or layout.startswith("tokens-budget="):
        return RepoContext(repo=repo, path=path, snippets=best_last), layout == "comments"
    if layout in ("tokens-empty", "comments-path"):
        return RepoContext(repo=repo, path=path), layout == "comments-path"
    if layout == "tokens-merged":
        return RepoContext(repo=repo, path=path, snippets=merged(chosen)), False
    if layout == "tokens-nopath":
        return RepoContext(repo=repo, path=None, snippets=best_last), False
    if layout == "tokens-bestfirst":
        return RepoContext(repo=repo, path=path, snippets=best_last[::-1]), False
    raise ValueError(layout)


def prompts(loaded: Any, tasks: list[Any], index: Any, layout: str, prompt_tokens: int,
            budget: int) -> list[list[int]]:
    """Each task's prompt ids under `layout`: its file part cut as eval cuts it, its context
    retrieved as eval retrieves it."""
    from codetune.context import repo_context
    from codetune.evaluation.context import fitted
    from codetune.tokens.fim import build_prompt, token_counter

    count = token_counter(loaded.tokenizer)
    if layout.startswith("tokens-budget="):
        budget = int(layout.split("=", 1)[1])
    plain = dataclasses.replace(loaded.fim, file_sep_id=None, repo_name_id=None)
    out = []
    for t in tasks:
        snippets = index.retrieve(t.prefix, t.suffix, t.path, t.repo_id)
        _, chosen = repo_context(snippets, budget, count, t.repo_id, t.path)
        ctx, comments = layout_context(layout, chosen, t.repo_id, t.path)
        prefix, suffix = fitted(loaded, t, prompt_tokens)
        out.append(build_prompt(loaded.tokenizer, plain if comments else loaded.fim, prefix,
                                suffix, repo=ctx))
    return out


def eval_tasks(doc: dict, model: str, kinds: tuple[str, ...]) -> tuple[list[Any], list[str]]:
    """The tasks of an eval.json of those kinds, and `model`'s completions of them without
    context (its record "base" or "tuned")."""
    from codetune.evaluation.tasks import Task

    fields = [f.name for f in dataclasses.fields(Task)]
    tasks, refs = [], []
    for r in doc["task_records"]:
        if r["kind"] in kinds:
            if model not in r:
                raise SystemExit(f"the eval has no completions of {model!r} without context "
                                 f"(records: {sorted(k for k in r if isinstance(r[k], dict))})")
            tasks.append(Task(**{k: r[k] for k in fields}))
            refs.append(r[model]["output"])
    return tasks, refs


def score_rows(tasks: list[Any], reference: list[str], outputs: dict[str, list[str]],
               seconds: dict[str, float], boot: int = 1000) -> list[dict]:
    """One row per layout: exact match and edit similarity, each with its difference from the
    reference (no context) and the paired 95 % bootstrap interval of that difference."""
    import numpy as np

    from codetune.evaluation.tasks import edit_similarity, exact_match, paired_bootstrap

    def measures(preds):
        return (np.array([exact_match(p, t.middle) for p, t in zip(preds, tasks, strict=True)]),
                np.array([edit_similarity(p, t.middle)
                          for p, t in zip(preds, tasks, strict=True)]))

    ref_em, ref_es = measures(reference)
    rows = [{"layout": "no context", "n": len(tasks), "em": float(ref_em.mean()),
             "es": float(ref_es.mean()), "seconds": None}]
    for name, preds in outputs.items():
        em, es = measures(preds)
        row = {"layout": name, "n": len(tasks), "em": float(em.mean()), "es": float(es.mean()),
               "seconds": seconds.get(name)}
        for key, a, b in (("em", ref_em, em), ("es", ref_es, es)):
            delta, lo, hi = paired_bootstrap(a, b, n=boot)
            row[f"{key}_delta"], row[f"{key}_ci95"] = delta, [lo, hi]
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| layout | n | exact match | Δ [95 %] | edit similarity | Δ [95 %] | time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        em_d = es_d = t = ""
        if "em_delta" in r:
            lo, hi = r["em_ci95"]
            em_d = f"{100 * r['em_delta']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            lo, hi = r["es_ci95"]
            es_d = f"{r['es_delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        if r.get("seconds") is not None:
            t = f"{r['seconds']:.0f} s"
        lines.append(f"| {r['layout']} | {r['n']} | {100 * r['em']:.1f} % | {em_d} | "
                     f"{r['es']:.3f} | {es_d} | {t} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="the model folder the eval ran (its base)")
    ap.add_argument("eval_json", type=Path, help="eval.json of `codetune eval --context both`")
    ap.add_argument("dataset", help="the dataset the eval ran on (its repository index)")
    ap.add_argument("--adapter", help="a run's adapter: compare with the eval's tuned model")
    ap.add_argument("--layouts", nargs="+", type=check_layout, default=list(DEFAULT))
    ap.add_argument("--kinds", nargs="+", default=["cross_file"],
                    help="task kinds to ask again (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N tasks")
    ap.add_argument("--prompt-tokens", type=int,
                    help="the eval's eval.prompt_tokens (default: eval's default)")
    ap.add_argument("--context-tokens", type=int,
                    help="the context budget (default: the eval's, from its eval.json)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("bench/out/context_layout"))
    args = ap.parse_args(argv)

    from codetune import outputs
    from codetune.config import EvalConfig
    from codetune.context import RepoIndex
    from codetune.evaluation.run import predict
    from codetune.infer.loader import load

    doc = json.loads(args.eval_json.read_text())
    cfg = EvalConfig() if args.prompt_tokens is None else \
        EvalConfig(prompt_tokens=args.prompt_tokens)
    budget = args.context_tokens if args.context_tokens is not None else \
        (doc.get("context") or {}).get("tokens", cfg.repo_context_tokens)
    tasks, reference = eval_tasks(doc, "tuned" if args.adapter else "base", tuple(args.kinds))
    if args.limit:
        tasks, reference = tasks[:args.limit], reference[:args.limit]
    if not tasks:
        raise SystemExit(f"{args.eval_json} has no tasks of kinds {args.kinds}")
    index = RepoIndex.for_dataset(args.dataset)
    if index is None:
        raise SystemExit(f"{args.dataset} has no repository index (prepare it with one)")
    loaded = load(args.model, args.adapter, quantization="none")
    print(f"{len(tasks)} tasks, in-file budget {cfg.prompt_tokens}, context budget {budget}, "
          f"{loaded.description}", flush=True)
    completions: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for layout in args.layouts:
        started = time.perf_counter()
        ids = prompts(loaded, tasks, index, layout, cfg.prompt_tokens, budget)
        completions[layout] = [g.text for g in predict(loaded, tasks, cfg, prompts=ids)]
        seconds[layout] = time.perf_counter() - started
        rows = score_rows(tasks, reference, completions, seconds, args.bootstrap)
        print(format_table(rows[:1] + rows[-1:]).splitlines()[-1], flush=True)
        outputs.write_json(args.out / "layouts.json", {
            "model": args.model, "adapter": args.adapter, "eval": str(args.eval_json),
            "tasks": [t.task_id for t in tasks], "reference": reference, "rows": rows,
            "outputs": completions})
    table = format_table(rows)  # the last layout's rows hold every layout
    (args.out / "layouts.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
