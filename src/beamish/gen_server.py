"""GenServer: a process that keeps state and serves calls and casts.

A GenServer is a class whose callbacks receive the state and return it, as
in Elixir: the server passes the state in, the callback returns a result
holding the new one. Callbacks may be plain functions or `async def`.

>>> import beamish
>>> from beamish import GenServer, Reply, NoReply
>>> class Counter(GenServer):
...     def init(self, start):
...         return start
...     def handle_call(self, request, from_, count):
...         match request:
...             case "get":
...                 return Reply(count, count)
...     def handle_cast(self, request, count):
...         match request:
...             case ("add", n):
...                 return NoReply(count + n)
>>> async def main():
...     pid = await Counter.start_link(10, name="counter")
...     GenServer.cast("counter", ("add", 5))
...     return await GenServer.call(pid, "get")
>>> beamish.run(main)
15

## Client and server

`start_link` / `start` run `init` inside the new process and return its pid
once `init` has finished. `call` waits for a reply (`timeout=5.0` seconds,
None for infinity); `cast` never waits and never fails; `reply` answers a
call later from any process, for a server that returned `NoReply` and kept
`from_`. A server is addressed by pid, registered name, `(name, node)` or a
via-name such as `Registry.via("rooms", "lobby")`.

## Results

`init` returns the state (or `Ok(state, action)`, `Ignore()`, `Stop(reason)`).
`handle_call` returns `Reply(value, state)`, `NoReply(state)` or
`Stop(reason, state, reply=value)`; `handle_cast`, `handle_info` and
`handle_continue` return `NoReply(state)` or `Stop(reason, state)`. The
optional `action` of each result is `Continue(arg)` (run `handle_continue`
before any other message), a number of seconds (an idle timeout: `"timeout"`
reaches `handle_info` if no message arrives in time) or `Hibernate()`.

## Failure

A call to a server that does not exist raises `Exit` with reason `noproc`
at once; one that outlives its `timeout` raises `Exit("timeout")` and the
late reply is dropped, never left in the caller's mailbox; if the server dies
during the call, the caller gets the reason it died with. A callback that
raises ends the server: `terminate` runs, an error report is logged, and its
supervisor decides what happens next. `terminate` also runs on a `Stop`
result, on `GenServer.stop`, and when the parent (its supervisor) shuts it
down while the server traps exits.

OTP: mirrors `gen_server`; differs in that results are typed objects instead
of tuples, and an idle server holds no asyncio task.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from . import _gen, _sys
from ._atoms import BAD_CALL, BAD_CAST, EXIT, GEN_CALL, GEN_CAST, SYSTEM, TIMEOUT
from ._gen import From
from .process import Dest, Exit, Handler, Process
from .terms import Atom, Pid, Term

# Every name here is public as `beamish.<name>` (one path per name).
__all__: list[str] = []

log = logging.getLogger("beamish")


class _Keep:
    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()
"""`Stop`'s default state: keep the current one."""
NO_REPLY: Final = _Keep()


@dataclass(frozen=True, slots=True)
class Continue:
    """Action: run `handle_continue(arg, state)` before any other message."""

    arg: Term


@dataclass(frozen=True, slots=True)
class Hibernate:
    """Action: accepted for OTP compatibility; an idle beamish process is
    already as small as it gets."""


Action = Continue | Hibernate | float | None



# Reply and NoReply are made once per message, so they are not frozen: a
# frozen dataclass's __init__ costs 0.7 µs against 0.3 µs, which is a third of
# a cast's whole cost. Treat them as immutable all the same.
@dataclass(slots=True)
class Reply:
    """Reply `value` to the caller and continue with `state`."""

    value: Term
    state: Term
    action: Action = None


@dataclass(slots=True)
class NoReply:
    """Continue with `state` without replying (yet)."""

    state: Term
    action: Action = None


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop with `reason`; `terminate(reason, state)` runs first. From
    `handle_call`, `reply` is sent to the caller before stopping."""

    reason: Term
    state: Term = KEEP
    reply: Term = NO_REPLY


@dataclass(frozen=True, slots=True)
class Ignore:
    """From `init`: do not start; `start_link` raises `StartError("ignore")`
    and a supervisor records the child as not running."""


@dataclass(frozen=True, slots=True)
class Ok:
    """From `init`: start with `state` and an `action` (Elixir's `{:ok, state, action}`)."""

    state: Term
    action: Action = None


CallResult = Reply | NoReply | Stop
"""What `handle_call` returns (or an async `handle_call` resolves to)."""
CastResult = NoReply | Stop
"""What `handle_cast`, `handle_info` and `handle_continue` return."""

_CONTINUE: Final = Atom("$continue")


class GenServer(_gen.Behaviour):
    """Base class of generic servers; subclass it and override the callbacks.

    The client API (`start_link`, `start`, `child_spec`, `call`, `cast`,
    `reply`, `stop`, `whereis`) is every behaviour's, from `_gen.Behaviour`.
    Class keywords set the default child spec, like `use GenServer, restart: :transient`:
    `class Worker(GenServer, restart="transient", shutdown=10.0): ...`
    """

    _behaviour: ClassVar[str] = "GenServer"

    # --- callbacks ------------------------------------------------------------

    def init(self, arg: Term) -> Term | Awaitable[Term]:
        """Runs in the new process before `start_link` returns (OTP `init/1`).

        Return the initial state, `Ok(state, action)`, `Ignore()` or
        `Stop(reason)`. Default: the state is `arg`.
        """
        return arg

    def handle_call(self, request: Term, from_: From, state: Term) -> CallResult | Awaitable[CallResult]:
        """A `call` arrived (OTP `handle_call/3`). Default: stop with
        `("bad_call", request)`, as Elixir does."""
        return Stop((BAD_CALL, request), state)

    def handle_cast(self, request: Term, state: Term) -> CastResult | Awaitable[CastResult]:
        """A `cast` arrived (OTP `handle_cast/2`). Default: stop with `("bad_cast", request)`."""
        return Stop((BAD_CAST, request), state)

    def handle_info(self, msg: Term, state: Term) -> CastResult | Awaitable[CastResult]:
        """Any other message arrived (OTP `handle_info/2`). Default: log it and
        keep the state."""
        log.warning("%s received unexpected message in handle_info: %r", type(self).__qualname__, msg)
        return NoReply(state)

    def handle_continue(self, arg: Term, state: Term) -> CastResult | Awaitable[CastResult]:
        """A `Continue(arg)` action asked for this (OTP `handle_continue/2`)."""
        raise NotImplementedError(f"{type(self).__qualname__} returned Continue but has no handle_continue")

    def terminate(self, reason: Term, state: Term) -> Term | Awaitable[Term]:
        """The server is stopping with `reason` (OTP `terminate/2`). Runs on a
        `Stop` result, a crash in a callback, `GenServer.stop`, and a shutdown
        from the parent when the server traps exits. Default: nothing."""
        return None

    # --- internals ------------------------------------------------------------

    @classmethod
    async def _init_loop(cls, proc: Process, parent: Pid, arg: Term, name: Dest | None) -> Handler | None:
        loop = _Loop(proc, cls(), name)
        loop.parent = parent
        return await loop.init(arg)


class _Loop:
    """One server's loop state (OTP keeps it in gen_server's loop arguments)."""

    __slots__ = ("idle", "last", "mod", "name", "node", "parent", "proc", "state", "sys")

    otp_module = "gen_server"

    def __init__(self, proc: Process, mod: GenServer, name: Dest | None) -> None:
        self.proc = proc
        self.node = proc.node
        self.mod = mod
        self.name = name
        self.parent: Pid = proc.pid
        self.state: Term = None
        self.idle: object = None  # the pending idle-timeout token
        self.last: Term = None
        self.sys: _sys.SysState | None = None  # suspended, traced, counted (`beamish.sys`)

    async def init(self, arg: Term) -> Handler | None:
        result: Term = self.mod.init(arg)
        if _gen.is_coroutine(result):
            result = await result
        t = type(result)
        if t is Ignore:
            return None
        if t is Stop:
            raise Exit(result.reason)
        if t is Ok:
            self.state = result.state
            self._action(result.action, initial=True)
        elif t in (Reply, NoReply):
            raise _bad_return(self.mod, "init", result)
        else:
            self.state = result
        return self.handle

    def _action(self, action: Action, initial: bool = False) -> Awaitable[None] | None:
        if action is None or type(action) is Hibernate:
            return None
        if type(action) is Continue:
            if initial:
                # Runs before anything already queued, as OTP's init continue does.
                proc = self.proc
                if proc.mailbox is None:
                    proc.mailbox = deque()
                proc.mailbox.appendleft((_CONTINUE, action.arg))
                return None
            return self.run(self.mod.handle_continue, (action.arg, self.state), None, "handle_continue")
        if isinstance(action, int | float):
            token = object()
            self.idle = token
            self.node.loop.call_later(action, self.proc.deliver, token)
            return None
        raise _bad_return(self.mod, "a callback (action)", action)

    def handle(self, msg: Term) -> Awaitable[None] | None:
        """The process's message handler: pick the callback for `msg`."""
        if self.idle is not None:
            if msg is self.idle:
                self.idle = None
                msg = TIMEOUT
            else:
                self.idle = None
        self.last = msg
        if type(msg) is tuple:
            n = len(msg)
            if n == 2:
                tag = msg[0]
                if tag is GEN_CAST or tag == GEN_CAST:
                    # The hot path, inlined: a sync handle_cast returning a
                    # plain NoReply (`run` and `apply` do the general case).
                    result: Term
                    try:
                        result = self.mod.handle_cast(msg[1], self.state)
                    except Exception as exc:
                        return self.crashed(exc)
                    if type(result) is NoReply and result.action is None:
                        self.state = result.state
                        return None
                    if _gen.is_coroutine(result):
                        return self._await(result, None, "handle_cast")
                    return self.apply(result, None, "handle_cast")
                if tag is _CONTINUE:
                    return self.run(self.mod.handle_continue, (msg[1], self.state), None, "handle_continue")
            elif n == 3:
                tag = msg[0]
                if tag is GEN_CALL or tag == GEN_CALL:
                    from_ = msg[1]
                    try:
                        result = self.mod.handle_call(msg[2], from_, self.state)
                    except Exception as exc:
                        return self.crashed(exc)
                    if type(result) is Reply and result.action is None:
                        self.state = result.state
                        self.node.reply(from_, result.value)
                        return None
                    if _gen.is_coroutine(result):
                        return self._await(result, from_, "handle_call")
                    return self.apply(result, from_, "handle_call")
                if tag == EXIT and msg[1] == self.parent and self.proc.trap_exit:
                    return self.terminate(msg[2])
                if tag == SYSTEM:
                    return self.system(msg[1], msg[2])
        elif type(msg) is object:
            return None  # a stale idle-timeout token
        return self.run(self.mod.handle_info, (msg, self.state), None, "handle_info")

    def run(
        self, fn: Callable[..., Term], args: tuple[Term, ...], from_: Term, what: str
    ) -> Awaitable[None] | None:
        try:
            result = fn(*args)
        except Exception as exc:
            return self.crashed(exc)
        if _gen.is_coroutine(result):
            return self._await(result, from_, what)
        return self.apply(result, from_, what)

    async def _await(self, pending: Awaitable[Term], from_: Term, what: str) -> None:
        try:
            result = await pending
        except Exception as exc:
            nxt = self.crashed(exc)
        else:
            nxt = self.apply(result, from_, what)
        if nxt is not None:
            await nxt

    def apply(self, result: Term, from_: Term, what: str) -> Awaitable[None] | None:
        t = type(result)
        if t is NoReply:
            self.state = result.state
            action = result.action
        elif t is Reply and from_ is not None:
            self.state = result.state
            self.node.reply(from_, result.value)
            action = result.action
        elif t is Stop:
            if result.state is not KEEP:
                self.state = result.state
            if result.reply is not NO_REPLY:
                if from_ is None:
                    return self.crashed(_bad_return(self.mod, what, result))
                self.node.reply(from_, result.reply)
            return self.terminate(result.reason)
        else:
            return self.crashed(_bad_return(self.mod, what, result))
        if action is None:
            return None
        return self._action(action)

    def system(self, from_: Term, request: Term) -> Awaitable[None] | None:
        return _sys.handle(self, from_, request)

    # What `beamish._sys` asks of a gen_server (its system_* callbacks).

    def sys_get_state(self) -> Term:
        return self.state

    def sys_replace_state(self, fn: Callable[[Term], Term]) -> Term:
        self.state = fn(self.state)
        return self.state

    def sys_status(self) -> Term:
        name = self.proc.name or repr(self.proc.pid)
        return [
            (Atom("header"), f"Status for generic server {name}"),
            (Atom("data"), [("State", self.state)]),
        ]

    def sys_terminate(self, reason: Term) -> Awaitable[None] | None:
        return self.terminate(reason)

    def crashed(self, exc: BaseException) -> Awaitable[None] | None:
        if isinstance(exc, Exit):
            # `raise Exit(reason)` in a callback is `exit(Reason)`: a stop with that reason.
            return self.terminate(exc.exit_reason)
        return self.terminate(exc, crashed=exc)

    def terminate(self, reason: Term, crashed: BaseException | None = None) -> Awaitable[None] | None:
        try:
            result = self.mod.terminate(reason, self.state)
        except Exception as exc:
            # OTP: an exception in terminate replaces the reason.
            self.finish(exc, exc)
            return None
        if _gen.is_coroutine(result):
            return self._await_terminate(result, reason, crashed)
        self.finish(reason, crashed)
        return None

    async def _await_terminate(self, pending: Awaitable[Term], reason: Term, crashed: BaseException | None) -> None:
        try:
            await pending
        except Exception as exc:
            self.finish(exc, exc)
            return
        self.finish(reason, crashed)

    def finish(self, reason: Term, crashed: BaseException | None) -> None:
        proc = self.proc
        if not _gen.is_normal_stop(reason):
            log.error(
                "GenServer %r (%s) terminating\n** Last message in was %r\n** When server state == %r\n** Reason for termination == %r",
                proc.pid,
                proc.name or type(self.mod).__qualname__,
                self.last,
                self.state,
                reason,
                exc_info=crashed,
                extra={"beamish_pid": proc.pid, "beamish_name": proc.name},
            )
        proc.exit(reason)


def _bad_return(mod: object, callback: str, value: Term) -> TypeError:
    hint = ""
    if type(value).__module__ == "beamish.gen_statem":
        # Two behaviours, two `Reply`s and `Stop`s: name the right import.
        hint = (
            f" ({type(value).__name__} from beamish.gen_statem is a GenStateMachine result;"
            " a GenServer returns beamish.Reply(value, state), beamish.NoReply or beamish.Stop)"
        )
    return TypeError(
        f"{type(mod).__qualname__}.{callback} returned an invalid result {value!r}; "
        "expected Reply, NoReply or Stop (init: a state, Ok, Ignore or Stop)" + hint
    )
