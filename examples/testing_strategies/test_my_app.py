"""The seed's testing strategies (`MyAppTest`), written for beamish.

Run: `pytest examples/testing_strategies` (from the repository root).

Each `async def` test runs as the first process of a fresh node (the beamish
pytest plugin, on with `beamish_mode = true`), so tests never share names or
processes: ExUnit's isolated test process. `start_supervised` is ExUnit's:
what it starts is shut down when the test ends. A hypothesis `@given` test
runs every generated example in a node of its own: the seed's
`property ... check all data <- string()`.
"""

from __future__ import annotations

from pathlib import Path

from examples.my_app import MyApp, Worker
from hypothesis import given, settings
from hypothesis import strategies as st

import beamish
from beamish import application
from beamish.testing import ANY, assert_receive, eventually, refute_receive, start_supervised

CONFIG = Path(__file__).resolve().parent.parent / "my_app" / "config"


async def start_worker() -> beamish.Pid:
    """The seed's `setup`: the worker under the test's supervisor, with the
    test environment's configuration (config/test.toml)."""
    application.load_config(CONFIG, env="test")
    application.load(MyApp)
    return await start_supervised(Worker)


async def test_worker_processes_data_correctly() -> None:
    await start_worker()
    assert await Worker.process_data("test") == ("ok", "Processed: test")


async def test_worker_handles_errors_gracefully() -> None:
    await start_worker()
    match await Worker.process_data("error"):
        case ("error", _):
            pass
        case other:
            raise AssertionError(f"expected an error tuple, got {other!r}")


async def test_the_test_environment_configures_the_worker() -> None:
    await start_worker()
    stats = await Worker.stats()
    assert (stats["batch_size"], stats["interval"]) == (2, 0.05)


async def test_a_crashed_worker_is_replaced_by_its_supervisor() -> None:
    pid = await start_worker()
    ref = beamish.monitor(pid)
    try:
        await Worker.crash()
    except beamish.Exit:
        pass
    await assert_receive(("DOWN", ref, "process", pid, ANY), timeout=1.0)
    await refute_receive(("DOWN", ANY, ANY, ANY, ANY), timeout=0.01)
    assert beamish.whereis("MyApp.Worker") not in (None, pid)
    assert await Worker.process_data("again") == ("ok", "Processed: again")


async def test_submitted_items_are_processed_in_batches() -> None:
    await start_worker()
    for item in ["a", "b", "c", "error"]:
        Worker.submit(item)
    # batch_size 2 every 0.05 s: two ticks take all four; three are ok.

    async def all_processed() -> bool:
        stats = await Worker.stats()
        return stats["queued"] == 0 and stats["processed"] > 0

    await eventually(all_processed)
    assert (await Worker.stats())["processed"] == 3


@settings(max_examples=50, deadline=None)
@given(st.text())
async def test_worker_always_returns_valid_results(data: str) -> None:
    await start_worker()
    result = await Worker.process_data(data)
    assert isinstance(result, tuple)
    assert len(result) == 2
    assert result[0] in ("ok", "error")
