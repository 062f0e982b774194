"""The gateway in front of real backend nodes (`beamish run` OS processes
registering through service discovery), over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from apps.gateway.proxy import Config
from prometheus_client.parser import text_string_to_metric_families
from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

import beamish
from apps.gateway import children, port
from beamish import Supervisor, dist
from beamish.cluster import Backoff, Static, Topology, discovery

ROOT = Path(__file__).resolve().parents[3]


class Backends:
    def __init__(self, cookie: str, data: Path) -> None:
        self.cookie = cookie
        self.data = data
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.names: dict[str, str] = {}

    def start(self, instance: str, service: str, host: str = "127.0.0.1") -> str:
        name = self.names.setdefault(instance, f"{unique_name(instance.replace('-', ''))}@{HOST}")
        env = {**os.environ, "BACKEND_SERVICE": service, "BACKEND_INSTANCE": instance, "PYTHONUNBUFFERED": "1",
               "BACKEND_DATA_DIR": str(self.data / instance), "BACKEND_HOST": host}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "beamish", "run", "apps.gateway.backend:Backend", "--name", name, "--cookie", self.cookie],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()
        while not line.startswith(f"{instance}: "):
            assert line, f"{instance} exited"
            line = proc.stdout.readline()
        self.procs[instance] = proc
        return name

    def kill(self, instance: str) -> None:
        proc = self.procs.pop(instance)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.communicate(timeout=10)


@contextmanager
def backends(tmp_path: Path) -> Iterator[Backends]:
    ensure_epmd()
    b = Backends(new_cookie(), tmp_path)
    try:
        yield b
    finally:
        b.stop_all()


async def until(check: Any, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def gateway(config: Config, nodes: list[str], **breaker: Any) -> tuple[int, Any]:
    """The gateway's tree, kept connected to `nodes` (a restarted backend
    is joined again by cluster formation, as in a deployment)."""
    peers = Topology("backends", Static(tuple(nodes)), polling_interval=0.3, backoff=Backoff(0.2, 1.0))
    sup = await Supervisor.start_link(children(config, breaker=breaker or None, topologies=[peers]), strategy="one_for_one")
    return await port(), sup


def run(main: Any, cookie: str) -> Any:
    async def wrapped() -> Any:
        await dist.start(cookie=cookie)
        try:
            return await main()
        finally:
            await dist.stop()

    return beamish.run(wrapped, name=f"{unique_name('gw')}@{HOST}")


def test_routes_proxying_errors_and_balancing(tmp_path: Path) -> None:
    with backends(tmp_path) as b:
        nodes = [b.start("users-1", "users"), b.start("users-2", "users"), b.start("orders-1", "orders")]

        async def main() -> None:
            config = Config({"/users": "users", "/orders": "orders", "/payments": "payments"}, timeout=1.0, retries=1)
            http_port, sup = await gateway(config, nodes)
            await until(lambda: len(discovery.discover("users")) == 2 and discovery.discover("orders"), what="discovery")
            base = f"http://127.0.0.1:{http_port}"
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{base}/users") as r:
                    assert r.status == 200 and [u["name"] for u in await r.json()] == ["John", "Ann"]
                # Round robin over the two instances.
                seen = []
                for _ in range(4):
                    async with s.get(f"{base}/users/1") as r:
                        assert r.status == 200
                        seen.append(r.headers["X-Instance"])
                assert sorted(set(seen)) == ["users-1", "users-2"] and seen[0] != seen[1]
                # Method, path, query, headers (hop-by-hop out, X-Forwarded-* in).
                async with s.get(f"{base}/users/headers?a=1&b=two", headers={"Connection": "close, X-Secret", "X-Secret": "s", "X-Kept": "k"}) as r:
                    echoed = await r.json()
                assert echoed["query"] == {"a": "1", "b": "two"} and echoed["path"] == "/users/headers"
                assert echoed["headers"]["X-Kept"] == "k" and "X-Secret" not in echoed["headers"]
                assert echoed["headers"]["X-Forwarded-For"] == "127.0.0.1" and echoed["headers"]["X-Forwarded-Host"] == f"127.0.0.1:{http_port}"
                assert echoed["headers"]["X-Forwarded-Proto"] == "http"
                # A POST body goes through; a big body streams both ways.
                async with s.post(f"{base}/orders", json={"items": ["x"]}) as r:
                    assert r.status == 201 and (await r.json())["items"] == ["x"]
                big = os.urandom(3 << 20)
                async with s.post(f"{base}/users/echo", data=io.BytesIO(big)) as r:
                    assert r.status == 200 and await r.read() == big
                async with s.get(f"{base}/users/big?bytes={5 << 20}") as r:
                    assert len(await r.read()) == 5 << 20
                # Errors: unknown prefix, no instance, backend failure, timeout.
                async with s.get(f"{base}/nowhere") as r:
                    assert r.status == 404
                async with s.get(f"{base}/payments") as r:
                    assert r.status == 503 and (await r.json())["service"] == "payments" and r.headers["Retry-After"] == "1"
                async with s.get(f"{base}/users/fail") as r:
                    assert r.status == 502
                async with s.post(f"{base}/users/fail", data=b"once") as r:
                    assert r.status == 502

                async def failures() -> list[str]:
                    out = []
                    for _ in range(2):  # round robin: one call per instance
                        async with s.get(f"{base}/users/failures") as r:
                            out += await r.json()
                    return sorted(out)

                # The GET was tried twice (retries=1), on both instances; the POST once.
                assert await failures() == ["GET", "GET", "POST"]
                async with s.get(f"{base}/users/slow?ms=3000") as r:
                    assert r.status == 504
                async with s.get(f"{base}/health") as r:
                    assert (await r.json())["services"]["users"]["instances"] == 2
                async with s.get(f"{base}/metrics") as r:
                    families = {f.name: f for f in text_string_to_metric_families(await r.text())}
                assert any(smp.labels == {"route": "/users", "status": "200"} for smp in families["gateway_requests"].samples)
                assert any(smp.labels["service"] == "users" and smp.value == 2 for smp in families["gateway_instances"].samples)
                # A client that hangs up cancels the backend's request.
                try:
                    await asyncio.wait_for(s.get(f"{base}/users/slow?ms=5000&tag=gone"), 0.5)
                except TimeoutError:
                    pass

                async def cancelled() -> list[str]:
                    out = []
                    for _ in range(2):  # either instance may have had it
                        async with s.get(f"{base}/users/cancelled") as r:
                            out += await r.json()
                    return out

                deadline = time.monotonic() + 10
                while "gone" not in await cancelled():
                    assert time.monotonic() < deadline, "the backend request was not cancelled"
                    await asyncio.sleep(0.1)
            beamish.unlink(sup)
            await Supervisor.stop(sup)

        run(main, b.cookie)


async def breaker_state(base: str, s: aiohttp.ClientSession, service: str) -> str:
    async with s.get(f"{base}/metrics") as r:
        families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    (state,) = [x.labels["state"] for x in families["gateway_breaker_state"].samples if x.labels["service"] == service and x.value == 1]
    return state


def test_a_killed_instance_shifts_traffic_and_all_gone_opens_the_breaker(tmp_path: Path) -> None:
    with backends(tmp_path) as b:
        nodes = [b.start("users-1", "users"), b.start("users-2", "users")]

        async def main() -> None:
            config = Config({"/users": "users"}, timeout=2.0, retries=2)
            http_port, sup = await gateway(config, nodes, consecutive_failures=3, wait_duration_in_open_state=0.5)
            await until(lambda: len(discovery.discover("users")) == 2, what="two instances")
            base = f"http://127.0.0.1:{http_port}"
            async with aiohttp.ClientSession() as s:
                statuses: list[int] = []

                async def load(n: int) -> None:
                    for _ in range(n):
                        async with s.get(f"{base}/users/1") as r:
                            statuses.append(r.status)

                loading = [asyncio.ensure_future(load(150)) for _ in range(4)]
                await asyncio.sleep(0.3)
                b.kill("users-1")  # kill -9 during the load
                await asyncio.gather(*loading)
                assert statuses.count(200) == len(statuses) == 600, sorted(set(statuses))  # idempotent GETs: none failed
                await until(lambda: len(discovery.discover("users")) == 1, what="users-1 gone")
                assert await breaker_state(base, s, "users") == "closed"
                # All gone: "no instance", then, three failures in a row later, the breaker is open.
                b.kill("users-2")
                reasons = []
                for _ in range(6):
                    async with s.get(f"{base}/users") as r:
                        assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
                        reasons.append((await r.json())["reason"])
                assert "circuit open" in reasons and reasons[-1] == "circuit open", reasons
                assert await breaker_state(base, s, "users") == "open"
                # Back again: joined by cluster formation, discovered; the breaker's trial succeeds and closes it.
                await beamish.to_thread(b.start, "users-2", "users")
                await until(lambda: len(discovery.discover("users")) == 1, what="users-2 back")
                deadline = time.monotonic() + 10
                while True:
                    async with s.get(f"{base}/users/1") as r:
                        if r.status == 200:
                            break
                    assert time.monotonic() < deadline, "never served again"
                    await asyncio.sleep(0.1)
                for _ in range(3):  # the rest of the half-open trials
                    async with s.get(f"{base}/users/1") as r:
                        assert r.status == 200
                assert await breaker_state(base, s, "users") == "closed"
            beamish.unlink(sup)
            await Supervisor.stop(sup)

        run(main, b.cookie)


def test_least_outstanding_sends_to_the_idle_instance(tmp_path: Path) -> None:
    with backends(tmp_path) as b:
        nodes = [b.start("users-1", "users"), b.start("users-2", "users")]

        async def main() -> None:
            config = Config({"/users": "users"}, strategy="least_outstanding", timeout=5.0)
            http_port, sup = await gateway(config, nodes)
            await until(lambda: len(discovery.discover("users")) == 2, what="two instances")
            base = f"http://127.0.0.1:{http_port}"
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{base}/users/slow?ms=1") as r:
                    busy = (await r.json())["instance"]  # the first pick, the one with the lowest endpoint
                slow = [asyncio.ensure_future(s.get(f"{base}/users/slow?ms=1500")) for _ in range(1)]
                await asyncio.sleep(0.3)  # the slow request is outstanding at `busy`
                seen = []
                for _ in range(5):
                    async with s.get(f"{base}/users/1") as r:
                        seen.append(r.headers["X-Instance"])
                assert busy not in seen and len(set(seen)) == 1, (busy, seen)
                for f in slow:
                    (await f).close()
            beamish.unlink(sup)
            await Supervisor.stop(sup)

        run(main, b.cookie)


def test_a_backend_cookie_goes_to_its_client_only(tmp_path: Path) -> None:
    # Registered by name, not by IP: aiohttp's default cookie jar ignores IP
    # hosts, so only a named backend shows a shared jar replaying cookies.
    with backends(tmp_path) as b:
        nodes = [b.start("users-1", "users", host="localhost")]

        async def main() -> None:
            http_port, sup = await gateway(Config({"/users": "users"}, timeout=5.0), nodes)
            await until(lambda: discovery.discover("users"), what="discovery")
            base = f"http://127.0.0.1:{http_port}"
            async with aiohttp.ClientSession() as alice, aiohttp.ClientSession() as bob:
                async with alice.get(f"{base}/users/headers?set_cookie=alice-secret") as r:
                    assert r.status == 200
                    cookies = r.headers.getall("Set-Cookie")  # both of the backend's, repeated headers kept
                    assert len(cookies) == 2 and "session=alice-secret" in cookies[0] and "theme=dark" in cookies[1]
                async with bob.get(f"{base}/users/headers") as r:
                    assert r.status == 200
                    assert "Cookie" not in (await r.json())["headers"]
            beamish.unlink(sup)
            await Supervisor.stop(sup)

        run(main, b.cookie)
