"""The cookie: the shared secret that lets nodes connect.

Resolved like Erlang: an explicit cookie wins, then `$BEAMISH_COOKIE`, then
the file `~/.erlang.cookie`, created with 20 random capital letters and mode
0400 when missing, as `erl` does. Nodes prove they know it with a digest of
a random challenge; it never crosses the wire.

>>> from beamish.dist import cookie
>>> cookie.resolve("secret")
'secret'
>>> cookie.digest(1234, "secret").hex()
'bdfc2db0aa599f5919e565c328216a51'

OTP: mirrors auth.erl (`~/.erlang.cookie`) and dist_util's md5 digest.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import string
from pathlib import Path

__all__ = ["digest", "matches", "resolve"]


def resolve(explicit: str | None = None, *, home: Path | None = None) -> str:
    """The cookie to use (see the module doc)."""
    if explicit:
        return explicit
    env = os.environ.get("BEAMISH_COOKIE")
    if env:
        return env
    path = (home or Path.home()) / ".erlang.cookie"
    if not path.exists():
        value = "".join(secrets.choice(string.ascii_uppercase) for _ in range(20))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} must be accessible by its owner only (chmod 400), as Erlang requires")
    value = path.read_text().strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value


def digest(challenge: int, cookie: str) -> bytes:
    """md5(cookie ++ integer_to_list(challenge)), the handshake's proof."""
    return hashlib.md5((cookie + str(challenge)).encode()).digest()


def matches(received: bytes, challenge: int, cookie: str) -> bool:
    """Whether `received` proves knowledge of `cookie` (constant time)."""
    return hmac.compare_digest(received, digest(challenge, cookie))
