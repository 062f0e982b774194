"""The atoms of OTP's vocabulary that the runtime and the behaviours speak,
each defined once: exit reasons, message tags, call labels and results.

A module names what it needs from here (`from ._atoms import NOPROC`), never
`Atom("noproc")` again: one spelling, one object, compared by identity on the
hot paths. (The wire's own numbers and atoms live in `dist/control.py`.)
"""

from __future__ import annotations

from typing import Final

from .terms import Atom

__all__: list[str] = []  # private: the names below are imported one by one

# Exit reasons (erts).
NORMAL: Final = Atom("normal")
KILL: Final = Atom("kill")
KILLED: Final = Atom("killed")
SHUTDOWN: Final = Atom("shutdown")
NOPROC: Final = Atom("noproc")
NODEDOWN: Final = Atom("nodedown")
NOCONNECTION: Final = Atom("noconnection")
TIMEOUT: Final = Atom("timeout")
CALLING_SELF: Final = Atom("calling_self")

# Signals as messages.
EXIT: Final = Atom("EXIT")
DOWN: Final = Atom("DOWN")
PROCESS: Final = Atom("process")

# gen, proc_lib and the behaviours.
GEN: Final = Atom("gen")
PROC_LIB: Final = Atom("proc_lib")
GEN_CALL: Final = Atom("$gen_call")
GEN_CAST: Final = Atom("$gen_cast")
SYSTEM: Final = Atom("system")
CALL: Final = Atom("call")
STOP: Final = Atom("stop")
TERMINATE: Final = Atom("terminate")
OK: Final = Atom("ok")
ERROR: Final = Atom("error")
IGNORE: Final = Atom("ignore")
UNDEFINED: Final = Atom("undefined")
ALREADY_STARTED: Final = Atom("already_started")
ALREADY_PRESENT: Final = Atom("already_present")
BAD_CALL: Final = Atom("bad_call")
BAD_CAST: Final = Atom("bad_cast")
REMOVE_HANDLER: Final = Atom("remove_handler")
