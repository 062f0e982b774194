"""The allow-list peers' rpc and spawn requests go through: a module entry
exposes what the module defines or names in `__all__`, never what it imports."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from beamish.dist._allow import REFUSED, UNDEF, AllowList
from tests.dist import rpc_targets


def test_a_module_entry_exposes_the_functions_it_defines() -> None:
    allow = AllowList(["tests.dist.rpc_targets"])
    assert allow.lookup("tests.dist.rpc_targets", "double") is rpc_targets.double


def test_a_module_entry_does_not_expose_what_the_module_imports() -> None:
    allow = AllowList(["tests.dist.rpc_targets"])
    assert allow.lookup("tests.dist.rpc_targets", "getoutput") is UNDEF
    assert allow.lookup("tests.dist.rpc_targets", "Term") is UNDEF


def test_names_in_all_are_exposed_wherever_they_were_defined() -> None:
    allow = AllowList(["json"])
    assert "JSONDecoder" in json.__all__ and json.JSONDecoder.__module__ != "json"
    assert allow.lookup("json", "JSONDecoder") is json.JSONDecoder


def test_a_function_entry_exposes_that_function_only() -> None:
    allow = AllowList(["math:sqrt", "tests.dist.rpc_targets:getoutput"])
    assert allow.lookup("math", "sqrt") is math.sqrt
    assert allow.lookup("math", "pow") is REFUSED
    assert allow.lookup("tests.dist.rpc_targets", "getoutput") is subprocess.getoutput
    assert allow.lookup("tests.dist.rpc_targets", "double") is REFUSED


def test_missing_private_and_unlisted_targets() -> None:
    allow = AllowList(["tests.dist.rpc_targets", "no.such.module"])
    assert allow.lookup("tests.dist.rpc_targets", "triple") is UNDEF
    assert allow.lookup("tests.dist.rpc_targets", "__loader__") is UNDEF
    assert allow.lookup("no.such.module", "f") is UNDEF
    assert allow.lookup("os", "system") is REFUSED
    assert not AllowList([]) and AllowList(["math"])


def test_where_a_plain_target_runs_its_entry_says_else_its_module_else_the_list() -> None:
    rpc = AllowList(["json", "math@loop", "math:fabs@pool", "os.path:join"], default="pool")
    assert not rpc.on_loop("json", "dumps")  # the rpc list's default: the pool
    assert rpc.on_loop("math", "sqrt") and not rpc.on_loop("math", "fabs")
    assert not rpc.on_loop("os.path", "join")
    assert AllowList(["json"]).on_loop("json", "dumps")  # a spawn list's: the loop
    with pytest.raises(ValueError, match="'@loop' or '@pool'"):
        AllowList(["json@thread"])
