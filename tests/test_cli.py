"""`python -m beamish node`: a node started from the command line joins the
cluster, answers rpc for its allow-list, and leaves cleanly on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.interop.erlang import HOST, ensure_epmd, new_cookie, unique_name

import beamish
from beamish import dist
from beamish.dist import rpc


@pytest.mark.interop
def test_node_command_serves_rpc_and_stops_on_sigterm() -> None:
    ensure_epmd()
    cookie = new_cookie()
    name = f"{unique_name('cli')}@{HOST}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "beamish", "node", "--name", name, "--cookie", cookie, "--rpc-allow", "math"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"node {name} up"), first + (proc.stderr.read() if proc.stderr else "")

        async def client() -> object:
            await dist.start(cookie=cookie)
            got = await rpc.call(name, "math", "sqrt", [16.0], timeout=5)
            with pytest.raises(rpc.BadRpc):
                await rpc.call(name, "os", "getcwd", [], timeout=5)
            return got

        assert beamish.run(client, name=f"{unique_name('cliclient')}@{HOST}") == 4.0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "leaving the cluster" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.interop
@pytest.mark.parametrize("second_command", ["node", "run"])
def test_a_node_name_already_taken_is_one_line_and_exit_code_1(second_command: str) -> None:
    ensure_epmd()
    name = f"{unique_name('taken')}@{HOST}"
    command = [sys.executable, "-m", "beamish", "node", "--name", name, "--cookie", new_cookie()]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if second_command == "run":
        command = [sys.executable, "-m", "beamish", "run", "examples.my_app:MyApp", "--name", name, "--cookie", "c"]
    try:
        assert first.stdout is not None and first.stdout.readline().startswith(f"node {name} up")
        second = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT)
    finally:
        first.kill()
        first.communicate()
    lines = second.stderr.splitlines()
    assert second.returncode == 1 and len(lines) == 1, second.stderr
    assert f"cannot start {name}" in lines[0] and "is taken" in lines[0] and "another --name" in lines[0]


def test_help_lists_the_node_subcommand() -> None:
    done = subprocess.run([sys.executable, "-m", "beamish", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "node" in done.stdout
    done = subprocess.run([sys.executable, "-m", "beamish", "node"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--name" in done.stderr


# --- beamish run -------------------------------------------------------------

MY_APP_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "my_app" / "config"
ROOT = MY_APP_CONFIG.parent.parent.parent


def _run_app(config_dir: Path, env: str = "test", *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "beamish", "-v", "run", "examples.my_app:MyApp", "--config", str(config_dir), "--env", env, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def _my_app_config(tmp_path: Path, files: dict[str, str] | None = None) -> Path:
    """A copy of examples/my_app's configuration, with `files` (name -> text) written over it."""
    config_dir = tmp_path / "config"
    shutil.copytree(MY_APP_CONFIG, config_dir)
    for name, text in (files or {}).items():
        (config_dir / name).write_text(text)
    return config_dir


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=10)
        raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
    return line.strip()


def _stderr_until(proc: subprocess.Popen[str], text: str) -> str:
    """What the process wrote to stderr up to the line containing `text`."""
    assert proc.stderr is not None
    seen = ""
    while text not in seen:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"{text!r} never written; stderr was:\n{seen}")
        seen += line
    return seen


def test_run_boots_the_application_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path) -> None:
    config_dir = _my_app_config(tmp_path)
    proc = _run_app(config_dir)
    try:
        assert _line(proc) == "beamish: my_app started on nonode@nohost (env test)"
        (config_dir / "test.toml").write_text("[my_app]\nlog_level = 'info'\n[my_app.Worker]\nbatch_size = 3\ninterval = 0.05\n")
        proc.send_signal(signal.SIGHUP)
        assert _line(proc) == "beamish: configuration reloaded; changed: my_app"
        (config_dir / "test.toml").write_text("[my_app]\npool_size = 'many'\n")
        proc.send_signal(signal.SIGHUP)
        err = _stderr_until(proc, "configuration not reloaded")
        assert "config_change: changed=['Worker', 'log_level'] new=[] removed=[]" in err
        assert f"{config_dir / 'test.toml'}:2: my_app.pool_size: expected int" in _stderr_until(proc, "pool_size")
        proc.send_signal(signal.SIGTERM)
        assert _line(proc) == "beamish: stopped my_app"
        proc.communicate(timeout=10)
        assert proc.returncode == 0
    finally:
        proc.kill()
        proc.communicate()  # also closes the pipes


def test_run_refuses_to_boot_on_a_bad_configuration(tmp_path: Path) -> None:
    config_dir = _my_app_config(tmp_path, {"prod.toml": "[my_app]\npool_size = 50\n\n[my_app.Worker]\nbatch_size = 'lots'\ninterval = 1\n"})
    proc = _run_app(config_dir, "prod")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 78, err
    assert "started" not in out
    assert f"{config_dir / 'prod.toml'}:5: my_app.Worker.batch_size: expected int, got 'lots'" in err


def test_run_with_a_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    config_dir = _my_app_config(tmp_path, {"runtime.toml": "[my_app]\napi_key = \n"})
    proc = _run_app(config_dir, "dev")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 78
    assert f"{config_dir / 'runtime.toml'}:2: syntax:" in err


class Fragile(beamish.Application):
    """Its top process dies on its own shortly after boot."""

    name = "fragile"

    def start(self, start_type: object, args: object) -> beamish.Pid:
        async def doomed() -> None:
            await beamish.receive(timeout=0.2)  # nothing comes: TimeoutError ends it

        return beamish.spawn_link(doomed)


def test_run_halts_with_exit_code_1_when_its_permanent_application_dies() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "beamish", "run", "tests.test_cli:Fragile"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    out, err = proc.communicate(timeout=30)
    assert "beamish: fragile started" in out
    assert proc.returncode == 1, err
    assert "node halted: ('application_terminated', 'fragile'" in err


# --- signals while `beamish run` starts (beamish._os_signals) -----------------


class Ready(beamish.Application):
    """Starts at once: what an orderly stop during SlowStart's start stops."""

    name = "ready"

    def start(self, start_type: object, args: object) -> beamish.Pid:
        return beamish.spawn(beamish.receive)


class SlowStart(beamish.Application):
    """Its start says so, then never ends: the node is still starting."""

    name = "slow_start"
    applications = (Ready,)

    async def start(self, start_type: object, args: object) -> beamish.Pid:
        print("slow_start: starting", flush=True)
        await beamish.receive()
        raise AssertionError("unreachable: nothing is sent to the application master")


def _run_until(line: str, app: str, stdin: int | None = None) -> subprocess.Popen[str]:
    """`beamish run app`, once it has written `line`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "beamish", "run", app],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, HOLD_IMPORT="1"),
    )
    got = _line(proc)
    assert got == line, got
    return proc


@pytest.mark.parametrize(
    "signals", [(signal.SIGTERM,), (signal.SIGINT,), (signal.SIGHUP, signal.SIGTERM)], ids=["term", "int", "hup-term"]
)
def test_a_signal_while_an_application_starts_is_an_orderly_stop(signals: tuple[signal.Signals, ...]) -> None:
    # erl: `kill -TERM` while -eval runs -> "SIGTERM received - shutting down", status 0.
    proc = _run_until("slow_start: starting", "tests.test_cli:SlowStart")
    try:
        for sig in signals:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out == "beamish: stopped ready\n", out
        assert "Traceback" not in err, err
    finally:
        proc.kill()
        proc.communicate()


def test_sigterm_during_the_application_import_stops_before_booting() -> None:
    proc = _run_until("cli_slow_import: importing", "tests.cli_slow_import:Quiet", stdin=subprocess.PIPE)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate("go on\n", timeout=30)
        assert proc.returncode == 0, err
        assert out == "beamish: stopped \n", out
    finally:
        proc.kill()
        proc.communicate()


# --- an application that cannot be imported ------------------------------------


def test_a_cluster_of_a_module_that_does_not_exist_is_one_line_not_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "beamish", "cluster", "my_app.application:MyApp", "--nodes", "2"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"beamish: cannot import my_app.application: no module named 'my_app' here ({ROOT}) or on PYTHONPATH"
    ]


def test_a_missing_optional_dependency_names_the_extra_to_install() -> None:
    # `None` in sys.modules is how Python itself marks a module absent: the
    # import raises ModuleNotFoundError as if pydantic were not installed.
    code = "import sys; sys.modules['pydantic'] = None; from beamish.cli import main; sys.exit(main(['run', 'examples.my_app:MyApp']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "beamish: cannot import examples.my_app: it needs pydantic, an optional dependency: pip install 'beamish[config]'"
    ]


def test_an_application_class_that_does_not_exist_is_one_line_not_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "beamish", "run", "examples.my_app:NoSuchClass"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "beamish: cannot run examples.my_app:NoSuchClass: examples.my_app has no Application class 'NoSuchClass'"
    ]
