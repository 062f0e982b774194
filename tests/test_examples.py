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
    "robust_worker.py": [
        "'corrupt' -> ('error', 'processing failed')",
        "processed_count kept across the error: 3",
        "crashed with valueerror('random processing error')",
        "processed_count after the restart: 1 (a fresh state)",
    ],
    "event_logger.py": ["info: server started", "logs kept by eventlogger", "'warning': 1", "handlers: ['eventlogger', 'levelcounter']"],
}


def _examples() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


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


def test_every_example_has_expectations() -> None:
    assert set(_examples()) <= set(EXPECTED), "add the new example's expected output to EXPECTED"
