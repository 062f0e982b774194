"""Task and TaskSupervisor: results, failures, timeouts, shutdown, streams,
and nothing left behind in the caller's mailbox."""

from __future__ import annotations

import functools
import logging

import pytest

import beamish
from beamish.task import Task, TaskSupervisor
from beamish.testing import ANY, assert_receive, eventually, refute_receive, wait_for_exit


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="beamish")


async def slow(seconds: float, value: object) -> object:
    try:
        await beamish.receive(lambda m: False, timeout=seconds)
    except TimeoutError:
        pass
    return value


async def test_async_and_await_leave_nothing_in_the_mailbox() -> None:
    task = Task.async_(lambda: 42)
    assert await Task.await_(task) == 42
    assert await Task.async_(slow, 0.01, "x") == "x"
    await refute_receive(ANY, timeout=0.02)


async def test_a_crashing_task_takes_the_caller_down_unless_it_traps_exits() -> None:
    async def caller() -> None:
        task = Task.async_(lambda: 1 / 0)
        await Task.await_(task)

    pid = beamish.spawn(caller)
    assert isinstance(await wait_for_exit(pid), ZeroDivisionError)
    beamish.process_flag("trap_exit", True)
    task = Task.async_(lambda: 1 / 0)
    with pytest.raises(beamish.Exit) as info:
        await Task.await_(task)
    assert isinstance(info.value.reason, ZeroDivisionError)
    await assert_receive(("EXIT", task.pid, ZeroDivisionError))


async def test_await_timeout_raises_and_yield_returns_none() -> None:
    task = Task.async_(slow, 0.3, "late")
    assert await Task.yield_(task, timeout=0.01) is None
    assert await Task.yield_(task, timeout=2) == ("ok", "late")
    # After a caught timeout, as Elixir (which demonitors with flush and
    # replies to an alias): neither the late result nor the DOWN arrives.
    task = Task.async_(slow, 0.05, "late")
    with pytest.raises(beamish.Exit) as info:
        await Task.await_(task, timeout=0.01)
    assert info.value.reason == "timeout"
    await wait_for_exit(task.pid)
    await refute_receive(ANY, timeout=0.02)


async def test_shutdown_stops_a_running_task_and_returns_a_finished_ones_result() -> None:
    task = Task.async_(slow, 10, "never")
    assert await Task.shutdown(task) is None
    assert not beamish.is_alive(task.pid)
    done = Task.async_(lambda: "ready")
    await Task.yield_(Task.async_(lambda: None), timeout=1)  # give `done` time to finish
    assert await Task.shutdown(done) in (("ok", "ready"), None)
    await refute_receive(ANY, timeout=0.02)


async def test_await_many_and_ownership() -> None:
    tasks = [Task.async_(slow, 0.01 * i, i) for i in range(5)]
    assert await Task.await_many(tasks) == [0, 1, 2, 3, 4]
    task = Task.async_(lambda: 1)
    me = beamish.self()

    async def stranger() -> None:
        try:
            await Task.await_(task)
        except beamish.Exit as e:
            beamish.send(me, ("stranger", e.reason))

    beamish.spawn(stranger)
    await assert_receive(("stranger", ("not_owner", me)))
    assert await task == 1


async def test_async_stream_respects_max_concurrency_and_order() -> None:
    me = beamish.self()
    running = {"now": 0, "peak": 0}

    async def work(n: int) -> int:
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        await slow(0.01 * (5 - n), None)
        running["now"] -= 1
        return n * 10

    ordered = [r async for r in Task.async_stream(range(5), work, max_concurrency=2)]
    assert ordered == [("ok", n * 10) for n in range(5)] and running["peak"] == 2
    unordered = [r async for r in Task.async_stream(range(5), work, max_concurrency=5, ordered=False)]
    assert sorted(unordered) == ordered and unordered != ordered
    killed = [r async for r in Task.async_stream([0.5], lambda s: slow(s, 1), timeout=0.01, on_timeout="kill_task")]
    assert killed == [("exit", "timeout")]
    del me
    await refute_receive(ANY, timeout=0.02)


async def test_task_supervisor_async_nolink_does_not_take_the_caller_down() -> None:
    sup = await TaskSupervisor.start_link(name="tasks")
    task = await TaskSupervisor.async_nolink("tasks", lambda: 1 / 0)
    with pytest.raises(beamish.Exit) as info:
        await Task.await_(task)
    assert isinstance(info.value.reason, ZeroDivisionError)
    ok = await TaskSupervisor.async_nolink(sup, lambda: "fine")
    assert await ok == "fine"
    pid = await TaskSupervisor.start_child(sup, beamish.receive)
    assert pid in await TaskSupervisor.children(sup)
    await TaskSupervisor.terminate_child(sup, pid)
    assert not beamish.is_alive(pid)


# --- async_stream as Elixir's: tasks linked to an intermediate process ------------


async def test_a_trapping_caller_gets_no_exit_per_item_and_sees_failures_as_exit_results() -> None:
    beamish.process_flag("trap_exit", True)

    def work(n: int) -> int:
        if n == 3:
            raise ValueError("item 3")
        return n

    results = [r async for r in Task.async_stream(range(2000), work, max_concurrency=8)]
    assert results[:3] == [("ok", 0), ("ok", 1), ("ok", 2)]
    assert results[3][0] == "exit" and isinstance(results[3][1], ValueError)
    assert results[4:] == [("ok", n) for n in range(4, 2000)]
    await refute_receive(ANY, timeout=0.02)  # not one EXIT, reply or DOWN


async def test_a_failing_item_takes_a_caller_that_does_not_trap_down() -> None:
    async def caller() -> None:
        async for _ in Task.async_stream([0.5, 0], lambda s: slow(s, 1 / s), max_concurrency=2):
            pass

    pid = beamish.spawn(caller)
    assert isinstance(await wait_for_exit(pid), ZeroDivisionError)


async def test_the_timeout_is_per_task_in_unordered_mode_too() -> None:
    # One slow task among quick ones that keep answering: it must still time
    # out after its own `timeout` (it used to run on while anything answered).
    items = [0.3] + [0.01] * 40  # the quick ones take 0.4 s in all
    results = [
        r
        async for r in Task.async_stream(
            items, lambda s: slow(s, s), max_concurrency=2, ordered=False, timeout=0.1, on_timeout="kill_task"
        )
    ]
    assert sorted(results, key=str) == sorted([("exit", "timeout")] + [("ok", 0.01)] * 40, key=str)
    await refute_receive(ANY, timeout=0.02)


async def _stream_pids(pids: list[beamish.Pid], s: float) -> float:
    pids.append(beamish.self())
    return await slow(s, s)  # type: ignore[return-value]


async def test_halting_a_stream_kills_the_running_tasks_and_leaves_nothing_behind() -> None:
    beamish.process_flag("trap_exit", True)
    # A break: asyncio closes the generator soon after.
    pids: list[beamish.Pid] = []
    async for r in Task.async_stream([0.0] + [5.0] * 4, functools.partial(_stream_pids, pids), max_concurrency=5):
        assert r == ("ok", 0.0)
        break
    await eventually(lambda: len(pids) == 5 and not any(beamish.is_alive(p) for p in pids))
    # An exception in the caller's loop.
    pids = []
    async def consume() -> None:
        async for _ in Task.async_stream([0.0, 5.0, 5.0], functools.partial(_stream_pids, pids), max_concurrency=3):
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError):
        await consume()
    await eventually(lambda: len(pids) == 3 and not any(beamish.is_alive(p) for p in pids))
    # A timeout with on_timeout="exit".
    pids = []
    with pytest.raises(beamish.Exit) as info:
        async for _ in Task.async_stream([5.0, 5.0], functools.partial(_stream_pids, pids), timeout=0.05):
            pass
    assert info.value.reason == "timeout"
    await eventually(lambda: len(pids) == 2 and not any(beamish.is_alive(p) for p in pids))
    await refute_receive(ANY, timeout=0.02)
