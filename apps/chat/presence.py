"""Presence: who is in each room, on every node, with join/leave diffs in
Phoenix.Presence's shapes (`{user: {"metas": [{"phx_ref": ...}, ...]}}`).

One tracker per node (registered `Chat.Presence`) owns the presences of its
node's sockets: it monitors each tracked process and tells the trackers of
the other nodes, which it finds as members of the pg group `chat_presence`,
about each join and leave; a tracker that appears gets the others' full
state. Every tracker therefore holds the whole cluster's view and sends its
node's sockets the diffs (`("presence_diff", topic, diff)` to the room's
PubSub topic, locally).

Guarantees: a presence is visible on a node once the join message from its
owner's tracker arrived there (one message over the connection), and gone
when the owner leaves, its socket exits, or its node goes down: pg drops a
dead node's tracker within net tick time, and with it every presence it
owned. It is not Phoenix.Tracker's CRDT: during a partition each side shows
only its own presences, and on the heal the trackers exchange their state
again, so both sides converge; nothing else is merged.

>>> from apps.chat.presence import diff
>>> diff({"ann": [{"phx_ref": "1"}]}, {})
{'joins': {'ann': {'metas': [{'phx_ref': '1'}]}}, 'leaves': {}}
"""

from __future__ import annotations

import itertools
from typing import Any

import beamish
from beamish import GenServer, NoReply, Pid, Reply
from beamish.cluster import PubSub, pg

from .room import PUBSUB

NAME = "Chat.Presence"
GROUP = "chat_presence"
_refs = itertools.count(1)


def diff(joins: dict[str, list[dict[str, Any]]], leaves: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "joins": {k: {"metas": v} for k, v in joins.items()},
        "leaves": {k: {"metas": v} for k, v in leaves.items()},
    }


class Presence(GenServer):
    """The tracker. State: entries (pid, topic, key, meta) by owner pid."""

    @staticmethod
    async def track(pid: Pid, topic: str, key: str, meta: dict[str, Any]) -> dict[str, Any]:
        tracked: dict[str, Any] = await GenServer.call(NAME, ("track", pid, topic, key, meta))
        return tracked

    @staticmethod
    async def untrack(pid: Pid, topic: str) -> None:
        await GenServer.call(NAME, ("untrack", pid, topic))

    @staticmethod
    async def list(topic: str) -> dict[str, Any]:
        state: dict[str, Any] = await GenServer.call(NAME, ("list", topic))
        return state

    async def init(self, _: Any) -> dict[str, Any]:
        me = beamish.self()
        await pg.join(GROUP, me)
        _, members = await pg.monitor(GROUP)
        st: dict[str, Any] = {"entries": {}, "peers": set()}
        for peer in members:
            if peer != me:
                self._hello(st, peer)
        return st

    # entries: (owner pid, topic) -> (key, meta)
    def _hello(self, st: dict[str, Any], peer: Pid) -> None:
        st["peers"].add(peer)
        mine = [(pid, t, k, m) for (pid, t), (k, m) in st["entries"].items() if pid.node == beamish.self().node]
        beamish.send(peer, ("presence_state", beamish.self(), mine))

    def _add(self, st: dict[str, Any], pid: Pid, topic: str, key: str, meta: dict[str, Any]) -> None:
        if (pid, topic) in st["entries"]:
            return
        st["entries"][(pid, topic)] = (key, meta)
        PubSub.local_broadcast(PUBSUB, topic, ("presence_diff", topic, diff({key: [meta]}, {})))

    def _drop(self, st: dict[str, Any], pid: Pid, topic: str) -> None:
        entry = st["entries"].pop((pid, topic), None)
        if entry is not None:
            key, meta = entry
            PubSub.local_broadcast(PUBSUB, topic, ("presence_diff", topic, diff({}, {key: [meta]})))

    def handle_call(self, request: Any, from_: Any, st: dict[str, Any]) -> Reply:
        match request:
            case ("track", pid, str(topic), str(key), dict(meta)):
                meta = {**meta, "phx_ref": str(next(_refs)), "node": str(beamish.self().node)}
                if not any(p == pid for p, _ in st["entries"]):
                    beamish.monitor(pid)
                self._add(st, pid, topic, key, meta)
                for peer in st["peers"]:
                    beamish.send(peer, ("presence_join", pid, topic, key, meta))
                return Reply(meta, st)
            case ("untrack", pid, str(topic)):
                self._drop(st, pid, topic)
                for peer in st["peers"]:
                    beamish.send(peer, ("presence_leave", pid, topic))
                return Reply("ok", st)
            case ("list", str(topic)):
                state: dict[str, Any] = {}
                for (_, t), (key, meta) in st["entries"].items():
                    if t == topic:
                        state.setdefault(key, {"metas": []})["metas"].append(meta)
                return Reply(state, st)
        return Reply(("error", "unknown request"), st)

    def handle_info(self, msg: Any, st: dict[str, Any]) -> NoReply:
        match msg:
            case ("presence_join", pid, str(topic), str(key), dict(meta)):
                self._add(st, pid, topic, key, meta)
            case ("presence_leave", pid, str(topic)):
                self._drop(st, pid, topic)
            case ("presence_state", peer, list(entries)):
                st["peers"].add(peer)
                for pid, topic, key, meta in entries:
                    self._add(st, pid, topic, key, meta)
            case ("DOWN", _, _, pid, _):
                # A socket of this node went: its presences leave everywhere.
                for owner, topic in [k for k in st["entries"] if k[0] == pid]:
                    self._drop(st, owner, topic)
                    for peer in st["peers"]:
                        beamish.send(peer, ("presence_leave", owner, topic))
            case (_, "join", group, list(pids)) if group == GROUP:
                for peer in pids:
                    if peer != beamish.self() and peer not in st["peers"]:
                        self._hello(st, peer)
            case (_, "leave", group, list(pids)) if group == GROUP:
                # A tracker gone (its node down, or its process): its presences go.
                for peer in pids:
                    st["peers"].discard(peer)
                    for owner, topic in [k for k in st["entries"] if k[0].node == peer.node]:
                        self._drop(st, owner, topic)
        return NoReply(st)
