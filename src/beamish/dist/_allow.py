"""Which Python functions a peer may run here, by rpc or by spawn.

An allow-list holds two kinds of entries: a module (`"myapp.api"`) and a
single function (`"math:sqrt"`). Allow-listing a module exposes the
functions that module *defines* (`fn.__module__` is that module) and the
names its `__all__` lists, never what it merely imports: a module that does
`from subprocess import getoutput` must not hand a shell to every node that
knows the cookie. A single-function entry exposes that one attribute, where
it came from does not matter. Names starting with `_` are never exposed.

Where a target runs: an `async def` on the node's event loop, any other
function in the node's thread pool (`beamish.to_thread`), unless its entry
ends in `@loop` (`"math:sqrt@loop"`, `"myapp.api@loop"`). A peer's rpc
or spawn of a plain function is code this node cannot see into: one that
blocks (a 3 s `time.sleep` held every process of the node, a ping took 1.9 s
meanwhile) must hold one pool thread, not the loop, as a BEAM scheduler is
never held by a NIF that runs long on a dirty one. A thread hop costs tens
of microseconds (`make bench`: `rpc_call_pool` against `rpc_call_loop`);
`@loop` is for cheap functions and for those that use the node itself
(`beamish.send`, `whereis`...), which only its loop may run.

>>> from beamish.dist._allow import AllowList
>>> allow = AllowList(["math:sqrt", "json"])
>>> allow.lookup("math", "sqrt")(16.0)
4.0
>>> allow.lookup("json", "dumps")([1])
'[1]'
>>> allow.lookup("json", "codecs") is UNDEF, allow.lookup("os", "getcwd") is REFUSED
(True, True)
>>> AllowList(["math:sqrt@loop", "json"]).on_loop("math", "sqrt"), allow.on_loop("json", "dumps")
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
from typing import Final

__all__ = ["REFUSED", "UNDEF", "AllowList", "Missing"]


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

    __slots__ = ("functions", "loop", "modules")

    def __init__(self, entries: Iterable[str]) -> None:
        names: set[str] = set()
        loop: set[str] = set()
        for entry in entries:
            name, at, place = entry.partition("@")
            if at and place != "loop":
                raise ValueError(f"allow-list entry {entry!r}: the only placement is '@loop'")
            names.add(name)
            if at:
                loop.add(name)
        self.modules: frozenset[str] = frozenset(e for e in names if ":" not in e)
        self.functions: frozenset[str] = frozenset(names) - self.modules
        self.loop: frozenset[str] = frozenset(loop)

    def __bool__(self) -> bool:
        return bool(self.modules or self.functions)

    def allows(self, module: str, function: str) -> bool:
        """Whether `module:function` is listed, by itself or by its module
        (whether it exists is `lookup`'s question)."""
        return module in self.modules or f"{module}:{function}" in self.functions

    def on_loop(self, module: str, function: str) -> bool:
        """Whether the entry that allows `module:function` says `@loop`
        (its own entry first, then its module's)."""
        target = f"{module}:{function}"
        if target in self.functions:
            return target in self.loop
        return module in self.loop

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
