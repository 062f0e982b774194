"""The services a node answers for its peers, as an Erlang node's kernel
does: `net_kernel` (`net_adm:ping`), `rex` (`rpc:call`/`rpc:cast`), erpc's
calls and casts, and spawns a peer requests (SPAWN_REQUEST). Each runs only
what the node's allow-lists name (`dist._allow`). The cluster services
(global, pg) take their place beside these.

>>> from beamish.dist._services import Services
>>> [name for name in ("net_kernel", "rex") if hasattr(Services, f"_{name}")]
['net_kernel', 'rex']
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from .._atoms import ERROR, EXIT
from .._gen import reply
from ..process import Exit, receive, to_thread
from ..terms import Atom, Pid, Term
from . import control as C
from ._allow import REFUSED, AllowList, Missing
from ._allow import UNDEF as UNDEFINED
from ._connection import wire_reason

if TYPE_CHECKING:
    from ..node import Node
    from ._connection import Connection

__all__: list[str] = []  # private: started by the kernel

log = logging.getLogger("beamish.dist")

UNDEF: Final = Atom("undef")


class Services:
    """The processes and handlers that answer peers on behalf of a node."""

    def __init__(self, node: Node, rpc_allow: AllowList, spawn_allow: AllowList) -> None:
        self.node = node
        self.rpc_allow = rpc_allow
        self.spawn_allow = spawn_allow
        # Functions every Erlang node answers whatever its allow-lists say,
        # because the kernel's own services call them (global:resolve_it/4).
        self.builtins: dict[tuple[str, str], Callable[..., Awaitable[Term]]] = {}

    def start(self) -> None:
        """Start `net_kernel` and `rex`, the registered processes peers call."""
        self.node.spawn(self._net_kernel, (), link_to=None, name="net_kernel", initial_call="net_kernel")
        self.node.spawn(self._rex, (), link_to=None, name="rex", initial_call="rex")

    def spawn_request(self, conn: Connection, ctrl: tuple[Term, ...], args: Term) -> None:
        req_id, requester, mfa, opts = ctrl[1], ctrl[2], ctrl[4], ctrl[5]
        module, function, arity = mfa
        options = set()
        for opt in opts if isinstance(opts, list) else []:
            options.add(opt if isinstance(opt, str) else opt[0] if isinstance(opt, tuple) and opt else None)
        link = "link" in options
        monitor = "monitor" in options
        if not isinstance(args, list) or len(args) != arity:
            conn.send((C.SPAWN_REPLY, req_id, requester, 0, Atom("badarg")))
            return
        body = self._spawn_body(str(module), str(function), args)
        if body is None:
            conn.send((C.SPAWN_REPLY, req_id, requester, 0, Atom("notsup")))
            return
        pid = self.node.spawn(body, (), link_to=None, name=None, initial_call=f"{module}:{function}/{arity}")
        flags = 0
        # The process has not run yet: the link and monitor are in place
        # before it can exit, and the reply says so (erts' spawn_request).
        if link and self.node.link_from_remote(pid, requester):
            conn.links.add((pid, requester))
            flags |= C.SPAWN_REPLY_LINKED
        if monitor and self.node.monitor_from_remote(requester, pid, req_id) is not None:
            conn.watched[req_id] = (pid, None)
            flags |= C.SPAWN_REPLY_MONITORED
        conn.send((C.SPAWN_REPLY, req_id, requester, flags, pid))

    def _spawn_body(self, module: str, function: str, args: list[Term]) -> Callable[[], object] | None:
        """What a peer's SPAWN_REQUEST runs: erpc's call and cast (which
        check `rpc_allow`), an allow-listed function, or, for a function an
        allow-listed module lacks, a process that exits `{undef, [MFA]}`, as
        an Erlang node answers `spawn(Node, M, Missing, A)`. None: refused
        (`notsup`)."""
        if (module, function) == ("erpc", "execute_call") and len(args) == 4:
            tag, m, f, a = args
            return lambda: self._erpc_execute(tag, str(m), str(f), a)
        if (module, function) == ("erpc", "execute_cast") and len(args) == 3:
            # erpc:cast and, since OTP 23, rpc:cast: spawn_request(..., [{reply, no}]).
            m, f, a = args
            return lambda: self._erpc_cast(str(m), str(f), a)
        fn = self.spawn_allow.lookup(module, function)
        if fn is REFUSED:
            log.warning("refused a spawn of %s:%s from a peer: not in spawn_allow", module, function)
            return None
        if fn is UNDEFINED:
            undef: Term = (UNDEF, [(Atom(module), Atom(function), args, [])])

            def missing() -> None:
                raise Exit(undef)

            return missing
        target = fn
        return lambda: self._run(self.spawn_allow, module, function, target, args)

    @staticmethod
    async def _run(allow: AllowList, module: str, function: str, fn: Callable[..., object], args: list[Term]) -> Term:
        """Run an allow-listed target where `allow` puts it (`dist._allow`):
        an `async def` on the loop, a plain function on the loop or in the
        node's thread pool, where one that blocks holds a pool thread and
        not every process of the node."""
        if inspect.iscoroutinefunction(fn) or allow.on_loop(module, function):
            result = fn(*args)
        else:
            result = await to_thread(functools.partial(fn, *args))
        if asyncio.iscoroutine(result):
            result = await result
        return result

    async def _erpc_execute(self, tag: Term, module: str, function: str, args: Term) -> None:
        """erpc:execute_call/4 as Erlang runs it: the outcome is the exit reason."""
        outcome = await self.apply(module, function, args)
        if outcome[0] == "return":
            raise Exit((tag, Atom("return"), outcome[1]))
        raise Exit((tag, ERROR, outcome[1], []))

    async def _erpc_cast(self, module: str, function: str, args: Term) -> None:
        """erpc:execute_cast/3: nobody waits for the outcome; a failure ends
        the process with erpc's `{exception, {Reason, Stack}}`."""
        outcome = await self.apply(module, function, args)
        if outcome[0] == "error":
            raise Exit((Atom("exception"), (outcome[1], [])))

    async def apply(self, module: str, function: str, args: Term) -> tuple[str, Term]:
        """Run an allow-listed `module.function(*args)`: ("return", value) or
        ("error", erlang_reason)."""
        builtin = self.builtins.get((module, function))
        if builtin is not None and isinstance(args, list):
            try:
                return ("return", await builtin(*args))
            except Exception as exc:
                return ("error", wire_reason(exc))
        fn = self.rpc_allow.lookup(module, function)
        if fn is REFUSED:
            log.warning("refused an rpc of %s:%s from a peer: not in rpc_allow", module, function)
        if isinstance(fn, Missing) or not isinstance(args, list):
            return ("error", UNDEF)
        try:
            result = await self._run(self.rpc_allow, module, function, fn, args)
        except Exception as exc:
            return ("error", wire_reason(exc))
        return ("return", result)

    async def _net_kernel(self) -> None:
        """Answers `net_adm:ping` ('$gen_call' {is_auth, Node} -> yes)."""
        while True:
            msg = await receive()
            match msg:
                case ("$gen_call", (Pid() as pid, tag), ("is_auth", _)):
                    reply((pid, tag), Atom("yes"))
                case ("$gen_call", (Pid() as pid, tag), _):
                    reply((pid, tag), Atom("ignored"))

    async def _rex(self) -> None:
        """Answers `rpc:call`'s legacy path: '$gen_call' {call, M, F, A, GL}."""
        while True:
            msg = await receive()
            match msg:
                case ("$gen_call", (Pid() as pid, tag), ("call", m, f, a, _)):
                    self.node.spawn(self._rex_call, ((pid, tag), str(m), str(f), a), link_to=None, name=None)
                case ("$gen_cast", ("cast", m, f, a, _)):
                    self.node.spawn(self.apply, (str(m), str(f), a), link_to=None, name=None)

    async def _rex_call(self, from_: tuple[Pid, Term], module: str, function: str, args: Term) -> None:
        outcome = await self.apply(module, function, args)
        if outcome[0] == "return":
            reply(from_, outcome[1])
        else:
            reply(from_, (Atom("badrpc"), (EXIT, (outcome[1], []))))


