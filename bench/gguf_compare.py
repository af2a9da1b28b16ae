"""codetune's GGUF writer against llama.cpp's converter, on the same model (run by hand).

    python bench/gguf_compare.py MODEL_DIR [--type F16] [--out DIR]

Writes MODEL_DIR twice with the same `--type` (F32, F16, BF16 or Q8_0): with codetune's writer
(`export.gguf.write`) and with llama.cpp's `convert_hf_to_gguf.py` as codetune runs it
(`export.llama_cpp.convert`, before codetune adds its FIM keys), each timed; then prints

- metadata keys only in one file, and keys whose values differ (arrays: lengths and the first
  differing indices: tokens, token types, merges, ...);
- tensors only in one file, and tensors whose shape or GGML type differ;
- per tensor, the largest |difference| after dequantizing both (0 where the bytes agree).

llama.cpp is found as `codetune export` finds it (PATH, $LLAMA_CPP_DIR, the runtime cache that
`bash scripts/llama-cpp.sh` builds). Files go to a temporary folder unless --out is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHOW = 4  # differing array indices shown per key


def write_both(model_dir: Path, out: Path, ftype: str) -> dict[str, Any]:
    from codetune.export import gguf, llama_cpp
    from codetune.export.pipeline import _pre_for_converter, _tokenizer
    from codetune.export.source import resolve

    src = resolve(model_dir)
    tokenizer, fim = _tokenizer(model_dir, src)
    script = llama_cpp.need_convert()
    files: dict[str, Any] = {}
    t0 = time.perf_counter()
    mine = out / f"codetune.{ftype}.gguf"
    gguf.write(model_dir, mine, ftype, tokenizer=tokenizer, fim=fim, name=model_dir.name)
    files["codetune"] = {"path": mine, "seconds": time.perf_counter() - t0}
    pre = _pre_for_converter(tokenizer)
    theirs = out / f"llama.cpp.{ftype}.gguf"
    t0 = time.perf_counter()
    did = llama_cpp.convert(script, model_dir, theirs, ftype, pre=pre)
    files["llama.cpp"] = {"path": theirs, "seconds": time.perf_counter() - t0, **did}
    return files


def _short(v: Any) -> str:
    if isinstance(v, list):
        return f"[{len(v)} items]"
    s = repr(v)
    return s if len(s) <= 90 else s[:87] + "..."


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    return a == b


def compare_metadata(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    lines = []
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    lines += [f"  only in codetune:  {k} = {_short(a[k])}" for k in only_a]
    lines += [f"  only in llama.cpp: {k} = {_short(b[k])}" for k in only_b]
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if isinstance(x, list) and isinstance(y, list):
            n = min(len(x), len(y))
            diff = [i for i in range(n) if not _same(x[i], y[i])]
            if diff or len(x) != len(y):
                shown = ", ".join(f"[{i}] {x[i]!r} vs {y[i]!r}" for i in diff[:SHOW])
                lines.append(f"  differs: {k}: lengths {len(x)} / {len(y)}, {len(diff)} "
                             f"differing indices{': ' + shown if shown else ''}")
        elif not _same(x, y):
            lines.append(f"  differs: {k}: codetune {_short(x)} / llama.cpp {_short(y)}")
    return lines or ["  (identical)"]


def compare_tensors(pa: Path, ta: list[Any], pb: Path, tb: list[Any]) -> list[str]:
    import gguf

    from codetune.export.reader import values

    name = {t: gguf.GGMLQuantizationType(t).name for t in {x.ggml_type for x in ta + tb}}
    a, b = {t.name: t for t in ta}, {t.name: t for t in tb}
    lines = [f"  only in codetune:  {n} {a[n].shape} {name[a[n].ggml_type]}"
             for n in sorted(set(a) - set(b))]
    lines += [f"  only in llama.cpp: {n} {b[n].shape} {name[b[n].ggml_type]}"
              for n in sorted(set(b) - set(a))]
    worst: list[tuple[float, str]] = []
    for n in [x.name for x in ta if x.name in b]:
        x, y = a[n], b[n]
        if x.shape != y.shape or x.ggml_type != y.ggml_type:
            lines.append(f"  differs: {n}: {x.shape} {name[x.ggml_type]} / {y.shape} "
                         f"{name[y.ggml_type]}")
        if x.shape == y.shape:
            d = float(np.abs(values(pa, x) - values(pb, y)).max()) if x.shape else 0.0
            worst.append((d, n))
    worst.sort(reverse=True)
    nonzero = [(d, n) for d, n in worst if d > 0]
    lines.append(f"  largest |difference| after dequantizing, {len(worst)} shared tensors: "
                 f"{len(nonzero)} differ")
    lines += [f"    {d:.6g}  {n}" for d, n in (nonzero[:12] or worst[:3])]
    if len(nonzero) > 12:
        lines.append(f"    ... {len(nonzero) - 12} more, each <= {nonzero[12][0]:.6g}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--type", default="F16", choices=["F32", "F16", "BF16", "Q8_0"])
    ap.add_argument("--out", type=Path, help="keep both files in this folder")
    args = ap.parse_args()

    from codetune.errors import CodetuneError
    from codetune.export.reader import read

    out = args.out or Path(tempfile.mkdtemp(prefix="gguf-compare-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        files = write_both(args.model_dir, out, args.type)
    except CodetuneError as e:
        sys.exit(f"error: {e}")
    try:
        print(f"# {args.model_dir} as {args.type}\n")
        for who, f in files.items():
            size = f["path"].stat().st_size
            note = (f" (pre-tokenizer {f['pre_tokenizer_named_by_codetune']!r} named by "
                    "codetune: not in llama.cpp's table)"
                    if f.get("pre_tokenizer_named_by_codetune") else "")
            print(f"{who:10s} {f['seconds']:7.1f} s  {size / 1e6:9.1f} MB{note}")
        (ma, ta), (mb, tb) = read(files["codetune"]["path"]), read(files["llama.cpp"]["path"])
        print("\n## metadata")
        print("\n".join(compare_metadata(ma, mb)))
        print("\n## tensors")
        print("\n".join(compare_tensors(files["codetune"]["path"], ta,
                                        files["llama.cpp"]["path"], tb)))
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
