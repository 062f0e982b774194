"""beamish: Erlang/OTP's process model, done properly in Python on asyncio.

Processes with mailboxes, links and monitors; GenServer, Supervisor,
DynamicSupervisor, Task, Agent and Registry with OTP's semantics; and (in
`beamish.dist`) the real Erlang distribution protocol.

>>> import beamish
>>> async def main():
...     pid = beamish.spawn(lambda: None)
...     ref = beamish.monitor(pid)
...     return await beamish.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
>>> beamish.run(main)[4]
Atom('normal')
"""

from . import application, config, sys
from ._gen import ChildSpec, From, StartError
from .agent import Agent
from .application import Application, ApplicationError
from .breaker import CircuitBreaker, CircuitOpen
from .dynamic_supervisor import DynamicSupervisor
from .gen_event import GenEvent
from .gen_server import Continue, GenServer, Hibernate, Ignore, NoReply, Ok, Reply, Stop
from .gen_statem import GenStateMachine
from .node import Node, run
from .process import (
    BadArg,
    Exit,
    ProcessInfo,
    Timer,
    cancel_timer,
    demonitor,
    exit,
    is_alive,
    link,
    make_ref,
    monitor,
    process_flag,
    process_info,
    receive,
    register,
    registered,
    self,
    send,
    send_after,
    spawn,
    spawn_link,
    spawn_monitor,
    to_thread,
    unlink,
    unregister,
    whereis,
)
from .registry import AlreadyRegistered, Registry
from .supervisor import Supervisor
from .task import Task, TaskSupervisor
from .terms import Atom, Pid, Port, Ref, Term

__all__ = [
    "Agent",
    "AlreadyRegistered",
    "Application",
    "ApplicationError",
    "Atom",
    "BadArg",
    "ChildSpec",
    "CircuitBreaker",
    "CircuitOpen",
    "Continue",
    "DynamicSupervisor",
    "Exit",
    "From",
    "GenEvent",
    "GenServer",
    "GenStateMachine",
    "Hibernate",
    "Ignore",
    "NoReply",
    "Node",
    "Ok",
    "Pid",
    "Port",
    "ProcessInfo",
    "Ref",
    "Registry",
    "Reply",
    "StartError",
    "Stop",
    "Supervisor",
    "Task",
    "TaskSupervisor",
    "Term",
    "Timer",
    "application",
    "cancel_timer",
    "config",
    "demonitor",
    "exit",
    "is_alive",
    "link",
    "make_ref",
    "monitor",
    "process_flag",
    "process_info",
    "receive",
    "register",
    "registered",
    "run",
    "self",
    "send",
    "send_after",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "sys",
    "to_thread",
    "unlink",
    "unregister",
    "whereis",
]
