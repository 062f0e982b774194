"""`beamish shell --remsh`: a REPL in a pseudo-terminal (pexpect) evaluating
inside a `beamish node --shell` OS process, and refused by a node without it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pexpect
import pytest
from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

ROOT = Path(__file__).resolve().parent.parent.parent


@contextmanager
def node(*extra: str) -> Iterator[tuple[str, str]]:
    ensure_epmd()
    name, cookie = f"{unique_name('shellnode')}@{HOST}", new_cookie()
    proc = subprocess.Popen(
        [sys.executable, "-m", "beamish", "node", "--name", name, "--cookie", cookie, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "up on" in proc.stdout.readline()
        yield name, cookie
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def shell(name: str, cookie: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable, ["-m", "beamish", "shell", "--remsh", name, "--cookie", cookie],
        cwd=str(ROOT), encoding="utf-8", timeout=20,
    )  # fmt: skip


def test_a_remote_shell_evaluates_in_the_node_with_await_and_names_kept() -> None:
    with node("--shell") as (name, cookie):
        repl = shell(name, cookie)
        try:
            prompt = f"{name}> "
            repl.expect_exact("beamish remote shell on")
            repl.expect_exact(prompt)
            repl.sendline("str(dist.node())")
            repl.expect_exact(f"'{name}'")
            repl.expect_exact(prompt)
            repl.sendline("answer = await GenServer.call('beamish_shell', ('nonsense',))")
            repl.expect_exact(prompt)
            repl.sendline("answer")
            repl.expect_exact("no such session")
            repl.expect_exact(prompt)
            # A block over several lines, print routed here, and an error's traceback.
            repl.sendline("for i in range(2):")
            repl.sendline("    print('line', i)")
            repl.sendline("")
            repl.expect_exact("line 0")
            repl.expect_exact("line 1")
            repl.expect_exact(prompt)
            repl.sendline("1 / 0")
            repl.expect_exact("ZeroDivisionError")
            repl.expect_exact(prompt)
            repl.sendline("await top(3)")
            repl.expect_exact("messages_handled")
            repl.expect_exact(prompt)
            repl.sendeof()
            repl.expect(pexpect.EOF)
        finally:
            repl.close(force=True)
        assert repl.exitstatus == 0


def test_a_node_without_the_shell_service_refuses() -> None:
    with node() as (name, cookie):
        repl = shell(name, cookie)
        try:
            repl.expect_exact("refused a shell")
            repl.expect(pexpect.EOF)
        finally:
            repl.close(force=True)
        assert repl.exitstatus == 1


def test_a_wrong_cookie_gets_no_shell() -> None:
    with node("--shell") as (name, _):
        repl = shell(name, "wrong" + new_cookie())
        try:
            repl.expect_exact("cannot connect")
            repl.expect(pexpect.EOF)
        finally:
            repl.close(force=True)
        assert repl.exitstatus == 1


@pytest.mark.parametrize("source, whole", [("x = 1", True), ("if x:", False), ("await f()", True), ("def f(:", True)])
def test_complete(source: str, whole: bool) -> None:
    from beamish.dist.shell import complete

    assert complete(source) is whole
