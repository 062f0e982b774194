"""`make demo`: the showcase's tour, then the applications as a local cluster,
one OS process per node, until Ctrl-C: the API gateway (`apps.gateway`) in
front of its backends (users, orders and payments, each instance its own
node, found through service discovery), the chat (`apps.chat`) and the
observer of the chat's first node (`beamish.observer`: its trees, processes
and the other nodes over the distribution protocol; `/metrics` too).

With `--nodes 1` or `2` one chat node serves the chat and one instance each
service; with 3 or more two chat nodes do (`chat:` and `chat-2:`, sharing
rooms and presence over the distribution protocol) and users has two
instances (`users-1:`, `users-2:`), balanced by the gateway. Once
everything is up (the gateway has found every service) it prints one line
per service, `<service>: http://127.0.0.1:<port>/`, the gateway first, and
what to do with them; Ctrl-C (or SIGTERM) stops every node it started.

Run: `make demo` (`make demo NODES=3`), or `python examples/demo.py --nodes 3`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start_node(name: str, app: str, cookie: str, env: dict[str, str], connect: list[str],
               observer: bool = False) -> subprocess.Popen[str]:  # fmt: skip
    args = [sys.executable, "-m", "beamish", "run", app, "--name", name, "--cookie", cookie]
    if observer:
        args += ["--observer", "0"]
    for peer in connect:
        args += ["--connect", peer]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def wait_for_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 60.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a node exited before it said {prefix!r}")
        if line.startswith(prefix):
            return line.strip()[len(prefix):].strip()
    raise RuntimeError(f"no {prefix!r} within {timeout} s")


def wait_for_instances(gateway_url: str, services: set[str], timeout: float = 60.0) -> None:
    """Until the gateway's /health counts an instance of every service (it
    found the backends' nodes and their registrations)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(gateway_url + "health", timeout=5) as page:
                found = json.load(page)["services"]
            if all(found.get(s, {}).get("instances", 0) > 0 for s in services):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway did not find {sorted(services)} within {timeout} s")
        time.sleep(0.2)


def _drain(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for _ in proc.stdout:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description="the beamish demo")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--for", dest="seconds", type=float, default=None, help="stop after this many seconds (tests)")
    args = parser.parse_args()
    if args.nodes < 1:
        sys.exit("--nodes must be at least 1")
    subprocess.run([sys.executable, str(ROOT / "examples" / "showcase.py"), "--nodes", str(args.nodes)], check=True)

    cookie = secrets.token_hex(8)
    suffix = secrets.token_hex(3)
    data = Path(tempfile.mkdtemp(prefix="beamish-demo-"))
    procs: list[subprocess.Popen[str]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        # Every node starts at once; then each says where it serves.
        backends = [("users", 1), ("orders", 1), ("payments", 1)] + ([("users", 2)] if args.nodes >= 3 else [])
        backend_nodes: dict[str, tuple[str, subprocess.Popen[str]]] = {}
        for service, i in backends:
            instance = f"{service}-{i}"
            name = f"demo_{service}{i}_{suffix}@127.0.0.1"
            env = {"BACKEND_SERVICE": service, "BACKEND_INSTANCE": instance, "BACKEND_DATA_DIR": str(data / instance)}
            backend_nodes[instance] = (name, start_node(name, "apps.gateway.backend:Backend", cookie, env, []))
        gateway_env = {"GATEWAY_PEERS": ",".join(name for name, _ in backend_nodes.values())}
        gateway = start_node(f"demo_gateway_{suffix}@127.0.0.1", "apps.gateway:Gateway", cookie, gateway_env, [])
        chat_nodes = 2 if args.nodes >= 3 else 1
        first = f"demo_chat1_{suffix}@127.0.0.1"
        chats = []
        for i in range(1, chat_nodes + 1):
            name = first if i == 1 else f"demo_chat{i}_{suffix}@127.0.0.1"
            env = {"CHAT_DATA_DIR": str(data / f"chat{i}")}
            chats.append(start_node(name, "apps.chat:Chat", cookie, env, [first] if i > 1 else [], observer=i == 1))
        procs += [gateway, *(proc for _, proc in backend_nodes.values()), *chats]

        services: list[tuple[str, str]] = [("gateway", wait_for_line(gateway, "gateway:"))]
        for instance, (_, proc) in backend_nodes.items():
            services.append((instance, wait_for_line(proc, f"{instance}:")))
        for i, proc in enumerate(chats, 1):
            services.append(("chat" if i == 1 else f"chat-{i}", wait_for_line(proc, "chat:")))
        services.append(("observer", wait_for_line(chats[0], "observer:")))
        for p in procs:  # keep reading their output, so a chatty node never blocks on a full pipe
            threading.Thread(target=_drain, args=(p,), daemon=True).start()
        gateway_url = services[0][1]
        wait_for_instances(gateway_url, {service for service, _ in backends})
        for service, url in services:
            print(f"{service}: {url}", flush=True)
        print(f"""try the gateway (its backends are the users-/orders-/payments- lines):
  curl {gateway_url}users
  curl -X POST -H 'content-type: application/json' -d '{{"name": "Joe"}}' {gateway_url}users
  curl {gateway_url}orders/123
  curl {gateway_url}health ; curl {gateway_url}metrics
open the chat in two browser windows (one per chat line with NODES=3), and the observer to watch the nodes;
Ctrl-C stops everything""", flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while not stopping and (deadline is None or time.monotonic() < deadline):
            if any(p.poll() is not None for p in procs):
                print("a node stopped; stopping the demo", flush=True)
                return 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        print("demo stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
