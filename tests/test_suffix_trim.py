"""codetune serve with a model that writes the middle and then the suffix again (as a real 0.5B
code model did at temperature 0): through the official openai client against the real server,
the answer is the middle alone, streamed or not, and no piece of the repeated suffix is ever
sent. Also: a temperature of 1e-300 answers greedily instead of failing in the sampler."""

from __future__ import annotations

import httpx
import openai
import pytest

from codetune import infer as inference
from codetune.serve.app import BackgroundServer, create_app
from codetune.serve.limits import ServeSettings

from .test_complete import (
    CLICK_MIDDLE,
    CLICK_PREFIX,
    CLICK_SUFFIX,
    PREFIX,
    SUFFIX,
    scripted_text,
)


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return inference.load(str(tiny_run["run"]))


@pytest.fixture(scope="module")
def stub(loaded):
    return scripted_text(loaded, CLICK_MIDDLE + CLICK_SUFFIX)


@pytest.fixture(scope="module")
def url(stub):
    with BackgroundServer(create_app(stub, ServeSettings(model_name="stub",
                                                         max_tokens=256))) as url:
        yield url


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_openai_client_gets_the_middle_alone(url, stub):
    calls = stub.model.calls
    r = client(url).completions.create(model="stub", prompt=CLICK_PREFIX, suffix=CLICK_SUFFIX,
                                       temperature=0, max_tokens=200)
    choice = r.choices[0]
    assert (choice.text, choice.finish_reason) == (CLICK_MIDDLE, "stop")
    # generation stopped at the repetition: `    hello()` and EOS were never generated
    assert stub.model.calls - calls == r.usage.completion_tokens < len(stub.model.script) - 2


def test_openai_client_stream_never_sends_the_repeated_suffix(url):
    chunks = list(client(url).completions.create(model="stub", prompt=CLICK_PREFIX,
                                                 suffix=CLICK_SUFFIX, temperature=0,
                                                 max_tokens=200, stream=True))
    pieces = [ch.choices[0].text for ch in chunks]
    assert "".join(pieces) == CLICK_MIDDLE
    assert [ch.choices[0].finish_reason for ch in chunks][-1] == "stop"
    assert not any("\n" in p or "__main__" in p for p in pieces)


def test_a_prompt_the_editor_formatted_is_trimmed_too(url, stub):
    """Continue / llm-vscode templates send "<fim_prefix>...<fim_suffix>...<fim_middle>" without
    a suffix field: the hole is read back from the prompt."""
    f = stub.fim.format
    raw = f"{f.prefix}{CLICK_PREFIX}{f.suffix}{CLICK_SUFFIX}{f.middle}"
    r = client(url).completions.create(model="stub", prompt=raw, temperature=0, max_tokens=200)
    assert r.choices[0].text == CLICK_MIDDLE
    g = httpx.post(url + "/generate", json={"inputs": raw, "parameters": {
        "do_sample": False, "max_new_tokens": 200}}, timeout=30)
    assert g.json() == {"generated_text": CLICK_MIDDLE}


def test_tiny_temperature_answers_greedily(loaded):
    with BackgroundServer(create_app(loaded, ServeSettings(model_name="tiny",
                                                           max_tokens=16))) as url:
        c = client(url)
        kw = dict(model="tiny", prompt=PREFIX, suffix=SUFFIX, max_tokens=10)
        greedy = c.completions.create(**kw, temperature=0).choices[0].text
        assert c.completions.create(**kw, temperature=1e-300).choices[0].text == greedy
        streamed = c.completions.create(**kw, temperature=1e-300, stream=True)
        assert "".join(ch.choices[0].text for ch in streamed) == greedy
