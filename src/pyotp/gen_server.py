"""GenServer: a process that keeps state and answers calls, casts and other messages.

Subclass it and define the callbacks you need; each may be a plain ``def`` (the fast
path, dispatched from the compiled core) or an ``async def`` (when it has to await, for
example another server's call). Returns follow Elixir exactly:

=====================  ===========================================================
callback               accepted returns
=====================  ===========================================================
init(arg)              ("ok", state) | ("ok", state, timeout | "hibernate" |
                       ("continue", x)) | "ignore" | ("stop", reason)
handle_call(req,       ("reply", reply, state[, extra]) | ("noreply", state[, extra])
  from_, state)        | ("stop", reason, reply, state) | ("stop", reason, state)
handle_cast(req, st)   ("noreply", state[, extra]) | ("stop", reason, state)
handle_info(msg, st)   same as handle_cast
handle_continue(x, st) same as handle_cast
terminate(reason, st)  anything (ignored)
=====================  ===========================================================

``extra`` is a timeout in seconds (``handle_info("timeout", state)`` runs if no message
arrives in time), ``"hibernate"`` or ``("continue", x)``. Any other return stops the
server with reason ``("bad_return_value", value)``.

>>> class Counter(GenServer):
...     def init(self, n):
...         return ("ok", n)
...     def handle_call(self, req, from_, n):
...         return ("reply", n, n)
...     def handle_cast(self, req, n):
...         return ("noreply", n + 1)
>>> async def main():
...     pid = await Counter.start_link(0)
...     GenServer.cast(pid, "inc")
...     return await GenServer.call(pid, "get")
>>> pyotp.run(main)
1
"""
from __future__ import annotations

import logging
from typing import Any, Optional, Tuple, cast

from . import _core
from ._core import Pid
from .gen import start_result

_log = logging.getLogger("pyotp")

Name = Any  # str | ("global", name) | ("via", module, key)


class GenServer:
    """Base class of GenServers; see the module documentation."""

    #: how crash reports name this kind of process; behaviours built on the GenServer
    #: loop (GenStateMachine, Supervisor, ...) override it
    behaviour_name = "GenServer"
    #: the OTP behaviour this is in sys:get_status reports (gen_server, gen_statem, gen_event)
    otp_behaviour = "gen_server"

    # -- the callbacks' defaults (as Elixir's `use GenServer`) -----------------------

    def init(self, arg: Any) -> Any:
        return ("ok", arg)

    def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        raise RuntimeError("attempted to call GenServer %r but no handle_call/3 clause was provided"
                           % (_core.self(),))

    def handle_cast(self, request: Any, state: Any) -> Any:
        raise RuntimeError("attempted to cast GenServer %r but no handle_cast/2 clause was provided"
                           % (_core.self(),))

    def handle_info(self, msg: Any, state: Any) -> Any:
        _log.warning("%s %r received unexpected message in handle_info: %r",
                     type(self).__name__, _core.self(), msg)
        return ("noreply", state)

    def handle_continue(self, continue_arg: Any, state: Any) -> Any:
        raise RuntimeError("%s did not define handle_continue/2" % type(self).__name__)

    def terminate(self, reason: Any, state: Any) -> Any:
        return "ok"

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        return ("ok", state)

    def format_status(self, status: Any) -> Any:
        return status

    # -- how pyotp.sys sees this behaviour (OTP's system_* callbacks; see pyotp.sys) ------

    def system_get_state(self, state: Any) -> Any:
        """The state as ``sys:get_state`` shows it (the GenServer state itself)."""
        return state

    def system_replace_state(self, fun: Any, state: Any) -> Tuple[Any, Any]:
        """``sys:replace_state``: ``(what the caller gets, the new GenServer state)``."""
        new = fun(state)
        return new, new

    def system_callback_class(self) -> type:
        """The user's callback class (status reports, proc_lib's '$initial_call')."""
        return type(self)

    # -- the API ------------------------------------------------------------------------

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Optional[Name] = None,
                         timeout: Optional[float] = None, max_mailbox: Any = None) -> Pid:
        """Start a server linked to the calling process; returns its pid once ``init``
        returned ("ok", ...). ``"ignore"`` gives None; a failed init raises
        ``pyotp.StartError(reason)`` (and, being linked, the caller also gets the exit
        signal, as in OTP). ``timeout`` bounds init (seconds; None waits forever).
        ``max_mailbox`` limits the server's mailbox (as ``pyotp.process_flag``). Typed
        ``Pid``: a server whose ``init`` may return ``"ignore"`` must check for None.

        >>> pid = await Counter.start_link(0, name="counter2")
        """
        return cast(Pid, start_result(await _core._gen_start(cls, arg, name, True, timeout, max_mailbox)))

    @classmethod
    async def start(cls, arg: Any = None, *, name: Optional[Name] = None,
                    timeout: Optional[float] = None, max_mailbox: Any = None) -> Pid:
        """Like start_link, without the link.

        >>> pid = await Counter.start(0)
        """
        return cast(Pid, start_result(await _core._gen_start(cls, arg, name, False, timeout, max_mailbox)))

    # `call`, `cast` and `reply` are the compiled functions themselves: no Python frame
    # between the user and the core on the hot path.
    call = staticmethod(_core.call)
    cast = staticmethod(_core.cast)
    reply = staticmethod(_core.reply)

    @staticmethod
    async def stop(server: Any, reason: Any = "normal", timeout: Optional[float] = None) -> str:
        """Stop the server with ``reason`` (its ``terminate`` runs) and wait until it has
        exited. Raises ``pyotp.Exit`` if it exited with another reason, or with
        ("timeout", ...) when ``timeout`` seconds pass first.

        >>> await GenServer.stop(pid)
        'ok'
        """
        got = await _core._gen_stop_request(server, reason, timeout)
        if got == reason:
            return "ok"
        raise _core.Exit(got)

    @staticmethod
    def whereis(server: Any) -> Any:
        """The pid behind a name (str, ("global", n), ("via", mod, key)), or None."""
        if isinstance(server, _core.Pid):
            return server if _core.is_alive(server) else None
        if isinstance(server, str):
            return _core.whereis(server)
        from .gen import _name_hook
        return _name_hook("whereis", server, None)


def child_spec_of(cls: type, arg: Any) -> Tuple[Any, ...]:  # used by supervisors later
    return (cls, arg)
