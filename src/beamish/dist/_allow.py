"""Which Python functions a peer may run here, by rpc or by spawn.

An allow-list holds two kinds of entries: a module (`"myapp.api"`) and a
single function (`"math:sqrt"`). Allow-listing a module exposes the
functions that module *defines* (`fn.__module__` is that module) and the
names its `__all__` lists, never what it merely imports: a module that does
`from subprocess import getoutput` must not hand a shell to every node that
knows the cookie. A single-function entry exposes that one attribute, where
it came from does not matter. Names starting with `_` are never exposed.

Where a target runs: an `async def` on the node's event loop; a plain
function where its entry says, `@pool` (the node's thread pool,
`beamish.to_thread`) or `@loop` (`"math:sqrt@loop"`, `"myapp.api@pool"`),
else where its list puts it: an rpc target (`rpc_allow`) in the pool, a
spawn target (`spawn_allow`) on the loop. An rpc of a plain function is a
call this node cannot see into: one that blocks (a 3 s `time.sleep` held
every process of the node, a ping took 1.9 s meanwhile) must hold a pool
thread, not the loop, as a long NIF runs on a dirty scheduler. A spawned
function is a process: it sends, asks `dist.node()`, as the seed's
`Node.spawn` example does, which only the loop may run (as a local
`beamish.spawn` of a function). A thread hop costs tens of microseconds
(`make bench`: `rpc_call_pool` against `rpc_call_loop`): `@loop` is for
cheap rpc targets and those that use the node.

>>> from beamish.dist._allow import AllowList
>>> allow = AllowList(["math:sqrt", "json"])
>>> allow.lookup("math", "sqrt")(16.0)
4.0
>>> allow.lookup("json", "dumps")([1])
'[1]'
>>> allow.lookup("json", "codecs") is UNDEF, allow.lookup("os", "getcwd") is REFUSED
(True, True)
>>> rpc = AllowList(["math:sqrt@loop", "json"], default="pool")
>>> rpc.on_loop("math", "sqrt"), rpc.on_loop("json", "dumps")
(True, False)
>>> AllowList(["json", "math:sqrt@pool"]).on_loop("json", "dumps"), AllowList(["math:sqrt@pool"]).on_loop("math", "sqrt")
(True, False)

`lookup` tells a refused target (its module is not listed at all) from one
that is allowed but not there (`UNDEF`): Erlang answers the second one as it
answers any missing function, `undef`.

OTP: Erlang has no allow-list (any loaded module is callable, hence the
cookie's power); this is the line a Python node draws instead, the way
`erpc` would if it only ran a module's exports.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable, Iterable
from typing import Final, Literal

__all__ = ["REFUSED", "UNDEF", "AllowList", "Missing", "Place"]

Place = Literal["loop", "pool"]
"""Where a plain (not `async def`) target runs: the node's loop or its thread pool."""


class Missing(enum.Enum):
    """Why `AllowList.lookup` found nothing to run."""

    REFUSED = "refused"
    """The target's module is not allow-listed, nor the function itself."""
    UNDEF = "undef"
    """Allow-listed, but no such function (or not one the module defines)."""


REFUSED: Final = Missing.REFUSED
UNDEF: Final = Missing.UNDEF


class AllowList:
    """Module and `module:function` entries (see the module's docstring)."""

    __slots__ = ("default", "functions", "modules", "places")

    def __init__(self, entries: Iterable[str], *, default: Place = "loop") -> None:
        """`default`: where a plain function runs when its entry does not say."""
        names: set[str] = set()
        self.places: dict[str, Place] = {}
        for entry in entries:
            name, at, place = entry.partition("@")
            if at:
                if place not in ("loop", "pool"):
                    raise ValueError(f"allow-list entry {entry!r}: a placement is '@loop' or '@pool'")
                self.places[name] = "loop" if place == "loop" else "pool"
            names.add(name)
        self.modules: frozenset[str] = frozenset(e for e in names if ":" not in e)
        self.functions: frozenset[str] = frozenset(names) - self.modules
        self.default: Place = default

    def __bool__(self) -> bool:
        return bool(self.modules or self.functions)

    def allows(self, module: str, function: str) -> bool:
        """Whether `module:function` is listed, by itself or by its module
        (whether it exists is `lookup`'s question)."""
        return module in self.modules or f"{module}:{function}" in self.functions

    def on_loop(self, module: str, function: str) -> bool:
        """Whether a plain `module:function` runs on the loop: as its own
        entry says, else its module's, else `default`."""
        target = f"{module}:{function}"
        key = target if target in self.functions else module
        return self.places.get(key, self.default) == "loop"

    def lookup(self, module: str, function: str) -> Callable[..., object] | Missing:
        """The function a peer asked for, or why there is none.

        The module is imported only when the entry allows it."""
        explicit = f"{module}:{function}" in self.functions
        if not explicit and module not in self.modules:
            return REFUSED
        if function.startswith("_"):
            return UNDEF
        try:
            mod = importlib.import_module(module)
        except ImportError:
            return UNDEF
        fn: object = getattr(mod, function, None)
        if not callable(fn):
            return UNDEF
        if explicit or getattr(fn, "__module__", None) == module or function in getattr(mod, "__all__", ()):
            return fn
        return UNDEF
