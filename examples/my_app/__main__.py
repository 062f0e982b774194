"""A tour of MyApp: boot with the environment's configuration, use the
worker, let it crash and be restarted, reload changed configuration, stop.

    python -m examples.my_app [--env dev|test|prod]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import beamish
from beamish import Supervisor, application
from beamish.testing import wait_for_exit

from .application import MyApp
from .worker import Worker

CONFIG = Path(__file__).parent / "config"


async def tour(env: str) -> None:
    # Reload rewrites runtime.toml, so work on a copy of the config directory.
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp) / "config"
        shutil.copytree(CONFIG, config_dir)
        cfg = application.load_config(config_dir, env=env)
        print(f"env {cfg.env}: read {', '.join(p.name for p in cfg.files)}")

        started = await application.ensure_all_started(MyApp)
        print(f"started {started}; running: {[name for name, _, _ in application.which_applications()]}")
        for key in ("max_retries", "timeout", "pool_size", "debug", "log_level"):
            print(f"  my_app.{key} = {application.get_env('my_app', key)!r}")
        print(f"  my_app.Worker = {application.get_env('my_app', 'Worker')!r}")

        print(f"process_data('test') -> {await Worker.process_data('test')!r}")
        print(f"process_data('error') -> {await Worker.process_data('error')!r}")

        before = beamish.whereis("MyApp.Worker")
        assert before is not None
        try:
            await Worker.crash()
        except beamish.Exit as exc:
            print(f"Worker.crash() -> the worker crashed ({type(exc.reason).__name__}); its crash report is logged")
        await wait_for_exit(before)
        children = await Supervisor.which_children("MyApp.Supervisor")
        after = children[0][1]
        print(f"supervisor restarted the worker: {before} -> {after} (a new pid)")

        (config_dir / "runtime.toml").write_text(
            (config_dir / "runtime.toml").read_text() + "\n[my_app.Worker]\nbatch_size = 7\ninterval = 0.5\n"
        )
        changed = await application.reload_config()
        stats = await Worker.stats()
        print(f"reloaded configuration; config_change called for {changed}")
        print(f"  worker now batch_size={stats['batch_size']} interval={stats['interval']}")

        await application.stop("my_app")
        print(f"stopped; running: {application.which_applications()}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.my_app", description=__doc__)
    parser.add_argument("--env", default=None, help="dev (default: $BEAMISH_ENV or dev), test or prod")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    beamish.run(tour, args.env or beamish.config.env())


if __name__ == "__main__":
    main()
