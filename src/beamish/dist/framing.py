"""Frames on an established distribution connection, and the net tick.

After the handshake every message is a frame: a 4-byte big-endian length
and that many bytes. A zero-length frame is a *tick*: nodes send one when
they have sent nothing for a while, and declare the peer down when nothing
at all arrived for `ticktime` seconds (Erlang's `net_ticktime`).

>>> import asyncio
>>> from beamish.dist.framing import FrameStream
>>> async def demo():
...     async def echo(reader, writer):
...         stream = FrameStream(reader, writer)
...         async for frame in stream.frames():
...             stream.write_frame(frame[::-1])
...         stream.close()
...     server = await asyncio.start_server(echo, "127.0.0.1", 0)
...     r, w = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
...     client = FrameStream(r, w)
...     client.write_frame(b"olleh")
...     got = await anext(client.frames())
...     client.close()
...     await w.wait_closed()
...     server.close()
...     await server.wait_closed()
...     return got
>>> asyncio.run(demo())
b'hello'

Writes are batched: frames written in one turn of the event loop go out in
one `write` call.

OTP: mirrors dist_util's tick protocol (a tick every ticktime/4 of silence,
down after four silent intervals).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator
from typing import Final

__all__ = ["FrameError", "FrameStream"]

_LEN: Final = struct.Struct(">I")
TICK: Final = b"\x00\x00\x00\x00"


class FrameError(ConnectionError):
    """The peer sent an oversized frame or stopped ticking."""


class FrameStream:
    """A distribution connection's frames, with batching and ticks."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        ticktime: float = 60.0,
        max_frame: int = 64 * 1024 * 1024,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.max_frame = max_frame
        self.ticktime = ticktime
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._sent = False
        self._received = False
        self._silent_intervals = 0
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._ticker: asyncio.TimerHandle | None = None
        self._timed_out = False
        if ticktime > 0:
            self._ticker = self._loop.call_later(ticktime / 4, self._tick)

    def write_frame(self, frame: bytes) -> None:
        """Queue one frame; it is written at the end of this loop turn."""
        if self._closed:
            return
        self._out.append(_LEN.pack(len(frame)))
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed or not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._sent = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.writer.write(data)

    def _tick(self) -> None:
        if self._closed:
            return
        if not self._sent:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.writer.write(TICK)
        self._sent = False
        if self._received:
            self._silent_intervals = 0
        else:
            self._silent_intervals += 1
            if self._silent_intervals >= 4:
                self._timed_out = True
                self.close()
                return
        self._received = False
        self._ticker = self._loop.call_later(self.ticktime / 4, self._tick)

    async def frames(self) -> AsyncIterator[bytes]:
        """The frames received, ticks left out; ends when the peer closes.

        Reads what the socket has (up to 64 KiB at a time) and cuts every
        complete frame out of it, rather than two `readexactly` per frame:
        a batch of casts arrives in one read. The rest of a frame larger
        than what is buffered is read in one call, once its size is checked.
        """
        reader = self.reader
        buf = b""
        pos = 0
        while not self._closed:
            while len(buf) - pos >= 4 and not self._closed:
                (size,) = _LEN.unpack_from(buf, pos)
                if size == 0:  # a tick
                    pos += 4
                    self._received = True
                    continue
                if size > self.max_frame:
                    raise FrameError(f"frame of {size} bytes exceeds the maximum of {self.max_frame}")
                end = pos + 4 + size
                if end > len(buf):
                    try:
                        rest = await reader.readexactly(end - len(buf))
                    except asyncio.IncompleteReadError:  # the peer closed mid-frame
                        buf, pos = b"", 0
                        break
                    buf, pos, end = buf[pos:] + rest, 0, 4 + size
                self._received = True
                body = buf[pos + 4 : end]
                pos = end
                yield body
            data = await reader.read(1 << 16)
            if not data:
                break
            buf = buf[pos:] + data if pos < len(buf) else data
            pos = 0
        if self._timed_out:
            raise FrameError(f"no data for {self.ticktime} s (net_tick_timeout)")

    def close(self) -> None:
        if self._closed:
            return
        self._flush()
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        self.writer.close()

    async def wait_closed(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until the transport is closed: a TLS connection
        sends its close_notify first, which needs the loop to run."""
        try:
            await asyncio.wait_for(self.writer.wait_closed(), timeout)
        except TimeoutError:
            self.writer.transport.abort()  # the peer never answered: drop it
        except (ConnectionError, ssl.SSLError, RuntimeError):
            pass
