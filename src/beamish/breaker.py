"""CircuitBreaker: stop calling a backend that keeps failing, and try it again later.

A circuit breaker stands between callers and something that can fail or
hang (a service, a database). While the backend works the breaker is
*closed* and calls go through. When too many of them fail, or are too slow,
it *opens*: calls fail at once with `CircuitOpen` instead of piling up on a
dead backend. After a wait it goes *half-open* and lets a few trial calls
through: enough successes close it again, a failure opens it again (for a
longer wait, with backoff).

>>> import beamish
>>> from beamish import CircuitBreaker, CircuitOpen
>>> async def flaky() -> str:
...     raise ConnectionError("backend down")
>>> async def main():
...     await CircuitBreaker.start_link("payments", consecutive_failures=2)
...     for _ in range(2):
...         try:
...             await CircuitBreaker.call("payments", flaky)
...         except ConnectionError:
...             pass
...     try:
...         await CircuitBreaker.call("payments", flaky)
...     except CircuitOpen as exc:
...         return exc.name, await CircuitBreaker.state("payments"), round(exc.retry_after)
>>> beamish.run(main)
('payments', 'open', 60)

## The call runs in the caller

`await CircuitBreaker.call(name, fn)` runs `fn()` (a plain function or an
`async def`; use a lambda or `functools.partial` for arguments) in the
calling process, never in the breaker's: a slow backend blocks only its own
callers, and one breaker serves thousands of concurrent ones. It returns
`fn`'s result or raises its exception; it raises `CircuitOpen` (with
`.name` and `.retry_after`, the seconds until the next trial) without
calling `fn` while the breaker is open, and `Exit("noproc")` if no breaker
runs under `name` on this node.

The breaker's process (a GenStateMachine) is the single writer of the
state: it makes every transition and runs the open state's timer. It
publishes the state and the sliding window in a small object the callers
read and update directly, as Elixir code reads an ETS table with
`read_concurrency`: on the closed path a call is one identity test before
`fn` and a few counter updates after it, with no message at all. A caller
sends the breaker a request only when an outcome crosses a threshold; the
breaker checks it is still current (another caller may have tripped it
first) and makes the transition.

## States

| state | calls | leaves |
|---|---|---|
| `"closed"` | go through and are counted | to `"open"` when a rule below trips |
| `"open"` | raise `CircuitOpen` | to `"half_open"` after the wait |
| `"half_open"` | `permitted_calls_in_half_open` trials go through, others raise `CircuitOpen` (retry_after 0.0) | to `"closed"` after that many successes; to `"open"` on a failed (or slow) trial |
| `"forced_open"` | raise `CircuitOpen` (retry_after inf) | by `reset` |
| `"disabled"` | go through, never judged (only the totals of `metrics` count them) | by `reset` |

`force_open(name)` and `disable(name)` enter the last two (resilience4j's
FORCED_OPEN and DISABLED); `reset(name)` returns to `"closed"` from any
state with an empty window and the backoff undone. The wait is timed twice:
by a state timeout on the node's clock, so the breaker goes half-open with
nobody calling, and by `clock` when a call or `state(name)` finds it open,
so a test's fake clock drives it without waiting.

## Options

Keyword options of `start_link` and `child_spec`, named after resilience4j's;
an invalid one raises `ValueError` (an unknown one `TypeError`):

- `consecutive_failures=5`: open after this many failures in a row (the
  seed's `threshold: 5`); None turns the rule off.
- `failure_rate_threshold=50.0`: open when at least this percentage of the
  calls in the sliding window failed; None turns the rule off.
- `slow_call_duration=60.0`, `slow_call_rate_threshold=100.0`: a call that
  took at least `slow_call_duration` seconds is *slow*; open when at least
  this percentage of the window was slow (None: off).
- `sliding_window_type="count"`, `sliding_window_size=100`: the window holds
  the last `size` calls (`"count"`) or the calls of the last `size` seconds
  in one-second buckets (`"time"`).
- `minimum_number_of_calls=100`: the rates are not judged before the window
  holds this many calls.
- `wait_duration_in_open_state=60.0`: seconds open before half-open (the
  seed's `timeout: 60_000`); `wait_duration_multiplier=1.0` multiplies it for
  each reopening without a close in between (2.0: exponential backoff), up
  to `max_wait_duration_in_open_state` (None: no cap).
- `permitted_calls_in_half_open=10`: trial calls admitted in half-open, and
  the successes that close the breaker.
- `record_exceptions=(Exception,)`, `ignore_exceptions=()`: an exception
  that is an instance of `ignore_exceptions` is neither a success nor a
  failure (and gives back its half-open permit); else one of
  `record_exceptions` is a failure; any other counts as a success (as in
  resilience4j). A cancelled caller records nothing.
- `call_timeout=None`: seconds an `async` fn may take; past it the call is
  cancelled, raises `TimeoutError` and counts as a failure. A plain function
  cannot be interrupted, so the timeout applies to awaitables only.

And `registry` (the name of a unique `Registry`: the process is also
registered as `Registry.via(registry, name)`, as the seed's
`{:via, Registry, {MyRegistry, name}}`), `events` (a `GenEvent` manager
that gets `("breaker_state", name, old, new)` on every state change) and
`clock` (a function returning seconds, for slow calls, the time window and
the wait; default: the node's event loop clock, `loop.time()`).

## Names, supervision and metrics

Each node has one breaker per name (any hashable term); a second
`start_link` of a running name raises `StartError(("already_started",
pid))`. In a supervision tree, use `CircuitBreaker.child_spec(name, ...)`. A
restarted breaker starts closed with an empty window, as any restarted
process starts from its init. `state(name)` and `metrics(name)` ask the
breaker process; `metrics` returns a `Metrics` record whose counts
(calls, failures, slow calls, rejections, times opened) run from the start
of the process, while the rates are those of the current window.

OTP: none; this is the seed's CircuitBreaker grown into resilience4j's
(`io.github.resilience4j.circuitbreaker`) on a gen_statem, with its names
in Python case. It differs from resilience4j in that half-open closes after
`permitted_calls_in_half_open` successes and reopens on the first failure
(instead of judging the rates over the trials), the wait may back off, and
`call_timeout` (resilience4j's TimeLimiter) is part of the breaker.
"""

from __future__ import annotations

import asyncio
import functools
import math
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypedDict, TypeVar, Unpack, cast, overload

from ._atoms import NOPROC
from ._gen import ChildSpec
from .gen_event import GenEvent
from .gen_statem import (
    GenStateMachine,
    Init,
    KeepStateAndData,
    NextState,
    Reply,
    Result,
    StateTimeout,
)
from .process import BadArg, Dest, Exit, _current, current
from .registry import Registry
from .terms import Atom, Pid, Term

if TYPE_CHECKING:
    from .node import Node
    from .process import Process

# CircuitBreaker and CircuitOpen are public as `beamish.<name>`; these are the breaker's own.
__all__ = ["Metrics", "State"]

T = TypeVar("T")

State = Literal["closed", "open", "half_open", "forced_open", "disabled"]
"""A breaker's state."""

# The states are these very objects (the breaker writes only them), so the
# callers' fast path compares by identity.
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
FORCED_OPEN: Final = "forced_open"
DISABLED: Final = "disabled"

_EXT: Final = "beamish.breaker"
VIA: Final = Atom("via")
_FAILED: Final = 1  # an outcome in the window: bit 0 failed, bit 1 slow
_SLOW: Final = 2


class CircuitOpen(Exception):
    """The breaker `name` did not let the call through: it is open (the
    next trial in `retry_after` seconds), half-open with every trial
    taken (0.0), or forced open (inf)."""

    def __init__(self, name: Term, retry_after: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; retry after {retry_after:.3f} s")
        self.name: Term = name
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Metrics:
    """What `CircuitBreaker.metrics(name)` returns: the state, counts since
    the breaker started (`calls` = `successes` + `failures`; a slow call is
    also a success or a failure; ignored exceptions are not calls), and the
    rates, in percent, over the `buffered_calls` of the current window."""

    state: State
    calls: int
    successes: int
    failures: int
    slow_calls: int
    rejections: int
    times_opened: int
    buffered_calls: int
    failure_rate: float
    slow_call_rate: float


class _Options(TypedDict, total=False):
    consecutive_failures: int | None
    failure_rate_threshold: float | None
    slow_call_rate_threshold: float | None
    slow_call_duration: float
    sliding_window_type: Literal["count", "time"]
    sliding_window_size: int
    minimum_number_of_calls: int
    wait_duration_in_open_state: float
    wait_duration_multiplier: float
    max_wait_duration_in_open_state: float | None
    permitted_calls_in_half_open: int
    record_exceptions: tuple[type[BaseException], ...]
    ignore_exceptions: tuple[type[BaseException], ...]
    call_timeout: float | None


class CircuitBreaker:
    """The client API: start a breaker under a name, then `call` through it.
    Every function takes the breaker's name; see the module's docs."""

    __slots__ = ()

    @staticmethod
    async def start_link(
        name: Term,
        *,
        registry: str | None = None,
        events: Dest | None = None,
        clock: Callable[[], float] | None = None,
        **options: Unpack[_Options],
    ) -> Pid:
        """Start the breaker `name`, linked to the caller, closed. Raises
        `StartError(("already_started", pid))` if one runs under `name`,
        `ValueError` for an invalid option and `TypeError` for an unknown one."""
        shared = _Shared(name, _Config(**options), registry, events, clock)
        return await _Breaker.start_link(shared, name=(VIA, _Names, shared))

    @staticmethod
    def child_spec(
        name: Term,
        *,
        registry: str | None = None,
        events: Dest | None = None,
        clock: Callable[[], float] | None = None,
        **options: Unpack[_Options],
    ) -> ChildSpec:
        """The spec a supervisor starts the breaker `name` from (id
        `("CircuitBreaker", name)`); options as `start_link`'s, checked now."""
        _Config(**options)
        start = functools.partial(
            CircuitBreaker.start_link, name, registry=registry, events=events, clock=clock, **options
        )
        return ChildSpec(id=("CircuitBreaker", name), start=(start, ()), modules=("CircuitBreaker",))

    @overload
    @staticmethod
    async def call(name: Term, fn: Callable[[], Awaitable[T]]) -> T: ...
    @overload
    @staticmethod
    async def call(name: Term, fn: Callable[[], T]) -> T: ...
    @staticmethod
    async def call(name: Term, fn: Callable[[], Term]) -> Term:
        """Run `fn()` (awaiting it if it is async) in the caller if the
        breaker `name` lets it, record the outcome, and return `fn`'s result
        or raise its exception. Raises `CircuitOpen` without calling `fn`,
        `TimeoutError` after `call_timeout`, and `Exit("noproc")` if no
        breaker runs under `name`."""
        b = _lookup(name)
        if b.state is CLOSED:  # the closed path: no message, no allocation
            epoch = b.epoch
        else:
            epoch = b.admit()
            if epoch < 0:  # open and the wait is over: the breaker decides
                await _ask(b, ("wait_over", b.epoch))
                epoch = b.admit(retried=True)
        clock = b.clock
        started = clock()
        timed_out = False
        try:
            result = fn()
            if type(result) is types.CoroutineType or isinstance(result, Awaitable):
                timeout = b.config.call_timeout
                if timeout is None:
                    result = await result
                else:
                    limit = asyncio.timeout(timeout)
                    try:
                        async with limit:
                            result = await result
                    except TimeoutError:
                        timed_out = limit.expired()
                        raise
        except BaseException as exc:
            request = b.failed(epoch, started, clock(), exc, timed_out)
            if request is not None:
                await _ask(b, request)
            raise
        request = b.succeeded(epoch, started, clock())
        if request is not None:
            await _ask(b, request)
        return result

    @staticmethod
    async def state(name: Term) -> State:
        """The breaker's state (asked of its process, which first moves an
        open breaker whose wait is over to half-open)."""
        return cast("State", await _Breaker.call(_lookup(name).pid, "state"))

    @staticmethod
    async def metrics(name: Term) -> Metrics:
        """The breaker's `Metrics`."""
        return cast("Metrics", await _Breaker.call(_lookup(name).pid, "metrics"))

    @staticmethod
    async def reset(name: Term) -> None:
        """Close the breaker from any state, with an empty window and no backoff."""
        await _Breaker.call(_lookup(name).pid, "reset")

    @staticmethod
    async def force_open(name: Term) -> None:
        """Reject every call until `reset` (resilience4j's FORCED_OPEN)."""
        await _Breaker.call(_lookup(name).pid, "force_open")

    @staticmethod
    async def disable(name: Term) -> None:
        """Let every call through, uncounted, until `reset` (resilience4j's DISABLED)."""
        await _Breaker.call(_lookup(name).pid, "disable")

    @staticmethod
    def whereis(name: Term) -> Pid | None:
        """The pid of the breaker running under `name` on this node, or None."""
        try:
            return _lookup(name).pid
        except Exit:
            return None


# --- internals -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Config:
    consecutive_failures: int | None = 5
    failure_rate_threshold: float | None = 50.0
    slow_call_rate_threshold: float | None = 100.0
    slow_call_duration: float = 60.0
    sliding_window_type: Literal["count", "time"] = "count"
    sliding_window_size: int = 100
    minimum_number_of_calls: int = 100
    wait_duration_in_open_state: float = 60.0
    wait_duration_multiplier: float = 1.0
    max_wait_duration_in_open_state: float | None = None
    permitted_calls_in_half_open: int = 10
    record_exceptions: tuple[type[BaseException], ...] = (Exception,)
    ignore_exceptions: tuple[type[BaseException], ...] = ()
    call_timeout: float | None = None

    def __post_init__(self) -> None:
        def bad(option: str, expected: str) -> ValueError:
            return ValueError(f"invalid CircuitBreaker {option}={getattr(self, option)!r}: {expected}")

        def count(option: str, optional: bool = False) -> None:
            value = getattr(self, option)
            if not (optional and value is None) and (type(value) is not int or value < 1):
                raise bad(option, "a positive int" + (" or None" if optional else ""))

        def seconds(option: str, optional: bool = False, positive: bool = False) -> None:
            value = getattr(self, option)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise bad(option, f"a finite number of seconds {'> 0' if positive else '>= 0'}" + (" or None" if optional else ""))

        def percent(option: str) -> None:
            value = getattr(self, option)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100):
                raise bad(option, "a percentage in (0, 100] or None")

        def classes(option: str) -> None:
            value = getattr(self, option)
            if type(value) is not tuple or not all(isinstance(c, type) and issubclass(c, BaseException) for c in value):
                raise bad(option, "a tuple of exception classes")

        count("consecutive_failures", optional=True)
        percent("failure_rate_threshold")
        percent("slow_call_rate_threshold")
        seconds("slow_call_duration")
        if self.sliding_window_type not in ("count", "time"):
            raise bad("sliding_window_type", "'count' or 'time'")
        count("sliding_window_size")
        count("minimum_number_of_calls")
        seconds("wait_duration_in_open_state")
        seconds("wait_duration_multiplier")
        if self.wait_duration_multiplier < 1:
            raise bad("wait_duration_multiplier", "a number >= 1")
        seconds("max_wait_duration_in_open_state", optional=True)
        count("permitted_calls_in_half_open")
        classes("record_exceptions")
        classes("ignore_exceptions")
        seconds("call_timeout", optional=True, positive=True)


def _table(node: Node) -> dict[Term, _Shared]:
    table = node.extensions.get(_EXT)
    if table is None:
        table = node.extensions[_EXT] = {}
    return cast("dict[Term, _Shared]", table)


def _lookup(name: Term) -> _Shared:
    try:
        node = _current.get().node
    except LookupError:
        raise RuntimeError("CircuitBreaker functions run inside a beamish process: start one with beamish.run(main)") from None
    table = cast("dict[Term, _Shared] | None", node.extensions.get(_EXT))
    b = None if table is None else table.get(name)
    if b is None or not b.proc.alive:
        raise Exit(NOPROC)
    return b


async def _ask(b: _Shared, request: Term) -> None:
    """Hand the breaker a transition request. An idle breaker handles a
    call in the caller's stack (`Process.run_now`), so the transition is
    made before the caller goes on; a dead one changes nothing (the
    outcome is already counted)."""
    try:
        await _Breaker.call(b.pid, request)
    except Exit:
        pass


class _Shared:
    """One breaker's published state and window: written by the breaker
    process (state, epoch, open_until, permits: only it makes transitions)
    and by its callers (the window and the counts), read by both. The node
    runs one thread, and no method here awaits, so each method is atomic
    with respect to every other process (the fast path of `call` lives here,
    in the module that owns the state it reads: house style 14)."""

    __slots__ = (
        "buckets",
        "calls",
        "clock",
        "config",
        "consecutive",
        "epoch",
        "events",
        "fails",
        "failures",
        "name",
        "open_until",
        "opened_streak",
        "permits",
        "pid",
        "proc",
        "registry",
        "rejections",
        "ring",
        "ring_at",
        "second",
        "size",
        "slow_calls",
        "slows",
        "state",
        "successes",
        "times_opened",
        "trial_successes",
    )

    def __init__(
        self, name: Term, config: _Config, registry: str | None, events: Dest | None, clock: Callable[[], float] | None
    ) -> None:
        self.name: Term = name
        self.config = config
        self.registry = registry
        self.events = events
        self.clock: Callable[[], float] = clock if clock is not None else current().node.loop.time
        self.proc: Process  # set by the breaker's init
        self.pid: Pid
        self.state: State = CLOSED
        # Bumped by every transition: an outcome is counted only in the
        # state (and window) its call was admitted in.
        self.epoch = 0
        self.open_until = 0.0
        self.permits = 0
        self.trial_successes = 0
        self.opened_streak = 0  # openings since the last close: the backoff's exponent
        self.calls = self.successes = self.failures = self.slow_calls = self.rejections = self.times_opened = 0
        self.consecutive = 0
        # The window: a ring of outcomes ("count") or of per-second
        # [failed, slow, calls] buckets ("time"), with running totals.
        self.ring: list[int] = []
        self.ring_at = 0
        self.buckets: list[list[int]] = []
        self.second = 0
        self.size = self.fails = self.slows = 0
        self.clear_window()

    # --- the callers' side ------------------------------------------------------

    def admit(self, retried: bool = False) -> int:
        """The epoch a call not in the closed state is admitted under; -1 if
        the breaker is open and its wait is over (ask the breaker, then
        retry); raises `CircuitOpen`."""
        state = self.state
        if state is CLOSED or state is DISABLED:
            return self.epoch
        if state is HALF_OPEN:
            if self.permits > 0:
                self.permits -= 1
                return self.epoch
            retry_after = 0.0
        elif state is OPEN:
            retry_after = max(self.open_until - self.clock(), 0.0)
            if retry_after == 0.0 and not retried:
                return -1
        else:
            retry_after = math.inf
        self.rejections += 1
        raise CircuitOpen(self.name, retry_after)

    def succeeded(self, epoch: int, started: float, now: float) -> Term:
        """Count a success; return the transition request it calls for, if any."""
        self.calls += 1
        self.successes += 1
        slow = now - started >= self.config.slow_call_duration
        if slow:
            self.slow_calls += 1
        if epoch != self.epoch:
            return None
        if self.state is CLOSED:
            self.consecutive = 0
            return self.add(_SLOW if slow else 0, now)
        if self.state is HALF_OPEN:
            if slow:
                return ("reopen", epoch)  # still too slow to call it recovered
            self.trial_successes += 1
            if self.trial_successes >= self.config.permitted_calls_in_half_open:
                return ("close", epoch)
        return None

    def failed(self, epoch: int, started: float, now: float, exc: BaseException, timed_out: bool) -> Term:
        """Count the outcome of a call that raised `exc`; return the
        transition request it calls for, if any."""
        config = self.config
        if not timed_out:
            if not isinstance(exc, Exception) or isinstance(exc, config.ignore_exceptions):
                # Cancelled, or ignored: no outcome, and a trial's permit goes back.
                if epoch == self.epoch and self.state is HALF_OPEN:
                    self.permits += 1
                return None
            if not isinstance(exc, config.record_exceptions):
                return self.succeeded(epoch, started, now)
        self.calls += 1
        self.failures += 1
        slow = now - started >= config.slow_call_duration
        if slow:
            self.slow_calls += 1
        if epoch != self.epoch:
            return None
        if self.state is CLOSED:
            self.consecutive += 1
            request = self.add(_FAILED | _SLOW if slow else _FAILED, now)
            limit = config.consecutive_failures
            if request is None and limit is not None and self.consecutive >= limit:
                return ("trip", epoch, "consecutive_failures")
            return request
        if self.state is HALF_OPEN:
            return ("reopen", epoch)
        return None

    def add(self, outcome: int, now: float) -> Term:
        """Put a closed-state outcome in the window; the trip request if a
        rate now passes its threshold."""
        config = self.config
        if config.sliding_window_type == "count":
            ring = self.ring
            at = self.ring_at
            if self.size == len(ring):
                old = ring[at]
                self.fails -= old & _FAILED
                self.slows -= old >> 1
            else:
                self.size += 1
            ring[at] = outcome
            self.ring_at = 0 if at + 1 == len(ring) else at + 1
        else:
            bucket = self.bucket(now)
            bucket[0] += outcome & _FAILED
            bucket[1] += outcome >> 1
            bucket[2] += 1
            self.size += 1
        self.fails += outcome & _FAILED
        self.slows += outcome >> 1
        size = self.size
        if size < config.minimum_number_of_calls:
            return None
        threshold = config.failure_rate_threshold
        if threshold is not None and self.fails * 100 >= threshold * size:
            return ("trip", self.epoch, "failure_rate")
        threshold = config.slow_call_rate_threshold
        if threshold is not None and self.slows * 100 >= threshold * size:
            return ("trip", self.epoch, "slow_call_rate")
        return None

    def bucket(self, now: float) -> list[int]:
        """The time window's bucket for `now`, after emptying the buckets of
        the seconds that passed since the last outcome (resilience4j's
        SlidingTimeWindowMetrics)."""
        second = int(now)
        buckets = self.buckets
        n = len(buckets)
        if second > self.second:
            for s in range(max(self.second + 1, second - n + 1), second + 1):
                old = buckets[s % n]
                self.fails -= old[0]
                self.slows -= old[1]
                self.size -= old[2]
                old[0] = old[1] = old[2] = 0
            self.second = second
        return buckets[second % n]

    # --- the breaker's side ---------------------------------------------------------

    def clear_window(self) -> None:
        size = self.config.sliding_window_size
        if self.config.sliding_window_type == "count":
            self.ring = [0] * size
        else:
            self.buckets = [[0, 0, 0] for _ in range(size)]
            self.second = int(self.clock())
        self.ring_at = self.size = self.fails = self.slows = self.consecutive = 0

    def metrics(self) -> Metrics:
        if self.config.sliding_window_type == "time" and self.state is CLOSED:
            self.bucket(self.clock())  # the seconds that passed without a call leave the window
        size = self.size
        return Metrics(
            state=self.state,
            calls=self.calls,
            successes=self.successes,
            failures=self.failures,
            slow_calls=self.slow_calls,
            rejections=self.rejections,
            times_opened=self.times_opened,
            buffered_calls=size,
            failure_rate=self.fails * 100 / size if size else 0.0,
            slow_call_rate=self.slows * 100 / size if size else 0.0,
        )

    def wait(self) -> float:
        """The wait before the next trial: the base wait, times the multiplier
        for each earlier opening without a close, capped."""
        config = self.config
        wait = config.wait_duration_in_open_state * config.wait_duration_multiplier ** (self.opened_streak - 1)
        cap = config.max_wait_duration_in_open_state
        return wait if cap is None else min(wait, cap)


class _Names:
    """The via module of a breaker's name `("via", _Names, shared)`: the
    node's table of breakers, so a name taken makes `start_link` raise
    `StartError(("already_started", pid))` before the process runs (OTP's
    gen:register_name), and the `registry` option registers it there too."""

    __slots__ = ()

    @staticmethod
    def register_name(b: _Shared, pid: Pid) -> bool:
        node = current().node
        table = _table(node)
        holder = table.get(b.name)
        if holder is not None and holder.proc.alive:
            return False
        if b.registry is not None and not Registry.register_name((b.registry, b.name), pid):
            return False
        proc = node.local(pid)
        assert proc is not None  # a process being started
        b.proc, b.pid = proc, pid
        table[b.name] = b
        return True

    @staticmethod
    def unregister_name(b: _Shared) -> None:
        table = _table(current().node)
        if table.get(b.name) is b:
            del table[b.name]
        if b.registry is not None:
            Registry.unregister_name((b.registry, b.name))

    @staticmethod
    def whereis_name(b: _Shared) -> Pid | None:
        holder = _table(current().node).get(b.name)
        if holder is not None and holder.proc.alive:
            return holder.pid
        return None if b.registry is None else Registry.whereis_name((b.registry, b.name))

    @staticmethod
    def send(b: _Shared, msg: Term) -> None:
        pid = _Names.whereis_name(b)
        if pid is None:
            raise BadArg(f"no circuit breaker is registered as {b.name!r}")
        current().node.send(pid, msg)


class _Breaker(GenStateMachine):
    """The breaker process: the only one that changes a breaker's state.
    Its data is the `_Shared` object its callers read."""

    def init(self, b: _Shared) -> Init:
        return Init(CLOSED, b)  # `_Names.register_name` published `b` before this ran

    def handle_event(self, event_type: Term, event: Term, state: Term, b: _Shared) -> Result:
        match event_type, event:
            case ("call", from_), request:
                new = self.request(request, state, b)
                if request == "reset":
                    b.epoch += 1  # what was admitted before the reset is not counted after it
                actions = self.transition(b, state, new) if new != state else []
                # The reply is read after the transition: metrics show the new state.
                reply = Reply(from_, b.metrics() if request == "metrics" else new)
                return NextState(new, b, [reply, *actions])
            case "state_timeout", "wait_over" if state == OPEN:
                return NextState(HALF_OPEN, b, self.transition(b, state, HALF_OPEN))
        return KeepStateAndData()

    def request(self, request: Term, state: Term, b: _Shared) -> State:
        """The state `request` (a client's, or a caller's transition
        request) leads to from `state`. A caller's request carries the epoch
        its outcome was counted in: one from an earlier state is stale."""
        current_epoch = (type(request) is tuple and request[1] == b.epoch)
        match request:
            case "state" | "metrics" | ("wait_over", _):
                if state == OPEN and b.clock() >= b.open_until:
                    return HALF_OPEN
            case "reset":
                b.opened_streak = 0
                b.clear_window()
                return CLOSED
            case "force_open":
                return FORCED_OPEN
            case "disable":
                return DISABLED
            case ("trip", _, _) if state == CLOSED and current_epoch:
                return OPEN
            case ("close", _) if state == HALF_OPEN and current_epoch:
                return CLOSED
            case ("reopen", _) if state == HALF_OPEN and current_epoch:
                return OPEN
        return cast("State", state)

    def transition(self, b: _Shared, old: Term, new: State) -> list[StateTimeout]:
        """Publish the move from `old` to `new`; the actions it needs."""
        b.epoch += 1
        b.state = new
        actions = []
        if new is OPEN:
            b.opened_streak += 1
            b.times_opened += 1
            wait = b.wait()
            b.open_until = b.clock() + wait
            actions.append(StateTimeout(wait, "wait_over"))
        elif new is HALF_OPEN:
            b.permits = b.config.permitted_calls_in_half_open
            b.trial_successes = 0
        elif new is CLOSED:
            b.opened_streak = 0
            b.clear_window()
        if b.events is not None:
            GenEvent.notify(b.events, ("breaker_state", b.name, old, new))
        return actions

    def terminate(self, reason: Term, state: Term, b: _Shared) -> None:
        table = _table(b.proc.node)
        if table.get(b.name) is b:
            del table[b.name]
