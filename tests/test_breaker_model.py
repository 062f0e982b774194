"""CircuitBreaker against a model: random calls (quick or held open, failing,
slow, ignored), clock moves, resets, forced opens and disables, checked after
every step against a plain-Python breaker written from the documented rules.

Hypothesis drives a RuleBasedStateMachine; each machine owns one beamish node
on its own event loop, and each rule runs a coroutine as a process of it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import Literal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import beamish
from beamish import CircuitBreaker, CircuitOpen, Node
from beamish.breaker import Metrics
from beamish.terms import Term

CONSECUTIVE = 3
WINDOW = 5
MINIMUM = 4
RATE = 60.0  # percent, for failures and slow calls alike
SLOW = 1.0
WAIT, MULTIPLIER, MAX_WAIT = 10.0, 2.0, 25.0
PERMITS = 2

Kind = Literal["ok", "fail", "ignored"]


class Ignored(Exception):
    pass


class Model:
    """The documented rules, written plainly: lists instead of counters."""

    def __init__(self) -> None:
        self.now = 0.0
        self.state = "closed"
        self.epoch = 0
        self.window: list[tuple[bool, bool]] = []  # (failed, slow), oldest first
        self.consecutive = 0
        self.open_until = 0.0
        self.streak = 0
        self.permits = 0
        self.trial_successes = 0

    def go(self, new: str) -> None:
        if new == self.state:
            return
        self.state = new
        self.epoch += 1
        if new == "open":
            self.streak += 1
            self.open_until = self.now + min(WAIT * MULTIPLIER ** (self.streak - 1), MAX_WAIT)
        elif new == "half_open":
            self.permits, self.trial_successes = PERMITS, 0
        elif new == "closed":
            self.streak, self.window, self.consecutive = 0, [], 0

    def wait_over(self) -> None:
        if self.state == "open" and self.now >= self.open_until:
            self.go("half_open")

    def admit(self) -> int | float:
        """The epoch a call is admitted under, or the retry_after it is refused with."""
        self.wait_over()
        if self.state in ("closed", "disabled"):
            return self.epoch
        if self.state == "half_open" and self.permits > 0:
            self.permits -= 1
            return self.epoch
        return {"half_open": 0.0, "forced_open": math.inf}.get(self.state, self.open_until - self.now)

    def finish(self, epoch: int, kind: Kind, duration: float) -> None:
        if epoch != self.epoch:
            return
        slow = duration >= SLOW
        if kind == "ignored":
            if self.state == "half_open":
                self.permits += 1
        elif self.state == "half_open":
            if kind == "fail" or slow:
                self.go("open")
            else:
                self.trial_successes += 1
                if self.trial_successes >= PERMITS:
                    self.go("closed")
        elif self.state == "closed":
            failed = kind == "fail"
            self.consecutive = self.consecutive + 1 if failed else 0
            self.window = [*self.window, (failed, slow)][-WINDOW:]
            n = len(self.window)
            fails = sum(f for f, _ in self.window)
            slows = sum(s for _, s in self.window)
            if (n >= MINIMUM and (fails * 100 >= RATE * n or slows * 100 >= RATE * n)) or (failed and self.consecutive >= CONSECUTIVE):
                self.go("open")

    def reset(self) -> None:
        self.streak, self.window, self.consecutive = 0, [], 0
        self.epoch += 1
        self.go("closed")


class Pending:
    """A call held open in a process of its own until the test finishes it."""

    def __init__(self, epoch: int, started: float) -> None:
        self.epoch = epoch
        self.started = started  # the model's clock when it was admitted
        self.release: asyncio.Future[tuple[Kind, float]] | None = None
        self.done: asyncio.Future[str] | None = None


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.loop = asyncio.new_event_loop()
        self.node = Node(lag_threshold=None)
        self.jobs: asyncio.Queue[tuple[Callable[[], Awaitable[Term]], asyncio.Future[Term]] | None] = asyncio.Queue()
        self.main = self.loop.create_task(self.node.run(self.serve))
        self.pending: list[Pending] = []
        self.do(lambda: CircuitBreaker.start_link(
            "svc", clock=lambda: self.model.now, consecutive_failures=CONSECUTIVE,
            failure_rate_threshold=RATE, slow_call_rate_threshold=RATE, slow_call_duration=SLOW,
            sliding_window_size=WINDOW, minimum_number_of_calls=MINIMUM, wait_duration_in_open_state=WAIT,
            wait_duration_multiplier=MULTIPLIER, max_wait_duration_in_open_state=MAX_WAIT,
            permitted_calls_in_half_open=PERMITS, ignore_exceptions=(Ignored,),
        ))

    async def serve(self) -> None:
        """The node's first process: runs each job the rules hand it."""
        while (job := await self.jobs.get()) is not None:
            fn, result = job
            try:
                result.set_result(await fn())
            except BaseException as exc:
                result.set_exception(exc)

    def do(self, fn: Callable[[], Awaitable[Term]]) -> Term:
        result: asyncio.Future[Term] = self.loop.create_future()
        self.jobs.put_nowait((fn, result))
        return self.loop.run_until_complete(result)

    def teardown(self) -> None:
        self.jobs.put_nowait(None)
        self.loop.run_until_complete(self.main)
        self.loop.close()

    def guarded(self, kind: Kind, duration: float) -> Callable[[], Coroutine[None, None, str]]:
        async def fn() -> str:
            self.model.now += duration
            if kind == "fail":
                raise RuntimeError("backend")
            if kind == "ignored":
                raise Ignored()
            return "ok"

        return fn

    async def outcome(self, fn: Callable[[], Awaitable[str]]) -> str | float:
        try:
            return await CircuitBreaker.call("svc", fn)
        except CircuitOpen as exc:
            return exc.retry_after
        except (RuntimeError, Ignored):
            return "raised"

    @rule(kind=st.sampled_from(["ok", "ok", "fail", "ignored"]), duration=st.sampled_from([0.0, 0.5, SLOW, 2.0]))
    def call(self, kind: Kind, duration: float) -> None:
        admitted = self.model.admit()
        got = self.do(lambda: self.outcome(self.guarded(kind, duration)))
        if isinstance(admitted, int):
            assert got == ("ok" if kind == "ok" else "raised")
            self.model.finish(admitted, kind, duration)
        else:
            assert got == admitted

    @rule()
    def start_held_call(self) -> None:
        admitted = self.model.admit()
        if not isinstance(admitted, int):
            got = self.do(lambda: self.outcome(self.guarded("ok", 0.0)))
            assert got == admitted
            return
        held = Pending(admitted, self.model.now)
        held.release = self.loop.create_future()
        held.done = self.loop.create_future()
        release, done = held.release, held.done

        async def wait_for_release() -> str:
            kind, duration = await release
            return await self.guarded(kind, duration)()

        async def caller() -> None:
            done.set_result(str(await self.outcome(wait_for_release)))

        async def start() -> None:
            beamish.spawn(caller)
            await asyncio.sleep(0)  # it is admitted (or not) before the next rule

        self.do(start)
        self.pending.append(held)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), kind=st.sampled_from(["ok", "fail", "ignored"]), duration=st.sampled_from([0.0, 2.0]))
    def finish_held_call(self, data: st.DataObject, kind: Kind, duration: float) -> None:
        held = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        assert held.release is not None and held.done is not None
        held.release.set_result((kind, duration))
        done = held.done
        assert self.do(lambda: done) == ("ok" if kind == "ok" else "raised")
        # Its duration is all the time since it was admitted: the clock moved
        # for the calls and waits in between too, and the breaker measures that.
        self.model.finish(held.epoch, kind, self.model.now - held.started)

    @rule(seconds=st.sampled_from([1.0, 5.0, 10.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.model.now += seconds

    @rule()
    def reset(self) -> None:
        self.do(lambda: CircuitBreaker.reset("svc"))
        self.model.reset()

    @rule()
    def force_open(self) -> None:
        self.do(lambda: CircuitBreaker.force_open("svc"))
        self.model.go("forced_open")

    @rule()
    def disable(self) -> None:
        self.do(lambda: CircuitBreaker.disable("svc"))
        self.model.go("disabled")

    @invariant()
    def same_state(self) -> None:
        self.model.wait_over()  # state() moves a breaker whose wait is over, as the model does here
        metrics = self.do(lambda: CircuitBreaker.metrics("svc"))
        assert isinstance(metrics, Metrics)
        assert metrics.state == self.model.state
        if self.model.state == "closed":
            assert metrics.buffered_calls == len(self.model.window)


BreakerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
TestBreakerModel = BreakerMachine.TestCase
