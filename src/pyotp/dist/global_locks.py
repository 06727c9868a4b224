"""Global locks, as Erlang's ``global:set_lock/1,2,3``, ``del_lock/1,2`` and
``trans/2,3,4``: a lock ``(ResourceId, LockRequesterId)`` is set on a set of nodes (by
default this node and every visible one), held by the calling process, and released by
``del_lock``, by the holder's death, or by its node going down.

Semantics are OTP's: while a resource is locked by one requester id, only processes using
that same requester id may also set it (they share it); a set that finds another requester
on any of the nodes releases what it took and, unless ``retries`` are used up, sleeps a
random while (global's backoff: up to 1/8 s, doubling, at most 8 s) and tries again.
Nodes that do not answer (gone, no global server) are left out, as ``gen_server:multi_call``
leaves them out in global.

Every pyotp node keeps one lock table (this module), answered by ``pyotp_global_server``
for pyotp peers and, on a ``beam_visible`` node, by ``global_name_server`` for BEAM peers
(global_beam.py): so a lock taken from pyotp blocks ``:global.set_lock`` on a BEAM node and
the reverse, and global's own registration lock ``{global, _}`` is the same lock.

On a node that is not distributed the locks are this node's alone (as OTP's global).

>>> await global_names.set_lock(("db", pyotp.self()))
True
>>> await global_names.trans(("db", "someone else"), lambda: 42, retries=0)
'aborted'
>>> await global_names.del_lock(("db", pyotp.self()))
True
"""
from __future__ import annotations

import inspect
import random
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .. import _core
from ..etf import Atom, Pid, Reference

A_SET_LOCK = Atom("set_lock")
A_DEL_LOCK = Atom("del_lock")
BEAM_SERVER = "global_name_server"

#: resource id -> (requester id, [(holder pid, monitor ref or None)])
TABLE: Dict[Any, Tuple[Any, List[Tuple[Pid, Optional[Reference]]]]] = {}


# -- the table (run inside the server process that answers the request) ------------------

def holders_if_free(lock_id: Tuple[Any, Any]) -> Optional[List[Tuple[Pid, Optional[Reference]]]]:
    """The current holders when ``lock_id`` may be set (none, or the same requester),
    else None."""
    cur = TABLE.get(lock_id[0])
    if cur is None:
        return []
    if cur[0] == lock_id[1]:
        return cur[1]
    return None


def try_set(lock_id: Tuple[Any, Any], pid: Pid, monitor: bool = True) -> bool:
    """Set the lock for ``pid`` here if no other requester holds it. With ``monitor`` the
    calling process (a lock server) monitors ``pid`` and must call :func:`holder_down`
    on its DOWN."""
    holders = holders_if_free(lock_id)
    if holders is None:
        return False
    if not any(p == pid for p, _r in holders):
        ref = _core.monitor(pid) if monitor else None
        TABLE[lock_id[0]] = (lock_id[1], holders + [(pid, ref)])
    return True


def delete(lock_id: Tuple[Any, Any], pid: Pid, down: bool = False) -> bool:
    """Release ``pid``'s hold on ``lock_id``; True when the resource is now free."""
    res, req = lock_id
    cur = TABLE.get(res)
    if cur is None or cur[0] != req:
        return False
    rest = []
    for p, r in cur[1]:
        if p == pid:
            if r is not None and not down:
                # a monitor another server took is left to fire: holder_down is idempotent
                _core.demonitor(r)
        else:
            rest.append((p, r))
    if rest:
        TABLE[res] = (req, rest)
        return False
    del TABLE[res]
    return True


def holder_down(pid: Pid) -> List[Any]:
    """``pid`` died: its holds go. Returns the resources it freed."""
    freed = []
    for res, (req, holders) in list(TABLE.items()):
        if any(p == pid for p, _r in holders) and delete((res, req), pid, down=True):
            freed.append(res)
    return freed


def answer(req: Any, from_: Any) -> Any:
    """A lock server's reply to ``{set_lock, Id}`` / ``{del_lock, Id}`` from ``from_``, or
    None when ``req`` is no lock request."""
    if not (type(req) is tuple and len(req) == 2 and type(req[1]) is tuple and len(req[1]) == 2
            and type(from_) is tuple and len(from_) == 2 and type(from_[0]) is Pid):
        return None
    if req[0] == "set_lock":
        return try_set(req[1], from_[0])
    if req[0] == "del_lock":
        delete(req[1], from_[0])
        return True
    return None


# -- the API -----------------------------------------------------------------------------

def _check_id(lock_id: Any) -> Tuple[Any, Any]:
    if type(lock_id) is not tuple or len(lock_id) != 2:
        raise TypeError("global lock id must be a pair (resource_id, lock_requester_id), "
                        "got %r" % (lock_id,))
    return lock_id


def _kernel() -> Any:
    from . import kernel
    return kernel.running()


# a node that is not distributed (as OTP's global, locks work there too): its own lock
# server, started on first use in this runtime (its event loop)
_local: Optional[Tuple[Any, Pid]] = None


async def _local_server() -> Pid:
    global _local
    import asyncio
    from .global_names import _GlobalServer
    loop = asyncio.get_running_loop()
    if _local is None or _local[0] is not loop or not _core.is_alive(_local[1]):
        if _local is None or _local[0] is not loop:
            TABLE.clear()                     # holds from an earlier runtime are gone
        _local = (loop, await _GlobalServer.start(None))
    return _local[1]


def _nodes(k: Any, nodes: Optional[Iterable[Any]]) -> List[str]:
    if k is None:
        local = str(_core.local_node())
        if nodes is not None and any(str(n) != local for n in nodes):
            raise RuntimeError("global locks on other nodes need a distributed node (Node.start)")
        return [local]
    if nodes is None:
        return [k.name] + [n for n, c in k.conns.items() if not c.hidden]
    out = [str(n) for n in nodes]
    for n in out:
        if "@" not in n:
            raise TypeError("global lock: %r is not a node name" % (n,))
    return out


def _server(k: Any, node: str) -> Any:
    """Who keeps the lock table on ``node``: pyotp's global server, or a BEAM node's
    global_name_server."""
    from .global_names import PROC_NAME
    if k is None:
        return _local[1] if _local is not None else None
    if node == k.name:
        return PROC_NAME
    conn = k.conns.get(node)
    if conn is not None and not conn.pyotp:
        return (Atom(BEAM_SERVER), node)
    return (PROC_NAME, node)


async def _ask(k: Any, node: str, req: Any) -> Any:
    """One lock request, from the calling process (the holder). A node that does not
    answer counts as absent (None)."""
    if k is None:
        await _local_server()
    try:
        return await _core.call(_server(k, node), req, 30)
    except Exception:
        return None


async def _set_on(k: Any, lock_id: Tuple[Any, Any], nodes: List[str]) -> bool:
    done: List[str] = []
    for n in nodes:
        r = await _ask(k, n, (A_SET_LOCK, lock_id))
        if r is False or r == "false":
            for m in done:
                await _ask(k, m, (A_DEL_LOCK, lock_id))
            return False
        if r is not None:
            done.append(n)
    return True


def _backoff(times: int) -> float:
    """global's random_sleep: up to 1/8 s doubling per try, at most 8 s."""
    tmax = 8000 if times > 5 else (1 << times) * 1000 // 8
    return random.randint(1, max(1, tmax)) / 1000.0


async def set_lock(lock_id: Tuple[Any, Any], nodes: Optional[Iterable[Any]] = None,
                   retries: Optional[int] = None) -> bool:
    """Set the global lock ``(resource_id, lock_requester_id)`` on ``nodes`` (default:
    this node and every visible one, BEAM nodes included), held by the calling process.
    True once set everywhere; False when ``retries`` (None: forever, 0: one try) run out
    while another requester holds the resource somewhere. Setting a lock already held
    with the same requester id succeeds (the holders share it).

    >>> await global_names.set_lock(("config", pyotp.self()), retries=0)
    True
    >>> await global_names.del_lock(("config", pyotp.self()))
    True
    """
    lock_id = _check_id(lock_id)
    if retries is not None and (type(retries) is not int or retries < 0):
        raise TypeError("set_lock: retries must be None or an int >= 0, got %r" % (retries,))
    k = _kernel()
    targets = _nodes(k, nodes)
    times = 0
    while True:
        if await _set_on(k, lock_id, targets):
            return True
        if retries == 0:
            return False
        if retries is not None:
            retries -= 1
        await _core.sleep(_backoff(times))
        times += 1


async def del_lock(lock_id: Tuple[Any, Any], nodes: Optional[Iterable[Any]] = None) -> bool:
    """Release the calling process's hold on ``lock_id`` on ``nodes`` (default: this node
    and every visible one). Always True, as OTP's.

    >>> await global_names.del_lock(("config", pyotp.self()))
    True
    """
    lock_id = _check_id(lock_id)
    k = _kernel()
    for n in _nodes(k, nodes):
        await _ask(k, n, (A_DEL_LOCK, lock_id))
    return True


async def trans(lock_id: Tuple[Any, Any], fun: Callable[[], Any],
                nodes: Optional[Iterable[Any]] = None, retries: Optional[int] = None) -> Any:
    """Run ``fun()`` (a function or an async function) while holding ``lock_id`` (see
    :func:`set_lock`) and release the lock afterwards, whatever happens; returns what
    ``fun`` returns, or "aborted" if the lock could not be set within ``retries``.

    >>> await global_names.trans(("counter", "me"), lambda: 41 + 1)
    42
    """
    if not callable(fun):
        raise TypeError("trans: fun must be callable, got %r" % (fun,))
    if not await set_lock(lock_id, nodes, retries):
        return "aborted"
    try:
        r = fun()
        if inspect.isawaitable(r):
            r = await r
        return r
    finally:
        await del_lock(lock_id, nodes)


def clear() -> None:
    TABLE.clear()
