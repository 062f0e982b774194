"""Several beamish nodes in one event loop, each driven by the test.

`cluster(n)` starts `n` distributed nodes (unique names, one cookie) and
yields `PyNode`s; `await py.do(fn)` runs `await fn()` in a new process of
that node and returns its result (or raises what it raised), so a test
reads as a script over the cluster. `erl(py, node, code)` evaluates Erlang
code on a real Erlang node by rpc from a beamish node (erl_scan, erl_parse,
erl_eval), without starting a probe node that would join the cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from tests.interop.erlang import HOST, ensure_epmd, unique_name

import beamish
from beamish import Atom, Node, dist
from beamish.dist import rpc
from beamish.terms import Term


class PyNode:
    def __init__(self, cookie: str, prefix: str = "py", name: str | None = None, **options: Any) -> None:
        self.node = Node(name or f"{unique_name(prefix)}@{HOST}")
        self.name = str(self.node.name)
        self.cookie = cookie
        self.options = options
        self.commands: asyncio.Queue[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]] | None] = asyncio.Queue()
        self.started = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None

    async def _main(self) -> None:
        await dist.start(cookie=self.cookie, **self.options)
        self.started.set()
        try:
            while (item := await self.commands.get()) is not None:
                fn, fut = item
                beamish.spawn(self._run, fn, fut)
        finally:
            await dist.stop()

    @staticmethod
    async def _run(fn: Callable[[], Awaitable[Any]], fut: asyncio.Future[Any]) -> None:
        try:
            result = await fn()
        except BaseException as exc:  # handed to the test
            if not fut.done():
                fut.set_exception(exc)
            return
        if not fut.done():
            fut.set_result(result)

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.node.run(self._main))
        await asyncio.wait_for(self.started.wait(), 30)

    async def do(self, fn: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.commands.put((fn, fut))
        return await asyncio.wait_for(fut, timeout)

    async def call(self, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
        """`do` for a plain function (run in a process of the node)."""

        async def wrapped() -> Any:
            return fn()

        return await self.do(wrapped, timeout)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            await self.commands.put(None)
            await asyncio.wait_for(self.task, 30)


@asynccontextmanager
async def cluster(n: int, cookie: str, **options: Any) -> AsyncIterator[list[PyNode]]:
    ensure_epmd()
    nodes = [PyNode(cookie, **options) for _ in range(n)]
    try:
        for py in nodes:
            await py.start()
        yield nodes
    finally:
        for py in nodes:
            try:
                await py.stop()
            except Exception:
                pass


def charlist(text: str) -> list[int]:
    return [ord(c) for c in text]


async def erl_eval(node: str, code: str) -> Term:
    """Evaluate Erlang `code` (expressions ending in a value, with a final
    `.`) on `node`; run inside a beamish process."""
    scanned = await rpc.call(node, "erl_scan", "string", [charlist(code)])
    assert type(scanned) is tuple and scanned[0] == "ok", scanned
    parsed = await rpc.call(node, "erl_parse", "parse_exprs", [scanned[1]])
    assert type(parsed) is tuple and parsed[0] == "ok", parsed
    value = await rpc.call(node, "erl_eval", "exprs", [parsed[1], []])
    assert type(value) is tuple and value[0] == "value", value
    return value[1]


async def erl(py: PyNode, node: str, code: str, timeout: float = 30.0) -> Term:
    """`erl_eval` driven from the beamish node `py`."""
    return await py.do(lambda: erl_eval(node, code), timeout)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll `check` until it holds (bounded): never a fixed sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def atom(text: str) -> Atom:
    return Atom(text)
