"""What the observer shows of one node, as plain data: its supervision
trees, its processes ranked, one process in detail. A node answers for
itself directly, and for a peer through that peer's probe process
(`beamish_observer`, a GenServer the observer starts on each node it serves
from), over the distribution protocol: no code named on the wire, so no
allow-list entry is needed.

>>> import beamish
>>> from beamish import Supervisor
>>> from beamish.observer._probe import tree
>>> async def main():
...     await Supervisor.start_link([], strategy="one_for_one", name="Top")
...     return [(t["name"], t["children"]) for t in await tree()]
>>> beamish.run(main)
[('Top', [])]
"""

from __future__ import annotations

from typing import Any

import beamish
from beamish import GenServer, Reply, Supervisor, sys
from beamish.node import current_node
from beamish.terms import Pid

__all__: list[str] = []  # beamish.observer is the public face

PROBE = "beamish_observer"
SORTS = ("message_queue_len", "memory", "messages_handled")


def _label(info: Any) -> str:
    return str(info.registered_name) if info.registered_name else info.initial_call


def _pid_text(pid: Any) -> str:
    return repr(pid)


async def tree() -> list[dict[str, Any]]:
    """Every supervision tree of this node, from its root supervisors down."""
    node = current_node()
    sups = {proc.pid for proc in list(node.procs.values()) if proc.behaviour == "Supervisor"}
    children_of: dict[Pid, list[tuple[Any, Any, str]]] = {}
    for sup in sups:
        try:
            children_of[sup] = [(cid, pid, kind) for cid, pid, kind, _ in await Supervisor.which_children(sup)]
        except beamish.Exit:
            children_of[sup] = []
    inner = {pid for kids in children_of.values() for _, pid, _ in kids if type(pid) is Pid}

    def walk(pid: Any, cid: Any, kind: str) -> dict[str, Any]:
        info = beamish.process_info(pid) if type(pid) is Pid else None
        return {
            "id": repr(cid),
            "pid": _pid_text(pid) if type(pid) is Pid else str(pid),
            "name": _label(info) if info else str(pid),
            "type": kind,
            "queue": info.message_queue_len if info else 0,
            "children": [walk(p, c, k) for c, p, k in children_of.get(pid, [])] if type(pid) is Pid else [],
        }

    roots = sorted(sups - inner, key=lambda p: p.id)
    return [walk(pid, None, "supervisor") for pid in roots]


def processes(sort: str = "message_queue_len", n: int = 50) -> list[dict[str, Any]]:
    """The `n` processes first by `sort` (queue length, memory, messages handled)."""
    if sort not in SORTS:
        raise ValueError(f"sort by one of {SORTS}")
    rows: list[dict[str, Any]] = []
    for proc in list(current_node().procs.values()):
        info = proc.info()
        rows.append({
            "pid": _pid_text(info.pid), "name": _label(info), "behaviour": info.behaviour or "task",
            "message_queue_len": info.message_queue_len, "memory": info.memory,
            "messages_handled": info.messages_handled, "status": info.status,
        })  # fmt: skip
    rows.sort(key=lambda r: r[sort], reverse=True)
    return rows[:n]


async def process(pid_text: str) -> dict[str, Any] | None:
    """One process in detail, its state too when it is a behaviour (asked
    with sys.get_state and a short timeout, as Erlang's observer does)."""
    for proc in list(current_node().procs.values()):
        if _pid_text(proc.pid) == pid_text:
            info = proc.info()
            details: dict[str, Any] = {
                "pid": pid_text, "name": _label(info), "behaviour": info.behaviour or "task", "status": info.status,
                "message_queue_len": info.message_queue_len, "memory": info.memory,
                "messages_handled": info.messages_handled, "links": [_pid_text(p) for p in info.links],
                "monitors": [repr(m) for m in info.monitors], "trap_exit": info.trap_exit,
                "current_function": info.current_function, "initial_call": info.initial_call,
            }  # fmt: skip
            if info.behaviour and proc.pid != beamish.self():
                try:
                    details["state"] = repr(await sys.get_state(proc.pid, timeout=0.5))[:2000]
                except (beamish.Exit, Exception) as exc:  # a busy or dying process: say so
                    details["state"] = f"(unavailable: {exc!r})"[:200]
            return details
    return None


class Probe(GenServer):
    """`beamish_observer`: answers for its node to an observer on another."""

    async def handle_call(self, request: Any, from_: Any, state: Any) -> Reply:
        match request:
            case ("tree",):
                return Reply(await tree(), state)
            case ("processes", str(sort), int(n)) if sort in SORTS:
                return Reply(processes(sort, min(n, 500)), state)
            case ("process", str(pid_text)):
                return Reply(await process(pid_text), state)
        return Reply(None, state)

    def init(self, _: Any) -> None:
        return None


async def ensure_probe() -> None:
    """Start this node's probe unless it runs."""
    if beamish.whereis(PROBE) is None:
        try:
            await Probe.start(None, name=PROBE)
        except beamish.StartError:
            pass
