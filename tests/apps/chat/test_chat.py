"""The chat against the official `phoenix` JavaScript client (run by Node,
from the committed lockfile), real WebSockets over loopback, SQLite on disk,
and two nodes sharing rooms and presence."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from apps.chat.socket import Limits
from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

import beamish
from apps.chat import children, port
from beamish import Supervisor, dist

ROOT = Path(__file__).resolve().parents[3]
ASSETS = ROOT / "apps" / "chat" / "assets"
CLIENT = Path(__file__).with_name("client.mjs")


def require_node() -> str:
    node = shutil.which("node")
    if node is None or not (ASSETS / "node_modules" / "phoenix").exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("node and the chat's npm packages are required in CI (make test runs npm ci)")
        pytest.skip("node or apps/chat/assets/node_modules missing (make test installs them)")
    return node


class Client:
    """One `phoenix` Socket in a Node process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, http_port: int) -> Client:
        proc = await asyncio.create_subprocess_exec(
            require_node(), str(CLIENT), f"ws://127.0.0.1:{http_port}/socket",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env={**os.environ, "CHAT_ASSETS": str(ASSETS)},
        )  # fmt: skip
        client = cls(proc)
        await client.wait(lambda e: e["event"] == "open")
        return client

    async def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()

    async def wait(self, match: Any, timeout: float = 10.0) -> dict[str, Any]:
        for e in self.events:
            if match(e):
                self.events.remove(e)
                return e
        assert self.proc.stdout is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no such event; seen {self.events}")
            line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not line:
                raise AssertionError(f"the client exited; seen {self.events}")
            event: dict[str, Any] = json.loads(line)
            if match(event):
                return event
            self.events.append(event)

    async def join(self, room: str, user: str) -> dict[str, Any]:
        await self.send(cmd="join", topic=f"room:{room}", payload={"user": user})
        return await self.wait(lambda e: e["event"] in ("joined", "join_error") and e["topic"] == f"room:{room}")

    async def presence(self, room: str, users: list[str], timeout: float = 10.0) -> None:
        await self.wait(lambda e: e["event"] == "presence" and e["topic"] == f"room:{room}" and e["users"] == users, timeout)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@asynccontextmanager
async def chat(data_dir: Path, limits: Limits | None = None) -> AsyncIterator[int]:
    sup = await Supervisor.start_link(children(data_dir=data_dir, limits=limits), strategy="one_for_one")
    try:
        yield await port()
    finally:
        beamish.unlink(sup)
        await Supervisor.stop(sup)


def test_members_get_history_messages_in_order_and_presence(tmp_path: Path) -> None:
    async def main() -> None:
        async with chat(tmp_path) as http_port:
            ann, bob = await Client.open(http_port), await Client.open(http_port)
            try:
                joined = await ann.join("lobby", "ann")
                assert joined["response"] == {"messages": []}
                await ann.presence("lobby", ["ann"])
                await bob.join("lobby", "bob")
                await bob.presence("lobby", ["ann", "bob"])
                await ann.presence("lobby", ["ann", "bob"])
                for i in range(20):
                    await ann.send(cmd="push", topic="room:lobby", event="new_msg", payload={"body": f"m{i}"})
                for client in (ann, bob):  # the sender too, in the order sent
                    got = [(await client.wait(lambda e: e["event"] == "new_msg"))["message"] for _ in range(20)]
                    assert [m["body"] for m in got] == [f"m{i}" for i in range(20)]
                    assert all(m["user"] == "ann" and isinstance(m["at"], float) for m in got)
                await bob.send(cmd="leave", topic="room:lobby")
                await bob.wait(lambda e: e["event"] == "left")
                await ann.presence("lobby", ["ann"])
                # A newcomer gets the history on join.
                carol = await Client.open(http_port)
                try:
                    history = (await carol.join("lobby", "carol"))["response"]["messages"]
                    assert [m["body"] for m in history] == [f"m{i}" for i in range(20)]
                finally:
                    await carol.close()
                # A client that goes away leaves the room's presence.
                await ann.presence("lobby", ["ann"])
            finally:
                await ann.close()
                await bob.close()

    beamish.run(main)


def test_joins_and_frames_that_phoenix_refuses(tmp_path: Path) -> None:
    async def main() -> None:
        async with chat(tmp_path, Limits(heartbeat_timeout=1.0, max_frame=1000, rate=1000)) as http_port:
            client = await Client.open(http_port)
            try:
                assert (await client.join("lobby", ""))["response"] == {"reason": "unauthorized"}
                await client.send(cmd="join", topic="nowhere:1", payload={})
                refused = await client.wait(lambda e: e["event"] == "join_error")
                assert refused["response"] == {"reason": "unmatched topic"}
                assert (await client.join("no spaces", "ann"))["response"] == {"reason": "invalid room"}
                assert (await client.join("lobby", "ann"))["event"] == "joined"
                await client.send(cmd="push", topic="room:lobby", event="shout", payload={}, ref="x")
                reply = await client.wait(lambda e: e["event"] == "reply")
                assert reply["status"] == "error" and "unknown event" in reply["response"]["reason"]
            finally:
                await client.close()
            url = f"http://127.0.0.1:{http_port}/socket/websocket?vsn=2.0.0"
            async with aiohttp.ClientSession() as session:
                # The heartbeat is answered; a frame that is not one closes the socket (1003).
                async with session.ws_connect(url) as ws:
                    await ws.send_str('[null,"1","phoenix","heartbeat",{}]')
                    assert json.loads((await ws.receive()).data) == [None, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}]
                    await ws.send_str("{not json")
                    closed = await ws.receive()
                    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1003
                # An event on a topic not joined.
                async with session.ws_connect(url) as ws:
                    await ws.send_str('["1","2","room:lobby","new_msg",{"body":"x"}]')
                    answer = json.loads((await ws.receive()).data)
                    assert answer[3:] == ["phx_reply", {"status": "error", "response": {"reason": "unmatched topic"}}]
                # Too large a frame closes it (1008); so does silence past the heartbeat timeout.
                async with session.ws_connect(url) as ws:
                    await ws.send_str('[null,"1","phoenix","heartbeat",' + json.dumps({"pad": "x" * 2000}) + "]")
                    closed = await ws.receive()
                    # aiohttp's own bound (1009) or the socket's (1008): closed either way.
                    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data in (1008, 1009), closed
                async with session.ws_connect(url) as ws:
                    t0 = time.monotonic()
                    closed = await asyncio.wait_for(ws.receive(), 10)
                    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                    assert time.monotonic() - t0 >= 0.9

    beamish.run(main)


def test_history_survives_a_restart_of_the_node(tmp_path: Path) -> None:
    async def first() -> None:
        async with chat(tmp_path) as http_port:
            client = await Client.open(http_port)
            try:
                await client.join("kept", "ann")
                for i in range(5):
                    await client.send(cmd="push", topic="room:kept", event="new_msg", payload={"body": f"k{i}"})
                    await client.wait(lambda e: e["event"] == "reply")
            finally:
                await client.close()

    async def second() -> list[str]:
        async with chat(tmp_path) as http_port:
            client = await Client.open(http_port)
            try:
                history = (await client.join("kept", "bob"))["response"]["messages"]
                return [m["body"] for m in history]
            finally:
                await client.close()

    beamish.run(first)
    assert beamish.run(second) == [f"k{i}" for i in range(5)]


def test_two_nodes_share_rooms_and_a_killed_node_s_users_leave(tmp_path: Path) -> None:
    """Node A in this process, node B a `beamish run` OS process; kill -9 B:
    A's users see B's leave, and every message acknowledged before is in A's
    history."""
    require_node()
    ensure_epmd()
    cookie = new_cookie()
    b_name = f"{unique_name('chatb')}@{HOST}"
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
        b_port = int(line.strip().rstrip("/").rsplit(":", 1)[1])

        async def main() -> None:
            await dist.start(cookie=cookie)
            try:
                assert await dist.ping(b_name) == "pong"
                async with chat(tmp_path / "a") as a_port:
                    ann, bob = await Client.open(a_port), await Client.open(b_port)
                    try:
                        await ann.join("lobby", "ann")
                        await bob.join("lobby", "bob")
                        await ann.presence("lobby", ["ann", "bob"])
                        await bob.presence("lobby", ["ann", "bob"])
                        for who, client in (("ann", ann), ("bob", bob)):
                            await client.send(cmd="push", topic="room:lobby", event="new_msg", payload={"body": f"from {who}"})
                            await client.wait(lambda e: e["event"] == "reply" and e["status"] == "ok")
                        for client in (ann, bob):
                            bodies = {(await client.wait(lambda e: e["event"] == "new_msg"))["message"]["body"] for _ in range(2)}
                            assert bodies == {"from ann", "from bob"}
                        os.kill(b.pid, signal.SIGKILL)
                        await ann.presence("lobby", ["ann"], timeout=15)
                        carol = await Client.open(a_port)
                        try:
                            history = (await carol.join("lobby", "carol"))["response"]["messages"]
                            assert {m["body"] for m in history} >= {"from ann", "from bob"}
                        finally:
                            await carol.close()
                    finally:
                        await ann.close()
                        await bob.close()
            finally:
                await dist.stop()

        beamish.run(main, name=f"{unique_name('chata')}@{HOST}")
    finally:
        b.kill()
        b.communicate(timeout=10)
