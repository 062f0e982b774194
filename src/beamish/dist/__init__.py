"""beamish.dist: the Erlang distribution protocol, so beamish nodes talk to
each other and to real Erlang and Elixir nodes.

`beamish.dist.etf` is the External Term Format codec every frame goes
through; the other modules (epmd, handshake, connection, net_kernel, rpc)
build the connections on top of it. The core (`beamish.node`) never imports
this package: it declares a small protocol that `dist` implements.

>>> from beamish.dist import etf
>>> from beamish import Atom
>>> etf.decode(etf.encode((Atom("ok"), 42)))
(Atom('ok'), 42)

## Joining a cluster

>>> import beamish
>>> from beamish import dist
>>> async def main():
...     await dist.start(cookie="secret")       # listen on loopback, register with EPMD
...     me = dist.node()
...     answer = await dist.ping(me)            # our own node: no connection needed
...     await dist.stop()
...     return me, dist.nodes()
>>> dist.run(main, name="doc@127.0.0.1")        # doctest: +SKIP
(Atom('doc@127.0.0.1'), [])

`await dist.connect("erl@127.0.0.1")` connects to an Erlang or Elixir node
started with the same cookie (`erl -name erl@127.0.0.1 -setcookie secret`);
after that a pid, a `(name, node)` pair, `GenServer.call`, links and monitors
work across nodes as they do locally. `beamish.dist.rpc` calls functions
on other nodes; `dist.spawn` starts a process on one.

OTP: mirrors erts' distribution (`erl_ext_dist`, `dist_util`, `net_kernel`);
differs in being a library a node opts into rather than a VM built-in.
"""

from ._api import (
    connect,
    disconnect,
    get_cookie,
    is_alive,
    kernel,
    monitor_node,
    monitor_nodes,
    node,
    nodes,
    ping,
    run,
    set_cookie,
    spawn,
    start,
    stop,
)
from .local_cluster import LocalCluster
from .tls import TlsOptions

__all__ = [
    "LocalCluster",
    "TlsOptions",
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
