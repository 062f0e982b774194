"""Trace what processes send, receive and call, with bounded output, as
Erlang's `recon_trace` does: safe on a live node, because tracing stops by
itself after `max` events or when events come faster than `rate`.

Off (the default), the message paths test one attribute of the node and do
nothing else. On, each event is a log line on the `beamish.trace` logger:

    <pid> (name) sent msg to dest
    <pid> (name) received msg
    <pid> (name) called server with request

Targets: a pid, a registered name, a pattern over registered names and
initial calls (`fnmatch`: `"worker*"`, `"*:handle_job"`), a list of those,
or `"all"`. A process matches while it lives; one started later that fits a
pattern is traced too.

>>> import logging, beamish
>>> from beamish import trace
>>> async def main():
...     echo = beamish.spawn(lambda: beamish.receive(), name="echo")
...     lines = []
...     trace.start("echo", max=10, output=lines.append)
...     beamish.send(echo, "hello")
...     trace.stop()
...     return lines
>>> beamish.run(main)
["#PID<2.0 @nonode@nohost> (echo) received 'hello'"]

OTP/recon: mirrors `recon_trace:calls/2,3` limits (a count, or a rate
`{N, Milliseconds}` past which tracing stops) over message events
(`erlang:trace/3`'s `send`, `'receive'`, and calls of behaviours); differs
in tracing messages and calls rather than function calls (Python has
`sys.settrace` for that).
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

from ._atoms import GEN_CALL
from .process import current
from .terms import Pid, Term

if TYPE_CHECKING:
    from .node import Node
    from .process import Process

__all__ = ["start", "stop"]

log = logging.getLogger("beamish.trace")

Event = Literal["send", "receive", "call"]

tracing = 0
"""How many nodes of this process trace now: `GenServer.call` tests it (and
telemetry's flag) before looking for its node's tracer."""
Target = Pid | str


class Tracer:
    """A node's active trace: what it matches, what it has emitted."""

    def __init__(
        self,
        node: Node,
        targets: Iterable[Target],
        events: Iterable[Event],
        max_events: int,
        rate: tuple[int, float] | None,
        output: Callable[[str], object] | None,
    ) -> None:
        self.node = node
        self.pids = {t for t in targets if type(t) is Pid}
        self.patterns = [t for t in targets if isinstance(t, str)]
        self.all = "all" in self.patterns
        self.events = frozenset(events)
        self.max = max_events
        self.rate = rate
        self.recent: deque[float] = deque()
        self.count = 0
        self.output = output

    def matches(self, proc: Process | None) -> bool:
        if proc is None:
            return False
        if self.all or proc.pid in self.pids:
            return True
        for pattern in self.patterns:
            if (proc.name is not None and fnmatch.fnmatchcase(proc.name, pattern)) or fnmatch.fnmatchcase(
                proc.initial_call, pattern
            ):
                return True
        return False

    def _emit(self, proc: Process, text: str, *args: object) -> None:
        label = f"{proc.pid!r} ({proc.name})" if proc.name else repr(proc.pid)
        line = f"{label} " + (text % args)
        self.count += 1
        if self.output is not None:
            self.output(line)
        else:
            log.info("%s", line)
        if self.count >= self.max:
            self._stop(f"trace: stopped after {self.count} events (max)")
            return
        if self.rate is not None:
            n, seconds = self.rate
            now = time.monotonic()
            self.recent.append(now)
            while self.recent and now - self.recent[0] > seconds:
                self.recent.popleft()
            if len(self.recent) > n:
                self._stop(f"trace: stopped, more than {n} events in {seconds} s")

    def _stop(self, why: str) -> None:
        if self.node.tracer is self:
            _set(self.node, None)
            log.info("%s", why)

    # --- the hooks the message paths call (only while a trace is on) -------

    def sent(self, dest: Term, msg: Term) -> None:
        """A local send from the current process (or a timer) to `dest`."""
        node = self.node
        sender = node.current_process()
        if "send" in self.events and self.matches(sender):
            self._emit(sender, "sent %r to %r", msg, dest)  # type: ignore[arg-type]
        if "receive" in self.events and node.tracer is self:
            self.received(node.lookup(dest), msg)

    def received(self, proc: Process | None, msg: Term) -> None:
        if proc is not None and "receive" in self.events and self.matches(proc):
            self._emit(proc, "received %r", msg)

    def called(self, server: Term, request: Term) -> None:
        """A call from the current process: its `call` event, and the local
        server's `receive` (a local call may skip the mailbox, not the trace)."""
        node = self.node
        caller = node.current_process()
        if "call" in self.events and self.matches(caller):
            self._emit(caller, "called %r with %r", server, request)  # type: ignore[arg-type]
        if "receive" in self.events and node.tracer is self:
            self.received(node.lookup(server), (GEN_CALL, caller.pid if caller else None, request))


def start(
    targets: Target | Iterable[Target],
    events: Iterable[Event] = ("send", "receive", "call"),
    *,
    max: int = 100,
    rate: tuple[int, float] | None = None,
    output: Callable[[str], object] | None = None,
) -> None:
    """Trace `events` of the processes `targets` names on the caller's node,
    replacing any trace already on; stop after `max` events, or as soon as
    more than `rate[0]` come within `rate[1]` seconds. `output` receives each
    line instead of the `beamish.trace` logger."""
    chosen = [targets] if isinstance(targets, str | Pid) else list(targets)
    wanted = set(events)
    unknown = wanted - {"send", "receive", "call"}
    if unknown:
        raise ValueError(f"unknown trace events {sorted(unknown)}: send, receive, call")
    if max < 1:
        raise ValueError("max must be at least 1")
    node = current().node
    _set(node, Tracer(node, chosen, wanted, max, rate, output))


def stop() -> int:
    """Stop tracing on the caller's node; the number of events it emitted."""
    node = current().node
    tracer = node.tracer
    _set(node, None)
    return tracer.count if isinstance(tracer, Tracer) else 0


def _set(node: Node, tracer: Tracer | None) -> None:
    global tracing
    tracing += (tracer is not None) - (node.tracer is not None)
    node.tracer = tracer
