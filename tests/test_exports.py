"""The public surface, pinned literally (trio's `test_exports.py`): every
public module's `__all__`, each public object at exactly one path, and the
examples, docs and docstrings importing each name from that path.

A change here is a change of the public API: it belongs in CHANGELOG.md.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import beamish

ROOT = Path(__file__).parent.parent

PUBLIC: dict[str, list[str]] = {
    "beamish": [
        "Agent", "AlreadyRegistered", "Application", "ApplicationError", "Atom", "BadArg",
        "ChildSpec", "CircuitBreaker", "CircuitOpen", "Continue", "DynamicSupervisor", "Exit", "From", "GenEvent", "GenServer",
        "GenStateMachine", "Hibernate", "Ignore", "NoReply", "Node", "Ok", "Pid", "Port",
        "ProcessInfo", "Ref", "Registry", "Reply", "StartError", "Stop", "Supervisor", "Task",
        "TaskSupervisor", "Term", "Timer", "application", "cancel_timer", "config", "demonitor",
        "exit", "is_alive", "link", "make_ref", "monitor", "process_flag", "process_info",
        "receive", "register", "registered", "run", "self", "send", "send_after", "spawn",
        "spawn_link", "spawn_monitor", "sys", "to_thread", "unlink", "unregister", "whereis",
    ],
    "beamish.agent": [],
    "beamish.application": [
        "RestartType", "StartType", "delete_env", "ensure_all_started", "fetch_env",
        "get_all_env", "get_env", "load", "load_config", "loaded_applications", "put_env",
        "reload_config", "start", "stop", "stop_all", "which_applications",
    ],
    "beamish.breaker": ["Metrics", "State"],
    "beamish.cli": ["SUBCOMMANDS", "Subcommand", "main"],
    "beamish.cluster.global_": [
        "del_lock", "re_register_name", "register_name", "registered_names", "send", "set_lock", "sync", "trans",
        "unregister_name", "whereis_name",
    ],
    "beamish.config": ["Config", "ConfigError", "FILES", "Problem", "env", "load", "validate"],
    "beamish.dynamic_supervisor": [],
    "beamish.gen_event": ["EventHandler", "EventResult", "REMOVE"],
    "beamish.gen_server": [],
    "beamish.gen_statem": [
        "Action", "Actions", "EventTimeout", "GenericTimeout", "Init", "KeepState",
        "KeepStateAndData", "NextEvent", "NextState", "Postpone", "RepeatState",
        "RepeatStateAndData", "Reply", "Result", "StateTimeout", "Stop", "StopAndReply",
    ],
    "beamish.node": ["Distribution", "current_node"],
    "beamish.process": ["Dest", "Process", "current"],
    "beamish.registry": [],
    "beamish.supervisor": ["SupFlags"],
    "beamish.recon": ["proc_count", "proc_window"],
    "beamish.observer": ["MetricsExporter", "Observer", "metric_names", "serve", "serve_metrics"],
    "beamish.observer.metrics": [],
    "beamish.sys": [
        "Status", "get_state", "get_status", "replace_state", "resume", "statistics", "suspend", "terminate",
        "trace",
    ],
    "beamish.task": [],
    "beamish.trace": ["start", "stop"],
    "beamish.telemetry": ["HandlerInfo", "attach", "attach_many", "detach", "execute", "list_handlers", "listened", "span"],
    "beamish.terms": ["ImproperList"],
    "beamish.testing": [
        "ANY", "assert_receive", "eventually", "matches", "refute_receive", "start_supervised",
        "stop_supervised", "wait_for_exit",
    ],
    "beamish.cluster": [
        "Backoff", "Cluster", "Dns", "EpmdHosts", "PubSub", "Static", "Strategy", "Topology",
        "TopologyStatus", "discovery", "global_", "parse_topologies", "pg",
    ],
    "beamish.cluster.formation": [],
    "beamish.dist": [
        "LocalCluster", "TlsOptions", "connect", "disconnect", "get_cookie", "is_alive", "kernel",
        "monitor_node", "monitor_nodes", "node", "nodes", "ping", "run", "set_cookie", "spawn",
        "start", "stop",
    ],
    "beamish.dist.cookie": ["digest", "matches", "resolve"],
    "beamish.dist.epmd": ["EpmdError", "EpmdServer", "Registration", "ensure", "names", "port_please", "register"],
    "beamish.dist.etf": [
        "ACCELERATED", "BitBinary", "DecodeError", "EncodeError", "ExportFun", "FrozenList",
        "FrozenMap", "Fun", "Limits", "PrefixDecoder", "StructRegistry", "decode",
        "decode_prefix", "encode", "encode_into", "freeze", "register_struct",
    ],
    "beamish.dist.framing": ["FrameError", "FrameStream", "FrameTooLarge", "MessageTooLarge", "TickTimeout"],
    "beamish.dist.handshake": ["HandshakeError", "HandshakeResult", "Unreachable", "accept", "handshake_out", "initiate"],
    "beamish.dist.local_cluster": [],
    "beamish.dist.shell": ["SERVICE", "complete", "remsh", "serve"],
    "beamish.dist.rpc": ["BadRpc", "call", "cast"],
    "beamish.dist.tls": [],
    "beamish.cluster.discovery": [
        "Instance", "child_spec", "discover", "register_service", "report_load", "select", "start_link",
        "unregister_service", "unwatch", "watch",
    ],
    "beamish.cluster.pg": [
        "child_spec", "demonitor", "get_local_members", "get_members", "join", "leave", "monitor",
        "monitor_scope", "start", "start_link", "which_groups", "which_local_groups",
    ],
    "beamish.cluster.pubsub": [],
}  # fmt: skip

# Public modules that are a table of constants (wire numbers), not an API of
# objects, or a pytest entry point: their names are pinned elsewhere.
UNPINNED = {"beamish.__main__", "beamish.dist.control", "beamish.dist.flags", "beamish.testing.plugin"}


def public_modules() -> list[str]:
    found = ["beamish"]
    for info in pkgutil.walk_packages(beamish.__path__, "beamish."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            found.append(info.name)
    return found


def test_every_public_module_is_pinned() -> None:
    assert sorted(set(public_modules()) - UNPINNED) == sorted(PUBLIC)


def test_each_public_module_exports_exactly_what_is_pinned() -> None:
    for name, expected in PUBLIC.items():
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{name} has no __all__"
        assert sorted(exported) == sorted(expected), name
        missing = [n for n in exported if not hasattr(module, n)]
        assert not missing, f"{name}.__all__ names what it does not have: {missing}"


def test_each_public_object_is_at_one_path() -> None:
    seen: dict[int, str] = {}
    twice = []
    for name, exported in PUBLIC.items():
        module = importlib.import_module(name)
        for attr in exported:
            obj = getattr(module, attr)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # constants and aliases may be equal by chance
            where = f"{name}.{attr}"
            if id(obj) in seen:
                twice.append(f"{seen[id(obj)]} and {where}")
            seen[id(obj)] = where
    assert not twice, twice


IMPORT = re.compile(r"^(\s*(?:>>> )?)from (beamish(?:\.\w+)*) import \(?([\w, \n]+?)\)?$", re.M)


def test_examples_docs_and_docstrings_import_each_name_from_its_public_path() -> None:
    # What a user reads shows the public path: examples, README, docs, and the
    # doctests of the library (its own code imports from its modules; tests
    # may reach inside).
    readable = [*ROOT.glob("examples/**/*.py"), ROOT / "README.md", *ROOT.glob("docs/*.md")]
    library = list(ROOT.glob("src/beamish/**/*.py"))
    wrong = []
    for path in readable + library:
        for prefix, module, names in IMPORT.findall(path.read_text()):
            if module not in PUBLIC or (path in library and ">>>" not in prefix):
                continue
            for imported in (n.split(" as ")[0].strip() for n in names.replace("\n", ",").split(",")):
                submodule = f"{module}.{imported}" in PUBLIC or f"{module}.{imported}" in UNPINNED
                if imported and imported not in PUBLIC[module] and not submodule:
                    wrong.append(f"{path.relative_to(ROOT)}: {imported} from {module}")
    assert not wrong, wrong
