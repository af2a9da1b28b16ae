"""Benchmark the repository context index on the Python standard library of this interpreter.

    python bench/context_bench.py [--corpus DIR] [--queries 300] [--no-prepare]

Prints, for the same corpus in the same run:
- the baseline: reading every `.py` file (the I/O ceiling), MB/s;
- a full build with `build_index` (chunks, tokens, BM25, and neighbours as `prepare` builds
  them) and with `index_tree` on a copy of the tree (what `codetune index` does: listing,
  filters and secret scan included, no neighbours): MB/s, chunk count, where the time goes;
- incremental `update()` after changing one file, and `refresh()` with nothing changed, each
  as a ratio to the full `index_tree` build;
- retrieval latency (p50 / p95 / p99) on one core over cursors sampled from the corpus, against
  bm25s's own `retrieve` of the same query tokens (its BM25 alone, no import resolution);
- `prepare --workers 2` with and without the index (the cost `prepare` now pays for it);
- served: the same `/infill` requests (codetune-mini, greedy, --max-new 16) to `codetune serve`
  with repository context from the index (`--context-tokens 512`) and without (`0`), one client:
  prompt tokens and end-to-end latency p50 / p95 of each, and the ratio (with / without).

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np


def read_corpus(corpus: Path) -> tuple[list[tuple[str, str, str]], float, float]:
    """(files as (repo_id, path, text), MB, seconds to read them)."""
    t = time.perf_counter()
    files, total = [], 0
    for dirpath, dirnames, filenames in os.walk(corpus):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            if name.endswith(".py") and os.path.isfile(p) and not os.path.islink(p):
                raw = Path(p).read_bytes()
                total += len(raw)
                with contextlib.suppress(UnicodeDecodeError):  # prepare drops those too
                    files.append(("stdlib", os.path.relpath(p, corpus), raw.decode("utf-8")))
    return files, total / 1e6, time.perf_counter() - t


def percentiles(ms: list[float]) -> str:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return f"p50 {p50:6.2f} ms   p95 {p95:6.2f} ms   p99 {p99:6.2f} ms"


def compare_bm25_build(idx) -> None:
    """bm25s's own `BM25.index` against `context.bm25.build` on the same token ids."""
    import bm25s

    from codetune.context import bm25
    from codetune.context.index import repo_vocabulary, stored_tokens

    flat, offsets = stored_tokens(idx)
    vocab = repo_vocabulary(idx, 0)
    docs = [flat[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    t = time.perf_counter()
    ref = bm25s.BM25()
    ref.index((docs, {w: i for i, w in enumerate(vocab)}), create_empty_token=False,
              show_progress=False)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    ours = bm25.build(flat, offsets, vocab)
    t_ours = time.perf_counter() - t
    same = all(np.array_equal(ours.scores[k], ref.scores[k]) for k in ("data", "indptr"))
    print(f"   BM25 matrix: bm25s BM25.index {t_ref:.2f} s, context.bm25.build {t_ours:.2f} s "
          f"= {t_ref / t_ours:.1f}x faster, identical: {same}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--no-prepare", action="store_true")
    ap.add_argument("--served", type=int, default=40, metavar="N",
                    help="served requests per setting (0 skips the served rows)")
    ap.add_argument("--max-new", type=int, default=16)
    args = ap.parse_args()

    from codetune.context import build_index, index_tree
    from codetune.context.chunks import tokenize
    from codetune.context.index import QUERY_PREFIX_LINES, QUERY_SUFFIX_LINES

    corpus = Path(args.corpus)
    read_corpus(corpus)  # warm the page cache
    files, mb, t_read = read_corpus(corpus)
    print(f"corpus {corpus}: {len(files)} .py files, {mb:.1f} MB; cores {os.cpu_count()}; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"baseline  read every file             {mb / t_read:8.1f} MB/s")

    work = Path(tempfile.mkdtemp(prefix="ctxbench-"))
    try:
        t = time.perf_counter()
        idx = build_index(files, work / "lib", neighbours=True)
        dt = time.perf_counter() - t
        st = idx.last_build
        print(f"build_index (with neighbours)         {mb / dt:8.2f} MB/s   {dt:6.1f} s   "
              f"{len(idx)} chunks, {idx.info['counts']['neighbours']} neighbours")
        print(f"   of which BM25 matrix {st.bm25_seconds:.1f} s, neighbours "
              f"{st.neighbour_seconds:.1f} s, chunking + tokens + writing + loading the rest")
        compare_bm25_build(idx)

        tree = work / "tree"
        for _, rel, text in files:
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / rel).write_text(text, encoding="utf-8")
        t = time.perf_counter()
        live = index_tree(tree, work / "tree-index")
        t_full = time.perf_counter() - t
        print(f"index_tree (filters, no neighbours)   {mb / t_full:8.2f} MB/s   {t_full:6.1f} s   "
              f"{len(live)} chunks")
        changed = tree / "json" / "encoder.py"
        changed.write_text(changed.read_text() + "\n\ndef bench_added(x):\n    return x\n")
        t = time.perf_counter()
        st = live.update()
        t_inc = time.perf_counter() - t
        print(f"update() after changing one file      {t_inc:6.2f} s = {t_inc / t_full:.3f}x the "
              f"full build (chunked {st.chunked}, reused {st.reused}; BM25 "
              f"{st.bm25_seconds:.2f} s)")
        t = time.perf_counter()
        st = live.refresh()
        t_noop = time.perf_counter() - t
        print(f"refresh() with nothing changed        {t_noop:6.2f} s = {t_noop / t_full:.3f}x "
              f"(changed={st.changed})")

        # Retrieval: cursors at random lines of random files, on one core.
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        rng = np.random.default_rng(0)
        cursors = []
        while len(cursors) < args.queries:
            _, rel, text = files[int(rng.integers(len(files)))]
            lines = text.split("\n")
            if len(lines) < 40:
                continue
            cut = int(rng.integers(20, len(lines) - 5))
            cursors.append(("\n".join(lines[:cut]) + "\n", "\n".join(lines[cut:]), rel))
        ms, base_ms, found, imports = [], [], 0, 0
        bm = idx._bm25(0)
        for prefix, suffix, rel in cursors[:20]:  # warm-up
            idx.retrieve(prefix, suffix, path=rel)
        for prefix, suffix, rel in cursors:
            t = time.perf_counter()
            hits = idx.retrieve(prefix, suffix, path=rel)
            ms.append((time.perf_counter() - t) * 1e3)
            found += bool(hits)
            imports += any(h.reason == "import" for h in hits)
            window = "\n".join(prefix.split("\n")[-QUERY_PREFIX_LINES:] +
                               suffix.split("\n")[:QUERY_SUFFIX_LINES])
            t = time.perf_counter()
            toks = [w for w in dict.fromkeys(tokenize(window)) if w in bm.vocab_dict]
            if toks:
                bm.retrieve([toks], k=20, show_progress=False, n_threads=1)
            base_ms.append((time.perf_counter() - t) * 1e3)
        print(f"retrieve, {len(idx)} chunks, one core  {percentiles(ms)}   "
              f"({found}/{len(cursors)} with snippets, {imports} with an import definition)")
        print(f"baseline  bm25s retrieve, same tokens {percentiles(base_ms)}")
        print(f"   p95 ratio codetune / bm25s alone: "
              f"{np.percentile(ms, 95) / np.percentile(base_ms, 95):.2f}x; target p95 <= 25 ms")
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, range(os.cpu_count() or 1))

        if args.served:
            served_overhead(idx, cursors[:args.served], args.max_new)

        if not args.no_prepare:
            from codetune.config import PrepareConfig
            from codetune.context import index_dataset
            from codetune.data.prepare import prepare

            cfg = PrepareConfig(workers=2)
            t = time.perf_counter()
            prepare([str(corpus)], work / "ds0", cfg, progress=False)
            t0 = time.perf_counter() - t
            t = time.perf_counter()
            s = prepare([str(corpus)], work / "ds1", cfg, progress=False,
                        context_index=index_dataset)
            t1 = time.perf_counter() - t
            print(f"prepare --workers 2 without index     {t0:6.1f} s")
            print(f"prepare --workers 2 with index        {t1:6.1f} s = {t1 / t0:.2f}x "
                  f"({s.context['chunks']} chunks of {s.context['files']} train files, "
                  f"index {s.context['seconds']:.1f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def served_overhead(idx, cursors, max_new: int) -> None:
    """The same /infill requests with repository context (512 tokens) and without (0)."""
    import httpx
    import torch

    from codetune.evaluation.bpb import fit_lines
    from codetune.infer.loader import load
    from codetune.mini import default_model
    from codetune.serve.app import BackgroundServer, create_app
    from codetune.serve.context import ServeContext
    from codetune.serve.limits import ServeSettings

    torch.set_num_threads(1)
    loaded = load(default_model(), dtype="float32")
    # what an editor sends: the lines around the cursor, here up to 400 + 100 tokens
    tok = loaded.tokenizer
    bodies = [{"input_prefix": fit_lines(tok, p, 400, keep_end=True),
               "input_suffix": fit_lines(tok, s, 100, keep_end=False),
               "n_predict": max_new, "temperature": 0.0} for p, s, _ in cursors]
    rows = {}
    for budget in (0, 512):
        ctx = ServeContext(idx, budget) if budget else None
        app = create_app(loaded, ServeSettings(model_name="bench"), context=ctx)
        ms, prompt, used = [], [], 0
        with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=120) as c:
            c.post("/infill", json=bodies[0])  # warm-up
            for body in bodies:
                t = time.perf_counter()
                r = c.post("/infill", json=body)
                ms.append((time.perf_counter() - t) * 1e3)
                if r.status_code != 200:
                    raise SystemExit(f"/infill answered {r.status_code}: {r.text[:300]}")
                out = r.json()
                prompt.append(out["tokens_evaluated"])
                used += bool(out.get("context"))
        rows[budget] = (np.array(ms), np.array(prompt), used)
        print(f"served /infill, context-tokens {budget:3d}   {percentiles(ms)}   prompt "
              f"{np.mean(prompt):6.1f} tokens (mean), {used}/{len(bodies)} with snippets")
    (ms0, p0, _), (ms1, p1, _) = rows[0], rows[512]
    r50 = np.percentile(ms1, 50) / np.percentile(ms0, 50)
    r95 = np.percentile(ms1, 95) / np.percentile(ms0, 95)
    print(f"   context adds {np.mean(p1 - p0):.0f} prompt tokens per request (mean; "
          f"{np.mean(p1) / np.mean(p0):.2f}x); latency with / without: p50 {r50:.2f}x, "
          f"p95 {r95:.2f}x")

if __name__ == "__main__":
    sys.exit(main())
