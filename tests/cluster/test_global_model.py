"""global against a model: random registrations, re-registrations,
unregistrations and kills from two beamish nodes; after each step both
nodes agree with a dict of name -> owner (hypothesis)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.cluster.pynodes import cluster, until
from tests.interop.erlang import new_cookie

import beamish
from beamish import Atom, dist
from beamish.cluster import global_
from beamish.terms import Pid

NAMES = [Atom(n) for n in ("a", "b", "c")]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("register"), st.integers(0, 1), st.sampled_from(NAMES)),
        st.tuples(st.just("re_register"), st.integers(0, 1), st.sampled_from(NAMES)),
        st.tuples(st.just("unregister"), st.integers(0, 1), st.sampled_from(NAMES)),
        st.tuples(st.just("kill"), st.integers(0, 1), st.sampled_from(NAMES)),
    ),
    min_size=1,
    max_size=12,
)


async def forever() -> None:
    await beamish.receive(lambda m: False)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_global_agrees_with_a_model(steps: list[tuple[str, int, Atom]]) -> None:
    async def main() -> None:
        async with cluster(2, new_cookie()) as nodes:
            await nodes[0].do(lambda: dist.ping(nodes[1].name))
            for py in nodes:
                await py.do(global_.sync, timeout=20)
            model: dict[Atom, Pid] = {}
            for op, at, name in steps:
                py = nodes[at]
                if op in ("register", "re_register"):
                    pid: Pid = await py.call(lambda: beamish.spawn(forever))
                    if op == "register":
                        ok = await py.do(functools.partial(global_.register_name, name, pid))
                        # A pid already registered under another name is refused too.
                        assert ok == (name not in model and pid not in model.values())
                        if ok:
                            model[name] = pid
                    else:
                        await py.do(functools.partial(global_.re_register_name, name, pid))
                        model[name] = pid
                elif op == "unregister":
                    await py.do(functools.partial(global_.unregister_name, name))
                    model.pop(name, None)
                elif name in model:
                    owner = model.pop(name)
                    holder = nodes[0] if owner.node == nodes[0].name else nodes[1]
                    await holder.call(functools.partial(beamish.exit, owner, "kill"))

                async def agreed() -> bool:
                    views: list[Any] = [await n.call(lambda: {k: global_.whereis_name(k) for k in NAMES}) for n in nodes]
                    want = {k: model.get(k) for k in NAMES}
                    return all(v == want for v in views)

                await until(agreed, 10, f"agreement after {op} {name} on node {at}")

    asyncio.run(main())
