"""CircuitBreaker: every transition under a fake clock, the rules that open
it, the client API, events, concurrency, crashes and supervision."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import pytest

import beamish
from beamish import (
    CircuitBreaker,
    CircuitOpen,
    Exit,
    GenEvent,
    Ok,
    Registry,
    StartError,
    Supervisor,
)
from beamish.breaker import Metrics
from beamish.gen_event import EventHandler
from beamish.terms import Term
from beamish.testing import assert_receive, eventually, refute_receive, wait_for_exit


class Clock:
    """A clock the test moves by hand: slow calls, time windows and waits
    without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Boom(Exception):
    pass


# Only the rule under test is on; the others are off or out of reach.
QUIET: dict[str, Term] = {
    "consecutive_failures": None,
    "failure_rate_threshold": None,
    "slow_call_rate_threshold": None,
    "wait_duration_in_open_state": 30.0,
}


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise Boom("backend down")


def slow(clock: Clock, seconds: float, fail: bool = False) -> Callable[[], Awaitable[str]]:
    async def fn() -> str:
        clock.advance(seconds)
        if fail:
            raise Boom("slow and failing")
        return "slow"

    return fn


async def outcome(name: Term, fn: Callable[[], Awaitable[str]]) -> str:
    """What one call gave: its result, "boom", or "open"."""
    try:
        return await CircuitBreaker.call(name, fn)
    except Boom:
        return "boom"
    except CircuitOpen:
        return "open"


async def fail_times(name: Term, n: int) -> None:
    for _ in range(n):
        assert await outcome(name, boom) == "boom"


async def start(clock: Clock, **options: Term) -> None:
    await CircuitBreaker.start_link("svc", clock=clock, **{**QUIET, **options})


# --- closed -> open ------------------------------------------------------------


async def test_consecutive_failures_open_it_and_a_success_starts_the_count_again() -> None:
    clock = Clock()
    await start(clock, consecutive_failures=3)
    await fail_times("svc", 2)
    assert await outcome("svc", ok) == "ok"
    await fail_times("svc", 2)
    assert await CircuitBreaker.state("svc") == "closed"
    await fail_times("svc", 1)
    assert await CircuitBreaker.state("svc") == "open"
    called = []

    async def spy() -> str:
        called.append(1)
        return "ok"

    with pytest.raises(CircuitOpen) as info:
        await CircuitBreaker.call("svc", spy)
    assert called == []  # an open breaker does not call fn
    assert info.value.name == "svc" and info.value.retry_after == 30.0
    clock.advance(12.5)
    with pytest.raises(CircuitOpen) as info:
        await CircuitBreaker.call("svc", spy)
    assert info.value.retry_after == 17.5


async def test_the_failure_rate_opens_it_only_from_the_minimum_number_of_calls() -> None:
    await start(Clock(), failure_rate_threshold=50.0, minimum_number_of_calls=4, sliding_window_size=10)
    await fail_times("svc", 2)
    assert await outcome("svc", ok) == "ok"  # 2 of 3 failed (67%), but only 3 calls
    assert await CircuitBreaker.state("svc") == "closed"
    assert await outcome("svc", ok) == "ok"  # 2 of 4: 50% passes the threshold
    assert await CircuitBreaker.state("svc") == "open"


async def test_the_count_window_forgets_the_oldest_call() -> None:
    await start(Clock(), failure_rate_threshold=50.0, minimum_number_of_calls=4, sliding_window_size=4)
    await fail_times("svc", 1)
    for _ in range(3):
        assert await outcome("svc", ok) == "ok"  # F S S S: 25%
    assert await outcome("svc", ok) == "ok"  # the failure left the window: S S S S
    await fail_times("svc", 1)  # S S S F: 25%
    assert (await CircuitBreaker.metrics("svc")).failure_rate == 25.0
    await fail_times("svc", 1)  # S S F F: 50%
    assert await CircuitBreaker.state("svc") == "open"


async def test_the_slow_call_rate_opens_it() -> None:
    clock = Clock()
    await start(clock, slow_call_rate_threshold=50.0, slow_call_duration=2.0, minimum_number_of_calls=4)
    assert await outcome("svc", slow(clock, 2.0)) == "slow"
    assert await outcome("svc", slow(clock, 1.9)) == "slow"  # under the duration: not slow
    assert await outcome("svc", ok) == "ok"
    metrics = await CircuitBreaker.metrics("svc")
    assert (metrics.slow_calls, metrics.failures, await CircuitBreaker.state("svc")) == (1, 0, "closed")
    assert await outcome("svc", slow(clock, 5.0)) == "slow"  # 2 of 4 slow
    assert await CircuitBreaker.state("svc") == "open"


async def test_the_time_window_holds_the_calls_of_the_last_seconds() -> None:
    clock = Clock()
    await start(
        clock, failure_rate_threshold=50.0, minimum_number_of_calls=3,
        sliding_window_type="time", sliding_window_size=10,
    )
    await fail_times("svc", 2)
    clock.advance(10.0)  # both failures are now out of the window
    assert await outcome("svc", ok) == "ok"
    assert await outcome("svc", ok) == "ok"
    await fail_times("svc", 1)  # 1 of 3
    assert (await CircuitBreaker.metrics("svc")).buffered_calls == 3
    assert await CircuitBreaker.state("svc") == "closed"
    clock.advance(5.0)
    await fail_times("svc", 1)  # 2 of 4 within 10 s
    assert await CircuitBreaker.state("svc") == "open"


async def test_the_time_window_empties_with_time_alone() -> None:
    clock = Clock()
    await start(clock, sliding_window_type="time", sliding_window_size=5, minimum_number_of_calls=100)
    await fail_times("svc", 3)
    clock.advance(2.0)
    assert (await CircuitBreaker.metrics("svc")).buffered_calls == 3
    clock.advance(3.0)
    metrics = await CircuitBreaker.metrics("svc")
    assert (metrics.buffered_calls, metrics.failure_rate, metrics.failures) == (0, 0.0, 3)


# --- open -> half_open -> closed / open --------------------------------------------


async def test_open_goes_half_open_after_the_wait_on_the_next_call() -> None:
    clock = Clock()
    await start(clock, consecutive_failures=1, permitted_calls_in_half_open=2)
    await fail_times("svc", 1)
    clock.advance(29.9)
    assert await outcome("svc", ok) == "open"
    clock.advance(0.1)
    assert await outcome("svc", ok) == "ok"  # the first trial
    assert await CircuitBreaker.state("svc") == "half_open"
    assert await outcome("svc", ok) == "ok"  # the second: closed
    assert await CircuitBreaker.state("svc") == "closed"


async def test_state_moves_an_open_breaker_whose_wait_is_over_to_half_open() -> None:
    clock = Clock()
    await start(clock, consecutive_failures=1)
    await fail_times("svc", 1)
    clock.advance(30.0)
    assert await CircuitBreaker.state("svc") == "half_open"


async def test_the_state_timeout_moves_it_to_half_open_with_nobody_calling() -> None:
    await GenEvent.start_link(name="events")
    await GenEvent.add_handler("events", Forward, beamish.self())
    await CircuitBreaker.start_link("svc", events="events", consecutive_failures=1, wait_duration_in_open_state=0.01)
    await fail_times("svc", 1)
    await assert_receive(("breaker_state", "svc", "closed", "open"))
    await assert_receive(("breaker_state", "svc", "open", "half_open"), timeout=1.0)


async def test_half_open_admits_a_bounded_number_of_trials() -> None:
    clock = Clock()
    await start(clock, consecutive_failures=1, permitted_calls_in_half_open=2)
    await fail_times("svc", 1)
    clock.advance(30.0)
    gate = asyncio.Event()

    async def held() -> str:
        await gate.wait()
        return "ok"

    me = beamish.self()
    for _ in range(2):
        beamish.spawn(lambda: report(me, outcome("svc", held)))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen) as info:
        await CircuitBreaker.call("svc", ok)
    assert info.value.retry_after == 0.0
    gate.set()
    await assert_receive("ok")
    await assert_receive("ok")
    assert await CircuitBreaker.state("svc") == "closed"


async def report(to: Term, result: Awaitable[str]) -> None:
    beamish.send(to, await result)


async def test_a_failed_trial_reopens_it_with_a_growing_capped_wait() -> None:
    clock = Clock()
    await start(
        clock, consecutive_failures=1, wait_duration_in_open_state=10.0, wait_duration_multiplier=2.0,
        max_wait_duration_in_open_state=30.0, permitted_calls_in_half_open=1,
    )
    await fail_times("svc", 1)
    waits = []
    for _ in range(4):
        with pytest.raises(CircuitOpen) as info:
            await CircuitBreaker.call("svc", ok)
        waits.append(info.value.retry_after)
        clock.advance(info.value.retry_after)
        await fail_times("svc", 1)  # the trial fails
        assert await CircuitBreaker.state("svc") == "open"
    assert waits == [10.0, 20.0, 30.0, 30.0]
    clock.advance(30.0)
    assert await outcome("svc", ok) == "ok"  # closes: the backoff starts over
    assert await CircuitBreaker.state("svc") == "closed"
    await fail_times("svc", 1)
    with pytest.raises(CircuitOpen) as info:
        await CircuitBreaker.call("svc", ok)
    assert info.value.retry_after == 10.0
    assert (await CircuitBreaker.metrics("svc")).times_opened == 6


async def test_a_slow_trial_reopens_it() -> None:
    clock = Clock()
    await start(clock, consecutive_failures=1, slow_call_duration=1.0, permitted_calls_in_half_open=2)
    await fail_times("svc", 1)
    clock.advance(30.0)
    assert await outcome("svc", slow(clock, 1.5)) == "slow"
    assert await CircuitBreaker.state("svc") == "open"


# --- forced_open, disabled, reset ------------------------------------------------------


async def test_force_open_rejects_until_reset() -> None:
    clock = Clock()
    await start(clock, consecutive_failures=1)
    await CircuitBreaker.force_open("svc")
    with pytest.raises(CircuitOpen) as info:
        await CircuitBreaker.call("svc", ok)
    assert info.value.retry_after == math.inf
    clock.advance(1e6)
    assert await CircuitBreaker.state("svc") == "forced_open"
    await CircuitBreaker.reset("svc")
    assert await outcome("svc", ok) == "ok"
    assert (await CircuitBreaker.metrics("svc")).rejections == 1


async def test_disabled_lets_everything_through_and_judges_nothing() -> None:
    await start(Clock(), consecutive_failures=1)
    await CircuitBreaker.disable("svc")
    await fail_times("svc", 5)
    assert await CircuitBreaker.state("svc") == "disabled"
    metrics = await CircuitBreaker.metrics("svc")
    assert (metrics.failures, metrics.buffered_calls) == (5, 0)
    await CircuitBreaker.reset("svc")
    await fail_times("svc", 1)
    assert await CircuitBreaker.state("svc") == "open"


async def test_reset_closes_an_open_breaker_and_empties_the_window() -> None:
    await start(Clock(), consecutive_failures=3)
    await fail_times("svc", 3)
    await CircuitBreaker.reset("svc")
    assert await CircuitBreaker.state("svc") == "closed"
    await fail_times("svc", 2)  # the count started over
    assert await CircuitBreaker.state("svc") == "closed"


# --- what counts ---------------------------------------------------------------------


async def test_ignored_exceptions_count_neither_way_and_unrecorded_ones_are_successes() -> None:
    await start(
        Clock(), consecutive_failures=2, record_exceptions=(Boom,), ignore_exceptions=(KeyError,),
    )

    async def missing() -> str:
        raise KeyError("not found")

    async def bad_request() -> str:
        raise ValueError("the caller's fault")

    await fail_times("svc", 1)
    for _ in range(3):
        with pytest.raises(KeyError):
            await CircuitBreaker.call("svc", missing)
    assert (await CircuitBreaker.metrics("svc")).calls == 1  # ignored: not calls
    await fail_times("svc", 1)  # still consecutive: the KeyErrors did not break the run
    assert await CircuitBreaker.state("svc") == "open"
    await CircuitBreaker.reset("svc")
    await fail_times("svc", 1)
    with pytest.raises(ValueError, match="fault"):
        await CircuitBreaker.call("svc", bad_request)  # a success: the run is broken
    await fail_times("svc", 1)
    assert await CircuitBreaker.state("svc") == "closed"


async def test_an_ignored_exception_gives_its_half_open_permit_back() -> None:
    clock = Clock()
    await start(clock, consecutive_failures=1, ignore_exceptions=(KeyError,), permitted_calls_in_half_open=1)
    await fail_times("svc", 1)
    clock.advance(30.0)

    async def missing() -> str:
        raise KeyError("x")

    with pytest.raises(KeyError):
        await CircuitBreaker.call("svc", missing)
    assert await outcome("svc", ok) == "ok"
    assert await CircuitBreaker.state("svc") == "closed"


async def test_the_call_timeout_cancels_the_call_and_counts_as_a_failure() -> None:
    await start(Clock(), consecutive_failures=2, call_timeout=0.005)
    cancelled = []

    async def hangs() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(1)
            raise
        return "never"

    for _ in range(2):
        with pytest.raises(TimeoutError):
            await CircuitBreaker.call("svc", hangs)
    assert cancelled == [1, 1]
    assert await CircuitBreaker.state("svc") == "open"
    assert (await CircuitBreaker.metrics("svc")).failures == 2


async def test_a_plain_function_is_called_too() -> None:
    await start(Clock(), consecutive_failures=1)
    assert await CircuitBreaker.call("svc", lambda: 41 + 1) == 42

    def broken() -> int:
        raise Boom("sync")

    with pytest.raises(Boom):
        await CircuitBreaker.call("svc", broken)
    assert await CircuitBreaker.state("svc") == "open"


async def test_an_outcome_from_before_a_transition_is_not_counted_after_it() -> None:
    clock = Clock()
    await start(clock, consecutive_failures=1, permitted_calls_in_half_open=1)
    gate = asyncio.Event()

    async def late_failure() -> str:
        await gate.wait()
        raise Boom("late")

    me = beamish.self()
    beamish.spawn(lambda: report(me, outcome("svc", late_failure)))  # admitted while closed
    await asyncio.sleep(0)
    await fail_times("svc", 1)
    clock.advance(30.0)
    assert await CircuitBreaker.state("svc") == "half_open"
    gate.set()
    await assert_receive("boom")
    assert await CircuitBreaker.state("svc") == "half_open"  # the late failure was no trial
    assert await outcome("svc", ok) == "ok"
    assert await CircuitBreaker.state("svc") == "closed"


# --- events, metrics, names -----------------------------------------------------------


class Forward(EventHandler):
    def handle_event(self, event: Term, to: Term) -> Ok:
        beamish.send(to, event)
        return Ok(to)


async def test_every_state_change_is_published_as_an_event() -> None:
    clock = Clock()
    await GenEvent.start_link(name="breaker_events")
    await GenEvent.add_handler("breaker_events", Forward, beamish.self())
    await CircuitBreaker.start_link(
        "svc", clock=clock, events="breaker_events", consecutive_failures=1, permitted_calls_in_half_open=1,
        wait_duration_in_open_state=30.0,
    )
    await fail_times("svc", 1)
    clock.advance(30.0)
    await outcome("svc", ok)
    await CircuitBreaker.force_open("svc")
    await CircuitBreaker.disable("svc")
    await CircuitBreaker.reset("svc")
    await CircuitBreaker.reset("svc")  # no change, no event
    for old, new in [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed"), ("closed", "forced_open"),
        ("forced_open", "disabled"), ("disabled", "closed"),
    ]:
        await assert_receive(("breaker_state", "svc", old, new))
    await refute_receive(("breaker_state", "svc", "closed", "closed"), timeout=0.01)


async def test_metrics_count_calls_failures_slow_calls_and_rejections() -> None:
    clock = Clock()
    await start(clock, consecutive_failures=2, slow_call_duration=1.0)
    await outcome("svc", ok)
    await outcome("svc", slow(clock, 3.0, fail=True))
    await outcome("svc", boom)
    await outcome("svc", ok)
    assert await CircuitBreaker.metrics("svc") == Metrics(
        state="open", calls=3, successes=1, failures=2, slow_calls=1, rejections=1, times_opened=1,
        buffered_calls=3, failure_rate=200 / 3, slow_call_rate=100 / 3,
    )


async def test_one_breaker_per_name_and_noproc_for_an_unknown_one() -> None:
    pid = await CircuitBreaker.start_link("svc")
    assert CircuitBreaker.whereis("svc") == pid
    with pytest.raises(StartError) as info:
        await CircuitBreaker.start_link("svc")
    assert info.value.reason == ("already_started", pid)
    with pytest.raises(Exit) as exit_info:
        await CircuitBreaker.call("nothing", ok)
    assert exit_info.value.reason == "noproc"
    assert CircuitBreaker.whereis("nothing") is None
    await CircuitBreaker.start_link(("svc", 2))  # any hashable term names one
    assert await CircuitBreaker.call(("svc", 2), ok) == "ok"


async def test_a_registry_names_the_breaker_process_as_in_the_seed() -> None:
    await Registry.start_link(keys="unique", name="MyRegistry")
    pid = await CircuitBreaker.start_link("user_service", registry="MyRegistry")
    assert Registry.lookup("MyRegistry", "user_service") == [(pid, None)]
    assert await CircuitBreaker.call("user_service", ok) == "ok"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("consecutive_failures", 0, "a positive int or None"),
        ("failure_rate_threshold", 0, r"a percentage in \(0, 100\]"),
        ("slow_call_rate_threshold", 101, r"a percentage in \(0, 100\]"),
        ("slow_call_duration", -1, "seconds >= 0"),
        ("sliding_window_type", "sliding", "'count' or 'time'"),
        ("sliding_window_size", 2.5, "a positive int"),
        ("minimum_number_of_calls", 0, "a positive int"),
        ("wait_duration_in_open_state", math.inf, "a finite number"),
        ("wait_duration_multiplier", 0.5, ">= 1"),
        ("permitted_calls_in_half_open", None, "a positive int"),
        ("record_exceptions", [Exception], "a tuple of exception classes"),
        ("ignore_exceptions", (int,), "a tuple of exception classes"),
        ("call_timeout", 0, "seconds > 0"),
    ],
)
async def test_invalid_options_raise_clear_errors(option: str, value: Term, message: str) -> None:
    with pytest.raises(ValueError, match=f"invalid CircuitBreaker {option}=.*{message}"):
        await CircuitBreaker.start_link("svc", **{option: value})
    with pytest.raises(ValueError, match=option):
        CircuitBreaker.child_spec("svc", **{option: value})
    with pytest.raises(TypeError):
        await CircuitBreaker.start_link("svc", threshold=5)  # type: ignore[call-arg]


# --- concurrency, crashes, supervision --------------------------------------------------


async def test_thousands_of_callers_wait_on_a_slow_backend_while_the_breaker_answers() -> None:
    await CircuitBreaker.start_link("svc")
    gate = asyncio.Event()
    me = beamish.self()

    async def slow_backend() -> str:
        await gate.wait()
        return "ok"

    for _ in range(1000):
        beamish.spawn(lambda: report(me, outcome("svc", slow_backend)))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(CircuitBreaker.state("svc"), 0.5) == "closed"
    assert (await CircuitBreaker.metrics("svc")).calls == 0  # all 1000 still in flight
    gate.set()
    for _ in range(1000):
        await assert_receive("ok", timeout=2.0)
    assert (await CircuitBreaker.metrics("svc")).successes == 1000


async def test_a_crash_in_fn_or_in_its_caller_never_takes_the_breaker_down() -> None:
    clock = Clock()
    pid = await start_and_pid(clock, consecutive_failures=3, permitted_calls_in_half_open=1)

    def crash() -> str:
        return str(1 / 0)

    with pytest.raises(ZeroDivisionError):
        await CircuitBreaker.call("svc", crash)

    async def caller() -> None:
        await CircuitBreaker.call("svc", crash)

    reason = await wait_for_exit(beamish.spawn(caller))
    assert isinstance(reason, ZeroDivisionError)
    await fail_times("svc", 1)
    assert await CircuitBreaker.state("svc") == "open"
    # A caller killed in the middle of a trial gives its permit back.
    clock.advance(30.0)
    hold = asyncio.Event()

    async def hung() -> str:
        await hold.wait()
        return "never"

    victim = beamish.spawn(lambda: CircuitBreaker.call("svc", hung))
    await asyncio.sleep(0)
    assert await outcome("svc", ok) == "open"  # the only permit is taken
    beamish.exit(victim, "kill")
    await asyncio.sleep(0)
    assert await outcome("svc", ok) == "ok"
    assert beamish.is_alive(pid) and await CircuitBreaker.state("svc") == "closed"


async def start_and_pid(clock: Clock, **options: Term) -> Term:
    await start(clock, **options)
    return CircuitBreaker.whereis("svc")


async def test_a_killed_breaker_is_restarted_by_its_supervisor_and_calls_keep_working() -> None:
    await Supervisor.start_link([CircuitBreaker.child_spec("svc", consecutive_failures=1)])
    old = CircuitBreaker.whereis("svc")
    assert old is not None
    await fail_times("svc", 1)
    beamish.exit(old, "kill")
    with pytest.raises(Exit, match="noproc"):  # until the restart, as any call to a dead server
        await CircuitBreaker.call("svc", ok)
    await eventually(lambda: CircuitBreaker.whereis("svc") not in (None, old))
    assert await CircuitBreaker.call("svc", ok) == "ok"  # restarted closed
    assert await CircuitBreaker.state("svc") == "closed"


async def test_calls_need_a_beamish_process() -> None:
    result: list[BaseException] = []

    def outside() -> None:
        async def go() -> None:
            try:
                await CircuitBreaker.call("svc", ok)
            except RuntimeError as exc:
                result.append(exc)

        asyncio.run(go())

    await beamish.to_thread(outside)
    assert "inside a beamish process" in str(result[0])
