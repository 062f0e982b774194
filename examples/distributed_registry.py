"""The tutorial's DistributedRegistry, translated line by line.

    defmodule DistributedRegistry do
      use GenServer
      def start_link do
        GenServer.start_link(__MODULE__, [], name: {:via, Registry, {MyRegistry, __MODULE__}})
      end
      def register(name, pid) do
        GenServer.call(__MODULE__, {:register, name, pid})
      end
      def lookup(name) do
        GenServer.call(__MODULE__, {:lookup, name})
      end
      @impl true
      def init(_args) do
        {:ok, %{}}
      end
      @impl true
      def handle_call({:register, name, pid}, _from, state) do
        new_state = Map.put(state, name, pid)
        {:reply, :ok, new_state}
      end
      @impl true
      def handle_call({:lookup, name}, _from, state) do
        result = Map.get(state, name)
        {:reply, result, state}
      end
    end

One change makes it what the tutorial says it is: a `Registry` is local to
one node, and the tutorial starts the server under a Registry name but
calls it as `__MODULE__`, a name nothing is registered under. Here the
server has one cluster-wide name, `("global", "DistributedRegistry")`
(Elixir's `{:global, __MODULE__}`), and the client functions call it by
that name, so every node of the cluster finds the one registry (Erlang
nodes too: `gen_server:call({global, <<"DistributedRegistry">>}, ...)`).
`beamish.cluster.global_` itself is the cluster-wide registry this
server's map imitates: `global_.register_name(name, pid)` and
`global_.whereis_name(name)` need no server at all.

Run: `python examples/distributed_registry.py` (two nodes in one process:
`registry@` runs the server, `client@` finds it and looks names up).
"""

from __future__ import annotations

import asyncio
import os

import beamish
from beamish import GenServer, Node, Reply, Term, dist
from beamish.cluster import global_

NAME = ("global", "DistributedRegistry")


class DistributedRegistry(GenServer):
    @classmethod
    async def start_link(cls, arg: Term = None, **_: Term) -> beamish.Pid:
        return await super().start_link([], name=NAME)

    @staticmethod
    async def register(name: str, pid: beamish.Pid) -> Term:
        return await GenServer.call(NAME, ("register", name, pid))

    @staticmethod
    async def lookup(name: str) -> Term:
        return await GenServer.call(NAME, ("lookup", name))

    def init(self, _args: Term) -> dict[str, beamish.Pid]:
        return {}

    def handle_call(self, request: Term, from_: Term, state: dict[str, beamish.Pid]) -> Reply:
        match request:
            case ("register", name, pid):
                new_state = {**state, name: pid}
                return Reply("ok", new_state)
            case ("lookup", name):
                result = state.get(name)
                return Reply(result, state)
        return Reply(("error", ("unknown_call", request)), state)


async def serve(ready: asyncio.Event, done: asyncio.Event) -> None:
    await dist.start(f"registry_{os.getpid()}@127.0.0.1", cookie="my_cookie")
    await DistributedRegistry.start_link()
    worker = beamish.spawn(lambda: beamish.receive())
    print("register:", await DistributedRegistry.register("worker", worker))
    ready.set()
    await done.wait()
    await dist.stop()


async def client(server_node: str, ready: asyncio.Event, done: asyncio.Event) -> None:
    await dist.start(f"client_{os.getpid()}@127.0.0.1", cookie="my_cookie")
    await ready.wait()
    try:
        print("connected:", await dist.connect(server_node))
        await global_.sync()  # the names of the cluster are ours now
        print("the registry runs on", global_.whereis_name("DistributedRegistry").node)  # type: ignore[union-attr]
        found = await DistributedRegistry.lookup("worker")
        print("lookup worker from another node:", found, "on", found.node)
        print("lookup nobody:", await DistributedRegistry.lookup("nobody"))
    finally:
        done.set()
        await dist.stop()


async def main() -> None:
    server = Node(f"registry_{os.getpid()}@127.0.0.1")
    other = Node(f"client_{os.getpid()}@127.0.0.1")
    ready, done = asyncio.Event(), asyncio.Event()
    await asyncio.gather(server.run(serve, ready, done), other.run(client, str(server.name), ready, done))


if __name__ == "__main__":
    asyncio.run(main())
