"""The observer's web page and its JSON, served by aiohttp in the node's
loop, on loopback unless told otherwise: the nodes this node sees, each
node's supervision trees, its processes sortable by queue length, memory
and activity, one process's details and state, and `/metrics`. The page
polls every second. A peer is asked through its probe over the
distribution protocol (`beamish.observer._probe`); a peer without one shows
its connection only.

>>> from beamish.observer._web import PAGE
>>> PAGE.name
'observer.html'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

import beamish
from beamish import GenServer, dist
from beamish.node import Node, current_node

from ._probe import PROBE, SORTS, ensure_probe, process, processes, tree
from .metrics import MetricsExporter

__all__: list[str] = []  # beamish.observer is the public face

PAGE = Path(__file__).with_name("observer.html")
ASK_TIMEOUT = 2.0


class Observer:
    """A running observer: its `port`, and `stop()`."""

    def __init__(self, node: Node, exporter: MetricsExporter) -> None:
        self.node = node
        self.exporter = exporter
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _ask(self, node_name: str, local: Any, request: tuple[Any, ...]) -> Any:
        me = str(self.node.name)
        if node_name in ("", me):
            return await self.node.in_process(local)
        if node_name not in {str(n) for n in (dist.nodes() if dist.is_alive() else [])}:
            raise web.HTTPNotFound(text=f'{{"error": "not connected to {node_name[:100]}"}}', content_type="application/json")

        async def remote() -> Any:
            return await GenServer.call((PROBE, node_name), request, ASK_TIMEOUT)

        try:
            return await self.node.in_process(remote)
        except beamish.Exit as exc:
            raise web.HTTPBadGateway(text=f'{{"error": "{node_name[:100]} did not answer: {str(exc.reason)[:100]}"}}',
                                     content_type="application/json") from None  # fmt: skip

    def app(self) -> web.Application:
        async def page(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(PAGE)

        async def nodes(request: web.Request) -> web.StreamResponse:
            others = [str(n) for n in dist.nodes()] if dist.is_alive() else []
            return web.json_response({"self": str(self.node.name), "nodes": others})

        async def trees(request: web.Request) -> web.StreamResponse:
            return web.json_response(await self._ask(request.query.get("node", ""), tree, ("tree",)))

        async def procs(request: web.Request) -> web.StreamResponse:
            sort = request.query.get("sort", "message_queue_len")
            if sort not in SORTS:
                return web.json_response({"error": f"sort is one of {list(SORTS)}"}, status=400)
            try:
                n = max(1, min(500, int(request.query.get("n", "50"))))
            except ValueError:
                return web.json_response({"error": "n is a number"}, status=400)

            async def local() -> Any:
                return processes(sort, n)

            return web.json_response(await self._ask(request.query.get("node", ""), local, ("processes", sort, n)))

        async def one(request: web.Request) -> web.StreamResponse:
            pid = request.query.get("pid", "")[:300]
            found = await self._ask(request.query.get("node", ""), lambda: process(pid), ("process", pid))
            if found is None:
                return web.json_response({"error": "no such process"}, status=404)
            return web.json_response(found)

        async def metrics(request: web.Request) -> web.StreamResponse:
            return web.Response(body=self.exporter.scrape(), content_type="text/plain", charset="utf-8")

        app = web.Application()
        app.router.add_get("/", page)
        app.router.add_get("/api/nodes", nodes)
        app.router.add_get("/api/tree", trees)
        app.router.add_get("/api/processes", procs)
        app.router.add_get("/api/process", one)
        app.router.add_get("/metrics", metrics)
        return app

    async def start(self, port: int, host: str) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self.exporter.stop()
        if self._runner is not None:
            await self._runner.cleanup()


async def serve(port: int = 0, host: str = "127.0.0.1") -> Observer:
    """Serve the observer page (and `/metrics`) for the calling node, and
    start its probe so that observers on other nodes see it too."""
    await ensure_probe()
    node = current_node()
    exporter = MetricsExporter(node)
    await exporter.start_collecting()
    observer = Observer(node, exporter)
    await observer.start(port, host)
    return observer
