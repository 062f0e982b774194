"""Real Erlang/Elixir nodes for interop tests.

Each test starts its own nodes with unique names and a per-test cookie on
loopback (`-name x@127.0.0.1`), waits for them with bounded polls, and kills
them by pid in a finalizer. When `erl` is missing the tests skip locally, but
fail in CI (`CI=true`): interop must never silently disappear there.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

HOST = "127.0.0.1"
_counter = itertools.count()


def require(tool: str = "erl") -> str:
    """Return the path of `tool`; skip the test locally, fail it in CI, if missing."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{tool} is not installed, and interop tests may not skip in CI")
        pytest.skip(f"{tool} is not installed (make test installs Debian's erlang and elixir)")
    return path


def unique_name(prefix: str) -> str:
    """A node short name unique to this test run: `prefix_<pid>_<n>`."""
    return f"{prefix}_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"


def new_cookie() -> str:
    return "c" + uuid.uuid4().hex


def ensure_epmd() -> None:
    """Start the system's epmd daemon (idempotent) and wait until it answers."""
    epmd = require("epmd")
    # On loopback, as beamish starts it (`epmd._daemon_env`): tests open no port to the network.
    subprocess.run([epmd, "-daemon"], check=True, env={**os.environ, "ERL_EPMD_ADDRESS": os.environ.get("ERL_EPMD_ADDRESS", "127.0.0.1")})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if subprocess.run([epmd, "-names"], capture_output=True).returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError("epmd did not start within 10 s")


def erl_eval(code: str, *, name: str | None = None, cookie: str | None = None,
             timeout: float = 60.0, extra: Sequence[str] = ()) -> str:
    """Run `erl -noshell -eval code` to completion and return its stdout.

    `code` must end by calling `halt().` itself. With `name`, the node is
    distributed as `name@127.0.0.1` with `cookie`.
    """
    erl = require("erl")
    args = [erl, "-noshell"]
    if name is not None:
        ensure_epmd()
        args += ["-name", f"{name}@{HOST}", "-setcookie", cookie or new_cookie()]
    args += [*extra, "-eval", code]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"erl exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    return done.stdout


async def erl_run(code: str, cookie: str, extra: Sequence[str] = ()) -> str:
    """`erl_eval` of `code` on a fresh, short-lived Erlang node, from inside a
    beamish process: in a thread, so the calling node keeps answering it."""
    import beamish

    return await beamish.to_thread(
        functools.partial(erl_eval, code, name=unique_name("probe"), cookie=cookie, extra=extra)
    )


@dataclass
class ErlNode:
    """A running Erlang (or Elixir) node started for one test."""

    name: str  # the full node name, name@127.0.0.1
    cookie: str
    proc: subprocess.Popen[str]

    def eval(self, code: str, timeout: float = 30.0) -> str:
        """Evaluate `code` (an expression list ending in a value) on this node via
        a short-lived helper node and `rpc:call`; return the value formatted with ~p."""
        helper = unique_name("probe")
        escaped = code.replace("\\", "\\\\").replace('"', '\\"')
        out = erl_eval(
            "{ok, Toks, _} = erl_scan:string(\"" + escaped + "\"),"
            "{ok, Exprs} = erl_parse:parse_exprs(Toks),"
            f"R = rpc:call('{self.name}', erl_eval, exprs, [Exprs, []]),"
            "case R of {value, V, _} -> io:format(\"~p~n\", [V]); Other -> io:format(\"~p~n\", [Other]) end,"
            "halt().",
            name=helper,
            cookie=self.cookie,
            timeout=timeout,
            # Hidden: the probe must not join the cluster under test (global
            # would mesh it with every node, and sync with it).
            extra=["-hidden"],
        )
        return out.strip()


@contextmanager
def erl_node(prefix: str = "erl", *, cookie: str | None = None, elixir: bool = False,
             extra: Sequence[str] = ()) -> Iterator[ErlNode]:
    """Start a distributed Erlang (or, with `elixir=True`, Elixir) node that stays
    up until the block ends; wait until it is registered in epmd."""
    ensure_epmd()
    short = unique_name(prefix)
    full = f"{short}@{HOST}"
    cookie = cookie or new_cookie()
    if elixir:
        exe = require("elixir")
        args = [exe, "--name", full, "--cookie", cookie, *extra, "-e", "Process.sleep(:infinity)"]
    else:
        exe = require("erl")
        args = [exe, "-noshell", "-name", full, "-setcookie", cookie, *extra]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            names = subprocess.run(["epmd", "-names"], capture_output=True, text=True).stdout
            if f"name {short} at port" in names:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"node {full} exited early: {proc.stdout.read() if proc.stdout else ''}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {full} did not register in epmd within 30 s")
            time.sleep(0.05)
        yield ErlNode(full, cookie, proc)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
