"""Fuzzing the ETF decoder: random bytes and mutated valid encodings must
either decode (and then survive a re-encode round trip) or raise
DecodeError, never anything else; the kept corpus in `corpus/` replays the
interesting inputs found so far (bombs, huge lengths, deep nesting...).

To grow the corpus, run a longer search and save what it finds as
`corpus/<what-it-tests>.bin`:

    BEAMISH_FUZZ_EXAMPLES=20000 pytest tests/dist/test_etf_fuzz.py

The `atheris_*` files come from a coverage-guided run of atheris 3.1 (in a
scratch venv: `pip install atheris`) over `check` with the hand-made files as
seeds: 3.9 million inputs in 6 minutes, no finding; one input was kept per
distinct DecodeError reason. The hand-made files are rebuilt by running this
file as a script.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beamish import Atom
from beamish.dist import etf
from beamish.terms import ImproperList
from beamish.dist.etf import BitBinary, DecodeError, ExportFun, Limits
from beamish.terms import Term, _make_pid, _make_port, _make_ref

# Every test runs with the C codec and with the pure-Python one (tests/dist/conftest.py).
pytestmark = pytest.mark.usefixtures("etf_impl")

CORPUS = Path(__file__).parent / "corpus"
EXAMPLES = int(os.environ.get("BEAMISH_FUZZ_EXAMPLES", "400"))
# Small limits, so that a fuzzed length or depth hits them rather than eating memory.
LIMITS = Limits(max_size=1 << 20, max_depth=64, max_decompressed=1 << 20)

SEED_TERMS: list[Term] = [
    (Atom("$gen_call"), (_make_pid("a@h", 1, 2, 3), ImproperList([Atom("alias")], _make_ref("a@h", 3, (1, 2, 3)))), (Atom("get"), b"key", 42)),
    {Atom("k"): [1.5, -7, 1 << 80, -(1 << 300)], (1, 2): {b"x": None}, 3: True},
    [BitBinary(b"\xa0", 3), b"", "text", [], [1, 2, 3], ImproperList([1], Atom("t"))],
    (_make_port("a@h", 1, 2), _make_port("a@h", 1 << 40, 2), ExportFun(Atom("m"), Atom("f"), 3), _make_ref("a@h", 1, (9,))),
    tuple(range(260)),
]
SEEDS: list[bytes] = [etf.encode(t) for t in SEED_TERMS] + [
    etf.encode(t, compress=6, compress_threshold=0) for t in SEED_TERMS[:2]
]


# Two frames that cost far more to decode than their size, from issue 11;
# the corpus keeps small ones, the tests (test_etf.py) build the originals.


def empty_lists_frame(n: int) -> bytes:
    """A list of `n` empty lists: one byte each, 64 bytes each decoded (an 8 MB
    frame grew a node by 577 MB)."""
    return b"\x83\x6c" + struct.pack(">I", n) + b"\x6a" * (n + 1)


def hash_flood_frame(n: int, shared: int | None = None) -> bytes:
    """A map of `n` integer keys of which `shared` (all, by default) have one
    hash, `1 + k * (2**61 - 1)`: dict insertion is quadratic in them (a 598 KB
    map held a node for 11.7 s). The other keys are 2**64 + k."""
    shared = n if shared is None else shared
    keys = [1 + k * ((1 << 61) - 1) for k in range(shared)] + [(1 << 64) + k for k in range(n - shared)]
    pairs = b"".join(b"\x6e\x10\x00" + key.to_bytes(16, "little") + b"\x61\x00" for key in keys)
    return b"\x83\x74" + struct.pack(">I", n) + pairs


def check(data: bytes, limits: Limits = LIMITS) -> None:
    """The fuzzing oracle: DecodeError, or a term that round-trips."""
    try:
        term = etf.decode(data, limits=limits)
    except DecodeError:
        return
    again = etf.encode(term)
    assert etf.decode(again) == term


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64))
def test_random_bytes(data: bytes) -> None:
    check(b"\x83" + data)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "cut"]), st.integers(0, 10_000), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_valid_encodings(seed: bytes, mutations: list[tuple[str, int, int]]) -> None:
    data = bytearray(seed)
    for op, where, byte in mutations:
        if not data:
            break
        i = 1 + where % max(1, len(data) - 1) if len(data) > 1 else 0
        if op == "flip":
            data[i % len(data)] ^= 1 << (byte % 8)
        elif op == "set":
            data[i % len(data)] = byte
        elif op == "insert":
            data.insert(i, byte)
        elif op == "delete":
            del data[i % len(data)]
        else:
            del data[i:]
    check(bytes(data))


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(st.sampled_from(SEEDS), st.integers(0, 3), st.integers(0, 0xFFFFFFFF))
def test_length_fields_set_to_extreme_values(seed: bytes, which: int, value: int) -> None:
    # Every 4-byte window of a valid encoding overwritten with a big number:
    # whatever it lands on (a length, a count, an id) must be caught or decode.
    data = bytearray(seed)
    for start in range(1 + which, len(data) - 4, 4):
        mutated = bytearray(data)
        mutated[start : start + 4] = struct.pack(">I", value)
        check(bytes(mutated))


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.bin"))


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.stem)
def test_corpus_replays(path: Path) -> None:
    check(path.read_bytes())
    check(path.read_bytes(), etf.DEFAULT_LIMITS)


def test_corpus_is_not_empty() -> None:
    assert len(corpus_files()) >= 10


def write_corpus() -> None:  # pragma: no cover - run by hand to rebuild corpus/
    """Rebuild the hand-made part of the corpus: `python tests/dist/test_etf_fuzz.py`."""
    bomb_body = b"\x6d" + struct.pack(">I", 8 << 20) + bytes(8 << 20)
    cases = {
        "deep_lists": b"\x83" + b"\x6c\x00\x00\x00\x01" * 2000 + b"\x6a" * 2001,
        "deep_tuples": b"\x83" + b"\x68\x01" * 5000 + b"\x6a",
        "deep_maps": b"\x83" + b"\x74\x00\x00\x00\x01\x6a" * 1000 + b"\x6a",
        "binary_4gib_claim": b"\x83\x6d\xff\xff\xff\xff" + b"x",
        "list_2g_claim": b"\x83\x6c\x7f\xff\xff\xff\x61\x01",
        "large_tuple_2g_claim": b"\x83\x69\x7f\xff\xff\xff\x61\x01",
        "map_2g_claim": b"\x83\x74\x7f\xff\xff\xff\x61\x01\x61\x01",
        "bignum_4gib_claim": b"\x83\x6f\xff\xff\xff\xff\x00\x01",
        "zlib_bomb_8mib": b"\x83\x50" + struct.pack(">I", len(bomb_body)) + zlib.compress(bomb_body, 9),
        "zlib_size_lies_small": b"\x83\x50" + struct.pack(">I", 16) + zlib.compress(bomb_body, 9),
        "zlib_nested": b"\x83\x50\x00\x00\x00\x0c" + zlib.compress(b"\x50\x00\x00\x00\x02" + zlib.compress(b"\x61\x01")[:7]),
        "fun_size_lies": b"\x83\x70\xff\xff\xff\xff\x01" + bytes(40),
        "fun_free_vars_claim": b"\x83\x70\x00\x00\x00\x30\x01" + bytes(16) + b"\x00\x00\x00\x00\xff\xff\xff\xff" + bytes(20),
        "ref_len_65535": b"\x83\x5a\xff\xff\x77\x01a" + bytes(16),
        "atom_cache_ref_without_cache": b"\x83\x52\x00",
        "local_ext": b"\x83\x79" + bytes(8),
        "nan_float": b"\x83\x46\x7f\xf8\x00\x00\x00\x00\x00\x00",
        "inf_float_ext": b"\x83\x63" + b"inf".ljust(31, b"\0"),
        "float_ext_garbage": b"\x83\x63" + b"1.0e5x".ljust(31, b"\0"),
        "duplicate_map_keys": b"\x83\x74\x00\x00\x00\x02\x61\x01\x6a\x61\x01\x6a",
        "true_and_one_keys": b"\x83\x74\x00\x00\x00\x02\x77\x04true\x6a\x61\x01\x6a",
        "atom_invalid_utf8": b"\x83\x77\x02\xc3\x28",
        "atom_300_chars": b"\x83\x76\x01\x2c" + b"a" * 300,
        "bit_binary_bits_9": b"\x83\x4d\x00\x00\x00\x01\x09\xff",
        "pid_node_is_integer": b"\x83\x58\x61\x01" + bytes(12),
        "improper_tail_list_chain": b"\x83\x6c\x00\x00\x00\x01\x61\x01\x6c\x00\x00\x00\x01\x61\x02\x61\x03",
        "string_ext_empty": b"\x83\x6b\x00\x00",
        "export_arity_not_small_int": b"\x83\x71\x77\x01m\x77\x01f\x62\x00\x00\x00\x01",
        "budget_empty_lists_64k": empty_lists_frame(1 << 16),
        "hash_flood_map_2000": hash_flood_frame(2000),
    }
    CORPUS.mkdir(exist_ok=True)
    for name, data in cases.items():
        (CORPUS / f"{name}.bin").write_bytes(data)


if __name__ == "__main__":  # pragma: no cover
    write_corpus()
