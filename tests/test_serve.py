"""codetune serve: uvicorn on an ephemeral loopback port, driven by the official OpenAI client and
raw HTTP. Slow or blocked generation comes from the scripted stub model of test_complete, so
queueing, 429, timeouts and disconnects are tested without timing guesses."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import yaml

from codetune import cli, inference
from codetune.complete import complete
from codetune.errors import CodetuneError
from codetune.serve import BackgroundServer, ServeSettings, create_app, is_loopback

from .test_complete import PREFIX, SUFFIX, scripted


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return inference.load(str(tiny_run["run"]))


@pytest.fixture(scope="module")
def url(loaded):
    settings = ServeSettings(model_name="tiny", max_tokens=16, max_body_bytes=64 * 1024,
                             max_prompt_tokens=200)
    with BackgroundServer(create_app(loaded, settings)) as url:
        yield url


def client(url, key="unused"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def post(url, path, body, timeout=30, **kw):
    return httpx.post(url + path, json=body, timeout=timeout, **kw)


def wait_until(predicate, what, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_openai_client_fim_matches_the_library(url, loaded):
    c = client(url)
    kw = dict(model="tiny", prompt=PREFIX, suffix=SUFFIX, max_tokens=6, temperature=1.0, seed=7)
    r = c.completions.create(**kw)
    assert r.object == "text_completion" and r.model == "tiny" and r.id.startswith("cmpl-")
    choice = r.choices[0]
    assert choice.index == 0 and choice.finish_reason in ("stop", "length")
    lib = complete(loaded, PREFIX, SUFFIX, inference.GenParams(max_new_tokens=6, temperature=1.0,
                                                               seed=7))
    assert choice.text == lib.text and not choice.text.startswith(PREFIX[:10])
    assert r.usage.prompt_tokens == lib.prompt_tokens
    assert r.usage.completion_tokens == lib.completion_tokens <= 6
    # streamed: the same text in pieces, then one chunk with the finish reason
    chunks = list(c.completions.create(**kw, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == choice.text
    assert [ch.choices[0].finish_reason for ch in chunks][-1] == choice.finish_reason
    assert all(ch.choices[0].finish_reason is None for ch in chunks[:-1])
    usage = list(c.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert usage[-1].usage.completion_tokens == lib.completion_tokens


def test_stop_strings_in_both_modes(url):
    c = client(url)
    kw = dict(model="tiny", prompt="class Order:\n    def __init__(self", max_tokens=12,
              temperature=0)
    full = c.completions.create(**kw).choices[0].text
    assert len(full) >= 5, full
    stop = full[3:5]
    cut = c.completions.create(**kw, stop=[stop, "never"]).choices[0]
    assert (cut.text, cut.finish_reason) == (full[:full.find(stop)], "stop")
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(**kw, stop=stop,
                                                                         stream=True))
    assert streamed == cut.text


def test_generate_takes_a_ready_fim_prompt(url, loaded):
    f = loaded.fim.format
    params = {"max_new_tokens": 5, "temperature": 1.0, "seed": 3, "return_full_text": False}
    r = post(url, "/generate", {"inputs": f"{f.prefix}{PREFIX}{f.suffix}{SUFFIX}{f.middle}",
                                "parameters": params})
    assert r.status_code == 200 and set(r.json()) == {"generated_text"}
    same = client(url).completions.create(model="tiny", prompt=PREFIX, suffix=SUFFIX,
                                          max_tokens=5, temperature=1.0, seed=3)
    assert r.json()["generated_text"] == same.choices[0].text
    # do_sample=false and no sampling field: greedy, so repeatable without a seed
    greedy = [post(url, "/generate", {"inputs": "def f(", "parameters": {
        "do_sample": False, "max_new_tokens": 4}}).json() for _ in range(2)]
    assert greedy[0] == greedy[1]
    bad = post(url, "/generate", {"inputs": 3})
    assert bad.status_code == 400 and "inputs" in bad.json()["error"]  # TGI's error shape


def test_health_and_models(url):
    h = httpx.get(url + "/health").json()
    assert h["status"] == "ok" and h["active"] == 0 and h["slots"] == 2
    m = client(url).models.list().data[0]
    assert m.id == "tiny"
    assert m.model_extra["codetune"]["fim"]["prefix"] == "<fim_prefix>"
    assert m.model_extra["max_model_len"] == 512


@pytest.mark.parametrize("body, status, fragment", [
    ({"prompt": 5}, 400, "prompt"),
    ({"prompt": "x", "max_tokens": "lots"}, 400, "max_tokens"),
    ({"prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"prompt": "x", "stop": [1, 2]}, 400, "stop"),
    ({"max_tokens": 4}, 400, "prompt"),
    ({"prompt": ["a", "b"]}, 400, "one prompt"),
    ({"prompt": "x", "echo": True}, 400, "echo"),
    ({"prompt": "x " * 300}, 400, "at most 200"),
    ([1, 2], 400, "object"),
])
def test_bad_requests_get_4xx_with_a_message(url, body, status, fragment):
    r = post(url, "/v1/completions", body)
    assert r.status_code == status and fragment in r.json()["error"]["message"]


def test_transport_limits(url):
    r = httpx.post(url + "/v1/completions", content=b"{nope", timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    assert httpx.post(url + "/v1/completions", content=b'{"prompt": "x"}').status_code == 415
    big = {"prompt": "x" * 100_000}
    assert post(url, "/v1/completions", big).status_code == 413

    def chunked():  # no Content-Length: counted while read
        for _ in range(100):
            yield b"x" * 1000

    r = httpx.post(url + "/v1/completions", content=chunked(), timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413
    # max_tokens is clamped to the server's cap (16 here)
    r = post(url, "/v1/completions", {"prompt": "def f(", "max_tokens": 1000, "temperature": 1,
                                      "seed": 0}).json()
    assert r["usage"]["completion_tokens"] <= 16
    assert httpx.get(url + "/nope").status_code == 404


def test_api_key(loaded):
    settings = ServeSettings(model_name="tiny", api_key="s3cret", max_tokens=4)
    with BackgroundServer(create_app(loaded, settings)) as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").completions.create(model="tiny", prompt="x", max_tokens=2)
        r = post(url, "/v1/completions", {"prompt": "x"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert post(url, "/generate", {"inputs": "x"}).json()["error_type"] == \
            "authentication_error"
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/health").status_code == 200  # the one open route
        ok = client(url, "s3cret").completions.create(model="tiny", prompt="x", max_tokens=2)
        assert ok.choices[0].finish_reason in ("stop", "length")


def test_refuses_a_public_address_without_a_key(tiny_run, monkeypatch, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("my-host.internal")
    with pytest.raises(CodetuneError, match="without an API key"):
        ServeSettings(host="0.0.0.0").validate()
    ServeSettings(host="0.0.0.0", api_key="k").validate()
    monkeypatch.delenv("CODETUNE_API_KEY", raising=False)
    assert cli.main(["serve", str(tiny_run["run"]), "--host", "0.0.0.0"]) == 2
    assert "CODETUNE_API_KEY" in capsys.readouterr().err


def gated_app(loaded, gate, **settings):
    """A server whose model waits for `gate` before every token."""
    stub = scripted(loaded, ["x"], gate=gate)
    app = create_app(stub, ServeSettings(model_name="stub", max_tokens=4, **settings))
    return app, stub.model


def test_full_slots_and_queue_get_429_then_everyone_is_served(loaded):
    gate = threading.Event()
    app, model = gated_app(loaded, gate, slots=1, queue=1)
    with BackgroundServer(app) as url:
        results = {}

        def call(name):
            results[name] = post(url, "/v1/completions", {"prompt": "a", "max_tokens": 2})

        def health():
            return httpx.get(url + "/health").json()

        first = threading.Thread(target=call, args=("first",))
        first.start()
        wait_until(lambda: health()["active"] == 1 and model.calls == 1, "the first request")
        second = threading.Thread(target=call, args=("second",))
        second.start()
        wait_until(lambda: health()["queued"] == 1, "the second request to queue")
        third = post(url, "/v1/completions", {"prompt": "a", "max_tokens": 2})
        assert third.status_code == 429 and third.headers["retry-after"] == "1"
        assert third.json()["error"]["type"] == "rate_limit_error"
        gate.set()
        first.join(20)
        second.join(20)
        assert [results[k].json()["choices"][0]["text"] for k in ("first", "second")] == \
            ["xx", "xx"]
        assert health()["rejected"] == 1
        app.state.engine.closing = True  # shutting down: 503, health says so
        assert post(url, "/v1/completions", {"prompt": "a"}).status_code == 503
        assert httpx.get(url + "/health").status_code == 503
        app.state.engine.closing = False


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_frees_its_slot(loaded, stream):
    gate = threading.Event()
    app, model = gated_app(loaded, gate, slots=1, queue=0)
    engine = app.state.engine
    body = {"prompt": "a", "max_tokens": 4, "stream": stream}
    with BackgroundServer(app) as url:
        if stream:
            with httpx.Client(timeout=30) as h, h.stream("POST", url + "/v1/completions",
                                                        json=body) as r:
                assert r.status_code == 200
                wait_until(lambda: model.calls == 1, "generation to start")
            # leaving the blocks closed the connection
        else:
            with pytest.raises(httpx.ReadTimeout):
                post(url, "/v1/completions", body, timeout=httpx.Timeout(30, read=0.5))
        wait_until(lambda: any(s.cancel.is_set() for s in list(engine.running)),
                   "the server to notice the disconnect")
        gate.set()
        wait_until(lambda: engine.active == 0, "the slot to come free")
        assert model.calls <= 2  # stopped at the next token, not after max_tokens
        assert engine.stats["cancelled"] == 1
        ok = post(url, "/v1/completions", {"prompt": "a", "max_tokens": 2})
        assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == "xx"


def test_request_timeout(loaded):
    stub = scripted(loaded, ["x"], delay=0.1)
    app = create_app(stub, ServeSettings(max_tokens=50, request_timeout=0.3))
    with BackgroundServer(app) as url:
        r = post(url, "/v1/completions", {"prompt": "a", "max_tokens": 50})
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"
        with pytest.raises(openai.APIError, match="timeout"):
            list(client(url).completions.create(model="m", prompt="a", max_tokens=50,
                                                stream=True))


def test_editor_configs(url, tiny_run, capsys):
    assert cli.main(["editor-config", "continue", "--url", url,
                     "--api-key-env", "CODETUNE_API_KEY"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    model = cfg["models"][0]
    assert model["provider"] == "openai" and model["apiBase"] == url + "/v1"
    assert model["model"] == "tiny" and model["roles"] == ["autocomplete"]
    assert model["useLegacyCompletionsEndpoint"] is True
    assert model["apiKey"] == "${{ secrets.CODETUNE_API_KEY }}"
    assert model["promptTemplates"]["autocomplete"] == \
        "<fim_prefix>{{{prefix}}}<fim_suffix>{{{suffix}}}<fim_middle>"
    assert cli.main(["editor-config", "llm-vscode", str(tiny_run["run"])]) == 0
    out = capsys.readouterr().out
    settings = json.loads("\n".join(x for x in out.splitlines() if not x.startswith("//")))
    assert settings["llm.backend"] == "tgi" and settings["llm.url"].endswith("/generate")
    assert settings["llm.fillInTheMiddle.prefix"] == "<fim_prefix>"
    assert settings["llm.modelId"] == "run"
    assert cli.main(["editor-config", "llm-vscode", "--family", "qwen2.5-coder"]) == 0
    assert "<|fim_middle|>" in capsys.readouterr().out
    assert cli.main(["editor-config", "continue", "--url", "http://127.0.0.1:9"]) == 2
    assert "--family" in capsys.readouterr().err


def test_editor_template_text_encodes_like_the_training_prompt(tmp_path):
    """An editor filling the template sends text; for CodeLlama's SentencePiece tokenizer the
    server's raw tokenization of it must equal the FIM prompt built from prefix and suffix."""
    from transformers import AutoTokenizer

    from codetune.serve import fim_info
    from codetune.tokens.fim import build_prompt, detect_fim

    from .tiny import build_codellama_tokenizer

    tok = AutoTokenizer.from_pretrained(str(build_codellama_tokenizer(tmp_path / "tok")))
    fim = detect_fim(tok)
    t = fim_info(fim)
    stub = inference.Loaded(None, tok, fim, "tokenizer only")
    for prefix, suffix in [("def add(a, b):\n    return", "\n\nprint(add(1, 2))\n"),
                           ("a", " b")]:
        text = t["prefix"] + prefix + t["suffix"] + suffix + t["middle"]
        assert inference.raw_prompt(stub, text) == build_prompt(tok, fim, prefix, suffix)
