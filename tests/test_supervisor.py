"""Supervisor: strategies, restart types, intensity, ordered start and
shutdown, and the child-management API."""

from __future__ import annotations

import logging

import pytest

import beamish
from beamish import ChildSpec, From, GenServer, NoReply, Pid, Reply, StartError
from beamish.supervisor import Supervisor, SupFlags
from beamish.terms import Term
from beamish.testing import ANY, assert_receive, refute_receive, start_supervised, wait_for_exit


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="beamish")


class Worker(GenServer):
    """Reports its start and its terminate to the test process."""

    def init(self, arg: tuple[str, Pid]) -> tuple[str, Pid]:
        beamish.process_flag("trap_exit", True)
        name, report = arg
        beamish.send(report, ("started", name, beamish.self()))
        return arg

    def handle_call(self, request: Term, from_: From, state: tuple[str, Pid]) -> Reply:
        if request == "crash":
            raise RuntimeError("crash on request")
        return Reply(state[0], state)

    def handle_cast(self, request: Term, state: tuple[str, Pid]) -> NoReply:
        if request == "exit_normal":
            raise beamish.Exit("normal")
        return NoReply(state)

    def terminate(self, reason: Term, state: tuple[str, Pid]) -> None:
        beamish.send(state[1], ("terminated", state[0], reason))


def spec(name: str, **kw: Term) -> ChildSpec:
    return ChildSpec(id=name, start=(Worker.start_link, ((name, beamish.self()),)), **kw)


async def started(name: str) -> Pid:
    msg = await assert_receive(("started", name, Pid), timeout=2)
    pid: Pid = msg[2]
    return pid


async def test_children_start_in_order_and_stop_in_reverse() -> None:
    sup = await Supervisor.start([spec("a"), spec("b"), spec("c")])
    assert [await started(n) for n in "abc"]
    assert [c[0] for c in await Supervisor.which_children(sup)] == ["a", "b", "c"]
    await Supervisor.stop(sup)
    order = [(await assert_receive(("terminated", ANY, "shutdown")))[1] for _ in range(3)]
    assert order == ["c", "b", "a"]


async def test_one_for_one_restarts_only_the_dead_child() -> None:
    sup = await Supervisor.start([spec("a"), spec("b")])
    a, b = await started("a"), await started("b")
    with pytest.raises(beamish.Exit):
        await GenServer.call(a, "crash")
    a2 = await started("a")
    assert a2 != a and beamish.is_alive(b)
    await refute_receive(("started", "b", ANY), timeout=0.05)
    assert [c[1] for c in await Supervisor.which_children(sup)] == [a2, b]


async def test_one_for_all_restarts_everyone() -> None:
    await Supervisor.start([spec("a"), spec("b"), spec("c")], strategy="one_for_all")
    a, _, _ = [await started(n) for n in "abc"]
    with pytest.raises(beamish.Exit):
        await GenServer.call(a, "crash")
    # The others stop in reverse order, then all start again in order.
    assert (await assert_receive(("terminated", "c", "shutdown")))
    assert (await assert_receive(("terminated", "b", "shutdown")))
    assert [await started(n) for n in "abc"]


async def test_rest_for_one_restarts_the_child_and_those_after_it() -> None:
    await Supervisor.start([spec("a"), spec("b"), spec("c")], strategy="rest_for_one")
    _, b, _ = [await started(n) for n in "abc"]
    with pytest.raises(beamish.Exit):
        await GenServer.call(b, "crash")
    await assert_receive(("terminated", "c", "shutdown"))
    await started("b")
    await started("c")
    await refute_receive(("started", "a", ANY), timeout=0.05)


async def test_transient_and_temporary_children() -> None:
    sup = await Supervisor.start([spec("t", restart="transient"), spec("tmp", restart="temporary")])
    t, tmp = await started("t"), await started("tmp")
    GenServer.cast(t, "exit_normal")  # a normal exit: not restarted
    await wait_for_exit(t)
    with pytest.raises(beamish.Exit):
        await GenServer.call(tmp, "crash")  # temporary: never restarted, and forgotten
    counts = await Supervisor.count_children(sup)
    assert counts == {"specs": 1, "active": 0, "supervisors": 0, "workers": 1}
    await refute_receive(("started", ANY, ANY), timeout=0.05)


async def test_too_many_restarts_shut_the_supervisor_down() -> None:
    sup = await Supervisor.start([spec("a")], max_restarts=2, max_seconds=10)
    ref = beamish.monitor(sup)
    for _ in range(3):
        pid = await started("a")
        with pytest.raises(beamish.Exit):
            await GenServer.call(pid, "crash")
    await assert_receive(("DOWN", ref, "process", sup, "shutdown"), timeout=2)


async def test_a_child_that_ignores_shutdown_is_killed_after_its_timeout() -> None:
    async def stubborn() -> Pid:
        async def body() -> None:
            beamish.process_flag("trap_exit", True)
            while True:
                await beamish.receive()

        return beamish.spawn_link(body)

    sup = await Supervisor.start([ChildSpec(id="s", start=(stubborn, ()), shutdown=0.05)])
    [(_, pid, _, _)] = await Supervisor.which_children(sup)
    assert isinstance(pid, Pid)
    ref = beamish.monitor(pid)
    await Supervisor.stop(sup)
    await assert_receive(("DOWN", ref, "process", pid, "killed"))


async def test_brutal_kill() -> None:
    sup = await Supervisor.start([spec("a", shutdown="brutal_kill")])
    pid = await started("a")
    ref = beamish.monitor(pid)
    await Supervisor.terminate_child(sup, "a")
    await assert_receive(("DOWN", ref, "process", pid, "killed"))
    await refute_receive(("terminated", "a", ANY), timeout=0.02)  # no terminate on kill


async def test_child_management_api() -> None:
    sup = await Supervisor.start([])
    pid = await Supervisor.start_child(sup, spec("a"))
    assert pid == await started("a")
    with pytest.raises(StartError) as info:
        await Supervisor.start_child(sup, spec("a"))
    assert info.value.reason == ("already_started", pid)
    await Supervisor.terminate_child(sup, "a")
    assert await Supervisor.which_children(sup) == [("a", None, "worker", ())]
    with pytest.raises(StartError) as info:
        await Supervisor.start_child(sup, spec("a"))
    assert info.value.reason == "already_present"
    again = await Supervisor.restart_child(sup, "a")
    assert again == await started("a")
    with pytest.raises(StartError):
        await Supervisor.delete_child(sup, "a")  # still running
    await Supervisor.terminate_child(sup, "a")
    await Supervisor.delete_child(sup, "a")
    assert await Supervisor.which_children(sup) == []
    with pytest.raises(LookupError):
        await Supervisor.terminate_child(sup, "nope")


async def test_a_failing_child_aborts_start_and_stops_the_started_ones() -> None:
    async def broken() -> Pid:
        raise StartError("cannot")

    with pytest.raises(StartError) as info:
        await Supervisor.start([spec("a"), ChildSpec(id="bad", start=(broken, ()))])
    assert info.value.reason[1][0] == "failed_to_start_child"
    await assert_receive(("terminated", "a", "shutdown"))


class Tree(Supervisor):
    def init(self, report: Pid) -> SupFlags:
        return Supervisor.flags([ChildSpec(id="leaf", start=(Worker.start_link, (("leaf", report),)))], strategy="one_for_one")


async def test_module_based_and_nested_supervisors() -> None:
    top = await Supervisor.start([Tree.child_spec(beamish.self())], name="top")
    leaf = await started("leaf")
    [(child_id, tree, kind, _)] = await Supervisor.which_children("top")
    assert child_id is Tree and kind == "supervisor" and isinstance(tree, Pid)
    beamish.exit(tree, "kill")  # the inner supervisor dies: the outer one restarts it, and its child
    await wait_for_exit(leaf)
    await started("leaf")
    await Supervisor.stop(top)


async def test_start_supervised_uses_a_test_supervisor() -> None:
    pid = await start_supervised(spec("sup_test"))
    assert pid == await started("sup_test")


class Named(GenServer):
    """Names itself in its own start_link, as Elixir servers do."""

    @classmethod
    async def start_link(cls, arg: Term = None, **options: Term) -> Pid:
        return await super().start_link(arg, name=beamish.Registry.via("named_reg", arg))

    def init(self, key: Term) -> list[Term]:
        return []

    def handle_cast(self, msg: Term, seen: list[Term]) -> NoReply:
        return NoReply([*seen, msg])

    def handle_call(self, request: Term, from_: From, seen: list[Term]) -> Reply:
        return Reply(seen, seen)


class Ignoring(GenServer):
    def init(self, _: Term) -> beamish.Ignore:
        return beamish.Ignore()


async def test_a_module_child_starts_through_its_own_start_link_and_is_named() -> None:
    # Elixir's default child_spec calls the module's start_link: a server
    # that names itself there is named under a supervisor too.
    await beamish.Registry.start_link(keys="unique", name="named_reg")
    sup = await Supervisor.start_link([(Named, "a")], strategy="one_for_one")
    GenServer.cast(beamish.Registry.via("named_reg", "a"), "hello")
    assert await GenServer.call(beamish.Registry.via("named_reg", "a"), "seen") == ["hello"]
    # ...and restarted under the same name.
    old = beamish.Registry.whereis_name(("named_reg", "a"))
    assert old is not None
    beamish.exit(old, "kill")
    await beamish.testing.eventually(lambda: beamish.Registry.whereis_name(("named_reg", "a")) not in (None, old))
    assert await GenServer.call(beamish.Registry.via("named_reg", "a"), "seen") == []
    # A child whose init ignores is ignored, not a failed start.
    assert await Supervisor.start_child(sup, (Ignoring, None)) is None
    assert [c[:2] for c in await Supervisor.which_children(sup) if c[0] is Ignoring] == [(Ignoring, None)]
