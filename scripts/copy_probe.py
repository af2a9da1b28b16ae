#!/usr/bin/env python
"""Can a model copy a name from earlier text? The skill repository context relies on.

    python scripts/copy_probe.py [MODEL_DIR ...]      # default: the bundled codetune-mini

For a few made-up function names, the bits per byte a model spends on a call such as
`frobnicate_widget(items, 3)`, left to right, after `def main(items):\\n    result = `, when
the name's definition is nowhere, three lines above in the same file, or in a snippet of
another file in the repository layout (`<repo_name>`, `<file_sep>`). A model that copies
spends far fewer bits once the definition is in sight; one that does not spends about the same.
Repository context can only help a model that copies.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

NAMES = ["frobnicate_widget", "compute_berth_fee", "load_manifest_rows", "ensure_vessel_id",
         "scale_cents", "quay_slot_for"]


def probe(model_dir: str) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def bits(prompt: str, target: str) -> float:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        t = tok(target, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([p + t])).logits[0, len(p) - 1:-1].float()
        lp = torch.log_softmax(logits, -1)
        return -sum(lp[i, x].item() for i, x in enumerate(t)) / math.log(2)

    total = {"nowhere": 0.0, "same file, 3 lines above": 0.0, "another file's snippet": 0.0}
    nbytes = 0
    for name in NAMES:
        definition = f"def {name}(item, limit):\n    return item[:limit]\n"
        body, call = "def main(items):\n    result = ", f"{name}(items, 3)"
        prompts = [body, definition + "\n\n" + body,
                   f"<repo_name>pkg<file_sep>pkg/util.py\n{definition}<file_sep>main.py\n" + body]
        for key, prompt in zip(total, prompts, strict=True):
            total[key] += bits(prompt, call)
        nbytes += len(call.encode())
    return {k: round(v / nbytes, 3) for k, v in total.items()}


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from codetune.mini import default_model

    for model_dir in argv or [default_model()]:
        print(model_dir, "bits per byte of the call, its definition:", probe(model_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
