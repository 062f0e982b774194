"""`make demo` as a person runs it: the showcase's lines, then one line per
service (`<service>: http://127.0.0.1:<port>/`, the gateway first) that
answers over HTTP, the gateway proxying to its backends, and everything gone
after Ctrl-C."""

from __future__ import annotations

import json
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


BACKENDS = ["users-1", "orders-1", "payments-1"]


@pytest.mark.parametrize(
    ("nodes", "services"),
    [
        (1, ["gateway", *BACKENDS, "chat", "observer"]),
        (3, ["gateway", *BACKENDS, "users-2", "chat", "chat-2", "observer"]),
    ],
)
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
                body = page.read()
                assert page.status == 200
            if service in ("chat", "chat-2", "observer"):
                assert (b"beamish observer" if service == "observer" else b"beamish chat") in body
            elif service == "gateway":
                assert json.loads(body)["routes"]["/users"] == "users"
            else:  # a backend instance says which it is
                assert json.loads(body)["instance"] == service
        # The gateway proxies to the backends it found: GET and a POST body.
        gateway = seen["gateway"]
        with urllib.request.urlopen(gateway + "users", timeout=10) as page:
            assert [u["name"] for u in json.load(page)][:2] == ["John", "Ann"]
        post = urllib.request.Request(gateway + "orders", data=b'{"items": ["tea"]}', headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(post, timeout=10) as page:
            assert page.status == 201 and json.load(page)["items"] == ["tea"]
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=30)
        assert "demo stopped" in out
        for url in seen.values():  # every node it started is gone: nothing listens there
            with pytest.raises(urllib.error.URLError, match="refused"):
                urllib.request.urlopen(url, timeout=2)
    finally:
        demo.kill()
        demo.communicate()
