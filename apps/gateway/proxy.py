"""The gateway's proxying: route by path prefix,
pick an instance (round robin, or the least outstanding requests), guard
the service with its circuit breaker, and stream the request and the answer
both ways through a keep-alive connection pool (`apps.gateway.upstream`).

- hop-by-hop headers are removed both ways, `X-Forwarded-For`, `-Proto` and
  `-Host` added;
- idempotent methods (GET, HEAD, PUT, DELETE, OPTIONS) are retried with
  backoff on another instance when one cannot be reached, times out, or
  answers 5xx, as long as nothing has been sent to the client yet;
- 404 for an unknown prefix; 503 with a JSON body naming the service and
  `Retry-After` when its breaker is open or it has no instance; 502 when the
  backend fails (5xx, a refused or broken connection), 504 when it times out;
- a client that disconnects cancels the backend request (the server cancels
  its handler, and the upstream connection is closed with it).

>>> from apps.gateway.proxy import strip_hop_by_hop
>>> strip_hop_by_hop([("Connection", "close, X-B"), ("Keep-Alive", "5"), ("X-A", "1"), ("X-B", "2"), ("X-A", "3")])
[('X-A', '1'), ('X-A', '3')]
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from beamish import CircuitBreaker, CircuitOpen
from beamish.cluster import discovery

from .server import HTTPError, Request, Response, json_response
from .upstream import Pool, UpstreamError
from .upstream import Response as UpstreamResponse

HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
    "Expect",  # the gateway's server answers 100-continue itself
))  # fmt: skip
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
SMALL = 65536  # an answer with a Content-Length up to this is read whole, not streamed
MAX_BODY = 64 << 20  # a request body read whole (to be replayed on a retry) at most


def strip_hop_by_hop(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The end-to-end headers: repeated ones (Set-Cookie) all kept, in order."""
    items = list(headers.items() if isinstance(headers, Mapping) else headers)
    named = {v.strip().lower() for k, v in items if k.lower() == "connection" for v in v.split(",")}
    drop = HOP_BY_HOP | named if named else HOP_BY_HOP
    return [(k, v) for k, v in items if k.lower() not in drop]


class NoInstance(Exception):
    """No live instance of the service: not the backend's failure (the breaker ignores it)."""


class BackendFailed(Exception):
    """A 5xx, a refused or broken connection: the breaker counts it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass
class Config:
    routes: dict[str, str]  # path prefix -> service
    strategy: str = "round_robin"  # or "least_outstanding"
    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.05

    def __post_init__(self) -> None:
        if self.strategy not in ("round_robin", "least_outstanding"):
            raise ValueError(f"strategy is round_robin or least_outstanding, not {self.strategy!r}")


@dataclass
class Stats:
    outstanding: dict[str, int] = field(default_factory=dict)  # endpoint -> requests in flight
    turn: dict[str, int] = field(default_factory=dict)  # service -> round-robin position


class Proxy:
    def __init__(self, config: Config, pool: Pool, metrics: Any) -> None:
        self.config = config
        self.pool = pool
        self.metrics = metrics
        self.stats = Stats()
        self._routes: tuple[dict[str, str], list[tuple[str, str, str]]] = ({}, [])

    def route(self, path: str) -> tuple[str, str] | None:
        routes, ordered = self._routes
        if routes != self.config.routes:  # longest prefix first, sorted once per routing table
            ordered = [(p, p.rstrip("/") + "/", s) for p, s in sorted(self.config.routes.items(), key=lambda kv: -len(kv[0]))]
            self._routes = (dict(self.config.routes), ordered)
        for prefix, below, service in ordered:
            if path == prefix or path.startswith(below):
                return prefix, service
        return None

    def pick(self, service: str, tried: set[str]) -> str:
        instances = [i.endpoint for i in discovery.discover(service) if isinstance(i.endpoint, str)]
        fresh = [e for e in instances if e not in tried] if tried else instances
        fresh = fresh or instances
        if not fresh:
            raise NoInstance(service)
        if self.config.strategy == "least_outstanding":
            return min(fresh, key=lambda e: (self.stats.outstanding.get(e, 0), e))
        n = self.stats.turn.get(service, 0)
        self.stats.turn[service] = n + 1
        if len(fresh) > 1:
            fresh.sort()
        return fresh[n % len(fresh)]

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        found = self.route(request.path)
        if found is None:
            return self._done("unknown", json_response({"error": "no route", "path": request.path[:200]}, 404), started)
        prefix, service = found
        try:
            response = await CircuitBreaker.call(service, lambda: self._forward(request, service))
        except CircuitOpen as exc:
            retry = 1 if math.isinf(exc.retry_after) else max(1, math.ceil(exc.retry_after))
            response = json_response({"error": "service unavailable", "service": service, "reason": "circuit open"},
                                     503, [("Retry-After", str(retry))])  # fmt: skip
        except NoInstance:
            response = json_response({"error": "service unavailable", "service": service, "reason": "no instance"},
                                     503, [("Retry-After", "1")])  # fmt: skip
        except TimeoutError:
            response = json_response({"error": "gateway timeout", "service": service}, 504)
        except BackendFailed as exc:
            response = json_response({"error": "bad gateway", "service": service, "detail": str(exc)[:200]}, 502)
        except HTTPError as exc:  # the client's fault (a body too big): not the service's
            request.keep_alive = False
            response = json_response({"error": str(exc)[:200]}, exc.status)
        return self._done(prefix, response, started)

    def _done(self, route: str, response: Response, started: float) -> Response:
        self.metrics.observe(route, response.status, time.perf_counter() - started)
        return response

    async def _forward(self, request: Request, service: str) -> Response:
        """One proxied exchange, with retries for idempotent methods; raises
        what the breaker should count (BackendFailed, TimeoutError)."""
        retryable = request.method in IDEMPOTENT
        body = await request.read(MAX_BODY) if retryable else None  # a retried body must be replayable
        tried: set[str] = set()
        attempt = 0
        while True:
            endpoint = self.pick(service, tried)
            tried.add(endpoint)
            try:
                return await self._once(request, endpoint, body)
            except (BackendFailed, TimeoutError):
                attempt += 1
                if not retryable or attempt > self.config.retries or request.streamed is not None:
                    raise  # (once an answer has begun, it cannot be taken back)
                await asyncio.sleep(self.config.backoff * (2 ** (attempt - 1)))

    async def _once(self, request: Request, endpoint: str, body: bytes | None) -> Response:
        headers = strip_hop_by_hop(request.headers)
        prior = request.header("X-Forwarded-For")
        headers.append(("X-Forwarded-For", f"{prior}, {request.remote}" if prior else request.remote))
        headers.append(("X-Forwarded-Proto", "http"))
        headers.append(("X-Forwarded-Host", request.host))
        data: bytes | AsyncIterable[bytes] = request.chunks() if body is None else body
        self.stats.outstanding[endpoint] = self.stats.outstanding.get(endpoint, 0) + 1
        upstream: UpstreamResponse | None = None
        try:
            async with asyncio.timeout(self.config.timeout):
                try:
                    upstream = await self.pool.request(endpoint, request.method, request.target, headers, data, length=request.content_length)
                    if upstream.status >= 500:
                        detail = (await upstream.read(2000)).decode(errors="replace")
                        raise BackendFailed(upstream.status, f"{endpoint} answered {upstream.status}: {detail}")
                    answer = strip_hop_by_hop(upstream.headers)
                    length = upstream.header("Content-Length")
                    size = int(length) if length is not None else None
                    if request.method == "HEAD" or upstream.status in (204, 304):
                        return Response(upstream.status, answer, b"", size)
                    if size is not None and size <= SMALL:
                        # A small answer whole: its headers and body leave in one write.
                        return Response(upstream.status, answer, await upstream.read())
                    response = request.respond(upstream.status, answer, size)
                    async for chunk in upstream.chunks():
                        await response.write(chunk)
                    await response.end()
                    return response
                except UpstreamError as exc:
                    raise BackendFailed(502, str(exc)) from None
        finally:
            self.stats.outstanding[endpoint] -= 1
            if upstream is not None:
                upstream.close()


def health(routes: dict[str, str]) -> dict[str, Any]:
    services = {}
    for service in sorted(set(routes.values())):
        services[service] = {"instances": len(discovery.discover(service))}
    return {"status": "ok", "services": services}


