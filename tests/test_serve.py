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

from codetune import cli
from codetune import infer as inference
from codetune.errors import CodetuneError
from codetune.infer.complete import complete
from codetune.serve.app import BackgroundServer, create_app
from codetune.serve.limits import ServeSettings, is_loopback

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
        ServeSettings(host="0.0.0.0").check_exposure()
    ServeSettings(host="0.0.0.0", api_key="k").check_exposure()
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
    # the repository layout with no snippets: the server fills them in (StarCoder2's, the
    # path opening the FIM prefix)
    assert model["promptTemplates"]["autocomplete"] == (
        "<repo_name>{{{reponame}}}<file_sep><fim_prefix>{{{filename}}}\n{{{prefix}}}"
        "<fim_suffix>{{{suffix}}}<fim_middle>")
    assert cli.main(["editor-config", "continue", "--family", "qwen2.5-coder"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["models"][0]["promptTemplates"][
        "autocomplete"] == ("<|repo_name|>{{{reponame}}}\n<|file_sep|>{{{filename}}}\n"
                            "<|fim_prefix|>{{{prefix}}}<|fim_suffix|>{{{suffix}}}<|fim_middle|>")
    assert cli.main(["editor-config", "continue", "--family", "deepseek-coder"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["models"][0]["promptTemplates"][
        "autocomplete"] == "<｜fim▁begin｜>{{{prefix}}}<｜fim▁hole｜>{{{suffix}}}<｜fim▁end｜>"
    assert cli.main(["editor-config", "llama-vscode", "--url", url]) == 0
    out = capsys.readouterr().out
    lv = json.loads("\n".join(x for x in out.splitlines() if not x.startswith("//")))
    assert lv["llama-vscode.endpoint"] == url
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

    from codetune.serve.app import fim_info
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


# --------------------------------------------------------------------------- hostile input


def raw_post(url, path, text, timeout=30):
    """POST `text` as the body, byte for byte (JSON literals such as NaN that `json=` won't write)."""
    return httpx.post(url + path, content=text.encode(), timeout=timeout,
                      headers={"content-type": "application/json"})


def test_forty_oversized_prompts_are_refused_while_health_answers(loaded):
    """Forty concurrent ~1 MB prompts over --max-prompt-tokens: each refused with 400 (by its
    length in characters, untokenized), and /health, polled all the while, answers each time
    within a second (it took over 45 s when the prompts were tokenized on the event loop)."""
    app = create_app(loaded, ServeSettings(model_name="tiny", max_prompt_tokens=200))
    body = json.dumps({"prompt": "x" * 1_000_000}).encode()  # under the 1 MiB body limit
    # one client for the forty: a client each would build forty SSL contexts (~30 ms of this
    # process's CPU each) just as the polling starts
    with BackgroundServer(app) as url, httpx.Client(
            timeout=120, limits=httpx.Limits(max_connections=40)) as forty:
        results, waits, done = [], [], threading.Event()

        def oversized():
            results.append(forty.post(url + "/v1/completions", content=body,
                                      headers={"content-type": "application/json"}))

        def poll():
            with httpx.Client(timeout=30) as h:
                while not done.is_set():
                    t = time.monotonic()
                    assert h.get(url + "/health").status_code == 200
                    waits.append(time.monotonic() - t)
                    time.sleep(0.02)

        poller = threading.Thread(target=poll)
        poller.start()
        clients = [threading.Thread(target=oversized) for _ in range(40)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(120)
        done.set()
        poller.join(30)
    assert len(results) == 40 and {r.status_code for r in results} == {400}
    err = results[0].json()["error"]
    assert err["type"] == "context_length_exceeded" and "over 200 tokens" in err["message"]
    assert "at most 200 (--max-prompt-tokens)" in err["message"]
    assert waits and max(waits) < 1.0, waits


def test_prompts_are_tokenized_off_the_event_loop(loaded, monkeypatch):
    """Prompts are tokenized in the tokenizer pool, never on the event loop nor in a generation
    slot. With no early bound (as for a tokenizer with long tokens), a 1 MB prompt is tokenized
    (~1 s of CPU) while /health keeps answering, and refused by its exact token count."""
    threads = []

    def recorded(build):
        def wrapper(*a):
            threads.append(threading.current_thread().name)
            return build(*a)
        return wrapper

    from codetune.infer import prompts

    monkeypatch.setattr(prompts, "raw_prompt", recorded(prompts.raw_prompt))
    monkeypatch.setattr(prompts, "fim_prompt", recorded(prompts.fim_prompt))
    app = create_app(loaded, ServeSettings(model_name="tiny", max_prompt_tokens=200,
                                           max_tokens=2))
    app.state.engine.max_prompt_chars = None
    with BackgroundServer(app) as url, httpx.Client(timeout=120) as h:
        assert post(url, "/v1/completions", {"prompt": "a", "suffix": "b"}).status_code == 200
        assert post(url, "/generate", {"inputs": "def f("}).status_code == 200
        results, waits = [], []
        big = threading.Thread(target=lambda: results.append(post(
            url, "/generate", {"inputs": "x" * 1_000_000}, timeout=120)))
        big.start()
        while big.is_alive():
            t = time.monotonic()
            assert h.get(url + "/health").status_code == 200
            waits.append(time.monotonic() - t)
            time.sleep(0.02)
    assert len(threads) == 3 and all(t.startswith("codetune-tok") for t in threads), threads
    assert results[0].status_code == 400
    assert "the prompt is 1000000 tokens; this server accepts at most 200" in \
        results[0].json()["error"]
    assert max(waits) < 1.0, waits


def test_a_prompt_the_tokenizer_refuses_gets_400(tmp_path):
    """CodeLlama's tokenizer raises ValueError on a text with two <FILL_ME>: a 400, not a 500."""
    from transformers import AutoTokenizer

    from codetune.tokens.fim import detect_fim

    from .test_complete import Scripted
    from .tiny import build_codellama_tokenizer

    tok = AutoTokenizer.from_pretrained(str(build_codellama_tokenizer(tmp_path / "tok")))
    stub = inference.Loaded(Scripted([5], len(tok)), tok, detect_fim(tok), "stub")
    with BackgroundServer(create_app(stub, ServeSettings(max_tokens=2))) as url:
        r = post(url, "/v1/completions", {"prompt": "a <FILL_ME> b <FILL_ME> c"})
        assert r.status_code == 400 and "cannot be tokenized" in r.json()["error"]["message"]
        r = post(url, "/v1/completions", {"prompt": "a", "suffix": "<FILL_ME> b <FILL_ME>"})
        assert r.status_code == 400 and "cannot be tokenized" in r.json()["error"]["message"]
        assert post(url, "/v1/completions", {"prompt": "a", "suffix": "b"}).status_code == 200


@pytest.mark.parametrize("seed", ["18446744073709551616", "1e30", "-18446744073709551616"])
def test_out_of_range_seeds_get_400(url, seed):
    r = raw_post(url, "/v1/completions", f'{{"prompt": "def f(", "seed": {seed}}}')
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("seed: ")
    r = raw_post(url, "/generate", f'{{"inputs": "def f(", "parameters": {{"seed": {seed}}}}}')
    assert r.status_code == 400 and r.json()["error"].startswith("parameters.seed: ")


def test_seed_range_ends_are_served(url):
    """OpenAI's seed is an int64, TGI's a u64: both ranges are served; a negative seed is its
    64-bit two's complement (-1 samples as 2**64 - 1 does)."""
    def text(seed):
        r = post(url, "/v1/completions", {"prompt": "def f(", "max_tokens": 6, "temperature": 1,
                                          "seed": seed})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    assert text(-1) == text(2**64 - 1)
    assert text(-2**63) == text(2**63)


@pytest.mark.parametrize("path", ["/v1/completions", "/generate"])
def test_tiny_temperature_is_greedy(url, path):
    def text(temperature):
        if path == "/generate":
            r = post(url, path, {"inputs": "class Order:\n", "parameters": {
                "max_new_tokens": 8, "temperature": temperature}})
            assert r.status_code == 200, r.text
            return r.json()["generated_text"]
        r = post(url, path, {"prompt": "class Order:\n", "max_tokens": 8,
                             "temperature": temperature})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    assert text(1e-300) == text(0) == text(5e-324)


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400"])
def test_infinite_and_nan_temperatures_get_400_on_both_routes(url, literal):
    r = raw_post(url, "/v1/completions", f'{{"prompt": "x", "temperature": {literal}}}')
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
    r = raw_post(url, "/generate", f'{{"inputs": "x", "parameters": {{"temperature": {literal}}}}}')
    assert r.status_code == 400 and r.json()["error"].startswith("parameters.temperature: ")


@pytest.mark.parametrize("field, value", [
    ("temperature", -0.5), ("temperature", 2.5), ("top_p", 0), ("top_p", 1.5), ("top_p", "NaN"),
    ("top_k", -2), ("top_k", 2**31), ("top_k", 1.5), ("max_tokens", 0), ("max_tokens", -3),
    ("seed", 1.5), ("temperature", "-Infinity"),
])
def test_sampling_ranges_are_one_rule_for_both_routes(url, field, value):
    """One validation for /v1/completions and TGI's parameters, with the field named."""
    tgi = "max_new_tokens" if field == "max_tokens" else field
    v = json.dumps(value) if not isinstance(value, str) else value
    r = raw_post(url, "/v1/completions", f'{{"prompt": "x", "{field}": {v}}}')
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(f"{field}: ")
    r = raw_post(url, "/generate", f'{{"inputs": "x", "parameters": {{"{tgi}": {v}}}}}')
    assert r.status_code == 400 and r.json()["error"].startswith(f"parameters.{tgi}: ")


@pytest.mark.parametrize("field, value", [
    ("logprobs", 1), ("logprobs", 0), ("best_of", 2), ("best_of", True),
    ("logit_bias", {"50256": -100}), ("presence_penalty", 0.5), ("frequency_penalty", -1),
    ("n", 2), ("echo", True), ("echo", 0), ("presence_penalty", "NaN"),
])
def test_unsupported_openai_fields_get_400_naming_them(url, field, value):
    v = json.dumps(value) if not isinstance(value, str) else value
    r = raw_post(url, "/v1/completions", f'{{"prompt": "x", "{field}": {v}}}')
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith(f"{field}: not supported")


def test_the_neutral_values_the_openai_client_sends_are_served(url):
    r = client(url).completions.create(
        model="tiny", prompt="def f(", max_tokens=3, n=1, best_of=1, echo=False, logprobs=None,
        logit_bias={}, presence_penalty=0, frequency_penalty=0.0, user="someone")
    assert r.choices[0].finish_reason in ("stop", "length")
    tgi = post(url, "/generate", {"inputs": "def f(", "parameters": {
        "max_new_tokens": 3, "details": False, "best_of": 1, "repetition_penalty": 1.0,
        "truncate": None, "watermark": False, "decoder_input_details": False}})
    assert tgi.status_code == 200, tgi.text


@pytest.mark.parametrize("field, value", [("details", True), ("repetition_penalty", 1.2),
                                          ("truncate", 100), ("best_of", 2)])
def test_unsupported_tgi_parameters_get_400_naming_them(url, field, value):
    r = post(url, "/generate", {"inputs": "x", "parameters": {field: value}})
    assert r.status_code == 400 and r.json()["error"].startswith(f"parameters.{field}: ")


@pytest.mark.parametrize("extra", [{"seed": 2**64}, {"logprobs": 2}, {"temperature": "hot"}])
def test_a_streaming_request_with_a_bad_field_gets_a_4xx_not_a_stream(url, extra):
    r = post(url, "/v1/completions", {"prompt": "x", "stream": True, **extra})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert next(iter(extra)) in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError):
        list(client(url).completions.create(model="tiny", prompt="x", stream=True,
                                            extra_body=extra))


def test_a_stream_that_fails_midway_ends_with_an_error_event(loaded):
    stub = scripted(loaded, ["x"])
    forward = stub.model.forward

    def failing(input_ids, cache=None, use_cache=True, **kw):  # the second pass fails
        if stub.model.calls >= 1:
            raise RuntimeError("boom")
        return forward(input_ids, cache=cache, use_cache=use_cache, **kw)

    stub.model.forward = failing
    with BackgroundServer(create_app(stub, ServeSettings(max_tokens=4))) as url:
        with httpx.stream("POST", url + "/v1/completions", timeout=30,
                          json={"prompt": "a", "max_tokens": 4, "stream": True}) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert r.status_code == 200  # sent with the first byte, before the failure
        assert json.loads(events[0])["choices"][0]["text"] == "x"
        assert json.loads(events[-2])["error"]["code"] == 500 and events[-1] == "[DONE]"
        assert "boom" not in events[-2]  # no traceback to the client
        assert httpx.get(url + "/health").json()["error"] == 1


def _fast(tokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def _trained_bpe(pre, normalizer=None, added=()):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

    from .tiny import CORPUS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.normalizer = pre, normalizer
    tok.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([AddedToken(t, lstrip=lstrip) for t, lstrip in added])
    return _fast(tok)


def test_chars_per_token_bound_holds_on_hostile_text(tmp_path):
    """A prompt of C characters has at least C / bound tokens, for the tokenizers the bound is
    given for: byte-level BPE (StarCoder), SentencePiece-style byte-fallback BPE (CodeLlama), and
    NFC normalisation in front (Qwen2.5), which composes up to 4 code points into one."""
    from tokenizers import normalizers, pre_tokenizers
    from transformers import AutoTokenizer

    from codetune.serve.limits import max_chars_per_token

    from .tiny import build_codellama_tokenizer, build_tokenizer

    nfc = _trained_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), normalizers.NFC())
    toks = [AutoTokenizer.from_pretrained(str(build_tokenizer(tmp_path / "sc"))),
            AutoTokenizer.from_pretrained(str(build_codellama_tokenizer(tmp_path / "cl"))), nfc]
    hostile = ["x" * 5000, " " * 5000, "\n" * 3000, "\t" * 999, "é" * 2000, "e\u0301" * 2000,
               "\u03b1\u0314\u0342\u0345" * 1000, "\u1100\u1161\u11a8" * 1000, "😀" * 1000,
               "漢字" * 1000, "\x00" * 500, "<fim_prefix>" * 300, "▁<PRE>" * 300, "<0x41>" * 300]
    for tok in toks:
        bound = max_chars_per_token(tok)
        assert bound is not None and bound < 100
        texts = hostile + [tok.convert_tokens_to_string([t]) * 200 for t in tok.get_vocab()]
        for text in texts:
            if "<FILL_ME>" in text:  # CodeLlama's tokenizer refuses it twice (the server: 400)
                continue
            for split in (False, True):
                n = len(tok.encode(text, add_special_tokens=False, split_special_tokens=split))
                assert n * bound >= len(text), (tok.__class__.__name__, bound, text[:30], n)
    plain = _trained_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False))  # same vocabulary
    assert max_chars_per_token(nfc) == 4 * max_chars_per_token(plain)


def test_no_chars_per_token_bound_where_text_can_vanish():
    """Pipelines that drop text or fold an unbounded run into one token get no bound (so no
    early rejection): whitespace splitting, Strip, an added token that swallows spaces, WordPiece."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from codetune.serve.limits import max_chars_per_token

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    spaces = _trained_bpe(pre_tokenizers.Whitespace())
    assert spaces.encode(" " * 100_000, add_special_tokens=False) == []  # why: 0 tokens
    assert max_chars_per_token(spaces) is None
    assert max_chars_per_token(_trained_bpe(byte_level, normalizers.Strip())) is None
    assert max_chars_per_token(_trained_bpe(byte_level, added=[("<mask>", True)])) is None
    assert max_chars_per_token(_trained_bpe(byte_level, added=[("<mask>", False)])) is not None
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    assert max_chars_per_token(_fast(wordpiece)) is None
