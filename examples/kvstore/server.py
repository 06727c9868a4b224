"""One kvstore node: its data (``table.Table``), its view of the cluster (``Cluster``),
its store process (``Store``, registered as ``"kvstore"``) and the supervision tree:

    kvstore.sup (Supervisor, one_for_one)
    ├── kvstore        Store: replication, forwarded requests, catch-up, expiry timers
    ├── kvstore.clients  Registry (unique): client id -> (addr, name, protocol), for CLIENT LIST/KILL
    ├── kvstore.conns  DynamicSupervisor of Conn processes, one per client socket
    └── kvstore.acceptor  Acceptor: starts a Conn for each accepted socket

Cluster protocol (messages between Store processes, and from a Conn to a Store):
``("batch", [(kind, op, ref), ...], reply_to)`` runs, in order, the reads (``"r"``), writes
(``"w"``, on the key's primary) and whole-keyspace ops (``"a"``) one chunk of a client's
requests sent to this node, answered ``("dones", [(ref, reply), ...])`` (the single forms
``("r"|"w"|"a", op, reply_to, ref)`` -> ``("done", ref, reply)`` are understood too);
``("put", records, from, ref)`` applies replicated records, answered ``("ack", ref, node)``. A write is acknowledged to
the client once every live replica of its key has acked it. On ``nodeup`` each side
sends ``("sync", node, pid)``: the receiver starts sending writes to the newcomer at once,
then dumps the records (with tombstones) of the keys the newcomer replicates; the
newcomer merges them by version and, once it has merged every peer it reached at start,
answers ``("ready", node)``, after which it serves reads and can be primary. On ``nodedown`` the node leaves the live set and every process
waiting on it is told (``("lost", ref, node)``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import pyotp
from pyotp import Atom, DynamicSupervisor, GenServer, Registry, Supervisor
from pyotp.resp import ErrorReply

from . import table as _table
from .commands import CLIENTS
from .conn import Acceptor, Conn, Protocol
from .glob import matcher
from .ring import Ring
from .table import Table, execute_read, execute_write
from .wire import wire

_log = logging.getLogger("examples.kvstore")
CLUSTER: "Cluster" = None  # type: ignore[assignment]


@dataclass
class Config:
    """How one node runs (``python -m examples.kvstore --help``)."""
    port: int = 6379
    host: str = "127.0.0.1"
    data: Optional[str] = None             # directory of the append-only log; None: memory only
    appendfsync: str = "everysec"
    maxmemory: int = 0
    maxmemory_policy: str = "noeviction"
    node: Optional[str] = None             # distribution name; None: a single node
    cookie: str = "kvstore"
    peers: List[str] = field(default_factory=list)
    replicas: int = 2                      # replication factor


class Cluster:
    """This node's view: members (every node seen), the live set (synced nodes that serve
    reads and can be primaries), wlive (live plus nodes catching up: they get writes),
    the ring, and who waits on which node."""

    def __init__(self, me: str, table: Table, rf: int, cfg: Config) -> None:
        self.me = Atom(me)
        self.table = table
        self.rf = rf
        self.cfg = cfg
        self.members: Set[str] = {self.me}
        self.live: Set[str] = {self.me}
        self.wlive: Set[str] = {self.me}
        self.waiting: Dict[str, Dict[Any, Any]] = {}
        self.clients = 0
        self._rebuild()

    def _rebuild(self) -> None:
        self.ring = Ring(self.members, self.rf)
        self.solo = len(self.wlive) == 1 and self.rf >= len(self.members)

    def add_member(self, n: str) -> None:
        if n not in self.members:
            self.members.add(Atom(n))
            self._rebuild()

    def set_live(self, n: str, live: bool, wlive: bool) -> None:
        (self.live.add if live else self.live.discard)(Atom(n))
        (self.wlive.add if wlive else self.wlive.discard)(Atom(n))
        self._rebuild()

    def wait(self, nodes: Iterable[str], pid: Any, ref: Any) -> None:
        for n in nodes:
            self.waiting.setdefault(n, {})[ref] = pid

    def unwait(self, nodes: Any, pid: Any, ref: Any) -> None:
        for n in ([nodes] if isinstance(nodes, str) else nodes):
            d = self.waiting.get(n)
            if d is not None:
                d.pop(ref, None)

    def node_lost(self, n: str) -> None:
        for ref, pid in self.waiting.pop(n, {}).items():
            pyotp.send(pid, (Atom("lost"), ref, Atom(n)))

    def execute_all(self, op: Tuple[Any, ...]) -> Any:
        if op[0] == "keys":
            m = matcher(op[1])
            return [k for k in self.table.live_keys() if m(k)]
        if op[0] == "flush":
            self.table.apply_flush(op[1])
            return "OK"
        raise ValueError("unknown op %r" % (op[0],))

    # ------------------------------------------------------------ CONFIG and INFO
    def config(self) -> Dict[bytes, bytes]:
        t = self.table
        return {b"maxmemory": b"%d" % t.maxmemory, b"maxmemory-policy": t.policy.encode(),
                b"appendonly": b"yes" if t.aof else b"no",
                b"appendfsync": (t.aof.fsync if t.aof else self.cfg.appendfsync).encode(),
                b"save": b"", b"databases": b"1", b"port": b"%d" % self.cfg.port,
                b"proto-max-bulk-len": b"536870912"}

    def set_config(self, key: bytes, value: bytes) -> Optional[str]:
        t = self.table
        if key == b"maxmemory":
            n = _table.parse_int(value)
            if n is None or n < 0:
                return "ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument couldn't be parsed into an integer"
            t.maxmemory = n
        elif key == b"maxmemory-policy":
            if value.decode("latin-1") not in _table.POLICIES:
                return "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following: %s" % ", ".join(_table.POLICIES)
            t.policy = value.decode()
        elif key == b"appendfsync" and t.aof is not None:
            if value.decode("latin-1") not in ("always", "everysec", "no"):
                return "ERR CONFIG SET failed (possibly related to argument 'appendfsync') - argument(s) must be one of the following: always, everysec, no"
            t.aof.fsync = value.decode()
        elif key not in self.config():
            return "ERR Unknown option or number of arguments for CONFIG SET - '%s'" % key.decode("utf-8", "replace")
        return None

    def info(self, section: bytes) -> str:
        t = self.table
        s = {
            "server": ["redis_version:7.0.0", "pyotp_kvstore:1", "process_id:%d" % os.getpid(),
                       "tcp_port:%d" % self.cfg.port, "node:%s" % self.me],
            "clients": ["connected_clients:%d" % Registry.count(CLIENTS)],
            "memory": ["used_memory:%d" % t.used, "maxmemory:%d" % t.maxmemory,
                       "maxmemory_policy:%s" % t.policy],
            "persistence": ["aof_enabled:%d" % (1 if t.aof else 0),
                            "aof_fsync:%s" % (t.aof.fsync if t.aof else "-"),
                            "aof_loaded_records:%d" % t.loaded],
            "stats": ["expired_keys:%d" % t.expired, "evicted_keys:%d" % t.evicted],
            "replication": ["role:master", "replication_factor:%d" % self.rf,
                            "members:%s" % ",".join(sorted(self.members)),
                            "live_members:%s" % ",".join(sorted(self.live))],
            "keyspace": (["db0:keys=%d,expires=%d,avg_ttl=0" % (len(t.data), len(t.exp))] if t.data else []),
        }
        want = section.decode("latin-1")
        names = list(s) if want in ("default", "all", "everything") else [want]
        out = []
        for n in names:
            if n in s:
                out.append("# %s\r\n%s\r\n" % (n.capitalize(), "\r\n".join(s[n])))
        return "\r\n".join(out)


class Store(GenServer):
    """The node's store process (see the module doc)."""

    def init(self, arg: Any) -> Any:
        c = CLUSTER
        self.c = c
        self.me = pyotp.self()
        self.pending: Dict[Any, List[Any]] = {}     # ref -> [nodes left, reply_to, ref, reply]
        self.synced: Set[str] = set()       # peers whose records we merged
        self.told: Set[str] = set()         # peers we told we are ready
        self.sync_waiter: Any = None
        self.started = not c.cfg.node       # a node is ready once its start merged every peer
        t = c.table
        t.on_expiry = self._arm
        for k, e in t.exp.items():
            self._arm(k, e)
        if t.aof is not None and t.aof.fsync == "everysec":
            pyotp.send_after(self.me, "fsync", 1.0)
        if c.cfg.node:
            from pyotp.dist import Node
            Node.monitor_nodes(True)
            # nodes already connected (a pool's mesh, or a peer that dialled in before this
            # init) gave their nodeup to nobody: ask each for its records and to ask back
            for n in Node.list():
                pyotp.send(("kvstore", n), (Atom("sync"), c.me, self.me, True))
        return ("ok", None)

    def _arm(self, key: bytes, exp: int) -> None:
        pyotp.send_after(self.me, ("expire", key, exp), max(0.0, (exp - _table.now_ms()) / 1000.0) + 0.001)

    def terminate(self, reason: Any, state: Any) -> None:
        if self.c.table.aof is not None:
            self.c.table.aof.close()

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if req == "wait_synced":        # from the node's start: every connected peer merged
            self.sync_waiter = from_
            self._check_synced()
            return ("noreply", state)
        return ("reply", ("error", "unknown call"), state)

    def _check_synced(self) -> None:
        # A starting node tells its peers it is ready (so they read from it and make it a
        # primary again) only once it has merged the records of every peer it reached:
        # before that it may lack writes another replica took while it was away.
        from pyotp.dist import Node
        if self.sync_waiter is not None and all(n in self.synced for n in Node.list()):
            GenServer.reply(self.sync_waiter, "ok")
            self.sync_waiter = None
            self.started = True
        if self.started:
            for n in self.synced - self.told:
                self.told.add(n)
                pyotp.send(("kvstore", n), (Atom("ready"), self.c.me))

    def _batch(self, reqs: List[Any], to: Any) -> None:
        """Requests of one chunk of a connection on another node, in order: replies for
        reads and unchanged keys at once, replicated writes once their replicas acked
        (one put per replica set for the whole batch)."""
        c = self.c
        t = c.table
        now: List[Any] = []
        groups: Dict[Tuple[Any, ...], List[Any]] = {}
        for kind, op, ref in reqs:
            if kind == "w":
                reply, rec = execute_write(t, op)
                if rec is not None:
                    reps = tuple(n for n in c.ring.preference(op[1]) if n != c.me and n in c.wlive)
                    if reps:
                        g = groups.setdefault(reps, [[], []])
                        g[0].append(rec)
                        g[1].append((ref, wire(reply)))
                        continue
            elif kind == "r":
                reply = execute_read(t, op)
            else:
                reply = c.execute_all(op)
            now.append((ref, wire(reply)))
        if now:
            pyotp.send(to, (Atom("dones"), now))
        for reps, (recs, replies) in groups.items():
            pref_ref = pyotp.make_ref()
            self.pending[pref_ref] = [set(reps), to, None, replies]
            c.wait(reps, self.me, pref_ref)
            for n in reps:
                pyotp.send(("kvstore", n), (Atom("put"), recs, self.me, pref_ref))

    def handle_info(self, msg: Any, state: Any) -> Any:
        c = self.c
        t = c.table
        kind = msg[0] if type(msg) is tuple else msg
        if kind == "put":
            for rec in msg[1]:
                t.apply(tuple(rec))
            pyotp.send(msg[2], (Atom("ack"), msg[3], c.me))
        elif kind == "w":
            op, to, ref = msg[1], msg[2], msg[3]
            reply, rec = execute_write(t, op)
            pref = c.ring.preference(op[1])
            reps = [n for n in pref if n != c.me and n in c.wlive]
            if rec is None or not reps:
                pyotp.send(to, (Atom("done"), ref, wire(reply)))
            else:
                pref_ref = pyotp.make_ref()
                self.pending[pref_ref] = [set(reps), to, ref, reply]
                c.wait(reps, self.me, pref_ref)
                for n in reps:
                    pyotp.send(("kvstore", n), (Atom("put"), [rec], self.me, pref_ref))
        elif kind == "batch":                 # ("batch", [(kind, op, ref), ...], reply_to)
            self._batch(msg[1], msg[2])
        elif kind == "r":
            pyotp.send(msg[2], (Atom("done"), msg[3], wire(execute_read(t, msg[1]))))
        elif kind == "a":
            pyotp.send(msg[2], (Atom("done"), msg[3], wire(c.execute_all(msg[1]))))
        elif kind == "ack" or kind == "lost":
            p = self.pending.get(msg[1])
            if p is not None:
                p[0].discard(msg[2])
                c.unwait([msg[2]], self.me, msg[1])
                if not p[0]:
                    del self.pending[msg[1]]
                    if p[2] is None:
                        pyotp.send(p[1], (Atom("dones"), p[3]))
                    else:
                        pyotp.send(p[1], (Atom("done"), p[2], wire(p[3])))
        elif kind == "expire":
            t.expire_now(msg[1], msg[2])
        elif kind == "fsync":
            if t.aof is not None:
                t.aof.sync()
                if t.aof.fsync == "everysec":
                    pyotp.send_after(self.me, "fsync", 1.0)
        elif kind == "nodeup":
            pyotp.send(("kvstore", msg[1]), (Atom("sync"), c.me, self.me))
        elif kind == "sync":                  # a node (re)joins: write to it from now on
            n = msg[1]
            c.add_member(n)
            c.set_live(n, n in c.live, True)
            ring = c.ring
            recs = t.dump_for(lambda k: n in ring.preference(k))
            pyotp.send(msg[2], (Atom("sync_data"), c.me, recs, t.flush_ver))
            if len(msg) > 3 and msg[3]:       # a store that just started: our nodeup sync was lost
                pyotp.send(msg[2], (Atom("sync"), c.me, self.me))
        elif kind == "sync_data":
            n = msg[1]
            c.add_member(n)
            t.apply_flush(msg[3])
            for rec in msg[2]:
                t.apply(tuple(rec))
            self.synced.add(n)
            self._check_synced()
        elif kind == "ready":
            c.set_live(msg[1], True, True)
            _log.info("kvstore: %s is live", msg[1])
        elif kind == "nodedown":
            n = msg[1]
            self.synced.discard(n)
            self.told.discard(n)
            c.set_live(n, False, False)
            c.node_lost(n)
            self._check_synced()
        return ("noreply", state)


async def start(cfg: Config, ready: Optional[Any] = None) -> Any:
    """Start a node's tree and its listener (inside a pyotp node); returns the asyncio
    server. ``ready`` (a callable) gets the port once clients can connect."""
    global CLUSTER
    tbl = Table(cfg.data, cfg.appendfsync, cfg.maxmemory, cfg.maxmemory_policy)
    if tbl.loaded:
        _log.info("kvstore: replayed %d records from %s", tbl.loaded, cfg.data)
    if cfg.node:
        from pyotp.dist import Node
        if not Node.alive():            # a pool node is distributed already
            await Node.start(cfg.node, cookie=cfg.cookie)
    CLUSTER = Cluster(cfg.node or "nonode@nohost", tbl, cfg.replicas, cfg)
    await Supervisor.start_link([
        {"id": "store", "start": (Store.start_link, (None,), {"name": "kvstore"})},
        (Registry, {"keys": "unique", "name": CLIENTS}),
        {"id": "conns", "start": (DynamicSupervisor.start_link, (), {"name": "kvstore.conns", "strategy": "one_for_one",
                                                                      "max_restarts": 1000000}),
         "type": "supervisor"},
        {"id": "acceptor", "start": (Acceptor.start_link, ("kvstore.conns",), {"name": "kvstore.acceptor"})},
    ], strategy="one_for_one", name="kvstore.sup")
    if cfg.node:
        from pyotp.dist import Node
        for p in cfg.peers:
            try:
                await Node.connect(p)
            except Exception:            # noqa: BLE001  (a peer not up yet connects to us later)
                pass
        await GenServer.call("kvstore", "wait_synced", 30.0)
    acceptor = pyotp.whereis("kvstore.acceptor")
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: Protocol(acceptor), cfg.host, cfg.port, reuse_address=True)
    if ready is not None:
        ready(srv.sockets[0].getsockname()[1])
    return srv


async def serve(cfg: Config) -> None:
    """Run a node until it is stopped (SIGINT/SIGTERM through pyotp.run)."""
    def ready(port: int) -> None:
        # one write per line: a pool's nodes share the head's stdout
        sys.stdout.write("kvstore ready on %s:%d node %s\n" % (cfg.host, port, cfg.node or "nonode@nohost"))
        sys.stdout.flush()
    srv = await start(cfg, ready)
    try:
        await pyotp.receive(lambda m: m == "stop")
    finally:
        srv.close()
