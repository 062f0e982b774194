"""A node that answers `ping` on stdin with `pong` and stops at any other
line, its watchdog on (lag_threshold 0.1 s), logging to stderr: a test stops
and continues its OS process (SIGSTOP/SIGCONT) in between."""

from __future__ import annotations

import logging
import sys


def main() -> None:
    import beamish

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    async def serve() -> None:
        while (await beamish.to_thread(sys.stdin.readline)).strip() == "ping":
            print("pong", flush=True)

    beamish.run(serve, lag_threshold=0.1)


if __name__ == "__main__":
    main()
