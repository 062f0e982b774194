"""OTP's atoms are defined once (`beamish._atoms`): no module of the library
spells one of them again as `Atom("...")` (docstrings aside), so a reason or a
tag has one spelling and one object."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import beamish
from beamish import Atom, _atoms

SRC = Path(beamish.__file__).parent


def defined() -> dict[str, str]:
    return {str(value): name for name, value in vars(_atoms).items() if isinstance(value, Atom)}


def test_each_atom_of_the_vocabulary_is_defined_once() -> None:
    texts = [str(value) for value in vars(_atoms).values() if isinstance(value, Atom)]
    assert len(texts) == len(set(texts)), "an atom defined twice in _atoms"
    assert {"noproc", "nodedown", "noconnection", "normal", "$gen_call", "calling_self"} <= set(texts)


def test_no_module_spells_an_atom_of_the_vocabulary_again() -> None:
    vocabulary = defined()
    again = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "_atoms.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Atom"
                and len(node.args) == 1
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in vocabulary
            ):
                text = node.args[0].value
                again.append(f"{path.relative_to(SRC)}:{node.lineno}: Atom({text!r}) is _atoms.{vocabulary[text]}")
    assert not again, again


def test_the_check_sees_a_spelling() -> None:
    # The scan above must recognise what it forbids (it reads the AST, not text).
    tree = ast.parse('x = Atom("noproc")')
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call))
    assert isinstance(call.func, ast.Name) and call.func.id == "Atom"
    assert re.fullmatch(r"\w+", defined()["noproc"])
