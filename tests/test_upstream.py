"""codetune serve --upstream: codetune's own server (the tiny run) is the upstream, a second
server in upstream mode fronts it; the same request must give the same completion either way,
and an upstream that is down or hangs must be answered with 502 / 504, never a hang."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import openai
import pytest

from codetune import cli
from codetune import infer as inference
from codetune.serve.app import BackgroundServer, create_app
from codetune.serve.limits import ServeSettings
from codetune.serve.upstream import Upstream, load_front

from .test_complete import PREFIX, SUFFIX

LTR = "class Order:\n    def __init__(self"


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return inference.load(str(tiny_run["run"]))


@pytest.fixture(scope="module")
def front_loaded(tiny_run):
    return load_front(str(tiny_run["run"]))


@pytest.fixture(scope="module")
def servers(loaded, front_loaded):
    """(upstream url, front url): the upstream requires a key, which the front sends."""
    up_settings = ServeSettings(model_name="tiny", api_key="upstream-secret")
    with BackgroundServer(create_app(loaded, up_settings)) as up:
        front_settings = ServeSettings(model_name="front", slots=8)
        front_app = create_app(front_loaded, front_settings,
                               Upstream(up + "/v1", model="tiny", api_key="upstream-secret"))
        with BackgroundServer(front_app) as front:
            yield up, front


def _client(url, key="upstream-secret"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_the_front_loads_no_weights(front_loaded):
    assert not hasattr(front_loaded.model, "parameters")
    assert front_loaded.fim is not None and front_loaded.fim.family == "starcoder"
    assert front_loaded.model.config.n_positions == 512  # the context window, from config.json


@pytest.mark.parametrize("kw", [
    dict(prompt=PREFIX, suffix=SUFFIX, max_tokens=8, temperature=1.0, seed=7),  # FIM, sampled
    dict(prompt=LTR, max_tokens=10, temperature=0),  # left to right, greedy
    dict(prompt=PREFIX, suffix=SUFFIX, max_tokens=8, temperature=0),  # FIM, greedy
])
def test_same_completion_directly_and_through_the_front(servers, kw):
    up, front = servers
    direct = _client(up).completions.create(model="tiny", **kw)
    through = _client(front, "unused").completions.create(model="front", **kw)
    assert through.model == "front"
    assert through.choices[0].text == direct.choices[0].text
    assert through.choices[0].finish_reason == direct.choices[0].finish_reason
    assert through.usage.prompt_tokens == direct.usage.prompt_tokens
    assert through.usage.completion_tokens == direct.usage.completion_tokens
    # streamed through the front: the same text in pieces, then the finish reason
    chunks = list(_client(front, "unused").completions.create(model="front", stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks) == direct.choices[0].text
    assert chunks[-1].choices[0].finish_reason == direct.choices[0].finish_reason


def test_some_completion_is_not_empty(servers):
    """(so that the equality above compares text, not two empty strings)"""
    up, _ = servers
    r = _client(up).completions.create(model="tiny", prompt=LTR, max_tokens=10, temperature=0)
    assert r.choices[0].text.strip()


def test_generate_route_through_the_front(servers, front_loaded):
    up, front = servers
    f = front_loaded.fim.format
    body = {"inputs": f"{f.prefix}{PREFIX}{f.suffix}{SUFFIX}{f.middle}",
            "parameters": {"max_new_tokens": 8, "temperature": 1.0, "seed": 3}}
    direct = httpx.post(up + "/generate", json=body, timeout=30,
                        headers={"Authorization": "Bearer upstream-secret"})
    through = httpx.post(front + "/generate", json=body, timeout=30)
    assert direct.status_code == through.status_code == 200
    assert through.json() == direct.json()


def test_the_front_keeps_its_own_validation(servers):
    _, front = servers
    r = httpx.post(front + "/v1/completions", json={"prompt": "x", "temperature": 3}, timeout=30)
    assert r.status_code == 400 and "temperature" in r.text
    r = httpx.post(front + "/v1/completions", json={"prompt": "x", "n": 2}, timeout=30)
    assert r.status_code == 400 and "n:" in r.text


def test_an_upstream_that_is_down_gives_502(front_loaded):
    url = f"http://127.0.0.1:{_free_port()}"
    app = create_app(front_loaded, ServeSettings(), Upstream(url))
    with BackgroundServer(app) as front:
        for stream in (False, True):
            r = httpx.post(front + "/v1/completions", timeout=30,
                           json={"prompt": PREFIX, "suffix": SUFFIX, "stream": stream})
            assert r.status_code == 502, r.text
            msg = r.json()["error"]["message"]
            assert url in msg and "cannot be reached" in msg
        assert httpx.get(front + "/health").json()["active"] == 0  # slots freed


def test_an_upstream_that_hangs_gives_504_within_the_timeout(front_loaded):
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)  # accepts connections (the kernel does), never answers
    try:
        url = f"http://127.0.0.1:{hang.getsockname()[1]}"
        app = create_app(front_loaded, ServeSettings(request_timeout=1.0), Upstream(url))
        with BackgroundServer(app) as front:
            for stream in (False, True):
                t0 = time.monotonic()
                r = httpx.post(front + "/v1/completions", timeout=30,
                               json={"prompt": PREFIX, "suffix": SUFFIX, "stream": stream})
                assert r.status_code == 504, r.text
                assert "did not answer within 1 s" in r.json()["error"]["message"]
                assert time.monotonic() - t0 < 5
    finally:
        hang.close()


def test_an_upstream_error_is_a_502_naming_it(loaded, front_loaded):
    with BackgroundServer(create_app(loaded, ServeSettings(api_key="right"))) as up:
        app = create_app(front_loaded, ServeSettings(), Upstream(up, api_key="wrong"))
        with BackgroundServer(app) as front:
            r = httpx.post(front + "/v1/completions", json={"prompt": LTR}, timeout=30)
            assert r.status_code == 502
            assert "answered 401" in r.json()["error"]["message"]


def test_an_upstream_that_breaks_off_mid_stream_ends_the_stream_with_an_error(front_loaded):
    """A fake upstream that sends one SSE chunk and closes the connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    chunk = json.dumps({"choices": [{"text": "ab", "index": 0, "finish_reason": None}]})

    def serve_one():
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        data = f"data: {chunk}\n\n".encode()
        conn.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        conn.close()  # no final chunk: the stream breaks off

    threading.Thread(target=serve_one, daemon=True).start()
    try:
        app = create_app(front_loaded, ServeSettings(),
                         Upstream(f"http://127.0.0.1:{srv.getsockname()[1]}"))
        with BackgroundServer(app) as front:
            with httpx.stream("POST", front + "/v1/completions", timeout=30,
                              json={"prompt": LTR, "stream": True}) as r:
                assert r.status_code == 200
                events = [line for line in r.iter_lines() if line.startswith("data:")]
            assert events[-1] == "data: [DONE]"
            assert '"error"' in events[-2] and "500" in events[-2]
    finally:
        srv.close()


def test_cli_upstream_flags(tiny_run, monkeypatch):
    served = {}
    monkeypatch.setattr("codetune.serve.app.serve",
                        lambda loaded, settings, upstream=None, context=None: served.update(
                            loaded=loaded, settings=settings, upstream=upstream,
                            context=context))
    monkeypatch.setenv("VLLM_KEY", "k1")
    assert cli.main(["serve", str(tiny_run["run"]), "--upstream", "http://127.0.0.1:9/v1/",
                     "--upstream-model", "mine", "--upstream-api-key-env", "VLLM_KEY"]) == 0
    up = served["upstream"]
    assert (up.url, up.model, up.api_key) == ("http://127.0.0.1:9", "mine", "k1")
    assert served["settings"].slots == 64 and not hasattr(served["loaded"].model, "parameters")
    monkeypatch.delenv("VLLM_KEY")
    assert cli.main(["serve", str(tiny_run["run"]), "--upstream", "http://x:1",
                     "--upstream-api-key-env", "VLLM_KEY"]) == 2
    assert cli.main(["serve", str(tiny_run["run"]), "--upstream", "x:1"]) == 2
