"""The tutorial's ChatApp.Room and RoomSupervisor, translated line by line.

    defmodule ChatApp.RoomSupervisor do
      use Supervisor
      def start_link do
        Supervisor.start_link(__MODULE__, [], name: __MODULE__)
      end
      @impl true
      def init(_args) do
        children = [
          {ChatApp.RoomRegistry, []},
          {ChatApp.RoomManager, []}
        ]
        Supervisor.init(children, strategy: :one_for_one)
      end
    end
    defmodule ChatApp.Room do
      use GenServer
      def start_link(room_name) do
        GenServer.start_link(__MODULE__, room_name, name: {:via, Registry, {ChatApp.RoomRegistry, room_name}})
      end
      def join(room_name, user) do
        GenServer.cast({:via, Registry, {ChatApp.RoomRegistry, room_name}}, {:join, user})
      end
      def send_message(room_name, user, message) do
        GenServer.cast({:via, Registry, {ChatApp.RoomRegistry, room_name}}, {:message, user, message})
      end
      @impl true
      def init(room_name) do
        Phoenix.PubSub.subscribe(ChatApp.PubSub, "room:#{room_name}")
        {:ok, %{name: room_name, users: MapSet.new(), messages: []}}
      end
      @impl true
      def handle_cast({:join, user}, state) do
        new_users = MapSet.put(state.users, user)
        broadcast_message(state.name, "System", "#{user} joined the room")
        {:noreply, %{state | users: new_users}}
      end
      @impl true
      def handle_cast({:message, user, message}, state) do
        broadcast_message(state.name, user, message)
        new_messages = [{user, message, DateTime.utc_now()} | state.messages]
        {:noreply, %{state | messages: new_messages}}
      end
      defp broadcast_message(room_name, user, message) do
        Phoenix.PubSub.broadcast(ChatApp.PubSub, "room:#{room_name}",
          {:message, user, message, DateTime.utc_now()})
      end
    end

The tutorial never shows `ChatApp.RoomRegistry` or `RoomManager`: here the
registry is a `Registry` with unique keys and the manager a
`DynamicSupervisor` that starts rooms. A room subscribes to its own topic,
so it also receives what it broadcasts (as the Elixir one does: its
`handle_info` would have to deal with it; here it is ignored). The full
application, with Phoenix Channels, presence and history, is `apps/chat`.

Run: `python examples/chat_room.py`.
"""

from __future__ import annotations

import datetime

import beamish
from beamish import DynamicSupervisor, GenServer, NoReply, Registry, Supervisor, Term
from beamish.cluster import PubSub

ROOM_REGISTRY = "ChatApp.RoomRegistry"


def _via(room_name: str) -> tuple[Term, ...]:
    return Registry.via(ROOM_REGISTRY, room_name)


class RoomSupervisor(Supervisor):
    @classmethod
    async def start_link(cls, arg: Term = None, **_: Term) -> beamish.Pid:
        return await super().start_link([], name="ChatApp.RoomSupervisor")

    def init(self, _args: Term) -> Term:
        children = [
            Registry.child_spec(keys="unique", name=ROOM_REGISTRY),
            DynamicSupervisor.child_spec({"name": "ChatApp.RoomManager", "strategy": "one_for_one"}),
        ]
        return Supervisor.flags(children, strategy="one_for_one")


class Room(GenServer):
    @classmethod
    async def start_link(cls, arg: Term = None, *, name: Term = None, timeout: float | None = None) -> beamish.Pid:
        return await super().start_link(arg, name=_via(arg))

    @staticmethod
    def join(room_name: str, user: str) -> None:
        GenServer.cast(_via(room_name), ("join", user))

    @staticmethod
    def send_message(room_name: str, user: str, message: str) -> None:
        GenServer.cast(_via(room_name), ("message", user, message))

    def init(self, room_name: str) -> dict[str, Term]:
        PubSub.subscribe("ChatApp.PubSub", f"room:{room_name}")
        return {"name": room_name, "users": frozenset(), "messages": []}

    def handle_cast(self, request: Term, state: dict[str, Term]) -> NoReply:
        match request:
            case ("join", user):
                new_users = state["users"] | {user}
                broadcast_message(state["name"], "System", f"{user} joined the room")
                return NoReply({**state, "users": new_users})
            case ("message", user, message):
                broadcast_message(state["name"], user, message)
                new_messages = [(user, message, datetime.datetime.now(datetime.UTC)), *state["messages"]]
                return NoReply({**state, "messages": new_messages})
        return NoReply(state)

    def handle_info(self, msg: Term, state: dict[str, Term]) -> NoReply:
        return NoReply(state)  # its own broadcasts (see the module doc)


def broadcast_message(room_name: str, user: str, message: str) -> None:
    PubSub.broadcast("ChatApp.PubSub", f"room:{room_name}", ("message", user, message, datetime.datetime.now(datetime.UTC)))


async def main() -> None:
    await Supervisor.start_link([PubSub.child_spec(name="ChatApp.PubSub")], strategy="one_for_one")
    await RoomSupervisor.start_link()
    await DynamicSupervisor.start_child("ChatApp.RoomManager", Room.child_spec("lobby"))
    PubSub.subscribe("ChatApp.PubSub", "room:lobby")  # a connected client, in effect
    Room.join("lobby", "ann")
    Room.send_message("lobby", "ann", "hello, room")
    for _ in range(2):
        _, user, message, at = await beamish.receive(timeout=5)
        print(f"{user}: {message} ({type(at).__name__})")
    state = await beamish.sys.get_state(_via("lobby"))
    print("users:", sorted(state["users"]), "messages kept:", len(state["messages"]))


if __name__ == "__main__":
    beamish.run(main)
