"""The gateway's HTTP/1.1 server (`apps.gateway.server`) over real sockets,
spoken to in raw bytes: keep-alive, pipelining, HTTP/1.0, bodies both
ways, 100-continue, and what it does with bad or slow clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from apps.gateway._http1 import MAX_HEAD
from apps.gateway.server import Request, Response, serve

events: list[str] = []


async def app(request: Request) -> Response:
    if request.path == "/echo":
        return Response(200, [("X-Method", request.method)], await request.read(1000))
    if request.path == "/stream":
        answer = request.respond(200, [("Content-Type", "text/plain")])
        for i in range(3):
            await answer.write(b"part%d;" % i)
        await answer.end()
        return answer
    if request.path == "/wait":
        events.append("waiting")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
    if request.path == "/boom":
        raise RuntimeError("a handler bug")
    return Response(200, [("Content-Type", "text/plain")], f"{request.method} {request.target}".encode())


@asynccontextmanager
async def server(**options: float) -> AsyncIterator[int]:
    events.clear()
    s = await serve(app, "127.0.0.1", 0, **options)
    try:
        yield s.sockets[0].getsockname()[1]
    finally:
        s.close()


async def exchange(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send `parts` (with `pause` between them), then read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def bodies(raw: bytes) -> list[bytes]:
    """The bodies of sized answers, in order."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        out.append(rest[:length])
        raw = rest[length:]
    return out


async def test_keep_alive_pipelining_and_http_1_0() -> None:
    async with server() as port:
        raw = await exchange(port, b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                                   b"GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert bodies(raw) == [b"GET /a?x=1", b"abc", b"GET /b"]
        assert raw.count(b"Connection: close") == 1 and raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert bodies(await exchange(port, b"GET /old HTTP/1.0\r\n\r\n")) == [b"GET /old"]  # closed after it
        raw = await exchange(port, b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n")
        assert bodies(raw) == [b"GET /1", b"GET /2"] and b"Connection: keep-alive" in raw


async def test_bodies_in_and_out() -> None:
    async with server() as port:
        chunked = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        assert bodies(await exchange(port, chunked)) == [b"abcde"]
        raw = await exchange(port, b"GET /stream HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in raw and raw.endswith(b"6\r\npart0;\r\n6\r\npart1;\r\n6\r\npart2;\r\n0\r\n\r\n")
        raw = await exchange(port, b"GET /stream HTTP/1.0\r\n\r\n")  # no chunked for HTTP/1.0: the close ends it
        assert raw.endswith(b"\r\n\r\npart0;part1;part2;") and b"Connection: close" in raw
        raw = await exchange(port, b"HEAD /stream HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert raw.endswith(b"\r\n\r\n") and b"part" not in raw
        # A body the handler never read is skipped; the next request is read right.
        raw = await exchange(port, b"POST /x HTTP/1.1\r\nContent-Length: 9\r\n\r\nGET /evil", b"GET /y HTTP/1.1\r\nConnection: close\r\n\r\n", pause=0.1)
        assert bodies(raw) == [b"POST /x", b"GET /y"]
        # Over the handler's bound: 413, and the connection ends.
        raw = await exchange(port, b"POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
        assert raw.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in raw
        raw = await exchange(port, b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 413 ")


async def test_expect_100_continue() -> None:
    async with server() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        assert bodies(await asyncio.wait_for(reader.read(), 5)) == [b"hello"]
        writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET http://elsewhere/ HTTP/1.1\r\nHost: h\r\n\r\n", b"400"),
        (b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"x" * MAX_HEAD + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\n" + b"X-H: 1\r\n" * 200 + b"\r\n", b"431"),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),  # smuggling
    ],
)
async def test_a_bad_request_is_answered_and_its_connection_closed(request_bytes: bytes, status: bytes) -> None:
    async with server() as port:
        raw = await exchange(port, request_bytes)
        assert raw.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in raw
        assert bodies(await exchange(port, b"GET /next HTTP/1.1\r\nConnection: close\r\n\r\n")) == [b"GET /next"]


async def test_a_failing_handler_and_an_upgrade_cost_one_connection() -> None:
    async with server() as port:
        raw = await exchange(port, b"GET /boom HTTP/1.1\r\n\r\nGET /never HTTP/1.1\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 500 ") and b"/never" not in raw
        raw = await exchange(port, b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello")
        assert bodies(raw) == [b"GET /ws"]  # answered as a plain request, then closed
        assert bodies(await exchange(port, b"GET /next HTTP/1.1\r\nConnection: close\r\n\r\n")) == [b"GET /next"]


async def test_a_client_that_hangs_up_cancels_its_handler() -> None:
    async with server() as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /wait HTTP/1.1\r\n\r\n")
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.05)
        writer.close()
        for _ in range(100):
            if "cancelled" in events:
                break
            await asyncio.sleep(0.05)
        assert events == ["waiting", "cancelled"]


async def test_slow_and_idle_clients_are_closed() -> None:
    async with server(read_timeout=0.3, keepalive_timeout=0.3) as port:
        # Half a head, then nothing: closed without an answer (reader.read() returns, not the 10 s timeout).
        assert await exchange(port, b"GET / HTTP/1.1\r\nHost:") == b""
        # Half a body, then nothing.
        assert await exchange(port, b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc") == b""
        # Answered, then idle past keep-alive.
        assert bodies(await exchange(port, b"GET /idle HTTP/1.1\r\n\r\n")) == [b"GET /idle"]
