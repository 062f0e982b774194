"""`global` registrations (issue 13 §6): names registered per second by one
node of a 3-node cluster, beamish (this process plus two `beamish node` OS
processes) next to Erlang's own `global:register_name/2` between three
Erlang nodes, measured in the same run.

Each registration is what `global` makes it: the `global` lock taken on
every node, the name sent to every node, the lock released; so a rate is
about five cluster round trips. Prints `RESULT workload=global_register_3nodes`
(ours), `global_register_3nodes_erlang` and `global_register_ratio`
(ours / Erlang's). Run from the repository root: `python bench/bench_global.py [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import beamish
from beamish import Atom, dist
from beamish.cluster import global_

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3


def erlang_rate(count: int) -> float | None:
    """Registrations/s from an Erlang node to a cluster of three, best of ROUNDS."""
    erl = shutil.which("erl")
    if erl is None:
        return None
    cookie, suffix = secrets.token_hex(8), secrets.token_hex(3)
    others = [f"gbench_{i}_{suffix}@127.0.0.1" for i in (1, 2)]
    procs = [
        subprocess.Popen([erl, "-noshell", "-name", name, "-setcookie", cookie], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in others
    ]
    try:
        code = (
            "Ping = fun(S) -> lists:foldl(fun(_, pong) -> pong; (_, _) -> timer:sleep(100), net_adm:ping(S) end, pang, lists:seq(1, 50)) end, "
            f"[pong = Ping(S) || S <- ['{others[0]}', '{others[1]}']], ok = global:sync(), "
            f"Round = fun(R) -> Ps = [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, {count})], "
            "{T, _} = timer:tc(fun() -> [yes = global:register_name({b, R, I}, P) || {I, P} <- lists:enumerate(Ps)] end), "
            "[P ! stop || P <- Ps], T end, "
            f"io:format(\"~p~n\", [lists:min([Round(R) || R <- lists:seq(1, {ROUNDS})])]), halt()."
        )
        out = subprocess.run(
            [erl, "-noshell", "-name", f"gbench_0_{suffix}@127.0.0.1", "-setcookie", cookie, "-eval", code],
            capture_output=True, text=True, timeout=300,
        ).stdout.strip()
        if not out:
            return None
        return count / (float(out.splitlines()[-1]) / 1e6)
    finally:
        for p in procs:
            p.kill()
            p.wait()


async def beamish_rate(count: int, peers: list[str], cookie: str) -> float:
    await dist.start(f"gbench_py_{os.getpid()}@127.0.0.1", cookie=cookie)
    try:
        for peer in peers:
            for _ in range(100):
                if await dist.ping(peer) == "pong":
                    break
                await beamish.to_thread(time.sleep, 0.1)
        await global_.sync()
        best = float("inf")
        for r in range(ROUNDS):
            pids = [beamish.spawn(lambda: beamish.receive()) for _ in range(count)]
            start = time.perf_counter()
            for i, pid in enumerate(pids):
                assert await global_.register_name((Atom("b"), r, i), pid)
            best = min(best, time.perf_counter() - start)
            for pid in pids:
                beamish.exit(pid, "kill")
        return count / best
    finally:
        await dist.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    count = 50 if parser.parse_args().quick else 1000
    cookie = secrets.token_hex(8)
    peers = [f"gbench_py{i}_{os.getpid()}@127.0.0.1" for i in (1, 2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "beamish", "node", "--name", peer, "--cookie", cookie],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        )
        for peer in peers
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            p.stdout.readline()  # "node ... up on ...": registered and listening
        ours = beamish.run(beamish_rate, count, peers, cookie)
    finally:
        for p in procs:
            p.kill()
            p.communicate(timeout=10)
    print(f"RESULT workload=global_register_3nodes value={ours:.1f} unit=regs/s", flush=True)
    theirs = erlang_rate(count)
    if theirs is not None:
        print(f"RESULT workload=global_register_3nodes_erlang value={theirs:.1f} unit=regs/s", flush=True)
        print(f"RESULT workload=global_register_ratio value={ours / theirs:.3f} unit=x", flush=True)


if __name__ == "__main__":
    main()
