"""`make demo` as a person runs it: the showcase's lines, then one line per
service (`<service>: http://127.0.0.1:<port>/`) that answers over HTTP, and
everything gone after Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("nodes", "services"), [(1, ["chat", "observer"]), (3, ["chat", "chat-2", "observer"])])
def test_the_demo_serves_its_services_and_stops_on_ctrl_c(nodes: int, services: list[str]) -> None:
    demo = subprocess.Popen(
        [sys.executable, "examples/demo.py", "--nodes", str(nodes)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        seen: dict[str, str] = {}
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while set(seen) != set(services) and time.monotonic() < deadline:
            line = demo.stdout.readline()
            assert line, "the demo exited:\n" + "".join(lines)
            lines.append(line)
            found = re.fullmatch(r"([a-z0-9-]+): (http://127\.0\.0\.1:\d+/)\n", line)
            if found:
                seen[found[1]] = found[2]
        assert "restarted" in "".join(lines)  # the showcase ran first
        assert list(seen) == services
        for service, url in seen.items():
            with urllib.request.urlopen(url, timeout=10) as page:
                assert page.status == 200 and (b"beamish observer" if service == "observer" else b"beamish chat") in page.read()
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=30)
        assert "demo stopped" in out
        for url in seen.values():  # every node it started is gone: nothing listens there
            with pytest.raises(urllib.error.URLError, match="refused"):
                urllib.request.urlopen(url, timeout=2)
    finally:
        demo.kill()
        demo.communicate()
