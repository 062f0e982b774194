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
from ._fragments import DIST_HEADER, VERSION, Reassembly

if TYPE_CHECKING:
    from ._kernel import Kernel

__all__: list[str] = []  # private: used by the kernel

log = logging.getLogger("beamish.dist")

_NO_PAYLOAD: Final = object()
_NO_ATOM_CACHE: Final = bytes([VERSION, DIST_HEADER, 0])
"""A DIST_HEADER with no atom cache references."""


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


def check_size(peer: Atom, head: bytes, body: bytes, max_message: int) -> None:
    """Raise `framing.MessageTooLarge` if the frame of control message
    `head` and payload `body` would be over `max_message`."""
    size = 1 + len(head) + len(body)
    if size > max_message:
        raise framing.MessageTooLarge(
            f"a message of {size} bytes to {peer}, over max_message={max_message} (a dist.start option)"
        )


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
        # Once FRAGMENTS is agreed erts reads only frames with a DIST_HEADER
        # (a pass-through one kills the connection: erts_prepare_dist_ext),
        # so an OTP peer gets `131, 68, 0` and bare terms. A beamish peer
        # reads pass-through whatever the flags, its fastest path.
        self.headed = bool(kernel.flags & flags & F.FRAGMENTS) and not self.beamish
        # The last send-type control message each way, encoded and decoded:
        # a stream of messages from one process to one process or name
        # repeats it frame after frame, and the codec is most of the cost.
        self._sent_ctrl: tuple[Term, ...] | None = None
        self._sent_ctrl_bytes = b""
        self._got_ctrl_bytes = b""
        self._got_ctrl_bare = b""  # the same without its version byte (behind a DIST_HEADER)
        self._got_ctrl: tuple[Term, ...] = ()
        self.limits = limits = kernel.limits
        self._decode_plain = etf.PrefixDecoder(limits=limits)
        self._decode_beamish = etf.PrefixDecoder(limits=limits, beamish_peer=True)
        self.max_message = kernel.options.max_message
        self.fragments = Reassembly(self.max_message)

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
        self.send_encoded(head, None if payload is _NO_PAYLOAD else etf.encode(payload, beamish_peer=True))

    def send_encoded(self, head: bytes, body: bytes | None) -> None:
        """Send a control message and payload, each encoded by `etf.encode`.

        Raises:
            framing.MessageTooLarge: the frame would be over `max_message`,
                which the peer (a beamish node with the same limit) would
                refuse by closing the connection.
        """
        if body is not None:
            check_size(self.peer, head, body, self.max_message)
        if not self.headed:
            self.stream.write_frame(b"".join((b"\x70", head, body)) if body is not None else b"\x70" + head)
        elif body is None:
            self.stream.write_frame(_NO_ATOM_CACHE + head[1:])
        else:
            # Behind a DIST_HEADER the terms lose their version byte: views,
            # not copies, of what may be a large payload.
            self.stream.write_frame(b"".join((_NO_ATOM_CACHE, memoryview(head)[1:], memoryview(body)[1:])))

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
        except framing.FrameTooLarge as exc:
            # Not a fault of the wire: the peer is entitled to send it (Erlang
            # has no limit) and this node's limit refused it, so it is said.
            log.warning(
                "closing the connection to %s: it sent %s; raise max_message (dist.start) to accept it",
                self.peer,
                exc,
            )
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
        """Handle one frame: a pass-through message (what beamish sends, and
        an OTP peer without FRAGMENTS), or what an OTP peer with FRAGMENTS
        sends: a message behind a DIST_HEADER, or a fragment of one."""
        if frame and frame[0] == C.PASS_THROUGH:
            self._message(frame, 1, False)
        elif len(frame) >= 3 and frame[0] == VERSION and frame[1] == DIST_HEADER:
            if frame[2] != 0:
                raise etf.DecodeError("a distribution header with atom cache references (no atom cache was agreed)")
            self._message(frame, 3, True)
        elif len(frame) >= 2 and frame[0] == VERSION:
            message = self.fragments.add(frame)
            if message is not None:
                self._message(message, 0, True)
        else:
            raise etf.DecodeError(f"unsupported frame header {bytes(frame[:2])!r}")

    def _decode_bare(self, data: bytes, offset: int) -> tuple[Term, int]:
        """A term without its version byte, as behind a DIST_HEADER."""
        return etf.decode_prefix(data, offset, limits=self.limits, beamish_peer=self.beamish, version=False)

    def _message(self, frame: bytes, offset: int, bare: bool) -> None:
        """The control message at `offset` and its payload: terms with
        version bytes, or `bare` ones (behind a DIST_HEADER)."""
        decode = self._decode_bare if bare else self._decode_beamish if self.beamish else self._decode_plain
        known = self._got_ctrl_bare if bare else self._got_ctrl_bytes
        if known and frame.startswith(known, offset):
            ctrl, offset = self._got_ctrl, offset + len(known)
        else:
            start = offset
            ctrl, offset = decode(frame, offset)
            if type(ctrl) is not tuple or not ctrl or type(ctrl[0]) is not int:
                raise etf.DecodeError(f"control message is not an operation tuple: {reprlib.repr(ctrl)}")
            try:
                C.check(ctrl, self.peer)
            except ValueError as exc:
                raise etf.DecodeError(f"malformed control message: {exc}") from None
            if ctrl[0] in _REPEATING:
                raw = bytes(frame[start:offset])
                self._got_ctrl = ctrl
                self._got_ctrl_bare, self._got_ctrl_bytes = (raw, b"\x83" + raw) if bare else (raw[1:], raw)
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


