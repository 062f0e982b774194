"""A throwaway public-key infrastructure for TLS distribution tests (openssl)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.interop.erlang import require

from beamish.dist import TlsOptions


@dataclass(frozen=True)
class Pki:
    """A throwaway CA with certificates for nodes on 127.0.0.1, and a rogue CA."""

    dir: Path

    def node(self, who: str = "node") -> TlsOptions:
        return TlsOptions(str(self.dir / f"{who}.pem"), str(self.dir / f"{who}.key"), str(self.dir / "ca.pem"))

    def erl_args(self, who: str = "erl") -> list[str]:
        """`erl` arguments for distribution over TLS with `who`'s certificate."""
        conf = self.dir / f"{who}.conf"
        if not conf.exists():
            files = f'{{certfile, "{self.dir / who}.pem"}}, {{keyfile, "{self.dir / who}.key"}}, {{cacertfile, "{self.dir}/ca.pem"}}'
            conf.write_text(
                f"[{{server, [{files}, {{verify, verify_peer}}, {{fail_if_no_peer_cert, true}}]}},\n"
                f" {{client, [{files}, {{verify, verify_peer}}]}}].\n"
            )
        return ["-proto_dist", "inet_tls", "-ssl_dist_optfile", str(conf)]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require("openssl"), *args], cwd=cwd, check=True, capture_output=True)


def _issue(d: Path, who: str, ca: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}", cwd=d)
    _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{who}.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)


def make_pki(d: Path) -> Pki:
    """Write a CA, certificates for `node`, `other`, `erl` and `probe`, and a
    rogue CA's `rogue` (trusting the real CA) into the directory `d`."""
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    for ca in ("ca", "rogue_ca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=beamish test {ca}", cwd=d)
    for who in ("node", "other", "erl", "probe"):
        _issue(d, who, "ca")
    _issue(d, "rogue", "rogue_ca")
    # The rogue node trusts the real CA, but its own certificate is not from it.
    (d / "rogue_trusts.pem").write_text((d / "ca.pem").read_text())
    return Pki(d)
