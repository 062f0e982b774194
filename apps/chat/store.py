"""The chat's message history on disk: one SQLite file (WAL), written in
batches by one writer process per node, so a burst of messages costs one
transaction, not one fsync each.

>>> import tempfile, pathlib, beamish
>>> from apps.chat.store import Store
>>> async def main():
...     store = await Store.start_link(pathlib.Path(tempfile.mkdtemp()) / "chat.db")
...     Store.append(store, "lobby", "ann", "hi", 1.0)
...     await Store.flush(store)
...     return await Store.recent(store, "lobby", 10)
>>> beamish.run(main)
[('ann', 'hi', 1.0)]
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import beamish
from beamish import GenServer, NoReply, Pid, Reply

BATCH_DELAY = 0.05  # seconds a message may wait for others to share its transaction


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS messages ("
        " id INTEGER PRIMARY KEY, room TEXT NOT NULL, user TEXT NOT NULL, body TEXT NOT NULL, at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS messages_room ON messages (room, id)")
    return db


class Store(GenServer):
    """The writer: appends are casts, queued and written together."""

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Any = None, timeout: float | None = None) -> Pid:
        return await super().start_link(Path(arg), name=name, timeout=timeout)

    @staticmethod
    def append(store: Any, room: str, user: str, body: str, at: float) -> None:
        GenServer.cast(store, ("append", (room, user, body, at)))

    @staticmethod
    async def flush(store: Any) -> None:
        """Wait until everything appended so far is on disk."""
        await GenServer.call(store, "flush", None)

    @staticmethod
    async def recent(store: Any, room: str, n: int) -> list[tuple[str, str, float]]:
        rows: list[tuple[str, str, float]] = await GenServer.call(store, ("recent", room, n), None)
        return rows

    @staticmethod
    async def rooms(store: Any) -> list[str]:
        """The rooms with a history on this node."""
        rooms: list[str] = await GenServer.call(store, "rooms", None)
        return rooms

    def init(self, path: Path) -> dict[str, Any]:
        # Trapping exits, a shutdown runs `terminate`, which writes what waits.
        beamish.process_flag("trap_exit", True)
        return {"db": _connect(path), "pending": [], "armed": False}

    def handle_cast(self, request: Any, st: dict[str, Any]) -> NoReply:
        match request:
            case ("append", row):
                st["pending"].append(row)
                if not st["armed"]:
                    st["armed"] = True
                    beamish.send_after(beamish.self(), "write", BATCH_DELAY)
        return NoReply(st)

    async def handle_call(self, request: Any, from_: Any, st: dict[str, Any]) -> Reply:
        match request:
            case "flush":
                await self._write(st)
                return Reply("ok", st)
            case "rooms":
                await self._write(st)
                db = st["db"]
                rows = await beamish.to_thread(lambda: db.execute("SELECT DISTINCT room FROM messages ORDER BY room").fetchall())
                return Reply([r[0] for r in rows], st)
            case ("recent", room, n):
                await self._write(st)
                db = st["db"]

                def read() -> list[tuple[str, str, float]]:
                    cur = db.execute(
                        "SELECT user, body, at FROM (SELECT id, user, body, at FROM messages WHERE room = ?"
                        " ORDER BY id DESC LIMIT ?) ORDER BY id", (room, n),
                    )  # fmt: skip
                    return [tuple(r) for r in cur.fetchall()]

                return Reply(await beamish.to_thread(read), st)
        return Reply(("error", "unknown request"), st)

    async def handle_info(self, msg: Any, st: dict[str, Any]) -> NoReply:
        if msg == "write":
            st["armed"] = False
            await self._write(st)
        return NoReply(st)

    async def _write(self, st: dict[str, Any]) -> None:
        rows, st["pending"] = st["pending"], []
        if not rows:
            return
        db = st["db"]

        def write() -> None:
            db.execute("BEGIN")
            db.executemany("INSERT INTO messages (room, user, body, at) VALUES (?, ?, ?, ?)", rows)
            db.execute("COMMIT")

        await beamish.to_thread(write)

    def terminate(self, reason: Any, st: Any) -> None:
        if isinstance(st, dict) and st.get("pending"):
            db = st["db"]
            db.execute("BEGIN")
            db.executemany("INSERT INTO messages (room, user, body, at) VALUES (?, ?, ?, ?)", st["pending"])
            db.execute("COMMIT")
