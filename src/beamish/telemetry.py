"""Telemetry events, in the style of Erlang's `:telemetry`: code emits named
events with measurements and metadata, and whoever cares attaches a
handler by id. Nothing is emitted, or costs anything past one flag test,
for an event nobody listens to.

An event name is a tuple of strings. beamish emits:

- `("beamish", "gen_server", "call", "start" | "stop" | "exception")`: a
  span around each `GenServer.call` (and `GenStateMachine.call`, the same
  `gen:call`), in the caller; measurements `monotonic_time` (start) and
  `duration` (seconds, stop and exception); metadata `server`, `request`,
  and for an exception `kind` ("exit") and `reason`;
- `("beamish", "supervisor", "child", "restart")`: a supervisor restarted
  a child; metadata `supervisor`, `child_id`, `reason`, `pid` (the new one);
- `("beamish", "dist", "connection", "up" | "down")`: a node connection
  was made or lost; metadata `node`, `peer` (and `reason` when down).

>>> from beamish import telemetry
>>> seen = []
>>> telemetry.attach("doc", ("my", "job", "done"), lambda event, measurements, metadata, config: seen.append((measurements, metadata, config)), "cfg")
>>> telemetry.execute(("my", "job", "done"), {"items": 3}, {"who": "doc"})
>>> seen
[({'items': 3}, {'who': 'doc'}, 'cfg')]
>>> with telemetry.span(("my", "job"), {"who": "doc"}):
...     pass
>>> [m for m, _, _ in seen[1:]] == []  # nothing attached to ("my", "job", "start"/"stop")
True
>>> telemetry.detach("doc")
True

A handler that raises is detached (and logged once), as `:telemetry` does,
so one bad handler cannot break the code that emits.

OTP/Elixir: mirrors `:telemetry` (`attach/4`, `attach_many/4`, `detach/1`,
`list_handlers/1`, `execute/3`, `span/3`); differs in that durations are
seconds as floats and `span` is a context manager.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["HandlerInfo", "attach", "attach_many", "detach", "execute", "list_handlers", "listened", "span"]

log = logging.getLogger("beamish.telemetry")

Event = tuple[str, ...]
HandlerFn = Callable[[Event, dict[str, Any], dict[str, Any], Any], object]


@dataclass(frozen=True)
class HandlerInfo:
    id: str
    event: Event
    function: HandlerFn
    config: Any


# Per event, a tuple rebuilt on attach/detach: emitting iterates it as is
# (a handler detached meanwhile is still called this once, as :telemetry).
_by_event: dict[Event, tuple[HandlerInfo, ...]] = {}
_by_id: dict[str, list[HandlerInfo]] = {}

CALL_START: Event = ("beamish", "gen_server", "call", "start")
CALL_STOP: Event = ("beamish", "gen_server", "call", "stop")
CALL_EXCEPTION: Event = ("beamish", "gen_server", "call", "exception")
RESTART: Event = ("beamish", "supervisor", "child", "restart")
CONNECTION_UP: Event = ("beamish", "dist", "connection", "up")
CONNECTION_DOWN: Event = ("beamish", "dist", "connection", "down")

calls_watched = False
"""Whether a handler listens to a call event: `GenServer.call` tests only
this flag when none does (the cost of telemetry switched off)."""
call_start: tuple[HandlerInfo, ...] = ()
call_stop: tuple[HandlerInfo, ...] = ()
call_exception: tuple[HandlerInfo, ...] = ()


def _changed() -> None:
    global calls_watched, call_start, call_stop, call_exception
    call_start = _by_event.get(CALL_START, ())
    call_stop = _by_event.get(CALL_STOP, ())
    call_exception = _by_event.get(CALL_EXCEPTION, ())
    calls_watched = bool(call_start or call_stop or call_exception)


def attach(handler_id: str, event: Sequence[str], function: HandlerFn, config: Any = None) -> None:
    """Call `function(event, measurements, metadata, config)` for each
    `event`; raises ValueError if `handler_id` is taken."""
    attach_many(handler_id, [event], function, config)


def attach_many(handler_id: str, events: Iterable[Sequence[str]], function: HandlerFn, config: Any = None) -> None:
    if handler_id in _by_id:
        raise ValueError(f"a telemetry handler {handler_id!r} is attached already")
    infos = [HandlerInfo(handler_id, tuple(e), function, config) for e in events]
    for info in infos:
        if not info.event or not all(isinstance(part, str) for part in info.event):
            raise ValueError(f"an event name is a tuple of strings, not {info.event!r}")
    _by_id[handler_id] = infos
    for info in infos:
        _by_event[info.event] = (*_by_event.get(info.event, ()), info)
    _changed()


def detach(handler_id: str) -> bool:
    """Remove a handler; False if there was none by that id."""
    infos = _by_id.pop(handler_id, None)
    if infos is None:
        return False
    for info in infos:
        handlers = tuple(h for h in _by_event.get(info.event, ()) if h is not info)
        if handlers:
            _by_event[info.event] = handlers
        else:
            _by_event.pop(info.event, None)
    _changed()
    return True


def list_handlers(prefix: Sequence[str] = ()) -> list[HandlerInfo]:
    """The handlers of every event starting with `prefix`."""
    n = len(prefix)
    return [h for event, hs in _by_event.items() if event[:n] == tuple(prefix) for h in hs]


def listened(event: Event) -> bool:
    """Whether a handler is attached to `event` (emitters with costly
    metadata ask first)."""
    return event in _by_event


def execute(event: Sequence[str], measurements: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
    """Emit `event` to its handlers, in the caller (synchronously)."""
    handlers = _by_event.get(event if type(event) is tuple else tuple(event))
    if handlers:
        emit_to(handlers, measurements, metadata if metadata is not None else {})


def emit_to(handlers: tuple[HandlerInfo, ...], measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Emit to handlers looked up already (`call_start`...): the call path's."""
    for info in handlers:
        try:
            info.function(info.event, measurements, metadata, info.config)
        except Exception:
            log.exception("telemetry handler %r failed on %r and is detached", info.id, info.event)
            detach(info.id)


def emit(event: Event, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    """`execute` for beamish's own emitters: `event` is a tuple already."""
    handlers = _by_event.get(event)
    if handlers:
        emit_to(handlers, measurements, metadata)


@contextmanager
def span(prefix: Sequence[str], metadata: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Emit `prefix + ("start",)`, then `("stop",)` with the `duration` in
    seconds, or `("exception",)` with `kind` and `reason` if the block
    raises (re-raised). The block may add to the yielded metadata, which the
    stop event carries."""
    base = tuple(prefix)
    meta = dict(metadata or {})
    start = time.monotonic()
    execute((*base, "start"), {"monotonic_time": start, "system_time": time.time()}, meta)
    try:
        yield meta
    except BaseException as exc:
        execute((*base, "exception"), {"duration": time.monotonic() - start}, {**meta, "kind": type(exc).__name__, "reason": exc})
        raise
    execute((*base, "stop"), {"duration": time.monotonic() - start, "monotonic_time": time.monotonic()}, meta)
