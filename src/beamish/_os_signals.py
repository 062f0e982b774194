"""SIGTERM, SIGINT and SIGHUP as requests a command serves when it can.

The `beamish` commands install `OsSignals` on their first line, before any
application code is imported or any node exists, so that a signal that
comes while they start is neither fatal nor lost: SIGTERM and SIGINT ask for
an orderly stop (`stop_requested`), SIGHUP for a reload. Once an event loop
runs, `unless_stopped` cancels the start-up in progress at a stop request
and `wait` hands the requests over one by one.

>>> import asyncio, os, signal
>>> signals = OsSignals()
>>> signals.install()
>>> os.kill(os.getpid(), signal.SIGHUP)   # before any loop: only recorded
>>> async def serve() -> list[str]:
...     got = [await signals.wait()]
...     os.kill(os.getpid(), signal.SIGTERM)
...     got.append(await signals.wait())
...     finished = await signals.unless_stopped(asyncio.sleep(3600))
...     return [*got, f"finished={finished}"]
>>> asyncio.run(serve())
['hup', 'stop', 'finished=False']
>>> signals.uninstall()

Why not `loop.add_signal_handler`: it exists only while a loop runs, and
closing the loop puts the default (fatal) dispositions back; a signal before
or after would kill the process with no application stopped.

OTP: mirrors `erl_signal_handler`, where SIGTERM at any time is `init:stop()`
(an orderly stop, exit status 0). erl's SIGHUP is fatal by default; `beamish
run` gives it the meaning daemons give it, a configuration reload.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from types import FrameType
from typing import BinaryIO, Literal, TextIO

__all__ = ["OS_SIGNALS", "OsSignals"]

_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class OsSignals:
    """Records SIGINT/SIGTERM (stop) and SIGHUP (reload) from `install` on."""

    def __init__(self) -> None:
        self.stop_requested = False
        self.hup_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._scope: asyncio.Timeout | None = None
        self._before: dict[signal.Signals, object] = {}

    def install(self) -> None:
        """Take over the three signals (main thread only)."""
        for sig in _HANDLED:
            self._before.setdefault(sig, signal.signal(sig, self._record))

    def uninstall(self) -> None:
        """Give the three signals the handlers they had before `install`."""
        for sig, before in self._before.items():
            signal.signal(sig, before)  # type: ignore[arg-type]  # what getsignal gave
        self._before.clear()

    async def wait(self) -> Literal["stop", "hup"]:
        """The next request: "stop" (and then always "stop"), or "hup" once per
        SIGHUP received since the last "hup" (several collapse into one)."""
        changed = self._attach()
        while True:
            if self.stop_requested:
                return "stop"
            if self.hup_pending:
                self.hup_pending = False
                return "hup"
            # Cleared before waiting, set only from a loop callback the
            # handler schedules: a signal in between is not missed.
            changed.clear()
            await changed.wait()

    async def stopped(self) -> None:
        """Wait for a stop request, for a command with nothing to reload:
        SIGHUP is no reason for it to stop."""
        while await self.wait() == "hup":
            pass

    async def unless_stopped(self, work: Awaitable[None]) -> bool:
        """Await `work`, cancelled by a stop request (one already made
        included). True when it ran to its end, False when a stop ended it."""
        loop = asyncio.get_running_loop()
        self._attach()
        scope = asyncio.timeout(None)
        try:
            async with scope:
                self._scope = scope
                if self.stop_requested:
                    scope.reschedule(loop.time())
                await work
        except TimeoutError:
            if not scope.expired():
                raise
            return False
        finally:
            self._scope = None
        return True

    def request_stop(self) -> None:
        """Ask for a stop as SIGTERM does (from the loop's thread)."""
        self.stop_requested = True
        if self._loop is not None:
            self._wake()

    async def stop_at_eof(self, pipe: TextIO | BinaryIO) -> None:
        """From now on, the end of `pipe` (a parent's end of our stdin) is a
        stop request too: a parent that dies, even by SIGKILL, closes its end,
        which no signal of its own could be relied on to do."""
        self._attach()
        await asyncio.get_running_loop().connect_read_pipe(lambda: _StopAtEof(self), pipe)

    # --- internals

    def _attach(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._changed is None:
            self._loop, self._changed = loop, asyncio.Event()
        return self._changed

    def _record(self, signum: int, frame: FrameType | None) -> None:
        # A Python-level handler: it runs in the main thread between two
        # bytecodes, maybe inside the loop's own code, so it only sets flags
        # and lets the loop act on them in a callback of its own.
        if signum == signal.SIGHUP:
            self.hup_pending = True
        else:
            self.stop_requested = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
        if self.stop_requested and self._scope is not None and self._loop is not None:
            self._scope.reschedule(self._loop.time())


class _StopAtEof(asyncio.Protocol):
    def __init__(self, signals: OsSignals) -> None:
        self._signals = signals

    def connection_lost(self, exc: Exception | None) -> None:
        self._signals.request_stop()


OS_SIGNALS = OsSignals()
"""The one the `beamish` commands install: signals belong to the OS process."""
