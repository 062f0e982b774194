"""Processes: isolated, lightweight units of work that talk only by messages.

A beamish process is Erlang's process on asyncio: it has a pid, a mailbox, and
nothing it shares. Processes send each other messages (`send`), take them
out of their mailbox in any order they like (`receive` with a `match`), and
are tied together by *links* (when one dies abnormally, the other dies too,
unless it traps exits) and *monitors* (the watcher gets one `DOWN` message).

>>> import beamish
>>> async def echo():
...     match await beamish.receive():
...         case (sender, text):
...             beamish.send(sender, ("echo", text))
>>> async def main():
...     pid = beamish.spawn(echo)
...     beamish.send(pid, (beamish.self(), "hello"))
...     return await beamish.receive(lambda m: m[0] == "echo")
>>> beamish.run(main)
('echo', 'hello')

## Exit signals

A process ends with a *reason*: `"normal"` when its function returns, the
reason of an `Exit` it raises, or the exception itself when one escapes (that
is a crash, logged like an OTP crash report). Its links then receive an exit
signal, following OTP's table:

| reason | linked process traps exits | it does not |
|---|---|---|
| `normal` | gets `("EXIT", pid, "normal")` | ignores it |
| anything else | gets `("EXIT", pid, reason)` | exits with the same reason |

`exit(pid, "kill")` is the one signal nobody can trap: the target exits
with reason `killed`. Monitors deliver exactly one
`("DOWN", ref, "process", pid, reason)`, with reason `noproc` when the target
was already gone. Sending to a dead pid does nothing, as in Erlang.

## Blocking

asyncio does not preempt: a callback that blocks stalls every process of its
node. Wrap blocking calls in `await beamish.to_thread(fn, *args)`; the node's
watchdog logs a warning naming the process and the function when the loop is
held longer than its threshold (0.1 s by default).

OTP: mirrors erlang:spawn/link/monitor/exit/send and `receive`; differs in that
signals are processed at once when sent (not asynchronously), which makes
`is_alive(pid)` right after `exit(pid, "kill")` deterministic, and in that a
crash reason is the Python exception itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import inspect
import itertools
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias, TypeVar

from ._atoms import DOWN, KILLED, NORMAL
from .terms import Pid, Ref, Term

if TYPE_CHECKING:
    from .node import Node

# What `beamish` exports is public there only (one path per name); this lists the rest.
__all__ = ["Dest", "Process", "current"]

T = TypeVar("T")

log = logging.getLogger("beamish")


Dest: TypeAlias = "Pid | str | tuple[Term, ...]"
"""Where a message can go: a pid, a registered name, `(name, node)`, or a
via-name `("via", module, key)` / `("global", name)`."""

# A behaviour process is driven by a handler instead of a task of its own: the
# node calls handler(msg) for each message; returning an awaitable means the
# callback is async and the process is busy until it completes.
Handler: TypeAlias = Callable[[Term], "Awaitable[None] | None"]

_current: contextvars.ContextVar[Process] = contextvars.ContextVar("beamish_process")

# Messages handled per drain before yielding the loop to other processes: the
# BEAM preempts after ~4000 reductions; this is our coarse equivalent.
_DRAIN_BATCH: Final = 512
HELP_AT: Final = 64
"""Queued casts at which a sender drains an idle server's mailbox itself
(`Process.deliver_cast`)."""

NO_MESSAGE: Final = object()
"""`Process.take`'s answer when no queued message matches."""

NOT_YET: Final = object()
"""`Process.call_now`'s answer when the call has no reply yet."""

INLINE_BUDGET: Final = 64
"""Calls a process may make to idle local servers, each run at once in the
caller's stack (see `_gen.call`), before it must let the loop run: the
BEAM's reduction budget, in calls."""


class From(NamedTuple):
    """Who is waiting for a call's reply: the caller's pid and the reply tag
    (OTP's `From`, `{Pid, Tag}`; a beamish caller's tag is `[alias | Ref]`)."""

    pid: Pid
    tag: Term


class Exit(Exception):  # the OTP name: an exit, not an error
    """A process exit: raised to end the current process with `reason`, and
    raised by calls that fail (`noproc`, `timeout`, a server's crash reason).

    If nobody catches it, the process exits with `exit_reason`: the reason
    itself, or for a failed call, OTP's `(reason, (module, function, args))`
    shape, so a failed call is never mistaken for a normal exit.
    """

    def __init__(self, reason: Term, context: Term = None) -> None:
        super().__init__(reason)
        self.reason: Term = reason
        self.context: Term = context

    @property
    def exit_reason(self) -> Term:
        """The reason the process exits with if this propagates."""
        if self.context is None:
            return self.reason
        return (self.reason, self.context)

    def __str__(self) -> str:
        if self.context is None:
            return f"exit: {self.reason!r}"
        return f"exit: {self.reason!r} in {self.context!r}"


class BadArg(ValueError):
    """Erlang's `badarg`: an argument the runtime cannot accept (an unregistered
    name to send to, a name already taken, a process that is not alive)."""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A snapshot of a process, as `erlang:process_info/1` gives it."""

    pid: Pid
    status: str
    """`running`, `runnable` (has messages queued for its handler) or `waiting`."""
    message_queue_len: int
    links: tuple[Pid, ...]
    monitors: tuple[Pid | tuple[Term, ...], ...]
    monitored_by: tuple[Pid, ...]
    registered_name: str | None
    initial_call: str
    behaviour: str | None
    messages_handled: int
    trap_exit: bool
    memory: int = 0
    """Bytes the runtime holds for it: its record, mailbox and queued
    messages (shallow sizes: what a message refers to is not counted)."""
    current_function: str | None = None
    """Where it runs or waits (`module.function:line`), for a task process or
    a behaviour inside an async callback; None for an idle behaviour."""


def _close_unstarted(coro: Coroutine[object, object, object], _: object) -> None:
    if inspect.getcoroutinestate(coro) != inspect.CORO_CREATED:
        return
    # Its arguments may be coroutines it was going to await (a behaviour's
    # wrapper around the user's async callback): close those too.
    frame = getattr(coro, "cr_frame", None)
    for value in list(frame.f_locals.values()) if frame is not None else ():
        if inspect.iscoroutine(value):
            _close_unstarted(value, None)
    coro.close()


class Process:
    """The runtime's record of one process. Users hold `Pid`s, never these.

    Two ways to run: a *task process* runs a function in an asyncio task of its
    own (`spawn`); a *behaviour process* has no task while idle and is driven
    by a handler called for each message (GenServer and friends). An idle
    behaviour process is therefore a few hundred bytes, not a coroutine frame.
    """

    __slots__ = (
        "_budget",
        "_busy",
        "_handler",
        "_links",
        "_match",
        "_monitors",
        "_scheduled",
        "_task",
        "_waiter",
        "_watchers",
        "alive",
        "behaviour",
        "exit_reason",
        "handled",
        "initial_call",
        "mailbox",
        "name",
        "node",
        "pid",
        "trap_exit",
    )

    def __init__(self, node: Node, pid: Pid, initial_call: str) -> None:
        self.node = node
        self.pid = pid
        self.initial_call = initial_call
        self.mailbox: deque[Term] | None = None
        self._waiter: asyncio.Future[Term] | None = None
        self._match: Callable[[Term], bool] | None = None
        self._links: set[Pid] | None = None
        self._monitors: dict[Ref, Pid | tuple[Term, ...]] | None = None  # refs I hold
        self._watchers: dict[Ref, Pid] | None = None  # refs held on me
        self._task: asyncio.Task[Term] | None = None
        self._handler: Handler | None = None
        self._busy = False
        self._scheduled = False
        self.trap_exit = False
        self.alive = True
        self.exit_reason: Term = None
        self.name: str | None = None
        self.handled = 0
        self.behaviour: str | None = None
        self._budget = INLINE_BUDGET

    def __repr__(self) -> str:
        return f"<Process {self.pid!r} {self.name or self.initial_call}>"

    # --- delivery -----------------------------------------------------------

    def deliver(self, msg: Term) -> None:
        """Put `msg` in the mailbox (or straight into a waiting receive).

        Invariant: a behaviour process's mailbox is not None only while a
        drain is scheduled, running or waiting for an async callback to end
        (so a sender that finds a mailbox may just append to it)."""
        if not self.alive:
            return
        w = self._waiter
        if w is not None and not w.done():
            m = self._match
            if m is None or m(msg):
                # Every queued message was already refused by this receive's
                # match, so handing this one over keeps mailbox order.
                self._waiter = None
                w.set_result(msg)
                return
        mb = self.mailbox
        if mb is None:
            mb = self.mailbox = deque()
        mb.append(msg)
        if self._handler is not None:
            if not self._busy and not self._scheduled:
                self._scheduled = True
                self.node.loop.call_soon(self._drain)
        elif len(mb) >= self.node.long_queue_at:
            # A behaviour's queue is measured when it drains and by a local
            # cast past HELP_AT, not here, the path of every message to it.
            self.node.long_queue(self, len(mb))

    def _drain(self) -> None:
        self._scheduled = False
        if not self.alive or self._busy:
            return
        mb = self.mailbox
        handler = self._handler
        if not mb or handler is None:
            return
        node = self.node
        if len(mb) >= node.long_queue_at:
            node.long_queue(self, len(mb))
        token = _current.set(self)
        node.dispatching = self
        n = 0
        pop = mb.popleft
        batch = _DRAIN_BATCH
        try:
            while mb and self.alive:
                msg = pop()
                n += 1
                pending = handler(msg)
                if pending is not None:
                    self._run_async(pending)
                    return
                if n == batch:
                    break
        except BaseException as exc:  # a handler bug, not a callback crash
            self.crash(exc)
            return
        finally:
            self.handled += n  # counted per batch: one attribute write, not one per message
            node.dispatching = None
            _current.reset(token)
            if node.long_queues:  # a set, empty but for processes logged for a long queue
                node.queue_shortened(self, len(mb))
        if self.alive and not self._busy:
            if mb:
                self._scheduled = True
                node.loop.call_soon(self._drain)
            elif self.mailbox is mb:
                self.mailbox = None  # an idle process keeps no deque (760 bytes)

    def run_now(self, msg: Term) -> None:
        """Handle `msg` at once, in the caller's stack: `_drain` for the one
        message of an idle behaviour with nothing queued (`_gen.call`'s
        at-once path), without a deque to carry it (0.15 µs of a call).
        Whatever the callback sends this process meanwhile is queued and
        drained later, as a message arriving after `msg`."""
        handler = self._handler
        if handler is None:  # the caller checked; a guard, not a path
            self.deliver(msg)
            return
        token = _current.set(self)
        node = self.node
        node.dispatching = self
        try:
            pending = handler(msg)
            if pending is not None:
                self._run_async(pending)
        except BaseException as exc:  # a handler bug, not a callback crash
            self.crash(exc)
        finally:
            self.handled += 1
            node.dispatching = None
            _current.reset(token)

    def call_now(self, server: Process, msg: Term, tag: Term) -> Term:
        """Hand the call `msg` (tagged `tag`) from this process to the local
        `server`, and return its reply if it came at once, else `NOT_YET`.

        When the server can run now (idle, nothing queued for it: it would
        handle this call next anyway), its callback runs here, in this
        stack, saving two trips through the event loop; a synchronous reply
        is then already the last message of our mailbox. This process may do
        that `INLINE_BUDGET` times before it waits on the loop, as the BEAM
        preempts a process after its reductions, so a calling loop never
        starves the others. Raises `Exit` if the callback killed us."""
        if self._budget > 0 and server.can_run_now():
            self._budget -= 1
            server.run_now(msg)
            if not self.alive:
                raise Exit(self.exit_reason)
            mb = self.mailbox
            if mb:
                last = mb[-1]
                if type(last) is tuple and len(last) == 2 and last[0] is tag:
                    mb.pop()
                    return last[1]
            return NOT_YET  # deferred, an async callback, or the server died
        server.deliver(msg)
        return NOT_YET

    def deliver_cast(self, msg: Term, sender: Process) -> None:
        """`deliver` a cast from `sender`, a process of this node. When
        messages are already queued (so a drain is due), just queue; and when
        `HELP_AT` of them wait for an idle behaviour while the loop has not
        run, the sender drains them itself: the same order, sooner, and a
        mailbox that stays short instead of growing by a message per cast
        (a million queued tuples cost a quarter of the time in GC). Raises
        `Exit` if the server's callback killed the sender."""
        mb = self.mailbox
        if mb is not None and self._waiter is None:
            mb.append(msg)
            if len(mb) >= HELP_AT:
                if self.node.dispatching is None and self._handler is not None and not self._busy:
                    self._drain()
                    if not sender.alive:
                        raise Exit(sender.exit_reason)
                elif len(mb) >= self.node.long_queue_at:
                    self.node.long_queue(self, len(mb))
        else:
            self.deliver(msg)

    def take(self, match: Callable[[Term], bool]) -> Term:
        """Remove and return the first queued message `match` accepts, or
        `NO_MESSAGE`, without waiting: the mailbox clean-up after a monitor,
        link or call is given up (`demonitor(Ref, [flush])`, a call's
        timeout), the one place besides `receive` that takes from it."""
        mb = self.mailbox
        if mb:
            for i, msg in enumerate(mb):
                if match(msg):
                    del mb[i]
                    return msg
        return NO_MESSAGE

    def park(self, match: Callable[[Term], bool] | None, timeout: float | None) -> asyncio.Future[Term]:
        """Wait in `receive` for the first message `match` accepts: the
        future `deliver` resolves (or the node's deadlines time out)."""
        node = self.node
        fut: asyncio.Future[Term] = node.loop.create_future()
        self._waiter = fut
        self._match = match
        if timeout is not None:
            node.deadlines.add(timeout, fut)
        self._budget = INLINE_BUDGET  # it yields the loop now: a fresh budget
        if node.dist is not None:
            node.dist.flush()
        return fut

    def unpark(self, fut: asyncio.Future[Term]) -> None:
        """The `receive` that `park` began has ended, one way or another."""
        if self._waiter is fut:
            self._waiter = None
        self._match = None

    def start_task(self, fn: Callable[..., Term], args: tuple[Term, ...]) -> None:
        """Run this process's body, `fn(*args)`, in an asyncio task of its own."""
        self._task = self.node.loop.create_task(self.run_task(fn, args))

    def adopt(self, task: asyncio.Task[Any] | None) -> None:
        """Make a running task this process's own (`Node.in_process`): an
        exit signal that kills the process cancels it."""
        self._task = task

    def can_run_now(self) -> bool:
        """Whether a message for this process may be handled at once, in the
        sender's stack (`run_now`): a live, idle behaviour with nothing
        queued (so it would handle that message next anyway), while no
        other callback of this node is running."""
        return (
            self.mailbox is None
            and self._handler is not None
            and not self._busy
            and not self._scheduled
            and self.alive
            and self.node.dispatching is None
        )

    def deliver_at_once(self, msg: Term) -> None:
        """`deliver`, except that a process that `can_run_now` handles `msg`
        right away. For code that is not a process handing over what arrived
        from outside (the distribution layer, for a frame off the socket):
        the server's reply can then leave in the same turn of the event loop."""
        if self.can_run_now():
            self.run_now(msg)
        else:
            self.deliver(msg)

    def _run_async(self, pending: Awaitable[None]) -> None:
        """Run an async callback; the process is busy (no drain) until it ends."""
        self._busy = True
        task = self.node.loop.create_task(self._await_callback(pending))
        if inspect.iscoroutine(pending):
            # Killed before the task first ran: close the callback's coroutine,
            # which nothing will ever await (else Python warns it was not).
            task.add_done_callback(functools.partial(_close_unstarted, pending))
        self._task = task

    async def _await_callback(self, pending: Awaitable[None]) -> Term:
        try:
            await pending
        except asyncio.CancelledError:
            if self.alive:
                self.exit(KILLED)
            return None
        except BaseException as exc:
            self.crash(exc)
            return None
        self._busy = False
        self._task = None
        mb = self.mailbox
        if self.alive and mb and not self._scheduled:
            self._scheduled = True
            self.node.loop.call_soon(self._drain)
        elif mb is not None and not mb:
            # The invariant GenServer.cast's fast path relies on: a
            # behaviour's mailbox is None unless a drain is due.
            self.mailbox = None
        return None

    def become(self, handler: Handler, behaviour: str) -> None:
        """Switch this process to being driven by `handler` (after its init)."""
        self._handler = handler
        self.behaviour = behaviour
        if self.mailbox and not self._busy and not self._scheduled:
            self._scheduled = True
            self.node.loop.call_soon(self._drain)

    def set_handler(self, handler: Handler) -> None:
        """Drive this behaviour process with `handler` from its next message
        on (`beamish._sys` swaps in a suspended or tracing one)."""
        self._handler = handler

    def requeue_front(self, msgs: deque[Term]) -> None:
        """Put `msgs` back at the head of the mailbox, in order (what waited
        while the process was suspended), and drain them."""
        if not msgs or not self.alive:
            return
        mb = self.mailbox
        if mb is None:
            mb = self.mailbox = deque()
        mb.extendleft(reversed(msgs))
        if self._handler is not None and not self._busy and not self._scheduled:
            self._scheduled = True
            self.node.loop.call_soon(self._drain)

    # --- task processes -----------------------------------------------------

    async def run_task(self, fn: Callable[..., Term], args: tuple[Term, ...]) -> Term:
        """The body of a task process: run `fn`, then exit with its outcome."""
        _current.set(self)
        try:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
        except Exit as e:
            # Not re-raised: the exit is the process's outcome, and a task
            # holding an exception nobody retrieves would be logged by asyncio.
            self.exit(e.exit_reason)
            return None
        except asyncio.CancelledError:
            if self.alive:  # cancelled from outside the runtime (loop shutdown)
                self.exit(KILLED)
            raise
        except Exception as exc:
            self.crash(exc)
            return None
        if self._handler is None:
            self.exit(NORMAL)
        elif self._task is not None and self._task is _current_task():
            # It became a behaviour: this init task ends now, and an idle
            # behaviour keeps no task (a finished one, its coroutine and its
            # closure would cost ~900 bytes per process).
            self._task = None
        return result

    # --- ending -------------------------------------------------------------

    def crash(self, exc: BaseException) -> None:
        """End the process because `exc` escaped: log a crash report, exit."""
        if not self.alive:
            return
        if isinstance(exc, Exit):
            self.exit(exc.exit_reason)
            return
        if isinstance(exc, asyncio.CancelledError):
            self.exit(KILLED)
            return
        log.error(
            "process %r (%s) crashed: %s: %s",
            self.pid,
            self.name or self.initial_call,
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={"beamish_pid": self.pid, "beamish_name": self.name},
        )
        self.exit(exc)

    def exit(self, reason: Term) -> None:
        """Mark the process dead and send its exit signals and DOWNs."""
        if not self.alive:
            return
        self.alive = False
        self.exit_reason = reason
        node = self.node
        node.forget(self)
        w = self._waiter
        if w is not None and not w.done():
            w.cancel()
        self._waiter = None
        links, self._links = self._links, None
        watchers, self._watchers = self._watchers, None
        monitors, self._monitors = self._monitors, None
        if monitors:
            for ref, target in monitors.items():
                node.drop_monitor(ref, target, self.pid)
        if watchers:
            for ref, watcher in watchers.items():
                node.signal_down(watcher, ref, self.pid, reason)
        if links:
            for other in links:
                node.signal_exit(self.pid, other, reason, True)
        task = self._task
        if task is not None and not task.done():
            try:
                running = asyncio.current_task()
            except RuntimeError:
                running = None
            if task is not running:
                task.cancel()
        self._task = None
        self.mailbox = None
        self._handler = None
        if node.long_queues:
            node.queue_shortened(self, -1)

    # --- link and monitor bookkeeping (called by the node) -------------------

    def add_link(self, other: Pid) -> None:
        if self._links is None:
            self._links = set()
        self._links.add(other)

    def remove_link(self, other: Pid) -> bool:
        links = self._links
        if links is None or other not in links:
            return False
        links.discard(other)
        return True

    def add_watcher(self, ref: Ref, watcher: Pid) -> None:
        if self._watchers is None:
            self._watchers = {}
        self._watchers[ref] = watcher

    def remove_watcher(self, ref: Ref) -> None:
        watchers = self._watchers
        if watchers is not None:
            watchers.pop(ref, None)
            if not watchers:
                # Every behaviour is monitored once by its starter until its
                # init acks: an emptied dict kept is 224 bytes of an idle
                # GenServer's ~880.
                self._watchers = None

    def add_monitor(self, ref: Ref, target: Pid | tuple[Term, ...]) -> None:
        if self._monitors is None:
            self._monitors = {}
        self._monitors[ref] = target

    def pop_monitor(self, ref: Ref) -> Pid | tuple[Term, ...] | None:
        if self._monitors is None:
            return None
        return self._monitors.pop(ref, None)

    def info(self) -> ProcessInfo:
        running = self.node.dispatching is self or (
            self._task is not None and self._task is _current_task()
        )
        if running:
            status = "running"
        elif self._scheduled:
            status = "runnable"
        else:
            status = "waiting"
        return ProcessInfo(
            pid=self.pid,
            status=status,
            message_queue_len=len(self.mailbox) if self.mailbox else 0,
            links=tuple(sorted(self._links or ())),
            monitors=tuple((self._monitors or {}).values()),
            monitored_by=tuple((self._watchers or {}).values()),
            registered_name=self.name,
            initial_call=self.initial_call,
            behaviour=self.behaviour,
            messages_handled=self.handled,
            trap_exit=self.trap_exit,
            memory=self.memory(),
            current_function=_where(self._task),
        )

    def memory(self) -> int:
        """Shallow bytes of the record, its mailbox and queued messages."""
        size = sys.getsizeof(self)
        mb = self.mailbox
        if mb:
            size += sys.getsizeof(mb) + sum(map(sys.getsizeof, mb))
        return size


def _where(task: asyncio.Task[Term] | None) -> str | None:
    """The innermost frame of a task's coroutine chain, `module.function:line`."""
    if task is None or task.done():
        return None
    coro: Any = task.get_coro()
    where = None
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        where = f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return where


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


# --- the module-level API (valid inside a process) ---------------------------


def current() -> Process:
    """The running process's record; raises RuntimeError outside a process."""
    try:
        return _current.get()
    except LookupError:
        if threading.current_thread().name.startswith("beamish-"):
            # A node's pool thread (to_thread, an rpc target run in the pool).
            raise RuntimeError(
                "not inside a beamish process: this is a thread of the node's pool "
                "(beamish.to_thread, or an rpc target run there); send from the process "
                "that waits for it, or allow-list the target with @loop (or make it async def)"
            ) from None
        raise RuntimeError(
            "not inside a beamish process: start one with beamish.run(main)"
        ) from None


def self() -> Pid:
    """The pid of the calling process (Erlang's `self()`)."""
    return current().pid


def _name_of(fn: Callable[..., object]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def spawn(
    fn: Callable[..., Term],
    *args: Term,
    link: bool = False,
    name: str | None = None,
) -> Pid:
    """Start a process running `fn(*args)` (a plain or `async def` function).

    With `link=True` it is linked to the caller before it runs; with `name`
    it is registered under that name (raises `BadArg` if taken).
    """
    proc = current()
    return proc.node.spawn(fn, args, link_to=proc if link else None, name=name)


def spawn_link(fn: Callable[..., Term], *args: Term, name: str | None = None) -> Pid:
    """`spawn` and link to the caller, atomically (Erlang's `spawn_link`)."""
    return spawn(fn, *args, link=True, name=name)


def spawn_monitor(fn: Callable[..., Term], *args: Term) -> tuple[Pid, Ref]:
    """`spawn` and monitor from the caller, atomically: returns `(pid, ref)`."""
    proc = current()
    pid = proc.node.spawn(fn, args, link_to=None, name=None)
    return pid, proc.node.monitor(proc, pid)


def send(dest: Dest, msg: Term) -> Term:
    """Send `msg` to `dest` and return `msg` (Erlang's `!`).

    `dest` is a pid (a dead one is a no-op), a registered name (raises
    `BadArg` if nobody has it, as Erlang does), `(name, node)`, or a
    via-name `("via", module, key)`.
    """
    current().node.send(dest, msg)
    return msg


async def receive(
    match: Callable[[Term], bool] | None = None,
    timeout: float | None = None,
) -> Term:
    """Take a message from the mailbox: the first for which `match(msg)` is
    true (or the first at all), leaving the others in order. Waits up to
    `timeout` seconds (forever when None) and then raises `TimeoutError`.

    Only the messages skipped by `match` cost anything: a receive that takes
    the first message is O(1) however long the queue is.
    """
    proc = current()
    mb = proc.mailbox
    if mb:
        if proc.node.long_queues:
            proc.node.queue_shortened(proc, len(mb) - 1)
        if match is None:
            return mb.popleft()
        for i, msg in enumerate(mb):
            if match(msg):
                del mb[i]
                return msg
    if timeout is not None and timeout <= 0:
        raise TimeoutError("receive timed out")
    fut = proc.park(match, timeout)
    try:
        return await fut
    finally:
        proc.unpark(fut)


class Deadlines:
    """The receive timeouts of one node: one heap, one armed loop timer.

    Every `GenServer.call` waits with a timeout, and a `TimerHandle` per
    wait (made, then cancelled when the reply comes) costs ~2.5 µs; a heap
    entry costs ~0.3 µs. Finished waits are not removed when they finish:
    they leave from the top of the heap as soon as they reach it, and the
    heap is compacted when they outnumber the live ones (what asyncio does
    with its cancelled timers).
    """

    __slots__ = ("_armed", "_compact_at", "_handle", "_heap", "_loop", "_seq")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Future[Term]]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed = 0.0
        self._compact_at = 1024

    def add(self, timeout: float, fut: asyncio.Future[Term]) -> None:
        heap = self._heap
        while heap and heap[0][2].done():
            heapq.heappop(heap)
        if len(heap) >= self._compact_at:
            # Sweep out finished waits, then let the heap double before the
            # next sweep: O(1) per add amortized, however many are waiting.
            heap[:] = [e for e in heap if not e[2].done()]
            heapq.heapify(heap)
            self._compact_at = max(1024, 2 * len(heap))
        when = self._loop.time() + timeout
        heapq.heappush(heap, (when, next(self._seq), fut))
        if self._handle is None or when < self._armed:
            self._arm(when)

    def close(self) -> None:
        """Stop the timer (the node is stopping)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        heap = self._heap
        now = self._loop.time()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            fut = heapq.heappop(heap)[2]
            if not fut.done():
                fut.set_exception(TimeoutError("receive timed out"))
        if heap:
            self._arm(heap[0][0])


def link(pid: Pid) -> None:
    """Link the caller and `pid`. Linking to a dead local process raises
    `Exit("noproc")` in the caller (uncaught, it ends the caller with
    `noproc`), or, if the caller traps exits, delivers
    `("EXIT", pid, "noproc")`: OTP's `link/1`. A remote pid that is gone
    sends the exit signal instead, as in OTP."""
    proc = current()
    proc.node.link(proc, pid)


def unlink(pid: Pid) -> None:
    """Remove the link between the caller and `pid`, if any."""
    proc = current()
    proc.node.unlink(proc, pid)


def monitor(target: Dest, *, alias: bool = False) -> Ref:
    """Monitor `target` (a pid or a name): exactly one
    `("DOWN", ref, "process", target, reason)` arrives when it ends, with
    reason `noproc` if it was not alive.

    With `alias=True` the ref is also an alias of the caller (`send(ref, msg)`
    reaches it) until the monitor is removed by `demonitor` or the DOWN, as
    OTP's `monitor(process, Target, [{alias, demonitor}])`: what is sent to it
    afterwards is dropped, which is how a reply that comes too late is kept
    out of the mailbox."""
    proc = current()
    return proc.node.monitor(proc, target, alias=alias)


def demonitor(ref: Ref, flush: bool = False, info: bool = False) -> bool:
    """Turn off the monitor `ref`; with `flush`, also remove its DOWN message
    if it already arrived (OTP's `demonitor(Ref, [flush])`).

    Returns True, as OTP's `demonitor/1,2` does; with `info=True`, whether the
    monitor was still active (False: it had fired, or never existed), as
    `demonitor(Ref, [info])` does. With both, False means a DOWN had arrived
    and was removed (or the ref was never a monitor).
    """
    proc = current()
    active = proc.node.demonitor(proc, ref)
    if flush:
        proc.take(lambda msg: type(msg) is tuple and len(msg) == 5 and msg[1] == ref and msg[0] == DOWN)
    return active if info else True


def exit(pid: Pid, reason: Term) -> None:  # shadows the builtin on purpose: Erlang's name
    """Send an exit signal with `reason` to `pid` (Erlang's `exit/2`).

    `"kill"` cannot be trapped and ends the target with reason `killed`;
    `"normal"` is ignored unless the target traps exits (or is the caller).
    """
    proc = current()
    proc.node.signal_exit(proc.pid, pid, reason, False)
    if not proc.alive:
        raise Exit(proc.exit_reason)


def process_flag(flag: str, value: bool) -> bool:
    """Set a process flag of the caller and return the old value.
    Only `"trap_exit"` is supported."""
    proc = current()
    if flag != "trap_exit":
        raise BadArg(f"unknown process flag {flag!r}")
    old = proc.trap_exit
    proc.trap_exit = bool(value)
    return old


def register(name: str, pid: Pid) -> None:
    """Register `pid` under `name` on this node (raises `BadArg` if the name is
    taken, the pid already has a name, or the process is not alive)."""
    current().node.register(name, pid)


def unregister(name: str) -> None:
    """Remove the registered `name` (raises `BadArg` if not registered)."""
    current().node.unregister(name)


def whereis(name: str) -> Pid | None:
    """The pid registered under `name`, or None."""
    return current().node.whereis(name)


def registered() -> list[str]:
    """All registered names on this node."""
    return current().node.registered()


def make_ref() -> Ref:
    """A reference unique among all connected nodes (Erlang's `make_ref()`)."""
    return current().node.make_ref()


def is_alive(pid: Pid) -> bool:
    """Whether the local process `pid` is alive."""
    return current().node.is_alive(pid)


def process_info(pid: Pid) -> ProcessInfo | None:
    """A snapshot of the local process `pid`, or None if it is not alive."""
    return current().node.process_info(pid)


class Timer:
    """A pending `send_after`; cancel it with `cancel_timer`."""

    __slots__ = ("_handle", "deadline")

    def __init__(self, handle: asyncio.TimerHandle, deadline: float) -> None:
        self._handle = handle
        self.deadline = deadline

    def cancel(self) -> float | None:
        """`cancel_timer(self)`."""
        handle = self._handle
        if handle.cancelled():
            return None
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return None
        handle.cancel()
        return left


def send_after(dest: Dest, msg: Term, seconds: float) -> Timer:
    """Send `msg` to `dest` after `seconds` (Erlang's `erlang:send_after/3`).
    A name is resolved when the timer fires; a dead destination is a no-op."""
    node = current().node
    loop = node.loop
    handle = loop.call_later(max(0.0, seconds), node.send_quietly, dest, msg)
    return Timer(handle, loop.time() + seconds)


def cancel_timer(timer: Timer) -> float | None:
    """Cancel `timer`; return the seconds it had left, or None if it already
    fired or was cancelled (Erlang returns `false`)."""
    return timer.cancel()


async def to_thread(fn: Callable[..., T], *args: object) -> T:
    """Run blocking `fn(*args)` in the node's bounded thread pool while the
    calling process waits and every other process keeps running (what a dirty
    scheduler gives an Erlang NIF)."""
    node = current().node
    return await node.loop.run_in_executor(node.executor, fn, *args)


def monotonic() -> float:
    """Seconds on the node's clock (the event loop's monotonic time)."""
    try:
        return current().node.loop.time()
    except RuntimeError:
        return time.monotonic()

