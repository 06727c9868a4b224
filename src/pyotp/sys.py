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

>>> await pyotp.sys.get_state(counter)
0
>>> await pyotp.sys.replace_state(counter, lambda n: n + 1)
1
>>> await pyotp.sys.suspend(counter)
'ok'
>>> await pyotp.sys.resume(counter)
'ok'
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, cast

from . import _core
from .etf import Atom, ExportFun, OpaqueFun

_log = logging.getLogger("pyotp.sys")

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
                      remote: bool, debug: Optional["Debug"] = None
                      ) -> Tuple[Any, Any, Any, Optional["Debug"]]:
    """OTP's ``sys:handle_system_msg`` for a pyotp behaviour process (the core calls it
    between two messages): ``mod`` is the behaviour instance, ``req`` the request term,
    ``remote`` whether the asker is on another node (its reply must be plain ETF),
    ``debug`` the process's :class:`Debug` record (None without sys debug options).
    Returns ``(action, reply, new_state, new_debug)``, action None, "suspend", "resume"
    or ("terminate", reason).

    >>> handle_system_msg(Counter(), 1, "get_state", False, None, False)
    (None, 1, 1, None)
    """
    if isinstance(req, str):
        if req == "get_state":
            return None, _get_state(mod, state, remote), state, debug
        if req == "get_status":
            return None, _get_status(mod, state, suspended, parent, remote, debug), state, debug
        if req == "suspend":
            return "suspend", A_OK, state, debug
        if req == "resume":
            return "resume", A_OK, state, debug
    elif type(req) is tuple and req:
        tag = req[0]
        if tag == "replace_state" and len(req) == 2:
            reply, new = _replace_state(mod, state, req[1], remote)
            return None, reply, new, debug
        if tag == "terminate" and len(req) == 2:
            return ("terminate", req[1]), A_OK, state, debug
        if tag == "change_code" and len(req) == 4:
            reply, new = _change_code(mod, state, req[2], req[3])
            return None, reply, new, debug
        if tag == "debug" and len(req) == 2:
            reply, debug = _debug(req[1], debug, remote)
            return None, reply, state, debug
    return None, (A_ERROR, (Atom("unknown_system_msg"), req)), state, debug


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


class Debug:
    """The sys debug options a behaviour process keeps (OTP's ``Debug`` list): statistics,
    an event log and installed functions, fed by the core with every ``{in, Msg}``,
    ``{out, Reply, To, State}`` and ``{noreply, State}`` event of messages the behaviour
    handles (system messages are not events, as in OTP). A process without options has
    none (the core then checks one pointer per message).

    >>> d = Debug(); d.statistics_on(); d.event((Atom("in"), "hello")); d.stat_in
    1
    """

    __slots__ = ("stat_start", "stat_reds", "stat_in", "stat_out", "log_n", "log", "funcs")

    def __init__(self) -> None:
        self.stat_start: Any = None          # None: statistics off
        self.stat_reds = 0
        self.stat_in = 0
        self.stat_out = 0
        self.log_n = 0                       # 0: no event log
        self.log: Deque[Any] = deque()
        self.funcs: List[List[Any]] = []     # [id, func, func_state], in install order

    def empty(self) -> bool:
        return self.stat_start is None and self.log_n == 0 and not self.funcs

    def statistics_on(self) -> None:
        if self.stat_start is None:          # as OTP: a second true keeps the counts
            self.stat_start = _localtime()
            self.stat_reds = _reductions()
            self.stat_in = self.stat_out = 0

    def event(self, ev: Any) -> None:
        if self.stat_start is not None:
            if ev[0] == "in":
                self.stat_in += 1
            elif ev[0] == "out":
                self.stat_out += 1
        if self.log_n:
            self.log.append(ev)
            if len(self.log) > self.log_n:
                self.log.popleft()
        if self.funcs:
            name = _own_name()
            for entry in list(self.funcs):
                try:
                    r = entry[1](entry[2], ev, name)
                except Exception:
                    _log.exception("sys: installed debug function %r failed; removed", entry[1])
                    r = "done"
                if isinstance(r, str) and r == "done":
                    self.funcs.remove(entry)
                else:
                    entry[2] = r


def _localtime() -> Any:
    """erlang:localtime(): {{Y, M, D}, {H, Mi, S}}."""
    t = time.localtime()
    return ((t.tm_year, t.tm_mon, t.tm_mday), (t.tm_hour, t.tm_min, t.tm_sec))


def _own_name() -> Any:
    """What OTP's behaviours give installed debug functions as their third argument: the
    registered name, else the pid."""
    me = _core.self()
    name = (_core.process_info(me, ["registered_name"]) or {}).get("registered_name")
    return Atom(name) if name else me


def _reductions() -> int:
    info = _core.process_info(_core.self(), ["reductions"]) or {}
    return int(info.get("reductions", 0))


def _installable(fun: Any, remote: bool) -> Callable[..., Any]:
    """An installed debug function: a Python callable, or ``fun M:F/3`` naming a Python
    function this node lets rpc run. An Erlang closure cannot run here."""
    if callable(fun) and not isinstance(fun, (ExportFun, OpaqueFun)):
        return cast(Callable[..., Any], fun)
    if isinstance(fun, ExportFun) and fun.arity == 3:
        from .dist import kernel as _kernel, rpc as _rpc
        k = _kernel.running()
        m, f = str(fun.module), str(fun.function)
        if k is not None and not _rpc.allowed(k, m):
            raise _core.Exit(("not_allowed", m))
        try:
            return cast(Callable[..., Any], _rpc._resolve(m, f))
        except _rpc._Undef:
            raise _core.Exit(("undef", [(m, f, 3, [])])) from None
    raise NotImplementedError("a pyotp process cannot run an Erlang closure; "
                              "install fun Module:Function/3 naming a Python function")


def _debug(what: Any, dbg: Optional[Debug], remote: bool) -> Tuple[Any, Optional[Debug]]:
    """OTP's sys:debug_cmd: trace (pyotp.tracing's log output), statistics, log and
    install/remove; anything else is ``unknown_debug``, as OTP answers. Returns (reply,
    the new record or None when it holds nothing)."""
    d = dbg if dbg is not None else Debug()
    if isinstance(what, str) and what == "no_debug":
        from . import tracing
        tracing.stop(_core.self())
        return A_OK, None
    if not (type(what) is tuple and len(what) == 2):
        return Atom("unknown_debug"), dbg
    cmd, arg = what
    reply: Any = Atom("unknown_debug")
    if cmd == "trace" and arg in (True, False):
        from . import tracing
        if arg:
            tracing.trace(_core.self(), "log", 100)
        else:
            tracing.stop(_core.self())
        reply = A_OK
    elif cmd == "statistics":
        if arg is True:
            d.statistics_on()
            reply = A_OK
        elif arg is False:
            d.stat_start = None
            reply = A_OK
        elif isinstance(arg, str) and arg == "get":
            if d.stat_start is None:
                reply = (A_OK, Atom("no_statistics"))
            else:
                reply = (A_OK, [(Atom("start_time"), d.stat_start),
                                (Atom("current_time"), _localtime()),
                                (Atom("reductions"), _reductions() - d.stat_reds),
                                (Atom("messages_in"), d.stat_in),
                                (Atom("messages_out"), d.stat_out)])
    elif cmd == "log":
        n = 10 if arg is True else (arg[1] if type(arg) is tuple and len(arg) == 2
                                    and arg[0] is True and type(arg[1]) is int
                                    and arg[1] >= 0 else None)
        if n is not None:
            if not d.log_n:                   # as OTP: turning it on again keeps the events
                d.log.clear()
            d.log_n = n
            while len(d.log) > n:
                d.log.popleft()
            reply = A_OK
        elif arg is False:
            d.log_n = 0
            d.log.clear()
            reply = A_OK
        elif isinstance(arg, str) and arg == "get":
            reply = (A_OK, list(d.log))
        elif isinstance(arg, str) and arg == "print":
            for ev in d.log:
                _log.info("*DBG* %r %r", _core.self(), ev)
            reply = A_OK
    elif cmd == "install" and type(arg) is tuple and len(arg) in (2, 3):
        fun = arg[-2]
        fid = arg[0] if len(arg) == 3 else fun
        try:
            f = _installable(fun, remote)
        except (NotImplementedError, _core.Exit) as e:
            return _failed(fun, e, remote), dbg
        for entry in d.funcs:
            if entry[0] == fid:              # as OTP: installing an installed id keeps it
                break
        else:
            d.funcs.append([fid, f, arg[-1]])
        reply = A_OK
    elif cmd == "remove":
        d.funcs = [e for e in d.funcs if e[0] != arg]
        reply = A_OK
    return reply, (None if d.empty() else d)


def _status_name(mod: Any) -> str:
    return str(getattr(mod, "otp_behaviour", "gen_server"))


def _get_status(mod: Any, state: Any, suspended: bool, parent: Any, remote: bool,
                debug: Optional[Debug] = None) -> Any:
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
                            (_charlist("Logged events"), list(debug.log) if debug else [])]),
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


async def statistics(server: Any, flag: Any, timeout: float = 5.0) -> Any:
    """OTP's sys:statistics: True starts counting (messages in and out, reductions), False
    stops, "get" returns a dict ``start_time``, ``current_time`` (erlang:localtime's
    ``((y, m, d), (h, mi, s))``), ``reductions``, ``messages_in``, ``messages_out``, or
    None when statistics are off. True and False return "ok". Works on BEAM processes too.

    >>> await pyotp.sys.statistics(pid, True)
    'ok'
    >>> (await pyotp.sys.statistics(pid, "get"))["messages_in"]
    0
    """
    if flag not in (True, False, "get"):
        raise TypeError("sys.statistics: flag must be True, False or 'get', got %r" % (flag,))
    r = await _request(server, (A_DEBUG, (A_STATISTICS, Atom(flag) if flag == "get" else flag)),
                       timeout)
    if flag != "get":
        return _plain(r)
    if type(r) is tuple and len(r) == 2 and r[0] == "ok":
        if type(r[1]) is list:
            return {str(k): v for k, v in r[1]}
        if r[1] == "no_statistics":
            return None
    raise _core.Exit(("bad_statistics", r))


async def log(server: Any, flag: Any, timeout: float = 5.0) -> Any:
    """OTP's sys:log: True keeps the last 10 events (``("true", n)`` the last ``n``),
    False drops them, "get" returns them oldest first (``("in", msg)``, ``("out", reply,
    to, state)``, ``("noreply", state)``), "print" logs them (logger ``pyotp.sys`` on a
    pyotp process). Works on BEAM processes too.

    >>> await pyotp.sys.log(pid, True)
    'ok'
    >>> await pyotp.sys.log(pid, "get")
    []
    """
    if isinstance(flag, str) and flag in ("get", "print"):
        arg: Any = Atom(flag)
    elif flag is True or flag is False:
        arg = flag
    elif type(flag) is tuple and len(flag) == 2 and flag[0] == "true" and type(flag[1]) is int:
        arg = (True, flag[1])
    else:
        raise TypeError("sys.log: flag must be True, False, ('true', n), 'get' or 'print', "
                        "got %r" % (flag,))
    r = await _request(server, (A_DEBUG, (Atom("log"), arg)), timeout)
    if flag == "get":
        if type(r) is tuple and len(r) == 2 and r[0] == "ok" and type(r[1]) is list:
            return r[1]
        raise _core.Exit(("bad_log", r))
    return _plain(r)


async def install(server: Any, func: Any, func_state: Any, timeout: float = 5.0) -> Any:
    """OTP's sys:install: ``func(func_state, event, name)`` runs in the process for every
    event (see :func:`log`; ``name`` is the registered name or the pid, as OTP's
    behaviours pass) and returns the next func_state, or "done" to remove itself. On a pyotp process ``func`` is a Python callable; on a BEAM process an Erlang
    function (``ExportFun(module, function, 3)``).

    >>> await pyotp.sys.install(pid, lambda n, ev, st: n + 1, 0)
    'ok'
    """
    return _plain(await _request(server, (A_DEBUG, (Atom("install"), (func, func_state))),
                                 timeout))


async def remove(server: Any, func: Any, timeout: float = 5.0) -> Any:
    """OTP's sys:remove: uninstall ``func`` (a no-op if it is not installed).

    >>> count = lambda n, event, name: n + 1
    >>> await pyotp.sys.install(pid, count, 0)
    'ok'
    >>> await pyotp.sys.remove(pid, count)
    'ok'
    """
    return _plain(await _request(server, (A_DEBUG, (Atom("remove"), func)), timeout))


async def no_debug(server: Any, timeout: float = 5.0) -> Any:
    """OTP's sys:no_debug: turn off every debug option (trace, log, statistics, installed
    functions).

    >>> await pyotp.sys.no_debug(pid)
    'ok'
    """
    return _plain(await _request(server, (A_DEBUG, Atom("no_debug")), timeout))


def _plain(r: Any) -> Any:
    return str(r) if isinstance(r, Atom) else r
