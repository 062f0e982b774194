"""`beamish.telemetry`: attach/detach, execute, span, the events beamish
emits (calls, supervisor restarts, node connections), a failing handler."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from tests.interop.beamish_nodes import two_nodes

import beamish
from beamish import GenServer, Reply, Supervisor, dist, telemetry


@pytest.fixture
def seen() -> Iterator[list[tuple[Any, ...]]]:
    events: list[tuple[Any, ...]] = []
    yield events
    for h in telemetry.list_handlers():
        telemetry.detach(h.id)


def record(events: list[tuple[Any, ...]]) -> telemetry.HandlerFn:
    return lambda event, measurements, metadata, config: events.append((event, measurements, metadata, config))


class Echo(GenServer):
    def init(self, _: Any) -> None:
        return None

    def handle_call(self, request: Any, from_: Any, state: Any) -> Reply:
        if request == "die":
            raise ValueError("asked to")
        return Reply(request, state)


def test_handlers_attach_by_id_and_detach(seen: list[tuple[Any, ...]]) -> None:
    telemetry.attach_many("h", [("a", "b"), ("a", "c")], record(seen), {"k": 1})
    with pytest.raises(ValueError, match="attached already"):
        telemetry.attach("h", ("x",), record(seen))
    with pytest.raises(ValueError, match="tuple of strings"):
        telemetry.attach("bad", ("x", 1), record(seen))  # type: ignore[arg-type]
    telemetry.execute(("a", "b"), {"n": 1}, {"m": 2})
    telemetry.execute(("a", "c"), {"n": 3})
    telemetry.execute(("a", "d"), {"n": 4})
    assert seen == [(("a", "b"), {"n": 1}, {"m": 2}, {"k": 1}), (("a", "c"), {"n": 3}, {}, {"k": 1})]
    assert {h.event for h in telemetry.list_handlers(("a",))} == {("a", "b"), ("a", "c")}
    assert telemetry.detach("h") and not telemetry.detach("h")
    telemetry.execute(("a", "b"), {"n": 5})
    assert len(seen) == 2


def test_span_emits_start_and_stop_or_exception(seen: list[tuple[Any, ...]]) -> None:
    telemetry.attach_many("s", [("op", "start"), ("op", "stop"), ("op", "exception")], record(seen))
    with telemetry.span(("op",), {"id": 7}) as meta:
        meta["rows"] = 3
    with pytest.raises(KeyError), telemetry.span(("op",), {"id": 8}):
        raise KeyError("x")
    kinds = [e[0][-1] for e in seen]
    assert kinds == ["start", "stop", "start", "exception"]
    assert seen[1][2] == {"id": 7, "rows": 3} and seen[1][1]["duration"] >= 0
    assert seen[3][2]["kind"] == "KeyError"


def test_a_failing_handler_is_detached_and_logged(seen: list[tuple[Any, ...]], caplog: pytest.LogCaptureFixture) -> None:
    def bad(*_: Any) -> None:
        raise RuntimeError("handler bug")

    telemetry.attach("bad", ("e",), bad)
    telemetry.attach("good", ("e",), record(seen))
    with caplog.at_level(logging.ERROR, logger="beamish.telemetry"):
        telemetry.execute(("e",), {})
        telemetry.execute(("e",), {})
    assert len(seen) == 2
    assert [h.id for h in telemetry.list_handlers(("e",))] == ["good"]
    assert sum("'bad' failed" in r.getMessage() for r in caplog.records) == 1


def test_calls_are_spans_and_restarts_are_events(seen: list[tuple[Any, ...]]) -> None:
    telemetry.attach_many(
        "t", [telemetry.CALL_START, telemetry.CALL_STOP, telemetry.CALL_EXCEPTION, telemetry.RESTART], record(seen)
    )

    async def main() -> None:
        sup = await Supervisor.start_link([Echo.child_spec(None)], strategy="one_for_one")
        [(_, pid, _, _)] = await Supervisor.which_children(sup)
        assert isinstance(pid, beamish.Pid)
        assert await GenServer.call(pid, "hi") == "hi"
        with pytest.raises(beamish.Exit):
            await GenServer.call(pid, "die")
        [(_, new_pid, _, _)] = await Supervisor.which_children(sup)
        restart = [e for e in seen if e[0] == telemetry.RESTART]
        assert restart and restart[0][2]["child_id"] is Echo and restart[0][2]["pid"] == new_pid

    beamish.run(main)
    calls = [(e[0][-1], e[2].get("request")) for e in seen if e[0][:3] == ("beamish", "gen_server", "call")]
    assert ("start", "hi") in calls and ("stop", "hi") in calls and ("exception", "die") in calls
    stop = next(e for e in seen if e[0] == telemetry.CALL_STOP and e[2]["request"] == "hi")
    assert 0 <= stop[1]["duration"] < 5


def test_node_connections_are_events(seen: list[tuple[Any, ...]]) -> None:
    telemetry.attach_many("c", [telemetry.CONNECTION_UP, telemetry.CONNECTION_DOWN], record(seen))

    async def server() -> None:
        pass

    async def client(peer: Any) -> None:
        assert await dist.ping(peer) == "pong"
        dist.disconnect(peer)

    two_nodes(server, client)
    kinds = [(e[0][-1], str(e[2]["peer"])) for e in seen]
    assert any(k == "up" for k, _ in kinds) and any(k == "down" for k, _ in kinds)
