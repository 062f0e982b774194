"""The ETF codec against real Erlang, both ways, in two `erl` runs.

1. A distributed Erlang node makes a batch of terms (big integers, floats,
   unicode atoms, maps large and small, improper lists, bitstrings, its own
   pids, refs and ports, funs, compressed terms) and prints each encoding.
2. We decode every one and re-encode it (it must match Erlang's OTP 26+
   encoding byte for byte where one exists), and encode a batch of our own
   terms, including the str/bytes scheme between beamish peers.
3. A second Erlang run checks `binary_to_term(Ours) =:= Original` for each,
   and re-encodes our terms so we can check what Erlang understood.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.interop.erlang import erl_eval, unique_name

from beamish import Atom
from beamish.dist import etf
from beamish.terms import ImproperList
from beamish.dist.etf import BitBinary, ExportFun
from beamish.terms import Term, _make_pid, _make_port, _make_ref

pytestmark = [pytest.mark.interop, pytest.mark.usefixtures("etf_impl")]  # both codecs (conftest.py)

ERLANG_TERMS = r"""
Self = self(),
Other = spawn(fun() -> ok end),
Y = 5,
[Port | _] = erlang:ports(),
Deep = lists:foldl(fun(_, A) -> {A} end, x, lists:seq(1, 100)),
Cases = [
  {small_ints, [0, 1, 255, 256, -1]},
  {int32, [2147483647, -2147483648, 2147483648, -2147483649]},
  {bigs, [1 bsl 64, -(1 bsl 200), 1 bsl 2100, -(1 bsl 2100) + 7]},
  {floats, [0.0, -0.0, 1.0e308, 5.0e-324, 3.141592653589793, -2.5]},
  {atoms, ['', ok, 'with space', 'héllo', '日本語', list_to_atom(lists:duplicate(255, $a)),
           list_to_atom(lists:duplicate(255, 16#65E5))]},
  {special_atoms, [true, false, nil, undefined]},
  {binaries, [<<>>, <<"abc">>, <<0, 255>>, binary:copy(<<"x">>, 100000)]},
  {bitstrings, [<<1:1>>, <<255, 3:7>>, <<0:3>>]},
  {lists, [[], "abc", [1, 2 | 3], [a | b], [[]], lists:seq(1, 300), [1.5, <<"x">>], "日本", [-1]]},
  {tuples, [{}, {a}, list_to_tuple(lists:seq(1, 300))]},
  {maps, [#{}, #{a => 1}, #{[1] => 2, #{x => y} => z, {1, [2]} => 3},
          maps:from_list([{N, N * N} || N <- lists:seq(1, 40)])]},
  {colliding_map, #{1 => a, 1.0 => b}},
  {pids, [Self, Other]},
  {refs, [make_ref(), alias()]},
  {ports, [Port]},
  {funs, [fun(X) -> X + 1 end, fun(X) -> X + Y end, fun lists:map/2]},
  {deep, Deep},
  {gen_call, {'$gen_call', {Self, [alias | make_ref()]}, {get, <<"key">>, 42}}}
],
Hex = fun(B) -> binary:encode_hex(B) end,
lists:foreach(fun({Name, T}) ->
    io:format("CASE ~s ~s ~s~n", [Name, Hex(term_to_binary(T)), Hex(term_to_binary(T, [{minor_version, 2}]))])
  end, Cases),
Compressed = [{zlist, lists:seq(1, 1000)}, {zmap, #{a => binary:copy(<<"x">>, 5000)}}],
lists:foreach(fun({Name, T}) ->
    io:format("ZCASE ~s ~s~n", [Name, Hex(term_to_binary(T, [compressed]))])
  end, Compressed),
halt().
"""

CHECK = r"""
{ok, Cases} = file:consult("%s"),
Hex = fun(B) -> binary:encode_hex(B) end,
Dec = fun(H) -> binary_to_term(binary:decode_hex(H)) end,
lists:foreach(fun({Name, Original, Ours}) ->
    Verdict = try Dec(Ours) =:= Dec(Original) of true -> ok; false -> mismatch
              catch _:E -> {crash, E} end,
    io:format("CHECK ~s ~p ~s~n", [Name, Verdict,
        try Hex(term_to_binary(Dec(Ours), [{minor_version, 2}])) catch _:_ -> <<"-">> end])
  end, Cases),
halt().
"""


def python_terms() -> dict[str, tuple[Term, Term]]:
    """Name -> (the value as Erlang should see it, the value we encode)."""
    pid = _make_pid("py@127.0.0.1", 7, 1, 42)
    ref = _make_ref("py@127.0.0.1", 42, (1, 2, 3))
    simple: dict[str, Term] = {
        "py_scalars": (Atom("ok"), True, False, None, Atom("undefined"), -(1 << 100), 0.1, Atom("é日")),
        "py_containers": ([1, [2, [3]]], ImproperList([Atom("a")], Atom("b")), {Atom("k"): (1, 2), 3: [b"v"]}),
        "py_bits": (BitBinary(b"\xa0", 3), b"", b"\x00\xff"),
        "py_identities": (pid, ref, _make_port("py@127.0.0.1", 1 << 40, 42), ExportFun(Atom("lists"), Atom("map"), 2)),
        "py_large": (list(range(70000)), tuple(range(300)), {n: n for n in range(100)}),
    }
    out = {name: (value, value) for name, value in simple.items()}
    # Between beamish peers str travels as BINARY and bytes as a whole-byte
    # BIT_BINARY: Erlang must read both as plain binaries.
    out["peer_str_bytes"] = ((b"text", b"raw", b"", [b"\xff", "é".encode()]), ("text", b"raw", b"", [b"\xff", "é"]))
    return out


def test_codec_agrees_with_real_erlang(tmp_path: Path) -> None:
    out = erl_eval(ERLANG_TERMS, name=unique_name("etf_gen"))
    cases: dict[str, tuple[bytes, bytes | None]] = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "CASE":
            cases[parts[1]] = (bytes.fromhex(parts[2]), bytes.fromhex(parts[3]))
        elif parts and parts[0] == "ZCASE":
            cases[parts[1]] = (bytes.fromhex(parts[2]), None)
    assert len(cases) == 20, out
    # Keys that Erlang tells apart but a Python dict cannot: refused, not merged.
    with pytest.raises(etf.DecodeError, match="equals another key"):
        etf.decode(cases.pop("colliding_map")[0])

    problems: list[str] = []
    to_check: list[tuple[str, bytes, bytes]] = []
    decoded: dict[str, Term] = {}
    for name, (original, v2) in cases.items():
        term = etf.decode(original)
        decoded[name] = term
        ours = etf.encode(term)
        # A closure keeps the bytes it came with (Erlang's choice of atom tags
        # included), so only Erlang's =:= below can judge it.
        if v2 is not None and name != "funs":
            if etf.decode(v2) != term:
                problems.append(f"{name}: the minor_version 2 encoding decodes differently")
            if ours != v2:
                problems.append(f"{name}: re-encoding differs from Erlang's:\n  {ours.hex()}\n  {v2.hex()}")
        to_check.append((name, original, ours))
    assert decoded["special_atoms"] == [True, False, None, Atom("undefined")]
    assert decoded["funs"][2] == ExportFun(Atom("lists"), Atom("map"), 2)
    assert isinstance(decoded["funs"][1], etf.Fun) and decoded["funs"][1].free_vars
    assert decoded["zlist"] == list(range(1, 1001))
    assert decoded["bitstrings"] == [BitBinary(b"\x80", 1), BitBinary(b"\xff\x06", 7), BitBinary(b"\x00", 3)]

    mine = python_terms()
    for name, (as_erlang, value) in mine.items():
        peer = name.startswith("peer")
        to_check.append((name, etf.encode(as_erlang), etf.encode(value, beamish_peer=peer)))
        to_check.append((name + "_z", etf.encode(as_erlang), etf.encode(value, beamish_peer=peer, compress=6, compress_threshold=0)))

    consult = tmp_path / "cases.eterm"
    consult.write_text(
        "".join(f'{{"{name}", <<"{orig.hex()}">>, <<"{ours.hex()}">>}}.\n' for name, orig, ours in to_check)
    )
    verdicts = erl_eval(CHECK % consult)
    seen = 0
    for line in verdicts.splitlines():
        parts = line.split()
        if not parts or parts[0] != "CHECK":
            continue
        seen += 1
        name, verdict, reencoded = parts[1], parts[2], parts[3]
        if verdict != "ok":
            problems.append(f"{name}: Erlang says {verdict}")
            continue
        base = name.removesuffix("_z")
        if base in mine:
            as_erlang, value = mine[base]
            back = etf.decode(bytes.fromhex(reencoded), beamish_peer=False)
            if back != etf.decode(etf.encode(as_erlang)):
                problems.append(f"{name}: Erlang re-encoded something else: {back!r}")
    assert seen == len(to_check), verdicts
    assert not problems, "\n".join(problems)
