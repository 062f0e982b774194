"""Testing support in the spirit of ExUnit: `assert_receive`, `refute_receive`,
`start_supervised`, `wait_for_exit`, `eventually`, and a pytest plugin that runs `async def`
tests inside a fresh node.

>>> import beamish
>>> from beamish.testing import assert_receive, refute_receive, ANY
>>> async def main():
...     beamish.send(beamish.self(), ("hello", 1))
...     msg = await assert_receive(("hello", ANY))
...     await refute_receive(("hello", ANY), timeout=0.01)
...     return msg
>>> beamish.run(main)
('hello', 1)

Patterns are templates: `ANY` matches anything, a type matches its
instances, tuples and lists match element-wise, a dict matches when its keys
are present with matching values (like an Elixir map pattern), anything else
by equality. A predicate (any other callable) also works.

OTP: mirrors ExUnit.Assertions' `assert_receive/3` (default timeout 100 ms)
and ExUnit.Callbacks' `start_supervised/2`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Final

from .._atoms import DOWN
from .._pattern import ANY, Pattern, matches
from ..process import Exit, current, demonitor, monitor, receive
from ..terms import Pid, Term

__all__ = [
    "ANY",
    "assert_receive",
    "eventually",
    "matches",
    "refute_receive",
    "start_supervised",
    "stop_supervised",
    "wait_for_exit",
]


def _predicate(pattern: Pattern) -> Callable[[Term], bool]:
    if callable(pattern) and not isinstance(pattern, type):
        return lambda m: bool(pattern(m))
    return lambda m: matches(pattern, m)


async def assert_receive(pattern: Pattern, timeout: float = 0.1) -> Term:
    """Wait up to `timeout` seconds for a message matching `pattern`, take it
    out of the mailbox and return it; fail with the mailbox's contents if none
    arrives."""
    try:
        return await receive(_predicate(pattern), timeout)
    except TimeoutError:
        mailbox = list(current().mailbox or ())
        raise AssertionError(
            f"no message matching {pattern!r} after {timeout} s; mailbox: {mailbox!r}"
        ) from None


async def refute_receive(pattern: Pattern, timeout: float = 0.1) -> None:
    """Fail if a message matching `pattern` arrives within `timeout` seconds."""
    try:
        msg = await receive(_predicate(pattern), timeout)
    except TimeoutError:
        return
    raise AssertionError(f"unexpectedly received {msg!r}, matching {pattern!r}")


async def wait_for_exit(pid: Pid, timeout: float = 5.0) -> Term:
    """Wait until `pid` ends and return its exit reason (`noproc` if it was
    already gone); raise `TimeoutError` if it is still alive after `timeout`."""
    ref = monitor(pid)
    try:
        msg = await receive(lambda m: type(m) is tuple and len(m) == 5 and m[1] == ref and m[0] == DOWN, timeout)
    except TimeoutError:
        demonitor(ref, flush=True)
        raise TimeoutError(f"{pid!r} still alive after {timeout} s") from None
    return msg[4]


async def eventually(condition: Callable[[], object], timeout: float = 1.0, interval: float = 0.005) -> None:
    """Wait until `condition()` is true (it may be an `async def`), checking
    every `interval` seconds; fail with `AssertionError` if it is still
    false after `timeout`. For state that changes without a message to wait
    for (another process's bookkeeping, a timer's work); prefer
    `assert_receive` whenever a message tells you."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def holds() -> bool:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    while not await holds():
        if loop.time() >= deadline:
            raise AssertionError(f"condition still false after {timeout} s: {condition!r}")
        await asyncio.sleep(interval)


_TEST_SUP: Final = "beamish.testing.supervisor"


async def start_supervised(child: Term) -> Pid:
    """Start `child` (a ChildSpec, a class, or `(cls, arg)`) under the test's
    supervisor; it is shut down, in reverse start order, when the test ends.
    Raises `StartError` if it cannot start."""
    from .. import supervisor as sup_mod

    node = current().node
    sup = node.extensions.get(_TEST_SUP)
    if sup is None:
        sup = await sup_mod.Supervisor.start_link([], strategy="one_for_one", max_restarts=1000, max_seconds=1)
        node.extensions[_TEST_SUP] = sup
    assert isinstance(sup, Pid)
    pid = await sup_mod.Supervisor.start_child(sup, child)
    if pid is None:
        raise Exit("ignore")
    return pid


async def stop_supervised(child_id: Term) -> None:
    """Stop a child started by `start_supervised`, by its id."""
    from .. import supervisor as sup_mod

    sup = current().node.extensions.get(_TEST_SUP)
    if not isinstance(sup, Pid):
        raise LookupError("nothing was started with start_supervised")
    await sup_mod.Supervisor.terminate_child(sup, child_id)
    await sup_mod.Supervisor.delete_child(sup, child_id)


async def _finish_test() -> None:
    node = current().node
    sup = node.extensions.pop(_TEST_SUP, None)
    if isinstance(sup, Pid):
        from .. import supervisor as sup_mod

        # Unlink first: the test process must not die of its own supervisor's shutdown.
        from ..process import unlink

        unlink(sup)
        await sup_mod.Supervisor.stop(sup, "shutdown")
