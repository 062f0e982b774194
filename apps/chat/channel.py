"""The room channel (Phoenix's chat guide `RoomChannel`): topic
`room:<name>`, joined with `{"user": name}`; the join reply carries the
room's recent history; `new_msg` with `{"body": ...}` goes to every member
(the sender too) as `new_msg` `{"user", "body", "at"}`; presence is keyed by
user name.

>>> from apps.chat.channel import valid_room
>>> valid_room("lobby"), valid_room("no spaces"), valid_room("")
(True, False, False)
"""

from __future__ import annotations

import re
import time
from typing import Any

from beamish.cluster import PubSub

from .presence import Presence
from .room import PUBSUB, Room
from .socket import Socket

ROOM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_USER = 40
MAX_BODY = 4000


def valid_room(name: str) -> bool:
    return ROOM_NAME.fullmatch(name) is not None


class RoomChannel:
    async def join(self, topic: str, payload: Any, socket: Socket) -> tuple[str, Any]:
        room = topic.removeprefix("room:")
        user = payload.get("user") if isinstance(payload, dict) else None
        if not valid_room(room):
            return ("error", {"reason": "invalid room"})
        if not (isinstance(user, str) and 0 < len(user.strip()) <= MAX_USER):
            return ("error", {"reason": "unauthorized"})
        socket.assigns[topic] = user
        PubSub.subscribe(PUBSUB, topic)
        messages = await Room.history(room)
        await Presence.track(socket.pid, topic, user, {"online_at": time.time()})
        socket.assigns[f"presence:{topic}"] = await Presence.list(topic)
        return ("ok", {"messages": messages})

    async def handle_in(self, event: str, payload: Any, topic: str, socket: Socket) -> tuple[str, Any] | None:
        if event == "new_msg":
            body = payload.get("body") if isinstance(payload, dict) else None
            if not (isinstance(body, str) and 0 < len(body) <= MAX_BODY):
                return ("error", {"reason": "a body is 1 to 4000 characters"})
            await Room.post(topic.removeprefix("room:"), socket.assigns[topic], body)
            return ("ok", {})
        return ("error", {"reason": f"unknown event {event[:40]}"})

    def handle_info(self, msg: Any, topic: str, socket: Socket) -> tuple[str, Any] | None:
        match msg:
            case ("after_join",):
                return ("presence_state", socket.assigns.pop(f"presence:{topic}", {}))
            case ("room_msg", room, _, str(frame)) if topic == f"room:{room}":
                return ("raw", frame)
            case ("presence_diff", t, diff) if t == topic:
                return ("presence_diff", diff)
        return None

    async def terminate(self, topic: str, socket: Socket) -> None:
        PubSub.unsubscribe(PUBSUB, topic)
        await Presence.untrack(socket.pid, topic)
