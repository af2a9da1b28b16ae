"""llama.cpp's own tools, when they are installed: the converter and the K-quant quantizer.

    convert_hf_to_gguf.py   $LLAMA_CPP_DIR/convert_hf_to_gguf.py, or on PATH
    llama-quantize          on PATH, or $LLAMA_CPP_DIR/build/bin/, or $LLAMA_CPP_DIR/

The converter knows more models and tokenizers than codetune's writer and is preferred when
found (`--converter auto`). It does not write every FIM key for every family (llama.cpp finds
most sentinels by their text at load time), so codetune adds the ones the registry knows and
the file lacks (`add_metadata`), copying the file with the `gguf` package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError
from codetune.export.gguf import _add

ENV = "LLAMA_CPP_DIR"
GET_IT = ("git clone https://github.com/ggml-org/llama.cpp && cd llama.cpp && "
          "cmake -B build && cmake --build build --config Release --target llama-quantize")


def find() -> dict[str, str | None]:
    """Paths of the converter and the quantizer, None where not installed."""
    root = os.environ.get(ENV)
    convert = quantize = None
    if root:
        c = Path(root) / "convert_hf_to_gguf.py"
        convert = str(c) if c.is_file() else None
        for q in (Path(root) / "build" / "bin" / "llama-quantize", Path(root) / "llama-quantize"):
            if q.is_file() and os.access(q, os.X_OK):
                quantize = str(q)
                break
    convert = convert or shutil.which("convert_hf_to_gguf.py")
    quantize = shutil.which("llama-quantize") or quantize
    return {"convert": convert, "quantize": quantize}


def need_quantize(ftype: str) -> str:
    """The llama-quantize path, or a CodetuneError saying what is missing and how to get it."""
    path = find()["quantize"]
    if path is None:
        raise CodetuneError(
            f"--type {ftype} needs llama.cpp's `llama-quantize` (K-quants have no Python "
            f"quantizer), and it is neither on PATH nor in ${ENV}/build/bin. Get it with: "
            f"{GET_IT}; then put build/bin on PATH or set {ENV} to the llama.cpp folder. Or "
            "use --type Q8_0, F16 or BF16, which codetune writes itself.")
    return path


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise CodetuneError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")


def convert(script: str, model_dir: Path, out_file: Path, ftype: str) -> None:
    """llama.cpp's converter: `python convert_hf_to_gguf.py MODEL --outfile F --outtype T`."""
    _run([sys.executable, script, str(model_dir), "--outfile", str(out_file),
          "--outtype", ftype.lower()], "llama.cpp's convert_hf_to_gguf.py")


def quantize(tool: str, src: Path, dst: Path, ftype: str) -> None:
    """`llama-quantize SRC DST TYPE` (TYPE: Q4_K_M, Q5_K_M, Q6_K, ...)."""
    _run([tool, str(src), str(dst), ftype], "llama-quantize")


def add_metadata(path: Path, extra: dict[str, Any]) -> list[str]:
    """Add the keys of `extra` that the file at `path` lacks (rewriting it beside, then
    renaming); returns the keys added. Values: int (uint32), str, or lists (arrays)."""
    import gguf  # optional: gguf (the export extra)

    reader = gguf.GGUFReader(str(path))
    missing = {k: v for k, v in extra.items() if k not in reader.fields}
    if not missing:
        return []
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for key, value in missing.items():
        _add(w, key, value)
    for t in reader.tensors:
        w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in reader.tensors:
        w.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    w.close()
    del reader
    os.replace(tmp, path)
    return sorted(missing)
