"""Recipes ship inside the package: `codetune train NAME` works from a pip install, not only
from a checkout; `codetune recipes` lists them; each header states its command."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from codetune import config, recipes
from codetune.cli import main
from codetune.errors import CodetuneError

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_recipe_loads_and_states_its_command():
    found = recipes.available()
    assert {r.name for r in found} >= {"starcoderbase-1b-qlora", "starcoder2-3b-qlora",
                                       "qwen2.5-coder-1.5b-qlora", "deepseek-coder-1.3b-qlora",
                                       "codellama-7b-qlora"}
    for r in found:
        cfg = config.load(r.path)  # every recipe is a valid config
        assert r.model == cfg.model.name
        assert r.command.startswith(f"codetune train {r.name} ")
        assert r.memory != "?" and "GB" in r.memory
        assert r.method.startswith("QLoRA 4-bit, r=")


def test_recipes_resolve_by_name_or_path(tmp_path):
    seed = recipes.resolve("starcoderbase-1b-qlora")
    assert seed == recipes.resolve("starcoderbase-1b-qlora.yaml")
    assert seed.parent == recipes.recipes_dir()
    own = tmp_path / "mine.yaml"
    own.write_text("train:\n  max_steps: 7\n")
    assert recipes.resolve(str(own)) == own
    with pytest.raises(CodetuneError, match="no recipe named 'starcoder-9000'.*codetune recipes"):
        recipes.resolve("starcoder-9000")
    with pytest.raises(CodetuneError, match="does not exist"):
        recipes.resolve(str(tmp_path / "typo.yaml"))
    assert recipes.resolve("accelerate/fsdp-qlora").name == "fsdp-qlora.yaml"


def test_train_takes_a_recipe_by_name(tmp_path, capsys):
    """The recipe is read (its dataset is what fails here), and -c / -s work on train too."""
    argv = ["train", "starcoderbase-1b-qlora", "--dataset", str(tmp_path / "nope"), "-o",
            str(tmp_path / "run")]
    assert main(argv) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["train", "starcoder-9000", "-o", str(tmp_path / "run")]) == 2
    assert "codetune recipes" in capsys.readouterr().err
    assert main(["train", "starcoderbase-1b-qlora", "-c", "x.yaml", "-o", "r"]) == 2
    assert "not both" in capsys.readouterr().err


def test_recipes_command_lists_them(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for r in recipes.available():
        assert r.command in out
    assert main(["recipes", "--path", "starcoderbase-1b-qlora"]) == 0
    assert capsys.readouterr().out.strip() == str(recipes.resolve("starcoderbase-1b-qlora"))


@pytest.mark.slow
def test_an_installed_wheel_carries_and_finds_the_recipes(tmp_path):
    """Build the wheel as pip would, unpack it away from the checkout, and resolve a recipe,
    the bundled model and the sample project from there."""
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                        "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("codetune-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("codetune/assets/recipes/starcoderbase-1b-qlora.yaml",
              "codetune/assets/recipes/accelerate/fsdp-qlora.yaml",
              "codetune/assets/codetune-mini/model.safetensors",
              "codetune/assets/samples/harbor/harbor/money.py"):
        assert f in names, f
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("from codetune import recipes, mini, demo; "
             "p = recipes.resolve('starcoderbase-1b-qlora'); "
             f"assert str(p).startswith({str(site)!r}), p; "
             f"assert mini.MINI_PATH.is_dir() and str(mini.MINI_PATH).startswith({str(site)!r}); "
             "assert demo.sample_path().is_dir(); print(p)")
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert yaml.safe_load(Path(r.stdout.strip()).read_text())["model"]["name"] == \
        "bigcode/starcoderbase-1b"
