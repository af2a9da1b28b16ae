"""The HTTP transport `serve --upstream` talks to its engine with: httpx, on plain asyncio
streams instead of anyio's.

Why: each completion opens a connection (llama-server closes one after every streamed answer),
and anyio's `connect_tcp` (a task group, a task per address for happy eyeballs, a cancel scope
per read) cost ~2 ms of event-loop time per connection on a 2-core VM, against ~0.4 ms for the
connection, request and answer on bare asyncio (bench/upstream_bench.py; bench/RESULTS.md).
httpcore's public `AsyncNetworkBackend` interface takes the asyncio streams; the pool, HTTP/1.1,
keep-alive and the error types stay httpcore's and httpx's. https:// upstreams keep the default
backend (TLS), and so do environment proxies (httpx mounts its own transports for them).
"""

from __future__ import annotations

import asyncio
import select
import socket
from typing import Any

import httpcore  # optional: httpx and httpcore (the upstream extra)
import httpx


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            if timeout is None:  # (wait_for would wrap every read in a task)
                return await self._reader.read(max_bytes)
            return await asyncio.wait_for(self._reader.read(max_bytes), timeout)
        except TimeoutError:
            raise httpcore.ReadTimeout("timed out reading from the upstream") from None
        except OSError as e:
            raise httpcore.ReadError(str(e) or type(e).__name__) from e

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            if timeout is None:
                await self._writer.drain()
            else:
                await asyncio.wait_for(self._writer.drain(), timeout)
        except TimeoutError:
            raise httpcore.WriteTimeout("timed out writing to the upstream") from None
        except OSError as e:
            raise httpcore.WriteError(str(e) or type(e).__name__) from e

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("TLS is left to httpx's own backend")  # (never asked: http)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # the pool's test for a kept-alive connection gone stale
            if self._reader.at_eof() or self._writer.is_closing():
                return True
            sock = self._writer.get_extra_info("socket")
            if sock is None or sock.fileno() < 0:
                return True
            return bool(select.select([sock.fileno()], [], [], 0)[0])
        if info == "socket":
            return self._writer.get_extra_info("socket")
        if info in ("client_addr", "server_addr"):
            return self._writer.get_extra_info("sockname" if info == "client_addr"
                                               else "peername")
        return None


# How long a spare connection is worth using: servers drop a connection that sent nothing
# within their keep-alive timeout (llama-server, uvicorn: 5 s)
SPARE_SECONDS = 3.0


class _Backend(httpcore.AsyncNetworkBackend):
    """Opens connections; keeps one spare per address, opened as the last one was taken. An
    upstream that closes its connection after each answer (llama-server after a stream) then
    has the next one accepted, and a thread of its own waiting on it, before the request
    comes: on a busy 2-core VM, llama-server took ~5 ms from the connection to the request."""

    def __init__(self) -> None:
        self._spare: dict[tuple, tuple[float, asyncio.Task]] = {}

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        key = (host, port, local_address, tuple(socket_options or ()))
        spare = self._spare.pop(key, None)
        nxt = loop.create_task(self._open(host, port, timeout, local_address, socket_options))
        nxt.add_done_callback(_retrieve)
        self._spare[key] = (loop.time(), nxt)
        if spare is not None:
            made, task = spare
            if not task.done():  # not even connected since the last request: a slow host
                task.cancel()
            elif not task.cancelled() and task.exception() is None:
                stream = task.result()
                if loop.time() - made < SPARE_SECONDS and not stream.get_extra_info(
                        "is_readable"):
                    return stream
                await stream.aclose()  # gone stale (or the server dropped it)
        return await self._open(host, port, timeout, local_address, socket_options)

    async def aclose(self) -> None:
        for _, task in self._spare.values():
            task.cancel()
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().aclose()
        self._spare.clear()

    async def _open(self, host: str, port: int, timeout: float | None,
                    local_address: str | None, socket_options: Any) -> _Stream:
        local = (local_address, 0) if local_address else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=local), timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} within "
                                          f"{timeout:g} s") from None
        except OSError as e:
            raise httpcore.ConnectError(str(e) or type(e).__name__) from e
        sock = writer.get_extra_info("socket")
        if sock is not None:  # (asyncio sets TCP_NODELAY itself; the caller's options too)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return _Stream(reader, writer)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are left to httpx's own backend")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _retrieve(task: asyncio.Task) -> None:
    """(a spare that failed to open is not an error until someone needs it)"""
    if not task.cancelled():
        task.exception()


class _Transport(httpx.AsyncHTTPTransport):
    backend: _Backend | None = None

    async def aclose(self) -> None:
        await super().aclose()
        if self.backend is not None:
            await self.backend.aclose()


def transport(url: str, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport for `url`, on asyncio streams where that is possible (plain http);
    otherwise (https, or an httpx whose transport is laid out differently) httpx's own."""
    t = _Transport(limits=limits)
    if url.startswith("http://") and isinstance(getattr(t, "_pool", None),
                                                 httpcore.AsyncConnectionPool):
        t.backend = _Backend()
        t._pool = httpcore.AsyncConnectionPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, network_backend=t.backend,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return t
