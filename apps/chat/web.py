"""The chat's HTTP edge (aiohttp, in the node's event loop): the page, the
`phoenix` client's module from npm, a list of rooms, and the Phoenix socket
endpoint. It only translates: each WebSocket becomes a beamish process
(`apps.chat.socket.serve_socket`) fed the frames this edge reads.

>>> from apps.chat.web import ASSETS
>>> ASSETS.name
'assets'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

import beamish
from beamish import GenServer
from beamish.node import current_node

from .channel import RoomChannel
from .room import STORE
from .socket import Channel, Limits, serve_socket
from .store import Store

log = logging.getLogger("apps.chat")

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
ASSETS = HERE / "assets"
PHOENIX_JS = ASSETS / "node_modules" / "phoenix" / "priv" / "static" / "phoenix.mjs"


def route(topic: str) -> Channel | None:
    return RoomChannel() if topic.startswith("room:") else None


def make_app(limits: Limits) -> web.Application:
    node = current_node()

    async def index(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def phoenix_js(request: web.Request) -> web.StreamResponse:
        if not PHOENIX_JS.exists():
            raise web.HTTPNotFound(text="the phoenix client is not installed: make test runs npm ci in apps/chat/assets")
        return web.FileResponse(PHOENIX_JS, headers={"Content-Type": "text/javascript"})

    async def rooms(request: web.Request) -> web.StreamResponse:
        return web.json_response({"rooms": await node.in_process(lambda: Store.rooms(STORE))})

    async def websocket(request: web.Request) -> web.StreamResponse:
        if request.query.get("vsn", "2.0.0") != "2.0.0":
            raise web.HTTPBadRequest(text="only the V2 serializer (vsn=2.0.0) is served")
        ws = web.WebSocketResponse(max_msg_size=limits.max_frame + 1, heartbeat=None)
        await ws.prepare(request)
        pid = node.spawn(serve_socket, (ws, route, limits), link_to=None, name=None)
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    node.send(pid, ("frame", message.data))
                elif message.type == WSMsgType.BINARY:
                    node.send(pid, ("frame", "binary frames are not served"))
        finally:
            node.send(pid, ("closed",))
        return ws

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/assets/phoenix.mjs", phoenix_js)
    app.router.add_get("/api/rooms", rooms)
    app.router.add_get("/socket/websocket", websocket)
    app.router.add_static("/static", STATIC)
    return app


class Web(GenServer):
    """The HTTP server as a supervised process: it listens in `init` and
    closes its sockets in `terminate`."""

    async def init(self, arg: dict[str, Any]) -> dict[str, Any]:
        beamish.process_flag("trap_exit", True)
        runner = web.AppRunner(make_app(arg.get("limits", Limits())), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, arg.get("host", "127.0.0.1"), arg.get("port", 0))
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        return {"runner": runner, "port": port}

    def handle_call(self, request: Any, from_: Any, st: dict[str, Any]) -> Any:
        from beamish import Reply

        return Reply(st["port"], st)

    async def terminate(self, reason: Any, st: Any) -> None:
        if isinstance(st, dict):
            await st["runner"].cleanup()
