"""The chat application: rooms as processes, Phoenix Channels on the wire so
the official `phoenix` JavaScript client connects unchanged, presence across
nodes, and history in SQLite.

Run it: `beamish run apps.chat:Chat --name chat@127.0.0.1 --cookie secret`
(with `BEAMISH_ENV` and `--config apps/chat/config` for its settings), then
open the URL it prints. Its tree:

    Chat.Supervisor (one_for_one)
    ├── pg (the default scope), Chat.PubSub (Phoenix.PubSub's)
    ├── Chat.Store (SQLite, batched writes)
    ├── Chat.Rooms (Registry) and Chat.RoomSupervisor (DynamicSupervisor of Rooms)
    ├── Chat.Presence (the node's presence tracker)
    └── Chat.Web (aiohttp: the page and /socket/websocket)

>>> from apps.chat import Chat
>>> Chat.name
'chat'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import beamish
from beamish import Application, DynamicSupervisor, GenServer, Pid, Registry, Supervisor
from beamish.cluster import PubSub, pg

from .presence import NAME as PRESENCE
from .presence import Presence
from .room import PUBSUB, ROOM_SUPERVISOR, ROOMS, STORE
from .socket import Limits
from .store import Store
from .web import Web

__all__ = ["Chat", "children", "port"]


def children(*, port: int = 0, host: str = "127.0.0.1", data_dir: str | Path = "data", limits: Limits | None = None) -> list[Any]:
    """The chat's children, for a supervisor of one's own."""
    return [
        pg.child_spec(),
        PubSub.child_spec(name=PUBSUB),
        _named(Store, Path(data_dir) / "chat.db", STORE),
        Registry.child_spec(keys="unique", name=ROOMS),
        DynamicSupervisor.child_spec({"name": ROOM_SUPERVISOR, "strategy": "one_for_one"}),
        _named(Presence, None, PRESENCE),
        _named(Web, {"port": port, "host": host, "limits": limits or Limits()}, "Chat.Web"),
    ]


def _named(cls: type[GenServer], arg: Any, name: str) -> Any:
    from beamish import ChildSpec

    async def start() -> Pid | None:
        return await cls.start_link(arg, name=name)

    return ChildSpec(id=name, start=(start, ()))


async def port() -> int:
    """The port the chat's web server listens on."""
    answer: int = await GenServer.call("Chat.Web", "port")
    return answer


class Chat(Application):
    name = "chat"

    async def start(self, start_type: Any, args: Any) -> Pid | None:
        env = beamish.application.get_all_env("chat")
        port_ = int(os.environ.get("CHAT_PORT") or env.get("port") or 0)
        data = str(os.environ.get("CHAT_DATA_DIR") or env.get("data_dir") or "data")
        sup = await Supervisor.start_link(children(port=port_, data_dir=data), strategy="one_for_one", name="Chat.Supervisor")
        print(f"chat: http://127.0.0.1:{await port()}/", flush=True)
        return sup
