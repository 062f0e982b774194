"""The gateway's HTTP/1.1 server: asyncio protocols and httptools' request
parser (llhttp), one handler coroutine per request, on the node's loop.

Why not aiohttp's server, which the gateway used first: measured in the
same run (`bench/bench_gateway.py`'s setup, one backend, GETs), a bare
proxy on aiohttp's low-level server reached 0.76x of nginx, the same proxy
on this server 1.02x; with the gateway's routing, breaker and metrics on
top, aiohttp's server alone kept it near 0.5x of nginx.

What it does: keep-alive (HTTP/1.1 by default, HTTP/1.0 when asked),
pipelined requests answered in order, request bodies streamed to the
handler with reading paused while `HIGH_WATER` bytes wait (and `100
Continue` sent when the handler first reads a body that expects it),
answers whole (`Response`) or streamed (`Request.respond`: chunked, or
sized), a handler cancelled when its client hangs up.

What it bounds: a request line and headers together at most `MAX_HEAD`
bytes and `MAX_HEADERS` headers (431); a body read whole at most
`max_body` bytes (413); a malformed request is answered 400 and its
connection closed; a connection that goes `read_timeout` seconds in the
middle of a request without a byte, or `keepalive_timeout` idle, is
closed; a handler that raises is answered 500 (logged) and takes only its
connection down.

>>> import asyncio
>>> async def hello(request: Request) -> Response:
...     return Response(200, [("Content-Type", "text/plain")], f"hi {request.path}".encode())
>>> async def demo() -> bytes:
...     server = await serve(hello, "127.0.0.1", 0)
...     port = server.sockets[0].getsockname()[1]
...     reader, writer = await asyncio.open_connection("127.0.0.1", port)
...     writer.write(b"GET /there?x=1 HTTP/1.1\\r\\nHost: h\\r\\nConnection: close\\r\\n\\r\\n")
...     answer = await reader.read()
...     writer.close()
...     server.close()
...     return answer.split(b"\\r\\n\\r\\n")[1]
>>> asyncio.run(demo())
b'hi /there'
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

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

__all__ = ["HTTPError", "Request", "Response", "Server", "StreamedResponse", "json_response", "serve"]

log = logging.getLogger(__name__)

MAX_PIPELINED = 16  # requests queued on one connection before reading pauses
_REASONS = {s.value: s.phrase for s in http.HTTPStatus}


class HTTPError(Exception):
    """A request the server answers itself with `status` (and closes)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class Response:
    """A whole answer. `length` is for a HEAD or 304 answer, which has no
    body but may say how long the body would be."""

    __slots__ = ("body", "headers", "length", "status")

    def __init__(self, status: int = 200, headers: list[tuple[str, str]] | None = None, body: bytes = b"", length: int | None = None) -> None:
        self.status = status
        self.headers = headers if headers is not None else []
        self.body = body
        self.length = length


def json_response(value: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    """The server's own JSON answer, dated."""
    head = [("Content-Type", "application/json; charset=utf-8"), ("Date", _date()), *(headers or [])]
    return Response(status, head, json.dumps(value).encode())


_dated = (0, "")


def _date() -> str:
    global _dated
    now = int(time.time())
    if _dated[0] != now:
        _dated = (now, email.utils.formatdate(now, usegmt=True))
    return _dated[1]


class StreamedResponse(Response):
    """An answer under way, begun by `Request.respond`: `write` its body, then `end`."""

    __slots__ = ("_chunked", "_conn", "_request", "done")

    def __init__(self, request: Request, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        super().__init__(status, headers, b"", length)
        self._request = request
        self._conn = request.conn
        self.done = False
        bodiless = request.method == "HEAD" or status in (204, 304) or status < 200
        self._chunked = length is None and not bodiless and request.version == "1.1"
        if length is None and not bodiless and not self._chunked:
            request.keep_alive = False  # an HTTP/1.0 client: the body ends with the connection
        if status == 204 or status < 200:
            length = None
        conn = self._conn
        if conn.transport is None:
            raise ConnectionResetError("the client closed the connection")
        conn.transport.write(conn.head_bytes(request, status, headers, length, chunked=self._chunked))

    async def write(self, chunk: bytes) -> None:
        if not chunk or self._request.method == "HEAD":
            return
        conn = self._conn
        if conn.transport is None:
            raise ConnectionResetError("the client closed the connection")
        conn.transport.write(frame_chunk(chunk) if self._chunked else chunk)
        if conn.writing_paused and not await conn.drain():
            raise ConnectionResetError("the client closed the connection")

    async def end(self) -> None:
        if not self.done:
            self.done = True
            if self._chunked and self._conn.transport is not None:
                self._conn.transport.write(LAST_CHUNK)


class Request:
    """One request: its line and headers at once, its body as it comes."""

    __slots__ = (
        "_waiter", "body_done", "buffered", "conn", "continue_owed", "discard", "headers", "keep_alive",
        "method", "path", "pending", "query", "remote", "streamed", "target", "version",
    )  # fmt: skip

    def __init__(self, conn: _Connection, method: str, target: str, version: str, headers: list[tuple[str, str]], keep_alive: bool) -> None:
        self.conn = conn
        self.method = method
        self.target = target  # as sent: path and query, undecoded
        path, _, self.query = target.partition("?")
        self.path = path
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.remote = conn.peer
        self.pending: list[bytes] = []
        self.buffered = 0
        self.body_done = False
        self.discard = False
        self._waiter: asyncio.Future[None] | None = None
        self.continue_owed = False  # 100 Continue owed when the body is first read
        self.streamed: StreamedResponse | None = None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        return first_header(self.headers, name)

    @property
    def host(self) -> str:
        return self.header("Host") or ""

    @property
    def content_length(self) -> int | None:
        length = self.header("Content-Length")
        return int(length) if length is not None else None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives."""
        conn = self.conn
        if self.continue_owed:
            self.continue_owed = False
            if conn.transport is not None:
                conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            if self.pending:
                data = self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)
                self.pending.clear()
                self.buffered = 0
                conn.body_taken()
                yield data
            elif self.body_done:
                return
            elif conn.transport is None:
                raise ConnectionResetError("the client closed the connection mid-body")
            else:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None

    async def read(self, max_size: int) -> bytes:
        """The whole body; HTTPError(413) past `max_size` bytes."""
        length = self.content_length
        if length is not None and length > max_size:
            raise HTTPError(413, f"a body of {length} bytes, over {max_size}")
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > max_size:
                raise HTTPError(413, f"a body over {max_size} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def respond(self, status: int, headers: list[tuple[str, str]], length: int | None = None) -> StreamedResponse:
        """Begin a streamed answer (its head leaves now); the handler then
        writes its body and returns it."""
        if self.streamed is not None:
            raise RuntimeError("this request has been answered already")
        self.streamed = StreamedResponse(self, status, headers, length)
        return self.streamed

    # --- fed by the connection ---
    def feed(self, body: bytes) -> None:
        if self.discard:
            return
        self.pending.append(body)
        self.buffered += len(body)
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


Handler = Callable[[Request], Awaitable[Response]]


class _Connection(Flow):
    """One client connection; httptools calls its `on_*` methods."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.queue: deque[Request] = deque()  # parsed, not yet answered
        self.receiving: Request | None = None  # the request whose body is arriving
        self.ready: asyncio.Future[None] | None = None  # the worker waits here for a request
        self.worker: asyncio.Task[None] | None = None
        self.reading_paused = False
        self.stopped = False  # reading is over for good
        self.last_data = self.loop.time()
        self.in_head = False
        self._reset_head()

    def _reset_head(self) -> None:
        self.url: list[bytes] = []
        self.head: list[tuple[str, str]] = []
        self.head_size = 0

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else ""
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An upgrade (a WebSocket) is not proxied: the request is
            # answered as any other, then the connection closes.
            if self.queue:
                self.queue[-1].keep_alive = False
            self._stop_reading()
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, HTTPError):
                self.refuse(cause.status, str(cause))
            else:
                self.refuse(400, f"malformed request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()  # the client hung up: its handler stops
        if self.receiving is not None:
            self.receiving.wake()
        self.wake_writer()

    # --- httptools' callbacks ---
    def on_message_begin(self) -> None:
        self.in_head = True
        self._reset_head()

    def on_url(self, url: bytes) -> None:
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            raise HTTPError(414, f"a request target over {MAX_HEAD} bytes")
        self.url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD or len(self.head) >= MAX_HEADERS:
            raise HTTPError(431, f"a request head over {MAX_HEAD} bytes or {MAX_HEADERS} headers")
        self.head.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        target = b"".join(self.url).decode("utf-8", "surrogateescape")
        if not target.startswith("/"):
            raise HTTPError(400, "only origin-form request targets (/path?query)")
        request = Request(self, parser.get_method().decode(), target, parser.get_http_version(), self.head, parser.should_keep_alive())
        for key, value in self.head:
            if len(key) == 6 and key.lower() == "expect" and value.lower() == "100-continue":
                request.continue_owed = True
        self.receiving = request
        self.queue.append(request)
        if len(self.queue) > MAX_PIPELINED:
            self._pause()
        if self.worker is None:
            self.worker = self.loop.create_task(self._work())
        elif self.ready is not None and not self.ready.done():
            self.ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        request = self.receiving
        if request is not None:
            request.feed(body)
            if request.buffered > HIGH_WATER:
                self._pause()

    def on_message_complete(self) -> None:
        request = self.receiving
        if request is not None:
            request.body_done = True
            request.continue_owed = False  # all of it came: nothing to ask for
            request.wake()
        self.receiving = None

    # --- flow control ---
    def _pause(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _stop_reading(self) -> None:
        """No more requests on this connection (an upgrade, a malformed one)."""
        self.stopped = True
        self._pause()

    def body_taken(self) -> None:
        if self.reading_paused and not self.stopped and len(self.queue) <= MAX_PIPELINED and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    # --- answering ---
    def refuse(self, status: int, detail: str) -> None:
        """Answer `status` with `detail` and close: the request stream cannot go on."""
        if self.transport is None:
            return
        body = json.dumps({"error": _REASONS.get(status, "error"), "detail": detail[:200]}).encode()
        headers = [("Content-Type", "application/json; charset=utf-8"), ("Date", _date())]
        head = encode_head(f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", headers, f"Content-Length: {len(body)}", "Connection: close")
        self._stop_reading()
        if not self.queue:  # else the worker closes after the answers owed before
            self.transport.write(head + body)
            self._close()
        else:
            self.queue[-1].keep_alive = False

    def head_bytes(self, request: Request, status: int, headers: list[tuple[str, str]], length: int | None, *, chunked: bool = False) -> bytes:
        framing: list[str] = []
        if chunked:
            framing.append("Transfer-Encoding: chunked")
        elif length is not None:
            framing.append(f"Content-Length: {length}")
        if not request.keep_alive:
            framing.append("Connection: close")
        elif request.version == "1.0":
            framing.append("Connection: keep-alive")
        return encode_head(f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", headers, *framing)

    def _send(self, request: Request, response: Response) -> None:
        if self.transport is None:
            return
        status, body = response.status, response.body
        length: int | None = len(body)
        if status == 204 or status < 200:
            body, length = b"", None
        elif request.method == "HEAD" or status == 304:  # the length the body would have, if known
            body, length = b"", response.length if response.length is not None else (len(body) or None)
        write_message(self.transport, self.head_bytes(request, status, response.headers, length), body)

    async def _work(self) -> None:
        """Answer the queued requests in order, for the connection's life."""
        handler = self.server.handler
        while self.transport is not None:
            if not self.queue:
                self.ready = self.loop.create_future()
                try:
                    await self.ready
                finally:
                    self.ready = None
                continue
            request = self.queue[0]
            try:
                response = await handler(request)
            except asyncio.CancelledError:
                raise
            except ConnectionError:  # the client went while a streamed answer was under way
                self.abort()
                return
            except HTTPError as exc:
                request.keep_alive = False
                response = json_response({"error": _REASONS.get(exc.status, "error"), "detail": str(exc)[:200]}, exc.status)
            except Exception:
                log.exception("the gateway's handler failed on %s %.200r", request.method, request.target)
                request.keep_alive = False
                response = json_response({"error": "internal server error"}, 500)
            streamed = request.streamed
            if streamed is not None:
                if response is not streamed or not streamed.done:
                    # Begun, then replaced or left unfinished: the answer on
                    # the wire is truncated, so its connection ends here.
                    self.abort()
                    return
            elif self.transport is not None:
                try:
                    self._send(request, response)
                except ValueError:  # a CR or LF in a header of the handler's making
                    log.error("the gateway's handler answered a header with a CR or LF on %.200r", request.target)
                    self.abort()
                    return
            self.queue.popleft()
            self.last_data = self.loop.time()  # keep-alive counts from the answer, not the request
            if not request.keep_alive or self.transport is None:
                self._close()
                return
            if not request.body_done:
                if request.continue_owed:
                    # The client may be waiting for a 100 Continue before its body:
                    # whether the body comes or the next request does is unknowable.
                    self._close()
                    return
                # The handler left the body unread: it is skipped as it comes.
                request.discard = True
                request.pending.clear()
                request.buffered = 0
            self.body_taken()
            if self.writing_paused and not await self.drain():
                return

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _close(self) -> None:
        self.stopped = True
        if self.transport is not None:
            self.transport.close()

    def sweep(self, now: float) -> None:
        """Close the connection if it is idle past keep-alive, or stalled mid-request."""
        idle = now - self.last_data
        busy = self.in_head or self.receiving is not None
        if busy and idle > self.server.read_timeout:
            self.abort()
        elif not busy and not self.queue and idle > self.server.keepalive_timeout:
            self._close()


class Server:
    """The listening socket's owner: its connections, and a sweeper for timeouts."""

    def __init__(self, handler: Handler, *, keepalive_timeout: float, read_timeout: float) -> None:
        self.handler = handler
        self.keepalive_timeout = keepalive_timeout
        self.read_timeout = read_timeout
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def sockets(self) -> Any:
        return self.server.sockets if self.server is not None else ()

    def sweep_all(self) -> None:
        now = self.loop.time()
        for conn in list(self.connections):
            conn.sweep(now)
        self._sweeper = self.loop.call_later(1.0, self.sweep_all)

    def close(self) -> None:
        """Stop listening and close every connection (their handlers are cancelled)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.abort()


async def serve(handler: Handler, host: str, port: int, *, keepalive_timeout: float = 75.0, read_timeout: float = 30.0) -> Server:
    """Listen on `host:port` (0: any free port) and answer with `handler`."""
    server = Server(handler, keepalive_timeout=keepalive_timeout, read_timeout=read_timeout)
    server.server = await server.loop.create_server(lambda: _Connection(server), host, port)
    server.sweep_all()
    return server
