"""The document side: one ``Document`` GenServer per open document, started on demand
under ``DocumentSupervisor`` (a DynamicSupervisor) and found by name; the text and its
operations are kept in SQLite (``Store``) so that a document restarted anywhere, after
a crash or on another node, goes on from where it was.

Names: on a node without distribution a document is
``("via", Registry, ("EditorDocs", doc_id))``; on a distributed node it is also
registered cluster-wide as ``("global", "editor_doc:" + doc_id)``, so every node finds
the one process holding it, wherever it runs. Two nodes may open a document in the same
instant; the second registration is refused, that process stops, and the opener uses
the winner.

Protocol (what a session process, ``server.Session``, sends):

* ``call ("join", session_pid, client_id, rev_or_None)`` ->
  ``("snapshot", text, rev)``, or ``("catchup", [(rev, client, seq, ops), ...])`` when
  the session asks to go on from revision ``rev`` (a page that reconnects); the
  document then monitors the session and sends it, in order:
* ``("doc_op", rev, client, seq, ops)`` for every operation applied from another client,
  ``("doc_ack", rev, seq)`` for its own, ``("doc_error", text)`` when its operation does
  not fit the document (the session closes that socket);
* ``cast ("op", session_pid, client_id, seq, rev, ops)``: an operation made on revision
  ``rev``. It is transformed over what was applied since, written to SQLite, and only then
  acknowledged and broadcast: what a page has seen acknowledged survives a crash.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any, Dict, List, Optional, Tuple

import pyotp
from pyotp import GenServer, StartError
from pyotp.dynamic_supervisor import DynamicSupervisor
from pyotp.registry import Registry

from .ot import History, OTError

_log = logging.getLogger("examples.editor")

REGISTRY = "EditorDocs"
SUPERVISOR = "EditorDocSupervisor"
KEEP_OPS = 1000          # operations kept in memory for transforms and catch-up
IDLE_STOP = 30.0         # seconds a document with no editor stays open


class Store:
    """The SQLite file shared by every node of one editor (WAL mode, so one writer and
    many readers; each document process has its own connection).

    >>> s = Store(":memory:")
    >>> s.load("notes")
    ('', 0, [])
    >>> s.append("notes", 1, "c1", 1, [["i", 0, "hi"]], "hi")
    >>> s.load("notes")
    ('hi', 1, [(1, 'c1', 1, [['i', 0, 'hi']])])
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS docs (id TEXT PRIMARY KEY, text TEXT NOT NULL,"
                        " rev INTEGER NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS ops (doc TEXT NOT NULL, rev INTEGER NOT NULL,"
                        " client TEXT NOT NULL, seq INTEGER NOT NULL, ops TEXT NOT NULL,"
                        " PRIMARY KEY (doc, rev))")

    def load(self, doc: str, keep: int = KEEP_OPS) -> Tuple[str, int, List[Tuple[int, str, int, Any]]]:
        """``(text, rev, last operations as (rev, client, seq, ops))``."""
        row = self.db.execute("SELECT text, rev FROM docs WHERE id = ?", (doc,)).fetchone()
        if row is None:
            return "", 0, []
        rows = self.db.execute("SELECT rev, client, seq, ops FROM ops WHERE doc = ? AND rev <= ?"
                               " ORDER BY rev DESC LIMIT ?", (doc, row[1], keep)).fetchall()
        ops = [(r, c, s, json.loads(o)) for r, c, s, o in reversed(rows)]
        # keep only an unbroken run ending at rev (older rows may have been pruned)
        while ops and ops[0][0] != row[1] - len(ops) + 1:
            ops.pop(0)
        return row[0], row[1], ops

    def append(self, doc: str, rev: int, client: str, seq: int, ops: Any, text: str) -> None:
        """Record operation ``rev`` and the text after it, in one transaction. The
        ``(doc, rev)`` key fences a stale writer: if another process already wrote this
        revision, ``sqlite3.IntegrityError`` is raised and nothing changes."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO ops VALUES (?, ?, ?, ?, ?)",
                            (doc, rev, client, seq, json.dumps(ops)))
            self.db.execute("INSERT INTO docs VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                            " text = excluded.text, rev = excluded.rev", (doc, text, rev))

    def close(self) -> None:
        self.db.close()


def via(doc_id: str) -> Tuple[str, Any, Tuple[str, str]]:
    """The local name of a document's process."""
    return ("via", Registry, (REGISTRY, doc_id))


def global_name(doc_id: str) -> str:
    return "editor_doc:" + doc_id


def _distributed() -> bool:
    return pyotp.local_node() != "nonode@nohost"


class Document(GenServer):
    """The authoritative copy of one document (see the module doc for its protocol)."""

    @classmethod
    async def start_link(cls, db_path: str, doc_id: str) -> Any:  # type: ignore[override]
        return await super().start_link((db_path, doc_id), name=via(doc_id))

    def init(self, arg: Tuple[str, str]) -> Any:
        db_path, doc_id = arg
        if _distributed():
            from pyotp.dist import global_names
            if global_names.register_name(global_name(doc_id), pyotp.self()) != "yes":
                return ("stop", ("already_started", global_names.whereis_name(global_name(doc_id))))
        store = Store(db_path)
        text, rev, rows = store.load(doc_id)
        st = {"id": doc_id, "store": store, "meta": [(c, s) for _, c, s, _ in rows],
              "hist": History(text, rev, [o for _, _, _, o in rows]),
              "sessions": {}, "idle": None}
        _log.info("document %s open on %s at revision %d", doc_id, pyotp.local_node(), rev)
        self._arm_idle(st)
        return ("ok", st)

    def _arm_idle(self, st: Dict[str, Any]) -> None:
        if st["idle"] is not None:
            pyotp.cancel_timer(st["idle"])
            st["idle"] = None
        if not st["sessions"]:
            st["idle"] = pyotp.send_after(pyotp.self(), "idle", IDLE_STOP)

    def handle_call(self, req: Any, from_: Any, st: Dict[str, Any]) -> Any:
        if req[0] == "join":
            _, pid, client, rev = req
            if pid not in st["sessions"]:
                st["sessions"][pid] = (client, pyotp.monitor(pid))
                self._arm_idle(st)
            hist: History = st["hist"]
            if rev is not None:
                try:
                    ops = hist.since(rev)
                except OTError:
                    pass
                else:
                    first = hist.rev - len(ops) + 1
                    meta = st["meta"][len(st["meta"]) - len(ops):] if ops else []
                    return ("reply", ("catchup", [(first + k, c, s, o) for k, ((c, s), o)
                                                  in enumerate(zip(meta, ops))]), st)
            return ("reply", ("snapshot", hist.text, hist.rev), st)
        if req[0] == "text":
            return ("reply", (st["hist"].text, st["hist"].rev), st)
        if req[0] == "where":
            return ("reply", pyotp.local_node(), st)
        return ("reply", ("error", ("unknown_request", req[0])), st)

    def handle_cast(self, req: Any, st: Dict[str, Any]) -> Any:
        if req[0] == "op":
            _, pid, client, seq, rev, ops = req
            hist: History = st["hist"]
            try:
                ops = hist.transformed(rev, ops)
            except OTError as e:
                pyotp.send(pid, ("doc_error", str(e)))
                return ("noreply", st)
            hist.push(ops, KEEP_OPS)
            try:
                st["store"].append(st["id"], hist.rev, client, seq, ops, hist.text)
            except sqlite3.IntegrityError:
                # another process wrote this revision: this copy is stale, let a fresh
                # one load the document (the sessions see this one exit and rejoin)
                return ("stop", ("fenced", st["id"], hist.rev), st)
            st["meta"].append((client, seq))
            if len(st["meta"]) > KEEP_OPS:
                del st["meta"][: len(st["meta"]) - KEEP_OPS]
            for spid in st["sessions"]:
                if spid == pid:
                    pyotp.send(spid, ("doc_ack", hist.rev, seq))
                else:
                    pyotp.send(spid, ("doc_op", hist.rev, client, seq, ops))
        return ("noreply", st)

    def handle_info(self, msg: Any, st: Dict[str, Any]) -> Any:
        if type(msg) is tuple and msg[0] == "DOWN":
            if st["sessions"].pop(msg[3], None) is not None:
                self._arm_idle(st)
        elif msg == "idle" and not st["sessions"]:
            return ("stop", "normal", st)
        return ("noreply", st)

    def terminate(self, reason: Any, st: Dict[str, Any]) -> Any:
        st["store"].close()


async def start_supervisor(db_path: str) -> Any:
    """The registry naming documents and the supervisor starting them."""
    await Registry.start_link(keys="unique", name=REGISTRY)
    return await DynamicSupervisor.start_link(name=SUPERVISOR, extra_arguments=[db_path])


def find(doc_id: str) -> Optional[Any]:
    """The pid holding ``doc_id`` (on any node), or None."""
    if _distributed():
        from pyotp.dist import global_names
        pid = global_names.whereis_name(global_name(doc_id))
        if pid is not None:
            return pid
    return GenServer.whereis(via(doc_id))


async def open_document(doc_id: str) -> Any:
    """The pid of the document's process, starting it on this node if nobody holds it."""
    for _ in range(5):
        pid = find(doc_id)
        if pid is not None:
            return pid
        try:
            return await DynamicSupervisor.start_child(
                SUPERVISOR, {"id": doc_id, "start": (Document.start_link, (doc_id,)),
                             "restart": "transient"})
        except StartError as e:            # opened elsewhere just before us
            r = e.reason
            if type(r) is tuple and r[0] == "already_started" and r[1] is not None:
                return r[1]
    raise RuntimeError("cannot open document %r" % (doc_id,))
