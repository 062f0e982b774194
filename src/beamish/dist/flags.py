"""Distribution capability flags: what a node tells its peer it can do.

Both sides send their flags in the handshake; the connection uses what both
support, and a peer lacking a flag the other *requires* is refused. This is
the one place to change when an OTP release adds a requirement.

>>> from beamish.dist import flags
>>> flags.missing(flags.ADVERTISED, flags.MANDATORY)
[]
>>> flags.missing(flags.MANDATORY_25, flags.MANDATORY)
['UNLINK_ID', 'V4_NC']

OTP: mirrors erts' `dist.h` (DFLAG_*); the mandatory sets are OTP 25's
`DFLAG_DIST_MANDATORY_25` and OTP 26's additions (V4_NC, UNLINK_ID).
"""

from __future__ import annotations

from typing import Final

PUBLISHED: Final = 0x1  # the node is published in EPMD (not hidden)
ATOM_CACHE: Final = 0x2  # the old atom cache (obsolete)
EXTENDED_REFERENCES: Final = 0x4  # references with several ids
DIST_MONITOR: Final = 0x8  # MONITOR_P / DEMONITOR_P / MONITOR_P_EXIT
FUN_TAGS: Final = 0x10  # funs are sent as funs
DIST_MONITOR_NAME: Final = 0x20  # monitors by registered name
HIDDEN_ATOM_CACHE: Final = 0x40  # (unused)
NEW_FUN_TAGS: Final = 0x80  # NEW_FUN_EXT
EXTENDED_PIDS_PORTS: Final = 0x100  # pids and ports with more bits
EXPORT_PTR_TAG: Final = 0x200  # EXPORT_EXT
BIT_BINARIES: Final = 0x400  # BIT_BINARY_EXT
NEW_FLOATS: Final = 0x800  # NEW_FLOAT_EXT
UNICODE_IO: Final = 0x1000  # unicode io requests
DIST_HDR_ATOM_CACHE: Final = 0x2000  # the distribution header's atom cache
SMALL_ATOM_TAGS: Final = 0x4000  # SMALL_ATOM_EXT
UTF8_ATOMS: Final = 0x10000  # ATOM_UTF8_EXT / SMALL_ATOM_UTF8_EXT
MAP_TAG: Final = 0x20000  # MAP_EXT
BIG_CREATION: Final = 0x40000  # 32-bit creation (NEW_PID_EXT...)
SEND_SENDER: Final = 0x80000  # SEND_SENDER instead of SEND
BIG_SEQTRACE_LABELS: Final = 0x100000  # any term as a seq_trace label
EXIT_PAYLOAD: Final = 0x400000  # PAYLOAD_EXIT, PAYLOAD_EXIT2, PAYLOAD_MONITOR_P_EXIT
FRAGMENTS: Final = 0x800000  # fragmented messages
HANDSHAKE_23: Final = 0x1000000  # the OTP 23 handshake (version 6, 'N' messages)
UNLINK_ID: Final = 0x2000000  # the UNLINK_ID / UNLINK_ID_ACK link protocol
MANDATORY_25_DIGEST: Final = 0x4000000  # the peer has all of MANDATORY_25
SPAWN: Final = 1 << 32  # SPAWN_REQUEST / SPAWN_REPLY
NAME_ME: Final = 1 << 33  # dynamic node names
V4_NC: Final = 1 << 34  # 64-bit pid/port node-local ids (V4_PORT_EXT)
ALIAS: Final = 1 << 35  # ALIAS_SEND
BEAMISH: Final = 1 << 63
"""Not an OTP flag: set by a beamish node, so that another beamish node keeps
its str and bytes apart (`etf`'s "str and bytes"). A peer that does not know
it drops it: OTP's `dist_util:adjust_flags/2` is `ThisFlags band OtherFlags`,
and a minimal client reads no more flags than it needs. It is said in the
handshake, where capabilities belong, instead of in a message nobody asked
for (beamish used to open every connection with a REG_SEND to
`beamish_peer`, which strict clients such as erldistpy take as a protocol
error). OTP allocates its flags upward from bit 0; the top bit is the last it
will reach."""

MANDATORY_25: Final = (
    EXTENDED_REFERENCES
    | FUN_TAGS
    | EXTENDED_PIDS_PORTS
    | UTF8_ATOMS
    | NEW_FUN_TAGS
    | BIG_CREATION
    | NEW_FLOATS
    | MAP_TAG
    | EXPORT_PTR_TAG
    | BIT_BINARIES
    | HANDSHAKE_23
)
"""What an OTP 25 node refuses to connect without."""

MANDATORY: Final = MANDATORY_25 | V4_NC | UNLINK_ID
"""What we require of a peer: OTP 26's set (OTP 25 nodes send it too)."""

ADVERTISED: Final = (
    MANDATORY
    | PUBLISHED
    | DIST_MONITOR
    | DIST_MONITOR_NAME
    | SMALL_ATOM_TAGS
    | SEND_SENDER
    | BIG_SEQTRACE_LABELS
    | EXIT_PAYLOAD
    | MANDATORY_25_DIGEST
    | SPAWN
    | ALIAS
    | FRAGMENTS
    | BEAMISH
)
"""What beamish offers. Not offered: ATOM_CACHE and DIST_HDR_ATOM_CACHE (we
send every frame pass-through), NAME_ME. FRAGMENTS is offered for what we
receive: an OTP peer then sends each message behind a DIST_HEADER without
atom cache references (`131, 68, 0`) and splits one whose encoding exceeds
64 KiB into fragments (`dist._fragments`), so a big message from one of its
processes no longer holds up the others'. We send whole frames, which a
FRAGMENTS peer reads as well."""

NAMES: Final = {
    value: name
    for name, value in sorted(globals().items())
    if name.isupper() and isinstance(value, int) and not name.startswith(("MANDATORY", "ADVERTISED")) and value & (value - 1) == 0
}


def missing(flags: int, required: int) -> list[str]:
    """The names of the `required` flags absent from `flags`, lowest first."""
    return [NAMES.get(1 << bit, hex(1 << bit)) for bit in range(64) if required & ~flags & (1 << bit)]
