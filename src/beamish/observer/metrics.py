"""A node's metrics in Prometheus's text format, computed when scraped.

`await serve_metrics(port=0)` (inside a node's process) serves `/metrics`
on 127.0.0.1 (aiohttp, in the node's loop) and returns the exporter (its
`port`, `stop()`). Series, all named `beamish_...`:

- `beamish_processes{behaviour}`: live processes, by behaviour ("task" for
  plain ones);
- `beamish_message_queue_len_sum` / `_max`: messages waiting, in all and in
  the longest mailbox;
- `beamish_supervisor_restarts_total`: children restarted (telemetry);
- `beamish_calls_total` and `beamish_call_duration_seconds` (a histogram):
  `GenServer.call`s made on this node (telemetry, while the exporter runs);
- `beamish_dist_connections`, `beamish_dist_bytes_total{peer,direction}`,
  `beamish_dist_frames_total{peer,direction}`: the node's connections;
- `beamish_loop_lag_seconds`: the most a 100 ms timer of the loop was late
  since the previous scrape.

A scrape is one pass over the process table (no message to any process).

>>> from beamish.observer import metric_names
>>> sorted(metric_names())[:2]
['beamish_call_duration_seconds', 'beamish_calls']
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .. import telemetry
from ..node import Node, current_node

__all__: list[str] = []  # public at beamish.observer

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_PERIOD = 0.1


def metric_names() -> list[str]:
    return [
        "beamish_processes", "beamish_message_queue_len_sum", "beamish_message_queue_len_max",
        "beamish_supervisor_restarts", "beamish_calls", "beamish_call_duration_seconds",
        "beamish_dist_connections", "beamish_dist_bytes", "beamish_dist_frames", "beamish_loop_lag_seconds",
    ]  # fmt: skip


class _NodeCollector(Collector):
    def __init__(self, exporter: MetricsExporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Any]:
        ex = self.exporter
        node = ex.node
        by_behaviour: dict[str, int] = {}
        queued = longest = 0
        for proc in node.procs.values():
            kind = proc.behaviour or "task"
            by_behaviour[kind] = by_behaviour.get(kind, 0) + 1
            mb = proc.mailbox
            if mb:
                n = len(mb)
                queued += n
                if n > longest:
                    longest = n
        procs = GaugeMetricFamily("beamish_processes", "Live processes of the node, by behaviour", labels=["behaviour"])
        for kind, n in sorted(by_behaviour.items()):
            procs.add_metric([kind], n)
        yield procs
        yield GaugeMetricFamily("beamish_message_queue_len_sum", "Messages waiting in every mailbox", value=queued)
        yield GaugeMetricFamily("beamish_message_queue_len_max", "Messages waiting in the longest mailbox", value=longest)
        yield CounterMetricFamily("beamish_supervisor_restarts", "Children restarted by supervisors", value=ex.restarts)
        yield CounterMetricFamily("beamish_calls", "GenServer calls made on this node", value=ex.calls)
        buckets = []
        running = 0
        for bound, count in zip(BUCKETS, ex.histogram, strict=True):
            running += count
            buckets.append((repr(bound), running))
        buckets.append(("+Inf", ex.calls))
        yield HistogramMetricFamily("beamish_call_duration_seconds", "GenServer call durations", buckets=buckets, sum_value=ex.call_seconds)
        kernel = node.extensions.get("beamish.dist")
        conns = dict(getattr(kernel, "conns", {}) or {})
        yield GaugeMetricFamily("beamish_dist_connections", "Connections to other nodes", value=len(conns))
        data = CounterMetricFamily("beamish_dist_bytes", "Bytes over each connection", labels=["peer", "direction"])
        frames = CounterMetricFamily("beamish_dist_frames", "Frames over each connection", labels=["peer", "direction"])
        for peer, conn in sorted(conns.items()):
            stream = conn.stream
            data.add_metric([str(peer), "in"], stream.bytes_in)
            data.add_metric([str(peer), "out"], stream.bytes_out)
            frames.add_metric([str(peer), "in"], stream.frames_in)
            frames.add_metric([str(peer), "out"], stream.frames_out)
        yield data
        yield frames
        lag, ex.lag = ex.lag, 0.0
        yield GaugeMetricFamily("beamish_loop_lag_seconds", "Most a 100 ms loop timer was late since the last scrape", value=lag)


class MetricsExporter:
    """Collects a node's metrics; `serve_metrics` puts it behind HTTP."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.restarts = 0
        self.calls = 0
        self.call_seconds = 0.0
        self.histogram = [0] * len(BUCKETS)
        self.lag = 0.0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(self))
        self.port = 0
        self._id = f"beamish.observer.metrics.{id(self)}"
        self._runner: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def scrape(self) -> bytes:
        """The text format, now."""
        return generate_latest(self.registry)

    def _on_event(self, event: tuple[str, ...], measurements: dict[str, Any], metadata: dict[str, Any], config: Any) -> None:
        if event == telemetry.RESTART:
            self.restarts += 1
            return
        self.calls += 1
        seconds = measurements.get("duration", 0.0)
        self.call_seconds += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.histogram[i] += 1
                break

    def _beat(self) -> None:
        now = self.node.loop.time()
        late = now - self._due
        if late > self.lag:
            self.lag = late
        self._due = now + LAG_PERIOD
        self._timer = self.node.loop.call_at(self._due, self._beat)

    async def start_collecting(self) -> None:
        """Count restarts and calls (telemetry) and watch the loop's lag."""
        telemetry.attach_many(self._id, [telemetry.RESTART, telemetry.CALL_STOP], self._on_event)
        self._due = self.node.loop.time() + LAG_PERIOD
        self._timer = self.node.loop.call_at(self._due, self._beat)

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> None:
        """`start_collecting`, and serve `/metrics` on its own."""
        from aiohttp import web

        await self.start_collecting()

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=self.scrape(), content_type="text/plain", charset="utf-8")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        telemetry.detach(self._id)
        if self._timer is not None:
            self._timer.cancel()
        if self._runner is not None:
            await self._runner.cleanup()


async def serve_metrics(port: int = 0, host: str = "127.0.0.1") -> MetricsExporter:
    """Serve this node's `/metrics` (loopback unless `host` says otherwise)."""
    exporter = MetricsExporter(current_node())
    await exporter.start(port, host)
    return exporter
