"""Terms: atoms are interned strings; pids, refs and ports have no public
constructor and compare by every field Erlang's wire format carries."""

from __future__ import annotations

import pickle

import pytest

import beamish
from beamish import Atom, Pid, Ref
from beamish.terms import Port, _make_pid, _make_port, _make_ref


def test_atoms_are_interned_and_equal_to_their_text() -> None:
    ok = Atom("ok")
    assert ok is Atom("ok") and ok == "ok" and hash(ok) == hash("ok")
    by_text: dict[str, int] = {ok: 1}
    assert {"ok": 1}[ok] == 1 and by_text["ok"] == 1
    assert repr(ok) == "Atom('ok')" and str(ok) == "ok"
    assert pickle.loads(pickle.dumps(ok)) is ok
    match (ok, 1):
        case ("ok", n):
            assert n == 1
        case _:
            pytest.fail("an Atom must match its text in a match statement")


def test_atoms_are_at_most_255_characters() -> None:
    assert len(Atom("a" * 255)) == 255
    with pytest.raises(ValueError, match="atom too long"):
        Atom("a" * 256)


def test_pids_refs_and_ports_cannot_be_forged_by_calling_the_class() -> None:
    forge: list[type] = [Pid, Ref, Port]
    for cls in forge:
        with pytest.raises(TypeError):
            cls(Atom("node@host"), 1, 2, 3)


def test_pids_compare_on_node_id_serial_and_creation() -> None:
    a = _make_pid("n@h", 1, 0, 7)
    assert a == _make_pid("n@h", 1, 0, 7) and hash(a) == hash(_make_pid("n@h", 1, 0, 7))
    for other in (_make_pid("m@h", 1, 0, 7), _make_pid("n@h", 2, 0, 7), _make_pid("n@h", 1, 1, 7), _make_pid("n@h", 1, 0, 8)):
        assert a != other
    assert a.node is Atom("n@h")
    assert pickle.loads(pickle.dumps(a)) == a
    assert sorted([_make_pid("n@h", 2, 0, 7), a]) == [a, _make_pid("n@h", 2, 0, 7)]


def test_refs_and_ports_compare_on_every_field() -> None:
    r = _make_ref("n@h", 3, (1, 2, 3))
    assert r == _make_ref("n@h", 3, (1, 2, 3)) and r != _make_ref("n@h", 4, (1, 2, 3))
    assert r != _make_ref("n@h", 3, (1, 2, 4)) and pickle.loads(pickle.dumps(r)) == r
    p = _make_port("n@h", 9, 1)
    assert p == _make_port("n@h", 9, 1) and p != _make_port("n@h", 9, 2)
    assert len({p, _make_port("n@h", 9, 1)}) == 1


async def test_refs_made_by_a_node_are_unique_and_carry_its_name() -> None:
    refs = {beamish.make_ref() for _ in range(10_000)}
    assert len(refs) == 10_000
    me = beamish.self()
    assert all(r.node == me.node and r.creation == me.creation for r in refs)
