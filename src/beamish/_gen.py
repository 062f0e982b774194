"""Machinery shared by every behaviour, held once (OTP's `gen.erl` and `proc_lib`).

- `start`: spawn a behaviour process, register its name, run its init inside
  it and wait for the acknowledgement (proc_lib's start with ack).
- `call`: monitor the server with an alias, send with the tag `[alias | Ref]`,
  then wait for the reply, a DOWN or the timeout; a late reply is dropped
  because the alias is gone.
- `reply`, `stop`, `resolve` (which raises `noproc`), and `ChildSpec`, the
  shape a supervisor starts children from.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import monotonic
from typing import ClassVar, Final, Literal, Protocol, TypeAlias

from . import telemetry, trace
from ._atoms import (
    ALREADY_STARTED,
    CALL,
    CALLING_SELF,
    DOWN,
    ERROR,
    GEN,
    GEN_CALL,
    GEN_CAST,
    IGNORE,
    KILL,
    KILLED,
    NOCONNECTION,
    NODEDOWN,
    NOPROC,
    NORMAL,
    OK,
    PROC_LIB,
    SHUTDOWN,
    STOP,
    SYSTEM,
    TERMINATE,
    TIMEOUT,
)
from .node import Node
from .process import (
    NO_MESSAGE,
    NOT_YET,
    BadArg,
    Dest,
    Exit,
    From,
    Handler,
    Process,
    _current,
    _name_of,
    current,
    receive,
)
from .terms import Atom, Pid, Ref, Term, alias_tag

__all__ = [
    "Behaviour",
    "ChildSpec",
    "From",
    "StartError",
    "ViaModule",
    "call",
    "reply",
    "resolve",
    "start",
    "stop",
]

ACK: Final = Atom("$ack")


class StartError(Exception):
    """A behaviour failed to start: `reason` is what its init gave (OTP's
    `{error, Reason}`), e.g. `("already_started", pid)`."""

    def __init__(self, reason: Term) -> None:
        super().__init__(reason)
        self.reason: Term = reason


class ViaModule(Protocol):
    """What a `("via", module, key)` name needs from `module` (OTP's via protocol)."""

    def register_name(self, key: Term, pid: Pid) -> bool: ...
    def unregister_name(self, key: Term) -> None: ...
    def whereis_name(self, key: Term) -> Pid | None: ...
    def send(self, key: Term, msg: Term) -> None: ...


Restart: TypeAlias = Literal["permanent", "transient", "temporary"]
Shutdown: TypeAlias = "float | Literal['brutal_kill'] | None"
StartFn: TypeAlias = Callable[..., Awaitable["Pid | None"]]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How a supervisor starts, restarts and stops one child (Elixir's child spec).

    `start` is `(async_fn, args)`; `await async_fn(*args)` must link the new
    process to the caller and return its pid (or None for "ignore"), raising
    `StartError` on failure. `shutdown` is seconds to wait after the
    `shutdown` exit signal before killing, `"brutal_kill"`, or None for
    infinity (the default for supervisors). Unknown fields raise TypeError.
    """

    id: Term
    start: tuple[StartFn, tuple[Term, ...]]
    restart: Restart = "permanent"
    shutdown: float | Literal["brutal_kill"] | None = 5.0
    type: Literal["worker", "supervisor"] = "worker"
    modules: tuple[str, ...] = field(default=())
    significant: bool = False

    def __post_init__(self) -> None:
        if self.restart not in ("permanent", "transient", "temporary"):
            raise ValueError(f"invalid restart {self.restart!r}: permanent, transient or temporary")
        if self.type not in ("worker", "supervisor"):
            raise ValueError(f"invalid type {self.type!r}: worker or supervisor")
        sd = self.shutdown
        if not (sd is None or sd == "brutal_kill" or (isinstance(sd, int | float) and sd >= 0)):
            raise ValueError(f"invalid shutdown {sd!r}: seconds, 'brutal_kill' or None (infinity)")
        fn, args = self.start
        if not callable(fn) or not isinstance(args, tuple):
            raise ValueError(f"invalid start {self.start!r}: (async_fn, args_tuple)")


# --- names -----------------------------------------------------------------


def resolve(node: Node, dest: Dest) -> Pid | tuple[Atom, Atom]:
    """The pid behind `dest`, or `(name, node)` for a remote name; raises
    `Exit("noproc")` when nothing is registered under it."""
    if type(dest) is Pid:
        return dest
    if isinstance(dest, str):
        pid = node.whereis(dest)
        if pid is None:
            raise Exit(NOPROC)
        return pid
    if type(dest) is tuple:
        if len(dest) == 3 and dest[0] == "via":
            found = dest[1].whereis_name(dest[2])
            if found is None:
                raise Exit(NOPROC)
            return found  # type: ignore[no-any-return]
        if len(dest) == 2 and dest[0] == "global":
            via = node.extensions.get("global")
            if via is None:
                raise Exit(NOPROC)
            found = via.whereis_name(dest[1])  # type: ignore[attr-defined]
            if found is None:
                raise Exit(NOPROC)
            return found  # type: ignore[no-any-return]
        if len(dest) == 2:
            name, where = dest
            if where == node.name:
                return resolve(node, name)
            return (Atom(name), Atom(where))
    raise BadArg(f"invalid server reference {dest!r}")


def register_name(node: Node, name: Dest | None, pid: Pid) -> None:
    """Register a starting behaviour; raises `StartError(("already_started", pid))`."""
    if name is None:
        return
    if isinstance(name, str):
        existing = node.whereis(name)
        if existing is not None:
            raise StartError((ALREADY_STARTED, existing))
        node.register(name, pid)
        return
    if type(name) is tuple and len(name) == 3 and name[0] == "via":
        via = name[1]
        if not via.register_name(name[2], pid):
            raise StartError((ALREADY_STARTED, via.whereis_name(name[2])))
        return
    raise BadArg(f"invalid name {name!r}: a str, ('via', module, key) or ('global', name)")


def registers_later(node: Node, name: Dest | None) -> Callable[[Pid], Awaitable[Pid | None]] | None:
    """For a name registered by a cluster-wide protocol (`("global", name)`,
    or a via module whose `register_name` is `async def`): what the new
    process runs to register itself; it returns the pid holding the name
    when the name is taken, else None."""
    if type(name) is not tuple:
        return None
    if len(name) == 2 and name[0] == "global":
        glob = node.extensions.get("global")
        if glob is None:
            raise BadArg("global names need a distributed node (beamish.dist.start)")
        key, via = name[1], glob
    elif len(name) == 3 and name[0] == "via" and inspect.iscoroutinefunction(name[1].register_name):
        key, via = name[2], name[1]
    else:
        return None

    async def register(pid: Pid) -> Pid | None:
        if await via.register_name(key, pid):  # type: ignore[attr-defined]
            return None
        taken: Pid | None = via.whereis_name(key)  # type: ignore[attr-defined]
        return taken

    return register


def unregister_name(node: Node, name: Dest | None) -> None:
    if name is None:
        return
    if isinstance(name, str):
        if node.names.get(name) is not None:
            node.unregister(name)
    elif type(name) is tuple and len(name) == 3 and name[0] == "via" and not inspect.iscoroutinefunction(name[1].unregister_name):
        name[1].unregister_name(name[2])  # an async one (global's): the name goes with the process


# --- start with acknowledgement ----------------------------------------------

InitFn: TypeAlias = Callable[[Process], Awaitable["Handler | None"]]
"""Runs inside the new process; returns its message handler (it then becomes a
behaviour process), or None for "ignore"; raises `Exit` to stop."""


async def start(
    init: InitFn,
    *,
    link: bool,
    name: Dest | None,
    timeout: float | None,
    behaviour: str,
    initial_call: Callable[..., object] | str,
) -> Pid | None:
    """Start a behaviour process and wait until its init has run.

    Returns the pid, or None if init chose to ignore; raises `StartError`
    with the reason if init stopped or crashed, or did not finish in
    `timeout` seconds (the process is then killed).
    """
    caller = current()
    node = caller.node
    label = initial_call if isinstance(initial_call, str) else _name_of(initial_call)
    proc = node.new_process(label)
    proc.behaviour = behaviour
    pid = proc.pid
    later = registers_later(node, name)
    if later is None:
        try:
            register_name(node, name, pid)
        except BaseException:
            node.procs.pop(pid.id, None)
            raise
    if link:
        proc.add_link(caller.pid)
        caller.add_link(pid)
    ref = node.monitor(caller, pid)

    async def body() -> Term:
        if later is not None:
            # As gen:init_it: a global name is registered by the new process
            # itself, before its init; a name taken is `already_started`.
            taken = await later(pid)
            if taken is not None:
                node.send_quietly(caller.pid, (ACK, ref, (ERROR, (ALREADY_STARTED, taken))))
                raise Exit(NORMAL)
        try:
            handler = await init(proc)
        except Exit as e:
            node.send_quietly(caller.pid, (ACK, ref, (ERROR, e.exit_reason)))
            raise
        except Exception as exc:
            node.send_quietly(caller.pid, (ACK, ref, (ERROR, exc)))
            raise
        if handler is None:
            node.send_quietly(caller.pid, (ACK, ref, IGNORE))
            raise Exit(NORMAL)
        proc.become(handler, behaviour)
        node.send_quietly(caller.pid, (ACK, ref, OK))
        return None

    proc.start_task(body, ())

    def is_ack(m: Term) -> bool:
        return type(m) is tuple and (
            (len(m) == 3 and (m[1] is ref or m[1] == ref) and m[0] is ACK)
            or (len(m) == 5 and (m[1] is ref or m[1] == ref) and m[0] == DOWN)
        )

    try:
        msg = await receive(is_ack, timeout)
    except TimeoutError:
        node.demonitor(caller, ref)
        if link:
            node.unlink(caller, pid)
        node.signal_exit(caller.pid, pid, KILL, False)
        flush_down(caller, ref)
        raise StartError(TIMEOUT) from None
    if msg[0] is ACK:
        outcome = msg[2]
        if outcome == "ok":
            node.demonitor(caller, ref)
            flush_down(caller, ref)
            return pid
        # Wait for the process to be gone, as proc_lib does, so a supervisor
        # restarting it never races its own dying child.
        down = await receive(lambda m: type(m) is tuple and len(m) == 5 and (m[1] is ref or m[1] == ref) and m[0] == DOWN)
        if outcome == "ignore":
            return None
        reason = outcome[1] if type(outcome) is tuple else down[4]
        unregister_name(node, name)
        raise StartError(reason)
    unregister_name(node, name)
    raise StartError(msg[4])


def flush_down(proc: Process, ref: Ref) -> None:
    """Remove the DOWN (or start ack) of monitor `ref` from `proc`'s mailbox,
    as `demonitor(Ref, [flush])` does."""
    proc.take(lambda m: type(m) is tuple and len(m) >= 2 and (m[1] is ref or m[1] == ref))


# --- call / reply / stop -------------------------------------------------------


async def call(dest: Dest, request: Term, timeout: float | None = 5.0, label: Atom = GEN_CALL) -> Term:
    """Send `(label, From(self, tag), request)` to `dest` and wait for the reply
    (OTP 25's `gen:call`).

    The tag is `[alias | Ref]` (`terms.alias_tag`), one ref being both the
    monitor of the server and an alias of the caller, so a reply that comes
    after the caller gave up is dropped: a call leaves nothing behind in the
    caller's mailbox, however a timeout and a reply race.

    Raises `Exit` with reason `noproc` (no such server), `calling_self`,
    `timeout`, `("nodedown", node)`, or the reason the server died with; the
    exit's `context` is OTP's `(module, "call", [dest, request, timeout])`.
    """
    try:
        proc = _current.get()
    except LookupError:
        proc = current()  # raises its RuntimeError
    node = proc.node
    if type(dest) is Pid:
        target: Pid | tuple[Atom, Atom] = dest
    else:
        try:
            target = resolve(node, dest)
        except Exit as e:
            raise Exit(e.reason, (GEN, CALL, [dest, request, timeout])) from None
    server = node.procs.get(target.id) if type(target) is Pid else None
    if server is not None and (server.pid is target or server.pid == target):
        if server is proc:
            # gen:do_call's first clause: a call to oneself could only time out.
            raise Exit(CALLING_SELF, (GEN, CALL, [dest, request, timeout]))
        # The local clause (gen:do_call's, with erts' shortcuts): Node.call_local
        # may run the server's callback at once and return its reply.
        ref, tag, value = node.call_local(proc, server, label, request)
        if value is not NOT_YET:
            return value
    else:
        ref = node.monitor(proc, target, alias=True)
        tag = alias_tag(ref)
        node.send(target, (label, From(proc.pid, tag), request))

    def is_reply(m: Term) -> bool:
        return type(m) is tuple and (
            (len(m) == 2 and (m[0] is tag or m[0] == tag)) or (len(m) == 5 and (m[1] is ref or m[1] == ref) and m[0] == DOWN)
        )

    try:
        msg = await receive(is_reply, timeout)
    except TimeoutError:
        # As gen:do_call: deactivate the alias and drop the monitor (no reply
        # or DOWN can arrive after this), flush a DOWN that came meanwhile,
        # and take a reply that made it in before the alias went.
        node.demonitor(proc, ref)
        flush_down(proc, ref)
        late = take_reply(proc, tag)
        if late is not NO_MESSAGE:
            return late
        raise Exit(TIMEOUT, (GEN, CALL, [dest, request, timeout])) from None
    if len(msg) == 2:
        node.demonitor(proc, ref)
        return msg[1]
    reason = msg[4]
    node.aliases.pop(ref, None)
    if reason == NOCONNECTION:
        where = target[1] if isinstance(target, tuple) else target.node
        reason = (NODEDOWN, where)
    raise Exit(reason, (GEN, CALL, [dest, request, timeout]))


def take_reply(proc: Process, tag: Term) -> Term:
    """Remove and return the value of the reply `(tag, value)` from `proc`'s
    mailbox, or `NO_MESSAGE`."""
    msg = proc.take(lambda m: type(m) is tuple and len(m) == 2 and (m[0] is tag or m[0] == tag))
    return msg if msg is NO_MESSAGE else msg[1]


def reply(from_: From | tuple[Pid, Term], value: Term) -> None:
    """Answer a call whose `from_` a callback kept (OTP's `gen:reply/2`, with
    its three clauses: see `Node.reply`)."""
    current().node.reply(from_, value)


async def stop(dest: Dest, reason: Term = NORMAL, timeout: float | None = None) -> None:
    """Stop a behaviour process with `reason` and wait until it is gone
    (OTP's `proc_lib:stop/3`): its `terminate` runs first. Raises `Exit` with
    `noproc`, `timeout`, or the other reason it exited with."""
    proc = current()
    node = proc.node
    target = resolve(node, dest)
    ref = node.monitor(proc, target)
    node.send(target, (SYSTEM, From(proc.pid, ref), (TERMINATE, reason)))
    try:
        msg = await receive(lambda m: type(m) is tuple and len(m) == 5 and (m[1] is ref or m[1] == ref) and m[0] == DOWN, timeout)
    except TimeoutError:
        node.demonitor(proc, ref)
        if type(target) is Pid:
            node.signal_exit(proc.pid, target, KILL, False)
        raise Exit(TIMEOUT, (PROC_LIB, STOP, [dest, reason, timeout])) from None
    # The server answered `ok` before it terminated (sys:handle_system_msg).
    proc.take(lambda m: type(m) is tuple and len(m) == 2 and (m[0] is ref or m[0] == ref))
    got = msg[4]
    if got == reason or (got == KILLED and reason == KILL):
        return
    if got == NOPROC:
        raise Exit(NOPROC, (PROC_LIB, STOP, [dest, reason, timeout]))
    raise Exit(got, (PROC_LIB, STOP, [dest, reason, timeout]))


# --- the client API every behaviour shares -------------------------------------


class NotGiven:
    """The default of a keyword whose None means something (shutdown=None: infinity)."""

    __slots__ = ()


NOT_GIVEN: Final = NotGiven()


class Behaviour:
    """The client API of every behaviour, written once (OTP's `gen.erl` holds
    start, call and stop for gen_server, gen_statem and gen_event alike):
    `start_link`, `start`, `child_spec`, `call`, `cast`, `reply`, `stop`,
    `whereis`. A behaviour subclasses it and supplies only its loop
    (`_init_loop`) and callbacks.

    Class keywords set the default child spec, as `use GenServer, restart:
    :transient` does: `class Worker(GenServer, restart="transient",
    shutdown=10.0): ...`
    """

    restart: ClassVar[Restart] = "permanent"
    shutdown: ClassVar[float | Literal["brutal_kill"] | None] = 5.0
    _behaviour: ClassVar[str] = "behaviour"  # what process_info says it is

    def __init_subclass__(
        cls,
        *,
        restart: Restart | None = None,
        shutdown: float | Literal["brutal_kill"] | NotGiven | None = NOT_GIVEN,
        **kwargs: object,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if restart is not None:
            cls.restart = restart
        if not isinstance(shutdown, NotGiven):
            cls.shutdown = shutdown

    @classmethod
    async def start_link(
        cls,
        arg: Term = None,
        *,
        name: Dest | None = None,
        timeout: float | None = None,
    ) -> Pid:
        """Start one linked to the caller; return its pid once `init` ran.

        `name` registers it (a str, a via-name or `("global", name)`);
        raises `StartError` with `("already_started", pid)` if taken, with
        init's reason if it stopped or crashed, or `"ignore"`.
        """
        pid = await cls._start(arg, link=True, name=name, timeout=timeout)
        if pid is None:
            raise StartError(IGNORE)
        return pid

    @classmethod
    async def start(
        cls,
        arg: Term = None,
        *,
        name: Dest | None = None,
        timeout: float | None = None,
    ) -> Pid:
        """Like `start_link`, without the link."""
        pid = await cls._start(arg, link=False, name=name, timeout=timeout)
        if pid is None:
            raise StartError(IGNORE)
        return pid

    @classmethod
    def child_spec(cls, arg: Term = None) -> ChildSpec:
        """The spec a supervisor uses for `(cls, arg)`: id `cls`, started with
        `cls.start_link(arg)` (the subclass's own, if it defines one: that is
        where a server names itself, as in Elixir's default `child_spec`),
        restart and shutdown from the class keywords."""
        return ChildSpec(
            id=cls,
            start=(cls.start_link, (arg,)),
            restart=cls.restart,
            shutdown=cls.shutdown,
            type="worker",
            modules=(cls.__qualname__,),
        )

    @staticmethod
    async def call(server: Dest, request: Term, timeout: float | None = 5.0) -> Term:
        """Send `request` and wait up to `timeout` seconds (None: forever) for
        the reply. Raises `Exit` with `noproc`, `calling_self`, `timeout`,
        `("nodedown", node)` or the reason the server died with."""
        if not telemetry.calls_watched and not trace.tracing:  # both off: two flags, nothing else
            return await call(server, request, timeout)
        tracer = current().node.tracer
        if tracer is not None:
            tracer.called(server, request)
        if not telemetry.calls_watched:
            return await call(server, request, timeout)
        # A span, inline (a coroutine more per call was a third of its
        # cost), each event built only if a handler listens to it.
        start = monotonic()
        if telemetry.call_start:
            telemetry.emit_to(telemetry.call_start, {"monotonic_time": start}, {"server": server, "request": request})
        try:
            result = await call(server, request, timeout)
        except Exit as exc:
            if telemetry.call_exception:
                exc_meta = {"server": server, "request": request, "kind": "exit", "reason": exc.reason}
                telemetry.emit_to(telemetry.call_exception, {"duration": monotonic() - start}, exc_meta)
            raise
        if telemetry.call_stop:
            telemetry.emit_to(telemetry.call_stop, {"duration": monotonic() - start}, {"server": server, "request": request})
        return result

    @staticmethod
    def cast(server: Dest, request: Term) -> None:
        """Send `request` without waiting; never fails, even if nobody is there."""
        try:
            me = _current.get()
        except LookupError:
            raise RuntimeError("cast outside a beamish process") from None
        node = me.node
        if type(server) is Pid and node.tracer is None:  # the hot path: a local pid, no trace
            proc = node.procs.get(server.id)
            if proc is not None and proc.pid is server:
                proc.deliver_cast((GEN_CAST, request), me)
                return
        try:
            node.send(server, (GEN_CAST, request))
        except BadArg:
            pass

    @staticmethod
    def reply(from_: From | tuple[Pid, Term], value: Term) -> None:
        """Answer a call whose `from_` a callback kept (OTP's `gen:reply/2`)."""
        reply(from_, value)

    @staticmethod
    async def stop(server: Dest, reason: Term = "normal", timeout: float | None = None) -> None:
        """Stop it with `reason` and wait until it has terminated (its
        `terminate` runs first)."""
        await stop(server, Atom(reason) if type(reason) is str else reason, timeout)

    @staticmethod
    def whereis(server: Dest) -> Pid | tuple[Atom, Atom] | None:
        """The pid (or `(name, node)`) behind `server`, or None."""
        try:
            return resolve(_current.get().node, server)
        except Exception:
            return None

    # --- what a behaviour supplies ---------------------------------------------

    @classmethod
    async def _init_loop(cls, proc: Process, parent: Pid, arg: Term, name: Dest | None) -> Handler | None:
        """Run in the new process: make the loop, run `init(arg)`, and return
        the message handler (None: ignore; raise `Exit` to stop)."""
        raise NotImplementedError

    @classmethod
    async def _start(
        cls,
        arg: Term,
        *,
        link: bool,
        name: Dest | None,
        timeout: float | None,
    ) -> Pid | None:
        # OTP: the parent is the starter for start_link, the process itself for start.
        caller = _current.get().pid if link else None

        async def init(proc: Process) -> Handler | None:
            return await cls._init_loop(proc, caller if caller is not None else proc.pid, arg, name)

        return await start(
            init,
            link=link,
            name=name,
            timeout=timeout,
            behaviour=cls._behaviour,
            initial_call=f"{cls.__module__}.{cls.__qualname__}.init",
        )


def is_normal_stop(reason: Term) -> bool:
    """Reasons that end a behaviour without an error report (OTP's rule)."""
    return (
        reason in (NORMAL, SHUTDOWN)
        or (type(reason) is tuple and len(reason) == 2 and reason[0] == SHUTDOWN)
    )


def is_coroutine(value: object) -> bool:
    """Whether a callback returned a coroutine (it was an `async def`)."""
    return type(value) is types.CoroutineType
