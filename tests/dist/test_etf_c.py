"""The C codec (`beamish.dist._etf_c`) against the pure-Python reference:
random terms encode to the same bytes and decode to the same values (and
Python types); random, mutated and hostile inputs decode to equal terms in
both or raise DecodeError in both.

The tests of test_etf*.py run with each codec too (the `etf_impl` fixture);
these compare the two directly.
"""

from __future__ import annotations

import enum
import functools
import importlib
import math
import os
import struct
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.dist.test_etf import _extend, _leaves, assert_same
from tests.dist.test_etf_fuzz import CORPUS, SEEDS

from beamish import Atom
from beamish.dist import etf
from beamish.terms import ImproperList
from beamish.dist.etf import BitBinary, DecodeError, EncodeError, FrozenList, FrozenMap, Limits
from beamish.terms import Term, _make_pid, _make_port, _make_ref

needs_c = pytest.mark.skipif(not etf.ACCELERATED, reason="the C codec is not built (or BEAMISH_PURE_ETF=1)")
LIMITS = Limits(max_size=1 << 20, max_depth=64, max_decompressed=1 << 20)
C_IMPL = (etf._encode, etf._encode_into, etf._decode)
PY_IMPL = (etf._py_encode, etf._py_encode_into, etf._py_decode)


def test_accelerator_built() -> None:
    # CI must not lose the extension silently (a missing compiler, a broken build).
    if os.environ.get("CI") != "true" and not etf.ACCELERATED:
        pytest.skip("the C codec is not in use here (with CI=true its absence fails)")
    importlib.import_module("beamish.dist._etf_c")
    assert etf.ACCELERATED == (os.environ.get("BEAMISH_PURE_ETF") != "1")


@contextmanager
def _impl(which: tuple[Callable[..., object], ...]) -> Iterator[None]:
    saved = (etf._encode, etf._encode_into, etf._decode)
    etf._encode, etf._encode_into, etf._decode = which  # type: ignore[assignment]
    try:
        yield
    finally:
        etf._encode, etf._encode_into, etf._decode = saved


def _outcome(fn: Callable[[], Term]) -> tuple[str, Term]:
    try:
        return "ok", fn()
    except DecodeError:
        return "DecodeError", None
    except EncodeError:
        return "EncodeError", None


def both(fn: Callable[[], Term]) -> Term:
    """`fn` run with each codec: equal results of the same types, or the same error."""
    with _impl(C_IMPL):
        got = _outcome(fn)
    with _impl(PY_IMPL):
        want = _outcome(fn)
    assert got[0] == want[0], (got, want)
    assert_same(got[1], want[1])
    return got[1]


# --- encoding ---------------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


class Point(NamedTuple):
    x: int
    y: int


class Kind(enum.StrEnum):
    A = "a"


@dataclass(frozen=True)
class User:
    name: str
    age: int


_odd = st.one_of(
    st.just(Color.RED),
    st.builds(Point, st.integers(), st.integers()),
    st.just(Kind.A),
    st.builds(OrderedDict, st.dictionaries(st.integers(0, 5), st.integers(), max_size=2)),
    st.builds(User, st.text(max_size=5), st.integers()),
    st.lists(st.integers(0, 300), max_size=4).map(FrozenList),
    st.dictionaries(st.integers(0, 5), st.booleans(), max_size=2).map(FrozenMap),
    st.text(max_size=10),
    st.binary(max_size=10).map(bytearray),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.sampled_from([2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64 - 1, 2**64, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 255, 256, -1]),
    st.floats(),
    st.builds(ImproperList, st.lists(st.integers(), max_size=2), st.lists(st.integers(), max_size=1)),
    st.builds(_make_pid, st.just("a@h"), st.integers(0, 2**33), st.integers(0, 3), st.integers(0, 2**32 - 1)),
    st.builds(_make_ref, st.just("a@h"), st.integers(0, 2**32 - 1), st.lists(st.integers(0, 2**33), max_size=6).map(tuple)),
    st.just(object()),
    st.lists(st.integers(0, 255), min_size=1, max_size=300),
)
_any_terms = st.recursive(st.one_of(_leaves, _odd), _extend, max_leaves=25)


class _ByteArray(bytearray):
    pass


def _encode_outcome(term: Term, peer: bool) -> tuple[str, bytes]:
    registry = etf.StructRegistry()
    registry.register(User, "Elixir.User")
    table = registry._table(peer)
    out = bytearray(b"prefix")
    try:
        data = etf._encode(term, table, peer)
        etf._encode_into(out, term, table, peer)
    except (EncodeError, TypeError, ValueError, struct.error) as exc:
        return type(exc).__name__, b""
    assert out == b"prefix" + data[1:]
    sub = _ByteArray()
    etf._encode_into(sub, term, table, peer)
    assert bytes(sub) == data[1:]
    return "ok", data


@needs_c
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_any_terms, st.booleans())
def test_c_and_python_encode_the_same_bytes(term: Term, peer: bool) -> None:
    with _impl(C_IMPL):
        got = _encode_outcome(term, peer)
    with _impl(PY_IMPL):
        want = _encode_outcome(term, peer)
    assert got == want


@needs_c
def test_c_encoder_hands_odd_values_to_python() -> None:
    deep: list[Term] = []
    deep.append(deep)
    strings = [[7] * 65535, [7] * 65536, [*[7] * 100, 256], [*[7] * 100, True]]
    for value in [*strings, deep, float("nan"), {1: float("inf")}, object(), ImproperList([], 1), ImproperList([1], [2])]:
        both(functools.partial(etf.encode, value))
    user = User("ann", 3)
    etf.register_struct(User, "Elixir.TestEtfC.User", registry=(registry := etf.StructRegistry()))
    data = etf.encode([user], structs=registry, beamish_peer=True)
    assert both(lambda: etf.decode(data, structs=registry, beamish_peer=True)) == [user]
    with pytest.raises(EncodeError, match="nested too deeply"):
        etf.encode(deep)


# --- decoding ---------------------------------------------------------------------


@needs_c
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.one_of(_leaves, st.text(max_size=10)), _extend, max_leaves=25), st.booleans())
def test_c_and_python_decode_to_the_same_values(term: Term, peer: bool) -> None:
    data = etf.encode(term, beamish_peer=peer)
    for binaries in ("bytes", "str", "utf8_or_bytes"):
        both(lambda binaries=binaries: etf.decode(data, binaries=binaries, beamish_peer=peer))  # type: ignore[misc]
    both(lambda: etf.decode_prefix(data + b"\x61\x07", 0, limits=LIMITS))


@needs_c
def test_decoded_pids_and_refs_hash_as_built_ones() -> None:
    # C builds them without __init__: the cached hash must be the one __init__ computes.
    for node in ("h@h", "héh@h", "x" * 200):
        values = [_make_pid(node, 5, 6, 2**32 - 1), *(_make_ref(node, 2**32 - 1 - n, tuple(range(n, 2 * n))) for n in range(1, 6))]
        with _impl(C_IMPL):
            got = etf.decode(etf.encode(values))
        assert got == values and [hash(v) for v in got] == [hash(v) for v in values]


def _mutate(seed: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(seed)
    for op, where, byte in mutations:
        if len(data) < 2:
            break
        i = 1 + where % (len(data) - 1)
        if op == "flip":
            data[i] ^= 1 << (byte % 8)
        elif op == "set":
            data[i] = byte
        elif op == "insert":
            data.insert(i, byte)
        elif op == "delete":
            del data[i]
        else:
            del data[i:]
    return bytes(data)


DIFF_SEEDS = [*SEEDS, etf.encode(b"bytes", beamish_peer=True), etf.encode(["text", {Atom("k"): (1, "é")}])]


@needs_c
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=48).map(lambda b: b"\x83" + b),
        st.builds(
            _mutate,
            st.sampled_from(DIFF_SEEDS),
            st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "cut"]), st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
        ),
    ),
    st.booleans(),
)
def test_c_and_python_agree_on_random_and_mutated_input(data: bytes, peer: bool) -> None:
    both(lambda: etf.decode(data, limits=LIMITS, beamish_peer=peer))
    both(lambda: etf.decode_prefix(data, 0, limits=LIMITS, beamish_peer=peer))


def _hostile() -> dict[str, bytes]:
    cases = {
        f"{name} claims {n}": data
        for n in (0x7FFFFFFF, 0xFFFFFFFF, 5000, 3)
        for name, data in {
            "list": b"\x83\x6c" + struct.pack(">I", n) + b"\x61\x01" * 4,
            "tuple": b"\x83\x69" + struct.pack(">I", n) + b"\x61\x01" * 4,
            "map": b"\x83\x74" + struct.pack(">I", n) + b"\x61\x01" * 4,
            "binary": b"\x83\x6d" + struct.pack(">I", n) + b"x" * 4,
            "bitstring": b"\x83\x4d" + struct.pack(">I", n) + b"\x03" + b"x" * 4,
            "bignum": b"\x83\x6f" + struct.pack(">I", n) + b"\x00" + b"\x01" * 4,
        }.items()
    }
    nested = {
        "lists": b"\x83" + b"\x6c\x00\x00\x00\x01" * 70 + b"\x6a" * 71,
        "tuples": b"\x83" + b"\x68\x01" * 70 + b"\x6a",
        "large tuples": b"\x83" + b"\x69\x00\x00\x00\x01" * 70 + b"\x6a",
        "maps": b"\x83" + b"\x74\x00\x00\x00\x01\x6a" * 70 + b"\x6a",
        "improper tails": b"\x83" + b"\x6c\x00\x00\x00\x01\x61\x01" * 70 + b"\x61\x02",
    }
    cases.update({f"{name} nested past max_depth": data for name, data in nested.items()})
    cases.update(
        {
            "string claims 64 KiB": b"\x83\x6b\xff\xff" + b"a",
            "small tuple of 255 claims": b"\x83\x68\xff\x61\x01",
            "atom claims 255 bytes": b"\x83\x77\xff" + b"a",
            "atom_utf8 claims 64 KiB": b"\x83\x76\xff\xff" + b"a",
            "latin-1 atom": b"\x83\x73\x03\xe9t\xe9",
            "invalid utf-8 atom": b"\x83\x77\x01\xff",
            "atom of 256 characters": b"\x83\x76\x01\x00" + b"a" * 256,
            "ref of 6 ids": b"\x83\x5a\x00\x06\x77\x01a" + b"\x00" * 28,
            "ref node true": b"\x83\x5a\x00\x01\x77\x04true" + b"\x00" * 8,
            "ref cut": b"\x83\x5a\x00\x03\x77\x01a" + b"\x00" * 10,
            "ref one id short": b"\x83\x5a\x00\x03\x77\x01a" + b"\x00" * 12,
            "pid one byte short": b"\x83\x58\x77\x01a" + b"\x00" * 11,
            "pid node nil": b"\x83\x58\x77\x03nil" + b"\x00" * 12,
            "pid node latin-1": b"\x83\x58\x73\x01a" + b"\x00" * 12,
            "pid cut": b"\x83\x58\x77\x01a" + b"\x00" * 11,
            "small big of 9 bytes": b"\x83\x6e\x09\x01" + b"\xff" * 9,
            "small big sign 2": b"\x83\x6e\x01\x02\x01",
            "small big 2^64-1 negative": b"\x83\x6e\x08\x01" + b"\xff" * 8,
            "float nan": b"\x83\x46\x7f\xf8" + b"\x00" * 6,
            "float cut": b"\x83\x46\x00\x00",
            "float one byte short": b"\x83\x46" + b"\x00" * 7,
            "integer one byte short": b"\x83\x62" + b"\x00" * 3,
            "small big one byte short": b"\x83\x6e\x04\x00" + b"\x01" * 3,
            "bitstring 0 bits": b"\x83\x4d\x00\x00\x00\x01\x00\x00",
            "bitstring 0 bytes 3 bits": b"\x83\x4d\x00\x00\x00\x00\x03",
            "map with unhashable key": b"\x83\x74\x00\x00\x00\x01\x6c\x00\x00\x00\x01\x61\x01\x6a\x61\x02",
            "map with keys 1 and 1.0": b"\x83\x74\x00\x00\x00\x02\x61\x01\x61\x01\x46\x3f\xf0" + b"\x00" * 6 + b"\x61\x02",
            "map with keys true twice": b"\x83\x74\x00\x00\x00\x02\x77\x04true\x6a\x77\x04true\x6a",
            "struct map": etf.encode({Atom("__struct__"): Atom("Elixir.X"), Atom("a"): 1}),
            "list whose tail is a list": b"\x83\x6c\x00\x00\x00\x01\x61\x01\x6c\x00\x00\x00\x01\x61\x02\x6a",
            "list whose tail is improper": b"\x83\x6c\x00\x00\x00\x01\x61\x01\x6c\x00\x00\x00\x01\x61\x02\x61\x03",
            "empty list with a tail": b"\x83\x6c\x00\x00\x00\x00\x61\x03",
            "atom cache ref": b"\x83\x52\x00",
            "unknown tag": b"\x83\x01",
            "empty": b"\x83",
        }
    )
    return cases


HOSTILE = _hostile()


@needs_c
@pytest.mark.parametrize("name", list(HOSTILE))
def test_c_and_python_agree_on_hostile_input(name: str) -> None:
    data = HOSTILE[name]
    both(lambda: etf.decode(data, limits=LIMITS))
    both(lambda: etf.decode_prefix(data, 0, limits=LIMITS))  # an over-read would show in the offset
    both(lambda: etf.decode(data))
    for binaries in ("str", "utf8_or_bytes"):
        both(lambda binaries=binaries: etf.decode(data, limits=LIMITS, binaries=binaries))  # type: ignore[misc]


@needs_c
@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.bin")), ids=lambda p: p.stem)
def test_c_and_python_agree_on_the_corpus(path: Path) -> None:
    data = path.read_bytes()
    both(lambda: etf.decode(data, limits=LIMITS))
    both(lambda: etf.decode(data, beamish_peer=True))


@needs_c
def test_depth_error_is_the_same_in_c() -> None:
    deep = b"\x83" + b"\x6c\x00\x00\x00\x01" * 1000 + b"\x6a" * 1001
    with _impl(C_IMPL), pytest.raises(DecodeError, match="max_depth=512") as info:
        etf.decode(deep)
    assert info.value.offset == 1 + 5 * 512
    # Deeper than the interpreter allows: DecodeError, not a crash.
    huge = Limits(max_depth=1 << 30)
    with _impl(C_IMPL), pytest.raises(DecodeError, match="too deep"):
        etf.decode(b"\x83" + b"\x68\x01" * 100_000 + b"\x6a", limits=huge)


_DEEP_SCRIPT = """
import sys
from beamish.dist import etf
n = 100_000
sys.setrecursionlimit(4 * n)
deep = []
for _ in range(n):
    deep = [deep]
data = etf.encode(deep)
assert etf.decode(data, limits=etf.Limits(max_depth=n + 1)) is not None
assert etf.ACCELERATED
"""


@needs_c
def test_terms_deeper_than_c_nests_continue_in_python() -> None:
    # With the recursion limit raised, C hands the rest of a very deep term to
    # etf.py (whose calls do not use the C stack); nesting it all in C
    # overflows the stack at this depth (a segfault: hence the subprocess).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _DEEP_SCRIPT], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


@needs_c
def test_max_atoms_is_enforced_by_c_too() -> None:
    full = Limits(max_atoms=len(Atom._table))
    with _impl(C_IMPL):
        assert etf.decode(etf.encode((Atom("ok"), True)), limits=full) == (Atom("ok"), True)
        with pytest.raises(DecodeError, match="atom table full"):
            etf.decode(b"\x83\x68\x01\x77\x11never_seen_atom_c", limits=full)
        with pytest.raises(DecodeError, match="atom table full"):
            etf.decode(b"\x83\x58\x77\x11never_seen_node_c" + bytes(12), limits=full)
    assert "never_seen_atom_c" not in Atom._table and "never_seen_node_c" not in Atom._table


@needs_c
def test_floats_keep_their_sign_and_bits() -> None:
    for value in (-0.0, 0.0, 5e-324, 1.7976931348623157e308, math.pi):
        assert both(lambda value=value: etf.decode(etf.encode(value))) == value  # type: ignore[misc]
        with _impl(C_IMPL):
            c = etf.encode(value)
        with _impl(PY_IMPL):
            assert etf.encode(value) == c


# --- the object budget counts alike in both ------------------------------------------


def _objects(data: bytes, structs: etf.StructRegistry) -> int:
    """How many objects the Python codec counts decoding `data`: the
    smallest budget it decodes within."""
    low, high = 0, len(data) + 1  # at most one object per byte, and the ImproperList
    with _impl(PY_IMPL):
        while low < high:
            mid = (low + high) // 2
            try:
                etf.decode(data, limits=Limits(min_objects=mid, bytes_per_object=1 << 40), structs=structs)
            except DecodeError:
                low = mid + 1
            else:
                high = mid
    return low


def _same_count(data: bytes, structs: etf.StructRegistry = etf.DEFAULT_STRUCTS) -> int:
    n = _objects(data, structs)
    for budget in (n, n - 1):
        if budget >= 0:
            limits = Limits(min_objects=budget, bytes_per_object=1 << 40)
            both(lambda limits=limits: etf.decode(data, limits=limits, structs=structs))  # type: ignore[misc]
    return n


# What C hands to etf.py midway (a map with a key Python cannot hash, small
# or over 16 keys, a struct map, a big integer, FLOAT_EXT, a bitstring) must
# be counted once: C restores its count before the fallback counts again.
_BIG_MAP: dict[Term, Term] = {i: [i] for i in range(20)}
_BIG_MAP[FrozenList([FrozenList([])])] = [[]]
BUDGET_CASES: dict[str, Term] = {
    "list key in a small map": {FrozenList([1, 2]): [[]], 1: ([],)},
    "list key in a big map": _BIG_MAP,
    "struct map": [{Atom("__struct__"): Atom("Elixir.User"), Atom("name"): "ann", Atom("age"): [1.5]}],
    "big integers": [1 << 100, -(1 << 70), [1 << 64]],
    "bitstrings and improper lists": [BitBinary(b"\xa0", 3), ImproperList([[]], 1)],
    "pids, refs, ports": [_make_pid("é@h", 1, 2, 3), _make_ref("a@h", 1, (2,)), _make_port("a@h", 1, 2), (1.0, b"x")],
}


@needs_c
@pytest.mark.parametrize("value", list(BUDGET_CASES.values()), ids=list(BUDGET_CASES))
def test_c_and_python_count_the_same_objects(value: Term) -> None:
    registry = etf.StructRegistry()
    registry.register(User, "Elixir.User")
    assert _same_count(etf.encode(value), registry) > 2
    assert _same_count(b"\x83\x63" + b"1.5".ljust(31, b"\0")) == 1  # FLOAT_EXT: only in etf.py
    assert _same_count(HOSTILE["list whose tail is improper"]) == 3  # two lists, one ImproperList


@needs_c
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.one_of(_leaves, st.text(max_size=10)), _extend, max_leaves=25))
def test_c_and_python_count_the_same_objects_in_random_terms(term: Term) -> None:
    _same_count(etf.encode(term))
