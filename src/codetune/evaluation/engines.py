"""What runs each model an eval compares (a *variant*): torch, or llama.cpp's llama-server.

    torch       the run's base (adapter off) and tuned, or one model: `predict` on the weights
    llama.cpp   a GGUF file (eval.gguf, or a .gguf --model with eval.engine=llama.cpp) through a
                llama-server started for it, or one already running (eval.server)

Every variant gets the same tasks and the same prompt ids, built once with the run's tokenizer
(repository context included), so a difference between `tuned` and `gguf:Q4_K_M` is what the
export (merge, conversion, quantization) and the runtime changed, nothing else. Each llama.cpp
variant is compared with the reference (`tuned`, else `model`) with paired 95 % intervals
(`quantization (gguf:Q4_K_M)` in the report). What can fail cheaply (a file that is missing or
lacks FIM metadata, no llama-server, a URL that does not answer or serves another model) fails
before any weights are loaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from codetune.errors import CodetuneError

QUANTIZATION = "quantization"  # the label of a llama.cpp variant's comparison with the reference


@dataclass
class Variant:
    """One model an eval compares. `open(ctx)` enters it for its pass: for llama.cpp it yields
    the `LlamaServer` (started with `ctx` tokens per slot, stopped after), for torch None."""

    name: str
    engine: str  # "torch" or "llama.cpp"
    what: str  # one line for the report: where its weights come from
    open: Callable[[int], contextlib.AbstractContextManager[Any]]
    window: int | None = None  # llama.cpp: the model's context window (GGUF or server slot)


def torch_variants(loaded: Any) -> list[Variant]:
    """base (adapter off) and tuned for a LoRA run, else the one model."""

    def plain(ctx: int):
        return contextlib.nullcontext()

    what = loaded.description
    if loaded.run_dir is not None and hasattr(loaded.model, "disable_adapter"):
        off = loaded.model.disable_adapter
        return [Variant("base", "torch", f"{what}, adapter off", lambda ctx: _none(off())),
                Variant("tuned", "torch", what, plain)]
    return [Variant("model", "torch", what, plain)]


@contextlib.contextmanager
def _none(cm: Any) -> Iterator[None]:
    with cm:
        yield None


def _name(info: Any, taken: set[str]) -> str:
    """gguf:TYPE from the file's own type (gguf:Q4_K_M), else gguf:STEM; unique in `taken`."""
    base = f"gguf:{info.file_type}" if info.file_type else f"gguf:{info.path.stem}"
    name, i = base, 2
    while name in taken:
        name = f"{base}-{i}"
        i += 1
    taken.add(name)
    return name


def llama_variants(cfg: Any, target: str, tokenizer: Any, fim: Any,
                   taken: set[str]) -> list[Variant]:
    """The llama.cpp variants of `cfg` (an EvalConfig): the target itself with
    engine=llama.cpp (named `model`), then each eval.gguf file, then eval.server when it is
    not the target's engine. Checked now: files, their FIM metadata, llama-server's presence,
    the server's answer and its tokenizer."""
    from codetune import runtimes
    from codetune.infer.llama_server import LlamaServer

    out: list[Variant] = []
    files: list[tuple[str, Any]] = []
    attached = LlamaServer.attach(cfg.server) if cfg.server else None
    if attached is not None:
        attached.check_model(tokenizer, fim, target)
    if cfg.engine == "llama.cpp":
        if attached is not None:
            out.append(Variant("model", "llama.cpp", attached.description,
                               lambda ctx: contextlib.nullcontext(attached), attached.n_ctx))
            taken.add("model")
        else:
            files.append(("model", _checked(target)))
            taken.add("model")
    for g in cfg.gguf:
        info = _checked(g)
        files.append((_name(info, taken), info))
    for _, info in files:  # the cheap part of `LlamaServer.check_model`, before any loading
        _same_vocabulary(info, tokenizer, fim, target)
    if files and runtimes.binary("llama-server") is None:
        raise CodetuneError(runtimes.missing("llama-server"))
    for name, info in files:
        out.append(Variant(name, "llama.cpp", f"{info.path} through llama.cpp's llama-server",
                           _starter(info, cfg, tokenizer, fim, target),
                           info.context_length))
    if attached is not None and cfg.engine != "llama.cpp":
        taken.add("server")
        out.append(Variant("server", "llama.cpp", attached.description,
                           lambda ctx: contextlib.nullcontext(attached), attached.n_ctx))
    return out


def _same_vocabulary(info: Any, tokenizer: Any, fim: Any, target: str) -> None:
    """A GGUF whose vocabulary is smaller than the tokenizer's, or whose FIM ids are not the
    tokenizer's, is another model's: refuse it before loading anything."""
    why = ""
    if info.n_vocab < len(tokenizer):
        why = (f"its vocabulary has {info.n_vocab} tokens, the tokenizer of {target} "
               f"{len(tokenizer)}")
    elif fim is not None:
        for part in ("prefix", "suffix", "middle"):
            if info.fim.get(part) != getattr(fim, f"{part}_id"):
                why = (f"its FIM {part} token is id {info.fim.get(part)}, in the tokenizer of "
                       f"{target} {getattr(fim, f'{part}_id')}")
                break
    if why:
        raise CodetuneError(f"{info.path} is a different model than {target}: {why}; give the "
                            f"GGUF exported from it (`codetune export {target} --to gguf`)")


def _checked(path: str) -> Any:
    """The `GgufInfo` of a file that has the FIM metadata (else the error naming the export)."""
    from codetune.infer.llama_server import read_gguf, require_fim

    info = read_gguf(path)
    require_fim(info)
    return info


def _starter(info: Any, cfg: Any, tokenizer: Any, fim: Any, target: str):
    from codetune.infer.llama_server import LlamaServer

    @contextlib.contextmanager
    def start(ctx: int) -> Iterator[Any]:
        with LlamaServer.start(info.path, ctx=ctx, parallel=cfg.batch_size,
                               threads=cfg.llama_threads) as server:
            server.check_model(tokenizer, fim, target)
            yield server

    return start


def comparisons(names: list[str], llama: list[str], settings: list[str]) -> dict[str, tuple[str,
                                                                                         str]]:
    """label -> (reference, variant) of each llama.cpp variant against `tuned` (else `model`),
    with and without repository context where the eval runs both."""
    ref = "tuned" if "tuned" in names else "model"
    suffixes = ["", "+repo"] if settings == ["file", "repo"] else [""]
    out = {}
    for v in llama:
        if v == ref:
            continue
        for s in suffixes:
            if ref + s in names and v + s in names:
                out[f"{QUANTIZATION} ({v}{s})"] = (ref + s, v + s)
    return out


def slot_context(prompt_sets: list[list[list[int]]], max_new: int, window: int | None) -> int:
    """Tokens per llama-server slot: the longest prompt plus the generation budget (rounded
    up to 64), at most the model's window."""
    longest = max((len(p) for ps in prompt_sets for p in ps), default=0)
    need = -(-(longest + max_new + 1) // 64) * 64
    return min(need, window) if window else need
