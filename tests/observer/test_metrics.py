"""`beamish.observer.serve_metrics`: a node's `/metrics` scraped over HTTP
and parsed with prometheus_client's own parser."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from tests.interop.beamish_nodes import two_nodes

import beamish
from beamish import GenServer, Reply, Supervisor, dist
from beamish.observer import serve_metrics


class Echo(GenServer):
    def init(self, _: Any) -> None:
        return None

    def handle_call(self, request: Any, from_: Any, state: Any) -> Reply:
        if request == "die":
            raise RuntimeError("asked to")
        return Reply(request, state)


async def scrape(port: int) -> dict[str, list[Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    families: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.samples
    return families


def value(families: dict[str, list[Any]], name: str, **labels: str) -> float:
    for sample in [s for samples in families.values() for s in samples]:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_processes_queues_restarts_and_calls_are_exported() -> None:
    async def main() -> None:
        exporter = await serve_metrics()
        try:
            parked = beamish.spawn(lambda: beamish.receive(lambda m: False))
            for i in range(7):
                beamish.send(parked, i)
            sup = await Supervisor.start_link([Echo.child_spec(None)], strategy="one_for_one")
            [(_, pid, _, _)] = await Supervisor.which_children(sup)
            assert isinstance(pid, beamish.Pid)
            for _ in range(5):
                await GenServer.call(pid, "hi")
            try:
                await GenServer.call(pid, "die")
            except beamish.Exit:
                pass
            families = await scrape(exporter.port)
            assert value(families, "beamish_processes", behaviour="GenServer") >= 1
            assert value(families, "beamish_processes", behaviour="task") >= 2
            assert value(families, "beamish_message_queue_len_max") == 7
            assert value(families, "beamish_message_queue_len_sum") >= 7
            assert value(families, "beamish_supervisor_restarts_total") == 1
            assert value(families, "beamish_calls_total") == 5  # the failed one ended in an exception
            assert value(families, "beamish_call_duration_seconds_count") == 5
            assert value(families, "beamish_loop_lag_seconds") >= 0
        finally:
            await exporter.stop()

    beamish.run(main)


def test_connections_bytes_and_frames_per_peer() -> None:
    async def server() -> None:
        pass

    async def client(peer: Any) -> None:
        exporter = await serve_metrics()
        try:
            for _ in range(10):
                assert await dist.ping(peer) == "pong"
            families = await scrape(exporter.port)
            assert value(families, "beamish_dist_connections") == 1
            for direction in ("in", "out"):
                assert value(families, "beamish_dist_frames_total", peer=str(peer), direction=direction) >= 10
                assert value(families, "beamish_dist_bytes_total", peer=str(peer), direction=direction) > 100
        finally:
            await exporter.stop()

    two_nodes(server, client)
