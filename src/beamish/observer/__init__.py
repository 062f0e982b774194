"""beamish.observer: looking at running nodes from outside, above the
distribution: a web page showing a node and the cluster it sees (`serve`:
supervision trees, processes, details, live) and a Prometheus exporter of a
node's metrics (`serve_metrics`; the page's server serves `/metrics` too).
It may use third-party packages (`prometheus_client`, `aiohttp`: the `apps`
extra); the core never imports it.

>>> from beamish.observer import metric_names
>>> "beamish_processes" in metric_names()
True
"""

from ._web import Observer, serve
from .metrics import MetricsExporter, metric_names, serve_metrics

__all__ = ["MetricsExporter", "Observer", "metric_names", "serve", "serve_metrics"]
