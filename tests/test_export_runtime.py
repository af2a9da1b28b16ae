"""codetune export checked in the real runtime: each GGUF loaded by llama.cpp's `llama-server`.

A tiny Qwen2 with a Qwen2.5-Coder-style FIM tokenizer and the bundled codetune-mini (GPT-BigCode,
StarCoder FIM tokens), written by codetune's writer and by llama.cpp's `convert_hf_to_gguf.py`,
as F16, Q8_0 and Q4_K_M (the real `llama-quantize`). What llama.cpp reads must be what codetune
meant:

- the FIM ids, EOS / EOT and the end-of-generation set, from the server's own load log;
- each sentinel's text -> one id, the tokenizer's (`/tokenize`), and a probe text's ids equal
  to the HF tokenizer's (the pre-tokenizer type and the merges);
- no tokenizer warning at load (a token llama.cpp had to retype, a missing pre-tokenizer);
- a generated special token is never printed as text (`/completion`), `/infill` lays out the
  prompt codetune trained with, and ends with `stop_type` "eos" when the model emits any token
  codetune stops on that llama.cpp ends generation with (the model is pushed to it with a
  `logit_bias`: the tiny models' own choices are arbitrary, and codetune-mini rarely stops).

Every test is marked `runtime` and takes the `llama_cpp` fixture: skipped only where llama.cpp
is not built (`bash scripts/llama-cpp.sh`; CI builds it).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from codetune.errors import CodetuneError
from codetune.export import export
from codetune.export import llama_cpp as tools
from codetune.export.prompts import llama_cpp_template
from codetune.tokens.fim import FIM_FORMATS, detect_fim

from .test_export import _decisive
from .tiny import build_model, build_tokenizer

pytestmark = pytest.mark.runtime

# the text llama.cpp names a pre-tokenizer by, and code: digits, whitespace runs, contractions,
# non-ASCII
PROBE = ("def total(items):\n    s = 0  # über 10 ✓ 12345\n\tfor x in items:\n"
         "        s += x.price * 2  # it's 'ok', we'll see\n\n\n    return s   \n"
         "🚀 (normal) 3..3 ------======= I've been 'told he's there\n")
PREFIX, SUFFIX = "def read_lines(path):\n    with open(path) as f:\n        ", "\n    return lines\n"
LOG_ID = re.compile(r"print_info: (FIM PRE|FIM SUF|FIM MID|FIM PAD|FIM REP|FIM SEP|EOS|EOT|EOG) "
                    r"token\s*= (\d+) ")
ROLES = {"FIM PRE": "prefix", "FIM SUF": "suffix", "FIM MID": "middle", "FIM PAD": "pad",
         "FIM REP": "repo_name", "FIM SEP": "file_sep"}


def _quiet(msg):
    pass


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    """A 2-layer Qwen2 whose byte-level BPE tokenizer has Qwen2.5-Coder's FIM tokens."""
    root = tmp_path_factory.mktemp("runtime_tiny")
    fmt = FIM_FORMATS["qwen2.5-coder"]
    specials = [fmt.eos, *fmt.sentinels, fmt.pad, fmt.file_sep, fmt.repo_name, *fmt.extra_stops]
    tok = build_tokenizer(root / "tok", specials=specials, eos=fmt.eos)
    model = build_model(root / "model", "qwen2", tok)
    _decisive(model, "qwen2")  # the Q8_0 check's top-1 agreement means something
    return model


def _model(name: str, tiny_qwen: Path) -> Path:
    if name == "tiny-qwen2":
        return tiny_qwen
    from codetune.mini import MINI_PATH

    return Path(MINI_PATH).resolve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url + path, method="GET" if body is None else "POST",
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


@contextmanager
def llama_server(binary: str, model: Path, log: Path):
    """llama-server on `model` at a free port (-lv 4: the load log names the special tokens);
    yields its URL once /health answers 200; stopped after."""
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "-m", str(model), "--host", "127.0.0.1", "--port",
                                 str(port), "-c", "512", "-np", "1", "-t", "2", "-lv", "4",
                                 "--no-webui"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "llama-server did not get ready"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_log(log: Path) -> tuple[dict[str, int], set[int], list[str]]:
    """(special ids llama.cpp settled on, its end-of-generation ids, tokenizer warnings)."""
    text = log.read_text(errors="replace")
    ids, eog = {}, set()
    for role, i in LOG_ID.findall(text):
        if role == "EOG":
            eog.add(int(i))
        else:
            ids[role] = int(i)
    warnings = [line for line in text.splitlines()
                if re.search(r"\bW\b", line[:40]) and re.search(
                    r"load|vocab|token|pre-tokenizer|print_info|llama_model_loader", line)]
    return ids, eog, warnings


MODELS = ("tiny-qwen2", "codetune-mini")
CASES = [(m, c, t) for m in MODELS for c in ("codetune", "llama.cpp")
         for t in ("F16", "Q8_0", "Q4_K_M")]


@pytest.mark.parametrize("model,converter,ftype", CASES, ids=["-".join(c) for c in CASES])
def test_llama_server_reads_what_codetune_meant(llama_cpp, tiny_qwen, tmp_path, model,
                                                converter, ftype):
    from transformers import AutoTokenizer

    src = _model(model, tiny_qwen)
    r = export(src, "gguf", tmp_path / "out", ftype=ftype, converter=converter, echo=_quiet)
    assert r["converter"] == converter
    assert (r.get("quantized_by") == "llama-quantize") == (ftype == "Q4_K_M")
    assert r["check"]["tokenizer"]["problems"] == []
    tok = AutoTokenizer.from_pretrained(str(src))
    fim = detect_fim(tok)
    fmt = fim.format

    log = tmp_path / "server.log"
    with llama_server(llama_cpp["server"], tmp_path / "out" / r["gguf"], log) as url:
        ids, eog, warnings = _read_log(log)
        # the special tokens llama.cpp settled on are the registry's
        for role, field in ROLES.items():
            want = getattr(fim, f"{field}_id")
            if want is not None:
                assert ids.get(role) == want, role
        assert ids["EOS"] == fim.eos_id
        ends = {fim.eos_id, fim.pad_id, fim.file_sep_id, fim.repo_name_id} - {None}
        if "EOT" in ids:
            ends.add(ids["EOT"])
        assert ends <= eog, (ends, eog)
        assert warnings == []

        # each sentinel is one token, the tokenizer's; a probe text splits as the tokenizer does
        for text in fim.stop_strings:
            got = _call(url, "/tokenize", {"content": text, "parse_special": True})["tokens"]
            assert got == [tok.convert_tokens_to_ids(text)], text
        got = _call(url, "/tokenize", {"content": PROBE, "add_special": False})["tokens"]
        assert got == tok.encode(PROBE, add_special_tokens=False)

        greedy = {"samplers": ["top_k"], "top_k": 1, "cache_prompt": False,
                  "return_tokens": True}
        # a generated sentinel is a token, never text
        prompt = tok.encode("def f(x):\n", add_special_tokens=False)
        out = _call(url, "/completion", {"prompt": prompt, "n_predict": 3, **greedy,
                                         "logit_bias": [[fim.middle_id, 100.0]]})
        assert out["tokens"] == [fim.middle_id] * 3
        assert out["content"] == ""

        # /infill builds the prompt codetune trained with, and ends on each token both stop on
        body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 8, **greedy}
        plain = _call(url, "/infill", body)
        assert plain["prompt"] == llama_cpp_template(fmt, PREFIX, SUFFIX)
        assert not any(s in plain["content"] for s in fim.stop_strings)
        for end in sorted(ends):
            out = _call(url, "/infill", {**body, "logit_bias": [[end, 100.0]]})
            assert (out["stop_type"], out["tokens"], out["content"]) == ("eos", [end], ""), end


def test_converter_output_lacking_fim_keys_is_refused(llama_cpp, tiny_qwen, tmp_path,
                                                      monkeypatch):
    """llama.cpp's converter writes no FIM keys; were codetune not to add them, the export
    fails its check, names the missing key and the fix, and writes nothing."""
    monkeypatch.setattr(tools, "add_metadata", lambda path, extra, control=(): [])
    with pytest.raises(CodetuneError, match=r"fim_pre_token_id is missing .*--converter "
                                            r"codetune"):
        export(tiny_qwen, "gguf", tmp_path / "out", converter="llama.cpp", echo=_quiet)
    assert not (tmp_path / "out").exists()
