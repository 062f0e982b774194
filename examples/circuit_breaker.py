"""The tutorial's CircuitBreaker, translated line by line, then the library's.

The seed's Elixir module is a GenServer registered through a Registry:

    defmodule CircuitBreaker do
      use GenServer
      def start_link(name) do
        GenServer.start_link(__MODULE__, name, name: {:via, Registry, {MyRegistry, name}})
      end
      def call(name, fun) do
        GenServer.call({:via, Registry, {MyRegistry, name}}, {:call, fun})
      end
      def init(name) do
        {:ok, %{name: name, state: :closed, failure_count: 0, last_failure_time: nil,
                threshold: 5, timeout: 60_000}}
      end
      def handle_call({:call, fun}, _from, state) do
        case state.state do
          :open -> if should_attempt_reset?(state) do
                     attempt_call(fun, %{state | state: :half_open})
                   else {:reply, {:error, :circuit_open}, state} end
          :closed -> attempt_call(fun, state)
          :half_open -> attempt_call(fun, state)
        end
      end
      defp attempt_call(fun, state) do ... end          # below, as _attempt_call
      defp should_attempt_reset?(state) do ... end      # below, as _should_attempt_reset
    end

Two things differ from a literal reading: the tutorial never starts
`MyRegistry`, so `main` does; and its timeout is 60 s, shortened here to 0.2 s.
The seed's version runs `fun` inside the breaker's process, so one slow call
holds up every caller; `beamish.CircuitBreaker` (the second half) runs it in
the caller and keeps the process for the transitions.

Run: `python examples/circuit_breaker.py`.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable

import beamish
from beamish import CircuitBreaker, CircuitOpen, From, GenServer, Registry, Reply, Term

TIMEOUT_MS = 200  # the seed's 60_000, shortened


# The seed's module, line by line ------------------------------------------------------


class SeedCircuitBreaker(GenServer):
    @staticmethod
    async def start_link_named(name: str) -> Term:
        return await SeedCircuitBreaker.start_link(name, name=("via", Registry, ("MyRegistry", name)))

    @staticmethod
    async def call_named(name: str, fun: Callable[[], Term]) -> Term:
        return await GenServer.call(("via", Registry, ("MyRegistry", name)), ("call", fun))

    def init(self, name: str) -> dict[str, Term]:
        return {
            "name": name,
            "state": "closed",
            "failure_count": 0,
            "last_failure_time": None,
            "threshold": 5,
            "timeout": TIMEOUT_MS,
        }

    def handle_call(self, request: Term, from_: From, state: dict[str, Term]) -> Reply:
        match request:
            case ("call", fun):
                match state["state"]:
                    case "open":
                        if _should_attempt_reset(state):
                            # Try to reset the circuit
                            return _attempt_call(fun, {**state, "state": "half_open"})
                        return Reply(("error", "circuit_open"), state)
                    case "closed":
                        return _attempt_call(fun, state)
                    case "half_open":
                        return _attempt_call(fun, state)
        return Reply(("error", "unknown"), state)


def _attempt_call(fun: Callable[[], Term], state: dict[str, Term]) -> Reply:
    try:
        result = fun()
        new_state = {**state, "state": "closed", "failure_count": 0, "last_failure_time": None}
        return Reply(("ok", result), new_state)
    except Exception:
        new_failure_count = state["failure_count"] + 1
        new_state = {**state, "failure_count": new_failure_count, "last_failure_time": datetime.datetime.now(datetime.UTC)}
        if new_failure_count >= state["threshold"]:
            return Reply(("error", "circuit_open"), {**new_state, "state": "open"})
        return Reply(("error", "service_failed"), new_state)


def _should_attempt_reset(state: dict[str, Term]) -> bool:
    match state["last_failure_time"]:
        case None:
            return True
        case time:
            elapsed = datetime.datetime.now(datetime.UTC) - time
            return bool(elapsed.total_seconds() * 1000 > state["timeout"])


# ---------------------------------------------------------------------------------------


def user_service_down() -> Term:
    raise ConnectionError("user service unreachable")


def user_service_up() -> Term:
    return {"id": 1, "name": "John"}


async def main() -> None:
    await Registry.start_link(keys="unique", name="MyRegistry")
    await SeedCircuitBreaker.start_link_named("user_service")
    print("the seed's breaker:")
    for i in range(1, 7):
        print(f"  call {i} to a failing service: {await SeedCircuitBreaker.call_named('user_service', user_service_down)}")
    await asyncio.sleep(TIMEOUT_MS / 1000 + 0.05)
    print(f"  after the timeout, a half-open trial: {await SeedCircuitBreaker.call_named('user_service', user_service_up)}")

    print("beamish.CircuitBreaker (fn runs in the caller):")
    await CircuitBreaker.start_link(
        "order_service", registry="MyRegistry", consecutive_failures=5,
        wait_duration_in_open_state=TIMEOUT_MS / 1000, permitted_calls_in_half_open=1,
    )
    for i in range(1, 7):
        try:
            await CircuitBreaker.call("order_service", user_service_down)
        except ConnectionError as exc:
            print(f"  call {i}: failed ({exc})")
        except CircuitOpen as exc:
            print(f"  call {i}: circuit open, retry after {exc.retry_after:.1f} s")
    print(f"  state: {await CircuitBreaker.state('order_service')}")
    await asyncio.sleep(TIMEOUT_MS / 1000 + 0.05)
    print(f"  after the wait: {await CircuitBreaker.state('order_service')}")
    print(f"  a trial call: {await CircuitBreaker.call('order_service', user_service_up)}")
    metrics = await CircuitBreaker.metrics("order_service")
    print(f"  state: {metrics.state}; calls {metrics.calls}, failures {metrics.failures}, rejections {metrics.rejections}")


if __name__ == "__main__":
    beamish.run(main)
