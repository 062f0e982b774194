"""The Application behaviour: start/stop, dependencies, restart types, env,
configuration loading and reload with config_change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path

import pytest
from tests.config_fixtures import MyApp as MyAppConfig
from tests.config_fixtures import write

import beamish
from beamish import Application, ApplicationError, GenServer, Node, Reply, Supervisor, application
from beamish.config import ConfigError
from beamish.terms import Pid, Term
from beamish.testing import eventually, wait_for_exit

events: list[Term] = []


@pytest.fixture(autouse=True)
def _clear_events() -> None:
    events.clear()


class Worker(GenServer):
    def init(self, tag: Term) -> Term:
        beamish.process_flag("trap_exit", True)  # so terminate runs on shutdown, as in OTP
        events.append(("worker_init", tag))
        return tag

    def handle_call(self, request: Term, from_: beamish.From, state: Term) -> Reply:
        return Reply(state, state)

    def terminate(self, reason: Term, state: Term) -> None:
        events.append(("worker_terminate", state, reason))


def tree_app(app_name: str, *, deps: tuple[str | type[Application], ...] = ()) -> type[Application]:
    """An application whose tree is one supervised Worker registered as
    `<name>_worker`, recording its callbacks in `events`."""

    class App(Application):
        name = app_name
        version = "1.2.3"
        description = f"the {app_name} app"
        applications = deps
        env = {"pool_size": 10}
        start_args = ("arg",)

        async def start(self, start_type: Term, args: Term) -> Pid:
            events.append(("start", app_name, start_type, args))
            return await Supervisor.start_link(
                [Worker.child_spec(app_name)], strategy="one_for_one", name=f"{app_name}_sup"
            )

        def prep_stop(self) -> None:
            events.append(("prep_stop", app_name))

        def stop(self) -> None:
            events.append(("stop", app_name))

    return App


async def _worker_of(sup: str) -> Pid:
    ((_, pid, _, _),) = await Supervisor.which_children(sup)
    assert isinstance(pid, Pid)
    return pid


async def on_fresh_node(main: Callable[[], Coroutine[object, object, Term]]) -> Term:
    """Run `main` as the first process of another node in this loop (a halt
    ends that node, not the test's)."""
    return await Node(lag_threshold=None).run(main)


async def test_start_runs_the_tree_and_stop_shuts_it_down_in_order() -> None:
    App = tree_app("shop")
    await application.start(App)
    assert application.which_applications() == [("shop", "the shop app", "1.2.3")]
    assert events == [("start", "shop", "normal", ("arg",)), ("worker_init", "shop")]
    sup = beamish.whereis("shop_sup")
    assert sup is not None
    await application.stop("shop")
    assert events[2:] == [("prep_stop", "shop"), ("worker_terminate", "shop", "shutdown"), ("stop", "shop")]
    assert not beamish.is_alive(sup)
    assert application.which_applications() == []


async def test_starting_twice_or_stopping_what_is_not_running_is_refused() -> None:
    App = tree_app("once")
    await application.start(App)
    with pytest.raises(ApplicationError) as info:
        await application.start(App)
    assert info.value.reason == ("already_started", "once")
    await application.stop(App)
    with pytest.raises(ApplicationError) as info:
        await application.stop("once")
    assert info.value.reason == ("not_started", "once")
    with pytest.raises(ApplicationError) as info:
        await application.start("never_loaded")
    assert info.value.reason == ("not_loaded", "never_loaded")


async def test_start_needs_dependencies_running_and_ensure_all_started_starts_them_first() -> None:
    Db = tree_app("db")
    Cache = tree_app("cache", deps=(Db,))
    Web = tree_app("web", deps=(Cache, "db"))
    with pytest.raises(ApplicationError) as info:
        await application.start(Web)
    assert info.value.reason == ("not_started", "cache")
    assert await application.ensure_all_started(Web) == ["db", "cache", "web"]
    assert [e[1] for e in events if e[0] == "start"] == ["db", "cache", "web"]
    assert [name for name, _, _ in application.which_applications()] == ["web", "cache", "db"]
    assert await application.ensure_all_started(Web) == []
    assert await application.stop_all() == ["web", "cache", "db"]
    assert [e[1] for e in events if e[0] == "stop"] == ["web", "cache", "db"]


async def test_ensure_all_started_stops_what_it_started_when_one_fails() -> None:
    Db = tree_app("db2")

    class Broken(Application):
        name = "broken"
        applications = (Db,)

        def start(self, start_type: Term, args: Term) -> Pid:
            raise RuntimeError("no database url")

    with pytest.raises(ApplicationError) as info:
        await application.ensure_all_started(Broken)
    assert info.value.app == "broken"
    assert isinstance(info.value.reason, RuntimeError)
    assert application.which_applications() == []
    assert ("stop", "db2") in events


async def test_a_start_that_returns_no_pid_is_refused_with_bad_return() -> None:
    class Odd(Application):
        name = "odd"

        def start(self, start_type: Term, args: Term) -> Pid:
            return "not a pid"  # type: ignore[return-value]

    with pytest.raises(ApplicationError) as info:
        await application.start(Odd)
    assert info.value.reason == ("bad_return", ("start", "not a pid"))


async def test_circular_dependencies_are_reported() -> None:
    class A(Application):
        name = "a"
        applications = ("b",)

    class B(Application):
        name = "b"
        applications = (A,)

    application.load(A)
    with pytest.raises(ApplicationError) as info:
        await application.ensure_all_started(B)
    assert info.value.reason == ("circular_dependencies", ["b", "a", "b"])


async def test_a_library_application_has_env_and_no_processes() -> None:
    class Lib(Application):
        name = "lib"
        env = {"colour": "blue"}

    procs = len(beamish.registered())
    await application.start(Lib)
    assert application.get_env("lib", "colour") == "blue"
    assert application.which_applications() == [("lib", "", "")]
    await application.stop(Lib)
    assert application.which_applications() == []
    assert len(beamish.registered()) == procs + 1  # the controller, no tree


async def test_concurrent_starts_of_one_application_start_it_once() -> None:
    App = tree_app("busy")
    outcomes: list[Term] = []
    me = beamish.self()

    async def starter() -> None:
        try:
            await application.start(App)
            beamish.send(me, "ok")
        except ApplicationError as exc:
            beamish.send(me, exc.reason)

    beamish.spawn(starter)
    beamish.spawn(starter)
    outcomes = [await beamish.receive(timeout=5), await beamish.receive(timeout=5)]
    assert sorted(map(str, outcomes)) == sorted(["ok", str(("already_started", "busy"))])
    assert [e for e in events if e[0] == "start"] == [("start", "busy", "normal", ("arg",))]


async def test_a_temporary_application_that_dies_is_only_reported(caplog: pytest.LogCaptureFixture) -> None:
    App = tree_app("temp")
    await application.start(App, "temporary")
    sup = beamish.whereis("temp_sup")
    assert sup is not None
    beamish.exit(sup, "kill")
    await wait_for_exit(sup)
    await eventually(lambda: not application.which_applications())
    assert ("stop", "temp") in events
    assert "application temp exited: " in caplog.text and "killed" in caplog.text


async def test_a_permanent_application_that_dies_halts_the_node_after_stopping_the_others() -> None:
    Other = tree_app("other")
    Perm = tree_app("perm")

    async def main() -> None:
        await application.start(Other)
        await application.start(Perm, "permanent")
        for _ in range(4):  # past the supervisor's intensity (3 in 5 s): it exits `shutdown`
            worker = await _worker_of("perm_sup")
            beamish.exit(worker, "kill")
            await wait_for_exit(worker)
        await beamish.receive()  # the halt ends this node while we wait

    with pytest.raises(beamish.Exit) as info:
        await on_fresh_node(main)
    assert info.value.reason == ("application_terminated", "perm", "shutdown")
    assert ("stop", "other") in events
    assert ("worker_terminate", "other", "shutdown") in events


async def test_a_transient_application_halts_the_node_only_on_an_abnormal_exit() -> None:
    async def normal_exit() -> Term:
        await application.start(tree_app("calm"), "transient")
        sup = beamish.whereis("calm_sup")
        assert sup is not None
        await Supervisor.stop(sup)  # reason normal
        await eventually(lambda: not application.which_applications())
        return "still running"

    assert await on_fresh_node(normal_exit) == "still running"

    async def abnormal_exit() -> None:
        await application.start(tree_app("twitchy"), "transient")
        sup = beamish.whereis("twitchy_sup")
        assert sup is not None
        beamish.exit(sup, "kill")
        await beamish.receive()

    with pytest.raises(beamish.Exit) as info:
        await on_fresh_node(abnormal_exit)
    assert info.value.reason == ("application_terminated", "twitchy", "killed")


async def test_env_get_fetch_put_delete() -> None:
    App = tree_app("envy")
    application.load(App)
    assert application.get_env("envy", "pool_size") == 10
    assert application.get_env(App, "missing", "dflt") == "dflt"
    with pytest.raises(KeyError, match=r"envy.*missing"):
        application.fetch_env("envy", "missing")
    application.put_env("envy", "missing", 1)
    assert application.fetch_env("envy", "missing") == 1
    assert application.get_all_env("envy") == {"pool_size": 10, "missing": 1}
    application.delete_env("envy", "missing")
    assert application.get_all_env("envy") == {"pool_size": 10}
    assert application.loaded_applications() == [("envy", "the envy app", "1.2.3")]


class Configured(Application):
    name = "configured"
    config_schema = MyAppConfig
    changes: list[Term] = []

    async def start(self, start_type: Term, args: Term) -> Pid:
        return await Supervisor.start_link([], strategy="one_for_one")

    def config_change(self, changed: dict[str, Term], new: dict[str, Term], removed: list[str]) -> None:
        Configured.changes.append((changed, new, removed))


async def test_configuration_is_validated_before_anything_starts(tmp_path: Path) -> None:
    write(tmp_path, "config.toml", "[configured]\npool_size = 10\n\n[configured.Worker]\nbatch_size = 'many'\n")
    application.load_config(tmp_path, env="dev")
    with pytest.raises(ConfigError) as info:
        await application.ensure_all_started(Configured)
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.key) == (tmp_path / "config.toml", 5, "configured.Worker.batch_size")
    assert problem.message.startswith("expected int, got 'many'")
    assert application.which_applications() == []


async def test_a_bad_configuration_changes_nothing(tmp_path: Path) -> None:
    write(tmp_path, "config.toml", "[configured]\npool_size = 10\n[configured.Worker]\nbatch_size = 5\n")
    application.load_config(tmp_path, env="dev")
    application.load(Configured)
    assert application.get_all_env("configured") == {
        "pool_size": 10,
        "debug": False,
        "Worker": {"batch_size": 5, "interval": 1.0},
    }
    write(tmp_path, "prod.toml", "[configured]\npool_size = 'x'\nverbose = true\n")
    with pytest.raises(ConfigError) as info:
        application.load_config(tmp_path, env="prod")
    assert [(p.line, p.key) for p in info.value.problems] == [(2, "configured.pool_size"), (3, "configured.verbose")]
    assert application.get_env("configured", "pool_size") == 10


async def test_reload_calls_config_change_with_exactly_the_keys_that_changed(tmp_path: Path) -> None:
    Configured.changes = []
    write(tmp_path, "config.toml", "[configured]\npool_size = 10\n[configured.Worker]\nbatch_size = 5\n")
    write(tmp_path, "dev.toml", "[other]\nx = 1\n")
    application.load_config(tmp_path, env="dev")
    await application.ensure_all_started(Configured)
    application.put_env("configured", "set_at_runtime", "kept")
    assert await application.reload_config() == []  # nothing changed on disk
    write(tmp_path, "runtime.toml", "[configured]\npool_size = 20\ndebug = true\n[configured.Worker]\nbatch_size = 7\n")
    assert await application.reload_config() == ["configured"]
    assert Configured.changes == [({"pool_size": 20, "debug": True, "Worker": {"batch_size": 7, "interval": 1.0}}, {}, [])]
    assert application.get_env("configured", "set_at_runtime") == "kept"
    assert application.get_env("other", "x") == 1

    write(tmp_path, "runtime.toml", "[configured]\npool_size = 'oops'\n")
    with pytest.raises(ConfigError):
        await application.reload_config()
    assert application.get_env("configured", "pool_size") == 20  # unchanged
    assert len(Configured.changes) == 1


async def test_config_change_reports_added_and_removed_keys(tmp_path: Path) -> None:
    class Loose(Application):
        name = "loose"
        seen: list[Term] = []

        async def start(self, start_type: Term, args: Term) -> Pid:
            return await Supervisor.start_link([], strategy="one_for_one")

        async def config_change(self, changed: dict[str, Term], new: dict[str, Term], removed: list[str]) -> None:
            await asyncio.sleep(0)
            Loose.seen.append((changed, new, removed))

    write(tmp_path, "config.toml", "[loose]\na = 1\nb = 2\n")
    application.load_config(tmp_path)
    await application.start(Loose)
    write(tmp_path, "config.toml", "[loose]\na = 1\nc = 3\n")
    assert await application.reload_config() == ["loose"]
    assert Loose.seen == [({}, {"c": 3}, ["b"])]
