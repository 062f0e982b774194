"""Several local nodes of one application, supervised: every core in use.

One node runs on one asyncio loop, so it uses one core; the BEAM's answer
to more cores on one machine is the same as across machines: more nodes.
`LocalCluster` starts N operating-system processes, each a distributed
node booted with `beamish run` (the same application, configuration and
cookie), connected to each other over loopback. Each is watched by a
process of the calling node under a one_for_one `Supervisor`: a node that
dies is started again under the same name (with a new creation, so pids of
the dead incarnation never reach the new one) and connects to the others
again. Work spreads across the nodes through the ordinary distribution
features: `GenServer.call((name, node), ...)`, `dist.spawn`, `rpc`.

```python
async def main():
    await dist.start()                      # the caller joins to use the nodes
    async with LocalCluster("examples.my_app:MyApp", nodes=2, config="examples/my_app/config") as cluster:
        for node in cluster.nodes:
            await GenServer.call(("MyApp.Worker", node), ("process", "x"))
```

From a shell, `beamish cluster examples.my_app:MyApp --nodes 2` does the
same until Ctrl-C, then stops every node cleanly. The nodes go with the
process that started them, however it ends (SIGKILL, an OOM kill): each
runs with `--stop-on-eof` and its stdin is a pipe from that process.

>>> LocalCluster("pkg.mod:App", nodes=2, prefix="w").nodes
['w1@127.0.0.1', 'w2@127.0.0.1']

OTP: mirrors starting a set of nodes with `peer`/`slave` from one
controlling node, supervised as a release's heart would restart a node;
differs in that the nodes are this machine's processes only, and that the
cookie reaches them through the environment (never a command line, which
other users can read).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import string
import sys
from collections.abc import Sequence
from types import TracebackType

from .._gen import ChildSpec, StartError
from .._os_signals import OS_SIGNALS
from ..gen_server import GenServer, NoReply, Stop
from ..process import Exit, current, process_flag, send
from ..supervisor import Supervisor
from ..terms import Pid, Term

# Public as `beamish.dist.LocalCluster` (one path per name).
__all__: list[str] = []

log = logging.getLogger("beamish.dist.cluster")

_BOOT_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0


class LocalCluster:
    """`nodes` local nodes running application `app` (`"module:Class"`).

    `prefix` names them `<prefix>1@host` ...; `cookie` defaults to a fresh
    random one (`self.cookie`); `config`/`env` are `beamish run`'s options;
    `max_restarts` in `max_seconds` bounds restarts as a supervisor's
    intensity does (past it, the whole cluster stops); `cwd` is where the
    nodes run (and import `app` from). Use inside a beamish
    process: `await start()` / `await stop()`, or `async with`.
    """

    def __init__(
        self,
        app: str,
        nodes: int = 2,
        *,
        prefix: str | None = None,
        host: str = "127.0.0.1",
        cookie: str | None = None,
        config: str | None = None,
        env: str | None = None,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        python: str = sys.executable,
        extra_args: Sequence[str] = (),
        cwd: str | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.app = app
        self.nodes_count = nodes
        self.prefix = prefix or app.partition(":")[0].rpartition(".")[2].replace("_", "") or "node"
        self.host = host
        self.cookie = cookie or "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        self.config = config
        self.env = env
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.python = python
        self.extra_args = tuple(extra_args)
        self.cwd = cwd
        self.supervisor: Pid | None = None

    def __repr__(self) -> str:
        return f"<LocalCluster {self.app} nodes={self.nodes}>"

    @property
    def nodes(self) -> list[str]:
        """The nodes' names, `<prefix>1@host` to `<prefix>N@host`."""
        return [f"{self.prefix}{i}@{self.host}" for i in range(1, self.nodes_count + 1)]

    def command(self, name: str) -> list[str]:
        """The command line that boots node `name`."""
        argv = [self.python, "-m", "beamish", "run", self.app, "--name", name, "--listen", self.host, "--stop-on-eof"]
        if self.config:
            argv += ["--config", self.config]
        if self.env:
            argv += ["--env", self.env]
        for other in self.nodes:
            if other != name:
                argv += ["--connect", other]
        return [*argv, *self.extra_args]

    async def start(self) -> None:
        """Boot every node, in order, each under the cluster's supervisor;
        return when all have started their application. Raises
        `StartError` if one cannot boot (those started are stopped)."""
        children = [
            ChildSpec(
                id=name,
                start=(_OsNode.start_link, ((name, self.command(name), self.cookie, self.cwd),)),
                restart="permanent",
                shutdown=_STOP_TIMEOUT + 1.0,
            )
            for name in self.nodes
        ]
        self.supervisor = await Supervisor.start_link(
            children, strategy="one_for_one", max_restarts=self.max_restarts, max_seconds=self.max_seconds
        )

    async def stop(self) -> None:
        """Stop every node (newest first), each with SIGTERM: its
        applications stop cleanly and it leaves the cluster."""
        if self.supervisor is not None:
            sup, self.supervisor = self.supervisor, None
            await Supervisor.stop(sup)  # normal: the caller, linked to it, lives on

    async def os_pids(self) -> dict[str, int]:
        """The operating-system pid of each running node (to watch or kill one)."""
        if self.supervisor is None:
            return {}
        found: dict[str, int] = {}
        for child_id, pid, _, _ in await Supervisor.which_children(self.supervisor):
            if isinstance(pid, Pid):
                os_pid = await GenServer.call(pid, "os_pid")
                if isinstance(os_pid, int) and isinstance(child_id, str):
                    found[child_id] = os_pid
        return found

    async def __aenter__(self) -> LocalCluster:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


# --- internals -------------------------------------------------------------------


class _OsNode(GenServer):
    """Owns one node's operating-system process, as an Erlang port owner
    owns a port: it ends when the process ends (so the supervisor restarts
    it), and ends the process when it is shut down."""

    async def init(self, arg: Term) -> Term:
        name, argv, cookie, cwd = arg
        process_flag("trap_exit", True)  # so terminate runs on shutdown
        env = dict(os.environ, BEAMISH_COOKIE=cookie, PYTHONUNBUFFERED="1")
        # Its stdin is a pipe nothing is written to: when this OS process ends,
        # however it ends (SIGKILL included), the node reads EOF and stops
        # (`beamish run --stop-on-eof`), as a `peer` node goes with its
        # control connection. A parent-death signal would follow the forking
        # thread, not the process, and would not stop the node in order.
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(_BOOT_TIMEOUT):
                while True:
                    line = (await proc.stdout.readline()).decode(errors="replace")
                    if not line:
                        code = await proc.wait()
                        return Stop(("node_boot_failed", name, code))
                    if line.startswith("beamish: ") and " started on " in line:
                        break
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return Stop(("node_boot_timeout", name))
        log.info("node %s up (os pid %d)", name, proc.pid)
        me = current().pid
        watcher = asyncio.ensure_future(_watch(proc, me))
        return {"name": name, "proc": proc, "watcher": watcher}

    def handle_call(self, request: Term, from_: Term, state: Term) -> Term:
        from ..gen_server import Reply

        if request == "os_pid":
            return Reply(state["proc"].pid, state)
        return Reply(("error", ("unknown_call", request)), state)

    def handle_info(self, msg: Term, state: Term) -> Term:
        match msg:
            case ("$os_exit", code):
                log.warning("node %s exited with status %s", state["name"], code)
                return Stop(("node_exited", state["name"], code), state)
        return NoReply(state)

    async def terminate(self, reason: Term, state: Term) -> None:
        proc: asyncio.subprocess.Process = state["proc"]
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        state["watcher"].cancel()


async def _watch(proc: asyncio.subprocess.Process, owner: Pid) -> None:
    """Drain the node's output (so it never blocks on a full pipe) and tell
    its owner when it exits."""
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass
    code = await proc.wait()
    send(owner, ("$os_exit", code))


# --- `beamish cluster` -----------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="MODULE:CLASS", help="the application every node runs")
    parser.add_argument("--nodes", type=int, default=os.cpu_count() or 2, help="how many nodes (default: one per core)")
    parser.add_argument("--prefix", help="node names are PREFIX1@HOST, PREFIX2@HOST, ...")
    parser.add_argument("--host", default="127.0.0.1", help="host part of the names, and the address listened on")
    parser.add_argument("--cookie", help="the cluster's cookie (default: $BEAMISH_COOKIE, else a random one)")
    parser.add_argument("--config", metavar="DIR", help="configuration directory, as for `beamish run`")
    parser.add_argument("--env", help="configuration environment, as for `beamish run`")


def main(args: argparse.Namespace) -> int:
    """Run the cluster until SIGINT/SIGTERM, then stop every node."""
    from ..node import Node, _loop_factory

    cluster = LocalCluster(
        args.app,
        nodes=args.nodes,
        prefix=args.prefix,
        host=args.host,
        cookie=args.cookie or os.environ.get("BEAMISH_COOKIE"),
        config=args.config,
        env=args.env,
    )

    async def start() -> None:
        await cluster.start()
        print(f"cluster up: {' '.join(cluster.nodes)}", flush=True)

    async def serve() -> None:
        # A stop while the nodes boot cancels the boot; the nodes started so
        # far see their stdin end with this process and stop on their own.
        if await OS_SIGNALS.unless_stopped(start()):
            await OS_SIGNALS.stopped()
        await cluster.stop()
        print("cluster stopped", flush=True)

    try:
        with asyncio.Runner(loop_factory=_loop_factory(None)) as runner:
            runner.run(Node().run(serve))
    except (Exit, StartError) as exc:
        print(f"beamish: cluster stopped: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
