"""Agent: state held by a process, changed by functions run inside it."""

from __future__ import annotations

import logging

import pytest

import beamish
from beamish.agent import Agent
from beamish.supervisor import Supervisor
from beamish.testing import assert_receive, wait_for_exit


async def test_get_update_get_and_update_cast_in_order() -> None:
    agent = await Agent.start_link(lambda: [], name="list")
    for i in range(3):
        Agent.cast("list", lambda xs, i=i: [*xs, i])
    await Agent.update(agent, lambda xs: [*xs, "u"])
    assert await Agent.get(agent, len) == 4
    assert await Agent.get_and_update(agent, lambda xs: (xs[0], xs[1:])) == 0
    assert await Agent.get(agent, lambda xs: xs) == [1, 2, "u"]


async def test_async_functions_and_stop() -> None:
    async def initial() -> int:
        return 5

    async def double(n: int) -> int:
        return n * 2

    agent = await Agent.start_link(initial)
    await Agent.update(agent, double)
    assert await Agent.get(agent, lambda n: n) == 10
    await Agent.stop(agent)
    assert not beamish.is_alive(agent)
    with pytest.raises(beamish.Exit) as info:
        await Agent.get(agent, lambda n: n)
    assert info.value.reason == "noproc"


async def test_a_failing_function_crashes_the_agent_and_its_supervisor_restarts_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="beamish")
    sup = await Supervisor.start([(Agent, lambda: 0)])
    [(_, pid, _, _)] = await Supervisor.which_children(sup)
    assert isinstance(pid, beamish.Pid)
    await Agent.update(pid, lambda n: n + 1)
    with pytest.raises(beamish.Exit):
        await Agent.get(pid, lambda n: 1 / 0)
    await wait_for_exit(pid)
    [(_, again, _, _)] = await Supervisor.which_children(sup)
    assert isinstance(again, beamish.Pid)
    assert again != pid and await Agent.get(again, lambda n: n) == 0  # fresh state


async def test_bad_get_and_update_result_is_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="beamish")
    beamish.process_flag("trap_exit", True)
    agent = await Agent.start_link(lambda: 1)
    with pytest.raises(beamish.Exit) as info:
        await Agent.get_and_update(agent, lambda n: n)
    assert isinstance(info.value.reason, TypeError) and "(reply, new_state)" in str(info.value.reason)
    _, _, reason = await assert_receive(("EXIT", agent, TypeError))
    assert reason is info.value.reason
