"""The architecture's promises, checked: dependencies point one way, the
public face is explicit, and every public module documents itself with a
runnable example."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import beamish

SRC = Path(beamish.__file__).parent
# Packages above the core: the core must never import them.
UPPER = ("beamish.dist", "beamish.cluster", "beamish.observer", "beamish.apps", "beamish.cli")
# Modules that are allowed to depend on the upper layers.
EDGE = {"beamish.cli", "beamish.__main__"}


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def imports_of(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def layer_of(name: str) -> str | None:
    return next((u for u in UPPER if name == u or name.startswith(u + ".")), None)


def test_the_core_never_imports_the_layers_above_it() -> None:
    offenders = []
    for name, path in modules():
        if layer_of(name) or name in EDGE:
            continue
        for imported in imports_of(name, path):
            if layer_of(imported):
                offenders.append(f"{name} imports {imported}")
    assert not offenders, offenders


def test_distribution_never_imports_the_cluster_services_or_apps() -> None:
    offenders = [
        f"{name} imports {imported}"
        for name, path in modules()
        if layer_of(name) == "beamish.dist"
        for imported in imports_of(name, path)
        if layer_of(imported) in ("beamish.cluster", "beamish.apps", "beamish.cli")
    ]
    assert not offenders, offenders


# What a Process record and the node's tables offer only to the core. The
# wire reaches processes through Node's methods for it (`deliver_from_remote`,
# `link_from_remote`, `monitor_from_remote`...: ergo's CoreRouter).
CORE_INTERNALS = {
    "procs", "names", "mailbox", "deliver", "deliver_at_once", "run_now", "add_link",
    "remove_link", "add_watcher", "remove_watcher", "add_monitor", "pop_monitor", "trap_exit",
}


def test_the_wire_reaches_the_core_only_through_its_declared_interface() -> None:
    offenders = []
    for name, path in modules():
        if layer_of(name) not in ("beamish.dist", "beamish.cluster"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in CORE_INTERNALS:
                offenders.append(f"{name}:{node.lineno} uses .{node.attr}")
            if isinstance(node, ast.ImportFrom) and any(a.name == "Process" for a in node.names) and (node.module or "").endswith("process"):
                offenders.append(f"{name}:{node.lineno} imports Process")
    assert not offenders, offenders


def test_the_core_imports_no_web_framework_or_third_party_package() -> None:
    allowed_third_party = {"uvloop"}  # optional, imported only when installed
    offenders = []
    stdlib = __import__("sys").stdlib_module_names
    for name, path in modules():
        if layer_of(name) or name in EDGE:
            continue
        for imported in imports_of(name, path):
            top = imported.split(".")[0]
            if top in ("beamish", "", "__future__") or top in stdlib or top in allowed_third_party:
                continue
            if top in ("pytest", "hypothesis") and name.startswith("beamish.testing"):
                continue
            # The `config` extra: imported only to validate against a schema
            # the application declared (so its author installed pydantic).
            if top == "pydantic" and name == "beamish.config":
                continue
            offenders.append(f"{name} imports {imported}")
    assert not offenders, offenders


def test_the_public_face_is_explicit_and_complete() -> None:
    assert len(set(beamish.__all__)) == len(beamish.__all__), "duplicates in __all__"
    missing = [n for n in beamish.__all__ if not hasattr(beamish, n)]
    assert not missing, missing
    assert sorted(beamish.__all__) == sorted(beamish.__all__, key=str)
    public = {n for n in vars(beamish) if not n.startswith(("_", "@"))}  # "@": pytest's rewriting
    submodules = {m.name for m in pkgutil.iter_modules(beamish.__path__)}
    stray = public - set(beamish.__all__) - submodules - {"annotations"}
    assert not stray, f"public names missing from __all__: {sorted(stray)}"


def test_every_public_module_opens_with_a_docstring_and_a_runnable_example() -> None:
    undocumented = []
    for name, _ in modules():
        if any(part.startswith("_") for part in name.split(".")):
            continue
        module = importlib.import_module(name)
        doc = module.__doc__ or ""
        if not doc.strip():
            undocumented.append(f"{name}: no docstring")
        elif ">>>" not in doc and name not in ("beamish.testing.plugin",):
            undocumented.append(f"{name}: no doctest example")
    assert not undocumented, undocumented


# Modules whose tests live in a file named after the feature they serve.
COVERED_BY = {
    "beamish.dist.control": "test_dist_erlang",
    "beamish.dist.rpc": "test_dist_erlang",
    "beamish.dist.flags": "test_handshake",
    "beamish.dist.cookie": "test_handshake",
    "beamish.dist.tls": "test_dist_tls",
    "beamish.cluster": "test_formation",
    "beamish.cluster.global_": "test_global_erlang",
    "beamish.observer": "test_metrics",
}


def test_every_module_has_a_test_file_or_doctests() -> None:
    tests = {p.stem for p in Path(__file__).parent.rglob("test_*.py")}
    assert all(t in tests for t in COVERED_BY.values())
    untested = []
    for name, _ in modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or name == "beamish" or name in ("beamish.testing.plugin", "beamish.__main__"):
            continue
        if name in COVERED_BY:
            continue
        if not any(t == f"test_{leaf}" or t.startswith(f"test_{leaf}_") for t in tests):
            untested.append(name)
    assert not untested, untested
