"""Fragmented messages (DFLAG_FRAGMENTS) from one peer, put back together.

An OTP node that agreed on `flags.FRAGMENTS` splits a message whose encoding
exceeds 64 KiB (ERTS_DIST_FRAGMENT_SIZE; a large binary travels whole, as
its own I/O vector) into fragments, each its own frame, so that one big
message does not hold the connection: fragments of messages from different
processes interleave on the wire. The first fragment is a
DIST_FRAG_HEADER (`131, 69, SequenceId:64, FragmentId:64,
NumberOfAtomCacheRefs, ...`), the others DIST_FRAG_CONT (`131, 70,
SequenceId:64, FragmentId:64`), then data. FragmentId counts down from the
number of fragments to 1; the data of a sequence's fragments, joined, is
the control message and payload (without version bytes), as after an
unfragmented DIST_HEADER (`131, 68, 0`).

>>> import struct
>>> parts = Reassembly(max_bytes=1000)
>>> first = bytes([131, 69]) + struct.pack(">QQ", 7, 2) + b"\\x00" + b"hello "
>>> parts.add(first) is None, parts.held
(True, 70)
>>> parts.add(bytes([131, 70]) + struct.pack(">QQ", 7, 1) + b"world")
b'hello world'
>>> parts.held
0

OTP: mirrors erts' `dist.c` (`erts_prepare_dist_ext`,
`dist_ext_frag`...); differs in bounding what a peer may keep half-sent
(`max_bytes`, beamish's `max_message`), where erts has no limit.
"""

from __future__ import annotations

import struct
from typing import Final

from . import etf
from .framing import FrameTooLarge

__all__: list[str] = []  # private: used by the connection

VERSION: Final = 131
DIST_HEADER: Final = 68
FRAG_HEADER: Final = 69
FRAG_CONT: Final = 70
_IDS: Final = struct.Struct(">QQ")

FRAGMENT_COST: Final = 64
"""What a held fragment counts for besides its data: its slot and
bookkeeping (a memoryview is 184 bytes, sys.getsizeof on 3.11), so that a
stream of empty fragments cannot grow the held set for free."""


class _Sequence:
    __slots__ = ("next_id", "parts", "size")

    def __init__(self, next_id: int) -> None:
        self.next_id = next_id
        self.parts: list[memoryview] = []
        self.size = 0


class Reassembly:
    """The sequences a peer has started and not finished, with what they
    hold bounded by `max_bytes` all together."""

    __slots__ = ("held", "max_bytes", "sequences")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.sequences: dict[int, _Sequence] = {}
        self.held = 0
        """Bytes held by unfinished sequences, FRAGMENT_COST per fragment included."""

    def add(self, frame: bytes) -> bytes | None:
        """Take one DIST_FRAG_HEADER or DIST_FRAG_CONT frame; return the
        whole message (control message and payload, no version bytes) once
        its last fragment is in, else None.

        Raises:
            etf.DecodeError: a malformed fragment, one of no started
                sequence or out of order, a sequence started twice, atom
                cache references (none were agreed).
            FrameTooLarge: the unfinished sequences would hold more than
                `max_bytes`.
        """
        if len(frame) < 18 or frame[0] != VERSION or frame[1] not in (FRAG_HEADER, FRAG_CONT):
            raise etf.DecodeError(f"not a fragment: {bytes(frame[:2])!r}")
        seq_id, frag_id = _IDS.unpack_from(frame, 2)
        if frag_id == 0:
            raise etf.DecodeError(f"fragment 0 of sequence {seq_id} (they count down to 1)")
        if frame[1] == FRAG_HEADER:
            if len(frame) < 19 or frame[18] != 0:
                raise etf.DecodeError("a fragment header with atom cache references (no atom cache was agreed)")
            if seq_id in self.sequences:
                raise etf.DecodeError(f"sequence {seq_id} started again before its last fragment")
            data = memoryview(frame)[19:]
            if frag_id == 1:
                return bytes(data)
            seq = _Sequence(frag_id)
            self.sequences[seq_id] = seq
        else:
            found = self.sequences.get(seq_id)
            if found is None:
                raise etf.DecodeError(f"a fragment of sequence {seq_id}, which was never started")
            seq = found
            data = memoryview(frame)[18:]
        if frag_id != seq.next_id:
            raise etf.DecodeError(f"fragment {frag_id} of sequence {seq_id} where {seq.next_id} was due")
        cost = len(data) + FRAGMENT_COST
        if self.held + cost > self.max_bytes:
            self.held -= seq.size
            del self.sequences[seq_id]
            raise FrameTooLarge(
                f"fragmented messages of {self.held + seq.size + cost} bytes so far"
                f" ({len(self.sequences) + 1} unfinished), over the maximum of {self.max_bytes}"
            )
        seq.parts.append(data)
        seq.size += cost
        seq.next_id = frag_id - 1
        if frag_id > 1:
            self.held += cost
            return None
        del self.sequences[seq_id]
        self.held -= seq.size - cost
        return b"".join(seq.parts)
