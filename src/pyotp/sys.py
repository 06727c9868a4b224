"""OTP's ``sys`` module: inspect, suspend, change and stop a running behaviour process, on
this node or any other (pyotp or BEAM).

Every behaviour (GenServer, GenStateMachine, EventManager, Supervisor, DynamicSupervisor,
TaskSupervisor, GenStage) answers OTP's system messages, ``{system, From, Request}``,
between two messages, so it sees a consistent state and keeps running whatever happens.
This module holds the one handler they all share (:func:`handle_system_msg`, OTP's
``sys:handle_system_msg``); a behaviour only says how its state looks
(``system_get_state`` / ``system_replace_state``, OTP's callbacks of the same names) and
how it is called in status reports. So ``:sys.get_state``, ``:sys.get_status``,
``:sys.suspend``, ``GenServer.stop`` and ``:proc_lib.stop`` from Elixir or Erlang work on a
pyotp process, and the functions here work on BEAM processes (requests go out as
``gen:call``'s ``{system, {Pid, Ref}, Request}``).

Replies follow OTP: ``get_state`` gives the state (a GenStateMachine's is the pair
``(state, data)``), ``replace_state`` the new state or ``("error", ("callback_failed",
fun, (class, exception)))``, ``suspend``/``resume``/``terminate`` give ``"ok"``.

>>> state = await pyotp.sys.get_state(counter)
>>> await pyotp.sys.replace_state(counter, lambda n: n + 1)
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from . import _core
from .etf import Atom, ExportFun, OpaqueFun

A_OK = Atom("ok")
A_ERROR = Atom("error")
A_GET_STATE = Atom("get_state")
A_REPLACE_STATE = Atom("replace_state")
A_GET_STATUS = Atom("get_status")
A_SUSPEND = Atom("suspend")
A_RESUME = Atom("resume")
A_TERMINATE = Atom("terminate")
A_CHANGE_CODE = Atom("change_code")
A_DEBUG = Atom("debug")
A_TRACE = Atom("trace")
A_STATISTICS = Atom("statistics")
A_RUNNING = Atom("running")
A_SUSPENDED = Atom("suspended")
A_CALLBACK_FAILED = Atom("callback_failed")

#: what each behaviour is in OTP's status reports: (behaviour class attribute
#: ``otp_behaviour``) -> (the OTP module, the header line of get_status)
_HEADERS = {
    "gen_server": "Status for generic server",
    "gen_statem": "Status for state machine",
    "gen_event": "Status for event handler",
}


def _charlist(s: str) -> List[int]:
    """An Erlang string, as sys's status reports hold them."""
    return [ord(c) for c in s]


# ---------------------------------------------------------------------------------------
# The receiving side: one handler for every behaviour


def handle_system_msg(mod: Any, state: Any, req: Any, suspended: bool, parent: Any,
                      remote: bool) -> Tuple[Any, Any, Any]:
    """OTP's ``sys:handle_system_msg`` for a pyotp behaviour process (the core calls it
    between two messages): ``mod`` is the behaviour instance, ``req`` the request term,
    ``remote`` whether the asker is on another node (its reply must be plain ETF).
    Returns ``(action, reply, new_state)``, action None, "suspend", "resume" or
    ("terminate", reason).

    >>> handle_system_msg(Counter(), 1, "get_state", False, None, False)
    (None, 1, 1)
    """
    if isinstance(req, str):
        if req == "get_state":
            return None, _get_state(mod, state, remote), state
        if req == "get_status":
            return None, _get_status(mod, state, suspended, parent, remote), state
        if req == "suspend":
            return "suspend", A_OK, state
        if req == "resume":
            return "resume", A_OK, state
    elif type(req) is tuple and req:
        tag = req[0]
        if tag == "replace_state" and len(req) == 2:
            reply, new = _replace_state(mod, state, req[1], remote)
            return None, reply, new
        if tag == "terminate" and len(req) == 2:
            return ("terminate", req[1]), A_OK, state
        if tag == "change_code" and len(req) == 4:
            reply, new = _change_code(mod, state, req[2], req[3])
            return None, reply, new
        if tag == "debug" and len(req) == 2:
            return None, _debug(mod, req[1]), state
    return None, (A_ERROR, (Atom("unknown_system_msg"), req)), state


def _failed(what: Any, e: BaseException, remote: bool) -> Any:
    """OTP's {error, {callback_failed, What, {Class, Reason}}}."""
    cls = Atom("exit") if isinstance(e, _core.Exit) else A_ERROR
    reason: Any = e.reason if isinstance(e, _core.Exit) else e
    if remote:
        reason = _core.dist_to_erl(reason)   # the channel's: str -> atom, exceptions -> {Name, <<Text>>}
    return (A_ERROR, (A_CALLBACK_FAILED, what, (cls, reason)))


def _get_state(mod: Any, state: Any, remote: bool) -> Any:
    try:
        return mod.system_get_state(state)
    except Exception as e:
        return _failed((Atom(type(mod).__name__), Atom("system_get_state")), e, remote)


def _as_function(fun: Any) -> Callable[[Any], Any]:
    """A state function: a Python callable, or an Erlang ``fun M:F/1`` naming a function
    this node lets rpc run (the node's rpc_allow and undef rules). An Erlang closure
    (``fn s -> ... end``) cannot run in Python: NotImplementedError."""
    if callable(fun) and not isinstance(fun, (ExportFun, OpaqueFun)):
        return cast(Callable[[Any], Any], fun)
    if isinstance(fun, ExportFun) and fun.arity == 1:
        from .dist import kernel as _kernel, rpc as _rpc
        k = _kernel.running()
        m, f = str(fun.module), str(fun.function)
        if k is not None and not _rpc.allowed(k, m):
            raise _core.Exit(("not_allowed", m))
        try:
            return cast(Callable[[Any], Any], _rpc._resolve(m, f))
        except _rpc._Undef:
            raise _core.Exit(("undef", [(m, f, 1, [])])) from None
    raise NotImplementedError("a pyotp process cannot run an Erlang closure; "
                              "pass fun Module:Function/1 naming a Python function")


def _replace_state(mod: Any, state: Any, fun: Any, remote: bool) -> Tuple[Any, Any]:
    try:
        view, new = mod.system_replace_state(_as_function(fun), state)
    except Exception as e:
        return _failed(fun, e, remote), state
    return view, new


def _change_code(mod: Any, state: Any, old_vsn: Any, extra: Any) -> Tuple[Any, Any]:
    try:
        r = mod.code_change(old_vsn, state, extra)
    except Exception as e:
        return (A_ERROR, e), state
    if type(r) is tuple and len(r) == 2 and r[0] == "ok":
        return A_OK, r[1]
    if type(r) is tuple and r and r[0] == "error":
        return r, state
    return (A_ERROR, ("bad_return_value", r)), state


def _debug(mod: Any, what: Any) -> Any:
    """sys's debug commands: trace is pyotp.tracing's log output; the others (log,
    statistics, install ...) are not kept by pyotp processes: unknown_debug, as OTP
    answers a command it does not know."""
    if type(what) is tuple and len(what) == 2 and what[0] == "trace" and what[1] in (True, False):
        from . import tracing
        if what[1]:
            tracing.trace(_core.self(), "log", 100)
        else:
            tracing.stop(_core.self())
        return A_OK
    return Atom("unknown_debug")


def _status_name(mod: Any) -> str:
    return str(getattr(mod, "otp_behaviour", "gen_server"))


def _get_status(mod: Any, state: Any, suspended: bool, parent: Any, remote: bool) -> Any:
    """OTP's {status, Pid, {module, GenMod}, [PDict, SysState, Parent, Debug, Misc]}, the
    state as the behaviour's format_status presents it."""
    me = _core.self()
    try:
        view = mod.system_get_state(state)
        shown = mod.format_status({"state": view, "message": None, "reason": None, "log": []})
        shown = shown.get("state", view) if isinstance(shown, dict) else view
    except Exception as e:
        shown = _failed(Atom("format_status"), e, remote)
    gen_mod = _status_name(mod)
    name = _core.process_info(me) or {}
    label = name.get("registered_name") or repr(me)
    sys_state = A_SUSPENDED if suspended else A_RUNNING
    par = parent if parent is not None else me
    if not remote:
        return {"pid": me, "module": gen_mod, "behaviour": mod_name(mod), "status": str(sys_state),
                "parent": par, "state": shown}
    header = _charlist("%s %s" % (_HEADERS.get(gen_mod, "Status for"), label))
    misc = [(Atom("header"), header),
            (Atom("data"), [(_charlist("Status"), sys_state), (_charlist("Parent"), par),
                            (_charlist("Logged events"), [])]),
            (Atom("data"), [(_charlist("State"), shown)])]
    return (Atom("status"), me, (Atom("module"), Atom(gen_mod)),
            [initial_call_dictionary(mod, parent), sys_state, par, [], misc])


def mod_name(mod: Any) -> str:
    """The user's behaviour class name behind a behaviour instance."""
    return str(getattr(mod.system_callback_class(), "__name__", type(mod).__name__))


def initial_call_dictionary(mod: Any, parent: Any) -> List[Tuple[Atom, Any]]:
    """What proc_lib keeps in a behaviour's process dictionary: '$initial_call' (the
    callback module's init/1) and '$ancestors' (the same as erlang:process_info(Pid,
    dictionary) answers over rpc, pyotp.dist.beam_api)."""
    from .dist import beam_api
    return beam_api._proc_lib_dictionary(_core.process_info(_core.self()) or {})


_core._set_sys_hook(handle_system_msg)


# ---------------------------------------------------------------------------------------
# The asking side (OTP's sys:* functions): any behaviour, here or on another node


async def _request(server: Any, req: Any, timeout: Optional[float]) -> Any:
    return await _core._sys_request(server, req, timeout)


async def get_state(server: Any, timeout: float = 5.0) -> Any:
    """The behaviour's current state (debugging only, as OTP warns); a GenStateMachine's
    is ``(state, data)``. Works on BEAM processes too.

    >>> await pyotp.sys.get_state(pid)      # the Counter started with 0
    0
    """
    return await _request(server, A_GET_STATE, timeout)


async def replace_state(server: Any, fun: Callable[[Any], Any], timeout: float = 5.0) -> Any:
    """Replace the state with ``fun(state)`` and return the new state. If ``fun`` raises,
    the state is left unchanged and ``("error", ("callback_failed", fun, (class,
    exception)))`` is returned. For a BEAM process ``fun`` must be an Erlang function
    (``pyotp.etf.ExportFun(module, function, 1)``).

    >>> await pyotp.sys.replace_state(pid, lambda s: s + 1)
    1
    """
    return await _request(server, (A_REPLACE_STATE, fun), timeout)


async def get_status(server: Any, timeout: float = 5.0) -> Dict[str, Any]:
    """A dict: ``pid``, ``module`` (the OTP behaviour: "gen_server", "gen_statem",
    "gen_event"), ``behaviour`` (the callback class, or module), ``status`` ("running" or
    "suspended"), ``parent`` and ``state`` as the behaviour's ``format_status`` presents
    it. For a BEAM process, ``raw`` holds sys:get_status's own answer too.

    >>> (await pyotp.sys.get_status(pid))["behaviour"]
    'Counter'
    """
    r = await _request(server, A_GET_STATUS, timeout)
    if isinstance(r, dict):
        return r
    return _status_dict(r)


def _status_dict(r: Any) -> Dict[str, Any]:
    """sys:get_status's tuple (from a BEAM process) as get_status's dict."""
    if not (type(r) is tuple and len(r) == 4 and r[0] == "status" and type(r[3]) is list
            and len(r[3]) >= 5):
        raise _core.Exit(("bad_status", r))
    pdict, sys_state, parent, _dbg, misc = r[3][:5]
    behaviour: Any = r[2][1] if type(r[2]) is tuple and len(r[2]) == 2 else r[2]
    for k, v in pdict if type(pdict) is list else []:
        if k == "$initial_call" and type(v) is tuple and len(v) == 3:
            behaviour = v[0]
    state: Any = misc
    for item in misc if type(misc) is list else []:
        if type(item) is tuple and len(item) == 2 and item[0] == "data" and type(item[1]) is list:
            for entry in item[1]:
                if type(entry) is tuple and len(entry) == 2 and _text(entry[0]) == "State":
                    state = entry[1]
    return {"pid": r[1], "module": str(r[2][1]) if type(r[2]) is tuple else str(r[2]),
            "behaviour": str(behaviour), "status": str(sys_state), "parent": parent,
            "state": state, "raw": r}


def _text(x: Any) -> Optional[str]:
    if isinstance(x, str):
        return str(x)
    if isinstance(x, (bytes, bytearray)):
        return bytes(x).decode("utf-8", "replace")
    if type(x) is list and all(type(c) is int for c in x):
        try:
            return "".join(map(chr, x))
        except (ValueError, OverflowError):
            return None
    return None


async def suspend(server: Any, timeout: float = 5.0) -> str:
    """Suspend the process: it answers only system messages (and its parent's EXIT)
    until :func:`resume`; other messages wait in its mailbox, in order.

    >>> await pyotp.sys.suspend(pid)
    'ok'
    """
    return str(await _request(server, A_SUSPEND, timeout))


async def resume(server: Any, timeout: float = 5.0) -> str:
    """Resume a suspended process.

    >>> await pyotp.sys.resume(pid)
    'ok'
    """
    return str(await _request(server, A_RESUME, timeout))


async def terminate(server: Any, reason: Any, timeout: float = 5.0) -> str:
    """Stop the process with ``reason`` (its ``terminate`` callback runs), as
    ``sys:terminate``; returns "ok" once it has been told (it exits right after).

    >>> await pyotp.sys.terminate(pid, "normal")
    'ok'
    """
    return str(await _request(server, (A_TERMINATE, reason), timeout))


async def change_code(server: Any, old_vsn: Any, extra: Any = None, timeout: float = 5.0,
                      module: Any = None) -> Any:
    """Run the behaviour's ``code_change(old_vsn, state, extra)``; it returns
    ("ok", new_state) (the state is replaced) or ("error", reason) (kept). Returns "ok" or
    the error tuple, as ``sys:change_code`` does. (OTP accepts it only while the process
    is suspended; pyotp processes accept it at any time.)

    >>> await pyotp.sys.change_code(pid, "1.0")
    'ok'
    """
    r = await _request(server, (A_CHANGE_CODE, module, old_vsn, extra), timeout)
    return "ok" if r == "ok" else r


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
