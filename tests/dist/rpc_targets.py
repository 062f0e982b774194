"""Functions a test allow-lists for peers, beside a name this module only
imports (a peer must not reach `getoutput` through this module)."""

from __future__ import annotations

from subprocess import getoutput  # noqa: F401  (imported on purpose: see above)

from beamish.terms import Term


def double(x: int) -> int:
    """Defined here: callable by a peer that is allowed this module."""
    return 2 * x


def echo(*args: Term) -> list[Term]:
    """Spawned or called with any arguments."""
    return list(args)


def tell(name: Term, msg: Term) -> None:
    """Send `msg` to the process registered as `name` here (casts' target)."""
    from beamish import send

    send(name, msg)
