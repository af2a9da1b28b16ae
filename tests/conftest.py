"""Shared fixtures. Everything is built locally: the suite never touches the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from codetune.config import PrepareConfig  # noqa: E402

from . import nasty_repo  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """git clones go to a per-test cache, never to the user's ~/.cache."""
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))


def prep_cfg(**kw) -> PrepareConfig:
    cfg = dataclasses.replace(PrepareConfig(), **{"workers": 1, **kw})
    cfg.validate()
    return cfg


@pytest.fixture(scope="session")
def nasty(tmp_path_factory) -> tuple[Path, nasty_repo.Expected]:
    base = tmp_path_factory.mktemp("nasty")
    exp = nasty_repo.build(base / "repo", base / "outside")
    return base / "repo", exp


@pytest.fixture(scope="session")
def nasty_prepared(nasty, tmp_path_factory) -> Path:
    from codetune.data.prepare import prepare

    repo, _ = nasty
    out = tmp_path_factory.mktemp("out") / "ds"
    prepare([str(repo)], out, prep_cfg(valid_fraction=0.0), progress=False)
    return out
