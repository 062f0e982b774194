"""EPMD: our client against the system's epmd, and a real Erlang node
registering in our embedded EPMD server."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import subprocess

import pytest
from tests.interop.erlang import ensure_epmd, require, unique_name

from beamish.dist import epmd

pytestmark = pytest.mark.interop


def test_register_look_up_and_unregister_with_the_system_epmd() -> None:
    ensure_epmd()
    name = unique_name("reg")

    async def main() -> None:
        reg = await epmd.register(name, 40123)
        assert await epmd.port_please(name) == (40123, 6)
        assert (await epmd.names())[name] == 40123
        with pytest.raises(epmd.EpmdError, match="taken"):
            await epmd.register(name, 40124)
        reg.close()
        for _ in range(100):
            if name not in await epmd.names():
                break
            await asyncio.sleep(0.02)
        with pytest.raises(epmd.EpmdError, match="no node"):
            await epmd.port_please(name)

    asyncio.run(main())


def test_a_real_erlang_node_registers_in_the_embedded_epmd() -> None:
    erl = require("erl")
    name = unique_name("inembedded")

    async def main() -> None:
        server = await epmd.EpmdServer.start(port=0)
        env = {"ERL_EPMD_PORT": str(server.port), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
        proc = await asyncio.create_subprocess_exec(
            erl, "-noshell", "-name", f"{name}@127.0.0.1", "-setcookie", "x",
            "-eval", "receive after 20000 -> halt() end.",
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(300):
                if name in server.nodes:
                    break
                await asyncio.sleep(0.05)
            port, version = await epmd.port_please(name, epmd_port=server.port)
            assert port > 0 and version == 6
            assert (await epmd.names(epmd_port=server.port))[name] == port
        finally:
            proc.kill()
            await proc.wait()
            await server.close()

    asyncio.run(main())


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (/proc/net/tcp and tcp6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    # The kernel prints each 32-bit word in host (little-endian) order.
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, width // 2, 4))
                    found.add(str(ipaddress.ip_address(words)))
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_epmd_daemon_beamish_starts_listens_on_loopback_only() -> None:
    # A bare `epmd -daemon` listens on 0.0.0.0 and [::]; for a loopback node
    # beamish starts it with ERL_EPMD_ADDRESS=127.0.0.1 (epmd adds ::1 itself).
    exe = require("epmd")
    port = _free_port()
    try:
        assert asyncio.run(epmd.ensure(epmd_port=port)) is None  # the system's daemon, not the embedded one
        addresses = _listening_addresses(port)
        assert addresses and addresses <= {"127.0.0.1", "::1"}, addresses
    finally:
        # The daemon outlives the node by design: stop this one, by its port.
        subprocess.run([exe, "-port", str(port), "-kill"], capture_output=True, check=False)


@pytest.mark.parametrize(
    ("name_length", "extra_length", "what"),
    [(200, 0, "name length past the packet"), (3, 0, "name length short of it"), (5, 9, "extra length past it")],
)
def test_the_embedded_epmd_refuses_an_alive2_whose_lengths_lie(
    name_length: int, extra_length: int, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> tuple[bytes, dict[str, tuple[int, int, int]], int]:
        server = await epmd.EpmdServer.start(port=0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            req = struct.pack(">BHBBHHH", epmd.ALIVE2_REQ, 4242, 77, 0, 6, 6, name_length) + b"liar5" + struct.pack(">H", extra_length)
            writer.write(struct.pack(">H", len(req)) + req)
            reply = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            # A request that tells the truth is still served.
            reg = await epmd.register("honest", 4243, epmd_port=server.port)
            found = (await epmd.port_please("honest", epmd_port=server.port))[0]
            reg.close()
            return reply, dict(server.nodes), found
        finally:
            await server.close()

    caplog.set_level(logging.INFO, logger="beamish.dist")
    reply, nodes, found = asyncio.run(main())
    assert reply == struct.pack(">BBI", epmd.ALIVE2_X_RESP, 1, 0), what
    assert "liar5" not in nodes and found == 4243
    lines = [r for r in caplog.records if r.name == "beamish.dist"]
    assert len(lines) == 1 and "refused an ALIVE2" in lines[0].getMessage()
