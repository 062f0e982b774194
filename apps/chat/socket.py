"""Phoenix Channels on the wire (the V2 JSON serializer), so the official
`phoenix` JavaScript client talks to beamish unchanged.

Each WebSocket (`/socket/websocket?vsn=2.0.0`) is one beamish process: the
HTTP edge hands it the text frames it reads, and the process answers, joins
channels, and pushes what PubSub and presence send it. A frame is a JSON
array `[join_ref, ref, topic, event, payload]`:

- `["phoenix", "heartbeat"]` is answered `phx_reply` `{"status": "ok"}`; a
  socket silent for `heartbeat_timeout` seconds is closed;
- `phx_join` runs the channel's `join(topic, payload, socket)` and replies
  `{"status": "ok", "response": ...}` or `{"status": "error", "response":
  {"reason": ...}}`; a topic no channel serves gets `"unmatched topic"`;
- `phx_leave` replies ok and leaves; an event on a topic not joined gets
  `"unmatched topic"`;
- a frame that is not such an array closes the connection (1003), one line
  in the log, as a serializer error ends a Phoenix socket; frames past
  `max_frame` bytes or more than `rate` a second close it too (1008).

>>> from apps.chat.socket import decode
>>> decode('["1", "1", "room:lobby", "phx_join", {"user": "ann"}]')
('1', '1', 'room:lobby', 'phx_join', {'user': 'ann'})
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import beamish

log = logging.getLogger("apps.chat")


class BadFrame(ValueError):
    pass


def decode(text: str) -> tuple[str | None, str | None, str, str, Any]:
    try:
        frame = json.loads(text)
    except ValueError as exc:
        raise BadFrame(f"not JSON: {exc}") from None
    if not (isinstance(frame, list) and len(frame) == 5):
        raise BadFrame("a frame is [join_ref, ref, topic, event, payload]")
    join_ref, ref, topic, event, payload = frame
    if not (isinstance(topic, str) and isinstance(event, str)):
        raise BadFrame("topic and event are strings")
    if not all(r is None or isinstance(r, str) for r in (join_ref, ref)):
        raise BadFrame("refs are strings or null")
    return join_ref, ref, topic, event, payload


def encode(join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> str:
    return json.dumps([join_ref, ref, topic, event, payload], separators=(",", ":"))


class Transport(Protocol):
    async def send_str(self, data: str) -> None: ...
    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


@dataclass
class Socket:
    """What a channel sees of its socket (Phoenix's `%Socket{}`)."""

    pid: beamish.Pid
    assigns: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    """A channel (Phoenix's `use Phoenix.Channel`): `join` returns `("ok",
    response)` or `("error", {"reason": ...})`; `handle_in` an optional reply;
    `handle_info` what to push `(event, payload)`, `("raw", frame)` (a
    broadcast encoded once for every socket, join_ref null, as Phoenix's
    fastlane sends it) or None; `terminate`."""

    async def join(self, topic: str, payload: Any, socket: Socket) -> tuple[str, Any]: ...
    async def handle_in(self, event: str, payload: Any, topic: str, socket: Socket) -> tuple[str, Any] | None: ...
    def handle_info(self, msg: Any, topic: str, socket: Socket) -> tuple[str, Any] | None: ...
    async def terminate(self, topic: str, socket: Socket) -> None: ...


@dataclass
class Limits:
    heartbeat_timeout: float = 60.0
    max_frame: int = 64 * 1024
    rate: int = 50  # frames per second


async def serve_socket(
    transport: Transport, route: Callable[[str], Channel | None], limits: Limits,
) -> None:  # fmt: skip
    """The body of a socket's process: frames arrive as `("frame", text)`,
    the end of the connection as `("closed",)`."""
    me = beamish.self()
    socket = Socket(me)
    joined: dict[str, tuple[str | None, Channel]] = {}  # topic -> (join_ref, channel)
    last_seen = time.monotonic()
    window_start, in_window = last_seen, 0
    check = limits.heartbeat_timeout / 2
    timer = beamish.send_after(me, "heartbeat_check", check)

    async def push(join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> None:
        await transport.send_str(encode(join_ref, ref, topic, event, payload))

    async def reply(join_ref: str | None, ref: str | None, topic: str, status: str, response: Any) -> None:
        await push(join_ref, ref, topic, "phx_reply", {"status": status, "response": response})

    try:
        while True:
            msg = await beamish.receive()
            match msg:
                case ("frame", str(text)):
                    now = time.monotonic()
                    last_seen = now
                    if now - window_start >= 1.0:
                        window_start, in_window = now, 0
                    in_window += 1
                    if len(text) > limits.max_frame or in_window > limits.rate:
                        log.warning("closing a socket: frame of %d bytes or over %d frames/s", len(text), limits.rate)
                        await transport.close(code=1008, message=b"too large or too fast")
                        return
                    try:
                        join_ref, ref, topic, event, payload = decode(text)
                    except BadFrame as exc:
                        log.warning("closing a socket: bad frame (%s): %r", exc, text[:200])
                        await transport.close(code=1003, message=b"bad frame")
                        return
                    if topic == "phoenix" and event == "heartbeat":
                        await reply(None, ref, "phoenix", "ok", {})
                    elif event == "phx_join":
                        channel = route(topic)
                        if channel is None:
                            await reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"})
                            continue
                        if topic in joined:  # a rejoin replaces the old channel, as Phoenix does
                            await joined.pop(topic)[1].terminate(topic, socket)
                        status, response = await channel.join(topic, payload, socket)
                        if status == "ok":
                            joined[topic] = (join_ref, channel)
                        await reply(join_ref, ref, topic, status, response)
                        if status == "ok":
                            after = channel.handle_info(("after_join",), topic, socket)
                            if after is not None:
                                await push(join_ref, None, topic, *after)
                    elif topic not in joined:
                        await reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"})
                    elif event == "phx_leave":
                        jref, channel = joined.pop(topic)
                        await channel.terminate(topic, socket)
                        await reply(jref, ref, topic, "ok", {})
                    else:
                        jref, channel = joined[topic]
                        answer = await channel.handle_in(event, payload, topic, socket)
                        if answer is not None:
                            await reply(jref, ref, topic, answer[0], answer[1])
                case ("closed",):
                    return
                case "heartbeat_check":
                    if time.monotonic() - last_seen > limits.heartbeat_timeout:
                        log.info("closing a socket: no heartbeat for %.0f s", limits.heartbeat_timeout)
                        await transport.close(code=1000, message=b"heartbeat timeout")
                        return
                    timer = beamish.send_after(me, "heartbeat_check", check)
                case _:
                    for topic, (jref, channel) in list(joined.items()):
                        out = channel.handle_info(msg, topic, socket)
                        if out is None:
                            continue
                        if out[0] == "raw":  # a frame encoded once for all (fastlane)
                            await transport.send_str(out[1])
                        else:
                            await push(jref, None, topic, *out)
    except ConnectionError:
        return  # the client went while we wrote to it: the normal end of a socket
    finally:
        beamish.cancel_timer(timer)
        for topic, (_, channel) in list(joined.items()):
            await channel.terminate(topic, socket)


Handler = Callable[[Any], Awaitable[None]]
