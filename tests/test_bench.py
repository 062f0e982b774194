"""The benchmarks run (`bench/run.py --quick`) and print every workload.
Speed itself is never asserted here: `make bench` reports it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

WORKLOADS = [
    "floor_future_pingpong", "floor_deque", "floor_task_spawn", "spawn", "spawn_idle_memory", "genserver_idle_memory",
    "call", "cast", "ring", "fanout", "mailbox_drain_10", "selective_receive_skip_1000",
    "etf_encode_gen_call", "etf_decode_gen_call", "floor_tcp_pingpong", "remote_call", "remote_cast",
    "metrics_scrape_100k", "call_telemetry_off", "call_telemetry_on", "cast_telemetry_off", "cast_telemetry_on",
    "chat_deliveries", "chat_floor_deliveries", "chat_p50_ms", "chat_p99_ms", "chat_2nodes_deliveries", "chat_2nodes_p99_ms",
    "global_register_3nodes", "global_register_3nodes_erlang", "global_register_ratio",
    "breaker_floor", "breaker_call", "breaker_call_timeout", "pybreaker_call", "aiobreaker_call",
    "pg_join_leave", "pg_join_visible_on_peer", "pubsub_local_fanout", "pubsub_remote_broadcast",
    "remote_cast_same_pair",
    "gateway_direct_rps", "gateway_rps", "gateway_nginx_rps", "gateway_vs_nginx", "gateway_nginx_plain_rps", "gateway_vs_nginx_plain", "gateway_direct_p50_ms", "gateway_p50_ms",
    "gateway_nginx_p50_ms", "gateway_kill_failed",
]


def test_quick_benchmarks_print_a_result_for_every_workload() -> None:
    script = Path(__file__).resolve().parent.parent / "bench" / "run.py"
    done = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    found = set(re.findall(r"^RESULT workload=(\S+) value=[0-9.]+ unit=\S+", done.stdout, re.M))
    missing = [w for w in WORKLOADS if w not in found]
    assert not missing, f"no RESULT line for {missing}:\n{done.stdout}"
    assert re.search(r"workload=call .* ratio=[0-9.]+", done.stdout)
    assert re.search(r"workload=spawn .* floor=[0-9.]+ ratio=[0-9.]+", done.stdout)
