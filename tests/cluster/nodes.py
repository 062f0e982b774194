"""N beamish nodes in one event loop, fully connected, for the cluster tests.

`run_cluster(n, body)` starts `n` distributed nodes (a unique name each, one
cookie), connects every pair, and runs `await body(cluster)` in a plain
asyncio task; `await cluster.on(i, fn)` runs `fn()` (sync or async) as node
`i`'s host process and returns its result. As in `beamish_nodes.py`, the
nodes share a loop but talk the distribution protocol over loopback TCP.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

from beamish import Atom, Node, dist
from beamish.terms import Term

Job = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class Cluster:
    def __init__(self, nodes: list[Node], queues: list[asyncio.Queue[Job | None]]) -> None:
        self.nodes = nodes
        self.queues = queues
        self.names = [Atom(str(n.name)) for n in nodes]

    async def on(self, i: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` as node `i`'s host process; return what it returns."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queues[i].put_nowait((functools.partial(fn, *args, **kwargs), fut))
        return await fut

    async def stop_node(self, i: int) -> None:
        """Leave the cluster abruptly: node `i` closes all its connections."""
        await self.on(i, dist.stop)


def run_cluster(n: int, body: Callable[[Cluster], Awaitable[Term]], timeout: float = 60) -> Term:
    ensure_epmd()
    cookie = new_cookie()
    nodes = [Node(f"{unique_name(f'n{i}')}@{HOST}") for i in range(n)]

    async def main() -> Term:
        queues: list[asyncio.Queue[Job | None]] = [asyncio.Queue() for _ in nodes]
        started = [asyncio.Event() for _ in nodes]

        async def host(i: int) -> None:
            await dist.start(cookie=cookie)
            started[i].set()
            while (job := await queues[i].get()) is not None:
                fn, fut = job
                try:
                    result = fn()
                    if inspect.isawaitable(result):
                        result = await result
                    fut.set_result(result)
                except Exception as exc:
                    fut.set_exception(exc)
            if dist.is_alive():
                await dist.stop()

        tasks = [asyncio.ensure_future(node.run(host, i)) for i, node in enumerate(nodes)]
        for ev in started:
            await ev.wait()
        cluster = Cluster(nodes, queues)
        try:
            for i in range(n):
                for j in range(i + 1, n):
                    peer = cluster.names[j]
                    assert await cluster.on(i, dist.connect, peer), f"{i} cannot connect to {j}"
            return await body(cluster)
        finally:
            for q in queues:
                q.put_nowait(None)
            await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(asyncio.wait_for(main(), timeout))


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 5.0) -> None:
    """Poll `condition` (sync or async) every 5 ms until it holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def holds() -> bool:
        result = condition()
        return bool(await result if inspect.isawaitable(result) else result)

    while not await holds():
        if loop.time() > deadline:
            raise AssertionError(f"still false after {timeout} s: {condition!r}")
        await asyncio.sleep(0.005)
