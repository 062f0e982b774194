"""GenEvent: one event manager process, any number of handlers.

An event manager receives events and hands each one to every installed
handler in turn; each handler keeps its own state. Handlers come and go at
runtime; a handler that raises is removed (and reported) while the manager
and the other handlers carry on.

>>> import beamish
>>> from beamish import Ok, Reply
>>> from beamish import GenEvent
>>> from beamish.gen_event import EventHandler
>>> class Collect(EventHandler):
...     def init(self, arg):
...         return []
...     def handle_event(self, event, seen):
...         return Ok([*seen, event])
...     def handle_call(self, request, seen):
...         return Reply(seen, seen)
>>> async def main():
...     mgr = await GenEvent.start_link(name="events")
...     await GenEvent.add_handler("events", Collect, None)
...     GenEvent.notify("events", "started")
...     await GenEvent.sync_notify("events", "ready")
...     return await GenEvent.call("events", Collect, "get")
>>> beamish.run(main)
['started', 'ready']

## Handlers

A handler is a class deriving from `EventHandler`, identified by the class,
or by `(cls, id)` to install several of one class (OTP's `{Module, Id}`).
Its callbacks return typed results, checked as GenServer's are:
`Ok(new_state)` (OTP's `{ok, State}`) or `REMOVE` from `handle_event` and
`handle_info`, `Reply(reply, new_state)` (`{ok, Reply, State}`) from
`handle_call`; `init` returns the state (or `Ok(state)`). Anything else (a
forgotten `return` gives None) removes the handler with a `TypeError` that
names the callback and what was expected, as OTP removes a handler that
returns a bad value. Callbacks may be `async def`. `Ok` and `Reply` are
GenServer's (`from beamish import Ok, Reply`).

`add_sup_handler` links the handler to the process that added it: when
the handler is removed that process receives `("gen_event_EXIT", handler,
reason)` (reason `"normal"` on delete, `("swapped", new, pid)` on a swap,
`("EXIT", exception)` after a crash, `"shutdown"` when the manager stops),
and when that process dies, the handler is removed.

OTP: mirrors gen_event (add_handler, add_sup_handler, delete_handler,
swap_handler, notify, sync_notify, call, which_handlers, stop); differs in
that results are the typed `Ok`/`Reply` instead of `{ok, ...}` tuples, there
is no `{swap_handler, ...}` result nor removal from `handle_call`, and
`add_handler` raises `StartError` when the handler's init fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final

from . import _gen
from ._atoms import EXIT, OK, REMOVE_HANDLER, SHUTDOWN, STOP
from ._gen import From, StartError
from .gen_server import GenServer, NoReply, Ok, Reply
from .process import Dest, current, link, process_flag, send, unlink
from .terms import Atom, Pid, Term

# GenEvent is public as `beamish.GenEvent`; these are gen_event's own.
__all__ = ["REMOVE", "EventHandler", "EventResult"]

log = logging.getLogger("beamish.gen_event")

REMOVE: Final = REMOVE_HANDLER
"""Returned by a callback: remove this handler (OTP's `remove_handler`)."""

EventResult = Ok | Atom
"""What `handle_event` and `handle_info` return: `Ok(state)` or `REMOVE`."""

GEN_EVENT_EXIT: Final = Atom("gen_event_EXIT")


class EventHandler:
    """Base class of event handlers; override what you need."""

    def init(self, arg: Term) -> Term | Awaitable[Term]:
        """Install: return the handler's state (OTP `init/1`)."""
        return arg

    def handle_event(self, event: Term, state: Term) -> EventResult | Awaitable[EventResult]:
        """An event was notified (OTP `handle_event/2`): `Ok(new_state)`, or
        REMOVE. Default: keep the state."""
        return Ok(state)

    def handle_call(self, request: Term, state: Term) -> Reply | Awaitable[Reply]:
        """A `GenEvent.call` for this handler: `Reply(reply, new_state)`.
        Default: reply `ok`."""
        return Reply(OK, state)

    def handle_info(self, msg: Term, state: Term) -> EventResult | Awaitable[EventResult]:
        """Any other message to the manager (OTP `handle_info/2`): as
        `handle_event`. Default: keep the state."""
        return Ok(state)

    def terminate(self, reason: Term, state: Term) -> Term | Awaitable[Term]:
        """The handler is removed; the return value goes back to `delete_handler`."""
        return None


HandlerId = Term  # a class, or (class, id)


@dataclass
class _Installed:
    id: HandlerId
    obj: EventHandler
    state: Term
    owner: Pid | None  # the adder, for sup handlers


async def _maybe(value: Term) -> Term:
    if asyncio.iscoroutine(value):
        return await value
    return value


def _cls_of(handler: HandlerId) -> type[EventHandler]:
    cls = handler[0] if isinstance(handler, tuple) else handler
    if not (isinstance(cls, type) and issubclass(cls, EventHandler)):
        raise TypeError(f"not an event handler: {handler!r}")
    return cls


class GenEvent:
    """The client API of an event manager."""

    @staticmethod
    async def start_link(*, name: Dest | None = None) -> Pid:
        return await _Manager.start_link(None, name=name)

    @staticmethod
    async def start(*, name: Dest | None = None) -> Pid:
        return await _Manager.start(None, name=name)

    @staticmethod
    async def add_handler(mgr: Dest, handler: HandlerId, arg: Term = None) -> None:
        """Install `handler`; raises `StartError` if its init fails or it is
        already installed."""
        _raise(await _gen.call(mgr, ("add", handler, arg, None), None))

    @staticmethod
    async def add_sup_handler(mgr: Dest, handler: HandlerId, arg: Term = None) -> None:
        """`add_handler`, supervised by the caller (see the module doc)."""
        _raise(await _gen.call(mgr, ("add", handler, arg, current().pid), None))

    @staticmethod
    async def delete_handler(mgr: Dest, handler: HandlerId, arg: Term = None) -> Term:
        """Remove `handler`; returns what its `terminate(arg, state)` returned.
        Raises LookupError if it is not installed."""
        return _raise(await _gen.call(mgr, ("delete", handler, arg), None))

    @staticmethod
    async def swap_handler(mgr: Dest, old: tuple[HandlerId, Term], new: tuple[HandlerId, Term]) -> None:
        """Replace `old[0]` by `new[0]`: the old terminate's return is passed
        to the new handler's init as `(new_arg, returned)`."""
        _raise(await _gen.call(mgr, ("swap", old, new, None), None))

    @staticmethod
    async def swap_sup_handler(mgr: Dest, old: tuple[HandlerId, Term], new: tuple[HandlerId, Term]) -> None:
        _raise(await _gen.call(mgr, ("swap", old, new, current().pid), None))

    @staticmethod
    def notify(mgr: Dest, event: Term) -> None:
        """Send `event` to every handler, without waiting."""
        GenServer.cast(mgr, ("notify", event))

    @staticmethod
    async def sync_notify(mgr: Dest, event: Term, timeout: float | None = 5.0) -> None:
        """Send `event` and return once every handler has handled it."""
        await _gen.call(mgr, ("notify", event), timeout)

    @staticmethod
    async def call(mgr: Dest, handler: HandlerId, request: Term, timeout: float | None = 5.0) -> Term:
        """Ask one handler; raises LookupError (`bad_module`) if not installed."""
        return _raise(await _gen.call(mgr, ("call", handler, request), timeout))

    @staticmethod
    async def which_handlers(mgr: Dest) -> list[HandlerId]:
        return await _gen.call(mgr, "which_handlers", None)  # type: ignore[no-any-return]

    @staticmethod
    async def stop(mgr: Dest, reason: Term = "normal", timeout: float | None = None) -> None:
        await _gen.stop(mgr, Atom(reason) if type(reason) is str else reason, timeout)


def _raise(result: Term) -> Term:
    if type(result) is tuple and len(result) == 2 and result[0] == "$error":
        exc = result[1]
        if isinstance(exc, BaseException):
            raise exc
        raise StartError(exc)
    return result


class _Manager(GenServer):
    def init(self, _: Term) -> list[_Installed]:
        process_flag("trap_exit", True)
        return []

    async def handle_call(self, request: Term, from_: From, hs: list[_Installed]) -> Reply:
        match request:
            case ("add", handler, arg, owner):
                return Reply(await self._add(hs, handler, arg, owner), hs)
            case ("delete", handler, arg):
                h = _find(hs, handler)
                if h is None:
                    return Reply(("$error", LookupError(f"handler {handler!r} is not installed")), hs)
                return Reply(await self._remove(hs, h, arg, "normal"), hs)
            case ("swap", (old, arg1), (new, arg2), owner):
                h = _find(hs, old)
                returned = None
                if h is not None:
                    returned = await self._remove(hs, h, arg1, ("swapped", new, owner or h.owner))
                return Reply(await self._add(hs, new, (arg2, returned), owner if owner is not None else (h.owner if h else None)), hs)
            case ("notify", event):
                await self._dispatch(hs, "handle_event", event)
                return Reply(OK, hs)
            case ("call", handler, req):
                h = _find(hs, handler)
                if h is None:
                    return Reply(("$error", LookupError(f"bad_module: {handler!r} is not installed")), hs)
                try:
                    result = await _maybe(h.obj.handle_call(req, h.state))
                    if type(result) is not Reply or result.action is not None:
                        raise _bad_return(h, "handle_call", result, "Reply(reply, new_state)")
                except Exception as exc:
                    await self._crashed(hs, h, exc)
                    return Reply(("$error", StartError(("EXIT", exc))), hs)
                h.state = result.state
                return Reply(result.value, hs)
            case "which_handlers":
                return Reply([h.id for h in hs], hs)
        return Reply(("$error", ValueError(f"unknown request {request!r}")), hs)

    async def handle_cast(self, request: Term, hs: list[_Installed]) -> NoReply:
        if type(request) is tuple and request[0] == "notify":
            await self._dispatch(hs, "handle_event", request[1])
        return NoReply(hs)

    async def handle_info(self, msg: Term, hs: list[_Installed]) -> NoReply:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == EXIT:
            owned = [h for h in hs if h.owner == msg[1]]
            if owned:
                for h in owned:
                    h.owner = None  # the adder is gone: nobody to notify
                    await self._remove(hs, h, (STOP, msg[2]), None)
                return NoReply(hs)
        await self._dispatch(hs, "handle_info", msg)
        return NoReply(hs)

    async def terminate(self, reason: Term, hs: Term) -> None:
        if isinstance(hs, list):
            for h in list(hs):
                await self._remove(hs, h, STOP, SHUTDOWN)

    # --- internals --------------------------------------------------------------

    async def _add(self, hs: list[_Installed], handler: HandlerId, arg: Term, owner: Pid | None) -> Term:
        if _find(hs, handler) is not None:
            return ("$error", ("already_present", handler))
        try:
            obj = _cls_of(handler)()
            state = await _maybe(obj.init(arg))
            if type(state) is Ok:
                if state.action is not None:
                    raise _bad_return(handler, "init", state, "a state or Ok(state), without an action")
                state = state.state
        except Exception as exc:
            return ("$error", StartError(("EXIT", exc)))
        hs.append(_Installed(handler, obj, state, owner))
        if owner is not None:
            link(owner)
        return OK

    async def _dispatch(self, hs: list[_Installed], callback: str, msg: Term) -> None:
        for h in list(hs):
            try:
                new = await _maybe(getattr(h.obj, callback)(msg, h.state))
                if new is not REMOVE and (type(new) is not Ok or new.action is not None):
                    raise _bad_return(h, callback, new, "Ok(new_state) or REMOVE")
            except Exception as exc:
                await self._crashed(hs, h, exc)
                continue
            if type(new) is Ok:
                h.state = new.state
            else:
                await self._remove(hs, h, REMOVE_HANDLER, "normal")

    async def _crashed(self, hs: list[_Installed], h: _Installed, exc: Exception) -> None:
        log.error("** gen_event handler %r crashed.\n** Was installed in %r\n** Reason == %r", h.id, current().pid, exc, exc_info=exc)
        await self._remove(hs, h, ("error", exc), ("EXIT", exc))

    async def _remove(self, hs: list[_Installed], h: _Installed, arg: Term, why: Term) -> Term:
        if h in hs:
            hs.remove(h)
        try:
            returned = await _maybe(h.obj.terminate(arg, h.state))
        except Exception as exc:
            log.error("gen_event handler %r crashed in terminate: %r", h.id, exc)
            returned = ("EXIT", exc)
        if h.owner is not None:
            if not any(o.owner == h.owner for o in hs):
                unlink(h.owner)
            send(h.owner, (GEN_EVENT_EXIT, h.id, Atom(why) if type(why) is str else why))
        return returned


def _bad_return(h: _Installed | HandlerId, callback: str, value: Term, expected: str) -> TypeError:
    handler = h.id if isinstance(h, _Installed) else h
    name = handler.__qualname__ if isinstance(handler, type) else repr(handler)
    return TypeError(f"{name}.{callback} returned an invalid result {value!r}; expected {expected}")


def _find(hs: list[_Installed], handler: HandlerId) -> _Installed | None:
    return next((h for h in hs if h.id == handler), None)
