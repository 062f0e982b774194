"""The `beamish` command line: `beamish run ...`, `beamish node ...` (also
`python -m beamish`).

>>> from beamish import cli
>>> sorted(cli.SUBCOMMANDS)
['cluster', 'node', 'run', 'shell']

Each subcommand is an entry of `SUBCOMMANDS`: a help line, a function that
adds its arguments, and the function that runs it (returning the exit code).
`beamish cluster examples.my_app:MyApp --nodes 2` runs one node per core
(`beamish.dist.local_cluster`), restarting any that dies, until Ctrl-C;
killed, even by SIGKILL, it takes its nodes with it (`run --stop-on-eof`).
`beamish node --name py@127.0.0.1 --cookie secret --rpc-allow math` runs a
distributed node until SIGINT/SIGTERM, then leaves the cluster cleanly.

`beamish run examples.my_app:MyApp --config config` boots a node, loads
the configuration of `$BEAMISH_ENV` (or `--env`) from the directory, starts
the application and its dependencies as permanent applications, and runs
until SIGINT/SIGTERM, when it stops them, newest first, and exits 0; a
signal that comes while it starts is served too (`beamish._os_signals`):
SIGINT/SIGTERM cancel the boot where it waits and stop what had started,
exit 0, as erl's SIGTERM is `init:stop()` at any time. SIGHUP
reloads the configuration (`config_change` on what changed; an invalid file
is logged and the running configuration kept). With `--name` the node is
distributed too. A bad configuration stops boot with exit code 78 and the
file, line and key; a permanent application that dies halts the node with
exit code 1. An application module that cannot be imported (a missing
optional dependency included: it names the extra to install) is one line
on stderr and exit code 1.

OTP: mirrors `erl -name ... -setcookie ...` for a node that only serves, and
a release's boot (`bin/my_app start`) for `run`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from . import application
from ._os_signals import OS_SIGNALS
from .config import ConfigError
from .dist import _node_cli, local_cluster
from .node import Node, _loop_factory
from .process import Exit

__all__ = ["SUBCOMMANDS", "Subcommand", "main"]


class Subcommand(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="MODULE:CLASS", help="the application to start, e.g. my_app.application:MyApp")
    parser.add_argument("--config", metavar="DIR", help="configuration directory (default: ./config when it exists)")
    parser.add_argument("--env", help="configuration environment (default: $BEAMISH_ENV, then dev)")
    parser.add_argument("--name", help="distribute the node under this name, e.g. app@127.0.0.1")
    parser.add_argument("--cookie", help="the cluster's cookie (with --name)")
    parser.add_argument("--listen", default="127.0.0.1", help="address for distribution (with --name; default: loopback)")
    parser.add_argument("--connect", action="append", default=[], metavar="NODE", help="connect to NODE at boot (with --name)")
    parser.add_argument(
        "--observer", type=int, metavar="PORT",
        help="serve the observer page and /metrics on 127.0.0.1:PORT (0: any free port)",
    )  # fmt: skip
    parser.add_argument(
        "--stop-on-eof",
        action="store_true",
        help="stop as on SIGTERM when stdin ends (a parent holding the other end takes the node with it when it dies)",
    )


def _run(args: argparse.Namespace) -> int:
    """Boot a node with one application (and its dependencies) and serve."""
    import asyncio
    import os

    directory = args.config or ("config" if os.path.isdir("config") else None)
    # Import the application's code before the node runs: an import holds the
    # event loop, and the lag watchdog would rightly complain about it.
    if not _imported(args.app):
        return 1
    node = Node(args.name or "nonode@nohost")

    async def boot() -> None:
        if args.name:
            from .dist import _api

            try:
                await _api.start(cookie=args.cookie, listen=args.listen)
            except OSError as exc:  # a name EPMD already has, a port in use: the user's to fix
                raise Exit(_CannotStart(f"cannot start {node.name}: {exc}; {_node_cli.REMEDY}")) from None
            for peer in args.connect:  # the others may not be up yet: they will connect to us
                await _api.connect(peer)
        cfg = application.load_config(directory, env=args.env)
        app = application.load(args.app)
        await application.ensure_all_started(app, "permanent")
        if args.observer is not None:
            from .observer import serve as serve_observer

            observer = await serve_observer(port=args.observer)
            print(f"observer: http://127.0.0.1:{observer.port}/", flush=True)
        # Last: whoever waits for this line may count on the application.
        print(f"beamish: {app.name} started on {node.name} (env {cfg.env})", flush=True)

    async def serve() -> None:
        if args.stop_on_eof:
            await OS_SIGNALS.stop_at_eof(sys.stdin)
        # A stop during boot cancels it where it waits; what had started is
        # stopped below, as `init:stop()` does whenever SIGTERM comes.
        if await OS_SIGNALS.unless_stopped(boot()):
            while await OS_SIGNALS.wait() == "hup":
                try:
                    changed = await application.reload_config()
                except ConfigError as exc:
                    print(f"beamish: configuration not reloaded: {exc}", file=sys.stderr, flush=True)
                else:
                    print(f"beamish: configuration reloaded; changed: {', '.join(changed) or 'nothing'}", flush=True)
        stopped = await application.stop_all()
        print(f"beamish: stopped {', '.join(stopped)}", flush=True)

    try:
        with asyncio.Runner(loop_factory=_loop_factory(None)) as runner:
            runner.run(node.run(serve))
    except ConfigError as exc:
        print(f"beamish: {exc}", file=sys.stderr, flush=True)
        return 78  # EX_CONFIG
    except application.ApplicationError as exc:
        print(f"beamish: could not start: {exc}", file=sys.stderr, flush=True)
        return 1
    except Exit as exc:
        if isinstance(exc.reason, _CannotStart):
            print(f"beamish: {exc.reason}", file=sys.stderr, flush=True)
            return 1
        print(f"beamish: node halted: {exc.reason!r}", file=sys.stderr, flush=True)
        return 1
    return 0


class _CannotStart(str):
    """The exit reason of a boot that could not start distribution: one line to print."""


# Optional dependencies, by the module a user's code imports: the extra to install.
_EXTRAS = {"pydantic": "config", "uvloop": "uvloop"}


def _imported(app: str) -> bool:
    """Import the module of `app` ("module:Class") from the current directory,
    as `python -m` would; when it cannot be, say why in one line."""
    import importlib
    import os

    module = app.partition(":")[0]
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        top = missing.partition(".")[0]
        if top in _EXTRAS:
            why = f"it needs {top}, an optional dependency: pip install 'beamish[{_EXTRAS[top]}]'"
        elif module == missing or module.startswith(missing + "."):
            why = f"no module named {missing!r} here ({os.getcwd()}) or on PYTHONPATH"
        else:
            why = f"it needs {missing!r}, which is not installed"
        print(f"beamish: cannot import {module}: {why}", file=sys.stderr, flush=True)
        return False
    name = app.partition(":")[2]
    if name:
        found = getattr(imported, name, None)
        if not (isinstance(found, type) and issubclass(found, application.Application)):
            what = "no" if found is None else f"{found!r} is not an"
            print(f"beamish: cannot run {app}: {module} has {what} Application class {name!r}", file=sys.stderr, flush=True)
            return False
    return True


def _cluster(args: argparse.Namespace) -> int:
    # Checked here, once: else each node would fail to boot and say so.
    return local_cluster.main(args) if _imported(args.app) else 1


def _add_shell_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remsh", required=True, metavar="NODE", help="the node to evaluate in, e.g. app@127.0.0.1")
    parser.add_argument("--cookie", help="the cluster's cookie (default: $BEAMISH_COOKIE, then ~/.erlang.cookie)")
    parser.add_argument("--name", help="this shell's own node name (default: remsh_<pid>@<the node's host>)")


def _shell(args: argparse.Namespace) -> int:
    from .dist import shell

    return shell.remsh(args.remsh, cookie=args.cookie, name=args.name)


SUBCOMMANDS: dict[str, Subcommand] = {
    "cluster": Subcommand(
        "run N local nodes of one application, supervised, until SIGINT/SIGTERM",
        local_cluster.add_arguments,
        _cluster,
    ),
    "run": Subcommand(
        "boot a node and run an application until SIGINT/SIGTERM (SIGHUP reloads its configuration)",
        _add_run_arguments,
        _run,
    ),
    "node": Subcommand(
        "run a distributed node that joins Erlang/Elixir/beamish clusters",
        _node_cli.add_arguments,
        _node_cli.main,
    ),
    "shell": Subcommand(
        "a Python REPL evaluating inside a running node (--remsh NODE; the node runs with --shell)",
        _add_shell_arguments,
        _shell,
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    # First, before anything slow: a SIGTERM, SIGINT or SIGHUP from here on
    # is a request the subcommand serves, never a death or a traceback.
    OS_SIGNALS.install()
    parser = argparse.ArgumentParser(prog="beamish", description="Erlang/OTP's process model in Python.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in SUBCOMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return SUBCOMMANDS[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
