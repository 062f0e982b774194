"""The distribution controller: connections to other nodes and the control
messages that carry sends, links, monitors, exits and spawns across them.

`Kernel` implements the core's `Distribution` protocol (`beamish.node`): the
core calls it, fire-and-forget, whenever a signal is addressed to another
node; each `Connection` turns incoming control messages back into calls on
the core (`Node.send`, `signal_exit`, `signal_down`...). The core never
imports this module.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import reprlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from .. import _gen
from .._gen import reply
from ..node import Node
from ..process import Exit, Process, _current
from ..terms import Atom, Pid, Ref, Term
from . import control as C
from ._allow import REFUSED, AllowList, Missing
from ._allow import UNDEF as UNDEFINED
from . import epmd, etf, framing, handshake
from . import flags as F
from .tls import TlsOptions

log = logging.getLogger("beamish.dist")

NOCONNECTION: Final = Atom("noconnection")
NOPROC: Final = Atom("noproc")
NODEUP: Final = Atom("nodeup")
NODEDOWN: Final = Atom("nodedown")
EMPTY: Final = Atom("")
UNDEF: Final = Atom("undef")
_NO_PAYLOAD: Final = object()


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
    max_frame: int = 64 * 1024 * 1024
    epmd_port: int | None = None
    limits: etf.Limits = field(default_factory=etf.Limits)
    tls: TlsOptions | None = None


def wire_reason(reason: Term) -> Term:
    """An exit reason as Erlang expects it. Python code writes reasons as
    strings (`"normal"`, `"kill"`, `("shutdown", x)`), which the core treats
    as atoms; on the wire a str reason (or the str tag of a tuple reason)
    becomes an atom, so Erlang sees `kill`, not `<<"kill">>`. A Python
    exception becomes `{python, 'ExceptionType', <<"message">>}` (its
    traceback stays in this node's log)."""
    if isinstance(reason, BaseException):
        return (Atom("python"), Atom(type(reason).__name__[:255]), str(reason).encode())
    if type(reason) is str and len(reason) <= 255:
        return Atom(reason)
    if type(reason) is tuple and reason and type(reason[0]) is str and len(reason[0]) <= 255:
        return (Atom(reason[0]), *reason[1:])
    return reason


_REPEATING: Final = frozenset({C.SEND, C.REG_SEND, C.SEND_SENDER})
"""Control messages that repeat unchanged while one process sends to another."""


class Connection:
    """One established connection to a peer node."""

    def __init__(self, kernel: Kernel, peer: Atom, flags: int, creation: int, stream: framing.FrameStream) -> None:
        self.kernel = kernel
        self.node = kernel.node
        self.peer = peer
        self.flags = flags
        self.creation = creation
        self.stream = stream
        self.alive = True
        # Links between a local and a peer process, as (local, remote).
        self.links: set[tuple[Pid, Pid]] = set()
        # Monitors held by local watchers on peer targets: ref -> (watcher, target).
        self.monitors: dict[Ref, tuple[Pid, Term]] = {}
        # Monitors held by peer watchers on local processes: ref -> (local pid, name or None).
        self.watched: dict[Ref, tuple[Pid, Atom | None]] = {}
        self.unlink_ids = itertools.count(1)
        self.reader: asyncio.Task[None] | None = None
        # Whether the peer is a beamish node (its handshake flags say so):
        # then its binaries decode as str and its BIT_BINARY-8 as bytes.
        self.beamish = bool(flags & F.BEAMISH)
        # The last send-type control message each way, encoded and decoded:
        # a stream of messages from one process to one process or name
        # repeats it frame after frame, and the codec is most of the cost.
        self._sent_ctrl: tuple[Term, ...] | None = None
        self._sent_ctrl_bytes = b""
        self._got_ctrl_bytes = b""
        self._got_ctrl: tuple[Term, ...] = ()
        limits = kernel.options.limits
        self._decode_plain = etf.PrefixDecoder(limits=limits)
        self._decode_beamish = etf.PrefixDecoder(limits=limits, beamish_peer=True)

    def __repr__(self) -> str:
        return f"<Connection {self.node.name} -> {self.peer}>"

    # --- sending ------------------------------------------------------------

    def send(self, ctrl: tuple[Term, ...], payload: Term = _NO_PAYLOAD) -> None:
        if not self.alive:
            return
        # Always the beamish encoding: Erlang reads it as the ordinary terms
        # they are, and a beamish peer keeps str and bytes apart.
        if ctrl[0] in _REPEATING and ctrl == self._sent_ctrl:
            head = self._sent_ctrl_bytes
        else:
            head = etf.encode(ctrl, beamish_peer=True)
            if ctrl[0] in _REPEATING:
                self._sent_ctrl, self._sent_ctrl_bytes = ctrl, head
        if payload is _NO_PAYLOAD:
            self.stream.write_frame(b"\x70" + head)
        else:
            self.stream.write_frame(b"".join((b"\x70", head, etf.encode(payload, beamish_peer=True))))

    def monitor(self, watcher: Pid, down_as: Term, wire_target: Term, ref: Ref) -> None:
        """`watcher` monitors `wire_target` (a pid or a name) on the peer;
        its DOWN will name `down_as`."""
        self.monitors[ref] = (watcher, down_as)
        self.send((C.MONITOR_P, watcher, wire_target, ref))

    # --- receiving ----------------------------------------------------------

    async def run(self) -> None:
        # One log line per lost connection: the reason, here or in connection_down.
        logged = True
        try:
            await self.stream.serve(self.dispatch)
            logged = False
        except etf.DecodeError as exc:
            log.error("closing the connection to %s: malformed frame: %s", self.peer, exc)
        except framing.TickTimeout:
            # As net_kernel reports it: "** Node X not responding ** ** Removing
            # (timedout) connection **", an error.
            log.error(
                "node %s not responding: nothing received for %s s (net_ticktime); removing the connection",
                self.peer,
                self.stream.ticktime,
            )
        except (ConnectionError, asyncio.IncompleteReadError, framing.FrameError) as exc:
            log.info("connection to %s lost: %s", self.peer, exc)
        except asyncio.CancelledError:
            logged = False
        except Exception:
            # A bug of ours, not the peer's: still one connection, not the node.
            log.exception("closing the connection to %s: a frame could not be handled", self.peer)
        finally:
            self.kernel.connection_down(self, NOCONNECTION, logged=logged)

    def dispatch(self, frame: bytes) -> None:
        if not frame or frame[0] != C.PASS_THROUGH:
            raise etf.DecodeError(f"unsupported frame header {bytes(frame[:1])!r} (no atom cache was agreed)")
        decode = self._decode_beamish if self.beamish else self._decode_plain
        known = self._got_ctrl_bytes
        if known and frame.startswith(known, 1):
            ctrl, offset = self._got_ctrl, 1 + len(known)
        else:
            ctrl, offset = decode(frame, 1)
            if type(ctrl) is not tuple or not ctrl or type(ctrl[0]) is not int:
                raise etf.DecodeError(f"control message is not an operation tuple: {reprlib.repr(ctrl)}")
            try:
                C.check(ctrl, self.peer)
            except ValueError as exc:
                raise etf.DecodeError(f"malformed control message: {exc}") from None
            if ctrl[0] in _REPEATING:
                self._got_ctrl, self._got_ctrl_bytes = ctrl, bytes(frame[1:offset])
        op = ctrl[0]
        payload: Term = None
        if op in C.WITH_PAYLOAD:
            payload, offset = decode(frame, offset)
        if offset != len(frame):
            raise etf.DecodeError(f"{len(frame) - offset} trailing bytes after {C.name_of(op)}", offset)
        try:
            _HANDLERS[op](self, ctrl, payload)
        except (ValueError, TypeError, IndexError) as exc:
            raise etf.DecodeError(f"malformed {C.name_of(op)} {reprlib.repr(ctrl)}: {exc}") from None

    # Each handler gets the control tuple and the payload (None if none).

    def _send(self, ctrl: tuple[Term, ...], msg: Term) -> None:
        # SEND {2, _, To} / SEND_TT / SEND_SENDER {22, From, To} / SEND_SENDER_TT
        to = ctrl[2]
        if type(to) is Pid:
            proc = self.node.local(to)
            if proc is not None:
                proc.deliver_at_once(msg)

    def _reg_send(self, ctrl: tuple[Term, ...], msg: Term) -> None:
        # REG_SEND {6, From, _, ToName}: unknown names drop the message, as in Erlang.
        proc = self.node.names.get(ctrl[3])
        if proc is not None:
            proc.deliver_at_once(msg)

    def _alias_send(self, ctrl: tuple[Term, ...], msg: Term) -> None:
        alias = ctrl[2]
        if type(alias) is Ref:
            self.node.send_alias(alias, msg)

    def _link(self, ctrl: tuple[Term, ...], _: Term) -> None:
        remote, local = ctrl[1], ctrl[2]
        proc = self.node.local(local)
        if proc is None:
            # The peer's process links to a dead one: it gets an exit with noproc.
            self.send((C.PAYLOAD_EXIT, local, remote), NOPROC)
            return
        proc.add_link(remote)
        self.links.add((local, remote))

    def _unlink_id(self, ctrl: tuple[Term, ...], _: Term) -> None:
        uid, remote, local = ctrl[1], ctrl[2], ctrl[3]
        proc = self.node.local(local)
        if proc is not None:
            proc.remove_link(remote)
        self.links.discard((local, remote))
        self.send((C.UNLINK_ID_ACK, uid, local, remote))

    def _unlink_legacy(self, ctrl: tuple[Term, ...], _: Term) -> None:
        remote, local = ctrl[1], ctrl[2]
        proc = self.node.local(local)
        if proc is not None:
            proc.remove_link(remote)
        self.links.discard((local, remote))

    def _ignore(self, ctrl: tuple[Term, ...], _: Term) -> None:
        pass

    def _exit(self, ctrl: tuple[Term, ...], payload: Term) -> None:
        # EXIT {3, From, To, Reason} / EXIT_TT {13, From, To, Token, Reason} / PAYLOAD_EXIT(_TT)
        op = ctrl[0]
        reason = payload if op in (C.PAYLOAD_EXIT, C.PAYLOAD_EXIT_TT) else ctrl[-1]
        remote, local = ctrl[1], ctrl[2]
        self.links.discard((local, remote))
        self.node.signal_exit(remote, local, reason, True)

    def _exit2(self, ctrl: tuple[Term, ...], payload: Term) -> None:
        op = ctrl[0]
        reason = payload if op in (C.PAYLOAD_EXIT2, C.PAYLOAD_EXIT2_TT) else ctrl[-1]
        self.node.signal_exit(ctrl[1], ctrl[2], reason, False)

    def _monitor(self, ctrl: tuple[Term, ...], _: Term) -> None:
        watcher, target, ref = ctrl[1], ctrl[2], ctrl[3]
        name: Atom | None = None
        proc: Process | None
        if type(target) is Pid:
            proc = self.node.local(target)
        else:
            name = Atom(target)
            proc = self.node.names.get(name)
        if proc is None:
            self.send((C.PAYLOAD_MONITOR_P_EXIT, target, watcher, ref), NOPROC)
            return
        proc.add_watcher(ref, watcher)
        self.watched[ref] = (proc.pid, name)

    def _demonitor(self, ctrl: tuple[Term, ...], _: Term) -> None:
        ref = ctrl[3]
        entry = self.watched.pop(ref, None)
        if entry is not None:
            proc = self.node.local(entry[0])
            if proc is not None:
                proc.remove_watcher(ref)

    def _monitor_exit(self, ctrl: tuple[Term, ...], payload: Term) -> None:
        op = ctrl[0]
        reason = payload if op == C.PAYLOAD_MONITOR_P_EXIT else ctrl[4]
        target, watcher, ref = ctrl[1], ctrl[2], ctrl[3]
        self.monitors.pop(ref, None)
        if type(target) is not Pid:
            target = (target, self.peer)  # a name monitor: the core reports {name, node}
        self.node.signal_down(watcher, ref, target, reason)

    def _spawn_request(self, ctrl: tuple[Term, ...], args: Term) -> None:
        self.kernel.spawn_request(self, ctrl, args)

    def _spawn_reply(self, ctrl: tuple[Term, ...], _: Term) -> None:
        self.kernel.spawn_reply(self, ctrl)


_HANDLERS: Final[dict[int, Callable[[Connection, tuple[Term, ...], Term], None]]] = {
    C.SEND: Connection._send,
    C.SEND_TT: Connection._send,
    C.SEND_SENDER: Connection._send,
    C.SEND_SENDER_TT: Connection._send,
    C.REG_SEND: Connection._reg_send,
    C.REG_SEND_TT: Connection._reg_send,
    C.ALIAS_SEND: Connection._alias_send,
    C.ALIAS_SEND_TT: Connection._alias_send,
    C.LINK: Connection._link,
    C.UNLINK: Connection._unlink_legacy,
    C.UNLINK_ID: Connection._unlink_id,
    C.UNLINK_ID_ACK: Connection._ignore,
    C.NODE_LINK: Connection._ignore,
    C.GROUP_LEADER: Connection._ignore,
    C.EXIT: Connection._exit,
    C.EXIT_TT: Connection._exit,
    C.PAYLOAD_EXIT: Connection._exit,
    C.PAYLOAD_EXIT_TT: Connection._exit,
    C.EXIT2: Connection._exit2,
    C.EXIT2_TT: Connection._exit2,
    C.PAYLOAD_EXIT2: Connection._exit2,
    C.PAYLOAD_EXIT2_TT: Connection._exit2,
    C.MONITOR_P: Connection._monitor,
    C.DEMONITOR_P: Connection._demonitor,
    C.MONITOR_P_EXIT: Connection._monitor_exit,
    C.PAYLOAD_MONITOR_P_EXIT: Connection._monitor_exit,
    C.SPAWN_REQUEST: Connection._spawn_request,
    C.SPAWN_REQUEST_TT: Connection._spawn_request,
    C.SPAWN_REPLY: Connection._spawn_reply,
    C.SPAWN_REPLY_TT: Connection._spawn_reply,
}


class Kernel:
    """A node's distribution: its listener, EPMD registration, connections,
    and the `net_kernel` and `rex` processes Erlang nodes talk to."""

    def __init__(self, node: Node, options: Options) -> None:
        if "@" not in node.name:
            raise ValueError(f"a distributed node needs a name like 'py@127.0.0.1', not {node.name!r}")
        self.node = node
        self.options = options
        self.rpc_allow = AllowList(options.rpc_allow)
        self.spawn_allow = AllowList(options.spawn_allow)
        self.conns: dict[Atom, Connection] = {}
        self.connecting: dict[Atom, asyncio.Task[Connection | None]] = {}
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

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        host = self.options.listen
        self.server = await asyncio.start_server(self._accepted, host, self.options.port, limit=1 << 20)
        self.port = self.server.sockets[0].getsockname()[1]
        alive = self.node.name.split("@", 1)[0]
        self.embedded_epmd = await epmd.ensure(epmd_port=self.options.epmd_port, listen=host)
        self.epmd = await epmd.register(alive, self.port, epmd_port=self.options.epmd_port)
        self.node.dist = self
        self.node.spawn(self._net_kernel, (), link_to=None, name="net_kernel", initial_call="net_kernel")
        self.node.spawn(self._rex, (), link_to=None, name="rex", initial_call="rex")

    async def shutdown(self) -> None:
        await self.stop()
        self.node.extensions.pop("beamish.dist", None)

    async def stop(self) -> None:
        conns = list(self.conns.values())
        for conn in conns:
            self.connection_down(conn, Atom("shutdown"))
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
            )
        except handshake.HandshakeError as exc:
            log.warning("refused a connection: %s", exc)
            writer.close()
            return
        self._established(result)

    def _simultaneous(self, peer: str) -> bool:
        """Whether we are connecting to `peer` ourselves (the handshake's
        simultaneous-connect rule needs to know)."""
        task = self.connecting.get(Atom(peer))
        return task is not None and not task.done()

    def _established(self, result: handshake.HandshakeResult) -> Connection:
        peer = Atom(result.peer_name)
        old = self.conns.get(peer)
        if old is not None:
            old.stream.close()
        stream = framing.FrameStream(
            result.reader,
            result.writer,
            ticktime=self.options.ticktime,
            max_frame=self.options.max_frame,
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
            proc = node.local(local)
            if proc is not None:
                proc.remove_watcher(ref)
        for ref, (waiter, peer) in list(self.spawn_waiters.items()):
            if peer == conn.peer:
                del self.spawn_waiters[ref]
                node.send(waiter, (Atom("spawn_reply"), ref, Atom("error"), NOCONNECTION))
        conn.links.clear()
        conn.monitors.clear()
        conn.watched.clear()
        for pid in list(self.node_subscribers):
            node.send(pid, (NODEDOWN, conn.peer))
        for pid in list(self.node_watchers.pop(conn.peer, {})):
            node.send(pid, (NODEDOWN, conn.peer))
        if not logged:
            log.info("%s lost its connection to %s (%s)", node.name, conn.peer, reason)

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
        try:
            result = await handshake.initiate(
                peer,
                name=self.node.name,
                cookie=self.options.cookie,
                flags=self.flags,
                creation=self.node.creation,
                timeout=self.options.connect_timeout,
                epmd_port=self.options.epmd_port,
                tls=self.tls_client,
            )
        except (handshake.HandshakeError, OSError, TimeoutError) as exc:
            result = None
            if "nok" in str(exc):
                # Simultaneous connect and the peer keeps its own attempt:
                # wait for that one to arrive here.
                deadline = self.node.loop.time() + self.options.connect_timeout
                while peer not in self.conns and self.node.loop.time() < deadline:
                    try:
                        await asyncio.wait_for(self.established.wait(), deadline - self.node.loop.time())
                    except TimeoutError:
                        break
            else:
                # A peer that is not up is routine (Erlang says nothing); a
                # refused handshake (a wrong cookie) is worth a warning.
                refused = isinstance(exc, handshake.HandshakeError) and not isinstance(exc, handshake.Unreachable)
                level = logging.WARNING if refused else logging.INFO
                log.log(level, "%s could not connect to %s: %s", self.node.name, peer, exc)
        except asyncio.CancelledError:
            # The node is leaving: what waited for this connection fails now.
            self.connecting.pop(peer, None)
            self._connect_failed(peer)
            raise
        finally:
            self.connecting.pop(peer, None)
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
            self._with(peer, lambda c: c.send(ctrl, msg))

    def send_alias(self, sender: Pid | None, alias: Ref, msg: Term) -> None:
        frm = sender if sender is not None else self._kernel_pid()
        conn = self.conns.get(alias.node)
        if conn is not None:
            conn.send((C.ALIAS_SEND, frm, alias), msg)
        else:
            self._with(alias.node, lambda c: c.send((C.ALIAS_SEND, frm, alias), msg))

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

    # --- spawn and rpc on behalf of peers -----------------------------------

    def spawn_request(self, conn: Connection, ctrl: tuple[Term, ...], args: Term) -> None:
        req_id, requester, mfa, opts = ctrl[1], ctrl[2], ctrl[4], ctrl[5]
        module, function, arity = mfa
        options = set()
        for opt in opts if isinstance(opts, list) else []:
            options.add(opt if isinstance(opt, str) else opt[0] if isinstance(opt, tuple) and opt else None)
        link = "link" in options
        monitor = "monitor" in options
        if not isinstance(args, list) or len(args) != arity:
            conn.send((C.SPAWN_REPLY, req_id, requester, 0, Atom("badarg")))
            return
        body = self._spawn_body(str(module), str(function), args)
        if body is None:
            conn.send((C.SPAWN_REPLY, req_id, requester, 0, Atom("notsup")))
            return
        pid = self.node.spawn(body, (), link_to=None, name=None, initial_call=f"{module}:{function}/{arity}")
        proc = self.node.local(pid)
        flags = 0
        if proc is not None:
            if link:
                proc.add_link(requester)
                conn.links.add((pid, requester))
                flags |= C.SPAWN_REPLY_LINKED
            if monitor:
                proc.add_watcher(req_id, requester)
                conn.watched[req_id] = (pid, None)
                flags |= C.SPAWN_REPLY_MONITORED
        conn.send((C.SPAWN_REPLY, req_id, requester, flags, pid))

    def _spawn_body(self, module: str, function: str, args: list[Term]) -> Callable[[], object] | None:
        """What a peer's SPAWN_REQUEST runs: erpc's call and cast (which
        check `rpc_allow`), an allow-listed function, or, for a function an
        allow-listed module lacks, a process that exits `{undef, [MFA]}`, as
        an Erlang node answers `spawn(Node, M, Missing, A)`. None: refused
        (`notsup`)."""
        if (module, function) == ("erpc", "execute_call") and len(args) == 4:
            tag, m, f, a = args
            return lambda: self._erpc_execute(tag, str(m), str(f), a)
        if (module, function) == ("erpc", "execute_cast") and len(args) == 3:
            # erpc:cast and, since OTP 23, rpc:cast: spawn_request(..., [{reply, no}]).
            m, f, a = args
            return lambda: self._erpc_cast(str(m), str(f), a)
        fn = self.spawn_allow.lookup(module, function)
        if fn is REFUSED:
            log.warning("refused a spawn of %s:%s from a peer: not in spawn_allow", module, function)
            return None
        if fn is UNDEFINED:
            undef: Term = (UNDEF, [(Atom(module), Atom(function), args, [])])

            def missing() -> None:
                raise Exit(undef)

            return missing
        return lambda: fn(*args)

    async def _erpc_execute(self, tag: Term, module: str, function: str, args: Term) -> None:
        """erpc:execute_call/4 as Erlang runs it: the outcome is the exit reason."""
        outcome = await self.apply(module, function, args)
        if outcome[0] == "return":
            raise Exit((tag, Atom("return"), outcome[1]))
        raise Exit((tag, Atom("error"), outcome[1], []))

    async def _erpc_cast(self, module: str, function: str, args: Term) -> None:
        """erpc:execute_cast/3: nobody waits for the outcome; a failure ends
        the process with erpc's `{exception, {Reason, Stack}}`."""
        outcome = await self.apply(module, function, args)
        if outcome[0] == "error":
            raise Exit((Atom("exception"), (outcome[1], [])))

    async def apply(self, module: str, function: str, args: Term) -> tuple[str, Term]:
        """Run an allow-listed `module.function(*args)`: ("return", value) or
        ("error", erlang_reason)."""
        fn = self.rpc_allow.lookup(module, function)
        if fn is REFUSED:
            log.warning("refused an rpc of %s:%s from a peer: not in rpc_allow", module, function)
        if isinstance(fn, Missing) or not isinstance(args, list):
            return ("error", UNDEF)
        try:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
        except Exception as exc:
            return ("error", wire_reason(exc))
        return ("return", result)

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
        proc = self.node.local(to)
        if type(result) is Pid:
            if flags & C.SPAWN_REPLY_LINKED:
                if proc is not None:
                    proc.add_link(result)
                    conn.links.add((to, result))
                else:
                    conn.send((C.PAYLOAD_EXIT, to, result), NOPROC)
            if flags & C.SPAWN_REPLY_MONITORED:
                if proc is not None:
                    proc.add_monitor(req_id, result)  # its DOWN names the new pid
                    conn.monitors[req_id] = (to, result)
                else:
                    conn.send((C.DEMONITOR_P, to, result, req_id))
        elif proc is not None:
            proc.pop_monitor(req_id)
        self.node.send(to, (Atom("spawn_reply"), req_id, Atom("ok") if type(result) is Pid else Atom("error"), result))

    def spawn_remote(self, requester: Process, peer: Atom, target: str, args: list[Term], *, link: bool, monitor: bool) -> Ref:
        module, _, function = target.partition(":")
        ref = self.node.make_ref()
        opts: list[Term] = []
        if link:
            opts.append(Atom("link"))
        if monitor:
            opts.append(Atom("monitor"))
            requester.add_monitor(ref, (EMPTY, peer))  # replaced by the pid on reply
        self.spawn_waiters[ref] = (requester.pid, peer)
        ctrl = (C.SPAWN_REQUEST, ref, requester.pid, requester.pid, (Atom(module), Atom(function), len(args)), opts)

        def fail() -> None:
            self.spawn_waiters.pop(ref, None)
            self.node.send(requester.pid, (Atom("spawn_reply"), ref, Atom("error"), NOCONNECTION))

        self._with(peer, lambda c: c.send(ctrl, list(args)), fail)
        return ref

    # --- net_kernel and rex -------------------------------------------------

    def _kernel_pid(self) -> Pid:
        proc = self.node.names.get("net_kernel")
        if proc is None:
            raise RuntimeError("net_kernel is not running")
        return proc.pid

    async def _net_kernel(self) -> None:
        """Answers `net_adm:ping` ('$gen_call' {is_auth, Node} -> yes)."""
        from ..process import receive

        while True:
            msg = await receive()
            match msg:
                case ("$gen_call", (Pid() as pid, tag), ("is_auth", _)):
                    reply((pid, tag), Atom("yes"))
                case ("$gen_call", (Pid() as pid, tag), _):
                    reply((pid, tag), Atom("ignored"))

    async def _rex(self) -> None:
        """Answers `rpc:call`'s legacy path: '$gen_call' {call, M, F, A, GL}."""
        from ..process import receive

        while True:
            msg = await receive()
            match msg:
                case ("$gen_call", (Pid() as pid, tag), ("call", m, f, a, _)):
                    self.node.spawn(self._rex_call, ((pid, tag), str(m), str(f), a), link_to=None, name=None)
                case ("$gen_cast", ("cast", m, f, a, _)):
                    self.node.spawn(self.apply, (str(m), str(f), a), link_to=None, name=None)

    async def _rex_call(self, from_: tuple[Pid, Term], module: str, function: str, args: Term) -> None:
        outcome = await self.apply(module, function, args)
        if outcome[0] == "return":
            reply(from_, outcome[1])
        else:
            reply(from_, (Atom("badrpc"), (Atom("EXIT"), (outcome[1], []))))


class _OnFail:
    """A queued action that only runs when connecting fails."""

    __slots__ = ("fail",)

    def __init__(self, fail: Callable[[], None]) -> None:
        self.fail = fail

    def __call__(self, conn: Connection) -> None:
        pass
