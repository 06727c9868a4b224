"""Service discovery: register and discover named endpoints cluster-wide, on top of ``pg``.

A process registers itself as an *instance* of a service, with an *endpoint* (any term: a
pid to call, a ``("host", port)`` tuple, a URL...) and optional *metadata* (a dict). Any
process on any connected node can then ``discover`` the instances, or ``watch`` a service
and receive ``("service_up", service, pid, endpoint)`` / ``("service_down", service, pid)``
messages. An instance vanishes when its process unregisters or dies, or when its node
goes down.

>>> async def main():
...     await ServiceDiscovery.start_link()
...     await ServiceDiscovery.register("db", endpoint=("10.0.0.5", 5432), metadata={"role": "primary"})
...     return await ServiceDiscovery.discover("db")
>>> pyotp.run(main)
[(#PID<...>, ('10.0.0.5', 5432), {'role': 'primary'})]

How it works
------------
* **Membership** is a ``pg`` group per service in the scope ``"pyotp_service_discovery"``
  (started by ``ServiceDiscovery.start_link`` and linked to its server). ``pg`` removes a
  member whose process dies, and all members of a node that goes down.
* **Endpoints and metadata are replicated**: every node keeps the entries of its own
  processes and a copy of every other node's. A registration is broadcast to the
  ``pyotp_sd`` handler of each visible pyotp node *before* the ``pg`` join, on the same
  connection; when two nodes connect each sends the other all its entries. Replication
  messages are applied when they arrive (in wire order, like ``pg`` and global names), so
  ``discover`` reads only local tables (no network round trip) and, after any reply from
  node X, sees everything X registered before that reply.
* An instance is *visible* when it is a ``pg`` member **and** its entry is known here;
  ``discover`` and the watch notifications follow exactly that rule.
* Registering links the caller to the local ``ServiceDiscovery`` server (which traps
  exits), as Elixir's Registry does: a dead owner's entries are removed at once; if the
  server crashes, registrants get its exit signal (and, supervised, re-register).

Start it after the node is distributed (``run_node`` / ``Node.start`` first). Started on a
non-distributed node it serves that node alone; if the node becomes distributed later, it
joins the cluster on its next operation or the first message from a peer.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

from .. import _core
from .._core import Pid
from ..gen_server import GenServer

__all__ = ["ServiceDiscovery", "ServiceDiscoveryError", "SCOPE", "SERVER"]

SCOPE = "pyotp_service_discovery"
"""The pg scope holding one group per service."""
SERVER = "pyotp_sd"
"""The local name of the server; remote nodes' replication messages go to this name."""

Key = Tuple[Any, Pid]          # (service, pid)
Entry = Tuple[Any, Dict[Any, Any]]   # (endpoint, metadata)


class ServiceDiscoveryError(RuntimeError):
    """ServiceDiscovery is not started on this node (or another misuse)."""


class _State:
    def __init__(self, server: Pid) -> None:
        self.server = server
        self.local: Dict[Key, Entry] = {}
        self.remote: Dict[str, Dict[Key, Entry]] = {}
        self.kernel: Any = None


_st: Optional[_State] = None


def _state() -> _State:
    st = _st
    if st is None or _core.whereis(SERVER) != st.server:
        raise ServiceDiscoveryError("ServiceDiscovery is not started on this node "
                                    "(await ServiceDiscovery.start_link() first)")
    return st


def _check_service(service: Any) -> None:
    if service is None:
        raise ValueError("service must not be None")
    try:
        hash(service)
    except TypeError:
        raise TypeError("service must be hashable (a str or a tuple), got %r" % (service,)) from None


def _entry_of(st: _State, key: Key) -> Optional[Entry]:
    pid = key[1]
    if pid.node == _core.local_node():
        return st.local.get(key)
    r = st.remote.get(str(pid.node))
    return None if r is None else r.get(key)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


# -- distribution hooks -----------------------------------------------------------------

def _current_kernel() -> Any:
    from .kernel import running
    return running()


def _my_entries(st: _State) -> List[Tuple[Any, Pid, Any, Any]]:
    return [(k[0], k[1], e[0], e[1]) for k, e in st.local.items()]


def _broadcast(st: _State, msg: Any) -> None:
    k = st.kernel
    if k is None:
        return
    for n in k.peers():
        k.send_name(n, SERVER, msg)


def _ensure_attached(st: _State) -> None:
    """Follow the node's distribution state (Node.start / Node.stop)."""
    k = _current_kernel()
    if k is st.kernel:
        return
    old = st.kernel
    if old is not None:
        _detach(old)
    changed: List[Key] = [key for r in st.remote.values() for key in r]
    st.remote.clear()
    st.kernel = k
    if k is not None:
        k.remove_service(SERVER)
        k.add_service(SERVER, on_message=_on_wire, on_nodeup=_on_nodeup, on_nodedown=_on_nodedown)
        me = str(_core.local_node())
        for n in k.peers():
            k.send_name(n, SERVER, ("sd_sync", me, _my_entries(st), True))
    if changed:
        _core.send(st.server, ("sd_changed", changed))


def _detach(k: Any) -> None:
    k.remove_service(SERVER)


def _live() -> Optional[_State]:
    st = _st
    if st is None or not _core.is_alive(st.server):
        return None
    return st


def _on_nodeup(node: str, conn: Any) -> None:
    st = _live()
    if st is None or st.kernel is None or not conn.pyotp or conn.hidden:
        return
    st.kernel.send_name(node, SERVER, ("sd_sync", str(_core.local_node()), _my_entries(st), False))


def _on_nodedown(node: str) -> None:
    st = _live()
    if st is None:
        return
    r = st.remote.pop(node, None)
    if r:
        _core.send(st.server, ("sd_changed", list(r)))


def _on_wire(conn: Any, msg: Any) -> None:
    _apply(msg)


def _apply(msg: Any) -> None:
    """Apply a replication message from another node (at receipt, in wire order)."""
    st = _live()
    if st is None or type(msg) is not tuple or len(msg) < 2:
        return
    tag, node = msg[0], str(msg[1])
    k = st.kernel
    if k is None or node not in k.peers():
        return                                   # from a node we are no longer connected to
    changed: List[Key] = []
    if tag == "sd_sync" and len(msg) == 4:
        old = st.remote.pop(node, {})
        new: Dict[Key, Entry] = {}
        for item in msg[2]:
            if type(item) is tuple and len(item) == 4 and type(item[1]) is Pid:
                new[(item[0], item[1])] = (item[2], item[3])
        if new:
            st.remote[node] = new
        changed = list(set(old) | set(new))
        if msg[3]:
            k.send_name(node, SERVER, ("sd_sync", str(_core.local_node()), _my_entries(st), False))
    elif tag == "sd_up" and len(msg) == 6 and type(msg[3]) is Pid:
        key = (msg[2], msg[3])
        st.remote.setdefault(node, {})[key] = (msg[4], msg[5])
        changed = [key]
    elif tag == "sd_down" and len(msg) == 4 and type(msg[3]) is Pid:
        key = (msg[2], msg[3])
        r = st.remote.get(node)
        if r is not None and r.pop(key, None) is not None:
            changed = [key]
            if not r:
                del st.remote[node]
    if changed:
        _core.send(st.server, ("sd_changed", changed))


# -- the server -------------------------------------------------------------------------

class _Server(GenServer):
    """One per node (registered as ``pyotp_sd``): links to registrants, keeps the watch
    subscriptions and turns membership changes into notifications."""

    async def init(self, arg: Any) -> Any:
        global _st
        from . import pg
        _core.process_flag("trap_exit", True)
        scope_pid = await pg.start(SCOPE)
        _core.link(scope_pid)
        for group in list(pg.which_groups(SCOPE)):   # memberships left by a previous server
            local = pg.get_local_members(group, SCOPE)
            if local:
                pg.leave(group, local, SCOPE)
        st = _State(_core.self())
        if _st is not None and _st.kernel is not None:
            _detach(_st.kernel)
        _st = st
        ref, groups = pg.monitor_scope(SCOPE)
        s = {"st": st, "scope": scope_pid, "pg_ref": ref, "owners": {},    # pid -> set(services)
             "notified": {},                                            # key -> entry
             "watchers": {}, "wmon": {}}       # service -> {pid}, pid -> (ref, set(services))
        _ensure_attached(st)
        return ("ok", s)

    def handle_call(self, req: Any, from_: Any, s: Dict[str, Any]) -> Any:
        st: _State = s["st"]
        _ensure_attached(st)
        if type(req) is not tuple or not req:
            return ("reply", ("error", ("unknown_request", req)), s)
        if req[0] == "register":
            _, service, endpoint, metadata = req
            pid = from_[0]
            self._register(s, service, pid, endpoint, metadata)
            return ("reply", "ok", s)
        if req[0] == "watch":
            service = req[1]
            pid = from_[0]
            w = s["wmon"].get(pid)
            if w is None:
                w = s["wmon"][pid] = (_core.monitor(pid), set())
            w[1].add(service)
            s["watchers"].setdefault(service, set()).add(pid)
            now = [(k[1], e[0], e[1]) for k, e in s["notified"].items() if k[0] == service]
            return ("reply", now, s)
        if req[0] == "unwatch":
            self._unwatch(s, from_[0], req[1])
            return ("reply", "ok", s)
        return ("reply", ("error", ("unknown_request", req)), s)

    def _register(self, s: Dict[str, Any], service: Any, pid: Pid, endpoint: Any, metadata: Any) -> None:
        from . import pg
        st: _State = s["st"]
        key = (service, pid)
        fresh = key not in st.local
        entry = (endpoint, metadata)
        st.local[key] = entry
        owners = s["owners"]
        if pid not in owners:
            owners[pid] = set()
            _core.link(pid)
        owners[pid].add(service)
        _broadcast(st, ("sd_up", str(_core.local_node()), service, pid, endpoint, metadata))
        if fresh:
            pg.join(service, pid, SCOPE)
        self._recompute(s, [key])

    def _unwatch(self, s: Dict[str, Any], pid: Pid, service: Any) -> None:
        w = s["wmon"].get(pid)
        if w is None:
            return
        w[1].discard(service)
        ws = s["watchers"].get(service)
        if ws is not None:
            ws.discard(pid)
            if not ws:
                del s["watchers"][service]
        if not w[1]:
            _core.demonitor(w[0], True)
            del s["wmon"][pid]

    def handle_info(self, msg: Any, s: Dict[str, Any]) -> Any:
        st: _State = s["st"]
        if type(msg) is not tuple or not msg:
            return ("noreply", s)
        tag = msg[0]
        if tag == "sd_changed":
            self._recompute(s, msg[1])
            self._check_owners(s, msg[1])
        elif tag == s["pg_ref"] and len(msg) == 4:
            self._recompute(s, [(msg[2], p) for p in msg[3]])
        elif tag == "EXIT":
            pid, reason = msg[1], msg[2]
            if pid == s["scope"]:
                return ("stop", reason, s)
            if pid in s["owners"]:
                self._owner_gone(s, pid)
        elif tag == "DOWN" and len(msg) == 5:
            w = s["wmon"].pop(msg[3], None)
            if w is not None:
                for service in w[1]:
                    ws = s["watchers"].get(service)
                    if ws is not None:
                        ws.discard(msg[3])
                        if not ws:
                            del s["watchers"][service]
        elif tag in ("sd_sync", "sd_up", "sd_down"):
            # a peer's replication message reached us as a plain message: distribution
            # started after this server did; attach now, then apply it
            _ensure_attached(st)
            _apply(msg)
        return ("noreply", s)

    def _owner_gone(self, s: Dict[str, Any], pid: Pid) -> None:
        from . import pg
        st: _State = s["st"]
        services = s["owners"].pop(pid, set())
        keys = []
        me = str(_core.local_node())
        for service in services:
            key = (service, pid)
            if st.local.pop(key, None) is not None:
                _broadcast(st, ("sd_down", me, service, pid))
                keys.append(key)
            pg.leave(service, pid, SCOPE)
        self._recompute(s, keys)

    def _check_owners(self, s: Dict[str, Any], keys: List[Key]) -> None:
        st: _State = s["st"]
        owners = s["owners"]
        for service, pid in keys:
            svcs = owners.get(pid)
            if svcs is not None and (service, pid) not in st.local:
                svcs.discard(service)
                if not svcs:
                    del owners[pid]
                    _core.unlink(pid)

    def _recompute(self, s: Dict[str, Any], keys: Any) -> None:
        from . import pg
        st: _State = s["st"]
        notified: Dict[Key, Entry] = s["notified"]
        members: Dict[Any, Set[Pid]] = {}
        for key in keys:
            service, pid = key
            m = members.get(service)
            if m is None:
                m = members[service] = set(pg.get_members(service, SCOPE))
            entry = _entry_of(st, key) if pid in m else None
            old = notified.get(key)
            if entry is not None:
                if old is not None and _same(old, entry):
                    continue
                notified[key] = entry
                self._notify(s, service, ("service_up", service, pid, entry[0]))
            elif old is not None:
                del notified[key]
                self._notify(s, service, ("service_down", service, pid))

    def _notify(self, s: Dict[str, Any], service: Any, msg: Any) -> None:
        for w in s["watchers"].get(service, ()):
            _core.send(w, msg)

    def terminate(self, reason: Any, s: Dict[str, Any]) -> Any:
        global _st
        st: _State = s["st"]
        if st.kernel is not None:
            _detach(st.kernel)
        if _st is st:
            _st = None


# -- the API ----------------------------------------------------------------------------

class ServiceDiscovery:
    """Cluster-wide service registry; see the module documentation.

    >>> await ServiceDiscovery.start_link()
    #PID<...>
    >>> await ServiceDiscovery.register("api", endpoint=("127.0.0.1", 8080))
    'ok'
    >>> await ServiceDiscovery.discover("api")
    [(#PID<...>, ('127.0.0.1', 8080), {})]
    """

    @classmethod
    async def start_link(cls, arg: Any = None, *, timeout: Optional[float] = None) -> Pid:
        """Start this node's ServiceDiscovery server (and its pg scope), linked to the
        caller and registered as ``"pyotp_sd"``. ``arg`` is ignored (for child specs).
        Starting it twice raises ``pyotp.StartError(("already_started", pid))``.

        >>> pid = await ServiceDiscovery.start_link()
        """
        pid: Pid = await _Server.start_link(arg, name=SERVER, timeout=timeout)
        return pid

    @classmethod
    async def start(cls, arg: Any = None, *, timeout: Optional[float] = None) -> Pid:
        """As start_link, without a link to the caller.

        >>> pid = await ServiceDiscovery.start()
        """
        pid: Pid = await _Server.start(arg, name=SERVER, timeout=timeout)
        return pid

    @classmethod
    def child_spec(cls, arg: Any = None) -> Dict[str, Any]:
        """Child spec for supervisors: ``Supervisor.start_link([ServiceDiscovery, ...])``.

        >>> ServiceDiscovery.child_spec()["id"]
        'ServiceDiscovery'
        """
        return {"id": "ServiceDiscovery", "start": (cls.start_link, (arg,)), "type": "worker"}

    @staticmethod
    async def stop(reason: Any = "normal") -> None:
        """Stop this node's server (its instances vanish everywhere).

        >>> _ = await ServiceDiscovery.start_link()
        >>> await ServiceDiscovery.stop()
        """
        await GenServer.stop(SERVER, reason)

    @staticmethod
    async def register(service: Any, *, endpoint: Any, metadata: Optional[Dict[Any, Any]] = None) -> str:
        """Register the calling process as an instance of ``service`` (any hashable term)
        reachable at ``endpoint`` (any term but None), with ``metadata`` (a dict). Registering
        the same service again from the same process updates its endpoint and metadata
        (watchers get a new ``service_up``). Returns "ok".

        >>> _ = await ServiceDiscovery.start_link()
        >>> await ServiceDiscovery.register("db", endpoint=("10.0.0.5", 5432), metadata={"zone": "a"})
        'ok'
        """
        _check_service(service)
        if endpoint is None:
            raise ValueError("register(%r): an endpoint is required (a pid, a (host, port) tuple...)"
                             % (service,))
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise TypeError("register(%r): metadata must be a dict, got %r" % (service, metadata))
        else:
            metadata = dict(metadata)
        _state()
        result: str = await GenServer.call(SERVER, ("register", service, endpoint, metadata))
        return result

    @staticmethod
    def unregister(service: Any) -> str:
        """Remove the calling process's instance of ``service``: "ok", or "not_registered".

        >>> _ = await ServiceDiscovery.start_link()
        >>> await ServiceDiscovery.register("db", endpoint=("10.0.0.5", 5432))
        'ok'
        >>> ServiceDiscovery.unregister("db")
        'ok'
        >>> ServiceDiscovery.unregister("db")
        'not_registered'
        """
        from . import pg
        _check_service(service)
        st = _state()
        _ensure_attached(st)
        pid = _core.self()
        key = (service, pid)
        if st.local.pop(key, None) is None:
            return "not_registered"
        _broadcast(st, ("sd_down", str(_core.local_node()), service, pid))
        pg.leave(service, pid, SCOPE)
        _core.send(st.server, ("sd_changed", [key]))
        return "ok"

    @staticmethod
    async def discover(service: Any) -> List[Tuple[Pid, Any, Dict[Any, Any]]]:
        """The instances of ``service`` on every connected node: ``[(pid, endpoint,
        metadata)]``, this node's first. Reads local tables only.

        >>> _ = await ServiceDiscovery.start_link()
        >>> await ServiceDiscovery.register("db", endpoint=("10.0.0.5", 5432), metadata={"zone": "a"})
        'ok'
        >>> await ServiceDiscovery.discover("db")      # with other nodes: theirs after ours
        [(#PID<...>, ('10.0.0.5', 5432), {'zone': 'a'})]
        """
        from . import pg
        _check_service(service)
        st = _state()
        _ensure_attached(st)
        out: List[Tuple[Pid, Any, Dict[Any, Any]]] = []
        seen: Set[Pid] = set()
        here = _core.local_node()
        for pid in pg.get_members(service, SCOPE):
            if pid in seen:
                continue
            seen.add(pid)
            if pid.node == here and not _core.is_alive(pid):
                continue
            e = _entry_of(st, (service, pid))
            if e is not None:
                out.append((pid, e[0], e[1]))
        return out

    @staticmethod
    def services() -> List[Any]:
        """Services with at least one visible instance in the cluster.

        >>> _ = await ServiceDiscovery.start_link()
        >>> await ServiceDiscovery.register("db", endpoint=("10.0.0.5", 5432))
        'ok'
        >>> ServiceDiscovery.services()
        ['db']
        """
        from . import pg
        st = _state()
        out = []
        for g in pg.which_groups(SCOPE):
            if any(_entry_of(st, (g, p)) is not None for p in pg.get_members(g, SCOPE)):
                out.append(g)
        return out

    @staticmethod
    async def watch(service: Any) -> List[Tuple[Pid, Any, Dict[Any, Any]]]:
        """Subscribe the calling process to ``service``: returns the instances known now,
        then the process receives ``("service_up", service, pid, endpoint)`` (a new
        instance, or an updated endpoint) and ``("service_down", service, pid)``.

        >>> _ = await ServiceDiscovery.start_link()
        >>> await ServiceDiscovery.watch("db")
        []
        """
        _check_service(service)
        _state()
        result: List[Tuple[Pid, Any, Dict[Any, Any]]] = await GenServer.call(SERVER, ("watch", service))
        return result

    @staticmethod
    async def unwatch(service: Any) -> str:
        """Stop the calling process's subscription to ``service``. Returns "ok".

        >>> _ = await ServiceDiscovery.start_link()
        >>> await ServiceDiscovery.watch("db")
        []
        >>> await ServiceDiscovery.unwatch("db")
        'ok'
        """
        _check_service(service)
        _state()
        result: str = await GenServer.call(SERVER, ("unwatch", service))
        return result
