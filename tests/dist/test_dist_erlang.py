"""A beamish node in a cluster with real Erlang and Elixir nodes, both ways:
ping, send, registered send, GenServer calls, links and monitors with kills
and node deaths, rpc, large and compressed messages, many concurrent calls.

One Erlang node serves the whole module (starting one costs about a second);
each test starts its own beamish node, with a unique name, as the test's
first process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import subprocess
import threading
from collections.abc import Iterator

import pytest
from tests.interop.erlang import HOST, ErlNode, erl_eval, erl_node, erl_run, require, unique_name

import beamish
from beamish import Atom, From, GenServer, Pid, Reply, dist
from beamish.dist import flags, rpc
from beamish.dist.framing import MessageTooLarge
from beamish.terms import Term
from beamish.testing import ANY, assert_receive, wait_for_exit

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def erl() -> Iterator[ErlNode]:
    require("erl")
    with erl_node("erl") as node:
        yield node


async def start_node(erl: ErlNode, **options: Term) -> Atom:
    """Make the test's node distributed with the Erlang node's cookie."""
    await dist.start(cookie=erl.cookie, **options)
    return dist.node()


def py_name() -> str:
    return f"{unique_name('py')}@{HOST}"


async def erl_do(node: str, code: str) -> Term:
    """Evaluate Erlang `code` (expressions ending in a value) on `node`,
    through our own rpc: erl_scan, erl_parse, erl_eval."""
    ok, tokens, _ = await rpc.call(node, "erl_scan", "string", [[ord(c) for c in code]], timeout=10)
    assert ok == "ok", tokens
    ok, exprs = await rpc.call(node, "erl_parse", "parse_exprs", [tokens], timeout=10)
    assert ok == "ok", exprs
    value, result, _ = await rpc.call(node, "erl_eval", "exprs", [exprs, []], timeout=10)
    assert value == "value"
    return result


# --- connecting -------------------------------------------------------------


@pytest.mark.beamish(name=py_name())
async def test_beamish_pings_erlang_and_sees_it_in_nodes(erl: ErlNode) -> None:
    await start_node(erl)
    assert await dist.ping(erl.name) == "pong"
    assert Atom(erl.name) in dist.nodes()
    assert await rpc.call(erl.name, "erlang", "node", []) == Atom(erl.name)


@pytest.mark.beamish(name=py_name())
async def test_erlang_pings_beamish(erl: ErlNode) -> None:
    me = await start_node(erl)
    out = await erl_run(f"io:format(\"~p~n\", [net_adm:ping('{me}')]), halt().", erl.cookie)
    assert out.strip() == "pong"


@pytest.mark.beamish(name=py_name())
async def test_wrong_cookie_is_refused_both_ways_and_nothing_crashes(erl: ErlNode) -> None:
    me = await start_node(erl)
    wrong = "not" + erl.cookie
    code = f"io:format(\"~p~n\", [net_adm:ping('{me}')]), halt()."
    out = await beamish.to_thread(functools.partial(erl_eval, code, name=unique_name("bad"), cookie=wrong))
    assert out.strip() == "pang"
    with erl_node("badcookie", cookie=wrong) as other:
        assert await dist.ping(other.name) == "pang"
        assert Atom(other.name) not in dist.nodes()
    # Both sides still work.
    assert await dist.ping(erl.name) == "pong"


@pytest.mark.beamish
async def test_a_running_node_is_named_at_runtime_and_its_earlier_processes_are_reached(erl: ErlNode) -> None:
    # The seed's DistributedExample: Node.start(name) on a running node, then
    # Node.set_cookie(cookie). Erlang's net_kernel:start/1 makes every local
    # pid the named node's: so must ours, the first process's included.
    async def echo() -> None:
        while True:
            match await beamish.receive():
                case (Pid() as sender, msg):
                    beamish.send(sender, ("echo", msg))

    before = beamish.spawn_link(echo)  # made while the node is nonode@nohost
    name = py_name()
    await dist.start(name, cookie="not" + erl.cookie)
    assert dist.set_cookie(erl.cookie) is True
    assert dist.node() == name and beamish.self().node == name and before.node == name
    await rpc.call(erl.name, "erlang", "send", [before, (beamish.self(), Atom("hi"))], timeout=10)
    assert await assert_receive(("echo", "hi"), timeout=5) == ("echo", Atom("hi"))
    assert await rpc.call(erl.name, "erlang", "node", [before], timeout=10) == Atom(name)


@pytest.mark.beamish(name=py_name())
async def test_set_cookie_for_one_node_connects_to_it_with_that_cookie(erl: ErlNode) -> None:
    await dist.start(cookie="not" + erl.cookie)
    assert dist.get_cookie() == "not" + erl.cookie
    assert dist.set_cookie(erl.name, erl.cookie) is True  # erlang:set_cookie(Node, Cookie)
    assert dist.get_cookie(erl.name) == erl.cookie
    assert await dist.ping(erl.name) == "pong"


@pytest.mark.beamish
async def test_set_cookie_needs_a_distributed_node() -> None:
    with pytest.raises(beamish.Exit, match="distribution_not_started"):
        dist.set_cookie("c")


# --- messages ---------------------------------------------------------------


@pytest.mark.beamish(name=py_name())
async def test_send_to_a_registered_erlang_process_and_get_the_reply(erl: ErlNode) -> None:
    await start_node(erl)
    await erl_do(
        erl.name,
        "catch unregister(echo), register(echo, spawn(fun Loop() -> "
        "receive {From, Msg} -> From ! {echo, Msg}, Loop() end end)), ok.",
    )
    me = beamish.self()
    payload = (1, 2.5, -(2**70), [b"bin", Atom("atom")], {"key": [1, 2]}, me, beamish.make_ref())
    beamish.send((Atom("echo"), Atom(erl.name)), (me, payload))
    _, back = await assert_receive(("echo", ANY), timeout=5)
    # str goes out as a binary and comes back as bytes: the documented mapping.
    assert back == (1, 2.5, -(2**70), [b"bin", Atom("atom")], {b"key": [1, 2]}, me, payload[-1])


@pytest.mark.beamish(name=py_name())
async def test_erlang_sends_to_a_registered_beamish_process(erl: ErlNode) -> None:
    me = await start_node(erl)
    beamish.register("inbox", beamish.self())
    await erl_do(erl.name, f"{{inbox, '{me}'}} ! {{hello, self(), <<\"from erlang\">>}}, ok.")
    _, pid, text = await assert_receive(("hello", Pid, ANY), timeout=5)
    assert pid.node == erl.name and text == b"from erlang"


@pytest.mark.beamish(name=py_name())
async def test_large_and_compressed_messages_cross_intact(erl: ErlNode) -> None:
    await start_node(erl)
    await erl_do(
        erl.name,
        "catch unregister(big), register(big, spawn(fun Loop() -> "
        "receive {From, Bin} -> From ! {size, byte_size(Bin), erlang:md5(Bin)}, "
        "From ! {back, binary_to_term(term_to_binary(Bin, [compressed]))}, Loop() end end)), ok.",
    )
    import hashlib
    import os

    blob = os.urandom(1024) * 2048  # 2 MiB, compressible
    beamish.send((Atom("big"), Atom(erl.name)), (beamish.self(), blob))
    _, size, digest = await assert_receive(("size", int, bytes), timeout=10)
    assert size == len(blob) and digest == hashlib.md5(blob).digest()
    _, back = await assert_receive(("back", bytes), timeout=10)
    assert back == blob


@pytest.mark.beamish(name=py_name())
async def test_erlang_fragments_large_messages_and_they_arrive_whole(erl: ErlNode) -> None:
    """Both nodes agree on FRAGMENTS, so OTP splits a message whose encoding
    passes 64 KiB into fragments (a list of integers; a large binary would
    travel whole), and two processes sending at once interleave theirs."""
    me = await start_node(erl)
    beamish.register("inbox", beamish.self())
    await erl_do(
        erl.name,
        f"Big = lists:seq(1, 200000), {{inbox, '{me}'}} ! small, "
        f"[spawn(fun() -> {{inbox, '{me}'}} ! {{big, N, Big}} end) || N <- [1, 2]], ok.",
    )
    expected = list(range(1, 200_001))
    got = {}
    for _ in range(2):
        _, n, numbers = await assert_receive(("big", int, list), timeout=10)
        got[n] = numbers
    assert got == {1: expected, 2: expected}
    await assert_receive("small", timeout=5)
    conn = dist.kernel().conns[Atom(erl.name)]
    assert conn.flags & dist.kernel().flags & flags.FRAGMENTS  # so OTP did fragment
    # What we send back goes behind a DIST_HEADER, which erts requires then.
    assert await rpc.call(erl.name, "erlang", "length", [expected], timeout=10) == 200_000


@pytest.mark.beamish(name=py_name())
async def test_a_70_mb_message_from_erlang_arrives_by_default(erl: ErlNode) -> None:
    """The issue's case: over the old 64 MiB frame cap, well under the
    default max_message (0.7 s and 180 MB of RSS for the whole test)."""
    me = await start_node(erl)
    beamish.register("inbox", beamish.self())
    await erl_do(erl.name, f"{{inbox, '{me}'}} ! {{big, binary:copy(<<7>>, 70000000)}}, ok.")
    _, blob = await assert_receive(("big", bytes), timeout=20)
    assert len(blob) == 70_000_000 and blob.count(7) == 70_000_000


@pytest.mark.beamish(name=py_name())
async def test_max_message_holds_both_ways_and_a_peer_over_it_is_a_warning(
    erl: ErlNode, caplog: pytest.LogCaptureFixture
) -> None:
    """One limit, both ways: our send over `max_message` raises in the
    sender (connected or not yet); a peer's message over it (here in
    fragments; a whole frame: test_dist_beamish) closes that connection
    with a WARNING naming the peer, and its links and monitors fire
    noconnection, so that no message is lost unseen."""
    me = await start_node(erl, max_message=1 << 20)
    beamish.register("inbox", beamish.self())
    pid = await erl_do(erl.name, "spawn(fun() -> receive stop -> ok end end).")
    await erl_do(erl.name, f"{{inbox, '{me}'}} ! {{under, lists:seq(1, 100000)}}, ok.")
    await assert_receive(("under", list), timeout=10)
    with pytest.raises(MessageTooLarge, match="over max_message=1048576"):
        beamish.send(pid, bytes(2 << 20))
    with pytest.raises(MessageTooLarge):
        beamish.send((Atom("inbox"), Atom(f"{unique_name('nowhere')}@{HOST}")), bytes(2 << 20))
    assert await dist.ping(erl.name) == "pong"
    ref = beamish.monitor(pid)
    with contextlib.suppress(rpc.BadRpc):  # its reply may be lost with the connection
        await erl_do(erl.name, f"{{inbox, '{me}'}} ! {{over, lists:seq(1, 400000)}}, ok.")
    await assert_receive(("DOWN", ref, "process", pid, "noconnection"), timeout=10)
    warnings = [r for r in caplog.records if r.name == "beamish.dist" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and erl.name in warnings[0].getMessage()
    assert "fragmented messages of" in warnings[0].getMessage()
    await erl_do(erl.name, f"{{inbox, '{me}'}} ! again, ok.")  # reconnected
    await assert_receive("again", timeout=5)


# --- GenServer calls both ways ----------------------------------------------


class KV(GenServer):
    def init(self, _: Term) -> dict[Term, Term]:
        return {}

    def handle_call(self, request: Term, from_: From, state: dict[Term, Term]) -> Reply:
        match request:
            case ("put", k, v):
                return Reply(Atom("ok"), {**state, k: v})
            case ("get", k):
                return Reply(state.get(k), state)
        return Reply(("unknown", request), state)


@pytest.mark.beamish(name=py_name())
async def test_beamish_calls_an_erlang_gen_server(erl: ErlNode) -> None:
    me = await start_node(erl)
    assert await GenServer.call((Atom("net_kernel"), Atom(erl.name)), (Atom("is_auth"), me)) == "yes"
    apps = await GenServer.call((Atom("application_controller"), Atom(erl.name)), Atom("which_applications"))
    assert any(app[0] == "kernel" for app in apps)
    # Many concurrent calls, from 200 processes at once.
    async def caller(n: int) -> None:
        got = await rpc.call(erl.name, "erlang", "abs", [-n])
        beamish.send(parent, ("result", n, got))

    parent = beamish.self()
    for n in range(200):
        beamish.spawn(caller, n)
    seen = {(await assert_receive(("result", int, int), timeout=10))[1] for _ in range(200)}
    assert seen == set(range(200))


@pytest.mark.beamish(name=py_name())
async def test_erlang_calls_a_beamish_gen_server(erl: ErlNode) -> None:
    me = await start_node(erl)
    await KV.start_link(None, name="kv")
    got = await erl_do(
        erl.name,
        f"ok = gen_server:call({{kv, '{me}'}}, {{put, a, <<\"one\">>}}), gen_server:call({{kv, '{me}'}}, {{get, a}}).",
    )
    assert got == b"one"
    # A call to a name nobody has: noproc, promptly.
    got = await erl_do(erl.name, f"catch gen_server:call({{nobody, '{me}'}}, hi, 2000).")
    assert got[0] == "EXIT" and got[1][0] == "noproc"


@pytest.mark.beamish(name=py_name())
async def test_elixir_calls_a_beamish_gen_server(erl: ErlNode) -> None:
    require("elixir")
    me = await start_node(erl)
    await KV.start_link(None, name="kv")
    script = (
        f':ok = GenServer.call({{:kv, :"{me}"}}, {{:put, :lang, "elixir"}}); '
        f'IO.inspect(GenServer.call({{:kv, :"{me}"}}, {{:get, :lang}}))'
    )
    command = ["elixir", "--name", f"{unique_name('ex')}@{HOST}", "--cookie", erl.cookie, "-e", script]
    done = await beamish.to_thread(functools.partial(subprocess.run, command, capture_output=True, text=True, timeout=60))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '"elixir"'


@pytest.mark.beamish(name=py_name())
async def test_erlang_calls_with_a_hand_built_plain_ref_from_and_gets_its_reply(erl: ErlNode) -> None:
    # gen:reply's third clause: {To, Tag} with a plain ref sends {Tag, Reply}
    # to the pid. An Erlang process that builds the call itself (as pre-24
    # OTP and third-party clients do) must get its reply.
    me = await start_node(erl)
    await KV.start_link(None, name="kv")
    got = await erl_do(
        erl.name,
        f"Ref = make_ref(), {{kv, '{me}'}} ! {{'$gen_call', {{self(), Ref}}, {{put, a, 1}}}}, "
        "receive {Ref, R} -> {got, R} after 5000 -> no_reply end.",
    )
    assert got == ("got", "ok")


@pytest.mark.beamish(name=py_name())
async def test_a_late_reply_from_an_erlang_server_is_dropped_after_a_timeout(erl: ErlNode) -> None:
    # beamish's From carries [alias | Ref], so OTP's gen:reply answers the
    # alias, and once the call has timed out the reply finds no alias.
    await start_node(erl)
    server = await erl_do(
        erl.name,
        "spawn(fun() -> receive {'$gen_call', {Pid, _} = From, _} -> "
        "timer:sleep(200), gen:reply(From, late), Pid ! replied end end).",
    )
    with pytest.raises(beamish.Exit) as info:
        await GenServer.call(server, "slow", timeout=0.05)
    assert info.value.reason == "timeout"
    # The reply left before `replied`, on the same connection.
    await assert_receive("replied", timeout=5)
    assert not beamish.process.current().mailbox


# --- links and monitors -----------------------------------------------------


@pytest.mark.beamish(name=py_name())
async def test_monitor_an_erlang_process_and_see_it_killed(erl: ErlNode) -> None:
    await start_node(erl)
    pid = await erl_do(erl.name, "spawn(fun() -> receive stop -> ok end end).")
    assert type(pid) is Pid
    ref = beamish.monitor(pid)
    beamish.exit(pid, "kill")
    await assert_receive(("DOWN", ref, "process", pid, "killed"), timeout=5)
    # Monitoring it again: noproc.
    ref2 = beamish.monitor(pid)
    await assert_receive(("DOWN", ref2, "process", pid, "noproc"), timeout=5)


@pytest.mark.beamish(name=py_name())
async def test_links_carry_exits_both_ways(erl: ErlNode) -> None:
    await start_node(erl)
    beamish.process_flag("trap_exit", True)
    # An Erlang process that links to us and dies with a reason.
    me = beamish.self()
    erl_pid = await erl_do(
        erl.name,
        "spawn(fun() -> receive {link_to, P} -> link(P), P ! linked, receive die -> exit(boom) end end end).",
    )
    assert type(erl_pid) is Pid
    beamish.send(erl_pid, (Atom("link_to"), me))
    await assert_receive("linked", timeout=5)
    beamish.send(erl_pid, Atom("die"))
    await assert_receive(("EXIT", erl_pid, "boom"), timeout=5)

    # Our process linked to an Erlang one: we crash, it dies with our reason.
    watcher = await erl_do(
        erl.name,
        "spawn(fun() -> process_flag(trap_exit, true), "
        "receive {link_to, P, ReplyTo} -> link(P), ReplyTo ! linked, "
        "receive {'EXIT', P, R} -> ReplyTo ! {erlang_saw, R} end end end).",
    )

    async def doomed() -> None:
        await beamish.receive(lambda m: m == "crash")
        raise beamish.Exit("from_python")

    victim = beamish.spawn(doomed)
    beamish.send(watcher, (Atom("link_to"), victim, me))
    await assert_receive("linked", timeout=5)
    beamish.send(victim, "crash")
    await assert_receive(("erlang_saw", "from_python"), timeout=5)


@pytest.mark.beamish(name=py_name())
async def test_erlang_monitors_a_beamish_process(erl: ErlNode) -> None:
    await start_node(erl)
    me = beamish.self()
    target = beamish.spawn(beamish.receive)
    watcher = await erl_do(
        erl.name,
        "spawn(fun() -> receive {watch, P, ReplyTo} -> Ref = monitor(process, P), ReplyTo ! watching, "
        "receive {'DOWN', Ref, process, P, R} -> ReplyTo ! {down, R} end end end).",
    )
    beamish.send(watcher, (Atom("watch"), target, me))
    await assert_receive("watching", timeout=5)
    beamish.exit(target, "kill")
    await assert_receive(("down", "killed"), timeout=5)


@pytest.mark.beamish(name=py_name())
async def test_node_death_gives_noconnection_and_nodedown() -> None:
    with erl_node("doomed") as erl:
        await start_node(erl)
        dist.monitor_nodes(True)
        pid = await erl_do(erl.name, "spawn(fun() -> receive stop -> ok end end).")
        await assert_receive(("nodeup", Atom(erl.name)), timeout=5)
        ref = beamish.monitor(pid)
        beamish.process_flag("trap_exit", True)
        beamish.link(pid)
        erl.proc.kill()
        await assert_receive(("DOWN", ref, "process", pid, "noconnection"), timeout=10)
        await assert_receive(("EXIT", pid, "noconnection"), timeout=5)
        await assert_receive(("nodedown", Atom(erl.name)), timeout=5)
        assert Atom(erl.name) not in dist.nodes()
        with pytest.raises(rpc.BadRpc):
            await rpc.call(erl.name, "erlang", "node", [], timeout=5)


@pytest.mark.beamish(name=py_name())
async def test_calls_monitors_links_and_rpc_to_a_dead_node_fail_at_once() -> None:
    """As between two Erlang nodes: once a node is gone, every later signal
    to it fails as soon as the connection attempt does (the timeouts below
    are far longer than that: reaching one would be the bug)."""
    with erl_node("gone") as erl:
        await start_node(erl)
        dist.monitor_nodes(True)
        pid = await erl_do(erl.name, "spawn(fun() -> receive stop -> ok end end).")
        erl.proc.kill()
        await assert_receive(("nodedown", Atom(erl.name)), timeout=10)
    ref = beamish.monitor(pid)
    await assert_receive(("DOWN", ref, "process", pid, "noconnection"), timeout=10)
    beamish.process_flag("trap_exit", True)
    beamish.link(pid)
    await assert_receive(("EXIT", pid, "noconnection"), timeout=10)
    with pytest.raises(beamish.Exit) as by_name:
        await GenServer.call(("kv", erl.name), ("get", "k"), timeout=30)
    assert by_name.value.reason == ("nodedown", Atom(erl.name))
    with pytest.raises(beamish.Exit) as by_pid:
        await GenServer.call(pid, ("get", "k"), timeout=30)
    assert by_pid.value.reason == ("nodedown", Atom(erl.name))
    with pytest.raises(rpc.BadRpc) as bad:
        await rpc.call(erl.name, "erlang", "node", [], timeout=30)
    assert bad.value.reason == "nodedown"


@pytest.mark.beamish(name=py_name())
async def test_a_peer_that_stops_answering_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """A frozen Erlang node (SIGSTOP): no tick for net_ticktime, and the
    connection goes with one ERROR naming the node and the tick time, as
    net_kernel's "** Node X not responding **"."""
    import os
    import signal

    with erl_node("frozen") as erl:
        await start_node(erl, ticktime=1.0)
        dist.monitor_nodes(True)
        assert await dist.ping(erl.name) == "pong"
        os.kill(erl.proc.pid, signal.SIGSTOP)
        try:
            await assert_receive(("nodedown", Atom(erl.name)), timeout=10)
        finally:
            os.kill(erl.proc.pid, signal.SIGCONT)
    lines = [r for r in caplog.records if r.name == "beamish.dist" and erl.name in r.getMessage()]
    gone = [r for r in lines if "not responding" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.ERROR and "1.0 s" in gone[0].getMessage()


# --- rpc both ways ----------------------------------------------------------


@pytest.mark.beamish(name=py_name())
async def test_erlang_rpc_calls_allowed_python_and_is_refused_otherwise(erl: ErlNode) -> None:
    me = await start_node(erl, rpc_allow=["math"])
    code = (
        f"io:format(\"~p~n~p~n~p~n~p~n\", [rpc:call('{me}', math, sqrt, [16.0]), "
        f"erpc:call('{me}', math, pow, [2.0, 10.0]), "
        f"rpc:call('{me}', os, getcwd, []), "
        f"rpc:call('{me}', math, sqrt, [-1.0])]), halt()."
    )
    lines = (await erl_run(code, erl.cookie)).split("\n")
    assert lines[0] == "4.0"
    assert lines[1] == "1024.0"
    assert lines[2].startswith("{badrpc,{'EXIT',{undef")  # not allow-listed: as if undefined
    assert lines[3].startswith("{badrpc,{'EXIT',{{python,'ValueError'")


@pytest.mark.beamish(name=py_name())
async def test_an_allowed_module_exposes_its_own_functions_not_its_imports(erl: ErlNode) -> None:
    """tests/dist/rpc_targets.py imports subprocess.getoutput: allowing the
    module must not let Erlang run a shell command through it."""
    me = await start_node(erl, rpc_allow=["tests.dist.rpc_targets"], spawn_allow=["tests.dist.rpc_targets"])
    m = "'tests.dist.rpc_targets'"
    code = (
        f"io:format(\"~p~n~p~n~p~n\", [rpc:call('{me}', {m}, double, [21]), "
        f"rpc:call('{me}', {m}, getoutput, [<<\"echo pwned\">>]), "
        f"catch erpc:call('{me}', {m}, getoutput, [<<\"echo pwned\">>])]), halt()."
    )
    lines = (await erl_run(code, erl.cookie)).split("\n")
    assert lines[0] == "42"
    assert lines[1].startswith("{badrpc,{'EXIT',{undef")
    assert lines[2].startswith("{'EXIT',{{exception,undef")


@pytest.mark.beamish(name=py_name())
async def test_wait_for_exit_of_a_remote_process(erl: ErlNode) -> None:
    await start_node(erl)
    pid = await erl_do(erl.name, "spawn(fun() -> receive stop -> exit(done) end end).")
    beamish.send(pid, Atom("stop"))
    assert await wait_for_exit(pid, timeout=5) in ("done", "noproc")


def test_a_restarted_node_never_receives_messages_for_its_old_incarnation(erl: ErlNode) -> None:
    name = py_name()

    async def first() -> Term:
        await start_node(erl)
        me = beamish.self()
        # Erlang keeps our pid; we then go away.
        await erl_do(
            erl.name,
            "catch unregister(keeper), register(keeper, spawn(fun() -> (fun Loop(P) -> "
            "receive {keep, NewP} -> Loop(NewP); {fire, Msg} -> P ! Msg, Loop(P) end end)(none) end)), ok.",
        )
        beamish.send((Atom("keeper"), Atom(erl.name)), (Atom("keep"), me))
        await dist.ping(erl.name)
        return me

    old = beamish.run(first, name=name)

    async def second() -> Term:
        await start_node(erl)
        me = beamish.self()
        assert (me.node, me.id) == (old.node, old.id) and me.creation != old.creation
        beamish.send((Atom("keeper"), Atom(erl.name)), (Atom("fire"), "for the old incarnation"))
        await dist.ping(erl.name)  # the keeper has handled our message by the time ping returns
        # Erlang does deliver to a pid of the new creation: prove the path works.
        beamish.send((Atom("keeper"), Atom(erl.name)), (Atom("keep"), me))
        beamish.send((Atom("keeper"), Atom(erl.name)), (Atom("fire"), "for me"))
        return await beamish.receive(timeout=5)

    assert beamish.run(second, name=name) == b"for me"


@pytest.mark.beamish(name=py_name())
async def test_a_remote_spawn_with_link_is_atomic(erl: ErlNode) -> None:
    """As `spawn_link(Node, erlang, exit, [boom])` between two Erlang nodes:
    the requester (not trapping exits) dies with `boom`, every time, however
    the spawn reply and the exit signal race."""

    async def spawner() -> None:
        await dist.spawn(erl.name, "erlang:exit", Atom("boom"), link=True)
        await beamish.receive()  # until the link's exit ends us

    await start_node(erl)
    for _ in range(20):
        assert await wait_for_exit(beamish.spawn(spawner), timeout=5) == "boom"


def greet(name: bytes) -> None:
    """Spawned here by an Erlang node (allow-listed in the test below)."""
    beamish.send("inbox", ("hello", name))


@pytest.mark.beamish(name=py_name())
async def test_erlang_spawns_allowed_functions_here_and_is_refused_others(erl: ErlNode) -> None:
    me = await start_node(erl, spawn_allow=["tests.dist.test_dist_erlang:greet"])  # a process: on the loop
    beamish.register("inbox", beamish.self())
    code = (
        f"R1 = erlang:spawn_request('{me}', 'tests.dist.test_dist_erlang', greet, [<<\"erl\">>], [monitor]), "
        "Ok = receive {spawn_reply, R1, ok, P} -> {ok, node(P)} after 5000 -> timeout end, "
        "Down = receive {'DOWN', R1, process, _, Reason} -> Reason after 5000 -> no_down end, "
        f"R2 = erlang:spawn_request('{me}', os, getcwd, [], []), "
        "Refused = receive {spawn_reply, R2, error, E} -> E after 5000 -> timeout end, "
        "io:format(\"~p~n\", [{Ok, Down, Refused}]), halt()."
    )
    out = await erl_run(code, erl.cookie)
    assert out.strip() == f"{{{{ok,'{me}'}},normal,notsup}}"
    await assert_receive(("hello", b"erl"), timeout=5)


@pytest.mark.beamish(name=py_name())
async def test_a_blocking_rpc_target_holds_a_pool_thread_not_the_node(erl: ErlNode) -> None:
    """The issue's case: a synchronous rpc target that blocks (here until
    this process, which needs the loop, releases it: on the loop it never
    could) runs in the node's thread pool, as does a spawned one listed
    `@pool`; an `async def` target and an `@loop` entry run on the loop."""
    from tests.dist import rpc_targets

    rpc_targets.STARTED.clear()
    rpc_targets.RELEASE.clear()
    m = "'tests.dist.rpc_targets'"
    me = await start_node(
        erl,
        rpc_allow=["tests.dist.rpc_targets", "tests.dist.rpc_targets:loop_thread_id@loop"],
        spawn_allow=["tests.dist.rpc_targets:record_thread@pool"],
    )
    code = (
        f"io:format(\"~p~n~p~n~p~n~p~n\", [rpc:call('{me}', {m}, held_until_released, []), "
        f"rpc:call('{me}', {m}, thread_id, []), rpc:call('{me}', {m}, loop_thread_id, []), "
        f"erpc:call('{me}', {m}, async_thread_id, [])]), "
        f"spawn('{me}', {m}, record_thread, [spawned]), halt()."
    )
    test = beamish.self()

    async def run_erl() -> None:
        beamish.send(test, ("out", await erl_run(code, erl.cookie)))

    beamish.spawn(run_erl)
    for _ in range(2000):  # bounded: until the target runs
        if rpc_targets.STARTED.is_set():
            break
        await asyncio.sleep(0.01)
    rpc_targets.RELEASE.set()
    _, out = await assert_receive(("out", str), timeout=30)
    held, pooled, on_loop, async_on_loop = out.split()
    loop_thread = threading.get_ident()
    assert held == "true"
    assert int(pooled) != loop_thread and int(on_loop) == loop_thread and int(async_on_loop) == loop_thread
    for _ in range(500):
        if "spawned" in rpc_targets.THREADS:
            break
        await asyncio.sleep(0.01)
    assert rpc_targets.THREADS["spawned"] != loop_thread


@pytest.mark.beamish(name=py_name())
async def test_erlang_casts_here_and_spawning_a_missing_function_exits_undef(erl: ErlNode) -> None:
    """rpc:cast and erpc:cast (erpc:execute_cast via spawn_request) run an
    allowed function; spawning a function the allowed module lacks gives a
    pid that exits `{undef, [MFA]}`, as an Erlang node answers."""
    m = "'tests.dist.rpc_targets'"
    me = await start_node(erl, rpc_allow=["tests.dist.rpc_targets@loop"], spawn_allow=["tests.dist.rpc_targets"])
    beamish.register("inbox", beamish.self())
    code = (
        f"true = rpc:cast('{me}', {m}, tell, [inbox, {{via, rpc}}]), "
        f"ok = erpc:cast('{me}', {m}, tell, [inbox, {{via, erpc}}]), "
        f"R = erlang:spawn_request('{me}', {m}, nosuch, [1], [monitor]), "
        "Res = receive {spawn_reply, R, ok, P} -> receive {'DOWN', R, process, P, Why} -> Why "
        "after 5000 -> no_down end; {spawn_reply, R, error, E} -> {error, E} after 5000 -> timeout end, "
        "io:format(\"~p~n\", [Res]), halt()."
    )
    out = await erl_run(code, erl.cookie)
    assert out.strip() == "{undef,[{'tests.dist.rpc_targets',nosuch,[1],[]}]}"
    await assert_receive(("via", "rpc"), timeout=5)
    await assert_receive(("via", "erpc"), timeout=5)


@pytest.mark.beamish(name=py_name())
async def test_two_beamish_nodes_and_an_erlang_node_in_one_cluster(erl: ErlNode) -> None:
    me = await start_node(erl)
    other = py_name()
    ready, done = asyncio.Event(), asyncio.Event()

    async def other_main() -> None:
        await dist.start(cookie=erl.cookie)
        await KV.start(None, name="kv_b")
        ready.set()
        await done.wait()
        await dist.stop()

    other_node = asyncio.ensure_future(beamish.Node(other).run(other_main))
    try:
        await ready.wait()
        dist.monitor_nodes()
        # Erlang writes into the other beamish node; we read it back directly.
        await erl_do(erl.name, f"ok = gen_server:call({{kv_b, '{other}'}}, {{put, from, erlang}}), ok.")
        assert await GenServer.call(("kv_b", other), ("get", "from")) == Atom("erlang")
        # Each node sees both others.
        assert {Atom(erl.name), Atom(other)} <= set(dist.nodes())
        seen = await erl_do(erl.name, "nodes().")
        assert {Atom(me), Atom(other)} <= set(seen)
        # One beamish node leaves: we and Erlang both see it go; Erlang still answers.
        done.set()
        await other_node
        await assert_receive(("nodedown", other), timeout=10)
        assert await dist.ping(erl.name) == "pong"
        assert Atom(other) not in await erl_do(erl.name, "nodes().")
    finally:
        done.set()
        await asyncio.wait_for(other_node, 10)


def test_short_names_work_both_ways() -> None:
    """`erl -sname` nodes (name@host, host without dots) and a beamish node
    named the same way: ping, and an Erlang process answering a send."""
    import socket

    erl = require("erl")
    host = socket.gethostname()
    short = unique_name("short")
    cookie = "c" + unique_name("k")
    code = (
        "register(echo, self()), "
        "receive {From, M} -> From ! {echo, M} end, "
        "receive stop -> halt() after 20000 -> halt() end."
    )
    proc = subprocess.Popen(
        [erl, "-noshell", "-sname", short, "-setcookie", cookie, "-eval", code],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    async def main() -> Term:
        await dist.start(cookie=cookie)
        peer = f"{short}@{host}"
        for _ in range(100):  # until the Erlang node is up
            if await dist.ping(peer) == "pong":
                break
            await asyncio.sleep(0.1)
        # Its -eval registers `echo` after the node is up (pong): a send to a
        # name not registered yet is dropped, as in Erlang, so ask until it is.
        for _ in range(100):
            beamish.send((Atom("echo"), Atom(peer)), (beamish.self(), "short"))
            try:
                got = await beamish.receive(timeout=0.1)
                break
            except TimeoutError:
                continue
        beamish.send((Atom("echo"), Atom(peer)), Atom("stop"))
        return got

    try:
        assert beamish.run(main, name=f"{unique_name('py')}@{host}") == (Atom("echo"), b"short")
    finally:
        proc.kill()
        proc.wait()

