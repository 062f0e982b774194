"""DynamicSupervisor: a supervisor that starts with no children and gets
them on demand, one `start_child` at a time (one room per chat room, one
session per connection).

>>> import beamish
>>> from beamish import GenServer
>>> from beamish import DynamicSupervisor
>>> class Room(GenServer):
...     def init(self, name):
...         return name
>>> async def main():
...     sup = await DynamicSupervisor.start_link(max_children=2)
...     a = await DynamicSupervisor.start_child(sup, (Room, "lobby"))
...     b = await DynamicSupervisor.start_child(sup, (Room, "games"))
...     try:
...         await DynamicSupervisor.start_child(sup, (Room, "third"))
...     except beamish.StartError as e:
...         full = e.reason
...     return (await DynamicSupervisor.count_children(sup))["active"], full
>>> beamish.run(main)
(2, Atom('max_children'))

Children are restarted one_for_one under the same intensity rules as
`Supervisor`; `extra_arguments` are prepended to each child's start
arguments; `terminate_child(sup, pid)` stops and forgets one. On stop,
children are shut down in reverse start order.

OTP: mirrors Elixir's DynamicSupervisor (start_child, terminate_child,
which_children, count_children, max_children, extra_arguments); differs in
shutting children down one after another rather than concurrently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from . import _gen
from ._atoms import IGNORE
from ._gen import ChildSpec, StartError
from .gen_server import Ignore
from .supervisor import Supervisor, SupFlags, _call, _Server, _Start, normalize
from .terms import Atom, Pid, Term

# Public as `beamish.DynamicSupervisor` (one path per name).
__all__: list[str] = []


class DynamicSupervisor:
    """Start one with `DynamicSupervisor.start_link(...)`, or subclass it and
    define `init(self, arg)` returning `DynamicSupervisor.flags(...)`."""

    def init(self, arg: Term) -> SupFlags | Ignore:
        """Return `DynamicSupervisor.flags(...)` (OTP `init/1`)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define init(self, arg)")

    @staticmethod
    def flags(
        *,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        max_children: int | None = None,
        extra_arguments: Iterable[Term] = (),
    ) -> SupFlags:
        """Elixir's `DynamicSupervisor.init(opts)`."""
        if strategy != "one_for_one":
            raise ValueError("a DynamicSupervisor's strategy is one_for_one")
        return SupFlags([], "one_for_one", max_restarts, max_seconds, max_children, tuple(extra_arguments))

    @classmethod
    async def start_link(
        cls,
        arg: Term = None,
        *,
        name: str | tuple[Term, ...] | None = None,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        max_children: int | None = None,
        extra_arguments: Iterable[Term] = (),
        timeout: float | None = None,
    ) -> Pid:
        """Start a dynamic supervisor linked to the caller."""
        if cls is DynamicSupervisor:
            opts = cls.flags(
                strategy=strategy,
                max_restarts=max_restarts,
                max_seconds=max_seconds,
                max_children=max_children,
                extra_arguments=extra_arguments,
            )
            flags_fn: Callable[[], SupFlags | Ignore] = lambda: opts  # noqa: E731
        else:
            flags_fn = functools.partial(cls().init, arg)
        pid = await _Server.launch(_Start(flags_fn, name, dynamic=True), link=True, timeout=timeout)
        if pid is None:
            raise StartError(IGNORE)
        return pid

    @classmethod
    def child_spec(cls, arg: Term = None) -> ChildSpec:
        """As a child of another supervisor. `arg` is a dict of start_link's
        keyword options for DynamicSupervisor itself (Elixir's
        `{DynamicSupervisor, name: ..., strategy: ...}`), else `init`'s arg."""
        if cls is DynamicSupervisor:
            options = dict(arg or {})
            child_id = options.get("name", cls)
            start = functools.partial(cls.start_link, None, **options)
            return ChildSpec(id=child_id, start=(start, ()), shutdown=None, type="supervisor")
        return ChildSpec(id=cls, start=(cls.start_link, (arg,)), shutdown=None, type="supervisor")

    @staticmethod
    async def start_child(sup: Term, child: Term) -> Pid | None:
        """Start a child; raises `StartError` (e.g. `"max_children"`)."""
        return await _call(sup, ("start_dynamic", normalize(child)))  # type: ignore[no-any-return]

    @staticmethod
    async def terminate_child(sup: Term, pid: Pid) -> None:
        """Stop the child `pid` and forget it; raises LookupError if unknown."""
        await _call(sup, ("terminate_child", pid))

    @staticmethod
    async def which_children(sup: Term) -> list[tuple[Term, Pid | Atom | None, str, tuple[str, ...]]]:
        return await Supervisor.which_children(sup)

    @staticmethod
    async def count_children(sup: Term) -> dict[str, int]:
        return await Supervisor.count_children(sup)

    @staticmethod
    async def stop(sup: Term, reason: Term = "normal", timeout: float | None = None) -> None:
        await _gen.stop(sup, Atom(reason) if type(reason) is str else reason, timeout)
