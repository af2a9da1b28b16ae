"""`codetune serve`: a local completion server for editors and the OpenAI client.

    POST /v1/completions   OpenAI legacy completions: prompt (+ suffix = FIM), max_tokens,
                           temperature, top_p, top_k, stop, seed, stream (SSE)
    POST /generate         TGI / llm-ls: {"inputs", "parameters"} -> {"generated_text"}
    POST /infill           llama.cpp / llama.vscode: input_prefix, input_suffix, input_extra
                           [{filename, text}], prompt, n_predict, ... -> {"content"}
    GET  /v1/models        the one model served (with its FIM tokens, for `editor-config`)
    GET  /health           liveness and load; the only route without the API key

Prompts: with `suffix`, the server builds the family's FIM prompt from prompt (the prefix) and
suffix, exactly as in training. Without it the prompt is tokenized as given, special tokens
recognised, so editors that format FIM themselves ("<fim_prefix>...<fim_middle>") work.

Repository context (`serve/context.py`; off with --context-tokens 0): FIM requests get snippets
of other files of the repository in front of the prompt, as in repo-mode training; `path`
(an extension field of /v1/completions) names the file being completed. The answer lists the
files used (`codetune.context` in /v1/completions, `context` in /infill and /generate).

Sampling fields, validated by one function for both routes (`_gen_params`): max_tokens /
max_new_tokens an integer >= 1; temperature a number in [0, 2], under 1e-5 greedy (0: greedy);
top_p in (0, 1]; top_k an integer >= 0 (0, or vLLM's -1: off); seed an integer in
[-2**63, 2**64) (OpenAI's int64 and TGI's u64; a negative seed is taken as its 64-bit two's
complement, -1 as 2**64 - 1); NaN and infinity (JSON `NaN`, `Infinity`) are rejected everywhere.
Unsupported options are rejected with a 400 naming the field rather than ignored: OpenAI's
logprobs, best_of, logit_bias, presence_penalty, frequency_penalty, n, echo and TGI's best_of,
repetition_penalty, frequency_penalty, typical_p, top_n_tokens, truncate, details,
decoder_input_details, watermark, grammar are accepted only with the value that changes nothing
(null, or n=1, best_of=1, echo=false, penalties 0, logit_bias {}, repetition_penalty 1, ...: what
clients send when the caller did not ask for the feature). `user` and unknown fields are ignored.

Limits and status codes (each a flag of `codetune serve`):
  401  API key missing or wrong (bearer). Required to bind a non-loopback address.
  413  body over --max-body-bytes (default 1 MiB).   415  body not application/json.
  400  malformed JSON, wrong types or ranges, unsupported options, a prompt over
       --max-prompt-tokens (default: the context window minus one): rejected, never truncated,
       since cutting a FIM prompt would corrupt it. max_tokens is clamped to --max-tokens
       (default 512) and to what the context window leaves (finish_reason "length").
  429  all --slots generating and --queue waiting (Retry-After: 1).
  503  shutting down, or waited (to be tokenized or for a slot) past --request-timeout.
  504  generation ran past --request-timeout (streams end with an error event instead).
A stream that fails after its first byte ends with an error event, {"error": {"code": 504 or
500, ...}}, then [DONE]; every validation error comes before the stream starts, as a 4xx.
A client that disconnects stops its generation at the next token and frees its slot. Prompts
and completions are not logged unless --log-prompts.

Concurrency: the event loop only parses, checks and routes, so /health answers under any load.
Prompts are tokenized in a pool of their own (`TOKENIZER_THREADS`; a 1 MB prompt takes ~1.5 s
of CPU), and a prompt whose character count alone proves it is over --max-prompt-tokens is
refused before that (`max_chars_per_token`). One model; each slot runs in a worker thread and
the forward passes of all slots are serialised by one lock, interleaving token by token. That
bounds memory and latency, not throughput: for many users serve with vLLM (see the README).
"""


import asyncio
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from codetune.errors import CodetuneError
from codetune.infer import prompts as P
from codetune.infer.generate import GenerationStream
from codetune.serve.context import Hole, parse_repo_prompt
from codetune.serve.engine import Engine
from codetune.serve.limits import (
    ApiError,
    ServeSettings,
    error_body,
    gen_params,
    reject_unsupported,
)

log = logging.getLogger("codetune.serve")


# Options that would change the answer, each with the values that change nothing (accepted:
# clients send them when the caller did not ask for the feature); null is always accepted.
# Anything else of these is a 400 naming the field, rather than silently ignored.
UNSUPPORTED_OPENAI: dict[str, tuple[Any, ...]] = {
    "n": (1,), "best_of": (1,), "echo": (False,), "logprobs": (), "logit_bias": ({},),
    "presence_penalty": (0,), "frequency_penalty": (0,)}


# llama.cpp's infill options that would change the answer (llama.vscode's cache_prompt,
# samplers, t_max_*_ms, n_indent, response_fields, ... only tune speed or the reply: ignored).
UNSUPPORTED_INFILL: dict[str, tuple[Any, ...]] = {
    "n_probs": (0,), "grammar": ("",), "json_schema": ({},), "repeat_penalty": (1, 1.0),
    "presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ([], {})}


UNSUPPORTED_TGI: dict[str, tuple[Any, ...]] = {
    "best_of": (1,), "repetition_penalty": (1,), "frequency_penalty": (0,), "typical_p": (),
    "top_n_tokens": (0,), "truncate": (), "details": (False,), "decoder_input_details": (False,),
    "watermark": (False,), "grammar": ()}


def _schemas():
    from pydantic import BaseModel, ConfigDict, Field  # heavy: pydantic (~0.1 s)

    # strict: no "5" for 5; no NaN / Infinity (JSON literals pydantic would otherwise accept);
    # extra fields kept, for `_reject_unsupported`. Ranges are checked by `_gen_params`.
    strict = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)

    class Completions(BaseModel):
        model_config = strict
        model: str | None = None
        prompt: str | list[str]
        suffix: str | None = None
        max_tokens: int | None = None
        temperature: float | None = None
        top_p: float | None = None
        top_k: int | None = None  # vLLM's extension; 0 or -1: off
        stop: str | list[str] | None = None
        seed: int | None = None
        stream: bool = False
        stream_options: dict[str, Any] | None = None

    class Parameters(BaseModel):
        model_config = strict
        max_new_tokens: int | None = None
        temperature: float | None = None
        top_p: float | None = None
        top_k: int | None = None
        stop: str | list[str] | None = None
        do_sample: bool | None = None
        seed: int | None = None
        return_full_text: bool | None = None

    class Generate(BaseModel):
        model_config = strict
        inputs: str
        parameters: Parameters = Field(default_factory=Parameters)
        stream: bool = False

    class Extra(BaseModel):
        model_config = ConfigDict(strict=True, extra="ignore")
        filename: str = ""
        text: str = ""

    class Infill(BaseModel):
        model_config = strict
        input_prefix: str = ""
        input_suffix: str = ""
        input_extra: list[Extra] = Field(default_factory=list)
        prompt: str = ""
        n_predict: int | None = None  # -1: until a stop (here: --max-tokens)
        temperature: float | None = None
        top_p: float | None = None
        top_k: int | None = None
        stop: str | list[str] | None = None
        seed: int | None = None
        stream: bool = False

    return Completions, Generate, Infill


async def _parse(request: Any, schema: Any) -> Any:
    from pydantic import ValidationError  # heavy: pydantic (~0.1 s)

    try:
        return schema.model_validate_json(await request.body())
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"]]  # ("prompt", "str") for a union member: keep the field
        where = ".".join(loc[:2] if loc[:1] == ["parameters"] else loc[:1])
        raise ApiError(400, f"{where + ': ' if where else ''}{err['msg']}") from None


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def fim_info(fim: Any) -> dict[str, Any] | None:
    """The FIM sentinels as prompt text for editors that format the prompt themselves: the
    vocabulary strings (each encodes to its one token). SentencePiece families (CodeLlama) get
    a space after the prefix sentinel, their reference layout "<PRE> {prefix} <SUF>{suffix} <MID>",
    so the prefix is encoded with its leading "▁" as in training."""
    if fim is None:
        return None
    f = fim.format
    repo = fim.file_sep_id is not None  # the family's repository layout (tokens.fim)
    return {"family": f.family, "prefix": f.prefix + (" " if f.sentencepiece_spacing else ""),
            "suffix": f.suffix, "middle": f.middle, "stop": list(fim.stop_strings),
            "file_sep": f.file_sep if repo else None,
            "repo_name": f.repo_name if repo and fim.repo_name_id is not None else None,
            "repo_name_newline": f.repo_name_newline, "path_in_prefix": f.path_in_fim_prefix}


def create_app(loaded: Any, settings: ServeSettings | None = None, upstream: Any = None,
               context: Any = None):
    """The FastAPI app serving `loaded` (from `inference.load`). Tests run it with uvicorn on
    an ephemeral port (`BackgroundServer`). With `upstream` (`serve.upstream.Upstream`) the
    generation runs on that server and `loaded` needs no weights (`upstream.load_front`). With
    `context` (`serve.context.ServeContext`) FIM prompts get repository context."""
    # (no `from __future__ import annotations` in this module: FastAPI reads the handlers'
    # annotations, and `Request` is imported here, not at module level)
    from fastapi import FastAPI, Request  # heavy: fastapi
    from fastapi.responses import JSONResponse, StreamingResponse  # heavy: fastapi
    from starlette.exceptions import HTTPException  # heavy: starlette (fastapi)

    settings = settings or ServeSettings()
    engine = Engine(loaded, settings) if upstream is None else upstream.engine(loaded, settings)
    Completions, Generate, Infill = _schemas()
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        if context is not None:
            context.start()
        yield
        if context is not None:
            context.stop()
        engine.closing = True
        for stream in list(engine.running):
            stream.cancel.set()
        engine.pool.shutdown(wait=False, cancel_futures=True)
        engine.tokenizers.shutdown(wait=False, cancel_futures=True)
        if upstream is not None:
            await engine.aclose()

    app = FastAPI(title="codetune", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.engine = engine
    app.add_middleware(Guard, settings=settings)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return JSONResponse(error_body(request.url.path, e.status, e.message, e.kind),
                            e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException):
        return JSONResponse(error_body(request.url.path, e.status_code, str(e.detail),
                                       "invalid_request_error"), e.status_code)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        log.exception("request failed")
        return JSONResponse(error_body(request.url.path, 500, "internal error (see the server "
                                       "log)", "server_error"), 500)

    def fim_with_context(mine: Any, hole: Any) -> tuple[list[int], list[str], Any]:
        if context is None or mine.fim is None:
            return P.fim_prompt(mine, hole.prefix, hole.suffix), [], None
        ids, paths = context.prompt(mine, hole, engine.max_prompt)
        return ids, paths, hole

    def raw_with_context(mine: Any, text: str) -> tuple[list[int], list[str], Any]:
        ids = P.raw_prompt(mine, text)
        hole = parse_repo_prompt(mine, ids) if context is not None else None
        if hole is None:  # file-level, or already with context: as given
            return ids, [], None
        ids, paths = context.prompt(mine, hole, engine.max_prompt)
        return ids, paths, hole

    async def tokenized(deadline: float, text: str, suffix: str | None = None,
                        path: str | None = None, extra: list | None = None
                        ) -> tuple[list[int], list[str], Any]:
        """(ids, context paths, the hole when context was added) of the prompt, built in the
        tokenizer pool: the FIM prompt of prefix `text` and `suffix` (with repository
        context), or, without a suffix, `text` as the client formatted it."""
        engine.check_chars(len(text) + len(suffix or "") +
                           sum(len(t) for _, t in extra or ()))
        try:
            if suffix is None:
                return await engine.tokenize(deadline, raw_with_context, text)
            return await engine.tokenize(deadline, fim_with_context,
                                         Hole(text, suffix, path, None, list(extra or ())))
        except CodetuneError as e:  # no FIM tokens
            raise ApiError(400, f"suffix given, but {e}") from None
        except ValueError as e:  # the tokenizer refuses the text (CodeLlama: two <FILL_ME>)
            raise ApiError(400, f"the prompt cannot be tokenized: {e}") from None

    def prepare(ids: list[int], params: Any, prefix: str | None = None,
                suffix: str | None = None, text: str = "", laid_out: bool = False) -> Any:
        # prefix / suffix: a FIM request's own text, for the Finisher's suffix check (a raw
        # prompt's hole, None here, is read back from the prompt in the worker thread)
        if len(ids) > engine.max_prompt:
            raise ApiError(400, f"the prompt is {len(ids)} tokens; this server accepts at most "
                           f"{engine.max_prompt} (--max-prompt-tokens)", "context_length_exceeded")
        try:
            if upstream is not None:  # `text`: the raw prompt as the client sent it
                return engine.stream(ids, params, prefix=prefix, suffix=suffix, text=text,
                                     laid_out=laid_out)
            return GenerationStream(loaded, ids, params, lock=engine.lock, prefix=prefix, suffix=suffix)
        except CodetuneError as e:  # an empty prompt, or one that fills the context window
            raise ApiError(400, str(e)) from None

    def untokenized(prefix: str, suffix: str | None, params: Any) -> Any:
        """Through an upstream, a FIM request's stream built without tokenizing its prompt
        first, where its size proves the count could change nothing
        (`UpstreamEngine.untokenized`); None: tokenize (`tokenized`, `prepare`)."""
        if upstream is None or suffix is None or context is not None or settings.log_prompts:
            return None
        return engine.untokenized(prefix, suffix, params)

    async def admit(request: Request, stream: Any, deadline: float) -> threading.Event:
        await engine.acquire(deadline, request.is_disconnected)
        stream.cancel, stream.deadline = threading.Event(), deadline
        return stream.cancel

    async def run_to_end(request: Request, stream: Any, route: str, deadline: float) -> Any:
        cancel = await admit(request, stream, deadline)
        t0 = time.monotonic()
        fut = asyncio.wrap_future(engine.start(stream))
        try:
            while not fut.done():
                await asyncio.wait({fut}, timeout=0.2)
                if not fut.done() and await request.is_disconnected():
                    cancel.set()  # the worker stops at its next token
        finally:
            if not fut.done():
                cancel.set()
        fut.result()
        _log(route, stream, t0)
        if stream.finish_reason == "timeout":
            raise ApiError(504, f"generation ran past {settings.request_timeout:g} s "
                           "(--request-timeout)", "timeout")
        return stream

    async def start_streaming(request: Request, stream: Any, deadline: float
                              ) -> tuple[threading.Event, asyncio.Queue, Any]:
        """Admit `stream` and start it: (cancel event, queue of text pieces ending with None,
        the generation's future). Through an upstream, its error status comes first: a
        502/504, not an event."""
        cancel = await admit(request, stream, deadline)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        # from a worker thread thread-safely; an engine on this loop (upstream) needs no wake-up
        post = loop.call_soon if engine.on_loop else loop.call_soon_threadsafe
        fut = engine.start(stream, lambda p: post(pieces.put_nowait, p))
        fut.add_done_callback(lambda f: post(pieces.put_nowait, None))
        if upstream is not None:
            await engine.opened(stream)
        return cancel, pieces, fut

    def _log(route: str, stream: Any, t0: float) -> None:
        log.info("%s prompt=%s completion=%d finish=%s %.2fs", route, stream.prompt_tokens,
                 stream.completion_tokens, stream.finish_reason, time.monotonic() - t0)
        if settings.log_prompts:
            log.info("prompt=%r completion=%r", loaded.tokenizer.decode(stream.prompt),
                     stream.text)

    @app.get("/health")
    async def health():
        return JSONResponse(engine.health(), 503 if engine.closing else 200)

    @app.get("/v1/models")
    async def models():
        stops = [loaded.tokenizer.decode([i]) for i in P.stop_ids(loaded)]
        return {"object": "list", "data": [{
            "id": settings.model_name, "object": "model", "created": created,
            "owned_by": "codetune", "max_model_len": engine.window,
            "codetune": {"fim": fim_info(loaded.fim), "stop": stops,
                         "max_prompt_tokens": engine.max_prompt, "max_tokens": settings.max_tokens}}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        deadline = time.monotonic() + settings.request_timeout
        body = await _parse(request, Completions)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise ApiError(400, "one prompt per request (send several requests)")
        reject_unsupported(body.model_extra, UNSUPPORTED_OPENAI)
        params = gen_params(settings, body.max_tokens, body.temperature, body.top_p, body.top_k,
                             body.stop, body.seed)
        path = body.model_extra.get("path") if body.model_extra else None
        if path is not None and not isinstance(path, str):
            raise ApiError(400, "path: the file being completed, as a string")
        stream, paths = untokenized(prompts[0], body.suffix, params), []
        if stream is None:
            ids, paths, hole = await tokenized(deadline, prompts[0], body.suffix, path)
            fim = body.suffix is not None
            if hole is not None:  # repository context was added: the hole it was built around
                stream = prepare(ids, params, hole.prefix, hole.suffix, prompts[0], laid_out=True)
            else:
                stream = prepare(ids, params, prompts[0] if fim else None, body.suffix,
                                 prompts[0])
        rid, model = f"cmpl-{uuid.uuid4().hex}", settings.model_name

        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            return {"id": rid, "object": "text_completion", "created": int(time.time()),
                    "model": model, "choices": [{"text": text, "index": 0, "logprobs": None,
                                                 "finish_reason": finish}]}

        def usage() -> dict[str, int]:
            return {"prompt_tokens": stream.prompt_tokens,
                    "completion_tokens": stream.completion_tokens,
                    "total_tokens": stream.prompt_tokens + stream.completion_tokens}

        info = {"codetune": {"context": paths}}
        if not body.stream:
            await run_to_end(request, stream, "/v1/completions", deadline)
            return {**chunk(stream.text, stream.finish_reason), "usage": usage(), **info}
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        cancel, pieces, fut = await start_streaming(request, stream, deadline)
        t0 = time.monotonic()

        async def events():
            # The status line (200) is sent with the first byte: from here on a failure can only
            # be an error event, never a status code or a traceback.
            try:
                while (piece := await pieces.get()) is not None:
                    yield _sse(chunk(piece, None))
                _log("/v1/completions (stream)", stream, t0)
                error = fut.exception() if not fut.cancelled() else None
                if fut.cancelled() or error is not None:
                    if error is not None:
                        log.error("generation failed", exc_info=error)
                    yield _sse(error_body("", 500, "generation failed (see the server log)",
                                          "server_error"))
                elif stream.finish_reason == "timeout":
                    yield _sse(error_body("", 504, f"generation ran past "
                                          f"{settings.request_timeout:g} s (--request-timeout)",
                                          "timeout"))
                else:
                    yield _sse({**chunk("", stream.finish_reason), **info})
                    if include_usage:
                        yield _sse({**chunk("", None), "choices": [], "usage": usage()})
                yield "data: [DONE]\n\n"
            except Exception:
                log.exception("stream failed")
                yield _sse(error_body("", 500, "internal error (see the server log)",
                                      "server_error"))
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()  # the client went away (or we are done): stop generating

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.post("/generate")
    async def generate(request: Request):
        deadline = time.monotonic() + settings.request_timeout
        body = await _parse(request, Generate)
        if body.stream:
            raise ApiError(400, "stream is not supported on /generate; use /v1/completions")
        p = body.parameters
        reject_unsupported(p.model_extra, UNSUPPORTED_TGI, "parameters.")
        params = gen_params(settings, p.max_new_tokens, p.temperature, p.top_p, p.top_k, p.stop,
                             p.seed, p.do_sample, tgi=True)
        ids, paths, hole = await tokenized(deadline, body.inputs)
        if hole is not None:
            stream = prepare(ids, params, hole.prefix, hole.suffix, body.inputs, laid_out=True)
        else:
            stream = prepare(ids, params, text=body.inputs)
        await run_to_end(request, stream, "/generate", deadline)
        text = body.inputs + stream.text if p.return_full_text else stream.text
        return {"generated_text": text, **({"context": paths} if paths else {})}

    @app.post("/infill")
    async def infill(request: Request):
        """llama.cpp's infill API (llama.vscode, llama.vim): the prompt is built here, with the
        client's `input_extra` chunks and retrieved ones as repository context."""
        deadline = time.monotonic() + settings.request_timeout
        body = await _parse(request, Infill)
        reject_unsupported(body.model_extra, UNSUPPORTED_INFILL)
        n = body.n_predict if body.n_predict is not None and body.n_predict >= 0 else None
        params = gen_params(settings, n, body.temperature, body.top_p, body.top_k, body.stop,
                            body.seed)
        prefix = body.input_prefix + body.prompt  # llama.cpp: `prompt` follows the prefix
        extra = [(e.filename, e.text) for e in body.input_extra]
        stream, paths = untokenized(prefix, body.input_suffix, params), []
        if stream is None:
            ids, paths, _ = await tokenized(deadline, prefix, body.input_suffix, None, extra)
            stream = prepare(ids, params, prefix, body.input_suffix, prefix,
                             laid_out=bool(paths))

        def answer(content: str, done: bool) -> dict[str, Any]:
            out: dict[str, Any] = {"content": content, "stop": done}
            if done:
                out.update(tokens_predicted=stream.completion_tokens,
                           tokens_evaluated=stream.prompt_tokens, truncated=False,
                           stop_type="limit" if stream.finish_reason == "length" else "eos",
                           context=paths)
            return out

        if not body.stream:
            await run_to_end(request, stream, "/infill", deadline)
            return answer(stream.text, True)
        cancel, pieces, fut = await start_streaming(request, stream, deadline)

        async def events():
            try:
                while (piece := await pieces.get()) is not None:
                    yield _sse(answer(piece, False))
                failed = fut.cancelled() or fut.exception() is not None
                if failed or stream.finish_reason == "timeout":
                    code = 504 if not failed else 500
                    yield _sse(error_body("", code, "generation failed or timed out",
                                          "server_error"))
                else:
                    yield _sse(answer("", True))
            except Exception:
                log.exception("stream failed")
                yield _sse(error_body("", 500, "internal error (see the server log)",
                                      "server_error"))
            finally:
                cancel.set()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    return app


class Guard:
    """ASGI middleware in front of every route: API key (all but /health), JSON content type
    and the body size limit, answered before the body is parsed or a slot is taken."""

    def __init__(self, app: Any, settings: ServeSettings) -> None:
        self.app, self.settings = app, settings
        self.key = settings.api_key.encode() if settings.api_key else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.key is not None and path != "/health":
            auth = headers.get("authorization", "")
            given = auth[7:].strip().encode() if auth.lower().startswith("bearer ") else b""
            if not hmac.compare_digest(given, self.key):
                return await self._reply(send, path, 401, "missing or wrong API key: send "
                                         "'Authorization: Bearer <key>'", "authentication_error",
                                         {"WWW-Authenticate": "Bearer"})
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            # also keeps web pages from posting here (a JSON POST needs a CORS preflight)
            return await self._reply(send, path, 415, "send the body as application/json",
                                     "invalid_request_error")
        limit = self.settings.max_body_bytes
        too_big = (413, f"request body over {limit} bytes (--max-body-bytes)",
                   "invalid_request_error")
        if int(headers.get("content-length", "0") or 0) > limit:
            return await self._reply(send, path, *too_big)
        body, more = bytearray(), True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > limit:
                return await self._reply(send, path, *too_big)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # then the disconnect, for streaming and cancellation

        await self.app(scope, replay, send)

    @staticmethod
    async def _reply(send: Any, path: str, status: int, message: str, kind: str,
                     headers: dict[str, str] | None = None) -> None:
        data = json.dumps(error_body(path, status, message, kind)).encode()
        raw = [(b"content-type", b"application/json"),
               (b"content-length", str(len(data)).encode()), (b"connection", b"close")]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": data})


class BackgroundServer:
    """uvicorn in a daemon thread on an ephemeral loopback port (tests, benchmarks):

        with BackgroundServer(create_app(loaded, settings)) as url: ...
    """

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        self.app, self.host = app, host

    def __enter__(self) -> str:
        import uvicorn  # heavy: uvicorn

        # proto IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that
        # say they are TCP, and without it every keep-alive response waits ~40 ms (Nagle and
        # delayed ACK)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind((self.host, 0))
        config = uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return f"http://{self.host}:{sock.getsockname()[1]}"

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(loaded: Any, settings: ServeSettings, upstream: Any = None,
          context: Any = None) -> None:
    """Serve until interrupted (Ctrl-C: in-flight requests get up to 5 s to finish)."""
    import uvicorn  # heavy: uvicorn

    settings.validate()
    settings.check_exposure()
    if upstream is not None:
        upstream.check(loaded, settings)  # answers, serves this model: else one line, now
    app = create_app(loaded, settings, upstream, context)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # httpx logs every request to the upstream at INFO: a second line per completion
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    handle_exit = server.handle_exit

    def closing(*a: Any) -> None:  # queued and new requests get 503 while in-flight ones finish
        app.state.engine.closing = True
        handle_exit(*a)

    server.handle_exit = closing
    via = (f" through {upstream.url} (model {upstream.model!r})" if upstream is not None
           else "")
    print(f"serving {loaded.description}{via} as {settings.model_name!r} on "
          f"http://{settings.host}:{settings.port} (OpenAI /v1/completions, TGI /generate, "
          f"llama.cpp /infill); API key {'required' if settings.api_key else 'off'}", flush=True)
    if context is not None:
        where = (f"the working tree {context.index.root} (followed)" if context.live else
                 "the run's dataset index")
        print(f"repository context: up to {context.budget} tokens from {where}, "
              f"{len(context.index):,} chunks", flush=True)
    server.run()
