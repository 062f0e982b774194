"""Real network partitions for distribution tests: nodes in Linux network
namespaces joined by veth links, cut and healed while every connection
stays open, so only net ticks can tell.

```python
from tests.interop.netns import network

def test_something() -> None:
    with network(2) as net:                      # namespaces net.ns[0], net.ns[1]
        b = net.beamish("b", net.ns[0])          # a beamish node in ns 0 (an OS process)
        e = net.erl("e", net.ns[1])              # an erl node in ns 1
        assert b.eval(f"await dist.connect({e.name!r})") == "True"
        b.wait_event("nodeup", e.name)
        net.cut(net.ns[1])                       # drop every packet to and from ns 1
        assert e.wait_event("nodedown", b.name, timeout=15).reason == "net_tick_timeout"
        net.heal(net.ns[1])
        assert e.eval(f"net_adm:ping('{b.name}').") == "pong"
```

`network(n, ticktime=4.0)` makes `n` namespaces with unique names, each
with loopback up, its own address `10.213.<X>.<i+1>/24` (one random `X`
per network, checked unused on the host) and its own EPMD listening on
that address (and loopback). Two namespaces are joined by a veth pair; three
or more by a bridge in one more namespace (the *hub*), so the host's own
namespace is never touched. Everything is deleted on exit, even after a
failure: every process left in a namespace is killed, then the namespaces
(their links go with them).

Nodes (each `name@<namespace address>`, `ticktime` their net_ticktime):

- `net.beamish(short, ns)`: `tests/interop/netns_driver.py` run in `ns`,
  a beamish node listening on the namespace's address.
  `node.eval(python)` runs a Python expression (`await` allowed) in a new
  process of that node and returns `repr` of its value; the names
  `beamish`, `dist`, `Atom`, `GenServer`, `cluster` (`beamish.cluster`)
  and `env` (a dict kept between evals) are in scope. A statement block is
  run too (its value is `env.get("result")`).
- `net.erl(short, ns)`: `erl` in `ns` with `inet_dist_use_interface` on the
  namespace's address. `node.eval(erlang)` evaluates an expression
  sequence (`"X = 1, X + 1."`; newlines are fine) with `erl_eval` in the
  node's own shell process and returns the value printed with `~p` on one
  line. Bindings last from one eval to the next, as in the shell: a
  variable bound once (`receive M -> M end`) only matches that value
  afterwards, so use fresh names.

Both raise `EvalError` when the code raises, and both report node events:
`node.events` is the list of `Event(kind, node, reason, at)` seen so far
(`kind` "nodeup" or "nodedown"; `reason` "net_tick_timeout" when the peer
stopped ticking, else "connection_closed" or Erlang's reason; `at` a
`time.monotonic()`), and `node.wait_event(kind, node, timeout)` waits for
the first one after the last `node.mark()`.

Cutting: `net.cut(ns, mode="drop")` drops every packet to and from `ns`
(`tc ... netem loss 100%` where the kernel has netem, else a `pfifo` of
length 0, which drops every packet it is given: a queue discipline, not a
firewall, so the sockets see no error); `mode="down"` sets the namespace's
link down instead. `net.heal(ns)` undoes it. Neither closes a connection:
TCP retransmits quietly and the data arrives after the heal if the
connection is still there.

Adding assertions for the cluster services in a partition: eval on each
side, before and after the cut and after the heal, e.g.
`b.eval("cluster.pg.get_members('grp')")`, `e.eval("global:whereis_name(n).")`,
`e.eval("pg:get_members(grp).")`; `net.side(0)`/`side(1)` of `mesh`
group the nodes by namespace.

Needs root and `ip`/`tc` (iproute2); locally the tests skip without them,
in CI (`CI=true`) they fail, as `tests/interop/erlang.require` does.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import pytest
from tests.interop.erlang import require

ROOT = Path(__file__).resolve().parent.parent.parent
DRIVER = Path(__file__).resolve().parent / "netns_driver.py"
_counter = itertools.count()
N = TypeVar("N", bound="NetNode")


def require_netns() -> None:
    """Skip the test locally, fail it in CI, unless this process can make
    network namespaces (root, `ip` and `tc`)."""
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    why = f"{' and '.join(missing)} not installed (make test installs iproute2)" if missing else None
    if why is None and os.geteuid() != 0:
        why = "network namespaces need root"
    if why is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{why}, and partition tests may not skip in CI")
        pytest.skip(why)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (bounded), raising with its stderr on failure."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


class EvalError(Exception):
    """Code run by `eval` on a node raised (or the node died)."""


@dataclass(frozen=True)
class Event:
    kind: str  # "nodeup" | "nodedown"
    node: str
    reason: str
    at: float


@dataclass
class Namespace:
    """One network namespace: its name, its address, and its link's ends
    (`dev` inside it; `peer_dev` in the other namespace or the hub)."""

    name: str
    address: str
    dev: str
    peer_ns: str
    peer_dev: str

    def argv(self, *command: str) -> list[str]:
        """`command` to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *command]


class NetNode:
    """A node (beamish or erl) running in a namespace, driven over its
    stdin/stdout: `R <id> ok|error <value>` answers, `E <kind> <node> <reason>`
    events; other lines are kept in `output` for failure messages."""

    def __init__(self, name: str, ns: Namespace, proc: subprocess.Popen[str]) -> None:
        self.name = name
        self.ns = ns
        self.proc = proc
        self.events: list[Event] = []
        self.output: list[str] = []
        self._answers: dict[str, tuple[str, str]] = {}
        self._mark = 0
        self._ids = itertools.count()
        self._changed = threading.Condition()
        self._ready = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} in {self.ns.name}>"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._changed:
                if line.startswith("R "):
                    _, ident, status, value = [*line.split(" ", 3), ""][:4]
                    self._answers[ident] = (status, value)
                elif line.startswith("E "):
                    parts = line.split(" ", 3)
                    self.events.append(Event(parts[1], parts[2], parts[3] if len(parts) > 3 else "", time.monotonic()))
                elif line.startswith("READY"):
                    self._ready = True
                else:
                    self.output.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not ready()):
                    tail = "\n".join(self.output[-30:])
                    state = "exited" if self.proc.poll() is not None else "running"
                    raise TimeoutError(f"{self.name} ({state}): no {what} within {timeout} s; output:\n{tail}")
                self._changed.wait(min(left, 0.5))

    def wait_ready(self, timeout: float = 30.0) -> None:
        self._wait("READY line", lambda: self._ready, timeout)

    def _encode(self, code: str) -> str:
        raise NotImplementedError

    def eval(self, code: str, timeout: float = 20.0) -> str:
        """Run `code` on the node; its value as a one-line string."""
        ident = str(next(self._ids))
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{ident} {self._encode(code)}\n")
        self.proc.stdin.flush()
        self._wait(f"answer to {code!r}", lambda: ident in self._answers, timeout)
        status, value = self._answers.pop(ident)
        if status != "ok":
            raise EvalError(f"{self.name}: {code!r} raised {value}")
        return value

    def mark(self) -> None:
        """Only events from now on count for `wait_event`."""
        with self._changed:
            self._mark = len(self.events)

    def wait_event(self, kind: str, node: str, timeout: float = 15.0) -> Event:
        """The first `kind` event about `node` since the last `mark()`."""
        def found() -> Event | None:
            return next((e for e in self.events[self._mark :] if e.kind == kind and e.node == node), None)

        self._wait(f"{kind} of {node}", lambda: found() is not None, timeout)
        event = found()
        assert event is not None
        return event

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class BeamishNode(NetNode):
    def _encode(self, code: str) -> str:
        return json.dumps(code)


class ErlNode(NetNode):
    def _encode(self, code: str) -> str:
        return " ".join(code.split())


# The erl side of the driver protocol: node events from a process of their
# own; each stdin line evaluated in the shell process, its value on one line.
_ERL_DRIVER = r"""
spawn(fun() ->
    ok = net_kernel:monitor_nodes(true, [nodedown_reason]),
    (fun L() ->
        receive
            {nodeup, N, _} -> io:format("E nodeup ~s~n", [N]);
            {nodedown, N, I} -> io:format("E nodedown ~s ~w~n", [N, proplists:get_value(nodedown_reason, I)])
        end,
        L()
    end)()
end),
io:format("READY~n"),
(fun Loop(Bindings) ->
    case io:get_line("") of
        eof -> halt();
        Line ->
            {Id, Code} = lists:splitwith(fun(C) -> C =/= $\s end, string:trim(Line)),
            {Out, Next} =
                try
                    {ok, Toks, _} = erl_scan:string(Code),
                    {ok, Exprs} = erl_parse:parse_exprs(Toks),
                    {value, V, B} = erl_eval:exprs(Exprs, Bindings),
                    {["ok ", io_lib:print(V, 1, 100000000, -1)], B}
                catch C:E ->
                    {["error ", io_lib:print({C, E}, 1, 100000000, -1)], Bindings}
                end,
            io:put_chars(["R ", Id, " ", Out, "\n"]),
            Loop(Next)
    end
end)(erl_eval:new_bindings()).
"""


@dataclass
class Network:
    """Namespaces joined by links, with `cut` and `heal` (see the module)."""

    ns: list[Namespace]
    subnet: str
    ticktime: float
    cookie: str
    hub: str | None = None
    nodes: list[NetNode] = field(default_factory=list)
    _netem: bool | None = None

    # --- nodes -----------------------------------------------------------------

    def beamish(self, short: str, ns: Namespace, *, extra: Sequence[str] = ()) -> BeamishNode:
        """Start a beamish node `short@<ns address>` in `ns`; return when it is up."""
        name = f"{short}@{ns.address}"
        argv = ns.argv(
            sys.executable, str(DRIVER), "--name", name, "--listen", ns.address, "--ticktime", str(self.ticktime), *extra
        )
        env = {**os.environ, "BEAMISH_COOKIE": self.cookie, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        return self._started(BeamishNode(name, ns, _popen(argv, env)))

    def erl(self, short: str, ns: Namespace, *, extra: Sequence[str] = ()) -> ErlNode:
        """Start an erl node `short@<ns address>` in `ns`; return when it is up."""
        erl = require("erl")
        name = f"{short}@{ns.address}"
        interface = "{" + ns.address.replace(".", ",") + "}"
        tick = max(1, round(self.ticktime))
        argv = ns.argv(
            erl, "-noshell", "-name", name, "-setcookie", self.cookie,
            "-kernel", "inet_dist_use_interface", interface, "-kernel", "net_ticktime", str(tick),
            *extra, "-eval", _ERL_DRIVER,
        )  # fmt: skip
        env = {**os.environ, "ERL_EPMD_ADDRESS": ns.address}
        return self._started(ErlNode(name, ns, _popen(argv, env)))

    def _started(self, node: N) -> N:
        self.nodes.append(node)
        node.wait_ready()
        return node

    # --- faults ----------------------------------------------------------------

    def cut(self, ns: Namespace, mode: Literal["drop", "down"] = "drop") -> None:
        """Isolate `ns` from the others; nothing is closed or reset."""
        if mode == "down":
            sh("ip", "-n", ns.name, "link", "set", "dev", ns.dev, "down")
            return
        # Egress only, so both ends of the link: each drops what it would send.
        for where, dev in ((ns.name, ns.dev), (ns.peer_ns, ns.peer_dev)):
            if self._netem is not False:
                done = sh("ip", "netns", "exec", where, "tc", "qdisc", "replace", "dev", dev, "root", "netem", "loss", "100%", check=False)
                self._netem = done.returncode == 0
                if self._netem:
                    continue
            sh("ip", "netns", "exec", where, "tc", "qdisc", "replace", "dev", dev, "root", "pfifo", "limit", "0")

    def heal(self, ns: Namespace) -> None:
        """Undo `cut` (either mode)."""
        sh("ip", "-n", ns.name, "link", "set", "dev", ns.dev, "up")
        for where, dev in ((ns.name, ns.dev), (ns.peer_ns, ns.peer_dev)):
            sh("ip", "netns", "exec", where, "tc", "qdisc", "del", "dev", dev, "root", check=False)

    @property
    def netem(self) -> bool | None:
        """Whether `cut` used netem (None before the first drop)."""
        return self._netem


@contextmanager
def network(count: int = 2, *, ticktime: float = 4.0, cookie: str | None = None) -> Iterator[Network]:
    """`count` namespaces joined by links, each with its own EPMD; every
    node started through it is killed and everything deleted on exit."""
    require_netns()
    if count < 2:
        raise ValueError("a partition needs at least two namespaces")
    tag = f"{os.getpid() % 100000}{next(_counter)}{uuid.uuid4().hex[:4]}"
    subnet = _free_subnet()
    names = [f"bmns{tag}_{i}" for i in range(count)]
    hub = f"bmns{tag}_hub" if count > 2 else None
    created: list[str] = []
    net: Network | None = None
    with ExitStack() as cleanup:
        cleanup.callback(_delete, created)
        for name in [*names, *([hub] if hub else [])]:
            sh("ip", "netns", "add", name)
            created.append(name)
            sh("ip", "-n", name, "link", "set", "dev", "lo", "up")
        spaces: list[Namespace] = []
        if hub is None:
            # Interface names are at most 15 characters, and both ends are
            # created in the host's namespace before being moved: unique there.
            a, b = f"v{tag}a"[:15], f"v{tag}b"[:15]
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "link", "set", a, "netns", names[0])
            sh("ip", "link", "set", b, "netns", names[1])
            spaces = [
                Namespace(names[0], f"{subnet}.1", a, names[1], b),
                Namespace(names[1], f"{subnet}.2", b, names[0], a),
            ]
        else:
            sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", hub, "link", "set", "br0", "up")
            for i, name in enumerate(names):
                inner, outer = f"v{tag}{i}i"[:15], f"v{tag}{i}o"[:15]
                sh("ip", "link", "add", inner, "type", "veth", "peer", "name", outer)
                sh("ip", "link", "set", inner, "netns", name)
                sh("ip", "link", "set", outer, "netns", hub)
                sh("ip", "-n", hub, "link", "set", outer, "master", "br0")
                sh("ip", "-n", hub, "link", "set", outer, "up")
                spaces.append(Namespace(name, f"{subnet}.{i + 1}", inner, hub, outer))
        for space in spaces:
            sh("ip", "-n", space.name, "addr", "add", f"{space.address}/24", "dev", space.dev)
            sh("ip", "-n", space.name, "link", "set", "dev", space.dev, "up")
            _start_epmd(space)
        net = Network(spaces, subnet, ticktime, cookie or "c" + uuid.uuid4().hex, hub)
        cleanup.callback(_stop_nodes, net)
        yield net


# --- internals -------------------------------------------------------------------


def _popen(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
    )


def _free_subnet() -> str:
    """`10.213.X` with an X no address or route of the host uses."""
    used = sh("ip", "-o", "addr").stdout + sh("ip", "route").stdout
    for _ in range(100):
        subnet = f"10.213.{random.randrange(1, 255)}"
        if f"{subnet}." not in used:
            return subnet
    raise RuntimeError("no free 10.213.X.0/24 subnet")


def _start_epmd(space: Namespace) -> None:
    """The namespace's own EPMD on its address (and, implicitly, loopback),
    where its nodes register and other namespaces' nodes ask."""
    epmd = require("epmd")
    env = {**os.environ, "ERL_EPMD_ADDRESS": space.address}
    subprocess.run(space.argv(epmd, "-daemon"), env=env, check=True, timeout=30)
    deadline = time.monotonic() + 10
    while subprocess.run(space.argv(epmd, "-names"), capture_output=True, timeout=30).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"epmd did not start in {space.name}")
        time.sleep(0.05)


def _stop_nodes(net: Network) -> None:
    for node in net.nodes:
        node.stop()


def _delete(created: list[str]) -> None:
    """Kill whatever still runs in each namespace (the EPMDs, a node that
    forked), then delete the namespaces; their links go with them."""
    for name in created:
        pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
    for name in created:
        sh("ip", "netns", "del", name, check=False)
