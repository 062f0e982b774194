"""A remote shell: a Python REPL that evaluates inside another running node,
as `iex --remsh` and `erl -remsh` do.

The node opts in, by running the shell service (`await shell.serve()` in
it, or `beamish node --shell`); a node that does not is refused, even to a
peer with the cookie, because the service runs any Python it is sent. The
connection is the distribution's, authenticated by the cookie (and
encrypted with `--tls-*`).

    $ beamish node --name app@127.0.0.1 --cookie secret --shell
    $ beamish shell --remsh app@127.0.0.1 --cookie secret
    app@127.0.0.1> len(beamish.registered())
    7
    app@127.0.0.1> await top(5)

Each input runs in a new process of the remote node, with top-level
`await` (as `python -m asyncio`); names assigned stay for the session.
`print` shows here; so does an exception's traceback. In scope: `beamish`,
`dist`, `Atom`, `GenServer`, `sys` (`beamish.sys`), `recon`, and `top`,
an observer_cli-like table of the busiest processes.

>>> from beamish.dist.shell import complete
>>> complete("x = 1"), complete("def f():")
(True, False)

OTP: mirrors `erl -remsh` / `iex --remsh`; differs in that the node must
enable it (an Erlang node's shell can always be reached by a peer holding
its cookie).
"""

from __future__ import annotations

import ast
import asyncio
import code
import codeop
import functools
import io
import os
import sys as _stdlib_sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from .. import recon
from .._atoms import ERROR, OK
from .. import sys as beamish_sys
from .._gen import reply
from ..gen_server import GenServer, NoReply, Reply
from ..process import Exit, current, monitor, spawn
from ..terms import Atom, Pid, Term
from . import _api

__all__ = ["SERVICE", "complete", "remsh", "serve"]

SERVICE = "beamish_shell"
FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def complete(source: str) -> bool:
    """Whether `source` is a whole statement (or a syntax error, which is
    sent on to show its message), not the first lines of one."""
    compiler = codeop.CommandCompiler()
    compiler.compiler.flags |= FLAGS
    try:
        return compiler(source, "<remsh>", "single") is not None
    except (SyntaxError, ValueError, OverflowError):
        return True


# --- the service, on the node being inspected ------------------------------


async def top(n: int = 10, by: str = "messages_handled", window: float = 1.0, *, out: Callable[..., None] = print) -> None:
    """The `n` busiest processes over `window` seconds (observer_cli's top)."""
    rows = await recon.proc_window(by, n, window)  # type: ignore[arg-type]
    out(f"{'pid':<28} {'name or initial call':<36} {by:>18} {'queue':>7} {'memory':>9}")
    for pid, value, label in rows:
        info = current().node.process_info(pid)
        queue, memory = (info.message_queue_len, info.memory) if info else (0, 0)
        out(f"{pid!r:<28} {label[:36]:<36} {value:>18} {queue:>7} {memory:>9}")


class _Session:
    def __init__(self, owner: Pid) -> None:
        import beamish

        self.owner = owner
        self.out = io.StringIO()

        def shell_print(*args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False) -> None:
            print(*args, sep=sep, end=end, file=self.out if file is None else file, flush=flush)

        self.scope: dict[str, Any] = {
            "__name__": "__remsh__",
            "beamish": beamish,
            "dist": _api,
            "Atom": Atom,
            "GenServer": GenServer,
            "sys": beamish_sys,
            "recon": recon,
            "print": shell_print,
        }
        self.scope["top"] = functools.partial(top, out=shell_print)


class _Service(GenServer):
    """`beamish_shell`: one namespace per client session."""

    def init(self, _: Term) -> dict[Term, _Session]:
        return {}

    def handle_call(self, request: Term, from_: Any, sessions: dict[Term, _Session]) -> Reply | NoReply:
        match request:
            case ("hello", session):
                caller = from_[0]
                if session not in sessions:
                    sessions[session] = _Session(caller)
                    monitor(caller)
                return Reply((OK, str(current().node.name)), sessions)
            case ("eval", session, str(source)) if session in sessions:
                spawn(_evaluate, sessions[session], source, from_)
                return NoReply(sessions)
        return Reply((ERROR, "no such session: say hello first"), sessions)

    def handle_info(self, msg: Term, sessions: dict[Term, _Session]) -> NoReply:
        if type(msg) is tuple and len(msg) == 5 and msg[0] == "DOWN":
            for key, session in list(sessions.items()):
                if session.owner == msg[3]:
                    del sessions[key]  # its client went: its names go
        return NoReply(sessions)


async def _evaluate(session: _Session, source: str, from_: Any) -> None:
    """Run one input in this process; reply with what it printed and the
    value of a final expression (its repr, as the REPL shows it; never
    through `sys.displayhook`, which would write to the node's stdout)."""
    session.out = io.StringIO()
    try:
        tree = ast.parse(source, "<remsh>", "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        assert last is None or isinstance(last, ast.Expr)
        result = eval(compile(tree, "<remsh>", "exec", flags=FLAGS), session.scope)
        if asyncio.iscoroutine(result):
            await result
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<remsh>", "eval", flags=FLAGS), session.scope)
            if asyncio.iscoroutine(value):
                value = await value
            if value is not None:
                session.out.write(repr(value) + "\n")
        reply(from_, (OK, session.out.getvalue()))
    except (Exception, Exit) as exc:
        trace = "".join(traceback.format_exception(exc)[-8:])
        reply(from_, (ERROR, session.out.getvalue() + trace))


async def serve() -> Pid:
    """Run the shell service on the calling node (registered `beamish_shell`)."""
    pid = await _Service.start(None, name=SERVICE)
    assert pid is not None
    return pid


# --- the client: `beamish shell --remsh NODE` -------------------------------


def remsh(target: str, cookie: str | None = None, name: str | None = None,
          stdin: Any = None, stdout: Any = None) -> int:  # fmt: skip
    """Run a REPL on this terminal that evaluates in node `target`; returns
    the exit code (1 if the node cannot be reached or refuses)."""
    from ..node import Node

    host = target.partition("@")[2] or "127.0.0.1"
    node = Node(name or f"remsh_{os.getpid()}@{host}")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stopping: asyncio.Future[None] | None = None
    session = (node.name, os.getpid())
    problem: list[str] = []
    caller: list[Any] = []

    async def body() -> None:
        nonlocal stopping
        await _api.start(cookie=cookie)
        try:
            if not await _api.connect(target):
                problem.append(f"cannot connect to {target}")
                return
            try:
                await GenServer.call((SERVICE, target), (Atom("hello"), session), 10.0)
            except Exit as exc:
                why = "it does not run a shell (start it with `beamish node --shell`)" if exc.reason == "noproc" else exc.reason
                problem.append(f"{target} refused a shell: {why}")
                return
            stopping = asyncio.get_running_loop().create_future()
            caller.append(current())
            ready.set()
            await stopping
        finally:
            ready.set()
            await _api.stop()

    thread = threading.Thread(target=lambda: loop.run_until_complete(node.run(body)), daemon=True)
    thread.start()
    ready.wait(30)
    out = stdout or _stdlib_sys.stdout
    if problem or not caller:
        print(f"beamish shell: {problem[0] if problem else 'no answer'}", file=_stdlib_sys.stderr)
        thread.join(10)
        return 1

    async def ask(source: str) -> Term:
        return await GenServer.call((SERVICE, target), (Atom("eval"), session, source), None)

    def run_remote(source: str) -> Term:
        return asyncio.run_coroutine_threadsafe(node.in_process(lambda: ask(source)), loop).result()

    console = _Console(run_remote, out)
    console.prompt = f"{target}> "
    try:
        console.interact(banner=f"beamish remote shell on {target}; Ctrl-D leaves", exitmsg="")
    finally:
        if stopping is not None:
            loop.call_soon_threadsafe(stopping.set_result, None)
        thread.join(10)
    return 0


class _Console(code.InteractiveConsole):
    """The local half of the REPL: gathers whole inputs, prints answers."""

    prompt = "> "

    def __init__(self, run: Callable[[str], Term], out: Any) -> None:
        super().__init__()
        self.compile.compiler.flags |= FLAGS
        self.run = run
        self.out = out

    def raw_input(self, prompt: str = "") -> str:
        return input(self.prompt if prompt == _stdlib_sys.ps1 else prompt)

    def runsource(self, source: str, filename: str = "<input>", symbol: str = "single") -> bool:
        if not complete(source):
            return True
        try:
            answer = self.run(source)
        except Exit as exc:
            print(f"** the node answered {exc.reason!r}", file=self.out, flush=True)
            return False
        if type(answer) is tuple and len(answer) == 2:
            print(answer[1], end="", file=self.out, flush=True)
        return False


if not hasattr(_stdlib_sys, "ps1"):
    _stdlib_sys.ps1 = ">>> "
