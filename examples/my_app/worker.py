"""`MyApp.Worker`: processes data in batches, on a timer, with its settings
read from the application env."""

from __future__ import annotations

import dataclasses

from beamish import (
    GenServer,
    NoReply,
    Pid,
    Reply,
    Term,
    Timer,
    application,
    cancel_timer,
    send_after,
)
from beamish import self as self_pid

NAME = "MyApp.Worker"


@dataclasses.dataclass
class State:
    batch_size: int
    interval: float
    queue: list[str] = dataclasses.field(default_factory=list)
    processed: int = 0
    timer: Timer | None = None


def process(data: str) -> tuple[str, str]:
    """The work itself: the seed's `process_data/1`."""
    if data == "error":
        return ("error", "cannot process 'error'")
    return ("ok", f"Processed: {data}")


class Worker(GenServer):
    # --- client API ------------------------------------------------------

    @staticmethod
    async def process_data(data: str) -> Term:
        """Process one item now: `("ok", "Processed: <data>")` or `("error", reason)`."""
        return await GenServer.call(NAME, ("process", data))

    @staticmethod
    async def crash() -> Term:
        """Make the worker crash (to watch its supervisor restart it)."""
        return await GenServer.call(NAME, "crash")

    @staticmethod
    def submit(item: str) -> None:
        """Queue an item for the next batch."""
        GenServer.cast(NAME, ("submit", item))

    @staticmethod
    async def stats() -> dict[str, float]:
        """`{"batch_size", "interval", "queued", "processed"}`."""
        stats = await GenServer.call(NAME, "stats")
        assert isinstance(stats, dict)
        return stats

    @staticmethod
    def reconfigure() -> None:
        """Re-read batch_size and interval from the env (after config_change)."""
        GenServer.cast(NAME, "reconfigure")

    @classmethod
    async def start_link(cls, arg: Term = None, **options: Term) -> Pid:
        """Started registered as `MyApp.Worker` (Elixir: `name: __MODULE__`);
        a supervisor starts `(Worker, arg)` through this."""
        return await super().start_link(arg, name=NAME)

    # --- callbacks -------------------------------------------------------

    def init(self, _: Term) -> State:
        settings = application.fetch_env("my_app", "Worker")
        state = State(settings["batch_size"], settings["interval"])
        return self._schedule(state)

    def handle_call(self, request: Term, from_: Term, state: State) -> Reply:
        match request:
            case ("process", data):
                return Reply(process(data), state)
            case "crash":
                raise RuntimeError("asked to crash")  # let it crash: the supervisor restarts us
            case "stats":
                return Reply(
                    {
                        "batch_size": state.batch_size,
                        "interval": state.interval,
                        "queued": len(state.queue),
                        "processed": state.processed,
                    },
                    state,
                )
        return Reply(("error", ("unknown_call", request)), state)

    def handle_cast(self, request: Term, state: State) -> NoReply:
        match request:
            case ("submit", item):
                state.queue.append(item)
            case "reconfigure":
                settings = application.fetch_env("my_app", "Worker")
                state.batch_size, state.interval = settings["batch_size"], settings["interval"]
                if state.timer is not None:
                    cancel_timer(state.timer)
                self._schedule(state)
        return NoReply(state)

    def handle_info(self, msg: Term, state: State) -> NoReply:
        if msg == "batch":
            batch, state.queue = state.queue[: state.batch_size], state.queue[state.batch_size :]
            state.processed += sum(1 for item in batch if process(item)[0] == "ok")
            self._schedule(state)
        return NoReply(state)

    def _schedule(self, state: State) -> State:
        state.timer = send_after(self_pid(), "batch", state.interval)
        return state
