// A chat client on the official `phoenix` package (from apps/chat/assets,
// installed by `npm ci`), driven by the tests: JSON commands on stdin, one
// JSON event per line on stdout.
//   {"cmd": "join", "topic": "room:lobby", "payload": {"user": "ann"}}
//   {"cmd": "push", "topic": "room:lobby", "event": "new_msg", "payload": {"body": "hi"}}
//   {"cmd": "leave", "topic": "room:lobby"}  {"cmd": "quit"}
import { pathToFileURL } from "node:url";
import { createInterface } from "node:readline";

const assets = process.env.CHAT_ASSETS;
const { Socket, Presence } = await import(pathToFileURL(`${assets}/node_modules/phoenix/priv/static/phoenix.mjs`));
const { default: WebSocket } = await import(pathToFileURL(`${assets}/node_modules/ws/wrapper.mjs`));

const out = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const socket = new Socket(process.argv[2], { transport: WebSocket, heartbeatIntervalMs: 1000 });
socket.onOpen(() => out({ event: "open" }));
socket.onClose(() => out({ event: "close" }));
socket.connect();
const channels = {};

createInterface({ input: process.stdin }).on("line", (line) => {
  const c = JSON.parse(line);
  if (c.cmd === "join") {
    const channel = socket.channel(c.topic, c.payload);
    const presence = new Presence(channel);
    presence.onSync(() => out({ event: "presence", topic: c.topic, users: presence.list((id) => id).sort() }));
    channel.on("new_msg", (m) => out({ event: "new_msg", topic: c.topic, message: m }));
    channel.join()
      .receive("ok", (r) => out({ event: "joined", topic: c.topic, response: r }))
      .receive("error", (r) => out({ event: "join_error", topic: c.topic, response: r }));
    channels[c.topic] = channel;
  } else if (c.cmd === "push") {
    channels[c.topic].push(c.event, c.payload)
      .receive("ok", (r) => out({ event: "reply", status: "ok", ref: c.ref, response: r }))
      .receive("error", (r) => out({ event: "reply", status: "error", ref: c.ref, response: r }));
  } else if (c.cmd === "leave") {
    channels[c.topic].leave().receive("ok", () => out({ event: "left", topic: c.topic }));
  } else if (c.cmd === "quit") {
    socket.disconnect(() => process.exit(0));
  }
});
