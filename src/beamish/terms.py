"""Terms: the values processes exchange, with Erlang's identities.

A message in beamish is any Python value, but four kinds of value carry an
identity that the whole system (and the Erlang distribution protocol) relies on:

- `Atom`: an interned name. It *is* a `str` and compares equal to the same
  text, so `match` statements read naturally; the distinction only matters on
  the wire, where an `Atom` becomes an Erlang atom and a plain `str` a binary.
- `Pid`: a process identifier. It carries exactly what Erlang's `NEW_PID_EXT`
  carries (node, id, serial, creation) so the distribution layer maps it 1:1.
- `Ref`: a unique reference, shaped like `NEWER_REFERENCE_EXT` (node,
  creation, up to five 32-bit ids).
- `Port`: an Erlang port identifier (`V4_PORT_EXT`); beamish never creates
  ports, but a remote node may send one and it must survive a round trip.

Pids, refs and ports have no public constructor: they are made by a node
(`beamish.self()`, `beamish.spawn`, `beamish.make_ref`) or decoded from the
wire.

>>> from beamish import Atom
>>> ok = Atom("ok")
>>> ok == "ok", ok is Atom("ok")
(True, True)
>>> match (Atom("ok"), 42):
...     case ("ok", value):
...         print(value)
42

OTP: mirrors erts' term identities; differs in that a Python `str` equal to
an atom's text matches it in patterns (there is no separate atom syntax).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeAlias

# What `beamish` exports is public there only (one path per name); this lists the rest.
__all__ = ["ImproperList"]

Term: TypeAlias = Any
"""Any value a process may send or receive: the one place `Any` is allowed."""


class Atom(str):
    """An interned Erlang atom; equal to (and hashing like) the same `str`.

    `Atom("ok") is Atom("ok")` holds: atoms are interned in a process-wide
    table, as the BEAM's atom table is. Atoms are at most 255 characters, as
    in Erlang.
    """

    __slots__ = ()
    _table: ClassVar[dict[str, Atom]] = {}

    def __new__(cls, text: str) -> Atom:
        atom = cls._table.get(text)
        if atom is None:
            if len(text) > 255:
                raise ValueError(f"atom too long ({len(text)} > 255 characters): {text[:40]!r}...")
            atom = str.__new__(cls, text)
            cls._table[str(text)] = atom
        return atom

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"

    def __reduce__(self) -> tuple[type[Atom], tuple[str]]:
        return (Atom, (str(self),))




class _NoPublicConstructor(type):
    """Metaclass that forbids `Cls(...)`; instances come from `Cls._make`."""

    def __call__(cls, *args: object, **kwargs: object) -> None:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__} has no public constructor")

    def _make(cls, *args: object) -> Any:
        return super().__call__(*args)


class Pid(metaclass=_NoPublicConstructor):
    """A process identifier: `node`, `id`, `serial` and `creation`.

    Equal pids name the same process incarnation. A pid of a node that has
    restarted (new `creation`) never names a process of the new incarnation.
    """

    __slots__ = ("_hash", "creation", "id", "node", "serial")

    node: Atom
    id: int
    serial: int
    creation: int

    def __init__(self, node: Atom, id: int, serial: int, creation: int) -> None:
        self.node = node
        self.id = id
        self.serial = serial
        self.creation = creation
        # Not the node nor the creation: a node named at runtime (`Node.rename`)
        # renames its live pids in place, and the dicts holding them must
        # still find them (Erlang's local pids take the node's new name too).
        self._hash = hash((id, serial))

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is Pid
            and self.id == other.id
            and self.node == other.node
            and self.serial == other.serial
            and self.creation == other.creation
        )

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: Pid) -> bool:
        return (self.node, self.id, self.serial, self.creation) < (
            other.node,
            other.id,
            other.serial,
            other.creation,
        )

    def __repr__(self) -> str:
        return f"#PID<{self.id}.{self.serial} @{self.node}>"

    def __reduce__(self) -> tuple[object, ...]:
        return (_make_pid, (str(self.node), self.id, self.serial, self.creation))


class Ref(metaclass=_NoPublicConstructor):
    """A unique reference: `node`, `creation` and up to five 32-bit `ids`."""

    __slots__ = ("_hash", "creation", "ids", "node")

    node: Atom
    creation: int
    ids: tuple[int, ...]

    def __init__(self, node: Atom, creation: int, ids: tuple[int, ...]) -> None:
        self.node = node
        self.creation = creation
        self.ids = ids
        self._hash = hash(ids)  # node and creation are left to __eq__ (see Pid)

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is Ref
            and self.ids == other.ids
            and self.node == other.node
            and self.creation == other.creation
        )

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return "#Reference<" + ".".join(str(i) for i in self.ids) + f" @{self.node}>"

    def __reduce__(self) -> tuple[object, ...]:
        return (_make_ref, (str(self.node), self.creation, self.ids))


class Port(metaclass=_NoPublicConstructor):
    """An Erlang port identifier (`V4_PORT_EXT`): `node`, `id`, `creation`."""

    __slots__ = ("creation", "id", "node")

    node: Atom
    id: int
    creation: int

    def __init__(self, node: Atom, id: int, creation: int) -> None:
        self.node = node
        self.id = id
        self.creation = creation

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is Port
            and self.id == other.id
            and self.node == other.node
            and self.creation == other.creation
        )

    def __hash__(self) -> int:
        return hash((self.id, self.node, self.creation))

    def __repr__(self) -> str:
        return f"#Port<{self.id} @{self.node}>"


def _make_pid(node: str, id: int, serial: int, creation: int) -> Pid:
    pid: Pid = Pid._make(Atom(node), id, serial, creation)
    return pid


def _make_ref(node: str, creation: int, ids: tuple[int, ...]) -> Ref:
    ref: Ref = Ref._make(Atom(node), creation, tuple(ids))
    return ref


def _fresh_pid(node: Atom, id: int, serial: int, creation: int) -> Pid:
    """`_make_pid` for a node minting the pid of every spawn: no Atom
    conversion, no constructor dispatch (0.25 µs of a ~10 µs spawn). Its
    fields and hash are `Pid.__init__`'s (kept in step by hand)."""
    pid: Pid = object.__new__(Pid)
    pid.node = node
    pid.id = id
    pid.serial = serial
    pid.creation = creation
    pid._hash = hash((id, serial))  # noqa: SLF001 (Pid.__init__'s own field, set here to skip it)
    return pid


def _fresh_ref(node: Atom, creation: int, ids: tuple[int, ...]) -> Ref:
    """`_make_ref` for the hot paths (a node minting the ref of every call,
    the codec decoding one): no Atom conversion, no constructor dispatch.
    Its fields and hash are `Ref.__init__`'s (kept in step by hand: two
    lines, a call cheaper)."""
    ref: Ref = object.__new__(Ref)
    ref.node = node
    ref.creation = creation
    ref.ids = ids
    ref._hash = hash(ids)  # noqa: SLF001 (Ref.__init__'s own field, set here to skip it)
    return ref


@dataclass(frozen=True, slots=True)
class ImproperList:
    """An improper list `[I1, ..., In | Tail]`: `items` (at least one) and a
    `tail` that is not a list (the codec, `beamish.dist.etf`, maps it to the
    wire). A call's reply tag `[alias | Ref]` is one (see `alias_tag`)."""

    items: list[Term]
    tail: Term

    def __hash__(self) -> int:
        return hash((ImproperList, tuple(self.items), self.tail))


def _make_improper(items: list[Term], tail: Term) -> ImproperList:
    """`ImproperList(items, tail)` for the hot paths (the codec, every call's
    tag): skips the frozen dataclass __init__ (two object.__setattr__ calls),
    half the cost."""
    new: ImproperList = _object_new(ImproperList)
    _set_items(new, items)
    _set_tail(new, tail)
    return new


_object_new: Final = object.__new__
_set_items: Final = vars(ImproperList)["items"].__set__
_set_tail: Final = vars(ImproperList)["tail"].__set__

ALIAS: Final = Atom("alias")
ALIAS_ITEMS: Final[list[Term]] = [ALIAS]
"""The `items` of every tag `alias_tag` makes (one list, never mutated), so
a reply recognises beamish's own tags by identity."""


def alias_tag(alias: Ref) -> ImproperList:
    """The reply tag `[alias | Alias]` OTP 24+'s `gen:call` puts in a From:
    a reply to it goes to the alias (`gen:reply/2`'s first clause), so once
    the caller has given up (the alias is gone) a late reply is dropped."""
    return _make_improper(ALIAS_ITEMS, alias)


def reply_alias(tag: Term) -> Ref | None:
    """The alias a reply with `tag` goes to, or None when it goes to the
    caller's pid: OTP 25's `gen:reply/2`, whose clauses are
    `{To, [alias|Alias]}` and `{To, [[alias|Alias]|_]}` (to the alias) and
    `{To, Tag}` (to `To`)."""
    if type(tag) is ImproperList:
        items = tag.items
        if items is ALIAS_ITEMS or items == ALIAS_ITEMS:
            return tag.tail if type(tag.tail) is Ref else None
        head = items[0] if items else None
    elif type(tag) is list and tag:
        head = tag[0]
    else:
        return None
    if type(head) is ImproperList and head.items == ALIAS_ITEMS and type(head.tail) is Ref:
        return head.tail
    return None


def _make_port(node: str, id: int, creation: int) -> Port:
    port: Port = Port._make(Atom(node), id, creation)
    return port
