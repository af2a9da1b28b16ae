"""codetune complete: prompts, stops, the hole at a cursor, the CLI. The tiny run from conftest
plus a scripted stub model (a forward pass that returns chosen tokens) for exact stop cases."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from codetune import cli
from codetune import infer as inference
from codetune.errors import CodetuneError
from codetune.infer.complete import complete, hole_in_file
from codetune.infer.generate import GenerationStream, GenParams

PREFIX = "def handle_3(request):\n    user = request.user\n    if not user.is_authenticated:\n"
SUFFIX = "\n    return render(request, \"orders/list.html\")\n"


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return inference.load(str(tiny_run["run"]))


class Scripted(torch.nn.Module):
    """A causal LM stub: step i predicts `script[i]` (the last entry repeats). `gate`, when
    given, must be set before each forward pass returns; `delay` slows each pass."""

    def __init__(self, script: list[int], vocab: int, gate: threading.Event | None = None,
                 delay: float = 0.0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.script, self.vocab, self.gate, self.delay = script, vocab, gate, delay
        self.config = SimpleNamespace(max_position_embeddings=512)
        self.calls = 0

    def forward(self, input_ids, cache=None, use_cache=True, **kw):
        self.calls += 1
        if self.gate is not None:
            assert self.gate.wait(20), "test gate never opened"
        time.sleep(self.delay)
        step = cache or 0
        logits = torch.full((1, input_ids.shape[1], self.vocab), -1e9)
        logits[0, -1, self.script[min(step, len(self.script) - 1)]] = 0.0
        return SimpleNamespace(logits=logits, cache=step + 1)


def scripted(loaded, text_or_ids: list, **kw) -> inference.Loaded:
    """`loaded` with its model replaced by a stub that generates `text_or_ids` (one-character
    strings become their single token id)."""
    tok = loaded.tokenizer
    ids = []
    for t in text_or_ids:
        if isinstance(t, str):
            enc = tok.encode(t, add_special_tokens=False)
            assert len(enc) == 1, t
            t = enc[0]
        ids.append(t)
    return dataclasses.replace(loaded, model=Scripted(ids, len(tok), **kw))


def run_stream(loaded, params, prompt=None):
    stream = GenerationStream(loaded, prompt or inference.fim_prompt(loaded, "a", "b"), params)
    return list(stream), stream


def test_never_echoes_the_prompt_fim_and_plain(loaded):
    params = GenParams(max_new_tokens=8, temperature=1.0, seed=0)
    out = complete(loaded, PREFIX, SUFFIX, params)
    assert out.mode == "fim" and out.prompt_tokens > 20
    assert not out.text.startswith(PREFIX[:10]) and "<fim_" not in out.text
    # A model without FIM tokens continues a bare prefix left to right...
    plain = complete(dataclasses.replace(loaded, fim=None), PREFIX, None, params)
    assert plain.mode == "plain" and plain.completion_tokens > 0
    assert not plain.text.startswith(PREFIX[:10])
    # ...and cannot infill.
    with pytest.raises(CodetuneError, match="no Fill-in-the-Middle tokens"):
        complete(dataclasses.replace(loaded, fim=None), PREFIX, SUFFIX, params)


def test_stream_equals_batched_generate_greedy(loaded):
    """The token-by-token KV-cache loop and `model.generate` pick the same tokens."""
    params = GenParams(max_new_tokens=12, greedy=True)
    for prompt in (inference.plain_prompt(loaded, PREFIX),
                   inference.fim_prompt(loaded, PREFIX, SUFFIX)):
        assert GenerationStream(loaded, prompt, params).run() == \
            inference.generate(loaded, [prompt], params)[0]


def test_stop_string_cuts_the_real_model_output(loaded):
    prompt = inference.plain_prompt(loaded, "class Order:\n    def __init__(self")
    full = GenerationStream(loaded, prompt, GenParams(max_new_tokens=12, greedy=True)).run()
    assert len(full) >= 5, full  # the crafted case needs some text
    stop = full[3:5]
    pieces, stream = run_stream(loaded, GenParams(max_new_tokens=12, greedy=True, stop=(stop,)),
                                prompt)
    assert stream.text == "".join(pieces) == full[:full.find(stop)]
    assert stream.finish_reason == "stop"


def test_stops_at_sentinels_eos_and_stop_strings_never_streaming_past_them(loaded):
    fim = loaded.fim
    p = GenParams(max_new_tokens=20, greedy=True)
    for stop_id in (fim.middle_id, fim.prefix_id, fim.file_sep_id, fim.eos_id):
        pieces, s = run_stream(scripted(loaded, ["x", "y", stop_id, "z"]), p)
        assert (s.text, "".join(pieces), s.finish_reason) == ("xy", "xy", "stop")
    # a stop string split over tokens: "S" is held back until it cannot start "STOP" any more
    pieces, s = run_stream(scripted(loaded, list("xySTOPz")),
                           dataclasses.replace(p, stop=("STOP",)))
    assert (s.text, s.finish_reason) == ("xy", "stop") and "".join(pieces) == "xy"
    assert not any("S" in piece for piece in pieces)
    pieces, s = run_stream(scripted(loaded, ["x", "S", "y", fim.eos_id]),
                           dataclasses.replace(p, stop=("ST",)))
    assert "".join(pieces) == s.text == "xSy"
    pieces, s = run_stream(scripted(loaded, ["x"]), dataclasses.replace(p, max_new_tokens=3))
    assert (s.text, s.finish_reason, s.completion_tokens) == ("xxx", "length", 3)


def test_cancel_and_deadline_stop_before_the_next_token(loaded):
    model = scripted(loaded, ["x"])
    cancel = threading.Event()
    cancel.set()
    s = GenerationStream(model, [1, 2], GenParams(), cancel=cancel)
    assert s.run() == "" and s.finish_reason == "cancelled" and model.model.calls == 0
    s = GenerationStream(model, [1, 2], GenParams(), deadline=time.monotonic() - 1)
    assert s.run() == "" and s.finish_reason == "timeout"


def test_prompt_over_the_context_window_is_a_clear_error(loaded):
    with pytest.raises(CodetuneError, match="context window is 512"):
        GenerationStream(loaded, [1] * 512, GenParams())
    s = GenerationStream(scripted(loaded, ["x"]), [1] * 509, GenParams(max_new_tokens=100))
    assert s.run() == "xxx" and s.finish_reason == "length"  # clamped to the window


def test_raw_prompt_recognises_sentinels_plain_prompt_does_not(loaded):
    raw = f"{loaded.fim.format.prefix}{PREFIX}{loaded.fim.format.suffix}{SUFFIX}" \
          f"{loaded.fim.format.middle}"
    assert inference.raw_prompt(loaded, raw) == inference.fim_prompt(loaded, PREFIX, SUFFIX)
    assert loaded.fim.prefix_id not in inference.plain_prompt(loaded, raw)


def test_hole_in_file(tmp_path):
    f = tmp_path / "a.py"
    f.write_text("import os\ndef f(x):\n    return \n")
    assert hole_in_file(f, 3) == ("import os\ndef f(x):\n    return ", "\n")
    assert hole_in_file(f, 2, 1) == ("import os\n", "def f(x):\n    return \n")
    assert hole_in_file(f, 4) == ("import os\ndef f(x):\n    return \n", "")
    crlf = tmp_path / "b.py"
    crlf.write_bytes(b"a = 1\r\nb = \r\n")
    assert hole_in_file(crlf, 2) == ("a = 1\r\nb = ", "\r\n")
    with pytest.raises(CodetuneError, match="lines 1 to 4"):
        hole_in_file(f, 5)
    with pytest.raises(CodetuneError, match="columns 1 to 10"):
        hole_in_file(f, 1, 11)
    with pytest.raises(CodetuneError, match="does not exist"):
        hole_in_file(tmp_path / "nope.py", 1)
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CodetuneError, match="not UTF-8"):
        hole_in_file(tmp_path / "bin", 1)


def test_cli_complete_file_json_and_text(tiny_run, tmp_path, capsys):
    f = tmp_path / "views.py"
    f.write_text(PREFIX + "\n" + SUFFIX)
    argv = ["complete", str(tiny_run["run"]), "--file", str(f), "--line", "4",
            "--max-new-tokens", "4", "--seed", "1", "--temperature", "1"]
    assert cli.main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "fim" and out["finish_reason"] in ("stop", "length")
    assert out["completion_tokens"] <= 4 and "adapter" in out["model"]
    assert cli.main(argv) == 0  # plain text: the same completion (same seed), newline-ended
    assert capsys.readouterr().out == out["text"] + ("" if out["text"].endswith("\n") else "\n")
    # a base model folder works as a target too
    assert cli.main(["complete", str(tiny_run["base"]), "--prefix", "def f(", "--suffix", "",
                     "--max-new-tokens", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(tiny_run["base"])


@pytest.mark.parametrize("args, message", [
    (["--file", "MISSING.py", "--line", "1"], "does not exist"),
    (["--file", "FILE", "--line", "9"], "out of range"),
    (["--file", "FILE"], "needs --line"),
    ([], "nothing to complete"),
    (["--prefix", "x", "--line", "2"], "go with --file"),
    (["--prefix", "x", "--top-p", "0"], "--top-p"),
])
def test_cli_complete_errors(tiny_run, tmp_path, capsys, args, message):
    f = tmp_path / "f.py"
    f.write_text("x = 1\n")
    args = [str(f) if a == "FILE" else str(tmp_path / a) if a == "MISSING.py" else a
            for a in args]
    assert cli.main(["complete", str(tiny_run["run"]), *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_complete_target_not_found(tmp_path, capsys):
    assert cli.main(["complete", str(tmp_path / "no-such-run"), "--prefix", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------------- the suffix starting over

# Found with a real 0.5B model served through the openai client at temperature 0: the middle was
# right, then the whole suffix followed it again.
CLICK_PREFIX = ("import click\n\n\n@click.command()\n@click.option('--count', default=1)\n"
                "@click.argument('name')\ndef hello(count, name):\n    for x in range(count):\n"
                "        ")
CLICK_MIDDLE = "click.echo(f'Hello, {name}!')"
CLICK_SUFFIX = "\n\n\nif __name__ == '__main__':\n    hello()\n"
# A multi-line eval task of the same real-model run: both base and tuned went on into the suffix.
NONE_PREFIX = ("    def get(self, name):\n        matches = [i for i in self.items if i.name == name]\n"
               "        if matches:\n            if not matches[0].enabled:\n")
NONE_MIDDLE = "                return None\n"
NONE_SUFFIX = ("\n            if len(matches) == 1:\n                return matches[0]\n"
               "        raise KeyError(name)\n")


def test_trim_the_click_example_exactly():
    assert inference.trim_completion(CLICK_MIDDLE + CLICK_SUFFIX, CLICK_SUFFIX, CLICK_PREFIX) \
        == (CLICK_MIDDLE, True)
    # the same cut, whichever sign comes first: ran out of tokens inside the anchor line...
    assert inference.trim_completion(CLICK_MIDDLE + "\n\n\nif __name__ == '__ma", CLICK_SUFFIX,
                                     CLICK_PREFIX) == (CLICK_MIDDLE, True)
    # ...or the anchor line with fewer blank lines in front than the suffix has
    assert inference.trim_completion(CLICK_MIDDLE + "\nif __name__ == '__main__':\n", CLICK_SUFFIX,
                                     CLICK_PREFIX) == (CLICK_MIDDLE, True)
    # a model that stops by itself is left alone
    assert inference.trim_completion(CLICK_MIDDLE, CLICK_SUFFIX, CLICK_PREFIX) == \
        (CLICK_MIDDLE, False)


def test_trim_the_return_none_example():
    text, trimmed = inference.trim_completion(NONE_MIDDLE + NONE_SUFFIX, NONE_SUFFIX, NONE_PREFIX)
    assert (text, trimmed) == (NONE_MIDDLE, True)
    # the file reassembles exactly, the suffix's blank line kept once
    assert NONE_PREFIX + text + NONE_SUFFIX == NONE_PREFIX + NONE_MIDDLE + NONE_SUFFIX
    # and the multi-line task now scores (eval strips both sides)
    from codetune.evaluation.tasks import exact_match

    assert exact_match(text, NONE_MIDDLE) == 1.0
    assert exact_match(NONE_MIDDLE + NONE_SUFFIX, NONE_MIDDLE) == 0.0


def test_trim_overlap_with_the_suffix():
    # a mid-line hole: the model finished the call, then went on with the next line
    assert inference.trim_completion("a, b)\n    return x\n", ", b)\n    return x\n", "    f(") \
        == ("a", True)
    # the tail that equals the start of the suffix goes, mid-identifier too
    assert inference.trim_completion("user_name()\nprint(user)\n", "name()\nprint(user)\n",
                                     "user = get_") == ("user_", True)
    # out of tokens part-way into the suffix's first line: at least 8 non-blank characters
    assert inference.trim_completion("total += x\n    return tot", "\n    return total\n",
                                     "    ") == ("total += x", True)
    assert inference.trim_completion("a, b)\n    retur", ", b)\n    return x\n", "f(") == \
        ("a", True)


def test_legit_completions_that_touch_the_suffix_are_not_cut():
    trim = inference.trim_completion
    # closes its own call: the last character equals the suffix's first
    assert trim("len(xs))", ")\n", "print(") == ("len(xs))", False)
    assert trim("len(xs)", ")\nprint(ys)\n", "print(") == ("len(xs)", False)
    # ends in the newline the suffix starts with: kept (trimming it would join two lines)
    assert trim("x = 1\n", "\n    return x\n", "    ") == ("x = 1\n", False)
    # a short beginning of the suffix, out of tokens: under 8 non-blank characters
    assert trim("y = f(x)\n    ret", "    return y\n", "") == ("y = f(x)\n    ret", False)
    # a middle line that only begins like the suffix's first line
    suffix = "    self.assertEqual(b, 2)\n"
    text = "    self.assertEqual(a, 1)\n    self.assertEqual(c, 3)\n"
    assert trim(text, suffix, "    def test(self):\n") == (text, False)
    # a nested `}` / `else:` at another indentation is not the one after the hole
    js = "  if (a) {\n    b();\n  }\n  c();\n"
    assert trim(js, "}\n", "function f() {\n") == (js, False)
    assert trim(js + "}\n", "}\n", "function f() {\n") == (js, True)
    py = "        if y:\n            a()\n        else:\n            b()\n"
    assert trim(py, "    else:\n        c()\n", "    if x:\n") == (py, False)


def test_trim_single_line_holes():
    trim = inference.trim_completion
    # one line: ends at the line end, whatever follows
    assert trim("return total\n    print(x)\n", "\n    print(x)\n", "    ", stops=("\n",)) == \
        ("return total", False)
    # the model wrote the next line instead of this one: nothing left to insert
    assert trim("print(x)\n", "\n    print(x)\n", "    ", stops=("\n",)) == ("", True)
    # a cursor mid-line: the rest of the line repeated is cut (8+ non-blank characters)
    assert trim("price * item.qty\n", " * item.qty\n", "    total += item.", stops=("\n",)) \
        == ("price", True)


def test_holdback_keeps_a_possible_repetition_off_the_stream():
    f = inference.Finisher((), CLICK_SUFFIX, CLICK_PREFIX)
    for part in ("\n", "\n\n\n", "\n\n\nif __na", "\n\n\nif __name__ == '__main__':"):
        text = CLICK_MIDDLE + part
        assert text[:len(text) - f.holdback(text)] == CLICK_MIDDLE, part
    text = CLICK_MIDDLE + "\n        click.echo('bye')"  # diverged: shown
    assert f.holdback(text) == 0
    # with no suffix, only stop strings and unfinished characters are held back
    assert inference.Finisher(("STOP",)).holdback("abcST") == 2


def scripted_text(loaded, text: str, **kw) -> inference.Loaded:
    """`loaded` with a stub model that generates the tokens of `text`, then EOS."""
    ids = loaded.tokenizer.encode(text, add_special_tokens=False) + [loaded.fim.eos_id]
    return dataclasses.replace(loaded, model=Scripted(ids, len(loaded.tokenizer), **kw))


def test_complete_returns_the_middle_alone_and_stops_generating(loaded):
    stub = scripted_text(loaded, CLICK_MIDDLE + CLICK_SUFFIX)
    n_script = len(stub.model.script)
    pieces = []
    out = complete(stub, CLICK_PREFIX, CLICK_SUFFIX, GenParams(max_new_tokens=200, temperature=0),
                   on_text=pieces.append)
    assert (out.text, out.finish_reason, out.trimmed_suffix) == (CLICK_MIDDLE, "stop", True)
    assert "".join(pieces) == CLICK_MIDDLE  # the held-back newlines never reached the stream
    # stopped once the anchor line was complete: `    hello()` and EOS were never generated
    assert stub.model.calls == out.completion_tokens < n_script - 2
    # a model that stops by itself: nothing trimmed
    clean = complete(scripted_text(loaded, CLICK_MIDDLE), CLICK_PREFIX, CLICK_SUFFIX,
                     GenParams(greedy=True))
    assert (clean.text, clean.trimmed_suffix) == (CLICK_MIDDLE, False)
    # a prompt built elsewhere (an editor's FIM template) is read back for its hole
    s = GenerationStream(stub, inference.fim_prompt(loaded, CLICK_PREFIX, CLICK_SUFFIX),
                    GenParams(greedy=True, max_new_tokens=200))
    assert (s.run(), s.trimmed_suffix) == (CLICK_MIDDLE, True)
    assert inference.prompt_hole(loaded, inference.fim_prompt(loaded, CLICK_PREFIX,
                                                              CLICK_SUFFIX)) == \
        (CLICK_PREFIX, CLICK_SUFFIX)


def test_cli_complete_prints_the_middle_alone(loaded, monkeypatch, capsys):
    import codetune.cli.complete as C

    monkeypatch.setattr(C, "load_target",
                        lambda args: scripted_text(loaded, CLICK_MIDDLE + CLICK_SUFFIX))
    argv = ["complete", "stub", "--prefix", CLICK_PREFIX, "--suffix", CLICK_SUFFIX,
            "--temperature", "0", "--max-new-tokens", "200"]
    assert cli.main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["text"], out["finish_reason"], out["trimmed_suffix"]) == \
        (CLICK_MIDDLE, "stop", True)
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == CLICK_MIDDLE + "\n"


def test_a_tiny_temperature_is_greedy(loaded):
    """temperature 1e-300 divided the logits into inf, then nan probabilities (a 500 in serve)."""
    prompt = inference.fim_prompt(loaded, PREFIX, SUFFIX)
    greedy = GenerationStream(loaded, prompt, GenParams(max_new_tokens=10, greedy=True)).run()
    for t in (1e-300, 1e-6):
        params = GenParams(max_new_tokens=10, temperature=t)
        assert params.is_greedy
        assert GenerationStream(loaded, prompt, params).run() == greedy
        assert inference.generate(loaded, [prompt], params) == [greedy]
    assert not GenParams(temperature=1e-4).is_greedy


@pytest.mark.parametrize("family", ["starcoder", "codellama"])
def test_prompt_hole_reads_back_prefix_and_suffix(tmp_path, family):
    from transformers import AutoTokenizer

    from codetune.tokens.fim import build_prompt, detect_fim

    from .tiny import build_codellama_tokenizer, build_tokenizer

    build = build_codellama_tokenizer if family == "codellama" else build_tokenizer
    tok = AutoTokenizer.from_pretrained(str(build(tmp_path / "tok")))
    fim = detect_fim(tok)
    stub = inference.Loaded(None, tok, fim, "tokenizer only")
    for prefix, suffix in [(CLICK_PREFIX, CLICK_SUFFIX), ("    x = ", "  y\n"), ("a", " b"),
                           ("", "")]:
        assert inference.prompt_hole(stub, build_prompt(tok, fim, prefix, suffix)) == \
            (prefix, suffix)
    assert inference.prompt_hole(stub, inference.plain_prompt(stub, "def f(")) is None
