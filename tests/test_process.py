"""Processes: spawn, send/receive, links, monitors, exit signals, names, timers."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import beamish
from beamish import Atom, BadArg, Exit, Pid
from beamish.testing import ANY, assert_receive, refute_receive, wait_for_exit


async def _wait_forever() -> None:
    await beamish.receive(lambda m: False)


async def test_spawn_send_receive_roundtrip() -> None:
    async def echo() -> None:
        sender, text = await beamish.receive()
        beamish.send(sender, ("echo", text))

    pid = beamish.spawn(echo)
    beamish.send(pid, (beamish.self(), "hi"))
    assert await assert_receive(("echo", ANY)) == ("echo", "hi")


async def test_selective_receive_keeps_order_of_skipped_messages() -> None:
    me = beamish.self()
    for m in [1, "a", 2, "b", 3]:
        beamish.send(me, m)
    assert await beamish.receive(lambda m: isinstance(m, str)) == "a"
    assert [await beamish.receive() for _ in range(4)] == [1, 2, "b", 3]


async def test_receive_timeout_raises_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        await beamish.receive(timeout=0.01)
    with pytest.raises(TimeoutError):
        await beamish.receive(timeout=0)


async def test_receive_waiting_for_match_lets_others_queue() -> None:
    me = beamish.self()

    async def later() -> None:
        beamish.send(me, "noise")
        beamish.send(me, ("wanted", 1))

    beamish.spawn(later)
    assert await beamish.receive(lambda m: isinstance(m, tuple)) == ("wanted", 1)
    assert await beamish.receive(timeout=0) == "noise"


async def test_send_to_dead_pid_is_a_noop_and_to_unknown_name_is_badarg() -> None:
    pid = beamish.spawn(lambda: None)
    assert await wait_for_exit(pid) == "normal"
    beamish.send(pid, "lost")
    with pytest.raises(BadArg):
        beamish.send("nobody_here", "x")


async def test_normal_exit_does_not_kill_linked_process() -> None:
    pid = beamish.spawn_link(lambda: None)
    assert await wait_for_exit(pid) == "normal"
    await refute_receive(ANY, timeout=0.01)


async def test_abnormal_exit_kills_linked_process_that_does_not_trap() -> None:
    async def parent() -> None:
        beamish.spawn_link(_crash_later)
        await _wait_forever()

    pid = beamish.spawn(parent)
    reason = await wait_for_exit(pid)
    assert isinstance(reason, RuntimeError)


async def _crash_later() -> None:
    await asyncio.sleep(0)
    raise RuntimeError("boom")


async def test_trapped_exit_arrives_as_message() -> None:
    beamish.process_flag("trap_exit", True)
    pid = beamish.spawn_link(_exits_with, "custom")
    assert await assert_receive(("EXIT", pid, "custom")) == ("EXIT", pid, "custom")
    pid2 = beamish.spawn_link(lambda: None)
    await assert_receive(("EXIT", pid2, "normal"))


async def _exits_with(reason: str) -> None:
    raise Exit(reason)


async def test_kill_is_untrappable_and_becomes_killed() -> None:
    async def trapper() -> None:
        beamish.process_flag("trap_exit", True)
        await _wait_forever()

    pid = beamish.spawn(trapper)
    await asyncio.sleep(0)
    ref = beamish.monitor(pid)
    beamish.exit(pid, "kill")
    assert not beamish.is_alive(pid)
    await assert_receive(("DOWN", ref, "process", pid, "killed"))


async def test_exit_normal_is_ignored_unless_trapping() -> None:
    pid = beamish.spawn(_wait_forever)
    beamish.exit(pid, "normal")
    assert beamish.is_alive(pid)
    beamish.exit(pid, "other")
    assert not beamish.is_alive(pid)


async def test_trapping_process_gets_exit_signal_as_message() -> None:
    me = beamish.self()

    async def trapper() -> None:
        beamish.process_flag("trap_exit", True)
        beamish.send(me, await beamish.receive())

    pid = beamish.spawn(trapper)
    await asyncio.sleep(0)
    beamish.exit(pid, "please")
    await assert_receive(("EXIT", me, "please"))


async def test_monitor_fires_exactly_once_and_noproc_for_dead() -> None:
    pid = beamish.spawn(_wait_forever)
    ref = beamish.monitor(pid)
    beamish.exit(pid, "bye")
    await assert_receive(("DOWN", ref, "process", pid, "bye"))
    await refute_receive(("DOWN", ANY, ANY, ANY, ANY), timeout=0.01)
    ref2 = beamish.monitor(pid)
    await assert_receive(("DOWN", ref2, "process", pid, "noproc"))


async def test_demonitor_flush_removes_down() -> None:
    pid = beamish.spawn(lambda: None)
    ref = beamish.monitor(pid)
    await asyncio.sleep(0.01)
    # OTP's demonitor(Ref, [flush]) returns true; [flush, info] says whether
    # the monitor was still active.
    assert beamish.demonitor(ref, flush=True) is True
    await refute_receive(ANY, timeout=0.01)
    pid = beamish.spawn(lambda: None)
    ref = beamish.monitor(pid)
    await asyncio.sleep(0.01)
    assert beamish.demonitor(ref, flush=True, info=True) is False
    await refute_receive(ANY, timeout=0.01)
    live = beamish.spawn(_wait_forever)
    ref = beamish.monitor(live)
    assert beamish.demonitor(ref, info=True) is True
    assert beamish.demonitor(ref) is True


async def test_monitor_by_name() -> None:
    pid = beamish.spawn(_wait_forever, name="watched")
    ref = beamish.monitor("watched")
    beamish.exit(pid, "kill")
    await assert_receive(("DOWN", ref, "process", ("watched", ANY), "killed"))
    ref2 = beamish.monitor("never_registered")
    await assert_receive(("DOWN", ref2, "process", ("never_registered", ANY), "noproc"))


async def test_link_to_dead_process_sends_noproc() -> None:
    beamish.process_flag("trap_exit", True)
    pid = beamish.spawn(lambda: None)
    await wait_for_exit(pid)
    beamish.link(pid)
    await assert_receive(("EXIT", pid, "noproc"))


async def test_link_to_a_dead_process_without_trapping_raises_noproc_at_once() -> None:
    # OTP 25: link/1 on a dead local pid raises noproc in a caller that does
    # not trap exits (catchable: the caller lives on), rather than running on
    # after an exit signal it has not noticed.
    dead = beamish.spawn(lambda: None)
    await wait_for_exit(dead)
    parent = beamish.self()

    async def linker(catch: bool) -> None:
        if catch:
            try:
                beamish.link(dead)
            except Exit as e:
                beamish.send(parent, ("caught", e.reason))
            await beamish.receive(lambda m: m == "go on")
            beamish.send(parent, "still alive")
        else:
            beamish.link(dead)
            beamish.send(parent, "ran on after link")

    catcher = beamish.spawn(linker, True)
    await assert_receive(("caught", "noproc"))
    beamish.send(catcher, "go on")
    await assert_receive("still alive")
    pid, ref = beamish.spawn_monitor(linker, False)
    await assert_receive(("DOWN", ref, "process", pid, "noproc"))
    await refute_receive("ran on after link", timeout=0.01)


async def test_unlink_prevents_propagation() -> None:
    beamish.process_flag("trap_exit", True)
    pid = beamish.spawn_link(_wait_forever)
    beamish.unlink(pid)
    beamish.exit(pid, "bye")
    await refute_receive(("EXIT", ANY, ANY), timeout=0.01)


async def test_long_link_chain_dies_without_recursion_error() -> None:
    async def chain(n: int) -> None:
        if n:
            beamish.spawn_link(chain, n - 1)
        await _wait_forever()

    beamish.process_flag("trap_exit", True)
    head = beamish.spawn_link(chain, 3000)
    await asyncio.sleep(0.2)
    count = len(beamish.registered())  # touch the node; chain is running
    assert count == 0
    beamish.exit(head, "cascade")
    await assert_receive(("EXIT", head, "cascade"), timeout=2)


async def test_register_whereis_unregister_and_name_dies_with_process() -> None:
    pid = beamish.spawn(_wait_forever)
    beamish.register("svc", pid)
    assert beamish.whereis("svc") == pid
    assert "svc" in beamish.registered()
    with pytest.raises(BadArg):
        beamish.register("svc", beamish.self())
    beamish.unregister("svc")
    assert beamish.whereis("svc") is None
    beamish.register("svc", pid)
    beamish.exit(pid, "kill")
    assert beamish.whereis("svc") is None


async def test_send_by_name() -> None:
    me = beamish.self()

    async def named() -> None:
        beamish.send(me, ("got", await beamish.receive()))

    beamish.spawn(named, name="named_proc")
    beamish.send("named_proc", 7)
    await assert_receive(("got", 7))


async def test_send_after_and_cancel_timer() -> None:
    me = beamish.self()
    beamish.send_after(me, "tick", 0.01)
    await assert_receive("tick", timeout=1)
    t = beamish.send_after(me, "never", 10)
    left = beamish.cancel_timer(t)
    assert left is not None and 9 < left <= 10
    assert beamish.cancel_timer(t) is None


async def test_make_ref_unique_and_pid_identity() -> None:
    refs = {beamish.make_ref() for _ in range(1000)}
    assert len(refs) == 1000
    me = beamish.self()
    assert isinstance(me, Pid) and me == beamish.self() and hash(me) == hash(beamish.self())
    with pytest.raises(TypeError):
        Pid(Atom("x"), 1, 0, 0)


async def test_process_info_reports_state() -> None:
    pid = beamish.spawn(_wait_forever, name="info_me")
    beamish.link(pid)
    beamish.send(pid, "queued")
    await asyncio.sleep(0)
    info = beamish.process_info(pid)
    assert info is not None
    assert info.registered_name == "info_me"
    assert info.message_queue_len == 1
    assert beamish.self() in info.links
    assert info.status == "waiting"
    assert "_wait_forever" in info.initial_call
    me = beamish.process_info(beamish.self())
    assert me is not None and me.status == "running"
    beamish.unlink(pid)
    beamish.exit(pid, "kill")
    assert beamish.process_info(pid) is None


async def test_processes_of_one_function_share_one_initial_call_string() -> None:
    a, b = beamish.spawn(_wait_forever), beamish.spawn(_wait_forever)
    info_a, info_b = beamish.process_info(a), beamish.process_info(b)
    assert info_a is not None and info_b is not None
    # One string for all, not one per process (~70 bytes of each).
    assert info_a.initial_call is info_b.initial_call
    beamish.exit(a, "kill")
    beamish.exit(b, "kill")


async def test_crash_is_logged_with_pid(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="beamish"):
        pid = beamish.spawn(_crash_later)
        reason = await wait_for_exit(pid)
    assert isinstance(reason, RuntimeError)
    records = [r for r in caplog.records if getattr(r, "beamish_pid", None) == pid]
    assert records and "boom" in records[0].getMessage()


async def test_to_thread_keeps_other_processes_running() -> None:
    me = beamish.self()

    async def ticker() -> None:
        for i in range(3):
            await asyncio.sleep(0.01)
            beamish.send(me, ("tick", i))

    beamish.spawn(ticker)
    result = await beamish.to_thread(sum, [1, 2], 0)
    await beamish.to_thread(time.sleep, 0.1)
    assert result == 3
    for i in range(3):
        await assert_receive(("tick", i), timeout=0)


async def test_exit_self_kill_ends_caller() -> None:
    me = beamish.self()

    async def suicidal() -> None:
        try:
            beamish.exit(beamish.self(), "kill")
        finally:
            beamish.send(me, "unwound")

    pid = beamish.spawn(suicidal)
    assert await wait_for_exit(pid) == "killed"


async def test_receive_timeouts_share_a_heap_that_sweeps_finished_waits() -> None:
    import asyncio

    from beamish.process import Deadlines

    loop = asyncio.get_running_loop()
    deadlines = Deadlines(loop)
    waiting = [loop.create_future() for _ in range(1500)]
    for fut in waiting:
        deadlines.add(60.0, fut)
    for _ in range(10_000):  # waits that finish at once, behind the long ones
        fut = loop.create_future()
        deadlines.add(60.0, fut)
        fut.set_result(None)
    assert len(deadlines._heap) <= 2 * len(waiting) + 1  # swept, not 11,500 entries
    short = loop.create_future()
    deadlines.add(0.01, short)
    with pytest.raises(TimeoutError):
        await short
    assert not any(fut.done() for fut in waiting)
    deadlines.close()


async def test_the_process_api_in_a_pool_thread_says_where_it_is() -> None:
    # The usual hint (start a node with beamish.run) would mislead here.
    with pytest.raises(RuntimeError, match="a thread of the node's pool"):
        await beamish.to_thread(beamish.self)
