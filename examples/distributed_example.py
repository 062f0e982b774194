"""The tutorial's DistributedExample, translated line by line.

    defmodule DistributedExample do
      def start_node do
        # Start a node with a name
        Node.start(:"worker@192.168.1.100")
        Node.set_cookie(:my_cookie)
      end
      def connect_to_node(node_name) do
        case Node.connect(node_name) do
          true ->
            IO.puts("Connected to #{node_name}")
            :ok
          false ->
            IO.puts("Failed to connect to #{node_name}")
            :error
        end
      end
      def spawn_remote_process(node_name, module, function, args) do
        Node.spawn(node_name, module, function, args)
      end
      def call_remote_function(node_name, module, function, args) do
        :rpc.call(node_name, module, function, args)
      end
    end

`Node.start` is `dist.start(name)`: like Elixir's, it names a node that is
already running (`main` below is its first process, and keeps its pid).
The name is on loopback, with this OS process's pid in it so two runs on one
machine do not collide in EPMD. A remote spawn names a Python function,
`"module:function"`, which the other node must allow.

Run: `python examples/distributed_example.py` (it starts the node it
connects to, `beamish node`, and stops it at the end).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import beamish
from beamish import Pid, Term, dist
from beamish.dist import rpc

ROOT = Path(__file__).resolve().parent.parent


async def start_node() -> None:
    # Start a node with a name
    await dist.start(f"worker_{os.getpid()}@127.0.0.1")
    dist.set_cookie("my_cookie")


async def connect_to_node(node_name: str) -> str:
    if await dist.connect(node_name):
        print(f"Connected to {node_name}")
        return "ok"
    print(f"Failed to connect to {node_name}")
    return "error"


async def spawn_remote_process(node_name: str, module: str, function: str, args: list[Term]) -> Term:
    return await dist.spawn(node_name, f"{module}:{function}", *args)


async def call_remote_function(node_name: str, module: str, function: str, args: list[Term]) -> Term:
    return await rpc.call(node_name, module, function, args)


def greet(to: Pid) -> None:
    """What `spawn_remote_process` runs on the other node."""
    beamish.send(to, ("hello from", dist.node()))


async def main(other: str) -> None:
    print(f"running as {beamish.self().node}; after start_node:")
    await start_node()
    print(f"  node {dist.node()}, first process {beamish.self()}")
    await connect_to_node(other)
    await connect_to_node(f"nobody_{os.getpid()}@127.0.0.1")
    print(f"rpc math.sqrt(16.0) on {other}: {await call_remote_function(other, 'math', 'sqrt', [16.0])}")
    pid = await spawn_remote_process(other, "examples.distributed_example", "greet", [beamish.self()])
    greeting, where = await beamish.receive(timeout=10)
    print(f"spawned {pid} there, which says: {greeting} {where}")
    await dist.stop()


if __name__ == "__main__":
    other = f"peer_{os.getpid()}@127.0.0.1"
    peer = subprocess.Popen(
        [sys.executable, "-m", "beamish", "node", "--name", other, "--cookie", "my_cookie",
         "--rpc-allow", "math", "--spawn-allow", "examples.distributed_example:greet"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert peer.stdout is not None
        peer.stdout.readline()  # "node ... up on ...": it is registered and listening
        beamish.run(main, other)
    finally:
        peer.terminate()
        peer.communicate(timeout=10)
