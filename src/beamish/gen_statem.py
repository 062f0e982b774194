"""GenStateMachine: a process that is a state machine (OTP's `gen_statem`).

A GenStateMachine holds a *state* (which situation it is in: `"locked"`,
`"open"`) and *data* (everything else), and reacts to *events*: calls, casts,
plain messages, timeouts, and events it inserts itself. Each callback gets
the event and returns a typed result saying what the next state and data are,
plus a list of *actions*: replies, timeouts, postponing the event, inserting
events. Use it instead of a GenServer when the same message means different
things in different states, or when timeouts depend on the state.

>>> import beamish
>>> from beamish import GenStateMachine
>>> from beamish.gen_statem import NextState, Reply
>>> class Switch(GenStateMachine, callback_mode="state_functions"):
...     def off(self, event_type, event, flips):
...         match event_type, event:
...             case ("call", from_), "flip":
...                 return NextState("on", flips + 1, [Reply(from_, "on")])
...     def on(self, event_type, event, flips):
...         match event_type, event:
...             case ("call", from_), "flip":
...                 return NextState("off", flips + 1, [Reply(from_, "off")])
>>> async def main():
...     pid = await Switch.start_link(("off", 0))
...     return [await GenStateMachine.call(pid, "flip") for _ in range(3)]
>>> beamish.run(main)
['on', 'off', 'on']

## Callback modes

Chosen with a class keyword or a class attribute, as `use GenStateMachine,
callback_mode: ...` chooses it in Elixir:

- `callback_mode="state_functions"`: one method per state, named after it,
  `def locked(self, event_type, event, data)`. States are then strings that
  are valid method names and not the name of a GenStateMachine attribute
  (`init`, `call`, `stop`, ...). An event in a state without a method stops
  the machine with reason `("undef_state_function", state)`.
- `callback_mode="handle_event_function"` (the default, as in Elixir): one
  `handle_event(self, event_type, event, state, data)`; states may be any
  term.

`state_enter=True` (keyword or attribute) turns on state enter calls.

## Events

`event_type` reads like OTP's, so a `match` looks like an Erlang clause:

| event | `event_type` | `event` |
|---|---|---|
| `GenStateMachine.call` | `("call", from_)` | the request; answer with `Reply(from_, value)` |
| `GenStateMachine.cast` | `"cast"` | the request |
| any other message | `"info"` | the message |
| event timeout | `"timeout"` | the timeout's content |
| state timeout | `"state_timeout"` | the timeout's content |
| generic timeout `name` | `("timeout", name)` | the timeout's content |
| `NextEvent("internal", x)` | `"internal"` | `x` |
| state enter call | `"enter"` | the previous state |

## Results

`init(arg)` returns `Init(state, data, actions)`, `Ignore()` or
`Stop(reason)`; by default `arg` is `(state, data)` (a bare `arg` is the
state, with data None). Callbacks return `NextState(state, data, actions)`,
`KeepState(data, actions)`, `KeepStateAndData(actions)`,
`RepeatState(data, actions)`, `RepeatStateAndData(actions)`,
`Stop(reason, data)` or `StopAndReply(reason, replies, data)`. `actions` is
one action or a list of them, applied in order.

## Actions

- `Reply(from_, value)`: answer a call (now; or later with
  `GenStateMachine.reply(from_, value)`).
- `Postpone()`: keep this event and retry it, in arrival order, after the
  next state *change*.
- `NextEvent(event_type, content)`: handle this event next, before anything
  in the mailbox; several are handled in the order given.
- `EventTimeout(seconds, content)`, or a bare number of seconds: an event
  timeout, cancelled by any event (an inserted or retried event counts).
- `StateTimeout(seconds, content)`: cancelled by a state change; setting it
  again restarts it.
- `GenericTimeout(name, seconds, content)`: cancelled only by setting it
  again or cancelling it; several may run at once under different names.
- `Hibernate()`: accepted; an idle beamish process is already small.

For each timeout, `seconds=None` (infinity) or `"cancel"` cancels it,
`"update"` changes the content of the running timer (or, if none runs,
delivers the event at once, as a zero timeout does), and `0` delivers the
event after the events already queued, before any new message. When the
same timeout is set twice in one result, the last one wins.

## State enter calls

With `state_enter=True`, entering a state (at init, on every state change,
and on `RepeatState`/`RepeatStateAndData`) first calls the state's callback
with event type `"enter"` and the previous state as the event. An enter call
may not change the state (`NextState` must name the current one), postpone,
or insert events: doing so stops the machine with a `TypeError`.

## Failure

An invalid result or action stops the machine with a `TypeError` naming the
callback and the value, a callback that raises stops it with that exception,
and `terminate(reason, state, data)` runs first. Calls behave as
`GenServer.call`'s: `noproc` at once, `timeout` with the late reply dropped,
and the server's exit reason when it dies during the call.

OTP: mirrors `gen_statem` (and Elixir's `GenStateMachine`), including its rules
for queue order, timeout cancellation and zero timeouts; differs in that results and actions are
typed objects, timeouts are relative seconds only (no `{abs, true}`), there is
no `change_callback_module`/`code_change`/`format_status`, states passed to
`state_functions` must be method names, and the default `init` also accepts a
bare initial state.
"""

from __future__ import annotations

import logging
import types
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Literal, TypeAlias

from . import _gen, _sys
from ._atoms import BAD_CALL, BAD_CAST, CALL, EXIT, GEN_CALL, GEN_CAST, NORMAL, SYSTEM, TIMEOUT
from ._gen import From
from .gen_server import KEEP, Hibernate, Ignore
from .process import Dest, Exit, Handler, Process
from .terms import Atom, Pid, Term

# GenStateMachine, Hibernate and Ignore are public as `beamish.<name>`; these are gen_statem's own.
__all__ = ["Action", "Actions", "EventTimeout", "GenericTimeout", "Init", "KeepState", "KeepStateAndData", "NextEvent", "NextState", "Postpone", "RepeatState", "RepeatStateAndData", "Reply", "Result", "StateTimeout", "Stop", "StopAndReply"]

log = logging.getLogger("beamish")

CAST: Final = Atom("cast")
INFO: Final = Atom("info")
STATE_TIMEOUT: Final = Atom("state_timeout")
INTERNAL: Final = Atom("internal")
ENTER: Final = Atom("enter")
UNDEF_STATE_FUNCTION: Final = Atom("undef_state_function")


CallbackMode: TypeAlias = Literal["state_functions", "handle_event_function"]
TimeoutTime: TypeAlias = "float | Literal['cancel', 'update'] | None"


# --- actions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """Action: reply `value` to the call whose `from_` came in its event type
    (OTP `{reply, From, Reply}`)."""

    from_: From | tuple[Pid, Term]
    value: Term


@dataclass(frozen=True, slots=True)
class Postpone:
    """Action: keep the current event and retry it after the next state change
    (OTP `postpone`). Not allowed in a state enter call."""


@dataclass(frozen=True, slots=True)
class NextEvent:
    """Action: handle `(event_type, content)` next, before the mailbox (OTP
    `{next_event, Type, Content}`). `event_type` is `"internal"` (the usual
    one), `"cast"`, `"info"`, `"timeout"`, `"state_timeout"`,
    `("call", from_)` or `("timeout", name)`. Not allowed in a state enter call."""

    event_type: Term
    content: Term = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_type", _event_type(self.event_type))


def _check_time(what: str, seconds: object) -> None:
    if seconds is None or seconds in ("cancel", "update"):
        return
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError(
            f"{what}: invalid time {seconds!r}; seconds >= 0, None (infinity), 'cancel' or 'update'"
        )


@dataclass(frozen=True, slots=True)
class EventTimeout:
    """Action: an event timeout (OTP `{timeout, Time, Content}`): unless another
    event comes first, `("timeout", content)` arrives after `seconds`. A bare
    number in the actions means `EventTimeout(n, n)`, as in OTP."""

    seconds: TimeoutTime
    content: Term = None

    def __post_init__(self) -> None:
        _check_time("EventTimeout", self.seconds)


@dataclass(frozen=True, slots=True)
class StateTimeout:
    """Action: a state timeout (OTP `{state_timeout, Time, Content}`):
    `("state_timeout", content)` arrives after `seconds` unless the state
    changes first."""

    seconds: TimeoutTime
    content: Term = None

    def __post_init__(self) -> None:
        _check_time("StateTimeout", self.seconds)


@dataclass(frozen=True, slots=True)
class GenericTimeout:
    """Action: a generic timeout named `name` (OTP `{{timeout, Name}, Time,
    Content}`): `(("timeout", name), content)` arrives after `seconds`
    unless it is set again or cancelled. `name` must be hashable."""

    name: Term
    seconds: TimeoutTime
    content: Term = None

    def __post_init__(self) -> None:
        _check_time("GenericTimeout", self.seconds)
        hash(self.name)


Action: TypeAlias = "Reply | Postpone | NextEvent | EventTimeout | StateTimeout | GenericTimeout | Hibernate | float"
Actions: TypeAlias = "Action | Sequence[Action]"
"""One action or a sequence of them."""


# --- results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Init:
    """From `init`: start in `state` with `data`, then apply `actions`
    (OTP `{ok, State, Data, Actions}`)."""

    state: Term
    data: Term
    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class NextState:
    """Go to `state` with `data` (OTP `{next_state, ...}`); a different state
    is a state change: postponed events are retried and the state timeout is
    cancelled."""

    state: Term
    data: Term
    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class KeepState:
    """Stay in the current state with new `data` (OTP `{keep_state, ...}`)."""

    data: Term
    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class KeepStateAndData:
    """Change neither state nor data (OTP `keep_state_and_data`)."""

    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class RepeatState:
    """Like `KeepState`, but run the state enter call again if enabled (OTP
    `{repeat_state, ...}`). It is not a state change."""

    data: Term
    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class RepeatStateAndData:
    """Like `KeepStateAndData`, but run the state enter call again if enabled
    (OTP `repeat_state_and_data`)."""

    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop with `reason`; `terminate(reason, state, data)` runs first. `data`
    defaults to the current data. From `init`: do not start, `start_link`
    raises `StartError(reason)`."""

    reason: Term = NORMAL
    data: Term = KEEP


@dataclass(frozen=True, slots=True)
class StopAndReply:
    """Send `replies` (one `Reply` or a sequence), then stop like `Stop` (OTP
    `{stop_and_reply, ...}`)."""

    reason: Term
    replies: Reply | Sequence[Reply]
    data: Term = KEEP


Result: TypeAlias = "NextState | KeepState | KeepStateAndData | RepeatState | RepeatStateAndData | Stop | StopAndReply"
"""What a state callback returns (or an async one resolves to)."""


class GenStateMachine(_gen.Behaviour):
    """Base class of state machines; subclass it, pick a callback mode and
    write the state callbacks.

    In `state_functions` mode each state is a method named after it, with
    the signature `(self, event_type, event, data)`, returning a `Result`
    (OTP `Module:StateName/3`); it may be `async def`. Nothing is inherited
    for them: an event in a state without one stops the machine with
    `("undef_state_function", state)`.

    Class keywords (or class attributes of the same names) configure it:
    `class Door(GenStateMachine, callback_mode="state_functions",
    state_enter=True, restart="transient", shutdown=10.0): ...`
    """

    callback_mode: ClassVar[CallbackMode] = "handle_event_function"
    state_enter: ClassVar[bool] = False
    _behaviour: ClassVar[str] = "GenStateMachine"

    def __init_subclass__(
        cls,
        *,
        callback_mode: CallbackMode | None = None,
        state_enter: bool | None = None,
        restart: _gen.Restart | None = None,
        shutdown: float | Literal["brutal_kill"] | _gen.NotGiven | None = _gen.NOT_GIVEN,
        **kwargs: object,
    ) -> None:
        super().__init_subclass__(restart=restart, shutdown=shutdown, **kwargs)
        if callback_mode is not None:
            cls.callback_mode = callback_mode
        if state_enter is not None:
            cls.state_enter = state_enter
        if cls.callback_mode not in ("state_functions", "handle_event_function"):
            raise ValueError(
                f"{cls.__qualname__}: invalid callback_mode {cls.callback_mode!r}; "
                "'state_functions' or 'handle_event_function'"
            )

    # The client API (start_link, start, child_spec, call, cast, reply, stop,
    # whereis) is _gen.Behaviour's. A call arrives as a ("call", from_) event
    # and a cast as a "cast" event; the initial state enter call and init's
    # actions run after start_link returns, as in OTP.

    # --- callbacks ------------------------------------------------------------

    def init(self, arg: Term) -> Init | Ignore | Stop | Awaitable[Init | Ignore | Stop]:
        """Runs in the new process before `start_link` returns (OTP `init/1`).

        Return `Init(state, data, actions)`, `Ignore()` or `Stop(reason)`.
        Default: `arg` is `(state, data)` as in Elixir's GenStateMachine; any
        other `arg` is the initial state, with data None.
        """
        if type(arg) is tuple and len(arg) == 2:
            return Init(arg[0], arg[1])
        return Init(arg, None)

    def handle_event(
        self, event_type: Term, event: Term, state: Term, data: Term
    ) -> Result | Awaitable[Result]:
        """Every event, in `handle_event_function` mode (OTP `Module:handle_event/4`).

        Default, as Elixir's: a call or cast stops the machine with
        `("bad_call", request)` / `("bad_cast", request)`, an info message
        is logged and dropped, an enter call keeps state and data, and any
        other event stops it with `("bad_event", (event_type, event))`.
        """
        match event_type:
            case ("call", _):
                return Stop((BAD_CALL, event))
            case "cast":
                return Stop((BAD_CAST, event))
            case "info":
                log.warning(
                    "%s received unexpected message in handle_event: %r",
                    type(self).__qualname__,
                    event,
                )
                return KeepStateAndData()
            case "enter":
                return KeepStateAndData()
        return Stop((Atom("bad_event"), (event_type, event)))

    def terminate(self, reason: Term, state: Term, data: Term) -> Term | Awaitable[Term]:
        """The machine is stopping with `reason` (OTP `terminate/3`). Runs on a
        `Stop`/`StopAndReply` result, a crash in a callback,
        `GenStateMachine.stop`, and a shutdown from the parent when the
        machine traps exits. Default: nothing."""
        return None

    # --- internals ------------------------------------------------------------

    @classmethod
    async def _init_loop(cls, proc: Process, parent: Pid, arg: Term, name: Dest | None) -> Handler | None:
        machine = _Machine(proc, cls())
        machine.parent = parent
        return await machine.init(arg)


def _wrong_import(value: Term) -> str:
    """Two behaviours, two `Reply`s and `Stop`s: when GenServer's reached a
    GenStateMachine, name the right import."""
    if type(value).__module__ != "beamish.gen_server":
        return ""
    return (
        f" ({type(value).__name__} from beamish is GenServer's; a GenStateMachine uses"
        " beamish.gen_statem.Reply(from_, value) as an action and beamish.gen_statem.Stop(reason, data))"
    )


# A state_functions state may not be named like anything the base class has.
_RESERVED: Final = frozenset(dir(GenStateMachine))

_TIMEOUT_TYPES: Final = frozenset({TIMEOUT, STATE_TIMEOUT})
_PLAIN_EVENT_TYPES: Final = frozenset({INTERNAL, CAST, INFO, TIMEOUT, STATE_TIMEOUT})


def _event_type(value: Term) -> Term:
    """Validate an event type for `NextEvent`, returning it with Atoms."""
    if isinstance(value, str) and value in _PLAIN_EVENT_TYPES:
        return Atom(value)
    if type(value) is tuple and len(value) == 2:
        if value[0] == "call" and _is_from(value[1]):
            return (CALL, value[1])
        if value[0] == "timeout":
            hash(value[1])
            return (TIMEOUT, value[1])
    raise ValueError(
        f"invalid event type {value!r}: 'internal', 'cast', 'info', 'timeout', "
        "'state_timeout', ('call', from_) or ('timeout', name)"
    )


def _is_from(value: Term) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and type(value[0]) is Pid


class _Timer:
    """A running timeout; the object is also the message its timer delivers,
    so a cancelled timer's message is recognised as stale and dropped."""

    __slots__ = ("content", "handle", "kind")

    def __init__(self, kind: Term, content: Term) -> None:
        self.kind = kind
        self.content = content
        self.handle: Callable[[], None] | None = None  # cancels the loop timer; None for zero


class _Start:
    """The first message a machine handles: run init's actions and enter call."""

    __slots__ = ()


_START: Final = _Start()


class _Undefined(Exception):
    """A state_functions state without a method."""

    def __init__(self, state: Term) -> None:
        super().__init__(state)
        self.state: Term = state


@dataclass(slots=True)
class _Transition:
    """What a callback result (and its enter calls) asked for, before it is
    committed (OTP's loop_actions accumulators)."""

    state: Term
    data: Term
    next_events: list[tuple[Term, Term]]
    timeouts: list[EventTimeout | StateTimeout | GenericTimeout]
    postpone: bool = False
    stop: Term = None
    stopping: bool = False


_Step: TypeAlias = Generator[Awaitable[Term], Term, None]


class _Machine:
    """One machine's loop state (OTP keeps it in gen_statem's #state{} and #params{})."""

    __slots__ = (
        "data",
        "enter",
        "functions",
        "init_actions",
        "last",
        "mod",
        "node",
        "parent",
        "postponed",
        "proc",
        "queue",
        "state",
        "state_fns",
        "sys",
        "t0q",
        "timers",
    )

    otp_module = "gen_statem"

    def __init__(self, proc: Process, mod: GenStateMachine) -> None:
        self.proc = proc
        self.node = proc.node
        self.mod = mod
        self.parent: Pid = proc.pid
        self.functions = mod.callback_mode == "state_functions"
        self.enter = bool(mod.state_enter)
        self.state: Term = None
        self.data: Term = None
        self.init_actions: Actions = ()
        self.last: Term = None
        self.sys: _sys.SysState | None = None  # suspended, traced, counted (`beamish.sys`)
        self.queue: deque[tuple[Term, Term]] = deque()  # inserted and retried events
        self.postponed: list[tuple[Term, Term]] = []
        self.timers: dict[Term, _Timer] = {}
        self.t0q: list[Term] = []  # zero timeouts, due once the queue is empty
        self.state_fns: dict[str, Callable[..., Term]] = {}

    async def init(self, arg: Term) -> Handler | None:
        result: Term = self.mod.init(arg)
        if _gen.is_coroutine(result):
            result = await result
        t = type(result)
        if t is Ignore:
            return None
        if t is Stop:
            raise Exit(result.reason)
        if t is not Init:
            raise TypeError(
                f"{type(self.mod).__qualname__}.init returned an invalid result {result!r}; "
                "expected Init(state, data, actions), Ignore() or Stop(reason)"
            )
        self.state = result.state
        self.data = result.data
        self.init_actions = result.actions
        # OTP runs the initial actions and enter call after the start ack.
        proc = self.proc
        if proc.mailbox is None:
            proc.mailbox = deque()
        proc.mailbox.appendleft(_START)
        return self.handle

    def handle(self, msg: Term) -> Awaitable[None] | None:
        """The process's message handler: turn `msg` into an event (OTP loop_receive)."""
        t = type(msg)
        if t is tuple:
            n = len(msg)
            tag = msg[0] if n else None
            if n == 3:
                if tag == GEN_CALL:
                    return self._drive(self._run(((CALL, msg[1]), msg[2])))
                if tag == SYSTEM:
                    return self.system(msg[1], msg[2])
                if tag == EXIT and msg[1] == self.parent and self.proc.trap_exit:
                    return self._drive(self._terminate(msg[2]))
            elif n == 2 and tag == GEN_CAST:
                return self._drive(self._run((CAST, msg[1])))
        elif t is _Timer:
            timer: _Timer = msg
            kind = timer.kind
            if self.timers.get(kind) is not timer:
                return None  # cancelled after it fired
            del self.timers[kind]
            return self._drive(self._run((kind, timer.content)))
        elif msg is _START:
            return self._drive(self._run(None))
        return self._drive(self._run((INFO, msg)))

    def system(self, from_: Term, request: Term) -> Awaitable[None] | None:
        return _sys.handle(self, from_, request)

    # What `beamish._sys` asks of a gen_statem (its system_* callbacks): the
    # state is `(state, data)`, as OTP's `{State, Data}`.

    def sys_get_state(self) -> Term:
        return (self.state, self.data)

    def sys_replace_state(self, fn: Callable[[Term], Term]) -> Term:
        new = fn((self.state, self.data))
        if type(new) is not tuple or len(new) != 2:
            raise TypeError(f"a gen_statem's replace_state function returns (state, data), not {new!r}")
        self.state, self.data = new
        return new

    def sys_status(self) -> Term:
        name = self.proc.name or repr(self.proc.pid)
        return [
            (Atom("header"), f"Status for state machine {name}"),
            (Atom("data"), [("State", (self.state, self.data))]),
        ]

    def sys_terminate(self, reason: Term) -> Awaitable[None] | None:
        return self._drive(self._terminate(reason))

    # Callbacks may be sync or async: the event loop below is a generator that
    # yields only an awaitable a callback returned, so a machine whose
    # callbacks are all plain functions never creates an asyncio task.

    def _drive(self, steps: _Step) -> Awaitable[None] | None:
        try:
            pending = steps.send(None)
        except StopIteration:
            return None
        return self._drive_async(steps, pending)

    async def _drive_async(self, steps: _Step, pending: Awaitable[Term]) -> None:
        while True:
            try:
                value = await pending
            except Exception as exc:
                try:
                    pending = steps.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    pending = steps.send(value)
                except StopIteration:
                    return

    def _run(self, event: tuple[Term, Term] | None) -> _Step:
        """Handle `event` (None: the initial transition), then every queued
        event and due zero timeout (OTP loop_done)."""
        while True:
            yield from self._step(event)
            if not self.proc.alive:
                return
            if self.queue:
                event = self.queue.popleft()
            elif self.t0q:
                kind = self.t0q.pop(0)
                event = (kind, self.timers.pop(kind).content)
            else:
                return

    def _step(self, event: tuple[Term, Term] | None) -> _Step:
        try:
            if event is None:
                # init's actions are a transition to the same state that runs the enter call.
                result: Term = RepeatStateAndData(self.init_actions)
                self.init_actions = ()
            else:
                self.last = event
                result = self._callback(self.state, event[0], event[1], self.data)
                if type(result) is types.CoroutineType:
                    result = yield result
            tr = yield from self._collect(result)
        except _Undefined as exc:
            yield from self._terminate((UNDEF_STATE_FUNCTION, exc.state))
            return
        except Exit as exc:
            yield from self._terminate(exc.exit_reason)
            return
        except Exception as exc:
            yield from self._terminate(exc, exc)
            return
        if tr.stopping:
            yield from self._terminate(tr.stop)
            return
        self._commit(event, tr)

    def _callback(self, state: Term, event_type: Term, content: Term, data: Term) -> Term:
        if not self.functions:
            return self.mod.handle_event(event_type, content, state, data)
        fn = self.state_fns.get(state) if type(state) in (str, Atom) else None
        if fn is None:
            if not isinstance(state, str) or state.startswith("_") or state in _RESERVED:
                raise _Undefined(state)
            fn = getattr(self.mod, state, None)
            if not callable(fn):
                raise _Undefined(state)
            self.state_fns[state] = fn
        return fn(event_type, content, data)

    def _what(self, state: Term, enter: bool) -> str:
        cls = type(self.mod).__qualname__
        name = f"{cls}.{state}" if self.functions else f"{cls}.handle_event"
        return f"{name} (state enter call)" if enter else name

    def _hint(self, result: Term, state_call: bool) -> str:
        """What a None result most likely means: no case matched the event.
        A literal translation of Elixir's `def red(:call, :next, data)` matches
        the event type "call", where a call's type is `("call", from_)`."""
        if result is not None or not state_call or self.last is None:
            return ""
        etype, content = self.last
        if type(etype) is tuple and len(etype) == 2 and etype[0] == "call":
            return (
                f' (handling a call, event type ("call", from_), with content {content!r}: did no case'
                ' match it? A call\'s event type is the tuple ("call", from_), not "call":'
                ' match it as case ("call", from_))'
            )
        return f" (handling event type {etype!r} with content {content!r}: did no case match it?)"

    def _collect(self, result: Term) -> Generator[Awaitable[Term], Term, _Transition]:
        """Read a result and its actions, making the enter calls they cause
        (OTP loop_state_callback_result and loop_actions_list)."""
        prev = self.state
        tr = _Transition(self.state, self.data, [], [])
        state_call = True
        while True:
            t = type(result)
            call_enter = False
            if t is NextState:
                if result.state == tr.state:
                    pass
                elif state_call:
                    call_enter = True
                else:
                    raise TypeError(
                        f"{self._what(tr.state, True)} returned {result!r}: a state enter call "
                        "may not change the state (OTP bad_state_enter_return_from_state_function)"
                    )
                tr.state, tr.data = result.state, result.data
            elif t is KeepState:
                tr.data = result.data
            elif t is KeepStateAndData:
                pass
            elif t is RepeatState:
                tr.data = result.data
                call_enter = True
            elif t is RepeatStateAndData:
                call_enter = True
            elif t is Stop or t is StopAndReply:
                self.state = tr.state
                self.data = tr.data if result.data is KEEP else result.data
                if t is StopAndReply:
                    replies = result.replies
                    for r in replies if isinstance(replies, list | tuple) else (replies,):
                        if type(r) is not Reply or not _is_from(r.from_):
                            raise TypeError(
                                f"{self._what(tr.state, not state_call)} returned {result!r}: "
                                f"{r!r} is not a Reply(from_, value)"
                            )
                        _gen.reply(r.from_, r.value)
                tr.stop = result.reason
                tr.stopping = True
                return tr
            else:
                raise TypeError(
                    f"{self._what(tr.state, not state_call)} returned an invalid result {result!r}; "
                    "expected NextState, KeepState, KeepStateAndData, RepeatState, "
                    "RepeatStateAndData, Stop or StopAndReply" + self._hint(result, state_call) + _wrong_import(result)
                )
            actions = result.actions
            for action in actions if isinstance(actions, list | tuple) else (actions,):
                self._action(action, tr, state_call, result)
            if not (call_enter and self.enter):
                return tr
            state_call = False
            result = self._callback(tr.state, ENTER, prev, tr.data)
            if type(result) is types.CoroutineType:
                result = yield result

    def _action(self, action: Term, tr: _Transition, state_call: bool, result: Term) -> None:
        t = type(action)
        if t is Reply:
            if not _is_from(action.from_):
                raise TypeError(f"{self._what(tr.state, not state_call)}: invalid Reply {action!r}")
            _gen.reply(action.from_, action.value)
        elif t is EventTimeout or t is StateTimeout or t is GenericTimeout:
            tr.timeouts.append(action)
        elif t is Postpone or t is NextEvent:
            if not state_call:
                raise TypeError(
                    f"{self._what(tr.state, True)} returned {result!r}: {action!r} is not allowed "
                    "in a state enter call (OTP bad_state_enter_action_from_state_function)"
                )
            if t is Postpone:
                tr.postpone = True
            else:
                tr.next_events.append((action.event_type, action.content))
        elif t is Hibernate:
            pass
        elif (t is int or t is float) and action >= 0:
            tr.timeouts.append(EventTimeout(action, action))
        else:
            raise TypeError(
                f"{self._what(tr.state, not state_call)} returned an invalid action {action!r} in {result!r}"
                + _wrong_import(action)
            )

    def _commit(self, event: tuple[Term, Term] | None, tr: _Transition) -> None:
        """Make the transition (OTP loop_state_transition .. loop_done)."""
        prev = self.state
        if tr.postpone and event is not None:
            self.postponed.append(event)
        self.state, self.data = tr.state, tr.data
        self._cancel(TIMEOUT)  # any event cancels the event timeout
        if tr.state != prev:
            if self.postponed:
                self.queue.extendleft(reversed(self.postponed))
                self.postponed = []
            self._cancel(STATE_TIMEOUT)
        if tr.timeouts:
            self._set_timeouts(tr.timeouts)
        if tr.next_events:
            self.queue.extendleft(reversed(tr.next_events))

    def _set_timeouts(self, timeouts: list[EventTimeout | StateTimeout | GenericTimeout]) -> None:
        # The last setting of each timeout wins (OTP loop_timeouts walks them
        # backwards, skipping types it has seen); zero timeouts are due in the
        # order they were given.
        seen: set[Term] = set()
        zero: list[Term] = []
        for tmo in reversed(timeouts):
            t = type(tmo)
            if t is EventTimeout:
                kind: Term = TIMEOUT
            elif t is StateTimeout:
                kind = STATE_TIMEOUT
            else:
                assert isinstance(tmo, GenericTimeout)
                kind = (TIMEOUT, tmo.name)
            if kind in seen:
                continue
            seen.add(kind)
            seconds = tmo.seconds
            if seconds is None or seconds == "cancel":
                self._cancel(kind)
            elif seconds == "update":
                running = self.timers.get(kind)
                if running is not None:
                    running.content = tmo.content
                else:
                    self.timers[kind] = _Timer(kind, tmo.content)
                    zero.append(kind)
            else:
                self._cancel(kind)
                timer = self.timers[kind] = _Timer(kind, tmo.content)
                if seconds == 0:
                    zero.append(kind)
                else:
                    timer.handle = self.node.loop.call_later(
                        seconds, self.proc.deliver, timer
                    ).cancel
        if zero:
            zero.reverse()
            self.t0q.extend(zero)

    def _cancel(self, kind: Term) -> None:
        timer = self.timers.pop(kind, None)
        if timer is not None:
            if timer.handle is not None:
                timer.handle()
            else:
                self.t0q.remove(kind)

    def _terminate(self, reason: Term, crashed: BaseException | None = None) -> _Step:
        for timer in self.timers.values():
            if timer.handle is not None:
                timer.handle()
        self.timers.clear()
        self.t0q.clear()
        try:
            result = self.mod.terminate(reason, self.state, self.data)
            if type(result) is types.CoroutineType:
                yield result
        except Exception as exc:
            # OTP: an exception in terminate replaces the reason.
            self._finish(exc, exc)
            return
        self._finish(reason, crashed)

    def _finish(self, reason: Term, crashed: BaseException | None) -> None:
        proc = self.proc
        if not _gen.is_normal_stop(reason):
            log.error(
                "GenStateMachine %r (%s) terminating\n** Last event in was %r\n"
                "** When state == %r, data == %r\n** Postponed == %r\n** Reason for termination == %r",
                proc.pid,
                proc.name or type(self.mod).__qualname__,
                self.last,
                self.state,
                self.data,
                self.postponed,
                reason,
                exc_info=crashed,
                extra={"beamish_pid": proc.pid, "beamish_name": proc.name},
            )
        proc.exit(reason)
