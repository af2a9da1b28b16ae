"""Benchmark `codetune serve --upstream`: the latency codetune adds in front of an engine.

    python bench/upstream_bench.py                       # a tiny GPT-BigCode built in a temp folder
    python bench/upstream_bench.py --model runs/x        # a run folder or model folder
    python bench/upstream_bench.py --requests 100 --max-tokens 16 --clients 1 4

Two server processes on 127.0.0.1, both started with the `codetune` command: the upstream
(`codetune serve MODEL`, standing in for vLLM) and the front (`codetune serve MODEL --upstream
URL`, tokenizer only). The client (this process, httpx, keep-alive) sends the same FIM request
(prefix + suffix, greedy, --max-tokens) alternately to the upstream directly and through the
front, so drift in machine load hits both alike.

- baseline: the upstream called directly with the FIM prompt already formatted (what a client
  of vLLM must send), non-streaming.
- front: the same completion requested from the front with `suffix` (it builds the prompt,
  tokenizes it for its limits, streams from the upstream and applies the Finisher).

Reports latency p50 / p95 (ms) for each, the added latency (front minus direct, p50 and p95 of
the per-pair differences), and the ratio front / direct. With --clients N > 1, N threads each
run pairs concurrently (the front's --slots default, 64, is not the limit here). Streaming:
time to the first text chunk through the front vs directly.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
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


def build_tiny(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.tiny import build_model, build_tokenizer

    tok = build_tokenizer(folder / "tok")
    return build_model(folder / "model", "gpt_bigcode", tok, layers=4, hidden=256)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(args: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "codetune", "serve", *args, "--port",
                             str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _row(clients: int, per: int, up_url: str, front_url: str, direct_body, front_body) -> dict:
    """`clients` threads, each sending `per` (direct, front) pairs, alternating which goes
    first; latencies in ms."""
    import httpx

    direct, via, diff = [], [], []
    lock = threading.Lock()

    def worker(k: int) -> None:
        with httpx.Client(timeout=60) as c:
            for j in range(per):
                i = k * per + j
                order = [("d", up_url, direct_body(i)), ("f", front_url, front_body(i))]
                if i % 2:
                    order.reverse()
                got = {}
                for tag, url, body in order:
                    t0 = time.perf_counter()
                    r = c.post(url + "/v1/completions", json=body)
                    got[tag] = (time.perf_counter() - t0) * 1000
                    assert r.status_code == 200, r.text
                with lock:
                    direct.append(got["d"])
                    via.append(got["f"])
                    diff.append(got["f"] - got["d"])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"clients": clients, "pairs": len(diff),
            "direct_p50": pct(direct, 0.5), "direct_p95": pct(direct, 0.95),
            "front_p50": pct(via, 0.5), "front_p95": pct(via, 0.95),
            "added_p50": pct(diff, 0.5), "added_p95": pct(diff, 0.95),
            "ratio_p50": pct(via, 0.5) / pct(direct, 0.5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="run or model folder (default: a tiny GPT-BigCode)")
    ap.add_argument("--requests", type=int, default=60, help="pairs per row")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args()

    import httpx

    from codetune.infer.loader import tokenizer_and_fim

    tmp = Path(tempfile.mkdtemp(prefix="upstream-bench-"))
    model = a.model or str(build_tiny(tmp))
    _, fim = tokenizer_and_fim(model)
    f = fim.format
    up_port, front_port = free_port(), free_port()
    up = start([model, "--model-name", "tiny", "--slots", "4"], up_port, tmp / "up.log")
    front = start([model, "--upstream", f"http://127.0.0.1:{up_port}", "--upstream-model",
                   "tiny"], front_port, tmp / "front.log")
    rows = []
    try:
        def direct_body(i: int) -> dict:
            return {"model": "tiny", "prompt": f"{f.prefix}{PREFIX.format(i=i)}{f.suffix}"
                    f"{SUFFIX}{f.middle}", "max_tokens": a.max_tokens, "temperature": 0}

        def front_body(i: int) -> dict:
            return {"model": "tiny", "prompt": PREFIX.format(i=i), "suffix": SUFFIX,
                    "max_tokens": a.max_tokens, "temperature": 0}

        up_url, front_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{front_port}"
        with httpx.Client(timeout=60) as c:  # warm both (first requests load lazily)
            for i in range(3):
                c.post(up_url + "/v1/completions", json=direct_body(i))
                c.post(front_url + "/v1/completions", json=front_body(i))
            same = [c.post(up_url + "/v1/completions", json=direct_body(i)).json()["choices"][0]
                    ["text"] == c.post(front_url + "/v1/completions", json=front_body(i)).json()
                    ["choices"][0]["text"] for i in range(5)]
        for clients in a.clients:
            rows.append(_row(clients, max(1, a.requests // clients), up_url, front_url,
                             direct_body, front_body))
        ttfb = {"d": [], "f": []}
        with httpx.Client(timeout=60) as c:
            for i in range(min(a.requests, 30)):
                for tag, url, body in (("d", up_url, direct_body(i)), ("f", front_url,
                                                                        front_body(i))):
                    t0 = time.perf_counter()
                    with c.stream("POST", url + "/v1/completions",
                                  json={**body, "stream": True}) as r:
                        for line in r.iter_lines():
                            if line.startswith("data:") and '"text": ""' not in line:
                                break
                    ttfb[tag].append((time.perf_counter() - t0) * 1000)
    finally:
        for p in (front, up):
            p.terminate()
            p.wait(10)

    load = os.getloadavg()[0]
    print(f"model {model}; max_tokens {a.max_tokens}; same greedy text direct and through the "
          f"front: {sum(same)}/{len(same)}; load average {load:.1f} on {os.cpu_count()} CPUs")
    print("| clients | pairs | direct p50 / p95 ms | front p50 / p95 ms | added p50 / p95 ms | "
          "front / direct (p50) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['pairs']} | {r['direct_p50']:.1f} / {r['direct_p95']:.1f} "
              f"| {r['front_p50']:.1f} / {r['front_p95']:.1f} | {r['added_p50']:.1f} / "
              f"{r['added_p95']:.1f} | {r['ratio_p50']:.2f}× |")
    print(f"streaming, time to first text chunk p50: direct {statistics.median(ttfb['d']):.1f} ms,"
          f" front {statistics.median(ttfb['f']):.1f} ms")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "ttfb": ttfb, "load": load}, indent=1))


if __name__ == "__main__":
    main()
