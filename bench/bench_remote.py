"""Remote benchmarks (issue 5): calls and casts between nodes over loopback,
next to the raw asyncio TCP floor and Erlang<->Erlang measured in the same run.

Prints `RESULT workload=remote_call ...` (µs per sequential GenServer.call
between two beamish nodes), `remote_cast` (msgs/s, casts then one call),
`remote_call_erlang` (beamish calling a gen_server on an Erlang node),
`erlang_remote_call` (Erlang to Erlang), and `floor_tcp_pingpong` (two asyncio
stream endpoints ping-ponging length-prefixed frames). The two beamish nodes
share one event loop here (one core), which is the pessimistic case.
Run: `python bench/bench_remote.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import struct
import subprocess
import time

from beamish import Atom, From, GenServer, Node, NoReply, Reply, dist
from beamish.terms import Term


class Echo(GenServer):
    def init(self, _: Term) -> int:
        return 0

    def handle_call(self, request: Term, from_: From, n: int) -> Reply:
        return Reply(n, n)

    def handle_cast(self, request: Term, n: int) -> NoReply:
        return NoReply(n + 1)


def result(name: str, value: float, unit: str, floor: float | None = None) -> None:
    line = f"RESULT workload={name} value={value:.3f} unit={unit}"
    if floor:
        line += f" floor={floor:.3f} ratio={value / floor:.2f}"
    print(line, flush=True)


async def tcp_floor(count: int) -> float:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await r.readexactly(4)
            except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
                break
            body = await r.readexactly(struct.unpack(">I", head)[0])
            w.write(head + body)
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    frame = struct.pack(">I", 40) + b"x" * 40
    t0 = time.perf_counter()
    for _ in range(count):
        w.write(frame)
        await r.readexactly(44)
    elapsed = time.perf_counter() - t0
    w.close()
    await w.wait_closed()
    server.close()
    await server.wait_closed()
    return elapsed / count * 1e6


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
            f"{{T, _}} = timer:tc(fun() -> [gen_server:call({{net_kernel, S}}, {{is_auth, node()}}) || _ <- lists:seq(1, {calls})] end), "
            f"io:format(\"~p~n\", [T / {calls}]), halt()."
        )
        out = subprocess.run(
            [erl, "-noshell", "-name", f"bench_cli_{suffix}@127.0.0.1", "-setcookie", cookie, "-eval", code],
            capture_output=True, text=True, timeout=120,
        ).stdout.strip()
        return float(out.splitlines()[-1]) if out else None
    finally:
        server.kill()
        server.wait()


def beamish_pair(calls: int, casts: int) -> tuple[float, float, float | None]:
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
        target = (Atom("echo"), a.name)
        await GenServer.call(target, "warm")
        t0 = time.perf_counter()
        for _ in range(calls):
            await GenServer.call(target, "ping")
        out["call"] = (time.perf_counter() - t0) / calls * 1e6
        t0 = time.perf_counter()
        for _ in range(casts):
            GenServer.cast(target, "x")
        await GenServer.call(target, "sync", timeout=None)
        out["cast"] = casts / (time.perf_counter() - t0)
        events[1].set()

    events: list[asyncio.Event] = []

    async def both() -> None:
        events.extend([asyncio.Event(), asyncio.Event()])
        await asyncio.gather(a.run(server), b.run(client))

    asyncio.run(both())
    return out["call"], out["cast"], None


def main(quick: bool) -> None:
    calls = 1_000 if quick else 20_000
    casts = 10_000 if quick else 200_000
    floor = asyncio.run(tcp_floor(calls))
    result("floor_tcp_pingpong", floor, "us")
    erlang = None if quick else erlang_pair(calls)
    if erlang is not None:
        result("erlang_remote_call", erlang, "us")
    call, cast, _ = beamish_pair(calls, casts)
    result("remote_call", call, "us", erlang or floor)
    result("remote_cast", cast, "msgs/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
