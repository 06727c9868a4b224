"""Erlang's ``global`` protocol towards BEAM nodes, for a node started with
``Node.start(..., beam_visible=True)``.

A visible BEAM peer's ``global_name_server`` talks to ours as soon as the connection comes
up, and waits on us: ``global:sync()`` there does not return, and names registered on
either side stay unseen, until the two servers have run global's connect protocol. This
module is that server on the pyotp side, registered as ``global_name_server``, speaking
protocol version 8 (OTP 25's; tested with 25.2; version 7 peers get the shapes they know,
untested). pyotp's own table (global_names.py) stays the one table of names: this module
feeds it with the BEAM nodes' names and tells the BEAM nodes about the names registered
here.

The connect protocol with one BEAM node N, as global.erl runs it (each side does the same;
pyotp answers and never starts the locking itself, which global allows: N's locker picks
every unsynced peer in turn):

1. on nodeup both servers cast ``{init_connect, {8, MyTag}, Node, {locker, _, Known,
   Locker}}``; each answers the other's with ``{init_connect_ack, Node, HisTag, MyTag}``
   (a mismatch restarts the connect with ``cancel_connect``).
2. N's locker takes global's lock ``{global, lists:sort([LockerN, LockerUs])}`` on its
   boss, on both nodes and on what it knows (``{set_lock, Id}`` calls, answered here from
   the lock table), then casts ``{lock_set, LockerN, true, Known, OurTag}``; we take the
   same lock and cast ``{lock_set, Us, true, Known, HisTag}`` back.
3. with the lock set, both cast ``{exchange, Node, Names, [], HisTag}`` (every name known,
   as ``{Name, Pid, Method}``); each side resolves the other's list against its own:
   names it lacks are inserted; a clash (same name, other pid) is resolved by the side with
   the smaller node name, calling ``global:resolve_it(Method, Name, Pid, Pid2)`` where the
   existing registration lives (the default method, ``random_exit_name``, keeps the pid on
   the smaller node and kills the other).
4. each side casts ``{resolved, Node, Resolved, Known, unused, [], HisTag}``; on receipt
   both apply the operations, connect to the nodes the other knows (``{in_sync, Node,
   true}`` to each: the mesh), and cast ``{new_nodes, ...}`` with the operations to the
   nodes they knew before. The peer is then synced: its ``global:sync()`` returns.

Once synced, registrations go through global's lock: a BEAM registrar locks ``global`` on
every node (``{set_lock, {global, Registrar}}``), calls ``{register, Name, Pid, Method}``
or ``{unregister, Name}`` on each and releases the lock. pyotp's ``register_name`` answers
at once (its call is a plain function) and a registrar process here does the same for the
BEAM nodes afterwards; ``await global_names.sync()`` waits for it. Every node monitors the
pids of the names it holds: a dead owner (or its node going down) removes its names on
every node without a message.

Prevent-overlapping-partitions (OTP 25's default): losing a synced BEAM node is reported to
the others as ``{lost_connection, ...}``; a peer's report about a node we still see makes us
disconnect it, as a BEAM node does.

Bytes from BEAM are hostile: a message of the wrong shape is logged and dropped, the server
carries on.

Example (a node among Erlang nodes)::

    await Node.start("py@127.0.0.1", cookie="secret", beam_visible=True)
    global_names.register_name("svc", pyotp.self())   # :global.whereis_name("svc") there
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import random
from typing import Any, Dict, List, Optional, Set, Tuple

from .. import _core
from ..etf import Atom, ExportFun, Pid, Reference
from ..gen_server import GenServer
from . import global_locks as _gl
from . import global_names as _gn

_log = logging.getLogger("pyotp.dist.global")

SERVER = "global_name_server"
VSN = 8

A_SERVER = Atom(SERVER)
A_GLOBAL = Atom("global")
A_GEN_CAST = Atom("$gen_cast")
A_INIT_CONNECT = Atom("init_connect")
A_INIT_CONNECT_ACK = Atom("init_connect_ack")
A_CANCEL_CONNECT = Atom("cancel_connect")
A_LOCKER = Atom("locker")
A_NO_LONGER_A_PID = Atom("no_longer_a_pid")
A_LOCK_SET = Atom("lock_set")
A_EXCHANGE = Atom("exchange")
A_RESOLVED = Atom("resolved")
A_UNUSED = Atom("unused")
A_NEW_NODES = Atom("new_nodes")
A_IN_SYNC = Atom("in_sync")
A_INSERT = Atom("insert")
A_DELETE = Atom("delete")
A_VSN = Atom("vsn")
A_LOCK = Atom("lock")
A_LOST_CONNECTION = Atom("lost_connection")
A_REMOVE_CONNECTION = Atom("remove_connection")
A_SET_LOCK = Atom("set_lock")
A_DEL_LOCK = Atom("del_lock")
A_REGISTER = Atom("register")
A_UNREGISTER = Atom("unregister")
A_YES = Atom("yes")
A_OK = Atom("ok")
A_NONE = Atom("none")
A_UNDEFINED = Atom("undefined")
A_TRUE = Atom("true")
A_KILL = Atom("kill")
A_GLOBAL_NAME_CONFLICT = Atom("global_name_conflict")

DEFAULT_METHOD = ExportFun("global", "random_exit_name", 3)
"""The resolve method of names registered from pyotp (``fun global:random_exit_name/3``)."""

_tags = itertools.count(random.randint(1, 1 << 20))


class _Sync:
    """The connect protocol with one BEAM node, from our init_connect to its resolved."""
    __slots__ = ("node", "my_tag", "his_tag", "his_vsn", "his_locker", "lock_id",
                 "lock_is_set", "his_names", "my_ops", "his_resolved", "resolving")

    def __init__(self, node: str) -> None:
        self.node = node
        self.my_tag = next(_tags)
        self.his_tag: Any = None
        self.his_vsn = 0
        self.his_locker: Optional[Pid] = None
        self.lock_id: Any = None
        self.lock_is_set = False
        self.his_names: Optional[List[Any]] = None
        self.my_ops: Optional[Tuple[List[Any], List[Any]]] = None  # (ops, resolved): ours
        self.his_resolved: Optional[Tuple[List[Any], Any]] = None  # (resolved, his_known)
        self.resolving = False


class _State:
    def __init__(self) -> None:
        self.kernel: Any = None
        self.pid: Optional[Pid] = None
        self.registrar: Optional[Pid] = None
        self.known: Dict[str, int] = {}          # synced BEAM nodes -> global version
        self.syncs: Dict[str, _Sync] = {}
        self.pre_connect: Dict[str, Tuple[Any, ...]] = {}  # init_connect that came before our nodeup
        self.methods: Dict[Any, Any] = {}        # name -> resolve method (BEAM's view)
        self.mons: Dict[Pid, Reference] = {}     # pids of BEAM-held names we monitor
        self.global_lock_down = False
        self.lost: Dict[Tuple[str, str], int] = {}
        self.removing: Set[str] = set()
        self.xcreation = random.randint(1, 1 << 58)
        self.op_ids = itertools.count(1)
        self.pending_ops = 0                     # registrar work not yet done
        self.waiters: List["asyncio.Future[None]"] = []


_st = _State()


def _me() -> str:
    return str(_core.local_node())


def _cast(node: str, msg: Any) -> None:
    """gen_server:cast({global_name_server, Node}, Msg)."""
    _st.kernel.send_name(node, SERVER, (A_GEN_CAST, msg))


def _send(node: str, msg: Any) -> None:
    """A plain message to {global_name_server, Node} (no connection is set up for it)."""
    if node in _st.kernel.conns:
        _st.kernel.send_name(node, SERVER, msg)


def _is_beam(conn: Any) -> bool:
    return not conn.pyotp and not conn.hidden


def _is_pyotp(node: str) -> bool:
    """A node connected to us as a pyotp node (global_names' protocol covers it)."""
    conn = _st.kernel.conns.get(node) if _st.kernel is not None else None
    return conn is not None and bool(conn.pyotp)


def _node_list(items: Any) -> List[Tuple[str, int]]:
    """global's known lists: ``[Node]`` or ``[{Node, Vsn}]``; anything else is dropped."""
    out: List[Tuple[str, int]] = []
    if type(items) is not list:
        return out
    for it in items:
        if type(it) is tuple and len(it) == 2 and isinstance(it[0], str) and type(it[1]) is int:
            out.append((str(it[0]), it[1]))
        elif isinstance(it, str) and "@" in it:
            out.append((str(it), 0))
    return out


def _known_list() -> List[Any]:
    return [(Atom(n), v) for n, v in _st.known.items()]


def _norm_name(name: Any) -> Any:
    # a BEAM binary name is a str here (pyotp's names are str; on BEAM they are binaries)
    if type(name) is bytes:
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            return name
    return name


# -- the name table ----------------------------------------------------------------------

def _names() -> List[Any]:
    """Every name we hold, as global's exchange carries them."""
    out: List[Any] = []
    for name, pid in list(_gn._table.items()):
        if _gn._is_local(pid) and not _core.is_alive(pid):
            continue
        out.append((name, pid, _st.methods.get(name, DEFAULT_METHOD)))
    return out


def _watch(pid: Pid) -> None:
    if not _gn._is_local(pid) and pid not in _st.mons and _st.pid is not None:
        try:
            _st.mons[pid] = _core.monitor(pid)
        except Exception as e:  # pragma: no cover - a pid of a node being torn down
            _log.info("global: cannot monitor %r: %s", pid, e)


def _unwatch(pid: Pid) -> None:
    if pid in _gn._table.values():
        return
    ref = _st.mons.pop(pid, None)
    if ref is not None:
        try:
            _core.demonitor(ref)
        except Exception:  # pragma: no cover
            pass


def _ins_name(name: Any, pid: Pid, method: Any) -> None:
    """ins_name: the registration of ``name`` becomes ``pid`` (a lock holder's decision)."""
    old = _gn._table.get(name)
    _gn._table[name] = pid
    _st.methods[name] = method
    if old is not None and old != pid:
        _unwatch(old)
        if _gn._is_local(old):
            # our own registration, told to our pyotp peers already, lost to a BEAM
            # registrar's locked one: withdraw it there, so that every node ends with the
            # lock holder's pid whatever order the two news reach them in
            _gn._broadcast((_gn.A_UNREGISTER, name, old))
    if _gn._is_local(pid):
        if _gn._server is not None:
            _core.send(_gn._server, ("watch", pid))
    else:
        _watch(pid)


def _del_name(name: Any) -> None:
    pid = _gn._table.pop(name, None)
    _st.methods.pop(name, None)
    _gn._resolvers.pop(name, None)
    if pid is not None:
        _unwatch(pid)


def _lock_still_set(from_: Any, extra: Any) -> bool:
    """global's lock_still_set: a name operation counts only under the global lock."""
    lock = _gl.TABLE.get(A_GLOBAL)
    if lock is None:
        return not _st.global_lock_down
    if type(from_) is Pid:
        return any(p == from_ for p, _r in lock[1])
    lock_id = None
    if type(extra) is list:
        for it in extra:
            if type(it) is tuple and len(it) == 2 and it[0] == "lock":
                lock_id = it[1]
    return type(lock_id) is tuple and len(lock_id) == 2 and lock[0] == lock_id[1]


def _do_ops(ops: Any, from_: Any, extra: Any) -> None:
    if type(ops) is not list:
        return
    ok = _lock_still_set(from_, extra)
    for op in ops:
        if type(op) is not tuple or len(op) != 2:
            continue
        if op[0] == "insert" and type(op[1]) is tuple and len(op[1]) == 3 and type(op[1][1]) is Pid:
            name, pid, method = op[1]
            name = _norm_name(name)
            if ok:
                _ins_name(name, pid, method)
        elif op[0] == "delete":
            _del_name(_norm_name(op[1]))


# -- locks ---------------------------------------------------------------------------------

def _set_lock(lock_id: Any, pid: Pid) -> bool:
    """global's handle_set_lock on the node's one lock table (global_locks.py)."""
    # this node's own holders (the server, the registrar) live as long as the node
    ours = pid == _st.pid or pid == _st.registrar or _st.pid is None
    return _gl.try_set(lock_id, pid, monitor=not ours)


def _del_lock(lock_id: Any, pid: Pid, down: bool = False) -> None:
    res = lock_id[0]
    if _gl.delete(lock_id, pid, down) and (res == A_GLOBAL or res == "global"):
        _st.global_lock_down = down


def _holder_down(pid: Pid) -> None:
    for res in _gl.holder_down(pid):
        if res == A_GLOBAL or res == "global":
            _st.global_lock_down = True


# -- the connect protocol -------------------------------------------------------------------

def _nodeup(node: str, conn: Any) -> None:
    if not _is_beam(conn) or _st.pid is None:
        return
    _core.send(_st.pid, ("$nodeup", node))


def _nodedown(node: str) -> None:
    if _st.pid is not None:
        _core.send(_st.pid, ("$nodedown", node))


def _start_connect(node: str) -> None:
    if node in _st.known or node in _st.syncs or node not in _st.kernel.conns:
        return
    s = _Sync(node)
    _st.syncs[node] = s
    _cast(node, (A_INIT_CONNECT, (VSN, s.my_tag), Atom(_me()),
                 (A_LOCKER, A_NO_LONGER_A_PID, {}, _st.pid)))
    pre = _st.pre_connect.pop(node, None)
    if pre is not None:
        _init_connect(node, *pre)


def _restart_connect(node: str) -> None:
    s = _st.syncs.pop(node, None)
    if s is not None:
        _release(s)
    _start_connect(node)


def _init_connect(node: str, his_vsn: int, his_tag: Any, locker: Any) -> None:
    s = _st.syncs.get(node)
    if s is None:
        if node not in _st.known:
            _st.pre_connect[node] = (his_vsn, his_tag, locker)
        return
    if s.his_tag is not None:
        # a second init_connect: the peer restarted its connect; so do we (global's rule)
        _send(node, (A_CANCEL_CONNECT, Atom(_me()), his_tag))
        _restart_connect(node)
        s = _st.syncs.get(node)
        if s is None:
            return
    s.his_tag = his_tag
    s.his_vsn = his_vsn
    s.his_locker = locker
    if his_vsn >= 8:
        _send(node, (A_INIT_CONNECT_ACK, Atom(_me()), his_tag, s.my_tag))


def _lock_set(node: str, his_locker: Pid, is_set: Any, tag: Any) -> None:
    """The peer's locker holds the lock on its side (its lock_set): take ours, answer."""
    s = _st.syncs.get(node)
    if s is None or tag != s.my_tag or s.his_tag is None:
        return
    if is_set is not True and is_set != "true":
        return
    # the lock id is {global, lists:sort([HisLocker, OurLocker])}: the peer's locker set it
    # here already (its set_lock call); take that exact term rather than re-sorting pids
    assert _st.pid is not None
    lock_id: Tuple[Any, Any] = (A_GLOBAL, sorted([his_locker, _st.pid], key=_pid_key))
    cur = _gl.TABLE.get(A_GLOBAL)
    if cur is not None and type(cur[0]) is list and len(cur[0]) == 2 \
            and his_locker in cur[0] and _st.pid in cur[0]:
        lock_id = (A_GLOBAL, cur[0])
    ok = _set_lock(lock_id, _st.pid)
    reply: Tuple[Any, ...]
    if s.his_vsn >= 8:
        reply = (A_LOCK_SET, _st.pid, Atom("true" if ok else "false"), _known_atoms(), s.his_tag)
    else:
        reply = (A_LOCK_SET, _st.pid, Atom("true" if ok else "false"), _known_atoms())
    _cast(node, reply)
    if not ok:
        return
    s.lock_id = lock_id
    s.lock_is_set = True
    _cast(node, (A_EXCHANGE, Atom(_me()), _names(), [], s.his_tag))
    if s.his_names is not None:
        _resolve(s)


def _pid_key(p: Pid) -> Tuple[str, int, int, int]:
    # Erlang's term order of pids: node name first, then id and serial
    return (str(p.node), p.id, p.serial, getattr(p, "creation", 0))


def _known_atoms() -> List[Any]:
    return [Atom(n) for n in _st.known]


def _exchange(node: str, names: Any, tag: Any) -> None:
    s = _st.syncs.get(node)
    if s is None or tag != s.my_tag:
        return
    if type(names) is not list:
        _log.warning("global: %s sent a name list that is not a list; ignored", node)
        names = []
    s.his_names = names
    if s.lock_is_set:
        _resolve(s)


def _resolve(s: _Sync) -> None:
    """global's resolver: the peer's names against ours -> (ops here, ops for the peer)."""
    if s.resolving:
        return
    s.resolving = True
    names = s.his_names or []
    me = _me()
    ops: List[Any] = []
    res: List[Any] = []
    clashes: List[Any] = []
    for item in names:
        if type(item) is not tuple or len(item) != 3 or type(item[1]) is not Pid:
            continue
        name, pid, method = _norm_name(item[0]), item[1], item[2]
        cur = _gn._table.get(name)
        if cur is not None and _gn._is_local(cur) and not _core.is_alive(cur):
            cur = None
        if cur == pid:
            continue
        if cur is None:
            ops.append((A_INSERT, (name, pid, method)))
        elif me < s.node:
            clashes.append((name, pid, method, cur, _st.methods.get(name, DEFAULT_METHOD)))
    if not clashes:
        _exchange_ops(s, ops, res)
        return
    # a clash may need an rpc to the node of the registered pid: not in this server
    _core.spawn(_resolve_clashes, s.node, s.my_tag, clashes, ops, res)


async def _resolve_clashes(node: str, tag: int, clashes: List[Any], ops: List[Any],
                           res: List[Any]) -> None:
    from . import rpc
    for name, pid, method, pid2, method2 in clashes:
        try:
            if _gn._is_local(pid2):
                keep = resolve_it(method2, name, pid, pid2)
            else:
                keep = await rpc.call(str(pid2.node), "global", "resolve_it",
                                      [method2, name, pid, pid2], timeout=30)
        except Exception as e:
            _log.info("global: resolving the clash of %r failed: %s", name, e)
            keep = ("badrpc", str(e))
        if keep == pid:
            ops.append((A_INSERT, (name, pid, method)))
        elif keep == pid2:
            res.append((A_INSERT, (name, pid2, method2)))
        elif type(keep) is tuple and keep and keep[0] == "badrpc":
            ops.append((A_INSERT, (name, pid, method)))
        else:
            ops.append((A_DELETE, name))
            res.append((A_DELETE, name))
    if _st.pid is not None:
        _core.send(_st.pid, ("$exchange_ops", node, tag, ops, res))


def _exchange_ops(s: _Sync, ops: List[Any], res: List[Any]) -> None:
    s.my_ops = (ops, res)
    _cast(s.node, (A_RESOLVED, Atom(_me()), res, _known_list() if s.his_vsn >= 7 else _known_atoms(),
                   A_UNUSED, [], s.his_tag))
    if s.his_resolved is not None:
        _resolved(s)


def _on_resolved(node: str, his_resolved: Any, his_known: Any, tag: Any) -> None:
    s = _st.syncs.get(node)
    if s is None or tag != s.my_tag:
        return
    s.his_resolved = (his_resolved if type(his_resolved) is list else [], his_known)
    if s.my_ops is not None:
        _resolved(s)


def _resolved(s: _Sync) -> None:
    node = s.node
    assert s.my_ops is not None and s.his_resolved is not None
    ops = s.my_ops[0] + s.his_resolved[0]
    his_known = [(n, v) for n, v in _node_list(s.his_resolved[1]) if n != _me()]
    extra = [(A_VSN, s.his_vsn), (A_LOCK, s.lock_id)]
    _do_ops(ops, Atom(node), extra)
    new_nodes = [(Atom(node), s.his_vsn)] + [(Atom(n), v) for n, v in his_known]
    before = list(_st.known)
    for n in before:
        _cast(n, (A_NEW_NODES, Atom(_me()), ops, [], new_nodes, extra))
    # our side of the lock and the connect state go; the peer's locker releases its side
    del _st.syncs[node]
    _release(s)
    _st.known[node] = s.his_vsn
    for n, v in his_known:
        other = _st.syncs.pop(n, None)
        if other is not None:
            _release(other)
        _st.pre_connect.pop(n, None)
        if n not in _st.known and not _is_pyotp(n):
            _st.known[n] = v
            _sync_other(n)
    _synced_changed()


def _release(s: _Sync) -> None:
    if s.lock_id is not None:
        _del_lock(s.lock_id, _st.pid)        # type: ignore[arg-type]
        s.lock_id = None


def _sync_other(node: str) -> None:
    """global's sync_other: connect to a node a peer knows and tell it we are in sync."""
    k = _st.kernel

    async def go() -> None:
        ok = await k.connect(node)
        conn = k.conns.get(node)
        if ok and conn is not None and not _is_beam(conn):
            # a pyotp node the BEAM peer knows (a mixed cluster): global_names' own
            # protocol syncs us with it, global's is for BEAM nodes only
            _st.known.pop(node, None)
            _synced_changed()
        elif ok:
            _cast(node, (A_IN_SYNC, Atom(_me()), A_TRUE))
        else:
            _log.warning("'global' at %s failed to connect to %s", _me(), node)
            if _st.pid is not None:
                _core.send(_st.pid, ("$nodedown", node))
    k.loop.create_task(go())


def _new_nodes(node: str, ops: Any, nodes: Any, extra: Any) -> None:
    added = []
    for n, v in _node_list(nodes):
        if n == _me() or n in _st.known or _is_pyotp(n):
            continue
        _st.known[n] = v
        added.append(n)
    for n in added:
        other = _st.syncs.pop(n, None)
        if other is not None:
            _release(other)
        _sync_other(n)
    _do_ops(ops, Atom(node), extra)
    _synced_changed()


def _in_sync(node: str) -> None:
    s = _st.syncs.pop(node, None)
    if s is not None:
        _release(s)
    _st.pre_connect.pop(node, None)
    if node in _st.kernel.conns:
        _st.known.setdefault(node, VSN)
    _synced_changed()


def _handle_nodedown(node: str) -> None:
    s = _st.syncs.pop(node, None)
    if s is not None:
        _release(s)
    _st.pre_connect.pop(node, None)
    was_known = _st.known.pop(node, None) is not None
    if node in _st.removing:
        _st.removing.discard(node)
    elif was_known:
        _inform_connection_loss(node)
    for pid in [p for p in _st.mons if str(p.node) == node]:
        _st.mons.pop(pid, None)
        _holder_down(pid)
    for res, (req, holders) in list(_gl.TABLE.items()):
        for p, _r in holders:
            if str(p.node) == node:
                _del_lock((res, req), p, down=True)
    for name, pid in list(_gn._table.items()):
        if str(pid.node) == node:
            _del_name(name)
    _synced_changed()


def _inform_connection_loss(node: str) -> None:
    msg = (A_LOST_CONNECTION, Atom(_me()), _st.xcreation, next(_st.op_ids), Atom(node))
    _multicast(msg, node)


def _multicast(msg: Any, ignore: str) -> None:
    targets = set(n for n, v in _st.known.items() if v >= 7)
    targets |= set(n for n, s in _st.syncs.items() if s.his_vsn >= 7)
    for n in targets:
        if n != ignore:
            _send(n, msg)


def _lost_connection(node_a: str, xcre: Any, op_id: Any, node_b: str, msg: Any) -> None:
    key = (node_a, node_b)
    last = _st.lost.get(key)
    if last is not None and type(op_id) is int and op_id <= last:
        return
    _st.lost[key] = op_id if type(op_id) is int else 0
    _multicast(msg, node_a)
    rm = node_a if node_b == _me() else node_b
    if rm not in _st.known and rm not in _st.syncs:
        return
    _log.warning("'global' at node %s requested disconnect from node %s in order to prevent "
                 "overlapping partitions", _me(), rm)
    _send(rm, (A_REMOVE_CONNECTION, Atom(_me())))
    _st.removing.add(rm)
    _handle_nodedown(rm)
    _st.kernel.disconnect(rm)


def _remove_connection(node: str) -> None:
    if node not in _st.known and node not in _st.syncs:
        return
    _log.warning("'global' at node %s disconnected node %s in order to prevent overlapping "
                 "partitions", _me(), node)
    _st.removing.add(node)
    _handle_nodedown(node)
    _st.kernel.disconnect(node)


def _synced_changed() -> None:
    if _st.waiters and _beam_idle():
        ws, _st.waiters = _st.waiters, []
        for w in ws:
            if not w.done():
                w.set_result(None)


def _beam_idle() -> bool:
    """Every connected visible BEAM node is synced and the registrar has nothing queued."""
    k = _st.kernel
    if k is None:
        return True
    if _st.pending_ops:
        return False
    return all(n in _st.known for n, c in k.conns.items() if _is_beam(c))


# -- resolve methods ---------------------------------------------------------------------

def _minmax(p1: Pid, p2: Pid) -> Tuple[Pid, Pid]:
    return (p1, p2) if str(p1.node) < str(p2.node) else (p2, p1)


def resolve_it(method: Any, name: Any, pid1: Pid, pid2: Pid) -> Any:
    """``global:resolve_it/4`` on this node: run the resolve method of a clash. The
    methods global exports are run as global runs them; a pyotp ``resolve=`` function
    given to ``register_name`` is used for its names; any other fun cannot run here and
    falls back to ``random_exit_name`` (logged)."""
    py = _gn._resolvers.get(name)
    if py is not None:
        try:
            return py(name, pid1, pid2)
        except Exception:
            _log.exception("global: the resolve function of %r failed", name)
            return A_NONE
    fn = method.function if type(method) is ExportFun and method.module == "global" else None
    mn, mx = _minmax(pid1, pid2)
    if fn == "random_notify_name":
        _core.send(mx, (A_GLOBAL_NAME_CONFLICT, name))
        return mn
    if fn == "notify_all_name":
        _core.send(pid1, (A_GLOBAL_NAME_CONFLICT, name, pid2))
        _core.send(pid2, (A_GLOBAL_NAME_CONFLICT, name, pid1))
        return A_NONE
    if fn != "random_exit_name":
        _log.warning("global: resolve method %r of %r cannot run on a pyotp node; using "
                     "random_exit_name", method, name)
    _log.info("global: Name conflict terminating %r", (name, mx))
    _core.exit(mx, A_KILL)
    return mn


def _rpc_resolve_it(method: Any, name: Any, pid1: Any, pid2: Any) -> Any:
    if type(pid1) is not Pid or type(pid2) is not Pid:
        raise _core.Exit((Atom("badarg"), [(A_GLOBAL, Atom("resolve_it"), [method, name, pid1, pid2], [])]))
    return resolve_it(method, _norm_name(name), pid1, pid2)


# -- the server process ------------------------------------------------------------------

def _from_pid(from_: Any) -> Optional[Pid]:
    if type(from_) is tuple and len(from_) == 2 and type(from_[0]) is Pid:
        return from_[0]
    return None


class _GlobalNameServer(GenServer):
    """``global_name_server`` of a visible pyotp node (see the module documentation)."""

    def init(self, arg: Any) -> Any:
        return ("ok", None)

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        pid = _from_pid(from_)
        try:
            if type(req) is tuple and len(req) == 2 and req[0] == "set_lock" and pid is not None \
                    and type(req[1]) is tuple and len(req[1]) == 2:
                return ("reply", Atom("true" if _set_lock(req[1], pid) else "false"), state)
            if type(req) is tuple and len(req) == 2 and req[0] == "del_lock" and pid is not None \
                    and type(req[1]) is tuple and len(req[1]) == 2:
                _del_lock(req[1], pid)
                return ("reply", A_TRUE, state)
            if type(req) is tuple and req and req[0] in ("register", "register_ext") \
                    and len(req) >= 4 and type(req[2]) is Pid:
                name = _norm_name(req[1])
                if _lock_still_set(pid, None):
                    cur = _gn._table.get(name)
                    if cur is not None and cur != req[2] and _gn._is_local(cur):
                        _log.warning("global: %r registered from %s replaces %r here",
                                     name, req[2].node, cur)
                    _ins_name(name, req[2], req[3])
                return ("reply", A_YES, state)
            if type(req) is tuple and len(req) == 2 and req[0] == "unregister":
                _del_name(_norm_name(req[1]))
                return ("reply", A_OK, state)
            if req == "get_protocol_version":
                return ("reply", VSN, state)
            if req == "get_known":
                return ("reply", _known_list(), state)
            if req == "get_synced":
                return ("reply", [Atom(n) for n in _st.known], state)
        except Exception:
            _log.exception("global: failed on the call %r", req)
            return ("noreply", state)
        _log.warning("The global_name_server received an unexpected message:\n"
                     "handle_call(%r, %r, _)", req, from_)
        return ("noreply", state)

    def handle_cast(self, msg: Any, state: Any) -> Any:
        try:
            self._cast(msg)
        except Exception:
            _log.exception("global: failed on the cast %r", msg)
        return ("noreply", state)

    def _cast(self, msg: Any) -> None:
        if type(msg) is not tuple or not msg:
            _log.warning("The global_name_server received an unexpected message:\n"
                         "handle_cast(%r, _)", msg)
            return
        tag, n = msg[0], len(msg)
        if tag == "init_connect" and n == 4 and isinstance(msg[2], str):
            vsn = msg[1]
            if type(vsn) is tuple and len(vsn) >= 2 and type(vsn[0]) is int:
                locker = msg[3]
                his_locker = locker[3] if type(locker) is tuple and len(locker) == 4 \
                    and type(locker[3]) is Pid else None
                if his_locker is None:
                    _log.warning("global: init_connect from %s without a locker; ignored", msg[2])
                    return
                _init_connect(str(msg[2]), min(vsn[0], VSN), vsn[1], his_locker)
            else:
                _log.info("Illegal global protocol version %r Node: %r", vsn, msg[2])
        elif tag == "lock_set" and n in (4, 5) and type(msg[1]) is Pid:
            _lock_set(str(msg[1].node), msg[1], msg[2], msg[4] if n == 5 else
                      (_st.syncs[str(msg[1].node)].my_tag if str(msg[1].node) in _st.syncs else None))
        elif tag == "exchange" and n == 5 and isinstance(msg[1], str):
            _exchange(str(msg[1]), msg[2], msg[4])
        elif tag == "resolved" and n == 7 and isinstance(msg[1], str):
            _on_resolved(str(msg[1]), msg[2], msg[3], msg[6])
        elif tag == "new_nodes" and n == 6 and isinstance(msg[1], str):
            _new_nodes(str(msg[1]), msg[2], msg[4], msg[5])
        elif tag == "in_sync" and n == 3 and isinstance(msg[1], str):
            _in_sync(str(msg[1]))
        elif tag in ("async_del_name", "async_del_lock"):
            pass
        else:
            _log.warning("The global_name_server received an unexpected message:\n"
                         "handle_cast(%r, _)", msg)

    def handle_info(self, msg: Any, state: Any) -> Any:
        try:
            self._info(msg)
        except Exception:
            _log.exception("global: failed on the message %r", msg)
        return ("noreply", state)

    def _info(self, msg: Any) -> None:
        if type(msg) is not tuple or not msg:
            _log.warning("The global_name_server received an unexpected message:\n"
                         "handle_info(%r, _)", msg)
            return
        tag, n = msg[0], len(msg)
        if tag == "$nodeup":
            _start_connect(msg[1])
        elif tag == "$nodedown":
            _handle_nodedown(msg[1])
        elif tag == "$exchange_ops":
            s = _st.syncs.get(msg[1])
            if s is not None and s.my_tag == msg[2]:
                _exchange_ops(s, msg[3], msg[4])
        elif tag == "DOWN" and n == 5:
            pid = msg[3]
            if _st.mons.get(pid) == msg[1]:
                del _st.mons[pid]
                for name, p in list(_gn._table.items()):
                    if p == pid:
                        _del_name(name)
            _holder_down(pid)
        elif tag == "init_connect_ack" and n == 4 and isinstance(msg[1], str):
            node = str(msg[1])
            s = _st.syncs.get(node)
            if s is not None and not (msg[2] == s.my_tag and msg[3] == s.his_tag):
                _send(node, (A_CANCEL_CONNECT, Atom(_me()), msg[3]))
                _restart_connect(node)
        elif tag == "cancel_connect" and n == 3 and isinstance(msg[1], str):
            node = str(msg[1])
            s = _st.syncs.get(node)
            if s is not None and msg[2] == s.my_tag:
                _restart_connect(node)
        elif tag == "lost_connection" and n == 5 and isinstance(msg[1], str) \
                and isinstance(msg[4], str):
            _lost_connection(str(msg[1]), msg[2], msg[3], str(msg[4]), msg)
        elif tag == "remove_connection" and n == 2 and isinstance(msg[1], str):
            _remove_connection(str(msg[1]))
        elif tag == "whereis" and n == 3:
            pid = _gn.whereis_name(_norm_name(msg[1]))
            try:
                GenServer.reply(msg[2], A_UNDEFINED if pid is None else pid)
            except Exception:
                _log.warning("global: bad whereis request %r", msg)
        elif tag == "EXIT":
            pass
        else:
            _log.warning("The global_name_server received an unexpected message:\n"
                         "handle_info(%r, _)", msg)


# -- registrations made here, told to the BEAM nodes -------------------------------------

def _queue(op: Tuple[Any, ...]) -> None:
    if _st.registrar is None or not _st.known:
        return
    _st.pending_ops += 1
    _core.send(_st.registrar, op)


def on_register(name: Any, pid: Pid) -> None:
    """global_names.register_name succeeded here: tell the synced BEAM nodes."""
    _st.methods[name] = DEFAULT_METHOD
    _queue(("register", name, pid))


def on_unregister(name: Any) -> None:
    _st.methods.pop(name, None)
    _queue(("unregister", name))


async def _call(node: str, req: Any) -> Any:
    try:
        return await _core.call((A_SERVER, node), req, 30)
    except Exception as e:
        _log.info("global: %r on %s failed: %s", req[0] if type(req) is tuple else req, node, e)
        return None


async def _set_lock_known(lock_id: Any, me: Pid) -> List[str]:
    """global's set_lock_known: the lock on the boss, then on every known node; retried
    with global's random sleeps until it is held everywhere. Returns the nodes locked."""
    times = 0
    while True:
        nodes = list(_st.known)
        boss = max(nodes + [_me()])
        ok = True
        done: List[str] = []
        for group in ([boss], [n for n in nodes + [_me()] if n != boss]):
            for n in group:
                if n == _me():
                    got = _set_lock(lock_id, me)
                else:
                    # as gen_server:multi_call in global: a node that does not answer
                    # (gone, no global server) is left out, not a refusal
                    r = await _call(n, (A_SET_LOCK, lock_id))
                    got = r is None or r is True or r == "true"
                if not got:
                    ok = False
                    break
                done.append(n)
            if not ok:
                break
        if ok and set(_st.known) <= set(nodes):
            return done
        await _del_lock_on(lock_id, me, done)
        times += 1
        tmax = 8000 if times > 5 else (1 << times) * 1000 // 8
        await _core.sleep(random.randint(1, tmax) / 1000.0)


async def _del_lock_on(lock_id: Any, me: Pid, nodes: List[str]) -> None:
    for n in nodes:
        if n == _me():
            _del_lock(lock_id, me)
        else:
            await _call(n, (A_DEL_LOCK, lock_id))


async def _registrar() -> None:
    me = _core.self()
    while True:
        op = await _core.receive()
        try:
            if type(op) is tuple and op and op[0] in ("register", "unregister") and _st.known:
                lock_id = (A_GLOBAL, me)
                locked = await _set_lock_known(lock_id, me)
                try:
                    if op[0] == "register":
                        name, pid = op[1], op[2]
                        # one call after the other, from this process: global accepts a
                        # name operation only from the lock's holder (an asyncio.gather
                        # would make the calls from other tasks)
                        if _gn._table.get(name) == pid:
                            req: Any = (A_REGISTER, name, pid, _st.methods.get(name, DEFAULT_METHOD))
                            for n in locked:
                                if n != _me():
                                    await _call(n, req)
                    else:
                        for n in locked:
                            if n != _me():
                                await _call(n, (A_UNREGISTER, op[1]))
                finally:
                    boss = max(locked) if locked else None
                    await _del_lock_on(lock_id, me, [n for n in locked if n != boss])
                    if boss is not None:
                        await _del_lock_on(lock_id, me, [boss])
        except Exception:
            _log.exception("global: telling the BEAM nodes about %r failed", op)
        finally:
            if type(op) is tuple and op and op[0] in ("register", "unregister"):
                _st.pending_ops -= 1
                _synced_changed()


async def wait_idle(timeout: float) -> None:
    """Until every connected visible BEAM node is synced and registrations made here have
    reached them (what ``global_names.sync`` waits for)."""
    if _beam_idle():
        return
    fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
    _st.waiters.append(fut)
    try:
        await asyncio.wait_for(asyncio.shield(fut), timeout)
    except asyncio.TimeoutError:
        pass


# -- lifecycle ---------------------------------------------------------------------------

def running() -> bool:
    return _st.pid is not None


async def start(k: Any) -> None:
    """Start global's server for BEAM peers (``Node.start(..., beam_visible=True)``)."""
    from . import beam_api
    global _st
    _st = _State()
    _st.kernel = k
    _st.pid = await _GlobalNameServer.start(None, name=SERVER)
    _st.registrar = _core.spawn(_registrar)
    k.system_pids.extend([_st.pid, _st.registrar])
    k.add_service("global_beam", on_nodeup=_nodeup, on_nodedown=_nodedown)
    beam_api.HANDLERS[("global", "resolve_it", 4)] = _rpc_resolve_it
    _gn._beam = __import__(__name__, fromlist=["on_register"])
    for node, conn in list(k.conns.items()):
        if _is_beam(conn):
            _core.send(_st.pid, ("$nodeup", node))


def stop() -> None:
    global _st
    _gn._beam = None
    k = _st.kernel
    if k is not None:
        k.remove_service("global_beam")
    ws = _st.waiters
    _st = _State()
    for w in ws:
        if not w.done():
            w.set_result(None)
