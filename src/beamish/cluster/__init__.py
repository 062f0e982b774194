"""`beamish.cluster`: what a set of connected nodes offers, above the
distribution (`beamish.dist`) and below the applications, spoken on the
wire as OTP speaks it so that beamish, Erlang and Elixir nodes share it:

- `global_`: Erlang's `global`, cluster-wide names and locks;
- cluster formation (`beamish.cluster.formation`, libcluster's): keeps a
  node connected to the nodes a strategy names.

>>> from beamish.cluster import Backoff, Dns, Topology, global_
>>> Topology("app", Dns("app.internal", "app")).prune
True
>>> Backoff(initial=0.5, max=8.0, jitter=0.0).delay(3)
2.0
>>> global_.register_name.__name__
'register_name'
"""

from __future__ import annotations

from . import global_
from .formation import (
    Backoff,
    Cluster,
    Dns,
    EpmdHosts,
    Static,
    Strategy,
    Topology,
    TopologyStatus,
    parse_topologies,
)

__all__ = [
    "Backoff",
    "Cluster",
    "Dns",
    "EpmdHosts",
    "Static",
    "Strategy",
    "Topology",
    "TopologyStatus",
    "global_",
    "parse_topologies",
]
