"""Applications: a named, versioned unit that starts a supervision tree.

An application bundles a supervision tree with its name, version,
dependencies and configuration (its *env*), so a node starts whole
components in the right order, stops them cleanly, and tells them when
their configuration changes. It is the seed's `MyApp.Application`:

>>> import beamish
>>> from beamish import Application, Supervisor, application
>>> class Cache(beamish.Agent):
...     pass
>>> class MyApp(Application):
...     name = "my_app"
...     version = "1.0.0"
...     env = {"pool_size": 10}
...
...     async def start(self, start_type, args):
...         children = [Cache.child_spec(lambda: {})]
...         return await Supervisor.start_link(children, strategy="one_for_one")
>>> async def main():
...     await application.ensure_all_started(MyApp)
...     size = application.get_env("my_app", "pool_size")
...     running = application.which_applications()
...     await application.stop("my_app")
...     return size, running, application.which_applications()
>>> beamish.run(main)
(10, [('my_app', '', '1.0.0')], [])

## Declaring one

Subclass `Application` and set `name` (the OTP application name, e.g.
`"my_app"`), optionally `version`, `description`, `applications` (what must
be started first: classes, names of loaded applications, or
`"package.module:Class"` strings), `env` (default env), `config_schema` (a
pydantic model, dataclass or TypedDict the env is validated against, see
`beamish.config`) and `start_args`. Then override the callbacks below; an
application that does not override `start` is a library application (it
has env, no processes).

## Running them

`await start(app)` loads and starts one application whose dependencies are
running; `await ensure_all_started(app)` starts the dependencies first, in
order, and returns the names it started; `await stop(name)` calls
`prep_stop`, shuts the tree down (the top supervisor stops its children in
reverse order), then calls `stop`. Restart types say what happens when the
tree dies on its own: `"temporary"` (the default) is reported only;
`"transient"` halts the node unless the reason is `normal`; `"permanent"`
halts it always. Halting stops the other applications, newest first, then
ends `beamish.run` with `Exit(("application_terminated", name, reason))`.

## Env and configuration

`get_env`, `fetch_env`, `put_env`, `delete_env`, `get_all_env` read and write
an application's env on this node. `load_config(directory)` reads the
per-environment files (`beamish.config`) into the env and validates each
loaded application's section before anything starts; `await
reload_config()` reads them again and calls `config_change(changed, new,
removed)` on each running application whose env changed, with exactly the
keys that changed. A value set with `put_env` survives a reload unless the
configuration now sets that key.

OTP: mirrors `application`, the application controller and master, and the
`Application` behaviour (`start/2`, `prep_stop/1`, `stop/1`,
`config_change/3`); differs in that the callbacks' state is the
`Application` instance itself, start type is always `"normal"` (takeover and
failover need distributed applications, not implemented), and reloading
re-reads the same configuration files rather than a new release's.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal, TypeAlias

from . import config as _config
from ._atoms import NORMAL, SHUTDOWN
from ._gen import From, StartError, is_coroutine
from .gen_server import GenServer, NoReply, Reply
from .node import Node, current_node
from .process import (
    Exit,
    current,
    demonitor,
    exit,
    link,
    monitor,
    process_flag,
    receive,
    send,
)
from .terms import Pid, Ref, Term

# What `beamish` exports is public there only (one path per name); this lists the rest.
__all__ = ["RestartType", "StartType", "delete_env", "ensure_all_started", "fetch_env", "get_all_env", "get_env", "load", "load_config", "loaded_applications", "put_env", "reload_config", "start", "stop", "stop_all", "which_applications"]

log = logging.getLogger("beamish.application")

RestartType: TypeAlias = Literal["permanent", "transient", "temporary"]
StartType: TypeAlias = Literal["normal"] | tuple[Literal["takeover", "failover"], str]
AppRef: TypeAlias = "str | type[Application]"


class ApplicationError(Exception):
    """An application could not be loaded, started or stopped.

    `reason` is OTP's: `("already_started", name)`, `("not_started", name)`,
    `("not_loaded", name)`, `("circular_dependencies", names)`, or what the
    application's `start` raised or returned."""

    def __init__(self, app: str, reason: Term) -> None:
        self.app = app
        self.reason = reason
        super().__init__(f"application {app}: {reason!r}")


class Application:
    """Base class of applications; set `name` and override the callbacks."""

    name: ClassVar[str]
    version: ClassVar[str] = ""
    description: ClassVar[str] = ""
    applications: ClassVar[Sequence[str | type[Application]]] = ()
    env: ClassVar[Mapping[str, Term]] = {}
    config_schema: ClassVar[object] = None
    start_args: ClassVar[Term] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "name", None), str) or not cls.name:
            raise TypeError(f"{cls.__qualname__} must set `name`, the application's name (e.g. 'my_app')")

    def start(self, start_type: StartType, args: Term) -> Pid | Awaitable[Pid | None] | None:
        """Start the application's top process and return its pid (OTP's
        `Module:start/2`). Runs in the application master, which links to
        it: when that process exits, the application has stopped.
        `start_type` is `"normal"`; `args` is the class's `start_args`.
        Raise (or return a non-pid) to refuse to start. The default starts
        nothing: a library application."""
        return None

    def prep_stop(self) -> Awaitable[None] | None:
        """Called before the tree is shut down by `stop` (OTP's
        `Module:prep_stop/1`). Default: nothing."""
        return None

    def stop(self) -> Awaitable[None] | None:
        """Called after the tree is shut down (OTP's `Module:stop/1`); also
        after the tree died on its own. Default: nothing."""
        return None

    def config_change(self, changed: dict[str, Term], new: dict[str, Term], removed: list[str]) -> Awaitable[None] | None:
        """The env changed on `reload_config` (OTP's `Module:config_change/3`):
        `changed` maps keys whose value changed to the new value, `new`
        holds keys that appeared, `removed` names keys that went. Called in
        the process that reloaded. Default: nothing."""
        return None


async def start(app: AppRef, restart_type: RestartType = "temporary") -> None:
    """Load and start `app`; its dependencies must be running. Raises
    `ApplicationError` with `("already_started", name)`, `("not_started",
    dependency)`, or the reason `start` failed."""
    cls = _resolve(_state(), app)
    reason = await GenServer.call(await _controller(), ("start", cls.name, restart_type), timeout=None)
    if reason is not None:
        raise ApplicationError(cls.name, reason)


async def ensure_all_started(app: AppRef, restart_type: RestartType = "temporary") -> list[str]:
    """Start `app` and, first, every application it depends on, in
    dependency order; return the names started by this call. On a failure
    the ones it started are stopped again and `ApplicationError` is raised
    naming the application that failed. Every application in the closure is
    loaded (its env validated) before the first one starts."""
    state = _state()
    order = _closure(state, _resolve(state, app))
    started: list[str] = []
    for cls in order:
        reason = await GenServer.call(await _controller(), ("start", cls.name, restart_type), timeout=None)
        if reason is None:
            started.append(cls.name)
        elif reason != ("already_started", cls.name):
            for name in reversed(started):
                await _stop(name)
            raise ApplicationError(cls.name, reason)
    return started


async def stop(app: AppRef) -> None:
    """Stop a running application: `prep_stop`, its tree shut down, `stop`.
    Raises `ApplicationError(("not_started", name))` when it is not running.
    Applications that depend on it keep running, as in OTP."""
    name = app if isinstance(app, str) else app.name
    reason = await _stop(name)
    if reason is not None:
        raise ApplicationError(name, reason)


async def stop_all() -> list[str]:
    """Stop every running application, newest first (what a node does when
    it shuts down cleanly: OTP's `init:stop/0`). Returns their names."""
    names = [name for name, _, _ in which_applications()]
    for name in names:
        await _stop(name)
    return names


def which_applications() -> list[tuple[str, str, str]]:
    """`(name, description, version)` of the running applications, the most
    recently started first; one whose start is still going on is not listed
    yet (as in OTP)."""
    state = _state()
    return [
        (name, state.loaded[name].description, state.loaded[name].version)
        for name, running in reversed(state.running.items())
        if running.started
    ]


def loaded_applications() -> list[tuple[str, str, str]]:
    """`(name, description, version)` of the loaded applications."""
    return [(cls.name, cls.description, cls.version) for cls in _state().loaded.values()]


def load(app: AppRef) -> type[Application]:
    """Load `app` (a class, a loaded name, or `"package.module:Class"`)
    without starting it and return its class: its env becomes its defaults
    merged with its configuration section, validated against
    `config_schema` (raises `beamish.config.ConfigError`)."""
    return _resolve(_state(), app)


def get_env(app: AppRef, key: str, default: Term = None) -> Term:
    """The value of `key` in `app`'s env, or `default`."""
    return _state().env.get(_name(app), {}).get(key, default)


def fetch_env(app: AppRef, key: str) -> Term:
    """The value of `key` in `app`'s env; raises `KeyError` when unset
    (Elixir's `fetch_env!`)."""
    env = _state().env.get(_name(app), {})
    if key not in env:
        raise KeyError(f"application {_name(app)!r} has no env key {key!r}")
    return env[key]


def put_env(app: AppRef, key: str, value: Term) -> None:
    """Set `key` in `app`'s env on this node."""
    _state().env.setdefault(_name(app), {})[key] = value


def delete_env(app: AppRef, key: str) -> None:
    """Remove `key` from `app`'s env on this node."""
    _state().env.get(_name(app), {}).pop(key, None)


def get_all_env(app: AppRef) -> dict[str, Term]:
    """A copy of `app`'s whole env."""
    return dict(_state().env.get(_name(app), {}))


def load_config(directory: str | Path | None = "config", *, env: str | None = None) -> _config.Config:
    """Read the configuration files of `env` (default `$BEAMISH_ENV` or
    `dev`) from `directory` into the applications' env. Every loaded
    application's section is validated first: on any problem
    `ConfigError` is raised and nothing changes. Call it at boot, before
    starting applications."""
    state = _state()
    cfg = _config.load(directory, env=env)
    envs = _envs_for(state, cfg)
    state.config = cfg
    for name, value in envs.items():
        state.env[name] = value
    return cfg


async def reload_config() -> list[str]:
    """Read the configuration files again (same directory and environment
    as `load_config`), update the env, and call `config_change` on each
    running application whose env changed, in start order. Returns their
    names. An invalid configuration raises `ConfigError` and changes
    nothing; a raising `config_change` is logged and re-raised after the
    others ran."""
    state = _state()
    old = state.config
    cfg = _config.load(old.directory if old else None, env=old.env if old else None)
    new_envs = _envs_for(state, cfg)
    diffs: dict[str, tuple[dict[str, Term], dict[str, Term], list[str]]] = {}
    for name in set(new_envs) | set(state.env):
        before = state.env.get(name, {})
        base_before = _base_env(state, old, name)
        carried = {k: v for k, v in before.items() if k not in base_before}  # put_env's, kept
        after = {**carried, **new_envs.get(name, {})}
        changed = {k: v for k, v in after.items() if k in before and before[k] != v}
        added = {k: v for k, v in after.items() if k not in before}
        removed = [k for k in before if k not in after]
        state.env[name] = after
        if changed or added or removed:
            diffs[name] = (changed, added, removed)
    state.config = cfg
    notified: list[str] = []
    failure: BaseException | None = None
    for name, running in list(state.running.items()):
        if name not in diffs:
            continue
        notified.append(name)
        try:
            result = running.app.config_change(*diffs[name])
            if is_coroutine(result):
                await result  # type: ignore[misc]
        except Exception as exc:
            log.error("application %s: config_change failed: %r", name, exc, exc_info=exc)
            failure = failure or exc
    if failure is not None:
        raise failure
    return notified


# --- internals -------------------------------------------------------------------

_KEY = "beamish.application"
_CONTROLLER = "application_controller"


@dataclasses.dataclass(slots=True)
class _Running:
    app: Application
    restart_type: RestartType
    master: Pid | None = None
    monitor: Ref | None = None
    top: Pid | None = None
    started: bool = False
    stopping: bool = False
    waiters: list[Term] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class _State:
    """One node's applications: the controller's state, also read directly
    (env lookups need no message, as OTP's read an ETS table)."""

    loaded: dict[str, type[Application]] = dataclasses.field(default_factory=dict)
    env: dict[str, dict[str, Term]] = dataclasses.field(default_factory=dict)
    config: _config.Config | None = None
    running: dict[str, _Running] = dataclasses.field(default_factory=dict)
    halting: bool = False


def _state(node: Node | None = None) -> _State:
    node = node or current_node()
    state = node.extensions.get(_KEY)
    if state is None:
        state = node.extensions[_KEY] = _State()
    assert isinstance(state, _State)
    return state


def _name(app: AppRef) -> str:
    return app if isinstance(app, str) else app.name


async def _controller() -> Pid:
    """The node's application controller, started on first use."""
    node = current_node()
    pid = node.whereis(_CONTROLLER)
    if pid is not None:
        return pid
    try:
        return await _Controller.start(_state(node), name=_CONTROLLER)
    except StartError as exc:  # another process started it meanwhile
        match exc.reason:
            case ("already_started", Pid() as pid):
                return pid
        raise


def _resolve(state: _State, app: AppRef) -> type[Application]:
    """The class of `app`, loading it (and validating its env) if needed."""
    if isinstance(app, str):
        if app in state.loaded:
            return state.loaded[app]
        if ":" not in app:
            raise ApplicationError(app, ("not_loaded", app))
        # A developer's own reference (code or configuration), never a
        # peer's: nothing received from the network reaches this.
        module_name, _, attr = app.partition(":")
        found = getattr(importlib.import_module(module_name), attr, None)
        if not (isinstance(found, type) and issubclass(found, Application)):
            raise ApplicationError(app, ("not_an_application", app))
        app = found
    known = state.loaded.get(app.name)
    if known is app:
        return app
    if known is not None:
        raise ApplicationError(app.name, ("already_loaded", known.__qualname__))
    section = state.config.sections.get(app.name) if state.config else None
    state.env[app.name] = _validated(state.config, app, section)
    state.loaded[app.name] = app
    return app


def _closure(state: _State, root: type[Application]) -> list[type[Application]]:
    """`root` and its dependencies, each after what it needs."""
    order: list[type[Application]] = []
    visiting: list[str] = []

    def visit(cls: type[Application]) -> None:
        if cls in order:
            return
        if cls.name in visiting:
            raise ApplicationError(cls.name, ("circular_dependencies", [*visiting, cls.name]))
        visiting.append(cls.name)
        for dep in cls.applications:
            visit(_resolve(state, dep))
        visiting.pop()
        order.append(cls)

    visit(root)
    return order


def _merged(defaults: Mapping[str, Term], section: Mapping[str, Term] | None) -> dict[str, Term]:
    out = dict(defaults)
    for key, value in (section or {}).items():
        base = out.get(key)
        out[key] = _merged(base, value) if isinstance(base, Mapping) and isinstance(value, Mapping) else value
    return out


def _validated(cfg: _config.Config | None, cls: type[Application], section: Mapping[str, Term] | None) -> dict[str, Term]:
    env = _merged(cls.env, section)
    if cls.config_schema is not None:
        env = _config.validate(cfg, cls.name, cls.config_schema, env)
    return env


def _base_env(state: _State, cfg: _config.Config | None, name: str) -> dict[str, Term]:
    cls = state.loaded.get(name)
    section = cfg.sections.get(name) if cfg else None
    return _merged(cls.env if cls else {}, section)


def _envs_for(state: _State, cfg: _config.Config) -> dict[str, dict[str, Term]]:
    """Each application's env under `cfg`, all validated before any is used."""
    envs: dict[str, dict[str, Term]] = {}
    problems: list[_config.Problem] = []
    for name in set(cfg.sections) | set(state.loaded):
        cls = state.loaded.get(name)
        try:
            envs[name] = (
                _validated(cfg, cls, cfg.sections.get(name)) if cls else _merged({}, cfg.sections.get(name))
            )
        except _config.ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise _config.ConfigError(problems)
    return envs


async def _stop(name: str) -> Term:
    """Stop `name`; None, or the reason it could not be."""
    result: Term = await GenServer.call(await _controller(), ("stop", name), timeout=None)
    return result


class _Controller(GenServer):
    """The application controller: starts masters, applies restart types.

    Starting and stopping are asynchronous for the controller (a master does
    the work and reports back), so a slow `start` never blocks the others;
    env reads do not go through it at all."""

    def init(self, state: _State) -> _State:
        return state

    def handle_call(self, request: Term, from_: From, state: _State) -> Reply | NoReply:
        match request:
            case ("start", str() as name, restart_type):
                return self._begin(name, restart_type, from_, state)
            case ("stop", str() as name):
                running = state.running.get(name)
                if running is None or not running.started:
                    return Reply(("not_started", name), state)
                running.waiters.append(from_)
                if not running.stopping:
                    running.stopping = True
                    if running.master is None:  # a library application
                        self._stopped(name, state)
                    else:
                        send(running.master, ("$app_stop",))
                return NoReply(state)
        return Reply(("bad_request", request), state)

    def _begin(self, name: str, restart_type: RestartType, from_: From, state: _State) -> Reply | NoReply:
        running = state.running.get(name)
        if running is not None:
            if running.started:
                return Reply(("already_started", name), state)
            running.waiters.append(from_)  # told when the first start ends
            return NoReply(state)
        if state.halting:
            return Reply("node_halting", state)
        cls = state.loaded[name]
        for dep in cls.applications:
            dep_name = _name(dep) if isinstance(dep, str) and ":" not in dep else _resolve(state, dep).name
            if dep_name not in state.running or not state.running[dep_name].started:
                return Reply(("not_started", dep_name), state)
        running = state.running[name] = _Running(cls(), restart_type, waiters=[from_])
        if type(running.app).start is Application.start:
            running.started = True  # a library application: no processes
            log.info("application %s started (type %s)", name, restart_type)
            return Reply(None, state)
        node = current_node()
        me = current().pid
        master = node.spawn(_master, (me, name, running.app), link_to=None, name=None, initial_call="application_master")
        running.master = master
        running.monitor = monitor(master)
        return NoReply(state)

    def handle_info(self, msg: Term, state: _State) -> NoReply:
        match msg:
            case ("$app_started", str() as name, result):
                running = state.running[name]
                waiters, running.waiters = running.waiters, []
                match result:
                    case ("ok", top):
                        running.started, running.top = True, top
                        log.info("application %s started (type %s)", name, running.restart_type)
                        GenServer.reply(waiters[0], None)
                        for waiter in waiters[1:]:
                            GenServer.reply(waiter, ("already_started", name))
                    case ("error", reason):
                        self._forget(name, state)
                        for waiter in waiters:
                            GenServer.reply(waiter, reason)
            case ("$app_stopped", str() as name):
                self._stopped(name, state)
            case ("$app_exit", str() as name, reason):
                self._exited(name, reason, state)
            case ("DOWN", Ref() as ref, "process", _, reason):
                for name, running in list(state.running.items()):
                    if running.monitor == ref:  # the master itself died
                        running.monitor = None
                        if running.stopping:
                            self._stopped(name, state)
                        elif running.started:
                            self._exited(name, reason, state)
                        else:
                            self._forget(name, state)
                            for waiter in running.waiters:
                                GenServer.reply(waiter, reason)
        return NoReply(state)

    def _forget(self, name: str, state: _State) -> None:
        running = state.running.pop(name)
        if running.monitor is not None:
            demonitor(running.monitor, flush=True)

    def _stopped(self, name: str, state: _State) -> None:
        running = state.running[name]
        self._forget(name, state)
        log.info("application %s exited: stopped (type %s)", name, running.restart_type)
        for waiter in running.waiters:
            GenServer.reply(waiter, None)

    def _exited(self, name: str, reason: Term, state: _State) -> None:
        """The tree died on its own: OTP's restart-type rules."""
        running = state.running[name]
        self._forget(name, state)
        for waiter in running.waiters:  # a stop raced the death: it is stopped
            GenServer.reply(waiter, None)
        halt = running.restart_type == "permanent" or (running.restart_type == "transient" and reason != NORMAL)
        level = logging.ERROR if reason != NORMAL else logging.INFO
        log.log(level, "application %s exited: %r (type %s)", name, reason, running.restart_type)
        if halt and not state.halting:
            state.halting = True
            node = current_node()
            node.spawn(_halt, (name, reason), link_to=None, name=None, initial_call="application_controller:halt")


async def _master(controller: Pid, name: str, app: Application) -> None:
    """One application's master: runs `start`, watches the top process, and
    shuts the tree down on request (OTP's application_master)."""
    process_flag("trap_exit", True)
    try:
        top = app.start("normal", type(app).start_args)
        if is_coroutine(top):
            top = await top  # type: ignore[misc]
        if not isinstance(top, Pid):
            raise Exit(("bad_return", ("start", top)))
    except Exit as exc:
        send(controller, ("$app_started", name, ("error", exc.reason)))
        return
    except StartError as exc:
        send(controller, ("$app_started", name, ("error", exc.reason)))
        return
    except Exception as exc:
        log.error("application %s: start failed", name, exc_info=exc)
        send(controller, ("$app_started", name, ("error", exc)))
        return
    link(top)
    send(controller, ("$app_started", name, ("ok", top)))
    while True:
        match await receive():
            case ("EXIT", pid, reason) if pid == top:
                await _call_quietly(name, "stop", app.stop)
                send(controller, ("$app_exit", name, reason))
                return
            case ("$app_stop",):
                await _call_quietly(name, "prep_stop", app.prep_stop)
                exit(top, SHUTDOWN)
                await receive(lambda m: type(m) is tuple and len(m) == 3 and m[0] == "EXIT" and m[1] == top)
                await _call_quietly(name, "stop", app.stop)
                send(controller, ("$app_stopped", name))
                return


async def _call_quietly(name: str, what: str, fn: Callable[[], Awaitable[None] | None]) -> None:
    try:
        result = fn()
        if is_coroutine(result):
            await result  # type: ignore[misc]
    except Exception as exc:
        log.error("application %s: %s failed", name, what, exc_info=exc)


async def _halt(name: str, reason: Term) -> None:
    """A permanent (or abnormally ended transient) application died: stop
    the others, newest first, then halt the node, as OTP's controller does."""
    for other, _, _ in which_applications():
        await _stop(other)
    current_node().halt(("application_terminated", name, reason))
