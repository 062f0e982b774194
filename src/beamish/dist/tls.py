"""Distribution over TLS, compatible with Erlang's `inet_tls_dist`.

Cookies authenticate nodes but do not encrypt: anyone on the path reads
every message. Erlang's answer is to run distribution over TLS
(`erl -proto_dist inet_tls`), and beamish speaks the same thing: the node
is found through EPMD as usual, the TCP connection is wrapped in TLS
*before* the distribution handshake, and then the handshake (cookie
included) and every frame travel inside TLS. Every node of the cluster must
use it, as in Erlang.

Certificates are configured with `TlsOptions`; by default authentication is
mutual: each side presents a certificate and checks the other's against
`cafile` (Erlang's `verify_peer` on both sides with
`fail_if_no_peer_cert`).

>>> options = TlsOptions(certfile="node.pem", keyfile="node.key", cafile="ca.pem")
>>> options.verify, options.check_hostname
(True, True)

```python
await dist.start(cookie="secret", tls=TlsOptions("node.pem", "node.key", "ca.pem"))
```

From a shell: `beamish node --name py@127.0.0.1 --tls-cert node.pem
--tls-key node.key --tls-ca ca.pem`. The matching Erlang/Elixir node:

```sh
erl -name erl@127.0.0.1 -proto_dist inet_tls -ssl_dist_optfile dist.conf
# dist.conf:
# [{server, [{certfile, "erl.pem"}, {keyfile, "erl.key"}, {cacertfile, "ca.pem"},
#            {verify, verify_peer}, {fail_if_no_peer_cert, true}]},
#  {client, [{certfile, "erl.pem"}, {keyfile, "erl.key"}, {cacertfile, "ca.pem"},
#            {verify, verify_peer}]}].
```

A TLS failure (an untrusted certificate, a peer speaking plain TCP) closes
that one connection with a log line naming the peer and the reason; the
node carries on.

OTP: mirrors `inet_tls_dist` with `-ssl_dist_optfile`; differs in taking
the options as a Python object (one certificate for both the server and the
client side) and in requiring TLS 1.2 or later.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

# Public as `beamish.dist.TlsOptions` (one path per name).
__all__: list[str] = []


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """Certificates for distribution over TLS.

    `certfile`/`keyfile`: this node's certificate chain and key (PEM), shown
    to peers on both sides of a connection. `cafile`: the authorities a
    peer's certificate must chain to (None: the system's). `verify`: check
    peers' certificates and require one from connecting nodes (mutual
    authentication; turn off only for experiments). `check_hostname`: a
    peer's certificate must name the host part of its node name.
    """

    certfile: str
    keyfile: str | None = None
    cafile: str | None = None
    verify: bool = True
    check_hostname: bool = True

    def server_context(self) -> ssl.SSLContext:
        """The context for connections other nodes open to us."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._common(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.verify else ssl.CERT_NONE
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """The context for connections we open to other nodes."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._common(ctx)
        ctx.check_hostname = self.verify and self.check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED if self.verify else ssl.CERT_NONE
        return ctx

    def _common(self, ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.certfile, self.keyfile)
        if self.cafile is not None:
            ctx.load_verify_locations(self.cafile)
        else:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH if ctx.protocol == ssl.PROTOCOL_TLS_SERVER else ssl.Purpose.SERVER_AUTH)
