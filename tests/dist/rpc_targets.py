"""Functions a test allow-lists for peers, beside a name this module only
imports (a peer must not reach `getoutput` through this module)."""

from __future__ import annotations

import threading
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


STARTED = threading.Event()
RELEASE = threading.Event()
THREADS: dict[Term, int] = {}


def held_until_released() -> bool:
    """Blocks until a process of this node sets RELEASE: it never can if
    this runs on the node's loop (then False, after 10 s)."""
    STARTED.set()
    return RELEASE.wait(timeout=10)


def thread_id() -> int:
    return threading.get_ident()


def loop_thread_id() -> int:
    """Allow-listed `@loop` by the tests."""
    return threading.get_ident()


async def async_thread_id() -> int:
    return threading.get_ident()


def record_thread(key: Term) -> None:
    """A spawn target (listed `@pool`): where it ran, for the test to read."""
    THREADS[key] = threading.get_ident()
