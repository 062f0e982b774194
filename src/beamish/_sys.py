"""OTP's `sys` on the process side (`sys:handle_system_msg/6`): what every
behaviour process does with a `{system, From, Request}` message, written
once for GenServer and GenStateMachine (their loops only say how to read,
replace and show their state, and how to terminate).

Requests, as OTP's `sys` module sends them (from beamish's `beamish.sys`
or from Erlang's own `sys:get_state({Name, 'py@host'})`):
`get_state`, `{replace_state, Fun}`, `get_status`, `suspend`, `resume`,
`{debug, {statistics, true | false | get}}`, `{debug, {trace, true | false}}`,
`{terminate, Reason}`. Replies have OTP's shapes (`{error, {callback_failed,
Fun, {Class, Reason}}}` when a replace function fails, the state unchanged).

A suspended process handles system messages only; what else arrives waits,
in order, until `resume`. It costs nothing while nobody uses it: the loop's
handler is swapped for a suspended or tracing one, never tested per message.

>>> from beamish._sys import SysState
>>> SysState().suspended
False
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Protocol

from ._atoms import ERROR, OK, SYSTEM
from .terms import Atom, Pid, Term

if TYPE_CHECKING:
    from .process import Handler, Process

__all__: list[str] = []

log = logging.getLogger("beamish.sys")

CALLBACK_FAILED: Final = Atom("callback_failed")
UNKNOWN_SYSTEM_MSG: Final = Atom("unknown_system_msg")
STATUS: Final = Atom("status")
MODULE: Final = Atom("module")
RUNNING: Final = Atom("running")
SUSPENDED: Final = Atom("suspended")
NO_STATISTICS: Final = Atom("no_statistics")


class SysLoop(Protocol):
    """What a behaviour's loop offers `handle` (gen_server's and gen_statem's
    `system_get_state`, `system_replace_state`, `format_status`...)."""

    proc: Process
    parent: Pid
    sys: SysState | None
    otp_module: str  # "gen_server" or "gen_statem", for get_status

    def handle(self, msg: Term) -> Awaitable[None] | None: ...
    def sys_get_state(self) -> Term: ...
    def sys_replace_state(self, fn: Callable[[Term], Term]) -> Term: ...
    def sys_status(self) -> Term: ...
    def sys_terminate(self, reason: Term) -> Awaitable[None] | None: ...


class SysState:
    """A process's `sys` state: suspended (and what waits), statistics, trace."""

    __slots__ = ("held", "stats", "suspended", "trace")

    def __init__(self) -> None:
        self.suspended = False
        self.held: deque[Term] = deque()
        self.stats: tuple[float, int] | None = None  # (start wall time, handled then)
        self.trace = False


def is_system(msg: Term) -> bool:
    return type(msg) is tuple and len(msg) == 3 and msg[0] == SYSTEM


def handle(loop: SysLoop, from_: Term, request: Term) -> Awaitable[None] | None:
    """Answer one system message (`do_cmd/6`)."""
    from .node import Node

    state = loop.sys
    node: Node = loop.proc.node
    reply: Term
    match request:
        case "get_state":
            reply = loop.sys_get_state()
        case ("replace_state", fn):
            if not callable(fn):
                # An Erlang fun cannot run here: it fails as a fun that
                # raises does in OTP (the caller exits, the state stays).
                reply = (ERROR, (CALLBACK_FAILED, fn, (ERROR, Atom("undef"))))
            else:
                try:
                    reply = loop.sys_replace_state(fn)
                except Exception as exc:
                    reply = (ERROR, (CALLBACK_FAILED, fn, (ERROR, exc)))
        case "get_status":
            sys_state = SUSPENDED if state is not None and state.suspended else RUNNING
            misc = loop.sys_status()
            reply = (STATUS, loop.proc.pid, (MODULE, Atom(loop.otp_module)), [[], sys_state, loop.parent, [], misc])
        case "suspend":
            _suspend(loop)
            reply = OK
        case "resume":
            _resume(loop)
            reply = OK
        case ("debug", ("statistics", flag)):
            reply = _statistics(loop, flag)
        case ("debug", ("trace", flag)) if isinstance(flag, bool):
            _state(loop).trace = flag
            _install(loop)
            reply = OK
        case ("terminate", reason):
            node.reply(from_, OK)
            return loop.sys_terminate(reason)
        case _:
            reply = (ERROR, (UNKNOWN_SYSTEM_MSG, request))
    node.reply(from_, reply)
    return None


def _state(loop: SysLoop) -> SysState:
    if loop.sys is None:
        loop.sys = SysState()
    return loop.sys


def _statistics(loop: SysLoop, flag: Term) -> Term:
    state = _state(loop)
    proc = loop.proc
    if flag is True:
        state.stats = (time.time(), proc.handled)
        return OK
    if flag is False:
        state.stats = None
        return OK
    if flag == "get":
        if state.stats is None:
            return (OK, NO_STATISTICS)
        start, handled = state.stats
        now = time.time()
        return (OK, [
            (Atom("start_time"), _datetime(start)),
            (Atom("current_time"), _datetime(now)),
            (Atom("reductions"), proc.handled),
            (Atom("messages_in"), proc.handled - handled),
        ])  # fmt: skip
    return (ERROR, (UNKNOWN_SYSTEM_MSG, ("statistics", flag)))


def _datetime(t: float) -> Term:
    """`calendar:local_time()`'s shape, as OTP's statistics report times."""
    tm = time.localtime(t)
    return ((tm.tm_year, tm.tm_mon, tm.tm_mday), (tm.tm_hour, tm.tm_min, tm.tm_sec))


def _suspend(loop: SysLoop) -> None:
    state = _state(loop)
    if state.suspended:
        return
    state.suspended = True
    # What is queued now (but system messages and the parent's EXIT) waits too.
    mb = loop.proc.mailbox
    if mb:
        keep = [m for m in mb if _passes(loop, m)]
        state.held.extend(m for m in mb if not _passes(loop, m))
        mb.clear()
        mb.extend(keep)
    _install(loop)


def _resume(loop: SysLoop) -> None:
    state = loop.sys
    if state is None or not state.suspended:
        return
    state.suspended = False
    held, state.held = state.held, deque()
    _install(loop)
    loop.proc.requeue_front(held)


def _passes(loop: SysLoop, msg: Term) -> bool:
    """What a suspended process still handles (`suspend_loop/6`)."""
    return is_system(msg) or (
        type(msg) is tuple and len(msg) == 3 and msg[0] == "EXIT" and msg[1] == loop.parent and loop.proc.trap_exit
    )


def _install(loop: SysLoop) -> None:
    """Give the process the handler its sys state calls for: the loop's own
    (nothing to do per message), or a wrapper that holds or traces."""
    state = loop.sys
    proc = loop.proc
    base: Handler = loop.handle
    if state is None or (not state.suspended and not state.trace):
        proc.set_handler(base)
        return
    handler = base
    if state.trace:
        name = proc.name or repr(proc.pid)

        def traced(msg: Term, inner: Handler = handler) -> Awaitable[None] | None:
            log.info("*DBG* %s got %r", name, msg)
            return inner(msg)

        handler = traced
    if state.suspended:

        def suspended(msg: Term, inner: Handler = handler, held: deque[Term] = state.held) -> Awaitable[None] | None:
            if _passes(loop, msg):
                return inner(msg)
            held.append(msg)
            return None

        handler = suspended
    proc.set_handler(handler)
