"""Cluster benchmarks (issue 13): pg and PubSub.

Prints `RESULT workload=...` lines:
- `pg_join_leave` (ops/s: `await pg.join` and `await pg.leave` calls on one
  node, each a call to the scope process, as pg's are gen_server calls);
- `pg_join_visible_on_peer` (µs from `pg.join` on one node to a `pg.monitor`
  message on another, two nodes in one loop over loopback; best of rounds);
- `pubsub_local_fanout` (deliveries/s: broadcasts to 1,000 local subscribers);
- `pubsub_remote_broadcast` and `remote_cast_same_pair` (msgs/s from a process on
  node B to one subscriber, or one GenServer, on node A, until the last one
  is handled; the same two nodes in the same run), with the ratio of the two;
- `erlang_pg_remote_broadcast` (msgs/s of the same broadcast, PG2-style over
  pg, between two Erlang nodes: the peer figure), when `erl` is installed.

Run: `python bench/bench_pg.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import beamish
from beamish import Atom, From, GenServer, Node, NoReply, Reply, dist
from beamish.cluster import PubSub, pg
from beamish.terms import Term
from beamish.testing import eventually

QUICK = False


def n(full: int, quick: int) -> int:
    return quick if QUICK else full


def result(name: str, value: float, unit: str, floor: float | None = None) -> None:
    line = f"RESULT workload={name} value={value:.3f} unit={unit}"
    if floor:
        line += f" floor={floor:.3f} ratio={value / floor:.2f}"
    print(line, flush=True)


async def join_leave(count: int) -> float:
    await pg.start_link()
    me = beamish.self()
    for _ in range(100):
        await pg.join("g", me)
        await pg.leave("g", me)
    t0 = time.perf_counter()
    for _ in range(count):
        await pg.join("g", me)
        await pg.leave("g", me)
    return 2 * count / (time.perf_counter() - t0)


async def local_fanout(subscribers: int, messages: int) -> float:
    await PubSub.start_link(name="Bench.PubSub")
    me = beamish.self()

    async def subscriber() -> None:
        PubSub.subscribe("Bench.PubSub", "t")
        beamish.send(me, "ready")
        for _ in range(messages):
            await beamish.receive()
        beamish.send(me, "done")

    for _ in range(subscribers):
        beamish.spawn(subscriber)
    for _ in range(subscribers):
        await beamish.receive(lambda m: m == "ready")
    t0 = time.perf_counter()
    for i in range(messages):
        PubSub.broadcast("Bench.PubSub", "t", i)
    for _ in range(subscribers):
        await beamish.receive(lambda m: m == "done")
    return subscribers * messages / (time.perf_counter() - t0)


class Counter(GenServer):
    """Counts casts and broadcasts; answers a call, or a `("sync", pid)` broadcast."""

    def init(self, topic: Term) -> int:
        if topic is not None:
            PubSub.subscribe("Bench.PubSub", str(topic))
        return 0

    def handle_call(self, request: Term, from_: From, count: int) -> Reply:
        return Reply(count, count)

    def handle_cast(self, request: Term, count: int) -> NoReply:
        return NoReply(count + 1)

    def handle_info(self, msg: Term, count: int) -> NoReply:
        if type(msg) is tuple and msg[0] == "sync":
            beamish.send(msg[1], ("synced", count))
        return NoReply(count + 1)


def two_nodes(rounds: int, messages: int) -> tuple[float, float, float]:
    """(µs to visibility, pubsub msgs/s, remote_cast msgs/s) between two nodes in one loop."""
    cookie = secrets.token_hex(8)
    suffix = secrets.token_hex(3)
    a = Node(f"bench_pg_a_{suffix}@127.0.0.1", lag_threshold=None)
    b = Node(f"bench_pg_b_{suffix}@127.0.0.1", lag_threshold=None)
    out: dict[str, float] = {}
    ready, done = asyncio.Event(), asyncio.Event()
    joins: asyncio.Queue[float] = asyncio.Queue()

    async def node_a() -> None:
        await dist.start(cookie=cookie)
        await pg.start_link()
        await PubSub.start_link(name="Bench.PubSub")
        await Counter.start(None, name="counter")
        await Counter.start("t", name="subscriber")
        me = beamish.self()

        async def watcher() -> None:
            ref, _ = await pg.monitor("visible")
            beamish.send(me, "watching")
            while True:
                msg = await beamish.receive()
                if type(msg) is tuple and msg[0] == ref and msg[1] == "join":
                    joins.put_nowait(time.perf_counter())

        beamish.spawn(watcher)
        await beamish.receive(lambda m: m == "watching")
        ready.set()
        await done.wait()
        await dist.stop()

    async def node_b() -> None:
        await dist.start(cookie=cookie)
        await pg.start_link()
        await PubSub.start_link(name="Bench.PubSub")
        await ready.wait()
        assert await dist.connect(str(a.name))
        # Wait until each side's pg knows the other's PubSub worker.
        worker = Atom("Elixir.Bench.PubSub.Adapter")
        await eventually(lambda: len(pg.get_members(worker, scope="Elixir.Phoenix.PubSub")) == 2, timeout=10)
        me = beamish.self()

        # Visibility: a process on A monitors the group through A's scope.
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            await pg.join("visible", me)
            seen = await joins.get()
            best = min(best, (seen - t0) * 1e6)
            await pg.leave("visible", me)
        out["visible"] = best

        target = (Atom("counter"), a.name)
        await GenServer.call(target, "warm")
        t0 = time.perf_counter()
        for i in range(messages):
            GenServer.cast(target, i)
        await GenServer.call(target, "sync", timeout=None)
        out["cast"] = messages / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        for i in range(messages):
            PubSub.broadcast("Bench.PubSub", "t", i)
        PubSub.broadcast("Bench.PubSub", "t", ("sync", me))
        await beamish.receive(lambda m: type(m) is tuple and m[0] == "synced", None)
        out["pubsub"] = messages / (time.perf_counter() - t0)
        done.set()
        await dist.stop()

    async def both() -> None:
        await asyncio.gather(a.run(node_a), b.run(node_b))

    asyncio.run(both())
    return out["visible"], out["pubsub"], out["cast"]


ERLANG_MODULE = """
-module(bench_pg_erl).
-export([server/0, client/2]).

%% The subscriber: counts messages, answers {sync, From}.
server() ->
    {ok, _} = pg:start(bench),
    P = spawn(fun() -> loop(0) end),
    ok = pg:join(bench, sub, P),
    receive never -> ok end.

loop(N) ->
    receive
        {sync, From} -> From ! {synced, N}, loop(N + 1);
        _ -> loop(N + 1)
    end.

%% The broadcaster, as pg2.ex's: a member lookup and a send to each remote member per message.
client(Server, Count) ->
    wait_connected(Server, 50),
    {ok, _} = pg:start(bench),
    wait_member(),
    T0 = erlang:monotonic_time(),
    [bcast(I) || I <- lists:seq(1, Count)],
    bcast({sync, self()}),
    receive {synced, _} -> ok end,
    T = erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond),
    io:format("~p~n", [Count / T * 1000000]),
    halt().

bcast(Msg) ->
    Me = node(),
    [P ! Msg || P <- pg:get_members(bench, sub), node(P) =/= Me],
    ok.

wait_connected(_, 0) -> error(no_server);
wait_connected(S, N) ->
    case net_adm:ping(S) of pong -> ok; pang -> timer:sleep(100), wait_connected(S, N - 1) end.

wait_member() ->
    case pg:get_members(bench, sub) of [] -> timer:sleep(5), wait_member(); _ -> ok end.
"""


def erlang_pg_broadcast(messages: int) -> float | None:
    """msgs/s of a PG2-style broadcast (compiled Erlang: a pg member lookup
    and a send to each remote member, per message) from one Erlang node to a
    counting subscriber on another, until the last one is counted; or None."""
    erl, erlc = shutil.which("erl"), shutil.which("erlc")
    if erl is None or erlc is None:
        return None
    cookie = secrets.token_hex(8)
    suffix = secrets.token_hex(3)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "bench_pg_erl.erl"
        source.write_text(ERLANG_MODULE)
        subprocess.run([erlc, "-o", tmp, str(source)], check=True, capture_output=True)
        server_name = f"bench_pgs_{suffix}@127.0.0.1"
        server = subprocess.Popen(
            [erl, "-noshell", "-pa", tmp, "-name", server_name, "-setcookie", cookie, "-s", "bench_pg_erl", "server"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            out = subprocess.run(
                [erl, "-noshell", "-pa", tmp, "-name", f"bench_pgc_{suffix}@127.0.0.1", "-setcookie", cookie,
                 "-eval", f"bench_pg_erl:client('{server_name}', {messages})."],
                capture_output=True, text=True, timeout=120,
            ).stdout.strip()
            return float(out.splitlines()[-1]) if out else None
        finally:
            server.kill()
            server.wait()


def main() -> None:
    result("pg_join_leave", beamish.run(join_leave, n(100_000, 2_000), lag_threshold=None), "ops/s")
    result("pubsub_local_fanout", beamish.run(local_fanout, 1_000, n(200, 5), lag_threshold=None), "deliveries/s")
    visible, pubsub, cast = two_nodes(n(200, 10), n(100_000, 2_000))
    result("pg_join_visible_on_peer", visible, "us")
    result("remote_cast_same_pair", cast, "msgs/s")
    result("pubsub_remote_broadcast", pubsub, "msgs/s", cast)
    erlang = erlang_pg_broadcast(n(100_000, 2_000))
    if erlang is not None:
        result("erlang_pg_remote_broadcast", erlang, "msgs/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="pg and PubSub benchmarks")
    parser.add_argument("--quick", action="store_true")
    QUICK = parser.parse_args().quick
    main()
