"""Every program in examples/ runs to completion and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# What each example must print (a few telling lines, not its whole output).
EXPECTED: dict[str, list[str]] = {
    "showcase.py": ["restarted", "registry"],
    "traffic_light.py": ["red", "yellow", "green"],
    "cpu_cluster.py": ["1 node(s):", "2 node(s):", "speed-up with 2 nodes:"],
    "robust_worker.py": [
        "'corrupt' -> ('error', 'processing failed')",
        "processed_count kept across the error: 3",
        "crashed with valueerror('random processing error')",
        "processed_count after the restart: 1 (a fresh state)",
    ],
    "distributed_example.py": [
        "running as nonode@nohost",
        "first process #pid<1.0 @worker_",
        "connected to peer_",
        "failed to connect to nobody_",
        "@127.0.0.1: 4.0",
        "which says: hello from peer_",
    ],
    "distributed_registry.py": [
        "register: ok",
        "connected: true",
        "the registry runs on registry_",
        "lookup worker from another node: #pid<",
        "lookup nobody: none",
    ],
    "cluster_manager.py": [
        "join: ok",
        "joined the cluster",
        "join nobody: ('error', 'failed to connect')",
        "status: ['peer_",
        "left the cluster",
        "status after it left: []",
    ],
    "circuit_breaker.py": [
        "call 5 to a failing service: ('error', 'circuit_open')",
        "after the timeout, a half-open trial: ('ok',",
        "call 6: circuit open, retry after",
        "after the wait: half_open",
        "state: closed; calls 6, failures 5, rejections 1",
    ],
    "chat_room.py": [
        "system: ann joined the room (datetime)",
        "ann: hello, room (datetime)",
        "users: ['ann'] messages kept: 1",
    ],
    "service_discovery.py": [
        "discover payments: http://10.0.0.7:4000", "discover unknown: none",
        "node 2 discovers payments at http://10.0.0.7:4000", "node 1: payments is gone",
    ],
    "event_logger.py": ["info: server started", "logs kept by eventlogger", "'warning': 1", "handlers: ['eventlogger', 'levelcounter']"],
}


# demo.py runs until Ctrl-C: tests/test_demo.py runs it as `make demo` does.
NOT_HERE = {"demo.py"}


def _examples() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_") and p.name not in NOT_HERE)


@pytest.mark.parametrize("name", _examples())
def test_example_runs(name: str) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=EXAMPLES.parent,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{name} printed nothing"
    for text in EXPECTED.get(name, []):
        assert text in done.stdout.lower(), f"{name} did not print {text!r}:\n{done.stdout}"


def test_the_showcase_runs_as_a_cluster_of_nodes() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "showcase.py"), "--nodes", "3"],
        capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("over the distribution protocol") == 2
    assert "2 other nodes connected" in done.stdout


@pytest.mark.parametrize(
    ("env", "lines"),
    [
        ("dev", ["env dev: read config.toml, dev.toml, runtime.toml", "my_app.debug = True", "my_app.pool_size = 10"]),
        ("prod", ["env prod: read config.toml, prod.toml, runtime.toml", "my_app.log_level = 'info'", "my_app.pool_size = 50"]),
        ("test", ["my_app.Worker = {'batch_size': 2, 'interval': 0.05}"]),
    ],
)
def test_my_app_runs_in_each_environment(env: str, lines: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.my_app", "--env", env],
        capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent,
    )
    assert done.returncode == 0, done.stderr
    for line in [
        *lines,
        "process_data('test') -> ('ok', 'Processed: test')",
        "process_data('error') -> ('error', \"cannot process 'error'\")",
        "supervisor restarted the worker",
        "config_change called for ['my_app']",
        "worker now batch_size=7 interval=0.5",
        "stopped; running: []",
    ]:
        assert line in done.stdout, f"{line!r} not in:\n{done.stdout}"


def test_the_testing_strategies_example_passes_and_can_fail(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/testing_strategies"],
        capture_output=True, text=True, timeout=300, cwd=EXAMPLES.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 passed" in done.stdout
    # The property test finds a counterexample when the worker breaks its contract.
    broken = tmp_path / "test_broken.py"
    broken.write_text(
        "from hypothesis import given, settings, strategies as st\n"
        "from examples.testing_strategies.test_my_app import start_worker\n"
        "from examples.my_app import Worker\n"
        "@settings(max_examples=200, deadline=None)\n"
        "@given(st.text())\n"
        "async def test_never_empty(data: str) -> None:\n"
        "    await start_worker()\n"
        "    result = await Worker.process_data(data)\n"
        "    assert result[1] != 'Processed: '\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(EXAMPLES.parent),
         "-c", str(EXAMPLES.parent / "pyproject.toml"), str(broken)],
        capture_output=True, text=True, timeout=300, cwd=EXAMPLES.parent,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "data=''" in done.stdout, done.stdout  # hypothesis shrank to the smallest failing input


def test_every_example_has_expectations() -> None:
    assert set(_examples()) <= set(EXPECTED), "add the new example's expected output to EXPECTED"
