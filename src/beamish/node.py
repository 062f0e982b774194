"""Nodes: one event loop's worth of processes, with their names and refs.

A node is what an Erlang VM is: it owns a process table, the registered
names, the reference counter and the aliases, and routes every message and
signal. Several nodes may live in one OS process (tests do this); nothing is
global except "the current process", kept in a context variable.

`beamish.run(main, *args)` starts a node, runs `main` as its first process and
returns what it returns, like `asyncio.run`:

>>> import beamish
>>> async def main(x):
...     return x * 2
>>> beamish.run(main, 21)
42

Distribution plugs in through the small `Distribution` protocol declared
here; the core never imports `beamish.dist`.

OTP: mirrors the VM's process table and `erlang:register/whereis`; differs in
that a node has no scheduler threads: one asyncio loop runs all its processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Final, Protocol, TypeVar, overload

from ._atoms import DOWN, EXIT, KILL, KILLED, NOCONNECTION, NOPROC, NORMAL, PROCESS
from .process import (
    NOT_YET,
    BadArg,
    Deadlines,
    Exit,
    From,
    Process,
    ProcessInfo,
    _current,
    _name_of,
)
from .terms import (
    ALIAS_ITEMS,
    Atom,
    ImproperList,
    Pid,
    Ref,
    Term,
    _fresh_pid,
    _fresh_ref,
    _make_improper,
    reply_alias,
)

if TYPE_CHECKING:
    from types import FrameType

    from .trace import Tracer

# What `beamish` exports is public there only (one path per name); this lists the rest.
__all__ = ["Distribution", "current_node"]

T = TypeVar("T")

log = logging.getLogger("beamish")

_LOCAL: Final = Atom("nonode@nohost")
_new_from: Final = tuple.__new__


class Distribution(Protocol):
    """What a node needs from the distribution layer (`beamish.dist`
    implements it). Every method is fire-and-forget, like Erlang's signals."""

    def send(self, sender: Pid | None, dest: Pid | tuple[Term, Term], msg: Term) -> None: ...
    def send_alias(self, sender: Pid | None, alias: Ref, msg: Term) -> None: ...
    def link(self, local: Pid, remote: Pid) -> None: ...
    def unlink(self, local: Pid, remote: Pid) -> None: ...
    def exit_signal(self, sender: Pid, remote: Pid, reason: Term, via_link: bool) -> None: ...
    def monitor(self, watcher: Pid, target: Pid | tuple[Term, Term], ref: Ref) -> None: ...
    def demonitor(self, watcher: Pid, target: Pid | tuple[Term, Term], ref: Ref) -> None: ...
    def down(self, target: Pid, watcher: Pid, ref: Ref, reason: Term) -> None: ...
    def flush(self) -> None:
        """A process is about to wait: write what the signals sent so far
        buffered, now rather than a loop turn later (its peer may be
        waiting for exactly that, as a call's server is)."""

    async def shutdown(self) -> None:
        """The node is stopping: close every connection and the listener."""


_LABELS: Final[dict[object, str]] = {}


def _label_of(fn: Callable[..., object]) -> str:
    """A spawned function's `initial_call` label, interned, and cached per
    code object (a lambda made per spawn shares its code): building and
    interning the f-string was 0.15 µs of every spawn."""
    try:
        return _LABELS[fn.__code__]
    except (AttributeError, KeyError):
        pass
    label = sys.intern(_name_of(fn))
    code = getattr(fn, "__code__", None)
    if code is not None:
        _LABELS[code] = label
    return label


class Node:
    """A beamish node: its processes, names, refs, aliases and event loop.

    Create one with `beamish.run` (or `await Node(...).run(main)` inside a
    running loop). `name` is the node's name, `"nonode@nohost"` until it is
    distributed; `lag_threshold` (seconds, None to turn it off) is when the
    watchdog reports a process that holds the loop.

    `long_message_queue` is `(low, high)` (None to turn it off): a process
    whose message queue reaches `high` messages is logged once, at WARNING,
    with its queue's length; it is logged again only after its queue fell
    to `low` (OTP 26's `erlang:system_monitor(Pid, [{long_message_queue,
    {Disable, Enable}}])`, as a log line). A mailbox grows without bound in
    Erlang and here: 5,000,000 casts to a slow server grew a node to 831 MB
    before this said anything.
    """

    def __init__(
        self,
        name: str = "nonode@nohost",
        *,
        creation: int | None = None,
        lag_threshold: float | None = 0.1,
        thread_pool_size: int | None = None,
        long_message_queue: tuple[int, int] | None = (50_000, 100_000),
    ) -> None:
        self.name = Atom(name)
        if creation is None:
            # Erlang: creation 0 is the undistributed node; a named node gets a
            # fresh one per incarnation (EPMD's, once distributed), so pids of
            # an earlier incarnation never name a process of this one.
            creation = 0 if name == "nonode@nohost" else secrets.randbelow(0xFFFFFFFE) + 1
        self.creation = creation
        self.lag_threshold = lag_threshold
        self.thread_pool_size = thread_pool_size
        self.procs: dict[int, Process] = {}
        self.names: dict[str, Process] = {}
        self.aliases: dict[Ref, Process] = {}
        self.dist: Distribution | None = None
        self.dispatching: Process | None = None
        self._ids = itertools.count(1)
        self._refs = itertools.count(1)
        self._signals: deque[tuple[Pid, Pid, Term, bool]] = deque()
        self._in_signals = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._watchdog: _Watchdog | None = None
        self._outcome: asyncio.Future[Term] | None = None
        self._deadlines: Deadlines | None = None
        self.extensions: dict[str, object] = {}
        # The active `beamish.trace` (None: off, and each send path tests only this).
        self.tracer: Tracer | None = None
        """Per-node state of higher layers (registries, dist), by key."""
        low, high = long_message_queue or (0, sys.maxsize)
        if not 0 <= low < high:
            raise ValueError(f"long_message_queue must be (low, high) with 0 <= low < high, not {long_message_queue!r}")
        self.long_queue_at = high
        """What a delivery compares the queue's length with (`long_queue`)."""
        self.long_queue_low = low
        self.long_queues: set[Process] = set()
        """Processes logged for a long queue, until it falls to the low mark."""

    def __repr__(self) -> str:
        return f"<Node {self.name} processes={len(self.procs)}>"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            raise RuntimeError("node is not running")
        return loop

    @property
    def deadlines(self) -> Deadlines:
        """The node's receive timeouts (one loop timer for all of them)."""
        d = self._deadlines
        if d is None:
            d = self._deadlines = Deadlines(self.loop)
        return d

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            workers = self.thread_pool_size or min(32, (os.cpu_count() or 1) + 4)
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=f"beamish-{self.name}"
            )
        return self._executor

    def long_queue(self, proc: Process, length: int) -> None:
        """`proc`'s queue reached `long_queue_at`: say so, once until it
        has fallen to the low mark (`queue_shortened`)."""
        if proc in self.long_queues or not proc.alive:
            return
        self.long_queues.add(proc)
        log.warning(
            "process %s (%s) has %d messages in its queue (long_message_queue high mark %d)",
            proc.pid,
            proc.name or proc.initial_call,
            length,
            self.long_queue_at,
        )

    def queue_shortened(self, proc: Process, length: int) -> None:
        """A logged process's queue is down to `length` (or it exited: -1)."""
        if length <= self.long_queue_low:
            self.long_queues.discard(proc)

    # --- lifecycle -----------------------------------------------------------

    async def run(self, main: Callable[..., Term], *args: Term) -> Term:
        """Run `main(*args)` as this node's first process and return its
        result (or raise its exception); then stop the node."""
        self._loop = asyncio.get_running_loop()
        if self.lag_threshold is not None:
            self._watchdog = _Watchdog(self, self.lag_threshold)
            self._watchdog.start()
        outcome: asyncio.Future[Term] = self._loop.create_future()
        self._outcome = outcome

        async def first() -> Term:
            try:
                result = main(*args)
                if asyncio.iscoroutine(result):
                    result = await result
            except asyncio.CancelledError:
                me = _current.get()
                if not outcome.done():
                    outcome.set_exception(Exit(me.exit_reason))
                raise
            except BaseException as exc:
                if not outcome.done():
                    outcome.set_exception(exc)
                raise
            if not outcome.done():
                outcome.set_result(result)
            return result

        self.spawn(first, (), link_to=None, name=None, initial_call=_name_of(main))
        try:
            return await outcome
        finally:
            await self.stop()

    def halt(self, reason: Term) -> None:
        """End `run` now: it raises `Exit(reason)` and the node stops.

        What the application controller does when a permanent application
        dies. OTP: mirrors `erlang:halt/1` as reached through `init`: the
        node goes, whatever its first process was doing.
        """
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_exception(Exit(reason))

    async def stop(self) -> None:
        """Kill every remaining process (newest first) and release the node."""
        if self.dist is not None:
            await self.dist.shutdown()
        for proc in sorted(self.procs.values(), key=lambda p: p.pid.id, reverse=True):
            proc.exit(KILLED)
        # Let cancelled tasks unwind so none is destroyed while pending.
        await asyncio.sleep(0)
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._deadlines is not None:
            self._deadlines.close()
            self._deadlines = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def rename(self, name: str) -> None:
        """Give a node that is not distributed the name `name` and a fresh
        creation, for `beamish.dist.start(name=...)`.

        Its live processes' pids and its aliases are renamed in place (their
        hashes leave the node out, so every table holding them still finds
        them); pids of dead processes keep the old name.

        OTP: mirrors what `net_kernel:start/1` does to a running node: every
        local pid is the new node's (`node(self())` changes at once).
        """
        if self.dist is not None:
            raise RuntimeError(f"{self.name} is distributed: its name cannot change")
        atom, creation = Atom(name), secrets.randbelow(0xFFFFFFFE) + 1
        self.name, self.creation = atom, creation
        for proc in self.procs.values():
            proc.pid.node, proc.pid.creation = atom, creation
        for alias in self.aliases:
            alias.node, alias.creation = atom, creation

    # --- processes -----------------------------------------------------------

    def new_pid(self) -> Pid:
        n = next(self._ids)
        return _fresh_pid(self.name, n & 0xFFFFFFFF, n >> 32, self.creation)

    def make_ref(self) -> Ref:
        n = next(self._refs)
        return _fresh_ref(self.name, self.creation, (n & 0x3FFFF, (n >> 18) & 0xFFFFFFFF, n >> 50))

    def new_process(self, initial_call: str) -> Process:
        """A process record with no task and no handler yet (behaviours use it)."""
        pid = self.new_pid()
        # Interned (by `_label_of`, or here): an f-string built per spawn is
        # 60-70 bytes of every idle process. str(): intern refuses subclasses (Atom).
        proc = Process(self, pid, sys.intern(str(initial_call)))
        self.procs[pid.id] = proc
        return proc

    async def in_process(self, fn: Callable[[], Awaitable[T]]) -> T:
        """`await fn()` in a new process of this node, for code that runs on
        the node's loop but in no process (an HTTP handler, a test): what a
        process may do (a call, a receive), `fn` may. Cancelled, it kills
        the process (an HTTP client that hung up stops what it asked for);
        killed, it cancels the caller. What `fn` raises is the caller's to
        handle, not a crash: the process exits `normal` either way.

        The process lives in the caller's own task, for as long as `fn`
        runs: no task, future or context copy per call (an HTTP server
        runs one per request; a spawned task cost the gateway ~8% of it)."""
        proc = self.new_process(_label_of(fn))
        proc.adopt(asyncio.current_task())
        token = _current.set(proc)
        try:
            return await fn()
        except asyncio.CancelledError:
            if proc.alive:  # the caller gave up (or was cancelled): so does the process
                proc.exit(KILLED)
            raise
        finally:
            _current.reset(token)
            if proc.alive:
                proc.exit(NORMAL)

    def spawn(
        self,
        fn: Callable[..., Term],
        args: tuple[Term, ...],
        *,
        link_to: Process | None,
        name: str | None,
        initial_call: str | None = None,
    ) -> Pid:
        proc = self.new_process(initial_call or _label_of(fn))
        if name is not None:
            try:
                self.register(name, proc.pid)
            except BadArg:
                del self.procs[proc.pid.id]
                raise
        if link_to is not None:
            proc.add_link(link_to.pid)
            link_to.add_link(proc.pid)
        proc.start_task(fn, args)
        return proc.pid

    def local(self, pid: Pid) -> Process | None:
        """The live local process `pid`, or None."""
        proc = self.procs.get(pid.id)
        if proc is not None and (proc.pid is pid or proc.pid == pid):
            return proc
        return None

    def is_local(self, pid: Pid) -> bool:
        return pid.node is self.name

    def forget(self, proc: Process) -> None:
        """Drop a dead process from the tables (called by Process.exit)."""
        self.procs.pop(proc.pid.id, None)
        if proc.name is not None:
            self.names.pop(proc.name, None)
            proc.name = None

    def is_alive(self, pid: Pid) -> bool:
        return self.local(pid) is not None

    def process_info(self, pid: Pid) -> ProcessInfo | None:
        proc = self.local(pid)
        return None if proc is None else proc.info()

    # --- names ----------------------------------------------------------------

    def register(self, name: str, pid: Pid) -> None:
        if not isinstance(name, str) or name == "undefined":
            raise BadArg(f"invalid process name {name!r}")
        proc = self.local(pid)
        if proc is None:
            raise BadArg(f"cannot register {name!r}: {pid!r} is not a live local process")
        if name in self.names:
            raise BadArg(f"name {name!r} is already registered to {self.names[name].pid!r}")
        if proc.name is not None:
            raise BadArg(f"{pid!r} is already registered as {proc.name!r}")
        name = Atom(name)
        self.names[name] = proc
        proc.name = name

    def unregister(self, name: str) -> None:
        proc = self.names.pop(name, None)
        if proc is None:
            raise BadArg(f"name {name!r} is not registered")
        proc.name = None

    def whereis(self, name: str) -> Pid | None:
        proc = self.names.get(name)
        return None if proc is None else proc.pid

    def registered(self) -> list[str]:
        return list(self.names)

    # --- messages -----------------------------------------------------------

    def send(self, dest: Term, msg: Term) -> None:
        if self.tracer is not None:
            self.tracer.sent(dest, msg)
        if type(dest) is Pid:
            proc = self.procs.get(dest.id)
            if proc is not None and (proc.pid is dest or proc.pid == dest):
                proc.deliver(msg)
            elif dest.node is not self.name and self.dist is not None:
                self.dist.send(self._sender(), dest, msg)
            return
        if isinstance(dest, str):
            proc = self.names.get(dest)
            if proc is None:
                raise BadArg(f"no process is registered as {dest!r}")
            proc.deliver(msg)
            return
        if type(dest) is tuple:
            if len(dest) == 3 and dest[0] == "via":
                via = dest[1]
                via.send(dest[2], msg)
                return
            if len(dest) == 2:
                name, node = dest
                if node == self.name:
                    self.send(name, msg)
                    return
                if self.dist is None:
                    return  # like Erlang's send to an unreachable node: no error
                self.dist.send(self._sender(), dest, msg)  # it makes the atoms
                return
        if type(dest) is Ref:
            self.send_alias(dest, msg)
            return
        raise BadArg(f"invalid destination {dest!r}")

    def current_process(self) -> Process | None:
        """The process running now on this node, if any (None in a timer callback)."""
        proc = _current.get(None)
        return proc if proc is not None and proc.node is self else None

    def lookup(self, dest: Term) -> Process | None:
        """The live local process `dest` (a pid or a registered name) names."""
        if type(dest) is Pid:
            return self.local(dest)
        if isinstance(dest, str):
            return self.names.get(dest)
        if type(dest) is tuple and len(dest) == 2 and dest[1] == self.name:
            return self.lookup(dest[0])
        return None

    def send_quietly(self, dest: Term, msg: Term) -> None:
        """`send` for timers: a destination that vanished is not an error."""
        with contextlib.suppress(BadArg):
            self.send(dest, msg)

    def send_alias(self, alias: Ref, msg: Term) -> None:
        """Send to a process alias; dropped if the alias is no longer active
        (this is what keeps a late call reply out of the caller's mailbox)."""
        proc = self.aliases.get(alias)
        if proc is not None:
            proc.deliver(msg)
        elif alias.node is not self.name and self.dist is not None:
            self.dist.send_alias(self._sender(), alias, msg)

    def call_local(self, caller: Process, server: Process, label: Atom, request: Term) -> tuple[Ref, Term, Term]:
        """Start the call `request` from `caller` to the live local `server`:
        `(ref, tag, value)`, where `ref` is the monitor and alias the caller
        waits on, `tag` the From's tag, and `value` the reply if the server
        gave it at once (`Process.call_now`), else `NOT_YET`.

        `monitor(server, alias=True)`'s work, except that a call answered at
        once never needs the monitor, so it is set up only when the reply is
        not there yet. (gen:do_call's local clause; the shortcut is erts'.)"""
        ref = self.make_ref()
        self.aliases[ref] = caller
        tag = _make_improper(ALIAS_ITEMS, ref)  # alias_tag(ref), one call less
        # tuple.__new__ skips the NamedTuple's Python-level __new__ (0.13 vs 0.28 µs).
        value = caller.call_now(server, (label, _new_from(From, (caller.pid, tag)), request), tag)
        if value is not NOT_YET:
            del self.aliases[ref]
            return ref, tag, value
        if server.alive:
            server.add_watcher(ref, caller.pid)
            caller.add_monitor(ref, server.pid)
        else:  # it died handling the call
            self._down_at_once(caller, ref, server.pid, server.exit_reason)
        return ref, tag, NOT_YET

    def reply(self, from_: tuple[Pid, Term], value: Term) -> None:
        """Answer a call: OTP 25's `gen:reply/2`, the one reply every behaviour
        and the distribution services use. A tag `[alias | Alias]` (or a list
        headed by one) sends `(tag, value)` to the alias, so a caller that has
        given up never sees it; any other tag sends `(tag, value)` to the pid,
        as OTP does for callers that built `{self(), Ref}` themselves (older
        OTP, third-party clients). Never raises, as `gen:reply` catches."""
        pid, tag = from_
        if self.tracer is not None:
            self.tracer.sent(pid, (tag, value))
        if type(tag) is ImproperList and tag.items is ALIAS_ITEMS:
            alias = tag.tail  # a tag `alias_tag` made: every beamish caller's
        else:
            alias = reply_alias(tag)
        if alias is None:
            self.send_quietly(pid, (tag, value))
            return
        # A local caller's alias looked up here (the reply of every local
        # call); anything else is send_alias's.
        proc = self.aliases.get(alias)
        if proc is not None:
            proc.deliver((tag, value))
        else:
            self.send_alias(alias, (tag, value))

    def _sender(self) -> Pid | None:
        try:
            return _current.get().pid
        except LookupError:
            return None

    # --- links and exit signals -------------------------------------------

    def link(self, proc: Process, pid: Pid) -> None:
        if pid == proc.pid:
            return
        other = self.local(pid)
        if other is not None:
            proc.add_link(pid)
            other.add_link(proc.pid)
        elif pid.node is not self.name and self.dist is not None:
            proc.add_link(pid)
            self.dist.link(proc.pid, pid)
        elif proc.trap_exit:
            proc.deliver((EXIT, pid, NOPROC))
        else:
            # OTP's link/1 on a dead local pid raises noproc in the caller
            # (catchable) rather than signalling it (checked with erl 25).
            raise Exit(NOPROC)

    def unlink(self, proc: Process, pid: Pid) -> None:
        proc.remove_link(pid)
        other = self.local(pid)
        if other is not None:
            other.remove_link(proc.pid)
        elif pid.node is not self.name and self.dist is not None:
            self.dist.unlink(proc.pid, pid)

    def signal_exit(self, sender: Pid, target: Pid, reason: Term, via_link: bool) -> None:
        """Send an exit signal. Signals are queued and processed in a loop, not
        recursively, so a chain of 10,000 linked processes cannot overflow
        the stack."""
        self._signals.append((sender, target, reason, via_link))
        if self._in_signals:
            return
        self._in_signals = True
        try:
            q = self._signals
            while q:
                self._apply_exit(*q.popleft())
        finally:
            self._in_signals = False

    def _apply_exit(self, sender: Pid, target: Pid, reason: Term, via_link: bool) -> None:
        proc = self.local(target)
        if proc is None:
            if target.node is not self.name and self.dist is not None:
                self.dist.exit_signal(sender, target, reason, via_link)
            return
        if via_link:
            if not proc.remove_link(sender) and reason != NOPROC:
                return  # the link was already removed: no signal (OTP's unlink rule)
        elif reason == KILL:
            proc.exit(KILLED)
            return
        if proc.trap_exit:
            proc.deliver((EXIT, sender, reason))
        elif reason == NORMAL:
            if not via_link and sender == target:
                proc.exit(NORMAL)
        else:
            proc.exit(reason)

    # --- monitors -----------------------------------------------------------

    def monitor(self, proc: Process, target: Term, *, alias: bool = False) -> Ref:
        """Monitor `target` from `proc`; with `alias`, the ref is also an alias
        of `proc` until demonitored (OTP's `monitor(process, P, [{alias, demonitor}])`)."""
        ref = self.make_ref()
        if alias:
            self.aliases[ref] = proc
        if type(target) is Pid:
            other = self.local(target)
            if other is not None:
                other.add_watcher(ref, proc.pid)
                proc.add_monitor(ref, target)
            elif target.node is not self.name and self.dist is not None:
                proc.add_monitor(ref, target)
                self.dist.monitor(proc.pid, target, ref)
            else:
                self._down_at_once(proc, ref, target, NOPROC)
            return ref
        if isinstance(target, str):
            obj = (Atom(target), self.name)
            named = self.names.get(target)
            if named is not None:
                named.add_watcher(ref, proc.pid)
                # (name, node, pid): the DOWN names the name, the pid finds the watched.
                proc.add_monitor(ref, (*obj, named.pid))
            else:
                self._down_at_once(proc, ref, obj, NOPROC)
            return ref
        if type(target) is tuple and len(target) == 2 and target[0] != "via":
            name, node = target
            if node == self.name:
                self.aliases.pop(ref, None)
                return self.monitor(proc, name, alias=alias)
            if self.dist is not None:
                obj = (Atom(name), Atom(node))
                proc.add_monitor(ref, obj)
                self.dist.monitor(proc.pid, obj, ref)
            else:
                self._down_at_once(proc, ref, target, NOCONNECTION)
            return ref
        raise BadArg(f"cannot monitor {target!r}")

    def _down_at_once(self, proc: Process, ref: Ref, target: Term, reason: Term) -> None:
        """The DOWN of a monitor whose target was already gone (or died
        before the monitor was needed); its alias, if any, goes with it."""
        self.aliases.pop(ref, None)
        proc.deliver((DOWN, ref, PROCESS, target, reason))

    def demonitor(self, proc: Process, ref: Ref) -> bool:
        self.aliases.pop(ref, None)
        target = proc.pop_monitor(ref)
        if target is None:
            return False
        self.drop_monitor(ref, target, proc.pid)
        return True

    def drop_monitor(self, ref: Ref, target: Pid | tuple[Term, ...], watcher: Pid) -> None:
        """Remove the watched side of `watcher`'s monitor `ref` on `target`."""
        self.aliases.pop(ref, None)
        if type(target) is Pid:
            other = self.local(target)
            if other is not None:
                other.remove_watcher(ref)
            elif target.node is not self.name and self.dist is not None:
                self.dist.demonitor(watcher, target, ref)
        elif type(target) is tuple and len(target) == 3:
            other = self.local(target[2])
            if other is not None:
                other.remove_watcher(ref)
        elif self.dist is not None and type(target) is tuple and len(target) == 2:
            self.dist.demonitor(watcher, (target[0], target[1]), ref)

    def signal_down(self, watcher: Pid, ref: Ref, target: Pid, reason: Term) -> None:
        proc = self.local(watcher)
        if proc is not None:
            obj: Term = target
            mon = proc.pop_monitor(ref)
            if mon is None:
                return
            # A monitor's alias goes with its DOWN ({alias, demonitor}).
            self.aliases.pop(ref, None)
            if type(mon) is tuple:
                obj = mon[:2]
            proc.deliver((DOWN, ref, PROCESS, obj, reason))
        elif watcher.node is not self.name and self.dist is not None:
            self.dist.down(target, watcher, ref, reason)

    # --- signals from other nodes: the distribution layer's way in -------------
    # The wire reaches processes only through these methods (ergo's CoreRouter):
    # `dist/` never touches a Process record nor the node's tables
    # (tests/test_layout.py checks), so the core may change them freely.

    def deliver_from_remote(self, to: Pid, msg: Term) -> None:
        """A message off the wire for the local pid `to` (SEND): an idle
        behaviour handles it at once, so its reply can leave in the same loop
        turn (`Process.deliver_at_once`); for a pid that is gone, it is
        dropped, as in Erlang."""
        proc = self.local(to)
        if proc is not None:
            if self.tracer is not None:
                self.tracer.received(proc, msg)
            proc.deliver_at_once(msg)

    def deliver_by_name_from_remote(self, name: str, msg: Term) -> None:
        """A message off the wire for the local name `name` (REG_SEND), as
        `deliver_from_remote`; for a name nobody has, dropped, as in Erlang."""
        proc = self.names.get(name)
        if proc is not None:
            if self.tracer is not None:
                self.tracer.received(proc, msg)
            proc.deliver_at_once(msg)

    def link_from_remote(self, local: Pid, remote: Pid) -> bool:
        """Record the link between the local process `local` and a process of
        another node (its LINK, or a linked spawn's reply). False: `local` is
        gone, and the peer's process must get an exit with `noproc`."""
        proc = self.local(local)
        if proc is None:
            return False
        proc.add_link(remote)
        return True

    def unlink_from_remote(self, local: Pid, remote: Pid) -> None:
        """A process of another node removed its link to `local` (UNLINK)."""
        proc = self.local(local)
        if proc is not None:
            proc.remove_link(remote)

    def monitor_from_remote(self, watcher: Pid, target: Pid | str, ref: Ref) -> Pid | None:
        """A process of another node monitors the local `target`, a pid or a
        registered name (MONITOR_P): the pid it watches, or None when there
        is no such process (the peer then gets a DOWN with `noproc`)."""
        proc = self.local(target) if isinstance(target, Pid) else self.names.get(target)
        if proc is None:
            return None
        proc.add_watcher(ref, watcher)
        return proc.pid

    def demonitor_from_remote(self, local: Pid, ref: Ref) -> None:
        """A remote watcher's monitor `ref` of `local` is gone (DEMONITOR_P,
        or its connection closed)."""
        proc = self.local(local)
        if proc is not None:
            proc.remove_watcher(ref)

    def adopt_monitor(self, watcher: Pid, ref: Ref, target: Pid | tuple[Term, ...]) -> bool:
        """Record on the local `watcher` its monitor `ref` of a remote
        `target` that the wire set up (a monitored spawn: its DOWN names the
        new pid). False: `watcher` is gone."""
        proc = self.local(watcher)
        if proc is None:
            return False
        proc.add_monitor(ref, target)
        return True

    def forget_monitor(self, watcher: Pid, ref: Ref) -> None:
        """Drop the local `watcher`'s record of monitor `ref` (a spawn that
        failed, so nothing was monitored)."""
        proc = self.local(watcher)
        if proc is not None:
            proc.pop_monitor(ref)


# --- the synchronous entry point ----------------------------------------------


def current_node() -> Node:
    """The node of the calling process."""
    try:
        return _current.get().node
    except LookupError:
        raise RuntimeError("not inside a beamish process: start one with beamish.run(main)") from None


@overload
def run(
    main: Callable[..., Coroutine[object, object, T]],
    *args: Term,
    name: str = ...,
    use_uvloop: bool | None = ...,
    lag_threshold: float | None = ...,
    thread_pool_size: int | None = ...,
    long_message_queue: tuple[int, int] | None = ...,
) -> T: ...
@overload
def run(
    main: Callable[..., T],
    *args: Term,
    name: str = ...,
    use_uvloop: bool | None = ...,
    lag_threshold: float | None = ...,
    thread_pool_size: int | None = ...,
    long_message_queue: tuple[int, int] | None = ...,
) -> T: ...
def run(
    main: Callable[..., Term],
    *args: Term,
    name: str = "nonode@nohost",
    use_uvloop: bool | None = None,
    lag_threshold: float | None = 0.1,
    thread_pool_size: int | None = None,
    long_message_queue: tuple[int, int] | None = (50_000, 100_000),
) -> Term:
    """Start a node, run `main(*args)` as its first process, return its result.

    Like `asyncio.run`: it creates the event loop (uvloop's when installed,
    unless `use_uvloop=False` or `BEAMISH_UVLOOP=0`) and closes it at the end;
    every process still alive when `main` returns is killed.
    """
    factory = _loop_factory(use_uvloop)
    node = Node(
        name, lag_threshold=lag_threshold, thread_pool_size=thread_pool_size, long_message_queue=long_message_queue
    )
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(node.run(main, *args))


def _loop_factory(use_uvloop: bool | None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if use_uvloop is None:
        use_uvloop = os.environ.get("BEAMISH_UVLOOP", "1") not in ("0", "false", "no")
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


# --- the loop-lag watchdog -----------------------------------------------------


class _Watchdog:
    """Reports a process that holds the event loop longer than `threshold`.

    The loop beats every threshold/2; a thread watches the beat. When it is
    late, the thread reads the loop thread's current Python frame (sys.
    _current_frames) to name the process and the function that is blocking,
    while it still blocks. The cost inside the loop is one timer per beat.

    A process that was stopped (SIGSTOP/SIGCONT, a debugger, a suspended VM)
    is not a blocked loop, yet the monotonic clock ran on meanwhile, so the
    beat looks late on resuming. The watchdog tells the two apart by its own
    sleep: when it woke far later than it asked (over `threshold`) and the
    process used little CPU over that gap (under half of it), the process
    was not running, and that time is not the loop's. A loop holding the GIL
    in a long C call delays the watchdog too, but burns CPU: still reported.
    """

    def __init__(self, node: Node, threshold: float) -> None:
        self.node = node
        self.threshold = threshold
        self.beat = time.monotonic()
        self.woke = self.beat  # the watchdog's last look, on both clocks
        self.cpu = time.process_time()
        self.resumed = 0.0  # when the process last ran again after not running
        self.reported = 0.0
        self.loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"beamish-watchdog-{node.name}", daemon=True)
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.beat = time.monotonic()
        self._handle = self.node.loop.call_later(self.threshold / 2, self._tick)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()

    def _tick(self) -> None:
        now = time.monotonic()
        held = now - self.beat - self.threshold / 2
        if self.reported:
            log.warning(
                "event loop of node %s was blocked for %.3f s (%s)",
                self.node.name,
                held,
                self.reported_where,
            )
            self.reported = 0.0
        self.beat = now
        self._handle = self.node.loop.call_later(self.threshold / 2, self._tick)

    def _watch(self) -> None:
        while not self._stop.wait(self.threshold / 4):
            self.check(time.monotonic(), time.process_time())

    def check(self, now: float, cpu: float) -> None:
        """One look at the beat, at `now` (monotonic) with the process's CPU
        time `cpu`: report the loop if it is late for a reason of its own."""
        gap = now - self.woke
        if gap > self.threshold and cpu - self.cpu < gap / 2:
            self.resumed = now
        self.woke, self.cpu = now, cpu
        due = max(self.beat + self.threshold / 2, self.resumed)
        lag = now - due
        if lag > self.threshold and not self.reported:
            frame = sys._current_frames().get(self.loop_thread)  # noqa: SLF001 (the one way to another thread's frame)
            where = describe_blocker(frame)
            self.reported = lag
            self.reported_where = where
            log.warning(
                "event loop of node %s blocked for %.3f s so far by %s; "
                "use beamish.to_thread for blocking calls",
                self.node.name,
                lag,
                where,
            )

    reported_where: str = ""


_RUNTIME_FILES = (os.path.dirname(os.path.abspath(__file__)) + os.sep,)
_PROCESS_FRAMES = frozenset({"_drain", "run_task", "_await_callback", "run_now"})


def describe_blocker(frame: FrameType | None) -> str:
    """Name the process and the callback running in `frame`'s stack."""
    if frame is None:
        return "unknown code"
    innermost = frame
    chain = []
    f: FrameType | None = frame
    while f is not None:
        chain.append(f)
        f = f.f_back
    chain.reverse()  # outermost first
    proc: object = None
    callback = None
    for f in chain:
        # The innermost of these frames names the process: `run_now` runs a
        # server's callback in its caller's stack, and the callback is the server's.
        local_self = f.f_locals.get("self") if f.f_code.co_name in _PROCESS_FRAMES else None
        if isinstance(local_self, Process):
            proc = local_self
            callback = None
            continue
        if proc is not None and callback is None and not f.f_code.co_filename.startswith(_RUNTIME_FILES):
            callback = f
    parts = []
    if isinstance(proc, Process):
        parts.append(f"process {proc.pid!r} ({proc.name or proc.initial_call})")
    if callback is not None:
        parts.append(f"in {callback.f_code.co_qualname} ({callback.f_code.co_filename}:{callback.f_lineno})")
    parts.append(
        f"at {innermost.f_code.co_qualname} ({innermost.f_code.co_filename}:{innermost.f_lineno})"
    )
    return " ".join(parts)
