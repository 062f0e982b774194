"""The distribution controller: a node's listener, its EPMD registration,
and its connections to other nodes.

`Kernel` implements the core's `Distribution` protocol (`beamish.node`): the
core calls it, fire-and-forget, whenever a signal is addressed to another
node, and it picks (or makes) the `Connection` to that node
(`dist._connection`). What a node answers for its peers (net_kernel, rex,
erpc, spawn requests) is `dist._services`. The core never imports this
module.

>>> from beamish.dist._kernel import Options
>>> Options(cookie="secret").listen
'127.0.0.1'
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from .._atoms import ERROR, NOCONNECTION, NODEDOWN, NOPROC, OK, SHUTDOWN
from .. import telemetry
from ..node import Node
from ..terms import Atom, Pid, Ref, Term
from . import control as C
from . import epmd, etf, framing, handshake
from . import flags as F
from ._allow import AllowList
from ._connection import Connection, check_size, wire_reason
from ._global import Global
from ._services import Services
from .tls import TlsOptions

__all__: list[str] = []  # private: `beamish.dist` is the public face

log = logging.getLogger("beamish.dist")

NODEUP: Final = Atom("nodeup")
EMPTY: Final = Atom("")


MAX_MESSAGE: Final = 256 * 1024 * 1024
"""The default `max_message`: a 70 MB message from an Erlang node (which has
no limit) arrives, and a peer still cannot make a node hold gigabytes."""


@dataclass
class Options:
    """How a node takes part in distribution (see `beamish.dist.start`)."""

    cookie: str
    listen: str = "127.0.0.1"
    port: int = 0
    ticktime: float = 60.0
    rpc_allow: frozenset[str] = frozenset()
    spawn_allow: frozenset[str] = frozenset()
    connect_timeout: float = 7.0
    max_message: int = MAX_MESSAGE
    """The largest message sent or received, in bytes of its encoding (see
    `beamish.dist.start`)."""
    epmd_port: int | None = None
    limits: etf.Limits = field(default_factory=etf.Limits)
    tls: TlsOptions | None = None
    node_cookies: dict[Atom, str] = field(default_factory=dict)
    """Cookies for connecting to given nodes (`erlang:set_cookie/2`)."""
    prevent_overlapping_partitions: bool = True
    """global's OTP 25 default (kernel's `prevent_overlapping_partitions`)."""


class Kernel:
    """A node's distribution: its listener, EPMD registration, connections,
    and the `net_kernel` and `rex` processes Erlang nodes talk to."""

    def __init__(self, node: Node, options: Options) -> None:
        if "@" not in node.name or node.name == "nonode@nohost":
            # As Erlang: no distribution without a name (it would register
            # "nonode" in EPMD and call itself nohost).
            raise ValueError(
                f"a distributed node needs a name like 'py@127.0.0.1', not {node.name!r}: "
                "dist.start(name, ...) or beamish.run(main, name=...)"
            )
        self.node = node
        self.options = options
        self.services = Services(
            node, AllowList(options.rpc_allow, default="pool"), AllowList(options.spawn_allow, default="loop")
        )
        # What a frame may hold is what a message may: the decoder's input
        # bound follows max_message, whatever the Limits say.
        self.limits = dataclasses.replace(options.limits, max_size=options.max_message)
        self.conns: dict[Atom, Connection] = {}
        self.connecting: dict[Atom, asyncio.Task[Connection | None]] = {}
        # Set when we answer a peer's attempt `ok_simultaneous`: our own goes.
        self.abandoned: dict[Atom, asyncio.Event] = {}
        # Frames addressed to a node while its connection is being set up.
        self.queued: dict[Atom, list[Callable[[Connection], None]]] = {}
        self.node_subscribers: dict[Pid, int] = {}
        self.node_watchers: dict[Atom, dict[Pid, int]] = {}
        # Our SPAWN_REQUESTs awaiting their SPAWN_REPLY: ref -> (requester, peer);
        # the reply sets up the link or monitor it asked for.
        self.spawn_waiters: dict[Ref, tuple[Pid, Atom]] = {}
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.epmd: epmd.Registration | None = None
        self.embedded_epmd: epmd.EpmdServer | None = None
        self.established = asyncio.Event()  # pulsed on each new connection
        # Streams written to since the last `flush` (each adds itself on the
        # first write of a batch; they also flush themselves a loop turn
        # later, and a set stays as small as the cluster).
        self.unflushed: set[framing.FrameStream] = set()
        self.flags = F.ADVERTISED
        # Built once: loading certificates is slow, and a bad path should
        # fail `dist.start`, not the first connection.
        self.tls_server: ssl.SSLContext | None = options.tls.server_context() if options.tls else None
        self.tls_client: ssl.SSLContext | None = options.tls.client_context() if options.tls else None
        self.glob: Global | None = None

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        host = self.options.listen
        self.server = await asyncio.start_server(self._accepted, host, self.options.port, limit=1 << 20)
        self.port = self.server.sockets[0].getsockname()[1]
        alive = self.node.name.split("@", 1)[0]
        self.embedded_epmd = await epmd.ensure(epmd_port=self.options.epmd_port, listen=host)
        self.epmd = await epmd.register(alive, self.port, epmd_port=self.options.epmd_port)
        self.node.dist = self
        self.services.start()
        # global is part of every published node: Erlang peers run its
        # protocol with us from the first connection (`global:sync/0` waits
        # for it), so it starts with the distribution, as in Erlang's kernel.
        self.glob = Global(self.node, self, prevent_overlapping_partitions=self.options.prevent_overlapping_partitions)
        await self.glob.start()

    async def shutdown(self) -> None:
        await self.stop()
        self.node.extensions.pop("beamish.dist", None)

    async def stop(self) -> None:
        if self.glob is not None:
            self.glob.stop()
            self.glob = None
        conns = list(self.conns.values())
        for conn in conns:
            self.connection_down(conn, SHUTDOWN)
        await asyncio.gather(*(conn.stream.wait_closed() for conn in conns))
        for task in list(self.connecting.values()):
            task.cancel()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        if self.epmd is not None:
            self.epmd.close()
            self.epmd = None
        if self.embedded_epmd is not None:
            await self.embedded_epmd.close()
            self.embedded_epmd = None
        self.node.dist = None

    # --- connections --------------------------------------------------------

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.tls_server is not None:
            peer = writer.get_extra_info("peername")
            try:
                await asyncio.wait_for(writer.start_tls(self.tls_server), self.options.connect_timeout)
            except (ssl.SSLError, OSError, TimeoutError) as exc:
                log.warning("refused a connection from %s: TLS handshake failed: %s", peer, exc)
                writer.transport.abort()
                return
        try:
            result = await handshake.accept(
                reader,
                writer,
                name=self.node.name,
                cookie=self.options.cookie,
                flags=self.flags,
                creation=self.node.creation,
                is_pending=self._simultaneous,
                timeout=self.options.connect_timeout,
                is_connected=self._connected,
                abandon=self._abandon,
            )
        except handshake.HandshakeError as exc:
            log.warning("refused a connection: %s", exc)
            writer.close()
            return
        self._established(result)

    def _connected(self, peer: str) -> bool:
        conn = self.conns.get(Atom(peer))
        return conn is not None and conn.alive

    def _abandon(self, peer: str) -> None:
        event = self.abandoned.get(Atom(peer))
        if event is not None:
            event.set()

    def _simultaneous(self, peer: str) -> bool:
        """Whether we are connecting to `peer` ourselves (the handshake's
        simultaneous-connect rule needs to know)."""
        task = self.connecting.get(Atom(peer))
        return task is not None and not task.done()

    def _established(self, result: handshake.HandshakeResult) -> Connection:
        peer = Atom(result.peer_name)
        old = self.conns.get(peer)
        if old is not None:
            # The peer restarted (or its old connection is stale): the old
            # connection's nodedown, links and monitors come first, before
            # the new nodeup, as net_kernel orders them.
            self.connection_down(old, Atom("connection_closed"))
        stream = framing.FrameStream(
            result.reader,
            result.writer,
            ticktime=self.options.ticktime,
            max_frame=self.options.max_message,
            unflushed=self.unflushed,
        )
        conn = Connection(self, peer, result.peer_flags, result.peer_creation, stream)
        self.conns[peer] = conn
        conn.reader = self.node.loop.create_task(conn.run())
        for action in self.queued.pop(peer, ()):
            action(conn)
        for pid in list(self.node_subscribers):
            self.node.send(pid, (NODEUP, peer))
        self.established.set()
        self.established = asyncio.Event()
        log.info("%s connected to %s", self.node.name, peer)
        if telemetry.listened(telemetry.CONNECTION_UP):
            telemetry.execute(telemetry.CONNECTION_UP, {"count": 1}, {"node": self.node.name, "peer": peer})
        return conn

    def connection_down(self, conn: Connection, reason: Term, *, logged: bool = False) -> None:
        """Forget `conn`: its links and monitors fire `noconnection`, node
        monitors get `nodedown`. `logged`: the cause was logged already."""
        if not conn.alive:
            return
        conn.alive = False
        conn.stream.close()
        if self.conns.get(conn.peer) is conn:
            del self.conns[conn.peer]
        node = self.node
        for local, remote in conn.links:
            node.signal_exit(remote, local, NOCONNECTION, True)
        for ref, (watcher, target) in conn.monitors.items():
            node.signal_down(watcher, ref, target, NOCONNECTION)
        for ref, (local, _) in conn.watched.items():
            node.demonitor_from_remote(local, ref)
        for ref, (waiter, peer) in list(self.spawn_waiters.items()):
            if peer == conn.peer:
                del self.spawn_waiters[ref]
                node.send(waiter, (Atom("spawn_reply"), ref, ERROR, NOCONNECTION))
        conn.links.clear()
        conn.monitors.clear()
        conn.watched.clear()
        for pid in list(self.node_subscribers):
            node.send(pid, (NODEDOWN, conn.peer))
        for pid in list(self.node_watchers.pop(conn.peer, {})):
            node.send(pid, (NODEDOWN, conn.peer))
        if not logged:
            log.info("%s lost its connection to %s (%s)", node.name, conn.peer, reason)
        if telemetry.listened(telemetry.CONNECTION_DOWN):
            telemetry.execute(telemetry.CONNECTION_DOWN, {"count": 1}, {"node": node.name, "peer": conn.peer, "reason": reason})

    async def connect(self, peer: str) -> Connection | None:
        """Connect to `peer` (or return the existing connection)."""
        name = Atom(peer)
        if name == self.node.name:
            return None
        conn = self.conns.get(name)
        if conn is not None:
            return conn
        task = self.connecting.get(name)
        if task is None:
            task = self.node.loop.create_task(self._connect(name))
            self.connecting[name] = task
        return await asyncio.shield(task)

    async def _connect(self, peer: Atom) -> Connection | None:
        loop = self.node.loop
        abandoned = self.abandoned[peer] = asyncio.Event()
        attempt = loop.create_task(
            handshake.initiate(
                peer,
                name=self.node.name,
                cookie=self.options.node_cookies.get(peer, self.options.cookie),
                flags=self.flags,
                creation=self.node.creation,
                timeout=self.options.connect_timeout,
                epmd_port=self.options.epmd_port,
                tls=self.tls_client,
                is_connected=self._connected,
            )
        )
        attempt.add_done_callback(_retrieved)
        given_up = loop.create_task(abandoned.wait())
        result: handshake.HandshakeResult | None = None
        try:
            await asyncio.wait({attempt, given_up}, return_when=asyncio.FIRST_COMPLETED)
            if attempt.done():
                result = attempt.result()
                simultaneous = False
            else:
                # We answered the peer's own attempt `ok_simultaneous`: that
                # one is the connection, and ours is given up (dist_util).
                attempt.cancel()
                simultaneous = True
        except (handshake.HandshakeError, OSError, TimeoutError) as exc:
            # `nok`: a simultaneous connect where the peer keeps its own attempt.
            simultaneous = "nok" in str(exc)
            if not simultaneous:
                # A peer that is not up is routine (Erlang says nothing); a
                # refused handshake (a wrong cookie) is worth a warning.
                refused = isinstance(exc, handshake.HandshakeError) and not isinstance(exc, handshake.Unreachable)
                level = logging.WARNING if refused else logging.INFO
                log.log(level, "%s could not connect to %s: %s", self.node.name, peer, exc)
        except asyncio.CancelledError:
            # The node is leaving: what waited for this connection fails now.
            attempt.cancel()
            self.connecting.pop(peer, None)
            self._connect_failed(peer)
            raise
        finally:
            given_up.cancel()
            if self.abandoned.get(peer) is abandoned:
                del self.abandoned[peer]
            self.connecting.pop(peer, None)
        if simultaneous:
            # Wait for the peer's attempt to arrive here.
            deadline = loop.time() + self.options.connect_timeout
            while peer not in self.conns and loop.time() < deadline:
                try:
                    await asyncio.wait_for(self.established.wait(), deadline - loop.time())
                except TimeoutError:
                    break
        if result is None:
            self._connect_failed(peer)
            return self.conns.get(peer)  # the peer may have connected to us meanwhile
        return self._established(result)

    def _connect_failed(self, peer: Atom) -> None:
        """Signals queued for an unreachable node: sends are dropped, links
        and monitors fire with `noconnection`, a call waiting on one fails
        at once, as in Erlang (a send to a node that cannot be reached is
        lost; a monitor's DOWN and a link's EXIT say `noconnection`)."""
        for action in self.queued.pop(peer, ()):
            if isinstance(action, _OnFail):
                action.fail()
        for pid in list(self.node_watchers.pop(peer, {})):
            self.node.send(pid, (NODEDOWN, peer))

    def _with(self, peer: Atom, action: Callable[[Connection], None], on_fail: Callable[[], None] | None = None) -> None:
        """Run `action` on the connection to `peer`, connecting first if needed."""
        conn = self.conns.get(peer)
        if conn is not None:
            action(conn)
            return
        if peer == self.node.name:
            return
        self.queued.setdefault(peer, []).append(action)
        if on_fail is not None:
            self.queued[peer].append(_OnFail(on_fail))
        if peer not in self.connecting:
            self.connecting[peer] = self.node.loop.create_task(self._connect(peer))

    def nodes(self) -> list[Atom]:
        return sorted(self.conns)

    def disconnect(self, peer: str) -> bool:
        conn = self.conns.get(Atom(peer))
        if conn is None:
            return False
        self.connection_down(conn, Atom("disconnect"))
        return True

    # --- the core's Distribution protocol -----------------------------------

    # Each signal goes straight to an established connection; only the first
    # ones to a node wait (in `queued`) for the connection to be made.

    def send(self, sender: Pid | None, dest: Pid | tuple[Term, Term], msg: Term) -> None:
        if isinstance(dest, Pid):
            ctrl: tuple[Term, ...] = (C.SEND, EMPTY, dest) if sender is None else (C.SEND_SENDER, sender, dest)
            peer = dest.node
        else:
            name, node = dest
            frm = sender if sender is not None else self._kernel_pid()
            # Usually atoms already: Atom() is a dict lookup and a call, per message.
            if type(name) is not Atom:
                name = Atom(name)
            peer = node if type(node) is Atom else Atom(node)
            ctrl = (C.REG_SEND, frm, EMPTY, name)
        conn = self.conns.get(peer)
        if conn is not None:
            conn.send(ctrl, msg)
        else:
            self._send_later(peer, ctrl, msg)

    def send_alias(self, sender: Pid | None, alias: Ref, msg: Term) -> None:
        frm = sender if sender is not None else self._kernel_pid()
        conn = self.conns.get(alias.node)
        if conn is not None:
            conn.send((C.ALIAS_SEND, frm, alias), msg)
        else:
            self._send_later(alias.node, (C.ALIAS_SEND, frm, alias), msg)

    def _send_later(self, peer: Atom, ctrl: tuple[Term, ...], msg: Term) -> None:
        """A message for a node not connected yet: encoded now, so that one
        over `max_message` (or one that cannot be encoded) raises in the
        sender, as it would on an established connection."""
        head = etf.encode(ctrl, beamish_peer=True)
        body = etf.encode(msg, beamish_peer=True)
        check_size(peer, head, body, self.options.max_message)
        self._with(peer, lambda c: c.send_encoded(head, body))

    def link(self, local: Pid, remote: Pid) -> None:
        def act(c: Connection) -> None:
            c.links.add((local, remote))
            c.send((C.LINK, local, remote))

        self._with(remote.node, act, lambda: self.node.signal_exit(remote, local, NOCONNECTION, True))

    def unlink(self, local: Pid, remote: Pid) -> None:
        def act(c: Connection) -> None:
            c.links.discard((local, remote))
            c.send((C.UNLINK_ID, next(c.unlink_ids), local, remote))

        conn = self.conns.get(remote.node)
        if conn is not None:
            act(conn)

    def exit_signal(self, sender: Pid, remote: Pid, reason: Term, via_link: bool) -> None:
        conn = self.conns.get(remote.node)
        if via_link:
            if conn is not None:
                conn.links.discard((sender, remote))
                conn.send((C.PAYLOAD_EXIT, sender, remote), wire_reason(reason))
            return
        self._with(remote.node, lambda c: c.send((C.PAYLOAD_EXIT2, sender, remote), wire_reason(reason)))

    def monitor(self, watcher: Pid, target: Pid | tuple[Term, Term], ref: Ref) -> None:
        peer: Atom
        wire_target: Term
        if isinstance(target, Pid):
            peer, wire_target = target.node, target
        else:
            peer, wire_target = Atom(target[1]), Atom(target[0])
        down_as: Term = target
        conn = self.conns.get(peer)
        if conn is not None:
            conn.monitor(watcher, down_as, wire_target, ref)
        else:
            self._with(
                peer,
                lambda c: c.monitor(watcher, down_as, wire_target, ref),
                lambda: self.node.signal_down(watcher, ref, down_as, NOCONNECTION),
            )

    def demonitor(self, watcher: Pid, target: Pid | tuple[Term, Term], ref: Ref) -> None:
        peer = target.node if isinstance(target, Pid) else Atom(target[1])
        wire_target: Term = target if isinstance(target, Pid) else Atom(target[0])
        conn = self.conns.get(peer)
        if conn is not None and conn.monitors.pop(ref, None) is not None:
            conn.send((C.DEMONITOR_P, watcher, wire_target, ref))

    def flush(self) -> None:
        if self.unflushed:
            for stream in self.unflushed:
                stream.flush()
            self.unflushed.clear()

    def down(self, target: Pid, watcher: Pid, ref: Ref, reason: Term) -> None:
        conn = self.conns.get(watcher.node)
        if conn is None:
            return
        entry = conn.watched.pop(ref, None)
        if entry is None:
            return
        frm: Term = entry[1] if entry[1] is not None else target
        conn.send((C.PAYLOAD_MONITOR_P_EXIT, frm, watcher, ref), wire_reason(reason))

    # --- node monitoring ----------------------------------------------------

    def monitor_nodes(self, pid: Pid, on: bool) -> None:
        if on:
            self.node_subscribers[pid] = self.node_subscribers.get(pid, 0) + 1
        else:
            n = self.node_subscribers.get(pid, 0) - 1
            if n > 0:
                self.node_subscribers[pid] = n
            else:
                self.node_subscribers.pop(pid, None)

    def monitor_node(self, pid: Pid, peer: Atom, on: bool) -> None:
        watchers = self.node_watchers.setdefault(peer, {})
        if on:
            watchers[pid] = watchers.get(pid, 0) + 1
            if peer not in self.conns:
                self._with(peer, lambda c: None)
        else:
            watchers.pop(pid, None)

    # --- spawns we request ----------------------------------------------------

    def spawn_reply(self, conn: Connection, ctrl: tuple[Term, ...]) -> None:
        """SPAWN_REPLY: the link and the monitor take effect here, in the
        callback that decoded the reply, before the connection's next frame
        (which may be the new process's exit), as erts sets them up with
        the reply (dist.c, DOP_SPAWN_REPLY). A requester that died
        meanwhile leaves no link or monitor behind: the new process gets an
        exit (`noproc`, where erts sends the requester's own reason) and
        the monitor is taken back."""
        req_id, to, flags, result = ctrl[1], ctrl[2], ctrl[3], ctrl[4]
        waiting = self.spawn_waiters.pop(req_id, None)
        if waiting is None or waiting[0] != to or waiting[1] != conn.peer:
            return  # no request of ours (or a reply on another connection)
        node = self.node
        if type(result) is Pid:
            if flags & C.SPAWN_REPLY_LINKED:
                if node.link_from_remote(to, result):
                    conn.links.add((to, result))
                else:
                    conn.send((C.PAYLOAD_EXIT, to, result), NOPROC)
            if flags & C.SPAWN_REPLY_MONITORED:
                if node.adopt_monitor(to, req_id, result):  # its DOWN names the new pid
                    conn.monitors[req_id] = (to, result)
                else:
                    conn.send((C.DEMONITOR_P, to, result, req_id))
        else:
            node.forget_monitor(to, req_id)
        self.node.send(to, (Atom("spawn_reply"), req_id, OK if type(result) is Pid else ERROR, result))

    def spawn_remote(self, requester: Pid, peer: Atom, target: str, args: list[Term], *, link: bool, monitor: bool) -> Ref:
        module, _, function = target.partition(":")
        ref = self.node.make_ref()
        opts: list[Term] = []
        if link:
            opts.append(Atom("link"))
        if monitor:
            opts.append(Atom("monitor"))
            self.node.adopt_monitor(requester, ref, (EMPTY, peer))  # replaced by the pid on reply
        self.spawn_waiters[ref] = (requester, peer)
        ctrl = (C.SPAWN_REQUEST, ref, requester, requester, (Atom(module), Atom(function), len(args)), opts)

        def fail() -> None:
            self.spawn_waiters.pop(ref, None)
            self.node.send(requester, (Atom("spawn_reply"), ref, ERROR, NOCONNECTION))

        self._with(peer, lambda c: c.send(ctrl, list(args)), fail)
        return ref

    def _kernel_pid(self) -> Pid:
        pid = self.node.whereis("net_kernel")
        if pid is None:
            raise RuntimeError("net_kernel is not running")
        return pid

def _retrieved(task: asyncio.Task[object]) -> None:
    """An attempt given up may still fail on its own: nobody needs to hear."""
    if not task.cancelled():
        task.exception()


class _OnFail:
    """A queued action that only runs when connecting fails."""

    __slots__ = ("fail",)

    def __init__(self, fail: Callable[[], None]) -> None:
        self.fail = fail

    def __call__(self, conn: Connection) -> None:
        pass
