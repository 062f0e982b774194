"""Real network partitions (`tests/interop/netns.py`): nodes in two network
namespaces, the link between them cut so that nothing closes a connection,
seen only by net ticks, then healed; cluster formation joins them again.

`two_sides` yields a connected 2+2 cluster (a beamish and an erl node in each
namespace): add assertions for `global`, `pg` or PubSub to
`test_a_two_by_two_cluster_splits_along_the_cut_and_joins_again` (evals on
each side before the cut, during it and after the heal)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import pytest
from tests.interop.netns import BeamishNode, ErlNode, NetNode, Network, network

pytestmark = pytest.mark.interop

TICKTIME = 4.0
# Erlang declares a silent peer down after between 3/4 and 5/4 of its
# net_ticktime; beamish after 4 to 5 quarters of its own: this bounds both,
# with room for a loaded 2-core machine.
DETECTED_WITHIN = TICKTIME * 1.25 + 5.0


def start_formation(node: BeamishNode, peers: list[str]) -> None:
    """A formation topology on `node` that keeps it connected to `peers`,
    retrying soon after a loss (backoff from 0.2 s, at most 1 s)."""
    node.eval(
        "from beamish.cluster import Backoff, Cluster, Static, Topology\n"
        "async def keeper():\n"
        f"    topology = Topology('t', Static({tuple(peers)!r}), backoff=Backoff(0.2, 1.0, 0.5))\n"
        "    await Cluster.start_link([topology])\n"
        "    await beamish.receive(lambda m: False)\n"
        "beamish.spawn(keeper)\n"
    )


_fresh = itertools.count()


def message_flows(sender: BeamishNode, receiver: ErlNode, text: str) -> None:
    """A message from `sender` reaches a registered process of `receiver`."""
    receiver.eval("catch unregister(inbox), register(inbox, self()).")
    sender.eval(f"beamish.send(('inbox', {receiver.name!r}), {text!r})")
    var = f"M{next(_fresh)}"  # an erl node's bindings last from one eval to the next
    assert receiver.eval(f"receive {var} -> {var} after 5000 -> timeout end.") == f'<<"{text}">>'


def no_nodedown(*nodes: NetNode) -> None:
    downs = [(n.name, e) for n in nodes for e in n.events if e.kind == "nodedown"]
    assert not downs, downs


@pytest.mark.parametrize("mode", ["drop", "down"])
def test_a_cut_link_is_seen_only_by_net_ticks_and_formation_joins_the_nodes_after_the_heal(
    mode: Literal["drop", "down"],
) -> None:
    with network(2, ticktime=TICKTIME) as net:
        b = net.beamish("b", net.ns[0])
        e = net.erl("e", net.ns[1])
        start_formation(b, [e.name])
        b.wait_event("nodeup", e.name)
        e.wait_event("nodeup", b.name)
        message_flows(b, e, "before")
        assert e.eval(f"net_adm:ping('{b.name}').") == "pong"

        b.mark()
        e.mark()
        cut = time.monotonic()
        net.cut(net.ns[1], mode)
        down_e = e.wait_event("nodedown", b.name, timeout=DETECTED_WITHIN)
        down_b = b.wait_event("nodedown", e.name, timeout=DETECTED_WITHIN)
        # Only the ticks told: Erlang says why, and nothing came before the
        # silence had lasted most of a net_ticktime (a closed socket is seen at once).
        assert (down_e.reason, down_b.reason) == ("net_tick_timeout", "net_tick_timeout")
        assert min(down_e.at, down_b.at) - cut >= TICKTIME / 2
        assert [ev.kind for ev in b.events[-1:]] == ["nodedown"]  # no nodeup: still cut off

        b.mark()
        e.mark()
        net.heal(net.ns[1])
        b.wait_event("nodeup", e.name, timeout=20)  # formation's retries, nobody else's
        message_flows(b, e, "after")
        assert b.eval(f"await dist.ping({e.name!r})") == "'pong'"


@dataclass
class TwoSides:
    """A connected 2+2 cluster: `sides[i]` are the nodes in `net.ns[i]`,
    a beamish node first, then an erl node."""

    net: Network
    sides: list[list[NetNode]]

    @property
    def nodes(self) -> list[NetNode]:
        return [n for side in self.sides for n in side]

    def mark(self) -> None:
        for node in self.nodes:
            node.mark()


@pytest.fixture
def two_sides() -> Iterator[TwoSides]:
    with network(2, ticktime=TICKTIME) as net:
        sides: list[list[NetNode]] = []
        for i, ns in enumerate(net.ns):
            sides.append([net.beamish(f"b{i}", ns), net.erl(f"e{i}", ns)])
        cluster = TwoSides(net, sides)
        names = [n.name for n in cluster.nodes]
        # One formation after the other, so each waits for its own nodeups.
        for node in cluster.nodes:
            if isinstance(node, BeamishNode):
                others = [m for m in names if m != node.name]
                start_formation(node, others)
                for other in others:
                    node.wait_event("nodeup", other, timeout=20)
        # The erl nodes have no formation: one joins the other (global does
        # not pass on the beamish nodes' connections).
        e0, e1 = sides[0][1], sides[1][1]
        assert e0.eval(f"net_adm:ping('{e1.name}').") == "pong"
        for node in cluster.nodes:
            for other in names:
                if other != node.name:
                    node.wait_event("nodeup", other, timeout=20)
        yield cluster


def test_a_two_by_two_cluster_splits_along_the_cut_and_joins_again(two_sides: TwoSides) -> None:
    net, (left, right) = two_sides.net, two_sides.sides
    no_nodedown(*two_sides.nodes)
    two_sides.mark()
    net.cut(net.ns[1])
    for here, there in ((left, right), (right, left)):
        for node in here:
            for other in there:
                assert node.wait_event("nodedown", other.name, timeout=DETECTED_WITHIN).reason == "net_tick_timeout"
    # Each side keeps its own connection: traffic in a namespace never crosses the link.
    for b, e in (left, right):
        assert isinstance(b, BeamishNode) and isinstance(e, ErlNode)
        message_flows(b, e, "same side")
        assert not [ev for ev in b.events if ev.kind == "nodedown" and ev.node == e.name]

    two_sides.mark()
    net.heal(net.ns[1])
    # The beamish nodes' formation joins them to all three others again; the
    # erl nodes, which have none, are joined to each other by hand.
    for b in (left[0], right[0]):
        for other in two_sides.nodes:
            if other is not b and other.ns is not b.ns:
                b.wait_event("nodeup", other.name, timeout=20)
    assert left[1].eval(f"net_adm:ping('{right[1].name}').") == "pong"
    for b, e in ((left[0], right[1]), (right[0], left[1])):
        assert isinstance(b, BeamishNode) and isinstance(e, ErlNode)
        message_flows(b, e, "across")


def heal_and_rejoin(two_sides: TwoSides) -> None:
    """Heal the cut; the beamish nodes' formation joins them to the other
    side, the erl nodes are joined by hand."""
    net, (left, right) = two_sides.net, two_sides.sides
    two_sides.mark()
    net.heal(net.ns[1])
    for b in (left[0], right[0]):
        for other in two_sides.nodes:
            if other is not b and other.ns is not b.ns:
                b.wait_event("nodeup", other.name, timeout=20)
    assert left[1].eval(f"net_adm:ping('{right[1].name}').") == "pong"


def erl_owner(e: ErlNode, name: str) -> str:
    return e.eval(f"case global:whereis_name({name}) of undefined -> undefined; P -> {{node(P), is_pid(P)}} end.")


def test_global_names_through_a_real_partition_and_its_heal(two_sides: TwoSides) -> None:
    """A name taken on both sides during the partition is resolved once on
    the heal, a name whose process died during it is gone everywhere, and
    Erlang's global:sync() returns on both sides."""
    net, (left, right) = two_sides.net, two_sides.sides
    b0, e0 = left
    b1, e1 = right
    assert isinstance(b0, BeamishNode) and isinstance(b1, BeamishNode)
    assert isinstance(e0, ErlNode) and isinstance(e1, ErlNode)
    for e in (e0, e1):
        assert e.eval("global:sync().") == "ok"
    spawn = "beamish.spawn(lambda: beamish.receive(lambda m: False))"
    assert b0.eval(f"await cluster.global_.register_name(Atom('before'), {spawn})") == "True"
    assert e1.eval("global:whereis_name(before) =/= undefined.") == "true"
    assert e1.eval("V = spawn(fun() -> receive stop -> ok end end), yes = global:register_name(victim, V), ok.") == "ok"
    assert b0.eval("cluster.global_.whereis_name(Atom('victim')) is not None") == "True"

    two_sides.mark()
    net.cut(net.ns[1])
    for node in left:
        for other in right:
            assert node.wait_event("nodedown", other.name, timeout=DETECTED_WITHIN).reason == "net_tick_timeout"
    # During the partition: one name taken on each side, and the victim dies.
    assert b0.eval(f"await cluster.global_.register_name(Atom('both'), {spawn})") == "True"
    assert e1.eval("yes = global:register_name(both, spawn(fun() -> receive after infinity -> ok end end)), ok.") == "ok"
    assert e1.eval("global:send(victim, stop), ok.") == "ok"
    assert b1.eval("cluster.global_.whereis_name(Atom('victim'))") == "None"
    # Each side forgot the other's names at the nodedown (their monitors fired).
    assert b0.eval("cluster.global_.whereis_name(Atom('victim'))") == "None"

    heal_and_rejoin(two_sides)
    for e in (e0, e1):
        assert e.eval("global:sync().") == "ok"
    for b in (b0, b1):
        assert b.eval("await cluster.global_.sync()") == "None"
    # One owner of `both` everywhere, alive; `victim` gone everywhere; `before` kept.
    owners = {e.eval("global:whereis_name(both).") for e in (e0, e1)}
    owners |= {b.eval("str(cluster.global_.whereis_name(Atom('both')))") for b in (b0, b1)}
    assert len({o for o in owners if o not in ("undefined", "None")}) >= 1
    erl_view = {erl_owner(e, "both") for e in (e0, e1)}
    assert len(erl_view) == 1 and "undefined" not in erl_view, erl_view
    py_view = {b.eval("(lambda p: (str(p.node), beamish.is_alive(p) if p.node == dist.node() else True))(cluster.global_.whereis_name(Atom('both')))") for b in (b0, b1)}
    assert len(py_view) == 1, py_view
    assert next(iter(erl_view)).split(",")[0].strip("{'") == next(iter(py_view)).split(",")[0].strip("('"), (erl_view, py_view)
    for e in (e0, e1):
        assert e.eval("global:whereis_name(victim).") == "undefined"
        assert e.eval("global:whereis_name(before) =/= undefined.") == "true"
    for b in (b0, b1):
        assert b.eval("cluster.global_.whereis_name(Atom('victim'))") == "None"
    # No Erlang process crashed (a tick timeout's "not responding" report is not a crash).
    for e in (e0, e1):
        assert not [line for line in e.output if "CRASH REPORT" in line or "crasher" in line or "terminating" in line], e.output


OWNER = """
async def owner():
    await cluster.pg.start_link()
    await cluster.PubSub.start_link(name="Part.PubSub")
    env["ready"] = True
    await beamish.receive(lambda m: False)

async def member():
    await cluster.pg.join(Atom("grp"), beamish.self())
    await beamish.receive(lambda m: False)

async def subscriber():
    cluster.PubSub.subscribe("Part.PubSub", "t")
    env["got"] = []
    while True:
        env["got"].append(await beamish.receive())

env["owner"] = beamish.spawn(owner)
"""

MEMBERS_PY = "sorted(str(p.node).split('@')[0][:2] for p in cluster.pg.get_members(Atom('grp')))"
MEMBERS_ERL = "lists:sort([lists:sublist(atom_to_list(node(P)), 2) || P <- pg:get_members(grp)])."


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_pg_members_and_pubsub_through_a_real_partition(two_sides: TwoSides) -> None:
    """pg members of the other side go at the cut; one that died meanwhile
    never comes back; PubSub subscribers on the broadcaster's side get every
    message sent during the cut, the others every message after the heal."""
    net, (left, right) = two_sides.net, two_sides.sides
    b0, e0 = left
    b1, e1 = right
    assert isinstance(b0, BeamishNode) and isinstance(b1, BeamishNode)
    assert isinstance(e0, ErlNode) and isinstance(e1, ErlNode)
    for b in (b0, b1):
        b.eval(OWNER)
        wait_until(lambda b=b: b.eval("env.get('ready')") == "True", 10, "pg and PubSub up")  # type: ignore[misc]
        b.eval("env.__setitem__('m', beamish.spawn(member)) or env.__setitem__('sub', beamish.spawn(subscriber))")
    for e in (e0, e1):
        e.eval("{ok, _} = pg:start(pg), ok.")
        e.eval("Member1 = spawn(fun() -> ok = pg:join(grp, self()), receive stop -> ok end end), ok.")
    everyone = ["b0", "b1", "e0", "e1"]

    def agree(nodes: list[NetNode], want: list[str]) -> Callable[[], bool]:
        def check() -> bool:
            views = [n.eval(MEMBERS_PY) if isinstance(n, BeamishNode) else n.eval(MEMBERS_ERL) for n in nodes]
            return all(v.replace('"', "'").replace(" ", "") == repr(want).replace(" ", "") for v in views)

        return check

    wait_until(agree(two_sides.nodes, everyone), 10, "four members everywhere")

    two_sides.mark()
    net.cut(net.ns[1])
    for node in left:
        for other in right:
            assert node.wait_event("nodedown", other.name, timeout=DETECTED_WITHIN).reason == "net_tick_timeout"
    for node in right:
        for other in left:
            node.wait_event("nodedown", other.name, timeout=DETECTED_WITHIN)
    wait_until(agree(left, ["b0", "e0"]), 10, "the left side's members")
    wait_until(agree(right, ["b1", "e1"]), 10, "the right side's members")
    # During the cut: e1's member leaves for good and another joins; b0 broadcasts.
    e1.eval("Member1 ! stop, Member2 = spawn(fun() -> ok = pg:join(grp, self()), receive stop -> ok end end), ok.")
    b0.eval("[cluster.PubSub.broadcast('Part.PubSub', 't', ('during', i)) for i in range(30)] and None")
    wait_until(lambda: b0.eval("len(env['got'])") == "30", 10, "the left subscriber's 30 messages")
    assert b0.eval("[m[1] for m in env['got']] == list(range(30))") == "True"
    assert b1.eval("len(env['got'])") == "0"

    heal_and_rejoin(two_sides)
    # One member per node everywhere: e1's first member (gone during the cut) is nowhere.
    wait_until(agree(two_sides.nodes, everyone), 15, "four members everywhere after the heal")
    for e in (e0, e1):
        assert e.eval("global:sync().") == "ok"
    b0.eval("[cluster.PubSub.broadcast('Part.PubSub', 't', ('after', i)) for i in range(30)] and None")
    wait_until(lambda: b1.eval("len(env['got'])") == "30", 10, "the right subscriber's 30 messages after the heal")
    assert b1.eval("[m for m in env['got']] == [('after', i) for i in range(30)]") == "True"
    for e in (e0, e1):
        assert not [line for line in e.output if "CRASH REPORT" in line or "crasher" in line or "terminating" in line], e.output
