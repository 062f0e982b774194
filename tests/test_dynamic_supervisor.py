"""DynamicSupervisor: children on demand, max_children, extra arguments,
restarts, terminate_child and ordered shutdown."""

from __future__ import annotations

import logging

import pytest

import beamish
from beamish import ChildSpec, From, GenServer, Pid, Reply, StartError
from beamish.dynamic_supervisor import DynamicSupervisor
from beamish.supervisor import Supervisor
from beamish.terms import Term
from beamish.testing import ANY, assert_receive, wait_for_exit


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="beamish")


class Room(GenServer):
    def init(self, arg: tuple[Term, ...]) -> tuple[Term, ...]:
        beamish.send(arg[-1], ("room", arg[:-1], beamish.self()))
        return arg

    def handle_call(self, request: Term, from_: From, state: tuple[Term, ...]) -> Reply:
        if request == "crash":
            raise RuntimeError("boom")
        return Reply(state[:-1], state)


async def room_start(*arg: Term) -> Pid:
    return await Room.start_link(arg)


async def test_start_children_on_demand_up_to_max_children() -> None:
    me = beamish.self()
    sup = await DynamicSupervisor.start_link(max_children=2)
    a = await DynamicSupervisor.start_child(sup, {"id": "a", "start": (room_start, ("a", me))})
    await DynamicSupervisor.start_child(sup, {"id": "b", "start": (room_start, ("b", me))})
    with pytest.raises(StartError) as info:
        await DynamicSupervisor.start_child(sup, {"id": "c", "start": (room_start, ("c", me))})
    assert info.value.reason == "max_children"
    assert (await DynamicSupervisor.count_children(sup))["active"] == 2
    assert isinstance(a, Pid)
    await DynamicSupervisor.terminate_child(sup, a)
    assert not beamish.is_alive(a)
    assert [c[1] for c in await DynamicSupervisor.which_children(sup)] != [a]
    assert (await DynamicSupervisor.count_children(sup))["specs"] == 1
    with pytest.raises(LookupError):
        await DynamicSupervisor.terminate_child(sup, a)


async def test_extra_arguments_are_prepended_and_crashed_children_restart() -> None:
    me = beamish.self()
    sup = await DynamicSupervisor.start_link(extra_arguments=["tenant-1"])
    pid = await DynamicSupervisor.start_child(sup, ChildSpec(id="r", start=(room_start, ("lobby", me))))
    _, args, first = await assert_receive(("room", ANY, Pid))
    assert args == ("tenant-1", "lobby") and first == pid
    with pytest.raises(beamish.Exit):
        await GenServer.call(first, "crash")
    _, _, second = await assert_receive(("room", ("tenant-1", "lobby"), Pid))
    assert second != first
    [(child_id, now, kind, _)] = await DynamicSupervisor.which_children(sup)
    assert (child_id, now, kind) == ("undefined", second, "worker")


async def test_as_a_named_child_of_a_supervisor_and_stopped_with_it() -> None:
    me = beamish.self()
    top = await Supervisor.start([DynamicSupervisor.child_spec({"name": "Rooms"})])
    pid = await DynamicSupervisor.start_child("Rooms", {"id": "x", "start": (room_start, ("x", me))})
    assert isinstance(pid, Pid)
    await Supervisor.stop(top)
    assert await wait_for_exit(pid) in ("shutdown", "noproc")
    assert beamish.whereis("Rooms") is None
