"""codetune serve --upstream in front of llama.cpp's real llama-server (`runtime`: skipped where
scripts/llama-cpp.sh has not built it; CI builds it).

The upstream serves codetune-mini (a small GPT-BigCode with StarCoder FIM tokens) exported to an
F16 GGUF by codetune's own writer; the front (in-process, tokenizer only) builds the FIM prompt
from `suffix`. "The same completion" means: the front's text equals llama-server's text for the
same prompt, greedy, after the front's Finisher (`trim_completion`, the rule every codetune
path ends completions by) is applied to the direct text. The Finisher is what the front adds on
purpose, so it is applied, not switched off; the prompts below are ones it leaves alone, so the
comparison is of the raw text as well."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from codetune import cli
from codetune.errors import CodetuneError
from codetune.infer.finish import trim_completion
from codetune.mini import MINI_PATH
from codetune.serve.app import BackgroundServer, create_app, fim_info
from codetune.serve.limits import ServeSettings
from codetune.serve.upstream import Upstream, load_front

from .tiny import QWEN_SPECIALS, build_tokenizer

pytestmark = pytest.mark.runtime

CTX = 1024  # llama-server's -c: one slot of codetune-mini's whole window
FIM_CASES = [  # (prefix, suffix): completions the Finisher does not cut (checked below)
    ("def read_lines(path):\n    with open(path) as f:\n        ", "\n    return lines\n"),
    ("class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):"
     "\n        ", "\n\n    def pop(self):\n        return self.items.pop()\n"),
]
PLAIN = "import unittest\n\n\nclass TestFib(unittest.TestCase):\n    def test_"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_llama_server(binary: str, gguf: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "-m", str(gguf), "--host", "127.0.0.1", "--port",
                                 str(port), "-c", str(CTX), "-np", "1", "-t", "1", "--no-webui"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"llama-server did not get ready: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)  # (one a test stopped)
        proc.kill()
    proc.wait(10)


@pytest.fixture(scope="module")
def server_binary() -> str:
    """llama-server, found as `llama_cpp` finds it (the real runtime is visible while module
    fixtures are set up; each test also takes `llama_cpp`, which skips where it is missing)."""
    from codetune.export import llama_cpp as tools

    found = tools.find()["server"]
    if found is None:
        pytest.skip("llama.cpp not built (llama-server missing): run scripts/llama-cpp.sh")
    return found


@pytest.fixture(scope="module")
def mini_gguf(server_binary, tmp_path_factory) -> Path:
    from codetune.export import export

    out = tmp_path_factory.mktemp("mini_gguf") / "out"
    r = export(MINI_PATH, "gguf", out, ftype="F16", converter="codetune", echo=lambda m: None)
    return out / r["gguf"]


@pytest.fixture(scope="module")
def llama(server_binary, mini_gguf, tmp_path_factory):
    proc, url = _start_llama_server(server_binary, mini_gguf,
                                    tmp_path_factory.mktemp("llama") / "server.log")
    yield url
    _stop(proc)


@pytest.fixture(scope="module")
def front_loaded():
    return load_front(str(MINI_PATH))


@pytest.fixture(scope="module")
def front(llama, front_loaded):
    settings = ServeSettings(model_name="mini", slots=8)
    upstream = Upstream(llama + "/v1")
    upstream.check(front_loaded, settings)
    with BackgroundServer(create_app(front_loaded, settings, upstream)) as url:
        yield url, upstream


def _direct(url: str, prompt: str, max_tokens: int) -> dict:
    r = httpx.post(url + "/v1/completions", timeout=120,
                   json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_the_front_checks_llama_server_at_start(llama_cpp, llama, front, front_loaded):
    _, upstream = front
    served = httpx.get(llama + "/v1/models").json()["data"][0]
    assert upstream.engine_kind == "llama.cpp"
    assert upstream.model == served["id"]  # its only model: --model-name is not one of its ids
    assert upstream.window == served["meta"]["n_ctx"] == CTX
    engine = create_app(front_loaded, ServeSettings(), upstream).state.engine
    assert engine.window == CTX and engine.max_prompt == CTX - 1


@pytest.mark.parametrize("case", range(len(FIM_CASES) + 1), ids=["fim-1", "fim-2", "plain"])
def test_same_greedy_completion_as_llama_server_directly(llama_cpp, llama, front, front_loaded,
                                                         case):
    url, _ = front
    fi = fim_info(front_loaded.fim)
    if case < len(FIM_CASES):
        prefix, suffix = FIM_CASES[case]
        prompt = f"{fi['prefix']}{prefix}{fi['suffix']}{suffix}{fi['middle']}"
        through = _client(url).completions.create(model="mini", prompt=prefix, suffix=suffix,
                                                  max_tokens=24, temperature=0)
    else:
        prefix = suffix = None
        prompt = PLAIN
        through = _client(url).completions.create(model="mini", prompt=PLAIN, max_tokens=24,
                                                  temperature=0)
    direct = _direct(llama, prompt, 24)
    text = direct["choices"][0]["text"]
    finished, _ = trim_completion(text, suffix, prefix, front_loaded.fim.stop_strings)
    assert finished == text and text.strip()  # (uncut, not empty: a real comparison)
    assert through.choices[0].text == finished
    assert through.choices[0].finish_reason == direct["choices"][0]["finish_reason"]
    assert through.model == "mini"  # the front's name, not the upstream's file path
    assert through.usage.prompt_tokens == direct["usage"]["prompt_tokens"]
    assert through.usage.completion_tokens == direct["usage"]["completion_tokens"]


def test_streaming_passes_through_as_generated(llama_cpp, llama, front):
    """More than one chunk, their concatenation the non-streamed text, and the first one reaches
    the client while llama-server is still generating (its /slots says so): no wall time."""
    url, _ = front
    body = {"model": "mini", "prompt": PLAIN, "max_tokens": 400, "temperature": 0}
    whole = httpx.post(url + "/v1/completions", json=body, timeout=120).json()
    pieces, busy_at_first, finish = [], None, None
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True},
                      timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            choice = json.loads(line[5:])["choices"][0]
            if choice["text"]:
                if busy_at_first is None:
                    slots = httpx.get(llama + "/slots", timeout=10).json()
                    busy_at_first = any(s.get("is_processing") for s in slots)
                pieces.append(choice["text"])
            finish = choice["finish_reason"] or finish
    assert len(pieces) > 1
    assert "".join(pieces) == whole["choices"][0]["text"]
    assert finish == whole["choices"][0]["finish_reason"] == "length"
    assert busy_at_first, "the first chunk came only after llama-server had finished"


def test_back_to_back_requests_from_several_clients_all_succeed(llama_cpp, front):
    """llama-server closes its connection after every streamed answer (b11434), so a pooled
    connection can be closing as the next request goes down it: that request must not become a
    502 (the front asks for the close up front, and retries a request nothing was read of)."""
    url, _ = front
    statuses: list[int] = []

    def client(k: int) -> None:
        with httpx.Client(timeout=120) as c:
            for i in range(8):
                r = c.post(url + "/v1/completions", json={
                    "prompt": f"def f{k}_{i}(x):\n", "max_tokens": 2, "temperature": 0,
                    "stream": bool(i % 2)})
                statuses.append(r.status_code)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert statuses == [200] * 32


def _wait_generating(url: str) -> None:
    for _ in range(2000):
        slots = httpx.get(url + "/slots", timeout=10).json()
        if any(s.get("is_processing") for s in slots):
            return
        time.sleep(0.005)
    raise AssertionError("llama-server never started generating")


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_llama_server_gone_mid_way_gives_502_or_504(llama_cpp, mini_gguf, front_loaded,
                                                        tmp_path, how):
    """Killed while generating: 502, and the next request 502 as well; stopped (SIGSTOP: it
    holds the connection and says nothing): 504 at --request-timeout. Never a hang."""
    proc, url = _start_llama_server(llama_cpp["server"], mini_gguf, tmp_path / "server.log")
    try:
        upstream = Upstream(url)
        settings = ServeSettings(model_name="mini", request_timeout=4.0)
        upstream.check(front_loaded, settings)
        with BackgroundServer(create_app(front_loaded, settings, upstream)) as front:
            got = {}

            def ask() -> None:
                got["r"] = httpx.post(front + "/v1/completions", timeout=60, json={
                    "prompt": PLAIN, "max_tokens": CTX - 64, "temperature": 0})

            t = threading.Thread(target=ask)
            t.start()
            _wait_generating(url)
            proc.send_signal(signal.SIGKILL if how == "killed" else signal.SIGSTOP)
            t.join(60)
            assert not t.is_alive()
            r = got["r"]
            if how == "killed":
                assert r.status_code == 502, r.text
                assert url in r.json()["error"]["message"]
                again = httpx.post(front + "/v1/completions", timeout=60,
                                   json={"prompt": PLAIN, "max_tokens": 4, "stream": True})
                assert again.status_code == 502 and "cannot be reached" in again.text
            else:
                assert r.status_code == 504, r.text
                assert "--request-timeout" in r.json()["error"]["message"]
            assert httpx.get(front + "/health").json()["active"] == 0  # the slot came free
    finally:
        _stop(proc)


def test_a_bad_upstream_fails_at_start_in_one_line(llama_cpp, llama, front_loaded, tmp_path,
                                                    capsys):
    settings = ServeSettings(model_name="mini")
    down = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(CodetuneError, match="does not answer") as e:
        Upstream(down).check(front_loaded, settings)
    assert down in str(e.value) and "\n" not in str(e.value)

    with pytest.raises(CodetuneError, match="not 'other'") as e:  # a model it does not serve
        Upstream(llama, model="other").check(front_loaded, settings)
    assert llama in str(e.value) and ".gguf" in str(e.value)

    # a front whose tokenizer is another model's (Qwen's FIM tokens): refused, naming both
    qwen = load_front(str(build_tokenizer(tmp_path / "qwen", specials=QWEN_SPECIALS)))
    with pytest.raises(CodetuneError, match="serves a different model") as e:
        Upstream(llama).check(qwen, settings)
    assert "<|fim_prefix|>" in str(e.value) and "\n" not in str(e.value)

    # and through the command: exit 2, one line on stderr, before serving
    assert cli.main(["serve", str(MINI_PATH), "--port", str(_free_port()),
                     "--upstream", down + "/v1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --upstream") and down in err and "\n" not in err
