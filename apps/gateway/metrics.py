"""The gateway's Prometheus metrics (`prometheus_client`, its own registry):
requests by route and status, latency histograms by route, each service's
breaker state (a 0/1 gauge per state, Prometheus's enum idiom) and its live
instances; the last two are read at scrape time.

>>> m = Metrics(["users"])
>>> m.observe("/users", 200, 0.002)
>>> b'gateway_requests_total{route="/users",status="200"} 1.0' in generate_latest(m.registry)
True
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from beamish import CircuitBreaker
from beamish.cluster import discovery

__all__ = ["BREAKER_STATES", "Metrics"]

BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "disabled")


class Metrics:
    """Requests by route and status, latencies, breaker states and instances."""

    def __init__(self, services: list[str]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gateway_requests", "Requests by route and status", ["route", "status"], registry=self.registry)
        self.latency = Histogram("gateway_request_duration_seconds", "Request latency by route", ["route"], registry=self.registry)
        self.breaker = Gauge("gateway_breaker_state", "1 for the breaker's current state", ["service", "state"], registry=self.registry)
        self.instances = Gauge("gateway_instances", "Live instances per service", ["service"], registry=self.registry)
        self.services = services
        # Each label set's child, looked up once (prometheus_client's labels() is not free).
        self._requests: dict[tuple[str, int], Any] = {}
        self._latency: dict[str, Any] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        counter = self._requests.get((route, status))
        if counter is None:
            counter = self._requests[(route, status)] = self.requests.labels(route, str(status))
        counter.inc()
        histogram = self._latency.get(route)
        if histogram is None:
            histogram = self._latency[route] = self.latency.labels(route)
        histogram.observe(seconds)

    async def render(self) -> bytes:
        for service in self.services:
            self.instances.labels(service).set(len(discovery.discover(service)))
            state = await CircuitBreaker.state(service)
            for s in BREAKER_STATES:
                self.breaker.labels(service, s).set(1 if s == state else 0)
        return generate_latest(self.registry)


