"""The seed's RobustWorker, next to a "let it crash" worker under a supervisor.

Both get the same inputs, one of which makes the processing fail. The robust
worker rescues the error, logs it, replies `("error", ...)` and keeps its
state (its count of processed items); the let-it-crash worker does not
catch anything: it dies, the caller gets the reason, and its supervisor
starts a fresh one with a clean state.

Run: `python examples/robust_worker.py`.
"""

from __future__ import annotations

import logging

import beamish
from beamish import From, GenServer, Reply, Supervisor, Term

log = logging.getLogger("robust_worker")


def do_process(data: str) -> str:
    # The seed fails at random (1 in 10); here the input "corrupt" fails, so the run is repeatable.
    if data == "corrupt":
        raise ValueError("Random processing error")
    return f"Processed: {data}"


class RobustWorker(GenServer):
    """Defensive style: rescue, log, reply with an error, keep serving."""

    @classmethod
    async def start_link_named(cls) -> beamish.Pid:
        return await cls.start_link(None, name="RobustWorker")

    @staticmethod
    async def process_data(data: str) -> Term:
        return await GenServer.call("RobustWorker", ("process", data))

    def init(self, _: Term) -> dict[str, int]:
        return {"processed_count": 0}

    def handle_call(self, request: Term, from_: From, state: dict[str, int]) -> Reply:
        match request:
            case ("process", data):
                try:
                    result = do_process(data)
                    new_state = {**state, "processed_count": state["processed_count"] + 1}
                    return Reply(("ok", result), new_state)
                except Exception as e:
                    # Log the error but don't crash
                    print(f"Error processing data: {e!r}")
                    return Reply(("error", "Processing failed"), state)
            case "count":
                return Reply(state["processed_count"], state)
        return Reply(("error", "unknown request"), state)


class CrashingWorker(GenServer):
    """Let it crash: no try at all; the supervisor restores a known-good state."""

    def init(self, _: Term) -> dict[str, int]:
        return {"processed_count": 0}

    def handle_call(self, request: Term, from_: From, state: dict[str, int]) -> Reply:
        match request:
            case ("process", data):
                return Reply(("ok", do_process(data)), {**state, "processed_count": state["processed_count"] + 1})
            case "count":
                return Reply(state["processed_count"], state)
        return Reply(("error", "unknown request"), state)


INPUTS = ["order-1", "order-2", "corrupt", "order-3"]


async def current_worker() -> beamish.Pid:
    """The supervised worker's pid now (a new one after each restart)."""
    [(_, pid, _, _)] = await Supervisor.which_children("workers")
    assert isinstance(pid, beamish.Pid)
    return pid


async def main() -> None:
    logging.getLogger("beamish").setLevel(logging.CRITICAL)  # the crash report is expected below
    await RobustWorker.start_link_named()
    print("robust worker (defensive):")
    for data in INPUTS:
        print(f"  {data!r} -> {await RobustWorker.process_data(data)}")
    print(f"  processed_count kept across the error: {await GenServer.call('RobustWorker', 'count')}")

    await Supervisor.start_link([CrashingWorker.child_spec(None)], name="workers")
    print("let-it-crash worker (supervised):")
    for data in INPUTS:
        try:
            print(f"  {data!r} -> {await GenServer.call(await current_worker(), ('process', data))}")
        except beamish.Exit as e:
            print(f"  {data!r} -> crashed with {e.reason!r}; the supervisor restarts it")
    print(f"  processed_count after the restart: {await GenServer.call(await current_worker(), 'count')} (a fresh state)")
    print(
        "difference: rescue errors you expect and can answer (bad input from a user); let unexpected "
        "errors crash, so the process restarts from a known-good state instead of carrying on with a "
        "state the error may have corrupted."
    )


if __name__ == "__main__":
    beamish.run(main)
