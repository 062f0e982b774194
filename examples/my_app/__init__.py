"""The seed's `MyApp`: an application with a supervision tree, a worker, and
configuration per environment (`config/*.toml`).

Run the tour: `python -m examples.my_app` (add `--env prod`), or serve it
until Ctrl-C with `beamish run examples.my_app:MyApp --config
examples/my_app/config` (SIGHUP reloads the configuration).
"""

from .application import MyApp, MyAppConfig
from .worker import Worker

__all__ = ["MyApp", "MyAppConfig", "Worker"]
