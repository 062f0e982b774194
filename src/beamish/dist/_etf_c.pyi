"""Typed stub of the C accelerator `_etf_c.c` (see etf.py's "Speed" section)."""

from collections.abc import Callable

from ..terms import Term
from .etf import _Decode, _Decoder, _Encoder

def init(
    atom: type,
    pid: type,
    ref: type,
    improper: type,
    frozen_list: type,
    bit_binary: type,
    decode_error: type[Exception],
    enc: Callable[[Term, bytearray, dict[type, _Encoder]], None],
    decoders: list[_Decode],
    new_atom: Callable[[_Decoder, bytes, str, int], Term],
    utf8_atoms: dict[bytes, Term],
    latin1_atoms: dict[bytes, Term],
) -> None: ...
def encode(term: Term, table: dict[type, _Encoder], beamish_peer: bool) -> bytes: ...
def encode_into(out: bytearray, term: Term, table: dict[type, _Encoder], beamish_peer: bool) -> None: ...
def decode(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]: ...
