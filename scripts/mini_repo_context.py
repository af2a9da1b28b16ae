#!/usr/bin/env python
"""Teach codetune-mini to use repository context: continue its pretraining in repo mode.

    python scripts/mini_repo_context.py --minutes 32 --lr 6e-4 --batch-size 8   # --resume goes on

LoRA on a small project (what `codetune demo` does) did not teach the 5 M-parameter model to
use snippets of other files: its pretraining had only ever shown it single files. This script
continues that pretraining on the same standard-library files (the same held-out set), with
repository context. Each top-level package of the stdlib is a repository (`email/`,
`asyncio/`, ..., the top-level modules together as `stdlib`), indexed from the train files.

Half of the samples (`--import-use-share`) are import-use holes of the train files: FIM with
the middle a line at the first use of a definition the file imports from another file of its
package (eval's cross-file selection), loss on the middle only, behind the snippets retrieval
finds for that hole (imported definitions as stubs first, then BM25) within 256 tokens. These
are where another file is what tells the answer, and what the model has to learn to look at.
The other half are windows of up to 720 tokens of a train file behind the snippets retrieved
for a cursor inside them, FIM at rate 0.7, the context masked. One sample a 1024-token row.

`--rename-share` renames, in that share of the samples, the function and class names the
package defines to made-up ones, the same way in the file and in its snippets: then the only
way to predict such a name is to copy it from where the sample spells it.

What did not work first (each 30 min on 2 CPU cores; the numbers in bench/RESULTS.md): whole
files behind their neighbours, packed into rows (most rows held no context: most stdlib files
are longer than a row), then windows alone. Both improved the model on held-out files, neither
made context worth anything: on random holes its few useful tokens were outweighed by
distraction. Import-use holes made context worth -0.026 bits per byte on held-out import-use
holes; adding renamed names (`--rename-share 0.5`) did not teach the model to copy
(`scripts/copy_probe.py`), and neither run made context help on the sample project.

It measures, before and after, on holes cut from the held-out files, the hole's bits per byte
with repository context (retrieved from the train files' index) against without, with a paired
bootstrap 95 % interval: on random holes and on import-use holes. It writes the weights back
into `src/codetune/assets/codetune-mini/` (keeping its generation_config.json) and the figures
into its metrics.json and MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_mini as B  # noqa: E402

CONTEXT_TOKENS = 256
HOLE_BUDGET = 512
WINDOW = 720  # file tokens per sample: with the context and the sentinels, one 1024 sequence
FIM_RATE = 0.7


def repo_of(rel: str) -> str:
    return rel.split("/", 1)[0] if "/" in rel else "stdlib"


_DEF = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+([A-Za-z_]\w*)", re.M)
_SYLLABLES = [a + b for a in "bdfgklmnprstvz" for b in ("a", "e", "i", "o", "u", "ar", "el",
                                                        "in", "os", "un")]


def renameable(texts: dict[str, str], rels: list[str]) -> dict[str, set[str]]:
    """Per package, the function and class names its train files define that can be renamed
    without touching a name everyone uses: four characters or more, not dunder, not a builtin
    or a method of the builtin types, and defined in at most two packages."""
    import builtins

    common = set(dir(builtins)) | {n for t in (dict, list, str, set, bytes, int, object)
                                   for n in dir(t)}
    per_repo: dict[str, set[str]] = {}
    for rel in rels:
        per_repo.setdefault(repo_of(rel), set()).update(_DEF.findall(texts[rel]))
    spread: dict[str, int] = {}
    for names in per_repo.values():
        for n in names:
            spread[n] = spread.get(n, 0) + 1
    return {repo: {n for n in names if len(n) >= 4 and not n.startswith("__")
                   and n not in common and spread[n] <= 2}
            for repo, names in per_repo.items()}


def fresh_name(name: str, rng) -> str:
    """A made-up name of the same shape (leading underscores, snake_case or CapWords)."""
    core = name.lstrip("_")
    lead = name[:len(name) - len(core)]
    parts = [p for p in core.split("_") if p] or [core]
    made = ["".join(_SYLLABLES[int(rng.integers(len(_SYLLABLES)))]
                    for _ in range(1 + int(rng.integers(2)))) for _ in parts]
    if core[:1].isupper():
        return lead + "".join(m.capitalize() for m in made)
    return lead + "_".join(made)


def renamer(names: set[str], texts: list[str], rng):
    """A function that renames, the same way in every text it is given, each of `names` that
    occurs in `texts` to a fresh made-up name: the sample's only source for such a name is
    where the file or its context spells it, so predicting it means copying from there."""
    present = sorted({m for t in texts for m in re.findall(r"[A-Za-z_]\w*", t)} & names)
    if not present:
        return lambda text: text
    new = {n: fresh_name(n, rng) for n in present}
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, present)) + r")\b")
    return lambda text: pattern.sub(lambda m: new[m.group(0)], text)


class WindowStream:
    """Repo-mode samples cut to fit one sequence, one a row, padded; deterministic in (seed,
    step), so resuming replays nothing. A share `share` are import-use holes (`uses`: (file,
    start, end) of each hole line of the train files): FIM with that line as the middle, loss
    on it only. The rest are windows of up to WINDOW tokens of a train file, FIM at FIM_RATE.
    Both behind the snippets retrieval finds for them (the other files of the package, as
    eval and serving retrieve them), the context masked."""

    def __init__(self, docs, rels, texts, index, tok, fim, count, seed, uses=(), share=0.0,
                 names=None, rename_share=0.0):
        self.docs, self.rels, self.texts, self.index = docs, rels, texts, index
        self.tok, self.fim, self.count, self.seed = tok, fim, count, seed
        self.uses, self.share = list(uses), share
        self.names, self.rename_share = names or {}, rename_share

    def renamed(self, rng, rel, ctx, *parts):
        """(ctx, *parts), a share `rename_share` of the time with the package's own function
        and class names renamed consistently (see `renamer`)."""
        from codetune.tokens.fim import RepoContext

        if self.rename_share <= 0 or rng.random() >= self.rename_share:
            return (ctx, *parts)
        names = self.names.get(repo_of(rel), set())
        fn = renamer(names, [*parts, *(t for _, t in ctx.snippets)], rng)
        ctx = RepoContext(ctx.repo, ctx.path, tuple((p, fn(t)) for p, t in ctx.snippets))
        return (ctx, *(fn(p) for p in parts))

    def import_use(self, rng):
        from codetune.context import repo_context
        from codetune.tokens.fim import encode_fim

        i, a, b = self.uses[int(rng.integers(len(self.uses)))]
        rel = self.rels[i]
        text = self.texts[rel]
        prefix, suffix = text[max(0, a - 1800):a], text[b:b + 500]  # ~500 + ~150 tokens
        if a > 1800:
            prefix = prefix[prefix.find("\n") + 1:]
        snippets = self.index.retrieve(prefix, suffix, rel, repo_of(rel))
        ctx, _ = repo_context(snippets, CONTEXT_TOKENS, self.count, repo_of(rel), rel)
        ctx, prefix, middle, suffix = self.renamed(rng, rel, ctx, prefix, text[a:b], suffix)
        ids, mask = encode_fim(self.tok, self.fim, prefix, middle, suffix,
                               spm=bool(rng.binomial(1, 0.5)), middle_loss_only=True, repo=ctx)
        out = np.append(np.asarray(ids, np.int64), self.fim.eos_id)[:B.SEQ_LEN + 1]
        labels = np.where(np.append(np.asarray(mask, bool), True)[:len(out)], out, -100)
        return out, labels

    def sample(self, rng):
        from codetune.context import repo_context
        from codetune.tokens.fim import encode_repo_context, permute

        if self.uses and rng.random() < self.share:
            return self.import_use(rng)
        i = int(rng.integers(len(self.docs)))
        ids, rel = self.docs[i], self.rels[i]
        start = int(rng.integers(0, max(len(ids) - WINDOW, 0) + 1))
        window = ids[start:start + WINDOW]
        cut = int(rng.integers(1, max(len(window), 2)))
        prefix = self.tok.decode(window[:cut].tolist())
        suffix = self.tok.decode(window[cut:].tolist())
        snippets = self.index.retrieve(prefix, suffix, rel, repo_of(rel))
        ctx, _ = repo_context(snippets, CONTEXT_TOKENS, self.count, repo_of(rel), rel)
        ctx, *text = self.renamed(rng, rel, ctx, prefix + suffix)
        if text[0] != prefix + suffix:
            window = np.asarray(self.tok(text[0], add_special_tokens=False)["input_ids"],
                                np.int64)[:WINDOW]
        pre, head = encode_repo_context(self.tok, self.fim, ctx)
        out, mask = permute(window, rng, self.fim, FIM_RATE, 0.5, preamble=pre, head=head)
        out = np.append(out, self.fim.eos_id)[:B.SEQ_LEN + 1]
        labels = np.where(np.append(mask, True)[:len(out)], out, -100)
        return out, labels

    def batch(self, b: int, step: int):
        rng = np.random.default_rng([self.seed, 11, step])
        ids = np.full((b, B.SEQ_LEN + 1), self.fim.eos_id, dtype=np.int64)
        labels = np.full((b, B.SEQ_LEN + 1), -100, dtype=np.int64)
        for r in range(b):
            x, y = self.sample(rng)
            ids[r, :len(x)], labels[r, :len(y)] = x, y
        return ids, labels


def measure(loaded, index, tasks, tok) -> dict:
    """Hole bits per byte with and without repository context, and the paired difference."""
    from codetune.evaluation.context import hole_nll, task_contexts
    from codetune.evaluation.tasks import paired_bootstrap

    ctxs = task_contexts(index, loaded, tasks, CONTEXT_TOKENS, HOLE_BUDGET, B.SEQ_LEN, 1)
    with_ctx, without, nbytes = [], [], []
    for t, (ctx, _) in zip(tasks, ctxs, strict=True):
        a, n = hole_nll(loaded, t, HOLE_BUDGET, None)
        b, _ = hole_nll(loaded, t, HOLE_BUDGET, ctx)
        if n:
            without.append(a / math.log(2) / n)
            with_ctx.append(b / math.log(2) / n)
            nbytes.append(n)
    a, b, w = np.array(without), np.array(with_ctx), np.array(nbytes, float)
    d, lo, hi = paired_bootstrap(a, b, 1000, 0, w)
    return {"tasks": len(w), "with_snippets": sum(1 for _, p in ctxs if p),
            "hole_bpb_file": round(float((a * w).sum() / w.sum()), 4),
            "hole_bpb_repo": round(float((b * w).sum() / w.sum()), 4),
            "delta": round(d, 4), "ci95": [round(lo, 4), round(hi, 4)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=40.0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--work", type=Path, default=B.WORK)
    ap.add_argument("--out", type=Path, default=B.OUT)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--import-use-share", type=float, default=0.5,
                    help="share of samples that are import-use holes of the train files")
    ap.add_argument("--rename-share", type=float, default=0.0,
                    help="share of samples whose package-defined names are renamed to made-up "
                         "ones, the same in the file and its context")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codetune.context import build_index
    from codetune.evaluation.context import import_use_tasks
    from codetune.evaluation.tasks import make_tasks
    from codetune.infer.loader import Loaded
    from codetune.tokens.fim import detect_fim

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    root, rels = B.stdlib_files()
    train_rels, held_rels = B.split_heldout(root, rels)
    texts = {r: (root / r).read_text(encoding="utf-8") for r in rels}
    tok = AutoTokenizer.from_pretrained(str(args.out))
    fim = detect_fim(tok, "starcoder")
    t = time.time()
    index = build_index(((repo_of(r), r, texts[r]) for r in train_rels),
                        args.work / "repo_index", neighbours=True)
    print(f"index of {len(train_rels)} train files in {len(index.repos)} repositories, "
          f"{len(index):,} chunks, {time.time() - t:.0f}s", flush=True)

    held_tasks = [t for r in held_rels for t in make_tasks(repo_of(r), r, texts[r], 0, 4, 2, 8)]
    held_uses = [t for r in held_rels for t in import_use_tasks(index, repo_of(r), r, texts[r],
                                                                0, 8)]

    def loaded_of(model):
        model.eval()
        return Loaded(model, tok, fim, "codetune-mini")

    base = AutoModelForCausalLM.from_pretrained(str(args.out), dtype=torch.float32)
    before = {"random": measure(loaded_of(base), index, held_tasks, tok),
              "import_use": measure(loaded_of(base), index, held_uses, tok)}
    print(f"before: {before}", flush=True)

    model = AutoModelForCausalLM.from_pretrained(str(args.out), dtype=torch.float32)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    ckpt = args.work / "repo_ckpt.pt"
    state = {"step": 0, "tokens": 0, "elapsed": 0.0, "log": []}
    if args.resume and ckpt.exists():
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        print(f"resumed at step {state['step']}", flush=True)

    count_cache: dict[str, int] = {}

    def count(text: str) -> int:
        if text not in count_cache:
            count_cache[text] = len(tok(text, add_special_tokens=False)["input_ids"])
        return count_cache[text]

    docs = [np.asarray(tok(texts[r], add_special_tokens=False)["input_ids"], dtype=np.int64)
            for r in train_rels]
    uses = [(i, len(t.prefix), len(t.prefix) + len(t.middle)) for i, r in enumerate(train_rels)
            for t in import_use_tasks(index, repo_of(r), r, texts[r], 0, 1000)]
    print(f"{len(uses):,} import-use holes in the train files", flush=True)
    names = renameable(texts, train_rels)
    print(f"{sum(map(len, names.values())):,} renameable names", flush=True)
    stream = WindowStream(docs, train_rels, texts, index, tok, fim, count, args.seed, uses,
                          args.import_use_share, names, args.rename_share)
    budget, start = args.minutes * 60, time.time() - state["elapsed"]
    last = time.time()
    model.train()
    while (elapsed := time.time() - start) < budget:
        lr = B.lr_at(elapsed / budget, state["step"], args.lr, warmup=20)
        for g in opt.param_groups:
            g["lr"] = lr
        ids, labels = (torch.from_numpy(a) for a in stream.batch(args.batch_size, state["step"]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
            ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        state["tokens"] += int((labels[:, 1:] != -100).sum())
        if state["step"] % 25 == 0:
            print(f"step {state['step']} loss {loss.item():.3f} lr {lr:.2e} "
                  f"{elapsed / 60:.1f}/{args.minutes:.0f} min", flush=True)
        if time.time() - last > args.ckpt_minutes * 60:
            state.update(elapsed=time.time() - start)
            B.save_ckpt(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(),
                               "state": state})
            last = time.time()
    state.update(elapsed=time.time() - start)
    B.save_ckpt(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "state": state})

    after = {"random": measure(loaded_of(model), index, held_tasks, tok),
             "import_use": measure(loaded_of(model), index, held_uses, tok)}
    print(f"after: {after}", flush=True)
    ltr = B.bpb_files(model, tok, [texts[r] for r in held_rels], "cpu")
    print(f"held-out left-to-right bpb after: {ltr:.4f}", flush=True)

    export = type(model)(model.config)
    export.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    gen = (args.out / "generation_config.json").read_text()  # its EOS list and defaults stay
    export.to(torch.bfloat16).save_pretrained(str(args.out), safe_serialization=True)
    (args.out / "generation_config.json").write_text(gen)
    metrics = json.loads((args.out / "metrics.json").read_text())
    metrics["repo_context"] = {"minutes": round(state["elapsed"] / 60, 1),
                               "steps": state["step"], "trained_tokens": state["tokens"],
                               "context_tokens": CONTEXT_TOKENS,
                               "import_use_share": args.import_use_share, "before": before,
                               "after": after, "heldout_ltr_bpb_after": round(ltr, 4)}
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    card = (args.out / "MODEL_CARD.md").read_text()
    card = card.split("\n## Repository context")[0].rstrip("\n") + "\n" + repo_card(
        metrics["repo_context"])
    (args.out / "MODEL_CARD.md").write_text(card)
    print(f"wrote {args.out}", flush=True)
    return 0


def repo_card(m: dict) -> str:
    rows = "\n".join(
        f"| {when} | {what} ({r['tasks']}) | {r['hole_bpb_file']} | {r['hole_bpb_repo']} | "
        f"{r['delta']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] |"
        for when, d in (("before", m["before"]), ("after", m["after"]))
        for what, r in (("import-use holes", d["import_use"]), ("random holes", d["random"])))
    return f"""
## Repository context

Continued pretraining in codetune's repository layout (`scripts/mini_repo_context.py`) on this
machine (2 CPU cores): {m['minutes']} min, {m['steps']} steps, {m['trained_tokens'] / 1e6:.1f} M
trained tokens, from the weights as first pretrained. {m['import_use_share']:.0%} of the samples
are import-use holes of the train files (the first line that uses a definition the file imports
from another file of its package: the middle, with loss on it alone), the rest windows of up to
720 tokens of a train file; both behind up to {m['context_tokens']} tokens of the snippets that
retrieval finds for them. Held-out holes from the 40 held-out files, the hole's bits per byte
without / with repository context (retrieved from the train files only), paired bootstrap
95 % interval (negative: context helped):

| | holes | without | with | difference (95 % interval) |
|---|---|---|---|---|
{rows}

Left-to-right bits per byte of the held-out files afterwards: {m['heldout_ltr_bpb_after']}.
"""


if __name__ == "__main__":
    raise SystemExit(main())
