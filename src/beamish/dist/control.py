"""The distribution protocol's control messages: every shape beamish sends or
accepts after the handshake, in one place.

A frame after the handshake is `112` (pass-through: no atom cache), a
control message, and for some operations a payload term, each in the
External Term Format with its own version byte. The control message is a
tuple whose first element is one of the operation codes below.

>>> from beamish.dist import control
>>> control.SEND_SENDER, control.name_of(control.MONITOR_P_EXIT)
(22, 'MONITOR_P_EXIT')

`check` holds an incoming control message to its operation's shape (arity
and element types, the sender being a process of the peer), as erts does
before acting on one; anything else is a protocol error:

>>> from beamish import Atom
>>> control.check((control.REG_SEND, 42, Atom(""), Atom("inbox")), "a@h")
Traceback (most recent call last):
    ...
ValueError: REG_SEND: element 1 is not a pid of a@h: 42

Which operations carry a payload (the message, the exit reason or the
argument list) is `WITH_PAYLOAD`. Trace-token (`_TT`) variants carry one more
element before the payload-less part; beamish accepts them and ignores the
token. Adding an OTP release is one change here and in `flags.py`.

OTP: mirrors erts' "Distribution Protocol" chapter (Protocol between
Connected Nodes), and `check` the `invalid_message` cases of erts'
`erts_net_message` (dist.c: a sender not of the peer, a ref that is not a
ref, a wrong arity); differs in that beamish never sends the `_TT` variants or
the legacy UNLINK (4) once UNLINK_ID is agreed, which every OTP 26+ peer
requires.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from typing import Final

from ..terms import Atom, Pid, Ref, Term

__all__ = [
    "ALIAS_SEND",
    "ALIAS_SEND_TT",
    "DEMONITOR_P",
    "EXIT",
    "EXIT2",
    "EXIT2_TT",
    "EXIT_TT",
    "GROUP_LEADER",
    "LINK",
    "MONITOR_P",
    "MONITOR_P_EXIT",
    "NODE_LINK",
    "PASS_THROUGH",
    "PAYLOAD_EXIT",
    "PAYLOAD_EXIT2",
    "PAYLOAD_EXIT2_TT",
    "PAYLOAD_EXIT_TT",
    "PAYLOAD_MONITOR_P_EXIT",
    "REG_SEND",
    "REG_SEND_TT",
    "SEND",
    "SEND_SENDER",
    "SEND_SENDER_TT",
    "SEND_TT",
    "SPAWN_REPLY",
    "SPAWN_REPLY_TT",
    "SPAWN_REQUEST",
    "SPAWN_REQUEST_TT",
    "UNLINK",
    "UNLINK_ID",
    "UNLINK_ID_ACK",
    "WITH_PAYLOAD",
    "check",
    "name_of",
]

PASS_THROUGH: Final = 112
"""The first byte of every frame beamish sends: no distribution header."""

LINK: Final = 1  # {1, FromPid, ToPid}
SEND: Final = 2  # {2, Unused, ToPid} + Message
EXIT: Final = 3  # {3, FromPid, ToPid, Reason}
UNLINK: Final = 4  # {4, FromPid, ToPid} (legacy, before UNLINK_ID)
NODE_LINK: Final = 5  # {5}
REG_SEND: Final = 6  # {6, FromPid, Unused, ToName} + Message
GROUP_LEADER: Final = 7  # {7, FromPid, ToPid}
EXIT2: Final = 8  # {8, FromPid, ToPid, Reason}
SEND_TT: Final = 12  # {12, Unused, ToPid, TraceToken} + Message
EXIT_TT: Final = 13  # {13, FromPid, ToPid, TraceToken, Reason}
REG_SEND_TT: Final = 16  # {16, FromPid, Unused, ToName, TraceToken} + Message
EXIT2_TT: Final = 18  # {18, FromPid, ToPid, TraceToken, Reason}
MONITOR_P: Final = 19  # {19, FromPid, ToProc, Ref}; ToProc is a pid or a registered name
DEMONITOR_P: Final = 20  # {20, FromPid, ToProc, Ref}
MONITOR_P_EXIT: Final = 21  # {21, FromProc, ToPid, Ref, Reason}
SEND_SENDER: Final = 22  # {22, FromPid, ToPid} + Message
SEND_SENDER_TT: Final = 23  # {23, FromPid, ToPid, TraceToken} + Message
PAYLOAD_EXIT: Final = 24  # {24, FromPid, ToPid} + Reason
PAYLOAD_EXIT_TT: Final = 25  # {25, FromPid, ToPid, TraceToken} + Reason
PAYLOAD_EXIT2: Final = 26  # {26, FromPid, ToPid} + Reason
PAYLOAD_EXIT2_TT: Final = 27  # {27, FromPid, ToPid, TraceToken} + Reason
PAYLOAD_MONITOR_P_EXIT: Final = 28  # {28, FromProc, ToPid, Ref} + Reason
SPAWN_REQUEST: Final = 29  # {29, ReqId, From, GroupLeader, {M, F, Arity}, OptList} + ArgList
SPAWN_REQUEST_TT: Final = 30  # {30, ReqId, From, GroupLeader, {M, F, Arity}, OptList, Token} + ArgList
SPAWN_REPLY: Final = 31  # {31, ReqId, To, Flags, Result}
SPAWN_REPLY_TT: Final = 32  # {32, ReqId, To, Flags, Result, Token}
ALIAS_SEND: Final = 33  # {33, FromPid, Alias} + Message
ALIAS_SEND_TT: Final = 34  # {34, FromPid, Alias, Token} + Message
UNLINK_ID: Final = 35  # {35, Id, FromPid, ToPid}
UNLINK_ID_ACK: Final = 36  # {36, Id, FromPid, ToPid}

WITH_PAYLOAD: Final = frozenset(
    {
        SEND,
        REG_SEND,
        SEND_TT,
        REG_SEND_TT,
        SEND_SENDER,
        SEND_SENDER_TT,
        PAYLOAD_EXIT,
        PAYLOAD_EXIT_TT,
        PAYLOAD_EXIT2,
        PAYLOAD_EXIT2_TT,
        PAYLOAD_MONITOR_P_EXIT,
        SPAWN_REQUEST,
        SPAWN_REQUEST_TT,
        ALIAS_SEND,
        ALIAS_SEND_TT,
    }
)
"""Operations followed by a second term in the same frame."""

SPAWN_REPLY_LINKED: Final = 1
"""SPAWN_REPLY flag: the new process is linked to the requester."""
SPAWN_REPLY_MONITORED: Final = 2
"""SPAWN_REPLY flag: the requester monitors the new process (ref = ReqId)."""

_NAMES: Final = {v: k for k, v in globals().items() if k.isupper() and isinstance(v, int) and k not in ("PASS_THROUGH", "SPAWN_REPLY_LINKED", "SPAWN_REPLY_MONITORED")}


def name_of(op: int) -> str:
    """The protocol's name of operation `op` (for logs and errors)."""
    return _NAMES.get(op, f"unknown operation {op}")


# --- the shape of each incoming control message --------------------------------

_Check = Callable[[Term, str], bool]


def _any(_: Term, __: str) -> bool:
    return True


def _peer_pid(x: Term, peer: str) -> bool:
    return type(x) is Pid and x.node == peer


def _pid(x: Term, _: str) -> bool:
    return type(x) is Pid


def _proc(x: Term, _: str) -> bool:
    return type(x) is Pid or type(x) is Atom


def _ref(x: Term, _: str) -> bool:
    return type(x) is Ref


def _atom(x: Term, _: str) -> bool:
    return type(x) is Atom


def _uint(x: Term, _: str) -> bool:
    return type(x) is int and x >= 0


def _mfa(x: Term, _: str) -> bool:
    return type(x) is tuple and len(x) == 3 and type(x[0]) is Atom and type(x[1]) is Atom and _uint(x[2], _)


def _list(x: Term, _: str) -> bool:
    return type(x) is list


_WHAT: Final[dict[_Check, str]] = {
    _peer_pid: "a pid of {peer}",
    _pid: "a pid",
    _proc: "a pid or an atom",
    _ref: "a reference",
    _atom: "an atom",
    _uint: "a non-negative integer",
    _mfa: "an {{Module, Function, Arity}}",
    _list: "a list",
}

# The elements after the operation code. A trace token (`_TT`) is any term.
_SHAPES: Final[dict[int, tuple[_Check, ...]]] = {
    LINK: (_peer_pid, _pid),
    SEND: (_any, _pid),
    EXIT: (_peer_pid, _pid, _any),
    UNLINK: (_peer_pid, _pid),
    NODE_LINK: (),
    REG_SEND: (_peer_pid, _any, _atom),
    GROUP_LEADER: (_peer_pid, _pid),
    EXIT2: (_peer_pid, _pid, _any),
    SEND_TT: (_any, _pid, _any),
    EXIT_TT: (_peer_pid, _pid, _any, _any),
    REG_SEND_TT: (_peer_pid, _any, _atom, _any),
    EXIT2_TT: (_peer_pid, _pid, _any, _any),
    MONITOR_P: (_peer_pid, _proc, _ref),
    DEMONITOR_P: (_peer_pid, _proc, _ref),
    MONITOR_P_EXIT: (_proc, _pid, _ref, _any),
    SEND_SENDER: (_peer_pid, _pid),
    SEND_SENDER_TT: (_peer_pid, _pid, _any),
    PAYLOAD_EXIT: (_peer_pid, _pid),
    PAYLOAD_EXIT_TT: (_peer_pid, _pid, _any),
    PAYLOAD_EXIT2: (_peer_pid, _pid),
    PAYLOAD_EXIT2_TT: (_peer_pid, _pid, _any),
    PAYLOAD_MONITOR_P_EXIT: (_proc, _pid, _ref),
    SPAWN_REQUEST: (_ref, _peer_pid, _pid, _mfa, _list),
    SPAWN_REQUEST_TT: (_ref, _peer_pid, _pid, _mfa, _list, _any),
    SPAWN_REPLY: (_ref, _pid, _uint, _proc),
    SPAWN_REPLY_TT: (_ref, _pid, _uint, _proc, _any),
    ALIAS_SEND: (_peer_pid, _ref),
    ALIAS_SEND_TT: (_peer_pid, _ref, _any),
    UNLINK_ID: (_uint, _peer_pid, _pid),
    UNLINK_ID_ACK: (_uint, _peer_pid, _pid),
}


def check(ctrl: tuple[Term, ...], peer: str) -> None:
    """Raise ValueError unless `ctrl` (a tuple whose first element is an int,
    received from node `peer`) has the shape of its operation. An unknown
    operation is an error too, as in erts: no flag we advertised allows one."""
    shape = _SHAPES.get(ctrl[0])
    if shape is None:
        raise ValueError(name_of(ctrl[0]))
    op = name_of(ctrl[0])
    if len(ctrl) != len(shape) + 1:
        raise ValueError(f"{op}: {len(ctrl)} elements, not {len(shape) + 1}")
    for i, (ok, x) in enumerate(zip(shape, ctrl[1:], strict=True), 1):
        if not ok(x, peer):
            raise ValueError(f"{op}: element {i} is not {_WHAT[ok].format(peer=peer)}: {reprlib.repr(x)}")
