"""What `merge` and `export` check a converted model against its source on: code the run never
trained on, and the model's logits on it.

`probe_texts` picks the texts: the held-out (validation) files of the run's own dataset (found
by run.json, `data.store.run_dataset`, never relative to the current folder), else the built-in
`SNIPPETS`, and says which and, for the snippets, why (the dataset moved, changed, or has no
held-out files). `logits` runs a model on token ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.data import store
from codetune.errors import CodetuneError
from codetune.infer import loader

# Built-in snippets, when no held-out files are at hand (a merged model without its run).
SNIPPETS = [
    "import os\nimport sys\n\n\ndef read_config(path):\n    with open(path) as f:\n"
    "        return [line.strip() for line in f if line.strip()]\n\n\n"
    "def main(argv=None):\n    args = argv or sys.argv[1:]\n    for name in args:\n"
    "        print(name, len(read_config(os.path.join('conf', name))))\n",
    "class Order:\n    def __init__(self, order_id, items):\n        self.order_id = order_id\n"
    "        self.items = list(items)\n\n    def total(self):\n"
    "        return sum(i.price * i.qty for i in self.items)\n",
    "function debounce(fn, ms) {\n  let timer = null;\n  return (...args) => {\n"
    "    clearTimeout(timer);\n    timer = setTimeout(() => fn(...args), ms);\n  };\n}\n",
]


@dataclass
class ProbeTexts:
    texts: list[str]
    held_out: bool  # the run's held-out files (else the built-in SNIPPETS)
    where: str  # in words: "N held-out files of PATH" / "N built-in code snippets{note}"
    why: str = ""  # why not held-out code, one line naming the paths ("" when held out)
    note: str = ""  # " (...)": `why` as `where` says it ("" when held out or without a run)


def probe_texts(run_dir: str | Path | None, n: int, cfg: Any = None) -> ProbeTexts:
    """Up to `n` held-out files of the dataset of the run in `run_dir` (`cfg`: its RunConfig
    if already read), else the built-in snippets; `run_dir` None: a model without a run."""
    snippets = f"{len(SNIPPETS)} built-in code snippets"
    if run_dir is None:
        return ProbeTexts(list(SNIPPETS), False, snippets, "the run has no dataset")
    try:
        typed = (cfg if cfg is not None else loader.run_config(run_dir)).data.dataset
        # the run's own dataset (run.json's path, checked by content hash), never one that
        # happens to sit in the current folder under the name config.yaml gives
        found = store.run_dataset(run_dir, typed)
        rows = store.held_out_files(found.path, n)
        texts = [r["content"] for r in rows if r["content"].strip()]
        if texts:
            return ProbeTexts(texts, True, f"{len(texts)} held-out files of {found.path}")
        why = f"{found.path} has no held-out code"
        note = f" ({why})"
    except (CodetuneError, OSError) as e:  # moved, changed, damaged or without a held-out split
        why = str(e).split("; ")[0]
        note = f" (no held-out files: {why})"
    return ProbeTexts(list(SNIPPETS), False, snippets + note, why, note)


def logits(model: Any, inputs: list[list[int]]) -> list[Any]:
    """float32 logits on the CPU, (T, vocab) per input (a list of token ids)."""
    import torch  # heavy: torch

    device = next(model.parameters()).device
    with torch.no_grad():
        return [model(input_ids=torch.tensor([i], device=device)).logits[0].float().cpu()
                for i in inputs]
