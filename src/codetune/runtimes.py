"""Where codetune finds llama.cpp's programs: below every layer that runs them.

    llama-server, llama-quantize   on PATH, then $LLAMA_CPP_DIR/{build/bin,bin,.}/, then the
                                   runtime cache's bin/
    convert_hf_to_gguf.py          $LLAMA_CPP_DIR/ (or convert/ under it), the runtime cache's
                                   convert/, or on PATH

The runtime cache is `${CODETUNE_RUNTIMES:-~/.cache/codetune-runtimes}/llama.cpp/`, where
`scripts/llama-cpp.sh` (and CI) builds llama.cpp from source.

Why here and not in `export.llama_cpp`: eval's llama.cpp engine (`infer.llama_server`) starts
llama-server, and infer sits below export in the layers (export merges a run first). The search
order is the one `export.llama_cpp.find()` documents; `tests/test_eval_llama_cpp.py` checks that
the two agree.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ENV = "LLAMA_CPP_DIR"
RUNTIMES_ENV = "CODETUNE_RUNTIMES"
BUILD_IT = "bash scripts/llama-cpp.sh"


def runtime_dir() -> Path:
    """Where llama.cpp is built and cached when codetune (or CI) builds it from source."""
    root = os.environ.get(RUNTIMES_ENV) or Path.home() / ".cache" / "codetune-runtimes"
    return Path(root) / "llama.cpp"


def _roots() -> list[Path]:
    """Folders searched after PATH, in order: $LLAMA_CPP_DIR, then the runtime cache."""
    roots = [Path(os.environ[ENV])] if os.environ.get(ENV) else []
    return roots + [runtime_dir()]


def binary(name: str) -> str | None:
    """The path of llama.cpp's program `name` (llama-server, llama-quantize), or None."""
    found = shutil.which(name)
    if found:
        return found
    for root in _roots():
        for folder in (root / "build" / "bin", root / "bin", root):
            b = folder / name
            if b.is_file() and os.access(b, os.X_OK):
                return str(b)
    return None


def converter() -> str | None:
    """The path of llama.cpp's convert_hf_to_gguf.py, or None."""
    for root in _roots():
        for c in (root / "convert_hf_to_gguf.py", root / "convert" / "convert_hf_to_gguf.py"):
            if c.is_file():
                return str(c)
    return shutil.which("convert_hf_to_gguf.py")


def find() -> dict[str, str | None]:
    """Paths of the converter, the quantizer and the server; None where not installed."""
    return {"convert": converter(), "quantize": binary("llama-quantize"),
            "server": binary("llama-server")}


def missing(what: str) -> str:
    """The sentence that says program `what` was not found and how to get it."""
    return (f"llama.cpp's `{what}` is neither on PATH, nor in ${ENV}/build/bin, nor in "
            f"{runtime_dir() / 'bin'}; build it there with `{BUILD_IT}` (cmake and a C++ "
            f"compiler, a few minutes), or set {ENV} to a llama.cpp build")
