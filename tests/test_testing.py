"""beamish.testing: the assertions, and the pytest plugin run on real test files."""

from __future__ import annotations

import pytest

import beamish
from beamish.testing import ANY, assert_receive, refute_receive, wait_for_exit

pytest_plugins = ["pytester"]


async def test_assert_receive_takes_the_first_match_and_leaves_the_rest_in_order() -> None:
    me = beamish.self()
    for msg in ("a", ("b", 1), "c", ("b", 2)):
        beamish.send(me, msg)
    assert await assert_receive(("b", int)) == ("b", 1)
    assert await assert_receive(lambda m: m == ("b", 2)) == ("b", 2)
    assert [await beamish.receive(), await beamish.receive()] == ["a", "c"]


async def test_assert_receive_failure_shows_the_mailbox() -> None:
    beamish.send(beamish.self(), ("other", 1))
    with pytest.raises(AssertionError, match=r"no message matching \('wanted', ANY\).*\('other', 1\)"):
        await assert_receive(("wanted", ANY), timeout=0.01)
    # The failed assertion took nothing out of the mailbox.
    assert await beamish.receive(timeout=0) == ("other", 1)


async def test_assert_receive_waits_for_a_late_message() -> None:
    beamish.send_after(beamish.self(), "late", 0.02)
    assert await assert_receive("late", timeout=1.0) == "late"


async def test_refute_receive_fails_on_a_matching_message_and_ignores_others() -> None:
    me = beamish.self()
    beamish.send(me, "harmless")
    await refute_receive("bad", timeout=0.01)
    beamish.send(me, "bad")
    with pytest.raises(AssertionError, match="unexpectedly received 'bad'"):
        await refute_receive("bad", timeout=0.01)
    assert await beamish.receive(timeout=0) == "harmless"


async def test_wait_for_exit_returns_the_reason_or_times_out() -> None:
    async def crash() -> None:
        raise beamish.Exit("boom")

    pid = beamish.spawn(crash)
    assert await wait_for_exit(pid) == "boom"
    assert await wait_for_exit(pid) == "noproc"
    sleeper = beamish.spawn(beamish.receive)
    with pytest.raises(TimeoutError, match="still alive"):
        await wait_for_exit(sleeper, timeout=0.01)
    # The monitor of the timed-out wait was removed, with any DOWN it sent.
    beamish.exit(sleeper, "kill")
    await refute_receive(("DOWN", ANY, ANY, ANY, ANY), timeout=0.01)


PLUGIN_TESTS = '''
import pytest
import beamish
from beamish import GenServer
from beamish.testing import start_supervised

terminated = []


class Probe(GenServer):
    def init(self, arg):
        beamish.process_flag("trap_exit", True)
        return arg

    def terminate(self, reason, state):
        terminated.append((state, reason))


async def test_runs_inside_a_node():
    assert isinstance(beamish.self(), beamish.Pid)
    beamish.register("taken", beamish.self())


async def test_names_do_not_leak_between_tests():
    assert beamish.whereis("taken") is None


@pytest.mark.beamish(name="custom@127.0.0.1")
async def test_marker_options_reach_the_node():
    assert beamish.self().node == "custom@127.0.0.1"


async def test_start_supervised_children_stop_at_the_end():
    await start_supervised(Probe.child_spec("first"))
    await start_supervised({"id": "second", "start": (Probe.start_link, ("second",))})


def test_they_stopped_in_reverse_order():
    assert terminated == [("second", "shutdown"), ("first", "shutdown")]


async def test_a_failing_async_test_fails():
    assert 1 == 2
'''


def test_the_plugin_runs_async_tests_in_fresh_nodes(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nbeamish_mode = true\n")
    pytester.makepyfile(test_plugin_user=PLUGIN_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*test_a_failing_async_test_fails*"])


def test_without_beamish_mode_async_tests_are_not_taken_over(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_off="""
import pytest

@pytest.mark.beamish
async def test_marked():
    import beamish
    assert isinstance(beamish.self(), beamish.Pid)
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
