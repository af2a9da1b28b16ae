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

# llama.cpp as users run it, where it is built (scripts/llama-cpp.sh; CI builds it): read before
# the autouse fixture below hides it from every test that does not ask for `llama_cpp`
_REAL_RUNTIMES = os.environ.get("CODETUNE_RUNTIMES") or str(
    Path.home() / ".cache" / "codetune-runtimes")
_REAL_LLAMA_DIR = os.environ.get("LLAMA_CPP_DIR")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """git clones go to a per-test cache, never to the user's ~/.cache; llama.cpp's tools are
    invisible unless a test asks for them (`llama_cpp`), so the default paths stay tested."""
    monkeypatch.setenv("CODETUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CODETUNE_RUNTIMES", str(tmp_path / "no-runtimes"))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)


@pytest.fixture
def llama_cpp(monkeypatch) -> dict[str, str]:
    """The real llama.cpp (`llama-server`, `llama-quantize`, `convert_hf_to_gguf.py`), for the
    tests marked `runtime`. Skipped where it is not built; `.ci/run` builds it, so CI runs them.
    Returns `llama_cpp.find()` with the runtime visible."""
    from codetune.export import llama_cpp as tools

    monkeypatch.setenv("CODETUNE_RUNTIMES", _REAL_RUNTIMES)
    if _REAL_LLAMA_DIR:
        monkeypatch.setenv("LLAMA_CPP_DIR", _REAL_LLAMA_DIR)
    found = tools.find()
    missing = [k for k, v in found.items() if v is None]
    if missing:
        pytest.skip(f"llama.cpp not built ({', '.join(missing)} missing): run "
                    "scripts/llama-cpp.sh, as .ci/run does")
    return found


def bench_module(name: str):
    """bench/NAME.py imported as a module (bench/ is scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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


TINY_CORPUS_FILE = '''def handle_{i}(request):
    user = request.user
    if not user.is_authenticated:
        return redirect("/login")
    orders = Order.objects.filter(owner=user).order_by("-created")
    return render(request, "orders/list.html", {{"orders": orders, "page": {i}}})
'''


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict[str, Path]:
    """A prepared dataset, a tiny GPT-BigCode base with a StarCoder-FIM tokenizer, and a LoRA
    run folder trained on it for a few steps: what eval/merge/complete/serve tests start from."""
    from codetune import config
    from codetune.data.prepare import prepare
    from codetune.train.trainer import train

    from .tiny import build_model, build_tokenizer

    root = tmp_path_factory.mktemp("tiny_run")
    repo = root / "repo"
    repo.mkdir()
    for i in range(40):
        (repo / f"views_{i}.py").write_text(TINY_CORPUS_FILE.format(i=i))
    prepare([str(repo)], root / "ds", prep_cfg(valid_fraction=0.15, dedup_near=False),
            progress=False)
    tok = build_tokenizer(root / "tok")
    base = build_model(root / "base", "gpt_bigcode", tok)
    items = {"model.name": str(base), "data.dataset": str(root / "ds"),
             "model.quantization": "none", "model.dtype": "float32", "data.seq_length": 64,
             "data.max_eval_sequences": 4, "train.batch_size": 4, "train.max_steps": 8,
             "train.save_steps": 8, "train.eval_steps": 8, "train.logging_steps": 2,
             "train.learning_rate": 5e-3, "train.report_to": "none"}
    cfg = config.load(None, [f"{k}={v}" for k, v in items.items()])
    train(cfg, root / "run", progress=False)
    return {"root": root, "run": root / "run", "base": base, "ds": root / "ds",
            "tok": tok, "repo": repo}


@pytest.fixture(scope="session")
def toks(tmp_path_factory):
    """One tokenizer per FIM family (and one without FIM tokens), built locally."""
    from transformers import AutoTokenizer

    from .tiny import DEEPSEEK_SPECIALS, QWEN_SPECIALS, build_codellama_tokenizer, build_tokenizer

    base = tmp_path_factory.mktemp("fimtok")
    paths = {
        "starcoder": build_tokenizer(base / "sc"),
        "qwen2.5-coder": build_tokenizer(base / "qw", specials=QWEN_SPECIALS),
        "deepseek-coder": build_tokenizer(base / "ds", specials=DEEPSEEK_SPECIALS,
                                          eos="<｜end▁of▁sentence｜>"),
        "codellama": build_codellama_tokenizer(base / "cl"),
        "none": build_tokenizer(base / "none", specials=["<|endoftext|>"]),
    }
    return {k: AutoTokenizer.from_pretrained(str(p)) for k, p in paths.items()}
