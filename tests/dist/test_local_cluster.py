"""`LocalCluster` / `beamish cluster`: N local nodes of one application,
connected to each other, a dead one restarted under its name and rejoining,
all stopped together."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from beamish import GenServer, dist
from beamish.dist import epmd
from beamish.dist.local_cluster import LocalCluster
from beamish.testing import eventually

ROOT = Path(__file__).resolve().parent.parent.parent
APP = "examples.cpu_cluster:CpuApp"


def alive(os_pid: int) -> bool:
    """Running (a zombie waiting for a parent that does not reap it is not)."""
    try:
        status = Path(f"/proc/{os_pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def children(os_pid: int) -> list[int]:
    return [int(p) for task in Path(f"/proc/{os_pid}/task").iterdir() for p in (task / "children").read_text().split()]


@pytest.mark.beamish(name=f"lc_test_{secrets.token_hex(3)}@127.0.0.1")
async def test_nodes_connect_a_killed_one_restarts_and_rejoins_and_all_stop() -> None:
    cluster = LocalCluster(APP, nodes=2, prefix=f"lc{secrets.token_hex(3)}_", cwd=str(ROOT))
    await dist.start(cookie=cluster.cookie)
    await cluster.start()
    try:
        first, second = cluster.nodes
        for node in cluster.nodes:
            assert await GenServer.call(("cruncher", node), ("work", 10)) == await _local_crunch(10)

        async def meshed(node: str, other: str) -> bool:
            return other in await GenServer.call(("cruncher", node), "nodes")

        await eventually(lambda: meshed(first, second), timeout=10)
        await eventually(lambda: meshed(second, first), timeout=10)

        before = await cluster.os_pids()
        os.kill(before[first], signal.SIGKILL)

        async def restarted() -> bool:
            now = await cluster.os_pids()
            return first in now and now[first] != before[first]

        await eventually(restarted, timeout=30, interval=0.1)
        # The new incarnation answers under the same name and is meshed again.
        assert await GenServer.call(("cruncher", first), ("work", 10), timeout=10) == await _local_crunch(10)
        await eventually(lambda: meshed(first, second), timeout=10)
        await eventually(lambda: meshed(second, first), timeout=10)
        after = await cluster.os_pids()
    finally:
        await cluster.stop()
    assert not any(alive(p) for p in after.values())
    assert await cluster.os_pids() == {}


async def _local_crunch(rounds: int) -> str:
    from examples.cpu_cluster import crunch

    return crunch(rounds)


def _cluster_command(prefix: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "beamish", "cluster", APP, "--nodes", "2", "--prefix", prefix],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def _wait_until_up(proc: subprocess.Popen[str], prefix: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == f"cluster up: {prefix}1@127.0.0.1 {prefix}2@127.0.0.1", proc.stderr.read() if proc.stderr else ""
    assert {f"{prefix}1", f"{prefix}2"} <= set(asyncio.run(epmd.names()))


def test_the_cluster_command_runs_until_sigterm_and_stops_every_node() -> None:
    prefix = f"lccli{secrets.token_hex(3)}_"
    proc = _cluster_command(prefix)
    try:
        _wait_until_up(proc, prefix)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "cluster stopped" in out
        assert not [name for name in asyncio.run(epmd.names()) if name.startswith(prefix)]
    finally:
        proc.kill()
        proc.communicate()  # also closes the pipes


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the nodes through Linux's /proc")
def test_the_nodes_go_with_a_cluster_command_killed_by_sigkill() -> None:
    prefix = f"lckill{secrets.token_hex(3)}_"
    proc = _cluster_command(prefix)
    nodes: list[int] = []
    try:
        _wait_until_up(proc, prefix)
        nodes = children(proc.pid)
        assert len(nodes) == 2 and all(alive(n) for n in nodes)
        proc.kill()
        proc.wait()  # not communicate: the nodes write to its stderr pipe too

        async def gone() -> bool:
            names = await epmd.names()
            return not any(alive(n) for n in nodes) and not [n for n in names if n.startswith(prefix)]

        asyncio.run(eventually(gone, timeout=20, interval=0.05))
    finally:
        for n in nodes:
            if alive(n):
                os.kill(n, signal.SIGKILL)
        proc.kill()
        proc.communicate()
