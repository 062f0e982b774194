"""`beamish node`: a distributed node that runs until SIGINT/SIGTERM (even
one that comes while it starts; SIGHUP is ignored).

The CLI (`beamish.cli`) registers `add_arguments` and `main` as its `node`
subcommand; this module is the part that knows about distribution.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .._os_signals import OS_SIGNALS
from ..node import Node, _loop_factory
from . import _api
from .tls import TlsOptions

log = logging.getLogger("beamish.dist")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="the node's name, e.g. py@127.0.0.1")
    parser.add_argument("--cookie", help="the cluster's cookie (default: $BEAMISH_COOKIE, then ~/.erlang.cookie)")
    parser.add_argument("--listen", default="127.0.0.1", help="address to accept connections on (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    parser.add_argument(
        "--rpc-allow",
        action="append",
        default=[],
        metavar="MODULE",
        help="a Python module (or module:function) peers may rpc; repeatable; none by default",
    )
    parser.add_argument(
        "--spawn-allow",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="a function peers may spawn (Node.spawn); repeatable; none by default",
    )
    parser.add_argument("--connect", action="append", default=[], metavar="NODE", help="connect to NODE at start")
    parser.add_argument("--tls-cert", metavar="PEM", help="distribute over TLS with this certificate (inet_tls_dist)")
    parser.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (default: in --tls-cert)")
    parser.add_argument("--tls-ca", metavar="PEM", help="authorities peers' certificates must chain to")
    parser.add_argument(
        "--shell", action="store_true",
        help="let peers with the cookie open a remote Python shell here (beamish shell --remsh)",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Run the node until a signal asks it to stop; leave the cluster cleanly."""
    node = Node(args.name)

    async def start() -> None:
        await _api.start(
            cookie=args.cookie,
            listen=args.listen,
            port=args.port,
            rpc_allow=args.rpc_allow,
            spawn_allow=args.spawn_allow,
            tls=TlsOptions(args.tls_cert, args.tls_key, args.tls_ca) if args.tls_cert else None,
        )
        if args.shell:
            from .shell import serve

            await serve()
        for peer in args.connect:
            if not await _api.connect(peer):
                log.warning("could not connect to %s", peer)
        print(f"node {node.name} up on {args.listen}:{_api.kernel().port}", flush=True)

    async def serve() -> int:
        try:
            started = await OS_SIGNALS.unless_stopped(start())
        except OSError as exc:
            # EpmdError (a name taken) and a port in use are the user's to fix:
            # one line naming the node, not a crash report and a traceback.
            print(f"beamish node: cannot start {node.name}: {exc}; {REMEDY}", file=sys.stderr, flush=True)
            return 1
        if started:
            await OS_SIGNALS.stopped()
        print(f"node {node.name} leaving the cluster", flush=True)
        await _api.stop()
        return 0

    with asyncio.Runner(loop_factory=_loop_factory(None)) as runner:
        code: int = runner.run(node.run(serve))
    return code


REMEDY = "stop the node that has that name or port, or choose another --name (or --port)"
