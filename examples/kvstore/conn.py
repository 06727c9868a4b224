"""One pyotp process per client connection (``Conn``, a GenServer under the connection
DynamicSupervisor), fed by an asyncio Protocol the way gen_tcp's active mode feeds an
Erlang process: every chunk the socket delivers is a message (bytes) in the process's
mailbox, so the process alone owns the parser, the connection state and the replies.

Replies leave in request order (pipelining): each command becomes a slot; a command whose
keys live on this node is answered at once, one that waits for another node (a forwarded
read or write, or the acknowledgements of replicas) keeps its slot until the answer
arrives as a message, and later replies queue behind it.

Back-pressure: the protocol stops reading the socket while more than ``MAX_INFLIGHT``
chunks wait in the mailbox or while the socket's write buffer is over its high-water mark
(a client that pipelines without reading its replies), and resumes when they drain.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

import pyotp
from pyotp import Atom, GenServer, Registry
from pyotp.resp import ErrorReply, Parser, ProtocolError, encode_into

from .commands import CLIENTS, COMMANDS, Plan, arity_error, unknown_command
from .table import execute_read, execute_write
from .wire import unwire, wire_op

_log = logging.getLogger("examples.kvstore")
MAX_INFLIGHT = 32
_ids = itertools.count(1)
_CLOSED = ("tcp_closed",)
_PUT = Atom("put")
_BATCH = Atom("batch")
E_DOWN = ErrorReply("TRYAGAIN the node holding this key went down during the request; retry")
E_CLUSTERDOWN = ErrorReply("CLUSTERDOWN no live replica holds this key")


class Protocol(asyncio.Protocol):
    """The socket side: forwards bytes to the connection process."""

    def __init__(self, acceptor: Any) -> None:
        self.acceptor = acceptor
        self.pid: Any = None
        self.early: List[bytes] = []
        self.tr: Any = None
        self.inflight = 0
        self.paused_read = False
        self.write_blocked = False

    def connection_made(self, transport: Any) -> None:
        self.tr = transport
        pyotp.send(self.acceptor, ("accept", self))

    def data_received(self, data: bytes) -> None:
        if self.pid is None:
            self.early.append(data)
            return
        self.inflight += 1
        if self.inflight > MAX_INFLIGHT:
            self._pause()
        pyotp.send(self.pid, data)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.pid is not None:
            pyotp.send(self.pid, _CLOSED)
        else:
            self.early.append(b"")       # seen by Conn.init: the peer is gone

    def pause_writing(self) -> None:
        self.write_blocked = True
        self._pause()

    def resume_writing(self) -> None:
        self.write_blocked = False
        self.maybe_resume()

    def _pause(self) -> None:
        if not self.paused_read:
            self.paused_read = True
            self.tr.pause_reading()

    def maybe_resume(self) -> None:
        if self.paused_read and not self.write_blocked and self.inflight <= MAX_INFLIGHT // 2 \
                and not self.tr.is_closing():
            self.paused_read = False
            self.tr.resume_reading()


class _Slot:
    __slots__ = ("parts", "need", "combine", "value")

    def __init__(self, n: int, combine: Any) -> None:
        self.parts: List[Any] = [None] * n
        self.need = n
        self.combine = combine
        self.value: Any = None


class Conn(GenServer):
    """The process of one client connection (see the module doc)."""

    def init(self, proto: Protocol) -> Any:
        from .server import CLUSTER
        self.cluster = CLUSTER
        self.proto_ = proto
        self.parser = Parser()
        self.proto = 2
        self.name: Optional[bytes] = None
        self.id = next(_ids)
        self.closing = False
        self.me = pyotp.self()
        self.slots: Deque[_Slot] = deque()
        self.waits: Dict[Any, Tuple[Any, Any, str, Any, Any]] = {}   # ref -> (slot, part, kind, node(s), key)
        self.writing: Dict[bytes, int] = {}     # keys with a write forwarded and not answered
        # what one received chunk sends to other nodes, sent at its end as one message per
        # node: records for replicas (with the parts waiting for their acks) and requests
        self.out_puts: Dict[str, List[Any]] = {}
        self.put_parts: List[Tuple[_Slot, int]] = []
        self.out_reqs: Dict[str, List[Any]] = {}
        self.out = bytearray()
        CLUSTER.clients += 1
        peer = proto.tr.get_extra_info("peername")
        self.addr = (b"%s:%d" % (peer[0].encode(), peer[1])) if isinstance(peer, tuple) else b"?"
        Registry.register(CLIENTS, self.id, (self.addr, self.name, self.proto))
        proto.pid = self.me
        for d in proto.early:
            pyotp.send(self.me, d if d else _CLOSED)
        proto.early = []
        return ("ok", None)

    def published(self) -> None:
        """Refresh this connection's entry in the clients Registry (CLIENT LIST reads it)."""
        Registry.update_value(CLIENTS, self.id, lambda v: (self.addr, self.name, self.proto))

    def terminate(self, reason: Any, state: Any) -> None:
        self.cluster.clients -= 1
        for ref, w in self.waits.items():
            self.cluster.unwait(w[3], self.me, ref)
        if not self.proto_.tr.is_closing():
            self.proto_.tr.close()

    # ---------------------------------------------------------------- messages
    def handle_info(self, msg: Any, state: Any) -> Any:
        if type(msg) is bytes:
            p = self.proto_
            p.inflight -= 1
            try:
                cmds = self.parser.feed(msg)
            except ProtocolError:
                cmds = []
            self._run_all(cmds)
            if self.parser.error is not None:
                # Redis answers what came before the violation, then the error, then closes
                self.slots.append(_ready(ErrorReply("ERR " + self.parser.error)))
                self.closing = True
                self._flush()
            if p.paused_read:
                p.maybe_resume()
            if self.closing and not self.slots:
                return self._close("normal")
            return ("noreply", state)
        if msg is _CLOSED or msg == _CLOSED:
            return ("stop", "normal", state)
        kind = msg[0]
        if kind == "client_kill":               # CLIENT KILL from another connection
            return self._close("normal")
        if kind == "dones":                     # ("dones", [(ref, reply), ...]) from a node's store
            for ref, reply in msg[1]:
                self._done(ref, reply)
        elif kind == "done":                    # ("done", ref, reply)
            self._done(msg[1], msg[2])
        elif kind == "ack":                     # ("ack", ref, node) from a replica
            self._acked(msg[1], msg[2])
        elif kind == "lost":                    # ("lost", ref, node): that node went down
            w = self.waits.get(msg[1])
            if w is not None:
                if w[2] == "acks":
                    self._acked(msg[1], msg[2])
                else:
                    del self.waits[msg[1]]
                    self._unwrite(w[4])
                    self._resolve(w[0], w[1], E_DOWN)
        self._flush()
        if self.closing and not self.slots:
            return self._close("normal")
        return ("noreply", state)

    def _close(self, reason: str) -> Any:
        self._flush()
        self.proto_.tr.close()
        return ("stop", reason, None)

    # ---------------------------------------------------------------- commands
    def _run_all(self, cmds: List[List[bytes]]) -> None:
        out = self.out
        for a in cmds:
            if self.closing:
                break
            spec = COMMANDS.get(a[0])
            if spec is None:
                spec = COMMANDS.get(a[0].lower())
            if spec is None:
                r: Any = unknown_command(a)
            else:
                ar = spec[0]
                if (ar > 0 and len(a) != ar) or (ar < 0 and len(a) < -ar):
                    r = arity_error(a[0].decode("utf-8", "replace").lower())
                else:
                    r = spec[1](self, a)
                    if type(r) is Plan:
                        r = self._run_plan(r)
                        if type(r) is _Slot:
                            self.slots.append(r)
                            continue
            if self.slots:
                self.slots.append(_ready(r))
            else:
                encode_into(out, r, self.proto)
        self._send_batches()
        self._flush()

    def _run_plan(self, plan: Plan) -> Any:
        c = self.cluster
        if c.solo:
            # one live node holding everything: no routing, no waiting
            t = c.table
            parts: List[Any] = []
            for kind, op in plan.ops:
                if kind == "r":
                    parts.append(execute_read(t, op))
                elif kind == "w":
                    parts.append(execute_write(t, op)[0])
                else:
                    parts.append(c.execute_all(op))
            return plan.combine(parts) if plan.combine is not None else parts[0]
        targets: List[Tuple[str, Tuple[Any, ...], Any]] = []
        for kind, op in plan.ops:
            if kind == "a":
                targets.extend((kind, op, n) for n in sorted(c.live))
            else:
                targets.append((kind, op, None))
        slot = _Slot(len(targets), plan.combine or _first)
        for i, (kind, op, n) in enumerate(targets):
            self._route(slot, i, kind, op, n)
        return slot.value if slot.need == 0 else slot

    def _route(self, slot: _Slot, i: int, kind: str, op: Tuple[Any, ...], node: Any) -> None:
        """Run ``op`` here, or send it to the node that holds its key."""
        c = self.cluster
        if kind == "a":
            if node == c.me:
                self._resolve(slot, i, c.execute_all(op))
            else:
                self._remote(slot, i, node, ("a", wire_op(op)))
            return
        pref = c.ring.preference(op[1])
        live = [n for n in pref if n in c.live]
        if not live:
            self._resolve(slot, i, E_CLUSTERDOWN)
        elif kind == "r":
            # a read of a key this connection is still writing elsewhere goes where the
            # write went (messages between two processes keep their order), so a pipeline
            # reads its own writes
            if c.me in live and op[1] not in self.writing:
                self._resolve(slot, i, execute_read(c.table, op))
            else:
                self._remote(slot, i, live[0], ("r", wire_op(op)))
        elif live[0] != c.me:
            self.writing[op[1]] = self.writing.get(op[1], 0) + 1
            self._remote(slot, i, live[0], ("w", wire_op(op)), op[1])
        else:
            # this node is the key's primary: apply, then wait for the live replicas
            reply, rec = execute_write(c.table, op)
            reps = [n for n in pref if n != c.me and n in c.wlive]
            if rec is None or not reps:
                self._resolve(slot, i, reply)
                return
            slot.parts[i] = reply
            ref = pyotp.make_ref()
            for n in reps:
                self.out_puts.setdefault(n, []).append(rec)
            self.put_parts.append((slot, i))

    def _remote(self, slot: _Slot, i: int, node: str, req: Tuple[Any, ...], key: Any = None) -> None:
        ref = pyotp.make_ref()
        self.waits[ref] = (slot, i, "reply", node, key)
        self.cluster.wait([node], self.me, ref)
        self.out_reqs.setdefault(node, []).append((Atom(req[0]), req[1], ref))

    def _done(self, ref: Any, reply: Any) -> None:
        w = self.waits.pop(ref, None)
        if w is not None:
            self.cluster.unwait(w[3], self.me, ref)
            self._unwrite(w[4])
            self._resolve(w[0], w[1], unwire(reply))

    def _send_batches(self) -> None:
        c = self.cluster
        if self.out_puts:
            ref = pyotp.make_ref()
            nodes = set(self.out_puts)
            self.waits[ref] = (None, self.put_parts, "acks", nodes, None)
            c.wait(nodes, self.me, ref)
            for n, recs in self.out_puts.items():
                pyotp.send(("kvstore", n), (_PUT, recs, self.me, ref))
            self.out_puts = {}
            self.put_parts = []
        if self.out_reqs:
            for n, reqs in self.out_reqs.items():
                pyotp.send(("kvstore", n), (_BATCH, reqs, self.me))
            self.out_reqs = {}

    def _unwrite(self, key: Any) -> None:
        if key is not None:
            n = self.writing[key] - 1
            if n:
                self.writing[key] = n
            else:
                del self.writing[key]

    def _acked(self, ref: Any, node: str) -> None:
        w = self.waits.get(ref)
        if w is None:
            return
        w[3].discard(node)
        self.cluster.unwait([node], self.me, ref)
        if not w[3]:
            del self.waits[ref]
            for slot, i in w[1]:
                self._resolve(slot, i, slot.parts[i])

    def _resolve(self, slot: _Slot, i: int, v: Any) -> None:
        slot.parts[i] = v
        slot.need -= 1
        if slot.need == 0:
            slot.value = slot.combine(slot.parts)

    def _flush(self) -> None:
        slots = self.slots
        out = self.out
        while slots and slots[0].need == 0:
            encode_into(out, slots.popleft().value, self.proto)
        if out:
            self.proto_.tr.write(bytes(out))
            del out[:]



def _ready(v: Any) -> _Slot:
    s = _Slot(0, None)
    s.value = v
    return s


def _first(parts: List[Any]) -> Any:
    return parts[0]


class Acceptor(GenServer):
    """Starts a Conn under the connection supervisor for each accepted socket."""

    def init(self, sup: Any) -> Any:
        return ("ok", sup)

    async def handle_info(self, msg: Any, sup: Any) -> Any:
        if type(msg) is tuple and msg[0] == "accept":
            from pyotp import DynamicSupervisor
            proto = msg[1]
            try:
                await DynamicSupervisor.start_child(sup, {
                    "id": "conn", "start": (Conn.start_link, (proto,)), "restart": "temporary"})
            except Exception as e:      # noqa: BLE001  (a refused client, not a dead node)
                _log.warning("kvstore: could not start a connection process: %r", e)
                proto.tr.close()
        return ("noreply", sup)
