"""Task: run one function in a process of its own and collect its result.

`Task.async_(fn, *args)` starts `fn` in a new process linked to the caller;
`await Task.await_(task)` (or simply `await task`) waits for its result.
A task that crashes takes its caller down through the link, as in Elixir:
the two are one piece of work, split for concurrency.

>>> import beamish
>>> from beamish import Task
>>> async def square(n):
...     return n * n
>>> async def main():
...     tasks = [Task.async_(square, n) for n in range(5)]
...     one = await tasks[0]
...     rest = await Task.await_many(tasks[1:])
...     streamed = [r async for r in Task.async_stream(range(3), square, max_concurrency=2)]
...     return one, rest, streamed
>>> beamish.run(main)
(0, [1, 4, 9, 16], [('ok', 0), ('ok', 1), ('ok', 4)])

`async_` and `await_` carry a trailing underscore because `async` and
`await` are Python keywords. A task replies to its monitor's ref, which is
also an alias of the caller that goes with the monitor, and the DOWN is
flushed: nothing a task sends is left behind in the caller's mailbox, even
after `await_` timed out. `TaskSupervisor` starts tasks under a supervisor;
`async_nolink` tasks do not take the caller down when they crash: their
failure comes back as an `Exit` from `await_`.

OTP: mirrors Elixir's Task and Task.Supervisor (async, await, yield,
shutdown, await_many, async_stream with max_concurrency/ordered/timeout,
async_nolink); differs in that `await_` raises `Exit` on timeout or failure
in the caller instead of exiting it (uncaught, it ends the caller with that
reason, which is the same), leaving the task running if the caller catches it
(its result is then dropped, as Elixir's demonitor with flush does).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Literal

from ._atoms import DOWN, EXIT, KILL, NORMAL, SHUTDOWN, TIMEOUT
from ._gen import ChildSpec, flush_down, take_reply
from .dynamic_supervisor import DynamicSupervisor
from .process import (
    NO_MESSAGE,
    Exit,
    Process,
    current,
    demonitor,
    exit,
    link,
    monitor,
    process_flag,
    receive,
    send,
    spawn,
    spawn_link,
    unlink,
)
from .terms import Atom, Pid, Ref, Term

# Public as `beamish.Task` and `beamish.TaskSupervisor` (one path per name).
__all__: list[str] = []



@dataclass(frozen=True, slots=True)
class Task:
    """A running task: its `pid`, the `ref` its reply is tagged with, and the
    `owner` that may await it."""

    pid: Pid
    ref: Ref
    owner: Pid

    def __await__(self) -> Generator[object, None, Term]:
        return Task.await_(self).__await__()

    # --- starting ------------------------------------------------------------

    @staticmethod
    def async_(fn: Callable[..., Term], *args: Term) -> Task:
        """Run `fn(*args)` in a new process linked to and monitored by the caller."""
        return _start_task(fn, args, link=True)

    @staticmethod
    def start(fn: Callable[..., Term], *args: Term) -> Pid:
        """Run `fn(*args)` in a process nobody awaits (fire and forget)."""
        return spawn(fn, *args)

    @staticmethod
    def start_link(fn: Callable[..., Term], *args: Term) -> Pid:
        """`start`, linked to the caller."""
        return spawn_link(fn, *args)

    # --- collecting ----------------------------------------------------------

    @staticmethod
    async def await_(task: Task, timeout: float | None = 5.0) -> Term:
        """The task's result. Raises `Exit` with the task's exit reason if it
        died, or with reason `timeout` after `timeout` seconds."""
        _check_owner(task)
        try:
            msg = await receive(_reply_or_down(task.ref), timeout)
        except TimeoutError:
            # Elixir: demonitor with flush; the ref is an alias that goes with
            # the monitor, so a result that comes later is dropped.
            demonitor(task.ref, flush=True)
            late = take_reply(current(), task.ref)
            if late is not NO_MESSAGE:  # it made it in before the alias went
                return late
            raise Exit(TIMEOUT, (Atom("Task"), Atom("await"), [task, timeout])) from None
        if len(msg) == 2:
            demonitor(task.ref, flush=True)
            return msg[1]
        raise Exit(msg[4], (Atom("Task"), Atom("await"), [task, timeout]))

    @staticmethod
    async def await_many(tasks: Iterable[Task], timeout: float | None = 5.0) -> list[Term]:
        """Every task's result, in order; raises like `await_` on the first
        failure, or `timeout` when they are not all done in `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        results = []
        for task in tasks:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            results.append(await Task.await_(task, left))
        return results

    @staticmethod
    async def yield_(task: Task, timeout: float = 5.0) -> tuple[str, Term] | None:
        """`("ok", result)`, `("exit", reason)`, or None if the task is still
        running after `timeout` seconds (it keeps running)."""
        _check_owner(task)
        try:
            msg = await receive(_reply_or_down(task.ref), timeout)
        except TimeoutError:
            return None
        if len(msg) == 2:
            demonitor(task.ref, flush=True)
            return ("ok", msg[1])
        return ("exit", msg[4])

    @staticmethod
    async def shutdown(task: Task, timeout: float | Literal["brutal_kill"] = 5.0) -> tuple[str, Term] | None:
        """Stop the task: `shutdown` exit (or kill), waiting up to `timeout`.
        Returns its result if it finished meanwhile, else None."""
        _check_owner(task)
        unlink(task.pid)
        exit(task.pid, "kill" if timeout == "brutal_kill" else "shutdown")
        wait = None if timeout == "brutal_kill" else timeout
        try:
            msg = await receive(_reply_or_down(task.ref), wait)
        except TimeoutError:
            exit(task.pid, "kill")
            msg = await receive(_reply_or_down(task.ref))
        if len(msg) == 2:
            demonitor(task.ref, flush=True)
            return ("ok", msg[1])
        reason = msg[4]
        if reason in ("shutdown", "killed", "noproc"):
            return None
        return ("exit", reason)

    @staticmethod
    async def async_stream(
        items: Iterable[Term],
        fn: Callable[..., Term],
        *,
        max_concurrency: int | None = None,
        ordered: bool = True,
        timeout: float | None = 5.0,
        on_timeout: Literal["exit", "kill_task"] = "exit",
    ) -> AsyncIterator[tuple[str, Term]]:
        """Run `fn(item)` for each item, at most `max_concurrency` at a time
        (default: the number of CPUs), in input order unless `ordered=False`.

        Yields `("ok", result)` per item. Each task may run for `timeout`
        seconds from its start: past it, `on_timeout="exit"` raises
        `Exit("timeout")` and `"kill_task"` kills it and yields
        `("exit", "timeout")`. A task that fails takes the caller down, or,
        when the caller traps exits, yields `("exit", reason)` and the
        stream goes on.

        As in Elixir, the tasks are linked to an intermediate process linked
        to the caller, not to the caller itself: a caller that traps exits
        gets no `EXIT` per item, a failure of the caller ends every task, and
        when the stream stops early (an exception, a timeout, a `break`) the
        tasks still running are killed and nothing they send reaches the
        caller's mailbox.
        """
        limit = max_concurrency or os.cpu_count() or 1
        me = current()
        node = me.node
        loop = asyncio.get_running_loop()
        helper = spawn_link(_stream_helper, me.pid)
        pending = iter(items)
        running: dict[Ref, tuple[Task, float]] = {}  # insertion order is input order
        exhausted = False
        try:
            while True:
                while not exhausted and len(running) < limit:
                    try:
                        item = next(pending)
                    except StopIteration:
                        exhausted = True
                        break
                    task = _start_task(fn, (item,), link_to=helper)
                    running[task.ref] = (task, loop.time() + timeout if timeout is not None else math.inf)
                if not running:
                    return
                if ordered:
                    task, deadline = next(iter(running.values()))
                    match = _reply_or_down(task.ref)
                else:
                    deadline = min(d for _, d in running.values())
                    match = functools.partial(_is_any_reply, running)
                wait = None if deadline == math.inf else max(0.0, deadline - loop.time())
                try:
                    msg = await receive(match, wait)
                except TimeoutError:
                    if on_timeout == "exit":  # `finally` kills it with the others
                        raise Exit(TIMEOUT, (Atom("Task"), Atom("async_stream"), [timeout])) from None
                    late = next(t for t, d in running.values() if d == deadline)
                    del running[late.ref]
                    send(helper, (_KILL, late.pid))
                    await receive(_reply_or_down(late.ref))  # its DOWN: it is gone
                    demonitor(late.ref, flush=True)
                    yield ("exit", TIMEOUT)
                    continue
                ref = msg[0] if len(msg) == 2 else msg[1]
                del running[ref]
                if len(msg) == 2:
                    demonitor(ref, flush=True)
                    yield ("ok", msg[1])
                elif me.trap_exit:
                    yield ("exit", msg[4])
                else:
                    raise Exit(msg[4])
        finally:
            # Runs in the caller, or, after a `break`, in the task asyncio
            # closes the generator from: so node calls on `me`, not the
            # process API (which needs the current process).
            # (A caller that died is past this: its link took the helper,
            # and the tasks, with it.)
            if me.alive:
                node.unlink(me, helper)
                node.signal_exit(me.pid, helper, _KILL, False)  # the tasks die with it
                for ref in running:
                    node.demonitor(me, ref)
                    flush_down(me, ref)
                    take_reply(me, ref)
                _flush_exit(me, helper)


# --- Task.Supervisor ------------------------------------------------------------


class TaskSupervisor:
    """Elixir's Task.Supervisor: tasks started under a supervisor."""

    @staticmethod
    async def start_link(*, name: str | None = None, max_children: int | None = None) -> Pid:
        return await DynamicSupervisor.start_link(name=name, max_children=max_children)

    @staticmethod
    def child_spec(arg: Term = None) -> ChildSpec:
        return DynamicSupervisor.child_spec(dict(arg or {}))

    @staticmethod
    async def async_nolink(sup: Term, fn: Callable[..., Term], *args: Term) -> Task:
        """A task under `sup`, monitored (not linked) by the caller: its crash
        comes back from `await_` as an `Exit`, and does not kill the caller."""
        return await _supervised(sup, fn, args)

    @staticmethod
    async def async_(sup: Term, fn: Callable[..., Term], *args: Term) -> Task:
        """A task under `sup`, also linked to the caller."""
        from .process import link

        task = await _supervised(sup, fn, args)
        link(task.pid)
        return task

    @staticmethod
    async def start_child(sup: Term, fn: Callable[..., Term], *args: Term) -> Pid:
        """A fire-and-forget task under `sup` (restart temporary)."""

        async def start() -> Pid:
            return spawn_link(fn, *args)

        pid = await DynamicSupervisor.start_child(sup, ChildSpec(id="task", start=(start, ()), restart="temporary"))
        assert pid is not None
        return pid

    @staticmethod
    async def children(sup: Term) -> list[Pid]:
        return [c[1] for c in await DynamicSupervisor.which_children(sup) if isinstance(c[1], Pid)]

    @staticmethod
    async def terminate_child(sup: Term, pid: Pid) -> None:
        await DynamicSupervisor.terminate_child(sup, pid)


# --- internals ---------------------------------------------------------------------


def _start_task(fn: Callable[..., Term], args: tuple[Term, ...], *, link: bool = False, link_to: Pid | None = None) -> Task:
    owner = current().pid
    holder: list[Term] = []
    pid = (spawn_link if link else spawn)(_run, fn, args, holder)
    # The ref is an alias the task replies to, gone with the monitor.
    ref = monitor(pid, alias=True)
    holder.append(ref)  # the task has not run yet: it reads its tag when it does
    holder.append(link_to)
    return Task(pid, ref, owner)


_GO = Atom("$task_go")
_KILL = KILL


async def _run(fn: Callable[..., Term], args: tuple[Term, ...], holder: list[Term]) -> None:
    if not holder:
        # Started by a supervisor: wait until the owner monitors us and sends the tag,
        # so that even an instant crash reaches the owner as a DOWN, not a noproc.
        _, ref = await receive(lambda m: type(m) is tuple and len(m) == 2 and m[0] is _GO)
        holder.append(ref)
    elif holder[1] is not None:
        link(holder[1])  # a stream's helper (gone: noproc, and the owner sees our DOWN)
    result = fn(*args)
    if asyncio.iscoroutine(result):
        result = await result
    send(holder[0], (holder[0], result))


async def _stream_helper(owner: Pid) -> None:
    """The process a stream's tasks link to (Elixir's stream monitor).

    It traps exits: the owner's exit ends it, and the tasks with it; a
    task's failure ends it too (and so the owner) unless the owner traps
    exits, in which case the owner reads the failure from the task's DOWN.
    `(kill, pid)` from the owner kills one task (a timeout) quietly."""
    me = current()
    process_flag("trap_exit", True)
    owner_proc = me.node.local(owner)
    while True:
        msg = await receive(_any)
        if type(msg) is tuple and len(msg) == 3 and msg[0] == EXIT:
            _, frm, reason = msg
            if frm == owner:
                raise Exit(SHUTDOWN if reason == NORMAL else reason)
            if reason != NORMAL and (owner_proc is None or not owner_proc.trap_exit):
                raise Exit(reason)
        elif type(msg) is tuple and len(msg) == 2 and msg[0] is _KILL:
            unlink(msg[1])
            exit(msg[1], _KILL)


def _any(_: Term) -> bool:
    return True


def _flush_exit(proc: Process, pid: Pid) -> None:
    """Remove an `EXIT` from `pid` that reached `proc` before an unlink."""
    proc.take(lambda m: type(m) is tuple and len(m) == 3 and m[0] == EXIT and m[1] == pid)


async def _supervised(sup: Term, fn: Callable[..., Term], args: tuple[Term, ...]) -> Task:
    owner = current().pid
    holder: list[Ref] = []

    async def start() -> Pid:
        return spawn_link(_run, fn, args, holder)  # linked to the supervisor

    pid = await DynamicSupervisor.start_child(sup, ChildSpec(id="task", start=(start, ()), restart="temporary"))
    assert pid is not None
    ref = monitor(pid, alias=True)
    send(pid, (_GO, ref))
    return Task(pid, ref, owner)


def _check_owner(task: Task) -> None:
    if current().pid != task.owner:
        raise Exit((Atom("not_owner"), task.owner))


def _reply_or_down(ref: Ref) -> Callable[[Term], bool]:
    def match(m: Term) -> bool:
        return type(m) is tuple and (
            (len(m) == 2 and m[0] is ref) or (len(m) == 5 and m[1] is ref and m[0] == DOWN)
        )

    return match


def _is_any_reply(refs: dict[Ref, tuple[Task, float]], m: Term) -> bool:
    if type(m) is not tuple:
        return False
    if len(m) == 2:
        return type(m[0]) is Ref and m[0] in refs
    return len(m) == 5 and m[0] == DOWN and m[1] in refs


