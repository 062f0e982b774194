"""`beamish.cluster`: what a set of connected nodes offers, above the
distribution (`beamish.dist`) and below the applications.

Cluster formation (`beamish.cluster.formation`, libcluster's) keeps a node
connected to the nodes a strategy names:

>>> from beamish.cluster import Backoff, Dns, Topology
>>> Topology("app", Dns("app.internal", "app")).prune
True
>>> Backoff(initial=0.5, max=8.0, jitter=0.0).delay(3)
2.0
"""

from __future__ import annotations

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
    "parse_topologies",
]
