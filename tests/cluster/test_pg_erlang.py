"""beamish's pg against OTP 25's pg on a real Erlang node: joins and leaves
both ways, exits, kills, a killed node, a disconnect and a reconnect, and
malformed messages. After each, both sides agree, and the Erlang scope
never crashes: its pid is the same at the end, and its node printed no
error (its logger prints to the node's stdout, which the last test reads).

One Erlang node (`-kernel start_pg true`) serves the module; each test
starts its own beamish node and uses groups of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from tests.interop.erlang import HOST, ErlNode, erl_node, require, unique_name

import beamish
from beamish import Atom, Pid, dist
from beamish.cluster import pg
from beamish.dist import rpc
from beamish.terms import Term
from beamish.testing import eventually

pytestmark = pytest.mark.interop

PG_ARGS = ("-kernel", "start_pg", "true")


@pytest.fixture(scope="module")
def erl() -> Iterator[ErlNode]:
    require("erl")
    with erl_node("erlpg", extra=PG_ARGS) as node:
        yield node


_first_scope: dict[str, Term] = {}


def py_name() -> str:
    return f"{unique_name('py')}@{HOST}"


async def erl_do(node: str, code: str) -> Term:
    """Evaluate Erlang `code` (expressions ending in a value) on `node`."""
    ok, tokens, _ = await rpc.call(node, "erl_scan", "string", [[ord(c) for c in code]], timeout=10)
    assert ok == "ok", tokens
    ok, exprs = await rpc.call(node, "erl_parse", "parse_exprs", [tokens], timeout=10)
    assert ok == "ok", exprs
    value, result, _ = await rpc.call(node, "erl_eval", "exprs", [exprs, []], timeout=10)
    assert value == "value"
    return result


async def setup(erl: ErlNode, scope: str = "pg") -> None:
    await dist.start(cookie=erl.cookie)
    await pg.start_link(scope)
    assert await dist.ping(erl.name) == "pong"
    scope_pid = await erl_do(erl.name, f"whereis({scope}).")
    assert isinstance(scope_pid, Pid)
    _first_scope.setdefault(scope, scope_pid)


async def erl_members(erl: ErlNode, group: str, scope: str = "pg") -> list[Term]:
    members = await erl_do(erl.name, f"pg:get_members({scope}, {group}).")
    assert isinstance(members, list)
    return sorted(members, key=repr)


async def erl_is(erl: ErlNode, group: str, expected: list[Pid], scope: str = "pg") -> bool:
    """Whether the Erlang node's members of `group` are `expected` (in any order)."""
    return await erl_members(erl, group, scope) == sorted(expected, key=repr)


async def erl_member(erl: ErlNode, group: str, scope: str = "pg") -> Pid:
    """An Erlang process, joined to `group`, that lives until told `stop`."""
    pid = await erl_do(
        erl.name,
        f"P = spawn(fun() -> receive stop -> ok end end), ok = pg:join({scope}, {group}, P), P.",
    )
    assert isinstance(pid, Pid)
    return pid


@pytest.mark.beamish(name=py_name())
async def test_a_beamish_member_shows_on_erlang_and_an_erlang_member_on_beamish(erl: ErlNode) -> None:
    await setup(erl)
    me = beamish.self()
    await pg.join("chat", me)
    await pg.join("chat", me)  # twice: listed twice on both sides
    await eventually(lambda: erl_is(erl, '<<"chat">>', [me, me]), timeout=5)
    theirs = await erl_member(erl, "{room, 1}")
    await eventually(lambda: pg.get_members((Atom("room"), 1)) == [theirs], timeout=5)
    # A binary group from Erlang is the group of the str it decodes to.
    other = await erl_member(erl, '<<"chat">>')
    await eventually(lambda: sorted(pg.get_members("chat"), key=repr) == sorted([me, me, other], key=repr), timeout=5)
    assert pg.get_local_members("chat") == [me, me]
    assert (Atom("room"), 1) in pg.which_groups()

    assert await pg.leave("chat", me) == "ok"
    await eventually(lambda: erl_is(erl, '<<"chat">>', [me, other]), timeout=5)
    assert await pg.leave("chat", [me]) == "ok"
    assert await pg.leave("chat", me) == "not_joined"
    await eventually(lambda: erl_is(erl, '<<"chat">>', [other]), timeout=5)

    await erl_do(erl.name, f"exit(list_to_pid(\"{_pid_text(theirs)}\"), kill), ok.")
    await eventually(lambda: pg.get_members((Atom("room"), 1)) == [], timeout=5)
    await erl_do(erl.name, f"pg:leave(<<\"chat\">>, list_to_pid(\"{_pid_text(other)}\")).")
    await eventually(lambda: pg.get_members("chat") == [], timeout=5)
    assert await erl_members(erl, '<<"chat">>') == []


@pytest.mark.beamish(name=py_name())
async def test_a_beamish_member_that_exits_leaves_on_erlang(erl: ErlNode) -> None:
    await setup(erl)

    async def member() -> None:
        await pg.join(Atom("exiting"), beamish.self())
        await beamish.receive()

    pid = beamish.spawn(member)
    await eventually(lambda: erl_is(erl, "exiting", [pid]), timeout=5)
    beamish.exit(pid, "kill")
    await eventually(lambda: erl_is(erl, "exiting", []), timeout=5)
    assert pg.get_members(Atom("exiting")) == []


@pytest.mark.beamish(name=py_name())
async def test_a_disconnect_removes_both_sides_members_and_a_reconnect_restores_them(erl: ErlNode) -> None:
    await setup(erl)
    me = beamish.self()
    await pg.join("flaky", me)
    theirs = await erl_member(erl, '<<"flaky">>')
    await eventually(lambda: len(pg.get_members("flaky")) == 2, timeout=5)
    await eventually(lambda: erl_is(erl, '<<"flaky">>', [me, theirs]), timeout=5)

    # From the Erlang side, as erlang:disconnect_node/1 (after the rpc's reply).
    await erl_do(erl.name, f"spawn(fun() -> timer:sleep(50), erlang:disconnect_node('{dist.node()}') end), ok.")
    await eventually(lambda: pg.get_members("flaky") == [me], timeout=5)
    assert await dist.ping(erl.name) == "pong"
    await eventually(lambda: len(pg.get_members("flaky")) == 2, timeout=5)
    await eventually(lambda: erl_is(erl, '<<"flaky">>', [me, theirs]), timeout=5)

    # From ours, and while disconnected Erlang must have dropped us.
    dist.disconnect(erl.name)
    await eventually(lambda: pg.get_members("flaky") == [me], timeout=5)
    out = await erl_do(erl.name, "ok.")  # reconnects
    assert out == "ok"
    await eventually(lambda: len(pg.get_members("flaky")) == 2, timeout=5)
    await eventually(lambda: erl_is(erl, '<<"flaky">>', [me, theirs]), timeout=5)


@pytest.mark.beamish(name=py_name())
async def test_a_named_scope_started_by_pg_start_on_erlang(erl: ErlNode) -> None:
    await dist.start(cookie=erl.cookie)
    assert await dist.ping(erl.name) == "pong"
    scope_pid = await erl_do(erl.name, "case pg:start(beamish_scope) of {ok, P} -> P; {error, {already_started, P}} -> P end.")
    _first_scope.setdefault("beamish_scope", scope_pid)
    await pg.start_link("beamish_scope")  # discovers the Erlang scope already up
    me = beamish.self()
    await pg.join(Atom("jobs"), me, scope="beamish_scope")
    theirs = await erl_member(erl, "jobs", scope="beamish_scope")
    await eventually(lambda: len(pg.get_members(Atom("jobs"), scope="beamish_scope")) == 2, timeout=5)
    await eventually(lambda: erl_is(erl, "jobs", [me, theirs], "beamish_scope"), timeout=5)
    assert pg.get_members(Atom("jobs")) == []  # the default scope is another overlay


@pytest.mark.beamish(name=py_name())
async def test_monitor_scope_sees_erlang_joins_and_leaves(erl: ErlNode) -> None:
    await setup(erl)
    ref, groups = await pg.monitor_scope()
    assert isinstance(groups, dict)
    theirs = await erl_member(erl, "watched")
    msg = await beamish.receive(lambda m: type(m) is tuple and m[0] == ref, timeout=5)
    assert msg == (ref, "join", Atom("watched"), [theirs])
    await erl_do(erl.name, f"list_to_pid(\"{_pid_text(theirs)}\") ! stop, ok.")
    msg = await beamish.receive(lambda m: type(m) is tuple and m[0] == ref, timeout=5)
    assert msg == (ref, "leave", Atom("watched"), [theirs])
    assert await pg.demonitor(ref) == "ok"


@pytest.mark.beamish(name=py_name())
async def test_malformed_messages_from_erlang_never_crash_our_scope(erl: ErlNode, caplog: pytest.LogCaptureFixture) -> None:
    await setup(erl)
    ours = beamish.whereis("pg")
    me = dist.node()
    await erl_do(
        erl.name,
        f"D = {{pg, '{me}'}},"
        "D ! {join, foo}, D ! {join, self(), g, [not_a_pid]}, D ! {leave, self(), self(), [never_joined]},"
        "D ! {'$gen_cast', {sync, self(), [{g, nope}]}}, D ! {discover, 42}, D ! hello,"
        "D ! {leave, whereis(pg), self(), [never_joined]},"  # pg would crash on this one (badkey)
        "gen_server:cast(D, {sync, self(), oops}), ok.",
    )
    await eventually(lambda: sum("pg scope" in r.getMessage() for r in caplog.records) >= 6, timeout=5)
    assert beamish.whereis("pg") == ours
    assert all("\n" not in r.getMessage() for r in caplog.records)
    await pg.join("still", beamish.self())
    await eventually(lambda: erl_is(erl, '<<"still">>', [beamish.self()]), timeout=5)


@pytest.mark.beamish(name=py_name())
async def test_the_erlang_node_killed_takes_its_members_away() -> None:
    require("erl")
    with erl_node("erlpgkill", extra=PG_ARGS) as doomed:
        await dist.start(cookie=doomed.cookie)
        await pg.start_link()
        assert await dist.ping(doomed.name) == "pong"
        theirs = await erl_member(doomed, "doomed")
        await eventually(lambda: pg.get_members(Atom("doomed")) == [theirs], timeout=5)
        doomed.proc.kill()  # SIGKILL: no goodbye on the wire
        doomed.proc.wait(timeout=10)
        await eventually(lambda: pg.get_members(Atom("doomed")) == [], timeout=5)
        assert pg.which_groups() == []


@pytest.mark.beamish(name=py_name())
async def test_zz_the_erlang_scopes_never_crashed(erl: ErlNode) -> None:
    # Last in the module: the scopes the tests above met are the ones still there.
    await dist.start(cookie=erl.cookie)
    for scope, first in _first_scope.items():
        assert await erl_do(erl.name, f"whereis({scope}).") == first, scope
    assert erl.proc.stdout is not None
    fd = erl.proc.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        printed = (os.read(fd, 1 << 20) or b"").decode(errors="replace")
    except BlockingIOError:
        printed = ""
    for sign in ("CRASH", "crash", "ERROR", "error", "terminating", "badarg", "badkey"):
        assert sign not in printed, printed


def _pid_text(pid: Pid) -> str:
    # list_to_pid/1 reads the local form <0.Id.Serial>; the Erlang node names
    # its own processes with 0 there.
    return f"<0.{pid.id}.{pid.serial}>"
