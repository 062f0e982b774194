"""Agent: a process that holds a value, read and changed through functions.

When all a process does is keep some state that others read and update, a
GenServer is more ceremony than needed: an Agent takes functions and runs
them on its state, one at a time, so updates never race.

>>> import beamish
>>> from beamish import Agent
>>> async def main():
...     counter = await Agent.start_link(lambda: 0)
...     await Agent.update(counter, lambda n: n + 1)
...     Agent.cast(counter, lambda n: n + 10)
...     old = await Agent.get_and_update(counter, lambda n: (n, n * 2))
...     return old, await Agent.get(counter, lambda n: n)
>>> beamish.run(main)
(11, 22)

The functions run inside the agent process (a slow one delays every other
caller, as in Elixir); they may be `def` or `async def`. Agents take names
and via-names like any GenServer and are supervisable (`Agent.child_spec`).

OTP: mirrors Elixir's Agent (start_link, get, update, get_and_update, cast,
stop, child_spec); differs in taking Python callables instead of
`{module, fun, args}` triples.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from ._gen import ChildSpec
from .gen_server import GenServer, NoReply, Reply
from .process import Dest
from .terms import Pid, Term

# Public as `beamish.Agent` (one path per name).
__all__: list[str] = []

Fn = Callable[..., Term]


async def _apply(fn: Fn, *args: Term) -> Term:
    result = fn(*args)
    if asyncio.iscoroutine(result):
        result = await result
    return result


class Agent(GenServer):
    """An Agent (use the static functions; the class is its server)."""

    async def init(self, fn: Fn) -> Term:
        return await _apply(fn)

    async def handle_call(self, request: Term, from_: Term, state: Term) -> Reply:
        match request:
            case ("get", fn):
                return Reply(await _apply(fn, state), state)
            case ("update", fn):
                return Reply(None, await _apply(fn, state))
            case ("get_and_update", fn):
                result = await _apply(fn, state)
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise TypeError(f"get_and_update's function must return (reply, new_state), not {result!r}")
                return Reply(result[0], result[1])
        raise TypeError(f"unknown Agent request {request!r}")

    async def handle_cast(self, request: Term, state: Term) -> NoReply:
        _, fn = request
        return NoReply(await _apply(fn, state))

    # --- client API (static, like Elixir's Agent module) ----------------------

    @classmethod
    async def start_link(cls, arg: Term = None, *, name: Dest | None = None, timeout: float | None = None) -> Pid:
        """Start an agent whose state is `arg()` (Elixir's `Agent.start_link(fun)`)."""
        return await super().start_link(arg, name=name, timeout=timeout)

    @staticmethod
    async def get(agent: Dest, fn: Fn, timeout: float | None = 5.0) -> Term:
        """`fn(state)`, computed in the agent."""
        return await GenServer.call(agent, ("get", fn), timeout)

    @staticmethod
    async def update(agent: Dest, fn: Fn, timeout: float | None = 5.0) -> None:
        """Replace the state with `fn(state)` and wait until it is done."""
        await GenServer.call(agent, ("update", fn), timeout)

    @staticmethod
    async def get_and_update(agent: Dest, fn: Fn, timeout: float | None = 5.0) -> Term:
        """`fn(state)` returns `(reply, new_state)`: keep the new state, return the reply."""
        return await GenServer.call(agent, ("get_and_update", fn), timeout)

    @staticmethod
    def cast(agent: Dest, fn: Fn) -> None:
        """Replace the state with `fn(state)`, without waiting."""
        GenServer.cast(agent, ("update", fn))

    @classmethod
    def child_spec(cls, arg: Term = None) -> ChildSpec:
        """`(Agent, fn)` in a supervisor's children starts `Agent.start_link(fn)`."""
        return ChildSpec(id=cls, start=(functools.partial(cls.start_link), (arg,)), modules=("Agent",))
