"""The gateway's upstream client: HTTP/1.1 to the backends over keep-alive
connection pools, on asyncio protocols, with httptools' parser (llhttp, the
parser of Node.js and, compiled in, of aiohttp itself).

Why not aiohttp's client, which the gateway used first: a proxy needs none
of what it does per request (cookies, redirects, URL building, auth,
decompression, tracing, timers of its own), and it was the gateway's
largest cost, about a quarter of its time per proxied request. A pool here
is a list of idle connections per endpoint, most recently used first; a
request takes one (or connects), writes its head and body, and reads the
answer as it comes, flow-controlled. `bench/bench_gateway.py` measures it.

What comes back is bounded: a status line and headers together at most
`MAX_HEAD` bytes and `MAX_HEADERS` headers; a body is read chunk by chunk,
reading paused while `HIGH_WATER` bytes wait for the consumer. A backend
that answers anything but HTTP/1.x, or more than was asked, loses its
connection (`UpstreamError`) and nothing else.

>>> import asyncio
>>> from aiohttp import web
>>> async def hello(request: web.Request) -> web.Response:
...     return web.Response(text="hello")
>>> async def demo() -> tuple[int, bytes, bool]:
...     app = web.Application()
...     app.router.add_get("/hi", hello)
...     runner = web.AppRunner(app)
...     await runner.setup()
...     await web.TCPSite(runner, "127.0.0.1", 0).start()
...     pool = Pool()
...     endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
...     first = await pool.request(endpoint, "GET", "/hi", [("Accept", "text/plain")])
...     body = await first.read()
...     first.close()
...     second = await pool.request(endpoint, "GET", "/hi", [])
...     reused = second.connection is first.connection
...     second.close()
...     pool.close()
...     await runner.cleanup()
...     return first.status, body, reused
>>> asyncio.run(demo())
(200, b'hello', True)
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

from ._http1 import (
    HIGH_WATER,
    LAST_CHUNK,
    MAX_HEAD,
    MAX_HEADERS,
    Flow,
    encode_head,
    first_header,
    frame_chunk,
    write_message,
)

__all__ = ["HIGH_WATER", "MAX_HEAD", "MAX_HEADERS", "Pool", "Response", "UpstreamError"]

MAX_IDLE = 256  # idle connections kept per endpoint; more are closed


class UpstreamError(Exception):
    """The backend could not be reached, broke the connection, or answered
    something that is not a well-formed HTTP/1.x answer."""


class _Connection(Flow):
    """One keep-alive connection; httptools calls its `on_*` methods."""

    def __init__(self, pool: Pool, endpoint: str) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None  # woken by any news
        self.reading_paused = False
        self.busy = False  # a request is under way: data when idle is a protocol error
        self.idle_since = 0.0
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.head_size = 0
        self.head_done = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.framed = False  # a Content-Length or chunked: otherwise the body ends with the connection
        self.head_request = False
        self.error: UpstreamError | None = None

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self._fail(UpstreamError(f"{self.endpoint} sent {len(data)} bytes nobody asked for"))
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            cause = exc.__context__ if isinstance(exc.__context__, UpstreamError) else None
            self._fail(cause or UpstreamError(f"{self.endpoint} answered something that is not HTTP/1.x: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.forget(self)
        if self.head_done and not self.complete and not self.framed and self.error is None:
            self.complete = True  # a body delimited by the connection's end
        elif not self.complete and self.error is None:
            self.error = UpstreamError(f"{self.endpoint} closed the connection" + (f": {exc}" if exc else ""))
        self.transport = None
        self._wake()
        self.wake_writer()

    # --- httptools' callbacks ---
    def on_message_begin(self) -> None:
        if self.head_done:  # a second answer to one request
            raise UpstreamError(f"{self.endpoint} answered more than was asked")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD or len(self.headers) >= MAX_HEADERS:
            raise UpstreamError(f"{self.endpoint} answered a head over {MAX_HEAD} bytes or {MAX_HEADERS} headers")
        key = name.decode("latin-1")
        lower = key.lower()
        if lower == "content-length" or (lower == "transfer-encoding" and b"chunked" in value.lower()):
            self.framed = True
        self.headers.append((key, value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # informational (103 Early Hints...): the answer is still to come
            self.headers, self.head_size, self.framed = [], 0, False
            return
        self.status = status
        self.head_done = True
        if self.head_request or status in (204, 304):
            self.framed = True
        if self.head_request:  # llhttp cannot be told the answer to a HEAD has no body: not reused
            self.complete = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:  # the end of an informational answer
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp knows it only in its callbacks
        self._wake()

    # --- the request side ---
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self.abort()
        self._wake()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def take(self) -> bytes:
        """The body bytes buffered so far (reading resumed if it paused)."""
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return data


class Response:
    """An answer under way: `status` and `headers` are in, the body comes
    through `read()` or `chunks()`. `close()` when done: the connection goes
    back to its pool if the body was read to its end, else it is closed."""

    __slots__ = ("connection", "headers", "status")

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.status = connection.status
        self.headers = connection.headers

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        return first_header(self.headers, name)

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self.connection
        while True:
            if conn.chunks:
                yield conn.take()
            elif conn.complete:
                return
            elif conn.error is not None:
                raise conn.error
            else:
                await conn.wait()

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, or (with `limit`) at most its first `limit` bytes."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        body = b"".join(parts)
        return body if limit is None else body[:limit]

    def close(self) -> None:
        self.connection.pool.release(self.connection)


def _head(method: str, target: str, host: str, headers: list[tuple[str, str]], framing: str) -> bytes:
    return encode_head(f"{method} {target} HTTP/1.1", headers, f"Host: {host}", *((framing,) if framing else ()))


class Pool:
    """Keep-alive connections to any number of endpoints (`http://host:port`
    or `https://...`), idle ones closed after `keepalive` seconds."""

    def __init__(self, *, keepalive: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.keepalive = keepalive
        self.ssl_context = ssl_context
        self._idle: dict[str, list[_Connection]] = {}
        self._where: dict[str, tuple[str, int, str, bool]] = {}  # endpoint -> host, port, Host header, tls
        self._all: set[_Connection] = set()

    def _address(self, endpoint: str) -> tuple[str, int, str, bool]:
        where = self._where.get(endpoint)
        if where is None:
            url = urlsplit(endpoint)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise UpstreamError(f"not an http(s)://host:port endpoint: {endpoint[:200]!r}")
            tls = url.scheme == "https"
            port = url.port or (443 if tls else 80)
            where = self._where[endpoint] = (url.hostname, port, url.netloc, tls)
        return where

    async def _connect(self, endpoint: str) -> _Connection:
        host, port, _, tls = self._address(endpoint)
        loop = asyncio.get_running_loop()
        context = (self.ssl_context or ssl.create_default_context()) if tls else None
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self, endpoint), host, port, ssl=context)
        except OSError as exc:
            raise UpstreamError(f"{endpoint}: {exc}") from None
        self._all.add(conn)
        return conn

    def _take_idle(self, endpoint: str) -> _Connection | None:
        idle = self._idle.get(endpoint)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.transport is not None and now - conn.idle_since < self.keepalive:
                return conn
            conn.abort()
        return None

    async def request(
        self,
        endpoint: str,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None = None,
        *,
        length: int | None = None,
    ) -> Response:
        """Send `method target` with `headers` (no Host, Content-Length or
        Transfer-Encoding: they are the pool's) and `body`: bytes, None (no
        body), or chunks streamed (`length` bytes if given, else chunked).
        Returns once the answer's head is in; raises UpstreamError."""
        conn = self._take_idle(endpoint) or await self._connect(endpoint)
        conn.busy = True
        conn.head_request = method == "HEAD"
        transport = conn.transport
        try:
            if transport is None:
                raise conn.error or UpstreamError(f"{endpoint} closed the connection")
            host = self._address(endpoint)[2]
            if body is None or isinstance(body, bytes):
                data = body or b""
                # No body at all (a GET): no framing header either, rather than an empty body.
                bodiless = not data and method in ("GET", "HEAD", "DELETE", "OPTIONS")
                write_message(transport, _head(method, target, host, headers, "" if bodiless else f"Content-Length: {len(data)}"), data)
            else:
                framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
                transport.write(_head(method, target, host, headers, framing))
                async for chunk in body:
                    if chunk:
                        transport.write(frame_chunk(chunk) if length is None else chunk)
                        if not await conn.drain():
                            raise conn.error or UpstreamError(f"{endpoint} closed the connection")
                if length is None:
                    transport.write(LAST_CHUNK)
            while not conn.head_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:
            conn.abort()
            conn.busy = False
            raise
        return Response(conn)

    def release(self, conn: _Connection) -> None:
        if not conn.busy:
            return
        conn.busy = False
        reusable = (
            conn.complete
            and conn.error is None
            and conn.transport is not None
            and not conn.head_request
            and not conn.chunks
            and conn.keep_alive
        )
        idle = self._idle.setdefault(conn.endpoint, [])
        if reusable and len(idle) < MAX_IDLE:
            conn.reset()
            conn.idle_since = time.monotonic()
            idle.append(conn)
        else:
            conn.abort()

    def forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        idle = self._idle.get(conn.endpoint)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        """Close every connection, idle or not."""
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
