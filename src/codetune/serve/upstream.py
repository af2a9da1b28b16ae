"""`codetune serve --upstream URL`: codetune's API in front of a batching engine.

When one process no longer serves a team, the engine should be one built for it (vLLM with
multi-LoRA, TGI, llama.cpp's server, Ollama). codetune keeps what only it knows: its API
(`suffix`, `/generate`), the API key and limits, the FIM prompt (built from the tokenizer, as
training built it), the stop tokens and where a completion ends (`infer.Finisher`, the
suffix-repetition trimming). It sends the formatted prompt to the upstream's OpenAI-compatible
`POST /v1/completions`, always streaming (so a completion the Finisher ends, or a client that
goes away, stops the upstream's generation too), and passes the pieces on.

Only the tokenizer and FIM tokens are loaded here (`load_front`), never the weights: prompts
are still tokenized locally, for --max-prompt-tokens and to find the hole of a raw FIM prompt.

    request -> Guard (key, size) -> validation -> tokenize (pool) -> slot (--slots: requests
    in flight upstream) -> UpstreamStream: httpx (async) SSE from URL/v1/completions -> Finisher
    -> the client

Failures are answered, never left hanging: an upstream that cannot be reached or answers an
error is a 502 naming it; one that does not answer within --request-timeout a 504 (before the
first byte of a stream; after it, the stream ends with an error event as in local mode).
The prompt is sent as text: the sentinels spelled as the vocabulary spells them
(`serve.app.fim_info`), which Hugging Face tokenizers (vLLM, TGI, codetune) read as the single
FIM tokens. `stop_token_ids` (a vLLM extension, ignored elsewhere) carries the FIM stop ids.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError
from codetune.infer.finish import Finisher
from codetune.infer.loader import Loaded, is_run_dir, run_config, tokenizer_and_fim
from codetune.infer.prompts import prompt_hole, stop_ids
from codetune.serve.app import fim_info
from codetune.serve.engine import Engine
from codetune.serve.limits import ApiError, ServeSettings

# Seconds to wait for a TCP connection to the upstream: a down host fails fast, well inside
# --request-timeout, instead of eating all of it.
CONNECT_TIMEOUT = 5.0


@dataclass
class Upstream:
    """Where generation goes. `model`: the name sent as `model` (vLLM: the LoRA module name);
    None sends the server's --model-name."""

    url: str
    model: str | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise CodetuneError(f"--upstream must be an http(s) URL (got {self.url!r}), e.g. "
                                "http://127.0.0.1:8000 for `vllm serve`")
        self.url = self.url.rstrip("/").removesuffix("/v1")
        try:
            import httpx  # noqa: F401  (optional: httpx, the upstream extra)
        except ImportError:
            raise CodetuneError("--upstream needs httpx: pip install 'codetune[upstream]'") \
                from None

    def engine(self, loaded: Any, settings: ServeSettings) -> UpstreamEngine:
        return UpstreamEngine(loaded, settings, self)


def load_front(target: str) -> Any:
    """A `Loaded` with the tokenizer and FIM tokens of `target` (run folder, model folder or
    Hub id) and no weights: `model` only carries the config (for the context window), read
    from config files where they can be found."""
    tokenizer, fim = tokenizer_and_fim(target)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    name, revision = target, None
    if is_run_dir(target):
        cfg = run_config(target)
        if cfg.model.finetune == "lora":
            name, revision = cfg.model.name, cfg.model.revision
    config = None
    try:
        from transformers import AutoConfig  # heavy: transformers

        config = AutoConfig.from_pretrained(name, revision=revision)
    except (OSError, ValueError):
        pass  # no context window known: --max-prompt-tokens still applies

    run_dir = Path(target) if is_run_dir(target) else None
    return Loaded(types.SimpleNamespace(config=config), tokenizer, fim,
                  f"{target} (tokenizer only)", run_dir)


class UpstreamEngine(Engine):
    """The local Engine's admission, tokenizer pool and counters; generation is an asyncio
    task per request talking to the upstream instead of a worker thread running the model.
    `start` returns a concurrent Future like the local one, so the routes are the same."""

    def __init__(self, loaded: Any, settings: ServeSettings, upstream: Upstream) -> None:
        super().__init__(loaded, settings)
        self.upstream = upstream
        self._http: Any = None
        self._tasks: set[asyncio.Task] = set()

    def client(self) -> Any:
        import httpx  # optional: httpx (the upstream extra)

        if self._http is None:  # created on the serving loop, reused (keep-alive)
            headers = {"Authorization": f"Bearer {self.upstream.api_key}"} \
                if self.upstream.api_key else {}
            limits = httpx.Limits(max_connections=max(self.settings.slots, 1) + 4,
                                  max_keepalive_connections=max(self.settings.slots, 1))
            self._http = httpx.AsyncClient(base_url=self.upstream.url, headers=headers,
                                           limits=limits, timeout=None)
        return self._http

    def stream(self, ids: list[int], params: Any, *, prefix: str | None, suffix: str | None,
               text: str, laid_out: bool = False) -> UpstreamStream:
        return UpstreamStream(self, ids, params, prefix=prefix, suffix=suffix, text=text,
                              laid_out=laid_out)

    def start(self, stream: Any, on_piece: Any = None) -> concurrent.futures.Future:
        loop = asyncio.get_running_loop()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()

        async def work() -> None:
            try:
                async for piece in stream.run():
                    if on_piece is not None:
                        on_piece(piece)
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits on `fut`
                stream.fail(e)
                fut.set_exception(e)
                if isinstance(e, asyncio.CancelledError):
                    raise
            else:
                fut.set_result(stream)

        self.running.add(stream)
        task = loop.create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._release, stream, f))
        return fut

    async def opened(self, stream: UpstreamStream) -> None:
        """Wait until the upstream answered (headers), or raise its error as an ApiError: a
        stream then starts with a 502 / 504 status, not a 200 and an error event."""
        await stream.opened.wait()
        if stream.error is not None and isinstance(stream.error, ApiError):
            raise stream.error


class UpstreamStream:
    """One completion generated upstream, with the interface of `infer.GenerationStream` that
    the routes use: `prompt`, `text`, `finish_reason`, `trimmed_suffix`, `prompt_tokens`,
    `completion_tokens`, and `cancel` / `deadline` set on admission."""

    def __init__(self, engine: UpstreamEngine, ids: list[int], params: Any, *,
                 prefix: str | None, suffix: str | None, text: str,
                 laid_out: bool = False) -> None:
        if not ids:
            raise CodetuneError("the prompt is empty; give some text to complete")
        loaded = engine.loaded
        budget = params.max_new_tokens
        if engine.window is not None:
            if len(ids) >= engine.window:
                raise CodetuneError(f"the prompt is {len(ids)} tokens; this model's context "
                                    f"window is {engine.window} tokens; shorten the "
                                    "prefix/suffix")
            budget = min(budget, engine.window - len(ids))
        self.engine, self.params, self.budget, self.prompt = engine, params, budget, ids
        if laid_out:  # the prompt with repository context, as built here: sent as its text
            bos = loaded.fim.bos_id if loaded.fim is not None else None
            body = ids[1:] if bos is not None and ids[:1] == [bos] else ids
            self.body_prompt = loaded.tokenizer.decode(body, skip_special_tokens=False)
            self.hole = (prefix, suffix)
        elif suffix is not None:  # a FIM request: the family's prompt, in vocabulary spelling
            fi = fim_info(loaded.fim)
            self.body_prompt = f"{fi['prefix']}{prefix}{fi['suffix']}{suffix}{fi['middle']}"
            self.hole: tuple[str | None, str | None] | None = (prefix, suffix)
        else:
            self.body_prompt, self.hole = text, prompt_hole(loaded, ids)
        self.cancel: Any = None
        self.deadline: float | None = None
        self.opened = asyncio.Event()
        self.error: BaseException | None = None
        self.text = ""
        self.finish_reason: str | None = None
        self.trimmed_suffix = False
        self.prompt_tokens = len(ids)
        self.completion_tokens = 0

    def fail(self, e: BaseException) -> None:
        self.error = e
        self.opened.set()

    def _body(self) -> dict[str, Any]:
        p, up = self.params, self.engine.upstream
        body: dict[str, Any] = {
            "model": up.model or self.engine.settings.model_name, "prompt": self.body_prompt,
            "max_tokens": self.budget, "temperature": 0.0 if p.is_greedy else p.temperature,
            "top_p": 1.0 if p.is_greedy else p.top_p, "stream": True,
            "stream_options": {"include_usage": True},
            "stop_token_ids": stop_ids(self.engine.loaded)}
        if not p.is_greedy and p.top_k:
            body["top_k"] = p.top_k
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:  # OpenAI's seed is an int64: the same 64 bits, signed
            body["seed"] = p.seed - (1 << 64) if p.seed >= 1 << 63 else p.seed
        return body

    async def run(self):
        """Yield the completion in pieces (held back where a later token may still cut it)."""
        import httpx  # optional: httpx (the upstream extra)

        fim = self.engine.loaded.fim
        prefix, suffix = self.hole or (None, None)
        # the client's stops, and the FIM tokens should an upstream put them in the text
        stops = tuple(self.params.stop) + (tuple(fim.stop_strings) if fim is not None else ())
        finisher = Finisher(stops, suffix=suffix, prefix=prefix)
        up, timeout = self.engine.upstream, self.engine.settings.request_timeout
        left = (self.deadline or time.monotonic() + timeout) - time.monotonic()
        raw, shown, reason, upstream_reason = "", 0, None, None
        cut: str | None = None
        try:
            async with asyncio.timeout(max(left, 0.001)):
                async with self.engine.client().stream(
                        "POST", "/v1/completions", json=self._body(),
                        timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT)) as resp:
                    if resp.status_code != 200:
                        body = (await resp.aread()).decode("utf-8", "replace")
                        raise ApiError(502, f"the upstream {up.url} answered "
                                       f"{resp.status_code}: {_message(body)}", "upstream_error")
                    self.opened.set()
                    async for line in resp.aiter_lines():
                        if self.cancel is not None and self.cancel.is_set():
                            reason = "cancelled"
                            break
                        data = line[5:].strip() if line.startswith("data:") else None
                        if not data:
                            continue
                        if data == "[DONE]":
                            break
                        event = json.loads(data)
                        if event.get("error"):
                            raise RuntimeError(f"the upstream {up.url} failed mid-stream: "
                                               f"{_message(json.dumps(event))}")
                        if event.get("usage"):
                            self.completion_tokens = event["usage"].get("completion_tokens", 0)
                        for choice in event.get("choices") or []:
                            raw += choice.get("text") or ""
                            upstream_reason = choice.get("finish_reason") or upstream_reason
                        if not event.get("usage"):
                            self.completion_tokens += 1  # a chunk per token, until usage says
                        self.text = raw
                        text, why = finisher.step(raw)
                        if why is not None:  # a stop string, or the suffix starting over
                            cut, reason, self.trimmed_suffix = text, "stop", why == "suffix"
                            break
                        ready = len(raw) - finisher.holdback(raw)
                        if ready > shown:
                            yield raw[shown:ready]
                            shown = ready
        except TimeoutError:
            if not self.opened.is_set():
                raise ApiError(504, f"the upstream {up.url} did not answer within {timeout:g} s "
                               "(--request-timeout)", "timeout") from None
            reason = "timeout"
        except httpx.HTTPError as e:
            what = "cannot be reached" if not self.opened.is_set() else "broke off"
            raise ApiError(502, f"the upstream {up.url} {what} ({type(e).__name__}: "
                           f"{e or 'no detail'}); is it running?", "upstream_error") from None
        finally:
            self.opened.set()
        if cut is None:
            end, why = finisher.finish(raw)
            self.trimmed_suffix = why == "suffix"
            if reason is None:
                reason = "stop" if why else ("length" if upstream_reason == "length" else "stop")
            cut = end
        # never take back what was shown (holdback keeps every cut point after it)
        self.text = cut if len(cut) >= shown else raw[:shown]
        self.finish_reason = reason
        if len(self.text) > shown and reason in ("stop", "length"):
            yield self.text[shown:]


def _message(body: str) -> str:
    """The error message of an OpenAI / TGI error body, else the body's start."""
    try:
        obj = json.loads(body)
    except ValueError:
        return body.strip()[:300] or "(empty body)"
    err = obj.get("error", obj) if isinstance(obj, dict) else obj
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(err)[:300]
