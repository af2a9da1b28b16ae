"""`codetune train` on tiny models, on the CPU: QLoRA and LoRA, what changes, resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from codetune import config
from codetune.errors import CodetuneError
from codetune.train import checkpoints
from codetune.train.trainer import train

from .tiny import build_model, build_tokenizer


@pytest.fixture(scope="module")
def workdir(tiny_run, tmp_path_factory):
    """The tiny_run fixture's dataset, tokenizer and GPT-BigCode base, plus a Llama base."""
    root = tmp_path_factory.mktemp("train")
    return {"root": root, "ds": tiny_run["ds"], "tok": tiny_run["tok"],
            "gpt_bigcode": tiny_run["base"],
            "llama": build_model(root / "llama", "llama", tiny_run["tok"])}


def run_cfg(workdir, arch="gpt_bigcode", **over):
    items = {
        "model.name": str(workdir[arch]), "data.dataset": str(workdir["ds"]),
        "model.quantization": "none", "model.dtype": "float32",
        "data.seq_length": 64, "data.shuffle_buffer": 16, "data.max_eval_sequences": 4,
        "train.batch_size": 4, "train.max_steps": 4, "train.save_steps": 2,
        "train.eval_steps": 2, "train.logging_steps": 1, "train.warmup_steps": 0,
        "train.learning_rate": 2e-3, "train.report_to": "none",
    }
    items.update(over)
    return config.load(None, [f"{k}={v}" for k, v in items.items()])


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def _initial_adapter(cfg) -> dict[str, torch.Tensor]:
    """The LoRA weights before training, re-created with the run's seed."""
    from peft import get_peft_model_state_dict
    from transformers import set_seed

    from codetune.model import load as M
    from codetune.train import lora as L

    set_seed(cfg.train.seed)
    tok = M.load_tokenizer(cfg.model)
    m = L.prepare_for_training(M.load_model(cfg, tok), cfg, [])
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(m).items()}


@pytest.mark.slow
@pytest.mark.parametrize("arch, quant", [("gpt_bigcode", "4bit"), ("llama", "none")])
def test_lora_trains_only_adapters_and_run_folder_loads(workdir, tmp_path, arch, quant):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = run_cfg(workdir, arch, **{"model.quantization": quant})
    out = tmp_path / "run"
    result = train(cfg, out, progress=False)
    assert result.steps == 4 and result.train_loss is not None

    trained = _adapter(out)
    initial = _initial_adapter(cfg)
    assert set(trained) == set(initial) and trained
    for name, t in trained.items():
        assert not torch.allclose(t, initial[name].to(t.dtype)), f"{name} did not change"

    # The base weights in the trained model are exactly the base model's.
    base = AutoModelForCausalLM.from_pretrained(str(workdir[arch]))
    trained_model = result.model.get_base_model() if hasattr(result.model, "get_base_model") \
        else result.model
    if quant == "none":
        ref = dict(base.named_parameters())
        for name, p in trained_model.named_parameters():
            if "lora_" not in name:
                key = name.replace(".base_layer", "")
                assert torch.equal(p.detach().cpu(), ref[key].detach()), name

    # What the other stages rely on: the folder loads with plain peft, and changes outputs.
    for f in ("config.yaml", "run.json", "metrics.json", "loss_curve.png",
              "adapter_config.json", "tokenizer_config.json"):
        assert (out / f).is_file(), f
    loaded = PeftModel.from_pretrained(base, str(out))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        a = loaded(ids).logits
        with loaded.disable_adapter():
            b = loaded(ids).logits
    assert not torch.allclose(a, b)
    run = json.loads((out / "run.json").read_text())
    assert run["dataset"]["content_hash"].startswith("sha256:")
    assert run["base_model"] and run["fim_format"] == "starcoder"
    metrics = json.loads((out / "metrics.json").read_text())
    assert any("eval_ltr_loss" in r for r in metrics["log_history"])
    assert any("eval_fim_loss" in r for r in metrics["log_history"])
    assert (out / "checkpoints" / "checkpoint-4" / checkpoints.MARKER).is_file()


# A randomly initialised tiny base with frozen embeddings limits what LoRA alone can learn
# (5.9 -> 5.2 nats here); full fine-tuning of the same model shows the corpus is learnable.
@pytest.mark.parametrize("over, ratio", [
    ({"lora.target_modules": "all-linear", "lora.r": 16}, 0.92),
    ({"model.finetune": "full"}, 0.6),
])
@pytest.mark.slow
def test_loss_falls_on_a_repetitive_corpus(workdir, tmp_path, over, ratio):
    cfg = run_cfg(workdir, "llama", **{"train.max_steps": 30, "train.save_steps": 30,
                                       "train.eval_steps": 30, "train.learning_rate": 1e-2,
                                       "fim.rate": 0.0, **over})
    result = train(cfg, tmp_path / "run", progress=False)
    losses = [r["loss"] for r in result.log_history if "loss" in r]
    assert losses[-1] < ratio * losses[0], losses
    assert result.eval_losses["eval_ltr_loss"] < ratio * losses[0]


def _losses(run: Path) -> dict[int, float]:
    hist = json.loads((run / "metrics.json").read_text())["log_history"]
    return {r["step"]: r["loss"] for r in hist if "loss" in r}


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "codetune", "train", *args, "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            **kw)


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(workdir, tmp_path):
    over = {"train.max_steps": 24, "train.save_steps": 4, "train.eval_steps": 0}
    cfg = run_cfg(workdir, "gpt_bigcode", **over)
    config.dump(cfg, tmp_path / "cfg.yaml")
    whole = tmp_path / "whole"
    p = _cli(str(tmp_path / "cfg.yaml"), "-o", str(whole))
    assert p.wait(timeout=300) == 0, p.stdout.read()

    killed = tmp_path / "killed"
    p = _cli(str(tmp_path / "cfg.yaml"), "-o", str(killed))
    deadline = time.time() + 300
    while time.time() < deadline:
        if checkpoints.latest(killed / "checkpoints") is not None:
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = checkpoints.latest(killed / "checkpoints")
    assert first is not None and int(first.name.split("-")[1]) < 24, "run ended before the kill"
    # A later checkpoint truncated mid-write must be skipped, not resumed from.
    step = int(first.name.split("-")[1])
    fake = killed / "checkpoints" / f"checkpoint-{step + 4}"
    if not fake.exists():
        import shutil

        shutil.copytree(first, fake)
        with open(fake / "adapter_model.safetensors", "r+b") as fh:
            fh.truncate(100)
    p = _cli("-o", str(killed), "--resume")
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out
    assert "skipping" in out or step + 4 >= 24

    a, b = _losses(whole), _losses(killed)
    assert set(a) == set(b) == set(range(1, 25))
    for s in a:
        assert abs(a[s] - b[s]) < 1e-5, (s, a[s], b[s])
    wa, wb = _adapter(whole), _adapter(killed)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_resume_refuses_a_different_setup(workdir, tmp_path):
    cfg = run_cfg(workdir, "llama", **{"train.max_steps": 2})
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    other = run_cfg(workdir, "llama", **{"train.max_steps": 4, "lora.r": 4})
    with pytest.raises(CodetuneError, match="LoRA shape"):
        train(other, out, resume=True, progress=False)
    with pytest.raises(CodetuneError, match="--resume"):
        train(cfg, out, progress=False)


def test_user_errors(workdir, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(CodetuneError, match="not a prepared dataset"):
        train(run_cfg(workdir, **{"data.dataset": str(tmp_path / "plain")}), tmp_path / "r",
              progress=False)
    with pytest.raises(CodetuneError, match="longer than the model's 512 positions"):
        train(run_cfg(workdir, **{"data.seq_length": 4096}), tmp_path / "r", progress=False)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep")
    with pytest.raises(CodetuneError, match="not a codetune run folder"):
        train(run_cfg(workdir), tmp_path / "precious", overwrite=True, progress=False)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_two_process_data_parallel_on_cpu(workdir, tmp_path):
    cfg = run_cfg(workdir, "llama", **{"train.max_steps": 3, "train.save_steps": 3,
                                       "train.eval_steps": 3, "data.max_eval_sequences": 6})
    config.dump(cfg, tmp_path / "cfg.yaml")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29533", "-m", "codetune", "train",
                        str(tmp_path / "cfg.yaml"), "-o", str(out), "-q"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ckpt = out / "checkpoints" / "checkpoint-3"
    states = [json.loads((ckpt / f"stream_rank{i}.json").read_text()) for i in range(2)]
    readers = [json.dumps(s) for s in states]
    assert '"reader": 0' in readers[0] and '"reader": 1' in readers[1]
    assert all('"readers": 2' in s for s in readers)
    # evaluation with the held-out sequences shared between the ranks finished, in step
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    assert any("eval_ltr_loss" in r for r in history)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(workdir["llama"])),
                              str(out))


def test_added_fim_tokens_are_trained_and_saved(workdir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain_tok = build_tokenizer(tmp_path / "plain_tok", specials=["<|endoftext|>"])
    base = build_model(tmp_path / "plain_model", "llama", plain_tok)
    cfg = run_cfg(workdir, "llama", **{"model.name": str(base), "fim.add_tokens": "true",
                                       "fim.rate": 0.9, "train.max_steps": 2,
                                       "train.report_to": "tensorboard"})
    with pytest.raises(CodetuneError, match="fim.add_tokens"):
        train(run_cfg(workdir, "llama", **{"model.name": str(base)}), tmp_path / "no",
              progress=False)
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    tok = AutoTokenizer.from_pretrained(str(out))
    added = [tok.convert_tokens_to_ids(t) for t in ("<fim_prefix>", "<fim_middle>",
                                                     "<fim_suffix>")]
    assert all(i >= 365 for i in added)  # appended after the original vocabulary
    weights = _adapter(out)
    rows = {k: v for k, v in weights.items() if "trainable_tokens" in k}
    assert rows, list(weights)[:5]
    # the added rows, not the whole resized matrices (peft's "auto" would save both in full)
    new = list(range(365, len(tok)))  # the FIM tokens and <fim_pad>
    assert all(v.shape[0] == len(new) for v in rows.values()), {k: v.shape for k, v in
                                                                rows.items()}
    assert not [k for k, v in weights.items() if v.shape[0] == len(tok)]
    model = AutoModelForCausalLM.from_pretrained(str(base))
    model.resize_token_embeddings(len(tok))
    init = model.get_input_embeddings().weight[new].detach().clone()
    tuned = PeftModel.from_pretrained(model, str(out))
    emb = tuned.get_input_embeddings()(torch.tensor(new)).detach()
    assert not torch.allclose(emb, init)  # the trained rows came back from the adapter
    trained = next(v for k, v in rows.items() if "embed" in k)
    assert torch.allclose(emb, trained.to(emb.dtype))
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # TensorBoard by default


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_a_gguf_base_trains_without_quantization(workdir, tmp_path, finetune):
    """A local .gguf base (an Ollama / llama.cpp model on disk) loaded dequantized must train
    like a plain one; it used to crash inside the Trainer on the GGUF quantization marker."""
    pytest.importorskip("gguf")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .tiny import build_llama_gguf

    f = build_llama_gguf(workdir["llama"], tmp_path / "tiny-llama.gguf")
    cfg = run_cfg(workdir, "llama", **{"model.name": str(f), "model.finetune": finetune,
                                       "train.max_steps": 2, "train.save_steps": 2})
    out = tmp_path / "run"
    result = train(cfg, out, progress=False)
    assert result.steps == 2 and result.train_loss is not None
    if finetune == "lora":
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(workdir["llama"])),
                                  str(out))
    else:
        full = AutoModelForCausalLM.from_pretrained(str(out))
        assert full.config.model_type == "llama"
        assert getattr(full.config, "quantization_config", None) is None


@pytest.mark.slow
def test_train_time_eval_is_capped_by_default(workdir, tmp_path, monkeypatch):
    """The held-out split can be large; each train-time evaluation reads at most
    data.max_eval_sequences (default 32) sequences per eval set, unless set to null."""
    from transformers import TrainerCallback

    from codetune.data.prepare import prepare

    from .conftest import TINY_CORPUS_FILE, prep_cfg

    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(120):
        (repo / f"v_{i}.py").write_text(TINY_CORPUS_FILE.format(i=i) * 2)
    prepare([str(repo)], tmp_path / "ds", prep_cfg(valid_fraction=0.5, dedup_near=False),
            progress=False)
    assert config.load().data.max_eval_sequences == 32

    steps: list[int] = []

    class Count(TrainerCallback):
        def on_prediction_step(self, args, state, control, **kw):
            steps[-1] += 1

        def on_step_begin(self, args, state, control, **kw):
            steps.append(0)

    import transformers

    real_init = transformers.Trainer.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.add_callback(Count())

    monkeypatch.setattr(transformers.Trainer, "__init__", init)
    over = {"data.dataset": str(tmp_path / "ds"), "train.max_steps": 1, "train.eval_steps": 1,
            "train.save_steps": 1, "train.batch_size": 4}
    cfg = run_cfg(workdir, "llama", **over)
    cfg.data.max_eval_sequences = config.DataConfig().max_eval_sequences  # the default
    train(cfg, tmp_path / "capped", progress=False)
    assert steps[-1] == 2 * 32 // 4  # two eval sets (left-to-right and FIM), 8 batches each
    steps.clear()
    train(run_cfg(workdir, "llama", **over, **{"data.max_eval_sequences": "null"}),
          tmp_path / "all", progress=False)
    assert steps[-1] > 2 * 32 // 4


def test_capped_eval_share_is_exact_on_several_ranks():
    from codetune.train.trainer import _Capped

    assert list(_Capped([1, 2, 3], 2)) == [1, 2]
    assert list(_Capped([1, 2, 3], 5)) == [1, 2, 3]  # one rank: what there is
    assert list(_Capped([1, 2, 3], 5, exact=True)) == [1, 2, 3, 1, 2]
    assert list(_Capped([], 3, exact=True, fallback=[7, 8])) == [7, 8, 7]


@pytest.mark.slow
def test_progress_is_lines_off_a_terminal_and_a_bar_on_one(workdir, tmp_path):
    import io

    from codetune.train.telemetry import progress_callback

    cfg = run_cfg(workdir, **{"train.max_steps": 2, "train.save_steps": 2})
    config.dump(cfg, tmp_path / "cfg.yaml")
    r = subprocess.run([sys.executable, "-m", "codetune", "train", str(tmp_path / "cfg.yaml"),
                        "-o", str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if x.startswith("step ")]
    assert any(x.startswith("step 2/2  loss ") and " eta " in x for x in lines), r.stderr
    assert any("eval loss: ltr " in x for x in lines), r.stderr
    assert "{'loss'" not in r.stderr and "\r" not in r.stderr  # no raw dicts, no bar redraws

    from types import SimpleNamespace

    buf = io.StringIO()
    cb = progress_callback(live=True, stream=buf)
    state = SimpleNamespace(global_step=0, max_steps=10)
    cb.on_train_begin(None, state, None)
    for step in range(1, 4):
        state.global_step = step
        cb.on_step_end(None, state, None)
        cb.on_log(None, state, None, logs={"loss": 2.5 - step / 10, "tokens_per_second": 1234})
    cb.on_train_end(None, state, None)
    out = buf.getvalue()
    assert "\r" in out and "3/10" in out and "loss 2.2000, 1,234 tok/s" in out
    assert "step 3/10  loss" not in out  # a bar, not lines


@pytest.mark.slow
def test_repo_mode_trains_with_context_from_the_index(workdir, tmp_path):
    """data.context=repo: samples open with snippets of other train files (the dataset's index
    neighbours), and a dataset without an index is refused before anything is written."""
    from codetune.context import index_dataset
    from codetune.data.prepare import prepare
    from codetune.tokens.stream import make_stream
    from codetune.train.trainer import context_providers

    from .conftest import TINY_CORPUS_FILE, prep_cfg

    repo = tmp_path / "shop"
    (repo / "shop").mkdir(parents=True)
    (repo / "shop" / "money.py").write_text("def cents(x):\n    return round(x * 100)\n")
    for i in range(12):
        (repo / "shop" / f"view_{i}.py").write_text(
            "from shop.money import cents\n\n" + TINY_CORPUS_FILE.format(i=i))
    ds = tmp_path / "ds"
    prepare([str(repo)], ds, prep_cfg(valid_fraction=0.2, dedup_near=False), progress=False,
            context_index=index_dataset)
    over = {"data.dataset": str(ds), "data.context": "repo", "data.context_tokens": 60,
            "data.seq_length": 128,
            "train.max_steps": 2, "train.save_steps": 2}
    cfg = run_cfg(workdir, "llama", **over)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(workdir["tok"]))
    train_ctx, held_ctx = context_providers(cfg, tok)
    from codetune.context import RepoIndex

    held = {p for _, p, _ in RepoIndex.for_dataset(ds).files()}
    trained = sorted(p for p in held if "view" in p)[0]
    out = next(f"shop/view_{i}.py" for i in range(12) if f"shop/view_{i}.py" not in held)
    money = ("shop/money.py", "def cents(x):\n    ...")  # the imported definition, as a stub
    for fn, path in ((train_ctx, trained), (held_ctx, out)):
        ctx = fn("shop", path, (repo / path).read_text())
        assert ctx.path == path and ctx.snippets and money in ctx.snippets
        assert all(p != path for p, _ in ctx.snippets)
        assert ctx.snippets[-1] == money  # the imported definition ranks first: nearest the hole
    seqs = make_stream(cfg, tok, "train", context=train_ctx).sequences()
    text = tok.decode(next(seqs).input_ids.tolist(), skip_special_tokens=False)
    assert "<repo_name>shop" in text and "<file_sep>" in text
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.steps == 2 and np.isfinite(result.train_loss)

    plain = tmp_path / "plain"
    prepare([str(repo)], plain, prep_cfg(valid_fraction=0.2, dedup_near=False), progress=False)
    with pytest.raises(CodetuneError, match="no(ne)?.*codetune prepare"):
        train(run_cfg(workdir, "llama", **{**over, "data.dataset": str(plain)}),
              tmp_path / "run2", progress=False)
    assert not (tmp_path / "run2").exists()


def test_best_step_is_the_lowest_held_out_loss_among_saved_steps():
    from codetune.train.checkpoints import best_step

    hist = [{"loss": 3.0, "step": 1}, {"eval_ltr_loss": 2.0, "eval_fim_loss": 3.0, "step": 2},
            {"eval_ltr_loss": 1.0, "eval_fim_loss": 2.0, "step": 4},   # mean 1.5: the best
            {"eval_ltr_loss": 1.2, "eval_fim_loss": 1.6, "step": 5},   # 1.4, but not saved
            {"eval_ltr_loss": 1.5, "eval_fim_loss": 1.7, "step": 6}]   # 1.6, the last
    best = best_step(hist, saved=[2, 4], final=6)
    assert (best["step"], best["loss"]) == (4, 1.5)
    assert best["losses"] == {2: 2.5, 4: 1.5, 6: 1.6}
    assert "the last, step 6: 1.6000" in best["why"]
    # step 5 counts once its weights exist; a tie goes to the later step
    assert best_step(hist, saved=[2, 4, 5], final=6)["step"] == 5
    tie = [{"eval_loss": 1.0, "step": 2}, {"eval_loss": 1.0, "step": 4}]
    assert best_step(tie, saved=[2], final=4)["step"] == 4
    assert best_step([{"loss": 1.0, "step": 2}], saved=[2], final=2) is None


@pytest.mark.slow
def test_keep_best_ends_with_the_chosen_checkpoints_weights(workdir, tmp_path, monkeypatch,
                                                            capsys):
    from safetensors.torch import load_file

    chosen = {}
    real = checkpoints.best_step

    def pick_the_first(history, saved, final):  # a held-out loss that rose after step 2
        best = real(history, saved, final)
        chosen.update(best, step=min(saved))
        return dict(chosen)

    monkeypatch.setattr(checkpoints, "best_step", pick_the_first)
    out = tmp_path / "run"
    r = train(run_cfg(workdir, **{"train.keep": "best", "train.max_steps": 4,
                                  "train.learning_rate": 5e-2}), out, progress=False)
    assert r.kept["step"] == chosen["step"] == 2
    final = load_file(out / "adapter_model.safetensors")
    kept = load_file(out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    last = load_file(out / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    assert final.keys() == kept.keys()
    assert all(torch.equal(final[k], kept[k]) for k in final)
    assert any(not torch.equal(final[k], last[k]) for k in final)
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["kept"]["step"] == 2 and "held-out loss" in summary["kept"]["why"]
    assert "keeping the weights of step 2" in capsys.readouterr().err


def test_a_warmup_as_long_as_the_run_is_said(workdir, tmp_path, capsys):
    train(run_cfg(workdir, **{"train.max_steps": 2, "train.save_steps": 2,
                              "train.warmup_steps": 30}), tmp_path / "r", progress=False)
    err = capsys.readouterr().err
    assert "train.warmup_steps=30 is not below train.max_steps=2" in err
    assert "set train.warmup_steps=1" in err
    train(run_cfg(workdir, **{"train.max_steps": 2, "train.save_steps": 2}), tmp_path / "s",
          progress=False)
    assert "warmup" not in capsys.readouterr().err
