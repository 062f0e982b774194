"""beamish.cluster: the services a cluster of nodes shares, above the
distribution protocol and below the applications.

`beamish.dist` connects nodes and carries messages; this layer gives those
nodes common state, kept by processes that speak OTP's own protocols so
that Erlang and Elixir nodes take part as equals: cluster-wide names and
locks (`beamish.cluster.global_`, OTP's `global`), process groups
(`beamish.cluster.pg`, OTP's `pg`), Phoenix.PubSub-compatible publish and
subscribe (`PubSub`, on pg), service discovery (`beamish.cluster.discovery`,
on pg), and cluster formation (`Cluster`, libcluster's). It imports the core
and `beamish.dist`; neither imports it (`tests/test_layout.py`).

>>> import beamish
>>> from beamish.cluster import Backoff, pg
>>> async def main():
...     await pg.start_link()
...     await pg.join(("room", 1), beamish.self())
...     return pg.get_members(("room", 1)) == [beamish.self()]
>>> beamish.run(main)
True
>>> Backoff(initial=0.5, max=8.0, jitter=0.0).delay(3)
2.0

Every service works on a single node too; on a distributed node
(`beamish.dist.start`, before the service starts) it finds its peers by
itself: each scope discovers the scopes of the same name on the nodes that
connect.
"""

from __future__ import annotations

from . import discovery, global_, pg
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
from .pubsub import PubSub

__all__ = [
    "Backoff",
    "Cluster",
    "Dns",
    "EpmdHosts",
    "PubSub",
    "Static",
    "Strategy",
    "Topology",
    "TopologyStatus",
    "discovery",
    "global_",
    "parse_topologies",
    "pg",
]
