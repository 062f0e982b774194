"""`global` against real Erlang nodes: beamish nodes take part in OTP 25's
global protocol (sync, names, locks, the mesh, conflict resolution)."""

from __future__ import annotations

import asyncio
import functools
import random
from typing import Any

import pytest
from tests.cluster.pynodes import PyNode, cluster, erl, until
from tests.interop.erlang import erl_node, new_cookie

import beamish
from beamish import Atom, GenServer, Reply, dist
from beamish.cluster import global_
from beamish.dist import rpc
from beamish.terms import Pid

pytestmark = pytest.mark.interop


async def forever() -> None:
    await beamish.receive(lambda m: False)


def spawn_forever() -> Pid:
    return beamish.spawn(forever)


class Echo(GenServer):
    def init(self, arg: Any) -> Any:
        return arg

    def handle_call(self, request: Any, from_: Any, state: Any) -> Reply:
        return Reply((state, request), state)


async def nodes_of(py: PyNode) -> set[str]:
    return {str(n) for n in await py.call(dist.nodes)}


async def erl_nodes(py: PyNode, node: str) -> set[str]:
    return {str(n) for n in await erl(py, node, "nodes().")}


def test_sync_returns_and_the_mesh_forms_with_two_erlang_and_two_beamish_nodes() -> None:
    cookie = new_cookie()
    with erl_node("ga", cookie=cookie) as a, erl_node("gb", cookie=cookie) as b:

        async def main() -> None:
            async with cluster(2, cookie) as (p, q):
                # p knows a, q knows b, a knows b; nobody connects p and q or p and b.
                assert await p.do(lambda: dist.ping(a.name)) == "pong"
                assert await q.do(lambda: dist.ping(b.name)) == "pong"
                assert await erl(p, a.name, f"net_adm:ping('{b.name}').") == "pong"
                everyone = {p.name, q.name, a.name, b.name}

                async def meshed() -> bool:
                    for py in (p, q):
                        if await nodes_of(py) != everyone - {py.name}:
                            return False
                    for e in (a, b):
                        if await erl_nodes(p, e.name) != everyone - {e.name}:
                            return False
                    return True

                await until(meshed, 20, "the full mesh")
                # global:sync() returns on each Erlang node, global_.sync() on each beamish one.
                for e in (a, b):
                    assert await erl(p, e.name, "global:sync().", timeout=20) == "ok"
                for py in (p, q):
                    await py.do(global_.sync, timeout=20)

        asyncio.run(main())


def test_names_registered_on_either_side_are_found_on_the_other() -> None:
    cookie = new_cookie()
    with erl_node("gn", cookie=cookie) as a:

        async def main() -> None:
            async with cluster(2, cookie) as (p, q):
                await p.do(lambda: dist.ping(a.name))
                await q.do(lambda: dist.ping(a.name))
                for py in (p, q):
                    await py.do(global_.sync, timeout=20)
                # A beamish GenServer registered as ("global", name), called from Erlang.
                pid = await p.do(lambda: Echo.start(Atom("p_state"), name=("global", Atom("py_echo"))))
                assert await erl(p, a.name, "global:whereis_name(py_echo).") == pid
                assert await erl(q, a.name, "gen_server:call({global, py_echo}, hello).") == (Atom("p_state"), Atom("hello"))
                assert await q.call(lambda: global_.whereis_name(Atom("py_echo"))) == pid
                assert await q.do(lambda: GenServer.call(("global", Atom("py_echo")), "hi")) == (Atom("p_state"), "hi")
                # An Erlang process registered from Erlang, found and messaged from beamish.
                epid = await erl(p, a.name, "L = fun Loop() -> receive {From, M} -> From ! {echo, M}, Loop() end end, P = spawn(L), yes = global:register_name(erl_proc, P), P.")
                await until(lambda: q.call(lambda: global_.whereis_name(Atom("erl_proc")) == epid), 5, "erl_proc on q")

                async def ask() -> Any:
                    assert global_.send(Atom("erl_proc"), (beamish.self(), "ping")) == epid
                    return await beamish.receive(timeout=5)

                assert await q.do(ask) == (Atom("echo"), b"ping")
                assert Atom("erl_proc") in await p.call(global_.registered_names)
                # A name taken is refused everywhere; starting a server under it says who has it.
                assert await q.do(lambda: global_.register_name(Atom("erl_proc"), spawn_forever())) is False
                with pytest.raises(beamish.StartError) as info:
                    await q.do(lambda: Echo.start(None, name=("global", Atom("erl_proc"))))
                assert info.value.reason == (Atom("already_started"), epid)
                # A via-name works as Elixir's {:via, :global, name}.
                vpid = await q.do(lambda: Echo.start(Atom("v"), name=("via", global_, Atom("via_echo"))))
                assert await erl(p, a.name, "global:whereis_name(via_echo).") == vpid
                assert await p.do(lambda: GenServer.call(("via", global_, Atom("via_echo")), 1)) == (Atom("v"), 1)

        asyncio.run(main())


def test_a_name_goes_everywhere_when_its_process_or_its_node_dies() -> None:
    cookie = new_cookie()
    with erl_node("gd", cookie=cookie) as a:

        async def main() -> None:
            with erl_node("gk", cookie=cookie) as k:
                async with cluster(2, cookie) as (p, q):
                    for py in (p, q):
                        await py.do(lambda: dist.ping(a.name))
                    await p.do(lambda: dist.ping(k.name))
                    for py in (p, q):
                        await py.do(global_.sync, timeout=20)
                    pid = await p.call(spawn_forever)
                    assert await p.do(lambda: global_.register_name(Atom("doomed"), pid))
                    await erl(q, k.name, "P = spawn(fun() -> receive after infinity -> ok end end), yes = global:register_name(on_k, P).")
                    await until(lambda: q.call(lambda: global_.whereis_name(Atom("on_k")) is not None), 5, "on_k")
                    assert await erl(q, a.name, "global:whereis_name(doomed).") == pid
                    # The process exits: its name goes on every node.
                    await p.call(lambda: beamish.exit(pid, "kill"))
                    await until(lambda: q.call(lambda: global_.whereis_name(Atom("doomed")) is None), 5, "doomed gone on q")

                    async def gone_on_a() -> bool:
                        return bool(await erl(q, a.name, "global:whereis_name(doomed).") == "undefined")

                    await until(gone_on_a, 5, "doomed gone on a")
                    # k's OS process is killed (kill -9): its names go on every node.
                    k.proc.kill()
                    await until(lambda: q.call(lambda: global_.whereis_name(Atom("on_k")) is None), 15, "on_k gone on q")

                    async def k_gone_on_a() -> bool:
                        return bool(await erl(q, a.name, "global:whereis_name(on_k).") == "undefined")

                    await until(k_gone_on_a, 15, "on_k gone on a")

        asyncio.run(main())


def test_a_beamish_node_that_goes_takes_its_names_off_erlang_nodes() -> None:
    cookie = new_cookie()
    with erl_node("gs", cookie=cookie) as a:

        async def main() -> None:
            async with cluster(2, cookie) as (p, q):
                for py in (p, q):
                    await py.do(lambda: dist.ping(a.name))
                    await py.do(global_.sync, timeout=20)
                pid = await p.call(spawn_forever)
                assert await p.do(lambda: global_.register_name(Atom("on_p"), pid))
                assert await erl(q, a.name, "global:whereis_name(on_p).") == pid
                await p.stop()

                async def gone() -> bool:
                    return bool(await erl(q, a.name, "global:whereis_name(on_p).") == "undefined")

                await until(gone, 15, "on_p gone on a")
                assert await q.call(lambda: global_.whereis_name(Atom("on_p"))) is None

        asyncio.run(main())


def test_global_locks_exclude_each_other_across_erlang_and_beamish() -> None:
    cookie = new_cookie()
    with erl_node("gl", cookie=cookie) as a:

        async def main() -> None:
            async with cluster(1, cookie) as (p,):
                await p.do(lambda: dist.ping(a.name))
                await p.do(global_.sync, timeout=20)
                # Erlang holds {res, ErlHolder} in a global:trans until told to finish.
                holder = await erl(p, a.name, (
                    "Parent = self(), P = spawn(fun() -> global:trans({res, self()}, fun() -> "
                    "receive go -> ok end end) end), P."
                ))

                async def erlang_holds() -> bool:
                    return await erl(p, a.name, f"global:set_lock({{res, x}}, ['{a.name}'], 0).") is False

                await until(erlang_holds, 5, "Erlang's lock")
                assert await p.do(lambda: global_.set_lock((Atom("res"), Atom("me")), retries=0)) is False
                assert await p.do(lambda: global_.trans((Atom("res"), Atom("me")), lambda: 1, retries=0)) == "aborted"
                await p.call(lambda: beamish.send(holder, Atom("go")))
                assert await p.do(lambda: global_.trans((Atom("res"), Atom("me")), lambda: 42, retries=10)) == 42

                # beamish holds it: Erlang's set_lock on both nodes fails until it is released.
                released = asyncio.Event()
                taken = asyncio.Event()

                async def hold() -> int:
                    async def inside() -> int:
                        taken.set()
                        await released.wait()
                        return 7

                    return await global_.trans((Atom("res"), Atom("py")), inside)  # type: ignore[no-any-return]

                holding = asyncio.ensure_future(p.do(hold))
                await taken.wait()
                both = f"['{a.name}', '{p.name}']"
                assert await erl(p, a.name, f"global:set_lock({{res, erl}}, {both}, 0).") is False
                released.set()
                assert await holding == 7
                assert await erl(p, a.name, f"global:set_lock({{res, erl}}, {both}, 0).") is True

        asyncio.run(main())


def test_two_nodes_registering_one_name_at_once_exactly_one_wins() -> None:
    cookie = new_cookie()
    with erl_node("gr", cookie=cookie) as a:

        async def main() -> None:
            async with cluster(3, cookie) as pys:
                for py in pys:
                    await py.do(lambda: dist.ping(a.name))
                for py in pys:
                    await py.do(global_.sync, timeout=20)
                for round_ in range(3):
                    name = Atom(f"race{round_}")
                    pids = [await py.call(spawn_forever) for py in pys]

                    def register(pid: Pid, name: Atom = name) -> Any:
                        return lambda: global_.register_name(name, pid)

                    erl_try = erl(pys[0], a.name, f"global:register_name({name}, spawn(fun() -> receive after infinity -> ok end end)).")
                    results = await asyncio.gather(*(py.do(register(pid)) for py, pid in zip(pys, pids, strict=True)), erl_try)
                    wins = [r for r in results if r is True or r == "yes"]
                    assert len(wins) == 1, results
                    owners: set[Any] = {await py.call(functools.partial(global_.whereis_name, name)) for py in pys}
                    owners.add(await erl(pys[0], a.name, f"global:whereis_name({name})."))
                    assert len(owners) == 1 and None not in owners

        asyncio.run(main())


@pytest.mark.parametrize("method", ["random_exit_name", "random_notify_name", "notify_all_name", "python"])
def test_a_healed_partition_with_a_name_on_both_sides_runs_the_resolve_function(method: str) -> None:
    cookie = new_cookie()
    with erl_node("gp", cookie=cookie) as a:

        async def main() -> None:
            async with cluster(2, cookie) as (p, q):
                for py in (p, q):
                    await py.do(lambda: dist.ping(a.name))
                for py in (p, q):
                    await py.do(global_.sync, timeout=20)

                async def meshed() -> bool:
                    return await nodes_of(p) == {q.name, a.name} and await nodes_of(q) == {p.name, a.name}

                await until(meshed, 10, "the mesh")
                # Split p off (prevent_overlapping_partitions may split a from q too).
                for peer in (q.name, a.name):
                    await p.call(functools.partial(dist.disconnect, peer))

                async def split() -> bool:
                    return not (await nodes_of(p)) and p.name not in await nodes_of(q)

                await until(split, 10, "the partition")
                name = Atom(f"dup_{method}")
                calls: list[tuple[Any, ...]] = []

                def pick_first(n: Any, pid1: Pid, pid2: Pid) -> Pid:
                    calls.append((n, pid1, pid2))
                    return pid1

                resolve: Any = pick_first if method == "python" else method

                async def register_with_reporter() -> Pid:
                    async def body() -> None:
                        msg = await beamish.receive()
                        reports.append((beamish.self(), msg))
                        await forever()

                    pid = beamish.spawn(body)
                    assert await global_.register_name(name, pid, resolve)
                    return pid

                reports: list[tuple[Pid, Any]] = []
                p_pid = await p.do(register_with_reporter)
                q_pid = await q.do(register_with_reporter)
                # Heal.
                assert await p.do(lambda: dist.ping(q.name)) == "pong"
                for py in (p, q):
                    await py.do(global_.sync, timeout=20)
                assert await erl(q, a.name, "global:sync().", timeout=20) == "ok"
                low, high = sorted([p_pid, q_pid], key=lambda pid: str(pid.node))

                async def settled(expected: Any) -> bool:
                    views: list[Any] = [await py.call(lambda: global_.whereis_name(name) or Atom("undefined")) for py in (p, q)]
                    views.append(await erl(q, a.name, f"global:whereis_name({name})."))
                    return all(v == expected for v in views)

                if method == "random_exit_name":
                    await until(lambda: settled(low), 10, "the name on the smaller node's pid")
                    owner = p if high.node == p.name else q
                    assert await owner.call(lambda: beamish.is_alive(high)) is False
                elif method == "random_notify_name":
                    await until(lambda: settled(low), 10, "the name on the smaller node's pid")
                    await until(lambda: asyncio.sleep(0, len(reports) == 1), 5, "the loser notified")
                    assert reports == [(high, (Atom("global_name_conflict"), name))]
                    owner = p if high.node == p.name else q
                    assert await owner.call(lambda: beamish.is_alive(high)) is True
                elif method == "notify_all_name":
                    await until(lambda: settled("undefined"), 10, "the name dropped")
                    await until(lambda: asyncio.sleep(0, len(reports) == 2), 5, "both notified")
                    assert sorted(reports, key=lambda r: str(r[0].node)) == sorted([
                        (p_pid, (Atom("global_name_conflict"), name, q_pid)),
                        (q_pid, (Atom("global_name_conflict"), name, p_pid)),
                    ], key=lambda r: str(r[0].node))
                else:
                    await until(lambda: asyncio.sleep(0, len(calls) == 1), 10, "the Python resolve function")
                    _, pid1, pid2 = calls[0]
                    await until(lambda: settled(pid1), 10, "the name on the pid the function chose")
                    assert {pid1, pid2} == {p_pid, q_pid}

        asyncio.run(main())


def test_pids_sort_as_erlang_sorts_them() -> None:
    """Both lockers of a connection compute one lock id from their two pids,
    sorted: beamish must sort pids exactly as Erlang does."""
    from beamish.dist._global import pid_order

    cookie = new_cookie()
    with erl_node("go", cookie=cookie) as a:

        async def main() -> None:
            async with cluster(1, cookie) as (p,):
                theirs = await erl(p, a.name, "[spawn(fun() -> ok end) || _ <- lists:seq(1, 5)] ++ [self()].")
                ours = await p.call(lambda: [beamish.spawn(forever) for _ in range(5)])
                mixed = list(theirs) + ours
                random.shuffle(mixed)
                assert await p.do(lambda: rpc.call(a.name, "lists", "sort", [mixed])) == sorted(mixed, key=pid_order)

        asyncio.run(main())


def test_malformed_global_messages_never_take_the_server_down() -> None:
    cookie = new_cookie()
    with erl_node("gm", cookie=cookie) as a:

        async def main() -> None:
            async with cluster(1, cookie) as (p,):
                await p.do(lambda: dist.ping(a.name))
                await p.do(global_.sync, timeout=20)
                server = await p.call(lambda: beamish.whereis("global_name_server"))
                gns = f"{{global_name_server, '{p.name}'}}"
                await erl(p, a.name, (
                    f"{gns} ! garbage, {gns} ! {{init_connect, 1, 2, 3}}, "
                    f"gen_server:cast({gns}, {{exchange, x, notalist, y, z}}), "
                    f"gen_server:cast({gns}, {{new_nodes, x, [{{insert, bad}}], [], [not_a_node, {{1, 2}}], []}}), "
                    f"gen_server:cast({gns}, {{resolved, 'n@h', [x], [y], unused, [], tag}}), "
                    f"gen_server:cast({gns}, {{lock_set, self(), true, [], tag}}), "
                    f"gen_server:cast({gns}, {{in_sync, 42, true}}), "
                    f"{gns} ! {{lost_connection, 1, 2, 3, 4}}, ok."
                ))
                # An Erlang string (a list) as a name: registered, found and removed.
                assert await erl(p, a.name, 'global:register_name("a string", spawn(fun() -> receive after infinity -> ok end end)).') == "yes"
                assert await p.call(lambda: global_.whereis_name([ord(c) for c in "a string"])) is not None
                await erl(p, a.name, 'global:unregister_name("a string").')
                assert await p.call(lambda: global_.whereis_name([ord(c) for c in "a string"])) is None
                assert await p.call(lambda: beamish.whereis("global_name_server")) == server
                pid = await p.call(spawn_forever)
                assert await p.do(lambda: global_.register_name(Atom("still_works"), pid))
                assert await erl(p, a.name, "global:whereis_name(still_works).") == pid

        asyncio.run(main())


@pytest.mark.parametrize("pop", [True, False])
def test_prevent_overlapping_partitions_drops_the_lost_node_unless_turned_off(pop: bool) -> None:
    """A loses B: with OTP 25's default, C (connected to both) drops B too;
    turned off, C keeps both (an overlapping partition)."""

    async def main() -> None:
        async with cluster(3, new_cookie(), prevent_overlapping_partitions=pop) as (a, b, c):
            for py in (b, c):
                await py.do(lambda: dist.ping(a.name))

            async def meshed() -> bool:
                return [len(await nodes_of(py)) for py in (a, b, c)] == [2, 2, 2]

            await until(meshed, 10, "the mesh")
            for py in (a, b, c):
                await py.do(global_.sync, timeout=20)
            await a.call(lambda: dist.disconnect(b.name))
            if pop:
                async def dropped() -> bool:
                    return b.name not in await nodes_of(c)

                await until(dropped, 10, "c dropping b")
            else:
                assert await c.do(lambda: dist.ping(b.name)) == "pong"
                assert await nodes_of(c) == {a.name, b.name}

    asyncio.run(main())


def test_a_node_restarted_under_its_name_rejoins_global_without_its_old_names() -> None:
    cookie = new_cookie()
    with erl_node("gz", cookie=cookie) as a:

        async def main() -> None:
            async with cluster(1, cookie) as (p,):
                await p.do(lambda: dist.ping(a.name))
                await p.do(global_.sync, timeout=20)
                pid = await p.call(spawn_forever)
                assert await p.do(lambda: global_.register_name(Atom("old"), pid))
                assert await erl(p, a.name, "global:whereis_name(old).") == pid
                name = p.name
                await p.stop()
                again = PyNode(cookie, name=name)
                await again.start()
                try:
                    await again.do(lambda: dist.ping(a.name))
                    await again.do(global_.sync, timeout=20)
                    assert await erl(again, a.name, "global:sync().") == "ok"
                    assert await erl(again, a.name, "global:whereis_name(old).") == "undefined"
                    assert await again.call(lambda: global_.whereis_name(Atom("old"))) is None
                    fresh = await again.call(spawn_forever)
                    assert await again.do(lambda: global_.register_name(Atom("old"), fresh))
                    assert await erl(again, a.name, "global:whereis_name(old).") == fresh
                finally:
                    await again.stop()

        asyncio.run(main())
