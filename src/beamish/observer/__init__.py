"""beamish.observer: looking at running nodes from outside, above the
distribution: a Prometheus exporter of a node's metrics (`serve_metrics`).
It may use third-party packages (`prometheus_client`, `aiohttp`: the `apps`
extra); the core never imports it.

>>> from beamish.observer import metric_names
>>> "beamish_processes" in metric_names()
True
"""

from .metrics import MetricsExporter, metric_names, serve_metrics

__all__ = ["MetricsExporter", "metric_names", "serve_metrics"]
