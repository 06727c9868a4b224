"""Global names: one name -> pid table replicated on every connected (visible) pyotp node,
like Erlang's ``global``. ``("global", name)`` names go through it: ``GenServer.start(...,
name=("global", "svc"))``, ``GenServer.call(("global", "svc"), ...)``, ``pyotp.send``.

How it works (pyotp's own protocol between pyotp nodes, over the distribution channel):

- Every node holds the whole table. ``register_name`` checks the local copy, records the
  name, and broadcasts ``("register", name, pid)`` to the other nodes; the node that owns
  the pid monitors it and broadcasts ``("unregister", name, pid)`` when it dies.
- When two nodes connect (at startup, or when a partition heals), each sends the other
  its own processes' registrations and the nodes it knows; unknown nodes are connected to,
  so the cluster stays fully connected, as Erlang's global keeps it.
- Replication messages are applied when they arrive (not by a process later), so their
  order follows the connection's order: after a reply from node X, everything X
  broadcast before it is in the local table.
- A conflict (the same name registered to different pids, typically by two partitions
  that now merge) is resolved the same way on every node: the registration whose pid lives
  on the node with the smaller name is kept; the other process is killed by its own node
  (reason ``"killed"``), with a log line, as ``global:random_exit_name`` does. Pass
  ``resolve=`` to ``register_name`` to decide otherwise (it must be deterministic).
- A node going down takes its processes' names with it.

Registration itself takes no cluster-wide lock between pyotp nodes (unlike Erlang's
global): two nodes registering the same name in the same instant both get "yes" and the
conflict rule then keeps one. Global locks for the caller's own use are here too
(:func:`set_lock`, :func:`del_lock`, :func:`trans`, from global_locks.py, OTP's semantics,
shared with BEAM nodes on a ``beam_visible`` node).

>>> global_names.register_name("svc", pyotp.self())
'yes'
>>> global_names.whereis_name("svc") == pyotp.self()
True
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional

from .. import _core
from ..etf import Atom, Pid
from ..gen import set_global_hook
from ..gen_server import GenServer
from . import global_locks as _locks
from .global_locks import del_lock, set_lock, trans

_log = logging.getLogger("pyotp.dist")

WIRE_NAME = "pyotp_global"
"""The registered name replication messages are addressed to (handled at receipt)."""
PROC_NAME = "pyotp_global_server"
"""The local process that monitors this node's registered pids and answers sync."""

A_REGISTER = Atom("register")
A_UNREGISTER = Atom("unregister")
A_SYNC = Atom("sync")

_table: Dict[Any, Pid] = {}
# registrations that lost a conflict here but whose process may still be alive on another
# node (a holder on a node that is down without our having noticed yet wins every conflict
# until its nodedown arrives): promoted when the holder's node goes down
_shadows: Dict[Any, List[Pid]] = {}
_resolvers: Dict[Any, Callable[[Any, Pid, Pid], Pid]] = {}
_kernel: Any = None
_server: Optional[Pid] = None
# global_beam (Erlang's global protocol towards BEAM nodes) while this node is beam_visible
_beam: Any = None


def _is_local(pid: Pid) -> bool:
    return pid.node == _core.local_node()


def _alive(pid: Pid) -> bool:
    return _core.is_alive(pid) if _is_local(pid) else True


def register_name(name: Any, pid: Pid, resolve: Optional[Callable[[Any, Pid, Pid], Pid]] = None) -> str:
    """Register ``name`` for ``pid`` cluster-wide: "yes", or "no" if the name is taken.

    ``resolve(name, pid1, pid2) -> pid`` (optional) picks the survivor of a conflict.

    >>> global_names.register_name("db", pid)
    'yes'
    """
    if type(pid) is not Pid:
        raise TypeError("register_name: %r is not a pid" % (pid,))
    cur = _table.get(name)
    if cur is not None and _alive(cur):
        return "no"
    if _is_local(pid) and not _core.is_alive(pid):
        return "no"
    _table[name] = pid
    if resolve is not None:
        _resolvers[name] = resolve
    if _is_local(pid) and _server is not None:
        _core.send(_server, ("watch", pid))
    _broadcast((A_REGISTER, name, pid))
    if _beam is not None:
        _beam.on_register(name, pid)
    return "yes"


def unregister_name(name: Any) -> str:
    """Remove a global name (cluster-wide). Returns "ok".

    >>> global_names.unregister_name("db")
    'ok'
    """
    pid = _table.pop(name, None)
    _resolvers.pop(name, None)
    if pid is not None:
        _broadcast((A_UNREGISTER, name, pid))
        if _beam is not None:
            _beam.on_unregister(name)
    return "ok"


def whereis_name(name: Any) -> Optional[Pid]:
    """The pid registered as ``name``, or None.

    >>> global_names.whereis_name("db") is None
    True
    >>> global_names.register_name("db", pid)
    'yes'
    >>> global_names.whereis_name("db") == pid
    True
    """
    pid = _table.get(name)
    if pid is not None and _is_local(pid) and not _core.is_alive(pid):
        return None
    return pid


def registered_names() -> List[Any]:
    """All global names.

    >>> global_names.register_name("db", pid), global_names.register_name("svc", pyotp.self())
    ('yes', 'yes')
    >>> sorted(global_names.registered_names())
    ['db', 'svc']
    """
    return list(_table)


def send(name: Any, msg: Any) -> Pid:
    """Send ``msg`` to the process registered as ``name`` (BadArg if none); returns its pid.

    >>> global_names.register_name("db", pyotp.self())
    'yes'
    >>> global_names.send("db", ("get", 1)) == pyotp.self()
    True
    >>> await pyotp.receive()
    ('get', 1)
    """
    pid = whereis_name(name)
    if pid is None:
        raise _core.BadArg("global send: no process is registered as %r" % (name,))
    _core.send(pid, msg)
    return pid


async def sync(timeout: float = 10.0) -> str:
    """Wait until every connected node has processed what happened before this call (its
    registrations and the deaths it saw are then in the local table). Returns "ok".

    On a distributed node (``Node.start``)::

        await global_names.sync()       # -> 'ok'
    """
    from .kernel import _external_call, kernel
    import asyncio
    k = kernel()
    nodes = k.peers()
    await asyncio.gather(*[_external_call((PROC_NAME, n), "sync", timeout) for n in nodes],
                         return_exceptions=True)
    if _beam is not None:
        await _beam.wait_idle(timeout)   # BEAM peers synced, registrations told to them
    return "ok"


# -- replication ---------------------------------------------------------------------------

def _broadcast(msg: Any) -> None:
    k = _kernel
    if k is None:
        return
    for n in k.peers():
        k.send_name(n, WIRE_NAME, msg)


def _merge(name: Any, pid: Pid) -> None:
    cur = _table.get(name)
    if cur is None or cur == pid:
        _table[name] = pid
        return
    if _is_local(cur) and not _core.is_alive(cur):
        _table[name] = pid
        return
    resolve = _resolvers.get(name)
    if resolve is not None:
        try:
            keep = resolve(name, cur, pid)
        except Exception:
            _log.exception("global: resolve function for %r failed; using the default rule", name)
            keep = _default_winner(cur, pid)
    else:
        keep = _default_winner(cur, pid)
    lose = pid if keep == cur else cur
    _table[name] = keep
    sh = _shadows.get(name)
    if sh is not None and keep in sh:
        sh.remove(keep)
    if not _is_local(lose):
        _shadows.setdefault(name, [])
        if lose not in _shadows[name]:
            _shadows[name].append(lose)
    else:
        _log.warning("global: name conflict for %r: keeping %r (on %s), killing %r",
                     name, keep, keep.node, lose)
        try:
            _core.exit(lose, "kill")
        except Exception:  # pragma: no cover
            pass


def _default_winner(a: Pid, b: Pid) -> Pid:
    """Keep the registration of the pid on the node with the smaller name."""
    return a if (str(a.node), a.id) <= (str(b.node), b.id) else b


def _on_wire(conn: Any, msg: Any) -> None:
    if type(msg) is not tuple or not msg:
        return
    tag = msg[0]
    if tag == "register" and len(msg) == 3 and type(msg[2]) is Pid:
        if _is_local(msg[2]) and not _core.is_alive(msg[2]):
            return
        _merge(msg[1], msg[2])
    elif tag == "unregister" and len(msg) == 3:
        _drop_shadow(msg[1], msg[2])
        if _table.get(msg[1]) == msg[2]:
            del _table[msg[1]]
            _resolvers.pop(msg[1], None)
            _promote(msg[1])
    elif tag == "sync" and len(msg) == 3 and type(msg[1]) is list and type(msg[2]) is list:
        k = _kernel
        for n in msg[1]:
            if isinstance(n, str) and n != k.name and n not in k.conns and "@" in n:
                k.loop.create_task(k.connect(str(n)))
        for item in msg[2]:
            if type(item) is tuple and len(item) == 2 and type(item[1]) is Pid:
                _merge(item[0], item[1])


def _nodeup(node: str, conn: Any) -> None:
    if not conn.pyotp or conn.hidden:
        return
    k = _kernel
    mine = [(name, pid) for name, pid in _table.items() if _is_local(pid) and _core.is_alive(pid)]
    known = [n for n in k.peers() if n != node]
    k.send_name(node, WIRE_NAME, (A_SYNC, known, mine))


def _drop_shadow(name: Any, pid: Any) -> None:
    sh = _shadows.get(name)
    if sh is not None:
        if pid in sh:
            sh.remove(pid)
        if not sh:
            del _shadows[name]


def _promote(name: Any) -> None:
    """The holder of `name` is gone: the best remaining shadow registration takes over."""
    sh = _shadows.pop(name, None)
    if sh:
        best = sh[0]
        for p in sh[1:]:
            best = _default_winner(best, p)
        sh.remove(best)
        _table[name] = best
        if sh:
            _shadows[name] = sh


def _nodedown(node: str) -> None:
    for name in list(_shadows):
        for p in list(_shadows[name]):
            if p.node == node:
                _drop_shadow(name, p)
    for name, pid in list(_table.items()):
        if pid.node == node:
            del _table[name]
            _resolvers.pop(name, None)
            _promote(name)


class _GlobalServer(GenServer):
    """Monitors this node's globally registered pids; answers sync calls and global lock
    requests from pyotp nodes (global_locks.py)."""

    def init(self, arg: Any) -> Any:
        return ("ok", {})

    def handle_call(self, req: Any, from_: Any, watched: Any) -> Any:
        r = _locks.answer(req, from_)
        return ("reply", "ok" if r is None else r, watched)

    def handle_info(self, msg: Any, watched: Dict[Pid, Any]) -> Any:
        if type(msg) is tuple and msg[0] == "watch":
            pid = msg[1]
            if pid not in watched:
                watched[pid] = _core.monitor(pid)
        elif type(msg) is tuple and msg[0] == "DOWN":
            pid = msg[3]
            _locks.holder_down(pid)
            watched.pop(pid, None)
            for name, p in list(_table.items()):
                if p == pid:
                    del _table[name]
                    _resolvers.pop(name, None)
                    _broadcast((A_UNREGISTER, name, pid))
        return ("noreply", watched)


def _hook(op: str, name: Any, pid: Any) -> Any:
    if op == "whereis":
        return whereis_name(name)
    if op == "register":
        if register_name(name, pid) == "yes":
            return True
        return _table.get(name)
    if op == "unregister":
        unregister_name(name)
        return None
    raise _core.BadArg("global: unknown operation %r" % (op,))


async def _start(k: Any) -> None:
    global _kernel, _server
    _kernel = k
    _locks.clear()
    _table.clear()
    _shadows.clear()
    _resolvers.clear()
    _server = await _GlobalServer.start(None, name=PROC_NAME)
    k.system_pids.append(_server)
    k.add_service(WIRE_NAME, on_message=_on_wire, on_nodeup=_nodeup, on_nodedown=_nodedown)
    set_global_hook(_hook)


def _stop() -> None:
    global _kernel, _server
    set_global_hook(None)
    _kernel = None
    _server = None
    _locks.clear()
    _table.clear()
    _shadows.clear()
    _resolvers.clear()
