"""A third-party distribution client nobody here wrote: erldistpy 0.1.7, a
strict, blocking, socket-based client (EPMD, the v6 handshake, gen_server
calls). Its `Node.call` takes the first message after the handshake as the
reply and refuses anything else, so it also proves that a beamish node sends
nothing a peer did not ask for.
"""

from __future__ import annotations

import erldistpy
import pytest
from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

import beamish
from beamish import Atom, From, GenServer, Reply, dist
from beamish.terms import Term

pytestmark = pytest.mark.interop  # needs an epmd (the system's, or our embedded one)


class Echo(GenServer):
    def init(self, _: Term) -> int:
        return 0

    def handle_call(self, request: Term, from_: From, n: int) -> Reply:
        return Reply((Atom("echo"), n + 1, request), n + 1)


@pytest.mark.beamish(name=f"{unique_name('edp')}@{HOST}")
async def test_erldistpy_calls_a_registered_gen_server() -> None:
    ensure_epmd()
    cookie = new_cookie()
    await dist.start(cookie=cookie)
    await Echo.start(None, name="echo")
    alive = str(dist.node()).partition("@")[0]

    def client() -> list[object]:
        node = erldistpy.Node(our_name=f"{unique_name('client')}@{HOST}", peer_name=alive, cookie=cookie, peer_host=HOST)
        with node:
            return [node.call("echo", (erldistpy.Atom("ping"), i), timeout=5) for i in range(3)]

    replies = await beamish.to_thread(client)
    atom = erldistpy.Atom
    assert replies == [(atom("echo"), i + 1, (atom("ping"), i)) for i in range(3)]
