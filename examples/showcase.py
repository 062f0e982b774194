"""The beamish showcase (`make demo`): processes, a supervision tree that restarts a
crashing worker, and a Registry, on one embedded node.

It builds this tree, as an Elixir application would:

    Showcase.Supervisor (one_for_one)
    ├── Registry "Showcase.Workers" (unique keys)
    └── DynamicSupervisor "Showcase.WorkerSupervisor"
        ├── Worker "alpha"    (named {:via, Registry, {Showcase.Workers, "alpha"}})
        ├── Worker "beta"
        └── Worker "gamma"

then sends work to the workers by name, crashes one on purpose, and shows the
supervisor restarting it under the same name while the others keep their state.

Run: `make demo` or `python examples/showcase.py [--nodes N] [--workers N]`.
"""

from __future__ import annotations

import argparse
import sys
import time

import beamish
from beamish import (
    DynamicSupervisor,
    From,
    GenServer,
    NoReply,
    Pid,
    Registry,
    Reply,
    Stop,
    Supervisor,
    Term,
)

WORKERS = "Showcase.Workers"


class Worker(GenServer):
    """Counts the jobs it did; `"crash"` makes it fail like a real bug would."""

    def init(self, name: str) -> dict[str, Term]:
        return {"name": name, "done": 0}

    def handle_call(self, request: Term, from_: From, state: dict[str, Term]) -> Reply | NoReply | Stop:
        match request:
            case ("work", n):
                done = state["done"] + 1
                return Reply((state["name"], n * n), {**state, "done": done})
            case "stats":
                return Reply(state["done"], state)
            case "crash":
                raise RuntimeError(f"{state['name']} hit a bug")
        return Reply(("unknown", request), state)


async def _start_named(name: str) -> Pid:
    """How the DynamicSupervisor starts (and restarts) a worker: named through the Registry."""
    return await Worker.start_link(name, name=Registry.via(WORKERS, name))


def say(text: str) -> None:
    print(text, flush=True)


async def main(workers: int) -> None:
    t0 = time.perf_counter()

    # 1. Plain processes: a thousand of them, each echoing one message back.
    me = beamish.self()

    async def echo() -> None:
        sender, n = await beamish.receive()
        beamish.send(sender, ("echo", n))

    pids = [beamish.spawn(echo) for _ in range(1000)]
    for i, pid in enumerate(pids):
        beamish.send(pid, (me, i))
    total = 0
    for _ in pids:
        _, n = await beamish.receive(lambda m: m[0] == "echo")
        total += n
    say(f"processes: 1000 spawned, each echoed one message (sum {total}) "
        f"in {(time.perf_counter() - t0) * 1000:.1f} ms")

    # 2. A supervision tree with a Registry and a DynamicSupervisor.
    await Supervisor.start_link(
        [
            Registry.child_spec({"keys": "unique", "name": WORKERS}),
            DynamicSupervisor.child_spec({"name": "Showcase.WorkerSupervisor", "strategy": "one_for_one"}),
        ],
        strategy="one_for_one",
        name="Showcase.Supervisor",
    )
    names = [f"worker-{i}" for i in range(workers)]
    for name in names:
        await _start_and_register(name)
    for round_ in range(3):
        for name in names:
            await GenServer.call(Registry.via(WORKERS, name), ("work", round_))
    say(f"registry: {Registry.count(WORKERS)} workers registered; each did "
        f"{await GenServer.call(Registry.via(WORKERS, names[0]), 'stats')} jobs")

    # 3. Let it crash: the supervisor restarts the worker under the same name.
    victim = names[0]
    [(old_pid, _)] = Registry.lookup(WORKERS, victim)
    ref = beamish.monitor(old_pid)
    try:
        await GenServer.call(Registry.via(WORKERS, victim), "crash")
    except beamish.Exit as e:
        say(f"crash: {victim} died during the call, the caller got the reason: {e.reason!r}")
    await beamish.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
    new_pid = await _wait_registered(victim, old_pid)
    say(f"restarted: {victim} is back as {new_pid!r} (was {old_pid!r}); "
        f"jobs after restart: {await GenServer.call(Registry.via(WORKERS, victim), 'stats')}; "
        f"{names[-1]} kept its state: {await GenServer.call(Registry.via(WORKERS, names[-1]), 'stats')} jobs")
    counts = await DynamicSupervisor.count_children("Showcase.WorkerSupervisor")
    say(f"supervisor: {counts}")
    say(f"done in {(time.perf_counter() - t0) * 1000:.1f} ms")


async def _start_and_register(name: str) -> Pid:
    pid = await DynamicSupervisor.start_child(
        "Showcase.WorkerSupervisor",
        {"id": name, "start": (_start_named, (name,))},
    )
    assert pid is not None
    return pid


async def _wait_registered(name: str, old: Pid) -> Pid:
    for _ in range(1000):
        found = Registry.lookup(WORKERS, name)
        if found and found[0][0] != old:
            return found[0][0]
        await _sleep(0.005)
    raise RuntimeError(f"{name} was not restarted")


async def _sleep(seconds: float) -> None:
    try:
        await beamish.receive(lambda m: False, timeout=seconds)
    except TimeoutError:
        pass


# --- more nodes: the same tree, and workers on other nodes reached over the wire ---


def cluster(count: int, workers: int) -> None:
    """Run `count` nodes in this OS process, connected over loopback with the
    real Erlang distribution protocol: node 1 runs the showcase above, then
    calls a worker living on every other node."""
    import asyncio
    import secrets

    from beamish import Node, dist

    cookie = secrets.token_hex(8)
    suffix = secrets.token_hex(3)
    nodes = [Node(f"showcase{i}_{suffix}@127.0.0.1", lag_threshold=None) for i in range(1, count + 1)]
    done: asyncio.Event
    ready: list[asyncio.Event]

    async def remote(index: int) -> None:
        await dist.start(cookie=cookie)
        await Worker.start(f"remote-{index}", name="remote_worker")
        ready[index - 2].set()
        await done.wait()

    async def first() -> None:
        await dist.start(cookie=cookie)
        await main(workers)
        dist.monitor_nodes(True)
        for other, up in zip(nodes[1:], ready, strict=True):
            await up.wait()
            name, squared = await GenServer.call(("remote_worker", other.name), ("work", 7))
            say(f"cluster: {name} on {other.name} answered {squared} over the distribution protocol")
        say(f"cluster: {len(dist.nodes())} other nodes connected: {', '.join(dist.nodes())}")
        done.set()

    async def all_nodes() -> None:
        nonlocal done, ready
        done = asyncio.Event()
        ready = [asyncio.Event() for _ in nodes[1:]]
        await asyncio.gather(nodes[0].run(first), *(n.run(remote, i) for i, n in enumerate(nodes[1:], 2)))

    asyncio.run(all_nodes())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes (more than 1 needs distribution)")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    if args.nodes < 1:
        sys.exit("--nodes must be at least 1")
    if args.nodes == 1:
        beamish.run(main, args.workers)
    else:
        cluster(args.nodes, args.workers)
