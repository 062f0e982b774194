"""Benchmark a circuit breaker's per-call overhead on the closed path.

Run `python bench/bench_breaker.py [--quick]`; prints, each the best of
three rounds, in µs per call:

- `breaker_floor`: a bare `await fn()` of a trivial `async def`;
- `breaker_call`: `await CircuitBreaker.call(name, fn)` minus that floor
  (target: at most 3 µs, and no process round trip);
- `breaker_call_timeout`: the same with `call_timeout` set (an
  `asyncio.timeout` per call);
- `pybreaker_call`: `pybreaker.CircuitBreaker.call(fn)` of a plain function
  minus a bare `fn()` (pybreaker's async support needs tornado);
- `aiobreaker_call`: `await aiobreaker.CircuitBreaker.call_async(fn)` minus
  the bare `await fn()`.

A library that is not installed (the `bench` extra) is skipped.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable

import beamish
from beamish import CircuitBreaker

ROUNDS = 3


async def trivial() -> int:
    return 1


def trivial_sync() -> int:
    return 1


async def per_call_async(fn: Callable[[], Awaitable[object]], count: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(count):
            await fn()
        best = min(best, (time.perf_counter() - t0) / count * 1e6)
    return best


def per_call_sync(fn: Callable[[], object], count: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(count):
            fn()
        best = min(best, (time.perf_counter() - t0) / count * 1e6)
    return best


def result(name: str, value: float, floor: float | None = None) -> None:
    line = f"RESULT workload={name} value={value:.3f} unit=us"
    if floor is not None:
        line += f" floor={floor:.3f}"
    print(line, flush=True)


async def main(count: int) -> None:
    await CircuitBreaker.start_link("bench")
    await CircuitBreaker.start_link("bench_timeout", call_timeout=5.0)
    floor = await per_call_async(trivial, count)
    ours = await per_call_async(lambda: CircuitBreaker.call("bench", trivial), count)
    bounded = await per_call_async(lambda: CircuitBreaker.call("bench_timeout", trivial), count)
    result("breaker_floor", floor)
    result("breaker_call", max(ours - floor, 0.0), floor)
    result("breaker_call_timeout", max(bounded - floor, 0.0), floor)
    metrics = await CircuitBreaker.metrics("bench")
    assert metrics.state == "closed" and metrics.successes == ROUNDS * count, metrics
    try:
        import pybreaker
    except ImportError:
        print("# pybreaker not installed: skipped", flush=True)
    else:
        pb = pybreaker.CircuitBreaker()
        sync_floor = per_call_sync(trivial_sync, count)
        theirs = per_call_sync(lambda: pb.call(trivial_sync), count)
        result("pybreaker_call", max(theirs - sync_floor, 0.0), sync_floor)
    try:
        import aiobreaker
    except ImportError:
        print("# aiobreaker not installed: skipped", flush=True)
    else:
        ab = aiobreaker.CircuitBreaker()
        theirs = await per_call_async(lambda: ab.call_async(trivial), count)
        result("aiobreaker_call", max(theirs - floor, 0.0), floor)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (for tests)")
    args = parser.parse_args()
    count = 5_000 if args.quick else 200_000
    for use_uvloop in (False, True):
        if use_uvloop:
            try:
                import uvloop  # noqa: F401
            except ImportError:
                continue
        print(f"# loop={'uvloop' if use_uvloop else 'asyncio'}", flush=True)
        beamish.run(main, count, use_uvloop=use_uvloop, lag_threshold=None)
