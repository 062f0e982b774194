"""Registry against a model: random registrations, unregistrations and exits of
a few processes, checked after every step."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import beamish
from beamish import Exit, Pid
from beamish._atoms import SYSTEM
from beamish._gen import call as gen_call
from beamish.node import current_node
from beamish.registry import AlreadyRegistered, Registry, _tables
from beamish.terms import Term
from beamish.testing import ANY, assert_receive, wait_for_exit

WORKERS = 2
SELF = WORKERS  # the slot of the test process itself, which never exits
KEYS = ("a", "b")
UNIQUE, DUPLICATE = "Uniq", "Dup"

worker_slot = st.integers(0, WORKERS - 1)
any_slot = st.integers(0, WORKERS)
registry = st.sampled_from([UNIQUE, DUPLICATE])
key = st.sampled_from(KEYS)
step = st.one_of(
    st.tuples(st.just("register"), any_slot, registry, key, st.integers(0, 9)),
    st.tuples(st.just("unregister"), any_slot, registry, key),
    st.tuples(st.just("exit"), worker_slot, st.sampled_from(["return", "shutdown", "crash"])),
    st.tuples(st.just("kill"), worker_slot),
    # Registries handle exit signals when they next run: "settle" lets them,
    # and steps without it exercise reads and registrations before they do.
    st.tuples(st.just("settle")),
    # Kill the workers holding a key and register it at once, before the
    # registry has handled their exits.
    st.tuples(st.just("takeover"), registry, key, st.integers(0, 9)),
)


def register(reg: str, k: str, v: int) -> Term:
    try:
        Registry.register(reg, k, v)
    except AlreadyRegistered as exc:
        return ("taken", exc.pid)
    return "ok"


async def worker() -> None:
    while True:
        match await beamish.receive():
            case ("register", reg, k, v, reply_to):
                beamish.send(reply_to, ("done", beamish.self(), register(reg, k, v)))
            case ("unregister", reg, k, reply_to):
                Registry.unregister(reg, k)
                beamish.send(reply_to, ("done", beamish.self(), "ok"))
            case "return":
                return
            case "shutdown":
                raise Exit("shutdown")
            case "crash":
                raise RuntimeError("crashed on purpose")


class Model:
    """What the registries must hold: unique key -> (pid, value), and the
    duplicate entries as (pid, key, value) in registration order."""

    def __init__(self) -> None:
        self.live: dict[int, Pid] = {SELF: beamish.self()}
        self.dead: list[Pid] = []
        self.unique: dict[str, tuple[Pid, int]] = {}
        self.duplicate: list[tuple[Pid, str, int]] = []

    def died(self, slot: int) -> None:
        pid = self.live.pop(slot)
        self.dead.append(pid)
        self.unique = {k: e for k, e in self.unique.items() if e[0] != pid}
        self.duplicate = [e for e in self.duplicate if e[0] != pid]

    def registered(self, pid: Pid, reg: str, k: str, v: int, result: Term) -> None:
        if reg == UNIQUE:
            if k in self.unique:
                assert result == ("taken", self.unique[k][0])
            else:
                assert result == "ok"
                self.unique[k] = (pid, v)
        else:
            assert result == "ok"
            self.duplicate.append((pid, k, v))

    def unregistered(self, pid: Pid, reg: str, k: str) -> None:
        if reg == UNIQUE:
            if k in self.unique and self.unique[k][0] == pid:
                del self.unique[k]
        else:
            self.duplicate = [e for e in self.duplicate if not (e[0] == pid and e[1] == k)]

    def keys(self, reg: str, pid: Pid) -> list[str]:
        if reg == UNIQUE:
            return [k for k, e in self.unique.items() if e[0] == pid]
        return [k for p, k, _ in self.duplicate if p == pid]


async def apply(model: Model, op: tuple[Term, ...]) -> None:
    me = beamish.self()
    if op[0] == "settle":
        for reg in (UNIQUE, DUPLICATE):
            await gen_call(reg, "get_state", label=SYSTEM)
        return
    if op[0] == "takeover":
        _, reg, k, v = op
        for held_by, holder in list(model.live.items()):
            if holder != me and k in model.keys(reg, holder):
                beamish.exit(holder, "kill")
                model.died(held_by)
        model.registered(me, reg, k, v, register(reg, k, v))
        return
    kind, slot = op[0], op[1]
    pid = model.live.get(slot)
    if pid is None:
        if kind in ("exit", "kill"):
            return
        # A slot whose process died gets a new one, which meets the keys of the dead.
        pid = model.live[slot] = beamish.spawn(worker)
    match op:
        case ("register", _, reg, k, v) if pid == me:
            model.registered(pid, reg, k, v, register(reg, k, v))
        case ("register", _, reg, k, v):
            beamish.send(pid, ("register", reg, k, v, me))
            _, _, result = await assert_receive(("done", pid, ANY), timeout=5.0)
            model.registered(pid, reg, k, v, result)
        case ("unregister", _, reg, k) if pid == me:
            Registry.unregister(reg, k)
            model.unregistered(pid, reg, k)
        case ("unregister", _, reg, k):
            beamish.send(pid, ("unregister", reg, k, me))
            await assert_receive(("done", pid, "ok"), timeout=5.0)
            model.unregistered(pid, reg, k)
        case ("exit", _, how):
            beamish.send(pid, how)
            await wait_for_exit(pid)
            model.died(slot)
        case ("kill", _):
            beamish.exit(pid, "kill")
            model.died(slot)


def check_at_once(model: Model) -> None:
    """What holds at every moment, even before the registries handle exits."""
    live = set(model.live.values())
    for k in KEYS:
        expected = [model.unique[k]] if k in model.unique else []
        assert Registry.lookup(UNIQUE, k) == expected
        # A duplicate key may still list a dead owner here, never miss a live one.
        found = [(p, v) for p, v in Registry.lookup(DUPLICATE, k) if p in live]
        assert found == [(p, v) for p, kk, v in model.duplicate if kk == k]
    for reg in (UNIQUE, DUPLICATE):
        for pid in [*model.live.values(), *model.dead]:
            assert Registry.keys(reg, pid) == model.keys(reg, pid)


def check_settled(model: Model) -> None:
    """What holds once the registries have handled every exit signal."""
    for k in KEYS:
        assert Registry.lookup(DUPLICATE, k) == [(p, v) for p, kk, v in model.duplicate if kk == k]
    assert Registry.count(UNIQUE) == len(model.unique)
    assert Registry.count(DUPLICATE) == len(model.duplicate)
    tables = _tables(current_node())
    live = set(model.live.values())
    for reg in (UNIQUE, DUPLICATE):
        assert set(tables[reg].owners) <= live, "an entry of a dead process is left"


async def scenario(steps: list[tuple[Term, ...]]) -> None:
    await Registry.start_link(keys="unique", name=UNIQUE)
    await Registry.start_link(keys="duplicate", name=DUPLICATE)
    model = Model()
    for op in [*steps, ("settle",)]:
        await apply(model, op)
        check_at_once(model)
        if op[0] == "settle":
            check_settled(model)


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(step, min_size=1, max_size=40))
def test_registry_matches_the_model(steps: list[tuple[Term, ...]]) -> None:
    beamish.run(scenario, steps)
