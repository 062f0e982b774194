"""`beamish.recon` and the process_info fields it reads (memory, current function)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import beamish
from beamish import GenServer, NoReply, recon


class Sink(GenServer):
    def init(self, _: Any) -> int:
        return 0

    def handle_cast(self, request: Any, n: int) -> NoReply:
        return NoReply(n + 1)


async def parked() -> None:
    await beamish.receive(lambda m: False)


def test_proc_count_ranks_by_queue_length_and_memory() -> None:
    async def main() -> None:
        small = beamish.spawn(parked, name="small")
        big = beamish.spawn(parked, name="big")
        for i in range(50):
            beamish.send(big, ("payload", i, "x" * 100))
        beamish.send(small, 1)
        top = recon.proc_count("message_queue_len", 2)
        assert [(pid, n) for pid, n, _ in top] == [(big, 50), (small, 1)]
        assert top[0][2] == "big"
        by_memory = recon.proc_count("memory", 1)
        assert by_memory[0][0] == big
        info, other = beamish.process_info(big), beamish.process_info(small)
        assert info is not None and other is not None
        assert info.memory == by_memory[0][1] > other.memory
        with pytest.raises(ValueError, match="unknown attribute"):
            recon.proc_count("reductions", 1)  # type: ignore[arg-type]

    beamish.run(main)


def test_proc_window_finds_the_process_busy_now() -> None:
    async def main() -> None:
        old = await Sink.start_link(None, name="old")
        for _ in range(500):
            GenServer.cast(old, 1)  # handled before the window: history, not activity
        busy = await Sink.start_link(None, name="busy")

        async def feed() -> None:
            for _ in range(40):
                for _ in range(10):
                    GenServer.cast(busy, 1)
                await asyncio.sleep(0.005)

        feeder = asyncio.ensure_future(feed())
        await asyncio.sleep(0)
        top = await recon.proc_window("messages_handled", 1, 0.1)
        feeder.cancel()
        assert top[0][0] == busy and top[0][1] > 0 and top[0][2] == "busy"
        assert recon.proc_count("messages_handled", 1)[0][0] == old

    beamish.run(main)


def test_process_info_says_where_a_task_process_waits() -> None:
    async def main() -> None:
        pid = beamish.spawn(parked)
        await asyncio.sleep(0.01)
        info = beamish.process_info(pid)
        assert info is not None and info.current_function is not None
        assert info.current_function.startswith("beamish.process.receive:"), info.current_function
        idle = await Sink.start_link(None)
        idle_info = beamish.process_info(idle)
        assert idle_info is not None and idle_info.current_function is None

    beamish.run(main)
