"""The `etf_impl` fixture: a test that uses it runs once with each ETF codec,
the C accelerator (`beamish.dist._etf_c`, skipped when not built) and the
pure-Python reference, so both keep every behaviour the tests pin down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from beamish.dist import etf


@pytest.fixture(scope="module", params=["c", "python"])
def etf_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Module-scoped (Hypothesis refuses function-scoped fixtures around
    `@given`), so the tests of a module run as two groups."""
    impl: str = request.param
    if impl == "c" and not etf.ACCELERATED:
        pytest.skip("the C codec (beamish.dist._etf_c) is not built or BEAMISH_PURE_ETF=1")
    with pytest.MonkeyPatch.context() as patch:
        if impl == "python":
            patch.setattr(etf, "_encode", etf._py_encode)
            patch.setattr(etf, "_encode_into", etf._py_encode_into)
            patch.setattr(etf, "_decode", etf._py_decode)
        yield impl
