"""The tutorial's ClusterManager, translated line by line.

    defmodule ClusterManager do
      use GenServer
      def start_link do
        GenServer.start_link(__MODULE__, [], name: __MODULE__)
      end
      def join_cluster(node_name) do
        GenServer.call(__MODULE__, {:join, node_name})
      end
      def get_cluster_status do
        GenServer.call(__MODULE__, :get_status)
      end
      @impl true
      def init(_args) do
        # Monitor node connections
        :net_kernel.monitor_nodes(true)
        {:ok, %{nodes: MapSet.new()}}
      end
      @impl true
      def handle_call({:join, node_name}, _from, state) do
        case Node.connect(node_name) do
          true ->
            new_nodes = MapSet.put(state.nodes, node_name)
            {:reply, :ok, %{state | nodes: new_nodes}}
          false ->
            {:reply, {:error, "Failed to connect"}, state}
        end
      end
      @impl true
      def handle_call(:get_status, _from, state) do
        {:reply, MapSet.to_list(state.nodes), state}
      end
      # Handle node up/down events
      @impl true
      def handle_info({:nodeup, node}, state) do
        IO.puts("Node #{node} joined the cluster")
        new_nodes = MapSet.put(state.nodes, node)
        {:noreply, %{state | nodes: new_nodes}}
      end
      @impl true
      def handle_info({:nodedown, node}, state) do
        IO.puts("Node #{node} left the cluster")
        new_nodes = MapSet.delete(state.nodes, node)
        {:noreply, %{state | nodes: new_nodes}}
      end
    end

`Node.connect` is `await dist.connect(...)`, so `handle_call` is an
`async def`. The node names are strings (`Atom`s from the distribution),
so the set holds `str`. For a cluster that forms itself and reconnects
nodes that come back, see `beamish.cluster.Cluster` (libcluster's).

Run: `python examples/cluster_manager.py` (it starts the node it joins,
`beamish node`, then stops it to show the nodedown).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import beamish
import beamish.testing
from beamish import GenServer, NoReply, Reply, Term, dist

ROOT = Path(__file__).resolve().parent.parent


class ClusterManager(GenServer):
    @classmethod
    async def start_link(cls, arg: Term = None, **_: Term) -> beamish.Pid:
        return await super().start_link([], name="ClusterManager")

    @staticmethod
    async def join_cluster(node_name: str) -> Term:
        return await GenServer.call("ClusterManager", ("join", node_name))

    @staticmethod
    async def get_cluster_status() -> Term:
        return await GenServer.call("ClusterManager", "get_status")

    def init(self, _args: Term) -> dict[str, set[str]]:
        # Monitor node connections
        dist.monitor_nodes(True)
        return {"nodes": set()}

    async def handle_call(self, request: Term, from_: Term, state: dict[str, set[str]]) -> Reply:
        match request:
            case ("join", node_name):
                if await dist.connect(node_name):
                    new_nodes = state["nodes"] | {node_name}
                    return Reply("ok", {**state, "nodes": new_nodes})
                return Reply(("error", "Failed to connect"), state)
            case "get_status":
                return Reply(sorted(state["nodes"]), state)
        return Reply(("error", ("unknown_call", request)), state)

    # Handle node up/down events
    def handle_info(self, msg: Term, state: dict[str, set[str]]) -> NoReply:
        match msg:
            case ("nodeup", node):
                print(f"Node {node} joined the cluster")
                return NoReply({**state, "nodes": state["nodes"] | {str(node)}})
            case ("nodedown", node):
                print(f"Node {node} left the cluster")
                return NoReply({**state, "nodes": state["nodes"] - {str(node)}})
        return NoReply(state)


async def main(other: str, peer: subprocess.Popen[str]) -> None:
    await dist.start(f"manager_{os.getpid()}@127.0.0.1", cookie="my_cookie")
    await ClusterManager.start_link()
    print("join:", await ClusterManager.join_cluster(other))
    print("join nobody:", await ClusterManager.join_cluster(f"nobody_{os.getpid()}@127.0.0.1"))
    print("status:", await ClusterManager.get_cluster_status())
    peer.terminate()  # the other node leaves: a nodedown
    await beamish.to_thread(peer.wait, 10)
    await beamish.testing.eventually(lambda: _status_is([]), timeout=10)
    print("status after it left:", await ClusterManager.get_cluster_status())
    await dist.stop()


async def _status_is(nodes: list[str]) -> bool:
    return bool(await ClusterManager.get_cluster_status() == nodes)


if __name__ == "__main__":
    other = f"peer_{os.getpid()}@127.0.0.1"
    peer = subprocess.Popen(
        [sys.executable, "-m", "beamish", "node", "--name", other, "--cookie", "my_cookie"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert peer.stdout is not None
        peer.stdout.readline()  # "node ... up on ...": it is registered and listening
        beamish.run(main, other, peer)
    finally:
        peer.kill()
        peer.communicate(timeout=10)
