#!/usr/bin/env python
"""Build codetune-mini: a small GPT-BigCode code model pretrained on the Python standard library.

    python scripts/build_mini.py --minutes 160            # fresh build (2-core CPU: ~4.5k tok/s)
    python scripts/build_mini.py --minutes 200 --resume   # continue from the last checkpoint

Steps: list the stdlib `.py` library files of the running Python (PSF licence; tests and
site-packages left out of the list), set aside a fixed held-out set (chosen by a hash of each
path, so it depends only on the file list), train an 8k byte-level BPE tokenizer with the
StarCoder specials on the rest; the training text is the rest plus the stdlib's own test suite
(`Lib/test`, ~2x more Python, so that a long run repeats each file fewer times),
pretrain with FIM (rate 0.5, PSM/SPM half each, the reference notebook's token-level permutation from
`codetune.tokens.fim`) on documents packed into 1024-token sequences, then export the weights
(bfloat16 safetensors), tokenizer and generation config into `src/codetune/assets/codetune-mini/`
and measure bits per byte on the held-out files against per-file `lzma -9`, plus codetune's own
eval (exact match on single- and multi-line holes), into MODEL_CARD.md.

Why this size: on a CPU budget a small model learns more per second (the issue's calibration:
6x256 fp32 reached 1.70 bpb after 2M tokens); 4 layers x 256 wide without dropout under bfloat16
autocast runs ~4.5k tokens/s on 2 cores (AVX512-BF16), and stays fast enough for `codetune demo` to
fine-tune and evaluate it in a few minutes. The learning rate follows a cosine over the *time*
budget, so the schedule is the same whether the run is interrupted and resumed or not.

Checkpoints (model, optimizer, data cursor, elapsed time) go to `--work` every few minutes,
written atomically; `--resume` continues from the last one (and `--minutes` may be raised).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import math
import os
import platform
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "codetune" / "assets" / "codetune-mini"
WORK = ROOT / "build" / "mini"

SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
            "<file_sep>", "<repo_name>"]
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
             "turtledemo", "pydoc_data", "encodings"}
MAX_FILE_BYTES = 200_000
N_HELDOUT = 40

MODEL = {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 1024, "vocab_size": 8192}
SEQ_LEN = 1024


# --------------------------------------------------------------------------- data


def stdlib_files() -> tuple[Path, list[str]]:
    """(stdlib root, sorted relative paths of its `.py` sources), tests and vendored packages
    excluded; files over MAX_FILE_BYTES (generated tables) and non-UTF-8 files skipped."""
    root = Path(sysconfig.get_paths()["stdlib"])
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in filenames:
            if not name.endswith(".py"):
                continue
            p = Path(dirpath) / name
            if _usable(p):
                rels.append(p.relative_to(root).as_posix())
    return root, sorted(rels)


def _usable(p: Path) -> bool:
    """Non-empty, at most MAX_FILE_BYTES (larger ones are generated tables), valid UTF-8."""
    if not 0 < p.stat().st_size <= MAX_FILE_BYTES:
        return False
    try:
        p.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return False
    return True


def file_list_hash(rels: list[str]) -> str:
    return hashlib.sha256("\n".join(rels).encode()).hexdigest()


def stdlib_test_files(root: Path) -> list[str]:
    """The `.py` files of the stdlib's own test suite (`Lib/test`, same PSF licence): extra
    training text only. They are not in `stdlib_files()`, so the held-out set, chosen from that
    list, is the same with or without them (and none of its files shares more than a tenth of
    its long lines with them: checked when they were added)."""
    return [p.relative_to(root).as_posix() for p in sorted((root / "test").rglob("*.py"))
            if "__pycache__" not in p.parts and _usable(p)]


def split_heldout(root: Path, rels: list[str]) -> tuple[list[str], list[str]]:
    """A fixed held-out set: the N_HELDOUT files of 1-40 KB with the smallest sha256(path)."""
    def key(r: str) -> str:
        return hashlib.sha256(f"codetune-mini\0{r}".encode()).hexdigest()

    sized = [r for r in rels if 1_000 <= (root / r).stat().st_size <= 40_000]
    held = sorted(sorted(sized, key=key)[:N_HELDOUT])
    hs = set(held)
    return [r for r in rels if r not in hs], held


def lzma_bits(text: str) -> int:
    return 8 * len(lzma.compress(text.encode("utf-8"), preset=9))


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], out: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
        unk_token="<|endoftext|>", pad_token="<|endoftext|>",
        extra_special_tokens=SPECIALS[1:])
    fast.save_pretrained(str(out))


def tokenize_docs(tok, texts: list[str]) -> list[np.ndarray]:
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    return [np.asarray(e, dtype=np.int32) for e in enc]


# --------------------------------------------------------------------------- batches


class Stream:
    """Documents in a seeded order per epoch, FIM-permuted, EOS-terminated, concatenated and cut
    into (B, SEQ_LEN + 1) blocks. State = (epoch, cursor): resuming restarts at the document
    after the last block's (the partial document at a checkpoint is dropped: a few tokens)."""

    def __init__(self, docs: list[np.ndarray], fim, seed: int, epoch: int = 0, cursor: int = 0):
        self.docs, self.fim, self.seed = docs, fim, seed
        self.epoch, self.cursor = epoch, cursor
        self.buf: list[int] = []

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.docs))

    def batch(self, b: int):
        from codetune.tokens.fim import permute

        need = b * (SEQ_LEN + 1)
        order = self._order()
        while len(self.buf) < need:
            if self.cursor >= len(order):
                self.epoch, self.cursor = self.epoch + 1, 0
                order = self._order()
            i = int(order[self.cursor])
            rng = np.random.default_rng([self.seed, self.epoch, self.cursor])
            ids, _ = permute(self.docs[i], rng, self.fim, fim_rate=0.5, spm_rate=0.5)
            self.buf.extend(ids.tolist())
            self.buf.append(self.fim.eos_id)
            self.cursor += 1
        block, self.buf = self.buf[:need], self.buf[need:]
        return np.asarray(block, dtype=np.int64).reshape(b, SEQ_LEN + 1)


# --------------------------------------------------------------------------- evaluation


def bpb_files(model, tok, texts: list[str], device: str, window: int = SEQ_LEN - 1) -> float:
    """Bits per byte over `texts` (sum of bits / sum of bytes), left to right in windows that
    each start after an EOS, exactly as `codetune eval` scores them."""
    import torch

    eos = tok.eos_token_id
    bits = nbytes = 0.0
    model.eval()
    with torch.no_grad():
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            for s in range(0, len(ids), window):
                x = torch.tensor([[eos] + ids[s:s + window]], device=device)
                logits = model(input_ids=x, use_cache=False).logits[0, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum")
                bits += float(nll) / math.log(2)
            nbytes += len(text.encode("utf-8"))
    model.train()
    return bits / nbytes


def per_file_table(model, tok, names: list[str], texts: list[str], device: str) -> list[dict]:
    rows = []
    for name, text in zip(names, texts, strict=True):
        n = len(text.encode("utf-8"))
        rows.append({"path": name, "bytes": n,
                     "model_bpb": round(bpb_files(model, tok, [text], device), 4),
                     "lzma9_bpb": round(lzma_bits(text) / n, 4)})
    return rows


# --------------------------------------------------------------------------- main


def lr_at(frac: float, step: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def save_ckpt(path: Path, state: dict) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=40.0, help="training time budget (total)")
    ap.add_argument("--resume", action="store_true", help="continue from --work/ckpt.pt")
    ap.add_argument("--work", type=Path, default=WORK, help="checkpoints and tokenizer cache")
    ap.add_argument("--out", type=Path, default=OUT, help="where the packaged model goes")
    ap.add_argument("--batch-size", type=int, default=4, help="sequences of 1024 tokens per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export-only", action="store_true", help="export + measure the checkpoint")
    ap.add_argument("--no-tests", action="store_true",
                    help="train on the library files only, without Lib/test")
    ap.add_argument("--no-codetune-eval", action="store_true", help="skip exact-match eval")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoTokenizer, GPTBigCodeConfig, GPTBigCodeForCausalLM

    from codetune.tokens.fim import detect_fim

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    amp = torch.bfloat16 if device == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.work / "ckpt.pt"
    tok_dir = args.work / "tokenizer"

    root, rels = stdlib_files()
    train_rels, held_rels = split_heldout(root, rels)
    texts = {r: (root / r).read_text(encoding="utf-8") for r in rels}
    print(f"stdlib {root}: {len(rels)} files ({sum(map(len, texts.values())) / 1e6:.1f} M chars),"
          f" {len(held_rels)} held out; list hash {file_list_hash(rels)[:12]}", flush=True)

    if not (args.resume or args.export_only) or not (tok_dir / "tokenizer.json").exists():
        t = time.time()
        train_tokenizer([texts[r] for r in train_rels], tok_dir, MODEL["vocab_size"])
        print(f"tokenizer trained in {time.time() - t:.0f}s", flush=True)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    fim = detect_fim(tok, "starcoder")

    cfg = GPTBigCodeConfig(
        n_layer=MODEL["n_layer"], n_embd=MODEL["n_embd"], n_head=MODEL["n_head"],
        n_positions=MODEL["n_positions"], vocab_size=len(tok), multi_query=True,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id, attn_implementation="sdpa",
        # No dropout: the model is far from fitting its data, and on a CPU dropout cost a
        # quarter of every step in random numbers and kept SDPA off its fused kernel (2.25x
        # slower, measured on 2 cores).
        attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    torch.manual_seed(args.seed)
    model = GPTBigCodeForCausalLM(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), fused=False)
    state = {"step": 0, "tokens": 0, "elapsed": 0.0, "epoch": 0, "cursor": 0, "log": []}
    if (args.resume or args.export_only) and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        print(f"resumed at step {state['step']} ({state['tokens'] / 1e6:.2f} M tokens, "
              f"{state['elapsed'] / 60:.1f} min)", flush=True)
    elif args.resume or args.export_only:
        print(f"no checkpoint at {ckpt_path}: starting fresh", flush=True)

    held_texts = [texts[r] for r in held_rels]
    probe = held_texts[:8]  # a quick progress signal at each checkpoint
    probe_lzma = sum(lzma_bits(t) for t in probe) / sum(len(t.encode()) for t in probe)

    if not args.export_only:
        extra = [] if args.no_tests else stdlib_test_files(root)
        docs = tokenize_docs(tok, [texts[r] for r in train_rels]
                             + [(root / r).read_text(encoding="utf-8") for r in extra])
        print(f"training on {len(train_rels)} library files + {len(extra)} Lib/test files",
              flush=True)
        print(f"{sum(len(d) for d in docs) / 1e6:.2f} M training tokens "
              f"; {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, "
              f"device {device}", flush=True)
        state["corpus_tokens"] = sum(len(d) for d in docs)
        state["corpus_files"] = {"library": len(train_rels), "lib_test": len(extra)}
        stream = Stream(docs, fim, args.seed, state["epoch"], state["cursor"])
        budget = args.minutes * 60
        start = time.time() - state["elapsed"]
        last_ckpt = time.time()
        t_log, tok_log = time.time(), state["tokens"]
        model.train()
        while True:
            elapsed = time.time() - start
            if elapsed >= budget:
                break
            lr = lr_at(elapsed / budget, state["step"], args.lr, warmup=50)
            for g in opt.param_groups:
                g["lr"] = lr
            block = torch.from_numpy(stream.batch(args.batch_size)).to(device)
            with torch.autocast(device, dtype=amp):
                logits = model(input_ids=block[:, :-1], use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), block[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            state["step"] += 1
            state["tokens"] += block[:, 1:].numel()
            if state["step"] % 25 == 0:
                rate = (state["tokens"] - tok_log) / (time.time() - t_log)
                t_log, tok_log = time.time(), state["tokens"]
                print(f"step {state['step']} loss {loss.item():.3f} lr {lr:.2e} "
                      f"{state['tokens'] / 1e6:.2f} M tok {rate:.0f} tok/s "
                      f"{elapsed / 60:.1f}/{args.minutes:.0f} min", flush=True)
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                t_eval = time.time()
                state.update(elapsed=t_eval - start, epoch=stream.epoch,
                             cursor=stream.cursor)
                pb = bpb_files(model, tok, probe, device)
                state["log"].append({"step": state["step"], "tokens": state["tokens"],
                                     "minutes": round(state["elapsed"] / 60, 2),
                                     "probe_bpb": round(pb, 4)})
                print(f"checkpoint: probe bpb {pb:.3f} (lzma -9 {probe_lzma:.3f}, ratio "
                      f"{pb / probe_lzma:.3f})", flush=True)
                save_ckpt(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(),
                                      "state": state})
                start += time.time() - t_eval  # the budget counts training time only
                last_ckpt = time.time()
        state.update(elapsed=time.time() - start, epoch=stream.epoch, cursor=stream.cursor)
        save_ckpt(ckpt_path, {"model": model.state_dict(), "opt": opt.state_dict(),
                              "state": state})

    export(model, tok, args, state, root, rels, held_rels, held_texts, device)
    return 0


def export(model, tok, args, state, root, rels, held_rels, held_texts, device) -> None:
    import torch
    from transformers import GenerationConfig

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t = time.time()
    table = per_file_table(model, tok, held_rels, held_texts, device)
    model_bits = sum(r["model_bpb"] * r["bytes"] for r in table)
    lzma_total = sum(r["lzma9_bpb"] * r["bytes"] for r in table)
    nbytes = sum(r["bytes"] for r in table)
    bpb, lz = model_bits / nbytes, lzma_total / nbytes
    print(f"held-out: {bpb:.3f} bpb vs lzma -9 {lz:.3f} (ratio {bpb / lz:.3f}); "
          f"{time.time() - t:.0f}s", flush=True)

    export_model = type(model)(model.config)
    export_model.load_state_dict({k: v.float().cpu() for k, v in model.state_dict().items()})
    export_model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    # No model_max_length: codetune windows long files itself, and transformers would warn about
    # "indexing errors" on every long file it merely tokenizes (n_positions is in config.json).
    tok.model_max_length = int(1e30)
    tok.save_pretrained(str(out))
    stop = [tok.convert_tokens_to_ids(s) for s in SPECIALS]
    GenerationConfig(bos_token_id=tok.eos_token_id, eos_token_id=stop,
                     pad_token_id=tok.eos_token_id, max_new_tokens=128).save_pretrained(str(out))
    py = platform.python_version()
    heldout = {"python_version": py, "stdlib_root": str(root),
               "file_list_sha256": file_list_hash(rels), "n_files": len(rels),
               "heldout": held_rels}
    (out / "heldout.json").write_text(json.dumps(heldout, indent=1) + "\n")

    em = None if args.no_codetune_eval else codetune_eval(out, held_rels, held_texts, args.work)
    size_mb = (out / "model.safetensors").stat().st_size / 1e6
    cpu = platform.processor() or platform.machine()
    hw = (torch.cuda.get_device_name(0) if device == "cuda" else
          f"CPU, {torch.get_num_threads()} threads ({cpu}), bfloat16 autocast")
    metrics = {"heldout_bpb": round(bpb, 4), "lzma9_bpb": round(lz, 4),
               "ratio": round(bpb / lz, 4), "target_ratio": 0.75, "codetune_eval": em,
               "tokens": state["tokens"], "steps": state["step"],
               "minutes": round(state["elapsed"] / 60, 1), "hardware": hw,
               "params": sum(p.numel() for p in model.parameters()), "size_mb": round(size_mb, 2),
               "corpus_tokens": state.get("corpus_tokens"),
               "corpus_files": state.get("corpus_files"), "per_file": table,
               "log": state["log"]}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (out / "MODEL_CARD.md").write_text(model_card(metrics, heldout, model.config))
    print(f"wrote {out} ({size_mb:.1f} MB weights)", flush=True)


def codetune_eval(model_dir: Path, held_rels: list[str], held_texts: list[str],
                  work: Path) -> dict | None:
    """`codetune eval --model DIR --dataset held-out.parquet`: exact match + its bits per byte."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from codetune import config
    from codetune.evaluation.run import evaluate

    pq.write_table(pa.table({"repo_id": ["python-stdlib"] * len(held_rels), "path": held_rels,
                             "content": held_texts}), work / "heldout.parquet")
    cfg = config.load(None, ["eval.prompt_tokens=768", "eval.bpb_window=511",
                             "eval.bootstrap=200"]).eval
    t = time.time()
    r = evaluate(str(model_dir), cfg, work / "eval", dataset=str(work / "heldout.parquet"),
                 progress=False)
    print(f"codetune eval in {time.time() - t:.0f}s", flush=True)
    return {"seconds": round(time.time() - t, 1),
            "metrics": {k: m.to_dict() for k, m in r.metrics.items()}}


def model_card(m: dict, held: dict, cfg) -> str:
    em = m.get("codetune_eval") or {}
    met = em.get("metrics", {}) if isinstance(em, dict) else {}
    return f"""# codetune-mini

A small code model of the StarCoder architecture (GPT-BigCode, multi-query attention), built by
`scripts/build_mini.py` so codetune works offline out of the box: `codetune demo`, and `train` /
`eval` / `complete` / `serve` when no `--model` is given. It is a teaching and testing model, not
a useful assistant: for real work use the recipe `starcoderbase-1b-qlora` (`codetune train starcoderbase-1b-qlora`) on a GPU.

| | |
|---|---|
| architecture | GPT-BigCode, {cfg.n_layer} layers, {cfg.n_embd} wide, {cfg.n_head} heads, \
{cfg.n_positions} positions |
| parameters | {m['params'] / 1e6:.2f} M ({m['size_mb']} MB bfloat16 safetensors) |
| tokenizer | byte-level BPE, {cfg.vocab_size} tokens, `<|endoftext|>`, `<fim_prefix>` \
`<fim_middle>` `<fim_suffix>` `<fim_pad>`, `<file_sep>`, `<repo_name>` |
| data | Python {held['python_version']} standard library `.py` files (PSF licence): \
{held['n_files']} library files (file-list sha256 `{held['file_list_sha256'][:16]}…`), \
{len(held['heldout'])} of them held out, plus {_n_test_files(m)} files of its own test suite \
(`Lib/test`, training only); {(m.get('corpus_tokens') or 0) / 1e6:.2f} M tokens |
| objective | next token, FIM rate 0.5 (PSM/SPM half each, StarCoder format), 1024-token \
packed sequences |
| training | {m['tokens'] / 1e6:.2f} M tokens ({m['tokens'] / max(m.get('corpus_tokens') or 1, 1):.1f} \
epochs), {m['steps']} steps of 4 x 1024 tokens, {m['minutes']} min on {m['hardware']}: \
{m['tokens'] / max(m['minutes'], 1e-9) / 60:.0f} tokens/s on average (the progress table \
below shows the rate over time) |
| held-out | {len(held['heldout'])} files listed in `heldout.json`, never trained on |

## Held-out quality

| metric | value |
|---|---|
| bits per byte (left to right, 1023-token windows) | **{m['heldout_bpb']:.3f}** |
| per-file `lzma -9` bits per byte, same files | {m['lzma9_bpb']:.3f} |
| ratio model / lzma | **{m['ratio']:.3f}** (target ≤ {m['target_ratio']}) |
{_em_rows(met)}
{_target_paragraph(m)}

## Progress during training (bits per byte on 8 held-out files)

| step | tokens | minutes | bpb |
|---|---|---|---|
""" + "".join(f"| {r['step']} | {r['tokens'] / 1e6:.2f} M | {r['minutes']} | {r['probe_bpb']} |\n"
              for r in m["log"]) + """
Rebuild: `python scripts/build_mini.py --minutes 160` (add `--resume` to continue). Measured
numbers are in `metrics.json`.
"""


def _n_test_files(m: dict) -> int:
    return (m.get("corpus_files") or {}).get("lib_test", 0)


def _target_paragraph(m: dict) -> str:
    """Whether the 0.75 x lzma target is met; if not, how far off, from this run's own log."""
    if m["ratio"] <= m["target_ratio"]:
        return (f"The {m['target_ratio']} × lzma target is met: {m['heldout_bpb']:.3f} bits per "
                f"byte against {m['target_ratio'] * m['lzma9_bpb']:.3f} allowed. More compute "
                "keeps improving it (`--resume` with a larger `--minutes`; minutes on a GPU).")
    log = [r for r in m["log"] if r["tokens"] > 0]
    slope = ""
    if len(log) >= 2 and log[-1]["tokens"] > log[0]["tokens"]:
        per_doubling = ((log[0]["probe_bpb"] - log[-1]["probe_bpb"])
                        / math.log2(log[-1]["tokens"] / log[0]["tokens"]))
        slope = (f" This run's log gains about {per_doubling:.2f} bits per byte per doubling "
                 "of training tokens, which sets how much more compute the target needs.")
    return (f"The {m['target_ratio']} × lzma target is NOT met at this training budget: "
            f"{m['heldout_bpb']:.3f} bits per byte against {m['target_ratio'] * m['lzma9_bpb']:.3f} "
            f"allowed.{slope} Continue with `python scripts/build_mini.py --resume --minutes N` "
            "(minutes on a GPU).")


def _em_rows(met: dict) -> str:
    rows = ""
    for key, label in (("single_line_exact_match", "single-line exact match"),
                       ("multi_line_exact_match", "multi-line exact match"),
                       ("single_line_edit_similarity", "single-line edit similarity"),
                       ("multi_line_edit_similarity", "multi-line edit similarity")):
        v = _find(met, key)
        if isinstance(v, dict):
            n, v = v.get("n"), v.get("model", v.get("tuned"))
            label += f", {n} holes"
        if isinstance(v, float):
            rows += f"| {label} (codetune eval) | {v:.3f} |\n"
    return rows


def _find(met: dict, key: str):
    """Best-effort lookup of a metric in codetune eval's summary."""
    if not isinstance(met, dict):
        return None
    kind, _, name = key.partition("_line_")
    kind += "_line"
    for k in (key, f"{kind}.{name}"):
        if k in met:
            return met[k]
    sub = met.get(kind) or met.get(name)
    if isinstance(sub, dict):
        for k in (name, kind):
            if k in sub:
                return sub[k]
    return None


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
