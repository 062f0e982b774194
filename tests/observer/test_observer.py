"""`beamish.observer.serve`: the JSON behind the page over real HTTP (one
node, and a peer reached over the distribution protocol), bad input, and the
page in Debian's chromium: the tree of a running example, a crash and its
restart, sorting by queue length."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from tests.interop.beamish_nodes import two_nodes

import beamish
from beamish import DynamicSupervisor, GenServer, NoReply, Reply, Supervisor
from beamish.observer import serve

ROOT = Path(__file__).resolve().parents[2]


class Worker(GenServer):
    def init(self, name: str) -> dict[str, Any]:
        return {"name": name, "done": 0}

    def handle_call(self, request: Any, from_: Any, state: dict[str, Any]) -> Reply:
        if request == "crash":
            raise RuntimeError("asked to crash")
        return Reply(state["done"], state)

    def handle_cast(self, request: Any, state: dict[str, Any]) -> NoReply:
        return NoReply({**state, "done": state["done"] + 1})


async def start_tree() -> None:
    await Supervisor.start_link(
        [
            _spec("alpha"),
            _spec("beta"),
            DynamicSupervisor.child_spec({"name": "Demo.Dynamic", "strategy": "one_for_one"}),
        ],
        strategy="one_for_one",
        name="Demo.Supervisor",
    )


def _spec(name: str) -> Any:
    from beamish import ChildSpec

    async def start() -> beamish.Pid | None:
        return await Worker.start_link(name, name=name)

    return ChildSpec(id=name, start=(start, ()))


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json(content_type=None)


def flat(tree: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for t in tree:
        out[t["name"]] = t
        out.update(flat(t["children"]))
    return out


def test_the_json_shows_the_tree_processes_details_and_refuses_bad_input() -> None:
    async def main() -> None:
        await start_tree()
        observer = await serve()
        base = f"http://127.0.0.1:{observer.port}"
        try:
            async with aiohttp.ClientSession() as s:
                status, nodes = await get(s, f"{base}/api/nodes")
                assert status == 200 and nodes["nodes"] == []
                status, tree = await get(s, f"{base}/api/tree")
                names = flat(tree)
                assert {"Demo.Supervisor", "alpha", "beta", "Demo.Dynamic"} <= set(names)
                assert [c["name"] for c in names["Demo.Supervisor"]["children"]] == ["alpha", "beta", "Demo.Dynamic"]
                parked = beamish.spawn(lambda: beamish.receive(lambda m: False))
                for i in range(30):
                    beamish.send(parked, i)
                status, procs = await get(s, f"{base}/api/processes?sort=message_queue_len&n=3")
                assert procs[0]["pid"] == repr(parked) and procs[0]["message_queue_len"] == 30
                status, one = await get(s, f"{base}/api/process?pid={quote(names['alpha']['pid'])}")
                assert one["name"] == "alpha" and "'name': 'alpha'" in one["state"]
                for url, code in ((f"{base}/api/processes?sort=nope", 400), (f"{base}/api/processes?n=x", 400),
                                  (f"{base}/api/process?pid=%23PID%3C999.0%3E", 404), (f"{base}/api/tree?node=ghost@nowhere", 404)):
                    status, body = await get(s, url)
                    assert status == code and "error" in body, (url, status, body)
                async with s.get(f"{base}/metrics") as response:
                    assert "beamish_processes" in await response.text()
        finally:
            await observer.stop()

    beamish.run(main)


def test_a_peer_is_observed_over_the_distribution_protocol() -> None:
    async def server() -> None:
        await start_tree()
        from beamish.observer._probe import ensure_probe

        await ensure_probe()

    async def client(peer: Any) -> None:
        from beamish import dist

        assert await dist.ping(peer) == "pong"
        observer = await serve()
        try:
            async with aiohttp.ClientSession() as s:
                base = f"http://127.0.0.1:{observer.port}"
                status, nodes = await get(s, f"{base}/api/nodes")
                assert nodes["nodes"] == [str(peer)]
                status, tree = await get(s, f"{base}/api/tree?node={peer}")
                assert status == 200 and "alpha" in flat(tree)
                status, procs = await get(s, f"{base}/api/processes?node={peer}&sort=memory&n=5")
                assert status == 200 and len(procs) == 5 and all(str(peer) in p["pid"] for p in procs)
        finally:
            await observer.stop()

    two_nodes(server, client)


def require_browser() -> str:
    path = shutil.which("chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium and playwright are required in CI (make test installs them)")
        pytest.skip("chromium or playwright missing (make test installs them)")
    return path


def test_the_page_shows_the_tree_a_restart_and_sorts_by_queue() -> None:
    chromium = require_browser()
    from playwright.async_api import async_playwright, expect

    async def main() -> None:
        await start_tree()
        observer = await serve()
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
                try:
                    page = await browser.new_page(viewport={"width": 1300, "height": 700})
                    await page.goto(f"http://127.0.0.1:{observer.port}/")
                    alpha = page.locator("#tree span.item", has_text="alpha")
                    await expect(alpha).to_be_visible()
                    await expect(page.locator("#tree span.item", has_text="Demo.Dynamic")).to_be_visible()
                    old_pid = await alpha.get_attribute("data-pid")
                    try:
                        await GenServer.call("alpha", "crash")
                    except beamish.Exit:
                        pass
                    # The restart shows up without a reload: alpha under a new pid.
                    await expect(alpha).not_to_have_attribute("data-pid", old_pid or "", timeout=10_000)
                    parked = beamish.spawn(lambda: beamish.receive(lambda m: False))
                    for i in range(50):
                        beamish.send(parked, i)
                    await page.click("th[data-sort=memory]")
                    await page.click("th[data-sort=message_queue_len]")
                    await expect(page.locator("#procs tr").first).to_have_attribute("data-pid", repr(parked))
                    await page.locator("#tree span.item", has_text="beta").click()
                    await expect(page.locator("#details pre")).to_contain_text("'name': 'beta'")
                    shot = os.environ.get("BEAMISH_SCREENSHOT_OBSERVER")
                    if shot:
                        await page.screenshot(path=str(ROOT / shot))
                finally:
                    await browser.close()
        finally:
            await observer.stop()

    beamish.run(main)
