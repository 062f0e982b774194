"""What the gateway's HTTP/1.1 server and its upstream client share: the
bounds on a head, a head's encoding, chunk framing, a message's write, and
write flow control."""

from __future__ import annotations

import asyncio

MAX_HEAD = 65536  # bytes of request or status line and headers together
MAX_HEADERS = 128
HIGH_WATER = 262144  # body bytes buffered before reading pauses
COALESCE = 65536  # a body under this leaves in the same write as its head
LAST_CHUNK = b"0\r\n\r\n"


def encode_head(first_line: str, headers: list[tuple[str, str]], *extra: str) -> bytes:
    """`first_line`, the headers and the `extra` header lines, then the
    blank line. Raises ValueError for a CR or LF inside any of them: it
    would start a header (or a message) of the sender's making."""
    lines = [first_line, *(f"{k}: {v}" for k, v in headers), *extra]
    text = "\r\n".join(lines)
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
        raise ValueError("a CR or LF in the first line or a header")
    return (text + "\r\n\r\n").encode("utf-8", "surrogateescape")


def frame_chunk(chunk: bytes) -> bytes:
    """One chunk of a chunked body (`chunk` not empty: an empty one ends the body)."""
    return b"%x\r\n%b\r\n" % (len(chunk), chunk)


def write_message(transport: asyncio.Transport, head: bytes, body: bytes) -> None:
    """A head and a whole body: one write (one syscall) when the body is small."""
    if len(body) < COALESCE:
        transport.write(head + body)
    else:
        transport.write(head)
        transport.write(body)


def first_header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of header `name` (case-insensitive), or None."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class Flow(asyncio.Protocol):
    """A protocol whose writer waits (`drain`) while its transport's buffer is full."""

    transport: asyncio.Transport | None = None
    writing_paused = False
    drained: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.wake_writer()

    def wake_writer(self) -> None:
        drained = self.drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def drain(self) -> bool:
        """Until writing may go on; False if the connection is gone."""
        while self.writing_paused and self.transport is not None:
            self.drained = asyncio.get_running_loop().create_future()
            try:
                await self.drained
            finally:
                self.drained = None
        return self.transport is not None
