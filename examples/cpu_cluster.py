"""Using every core: CPU-bound GenServers on one node, then on N nodes.

One beamish node runs one event loop on one core. This program starts a
`LocalCluster` of nodes, each running `CpuApp` (a supervised `Cruncher`
GenServer doing CPU work per call), and calls them from this node through
the Erlang distribution protocol: first with one node, then with N (default
2). On a machine with N free cores the second run does about N times the
work per second.

    python examples/cpu_cluster.py [--nodes 2] [--jobs 40]

(from the repository root; the nodes import `examples.cpu_cluster`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import time
from pathlib import Path

import beamish
from beamish import Application, GenServer, Pid, Reply, Supervisor, Term, dist
from beamish.dist import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
WORKER = "cruncher"


def crunch(rounds: int) -> str:
    """CPU work: `rounds` chained SHA-256 hashes."""
    digest = b"beamish"
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


class Cruncher(GenServer):
    @classmethod
    async def start_link(cls, arg: Term = None, **options: Term) -> Pid:
        return await super().start_link(arg, name=WORKER)

    def init(self, _: Term) -> int:
        return 0

    def handle_call(self, request: Term, from_: Term, done: int) -> Reply:
        match request:
            case ("work", int() as rounds):
                return Reply(crunch(rounds), done + 1)
            case "nodes":
                return Reply(sorted(str(n) for n in dist.nodes()), done)
        return Reply(("error", ("unknown_call", request)), done)


class CpuApp(Application):
    name = "cpu_app"
    description = "a CPU-bound GenServer, one per node"

    async def start(self, start_type: Term, args: Term) -> Pid:
        return await Supervisor.start_link([Cruncher], strategy="one_for_one")


async def throughput(cluster: LocalCluster, jobs: int, rounds: int) -> float:
    """Jobs per second with two calls in flight per node."""
    for node in cluster.nodes:
        assert await dist.ping(node) == "pong"
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    me = beamish.self()

    async def caller(node: str) -> None:
        while not queue.empty():
            queue.get_nowait()
            await GenServer.call((WORKER, node), ("work", rounds), timeout=60)
        beamish.send(me, "done")

    started = time.perf_counter()
    callers = [node for node in cluster.nodes for _ in range(2)]
    for node in callers:
        beamish.spawn(caller, node)
    for _ in callers:
        await beamish.receive(lambda m: m == "done", timeout=300)
    return jobs / (time.perf_counter() - started)


async def measure(nodes: int, jobs: int, rounds: int) -> dict[int, float]:
    """Throughput (jobs/s) with 1 node and with `nodes` nodes."""
    tag = secrets.token_hex(3)
    cookie = secrets.token_hex(10)
    await dist.start(cookie=cookie)
    results: dict[int, float] = {}
    for count in sorted({1, nodes}):
        cluster = LocalCluster("examples.cpu_cluster:CpuApp", nodes=count, prefix=f"cpu{tag}n{count}_", cookie=cookie, cwd=str(ROOT))
        async with cluster:
            await throughput(cluster, max(2 * count, jobs // 10), rounds)  # warm up
            results[count] = await throughput(cluster, jobs, rounds)
    return results


async def main(nodes: int, jobs: int, rounds: int) -> None:
    results = await measure(nodes, jobs, rounds)
    for count, rate in results.items():
        print(f"{count} node(s): {rate:.1f} jobs/s")
    if nodes > 1:
        print(f"speed-up with {nodes} nodes: {results[nodes] / results[1]:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=50_000, help="hashes per job")
    args = parser.parse_args()
    beamish.run(main, args.nodes, args.jobs, args.rounds, name=f"cpu_driver_{secrets.token_hex(3)}@127.0.0.1")
