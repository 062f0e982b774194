"""beamish.dist: the Erlang distribution protocol, so beamish nodes talk to
each other and to real Erlang and Elixir nodes.

`beamish.dist.etf` is the External Term Format codec every frame goes
through; the other modules (epmd, handshake, connection, net_kernel, rpc)
build the connections on top of it. The core (`beamish.node`) never imports
this package: it declares a small protocol that `dist` implements.

>>> from beamish.dist import etf
>>> from beamish import Atom
>>> etf.decode(etf.encode((Atom("ok"), 42)))
(Atom('ok'), 42)

OTP: mirrors erts' distribution (`erl_ext_dist`, `dist_util`, `net_kernel`);
differs in being a library a node opts into rather than a VM built-in.
"""
