"""beamish.cluster.discovery on one node and on three beamish nodes in one
loop: register on one node and discover on the others, exits and node
stops, health checks, round robin and least loaded, watch messages."""

from __future__ import annotations

import functools

import pytest
from tests.cluster.nodes import Cluster, run_cluster, until

import beamish
from beamish import BadArg
from beamish.cluster import discovery
from beamish.cluster.discovery import Instance
from beamish.terms import Term
from beamish.testing import assert_receive, eventually, refute_receive


async def service(name: str, endpoint: str, meta: Term = None, **options: Term) -> None:
    """A process that registers itself and stays until told to stop."""
    await discovery.register_service(name, endpoint, meta, **options)
    while True:
        msg = await beamish.receive(lambda m: m == "stop" or (type(m) is tuple and m[0] == "report"))
        if msg == "stop":
            return
        _, load, who = msg
        await discovery.report_load(name, load)
        beamish.send(who, "reported")


@pytest.mark.beamish
async def test_register_discover_select_and_unregister() -> None:
    await discovery.start_link()
    assert discovery.discover("s") == [] and discovery.select("s") is None
    pids = [beamish.spawn(service, "s", f"ep{i}") for i in range(3)]
    await eventually(lambda: len(discovery.discover("s")) == 3)
    order = [discovery.select("s").endpoint for _ in range(6)]  # type: ignore[union-attr]
    assert order[:3] == order[3:] and sorted(order[:3]) == ["ep0", "ep1", "ep2"]
    assert discovery.select("s", "random") in discovery.discover("s")
    with pytest.raises(BadArg):
        discovery.select("s", "best")  # type: ignore[arg-type]

    await discovery.register_service("s", "mine", {"w": 1})
    await discovery.report_load("s", 5)
    assert {i.endpoint: i.load for i in discovery.discover("s")}["mine"] == 5.0
    assert discovery.select("s", "least_loaded").endpoint != "mine"  # type: ignore[union-attr]
    await discovery.unregister_service("s")
    assert [i.endpoint for i in discovery.discover("s")] == ["ep0", "ep1", "ep2"]

    beamish.send(pids[1], "stop")
    await eventually(lambda: [i.endpoint for i in discovery.discover("s")] == ["ep0", "ep2"])


@pytest.mark.beamish
async def test_health_checks_mark_an_instance_down_then_up() -> None:
    await discovery.start_link()
    healthy = {"ok": True}
    ref = await discovery.watch("h")
    assert ref == []
    beamish.spawn(functools.partial(service, "h", "ep", health_check=lambda: healthy["ok"], interval=0.01, max_failures=2))
    up = await assert_receive(("service_up", "h", Instance), timeout=1)
    healthy["ok"] = False
    down = await assert_receive(("service_down", "h", Instance), timeout=1)
    assert down[2].pid == up[2].pid and discovery.discover("h") == []
    # A forged report (anyone can send the server a message) changes nothing.
    beamish.send("beamish_discovery", ("health", beamish.make_ref(), True))
    await refute_receive(("service_up", "h", Instance), timeout=0.05)
    healthy["ok"] = True
    await assert_receive(("service_up", "h", Instance), timeout=1)
    assert [i.status for i in discovery.discover("h")] == ["up"]

    async def raising() -> bool:
        raise RuntimeError("unreachable")

    await discovery.watch("h2")
    beamish.spawn(functools.partial(service, "h2", "ep", health_check=raising, interval=0.01, max_failures=1))
    await assert_receive(("service_up", "h2", Instance), timeout=1)
    await assert_receive(("service_down", "h2", Instance), timeout=1)
    assert discovery.discover("h2") == []
    await discovery.unwatch("h")
    await refute_receive(("service_up", "h", Instance), timeout=0.05)


def test_three_nodes_register_discover_and_forget() -> None:
    async def body(c: Cluster) -> None:
        for i in range(3):
            await c.on(i, discovery.start_link)
        await c.on(2, discovery.watch, "api")
        watcher2 = await c.on(2, beamish.self)

        def discovered(i: int, n: int) -> object:
            return functools.partial(_count, c, i, n)

        p0 = await c.on(0, beamish.spawn, service, "api", "http://a", {"zone": "eu"})
        p1 = await c.on(1, beamish.spawn, service, "api", "http://b", {"zone": "us"})
        for i in range(3):
            await until(discovered(i, 2))  # type: ignore[arg-type]
        instances = await c.on(2, discovery.discover, "api")
        assert [(x.endpoint, x.meta, x.node) for x in instances] == sorted(
            [("http://a", {"zone": "eu"}, c.names[0]), ("http://b", {"zone": "us"}, c.names[1])], key=lambda t: str(t[2])
        )
        # Round robin on a node that registered nothing.
        picks = [(await c.on(2, discovery.select, "api")).endpoint for _ in range(4)]
        assert picks[0] != picks[1] and picks[:2] == picks[2:]
        # Load reported on node 1 is read on node 2.
        await c.on(1, _report_load_as, p1, 0.5)
        await c.on(0, _report_load_as, p0, 9.0)
        await until(lambda: c.on(2, lambda: (discovery.select("api", "least_loaded") or instances[0]).endpoint == "http://b"))
        # The registering process exits: gone everywhere.
        await c.on(0, beamish.send, p0, "stop")
        for i in range(3):
            await until(discovered(i, 1))  # type: ignore[arg-type]
        # A node stops: its instances are gone everywhere else.
        await c.stop_node(1)
        for i in (0, 2):
            await until(discovered(i, 0))  # type: ignore[arg-type]
        # The watcher on node 2 saw it all: up, up, down, down.
        seen = await c.on(2, _drain, watcher2)
        kinds = [m[0] for m in seen if m[1] == "api"]
        assert sorted(kinds[:2]) == ["service_up", "service_up"] and kinds[2:] == ["service_down", "service_down"], seen

    run_cluster(3, body)


async def _count(c: Cluster, i: int, n: int) -> bool:
    return len(await c.on(i, discovery.discover, "api")) == n


async def _report_load_as(pid: beamish.Pid, load: float) -> None:
    # report_load is the instance's own call: ask the instance process to make it.
    me = beamish.self()
    beamish.send(pid, ("report", load, me))
    await beamish.receive(lambda m: m == "reported", 2)


async def _drain(_: beamish.Pid) -> list[Term]:
    out = []
    while True:
        try:
            out.append(await beamish.receive(lambda m: type(m) is tuple and m[0] in ("service_up", "service_down"), 0))
        except TimeoutError:
            return out
