"""The chat under load (issue 15 §5): N WebSocket clients in one room.

Two servers, each in its own OS process, measured in the same run with the
same clients (aiohttp WebSockets in this process):
- the floor: a bare `websockets` server whose handler `websockets.broadcast`s
  every text frame it receives to every connection;
- ours: `apps.chat` (Phoenix frames, the room process, PubSub, presence).

Prints `RESULT workload=chat_deliveries` and `chat_floor_deliveries`
(deliveries/s when one client sends as fast as the server delivers), their
ratio, and `chat_p50_ms`/`chat_p99_ms` (and the floor's) from send to
receive at an offered 10k deliveries/s. Run: `python bench/bench_chat.py [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def serve(kind: str) -> None:
    """Run a server and print its port (in the server's own process)."""
    if kind == "floor":
        import websockets
        from websockets.asyncio.server import ServerConnection
        from websockets.asyncio.server import serve as ws_serve

        async def floor() -> None:
            clients: set[object] = set()

            async def handler(ws: ServerConnection) -> None:
                clients.add(ws)
                try:
                    async for message in ws:
                        websockets.broadcast(clients, message)  # type: ignore[arg-type]
                finally:
                    clients.discard(ws)

            async with ws_serve(handler, "127.0.0.1", 0, max_size=2**16, ping_interval=None) as server:
                print(next(iter(server.sockets)).getsockname()[1], flush=True)
                await asyncio.Future()

        asyncio.run(floor())
        return
    sys.path.insert(0, str(ROOT))
    from apps.chat.socket import Limits

    import beamish
    from apps.chat import children, port
    from beamish import Supervisor

    async def chat() -> None:
        await Supervisor.start_link(children(data_dir=tempfile.mkdtemp(), limits=Limits(rate=100_000)), strategy="one_for_one")
        print(await port(), flush=True)
        await beamish.receive(lambda m: False)

    beamish.run(chat, lag_threshold=None, long_message_queue=None)


async def clients(kind: str, urls: list[str], n: int) -> tuple[list[aiohttp.ClientWebSocketResponse], aiohttp.ClientSession]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def one(i: int) -> aiohttp.ClientWebSocketResponse:
        ws = await session.ws_connect(urls[i % len(urls)], max_msg_size=2**20, autoping=True, heartbeat=None)
        if kind == "chat":
            await ws.send_str(json.dumps(["1", "1", "room:load", "phx_join", {"user": f"u{i}"}]))
            while True:  # the join reply (presence pushes may come first)
                frame = json.loads((await ws.receive()).data)
                if frame[3] == "phx_reply":
                    break
        return ws

    sockets: list[aiohttp.ClientWebSocketResponse] = []
    for start in range(0, n, 50):  # 50 at a time: a listen backlog's worth
        sockets += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 50))))
    return sockets, session


def stamp_of(kind: str, data: str) -> float | None:
    if kind == "floor":
        return float(data)
    frame = json.loads(data)
    return float(frame[4]["body"]) if frame[3] == "new_msg" else None


async def run(kind: str, urls: list[str], n: int, burst: int, paced: int) -> tuple[float, float, float]:
    sockets, session = await clients(kind, urls, n)
    sender = sockets[0]
    latencies: list[float] = []
    got = 0
    done = asyncio.Event()
    expected = 0

    last_frame = time.perf_counter()

    async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
        nonlocal got, last_frame
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            last_frame = time.perf_counter()
            stamp = stamp_of(kind, message.data)
            if stamp is None:
                continue
            latencies.append(time.perf_counter() - stamp)
            got += 1
            if got >= expected:
                done.set()

    readers = [asyncio.ensure_future(reader(ws)) for ws in sockets]
    # Let the joins' presence traffic (n joins, n pushes each) settle first.
    while time.perf_counter() - last_frame < 1.0:  # noqa: ASYNC110 - waiting for quiet, not an event
        await asyncio.sleep(0.2)

    def frame(stamp: float) -> str:
        if kind == "floor":
            return repr(stamp)
        return json.dumps(["1", None, "room:load", "new_msg", {"body": repr(stamp)}])

    # As fast as it goes: deliveries/s.
    expected = burst * n
    t0 = time.perf_counter()
    for _ in range(burst):
        await sender.send_str(frame(time.perf_counter()))
    await asyncio.wait_for(done.wait(), 120)
    rate = expected / (time.perf_counter() - t0)
    # Paced at 10k deliveries/s offered: latency.
    latencies.clear()
    got, expected = 0, paced * n
    done.clear()
    gap = n / 10_000
    for _ in range(paced):
        await sender.send_str(frame(time.perf_counter()))
        await asyncio.sleep(gap)
    await asyncio.wait_for(done.wait(), 120)
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    for ws in sockets:
        await ws.close()
    for r in readers:
        r.cancel()
    await session.close()
    return rate, p50, p99


def measure(kind: str, n: int, burst: int, paced: int) -> tuple[float, float, float]:
    if kind == "chat2":
        return measure_two_nodes(n, burst, paced)
    server = subprocess.Popen([sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert server.stdout is not None
        http_port = int(server.stdout.readline())
        path = "/socket/websocket?vsn=2.0.0" if kind == "chat" else "/"
        return asyncio.run(run(kind, [f"ws://127.0.0.1:{http_port}{path}"], n, burst, paced))
    finally:
        server.kill()
        server.wait()


def measure_two_nodes(n: int, burst: int, paced: int) -> tuple[float, float, float]:
    """Two chat nodes in one cluster (`beamish run`), the clients split
    between them, the sender on the first: every message crosses nodes."""
    import secrets

    cookie, suffix = secrets.token_hex(8), secrets.token_hex(3)
    first = f"benchchat1_{suffix}@127.0.0.1"
    procs = []
    urls = []
    try:
        for i, connect in ((1, []), (2, ["--connect", first])):
            env = {**os.environ, "CHAT_DATA_DIR": tempfile.mkdtemp(), "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen(
                [sys.executable, "-m", "beamish", "run", "apps.chat:Chat", "--name", first if i == 1 else f"benchchat2_{suffix}@127.0.0.1",
                 "--cookie", cookie, *connect],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
            )  # fmt: skip
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            while not line.startswith("chat: "):
                line = proc.stdout.readline()
                assert line, "a chat node exited"
            urls.append(line.split()[1].replace("http://", "ws://") + "socket/websocket?vsn=2.0.0")
        for proc in procs:  # never let a full pipe block a node
            threading.Thread(target=lambda p=proc: [None for _ in p.stdout], daemon=True).start()
        return asyncio.run(run("chat", urls, n, burst, paced))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", choices=["floor", "chat"])
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    n, burst, paced = (50, 20, 20) if args.quick else (1000, 30, 30)
    floor = measure("floor", n, burst, paced)
    ours = measure("chat", n, burst, paced)
    two = measure("chat2", n, burst, paced)
    print(f"RESULT workload=chat_floor_deliveries value={floor[0]:.0f} unit=deliveries/s", flush=True)
    print(f"RESULT workload=chat_deliveries value={ours[0]:.0f} unit=deliveries/s floor={floor[0]:.0f} ratio={ours[0] / floor[0]:.2f}", flush=True)
    print(f"RESULT workload=chat_floor_p50_ms value={floor[1]:.2f} unit=ms", flush=True)
    print(f"RESULT workload=chat_floor_p99_ms value={floor[2]:.2f} unit=ms", flush=True)
    print(f"RESULT workload=chat_p50_ms value={ours[1]:.2f} unit=ms", flush=True)
    print(f"RESULT workload=chat_p99_ms value={ours[2]:.2f} unit=ms", flush=True)
    print(f"RESULT workload=chat_2nodes_deliveries value={two[0]:.0f} unit=deliveries/s floor={floor[0]:.0f} ratio={two[0] / floor[0]:.2f}", flush=True)
    print(f"RESULT workload=chat_2nodes_p50_ms value={two[1]:.2f} unit=ms", flush=True)
    print(f"RESULT workload=chat_2nodes_p99_ms value={two[2]:.2f} unit=ms", flush=True)


if __name__ == "__main__":
    main()
