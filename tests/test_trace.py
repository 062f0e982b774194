"""`beamish.trace`: message and call events of chosen processes, bounded
by a count and a rate, off by default."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from tests.interop.beamish_nodes import two_nodes

import beamish
from beamish import GenServer, NoReply, Reply, dist, trace
from beamish.node import current_node


class Echo(GenServer):
    def init(self, _: Any) -> None:
        return None

    def handle_call(self, request: Any, from_: Any, state: Any) -> Reply:
        return Reply(("echo", request), state)

    def handle_cast(self, request: Any, state: Any) -> NoReply:
        return NoReply(state)


def test_a_traced_server_shows_what_it_receives_and_sends() -> None:
    async def main() -> list[str]:
        lines: list[str] = []
        pid = await Echo.start_link(None, name="echo")
        trace.start("echo", output=lines.append)
        assert await GenServer.call("echo", "hi") == ("echo", "hi")
        GenServer.cast(pid, "later")
        await GenServer.call(pid, "sync")
        assert trace.stop() == len(lines)
        await GenServer.call(pid, "untraced")
        return lines

    lines = beamish.run(main)
    assert any("(echo) received (Atom('$gen_call')" in line and "'hi')" in line for line in lines), lines
    assert any("(echo) sent" in line and "('echo', 'hi')" in line for line in lines), lines
    assert any("(echo) received (Atom('$gen_cast'), 'later')" in line for line in lines), lines
    assert not any("untraced" in line for line in lines)


def test_patterns_events_and_the_caller_side() -> None:
    async def main() -> list[str]:
        lines: list[str] = []
        for name in ("worker_1", "worker_2", "other"):
            await Echo.start_link(None, name=name)
        trace.start(["worker_*", beamish.self()], events=["call", "receive"], output=lines.append)
        for name in ("worker_1", "worker_2", "other"):
            await GenServer.call(name, name)
        trace.stop()
        return lines

    lines = beamish.run(main)
    received = [line for line in lines if " received (Atom('$gen_call')" in line]
    assert sorted(line.split(" (")[1].split(")")[0] for line in received) == ["worker_1", "worker_2"]
    called = [line for line in lines if " called " in line]
    assert len(called) == 3 and all("with" in line for line in called)
    assert not any(" sent " in line for line in lines)  # send was not asked for
    with pytest.raises(ValueError, match="unknown trace events"):
        trace.start("x", events=["sends"])  # type: ignore[list-item]


def test_tracing_stops_by_itself_at_max_or_past_a_rate(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[int, int, bool]:
        sink = beamish.spawn(lambda: beamish.receive(lambda m: False), name="sink")
        counted: list[str] = []
        trace.start("sink", max=5, output=counted.append)
        for i in range(50):
            beamish.send(sink, i)
        by_max = len(counted)
        rated: list[str] = []
        trace.start("sink", max=1000, rate=(10, 60.0), output=rated.append)
        for i in range(50):
            beamish.send(sink, i)
        return by_max, len(rated), current_node().tracer is None

    with caplog.at_level(logging.INFO, logger="beamish.trace"):
        by_max, by_rate, off = beamish.run(main)
    assert by_max == 5 and by_rate == 11 and off
    messages = [r.getMessage() for r in caplog.records]
    assert any("stopped after 5 events" in m for m in messages)
    assert any("more than 10 events in 60.0 s" in m for m in messages)


def test_a_message_from_another_node_is_a_receive_event() -> None:
    lines: list[str] = []

    async def server() -> None:
        beamish.spawn(lambda: beamish.receive(lambda m: False), name="target")
        trace.start("target", output=lines.append)

    async def client(peer: Any) -> None:
        beamish.send(("target", peer), "from afar")
        assert await dist.ping(peer) == "pong"

    two_nodes(server, client)
    assert any("(target) received 'from afar'" in line for line in lines), lines


def test_lines_cannot_be_forged_by_a_message() -> None:
    async def main() -> list[str]:
        lines: list[str] = []
        sink = beamish.spawn(lambda: beamish.receive(lambda m: False), name="sink")
        trace.start("sink", output=lines.append)
        beamish.send(sink, "x\n#PID<9.9> (admin) sent 'rm -rf' to root")
        trace.stop()
        return lines

    [line] = beamish.run(main)
    assert "\n" not in line
