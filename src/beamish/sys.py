"""Look inside a running behaviour process, as Erlang's `sys` does.

Every GenServer and GenStateMachine answers these, local or on another
node (a beamish or an Erlang one: Erlang's `sys:get_state({Name, 'py@host'})`
works against a beamish server, and these functions against an Erlang
gen_server), without any code of its own:

- `get_state` / `replace_state(fn)`: the state (a GenStateMachine's is
  `(state, data)`); a replace function that raises leaves the state as it
  was and raises `Exit(("callback_failed", fn, ...))` in the caller;
- `get_status`: a `Status` (pid, module, running or suspended, parent,
  state);
- `suspend` / `resume`: a suspended process answers only system messages;
  everything else waits, in order, until it is resumed;
- `statistics(server, True | False | "get")`: messages handled since;
- `trace(server, True | False)`: each message it gets, logged
  (`*DBG* name got msg`, logger `beamish.sys`).

>>> import beamish
>>> from beamish import GenServer, Reply, sys
>>> class Counter(GenServer):
...     def init(self, n):
...         return n
...     def handle_call(self, request, from_, n):
...         return Reply(n, n + 1)
>>> async def main():
...     pid = await Counter.start_link(0)
...     await GenServer.call(pid, "next")
...     before = await sys.get_state(pid)
...     await sys.replace_state(pid, lambda n: n * 10)
...     await sys.suspend(pid)
...     status = await sys.get_status(pid)
...     await sys.resume(pid)
...     return before, await GenServer.call(pid, "next"), status.status
>>> beamish.run(main)
(1, 10, 'suspended')

OTP: mirrors `sys` (`get_state`, `replace_state`, `get_status`, `suspend`,
`resume`, `statistics`, `trace`, `terminate`); differs in that the calls
are `async def` and `get_status` returns a `Status` rather than OTP's
`{status, Pid, {module, Mod}, [PDict, SysState, Parent, Debug, Misc]}`
(which is what an Erlang caller receives).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import _gen
from ._atoms import ERROR, OK, SYSTEM, TERMINATE
from .process import Dest, Exit
from .terms import Atom, Pid, Term

# Requests are atoms on the wire, as Erlang's sys sends them.
_GET_STATE = Atom("get_state")
_REPLACE_STATE = Atom("replace_state")
_GET_STATUS = Atom("get_status")
_SUSPEND = Atom("suspend")
_RESUME = Atom("resume")
_DEBUG = Atom("debug")
_STATISTICS = Atom("statistics")
_TRACE = Atom("trace")
_GET = Atom("get")

__all__ = ["Status", "get_state", "get_status", "replace_state", "resume", "statistics", "suspend", "terminate", "trace"]


@dataclass(frozen=True)
class Status:
    """What `get_status` says about a process."""

    pid: Pid
    module: str  # "gen_server" or "gen_statem" (Erlang's module name)
    status: str  # "running" or "suspended"
    parent: Pid
    misc: Term  # the behaviour's own part: a header and its state, as OTP's format_status


async def _system(server: Dest, request: Term, timeout: float | None) -> Term:
    result = await _gen.call(server, request, timeout, label=SYSTEM)
    if type(result) is tuple and len(result) == 2 and result[0] == ERROR:
        raise Exit(result[1])
    return result


async def get_state(server: Dest, timeout: float | None = 5.0) -> Any:
    """The server's state (a GenStateMachine's: `(state, data)`)."""
    return await _system(server, _GET_STATE, timeout)


async def replace_state(server: Dest, fn: Callable[[Any], Any], timeout: float | None = 5.0) -> Any:
    """Replace the state with `fn(state)` inside the server and return it;
    if `fn` raises, the state is unchanged and `Exit(("callback_failed",
    fn, ("error", exc)))` is raised here (the server lives on)."""
    return await _system(server, (_REPLACE_STATE, fn), timeout)


async def get_status(server: Dest, timeout: float | None = 5.0) -> Status:
    reply = await _system(server, _GET_STATUS, timeout)
    _, pid, (_, module), (_, sys_state, parent, _, misc) = reply
    return Status(pid, str(module), str(sys_state), parent, misc)


async def suspend(server: Dest, timeout: float | None = 5.0) -> None:
    """Only system messages are handled until `resume`; others wait."""
    await _system(server, _SUSPEND, timeout)


async def resume(server: Dest, timeout: float | None = 5.0) -> None:
    await _system(server, _RESUME, timeout)


async def statistics(server: Dest, flag: bool | Literal["get"], timeout: float | None = 5.0) -> Any:
    """Start (`True`) or stop (`False`) counting, or `"get"` what was
    counted: `[(start_time, ...), (current_time, ...), (reductions, n),
    (messages_in, n)]`, or `"no_statistics"` when not started."""
    result = await _system(server, (_DEBUG, (_STATISTICS, _GET if flag == "get" else flag)), timeout)
    if flag == "get" and type(result) is tuple and len(result) == 2 and result[0] == OK:
        return result[1]
    return result


async def trace(server: Dest, flag: bool, timeout: float | None = 5.0) -> None:
    """Log every message the server gets (`*DBG*`, logger `beamish.sys`)."""
    await _system(server, (_DEBUG, (_TRACE, flag)), timeout)


async def terminate(server: Dest, reason: Term = "normal", timeout: float | None = 5.0) -> None:
    """Stop the server with `reason`, running its `terminate` callback."""
    await _system(server, (TERMINATE, reason), timeout)
