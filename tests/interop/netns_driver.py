"""A beamish node driven over stdin/stdout, for `tests/interop/netns.py`.

Run in a network namespace as `python netns_driver.py --name n@10.213.7.1
--listen 10.213.7.1 --ticktime 4` (cookie in `BEAMISH_COOKIE`). It prints
`READY` once distributed, `E nodeup <node>` / `E nodedown <node> <reason>`
for each node event (reason `net_tick_timeout` when the peer stopped
ticking, else `connection_closed`), and for each stdin line `<id> <json
string of Python code>` one line `R <id> ok <repr>` or `R <id> error
<repr>`. The code runs in a new process of the node: an expression (with
`await`) gives its value; statements give `env.get("result")`. EOF on
stdin stops the node.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import logging
import sys

import beamish
from beamish import Atom, GenServer, Node, Term, dist
from beamish import cluster as cluster_mod


class _Reasons(logging.Handler):
    """Why each connection was lost, from the kernel's log line (it is
    logged before the nodedown is sent)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if args and "not responding" in str(record.msg):
            self.last[str(args[0])] = "net_tick_timeout"
        print(f"L {record.levelname} {record.getMessage()}", flush=True)


REASONS = _Reasons()


def say(line: str) -> None:
    print(line.replace("\n", " "), flush=True)


async def events() -> None:
    dist.monitor_nodes(True)
    while True:
        match await beamish.receive():
            case ("nodeup", peer):
                say(f"E nodeup {peer}")
            case ("nodedown", peer):
                say(f"E nodedown {peer} {REASONS.last.pop(str(peer), 'connection_closed')}")


async def run_code(ident: str, code: str, env: dict[str, Term], scope: dict[str, object]) -> None:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        try:
            compiled = compile(code, "<netns>", "eval", flags=flags)
            statements = False
        except SyntaxError:
            compiled = compile(code, "<netns>", "exec", flags=flags)
            statements = True
        value = eval(compiled, scope)
        if asyncio.iscoroutine(value):
            value = await value
        if statements:
            value = env.get("result")
        say(f"R {ident} ok {value!r}")
    except BaseException as exc:
        say(f"R {ident} error {exc!r}")


async def main(args: argparse.Namespace) -> None:
    await dist.start(listen=args.listen, ticktime=args.ticktime)
    beamish.spawn(events)
    env: dict[str, Term] = {}
    scope: dict[str, object] = {
        "beamish": beamish, "dist": dist, "Atom": Atom, "GenServer": GenServer,
        "cluster": cluster_mod, "env": env,
    }  # fmt: skip
    say("READY")
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        ident, _, code = line.strip().partition(" ")
        beamish.spawn(run_code, ident, json.loads(code), env, scope)
    await dist.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--ticktime", type=float, default=4.0)
    options = parser.parse_args()
    logging.getLogger("beamish").addHandler(REASONS)
    logging.getLogger("beamish").setLevel(logging.INFO)
    asyncio.run(Node(options.name).run(main, options))
