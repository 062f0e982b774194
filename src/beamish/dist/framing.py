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
...     await client.wait_closed()
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
from collections.abc import AsyncIterator, Callable
from typing import Final, cast

__all__ = ["FrameError", "FrameStream", "FrameTooLarge", "MessageTooLarge", "TickTimeout"]

_LEN: Final = struct.Struct(">I")
TICK: Final = b"\x00\x00\x00\x00"


class FrameError(ConnectionError):
    """The peer sent an oversized frame or stopped ticking."""


class TickTimeout(FrameError):
    """Nothing, not even a tick, came from the peer for `ticktime` seconds."""


class FrameTooLarge(FrameError):
    """The peer sent a message larger than this node accepts (a frame over
    `max_frame`, or fragments over the connection's `max_message`)."""


class MessageTooLarge(ValueError):
    """A message to send is larger than the connection's `max_message`
    (`beamish.dist.start`): raised in the sender, before anything is
    written, as `erlang:send` raises `system_limit` for a message erts
    cannot encode."""


class FrameStream:
    """A distribution connection's frames, with batching and ticks."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        ticktime: float = 60.0,
        max_frame: int = 64 * 1024 * 1024,
        unflushed: set[FrameStream] | None = None,
    ) -> None:
        """`unflushed`, if given, is a set this stream adds itself to when it
        queues the first frame of a batch: whoever owns the set can `flush`
        its streams earlier than the end of the loop turn."""
        self.reader = reader
        self.writer = writer
        self.max_frame = max_frame
        self._unflushed = unflushed
        self.ticktime = ticktime
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._sent = False
        self._received = False
        # What crossed the connection (`beamish.observer`'s metrics read them):
        # counted per chunk and per flush, not per frame, to cost nothing.
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_in = 0
        self.frames_out = 0
        self._silent_intervals = 0
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._ticker: asyncio.TimerHandle | None = None
        self._timed_out = False
        self._protocol: _FrameProtocol | None = None
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
            self._loop.call_soon(self.flush)
            if self._unflushed is not None:
                self._unflushed.add(self)

    def flush(self) -> None:
        """Write what is queued now (else it goes at the end of this loop turn)."""
        self._flush_scheduled = False
        if self._closed or not self._out:
            return
        data = b"".join(self._out)
        self.frames_out += len(self._out) // 2
        self.bytes_out += len(data)
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

    async def serve(self, on_frame: Callable[[bytes], None]) -> None:
        """Hand every frame received to `on_frame`, in order, until the peer
        closes or `close` is called; ticks are left out.

        The connection's protocol is swapped for one that cuts frames out of
        each chunk the socket delivers and calls `on_frame` right there, in
        the event loop's I/O callback: no reader task to wake, no future per
        read, and a batch of casts is one read. A frame larger than what
        arrived is collected chunk by chunk and joined once.

        Raises:
            FrameError: an oversized frame; TickTimeout, a FrameError, when
                the peer stopped ticking.
            Exception: whatever `on_frame` raised (the connection is closed
                first and no later frame is handed over).
        """
        if self._protocol is not None:
            raise RuntimeError("FrameStream.serve was already called")
        # A stream's transport reads too (uvloop's are not asyncio.Transport
        # subclasses, hence a cast rather than an isinstance check).
        transport = cast(asyncio.Transport, self.writer.transport)
        protocol = _FrameProtocol(self, on_frame)
        self._protocol = protocol
        if transport.is_closing():
            # Closed during the handshake: the old protocol heard of it, ours
            # never will. Hand over what came before and stop.
            early = await self.reader.read()
            if early:
                protocol.data_received(early)
            protocol.connection_lost(None)
            await protocol.done
            return
        # Bytes that came in behind the handshake are still in the
        # StreamReader: take them (EOF makes `read` return what is buffered
        # without waiting) before the socket's next chunk.
        transport.pause_reading()
        transport.set_protocol(protocol)
        self.reader.feed_eof()
        early = await self.reader.read()
        if early:
            protocol.data_received(early)
        if not protocol.done.done():
            transport.resume_reading()
        await protocol.done
        if self._timed_out:
            raise TickTimeout(f"no data for {self.ticktime} s (net_tick_timeout)")

    async def frames(self) -> AsyncIterator[bytes]:
        """The frames received, ticks left out, as an async iterator (for
        simple uses; a connection hands frames over with `serve`)."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        served = asyncio.ensure_future(self.serve(queue.put_nowait))
        served.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (frame := await queue.get()) is not None:
                yield frame
            await served  # raises what ended it, if anything did
        finally:
            if not served.done():
                served.cancel()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        self.writer.close()
        if self._protocol is not None:
            self._protocol._finish(None)  # no frame is handed over after close

    async def wait_closed(self, timeout: float = 1.0) -> None:
        """Wait (bounded) until the transport is closed: a TLS connection
        sends its close_notify first, which needs the loop to run."""
        # Once `serve` swapped the protocol, the StreamWriter no longer hears
        # of the close: ours does.
        closed = self._protocol.closed if self._protocol is not None else self.writer.wait_closed()
        try:
            await asyncio.wait_for(closed, timeout)
        except TimeoutError:
            self.writer.transport.abort()  # the peer never answered: drop it
        except (ConnectionError, ssl.SSLError, RuntimeError):
            pass


class _FrameProtocol(asyncio.Protocol):
    """The read side of a served `FrameStream` (see `FrameStream.serve`)."""

    def __init__(self, stream: FrameStream, on_frame: Callable[[bytes], None]) -> None:
        self.stream = stream
        self.on_frame = on_frame
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()  # reading is over
        self.closed: asyncio.Future[None] = loop.create_future()  # the transport is gone
        # A partial frame: its chunks, their total length, and how many bytes
        # are needed before anything can be cut (4 for a header, or the frame).
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 4

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.stream.bytes_in += len(data)
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return
            data = b"".join(self._chunks)
            self._chunks.clear()
        stream = self.stream
        end_of_data = len(data)
        pos = 0
        need = 4
        try:
            while end_of_data - pos >= 4:
                (size,) = _LEN.unpack_from(data, pos)
                if size == 0:  # a tick
                    pos += 4
                    stream._received = True
                    continue
                if size > stream.max_frame:
                    raise FrameTooLarge(f"a frame of {size} bytes, over the maximum of {stream.max_frame}")
                end = pos + 4 + size
                if end > end_of_data:
                    need = 4 + size
                    break
                stream._received = True
                stream.frames_in += 1
                self.on_frame(data[pos + 4 : end])
                pos = end
                if self.done.done():  # on_frame closed the stream
                    return
        except BaseException as exc:
            self._finish(exc)
            stream.close()
            if not isinstance(exc, Exception):
                raise
            return
        if stream._out:
            # What handling these frames wrote (a call's reply) leaves now,
            # not a loop turn later.
            stream.flush()
        if pos < end_of_data:
            rest = data[pos:]
            self._chunks.append(rest)
            self._have = len(rest)
            self._need = need
        else:
            self._have = 0
            self._need = 4

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def _finish(self, exc: BaseException | None) -> None:
        if not self.done.done():
            if exc is None or isinstance(exc, ConnectionError | FrameError) and self.stream._closed:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)
