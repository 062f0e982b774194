"""pg: process groups across a cluster, speaking OTP's `pg` on the wire.

A *scope* is a process registered on each node under the scope's name
(`"pg"` by default) that keeps the members of every group in that scope. A
process joins a group on its own node; the scope tells the scopes of the
same name on every other node, Erlang's and Elixir's included, and each node
can then read the members of a group, local and remote, without a message.
Membership is eventually consistent: a join is visible on a peer one message
later, and a member that exits or whose node goes down is removed everywhere.

>>> import beamish
>>> from beamish.cluster import pg
>>> async def main():
...     await pg.start_link()                 # the default scope, "pg"
...     me = beamish.self()
...     await pg.join("workers", me)
...     await pg.join("workers", me)          # twice: a member per join
...     first = pg.get_members("workers") == [me, me]
...     left = await pg.leave("workers", me)
...     return first, left, pg.which_groups(), await pg.leave("idle", me)
>>> beamish.run(main)
(True, Atom('ok'), ['workers'], Atom('not_joined'))

## Scopes

`await pg.start(scope)` starts a scope on the calling node; `start_link`
links it to the caller; in a supervision tree give the supervisor
`pg.child_spec(scope)` (Erlang's `{pg, start_link, [Scope]}`, Elixir's
`{:pg, scope}`). Start it after `beamish.dist.start`: the scope subscribes to
node events when it starts and discovers the scopes of the nodes connected
then, and of every node that connects later. A scope started on a node that
is not distributed serves that node alone. Erlang nodes have the default
scope when started with `-kernel start_pg true`; a named one with
`pg:start_link(Scope)`.

## Joining and reading

`await join(group, pid_or_pids)` and `await leave(group, pid_or_pids)` are
calls to the scope process, as `pg:join/3` is a `gen_server:call`: they are
serialised with the scope's other work (its monitors, the messages from its
peers), so a join is never overtaken by the exit it races with. The pids
must be local (`BadArg` otherwise). A pid may join a group several times and
then appears that many times. `leave` returns `ok`, or `not_joined` if none
of the pids was in the group.

`get_members`, `get_local_members` and `which_groups` read the scope's table
in the caller, a dict lookup with no message, as pg reads its ETS table;
`get_members` of an unknown scope or group is `[]`. Members are listed
newest first, as in pg.

Groups are any Erlang term: str, bytes, atoms, ints, tuples. A `str` group
goes to Erlang as a binary, and a binary group from Erlang is the same group
as the `str` it decodes to (`"room"` and `b"room"` are one group); an atom
(`Atom("room")`) is a different group from the binary, as in Erlang.

## Monitoring

`monitor_scope()` returns `(ref, {group: members})` and from then on sends
the caller `(ref, "join", group, pids)` and `(ref, "leave", group, pids)`
for every change in the scope; `monitor(group)` returns `(ref, members)` and
sends the same messages for that group only. `demonitor(ref)` stops them and
removes any already in the caller's mailbox; it returns `ok`, or False for an
unknown ref. These are OTP 25.1's `pg:monitor_scope/1`, `monitor/2` and
`demonitor/2` (the OTP 25 on which this was tested has them).

## The wire

Exactly pg's messages: `{discover, ScopePid}` to `{Scope, Node}` on
`nodeup`; `{'$gen_cast', {sync, ScopePid, [{Group, Pids}]}}` in answer to a
discover (plus a discover of our own to a scope we did not know); then
`{join, ScopePid, Group, PidOrPids}` and `{leave, ScopePid, PidOrPids,
Groups}` to every known peer scope, sent only over a connection that exists
(pg's `[noconnect]`). Each peer scope is monitored: its DOWN (it stopped, or
its node went down or disconnected) removes its members. A join or leave
from a scope that has not discovered us is dropped, as pg does.

OTP: mirrors `pg.erl` (kernel 8.5, OTP 25); differs in that a malformed
message, a join naming pids of another node than its sender's, or a leave of
a group the peer never joined is logged in one line and dropped (pg crashes
on each: `badarg`, or `badkey` in `leave_remote`); a sync that changes the
members of a group we knew notifies monitors (pg's `sync_groups` updates
that group silently); and `which_groups` of an unknown scope is `[]`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final, cast

from beamish import dist
from beamish._atoms import DOWN, GEN_CAST, NODEDOWN, OK
from beamish._gen import ChildSpec
from beamish.gen_server import CallResult, CastResult, GenServer, NoReply, Reply
from beamish.process import NO_MESSAGE, BadArg, From, current, send
from beamish.process import demonitor as _demonitor
from beamish.process import monitor as _monitor
from beamish.terms import Atom, Pid, Ref, Term

if TYPE_CHECKING:
    from beamish.node import Node

__all__ = [
    "child_spec",
    "demonitor",
    "get_local_members",
    "get_members",
    "join",
    "leave",
    "monitor",
    "monitor_scope",
    "start",
    "start_link",
    "which_groups",
    "which_local_groups",
]

log = logging.getLogger("beamish.cluster")

DEFAULT_SCOPE: Final = "pg"
NOT_JOINED: Final = Atom("not_joined")
_DISCOVER: Final = Atom("discover")
_SYNC: Final = Atom("sync")
_JOIN: Final = Atom("join")
_LEAVE: Final = Atom("leave")
_NODEUP: Final = Atom("nodeup")
_EXT: Final = "beamish.cluster.pg"


async def start(scope: str = DEFAULT_SCOPE) -> Pid:
    """Start `scope` on the calling node, registered under its name
    (`pg:start/1`). Raises `StartError(("already_started", pid))` if taken."""
    return await _Scope.start(Atom(scope), name=scope)


async def start_link(scope: str = DEFAULT_SCOPE) -> Pid:
    """Start `scope` linked to the caller (`pg:start_link/1`)."""
    return await _Scope.start_link(Atom(scope), name=scope)


def child_spec(scope: str = DEFAULT_SCOPE) -> ChildSpec:
    """The spec a supervisor starts `scope` from; its id is `("pg", scope)`."""
    return ChildSpec(id=("pg", scope), start=(start_link, (scope,)), modules=("beamish.cluster.pg",))


async def join(group: Term, pid_or_pids: Pid | list[Pid], *, scope: str = DEFAULT_SCOPE) -> None:
    """Join one local process, or several, to `group` (`pg:join/3`)."""
    _ensure_local(pid_or_pids)
    _key(group)  # a group that cannot be a key raises TypeError here, in the caller
    await GenServer.call(scope, ("join_local", group, pid_or_pids), None)


async def leave(group: Term, pid_or_pids: Pid | list[Pid], *, scope: str = DEFAULT_SCOPE) -> Atom:
    """Remove one join of each of the local processes from `group`
    (`pg:leave/3`): `ok`, or `not_joined` if none of them was in it."""
    _ensure_local(pid_or_pids)
    _key(group)
    return cast("Atom", await GenServer.call(scope, ("leave_local", group, pid_or_pids), None))


def get_members(group: Term, *, scope: str = DEFAULT_SCOPE) -> list[Pid]:
    """Every member of `group` on every node, newest first (`pg:get_members/2`)."""
    tab = _table(scope)
    found = None if tab is None else tab.groups.get(_key(group))
    return [] if found is None else list(found.members)


def get_local_members(group: Term, *, scope: str = DEFAULT_SCOPE) -> list[Pid]:
    """The members of `group` on this node (`pg:get_local_members/2`)."""
    tab = _table(scope)
    found = None if tab is None else tab.groups.get(_key(group))
    return [] if found is None else list(found.local)


def which_groups(*, scope: str = DEFAULT_SCOPE) -> list[Term]:
    """Every group with at least one member (`pg:which_groups/1`)."""
    tab = _table(scope)
    return [] if tab is None else [g.term for g in tab.groups.values()]


def which_local_groups(*, scope: str = DEFAULT_SCOPE) -> list[Term]:
    """Every group with at least one member on this node."""
    tab = _table(scope)
    return [] if tab is None else [g.term for g in tab.groups.values() if g.local]


async def monitor_scope(scope: str = DEFAULT_SCOPE) -> tuple[Ref, dict[Term, list[Pid]]]:
    """The scope's groups and members now, and a ref; from now on the caller
    gets `(ref, "join" | "leave", group, pids)` for each change (OTP 25.1's
    `pg:monitor_scope/1`)."""
    return cast("tuple[Ref, dict[Term, list[Pid]]]", await GenServer.call(scope, ("monitor",), None))


async def monitor(group: Term, *, scope: str = DEFAULT_SCOPE) -> tuple[Ref, list[Pid]]:
    """`group`'s members now, and a ref; from now on the caller gets
    `(ref, "join" | "leave", group, pids)` for each change of `group` (OTP
    25.1's `pg:monitor/2`)."""
    return cast("tuple[Ref, list[Pid]]", await GenServer.call(scope, ("monitor", group), None))


async def demonitor(ref: Ref, *, scope: str = DEFAULT_SCOPE) -> Atom | bool:
    """Stop a `monitor_scope` or `monitor` and remove its messages from the
    caller's mailbox: `ok`, or False for an unknown ref (`pg:demonitor/2`)."""
    answer = cast("Atom | bool", await GenServer.call(scope, ("demonitor", ref), None))
    if answer == OK:
        proc = current()
        while proc.take(lambda m: type(m) is tuple and len(m) == 4 and m[0] == ref and m[1] in (_JOIN, _LEAVE)) is not NO_MESSAGE:
            pass
    return answer


# --- internals -----------------------------------------------------------------


class _Tag:
    """Marks a key made from a term Python would confuse with another
    (`Atom("a") == "a"`, `True == 1`, `1.0 == 1`, a list is unhashable)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_ATOM, _BOOL, _FLOAT, _LIST, _MAP = (_Tag(n) for n in ("atom", "bool", "float", "list", "map"))


def _key(term: Term) -> Term:
    """The dict key of a group: equal keys for terms Erlang holds equal
    (`=:=`), and a binary the same key as the str it decodes to, since a
    `str` travels as a binary and comes back from Erlang as bytes. Raises
    TypeError for a term that cannot be a key (an unhashable object)."""
    t = type(term)
    if t is str or t is int or t is Pid:
        return term
    if t is Atom:
        return (_ATOM, str(term))
    if t is bytes:
        try:
            return cast("bytes", term).decode()
        except UnicodeDecodeError:
            return term
    if t is tuple:
        return tuple(_key(x) for x in cast("tuple[Term, ...]", term))
    if t is list:
        return (_LIST, *(_key(x) for x in cast("list[Term]", term)))
    if t is bool:
        return (_BOOL, term)
    if t is float:
        return (_FLOAT, term)
    if t is dict:
        items = cast("dict[Term, Term]", term).items()
        return (_MAP, frozenset((_key(k), _key(v)) for k, v in items))
    hash(term)
    return term


class _Group:
    """One row of pg's ETS table: `{Group, AllPids, LocalPids}`."""

    __slots__ = ("local", "members", "term")

    def __init__(self, term: Term) -> None:
        self.term = term
        self.members: list[Pid] = []
        self.local: list[Pid] = []


class _State:
    """A scope's state (pg's `#state{}`) and its table, which the readers
    find in the node's extensions."""

    __slots__ = (
        "group_monitors", "groups", "local", "monitored_groups", "name", "node", "pid", "remote",
        "scope_monitors",
    )  # fmt: skip

    def __init__(self, name: Atom, node: Node, pid: Pid) -> None:
        self.name = name
        self.node = node
        self.pid = pid
        self.groups: dict[Term, _Group] = {}
        # Local members: their monitor and the keys of the groups they joined,
        # a key once per join (pg's `local`).
        self.local: dict[Pid, tuple[Ref, list[Term]]] = {}
        # Peer scopes: our monitor of it and its members by group key (pg's `remote`).
        self.remote: dict[Pid, tuple[Ref, dict[Term, list[Pid]]]] = {}
        self.scope_monitors: dict[Ref, Pid] = {}
        self.group_monitors: dict[Ref, tuple[Pid, Term]] = {}
        self.monitored_groups: dict[Term, list[tuple[Pid, Ref]]] = {}

    # --- the table ------------------------------------------------------------

    def add(self, key: Term, term: Term, pids: list[Pid], local: bool) -> None:
        row = self.groups.get(key)
        if row is None:
            row = self.groups[key] = _Group(term)
        # Newest first, as pg's `Pids ++ All`.
        row.members = pids + row.members
        if local:
            row.local = pids + row.local
        self.notify(_JOIN, key, row.term, pids)

    def remove(self, key: Term, pids: list[Pid], local: bool) -> None:
        row = self.groups.get(key)
        if row is None:
            return  # pg: a DOWN still queued while the process left
        row.members = _minus(row.members, pids)
        if local:
            row.local = _minus(row.local, pids)
        if not row.members:
            del self.groups[key]
        self.notify(_LEAVE, key, row.term, pids)

    def notify(self, action: Atom, key: Term, term: Term, pids: list[Pid]) -> None:
        if not (self.scope_monitors or self.monitored_groups):
            return
        for ref, pid in self.scope_monitors.items():
            self.send_noconnect(pid, (ref, action, term, pids))
        for pid, ref in self.monitored_groups.get(key, ()):
            self.send_noconnect(pid, (ref, action, term, pids))

    # --- the wire -------------------------------------------------------------

    def send_noconnect(self, pid: Pid, msg: Term) -> None:
        """`erlang:send(Pid, Msg, [noconnect])`: a peer that is gone is not
        reconnected to by a broadcast (its DOWN is on the way)."""
        if pid.node == self.node.name or pid.node in dist.nodes():
            send(pid, msg)

    def broadcast(self, msg: Term) -> None:
        if self.remote:
            connected = set(dist.nodes())
            for peer in self.remote:
                if peer.node in connected:
                    send(peer, msg)

    def local_groups(self) -> list[tuple[Term, list[Pid]]]:
        """pg's `all_local_pids`: each local member once per join."""
        out: dict[Term, list[Pid]] = {}
        for pid, (_, keys) in self.local.items():
            for key in keys:
                out.setdefault(key, []).append(pid)
        return [(self.groups[k].term, pids) for k, pids in out.items()]

    def term_of(self, key: Term, term: Term) -> Term:
        row = self.groups.get(key)
        return term if row is None else row.term


def _minus(members: list[Pid], pids: list[Pid]) -> list[Pid]:
    """Erlang's `Members -- Pids`: one occurrence removed per pid."""
    out = list(members)
    for pid in pids:
        try:
            out.remove(pid)
        except ValueError:
            pass
    return out


def _pids(pid_or_pids: Term) -> list[Pid] | None:
    if type(pid_or_pids) is Pid:
        return [pid_or_pids]
    if type(pid_or_pids) is list and all(type(p) is Pid for p in pid_or_pids):
        return cast("list[Pid]", pid_or_pids)
    return None


def _ensure_local(pid_or_pids: Term) -> None:
    here = current().node.name
    pids = _pids(pid_or_pids)
    if pids is None:
        raise BadArg(f"not a pid or a list of pids: {pid_or_pids!r}")
    for pid in pids:
        if pid.node != here:
            raise BadArg(f"not a local pid: {pid!r} (pg joins only processes of its own node)")


def _tables(node: Node) -> dict[str, _State]:
    tables = node.extensions.get(_EXT)
    if tables is None:
        tables = node.extensions[_EXT] = {}
    return cast("dict[str, _State]", tables)


def _table(scope: str) -> _State | None:
    tables = cast("dict[str, _State] | None", current().node.extensions.get(_EXT))
    return None if tables is None else tables.get(scope)


def _iter_sync(groups: Term) -> Iterator[tuple[Term, Term, list[Pid]]] | None:
    """The `[{Group, Pids}]` of a sync as (key, group, pids), or None if malformed."""
    if type(groups) is not list:
        return None
    out = []
    for item in groups:
        if type(item) is not tuple or len(item) != 2:
            return None
        pids = _pids(item[1])
        if pids is None:
            return None
        out.append((_key(item[0]), item[0], pids))
    return iter(out)


class _Scope(GenServer):
    """The scope process (pg's gen_server)."""

    def init(self, name: Atom) -> _State:
        me = current()
        st = _State(name, me.node, me.pid)
        _tables(me.node)[str(name)] = st
        if dist.is_alive():
            dist.monitor_nodes(True)
            for peer in dist.nodes():
                send((name, peer), (_DISCOVER, st.pid))
        return st

    def terminate(self, reason: Term, st: _State) -> None:
        tables = _tables(st.node)
        if tables.get(str(st.name)) is st:
            del tables[str(st.name)]

    # --- calls from local processes -------------------------------------------

    def handle_call(self, request: Term, from_: From, st: _State) -> CallResult:
        caller = from_[0] if type(from_) in (From, tuple) and len(from_) == 2 else None
        if type(caller) is not Pid or caller.node != st.node.name or type(request) is not tuple or not request:
            # pg's API calls only the local scope; a call from elsewhere is not ours to serve.
            log.warning("pg scope %s dropped a call it does not serve: %.200r", st.name, request)
            return NoReply(st)
        try:
            return Reply(self._call(request, caller, st), st)
        except (TypeError, ValueError) as exc:
            log.warning("pg scope %s refused %.200r: %s", st.name, request, exc)
            return Reply(("error", "badarg"), st)

    def _call(self, request: tuple[Term, ...], caller: Pid, st: _State) -> Term:
        match request:
            case ("join_local", group, pid_or_pids):
                pids = _pids(pid_or_pids)
                if pids is None or any(p.node != st.node.name for p in pids):
                    raise ValueError("not local pids")
                key = _key(group)
                for pid in pids:
                    held = st.local.get(pid)
                    if held is None:
                        st.local[pid] = (_monitor(pid), [key])
                    else:
                        held[1].append(key)
                st.add(key, group, list(pids), True)
                st.broadcast((_JOIN, st.pid, st.term_of(key, group), pid_or_pids))
                return OK
            case ("leave_local", group, pid_or_pids):
                pids = _pids(pid_or_pids)
                if pids is None:
                    raise ValueError("not pids")
                key = _key(group)
                left = False
                for pid in pids:
                    held = st.local.get(pid)
                    if held is None or key not in held[1]:
                        continue
                    left = True
                    held[1].remove(key)
                    if not held[1]:
                        _demonitor(held[0])
                        del st.local[pid]
                if not left:
                    return NOT_JOINED
                term = st.term_of(key, group)
                st.remove(key, list(pids), True)
                st.broadcast((_LEAVE, st.pid, pid_or_pids, [term]))
                return OK
            case ("monitor",):
                ref = _monitor(caller)
                snapshot = {g.term: list(g.members) for g in st.groups.values()}
                st.scope_monitors[ref] = caller
                return (ref, snapshot)
            case ("monitor", group):
                key = _key(group)
                ref = _monitor(caller)
                row = st.groups.get(key)
                st.group_monitors[ref] = (caller, key)
                st.monitored_groups.setdefault(key, []).append((caller, ref))
                return (ref, [] if row is None else list(row.members))
            case ("demonitor", ref):
                if st.scope_monitors.pop(cast("Ref", ref), None) is not None:
                    _demonitor(cast("Ref", ref))
                    return OK
                if self._drop_group_monitor(cast("Ref", ref), st):
                    _demonitor(cast("Ref", ref))
                    return OK
                return False
        raise ValueError("unknown request")

    @staticmethod
    def _drop_group_monitor(ref: Ref, st: _State) -> bool:
        found = st.group_monitors.pop(ref, None)
        if found is None:
            return False
        pid, key = found
        watchers = [w for w in st.monitored_groups.get(key, ()) if w != (pid, ref)]
        if watchers:
            st.monitored_groups[key] = watchers
        else:
            st.monitored_groups.pop(key, None)
        return True

    # --- messages from peer scopes, monitors and the node ----------------------

    def handle_cast(self, request: Term, st: _State) -> CastResult:
        try:
            if type(request) is tuple and len(request) == 3 and request[0] == _SYNC and type(request[1]) is Pid:
                groups = _iter_sync(request[2])
                if groups is not None and self._from_peer_node(request[1], groups, st):
                    return NoReply(st)
        except TypeError:
            pass
        log.warning("pg scope %s dropped a malformed cast: %.200r", st.name, request)
        return NoReply(st)

    def handle_info(self, msg: Term, st: _State) -> CastResult:
        try:
            if type(msg) is tuple and msg and self._info(msg, st):
                return NoReply(st)
        except TypeError:
            pass  # a group that cannot be a key
        log.warning("pg scope %s dropped a malformed message: %.200r", st.name, msg)
        return NoReply(st)

    def _info(self, msg: tuple[Term, ...], st: _State) -> bool:
        """Handle `msg`; False if it is malformed (the caller logs it)."""
        tag = msg[0]
        n = len(msg)
        if tag == _JOIN and n == 4:
            peer, group, pids = msg[1], msg[2], _pids(msg[3])
            if type(peer) is not Pid or pids is None or any(p.node != peer.node for p in pids):
                return False
            known = st.remote.get(peer)
            if known is None:
                return True  # pg: a join from a scope that left, or never discovered us
            key = _key(group)
            st.add(key, group, list(pids), False)
            known[1][key] = pids + known[1].get(key, [])
            return True
        if tag == _LEAVE and n == 4:
            peer, pids, groups = msg[1], _pids(msg[2]), msg[3]
            if type(peer) is not Pid or pids is None or type(groups) is not list:
                return False
            known = st.remote.get(peer)
            if known is None:
                return True
            for group in groups:
                key = _key(group)
                theirs = known[1].get(key)
                if theirs is None:
                    continue  # pg would crash (badkey): the peer never told us of this group
                rest = _minus(theirs, pids)
                if rest:
                    known[1][key] = rest
                else:
                    del known[1][key]
                st.remove(key, pids, False)
            return True
        if tag == _DISCOVER and n == 2:
            peer = msg[1]
            if type(peer) is not Pid or peer.node == st.node.name:
                return False
            # pg answers with gen_server:cast, which connects if it must.
            send(peer, (GEN_CAST, (_SYNC, st.pid, st.local_groups())))
            if peer not in st.remote:
                st.remote[peer] = (_monitor(peer), {})
                st.send_noconnect(peer, (_DISCOVER, st.pid))
            return True
        if tag == DOWN and n == 5:
            self._down(msg[1], msg[3], st)
            return True
        if tag == _NODEUP and n == 2:
            if msg[1] != st.node.name:
                send((st.name, msg[1]), (_DISCOVER, st.pid))
            return True
        # nodedown: pg waits for the DOWN of the peer's scope.
        return tag == NODEDOWN and n == 2

    def _from_peer_node(self, peer: Pid, groups: Iterable[tuple[Term, Term, list[Pid]]], st: _State) -> bool:
        """pg's `handle_sync`: what the peer scope says it has replaces what we knew."""
        synced = list(groups)
        if peer.node == st.node.name or any(p.node != peer.node for _, _, pids in synced for p in pids):
            return False
        known = st.remote.get(peer)
        if known is None:
            known = st.remote[peer] = (_monitor(peer), {})
        old = known[1]
        new: dict[Term, list[Pid]] = {}
        for key, group, pids in synced:
            new[key] = pids + new.get(key, [])
            before = old.pop(key, None)
            if before is None:
                st.add(key, group, list(pids), False)
            elif before != pids:
                st.remove(key, _minus(before, pids), False)
                st.add(key, group, _minus(pids, before), False)
        for key, pids in old.items():
            st.remove(key, pids, False)
        st.remote[peer] = (known[0], new)
        return True

    def _down(self, ref: Term, pid: Term, st: _State) -> None:
        if type(pid) is not Pid:
            return
        if pid.node == st.node.name:
            held = st.local.get(pid)
            if held is not None and held[0] == ref:
                del st.local[pid]
                keys = held[1]
                terms = [st.groups[key].term for key in keys]
                for key in keys:
                    st.remove(key, [pid], True)
                st.broadcast((_LEAVE, st.pid, pid, terms))
                return
        else:
            known = st.remote.get(pid)
            if known is not None and known[0] == ref:
                del st.remote[pid]
                for key, pids in known[1].items():
                    st.remove(key, pids, False)
                return
        if st.scope_monitors.pop(cast("Ref", ref), None) is None:
            self._drop_group_monitor(cast("Ref", ref), st)

