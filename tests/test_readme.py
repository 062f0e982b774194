"""Every ```python block of README.md runs as written, as doctests run the
docstrings: a program is run as a program, a test file under pytest, a
fragment with top-level `await` inside a node (as `python -m asyncio` runs
it), each with the peer it talks to (an Elixir node, certificates) started
by its test. Node names are made unique per run; nothing else is changed."""

from __future__ import annotations

import ast
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.interop.erlang import HOST, ensure_epmd, require, unique_name
from tests.interop.pki import make_pki

import beamish
from beamish import dist

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

# One line of each block, to find it by; a new block needs a test here.
TASTE = "class Counter(GenServer):\n    def init(self, start):"
APPLICATION = "class MyApp(Application):"
TESTING = "async def test_the_server_says_it_started"
CLUSTER = 'beamish.run(main, name="py@127.0.0.1")'
TLS = "tls=dist.TlsOptions("
GLOBAL = "await global_.register_name(Atom(\"leader\")"
BREAKER = "from beamish import CircuitBreaker, CircuitOpen"
PUBSUB = 'PubSub.subscribe("MyApp.PubSub", "room:lobby")'


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, re.DOTALL | re.MULTILINE)


def block(marker: str, lang: str = "python") -> str:
    [found] = [b for b in blocks(lang) if marker in b]
    return found


def test_every_python_block_has_its_test_here() -> None:
    markers = [TASTE, APPLICATION, TESTING, CLUSTER, TLS, GLOBAL, BREAKER, PUBSUB]
    for b in blocks("python"):
        assert sum(m in b for m in markers) == 1, f"a README block no test here runs:\n{b}"
    assert len(blocks("python")) == len(markers)


def _python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_a_taste_shows_the_count() -> None:
    done = _python(block(TASTE))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "5\n"


def test_the_breaker_block_opens_after_three_failures() -> None:
    done = _python(block(BREAKER))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "failed\nfailed\nfailed\nuser service down, next try in 30 s\nopen\n"


def test_the_application_block_defines_my_app() -> None:
    done = _python(block(APPLICATION) + "\nassert MyApp.config_schema is MyAppConfig and MyApp.name == 'my_app'\n")
    assert done.returncode == 0, done.stderr


def test_the_testing_block_passes_under_pytest(tmp_path: Path) -> None:
    test_file = tmp_path / "test_readme_block.py"
    test_file.write_text(block(TESTING))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), str(test_file)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


# The Elixir end of the cluster block: the `kv` server it calls, then, once
# the Python node's counter answers, the README's Elixir lines, each printed.
_ELIXIR = """
defmodule KV do
  use GenServer
  def init(m), do: {:ok, m}
  def handle_call({:get, k}, _from, m), do: {:reply, Map.get(m, k), m}
end
{:ok, _} = GenServer.start_link(KV, %{a: 1}, name: :kv)
IO.puts("ready")
counter_up = fn ->
  try do
    GenServer.call({:counter, :"PY"}, :get, 1000)
    true
  catch
    :exit, _ -> false
  end
end
# a bounded poll: 20 s at most
Enum.find(1..400, fn _ -> counter_up.() or (Process.sleep(50) && false) end) || System.halt(3)
for line <- String.split(File.read!("LINES"), "\\n", trim: true) do
  {value, _} = Code.eval_string(line)
  IO.inspect(value)
end
System.halt(0)
"""


@pytest.mark.interop
def test_the_cluster_blocks_talk_to_a_live_elixir_node(tmp_path: Path) -> None:
    elixir = require("elixir")
    ensure_epmd()
    py, ex = f"{unique_name('readme_py')}@{HOST}", f"{unique_name('readme_ex')}@{HOST}"

    def named(text: str) -> str:
        return text.replace("py@127.0.0.1", py).replace("elixir@127.0.0.1", ex)

    lines = tmp_path / "lines.exs"
    lines.write_text(named(block("Node.ping", "elixir")))
    script = _ELIXIR.replace('"PY"', f'"{py}"').replace("LINES", str(lines))
    peer = subprocess.Popen(
        [elixir, "--name", ex, "--cookie", "secret", "-e", script],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert peer.stdout is not None
        assert peer.stdout.readline().strip() == "ready"
        done = _python(named(block(CLUSTER)))  # returns when the Elixir node leaves
        assert done.returncode == 0, done.stderr
        assert done.stdout == "1\nb'HI'\n"
        out, _ = peer.communicate(timeout=30)
        assert peer.returncode == 0, out
        assert out.split() == [":pong", "0", "4.0"], out
    finally:
        peer.kill()
        peer.communicate()


@pytest.mark.interop
def test_the_tls_block_starts_a_node_over_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = make_pki(tmp_path)
    for ext in ("pem", "key"):
        shutil.copy(pki.dir / f"node.{ext}", tmp_path / f"py.{ext}")
    monkeypatch.chdir(tmp_path)
    code = compile(block(TLS), "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

    async def main() -> bool:
        result = eval(code, {"dist": dist})  # the README's own code
        if inspect.iscoroutine(result):
            await result
        try:
            return dist.kernel().tls_server is not None
        finally:
            await dist.stop()

    assert beamish.run(main, name=f"{unique_name('readme_tls')}@{HOST}")


@pytest.mark.interop
def test_the_global_blocks_share_names_with_an_erlang_node() -> None:
    """The Python block runs on a beamish node (its last value is the
    trans's), then the Erlang block's lines on a real Erlang node."""
    from tests.cluster.pynodes import erl_eval
    from tests.interop.erlang import erl_node, new_cookie

    from beamish.cluster.global_ import sync as global_sync

    code = compile(block(GLOBAL), "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    last = ast.parse(block(GLOBAL)).body[-1]
    assert isinstance(last, ast.Expr)
    erlang = [line.split("%")[0].strip() for line in block("gen_server:call({global, counter}", "erlang").splitlines()]
    cookie = new_cookie()
    with erl_node("readme_gl", cookie=cookie) as e:

        async def main() -> tuple[object, ...]:
            await dist.start(cookie=cookie)
            try:
                assert await dist.ping(e.name) == "pong"
                await global_sync()  # the two nodes have exchanged their names
                scope: dict[str, object] = {"dist": dist}
                result = eval(code, scope)  # the README's own code
                if inspect.iscoroutine(result):
                    await result
                trans = await eval(compile(ast.Expression(last.value), "README.md", "eval", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT), scope)
                from_erlang = [await erl_eval(e.name, line) for line in erlang if line]
                return trans, *from_erlang
            finally:
                await dist.stop()

        trans, count, leader = beamish.run(main, name=f"{unique_name('readme_gl_py')}@{HOST}")
        assert trans == "updated" and count == 0 and isinstance(leader, beamish.Pid)


def test_the_pubsub_block_delivers_to_its_subscriber() -> None:
    code = compile(block(PUBSUB), "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

    async def main() -> object:
        result = eval(code, {})  # the README's own code
        if inspect.iscoroutine(result):
            await result
        return await beamish.receive(timeout=5)

    assert beamish.run(main) == ("new_msg", "hello")
