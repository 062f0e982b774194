"""beamish's PubSub and an Elixir node running Phoenix.PubSub's PG2 adapter
(reproduced in `phoenix_pubsub_pg2.exs`, since hex is unreachable here):
subscribers on both sides get each other's broadcasts, with one worker per
node and with a pool of two."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.interop.erlang import HOST, ErlNode, erl_node, require, unique_name

import beamish
from beamish import Atom, Pid, dist
from beamish.cluster import PubSub, pg
from beamish.dist import rpc
from beamish.terms import Term
from beamish.testing import assert_receive, eventually, refute_receive

pytestmark = pytest.mark.interop

EXS = Path(__file__).with_name("phoenix_pubsub_pg2.exs")
SCOPE = "Elixir.Phoenix.PubSub"


@pytest.fixture(scope="module")
def ex() -> Iterator[ErlNode]:
    require("elixir")
    with erl_node("ex", elixir=True, extra=["-r", str(EXS)]) as node:
        yield node


def py_name() -> str:
    return f"{unique_name('py')}@{HOST}"


async def both_started(ex: ErlNode, name: str, pool_size: int) -> None:
    await dist.start(cookie=ex.cookie)
    await PubSub.start_link(name=name, pool_size=pool_size)
    assert await dist.ping(ex.name) == "pong"

    async def loaded() -> bool:
        # The node registers in epmd before `elixir -r` has compiled the file.
        return await rpc.call(ex.name, "code", "is_loaded", [Atom("Elixir.PubSubProbe")]) is not False

    await eventually(loaded, timeout=20, interval=0.05)
    assert await rpc.call(ex.name, "Elixir.Phoenix.PubSub", "start", [Atom(f"Elixir.{name}"), pool_size]) == "ok"
    groups = [Atom(f"Elixir.{name}.Adapter")] + [Atom(f"Elixir.{name}.Adapter_{n}") for n in range(2, pool_size + 1)]
    for group in groups:
        await eventually(lambda g=group: len(pg.get_members(g, scope=SCOPE)) == 2, timeout=5)  # type: ignore[misc]

        async def theirs(g: Atom = group) -> bool:
            members = await rpc.call(ex.name, "Elixir.PubSubProbe", "members", [g])
            return isinstance(members, list) and len(members) == 2

        await eventually(theirs, timeout=5)


async def elixir_subscriber(ex: ErlNode, name: str, topic: str) -> Pid:
    pid = await rpc.call(ex.name, "Elixir.PubSubProbe", "subscriber", [Atom(f"Elixir.{name}"), topic.encode(), beamish.self()])
    assert isinstance(pid, Pid)
    return pid


@pytest.mark.parametrize("pool_size", [1, 2])
@pytest.mark.beamish(name=py_name())
async def test_beamish_and_elixir_subscribers_get_each_others_broadcasts(ex: ErlNode, pool_size: int) -> None:
    name = f"Interop{pool_size}.PubSub"
    await both_started(ex, name, pool_size)
    await elixir_subscriber(ex, name, "room:1")
    PubSub.subscribe(name, "room:1")

    # From beamish, from several processes (a pool picks its worker by the broadcaster).
    me = beamish.self()
    for i in range(4):
        beamish.spawn(lambda i=i: PubSub.broadcast(name, "room:1", (Atom("from_beamish"), i)))
        await assert_receive((Atom("from_beamish"), i), timeout=2)
        await assert_receive((Atom("elixir_got"), (Atom("from_beamish"), i)), timeout=5)

    # From Elixir: each broadcast from a fresh Elixir process.
    for i in range(4):
        assert await rpc.call(ex.name, "Elixir.PubSubProbe", "broadcast", [Atom(f"Elixir.{name}"), b"room:1", (Atom("from_elixir"), i)]) == "ok"
        await assert_receive((Atom("from_elixir"), i), timeout=5)
        await assert_receive((Atom("elixir_got"), (Atom("from_elixir"), i)), timeout=5)

    # A topic nobody subscribed to on the other side reaches nobody there.
    PubSub.broadcast(name, "room:2", Atom("nobody"))
    await refute_receive((Atom("elixir_got"), Atom("nobody")), timeout=0.1)

    # direct_broadcast to the Elixir node only.
    PubSub.direct_broadcast(ex.name, name, "room:1", Atom("direct"))
    await assert_receive((Atom("elixir_got"), Atom("direct")), timeout=5)
    await refute_receive(Atom("direct"), timeout=0.05)
    assert me == beamish.self()


@pytest.mark.beamish(name=py_name())
async def test_an_elixir_broadcast_with_a_binary_topic_reaches_a_str_subscription(ex: ErlNode) -> None:
    name = "Topics.PubSub"
    await both_started(ex, name, 1)
    PubSub.subscribe(name, "héllo:wörld")
    out: Term = await rpc.call(ex.name, "Elixir.PubSubProbe", "broadcast", [Atom(f"Elixir.{name}"), "héllo:wörld".encode(), Atom("hi")])
    assert out == "ok"
    await assert_receive(Atom("hi"), timeout=5)
