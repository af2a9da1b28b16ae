"""codetune export: GGUF round trips per architecture (written, read back, logits compared), the
Ollama / Tabby / vLLM folders per FIM family (table-driven from the FIM registry), the bundled
codetune-mini completing from its exported file, llama.cpp's tools when present, bad inputs.

The tiny models are random, so their logits are made decisive: untied output heads start as a
copy of the embeddings (a token predicts itself by a wide margin, as a tied head does), and q/k
are scaled up so attention is sharp and a wrong rotary layout shows in the logits (one test
checks that it does)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from codetune import outputs
from codetune.errors import CodetuneError
from codetune.export import export
from codetune.export import gguf as G
from codetune.export.ollama import modelfile
from codetune.export.prompts import hf_template, llama_cpp_template, stop_texts
from codetune.export.reader import read
from codetune.infer.probe import SNIPPETS
from codetune.merge import TOLERANCE
from codetune.tokens.fim import FIM_FORMATS, build_prompt, detect_fim

from .tiny import CORPUS, build_codellama_tokenizer, build_model, build_tokenizer

# (architecture, FIM family of its tokenizer): every architecture the recipes train
ARCHS = [("gpt_bigcode", "starcoder"), ("starcoder2", "starcoder"),
         ("qwen2", "qwen2.5-coder"), ("llama", "codellama"), ("llama", "deepseek-coder")]
FIM_KEYS = {"prefix": "tokenizer.ggml.fim_pre_token_id", "suffix": "tokenizer.ggml.fim_suf_token_id",
            "middle": "tokenizer.ggml.fim_mid_token_id", "pad": "tokenizer.ggml.fim_pad_token_id",
            "repo_name": "tokenizer.ggml.fim_rep_token_id",
            "file_sep": "tokenizer.ggml.fim_sep_token_id", "eot": "tokenizer.ggml.eot_token_id"}


def _quiet(msg):
    pass


def _family_tokenizer(path: Path, family: str) -> Path:
    """A tokenizer with the family's sentinels, spelled by the registry."""
    fmt = FIM_FORMATS[family]
    if fmt.sentencepiece_spacing:  # CodeLlama's own tokenizer class adds its sentinels
        return build_codellama_tokenizer(path)
    tokens = [fmt.eos, *fmt.sentinels, fmt.pad, fmt.file_sep, fmt.repo_name, fmt.eot,
              *fmt.extra_stops]
    return build_tokenizer(path, specials=[t for t in tokens if t], eos=fmt.eos)


def _starcoder2(path: Path, tokenizer_path: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Starcoder2Config

    tok = AutoTokenizer.from_pretrained(str(tokenizer_path))
    cfg = Starcoder2Config(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=512, vocab_size=len(tok),
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def _decisive(model_dir: Path, arch: str) -> None:
    """Embeddings x2 (and an untied head copied from them), q/k x8 (see the module doc)."""
    from safetensors.torch import load_file, save_file

    f = model_dir / "model.safetensors"
    sd = load_file(str(f))
    emb = next(k for k in sd if k.endswith(("embed_tokens.weight", "wte.weight")))
    sd[emb] = sd[emb] * 2
    if "lm_head.weight" in sd:
        sd["lm_head.weight"] = sd[emb].clone()
    for k in sd:
        if k.endswith(("q_proj.weight", "k_proj.weight")):
            sd[k] = sd[k] * 8
        elif arch == "gpt_bigcode" and k.endswith("attn.c_attn.weight"):
            n = sd[k].shape[1]  # rows: q (n_embd), then k and v (one head each)
            sd[k][: n + (sd[k].shape[0] - n) // 2] *= 8
    save_file(sd, str(f), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("fim_tokenizers")
    return {fam: _family_tokenizer(root / fam, fam) for fam in FIM_FORMATS}


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizers):
    root = tmp_path_factory.mktemp("arch_models")
    out = {}
    for arch, fam in ARCHS:
        d = root / f"{arch}-{fam}"
        if arch == "starcoder2":
            _starcoder2(d, tokenizers[fam])
        else:
            build_model(d, arch, tokenizers[fam])
        if fam == "deepseek-coder":  # as DeepSeek-Coder's config: linear RoPE scaling, factor 4
            cfg = json.loads((d / "config.json").read_text())
            cfg["rope_parameters"] = {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e5}
            (d / "config.json").write_text(json.dumps(cfg))
        _decisive(d, arch)
        out[arch, fam] = d
    return out


# every architecture in F16 and Q8_0; two of the Q8_0 ones written as Ollama / Tabby folders
# (the same file, with the target's layout around it), one more family in Q8_0, and BF16 once
CASES = [(a, f, t, "gguf") for a, f in ARCHS[:4] for t in ("F16", "Q8_0")]
CASES[3] = (*CASES[3][:3], "ollama")  # starcoder2 Q8_0
CASES[7] = (*CASES[7][:3], "tabby")  # llama (CodeLlama) Q8_0
CASES += [("llama", "deepseek-coder", "Q8_0", "gguf"), ("qwen2", "qwen2.5-coder", "BF16", "gguf")]


@pytest.mark.parametrize("arch,family,ftype,to", CASES,
                         ids=[f"{a}-{f}-{t}-{to}" for a, f, t, to in CASES])
def test_gguf_round_trip(models, tmp_path, arch, family, ftype, to):
    r = export(models[arch, family], to, tmp_path / "out", ftype=ftype, echo=_quiet)
    assert r["gguf"] == {"gguf": f"out.{ftype}.gguf", "ollama": "model.gguf",
                         "tabby": "ggml/model-00001-of-00001.gguf"}[to]
    assert set(r["files"]) == {"README.md", r["gguf"], *{"gguf": [], "ollama": ["Modelfile"],
                                                         "tabby": ["tabby.json"]}[to]}
    check = r["check"]
    if ftype in ("F16", "BF16"):
        assert check["max_abs_logit_diff"] <= TOLERANCE["bfloat16"]
        if ftype == "F16":  # F16 rounding only, on these tiny models (BF16 keeps 8 bits)
            assert check["max_abs_logit_diff"] < 0.01
    else:
        assert check["top1_agreement"] >= 0.99
    assert check["positions"] > 300 and check["tokenizer"]["problems"] == []
    # transformers 5.x reads llama, qwen2 and starcoder2 files; GPT-BigCode (llama.cpp's
    # "starcoder") it refuses, and a llama with linear RoPE scaling it reads without the
    # scaling: both are read back tensor by tensor instead
    assert check["reader"] == ("gguf" if arch == "gpt_bigcode" or family == "deepseek-coder"
                               else "transformers")
    if arch == "gpt_bigcode":
        assert "starcoder" in check["transformers_refused"]
    if family == "deepseek-coder":
        assert "rope" in check["transformers_refused"]
    if check["reader"] == "gguf":
        assert all(v < 0.01 for v in check["max_abs_tensor_diff"].values())
    assert check["hparams_problems"] == []

    meta, tensors = read(tmp_path / "out" / r["gguf"])
    assert meta["general.architecture"] == G.ARCHS[arch].lower()
    assert meta["general.file_type"] == G.file_types()[ftype].value
    assert _qtype_id(ftype) in {t.ggml_type for t in tensors if len(t.shape) == 2}
    tokens = meta["tokenizer.ggml.tokens"]
    fmt = FIM_FORMATS[family]
    for field, key in FIM_KEYS.items():  # each FIM key names the registry's sentinel
        want = getattr(fmt, field)
        if want is not None:
            assert tokens[meta[key]] == want, key
    assert tokens[meta["tokenizer.ggml.eos_token_id"]] == fmt.eos
    assert meta["tokenizer.ggml.model"] == ("llama" if fmt.sentencepiece_spacing else "gpt2")
    assert meta["general.sampling.temp"] == pytest.approx(0.2)
    if family == "deepseek-coder":
        assert meta["llama.rope.scaling.type"] == "linear"
        assert meta["llama.rope.scaling.factor"] == 4.0 and meta["llama.rope.freq_base"] == 1e5
    assert outputs.kind_of(tmp_path / "out") == "export"
    assert "## Checked after writing" in (tmp_path / "out" / "README.md").read_text()


def _qtype_id(ftype: str) -> int:
    import gguf

    return int(getattr(gguf.GGMLQuantizationType, ftype))


def test_a_wrong_rotary_layout_is_caught(models, tmp_path, monkeypatch):
    """Without llama's q/k permutation the file loads but computes something else: the check
    refuses it and leaves no folder behind."""
    monkeypatch.setattr(G, "_permute", lambda x, heads: x)
    with pytest.raises(CodetuneError, match="does not match the model"):
        export(models["llama", "codellama"], "gguf", tmp_path / "bad", echo=_quiet)
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if outputs.is_partial(p.name)]


def test_sentencepiece_scores_tokenize_like_llama_cpp(tokenizers):
    """llama.cpp's SentencePiece tokenizer (llm_tokenizer_spm) joins the adjacent pair whose
    joined token scores highest, leftmost first, then falls back to <0xNN> bytes: with the
    scores written, that gives the tokenizer's own ids."""
    from transformers import AutoTokenizer

    from codetune.export import vocab

    tok = AutoTokenizer.from_pretrained(str(tokenizers["codellama"]))
    meta = vocab.metadata(tok, detect_fim(tok), len(tok))
    tokens, scores = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.scores"]
    index = {t: i for i, t in enumerate(tokens)}

    def spm(text):
        syms = list(("▁" + text).replace(" ", "▁"))  # add_space_prefix, escaped whitespace
        while True:
            pairs = [(scores[index[a + b]], -i)
                     for i, (a, b) in enumerate(zip(syms, syms[1:], strict=False))
                     if a + b in index]
            if not pairs:
                break
            i = -max(pairs)[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        return [j for s in syms for j in ([index[s]] if s in index else
                                         [index[f"<0x{b:02X}>"] for b in s.encode()])]

    for text in [*CORPUS, *SNIPPETS, "x = 'héllo wörld' # ✓\n\tpass"]:
        assert spm(text) == tok.encode(text, add_special_tokens=False), text[:30]


@pytest.mark.parametrize("family", list(FIM_FORMATS))
def test_modelfile_tabby_and_client_prompt_per_family(tokenizers, family, tmp_path):
    from transformers import AutoTokenizer

    from codetune.export import tabby, vllm
    from codetune.infer.generate import GenParams

    tok = AutoTokenizer.from_pretrained(str(tokenizers[family]))
    fim = detect_fim(tok, family)
    fmt = fim.format
    # the llama.cpp spelling: for a SentencePiece family "▁" is a space, the first one left
    # to the tokenizer; elsewhere the vocabulary's ("▁" in DeepSeek's tokens is a character)
    def spell(t):
        return t.replace("▁", " ") if fmt.sentencepiece_spacing else t

    p, s, m = (spell(t) for t in fmt.sentinels)
    p = p.lstrip() + (" " if fmt.sentencepiece_spacing else "")

    text = modelfile(fim, 2048)
    template = next(line for line in text.splitlines() if line.startswith("TEMPLATE"))
    assert template == (f'TEMPLATE """{{{{- if .Suffix }}}}{p}{{{{ .Prompt }}}}{s}'
                        f'{{{{ .Suffix }}}}{m}{{{{- else }}}}{{{{ .Prompt }}}}{{{{- end }}}}"""')
    assert text.startswith("FROM ./model.gguf\n")
    stops = [line.split(" ", 2)[2] for line in text.splitlines()
             if line.startswith("PARAMETER stop ")]
    want = {spell(t).strip() for t in fim.stop_strings}
    assert {json.loads(x) for x in stops} == want
    assert want >= {spell(t).strip() for t in (*fmt.sentinels, fmt.eos)}
    d = GenParams()
    assert f"PARAMETER temperature {d.temperature}" in text
    assert f"PARAMETER top_p {d.top_p}" in text

    tabby.write(tmp_path, fim, "m")
    spec = json.loads((tmp_path / "tabby.json").read_text(encoding="utf-8"))
    assert spec == {"prompt_template": f"{p}{{prefix}}{s}{{suffix}}{m}"}
    assert spec["prompt_template"] == llama_cpp_template(fmt, "{prefix}", "{suffix}")

    # the vLLM client's prompt (HF spelling) encodes exactly like the training prompt
    prefix, suffix = "def total(items):\n    t = 0\n", "\n    return t\n"
    ids = tok.encode(hf_template(fmt, prefix, suffix), add_special_tokens=True)
    assert ids == build_prompt(tok, fim, prefix, suffix)
    script = vllm.client_script(fim, "m")
    compile(script, "client.py", "exec")
    assert repr(fmt.prefix)[1:-1] in script and str(list(fim.stop_ids)) in script
    assert stop_texts(fim) == [json.loads(x) for x in stops]


def _run_tokenizer(run):
    from codetune.model.load import load_tokenizer

    return load_tokenizer(str(run))


def test_ollama_folder_from_a_run(tiny_run, tmp_path):
    run = tiny_run["run"]
    o = export(run, "ollama", tmp_path / "ollama", ftype="Q8_0", name="mine", echo=_quiet)
    assert set(o["files"]) == {"Modelfile", "README.md", "model.gguf"}
    assert o["check"]["top1_agreement"] >= 0.99 and "held-out files" in o["check"]["texts"]
    assert o["merge"]["dtype"] == "bfloat16"
    readme = (tmp_path / "ollama" / "README.md").read_text()
    record = json.loads((run / "run.json").read_text())
    for fact in (str(run), record["dataset"]["content_hash"], "ollama create mine -f Modelfile",
                 "provider: ollama", "autocomplete", "llama-vscode.endpoint"):
        assert fact in readme, fact
    modelfile_text = (tmp_path / "ollama" / "Modelfile").read_text()
    assert modelfile_text == modelfile(detect_fim(_run_tokenizer(run)), 512)


def test_vllm_commands(tiny_run, tmp_path):
    from codetune.export.vllm import MAX_LORA_RANKS, lora_rank

    r = export(tiny_run["run"], "vllm", tmp_path / "v", name="mine", echo=_quiet)
    base = str(tiny_run["base"])
    assert r["command"] == (f"vllm serve {base} --enable-lora --lora-modules "
                            f"mine={tiny_run['run']} --max-lora-rank 8")
    assert set(r["files"]) == {"README.md", "client.py"}
    readme = (tmp_path / "v" / "README.md").read_text()
    assert r["command"] in readme and "--upstream http://127.0.0.1:8000" in readme
    assert [lora_rank(r) for r in (1, 2, 8, 9, 33, 300, 512)] == [1, 8, 8, 16, 64, 320, 512]
    assert MAX_LORA_RANKS[-1] == 512
    with pytest.raises(CodetuneError, match="merged model"):
        lora_rank(513)
    m = export(MINI_PATH(), "vllm", tmp_path / "m", name="mini", echo=_quiet)
    assert m["command"] == f"vllm serve {MINI_PATH()} --served-model-name mini"


def MINI_PATH() -> Path:
    from codetune.mini import MINI_PATH as path

    return Path(path).resolve()


def test_output_folder_rules(tiny_run, tmp_path):
    run = tiny_run["run"]
    other = tmp_path / "taken"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CodetuneError, match="not a codetune export"):
        export(run, "vllm", other, overwrite=True, echo=_quiet)
    assert (other / "notes.txt").read_text() == "mine"
    export(run, "vllm", tmp_path / "e", echo=_quiet)
    with pytest.raises(CodetuneError, match="--overwrite"):
        export(run, "vllm", tmp_path / "e", echo=_quiet)
    again = export(run, "vllm", tmp_path / "e", overwrite=True, name="two", echo=_quiet)
    assert again["name"] == "two" and outputs.kind_of(tmp_path / "e") == "export"


def test_bad_inputs_are_one_line_errors(tiny_run, tmp_path, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(
        str(gpt2))
    with pytest.raises(CodetuneError, match=r"'gpt2' model to GGUF; supported architectures: "
                                            r"Qwen2.*StarCoder2.*GPT-BigCode.*Llama"):
        export(gpt2, "gguf", tmp_path / "o", echo=_quiet)
    with pytest.raises(CodetuneError, match="neither a codetune run folder"):
        export(tmp_path / "nothing", "gguf", tmp_path / "o", echo=_quiet)
    # an adapter that cannot be merged: its weights are damaged
    broken = tmp_path / "broken_run"
    broken.mkdir()
    for f in tiny_run["run"].iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CodetuneError, match="cannot be merged"):
        export(broken, "gguf", tmp_path / "o", echo=_quiet)
    # a K-quant without llama.cpp: says what is missing and how to get it, before any work
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    with pytest.raises(CodetuneError, match=r"needs llama.cpp's `llama-quantize`.*"
                                            r"`bash scripts/llama-cpp.sh`.*git clone "
                                            r"https://github.com/ggml-org/llama.cpp"):
        export(tiny_run["run"], "gguf", tmp_path / "o", ftype="Q4_K_M", echo=_quiet)
    with pytest.raises(CodetuneError, match="unknown --type"):
        export(tiny_run["run"], "gguf", tmp_path / "o", ftype="Q3_X", echo=_quiet)
    assert not (tmp_path / "o").exists()


def test_a_tokenizer_longer_than_the_embeddings_is_refused(models, tmp_path):
    """Tokens added to the tokenizer without resizing the model have no embedding row, so
    llama.cpp would refuse the file: the error says so and how to fix it; nothing is written."""
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "model"
    shutil.copytree(models["qwen2", "qwen2.5-coder"], model)
    tok = AutoTokenizer.from_pretrained(str(model))
    tok.add_special_tokens({"additional_special_tokens": ["<|extra_0|>", "<|extra_1|>"]})
    tok.save_pretrained(str(model))
    with pytest.raises(CodetuneError, match=r"embedding rows .*resize"):
        export(model, "gguf", tmp_path / "out", echo=_quiet)
    assert not (tmp_path / "out").exists()


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_llama_cpp_tools_are_used_when_installed(models, tmp_path, monkeypatch):
    """A stand-in convert_hf_to_gguf.py in $LLAMA_CPP_DIR writing a file without FIM keys (as
    llama.cpp does for most families) and a stand-in llama-quantize on PATH: codetune runs both
    with their real command lines, adds the FIM keys, and still checks the result."""
    from transformers import AutoTokenizer

    model = models["qwen2", "qwen2.5-coder"]
    prebuilt = tmp_path / "prebuilt.gguf"  # what the stand-in "converts" to: no FIM keys
    G.write(model, prebuilt, "F16", tokenizer=AutoTokenizer.from_pretrained(str(model)),
            fim=None, name="x")
    cpp = tmp_path / "llama.cpp"
    (cpp / "build" / "bin").mkdir(parents=True)
    log = tmp_path / "calls.txt"
    _script(cpp / "convert_hf_to_gguf.py", f"""import shutil, sys
open({str(log)!r}, "a").write(" ".join(["convert"] + sys.argv[1:]) + "\\n")
shutil.copy({str(prebuilt)!r}, sys.argv[sys.argv.index("--outfile") + 1])
""")
    _script(cpp / "build" / "bin" / "llama-quantize", f"""import shutil, sys
open({str(log)!r}, "a").write(" ".join(["quantize"] + sys.argv[1:]) + "\\n")
shutil.copy(sys.argv[1], sys.argv[2])
""")
    monkeypatch.setenv("LLAMA_CPP_DIR", str(cpp))
    r = export(model, "gguf", tmp_path / "q", ftype="Q4_K_M", echo=_quiet)
    assert r["converter"] == "llama.cpp" and r["quantized_by"] == "llama-quantize"
    assert "tokenizer.ggml.fim_pre_token_id" in r["added_keys"]
    calls = log.read_text().splitlines()
    assert calls[0].startswith(f"convert {model} --outfile ") and calls[0].endswith("--outtype f16")
    assert calls[1].startswith("quantize ") and calls[1].endswith(" Q4_K_M")
    tokens = read(tmp_path / "q" / r["gguf"])[0]
    assert tokens["tokenizer.ggml.tokens"][tokens["tokenizer.ggml.fim_mid_token_id"]] == \
        FIM_FORMATS["qwen2.5-coder"].middle
    assert r["check"]["top1_agreement"] == 1.0  # (the stand-in "quantizer" copied F16)


def test_codetune_mini_completes_from_its_exported_file(tmp_path):
    """transformers cannot load a GPT-BigCode GGUF: the model is rebuilt from the tensors read
    back from the file, and completes the same FIM prompt as the original."""
    import dataclasses

    from transformers import AutoModelForCausalLM

    from codetune import infer
    from codetune.export.verify import _substitute

    r = export(MINI_PATH(), "gguf", tmp_path / "mini", ftype="Q8_0", echo=_quiet)
    assert r["check"]["top1_agreement"] >= 0.99
    original = infer.load(str(MINI_PATH()), dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(str(MINI_PATH())).float().eval()
    _substitute(tmp_path / "mini" / r["gguf"], model, G.model_config(MINI_PATH()))
    rebuilt = dataclasses.replace(original, model=model)
    prefix = "def read_lines(path):\n    with open(path) as f:\n        "
    suffix = "\n    return lines\n"
    params = infer.GenParams(max_new_tokens=16, greedy=True)
    a = infer.complete(original, prefix, suffix, params)
    b = infer.complete(rebuilt, prefix, suffix, params)
    assert b.mode == "fim" and b.text == a.text and b.text.strip()
