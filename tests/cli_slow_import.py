"""An application module whose import waits for a line on stdin: the test
holds `beamish run` inside its import (before any event loop or node exists)
for as long as it needs to signal it there."""

import os
import sys

import beamish

if os.environ.get("HOLD_IMPORT") == "1":  # not when pytest's doctest collection imports it
    print("cli_slow_import: importing", flush=True)
    sys.stdin.readline()


class Quiet(beamish.Application):
    """Never started in the tests: they stop the node during the import."""

    name = "quiet"
