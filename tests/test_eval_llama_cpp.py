"""`codetune eval` through llama.cpp: the GGUF users run, on the prompts torch gets.

The `runtime` tests start the real llama-server (built by scripts/llama-cpp.sh; CI builds it) on
tiny GGUF files written by codetune's exporter. The others run everywhere: a stand-in
`llama-server` (a Python script speaking the same HTTP) checks the wire format and that
codetune, not the server, decides where completions end; errors and the report are checked
without any server.
"""

from __future__ import annotations

import json
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from codetune import config, runtimes
from codetune.cli import main
from codetune.config import EvalConfig
from codetune.errors import CodetuneError, ConfigError
from codetune.evaluation import engines
from codetune.evaluation.report import QUANTIZATION, report_markdown, summarise
from codetune.evaluation.tasks import Task
from codetune.export import export, llama_cpp
from codetune.export import gguf as G
from codetune.infer.generate import GenParams
from codetune.infer.llama_server import LlamaServer, read_gguf

from .conftest import TINY_CORPUS_FILE, prep_cfg
from .tiny import QWEN_SPECIALS, build_model, build_tokenizer


def _quiet(msg):
    pass


def _decisive(model_dir: Path) -> None:
    """Untied head = 2x the embeddings, q/k x8: a token predicts itself by a wide margin, so
    F16 rounding cannot flip an argmax (random tiny logits are near-ties; see test_export)."""
    from safetensors.torch import load_file, save_file

    f = model_dir / "model.safetensors"
    sd = load_file(str(f))
    sd["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"] * 2
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"].clone()
    for k in sd:
        if k.endswith(("q_proj.weight", "k_proj.weight")):
            sd[k] = sd[k] * 8
    save_file(sd, str(f), metadata={"format": "pt"})


def _qwen(root: Path, corpus: list[str] | None = None, size: int = 600) -> dict[str, Path]:
    """A tiny Qwen2 with Qwen2.5-Coder's FIM tokens, exported to F16 GGUF by codetune.
    `corpus`: train its tokenizer on other text (other merges; `size` tokens at most)."""
    from . import tiny

    saved = tiny.CORPUS
    if corpus is not None:
        tiny.CORPUS = corpus
    try:
        tok = build_tokenizer(root / "tok", specials=QWEN_SPECIALS, vocab_size=size)
    finally:
        tiny.CORPUS = saved
    hf = build_model(root / "hf", "qwen2", tok)
    _decisive(hf)
    r = export(hf, "gguf", root / "out", ftype="F16", converter="codetune", echo=_quiet)
    return {"hf": hf, "tok": tok, "gguf": root / "out" / r["gguf"]}


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> dict[str, Path]:
    return _qwen(tmp_path_factory.mktemp("qwen_gguf"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A prepared dataset with a held-out split and a repository index (so eval runs the
    repository-context 2x2, each variant with and without snippets, and import-use holes)."""
    from codetune.context import index_dataset
    from codetune.data.prepare import prepare

    root = tmp_path_factory.mktemp("llama_ds")
    repo = root / "shop"
    (repo / "shop").mkdir(parents=True)
    for k in range(4):  # (several, so that some are train files whatever the split)
        (repo / "shop" / f"money_{k}.py").write_text(
            f"def cents_{k}(x):\n    return round(x * {10 ** (k + 1)})\n")
    for i in range(12):
        (repo / "shop" / f"views_{i}.py").write_text(
            f"from shop.money_{i % 4} import cents_{i % 4}\n\n\n"
            + TINY_CORPUS_FILE.format(i=i)
            + f"\n\ndef total_{i}(order):\n    return cents_{i % 4}(order.net * {i + 2})\n")
    prepare([str(repo)], root / "ds", prep_cfg(valid_fraction=0.3, dedup_near=False),
            progress=False, context_index=index_dataset)
    return root / "ds"


def _cfg(**kw) -> EvalConfig:
    cfg = EvalConfig(max_new_tokens_single=8, max_new_tokens_multi=16, bootstrap=200,
                     batch_size=4, **kw)
    cfg.validate()
    return cfg


# ---------------------------------------------------------------------------------------------
# The real llama-server


@pytest.mark.runtime
def test_llama_cpp_completions_equal_torch_on_the_same_prompts(llama_cpp, qwen, dataset,
                                                               tmp_path, monkeypatch):
    from codetune.evaluation.run import evaluate
    from codetune.infer import loader

    gguf = str(qwen["gguf"])
    torch_res = evaluate(gguf, _cfg(), tmp_path / "torch", dataset=str(dataset), progress=False)

    def no_weights(*a, **kw):
        raise AssertionError("the llama.cpp engine loaded torch weights")

    monkeypatch.setattr(loader, "load", no_weights)
    res = evaluate(gguf, _cfg(engine="llama.cpp"), tmp_path / "llama", dataset=str(dataset),
                   progress=False)
    a = json.loads((tmp_path / "torch" / "eval.json").read_text())
    b = json.loads((tmp_path / "llama" / "eval.json").read_text())
    assert res.models == torch_res.models == ["model+repo", "model"]  # the 2x2's half
    assert len(b["task_records"]) == res.tasks > 0
    for ra, rb in zip(a["task_records"], b["task_records"], strict=True):
        assert ra["task_id"] == rb["task_id"]
        for name in res.models:  # the same ids in, the same ending rules out: the same text
            assert rb[name]["output"] == ra[name]["output"], (ra["task_id"], name)
            assert rb[name]["trimmed_suffix"] == ra[name]["trimmed_suffix"]
    # bits per byte are torch-only, and the report says so in one line
    assert "bits_per_byte_ltr" in a["metrics"] and "bits_per_byte_ltr" not in b["metrics"]
    report = (tmp_path / "llama" / "report.md").read_text()
    assert "llama-server" in res.model and "## Engines" in report
    assert res.engines == {"model": {"engine": "llama.cpp", "what": res.model}}
    assert res.timings["model"]["tasks"] == res.tasks * len(res.models)


@pytest.mark.runtime
def test_gguf_variants_of_a_run_are_compared_with_tuned(llama_cpp, tiny_run, dataset, tmp_path,
                                                        capsys):
    """`eval RUN --gguf F16 --gguf F16-again` on a dataset with a repository index: the same
    tasks and prompts, with and without context; each GGUF is compared with tuned in both
    settings. Export merges the LoRA in bfloat16 and writes F16, llama.cpp computes its own way,
    yet the tiny run's model (trained on a repetitive corpus) is decisive enough that greedy
    completions are the same token for token (46 of 46 tasks, 23 per setting, when this test
    was written, with the float32 merge as well): an export or prompt bug breaks that."""
    r = export(tiny_run["run"], "gguf", tmp_path / "x", ftype="F16", converter="codetune",
               echo=_quiet)
    f16 = tmp_path / "x" / r["gguf"]
    again = tmp_path / "x2.gguf"
    again.write_bytes(f16.read_bytes())
    out = tmp_path / "e"
    assert main(["eval", str(tiny_run["run"]), "--dataset", str(dataset), "-o", str(out), "-q",
                 "--gguf", str(f16), "--gguf", str(again), "-s", "eval.bpb=false",
                 "-s", "eval.bootstrap=200", "-s", "eval.max_new_tokens_single=8",
                 "-s", "eval.max_new_tokens_multi=8", "-s", "eval.max_tasks=6"]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "eval.json").read_text())
    names = doc["models"]
    assert names == ["base+repo", "base", "tuned+repo", "tuned", "gguf:F16+repo", "gguf:F16",
                     "gguf:F16-2+repo", "gguf:F16-2"]
    assert all(isinstance(rec[n]["output"], str) for rec in doc["task_records"] for n in names)
    labels = set().union(*(m.get("comparisons", {}) for m in doc["metrics"].values()))
    assert {f"{QUANTIZATION} (gguf:F16)", f"{QUANTIZATION} (gguf:F16+repo)",
            f"{QUANTIZATION} (gguf:F16-2)", f"{QUANTIZATION} (gguf:F16-2+repo)"} <= labels
    for rec in doc["task_records"]:
        for s in ("", "+repo"):
            assert rec["gguf:F16" + s]["output"] == rec["tuned" + s]["output"], rec["task_id"]
    # two copies of one file, one greedy llama.cpp: identical completions, no difference
    for rec in doc["task_records"]:
        assert rec["gguf:F16"]["output"] == rec["gguf:F16-2"]["output"]
    em = doc["metrics"]["single_line_exact_match"]["comparisons"]
    assert em[f"{QUANTIZATION} (gguf:F16)"] == {"delta": 0.0, "ci95": [0.0, 0.0]}
    report = (out / "report.md").read_text()
    assert "GGUF through llama.cpp, against tuned" in report and "gguf:F16" in printed


@pytest.mark.runtime
def test_a_running_server_is_a_variant_or_the_engine(llama_cpp, qwen, dataset, tmp_path,
                                                     monkeypatch):
    """eval.server: with torch, one more variant (`server`, compared with `model`); with
    engine=llama.cpp, the model itself, --model naming only its tokenizer."""
    from codetune.evaluation.run import evaluate
    from codetune.infer import loader

    with LlamaServer.start(qwen["gguf"], parallel=2) as server:
        both = evaluate(str(qwen["hf"]), _cfg(server=server.url, bpb=False), tmp_path / "b",
                        dataset=str(dataset), progress=False)
        monkeypatch.setattr(loader, "load", None)  # no torch weights from here on
        alone = evaluate(str(qwen["hf"]), _cfg(engine="llama.cpp", server=server.url),
                         tmp_path / "a", dataset=str(dataset), progress=False)
    assert both.models == ["model+repo", "model", "server+repo", "server"]
    assert alone.models == ["model+repo", "model"] and "llama-server" in alone.model
    assert {f"{QUANTIZATION} (server)", f"{QUANTIZATION} (server+repo)"} <= set(
        both.metrics["single_line_edit_similarity"].comparisons)
    b = json.loads((tmp_path / "b" / "eval.json").read_text())["task_records"]
    a = json.loads((tmp_path / "a" / "eval.json").read_text())["task_records"]
    for rb, ra in zip(b, a, strict=True):  # decisive logits: F16 and float32 agree
        for s in ("", "+repo"):
            assert rb["server" + s]["output"] == rb["model" + s]["output"] == \
                ra["model" + s]["output"]


OTHER_CORPUS = [
    "async def fetch(url, session):\n    async with session.get(url) as r:\n"
    "        return await r.json()\n",
    "SELECT name, total FROM orders WHERE total > 100 ORDER BY created DESC;\n",
    "const sum = (xs) => xs.reduce((a, b) => a + b, 0);\nexport default sum;\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{:?}\", v);\n}\n",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }\n",
]


@pytest.mark.runtime
def test_a_server_with_another_model_is_refused(llama_cpp, qwen, dataset, tmp_path):
    """Same vocabulary size and FIM ids, other merges: only the server's tokenization shows it."""
    from codetune.infer import loader

    tok, fim = loader.tokenizer_and_fim(str(qwen["gguf"]))
    other = _qwen(tmp_path, corpus=OTHER_CORPUS, size=len(tok))
    a, b = read_gguf(other["gguf"]), read_gguf(qwen["gguf"])
    assert (a.fim, a.n_vocab) == (b.fim, b.n_vocab)
    with LlamaServer.start(other["gguf"], ctx=256) as server:
        with pytest.raises(CodetuneError, match="different model .*probe text"):
            server.check_model(tok, fim, "tiny-qwen")
        same_tok, same_fim = loader.tokenizer_and_fim(str(other["gguf"]))
        server.check_model(same_tok, same_fim, "its own tokenizer")  # passes
        # and attached by URL: the same check
        with pytest.raises(CodetuneError, match="llama-server at http.*different model"):
            LlamaServer.attach(server.url).check_model(tok, fim, "tiny-qwen")
        # infill: llama.cpp builds the FIM prompt itself from the GGUF's metadata
        assert isinstance(server.infill("def f(x):\n    ", "\n", max_new_tokens=4), str)
    # and through eval, before anything is generated
    from codetune.evaluation.run import evaluate

    with pytest.raises(CodetuneError, match="different model"):
        evaluate(str(qwen["gguf"]), _cfg(engine="llama.cpp", gguf=[str(other["gguf"])]),
                 tmp_path / "e", dataset=str(dataset), progress=False)


# ---------------------------------------------------------------------------------------------
# Everywhere: errors, the report, the client against a stand-in server


def test_llama_server_not_found_names_the_build_script(qwen, dataset, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # none on PATH either
    with pytest.raises(CodetuneError, match=r"scripts/llama-cpp\.sh.*LLAMA_CPP_DIR"):
        LlamaServer.start(qwen["gguf"])
    assert main(["eval", "--model", str(qwen["gguf"]), "--engine", "llama.cpp",
                 "--dataset", str(dataset), "-o", str(tmp_path / "e"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "scripts/llama-cpp.sh" in err and "Traceback" not in err


def test_a_closed_port_is_a_quick_one_line_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the with ends
    t = time.monotonic()
    with pytest.raises(CodetuneError, match="nothing answers") as e:
        LlamaServer.attach(f"http://127.0.0.1:{port}")
    assert "\n" not in str(e.value) and "--gguf" in str(e.value)
    assert time.monotonic() - t < 10  # (no retry loop on a refused connection)
    with pytest.raises(CodetuneError, match="http:// or https://"):
        LlamaServer.attach(f"127.0.0.1:{port}")


def test_a_gguf_without_fim_metadata_names_the_export(qwen, dataset, tmp_path):
    from transformers import AutoTokenizer

    bare = tmp_path / "bare.F16.gguf"
    G.write(qwen["hf"], bare, "F16", tokenizer=AutoTokenizer.from_pretrained(str(qwen["hf"])),
            fim=None, name="bare")
    assert read_gguf(bare).fim == {}
    with pytest.raises(CodetuneError, match=r"fim_pre_token_id.*codetune export") as e:
        LlamaServer.start(bare)  # before looking for llama-server at all
    assert "\n" not in str(e.value)
    from codetune.evaluation.run import evaluate

    with pytest.raises(CodetuneError, match="no FIM metadata"):
        evaluate(str(qwen["hf"]), _cfg(gguf=[str(bare)]), tmp_path / "e",
                 dataset=str(dataset), progress=False)


def test_engine_config_is_validated():
    cfg = config.load(None, ["eval.engine=llama.cpp", 'eval.gguf=["a.F16.gguf"]',
                             "eval.server=http://127.0.0.1:8080"]).eval
    assert (cfg.engine, cfg.gguf, cfg.server) == ("llama.cpp", ["a.F16.gguf"],
                                                  "http://127.0.0.1:8080")
    with pytest.raises(ConfigError, match="eval.engine must be one of torch, llama.cpp"):
        config.load(None, ["eval.engine=vllm"])
    with pytest.raises(ConfigError, match=r"eval.gguf\[0\] must be a .gguf file.*codetune export"):
        config.load(None, ['eval.gguf=["model.safetensors"]'])
    with pytest.raises(ConfigError, match="eval.server must be an http"):
        config.load(None, ["eval.server=localhost:8080"])
    with pytest.raises(ConfigError, match="eval.llama_threads must be at least 1"):
        config.load(None, ["eval.llama_threads=0"])


def test_engine_and_target_must_fit(tiny_run, qwen, tmp_path):
    from codetune.evaluation.run import evaluate

    with pytest.raises(CodetuneError, match="not a run folder.*--gguf"):
        evaluate(str(tiny_run["run"]), _cfg(engine="llama.cpp"), tmp_path / "a",
                 progress=False)
    with pytest.raises(CodetuneError, match=r"runs a \.gguf file.*--server"):
        evaluate(str(qwen["hf"]), _cfg(engine="llama.cpp"), tmp_path / "b",
                 dataset=str(tmp_path), progress=False)


def test_tool_search_agrees_with_export(tmp_path, monkeypatch):
    """runtimes (below infer) and export.llama_cpp find the same programs."""
    assert runtimes.find() == llama_cpp.find()  # none: the autouse fixture hides them
    for where in ("build/bin", "bin", ""):
        d = tmp_path / where.replace("/", "_") / "cpp"
        (d / where).mkdir(parents=True, exist_ok=True)
        for name in ("llama-server", "llama-quantize"):
            (d / where / name).write_text("#!/bin/sh\n")
            (d / where / name).chmod(0o755)
        (d / "convert_hf_to_gguf.py").write_text("")
        monkeypatch.setenv("LLAMA_CPP_DIR", str(d))
        assert runtimes.find() == llama_cpp.find()
        assert runtimes.find()["server"] == str(d / where / "llama-server")


def test_report_compares_each_gguf_with_tuned():
    tasks = [Task(f"t{i}", "single_line", "r", "a.py", "x = ", f"{i}", "\n") for i in range(30)]
    right = [f"{i}" for i in range(30)]
    wrong = ["?"] * 30
    preds = {"base": wrong, "tuned": right, "base+repo": wrong, "tuned+repo": right,
             "gguf:Q4_K_M": wrong, "gguf:Q4_K_M+repo": right, "gguf:F16": right,
             "gguf:F16+repo": right}
    comps = engines.comparisons(list(preds), ["gguf:Q4_K_M", "gguf:F16"], ["file", "repo"])
    assert comps == {"quantization (gguf:Q4_K_M)": ("tuned", "gguf:Q4_K_M"),
                     "quantization (gguf:Q4_K_M+repo)": ("tuned+repo", "gguf:Q4_K_M+repo"),
                     "quantization (gguf:F16)": ("tuned", "gguf:F16"),
                     "quantization (gguf:F16+repo)": ("tuned+repo", "gguf:F16+repo")}
    res = summarise(tasks, preds, [], {}, [], {}, EvalConfig(bootstrap=200), comparisons=comps)
    em = res.metrics["single_line_exact_match"]
    d, lo, hi = em.comparisons["quantization (gguf:Q4_K_M)"]
    assert d == -1.0 and hi < 0 and em.change("quantization (gguf:Q4_K_M)") == -1
    assert em.comparisons["quantization (gguf:F16)"] == (0.0, 0.0, 0.0)
    assert "gguf:Q4_K_M: lost on single line exact match" in res.quantization_verdict
    assert "gguf:F16: no difference" in res.quantization_verdict
    res.engines = {n: {"engine": "llama.cpp" if n.startswith("gguf") else "torch", "what": n}
                   for n in ("base", "tuned", "gguf:Q4_K_M", "gguf:F16")}
    res.metrics["bits_per_byte_ltr"] = em  # (any torch-only metric present)
    md = report_markdown(res, [])
    assert "## Engines" in md and "quantization (gguf:Q4_K_M+repo)" in md
    assert "Bits per byte are measured with torch only" in md
    # without any GGUF: no comparison, no section, no sentence
    plain = summarise(tasks, {"base": wrong, "tuned": right}, [], {}, [], {},
                      EvalConfig(bootstrap=50),
                      comparisons=engines.comparisons(["base", "tuned"], [], ["file"]))
    assert plain.quantization_verdict == "" and "## Engines" not in report_markdown(plain, [])
    # the llama.cpp model alone is the reference for further GGUFs
    assert engines.comparisons(["model", "gguf:Q8_0"], ["model", "gguf:Q8_0"], ["file"]) == {
        "quantization (gguf:Q8_0)": ("model", "gguf:Q8_0")}


# A stand-in llama-server: the routes and fields codetune uses, a scripted "model" (each
# completion is the text COMPLETION tokenized by codetune's tokenizer, saved as JSON, with the
# prompt's length in it, so the order of results shows), every request body logged.
FAKE = r'''#!{python}
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from tokenizers import Tokenizer

args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
tok = Tokenizer.from_file({tokenizer!r})
log = open({log!r}, "a")
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def send(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            return self.send({{"status": "ok"}})
        if self.path == "/v1/models":
            return self.send({{"data": [{{"meta": {{"n_vocab": tok.get_vocab_size(),
                                                   "n_ctx": 256, "ftype": "F16"}}}}]}})
        if self.path == "/props":
            return self.send({{"total_slots": 3, "model_path": "fake.gguf",
                               "build_info": "fake"}})
        self.send({{"error": {{"message": "no such route"}}}}, 404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with lock:
            log.write(json.dumps([self.path, body]) + "\n")
            log.flush()
        if self.path == "/tokenize":
            return self.send({{"tokens": tok.encode(body["content"],
                                                   add_special_tokens=False).ids}})
        if self.path == "/completion":
            text = {completion!r}.format(n=len(body["prompt"]))
            ids = tok.encode(text, add_special_tokens=False).ids + [0]  # then EOS
            return self.send({{"content": text, "tokens": ids[:body["n_predict"]],
                               "stop_type": "eos"}})
        self.send({{"error": {{"message": "no such route"}}}}, 404)

ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def _fake_server(tmp_path: Path, tokenizer, completion: str) -> tuple[Path, Path]:
    log = tmp_path / "requests.jsonl"
    exe = tmp_path / "bin" / "llama-server"
    exe.parent.mkdir(exist_ok=True)
    # (as transformers built it: for a qwen2 model it replaces tokenizer.json's pre-tokenizer
    # with Qwen2's, so the file on disk would tokenize differently)
    spec = tmp_path / "tokenizer.json"
    spec.write_text(tokenizer.backend_tokenizer.to_str())
    exe.write_text(FAKE.format(python=sys.executable, tokenizer=str(spec), log=str(log),
                               completion=completion))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe, log


def test_codetune_ends_completions_from_the_server_ids(qwen, tmp_path):
    """Prompts go over as ids, greedy, asking for the generated ids; codetune's `_Ending` cuts
    them (the suffix starting over here) and keeps the order of the prompts."""
    from codetune.infer import loader
    from codetune.infer.prompts import fim_prompt

    tok, fim = loader.tokenizer_and_fim(str(qwen["gguf"]))
    exe, log = _fake_server(tmp_path, tok, "v{n} = 1\nreturn total\n")
    loaded = loader.Loaded(None, tok, fim, "tiny")
    holes = [("def f():\n    ", "\nreturn total\n" + "#" * i) for i in range(7)]
    prompts = [fim_prompt(loaded, p, s) for p, s in holes]
    with LlamaServer.start(qwen["gguf"], ctx=256, binary=str(exe)) as server:
        assert server.slots == 3 and server.n_ctx == 256
        server.check_model(tok, fim, "tiny")
        done: list[int] = []
        gens = server.generations(loaded, prompts, GenParams(max_new_tokens=40, greedy=True),
                                  holes, done.append)
        proc = server.process
    assert proc.poll() is not None  # stopped on close
    assert len(done) == len(prompts)
    for p, g in zip(prompts, gens, strict=True):
        assert g.text == f"v{len(p)} = 1" and g.trimmed_suffix and g.finish_reason == "stop"
    sent = [b for path, b in map(json.loads, log.read_text().splitlines())
            if path == "/completion"]
    assert sorted(b["prompt"] for b in sent) == sorted(prompts)  # ids, as built
    for b in sent:
        assert b["return_tokens"] and b["samplers"] == ["top_k"] and b["top_k"] == 1
        assert not b["cache_prompt"] and not b["stream"] and b["n_predict"] == 40


def test_a_server_that_dies_or_hangs_says_so_with_its_log(qwen, tmp_path):
    dies = tmp_path / "dies"
    dies.write_text("#!/bin/sh\necho 'loading model'\necho 'error: unknown argument: --foo' "
                    ">&2\nexit 3\n")
    dies.chmod(0o755)
    with pytest.raises(CodetuneError, match=r"exited \(code 3\).*unknown argument") as e:
        LlamaServer.start(qwen["gguf"], binary=str(dies))
    assert "\n" not in str(e.value)
    hangs = tmp_path / "hangs"
    hangs.write_text("#!/bin/sh\necho 'still loading'\nexec sleep 60\n")
    hangs.chmod(0o755)
    with pytest.raises(CodetuneError, match=r"not get ready within 1 s.*still loading"):
        LlamaServer.start(qwen["gguf"], binary=str(hangs), timeout=1)
