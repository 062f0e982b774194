"""Distribution over TLS (inet_tls_dist): beamish <-> beamish and beamish <->
a real Erlang node started with `-proto_dist inet_tls`, with mutual
certificate checks; untrusted certificates and plain-TCP peers refused
while the node carries on."""

from __future__ import annotations

import asyncio
import functools
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.interop import beamish_nodes
from tests.interop.erlang import HOST, ErlNode, ensure_epmd, erl_node, erl_run, new_cookie, require, unique_name
from tests.interop.pki import Pki, make_pki

import beamish
from beamish import Atom, From, GenServer, Node, Pid, Reply, dist
from beamish.dist import TlsOptions, rpc
from beamish.terms import Term
from beamish.testing import assert_receive

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Echo(GenServer):
    def init(self, _: Term) -> None:
        return None

    def handle_call(self, request: Term, from_: From, state: None) -> Reply:
        return Reply((Atom("echo"), request), state)


def py_name() -> str:
    return f"{unique_name('tls')}@{HOST}"


def is_tls(peer: str) -> bool:
    conn = dist.kernel().conns[Atom(peer)]
    return conn.stream.writer.get_extra_info("ssl_object") is not None


# --- beamish <-> beamish --------------------------------------------------------


def two_nodes(pki: Pki, client_tls: TlsOptions | None, client: Callable[[Atom], Awaitable[Term]], use_uvloop: bool = False) -> Term:
    """A TLS node serving `echo`, and a client node with `client_tls`."""

    async def server() -> None:
        await Echo.start(None, name="echo")

    return beamish_nodes.two_nodes(server, client, use_uvloop, {"tls": client_tls}, tls=pki.node("node"))


# uvloop has its own TLS transport: a connection swaps its protocol there too.
@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_beamish_nodes_talk_over_tls(pki: Pki, use_uvloop: bool) -> None:
    async def client(a: Atom) -> Term:
        assert await dist.ping(a) == "pong"
        assert is_tls(a)
        big = "x" * 300_000  # many TLS records: a frame collected chunk by chunk
        assert await GenServer.call(("echo", a), big) == ("echo", big)
        return await GenServer.call(("echo", a), "over tls")

    assert two_nodes(pki, pki.node("other"), client, use_uvloop) == ("echo", "over tls")


def test_a_certificate_from_another_authority_is_refused_and_the_node_survives(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    rogue = TlsOptions(str(pki.dir / "rogue.pem"), str(pki.dir / "rogue.key"), str(pki.dir / "rogue_trusts.pem"))

    async def client(a: Atom) -> Term:
        first = await dist.ping(a)
        # The server survived: a trusted node still gets in.
        return first, await _ping_from_fresh_node(a, pki.node("other"))

    assert two_nodes(pki, rogue, client) == ("pang", "pong")
    assert "TLS handshake failed" in caplog.text


def test_a_plain_tcp_node_cannot_connect_to_a_tls_node(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async def client(a: Atom) -> Term:
        return await dist.ping(a)

    assert two_nodes(pki, None, client) == "pang"
    assert "TLS handshake failed" in caplog.text


async def _ping_from_fresh_node(peer: Atom, tls: TlsOptions) -> str:
    cookie = dist.kernel().options.cookie

    async def main() -> str:
        await dist.start(cookie=cookie, tls=tls)
        try:
            return await dist.ping(peer)
        finally:
            await dist.stop()

    result = await Node(py_name()).run(main)
    assert isinstance(result, str)
    return result


# --- beamish <-> Erlang ----------------------------------------------------------


@pytest.fixture(scope="module")
def erl_tls(pki: Pki) -> Iterator[ErlNode]:
    require("erl")
    with erl_node("erltls", extra=pki.erl_args("erl")) as node:
        yield node


async def erl_run_tls(pki: Pki, code: str, cookie: str, tls: bool = True) -> str:
    """Run `code` on a short-lived Erlang node (over TLS unless told not)."""
    return await erl_run(code, cookie, pki.erl_args("probe") if tls else ())


@pytest.mark.beamish(name=py_name())
async def test_beamish_and_erlang_talk_both_ways_over_tls(pki: Pki, erl_tls: ErlNode) -> None:
    await dist.start(cookie=erl_tls.cookie, tls=pki.node("node"))
    me = dist.node()
    # beamish -> Erlang: ping and rpc over TLS.
    assert await dist.ping(erl_tls.name) == "pong"
    assert is_tls(erl_tls.name)
    assert await rpc.call(erl_tls.name, "erlang", "node", []) == Atom(erl_tls.name)
    # Erlang -> beamish: net_adm:ping, a registered send and a GenServer call.
    beamish.register("inbox", beamish.self())
    await Echo.start(None, name="echo")
    out = await erl_run_tls(
        pki,
        f"io:format(\"~p~n\", [net_adm:ping('{me}')]), "
        f"{{inbox, '{me}'}} ! {{hello, self()}}, "
        f"io:format(\"~p~n\", [gen_server:call({{echo, '{me}'}}, <<\"from erlang\">>)]), halt().",
        erl_tls.cookie,
    )
    assert out.split() == ["pong", '{echo,<<"from', 'erlang">>}']
    await assert_receive(("hello", Pid), timeout=5)


@pytest.mark.beamish(name=py_name())
async def test_a_plain_erlang_node_cannot_reach_a_tls_beamish_node(pki: Pki, erl_tls: ErlNode) -> None:
    await dist.start(cookie=erl_tls.cookie, tls=pki.node("node"))
    me = dist.node()
    out = await erl_run_tls(pki, f"io:format(\"~p~n\", [net_adm:ping('{me}')]), halt().", erl_tls.cookie, tls=False)
    assert out.strip() == "pang"
    # ... while a TLS Erlang node still can.
    out = await erl_run_tls(pki, f"io:format(\"~p~n\", [net_adm:ping('{me}')]), halt().", erl_tls.cookie)
    assert out.strip() == "pong"
