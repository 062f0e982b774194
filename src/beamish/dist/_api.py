"""The functions of `beamish.dist` (re-exported there): Erlang's `net_kernel`,
`erlang:node/0,nodes/0,monitor_node/2`, `net_adm:ping/1` and
`erlang:spawn_request/5`, for the calling process's node."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import overload

from .._atoms import TIMEOUT
from ..node import Node, _loop_factory
from ..process import Exit, current, receive
from ..terms import Atom, Pid, Ref, Term
from . import cookie as cookie_mod
from ._kernel import MAX_MESSAGE, Kernel, Options
from .tls import TlsOptions

__all__ = [
    "connect",
    "disconnect",
    "get_cookie",
    "is_alive",
    "kernel",
    "monitor_node",
    "monitor_nodes",
    "node",
    "nodes",
    "ping",
    "run",
    "set_cookie",
    "spawn",
    "start",
    "stop",
]

_KEY = "beamish.dist"


async def start(
    name: str | None = None,
    *,
    cookie: str | None = None,
    listen: str = "127.0.0.1",
    port: int = 0,
    ticktime: float = 60.0,
    rpc_allow: Iterable[str] = (),
    spawn_allow: Iterable[str] = (),
    epmd_port: int | None = None,
    tls: TlsOptions | None = None,
    max_message: int = MAX_MESSAGE,
    prevent_overlapping_partitions: bool = True,
) -> Kernel:
    """Make the calling process's node distributed (`net_kernel:start/2`):
    listen on `listen:port` (loopback and a free port by default), register
    with EPMD, and accept and make connections authenticated by `cookie`
    (default: `BEAMISH_COOKIE`, then `~/.erlang.cookie`, as Erlang). With
    `tls`, every connection runs over TLS (`beamish.dist.tls`), as Erlang's
    `-proto_dist inet_tls`.

    `rpc_allow` and `spawn_allow` name what peers may run here: a module
    (the functions it defines or lists in `__all__`, not what it imports)
    or one `"module:function"`. A plain rpc target runs in the node's
    thread pool, so that one that blocks holds a pool thread rather than
    every process; a spawned one is a process and runs on the loop, as an
    `async def` does; an entry suffixed `@loop` or `@pool`
    (`"math:sqrt@loop"`, `"myapp.jobs@pool"`) says otherwise
    (`beamish.dist._allow`).

    `max_message` (bytes, 256 MiB by default) bounds a message's encoding
    both ways: sending a larger one raises `framing.MessageTooLarge` in the
    sender (as `erlang:send` raises `system_limit`), and a peer that sends
    one (or holds more than that in unfinished fragmented messages) is
    disconnected with a WARNING naming it: its links and monitors fire
    `noconnection`, rather than the message vanishing while later ones
    arrive. Erlang has no such limit; this one bounds the memory a peer can
    make this node hold.

    Every distributed node runs `global` (`beamish.cluster.global_`), as
    every Erlang node does; `prevent_overlapping_partitions` is its OTP 25
    setting of that name (on by default): when a node reports that it lost
    its connection to another, the nodes still connected to both drop one.

    With `name`, the node takes that name first, as `net_kernel:start/1`
    (Elixir's `Node.start/1`) names a running node: its live processes'
    pids become the named node's (`Node.rename`). Without it, the node
    keeps the name it was created with.

    >>> import beamish
    >>> async def main() -> tuple[str, str, bool]:
    ...     before = str(beamish.self().node)
    ...     await start("doc_renamed@127.0.0.1", cookie="doc")
    ...     try:
    ...         return before, str(beamish.self().node), is_alive()
    ...     finally:
    ...         await stop()
    >>> beamish.run(main)
    ('nonode@nohost', 'doc_renamed@127.0.0.1', True)
    """
    node = current().node
    if node.extensions.get(_KEY) is not None:
        raise RuntimeError(f"{node.name} is already distributed")
    if name is not None and name != node.name:
        node.rename(name)
    options = Options(
        cookie=cookie_mod.resolve(cookie),
        listen=listen,
        port=port,
        ticktime=ticktime,
        rpc_allow=frozenset(rpc_allow),
        spawn_allow=frozenset(spawn_allow),
        epmd_port=epmd_port,
        tls=tls,
        max_message=max_message,
        prevent_overlapping_partitions=prevent_overlapping_partitions,
    )
    k = Kernel(node, options)
    await k.start()
    node.extensions[_KEY] = k
    return k


async def stop() -> None:
    """Leave the cluster: close every connection and unregister from EPMD."""
    node = current().node
    k = node.extensions.pop(_KEY, None)
    if isinstance(k, Kernel):
        await k.stop()


@overload
def set_cookie(cookie: str, /) -> bool: ...
@overload
def set_cookie(node: str, cookie: str, /) -> bool: ...
def set_cookie(*args: str) -> bool:
    """Set this node's cookie, `set_cookie(cookie)`, or the cookie for
    connecting to one node, `set_cookie(node, cookie)` (this node's own
    name sets its own cookie). Returns True. Raises
    `Exit("distribution_not_started")` on a node that is not distributed.

    OTP: mirrors `erlang:set_cookie/1,2` (Elixir's `Node.set_cookie/1,2`);
    differs in that a node's own cookie checks connections it accepts,
    including those from a node given a cookie of its own here (OTP checks
    those with that node's cookie).
    """
    peer: str | None
    match args:
        case (str() as cookie,):
            peer = None
        case (str() as peer, str() as cookie):
            pass
        case _:
            raise TypeError(f"set_cookie takes (cookie) or (node, cookie), not {args!r}")
    k = current().node.extensions.get(_KEY)
    if not isinstance(k, Kernel):
        raise Exit(Atom("distribution_not_started"))
    if peer is None or peer == k.node.name:
        k.options.cookie = cookie
    else:
        k.options.node_cookies[Atom(peer)] = cookie
    return True


def get_cookie(node: str | None = None) -> str | None:
    """This node's cookie, or the one for connecting to `node`; None when
    this node is not distributed (`erlang:get_cookie/0,1` gives `nocookie`)."""
    k = current().node.extensions.get(_KEY)
    if not isinstance(k, Kernel):
        return None
    return k.options.node_cookies.get(Atom(node), k.options.cookie) if node else k.options.cookie


def kernel() -> Kernel:
    k = current().node.extensions.get(_KEY)
    if not isinstance(k, Kernel):
        raise Exit(Atom("not_alive"))
    return k


def is_alive() -> bool:
    """Whether this node is distributed (`erlang:is_alive/0`)."""
    return isinstance(current().node.extensions.get(_KEY), Kernel)


def node() -> Atom:
    """This node's name (`node()`)."""
    return current().node.name


def nodes() -> list[Atom]:
    """The nodes this node is connected to (`nodes()`, Elixir's `Node.list`)."""
    k = current().node.extensions.get(_KEY)
    return k.nodes() if isinstance(k, Kernel) else []


async def connect(peer: str) -> bool:
    """Connect to `peer` (`net_kernel:connect_node/1`, Elixir's `Node.connect`)."""
    return await kernel().connect(peer) is not None


def disconnect(peer: str) -> bool:
    """Close the connection to `peer` (`erlang:disconnect_node/1`)."""
    return kernel().disconnect(peer)


async def ping(peer: str, timeout: float = 7.0) -> str:
    """`net_adm:ping/1`: "pong" if `peer` answers, else "pang"."""
    from .. import _gen

    if not is_alive():
        return "pang"
    try:
        answer = await _gen.call((Atom("net_kernel"), Atom(peer)), (Atom("is_auth"), node()), timeout)
    except Exit:
        kernel().disconnect(peer)
        return "pang"
    return "pong" if answer == "yes" else "pang"


def monitor_nodes(flag: bool = True) -> None:
    """Subscribe the caller to `("nodeup", node)` / `("nodedown", node)`
    messages (`net_kernel:monitor_nodes/1`)."""
    kernel().monitor_nodes(current().pid, flag)


def monitor_node(peer: str, flag: bool = True) -> None:
    """Get one `("nodedown", peer)` when the connection to `peer` goes (or
    at once if it cannot be made) (`erlang:monitor_node/2`)."""
    kernel().monitor_node(current().pid, Atom(peer), flag)


async def spawn(
    peer: str, target: str, *args: Term, link: bool = False, monitor: bool = False, timeout: float = 7.0
) -> Pid | tuple[Pid, Ref]:
    """Start `target` ("package.module:function", which the peer must allow)
    with `args` on node `peer` (Elixir's `Node.spawn/4`, via SPAWN_REQUEST).

    With `link`, the new process is linked to the caller; with `monitor`,
    returns `(pid, ref)` and the caller gets a DOWN with that ref. Raises
    `Exit` with the peer's error (`notsup` when not allowed, `noconnection`).
    """
    proc = current()
    ref = kernel().spawn_remote(proc.pid, Atom(peer), target, list(args), link=link, monitor=monitor)
    try:
        msg = await receive(lambda m: type(m) is tuple and len(m) == 4 and m[0] == "spawn_reply" and m[1] == ref, timeout)
    except TimeoutError:
        raise Exit(TIMEOUT) from None
    _, _, status, result = msg
    if status != "ok":
        raise Exit(result)
    # The link, if asked for, was set up with the reply (Kernel.spawn_reply).
    return (result, ref) if monitor else result


def run(
    main: Callable[..., Term],
    *args: Term,
    name: str,
    cookie: str | None = None,
    listen: str = "127.0.0.1",
    rpc_allow: Iterable[str] = (),
    spawn_allow: Iterable[str] = (),
    use_uvloop: bool | None = None,
    lag_threshold: float | None = 0.1,
) -> Term:
    """`beamish.run` for a distributed node: start node `name`, make it
    distributed, run `main(*args)` as its first process, leave the cluster."""
    n = Node(name, lag_threshold=lag_threshold)

    async def first() -> Term:
        await start(cookie=cookie, listen=listen, rpc_allow=rpc_allow, spawn_allow=spawn_allow)
        try:
            result = main(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        finally:
            await stop()

    with asyncio.Runner(loop_factory=_loop_factory(use_uvloop)) as runner:
        return runner.run(n.run(first))
