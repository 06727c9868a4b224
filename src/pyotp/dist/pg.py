"""Process groups (Erlang's ``pg``): named groups of processes spread over the cluster.

A *scope* is an independent set of groups served by one process per node, registered as
the scope's name (the default scope ``"pg"`` starts with ``Node.start``; start others with
``await pg.start("my_scope")``). Processes join groups on their own node; every node of the
scope sees every member. Reads (``get_members``) are local and cheap.

Between nodes the scope processes speak Erlang pg's message shapes (``{discover, Peer}``,
``{sync, Peer, Groups}``, ``{join, Peer, Group, Pids}``, ``{leave, Peer, Pids, Groups}``)
to the scope's name on each visible pyotp node; these messages are applied when they arrive,
in connection order. When a member dies it leaves its groups; when a node goes down, its
members vanish from every group.

A scope of the same name on an Erlang or Elixir node (OTP 23+ ``pg``) joins in too: BEAM's
pg discovers only visible nodes, and pyotp connects to BEAM hidden, so pyotp discovers it
(``{discover, Pid}`` to the scope's name when the connection comes up); from then on both
sides exchange exactly what two BEAM scopes do, addressed to each other's scope process
(``{'$gen_cast', {sync, Pid, Groups}}``, ``{join, ...}``, ``{leave, ...}``). BEAM's pg
crashes on a message it does not expect, so nothing else is ever sent to it.

>>> await pg.start()        # Node.start does this; here the node is not distributed
#PID<...>
>>> pg.join("workers", pyotp.self())
'ok'
>>> pg.get_members("workers") == [pyotp.self()]     # members on other nodes too, if any
True
>>> ref, groups = pg.monitor_scope()      # then (ref, "join"|"leave", group, pids) messages
>>> groups == {"workers": [pyotp.self()]}
True
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .. import _core
from ..etf import Atom, Pid, Reference
from ..gen_server import GenServer
from .handshake import SPAWN

DEFAULT_SCOPE = "pg"

A_DISCOVER = Atom("discover")
A_SYNC = Atom("sync")
A_JOIN = Atom("join")
A_LEAVE = Atom("leave")


class _Scope:
    """The data of one scope on this node."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid: Optional[Pid] = None
        self.local: Dict[Any, List[Pid]] = {}
        self.remote: Dict[str, Dict[Any, List[Pid]]] = {}
        self.members: Dict[Any, List[Pid]] = {}
        self.watchers: Dict[Reference, Tuple[Pid, Any]] = {}     # ref -> (pid, group | _ALL)
        self.beam: Dict[str, Pid] = {}      # BEAM node -> its scope process (after discover)

    def rebuild(self, group: Any) -> None:
        pids = list(self.local.get(group, ()))
        for groups in self.remote.values():
            pids.extend(groups.get(group, ()))
        if pids:
            self.members[group] = pids
        else:
            self.members.pop(group, None)

    def notify(self, what: Atom, group: Any, pids: List[Pid]) -> None:
        if not pids or not self.watchers:
            return
        for ref, (w, g) in list(self.watchers.items()):
            if g is _ALL or g == group:
                if _core.is_alive(w):
                    _core.send(w, (ref, str(what), group, list(pids)))
                else:
                    del self.watchers[ref]


_ALL = object()
_scopes: Dict[str, _Scope] = {}
_kernel: Any = None


def _scope(scope: str) -> _Scope:
    s = _scopes.get(scope)
    if s is None:
        raise _core.BadArg("pg scope %r is not started (await pg.start(%r))" % (scope, scope))
    return s


def _pids(pids: Union[Pid, Sequence[Pid]]) -> List[Pid]:
    lst = [pids] if type(pids) is Pid else list(pids)
    for p in lst:
        if type(p) is not Pid or p.node != _core.local_node():
            raise _core.BadArg("pg: %r is not a local pid (processes join groups on their own node)" % (p,))
    return lst


def join(group: Any, pids: Union[Pid, Sequence[Pid]], scope: str = DEFAULT_SCOPE) -> str:
    """Add local process(es) to ``group`` (a process may join several times). Returns "ok".

    >>> await pg.start()
    #PID<...>
    >>> pid1, pid2 = pyotp.spawn(pyotp.receive), pyotp.spawn(pyotp.receive)
    >>> pg.join("workers", [pid1, pid2])
    'ok'
    >>> len(pg.get_members("workers"))
    2
    """
    s = _scope(scope)
    lst = _pids(pids)
    s.local.setdefault(group, []).extend(lst)
    s.rebuild(group)
    if s.pid is not None:
        _core.send(s.pid, ("watch", lst))
    _broadcast(s, (A_JOIN, s.pid, group, lst))
    s.notify(A_JOIN, group, lst)
    return "ok"


def leave(group: Any, pids: Union[Pid, Sequence[Pid]], scope: str = DEFAULT_SCOPE) -> str:
    """Remove local process(es) from ``group`` (one membership each). Returns "ok", or
    "not_joined" if none of them was a member.

    >>> await pg.start()
    #PID<...>
    >>> pid1 = pyotp.spawn(pyotp.receive)
    >>> pg.join("workers", pid1)
    'ok'
    >>> pg.leave("workers", pid1)
    'ok'
    >>> pg.leave("workers", pid1)
    'not_joined'
    """
    s = _scope(scope)
    lst = _pids(pids)
    left = _leave_local(s, group, lst)
    return "ok" if left else "not_joined"


def _leave_local(s: _Scope, group: Any, lst: List[Pid]) -> List[Pid]:
    cur = s.local.get(group)
    left = []
    if cur:
        for p in lst:
            if p in cur:
                cur.remove(p)
                left.append(p)
        if not cur:
            del s.local[group]
    if left:
        s.rebuild(group)
        _broadcast(s, (A_LEAVE, s.pid, left, [group]))
        s.notify(A_LEAVE, group, left)
    return left


def get_members(group: Any, scope: str = DEFAULT_SCOPE) -> List[Pid]:
    """All members of ``group`` in the cluster (a pid once per join).

    >>> await pg.start()
    #PID<...>
    >>> pg.get_members("workers")
    []
    >>> pg.join("workers", pyotp.self())
    'ok'
    >>> pg.get_members("workers") == [pyotp.self()]
    True
    """
    return list(_scope(scope).members.get(group, ()))


def get_local_members(group: Any, scope: str = DEFAULT_SCOPE) -> List[Pid]:
    """The members of ``group`` on this node."""
    return list(_scope(scope).local.get(group, ()))


def which_groups(scope: str = DEFAULT_SCOPE) -> List[Any]:
    """Groups with at least one member anywhere."""
    return list(_scope(scope).members)


def monitor_scope(scope: str = DEFAULT_SCOPE) -> Tuple[Reference, Dict[Any, List[Pid]]]:
    """Watch every group of the scope: returns ``(ref, {group: members})``; then the
    calling process gets ``(ref, "join", group, pids)`` and ``(ref, "leave", group, pids)``.

    >>> await pg.start()
    #PID<...>
    >>> ref, groups = pg.monitor_scope()
    >>> pg.join("workers", pyotp.self())
    'ok'
    >>> await pyotp.receive() == (ref, "join", "workers", [pyotp.self()])
    True
    """
    s = _scope(scope)
    ref = _core.make_ref()
    s.watchers[ref] = (_core.self(), _ALL)
    return ref, {g: list(p) for g, p in s.members.items()}


def monitor(group: Any, scope: str = DEFAULT_SCOPE) -> Tuple[Reference, List[Pid]]:
    """Watch one group: returns ``(ref, members)``, then join/leave messages as for
    monitor_scope."""
    s = _scope(scope)
    ref = _core.make_ref()
    s.watchers[ref] = (_core.self(), group)
    return ref, list(s.members.get(group, ()))


def demonitor(ref: Reference, scope: str = DEFAULT_SCOPE) -> bool:
    """Stop a monitor_scope / monitor subscription."""
    return _scope(scope).watchers.pop(ref, None) is not None


# -- replication -----------------------------------------------------------------------

def _broadcast(s: _Scope, msg: Any) -> None:
    k = _kernel
    if k is None or s.pid is None:
        return
    for n in k.peers():
        k.send_name(n, s.name, msg)
    for peer in list(s.beam.values()):
        _core.send(peer, msg)


A_GEN_CAST = Atom("$gen_cast")


def _on_beam(s: _Scope, msg: Any) -> None:
    """A message from a BEAM node's pg scope, addressed to our scope process (as BEAM's
    scopes address each other): discover, the sync cast, join, leave."""
    if type(msg) is not tuple or len(msg) < 2 or type(msg[1]) is not Pid:
        return
    peer = msg[1]
    node = str(peer.node)
    if msg[0] == "discover":
        s.beam[node] = peer
        mine = [(g, list(p)) for g, p in s.local.items()]
        _core.send(peer, (A_GEN_CAST, (A_SYNC, s.pid, mine)))
    elif msg[0] == "sync" and len(msg) == 3:
        s.beam[node] = peer
        _on_wire(s, None, msg)
    elif node in s.beam:             # join / leave from a scope we know (BEAM ignores others)
        _on_wire(s, None, msg)


def _set_remote(s: _Scope, node: str, groups: Dict[Any, List[Pid]]) -> None:
    old = s.remote.pop(node, {})
    if groups:
        s.remote[node] = groups
    for g in set(old) | set(groups):
        s.rebuild(g)
        before, after = old.get(g, []), groups.get(g, [])
        gone = [p for p in before if p not in after]
        new = [p for p in after if p not in before]
        s.notify(A_LEAVE, g, gone)
        s.notify(A_JOIN, g, new)


def _on_wire(s: _Scope, conn: Any, msg: Any) -> None:
    if type(msg) is not tuple or len(msg) < 2 or type(msg[1]) is not Pid:
        return
    if conn is not None and not conn.pyotp:
        # a BEAM scope addresses our scope's name only to discover us (a visible
        # connection's nodeup): answer as a BEAM scope does, never with pyotp's shapes
        _on_beam(s, msg)
        return
    tag, peer = msg[0], msg[1]
    node = str(peer.node)
    if tag == "discover":
        mine = [(g, list(p)) for g, p in s.local.items()]
        _kernel.send_name(node, s.name, (A_SYNC, s.pid, mine))
    elif tag == "sync" and len(msg) == 3 and type(msg[2]) is list:
        groups: Dict[Any, List[Pid]] = {}
        for item in msg[2]:
            if type(item) is tuple and len(item) == 2 and type(item[1]) is list:
                groups[item[0]] = [p for p in item[1] if type(p) is Pid]
        _set_remote(s, node, groups)
    elif tag == "join" and len(msg) == 4:
        pids = msg[3] if type(msg[3]) is list else [msg[3]]
        g = msg[2]
        s.remote.setdefault(node, {}).setdefault(g, []).extend(pids)
        s.rebuild(g)
        s.notify(A_JOIN, g, pids)
    elif tag == "leave" and len(msg) == 4:
        pids = msg[2] if type(msg[2]) is list else [msg[2]]
        groups_of = s.remote.get(node, {})
        for g in (msg[3] if type(msg[3]) is list else [msg[3]]):
            cur = groups_of.get(g)
            if not cur:
                continue
            left = []
            for p in pids:
                if p in cur:
                    cur.remove(p)
                    left.append(p)
            if not cur:
                del groups_of[g]
            s.rebuild(g)
            s.notify(A_LEAVE, g, left)


class _ScopeServer(GenServer):
    """One per scope and node: monitors local members (a dead member leaves its groups)."""

    def init(self, scope: str) -> Any:
        return ("ok", (scope, {}))

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        return ("reply", "ok", state)

    def handle_cast(self, msg: Any, state: Any) -> Any:
        s = _scopes.get(state[0])
        if s is not None and type(msg) is tuple and len(msg) == 3 and msg[0] == "sync":
            _on_beam(s, msg)         # a BEAM scope's gen_server:cast(Peer, {sync, ...})
        return ("noreply", state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        scope, watched = state
        s = _scopes.get(scope)
        if type(msg) is tuple and msg and msg[0] in ("discover", "join", "leave") and s is not None:
            _on_beam(s, msg)
        elif type(msg) is tuple and msg[0] == "watch":
            for p in msg[1]:
                if p not in watched:
                    watched[p] = _core.monitor(p)
        elif type(msg) is tuple and msg[0] == "DOWN" and s is not None:
            pid = msg[3]
            watched.pop(pid, None)
            for g in [g for g, pids in s.local.items() if pid in pids]:
                n = s.local[g].count(pid)
                _leave_local(s, g, [pid] * n)
        return ("noreply", state)


async def start(scope: str = DEFAULT_SCOPE) -> Pid:
    """Start a scope on this node (before or after ``Node.start``); returns its process.

    >>> await pg.start("chat")
    #PID<...>
    >>> pg.join("room", pyotp.self(), scope="chat")
    'ok'
    """
    if not isinstance(scope, str) or not scope:
        raise _core.BadArg("pg scope must be a non-empty str, got %r" % (scope,))
    s = _scopes.get(scope)
    # the scope's process is registered under its name: a pid left by an earlier runtime
    # (which a process of this one may reuse) is not
    if s is not None and s.pid is not None and _core.whereis(scope) == s.pid:
        return s.pid
    s = _Scope(scope)
    _scopes[scope] = s
    s.pid = await _ScopeServer.start(scope, name=scope)
    if _kernel is not None:
        _attach(s)
    return s.pid


def _attach(s: _Scope) -> None:
    # each scope is a distribution service of the kernel, named as its process
    k = _kernel
    k.remove_service(s.name)          # an earlier incarnation of this scope
    k.add_service(s.name, on_message=lambda conn, msg: _on_wire(s, conn, msg),
                  on_nodeup=lambda node, conn: _nodeup(s, node, conn),
                  on_nodedown=lambda node: _nodedown(s, node))
    for n in k.peers() + [n for n, c in k.conns.items() if _beam_with_pg(c)]:
        k.send_name(n, s.name, (A_DISCOVER, s.pid))


def _beam_with_pg(conn: Any) -> bool:
    """A BEAM node that may run pg scopes: OTP 23+ (pg's first release, and the first to
    negotiate DFLAG_SPAWN). C nodes (erl_call, ei, JInterface) lack SPAWN: they get
    nothing they did not ask for (erl_call gives up on an unexpected message)."""
    return not conn.pyotp and bool(conn.peer_flags & SPAWN)


def _nodeup(s: _Scope, node: str, conn: Any) -> None:
    # pyotp peers: visible ones; BEAM nodes: every one that may run pg (they are hidden to
    # each other, and BEAM's pg discovers only visible nodes, so the discovery has to
    # come from here)
    if conn.pyotp and conn.hidden or not conn.pyotp and not _beam_with_pg(conn):
        return
    if s.pid is not None and _scopes.get(s.name) is s:
        _kernel.send_name(node, s.name, (A_DISCOVER, s.pid))


def _nodedown(s: _Scope, node: str) -> None:
    s.beam.pop(node, None)
    if node in s.remote:
        _set_remote(s, node, {})


async def _start(k: Any) -> None:
    global _kernel
    _kernel = k
    for s in _scopes.values():
        if s.pid is not None and _core.is_alive(s.pid):
            _attach(s)
    if DEFAULT_SCOPE not in _scopes or not _core.is_alive(_scopes[DEFAULT_SCOPE].pid):
        await start(DEFAULT_SCOPE)


def _stop() -> None:
    global _kernel
    k = _kernel
    _kernel = None
    for s in _scopes.values():
        s.remote.clear()
        s.beam.clear()
        for g in list(s.members):
            s.rebuild(g)
        if k is not None:
            k.remove_service(s.name)
