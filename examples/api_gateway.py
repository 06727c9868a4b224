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
    └── GatewayListener   AsgiServer: uvicorn in the node's loop, one process per request

HTTP is uvicorn's (httptools or h11 parse it: keep-alive, pipelining, HTTP/1.0, malformed
requests answered 400 by the server itself), on the same stack as the user service
(``examples/user_service/web.py``): ``AsgiServer`` is a GenServer owning the uvicorn
server, and every request runs ``route`` as a process of its own (``in_process``):

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
anything else                      404; a body that is not JSON 400; a body over
                                   ``MAX_BODY`` 413; a crash while routing 500 (that
                                   request only, logged as a crash report)
=================================  ========================================================

Each breaker publishes ``("circuit_breaker", name, old, new)`` to ``GatewayEvents``;
``ForwardEvents`` relays them to a process as ``("breaker", service, old, new)`` (the
example and its tests wait for state changes that way, never by sleeping).

``main`` returns a summary (the tests check it).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs

try:
    import pyotp
except ImportError:  # running from a source checkout: python examples/api_gateway.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import pyotp

# the HTTP layer is shared with the user service (examples/user_service/web.py)
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
from examples.user_service.web import (ApiError, AsgiServer, Reply, in_process,  # noqa: E402
                                       read_body, send_json)

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
    idle_timeout: float = 15.0          # a keep-alive connection idle this long is closed (> 0)
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
        if self.idle_timeout == 0:
            raise ValueError("GatewayConfig idle_timeout must be seconds > 0, got 0")
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
# Requests: the ASGI app (uvicorn parses HTTP; each request is its own process)

@dataclass
class Request:
    """One request as ``route`` sees it. ``headers`` has lower-case names; ``body`` is
    bytes (at most ``MAX_BODY``)."""
    method: str
    path: str
    headers: Dict[str, str] = field(default_factory=dict)
    query: Dict[str, List[str]] = field(default_factory=dict)
    body: bytes = b""

    @property
    def segments(self) -> List[str]:
        return [s for s in self.path.split("/") if s]


async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
    """The gateway's ASGI application: read the body (bounded: 413 past ``MAX_BODY``),
    then answer through ``route`` run as a new process (``in_process``: a crash there is
    that request's 500 only)."""
    if scope["type"] != "http":
        return
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    try:
        body = await read_body(receive, headers, MAX_BODY)
    except ApiError as e:
        await send_json(send, e.reply())
        return
    try:
        query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    except ValueError:
        query = {}
    req = Request(scope["method"], scope["path"], headers, query, body)
    reply = await in_process(route, req, what="%s %s" % (req.method, req.path))
    await send_json(send, reply)


# =========================================================================================
# Routing

Response = Reply


async def route(req: Request) -> Response:
    """Answer one request: ``(status, json_payload, extra_headers)``. Runs in the
    request's own process; the backends are reached only through their breakers.

    >>> await route(Request("GET", "/health"))
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
            {"id": LISTENER,
             "start": (AsgiServer.start_link, ({"app": app, "host": config.host, "port": config.port,
                                               "keep_alive": config.idle_timeout,
                                               "label": "api gateway"},), {"name": LISTENER})},
        ]
        return Supervisor.init(children, strategy="rest_for_one")

    @staticmethod
    async def port() -> int:
        """The port the listener is bound to."""
        return await AsgiServer.port(LISTENER)


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
    """Read one response (with a Content-Length body) from ``reader``: the body decoded
    as JSON when it is JSON, else as text."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head[:-4].split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = 0 if head_only else int(headers.get("content-length", "0"))
    raw = await reader.readexactly(n) if n else b""
    if not raw:
        return status, headers, None
    if headers.get("content-type", "").startswith("application/json"):
        return status, headers, json.loads(raw)
    return status, headers, raw.decode("utf-8", "replace")


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
