"""Does the exported GGUF, served by a real llama-server, complete held-out holes as codetune's
own engine does on the merged model? Share of identical middles, every difference classified.

    python bench/llama_agreement.py MERGED DATASET --gguf F16.gguf --gguf Q8_0.gguf
                                    [--gguf Q4_K_M.gguf] [--single 40] [--multi 10]
                                    [--prompt-tokens 1024] [--threads N] [--out FILE.json]

MERGED: the merged model folder (`codetune merge RUN`, float32), the reference; each GGUF was
exported from the same run (`codetune export RUN --to gguf --type T`). DATASET: the run's
`codetune prepare` folder; the holes are eval's own (single-line and block-body holes of its
held-out files, a seeded sample), each prompt cut to --prompt-tokens around the hole.

Reference: codetune's torch engine (`evaluation.run.predict`, what `codetune eval` runs:
greedy, batched, ended by codetune's rules). Each GGUF is served by its own llama-server (one
slot: no batch effects) and asked three ways, greedy, the same token budget, "\\n" as the stop
string of single-line holes (what an editor asking for one line sends):

  ids      `/completion` with codetune's prompt ids, ended by codetune from the returned ids:
           what `codetune eval --gguf` and `serve --upstream` do. Isolates the weights and the
           runtime's arithmetic.
  v1       `/v1/completions` with codetune's prompt as text (temperature 0): an editor set up
           with codetune's FIM template talking to llama.cpp directly; its text as returned.
  infill   `/infill` with the same prefix and suffix: llama.cpp builds the FIM prompt itself
           from the GGUF's FIM metadata; its text as returned.

A middle is identical when the text equals the reference byte for byte. Each difference gets
the first class that explains it:

  suffix rule     codetune's ending applied to llama.cpp's text gives the reference: the
                  completion ran on into the suffix (or past another of codetune's ending
                  rules) and llama.cpp returned the rest;
  tokenization    the prompt llama.cpp ran is not codetune's ids (v1: `/tokenize` of the text
                  differs; infill: llama.cpp's own layout, which for a model with repository
                  tokens puts a placeholder repository name and file name in front);
  stop            one text is a prefix of the other: the same tokens, ended elsewhere (an
                  end-of-generation token one side does not stop on, the token budget);
  sampling        the greedy paths part at a token: the arithmetic (F16 or quantized weights,
                  llama.cpp's kernels vs torch float32) turned a near tie the other way.

Prints one table (route x file: identical share and the classes) and writes --out as JSON with
every task's texts. Needs llama-server (bash scripts/llama-cpp.sh). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

CLASSES = ("suffix rule", "tokenization", "stop", "sampling")
ROUTES = ("ids", "v1", "infill")


def classify(ref: str, got: str, prompt_same: bool,
             ended: tuple[str, str | None] | None, encode=None) -> str:
    """The first class that explains `got` != `ref` (see the module's docstring). `ended`:
    codetune's ending applied to `got` and why it cut (None when the route's text was already
    ended by codetune). `encode(text) -> ids`: a text that is a prefix of the other is a stop
    only where its tokens are a prefix too ("=" * 50 is not the start of "=" * 58's tokens:
    the paths parted at a token, a near tie)."""
    if got == ref:
        return "identical"
    if ended is not None and ended[0] == ref:
        return "suffix rule" if ended[1] == "suffix" else "stop"
    if not prompt_same:
        return "tokenization"
    if got.startswith(ref) or ref.startswith(got):
        if encode is None:
            return "stop"
        a, b = encode(ref), encode(got)
        short, long_ = (a, b) if len(a) <= len(b) else (b, a)
        return "stop" if long_[:len(short)] == short else "sampling"
    return "sampling"


def print_table(summary: dict[str, dict[str, Any]], n: int, args: argparse.Namespace,
                note: str) -> None:
    print(f"\n{Path(args.merged).name} on {Path(args.dataset).name}: {n} held-out holes "
          f"({args.single} single-line, {args.multi} block bodies), prompts of "
          f"{args.prompt_tokens} tokens; {len(os.sched_getaffinity(0))} CPUs, "
          f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.1f}; {note}")
    print("\n| file | route | identical | " + " | ".join(CLASSES) + " |")
    print("|---|---|---|" + "---|" * len(CLASSES))
    for ftype, s in summary.items():
        for route in ROUTES:
            c = s[route]
            same = c.get("identical", 0)
            print(f"| {ftype} | {route} | {same}/{n} ({100 * same / n:.1f} %) | " +
                  " | ".join(str(c.get(k, 0)) for k in CLASSES) + " |")


def reclassify(args: argparse.Namespace, tasks: dict[str, Any], finisher, encode) -> int:
    """Classify every text of --out again with today's `classify`; rewrite --out."""
    from codetune import outputs

    data = json.loads(args.out.read_text(encoding="utf-8"))
    summary = data["summary"]
    for ftype, s in summary.items():
        counts = {r: Counter() for r in ROUTES}
        for rec in data["tasks"]:
            fin = finisher(tasks[rec["task"]])
            for route in ROUTES:
                got = rec[ftype][route]
                ended = None if route == "ids" else codetune_ending(fin, got["text"])
                got["class"] = classify(rec["torch"], got["text"], got["prompt_same"], ended,
                                        encode)
                counts[route][got["class"]] += 1
        s.update({r: dict(counts[r]) for r in ROUTES})
    outputs.write_json(args.out, data)
    print_table(summary, len(data["tasks"]), args, "reclassified")
    return 0


def codetune_ending(fin, text: str) -> tuple[str, str | None]:
    """codetune's ending (`Finisher`: stop strings, the suffix starting over) of a whole text."""
    cut, why = fin.step(text)
    return (cut, why) if why is not None else fin.finish(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("merged")
    ap.add_argument("dataset")
    ap.add_argument("--gguf", action="append", default=[])
    ap.add_argument("--single", type=int, default=40, help="single-line holes")
    ap.add_argument("--multi", type=int, default=10, help="block-body holes")
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--threads", type=int, help="llama-server threads (default: all CPUs)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/llama_agreement.json"))
    ap.add_argument("--reclassify", action="store_true",
                    help="classify the texts in --out again (no model, no server): for a "
                         "JSON written before a change to the classes")
    args = ap.parse_args(argv)
    if not args.gguf and not args.reclassify:
        ap.error("give --gguf FILE (one or more), or --reclassify")

    from codetune import outputs, runtimes
    from codetune.config import EvalConfig
    from codetune.data import store
    from codetune.evaluation.context import fitted
    from codetune.evaluation.run import build_tasks, capped, predict, task_prompts
    from codetune.infer import loader
    from codetune.infer.finish import Finisher
    from codetune.infer.generate import GenParams, _Ending, _finisher
    from codetune.infer.llama_server import LlamaServer
    from codetune.infer.prompts import stop_ids

    cfg = EvalConfig(single_line_per_file=8, multi_line_per_file=2, cross_file_per_file=0,
                     max_tasks=10**6, prompt_tokens=args.prompt_tokens, context="off",
                     bpb=False)
    rows = store.held_out_files(args.dataset, None)
    every = build_tasks(rows, cfg)
    tasks = (capped([t for t in every if t.kind == "single_line"], args.single, 0) +
             capped([t for t in every if t.kind == "multi_line"], args.multi, 0))

    def params(task: Any) -> GenParams:
        single = task.kind == "single_line"
        return GenParams(max_new_tokens=cfg.max_new_tokens_single if single
                         else cfg.max_new_tokens_multi, greedy=True,
                         stop=("\n",) if single else ())

    def finisher(task: Any) -> Finisher:
        return Finisher(params(task).stop, suffix=task.suffix, prefix=task.prefix)

    if args.reclassify:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.merged)
        return reclassify(args, {t.task_id: t for t in tasks}, finisher,
                          lambda text: tok.encode(text, add_special_tokens=False))
    if runtimes.binary("llama-server") is None:
        raise SystemExit(runtimes.missing("llama-server"))
    loaded = loader.load(args.merged, quantization="none")
    prompts = task_prompts(loaded, tasks, cfg)

    def encode(text: str) -> list[int]:
        return loaded.tokenizer.encode(text, add_special_tokens=False)
    t0 = time.perf_counter()
    ref = predict(loaded, tasks, cfg, prompts=prompts)
    torch_s = time.perf_counter() - t0
    print(f"torch reference: {len(tasks)} holes in {torch_s:.0f} s", file=sys.stderr)
    stops = set(stop_ids(loaded))

    records: list[dict[str, Any]] = [
        {"task": t.task_id, "kind": t.kind, "path": t.path, "truth": t.middle,
         "torch": g.text, "torch_trimmed_suffix": g.trimmed_suffix}
        for t, g in zip(tasks, ref, strict=True)]
    summary: dict[str, dict[str, Any]] = {}

    def write(summary: dict[str, dict[str, Any]]) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        outputs.write_json(args.out, {"summary": summary, "tasks": records,
                                      "torch_seconds": round(torch_s, 1)})

    for gguf in args.gguf:
        name = Path(gguf).name
        t0 = time.perf_counter()
        with LlamaServer.start(gguf, ctx=args.prompt_tokens + 512, parallel=1,
                               threads=args.threads) as srv:
            srv.check_model(loaded.tokenizer, loaded.fim, args.merged)
            ftype = srv.ftype or name
            counts = {r: Counter() for r in ROUTES}
            for t, p, rec in zip(tasks, prompts, records, strict=True):
                gp = params(t)
                hole = (t.prefix, t.suffix)
                # ids: codetune's prompt ids, ended by codetune (eval --gguf's path)
                r = srv.complete(p, gp.max_new_tokens, gp, tuple(gp.stop))
                ending = _Ending(loaded, _finisher(gp, hole), stops)
                if not any(ending.push(int(x)) for x in r.get("tokens") or []):
                    ending.end("length" if r.get("stop_type") == "limit" else "stop")
                ids_text = ending.text or ""
                # v1: the same prompt as text, the text as returned
                text = loaded.tokenizer.decode(p, skip_special_tokens=False)
                same_tokens = srv.tokenize(text) == list(p)
                v1 = srv._call("POST", "/v1/completions", {
                    "prompt": text, "max_tokens": gp.max_new_tokens, "temperature": 0,
                    "stop": list(gp.stop), "cache_prompt": False})
                v1_text = v1["choices"][0]["text"]
                # infill: llama.cpp's own FIM prompt from the same (cut) prefix and suffix
                pre, suf = fitted(loaded, t, cfg.prompt_tokens)
                inf = srv._call("POST", "/infill", {
                    "input_prefix": pre, "input_suffix": suf, "n_predict": gp.max_new_tokens,
                    "cache_prompt": False, "stream": False, "stop": list(gp.stop),
                    "repeat_penalty": 1.0, **srv._sampling(gp)})
                inf_text = inf.get("content", "")
                inf_same = srv.tokenize(inf.get("prompt", "")) == list(p)
                fin = finisher(t)
                out = {}
                for route, got, same, ended in (
                        ("ids", ids_text, True, None),
                        ("v1", v1_text, same_tokens, codetune_ending(fin, v1_text)),
                        ("infill", inf_text, inf_same, codetune_ending(fin, inf_text))):
                    c = classify(rec["torch"], got, same, ended, encode)
                    counts[route][c] += 1
                    out[route] = {"text": got, "class": c, "prompt_same": same}
                rec[ftype] = out
            seconds = time.perf_counter() - t0
        summary[ftype] = {"file": name, "seconds": round(seconds, 1),
                          **{r: dict(counts[r]) for r in ROUTES}}
        print(f"{ftype}: {seconds:.0f} s", file=sys.stderr)
        write(summary)  # after every file: a long run cut off keeps what it measured

    print_table(summary, len(tasks), args, f"torch reference {torch_s:.0f} s")
    print(f"\nevery task: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
