"""The gateway's upstream client (`apps.gateway.upstream`) against real
sockets: an aiohttp server for well-behaved backends, and raw asyncio
servers that answer scripted bytes for the ill-behaved ones."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from apps.gateway.upstream import HIGH_WATER, MAX_HEAD, Pool, UpstreamError

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[tuple[str, list[int]]]:
    """A server that runs `script` per connection; yields its endpoint and
    a list that counts the connections it accepted."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted
    finally:
        server.close()
        await server.wait_closed()


def answering(*answers: bytes, then_wait: bool = True) -> Script:
    """Read one request head per answer, send the answer; then hold the connection open (or close it)."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        if then_wait:
            await reader.read()

    return script


@asynccontextmanager
async def aiohttp_backend() -> AsyncIterator[str]:
    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return web.Response(body=body, headers={"X-Method": request.method, "X-TE": request.headers.get("Transfer-Encoding", "")})

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(int(request.query["chunks"])):
            await response.write(b"y" * 65536)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=16 << 20)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/big", big)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_bodies_both_ways_and_keep_alive() -> None:
    pool = Pool()
    try:
        async with aiohttp_backend() as endpoint:
            payload = os.urandom(3 << 20)

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(0, len(payload), 100_000):
                    yield payload[i : i + 100_000]

            # Streamed without a length: chunked; with one: sized.
            r = await pool.request(endpoint, "POST", "/echo", [], chunks())
            assert (r.status, r.header("x-te"), await r.read()) == (200, "chunked", payload)
            r.close()
            first = r.connection
            r = await pool.request(endpoint, "PUT", "/echo", [], chunks(), length=len(payload))
            assert (r.header("X-Method"), r.header("x-te"), await r.read()) == ("PUT", "", payload)
            r.close()
            r = await pool.request(endpoint, "POST", "/echo", [("X-A", "1")], b"small")
            assert await r.read() == b"small" and r.connection is first  # one connection all along
            r.close()
            # A big answer read slowly: reading pauses, nothing piles up past the high-water mark.
            r = await pool.request(endpoint, "GET", "/big?chunks=64", [])
            total, peak = 0, 0
            async for chunk in r.chunks():
                total += len(chunk)
                peak = max(peak, len(chunk))
                await asyncio.sleep(0.002)
            r.close()
            assert total == 64 * 65536 and peak <= HIGH_WATER + 65536 * 4
    finally:
        pool.close()


async def test_chunked_until_close_informational_and_head_answers() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok"
    pool = Pool()
    try:
        async with raw_server(answering(chunked, hints)) as (endpoint, accepted):
            r = await pool.request(endpoint, "GET", "/", [])
            assert await r.read() == b"abcde"
            r.close()
            r = await pool.request(endpoint, "GET", "/", [])
            assert (r.status, r.headers, await r.read()) == (201, [("Content-Length", "2"), ("X-Final", "yes")], b"ok")
            r.close()
            assert len(accepted) == 1
        until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
        async with raw_server(answering(until_close, then_wait=False)) as (endpoint, _):
            r = await pool.request(endpoint, "GET", "/", [])
            assert await r.read() == b"all of it"
            r.close()
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        async with raw_server(answering(head)) as (endpoint, _):
            r = await asyncio.wait_for(pool.request(endpoint, "HEAD", "/", []), 5)
            assert r.header("content-length") == "1000" and await asyncio.wait_for(r.read(), 5) == b""
            r.close()
    finally:
        pool.close()


async def fetch(pool: Pool, endpoint: str) -> bytes:
    r = await pool.request(endpoint, "GET", "/", [])
    try:
        return await r.read()
    finally:
        r.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 abc\r\n\r\n", "not HTTP/1.x"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "not HTTP/1.x"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * MAX_HEAD + b"\r\n\r\n", "head over"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-H: 1\r\n" * 200 + b"\r\n", "head over"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed the connection"),
    ],
)
async def test_a_bad_answer_costs_its_connection_only(answer: bytes, error: str) -> None:
    pool = Pool()
    try:
        async with raw_server(answering(answer, then_wait=False)) as (bad, _), aiohttp_backend() as good:
            with pytest.raises(UpstreamError, match=error):
                await fetch(pool, bad)
            r = await pool.request(good, "POST", "/echo", [], b"still fine")
            assert await r.read() == b"still fine"
            r.close()
    finally:
        pool.close()


async def test_more_than_was_asked_and_a_stale_connection_are_not_reused() -> None:
    pool = Pool()
    try:
        two = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"
        async with raw_server(answering(two, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc")) as (endpoint, accepted):
            r = await pool.request(endpoint, "GET", "/", [])
            assert await r.read() == b"a"
            r.close()
            r = await pool.request(endpoint, "GET", "/", [])  # not the connection that said too much
            assert await r.read() == b"a" and len(accepted) == 2
            r.close()

        async def closes_when_idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", then_wait=False)(reader, writer)
            await asyncio.sleep(0.05)

        async with raw_server(closes_when_idle) as (endpoint, accepted):
            for _ in range(2):
                r = await pool.request(endpoint, "GET", "/", [])
                assert await r.read() == b"ok"
                r.close()
                await asyncio.sleep(0.3)  # the backend closed it meanwhile: the pool forgot it
            assert len(accepted) == 2
    finally:
        pool.close()


async def test_unreachable_and_forged_headers() -> None:
    pool = Pool()
    try:
        async with raw_server(answering()) as (endpoint, _):
            pass  # closed: nothing listens there now
        with pytest.raises(UpstreamError, match=r"Connect call failed|refused"):
            await pool.request(endpoint, "GET", "/", [])
        with pytest.raises(UpstreamError, match="not an http"):
            await pool.request("ftp://127.0.0.1:21", "GET", "/", [])
        async with raw_server(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as (endpoint, _):
            for name, value in [("X-A", "1\r\nX-Injected: yes"), ("X-A\nB", "1")]:
                with pytest.raises(ValueError, match="CR or LF"):
                    await pool.request(endpoint, "GET", "/", [(name, value)])
            with pytest.raises(ValueError, match="CR or LF"):
                await pool.request(endpoint, "GET", "/ HTTP/1.1\r\nX-Injected: yes\r\n\r\nGET /", [])
    finally:
        pool.close()
