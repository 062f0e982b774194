"""Remote procedure calls: run a function on another node and get its result.

`await rpc.call(node, module, function, args)` runs `module:function(args)`
on `node` and returns what it returned; it works the same against Erlang,
Elixir and beamish nodes. A beamish node runs only what its `rpc_allow`
list names (empty by default): `beamish.dist.start(rpc_allow=["math"])` lets
`:rpc.call(:"py@host", :math, :sqrt, [16.0])` return `4.0`. A module entry
exposes the functions the module defines or lists in `__all__`, not what it
imports; `"module:function"` exposes one function (`beamish.dist._allow`).

>>> import beamish
>>> from beamish.dist import rpc
>>> rpc.BadRpc("nodedown").reason
'nodedown'

Where Erlang's `rpc:call` returns `{badrpc, Reason}`, this raises `BadRpc`
with that reason (`"nodedown"`, `"timeout"`, or `("EXIT", reason)` when the
function raised or was refused).

OTP: mirrors rpc:call/5 and rpc:cast/4 through the `rex` server every node
runs; differs in raising `BadRpc` instead of returning `{badrpc, _}`.
A beamish node answers both `rpc:call` and `erpc:call` from Erlang.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._atoms import CALL, GEN_CAST, NODEDOWN
from .. import _gen
from ..process import Exit
from ..terms import Atom, Term

__all__ = ["BadRpc", "call", "cast"]

_REX = Atom("rex")
_USER = Atom("user")  # the group leader Erlang's rex uses for the call's output


class BadRpc(Exception):
    """An rpc failed; `reason` is what Erlang's `{badrpc, Reason}` carries."""

    def __init__(self, reason: Term) -> None:
        super().__init__(reason)
        self.reason = reason


async def call(node: str, module: str, function: str, args: Sequence[Term] = (), timeout: float | None = None) -> Term:
    """Run `module:function(*args)` on `node` and return its result."""
    request = (CALL, Atom(module), Atom(function), list(args), _USER)
    try:
        result = await _gen.call((_REX, Atom(node)), request, timeout)
    except Exit as e:
        reason = e.reason
        if type(reason) is tuple and reason and reason[0] == "nodedown":
            raise BadRpc(NODEDOWN) from None
        if reason in ("noproc", "noconnection"):
            raise BadRpc(NODEDOWN) from None
        raise BadRpc(reason) from None
    if type(result) is tuple and len(result) == 2 and result[0] == "badrpc":
        raise BadRpc(result[1])
    return result


def cast(node: str, module: str, function: str, args: Sequence[Term] = ()) -> None:
    """Run `module:function(*args)` on `node`, not waiting for a result."""
    from ..process import current

    current().node.send((_REX, Atom(node)), (GEN_CAST, (Atom("cast"), Atom(module), Atom(function), list(args), _USER)))
