"""beamish.cluster: the services a cluster of beamish, Erlang and Elixir
nodes runs on, built on `beamish.dist` and spoken on the wire as OTP speaks
them: `global_` (Erlang's `global`, cluster-wide names and locks).

>>> from beamish.cluster import global_
>>> global_.register_name.__name__
'register_name'
"""

from . import global_

__all__ = ["global_"]
