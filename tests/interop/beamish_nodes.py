"""Two beamish nodes in one event loop, for the distribution tests.

A Node is tied to its processes, not to a thread, so two of them can share a
loop: the tests stay fast and still talk the Erlang distribution protocol over
real loopback TCP (or TLS).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

from beamish import Atom, Node, dist
from beamish.terms import Term


def run_loop(main: Coroutine[Any, Any, Term], use_uvloop: bool) -> Term:
    """`asyncio.run(main)`, or uvloop's (its transports are its own)."""
    if use_uvloop:
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def two_nodes(
    server: Callable[[], Awaitable[Term]],
    client: Callable[[Atom], Awaitable[Term]],
    use_uvloop: bool = False,
    client_options: dict[str, Any] | None = None,
    **server_options: Any,
) -> Term:
    """Run `server()` on node A and `client(a_name)` on node B, in one loop;
    return the client's result. Node A lives until the client is done.
    `server_options` and `client_options` go to each node's `dist.start`."""
    ensure_epmd()
    cookie = new_cookie()
    a = Node(f"{unique_name('a')}@{HOST}")
    b = Node(f"{unique_name('b')}@{HOST}")
    ready: asyncio.Event
    done: asyncio.Event

    async def a_main() -> None:
        await dist.start(cookie=cookie, **server_options)
        await server()
        ready.set()
        await done.wait()
        await dist.stop()

    async def b_main() -> Term:
        await dist.start(cookie=cookie, **(client_options or {}))
        await ready.wait()
        try:
            return await client(a.name)
        finally:
            done.set()
            await dist.stop()

    async def both() -> Term:
        nonlocal ready, done
        ready, done = asyncio.Event(), asyncio.Event()
        _, result = await asyncio.wait_for(asyncio.gather(a.run(a_main), b.run(b_main)), 60)
        return result

    return run_loop(both(), use_uvloop)


def many_nodes(
    names: list[str],
    main: Callable[[list[Atom]], Awaitable[Term]],
    *,
    cookie: str,
    timeout: float = 60.0,
    **options: Any,
) -> Term:
    """Run nodes `names` (full names) in one loop, each distributed with
    `cookie` and `options`; run `main(others)` on the first once every
    other is up, and return its result. The others idle until it is done."""
    ensure_epmd()
    nodes = [Node(name) for name in names]
    ready: list[asyncio.Event] = []
    done: asyncio.Event

    def idle(i: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await dist.start(cookie=cookie, **options)
            ready[i].set()
            try:
                await done.wait()
            finally:
                await dist.stop()

        return run

    async def first() -> Term:
        await dist.start(cookie=cookie, **options)
        try:
            for event in ready:
                await event.wait()
            return await main([n.name for n in nodes[1:]])
        finally:
            done.set()
            await dist.stop()

    async def all_of_them() -> Term:
        nonlocal done
        done = asyncio.Event()
        ready.extend(asyncio.Event() for _ in nodes[1:])
        runs = [nodes[0].run(first), *(n.run(idle(i)) for i, n in enumerate(nodes[1:]))]
        results = await asyncio.wait_for(asyncio.gather(*runs), timeout)
        return results[0]

    return asyncio.run(all_of_them())
