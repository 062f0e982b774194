"""A backend service of the gateway (users, orders, payments): a small HTTP
service with its data in SQLite, in its own node, that registers itself
through service discovery (`beamish.cluster.discovery`) while it runs.

Routes (for service `users`; the others alike): `GET /` (what this is),
`GET /users` (the list),
`GET /users/<id>`, `POST /users` (a JSON object, stored), and, to exercise
the gateway, `GET /users/slow?ms=N`, `GET /users/big?bytes=N`, `POST
/users/echo` (the body back, streamed), `/users/fail` (a 500, any method;
`GET /users/failures` lists the methods it answered), `GET /users/headers`
(what arrived; `?set_cookie=V` also sets two cookies, `session=V` and `theme=dark`) and `GET /users/cancelled` (slow requests whose client left).
It listens on loopback and registers `http://$BACKEND_HOST:<port>`
(default host 127.0.0.1).

>>> from apps.gateway.backend import SEED
>>> sorted(SEED)
['orders', 'payments', 'users']
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from aiohttp import web

import beamish
from beamish import Application, GenServer, Pid
from beamish.cluster import discovery

SEED: dict[str, list[dict[str, Any]]] = {
    "users": [{"id": 1, "name": "John"}, {"id": 2, "name": "Ann"}],
    "orders": [{"id": 123, "items": ["item1", "item2"]}],
    "payments": [{"id": 7, "status": "processed"}],
}


def _db(path: Path, service: str) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"CREATE TABLE IF NOT EXISTS {service} (id INTEGER PRIMARY KEY, doc TEXT NOT NULL)")
    if db.execute(f"SELECT COUNT(*) FROM {service}").fetchone()[0] == 0:
        db.executemany(f"INSERT INTO {service} (id, doc) VALUES (?, ?)", [(r["id"], json.dumps(r)) for r in SEED[service]])
    return db


def make_app(service: str, db: sqlite3.Connection, instance: str) -> web.Application:
    lock = asyncio.Lock()  # one writer at a time on the connection
    cancelled: list[str] = []  # tags of requests whose client went away
    failed: list[str] = []  # methods of the requests /fail answered

    async def listing(request: web.Request) -> web.StreamResponse:
        rows = db.execute(f"SELECT doc FROM {service} ORDER BY id").fetchall()
        return web.json_response([json.loads(r[0]) for r in rows], headers={"X-Instance": instance})

    async def one(request: web.Request) -> web.StreamResponse:
        try:
            key = int(request.match_info["id"])
        except ValueError:
            return web.json_response({"error": "an id is a number"}, status=400)
        row = db.execute(f"SELECT doc FROM {service} WHERE id = ?", (key,)).fetchone()
        if row is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(json.loads(row[0]), headers={"X-Instance": instance})

    async def create(request: web.Request) -> web.StreamResponse:
        try:
            doc = await request.json()
        except ValueError:
            return web.json_response({"error": "a JSON object"}, status=400)
        if not isinstance(doc, dict):
            return web.json_response({"error": "a JSON object"}, status=400)
        async with lock:
            cur = db.execute(f"INSERT INTO {service} (doc) VALUES (?)", (json.dumps(doc),))
            doc = {**doc, "id": cur.lastrowid}
            db.execute(f"UPDATE {service} SET doc = ? WHERE id = ?", (json.dumps(doc), cur.lastrowid))
        return web.json_response(doc, status=201, headers={"X-Instance": instance})

    async def slow(request: web.Request) -> web.StreamResponse:
        try:
            await asyncio.sleep(int(request.query.get("ms", "1000")) / 1000)
        except asyncio.CancelledError:
            cancelled.append(request.query.get("tag", ""))  # the gateway gave up and closed: seen here
            raise
        return web.json_response({"slept": True, "instance": instance})

    async def big(request: web.Request) -> web.StreamResponse:
        size = min(int(request.query.get("bytes", "1000")), 64 << 20)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        chunk = b"x" * 65536
        while size > 0:
            await response.write(chunk[: min(size, len(chunk))])
            size -= len(chunk)
        await response.write_eof()
        return response

    async def echo(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "X-Instance": instance})
        await response.prepare(request)
        async for chunk in request.content.iter_chunked(65536):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def headers(request: web.Request) -> web.StreamResponse:
        response = web.json_response({"headers": dict(request.headers), "query": dict(request.query), "path": request.path})
        if "set_cookie" in request.query:
            response.set_cookie("session", request.query["set_cookie"][:64])
            response.set_cookie("theme", "dark")  # two Set-Cookie headers: a proxy must pass both
        return response

    async def fail(request: web.Request) -> web.StreamResponse:
        failed.append(request.method)
        return web.json_response({"error": "this backend fails on purpose"}, status=500)

    async def failures(request: web.Request) -> web.StreamResponse:
        return web.json_response(failed)

    async def cancellations(request: web.Request) -> web.StreamResponse:
        return web.json_response(cancelled)

    async def index(request: web.Request) -> web.StreamResponse:
        return web.json_response({"service": service, "instance": instance, "try": [f"/{service}", f"/{service}/{SEED[service][0]['id']}"]})

    app = web.Application(client_max_size=64 << 20)
    base = f"/{service}"
    app.router.add_get("/", index)
    app.router.add_get(base, listing)
    app.router.add_post(base, create)
    app.router.add_get(f"{base}/slow", slow)
    app.router.add_get(f"{base}/big", big)
    app.router.add_post(f"{base}/echo", echo)
    app.router.add_get(f"{base}/headers", headers)
    app.router.add_route("*", f"{base}/fail", fail)
    app.router.add_get(f"{base}/failures", failures)
    app.router.add_get(f"{base}/cancelled", cancellations)
    app.router.add_get(base + "/{id}", one)
    return app


class BackendServer(GenServer):
    """The HTTP server and the service's registration, as one process: the
    instance is discoverable while this process lives."""

    async def init(self, arg: dict[str, Any]) -> dict[str, Any]:
        beamish.process_flag("trap_exit", True)
        service, data = arg["service"], Path(arg["data_dir"])
        instance = arg.get("instance", f"{service}-{os.getpid()}")
        db = await beamish.to_thread(_db, data / f"{service}.db", service)
        # handler_cancellation: a request whose client went is cancelled (the gateway's tests watch it).
        runner = web.AppRunner(make_app(service, db, instance), access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", arg.get("port", 0)).start()
        port = runner.addresses[0][1]
        # The name the gateway reaches it by (BACKEND_HOST); it listens on loopback.
        url = f"http://{arg.get('host', '127.0.0.1')}:{port}"
        await discovery.register_service(service, url, {"instance": instance, "started": time.time()})
        return {"runner": runner, "url": url}

    def handle_call(self, request: Any, from_: Any, st: dict[str, Any]) -> Any:
        from beamish import Reply

        return Reply(st["url"], st)

    async def terminate(self, reason: Any, st: Any) -> None:
        if isinstance(st, dict):
            await st["runner"].cleanup()


class Backend(Application):
    """`BACKEND_SERVICE=users beamish run apps.gateway.backend:Backend --name ...`."""

    name = "backend"

    async def start(self, start_type: Any, args: Any) -> Pid | None:
        from beamish import ChildSpec, Supervisor

        service = os.environ.get("BACKEND_SERVICE", "users")
        if service not in SEED:
            raise ValueError(f"BACKEND_SERVICE is one of {sorted(SEED)}, not {service!r}")
        arg = {"service": service, "data_dir": os.environ.get("BACKEND_DATA_DIR", "data"),
               "instance": os.environ.get("BACKEND_INSTANCE", service), "host": os.environ.get("BACKEND_HOST", "127.0.0.1")}  # fmt: skip

        async def start_server() -> Pid | None:
            return await BackendServer.start_link(arg, name="Backend.Server")

        sup = await Supervisor.start_link(
            [discovery.child_spec(), ChildSpec(id="server", start=(start_server, ()))], strategy="rest_for_one"
        )
        url = await GenServer.call("Backend.Server", "url")
        print(f"{arg['instance']}: {url}/", flush=True)
        return sup
