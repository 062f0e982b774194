"""Remote benchmarks (issue 5): calls and casts between nodes over loopback,
next to the raw asyncio TCP floor and Erlang<->Erlang measured in the same run.

Prints `RESULT workload=...` lines: `erlang_remote_call` (Erlang to Erlang,
two OS processes), `floor_tcp_pingpong` (two asyncio stream endpoints in one
loop ping-ponging length-prefixed frames), `remote_call` / `remote_cast` (µs
per sequential GenServer.call, msgs/s of casts then one call, between two
beamish nodes sharing one event loop); the same one-loop figures with
uvloop (`_uvloop`); then, for the default loop and for uvloop, the same
between two OS processes:
`floor_tcp_pingpong_2proc`, `remote_call_2proc`, `remote_cast_2proc`, and
`remote_call_erlang` (beamish calling net_kernel on an Erlang node);
`large_fragmented_receive` (ms for an Erlang node to send a list of
1,000,000 integers, about 5 MB that OTP splits into 64 KiB fragments, to a
beamish node that reassembles and decodes it and acknowledges), next to
`erlang_large_fragmented_receive` (the same to an Erlang node);
`rpc_call_pool` (µs per `rpc.call` of a plain function, which a node runs
in its thread pool) against `rpc_call_loop` (the same function allow-listed
`@loop`), between two beamish nodes in one loop.
Latencies are the best of `ROUNDS` rounds, Erlang's included.
Run: `python bench/bench_remote.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import beamish
from beamish import Atom, From, GenServer, Node, NoReply, Reply, dist
from beamish.dist import rpc
from beamish.terms import Term

T = TypeVar("T")


class Echo(GenServer):
    def init(self, _: Term) -> int:
        return 0

    def handle_call(self, request: Term, from_: From, n: int) -> Reply:
        return Reply(n, n)

    def handle_cast(self, request: Term, n: int) -> NoReply:
        return NoReply(n + 1)


ROUNDS = 3
"""Latencies are the best of this many rounds (as timeit reports its best):
on a shared 2-core machine a round can lose the CPU for a while, and the
same rule applies to Erlang's figure and ours."""


def rounds_of(calls: int) -> int:
    return max(1, calls // ROUNDS)


def run_loop(main: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """`asyncio.run(main)`, or uvloop's."""
    if use_uvloop:
        import uvloop

        value: T = uvloop.run(main)
        return value
    return asyncio.run(main)


def result(name: str, value: float, unit: str, floor: float | None = None) -> None:
    line = f"RESULT workload={name} value={value:.3f} unit={unit}"
    if floor:
        line += f" floor={floor:.3f} ratio={value / floor:.2f}"
    print(line, flush=True)


async def _echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while True:
        try:
            head = await r.readexactly(4)
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            break
        body = await r.readexactly(struct.unpack(">I", head)[0])
        w.write(head + body)
    w.close()


def echo_server(use_uvloop: bool) -> None:
    """The far end of the two-process floor: prints its port, echoes frames
    until stdin closes."""

    async def body() -> None:
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    run_loop(body(), use_uvloop)


async def _pingpong(host: str, port: int, count: int) -> float:
    """µs per frame round trip with the echo server at host:port (best of
    `ROUNDS` rounds)."""
    r, w = await asyncio.open_connection(host, port)
    frame = struct.pack(">I", 40) + b"x" * 40
    for _ in range(100):  # warm up
        w.write(frame)
        await r.readexactly(44)
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(rounds_of(count)):
            w.write(frame)
            await r.readexactly(44)
        best = min(best, (time.perf_counter() - t0) / rounds_of(count) * 1e6)
    w.close()
    await w.wait_closed()
    return best


def tcp_floor_2proc(count: int, use_uvloop: bool) -> float:
    """µs per frame round trip between this process and an echo server in
    another OS process (the floor for nodes in two processes)."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--echo", *(["--uvloop"] if use_uvloop else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        return run_loop(_pingpong("127.0.0.1", port, count), use_uvloop)
    finally:
        server.communicate(timeout=30)


async def tcp_floor(count: int) -> float:
    """µs per frame round trip between two stream endpoints in this loop."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    elapsed = await _pingpong("127.0.0.1", port, count)
    server.close()
    await server.wait_closed()
    return elapsed


def erlang_pair(calls: int) -> float | None:
    """µs per gen_server call from one Erlang node to another, or None."""
    erl = shutil.which("erl")
    if erl is None:
        return None
    cookie = secrets.token_hex(8)
    suffix = secrets.token_hex(3)
    server = subprocess.Popen(
        [erl, "-noshell", "-name", f"bench_srv_{suffix}@127.0.0.1", "-setcookie", cookie],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        code = (
            f"S = 'bench_srv_{suffix}@127.0.0.1', "
            "lists:foldl(fun(_, _) -> case net_adm:ping(S) of pong -> ok; pang -> timer:sleep(100) end end, ok, lists:seq(1, 50)), "
            "gen_server:call({net_kernel, S}, {is_auth, node()}), "
            f"Round = fun() -> {{T, _}} = timer:tc(fun() -> [gen_server:call({{net_kernel, S}}, {{is_auth, node()}}) || _ <- lists:seq(1, {rounds_of(calls)})] end), T end, "
            f"io:format(\"~p~n\", [lists:min([Round() || _ <- lists:seq(1, {ROUNDS})]) / {rounds_of(calls)}]), halt()."
        )
        out = subprocess.run(
            [erl, "-noshell", "-name", f"bench_cli_{suffix}@127.0.0.1", "-setcookie", cookie, "-eval", code],
            capture_output=True, text=True, timeout=120,
        ).stdout.strip()
        return float(out.splitlines()[-1]) if out else None
    finally:
        server.kill()
        server.wait()


async def calls_and_casts(target: tuple[Atom, Atom], calls: int, casts: int) -> tuple[float, float]:
    """µs per sequential call to `target` (the best of `ROUNDS` rounds),
    then msgs/s of `casts` casts followed by one call (which returns once
    all were handled)."""
    await GenServer.call(target, "warm")
    call = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(rounds_of(calls)):
            await GenServer.call(target, "ping")
        call = min(call, (time.perf_counter() - t0) / rounds_of(calls) * 1e6)
    t0 = time.perf_counter()
    for _ in range(casts):
        GenServer.cast(target, "x")
    await GenServer.call(target, "sync", timeout=None)
    return call, casts / (time.perf_counter() - t0)


def beamish_pair(calls: int, casts: int, use_uvloop: bool = False) -> tuple[float, float, float | None]:
    cookie = secrets.token_hex(8)
    suffix = secrets.token_hex(3)
    a, b = Node(f"bench_a_{suffix}@127.0.0.1", lag_threshold=None), Node(f"bench_b_{suffix}@127.0.0.1", lag_threshold=None)
    out: dict[str, float] = {}

    async def server() -> None:
        await dist.start(cookie=cookie)
        await Echo.start(None, name="echo")
        events[0].set()
        await events[1].wait()

    async def client() -> None:
        await dist.start(cookie=cookie)
        await events[0].wait()
        out["call"], out["cast"] = await calls_and_casts((Atom("echo"), a.name), calls, casts)
        events[1].set()

    events: list[asyncio.Event] = []

    async def both() -> None:
        events.extend([asyncio.Event(), asyncio.Event()])
        await asyncio.gather(a.run(server), b.run(client))

    run_loop(both(), use_uvloop)
    return out["call"], out["cast"], None


def rpc_placement(calls: int) -> tuple[float, float]:
    """µs per sequential rpc.call of math.fabs run in the server node's
    thread pool (the default for a plain function), and on its loop
    (`@loop`); the best of `ROUNDS` rounds each."""
    cookie = secrets.token_hex(8)
    suffix = secrets.token_hex(3)
    a = Node(f"bench_ra_{suffix}@127.0.0.1", lag_threshold=None)
    b = Node(f"bench_rb_{suffix}@127.0.0.1", lag_threshold=None)
    out: dict[str, float] = {}
    ready, done = asyncio.Event(), asyncio.Event()

    async def server() -> None:
        await dist.start(cookie=cookie, rpc_allow=["math:fabs", "operator:abs@loop"])
        ready.set()
        await done.wait()

    async def time_calls(module: str, function: str) -> float:
        await rpc.call(a.name, module, function, [-1.5])
        best = float("inf")
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            for _ in range(rounds_of(calls)):
                await rpc.call(a.name, module, function, [-1.5])
            best = min(best, (time.perf_counter() - t0) / rounds_of(calls) * 1e6)
        return best

    async def client() -> None:
        await dist.start(cookie=cookie)
        await ready.wait()
        out["pool"] = await time_calls("math", "fabs")
        out["loop"] = await time_calls("operator", "abs")
        done.set()

    async def both() -> None:
        await asyncio.gather(a.run(server), b.run(client))

    asyncio.run(both())
    return out["pool"], out["loop"]


def serve(name: str, cookie: str, use_uvloop: bool) -> None:
    """The server node of `os_pair`: an Echo named `echo`, until stdin closes."""

    async def body() -> None:
        await dist.start(cookie=cookie)
        await Echo.start(None, name="echo")
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)

    beamish.run(body, name=name, use_uvloop=use_uvloop, lag_threshold=None)


def os_pair(calls: int, casts: int, use_uvloop: bool) -> tuple[float, float, float | None]:
    """Call/cast figures between this node and a node in another OS process
    (as Erlang's pair is), plus µs per call to an Erlang node's net_kernel."""
    cookie = secrets.token_hex(8)
    suffix = secrets.token_hex(3)
    server_name = f"bench_s_{suffix}@127.0.0.1"
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", server_name, cookie, *(["--uvloop"] if use_uvloop else [])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    erl = shutil.which("erl")
    erlang = None
    if erl is not None:
        erlang = subprocess.Popen(
            [erl, "-noshell", "-name", f"bench_e_{suffix}@127.0.0.1", "-setcookie", cookie],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    out: dict[str, float] = {}
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"

        async def client() -> None:
            await dist.start(cookie=cookie)
            out["call"], out["cast"] = await calls_and_casts((Atom("echo"), Atom(server_name)), calls, casts)
            if erlang is not None:
                peer = Atom(f"bench_e_{suffix}@127.0.0.1")
                for _ in range(100):
                    if await dist.ping(peer) == "pong":
                        break
                    await asyncio.sleep(0.1)
                request = (Atom("is_auth"), dist.node())
                await GenServer.call((Atom("net_kernel"), peer), request)
                t0 = time.perf_counter()
                for _ in range(calls):
                    await GenServer.call((Atom("net_kernel"), peer), request)
                out["erlang"] = (time.perf_counter() - t0) / calls * 1e6

        beamish.run(client, name=f"bench_c_{suffix}@127.0.0.1", use_uvloop=use_uvloop, lag_threshold=None)
    finally:
        server.communicate(timeout=30)
        if erlang is not None:
            erlang.kill()
            erlang.wait()
    return out["call"], out["cast"], out.get("erlang")


_SINK = "register(sink, spawn(fun L() -> receive {From, _} -> From ! ack, L() end end))"


def _send_large(erl: str, cookie: str, suffix: str, target: str, count: int) -> float:
    """ms per round: an Erlang node sends `lists:seq(1, count)` to `sink` on
    `target` and waits for its ack (the best of `ROUNDS`, after one warm-up)."""
    code = (
        f"T = '{target}', Big = lists:seq(1, {count}), "
        "Wait = fun W(0) -> error; W(N) -> {sink, T} ! {self(), probe}, "
        "receive ack -> ok after 100 -> W(N - 1) end end, ok = Wait(100), "
        "Round = fun() -> T0 = erlang:monotonic_time(microsecond), {sink, T} ! {self(), Big}, "
        "receive ack -> ok end, erlang:monotonic_time(microsecond) - T0 end, Round(), "
        f"io:format(\"~p~n\", [lists:min([Round() || _ <- lists:seq(1, {ROUNDS})]) / 1000]), halt()."
    )
    out = subprocess.run(
        [erl, "-noshell", "-name", f"bench_big_{suffix}@127.0.0.1", "-setcookie", cookie, "-eval", code],
        capture_output=True, text=True, timeout=300,
    ).stdout.strip()
    return float(out.splitlines()[-1])


def large_fragmented(count: int) -> tuple[float, float] | None:
    """ms per large fragmented message from an Erlang node: to a beamish
    node, and to an Erlang node (the floor); None without `erl`."""
    erl = shutil.which("erl")
    if erl is None:
        return None
    cookie = secrets.token_hex(8)
    suffix = secrets.token_hex(3)
    erl_sink = f"bench_sink_{suffix}@127.0.0.1"
    sink = subprocess.Popen(
        [erl, "-noshell", "-name", erl_sink, "-setcookie", cookie, "-eval", f"{_SINK}."],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        floor = _send_large(erl, cookie, suffix + "e", erl_sink, count)
    finally:
        sink.kill()
        sink.wait()

    async def beamish_sink() -> float:
        await dist.start(cookie=cookie)

        async def serve() -> None:
            while True:
                match await beamish.receive():
                    case (beamish.Pid() as sender, _):
                        beamish.send(sender, Atom("ack"))

        beamish.spawn(serve, name="sink")
        return await beamish.to_thread(_send_large, erl, cookie, suffix + "b", str(dist.node()), count)

    ours = beamish.run(beamish_sink, name=f"bench_bsink_{suffix}@127.0.0.1", lag_threshold=None)
    assert isinstance(ours, float)
    return ours, floor


def main(quick: bool) -> None:
    calls = 1_000 if quick else 20_000
    casts = 10_000 if quick else 200_000
    floor = asyncio.run(tcp_floor(calls))
    result("floor_tcp_pingpong", floor, "us")
    erlang = None if quick else erlang_pair(calls)
    if erlang is not None:
        result("erlang_remote_call", erlang, "us")
    loops = [("", False)]
    try:
        import uvloop  # noqa: F401

        loops.append(("_uvloop", True))
    except ImportError:
        pass
    call, cast, _ = beamish_pair(calls, casts)
    result("remote_call", call, "us", erlang or floor)
    result("remote_cast", cast, "msgs/s")
    for suffix, use_uvloop in loops:
        if use_uvloop:
            result(f"floor_tcp_pingpong{suffix}", run_loop(tcp_floor(calls), True), "us")
            call, cast, _ = beamish_pair(calls, casts, use_uvloop=True)
            result(f"remote_call{suffix}", call, "us", erlang or floor)
            result(f"remote_cast{suffix}", cast, "msgs/s")
        floor2 = tcp_floor_2proc(calls, use_uvloop)
        result(f"floor_tcp_pingpong_2proc{suffix}", floor2, "us")
        call, cast, to_erlang = os_pair(calls, casts, use_uvloop)
        result(f"remote_call_2proc{suffix}", call, "us", erlang or floor2)
        result(f"remote_cast_2proc{suffix}", cast, "msgs/s")
        if to_erlang is not None:
            result(f"remote_call_erlang{suffix}", to_erlang, "us", erlang or floor2)
    pool, loop = rpc_placement(calls)
    result("rpc_call_loop", loop, "us")
    result("rpc_call_pool", pool, "us", loop)
    large = large_fragmented(100_000 if quick else 1_000_000)
    if large is not None:
        ours, theirs = large
        result("erlang_large_fragmented_receive", theirs, "ms")
        result("large_fragmented_receive", ours, "ms", theirs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "COOKIE"), help=argparse.SUPPRESS)
    parser.add_argument("--uvloop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        name, cookie = options.serve
        serve(name, cookie, options.uvloop)
    elif options.echo:
        echo_server(options.uvloop)
    else:
        main(options.quick)
