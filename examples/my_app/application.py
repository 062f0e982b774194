"""`MyApp.Application`, as in the seed, plus its configuration schema."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import BaseModel

from beamish import Application, Pid, Supervisor, Term, application

from .worker import Worker

log = logging.getLogger("my_app")


class WorkerConfig(BaseModel):
    """`[my_app.Worker]`: the seed's `config :my_app, MyApp.Worker, ...`."""

    batch_size: int
    interval: float


class MyAppConfig(BaseModel):
    """`[my_app]`: every key the application reads, with its type. A key
    not listed here, or a value of the wrong type, stops boot with the file,
    line and key."""

    max_retries: int
    timeout: float
    pool_size: int
    debug: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api_key: str
    Worker: WorkerConfig


class MyApp(Application):
    name = "my_app"
    version = "0.1.0"
    description = "the seed's MyApp: a supervised worker configured per environment"
    config_schema = MyAppConfig

    async def start(self, start_type: Term, args: Term) -> Pid:
        # Elixir: children = [...]; Supervisor.start_link(children, strategy: :one_for_one, name: MyApp.Supervisor)
        logging.getLogger("my_app").setLevel(str(application.get_env("my_app", "log_level")).upper())
        children = [Worker.child_spec(None)]
        return await Supervisor.start_link(children, strategy="one_for_one", name="MyApp.Supervisor")

    def config_change(self, changed: dict[str, Term], new: dict[str, Term], removed: list[str]) -> None:
        # Elixir: MyAppWeb.Endpoint.config_change(changed, removed); :ok
        if "log_level" in changed:
            logging.getLogger("my_app").setLevel(str(changed["log_level"]).upper())
        log.info("config_change: changed=%s new=%s removed=%s", sorted(changed), sorted(new), removed)
        if "Worker" in changed:
            Worker.reconfigure()
