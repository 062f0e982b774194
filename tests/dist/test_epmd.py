"""EPMD: our client against the system's epmd, and a real Erlang node
registering in our embedded EPMD server."""

from __future__ import annotations

import asyncio
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
