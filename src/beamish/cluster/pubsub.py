"""PubSub: Phoenix.PubSub's publish/subscribe, compatible on the wire with
its PG2 adapter, so beamish and Elixir nodes share topics.

A process subscribes to a topic (a `str`) on a named pubsub; a broadcast on
that topic reaches every subscriber on every node running a pubsub of the
same name. Locally, subscriptions are entries of a duplicate-key
`beamish.Registry` named after the pubsub, as in Phoenix.PubSub; across
nodes, each node's pubsub has workers joined to a `pg` group, and a
broadcast forwards the message once to a worker on each other node, which
delivers it to its own subscribers.

>>> import beamish
>>> from beamish import Supervisor
>>> from beamish.cluster import PubSub
>>> async def main():
...     await Supervisor.start_link([PubSub.child_spec(name="MyApp.PubSub")])
...     PubSub.subscribe("MyApp.PubSub", "user:123")
...     PubSub.broadcast("MyApp.PubSub", "user:123", ("user_update", {"id": 123}))
...     return await beamish.receive()
>>> beamish.run(main)
('user_update', {'id': 123})

## Starting

Give a supervisor `PubSub.child_spec(name="MyApp.PubSub", pool_size=1)`
(Elixir's `{Phoenix.PubSub, name: MyApp.PubSub}`), or `await
PubSub.start_link(name=..., pool_size=...)`. Start it after
`beamish.dist.start` to reach other nodes. The pubsub is a supervisor
(`rest_for_one`) of the subscription registry, the `pg` scope
`Phoenix.PubSub` (started here unless the node runs it already) and
`pool_size` workers. Unknown options raise `TypeError`.

## Names

Elixir's `MyApp.PubSub` is the atom `Elixir.MyApp.PubSub`; here the name is
the str `"MyApp.PubSub"` (an `"Elixir."` prefix is accepted and dropped),
and it names the registry on this node. What goes on the wire is derived as
Phoenix does: the workers are registered as `Elixir.MyApp.PubSub.Adapter`,
then `Elixir.MyApp.PubSub.Adapter_2` ... `_N`, each joined to the `pg` group
of its own name in the scope `Elixir.Phoenix.PubSub`. A beamish node and an
Elixir node share topics when their pubsubs have the same name and pool size.

## Subscribing and broadcasting

`subscribe(pubsub, topic, metadata=None)` registers the calling process
(twice subscribed, it gets each message twice); `unsubscribe` removes all its
subscriptions to the topic. They and every broadcast run in the caller, with
no message to a server, as in Phoenix.

- `broadcast(pubsub, topic, message)`: every subscriber on every node.
- `broadcast_from(pubsub, from_pid, topic, message)`: the same, except
  `from_pid` (a subscriber of this node).
- `local_broadcast`, `local_broadcast_from`: this node's subscribers only.
- `direct_broadcast(node, pubsub, topic, message)`: the subscribers of one
  node.

Each takes `dispatcher=`: the name of a dispatcher registered on every node
with `register_dispatcher(name, fn)`, where `fn(entries, from_, message)`
gets the topic's `(pid, metadata)` entries, the excluded pid or None, and the
message, and sends what it wants (Phoenix's `dispatch/3`). The default,
`"Phoenix.PubSub"`, sends `message` to every entry but `from_`. A dispatcher
is a name because it travels: a node resolves the name it receives among its
own registered ones (as Elixir calls the module the atom names), and drops,
with a log line, a message naming one it does not know.

## The wire

A broadcast sends `{forward_to_local, Topic, Message, Dispatcher}` to each
member of the chosen worker group on another node, with `Topic` a binary
and `Dispatcher` an atom (`Elixir.Phoenix.PubSub` by default: an Elixir
worker calls `Dispatcher.dispatch/3`, so any other atom must be a module
there). The group is picked by a hash of the broadcasting process, as
pg2.ex does with `erlang:phash2(self(), PoolSize)` (Python's hash, not
phash2: a given process may use another worker index than Elixir would; any
index reaches one worker per node). `direct_broadcast` sends the same
message to the `(worker name, node)` pair. A worker decodes a binary topic
to the `str` it subscribed with; an ill-formed message (a topic that is not
UTF-8, an unknown dispatcher) is logged in one line and dropped.

OTP: mirrors Phoenix.PubSub 2.x with its default PG2 adapter
(https://github.com/phoenixframework/phoenix_pubsub/blob/main/lib/phoenix/pubsub/pg2.ex);
differs in that topics are `str`, dispatchers are registered names rather
than modules, and `broadcast`'s return value is None (Phoenix's `:ok`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from beamish._gen import ChildSpec
from beamish.gen_server import CastResult, GenServer, NoReply
from beamish.process import current, send, whereis
from beamish.registry import Registry
from beamish.supervisor import Supervisor
from beamish.terms import Atom, Pid, Term

from . import pg

if TYPE_CHECKING:
    from beamish.node import Node

__all__: list[str] = []  # PubSub is public as beamish.cluster.PubSub

log = logging.getLogger("beamish.cluster")

Entry = tuple[Pid, Term]
Dispatch = Callable[[list[Entry], "Pid | None", Term], object]
"""`fn(entries, from_, message)`: Phoenix's `dispatch/3`."""

SCOPE: Final = "Elixir.Phoenix.PubSub"
DEFAULT_DISPATCHER: Final = "Phoenix.PubSub"
_FORWARD: Final = Atom("forward_to_local")
_EXT: Final = "beamish.cluster.pubsub"
_DEFAULT_WIRE: Final = Atom("Elixir." + DEFAULT_DISPATCHER)
# Names seen without the "Elixir." prefix: the common case skips `_strip`.
_NAMES: set[str] = set()
_OPTIONS: Final = frozenset({"name", "pool_size"})


def _default_dispatch(entries: list[Entry], from_: Pid | None, message: Term) -> None:
    for pid, _ in entries:
        if pid != from_:
            send(pid, message)


class PubSub:
    """Phoenix.PubSub: start one with `child_spec` or `start_link`, then use
    the static functions below with its name."""

    __slots__ = ()

    # --- starting ---------------------------------------------------------------

    @staticmethod
    def child_spec(**options: Term) -> ChildSpec:
        """The spec of a pubsub: `name=` (required) and `pool_size=` (1)."""
        unknown = set(options) - _OPTIONS
        if unknown:
            raise TypeError(f"unknown PubSub option(s) {sorted(unknown)}: expected {sorted(_OPTIONS)}")
        if "name" not in options:
            raise TypeError("a PubSub needs name=")
        name, pool_size = _check(options["name"], options.get("pool_size", 1))
        return ChildSpec(
            id=name, start=(_start_link, (name, pool_size)), type="supervisor", shutdown=None,
            modules=("beamish.cluster.pubsub",),
        )

    @staticmethod
    async def start_link(*, name: str, pool_size: int = 1) -> Pid:
        """Start a pubsub named `name` linked to the caller; return its supervisor's pid."""
        return await _start_link(*_check(name, pool_size))

    # --- subscribing ------------------------------------------------------------

    @staticmethod
    def subscribe(pubsub: str, topic: str, metadata: Term = None) -> None:
        """Subscribe the calling process to `topic`."""
        _topic(topic)
        Registry.register(_strip(pubsub), topic, metadata)

    @staticmethod
    def unsubscribe(pubsub: str, topic: str) -> None:
        """Remove every subscription of the calling process to `topic`."""
        Registry.unregister(_strip(pubsub), topic)

    @staticmethod
    def register_dispatcher(name: str, dispatch: Dispatch) -> None:
        """Make `name` a dispatcher on this node (do it on every node that
        may receive a broadcast naming it). The default cannot be replaced."""
        wire = _elixir(name)
        if wire is _DEFAULT_WIRE:
            raise ValueError(f"{name!r} is the default dispatcher")
        _dispatchers(current().node)[wire] = dispatch

    # --- broadcasting -----------------------------------------------------------

    @staticmethod
    def broadcast(pubsub: str, topic: str, message: Term, dispatcher: str = DEFAULT_DISPATCHER) -> None:
        """Deliver `message` to the subscribers of `topic` on every node."""
        PubSub.broadcast_from(pubsub, None, topic, message, dispatcher)

    @staticmethod
    def broadcast_from(
        pubsub: str, from_pid: Pid | None, topic: str, message: Term, dispatcher: str = DEFAULT_DISPATCHER
    ) -> None:
        """`broadcast`, except to `from_pid` (other nodes deliver to all, as in Phoenix)."""
        if type(topic) is not str:
            _topic(topic)
        me = current()
        name = pubsub if pubsub in _NAMES else _strip(pubsub)
        groups = cast("tuple[Atom, ...]", Registry.meta(name, "pubsub"))
        fn: Dispatch
        if dispatcher is DEFAULT_DISPATCHER:
            wire, fn = _DEFAULT_WIRE, _default_dispatch
        else:
            wire = _elixir(dispatcher)
            fn = _resolve(wire)
        group = groups[hash(me.pid) % len(groups)] if len(groups) > 1 else groups[0]
        here = me.node.name
        members = pg.get_members(group, scope=SCOPE)
        if len(members) > 1 or (members and members[0].node != here):
            msg = (_FORWARD, topic, message, wire)
            for pid in members:
                if pid.node != here:
                    send(pid, msg)
        Registry.dispatch(name, topic, lambda entries: fn(entries, from_pid, message))

    @staticmethod
    def local_broadcast(pubsub: str, topic: str, message: Term, dispatcher: str = DEFAULT_DISPATCHER) -> None:
        """Deliver `message` to this node's subscribers of `topic`."""
        fn = _resolve(_elixir(dispatcher))
        Registry.dispatch(_strip(pubsub), _topic(topic), lambda entries: fn(entries, None, message))

    @staticmethod
    def local_broadcast_from(
        pubsub: str, from_pid: Pid, topic: str, message: Term, dispatcher: str = DEFAULT_DISPATCHER
    ) -> None:
        """`local_broadcast`, except to `from_pid`."""
        fn = _resolve(_elixir(dispatcher))
        Registry.dispatch(_strip(pubsub), _topic(topic), lambda entries: fn(entries, from_pid, message))

    @staticmethod
    def direct_broadcast(
        node: str, pubsub: str, topic: str, message: Term, dispatcher: str = DEFAULT_DISPATCHER
    ) -> None:
        """Deliver `message` to the subscribers of `topic` on `node` only."""
        name = _strip(pubsub)
        groups = cast("tuple[Atom, ...]", Registry.meta(name, "pubsub"))
        wire = _elixir(dispatcher)
        _resolve(wire)
        group = groups[hash(current().pid) % len(groups)]
        send((group, Atom(node)), (_FORWARD, _topic(topic), message, wire))


# --- internals -----------------------------------------------------------------


def _strip(name: str) -> str:
    return name[len("Elixir."):] if name.startswith("Elixir.") else name


def _elixir(name: str) -> Atom:
    """Elixir's alias `MyApp.PubSub` is the atom `Elixir.MyApp.PubSub`."""
    return Atom(name if name.startswith("Elixir.") else "Elixir." + name)


def _topic(topic: Term) -> str:
    if type(topic) is not str:
        raise TypeError(f"a topic is a str, not {topic!r}")
    return topic


def _check(name: Term, pool_size: Term) -> tuple[str, int]:
    if not isinstance(name, str) or not _strip(name):
        raise TypeError(f"invalid PubSub name {name!r}: a str such as 'MyApp.PubSub'")
    if type(pool_size) is not int or pool_size < 1:
        raise TypeError(f"invalid PubSub pool_size {pool_size!r}: a positive int")
    name = _strip(name)
    _NAMES.add(name)
    return name, pool_size


def _groups(name: str, pool_size: int) -> tuple[Atom, ...]:
    """pg2.ex: the first worker is `Name.Adapter` (v2.0's single worker), then `_2`...`_N`."""
    adapter = f"Elixir.{name}.Adapter"
    return (Atom(adapter), *(Atom(f"{adapter}_{n}") for n in range(2, pool_size + 1)))


def _dispatchers(node: Node) -> dict[Atom, Dispatch]:
    table = node.extensions.get(_EXT)
    if table is None:
        table = node.extensions[_EXT] = {_elixir(DEFAULT_DISPATCHER): _default_dispatch}
    return cast("dict[Atom, Dispatch]", table)


def _resolve(wire: Atom) -> Dispatch:
    found = _dispatchers(current().node).get(wire)
    if found is None:
        raise ValueError(f"no dispatcher {wire!r} on this node: register it with PubSub.register_dispatcher")
    return found


async def _start_link(name: str, pool_size: int) -> Pid:
    groups = _groups(name, pool_size)
    children: list[Term] = [
        Registry.child_spec(keys="duplicate", name=name, meta={"pubsub": groups}),
        ChildSpec(id="pg", start=(_ensure_scope, ()), restart="transient"),
    ]
    for group in groups:
        children.append(ChildSpec(id=group, start=(_Worker.start_link, ((name, group),)), modules=("beamish.cluster.pubsub",)))
    return await Supervisor.start_link(children, strategy="rest_for_one")


async def _ensure_scope() -> Pid | None:
    """The `Phoenix.PubSub` scope, once per node (Phoenix's application
    starts it): started here unless running already (then: ignore)."""
    if whereis(SCOPE) is not None:
        return None
    return await pg.start_link(SCOPE)


class _Worker(GenServer):
    """`Phoenix.PubSub.PG2Worker`: registered under its group's name and
    joined to that group; delivers what other nodes forward."""

    @classmethod
    async def start_link(cls, arg: Term = None, *, name: object = None, timeout: float | None = None) -> Pid:
        _, group = cast("tuple[str, Atom]", arg)
        return await super().start_link(arg, name=group, timeout=timeout)

    async def init(self, arg: Term) -> str:
        pubsub, group = cast("tuple[str, Atom]", arg)
        await pg.join(group, current().pid, scope=SCOPE)
        return pubsub

    def handle_info(self, msg: Term, pubsub: str) -> CastResult:
        if type(msg) is tuple and len(msg) == 4 and msg[0] == _FORWARD:
            _, topic, message, dispatcher = msg
            if type(topic) is bytes:
                try:
                    topic = topic.decode()
                except UnicodeDecodeError:
                    topic = None
            fn: Dispatch | None
            if dispatcher is _DEFAULT_WIRE:
                fn = _default_dispatch
            else:
                fn = _dispatchers(current().node).get(dispatcher) if type(dispatcher) is Atom else None
            if type(topic) is str and fn is not None:
                Registry.dispatch(pubsub, topic, lambda entries: fn(entries, None, message))
                return NoReply(pubsub)
        log.warning("pubsub %s dropped a message it cannot deliver: %.200r", pubsub, msg)
        return NoReply(pubsub)
