"""The API gateway under load (`apps.gateway`): `wrk` against the gateway,
against nginx and directly against the backend, all in front of the SAME
single backend instance (`apps.gateway.backend`, service `users`), in
interleaved rounds of one run.

What is measured, with `wrk -t1 -c32 -d<secs> --latency <target>/users/1`:
- `gateway_direct_rps`: straight to the backend instance (the floor);
- `gateway_rps`: through our gateway (a `beamish run` node found the backend
  by cluster formation and service discovery; its breaker, round robin and
  Prometheus metrics all on), with its ratio to direct;
- `gateway_nginx_rps`: through Debian's nginx (one worker, an `upstream`
  with `keepalive 32`, HTTP/1.1 to the backend), and `gateway_vs_nginx`,
  the median of the per-round gateway/nginx ratios;
- `gateway_nginx_plain_rps` and `gateway_vs_nginx_plain`: nginx as a bare
  `proxy_pass` configures it (HTTP/1.0 upstream, a new connection per
  request), the setup that measured 0.63x of direct when the gateway's
  targets were set;
- `gateway_p50_ms`, `gateway_direct_p50_ms`, `gateway_nginx_p50_ms`: wrk's
  median latency;
- `gateway_kill_failed`: a second run, the gateway in front of two
  instances of `users`, wrk's GETs for 8 s (3 s quick); one instance is
  killed (-9) after ~2 s and restarted (same node name, same data dir)
  after ~4 s. The value is the requests that failed (non-2xx/3xx answers
  plus socket errors): idempotent requests are retried on the other
  instance, so it must be 0.

Rounds go direct, gateway, nginx, plain nginx, repeated (5 rounds of 3 s; `--quick`: 1
round of 1 s); the values are the medians over rounds, the ratios the
medians of the per-round ratios. The machine has two cores: wrk runs with
one thread (one core), the target (and the backend behind it) with the
other. 32 connections keep a single-threaded server saturated (it always
has requests queued, so rps measures its cost per request) without making
the latency mostly queueing, and match nginx's 32 keep-alive upstream
connections, so no proxy has to open a connection per request.

Needs `wrk` and `nginx` (`make gateway-tools` installs Debian's) and EPMD.
Run: `python bench/bench_gateway.py [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 32
HOST = "127.0.0.1"


@dataclass
class Wrk:
    rps: float
    p50_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def failed(self) -> int:
        return self.non_2xx + self.socket_errors


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(out: str) -> Wrk:
    """wrk's report: Requests/sec, the 50% line of --latency, the errors.

    >>> w = parse_wrk("  Latency Distribution\\n     50%  812.00us\\n  1000 requests in 1.00s, 1MB read\\n"
    ...               "  Socket errors: connect 0, read 2, write 0, timeout 1\\n  Non-2xx or 3xx responses: 4\\n"
    ...               "Requests/sec:   1000.50\\n")
    >>> (w.rps, w.p50_ms, w.requests, w.non_2xx, w.socket_errors, w.failed)
    (1000.5, 0.812, 1000, 4, 3, 7)
    """
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    p50 = re.search(r"^\s+50%\s+([0-9.]+)(us|ms|s|m)\s*$", out, re.M)
    requests = re.search(r"^\s+(\d+) requests in", out, re.M)
    if rps is None or p50 is None or requests is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Wrk(
        rps=float(rps.group(1)),
        p50_ms=float(p50.group(1)) * _UNITS[p50.group(2)],
        requests=int(requests.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def wrk_command(url: str, seconds: float) -> list[str]:
    return ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency", url]


def wrk(url: str, seconds: float) -> Wrk:
    done = subprocess.run(wrk_command(url, seconds), capture_output=True, text=True, check=True, timeout=seconds + 60)
    return parse_wrk(done.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_ok(url: str, timeout: float = 30.0, what: str = "") -> None:
    """Until `GET url` answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what or url}")
        time.sleep(0.1)


def wait_instances(gateway: str, count: int, timeout: float = 30.0) -> None:
    """Until the gateway's /health counts `count` instances of users."""
    import json

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{gateway}health", timeout=2) as r:
                if json.load(r)["services"]["users"]["instances"] == count:
                    return
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway never saw {count} users instances")
        time.sleep(0.1)


class Processes:
    """The OS processes of a run: backends, gateway, nginx; all killed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cookie = "c" + secrets.token_hex(8)
        self.suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.procs: list[subprocess.Popen[str]] = []

    def _node(self, args: list[str], env: dict[str, str], ready: str) -> tuple[subprocess.Popen[str], str]:
        """A `beamish run` node; returns it and the URL it prints after `ready`."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "beamish", "run", *args, "--cookie", self.cookie],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        )  # fmt: skip
        self.procs.append(proc)
        assert proc.stdout is not None
        lines: list[str] = []
        line = proc.stdout.readline()
        while not line.startswith(ready):
            if not line:
                raise RuntimeError(f"{args[0]} exited:\n{''.join(lines)}")
            lines.append(line)
            line = proc.stdout.readline()
        stdout = proc.stdout
        threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()  # never let a full pipe block it
        return proc, line.split()[1]

    def node_name(self, prefix: str) -> str:
        return f"{prefix}_{self.suffix}@{HOST}"

    def backend(self, instance: str, name: str) -> tuple[subprocess.Popen[str], str]:
        env = {"BACKEND_SERVICE": "users", "BACKEND_INSTANCE": instance, "BACKEND_DATA_DIR": str(self.tmp / instance)}
        return self._node(["apps.gateway.backend:Backend", "--name", name], env, f"{instance}: ")

    def gateway(self, peers: list[str]) -> tuple[subprocess.Popen[str], str]:
        env = {"GATEWAY_PEERS": ",".join(peers), "GATEWAY_ROUTES": "/users=users"}
        return self._node(["apps.gateway:Gateway", "--name", self.node_name("gw")], env, "gateway: ")

    def nginx(self, backend: str, *, keepalive: bool = True) -> str:
        """nginx in the foreground, one worker, proxying to `backend`: with
        32 keep-alive upstream connections, or (`keepalive=False`) as
        `proxy_pass` does by default, a new HTTP/1.0 connection per request."""
        prefix = self.tmp / ("nginx" if keepalive else "nginx_plain")
        prefix.mkdir()
        port = free_port()
        upstream = backend.removeprefix("http://").rstrip("/")
        conf = prefix / "nginx.conf"
        location = 'proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";'
        location = location if keepalive else f"proxy_pass http://{upstream};"
        temps = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
error_log {prefix / "error.log"} warn;
pid {prefix / "nginx.pid"};
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temps}
    upstream backend {{
        server {upstream};
        keepalive 32;
    }}
    server {{
        listen {HOST}:{port};
        location / {{
            {location}
        }}
    }}
}}
""")
        proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(prefix)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        url = f"http://{HOST}:{port}/"
        try:
            wait_ok(f"{url}users/1", timeout=15, what="nginx")
        except RuntimeError:
            proc.kill()
            raise RuntimeError(f"nginx did not start: {proc.communicate()[1]}") from None
        return url

    def kill(self, proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def throughput(rounds: int, seconds: float) -> dict[str, list[Wrk]]:
    """Direct, gateway and nginx in front of one backend, interleaved."""
    with tempfile.TemporaryDirectory(prefix="bench_gateway_") as tmp:
        ps = Processes(Path(tmp))
        try:
            name = ps.node_name("users1")
            _, direct = ps.backend("users-1", name)
            _, gateway = ps.gateway([name])
            wait_ok(f"{gateway}users/1", what="the gateway to discover the backend")
            nginx = ps.nginx(direct)
            plain = ps.nginx(direct, keepalive=False)
            targets = {"direct": direct, "gateway": gateway, "nginx": nginx, "nginx_plain": plain}
            for url in targets.values():  # warm up: connections, pools, caches
                wrk(f"{url}users/1", 1)
            runs: dict[str, list[Wrk]] = {k: [] for k in targets}
            for _ in range(rounds):
                for kind, url in targets.items():
                    runs[kind].append(wrk(f"{url}users/1", seconds))
            return runs
        finally:
            ps.close()


def kill_run(seconds: float) -> Wrk:
    """The gateway in front of two instances; one killed and restarted under load."""
    with tempfile.TemporaryDirectory(prefix="bench_gateway_kill_") as tmp:
        ps = Processes(Path(tmp))
        try:
            names = [ps.node_name("users1"), ps.node_name("users2")]
            victim, _ = ps.backend("users-1", names[0])
            ps.backend("users-2", names[1])
            _, gateway = ps.gateway(names)
            wait_instances(gateway, 2)
            wait_ok(f"{gateway}users/1")
            load = subprocess.Popen(wrk_command(f"{gateway}users/1", seconds), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                time.sleep(2.0 if seconds >= 6 else seconds * 0.3)
                ps.kill(victim)
                time.sleep(2.0 if seconds >= 6 else seconds * 0.3)
                ps.backend("users-1", names[0])  # same node name, same data dir
                out, err = load.communicate(timeout=seconds + 60)
            finally:
                if load.poll() is None:
                    load.kill()
                    load.wait()
            if load.returncode != 0:
                raise RuntimeError(f"wrk failed: {err}")
            return parse_wrk(out)
        finally:
            ps.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s, a 3 s kill run (for tests)")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: `make gateway-tools` installs Debian's wrk and nginx-light")
    sys.path.insert(0, str(ROOT))
    from tests.interop.erlang import ensure_epmd

    ensure_epmd()
    rounds, seconds, kill_seconds = (1, 1.0, 3.0) if args.quick else (5, 3.0, 8.0)
    runs = throughput(rounds, seconds)
    direct, gateway, nginx, plain = runs["direct"], runs["gateway"], runs["nginx"], runs["nginx_plain"]

    def median(ws: list[Wrk], attr: str) -> float:
        return statistics.median(float(getattr(w, attr)) for w in ws)

    vs_direct = statistics.median(g.rps / d.rps for g, d in zip(gateway, direct, strict=True))
    vs_nginx = statistics.median(g.rps / n.rps for g, n in zip(gateway, nginx, strict=True))
    nginx_vs_direct = statistics.median(n.rps / d.rps for n, d in zip(nginx, direct, strict=True))
    vs_plain = statistics.median(g.rps / n.rps for g, n in zip(gateway, plain, strict=True))
    plain_vs_direct = statistics.median(n.rps / d.rps for n, d in zip(plain, direct, strict=True))
    p50_ratio = statistics.median(g.p50_ms / d.p50_ms for g, d in zip(gateway, direct, strict=True))
    d_rps, g_rps, n_rps = median(direct, "rps"), median(gateway, "rps"), median(nginx, "rps")
    failed = sum(w.failed for w in direct + gateway + nginx + plain)
    print(f"# rounds={rounds} seconds={seconds} connections={CONNECTIONS} failed_during_throughput={failed}", flush=True)
    print(f"RESULT workload=gateway_direct_rps value={d_rps:.3f} unit=req/s", flush=True)
    print(f"RESULT workload=gateway_rps value={g_rps:.3f} unit=req/s floor={d_rps:.3f} ratio={vs_direct:.2f}", flush=True)
    print(f"RESULT workload=gateway_nginx_rps value={n_rps:.3f} unit=req/s floor={d_rps:.3f} ratio={nginx_vs_direct:.2f}", flush=True)
    print(f"RESULT workload=gateway_vs_nginx value={vs_nginx:.3f} unit=x", flush=True)
    print(f"RESULT workload=gateway_nginx_plain_rps value={median(plain, 'rps'):.3f} unit=req/s floor={d_rps:.3f} ratio={plain_vs_direct:.2f}", flush=True)
    print(f"RESULT workload=gateway_vs_nginx_plain value={vs_plain:.3f} unit=x", flush=True)
    print(f"RESULT workload=gateway_direct_p50_ms value={median(direct, 'p50_ms'):.3f} unit=ms", flush=True)
    print(f"RESULT workload=gateway_p50_ms value={median(gateway, 'p50_ms'):.3f} unit=ms floor={median(direct, 'p50_ms'):.3f} ratio={p50_ratio:.2f}", flush=True)
    print(f"RESULT workload=gateway_nginx_p50_ms value={median(nginx, 'p50_ms'):.3f} unit=ms", flush=True)
    killed = kill_run(kill_seconds)
    print(f"# kill run: {killed.requests} requests, {killed.non_2xx} non-2xx, {killed.socket_errors} socket errors", flush=True)
    print(f"RESULT workload=gateway_kill_failed value={killed.failed} unit=requests", flush=True)


if __name__ == "__main__":
    main()
