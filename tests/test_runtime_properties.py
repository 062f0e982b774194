"""The runtime's invariants under random link/monitor/exit graphs.

Hypothesis builds a handful of processes, links and monitors them at random,
makes some trap exits, then ends them one event at a time (a crash, a normal
return, an exit signal, a kill). After every event a model computes, from
OTP's exit-signal table, which processes must have died and with what reason,
and which trapping processes must have received which `EXIT` messages; the
real node must agree. At the end every process is gone from the node, and
every monitor fired exactly once (or at most once, when its watcher died in
the same cascade as its target).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

import beamish
from beamish import Pid, Ref
from beamish.node import current_node
from beamish.testing import ANY, assert_receive, refute_receive

MAX_PROCS = 6
KILLED = "killed"
NORMAL = "normal"
OBSERVER = -1  # the test process, as the receiver slot of an EXIT it caused


class Crash(RuntimeError):
    pass


async def worker(index: int, observer: Pid) -> None:
    """Obeys the observer; reports every EXIT and DOWN message it receives."""
    while True:
        match await beamish.receive():
            case ("link", pid):
                beamish.link(pid)
                beamish.send(observer, ("ok", index))
            case ("monitor", pid):
                ref = beamish.monitor(pid)
                beamish.send(observer, ("monitored", index, ref))
            case "trap":
                beamish.process_flag("trap_exit", True)
                beamish.send(observer, ("ok", index))
            case ("ping", ref):
                beamish.send(observer, ("pong", ref))
            case "return":
                return
            case "crash":
                raise Crash(f"worker {index} crashed on purpose")
            case ("EXIT", pid, reason):
                beamish.send(observer, ("seen_exit", index, pid, reason))
            case ("DOWN", ref, "process", pid, reason):
                beamish.send(observer, ("seen_down", index, ref, pid, reason))


@dataclass
class Model:
    n: int
    links: set[frozenset[int]]
    trapping: set[int]
    alive: set[int] = field(default_factory=set)
    reasons: dict[int, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.alive = set(range(self.n))

    def linked(self, i: int) -> list[int]:
        return sorted(j for j in range(self.n) if frozenset((i, j)) in self.links)

    def die(self, i: int, reason: object) -> tuple[set[int], list[tuple[int, int, object]]]:
        """Process `i` ends with `reason`; return who died and the EXIT
        messages (receiver, sender, reason) trapping survivors must get."""
        died: set[int] = set()
        exits: list[tuple[int, int, object]] = []
        pending = [(i, reason)]
        while pending:
            j, r = pending.pop()
            if j not in self.alive:
                continue
            self.alive.discard(j)
            self.reasons[j] = r
            died.add(j)
            for k in self.linked(j):
                self.links.discard(frozenset((j, k)))
                if k not in self.alive:
                    continue
                if k in self.trapping:
                    exits.append((k, j, r))
                elif r != NORMAL:
                    pending.append((k, r))
        # A trapping process that died later in the same cascade may or may
        # not have handled its EXIT message first: only survivors are checked.
        return died, [e for e in exits if e[0] in self.alive]

    def signal(self, i: int, reason: str) -> tuple[set[int], list[tuple[int, int, object]]]:
        """`exit(pid_i, reason)` from the observer (which is linked to nobody)."""
        if reason == "kill":
            return self.die(i, KILLED)
        if i in self.trapping:
            return set(), [(OBSERVER, i, reason)]
        return self.die(i, reason)


events = st.tuples(
    st.sampled_from(["crash", "return", "kill", "shutdown", "normal_signal"]),
    st.integers(0, MAX_PROCS - 1),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, set[frozenset[int]], set[int], list[tuple[int, int]], list[tuple[str, int]]]:
    n = draw(st.integers(2, MAX_PROCS))
    idx = st.integers(0, n - 1)
    pairs = draw(st.lists(st.tuples(idx, idx).filter(lambda p: p[0] != p[1]), max_size=2 * n))
    links = {frozenset(p) for p in pairs}
    trapping = set(draw(st.lists(idx, max_size=n)))
    monitors = draw(st.lists(st.tuples(idx, idx), max_size=2 * n))
    evs = [(kind, i % n) for kind, i in draw(st.lists(events, min_size=1, max_size=2 * n))]
    return n, links, trapping, monitors, evs


async def sync_all(pids: dict[int, Pid], alive: set[int]) -> None:
    """A ping round-trip with every live worker: afterwards each has handled
    every message and signal that reached it before the ping."""
    for i in sorted(alive):
        ref = beamish.make_ref()
        beamish.send(pids[i], ("ping", ref))
        await assert_receive(("pong", ref), timeout=2.0)


async def scenario(
    n: int,
    links: set[frozenset[int]],
    trapping: set[int],
    monitors: list[tuple[int, int]],
    evs: list[tuple[str, int]],
) -> None:
    me = beamish.self()
    pids = {i: beamish.spawn(worker, i, me) for i in range(n)}
    index_of = {pid: i for i, pid in pids.items()}
    # The observer watches every worker, twice for worker 0: each of its
    # monitors must fire exactly once.
    observed: dict[Ref, int] = {beamish.monitor(pids[i]): i for i in range(n)}
    observed[beamish.monitor(pids[0])] = 0
    for i in sorted(trapping):
        beamish.send(pids[i], "trap")
        await assert_receive(("ok", i))
    for pair in links:
        a, b = sorted(pair)
        beamish.send(pids[a], ("link", pids[b]))
        await assert_receive(("ok", a))
    worker_monitors: dict[Ref, tuple[int, int]] = {}
    for watcher, target in monitors:
        beamish.send(pids[watcher], ("monitor", pids[target]))
        _, _, ref = await assert_receive(("monitored", watcher, Ref))
        worker_monitors[ref] = (watcher, target)

    model = Model(n, set(links), set(trapping))
    died_in: dict[int, int] = {}  # worker -> the event that ended it
    downs: Counter[Ref] = Counter()
    for step, (kind, i) in enumerate(evs):
        if i not in model.alive:
            continue
        if kind == "crash":
            beamish.send(pids[i], "crash")
            died, exits = model.die(i, Crash)
        elif kind == "return":
            beamish.send(pids[i], "return")
            died, exits = model.die(i, NORMAL)
        elif kind == "kill":
            beamish.exit(pids[i], "kill")
            died, exits = model.signal(i, "kill")
        elif kind == "shutdown":
            beamish.exit(pids[i], "shutdown")
            died, exits = model.signal(i, "shutdown")
        else:  # an exit signal with reason normal is ignored unless trapped
            beamish.exit(pids[i], NORMAL)
            died, exits = (set(), [(OBSERVER, i, NORMAL)]) if i in model.trapping else (set(), [])
        for j in died:
            died_in[j] = step
        # Every death is seen by the observer's monitors, with the model's reason.
        expected_downs = Counter(j for j in died for ref, t in observed.items() if t == j)
        while expected_downs:
            _, ref, _, pid, reason = await assert_receive(("DOWN", ANY, "process", ANY, ANY), timeout=2.0)
            j = index_of[pid]
            assert expected_downs[j] > 0, f"worker {j} died, but the model says it lives ({reason!r})"
            expected_downs[j] -= 1
            if expected_downs[j] == 0:
                del expected_downs[j]
            downs[ref] += 1
            want = model.reasons[j]
            if want is Crash:
                assert isinstance(reason, Crash), (j, reason)
            else:
                assert reason == want, (j, reason, want)
        await sync_all(pids, model.alive)
        for receiver, sender, reason in exits:
            if receiver == OBSERVER:  # the signal came from us: its sender is us
                await assert_receive(("seen_exit", sender, me, reason))
                continue
            msg = await assert_receive(("seen_exit", receiver, pids[sender], ANY))
            if reason is Crash:
                assert isinstance(msg[3], Crash)
            else:
                assert msg[3] == reason
        # Nothing else: no unexpected EXIT message and no unexpected death.
        await refute_receive(("seen_exit", ANY, ANY, ANY), timeout=0)
        await refute_receive(("DOWN", ANY, "process", ANY, ANY), timeout=0)

    # End the survivors; every process is then gone from the node.
    for i in sorted(model.alive):
        beamish.exit(pids[i], "kill")
        died_in[i] = len(evs)
    for ref, i in observed.items():
        if downs[ref] == 0:
            await assert_receive(("DOWN", ref, "process", pids[i], ANY), timeout=2.0)
            downs[ref] += 1
    await refute_receive(("DOWN", ANY, ANY, ANY, ANY), timeout=0)
    assert all(downs[ref] == 1 for ref in observed), downs
    node = current_node()
    assert [p.pid for p in node.procs.values()] == [me]
    assert not node.names
    # Monitoring the dead: exactly one DOWN, with reason noproc.
    ref = beamish.monitor(pids[0])
    await assert_receive(("DOWN", ref, "process", pids[0], "noproc"))
    await refute_receive(("DOWN", ref, ANY, ANY, ANY), timeout=0.01)

    # Worker-to-worker monitors: at most once always; exactly once when the
    # watcher outlived its target's cascade.
    forwarded: Counter[Ref] = Counter()
    while True:
        try:
            msg = await beamish.receive(lambda m: type(m) is tuple and m[0] == "seen_down", timeout=0)
        except TimeoutError:
            break
        forwarded[msg[2]] += 1
    for ref, (watcher, target) in worker_monitors.items():
        assert forwarded[ref] <= 1, (watcher, target)
        if died_in[target] < died_in[watcher]:
            assert forwarded[ref] == 1, f"worker {watcher} missed the DOWN of worker {target}"


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_random_graphs_obey_the_exit_signal_table(
    case: tuple[int, set[frozenset[int]], set[int], list[tuple[int, int]], list[tuple[str, int]]],
) -> None:
    logging.getLogger("beamish").setLevel(logging.CRITICAL)  # crash reports are expected here
    try:
        beamish.run(scenario, *case)
    finally:
        logging.getLogger("beamish").setLevel(logging.NOTSET)
