"""One established connection to a peer node: the frames it sends, and the
control messages it receives turned into calls on the core.

Each incoming control message is checked against its operation's shape
(`control.check`) and handed to a handler here, which reaches the node only
through its methods for the wire (`Node.deliver_from_remote`,
`link_from_remote`, `monitor_from_remote`, `signal_exit`, `signal_down`...).
A malformed frame closes this connection, never the node.

>>> from beamish.dist._connection import wire_reason
>>> wire_reason("kill"), wire_reason(("shutdown", 1))
(Atom('kill'), (Atom('shutdown'), 1))
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import reprlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from .._atoms import NOCONNECTION, NOPROC
from ..terms import Atom, Pid, Ref, Term
from . import control as C
from . import etf, framing
from . import flags as F

if TYPE_CHECKING:
    from ._kernel import Kernel

__all__: list[str] = []  # private: used by the kernel

log = logging.getLogger("beamish.dist")

_NO_PAYLOAD: Final = object()


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
            self.node.deliver_from_remote(to, msg)

    def _reg_send(self, ctrl: tuple[Term, ...], msg: Term) -> None:
        # REG_SEND {6, From, _, ToName}: unknown names drop the message, as in Erlang.
        self.node.deliver_by_name_from_remote(ctrl[3], msg)

    def _alias_send(self, ctrl: tuple[Term, ...], msg: Term) -> None:
        alias = ctrl[2]
        if type(alias) is Ref:
            self.node.send_alias(alias, msg)

    def _link(self, ctrl: tuple[Term, ...], _: Term) -> None:
        remote, local = ctrl[1], ctrl[2]
        if not self.node.link_from_remote(local, remote):
            # The peer's process links to a dead one: it gets an exit with noproc.
            self.send((C.PAYLOAD_EXIT, local, remote), NOPROC)
            return
        self.links.add((local, remote))

    def _unlink_id(self, ctrl: tuple[Term, ...], _: Term) -> None:
        uid, remote, local = ctrl[1], ctrl[2], ctrl[3]
        self.node.unlink_from_remote(local, remote)
        self.links.discard((local, remote))
        self.send((C.UNLINK_ID_ACK, uid, local, remote))

    def _unlink_legacy(self, ctrl: tuple[Term, ...], _: Term) -> None:
        remote, local = ctrl[1], ctrl[2]
        self.node.unlink_from_remote(local, remote)
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
        name = None if type(target) is Pid else Atom(target)
        watched = self.node.monitor_from_remote(watcher, target if name is None else name, ref)
        if watched is None:
            self.send((C.PAYLOAD_MONITOR_P_EXIT, target, watcher, ref), NOPROC)
            return
        self.watched[ref] = (watched, name)

    def _demonitor(self, ctrl: tuple[Term, ...], _: Term) -> None:
        ref = ctrl[3]
        entry = self.watched.pop(ref, None)
        if entry is not None:
            self.node.demonitor_from_remote(entry[0], ref)

    def _monitor_exit(self, ctrl: tuple[Term, ...], payload: Term) -> None:
        op = ctrl[0]
        reason = payload if op == C.PAYLOAD_MONITOR_P_EXIT else ctrl[4]
        target, watcher, ref = ctrl[1], ctrl[2], ctrl[3]
        self.monitors.pop(ref, None)
        if type(target) is not Pid:
            target = (target, self.peer)  # a name monitor: the core reports {name, node}
        self.node.signal_down(watcher, ref, target, reason)

    def _spawn_request(self, ctrl: tuple[Term, ...], args: Term) -> None:
        self.kernel.services.spawn_request(self, ctrl, args)

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


