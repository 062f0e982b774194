"""Erlang's `global`: names and locks shared by every node of a cluster.

A name registered with `register_name` is known on every connected node,
beamish or Erlang or Elixir (beamish speaks `global`'s own protocol, see
below), until its process exits or its node goes down. Anywhere a server
name is taken (`start_link`, `call`, `cast`, `send`), `("global", name)`
names a globally registered process, like `{:global, name}` in Elixir;
`("via", global_, name)` works too, like `{:via, :global, name}`.

>>> import beamish
>>> from beamish import GenServer, Reply, dist
>>> from beamish.cluster import global_
>>> class Echo(GenServer):
...     def init(self, _):
...         return None
...     def handle_call(self, request, from_, state):
...         return Reply(request, state)
>>> async def main():
...     await dist.start("global_doc@127.0.0.1", cookie="doc")
...     try:
...         pid = await Echo.start_link(None, name=("global", "echo"))
...         found = global_.whereis_name("echo") == pid
...         answer = await GenServer.call(("global", "echo"), "hi")
...         taken = await global_.register_name("echo", beamish.self())
...         return found, answer, taken, global_.registered_names()
...     finally:
...         await dist.stop()
>>> beamish.run(main)
(True, 'hi', False, ['echo'])

## What a beamish node is to `global`

Every distributed beamish node runs a `global_name_server` that speaks OTP
25's protocol (version 8): on each connection the two nodes' lockers take
the `{global, [LockerA, LockerB]}` lock in their partitions, exchange their
names, resolve conflicts, and tell the rest of their partition about each
other, which then connect: the mesh stays fully connected, and Erlang's
`global:sync()` returns with beamish nodes in the cluster.

Names are registered under the `global` lock on every known node, so two
nodes registering one name at once get exactly one `True`. When a partition
heals with a name taken on both sides, the resolve function of the name
runs once, on the smaller node's side: `"random_exit_name"` (the default:
the process on the greater node is killed), `"random_notify_name"` (it is
sent `("global_name_conflict", name)`), `"notify_all_name"` (both are sent
`("global_name_conflict", name, other_pid)` and the name is dropped), or a
Python function `(name, pid1, pid2) -> pid | Atom("none")`. A Python function
stays on its node: peers see `fun global:random_exit_name/3` and call back
the node (`global:resolve_it`) to resolve, which runs the function. An
Erlang closure given as a method is kept and sent back unchanged, but cannot
run on a beamish node: a conflict it should resolve here drops the name, as
a failing resolve function does in Erlang.

`prevent_overlapping_partitions` is on, as in OTP 25: when node A loses its
connection to B, A tells every node it knows (`lost_connection`), and each
node still connected to B disconnects from it, so the cluster splits into
partitions that are each fully connected instead of overlapping ones (where
a node sees both sides and global's view of names cannot be consistent).
`beamish.dist.start(..., prevent_overlapping_partitions=False)` turns it
off, as `-kernel prevent_overlapping_partitions false` does for Erlang.

OTP: mirrors `global` (`register_name/2,3`, `re_register_name`,
`unregister_name`, `whereis_name`, `registered_names`, `send`, `set_lock`,
`del_lock`, `trans`, `sync`); differs in that the calls that wait are
`async def`, resolve methods are named by string or given as a Python
function, and `trans` runs a plain or `async def` function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..process import Exit, current
from ..terms import Atom, Pid, Term

__all__ = [
    "del_lock",
    "re_register_name",
    "register_name",
    "registered_names",
    "send",
    "set_lock",
    "sync",
    "trans",
    "unregister_name",
    "whereis_name",
]

ABORTED = Atom("aborted")


def _global() -> Any:
    glob = current().node.extensions.get("global")
    if glob is None:
        raise Exit(Atom("distribution_not_started"))
    return glob


async def register_name(name: Term, pid: Pid, resolve: Any = None) -> bool:
    """Register `name` for `pid` on every node: False if the name (or the
    pid, under another name) is taken. `resolve` says what happens to the
    name when a partition heals with the name taken on both sides (see the
    module doc)."""
    return bool(await _global().register_name(name, pid, resolve))


async def re_register_name(name: Term, pid: Pid, resolve: Any = None) -> None:
    """Register `name` for `pid` whether it is taken or not."""
    await _global().re_register_name(name, pid, resolve)


async def unregister_name(name: Term) -> None:
    """Remove `name` on every node (nothing happens if it is not registered)."""
    await _global().unregister_name(name)


def whereis_name(name: Term) -> Pid | None:
    """The pid registered as `name`, or None (a local read, as Erlang's)."""
    pid: Pid | None = _global().whereis_name(name)
    return pid


def registered_names() -> list[Term]:
    """Every globally registered name."""
    names: list[Term] = _global().registered_names()
    return names


def send(name: Term, msg: Term) -> Pid:
    """Send `msg` to the process registered as `name` and return its pid;
    `Exit(("badarg", (name, msg)))` if there is none."""
    pid: Pid = _global().send(name, msg)
    return pid


async def set_lock(id_: tuple[Term, Term], nodes: list[str] | None = None, retries: int | None = None) -> bool:
    """Take the lock `(resource, requester)` on `nodes` (default: this node
    and every connected node) for the calling process; `retries` None waits
    until it is free (with global's random back-off), else gives up after
    that many retries and returns False. Locks held by one requester id
    may be taken by several processes; the lock goes when each has called
    `del_lock` or exited."""
    return bool(await _global().set_lock(id_, nodes, retries))


async def del_lock(id_: tuple[Term, Term], nodes: list[str] | None = None) -> bool:
    """Release the calling process's hold of lock `id_`."""
    return bool(await _global().del_lock(id_, nodes))


async def trans(
    id_: tuple[Term, Term], fn: Callable[[], Any], nodes: list[str] | None = None, retries: int | None = None
) -> Any:
    """Run `fn()` (plain or `async def`) holding lock `id_`; returns its
    result, or `Atom("aborted")` when the lock could not be taken within
    `retries`."""
    return await _global().trans(id_, fn, nodes, retries)


async def sync(nodes: list[str] | None = None, timeout: float | None = None) -> None:
    """Wait until global has exchanged names with every connected node (or
    `nodes`), as `global:sync/0,1`."""
    await _global().sync(nodes, timeout)

