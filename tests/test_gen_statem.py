"""GenStateMachine: both callback modes, every action and transition rule,
enter calls, timeouts, stop, crashes and the client API."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import beamish
from beamish import Exit, Hibernate, Ignore, Pid, StartError
from beamish._atoms import SYSTEM
from beamish._gen import call as gen_call
from beamish.gen_statem import (
    EventTimeout,
    GenericTimeout,
    GenStateMachine,
    Init,
    KeepState,
    KeepStateAndData,
    NextEvent,
    NextState,
    Postpone,
    RepeatState,
    RepeatStateAndData,
    Reply,
    Result,
    StateTimeout,
    Stop,
    StopAndReply,
)
from beamish.terms import Term
from beamish.testing import ANY, assert_receive, refute_receive, wait_for_exit


class Recorder(GenStateMachine):
    """handle_event_function machine driven by casts of ("do", result_factory):
    reports every event to the test process, and answers calls with (state, data)."""

    def init(self, arg: Term) -> Init:
        self.owner: Pid = arg[0]
        return Init(arg[1], arg[2], arg[3] if len(arg) > 3 else ())

    def handle_event(self, event_type: Term, event: Term, state: Term, data: Term) -> Result:
        beamish.send(self.owner, ("event", event_type, event, state))
        match event_type, event:
            case ("call", from_), "get":
                return KeepStateAndData([Reply(from_, (state, data))])
            case _, ("do", make):
                result: Result = make(state, data)
                return result
        return KeepStateAndData()


async def start_recorder(state: Term = "s", data: Term = None, actions: Term = ()) -> Pid:
    return await Recorder.start_link((beamish.self(), state, data, actions))


def do(make: Any) -> tuple[str, Any]:
    return ("do", make)


async def events(n: int, timeout: float = 1.0) -> list[tuple[Term, Term, Term]]:
    got = []
    for _ in range(n):
        _, etype, content, state = await assert_receive(("event", ANY, ANY, ANY), timeout=timeout)
        got.append((etype, content, state))
    return got


# --- state_functions mode and the seed's traffic light shape ---------------------


class Light(GenStateMachine, callback_mode="state_functions"):
    def red(self, event_type: Term, event: Term, data: Term) -> Result:
        match event_type, event:
            case ("call", from_), "next":
                return NextState("green", data + 1, [Reply(from_, "green")])
            case ("call", from_), "get":
                return KeepStateAndData(Reply(from_, ("red", data)))
        return KeepStateAndData()

    def green(self, event_type: Term, event: Term, data: Term) -> Result:
        match event_type, event:
            case ("call", from_), "next":
                return NextState("red", data + 1, [Reply(from_, "red")])
            case "cast", "to_nowhere":
                return NextState("blue", data)
        return KeepStateAndData()


async def test_state_functions_dispatch_by_state_name() -> None:
    pid = await Light.start_link(("red", 0))
    assert await GenStateMachine.call(pid, "next") == "green"
    assert await GenStateMachine.call(pid, "next") == "red"
    assert await GenStateMachine.call(pid, "get") == ("red", 2)


async def test_default_init_accepts_a_bare_state() -> None:
    pid = await Light.start_link("red")
    assert await gen_call(pid, "get_state", label=SYSTEM) == ("red", None)


async def test_missing_state_function_stops_with_its_name(caplog: pytest.LogCaptureFixture) -> None:
    pid = await Light.start(("green", 0))
    GenStateMachine.cast(pid, "to_nowhere")  # the transition itself calls nothing in "blue"
    assert await gen_call(pid, "get_state", label=SYSTEM) == ("blue", 0)
    GenStateMachine.cast(pid, "anything")
    with caplog.at_level(logging.ERROR, logger="beamish"):
        reason = await wait_for_exit(pid)
    assert reason == ("undef_state_function", "blue")
    assert any("terminating" in r.getMessage() for r in caplog.records)


async def test_state_named_like_a_base_class_attribute_is_undefined() -> None:
    pid = await Light.start(("stop", 0))
    GenStateMachine.cast(pid, "x")
    assert await wait_for_exit(pid) == ("undef_state_function", "stop")


async def test_callback_mode_by_class_attribute_and_bad_mode() -> None:
    class ByAttr(GenStateMachine):
        callback_mode = "state_functions"

        def only(self, event_type: Term, event: Term, data: Term) -> Result:
            match event_type:
                case ("call", from_):
                    return KeepStateAndData(Reply(from_, "only"))
            return KeepStateAndData()

    pid = await ByAttr.start_link("only")
    assert await GenStateMachine.call(pid, "x") == "only"
    with pytest.raises(ValueError, match="callback_mode"):

        class Bad(GenStateMachine, callback_mode="nope"):  # type: ignore[arg-type]
            pass


async def test_handle_event_mode_with_any_term_as_state() -> None:
    pid = await start_recorder(state=("room", 1), data=[])
    GenStateMachine.cast(pid, do(lambda s, d: NextState(("room", s[1] + 1), [*d, s[1]])))
    assert await GenStateMachine.call(pid, "get") == (("room", 2), [1])
    _, etype, _, _ = await assert_receive(("event", "cast", ANY, ("room", 1)))
    assert etype == "cast"


async def test_event_types_for_call_cast_and_info() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(pid, "c")
    beamish.send(pid, "plain")
    await GenStateMachine.call(pid, "get")
    got = await events(3)
    assert got[0] == ("cast", "c", "s")
    assert got[1] == ("info", "plain", "s")
    (tag, from_), request, _ = got[2]
    assert (tag, request) == ("call", "get") and from_[0] == beamish.self()


async def test_default_handle_event_stops_on_unexpected_call() -> None:
    class Bare(GenStateMachine):
        pass

    beamish.process_flag("trap_exit", True)
    pid = await Bare.start_link(("s", None))
    with pytest.raises(Exit) as info:
        await GenStateMachine.call(pid, "hello")
    assert info.value.reason == ("bad_call", "hello")


# --- postpone ------------------------------------------------------------------


class Gate(GenStateMachine, callback_mode="state_functions"):
    """Postpones every cast while closed; "open"/"close"/"stay" change or keep the state."""

    def init(self, owner: Pid) -> Init:
        self.owner = owner
        return Init("closed", None)

    def closed(self, event_type: Term, event: Term, data: Term) -> Result:
        match event_type, event:
            case "info", "open":
                return NextState("opened", data)
            case "info", "stay":
                return KeepState(data)
            case "info", "repeat":
                return RepeatStateAndData()
            case "cast", _:
                return KeepStateAndData(Postpone())
        return KeepStateAndData()

    def opened(self, event_type: Term, event: Term, data: Term) -> Result:
        match event_type, event:
            case "info", "close":
                return NextState("closed", data)
            case "cast", _:
                beamish.send(self.owner, ("handled", event))
        return KeepStateAndData()


async def test_postponed_events_retry_in_order_after_a_state_change() -> None:
    pid = await Gate.start_link(beamish.self())
    for i in range(3):
        GenStateMachine.cast(pid, i)
    beamish.send(pid, "stay")  # same state: nothing is retried
    beamish.send(pid, "repeat")  # repeat_state is not a state change either
    await refute_receive(("handled", ANY), timeout=0.02)
    beamish.send(pid, "open")
    GenStateMachine.cast(pid, 3)
    for i in range(4):
        await assert_receive(("handled", i))
    await refute_receive(("handled", ANY), timeout=0.01)


async def test_postponed_again_after_returning_to_the_postponing_state() -> None:
    pid = await Gate.start_link(beamish.self())
    GenStateMachine.cast(pid, "a")
    beamish.send(pid, "close")  # closed -> closed via info in closed: ignored
    beamish.send(pid, "open")
    await assert_receive(("handled", "a"))
    beamish.send(pid, "close")
    GenStateMachine.cast(pid, "b")
    await refute_receive(("handled", "b"), timeout=0.02)
    beamish.send(pid, "open")
    await assert_receive(("handled", "b"))


# --- next_event ----------------------------------------------------------------


async def test_next_events_run_in_order_before_the_mailbox() -> None:
    pid = await start_recorder()
    inserted = [NextEvent("internal", 1), NextEvent("internal", 2), NextEvent("cast", 3)]
    # Both casts are in the mailbox before the first is handled.
    GenStateMachine.cast(pid, do(lambda s, d: KeepStateAndData(inserted)))
    GenStateMachine.cast(pid, "later")
    got = await events(5)
    assert [(t, c) for t, c, _ in got[1:]] == [
        ("internal", 1),
        ("internal", 2),
        ("cast", 3),
        ("cast", "later"),
    ]


async def test_next_events_come_before_retried_postponed_events() -> None:
    class M(GenStateMachine):
        def init(self, owner: Pid) -> Init:
            self.owner = owner
            return Init("wait", None)

        def handle_event(self, event_type: Term, event: Term, state: Term, data: Term) -> Result:
            beamish.send(self.owner, ("seen", event_type, event))
            match state, event_type, event:
                case "wait", "cast", "go":
                    return NextState("run", data, [NextEvent("internal", "first")])
                case "wait", _, _:
                    return KeepStateAndData(Postpone())
            return KeepStateAndData()

    pid = await M.start_link(beamish.self())
    GenStateMachine.cast(pid, "p1")
    GenStateMachine.cast(pid, "p2")
    GenStateMachine.cast(pid, "go")
    order = []
    for _ in range(6):
        _, _, event = await assert_receive(("seen", ANY, ANY))
        order.append(event)
    assert order == ["p1", "p2", "go", "first", "p1", "p2"]


def test_next_event_rejects_unknown_event_types() -> None:
    with pytest.raises(ValueError, match="invalid event type"):
        NextEvent("enter", None)
    with pytest.raises(ValueError, match="invalid event type"):
        NextEvent(("call", "not a from"), None)
    assert NextEvent(("timeout", "t"), 1).event_type == ("timeout", "t")


# --- event timeouts --------------------------------------------------------------


async def test_event_timeout_fires_when_nothing_happens() -> None:
    pid = await start_recorder(actions=[EventTimeout(0.01, "idle")])
    assert await events(1) == [("timeout", "idle", "s")]
    GenStateMachine.cast(pid, do(lambda s, d: KeepStateAndData(0.01)))  # a bare number
    got = await events(2)
    assert got[1] == ("timeout", 0.01, "s")


async def test_event_timeout_is_cancelled_by_any_event() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(pid, do(lambda s, d: KeepStateAndData(EventTimeout(0.05, "idle"))))
    beamish.send(pid, "anything")
    await events(2)
    await refute_receive(("event", "timeout", ANY, ANY), timeout=0.1)


async def test_event_timeout_is_cancelled_by_an_inserted_event() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(
        pid,
        do(lambda s, d: KeepStateAndData([EventTimeout(0, "idle"), NextEvent("internal", "x")])),
    )
    got = await events(2)
    assert got[1] == ("internal", "x", "s")
    await refute_receive(("event", "timeout", ANY, ANY), timeout=0.05)


async def test_zero_timeouts_come_after_queued_events_and_before_the_mailbox() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(
        pid,
        do(
            lambda s, d: KeepStateAndData(
                [StateTimeout(0, "st"), GenericTimeout("g", 0, "gt"), NextEvent("internal", "x")]
            )
        ),
    )
    GenStateMachine.cast(pid, "mail")
    got = [(t, c) for t, c, _ in await events(5)]
    assert got[1:] == [
        ("internal", "x"),
        ("state_timeout", "st"),
        (("timeout", "g"), "gt"),
        ("cast", "mail"),
    ]


async def test_event_timeout_zero_fires_when_nothing_is_queued() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(pid, do(lambda s, d: KeepStateAndData(EventTimeout(0, "now"))))
    got = await events(2)
    assert got[1] == ("timeout", "now", "s")
    del pid


async def test_infinite_timeouts_start_nothing() -> None:
    pid = await start_recorder(
        actions=[EventTimeout(None), StateTimeout(None), GenericTimeout("g", None)]
    )
    await refute_receive(("event", ANY, ANY, ANY), timeout=0.02)
    assert await GenStateMachine.call(pid, "get") == ("s", None)


# --- state timeouts --------------------------------------------------------------
# Casts sent back to back are all in the mailbox before the first is handled, so
# a timer set by the first cannot fire before the others are handled.


def arm(*actions: Term) -> tuple[str, Any]:
    return do(lambda s, d: KeepStateAndData(list(actions)))


async def test_state_timeout_survives_events_in_the_same_state() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(pid, arm(StateTimeout(0.02, "st")))
    GenStateMachine.cast(pid, "noise")
    beamish.send(pid, "more noise")
    got = await events(4)
    assert got[3] == ("state_timeout", "st", "s")


async def test_state_timeout_is_cancelled_by_a_state_change() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(pid, arm(StateTimeout(0.03, "st")))
    GenStateMachine.cast(pid, do(lambda s, d: NextState("t", d)))
    await events(2)
    await refute_receive(("event", "state_timeout", ANY, ANY), timeout=0.08)


async def test_state_timeout_set_with_a_state_change_applies_to_the_new_state() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(pid, do(lambda s, d: NextState("t", d, StateTimeout(0.01, "in t"))))
    got = await events(2)
    assert got[1] == ("state_timeout", "in t", "t")


async def test_state_timeout_restart_cancel_and_update() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(pid, arm(StateTimeout(0.03, "first")))
    # Setting it again restarts it; the last setting in one result wins.
    GenStateMachine.cast(pid, arm(StateTimeout(5, "x"), StateTimeout(0.03, "second")))
    got = await events(3)
    assert got[2] == ("state_timeout", "second", "s")
    GenStateMachine.cast(pid, arm(StateTimeout(0.03, "third")))
    GenStateMachine.cast(pid, arm(StateTimeout("cancel")))
    GenStateMachine.cast(pid, arm(StateTimeout(0.03, "fourth")))
    GenStateMachine.cast(pid, arm(StateTimeout(None)))
    await events(4)
    await refute_receive(("event", "state_timeout", ANY, ANY), timeout=0.08)
    GenStateMachine.cast(pid, arm(StateTimeout(0.03, "old")))
    GenStateMachine.cast(pid, arm(StateTimeout("update", "new")))
    got = await events(3)
    assert got[2] == ("state_timeout", "new", "s")
    # update without a running timer delivers at once, like a zero timeout
    GenStateMachine.cast(pid, arm(StateTimeout("update", "now")))
    got = await events(2)
    assert got[1] == ("state_timeout", "now", "s")


# --- generic timeouts -----------------------------------------------------------


async def test_generic_timeouts_survive_state_changes_and_run_side_by_side() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(pid, arm(GenericTimeout("a", 0.04, "A"), GenericTimeout("b", 0.02, "B")))
    GenStateMachine.cast(pid, do(lambda s, d: NextState("t", d)))
    got = await events(4)
    assert got[2:] == [(("timeout", "b"), "B", "t"), (("timeout", "a"), "A", "t")]


async def test_generic_timeout_cancel_and_update() -> None:
    pid = await start_recorder()
    GenStateMachine.cast(pid, arm(GenericTimeout("a", 0.03, "A"), GenericTimeout("b", 0.03, "B")))
    GenStateMachine.cast(
        pid, arm(GenericTimeout("a", "cancel"), GenericTimeout("b", "update", "B2"))
    )
    got = await events(3)
    assert got[2] == (("timeout", "b"), "B2", "s")
    await refute_receive(("event", ("timeout", "a"), ANY, ANY), timeout=0.06)


def test_timeouts_reject_bad_times() -> None:
    with pytest.raises(ValueError, match="invalid time"):
        StateTimeout(-1, None)
    with pytest.raises(ValueError, match="invalid time"):
        EventTimeout("soon", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        GenericTimeout([], 1.0)


async def test_a_cancelled_timer_that_already_fired_is_dropped() -> None:
    pid = await start_recorder()

    async def slow(s: Term, d: Term) -> Result:
        # The state timeout fires while this callback runs; its message waits in the mailbox.
        await asyncio.sleep(0.03)
        return NextState("t", d)

    GenStateMachine.cast(pid, arm(StateTimeout(0.001, "late")))
    GenStateMachine.cast(pid, do(slow))
    await events(2)
    await refute_receive(("event", "state_timeout", ANY, ANY), timeout=0.03)


# --- state enter calls ------------------------------------------------------------


class Entering(GenStateMachine, state_enter=True):
    def init(self, arg: Term) -> Init:
        self.owner: Pid = arg[0]
        self.on_enter: Any = arg[1]
        return Init("a", 0)

    def handle_event(self, event_type: Term, event: Term, state: Term, data: Term) -> Result:
        beamish.send(self.owner, ("event", event_type, event, state))
        match event_type, event:
            case "enter", _:
                result: Result = self.on_enter(event, state, data)
                return result
            case "cast", ("do", make):
                made: Result = make(state, data)
                return made
            case ("call", from_), "get":
                return KeepStateAndData(Reply(from_, (state, data)))
        return KeepStateAndData()


async def start_entering(on_enter: Any = None) -> Pid:
    on_enter = on_enter or (lambda prev, state, data: KeepState(data + 1))
    return await Entering.start_link((beamish.self(), on_enter))


async def test_enter_call_at_init_and_on_each_state_change() -> None:
    pid = await start_entering()
    assert await events(1) == [
        ("enter", "a", "a")
    ]  # at init the previous state is the state itself
    GenStateMachine.cast(pid, do(lambda s, d: NextState("b", d)))
    assert (await events(2))[1] == ("enter", "a", "b")
    GenStateMachine.cast(pid, do(lambda s, d: KeepState(d)))  # no state change: no enter call
    GenStateMachine.cast(pid, do(lambda s, d: NextState("b", d)))  # same state: no enter call
    await events(2)
    await refute_receive(("event", "enter", ANY, ANY), timeout=0.02)
    assert await GenStateMachine.call(pid, "get") == ("b", 2)


async def test_repeat_state_reruns_the_enter_call() -> None:
    pid = await start_entering()
    await events(1)
    GenStateMachine.cast(pid, do(lambda s, d: RepeatState(d + 10)))
    assert (await events(2))[1] == ("enter", "a", "a")
    GenStateMachine.cast(pid, do(lambda s, d: RepeatStateAndData()))
    assert (await events(2))[1] == ("enter", "a", "a")
    assert await GenStateMachine.call(pid, "get") == ("a", 13)


async def test_enter_call_may_set_timeouts_reply_and_keep_the_state() -> None:
    def on_enter(prev: Term, state: Term, data: Term) -> Result:
        return NextState(state, data, [StateTimeout(0.01, ("entered", prev))])

    pid = await start_entering(on_enter)
    await events(1)
    assert (await events(1))[0] == ("state_timeout", ("entered", "a"), "a")
    GenStateMachine.cast(pid, do(lambda s, d: NextState("b", d)))
    got = await events(3)
    assert got[1:] == [("enter", "a", "b"), ("state_timeout", ("entered", "a"), "b")]


@pytest.mark.parametrize(
    ("on_enter", "message"),
    [
        (lambda prev, state, data: NextState("elsewhere", data), "may not change the state"),
        (
            lambda prev, state, data: KeepStateAndData(Postpone()),
            "not allowed in a state enter call",
        ),
        (
            lambda prev, state, data: KeepStateAndData(NextEvent("internal", 1)),
            "not allowed in a state enter call",
        ),
    ],
)
async def test_enter_call_restrictions(on_enter: Any, message: str) -> None:
    beamish.process_flag("trap_exit", True)  # the initial enter call runs after start_link returns
    pid = await Entering.start_link((beamish.self(), on_enter))
    _, _, reason = await assert_receive(("EXIT", pid, ANY))
    assert isinstance(reason, TypeError) and message in str(reason)
    assert "state enter call" in str(reason)


async def test_init_actions_run_before_the_enter_calls_effects_and_next_events() -> None:
    pid = await start_recorder(actions=[NextEvent("internal", "boot"), Hibernate()])
    assert await events(1) == [("internal", "boot", "s")]
    del pid


# --- results, stop and failures ---------------------------------------------------


class Terminating(GenStateMachine, callback_mode="state_functions"):
    def init(self, owner: Pid) -> Init:
        self.owner = owner
        return Init("on", 1)

    def on(self, event_type: Term, event: Term, data: Term) -> Result:
        match event_type, event:
            case ("call", from_), "stop_and_reply":
                return StopAndReply("normal", [Reply(from_, "bye")], data + 1)
            case ("call", _), "stop":
                return Stop("shutdown")
            case ("call", _), "crash":
                raise ValueError("boom")
            case ("call", _), "bad":
                return "oops"  # type: ignore[return-value]
            case ("call", _), "bad_action":
                return KeepStateAndData(["not an action"])  # type: ignore[list-item]
            case ("call", _), "exit":
                raise Exit("custom")
            case ("call", _), "silent":
                return KeepStateAndData()
        return KeepStateAndData()

    def terminate(self, reason: Term, state: Term, data: Term) -> None:
        beamish.send(self.owner, ("terminated", reason, state, data))


async def test_stop_and_reply_replies_then_terminates() -> None:
    pid = await Terminating.start_link(beamish.self())
    ref = beamish.monitor(pid)
    assert await GenStateMachine.call(pid, "stop_and_reply") == "bye"
    await assert_receive(("terminated", "normal", "on", 2))
    await assert_receive(("DOWN", ref, "process", pid, "normal"))


async def test_stop_from_a_call_exits_the_caller_with_the_reason() -> None:
    pid = await Terminating.start(beamish.self())
    with pytest.raises(Exit) as info:
        await GenStateMachine.call(pid, "stop")
    assert info.value.reason == "shutdown"
    await assert_receive(("terminated", "shutdown", "on", 1))


async def test_crash_gives_the_caller_the_reason_and_runs_terminate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    beamish.process_flag("trap_exit", True)
    pid = await Terminating.start_link(beamish.self())
    with caplog.at_level(logging.ERROR, logger="beamish"), pytest.raises(Exit) as info:
        await GenStateMachine.call(pid, "crash")
    assert isinstance(info.value.reason, ValueError)
    await assert_receive(("terminated", ValueError, "on", 1))
    await assert_receive(("EXIT", pid, ValueError))
    assert any(
        "GenStateMachine" in r.getMessage() and "terminating" in r.getMessage()
        for r in caplog.records
    )


async def test_raised_exit_stops_with_its_reason() -> None:
    pid = await Terminating.start(beamish.self())
    with pytest.raises(Exit) as info:
        await GenStateMachine.call(pid, "exit")
    assert info.value.reason == "custom"
    await assert_receive(("terminated", "custom", "on", 1))


@pytest.mark.parametrize(
    ("request_", "shown"), [("bad", "'oops'"), ("bad_action", "'not an action'")]
)
async def test_invalid_result_names_the_callback_and_the_value(request_: str, shown: str) -> None:
    pid = await Terminating.start(beamish.self())
    with pytest.raises(Exit) as info:
        await GenStateMachine.call(pid, request_)
    reason = info.value.reason
    assert (
        isinstance(reason, TypeError) and "Terminating.on" in str(reason) and shown in str(reason)
    )
    await assert_receive(("terminated", TypeError, "on", 1))


async def test_invalid_result_crashes_only_that_process() -> None:
    other = await Light.start_link(("red", 0))
    pid = await Terminating.start(beamish.self())
    with pytest.raises(Exit):
        await GenStateMachine.call(pid, "bad")
    assert await GenStateMachine.call(other, "get") == ("red", 0)


async def test_call_timeout_and_noproc() -> None:
    pid = await Terminating.start_link(beamish.self())
    with pytest.raises(Exit) as info:
        await GenStateMachine.call(pid, "silent", timeout=0.01)
    assert info.value.reason == "timeout"
    with pytest.raises(Exit) as info:
        await GenStateMachine.call("nobody_here", "get")
    assert info.value.reason == "noproc"
    await GenStateMachine.stop(pid)
    await assert_receive(("terminated", "normal", "on", 1))
    with pytest.raises(Exit) as info:
        await GenStateMachine.call(pid, "get")
    assert info.value.reason == "noproc"


async def test_deferred_reply_from_another_process() -> None:
    class Deferring(GenStateMachine):
        def handle_event(self, event_type: Term, event: Term, state: Term, data: Term) -> Result:
            match event_type:
                case ("call", from_):
                    beamish.spawn(GenStateMachine.reply, from_, ("later", event))
            return KeepStateAndData()

    pid = await Deferring.start_link(("s", None))
    assert await GenStateMachine.call(pid, "q") == ("later", "q")


async def test_async_callbacks() -> None:
    inner = await Light.start_link(("red", 0))

    class Async(GenStateMachine, state_enter=True):
        async def init(self, arg: Term) -> Init:
            await asyncio.sleep(0)
            return Init("s", [])

        async def handle_event(
            self, event_type: Term, event: Term, state: Term, data: Term
        ) -> Result:
            match event_type:
                case "enter":
                    await asyncio.sleep(0)
                    return KeepState([*data, "entered"])
                case ("call", from_):
                    light = await GenStateMachine.call(inner, "get")
                    return KeepState(
                        data, [Reply(from_, (light, data)), NextEvent("internal", "x")]
                    )
                case "internal":
                    return KeepState([*data, event])
            return KeepStateAndData()

    pid = await Async.start_link()
    assert await GenStateMachine.call(pid, "go") == (("red", 0), ["entered"])
    assert await gen_call(pid, "get_state", label=SYSTEM) == ("s", ["entered", "x"])


async def test_init_variants() -> None:
    class Ignoring(GenStateMachine):
        def init(self, arg: Term) -> Ignore:
            return Ignore()

    class Stopping(GenStateMachine):
        def init(self, arg: Term) -> Stop:
            return Stop("no_way")

    class Bad(GenStateMachine):
        def init(self, arg: Term) -> Any:
            return ("ok", "s", None)

    with pytest.raises(StartError) as info:
        await Ignoring.start_link()
    assert info.value.reason == "ignore"
    with pytest.raises(StartError) as info:
        await Stopping.start()
    assert info.value.reason == "no_way"
    with pytest.raises(StartError) as info:
        await Bad.start()
    assert isinstance(info.value.reason, TypeError) and "Bad.init" in str(info.value.reason)


async def test_names_and_already_started() -> None:
    pid = await Light.start_link(("red", 0), name="light")
    with pytest.raises(StartError) as info:
        await Light.start_link(("red", 0), name="light")
    assert info.value.reason == ("already_started", pid)
    assert await GenStateMachine.call("light", "next") == "green"
    assert await GenStateMachine.call(("light", beamish.self().node), "next") == "red"
    GenStateMachine.cast("nobody", "x")  # never fails


async def test_via_names() -> None:
    from beamish.registry import Registry

    await Registry.start_link(keys="unique", name="machines")
    name = Registry.via("machines", "light")
    pid = await Light.start_link(("red", 0), name=name)
    assert await GenStateMachine.call(name, "get") == ("red", 0)
    assert Registry.lookup("machines", "light") == [(pid, None)]


async def test_child_spec_starts_a_linked_machine() -> None:
    class Transient(Light, restart="transient", shutdown=1.0):
        pass

    spec = Transient.child_spec(("red", 5))
    assert (spec.id, spec.restart, spec.shutdown) == (Transient, "transient", 1.0)
    fn, args = spec.start
    pid = await fn(*args)
    assert isinstance(pid, Pid)
    assert await GenStateMachine.call(pid, "get") == ("red", 5)


async def test_parent_shutdown_runs_terminate_when_trapping() -> None:
    class Trapper(Terminating):
        def init(self, owner: Pid) -> Init:
            beamish.process_flag("trap_exit", True)
            return super().init(owner)

    me = beamish.self()

    async def parent() -> None:
        await Trapper.start_link(me)
        beamish.send(me, "started")
        await beamish.receive()

    sup = beamish.spawn(parent)
    await assert_receive("started")
    beamish.exit(sup, "shutdown")
    await assert_receive(("terminated", "shutdown", "on", 1))


async def test_system_messages_get_and_replace_state() -> None:
    pid = await Light.start_link(("red", 0))
    assert await gen_call(pid, "get_state", label=SYSTEM) == ("red", 0)
    await gen_call(pid, ("replace_state", lambda sd: ("green", 7)), label=SYSTEM)
    assert await GenStateMachine.call(pid, "next") == "red"
    assert await GenStateMachine.call(pid, "get") == ("red", 8)


async def test_terminate_crash_replaces_the_reason() -> None:
    class BadTerminate(GenStateMachine):
        def terminate(self, reason: Term, state: Term, data: Term) -> None:
            raise RuntimeError("in terminate")

    pid = await BadTerminate.start(("s", None))
    with pytest.raises(Exit) as info:
        await GenStateMachine.stop(pid)
    assert isinstance(info.value.reason, RuntimeError)


async def test_stop_in_an_enter_call_terminates_in_the_new_state() -> None:
    class StopOnEnter(Terminating, state_enter=True):
        def on(self, event_type: Term, event: Term, data: Term) -> Result:
            match event_type, event:
                case "enter", _:
                    return KeepStateAndData()
                case "cast", "go":
                    return NextState("off", data)
            return KeepStateAndData()

        def off(self, event_type: Term, event: Term, data: Term) -> Result:
            return Stop("normal", data + 1)

    pid = await StopOnEnter.start_link(beamish.self())
    GenStateMachine.cast(pid, "go")
    await assert_receive(("terminated", "normal", "off", 2))


async def test_stop_and_reply_with_something_else_than_a_reply_is_an_error() -> None:
    class BadReplies(GenStateMachine):
        def handle_event(self, event_type: Term, event: Term, state: Term, data: Term) -> Result:
            return StopAndReply("normal", ["not a reply"])  # type: ignore[list-item]

    pid = await BadReplies.start(("s", None))
    ref = beamish.monitor(pid)
    GenStateMachine.cast(pid, "x")
    _, _, _, _, reason = await assert_receive(("DOWN", ref, "process", pid, ANY))
    assert isinstance(reason, TypeError) and "'not a reply'" in str(reason)


class LiteralLight(GenStateMachine, callback_mode="state_functions"):
    """The seed's TrafficLight translated too literally: `:call` is matched
    as a plain event type, but a call's type is ("call", from_)."""

    def init(self, _: Term) -> Init:
        return Init("red", None)

    def red(self, event_type: Term, event: Term, data: Term) -> Any:
        match (event_type, event):
            case ("call", "next"):
                return NextState("yellow", data)


async def test_a_none_result_from_an_unmatched_call_says_how_to_match_a_call() -> None:
    pid = await LiteralLight.start(None)
    with pytest.raises(Exit) as info:
        await GenStateMachine.call(pid, "next")
    reason = info.value.reason
    assert isinstance(reason, TypeError)
    assert "LiteralLight.red returned an invalid result None" in str(reason)
    assert "handling a call" in str(reason) and "with content 'next'" in str(reason)
    assert 'match it as case ("call", from_)' in str(reason)


class MixedUp(GenStateMachine, callback_mode="state_functions"):
    """Uses GenServer's Reply and Stop, imported from beamish by mistake."""

    def init(self, _: Term) -> Init:
        return Init("on", None)

    def on(self, event_type: Term, event: Term, data: Term) -> Any:
        match event_type, event:
            case ("call", _), "action":
                return KeepStateAndData([beamish.Reply("value", data)])  # type: ignore[list-item]  # the mistake under test
            case ("call", _), "result":
                return beamish.Stop("normal", data)
        return KeepStateAndData()


@pytest.mark.parametrize("request_", ["action", "result"])
async def test_genservers_reply_or_stop_in_a_machine_names_the_right_import(request_: str) -> None:
    pid = await MixedUp.start(None)
    with pytest.raises(Exit) as info:
        await GenStateMachine.call(pid, request_)
    assert "beamish.gen_statem.Reply(from_, value)" in str(info.value.reason)


async def test_a_machines_reply_in_a_genserver_names_the_right_import() -> None:
    class Confused(beamish.GenServer):
        def handle_call(self, request: Term, from_: beamish.From, state: Term) -> Any:
            return Reply(from_, "value")  # gen_statem's

    pid = await Confused.start(None)
    with pytest.raises(Exit) as info:
        await beamish.GenServer.call(pid, "x")
    assert "a GenServer returns beamish.Reply(value, state)" in str(info.value.reason)
