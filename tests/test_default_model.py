"""With no --model, train / eval / complete / serve use the bundled codetune-mini and say so."""

from __future__ import annotations

import pytest

from codetune import config
from codetune.cli import main


def test_complete_without_target_uses_mini(capsys):
    assert main(["complete", "--prefix", "def add(a, b):\n    return ", "--suffix", "\n",
                 "--greedy", "--max-new-tokens", "4"]) == 0
    err = capsys.readouterr().err
    assert "codetune-mini" in err and "starcoderbase-1b-qlora" in err


@pytest.mark.slow
def test_train_and_eval_without_model_use_mini(tiny_run, tmp_path, capsys):
    from codetune.train.trainer import train

    cfg = config.load(None, [f"data.dataset={tiny_run['ds']}", "train.max_steps=1",
                             "train.batch_size=2", "train.report_to=none",
                             "model.quantization=none", "data.max_eval_sequences=1"])
    cfg.data.seq_length = 4096  # longer than the bundled model: fitted, since it was defaulted
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.steps == 1
    assert "codetune-mini" in capsys.readouterr().err
    assert main(["eval", "--dataset", str(tiny_run["ds"]), "-o", str(tmp_path / "e"), "-q",
                 "-s", "eval.max_tasks=4", "-s", "eval.bpb=false"]) == 0
    assert "codetune-mini" in capsys.readouterr().err
