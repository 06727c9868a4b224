"""OTP's ``sys`` module for behaviour processes: inspect and change a running server.

Each operation runs inside the server between two messages (a system message, as in
OTP), so it sees a consistent state; the server keeps running whatever happens.

>>> state = await pyotp.sys.get_state(counter)
>>> await pyotp.sys.replace_state(counter, lambda n: n + 1)
"""
from __future__ import annotations

from typing import Any, Callable, Dict, cast

from . import _core


async def get_state(server: Any, timeout: float = 5.0) -> Any:
    """The behaviour's current state (debugging only, as OTP warns).

    >>> await pyotp.sys.get_state(pid)
    42
    """
    return await _core._sys_request(server, lambda mod, state: (state, state), timeout)


async def replace_state(server: Any, fun: Callable[[Any], Any], timeout: float = 5.0) -> Any:
    """Replace the state with ``fun(state)`` and return the new state. If ``fun`` raises,
    the state is left unchanged and the error is returned as ``("error", exc)``.

    >>> await pyotp.sys.replace_state(pid, lambda s: s + 1)
    43
    """
    def op(mod: Any, state: Any) -> Any:
        new = fun(state)
        return (new, new)
    return await _core._sys_request(server, op, timeout)


async def get_status(server: Any, timeout: float = 5.0) -> Dict[str, Any]:
    """A dict with the pid, the behaviour class and the state as the behaviour's
    ``format_status`` presents it.

    >>> (await pyotp.sys.get_status(pid))["behaviour"]
    'Counter'
    """
    def op(mod: Any, state: Any) -> Any:
        status = mod.format_status({"state": state, "message": None, "reason": None})
        return ({"pid": _core.self(), "behaviour": type(mod).__name__,
                 "state": status.get("state")}, state)
    return cast(Dict[str, Any], await _core._sys_request(server, op, timeout))


async def change_code(server: Any, old_vsn: Any, extra: Any = None, timeout: float = 5.0) -> Any:
    """Run the behaviour's ``code_change(old_vsn, state, extra)``; it returns
    ("ok", new_state) (the state is replaced) or ("error", reason) (kept). Returns "ok" or
    the error tuple, as ``sys:change_code`` does.

    >>> await pyotp.sys.change_code(pid, "1.0")
    'ok'
    """
    def op(mod: Any, state: Any) -> Any:
        r = mod.code_change(old_vsn, state, extra)
        if type(r) is tuple and len(r) == 2 and r[0] == "ok":
            return ("ok", r[1])
        return (r if (type(r) is tuple and r and r[0] == "error") else ("error", ("bad_return_value", r)), state)
    return await _core._sys_request(server, op, timeout)


def trace(pid: Any, flag: bool, rate: int = 100) -> None:
    """OTP's sys:trace: with True, log every message ``pid`` sends and receives and the
    calls it makes (logger ``pyotp.trace``, at most ``rate`` events a second); False stops.
    See pyotp.tracing for other outputs.

    >>> pyotp.sys.trace(pid, True)
    """
    from . import tracing
    if flag is True:
        tracing.trace(pid, "log", rate)
    elif flag is False:
        tracing.stop(pid)
    else:
        raise TypeError("sys.trace: flag must be True or False, got %r" % (flag,))
