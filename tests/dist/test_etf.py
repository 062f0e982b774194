"""The External Term Format codec: exact bytes per tag (golden encodings made
by OTP 25's `term_to_binary(T, [{minor_version, 2}])`, the OTP 26+ default),
the Python mapping, the options, the bounds on hostile input, and a
round-trip property over generated terms."""

from __future__ import annotations

import contextlib
import enum
import math
import struct
import tracemalloc
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dist.test_etf_fuzz import empty_lists_frame, hash_flood_frame

from beamish import Atom
from beamish.dist import etf
from beamish.terms import ImproperList
from beamish.dist.etf import (
    BitBinary,
    DecodeError,
    EncodeError,
    ExportFun,
    FrozenList,
    FrozenMap,
    Fun,
    Limits,
    StructRegistry,
)
from beamish.terms import Term, _make_pid, _make_port, _make_ref

# Every test runs with the C codec and with the pure-Python one (tests/dist/conftest.py).
pytestmark = pytest.mark.usefixtures("etf_impl")

NODE = "golden@127.0.0.1"

# (name, Python value, hex of term_to_binary(Value, [{minor_version, 2}]) on OTP 25)
GOLDEN: list[tuple[str, Term, str]] = [
    ("small_int", 42, "83612A"),
    ("int_neg", -1, "8362FFFFFFFF"),
    ("int", 100000, "8362000186A0"),
    ("int_min", -2147483648, "836280000000"),
    ("small_big", 1 << 64, "836E0900000000000000000001"),
    ("small_big_neg", -(1 << 64), "836E0901000000000000000001"),
    ("large_big", 1 << 2100, "836F0000010700" + "00" * 262 + "10"),
    ("float", 1.5, "83463FF8000000000000"),
    ("float_neg_zero", -0.0, "83468000000000000000"),
    ("atom", Atom("ok"), "8377026F6B"),
    ("atom_unicode", Atom("héllo_ü"), "83770968C3A96C6C6F5FC3BC"),
    ("true", True, "83770474727565"),
    ("false", False, "83770566616C7365"),
    ("nil", None, "8377036E696C"),
    ("binary", b"key", "836D000000036B6579"),
    ("empty_binary", b"", "836D00000000"),
    ("bitstring", BitBinary(b"\x20", 3), "834D000000010320"),
    ("bitstring2", BitBinary(b"\xff\x18", 5), "834D0000000205FF18"),
    ("nil_list", [], "836A"),
    ("string", [97, 98, 99], "836B0003616263"),
    ("list", [1, Atom("ok"), 300], "836C00000003610177026F6B620000012C6A"),
    ("improper", ImproperList([1], 2), "836C0000000161016102"),
    ("improper_atom", ImproperList([Atom("alias")], Atom("ok")), "836C000000017705616C69617377026F6B"),
    ("tuple0", (), "836800"),
    ("tuple2", (Atom("ok"), 1), "83680277026F6B6101"),
    ("large_tuple", tuple(range(1, 257)), "836900000100" + "".join(f"61{i:02X}" for i in range(1, 256)) + "6200000100"),
    ("map", {Atom("a"): 1}, "8374000000017701616101"),
    ("map_list_key", {FrozenList([1, 2]): Atom("x")}, "8374000000016B00020102770178"),
    ("export", ExportFun(Atom("lists"), Atom("map"), 2), "837177056C6973747377036D61706102"),
    (
        "nested",
        ([{b"k": (1, [2.5])}], [120]),
        "8368026C0000000174000000016D000000016B680261016C000000014640040000000000006A6A6B000178",
    ),
    ("pid", _make_pid(NODE, 9, 0, 0x6B0643C3), "83587710676F6C64656E403132372E302E302E3100000009000000006B0643C3"),
    (
        "ref",
        _make_ref(NODE, 0x6B0643C3, (0x0000732E, 0xEC440002, 0xBC326AD1)),
        "835A00037710676F6C64656E403132372E302E302E316B0643C30000732EEC440002BC326AD1",
    ),
    ("port", _make_port(NODE, 0, 0x6B0643C3), "83597710676F6C64656E403132372E302E302E31000000006B0643C3"),
]


def assert_same(got: Term, want: Term) -> None:
    """Equal, and of the same type all the way down (1 is not True, b"" is not "")."""
    assert type(got) is type(want), (got, want)
    if isinstance(want, list | tuple):
        assert len(got) == len(want), (got, want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, dict):
        assert got == want
        for key, value in want.items():
            assert_same(got[key], value)
    elif isinstance(want, ImproperList):
        assert_same(got.items, want.items)
        assert_same(got.tail, want.tail)
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got)
    else:
        assert got == want
        if isinstance(want, float):
            assert math.copysign(1, got) == math.copysign(1, want)


@pytest.mark.parametrize(("name", "value", "hexdata"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_encodings_round_trip_byte_for_byte(name: str, value: Term, hexdata: str) -> None:
    data = bytes.fromhex(hexdata)
    assert_same(etf.decode(data), value)
    assert etf.encode(value) == data


# Older tags that OTP 25-27 still accept (and OTP 25 still sends for atoms).
LEGACY: list[tuple[str, str, Term]] = [
    ("ATOM_EXT", "836400026F6B", Atom("ok")),
    ("ATOM_EXT latin-1", "83640005686E6C6C6F".replace("6E", "E9"), Atom("héllo")),
    ("SMALL_ATOM_EXT", "8373026F6B", Atom("ok")),
    ("ATOM_UTF8_EXT", "837600026F6B", Atom("ok")),
    ("ATOM_EXT true", "83640004" + b"true".hex(), True),
    ("FLOAT_EXT", "8363" + b"1.50000000000000000000e+00".ljust(31, b"\0").hex(), 1.5),
    ("PID_EXT", "8367640001" + "61" + "00000009" + "00000000" + "03", _make_pid("a", 9, 0, 3)),
    ("NEW_REFERENCE_EXT", "8372000264000161" + "03" + "00000001" + "00000002", _make_ref("a", 3, (1, 2))),
    ("REFERENCE_EXT", "8365640001610000000703", _make_ref("a", 3, (7,))),
    ("PORT_EXT", "8366640001610000000703", _make_port("a", 7, 3)),
    ("V4_PORT_EXT", "8378770161" + "0000000100000002" + "00000003", _make_port("a", (1 << 32) + 2, 3)),
    ("LIST_EXT empty with tail", "836C000000006102", 2),
    ("LIST_EXT with a list tail", "836C0000000161016C0000000161026A", [1, 2]),
    ("SMALL_BIG_EXT zero length", "836E0000", 0),
    ("BIT_BINARY_EXT of whole bytes", "834D0000000308616263", b"abc"),
    ("BIT_BINARY_EXT empty", "834D0000000000", b""),
]


@pytest.mark.parametrize(("name", "hexdata", "value"), LEGACY, ids=[c[0] for c in LEGACY])
def test_legacy_tags_decode(name: str, hexdata: str, value: Term) -> None:
    assert_same(etf.decode(bytes.fromhex(hexdata)), value)


def test_v4_port_is_sent_only_for_ids_beyond_32_bits() -> None:
    big = _make_port("a", 1 << 40, 3)
    data = etf.encode(big)
    assert data[1] == etf.V4_PORT_EXT and etf.decode(data) == big
    assert etf.encode(_make_port("a", 5, 3))[1] == etf.NEW_PORT_EXT


def test_pid_caches_stay_bounded_and_exact() -> None:
    pids = [_make_pid("cache@h", i, i % 3, 7) for i in range(5000)]
    data = etf.encode(pids)
    assert etf.decode(data) == pids and etf.decode(data) == pids
    assert len(etf._PID_BYTES) <= etf._PIDS_MAX and len(etf._PIDS) <= etf._PIDS_MAX


def test_refs_of_one_to_five_ids_round_trip() -> None:
    for ids in [(1,), (1, 2, 3), (1, 2, 3, 4, 5)]:
        ref = _make_ref("n@h", 7, ids)
        assert etf.decode(etf.encode(ref)) == ref


def test_erlang_fun_decodes_opaque_and_re_encodes_byte_exact() -> None:
    # term_to_binary(fun(X) -> X + 1 end) typed into erl_eval on OTP 25.
    data = bytes.fromhex(
        "8370000000BE01065361AA461590D1BDF1EB62D1A6EB080000002A0000000164000865726C5F6576616C612A62"
        "00329B0D5864000E67656E31403132372E302E302E3100000009000000006B064148680661036A6400046E6F6E"
        "656400046E6F6E6574000000006C000000016805640006636C6175736561036C00000001680364000376617261"
        "03640001586A6A6C0000000168056400026F7061036400012B6803640003766172610364000158680364000769"
        "6E7465676572610361016A6A"
    )
    fun = etf.decode(data)
    assert isinstance(fun, Fun) and fun.module == Atom("erl_eval") and fun.arity == 1
    assert fun.pid.node == Atom("gen1@127.0.0.1") and len(fun.free_vars) == 1
    assert etf.encode(fun) == data and fun == etf.decode(data) and hash(fun) == hash(etf.decode(data))


def test_fun_fields_and_byte_exact_re_encoding() -> None:
    pid = etf.encode(_make_pid("n@h", 1, 0, 1))[1:]
    body = (
        bytes([2])
        + bytes(range(16))
        + struct.pack(">II", 7, 1)
        + b"\x77\x01m"
        + b"\x61\x07"
        + b"\x62\x00\x00\x00\x09"
        + pid
        + b"\x77\x02ok"
    )
    data = b"\x83\x70" + struct.pack(">I", len(body) + 4) + body
    fun = etf.decode(data)
    assert isinstance(fun, Fun)
    assert (fun.module, fun.arity, fun.index, fun.uniq) == (Atom("m"), 2, 7, bytes(range(16)))
    assert fun.pid == _make_pid("n@h", 1, 0, 1) and fun.free_vars == (Atom("ok"),)
    assert etf.encode(fun) == data and etf.decode(etf.encode((fun,))) == (fun,)
    with pytest.raises(DecodeError, match="fun size"):
        etf.decode(b"\x83\x70" + struct.pack(">I", len(body) + 3) + body + b"\x6a")


def test_python_mapping_of_special_atoms() -> None:
    assert etf.decode(etf.encode(None)) is None
    assert etf.decode(etf.encode(Atom("nil"))) is None
    assert etf.decode(etf.encode(True)) is True and etf.decode(etf.encode(False)) is False
    assert_same(etf.decode(etf.encode(Atom("undefined"))), Atom("undefined"))
    assert etf.encode("text") == etf.encode(b"text")
    assert etf.encode(bytearray(b"ab")) == etf.encode(memoryview(b"ab")) == etf.encode(b"ab")


def test_subclasses_of_base_types_encode_as_their_base() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Point(NamedTuple):
        x: int
        y: int

    assert etf.encode(Color.RED) == etf.encode(1)
    assert etf.encode(Point(1, 2)) == etf.encode((1, 2))
    assert etf.encode(OrderedDict(a=1)) == etf.encode({"a": 1})
    assert etf.encode(FrozenMap({1: 2})) == etf.encode({1: 2})


def test_unencodable_values_raise_encode_error_naming_the_type() -> None:
    with pytest.raises(EncodeError, match=r"builtins\.set"):
        etf.encode({1, 2})
    with pytest.raises(EncodeError, match=r"builtins\.object"):
        etf.encode([1, (2, object())])
    assert issubclass(EncodeError, TypeError)
    with pytest.raises(EncodeError, match="finite"):
        etf.encode(float("nan"))
    with pytest.raises(EncodeError, match="at least one item"):
        etf.encode(ImproperList([], 1))
    with pytest.raises(EncodeError, match="tail that is not a list"):
        etf.encode(ImproperList([1], [2]))
    with pytest.raises(EncodeError, match="1 to 5 ids"):
        etf.encode(_make_ref("n@h", 1, ()))
    loop: list[Term] = []
    loop.append(loop)
    with pytest.raises(EncodeError, match="nested too deeply"):
        etf.encode(loop)


def test_bit_binary_validates_and_clears_unused_bits() -> None:
    assert BitBinary(b"\xff", 3).data == b"\xe0"
    for data, bits in [(b"", 3), (b"\x00", 0), (b"\x00", 8)]:
        with pytest.raises(ValueError, match="BitBinary"):
            BitBinary(data, bits)
    # Erlang masks the unused bits too: <<255:8>> with 3 bits reads as <<7:3>>.
    assert etf.decode(bytes.fromhex("834D0000000103FF")) == BitBinary(b"\xe0", 3)


def test_binaries_option() -> None:
    data = etf.encode((b"caf\xc3\xa9", b"\xff"))
    assert etf.decode(data) == (b"caf\xc3\xa9", b"\xff")
    assert etf.decode(data, binaries="utf8_or_bytes") == ("café", b"\xff")
    with pytest.raises(DecodeError, match="not valid UTF-8"):
        etf.decode(data, binaries="str")
    assert etf.decode(etf.encode(b"ok"), binaries="str") == "ok"
    with pytest.raises(ValueError, match="binaries must be"):
        etf.decode(data, binaries="text")  # type: ignore[arg-type]


def test_beamish_peers_keep_str_and_bytes_apart() -> None:
    value = ("text", b"raw", b"", "", [b"\xff", "é"])
    data = etf.encode(value, beamish_peer=True)
    assert_same(etf.decode(data, beamish_peer=True), value)
    # An Erlang node (or a beamish node not told the peer is beamish) sees binaries.
    assert_same(etf.decode(data), (b"text", b"raw", b"", b"", [b"\xff", "é".encode()]))


def test_map_keys_python_cannot_hash_are_frozen_and_round_trip() -> None:
    data = bytes.fromhex("8374000000016B00020102770178")  # #{[1,2] => x}
    decoded = etf.decode(data)
    [key] = decoded
    assert type(key) is FrozenList and key == FrozenList([1, 2]) and key != (1, 2)
    assert etf.encode(decoded) == data
    inner_map = etf.encode({1: 2})[1:]
    as_map_key = b"\x83\x74\x00\x00\x00\x01" + inner_map + b"\x6a"
    frozen = etf.decode(as_map_key)
    assert frozen == {FrozenMap({1: 2}): []} and etf.encode(frozen) == as_map_key
    rebuilt = etf.decode(etf.encode({(1, FrozenList([2])): 1}))
    assert rebuilt == {(1, FrozenList([2])): 1}
    improper_key = etf.decode(etf.encode({ImproperList([1], 2): 2}))
    assert improper_key == {ImproperList([1], 2): 2}


def test_maps_whose_keys_collide_in_python_are_refused() -> None:
    duplicate = b"\x83\x74\x00\x00\x00\x02\x61\x01\x61\x01\x61\x01\x61\x02"
    with pytest.raises(DecodeError, match="repeats or equals"):
        etf.decode(duplicate)
    one_and_float = b"\x83\x74\x00\x00\x00\x02\x61\x01\x6a" + etf.encode(1.0)[1:] + b"\x6a"
    with pytest.raises(DecodeError, match="repeats or equals"):
        etf.decode(one_and_float)


@dataclass(frozen=True)
class User:
    name: bytes
    age: int = 0


def test_structs_only_through_an_explicit_registry() -> None:
    registry = StructRegistry()
    user = User(b"ann", 3)
    with pytest.raises(EncodeError, match="User"):
        etf.encode(user, structs=registry)
    etf.register_struct(User, "Elixir.MyApp.User", registry=registry)
    data = etf.encode(user, structs=registry)
    as_map = etf.decode(data)
    assert as_map == {Atom("__struct__"): Atom("Elixir.MyApp.User"), Atom("name"): b"ann", Atom("age"): 3}
    assert etf.decode(data, structs=registry) == user
    extra = {**as_map, Atom("extra"): 1}
    assert etf.decode(etf.encode(extra), structs=registry) == {**extra}
    other = {Atom("__struct__"): Atom("Elixir.Other"), Atom("name"): b"x"}
    assert etf.decode(etf.encode(other), structs=registry) == other
    with pytest.raises(TypeError, match="dataclass"):
        etf.register_struct(int, "Elixir.Int", registry=registry)


@dataclass
class Picky:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")


def test_structs_that_refuse_their_fields_or_cannot_be_keys() -> None:
    registry = StructRegistry()
    etf.register_struct(Picky, "Elixir.Picky", registry=registry)
    bad = {Atom("__struct__"): Atom("Elixir.Picky"), Atom("n"): -1}
    assert etf.decode(etf.encode(bad), structs=registry) == bad
    good = etf.encode(Picky(1), structs=registry)
    assert etf.decode(good, structs=registry) == Picky(1)
    as_key = b"\x83\x74\x00\x00\x00\x01" + good[1:] + b"\x6a"
    with pytest.raises(DecodeError, match="cannot be hashed"):
        etf.decode(as_key, structs=registry)


def test_compressed_terms() -> None:
    value = tuple(range(1, 201))
    erlang = etf.encode(value)
    packed = etf.encode(value, compress=6, compress_threshold=0)
    assert packed[1] == etf.COMPRESSED and len(packed) < len(erlang)
    assert etf.decode(packed) == value
    assert etf.encode(value, compress=6) == erlang  # under the default 1 KiB threshold
    assert etf.encode(b"x", compress=9, compress_threshold=0) == etf.encode(b"x")  # not smaller
    term, offset = etf.decode_prefix(packed + b"tail")
    assert term == value and offset == len(packed)
    with pytest.raises(DecodeError, match="only appear at the top level"):
        etf.decode(b"\x83\x68\x01" + packed[1:])


def test_decode_prefix_reads_consecutive_terms_and_bare_terms() -> None:
    frame = b"p" + etf.encode((2, Atom(""), Atom("to"))) + etf.encode(b"msg")
    ctrl, offset = etf.decode_prefix(frame, 1)
    payload, end = etf.decode_prefix(frame, offset)
    assert ctrl == (2, Atom(""), Atom("to")) and payload == b"msg" and end == len(frame)
    bare = bytearray()
    etf.encode_into(bare, (Atom("a"), 1))
    assert etf.decode_prefix(bare, version=False) == ((Atom("a"), 1), len(bare))
    assert etf.decode_prefix(memoryview(b"\x83\x61\x05")) == (5, 3)
    with pytest.raises(DecodeError, match="version byte"):
        etf.decode(b"\x61\x05")
    with pytest.raises(DecodeError, match="trailing"):
        etf.decode(b"\x83\x61\x05\x00")


def test_atom_cache_refs_resolve_only_with_a_cache() -> None:
    data = b"\x68\x02\x52\x00\x52\x01"
    cache = [Atom("hello"), Atom("true")]
    assert etf.decode_prefix(data, version=False, atom_cache=cache) == ((Atom("hello"), True), len(data))
    with pytest.raises(DecodeError, match="ATOM_CACHE_REF"):
        etf.decode_prefix(data, version=False)
    with pytest.raises(DecodeError, match="beyond the 1 cached"):
        etf.decode_prefix(data, version=False, atom_cache=cache[:1])
    pid = b"\x58\x52\x00" + struct.pack(">III", 1, 2, 3)
    assert etf.decode_prefix(pid, version=False, atom_cache=cache) == (_make_pid("hello", 1, 2, 3), len(pid))


def test_local_ext_and_unknown_tags_are_refused() -> None:
    with pytest.raises(DecodeError, match="LOCAL_EXT"):
        etf.decode(b"\x83\x79\x00\x00")
    with pytest.raises(DecodeError, match="unknown tag 1"):
        etf.decode(b"\x83\x01")


# --- bounds ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("binary claims 4 GiB", b"\x83\x6d\xff\xff\xff\xff" + b"x", "runs past the end"),
        ("list claims 2^31 elements", b"\x83\x6c\x7f\xff\xff\xff\x61\x01", "runs past the end"),
        ("tuple claims 2^31 elements", b"\x83\x69\x7f\xff\xff\xff\x61\x01", "runs past the end"),
        ("map claims 2^31 pairs", b"\x83\x74\x7f\xff\xff\xff\x61\x01\x61\x01", "runs past the end"),
        ("bignum claims 1 MiB", b"\x83\x6f\x00\x10\x00\x00\x00" + b"\x01" * 100, "runs past the end"),
        ("string claims 64 KiB", b"\x83\x6b\xff\xff" + b"a", "runs past the end"),
        ("atom claims 255 bytes", b"\x83\x77\xff" + b"a", "runs past the end"),
        ("bitstring with 0 bits", b"\x83\x4d\x00\x00\x00\x01\x00\x00", "bits"),
        ("bignum sign 2", b"\x83\x6e\x01\x02\x01", "sign"),
        ("ref of 6 ids", b"\x83\x5a\x00\x06\x77\x01a" + b"\x00" * 28, "1 to 5"),
        ("ref of 0 ids", b"\x83\x5a\x00\x00\x77\x01a\x00\x00\x00\x00", "1 to 5"),
        ("pid node not an atom", b"\x83\x58\x61\x01" + b"\x00" * 12, "must be an atom"),
        ("invalid utf-8 atom", b"\x83\x77\x01\xff", "UTF-8"),
        ("atom of 256 characters", b"\x83\x76\x01\x00" + b"a" * 256, "at most 255"),
        ("empty input", b"", "version byte"),
        ("version only", b"\x83", "truncated"),
    ],
)
def test_hostile_inputs_raise_decode_error(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as info:
        etf.decode(data)
    assert isinstance(info.value, ValueError) and info.value.reason


def test_depth_is_bounded_without_recursion_error() -> None:
    deep = b"\x83" + b"\x6c\x00\x00\x00\x01" * 100_000 + b"\x6a" * 100_001
    with pytest.raises(DecodeError, match="max_depth=512") as info:
        etf.decode(deep)
    assert info.value.offset == 1 + 5 * 512
    nested = b"\x83" + b"\x68\x01" * 20 + b"\x6a"
    assert etf.decode(nested, limits=Limits(max_depth=20)) is not None
    with pytest.raises(DecodeError, match="max_depth=19"):
        etf.decode(nested, limits=Limits(max_depth=19))
    maps = b"\x83" + b"\x74\x00\x00\x00\x01\x6a" * 10 + b"\x6a"
    with pytest.raises(DecodeError, match="max_depth=5"):
        etf.decode(maps, limits=Limits(max_depth=5))


def test_decompression_is_bounded() -> None:
    bomb_body = b"\x6d" + struct.pack(">I", 50_000_000) + bytes(50_000_000)
    bomb = b"\x83\x50" + struct.pack(">I", len(bomb_body)) + zlib.compress(bomb_body, 9)
    with pytest.raises(DecodeError, match="max_decompressed"):
        etf.decode(bomb, limits=Limits(max_decompressed=1_000_000))
    # Lying about the size: the inflater stops at the declared size.
    liar = b"\x83\x50" + struct.pack(">I", 1000) + zlib.compress(bomb_body, 9)
    with pytest.raises(DecodeError, match="longer than its declared"):
        etf.decode(liar)
    short = b"\x83\x50" + struct.pack(">I", 10) + zlib.compress(b"\x61\x01")
    with pytest.raises(DecodeError, match="exactly the declared"):
        etf.decode(short)
    with pytest.raises(DecodeError, match="bad zlib"):
        etf.decode(b"\x83\x50\x00\x00\x00\x02garbage")
    with pytest.raises(DecodeError, match="empty compressed"):
        etf.decode(b"\x83\x50\x00\x00\x00\x00" + zlib.compress(b""))
    with pytest.raises(DecodeError, match="trailing bytes inside"):
        etf.decode(b"\x83\x50\x00\x00\x00\x03" + zlib.compress(b"\x61\x01\x00"))


def _peak(fn: Callable[[], object]) -> int:
    """The most memory `fn` held at once, in bytes (tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _refused(data: bytes, reason: str) -> Callable[[], object]:
    def run() -> None:
        with pytest.raises(DecodeError, match=reason):
            etf.decode(data)

    return run


def test_a_frame_of_empty_lists_is_refused_before_it_costs_70_times_its_size() -> None:
    # The 8 MB frame of issue 11 (it grew a node by 577 MB): refused at its
    # budget of one object per 4 bytes.
    big = empty_lists_frame(8 << 20)
    with pytest.raises(DecodeError, match=r"builds more than 2097153 objects") as info:
        etf.decode(big)
    assert info.value.offset == 6 + 2097152  # the list past the budget (the outer one is the first)
    # What it costs, on a smaller one: about 16 times its size (70 without the budget).
    data = empty_lists_frame(1 << 18)
    assert _peak(_refused(data, "builds more than")) < 20 * len(data)


# Shapes that cost the most memory per byte of input, each as a 256 KiB list:
# whether or not the budget refuses them, none costs more than 30 times its
# size (a one-pair map, at 9 bytes for a 232-byte dict, is the worst: 26x).
COSTLY_ITEMS = {
    "empty lists": b"\x6a",
    "empty strings": b"\x6b\x00\x00",
    "empty maps": b"\x74\x00\x00\x00\x00",
    "one-pair maps": b"\x74\x00\x00\x00\x01\x61\x01\x61\x01",
    "1-tuples": b"\x68\x01\x61\x01",
    "1-tuples of []": b"\x68\x01\x6a",
    "improper lists [[] | 1]": b"\x6c\x00\x00\x00\x01\x6a\x61\x01",
    "2-byte binaries": b"\x6d\x00\x00\x00\x02xy",
    "floats": b"\x46\x3f\xf1" + bytes(6),
    "big integers": b"\x6e\x02\x00\x01\x01",
    "32-bit integers": b"\x62\x00\x01\x00\x00",
}


@pytest.mark.parametrize("item", list(COSTLY_ITEMS.values()), ids=list(COSTLY_ITEMS))
def test_no_shape_costs_more_than_30_times_its_size(item: bytes) -> None:
    n = (1 << 18) // len(item)
    data = b"\x83\x6c" + struct.pack(">I", n) + item * n + b"\x6a"

    def decode() -> None:
        with contextlib.suppress(DecodeError):
            etf.decode(data)

    assert _peak(decode) < 30 * len(data)


def test_the_object_budget_is_max_of_a_floor_and_one_per_4_bytes() -> None:
    # 32-bit integers (5 bytes, not counted) and lists of them pass; a list of
    # n empty lists is n + 1 objects for n + 7 bytes: refused past the floor.
    ints = [[*range(100_000, 100_050)]] * 2000
    assert etf.decode(etf.encode(ints)) == ints
    assert etf.decode(empty_lists_frame(4095)) == [[]] * 4095
    with pytest.raises(DecodeError, match="more than 4096 objects"):
        etf.decode(empty_lists_frame(4096))
    tuples = etf.encode([(1,)] * 16)  # 17 objects in 70 bytes
    assert etf.decode(tuples, limits=Limits(min_objects=17, bytes_per_object=1000)) == [(1,)] * 16
    with pytest.raises(DecodeError, match="more than 16 objects"):
        etf.decode(tuples, limits=Limits(min_objects=16, bytes_per_object=1000))
    assert etf.decode(tuples, limits=Limits(min_objects=0, bytes_per_object=4)) == [(1,)] * 16
    with pytest.raises(DecodeError, match="more than 14 objects"):
        etf.decode(tuples, limits=Limits(min_objects=0, bytes_per_object=5))
    with pytest.raises(ValueError, match="bytes_per_object >= 1"):
        Limits(bytes_per_object=0)


def test_a_map_whose_keys_share_a_hash_is_refused_before_any_goes_into_a_dict() -> None:
    # The 598 KB map of issue 11 (it held a node for 11.7 s).
    data = hash_flood_frame(28_500)
    assert 590_000 < len(data) < 610_000
    assert _peak(_refused(data, "28500 keys of which 28500 share one hash")) < 16 * len(data)
    # More than 16 keys sharing one hash is refused, 16 are not; maps of up to 16 keys are not checked.
    assert len(etf.decode(hash_flood_frame(40, shared=16))) == 40
    with pytest.raises(DecodeError, match="40 keys of which 17 share one hash"):
        etf.decode(hash_flood_frame(40, shared=17))
    assert len(etf.decode(hash_flood_frame(16))) == 16
    # Keys Python cannot hash are frozen before the check, as in a small map.
    mixed: dict[Term, Term] = {i: i for i in range(20)}
    mixed.update({FrozenList([i]): i for i in range(20)})
    assert etf.decode(etf.encode(mixed)) == mixed
    with pytest.raises(DecodeError, match="repeats"):
        etf.decode(b"\x83\x74" + struct.pack(">I", 17) + b"\x61\x01\x6a" * 2 + b"".join(b"\x61" + bytes([i]) + b"\x6a" for i in range(2, 17)))


def test_size_and_atom_table_limits() -> None:
    with pytest.raises(DecodeError, match="max_size"):
        etf.decode(etf.encode(b"x" * 100), limits=Limits(max_size=50))
    full = Limits(max_atoms=len(Atom._table))
    assert etf.decode(etf.encode(Atom("ok")), limits=full) == Atom("ok")
    with pytest.raises(DecodeError, match="atom table full"):
        etf.decode(b"\x83\x77\x10never_seen_atom!", limits=full)
    assert "never_seen_atom!" not in Atom._table


def test_every_truncation_of_a_valid_term_raises_decode_error() -> None:
    value = (
        Atom("$gen_call"),
        (_make_pid("n@h", 1, 2, 3), ImproperList([Atom("alias")], _make_ref("n@h", 3, (1, 2, 3)))),
        {Atom("k"): [1.5, b"bin", BitBinary(b"\x80", 1), 1 << 70, -5, "s"]},
        _make_port("n@h", 1, 2),
        ExportFun(Atom("m"), Atom("f"), 1),
    )
    data = etf.encode(value)
    assert etf.decode(data) == etf.decode(etf.encode(etf.decode(data)))
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            etf.decode(data[:cut])
    packed = etf.encode(value, compress=1, compress_threshold=0)
    for cut in range(len(packed)):
        with pytest.raises(DecodeError):
            etf.decode(packed[:cut])


def test_decode_error_carries_offset_and_reason() -> None:
    with pytest.raises(DecodeError) as info:
        etf.decode(b"\x83\x68\x02\x61\x01\x6d\x00\x00\x01\x00")
    assert info.value.offset == 5 and "runs past the end" in info.value.reason
    assert "offset 5" in str(info.value)
    assert str(DecodeError("no offset")) == "no offset"


# --- round-trip property -------------------------------------------------------------

_atoms = st.text(max_size=20).filter(lambda s: s not in ("true", "false", "nil")).map(Atom)
_leaves = st.one_of(
    _atoms,
    st.integers(),
    st.integers(min_value=-(1 << 3000), max_value=1 << 3000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.binary(max_size=40),
    st.builds(BitBinary, st.binary(min_size=1, max_size=8), st.integers(1, 7)),
    st.none(),
    st.booleans(),
    st.builds(_make_pid, st.sampled_from(["a@h", "nonode@nohost"]), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(_make_ref, st.just("a@h"), st.integers(0, 2**32 - 1), st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5).map(tuple)),
    st.builds(_make_port, st.just("a@h"), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
    st.builds(ExportFun, _atoms, _atoms, st.integers(0, 255)),
)
_keys = st.recursive(
    st.one_of(_atoms, st.integers(), st.binary(max_size=8)),
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.lists(inner, max_size=3).map(FrozenList),
        st.dictionaries(inner, inner, max_size=2).map(FrozenMap),
    ),
    max_leaves=4,
)


def _extend(inner: st.SearchStrategy[Term]) -> st.SearchStrategy[Term]:
    return st.one_of(
        st.lists(inner, max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(_keys, inner, max_size=5),
        st.builds(ImproperList, st.lists(inner, min_size=1, max_size=4), _leaves),
    )


terms = st.recursive(_leaves, _extend, max_leaves=30)


# 150 examples per codec (etf_impl): 300 in all, as before there were two.
@settings(max_examples=150, deadline=None)
@given(terms)
def test_round_trip_property(value: Term) -> None:
    data = etf.encode(value)
    assert_same(etf.decode(data), value)
    assert etf.encode(etf.decode(data)) == data
    assert_same(etf.decode(etf.encode(value, compress=1, compress_threshold=0)), value)


@settings(max_examples=50, deadline=None)
@given(st.recursive(st.one_of(_leaves, st.text(max_size=10)), _extend, max_leaves=20))
def test_round_trip_between_beamish_peers_keeps_str(value: Term) -> None:
    assert_same(etf.decode(etf.encode(value, beamish_peer=True), beamish_peer=True), value)


def test_a_prefix_decoder_decodes_like_decode_prefix_with_its_options() -> None:
    frame = b"\x70" + etf.encode((6, Atom("a"), Atom(""), Atom("b"))) + etf.encode([1, "x"], beamish_peer=True)
    plain, peer = etf.PrefixDecoder(), etf.PrefixDecoder(beamish_peer=True)
    ctrl, offset = plain(frame, 1)
    assert (ctrl, offset) == etf.decode_prefix(frame, 1)
    assert plain(frame, offset) == ([1, b"x"], len(frame))
    assert peer(frame, offset) == ([1, "x"], len(frame))  # str kept between beamish nodes
    with pytest.raises(etf.DecodeError):
        plain(frame[:-1], offset)  # truncated
    with pytest.raises(etf.DecodeError, match="version"):
        plain(frame, 0)  # 0x70 is not a version byte
    deep = etf.encode([[[[1]]]])
    with pytest.raises(etf.DecodeError, match="max_depth"):
        etf.PrefixDecoder(limits=etf.Limits(max_depth=2))(deep, 0)
    big = etf.encode(list(range(500)), compress=6)  # compressed: the general path
    assert etf.PrefixDecoder()(big, 0) == (list(range(500)), len(big))
