"""GenStateMachine: OTP's ``gen_statem`` (Elixir's ``GenStateMachine``), a process that is
a state machine: it holds a *state* and *data*, and every event (a call, a cast, a plain
message, a timeout, an inserted event) is handled by the callback for the current state.

>>> class Switch(GenStateMachine):
...     def callback_mode(self):
...         return "state_functions"
...     def init(self, args):
...         return ("ok", "off", 0)
...     def off(self, event_type, event_content, data):
...         if event_type == "cast":
...             return ("next_state", "on", data + 1)
...         return self.common(event_type, event_content, data)
...     def on(self, event_type, event_content, data):
...         if event_type == "cast":
...             return ("next_state", "off", data)
...         return self.common(event_type, event_content, data)
...     def common(self, event_type, event_content, data):
...         return ("keep_state_and_data", ("reply", event_type[1], data))
>>> async def main():
...     pid = await Switch.start_link(None)
...     GenStateMachine.cast(pid, "flip")
...     return await GenStateMachine.call(pid, "get_count")
>>> pyotp.run(main)
1

Durations are **seconds** (int or float), everywhere in pyotp.

Callback modes (``callback_mode()`` returns one of these strings, or a list with one of
them plus ``"state_enter"``):

* ``"state_functions"``: the method named after the state handles its events:
  ``def red(self, event_type, event_content, data)``. States must be ``str``.
* ``"handle_event_function"`` (the default, as in Elixir): one method for every state:
  ``def handle_event(self, event_type, event_content, state, data)``. States may be anything.
* ``"state_enter"``: after every state change (and for the initial state) the state's
  callback is called with event type ``"enter"`` and the *old* state as content.

Event types: ``("call", from_)``, ``"cast"``, ``"info"`` (any other message),
``"timeout"`` (event timeout), ``"state_timeout"``, ``("timeout", name)`` (generic timeout),
``"internal"`` (usually from ``next_event``), ``"enter"``.

Callback returns (anything else stops the machine with ``("bad_return_value", value)``):

======================================  ==================================================
return                                  meaning
======================================  ==================================================
("next_state", state, data[, actions])  go to ``state`` (the same state: as keep_state)
("keep_state", data[, actions])         stay, new data
"keep_state_and_data" |                 stay, same data
("keep_state_and_data", actions)
("repeat_state", data[, actions])       stay, but make the state enter call again
"repeat_state_and_data" |               the same, keeping data
("repeat_state_and_data", actions)
"stop" | ("stop", reason[, data])       terminate(reason, state, data), then exit
("stop_and_reply", reason, replies      send the replies, then stop
[, data])
======================================  ==================================================

Actions (one action, or a list run in order; for options the last one wins):

==========================================  ==============================================
action                                      effect
==========================================  ==============================================
("reply", from_, value)                     answer a call (sent at once)
"postpone" | ("postpone", bool)             keep this event; retry it after the next
                                            state change (postponed events keep order)
("next_event", event_type, content)         handle this event next, before any queued
                                            message (several: in the order given)
("state_timeout", seconds, content[, opts]) a "state_timeout" event after ``seconds``;
                                            cancelled by a state change, replaced when set
                                            again; "infinity" cancels it
("timeout", seconds, content[, opts])       an event timeout: cancelled by *any* event
seconds (int/float) | "infinity"            the same, with content = seconds
(("timeout", name), seconds, content        a generic timeout: survives events and state
[, opts])                                   changes; "infinity" cancels it
(timeout_type, "update", content)           change a running timeout's content (or fire
                                            it now if not running)
(timeout_type, "cancel")                    cancel it
"hibernate" | ("hibernate", bool)           accepted (no-op: nothing to compact)
==========================================  ==============================================

``opts`` may be ``{"abs": True}`` or ``[("abs", True)]``: ``seconds`` is then an absolute
deadline on the ``time.monotonic()`` clock. A timeout of ``0`` is delivered as soon as all
already-queued events (next_event and retried postponed events) have been handled, before
any new message. State enter calls may use every action except ``postpone`` and
``next_event``, and may not change the state (OTP's rules); breaking them stops the
machine with ``("bad_state_enter_action_from_state_function", action)`` or
``("bad_state_enter_return_from_state_function", value)``. A malformed action stops it
with ``("bad_action_from_state_function", action)``.

Timeouts run on the core timer wheel (``pyotp.start_timer``); every armed timeout is
recorded with its Timer, and a timeout message whose Timer is not the recorded one (it
fired just before being cancelled or replaced) is dropped, so a cancelled timeout never
reaches a callback.

``init(args)`` returns ``("ok", state, data[, actions])``, ``"ignore"`` or
``("stop", reason)``; the default takes ``args = (state, data)`` as Elixir's does.
``terminate(reason, state, data)`` runs when the machine stops (as GenServer's terminate).
Callbacks may be plain ``def`` (fast path) or ``async def``.

Internally a machine is a GenServer whose state is the pair ``(state, data)``, so
``pyotp.sys.get_state`` returns that pair, as ``sys:get_state`` does for gen_statem.
"""
from __future__ import annotations

import inspect
import time
import types
from collections import deque
from typing import Any, Dict, List, Optional, Tuple, cast

from . import _core
from ._core import Pid, Timer
from .gen import start_result
from .gen_server import GenServer

__all__ = ["GenStateMachine"]

Name = Any  # str | ("global", name) | ("via", module, key)

_CoroutineType = types.CoroutineType
_start_timer = _core.start_timer
_cancel_timer = _core.cancel_timer
_reply = _core._statem_reply     # reply actions: counted by sys:statistics, as OTP's
_monotonic = time.monotonic

_ENTER = object()           # _apply: "make the state enter call next"
_SIMPLE_EVENT_TYPES = frozenset(("cast", "info", "timeout", "state_timeout", "internal"))
_INIT_EVENT = ("internal", "init_state")   # OTP's placeholder event for init's actions


class _Acc:
    """Transition options collected from the actions of one event (and its enter calls)."""
    __slots__ = ("postpone", "next_events", "timeouts")

    def __init__(self) -> None:
        self.postpone = False
        self.next_events: Optional[List[Tuple[Any, Any]]] = None
        self.timeouts: Optional[List[Tuple[Any, Any, Any, bool]]] = None


def _is_from(f: Any) -> bool:
    return type(f) is tuple and len(f) == 2 and isinstance(f[0], Pid)


def _is_timeout_type(t: Any) -> bool:
    if t == "timeout" or t == "state_timeout":
        return isinstance(t, str)
    if type(t) is tuple and len(t) == 2 and t[0] == "timeout":
        try:
            hash(t)
        except TypeError:
            return False
        return True
    return False


def _is_event_type(t: Any) -> bool:
    if isinstance(t, str):
        return t in _SIMPLE_EVENT_TYPES
    if type(t) is tuple and len(t) == 2:
        if t[0] == "call":
            return _is_from(t[1])
        if t[0] == "timeout":
            return _is_timeout_type(t)
    return False


def _is_relative_time(t: Any) -> bool:
    tt = type(t)
    if tt is int or tt is float:
        return bool(t >= 0)    # NaN compares False
    return isinstance(t, str) and t == "infinity"


def _timeout_action(a: Tuple[Any, ...], n: int) -> Optional[Tuple[Any, Any, Any, bool]]:
    """Parse a timeout action (type, time, content[, opts]) | (type, "cancel") into
    (type, time, content, absolute), or None if it is malformed."""
    tag = a[0]
    if not _is_timeout_type(tag):
        return None
    t = a[1]
    if n == 3:
        if _is_relative_time(t) or (isinstance(t, str) and t == "update"):
            return (tag, t, a[2], False)
        return None
    if n == 4:
        absolute = _abs_option(a[3])
        if absolute is None:
            return None
        if absolute:
            if (type(t) is not int and type(t) is not float) or t != t:
                return None
        elif not _is_relative_time(t):
            return None
        return (tag, t, a[2], absolute)
    if n == 2 and isinstance(t, str) and t == "cancel":
        return (tag, "infinity", None, False)
    return None


def _abs_option(opts: Any) -> Optional[bool]:
    """Parse a timeout's options: {"abs": bool} | ("abs", bool) | [("abs", bool), ...].
    Returns the abs flag, or None if the options are malformed."""
    if type(opts) is dict:
        items = list(opts.items())
    elif type(opts) is list:
        items = opts
    else:
        items = [opts]
    flag = False
    for o in items:
        if type(o) is tuple and len(o) == 2 and o[0] == "abs" and type(o[1]) is bool:
            flag = o[1]
        else:
            return None
    return flag


class GenStateMachine:
    """Base class of state machines; see the module documentation.

    >>> class Door(GenStateMachine):
    ...     def init(self, code):
    ...         return ("ok", "locked", code)
    ...     def handle_event(self, event_type, content, state, code):
    ...         if event_type == "cast" and state == "locked" and content == code:
    ...             return ("next_state", "open", code, ("state_timeout", 5.0, "lock"))
    ...         if event_type == "state_timeout":
    ...             return ("next_state", "locked", code)
    ...         return "keep_state_and_data"
    """

    # -- the callbacks' defaults (as Elixir's `use GenStateMachine`) ----------------------

    def init(self, args: Any) -> Any:
        """Default: ``args`` is ``(state, data)``."""
        if type(args) is tuple and len(args) == 2:
            return ("ok", args[0], args[1])
        return ("stop", ("bad_init_args", args))

    def callback_mode(self) -> Any:
        """Default: ``"handle_event_function"`` (Elixir's default)."""
        return "handle_event_function"

    def handle_event(self, event_type: Any, event_content: Any, state: Any, data: Any) -> Any:
        """Default: stop with reason ``"bad_event"`` (as Elixir's GenStateMachine)."""
        return ("stop", "bad_event")

    def terminate(self, reason: Any, state: Any, data: Any) -> Any:
        return "ok"

    def code_change(self, old_vsn: Any, state: Any, data: Any, extra: Any) -> Any:
        """Called by ``pyotp.sys.change_code``; return ("ok", state, data)."""
        return ("ok", state, data)

    def format_status(self, status: Dict[str, Any]) -> Dict[str, Any]:
        """Shape ``status`` (keys "state" = (state, data), "message", "reason") for crash
        reports and ``pyotp.sys.get_status``."""
        return status

    # -- the API ------------------------------------------------------------------------

    @classmethod
    async def start_link(cls, args: Any = None, *, name: Optional[Name] = None,
                         timeout: Optional[float] = None, max_mailbox: Any = None) -> Any:
        """Start a machine linked to the caller; returns its pid once ``init`` returned
        ("ok", ...). ``"ignore"`` gives None; a failed init (or a bad ``callback_mode``)
        raises ``pyotp.StartError(reason)``. ``timeout`` bounds init (seconds).
        ``max_mailbox`` limits its mailbox (as ``pyotp.process_flag``).

        >>> class Switch(GenStateMachine):
        ...     def init(self, _):
        ...         return ("ok", "off", None)
        >>> pid = await Switch.start_link(None, name="switch")
        """
        return start_result(await _core._gen_start(_engine_for(cls), args, name, True, timeout,
                                                   max_mailbox))

    @classmethod
    async def start(cls, args: Any = None, *, name: Optional[Name] = None,
                    timeout: Optional[float] = None, max_mailbox: Any = None) -> Any:
        """Like start_link, without the link.

        >>> class Switch(GenStateMachine):
        ...     def init(self, _):
        ...         return ("ok", "off", None)
        >>> pid = await Switch.start(None)
        """
        return start_result(await _core._gen_start(_engine_for(cls), args, name, False, timeout,
                                                   max_mailbox))

    # The compiled functions themselves, as GenServer's: ``await GenStateMachine.call(
    # server, request, timeout=5.0)`` raises pyotp.Exit(("noproc" | "timeout" | reason,
    # ("GenServer", "call", [server, request, timeout]))) exactly as GenServer.call does;
    # ``cast`` never fails; ``reply(from_, value)`` answers a ("call", from_) event.
    call = staticmethod(_core.call)
    cast = staticmethod(_core.cast)
    reply = staticmethod(_core.reply)
    stop = staticmethod(GenServer.stop)
    whereis = staticmethod(GenServer.whereis)


# Names a state cannot have in "state_functions" mode: the other callbacks (as OTP's
# 'terminate'); an API method name is usable only if the machine defines it as a state.
_CALLBACK_NAMES = frozenset(("init", "callback_mode", "handle_event", "terminate",
                             "code_change", "format_status"))


# ---------------------------------------------------------------------------------------
# The engine: a GenServer (so the compiled core dispatches its messages) whose callbacks
# decode events and run the machine. Its GenServer state is the pair (state, data); the
# machine's own bookkeeping (timers, queues) lives on the engine instance.

class _Engine(GenServer):
    """Runs one machine. Subclassed per machine class (see _engine_for)."""
    behaviour_name = "GenStateMachine"
    otp_behaviour = "gen_statem"

    _machine: Any = GenStateMachine
    _state_fns: Dict[Any, Any] = {}
    _st: Any = None            # the (state, data) pair last handed to the core

    # -- setup ----------------------------------------------------------------------------

    def _setup(self, m: Any) -> None:
        """Bookkeeping of a new machine (before its init runs)."""
        self.m = m
        self._pid = _core.self()
        # Any-typed: each is None until first needed (the fast path tests them for truth)
        self._pending: Any = None      # (etype, content, ns, nd, _Acc) of an enter call
        self._postponed: Any = None    # list of postponed (etype, content)
        self._q: Any = None            # deque of queued (etype, content): next_event, retries
        self._timers: Any = None       # dict type -> [Timer | None (zero timeout), content]
        self._t0q: Any = None          # list of zero-timeout types, in firing order
        self._stale: Any = None        # set of cancelled Timers whose message is queued

    def _callback_mode(self) -> Any:
        """Ask the machine for its callback mode (after init, as OTP); returns None, or
        ("stop", reason) for a bad mode."""
        m = self.m
        mode = m.callback_mode()
        items = mode if type(mode) in (list, tuple) else [mode]
        fn_mode = None
        enter = False
        for it in items:
            if it == "state_functions" or it == "handle_event_function":
                fn_mode = it
            elif it == "state_enter":
                enter = True
            else:
                fn_mode = None
                break
        if fn_mode is None:
            return ("stop", ("bad_return_from_callback_mode", mode))
        self._state_enter = enter
        if fn_mode == "state_functions":
            self._fns: Any = type(self)._state_fns
            self._he: Any = None
        else:
            self._fns = None
            self._he = type(m).handle_event
        return None

    def _init_result(self, r: Any) -> Any:
        if type(r) is tuple:
            n = len(r)
            if (n == 3 or n == 4) and r[0] == "ok":
                bad = self._callback_mode()
                if bad is not None:
                    return bad
                self.state = r[1]
                self.data = r[2]
                actions = r[3] if n == 4 else None
                st = self._st = (r[1], r[2])
                if self._state_enter or (actions is not None and actions != []):
                    return ("ok", st, ("continue", actions))
                return ("ok", st)
            if n == 2 and r[0] == "stop":
                return r
        elif isinstance(r, str) and r == "ignore":
            return "ignore"
        return ("stop", ("bad_return_value", r))

    def _first(self, actions: Any) -> Any:
        """After init (OTP's enter loop): run init's actions as those of a placeholder
        event, then the state enter call of the initial state."""
        acc = _Acc()
        if actions is not None:
            err = self._actions(actions, True, acc, self.state, self.data)
            if err is not None:
                return err
        acc.postpone = False
        if self._state_enter:
            self._pending = (_INIT_EVENT[0], _INIT_EVENT[1], self.state, self.data, acc)
            return _ENTER
        return self._transition(_INIT_EVENT[0], _INIT_EVENT[1], self.state, self.data, acc)

    def _sync_st(self, st: Any) -> None:
        # pyotp.sys.replace_state may have swapped the (state, data) pair
        if type(st) is not tuple or len(st) != 2:
            raise TypeError("the state of a GenStateMachine process is a (state, data) pair; "
                            "pyotp.sys.replace_state gave %r" % (st,))
        self.state, self.data = st

    # -- invoking the machine's callbacks -------------------------------------------------

    def _resolve(self, state: Any) -> Any:
        if not isinstance(state, str):
            raise TypeError("%s: state %r is not a str; callback mode state_functions needs "
                            "str states named after methods" % (type(self.m).__name__, state))
        fn = getattr(type(self.m), state, None)
        owner = next((k for k in type(self.m).__mro__ if state in vars(k)), None)
        if (state in _CALLBACK_NAMES or state.startswith("__") or not callable(fn)
                or owner is GenStateMachine or owner is object):
            raise AttributeError("%s has no state function %r (callback mode state_functions)"
                                 % (type(self.m).__name__, state))
        self._fns[state] = fn
        return fn

    def _invoke(self, state: Any, data: Any, etype: Any, content: Any) -> Any:
        fns = self._fns
        if fns is None:
            return self._he(self.m, etype, content, state, data)
        try:
            fn = fns[state]
        except (KeyError, TypeError):
            fn = self._resolve(state)
        return fn(self.m, etype, content, data)

    # -- results and actions --------------------------------------------------------------

    def _stop(self, reason: Any, state: Any, data: Any) -> Tuple[str, Any, Any]:
        self.state = state
        self.data = data
        return ("stop", reason, (state, data))

    def _apply(self, r: Any, state: Any, data: Any, state_call: bool,
               etype: Any, content: Any, acc: Optional[_Acc]) -> Any:
        """Apply callback result ``r`` (for ``state``/``data``, the values the callback
        saw). Returns the next event to handle, None (wait for a message), _ENTER (make a
        state enter call, context in self._pending) or a GenServer stop tuple."""
        call_enter = False
        actions = None
        if type(r) is tuple:
            n = len(r)
            tag = r[0] if n else None
            if tag == "next_state":
                if n == 3:
                    ns = r[1]
                    nd = r[2]
                elif n == 4:
                    ns = r[1]
                    nd = r[2]
                    actions = r[3]
                else:
                    return self._stop(("bad_return_value", r), state, data)
                if ns is not state and ns != state:
                    if not state_call:
                        return self._stop(("bad_state_enter_return_from_state_function", r),
                                          state, data)
                    call_enter = True
            elif tag == "keep_state":
                if n == 2:
                    ns = state
                    nd = r[1]
                elif n == 3:
                    ns = state
                    nd = r[1]
                    actions = r[2]
                else:
                    return self._stop(("bad_return_value", r), state, data)
            elif tag == "keep_state_and_data" and n == 2:
                ns = state
                nd = data
                actions = r[1]
            elif tag == "repeat_state":
                if n == 2:
                    ns = state
                    nd = r[1]
                elif n == 3:
                    ns = state
                    nd = r[1]
                    actions = r[2]
                else:
                    return self._stop(("bad_return_value", r), state, data)
                call_enter = True
            elif tag == "repeat_state_and_data" and n == 2:
                ns = state
                nd = data
                actions = r[1]
                call_enter = True
            elif tag == "stop" and (n == 2 or n == 3):
                return self._stop(r[1], state, r[2] if n == 3 else data)
            elif tag == "stop_and_reply" and (n == 3 or n == 4):
                replies = r[2] if type(r[2]) is list else [r[2]]
                for rep in replies:
                    if type(rep) is tuple and len(rep) == 3 and rep[0] == "reply" and _is_from(rep[1]):
                        _reply(rep[1], rep[2])
                    else:
                        return self._stop(("bad_reply_action_from_state_function", rep),
                                          state, data)
                return self._stop(r[1], state, r[3] if n == 4 else data)
            else:
                return self._stop(("bad_return_value", r), state, data)
        elif isinstance(r, str) and r == "keep_state_and_data":
            ns = state
            nd = data
        elif isinstance(r, str) and r == "repeat_state_and_data":
            ns = state
            nd = data
            call_enter = True
        elif isinstance(r, str) and r == "stop":
            return self._stop("normal", state, data)
        else:
            if type(r) is _CoroutineType:
                r.close()
                return self._stop(("bad_return_value", "a coroutine: %s is async but was "
                                   "called as a plain callback" % (r.__qualname__,)), state, data)
            return self._stop(("bad_return_value", r), state, data)

        one = None
        if actions is not None:
            # fast paths for one action: a reply, or a relative timeout to (re)start
            if type(actions) is list:
                a = actions[0] if len(actions) == 1 else None
                if not actions:
                    actions = None
            else:
                a = actions
            if type(a) is tuple and len(a) == 3:
                tag = a[0]
                if tag == "reply":
                    if _is_from(a[1]):
                        _reply(a[1], a[2])
                        actions = None
                elif tag == "state_timeout" or tag == "timeout":
                    t = a[1]
                    if ((type(t) is float or type(t) is int) and t > 0
                            and (acc is None or acc.timeouts is None) and not self._t0q):
                        one = a
                        actions = None
            if actions is not None:
                if acc is None:
                    acc = _Acc()
                err = self._actions(actions, state_call, acc, ns, nd)
                if err is not None:
                    return err
        if call_enter and self._state_enter:
            if acc is None:
                acc = _Acc()
            if one is not None:
                acc.timeouts = [(one[0], one[1], one[2], False)]
            self._pending = (etype, content, ns, nd, acc)
            return _ENTER
        if one is None:
            return self._transition(etype, content, ns, nd, acc)
        # the transition first (a state change cancels the old state timeout), then the
        # new timeout; no zero timeout is pending (checked above), so the next event the
        # transition picked cannot be one this timeout replaces
        nxt = self._transition(etype, content, ns, nd, acc)
        self._start_one(one[0], one[1], one[2])
        return nxt

    def _actions(self, actions: Any, state_call: bool, acc: _Acc, ns: Any, nd: Any) -> Any:
        """Run/collect ``actions`` into ``acc``; returns None or a stop tuple."""
        for a in (actions if type(actions) is list else (actions,)):
            ta = type(a)
            if ta is tuple:
                n = len(a)
                if n == 0:
                    break
                tag = a[0]
                if type(tag) is not str:
                    if not isinstance(tag, str):
                        to = _timeout_action(a, n)       # (("timeout", name), ...)
                        if to is None:
                            break
                        if acc.timeouts is None:
                            acc.timeouts = []
                        acc.timeouts.append(to)
                        continue
                    tag = str(tag)
                if tag == "state_timeout" or tag == "timeout":
                    if n == 3:
                        t = a[1]
                        tt = type(t)
                        if (tt is float or tt is int) and t >= 0:
                            to = (tag, t, a[2], False)
                        else:
                            to = _timeout_action(a, n)
                    else:
                        to = _timeout_action(a, n)
                    if to is None:
                        break
                    if acc.timeouts is None:
                        acc.timeouts = []
                    acc.timeouts.append(to)
                    continue
                if tag == "reply":
                    if n != 3 or not _is_from(a[1]):
                        break
                    _reply(a[1], a[2])
                    continue
                if tag == "next_event":
                    if n != 3:
                        break
                    if not state_call:
                        return self._stop(("bad_state_enter_action_from_state_function", a), ns, nd)
                    if not _is_event_type(a[1]):
                        break
                    if acc.next_events is None:
                        acc.next_events = []
                    acc.next_events.append((a[1], a[2]))
                    continue
                if tag == "postpone" and n == 2 and type(a[1]) is bool:
                    if a[1] and not state_call:
                        return self._stop(("bad_state_enter_action_from_state_function", a), ns, nd)
                    acc.postpone = a[1]
                    continue
                if tag == "hibernate" and n == 2 and type(a[1]) is bool:
                    continue
                break
            if ta is int or ta is float:
                if not a >= 0:
                    break
                if acc.timeouts is None:
                    acc.timeouts = []
                acc.timeouts.append(("timeout", a, a, False))
                continue
            if isinstance(a, str):
                if a == "postpone":
                    if not state_call:
                        return self._stop(("bad_state_enter_action_from_state_function", a), ns, nd)
                    acc.postpone = True
                    continue
                if a == "hibernate":
                    continue
                if a == "infinity":
                    if acc.timeouts is None:
                        acc.timeouts = []
                    acc.timeouts.append(("timeout", "infinity", "infinity", False))
                    continue
            break
        else:
            return None
        # only a `break` (an unrecognised or malformed action) gets here
        return self._stop(("bad_action_from_state_function", a), ns, nd)

    def _transition(self, etype: Any, content: Any, ns: Any, nd: Any, acc: Optional[_Acc]) -> Any:
        """Move to (ns, nd): postpone, retry postponed events on a state change, cancel the
        event timeout (and the state timeout on a state change), start the new timeouts,
        queue the inserted events. Returns the next event to handle, or None."""
        state = self.state
        timers = self._timers
        if acc is not None and acc.postpone:
            if self._postponed is None:
                self._postponed = []
            self._postponed.append((etype, content))
        if ns is state or ns == state:
            if timers and "timeout" in timers:
                self._cancel("timeout")
        else:
            p = self._postponed
            if p:
                q = self._q
                if q is None:
                    q = self._q = deque()
                q.extendleft(reversed(p))
                self._postponed = None
            if timers:
                if "state_timeout" in timers:
                    self._cancel("state_timeout")
                if "timeout" in timers:
                    self._cancel("timeout")
        self.state = ns
        self.data = nd
        if acc is not None:
            if acc.timeouts is not None:
                self._start_timeouts(acc.timeouts)
            if acc.next_events is not None:
                q = self._q
                if q is None:
                    q = self._q = deque()
                q.extendleft(reversed(acc.next_events))
        q = self._q
        if q:
            return q.popleft()
        t0q = self._t0q
        if t0q:
            key = t0q.pop(0)
            return (key, self._timers.pop(key)[1])
        return None

    # -- timeouts -------------------------------------------------------------------------

    def _cancel(self, key: Any) -> None:
        ent = self._timers.pop(key, None)
        if ent is None:
            return
        t = ent[0]
        if t is None:                        # a zero timeout waiting in t0q
            self._t0q.remove(key)
        elif _cancel_timer(t) is False:      # fired: its message is already queued
            self._stale_add(t)

    def _start_timeouts(self, tos: List[Tuple[Any, Any, Any, bool]]) -> None:
        """Start, restart, update or cancel timeouts; the last action of a type wins."""
        timers = self._timers
        if timers is None:
            timers = self._timers = {}
        if len(tos) == 1:
            key, t, content, absolute = tos[0]
            tt = type(t)
            if (tt is float or tt is int) and t > 0 and not absolute:
                self._start_one(key, t, content)
                return
        seen = set()
        zero: List[Any] = []
        for key, t, content, absolute in reversed(tos):
            if key in seen:
                continue
            seen.add(key)
            tt = type(t)
            if tt is not int and tt is not float:
                if t == "infinity":
                    if key in timers:
                        self._cancel(key)
                else:                                   # "update"
                    ent = timers.get(key)
                    if ent is not None:
                        ent[1] = content
                    else:
                        timers[key] = [None, content]
                        zero.insert(0, key)
            elif t == 0 and not absolute:
                if key in timers:
                    self._cancel(key)
                timers[key] = [None, content]
                zero.insert(0, key)
            else:
                if absolute:
                    t = t - _monotonic()
                    if t < 0:
                        t = 0.0
                timer = _start_timer(self._pid, key, t)
                if key in timers:
                    self._cancel(key)
                timers[key] = [timer, content]
        if zero:
            if self._t0q is None:
                self._t0q = zero
            else:
                self._t0q.extend(zero)

    def _start_one(self, key: Any, t: Any, content: Any) -> None:
        """(Re)start one relative timeout of ``t`` > 0 seconds."""
        timers = self._timers
        if timers is None:
            timers = self._timers = {}
        timer = _start_timer(self._pid, key, t)
        ent = timers.get(key)
        if ent is None:
            timers[key] = [timer, content]
            return
        old = ent[0]
        if old is None:
            self._t0q.remove(key)
        elif _cancel_timer(old) is False:
            self._stale_add(old)
        ent[0] = timer
        ent[1] = content

    def _stale_add(self, timer: Any) -> None:
        if self._stale is None:
            self._stale = set()
        self._stale.add(timer)

    def _timer_event(self, msg: Tuple[Any, ...]) -> Any:
        """A ("timeout", Timer, key) message: our live timeout -> its event; a stale one ->
        None (dropped); anything else -> False (an ordinary "info" message)."""
        timer = msg[1]
        stale = self._stale
        if stale and timer in stale:
            stale.discard(timer)
            return None
        timers = self._timers
        if timers:
            key = msg[2]
            try:
                ent = timers.get(key)
            except TypeError:
                return False
            if ent is not None and ent[0] is timer:
                del timers[key]
                return (key, ent[1])
        return False

    def _cancel_all(self) -> None:
        timers = self._timers
        if timers:
            for ent in timers.values():
                if ent[0] is not None:
                    _cancel_timer(ent[0])
            timers.clear()
        self._t0q = None
        self._stale = None

    # -- the GenServer callbacks (plain def: the core's fast path) ------------------------

    def init(self, args: Any) -> Any:
        cls = self._machine
        m = cls.__new__(cls)
        self._setup(m)
        return self._init_result(m.init(args))

    def handle_continue(self, actions: Any, st: Any) -> Any:
        return self._drive(self._first(actions))

    def handle_cast(self, request: Any, st: Any) -> Any:
        # _run's body, inlined for the most frequent event
        if st is not self._st:
            self._sync_st(st)
        state = self.state
        data = self.data
        fns = self._fns
        if fns is None:
            r = self._he(self.m, "cast", request, state, data)
        else:
            try:
                fn = fns[state]
            except (KeyError, TypeError):
                fn = self._resolve(state)
            r = fn(self.m, "cast", request, data)
        if not self._timers:
            if type(r) is tuple:
                n = len(r)
                if n == 3:
                    if r[0] == "next_state":
                        ns = r[1]
                        if (ns is state or not (ns != state)
                                or not (self._state_enter or self._postponed)):
                            self.state = ns
                            self.data = nd = r[2]
                            st = self._st = (ns, nd)
                            return ("noreply", st)
                elif n == 2 and r[0] == "keep_state":
                    self.data = nd = r[1]
                    st = self._st = (state, nd)
                    return ("noreply", st)
            elif type(r) is str and r == "keep_state_and_data":
                return ("noreply", self._st)
        nxt = self._apply(r, state, data, True, "cast", request, None)
        if nxt is not None:
            return self._drive(nxt)
        st = self._st = (self.state, self.data)
        return ("noreply", st)

    def handle_call(self, request: Any, from_: Any, st: Any) -> Any:
        if st is not self._st:
            self._sync_st(st)
        return self._run(("call", from_), request)

    def handle_info(self, msg: Any, st: Any) -> Any:
        if st is not self._st:
            self._sync_st(st)
        if type(msg) is tuple and len(msg) == 3 and type(msg[1]) is Timer and msg[0] == "timeout":
            ev = self._timer_event(msg)
            if ev is None:
                return ("noreply", st)
            if ev is not False:
                return self._run(ev[0], ev[1])
        return self._run("info", msg)

    def _run(self, etype: Any, content: Any) -> Any:
        """Handle one received event, then every event it queued; the GenServer return.

        Invariant: between two received events the internal queue and the zero-timeout
        queue are empty (_drive drains them), so a result without actions that neither
        has to cancel a timer, nor retry postponed events, nor make an enter call is done
        right here (the fast path); everything else goes through _apply."""
        state = self.state
        data = self.data
        fns = self._fns
        if fns is None:
            r = self._he(self.m, etype, content, state, data)
        else:
            try:
                fn = fns[state]
            except (KeyError, TypeError):
                fn = self._resolve(state)
            r = fn(self.m, etype, content, data)
        if not self._timers:
            if type(r) is tuple:
                n = len(r)
                if n == 3:
                    if r[0] == "next_state":
                        ns = r[1]
                        if (ns is state or not (ns != state)
                                or not (self._state_enter or self._postponed)):
                            self.state = ns
                            self.data = nd = r[2]
                            st = self._st = (ns, nd)
                            return ("noreply", st)
                elif n == 2 and r[0] == "keep_state":
                    self.data = nd = r[1]
                    st = self._st = (state, nd)
                    return ("noreply", st)
            elif type(r) is str and r == "keep_state_and_data":
                return ("noreply", self._st)
        nxt = self._apply(r, state, data, True, etype, content, None)
        if nxt is not None:
            return self._drive(nxt)
        st = self._st = (self.state, self.data)
        return ("noreply", st)

    def _drive(self, nxt: Any) -> Any:
        while nxt is not None:
            if nxt is _ENTER:
                etype, content, ns, nd, acc = self._pending
                self._pending = None
                r = self._invoke(ns, nd, "enter", self.state)
                nxt = self._apply(r, ns, nd, False, etype, content, acc)
            elif len(nxt) == 3:
                return nxt                      # ("stop", reason, (state, data))
            else:
                etype, content = nxt
                state = self.state
                data = self.data
                r = self._invoke(state, data, etype, content)
                nxt = self._apply(r, state, data, True, etype, content, None)
        st = self._st = (self.state, self.data)
        return ("noreply", st)

    def terminate(self, reason: Any, st: Any) -> Any:
        # self.state/self.data are the latest (a callback may have crashed after some
        # queued events were handled); `st` differs only if pyotp.sys replaced it
        if st is not self._st:
            self._sync_st(st)
        self._cancel_all()
        return self.m.terminate(reason, self.state, self.data)

    def code_change(self, old_vsn: Any, st: Any, extra: Any) -> Any:
        r = self.m.code_change(old_vsn, st[0], st[1], extra)
        if type(r) is tuple and len(r) == 3 and r[0] == "ok":
            return ("ok", (r[1], r[2]))
        return ("error", r)

    def format_status(self, status: Any) -> Any:
        return self.m.format_status(status) if hasattr(self, "m") else status

    def system_callback_class(self) -> type:
        return cast(type, self._machine)



class _AsyncEngine(_Engine):
    """The engine for machines with ``async def`` callbacks: the same logic, awaiting
    whatever callback returns a coroutine."""

    async def init(self, args: Any) -> Any:
        cls = self._machine
        m = cls.__new__(cls)
        self._setup(m)
        r = m.init(args)
        if type(r) is _CoroutineType:
            r = await r
        return self._init_result(r)

    async def handle_continue(self, actions: Any, st: Any) -> Any:
        return await self._adrive(self._first(actions))

    async def handle_cast(self, request: Any, st: Any) -> Any:
        if st is not self._st:
            self._sync_st(st)
        return await self._adrive(("cast", request))

    async def handle_call(self, request: Any, from_: Any, st: Any) -> Any:
        if st is not self._st:
            self._sync_st(st)
        return await self._adrive((("call", from_), request))

    async def handle_info(self, msg: Any, st: Any) -> Any:
        if st is not self._st:
            self._sync_st(st)
        if type(msg) is tuple and len(msg) == 3 and type(msg[1]) is Timer and msg[0] == "timeout":
            ev = self._timer_event(msg)
            if ev is None:
                return ("noreply", st)
            if ev is not False:
                return await self._adrive(ev)
        return await self._adrive(("info", msg))

    async def _adrive(self, nxt: Any) -> Any:
        while nxt is not None:
            if nxt is _ENTER:
                etype, content, ns, nd, acc = self._pending
                self._pending = None
                r = self._invoke(ns, nd, "enter", self.state)
                if type(r) is _CoroutineType:
                    r = await r
                nxt = self._apply(r, ns, nd, False, etype, content, acc)
            elif len(nxt) == 3:
                return nxt
            else:
                etype, content = nxt
                state = self.state
                data = self.data
                r = self._invoke(state, data, etype, content)
                if type(r) is _CoroutineType:
                    r = await r
                nxt = self._apply(r, state, data, True, etype, content, None)
        st = self._st = (self.state, self.data)
        return ("noreply", st)

    async def terminate(self, reason: Any, st: Any) -> Any:
        if st is not self._st:
            self._sync_st(st)
        self._cancel_all()
        r = self.m.terminate(reason, self.state, self.data)
        if type(r) is _CoroutineType:
            r = await r
        return r


_engines: Dict[type, type] = {}


def _has_async_callbacks(cls: type) -> bool:
    for klass in cls.__mro__:
        if klass is GenStateMachine or klass is object:
            continue
        for v in vars(klass).values():
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            if inspect.iscoroutinefunction(v):
                return True
    return False


def _engine_for(cls: type) -> type:
    """The GenServer class that runs machines of class ``cls`` (made once per class and
    named after it, so process_info and crash reports show the machine's name)."""
    eng = _engines.get(cls)
    if eng is None:
        if not (isinstance(cls, type) and issubclass(cls, GenStateMachine)):
            raise TypeError("%r is not a GenStateMachine subclass" % (cls,))
        base = _AsyncEngine if _has_async_callbacks(cls) else _Engine
        eng = type(cls.__name__, (base,), {
            "_machine": cls, "_state_fns": {},
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
            "__doc__": "Runs %s state machines." % (cls.__qualname__,)})
        _engines[cls] = eng
    return eng
