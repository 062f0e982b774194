"""Supervisor: a process that starts other processes and restarts them when
they die, so that a crash is a routine event and not an outage.

A supervisor starts its children in order, links to them and traps their
exits. When one exits, its `restart` type decides whether it comes back
(`permanent` always, `transient` only after an abnormal exit, `temporary`
never), and the strategy decides who comes back with it: `one_for_one` just
that child, `one_for_all` every child, `rest_for_one` that child and those
started after it. More than `max_restarts` restarts within `max_seconds`
means something is wrong that restarting will not fix: the supervisor stops
its children and exits with reason `shutdown`, and its own supervisor
decides what happens next.

>>> import beamish
>>> from beamish import GenServer, Reply
>>> from beamish import Supervisor
>>> class Counter(GenServer):
...     def init(self, n):
...         return n
...     def handle_call(self, request, from_, n):
...         if request == "crash":
...             raise RuntimeError("boom")
...         return Reply(n + 1, n + 1)
>>> async def main():
...     sup = await Supervisor.start_link([(Counter, 10)], strategy="one_for_one")
...     [(_, pid, _, _)] = await Supervisor.which_children(sup)
...     await GenServer.call(pid, "incr")
...     try:
...         await GenServer.call(pid, "crash")
...     except beamish.Exit:
...         pass
...     [(_, new_pid, _, _)] = await Supervisor.which_children(sup)
...     return new_pid != pid, await GenServer.call(new_pid, "incr")
>>> import logging; logging.disable(logging.ERROR)
>>> beamish.run(main)
(True, 11)
>>> logging.disable(logging.NOTSET)

## Children

A child is a `ChildSpec`, a class with `child_spec(arg)` (every GenServer
has one; `Counter` alone means `Counter.child_spec(None)`), a pair
`(cls, arg)`, or a dict with the ChildSpec fields (`{"id": ..., "start":
(async_fn, args)}`), as in Elixir.

## Module-based supervisors

    class RoomSupervisor(Supervisor):
        def init(self, arg):
            return Supervisor.flags([Room.child_spec("lobby")], strategy="one_for_one")

    await RoomSupervisor.start_link(arg, name="rooms")

`Supervisor.flags` is Elixir's `Supervisor.init/2`; `init` may also return
`Ignore()`. `RoomSupervisor.child_spec(arg)` makes it a child of another
supervisor (type `supervisor`, shutdown infinity).

## Restart intensity

More than `max_restarts` restarts within `max_seconds` and the supervisor
gives up: it stops its children and exits with `shutdown`, for its own
supervisor to deal with. The defaults are Elixir's, 3 restarts in 5 seconds;
OTP's `supervisor` defaults to 1 in 5 (`intensity`/`period`).

OTP: mirrors supervisor (strategies, intensity, ordered start and shutdown,
start_child / terminate_child / restart_child / delete_child /
which_children / count_children) and Elixir's Supervisor API; differs in
that `start_link` raises `StartError` instead of returning `{error, _}`.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from . import _gen, telemetry
from ._atoms import ALREADY_PRESENT, ALREADY_STARTED, DOWN, EXIT, IGNORE, SHUTDOWN, UNDEFINED
from ._gen import ChildSpec, From, StartError
from .gen_server import GenServer, Ignore, NoReply, Reply, Stop
from .process import Exit, current, demonitor, exit, monitor, process_flag, receive
from .terms import Atom, Pid, Term

# What `beamish` exports is public there only (one path per name); this lists the rest.
__all__ = ["SupFlags"]

log = logging.getLogger("beamish.supervisor")

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
_RESTARTING = Atom("restarting")


@dataclass(frozen=True, slots=True)
class SupFlags:
    """What a module-based supervisor's `init` returns: its children and
    how to supervise them (Elixir's `Supervisor.init/2` result)."""

    children: list[Term]
    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    max_seconds: float = 5.0
    max_children: int | None = None
    """A DynamicSupervisor's limit (None: no limit)."""
    extra_arguments: tuple[Term, ...] = ()
    """What a DynamicSupervisor prepends to each child's start arguments."""

    def __post_init__(self) -> None:
        if self.strategy not in ("one_for_one", "one_for_all", "rest_for_one"):
            raise ValueError(f"invalid strategy {self.strategy!r}: one_for_one, one_for_all or rest_for_one")
        if self.max_restarts < 0 or self.max_seconds <= 0:
            raise ValueError("max_restarts must be >= 0 and max_seconds > 0")


class Supervisor:
    """A supervisor. Use `Supervisor.start_link(children, ...)` directly, or
    subclass it and define `init(self, arg)` returning `Supervisor.flags(...)`."""

    restart: ClassVar[str] = "permanent"
    shutdown: ClassVar[float | None] = None  # supervisors get infinity

    def init(self, arg: Term) -> SupFlags | Ignore:
        """Return the children and flags (OTP `init/1`). Module-based
        supervisors must define it."""
        raise NotImplementedError(f"{type(self).__qualname__} must define init(self, arg)")

    # --- starting ----------------------------------------------------------

    @staticmethod
    def flags(
        children: list[Term], *, strategy: Strategy = "one_for_one", max_restarts: int = 3, max_seconds: float = 5.0
    ) -> SupFlags:
        """The return value of `init` (Elixir's `Supervisor.init(children, opts)`)."""
        return SupFlags(list(children), strategy, max_restarts, max_seconds)

    @classmethod
    async def start_link(
        cls,
        arg: Term = None,
        *,
        name: str | tuple[Term, ...] | None = None,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        timeout: float | None = None,
    ) -> Pid:
        """Start a supervisor linked to the caller. On `Supervisor` itself,
        `arg` is the list of children; on a subclass, it goes to `init`.
        Raises `StartError` when a child cannot start (the ones already
        started are stopped first)."""
        return await cls._launch(arg, True, name, strategy, max_restarts, max_seconds, timeout)

    @classmethod
    async def start(
        cls,
        arg: Term = None,
        *,
        name: str | tuple[Term, ...] | None = None,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        timeout: float | None = None,
    ) -> Pid:
        """`start_link` without the link."""
        return await cls._launch(arg, False, name, strategy, max_restarts, max_seconds, timeout)

    @classmethod
    async def _launch(
        cls, arg: Term, link: bool, name: Term, strategy: Strategy, max_restarts: int, max_seconds: float, timeout: float | None
    ) -> Pid:
        if cls is Supervisor:
            if not isinstance(arg, list):
                raise TypeError("Supervisor.start_link takes the list of children")
            flags_fn: Callable[[], SupFlags | Ignore] = lambda: SupFlags(arg, strategy, max_restarts, max_seconds)  # noqa: E731
        else:
            flags_fn = functools.partial(cls().init, arg)
        pid = await _Server.launch(_Start(flags_fn, name, dynamic=False), link=link, timeout=timeout)
        if pid is None:
            raise StartError(IGNORE)
        return pid

    @classmethod
    def child_spec(cls, arg: Term = None) -> ChildSpec:
        """This supervisor as a child of another (type supervisor, shutdown infinity)."""
        return ChildSpec(
            id=cls,
            start=(functools.partial(cls.start_link), (arg,)),
            restart=cls.restart,  # type: ignore[arg-type]
            shutdown=None,
            type="supervisor",
            modules=(cls.__qualname__,),
        )

    # --- managing children -------------------------------------------------

    @staticmethod
    async def start_child(sup: Term, child: Term) -> Pid | None:
        """Add and start a child. Raises `StartError` with
        `("already_started", pid)`, `"already_present"` or the child's error."""
        return await _call(sup, ("start_child", normalize(child)))  # type: ignore[no-any-return]

    @staticmethod
    async def terminate_child(sup: Term, child_id: Term) -> None:
        """Stop a child (its spec stays, unless temporary). Raises `LookupError`."""
        await _call(sup, ("terminate_child", child_id))

    @staticmethod
    async def restart_child(sup: Term, child_id: Term) -> Pid | None:
        """Start again a child that was terminated."""
        return await _call(sup, ("restart_child", child_id))  # type: ignore[no-any-return]

    @staticmethod
    async def delete_child(sup: Term, child_id: Term) -> None:
        """Forget a stopped child's spec."""
        await _call(sup, ("delete_child", child_id))

    @staticmethod
    async def which_children(sup: Term) -> list[tuple[Term, Pid | Atom | None, str, tuple[str, ...]]]:
        """`(id, pid or "restarting" or None, type, modules)` for each child, in start order."""
        return await _call(sup, "which_children")  # type: ignore[no-any-return]

    @staticmethod
    async def count_children(sup: Term) -> dict[str, int]:
        """`specs`, `active`, `supervisors`, `workers` (Elixir's count_children)."""
        return await _call(sup, "count_children")  # type: ignore[no-any-return]

    @staticmethod
    async def stop(sup: Term, reason: Term = "normal", timeout: float | None = None) -> None:
        """Stop the supervisor: its children first, in reverse start order."""
        await _gen.stop(sup, Atom(reason) if type(reason) is str else reason, timeout)


# --- internals -------------------------------------------------------------------


def normalize(child: Term) -> ChildSpec:
    """A ChildSpec from any of the accepted forms (see the module doc)."""
    if isinstance(child, ChildSpec):
        return child
    if isinstance(child, type) and hasattr(child, "child_spec"):
        return child.child_spec(None)  # type: ignore[no-any-return]
    if isinstance(child, tuple) and len(child) == 2 and isinstance(child[0], type) and hasattr(child[0], "child_spec"):
        return child[0].child_spec(child[1])  # type: ignore[no-any-return]
    if isinstance(child, Mapping):
        return ChildSpec(**child)
    raise TypeError(f"not a child spec: {child!r} (a ChildSpec, a class with child_spec, (cls, arg), or a dict)")


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    pid: Pid | None = None
    restarting: bool = False
    extra: tuple[Term, ...] = ()


@dataclass
class _State:
    """A supervisor's children and restart history (OTP's #state{})."""

    name: Term
    strategy: Strategy
    max_restarts: int
    max_seconds: float
    dynamic: bool = False
    max_children: int | None = None
    extra_arguments: tuple[Term, ...] = ()
    children: list[_Child] = field(default_factory=list)
    restarts: deque[float] = field(default_factory=deque)

    def which(self) -> list[tuple[Term, Pid | Atom | None, str, tuple[str, ...]]]:
        return [
            (
                UNDEFINED if self.dynamic else c.spec.id,
                _RESTARTING if c.restarting else c.pid,
                c.spec.type,
                c.spec.modules,
            )
            for c in self.children
        ]

    def count(self) -> dict[str, int]:
        return {
            "specs": len(self.children),
            "active": sum(1 for c in self.children if c.pid is not None),
            "supervisors": sum(1 for c in self.children if c.spec.type == "supervisor"),
            "workers": sum(1 for c in self.children if c.spec.type == "worker"),
        }

    def find(self, child_id: Term) -> _Child | None:
        return next((c for c in self.children if c.spec.id == child_id), None)

    def by_pid(self, pid: Pid) -> _Child | None:
        return next((c for c in self.children if c.pid == pid), None)


async def _call(sup: Term, request: Term) -> Term:
    result = await _gen.call(sup, request, None)
    if type(result) is tuple and len(result) == 2 and result[0] == "error":
        reason = result[1]
        if isinstance(reason, LookupError):
            raise reason
        raise StartError(reason)
    return result


def _describe(st: _State) -> str:
    return str(st.name) if st.name is not None else repr(current().pid)


async def start_one(st: _State, child: _Child) -> Pid | None:
    """Start `child`; returns its pid (None for ignore); raises StartError."""
    fn, args = child.spec.start
    try:
        pid = await fn(*child.extra, *args)
    except StartError as e:
        if e.reason == IGNORE:  # start_link's way to say init returned Ignore
            pid = None
        else:
            raise
    except Exit as e:
        raise StartError(e.reason) from None
    except Exception as exc:
        raise StartError(exc) from exc
    child.pid = pid
    child.restarting = False
    return pid


async def stop_one(child: _Child) -> None:
    """Stop a child as OTP's shutdown does: `shutdown` exit, wait, then kill."""
    pid = child.pid
    child.pid = None
    if pid is None:
        return
    ref = monitor(pid)
    sd = child.spec.shutdown
    if sd == "brutal_kill":
        exit(pid, "kill")
        await _await_down(ref, None)
    else:
        exit(pid, "shutdown")
        try:
            await _await_down(ref, sd if isinstance(sd, int | float) else None)
        except TimeoutError:
            exit(pid, "kill")
            await _await_down(ref, None)
    demonitor(ref, flush=True)
    # The link's EXIT (we trap exits) is not a crash to act on.
    try:
        await receive(lambda m: type(m) is tuple and len(m) == 3 and m[0] == EXIT and m[1] == pid, 0)
    except TimeoutError:
        pass


async def _await_down(ref: Term, timeout: float | None) -> Term:
    msg = await receive(lambda m: type(m) is tuple and len(m) == 5 and m[0] == DOWN and m[1] == ref, timeout)
    return msg[4]


def _is_abnormal(reason: Term) -> bool:
    return not (
        reason in ("normal", "shutdown") or (type(reason) is tuple and len(reason) == 2 and reason[0] == "shutdown")
    )


@dataclass(frozen=True, slots=True)
class _Start:
    """What a supervisor process starts from: its flags (from the user's
    `init`, run inside the new process), its name, and its kind."""

    flags: Callable[[], SupFlags | Ignore]
    name: Term
    dynamic: bool


class _Server(GenServer):
    """The supervisor process (a GenServer with OTP's supervisor logic)."""

    _behaviour: ClassVar[str] = "Supervisor"  # what process_info (and the observer) say it is

    @classmethod
    async def launch(cls, start: _Start, *, link: bool, timeout: float | None) -> Pid | None:
        """Start a supervisor process (Supervisor's and DynamicSupervisor's start_link)."""
        return await cls._start(start, link=link, name=start.name, timeout=timeout)

    async def init(self, arg: _Start) -> _State | Ignore | Stop:
        process_flag("trap_exit", True)
        flags: object = arg.flags()  # what a user's init returned: checked below
        if isinstance(flags, Ignore):
            return flags
        if not isinstance(flags, SupFlags):
            what = "DynamicSupervisor" if arg.dynamic else "Supervisor"
            raise TypeError(f"init must return {what}.flags(...) or Ignore(), not {flags!r}")
        if arg.dynamic:
            st = _State(arg.name, "one_for_one", flags.max_restarts, flags.max_seconds, True, flags.max_children, flags.extra_arguments)
        else:
            st = _State(arg.name, flags.strategy, flags.max_restarts, flags.max_seconds)
            seen = set()
            for spec in map(normalize, flags.children):
                if spec.id in seen:
                    return Stop((Atom("duplicate_child_name"), spec.id))
                seen.add(spec.id)
                st.children.append(_Child(spec))
        for child in st.children:
            try:
                await start_one(st, child)
            except StartError as e:
                log.error("supervisor %s: start_error for child %r: %r", _describe(st), child.spec.id, e.reason)
                await self._stop_children(st, st.children)
                return Stop((SHUTDOWN, (Atom("failed_to_start_child"), child.spec.id, e.reason)))
        st.children = [c for c in st.children if c.pid is not None or c.spec.restart != "temporary"]
        return st

    async def handle_call(self, request: Term, from_: From, st: _State) -> Reply:
        match request:
            case "which_children":
                return Reply(st.which(), st)
            case "count_children":
                return Reply(st.count(), st)
            case ("start_child", ChildSpec() as spec):
                return Reply(await self._start_child(st, spec), st)
            case ("start_dynamic", ChildSpec() as spec):
                if st.max_children is not None and len(st.children) >= st.max_children:
                    return Reply(("error", Atom("max_children")), st)
                new = _Child(spec, extra=st.extra_arguments)
                try:
                    pid = await start_one(st, new)
                except StartError as e:
                    return Reply(("error", e.reason), st)
                if pid is not None:
                    st.children.append(new)
                return Reply(pid, st)
            case ("terminate_child", child_id):
                child = st.by_pid(child_id) if st.dynamic and isinstance(child_id, Pid) else st.find(child_id)
                if child is None:
                    return Reply(("error", LookupError(f"no child {child_id!r}")), st)
                await stop_one(child)
                if st.dynamic or child.spec.restart == "temporary":
                    st.children.remove(child)
                return Reply(None, st)
            case ("restart_child", child_id):
                child = st.find(child_id)
                if child is None:
                    return Reply(("error", LookupError(f"no child {child_id!r}")), st)
                if child.pid is not None:
                    return Reply(("error", Atom("running")), st)
                try:
                    return Reply(await start_one(st, child), st)
                except StartError as e:
                    return Reply(("error", e.reason), st)
            case ("delete_child", child_id):
                child = st.find(child_id)
                if child is None:
                    return Reply(("error", LookupError(f"no child {child_id!r}")), st)
                if child.pid is not None:
                    return Reply(("error", Atom("running")), st)
                st.children.remove(child)
                return Reply(None, st)
        return Reply(("error", ("bad_call", request)), st)

    async def _start_child(self, st: _State, spec: ChildSpec) -> Term:
        existing = st.find(spec.id)
        if existing is not None:
            if existing.pid is not None:
                return ("error", (ALREADY_STARTED, existing.pid))
            return ("error", ALREADY_PRESENT)
        child = _Child(spec)
        try:
            pid = await start_one(st, child)
        except StartError as e:
            return ("error", e.reason)
        if pid is not None or spec.restart != "temporary":
            st.children.append(child)
        return pid

    async def handle_info(self, msg: Term, st: _State) -> NoReply | Stop:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == EXIT:
            _, pid, reason = msg
            child = st.by_pid(pid)
            if child is not None:
                return await self._child_exited(st, child, reason)
        return NoReply(st)

    async def _child_exited(self, st: _State, child: _Child, reason: Term) -> NoReply | Stop:
        child.pid = None
        if _is_abnormal(reason):
            log.error(
                "supervisor %s: child_terminated: id=%r reason=%r",
                _describe(st),
                child.spec.id,
                reason,
            )
        restart = child.spec.restart
        if restart == "temporary" or (restart == "transient" and not _is_abnormal(reason)):
            if restart == "temporary" or st.dynamic:
                st.children.remove(child)
            return NoReply(st)
        while True:
            if not self._may_restart(st):
                log.error("supervisor %s: shutdown: reached_max_restart_intensity", _describe(st))
                await self._stop_children(st, st.children)
                return Stop(SHUTDOWN, st)
            try:
                await self._restart(st, child)
                if telemetry.listened(telemetry.RESTART):
                    telemetry.execute(
                        telemetry.RESTART, {"count": 1},
                        {"supervisor": current().pid, "child_id": child.spec.id, "reason": reason, "pid": child.pid},
                    )  # fmt: skip
                return NoReply(st)
            except StartError as e:
                log.error("supervisor %s: start_error restarting %r: %r", _describe(st), child.spec.id, e.reason)

    def _may_restart(self, st: _State) -> bool:
        now = current().node.loop.time()
        st.restarts.append(now)
        while st.restarts and now - st.restarts[0] > st.max_seconds:
            st.restarts.popleft()
        return len(st.restarts) <= st.max_restarts

    async def _restart(self, st: _State, child: _Child) -> None:
        if st.strategy == "one_for_one":
            group = [child]
        elif st.strategy == "one_for_all":
            group = list(st.children)
        else:
            group = st.children[st.children.index(child) :]
        others = [c for c in group if c is not child]
        for c in others:
            c.restarting = True
        await self._stop_children(st, others)
        for c in group:
            if c.spec.restart == "temporary" and c is not child:
                st.children.remove(c)
                continue
            await start_one(st, c)

    async def _stop_children(self, st: _State, children: list[_Child]) -> None:
        for c in reversed(children):
            await stop_one(c)

    async def terminate(self, reason: Term, st: Term) -> None:
        if isinstance(st, _State):
            await self._stop_children(st, st.children)

