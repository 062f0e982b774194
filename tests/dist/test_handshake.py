"""The handshake between two Python ends (the interop tests do it with real
Erlang): success, wrong cookie, missing flags, garbage, simultaneous rule;
and cookie resolution and digests."""

from __future__ import annotations

import asyncio
import os
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

from beamish import dist
from beamish.dist import cookie, flags, handshake

Acceptor = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(accept: Acceptor) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def accepting(results: list[object], *, cookie_: str = "c", pending: bool = False, name: str = "b@h") -> Acceptor:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            res = await handshake.accept(
                reader, writer, name=name, cookie=cookie_, flags=flags.ADVERTISED, creation=2,
                is_pending=lambda _: pending, timeout=2,
            )
            results.append(res.peer_name)
        except handshake.HandshakeError as exc:
            results.append(exc)
        finally:
            writer.close()

    return accept


async def connect_out(port: int, *, cookie_: str = "c", name: str = "a@h", flags_: int = flags.ADVERTISED) -> handshake.HandshakeResult:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await handshake.handshake_out(r, w, name=name, cookie=cookie_, flags=flags_, creation=1, timeout=2)
    finally:
        w.close()


def test_matching_cookies_connect() -> None:
    async def main() -> None:
        results: list[object] = []
        server, port = await serve(accepting(results))
        res = await connect_out(port)
        assert (res.peer_name, res.peer_creation) == ("b@h", 2) and res.peer_flags == flags.ADVERTISED
        await asyncio.sleep(0.05)
        assert results == ["a@h"]
        server.close()

    asyncio.run(main())


def test_wrong_cookie_is_refused_on_both_sides_and_the_listener_survives() -> None:
    async def main() -> None:
        results: list[object] = []
        server, port = await serve(accepting(results))
        with pytest.raises(handshake.HandshakeError):
            await connect_out(port, cookie_="wrong")
        await asyncio.sleep(0.05)
        assert isinstance(results[0], handshake.HandshakeError) and "wrong cookie" in str(results[0])
        assert (await connect_out(port)).peer_name == "b@h"  # still accepting
        server.close()

    asyncio.run(main())


def test_a_peer_missing_mandatory_flags_is_refused() -> None:
    async def main() -> None:
        results: list[object] = []
        server, port = await serve(accepting(results))
        with pytest.raises(handshake.HandshakeError, match="not_allowed"):
            await connect_out(port, flags_=flags.MANDATORY_25)
        await asyncio.sleep(0.05)
        assert "UNLINK_ID" in str(results[0]) and "V4_NC" in str(results[0])
        server.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "garbage",
    [b"\xff\xff" + b"x" * 100, b"\x00\x05Nabcd", b"\x00\x00", b"\x00\x10" + b"n" * 16, os.urandom(64)],
)
def test_garbage_closes_that_connection_only(garbage: bytes) -> None:
    async def main() -> None:
        results: list[object] = []
        server, port = await serve(accepting(results))
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(garbage)
        await w.drain()
        w.write_eof()
        await asyncio.wait_for(r.read(), 3)  # the acceptor closed it
        w.close()
        assert len(results) == 1 and isinstance(results[0], handshake.HandshakeError)
        assert (await connect_out(port)).peer_name == "b@h"
        server.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "name",
    ["evil@h\nERROR beamish.dist: forged line", "x" * 250 + "@" + "h" * 10, "no-at-sign", "@h", "tab\t@h"],
    ids=["newline", "over-255-bytes", "no-at", "empty-alive", "tab"],
)
@pytest.mark.beamish(name=f"{unique_name('hs')}@{HOST}")
@pytest.mark.interop
async def test_a_bad_peer_name_is_refused_with_one_clean_line(name: str, caplog: pytest.LogCaptureFixture) -> None:
    ensure_epmd()
    secret = new_cookie()
    await dist.start(cookie=secret)
    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    caplog.clear()
    r, w = await asyncio.open_connection("127.0.0.1", dist.kernel().port)
    try:
        with pytest.raises(handshake.HandshakeError):
            await handshake.handshake_out(r, w, name=name, cookie=secret, flags=flags.ADVERTISED, creation=1, timeout=5)
        await asyncio.wait_for(r.read(), 5)  # the node closed it
    finally:
        w.close()
        loop.set_exception_handler(None)
    lines = [rec for rec in caplog.records if rec.name == "beamish.dist"]
    assert len(lines) == 1 and lines[0].exc_info is None, [rec.getMessage() for rec in lines]
    assert "\n" not in lines[0].getMessage() and "refused a connection" in lines[0].getMessage()
    assert errors == [] and dist.nodes() == []


def test_simultaneous_connect_the_greater_name_keeps_its_own() -> None:
    async def main() -> None:
        results: list[object] = []
        # We are "b@h" and connecting to "a@h" ourselves: "b" > "a", we say nok.
        server, port = await serve(accepting(results, pending=True))
        with pytest.raises(handshake.HandshakeError, match="nok"):
            await connect_out(port, name="a@h")
        # "z@h" > "b@h": we give way (ok_simultaneous) and the handshake goes on.
        assert (await connect_out(port, name="z@h")).peer_name == "b@h"
        server.close()

    asyncio.run(main())


def test_digest_is_erlangs_md5_of_cookie_and_challenge() -> None:
    # erlang:md5(["secret", integer_to_list(1234)]), computed by a real erl.
    assert cookie.digest(1234, "secret").hex() == "bdfc2db0aa599f5919e565c328216a51"
    assert cookie.matches(cookie.digest(7, "k"), 7, "k") and not cookie.matches(cookie.digest(7, "k"), 8, "k")


def test_cookie_resolution_order_and_file_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEAMISH_COOKIE", raising=False)
    created = cookie.resolve(None, home=tmp_path)
    path = tmp_path / ".erlang.cookie"
    assert len(created) == 20 and created.isupper() and path.read_text() == created
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert cookie.resolve(None, home=tmp_path) == created
    monkeypatch.setenv("BEAMISH_COOKIE", "fromenv")
    assert cookie.resolve(None, home=tmp_path) == "fromenv"
    assert cookie.resolve("explicit", home=tmp_path) == "explicit"
    monkeypatch.delenv("BEAMISH_COOKIE")
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="owner only"):
        cookie.resolve(None, home=tmp_path)


def test_flags_name_what_is_missing() -> None:
    assert flags.missing(flags.ADVERTISED, flags.MANDATORY) == []
    assert flags.missing(0, flags.UNLINK_ID | flags.SPAWN) == ["UNLINK_ID", "SPAWN"]
    assert struct.pack(">Q", flags.ADVERTISED)  # fits the handshake's 8 bytes
