"""Rooms: one GenServer per room and node, under a DynamicSupervisor, found
through a Registry by name (the seed's `{:via, Registry, {ChatApp.RoomRegistry,
name}}`), started on first join.

A message posted in a room is broadcast on the room's PubSub topic
(`"room:<name>"`), so it reaches every node; each node's room process is
subscribed to that topic too and keeps what it hears: the last `keep`
messages in memory (what a new member gets on join) and every message in
the node's SQLite store (what a restarted room loads). One room process
posts a sender's messages in the order they came, and PubSub keeps that
order to every subscriber.

>>> from apps.chat.room import topic
>>> topic("lobby")
'room:lobby'
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import beamish
from beamish import DynamicSupervisor, GenServer, NoReply, Pid, Registry, Reply, StartError
from beamish.cluster import PubSub

from .socket import encode
from .store import Store

PUBSUB = "Chat.PubSub"
ROOMS = "Chat.Rooms"
ROOM_SUPERVISOR = "Chat.RoomSupervisor"
STORE = "Chat.Store"
KEEP = 50


def topic(room: str) -> str:
    return f"room:{room}"


def via(room: str) -> tuple[Any, ...]:
    return Registry.via(ROOMS, room)


class Room(GenServer):
    restart = "transient"

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Any = None, timeout: float | None = None) -> Pid:
        # Always under the room's via-name (the seed's {:via, Registry, ...}).
        return await super().start_link(arg, name=via(arg), timeout=timeout)

    @staticmethod
    async def ensure(room: str) -> Pid:
        """The room's process on this node, started on first use."""
        found = Registry.lookup(ROOMS, room)
        if found:
            return found[0][0]
        try:
            pid = await DynamicSupervisor.start_child(ROOM_SUPERVISOR, Room.child_spec(room))
        except StartError as exc:
            reason = exc.reason
            if type(reason) is tuple and reason[0] == "already_started":
                return reason[1]  # type: ignore[no-any-return]
            raise
        assert pid is not None
        return pid

    @staticmethod
    async def post(room: str, user: str, body: str) -> dict[str, Any]:
        pid = await Room.ensure(room)
        message: dict[str, Any] = await GenServer.call(pid, ("post", user, body))
        return message

    @staticmethod
    async def history(room: str) -> list[dict[str, Any]]:
        pid = await Room.ensure(room)
        messages: list[dict[str, Any]] = await GenServer.call(pid, "history")
        return messages

    async def init(self, room: str) -> dict[str, Any]:
        PubSub.subscribe(PUBSUB, topic(room))
        rows = await Store.recent(STORE, room, KEEP)
        history = deque(({"user": u, "body": b, "at": at} for u, b, at in rows), maxlen=KEEP)
        return {"room": room, "history": history}

    def handle_call(self, request: Any, from_: Any, st: dict[str, Any]) -> Reply:
        match request:
            case ("post", str(user), str(body)):
                message = {"user": user, "body": body, "at": time.time()}
                # Encoded once for every socket (Phoenix's fastlane: a broadcast's
                # frame has no join_ref); every node's room, this one included,
                # keeps the message when the broadcast arrives.
                frame = encode(None, None, topic(st["room"]), "new_msg", message)
                PubSub.broadcast(PUBSUB, topic(st["room"]), ("room_msg", st["room"], message, frame))
                return Reply(message, st)
            case "history":
                return Reply(list(st["history"]), st)
        return Reply(("error", "unknown request"), st)

    def handle_info(self, msg: Any, st: dict[str, Any]) -> NoReply:
        match msg:
            case ("room_msg", _, {"user": str(user), "body": str(body), "at": at} as message, _):
                st["history"].append(message)
                Store.append(STORE, st["room"], user, body, float(at))
        return NoReply(st)


class RoomSupervisor(DynamicSupervisor):
    """The rooms of this node (Elixir's `ChatApp.RoomSupervisor`)."""


async def start_rooms() -> None:
    """For tests and the app: the registry and the room supervisor."""
    await Registry.start_link(keys="unique", name=ROOMS)
    await DynamicSupervisor.start_link(strategy="one_for_one", name=ROOM_SUPERVISOR)
    _ = beamish
