"""Message order between one sender and one GenServer, whatever mix of casts,
calls and plain sends, and whatever the scheduling: the guarantee Erlang
gives, checked against the shortcuts the runtime takes (a call or a flood
of casts handled at once in the sender's stack)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

import beamish
from beamish import From, GenServer, NoReply, Reply
from beamish.terms import Term

OPS = st.sampled_from(["cast", "call", "send", "yield", "burst"])


class Recorder(GenServer):
    """Keeps, per sender, the sequence numbers it saw, in the order seen."""

    def init(self, _: Term) -> dict[int, list[int]]:
        return {}

    def handle_cast(self, request: Term, seen: dict[int, list[int]]) -> NoReply:
        sender, seq = request
        seen.setdefault(sender, []).append(seq)
        return NoReply(seen)

    def handle_info(self, msg: Term, seen: dict[int, list[int]]) -> NoReply:
        return self.handle_cast(msg, seen)

    def handle_call(self, request: Term, from_: From, seen: dict[int, list[int]]) -> Reply:
        if request == "dump":
            return Reply({k: list(v) for k, v in seen.items()}, seen)
        sender, seq = request
        seen.setdefault(sender, []).append(seq)
        return Reply(len(seen[sender]), seen)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(OPS, max_size=40), min_size=1, max_size=3))
async def test_each_senders_messages_arrive_in_order_and_calls_see_everything_before_them(
    plans: list[list[str]],
) -> None:
    server = await Recorder.start(None)
    me = beamish.self()

    async def sender(index: int, plan: list[str]) -> None:
        seq = 0
        for op in plan:
            if op == "yield":
                await asyncio.sleep(0)
                continue
            for _ in range(100 if op == "burst" else 1):
                if op in ("cast", "burst"):
                    GenServer.cast(server, (index, seq))
                elif op == "send":
                    beamish.send(server, (index, seq))
                else:
                    # Everything this sender sent before the call was handled first.
                    assert await GenServer.call(server, (index, seq)) == seq + 1
                seq += 1
        beamish.send(me, ("done", index, seq))

    for index, plan in enumerate(plans):
        beamish.spawn(sender, index, plan)
    sent = {}
    for _ in plans:
        _, index, count = await beamish.receive(lambda m: m[0] == "done", timeout=10)
        sent[index] = count
    seen = await GenServer.call(server, "dump")
    assert {k: v for k, v in seen.items() if v} == {i: list(range(n)) for i, n in sent.items() if n}
