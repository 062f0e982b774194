"""The chat page in a real headless browser (Debian's chromium, driven by
Playwright with `executable_path`): two pages on two nodes join one room,
exchange messages, see each other present; node B is killed and its user
leaves A's list. With `BEAMISH_SCREENSHOT=docs/chat.png` the test saves the
README's screenshot."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

import beamish
from apps.chat import children, port
from beamish import Supervisor, dist

ROOT = Path(__file__).resolve().parents[3]


def require_browser() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None or not (ROOT / "apps" / "chat" / "assets" / "node_modules" / "phoenix").exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium, playwright and the chat's npm packages are required in CI (make test installs them)")
        pytest.skip("chromium or playwright or the npm packages missing (make test installs them)")
    return path


def test_two_pages_on_two_nodes_chat_and_see_a_killed_node_s_user_leave(tmp_path: Path) -> None:
    chromium = require_browser()
    from playwright.async_api import async_playwright, expect

    ensure_epmd()
    cookie = new_cookie()
    b_name = f"{unique_name('chatweb')}@{HOST}"
    env = {**os.environ, "CHAT_DATA_DIR": str(tmp_path / "b"), "BEAMISH_COOKIE": cookie, "PYTHONUNBUFFERED": "1"}
    b = subprocess.Popen(
        [sys.executable, "-m", "beamish", "run", "apps.chat:Chat", "--name", b_name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        assert b.stdout is not None
        line = ""
        deadline = time.monotonic() + 30
        while not line.startswith("chat: http://") and time.monotonic() < deadline:
            line = b.stdout.readline()
            assert line, "node B exited"
        b_url = line.strip().removeprefix("chat: ")

        async def main() -> None:
            await dist.start(cookie=cookie)
            sup = await Supervisor.start_link(children(data_dir=tmp_path / "a"), strategy="one_for_one")
            try:
                assert await dist.ping(b_name) == "pong"
                a_url = f"http://127.0.0.1:{await port()}/"
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
                    try:
                        pages = []
                        for url, user in ((a_url, "ann"), (b_url, "bob")):
                            page = await browser.new_page(viewport={"width": 900, "height": 500})
                            await page.goto(url)
                            await page.fill("#join input[name=user]", user)
                            await page.fill("#pick input[name=room]", "lobby")
                            await page.press("#pick input[name=room]", "Enter")
                            await expect(page.locator("#status")).to_have_text(f"{user} in lobby")
                            pages.append(page)
                        ann, bob = pages
                        for page in pages:
                            await expect(page.locator("#present li")).to_have_text(["ann", "bob"])
                        await ann.fill("#send input[name=body]", "hello from node A")
                        await ann.press("#send input[name=body]", "Enter")
                        await bob.fill("#send input[name=body]", "hi, node B here")
                        await bob.press("#send input[name=body]", "Enter")
                        for page in pages:
                            await expect(page.locator("#messages p")).to_have_text(
                                ["ann: hello from node A", "bob: hi, node B here"]
                            )
                        await expect(ann.locator("#rooms li")).to_contain_text(["lobby"])
                        shot = os.environ.get("BEAMISH_SCREENSHOT")
                        if shot:
                            await ann.screenshot(path=str(ROOT / shot))
                        os.kill(b.pid, signal.SIGKILL)
                        await expect(ann.locator("#present li")).to_have_text(["ann"], timeout=15_000)
                    finally:
                        await browser.close()
            finally:
                beamish.unlink(sup)
                await Supervisor.stop(sup)
                await dist.stop()

        beamish.run(main, name=f"{unique_name('chatweba')}@{HOST}")
    finally:
        b.kill()
        b.communicate(timeout=10)
