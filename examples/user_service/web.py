"""The HTTP layer shared by the user service and the ApiGateway example: uvicorn (ASGI)
running in the pyotp node's own event loop, owned by a supervised process, and a
process per request.

* ``AsgiServer`` is a GenServer that owns a ``uvicorn.Server``: its ``init`` binds the
  socket and starts serving in the node's loop, ``terminate`` closes it. A helper process
  linked to it closes the listening socket and aborts every connection when the server
  process dies, even by ``kill`` (as an Erlang port closes when its owner dies), so a
  supervisor restarting it never finds the port still taken.
* ``in_process(fn, *args)`` runs one request's handler as its own pyotp process: the
  handler can ``GenServer.call`` (it is a process), and a crash in it ends only that
  process: the core logs the crash report, the client gets a 500 JSON error naming a
  request id, and the server keeps serving.
* ``read_body`` reads a request body with a size limit (413 past it), ``json_body``
  decodes it (400 for malformed JSON), ``ApiError`` is any 4xx answer.

>>> pid = await AsgiServer.start_link({"app": app, "port": 0}, name="http")
>>> port = await AsgiServer.port("http")
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
from typing import Any, Awaitable, Callable, Dict, MutableMapping, Optional, Tuple

import pyotp
from pyotp import GenServer

try:
    import uvicorn
except ImportError as e:          # say what to install rather than fail in a child's init
    raise ImportError("the example applications need uvicorn, starlette, argon2-cffi, PyJWT "
                      "and httpx: python -m pip install '.[apps]'") from e

log = logging.getLogger("user_service.web")

#: (status, JSON payload or None, extra headers)
Reply = Tuple[int, Any, Dict[str, str]]

# Runtime.run_process only spawns and awaits the process's exit: no node state of its own
RUNNER = pyotp.Runtime()


class ApiError(Exception):
    """A request refused with a 4xx: ``status``, a short machine-readable ``code`` and a
    human message; the JSON answer is ``{"error": code, "message": message}``.

    >>> raise ApiError(422, "invalid_field", "email must be a string")
    """

    def __init__(self, status: int, code: str, message: str,
                 headers: Optional[Dict[str, str]] = None, **extra: Any) -> None:
        Exception.__init__(self, message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.extra = extra

    def reply(self) -> Reply:
        return (self.status, dict({"error": self.code, "message": self.message}, **self.extra),
                self.headers)


async def read_body(receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                    headers: Dict[str, str], limit: int) -> bytes:
    """Read an ASGI request body of at most ``limit`` bytes: a larger Content-Length is
    refused before reading anything, a body that grows past the limit while streaming
    (chunked) is refused as soon as it does (413). Never buffers more than ``limit``."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 18:
            raise ApiError(400, "bad_request", "malformed Content-Length")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", "request body over %d bytes" % limit)
    parts = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ApiError(400, "bad_request", "client disconnected mid-body")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", "request body over %d bytes" % limit)
        parts.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(parts)


def json_body(body: bytes, content_type: str = "application/json") -> Any:
    """Decode a JSON request body: 415 for another content type, 400 for malformed JSON
    or invalid UTF-8.

    >>> json_body(b'{"a": 1}')
    {'a': 1}
    """
    if content_type and content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "send application/json")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):   # UnicodeDecodeError is a ValueError
        raise ApiError(400, "invalid_json", "the body is not valid JSON")


async def in_process(fn: Callable[..., Awaitable[Reply]], *args: Any, what: str = "request") -> Reply:
    """Run ``fn(*args)`` as a new pyotp process and return its ``(status, payload,
    headers)``. ``ApiError`` raised by ``fn`` becomes its 4xx answer (not a crash); any
    other exception ends that process only, is logged as a crash report by the core, and
    answers 500 with a request id that is also in the log line. A ``pyotp.Exit`` out of
    a call (a server the handler needed is down, restarting, or did not answer in time)
    answers 503 with ``Retry-After``: the client may try again."""
    async def body() -> Reply:
        try:
            return await fn(*args)
        except ApiError as e:
            return e.reply()

    try:
        result: Tuple[int, Any, Dict[str, str]] = await RUNNER.run_process(body)
        return result
    except pyotp.Exit as e:
        log.warning("%s: a server it called is unavailable: %s", what, repr(e.reason)[:300])
        return (503, {"error": "service_unavailable",
                      "message": "a part of the service is restarting; try again"},
                {"Retry-After": "1"})
    except Exception as e:
        rid = secrets.token_hex(8)
        log.error("%s crashed (request id %s): %s: %s", what, rid, type(e).__name__, e)
        return (500, {"error": "internal_error", "message": "the request failed",
                      "request_id": rid}, {})


async def send_json(send: Callable[[Dict[str, Any]], Awaitable[None]], reply: Reply) -> None:
    """Send ``(status, payload, headers)`` as an ASGI JSON response."""
    status, payload, headers = reply
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    raw = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]
    if payload is not None:
        raw.append((b"content-type", b"application/json"))
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _abort_all(server: Any) -> None:
    for s in getattr(server, "servers", []):
        s.close()
    for conn in list(server.server_state.connections):
        transport = getattr(conn, "transport", None)
        if transport is not None:
            transport.abort()


async def _owner_guard(server: Any) -> None:
    """Linked to the AsgiServer process: when it dies for any reason, close its
    listening socket and drop its connections."""
    pyotp.process_flag("trap_exit", True)
    await pyotp.receive(lambda m: type(m) is tuple and m[0] == "EXIT")
    _abort_all(server)


class AsgiServer(GenServer):
    """A supervised uvicorn server for an ASGI ``app``, in the node's own loop.

    ``opts``: ``app`` (required), ``host`` ("127.0.0.1"), ``port`` (0: any free port),
    ``keep_alive`` (seconds an idle keep-alive connection stays open, 5), ``backlog``
    (2048), ``http`` ("auto": uvicorn's httptools parser when installed, else h11),
    ``label`` (for the log line). ``AsgiServer.port(name)`` tells the bound
    port. Stopping it closes the listener and every connection.

    >>> await AsgiServer.start_link({"app": app, "port": 8080}, name="http")
    """

    async def init(self, opts: Dict[str, Any]) -> Any:
        host = opts.get("host", "127.0.0.1")
        port = opts.get("port", 0)
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
        # when the listening socket says TCP; without it, Nagle's algorithm and delayed
        # ACKs hold every keep-alive response's body back by ~40 ms
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            return ("stop", ("listen_failed", host, port, str(e)))
        config = uvicorn.Config(opts["app"], lifespan="off", log_config=None,
                                access_log=False, http=opts.get("http", "h11"), loop="none",
                                timeout_keep_alive=opts.get("keep_alive", 5),
                                backlog=opts.get("backlog", 2048))
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        bound = sock.getsockname()[1]
        pyotp.spawn_link(_owner_guard, server)
        log.info("%s listening on http://%s:%d", opts.get("label", "http"), host, bound)
        return ("ok", {"server": server, "port": bound, "host": host})

    def handle_call(self, req: Any, from_: Any, s: Dict[str, Any]) -> Any:
        if req == "port":
            return ("reply", s["port"], s)
        if req == "stats":
            st = s["server"].server_state
            return ("reply", {"open_connections": len(st.connections),
                              "requests": st.total_requests}, s)
        return ("reply", ("error", ("unknown_call", req)), s)

    def terminate(self, reason: Any, s: Dict[str, Any]) -> Any:
        _abort_all(s["server"])

    @staticmethod
    async def port(name: Any) -> int:
        """The port the named server is bound to."""
        return await GenServer.call(name, "port")  # type: ignore[no-any-return]

    @staticmethod
    async def stats(name: Any) -> Dict[str, int]:
        """``{"open_connections", "requests"}`` (requests: served since start)."""
        return await GenServer.call(name, "stats")  # type: ignore[no-any-return]
