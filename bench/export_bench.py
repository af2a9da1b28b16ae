"""Benchmark `codetune export`: time and file size per format, and what the check measured.

    python bench/export_bench.py                 # codetune-mini (the bundled model)
    python bench/export_bench.py --model merged  # any run or model folder
    python bench/export_bench.py --run runs/x    # also a LoRA run (merge included)

Rows: --to gguf with F16, BF16 and Q8_0; --to ollama and --to tabby (Q8_0); --to vllm. Each row
is one `codetune.export.export(...)` call, end to end (merge for a run, write, read back and
compare logits, README); the write alone is timed inside it (`write_seconds`).

Baseline, measured in the same run: writing the same weights as safetensors with
`save_pretrained` (what `codetune merge` writes), timed, and its size on disk. Reported: seconds
(total and write), the write's ratio to the safetensors save, file size and its ratio to the
safetensors size, and the check's largest |logit difference| and top-1 agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def baseline(model_dir: Path, tmp: Path) -> tuple[float, int]:
    """Seconds to save the model as safetensors (loaded first, not timed), and its size."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16)
    out = tmp / "safetensors"
    t0 = time.perf_counter()
    m.save_pretrained(str(out), safe_serialization=True)
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    shutil.rmtree(out)
    return seconds, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="run or model folder (default: codetune-mini)")
    ap.add_argument("--run", help="a LoRA run folder: adds rows that merge first")
    ap.add_argument("--json", help="write the figures here too")
    a = ap.parse_args()

    from codetune.export import export
    from codetune.mini import MINI_PATH

    model = Path(a.model or MINI_PATH)
    tmp = Path(tempfile.mkdtemp(prefix="export-bench-"))
    quiet = lambda m: None  # noqa: E731
    sources = [(model, "model")] + ([(Path(a.run), "run")] if a.run else [])
    rows = []
    try:
        for src, what in sources:
            base_dir = model if what == "model" else None
            base_s, base_size = baseline(base_dir, tmp) if base_dir else (None, None)
            plan = [("gguf", "F16"), ("gguf", "BF16"), ("gguf", "Q8_0"), ("ollama", "Q8_0"),
                    ("tabby", "Q8_0"), ("vllm", None)]
            if what == "run":
                plan = [("gguf", "F16"), ("gguf", "Q8_0"), ("vllm", None)]
            for to, ftype in plan:
                out = tmp / f"{what}-{to}-{ftype}"
                t0 = time.perf_counter()
                r = export(src, to, out, ftype=ftype or "F16", echo=quiet)
                total = time.perf_counter() - t0
                size = sum(r["files"].values())
                gguf_size = r["files"].get(r.get("gguf"), None) if r.get("gguf") else None
                c = r.get("check") or {}
                rows.append({
                    "source": what, "to": to, "type": ftype, "seconds": total,
                    "write_seconds": r.get("write_seconds"),
                    "write_vs_safetensors": (r["write_seconds"] / base_s
                                             if base_s and r.get("write_seconds") else None),
                    "gguf_bytes": gguf_size, "folder_bytes": size,
                    "size_vs_safetensors": gguf_size / base_size if gguf_size and base_size
                    else None,
                    "max_abs_logit_diff": c.get("max_abs_logit_diff"),
                    "top1": c.get("top1_agreement"), "reader": c.get("reader"),
                    "positions": c.get("positions")})
                shutil.rmtree(out)
            if base_s:
                rows.append({"source": what, "to": "baseline: save_pretrained safetensors",
                             "type": "bf16", "seconds": base_s, "gguf_bytes": base_size})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"source {model}; machine: {_cpu()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| source | format | total s | write s | write vs safetensors | file MB | size vs "
          "safetensors | max abs logit diff | top-1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        def fmt(v, spec):
            return "" if v is None else format(v, spec)

        print(f"| {r['source']} | {r['to']} {r.get('type') or ''} | {r['seconds']:.2f} | "
              f"{fmt(r.get('write_seconds'), '.2f')} | "
              f"{fmt(r.get('write_vs_safetensors'), '.2f')}{'×' if r.get('write_vs_safetensors') else ''} | "
              f"{fmt(r['gguf_bytes'] and r['gguf_bytes'] / 1e6, '.2f')} | "
              f"{fmt(r.get('size_vs_safetensors'), '.2f')}{'×' if r.get('size_vs_safetensors') else ''} | "
              f"{fmt(r.get('max_abs_logit_diff'), '.3g')} | "
              f"{fmt(r.get('top1') and 100 * r['top1'], '.2f')}{'%' if r.get('top1') else ''} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
