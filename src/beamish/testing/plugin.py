"""The pytest plugin: run `async def` tests as the first process of a fresh node.

Enable it for a whole project with `beamish_mode = true` in the pytest ini
options, or per test with `@pytest.mark.beamish`. An `async def` test under
hypothesis's `@given` runs each generated example in its own fresh node. Marker keywords are passed
to the node (`name=`, `lag_threshold=`, `use_uvloop=`). Each test gets its
own node, so registered names never leak from one test into another; when
the test returns, everything `start_supervised` started is shut down in
order, then the node stops.

OTP: mirrors ExUnit's async test process, with `start_supervised`'s test
supervisor.
"""

from __future__ import annotations

import functools
import inspect

import pytest

from ..node import Node, _loop_factory
from ..terms import Term
from . import _finish_test


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "beamish_mode",
        type="bool",
        default=False,
        help="run every async def test inside a fresh beamish node",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "beamish(**node_options): run this async test as the first process of a beamish node",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    fn = pyfuncitem.obj
    marker = pyfuncitem.get_closest_marker("beamish")
    if marker is None and not pyfuncitem.config.getini("beamish_mode"):
        return None
    options: dict[str, Term] = dict(marker.kwargs) if marker is not None else {}
    hypothesis = getattr(fn, "hypothesis", None)
    if hypothesis is not None and inspect.iscoroutinefunction(hypothesis.inner_test):
        # A hypothesis test: every generated example runs as the first
        # process of its own fresh node (pytest-trio's approach).
        inner = hypothesis.inner_test

        @functools.wraps(inner)
        def each_example(*args: Term, **kwargs: Term) -> None:
            run_test(functools.partial(inner, *args, **kwargs), **dict(options))

        hypothesis.inner_test = each_example
        return None
    if not inspect.iscoroutinefunction(fn):
        return None
    argnames = pyfuncitem._fixtureinfo.argnames  # noqa: SLF001 (pytest has no public way to a test's fixture names)
    kwargs = {name: pyfuncitem.funcargs[name] for name in argnames}
    run_test(functools.partial(fn, **kwargs), **options)
    return True


def run_test(test: functools.partial[Term], **options: Term) -> None:
    """Run `test()` as the first process of a fresh node, then shut down what
    `start_supervised` started and stop the node."""
    import asyncio

    use_uvloop = options.pop("use_uvloop", None)
    node = Node(**options)

    async def main() -> Term:
        try:
            return await test()
        finally:
            await _finish_test()

    with asyncio.Runner(loop_factory=_loop_factory(use_uvloop)) as runner:
        runner.run(node.run(main))
