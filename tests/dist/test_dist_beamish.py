"""Two beamish nodes in one cluster, talking the Erlang distribution protocol
over real loopback TCP: calls, sends, links, monitors, remote spawn, rpc,
node down and a restarted node (new creation).

Both nodes share one event loop here (a Node is only tied to its processes,
not to a thread), which keeps the tests fast; `make demo --nodes` and the
cluster tests run nodes in separate OS processes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from tests.interop.beamish_nodes import two_nodes
from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

import beamish
from beamish import Atom, From, GenServer, Node, Pid, Reply, dist
from beamish.dist import rpc
from beamish.terms import Term
from beamish.testing import ANY, assert_receive

pytestmark = pytest.mark.interop  # needs an epmd (the system's, or our embedded one)


class Counter(GenServer):
    def init(self, start: int) -> int:
        return start

    def handle_call(self, request: Term, from_: From, n: int) -> Reply:
        match request:
            case "incr":
                return Reply(n + 1, n + 1)
            case ("echo", value):
                return Reply(value, n)
        return Reply(("unknown", request), n)


def double(x: int) -> int:
    return 2 * x


async def report_to(parent: Pid, value: Term) -> None:
    beamish.send(parent, ("spawned_ran", beamish.self(), value))
    await beamish.receive(lambda m: m == "stop")


# uvloop's transports are its own: the connection's protocol swap runs there too.
@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_call_cast_and_send_across_nodes(use_uvloop: bool) -> None:
    async def server() -> None:
        await Counter.start(0, name="counter")

    async def client(a: Atom) -> Term:
        assert await dist.ping(a) == "pong"
        assert await GenServer.call(("counter", a), "incr") == 1
        assert await GenServer.call(("counter", a), ("echo", "text")) == "text"  # str survives beamish<->beamish
        assert await GenServer.call(("counter", a), ("echo", b"bytes")) == b"bytes"
        return await GenServer.call(("counter", a), "incr")

    assert two_nodes(server, client, use_uvloop) == 2


def test_a_frame_over_max_message_closes_the_connection_with_a_warning_naming_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Node A takes messages up to 1 MiB, B sends up to the default: B's
    2 MiB message reaches A as one frame, which A refuses before reading
    it, closing the connection (B's monitor fires noconnection) with one
    WARNING naming B; B's next send reconnects."""

    async def server() -> None:
        await Counter.start(0, name="counter")
        beamish.register("inbox", beamish.spawn(lambda: beamish.receive(lambda m: m == "never")))

    async def client(a: Atom) -> Term:
        ref = beamish.monitor(("counter", a))
        beamish.send(("inbox", a), bytes(2 << 20))
        await assert_receive(("DOWN", ref, "process", ANY, "noconnection"), timeout=10)
        assert await GenServer.call(("counter", a), "incr") == 1
        return dist.node()

    b = two_nodes(server, client, max_message=1 << 20)
    warnings = [r for r in caplog.records if r.name == "beamish.dist" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(b) in warnings[0].getMessage()
    assert "a frame of 2097" in warnings[0].getMessage()


def test_remote_spawn_link_monitor_and_rpc() -> None:
    async def server() -> None:
        pass

    async def client(a: Atom) -> Term:
        me = beamish.self()
        spawned = await dist.spawn(a, "tests.dist.test_dist_beamish:report_to", me, 21, monitor=True)
        assert isinstance(spawned, tuple)
        pid, ref = spawned
        assert pid.node == a
        await assert_receive(("spawned_ran", pid, 21), timeout=5)
        beamish.send(pid, "stop")
        await assert_receive(("DOWN", ref, "process", pid, "normal"), timeout=5)
        with pytest.raises(beamish.Exit):
            await dist.spawn(a, "os:getcwd")  # not allowed
        assert await rpc.call(a, "tests.dist.test_dist_beamish", "double", [21]) == 42
        with pytest.raises(rpc.BadRpc):
            await rpc.call(a, "os", "getcwd", [])
        return "ok"

    assert two_nodes(
        server,
        client,
        spawn_allow=["tests.dist.test_dist_beamish:report_to"],
        rpc_allow=["tests.dist.test_dist_beamish"],
    ) == "ok"


def test_links_and_monitors_across_nodes_and_node_down() -> None:
    async def server() -> None:
        async def victim() -> None:
            await beamish.receive(lambda m: m == "die")
            raise beamish.Exit("remote_boom")

        beamish.spawn(victim, name="victim")
        beamish.spawn(beamish.receive, name="sleeper")

    async def client(a: Atom) -> Term:
        beamish.process_flag("trap_exit", True)
        ref = beamish.monitor(("victim", a))
        beamish.send(("victim", a), "die")
        await assert_receive(("DOWN", ref, "process", (Atom("victim"), a), "remote_boom"), timeout=5)
        ref2 = beamish.monitor(("victim", a))
        await assert_receive(("DOWN", ref2, "process", ANY, "noproc"), timeout=5)
        dist.monitor_nodes(True)
        assert dist.disconnect(a)
        await assert_receive(("nodedown", a), timeout=5)
        return "ok"

    assert two_nodes(server, client) == "ok"


def test_interleaved_streams_keep_their_senders_and_destinations() -> None:
    """Repeated control messages are encoded and decoded once per run of
    repeats: interleaving senders and names must never cross the streams."""

    async def server() -> None:
        async def inbox(tag: str, expected: int) -> None:
            got: list[Term] = []
            while len(got) < expected:
                got.append(await beamish.receive())
            beamish.send(("results", dist.node()), (tag, got))

        async def results() -> None:
            first = await beamish.receive(lambda m: type(m) is tuple)
            second = await beamish.receive(lambda m: type(m) is tuple)
            client_node = await beamish.receive()
            beamish.send(("collector", client_node), sorted([first, second]))

        beamish.spawn(inbox, "one", 300, name="one")  # 100 + 200, from the two streams below
        beamish.spawn(inbox, "two", 200, name="two")
        beamish.spawn(results, name="results")

    async def client(a: Atom) -> Term:
        beamish.register("collector", beamish.self())
        me = dist.node()

        async def stream(names: list[str]) -> None:
            for i in range(100):
                for name in names:
                    beamish.send((name, a), (beamish.self(), name, i))

        p = beamish.spawn(stream, ["one", "two"])
        q = beamish.spawn(stream, ["two", "one", "one"])
        beamish.send(("results", a), me)
        (tag1, got1), (tag2, got2) = await beamish.receive(timeout=20)
        assert (tag1, tag2) == ("one", "two")
        for got, name in ((got1, "one"), (got2, "two")):
            assert all(m[1] == name for m in got)
            for sender in (p, q):
                seqs = [m[2] for m in got if m[0] == sender]
                assert seqs == sorted(seqs) and seqs  # in order, per sender
        return len(got1) + len(got2)

    assert two_nodes(server, client) == 500


class Ledger(GenServer):
    """Counts each sender's casts; a call answers how many it has seen from
    its caller, so the caller can check nothing it cast was overtaken. Every
    tenth call is answered from an async callback, which keeps the server
    busy while more frames arrive (they queue instead of being handled as
    they are read)."""

    def init(self, _: Term) -> dict[Term, list[int]]:
        self.in_callback = False
        return {}

    def check_not_in_callback(self) -> None:
        # OTP runs one callback at a time: a message handled while an async
        # callback is pending would be a bug of the at-once path.
        if self.in_callback:
            raise AssertionError("a message was handled during an async callback")

    def handle_cast(self, request: Term, seen: dict[Term, list[int]]) -> beamish.NoReply:
        self.check_not_in_callback()
        sender, i = request
        seen.setdefault(sender, []).append(i)
        return beamish.NoReply(seen)

    def handle_call(self, request: Term, from_: From, seen: dict[Term, list[int]]) -> Term:
        self.check_not_in_callback()
        sender, n = request
        mine = seen.get(sender, [])
        if (n + 3 * sender) % 10 == 0:  # the senders go async at different times

            async def later() -> Reply:
                self.in_callback = True
                await asyncio.sleep(0.001)
                self.in_callback = False
                return Reply(list(mine), seen)

            return later()
        return Reply(list(mine), seen)


def test_remote_casts_and_calls_keep_each_senders_order() -> None:
    """Frames for an idle server are handled as they are read, the rest
    queue: either way a call sees every cast its caller sent before it, in
    order, from several senders at once."""

    async def server() -> None:
        await Ledger.start(None, name="ledger")

    async def client(a: Atom) -> Term:
        async def sender(tag: int) -> None:
            sent = 0
            for n in range(60):
                for _ in range(n % 4):
                    GenServer.cast(("ledger", a), (tag, sent))
                    sent += 1
                seen = await GenServer.call(("ledger", a), (tag, n))
                assert seen == list(range(sent)), (tag, n, seen[-5:], sent)
            beamish.send(parent, ("done", tag, sent))

        parent = beamish.self()
        for tag in range(3):
            beamish.spawn_link(sender, tag)
        return sorted([(await beamish.receive(timeout=20))[1] for _ in range(3)])

    assert two_nodes(server, client) == [0, 1, 2]


async def test_a_node_without_a_name_cannot_be_distributed() -> None:
    # As Erlang: net_kernel needs a name; nonode@nohost used to register "nonode" in EPMD.
    assert str(beamish.self().node) == "nonode@nohost"
    with pytest.raises(ValueError, match="needs a name"):
        await dist.start(cookie=new_cookie())
    assert not dist.is_alive()



def test_a_node_back_under_the_same_name_replaces_its_stale_connection_in_order() -> None:
    """A peer that restarted connects while our old connection to it looks
    alive: we answer `alive`, it says `true`, and the old connection's
    nodedown comes before the new nodeup (net_kernel's order; global relies
    on it), with the old links broken by `noconnection`."""
    from tests.cluster.pynodes import cluster, until

    from beamish.dist import flags, handshake

    async def main() -> None:
        cookie = new_cookie()
        async with cluster(2, cookie) as (p, q):
            events: list[tuple[str, str]] = []
            exits: list[Term] = []

            async def watch() -> None:
                async def body() -> None:
                    dist.monitor_nodes(True)
                    while True:
                        kind, peer = await beamish.receive()
                        events.append((str(kind), str(peer)))

                beamish.spawn(body)

            await p.do(watch)
            assert await q.do(lambda: dist.ping(p.name)) == "pong"
            remote = await q.call(lambda: beamish.spawn(lambda: beamish.receive()))

            async def linked() -> None:
                async def body() -> None:
                    beamish.process_flag("trap_exit", True)
                    beamish.link(remote)
                    exits.append(await beamish.receive(lambda m: type(m) is tuple and m[0] == "EXIT"))

                beamish.spawn(body)

            await p.do(linked)
            await until(lambda: asyncio.sleep(0, events == [("nodeup", q.name)]), 5, "nodeup")
            # An attempt from a node that says it is connected already is given up ('alive', 'false').
            with pytest.raises(handshake.HandshakeError):
                await handshake.initiate(
                    p.name, name=q.name, cookie=cookie, flags=flags.ADVERTISED, creation=q.node.creation,
                    is_connected=lambda peer: True,
                )
            assert events == [("nodeup", q.name)]
            # "q, restarted": a new creation under q's name, while p still holds the old connection.
            result = await handshake.initiate(
                p.name, name=q.name, cookie=cookie, flags=flags.ADVERTISED, creation=q.node.creation + 1,
                is_connected=lambda peer: False,
            )
            try:
                await until(lambda: asyncio.sleep(0, len(events) >= 3), 5, "the replacement")
                assert events == [("nodeup", q.name), ("nodedown", q.name), ("nodeup", q.name)]
                await until(lambda: asyncio.sleep(0, len(exits) == 1), 5, "the old link's EXIT")
                assert exits[0][2] == "noconnection"
            finally:
                result.writer.close()

    asyncio.run(main())
