"""GenEvent: handlers added, called, swapped, removed (by delete, crash,
REMOVE, or the death of a supervising adder), and the manager carrying on."""

from __future__ import annotations

import logging

import pytest

import beamish
from beamish import Ok, Reply, StartError
from beamish.gen_event import REMOVE, EventHandler, EventResult, GenEvent
from beamish.terms import Term
from beamish.testing import ANY, assert_receive, refute_receive, wait_for_exit


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="beamish")


class Seen(EventHandler):
    def init(self, arg: Term) -> list[Term]:
        if arg == "refuse":
            raise ValueError("refused")
        return [] if arg is None else list(arg) if isinstance(arg, list) else [("swapped_in", arg)]

    def handle_event(self, event: Term, seen: list[Term]) -> EventResult:
        if event == "boom":
            raise RuntimeError("handler bug")
        if event == "leave":
            return REMOVE
        return Ok([*seen, event])

    def handle_call(self, request: Term, seen: list[Term]) -> Reply:
        return Reply(seen, seen)

    def handle_info(self, msg: Term, seen: list[Term]) -> EventResult:
        return Ok([*seen, ("info", msg)])

    def terminate(self, reason: Term, seen: list[Term]) -> Term:
        return ("bye", reason, len(seen))


class Other(Seen):
    pass


def IS_SEEN(h: object) -> bool:  # a pattern: a bare class would match its instances
    return h is Seen


async def test_every_handler_gets_every_event_in_order() -> None:
    mgr = await GenEvent.start_link()
    await GenEvent.add_handler(mgr, Seen)
    await GenEvent.add_handler(mgr, (Seen, 2))
    for i in range(3):
        GenEvent.notify(mgr, i)
    await GenEvent.sync_notify(mgr, "last")
    beamish.send(mgr, "an info")
    assert await GenEvent.call(mgr, Seen, "get") == [0, 1, 2, "last", ("info", "an info")]
    assert await GenEvent.call(mgr, (Seen, 2), "get") == [0, 1, 2, "last", ("info", "an info")]
    assert await GenEvent.which_handlers(mgr) == [Seen, (Seen, 2)]


async def test_a_crashing_handler_is_removed_and_the_rest_carry_on() -> None:
    mgr = await GenEvent.start_link()
    await GenEvent.add_sup_handler(mgr, Seen)
    await GenEvent.add_handler(mgr, Other)
    await GenEvent.sync_notify(mgr, "boom")
    _, _, reason = await assert_receive(("gen_event_EXIT", IS_SEEN, ANY))
    assert reason[0] == "EXIT" and isinstance(reason[1], RuntimeError)
    assert await GenEvent.which_handlers(mgr) == []  # Other crashed on "boom" too
    await GenEvent.add_handler(mgr, Other)
    await GenEvent.sync_notify(mgr, "fine")
    assert await GenEvent.call(mgr, Other, "get") == ["fine"]
    assert beamish.is_alive(mgr)


async def test_delete_returns_terminate_and_remove_handler_result() -> None:
    mgr = await GenEvent.start_link()
    await GenEvent.add_sup_handler(mgr, Seen)
    await GenEvent.sync_notify(mgr, 1)
    assert await GenEvent.delete_handler(mgr, Seen, "why") == ("bye", "why", 1)
    await assert_receive(("gen_event_EXIT", IS_SEEN, "normal"))
    with pytest.raises(LookupError):
        await GenEvent.delete_handler(mgr, Seen)
    await GenEvent.add_handler(mgr, Seen)
    await GenEvent.sync_notify(mgr, "leave")
    assert await GenEvent.which_handlers(mgr) == []
    with pytest.raises(LookupError, match="bad_module"):
        await GenEvent.call(mgr, Seen, "get")


async def test_init_failure_and_duplicates_are_refused() -> None:
    mgr = await GenEvent.start_link()
    with pytest.raises(StartError) as info:
        await GenEvent.add_handler(mgr, Seen, "refuse")
    assert isinstance(info.value.reason[1], ValueError)
    await GenEvent.add_handler(mgr, Seen)
    with pytest.raises(StartError):
        await GenEvent.add_handler(mgr, Seen)


async def test_swap_hands_the_old_state_to_the_new_handler() -> None:
    mgr = await GenEvent.start_link()
    await GenEvent.add_sup_handler(mgr, Seen)
    await GenEvent.sync_notify(mgr, "a")
    await GenEvent.swap_handler(mgr, (Seen, "swap"), (Other, "new"))
    _, _, reason = await assert_receive(("gen_event_EXIT", IS_SEEN, ANY))
    assert reason[0] == "swapped" and reason[1] is Other
    assert await GenEvent.call(mgr, Other, "get") == [("swapped_in", ("new", ("bye", "swap", 1)))]


async def test_sup_handler_goes_when_its_adder_dies() -> None:
    mgr = await GenEvent.start_link()
    me = beamish.self()

    async def adder() -> None:
        await GenEvent.add_sup_handler(mgr, Seen)
        beamish.send(me, "added")
        await beamish.receive()

    pid = beamish.spawn(adder)
    await assert_receive("added")
    beamish.exit(pid, "kill")
    await wait_for_exit(pid)
    assert await GenEvent.which_handlers(mgr) == []


async def test_stop_tells_sup_adders_and_dead_manager_is_noproc() -> None:
    mgr = await GenEvent.start()
    await GenEvent.add_sup_handler(mgr, Seen)
    await GenEvent.stop(mgr)
    await assert_receive(("gen_event_EXIT", IS_SEEN, "shutdown"))
    with pytest.raises(beamish.Exit) as info:
        await GenEvent.sync_notify(mgr, "x")
    assert info.value.reason == "noproc"
    await refute_receive(ANY, timeout=0.01)


class Forgetful(EventHandler):
    """Forgets to return a result for one event, and returns a bare value from a call."""

    def init(self, arg: Term) -> Ok:
        return Ok([])  # init may give Ok(state) too

    def handle_event(self, event: Term, seen: list[Term]) -> EventResult:
        if event != "unknown":
            return Ok([*seen, event])
        return None  # type: ignore[return-value]  # the bug under test

    def handle_call(self, request: Term, seen: list[Term]) -> Reply:
        if request == "bare":
            return seen  # type: ignore[return-value]  # the bug under test
        return Reply(seen, seen)


async def test_a_handler_returning_an_invalid_result_is_removed_with_a_clear_error() -> None:
    # OTP removes a handler whose callback returns a bad value; it used to
    # become the handler's state (None) silently.
    mgr = await GenEvent.start_link()
    await GenEvent.add_sup_handler(mgr, Forgetful)
    await GenEvent.sync_notify(mgr, "known")
    assert await GenEvent.call(mgr, Forgetful, "get") == ["known"]
    await GenEvent.sync_notify(mgr, "unknown")
    _, _, (tag, exc) = await assert_receive(("gen_event_EXIT", lambda h: h is Forgetful, ANY))
    assert tag == "EXIT" and isinstance(exc, TypeError)
    assert str(exc) == "Forgetful.handle_event returned an invalid result None; expected Ok(new_state) or REMOVE"
    assert await GenEvent.which_handlers(mgr) == []
    await GenEvent.add_handler(mgr, Forgetful)
    with pytest.raises(StartError) as info:
        await GenEvent.call(mgr, Forgetful, "bare")
    assert "Forgetful.handle_call returned an invalid result []; expected Reply(reply, new_state)" in str(info.value.reason[1])
    assert await GenEvent.which_handlers(mgr) == []
