"""Service discovery: processes register services by name; any node finds
the live instances, picks one, and can watch them come and go.

An instance is a process that called `register_service(name, endpoint,
meta)`: it is bound to that process and disappears when it exits or its
node goes down. `discover(name)` lists the live, healthy instances on every
node; `select(name, strategy)` picks one (round robin, random, or the least
loaded by the load each instance reports with `report_load`).

>>> import beamish
>>> from beamish.cluster import discovery
>>> async def main():
...     await discovery.start_link()
...     await discovery.register_service("billing", "http://10.0.0.5:4000", {"version": 2})
...     [inst] = discovery.discover("billing")
...     return inst.endpoint, inst.meta, inst.pid == beamish.self(), inst.status
>>> beamish.run(main)
('http://10.0.0.5:4000', {'version': 2}, True, 'up')

## Starting

`await discovery.start_link()` or, in a supervision tree,
`discovery.child_spec()`: a supervisor of the `pg` scope `beamish_services`
and this node's discovery server (registered as `beamish_discovery`). Run it
on every node that registers or discovers services, after
`beamish.dist.start`.

## How it works, and what it guarantees

Membership is `pg`'s: the registering process joins the group
`("service", name)` of the scope `beamish_services`, so the scope monitors
it locally and every peer scope drops it when its node goes down (within
the net tick time for a node that hangs; at once for a closed connection).
The metadata (endpoint, meta, health status, load) is replicated: the
registering node's discovery server sends it to the discovery server of
every node (they find each other as members of the group `"servers"` in the
same scope) when the instance registers, when its status or load changes,
and to a server that appears later. Each server monitors the instances it
holds metadata for and drops them on their DOWN.

`discover` reads this node's copy without a message: an instance is listed
once both its pg membership and its metadata have arrived (one message
each from its node: a bounded delay, the time of a message over the
connection), while its status is `"up"`, and until its pg membership goes
(its exit, or its node's). Reads on one node may briefly differ from
another's, as pg's do.

## Health checks

`register_service(..., health_check=fn, interval=5.0, max_failures=3)`:
the node that registered the instance runs `fn()` (sync or `async def`,
returning true for healthy; an exception or a run longer than `interval`
counts as a failure) every `interval` seconds in a process of its own. After
`max_failures` failures in a row the instance is marked `"down"` everywhere
(`discover` leaves it out); the first success marks it `"up"` again. The
registering node runs the check because it can reach its own service when a
watcher's network cannot, and because one check per instance, not one per
watcher, keeps the load on the service constant as the cluster grows.

## Watching

`await watch(name)` returns the instances now and from then on sends the
caller `("service_up", name, instance)` when an instance becomes visible
(registered, or healthy again) and `("service_down", name, instance)` when
it stops being so (exit, node down, unhealthy, unregistered). `unwatch(name)`
stops them.

OTP: no OTP module; it is the pattern Erlang systems build on `pg` (or
Elixir's Horde/libcluster registries), with Consul-style health checks.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, Literal, cast

from beamish._atoms import DOWN, OK
from beamish._gen import ChildSpec
from beamish.gen_server import CallResult, CastResult, GenServer, NoReply, Reply
from beamish.process import (
    BadArg,
    From,
    current,
    demonitor,
    make_ref,
    monitor,
    receive,
    send,
    spawn,
)
from beamish.process import exit as _exit
from beamish.supervisor import Supervisor
from beamish.terms import Atom, Pid, Ref, Term

from . import pg

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from beamish.node import Node

__all__ = [
    "Instance",
    "child_spec",
    "discover",
    "register_service",
    "report_load",
    "select",
    "start_link",
    "unregister_service",
    "unwatch",
    "watch",
]

log = logging.getLogger("beamish.cluster")

SCOPE: Final = "beamish_services"
SERVER: Final = "beamish_discovery"
_SERVERS: Final = "servers"
_TAG: Final = "$beamish_discovery"
_EXT: Final = "beamish.cluster.discovery"

Strategy = Literal["round_robin", "random", "least_loaded"]
HealthCheck = Callable[[], "bool | Awaitable[bool]"]


@dataclass(frozen=True, slots=True)
class Instance:
    """One registered instance of a service, as this node knows it."""

    name: str
    endpoint: Term
    meta: Term
    pid: Pid
    node: Atom
    status: Literal["up", "down"] = "up"
    load: float = 0.0

    def to_wire(self) -> tuple[Term, ...]:
        return (self.pid, self.name, self.endpoint, self.meta, self.status, self.load)


async def start_link() -> Pid:
    """Start this node's discovery (its pg scope and server), linked to the caller."""
    return await Supervisor.start_link(
        [pg.child_spec(SCOPE), ChildSpec(id=SERVER, start=(functools.partial(_Server.start_link, name=SERVER), ((),)))],
        strategy="rest_for_one",
    )


def child_spec() -> ChildSpec:
    """The spec of this node's discovery, for a supervisor."""
    return ChildSpec(id="beamish.cluster.discovery", start=(start_link, ()), type="supervisor", shutdown=None)


async def register_service(
    name: str,
    endpoint: Term,
    meta: Term = None,
    *,
    health_check: HealthCheck | None = None,
    interval: float = 5.0,
    max_failures: int = 3,
) -> None:
    """Register the calling process as an instance of `name`. Registering
    the same name again replaces its endpoint, meta and health check."""
    if not isinstance(name, str):
        raise BadArg(f"a service name is a str, not {name!r}")
    if interval <= 0 or max_failures < 1:
        raise BadArg("interval must be > 0 and max_failures >= 1")
    me = current().pid
    await GenServer.call(SERVER, ("register", me, name, endpoint, meta, health_check, interval, max_failures))


async def unregister_service(name: str) -> None:
    """The calling process stops being an instance of `name`."""
    await GenServer.call(SERVER, ("unregister", current().pid, name))


async def report_load(name: str, load: float) -> None:
    """Report the calling instance's load (any number; lower is less loaded),
    which `select(..., "least_loaded")` reads on every node."""
    await GenServer.call(SERVER, ("load", current().pid, name, float(load)))


def discover(name: str) -> list[Instance]:
    """The live, healthy instances of `name` on every node, as this node knows them now."""
    tab = _table()
    if tab is None:
        return []
    found = []
    for pid in dict.fromkeys(pg.get_members(("service", name), scope=SCOPE)):
        inst = tab.instances.get((pid, name))
        if inst is not None and inst.status == "up":
            found.append(inst)
    found.sort(key=lambda i: (str(i.node), i.pid.id, i.pid.serial))
    return found


def select(name: str, strategy: Strategy = "round_robin") -> Instance | None:
    """One instance of `name` by `strategy`, or None if there is none."""
    found = discover(name)
    if not found:
        return None
    if strategy == "round_robin":
        tab = _table()
        assert tab is not None
        counter = tab.counters.setdefault(name, itertools.count())
        return found[next(counter) % len(found)]
    if strategy == "random":
        return random.choice(found)
    if strategy == "least_loaded":
        return min(found, key=lambda i: i.load)
    raise BadArg(f"unknown strategy {strategy!r}: round_robin, random or least_loaded")


async def watch(name: str) -> list[Instance]:
    """The instances of `name` now; from now on the caller gets
    `("service_up", name, instance)` and `("service_down", name, instance)`."""
    await GenServer.call(SERVER, ("watch", current().pid, name))
    return discover(name)


async def unwatch(name: str) -> None:
    """Stop the messages of `watch(name)`."""
    await GenServer.call(SERVER, ("unwatch", current().pid, name))


# --- internals -----------------------------------------------------------------


class _Local:
    """A local instance's health-check bookkeeping."""

    __slots__ = ("checker", "failures", "max_failures", "token")

    def __init__(self) -> None:
        self.checker: Pid | None = None
        self.failures = 0
        self.max_failures = 3
        # What the checker reports with: a ref no other process (or node) can forge.
        self.token = make_ref()


class _State:
    """A node's discovery server state; `instances` is what `discover` reads."""

    __slots__ = ("counters", "instances", "local", "monitors", "node", "peers", "pg_ref", "pid", "visible", "watchers")

    def __init__(self, node: Node, pid: Pid) -> None:
        self.node = node
        self.pid = pid
        self.instances: dict[tuple[Pid, str], Instance] = {}
        self.local: dict[tuple[Pid, str], _Local] = {}
        self.monitors: dict[Pid, Ref] = {}
        self.peers: set[Pid] = set()
        self.visible: set[tuple[Pid, str]] = set()
        self.watchers: dict[str, dict[Pid, Ref]] = {}
        self.counters: dict[str, itertools.count[int]] = {}
        self.pg_ref: Ref | None = None


def _table() -> _State | None:
    return cast("_State | None", current().node.extensions.get(_EXT))


def _instance_from_wire(item: Term) -> Instance | None:
    if type(item) is not tuple or len(item) != 6:
        return None
    pid, name, endpoint, meta, status, load = item
    if type(name) is bytes:
        try:
            name = name.decode()
        except UnicodeDecodeError:
            return None
    if type(status) is bytes:
        status = status.decode(errors="replace")
    if type(pid) is not Pid or type(name) is not str or status not in ("up", "down") or type(load) not in (int, float):
        return None
    return Instance(name, endpoint, meta, pid, pid.node, cast("Literal['up', 'down']", str(status)), float(load))


class _Server(GenServer):
    async def init(self, _: Term) -> _State:
        me = current()
        st = _State(me.node, me.pid)
        me.node.extensions[_EXT] = st
        # The servers find each other in pg; the scope's events drive `watch`.
        await pg.join(_SERVERS, st.pid, scope=SCOPE)
        ref, groups = await pg.monitor_scope(SCOPE)
        st.pg_ref = ref
        for pid in groups.get(_SERVERS, []):
            self._peer_joined(pid, st)
        return st

    def terminate(self, reason: Term, st: _State) -> None:
        if st.node.extensions.get(_EXT) is st:
            del st.node.extensions[_EXT]

    async def handle_call(self, request: Term, from_: From, st: _State) -> CallResult:
        caller = from_[0]
        if type(caller) is not Pid or caller.node != st.node.name or type(request) is not tuple:
            return NoReply(st)
        match request:
            case ("register", pid, name, endpoint, meta, check, interval, max_failures):
                key = (pid, name)
                old = st.instances.get(key)
                inst = Instance(name, endpoint, meta, pid, pid.node, "up", old.load if old else 0.0)
                st.instances[key] = inst
                local = st.local.get(key)
                if local is None:
                    local = st.local[key] = _Local()
                    await pg.join(("service", name), pid, scope=SCOPE)
                if local.checker is not None:
                    _exit(local.checker, "kill")
                    local.checker = None
                local.failures = 0
                local.max_failures = max_failures
                if check is not None:
                    local.token = make_ref()
                    local.checker = spawn(_checker, st.pid, pid, local.token, check, interval)
                self._watch_pid(pid, st)
                self._publish(inst, st)
                self._refresh(key, st)
                return Reply(OK, st)
            case ("unregister", pid, name):
                if (pid, name) not in st.local:
                    return Reply(Atom("not_registered"), st)
                self._drop_local((pid, name), st)
                # pg's leave reaches every node; each drops the instance from
                # `discover` on it (the metadata stays until the process exits).
                await pg.leave(("service", name), pid, scope=SCOPE)
                self._refresh((pid, name), st)
                st.instances.pop((pid, name), None)
                return Reply(OK, st)
            case ("load", pid, name, load):
                key = (pid, name)
                found = st.instances.get(key)
                if found is None or key not in st.local:
                    return Reply(Atom("not_registered"), st)
                st.instances[key] = replace(found, load=load)
                self._publish(st.instances[key], st)
                return Reply(OK, st)
            case ("watch", pid, name):
                watchers = st.watchers.setdefault(name, {})
                if pid not in watchers:
                    watchers[pid] = monitor(pid)
                return Reply(OK, st)
            case ("unwatch", pid, name):
                ref = st.watchers.get(name, {}).pop(pid, None)
                if ref is not None:
                    demonitor(ref, flush=True)
                return Reply(OK, st)
        return Reply(("error", "badarg"), st)

    def handle_info(self, msg: Term, st: _State) -> CastResult:
        if type(msg) is tuple and msg:
            if len(msg) == 4 and msg[0] == st.pg_ref and st.pg_ref is not None:
                self._pg_event(msg[1], msg[2], msg[3], st)
                return NoReply(st)
            if len(msg) == 5 and msg[0] == DOWN:
                self._down(msg[3], st)
                return NoReply(st)
            if len(msg) == 3 and msg[0] == "health" and type(msg[1]) is Ref:
                self._health(msg[1], bool(msg[2]), st)
                return NoReply(st)
            if len(msg) == 3 and msg[0] == _TAG and msg[1] == "instances" and type(msg[2]) is list:
                for item in msg[2]:
                    inst = _instance_from_wire(item)
                    if inst is None or inst.node == st.node.name:
                        log.warning("discovery dropped a malformed instance: %.200r", item)
                        continue
                    key = (inst.pid, inst.name)
                    st.instances[key] = inst
                    self._watch_pid(inst.pid, st)
                    self._refresh(key, st)
                return NoReply(st)
        log.warning("discovery dropped a malformed message: %.200r", msg)
        return NoReply(st)

    # --- what changes visibility ------------------------------------------------

    def _pg_event(self, action: Term, group: Term, pids: Term, st: _State) -> None:
        if type(pids) is not list:
            return
        if group == _SERVERS or group == _SERVERS.encode():
            if action == "join":
                for pid in pids:
                    self._peer_joined(pid, st)
            else:
                st.peers.difference_update(pids)
            return
        if type(group) is tuple and len(group) == 2 and group[0] == "service":
            name = group[1].decode(errors="replace") if type(group[1]) is bytes else group[1]
            for pid in pids:
                if type(pid) is Pid and type(name) is str:
                    self._refresh((pid, name), st)

    def _peer_joined(self, pid: Term, st: _State) -> None:
        if type(pid) is not Pid or pid == st.pid:
            return
        st.peers.add(pid)
        mine = [st.instances[k].to_wire() for k in st.local if k in st.instances]
        if mine:
            send(pid, (_TAG, "instances", mine))

    def _publish(self, inst: Instance, st: _State) -> None:
        for peer in st.peers:
            send(peer, (_TAG, "instances", [inst.to_wire()]))

    def _refresh(self, key: tuple[Pid, str], st: _State) -> None:
        """Recompute whether `key` is visible, and tell its watchers if that changed."""
        pid, name = key
        inst = st.instances.get(key)
        now = inst is not None and inst.status == "up" and pid in pg.get_members(("service", name), scope=SCOPE)
        before = key in st.visible
        if now == before:
            return
        if now:
            st.visible.add(key)
        else:
            st.visible.discard(key)
        if inst is None:
            inst = Instance(name, None, None, pid, pid.node, "down")
        for watcher in st.watchers.get(name, {}):
            send(watcher, ("service_up" if now else "service_down", name, inst))

    def _watch_pid(self, pid: Pid, st: _State) -> None:
        if pid not in st.monitors:
            st.monitors[pid] = monitor(pid)

    def _down(self, pid: Term, st: _State) -> None:
        if type(pid) is not Pid:
            return
        for watchers in st.watchers.values():
            watchers.pop(pid, None)
        if st.monitors.pop(pid, None) is None:
            return
        for key in [k for k in st.instances if k[0] == pid]:
            self._drop_local(key, st)
            inst = st.instances.pop(key)
            if key in st.visible:
                st.visible.discard(key)
                for watcher in st.watchers.get(key[1], {}):
                    send(watcher, ("service_down", key[1], replace(inst, status="down")))

    def _drop_local(self, key: tuple[Pid, str], st: _State) -> None:
        local = st.local.pop(key, None)
        if local is not None and local.checker is not None:
            _exit(local.checker, "kill")

    def _health(self, token: Ref, ok: bool, st: _State) -> None:
        found = next(((k, v) for k, v in st.local.items() if v.token == token), None)
        if found is None:
            return  # a report from a checker replaced or stopped since
        key, local = found
        inst = st.instances.get(key)
        if inst is None:
            return
        status = inst.status
        if ok:
            local.failures = 0
            status = "up"
        else:
            local.failures += 1
            if local.failures >= local.max_failures:
                status = "down"
        if status != inst.status:
            inst = st.instances[key] = replace(inst, status=status)
            self._publish(inst, st)
            self._refresh(key, st)


async def _checker(server: Pid, instance: Pid, token: Ref, check: HealthCheck, interval: float) -> None:
    """Run `check` every `interval` seconds; report each result to the server
    as `("health", token, ok)`, the failures counted there."""
    ref = monitor(instance)
    while True:
        try:
            await receive(lambda m: type(m) is tuple and len(m) == 5 and m[0] == DOWN and m[1] == ref, interval)
            return
        except TimeoutError:
            pass
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, interval)
            ok = bool(result)
        except Exception:
            ok = False
        send(server, ("health", token, ok))
