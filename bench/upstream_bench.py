"""Benchmark `codetune serve --upstream`: the latency codetune adds in front of an engine.

    python bench/upstream_bench.py                       # a tiny GPT-BigCode built in a temp folder
    python bench/upstream_bench.py --model runs/x        # a run folder or model folder
    python bench/upstream_bench.py --requests 100 --max-tokens 16 --clients 1 4
    python bench/upstream_bench.py --llama-server        # a real llama-server as the upstream
    python bench/upstream_bench.py --llama-server X.gguf --model HF_FOLDER --requests 100

Two server processes on 127.0.0.1, both started by the bench: the upstream and the front
(`codetune serve MODEL --upstream URL`, tokenizer only). The upstream is `codetune serve MODEL`
(standing in for vLLM) or, with --llama-server, llama.cpp's `llama-server -m GGUF` (default GGUF:
Qwen2.5-Coder-0.5B Q4_K_M in ~/.cache/codetune-models/qwen2.5-coder-0.5b/, whose `hf/` folder is
then the front's MODEL; the binary from `codetune.export.llama_cpp.find()`; --llama-threads 1,
so that on a small machine the engine's busy-polling threads leave a core to the front and the
client, as a GPU engine would). The client (this process, httpx, keep-alive) sends the same FIM
request (prefix + suffix, greedy, --max-tokens) to the upstream directly and through the front,
alternating which goes first, so drift in machine load hits both alike.

- baseline: the upstream called directly with the FIM prompt already formatted (what a client
  of vLLM or llama-server must send), non-streaming.
- front: the same completion requested from the front with `suffix` (it builds the prompt,
  tokenizes it for its limits, streams from the upstream and applies the Finisher).

Reports latency p50 / p95 (ms) for each, the added latency (front minus direct, p50 and p95 of
the per-pair differences) and the ratio front / direct. With --clients N > 1, N threads each
run pairs concurrently. Streaming: time to the first text chunk through the front vs directly.

With llama-server and one client, also each request's latency net of the engine's own time for
it (the `total time` llama-server logs per request: prompt evaluation plus generation), per
path, and their per-pair difference: what the front adds, without the spread of the generation
itself (tens of ms on a shared CPU, more than the front's share). The llama.cpp prompt is one
the model completes with 16 tokens of code that the Finisher does not cut, the same for every
request (llama-server's prompt cache then leaves 1 token to evaluate each time), so both paths
do the same work; the bench checks that (front text == direct text) and reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
# for a real model: Qwen2.5-Coder-0.5B writes 16 tokens of body here (the one above it
# answers by repeating the suffix, which the front's Finisher cuts: less work through the front)
LLAMA_PREFIX = ("def parse_{i}(path):\n    \"\"\"Read the CSV file at path and return a list of "
                "dicts, one per row.\"\"\"\n    rows = []\n")
LLAMA_SUFFIX = "\n    return rows\n"
QWEN = Path.home() / ".cache" / "codetune-models" / "qwen2.5-coder-0.5b"
TOTAL_TIME = re.compile(rb"total time =\s*([0-9.]+) ms")


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


def wait_ready(proc: subprocess.Popen, port: int, log: Path, what: str) -> subprocess.Popen:
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{what} did not start: {log.read_text()[-2000:]}")


def start(args: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "codetune", "serve", *args, "--port",
                             str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    return wait_ready(proc, port, log, "codetune serve")


def start_llama_server(gguf: str, port: int, log: Path, threads: int) -> subprocess.Popen:
    from codetune.export.llama_cpp import find

    binary = find()["server"]
    if binary is None:
        raise SystemExit("llama-server not found: build it with `bash scripts/llama-cpp.sh`")
    # one slot: one client at a time here, and its log lines then follow the requests in order
    proc = subprocess.Popen([binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port),
                             "-c", "4096", "-np", "1", "-t", str(threads), "--no-webui"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    return wait_ready(proc, port, log, "llama-server")


class EngineTimes:
    """The `total time` llama-server logs for each request, in order (one slot, one client)."""

    def __init__(self, log: Path) -> None:
        self.log, self.seen = log, len(TOTAL_TIME.findall(log.read_bytes()))

    def next(self, timeout: float = 5.0) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = TOTAL_TIME.findall(self.log.read_bytes())
            if len(found) > self.seen:
                self.seen += 1
                return float(found[self.seen - 1])
            time.sleep(0.005)  # its log is written by a thread of its own, just after the reply
        return None


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _row(clients: int, per: int, up_url: str, front_url: str, direct_body, front_body,
         engine: EngineTimes | None = None) -> dict:
    """`clients` threads, each sending `per` (direct, front) pairs, alternating which goes
    first; latencies in ms. With `engine` (one client): also net of the engine's time."""
    import httpx

    direct, via, diff, net_d, net_f, net_diff, same = [], [], [], [], [], [], []
    lock = threading.Lock()

    def worker(k: int) -> None:
        with httpx.Client(timeout=120) as c:
            for j in range(per):
                i = k * per + j
                order = [("d", up_url, direct_body(i)), ("f", front_url, front_body(i))]
                if i % 2:
                    order.reverse()
                got, net, text = {}, {}, {}
                for tag, url, body in order:
                    t0 = time.perf_counter()
                    r = c.post(url + "/v1/completions", json=body)
                    got[tag] = (time.perf_counter() - t0) * 1000
                    assert r.status_code == 200, r.text
                    text[tag] = r.json()["choices"][0]["text"]
                    if engine is not None:
                        e = engine.next()
                        net[tag] = None if e is None else got[tag] - e
                with lock:
                    direct.append(got["d"])
                    via.append(got["f"])
                    diff.append(got["f"] - got["d"])
                    same.append(text["d"] == text["f"])
                    if net and None not in net.values():
                        net_d.append(net["d"])
                        net_f.append(net["f"])
                        net_diff.append(net["f"] - net["d"])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    row = {"clients": clients, "pairs": len(diff), "same_text": sum(same),
           "direct_p50": pct(direct, 0.5), "direct_p95": pct(direct, 0.95),
           "front_p50": pct(via, 0.5), "front_p95": pct(via, 0.95),
           "added_p50": pct(diff, 0.5), "added_p95": pct(diff, 0.95),
           "ratio_p50": pct(via, 0.5) / pct(direct, 0.5)}
    if net_diff:
        row.update(net_pairs=len(net_diff), net_direct_p50=pct(net_d, 0.5),
                   net_direct_p95=pct(net_d, 0.95), net_front_p50=pct(net_f, 0.5),
                   net_front_p95=pct(net_f, 0.95), net_added_p50=pct(net_diff, 0.5),
                   net_added_p95=pct(net_diff, 0.95), net_added_mean=statistics.mean(net_diff))
    return row


def first_chunks(n: int, up_url: str, front_url: str, direct_body, front_body) -> dict:
    """Time to the first text chunk of a streamed completion, ms, per path (pairs alternate):
    "d" / "f" any text, "d_code" / "f_code" the first text that is not only whitespace (the
    front holds back an indentation that may still begin the suffix's line: see the Finisher)."""
    import httpx

    ttfb: dict[str, list[float]] = {"d": [], "f": [], "d_code": [], "f_code": []}
    with httpx.Client(timeout=120) as c:
        for i in range(n):
            order = [("d", up_url, direct_body(i)), ("f", front_url, front_body(i))]
            if i % 2:
                order.reverse()
            for tag, url, body in order:
                t0 = time.perf_counter()
                first = code = None
                # a new connection for each stream, both ways: llama-server closes one after a
                # stream, and a client that sent the next request down it would get an error
                with c.stream("POST", url + "/v1/completions", json={**body, "stream": True},
                              headers={"Connection": "close"}) as r:
                    for line in r.iter_lines():
                        if code is None and line.startswith("data:") and line != "data: [DONE]":
                            texts = [ch.get("text") or "" for ch in
                                     json.loads(line[5:]).get("choices") or []]
                            now = (time.perf_counter() - t0) * 1000
                            if first is None and any(texts):
                                first = now
                            if any(t.strip() for t in texts):
                                code = now
                ttfb[tag].append(first if first is not None else float("nan"))
                ttfb[tag + "_code"].append(code if code is not None else float("nan"))
    return ttfb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="run or model folder (default: a tiny GPT-BigCode; with "
                                    "--llama-server: hf/ beside the GGUF)")
    ap.add_argument("--llama-server", nargs="?", const=str(QWEN / "model.gguf"), metavar="GGUF",
                    help="upstream: llama.cpp's llama-server on this GGUF (default: "
                         f"{QWEN / 'model.gguf'})")
    ap.add_argument("--llama-threads", type=int, default=1, help="llama-server's -t")
    ap.add_argument("--requests", type=int, default=60, help="pairs per row")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--clients", type=int, nargs="+", default=None,
                    help="rows of concurrent clients (default: 1 4; with --llama-server: 1)")
    ap.add_argument("--stream-requests", type=int, default=30,
                    help="pairs of streamed requests for the first-chunk times")
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args()

    import httpx

    from codetune.infer.finish import trim_completion
    from codetune.infer.loader import tokenizer_and_fim

    llama = a.llama_server is not None
    clients = a.clients or ([1] if llama else [1, 4])
    tmp = Path(tempfile.mkdtemp(prefix="upstream-bench-"))
    if llama:
        hf = Path(a.llama_server).parent / "hf"
        model = a.model or (str(hf) if hf.is_dir() else None)
        if model is None:
            raise SystemExit("--model: the transformers folder of the GGUF's model (its "
                             "tokenizer, for the front)")
    else:
        model = a.model or str(build_tiny(tmp))
    _, fim = tokenizer_and_fim(model)
    f = fim.format
    prefix, suffix = (LLAMA_PREFIX, LLAMA_SUFFIX) if llama else (PREFIX, SUFFIX)
    up_port, front_port = free_port(), free_port()
    engine = None
    if llama:
        up = start_llama_server(a.llama_server, up_port, tmp / "up.log", a.llama_threads)
        front_args = [model, "--upstream", f"http://127.0.0.1:{up_port}/v1"]
    else:
        up = start([model, "--model-name", "tiny", "--slots", "4"], up_port, tmp / "up.log")
        front_args = [model, "--upstream", f"http://127.0.0.1:{up_port}", "--upstream-model",
                      "tiny"]
    procs = [up]
    rows = []
    try:
        procs.insert(0, start(front_args, front_port, tmp / "front.log"))

        # llama-server keeps the last prompt's KV cache: with one prompt for every request each
        # evaluates 1 token of it and generates the rest, the same work both ways (a new prompt
        # per pair would make whichever request of a pair comes first evaluate the whole prompt)
        variant = (lambda i: 0) if llama else (lambda i: i)

        def direct_body(i: int) -> dict:
            return {"model": "tiny", "prompt": f"{f.prefix}{prefix.format(i=variant(i))}"
                    f"{f.suffix}{suffix}{f.middle}", "max_tokens": a.max_tokens,
                    "temperature": 0}

        def front_body(i: int) -> dict:
            return {"model": "tiny", "prompt": prefix.format(i=variant(i)), "suffix": suffix,
                    "max_tokens": a.max_tokens, "temperature": 0}

        up_url, front_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{front_port}"
        same, trimmed_same, samples = [], [], []
        with httpx.Client(timeout=120) as c:  # warm both (first requests load lazily)
            for i in range(3):
                c.post(up_url + "/v1/completions", json=direct_body(i))
                c.post(front_url + "/v1/completions", json=front_body(i))
            for i in range(5):
                d = c.post(up_url + "/v1/completions", json=direct_body(i)).json()
                v = c.post(front_url + "/v1/completions", json=front_body(i)).json()
                dt, vt = d["choices"][0]["text"], v["choices"][0]["text"]
                same.append(dt == vt)
                trimmed_same.append(trim_completion(dt, suffix, prefix.format(i=variant(i)),
                                                    fim.stop_strings)[0] == vt)
                samples.append(vt)
        if llama:
            engine = EngineTimes(tmp / "up.log")
        for n in clients:
            rows.append(_row(n, max(1, a.requests // n), up_url, front_url, direct_body,
                             front_body, engine if n == 1 else None))
            print(json.dumps(rows[-1]), flush=True)  # (kept should a later part fail)
            if engine is not None:
                engine = EngineTimes(tmp / "up.log")  # (another row's lines skipped)
        ttfb = first_chunks(min(a.requests, a.stream_requests), up_url, front_url,
                            direct_body, front_body)
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)

    load = os.getloadavg()[0]
    upstream = (f"llama-server ({a.llama_server}, -t {a.llama_threads})" if llama
                else "codetune serve (stand-in)")
    print(f"upstream {upstream}; front's model {model}; max_tokens {a.max_tokens}; same greedy "
          f"text direct and through the front: {sum(same)}/{len(same)} (the direct text cut by "
          f"the front's Finisher: {sum(trimmed_same)}/{len(trimmed_same)}); e.g. "
          f"{samples[0]!r}; load average {load:.1f} on {os.cpu_count()} CPUs")
    print("| clients | pairs | direct p50 / p95 ms | front p50 / p95 ms | added p50 / p95 ms | "
          "front / direct (p50) | same text |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['pairs']} | {r['direct_p50']:.1f} / {r['direct_p95']:.1f} "
              f"| {r['front_p50']:.1f} / {r['front_p95']:.1f} | {r['added_p50']:.1f} / "
              f"{r['added_p95']:.1f} | {r['ratio_p50']:.2f}× | {r['same_text']}/{r['pairs']} |")
    for r in rows:
        if "net_pairs" in r:
            print(f"net of the engine's own time ({r['net_pairs']} pairs, 1 client): direct "
                  f"p50 / p95 {r['net_direct_p50']:.1f} / {r['net_direct_p95']:.1f} ms, front "
                  f"{r['net_front_p50']:.1f} / {r['net_front_p95']:.1f} ms; added p50 / p95 "
                  f"{r['net_added_p50']:.1f} / {r['net_added_p95']:.1f} ms (mean "
                  f"{r['net_added_mean']:.1f})")
    for what, d, f in (("text", "d", "f"), ("non-blank text", "d_code", "f_code")):
        added = [v - u for u, v in zip(ttfb[d], ttfb[f], strict=True)]
        print(f"streaming, time to the first chunk of {what} ({len(added)} pairs) p50 / p95: "
              f"direct {pct(ttfb[d], 0.5):.1f} / {pct(ttfb[d], 0.95):.1f} ms, front "
              f"{pct(ttfb[f], 0.5):.1f} / {pct(ttfb[f], 0.95):.1f} ms; added p50 / p95 "
              f"{pct(added, 0.5):.1f} / {pct(added, 0.95):.1f} ms")
    if a.json:
        Path(a.json).write_text(json.dumps({"upstream": upstream, "rows": rows, "ttfb": ttfb,
                                            "load": load, "same": same}, indent=1))


if __name__ == "__main__":
    main()
