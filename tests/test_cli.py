"""`python -m beamish node`: a node started from the command line joins the
cluster, answers rpc for its allow-list, and leaves cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

import beamish
from beamish import dist
from beamish.dist import rpc


@pytest.mark.interop
def test_node_command_serves_rpc_and_stops_on_sigterm() -> None:
    ensure_epmd()
    cookie = new_cookie()
    name = f"{unique_name('cli')}@{HOST}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "beamish", "node", "--name", name, "--cookie", cookie, "--rpc-allow", "math"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"node {name} up"), first + (proc.stderr.read() if proc.stderr else "")

        async def client() -> object:
            await dist.start(cookie=cookie)
            got = await rpc.call(name, "math", "sqrt", [16.0], timeout=5)
            with pytest.raises(rpc.BadRpc):
                await rpc.call(name, "os", "getcwd", [], timeout=5)
            return got

        assert beamish.run(client, name=f"{unique_name('cliclient')}@{HOST}") == 4.0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "leaving the cluster" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_help_lists_the_node_subcommand() -> None:
    done = subprocess.run([sys.executable, "-m", "beamish", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "node" in done.stdout
    done = subprocess.run([sys.executable, "-m", "beamish", "node"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--name" in done.stderr
