"""Task and TaskSupervisor: results, failures, timeouts, shutdown, streams,
and nothing left behind in the caller's mailbox."""

from __future__ import annotations

import logging

import pytest

import beamish
from beamish.task import Task, TaskSupervisor
from beamish.testing import ANY, assert_receive, refute_receive, wait_for_exit


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
    with pytest.raises(beamish.Exit) as info:
        await Task.await_(task, timeout=0.01)
    assert info.value.reason == "timeout"
    assert await Task.yield_(task, timeout=0.01) is None
    assert await Task.yield_(task, timeout=2) == ("ok", "late")


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
