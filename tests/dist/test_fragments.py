"""Fragmented messages put back together: interleaved sequences, the order
of fragments, and the bound on what unfinished ones hold. (A real OTP node
fragmenting: test_dist_erlang.)"""

from __future__ import annotations

import struct

import pytest

from beamish.dist import etf
from beamish.dist._fragments import FRAGMENT_COST, Reassembly
from beamish.dist.framing import FrameTooLarge


def first(seq: int, count: int, data: bytes, atom_refs: int = 0) -> bytes:
    return bytes([131, 69]) + struct.pack(">QQ", seq, count) + bytes([atom_refs]) + data


def cont(seq: int, frag: int, data: bytes) -> bytes:
    return bytes([131, 70]) + struct.pack(">QQ", seq, frag) + data


def test_interleaved_sequences_come_out_whole_each_when_its_last_fragment_is_in() -> None:
    parts = Reassembly(max_bytes=10_000)
    assert parts.add(first(1, 3, b"a1")) is None
    assert parts.add(first(2, 2, b"b1")) is None
    assert parts.add(cont(1, 2, b"a2")) is None
    assert parts.add(cont(2, 1, b"b2")) == b"b1b2"
    assert parts.add(first(3, 1, b"whole")) == b"whole"  # one fragment: no sequence kept
    assert parts.add(cont(1, 1, b"a3")) == b"a1a2a3"
    assert parts.held == 0 and not parts.sequences
    assert parts.add(first(1, 2, b"again")) is None  # a finished sequence id may start anew


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([cont(9, 1, b"x")], "never started"),
        ([first(1, 3, b"x"), cont(1, 1, b"y")], "fragment 1 of sequence 1 where 2 was due"),
        ([first(1, 2, b"x"), first(1, 2, b"y")], "started again"),
        ([first(1, 2, b"x", atom_refs=1)], "atom cache"),
        ([first(1, 0, b"x")], "fragment 0"),
        ([bytes([131, 70, 0])], "not a fragment"),
    ],
)
def test_a_fragment_out_of_place_is_a_decode_error(frames: list[bytes], error: str) -> None:
    parts = Reassembly(max_bytes=10_000)
    with pytest.raises(etf.DecodeError, match=error):
        for frame in frames:
            parts.add(frame)


def test_unfinished_sequences_together_are_bounded_and_the_one_over_is_let_go() -> None:
    parts = Reassembly(max_bytes=3 * (100 + FRAGMENT_COST))
    assert parts.add(first(1, 5, bytes(100))) is None
    assert parts.add(first(2, 5, bytes(100))) is None
    assert parts.add(cont(1, 4, bytes(100))) is None
    with pytest.raises(FrameTooLarge, match="2 unfinished"):
        parts.add(cont(2, 4, bytes(100)))
    assert set(parts.sequences) == {1} and parts.held == 2 * (100 + FRAGMENT_COST)
    # Empty fragments cost their bookkeeping: they cannot grow it for free.
    parts = Reassembly(max_bytes=10 * FRAGMENT_COST)
    assert parts.add(first(1, 1_000, b"")) is None
    with pytest.raises(FrameTooLarge):
        for frag in range(999, 0, -1):
            parts.add(cont(1, frag, b""))
