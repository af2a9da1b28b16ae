"""Loading the base model, QLoRA/LoRA preparation, LoRA targets, sizes and FLOPs, recipes.

Tiny models are built locally (tests/tiny.py) and loaded with the real code path, 4-bit NF4 with
double quantization included: bitsandbytes runs it on the CPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from codetune import config
from codetune.errors import CodetuneError
from codetune.model import load as M
from codetune.model import source as S
from codetune.train import lora as L
from codetune.train import telemetry as metrics

from . import tiny

RECIPES = Path(__file__).resolve().parents[1] / "src" / "codetune" / "assets" / "recipes"


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    tok = tiny.build_tokenizer(base / "tok")
    return {arch: tiny.build_model(base / arch, arch, tok)
            for arch in ("gpt_bigcode", "llama", "qwen2")}


def run_cfg(path: Path, *overrides: str) -> config.RunConfig:
    return config.load(None, [f"model.name={path}", "model.dtype=float32", *overrides])


def qlora(path: Path, *overrides: str) -> config.RunConfig:
    return run_cfg(path, "model.quantization=4bit", "model.quant_type=nf4",
                   "model.double_quant=true", "lora.r=4", "lora.alpha=8", *overrides)


def plain(path: Path, *overrides: str) -> config.RunConfig:
    return run_cfg(path, "model.quantization=none", "lora.r=4", "lora.alpha=8", *overrides)


def trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def train_step(model, vocab: int, lr: float = 1e-2) -> float:
    import torch

    torch.manual_seed(0)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    ids = torch.randint(0, vocab, (2, 16))
    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    opt.step()
    return float(loss.detach())


# --------------------------------------------------------------------------- sources


def test_import_does_not_pull_torch():
    code = ("import sys, codetune.model; "
            "assert not {'torch', 'transformers', 'peft', 'bitsandbytes'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_resolve_folder_hashes_weight_contents(models, tmp_path):
    src = S.resolve_source(str(models["llama"]))
    assert (src.kind, src.path, src.gguf_file) == ("folder", str(models["llama"].resolve()), None)
    weights = models["llama"] / "model.safetensors"
    line = b"model.safetensors\0" + hashlib.sha256(weights.read_bytes()).hexdigest().encode()
    assert src.identity == "sha256:" + hashlib.sha256(line + b"\n").hexdigest()
    assert src.record()["identity"] == src.identity
    assert S.resolve_source(str(models["llama"]), hash_weights=False).identity is None
    # same contents elsewhere: same identity; one byte changed: another
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in models["llama"].iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert S.resolve_source(str(copy)).identity == src.identity
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert S.resolve_source(str(copy)).identity != src.identity


def test_resolve_hub_id_and_bad_paths(tmp_path):
    src = S.resolve_source("bigcode/starcoderbase-1b", "v1.0")
    assert (src.kind, src.path, src.revision) == ("hub", "bigcode/starcoderbase-1b", "v1.0")
    assert src.identity == "hub:bigcode/starcoderbase-1b@v1.0"
    assert src.load_kwargs() == {"revision": "v1.0"}
    assert S.resolve_source("bigcode/starcoderbase-1b").identity.endswith("@main")
    with pytest.raises(CodetuneError, match="does not exist; check the path"):
        S.resolve_source(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(CodetuneError, match="does not exist"):
        S.resolve_source("missing.gguf")
    with pytest.raises(CodetuneError, match="neither an existing local path nor a valid Hub id"):
        S.resolve_source("not a model!")
    with pytest.raises(CodetuneError, match="no base model given"):
        S.resolve_source(None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CodetuneError, match="no config.json"):
        S.resolve_source(str(tmp_path / "empty"))
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(CodetuneError, match="LoRA adapter, not a base model"):
        S.resolve_source(str(tmp_path / "adapter"))
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text("{}")
    with pytest.raises(CodetuneError, match="no weight files"):
        S.resolve_source(str(tmp_path / "noweights"))


def test_resolve_gguf(tmp_path):
    f = tmp_path / "tiny.Q4_K_M.gguf"
    f.write_bytes(b"GGUF" + bytes(range(256)) * 50)
    if importlib.util.find_spec("gguf") is None:
        with pytest.raises(CodetuneError, match="pip install gguf"):
            S.resolve_source(str(f))
        return
    src = S.resolve_source(str(f))
    assert (src.kind, src.path, src.gguf_file) == ("gguf", str(tmp_path.resolve()), f.name)
    assert src.identity == "sha256:" + hashlib.sha256(f.read_bytes()).hexdigest()
    assert src.load_kwargs() == {"gguf_file": f.name}


def test_gguf_loads_dequantized_and_in_4bit(models, tmp_path):
    """A .gguf file written like llama.cpp's converter: same tokens and logits as the folder it
    came from; savable (the GGUF marker is dropped); and loadable in 4-bit via a dequantized
    temporary copy (transformers will not quantize while reading GGUF)."""
    pytest.importorskip("gguf")
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    f = tiny.build_llama_gguf(models["llama"], tmp_path / "tiny-llama.gguf")
    cfg = plain(f)
    tok = M.load_tokenizer(cfg.model)
    text = "def add(a, b):\n    return a + b\n"
    assert tok(text).input_ids == AutoTokenizer.from_pretrained(models["llama"])(text).input_ids
    model = M.load_model(cfg, tok)
    ref = AutoModelForCausalLM.from_pretrained(models["llama"])
    ids = torch.tensor([tok(text).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits)
    model.save_pretrained(tmp_path / "saved")
    q = M.load_model(qlora(f))
    assert isinstance(q.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    q = L.prepare_for_training(q, qlora(f))
    assert torch.isfinite(torch.tensor(train_step(q, len(tok))))


def test_missing_hub_model_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config.load(None, ["model.name=codetune-test/no-such-model"])
    for load in (lambda: M.load_tokenizer(cfg.model), lambda: M.load_model(cfg)):
        with pytest.raises(CodetuneError) as info:
            load()
        msg = str(info.value)
        assert "codetune-test/no-such-model" in msg and "HF_HUB_OFFLINE" in msg
        for hint in ("spelling of the Hub id", "network", "hf auth login", "local model folder"):
            assert hint in msg
        assert info.value.__suppress_context__  # printed without the library's traceback


def test_gated_and_unknown_repo_messages(monkeypatch):
    from types import SimpleNamespace

    import transformers
    from huggingface_hub import errors as hf

    def http(cls, status):
        return cls(f"{status}", response=SimpleNamespace(status_code=status, headers={},
                                                         request=None))

    def failing(exc):
        def from_pretrained(*args, **kw):
            raise OSError("wrapped by transformers") from exc
        return from_pretrained

    cfg = config.load(None, ["model.name=bigcode/starcoderbase-1b"])
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        failing(http(hf.GatedRepoError, 401)))
    with pytest.raises(CodetuneError, match=r"gated or private.*hf auth login.*accept the "
                                            r"licence on https://huggingface.co/bigcode/"):
        M.load_tokenizer(cfg.model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        failing(http(hf.HfHubHTTPError, 403)))
    with pytest.raises(CodetuneError, match=r"HTTP 403.*hf auth login"):
        M.load_tokenizer(cfg.model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        failing(http(hf.RepositoryNotFoundError, 401)))
    with pytest.raises(CodetuneError, match=r"was not found on the Hugging Face Hub.*hf auth"):
        M.load_tokenizer(cfg.model)


# --------------------------------------------------------------------------- loading


def test_attention_choice():
    import torch
    from transformers import GPTBigCodeForCausalLM

    class NoSdpa:
        _supports_sdpa = False

    f32 = torch.float32
    assert M.resolve_attn_implementation("auto", GPTBigCodeForCausalLM, f32, cuda=False) == "sdpa"
    assert M.resolve_attn_implementation("auto", NoSdpa, f32, cuda=False) == "eager"
    assert M.resolve_attn_implementation("auto", None, f32, cuda=False) is None
    assert M.resolve_attn_implementation("eager", GPTBigCodeForCausalLM, f32) == "eager"
    with pytest.raises(CodetuneError, match="needs a CUDA GPU"):
        M.resolve_attn_implementation("flash_attention_2", GPTBigCodeForCausalLM, f32, cuda=False)
    if importlib.util.find_spec("flash_attn") is None:
        with pytest.raises(CodetuneError, match="pip install flash-attn"):
            M.resolve_attn_implementation("flash_attention_2", GPTBigCodeForCausalLM,
                                          torch.bfloat16, cuda=True)
        assert M.resolve_attn_implementation("auto", GPTBigCodeForCausalLM, torch.bfloat16,
                                             cuda=True) == "sdpa"
    with pytest.raises(CodetuneError, match="does not support sdpa"):
        M.resolve_attn_implementation("sdpa", NoSdpa, f32)


def test_dtype_and_device_defaults(monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU defaults")
    assert M.compute_dtype(config.load().model) == torch.float32
    assert M.compute_dtype(config.load(None, ["model.dtype=bfloat16"]).model) == torch.bfloat16
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert M.default_device_map() == {"": "cpu"}


def test_flash_attention_on_cpu_is_a_clear_error(models):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    cfg = qlora(models["llama"], "model.attn_implementation=flash_attention_2")
    with pytest.raises(CodetuneError, match="flash_attention_2 needs a CUDA GPU"):
        M.load_model(cfg)


def test_4bit_nf4_double_quant_loads_as_linear4bit(models):
    import bitsandbytes as bnb

    model = M.load_model(qlora(models["gpt_bigcode"]))
    attn = model.transformer.h[0].attn
    assert isinstance(attn.c_attn, bnb.nn.Linear4bit)
    assert attn.c_attn.weight.quant_type == "nf4"
    assert attn.c_attn.weight.quant_state.nested  # double quantization
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)  # the head stays unquantized
    assert model.config._attn_implementation == "sdpa"


def test_load_model_grows_embeddings_for_added_tokens(models):
    tok = M.load_tokenizer(config.load(None, [f"model.name={models['llama']}"]).model)
    n = len(tok)
    tok.add_special_tokens({"additional_special_tokens": ["<x_a>", "<x_b>"]})
    model = M.load_model(plain(models["llama"]), tok)
    assert model.get_input_embeddings().weight.shape[0] == n + 2
    assert model.get_output_embeddings().weight.shape[0] == n + 2


# --------------------------------------------------------------------------- LoRA targets


def _tiny_in_memory(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type, vocab_size=64, hidden_size=32, n_embd=32,
                               intermediate_size=64, num_hidden_layers=1, n_layer=1,
                               num_attention_heads=4, n_head=4, num_key_value_heads=2,
                               bos_token_id=0, eos_token_id=0)
    return AutoModelForCausalLM.from_config(cfg)


def test_lora_target_table(models, caplog):
    from transformers import AutoModelForCausalLM

    llama_like = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for arch in ("llama", "qwen2"):
        m = AutoModelForCausalLM.from_pretrained(models[arch])
        assert L.lora_targets(m, "auto") == llama_like
        assert L.lora_targets(m, "all-linear") == "all-linear"
        assert L.lora_targets(m, " q_proj, v_proj ") == ["q_proj", "v_proj"]
        with pytest.raises(CodetuneError, match=r"c_attn, which match no linear layer.*q_proj"):
            L.lora_targets(m, "q_proj,c_attn")
    big = AutoModelForCausalLM.from_pretrained(models["gpt_bigcode"])
    with caplog.at_level(logging.WARNING, logger="codetune.model"):
        assert L.lora_targets(big, "auto") == ["c_proj", "c_attn", "c_fc"]
        assert "q_attn" not in caplog.text  # auto: the table's variants, no warning each run
        assert L.lora_targets(big, "c_proj,c_attn,q_attn,c_fc") == ["c_proj", "c_attn", "c_fc"]
    assert "q_attn" in caplog.text  # asked for by name: dropped with a warning
    with pytest.raises(CodetuneError, match="q_proj, which match no linear layer.*c_attn"):
        L.lora_targets(big, "c_attn,q_proj")
    assert L.lora_targets(_tiny_in_memory("starcoder2"), "auto") == [
        "q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]
    with pytest.raises(CodetuneError, match=r"no LoRA target table for model type 'gpt2'.*"
                                            r"all-linear.*c_attn"):
        L.lora_targets(_tiny_in_memory("gpt2"), "auto")


# --------------------------------------------------------------------------- training


def test_qlora_gpt_bigcode_trains_only_lora(models):
    import bitsandbytes as bnb
    import torch

    model = M.load_model(qlora(models["gpt_bigcode"]))
    vocab = model.config.vocab_size
    model = L.prepare_for_training(model, qlora(models["gpt_bigcode"]))
    names = trainable_names(model)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"c_attn", "c_proj", "c_fc"}
    assert model.base_model.model.is_activation_checkpointing
    assert model.config.use_cache is False
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_B." in n}
    loss = train_step(model, vocab)
    assert torch.isfinite(torch.tensor(loss))
    assert isinstance(model.base_model.model.transformer.h[0].mlp.c_fc.base_layer,
                      bnb.nn.Linear4bit)
    params = dict(model.named_parameters())
    assert all(not torch.equal(params[n], v) for n, v in lora_b.items())
    assert all(torch.equal(params[n], v) for n, v in base.items())


def test_lora_llama_float32_trains(models):
    import torch

    cfg = plain(models["llama"])
    model = M.load_model(cfg)
    assert model.dtype == torch.float32 and not getattr(model, "is_loaded_in_4bit", False)
    model = L.prepare_for_training(model, cfg)
    names = trainable_names(model)
    assert len(names) == 2 * 7 * 2  # 2 layers x 7 projections x (A, B)
    assert all(".lora_" in n for n in names)
    loss = train_step(model, model.config.vocab_size)
    assert torch.isfinite(torch.tensor(loss))
    for p in (p for n, p in model.named_parameters() if ".lora_B." in n):
        assert p.abs().sum() > 0  # B starts at zero; one step moved every one


def test_8bit_lora_trains_on_cpu_too(models):
    """bitsandbytes >= 0.46 runs int8 on the CPU, so 8-bit needs no CUDA-only error."""
    import bitsandbytes as bnb
    import torch

    cfg = run_cfg(models["llama"], "model.quantization=8bit", "lora.r=4")
    model = M.load_model(cfg)
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear8bitLt)
    model = L.prepare_for_training(model, cfg)
    assert torch.isfinite(torch.tensor(train_step(model, model.config.vocab_size)))


def test_full_finetune_trains_everything(models):
    cfg = plain(models["llama"], "model.finetune=full")
    model = L.prepare_for_training(M.load_model(cfg), cfg)
    assert all(p.requires_grad for p in model.parameters())
    assert not hasattr(model, "peft_config")


@pytest.mark.parametrize("arch, quantized", [("gpt_bigcode", True), ("llama", False)])
def test_new_token_rows_train_and_nothing_else_in_the_embeddings(models, arch, quantized):
    import torch
    from peft import get_peft_model_state_dict

    cfg = (qlora if quantized else plain)(models[arch])
    model = M.load_model(cfg)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(old + 2)
    new_ids = [old, old + 1]
    model = L.prepare_for_training(model, cfg, new_ids)
    extra = [n for n in trainable_names(model) if ".lora_" not in n]
    assert extra and all("trainable_tokens_delta" in n for n in extra)
    assert sum(p.numel() for n, p in model.named_parameters() if n in extra) == (
        2 * 64 * (1 if arch == "gpt_bigcode" else 2))  # tied head shares the rows; untied: own

    def effective():
        with torch.no_grad():
            emb = model.get_input_embeddings()(torch.arange(old + 2)).clone()
            head = model.get_output_embeddings()(torch.eye(64)).T.clone()  # (vocab, hidden)
        return emb, head

    emb0, head0 = effective()
    ids = torch.tensor([[1, 2, old, 3, old + 1, 4, 5, 6]])
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    opt.step()
    emb1, head1 = effective()
    for before, after in ((emb0, emb1), (head0, head1)):
        changed = (before != after).any(dim=1).nonzero().flatten().tolist()
        assert changed == new_ids
    saved = get_peft_model_state_dict(model, save_embedding_layers=False)
    assert any("trainable_tokens_delta" in k for k in saved)


def test_new_token_ids_must_exist(models):
    cfg = plain(models["llama"])
    model = M.load_model(cfg)
    rows = model.get_input_embeddings().weight.shape[0]
    with pytest.raises(ValueError, match="resize_token_embeddings"):
        L.prepare_for_training(model, cfg, [rows])


# --------------------------------------------------------------------------- sizes and FLOPs


def test_count_params_by_hand(models):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(models["llama"])
    V, d, f, L, kv = m.config.vocab_size, 64, 2 * 64 + 32, 2, 2 * 16
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * f  # q, k, v, o, gate/up/down
    n = L * per_layer + d * V  # + the LM head; the input embedding is not a matmul
    total = n + V * d + L * 2 * d + d  # + embedding, 2 RMSNorms per layer, final norm
    assert metrics.count_params(m) == {"total": total, "trainable": total,
                                 "matmul_non_embedding": n, "matmul_adapter": 0}


def test_count_params_4bit_matches_logical_shapes(models):
    from transformers import AutoModelForCausalLM

    full = metrics.count_params(AutoModelForCausalLM.from_pretrained(models["gpt_bigcode"]))
    d, V, L, kv = 64, M.load_model(plain(models["gpt_bigcode"])).config.vocab_size, 2, 16
    # c_attn (multi-query: q + one k + one v), c_proj, c_fc (4d), mlp c_proj; + the tied head
    assert full["matmul_non_embedding"] == L * (d * (d + 2 * kv) + d * d + 2 * d * 4 * d) + d * V
    q = metrics.count_params(M.load_model(qlora(models["gpt_bigcode"])))
    assert q["matmul_non_embedding"] == full["matmul_non_embedding"]
    assert q["total"] == full["total"]


def test_seed_shapes_give_the_seeds_parameter_counts():
    """starcoderbase-1b's architecture (no weights: meta device) with the reference notebook's LoRA: the
    notebook printed 5,554,176 trainable of 1,142,761,472."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GPTBigCodeConfig

    cfg = GPTBigCodeConfig(vocab_size=49152, n_positions=8192, n_embd=2048, n_layer=24,
                           n_head=16, n_inner=8192, multi_query=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
        targets = L.lora_targets(model, "c_proj,c_attn,q_attn,c_fc")
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    counts = metrics.count_params(model)
    assert (counts["trainable"], counts["total"]) == (5_554_176, 1_142_761_472)
    n = counts["matmul_non_embedding"]
    assert n == 24 * (2048 * 2304 + 2048 * 2048 + 2 * 2048 * 8192) + 2048 * 49152
    flops = metrics.flops_per_token(cfg, counts, 2048)
    attention = 12 * 24 * 2048 * 2048
    assert flops["6N"] == 6 * n
    assert flops["4N+attention"] == 4 * n + 6 * counts["matmul_adapter"] + attention
    # the reference notebook's run: 4,261 tokens/s on an A100 (312 TFLOP/s bf16): "about 7-8 % of peak"
    mfu = {k: 4261 * v / 312e12 for k, v in flops.items()}
    assert 0.09 < mfu["6N"] < 0.095 and 0.075 < mfu["4N+attention"] < 0.08


def test_flops_per_token_reads_configs_and_dicts(models):
    from transformers import AutoConfig

    llama = AutoConfig.from_pretrained(models["llama"])
    got = metrics.flops_per_token(llama, 1000, 128)
    assert got == {"6N": 6000.0, "4N+attention": 4000.0 + 12 * 2 * 4 * 16 * 128}
    as_dict = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64}
    assert metrics.flops_per_token(as_dict, 1000, 128) == got
    assert metrics.flops_per_token(as_dict, {"matmul_non_embedding": 1000, "matmul_adapter": 10},
                             128)["4N+attention"] == got["4N+attention"] + 60


# --------------------------------------------------------------------------- recipes


def test_every_recipe_loads():
    files = sorted(RECIPES.glob("*.yaml"))
    assert {f.name for f in files} >= {
        "starcoderbase-1b-qlora.yaml", "starcoder2-3b-qlora.yaml",
        "qwen2.5-coder-1.5b-qlora.yaml", "deepseek-coder-1.3b-qlora.yaml",
        "codellama-7b-qlora.yaml"}
    formats = {}
    for f in files:
        cfg = config.load(f)
        assert cfg.model.name and cfg.model.quantization == "4bit"
        formats[f.name] = cfg.fim.format
    assert formats["codellama-7b-qlora.yaml"] == "codellama"
    assert formats["qwen2.5-coder-1.5b-qlora.yaml"] == "qwen2.5-coder"
    assert formats["deepseek-coder-1.3b-qlora.yaml"] == "deepseek-coder"
    assert formats["starcoder2-3b-qlora.yaml"] == "starcoder"


def test_seed_recipe_is_the_seed():
    c = config.load(RECIPES / "starcoderbase-1b-qlora.yaml")
    m, lo, t, d, f = c.model, c.lora, c.train, c.data, c.fim
    assert m.name == "bigcode/starcoderbase-1b" and m.revision is None
    assert (m.quantization, m.quant_type, m.double_quant, m.dtype) == ("4bit", "nf4", True,
                                                                       "bfloat16")
    assert m.finetune == "lora"
    assert (lo.r, lo.alpha, lo.dropout, lo.bias) == (8, 32, 0.0, "none")
    assert lo.target_modules == "c_proj,c_attn,q_attn,c_fc"
    assert d.seq_length == 2048 and d.shuffle_buffer == 5000
    assert (t.batch_size, t.grad_accum, t.max_steps) == (16, 1, 2000)
    assert (t.learning_rate, t.lr_scheduler, t.warmup_steps) == (5e-4, "cosine", 30)
    assert t.weight_decay == 0.01 and t.max_grad_norm == 1.0
    assert (t.eval_steps, t.save_steps, t.logging_steps) == (100, 100, 25)
    assert t.gradient_checkpointing is True and t.seed == 0
    assert (f.rate, f.spm_rate, f.level, f.split, f.truncate_or_pad) == (
        0.5, 0.5, "document", "token", False)
    text = (RECIPES / "starcoderbase-1b-qlora.yaml").read_text()
    for fact in ("2000 steps", "4 h 16 min", "A100", "4,261 tokens/s", "7.46 -> 5.66"):
        assert fact in text
