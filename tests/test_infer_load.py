"""Inference loads a QLoRA run's base dequantized where it fits: bitsandbytes' 4-bit matmuls
made a real 0.5B model's eval on a CPU crawl."""

from __future__ import annotations

import pytest

from codetune import config
from codetune.model import load as M
from codetune.train.trainer import train


@pytest.fixture(scope="module")
def qlora_run(tiny_run, tmp_path_factory):
    items = {"model.name": str(tiny_run["base"]), "data.dataset": str(tiny_run["ds"]),
             "model.quantization": "4bit", "data.seq_length": 64, "train.batch_size": 2,
             "train.max_steps": 1, "train.save_steps": 1, "train.eval_steps": 0,
             "train.report_to": "none"}
    out = tmp_path_factory.mktemp("qlora") / "run"
    train(config.load(None, [f"{k}={v}" for k, v in items.items()]), out, progress=False)
    return out


def _has_4bit(model) -> bool:
    import bitsandbytes as bnb

    return any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_a_4bit_run_is_dequantized_for_inference_where_it_fits(qlora_run):
    from codetune.infer.loader import load

    loaded = load(str(qlora_run))
    assert loaded.quantization == "none" and not _has_4bit(loaded.model)
    forced = load(str(qlora_run), quantization="4bit")
    assert forced.quantization == "4bit" and _has_4bit(forced.model)


def test_auto_keeps_4bit_when_the_unquantized_model_does_not_fit(qlora_run, monkeypatch):
    from codetune.infer.loader import load

    monkeypatch.setattr(M, "available_memory", lambda: 1000)  # bytes
    loaded = load(str(qlora_run))
    assert loaded.quantization == "4bit" and _has_4bit(loaded.model)


def test_eval_and_complete_follow_the_setting(qlora_run, tmp_path, monkeypatch):
    from codetune.cli import main
    from codetune.infer import loader

    seen = []
    real = loader.load

    def spy(*a, **k):
        loaded = real(*a, **k)
        seen.append(loaded.quantization)
        return loaded

    monkeypatch.setattr(loader, "load", spy)
    args = ["-q", "-s", "eval.max_files=1", "-s", "eval.bpb=false", "-s", "eval.max_tasks=1",
            "-s", "eval.bootstrap=10"]
    assert main(["eval", str(qlora_run), "-o", str(tmp_path / "e1"), *args]) == 0
    assert main(["eval", str(qlora_run), "-o", str(tmp_path / "e2"), "--quantization", "4bit",
                 *args]) == 0
    assert main(["complete", str(qlora_run), "--prefix", "def ", "--greedy",
                 "--max-new-tokens", "2"]) == 0
    assert seen == ["none", "4bit", "none"]
