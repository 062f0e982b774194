"""The External Term Format: how Erlang terms travel between nodes.

`encode` turns a Python value into the bytes OTP 26+ `term_to_binary/1`
would make (UTF-8 atoms; OTP 25 reads them too); `decode` turns bytes from any Erlang, Elixir or beamish node back into
Python values. Every distribution frame goes through this module, so it is
complete for what OTP 25-27 send and accept, bounded against hostile input,
and fast (dispatch tables indexed by tag or by type, no class chains).

>>> import beamish
>>> from beamish import Atom
>>> from beamish.dist import etf
>>> async def main():
...     msg = (Atom("$gen_call"), (beamish.self(), Atom("tag")), (Atom("get"), b"key", 42))
...     data = etf.encode(msg)
...     return data[:1], etf.decode(data) == msg
>>> beamish.run(main)
(b'\\x83', True)
>>> etf.encode([1, 2, 3]).hex()
'836b0003010203'
>>> etf.decode(bytes.fromhex("836c0000000161016102"))
ImproperList(items=[1], tail=2)

## Mapping

| Python                                  | Erlang                                  |
|-----------------------------------------|-----------------------------------------|
| `Atom("ok")`                            | `ok` (SMALL_ATOM_UTF8 / ATOM_UTF8)      |
| `True` / `False`                        | `true` / `false`                        |
| `None`                                  | `nil` (Elixir's nil); `nil` decodes to `None` |
| `Atom("undefined")`                     | `undefined` (stays an atom, see below)  |
| `int`                                   | integer (SMALL_INTEGER/INTEGER/SMALL_BIG/LARGE_BIG) |
| `float` (finite; NaN and infinities raise, both ways) | float (NEW_FLOAT; FLOAT_EXT decodes too) |
| `bytes` (`bytearray`, `memoryview`)     | binary                                  |
| `str`                                   | UTF-8 binary (decodes as `bytes` by default) |
| `BitBinary(data, bits)`                 | bitstring (BIT_BINARY)                  |
| `tuple`                                 | tuple                                   |
| `list`                                  | proper list (STRING_EXT decodes to a list of ints, as in Erlang) |
| `ImproperList(items, tail)`             | improper list `[I1, I2 | Tail]`         |
| `dict`                                  | map                                     |
| `FrozenList`, `FrozenMap`               | list, map used *inside a map key*       |
| `Pid`, `Ref`, `Port`                    | pid, reference, port                    |
| `ExportFun(module, function, arity)`    | `fun M:F/A` (EXPORT_EXT)                |
| `Fun` (opaque, decoded only)            | a closure (NEW_FUN_EXT), re-encoded byte for byte |
| a dataclass registered with `register_struct` | an Elixir struct (map with `__struct__`) |

`undefined` stays an atom: Erlang APIs use it as an ordinary value
(`whereis/1`, record defaults, `application:get_env/2`), and mapping both it
and Elixir's `nil` to `None` would make a decoded `None` ambiguous and break
the exact round trip. The `binaries=` option of `decode` chooses how binaries
come back: `"bytes"` (default), `"str"` (strict UTF-8, else DecodeError) or
`"utf8_or_bytes"`.

Subclasses of the base types (IntEnum, NamedTuple, StrEnum, OrderedDict,
any `Mapping`) encode as their base. Anything else raises `EncodeError`.

Map keys that Python cannot hash (lists, maps) decode to the hashable
`FrozenList` (a tuple subclass equal only to another `FrozenList`) and
`FrozenMap`, which encode back as a list and a map, so the round trip is
exact. Keys that Erlang tells apart but Python does not (`1` and `1.0`,
`true` and `1`) cannot share one dict: such a map raises `DecodeError`
rather than lose an entry silently.

## str and bytes between two beamish nodes

Erlang has one binary type, Python two. When the dist layer knows the peer
is a beamish node (its handshake flags include `flags.BEAMISH`) it passes `beamish_peer=True` to both sides: `str` is sent
as a BINARY and `bytes` as a BIT_BINARY whose last byte has all 8 bits used
(or, when empty, a BIT_BINARY of 0 bytes and 0 bits). Erlang reads both as the
ordinary binary they are (`=:=` holds, verified against OTP 25), so Erlang
processes on the path still understand the message; the receiving beamish
node decodes BINARY as `str` (falling back to `bytes` for invalid UTF-8) and
that BIT_BINARY as `bytes`. A binary that went through an Erlang process is
re-encoded by Erlang as a plain BINARY, so it arrives as `str` when it is
valid UTF-8.

## Bounds

`Limits` caps the input size, nesting depth, decompressed size (zlib is
inflated with `max_length`, so a bomb stops at the cap) and the size of the
atom table (atoms are never freed, as in the BEAM). Every length field is
checked against the bytes left before anything is allocated.

The work and memory a decode may cost are bounded by its input's size. A
decode builds at most `max(Limits.min_objects, input_bytes //
Limits.bytes_per_object)` objects (4096, or one per 4 bytes), counting each
list (empty ones too), non-empty tuple, map, big integer, float and binary:
an empty list costs 64 bytes for its one byte of input, so a frame of them
grew a node by 70 times its size; under the budget the worst shape costs
about 18 times its input, and lists of 32-bit integers (one object per 5
bytes) pass. Atoms, small integers, pids and references are not counted:
they are cached or cost less than 12 times their bytes. A map of more than
16 keys is refused if more than 16 of its keys share one hash, checked before
any key goes into the dict: Python's dict insertion is quadratic in keys of
equal hash, and integers (and the tuples and floats built from them) hash to
values a peer can choose (`n` and `n + 2**61 - 1` collide), so a 598 KB map of
such keys held a node for 11.7 s. str and bytes hashes are randomised.

Malformed input
raises `DecodeError` (a `ValueError`) with the offset and a reason, never an
IndexError, struct.error, RecursionError or MemoryError; an unencodable value
raises `EncodeError` (a `TypeError`) naming its type.

## Structs

`register_struct(cls, "Elixir.My.Struct")` registers a dataclass in the
process-wide `DEFAULT_STRUCTS` (like `copyreg` for pickle: a codec table, not
per-node state); pass `structs=StructRegistry()` to `encode`/`decode` to
keep a separate table. Nothing decoded ever names or imports a Python class.

## Speed

When the C extension `beamish.dist._etf_c` is built (`pip install` builds it
if a C compiler is there; `ACCELERATED` tells), `encode`, `encode_into`,
`decode` and `decode_prefix` run in C for the shapes that fill distribution
traffic: atoms, integers up to 64 bits, floats, str, bytes, tuples, lists,
dicts, improper lists, pids and refs, matched by exact type (a subclass, a
struct, a port, a fun... goes through this module's encoders) and by tag
(any other tag, and anything unusual such as a map whose keys Python cannot
hash or a struct map, is decoded by this module's decoders, with the same
options). Results and errors are the same either way (differential tests
hold them to it); a gen_call message encodes ~10x and decodes ~5x faster.
Setting the environment variable `BEAMISH_PURE_ETF=1` before the import
forces the pure-Python codec.

In Python, decoders are indexed by tag in a 256-entry list and encoders by
exact type in a dict; atoms, node names and pids are cached by their raw
bytes (the atom caches are bounded by `Limits.max_atoms`, the pid caches are
cleared at 4096 entries; C keeps small fixed-size caches of its own).
`bench/bench_etf.py` measures one gen_call message.

## Dist headers

The distribution header's atom cache is the connection layer's job; it
passes the cache as `decode_prefix(..., version=False, atom_cache=atoms)` so
that ATOM_CACHE_REF resolves, and `encode_into(buffer, term)` appends a term
without the version byte. LOCAL_EXT (OTP 26 local-only encodings) is refused
with a DecodeError: it never crosses a node boundary. A `Fun` decoded from a
frame that used the atom cache keeps its raw bytes, which then contain cache
references; re-encoding such a fun outside that frame is not supported.

OTP: mirrors `erts/doc/src/erl_ext_dist.xml` (`term_to_binary/2`,
`binary_to_term/2` with `[safe]`-like limits); differs in mapping terms to
Python types (above), in refusing maps with keys equal in Python, and in
never creating atoms past `Limits.max_atoms` (Erlang's `safe` refuses every
new atom).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Final, Literal

from ..terms import Atom, ImproperList, Pid, Port, Ref, Term, _fresh_ref, _make_improper, _make_port, _make_ref

__all__ = [
    "ACCELERATED",
    "BitBinary",
    "DecodeError",
    "EncodeError",
    "ExportFun",
    "FrozenList",
    "FrozenMap",
    "Fun",
    "Limits",
    "StructRegistry",
    "decode",
    "PrefixDecoder",
    "decode_prefix",
    "encode",
    "encode_into",
    "freeze",
    "register_struct",
]

VERSION: Final = 131

# Tags (erl_ext_dist.xml).
NEW_FLOAT_EXT: Final = 70
BIT_BINARY_EXT: Final = 77
COMPRESSED: Final = 80
ATOM_CACHE_REF: Final = 82
NEW_PID_EXT: Final = 88
NEW_PORT_EXT: Final = 89
NEWER_REFERENCE_EXT: Final = 90
SMALL_INTEGER_EXT: Final = 97
INTEGER_EXT: Final = 98
FLOAT_EXT: Final = 99
ATOM_EXT: Final = 100
REFERENCE_EXT: Final = 101
PORT_EXT: Final = 102
PID_EXT: Final = 103
SMALL_TUPLE_EXT: Final = 104
LARGE_TUPLE_EXT: Final = 105
NIL_EXT: Final = 106
STRING_EXT: Final = 107
LIST_EXT: Final = 108
BINARY_EXT: Final = 109
SMALL_BIG_EXT: Final = 110
LARGE_BIG_EXT: Final = 111
NEW_FUN_EXT: Final = 112
EXPORT_EXT: Final = 113
NEW_REFERENCE_EXT: Final = 114
SMALL_ATOM_EXT: Final = 115
MAP_EXT: Final = 116
FUN_EXT: Final = 117
ATOM_UTF8_EXT: Final = 118
SMALL_ATOM_UTF8_EXT: Final = 119
V4_PORT_EXT: Final = 120
LOCAL_EXT: Final = 121

BinariesMode = Literal["bytes", "str", "utf8_or_bytes"]


class DecodeError(ValueError):
    """Malformed or over-limit input: `reason` says what, `offset` where
    (the byte index into the data given to `decode`, when known)."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at offset {offset})")
        self.reason = reason
        self.offset = offset


class EncodeError(TypeError):
    """A value that has no Erlang term: the message names its Python type."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what `decode` accepts from one peer.

    Args:
        max_size: longest input, in bytes (64 MiB, the dist layer's frame cap).
        max_depth: deepest nesting of tuples, lists, maps and funs.
        max_decompressed: largest inflated size of a compressed term.
        max_atoms: the atom table size past which no new atom is created
            (atoms are never freed; Erlang's default table holds 1,048,576).
        min_objects, bytes_per_object: a decode builds at most
            `max(min_objects, input_bytes // bytes_per_object)` objects
            (see "Bounds").
    """

    max_size: int = 64 * 1024 * 1024
    max_depth: int = 512
    max_decompressed: int = 64 * 1024 * 1024
    max_atoms: int = 1_048_576
    min_objects: int = 4096
    bytes_per_object: int = 4

    def __post_init__(self) -> None:
        if self.bytes_per_object < 1 or self.min_objects < 0:
            raise ValueError(f"Limits needs bytes_per_object >= 1 and min_objects >= 0, not {self}")


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True, slots=True)
class BitBinary:
    """A bitstring whose size is not a multiple of 8: `data` holds the bytes
    and only the high `bits` (1-7) of its last byte count. (Whole bytes make
    a binary: `bytes`.)"""

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        if not self.data or not 1 <= self.bits <= 7:
            raise ValueError(f"BitBinary needs data and 1 <= bits <= 7, got {len(self.data)} bytes, {self.bits} bits")
        if self.data[-1] & ((1 << (8 - self.bits)) - 1):
            # Erlang ignores the unused low bits; clearing them keeps == Erlang's =:=.
            mask = 0xFF ^ ((1 << (8 - self.bits)) - 1)
            object.__setattr__(self, "data", self.data[:-1] + bytes([self.data[-1] & mask]))


@dataclass(frozen=True, slots=True)
class ExportFun:
    """An external fun `fun module:function/arity` (EXPORT_EXT)."""

    module: Atom
    function: Atom
    arity: int


@dataclass(frozen=True, slots=True, eq=False)
class Fun:
    """A closure decoded from NEW_FUN_EXT. Python cannot run it, but it keeps
    its exact bytes so it can be sent back (or on) unchanged.

    `module`, `arity`, `index`, `uniq`, `pid` and `free_vars` are decoded
    for inspection; equality and hashing use the raw bytes.
    """

    module: Atom
    arity: int
    index: int
    uniq: bytes
    pid: Pid
    free_vars: tuple[Term, ...]
    raw: bytes = field(repr=False)

    def __eq__(self, other: object) -> bool:
        return type(other) is Fun and self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)


class FrozenList(tuple[Term, ...]):
    """A list used inside a map key, made hashable. It equals only another
    `FrozenList` with equal items (never a tuple), and encodes as a list."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is FrozenList and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((FrozenList, tuple(self)))

    def __repr__(self) -> str:
        return f"FrozenList({list(self)!r})"


class FrozenMap(Mapping[Term, Term]):
    """A map used inside a map key, made hashable; encodes as a map."""

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[Term, Term]) -> None:
        self._items = dict(items)
        self._hash = hash((FrozenMap, frozenset(self._items.items())))

    def __getitem__(self, key: Term) -> Term:
        return self._items[key]

    def __iter__(self) -> Iterator[Term]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return type(other) is FrozenMap and self._items == other._items

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


class StructRegistry:
    """Which dataclasses travel as which Elixir structs. Nothing decoded ever
    names a Python class: only pairs registered here are converted."""

    __slots__ = ("_tables", "by_name", "by_type")

    def __init__(self) -> None:
        self.by_type: dict[type, Atom] = {}
        self.by_name: dict[Atom, type] = {}
        self._tables: dict[bool, dict[type, _Encoder]] = {}

    def register(self, cls: type, name: str) -> None:
        """Encode instances of dataclass `cls` as the struct `name` (for
        example "Elixir.MyApp.User") and decode that struct as `cls`."""
        if not (isinstance(cls, type) and is_dataclass(cls)):
            raise TypeError(f"register_struct needs a dataclass type, got {cls!r}")
        atom = Atom(name)
        self.by_type[cls] = atom
        self.by_name[atom] = cls
        self._tables.clear()

    def _table(self, peer: bool) -> dict[type, _Encoder]:
        """The encoder table for this registry (base types plus its structs)."""
        table = self._tables.get(peer)
        if table is None:
            table = dict(_PEER_ENCODERS if peer else _ENCODERS)
            for cls, name in self.by_type.items():
                table[cls] = _struct_encoder(name)
            self._tables[peer] = table
        return table


DEFAULT_STRUCTS: Final = StructRegistry()


def register_struct(cls: type, name: str, *, registry: StructRegistry = DEFAULT_STRUCTS) -> None:
    """Map dataclass `cls` to the Elixir struct `name` ("Elixir.My.Struct")
    in both directions: instances encode as a map with `__struct__` and one
    atom key per field; such a map decodes to `cls(**fields)` (a map whose
    keys do not fit `cls` stays a dict)."""
    registry.register(cls, name)


# --- encoding -----------------------------------------------------------------

_Encoder = Callable[[Term, bytearray, "dict[type, _Encoder]"], None]
_pack_int = struct.Struct(">Bi").pack
_pack_float = struct.Struct(">Bd").pack
_pack_u32 = struct.Struct(">I").pack
_pack_tag_u32 = struct.Struct(">BI").pack
_pack_tag_u16 = struct.Struct(">BH").pack
_pack_3u32 = struct.Struct(">III").pack
_SMALL_INTS: Final = [bytes((SMALL_INTEGER_EXT, i)) for i in range(256)]
_TUPLE_HEADS: Final = [bytes((SMALL_TUPLE_EXT, i)) for i in range(256)]
_REF_IDS: Final = [struct.Struct(f">{n}I").pack for n in range(6)]
# Pid -> its NEW_PID_EXT bytes: a process sends its own pid in every call.
# Cleared when full, as the decoder's pid cache.
_PID_BYTES: dict[Pid, bytes] = {}
_PIDS_MAX: Final = 4096
_ATOM_BYTES: dict[str, bytes] = {}
_TRUE: Final = b"\x77\x04true"
_FALSE: Final = b"\x77\x05false"
_NIL_ATOM: Final = b"\x77\x03nil"
_STRUCT_KEY: Final = Atom("__struct__")


def encode(
    term: Term,
    *,
    beamish_peer: bool = False,
    compress: int = 0,
    compress_threshold: int = 1024,
    structs: StructRegistry = DEFAULT_STRUCTS,
) -> bytes:
    """The external format of `term`, starting with the version byte 131.

    Args:
        beamish_peer: the receiver is a beamish node (see "str and bytes").
        compress: a zlib level 1-9 to compress the term with (0: never), as
            `term_to_binary(T, [{compressed, Level}])`.
        compress_threshold: only compress terms at least this many bytes
            long; a compressed form that is not smaller is not used.
        structs: the dataclass <-> Elixir struct registry.

    Raises:
        EncodeError: a value inside `term` has no Erlang equivalent.
    """
    try:
        # The table is looked up inline: a method call costs half a C encode.
        data = _encode(term, structs._tables.get(beamish_peer) or structs._table(beamish_peer), beamish_peer)
    except RecursionError:
        raise EncodeError("term is nested too deeply (or contains itself)") from None
    if compress and len(data) - 1 >= compress_threshold:
        packed = zlib.compress(data[1:], compress)
        if len(packed) + 5 < len(data) - 1:
            return b"\x83" + _pack_tag_u32(COMPRESSED, len(data) - 1) + packed
    return data


def encode_into(
    out: bytearray, term: Term, *, beamish_peer: bool = False, structs: StructRegistry = DEFAULT_STRUCTS
) -> None:
    """Append `term`'s encoding to `out` without the version byte (for
    distribution headers, which carry terms bare). On EncodeError `out` may
    hold part of the encoding: discard it."""
    try:
        _encode_into(out, term, structs._table(beamish_peer), beamish_peer)
    except RecursionError:
        raise EncodeError("term is nested too deeply (or contains itself)") from None


def _enc(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    f = table.get(type(term))
    if f is None:
        f = _resolve(term, table)
    f(term, out, table)


def _resolve(term: Term, table: dict[type, _Encoder]) -> _Encoder:
    """The encoder for a subclass of a base type (IntEnum, NamedTuple,
    StrEnum, OrderedDict...), which the exact-type table misses."""
    for base in (Atom, int, float, str, bytes, tuple, list, dict):
        if isinstance(term, base):
            return table[base]
    if isinstance(term, Mapping):
        return _enc_map
    cls = type(term)
    raise EncodeError(f"cannot encode a value of type {cls.__module__}.{cls.__qualname__} as an Erlang term")


def _enc_atom(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    cached = _ATOM_BYTES.get(term)
    if cached is None:
        cached = _atom_bytes(term)
    out += cached


def _atom_bytes(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) < 256:
        encoded = bytes((SMALL_ATOM_UTF8_EXT, len(raw))) + raw
    else:
        encoded = _pack_tag_u16(ATOM_UTF8_EXT, len(raw)) + raw
    if type(text) is Atom:
        # Bounded by the atom table itself.
        _ATOM_BYTES[text] = encoded
    return encoded


def _enc_true(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    out += _TRUE if term else _FALSE


def _enc_none(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    out += _NIL_ATOM


def _enc_int(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    if 0 <= term < 256:
        out += _SMALL_INTS[term]
    elif -0x80000000 <= term <= 0x7FFFFFFF:
        out += _pack_int(INTEGER_EXT, term)
    else:
        sign = 1 if term < 0 else 0
        mag = -term if sign else term
        n = (mag.bit_length() + 7) // 8
        if n < 256:
            out += bytes((SMALL_BIG_EXT, n, sign))
        else:
            out += _pack_tag_u32(LARGE_BIG_EXT, n)
            out.append(sign)
        out += int(mag).to_bytes(n, "little")


def _enc_float(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    if not math.isfinite(term):
        raise EncodeError(f"cannot encode the float {term!r}: Erlang floats are finite")
    out += _pack_float(NEW_FLOAT_EXT, term)


def _enc_binary(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    out += _pack_tag_u32(BINARY_EXT, len(term))
    out += term


def _enc_str(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    raw = term.encode("utf-8")
    out += _pack_tag_u32(BINARY_EXT, len(raw))
    out += raw


def _enc_peer_bytes(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    # A BIT_BINARY whose last byte is whole: Erlang reads an ordinary binary.
    n = len(term)
    out += _pack_tag_u32(BIT_BINARY_EXT, n)
    out.append(8 if n else 0)
    out += term


def _enc_bit_binary(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    out += _pack_tag_u32(BIT_BINARY_EXT, len(term.data))
    out.append(term.bits)
    out += term.data


def _enc_tuple(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    n = len(term)
    out += _TUPLE_HEADS[n] if n < 256 else _pack_tag_u32(LARGE_TUPLE_EXT, n)
    get = table.get
    for item in term:
        kind = type(item)
        if kind is Atom:
            # Atoms fill OTP messages ({reply, ...}, {'$gen_call', ...}): skip the call.
            cached = _ATOM_BYTES.get(item)
            out += cached if cached is not None else _atom_bytes(item)
            continue
        f = get(kind)
        if f is None:
            f = _resolve(item, table)
        f(item, out, table)


def _enc_list(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    n = len(term)
    if not n:
        out.append(NIL_EXT)
        return
    if n < 65536 and all(type(x) is int and 0 <= x < 256 for x in term):
        # What term_to_binary does with a list of bytes: keeps our output byte-exact.
        out += _pack_tag_u16(STRING_EXT, n)
        out += bytes(term)
        return
    out += _pack_tag_u32(LIST_EXT, n)
    get = table.get
    for item in term:
        f = get(type(item))
        if f is None:
            f = _resolve(item, table)
        f(item, out, table)
    out.append(NIL_EXT)


def _enc_improper(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    items = term.items
    if not items or isinstance(term.tail, list | FrozenList):
        raise EncodeError("ImproperList needs at least one item and a tail that is not a list")
    out += _pack_tag_u32(LIST_EXT, len(items))
    get = table.get
    for item in items:
        f = get(type(item))
        if f is None:
            f = _resolve(item, table)
        f(item, out, table)
    tail = term.tail
    f = get(type(tail))
    if f is None:
        f = _resolve(tail, table)
    f(tail, out, table)


def _enc_map(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    out += _pack_tag_u32(MAP_EXT, len(term))
    get = table.get
    for key, value in term.items():
        f = get(type(key))
        if f is None:
            f = _resolve(key, table)
        f(key, out, table)
        f = get(type(value))
        if f is None:
            f = _resolve(value, table)
        f(value, out, table)


def _struct_encoder(name: Atom) -> _Encoder:
    def enc_struct(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
        as_map: dict[Term, Term] = {_STRUCT_KEY: name}
        for f in fields(term):
            as_map[Atom(f.name)] = getattr(term, f.name)
        _enc_map(as_map, out, table)

    return enc_struct


def _enc_node(node: Atom, out: bytearray) -> None:
    cached = _ATOM_BYTES.get(node)
    out += cached if cached is not None else _atom_bytes(node)


def _enc_pid(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    cached = _PID_BYTES.get(term)
    if cached is None:
        node = _ATOM_BYTES.get(term.node)
        cached = (
            b"\x58"
            + (node if node is not None else _atom_bytes(term.node))
            + _pack_3u32(term.id, term.serial, term.creation)
        )
        if len(_PID_BYTES) >= _PIDS_MAX:
            _PID_BYTES.clear()
        _PID_BYTES[term] = cached
    out += cached


def _enc_ref(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    ids = term.ids
    if not 1 <= len(ids) <= 5:
        raise EncodeError(f"a reference carries 1 to 5 ids, not {len(ids)}")
    out += _pack_tag_u16(NEWER_REFERENCE_EXT, len(ids))
    _enc_node(term.node, out)
    out += _pack_u32(term.creation)
    out += _REF_IDS[len(ids)](*ids)


def _enc_port(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    if term.id <= 0xFFFFFFFF:
        # OTP 25-27 still send NEW_PORT_EXT whenever the id fits.
        out.append(NEW_PORT_EXT)
        _enc_node(term.node, out)
        out += struct.pack(">II", term.id, term.creation)
    else:
        out.append(V4_PORT_EXT)
        _enc_node(term.node, out)
        out += struct.pack(">QI", term.id, term.creation)


def _enc_export(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    if not 0 <= term.arity < 256:
        raise EncodeError(f"ExportFun arity {term.arity} is outside 0..255")
    out.append(EXPORT_EXT)
    out += _atom_bytes(Atom(term.module))
    out += _atom_bytes(Atom(term.function))
    out += _SMALL_INTS[term.arity]


def _enc_fun(term: Term, out: bytearray, table: dict[type, _Encoder]) -> None:
    out += term.raw


_ENCODERS: Final[dict[type, _Encoder]] = {
    Atom: _enc_atom,
    bool: _enc_true,
    type(None): _enc_none,
    int: _enc_int,
    float: _enc_float,
    bytes: _enc_binary,
    bytearray: _enc_binary,
    memoryview: _enc_binary,
    str: _enc_str,
    BitBinary: _enc_bit_binary,
    tuple: _enc_tuple,
    list: _enc_list,
    FrozenList: _enc_list,
    ImproperList: _enc_improper,
    dict: _enc_map,
    FrozenMap: _enc_map,
    Pid: _enc_pid,
    Ref: _enc_ref,
    Port: _enc_port,
    ExportFun: _enc_export,
    Fun: _enc_fun,
}
_PEER_ENCODERS: Final[dict[type, _Encoder]] = {
    **_ENCODERS,
    bytes: _enc_peer_bytes,
    bytearray: _enc_peer_bytes,
    memoryview: _enc_peer_bytes,
}


# --- decoding -----------------------------------------------------------------


class _Decoder:
    """The options of one decode, read by every tag function (the input
    itself travels as an argument: it is the hottest value)."""

    __slots__ = (
        "atom_cache", "binaries", "budget", "bytes_per_object", "left", "limits", "max_depth", "min_objects", "peer",
        "structs",
    )  # fmt: skip

    def __init__(
        self,
        limits: Limits,
        binaries: BinariesMode,
        peer: bool,
        atom_cache: Sequence[Atom] | None,
        structs: StructRegistry,
    ) -> None:
        self.limits = limits
        self.max_depth = limits.max_depth
        self.binaries = binaries
        self.peer = peer
        self.atom_cache = atom_cache
        self.structs = structs
        self.min_objects = limits.min_objects
        self.bytes_per_object = limits.bytes_per_object
        # The object budget of one decode (see "Bounds"): set on the copy
        # that `fork` makes for it, never on the shared, cached decoder.
        self.budget = self.left = 0

    def fork(self, budget: int, left: int) -> _Decoder:
        """A copy with its own budget, for one decode: the cached decoder is
        shared (by threads, by a decode nested in a struct's __init__), so the
        count cannot live on it. Built slot by slot: 0.1 us, ~3% of decoding
        a gen_call in Python."""
        fork: _Decoder = _new_object(_Decoder)
        fork.limits = self.limits
        fork.max_depth = self.max_depth
        fork.binaries = self.binaries
        fork.peer = self.peer
        fork.atom_cache = self.atom_cache
        fork.structs = self.structs
        fork.min_objects = self.min_objects
        fork.bytes_per_object = self.bytes_per_object
        fork.budget = budget
        fork.left = left
        return fork


_new_object: Final = object.__new__
_Decode = Callable[[_Decoder, bytes, int, int], "tuple[Term, int]"]
_unpack_u16 = struct.Struct(">H").unpack_from
_unpack_u32 = struct.Struct(">I").unpack_from
_unpack_i32 = struct.Struct(">i").unpack_from
_unpack_f64 = struct.Struct(">d").unpack_from
_unpack_3u32 = struct.Struct(">III").unpack_from
_unpack_2u32 = struct.Struct(">II").unpack_from
_unpack_u32_u8 = struct.Struct(">IB").unpack_from
_unpack_u64_u32 = struct.Struct(">QI").unpack_from
_unpack_2u32_u8 = struct.Struct(">IIB").unpack_from
_SPECIAL_ATOMS: Final[dict[str, Term]] = {"true": True, "false": False, "nil": None}
# Raw atom bytes -> decoded value, per encoding; bounded by Limits.max_atoms.
_UTF8_ATOMS: dict[bytes, Term] = {b"true": True, b"false": False, b"nil": None}
_LATIN1_ATOMS: dict[bytes, Term] = {b"true": True, b"false": False, b"nil": None}
# SMALL_ATOM_UTF8 node names as they appear in pids and refs -> Atom.
_NODES: dict[bytes, Atom] = {}
_ATOM_TABLE: Final = Atom._table
_PLAIN: Final = _Decoder(DEFAULT_LIMITS, "bytes", False, None, DEFAULT_STRUCTS)
# (id(limits), binaries, beamish_peer, id(structs)) -> a _Decoder with those
# options, and the options and decoder of the last decode_prefix (see _decoder).
_DECODER_CACHE: dict[tuple[int, str, bool, int], _Decoder] = {}
_last_decoder: tuple[Limits, str, bool, StructRegistry, _Decoder] = (
    DEFAULT_LIMITS, "bytes", False, DEFAULT_STRUCTS, _PLAIN
)  # fmt: skip
_MISSING: Final = object()
_pid_init: Final = Pid.__init__


# Pid._make goes through the no-public-constructor metaclass and
# type.__call__; building the instance directly saves ~40% (0.5 -> 0.3 us).
def _new_pid(node: Atom, id_: int, serial: int, creation: int) -> Pid:
    pid: Pid = object.__new__(Pid)
    _pid_init(pid, node, id_, serial, creation)
    return pid


# Encoded NEW_PID_EXT body -> Pid: the same few pids (callers, servers) fill a
# connection's traffic, and building a Pid costs as much as decoding the rest
# of a gen_call. Cleared when full, so it stays small.
_PIDS: dict[bytes, Pid] = {}


def decode(
    data: bytes | bytearray | memoryview,
    *,
    limits: Limits = DEFAULT_LIMITS,
    binaries: BinariesMode = "bytes",
    beamish_peer: bool = False,
    structs: StructRegistry = DEFAULT_STRUCTS,
) -> Term:
    """The term encoded in `data` (version byte 131 first), which must hold
    exactly one term.

    Args:
        limits: bounds on the input (see `Limits`).
        binaries: "bytes", "str" or "utf8_or_bytes" (see the module doc).
        beamish_peer: the sender is a beamish node (see "str and bytes").
        structs: the dataclass <-> Elixir struct registry.

    Raises:
        DecodeError: malformed input, trailing bytes, or a limit exceeded.
    """
    if (
        type(data) is bytes
        and limits is DEFAULT_LIMITS
        and binaries == "bytes"
        and not beamish_peer
        and structs is DEFAULT_STRUCTS
        and len(data) > 1
        and data[0] == VERSION
        and data[1] != COMPRESSED
        and len(data) <= DEFAULT_LIMITS.max_size
    ):
        # The common case, without decode_prefix's argument handling; what
        # PrefixDecoder.__call__ does, inlined: one more call layer costs a
        # quarter of decoding a gen_call in C.
        try:
            term, offset = _decode(_PLAIN, data, 1, 0)
        except (IndexError, struct.error):
            raise DecodeError("truncated input", len(data)) from None
        except RecursionError:
            raise DecodeError("nesting too deep for the Python stack") from None
        except MemoryError:
            raise DecodeError("out of memory while decoding") from None
    else:
        term, offset = decode_prefix(
            data, 0, limits=limits, binaries=binaries, beamish_peer=beamish_peer, structs=structs
        )
    if offset != len(data):
        raise DecodeError(f"{len(data) - offset} trailing bytes after the term", offset)
    return term


def decode_prefix(
    data: bytes | bytearray | memoryview,
    offset: int = 0,
    *,
    limits: Limits = DEFAULT_LIMITS,
    binaries: BinariesMode = "bytes",
    beamish_peer: bool = False,
    version: bool = True,
    atom_cache: Sequence[Atom] | None = None,
    structs: StructRegistry = DEFAULT_STRUCTS,
) -> tuple[Term, int]:
    """Decode one term starting at `offset` and return it with the offset
    just past it, so that a frame's control message and payload are read in
    turn. With `version=False` the term has no version byte (a term inside a
    distribution header); `atom_cache` resolves ATOM_CACHE_REF there.

    Raises:
        DecodeError: as `decode`.
    """
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > limits.max_size:
        raise DecodeError(f"input of {len(data)} bytes exceeds Limits.max_size={limits.max_size}", 0)
    last = _last_decoder
    if last[0] is limits and last[1] is binaries and last[2] is beamish_peer and last[3] is structs and atom_cache is None:
        d = last[4]
    else:
        d = _decoder(limits, binaries, beamish_peer, atom_cache, structs)
    pos = offset
    try:
        if version:
            if pos >= len(data) or data[pos] != VERSION:
                raise DecodeError("missing version byte 131", pos)
            pos += 1
        if pos < len(data) and data[pos] == COMPRESSED:
            return _decode_compressed(d, data, pos + 1)
        return _decode(d, data, pos, 0)
    except (IndexError, struct.error):
        raise DecodeError("truncated input", len(data)) from None
    except RecursionError:
        raise DecodeError(f"nesting too deep for the Python stack (Limits.max_depth={limits.max_depth})") from None
    except MemoryError:
        raise DecodeError("out of memory while decoding") from None


def _decoder(
    limits: Limits, binaries: BinariesMode, peer: bool, atom_cache: Sequence[Atom] | None, structs: StructRegistry
) -> _Decoder:
    """The _Decoder for these options. A connection decodes every frame with
    the same ones, so decode_prefix first tries the last (by the identity of
    each option, checked in a few loads) and this keeps a few more: building
    one per frame cost more than decoding a small control message in C."""
    global _last_decoder
    if binaries not in ("bytes", "str", "utf8_or_bytes"):
        raise ValueError(f"binaries must be 'bytes', 'str' or 'utf8_or_bytes', not {binaries!r}")
    mode: BinariesMode = "utf8_or_bytes" if peer else binaries
    if atom_cache is not None:
        return _Decoder(limits, mode, peer, atom_cache, structs)
    # Keyed by id: hashing a Limits runs its dataclass __hash__. The entry
    # holds the objects, so an id cannot be reused while it is cached.
    key = (id(limits), binaries, peer, id(structs))
    d = _DECODER_CACHE.get(key)
    if d is None or d.limits is not limits or d.structs is not structs:
        d = _Decoder(limits, mode, peer, None, structs)
        if len(_DECODER_CACHE) >= 64:
            _DECODER_CACHE.clear()
        _DECODER_CACHE[key] = d
    _last_decoder = (limits, binaries, peer, structs, d)
    return d


class PrefixDecoder:
    """`decode_prefix` with its options fixed, for a stream of terms decoded
    alike (a connection's frames): `PrefixDecoder(limits=..., beamish_peer=...)(data, offset)`
    returns `(term, offset_after)`. The options are checked once, not per term.

    >>> PrefixDecoder()(bytes.fromhex("836101836102"), 3)
    (2, 6)
    """

    __slots__ = ("_d", "_max_size")

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS, beamish_peer: bool = False) -> None:
        self._d = _Decoder(limits, "utf8_or_bytes" if beamish_peer else "bytes", beamish_peer, None, DEFAULT_STRUCTS)
        self._max_size = limits.max_size

    def __call__(self, data: bytes, offset: int) -> tuple[Term, int]:
        if (
            type(data) is bytes
            and len(data) > offset + 1 >= 1
            and data[offset] == VERSION
            and data[offset + 1] != COMPRESSED
            and len(data) <= self._max_size
        ):
            try:
                return _decode(self._d, data, offset + 1, 0)
            except (IndexError, struct.error):
                raise DecodeError("truncated input", len(data)) from None
            except RecursionError:
                raise DecodeError("nesting too deep for the Python stack") from None
            except MemoryError:
                raise DecodeError("out of memory while decoding") from None
        d = self._d
        return decode_prefix(data, offset, limits=d.limits, beamish_peer=d.peer)


def _need(data: bytes, pos: int, n: int, what: str) -> None:
    if n > len(data) - pos:
        raise DecodeError(f"{what} of {n} bytes runs past the end of the input ({len(data) - pos} left)", pos)


def _too_deep(d: _Decoder, pos: int) -> DecodeError:
    return DecodeError(f"nesting deeper than Limits.max_depth={d.max_depth}", pos)


def _take(d: _Decoder, pos: int) -> None:
    """Count one object against the decode's budget (see "Bounds"); `pos`
    is its tag's offset."""
    left = d.left - 1
    if left < 0:
        raise _over_budget(d, pos)
    d.left = left


def _over_budget(d: _Decoder, pos: int) -> DecodeError:
    # The same words as _etf_c.c's over_budget.
    return DecodeError(
        f"term builds more than {d.budget} objects (Limits: max(min_objects={d.min_objects}, "
        f"input bytes // bytes_per_object={d.bytes_per_object}))",
        pos,
    )


def _decode_compressed(d: _Decoder, data: bytes, pos: int) -> tuple[Term, int]:
    _need(data, pos, 4, "compressed size")
    (size,) = _unpack_u32(data, pos)
    if size > d.limits.max_decompressed:
        raise DecodeError(f"compressed term inflates to {size} bytes > Limits.max_decompressed", pos)
    if size == 0:
        raise DecodeError("empty compressed term", pos)
    pos += 4
    inflater = zlib.decompressobj()
    src = data[pos:]
    try:
        # max_length stops a bomb at the declared size, itself capped above.
        inner = inflater.decompress(src, size)
        if len(inner) == size and not inflater.eof and inflater.decompress(inflater.unconsumed_tail, 1):
            raise DecodeError(f"compressed data is longer than its declared {size} bytes", pos)
    except zlib.error as exc:
        raise DecodeError(f"bad zlib data: {exc}", pos) from None
    if len(inner) != size or not inflater.eof:
        raise DecodeError(f"compressed data does not inflate to exactly the declared {size} bytes", pos)
    end = pos + len(src) - len(inflater.unused_data)
    try:
        term, used = _decode(d, inner, 0, 0)
    except DecodeError as exc:
        raise DecodeError(f"{exc.reason} (inside the compressed term)", pos) from None
    except (IndexError, struct.error):
        raise DecodeError("truncated input inside the compressed term", pos) from None
    if used != size:
        raise DecodeError(f"{size - used} trailing bytes inside the compressed term", pos)
    return term, end


def _dec_bad(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    tag = data[pos - 1]
    if tag == COMPRESSED:
        raise DecodeError("a compressed term may only appear at the top level", pos - 1)
    if tag == LOCAL_EXT:
        raise DecodeError("LOCAL_EXT is node-local and never valid from another node", pos - 1)
    if tag == FUN_EXT:
        raise DecodeError("FUN_EXT (removed in OTP R15) is not supported", pos - 1)
    if tag == ATOM_CACHE_REF:
        raise DecodeError("ATOM_CACHE_REF outside a distribution header with an atom cache", pos - 1)
    raise DecodeError(f"unknown tag {tag}", pos - 1)


def _dec_small_int(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    return data[pos], pos + 1


def _dec_int(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    return _unpack_i32(data, pos)[0], pos + 4


def _dec_small_big(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    _take(d, pos - 1)
    n = data[pos]
    sign = data[pos + 1]
    return _big(data, pos + 2, n, sign)


def _dec_large_big(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    _take(d, pos - 1)
    n, sign = _unpack_u32_u8(data, pos)
    return _big(data, pos + 5, n, sign)


def _big(data: bytes, pos: int, n: int, sign: int) -> tuple[Term, int]:
    _need(data, pos, n, "big integer")
    if sign > 1:
        raise DecodeError(f"big integer sign byte {sign} is not 0 or 1", pos - 1)
    value = int.from_bytes(data[pos : pos + n], "little")
    return (-value if sign else value), pos + n


def _dec_new_float(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    _take(d, pos - 1)
    value: float = _unpack_f64(data, pos)[0]
    if value - value != 0.0:
        # NaN or an infinity: binary_to_term refuses them too (Erlang floats are finite).
        raise DecodeError(f"float {value} is not finite", pos - 1)
    return value, pos + 8


def _dec_float_ext(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    _take(d, pos - 1)
    _need(data, pos, 31, "FLOAT_EXT")
    text = data[pos : pos + 31].split(b"\0", 1)[0]
    try:
        value = float(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise DecodeError(f"bad FLOAT_EXT text {text!r}", pos) from None
    if value - value != 0.0:
        raise DecodeError(f"float {value} is not finite", pos - 1)
    return value, pos + 31


def _new_atom(d: _Decoder, raw: bytes, encoding: str, pos: int) -> Term:
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        raise DecodeError("atom text is not valid UTF-8", pos) from None
    if len(text) > 255:
        raise DecodeError(f"atom of {len(text)} characters (at most 255)", pos)
    if text not in _ATOM_TABLE and len(_ATOM_TABLE) >= d.limits.max_atoms:
        raise DecodeError(f"atom table full (Limits.max_atoms={d.limits.max_atoms})", pos)
    special = _SPECIAL_ATOMS.get(text, _MISSING)
    value: Term = Atom(text) if special is _MISSING else special
    (_UTF8_ATOMS if encoding == "utf-8" else _LATIN1_ATOMS)[raw] = value
    return value


def _dec_small_atom_utf8(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    end = pos + 1 + data[pos]
    if end > len(data):
        raise DecodeError("atom runs past the end of the input", pos)
    raw = data[pos + 1 : end]
    value = _UTF8_ATOMS.get(raw, _MISSING)
    if value is _MISSING:
        value = _new_atom(d, raw, "utf-8", pos)
    return value, end


def _dec_atom_utf8(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    end = pos + 2 + _unpack_u16(data, pos)[0]
    if end > len(data):
        raise DecodeError("atom runs past the end of the input", pos)
    raw = data[pos + 2 : end]
    value = _UTF8_ATOMS.get(raw, _MISSING)
    if value is _MISSING:
        value = _new_atom(d, raw, "utf-8", pos)
    return value, end


def _dec_small_atom(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    end = pos + 1 + data[pos]
    if end > len(data):
        raise DecodeError("atom runs past the end of the input", pos)
    raw = data[pos + 1 : end]
    value = _LATIN1_ATOMS.get(raw, _MISSING)
    if value is _MISSING:
        value = _new_atom(d, raw, "latin-1", pos)
    return value, end


def _dec_atom(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    end = pos + 2 + _unpack_u16(data, pos)[0]
    if end > len(data):
        raise DecodeError("atom runs past the end of the input", pos)
    raw = data[pos + 2 : end]
    value = _LATIN1_ATOMS.get(raw, _MISSING)
    if value is _MISSING:
        value = _new_atom(d, raw, "latin-1", pos)
    return value, end


def _dec_atom_cache_ref(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    cache = d.atom_cache
    if cache is None:
        return _dec_bad(d, data, pos, depth)
    index = data[pos]
    if index >= len(cache):
        raise DecodeError(f"ATOM_CACHE_REF {index} beyond the {len(cache)} cached atoms", pos)
    atom = cache[index]
    return _SPECIAL_ATOMS.get(atom, atom), pos + 1


def _as_atom(value: Term) -> Atom:
    """The atom behind a decoded atom value (true/false/nil come back as Python)."""
    if type(value) is Atom:
        return value
    if value is True:
        return Atom("true")
    if value is False:
        return Atom("false")
    if value is None:
        return Atom("nil")
    raise TypeError


_ATOM_TAGS: Final = frozenset({ATOM_EXT, SMALL_ATOM_EXT, ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT, ATOM_CACHE_REF})


def _dec_atom_field(d: _Decoder, data: bytes, pos: int, what: str) -> tuple[Atom, int]:
    tag = data[pos]
    if tag not in _ATOM_TAGS:
        raise DecodeError(f"{what} must be an atom, found tag {tag}", pos)
    value, pos = _DECODERS[tag](d, data, pos + 1, 0)
    return _as_atom(value), pos


def _node(d: _Decoder, data: bytes, pos: int, what: str) -> tuple[Atom, int]:
    """The node atom of a pid, ref or port, with a fast path for the
    SMALL_ATOM_UTF8 every OTP 26+ node sends."""
    if data[pos] == SMALL_ATOM_UTF8_EXT:
        end = pos + 2 + data[pos + 1]
        node = _NODES.get(data[pos + 2 : end])
        if node is not None and end <= len(data):
            return node, end
        node, end = _dec_atom_field(d, data, pos, what)
        _NODES[data[pos + 2 : end]] = node
        return node, end
    return _dec_atom_field(d, data, pos, what)


def _dec_new_pid(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    if data[pos] == SMALL_ATOM_UTF8_EXT:
        end = pos + data[pos + 1] + 14
        pid: Pid | None = _PIDS.get(data[pos:end])
        if pid is not None:
            return pid, end
    node, end = _node(d, data, pos, "pid node")
    id_, serial, creation = _unpack_3u32(data, end)
    pid = _new_pid(node, id_, serial, creation)
    if data[pos] == SMALL_ATOM_UTF8_EXT:
        if len(_PIDS) >= _PIDS_MAX:
            _PIDS.clear()
        _PIDS[data[pos : end + 12]] = pid
    return pid, end + 12


def _dec_pid(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    node, pos = _node(d, data, pos, "pid node")
    id_, serial, creation = _unpack_2u32_u8(data, pos)
    pid: Pid = _new_pid(node, id_, serial, creation)
    return pid, pos + 9


def _dec_newer_ref(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    if data[pos] == 0 and data[pos + 1] == 3:
        # Three ids: what make_ref/0 returns, so nearly every reference.
        node, pos = _node(d, data, pos + 2, "reference node")
        ref: Ref = _fresh_ref(node, _unpack_u32(data, pos)[0], _unpack_3u32(data, pos + 4))
        return ref, pos + 16
    return _ref(d, data, pos, 4)


def _dec_new_ref(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    return _ref(d, data, pos, 1)


def _ref(d: _Decoder, data: bytes, pos: int, creation_size: int) -> tuple[Term, int]:
    n = _unpack_u16(data, pos)[0]
    if not 1 <= n <= 5:
        raise DecodeError(f"reference with {n} ids (1 to 5)", pos)
    node, pos = _node(d, data, pos + 2, "reference node")
    _need(data, pos, creation_size + 4 * n, "reference")
    creation = _unpack_u32(data, pos)[0] if creation_size == 4 else data[pos]
    pos += creation_size
    ids = struct.unpack_from(f">{n}I", data, pos)
    ref: Ref = _fresh_ref(node, creation, ids)
    return ref, pos + 4 * n


def _dec_old_ref(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    node, pos = _dec_atom_field(d, data, pos, "reference node")
    id_, creation = _unpack_u32_u8(data, pos)
    return _make_ref(node, creation, (id_,)), pos + 5


def _dec_new_port(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    node, pos = _dec_atom_field(d, data, pos, "port node")
    id_, creation = _unpack_2u32(data, pos)
    return _make_port(node, id_, creation), pos + 8


def _dec_v4_port(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    node, pos = _dec_atom_field(d, data, pos, "port node")
    id_, creation = _unpack_u64_u32(data, pos)
    return _make_port(node, id_, creation), pos + 12


def _dec_port(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    node, pos = _dec_atom_field(d, data, pos, "port node")
    id_, creation = _unpack_u32_u8(data, pos)
    return _make_port(node, id_, creation), pos + 5


def _binary(d: _Decoder, raw: bytes, pos: int) -> Term:
    mode = d.binaries
    if mode == "bytes":
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if mode == "str":
            raise DecodeError("binary is not valid UTF-8 (decoding with binaries='str')", pos) from None
        return raw


def _dec_binary(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    left = d.left - 1
    if left < 0:
        raise _over_budget(d, pos - 1)
    d.left = left
    n = _unpack_u32(data, pos)[0]
    pos += 4
    end = pos + n
    if end > len(data):
        raise DecodeError(f"binary of {n} bytes runs past the end of the input", pos - 5)
    raw = data[pos:end]
    if d.binaries == "bytes":
        return raw, end
    return _binary(d, raw, pos), end


def _dec_bit_binary(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    _take(d, pos - 1)
    n = _unpack_u32(data, pos)[0]
    bits = data[pos + 4]
    pos += 5
    _need(data, pos, n, "bitstring")
    raw = data[pos : pos + n]
    if n == 0 and bits == 0:
        return (raw if d.peer else _binary(d, raw, pos)), pos
    if n == 0 or not 1 <= bits <= 8:
        raise DecodeError(f"bitstring of {n} bytes with {bits} bits in its last byte", pos - 5)
    if bits == 8:
        return (raw if d.peer else _binary(d, raw, pos)), pos + n
    return BitBinary(raw, bits), pos + n


def _dec_small_tuple(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    n = data[pos]
    # _take, inlined in the decoders of the shapes every message has: -0.3 us a gen_call.
    left = d.left - (n > 0)
    if left < 0:
        raise _over_budget(d, pos - 1)
    d.left = left
    if depth >= d.max_depth:
        raise _too_deep(d, pos - 1)
    # At most 255 elements: a short input ends in IndexError, caught at the top.
    depth += 1
    # Unrolled for the arities of nearly every OTP message ({tag, From}, {'$gen_call', From, Req}).
    if n == 2 or n == 3:
        if data[pos + 1] == SMALL_ATOM_UTF8_EXT:
            # The tag atom that starts most tuples, decoded inline.
            end = pos + 3 + data[pos + 2]
            a = _UTF8_ATOMS.get(data[pos + 3 : end], _MISSING)
            if a is _MISSING or end > len(data):
                a, end = _dec_small_atom_utf8(d, data, pos + 2, depth)
            pos = end
        else:
            a, pos = _DECODERS[data[pos + 1]](d, data, pos + 2, depth)
        b, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
        if n == 2:
            return (a, b), pos
        c, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
        return (a, b, c), pos
    pos += 1
    items: list[Term] = []
    append = items.append
    for _ in range(n):
        item, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
        append(item)
    return tuple(items), pos


def _dec_large_tuple(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    n = _unpack_u32(data, pos)[0]
    if n:
        _take(d, pos - 1)
    pos += 4
    if depth >= d.max_depth:
        raise _too_deep(d, pos - 5)
    if n > len(data) - pos:
        raise DecodeError(f"tuple of {n} elements runs past the end of the input", pos - 5)
    depth += 1
    items: list[Term] = []
    append = items.append
    for _ in range(n):
        item, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
        append(item)
    return tuple(items), pos


def _dec_nil(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    _take(d, pos - 1)
    return [], pos


def _dec_string(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    _take(d, pos - 1)
    n = _unpack_u16(data, pos)[0]
    pos += 2
    _need(data, pos, n, "string")
    return list(data[pos : pos + n]), pos + n


def _dec_list(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    start = pos - 1
    left = d.left - 1
    if left < 0:
        raise _over_budget(d, start)
    d.left = left
    n = _unpack_u32(data, pos)[0]
    pos += 4
    if depth >= d.max_depth:
        raise _too_deep(d, start)
    if n > len(data) - pos:
        raise DecodeError(f"list of {n} elements runs past the end of the input", start)
    depth += 1
    if n == 1:
        # [alias | Ref], the reply tag of every OTP 24+ gen_call.
        item, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
        items: list[Term] = [item]
    else:
        items = []
        append = items.append
        for _ in range(n):
            item, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
            append(item)
    if data[pos] == NIL_EXT:
        return items, pos + 1
    tail, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
    # [a | [b]] is the proper list [a, b], and [ | T] is T (binary_to_term agrees).
    if type(tail) is list:
        return items + tail, pos
    if not items:
        return tail, pos
    if type(tail) is ImproperList:
        return _make_improper(items + tail.items, tail.tail), pos
    _take(d, start)  # the ImproperList: 48 bytes more
    return _make_improper(items, tail), pos




def _dec_map(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    _take(d, pos - 1)
    n = _unpack_u32(data, pos)[0]
    start = pos - 1
    pos += 4
    if depth >= d.max_depth:
        raise _too_deep(d, start)
    if n > (len(data) - pos) // 2:
        raise DecodeError(f"map of {n} pairs runs past the end of the input", start)
    depth += 1
    result: dict[Term, Term] = {}
    if n > _FLOOD_KEYS:
        keys: list[Term] = []
        values: list[Term] = []
        for _ in range(n):
            key, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
            value, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
            keys.append(key)
            values.append(value)
        _check_hashes(keys, start)
        for key, value in zip(keys, values):
            size = len(result)
            result[key] = value
            if len(result) == size:
                raise _repeated(key, start)
    else:
        for _ in range(n):
            key, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
            value, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
            size = len(result)
            try:
                result[key] = value
            except TypeError:
                key = _hashable(key, start)
                result[key] = value
            if len(result) == size:
                raise _repeated(key, start)
    if d.structs.by_name and _STRUCT_KEY in result:
        return _to_struct(d, result), pos
    return result, pos


# Maps of more keys than this are checked for hash flooding (see "Bounds"),
# and refused if more than this many keys share one hash.
_FLOOD_KEYS: Final = 16


def _check_hashes(keys: list[Term], start: int) -> None:
    """Freeze the keys Python cannot hash, in place, then refuse the map if
    more than _FLOOD_KEYS of them share one hash: before any goes into a dict,
    whose insertion is quadratic in such keys. Counter counts in C, in a dict
    keyed by the hashes themselves, which do not collide there (an int below
    2**61 - 1 is its own hash)."""
    hashes = []
    for i, key in enumerate(keys):
        try:
            hashes.append(hash(key))
        except TypeError:
            keys[i] = key = _hashable(key, start)
            hashes.append(hash(key))
    most = max(Counter(hashes).values())
    if most > _FLOOD_KEYS:
        # The same words as _etf_c.c's dec_map.
        raise DecodeError(f"map of {len(keys)} keys of which {most} share one hash (hash flooding)", start)


def _hashable(key: Term, start: int) -> Term:
    """`key` frozen (see FrozenList), or DecodeError if even that cannot be hashed."""
    key = freeze(key)
    try:
        hash(key)
    except TypeError:
        raise DecodeError(f"map key {repr(key)[:80]} cannot be hashed", start) from None
    return key


def _repeated(key: Term, start: int) -> DecodeError:
    return DecodeError(f"map key {repr(key)[:80]} repeats or equals another key in Python", start)


def freeze(term: Term) -> Term:
    """A hashable equivalent of a decoded term, for a dict key: lists become
    `FrozenList`s and maps `FrozenMap`s, which encode as they were. Decoded
    map keys are frozen already; other terms used as keys (a global name
    that is an Erlang string, say) go through this.

    >>> freeze(([1, 2], {"a": [3]})) == (FrozenList([1, 2]), FrozenMap({"a": FrozenList([3])}))
    True
    """
    kind = type(term)
    if kind is list:
        return FrozenList(freeze(x) for x in term)
    if kind is dict:
        return FrozenMap({freeze(k): freeze(v) for k, v in term.items()})
    if kind is tuple:
        return tuple(freeze(x) for x in term)
    if kind is ImproperList:
        return ImproperList([freeze(x) for x in term.items], freeze(term.tail))
    return term


def _to_struct(d: _Decoder, result: dict[Term, Term]) -> Term:
    cls = d.structs.by_name.get(result[_STRUCT_KEY])
    if cls is None:
        return result
    names = {f.name for f in fields(cls)}
    kwargs = {str(k): v for k, v in result.items() if k is not _STRUCT_KEY}
    if not set(kwargs) <= names:
        return result
    try:
        instance: Term = cls(**kwargs)
    except Exception:
        # The class refused these values (its __post_init__, say): keep the map.
        return result
    return instance


def _dec_export(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    module, pos = _dec_atom_field(d, data, pos, "export module")
    function, pos = _dec_atom_field(d, data, pos, "export function")
    if data[pos] != SMALL_INTEGER_EXT:
        raise DecodeError("export arity must be a SMALL_INTEGER_EXT", pos)
    return ExportFun(module, function, data[pos + 1]), pos + 2


def _dec_new_fun(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    start = pos - 1
    size = _unpack_u32(data, pos)[0]
    end = pos + size
    if size < 29 or end > len(data):
        raise DecodeError(f"fun of {size} bytes does not fit the input", start)
    if depth >= d.max_depth:
        raise _too_deep(d, start)
    arity = data[pos + 4]
    uniq = data[pos + 5 : pos + 21]
    index, num_free = _unpack_2u32(data, pos + 21)
    pos += 29
    if num_free > end - pos:
        raise DecodeError(f"fun with {num_free} free variables does not fit its size", start)
    module, pos = _dec_atom_field(d, data, pos, "fun module")
    depth += 1
    for what in ("fun old index", "fun old uniq"):
        if data[pos] not in (SMALL_INTEGER_EXT, INTEGER_EXT):
            raise DecodeError(f"{what} must be an integer", pos)
        _, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
    if data[pos] not in (NEW_PID_EXT, PID_EXT):
        raise DecodeError("fun pid must be a pid", pos)
    pid, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
    free = []
    for _ in range(num_free):
        item, pos = _DECODERS[data[pos]](d, data, pos + 1, depth)
        free.append(item)
    if pos != end:
        raise DecodeError(f"fun size says {size} bytes, its fields take {pos - start - 1}", start)
    return Fun(module, arity, index, uniq, pid, tuple(free), data[start:end]), end


_DECODERS: Final[list[_Decode]] = [_dec_bad] * 256
for _tag, _fn in {
    SMALL_INTEGER_EXT: _dec_small_int,
    INTEGER_EXT: _dec_int,
    SMALL_BIG_EXT: _dec_small_big,
    LARGE_BIG_EXT: _dec_large_big,
    NEW_FLOAT_EXT: _dec_new_float,
    FLOAT_EXT: _dec_float_ext,
    ATOM_EXT: _dec_atom,
    SMALL_ATOM_EXT: _dec_small_atom,
    ATOM_UTF8_EXT: _dec_atom_utf8,
    SMALL_ATOM_UTF8_EXT: _dec_small_atom_utf8,
    ATOM_CACHE_REF: _dec_atom_cache_ref,
    NEW_PID_EXT: _dec_new_pid,
    PID_EXT: _dec_pid,
    NEWER_REFERENCE_EXT: _dec_newer_ref,
    NEW_REFERENCE_EXT: _dec_new_ref,
    REFERENCE_EXT: _dec_old_ref,
    V4_PORT_EXT: _dec_v4_port,
    NEW_PORT_EXT: _dec_new_port,
    PORT_EXT: _dec_port,
    BINARY_EXT: _dec_binary,
    BIT_BINARY_EXT: _dec_bit_binary,
    SMALL_TUPLE_EXT: _dec_small_tuple,
    LARGE_TUPLE_EXT: _dec_large_tuple,
    NIL_EXT: _dec_nil,
    STRING_EXT: _dec_string,
    LIST_EXT: _dec_list,
    MAP_EXT: _dec_map,
    EXPORT_EXT: _dec_export,
    NEW_FUN_EXT: _dec_new_fun,
}.items():
    _DECODERS[_tag] = _fn
del _tag, _fn


# --- the implementation: C when built, else Python ---------------------------------


def _py_encode(term: Term, table: dict[type, _Encoder], peer: bool) -> bytes:
    out = bytearray(b"\x83")
    _enc(term, out, table)
    return bytes(out)


def _py_encode_into(out: bytearray, term: Term, table: dict[type, _Encoder], peer: bool) -> None:
    _enc(term, out, table)


def _py_decode(d: _Decoder, data: bytes, pos: int, depth: int) -> tuple[Term, int]:
    budget = max(d.min_objects, (len(data) - pos) // d.bytes_per_object)
    return _DECODERS[data[pos]](d.fork(budget, budget), data, pos + 1, depth)


# The three entry points `encode`, `encode_into` and the decoders call; the C
# versions take the same arguments (`peer` matters only to C, which does not
# read the table) and fall back to `_enc` and `_DECODERS` for what they do
# not handle themselves.
_encode: Callable[[Term, dict[type, _Encoder], bool], bytes] = _py_encode
_encode_into: Callable[[bytearray, Term, dict[type, _Encoder], bool], None] = _py_encode_into
_decode: Callable[[_Decoder, bytes, int, int], tuple[Term, int]] = _py_decode
ACCELERATED: bool = False
"""Whether the C codec (`beamish.dist._etf_c`) is in use (see "Speed")."""

if os.environ.get("BEAMISH_PURE_ETF") != "1":
    try:
        from . import _etf_c
    except ImportError:
        pass
    else:
        _etf_c.init(
            Atom, Pid, Ref, ImproperList, FrozenList, BitBinary, DecodeError,
            _enc, _DECODERS, _new_atom, _UTF8_ATOMS, _LATIN1_ATOMS,
        )  # fmt: skip
        _encode, _encode_into, _decode = _etf_c.encode, _etf_c.encode_into, _etf_c.decode
        ACCELERATED = True
