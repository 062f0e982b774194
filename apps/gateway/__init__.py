"""The API gateway: the seed's ApiGateway made real. A real HTTP server
(HTTP/1.1 over httptools' parser, on the node's own event loop) in front
of real backend services (`apps.gateway.backend`, each instance its own
node), found through service discovery, each service behind its circuit breaker, load balanced, with
`/health` and `/metrics`.

The tree, one node:

    Gateway.Supervisor (one_for_one)
    ├── Cluster          keeps the node connected to the backends' nodes
    ├── discovery        the cluster's service registry (pg underneath)
    ├── breaker per service   ("users", "orders", "payments")
    └── Gateway.Server   the HTTP server; `apps.gateway.proxy` does the work

Run it: the gateway, `GATEWAY_PEERS=users1@127.0.0.1,orders1@127.0.0.1
beamish run apps.gateway:Gateway --name gw@127.0.0.1 --cookie c` (it keeps
connecting to its peers, so a backend restarted later is found again), and
the backends, `BACKEND_SERVICE=users beamish run apps.gateway.backend:Backend
--name users1@127.0.0.1 --cookie c` (and `orders`, `payments`). The gateway
prints `gateway: http://127.0.0.1:<port>/`.

Configuration, from the environment or the application's env (`[gateway]`
in `config/*.toml`): `GATEWAY_PORT` / `port`; `GATEWAY_ROUTES` (`/users=users,
/orders=orders`) / `routes` (a table), the seed's three by default;
`GATEWAY_STRATEGY` / `strategy` (`round_robin` or `least_outstanding`);
`GATEWAY_TIMEOUT` / `timeout` (seconds per attempt); `GATEWAY_PEERS` (node
names to stay connected to) beside `[cluster.topologies]`.

>>> from apps.gateway import DEFAULT_ROUTES, parse_routes
>>> DEFAULT_ROUTES["/users"]
'users'
>>> parse_routes("/api/users=users, /orders=orders")
{'/api/users': 'users', '/orders': 'orders'}
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import beamish
from beamish import Application, ChildSpec, CircuitBreaker, GenServer, Pid, Reply, Supervisor
from beamish.cluster import Backoff, Cluster, Static, Topology, discovery, parse_topologies

from .metrics import Metrics
from .proxy import BackendFailed, Config, NoInstance, Proxy, health
from .server import Request, Response, json_response, serve
from .upstream import Pool

__all__ = ["BREAKER", "DEFAULT_ROUTES", "Gateway", "GatewayServer", "children", "parse_routes", "port"]

DEFAULT_ROUTES = {"/users": "users", "/orders": "orders", "/payments": "payments"}

# Each service's breaker: five failures in a row open it for five seconds,
# then three trial requests close it again (or one failure reopens it).
# What counts is what says the service is unwell: a 5xx or an unreachable
# instance, a timeout, no instance at all; a client that hangs up is none.
BREAKER: dict[str, Any] = {
    "consecutive_failures": 5,
    "wait_duration_in_open_state": 5.0,
    "permitted_calls_in_half_open": 3,
    "record_exceptions": (BackendFailed, TimeoutError, NoInstance),
}


def parse_routes(text: str) -> dict[str, str]:
    """`/prefix=service` items separated by commas."""
    routes = {}
    for item in text.split(","):
        prefix, _, service = item.strip().partition("=")
        if not prefix.startswith("/") or not service:
            raise ValueError(f"routes are /prefix=service items, not {item.strip()!r}")
        routes[prefix] = service
    return routes


class GatewayServer(GenServer):
    """The HTTP server as a supervised process: it owns the listening
    socket (`apps.gateway.server`) and the connection pool to the backends
    (`apps.gateway.upstream`), and closes both when it stops. Each request
    runs in a process of its own (`Node.in_process`), killed if its client
    hangs up."""

    async def init(self, arg: dict[str, Any]) -> dict[str, Any]:
        beamish.process_flag("trap_exit", True)
        config: Config = arg["config"]
        node = beamish.node.current_node()
        # One keep-alive pool for every backend, no cap on connections (the
        # backends' own limits apply), idle connections kept 30 s. It keeps
        # no cookies: a backend's Set-Cookie is for the client that asked.
        pool = Pool(keepalive=30.0)
        metrics = Metrics(sorted(set(config.routes.values())))
        proxy = Proxy(config, pool, metrics)

        index = {"gateway": "beamish", "routes": config.routes, "also": ["/health", "/metrics"]}

        async def handler(request: Request) -> Response:
            if request.method in ("GET", "HEAD"):
                if request.path == "/":
                    return json_response(index)
                if request.path == "/health":
                    return json_response(health(config.routes))
                if request.path == "/metrics":
                    body = await node.in_process(metrics.render)
                    return Response(200, [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")], body)
            return await node.in_process(lambda: proxy.handle(request))

        # A client that hangs up has its handler cancelled, and with it the backend request.
        server = await serve(handler, arg.get("host", "127.0.0.1"), arg.get("port", 0))
        return {"server": server, "pool": pool, "port": server.sockets[0].getsockname()[1]}

    def handle_call(self, request: Any, from_: Any, st: dict[str, Any]) -> Reply:
        return Reply(st["port"], st)

    async def terminate(self, reason: Any, st: Any) -> None:
        if isinstance(st, dict):
            st["server"].close()
            st["pool"].close()


def children(
    config: Config, *, port: int = 0, breaker: Mapping[str, Any] | None = None, topologies: Sequence[Topology] = ()
) -> list[Any]:
    """The gateway's children: cluster formation, discovery, a breaker per
    service (`BREAKER`, updated by `breaker`), and the HTTP server."""
    options = {**BREAKER, **(breaker or {})}
    specs: list[Any] = [Cluster.child_spec(topologies), discovery.child_spec()]
    for service in sorted(set(config.routes.values())):
        specs.append(CircuitBreaker.child_spec(service, **options))

    async def start_server() -> Pid | None:
        return await GatewayServer.start_link({"config": config, "port": port}, name="Gateway.Server")

    specs.append(ChildSpec(id="Gateway.Server", start=(start_server, ())))
    return specs


async def port() -> int:
    """The port the gateway listens on."""
    answer: int = await GenServer.call("Gateway.Server", "port")
    return answer


def _setting(env: Mapping[str, Any], key: str, default: Any) -> Any:
    return os.environ.get(f"GATEWAY_{key.upper()}") or env.get(key) or default


class Gateway(Application):
    name = "gateway"

    async def start(self, start_type: Any, args: Any) -> Pid | None:
        env = beamish.application.get_all_env("gateway")
        routes = env.get("routes") or DEFAULT_ROUTES
        if "GATEWAY_ROUTES" in os.environ:
            routes = parse_routes(os.environ["GATEWAY_ROUTES"])
        config = Config(
            dict(routes),
            strategy=str(_setting(env, "strategy", "round_robin")),
            timeout=float(_setting(env, "timeout", 10.0)),
        )
        topologies = parse_topologies(beamish.application.get_all_env("cluster").get("topologies") or {})
        peers = [p for p in os.environ.get("GATEWAY_PEERS", "").split(",") if p]
        if peers:
            topologies.append(Topology("gateway_peers", Static(tuple(peers)), polling_interval=1.0, backoff=Backoff(0.5, 5.0)))
        sup = await Supervisor.start_link(
            children(config, port=int(_setting(env, "port", 0)), topologies=topologies),
            strategy="one_for_one",
            name="Gateway.Supervisor",
        )
        print(f"gateway: http://127.0.0.1:{await port()}/", flush=True)
        return sup
