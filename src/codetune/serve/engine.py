"""The engine behind `codetune serve`: admission (slots and a queue), the tokenizer pool and
the generation threads.

Concurrency: one model; each slot runs in a worker thread (the event loop never blocks) and the
forward passes of all slots are serialised by one lock, interleaving token by token. That bounds
memory and latency, not throughput: for many users serve with vLLM (see the README). Prompts are
tokenized in a pool of their own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import dataclasses
import queue
import threading
import time
from collections import Counter
from typing import Any

from codetune.infer.loader import context_window
from codetune.serve.limits import ApiError, ServeSettings, max_chars_per_token

# Two: one huge prompt being tokenized does not hold up the small ones behind it, and on a small
# machine the generation slots keep the other cores.
TOKENIZER_THREADS = 2


class Engine:
    """Admission (slots + queue), the worker threads and the model lock. Counters are touched
    only on the event loop thread; workers report back through `call_soon_threadsafe`."""

    on_loop = False  # generation runs on worker threads: results come back thread-safely

    def __init__(self, loaded: Any, settings: ServeSettings) -> None:
        self.loaded, self.settings = loaded, settings
        self.lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(settings.slots, "codetune-gen")
        self.active = self.queued = 0
        self.running: set[Any] = set()  # the GenerationStreams of busy workers
        self.closing = False
        self.stats: Counter[str] = Counter()
        self._freed: asyncio.Event | None = None
        self.chars_per_token = max_chars_per_token(loaded.tokenizer)
        self.set_window(context_window(loaded))
        # Each tokenizer thread has its own copy: a fast tokenizer keeps `encode_special_tokens`
        # (FIM prompts set it, raw prompts clear it) and truncation as state that every call
        # sets, so threads sharing one could tokenize each other's prompts in the wrong mode.
        # The generation threads keep the original (they only decode).
        copies: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(TOKENIZER_THREADS):
            copies.put(dataclasses.replace(loaded, tokenizer=copy.deepcopy(loaded.tokenizer)))
        self._mine = threading.local()
        self.tokenizers = concurrent.futures.ThreadPoolExecutor(
            TOKENIZER_THREADS, "codetune-tok",
            initializer=lambda: setattr(self._mine, "loaded", copies.get_nowait()))

    def set_window(self, window: int | None) -> None:
        """The context window (tokens of prompt + completion per request; None: unknown) and
        the prompt limits that follow from it unless --max-prompt-tokens is given."""
        self.window = window
        limit = self.settings.max_prompt_tokens
        self.max_prompt = limit if limit is not None else (window or 1 << 31) - 1
        self.max_prompt_chars = (None if self.chars_per_token is None
                                 else self.chars_per_token * self.max_prompt)

    def check_chars(self, chars: int) -> None:
        """400 for a prompt of `chars` characters that cannot fit, before tokenizing it."""
        if self.max_prompt_chars is not None and chars > self.max_prompt_chars:
            raise ApiError(400, f"the prompt is over {self.max_prompt} tokens ({chars} characters, "
                           f"and no token of this tokenizer covers more than "
                           f"{self.chars_per_token}); this server accepts at most "
                           f"{self.max_prompt} (--max-prompt-tokens)", "context_length_exceeded")

    async def tokenize(self, deadline: float, build: Any, *texts: str) -> list[int]:
        """`build(loaded, *texts)` (raw_prompt, fim_prompt) in the tokenizer pool."""
        fut = self.tokenizers.submit(lambda: build(self._mine.loaded, *texts))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut),
                                          max(deadline - time.monotonic(), 0.001))
        except TimeoutError:  # still queued: dropped; already running: its result is discarded
            self.stats["rejected"] += 1
            raise ApiError(503, "overloaded: the prompt was not tokenized within "
                           f"{self.settings.request_timeout:g} s", "unavailable",
                           {"Retry-After": "1"}) from None

    async def acquire(self, deadline: float, disconnected: Any) -> None:
        if self.closing:
            raise ApiError(503, "the server is shutting down", "unavailable")
        if self.active < self.settings.slots:
            self.active += 1
            return
        if self.queued >= self.settings.queue:
            self.stats["rejected"] += 1
            raise ApiError(429, f"busy: {self.active} requests generating and {self.queued} "
                           "queued; retry shortly", "rate_limit_error", {"Retry-After": "1"})
        self.queued += 1
        try:
            while self.active >= self.settings.slots:
                if self.closing or time.monotonic() > deadline:
                    self.stats["rejected"] += 1
                    raise ApiError(503, "overloaded: no generation slot came free within "
                                   f"{self.settings.request_timeout:g} s", "unavailable",
                                   {"Retry-After": "1"})
                self._freed = self._freed or asyncio.Event()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), 0.2)
                if await disconnected():
                    raise ApiError(499, "client disconnected", "cancelled")
            self.active += 1
        finally:
            self.queued -= 1

    def start(self, stream: Any, on_piece: Any = None) -> concurrent.futures.Future:
        """Run `stream` (an acquired slot) in a worker; the slot is freed when the worker ends,
        not when the request does: a cancelled request holds it until its thread stops."""
        loop = asyncio.get_running_loop()

        def work() -> Any:
            for piece in stream:
                if on_piece is not None:
                    on_piece(piece)
            return stream

        self.running.add(stream)
        fut = self.pool.submit(work)
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(self._release, stream, f))
        return fut

    def _release(self, stream: Any, fut: concurrent.futures.Future) -> None:
        self.active -= 1
        self.running.discard(stream)
        failed = fut.cancelled() or fut.exception() is not None
        self.stats["error" if failed else stream.finish_reason] += 1
        if self._freed is not None:
            self._freed.set()  # wake every waiter; each re-checks, one wins the slot
            self._freed = None

    def health(self) -> dict[str, Any]:
        return {"status": "shutting down" if self.closing else "ok", "active": self.active,
                "queued": self.queued, "slots": self.settings.slots, **self.stats}
