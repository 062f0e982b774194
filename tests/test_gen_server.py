"""GenServer: calls, casts, infos, continue, timeouts, stop, crashes, names."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import beamish
from beamish import (
    Continue,
    Exit,
    From,
    GenServer,
    Ignore,
    NoReply,
    Ok,
    Reply,
    StartError,
    Stop,
)
from beamish._atoms import SYSTEM
from beamish.terms import Term
from beamish.testing import ANY, assert_receive, refute_receive, wait_for_exit


class Stack(GenServer):
    def init(self, items: list[Term]) -> list[Term]:
        return items

    def handle_call(self, request: Term, from_: From, stack: list[Term]) -> Reply | NoReply | Stop:
        match request:
            case "pop":
                return Reply(stack[0], stack[1:])
            case "peek_later":
                beamish.send_after(beamish.self(), ("answer", from_), 0.01)
                return NoReply(stack)
            case ("stop", reason):
                return Stop(reason, stack, reply="stopping")
            case "crash":
                raise ValueError("crash in call")
            case "sleep":
                return NoReply(stack)
        return Reply(("unknown", request), stack)

    def handle_cast(self, request: Term, stack: list[Term]) -> NoReply | Stop:
        match request:
            case ("push", item):
                return NoReply([item, *stack])
        return NoReply(stack)

    def handle_info(self, msg: Term, stack: list[Term]) -> NoReply | Stop:
        match msg:
            case ("answer", from_):
                GenServer.reply(from_, stack[0] if stack else None)
        return NoReply(stack)


async def test_call_cast_and_state_threading() -> None:
    pid = await Stack.start_link(["a"])
    GenServer.cast(pid, ("push", "b"))
    assert await GenServer.call(pid, "pop") == "b"
    assert await GenServer.call(pid, "pop") == "a"


async def test_deferred_reply_with_from() -> None:
    pid = await Stack.start_link(["x"])
    assert await GenServer.call(pid, "peek_later") == "x"


async def test_call_unknown_name_raises_noproc_promptly() -> None:
    with pytest.raises(Exit) as info:
        await GenServer.call("no_such_server", "hi")
    assert info.value.reason == "noproc"


async def test_call_dead_pid_raises_noproc() -> None:
    pid = await Stack.start(["x"])
    await GenServer.stop(pid)
    with pytest.raises(Exit) as info:
        await GenServer.call(pid, "pop")
    assert info.value.reason == "noproc"


async def test_call_timeout_and_late_reply_never_leaks() -> None:
    pid = await Stack.start_link(["x"])
    with pytest.raises(Exit) as info:
        await GenServer.call(pid, "peek_later", timeout=0.001)
    assert info.value.reason == "timeout"
    await asyncio.sleep(0.05)  # the late reply is sent now, to a dead alias
    await refute_receive(ANY, timeout=0.01)


async def test_server_crash_during_call_gives_reason_to_caller(caplog: pytest.LogCaptureFixture) -> None:
    beamish.process_flag("trap_exit", True)
    pid = await Stack.start_link([])
    with caplog.at_level(logging.ERROR, logger="beamish"), pytest.raises(Exit) as info:
        await GenServer.call(pid, "crash")
    assert isinstance(info.value.reason, ValueError)
    await assert_receive(("EXIT", pid, ValueError))
    assert any("terminating" in r.getMessage() for r in caplog.records)


async def test_uncaught_failed_call_is_abnormal_exit() -> None:
    async def caller() -> None:
        await GenServer.call("nobody", "x")

    pid = beamish.spawn(caller)
    reason = await wait_for_exit(pid)
    assert reason[0] == "noproc"


async def test_stop_with_reply_runs_terminate() -> None:
    me = beamish.self()

    class T(GenServer):
        def handle_call(self, request: Term, from_: From, state: Term) -> Reply | NoReply | Stop:
            return Stop("normal", state, reply="bye")

        def terminate(self, reason: Term, state: Term) -> None:
            beamish.send(me, ("terminated", reason))

    pid = await T.start_link(None)
    ref = beamish.monitor(pid)
    assert await GenServer.call(pid, "x") == "bye"
    await assert_receive(("terminated", "normal"))
    await assert_receive(("DOWN", ref, "process", pid, "normal"))


async def test_genserver_stop_calls_terminate_and_waits() -> None:
    me = beamish.self()

    class T(GenServer):
        async def terminate(self, reason: Term, state: Term) -> None:
            await asyncio.sleep(0.01)
            beamish.send(me, ("terminated", reason))

    pid = await T.start(None)  # not linked: "shutdown" would take the test down too
    await GenServer.stop(pid, "shutdown")
    await assert_receive(("terminated", "shutdown"), timeout=0)
    assert not beamish.is_alive(pid)
    with pytest.raises(Exit):
        await GenServer.stop(pid)


async def test_async_callbacks_and_call_from_within_a_server() -> None:
    inner = await Stack.start_link(["deep"])

    class Outer(GenServer):
        async def handle_call(self, request: Term, from_: From, state: Term) -> Reply:
            value = await GenServer.call(inner, "pop")
            return Reply(("via", value), state)

    outer = await Outer.start_link(None)
    assert await GenServer.call(outer, "go") == ("via", "deep")


async def test_init_variants() -> None:
    class Ignoring(GenServer):
        def init(self, arg: Term) -> Ignore:
            return Ignore()

    class Stopping(GenServer):
        def init(self, arg: Term) -> Stop:
            return Stop("no_way")

    class Crashing(GenServer):
        def init(self, arg: Term) -> Term:
            raise KeyError("bad init")

    with pytest.raises(StartError) as info:
        await Ignoring.start_link()
    assert info.value.reason == "ignore"
    beamish.process_flag("trap_exit", True)
    with pytest.raises(StartError) as info:
        await Stopping.start_link()
    assert info.value.reason == "no_way"
    await assert_receive(("EXIT", ANY, "no_way"))
    with pytest.raises(StartError) as info:
        await Crashing.start_link()
    assert isinstance(info.value.reason, KeyError)


async def test_already_started_and_names() -> None:
    pid = await Stack.start_link([], name="stack")
    with pytest.raises(StartError) as info:
        await Stack.start_link([], name="stack")
    assert info.value.reason == ("already_started", pid)
    GenServer.cast("stack", ("push", 1))
    assert await GenServer.call("stack", "pop") == 1
    assert await GenServer.call(("stack", beamish.self().node), "peek_later") is None


async def test_continue_runs_before_other_messages() -> None:
    me = beamish.self()

    class C(GenServer):
        def init(self, arg: Term) -> Ok:
            return Ok([], Continue("boot"))

        def handle_continue(self, arg: Term, state: list[Term]) -> NoReply:
            return NoReply([*state, arg], Continue("second") if arg == "boot" else None)

        def handle_call(self, request: Term, from_: From, state: Term) -> Reply:
            return Reply(state, state)

    pid = await C.start_link()
    assert await GenServer.call(pid, "get") == ["boot", "second"]
    del me


async def test_idle_timeout_reaches_handle_info() -> None:
    me = beamish.self()

    class Idle(GenServer):
        def init(self, arg: Term) -> Ok:
            return Ok(0, 0.02)

        def handle_info(self, msg: Term, state: int) -> NoReply:
            beamish.send(me, ("info", msg))
            return NoReply(state)

        def handle_cast(self, request: Term, state: int) -> NoReply:
            return NoReply(state, 0.02)

    pid = await Idle.start_link()
    await assert_receive(("info", "timeout"), timeout=1)
    GenServer.cast(pid, "poke")
    await assert_receive(("info", "timeout"), timeout=1)
    await refute_receive(("info", "timeout"), timeout=0.05)


async def test_bad_return_crashes_with_clear_error() -> None:
    class Bad(GenServer):
        def handle_cast(self, request: Term, state: Term) -> Any:
            return "oops"

    pid = await Bad.start()
    GenServer.cast(pid, "x")
    reason = await wait_for_exit(pid)
    assert isinstance(reason, TypeError) and "handle_cast" in str(reason) and "oops" in str(reason)


async def test_parent_shutdown_runs_terminate_when_trapping() -> None:
    me = beamish.self()

    class Trapper(GenServer):
        def init(self, arg: Term) -> Term:
            beamish.process_flag("trap_exit", True)
            return arg

        def terminate(self, reason: Term, state: Term) -> None:
            beamish.send(me, ("terminate", reason))

    async def parent() -> None:
        await Trapper.start_link(None)
        await beamish.receive(lambda m: False)

    ppid = beamish.spawn(parent)
    await asyncio.sleep(0.01)
    beamish.exit(ppid, "shutdown")
    await assert_receive(("terminate", "shutdown"))


async def test_get_state_system_message() -> None:
    pid = await Stack.start_link([1, 2])
    assert await beamish._gen.call(pid, "get_state", label=SYSTEM) == [1, 2]


async def test_raising_exit_in_a_callback_stops_with_that_reason() -> None:
    from beamish.testing import wait_for_exit

    class Quitter(GenServer):
        def init(self, _: object) -> None:
            return None

        def handle_cast(self, request: object, state: None) -> NoReply:
            raise beamish.Exit(("quit", request))

    pid = await Quitter.start(None)
    GenServer.cast(pid, "now")
    assert await wait_for_exit(pid) == ("quit", "now")


class AsyncCaster(GenServer):
    """An async callback leaves an empty mailbox behind; casts that follow
    must still be handled (the cast fast path appends to a live mailbox)."""

    def init(self, _: object) -> None:
        return None

    async def handle_call(self, request: object, from_: beamish.From, state: None) -> Reply:
        await asyncio.sleep(0)
        return Reply("ok", state)

    def handle_cast(self, request: object, state: None) -> NoReply:
        assert isinstance(request, tuple)
        beamish.send(request[0], ("got", request[1]))
        return NoReply(state)


async def test_casts_after_an_async_callback_are_handled() -> None:
    pid = await AsyncCaster.start(None)
    for i in range(3):
        assert await GenServer.call(pid, "async") == "ok"
        GenServer.cast(pid, (beamish.self(), i))
        # Nothing else arrives to wake the server: the cast alone must.
        await assert_receive(("got", i), timeout=1.0)


class Pong(GenServer):
    def init(self, _: object) -> int:
        return 0

    def handle_call(self, request: object, from_: beamish.From, n: int) -> Reply:
        if request == "crash":
            raise RuntimeError("asked to")
        if request == "kill the caller":
            beamish.exit(from_.pid, "kill")
        return Reply(n + 1, n + 1)


async def test_calls_to_an_idle_server_run_at_once_but_a_calling_loop_still_yields() -> None:
    from beamish.process import INLINE_BUDGET

    pid = await Pong.start(None)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beamish.spawn(ticker)
    for i in range(1, 10 * INLINE_BUDGET + 1):
        assert await GenServer.call(pid, "n") == i
    # The ticker ran about once per budget of calls: nobody starves.
    assert ticks >= 9
    # A crash during an at-once call still reaches the caller as an exit.
    with pytest.raises(beamish.Exit) as info:
        await GenServer.call(pid, "crash")
    assert isinstance(info.value.reason, RuntimeError)
    assert not beamish.is_alive(pid)
    from beamish.process import current

    assert not current().node.aliases  # nothing left behind by the calls
    # A callback that kills its caller: the caller dies, as it would in OTP.
    pid = await Pong.start(None)

    async def victim() -> None:
        await GenServer.call(pid, "kill the caller")
        beamish.send(parent, "survived")

    parent = beamish.self()
    doomed = beamish.spawn(victim)
    assert await wait_for_exit(doomed) == "killed"
    await refute_receive("survived", timeout=0.05)


class Collector(GenServer):
    def init(self, _: object) -> list[object]:
        return []

    def handle_cast(self, request: object, seen: list[object]) -> NoReply:
        seen.append(request)
        return NoReply(seen)

    def handle_call(self, request: object, from_: beamish.From, seen: list[object]) -> Reply:
        return Reply(list(seen), seen)


async def test_a_flood_of_casts_is_handled_in_order_and_the_mailbox_stays_short() -> None:
    pid = await Collector.start(None)
    for i in range(1000):  # never yielding to the loop
        GenServer.cast(pid, i)
    info = beamish.process_info(pid)
    assert info is not None and info.message_queue_len < 64
    assert await GenServer.call(pid, "seen") == list(range(1000))


class SelfCaster(GenServer):
    def init(self, _: object) -> list[object]:
        return []

    def handle_cast(self, request: object, seen: list[object]) -> NoReply:
        return NoReply([*seen, request])

    def handle_call(self, request: object, from_: beamish.From, seen: list[object]) -> Reply:
        if request == "cast to myself":
            GenServer.cast(beamish.self(), len(seen))
            beamish.send(beamish.self(), "info")
        return Reply(list(seen), seen)

    def handle_info(self, msg: object, seen: list[object]) -> NoReply:
        return NoReply([*seen, msg])


async def test_what_an_at_once_call_sends_its_own_server_is_handled_after_it() -> None:
    pid = await SelfCaster.start(None)
    # Each call runs at once (the server is idle); what its callback sends
    # the server must be queued, handled after the call, never lost.
    assert await GenServer.call(pid, "cast to myself") == []
    assert await GenServer.call(pid, "cast to myself") == [0, "info"]
    assert await GenServer.call(pid, "look") == [0, "info", 2, "info"]


async def test_an_idle_server_keeps_no_monitor_bookkeeping() -> None:
    from beamish.process import current

    pid = await Pong.start(None)
    await GenServer.call(pid, "n")
    proc = current().node.local(pid)
    assert proc is not None
    # Its starter's monitor is gone, and an emptied dict is not kept
    # (224 of an idle server's bytes).
    def bookkeeping() -> tuple[object, ...]:
        assert proc is not None
        return proc._watchers, proc._monitors, proc.mailbox

    assert bookkeeping() == (None, None, None)
    ref = beamish.monitor(pid)
    assert bookkeeping() == ({ref: beamish.self()}, None, None)
    beamish.demonitor(ref)
    assert bookkeeping() == (None, None, None)


# --- OTP's reply clauses, late replies, calls to oneself ----------------------


async def test_a_hand_built_from_with_a_plain_ref_gets_its_reply_at_its_pid() -> None:
    # gen:reply's third clause: {To, Tag} with a plain ref sends {Tag, Reply}
    # to To (what a pre-OTP-24 caller or a third-party client builds).
    pid = await Stack.start_link(["a", "b"])
    tag = beamish.make_ref()
    beamish.send(pid, (beamish.Atom("$gen_call"), (beamish.self(), tag), "pop"))
    await assert_receive((tag, "a"))
    # Any other tag goes to the pid too, as it is.
    beamish.send(pid, (beamish.Atom("$gen_call"), (beamish.self(), "my tag"), "pop"))
    await assert_receive(("my tag", "b"))


async def test_a_reply_to_an_alias_tag_goes_to_the_alias_only_while_it_is_active() -> None:
    from beamish.terms import ImproperList, alias_tag

    pid = await Stack.start_link(["a", "b", "c"])
    ref = beamish.monitor(pid)  # a monitor's ref, not an alias: a reply to it is dropped
    beamish.send(pid, (beamish.Atom("$gen_call"), (beamish.self(), alias_tag(ref)), "pop"))
    await refute_receive(ANY, timeout=0.02)
    # A deferred reply through GenServer.reply follows the same rule: the
    # caller's tag here is [[alias | Ref] | extra], gen:reply's second clause.
    tag = [ImproperList([beamish.Atom("alias")], ref), "extra"]
    beamish.send(pid, (beamish.Atom("$gen_call"), (beamish.self(), tag), "peek_later"))
    await refute_receive(ANY, timeout=0.05)


class Later(GenServer):
    """Answers each call after the delay it asks for, from a timer."""

    def init(self, _: object) -> None:
        return None

    def handle_call(self, delay: float, from_: beamish.From, state: None) -> NoReply:
        beamish.send_after(beamish.self(), ("answer", from_), delay)
        return NoReply(state)

    def handle_info(self, msg: Term, state: None) -> NoReply:
        GenServer.reply(msg[1], "late or not")
        return NoReply(state)


async def test_a_call_that_times_out_leaves_nothing_in_the_mailbox_however_the_race_falls() -> None:
    # Replies land before, at and after each caller's deadline. Before
    # replies went to the caller's alias and a timed-out call took a reply
    # that had made it in, stale (tag, value) messages stayed behind here.
    pid = await Later.start_link(None)
    parent = beamish.self()

    async def caller(seed: int) -> None:
        reasons = []
        for i in range(60):
            try:
                await GenServer.call(pid, ((seed * 7 + i) % 5) * 0.0005, timeout=0.001)
            except Exit as e:
                reasons.append(e.reason)
        assert set(reasons) <= {"timeout"}
        beamish.send(parent, ("left", len(reasons), list(beamish.process.current().mailbox or ())))

    for seed in range(40):
        beamish.spawn(caller, seed)
    timeouts = 0
    for _ in range(40):
        _, n, left = await assert_receive(("left", ANY, ANY), timeout=30)
        assert left == []
        timeouts += n
    assert timeouts > 0  # the race was run


async def test_a_call_to_oneself_exits_at_once_with_calling_self() -> None:
    beamish.register("me", beamish.self())
    for dest in (beamish.self(), "me"):
        with pytest.raises(Exit) as info:
            await GenServer.call(dest, "hi", timeout=1.0)
        assert info.value.reason == "calling_self"
        assert info.value.context == ("gen", "call", [dest, "hi", 1.0])
