"""`global`, spoken on the wire: the cluster-wide name registry and locks
every published Erlang node runs (`global_name_server`), so that a beamish
node is a full member of a mixed cluster.

The reference is OTP 25's `lib/kernel/src/global.erl` (protocol version 8),
and this module follows its structure: a name server (`_Server`), one
permanent locker process (`_Locker`), a registrar that runs registrations
under the cluster-wide `global` lock, and a resolver per connection attempt.
Every message to or from a peer has exactly the shape `global.erl` sends and
matches; the comments name the function of `global.erl` each part mirrors.

When two nodes connect, each side's locker takes the lock
`{global, [LockerA, LockerB]}` in its own partition (every node it knows),
the two servers exchange their names, conflicting names are resolved (the
smaller node runs the resolve function of the name's owner), and each side
tells the nodes of its partition about the other's (`new_nodes`), which
then connect to them: that is how the fully connected mesh is kept.

Beside Erlang's protocol, a beamish node differs in three documented ways:
- a Python resolve function (`register_name(..., resolve=fn)`) never leaves
  the node: the wire carries `fun global:random_exit_name/3` for it, and a
  conflict resolved on any node calls back this node (`global:resolve_it`
  by rpc, as Erlang does), which runs `fn`;
- an Erlang closure given as a resolve method is carried and sent back
  unchanged, but cannot run here: a conflict it should resolve is resolved
  as when an Erlang resolve function fails (the name is unregistered);
- `prevent_overlapping_partitions` is on, as OTP 25's default: a node that
  hears that two nodes it knows lost their connection disconnects from the
  one on the other side (see `beamish.cluster.global_`).

>>> from beamish.dist._global import VSN, lock_id
>>> VSN
8
"""

from __future__ import annotations

import itertools
import logging
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._atoms import ERROR, EXIT, GEN_CALL, GEN_CAST, KILL, NODEDOWN, OK, UNDEFINED
from .._gen import reply
from ..gen_server import GenServer, NoReply, Reply
from ..process import (
    NO_MESSAGE,
    BadArg,
    Exit,
    current,
    demonitor,
    exit,
    is_alive,
    make_ref,
    monitor,
    receive,
    send,
    spawn,
    spawn_link,
)
from ..terms import Atom, Pid, Ref, Term
from . import flags as F
from . import rpc
from .etf import ExportFun, Fun, freeze

if TYPE_CHECKING:
    from ..node import Node
    from ._kernel import Kernel

__all__: list[str] = []  # private: `beamish.cluster.global_` is the public face

log = logging.getLogger("beamish.global")

VSN: Final = 8
"""global's protocol version (OTP 25)."""
POP_VSN: Final = 7  # "prevent overlapping partitions" and known-node versions

GNS: Final = Atom("global_name_server")
GLOBAL: Final = Atom("global")
YES: Final = Atom("yes")
NO: Final = Atom("no")
NONE: Final = Atom("none")
ABORTED: Final = Atom("aborted")
UNUSED: Final = Atom("unused")
NO_LONGER_A_PID: Final = Atom("no_longer_a_pid")
NAME_CONFLICT: Final = Atom("global_name_conflict")
# The protocol's message tags.
INIT_CONNECT: Final = Atom("init_connect")
INIT_CONNECT_ACK: Final = Atom("init_connect_ack")
CANCEL_CONNECT: Final = Atom("cancel_connect")
EXCHANGE: Final = Atom("exchange")
RESOLVED: Final = Atom("resolved")
NEW_NODES: Final = Atom("new_nodes")
IN_SYNC: Final = Atom("in_sync")
LOCK_SET: Final = Atom("lock_set")
LOST_CONNECTION: Final = Atom("lost_connection")
REMOVE_CONNECTION: Final = Atom("remove_connection")
LOCKER: Final = Atom("locker")
LOCK_IS_SET: Final = Atom("lock_is_set")
EXCHANGE_OPS: Final = Atom("exchange_ops")

RANDOM_EXIT_NAME: Final = ExportFun(GLOBAL, Atom("random_exit_name"), 3)
RANDOM_NOTIFY_NAME: Final = ExportFun(GLOBAL, Atom("random_notify_name"), 3)
NOTIFY_ALL_NAME: Final = ExportFun(GLOBAL, Atom("notify_all_name"), 3)

Resolve = Callable[[Term, Pid, Pid], "Pid | Atom | Awaitable[Pid | Atom]"]
"""A resolve function: `(name, pid1, pid2)` returns the pid that keeps the
name, or `none` to unregister it (it may be `async def`)."""

Method = Resolve | ExportFun | Fun | str | None
"""What `register_name`'s `resolve` may be (see `beamish.cluster.global_`)."""

_tags = itertools.count(secrets.randbelow(1 << 40))


def pid_order(pid: Pid) -> tuple[int, int, str, int]:
    """Erlang's term order of pids (OTP 25, checked with `lists:sort/1` on
    pids built by `binary_to_term`): serial, then number, then the node's
    name, then creation. Both lockers must sort their ids alike."""
    return (pid.serial, pid.id, str(pid.node), pid.creation)


def lock_id(locker: Pid, his_locker: Pid) -> tuple[Atom, list[Pid]]:
    """`locker_lock_id/2`: both lockers compute the same requester id."""
    return (GLOBAL, sorted([locker, his_locker], key=pid_order))


def is_tuple(m: Term, n: int) -> bool:
    return type(m) is tuple and len(m) == n


@dataclass
class _Him:
    """A node our locker is asked to lock the partitions with (`#him{}`)."""

    node: Atom
    locker: Pid
    vsn: int
    my_tag: Term
    his_tag: Term


class Global:
    """A node's `global` tables (global.erl's ETS tables) and its client API.

    Installed as `node.extensions["global"]` by the distribution, which is
    how `("global", name)` server names find it (`beamish._gen`). Reads
    (`whereis_name`, `registered_names`) look at the tables directly, as
    Erlang reads its ETS tables; changes go through the server process.
    """

    def __init__(self, node: Node, kernel: Kernel, *, prevent_overlapping_partitions: bool = True) -> None:
        self.node = node
        self.kernel = kernel
        self.me = Atom(node.name)
        self.pop = prevent_overlapping_partitions
        # global_names: name -> (pid, method, monitor ref)
        self.name_table: dict[Term, tuple[Pid, Term, Ref]] = {}
        self.pid_names: dict[Pid, set[Term]] = {}
        self.ref_names: dict[Ref, Term] = {}
        # Python resolve functions of the names registered from this node.
        self.resolvers_py: dict[Term, Resolve] = {}
        # global_locks: resource -> (requester id, [(pid, monitor ref)])
        self.locks: dict[Term, tuple[Term, list[tuple[Pid, Ref]]]] = {}
        self.ref_locks: dict[Ref, set[Term]] = {}
        self.global_lock_down = False
        # #state.known: known node -> its protocol version; pending connects; removals
        self.known: dict[Atom, int] = {}
        self.pending: dict[Atom, int] = {}
        self.removing: set[Atom] = set()
        self.synced: list[Atom] = []
        self.resolvers: dict[Atom, tuple[Term, Pid]] = {}
        self.syncers: list[Pid] = []
        # The process dictionary's per-node entries of global.erl.
        self.tag_my: dict[Atom, Term] = {}
        self.tag_his: dict[Atom, Term] = {}
        self.prot_vsn: dict[Atom, int] = {}
        self.wait_lock: dict[Atom, Term] = {}
        self.save_ops: dict[Atom, Term] = {}
        self.pre_connect: dict[Atom, tuple[int, Term, Term]] = {}
        self.lock_ids: dict[Atom, Term] = {}
        self.lost: dict[tuple[Atom, Atom], tuple[int, int]] = {}
        self.creation_x = secrets.randbits(62)
        self.server: Pid | None = None
        self.locker: Pid | None = None
        self.registrar: Pid | None = None

    async def start(self) -> None:
        self.server = await _Server.start(self, name=str(GNS))
        self.node.extensions["global"] = self
        self.kernel.services.builtins[("global", "resolve_it")] = self.resolve_it

    def stop(self) -> None:
        """The distribution stops: the server goes (its locker and registrar,
        linked, with it) and `("global", name)` names stop resolving."""
        if self.server is not None and self.node.is_alive(self.server):
            self.node.signal_exit(self.server, self.server, KILL, False)
        if self.node.extensions.get("global") is self:
            del self.node.extensions["global"]
        self.kernel.services.builtins.pop(("global", "resolve_it"), None)

    def to_locker(self, msg: Term) -> None:
        if self.locker is not None:
            send(self.locker, msg)

    # --- reads ----------------------------------------------------------------

    def whereis_name(self, name: Term) -> Pid | None:
        """`where/1`: a local pid that has died is already gone."""
        entry = self.name_table.get(freeze(name))
        if entry is None:
            return None
        pid = entry[0]
        if pid.node == self.me and not self.node.is_alive(pid):
            return None
        return pid

    def registered_names(self) -> list[Term]:
        return list(self.name_table)

    def is_lock_set(self, resource: Term) -> bool:
        return resource in self.locks

    def known_nodes(self) -> list[Atom]:
        return list(self.known)

    # --- the client API (run in the calling process) --------------------------

    async def register_name(self, name: Term, pid: Pid, resolve: Method = None) -> bool:
        if type(pid) is not Pid:
            raise BadArg(f"global names register a pid, not {pid!r}")
        method = self._wire_method(name, resolve)
        name = freeze(name)

        async def fn(nodes: list[Atom]) -> Term:
            if self.whereis_name(name) is None and self._check_dupname(name, pid):
                await multi_call(nodes, GNS, (Atom("register"), name, pid, method))
                if callable(resolve) and not isinstance(resolve, ExportFun | Fun):
                    self.resolvers_py[name] = resolve
                return YES
            return NO

        return bool(await self._registrar(fn) == YES)

    async def re_register_name(self, name: Term, pid: Pid, resolve: Method = None) -> None:
        if type(pid) is not Pid:
            raise BadArg(f"global names register a pid, not {pid!r}")
        method = self._wire_method(name, resolve)
        name = freeze(name)

        async def fn(nodes: list[Atom]) -> Term:
            await multi_call(nodes, GNS, (Atom("register"), name, pid, method))
            if callable(resolve) and not isinstance(resolve, ExportFun | Fun):
                self.resolvers_py[name] = resolve
            return YES

        await self._registrar(fn)

    async def unregister_name(self, name: Term) -> None:
        name = freeze(name)
        if name not in self.name_table:
            return

        async def fn(nodes: list[Atom]) -> Term:
            await multi_call(nodes, GNS, (Atom("unregister"), name))
            return OK

        await self._registrar(fn)

    def send(self, name: Term, msg: Term) -> Pid:
        """`global:send/2`: the pid the message went to; `Exit({badarg,
        {Name, Msg}})` when the name is not registered, as Erlang exits."""
        pid = self.whereis_name(name)
        if pid is None:
            raise Exit((Atom("badarg"), (name, msg)))
        send(pid, msg)
        return pid

    async def set_lock(self, id_: Term, nodes: list[Atom] | None = None, retries: int | None = None) -> bool:
        if not is_tuple(id_, 2):
            raise BadArg(f"a lock id is (resource, requester), not {id_!r}")
        nodes = self._all_nodes() if nodes is None else [Atom(n) for n in nodes]
        times = 1
        while True:
            if not nodes or await set_lock_on_nodes(self, id_, nodes):
                return True
            if retries is not None:
                if retries <= 0:
                    return False
                retries -= 1
            await random_sleep(times)
            times += 1

    async def del_lock(self, id_: Term, nodes: list[Atom] | None = None) -> bool:
        nodes = self._all_nodes() if nodes is None else [Atom(n) for n in nodes]
        await multi_call(nodes, GNS, (Atom("del_lock"), id_))
        return True

    async def trans(
        self, id_: Term, fn: Callable[[], Any], nodes: list[Atom] | None = None, retries: int | None = None
    ) -> Any:
        nodes = self._all_nodes() if nodes is None else [Atom(n) for n in nodes]
        if not await self.set_lock(id_, nodes, retries):
            return ABORTED
        try:
            result = fn()
            if hasattr(result, "__await__"):
                result = await result
            return result
        finally:
            await self.del_lock(id_, nodes)

    async def sync(self, nodes: list[Atom] | None = None, timeout: float | None = None) -> None:
        from ..gen_server import GenServer

        targets = self.kernel.nodes() if nodes is None else [Atom(n) for n in nodes]
        await GenServer.call(GNS, (Atom("sync"), targets), timeout)

    def _all_nodes(self) -> list[Atom]:
        return [self.me, *self.kernel.nodes()]

    async def _registrar(self, fn: Callable[[list[Atom]], Awaitable[Term]]) -> Term:
        return await GenServer.call(GNS, (Atom("registrar"), fn), None)

    def _wire_method(self, name: Term, resolve: Method) -> Term:
        if resolve is None:
            return RANDOM_EXIT_NAME
        if isinstance(resolve, ExportFun | Fun):
            return resolve
        if isinstance(resolve, str):
            method = {"random_exit_name": RANDOM_EXIT_NAME, "random_notify_name": RANDOM_NOTIFY_NAME,
                      "notify_all_name": NOTIFY_ALL_NAME}.get(resolve)
            if method is None:
                raise BadArg(f"unknown resolve method {resolve!r}")
            return method
        if not callable(resolve):
            raise BadArg(f"a resolve method is a function (name, pid1, pid2), not {resolve!r}")
        return RANDOM_EXIT_NAME  # the wire's stand-in; this node runs `resolve` (see the module doc)

    def _check_dupname(self, name: Term, pid: Pid) -> bool:
        names = self.pid_names.get(pid)
        if not names:
            return True
        log.error("global: %r registered under several names: %r", pid, [name, *names])
        return False

    # --- resolving a conflict (global:resolve_it/4, also called by peers) -----

    async def resolve_it(self, method: Term, name: Term, pid1: Term, pid2: Term) -> Term:
        """Run the resolve method of a conflicting name; called here by a
        peer (`rpc:call(Node, global, resolve_it, ...)`) when `pid2` is ours."""
        if type(pid1) is not Pid or type(pid2) is not Pid:
            return (EXIT, Atom("badarg"))
        mine = self.resolvers_py.get(freeze(name)) if pid2.node == self.me else None
        try:
            if mine is not None:
                result = mine(name, pid1, pid2)
                if hasattr(result, "__await__"):
                    result = await result
                return result
            if method == RANDOM_EXIT_NAME:
                return random_exit_name(name, pid1, pid2)
            if method == RANDOM_NOTIFY_NAME:
                return random_notify_name(name, pid1, pid2)
            if method == NOTIFY_ALL_NAME:
                return notify_all_name(name, pid1, pid2)
        except Exception as exc:  # `catch Method(...)`: the caller unregisters the name
            log.info("global: the resolve function for %r failed: %r", name, exc)
            return (EXIT, ERROR)
        # An Erlang closure cannot run here: fail as a failing resolve fun does.
        return (EXIT, (Atom("undef"), [(GLOBAL, Atom("resolve_it"), 4, [])]))

    # --- table updates (run by the server) ------------------------------------

    def ins_name(self, name: Term, pid: Pid, method: Term, from_: Term, extra: Term) -> None:
        name = freeze(name)
        self._delete_name_keep_pid(name)
        ref = monitor(pid)
        self.name_table[name] = (pid, method, ref)
        self.pid_names.setdefault(pid, set()).add(name)
        self.ref_names[ref] = name
        if not self._lock_still_set(from_, extra):
            self.delete_name(name)

    def _lock_still_set(self, from_: Term, extra: Term) -> bool:
        entry = self.locks.get(GLOBAL)
        if entry is None:
            return not self.global_lock_down
        req, pid_refs = entry
        if type(from_) is Pid:
            return any(p == from_ for p, _ in pid_refs)
        # From a node: the lock its exchange ran under, `{global, ReqId}`.
        info = _extra_info(Atom("lock"), extra)
        return is_tuple(info, 2) and is_tuple(info[1], 2) and bool(info[1][1] == req)

    def _delete_name_keep_pid(self, name: Term) -> None:
        entry = self.name_table.get(name)
        if entry is not None:
            self._forget_name(name, *entry)

    def delete_name(self, name: Term, *, gone: bool = False) -> None:
        name = freeze(name)
        entry = self.name_table.pop(name, None)
        if entry is not None:
            self._forget_name(name, *entry, gone=gone)

    def _forget_name(self, name: Term, pid: Pid, method: Term, ref: Ref, *, gone: bool = False) -> None:
        """`gone`: the monitor has fired already (its DOWN is being handled):
        nothing to take back, and no mailbox to scan (a storm of DOWNs made
        each scan O(queue), the whole storm quadratic)."""
        if not gone:
            demonitor(ref, flush=True)
        names = self.pid_names.get(pid)
        if names is not None:
            names.discard(name)
            if not names:
                del self.pid_names[pid]
        self.ref_names.pop(ref, None)
        if pid.node == self.me and name not in self.name_table:
            self.resolvers_py.pop(name, None)

    def can_set_lock(self, id_: Term) -> list[tuple[Pid, Ref]] | None:
        """`can_set_lock/1`: the lock's holders if `id_` may take it, else None."""
        resource, requester = id_
        entry = self.locks.get(resource)
        if entry is None:
            return []
        if entry[0] == requester:
            return entry[1]
        return None

    def handle_set_lock(self, id_: Term, pid: Pid) -> bool:
        holders = self.can_set_lock(id_)
        if holders is None:
            return False
        if any(p == pid for p, _ in holders):
            return True
        resource, requester = id_
        ref = monitor(pid)
        self.ref_locks.setdefault(ref, set()).add(resource)
        self.locks[resource] = (requester, [(pid, ref), *holders])
        return True

    def handle_del_lock(self, id_: Term, pid: Term) -> None:
        resource, requester = id_
        entry = self.locks.get(resource)
        if entry is not None and entry[0] == requester:
            self._remove_lock(resource, requester, pid, entry[1], down=False)

    def _remove_lock(self, resource: Term, requester: Term, pid: Term, holders: list[tuple[Pid, Ref]], *, down: bool) -> None:
        keep = []
        for p, ref in holders:
            if p == pid:
                if not down:
                    demonitor(ref, flush=True)
                self.ref_locks.pop(ref, None)
            else:
                keep.append((p, ref))
        if keep:
            self.locks[resource] = (requester, keep)
        else:
            self.locks.pop(resource, None)
            if resource == GLOBAL:
                self.global_lock_down = down

    def down(self, ref: Ref) -> None:
        """A monitored lock holder or name owner is gone (`'DOWN'`)."""
        for resource in self.ref_locks.pop(ref, ()):
            entry = self.locks.get(resource)
            if entry is not None:
                holder = next((p for p, r in entry[1] if r == ref), None)
                if holder is not None:
                    self._remove_lock(resource, entry[0], holder, entry[1], down=True)
        name = self.ref_names.get(ref)
        if name is not None:
            entry2 = self.name_table.get(name)
            if entry2 is not None and entry2[2] == ref:
                self.delete_name(name, gone=True)

    def names_list(self) -> list[Term]:
        return [(name, pid, method) for name, (pid, method, _) in self.name_table.items()]

    def do_ops(self, ops: Term, conn_node: Term, extra: Term) -> None:
        if not isinstance(ops, list):
            return
        for op in ops:
            if is_tuple(op, 2) and op[0] == "insert" and is_tuple(op[1], 3) and type(op[1][1]) is Pid:
                name, pid, method = op[1]
                self.ins_name(name, pid, method, conn_node, extra)
        for op in ops:
            if is_tuple(op, 2) and op[0] == "delete":
                self.delete_name(op[1])


def _extra_info(tag: Atom, extra: Term) -> Term:
    if isinstance(extra, list):
        for item in extra:
            if is_tuple(item, 2) and item[0] == tag:
                return item
    return UNDEFINED


# --- resolve functions (global:random_exit_name/3 and friends) ----------------


def _minmax(p1: Pid, p2: Pid) -> tuple[Pid, Pid]:
    return (p1, p2) if str(p1.node) < str(p2.node) else (p2, p1)


def random_exit_name(name: Term, pid1: Pid, pid2: Pid) -> Pid:
    low, high = _minmax(pid1, pid2)
    log.info("global: Name conflict terminating %r", (name, high))
    exit(high, KILL)
    return low


def random_notify_name(name: Term, pid1: Pid, pid2: Pid) -> Pid:
    low, high = _minmax(pid1, pid2)
    send(high, (NAME_CONFLICT, name))
    return low


def notify_all_name(name: Term, pid1: Pid, pid2: Pid) -> Atom:
    send(pid1, (NAME_CONFLICT, name, pid2))
    send(pid2, (NAME_CONFLICT, name, pid1))
    return NONE


# --- gen_server:multi_call and the lock helpers (run in the calling process) --


async def multi_call(nodes: list[Atom], name: Atom, request: Term) -> tuple[list[tuple[Atom, Term]], list[Atom]]:
    """`gen_server:multi_call/3` without a timeout: `{Replies, BadNodes}`.

    Each request's From is `{self(), {Tag, Node}}`, as OTP 25 builds it."""
    me = current().pid
    tag = make_ref()
    waiting: dict[Ref, Atom] = {}
    by_node: dict[Atom, Ref] = {}
    for n in dict.fromkeys(nodes):
        ref = monitor((str(name), n))
        waiting[ref] = n
        by_node[n] = ref
        send((name, n), (GEN_CALL, (me, (tag, n)), request))
    replies: list[tuple[Atom, Term]] = []
    bad: list[Atom] = []

    def mine(m: Term) -> bool:
        if type(m) is not tuple:
            return False
        if len(m) == 2:
            t = m[0]
            return type(t) is tuple and len(t) == 2 and t[0] == tag
        return len(m) == 5 and m[0] == "DOWN" and m[1] in waiting

    while waiting:
        msg = await receive(mine)
        if len(msg) == 5:
            bad.append(waiting.pop(msg[1]))
            continue
        n = msg[0][1]
        known = by_node.get(n)
        if known is None or known not in waiting:
            continue
        del waiting[known]
        demonitor(known, flush=True)
        replies.append((n, msg[1]))
    return replies, bad


async def set_lock_on_nodes(glob: Global, id_: Term, nodes: list[Atom]) -> bool:
    """`set_lock_on_nodes/2` with `local_lock_check/2` and `check_replies/3`."""
    if not nodes:
        return True
    if len(nodes) > 1 and glob.me in nodes and glob.can_set_lock(id_) is None:
        return False
    replies, _ = await multi_call(nodes, GNS, (Atom("set_lock"), id_))
    if all(r is True for _, r in replies):
        return True
    if len(replies) > 1:
        await multi_call([n for n, r in replies if r is True], GNS, (Atom("del_lock"), id_))
    return False


async def set_lock_once(glob: Global, id_: Term, nodes: list[Atom]) -> bool:
    """`set_lock(Id, Nodes, 0)`."""
    return not nodes or await set_lock_on_nodes(glob, id_, nodes)


async def del_lock(id_: Term, nodes: list[Atom]) -> None:
    await multi_call(nodes, GNS, (Atom("del_lock"), id_))


async def delete_global_lock(id_: Term, nodes: list[Atom]) -> None:
    """The boss's lock is removed last (`delete_global_lock/2`)."""
    if not nodes:
        return
    boss = max(nodes)
    await del_lock(id_, [n for n in nodes if n != boss])
    await del_lock(id_, [boss])


async def random_sleep(times: int) -> None:
    """First up to 1/4 s, doubling each time up to 8 s (`random_sleep/1`)."""
    tmax = 8000 if times > 5 else ((1 << times) * 1000) // 8
    try:
        await receive(lambda m: False, random.randint(1, max(tmax, 1)) / 1000)
    except TimeoutError:
        pass


# --- the server ------------------------------------------------------------


class _Server(GenServer):
    """`global_name_server`: handle_call/handle_cast/handle_info of global.erl."""

    def init(self, glob: Global) -> Global:
        from ..process import process_flag

        process_flag("trap_exit", True)
        glob.kernel.monitor_nodes(current().pid, True)
        for peer in glob.kernel.nodes():
            # As init/1: nodes already connected are known (none, usually).
            if self._published(glob, peer):
                glob.known[peer] = VSN
        glob.locker = spawn_link(_Locker(glob).run)
        glob.registrar = spawn_link(_registrar, glob)
        return glob

    @staticmethod
    def _published(glob: Global, peer: Atom) -> bool:
        conn = glob.kernel.conns.get(peer)
        return conn is not None and bool(conn.flags & F.PUBLISHED)

    # --- calls ---------------------------------------------------------------

    def handle_call(self, request: Term, from_: Any, g: Global) -> Reply | NoReply:
        caller = from_[0] if isinstance(from_, tuple) and len(from_) == 2 else None
        match request:
            case ("registrar", fn) if callable(fn) and caller is not None and caller.node == g.me:
                send(g.registrar, ("trans_all_known", fn, from_))  # type: ignore[arg-type]
                return NoReply(g)
            case ("register", name, Pid() as pid, method) if type(caller) is Pid:
                g.ins_name(name, pid, method, caller, [])
                return Reply(YES, g)
            case ("register_ext", name, Pid() as pid, method, _) if type(caller) is Pid:
                g.ins_name(name, pid, method, caller, [])
                return Reply(YES, g)
            case ("unregister", name):
                g.delete_name(name)
                return Reply(OK, g)
            case ("set_lock", (_, _) as id_) if type(caller) is Pid:
                return Reply(g.handle_set_lock(id_, caller), g)
            case ("del_lock", (_, _) as id_) if type(caller) is Pid:
                g.handle_del_lock(id_, caller)
                return Reply(True, g)
            case "get_known":
                return Reply(list(g.known), g)
            case "get_synced":
                return Reply(list(g.synced), g)
            case ("sync", list(nodes)):
                targets = [n for n in nodes if type(n) is Atom and n != g.me and n not in g.synced]
                g.syncers.append(spawn_link(_syncer, g, targets, from_))
                return NoReply(g)
            case "get_protocol_version":
                return Reply(VSN, g)
            case "get_names_ext":
                return Reply([], g)
        log.warning("The global_name_server received an unexpected message: handle_call(%r, %r, _)", request, from_)
        return NoReply(g)

    # --- casts ---------------------------------------------------------------

    def handle_cast(self, msg: Term, g: Global) -> NoReply:
        match msg:
            case ("init_connect", vsn, Atom() as node, init_msg):
                if is_tuple(vsn, 2) or (type(vsn) is tuple and len(vsn) > 2):
                    his_vsn, his_tag = vsn[0], vsn[1]
                    if type(his_vsn) is int:
                        self._init_connect(g, min(his_vsn, VSN), node, init_msg, his_tag, his_vsn)
                        return NoReply(g)
                log.info("Illegal global protocol version %r Node: %r", vsn, node)
            case ("lock_is_set", Atom() as node, my_tag, lock):
                if g.tag_my.get(node) == my_tag and node in g.tag_my:
                    self._lock_is_set(g, node, lock)
                else:
                    self._cancel_locker(g, node, my_tag)
            case ("exchange", Atom() as node, list(names), _, my_tag):
                if g.tag_my.get(node) == my_tag and node in g.tag_my:
                    self._exchange(g, node, names)
                else:
                    self._cancel_locker(g, node, my_tag)
            case ("exchange_ops", Atom() as node, my_tag, list(ops), list(resolved)):
                if g.tag_my.get(node) == my_tag and node in g.tag_my:
                    known = [(n, v) for n, v in g.known.items()]
                    _cast(node, (RESOLVED, g.me, resolved, known, UNUSED, [], g.tag_his.get(node, UNDEFINED)))
                    saved = g.save_ops.get(node)
                    g.save_ops[node] = ops
                    if is_tuple(saved, 4) and saved[0] == "resolved":  # type: ignore[index]
                        _, his_known, names_ext, his_resolved = saved  # type: ignore[misc]
                        self._resolved(g, node, his_resolved, his_known, names_ext)
                else:
                    self._cancel_locker(g, node, my_tag)
            case ("resolved", Atom() as node, list(his_resolved), list(his_known), _, names_ext, my_tag):
                if g.tag_my.get(node) == my_tag and node in g.tag_my:
                    if isinstance(g.save_ops.get(node), list):
                        self._resolved(g, node, his_resolved, his_known, names_ext)
                    else:
                        g.save_ops[node] = ("resolved", his_known, names_ext, his_resolved)
                else:
                    self._cancel_locker(g, node, my_tag)
            case ("new_nodes", Atom() as node, list(ops), _, list(nodes), extra):
                added = self._add_to_known(g, nodes)
                self._sync_others(g, added)
                g.do_ops(ops, node, extra)
                g.to_locker(("add_to_known", added))
            case ("in_sync", Atom() as node, _):
                for pid in g.syncers:
                    send(pid, ("synced", [node]))
                if node not in g.synced:
                    g.synced.append(node)
                g.pending.pop(node, None)
                self._cancel_locker(g, node, g.tag_my.get(node, UNDEFINED))
                self._reset_node_state(g, node)
            case ("lock_set", Pid() as pid, _, _, my_tag):
                if g.tag_my.get(pid.node) == my_tag and pid.node in g.tag_my:
                    g.to_locker(msg)
            case ("lock_set", Pid(), _, _):
                g.to_locker(msg)
            case ("async_del_name", _, _) | ("async_del_lock", _, _):
                pass
            case _:
                log.warning("The global_name_server received an unexpected message: handle_cast(%r, _)", msg)
        return NoReply(g)

    # --- infos ---------------------------------------------------------------

    def handle_info(self, msg: Term, g: Global) -> NoReply:
        match msg:
            case ("nodeup", Atom() as node):
                if node != g.me and self._published(g, node):
                    self._handle_nodeup(g, node)
            case ("nodedown", Atom() as node):
                self._handle_nodedown(g, node, "disconnected")
            case ("extra_nodedown", Atom() as node):
                for pid in g.syncers:
                    send(pid, (NODEDOWN, node))
                self._handle_nodedown(g, node, "disconnected")
            case ("DOWN", Ref() as ref, _, _, _):
                g.down(ref)
            case ("EXIT", Pid() as pid, reason):
                if pid in (g.locker, g.registrar):
                    raise Exit((Atom("locker_died" if pid == g.locker else "registrar_died"), reason))
                if pid in g.syncers:
                    g.syncers.remove(pid)
            case ("lost_connection", Atom() as node_a, int(x_creation), int(op_id), Atom() as node_b):
                if g.pop:
                    self._lost_connection(g, msg, node_a, x_creation, op_id, node_b)
            case ("remove_connection", Atom() as node):
                if node in g.known or node in g.pending:
                    g.kernel.disconnect(node)
                    self._handle_nodedown(g, node, "remove_connection")
                    log.warning("'global' at node %s disconnected node %s in order to prevent overlapping partitions",
                                g.me, node)
            case ("cancel_connect", Atom() as node, my_tag):
                if node in g.tag_my and g.tag_my[node] == my_tag:
                    self._cancel_locker(g, node, my_tag)
                    self._reset_node_state(g, node)
                    g.pending.pop(node, None)
                    self._restart_connect(g, node, my_tag)
            case ("init_connect_ack", Atom() as node, his_my_tag, his_his_tag):
                if not (g.tag_my.get(node) == his_my_tag and g.tag_his.get(node) == his_his_tag):
                    _volatile_send(g, node, (CANCEL_CONNECT, g.me, his_his_tag))
                    self._restart_connect(g, node, g.tag_my.get(node, UNDEFINED))
            case _:
                log.warning("The global_name_server received an unexpected message: handle_info(%r, _)", msg)
        return NoReply(g)

    # --- the connection algorithm (global.erl's internal functions) ----------

    def _handle_nodeup(self, g: Global, node: Atom) -> None:
        if node in g.known or node in g.resolvers:
            return
        pre = g.pre_connect.pop(node, None)
        if pre is not None:
            send(current().pid, (GEN_CAST, (INIT_CONNECT, (pre[0], pre[2]), node, pre[1])))
        my_tag = next(_tags)
        g.tag_my[node] = my_tag
        locker: Term = (LOCKER, NO_LONGER_A_PID, {}, g.locker)
        _cast(node, (INIT_CONNECT, (VSN, my_tag), g.me, locker))
        resolver = spawn(_resolver, g, node, my_tag)
        g.resolvers[node] = (my_tag, resolver)

    def _init_connect(self, g: Global, vsn: int, node: Atom, init_msg: Term, his_tag: Term, his_vsn: int) -> None:
        if node in g.pending:
            _volatile_send(g, node, (CANCEL_CONNECT, g.me, his_tag))
            self._restart_connect(g, node, g.tag_my.get(node, UNDEFINED))
        g.prot_vsn[node] = vsn
        g.tag_his[node] = his_tag
        entry = g.resolvers.get(node)
        if entry is not None:
            if not (is_tuple(init_msg, 4) and type(init_msg[3]) is Pid):
                log.warning("global: a malformed init_connect from %s: %r", node, init_msg)
                return
            my_tag = entry[0]
            g.to_locker(("his_the_locker", init_msg[3], (vsn, []), his_tag, my_tag))
            _volatile_send(g, node, (INIT_CONNECT_ACK, g.me, his_tag, my_tag))
            g.pending[node] = his_vsn
        else:
            g.pre_connect[node] = (vsn, init_msg, his_tag)

    def _restart_connect(self, g: Global, node: Atom, my_tag: Term) -> None:
        self._cancel_locker(g, node, my_tag)
        self._reset_node_state(g, node)
        g.pending.pop(node, None)
        if type(my_tag) is int and node in g.kernel.conns:
            self._handle_nodeup(g, node)

    def _lock_is_set(self, g: Global, node: Atom, lock: Term) -> None:
        _cast(node, (EXCHANGE, g.me, g.names_list(), [], g.tag_his.get(node, UNDEFINED)))
        g.lock_ids[node] = lock
        waiting = g.wait_lock.get(node)
        g.wait_lock[node] = Atom("lock_is_set")
        if is_tuple(waiting, 2) and waiting[0] == "exchange":  # type: ignore[index]
            self._exchange(g, node, waiting[1])  # type: ignore[index]

    def _exchange(self, g: Global, node: Atom, names: Term) -> None:
        if g.wait_lock.pop(node, None) == "lock_is_set":
            entry = g.resolvers.get(node)
            if entry is not None:
                send(entry[1], ("resolve", names, node))
        else:
            g.wait_lock[node] = ("exchange", names)

    def _resolved(self, g: Global, node: Atom, his_resolved: list[Term], his_known: list[Term], names_ext: Term) -> None:
        ops = list(g.save_ops.pop(node, [])) + list(his_resolved)
        known = dict(g.known)
        new_nodes = _node_vsn_list(g, [node, *his_known])
        his_known_nodes = _node_list(his_known)
        self._sync_others(g, his_known_nodes)
        extra = [(Atom("vsn"), g.prot_vsn.get(node, VSN)), (Atom("lock"), g.lock_ids.get(node, UNDEFINED))]
        g.do_ops(ops, g.me, extra)
        for pid in g.syncers:
            send(pid, ("synced", [node]))
        for other in his_known_nodes:
            tag = g.tag_my.get(other, UNDEFINED)
            g.pending.pop(other, None)
            self._cancel_locker(g, other, tag)
            self._reset_node_state(g, other)
        new_nodes_msg = (NEW_NODES, g.me, ops, names_ext, new_nodes, extra)

        def tell_partition() -> None:
            # Run by the locker before it deletes the lock, so that
            # {new_nodes, ...} reaches each node before {del_lock, ...}.
            for n in known:
                _cast(n, new_nodes_msg)

        tag = g.tag_my.get(node, UNDEFINED)
        g.pending.pop(node, None)
        self._cancel_locker(g, node, tag, tell_partition)
        self._reset_node_state(g, node)
        added = self._add_to_known(g, new_nodes)
        g.to_locker(("add_to_known", added))
        if node not in g.synced:
            g.synced.append(node)

    def _add_to_known(self, g: Global, nodes: list[Term]) -> list[Atom]:
        added: list[Atom] = []
        for item in nodes:
            if type(item) is Atom:
                n, v = item, 0
            elif is_tuple(item, 2) and type(item[0]) is Atom and type(item[1]) is int:
                n, v = item
            else:
                continue
            if n == g.me:
                continue
            if n not in g.known:
                g.known[n] = v
                added.append(n)
            elif g.known[n] < 0:
                g.known[n] = v
        return added

    def _sync_others(self, g: Global, nodes: list[Atom]) -> None:
        """`sync_others/1`: tell each (connecting to it if need be) that we
        are in sync; this is what makes the mesh fully connected."""
        for n in nodes:
            if n != g.me:
                spawn(_sync_other, g, n)

    def _cancel_locker(self, g: Global, node: Atom, tag: Term, then: Callable[[], None] | None = None) -> None:
        g.to_locker(("cancel", node, tag, then))
        # send_cancel_connect/3: tell the peer if a connect was pending.
        if node in g.pending and g.tag_my.get(node) == tag and node in g.tag_my:
            _volatile_send(g, node, (CANCEL_CONNECT, g.me, g.tag_his.get(node, UNDEFINED)))
        entry = g.resolvers.get(node)
        if entry is not None and entry[0] == tag:
            exit(entry[1], KILL)
            del g.resolvers[node]

    def _reset_node_state(self, g: Global, node: Atom) -> None:
        for table in (g.wait_lock, g.save_ops, g.pre_connect, g.prot_vsn, g.tag_my, g.tag_his, g.lock_ids):
            table.pop(node, None)

    def _handle_nodedown(self, g: Global, node: Atom, what: str) -> None:
        self._cancel_locker(g, node, g.tag_my.get(node, UNDEFINED))
        g.to_locker(("remove_from_known", node))
        self._reset_node_state(g, node)
        if what == "remove_connection":
            g.removing.add(node)
        elif node in g.removing:
            g.removing.discard(node)
        elif node in g.known:
            self._inform_connection_loss(g, node)
        g.pending.pop(node, None)
        g.known.pop(node, None)
        if node in g.synced:
            g.synced.remove(node)
        stale = [n for n, _ in g.resolvers.items() if n == node]
        for n in stale:
            exit(g.resolvers.pop(n)[1], KILL)

    def _inform_connection_loss(self, g: Global, node: Atom) -> None:
        if g.pop:
            msg = (LOST_CONNECTION, g.me, g.creation_x + g.node.creation, next(_tags), node)
            _multicast(g, msg, node)

    def _lost_connection(self, g: Global, msg: Term, node_a: Atom, x_creation: int, op_id: int, node_b: Atom) -> None:
        """Prevent overlapping partitions: `node_a` lost `node_b`; whoever
        knows both drops `node_b` (or `node_a`, when we are `node_b`)."""
        seen = g.lost.get((node_a, node_b))
        if seen is not None and seen[0] == x_creation and op_id <= seen[1]:
            return
        _multicast(g, msg, node_a)
        g.lost[(node_a, node_b)] = (x_creation, op_id)
        if len(g.lost) > 4096:  # bounded: global.erl expires these after an hour
            g.lost.pop(next(iter(g.lost)))
        rm = node_b if g.me != node_b else node_a
        if rm in g.known or rm in g.pending:
            _volatile_send(g, rm, (REMOVE_CONNECTION, g.me))
            log.warning("'global' at node %s requested disconnect from node %s in order to prevent overlapping partitions",
                        g.me, rm)
            self._handle_nodedown(g, rm, "remove_connection")


def _node_list(items: list[Term]) -> list[Atom]:
    out: list[Atom] = []
    for item in items:
        if type(item) is Atom:
            out.append(item)
        elif is_tuple(item, 2) and type(item[0]) is Atom:
            out.append(item[0])
    return out


def _node_vsn_list(g: Global, items: list[Term]) -> list[Term]:
    out: list[Term] = []
    for item in items:
        if type(item) is Atom:
            out.append((item, _node_vsn(g, item)))
        elif is_tuple(item, 2) and type(item[0]) is Atom and type(item[1]) is int:
            out.append(item if item[1] != 0 else (item[0], _node_vsn(g, item[0])))
    return out


def _node_vsn(g: Global, node: Atom) -> int:
    if node == g.me:
        return VSN
    return g.known.get(node, g.pending.get(node, 0))


async def _sync_other(g: Global, node: Atom) -> None:
    """`sync_other/2`: connect and say we are in sync; a node that cannot
    be reached is forgotten (`extra_nodedown`), not kept as known."""
    if await g.kernel.connect(str(node)) is None:
        send(GNS_LOCAL(g), ("extra_nodedown", node))
    else:
        _cast(node, (IN_SYNC, g.me, True))


def _cast(node: Atom, msg: Term) -> None:
    send((GNS, node), (GEN_CAST, msg))


def _volatile_send(g: Global, node: Atom, msg: Term) -> None:
    """`gns_volatile_send/2`: never brings a connection up."""
    if node in g.kernel.conns:
        send((GNS, node), msg)


def _multicast(g: Global, msg: Term, ignore: Atom) -> None:
    for n, v in list(g.known.items()) + list(g.pending.items()):
        if n != ignore and v >= POP_VSN:
            _volatile_send(g, n, msg)


# --- the satellite processes -------------------------------------------------


async def _resolver(g: Global, node: Atom, tag: Term) -> None:
    """`resolver/2`: compares the peer's names with ours when asked."""
    while True:
        msg = await receive()
        if is_tuple(msg, 3) and msg[0] == "resolve" and msg[2] == node and isinstance(msg[1], list):
            ops, resolved = await _exchange_names(g, msg[1], node)
            send(GNS_LOCAL(g), (GEN_CAST, (EXCHANGE_OPS, node, tag, ops, resolved)))
            return


def GNS_LOCAL(g: Global) -> Pid:  # noqa: N802 - the registered server, as a pid
    assert g.server is not None
    return g.server


async def _exchange_names(g: Global, names: list[Term], node: Atom) -> tuple[list[Term], list[Term]]:
    """`exchange_names/4`: a conflict is resolved by the smaller node, at the
    node of the name's current owner (`rpc:call(Node2, global, resolve_it, ...)`)."""
    ops: list[Term] = []
    res: list[Term] = []
    for item in names:
        if not (is_tuple(item, 3) and type(item[1]) is Pid):
            continue
        name, pid, method = item
        mine = g.name_table.get(freeze(name))
        if mine is None:
            ops.append((Atom("insert"), (name, pid, method)))
            continue
        pid2, method2, _ = mine
        if pid2 == pid or not g.me < node:
            continue  # the same, or the other node resolves it
        try:
            if pid2.node == g.me:
                outcome = await g.resolve_it(method2, name, pid, pid2)
            else:
                outcome = await rpc.call(str(pid2.node), "global", "resolve_it", [method2, name, pid, pid2])
        except rpc.BadRpc as exc:
            log.info("global: badrpc %r received when conflicting name %r was found", exc.reason, name)
            ops.append((Atom("insert"), (name, pid, method)))
            continue
        if outcome == pid:
            ops.append((Atom("insert"), (name, pid, method)))
        elif outcome == pid2:
            res.append((Atom("insert"), (name, pid2, method2)))
        else:
            if outcome != NONE:
                log.info("global: Resolve method %r for conflicting name %r returned %r", method, name, outcome)
            op = (Atom("delete"), name)
            ops.append(op)
            res.append(op)
    return ops, res


async def _registrar(g: Global) -> None:
    """`loop_the_registrar/0`: runs registrations under the `global` lock
    on every known node (`trans_all_known/1`)."""
    while True:
        msg = await receive()
        if is_tuple(msg, 3) and msg[0] == "trans_all_known":
            _, fn, from_ = msg
            id_ = (GLOBAL, current().pid)
            nodes = await _set_lock_known(g, id_)
            try:
                result = await fn(nodes)
            finally:
                await delete_global_lock(id_, nodes)
            reply(from_, result)


async def _set_lock_known(g: Global, id_: Term) -> list[Atom]:
    times = 0
    while True:
        known = list(g.known)
        nodes = [g.me, *known]
        boss = max(nodes)
        if await set_lock_on_nodes(g, id_, [boss]):
            if await set_lock_on_nodes(g, id_, nodes) and not set(g.known) - set(known):
                return nodes
            await del_lock(id_, [boss])
        await random_sleep(times)
        times += 1


async def _syncer(g: Global, nodes: list[Atom], from_: Term) -> None:
    """`sync_init/2`: replies once every node is synced or down."""
    left = set(nodes)
    for n in left:
        g.kernel.monitor_node(current().pid, n, True)
    while left:
        msg = await receive()
        if is_tuple(msg, 2):
            if msg[0] == NODEDOWN:
                left.discard(msg[1])
            elif msg[0] == "synced" and isinstance(msg[1], list):
                left.difference_update(msg[1])
    for n in nodes:
        g.kernel.monitor_node(current().pid, n, False)
    reply(from_, OK)


class _Locker:
    """`the_locker`: takes the `{global, [L1, L2]}` lock in our partition
    when a node connects (`loop_the_locker/1` and friends)."""

    def __init__(self, g: Global) -> None:
        self.g = g
        self.local: list[_Him] = []
        self.remote: list[_Him] = []
        self.known: list[Atom] = list(g.known)
        self.just_synced = False
        self.host = socket.gethostname()

    @property
    def boss(self) -> Atom:
        return max([self.g.me, *self.known])

    async def run(self) -> None:
        while True:
            try:
                msg = await receive(timeout=0)
            except TimeoutError:
                timeout: float | None
                if not self.local and not self.remote:
                    timeout = None
                elif self.just_synced:
                    timeout = 0
                elif not self.known:
                    timeout = 0.2
                else:
                    timeout = min(1.0 + 0.1 * len(self.known), 3.0)
                self.just_synced = False
                try:
                    msg = await receive(timeout=timeout)
                except TimeoutError:
                    if not self.g.is_lock_set(GLOBAL):
                        await self.select_node()
                    continue
            await self.message(msg)

    async def message(self, msg: Term) -> None:
        g = self.g
        match msg:
            case ("his_the_locker", Pid() as his, (int(vsn), _), his_tag, my_tag):
                him = _Him(his.node, his, vsn, my_tag, his_tag)
                host = str(his.node).partition("@")[2]
                (self.local if host == self.host else self.remote).insert(0, him)
            case ("cancel", _, tag, _) if tag == UNDEFINED:
                pass
            case ("cancel", node, tag, _):
                self.remove_node(node, tag)
            case ("lock_set", Pid() as pid, True, _, my_tag):
                found = self.find(pid.node)
                if found is None or found.my_tag != my_tag:
                    await self.send_lock_set(False, pid, 5, 0)
                    return
                await self.spontaneous(found, pid)
            case ("lock_set", Pid() as pid, True, _):
                found = self.find(pid.node)
                if found is None:
                    await self.send_lock_set(False, pid, 5, 0)
                    return
                await self.spontaneous(found, pid)
            case ("lock_set", _, False, *_):
                pass
            case ("add_to_known", list(nodes)):
                self.known = [*nodes, *self.known]
            case ("remove_from_known", node):
                if node in self.known:
                    self.known.remove(node)
            case _:
                log.warning("The global_name_server locker process received an unexpected message: %r", msg)
        _ = g

    def find(self, node: Atom) -> _Him | None:
        for him in (*self.local, *self.remote):
            if him.node == node:
                return him
        return None

    def remove_node(self, node: Term, tag: Term) -> None:
        for lst in (self.local, self.remote):
            for i, him in enumerate(lst):
                if him.node == node and him.my_tag == tag:
                    del lst[i]
                    break

    def update_known(self) -> None:
        """Take the add/remove messages already queued (`update_locker_known/1`)."""
        proc = current()
        while True:
            msg = proc.take(lambda m: is_tuple(m, 2) and m[0] in ("add_to_known", "remove_from_known"))
            if msg is NO_MESSAGE:
                return
            if msg[0] == "add_to_known":
                self.known = [*msg[1], *self.known]
            elif msg[1] in self.known:
                self.known.remove(msg[1])

    async def spontaneous(self, him: _Him, pid: Pid) -> None:
        """The other locker got its lock first: take ours with the same id."""
        g = self.g
        lock = lock_id(current().pid, pid)
        is_set = await self.lock_nodes_safely(lock, [])
        await self.send_lock_set(is_set, pid, him.vsn, him.his_tag)
        if is_set:
            known2 = [g.me, *self.known]
            send(g.server, (GEN_CAST, (LOCK_IS_SET, him.node, him.my_tag, lock)))  # type: ignore[arg-type]
            await self.wait_cancel_lock(him.node, lock, him.my_tag, known2)
            self.just_synced = True
            self.remove_node(him.node, him.my_tag)
        else:
            self.just_synced = False

    async def select_node(self) -> None:
        use_remote = not self.local
        others = [h for h in (self.remote if use_remote else self.local) if h.node not in self.known]
        if use_remote:
            self.remote = others
        else:
            self.local = others
        if not others:
            return
        him = random.choice(others)
        lock = lock_id(current().pid, him.locker)
        if await self.lock_nodes_safely(lock, [him.node]):
            known1 = [self.g.me, him.node, *self.known]
            await self.send_lock_set(True, him.locker, him.vsn, him.his_tag)
            await self.lock_is_set(him, known1, lock)

    async def send_lock_set(self, is_set: bool, his_locker: Pid, vsn: int, his_tag: Term) -> None:
        msg = (LOCK_SET, current().pid, is_set, list(self.known), his_tag)
        _cast(his_locker.node, msg)

    async def lock_nodes_safely(self, lock: Term, extra: list[Atom]) -> bool:
        g = self.g
        first = [self.boss]
        if not ([g.me] == first or g.can_set_lock(lock) is not None):
            return False
        if not await set_lock_once(g, lock, first):
            return False
        self.update_known()
        second = [n for n in [g.me, *extra] if n not in first]
        if not await set_lock_once(g, lock, second):
            await del_lock(lock, first)
            return False
        if not await set_lock_once(g, lock, [n for n in self.known if n not in first]):
            await del_lock(lock, first + second)
            return False
        return True

    async def lock_is_set(self, him: _Him, known1: list[Atom], lock: Term) -> None:
        node, my_tag = him.node, him.my_tag

        def wanted(m: Term) -> bool:
            if type(m) is not tuple or not m:
                return False
            if m[0] == "lock_set" and len(m) in (4, 5) and type(m[1]) is Pid and m[1].node == node:
                return True
            return len(m) == 4 and m[0] == "cancel" and m[1] == node and m[2] == my_tag

        while True:
            msg = await receive(wanted)
            if msg[0] == "cancel":
                if callable(msg[3]):
                    msg[3]()
                await delete_global_lock(lock, known1)
                self.remove_node(node, my_tag)
                return
            if len(msg) == 5 and msg[4] != my_tag:
                continue  # an old session's answer
            if msg[2] is True:
                send(self.g.server, (GEN_CAST, (LOCK_IS_SET, node, my_tag, lock)))  # type: ignore[arg-type]
                await self.wait_cancel_lock(node, lock, my_tag, known1)
                self.just_synced = True
                for lst in (self.local, self.remote):
                    if him in lst:
                        lst.remove(him)
                return
            await delete_global_lock(lock, known1)
            return

    async def wait_cancel_lock(self, node: Atom, lock: Term, my_tag: Term, known: list[Atom]) -> None:
        msg = await receive(lambda m: is_tuple(m, 4) and m[0] == "cancel" and m[1] == node and m[2] == my_tag)
        if callable(msg[3]):
            msg[3]()
        await delete_global_lock(lock, known)

