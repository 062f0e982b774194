"""EPMD, the Erlang Port Mapper Daemon: where nodes on a host find each other.

A distributed node registers its name and listening port with the EPMD of
its host (port 4369) and keeps that connection open: closing it unregisters
the node. To connect to `name@host`, a node asks `host`'s EPMD for the port.
This module speaks EPMD's real protocol, so it works with the `epmd` that
Erlang installs, and it carries a small EPMD-compatible server for machines
that have none.

>>> import asyncio
>>> from beamish.dist import epmd
>>> async def demo():
...     server = await epmd.EpmdServer.start(port=0)
...     reg = await epmd.register("demo", 4242, epmd_port=server.port)
...     found = await epmd.port_please("demo", epmd_port=server.port)
...     reg.close()
...     await server.close()
...     return found
>>> asyncio.run(demo())
(4242, 6)

OTP: mirrors erts' EPMD protocol (ALIVE2_REQ/ALIVE2_X_RESP, PORT_PLEASE2_REQ/
PORT2_RESP, NAMES_REQ); differs in that the node keeps its own creation
rather than EPMD's (both are random per incarnation), and the embedded server
binds to loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import struct
import subprocess
from collections.abc import Mapping
from typing import Final

__all__ = ["EpmdError", "EpmdServer", "Registration", "ensure", "names", "port_please", "register"]

log = logging.getLogger("beamish.dist")

DEFAULT_PORT: Final = 4369
VERSION: Final = 6  # the OTP 23+ handshake
ALIVE2_REQ: Final = 120
ALIVE2_RESP: Final = 121
ALIVE2_X_RESP: Final = 118
PORT_PLEASE2_REQ: Final = 122
PORT2_RESP: Final = 119
NAMES_REQ: Final = 110
NORMAL_NODE: Final = 77
TCP: Final = 0
MAX_REPLY: Final = 64 * 1024  # bound on what we read from an EPMD


class EpmdError(OSError):
    """EPMD refused, is unreachable, or answered something malformed."""


def epmd_port(explicit: int | None = None) -> int:
    if explicit is not None:
        return explicit
    return int(os.environ.get("ERL_EPMD_PORT", DEFAULT_PORT))


class Registration:
    """A node's registration: alive while the connection to EPMD is open."""

    def __init__(self, writer: asyncio.StreamWriter, creation: int) -> None:
        self._writer = writer
        self.creation = creation

    def close(self) -> None:
        self._writer.close()


async def register(
    name: str, port: int, *, host: str = "127.0.0.1", epmd_port: int | None = None, timeout: float = 5.0
) -> Registration:
    """Register `name` (the part before `@`) as listening on `port`."""
    encoded = name.encode()
    body = struct.pack(">BHBBHHH", ALIVE2_REQ, port, NORMAL_NODE, TCP, VERSION, VERSION, len(encoded)) + encoded + b"\x00\x00"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, _port(epmd_port)), timeout)
    except (OSError, TimeoutError) as exc:
        raise EpmdError(f"cannot reach EPMD at {host}:{_port(epmd_port)}: {exc}") from None
    writer.write(struct.pack(">H", len(body)) + body)
    try:
        head = await asyncio.wait_for(reader.readexactly(2), timeout)
        if head[0] == ALIVE2_X_RESP:
            rest = await asyncio.wait_for(reader.readexactly(4), timeout)
            result, creation = head[1], struct.unpack(">I", rest)[0]
        elif head[0] == ALIVE2_RESP:
            rest = await asyncio.wait_for(reader.readexactly(2), timeout)
            result, creation = head[1], struct.unpack(">H", rest)[0]
        else:
            raise EpmdError(f"unexpected EPMD reply {head!r}")
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
        writer.close()
        raise EpmdError(f"EPMD closed the registration of {name!r}: {exc}") from None
    if result != 0:
        writer.close()
        # erts' epmd answers 1 to a name already registered (and to nothing else a node sends).
        raise EpmdError(f"the name {name!r} is taken: EPMD already has a node of that name (result {result})")
    return Registration(writer, creation)


async def port_please(
    name: str, host: str = "127.0.0.1", *, epmd_port: int | None = None, timeout: float = 5.0
) -> tuple[int, int]:
    """The (port, highest handshake version) of node `name` on `host`."""
    data = await _request(host, _port(epmd_port), bytes([PORT_PLEASE2_REQ]) + name.encode(), timeout)
    if len(data) < 2 or data[0] != PORT2_RESP:
        raise EpmdError(f"malformed PORT2_RESP {data[:16]!r}")
    if data[1] != 0:
        raise EpmdError(f"no node {name!r} is registered with EPMD on {host}")
    if len(data) < 10:
        raise EpmdError("truncated PORT2_RESP")
    port, _, _, high, _ = struct.unpack(">HBBHH", data[2:10])
    return port, high


async def names(host: str = "127.0.0.1", *, epmd_port: int | None = None, timeout: float = 5.0) -> dict[str, int]:
    """Every node registered on `host`: name -> port (EPMD's NAMES_REQ)."""
    data = await _request(host, _port(epmd_port), bytes([NAMES_REQ]), timeout)
    found: dict[str, int] = {}
    for line in data[4:].decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "name" and parts[3] == "port":
            found[parts[1]] = int(parts[4])
    return found


async def _request(host: str, port: int, body: bytes, timeout: float) -> bytes:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        raise EpmdError(f"cannot reach EPMD at {host}:{port}: {exc}") from None
    try:
        writer.write(struct.pack(">H", len(body)) + body)
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await asyncio.wait_for(reader.read(4096), timeout)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_REPLY:
                raise EpmdError("EPMD reply too large")
            chunks.append(chunk)
        return b"".join(chunks)
    except TimeoutError:
        raise EpmdError(f"EPMD at {host}:{port} did not answer") from None
    finally:
        writer.close()


def _port(explicit: int | None) -> int:
    return epmd_port(explicit)


async def ensure(*, epmd_port: int | None = None, listen: str = "127.0.0.1") -> EpmdServer | None:
    """Make sure an EPMD listens on this host: use one already there, else
    start the system's `epmd -daemon`, else serve an embedded one (returned,
    to be closed by the caller).

    The daemon is the host's, as Erlang's is: shared by every node and left
    running when this one stops (`epmd -kill` stops it). It listens where the
    node does (`listen`; see `_daemon_env`), on loopback by default, not on
    every interface as a bare `epmd -daemon` would."""
    port = _port(epmd_port)
    if await _listening(port):
        return None
    exe = shutil.which("epmd")
    if exe is not None:
        env = _daemon_env(port, listen, os.environ)
        await asyncio.to_thread(subprocess.run, [exe, "-daemon"], env=env, check=False)
        for _ in range(100):
            if await _listening(port):
                return None
            await asyncio.sleep(0.02)
    log.info("no epmd found: serving an embedded EPMD on 127.0.0.1:%d", port)
    return await EpmdServer.start(port=port)


def _daemon_env(port: int, listen: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment to start `epmd -daemon` in, for a node listening on
    `listen`: ERL_EPMD_ADDRESS names that address (epmd adds loopback
    itself), loopback for a loopback node, and is left out, so that epmd
    listens everywhere, only for a node that listens everywhere (or on a
    host name). One the user set is kept.

    >>> _daemon_env(4369, "127.0.0.1", {})
    {'ERL_EPMD_PORT': '4369', 'ERL_EPMD_ADDRESS': '127.0.0.1'}
    >>> _daemon_env(4369, "10.0.0.5", {})["ERL_EPMD_ADDRESS"]
    '10.0.0.5'
    >>> "ERL_EPMD_ADDRESS" in _daemon_env(4369, "0.0.0.0", {})
    False
    """
    env = dict(environ, ERL_EPMD_PORT=str(port))
    if "ERL_EPMD_ADDRESS" in environ:
        return env
    if listen == "localhost":
        env["ERL_EPMD_ADDRESS"] = "127.0.0.1"
        return env
    try:
        address = ipaddress.ip_address(listen)
    except ValueError:
        return env  # a host name: epmd takes only addresses, so everywhere, as before
    if not address.is_unspecified:
        env["ERL_EPMD_ADDRESS"] = "127.0.0.1" if address.is_loopback else str(address)
    return env


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


class EpmdServer:
    """An EPMD-compatible registry (ALIVE2, PORT_PLEASE2, NAMES) for hosts
    without Erlang installed; Erlang nodes can register in it too."""

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        self.port: int = server.sockets[0].getsockname()[1]
        self.nodes: dict[str, tuple[int, int, int]] = {}  # name -> (port, high, low)
        self._creation = 0

    @classmethod
    async def start(cls, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> EpmdServer:
        holder: list[EpmdServer] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await holder[0]._serve(reader, writer)

        server = await asyncio.start_server(handle, host, port)
        me = cls(server)
        holder.append(me)
        return me

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            (size,) = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), 10))
            req = await asyncio.wait_for(reader.readexactly(size), 10)
            if not req:
                return
            if req[0] == ALIVE2_REQ:
                await self._alive(req, reader, writer)
            elif req[0] == PORT_PLEASE2_REQ:
                entry = self.nodes.get(req[1:].decode(errors="replace"))
                if entry is None:
                    writer.write(bytes([PORT2_RESP, 1]))
                else:
                    name = req[1:]
                    writer.write(
                        struct.pack(">BBHBBHHH", PORT2_RESP, 0, entry[0], NORMAL_NODE, TCP, entry[1], entry[2], len(name))
                        + name
                        + b"\x00\x00"
                    )
            elif req[0] == NAMES_REQ:
                lines = "".join(f"name {n} at port {p}\n" for n, (p, _, _) in self.nodes.items())
                writer.write(struct.pack(">I", self.port) + lines.encode())
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, struct.error):
            pass
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

    async def _alive(self, req: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # ALIVE2_REQ: 120, port, node type, protocol, highest and lowest
        # version, name length, name, extra length, extra (erts' epmd_srv.c
        # refuses a packet whose lengths do not add up, as here).
        nlen = struct.unpack_from(">H", req, 9)[0] if len(req) >= 11 else -1
        elen = struct.unpack_from(">H", req, 11 + nlen)[0] if nlen >= 0 and len(req) >= 13 + nlen else -1
        if elen < 0 or len(req) != 13 + nlen + elen:
            log.warning(
                "embedded EPMD: refused an ALIVE2 request whose lengths (name %d, extra %d) disagree with its %d bytes",
                nlen, elen, len(req),
            )  # fmt: skip
            writer.write(struct.pack(">BBI", ALIVE2_X_RESP, 1, 0))
            return
        port, _, _, high, low = struct.unpack_from(">HBBHH", req, 1)
        name = req[11 : 11 + nlen].decode(errors="replace")
        if name in self.nodes or not name:
            writer.write(struct.pack(">BBI", ALIVE2_X_RESP, 1, 0))
            return
        self._creation = self._creation % 0xFFFFFFFE + 1
        self.nodes[name] = (port, high, low)
        writer.write(struct.pack(">BBI", ALIVE2_X_RESP, 0, self._creation))
        await writer.drain()
        try:
            await reader.read()  # registered until the node closes the connection
        finally:
            self.nodes.pop(name, None)
