"""Using every core (issue 5, 5b): throughput of CPU-bound GenServers with 1
local node and with 2 (`LocalCluster`, one OS process per node), called from
a driver node over the distribution protocol.

Prints `RESULT workload=cluster_cpu_1node` and `cluster_cpu_2nodes` (jobs/s,
each job a GenServer call doing ~40 ms of hashing on this machine) and
`cluster_speedup` (the ratio; 2.0 is perfect on two free cores).
Run from the repository root: `python bench/bench_cluster.py [--quick]`.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for `examples`

from examples.cpu_cluster import measure

import beamish


async def main(jobs: int, rounds: int) -> None:
    results = await measure(2, jobs, rounds)
    print(f"RESULT workload=cluster_cpu_1node value={results[1]:.3f} unit=jobs/s", flush=True)
    print(f"RESULT workload=cluster_cpu_2nodes value={results[2]:.3f} unit=jobs/s", flush=True)
    print(f"RESULT workload=cluster_speedup value={results[2] / results[1]:.3f} unit=x", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    jobs, rounds = (8, 2_000) if options.quick else (200, 50_000)
    beamish.run(main, jobs, rounds, name=f"bench_driver_{secrets.token_hex(3)}@127.0.0.1", lag_threshold=None)
