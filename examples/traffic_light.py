"""The tutorial's TrafficLight, a GenStateMachine in `state_functions` mode.

It is the seed's Elixir module translated line by line:

    defmodule TrafficLight do
      use GenStateMachine, callback_mode: :state_functions
      def start_link do
        GenStateMachine.start_link(__MODULE__, :red, name: __MODULE__)
      end
      def next_light do
        GenStateMachine.call(__MODULE__, :next)
      end
      def red(:call, :next, _data) do
        {:next_state, :yellow, :red_data, [{:state_timeout, 3000, :timeout}]}
      end
      def yellow(:call, :next, _data) do
        {:next_state, :green, :yellow_data, [{:state_timeout, 5000, :timeout}]}
      end
      def green(:call, :next, _data) do
        {:next_state, :red, :green_data, [{:state_timeout, 10000, :timeout}]}
      end
    end

Three things the seed leaves out, without which it would not run: a call's
event type is `{:call, from}` and the caller waits for a reply, so each
`next` clause replies with the new light; the `:state_timeout` it sets must
be handled, so each state has a clause that moves on when it fires ("the
system automatically transitions after a certain time"); and a
`current_light` call reads the state. Times are the seed's milliseconds sped
up 50 times, so a whole cycle takes 0.36 s.

Run: `python examples/traffic_light.py`.
"""

from __future__ import annotations

import asyncio

import beamish
from beamish import GenStateMachine, Pid, Term
from beamish.gen_statem import (
    KeepStateAndData,
    NextState,
    Reply,
    Result,
    StateTimeout,
)

SPEEDUP = 50


def ms(milliseconds: int) -> float:
    """The seed's milliseconds as (sped-up) seconds."""
    return milliseconds / 1000 / SPEEDUP


# Client API (module functions: the Elixir module's public functions)


async def start_link() -> Pid:
    return await TrafficLight.start_link("red", name="TrafficLight")


async def next_light() -> Term:
    return await GenStateMachine.call("TrafficLight", "next")


async def current_light() -> Term:
    return await GenStateMachine.call("TrafficLight", "current")


# State functions - each state has its own function


class TrafficLight(GenStateMachine, callback_mode="state_functions"):
    def red(self, event_type: Term, event: Term, data: Term) -> Result:
        match event_type, event:
            case ("call", from_), "next":
                return NextState(
                    "yellow",
                    "red_data",
                    [StateTimeout(ms(3000), "timeout"), Reply(from_, "yellow")],
                )
            case "state_timeout", "timeout":
                print("  state timeout: red -> yellow")
                return NextState("yellow", "red_data", [StateTimeout(ms(3000), "timeout")])
            case ("call", from_), "current":
                return KeepStateAndData([Reply(from_, "red")])
        return KeepStateAndData()

    def yellow(self, event_type: Term, event: Term, data: Term) -> Result:
        match event_type, event:
            case ("call", from_), "next":
                return NextState(
                    "green",
                    "yellow_data",
                    [StateTimeout(ms(5000), "timeout"), Reply(from_, "green")],
                )
            case "state_timeout", "timeout":
                print("  state timeout: yellow -> green")
                return NextState("green", "yellow_data", [StateTimeout(ms(5000), "timeout")])
            case ("call", from_), "current":
                return KeepStateAndData([Reply(from_, "yellow")])
        return KeepStateAndData()

    def green(self, event_type: Term, event: Term, data: Term) -> Result:
        match event_type, event:
            case ("call", from_), "next":
                return NextState(
                    "red", "green_data", [StateTimeout(ms(10000), "timeout"), Reply(from_, "red")]
                )
            case "state_timeout", "timeout":
                print("  state timeout: green -> red")
                return NextState("red", "green_data", [StateTimeout(ms(10000), "timeout")])
            case ("call", from_), "current":
                return KeepStateAndData([Reply(from_, "green")])
        return KeepStateAndData()


async def main() -> None:
    await start_link()
    print(f"the light starts at {await current_light()}")
    print(f"next_light() switches it to {await next_light()}; from now on state timeouts drive it:")
    await asyncio.sleep(1.0)
    print(f"after about a second the light is {await current_light()}")
    await GenStateMachine.stop("TrafficLight")
    print("stopped")


if __name__ == "__main__":
    beamish.run(main)
