"""Templates: whether a value has a given shape, like an Elixir match pattern.

Python's `match` statement needs a literal pattern in the source; the runtime
needs patterns as *values* it can be handed (`assert_receive`,
`Registry.match`). A template is an ordinary value read this way:

- `ANY` matches anything (Elixir's `_`);
- a type matches its instances (`int`, `Pid`, `str`);
- a tuple or a list matches a tuple or a list of the same length, element by
  element;
- a dict matches a dict that has its keys, with matching values; other keys
  are ignored (an Elixir map pattern is a subset match too);
- any other callable is a predicate, called with the value;
- anything else matches by equality.

>>> from beamish._pattern import ANY, matches
>>> matches(("ok", ANY), ("ok", 42))
True
>>> matches({"user": str}, {"user": "ann", "age": 3})
True
>>> matches([int, lambda n: n > 0], [1, -1])
False

OTP: mirrors Elixir's match patterns; differs in that a template binds no
variables (a repeated variable such as `{x, x}` needs a predicate) and that
equality is Python's `==` (so `1` matches `1.0`, unlike Elixir's `===`).
"""

from __future__ import annotations

from typing import Final

from .terms import Term

__all__ = ["ANY", "Pattern", "matches"]


class _Any:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Any()
"""A pattern that matches any value."""

Pattern = object
"""A template: any value, read as described in the module doc."""


def matches(pattern: Pattern, value: Term) -> bool:
    """Whether `value` matches the template `pattern` (see the module doc)."""
    if pattern is ANY:
        return True
    if isinstance(pattern, type):
        return isinstance(value, pattern)
    if isinstance(pattern, tuple):
        return (
            isinstance(value, tuple)
            and len(value) == len(pattern)
            and all(matches(p, v) for p, v in zip(pattern, value, strict=True))
        )
    if isinstance(pattern, list):
        return (
            isinstance(value, list)
            and len(value) == len(pattern)
            and all(matches(p, v) for p, v in zip(pattern, value, strict=True))
        )
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and matches(p, value[k]) for k, p in pattern.items()
        )
    if callable(pattern):
        return bool(pattern(value))
    return bool(pattern == value)
