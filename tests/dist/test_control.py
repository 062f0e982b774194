"""Control messages from an authenticated peer: each shape is checked before
the node acts on it, and a malformed one closes that connection with one log
line, whatever its types (a fuzz over control tuples holds `dispatch` to
"handled, or DecodeError").

The peer here is a raw client that completes a real handshake with our own
`handshake.initiate` and then writes frames no Erlang node would send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.dist.test_etf_fuzz import empty_lists_frame, hash_flood_frame
from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

import beamish
from beamish import Atom, Pid, dist
from beamish.dist import control as C
from beamish.dist import etf, handshake
from beamish.dist import flags as F
from beamish.terms import ImproperList, Term, _make_pid, _make_ref
from beamish.testing import eventually

pytestmark = pytest.mark.interop  # needs an epmd (the system's, or our embedded one)

COOKIE = new_cookie()


def frame(ctrl: tuple[Term, ...], *payload: Term) -> bytes:
    body = b"\x70" + etf.encode(ctrl) + b"".join(etf.encode(p) for p in payload)
    return len(body).to_bytes(4, "big") + body


async def raw_peer() -> tuple[str, handshake.HandshakeResult]:
    """An authenticated connection to this node from a client of our own."""
    name = f"{unique_name('raw')}@{HOST}"
    result = await handshake.initiate(
        str(dist.node()), name=name, cookie=COOKIE, flags=F.ADVERTISED, creation=7, timeout=5
    )
    await eventually(lambda: Atom(name) in dist.nodes(), timeout=5)
    return name, result


@contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """What reaches the loop's exception handler meanwhile ("Task exception
    was never retrieved", an exception in a callback)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(old)


def test_check_accepts_what_erlang_sends_and_names_what_is_wrong() -> None:
    peer = "p@h"
    theirs, ours, ref = _make_pid(peer, 1, 0, 1), _make_pid("me@h", 2, 0, 1), _make_ref(peer, 1, (1, 2, 3))
    C.check((C.LINK, theirs, ours), peer)
    C.check((C.MONITOR_P, theirs, Atom("name"), ref), peer)
    C.check((C.SPAWN_REQUEST, ref, theirs, theirs, (Atom("m"), Atom("f"), 1), []), peer)
    with pytest.raises(ValueError, match="unknown operation 99"):
        C.check((99, theirs), peer)  # erts: invalid_message
    with pytest.raises(ValueError, match="LINK: 4 elements, not 3"):
        C.check((C.LINK, theirs, ours, ours), peer)
    with pytest.raises(ValueError, match="element 1 is not a pid of p@h"):
        C.check((C.LINK, ours, ours), peer)  # a sender that is not the peer's: forged
    with pytest.raises(ValueError, match="element 3 is not a reference"):
        C.check((C.DEMONITOR_P, theirs, ours, [1]), peer)


async def started() -> None:
    ensure_epmd()
    await dist.start(cookie=COOKIE)


MALFORMED: list[tuple[str, Any]] = [
    ("link with a str as the local pid", lambda p, me: frame((C.LINK, p, "x"))),
    ("link from an int", lambda p, me: frame((C.LINK, 42, me))),
    ("exit from a pid of another node", lambda p, me: frame((C.EXIT, _make_pid("x@h", 1, 0, 1), me, Atom("kill")))),
    ("demonitor with a list as the ref", lambda p, me: frame((C.DEMONITOR_P, p, me, [1]))),
    ("spawn request with a bad mfa", lambda p, me: frame((C.SPAWN_REQUEST, _make_ref(str(p.node), 1, (1,)), p, p, 3, []), [])),
    ("reg_send to a list", lambda p, me: frame((C.REG_SEND, p, Atom(""), [1]), Atom("hi"))),
    ("unlink_id with a negative id", lambda p, me: frame((C.UNLINK_ID, -1, p, me))),
    ("an unknown operation", lambda p, me: frame((99, p, me))),
]


@pytest.mark.parametrize(("what", "make"), MALFORMED, ids=[m[0] for m in MALFORMED])
@pytest.mark.beamish(name=f"{unique_name('ctl')}@{HOST}")
async def test_a_malformed_control_message_closes_the_connection_with_one_line(
    what: str, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await started()
    name, peer = await raw_peer()
    conn = dist.kernel().conns[Atom(name)]
    reader = conn.reader
    assert reader is not None
    me = beamish.self()
    beamish.process_flag("trap_exit", True)
    theirs = _make_pid(name, 5, 0, 7)
    caplog.clear()
    try:
        with loop_errors() as errors:
            peer.writer.write(frame((C.SEND_SENDER, theirs, me), Atom("fine")) + make(theirs, me))
            assert await beamish.receive(timeout=5) == "fine"
            await asyncio.wait_for(peer.reader.read(), 5)  # until the node closes it
            await eventually(reader.done, timeout=5)
    finally:
        peer.writer.close()
    assert reader.exception() is None and errors == []
    lines = [r for r in caplog.records if r.name == "beamish.dist"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.ERROR and "malformed" in lines[0].getMessage() and name in lines[0].getMessage()
    assert beamish.is_alive(me) and Atom(name) not in dist.nodes()


HOSTILE_PAYLOADS = {"hash flood": hash_flood_frame(2000), "empty lists": empty_lists_frame(1 << 16)}


@pytest.mark.parametrize("payload", list(HOSTILE_PAYLOADS.values()), ids=list(HOSTILE_PAYLOADS))
@pytest.mark.beamish(name=f"{unique_name('bound')}@{HOST}")
async def test_a_payload_over_the_decode_bounds_closes_that_connection_only(
    payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await started()
    name, peer = await raw_peer()
    other, bystander = await raw_peer()
    reader = dist.kernel().conns[Atom(name)].reader
    assert reader is not None
    me = beamish.self()
    caplog.clear()
    try:
        body = b"\x70" + etf.encode((C.SEND_SENDER, _make_pid(name, 5, 0, 7), me)) + payload
        peer.writer.write(len(body).to_bytes(4, "big") + body)
        await asyncio.wait_for(peer.reader.read(), 5)  # until the node closes it
        await eventually(reader.done, timeout=5)
        bystander.writer.write(frame((C.SEND_SENDER, _make_pid(other, 5, 0, 7), me), Atom("still here")))
        assert await beamish.receive(timeout=5) == "still here"
    finally:
        peer.writer.close()
        bystander.writer.close()
    lines = [r for r in caplog.records if r.name == "beamish.dist"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert lines[0].levelno == logging.ERROR and name in message and "malformed frame" in message
    assert ("share one hash" in message) or ("builds more than" in message)
    assert Atom(name) not in dist.nodes() and Atom(other) in dist.nodes()


# --- fuzz: random control tuples, well and badly typed ----------------------


def values(peer: str, local: list[Pid]) -> st.SearchStrategy[Term]:
    atoms = st.sampled_from([Atom(""), Atom("ok"), Atom("kill"), Atom("normal"), Atom("link"), Atom("monitor"), Atom("rex")])
    pids = st.sampled_from([*local, _make_pid(peer, 3, 0, 7), _make_pid(peer, 4, 1, 7), _make_pid("other@h", 1, 0, 1)])
    refs = st.sampled_from([_make_ref(peer, 7, (1, 2, 3)), _make_ref(str(local[0].node), 1, (9, 9, 9))])
    scalars = st.one_of(
        atoms, pids, refs, st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5),
        st.binary(max_size=5), st.none(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.lists(inner, max_size=3).map(tuple),
            st.tuples(atoms, atoms, st.integers(0, 3)),
            st.builds(ImproperList, st.lists(inner, min_size=1, max_size=2), atoms),
        ),
        max_leaves=6,
    )


@pytest.mark.beamish(name=f"{unique_name('fuzz')}@{HOST}")
async def test_fuzzed_control_tuples_are_handled_or_refused_never_raise_else() -> None:
    await started()
    name, peer = await raw_peer()
    conn = dist.kernel().conns[Atom(name)]
    # Processes the fuzz may link, monitor, kill or send to (never the test's own).
    local = [beamish.spawn(lambda: beamish.receive()) for _ in range(3)]
    value = values(name, local)
    ops = st.one_of(st.sampled_from(sorted(C._SHAPES)), st.integers(-1, 40))

    @st.composite
    def ctrls(draw: st.DrawFn) -> tuple[tuple[Term, ...], Term]:
        op = draw(ops)
        shape = C._SHAPES.get(op)
        size = len(shape) if shape is not None and draw(st.booleans()) else draw(st.integers(0, 6))
        return (op, *draw(st.lists(value, min_size=size, max_size=size))), draw(value)

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(ctrls())
    def dispatch(case: tuple[tuple[Term, ...], Term]) -> None:
        ctrl, payload = case
        data = b"\x70" + etf.encode(ctrl) + (etf.encode(payload) if ctrl[0] in C.WITH_PAYLOAD else b"")
        try:
            conn.dispatch(data)
        except etf.DecodeError:
            pass

    try:
        with loop_errors() as errors:
            dispatch()
            # What the accepted ones set in motion (exits, DOWNs, spawns) runs now.
            for _ in range(10):
                await asyncio.sleep(0)
    finally:
        peer.writer.close()
    assert errors == []
    assert beamish.is_alive(beamish.self())
