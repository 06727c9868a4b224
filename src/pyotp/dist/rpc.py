"""Remote procedure calls, Erlang's ``rpc`` module: run ``module.function(*args)`` on
another node (pyotp or Erlang) and get the result.

Results follow ``rpc:call``: the function's value, or ``("badrpc", reason)`` where reason is
``"nodedown"``, ``"timeout"``, ``("EXIT", exit_reason)`` or, for an exception,
``("EXIT", (exception, stacktrace))``. A module that does not exist, or a function it
lacks, gives ``("EXIT", ("undef", [(module, function, args, [])]))``, as in Erlang.

The request travels as Erlang's ``erpc`` does (SPAWN_REQUEST of ``erpc:execute_call/4``
with a monitor), so the same call works against OTP 23+ nodes and pyotp nodes. A pyotp
node runs the function in a fresh process; an ``async def`` function is awaited. Only
modules in the target's ``rpc_allow`` list may run when it set one.

Durations are seconds; ``timeout=None`` waits forever.

On a distributed node, with a pyotp node ``b@127.0.0.1`` and an Erlang node
``erl@127.0.0.1`` running::

    await rpc.call("b@127.0.0.1", "math", "factorial", [20])   # 2432902008176640000
    await rpc.call("erl@127.0.0.1", "erlang", "node", [])      # Atom('erl@127.0.0.1')
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import traceback
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Sequence, Tuple
from typing import cast as _tcast

from .. import _core
from ..etf import Atom, Pid, Reference
from . import beam_api
from .channel import ProtocolError
from .kernel import (_TIMED_OUT, A_BADARG, A_BADRPC, A_ERPC, A_EXECUTE_CALL, A_EXECUTE_CAST, A_LINK,
                     A_MONITOR, A_NODEDOWN, A_NOTSUP, A_TIMEOUT, SPAWN_FLAG_LINK, SPAWN_FLAG_MONITOR,
                     DistError, _await_with_timeout, _external_call, kernel)

if TYPE_CHECKING:  # pragma: no cover
    from .connection import Connection
    from .kernel import NetKernel

__all__ = ["call", "cast", "multicall", "multi_call", "abcast"]

_log = logging.getLogger("pyotp.dist")

# control message operations (dist.h), defined once, in the channel (dist_channel.pyx)
_OPS = _core.DIST_OPS
SPAWN_REQUEST = _OPS["SPAWN_REQUEST"]
SPAWN_REQUEST_TT = _OPS["SPAWN_REQUEST_TT"]
SPAWN_REPLY = _OPS["SPAWN_REPLY"]
SPAWN_REPLY_TT = _OPS["SPAWN_REPLY_TT"]
MONITOR_P_EXIT = _OPS["MONITOR_P_EXIT"]
PAYLOAD_MONITOR_P_EXIT = _OPS["PAYLOAD_MONITOR_P_EXIT"]
DEMONITOR_P = _OPS["DEMONITOR_P"]
# the kinds of entries in a channel's request table (DistChannel.track)
REQ = _core.DIST_REQUESTS
#: Exit reasons for an Erlang peer (str -> atom, exceptions -> {Name, <<Text>>}) ...
to_erl = _core.dist_to_erl
#: ... and from one (atoms -> str).
from_erl = _core.dist_from_erl

A_EXIT = Atom("EXIT")
A_RETURN = Atom("return")
A_EXIT_CLASS = Atom("exit")
A_ERROR = Atom("error")
A_UNDEF = Atom("undef")
A_NOT_ALLOWED = Atom("not_allowed")


def _check(node: Any, module: Any, function: Any, args: Any) -> None:
    if not isinstance(node, str) or "@" not in node:
        raise ValueError("rpc: %r is not a node name" % (node,))
    if not isinstance(module, str) or not isinstance(function, str):
        raise TypeError("rpc: module and function must be str (got %r, %r)" % (module, function))
    if not isinstance(args, (list, tuple)):
        raise TypeError("rpc: args must be a list, got %r" % (args,))


async def call(node: str, module: str, function: str, args: Sequence[Any] = (),
               timeout: Optional[float] = None) -> Any:
    """``rpc:call``: ``module.function(*args)`` on ``node``; the result or
    ``("badrpc", reason)`` (see the module documentation).

    On a distributed node, with ``b@127.0.0.1`` running::

        await rpc.call("b@127.0.0.1", "os", "getpid", [], timeout=5)      # 12345
        await rpc.call("b@127.0.0.1", "nosuchmodule", "f", [])
        # -> ('badrpc', ('EXIT', ('undef', [('nosuchmodule', 'f', [], [])])))
    """
    _check(node, module, function, args)
    return await rpc_call(kernel(), node, module, function, list(args), timeout)


def cast(node: str, module: str, function: str, args: Sequence[Any] = ()) -> bool:
    """``rpc:cast``: run ``module.function(*args)`` on ``node``, ignore the result.
    Returns True at once.

    On a distributed node::

        rpc.cast("b@127.0.0.1", "logging", "warning", ["hello"])     # True
    """
    _check(node, module, function, args)
    rpc_cast(kernel(), node, module, function, list(args))
    return True


async def multicall(nodes: Iterable[str], module: str, function: str, args: Sequence[Any] = (),
                    timeout: Optional[float] = None) -> Tuple[List[Any], List[str]]:
    """``rpc:multicall``: call every node concurrently. Returns ``(results, bad_nodes)``:
    results of the nodes that answered, in the order of ``nodes``; ``bad_nodes`` are the
    nodes that were down or did not answer in time.

    On a distributed node, with ``b`` and ``c`` running::

        await rpc.multicall(["b@127.0.0.1", "c@127.0.0.1"], "os", "getpid", [])
        # -> ([101, 102], [])
    """
    nodes = list(nodes)
    for n in nodes:
        _check(n, module, function, args)
    k = kernel()
    tasks = [asyncio.ensure_future(rpc_call(k, n, module, function, list(args), timeout)) for n in nodes]
    res = await asyncio.gather(*tasks)
    good, bad = [], []
    for n, r in zip(nodes, res):
        if type(r) is tuple and len(r) == 2 and r[0] == A_BADRPC and r[1] in (A_NODEDOWN, A_TIMEOUT):
            bad.append(n)
        else:
            good.append(r)
    return good, bad


async def multi_call(nodes: Iterable[str], name: str, request: Any,
                     timeout: Optional[float] = None) -> Tuple[List[Tuple[str, Any]], List[str]]:
    """``gen_server:multi_call``: call the server registered as ``name`` on every node,
    concurrently. Returns ``(replies, bad_nodes)`` where replies are ``(node, reply)``
    pairs and bad_nodes the nodes where the call failed (no server, node down, timeout).

    On a distributed node, with ``b`` and ``c`` running a server registered as
    ``"counter"``::

        await multi_call(["b@127.0.0.1", "c@127.0.0.1"], "counter", "get", timeout=5)
        # -> ([('b@127.0.0.1', 1), ('c@127.0.0.1', 7)], [])
    """
    nodes = list(nodes)
    if not isinstance(name, str):
        raise TypeError("multi_call: name must be a registered name (str), got %r" % (name,))

    async def one(n: str) -> Any:
        try:
            k = kernel()
            if n != k.name and not await k.connect(n):
                return _FAILED
            return await _external_call((name, n), request, timeout)
        except _core.Exit:
            return _FAILED

    res = await asyncio.gather(*[asyncio.ensure_future(one(n)) for n in nodes])
    replies = [(n, r) for n, r in zip(nodes, res) if r is not _FAILED]
    bad = [n for n, r in zip(nodes, res) if r is _FAILED]
    return replies, bad


_FAILED = object()


def abcast(nodes: Iterable[str], name: str, request: Any) -> str:
    """``gen_server:abcast``: cast ``request`` to the server registered as ``name`` on
    every node. Returns "abcast".

    >>> abcast(["b@127.0.0.1", "c@127.0.0.1"], "counter", "inc")
    'abcast'
    """
    for n in nodes:
        _core.cast((name, n), request)
    return "abcast"


# ---------------------------------------------------------------------------------------
# The kernel's side: spawn and rpc requests on the wire (erpc's protocol), moved unchanged
# from node.py (NetKernel's methods became functions of the kernel ``k``). The kernel owns
# these through ``k.rpc``; the requests in flight are in the connection's channel, in
# its one table by reference (``conn.ch.track``/``untrack``, kinds REQ["spawn"/"rpc"]).

class _Rpc:
    __slots__ = ("future", "node", "eref", "pid")

    def __init__(self, future: "asyncio.Future[Any]", node: str, eref: Reference) -> None:
        self.future = future
        self.node = node
        self.eref = eref
        self.pid: Optional[Pid] = None


# ---------------------------------------------------------------------------------------


def allowed(k: "NetKernel", module: str) -> bool:
    if k.rpc_allow is None:
        return True
    if module in k.rpc_allow:
        return True
    return any(module.startswith(a + ".") for a in k.rpc_allow)

def on_control(k: "NetKernel", conn: Connection, ctrl: Tuple[Any, ...], payload: Any) -> None:
    """The control messages the channel leaves to Python (``Connection.on_control``):
    SPAWN_REQUEST (payload: the argument list), SPAWN_REPLY, and the MONITOR_P_EXIT of an
    rpc request (payload: the reason as received)."""
    op = ctrl[0]
    if op == SPAWN_REQUEST or op == SPAWN_REQUEST_TT:
        on_spawn_request(k, conn, ctrl[1], ctrl[2], ctrl[3], ctrl[4], ctrl[5], payload)
    elif op == SPAWN_REPLY or op == SPAWN_REPLY_TT:
        on_spawn_reply(k, conn, ctrl[1], ctrl[2], ctrl[3], ctrl[4])
    elif op == MONITOR_P_EXIT or op == PAYLOAD_MONITOR_P_EXIT:
        e = conn.ch.untrack(ctrl[3])
        if e is not None and e[0] == REQ["rpc"] and not e[1].future.done():
            rpc_down(e[1], payload, conn.python)
    else:
        raise ProtocolError("unexpected control message for Python: %.200r" % (ctrl,))

def on_spawn_request(k: "NetKernel", conn: Connection, req: Any, frm: Any, gl: Any, mfa: Any,
                     opts: Any, args: Any) -> None:
    if (type(mfa) is not tuple or len(mfa) != 3 or type(frm) is not Pid
            or not isinstance(mfa[0], str) or not isinstance(mfa[1], str)):
        raise ProtocolError("malformed SPAWN_REQUEST %r" % ((req, frm, mfa, opts),))
    if type(args) is not list or type(opts) is not list:
        conn.ch.control((SPAWN_REPLY, req, frm, 0, A_BADARG))
        return
    m, f = str(mfa[0]), str(mfa[1])
    link = any(o == "link" for o in opts)
    mon = any(o == "monitor" for o in opts)
    if m == "erpc" and f == "execute_call" and len(args) == 4:
        pid = _core.spawn(_erpc_process, k, conn.peer, frm, req, args[0], args[1], args[2], args[3])
    elif m == "erpc" and f == "execute_cast" and len(args) == 3:
        pid = _core.spawn(_erpc_process, k, conn.peer, None, None, None, args[0], args[1], args[2])
    else:
        pid = _core.spawn(_spawned_process, k, m, f, args)
    flags = 0
    if link:
        _core._dist_link(frm, pid)
        flags |= SPAWN_FLAG_LINK
    if mon:
        _core._dist_monitor(frm, pid, req)
        flags |= SPAWN_FLAG_MONITOR
    conn.ch.control((SPAWN_REPLY, req, frm, flags, pid))

def on_spawn_reply(k: "NetKernel", conn: Connection, req: Any, to: Any, flags: Any, result: Any) -> None:
    s = conn.ch.tracked(req)
    if s is not None and s[0] == REQ["spawn"]:
        conn.ch.untrack(req)
        _kind, fut, frm = s
        if type(result) is Pid:
            if flags & SPAWN_FLAG_LINK and frm is not None:
                if not _core._dist_link(result, frm):
                    conn.ch.exit_out(frm, result, "noproc", True)
            if flags & SPAWN_FLAG_MONITOR and frm is not None:
                # the peer monitors the new process for frm, tagged with the request ref
                if _core._dist_add_monitor(frm, result, req):
                    conn.ch.track(req, REQ["monitor"], frm, result)
                else:
                    conn.ch.control((DEMONITOR_P, frm, result, req))
            if not fut.done():
                fut.set_result(result)
        elif not fut.done():
            fut.set_exception(DistError("spawn on %s failed: %s" % (conn.peer, result)))
        return
    if s is not None and s[0] == REQ["rpc"]:
        r = s[1]
        if type(result) is Pid:
            r.pid = result
        else:
            conn.ch.untrack(req)
            if not r.future.done():
                r.future.set_result((A_BADRPC, result if result != "badarg" else A_NOTSUP))

async def spawn(k: "NetKernel", node: str, fn: Any, args: Sequence[Any], link: bool,
                monitor: bool = False) -> Any:
    """Node.spawn/spawn_link/spawn_monitor: a pid, or (pid, ref) with ``monitor``."""
    if callable(fn) and not isinstance(fn, tuple):
        m, f = fn.__module__, fn.__qualname__
        if "." in f or "<" in f:
            raise DistError("Node.spawn needs a module-level function, got %r" % (fn,))
    elif isinstance(fn, tuple) and len(fn) == 2 and all(isinstance(x, str) for x in fn):
        m, f = fn
    else:
        raise DistError("Node.spawn expects a module-level function or a (module, function) "
                        "pair, got %r" % (fn,))
    try:
        me = _core.self()
    except _core.CallbackError:
        if link or monitor:
            raise DistError("Node.%s must be called inside a pyotp process"
                            % ("spawn_link" if link else "spawn_monitor")) from None
        me = None
    if node == k.name:
        if callable(fn):
            fnobj = fn
        elif not allowed(k, m):
            raise DistError("spawn of %s:%s refused: not_allowed" % (m, f))
        else:
            try:
                fnobj = _resolve(m, f)
            except _Undef:
                raise DistError("spawn of %s:%s failed: undef" % (m, f)) from None
        if monitor:
            return _core.spawn_monitor(_as_async, fnobj, tuple(args))
        pid = _core.spawn(_as_async, fnobj, tuple(args))
        if link:
            _core.link(pid)
        return pid
    if not await k.connect(node):
        raise DistError("spawn on %s failed: noconnection" % node)
    c = k.conns.get(node)
    if c is None:
        raise DistError("spawn on %s failed: noconnection" % node)
    req = _core.make_ref()
    fut: "asyncio.Future[Any]" = k.loop.create_future()
    c.ch.track(req, REQ["spawn"], fut, me)
    frm = me if me is not None else k.kernel_pid
    opts = ([A_LINK] if link else []) + ([A_MONITOR] if monitor else [])
    try:
        c.ch.control((SPAWN_REQUEST, req, frm, k.gl_pid, (Atom(m), Atom(f), len(args)), opts), list(args))
    except BaseException:
        c.ch.untrack(req)
        raise
    pid = _tcast(Pid, await fut)
    return (pid, req) if monitor else pid


async def apply_rpc(k: "NetKernel", m: Any, f: Any, a: Any) -> Any:
    """Run m.f(*a) here with rpc:call's result conventions."""
    tag = _core.make_ref()
    r = await _apply(k, m, f, a, tag, True)
    return _rpc_result(tag, r, True)

async def rpc_call(k: "NetKernel", node: str, m: str, f: str, args: Sequence[Any],
                   timeout: Optional[float]) -> Any:
    if node == k.name:
        fut: "asyncio.Future[Any]" = k.loop.create_future()
        _core.spawn(_local_rpc, k, m, f, list(args), fut)
        r = await _await_with_timeout(fut, timeout)
        return (A_BADRPC, A_TIMEOUT) if r is _TIMED_OUT else r
    if not await k.connect(node):
        return (A_BADRPC, A_NODEDOWN)
    c = k.conns.get(node)
    if c is None:
        return (A_BADRPC, A_NODEDOWN)
    req = _core.make_ref()
    eref = _core.make_ref()
    fut = k.loop.create_future()
    w = _Rpc(fut, node, eref)
    c.ch.track(req, REQ["rpc"], w, None)
    try:
        c.ch.control((SPAWN_REQUEST, req, k.kernel_pid, k.gl_pid, (A_ERPC, A_EXECUTE_CALL, 4), [A_MONITOR]),
                     [eref, Atom(m), Atom(f), list(args)])
    except BaseException:
        c.ch.untrack(req)
        raise
    r = await _await_with_timeout(fut, timeout)
    if r is _TIMED_OUT:
        c.ch.untrack(req)
        c2 = k.conns.get(node)
        if w.pid is not None and c2 is not None:
            c2.ch.control((DEMONITOR_P, k.kernel_pid, w.pid, req))
        return (A_BADRPC, A_TIMEOUT)
    return r

def rpc_cast(k: "NetKernel", node: str, m: str, f: str, args: Sequence[Any]) -> None:
    if node == k.name:
        _core.spawn(_erpc_process, k, None, None, None, None, m, f, list(args))
        return
    req = _core.make_ref()
    # queued (DistChannel.control) if the node is being connected
    k._queue(node, "control", ((SPAWN_REQUEST, req, k.kernel_pid, k.gl_pid,
                                (A_ERPC, A_EXECUTE_CAST, 3), []),
                               [Atom(m), Atom(f), list(args)]))

def erpc_done(k: "NetKernel", me: Pid, peer: str, frm: Pid, req: Reference, result: Any) -> None:
    _core._dist_demonitor(me, req)
    c = k.conns.get(peer)
    if c is None:
        return
    try:
        c.ch.down_out(me, frm, req, result, True)
    except Exception as e:
        bad: Any = (result[0], A_ERROR, (Atom("unencodable_result"), repr(e).encode()), [])
        c.ch.down_out(me, frm, req, bad, True)


def rpc_down(r: "_Rpc", reason: Any, pyotp_peer: bool) -> None:
    """The monitor of an rpc request's process fired (the kernel found ``r`` by its ref):
    its reason carries the result."""
    if not r.future.done():
        r.future.set_result(_rpc_result(r.eref, reason, pyotp_peer))


class _Undef(Exception):
    """m:f is not a function rpc may run (Erlang's ``undef``)."""


def _resolve(m: str, f: str) -> Any:
    """The function rpc/spawn runs for ``m:f``, as Erlang's M:F names an exported function of
    module M: ``f`` is a plain public name (no dots, no leading ``_``) whose module-level
    value is callable and is the module's own: defined there (its ``__module__`` is ``m``;
    a C function whose ``__self__`` is the module counts too) or exported explicitly in
    the module's ``__all__``. Anything else raises _Undef; errors raised while importing
    ``m`` propagate."""
    if not f.isidentifier() or f.startswith("_") or not _is_module_name(m):
        raise _Undef
    try:
        mod = importlib.import_module(m)
    except ImportError as e:
        if e.name is not None and (e.name == m or m.startswith(e.name + ".")):
            raise _Undef from None      # the module itself (or a parent package) is missing
        raise
    obj = mod.__dict__.get(f, _MISSING)
    if obj is _MISSING or not callable(obj):
        raise _Undef
    if getattr(obj, "__module__", None) == mod.__name__ or getattr(obj, "__self__", None) is mod:
        return obj
    exported = mod.__dict__.get("__all__")
    if isinstance(exported, (list, tuple)) and f in exported:
        return obj
    raise _Undef


_MISSING = object()


def _is_module_name(m: str) -> bool:
    return bool(m) and all(part.isidentifier() for part in m.split("."))


async def _as_async(fn: Any, args: Tuple[Any, ...]) -> Any:
    r = fn(*args)
    if inspect.isawaitable(r):
        r = await r
    return r


async def _apply(k: NetKernel, m: Any, f: Any, a: Any, eref: Any, pyotp_peer: bool) -> Any:
    """m.f(*a) -> erpc's exit reason {Ref, return, V} | {Ref, throw|exit, R} | {Ref, error, R, Stack}."""
    if not isinstance(m, str) or not isinstance(f, str) or not isinstance(a, (list, tuple)):
        return (eref, A_ERROR, A_BADARG, [])
    m, f = str(m), str(f)
    if not allowed(k, m):
        return (eref, A_ERROR, (A_NOT_ALLOWED, Atom(m)), [])
    try:
        fn = beam_api.lookup(m, f, a) or _resolve(m, f)
    except _Undef:
        return (eref, A_ERROR, A_UNDEF, [(Atom(m), Atom(f), list(a), [])])
    except Exception as e:
        return _error_reason(eref, e, pyotp_peer)
    try:
        v = fn(*a)
        if inspect.isawaitable(v):
            v = await v
    except _core.Exit as e:
        return (eref, A_EXIT_CLASS, e.reason if pyotp_peer else to_erl(e.reason))
    except Exception as e:
        return _error_reason(eref, e, pyotp_peer)
    return (eref, A_RETURN, v)


def _error_reason(eref: Any, e: BaseException, pyotp_peer: bool) -> Any:
    stack = [(Atom(fr.filename.rsplit("/", 1)[-1]), Atom(fr.name), 0,
              [(Atom("file"), fr.filename), (Atom("line"), fr.lineno or 0)])
             for fr in traceback.extract_tb(e.__traceback__)][-8:]
    if pyotp_peer:
        return (eref, A_ERROR, e, stack)
    return (eref, A_ERROR, to_erl(e), stack)


def _rpc_result(eref: Any, reason: Any, pyotp_peer: bool) -> Any:
    """erpc's monitor exit reason -> rpc:call's result."""
    if type(reason) is tuple and len(reason) >= 3 and reason[0] == eref:
        tag = reason[1]
        if tag == "return" or tag == "throw":
            return reason[2]
        if tag == "exit":
            return (A_BADRPC, (A_EXIT, reason[2]))
        if tag == "error":
            return (A_BADRPC, (A_EXIT, (reason[2], reason[3] if len(reason) > 3 else [])))
    if reason == "noconnection":
        return (A_BADRPC, A_NODEDOWN)
    return (A_BADRPC, (A_EXIT, reason if pyotp_peer else from_erl(reason)))


async def _erpc_process(k: NetKernel, peer: Optional[str], frm: Optional[Pid], req: Any, eref: Any,
                        m: Any, f: Any, a: Any) -> None:
    c = k.conns.get(peer) if peer is not None else None
    pyotp_peer = c.python if c is not None else True
    result = await _apply(k, m, f, a, eref, pyotp_peer)
    if frm is not None and peer is not None:
        erpc_done(k, _core.self(), peer, frm, req, result)
    elif frm is None and result[1] == "error":
        _log.error("pyotp dist: rpc cast %s:%s failed: %r", m, f, result[2])


async def _local_rpc(k: NetKernel, m: str, f: str, a: List[Any], fut: "asyncio.Future[Any]") -> None:
    eref = _core.make_ref()
    r = await _apply(k, m, f, a, eref, True)
    if not fut.done():
        fut.set_result(_rpc_result(eref, r, True))


async def _spawned_process(k: NetKernel, m: str, f: str, args: List[Any]) -> Any:
    if not allowed(k, m):
        raise _core.Exit(("not_allowed", m))
    try:
        fn = beam_api.lookup(m, f, args) or _resolve(m, f)
    except _Undef:
        raise _core.Exit(("undef", [(m, f, args, [])])) from None
    r = fn(*args)
    if inspect.isawaitable(r):
        r = await r
    return r
