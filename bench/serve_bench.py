"""Benchmark `codetune serve`: latency and throughput with concurrent clients, and the server's
overhead against generating the same completions in-process.

    python bench/serve_bench.py                       # a tiny GPT-BigCode built in a temp folder
    python bench/serve_bench.py --model runs/x        # a run folder or model folder
    python bench/serve_bench.py --requests 64 --max-tokens 64 --clients 1 4 8

Workload: one FIM prompt (prefix + suffix, ~90 tokens), request i sampled with seed i (so every
run, in-process or served, generates exactly the same tokens), --max-tokens new tokens at most.

- baseline: `GenerationStream(...).run()` in this process, in one worker thread (as the server runs
  it), one request after another: what the server does inside, minus HTTP, JSON, the event loop
  and queueing. Measured before and after the server rows; the mean of the two is the baseline.
- served: uvicorn on 127.0.0.1 (ephemeral port, loopback only), N client threads each sending
  requests one after another over a keep-alive connection (httpx, non-streaming), --requests in
  all per row; plus a streaming row with 1 client (time to first text chunk).

With --flood N: only the hostile row instead. N concurrent ~1 MB prompts over
--max-prompt-tokens (200) while /health is polled: how long until all are refused, and /health
latency under that load as a ratio to /health idle (measured first, same server). Once with the
early character bound (refused untokenized), once without it (each prompt tokenized in the
tokenizer pool, then refused by its token count).

Reports per row: latency p50 / p95 (ms, end to end), completions/s and generated tokens/s over
the row's wall time, and the ratio to the baseline (latency: served / in-process, lower is
better; throughput: served / in-process). With --slots 2 (the default) two requests generate
at once, interleaved token by token under one lock: more clients raise latency, not throughput.
Bounded: --requests per row and --time-limit seconds per row (a row stops issuing requests
when it runs out of time, and says so).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PREFIX = ("def handle_{i}(request):\n    user = request.user\n    if not user.is_authenticated:\n"
          "        return redirect(\"/login\")\n    orders = Order.objects.filter(owner=user)\n")
SUFFIX = "\n    return render(request, \"orders/list.html\", {\"orders\": orders})\n"


def build_tiny(folder: Path, layers: int, hidden: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.tiny import build_model, build_tokenizer

    tok = build_tokenizer(folder / "tok")
    return build_model(folder / "model", "gpt_bigcode", tok, layers=layers, hidden=hidden)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def in_process(loaded, n: int, max_tokens: int, limit: float) -> dict:
    """The baseline, run in a worker thread as the server runs it: on the CPU, torch in the main
    thread and in other threads can differ several-fold in speed (OpenMP settings are
    per-thread), which would otherwise be measured as server overhead."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_in_process, loaded, n, max_tokens, limit).result()


def _in_process(loaded, n: int, max_tokens: int, limit: float) -> dict:
    from codetune.infer.generate import GenerationStream, GenParams
    from codetune.infer.prompts import fim_prompt

    lat, tokens, t0 = [], 0, time.perf_counter()
    for i in range(n):
        if time.perf_counter() - t0 > limit:
            break
        t = time.perf_counter()
        prompt = fim_prompt(loaded, PREFIX.format(i=i % 10), SUFFIX)
        s = GenerationStream(loaded, prompt, GenParams(max_new_tokens=max_tokens, temperature=1.0,
                                                  seed=i))
        s.run()
        lat.append(time.perf_counter() - t)
        tokens += s.completion_tokens
    return {"latency": lat, "tokens": tokens, "wall": time.perf_counter() - t0}


def served(url: str, clients: int, n: int, max_tokens: int, limit: float,
           stream: bool = False) -> dict:
    import httpx

    lat, ttft, tokens, lock = [], [], [0], threading.Lock()
    counter = iter(range(n))
    t0 = time.perf_counter()

    def client() -> None:
        with httpx.Client(timeout=120) as h:
            for i in counter:  # shared iterator: each request index once (next() holds the GIL)
                if time.perf_counter() - t0 > limit:
                    return
                body = {"model": "bench", "prompt": PREFIX.format(i=i % 10), "suffix": SUFFIX,
                        "max_tokens": max_tokens, "temperature": 1.0, "seed": i}
                t = time.perf_counter()
                if stream:
                    first, used = None, 0
                    body["stream_options"] = {"include_usage": True}
                    with h.stream("POST", url + "/v1/completions",
                                  json={**body, "stream": True}) as r:
                        r.raise_for_status()
                        for line in r.iter_lines():
                            if not line.startswith("data: {"):
                                continue
                            data = json.loads(line[6:])
                            if first is None and data["choices"] and data["choices"][0]["text"]:
                                first = time.perf_counter() - t
                            used = data.get("usage", {}).get("completion_tokens", used)
                else:
                    r = h.post(url + "/v1/completions", json=body)
                    r.raise_for_status()
                    used = r.json()["usage"]["completion_tokens"]
                done = time.perf_counter() - t
                with lock:
                    lat.append(done)
                    tokens[0] += used
                    if stream and first is not None:
                        ttft.append(first)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return {"latency": lat, "tokens": tokens[0], "wall": time.perf_counter() - t0,
            "ttft": ttft}


def flood(url: str, n: int) -> dict:
    """n concurrent ~1 MB prompts (POSTed as prepared bytes) while one client polls /health."""
    import httpx

    body = json.dumps({"prompt": "x" * 1_000_000}).encode()
    codes, health, done = [], [], threading.Event()
    # one client shared by the n threads (each its own would build n SSL contexts at once)
    shared = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=n))

    def oversized() -> None:
        codes.append(shared.post(url + "/v1/completions", content=body,
                                 headers={"content-type": "application/json"}).status_code)

    def poll() -> None:
        with httpx.Client(timeout=600) as h:
            while not done.is_set():
                t = time.perf_counter()
                h.get(url + "/health")
                health.append(time.perf_counter() - t)
                time.sleep(0.02)

    idle = []
    with httpx.Client() as h:
        for _ in range(20):
            t = time.perf_counter()
            h.get(url + "/health")
            idle.append(time.perf_counter() - t)
    poller = threading.Thread(target=poll)
    poller.start()
    t0 = time.perf_counter()
    clients = [threading.Thread(target=oversized) for _ in range(n)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    wall = time.perf_counter() - t0
    done.set()
    poller.join()
    shared.close()
    return {"wall": wall, "codes": sorted(set(codes)), "health": health, "idle": idle}


def run_flood(loaded, n: int) -> None:
    from codetune.serve.app import BackgroundServer, create_app
    from codetune.serve.limits import ServeSettings

    print(f"\n| {n} x 1 MB prompts over 200 tokens | refused in s | codes | /health n | "
          "p50 ms | max ms | max / idle p50 |")
    print("|---|---|---|---|---|---|---|")
    for early in (True, False):
        app = create_app(loaded, ServeSettings(model_name="bench", max_prompt_tokens=200))
        if not early:
            app.state.engine.max_prompt_chars = None
        with BackgroundServer(app) as url:
            r = flood(url, n)
        h, idle = r["health"], statistics.median(r["idle"])
        name = "early bound (untokenized)" if early else "tokenized in the pool"
        print(f"| {name} | {r['wall']:.2f} | {r['codes']} | {len(h)} | {pct(h, .5) * 1e3:.1f} | "
              f"{max(h) * 1e3:.1f} | {max(h) / idle:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="run folder or model folder (default: a tiny GPT-BigCode)")
    p.add_argument("--layers", type=int, default=4, help="tiny model layers (default 4)")
    p.add_argument("--hidden", type=int, default=256, help="tiny model width (default 256)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--requests", type=int, default=32, help="requests per row (default 32)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--time-limit", type=float, default=60, help="seconds per row (default 60)")
    p.add_argument("--flood", type=int, metavar="N",
                   help="only the hostile row: N concurrent ~1 MB oversized prompts")
    args = p.parse_args()

    import torch

    from codetune.infer.loader import load
    from codetune.serve.app import BackgroundServer, create_app
    from codetune.serve.limits import ServeSettings

    with tempfile.TemporaryDirectory(prefix="codetune-serve-bench-") as tmp:
        target = args.model or str(build_tiny(Path(tmp), args.layers, args.hidden))
        loaded = load(target, dtype="float32" if not torch.cuda.is_available() else "auto")
        device = next(loaded.model.parameters()).device
        what = args.model or f"tiny GPT-BigCode, {args.layers} layers, hidden {args.hidden}"
        print(f"model: {what}; device: {device}; torch threads: {torch.get_num_threads()}; "
              f"cpus: {os.cpu_count()}")
        if args.flood:
            return run_flood(loaded, args.flood)
        print(f"workload: {args.requests} requests per row, FIM prompt, max_tokens "
              f"{args.max_tokens}, sampled (seed = request index); server slots {args.slots}")
        in_process(loaded, 3, args.max_tokens, args.time_limit)  # warm-up
        rows = [("in-process (before)", in_process(loaded, args.requests, args.max_tokens,
                                                   args.time_limit))]
        settings = ServeSettings(model_name="bench", slots=args.slots, queue=64,
                                 max_tokens=args.max_tokens)
        with BackgroundServer(create_app(loaded, settings)) as url:
            served(url, 1, 2, args.max_tokens, args.time_limit)  # warm-up
            for n in args.clients:
                rows.append((f"served, {n} client{'s' * (n > 1)}",
                             served(url, n, args.requests, args.max_tokens, args.time_limit)))
            rows.append(("served, 1 client, stream", served(url, 1, args.requests,
                                                            args.max_tokens, args.time_limit,
                                                            stream=True)))
        rows.append(("in-process (after)", in_process(loaded, args.requests, args.max_tokens,
                                                      args.time_limit)))
    base_lat = statistics.mean([statistics.mean(rows[0][1]["latency"]),
                                statistics.mean(rows[-1][1]["latency"])])
    base_rate = statistics.mean([len(r["latency"]) / r["wall"] for _, r in (rows[0], rows[-1])])
    print(f"\n| {'run':<26} | n  | p50 ms | p95 ms | compl/s | tok/s  | latency × | compl/s × |")
    print(f"|{'-' * 28}|----|--------|--------|---------|--------|-----------|-----------|")
    for name, r in rows:
        lat, n = r["latency"], len(r["latency"])
        rate = n / r["wall"]
        note = "" if n == args.requests or name.startswith("in-process") and n else " (time limit)"
        print(f"| {name + note:<26} | {n:<2} | {pct(lat, .5) * 1e3:6.1f} | {pct(lat, .95) * 1e3:6.1f} "
              f"| {rate:7.2f} | {r['tokens'] / r['wall']:6.0f} | "
              f"{statistics.mean(lat) / base_lat:9.2f} | {rate / base_rate:9.2f} |")
        if r.get("ttft"):
            print(f"|   time to first chunk      |    | {pct(r['ttft'], .5) * 1e3:6.1f} | "
                  f"{pct(r['ttft'], .95) * 1e3:6.1f} |         |        |           |           |")
    print("\nlatency ×: mean latency / in-process mean latency (same requests, same tokens); "
          "compl/s ×: completions per second / in-process.")


if __name__ == "__main__":
    main()
