"""The BEAM introspection calls that operators, scripts and tools make, answered by a pyotp
node over rpc with BEAM's result shapes.

``erl_call -a 'erlang memory []'``, ``:rpc.call(node, :erlang, :processes, [])`` or a
release script's ``init:stop()`` name Erlang modules that do not exist in Python. The rpc
layer (``_apply`` and ``_spawned_process`` in ``rpc.py``) looks ``(module, function,
arity)`` up in :data:`HANDLERS` before it imports anything, so these calls get answers
built from pyotp's own introspection (``_core.processes()``, ``_core.process_info``, the
registry, the applications, the distribution kernel). Any other function of these modules
still fails with ``undef`` exactly as on BEAM, and ``rpc_allow`` applies first, as to every
module: a node started with ``rpc_allow=["myapp"]`` answers ``erlang:node()`` with
``not_allowed`` unless ``"erlang"`` is in the list too.

Where pyotp has no equivalent, the answer keeps BEAM's shape with pyotp's nearest figure
(documented in docs/operations.md): ``reductions`` count handled messages, memory figures
are the process's resident size and the processes' own estimates, ``otp_release`` is
pyotp's own identification (``"pyotp-0.1.0"``), ``schedulers`` is 1 (one node runs on one
thread).

Stopping (``init:stop/0,1``, ``erlang:halt/0,1``) goes through :func:`request_stop`: the
node's normal shutdown, as SIGTERM gives ``python -m pyotp run``.

From an Erlang node, or from another pyotp node with ``rpc`` (``b@127.0.0.1`` being a
pyotp node)::

    await rpc.call("b@127.0.0.1", "erlang", "system_info", [Atom("process_count")])   # 42
    %% in erl: rpc:call('b@127.0.0.1', erlang, system_info, [process_count]).
"""
from __future__ import annotations

import asyncio
import atexit
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import _core
from .._version import __version__
from ..etf import Atom, Pid, Port, Reference

__all__ = ["HANDLERS", "lookup", "request_stop", "on_stop"]

A_UNDEFINED = Atom("undefined")
A_OK = Atom("ok")

# BEAM's process_info/1 items, in BEAM's order (registered_name comes first when set)
INFO_ITEMS = ("current_function", "initial_call", "status", "message_queue_len", "links",
              "dictionary", "trap_exit", "error_handler", "priority", "group_leader",
              "total_heap_size", "heap_size", "stack_size", "reductions", "garbage_collection",
              "suspending")
MEMORY_KEYS = ("total", "processes", "processes_used", "system", "atom", "atom_used", "binary",
               "code", "ets")
PROCESS_LIMIT = 134217727      # BEAM's maximum: pyotp has no fixed limit
WORD = 8

_started = time.monotonic()
_last: Dict[str, float] = {}


def _badarg(m: str, f: str, args: List[Any]) -> "_core.Exit":
    return _core.Exit((Atom("badarg"), [(Atom(m), Atom(f), list(args), [])]))


def _atom_arg(m: str, f: str, args: List[Any]) -> str:
    """An argument Erlang gives as an atom (a pyotp peer may pass a plain str)."""
    if not isinstance(args[0], str):
        raise _badarg(m, f, args)
    return str(args[0])


def _charlist(s: str) -> List[int]:
    """An Erlang string (what system_info(otp_release) and application versions are)."""
    return [ord(c) for c in s]


def _kernel() -> Any:
    from .kernel import running
    return running()


# -- erlang ---------------------------------------------------------------------------------

def _node0() -> Atom:
    return _core.local_node()


def _node1(x: Any) -> Atom:
    if type(x) in (Pid, Reference, Port):
        return Atom(x.node)
    raise _badarg("erlang", "node", [x])


def _nodes0() -> List[Atom]:
    return _nodes1(Atom("visible"))


def _nodes1(kinds: Any) -> List[Atom]:
    from .node import Node
    out: List[Atom] = []
    for kind in (kinds if isinstance(kinds, list) else [kinds]):
        if not isinstance(kind, str) or kind not in ("visible", "hidden", "connected", "this", "known"):
            raise _badarg("erlang", "nodes", [kinds])
        for n in Node.list(str(kind)):
            a = Atom(n)
            if a not in out:
                out.append(a)
    return out


def _is_alive() -> bool:
    return _kernel() is not None


def _whereis(name: Any) -> Any:
    pid = _core.whereis(_atom_arg("erlang", "whereis", [name]))
    return A_UNDEFINED if pid is None else pid


def _registered() -> List[Atom]:
    return [Atom(n) for n in _core.registered()]


def _processes() -> List[Pid]:
    return _core.processes()


def _local_pid(f: str, args: List[Any]) -> Pid:
    pid = args[0]
    if type(pid) is not Pid or pid.node != _core.local_node():
        raise _badarg("erlang", f, args)
    return pid


def _info_value(item: str, info: Dict[str, Any]) -> Any:
    beh = info.get("behaviour")
    mem = int(info.get("memory") or 0)
    handled = int(info.get("messages_handled") or 0)
    if item == "registered_name":
        return Atom(info["registered_name"])
    if item == "current_function":     # a behaviour process sits in its callback loop
        return (Atom(beh), Atom("loop"), 0) if beh else (Atom("pyotp"), Atom("process"), 0)
    if item == "initial_call":     # BEAM: a behaviour starts in proc_lib (see dictionary)
        return (Atom("proc_lib"), Atom("init_p"), 5) if beh else (Atom("pyotp"), Atom("spawn"), 1)
    if item == "status":
        return Atom(info.get("status") or "waiting")
    if item == "message_queue_len":
        return int(info.get("message_queue_len") or 0)
    if item == "messages":
        return list(info.get("messages") or [])
    if item == "links":
        return list(info.get("links") or [])
    if item == "monitors":
        return [(Atom("process"), p) for p in info.get("monitors") or []]
    if item == "monitored_by":
        return list(info.get("monitored_by") or [])
    if item == "dictionary":
        return _proc_lib_dictionary(info)
    if item == "trap_exit":
        return bool(info.get("trap_exit"))
    if item == "error_handler":
        return Atom("error_handler")
    if item == "priority":
        return Atom("normal")
    if item == "group_leader":
        k = _kernel()
        return k.gl_pid if k is not None and k.gl_pid is not None else _core.self()
    if item in ("total_heap_size", "heap_size"):
        return mem // WORD
    if item == "stack_size":
        return 0
    if item == "reductions":
        return handled
    if item == "memory":
        return mem
    if item == "garbage_collection":
        return [(Atom("max_heap_size"), {Atom("error_logger"): True, Atom("kill"): True, Atom("size"): 0}),
                (Atom("min_bin_vheap_size"), 46422), (Atom("min_heap_size"), 233),
                (Atom("fullsweep_after"), 65535), (Atom("minor_gcs"), 0)]
    if item == "suspending":
        return []
    raise KeyError(item)


def _behaviour_initial_call(info: Dict[str, Any]) -> Optional[Tuple[Atom, Atom, int]]:
    """proc_lib's '$initial_call' of a behaviour process, {CallbackModule, init, 1}; the
    callback class's dotted name stands for the module (as sys:get_status shows it)."""
    ic = info.get("initial_call")
    if not info.get("behaviour") or not ic or not isinstance(ic[1], str) or not ic[1].endswith(".init"):
        return None
    return (Atom("%s.%s" % (ic[0], ic[1][:-5])), Atom("init"), 1)


def _proc_lib_dictionary(info: Dict[str, Any]) -> List[Tuple[Atom, Any]]:
    """What proc_lib keeps in a behaviour's process dictionary ('$initial_call',
    '$ancestors'); pyotp processes have no other dictionary entries."""
    ic = _behaviour_initial_call(info)
    if ic is None:
        return []
    parent = info.get("parent")
    return [(Atom("$initial_call"), ic), (Atom("$ancestors"), [parent] if parent is not None else [])]


def _proc_lib_initial_call(pid: Any) -> Any:
    """proc_lib:initial_call/1: {Module, Function, Args} with BEAM's placeholder args, or
    false for a process proc_lib did not start."""
    info = _core.process_info(_local_pid("process_info", [pid]))
    ic = _behaviour_initial_call(info) if info is not None else None
    if ic is None:
        return False
    return (ic[0], ic[1], [Atom("Argument__1")])


def _proc_lib_translate_initial_call(pid: Any) -> Any:
    """proc_lib:translate_initial_call/1: {Module, Function, Arity}; BEAM's answer for a
    process proc_lib did not start is {proc_lib, init_p, 5}."""
    info = _core.process_info(_local_pid("process_info", [pid]))
    ic = _behaviour_initial_call(info) if info is not None else None
    return ic if ic is not None else (Atom("proc_lib"), Atom("init_p"), 5)


def _process_info1(pid: Any) -> Any:
    info = _core.process_info(_local_pid("process_info", [pid]))
    if info is None:
        return A_UNDEFINED
    items = (("registered_name",) if info.get("registered_name") is not None else ()) + INFO_ITEMS
    return [(Atom(i), _info_value(i, info)) for i in items]


def _process_info2(pid: Any, spec: Any) -> Any:
    args = [pid, spec]
    info = _core.process_info(_local_pid("process_info", args))
    items = spec if isinstance(spec, list) else [spec]
    out: List[Any] = []
    for i in items:
        if not isinstance(i, str):
            raise _badarg("erlang", "process_info", args)
        if info is None:
            continue
        if i == "registered_name" and info.get("registered_name") is None:
            # BEAM: [] for an unregistered process, {registered_name, []} in a list
            out.append((Atom(i), []) if isinstance(spec, list) else [])
            continue
        try:
            out.append((Atom(i), _info_value(str(i), info)))
        except KeyError:
            raise _badarg("erlang", "process_info", args) from None
    if info is None:
        return A_UNDEFINED
    return out if isinstance(spec, list) else out[0]


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * (1 if sys.platform == "darwin" else 1024)


def _memory_figures() -> Dict[str, int]:
    procs = 0
    for p in _core.processes():
        info = _core.process_info(p)
        if info is not None:
            procs += int(info.get("memory") or 0)
    total = max(_rss(), procs)
    return {"total": total, "processes": procs, "processes_used": procs,
            "system": total - procs, "atom": 0, "atom_used": 0, "binary": 0, "code": 0, "ets": 0}


def _memory0() -> List[Tuple[Atom, int]]:
    figs = _memory_figures()
    return [(Atom(k), figs[k]) for k in MEMORY_KEYS]


def _memory1(what: Any) -> Any:
    figs = _memory_figures()
    if isinstance(what, list):
        if not all(isinstance(w, str) and w in figs for w in what):
            raise _badarg("erlang", "memory", [what])
        return [(Atom(w), figs[w]) for w in what]
    if not isinstance(what, str) or what not in figs:
        raise _badarg("erlang", "memory", [what])
    return figs[str(what)]


def _system_info(item: Any) -> Any:
    if item == "process_count":
        return len(_core.processes())
    if item == "process_limit":
        return PROCESS_LIMIT
    if item == "otp_release":
        return _charlist("pyotp-" + __version__)
    if item in ("schedulers", "schedulers_online", "logical_processors"):
        return 1 if item != "logical_processors" else (os.cpu_count() or 1)
    raise _badarg("erlang", "system_info", [item])


def _since(key: str, now: int) -> Tuple[int, int]:
    last = int(_last.get(key, 0))
    _last[key] = now
    return (now, now - last)


def _statistics(item: Any) -> Any:
    if item == "run_queue":
        return sum(1 for p in _core.processes()
                   if (_core.process_info(p) or {}).get("status") == "runnable")
    if item == "reductions":
        total = sum(int((_core.process_info(p) or {}).get("messages_handled") or 0)
                    for p in _core.processes())
        return _since("reductions", total)
    if item == "wall_clock":
        return _since("wall_clock", int((time.monotonic() - _started) * 1000))
    if item == "runtime":
        return _since("runtime", int(time.process_time() * 1000))
    raise _badarg("erlang", "statistics", [item])


def _halt0() -> Any:
    return _halt1(0)


def _halt1(status: Any) -> Any:
    if not (isinstance(status, int) and not isinstance(status, bool) and status >= 0) \
            and not isinstance(status, str):
        raise _badarg("erlang", "halt", [status])
    code = status if isinstance(status, int) else 1
    request_stop(("halt", code), exit_status=code)
    return A_OK


# -- global, application, init, net_adm -----------------------------------------------------

def _global_registered_names() -> List[Any]:
    from . import global_names
    return [Atom(n) if isinstance(n, str) else n for n in global_names.registered_names()]


def _global_whereis_name(name: Any) -> Any:
    from . import global_names
    pid = global_names.whereis_name(name)
    return A_UNDEFINED if pid is None else pid


def _which_applications(timeout: Any = None) -> List[Tuple[Atom, List[int], List[int]]]:
    from .. import application
    out = []
    for name in application.Application.started_applications():
        entry = application._running.get(name)
        cls = entry.cls if entry is not None else None
        desc = getattr(cls, "description", None) or ((cls.__doc__ or "").strip().split("\n")[0]
                                                     if cls is not None else "") or name
        vsn = getattr(cls, "vsn", None) or ""
        out.append((Atom(name), _charlist(str(desc)), _charlist(str(vsn))))
    return out


def _init_stop0() -> Atom:
    return _init_stop1(0)


def _init_stop1(status: Any) -> Atom:
    request_stop(("init", Atom("stop")), exit_status=status if isinstance(status, int) else 1)
    return A_OK


async def _ping(node: Any) -> Atom:
    from .node import Node
    if not isinstance(node, str):
        raise _badarg("net_adm", "ping", [node])
    return Atom(await Node.ping(str(node)))


# -- stopping -------------------------------------------------------------------------------

# Whoever runs the node registers how to stop it when nothing awaits a system stop
# (run_node: exit its main process with "shutdown").
_stop_fallbacks: List[Callable[[Any], bool]] = []


def on_stop(fn: Callable[[Any], bool]) -> Callable[[], None]:
    """Register ``fn(reason) -> handled`` for :func:`request_stop` when no process awaits
    ``Application.await_system_stop()``; returns a function that unregisters it.

    >>> undo = beam_api.on_stop(lambda reason: pyotp.exit(main_pid, "shutdown"))
    """
    _stop_fallbacks.append(fn)

    def undo() -> None:
        if fn in _stop_fallbacks:
            _stop_fallbacks.remove(fn)
    return undo


def request_stop(reason: Any, exit_status: Optional[int] = None) -> None:
    """Stop the node normally, as ``init:stop()`` does: whoever awaits
    ``Application.await_system_stop()`` (``python -m pyotp run``) stops the applications in
    reverse start order; otherwise the runner's fallback (``pyotp.run(node=...)``: its main
    process exits with ``shutdown``). The stop starts after the caller's reply has been sent.
    With ``exit_status`` other than 0 the OS process exits with it afterwards (``halt/1``).

    >>> beam_api.request_stop(("init", "stop"))
    """
    if exit_status:
        def _exit_with() -> None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exit_status)
        atexit.register(_exit_with)
    asyncio.get_running_loop().call_soon(_do_stop, reason)


def _do_stop(reason: Any) -> None:
    from .. import application
    st = application._system_state()
    if any(_core.is_alive(w) for w in st.waiters) or not _stop_fallbacks:
        application.Application.system_stop(reason)
        return
    for fn in list(_stop_fallbacks):
        if fn(reason):
            return
    application.Application.system_stop(reason)


# -- the table ------------------------------------------------------------------------------

HANDLERS: Dict[Tuple[str, str, int], Callable[..., Any]] = {
    ("erlang", "node", 0): _node0,
    ("erlang", "node", 1): _node1,
    ("erlang", "nodes", 0): _nodes0,
    ("erlang", "nodes", 1): _nodes1,
    ("erlang", "is_alive", 0): _is_alive,
    ("erlang", "whereis", 1): _whereis,
    ("erlang", "registered", 0): _registered,
    ("erlang", "processes", 0): _processes,
    ("erlang", "process_info", 1): _process_info1,
    ("erlang", "process_info", 2): _process_info2,
    ("erlang", "memory", 0): _memory0,
    ("erlang", "memory", 1): _memory1,
    ("erlang", "system_info", 1): _system_info,
    ("erlang", "statistics", 1): _statistics,
    ("erlang", "halt", 0): _halt0,
    ("erlang", "halt", 1): _halt1,
    ("global", "registered_names", 0): _global_registered_names,
    ("global", "whereis_name", 1): _global_whereis_name,
    ("application", "which_applications", 0): _which_applications,
    ("application", "which_applications", 1): _which_applications,
    ("init", "stop", 0): _init_stop0,
    ("init", "stop", 1): _init_stop1,
    ("net_adm", "ping", 1): _ping,
    ("proc_lib", "initial_call", 1): _proc_lib_initial_call,
    ("proc_lib", "translate_initial_call", 1): _proc_lib_translate_initial_call,
}
"""(module, function, arity) -> the handler, called with the rpc's arguments."""


def lookup(m: str, f: str, args: Any) -> Optional[Callable[..., Any]]:
    """The handler for ``m:f/len(args)``, or None (then the rpc imports ``m`` as usual).

    >>> beam_api.lookup("erlang", "node", [])()      # this node's name (not distributed here)
    Atom('nonode@nohost')
    """
    return HANDLERS.get((m, f, len(args)))
