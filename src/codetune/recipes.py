"""Recipes: tested starting configs for real models, shipped inside the package.

`codetune train starcoderbase-1b-qlora` runs a recipe by name, from a pip install as from a
checkout; a path to a YAML file works too. Each recipe's header states what `codetune recipes`
lists: the command that runs it (`# run:`) and the memory it needs (`# memory:`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from codetune.errors import CodetuneError


def recipes_dir() -> Path:
    return Path(str(resources.files("codetune") / "assets" / "recipes"))


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    model: str
    method: str  # e.g. "QLoRA 4-bit, r=8"
    memory: str
    command: str


def _header(text: str, key: str) -> str:
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        k, _, v = line.lstrip("# ").partition(":")
        if k.strip() == key:
            return v.strip()
    return ""


def _method(data: dict) -> str:
    model, lora = data.get("model", {}), data.get("lora", {})
    finetune, quant = model.get("finetune", "lora"), model.get("quantization", "4bit")
    if finetune == "full":
        return "full fine-tuning"
    kind = {"4bit": "QLoRA 4-bit", "8bit": "LoRA on 8-bit"}.get(quant, "LoRA")
    return f"{kind}, r={lora.get('r', '?')}"


def load_recipe(path: Path) -> Recipe:
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    name = path.stem
    return Recipe(name=name, path=path, model=str(data.get("model", {}).get("name", "?")),
                  method=_method(data), memory=_header(text, "memory") or "?",
                  command=_header(text, "run") or f"codetune train {name} --dataset DATASET "
                                                  f"-o runs/{name}")


def available() -> list[Recipe]:
    """The training recipes shipped with codetune (accelerate configs are not recipes)."""
    return [load_recipe(p) for p in sorted(recipes_dir().glob("*.yaml"))]


def resolve(spec: str) -> Path:
    """A recipe file: `spec` as a path if it exists, else a shipped recipe by name (with or
    without .yaml; `accelerate/fsdp-qlora` for the accelerate configs)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    name = spec.removesuffix(".yaml").removesuffix(".yml")
    shipped = recipes_dir() / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(r.name for r in available())
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        raise CodetuneError(f"recipe file {spec} does not exist; give a YAML file or one of "
                            f"the shipped recipes: {names} (`codetune recipes` lists them)")
    raise CodetuneError(f"no recipe named {spec!r}; the shipped ones are {names} "
                        "(`codetune recipes` lists them), or give a YAML file")
