"""Frames after the handshake: batching, ticks, oversized frames, silence."""

from __future__ import annotations

import asyncio

import pytest

from beamish.dist.framing import FrameError, FrameStream


async def pair(**options: float) -> tuple[FrameStream, asyncio.StreamReader, asyncio.StreamWriter, asyncio.Server]:
    ready: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.get_running_loop().create_future()

    async def accepted(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ready.set_result((r, w))

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    stream = FrameStream(r, w, **options)  # type: ignore[arg-type]
    peer_r, peer_w = await ready
    return stream, peer_r, peer_w, server


def test_frames_written_in_one_turn_go_out_together_and_ticks_are_skipped() -> None:
    async def main() -> None:
        stream, peer_r, peer_w, server = await pair()
        for i in range(3):
            stream.write_frame(bytes([i]))
        data = await asyncio.wait_for(peer_r.readexactly(15), 2)
        assert data == b"\0\0\0\1\0" + b"\0\0\0\1\1" + b"\0\0\0\1\2"
        peer_w.write(b"\0\0\0\0" + b"\0\0\0\2hi")  # a tick, then a frame
        assert await anext(stream.frames()) == b"hi"
        stream.close()
        peer_w.close()
        server.close()

    asyncio.run(main())


def test_an_oversized_frame_is_refused_before_it_is_read() -> None:
    async def main() -> None:
        stream, _, peer_w, server = await pair(max_frame=1000)
        peer_w.write(b"\x7f\xff\xff\xff")
        with pytest.raises(FrameError, match="exceeds"):
            await anext(stream.frames())
        stream.close()
        peer_w.close()
        server.close()

    asyncio.run(main())


def test_a_silent_peer_is_declared_down_and_an_idle_one_gets_ticks() -> None:
    async def main() -> None:
        stream, peer_r, peer_w, server = await pair(ticktime=0.4)
        # We send ticks while idle...
        assert await asyncio.wait_for(peer_r.readexactly(4), 2) == b"\0\0\0\0"
        # ...and give up on a peer that sends nothing for ticktime.
        with pytest.raises(FrameError, match="net_tick_timeout"):
            await asyncio.wait_for(anext(stream.frames()), 5)
        peer_w.close()
        server.close()

    asyncio.run(main())
