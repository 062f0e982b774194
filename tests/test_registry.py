"""Registry: unique and duplicate keys, reads, dispatch, cleanup, via-names, nodes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

import beamish
from beamish import BadArg, ChildSpec, Exit, From, GenServer, NoReply, Pid, Reply, StartError, Stop
from beamish._atoms import SYSTEM
from beamish._gen import call as gen_call
from beamish._pattern import ANY as T_ANY
from beamish.node import Node
from beamish.process import Dest
from beamish.registry import AlreadyRegistered, Registry
from beamish.terms import Term
from beamish.testing import ANY, assert_receive, wait_for_exit

# --- helpers -------------------------------------------------------------------


async def sync(server: Dest) -> None:
    """Wait until `server` (a registry) has handled every exit signal sent to
    it so far: its mailbox is FIFO, so an answered system call means they are done."""
    await gen_call(server, "get_state", label=SYSTEM)


async def worker() -> None:
    """A process that runs what it is told to, so tests can register it."""
    while True:
        match await beamish.receive():
            case ("do", fn, reply_to):
                try:
                    result = ("ok", fn())
                except Exception as exc:
                    result = ("raised", exc)
                beamish.send(reply_to, ("done", beamish.self(), result))
            case ("exit", reason):
                raise Exit(reason)
            case "return":
                return
            case "crash":
                raise RuntimeError("worker crashed on purpose")


async def do(pid: Pid, fn: Callable[[], Term]) -> Term:
    """Run `fn()` inside `pid`; return its result or raise what it raised."""
    beamish.send(pid, ("do", fn, beamish.self()))
    _, _, (kind, value) = await assert_receive(("done", pid, ANY), timeout=5.0)
    if kind == "raised":
        raise value
    return value


class Room(GenServer):
    def init(self, name: str) -> str:
        if name == "fail":
            raise Exit("refused")
        return name

    def handle_call(self, request: Term, from_: From, name: str) -> Reply | Stop:
        match request:
            case "name":
                return Reply(("room", name), name)
            case "stop":
                return Stop("normal", name, reply="bye")
        return Reply(("unknown", request), name)

    def handle_cast(self, request: Term, name: str) -> NoReply:
        match request:
            case ("tell", pid):
                beamish.send(pid, ("cast", name))
        return NoReply(name)

    def handle_info(self, msg: Term, name: str) -> NoReply:
        match msg:
            case ("tell", pid):
                beamish.send(pid, ("info", name))
        return NoReply(name)


# --- unique keys ---------------------------------------------------------------


async def test_unique_register_lookup_and_already_registered() -> None:
    reg = await Registry.start_link(keys="unique", name="Reg")
    me = beamish.self()
    assert Registry.lookup("Reg", "hello") == []
    assert Registry.register("Reg", "hello", "world") == reg
    assert Registry.lookup("Reg", "hello") == [(me, "world")]
    with pytest.raises(AlreadyRegistered) as info:
        Registry.register("Reg", "hello", "later")
    assert info.value.pid == me and info.value.key == "hello"
    other = beamish.spawn(worker)
    with pytest.raises(AlreadyRegistered) as info:
        await do(other, lambda: Registry.register("Reg", "hello", "other"))
    assert info.value.pid == me
    assert await do(other, lambda: Registry.register("Reg", "other", 1)) == reg
    assert Registry.keys("Reg", me) == ["hello"]
    assert Registry.keys("Reg", other) == ["other"]
    assert Registry.values("Reg", "hello", me) == ["world"]
    assert Registry.values("Reg", "hello", other) == []
    assert Registry.count("Reg") == 2
    Registry.unregister("Reg", "hello")
    assert Registry.lookup("Reg", "hello") == []
    assert Registry.keys("Reg", me) == []
    assert Registry.count("Reg") == 1
    Registry.unregister("Reg", "never registered")  # a no-op, as in Elixir


async def test_reads_happen_in_the_caller_without_a_roundtrip() -> None:
    await Registry.start_link(keys="unique", name="Reg")
    Registry.register("Reg", ("user", 7), {"role": "admin"})
    # A registry busy in a callback cannot answer messages; reads still work.
    reader = beamish.spawn(worker)
    assert await do(reader, lambda: Registry.lookup("Reg", ("user", 7))) == [(beamish.self(), {"role": "admin"})]


async def test_update_value() -> None:
    await Registry.start_link(keys="unique", name="Reg")
    Registry.register("Reg", "counter", 1)
    assert Registry.update_value("Reg", "counter", lambda n: n + 1) == (2, 1)
    assert Registry.lookup("Reg", "counter") == [(beamish.self(), 2)]
    other = beamish.spawn(worker)
    assert await do(other, lambda: Registry.update_value("Reg", "counter", lambda n: n + 1)) is None
    assert Registry.update_value("Reg", "missing", lambda n: n) is None
    assert Registry.lookup("Reg", "counter") == [(beamish.self(), 2)]
    await Registry.start_link(keys="duplicate", name="Dup")
    with pytest.raises(BadArg, match="duplicate"):
        Registry.update_value("Dup", "counter", lambda n: n)


# --- duplicate keys ------------------------------------------------------------


async def test_duplicate_keys() -> None:
    reg = await Registry.start_link(keys="duplicate", name="Dup")
    me = beamish.self()
    assert Registry.register("Dup", "topic", 1) == reg
    Registry.register("Dup", "topic", 2)
    Registry.register("Dup", "other", 3)
    peer = beamish.spawn(worker)
    await do(peer, lambda: Registry.register("Dup", "topic", "peer"))
    assert Registry.lookup("Dup", "topic") == [(me, 1), (me, 2), (peer, "peer")]
    assert Registry.keys("Dup", me) == ["topic", "topic", "other"]
    assert Registry.values("Dup", "topic", me) == [1, 2]
    assert Registry.values("Dup", "topic", peer) == ["peer"]
    assert Registry.count("Dup") == 4
    Registry.unregister("Dup", "topic")
    assert Registry.lookup("Dup", "topic") == [(peer, "peer")]
    assert Registry.keys("Dup", me) == ["other"]
    assert Registry.count("Dup") == 2


async def test_match_count_match_and_unregister_match() -> None:
    await Registry.start_link(keys="duplicate", name="Dup")
    me = beamish.self()
    Registry.register("Dup", "k", (1, "atom", 1))
    Registry.register("Dup", "k", (2, "atom", 2))
    Registry.register("Dup", "k", {"x": 1, "y": 2})
    assert Registry.match("Dup", "k", (1, T_ANY, T_ANY)) == [(me, (1, "atom", 1))]
    assert Registry.match("Dup", "k", (T_ANY, "atom", int)) == [(me, (1, "atom", 1)), (me, (2, "atom", 2))]
    assert Registry.match("Dup", "k", {"y": 2}) == [(me, {"x": 1, "y": 2})]
    assert Registry.match("Dup", "k", lambda v: isinstance(v, tuple) and v[0] == v[2]) == [
        (me, (1, "atom", 1)),
        (me, (2, "atom", 2)),
    ]
    assert Registry.match("Dup", "missing", T_ANY) == []
    assert Registry.count_match("Dup", "k", (T_ANY, "atom", T_ANY)) == 2
    assert Registry.count_match("Dup", "k", T_ANY) == 3
    Registry.unregister_match("Dup", "k", (2, T_ANY, T_ANY))
    assert Registry.values("Dup", "k", me) == [(1, "atom", 1), {"x": 1, "y": 2}]
    Registry.unregister_match("Dup", "k", T_ANY)
    assert Registry.lookup("Dup", "k") == []
    assert Registry.count("Dup") == 0


TEMPLATES: list[tuple[object, Term, bool]] = [
    (T_ANY, None, True),
    (int, 3, True),
    (int, "3", False),
    (("ok", T_ANY), ("ok", 1), True),
    (("ok", T_ANY), ("ok", 1, 2), False),
    (("ok", T_ANY), ["ok", 1], False),
    ([int, str], [1, "a"], True),
    ([int, str], [1, 2], False),
    ({"a": 1}, {"a": 1, "b": 2}, True),
    ({"a": 1, "c": T_ANY}, {"a": 1, "b": 2}, False),
    ({"a": 1}, [("a", 1)], False),
    (lambda v: v > 2, 3, True),
    (lambda v: v > 2, 2, False),
    ("text", "text", True),
    ("text", "other", False),
]


@pytest.mark.parametrize(("pattern", "value", "expected"), TEMPLATES)
async def test_match_templates(pattern: object, value: Term, expected: bool) -> None:
    await Registry.start_link(keys="unique", name="Reg")
    Registry.register("Reg", "k", value)
    assert Registry.match("Reg", "k", pattern) == ([(beamish.self(), value)] if expected else [])
    assert Registry.count_match("Reg", "k", pattern) == int(expected)


# --- dispatch ------------------------------------------------------------------


async def test_dispatch_calls_fn_in_the_caller_only_when_there_are_entries() -> None:
    await Registry.start_link(keys="duplicate", name="Dup")
    calls: list[tuple[Pid, list[tuple[Pid, Term]]]] = []

    def record(entries: list[tuple[Pid, Term]]) -> None:
        calls.append((beamish.self(), entries))

    Registry.dispatch("Dup", "topic", record)
    assert calls == []
    Registry.register("Dup", "topic", "a")
    Registry.register("Dup", "topic", "b")
    assert Registry.dispatch("Dup", "topic", record) is None
    assert calls == [(beamish.self(), [(beamish.self(), "a"), (beamish.self(), "b")])]


async def test_dispatch_to_many_subscribers() -> None:
    await Registry.start_link(keys="duplicate", name="PubSub")
    me = beamish.self()

    async def subscriber(i: int) -> None:
        Registry.register("PubSub", "news", i)
        beamish.send(me, ("subscribed", i))
        msg = await beamish.receive()
        beamish.send(me, ("got", i, msg))

    n = 200
    for i in range(n):
        beamish.spawn(subscriber, i)
    for _ in range(n):
        await assert_receive(("subscribed", int))
    assert Registry.count("PubSub") == n

    def publish(entries: list[tuple[Pid, Term]]) -> None:
        for pid, i in entries:
            beamish.send(pid, ("hello", i))

    Registry.dispatch("PubSub", "news", publish)
    got = set()
    for _ in range(n):
        _, i, msg = await assert_receive(("got", int, ANY))
        assert msg == ("hello", i)
        got.add(i)
    assert got == set(range(n))
    await sync("PubSub")
    assert Registry.count("PubSub") == 0  # every subscriber has exited


async def test_dispatch_on_a_unique_key() -> None:
    await Registry.start_link(keys="unique", name="Reg")
    Registry.register("Reg", "me", 1)
    seen: list[list[tuple[Pid, Term]]] = []
    Registry.dispatch("Reg", "me", seen.append)
    Registry.dispatch("Reg", "nobody", seen.append)
    assert seen == [[(beamish.self(), 1)]]


# --- metadata ------------------------------------------------------------------


async def test_meta() -> None:
    await Registry.start_link(keys="unique", name="Reg", meta={"custom_key": "custom_value"})
    assert Registry.meta("Reg", "custom_key") == "custom_value"
    with pytest.raises(KeyError, match="unknown_key"):
        Registry.meta("Reg", "unknown_key")
    Registry.put_meta("Reg", ("tuple", "key"), "tuple_value")
    assert Registry.meta("Reg", ("tuple", "key")) == "tuple_value"
    Registry.delete_meta("Reg", "custom_key")
    with pytest.raises(KeyError):
        Registry.meta("Reg", "custom_key")


# --- errors --------------------------------------------------------------------

UNKNOWN_CALLS: list[Callable[[], Term]] = [
    lambda: Registry.register("Nope", "k", 1),
    lambda: Registry.unregister("Nope", "k"),
    lambda: Registry.unregister_match("Nope", "k", T_ANY),
    lambda: Registry.lookup("Nope", "k"),
    lambda: Registry.match("Nope", "k", T_ANY),
    lambda: Registry.count_match("Nope", "k", T_ANY),
    lambda: Registry.dispatch("Nope", "k", print),
    lambda: Registry.keys("Nope", beamish.self()),
    lambda: Registry.values("Nope", "k", beamish.self()),
    lambda: Registry.count("Nope"),
    lambda: Registry.update_value("Nope", "k", lambda v: v),
    lambda: Registry.meta("Nope", "k"),
    lambda: Registry.put_meta("Nope", "k", 1),
    lambda: Registry.whereis_name(("Nope", "k")),
    lambda: Registry.send(("Nope", "k"), "hi"),
]


@pytest.mark.parametrize("fn", UNKNOWN_CALLS)
async def test_unknown_registry_raises_a_clear_error(fn: Callable[[], Term]) -> None:
    with pytest.raises(BadArg, match="unknown registry: 'Nope'"):
        fn()


async def test_a_stopped_or_killed_registry_is_unknown() -> None:
    beamish.process_flag("trap_exit", True)
    reg = await Registry.start_link(keys="unique", name="Reg")
    await GenServer.stop(reg)
    with pytest.raises(BadArg, match="unknown registry"):
        Registry.lookup("Reg", "k")
    reg = await Registry.start_link(keys="unique", name="Reg")
    beamish.exit(reg, "kill")
    await assert_receive(("EXIT", reg, "killed"))
    with pytest.raises(BadArg, match="unknown registry"):
        Registry.lookup("Reg", "k")


async def test_start_errors() -> None:
    reg = await Registry.start_link(keys="unique", name="Reg")
    with pytest.raises(StartError) as info:
        await Registry.start_link(keys="duplicate", name="Reg")
    assert info.value.reason == ("already_started", reg)
    with pytest.raises(BadArg, match="keys"):
        await Registry.start_link(keys="triplicate", name="Other")  # type: ignore[arg-type]
    with pytest.raises(BadArg, match="partitions"):
        await Registry.start_link(keys="unique", name="Other", partitions=0)
    with pytest.raises(BadArg, match="meta"):
        await Registry.start_link(keys="unique", name="Other", meta=[1, 2])  # type: ignore[arg-type]
    assert beamish.whereis("Other") is None


def test_outside_a_process_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="inside a beamish process"):
        Registry.lookup("Reg", "k")


# --- owners that exit ----------------------------------------------------------


@pytest.mark.parametrize("how", ["return", "exit", "crash", "kill"])
@pytest.mark.parametrize("keys", ["unique", "duplicate"])
async def test_entries_go_when_the_owner_exits(how: str, keys: str, caplog: pytest.LogCaptureFixture) -> None:
    await Registry.start_link(keys=keys, name="Reg")  # type: ignore[arg-type]
    owner = beamish.spawn(worker)
    await do(owner, lambda: Registry.register("Reg", "a", 1))
    await do(owner, lambda: Registry.register("Reg", "b", 2))
    Registry.register("Reg", "mine", 3)
    assert Registry.keys("Reg", owner) == ["a", "b"]
    assert Registry.lookup("Reg", "a") == [(owner, 1)]
    with caplog.at_level(logging.CRITICAL, logger="beamish"):
        match how:
            case "return":
                beamish.send(owner, "return")
            case "exit":
                beamish.send(owner, ("exit", "shutdown"))
            case "crash":
                beamish.send(owner, "crash")
            case "kill":
                beamish.exit(owner, "kill")
        await wait_for_exit(owner)
    # Reads of a dead owner's keys see nothing even before the registry has run.
    assert Registry.keys("Reg", owner) == []
    assert Registry.values("Reg", "a", owner) == []
    if keys == "unique":
        assert Registry.lookup("Reg", "a") == []
    await sync("Reg")
    assert Registry.lookup("Reg", "a") == []
    assert Registry.lookup("Reg", "b") == []
    assert Registry.count("Reg") == 1
    assert Registry.lookup("Reg", "mine") == [(beamish.self(), 3)]


async def test_a_dead_holders_unique_key_can_be_taken_before_cleanup() -> None:
    await Registry.start_link(keys="unique", name="Reg")
    holder = beamish.spawn(worker)
    await do(holder, lambda: Registry.register("Reg", "k", "old"))
    beamish.exit(holder, "kill")  # the registry has not handled the signal yet
    Registry.register("Reg", "k", "new")
    await sync("Reg")  # the late cleanup of `holder` must not remove our entry
    assert Registry.lookup("Reg", "k") == [(beamish.self(), "new")]
    assert Registry.count("Reg") == 1


async def test_register_links_and_unregister_unlinks() -> None:
    reg = await Registry.start_link(keys="duplicate", name="Dup")
    owner = beamish.spawn(worker)

    def links() -> tuple[Pid, ...]:
        info = beamish.process_info(beamish.self())
        assert info is not None
        return info.links

    await do(owner, lambda: Registry.register("Dup", "a", 1))
    await do(owner, lambda: Registry.register("Dup", "b", 1))
    assert reg in await do(owner, links)
    await do(owner, lambda: Registry.unregister("Dup", "a"))
    assert reg in await do(owner, links)
    await do(owner, lambda: Registry.unregister("Dup", "b"))
    assert reg not in await do(owner, links)
    # The registry's parent keeps start_link's link through register/unregister.
    Registry.register("Dup", "a", 1)
    Registry.unregister("Dup", "a")
    assert reg in links()


async def test_owners_die_with_the_registry() -> None:
    beamish.process_flag("trap_exit", True)
    reg = await Registry.start_link(keys="unique", name="Reg")
    owner = beamish.spawn(worker)
    await do(owner, lambda: Registry.register("Reg", "a", 1))
    trapping = beamish.spawn(worker)
    await do(trapping, lambda: beamish.process_flag("trap_exit", True))
    await do(trapping, lambda: Registry.register("Reg", "b", 1))
    ref = beamish.monitor(owner)
    beamish.exit(reg, "kill")
    await assert_receive(("DOWN", ref, "process", owner, "killed"))
    assert beamish.is_alive(trapping)


# --- via-names -----------------------------------------------------------------


async def test_via_start_link_call_cast_send_and_whereis() -> None:
    await Registry.start_link(keys="unique", name="ChatApp.RoomRegistry")
    name = Registry.via("ChatApp.RoomRegistry", "room:1")
    assert name == ("via", Registry, ("ChatApp.RoomRegistry", "room:1"))
    pid = await Room.start_link("room:1", name=name)
    assert Registry.lookup("ChatApp.RoomRegistry", "room:1") == [(pid, None)]
    assert Registry.whereis_name(("ChatApp.RoomRegistry", "room:1")) == pid
    assert GenServer.whereis(name) == pid
    assert await GenServer.call(name, "name") == ("room", "room:1")
    # The literal tuple of the seed, with the Registry class as the via module.
    literal = ("via", Registry, ("ChatApp.RoomRegistry", "room:1"))
    assert await GenServer.call(literal, "name") == ("room", "room:1")
    GenServer.cast(name, ("tell", beamish.self()))
    await assert_receive(("cast", "room:1"))
    beamish.send(name, ("tell", beamish.self()))
    await assert_receive(("info", "room:1"))
    Registry.send(("ChatApp.RoomRegistry", "room:1"), ("tell", beamish.self()))
    await assert_receive(("info", "room:1"))


async def test_via_already_started_and_names_freed_on_exit() -> None:
    await Registry.start_link(keys="unique", name="Rooms")
    name = Registry.via("Rooms", "lobby")
    pid = await Room.start_link("lobby", name=name)
    with pytest.raises(StartError) as info:
        await Room.start_link("lobby", name=name)
    assert info.value.reason == ("already_started", pid)
    assert Registry.count("Rooms") == 1
    assert await GenServer.call(name, "stop") == "bye"
    await wait_for_exit(pid)
    assert GenServer.whereis(name) is None
    with pytest.raises(Exit) as ex:
        await GenServer.call(name, "name")
    assert ex.value.reason == "noproc"
    await sync("Rooms")
    assert Registry.count("Rooms") == 0
    again = await Room.start_link("lobby", name=name)
    assert again != pid
    assert await GenServer.call(name, "name") == ("room", "lobby")


async def test_via_name_of_a_killed_server_is_free_at_once() -> None:
    beamish.process_flag("trap_exit", True)
    await Registry.start_link(keys="unique", name="Rooms")
    name = Registry.via("Rooms", "lobby")
    pid = await Room.start_link("lobby", name=name)
    beamish.exit(pid, "kill")
    # Before the registry has handled the exit: the name is already free.
    assert GenServer.whereis(name) is None
    again = await Room.start_link("lobby", name=name)
    await sync("Rooms")
    assert Registry.lookup("Rooms", "lobby") == [(again, None)]


async def test_via_init_failure_frees_the_name() -> None:
    await Registry.start_link(keys="unique", name="Rooms")
    name = Registry.via("Rooms", "fail")
    with pytest.raises(StartError) as info:
        await Room.start("fail", name=name)
    assert info.value.reason == "refused"
    assert Registry.lookup("Rooms", "fail") == []
    await sync("Rooms")
    assert Registry.count("Rooms") == 0


async def test_via_with_a_value() -> None:
    await Registry.start_link(keys="unique", name="Rooms")
    pid = await Room.start_link("lobby", name=Registry.via("Rooms", "lobby", {"topic": "chat"}))
    assert Registry.lookup("Rooms", "lobby") == [(pid, {"topic": "chat"})]
    assert await GenServer.call(Registry.via("Rooms", "lobby"), "name") == ("room", "lobby")


async def test_via_to_a_name_nobody_holds() -> None:
    await Registry.start_link(keys="unique", name="Rooms")
    name = Registry.via("Rooms", "empty")
    with pytest.raises(BadArg, match="empty"):
        beamish.send(name, "hello")
    GenServer.cast(name, "hello")  # a cast never fails
    with pytest.raises(Exit) as info:
        await GenServer.call(name, "name")
    assert info.value.reason == "noproc"
    assert GenServer.whereis(name) is None


async def test_via_needs_a_unique_registry() -> None:
    await Registry.start_link(keys="duplicate", name="Dup")
    with pytest.raises(BadArg, match="unique"):
        await Room.start_link("x", name=Registry.via("Dup", "x"))
    with pytest.raises(BadArg, match="unique"):
        Registry.whereis_name(("Dup", "x"))
    with pytest.raises(BadArg, match="via-name"):
        Registry.whereis_name("Dup")  # type: ignore[arg-type]


async def test_many_servers_by_via_name() -> None:
    await Registry.start_link(keys="unique", name="Rooms")
    pids = [await Room.start_link(i, name=Registry.via("Rooms", ("room", i))) for i in range(50)]
    for i in range(50):
        assert await GenServer.call(Registry.via("Rooms", ("room", i)), "name") == ("room", i)
    assert sorted(Registry.keys("Rooms", p)[0][1] for p in pids) == list(range(50))


# --- supervision ---------------------------------------------------------------


async def test_child_spec() -> None:
    spec = Registry.child_spec(keys="unique", name="Reg")
    assert isinstance(spec, ChildSpec)
    assert spec.id == "Reg" and spec.restart == "permanent" and spec.type == "worker"
    assert Registry.child_spec({"keys": "duplicate", "name": "Dup", "partitions": 2}).id == "Dup"
    with pytest.raises(TypeError, match="listeners"):
        Registry.child_spec({"keys": "unique", "name": "Reg", "listeners": []})
    with pytest.raises(BadArg, match="name"):
        Registry.child_spec({"keys": "unique"})
    with pytest.raises(BadArg, match="keys"):
        Registry.child_spec(keys="many", name="Reg")
    # What a supervisor does with the spec: the registry is linked to the starter.
    fn, args = Registry.child_spec({"keys": "duplicate", "name": "Dup", "meta": {"m": 1}}).start
    pid = await fn(*args)
    assert isinstance(pid, Pid) and beamish.whereis("Dup") == pid
    info = beamish.process_info(beamish.self())
    assert info is not None and pid in info.links
    assert Registry.meta("Dup", "m") == 1
    Registry.register("Dup", "k", 1)
    Registry.register("Dup", "k", 2)
    assert Registry.count("Dup") == 2


async def test_registry_under_a_supervisor() -> None:
    sup_mod = pytest.importorskip("beamish.supervisor")
    Supervisor = sup_mod.Supervisor
    sup = await Supervisor.start_link(
        [(Registry, {"keys": "unique", "name": "Reg"}), Registry.child_spec(keys="duplicate", name="Dup")],
        strategy="one_for_one",
    )
    reg = beamish.whereis("Reg")
    assert reg is not None
    Registry.register("Reg", "k", 1)
    assert Registry.lookup("Reg", "k") == [(beamish.self(), 1)]
    # A killed registry is restarted by its supervisor, with an empty table.
    beamish.process_flag("trap_exit", True)
    beamish.exit(reg, "kill")
    await assert_receive(("EXIT", reg, "killed"))
    await sync(sup)  # the supervisor handled the EXIT (and restarted) before this call
    assert beamish.whereis("Reg") not in (None, reg)
    assert Registry.lookup("Reg", "k") == []
    assert beamish.is_alive(sup)


# --- one table per node --------------------------------------------------------


def test_two_nodes_in_one_os_process_have_separate_registries() -> None:
    async def first() -> list[tuple[Pid, Term]]:
        await Registry.start_link(keys="unique", name="MyRegistry")
        Registry.register("MyRegistry", "k", "first node")
        return Registry.lookup("MyRegistry", "k")

    async def second() -> list[tuple[Pid, Term]]:
        # The first node's registry is not this node's.
        with pytest.raises(BadArg, match="unknown registry"):
            Registry.lookup("MyRegistry", "k")
        await Registry.start_link(keys="unique", name="MyRegistry")
        assert Registry.lookup("MyRegistry", "k") == []
        Registry.register("MyRegistry", "k", "second node")
        return Registry.lookup("MyRegistry", "k")

    [(_, v1)] = beamish.run(first)
    [(_, v2)] = beamish.run(second)
    assert (v1, v2) == ("first node", "second node")


def test_two_live_nodes_in_one_loop_keep_separate_tables() -> None:
    a_ready, b_ready = asyncio.Event(), asyncio.Event()

    async def on(node: str, mine: asyncio.Event, theirs: asyncio.Event) -> list[Term]:
        await Registry.start_link(keys="duplicate", name="MyRegistry")
        Registry.register("MyRegistry", "k", node)
        mine.set()
        await theirs.wait()  # both registries now exist at the same time
        return [v for _, v in Registry.lookup("MyRegistry", "k")]

    async def both() -> list[Term]:
        return list(
            await asyncio.gather(
                Node("a@localhost").run(on, "a", a_ready, b_ready),
                Node("b@localhost").run(on, "b", b_ready, a_ready),
            )
        )

    assert asyncio.run(both()) == [["a"], ["b"]]

