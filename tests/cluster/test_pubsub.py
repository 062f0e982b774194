"""beamish.cluster.PubSub: Phoenix.PubSub's semantics on one node, then
across three beamish nodes in one loop."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from tests.cluster.nodes import Cluster, run_cluster, until

import beamish
from beamish import Atom, Pid, Supervisor
from beamish.cluster import PubSub, pg
from beamish.terms import Term
from beamish.testing import assert_receive, eventually, refute_receive


@pytest.mark.beamish
async def test_subscribe_broadcast_and_unsubscribe() -> None:
    await Supervisor.start_link([PubSub.child_spec(name="MyApp.PubSub")])
    PubSub.subscribe("MyApp.PubSub", "t")
    PubSub.subscribe("MyApp.PubSub", "t")  # twice: two deliveries, as Phoenix
    PubSub.broadcast("MyApp.PubSub", "t", "hi")
    await assert_receive("hi")
    await assert_receive("hi")
    PubSub.broadcast("MyApp.PubSub", "other", "no")
    PubSub.unsubscribe("MyApp.PubSub", "t")  # removes both
    PubSub.broadcast("MyApp.PubSub", "t", "gone")
    await refute_receive(beamish.testing.ANY, timeout=0.01)


@pytest.mark.beamish
async def test_broadcast_from_and_local_variants_skip_the_sender() -> None:
    await PubSub.start_link(name="Elixir.P")  # the Elixir prefix is dropped
    me = beamish.self()
    got: list[Term] = []

    async def other() -> None:
        PubSub.subscribe("P", "t")
        beamish.send(me, "ready")
        while True:
            got.append(await beamish.receive())

    beamish.spawn(other)
    await assert_receive("ready")
    PubSub.subscribe("P", "t")
    PubSub.broadcast_from("P", me, "t", 1)
    PubSub.local_broadcast("P", "t", 2)
    PubSub.local_broadcast_from("P", me, "t", 3)
    PubSub.direct_broadcast(str(beamish.self().node), "P", "t", 4)
    await assert_receive(2)
    await assert_receive(4, timeout=1)
    await eventually(lambda: got == [1, 2, 3, 4])
    await refute_receive(beamish.testing.ANY, timeout=0.01)


@pytest.mark.beamish
async def test_a_custom_dispatcher_and_the_names_on_the_wire() -> None:
    await PubSub.start_link(name="MyApp.PubSub", pool_size=3)
    assert [str(g) for g in pg.which_groups(scope="Elixir.Phoenix.PubSub")] == [
        "Elixir.MyApp.PubSub.Adapter", "Elixir.MyApp.PubSub.Adapter_2", "Elixir.MyApp.PubSub.Adapter_3",
    ]
    assert beamish.whereis("Elixir.MyApp.PubSub.Adapter_2") is not None

    def tagged(entries: list[tuple[Pid, Term]], from_: Pid | None, message: Term) -> None:
        for pid, meta in entries:
            beamish.send(pid, (meta, message))

    PubSub.register_dispatcher("MyApp.Tagged", tagged)
    PubSub.subscribe("MyApp.PubSub", "t", metadata="m")
    PubSub.broadcast("MyApp.PubSub", "t", "x", dispatcher="MyApp.Tagged")
    await assert_receive(("m", "x"))
    with pytest.raises(ValueError, match="no dispatcher"):
        PubSub.broadcast("MyApp.PubSub", "t", "x", dispatcher="Nope")
    with pytest.raises(TypeError):
        PubSub.child_spec(name="X", pool=2)
    with pytest.raises(TypeError):
        PubSub.subscribe("MyApp.PubSub", b"bytes")  # type: ignore[arg-type]


@pytest.mark.beamish
async def test_bad_forwards_are_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    await PubSub.start_link(name="P")
    PubSub.subscribe("P", "t")
    worker = beamish.whereis("Elixir.P.Adapter")
    assert worker is not None
    fwd = Atom("forward_to_local")
    beamish.send(worker, (fwd, b"\xff", "m", Atom("Elixir.Phoenix.PubSub")))
    beamish.send(worker, (fwd, "t", "m", Atom("Elixir.Unknown")))
    beamish.send(worker, "junk")
    beamish.send(worker, (fwd, b"t", "ok", Atom("Elixir.Phoenix.PubSub")))  # a binary topic: the str
    await assert_receive("ok")
    assert sum("pubsub P dropped" in r.getMessage() for r in caplog.records) == 3
    assert beamish.whereis("Elixir.P.Adapter") == worker


def test_three_nodes_share_topics() -> None:
    async def body(c: Cluster) -> None:
        for i in range(3):
            await c.on(i, PubSub.start_link, name="MyApp.PubSub", pool_size=2)
        # Each node's workers must be known everywhere before a broadcast reaches them all.
        def workers() -> int:
            return len(pg.get_members(Atom("Elixir.MyApp.PubSub.Adapter_2"), scope="Elixir.Phoenix.PubSub"))

        for i in range(3):
            await until(functools.partial(_equals, c, i, workers, 3))
        inboxes: list[list[Term]] = [[], [], []]

        async def subscriber(box: list[Term]) -> None:
            PubSub.subscribe("MyApp.PubSub", "room:1")
            while True:
                box.append(await beamish.receive())

        subs = [await c.on(i, beamish.spawn, subscriber, inboxes[i]) for i in range(3)]
        for i in range(3):
            await c.on(i, PubSub.broadcast, "MyApp.PubSub", "room:1", ("from", i))
        await until(lambda: _done(inboxes, 3))
        assert all(sorted(map(repr, box)) == sorted(repr(("from", i)) for i in range(3)) for box in inboxes)
        await c.on(1, PubSub.direct_broadcast, c.names[2], "MyApp.PubSub", "room:1", "direct")
        await until(lambda: _done(inboxes, 4, only=[2]))
        assert len(inboxes[0]) == 3 and len(inboxes[1]) == 3
        await c.on(0, PubSub.broadcast_from, "MyApp.PubSub", subs[0], "room:1", "not to 0")
        await until(lambda: _done(inboxes, 4, only=[1]) and _done(inboxes, 5, only=[2]))
        assert len(inboxes[0]) == 3

    run_cluster(3, body)


async def _equals(c: Cluster, i: int, fn: Callable[[], Term], expected: Term) -> bool:
    return bool(await c.on(i, fn) == expected)


def _done(inboxes: list[list[Term]], n: int, only: list[int] | None = None) -> bool:
    return all(len(inboxes[i]) >= n for i in (only if only is not None else range(len(inboxes))))
