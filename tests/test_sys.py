"""`beamish.sys`: get_state, replace_state, get_status, suspend/resume,
statistics and trace of GenServers and GenStateMachines, from beamish and
from Erlang's own `sys` (and ours against an Erlang gen_server)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from tests.cluster.pynodes import cluster, erl
from tests.interop.erlang import erl_node, new_cookie

import beamish
from beamish import Atom, GenServer, GenStateMachine, NoReply, Reply, dist, sys
from beamish.gen_statem import Init, NextState
from beamish.gen_statem import Reply as SMReply


class Counter(GenServer):
    def init(self, n: int) -> int:
        return n

    def handle_call(self, request: Any, from_: Any, n: int) -> Reply:
        return Reply(n, n + 1)

    def handle_cast(self, request: Any, n: int) -> NoReply:
        return NoReply(n + request)


class Switch(GenStateMachine):
    callback_mode = "handle_event_function"

    def init(self, _: Any) -> Init:
        return Init("off", 0)

    def handle_event(self, kind: Any, event: Any, state: str, data: int) -> Any:
        if kind[0] == "call":
            return NextState("on" if state == "off" else "off", data + 1, [SMReply(kind[1], state)])
        return None


def test_state_read_and_replaced_in_both_behaviours() -> None:
    async def main() -> None:
        pid = await Counter.start_link(5)
        assert await sys.get_state(pid) == 5
        assert await sys.replace_state(pid, lambda n: n * 2) == 10
        assert await GenServer.call(pid, "next") == 10
        sm = await Switch.start_link(None)
        assert await sys.get_state(sm) == ("off", 0)
        assert await GenStateMachine.call(sm, "flip") == "off"
        assert await sys.replace_state(sm, lambda sd: ("off", sd[1] + 100)) == ("off", 101)
        assert await sys.get_state(sm) == ("off", 101)
        status = await sys.get_status(sm)
        assert (status.pid, status.module, status.status) == (sm, "gen_statem", "running")

    beamish.run(main)


def test_a_failing_replace_function_leaves_the_state_and_the_server() -> None:
    async def main() -> None:
        pid = await Counter.start_link(1)

        def boom(n: int) -> int:
            raise ValueError("no")

        with pytest.raises(beamish.Exit) as info:
            await sys.replace_state(pid, boom)
        assert info.value.reason[0] == "callback_failed"
        assert beamish.is_alive(pid)
        assert await sys.get_state(pid) == 1
        sm = await Switch.start_link(None)
        with pytest.raises(beamish.Exit):
            await sys.replace_state(sm, lambda sd: "not a pair")
        assert await sys.get_state(sm) == ("off", 0)

    beamish.run(main)


def test_a_suspended_server_answers_system_messages_only_and_resumes_in_order() -> None:
    async def main() -> None:
        pid = await Counter.start_link(0)
        await sys.suspend(pid)
        assert (await sys.get_status(pid)).status == "suspended"
        for n in (1, 2, 3):
            GenServer.cast(pid, n)
        with pytest.raises(beamish.Exit) as info:
            await GenServer.call(pid, "next", timeout=0.05)
        assert info.value.reason == "timeout"
        assert await sys.get_state(pid) == 0  # nothing handled while suspended
        await sys.suspend(pid)  # twice is fine
        await sys.resume(pid)
        # The casts ran first, in order, then the call that timed out (its
        # reply dropped), as an Erlang gen_server does after sys:resume.
        assert await GenServer.call(pid, "next") == 7
        assert (await sys.get_status(pid)).status == "running"
        # A suspended server still stops when asked.
        await sys.suspend(pid)
        await GenServer.stop(pid)
        assert not beamish.is_alive(pid)
        # No stray reply of the stop's sys request is left behind.
        with pytest.raises(TimeoutError):
            await beamish.receive(timeout=0)

    beamish.run(main)


def test_statistics_and_trace(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> Any:
        pid = await Counter.start_link(0, name="counted")
        assert await sys.statistics(pid, "get") == "no_statistics"
        await sys.statistics(pid, True)
        for _ in range(5):
            GenServer.cast(pid, 1)
        await GenServer.call(pid, "next")
        stats = dict(await sys.statistics(pid, "get"))
        await sys.statistics(pid, False)
        await sys.trace(pid, True)
        GenServer.cast(pid, 7)
        await sys.get_state(pid)
        await sys.trace(pid, False)
        GenServer.cast(pid, 8)
        await sys.get_state(pid)
        return stats

    with caplog.at_level(logging.INFO, logger="beamish.sys"):
        stats = beamish.run(main)
    assert stats["messages_in"] >= 6
    traced = [r.getMessage() for r in caplog.records if r.name == "beamish.sys"]
    assert any("*DBG* counted got" in t and "7" in t for t in traced), traced
    assert not any("8)" in t for t in traced), traced


@pytest.mark.interop
def test_erlangs_sys_against_a_beamish_server_and_ours_against_an_erlang_one() -> None:
    cookie = new_cookie()
    with erl_node("sys", cookie=cookie) as e:

        async def main() -> None:
            async with cluster(1, cookie) as (p,):
                await p.do(lambda: Counter.start(3, name="counter"))
                target = f"{{counter, '{p.name}'}}"
                assert await erl(p, e.name, f"sys:get_state({target}).") == 3
                status = await erl(p, e.name, f"sys:get_status({target}).")
                assert status[0] == "status" and status[3][1] == "running"
                assert await erl(p, e.name, f"sys:suspend({target}).") == "ok"
                assert (await erl(p, e.name, f"sys:get_status({target})."))[3][1] == "suspended"
                assert await erl(p, e.name, f"sys:resume({target}).") == "ok"
                assert await erl(p, e.name, f"sys:statistics({target}, true).") == "ok"
                stats = await erl(p, e.name, f"sys:statistics({target}, get).")
                assert stats[0] == "ok"
                # An Erlang fun cannot run here: the caller exits callback_failed, the state stays.
                failed = await erl(p, e.name, f"catch sys:replace_state({target}, fun(S) -> S + 1 end).")
                assert failed[0] == "EXIT" and failed[1][0][0] == "callback_failed", failed
                assert await erl(p, e.name, f"sys:get_state({target}).") == 3
                assert await p.call(lambda: beamish.whereis("counter")) is not None
                # And beamish's sys against an Erlang gen_server (the global name server).
                state = await p.do(lambda: sys.get_state(("global_name_server", e.name)))
                assert type(state) is tuple and state[0] == "state"
                erl_status = await p.do(lambda: sys.get_status(("global_name_server", e.name)))
                assert erl_status.module == "gen_server" and erl_status.status == "running"
                await p.do(lambda: dist.ping(e.name))

        import asyncio

        asyncio.run(main())


def test_an_unknown_system_request_is_an_error_reply() -> None:
    from beamish._gen import call

    async def main() -> Any:
        pid = await Counter.start_link(0)
        return await call(pid, "frobnicate", 1.0, label=Atom("system"))

    assert beamish.run(main) == ("error", ("unknown_system_msg", "frobnicate"))
