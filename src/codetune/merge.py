"""`codetune merge`: a run's adapter folded into its base, as a plain model folder.

The base is reloaded unquantized (bf16 by default, as the reference notebook did; merging into 4-bit weights
would round the adapter away), the adapter applied and merged, and the result saved as
safetensors with the tokenizer and a `generation_config.json` whose `eos_token_id` lists the
FIM stop tokens, so plain `generate()` stops where codetune's does. Before saving, the merged
model's logits are compared with base + adapter on a few held-out snippets; the largest
difference is printed and recorded. The folder is written under a temporary name and renamed
when complete, so an interrupted merge never leaves a folder that looks like a model.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

from codetune import outputs
from codetune.errors import CodetuneError
from codetune.infer import loader
from codetune.infer.probe import logits, probe_texts

# Largest |logit difference| accepted between merged and base+adapter, per dtype: merging
# rounds W + BA once into the weight dtype (bf16 keeps ~3 significant digits).
TOLERANCE = {"float32": 1e-3, "bfloat16": 0.25, "float16": 0.05}


def _probe_inputs(loaded, n: int = 3, length: int = 64) -> tuple[list[list[int]], str]:
    """Token ids of a few held-out snippets, else of the vocabulary in order; and which, in
    words (with why there were no held-out snippets)."""
    probe = probe_texts(loaded.run_dir, n)
    # held-out code, else token ids rather than the built-in snippets: what merge has always
    # verified on, and recorded as codetune_merge.json's verified_on
    texts, why = (probe.texts if probe.held_out else []), probe.why
    tok = loaded.tokenizer
    ids = [tok(t, add_special_tokens=False)["input_ids"][:length] for t in texts]
    ids = [i for i in ids if len(i) >= 2]
    if ids:
        return ids, f"{len(ids)} held-out inputs"
    if probe.held_out:
        why = f"the held-out files of {loaded.run_dir}'s dataset are under 2 tokens each"
    return [list(range(10, 10 + length))], f"token ids 10-{9 + length}, not held-out code ({why})"


def merge(run_dir: str | Path, out_dir: str | Path, dtype: str = "bfloat16",
          overwrite: bool = False, *, fallback: bool = True, flag: str = "--dtype",
          echo: Any = None) -> dict[str, Any]:
    """Merge the adapter of `run_dir` into its base and save to `out_dir`.

    A merge in `dtype` whose logits are not within its tolerance of base + adapter is done
    again in float32 when `fallback` (and said through `echo`): a real 0.5B model's bf16 merge
    was 1.05 off on its own run, the float32 one 0.03. `flag`: the caller's name for the dtype
    option, which an error suggests (`--dtype` for merge, `--merge-dtype` for export)."""

    run_dir, out = Path(run_dir), Path(out_dir).absolute()
    if not loader.is_run_dir(run_dir):
        raise CodetuneError(f"{run_dir} is not a codetune run folder (no run.json / "
                            "config.yaml); give the folder written by `codetune train`")
    cfg = loader.run_config(run_dir)
    if cfg.model.finetune != "lora":
        raise CodetuneError(f"{run_dir} is a full fine-tuning run: the folder already holds "
                            "the whole model, there is no adapter to merge")
    out = outputs.check(out, overwrite, "merged", inputs=[("run", run_dir),
                                                         ("base model", cfg.model.name)])
    if dtype not in TOLERANCE:
        raise CodetuneError(f"{flag} must be one of {', '.join(TOLERANCE)}")
    say = echo or (lambda m: print(m, file=sys.stderr))
    tries = [dtype, "float32"] if fallback and dtype != "float32" else [dtype]
    notes = []
    for used in tries:
        loaded = loader.load(str(run_dir), quantization="none", dtype=used)
        inputs, verified_on = _probe_inputs(loaded)
        before = logits(loaded.model, inputs)
        merged = loaded.model.merge_and_unload()
        after = logits(merged, inputs)
        diff = max(float((a - b).abs().max()) for a, b in zip(before, after, strict=True))
        if diff <= TOLERANCE[used]:
            break
        notes.append(f"the {used} merge differs from base + adapter by up to {diff:.3g} "
                     f"(tolerance {TOLERANCE[used]})")
        if used != tries[-1]:
            say(f"note: {notes[-1]}; merging in float32 instead")
            del loaded, merged, before, after
            gc.collect()
    else:
        retry = (f"Try {flag} float32, or use" if dtype != "float32" and not fallback
                 else "Use")
        raise CodetuneError(f"{'; '.join(notes)}: nothing was written. {retry} the run folder "
                            "with its adapter instead.")

    with outputs.staged(out, overwrite, "merged", checked=True) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        loaded.tokenizer.save_pretrained(str(tmp))
        gen = merged.generation_config
        if loaded.fim is not None:
            gen.eos_token_id = list(loaded.fim.stop_ids)
        gen.pad_token_id = loaded.tokenizer.pad_token_id
        gen.save_pretrained(str(tmp))
        record = {**outputs.mark("merged"), "run": str(run_dir.resolve()),
                  "base_model": cfg.model.name, "revision": cfg.model.revision, "dtype": used,
                  **({"dtype_requested": dtype, "fallback": notes[0]} if notes else {}),
                  "fim_format": loaded.fim.family if loaded.fim else None,
                  "verified_inputs": len(inputs), "verified_on": verified_on,
                  "max_abs_logit_diff": diff,
                  "tolerance": TOLERANCE[used]}
        outputs.write_json(tmp / "codetune_merge.json", record)
    return {**record, "out_dir": str(out)}
