"""Cluster formation against real nodes: beamish nodes in one loop, `beamish
node` OS processes and real `erl` nodes, all on loopback with a per-test
cookie and per-test names."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.interop.beamish_nodes import many_nodes
from tests.interop.erlang import HOST, ensure_epmd, erl_node, new_cookie, unique_name

import beamish
from beamish import Atom, StartError, Supervisor, Term, dist
from beamish.cluster import (
    Backoff,
    Cluster,
    Dns,
    EpmdHosts,
    Static,
    Topology,
    TopologyStatus,
    parse_topologies,
)
from beamish.config import ConfigError, load
from beamish.testing import eventually

FAST = Backoff(initial=0.05, max=0.4, jitter=0.5)


def names(*prefixes: str) -> list[str]:
    return [f"{unique_name(p)}@{HOST}" for p in prefixes]


async def status(topology: str) -> TopologyStatus:
    return (await Cluster.status())[topology]


async def connected_to(*peers: str) -> bool:
    return {Atom(p) for p in peers} <= set(dist.nodes())


# --- strategies against real nodes -------------------------------------------------


@pytest.mark.interop
def test_the_static_strategy_connects_every_listed_node_beamish_and_erlang() -> None:
    cookie = new_cookie()
    with erl_node("st", cookie=cookie) as erl:

        async def main(others: list[Atom]) -> TopologyStatus:
            peers = [*map(str, others), erl.name]
            assert not await connected_to(*peers[:1])  # nothing connects them but the topology
            await Cluster.start_link([Topology("seeds", Static(tuple(peers)), backoff=FAST)])
            await eventually(lambda: connected_to(*peers), timeout=10)
            await eventually(lambda: _connected_in_status("seeds", peers), timeout=5)
            return await status("seeds")

        result = many_nodes(names("sa", "sb", "sc"), main, cookie=cookie)
    assert isinstance(result, TopologyStatus)
    assert result.strategy == "static" and len(result.wanted) == 3 and result.retrying == ()


async def _connected_in_status(topology: str, peers: list[str]) -> bool:
    return sorted((await status(topology)).connected) == sorted(peers)


@pytest.mark.interop
def test_the_epmd_hosts_strategy_connects_the_nodes_epmd_lists_with_the_prefix() -> None:
    cookie = new_cookie()
    prefix = f"ep{uuid.uuid4().hex[:8]}"
    ours = [f"{prefix}_b@{HOST}", f"{prefix}_c@{HOST}"]
    stranger = f"{unique_name('other')}@{HOST}"  # registered in the same EPMD, without the prefix
    with erl_node(prefix, cookie=cookie) as erl:

        async def main(others: list[Atom]) -> TopologyStatus:
            await Cluster.start_link([Topology("local", EpmdHosts((HOST,), prefix=prefix), backoff=FAST)])
            want = [*ours, erl.name]
            await eventually(lambda: _connected_in_status("local", want), timeout=10)
            assert Atom(stranger) not in dist.nodes()
            return await status("local")

        me = f"{prefix}_a@{HOST}"  # has the prefix too: a node never connects to itself
        result = many_nodes([me, *ours, stranger], main, cookie=cookie)
    assert isinstance(result, TopologyStatus)
    assert sorted(result.wanted) == sorted([*ours, erl.name])


@pytest.mark.interop
def test_the_dns_strategy_connects_basename_at_each_address_the_name_resolves_to() -> None:
    cookie = new_cookie()
    basename = unique_name("dns")

    async def main(others: list[Atom]) -> TopologyStatus:
        await Cluster.start_link([Topology("dns", Dns("localhost", basename), backoff=FAST)])
        await eventually(lambda: connected_to(f"{basename}@127.0.0.1"), timeout=10)
        return await status("dns")

    result = many_nodes([names("da")[0], f"{basename}@127.0.0.1"], main, cookie=cookie)
    assert isinstance(result, TopologyStatus)
    assert result.wanted == (f"{basename}@127.0.0.1",) and result.connected == result.wanted


class Listed:
    """A strategy of the test's own whose answer the test changes."""

    kind = "listed"

    def __init__(self, nodes: list[str]) -> None:
        self.listed = nodes

    async def nodes(self) -> list[str]:
        return list(self.listed)


@pytest.mark.parametrize("prune", [True, False])
def test_a_node_that_leaves_the_list_is_disconnected_only_when_the_topology_prunes(prune: bool) -> None:
    cookie = new_cookie()

    async def main(others: list[Atom]) -> list[Atom]:
        b, c = map(str, others)
        strategy = Listed([b, c])
        await Cluster.start_link([Topology("t", strategy, polling_interval=0.05, backoff=FAST, prune=prune)])
        await eventually(lambda: connected_to(b, c), timeout=10)
        strategy.listed = [b]
        await eventually(lambda: _wanted_is("t", [b]), timeout=5)  # a poll saw the change
        if prune:
            await eventually(lambda: Atom(c) not in dist.nodes(), timeout=5)
        return dist.nodes()

    peers = names("pa", "pb", "pc")
    result = many_nodes(peers, main, cookie=cookie)
    assert isinstance(result, list)
    assert (Atom(peers[2]) in result) is not prune


async def _wanted_is(topology: str, nodes: list[str]) -> bool:
    return list((await status(topology)).wanted) == nodes


@contextmanager
def beamish_node(name: str, cookie: str) -> Iterator[subprocess.Popen[str]]:
    """`beamish node` as an OS process, up (it printed its line) when yielded."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "beamish", "node", "--name", name],
        env={**os.environ, "BEAMISH_COOKIE": cookie},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the node prints it, or dies and we read EOF
        assert line.startswith(f"node {name} up"), line + proc.stdout.read()
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.interop
def test_a_node_killed_and_restarted_under_the_same_name_is_connected_again() -> None:
    ensure_epmd()
    cookie = new_cookie()
    peer = names("rs")[0]

    async def main(others: list[Atom]) -> tuple[int, list[str]]:
        # A long poll: only the backoff's retries can bring the node back in time.
        topology = Topology("r", Static((peer,)), polling_interval=60.0, backoff=FAST)
        dist.monitor_nodes(True)
        await Cluster.start_link([topology])
        await beamish.receive(lambda m: m == ("nodeup", peer), timeout=10)
        os.kill(first.pid, signal.SIGKILL)
        await beamish.receive(lambda m: m == ("nodedown", peer), timeout=10)
        await eventually(lambda: _failures("r", peer, at_least=2), timeout=10)  # it kept trying meanwhile
        failures = (await status("r")).retrying[0][1]
        with beamish_node(peer, cookie):
            await beamish.receive(lambda m: m == ("nodeup", peer), timeout=10)
            after = await status("r")
        return failures, list(after.connected)

    with beamish_node(peer, cookie) as first:
        result = many_nodes(names("ra"), main, cookie=cookie)
    assert result == (result[0], [peer]) and isinstance(result[0], int) and result[0] >= 2


async def _failures(topology: str, peer: str, *, at_least: int) -> bool:
    return any(n == peer and f >= at_least for n, f in (await status(topology)).retrying)


def test_formation_needs_a_distributed_node() -> None:
    async def main() -> Term:
        with pytest.raises(StartError) as info:
            await Cluster.start_link([Topology("x", Static(("a@127.0.0.1",)))])
        return info.value.reason

    reason = beamish.run(main)
    assert isinstance(reason, tuple) and "not_alive" in repr(reason)


def test_status_lists_each_topology_of_a_cluster_under_its_own_name() -> None:
    cookie = new_cookie()

    async def main(others: list[Atom]) -> dict[str, TopologyStatus]:
        spec = Cluster.child_spec(
            [Topology("one", Static((str(others[0]),))), Topology("two", Static(("nobody_here@127.0.0.1",)), backoff=FAST)],
            name="MyApp.ClusterSupervisor",
        )
        await Supervisor.start_link([spec])
        await eventually(lambda: _has_failures("MyApp.ClusterSupervisor"), timeout=10)
        return await Cluster.status("MyApp.ClusterSupervisor")

    peers = names("ma", "mb")
    result = many_nodes(peers, main, cookie=cookie)
    assert isinstance(result, dict) and sorted(result) == ["one", "two"]
    assert result["one"].connected == (peers[1],)
    assert result["two"].connected == () and result["two"].retrying[0][0] == "nobody_here@127.0.0.1"


async def _has_failures(cluster: str) -> bool:
    found = await Cluster.status(cluster)
    return bool(found["two"].retrying) and bool(found["one"].connected)


# --- configuration -----------------------------------------------------------------


def test_topologies_are_read_from_the_toml_files_of_the_environment(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[cluster.topologies.seeds]\nstrategy = "static"\nhosts = ["a@10.0.0.1"]\n'
        '[cluster.topologies.dns]\nstrategy = "dns"\nquery = "app.internal"\nbasename = "app"\n'
    )
    (tmp_path / "prod.toml").write_text(
        '[cluster.topologies.seeds]\nhosts = ["a@10.0.0.1", "b@10.0.0.2"]\npolling_interval = 2\n'
        "backoff = { initial = 0.5, max = 10 }\n"
        '[cluster.topologies.local]\nstrategy = "epmd_hosts"\nhosts = ["10.0.0.1"]\nprefix = "app"\nprune = true\n'
    )
    cfg = load(tmp_path, env="prod")
    spec = Cluster.from_config(cfg, name="MyApp.ClusterSupervisor")
    assert spec.id == "MyApp.ClusterSupervisor" and spec.type == "supervisor"
    found = {t.name: t for t in parse_topologies(cfg.sections["cluster"]["topologies"], config=cfg)}
    assert found["seeds"] == Topology("seeds", Static(("a@10.0.0.1", "b@10.0.0.2")), 2.0, Backoff(0.5, 10.0, 0.2), False)
    assert found["dns"] == Topology("dns", Dns("app.internal", "app"), prune=True)
    assert found["local"] == Topology("local", EpmdHosts(("10.0.0.1",), "app"), prune=True)


def test_from_config_reads_the_application_env_when_given_no_config(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[cluster.topologies.seeds]\nstrategy = "static"\nhosts = ["a@10.0.0.1"]\n')

    async def main() -> Term:
        beamish.application.load_config(tmp_path, env="dev")
        return Cluster.from_config().start[1][0]

    assert beamish.run(main) == (Topology("seeds", Static(("a@10.0.0.1",))),)


def test_a_bad_configuration_names_the_file_line_and_key_of_every_problem(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        "[cluster.topologies.a]\n"
        'strategy = "gossip"\n'  # line 2
        "[cluster.topologies.b]\n"
        'strategy = "static"\n'
        'hosts = ["10.0.0.1"]\n'  # line 5: a host, not a node name
        "[cluster.topologies.c]\n"
        'strategy = "dns"\n'
        'query = "x"\n'  # no basename
        "polling_interval = -1\n"  # line 9
        'colour = "blue"\n'  # line 10
        "[cluster.topologies.d]\n"
        'strategy = "epmd_hosts"\n'
        'hosts = "10.0.0.1"\n'  # line 13: not a list
        "backoff = { initial = 1, cap = 3 }\n"  # line 14
    )
    cfg = load(tmp_path, env="dev")
    with pytest.raises(ConfigError) as info:
        Cluster.from_config(cfg)
    text = str(info.value)
    for line, key, words in [
        (2, "cluster.topologies.a.strategy", '"static", "epmd_hosts", "dns"'),
        (5, "cluster.topologies.b.hosts", "a node name"),
        (6, "cluster.topologies.c.basename", "required key missing"),  # its table's line
        (9, "cluster.topologies.c.polling_interval", "positive"),
        (10, "cluster.topologies.c.colour", "unknown key"),
        (13, "cluster.topologies.d.hosts", "expected list"),
        (14, "cluster.topologies.d.backoff.cap", "unknown key"),  # the inline table's line
    ]:
        wanted = f"config.toml:{line}: {key}: "
        assert any(wanted in row and words in row for row in text.splitlines()), (wanted, words, text)
    assert len(info.value.problems) == 7


def test_topologies_must_be_topology_objects_with_unique_names() -> None:
    with pytest.raises(TypeError, match="Topology"):
        Cluster.child_spec([{"strategy": "static"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="unique"):
        Cluster.child_spec([Topology("a", Static(())), Topology("a", Static(()))])
    with pytest.raises(ValueError, match="polling_interval"):
        Topology("a", Static(()), polling_interval=0)


def test_backoff_doubles_up_to_its_cap_and_jitter_only_shortens_it() -> None:
    b = Backoff(initial=0.5, max=4.0, jitter=0.25)
    assert [b.delay(n, rand=lambda: 0.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.delay(3, rand=lambda: 1.0) == 1.5
    assert all(0.75 * 4.0 <= b.delay(9) <= 4.0 for _ in range(100))


async def test_a_dns_name_that_does_not_resolve_fails_the_poll() -> None:
    with pytest.raises(socket.gaierror):
        await Dns("no-such-host.invalid", "app").nodes()


async def test_an_epmd_host_that_does_not_answer_is_skipped() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    assert await EpmdHosts(("127.0.0.1",), epmd_port=1).nodes() == []

