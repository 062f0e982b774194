"""Registry: a node-local key-value store of processes, with via-names and dispatch.

A registry maps keys to the processes that registered them, each entry with a
value of its own. With `keys="unique"` a key points to at most one process:
a name registry, where any term can name a process (`Registry.via`), not
just a `str`. With `keys="duplicate"` a key may point to many processes: a
topic, and `dispatch` fans a message out to all of its subscribers. An entry
belongs to the process that registered it and goes away when that process
exits, however it exits.

>>> import beamish
>>> from beamish import Registry
>>> def broadcast(entries):
...     for pid, value in entries:
...         beamish.send(pid, ("news", value))
>>> async def main():
...     await Registry.start_link(keys="duplicate", name="PubSub")
...     _ = Registry.register("PubSub", "weather", "subscriber 1")
...     Registry.dispatch("PubSub", "weather", broadcast)
...     return await beamish.receive()
>>> beamish.run(main)
('news', 'subscriber 1')

## Starting

`await Registry.start_link(keys=..., name=...)` starts the registry process,
registered under `name` on the calling node, and links it to the caller.
In a supervision tree, give the supervisor `Registry.child_spec(keys=...,
name=...)` or the pair `(Registry, {"keys": "unique", "name": "MyRegistry"})`
(Elixir's `{Registry, keys: :unique, name: MyRegistry}`), and start it before
the processes that use it. Options: `keys` (`"unique"` or `"duplicate"`,
required), `name` (required), `partitions` (default 1) and `meta` (the
registry's metadata, read with `meta`). Unknown options raise `TypeError`.

Each node has its own registries: two nodes in one OS process each have
their own `"MyRegistry"`, with their own entries.

## Registering and reading

`register(registry, key, value)` registers the *calling* process, links it to
the registry and returns the registry's pid (Elixir's `{:ok, owner}`). A
unique key held by a live process raises `AlreadyRegistered`, whose `pid` is
the holder. A process may register under many keys, and, in a duplicate
registry, under the same key many times. `unregister`, `unregister_match`
and `update_value` change only the caller's own entries.

Every function runs in the caller and works on the table directly, with no
message to the registry process, as Elixir's use its ETS tables: `lookup`,
`match`, `dispatch`, `keys`, `values`, `count`, `count_match` and `meta`
read it, `register` and the others write it. `dispatch` calls `fn(entries)`
in the caller with the list of `(pid, value)` entries under a key, and not
at all when there are none. A registry that is not running raises
`BadArg("unknown registry: ...")`.

Patterns (`match`, `count_match`, `unregister_match`) are the templates of
`beamish.testing`: `ANY`, a type, tuples and lists element-wise, a dict as a
subset, a predicate, or a value compared by equality.

## When an owner exits

The registry traps exits and every owner is linked to it; when an owner
exits (normally, by a crash or killed) the registry removes all its entries.
It does so when it handles the exit signal, a moment after the death, as in
Elixir. Until then: reads of a unique key (`lookup`, `match`, `dispatch`,
`whereis_name`) and `keys`/`values` of the dead pid already ignore it, and
`register` takes over a unique key whose holder is dead; reads of a
duplicate key and `count` may still include its entries. A message sent to
a dead pid is dropped, so `dispatch` is unaffected in practice.

The link goes both ways: if the registry dies, its owners receive the exit
signal (and die with it unless they trap exits), which is why it belongs
early in a supervision tree.

## Via-names

`Registry.via(registry, key)` names a process by its key in a unique
registry, wherever a server name is accepted:

>>> from beamish import GenServer, Reply
>>> class Room(GenServer):
...     def handle_call(self, request, from_, name):
...         return Reply(("room", name), name)
>>> async def main():
...     await Registry.start_link(keys="unique", name="ChatApp.RoomRegistry")
...     await Room.start_link("lobby", name=Registry.via("ChatApp.RoomRegistry", "lobby"))
...     return await GenServer.call(("via", Registry, ("ChatApp.RoomRegistry", "lobby")), "hi")
>>> beamish.run(main)
('room', 'lobby')

The via tuple is `("via", Registry, (registry, key))`, Elixir's
`{:via, Registry, {registry, key}}`, and `Registry` itself is the via module
(`register_name`, `unregister_name`, `whereis_name`, `send`). A name already
taken makes `start_link` raise `StartError(("already_started", pid))`;
`beamish.send` to a name nobody holds raises `BadArg`. `Registry.via(registry,
key, value)` also stores `value` with the entry.

## Partitions

`partitions` is accepted and kept for compatibility: a beamish node runs all
its processes on one event loop, so one table and one process serve as well
as several, and `dispatch` is always serial (Elixir's default).

## Not implemented

`select` and `count_select` (they take Erlang match specifications; use
`match` with a template), the `listeners` option, `lock`, and `dispatch`'s
`parallel` option.

OTP: mirrors Elixir's `Registry`; differs in that a registry is one process
(Elixir's is a supervisor of partitions, so its child spec says `worker`
where Elixir's says `supervisor`), patterns are templates instead of match
specifications, keys compare with Python's `==` (Elixir's `===` tells `1`
from `1.0`), `meta` raises `KeyError` instead of returning `:error`, and
`register_name` registers any live local pid (the starter registers the new
process before its init runs), where Elixir's requires `self()`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, cast

from ._atoms import EXIT
from ._gen import ChildSpec
from ._pattern import Pattern, matches
from .gen_server import CastResult, GenServer, NoReply
from .process import BadArg, _current, current, process_flag
from .terms import Atom, Pid, Term

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from .node import Node
    from .process import Process

# Public as `beamish.Registry` and `beamish.AlreadyRegistered` (one path per name).
__all__: list[str] = []

Keys = Literal["unique", "duplicate"]
Entry = tuple[Pid, Term]
"""One registration: the owner's pid and its value."""

VIA: Final = Atom("via")
_EXT: Final = "beamish.registry"
_OPTIONS: Final = frozenset({"keys", "name", "partitions", "meta"})


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Final = _Unset()


class AlreadyRegistered(Exception):
    """A unique key is taken by a live process, `pid` (Elixir's
    `{:error, {:already_registered, pid}}`). `pid` may be the caller itself."""

    def __init__(self, registry: str, key: Term, pid: Pid) -> None:
        super().__init__(f"{key!r} is already registered in {registry!r} by {pid!r}")
        self.registry = registry
        self.key: Term = key
        self.pid = pid


class Registry:
    """Elixir's `Registry`: start one with `start_link`, then use the static
    functions below with its name. The class is also the via module of
    `("via", Registry, (registry, key))` names."""

    __slots__ = ()

    # --- starting -------------------------------------------------------------

    @staticmethod
    async def start_link(
        *,
        keys: Keys,
        name: str,
        partitions: int = 1,
        meta: Mapping[Term, Term] | None = None,
    ) -> Pid:
        """Start a registry registered as `name` on this node, linked to the caller.

        Raises `StartError(("already_started", pid))` if `name` is taken and
        `BadArg` for an invalid option.
        """
        config = _config(keys=keys, name=name, partitions=partitions, meta=meta)
        return await _Partition.start_link(config._replace(parent=current().pid), name=name)

    @staticmethod
    def child_spec(arg: Mapping[str, Term] | None = None, /, **options: Term) -> ChildSpec:
        """The spec a supervisor starts the registry from: `arg` (a dict, as in
        `(Registry, {"keys": "unique", "name": "MyRegistry"})`) and/or keyword
        options, those of `start_link`. Its id is the registry's name."""
        opts: dict[str, Term] = dict(arg or {})
        opts.update(options)
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise TypeError(f"unknown Registry option(s) {sorted(unknown)}: expected {sorted(_OPTIONS)}")
        if "keys" not in opts or "name" not in opts:
            raise BadArg("a Registry needs keys= ('unique' or 'duplicate') and name=")
        config = _config(**opts)
        start = functools.partial(
            Registry.start_link,
            keys="unique" if config.unique else "duplicate",
            name=config.name,
            partitions=config.partitions,
            meta=config.meta,
        )
        return ChildSpec(id=config.name, start=(start, ()), modules=("Registry",))

    # --- registering ----------------------------------------------------------

    @staticmethod
    def register(registry: str, key: Term, value: Term) -> Pid:
        """Register the calling process under `key` with `value` and link it to
        the registry; return the registry's pid (Elixir's owner). Raises
        `AlreadyRegistered` if `key` is unique and held by a live process."""
        tab = _table(registry)
        me = current()
        if tab.unique:
            holder = tab.claim(key)
            if holder is not None:
                raise AlreadyRegistered(registry, key, holder)
        tab.insert(me.pid, key, value)
        tab.node.link(me, tab.pid)
        return tab.pid

    @staticmethod
    def unregister(registry: str, key: Term) -> None:
        """Remove every entry of the calling process under `key`; unlink it from
        the registry if it has no entries left."""
        tab = _table(registry)
        me = current()
        owned = tab.owners.get(me.pid)
        if owned:
            for seq in [seq for seq, k in owned.items() if k == key]:
                tab.remove(seq, key, me.pid)
            tab.unlink_if_unregistered(me)

    @staticmethod
    def unregister_match(registry: str, key: Term, pattern: Pattern) -> None:
        """Remove the calling process's entries under `key` whose value matches
        `pattern`; unlink it from the registry if it has no entries left."""
        tab = _table(registry)
        me = current()
        owned = tab.owners.get(me.pid)
        if not owned:
            return
        bucket = tab.entries.get(key)
        if bucket is None:
            return
        for seq in [seq for seq, k in owned.items() if k == key and matches(pattern, bucket[seq][1])]:
            tab.remove(seq, key, me.pid)
        tab.unlink_if_unregistered(me)

    @staticmethod
    def update_value(registry: str, key: Term, fn: Callable[[Term], Term]) -> tuple[Term, Term] | None:
        """Replace the calling process's value under the unique `key` with
        `fn(old)`; return `(new, old)`, or None if the caller does not hold
        `key` (Elixir's `:error`). Raises `BadArg` for a duplicate registry."""
        tab = _table(registry)
        if not tab.unique:
            raise BadArg(f"Registry.update_value is not supported for duplicate registries ({registry!r})")
        me = current().pid
        found = tab.entry(key)
        if found is None or found[1][0] != me:
            return None
        seq, (_, old) = found
        new = fn(old)
        tab.replace(seq, key, (me, new))  # a no-op if fn unregistered it
        return (new, old)

    # --- reading --------------------------------------------------------------

    @staticmethod
    def lookup(registry: str, key: Term) -> list[Entry]:
        """The `(pid, value)` entries under `key`, in registration order
        (at most one, with a live owner, for a unique key)."""
        tab = _table(registry)
        if tab.unique:
            bucket = tab.entries.get(key)
            return [] if bucket is None else [e for e in bucket.values() if tab.alive(e[0])]
        entries = tab.snapshot(key)
        return [] if entries is None else entries.copy()

    @staticmethod
    def match(registry: str, key: Term, pattern: Pattern) -> list[Entry]:
        """The entries under `key` whose value matches the template `pattern`."""
        return [e for e in Registry.lookup(registry, key) if matches(pattern, e[1])]

    @staticmethod
    def count_match(registry: str, key: Term, pattern: Pattern) -> int:
        """How many entries under `key` have a value matching `pattern`."""
        return len(Registry.match(registry, key, pattern))

    @staticmethod
    def dispatch(registry: str, key: Term, fn: Callable[[list[Entry]], object]) -> None:
        """Call `fn(entries)` in the caller with the list of `(pid, value)`
        entries under `key`; `fn` is not called when there are none."""
        # The fanout hot path: a node lookup, a dict lookup and a list copy
        # (fn gets its own list, as immutable as Elixir's is to it).
        tab = _table(registry)
        if tab.unique:
            bucket = tab.entries.get(key)
            if bucket:
                entries = [e for e in bucket.values() if tab.alive(e[0])]
                if entries:
                    fn(entries)
            return
        snapshot = tab.snapshot(key)
        if snapshot is not None:
            fn(snapshot.copy())

    @staticmethod
    def keys(registry: str, pid: Pid) -> list[Term]:
        """The keys `pid` is registered under, in registration order (a key
        repeats if it registered under it more than once); empty if `pid`
        is dead."""
        tab = _table(registry)
        owned = tab.owners.get(pid)
        if not owned or not tab.alive(pid):
            return []
        return list(owned.values())

    @staticmethod
    def values(registry: str, key: Term, pid: Pid) -> list[Term]:
        """The values `pid` registered under `key`; empty if `pid` is dead."""
        tab = _table(registry)
        owned = tab.owners.get(pid)
        if not owned or not tab.alive(pid):
            return []
        bucket = tab.entries.get(key)
        if bucket is None:
            return []
        return [bucket[seq][1] for seq, k in owned.items() if k == key]

    @staticmethod
    def count(registry: str) -> int:
        """The number of entries in the registry (constant time)."""
        return _table(registry).size

    # --- metadata -------------------------------------------------------------

    @staticmethod
    def meta(registry: str, key: Term) -> Term:
        """The registry's metadata under `key` (given to `start_link` or
        `put_meta`); raises `KeyError` if there is none."""
        tab = _table(registry)
        try:
            return tab.meta[key]
        except KeyError:
            raise KeyError(f"no metadata {key!r} in registry {registry!r}") from None

    @staticmethod
    def put_meta(registry: str, key: Term, value: Term) -> None:
        """Store `value` as the registry's metadata under `key`."""
        _table(registry).meta[key] = value

    @staticmethod
    def delete_meta(registry: str, key: Term) -> None:
        """Remove the registry's metadata under `key`, if any."""
        _table(registry).meta.pop(key, None)

    # --- via-names ------------------------------------------------------------

    @staticmethod
    def via(registry: str, key: Term, value: Term = _UNSET) -> tuple[Atom, type[Registry], tuple[Term, ...]]:
        """The name `("via", Registry, (registry, key))` of the process holding
        `key` in the unique `registry`; with `value`, a process started under
        this name is registered with it (otherwise with None)."""
        if value is _UNSET:
            return (VIA, Registry, (registry, key))
        return (VIA, Registry, (registry, key, value))

    @staticmethod
    def register_name(name: tuple[Term, ...], pid: Pid) -> bool:
        """Via protocol: register `pid` under `name = (registry, key[, value])`
        and link it to the registry; False if a live process holds the key."""
        registry, key = _via_key(name)
        tab = _unique_table(registry)
        if tab.claim(key) is not None:
            return False
        proc = tab.node.local(pid)
        if proc is None:
            raise BadArg(f"cannot register {pid!r} as {name!r}: not a live local process")
        tab.insert(pid, key, name[2] if len(name) == 3 else None)
        tab.node.link(proc, tab.pid)
        return True

    @staticmethod
    def unregister_name(name: tuple[Term, ...]) -> None:
        """Via protocol: remove `name` if the caller or a dead process holds it.
        Quiet when the registry is gone (this runs on failure paths)."""
        registry, key = _via_key(name)
        try:
            tab = _unique_table(registry)
        except BadArg:
            return
        found = tab.entry(key)
        if found is None:
            return
        seq, (holder, _) = found
        me = current()
        if holder == me.pid:
            tab.remove(seq, key, holder)
            tab.unlink_if_unregistered(me)
        elif not tab.alive(holder):
            tab.remove(seq, key, holder)

    @staticmethod
    def whereis_name(name: tuple[Term, ...]) -> Pid | None:
        """Via protocol: the live process holding `name`, or None."""
        registry, key = _via_key(name)
        tab = _unique_table(registry)
        found = tab.entry(key)
        if found is None:
            return None
        pid = found[1][0]
        return pid if tab.alive(pid) else None

    @staticmethod
    def send(name: tuple[Term, ...], msg: Term) -> None:
        """Via protocol: send `msg` to the process holding `name`; raises
        `BadArg` if there is none (Erlang's via send)."""
        pid = Registry.whereis_name(name)
        if pid is None:
            raise BadArg(f"no process is registered as {(VIA, 'Registry', name)!r}")
        _table(name[0]).node.send(pid, msg)


# --- internals -----------------------------------------------------------------


class _Config(NamedTuple):
    name: str
    unique: bool
    partitions: int
    meta: dict[Term, Term]
    parent: Pid | None = None


def _config(
    *,
    keys: Term,
    name: Term,
    partitions: Term = 1,
    meta: Term = None,
) -> _Config:
    """Check the options of `start_link`/`child_spec` (Elixir raises
    ArgumentError for each of these)."""
    if keys not in ("unique", "duplicate"):
        raise BadArg(f"invalid Registry keys {keys!r}: 'unique' or 'duplicate'")
    if not isinstance(name, str) or not name or name == "undefined":
        raise BadArg(f"invalid Registry name {name!r}: a non-empty str")
    if type(partitions) is not int or partitions < 1:
        raise BadArg(f"invalid Registry partitions {partitions!r}: a positive int")
    if meta is None:
        meta = {}
    elif not isinstance(meta, Mapping):
        raise BadArg(f"invalid Registry meta {meta!r}: a dict")
    return _Config(name, keys == "unique", partitions, dict(meta))


class _Table:
    """One registry's entries on one node: what Elixir keeps in its ETS tables.

    `entries` maps key -> {seq: (pid, value)} and `owners` maps pid ->
    {seq: key}: each entry has a sequence number, so removing an owner's
    entries costs one step per entry however many share its key, and a
    duplicate key's entries stay in registration order (dicts keep it).
    `snapshots` caches a key's entries as a list until the key changes:
    copying a list of 1,000 entries takes 2 us, building it from the dict
    7 us, and `dispatch` to a topic does it once per message.
    """

    __slots__ = (
        "entries",
        "meta",
        "name",
        "node",
        "owners",
        "parent",
        "pid",
        "proc",
        "seq",
        "size",
        "snapshots",
        "unique",
    )

    def __init__(self, config: _Config, proc: Process) -> None:
        self.name = config.name
        self.unique = config.unique
        self.meta = config.meta
        self.parent = config.parent
        self.proc = proc
        self.pid = proc.pid
        self.node: Node = proc.node
        self.entries: dict[Term, dict[int, Entry]] = {}
        self.owners: dict[Pid, dict[int, Term]] = {}
        self.snapshots: dict[Term, list[Entry]] = {}
        self.seq = 0
        self.size = 0

    def __repr__(self) -> str:
        kind = "unique" if self.unique else "duplicate"
        return f"<Registry {self.name!r} {kind} entries={self.size}>"

    def alive(self, pid: Pid) -> bool:
        proc = self.node.procs.get(pid.id)
        return proc is not None and (proc.pid is pid or proc.pid == pid)

    def snapshot(self, key: Term) -> list[Entry] | None:
        """A duplicate key's entries, cached (callers copy it), or None."""
        entries = self.snapshots.get(key)
        if entries is None:
            bucket = self.entries.get(key)
            if bucket is None:
                return None
            entries = self.snapshots[key] = list(bucket.values())
        return entries

    def insert(self, pid: Pid, key: Term, value: Term) -> None:
        self.snapshots.pop(key, None)
        self.seq += 1
        seq = self.seq
        bucket = self.entries.get(key)
        if bucket is None:
            self.entries[key] = {seq: (pid, value)}
        else:
            bucket[seq] = (pid, value)
        owned = self.owners.get(pid)
        if owned is None:
            self.owners[pid] = {seq: key}
        else:
            owned[seq] = key
        self.size += 1

    def replace(self, seq: int, key: Term, entry: Entry) -> None:
        bucket = self.entries.get(key)
        if bucket is not None and seq in bucket:
            self.snapshots.pop(key, None)
            bucket[seq] = entry

    def remove(self, seq: int, key: Term, pid: Pid) -> None:
        self.snapshots.pop(key, None)
        bucket = self.entries[key]
        del bucket[seq]
        if not bucket:
            del self.entries[key]
        owned = self.owners[pid]
        del owned[seq]
        if not owned:
            del self.owners[pid]
        self.size -= 1

    def entry(self, key: Term) -> tuple[int, Entry] | None:
        """A unique key's entry, live owner or not."""
        bucket = self.entries.get(key)
        if bucket:
            for item in bucket.items():
                return item
        return None

    def claim(self, key: Term) -> Pid | None:
        """Before registering a unique key: the live process holding it, or
        None after dropping the entry of a dead holder whose exit the
        registry has not handled yet (Elixir's register_key does the same)."""
        found = self.entry(key)
        if found is None:
            return None
        seq, (holder, _) = found
        if self.alive(holder):
            return holder
        self.remove(seq, key, holder)
        return None

    def drop_owner(self, pid: Pid) -> None:
        owned = self.owners.pop(pid, None)
        if owned is None:
            return
        entries = self.entries
        snapshots = self.snapshots
        for seq, key in owned.items():
            snapshots.pop(key, None)
            bucket = entries[key]
            del bucket[seq]
            if not bucket:
                del entries[key]
        self.size -= len(owned)

    def unlink_if_unregistered(self, proc: Process) -> None:
        # The parent's link is start_link's, not register's: keep it.
        if proc.pid not in self.owners and proc.pid != self.parent:
            self.node.unlink(proc, self.pid)


def _tables(node: Node) -> dict[str, _Table]:
    tables = node.extensions.get(_EXT)
    if tables is None:
        tables = node.extensions[_EXT] = {}
    return cast("dict[str, _Table]", tables)


def _table(registry: str) -> _Table:
    try:
        node = _current.get().node
    except LookupError:
        raise RuntimeError("Registry functions run inside a beamish process: start one with beamish.run(main)") from None
    tables = cast("dict[str, _Table] | None", node.extensions.get(_EXT))
    tab = None if tables is None else tables.get(registry)
    if tab is None or not tab.proc.alive:
        raise BadArg(f"unknown registry: {registry!r}")
    return tab


def _unique_table(registry: str) -> _Table:
    tab = _table(registry)
    if not tab.unique:
        raise BadArg(f"via-names need a unique registry: {registry!r} has duplicate keys")
    return tab


def _via_key(name: Term) -> tuple[str, Term]:
    if type(name) is tuple and len(name) in (2, 3):
        return name[0], name[1]
    raise BadArg(f"invalid Registry via-name {name!r}: (registry, key) or (registry, key, value)")


class _Partition(GenServer):
    """The registry process (Elixir's `Registry.Partition`): it owns the
    table, traps exits and removes the entries of each owner that exits."""

    def init(self, config: _Config) -> _Table:
        process_flag("trap_exit", True)
        tab = _Table(config, current())
        _tables(tab.node)[config.name] = tab
        return tab

    def handle_info(self, msg: Term, tab: _Table) -> CastResult | Awaitable[CastResult]:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == EXIT:
            tab.drop_owner(msg[1])
            return NoReply(tab)
        return super().handle_info(msg, tab)

    def terminate(self, reason: Term, tab: _Table) -> None:
        tables = _tables(tab.node)
        if tables.get(tab.name) is tab:
            del tables[tab.name]
