"""Which processes of a node stand out, as Erlang's `recon` finds them.

`proc_count(attribute, n)` ranks every process of the node by an attribute
now; `proc_window(attribute, n, seconds)` by how much a counter grew over a
window (recon's `proc_window/3`: the processes busy *now*, not the ones
that have been around longest). Attributes: `"message_queue_len"`,
`"memory"` (bytes, see `ProcessInfo.memory`) and `"messages_handled"`
(beamish's stand-in for reductions).

Each entry is `(pid, value, label)`, the label being the registered name or
the initial call, as recon shows `[Name | {current_function, ...}]`.

>>> import beamish
>>> from beamish import recon
>>> async def main():
...     busy = beamish.spawn(lambda: beamish.receive(lambda m: False), name="busy")
...     for i in range(3):
...         beamish.send(busy, i)
...     top = recon.proc_count("message_queue_len", 1)
...     return top[0][1:]
>>> beamish.run(main)
(3, 'busy')

OTP/recon: mirrors `recon:proc_count/2` and `recon:proc_window/3`; differs
in the attributes a Python runtime can count.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from typing import Final, Literal

from .process import Process, current
from .terms import Pid

__all__ = ["proc_count", "proc_window"]

Attribute = Literal["message_queue_len", "memory", "messages_handled"]

_READ: Final[dict[str, Callable[[Process], int]]] = {
    "message_queue_len": lambda p: len(p.mailbox) if p.mailbox else 0,
    "memory": Process.memory,
    "messages_handled": lambda p: p.handled,
}


def _reader(attribute: str) -> Callable[[Process], int]:
    try:
        return _READ[attribute]
    except KeyError:
        raise ValueError(f"unknown attribute {attribute!r}: one of {sorted(_READ)}") from None


def _label(proc: Process) -> str:
    return str(proc.name) if proc.name is not None else proc.initial_call


def proc_count(attribute: Attribute, n: int = 10) -> list[tuple[Pid, int, str]]:
    """The `n` processes with the greatest `attribute`, greatest first."""
    read = _reader(attribute)
    procs = list(current().node.procs.values())
    top = heapq.nlargest(n, procs, key=read)
    return [(p.pid, read(p), _label(p)) for p in top]


async def proc_window(attribute: Attribute, n: int = 10, seconds: float = 1.0) -> list[tuple[Pid, int, str]]:
    """The `n` processes whose `attribute` grew most over `seconds` (for a
    level such as the queue length: whose level rose most)."""
    read = _reader(attribute)
    node = current().node
    before = {p.pid: read(p) for p in node.procs.values()}
    await asyncio.sleep(seconds)
    grown = []
    for p in list(node.procs.values()):
        grown.append((read(p) - before.get(p.pid, 0), p))
    top = heapq.nlargest(n, grown, key=lambda item: item[0])
    return [(p.pid, delta, _label(p)) for delta, p in top]
