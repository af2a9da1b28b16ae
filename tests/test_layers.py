"""The shape of the code (the README's package map; the layers are the LAYER table below):
each layer imports only the layers below it; train and infer never import each other; no
library module imports cli. Imports inside functions count too: a lazy import is still a
dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import codetune

ROOT = Path(codetune.__file__).parent

# top-level component -> layer; a module may import its own component and lower layers only
LAYER = {
    "__init__": 0, "errors": 0,
    "config": 1, "outputs": 1, "recipes": 1, "mini": 1,
    "runtimes": 1,  # where llama.cpp's programs are: eval's engine (infer) and export need it
    "data": 2,
    "tokens": 3,
    "context": 4,  # lays retrieved snippets out as tokens.fim.RepoContext; knows no model
    "model": 5,
    "train": 6, "infer": 6,
    "evaluation": 7, "serve": 7,
    "merge": 7,  # loads a run (infer); reads held-out code from data.store, not evaluation
    "demo": 8,
    "export": 8,  # merges a run first, so above merge
    "cli": 9, "__main__": 10,
}


def _component(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """Top-level codetune components imported anywhere in `path`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names]
                                     if node.module == "codetune" else [])
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "codetune" and len(parts) > 1:
                found.add(parts[1])
    return found


def _modules() -> list[Path]:
    return [p for p in ROOT.rglob("*.py") if "assets" not in p.relative_to(ROOT).parts]


def test_every_module_has_a_layer():
    assert {_component(p) for p in _modules()} <= set(LAYER)


def test_layers_import_only_downwards():
    bad = []
    for path in _modules():
        own = _component(path)
        for dep in _imports(path):
            if dep == own or dep not in LAYER:
                continue
            if LAYER[dep] >= LAYER[own]:
                bad.append(f"{path.relative_to(ROOT)} imports codetune.{dep}")
    assert not bad, "\n".join(bad)


def test_train_and_infer_are_independent_and_nothing_imports_cli():
    for path in _modules():
        own, deps = _component(path), _imports(path)
        if own == "train":
            assert "infer" not in deps, path
        if own == "infer":
            assert "train" not in deps, path
        if own not in ("cli", "__main__"):
            assert "cli" not in deps, path


def test_the_checker_sees_lazy_imports(tmp_path):
    """The rule holds for imports inside functions: the checker must see them."""
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from codetune.infer import loader\n    import codetune.cli\n"
                 "from codetune import model as M\n")
    assert _imports(f) == {"infer", "cli", "model"}
