"""Cluster formation: keep a node connected to the nodes a strategy names,
as Elixir's libcluster does.

A deployment rarely knows its nodes when the code is written: they are a
fixed list, whatever registered with the port mappers of a few hosts, or
the addresses a DNS name resolves to. A *topology* pairs one such
*strategy* with how often to ask it; `Cluster` runs one process per
topology under a supervisor, and each keeps connecting to the nodes its
strategy lists: at start, at every poll, and, for a node that went down or
refused, again after an exponential backoff (capped, with jitter), so a
restarted node is joined again without anyone calling `dist.connect`.

>>> from beamish.cluster import Static, Topology, parse_topologies
>>> parse_topologies({"example": {"strategy": "static", "hosts": ["a@10.0.0.1", "b@10.0.0.2"]}})
[Topology(name='example', strategy=Static(hosts=('a@10.0.0.1', 'b@10.0.0.2')), polling_interval=5.0, backoff=Backoff(initial=1.0, max=30.0, jitter=0.2), prune=False)]

## Strategies

- `Static(hosts)`: a fixed list of node names (libcluster's `Epmd`
  strategy, whose option is also called `hosts`).
- `EpmdHosts(hosts, prefix="")`: every node registered with the EPMD of
  each host (EPMD's NAMES request, as `net_adm:names/1`), keeping those
  whose name starts with `prefix`: `name@host` (libcluster's `LocalEpmd`
  for one host, `ErlangHosts` for several).
- `Dns(query, basename)`: `basename@<ip>` for every IPv4 address `query`
  resolves to, through the event loop's `getaddrinfo` (libcluster's
  `DNSPoll`, which asks for A records).

The node itself is never in the list. A strategy that fails (a host whose
EPMD does not answer is skipped; a DNS name that does not resolve fails the
poll) keeps the list of the last poll that worked.

## Nodes that leave the list

A node that disappears from a strategy's answer is disconnected only when
the topology says `prune = true`. That is libcluster's rule: its `DNSPoll`
prunes by default (its `prune` option, default true) and its static and
EPMD strategies never disconnect anything, so `prune` defaults to true for
`Dns` and false for the others. A node that is merely down stays in the
list and is retried with backoff.

## Configuration

A `[cluster.topologies.<name>]` table per topology in the application
configuration (`beamish.config`), per environment as the rest:

```toml
[cluster.topologies.app]
strategy = "dns"                   # "static" | "epmd_hosts" | "dns"
query = "app.internal"             # dns: the name to resolve
basename = "app"                   # dns: nodes are app@<ip>
polling_interval = 5.0             # seconds between polls (default 5.0)
prune = true                       # disconnect nodes that left the answer
backoff = { initial = 1.0, max = 30.0, jitter = 0.2 }

[cluster.topologies.peers]
strategy = "epmd_hosts"
hosts = ["10.0.0.1", "10.0.0.2"]   # epmd_hosts: the hosts whose EPMD to ask
prefix = "app"                     # epmd_hosts: only nodes named app*

[cluster.topologies.seeds]
strategy = "static"
hosts = ["a@10.0.0.1", "b@10.0.0.2"]   # static: node names
```

`Cluster.from_config(cfg)` turns it into a child spec; a missing or
unknown key, a wrong type or an unknown strategy raises
`beamish.config.ConfigError` naming the file, line and key of each problem.

## Supervision

```python
children = [
    Cluster.child_spec(topologies, name="MyApp.ClusterSupervisor"),  # or Cluster.from_config(cfg)
    MyApp.Worker.child_spec(),
]
await Supervisor.start_link(children, strategy="one_for_one")
```

The node must be distributed first (`dist.start`, or `beamish run
--name`). `await Cluster.status("MyApp.ClusterSupervisor")` tells, per
topology, which nodes it wants, which it has, and which it is retrying.

OTP: mirrors libcluster's `Cluster.Supervisor` and its `Epmd`,
`LocalEpmd`/`ErlangHosts` and `DNSPoll` strategies; differs in retrying a
node that is down with exponential backoff (libcluster's strategies retry
at their next poll, or never for `Epmd`), and in connecting with
`dist.connect` only (libcluster's `connect`/`disconnect`/`list_nodes`
callbacks are not configurable).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from .. import application, dist
from .._gen import ChildSpec, From, StartError
from ..config import Config, ConfigError, Problem
from ..dist.epmd import EpmdError
from ..dist.epmd import names as epmd_names
from ..gen_server import GenServer, NoReply, Reply, Stop
from ..process import Timer, cancel_timer, current, send, send_after, spawn_link
from ..supervisor import Supervisor
from ..terms import Atom, Pid, Term

# Public as `beamish.cluster.<Name>` (one path per name).
__all__: list[str] = []

log = logging.getLogger("beamish.cluster")

DEFAULT_NAME = "beamish.cluster"
"""The name `Cluster.start_link` registers its supervisor under by default."""

_NOT_ALIVE = ("not_alive", "cluster formation needs a distributed node: dist.start(...) first")
_QUERY_TIMEOUT = 2.0  # one EPMD's answer; a host that does not answer is skipped


@dataclass(frozen=True, slots=True)
class Static:
    """A fixed list of node names (libcluster's `Epmd` strategy)."""

    hosts: tuple[str, ...]

    kind: Literal["static"] = dataclasses.field(default="static", init=False, repr=False)

    async def nodes(self) -> list[str]:
        """The nodes to connect to."""
        return list(self.hosts)


@dataclass(frozen=True, slots=True)
class EpmdHosts:
    """The nodes registered with the EPMD of each of `hosts`, whose name
    starts with `prefix` (libcluster's `LocalEpmd`/`ErlangHosts`)."""

    hosts: tuple[str, ...]
    prefix: str = ""
    epmd_port: int | None = None

    kind: Literal["epmd_hosts"] = dataclasses.field(default="epmd_hosts", init=False, repr=False)

    async def nodes(self) -> list[str]:
        """`name@host` for each matching name on each host that answers."""
        found: list[str] = []
        for host in self.hosts:
            try:
                names = await epmd_names(host, epmd_port=self.epmd_port, timeout=_QUERY_TIMEOUT)
            except EpmdError as exc:
                log.debug("EPMD on %s did not list its nodes: %s", host, exc)
                continue
            found.extend(f"{name}@{host}" for name in sorted(names) if name.startswith(self.prefix))
        return found


@dataclass(frozen=True, slots=True)
class Dns:
    """`basename@<ip>` for each IPv4 address `query` resolves to
    (libcluster's `DNSPoll`)."""

    query: str
    basename: str

    kind: Literal["dns"] = dataclasses.field(default="dns", init=False, repr=False)

    async def nodes(self) -> list[str]:
        """Raises `OSError` (`socket.gaierror`) when `query` does not resolve."""
        infos = await asyncio.get_running_loop().getaddrinfo(
            self.query, None, family=socket.AF_INET, type=socket.SOCK_STREAM
        )
        addresses = sorted({str(info[4][0]) for info in infos})
        return [f"{self.basename}@{address}" for address in addresses]


class Strategy(Protocol):
    """What a topology asks for its nodes: `Static`, `EpmdHosts`, `Dns`, or
    an object of one's own with a `kind` (its name in logs and `status`)
    and an `async def nodes()` returning node names (libcluster's custom
    strategies). Raising `OSError` keeps the previous list."""

    @property
    def kind(self) -> str: ...

    async def nodes(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before connecting again to a node that refused or
    went down: `initial` seconds after the first failure, doubling with
    each failure in a row up to `max`, each wait shortened by a random
    fraction of at most `jitter` (so nodes that lost the same peer do not
    all knock at once)."""

    initial: float = 1.0
    max: float = 30.0
    jitter: float = 0.2

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """The wait after `failures` (>= 1) failures in a row.

        >>> Backoff(initial=1.0, max=5.0, jitter=0.0).delay(4)
        5.0
        """
        base = min(self.max, self.initial * 2.0 ** max(0, failures - 1))
        return base * (1.0 - self.jitter * rand())


@dataclass(frozen=True, slots=True)
class Topology:
    """One strategy and how to run it: `polling_interval` seconds between
    asking the strategy, `backoff` for nodes that do not answer, and
    `prune` (None: the strategy's default, true for `Dns` only) to
    disconnect nodes that left the strategy's answer."""

    name: str
    strategy: Strategy
    polling_interval: float = 5.0
    backoff: Backoff = Backoff()
    prune: bool | None = None

    def __post_init__(self) -> None:
        if self.prune is None:
            object.__setattr__(self, "prune", isinstance(self.strategy, Dns))
        if self.polling_interval <= 0:
            raise ValueError(f"topology {self.name}: polling_interval must be positive, not {self.polling_interval!r}")


@dataclass(frozen=True, slots=True)
class TopologyStatus:
    """What one topology's process knows: the nodes its strategy listed at
    the last poll (`wanted`), those of them connected now, and those it is
    retrying, with their failures in a row."""

    topology: str
    strategy: str
    wanted: tuple[str, ...]
    connected: tuple[str, ...]
    retrying: tuple[tuple[str, int], ...]


def parse_topologies(
    section: object, *, config: Config | None = None, path: Sequence[str] = ("cluster", "topologies")
) -> list[Topology]:
    """The topologies of a `topologies` table (`{name: {"strategy": ...,
    ...}}`, as TOML's `[cluster.topologies.<name>]` reads). With `config`,
    problems name the file and line; `path` is where the table sits in it.
    Raises `ConfigError` listing every problem."""
    problems: list[Problem] = []
    found: list[Topology] = []

    def problem(keys: Sequence[str], message: str) -> None:
        full = (*path, *keys)
        file, line = None, None
        if config is not None:
            # A key of an inline table, or one missing, has no line of its
            # own: point at the closest enclosing key that has one.
            for end in range(len(full), 0, -1):
                file, line = config.where(full[:end])
                if line is not None:
                    break
        problems.append(Problem(file, line, ".".join(full), message))

    if not isinstance(section, Mapping):
        problem((), f"expected a table of topologies, got {section!r}")
        raise ConfigError(problems)
    for name, table in section.items():
        if not isinstance(table, Mapping):
            problem((name,), "expected a table, e.g. [cluster.topologies.NAME] with strategy = \"static\"")
            continue
        topology = _parse_one(str(name), table, functools.partial(_under, problem, str(name)))
        if topology is not None:
            found.append(topology)
    if problems:
        raise ConfigError(problems)
    return found


class Cluster:
    """libcluster's `Cluster.Supervisor`: a supervisor with one process per
    topology, each connecting this node to the nodes its strategy lists
    (see the module's documentation)."""

    @staticmethod
    def child_spec(topologies: Sequence[Topology], *, name: str = DEFAULT_NAME) -> ChildSpec:
        """The child spec of the cluster's supervisor, registered as `name`
        (libcluster's `{Cluster.Supervisor, [topologies, [name: ...]]}`)."""
        checked = _checked(topologies)
        return ChildSpec(
            id=name,
            start=(Cluster.start_link, (checked, name)),
            shutdown=None,
            type="supervisor",
            modules=("Cluster",),
        )

    @staticmethod
    def from_config(
        config: Config | None = None, *, app: str = "cluster", key: str = "topologies", name: str = DEFAULT_NAME
    ) -> ChildSpec:
        """`child_spec` of the topologies configured in `config` under
        `[<app>.<key>.<name>]` (default `[cluster.topologies.<name>]`); with
        no `config`, of the calling node's application env (`load_config`
        read it). Raises `ConfigError` for a bad configuration; no table
        at all is no topology (an idle supervisor), as libcluster's."""
        if config is not None:
            env: Mapping[str, Term] = config.sections.get(app, {})
        else:
            env = application.get_all_env(app)
        table = env.get(key, {})
        return Cluster.child_spec(parse_topologies(table or {}, config=config, path=(app, key)), name=name)

    @staticmethod
    async def start_link(topologies: Sequence[Topology], name: str | None = DEFAULT_NAME) -> Pid:
        """Start the cluster's supervisor linked to the caller. Raises
        `StartError(("not_alive", ...))` on a node that is not distributed."""
        if not dist.is_alive():
            raise StartError(_NOT_ALIVE)
        children: list[Term] = [
            ChildSpec(id=t.name, start=(_TopologyServer.start_link, (t,)), modules=("Cluster",)) for t in _checked(topologies)
        ]
        return await Supervisor.start_link(children, name=name, strategy="one_for_one")

    @staticmethod
    async def status(cluster: Term = DEFAULT_NAME) -> dict[str, TopologyStatus]:
        """Each running topology's `TopologyStatus`, by topology name."""
        found: dict[str, TopologyStatus] = {}
        for child_id, pid, _, _ in await Supervisor.which_children(cluster):
            if isinstance(pid, Pid):
                state = await GenServer.call(pid, "status")
                assert isinstance(state, TopologyStatus)
                found[str(child_id)] = state
        return found


# --- internals -------------------------------------------------------------------

_STRATEGY_KEYS: dict[str, dict[str, tuple[type, ...]]] = {
    "static": {"hosts": (list,)},
    "epmd_hosts": {"hosts": (list,), "prefix": (str,), "epmd_port": (int,)},
    "dns": {"query": (str,), "basename": (str,)},
}
_REQUIRED = {"static": ("hosts",), "epmd_hosts": ("hosts",), "dns": ("query", "basename")}
_COMMON: dict[str, tuple[type, ...]] = {"strategy": (str,), "polling_interval": (int, float), "prune": (bool,), "backoff": (dict,)}
_BACKOFF_KEYS = ("initial", "max", "jitter")


def _parse_one(name: str, table: Mapping[str, Term], problem: Callable[[tuple[str, ...], str], None]) -> Topology | None:
    kind = table.get("strategy")
    if kind not in _STRATEGY_KEYS:
        choices = ", ".join(f'"{k}"' for k in _STRATEGY_KEYS)
        problem(("strategy",), f"expected one of {choices}, got {kind!r}" if "strategy" in table else f"required key missing (one of {choices})")
        return None
    assert isinstance(kind, str)
    allowed = {**_COMMON, **_STRATEGY_KEYS[kind]}
    ok = True
    for key, value in table.items():
        types = allowed.get(key)
        if types is None:
            problem((key,), f"unknown key for strategy {kind!r} (expected {', '.join(sorted(allowed))})")
            ok = False
        elif (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            problem((key,), f"expected {' or '.join(t.__name__ for t in types)}, got {value!r}")
            ok = False
    for key in _REQUIRED[kind]:
        if key not in table:
            problem((key,), f"required key missing for strategy {kind!r}")
            ok = False
    hosts = table.get("hosts", [])
    if isinstance(hosts, list):
        for i, host in enumerate(hosts):
            if not isinstance(host, str) or not host or (kind == "static" and "@" not in host):
                what = "a node name like 'app@10.0.0.1'" if kind == "static" else "a host name or address"
                problem(("hosts",), f"item {i}: expected {what}, got {host!r}")
                ok = False
    interval = table.get("polling_interval", 5.0)
    if isinstance(interval, int | float) and not isinstance(interval, bool) and interval <= 0:
        problem(("polling_interval",), f"expected a positive number of seconds, got {interval!r}")
        ok = False
    backoff = Backoff()
    raw = table.get("backoff", {})
    if isinstance(raw, dict):
        values: dict[str, float] = {}
        for key, value in raw.items():
            if key not in _BACKOFF_KEYS:
                problem(("backoff", key), f"unknown key (expected {', '.join(_BACKOFF_KEYS)})")
                ok = False
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problem(("backoff", key), f"expected a non-negative number, got {value!r}")
                ok = False
            else:
                values[key] = float(value)
        if values.get("jitter", 0.0) > 1.0:
            problem(("backoff", "jitter"), f"expected a fraction between 0 and 1, got {values['jitter']!r}")
            ok = False
        backoff = Backoff(**values)
    if not ok:
        return None
    strategy: Static | EpmdHosts | Dns
    if kind == "static":
        strategy = Static(tuple(table["hosts"]))
    elif kind == "epmd_hosts":
        port = table.get("epmd_port")
        strategy = EpmdHosts(tuple(table["hosts"]), str(table.get("prefix", "")), port if isinstance(port, int) else None)
    else:
        strategy = Dns(str(table["query"]), str(table["basename"]))
    prune = table.get("prune")
    return Topology(name, strategy, float(interval), backoff, prune if isinstance(prune, bool) else None)


def _under(problem: Callable[[Sequence[str], str], None], name: str, keys: tuple[str, ...], message: str) -> None:
    problem((name, *keys), message)


def _checked(topologies: Sequence[Topology]) -> tuple[Topology, ...]:
    checked = tuple(topologies)
    for t in checked:
        if not isinstance(t, Topology):
            raise TypeError(f"expected Topology objects (see beamish.cluster.parse_topologies), got {t!r}")
    names = [t.name for t in checked]
    if len(set(names)) != len(names):
        raise ValueError(f"topology names must be unique: {names}")
    return checked


class _State:
    """One topology's bookkeeping."""

    __slots__ = ("failures", "inflight", "me", "poll_timer", "timers", "topology", "wanted")

    def __init__(self, topology: Topology, me: Pid) -> None:
        self.topology = topology
        self.me = me
        self.wanted: list[str] = []
        self.failures: dict[str, int] = {}  # failed attempts in a row, per node
        self.timers: dict[str, Timer] = {}  # the next attempt of a node backing off
        self.inflight: set[str] = set()
        self.poll_timer: Timer | None = None


class _TopologyServer(GenServer):
    """Polls one topology's strategy and keeps its nodes connected."""

    def init(self, topology: Topology) -> _State | Stop:
        if not dist.is_alive():
            return Stop(_NOT_ALIVE)
        dist.monitor_nodes(True)
        state = _State(topology, current().pid)
        send(state.me, "$poll")  # the first poll right after the ack: init stays short
        return state

    def handle_call(self, request: Term, from_: From, state: _State) -> Reply:
        if request == "status":
            connected = set(dist.nodes())
            status = TopologyStatus(
                state.topology.name,
                state.topology.strategy.kind,
                tuple(state.wanted),
                tuple(n for n in state.wanted if Atom(n) in connected),
                tuple(sorted((n, f) for n, f in state.failures.items() if n in state.wanted)),
            )
            return Reply(status, state)
        return Reply(("error", ("unknown_call", request)), state)

    async def handle_info(self, msg: Term, state: _State) -> NoReply:
        match msg:
            case "$poll":
                await self._poll(state)
            case ("$retry", str() as peer):
                state.timers.pop(peer, None)
                self._attempt(peer, state)
            case ("$attempted", str() as peer, bool() as ok):
                state.inflight.discard(peer)
                if ok:
                    state.failures.pop(peer, None)
                elif peer in state.wanted:
                    failures = state.failures[peer] = state.failures.get(peer, 0) + 1
                    self._retry_later(peer, failures, state)
            case ("nodeup", peer):
                state.failures.pop(str(peer), None)
                timer = state.timers.pop(str(peer), None)
                if timer is not None:
                    cancel_timer(timer)
            case ("nodedown", peer) if str(peer) in state.wanted:
                # It may be restarting: knock again soon, then back off.
                log.info("topology %s: %s went down; reconnecting", state.topology.name, peer)
                self._retry_later(str(peer), 1, state)
        return NoReply(state)

    async def _poll(self, state: _State) -> None:
        topology = state.topology
        try:
            listed = await topology.strategy.nodes()
        except OSError as exc:
            log.warning("topology %s: %s strategy failed (%s); keeping its last list", topology.name, topology.strategy.kind, exc)
        else:
            me = str(dist.node())
            wanted = list(dict.fromkeys(n for n in listed if n != me))
            if topology.prune:
                connected = set(dist.nodes())
                for gone in set(state.wanted) - set(wanted):
                    if Atom(gone) in connected:
                        log.info("topology %s: %s left the list; disconnecting", topology.name, gone)
                        dist.disconnect(gone)
            for gone in set(state.wanted) - set(wanted):
                state.failures.pop(gone, None)
                timer = state.timers.pop(gone, None)
                if timer is not None:
                    cancel_timer(timer)
            state.wanted = wanted
        for peer in state.wanted:
            if peer not in state.timers:  # one backing off waits for its timer
                self._attempt(peer, state)
        state.poll_timer = send_after(state.me, "$poll", topology.polling_interval)

    def _attempt(self, peer: str, state: _State) -> None:
        if peer not in state.wanted or peer in state.inflight or Atom(peer) in dist.nodes():
            return
        state.inflight.add(peer)
        # In a linked process of its own: an unreachable host holds a connect
        # for seconds, and the other nodes (and `status`) must not wait.
        spawn_link(_connect, state.me, peer)

    def _retry_later(self, peer: str, failures: int, state: _State) -> None:
        old = state.timers.pop(peer, None)
        if old is not None:
            cancel_timer(old)
        delay = state.topology.backoff.delay(failures)
        state.timers[peer] = send_after(state.me, ("$retry", peer), delay)


async def _connect(owner: Pid, peer: str) -> None:
    try:
        ok = await dist.connect(peer)
    except Exception as exc:  # a name that is no node name, a kernel stopping: a failed attempt
        log.info("could not connect to %s: %r", peer, exc)
        ok = False
    send(owner, ("$attempted", peer, ok))
