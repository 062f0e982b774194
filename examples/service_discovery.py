"""The seed's ServiceDiscovery, line by line, then the same API across a
cluster on `beamish.cluster.discovery`.

The seed's server keeps a map of service name -> endpoint in one process on
one node: `register_service(name, endpoint)` and `discover_service(name)`.
It names itself through a Registry (`{:via, Registry, {MyRegistry,
__MODULE__}}`) but calls `__MODULE__`, a name nobody registered: as written,
its calls fail with `noproc`. Here they use the via-name it registered.

`ClusterServiceDiscovery` keeps that API shape on three nodes (in this one
OS process, talking the distribution protocol over loopback): a service
registered on one node is discovered on the others, and it is gone
everywhere when the process that registered it exits.

Run: `python examples/service_discovery.py`.
"""

from __future__ import annotations

import asyncio
import os

import beamish
from beamish import From, GenServer, Node, Registry, Reply, Term, dist
from beamish.cluster import discovery

# --- the seed, translated ------------------------------------------------------

NAME = Registry.via("MyRegistry", "ServiceDiscovery")


class ServiceDiscovery(GenServer):
    @classmethod
    async def start_link_named(cls) -> beamish.Pid:
        return await cls.start_link([], name=NAME)

    @staticmethod
    async def register_service(name: str, endpoint: str) -> Term:
        return await GenServer.call(NAME, ("register", name, endpoint))

    @staticmethod
    async def discover_service(name: str) -> Term:
        return await GenServer.call(NAME, ("discover", name))

    def init(self, _args: Term) -> dict[str, str]:
        return {}

    def handle_call(self, request: Term, from_: From, state: dict[str, str]) -> Reply:
        match request:
            case ("register", name, endpoint):
                new_state = {**state, name: endpoint}
                return Reply("ok", new_state)
            case ("discover", name):
                result = state.get(name)
                return Reply(result, state)
        return Reply(("error", "unknown request"), state)


async def seed_main() -> None:
    await Registry.start_link(keys="unique", name="MyRegistry")
    await ServiceDiscovery.start_link_named()
    print("register:", await ServiceDiscovery.register_service("payments", "http://10.0.0.7:4000"))
    print("discover payments:", await ServiceDiscovery.discover_service("payments"))
    print("discover unknown:", await ServiceDiscovery.discover_service("unknown"))


# --- the same API across a cluster ---------------------------------------------


class ClusterServiceDiscovery:
    """The seed's two functions on `beamish.cluster.discovery`: the
    registering process is the instance, and any node discovers it."""

    @staticmethod
    async def register_service(name: str, endpoint: str) -> Term:
        await discovery.register_service(name, endpoint)
        return "ok"

    @staticmethod
    def discover_service(name: str) -> Term:
        instance = discovery.select(name)
        return None if instance is None else instance.endpoint


async def wait_for(condition: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("the cluster did not converge")
        await asyncio.sleep(0.01)


def cluster_main() -> None:
    names = [f"sd{i}_{os.getpid()}@127.0.0.1" for i in range(3)]
    nodes = [Node(n) for n in names]
    cookie = "service-discovery-example"
    registered = asyncio.Event()
    done = asyncio.Event()

    async def provider() -> None:
        # Node 0 runs the payments service: this process is its instance.
        await dist.start(cookie=cookie)
        await discovery.start_link()

        async def payments() -> None:
            await ClusterServiceDiscovery.register_service("payments", "http://10.0.0.7:4000")
            await beamish.receive(lambda m: m == "stop")

        pid = beamish.spawn(payments)
        registered.set()
        await beamish.receive(lambda m: m == "stop the service", None)
        beamish.send(pid, "stop")
        await done.wait()
        await dist.stop()

    async def consumer(i: int) -> None:
        await dist.start(cookie=cookie)
        await discovery.start_link()
        await registered.wait()
        assert await dist.connect(names[0])
        await wait_for(lambda: ClusterServiceDiscovery.discover_service("payments") is not None)
        found = ClusterServiceDiscovery.discover_service("payments")
        print(f"node {i} discovers payments at {found} (registered on node 0)")
        if i == 1:
            beamish.send(("provider", names[0]), "stop the service")
        await wait_for(lambda: ClusterServiceDiscovery.discover_service("payments") is None)
        print(f"node {i}: payments is gone after its process exited")
        await dist.stop()

    async def named_provider() -> None:
        beamish.register("provider", beamish.self())
        await provider()

    async def main() -> None:
        first = asyncio.ensure_future(nodes[0].run(named_provider))
        await asyncio.gather(nodes[1].run(consumer, 1), nodes[2].run(consumer, 2))
        done.set()
        await first

    asyncio.run(asyncio.wait_for(main(), 30))


if __name__ == "__main__":
    beamish.run(seed_main)
    cluster_main()
