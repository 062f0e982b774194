"""The distribution handshake: how two nodes agree to talk.

The connecting node (A) sends its name, flags and creation; the accepting
node (B) answers with a status, then its own name, flags and a random
challenge; A proves it knows the cookie by the digest of B's challenge and
sends its own challenge; B proves the same. Messages carry a 2-byte length
during the handshake. A wrong cookie ends it on both sides, and nothing
else is harmed.

>>> import asyncio
>>> from beamish.dist import flags, handshake
>>> async def demo():
...     accepted = []
...     async def accept(reader, writer):
...         result = await handshake.accept(reader, writer, name="b@127.0.0.1", cookie="c",
...                                         flags=flags.ADVERTISED, creation=2)
...         accepted.append(result.peer_name)
...         writer.close()
...     server = await asyncio.start_server(accept, "127.0.0.1", 0)
...     port = server.sockets[0].getsockname()[1]
...     r, w = await asyncio.open_connection("127.0.0.1", port)
...     result = await handshake.handshake_out(r, w, name="a@127.0.0.1", cookie="c",
...                                            flags=flags.ADVERTISED, creation=1)
...     await r.read()  # until b closes
...     w.close()
...     await w.wait_closed()
...     server.close()
...     await server.wait_closed()
...     return result.peer_name, accepted
>>> asyncio.run(demo())
('b@127.0.0.1', ['a@127.0.0.1'])

OTP: mirrors dist_util.erl's version 6 handshake (OTP 23+: 'N' send_name
and challenge, 's' status, 'r' reply, 'a' ack) with the simultaneous-connect
rule (the node with the greater name keeps its own attempt); differs in not
accepting the version 5 ('n') handshake, which no OTP 25+ node needs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

from . import cookie as cookies
from . import epmd
from . import flags as F

__all__ = ["HandshakeError", "HandshakeResult", "Unreachable", "accept", "handshake_out", "initiate"]

log = logging.getLogger("beamish.dist")

MAX_MESSAGE = 1024  # handshake messages are small: names are at most 255 bytes
MAX_NAME = 255  # a node name is an atom: erts refuses longer ones (MAX_ATOM_CHARACTERS)


class HandshakeError(ConnectionError):
    """The handshake failed: wrong cookie, refused, malformed, or too slow."""


class Unreachable(HandshakeError):
    """The peer is not up: unknown to its host's EPMD, or not accepting."""


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    peer_name: str
    peer_flags: int
    peer_creation: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


def _header(writer: asyncio.StreamWriter) -> int:
    """Bytes of each handshake message's length: 2 over TCP (dist_util's
    `{packet, 2}`), 4 over TLS (inet_tls_dist runs the handshake with
    `{packet, 4}` on the TLS socket)."""
    return 4 if writer.get_extra_info("ssl_object") is not None else 2


async def _recv(reader: asyncio.StreamReader, header: int = 2) -> bytes:
    size = int.from_bytes(await reader.readexactly(header), "big")
    if size == 0 or size > MAX_MESSAGE:
        raise HandshakeError(f"handshake message of {size} bytes")
    return await reader.readexactly(size)


def _send(writer: asyncio.StreamWriter, body: bytes, header: int = 2) -> None:
    writer.write(len(body).to_bytes(header, "big") + body)


def _parse_name_msg(msg: bytes, with_challenge: bool) -> tuple[int, int, int, str]:
    """An 'N' message: (flags, challenge or 0, creation, name)."""
    if msg[:1] != b"N":
        raise HandshakeError(f"expected an 'N' handshake message, got {msg[:1]!r} (an OTP 23+ peer is required)")
    if with_challenge:
        if len(msg) < 19:
            raise HandshakeError("truncated challenge")
        flags, challenge, creation, nlen = struct.unpack(">QIIH", msg[1:19])
        rest = msg[19:]
    else:
        if len(msg) < 15:
            raise HandshakeError("truncated send_name")
        flags, creation, nlen = struct.unpack(">QIH", msg[1:15])
        challenge = 0
        rest = msg[15:]
    if nlen != len(rest) or nlen == 0:
        raise HandshakeError("bad node name length in handshake")
    if nlen > MAX_NAME:
        raise HandshakeError(f"node name of {nlen} bytes (at most {MAX_NAME})")
    name = rest.decode(errors="strict")
    # The name goes into log lines and becomes an atom: a newline in it
    # would forge a line of our log.
    alive, at, host = name.partition("@")
    if not (alive and at and host and name.isprintable()):
        raise HandshakeError(f"bad node name {name[:64]!r}")
    return flags, challenge, creation, name


def _check_flags(peer: str, peer_flags: int) -> None:
    missing = F.missing(peer_flags, F.MANDATORY)
    if missing:
        raise HandshakeError(f"{peer} lacks the mandatory distribution flags {', '.join(missing)}")


async def handshake_out(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    name: str,
    cookie: str,
    flags: int,
    creation: int,
    timeout: float = 7.0,
    is_connected: Callable[[str], bool] | None = None,
    peer: str | None = None,
) -> HandshakeResult:
    """The connecting side, on an open connection. To a peer that answers
    `alive` (it holds a connection from us), we say `true` (that connection
    is stale: go on) unless `is_connected(peer)` says it is live here."""
    header = _header(writer)
    try:
        async with asyncio.timeout(timeout):
            encoded = name.encode()
            _send(writer, b"N" + struct.pack(">QIH", flags, creation, len(encoded)) + encoded, header)
            status = await _recv(reader, header)
            if status[:1] != b"s":
                raise HandshakeError(f"expected a status, got {status[:1]!r}")
            text = status[1:].decode(errors="replace")
            if text == "alive":
                if is_connected is not None and peer is not None and is_connected(peer):
                    _send(writer, b"sfalse", header)
                    raise HandshakeError("the peer is connected to us already")
                _send(writer, b"strue", header)
            elif text not in ("ok", "ok_simultaneous"):
                raise HandshakeError(f"the peer refused the connection: {text}")
            peer_flags, challenge, peer_creation, peer = _parse_name_msg(await _recv(reader, header), True)
            _check_flags(peer, peer_flags)
            mine = secrets.randbits(32)
            _send(writer, b"r" + struct.pack(">I", mine) + cookies.digest(challenge, cookie), header)
            ack = await _recv(reader, header)
            if ack[:1] != b"a" or len(ack) != 17 or not cookies.matches(ack[1:], mine, cookie):
                raise HandshakeError(f"{peer} did not prove it knows the cookie")
    except asyncio.IncompleteReadError:
        raise HandshakeError("the peer closed the connection during the handshake (wrong cookie?)") from None
    except TimeoutError:
        raise HandshakeError(f"handshake timed out after {timeout} s") from None
    except UnicodeDecodeError:
        raise HandshakeError("node name is not UTF-8") from None
    return HandshakeResult(peer, peer_flags, peer_creation, reader, writer)


async def initiate(
    peer: str,
    *,
    name: str,
    cookie: str,
    flags: int,
    creation: int,
    timeout: float = 7.0,
    epmd_port: int | None = None,
    tls: ssl.SSLContext | None = None,
    is_connected: Callable[[str], bool] | None = None,
) -> HandshakeResult:
    """Connect to node `peer` (`name@host`): ask its host's EPMD for the
    port, open the connection (wrapped in TLS with `tls`, as
    `inet_tls_dist` does, before anything else is said) and run the
    handshake."""
    alive, _, host = peer.partition("@")
    if not alive or not host:
        raise HandshakeError(f"bad node name {peer!r}")
    try:
        port, version = await epmd.port_please(alive, host, epmd_port=epmd_port, timeout=timeout)
    except epmd.EpmdError as exc:
        raise Unreachable(str(exc)) from None
    if version < 6:
        raise HandshakeError(f"{peer} only speaks handshake version {version}; OTP 23+ is required")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=1 << 20), timeout)
    except (OSError, TimeoutError) as exc:
        raise Unreachable(f"cannot connect to {peer} at {host}:{port}: {exc}") from None
    if tls is not None:
        try:
            await asyncio.wait_for(writer.start_tls(tls, server_hostname=host), timeout)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            writer.transport.abort()
            raise HandshakeError(f"TLS handshake with {peer} failed: {exc}") from None
    try:
        result = await handshake_out(
            reader, writer, name=name, cookie=cookie, flags=flags, creation=creation, timeout=timeout,
            is_connected=is_connected, peer=peer,
        )
    except BaseException:
        writer.close()
        raise
    if result.peer_name != peer:
        writer.close()
        raise HandshakeError(f"connected to {result.peer_name} while asking for {peer}")
    return result


async def accept(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    name: str,
    cookie: str,
    flags: int,
    creation: int,
    is_pending: Callable[[str], bool] | None = None,
    timeout: float = 7.0,
    is_connected: Callable[[str], bool] | None = None,
    abandon: Callable[[str], None] | None = None,
) -> HandshakeResult:
    """The accepting side. `is_pending(peer)` says whether we are connecting
    to `peer` ourselves at this moment (the simultaneous-connect rule: the
    greater name keeps its own attempt; the smaller answers
    `ok_simultaneous` and `abandon(peer)`s its own). `is_connected(peer)`:
    a connection to `peer` is up, so we answer `alive` and go on only if
    the peer says `true` (ours is stale: it restarted), as dist_util does."""
    peer = "?"
    header = _header(writer)
    try:
        async with asyncio.timeout(timeout):
            peer_flags, _, peer_creation, peer = _parse_name_msg(await _recv(reader, header), False)
            try:
                _check_flags(peer, peer_flags)
            except HandshakeError:
                _send(writer, b"snot_allowed", header)
                raise
            if is_pending is not None and is_pending(peer):
                # dist_util: the node with the greater name keeps its own attempt.
                if name > peer:
                    _send(writer, b"snok", header)
                    raise HandshakeError(f"simultaneous connect with {peer}: keeping ours")
                _send(writer, b"sok_simultaneous", header)
                if abandon is not None:
                    abandon(peer)
            elif is_connected is not None and is_connected(peer):
                _send(writer, b"salive", header)
                answer = await _recv(reader, header)
                if answer != b"strue":
                    raise HandshakeError(f"{peer} is connected already and gave this attempt up")
            else:
                _send(writer, b"sok", header)
            challenge = secrets.randbits(32)
            encoded = name.encode()
            _send(writer, b"N" + struct.pack(">QIIH", flags, challenge, creation, len(encoded)) + encoded, header)
            reply = await _recv(reader, header)
            if reply[:1] != b"r" or len(reply) != 21:
                raise HandshakeError(f"malformed challenge reply from {peer}")
            if not cookies.matches(reply[5:], challenge, cookie):
                log.error("connection attempt from %s refused: wrong cookie", peer)
                raise HandshakeError(f"{peer} presented a wrong cookie")
            (theirs,) = struct.unpack(">I", reply[1:5])
            _send(writer, b"a" + cookies.digest(theirs, cookie), header)
    except asyncio.IncompleteReadError:
        raise HandshakeError(f"{peer} closed the connection during the handshake") from None
    except TimeoutError:
        raise HandshakeError(f"handshake with {peer} timed out after {timeout} s") from None
    except (UnicodeDecodeError, struct.error):
        raise HandshakeError("malformed handshake message") from None
    return HandshakeResult(peer, peer_flags, peer_creation, reader, writer)
