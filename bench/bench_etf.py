"""Benchmark the ETF codec on one OTP gen_call message.

Run `python bench/bench_etf.py [--quick]`; prints one line per workload:
`RESULT workload=etf_encode_gen_call value=<ops/s> unit=ops/s` and
`RESULT workload=etf_decode_gen_call ...` (target: 200,000 ops/s each way).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from beamish.dist import etf
from beamish.terms import Atom, Term, _make_pid, _make_ref, alias_tag


def gen_call_message() -> Term:
    """`{'$gen_call', {Pid, [alias | Ref]}, {get, <<"key">>, 42}}` as OTP 25+ sends it."""
    pid = _make_pid("client@127.0.0.1", 93, 0, 1700000000)
    ref = _make_ref("client@127.0.0.1", 1700000000, (178732, 1545863169, 674921026))
    return (Atom("$gen_call"), (pid, alias_tag(ref)), (Atom("get"), b"key", 42))


def measure(fn: Callable[[], object], seconds: float) -> float:
    """Best ops/s over a few rounds of at least `seconds` / 3 each."""
    best = 0.0
    for _ in range(3):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while True:
            for _ in range(1000):
                fn()
            n += 1000
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="measure for 0.3 s instead of 3 s")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 3.0
    msg = gen_call_message()
    data = etf.encode(msg)
    assert etf.decode(data) == msg
    encode, decode = etf.encode, etf.decode
    enc = measure(lambda: encode(msg), seconds)
    dec = measure(lambda: decode(data), seconds)
    print(f"RESULT workload=etf_encode_gen_call value={enc:.0f} unit=ops/s")
    print(f"RESULT workload=etf_decode_gen_call value={dec:.0f} unit=ops/s")


if __name__ == "__main__":
    main()
