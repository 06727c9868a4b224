"""The ApiGateway: real HTTP on loopback, routed by path prefix to three backend services
that run as processes, each protected by its own CircuitBreaker.

    python examples/api_gateway.py            # start, drive itself, print, stop
    python examples/api_gateway.py --serve    # start on 127.0.0.1 and serve until Ctrl-C
    python examples/api_gateway.py --serve --port 8080

The supervision tree (``ApiGateway``, strategy ``rest_for_one``: a child restarts with
everything started after it, because those depend on it)::

    ApiGateway (Supervisor, rest_for_one)
    ├── GatewayRegistry   Registry (unique): names every backend and breaker
    ├── GatewayEvents     EventManager: the breakers' state changes
    ├── breaker_log       installs BreakerLog in GatewayEvents (then "ignore")
    ├── GatewayBackends   Supervisor (one_for_one): Backend "users", "orders", "inventory"
    ├── GatewayBreakers   Supervisor (one_for_one): one CircuitBreaker per backend
    └── GatewayListener   HttpListener: owns the asyncio server, one process per connection

A request's way: the listener's asyncio server accepts a connection and sends it to the
listener process, which spawns (and links) a connection process. That process parses
HTTP/1.1 requests (keep-alive and pipelining, ``parse_head``), and calls ``route`` for each:

=================================  ========================================================
request                            answer
=================================  ========================================================
``GET /health``                    200, JSON ``{"status": "ok"|"degraded", "breakers":
                                   {"users": "closed", ...}}``
``POST /admin/fail/<svc>``         200; the backend fails from now on (``?mode=slow``: it
                                   answers too late instead of with an error)
``POST /admin/recover/<svc>``      200; the backend works again
``/users...``, ``/orders...``,     through the service's CircuitBreaker to its Backend:
``/inventory...``                  the backend's status (200, 201, 404, 405) and JSON;
                                   502 when the backend failed (``("error", _)``, or it
                                   crashed), 504 when it did not answer within
                                   ``call_timeout``, 503 (with ``Retry-After``) when the
                                   breaker is open: the backend is not even asked
anything else                      404; a malformed request 400 (then the connection
                                   closes), 413 / 431 for a too large body / head, 501 for
                                   ``Transfer-Encoding``, 505 for another HTTP version
=================================  ========================================================

Each breaker publishes ``("circuit_breaker", name, old, new)`` to ``GatewayEvents``;
``ForwardEvents`` relays them to a process as ``("breaker", service, old, new)`` (the
example and its tests wait for state changes that way, never by sleeping).

Only the standard library is used for HTTP (asyncio streams). ``main`` returns a summary
(the tests check it).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import sys
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import parse_qs, unquote

try:
    import pyotp
except ImportError:  # running from a source checkout: python examples/api_gateway.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import pyotp

from pyotp import Exit, GenServer
from pyotp.circuit_breaker import CircuitBreaker, CircuitOpenError
from pyotp.gen_event import EventHandler, EventManager
from pyotp.registry import Registry
from pyotp.supervisor import Supervisor

log = logging.getLogger("api_gateway")

SERVICES: Tuple[str, ...] = ("users", "orders", "inventory")
REGISTRY = "GatewayRegistry"
EVENTS = "GatewayEvents"
LISTENER = "GatewayListener"
BACKENDS = "GatewayBackends"
BREAKERS = "GatewayBreakers"

MAX_HEAD = 16 * 1024          # request line + headers, bytes
MAX_BODY = 64 * 1024          # request body, bytes


# =========================================================================================
# Configuration

@dataclass
class GatewayConfig:
    """How to run the gateway. Durations are seconds.

    >>> GatewayConfig(port=0, reset_timeout=0.05).failure_threshold
    3
    """
    host: str = "127.0.0.1"
    port: int = 0                       # 0: the OS picks a free port (ApiGateway.port())
    failure_threshold: int = 3          # consecutive failures that open a breaker
    reset_timeout: float = 1.0          # open -> half_open after this long
    half_open_max_calls: int = 1        # trial calls let through while half-open
    call_timeout: float = 1.0           # a backend answering later is a failure (504)
    idle_timeout: float = 15.0          # a keep-alive connection idle this long is closed
    slow_delay: Optional[float] = None  # how late a "slow" backend answers (None: 2 x call_timeout)
    #: per service, the records a backend starts with (id -> record)
    seed: Dict[str, Dict[str, Dict[str, Any]]] = field(default_factory=lambda: {
        "users": {"1": {"id": "1", "name": "Ada"}, "2": {"id": "2", "name": "Grace"}},
        "orders": {"100": {"id": "100", "user": "1", "sku": "widget", "qty": 2}},
        "inventory": {"widget": {"id": "widget", "stock": 10},
                      "gadget": {"id": "gadget", "stock": 0}},
    })

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError("GatewayConfig port must be an int in 0..65535, got %r" % (self.port,))
        if self.slow_delay is None:
            self.slow_delay = 2 * self.call_timeout if isinstance(self.call_timeout, (int, float)) else 0
        for key in ("reset_timeout", "call_timeout", "idle_timeout", "slow_delay"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError("GatewayConfig %s must be seconds >= 0, got %r" % (key, v))
        if set(self.seed) - set(SERVICES):
            raise ValueError("GatewayConfig seed names unknown services: %r"
                             % sorted(set(self.seed) - set(SERVICES)))


def backend_name(service: str) -> Tuple[str, Any, Tuple[str, Tuple[str, str]]]:
    """The via name of a service's Backend process."""
    return ("via", Registry, (REGISTRY, ("backend", service)))


def breaker_name(service: str) -> Tuple[str, Any, Tuple[str, Tuple[str, str]]]:
    """The via name of a service's CircuitBreaker."""
    return ("via", Registry, (REGISTRY, ("breaker", service)))


def service_of(name: Any) -> Any:
    """The service a breaker name belongs to (the name itself if it is not one of ours).

    >>> service_of(breaker_name("orders"))
    'orders'
    """
    if type(name) is tuple and len(name) == 3 and name[0] == "via" and name[1] is Registry:
        reg, key = name[2]
        if reg == REGISTRY and type(key) is tuple and key[0] == "breaker":
            return key[1]
    return name


# =========================================================================================
# The backends: one GenServer per service

class Backend(GenServer):
    """A backend service: a small in-memory resource store (``GET /<svc>``, ``GET
    /<svc>/<id>``, ``POST /<svc>`` with a JSON object). It answers ``("ok", status,
    payload)``, or, while told to fail, ``("error", "simulated_failure")`` (mode
    ``"error"``) or nothing in time (mode ``"slow"``: the reply is sent ``slow_delay``
    seconds late, after the caller gave up). It counts every request that reaches it.

    >>> await GenServer.call(backend_name("users"), ("http", "GET", ["1"], {}, None))
    ('ok', 200, {'id': '1', 'name': 'Ada'})
    """

    def init(self, opts: Dict[str, Any]) -> Any:
        items = {k: dict(v) for k, v in opts.get("seed", {}).items()}
        return ("ok", {"service": opts["service"], "items": items, "next_id": 1000,
                       "failing": None, "slow_delay": opts.get("slow_delay", 0.0),
                       "calls": 0, "ok": 0, "failed": 0})

    def handle_call(self, req: Any, from_: Any, s: Dict[str, Any]) -> Any:
        match req:
            case ("http", method, segments, query, body):
                s["calls"] += 1
                if s["failing"] == "error":
                    s["failed"] += 1
                    return ("reply", ("error", "simulated_failure"), s)
                if s["failing"] == "slow":
                    s["failed"] += 1
                    pyotp.send_after(pyotp.self(), ("late_reply", from_), s["slow_delay"])
                    return ("noreply", s)
                s["ok"] += 1
                return ("reply", self._serve(s, method, segments, query, body), s)
            case ("fail", mode) if mode in ("error", "slow"):
                s["failing"] = mode
                return ("reply", "ok", s)
            case "recover":
                s["failing"] = None
                return ("reply", "ok", s)
            case "stats":
                return ("reply", {k: s[k] for k in ("calls", "ok", "failed", "failing")}, s)
        return ("reply", ("error", ("unknown_request", req)), s)

    def handle_info(self, msg: Any, s: Dict[str, Any]) -> Any:
        if type(msg) is tuple and msg[0] == "late_reply":
            GenServer.reply(msg[1], ("ok", 200, {"late": True}))
        return ("noreply", s)

    @staticmethod
    def _serve(s: Dict[str, Any], method: str, segments: List[str], query: Dict[str, Any],
               body: Any) -> Tuple[str, int, Any]:
        items = s["items"]
        if method == "GET" and not segments:
            return ("ok", 200, {s["service"]: [items[k] for k in sorted(items)]})
        if method == "GET" and len(segments) == 1:
            item = items.get(segments[0])
            if item is None:
                return ("ok", 404, {"error": "not_found", "id": segments[0]})
            return ("ok", 200, item)
        if method == "POST" and not segments:
            if not isinstance(body, dict):
                return ("ok", 422, {"error": "expected a JSON object"})
            new_id = str(body.get("id") or s["next_id"])
            s["next_id"] += 1
            if new_id in items:
                return ("ok", 409, {"error": "exists", "id": new_id})
            items[new_id] = dict(body, id=new_id)
            return ("ok", 201, items[new_id])
        return ("ok", 405, {"error": "method_not_allowed", "method": method})


class Backends:
    """Direct control of the backends (what ``/admin/...`` calls)."""

    @staticmethod
    async def fail(service: str, mode: str = "error") -> str:
        """Make ``service`` fail: ``mode`` "error" (answers ``("error", _)``) or "slow"
        (answers after the call timeout).

        >>> await Backends.fail("orders")
        'ok'
        """
        if mode not in ("error", "slow"):
            raise ValueError("failure mode must be 'error' or 'slow', got %r" % (mode,))
        return await GenServer.call(backend_name(_known(service)), ("fail", mode))  # type: ignore[no-any-return]

    @staticmethod
    async def recover(service: str) -> str:
        """Make ``service`` work again.

        >>> await Backends.recover("orders")
        'ok'
        """
        return await GenServer.call(backend_name(_known(service)), "recover")  # type: ignore[no-any-return]

    @staticmethod
    async def stats(service: str) -> Dict[str, Any]:
        """``{"calls", "ok", "failed", "failing"}``: ``calls`` counts every request that
        reached the backend.

        >>> (await Backends.stats("users"))["calls"]
        0
        """
        return await GenServer.call(backend_name(_known(service)), "stats")  # type: ignore[no-any-return]


def _known(service: str) -> str:
    if service not in SERVICES:
        raise ValueError("unknown service %r (known: %s)" % (service, ", ".join(SERVICES)))
    return service


# =========================================================================================
# Breaker events

class BreakerLog(EventHandler):
    """Logs every breaker state change (logger ``api_gateway``) and remembers the last
    50: ``await EventManager.call(EVENTS, BreakerLog, "recent")``."""

    def init(self, _args: Any) -> Any:
        return ("ok", [])

    def handle_event(self, event: Any, recent: List[Any]) -> Any:
        if type(event) is tuple and len(event) == 4 and event[0] == "circuit_breaker":
            _, name, old, new = event
            log.log(logging.WARNING if new == "open" else logging.INFO,
                    "circuit %s: %s -> %s", service_of(name), old, new)
            recent = (recent + [(service_of(name), old, new)])[-50:]
        return ("ok", recent)

    def handle_call(self, request: Any, recent: List[Any]) -> Any:
        return ("ok", list(recent), recent)


class ForwardEvents(EventHandler):
    """Sends every gateway event to a process: breaker changes as ``("breaker",
    service, old, new)``, anything else as ``("gateway_event", event)``. Install it with
    ``await ForwardEvents.attach()`` (supervised by the caller: removed when it exits).

    >>> await ForwardEvents.attach()
    >>> await pyotp.receive(lambda m: m == ("breaker", "orders", "closed", "open"))
    """

    @staticmethod
    async def attach(pid: Any = None) -> Any:
        """Forward to ``pid`` (default: the calling process)."""
        pid = pyotp.self() if pid is None else pid
        return await EventManager.add_sup_handler(EVENTS, (ForwardEvents, pid), pid)

    def init(self, pid: Any) -> Any:
        return ("ok", pid)

    def handle_event(self, event: Any, pid: Any) -> Any:
        if type(event) is tuple and len(event) == 4 and event[0] == "circuit_breaker":
            pyotp.send(pid, ("breaker", service_of(event[1]), event[2], event[3]))
        else:
            pyotp.send(pid, ("gateway_event", event))
        return ("ok", pid)


async def sync_events() -> List[Tuple[str, str, str, str]]:
    """Take every ``("breaker", ...)`` message up to now from the calling process's
    mailbox (it must have ``ForwardEvents.attach()``-ed) and return them in order.

    "Up to now" is exact: a ``("sync", ref)`` marker goes through the event manager
    after every event published before this call, and events reach the caller in the
    order the manager handled them.
    """
    ref = pyotp.make_ref()
    marker = ("gateway_event", ("sync", ref))
    await EventManager.sync_notify(EVENTS, ("sync", ref))
    taken: List[Tuple[str, str, str, str]] = []
    while True:
        m = await pyotp.receive(lambda m: m == marker or (type(m) is tuple and len(m) == 4
                                                          and m[0] == "breaker"), timeout=5.0)
        if m == marker:
            return taken
        taken.append(m)


async def settled_state(service: str) -> Tuple[str, List[Tuple[str, str, str, str]]]:
    """The state of ``service``'s breaker as of the last event taken from the mailbox,
    and the events taken (``sync_events``). After it returns, every ``("breaker", ...)``
    message still to come is a change *from* the returned state, so a caller can wait for
    the next one without ever matching a stale event.

    >>> state, events = await settled_state("orders")
    """
    state = await CircuitBreaker.state(breaker_name(service))
    # every change made before that reply was published before our marker
    events = await sync_events()
    mine = [e for e in events if e[1] == service]
    return (mine[-1][3] if mine else state), events


async def _install_breaker_log() -> None:
    """A child that only installs BreakerLog in GatewayEvents, then is "ignore"d: with
    rest_for_one it runs again whenever the event manager restarts."""
    await EventManager.add_handler(EVENTS, BreakerLog, None)
    return None


# =========================================================================================
# HTTP/1.1: parsing requests, writing responses

class HttpError(Exception):
    """A request the gateway refuses before routing it; ``status`` is the answer."""

    def __init__(self, status: int, message: str) -> None:
        Exception.__init__(self, message)
        self.status = status
        self.message = message


@dataclass
class Request:
    """One parsed request. ``headers`` has lower-case names; ``body`` is bytes."""
    method: str
    target: str
    version: str
    headers: Dict[str, str]
    path: str = "/"
    segments: List[str] = field(default_factory=list)
    query: Dict[str, List[str]] = field(default_factory=dict)
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless ``Connection: close``; HTTP/1.0 closes it
        unless ``Connection: keep-alive``."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(r"^HTTP/(\d)\.(\d)$")
_FIELD_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")


def parse_head(head: bytes) -> Request:
    """Parse a request line and header fields (``head`` ends with ``\\r\\n\\r\\n``, as
    ``StreamReader.readuntil`` hands it over). Raises ``HttpError`` (400, or 505 for an
    HTTP version other than 1.0 / 1.1, 501 for a Transfer-Encoding).

    >>> r = parse_head(b"GET /users/1?x=2 HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")
    >>> (r.method, r.segments, r.query)
    ('GET', ['users', '1'], {'x': ['2']})
    """
    if not head.endswith(b"\r\n\r\n"):
        raise HttpError(400, "request head not terminated by CRLF CRLF")
    try:
        text = head[:-4].decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
        raise HttpError(400, "undecodable request head")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line %r" % lines[0][:100])
    method, target, version = parts
    if not _TOKEN.match(method):
        raise HttpError(400, "malformed method %r" % method[:50])
    v = _VERSION.match(version)
    if v is None:
        raise HttpError(400, "malformed HTTP version %r" % version[:50])
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, "HTTP version %s not supported" % version)
    if not target.startswith("/") or any(c in target for c in "\t\x00#") or any(ord(c) < 0x21 or ord(c) > 0x7e for c in target):
        raise HttpError(400, "request target must be an absolute path, got %r" % target[:100])
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        if not line or line[0] in " \t":
            raise HttpError(400, "obsolete line folding or empty header line")
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.match(name):
            raise HttpError(400, "malformed header field %r" % line[:100])
        value = value.strip(" \t")
        if not _FIELD_VALUE.match(value):
            raise HttpError(400, "invalid characters in header %r" % name)
        key = name.lower()
        if key in headers:
            if key in ("content-length", "host"):
                if key == "host" or headers[key] != value:
                    raise HttpError(400, "conflicting %s headers" % name)
                continue
            headers[key] = headers[key] + ", " + value
        else:
            headers[key] = value
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "HTTP/1.1 request without a Host header")
    if "transfer-encoding" in headers:
        if "content-length" in headers:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        raise HttpError(501, "Transfer-Encoding %r not supported" % headers["transfer-encoding"])
    if "content-length" in headers and not re.fullmatch(r"\d{1,18}", headers["content-length"]):
        raise HttpError(400, "malformed Content-Length %r" % headers["content-length"][:30])
    path, _, query = target.partition("?")
    path = unquote(path, errors="strict") if "%" in path else path
    segments = [s for s in path.split("/") if s]
    try:
        q = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        raise HttpError(400, "malformed query string")
    return Request(method, target, version, headers, path, segments, q)


def format_response(status: int, payload: Any = None, *, keep_alive: bool = True,
                    headers: Optional[Dict[str, str]] = None, head_only: bool = False) -> bytes:
    """An HTTP/1.1 response with a JSON body (``payload`` None: no body).

    >>> format_response(404, {"error": "not_found"}, keep_alive=False)[:22]
    b'HTTP/1.1 404 Not Found'
    """
    body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = ["HTTP/1.1 %d %s" % (status, reason)]
    if payload is not None:
        lines.append("Content-Type: application/json")
    lines.append("Content-Length: %d" % len(body))
    lines.append("Connection: %s" % ("keep-alive" if keep_alive else "close"))
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


async def read_request(reader: asyncio.StreamReader) -> Optional[Request]:
    """Read one request from the connection: None when the client closed it cleanly
    between requests; ``HttpError`` for a malformed, too large or truncated one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip(b"\r\n"):
            return None
        raise HttpError(400, "connection closed in the middle of a request head")
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head larger than %d bytes" % MAX_HEAD)
    req = parse_head(head.lstrip(b"\r\n"))   # RFC 9112 2.2: ignore CRLFs before a request
    n = int(req.headers.get("content-length", "0"))
    if n > MAX_BODY:
        raise HttpError(413, "request body of %d bytes (limit %d)" % (n, MAX_BODY))
    if n:
        try:
            req.body = await reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise HttpError(400, "connection closed in the middle of a request body")
    return req


# =========================================================================================
# Routing

Response = Tuple[int, Any, Dict[str, str]]


async def route(req: Request) -> Response:
    """Answer one request: ``(status, json_payload, extra_headers)``. Runs in the
    connection's process; the backends are reached only through their breakers.

    >>> await route(parse_head(b"GET /health HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"))
    (200, {'status': 'ok', 'breakers': {...}}, {})
    """
    seg = req.segments
    if seg == ["health"]:
        if req.method not in ("GET", "HEAD"):
            return (405, {"error": "method_not_allowed"}, {"Allow": "GET, HEAD"})
        return await _health()
    if seg[:1] == ["admin"]:
        return await _admin(req)
    if seg and seg[0] in SERVICES:
        return await _forward(seg[0], req)
    return (404, {"error": "no_route", "path": req.path}, {})


async def _health() -> Response:
    states: Dict[str, str] = {}
    for svc in SERVICES:
        try:
            states[svc] = await CircuitBreaker.state(breaker_name(svc))
        except Exit:
            states[svc] = "unavailable"
    ok = all(st == "closed" for st in states.values())
    return (200, {"status": "ok" if ok else "degraded", "breakers": states}, {})


async def _admin(req: Request) -> Response:
    seg = req.segments
    if len(seg) != 3 or seg[1] not in ("fail", "recover"):
        return (404, {"error": "no_route", "path": req.path}, {})
    if seg[2] not in SERVICES:
        return (404, {"error": "unknown_service", "service": seg[2]}, {})
    if req.method != "POST":
        return (405, {"error": "method_not_allowed"}, {"Allow": "POST"})
    if seg[1] == "fail":
        mode = req.query.get("mode", ["error"])[-1]
        if mode not in ("error", "slow"):
            return (400, {"error": "bad_mode", "mode": mode}, {})
        await Backends.fail(seg[2], mode)
        return (200, {"service": seg[2], "failing": mode}, {})
    await Backends.recover(seg[2])
    return (200, {"service": seg[2], "failing": None}, {})


async def _forward(service: str, req: Request) -> Response:
    body: Any = None
    if req.body:
        try:
            body = json.loads(req.body)
        except ValueError:   # includes UnicodeDecodeError
            return (400, {"error": "invalid_json"}, {})
    request = ("http", req.method, req.segments[1:], {k: v[-1] for k, v in req.query.items()}, body)
    breaker = breaker_name(service)
    try:
        result = await CircuitBreaker.call(breaker, request)
    except CircuitOpenError as e:
        return (503, {"error": "circuit_open", "service": service, "state": e.state},
                {"Retry-After": "1"})
    except Exit as e:
        return _exit_response(service, breaker, e.reason)
    if type(result) is tuple and len(result) == 3 and result[0] == "ok":
        return (result[1], result[2], {})
    reason = result[1] if type(result) is tuple and len(result) == 2 else result
    return (502, {"error": "bad_gateway", "service": service, "reason": str(reason)[:200]}, {})


def _exit_response(service: str, breaker: Any, reason: Any) -> Response:
    """A call that raised Exit: the breaker itself is gone (503), the backend did not
    answer in time (504), or the backend crashed or is gone (502)."""
    what = reason[0] if type(reason) is tuple and reason else reason
    callee = None
    if type(reason) is tuple and len(reason) == 2 and type(reason[1]) is tuple and len(reason[1]) == 3:
        args = reason[1][2]
        callee = args[0] if isinstance(args, list) and args else None
    if callee == breaker:
        return (503, {"error": "breaker_unavailable", "service": service}, {"Retry-After": "1"})
    if what == "timeout":
        return (504, {"error": "gateway_timeout", "service": service}, {})
    return (502, {"error": "bad_gateway", "service": service, "reason": repr(what)[:200]}, {})


# =========================================================================================
# The listener and the connection processes

async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           idle_timeout: float) -> None:
    """A connection's process: read requests one after the other (pipelined requests
    queue up in the stream), answer each, until the client closes, asks to close, sends
    something malformed, or stays idle for ``idle_timeout`` seconds."""
    transport = writer.transport
    try:
        while True:
            # the idle deadline runs on the timer wheel; it aborts the transport, which
            # ends the read below with EOF (asyncio.wait_for needs an asyncio task)
            timer = pyotp.apply_after(idle_timeout, transport.abort)
            try:
                req = await read_request(reader)
            except HttpError as e:
                writer.write(format_response(e.status, {"error": e.message}, keep_alive=False))
                await writer.drain()
                await _linger(reader, writer)
                return
            finally:
                pyotp.cancel_timer(timer)
            if req is None:
                return
            try:
                status, payload, headers = await route(req)
            except Exception:   # a bug in routing: answer, log, keep serving
                log.exception("error routing %s %s", req.method, req.target)
                status, payload, headers = 500, {"error": "internal_error"}, {}
            keep = req.keep_alive
            writer.write(format_response(status, payload, keep_alive=keep, headers=headers,
                                         head_only=req.method == "HEAD"))
            await writer.drain()
            if not keep:
                return
    except (ConnectionError, OSError):
        return
    finally:
        writer.close()


LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A "lingering close" after refusing a request: half-close our side, then read and
    drop what the client still sends (up to LINGER_BYTES, for at most LINGER_SECONDS).
    Closing a socket with unread input makes the kernel send a reset, which can destroy
    the error response before the client has read it."""
    if writer.can_write_eof():
        writer.write_eof()
    timer = pyotp.apply_after(LINGER_SECONDS, writer.transport.abort)
    try:
        dropped = 0
        while dropped < LINGER_BYTES:
            chunk = await reader.read(65536)
            if not chunk:
                return
            dropped += len(chunk)
    finally:
        pyotp.cancel_timer(timer)


class HttpListener(GenServer):
    """Owns the asyncio server. The server's accept callback hands each connection to
    this process, which spawns a linked connection process for it (and traps exits: a
    connection that crashes is forgotten, logged by the core; when the listener stops,
    its links take every connection down, and their ``finally`` closes the sockets).

    >>> await GenServer.call(LISTENER, "port")
    54321
    """

    @classmethod
    def child_spec(cls, config: GatewayConfig) -> Dict[str, Any]:
        return {"id": cls, "start": (cls.start_link, (config,), {"name": LISTENER})}

    async def init(self, config: GatewayConfig) -> Any:
        pyotp.process_flag("trap_exit", True)
        me = pyotp.self()

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            pyotp.send(me, ("accepted", reader, writer))

        try:
            server = await asyncio.start_server(accepted, config.host, config.port, limit=MAX_HEAD)
        except OSError as e:
            return ("stop", ("listen_failed", config.host, config.port, str(e)))
        port = server.sockets[0].getsockname()[1]
        log.info("api gateway listening on http://%s:%d", config.host, port)
        return ("ok", {"server": server, "port": port, "config": config,
                       "connections": set(), "accepted": 0})

    def handle_call(self, req: Any, from_: Any, s: Dict[str, Any]) -> Any:
        if req == "port":
            return ("reply", s["port"], s)
        if req == "stats":
            return ("reply", {"open_connections": len(s["connections"]),
                              "accepted": s["accepted"]}, s)
        return ("reply", ("error", ("unknown_call", req)), s)

    def handle_info(self, msg: Any, s: Dict[str, Any]) -> Any:
        if type(msg) is tuple and msg[0] == "accepted":
            _, reader, writer = msg
            pid = pyotp.spawn_link(serve_connection, reader, writer, s["config"].idle_timeout)
            conns: Set[Any] = s["connections"]
            conns.add(pid)
            s["accepted"] += 1
        elif type(msg) is tuple and msg[0] == "EXIT":
            s["connections"].discard(msg[1])
        return ("noreply", s)

    def terminate(self, reason: Any, s: Dict[str, Any]) -> Any:
        s["server"].close()


# =========================================================================================
# The supervision tree

class ApiGateway(Supervisor):
    """The whole gateway (see the module documentation).

    >>> sup = await ApiGateway.start_link(GatewayConfig(port=0))
    >>> port = await ApiGateway.port()
    """

    def init(self, config: GatewayConfig) -> Any:  # type: ignore[override]
        if not isinstance(config, GatewayConfig):
            raise TypeError("ApiGateway needs a GatewayConfig, got %r" % (config,))
        backends = [
            {"id": ("backend", svc),
             "start": (Backend.start_link, ({"service": svc, "seed": config.seed.get(svc, {}),
                                             "slow_delay": config.slow_delay},),
                       {"name": backend_name(svc)})}
            for svc in SERVICES]
        breakers = [
            (CircuitBreaker, {"name": breaker_name(svc), "service": backend_name(svc),
                              "failure_threshold": config.failure_threshold,
                              "reset_timeout": config.reset_timeout,
                              "half_open_max_calls": config.half_open_max_calls,
                              "call_timeout": config.call_timeout, "events": EVENTS})
            for svc in SERVICES]
        children = [
            (Registry, {"keys": "unique", "name": REGISTRY}),
            (EventManager, EVENTS),
            {"id": "breaker_log", "start": (_install_breaker_log, ())},
            {"id": BACKENDS, "type": "supervisor",
             "start": (Supervisor.start_link, (backends,),
                       {"strategy": "one_for_one", "name": BACKENDS})},
            {"id": BREAKERS, "type": "supervisor",
             "start": (Supervisor.start_link, (breakers,),
                       {"strategy": "one_for_one", "name": BREAKERS})},
            (HttpListener, config),
        ]
        return Supervisor.init(children, strategy="rest_for_one")

    @staticmethod
    async def port() -> int:
        """The port the listener is bound to."""
        return await GenServer.call(LISTENER, "port")  # type: ignore[no-any-return]


# =========================================================================================
# A small HTTP client (the example drives itself with it)

async def http_request(port: int, method: str, path: str, body: Any = None,
                       host: str = "127.0.0.1") -> Tuple[int, Dict[str, str], Any]:
    """One request on a fresh connection (``Connection: close``): ``(status, headers,
    decoded JSON or None)``. ``body`` is sent as JSON.

    >>> status, headers, payload = await http_request(port, "GET", "/users/1")
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        data = b"" if body is None else json.dumps(body).encode()
        head = "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n" % (method, path, host, port)
        if data:
            head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(data)
        writer.write(head.encode("latin-1") + b"\r\n" + data)
        await writer.drain()
        return await read_response(reader, method == "HEAD")
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader,
                        head_only: bool = False) -> Tuple[int, Dict[str, str], Any]:
    """Read one response (with a Content-Length body) from ``reader``."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head[:-4].split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = 0 if head_only else int(headers.get("content-length", "0"))
    raw = await reader.readexactly(n) if n else b""
    return status, headers, (json.loads(raw) if raw else None)


# =========================================================================================
# The self-driving demo

async def main(config: Optional[GatewayConfig] = None) -> Dict[str, Any]:
    """Start the gateway, send it a few requests, fail the orders backend until its
    breaker opens, recover it, and show the breaker closing again. Returns a summary."""
    config = config or GatewayConfig(reset_timeout=0.5)
    sup = await ApiGateway.start_link(config)
    port = await ApiGateway.port()
    print("api gateway listening on http://%s:%d" % (config.host, port))
    await ForwardEvents.attach()
    seen: List[Tuple[str, int]] = []

    async def show(method: str, path: str, body: Any = None) -> Tuple[int, Any]:
        status, _h, payload = await http_request(port, method, path, body)
        print("%-6s %-28s -> %d %s" % (method, path, status, json.dumps(payload)))
        seen.append((method + " " + path, status))
        return status, payload

    await show("GET", "/users")
    await show("GET", "/users/1")
    await show("POST", "/orders", {"user": "2", "sku": "gadget", "qty": 1})
    await show("GET", "/inventory/widget")
    await show("GET", "/inventory/nothing")
    await show("GET", "/payments/1")
    reader, writer = await asyncio.open_connection(config.host, port)
    writer.write(b"THIS IS NOT HTTP\r\n\r\n")
    bad_status, _h, bad = await read_response(reader)
    writer.close()
    print("%-35s -> %d %s" % ("(malformed request)", bad_status, json.dumps(bad)))
    seen.append(("malformed", bad_status))

    print("-- the orders backend starts failing")
    await show("POST", "/admin/fail/orders")
    for _ in range(config.failure_threshold):
        await show("GET", "/orders/100")              # 502: reaches the failing backend
    state, _events = await settled_state("orders")
    print("orders breaker:", state)
    # while open, requests are answered 503 at once; (only if this machine took longer
    # than reset_timeout to get here is the next request a half-open trial: 502 again)
    calls_before = (await Backends.stats("orders"))["calls"]
    rejected = 0
    for _ in range(20):
        rejected, _ = await show("GET", "/orders/100")
        if rejected == 503:
            break
        calls_before = (await Backends.stats("orders"))["calls"]
    calls_after = (await Backends.stats("orders"))["calls"]
    print("backend calls for the rejected request: %d" % (calls_after - calls_before))
    _, health_open = await show("GET", "/health")
    await show("GET", "/users/2")                     # the other services still work

    print("-- the orders backend recovers")
    await show("POST", "/admin/recover/orders")
    recovered = 0
    for _ in range(100):
        state, _events = await settled_state("orders")
        if state == "closed":
            break
        if state == "open":                           # wait for reset_timeout to pass
            await pyotp.receive(lambda m: type(m) is tuple and m[:2] == ("breaker", "orders"))
            continue
        recovered, _ = await show("GET", "/orders/100")   # half-open: the trial call
    print("orders breaker:", state)
    _, health_closed = await show("GET", "/health")
    recent = await EventManager.call(EVENTS, BreakerLog, "recent")
    await Supervisor.stop(sup)
    return {"port": port, "seen": seen, "rejected": rejected,
            "backend_calls_while_open": calls_after - calls_before,
            "health_open": health_open, "recovered": recovered,
            "health_closed": health_closed, "transitions": recent}


async def serve(config: GatewayConfig) -> None:
    """Run the gateway until Ctrl-C (SIGINT) or SIGTERM, then stop it in order."""
    sup = await ApiGateway.start_link(config)
    port = await ApiGateway.port()
    me = pyotp.self()
    loop = asyncio.get_running_loop()
    signals = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, pyotp.send, me, ("signal", sig))
            signals.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass   # no loop signal handlers here (Windows): Ctrl-C interrupts the node
    print("api gateway listening on http://%s:%d (Ctrl-C to stop)" % (config.host, port))
    print("try: curl http://%s:%d/users/1   curl http://%s:%d/health"
          % (config.host, port, config.host, port))
    sys.stdout.flush()
    msg = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "signal")
    for sig in signals:
        loop.remove_signal_handler(sig)
    await Supervisor.stop(sup)
    print("stopped (%s)" % signal.Signals(msg[1]).name)


def _args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="pyotp ApiGateway example")
    p.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    p.add_argument("--reset-timeout", type=float, default=None, help="breaker reset timeout (s)")
    return p.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    a = _args()
    cfg = GatewayConfig(host=a.host, port=a.port,
                        reset_timeout=a.reset_timeout if a.reset_timeout is not None
                        else (5.0 if a.serve else 0.5))
    if a.serve:
        try:
            pyotp.run(serve, cfg)
        except KeyboardInterrupt:
            print("stopped")
    else:
        summary = pyotp.run(main, cfg)
        print("transitions:", summary["transitions"])
        print("done: breaker opened (503) and closed again (%d)"
              % summary["recovered"])
