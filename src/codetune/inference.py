"""Loading a model for inference and generating completions: shared by eval, complete, serve.

A *target* is one of
- a run folder written by `codetune train` (base model from its run.json + the adapter; the
  run's tokenizer, which carries any FIM tokens added for training),
- a merged model folder written by `codetune merge` (or any causal LM folder / Hub id / .gguf).

Prompts are built with the same FIM registry as training (`tokens.fim.build_prompt`), and
generation stops at every FIM sentinel, EOS and file separator of the family, so the model
output is only the infill: the prompt is never echoed. Where a completion ends is decided by one
`Finisher` (stop strings, and a middle that starts to repeat the suffix), used token by token by
`TokenStream` (complete, serve) and by `generations` (eval), so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    fim: Any  # FimTokens, or None when the tokenizer has no FIM tokens
    description: str  # one line: what was loaded
    run_dir: Path | None = None  # the run folder, when the target is one
    quantization: str = "none"  # how the weights were loaded: none, 8bit or 4bit


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "run.json").is_file() and (Path(path) / "config.yaml").is_file()


def run_config(run_dir: str | Path):
    from codetune import config

    return config.load(Path(run_dir) / "config.yaml")


def check_run_finished(run_dir: Path, finetune: str) -> None:
    """A run folder holds weights only once training ended: one killed before that has
    run.json and config.yaml but no adapter (and no tokenizer), and loading it would fail
    deep inside transformers with advice that does not apply."""
    weights = (["adapter_model.safetensors", "adapter_model.bin"] if finetune == "lora" else
               ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"])
    if any((run_dir / w).is_file() for w in weights):
        return
    from codetune import checkpoints

    last = checkpoints.latest(run_dir / "checkpoints", quiet=True)
    hint = (f"; its newest checkpoint can be used meanwhile: --model BASE --adapter {last}"
            if last is not None and finetune == "lora" else "")
    raise CodetuneError(f"{run_dir} has no trained weights: its training stopped before the "
                        f"end. Finish it with `codetune train -o {run_dir} --resume`{hint}")


def load(target: str, adapter: str | None = None, quantization: str = "auto",
         dtype: str = "auto", with_adapter: bool = True) -> Loaded:
    """Load `target` (run folder, model folder, Hub id, .gguf) ready for generation.

    `quantization="auto"` loads the weights unquantized where they fit, even for a run trained
    in 4 bits (see `model.inference_quantization`); "none", "8bit", "4bit" force one.
    `with_adapter=False` on a run folder gives its *base* model (with the run's tokenizer, so
    base and fine-tuned see identical token ids): what `eval` compares against."""
    from codetune import model as M
    from codetune.tokens.fim import detect_fim

    run_dir = Path(target) if is_run_dir(target) else None
    if run_dir is not None:
        cfg = run_config(run_dir)
        check_run_finished(run_dir, cfg.model.finetune)
        quant = M.inference_quantization(dataclasses.replace(cfg.model, dtype=dtype),
                                         quantization, cfg.model.quantization)
        model_cfg = dataclasses.replace(cfg.model, quantization=quant, dtype=dtype)
        fmt = cfg.fim.format
        adapter = str(run_dir) if with_adapter and cfg.model.finetune == "lora" else None
        if cfg.model.finetune == "full" and with_adapter:
            model_cfg = dataclasses.replace(model_cfg, name=str(run_dir), revision=None)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(run_dir))  # with any added FIM tokens
    else:
        from codetune.config import ModelConfig

        quant = "none" if quantization == "auto" else quantization
        model_cfg = ModelConfig(name=target, quantization=quant, dtype=dtype)
        fmt = "auto"
        tokenizer = M.load_tokenizer(model_cfg)
    model = M.load_model(model_cfg, tokenizer)
    what = f"{model_cfg.name}"
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        what += f" + adapter {adapter}"
    if quant != "none":
        what += f" ({quant})"
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        fim = detect_fim(tokenizer, fmt)
    except CodetuneError:
        fim = None
    return Loaded(model, tokenizer, fim, what, run_dir, quant)


GREEDY_BELOW = 1e-5
"""Temperatures under this are greedy: logits / 1e-300 overflow to inf (the sampler then saw
inf/nan probabilities), and at 1e-5 a logit gap of 0.001 is already e^100 in favour of the argmax."""


@dataclass
class GenParams:
    """Sampling settings. The defaults are the seed's (temperature 0.2, top-k 50, top-p 0.95,
    128 new tokens); `greedy=True`, or a temperature under `GREEDY_BELOW`, ignores the sampling
    ones."""

    max_new_tokens: int = 128
    temperature: float = 0.2
    top_k: int = 50
    top_p: float = 0.95
    greedy: bool = False
    stop: tuple[str, ...] = ()  # extra stop strings (e.g. "\n" for one-line completion)
    seed: int | None = None

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature < GREEDY_BELOW


def fim_prompt(loaded: Loaded, prefix: str, suffix: str) -> list[int]:
    """Token ids of the FIM prompt (PSM) for this model family."""
    from codetune.tokens.fim import build_prompt

    if loaded.fim is None:
        raise CodetuneError(
            "this model's tokenizer has no Fill-in-the-Middle tokens, so it cannot infill; "
            "give only a prefix (left-to-right completion) or use a FIM-trained model")
    return build_prompt(loaded.tokenizer, loaded.fim, prefix, suffix)


def stop_ids(loaded: Loaded) -> list[int]:
    ids = set(loaded.fim.stop_ids) if loaded.fim is not None else set()
    if loaded.tokenizer.eos_token_id is not None:
        ids.add(loaded.tokenizer.eos_token_id)
    return sorted(ids)


def cut_at_stops(text: str, stops: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


# --------------------------------------------------------------------------- where a completion ends

MIN_REPEAT_CHARS = 8
"""Non-blank characters of the suffix's beginning that the end of a completion must reproduce
before it counts as the suffix starting over (rule 2 of `Finisher`). No common closing token
reaches it (`)`, `]`, `});`, `\"\"\"`, a newline), and a completion ending in one of those
usually closes its own brackets (`print(` + `len(xs)` + suffix `)`), so those are never cut.
8 is about three tokens of code: no coincidence once it also runs to the end of a line."""


class Finisher:
    """Where one completion ends, decided on its text so far (strings only, no model).

    It ends at the earliest of
    - a stop string (cut before it). One-line completion is the stop string "\\n": eval's
      single-line tasks, `complete --stop $'\\n'`, a client's `stop: ["\\n"]`;
    - the suffix starting over. A model that does not emit EOS right after the middle goes on
      with the code after the hole, which an editor would then insert twice. Two signs:
      1. a generated line equals the suffix's first non-blank line, trailing whitespace ignored.
         Its indentation must match as well (the line the hole is on is completed with the
         prefix's last line), so that a nested `}`, `else:` or `return x` inside the middle does
         not match the outer one after the hole. The completion is cut before that line, and
         the blank lines in front of it that the suffix also starts with are dropped.
      2. the text ends with the suffix's beginning reproduced through the end of one of the
         suffix's lines, with at least `MIN_REPEAT_CHARS` non-blank characters (a mid-line
         hole: `foo(a` + `, b)\\n    return x\\n`). That tail is cut. Waiting for a line end keeps
         a middle line that only begins like the suffix's first one (`self.assertEqual(a, 1)`
         above `self.assertEqual(b, 2)`) from being cut while it is being written.
      Both are checked as the text grows, so generation stops there. When it ends anyway (EOS,
      the token budget) the unfinished last line counts as a line for rule 1, and rule 2 takes
      any beginning with `MIN_REPEAT_CHARS` non-blank characters.

    `step(text)` while generating and `finish(text)` at the end return (the completion, why it
    ended: None to go on, "stop", or "suffix" when the suffix rules cut it). `holdback(text)`:
    how many characters at the end a stream must not show yet, since a later token may cut them.
    """

    def __init__(self, stops: tuple[str, ...] | list[str] = (), suffix: str | None = None,
                 prefix: str | None = None) -> None:
        self.stops = tuple(s for s in stops if s)
        self.suffix = suffix = suffix or ""
        self.prefix_line = (prefix or "").rpartition("\n")[2]
        # rule 1: the anchor line (rstripped), the suffix before it, and whether it is the
        # suffix's first line (the rest of the hole's line: compared as it is, no prefix line)
        self.anchor: str | None = None
        self.head, self.anchor_first = "", True
        pos = 0
        while pos <= len(suffix):
            end = suffix.find("\n", pos)
            end = len(suffix) if end < 0 else end
            if suffix[pos:end].strip():
                self.anchor, self.head = suffix[pos:end].rstrip(), suffix[:pos]
                self.anchor_first = pos == 0
                break
            pos = end + 1
        # rule 2: a tail suffix[:k] counts for k >= k_final at the end, for k >= k_line before
        self.k_final: int | None = None
        self.k_line: int | None = None
        seen = 0
        for i, c in enumerate(suffix):
            seen += not c.isspace()
            if seen == MIN_REPEAT_CHARS:
                self.k_final = i + 1
                self.k_line = suffix.find("\n", i) + 1 or len(suffix)
                break

    def step(self, text: str) -> tuple[str, str | None]:
        cut, hit = cut_at_stops(text, self.stops)
        if hit:
            cut, why = self.finish(cut)
            return cut, why or "stop"
        at = self._repeat_at(text, final=False)
        return (text, None) if at is None else (text[:at], "suffix")

    def finish(self, text: str) -> tuple[str, str | None]:
        at = self._repeat_at(text, final=True)
        return (text, None) if at is None else (text[:at], "suffix")

    def holdback(self, text: str) -> int:
        keep = _holdback(text, self.stops)
        if not self.suffix or not text:
            return keep
        # a tail that begins the suffix: rule 2 may still cut it (or rule 1, as blank lines)
        longest = len(self.suffix) if self.k_final is not None else len(self.head)
        k = self._tail_in_suffix(text, longest, 1)
        keep = max(keep, k or 0)
        if self.anchor is not None:  # the unfinished last line, while it may become the anchor
            pos = text.rfind("\n") + 1
            line = self._line(text, pos, len(text))
            if self.anchor.startswith(line) or line.rstrip() == self.anchor:
                keep = max(keep, len(text) - self._before_head(text, pos))
        return keep

    def _repeat_at(self, text: str, final: bool) -> int | None:
        """Where the suffix starts over in `text` (rule 1 or 2, the earlier), or None."""
        cuts = []
        if self.anchor is not None:
            pos = 0
            while True:
                end = text.find("\n", pos)
                if end < 0 and not final:
                    break
                end = len(text) if end < 0 else end
                if self._line(text, pos, end).rstrip() == self.anchor:
                    cuts.append(self._before_head(text, pos))
                    break
                if end == len(text):
                    break
                pos = end + 1
        shortest = self.k_final if final else self.k_line
        if shortest is not None:
            k = self._tail_in_suffix(text, len(self.suffix), shortest)
            if k is not None:
                cuts.append(len(text) - k)
        return min(cuts, default=None)

    def _line(self, text: str, pos: int, end: int) -> str:
        """The generated line text[pos:end] as it stands in the file: the first one continues
        the prefix's last line (unless the anchor is the suffix's first line: see __init__)."""
        if pos == 0 and not self.anchor_first:
            return self.prefix_line + text[:end]
        return text[pos:end]

    def _before_head(self, text: str, pos: int) -> int:
        """`pos` moved back over text the suffix starts with before its anchor line."""
        for k in range(min(len(self.head), pos), 0, -1):
            if text.endswith(self.head[:k], 0, pos):
                return pos - k
        return pos

    def _tail_in_suffix(self, text: str, longest: int, shortest: int) -> int | None:
        """The largest k in [shortest, longest] with text ending in suffix[:k], or None."""
        s, last = self.suffix, text[-1] if text else ""
        for k in range(min(longest, len(s), len(text)), shortest - 1, -1):
            if s[k - 1] == last and text.endswith(s[:k]):
                return k
        return None


def trim_completion(text: str, suffix: str | None = None, prefix: str | None = None,
                    stops: tuple[str, ...] | list[str] = ()) -> tuple[str, bool]:
    """A whole generated text as `Finisher` ends it when it arrives one character at a time:
    (the completion, whether the suffix rules cut it). For tests and for text generated
    elsewhere; generation itself checks token by token and stops there."""
    f = Finisher(stops, suffix, prefix)
    for i in range(1, len(text) + 1):
        cut, why = f.step(text[:i])
        if why is not None:
            return cut, why == "suffix"
    cut, why = f.finish(text)
    return cut, why == "suffix"


def prompt_hole(loaded: Loaded, ids: list[int]) -> tuple[str, str] | None:
    """(prefix, suffix) of a FIM prompt in PSM order, `[BOS] .. [P] prefix [S] suffix [M]`, as
    `fim_prompt` builds and editors that format the prompt themselves send; else None."""
    fim = loaded.fim
    if fim is None or not ids or ids[-1] != fim.middle_id:
        return None
    from codetune.tokens.fim import decode_middle

    ids = list(ids)
    try:
        p = len(ids) - 1 - ids[::-1].index(fim.prefix_id)
        s = ids.index(fim.suffix_id, p)
    except ValueError:
        return None
    # the prefix was encoded alone, the suffix as a continuation (decoded like a middle)
    tok, body = loaded.tokenizer, ids[p + 1:s]
    prefix = tok.decode(body, skip_special_tokens=True)
    if fim.format.sentencepiece_spacing and "\n" not in prefix:
        from codetune.tokens.fim import _encode

        # the decoder drops a leading space; only its last line matters here, so only a
        # one-line prefix needs the check
        if _encode(tok, prefix) != body and _encode(tok, " " + prefix) == body:
            prefix = " " + prefix
    return prefix, decode_middle(tok, fim, ids[s + 1:-1])


def _decode(loaded: Loaded, ids: list[int]) -> str:
    if loaded.fim is not None:
        from codetune.tokens.fim import decode_middle

        return decode_middle(loaded.tokenizer, loaded.fim, ids)
    return loaded.tokenizer.decode(ids, skip_special_tokens=True)


def _finisher(params: GenParams, hole: tuple[str | None, str | None] | None) -> Finisher:
    prefix, suffix = hole or (None, None)
    return Finisher(params.stop, suffix=suffix, prefix=prefix)


class _Ending:
    """One completion in progress: its tokens, their text, and where its `Finisher` ended it.
    `TokenStream` and `generations` both feed it token by token, so they end alike."""

    def __init__(self, loaded: Loaded, finisher: Finisher, stops: set[int]) -> None:
        self.loaded, self.finisher, self.stops = loaded, finisher, stops
        self.tokens: list[int] = []
        self.raw = ""  # the decoded tokens, uncut
        self.text: str | None = None  # the completion, once ended
        self.reason: str | None = None
        self.trimmed_suffix = False

    def push(self, token: int) -> bool:
        """Add one generated token; True once the completion has ended."""
        if self.text is not None:
            return True
        if token in self.stops:
            self.end("stop")
            return True
        self.tokens.append(token)
        self.raw = _decode(self.loaded, self.tokens)
        text, why = self.finisher.step(self.raw)
        if why is not None:
            self.text, self.reason, self.trimmed_suffix = text, "stop", why == "suffix"
            return True
        return False

    def end(self, reason: str) -> None:
        """Generation stopped (`reason`: "stop", "length", "cancelled", "timeout"); a no-op
        once ended. A text that the suffix rules cut after running out of tokens is complete,
        so it reports "stop", not "length"."""
        if self.text is None:
            text, why = self.finisher.finish(self.raw)
            self.text, self.trimmed_suffix = text, why == "suffix"
            self.reason = "stop" if why and reason == "length" else reason


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (stop token, stop string, the suffix starting over) or "length"
    trimmed_suffix: bool  # the middle went on into the suffix and was cut there
    completion_tokens: int


def generate(loaded: Loaded, prompts: list[list[int]], params: GenParams,
             holes: list[tuple[str | None, str | None] | None] | None = None) -> list[str]:
    """The texts of `generations`."""
    return [g.text for g in generations(loaded, prompts, params, holes)]


def generations(loaded: Loaded, prompts: list[list[int]], params: GenParams,
                holes: list[tuple[str | None, str | None] | None] | None = None
                ) -> list[Generation]:
    """Complete a batch of prompts (token ids); only the generated text of each, ended by a
    `Finisher` (stop tokens, stop strings, the suffix starting over). `holes`: the (prefix,
    suffix) of each prompt; by default read back from FIM prompts (`prompt_hole`). Left-padded
    batch, KV cache on; a row that has ended is padded until the whole batch has."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    tok, model = loaded.tokenizer, loaded.model
    if not prompts:
        return []
    holes = holes if holes is not None else [prompt_hole(loaded, p) for p in prompts]
    stops = set(stop_ids(loaded))
    ends = [_Ending(loaded, _finisher(params, h), stops) for h in holes]

    class Ended(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):  # (B, T) -> (B,) bool
            done = [e.push(t) for e, t in zip(ends, input_ids[:, -1].tolist(), strict=True)]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    device = next(model.parameters()).device
    kw: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "eos_token_id": stop_ids(loaded),
                          "pad_token_id": pad, "use_cache": True,
                          "stopping_criteria": StoppingCriteriaList([Ended()])}
    if params.is_greedy:
        kw["do_sample"] = False
    else:
        kw.update(do_sample=True, temperature=params.temperature, top_k=params.top_k,
                  top_p=params.top_p)
        if params.seed is not None:
            torch.manual_seed(params.seed)
    with torch.no_grad():
        model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
    out = []
    for e in ends:
        e.end("length")
        out.append(Generation(e.text or "", e.reason or "length", e.trimmed_suffix,
                              len(e.tokens)))
    return out


def context_window(loaded: Loaded) -> int | None:
    """The model's maximum sequence length in tokens (prompt + generated), from its config."""
    cfg = getattr(loaded.model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
        n = getattr(cfg, key, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def _bos(loaded: Loaded) -> list[int]:
    from codetune.tokens.fim import _auto_bos

    bos = _auto_bos(loaded.tokenizer)
    return [] if bos is None else [bos]


def plain_prompt(loaded: Loaded, text: str) -> list[int]:
    """Left-to-right prompt: `text` taken literally (a "<fim_prefix>" in it stays text), with BOS
    when the tokenizer uses one."""
    ids = loaded.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
    return _bos(loaded) + list(ids)


def raw_prompt(loaded: Loaded, text: str) -> list[int]:
    """A prompt the client formatted itself (llm-vscode, Continue templates send
    "<fim_prefix>...<fim_suffix>...<fim_middle>"): special tokens in `text` ARE recognised."""
    ids = list(loaded.tokenizer.encode(text, add_special_tokens=False))
    bos = _bos(loaded)
    return ids if ids[:1] == bos else bos + ids


def completion_prompt(loaded: Loaded, prefix: str, suffix: str | None) -> tuple[list[int], str]:
    """(prompt ids, mode): a FIM prompt when the model has FIM tokens ("fim"); with no suffix and
    no FIM tokens, plain left-to-right completion of `prefix` ("plain")."""
    if loaded.fim is None and not suffix:
        return plain_prompt(loaded, prefix), "plain"
    return fim_prompt(loaded, prefix, suffix or ""), "fim"


def _holdback(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` must not be shown yet: the longest tail that could
    still grow into a stop string, and an unfinished UTF-8 character (decoded as U+FFFD)."""
    keep = len(text) - len(text.rstrip("\ufffd"))
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = max(keep, k)
                break
    return keep


class TokenStream:
    """Generate for one prompt; iterate to get the text in pieces (never past where it ends).

    After iteration: `text` (the whole completion), `finish_reason` ("stop": a stop token or
    string, or the suffix starting over; "length": max_new_tokens or the context window;
    "cancelled": `cancel` was set; "timeout": `deadline` (time.monotonic()) passed),
    `trimmed_suffix` (the middle went on into the suffix and was cut there: see `Finisher`),
    `prompt_tokens`, `completion_tokens`.

    `prefix` and `suffix`: the hole the prompt is for, which the `Finisher` watches for the
    suffix starting over; by default read back from a FIM prompt (`prompt_hole`). Text that may
    still be cut (the start of a stop string or of the suffix) is held back from the pieces
    until that is decided.

    The prompt plus max_new_tokens is clamped to the context window; a prompt that fills it is a
    CodetuneError. Sampling draws from a per-stream torch.Generator, so a seed reproduces a stream
    even when other threads generate in between.
    """

    def __init__(self, loaded: Loaded, prompt: list[int], params: GenParams, *,
                 cancel: Any = None, deadline: float | None = None, lock: Any = None,
                 prefix: str | None = None, suffix: str | None = None) -> None:
        if not prompt:
            raise CodetuneError("the prompt is empty; give some text to complete")
        window = context_window(loaded)
        budget = params.max_new_tokens
        if window is not None:
            if len(prompt) >= window:
                raise CodetuneError(
                    f"the prompt is {len(prompt)} tokens; this model's context window is {window} "
                    "tokens; shorten the prefix/suffix")
            budget = min(budget, window - len(prompt))
        self.loaded, self.prompt, self.params, self.budget = loaded, prompt, params, budget
        self.cancel, self.deadline, self.lock = cancel, deadline, lock
        self.hole = (prefix, suffix) if suffix is not None else None
        self.text = ""
        self.finish_reason: str | None = None
        self.trimmed_suffix = False
        self.prompt_tokens = len(prompt)
        self.completion_tokens = 0

    def __iter__(self):
        import contextlib
        import time

        import torch

        loaded, params = self.loaded, self.params
        model = loaded.model
        device = getattr(model, "device", None) or next(model.parameters()).device
        hole = self.hole or prompt_hole(loaded, self.prompt)  # here: off the event loop
        ending = _Ending(loaded, _finisher(params, hole), set(stop_ids(loaded)))
        greedy = params.is_greedy
        warp = None if greedy else _warpers(params)
        gen = torch.Generator(device=device)
        if params.seed is not None:
            gen.manual_seed(params.seed)
        else:
            gen.seed()
        lock = self.lock if self.lock is not None else contextlib.nullcontext()
        cache_kw = _cache_name(model)
        ids = torch.tensor([self.prompt], dtype=torch.long, device=device)
        cache, shown, reason = None, 0, "length"
        for _ in range(self.budget):
            if self.cancel is not None and self.cancel.is_set():
                reason = "cancelled"
                break
            if self.deadline is not None and time.monotonic() > self.deadline:
                reason = "timeout"
                break
            with lock, torch.inference_mode():
                out = model(input_ids=ids, use_cache=True, **{cache_kw: cache})
                logits = out.logits[:, -1, :].float()  # (1, vocab)
                cache = getattr(out, cache_kw)
                if greedy:
                    token = int(logits.argmax(-1))
                else:
                    probs = torch.softmax(warp(ids, logits), dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=gen))
            done = ending.push(token)
            self.completion_tokens = len(ending.tokens)
            if done:
                break
            self.text = raw = ending.raw
            ready = len(raw) - ending.finisher.holdback(raw)
            if ready > shown:
                yield raw[shown:ready]
                shown = ready
            ids = torch.tensor([[token]], dtype=torch.long, device=device)
        ending.end(reason)
        text = ending.text or ""
        # never take back what was shown (holdback keeps every cut point after it)
        self.text = text if len(text) >= shown else ending.raw[:shown]
        self.finish_reason, self.trimmed_suffix = ending.reason, ending.trimmed_suffix
        if len(self.text) > shown and self.finish_reason in ("stop", "length"):
            yield self.text[shown:]

    def run(self) -> str:
        """Generate to the end; returns `text`."""
        for _ in self:
            pass
        return self.text


def _cache_name(model: Any) -> str:
    """The KV-cache argument of the model's forward: `cache` in recent transformers (5.2x),
    `past_key_values` before (still accepted there, with a deprecation warning per process)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _warpers(params: GenParams):
    """The sampling warpers in `model.generate`'s order: temperature, top-k, top-p."""
    from transformers import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warp = LogitsProcessorList()
    if params.temperature != 1.0:
        warp.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k and params.top_k > 0:
        warp.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1.0:
        warp.append(TopPLogitsWarper(params.top_p))
    return warp


def load_tokenizer(target: str) -> tuple[Any, Any]:
    """(tokenizer, FimTokens or None) of a target, without loading the weights: a run folder's
    own tokenizer and FIM format, else the model's."""
    from codetune.tokens.fim import detect_fim

    if is_run_dir(target):
        from transformers import AutoTokenizer

        tokenizer, fmt = AutoTokenizer.from_pretrained(str(target)), run_config(target).fim.format
    else:
        from codetune import model as M
        from codetune.config import ModelConfig

        tokenizer, fmt = M.load_tokenizer(ModelConfig(name=target)), "auto"
    try:
        return tokenizer, detect_fim(tokenizer, fmt)
    except CodetuneError:
        return tokenizer, None
