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
(`serve.app.fim_info`), which Hugging Face tokenizers (vLLM, TGI, codetune) and llama.cpp (it
parses special tokens in prompts) read as the single FIM tokens. `stop_token_ids` (a vLLM
extension, ignored elsewhere) carries the FIM stop ids.

At start (`Upstream.check`, from `serve`) the upstream must answer `GET /v1/models`, list the
model sent as `model` (when none is named and it lists one, that one), and, where it offers
`/tokenize` (llama.cpp, vLLM), read each FIM sentinel as the id the front's tokenizer does;
otherwise serving stops with one line naming the URL. Its context per request (llama.cpp's
per-slot `n_ctx`, vLLM's `max_model_len`) caps the front's window, so a prompt that cannot fit
is the front's 400, not the upstream's error relayed as a 502.

llama.cpp's llama-server (its /v1/models says `owned_by: llamacpp`), checked against b11434:
- it ends generation only on end-of-generation tokens (EOS, EOT, FIM pad / repo / file
  separator), not on FIM prefix / suffix / middle, which it drops from the text without a trace,
  and it ignores `stop_token_ids`. It is asked to print codetune's stop tokens
  (`preserved_tokens`) and to stop on their text (`stop`), so it ends where codetune does; the
  text it returns never holds them.
- its default sampler chain applies top-k 40, top-p, min-p 0.05 and only then the temperature;
  a sampled request names transformers' order instead (`samplers`: temperature, top-k, top-p;
  top-k 0 is off). Greedy (temperature 0) is the argmax either way.
- `usage.prompt_tokens` is its own count of the prompt; the front reports the upstream's.
"""

from __future__ import annotations

import asyncio
import json
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codetune.errors import CodetuneError
from codetune.infer.finish import Finisher
from codetune.infer.loader import Loaded, is_run_dir, run_config, tokenizer_and_fim
from codetune.infer.prompts import fim_prompt, prompt_hole, stop_ids
from codetune.serve.app import fim_info
from codetune.serve.engine import Engine
from codetune.serve.limits import ApiError, ServeSettings, max_tokens_per_byte

# Seconds to wait for a TCP connection to the upstream: a down host fails fast, well inside
# --request-timeout, instead of eating all of it.
CONNECT_TIMEOUT = 5.0


@dataclass
class Upstream:
    """Where generation goes. `model`: the name sent as `model` (vLLM: the LoRA module name);
    None sends the server's --model-name (`check` picks the upstream's only model instead).
    `engine_kind` ("llama.cpp" or None) and `window` (tokens per request there) are what
    `check` learned; unchecked (tests), requests are plain OpenAI ones and the model's window holds."""

    url: str
    model: str | None = None
    api_key: str | None = None
    engine_kind: str | None = None
    window: int | None = None

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

    def check(self, loaded: Any, settings: ServeSettings, wait: float = 60.0) -> None:
        """Before serving: the upstream answers, serves the model to send, and tokenizes the
        FIM sentinels as `loaded`'s tokenizer does (see the module doc). Waits up to `wait`
        seconds for one that is still loading its model (HTTP 503). One-line CodetuneErrors."""
        import httpx  # optional: httpx (the upstream extra)

        where = f"--upstream {self.url}"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + wait
        with httpx.Client(base_url=self.url, headers=headers,
                          timeout=httpx.Timeout(30.0, connect=CONNECT_TIMEOUT)) as c:
            while True:
                try:
                    r = c.get("/v1/models")
                except httpx.HTTPError as e:
                    raise CodetuneError(
                        f"{where} does not answer ({type(e).__name__}: {e or 'no detail'}); "
                        "start the engine first (e.g. `llama-server -m MODEL.gguf --port 8080`, "
                        "`vllm serve MODEL`) or fix the address") from None
                if r.status_code != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)  # still loading its model
            if r.status_code in (401, 403):
                raise CodetuneError(f"{where} refused the API key (HTTP {r.status_code}): give "
                                    "its key with --upstream-api-key-env VAR")
            try:
                listed = r.json()["data"] if r.status_code == 200 else None
            except (ValueError, KeyError, TypeError):
                listed = None
            if not isinstance(listed, list) or not listed:
                raise CodetuneError(f"{where} answered GET /v1/models with HTTP "
                                    f"{r.status_code} and no model list ({_message(r.text)}); "
                                    "is it an OpenAI-compatible engine?")
            entry = self._pick(listed, settings.model_name, where)
            if entry.get("owned_by") == "llamacpp":
                self.engine_kind = "llama.cpp"
            n_ctx = (entry.get("meta") or {}).get("n_ctx") or entry.get("max_model_len")
            self.window = n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None
            fim = loaded.fim
            if fim is None:
                return
            for part in ("prefix", "suffix", "middle"):
                text, want = getattr(fim.format, part), getattr(fim, f"{part}_id")
                r = c.post("/tokenize", json={
                    "content": text, "add_special": False, "parse_special": True,  # llama.cpp
                    "model": self.model, "prompt": text, "add_special_tokens": False})  # vLLM
                try:
                    got = r.json().get("tokens") if r.status_code == 200 else None
                except ValueError:
                    got = None
                if not isinstance(got, list):
                    return  # no /tokenize (TGI, Ollama): nothing more to check
                got = [t["id"] if isinstance(t, dict) else t for t in got]
                if got != [want]:
                    raise CodetuneError(
                        f"{where} serves a different model than {_target(loaded)}: it reads "
                        f"the FIM {part} token {text!r} as ids {got}, the front's tokenizer as "
                        f"[{want}]; serve the same model on both sides")

    def _pick(self, listed: list[dict], model_name: str, where: str) -> dict[str, Any]:
        """The /v1/models entry of the model to send (setting `model` when it was not named)."""
        def names(m: dict) -> list[str]:
            return [m.get("id"), *(m.get("aliases") or [])]

        ids = [m.get("id") for m in listed]
        wanted = self.model or model_name
        for m in listed:
            if wanted in names(m):
                self.model = self.model or wanted
                return m
        if self.model is None and len(listed) == 1:  # its one model, whatever it is called
            self.model = ids[0]
            return listed[0]
        raise CodetuneError(f"{where} serves {', '.join(map(repr, ids))}, not {wanted!r}; "
                            "name the one to use with --upstream-model")


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
    `start` returns an asyncio Future (the local one a concurrent one: the routes take either),
    and pieces and the end are handed on on the loop: no thread hops, no self-pipe wake-ups."""

    on_loop = True

    def __init__(self, loaded: Any, settings: ServeSettings, upstream: Upstream) -> None:
        super().__init__(loaded, settings)
        self.upstream = upstream
        self.tokens_per_byte = max_tokens_per_byte(loaded.tokenizer)
        self.fim_text = fim_info(loaded.fim)
        self.stop_ids = stop_ids(loaded)
        if upstream.window is not None and (self.window is None or upstream.window < self.window):
            self.set_window(upstream.window)  # what one request gets there (llama.cpp: a slot)
        self._http: Any = None
        self._tasks: set[asyncio.Task] = set()

    def client(self) -> Any:
        import httpx  # optional: httpx (the upstream extra)

        if self._http is None:  # created on the serving loop, reused (keep-alive)
            headers = {"Authorization": f"Bearer {self.upstream.api_key}"} \
                if self.upstream.api_key else {}
            from codetune.serve.transport import transport  # optional: httpx, as above

            limits = httpx.Limits(max_connections=max(self.settings.slots, 1) + 4,
                                  max_keepalive_connections=max(self.settings.slots, 1))
            self._http = httpx.AsyncClient(base_url=self.upstream.url, headers=headers,
                                           transport=transport(self.upstream.url, limits),
                                           timeout=None)
        return self._http

    async def aclose(self) -> None:
        """Close the connections to the upstream (at shutdown)."""
        if self._http is not None:
            await self._http.aclose()

    def stream(self, ids: list[int], params: Any, *, prefix: str | None, suffix: str | None,
               text: str, laid_out: bool = False) -> UpstreamStream:
        return UpstreamStream(self, ids, params, prefix=prefix, suffix=suffix, text=text,
                              laid_out=laid_out)

    def untokenized(self, prefix: str, suffix: str, params: Any) -> UpstreamStream | None:
        """The stream of a FIM request (no repository context) without tokenizing its prompt
        first, when its size alone proves the count could change nothing: at most
        `max_tokens_per_byte` tokens per UTF-8 byte, plus the sentinels and BOS, is within
        --max-prompt-tokens and leaves the whole budget in the window. Else None (tokenize).
        The prompt is sent as text either way; its token count, for `usage`, is the upstream's
        (or counted here at the end, for one that does not say). Tokenizing takes ~1.4 µs
        per character here (6 ms for a 4 KB prompt), all of it before the upstream could start."""
        if self.tokens_per_byte is None or self.loaded.fim is None:
            return None
        most = self.tokens_per_byte * (len(prefix.encode()) + len(suffix.encode())) + 8
        if most > self.max_prompt or (self.window is not None
                                      and self.window - most < params.max_new_tokens):
            return None
        return UpstreamStream(self, None, params, prefix=prefix, suffix=suffix, text=prefix)

    def start(self, stream: Any, on_piece: Any = None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        async def work() -> None:
            try:
                async for piece in stream.run():
                    if on_piece is not None:
                        on_piece(piece)
            except asyncio.CancelledError as e:
                stream.fail(e)
                fut.cancel()
                raise
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits on `fut`
                stream.fail(e)
                fut.set_exception(e)
            else:
                fut.set_result(stream)

        self.running.add(stream)
        task = loop.create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        fut.add_done_callback(lambda f: self._release(stream, f))
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

    def __init__(self, engine: UpstreamEngine, ids: list[int] | None, params: Any, *,
                 prefix: str | None, suffix: str | None, text: str,
                 laid_out: bool = False) -> None:
        """`ids` None: a FIM prompt not tokenized (`UpstreamEngine.untokenized`)."""
        if ids is not None and not ids:
            raise CodetuneError("the prompt is empty; give some text to complete")
        loaded = engine.loaded
        budget = params.max_new_tokens
        if engine.window is not None and ids is not None:
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
            fi = engine.fim_text
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
        self.prompt_tokens: int | None = None if ids is None else len(ids)
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
            "stop_token_ids": self.engine.stop_ids}
        if not p.is_greedy and p.top_k:
            body["top_k"] = p.top_k
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:  # OpenAI's seed is an int64: the same 64 bits, signed
            body["seed"] = p.seed - (1 << 64) if p.seed >= 1 << 63 else p.seed
        if up.engine_kind == "llama.cpp":  # see the module doc
            del body["stop_token_ids"]
            fim = self.engine.loaded.fim
            ends = [s for s in (fim.stop_strings if fim is not None else ()) if s not in p.stop]
            if ends:
                body["preserved_tokens"] = ends
                body["stop"] = [*p.stop, *ends]
            if not p.is_greedy:
                body["samplers"] = ["temperature", "top_k", "top_p"]
                body["top_k"] = p.top_k
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
        client = self.engine.client()
        # llama-server closes the connection after every streamed answer (b11434): asking for
        # that up front keeps the pool from sending the next request down it as it closes
        headers = {"Connection": "close"} if up.engine_kind == "llama.cpp" else None
        request = client.build_request("POST", "/v1/completions", json=self._body(),
                                       headers=headers,
                                       timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT))
        resp, done = None, False
        try:
            async with asyncio.timeout(max(left, 0.001)) as clock:
                for retry in (False, True):
                    try:
                        resp = await client.send(request, stream=True)
                        break
                    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                        # a kept-alive connection the upstream had just closed: nothing of
                        # this request reached it, so once more on a new connection
                        if retry:
                            raise
                if resp.status_code != 200:
                    body = (await resp.aread()).decode("utf-8", "replace")
                    raise ApiError(502, f"the upstream {up.url} answered "
                                   f"{resp.status_code}: {_message(body)}", "upstream_error")
                self.opened.set()
                # read to the end of the body, [DONE] included: an iterator left unfinished
                # costs the loop a finalizer call (a thread-safe wake-up) per generator layer
                async for line in resp.aiter_lines():
                    if done:
                        continue
                    if self.cancel is not None and self.cancel.is_set():
                        reason = "cancelled"
                        break
                    data = line[5:].strip() if line.startswith("data:") else None
                    if not data:
                        continue
                    if data == "[DONE]":
                        done = True  # the body ends next; an upstream that lingers gets 1 s
                        clock.reschedule(min(clock.when(),
                                             asyncio.get_running_loop().time() + 1.0))
                        continue
                    event = json.loads(data)
                    if event.get("error"):
                        raise RuntimeError(f"the upstream {up.url} failed mid-stream: "
                                           f"{_message(json.dumps(event))}")
                    if event.get("usage"):
                        usage = event["usage"]
                        self.completion_tokens = usage.get("completion_tokens", 0)
                        self.prompt_tokens = usage.get("prompt_tokens") or self.prompt_tokens
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
            if not done:  # (after [DONE]: the body did not end, but the answer is whole)
                reason = "timeout"
        except httpx.HTTPError as e:
            what = "cannot be reached" if not self.opened.is_set() else "broke off"
            raise ApiError(502, f"the upstream {up.url} {what} ({type(e).__name__}: "
                           f"{e or 'no detail'}); is it running?", "upstream_error") from None
        finally:
            self.opened.set()
            if resp is not None:
                await resp.aclose()
        if cut is None:
            end, why = finisher.finish(raw)
            self.trimmed_suffix = why == "suffix"
            if reason is None:
                reason = "stop" if why else ("length" if upstream_reason == "length" else "stop")
            cut = end
        # never take back what was shown (holdback keeps every cut point after it)
        self.text = cut if len(cut) >= shown else raw[:shown]
        if self.prompt_tokens is None and self.hole is not None:  # not tokenized; no usage
            ids = await self.engine.tokenize(
                time.monotonic() + self.engine.settings.request_timeout, fim_prompt, *self.hole)
            self.prompt_tokens = len(ids)
        self.finish_reason = reason
        if len(self.text) > shown and reason in ("stop", "length"):
            yield self.text[shown:]


def _target(loaded: Any) -> str:
    return str(loaded.description).removesuffix(" (tokenizer only)")


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
