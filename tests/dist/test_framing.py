"""Frames after the handshake: batching, ticks, oversized frames, silence."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from beamish.dist.framing import FrameError, FrameStream, FrameTooLarge


async def pair(**options: Any) -> tuple[FrameStream, asyncio.StreamReader, asyncio.StreamWriter, asyncio.Server]:
    ready: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.get_running_loop().create_future()

    async def accepted(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ready.set_result((r, w))

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    r, w = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    stream = FrameStream(r, w, **options)
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
        with pytest.raises(FrameTooLarge, match="over the maximum of 1000"):
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


def test_frames_split_anywhere_and_large_ones_come_out_whole() -> None:
    """Frames are cut from whatever the socket delivers: headers split
    across reads, several frames in one read, a frame larger than a read."""

    async def main() -> None:
        stream, _, peer_w, server = await pair()
        big = bytes(range(256)) * 1000  # 256,000 bytes: more than one 64 KiB read
        frames = [b"a", b"", b"bc", big, b"tail"]  # b"" is a tick: skipped
        wire = b"".join(len(f).to_bytes(4, "big") + f for f in frames)
        received: list[bytes] = []

        async def collect() -> None:
            async for frame in stream.frames():
                received.append(frame)

        reader = asyncio.ensure_future(collect())
        for cut in (1, 3, 2, 7, 5000, 70000, len(wire)):  # odd boundaries
            peer_w.write(wire[:cut])
            wire = wire[cut:]
            await peer_w.drain()
            await asyncio.sleep(0.01)  # so each piece arrives as a read of its own
        peer_w.close()
        await asyncio.wait_for(reader, 5)
        assert received == [b"a", b"bc", big, b"tail"]
        stream.close()
        server.close()

    asyncio.run(main())


def test_serve_hands_over_what_arrived_before_it_then_the_rest_in_order() -> None:
    """Frames the peer sent right behind the handshake sit in the
    StreamReader when `serve` swaps the protocol: none is lost or reordered."""

    async def main() -> None:
        stream, _, peer_w, server = await pair()
        peer_w.write(b"\0\0\0\1a\0\0\0\1b\0\0")  # two frames and half a header
        await peer_w.drain()
        await stream.reader._wait_for_data("test")  # type: ignore[attr-defined]
        got: list[bytes] = []
        served = asyncio.ensure_future(stream.serve(got.append))
        await asyncio.sleep(0)
        peer_w.write(b"\0\1c\0\0\0\1d")
        await peer_w.drain()
        for _ in range(200):
            if len(got) >= 4:
                break
            await asyncio.sleep(0.01)
        assert got == [b"a", b"b", b"c", b"d"]
        stream.close()
        await asyncio.wait_for(served, 2)
        await asyncio.wait_for(stream.wait_closed(), 2)
        peer_w.close()
        server.close()

    asyncio.run(main())


def test_a_failing_frame_handler_closes_the_stream_and_stops_the_frames() -> None:
    async def main() -> None:
        stream, peer_r, peer_w, server = await pair()
        got: list[bytes] = []

        def on_frame(frame: bytes) -> None:
            if frame == b"bad":
                raise ValueError("malformed")
            got.append(frame)

        served = asyncio.ensure_future(stream.serve(on_frame))
        peer_w.write(b"\0\0\0\2ok\0\0\0\3bad\0\0\0\5later")
        with pytest.raises(ValueError, match="malformed"):
            await asyncio.wait_for(served, 2)
        assert got == [b"ok"]
        assert await asyncio.wait_for(peer_r.read(), 2) == b""  # we closed it
        peer_w.close()
        server.close()

    asyncio.run(main())


def test_a_stream_announces_its_first_write_of_a_batch_so_its_owner_can_flush_early() -> None:
    async def main() -> None:
        unflushed: set[FrameStream] = set()  # as the distribution kernel passes it
        stream, peer_r, peer_w, server = await pair(unflushed=unflushed)
        stream.write_frame(b"a")
        stream.write_frame(b"b")
        assert unflushed == {stream}
        for s in unflushed:
            s.flush()  # now, not at the end of the loop turn
        assert await asyncio.wait_for(peer_r.readexactly(10), 2) == b"\0\0\0\1a\0\0\0\1b"
        stream.close()
        peer_w.close()
        server.close()

    asyncio.run(main())
