"""The editor's HTTP/WebSocket server: Starlette on uvicorn, with a pyotp node hosted in
the same asyncio loop (``pyotp.Runtime``).

Every open WebSocket gets a *session* process (``session``): the socket's reader task
only forwards frames into the session's mailbox, and the session is the one that talks
to the document process (local or on another node), to the other sessions (presence,
through PubSub) and writes to the socket. A session that receives bad input sends
``{"type": "error", "message": ...}`` and closes its own socket (code 4400, or 4413 for
a message over ``MAX_MESSAGE`` bytes); nothing else is affected. When the document's
process goes away (its node died, it crashed) the session closes the socket with code
4001, and the page reconnects and rejoins from its last revision.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pyotp
from pyotp import GenServer
from pyotp.pubsub import PubSub

from . import document
from .ot import OTError, validate

_log = logging.getLogger("examples.editor")

PUBSUB = "EditorPubSub"
MAX_MESSAGE = 256 * 1024          # bytes (or characters) in one WebSocket message
STATIC = Path(__file__).resolve().parent / "static"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")

CLOSE_BAD_INPUT = 4400
CLOSE_TOO_LARGE = 4413
CLOSE_MOVED = 4001


@dataclass
class Config:
    """How one editor node runs (see ``python -m examples.editor --help``)."""
    db: str = "editor.db"
    host: str = "127.0.0.1"
    port: int = 8000
    node: Optional[str] = None              # "name@host": distributed when given
    cookie: str = "editor"
    connect: List[str] = field(default_factory=list)   # other nodes to join
    peers: List[str] = field(default_factory=list)     # other nodes' http://host:port


class BadInput(Exception):
    """A message from the page that is not part of the protocol."""


def _topic(doc_id: str) -> str:
    return "doc:" + doc_id


def _parse(raw: Any) -> Dict[str, Any]:
    if type(raw) is not str:
        raise BadInput("binary frames are not part of the protocol")
    try:
        msg = json.loads(raw)
    except ValueError:
        raise BadInput("invalid JSON") from None
    except RecursionError:
        raise BadInput("JSON nested too deeply") from None
    if type(msg) is not dict or type(msg.get("type")) is not str:
        raise BadInput("a message must be a JSON object with a \"type\"")
    return msg


def _int(msg: Dict[str, Any], key: str, nullable: bool = False) -> Any:
    v = msg.get(key)
    if v is None and nullable:
        return None
    if type(v) is not int or v < 0 or v > 2 ** 53:
        raise BadInput("%r must be a non-negative integer" % key)
    return v


class _Session:
    """The state of one session process (one socket)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.doc_id: Optional[str] = None
        self.doc: Any = None
        self.doc_ref: Any = None
        self.client = ""
        self.name = ""
        self.pos = 0
        self.peers: Dict[Any, Dict[str, Any]] = {}    # session pid -> presence
        self.closed = False

    async def send(self, obj: Dict[str, Any]) -> None:
        from starlette.websockets import WebSocketDisconnect
        try:
            await self.ws.send_text(json.dumps(obj))
        except WebSocketDisconnect:
            # the page went away while we pushed to it (a peer's presence or DOWN raced
            # its "ws_closed"): the session ends, it does not crash
            self.closed = True

    async def close(self, code: int, message: str) -> None:
        if not self.closed:
            self.closed = True
            try:
                if code != CLOSE_MOVED:
                    await self.send({"type": "error", "message": message})
                await self.ws.close(code, message[:120])
            except Exception:           # the peer is already gone
                pass

    def presence(self) -> Tuple[Any, ...]:
        return ("presence", pyotp.self(), self.client, self.name, self.pos, pyotp.local_node())

    async def push_peers(self) -> None:
        await self.send({"type": "presence", "peers": sorted(self.peers.values(), key=lambda p: p["client"])})

    async def on_frame(self, raw: Any) -> None:
        msg = _parse(raw)
        kind = msg["type"]
        if kind == "join":
            await self.join(msg)
            return
        if self.doc_id is None:
            raise BadInput("not joined to a document: send a \"join\" first")
        if msg.get("doc") != self.doc_id:
            raise BadInput("unknown document %.70r (this socket edits %r)" % (msg.get("doc"), self.doc_id))
        if kind == "op":
            seq, rev = _int(msg, "seq"), _int(msg, "rev")
            try:
                ops = validate(msg.get("ops"))
            except OTError as e:
                raise BadInput(str(e)) from None
            GenServer.cast(self.doc, ("op", pyotp.self(), self.client, seq, rev, ops))
        elif kind == "cursor":
            self.pos = _int(msg, "pos")
            PubSub.broadcast_from(PUBSUB, pyotp.self(), _topic(self.doc_id), self.presence())
        else:
            raise BadInput("unknown message type %.40r" % kind)

    async def join(self, msg: Dict[str, Any]) -> None:
        if self.doc_id is not None:
            raise BadInput("this socket already joined %r" % self.doc_id)
        doc_id, client, name = msg.get("doc"), msg.get("client"), msg.get("name")
        if type(doc_id) is not str or not _ID.match(doc_id):
            raise BadInput("bad document id (letters, digits, - and _, at most 64)")
        if type(client) is not str or not _ID.match(client):
            raise BadInput("bad client id")
        if type(name) is not str or not 0 < len(name) <= 40:
            raise BadInput("bad name (1 to 40 characters)")
        rev = _int(msg, "rev", nullable=True)
        self.client, self.name = client, name
        self.doc = await document.open_document(doc_id)
        self.doc_ref = pyotp.monitor(self.doc)
        try:
            answer = await GenServer.call(self.doc, ("join", pyotp.self(), client, rev))
        except pyotp.Exit:
            await self.close(CLOSE_MOVED, "document restarting")
            return
        self.doc_id = doc_id
        node = pyotp.local_node()
        if answer[0] == "snapshot":
            await self.send({"type": "snapshot", "text": answer[1], "rev": answer[2], "node": node})
        else:
            await self.send({"type": "catchup", "node": node, "ops": [
                {"rev": r, "client": c, "seq": s, "ops": o} for r, c, s, o in answer[1]]})
        PubSub.subscribe(PUBSUB, _topic(doc_id))
        PubSub.broadcast_from(PUBSUB, pyotp.self(), _topic(doc_id), ("hello",) + self.presence()[1:])

    async def on_message(self, msg: Any) -> None:
        tag = msg[0]
        if tag == "doc_op":
            await self.send({"type": "op", "rev": msg[1], "client": msg[2], "seq": msg[3], "ops": msg[4]})
        elif tag == "doc_ack":
            await self.send({"type": "ack", "rev": msg[1], "seq": msg[2]})
        elif tag == "doc_error":
            raise BadInput(msg[1])
        elif tag in ("presence", "hello"):
            _, pid, client, name, pos, node = msg
            if pid == pyotp.self():
                return                  # our own broadcast, echoed back by another node
            if pid not in self.peers:
                pyotp.monitor(pid)
            self.peers[pid] = {"client": client, "name": name, "pos": pos, "node": node}
            if tag == "hello":       # a newcomer: tell it who we are
                pyotp.send(pid, self.presence())
            await self.push_peers()
        elif tag == "DOWN":
            if msg[1] == self.doc_ref:
                await self.close(CLOSE_MOVED, "document moved: reconnect")
            elif self.peers.pop(msg[3], None) is not None:
                await self.push_peers()


async def session(ws: Any) -> None:
    """The process behind one WebSocket (see the module doc)."""
    s = _Session(ws)
    try:
        while not s.closed:
            msg = await pyotp.receive()
            if msg[0] == "ws":
                if msg[1] is None:
                    raise BadInput("message larger than %d bytes" % MAX_MESSAGE)
                await s.on_frame(msg[1])
            elif msg[0] == "ws_closed":
                s.closed = True
            else:
                await s.on_message(msg)
    except BadInput as e:
        _log.info("closing a socket on bad input: %s", e)
        await s.close(CLOSE_TOO_LARGE if str(e).startswith("message larger") else CLOSE_BAD_INPUT, str(e))


# ---------------------------------------------------------------------------- the node

class EditorNode:
    """The pyotp side of one editor node: started by the app's lifespan."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rt: Optional[pyotp.Runtime] = None

    async def start(self) -> None:
        self.rt = pyotp.Runtime()
        await self.rt.__aenter__()
        ready: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self.root = self.rt.spawn(self._root, ready)
        await ready

    async def _root(self, ready: "asyncio.Future[None]") -> None:
        # the processes started here are linked to this one, which lives as long as the node
        try:
            cfg = self.cfg
            if cfg.node:
                from pyotp.dist import Node
                await Node.start(cfg.node, cookie=cfg.cookie, python_payloads=True)
            await PubSub.start_link(name=PUBSUB)
            await document.start_supervisor(cfg.db)
            if cfg.node:
                from pyotp.dist import Node
                for other in cfg.connect:
                    await Node.connect(other)
        except BaseException as e:
            ready.set_exception(e)
            raise
        ready.set_result(None)
        done = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "stop")
        # documents first (they write to SQLite in terminate), in supervision order
        await GenServer.stop(document.SUPERVISOR, "shutdown")
        if cfg.node:
            from pyotp.dist import Node
            await Node.stop()
        done[1].set_result(None)

    async def stop(self) -> None:
        if self.rt is not None:
            done: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
            pyotp.send(self.root, ("stop", done))
            try:
                await asyncio.wait_for(done, 10.0)
            finally:
                await self.rt.shutdown()

    async def doc_text(self, doc_id: str) -> Dict[str, Any]:
        """The authoritative text of a document (its process's, or the stored one)."""
        async def ask() -> Dict[str, Any]:
            pid = document.find(doc_id)
            if pid is not None:
                try:
                    text, rev = await GenServer.call(pid, ("text",))
                    node = await GenServer.call(pid, ("where",))
                    return {"text": text, "rev": rev, "node": node, "open": True}
                except pyotp.Exit:
                    pass
            store = document.Store(self.cfg.db)
            try:
                text, rev, _ = store.load(doc_id)
            finally:
                store.close()
            return {"text": text, "rev": rev, "node": None, "open": False}
        assert self.rt is not None
        snapshot: Dict[str, Any] = await self.rt.run_process(ask)
        return snapshot

    def health(self) -> Dict[str, Any]:
        nodes: List[str] = []
        if self.cfg.node:
            from pyotp.dist import Node
            nodes = sorted(Node.list())
        return {"node": pyotp.local_node(), "nodes": nodes}


def create_app(cfg: Config) -> Any:
    """The Starlette application for one node.

    >>> app = create_app(Config(db=":memory:"))
    """
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    node = EditorNode(cfg)
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    script = (STATIC / "editor.js").read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    async def index(request: Any) -> Any:
        return RedirectResponse("/doc/welcome")

    async def doc_page(request: Any) -> Any:
        doc_id = request.path_params["doc"]
        if not _ID.match(doc_id):
            return JSONResponse({"error": "bad document id"}, status_code=404)
        conf = {"doc": doc_id, "peers": cfg.peers, "node": pyotp.local_node()}
        return HTMLResponse(page.replace("__CONFIG__", json.dumps(conf).replace("<", "\\u003c")))

    async def js(request: Any) -> Any:
        return Response(script, media_type="text/javascript")

    async def api_doc(request: Any) -> Any:
        doc_id = request.path_params["doc"]
        if not _ID.match(doc_id):
            return JSONResponse({"error": "bad document id"}, status_code=404)
        return JSONResponse(await node.doc_text(doc_id))

    async def api_health(request: Any) -> Any:
        return JSONResponse(node.health())

    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        pid = pyotp.spawn(session, ws)
        try:
            while pyotp.is_alive(pid):
                m = await ws.receive()
                if m["type"] == "websocket.disconnect":
                    break
                data = m.get("text")
                if data is None:
                    data = m.get("bytes") or b""
                pyotp.send(pid, ("ws", None if len(data) > MAX_MESSAGE else data))
        except (WebSocketDisconnect, RuntimeError):
            pass                        # closed by the session or by the page
        finally:
            pyotp.send(pid, ("ws_closed",))

    return Starlette(routes=[
        Route("/", index), Route("/doc/{doc}", doc_page), Route("/editor.js", js),
        Route("/api/doc/{doc}", api_doc), Route("/api/health", api_health),
        WebSocketRoute("/ws", ws_endpoint),
    ], lifespan=lifespan)


def serve(cfg: Config) -> None:
    """Run one node until interrupted (uvicorn handles SIGINT/SIGTERM)."""
    import uvicorn
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level="warning",
                ws="websockets-sansio", ws_max_size=4 * MAX_MESSAGE, lifespan="on")
