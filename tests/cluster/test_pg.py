"""beamish.cluster.pg on one node, then on three beamish nodes in one loop,
then random join/leave/kill sequences on two nodes against a model."""

from __future__ import annotations

import functools
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.cluster.nodes import Cluster, run_cluster, until

import beamish
from beamish import Atom, BadArg, Pid, Supervisor
from beamish.cluster import pg
from beamish.terms import Term
from beamish.testing import assert_receive, eventually, refute_receive


async def sleeper() -> None:
    await beamish.receive()


# --- one node ------------------------------------------------------------------


@pytest.mark.beamish
async def test_join_leave_and_reads() -> None:
    await pg.start_link()
    me = beamish.self()
    a, b = beamish.spawn(sleeper), beamish.spawn(sleeper)
    assert pg.get_members("g") == []
    await pg.join("g", me)
    await pg.join("g", [a, b])
    await pg.join("g", me)
    assert pg.get_members("g") == [me, a, b, me]  # newest first, a member per join
    assert pg.get_local_members("g") == [me, a, b, me]
    assert await pg.leave("g", me) == "ok"
    assert pg.get_members("g") == [a, b, me]
    assert await pg.leave("g", [a, b]) == "ok"
    assert await pg.leave("g", a) == "not_joined"
    assert await pg.leave("other", me) == "not_joined"
    assert pg.which_groups() == ["g"]
    assert await pg.leave("g", me) == "ok"
    assert pg.which_groups() == [] and pg.which_local_groups() == []
    assert pg.get_members("g", scope="nowhere") == []


@pytest.mark.beamish
async def test_groups_are_erlang_terms() -> None:
    await pg.start_link()
    me = beamish.self()
    await pg.join(Atom("room"), me)
    await pg.join(("room", Atom("lobby"), 1), me)
    await pg.join(1, me)
    assert pg.get_members("room") == []  # an atom is not the binary of its name
    assert pg.get_members(Atom("room")) == [me]
    assert pg.get_members(("room", Atom("lobby"), 1)) == [me]
    assert pg.get_members(("room", "lobby", 1)) == []
    assert pg.get_members(True) == [] and pg.get_members(1.0) == []  # Erlang tells these from 1
    await pg.join("bin", me)
    assert pg.get_members(b"bin") == [me]  # a binary from Erlang is the str it decodes to
    await pg.join([1, 2], me)
    assert pg.get_members([1, 2]) == [me]
    assert sorted(map(repr, pg.which_groups())) == sorted(map(repr, [Atom("room"), ("room", Atom("lobby"), 1), 1, "bin", [1, 2]]))


@pytest.mark.beamish
async def test_only_local_pids_join() -> None:
    await pg.start_link()
    with pytest.raises(BadArg):
        await pg.join("g", "not a pid")  # type: ignore[arg-type]
    with pytest.raises(BadArg):
        await pg.join("g", [beamish.self(), 42])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        await pg.join({1, 2}, beamish.self())  # not a term: no key, and no silent failure


@pytest.mark.beamish
async def test_a_member_that_exits_leaves_every_group() -> None:
    await pg.start_link()
    pid = beamish.spawn(sleeper)
    await pg.join("a", pid)
    await pg.join("b", pid)
    await pg.join("a", pid)
    beamish.exit(pid, "kill")
    await eventually(lambda: pg.which_groups() == [])


@pytest.mark.beamish
async def test_named_scopes_are_separate_and_supervised() -> None:
    sup = await Supervisor.start_link([pg.child_spec(), pg.child_spec("other")])
    await pg.join("g", beamish.self(), scope="other")
    assert pg.get_members("g") == []
    assert pg.get_members("g", scope="other") == [beamish.self()]
    before = beamish.whereis("other")
    beamish.exit(before, "kill")  # type: ignore[arg-type]
    await eventually(lambda: beamish.whereis("other") not in (None, before))
    assert pg.get_members("g", scope="other") == []  # a restarted scope starts empty, as pg's ETS table
    await Supervisor.stop(sup)


@pytest.mark.beamish
async def test_monitor_scope_and_monitor_group() -> None:
    await pg.start_link()
    me = beamish.self()
    a = beamish.spawn(sleeper)
    await pg.join("g", a)
    sref, groups = await pg.monitor_scope()
    assert groups == {"g": [a]}
    gref, members = await pg.monitor("h")
    assert members == []
    await pg.join("h", me)
    await assert_receive((sref, "join", "h", [me]))
    await assert_receive((gref, "join", "h", [me]))
    await pg.join("g", me)
    await assert_receive((sref, "join", "g", [me]))
    await refute_receive((gref, beamish.testing.ANY, "g", beamish.testing.ANY), timeout=0.01)
    beamish.exit(a, "kill")
    await assert_receive((sref, "leave", "g", [a]))
    await pg.leave("h", me)  # leaves a message for each monitor...
    assert await pg.demonitor(gref) == "ok"  # ...which demonitor flushes
    await refute_receive((gref, beamish.testing.ANY, beamish.testing.ANY, beamish.testing.ANY), timeout=0.01)
    assert await pg.demonitor(gref) is False
    assert await pg.demonitor(sref) == "ok"


@pytest.mark.beamish
async def test_malformed_messages_are_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    scope = await pg.start_link()
    bad: Term
    for bad in ["x", ("join",), ("join", 1, 2, 3), ("leave", beamish.self(), 1, []), ("discover", "me"),
                ("$gen_cast", ("sync", beamish.self(), "x")), ("$gen_cast", "x"), ("join\n forged", 1)]:
        beamish.send(scope, bad)
    with caplog.at_level(logging.WARNING, "beamish.cluster"):
        await eventually(lambda: len(caplog.records) >= 7)
    assert all("\n" not in r.getMessage() for r in caplog.records)
    await pg.join("g", beamish.self())
    assert beamish.whereis("pg") == scope and pg.get_members("g") == [beamish.self()]


# --- three nodes ---------------------------------------------------------------


def on_all(c: Cluster, group: Term, expected: list[Pid]) -> object:
    async def check() -> bool:
        for i in range(len(c.nodes)):
            got = await c.on(i, lambda: pg.get_members(group))
            if sorted(got, key=repr) != sorted(expected, key=repr):
                return False
        return True

    return check


def test_three_nodes_see_each_others_members() -> None:
    async def body(c: Cluster) -> None:
        for i in range(3):
            await c.on(i, pg.start_link)
        m0 = await c.on(0, lambda: beamish.spawn(sleeper))
        m1 = await c.on(1, lambda: beamish.spawn(sleeper))
        await c.on(0, lambda: pg.join("g", [m0, m0]))
        await c.on(1, lambda: pg.join("g", m1))
        await until(on_all(c, "g", [m0, m0, m1]))  # type: ignore[arg-type]
        assert await c.on(2, lambda: pg.get_local_members("g")) == []
        await c.on(0, lambda: pg.leave("g", m0))
        await until(on_all(c, "g", [m0, m1]))  # type: ignore[arg-type]
        await c.on(0, lambda: beamish.exit(m0, "kill"))
        await until(on_all(c, "g", [m1]))  # type: ignore[arg-type]
        # A node that stops takes its members away everywhere.
        await c.stop_node(1)
        for i in (0, 2):
            await until(functools.partial(c.on, i, lambda: pg.get_members("g") == []))
        # A scope that starts late is discovered (and discovers) on the fly.
        await c.on(0, lambda: pg.start_link("late"))
        me0 = await c.on(0, beamish.self)
        await c.on(0, lambda: pg.join("x", me0, scope="late"))
        await c.on(2, lambda: pg.start_link("late"))
        await until(lambda: c.on(2, lambda: pg.get_members("x", scope="late") == [me0]))

    run_cluster(3, body)


def test_a_forged_join_naming_another_nodes_pid_is_dropped() -> None:
    async def body(c: Cluster) -> None:
        for i in range(2):
            await c.on(i, pg.start_link)
        victim = await c.on(0, beamish.self)
        scope1 = await c.on(1, lambda: beamish.whereis("pg"))
        # From node 1, a join in node 1's scope's name, of a pid of node 0.
        await c.on(1, lambda: beamish.send(("pg", c.names[0]), (Atom("join"), scope1, "g", [victim])))
        real = await c.on(1, lambda: beamish.spawn(sleeper))
        await c.on(1, lambda: pg.join("g", real))
        await until(lambda: c.on(0, lambda: pg.get_members("g") == [real]))

    run_cluster(2, body)


# --- a model -------------------------------------------------------------------

op = st.one_of(
    st.tuples(st.just("join"), st.integers(0, 1), st.integers(0, 2), st.sampled_from(["a", "b"])),
    st.tuples(st.just("leave"), st.integers(0, 1), st.integers(0, 2), st.sampled_from(["a", "b"])),
    st.tuples(st.just("kill"), st.integers(0, 1), st.integers(0, 2), st.just("")),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=12))
def test_two_nodes_agree_with_a_model(ops: list[tuple[str, int, int, str]]) -> None:
    async def body(c: Cluster) -> None:
        for i in range(2):
            await c.on(i, pg.start_link)
        members = [[await c.on(i, lambda: beamish.spawn(sleeper)) for _ in range(3)] for i in range(2)]
        model: dict[str, list[Pid]] = {"a": [], "b": []}
        for kind, i, m, group in ops:
            pid = members[i][m]
            if kind == "join":
                await c.on(i, pg.join, group, pid)
                model[group].append(pid)
            elif kind == "leave":
                answer = await c.on(i, pg.leave, group, pid)
                assert answer == ("ok" if pid in model[group] else "not_joined")
                if pid in model[group]:
                    model[group].remove(pid)
            else:
                await c.on(i, beamish.exit, pid, "kill")
                for g in model:
                    model[g] = [p for p in model[g] if p != pid]
                members[i][m] = await c.on(i, lambda: beamish.spawn(sleeper))
            # The node that acted knows at once (the call and the exit's DOWN are ordered).
            if kind != "kill":
                assert sorted(await c.on(i, pg.get_members, group), key=repr) == sorted(model[group], key=repr)
        for g in model:
            await until(on_all(c, g, model[g]))  # type: ignore[arg-type]
            for i in range(2):
                local = [p for p in model[g] if p.node == c.names[i]]
                assert sorted(await c.on(i, pg.get_local_members, g), key=repr) == sorted(local, key=repr)

    run_cluster(2, body)
