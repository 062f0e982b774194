"""The `beamish` command line: `beamish node ...` (also `python -m beamish`).

>>> from beamish import cli
>>> sorted(cli.SUBCOMMANDS)
['node']

Each subcommand is an entry of `SUBCOMMANDS`: a help line, a function that
adds its arguments, and the function that runs it (returning the exit code).
`beamish node --name py@127.0.0.1 --cookie secret --rpc-allow math` runs a
distributed node until SIGINT/SIGTERM, then leaves the cluster cleanly.

OTP: mirrors `erl -name ... -setcookie ...` for a node that only serves.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .dist import _node_cli

__all__ = ["SUBCOMMANDS", "Subcommand", "main"]


class Subcommand(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {
    "node": Subcommand(
        "run a distributed node that joins Erlang/Elixir/beamish clusters",
        _node_cli.add_arguments,
        _node_cli.main,
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
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
