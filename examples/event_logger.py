"""The seed's EventLogger: one event manager, several handlers receiving the
same events, each with its own state.

Run: `python examples/event_logger.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import beamish
from beamish import GenEvent, Ok, Reply, Term
from beamish.gen_event import EventHandler


class EventLogger(EventHandler):
    """The seed's handler: prints each log event and keeps the messages."""

    def init(self, args: Term) -> list[str]:
        return []

    def handle_event(self, event: Term, state: list[str]) -> Ok:
        match event:
            case ("log", level, message):
                timestamp = datetime.now(UTC).isoformat()
                print(f"[{timestamp}] {level}: {message}")
                return Ok([message, *state])
        return Ok(state)

    def handle_call(self, request: Term, state: list[str]) -> Reply:
        match request:
            case ("get_logs",):
                return Reply(list(reversed(state)), state)
        return Reply(None, state)


class LevelCounter(EventHandler):
    """A second handler on the same manager: counts events per level."""

    def init(self, args: Term) -> dict[str, int]:
        return {}

    def handle_event(self, event: Term, counts: dict[str, int]) -> Ok:
        match event:
            case ("log", level, _):
                return Ok({**counts, level: counts.get(level, 0) + 1})
        return Ok(counts)

    def handle_call(self, request: Term, counts: dict[str, int]) -> Reply:
        return Reply(counts, counts)


async def start_logger() -> beamish.Pid:
    pid = await GenEvent.start_link(name="logger")
    await GenEvent.add_handler(pid, EventLogger, [])
    await GenEvent.add_handler(pid, LevelCounter, [])
    return pid


def log_event(level: str, message: str) -> None:
    GenEvent.notify("logger", ("log", level, message))


async def main() -> None:
    await start_logger()
    log_event("info", "server started")
    log_event("warning", "disk at 85%")
    log_event("info", "user alice logged in")
    logs = await GenEvent.call("logger", EventLogger, ("get_logs",))
    counts = await GenEvent.call("logger", LevelCounter, "counts")
    print(f"logs kept by EventLogger: {logs}")
    print(f"counts kept by LevelCounter: {counts}")
    print(f"handlers: {[h.__name__ for h in await GenEvent.which_handlers('logger')]}")


if __name__ == "__main__":
    beamish.run(main)
