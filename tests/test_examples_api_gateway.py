"""The ApiGateway example (examples/api_gateway.py): HTTP on loopback, routing by prefix,
backends as supervised processes, one CircuitBreaker per backend.

The load test drives the gateway with 20 concurrent HTTP clients (``http.client`` on OS
threads, 50 requests each) in rounds, while the orders backend fails and recovers; phase
changes happen between rounds (no request in flight), and breaker state changes are
waited for through the gateway's event manager, never by sleeping."""
import asyncio
import http.client
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

import pyotp
from pyotp import GenServer
from pyotp.circuit_breaker import CircuitBreaker
from pyotp.supervisor import Supervisor
from pyotp.testing import ANY, assert_receive, refute_receive, start_supervised
from pathutil import child_pythonpath

_PATH = Path(__file__).resolve().parent.parent / "examples" / "api_gateway.py"
_spec = importlib.util.spec_from_file_location("example_api_gateway", _PATH)
gw = importlib.util.module_from_spec(_spec)
sys.modules["example_api_gateway"] = gw      # dataclasses look their module up
_spec.loader.exec_module(gw)

PATHS = {"users": "/users/1", "orders": "/orders/100", "inventory": "/inventory/widget"}
EXPECTED = {"users": {"id": "1", "name": "Ada"},
            "orders": {"id": "100", "user": "1", "sku": "widget", "qty": 2},
            "inventory": {"id": "widget", "stock": 10}}


async def start_gateway(**kw):
    """Start the gateway for this test (stopped at its end) and subscribe the test
    process to its breaker events; returns the port."""
    await start_supervised((gw.ApiGateway, gw.GatewayConfig(port=0, **kw)))
    await gw.ForwardEvents.attach()
    return await gw.ApiGateway.port()


async def raw(port, data):
    """Send raw bytes on a fresh connection, close our side, and return everything read
    until the gateway closes its side."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        writer.write_eof()
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# -----------------------------------------------------------------------------------------
# HTTP parsing

@pytest.mark.parametrize("head,status", [
    (b"GET / HTTP/1.1\r\n\r\n", 400),                              # no Host
    (b"GET /\r\nHost: a\r\n\r\n", 400),                             # no version
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),                   # double space
    (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),                    # method not a token
    (b"GET users HTTP/1.1\r\nHost: a\r\n\r\n", 400),                # not an absolute path
    (b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),            # absolute form
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),                   # space before colon
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),         # obs-fold
    (b"GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
])
def test_parse_head_rejects(head, status):
    with pytest.raises(gw.HttpError) as e:
        gw.parse_head(head)
    assert e.value.status == status


def test_parse_head_accepts():
    r = gw.parse_head(b"POST /users/a%20b/?x=1&x=2&y HTTP/1.1\r\nHost: h\r\n"
                      b"X-Many: 1\r\nx-many: 2\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
    assert (r.method, r.path, r.segments) == ("POST", "/users/a b/", ["users", "a b"])
    assert r.query == {"x": ["1", "2"], "y": [""]}
    assert r.headers == {"host": "h", "x-many": "1, 2", "content-length": "3"}
    assert r.keep_alive
    assert not gw.parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n").keep_alive
    assert not gw.parse_head(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert gw.parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive


def test_format_response():
    out = gw.format_response(503, {"a": 1}, keep_alive=False, headers={"Retry-After": "1"})
    head, body = out.split(b"\r\n\r\n")
    assert head.split(b"\r\n") == [b"HTTP/1.1 503 Service Unavailable", b"Content-Type: application/json",
                                   b"Content-Length: 7", b"Connection: close", b"Retry-After: 1"]
    assert json.loads(body) == {"a": 1}


def test_config_is_checked():
    with pytest.raises(ValueError, match="port"):
        gw.GatewayConfig(port=70000)
    with pytest.raises(ValueError, match="reset_timeout"):
        gw.GatewayConfig(reset_timeout=-1)
    with pytest.raises(ValueError, match="unknown services"):
        gw.GatewayConfig(seed={"payments": {}})
    assert gw.GatewayConfig(call_timeout=0.5).slow_delay == 1.0


# -----------------------------------------------------------------------------------------
# The gateway over real sockets

@pytest.mark.pyotp
async def test_routes_statuses_and_protocol_errors():
    port = await start_gateway()
    req = gw.http_request
    assert await req(port, "GET", "/users/1") == (200, ANY_HEADERS, EXPECTED["users"])
    assert (await req(port, "GET", "/users"))[2] == {"users": [EXPECTED["users"], {"id": "2", "name": "Grace"}]}
    assert (await req(port, "GET", "/inventory/nope"))[0] == 404
    status, _, created = await req(port, "POST", "/orders", {"sku": "gadget", "qty": 3})
    assert status == 201 and created["sku"] == "gadget"
    assert (await req(port, "GET", "/orders/" + created["id"]))[2] == created
    assert (await req(port, "DELETE", "/orders/100"))[0] == 405
    assert (await req(port, "POST", "/orders", [1, 2]))[0] == 422
    for path in ("/", "/payments", "/usersx/1", "/admin", "/admin/fail", "/admin/explode/orders",
                 "/admin/fail/payments"):
        assert (await req(port, "POST", path))[0] == 404, path
    assert (await req(port, "GET", "/admin/fail/orders"))[0] == 405
    assert (await req(port, "POST", "/health"))[0] == 405
    assert (await req(port, "POST", "/admin/fail/orders?mode=explode"))[0] == 400
    status, headers, payload = await req(port, "HEAD", "/health")
    assert status == 200 and payload is None and int(headers["content-length"]) > 0
    # requests refused before routing: answered, then the connection is closed
    out = await raw(port, b"HELLO\r\n\r\n")
    assert status_of(out) == 400 and out.endswith(b"}") and b"Connection: close" in out
    out = await raw(port, b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{not json")
    assert status_of(out) == 400 and b"invalid_json" in out
    out = await raw(port, b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
    assert status_of(out) == 400 and b"middle of a request body" in out
    out = await raw(port, b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                    % (gw.MAX_BODY + 1))
    assert status_of(out) == 413
    out = await raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * gw.MAX_HEAD + b"\r\n\r\n")
    assert status_of(out) == 431
    out = await raw(port, b"GET /users/1 HTTP/2.0\r\nHost: x\r\n\r\n")
    assert status_of(out) == 505
    # no backend was reached by any refused request
    assert (await gw.Backends.stats("orders"))["calls"] == 4


class _AnyHeaders:
    def __eq__(self, other):
        return isinstance(other, dict) and "content-length" in other


ANY_HEADERS = _AnyHeaders()


@pytest.mark.pyotp
async def test_keep_alive_pipelining_http10_and_idle_timeout():
    port = await start_gateway(idle_timeout=0.05)
    # three pipelined requests in one write, answered in order on the same connection
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p.encode() for p in PATHS.values()))
    for svc in PATHS:
        status, headers, payload = await gw.read_response(reader)
        assert (status, headers["connection"], payload) == (200, "keep-alive", EXPECTED[svc])
    # then nothing: the idle timer (on the timer wheel) closes the connection
    assert await reader.read() == b""
    writer.close()
    # HTTP/1.0 closes after one response unless asked to keep the connection
    out = await raw(port, b"GET /users/1 HTTP/1.0\r\n\r\nGET /users/1 HTTP/1.0\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in out
    out = await raw(port, b"GET /users/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                    b"GET /users/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 2 and out.endswith(b'"Grace"}')
    stats = await GenServer.call(gw.LISTENER, "stats")
    assert stats["accepted"] == 3


@pytest.mark.pyotp
async def test_open_breaker_rejects_without_reaching_the_backend():
    # reset_timeout long: the breaker stays open for the whole test, so "never reaches the
    # backend" is checked exactly
    port = await start_gateway(failure_threshold=3, reset_timeout=60.0)
    assert (await gw.http_request(port, "POST", "/admin/fail/orders"))[0] == 200
    for _ in range(3):
        status, _, payload = await gw.http_request(port, "GET", "/orders/100")
        assert (status, payload["reason"]) == (502, "simulated_failure")
    await assert_receive(("breaker", "orders", "closed", "open"), timeout=5)
    calls = (await gw.Backends.stats("orders"))["calls"]
    assert calls == 3
    results = await asyncio.gather(*[gw.http_request(port, "GET", "/orders/100") for _ in range(20)])
    assert {(s, p["error"], h["retry-after"]) for s, h, p in results} == {(503, "circuit_open", "1")}
    assert (await gw.Backends.stats("orders"))["calls"] == calls
    status, _, health = await gw.http_request(port, "GET", "/health")
    assert health == {"status": "degraded",
                      "breakers": {"users": "closed", "orders": "open", "inventory": "closed"}}
    assert (await gw.http_request(port, "GET", "/users/1"))[0] == 200
    # recovering the backend does not close the breaker: only a successful trial does
    await gw.Backends.recover("orders")
    assert (await gw.http_request(port, "GET", "/orders/100"))[0] == 503
    assert (await gw.Backends.stats("orders"))["calls"] == calls
    await CircuitBreaker.reset(gw.breaker_name("orders"))
    await assert_receive(("breaker", "orders", "open", "closed"))
    assert (await gw.http_request(port, "GET", "/orders/100"))[0] == 200
    recent = await gw.EventManager.call(gw.EVENTS, gw.BreakerLog, "recent")
    assert recent == [("orders", "closed", "open"), ("orders", "open", "closed")]


@pytest.mark.pyotp
async def test_slow_backend_is_a_gateway_timeout_and_trips_the_breaker():
    port = await start_gateway(failure_threshold=2, reset_timeout=60.0, call_timeout=0.02,
                               slow_delay=0.05)
    await gw.http_request(port, "POST", "/admin/fail/inventory?mode=slow")
    # one keep-alive connection: one connection process makes all three calls
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses = []
    for _ in range(3):
        writer.write(b"GET /inventory/widget HTTP/1.1\r\nHost: x\r\n\r\n")
        statuses.append((await gw.read_response(reader))[0])
    assert statuses == [504, 504, 503]
    await assert_receive(("breaker", "inventory", "closed", "open"))
    assert (await gw.Backends.stats("inventory"))["calls"] == 2
    # the timed-out calls did not end the connection process: it still serves
    writer.write(b"GET /users/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await gw.read_response(reader))[0] == 200
    stats = await GenServer.call(gw.LISTENER, "stats")
    assert stats["open_connections"] == 1
    writer.close()


@pytest.mark.pyotp
async def test_a_crashed_backend_is_restarted_and_a_killed_listener_drops_its_connections():
    port = await start_gateway()
    old = GenServer.whereis(gw.backend_name("users"))
    ref = pyotp.monitor(old)
    pyotp.exit(old, "kill")
    await assert_receive(("DOWN", ref, "process", old, "killed"))
    # the Backends supervisor restarted it under the same via name
    assert (await gw.http_request(port, "GET", "/users/1"))[0] == 200
    new = GenServer.whereis(gw.backend_name("users"))
    assert new is not None and new != old
    # a keep-alive connection is a process linked to the listener: killing the listener
    # closes it; rest_for_one restarts only the listener (it is the last child)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /users/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await gw.read_response(reader))[0] == 200
    listener = pyotp.whereis(gw.LISTENER)
    ref = pyotp.monitor(listener)
    pyotp.exit(listener, "kill")
    await assert_receive(("DOWN", ref, "process", listener, "killed"))
    assert await reader.read() == b""
    writer.close()
    new_port = await gw.ApiGateway.port()
    assert (await gw.http_request(new_port, "GET", "/users/1"))[0] == 200
    assert GenServer.whereis(gw.backend_name("users")) == new   # untouched by the restart
    await refute_receive(("breaker", ANY, ANY, ANY), timeout=0.01)


# -----------------------------------------------------------------------------------------
# Concurrent clients while a backend fails and recovers

CLIENTS = 20
ROUNDS = 50


class Client:
    """An HTTP client on its own OS thread (http.client). It takes a round's requests
    from its queue, makes them, and sends the results to the test process with
    pyotp.send (safe from any thread). Odd clients keep their connection alive, even
    ones ask for ``Connection: close`` each time."""

    def __init__(self, idx, port, owner):
        self.idx, self.port, self.owner = idx, port, owner
        self.jobs = queue.Queue()
        self.thread = threading.Thread(target=self.run, daemon=True, name="client-%d" % idx)
        self.thread.start()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Connection": "close"} if self.idx % 2 == 0 else {}
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                rnd, path = job
                try:
                    conn.request("GET", path, headers=headers)
                    resp = conn.getresponse()
                    body = resp.read()
                    result = (resp.status, json.loads(body) if body else None)
                except Exception as e:          # reported, and the test fails on it
                    conn.close()
                    result = ("exception", repr(e))
                pyotp.send(self.owner, ("round_done", self.idx, rnd, result))
        finally:
            conn.close()


def service_for(idx, rnd):
    return gw.SERVICES[(idx + rnd) % len(gw.SERVICES)]


@pytest.mark.pyotp
async def test_concurrent_clients_while_a_backend_fails_and_recovers():
    threshold, max_trials = 3, 1
    port = await start_gateway(failure_threshold=threshold, reset_timeout=0.05,
                               half_open_max_calls=max_trials, call_timeout=5.0)
    me = pyotp.self()
    clients = [Client(i, port, me) for i in range(CLIENTS)]
    per_phase = {}                                  # phase -> Counter((service, status))
    sent = Counter()                                # service -> requests sent
    rounds = 0
    events = []                                     # every breaker event, in order

    async def run_round(phase):
        nonlocal rounds
        rnd = rounds
        rounds += 1
        for c in clients:
            c.jobs.put((rnd, PATHS[service_for(c.idx, rnd)]))
        tally = per_phase.setdefault(phase, Counter())
        for _ in clients:
            _, idx, _, (status, payload) = await pyotp.receive(
                lambda m: type(m) is tuple and m[0] == "round_done" and m[2] == rnd, timeout=30)
            svc = service_for(idx, rnd)
            sent[svc] += 1
            tally[(svc, status)] += 1
            if status == 200:
                assert payload == EXPECTED[svc]
            elif status == 502:
                assert payload == {"error": "bad_gateway", "service": svc, "reason": "simulated_failure"}
            elif status == 503:
                assert payload == {"error": "circuit_open", "service": svc, "state": ANY_STATE}
            else:
                raise AssertionError("round %d, %s: unexpected %r %r" % (rnd, svc, status, payload))

    async def settled():
        state, taken = await gw.settled_state("orders")
        events.extend(taken)
        return state

    async def orders_calls():
        return (await gw.Backends.stats("orders"))["calls"]

    try:
        # 1. healthy
        for _ in range(10):
            await run_round("healthy")
        assert set(per_phase["healthy"]) == {(svc, 200) for svc in gw.SERVICES}

        # 2. the orders backend fails: one round trips the breaker (each round sends
        #    6 or 7 orders requests, and the first `threshold` are admitted while closed)
        await gw.http_request(port, "POST", "/admin/fail/orders")
        await run_round("tripping")
        await assert_receive(("breaker", "orders", "closed", "open"), timeout=5)
        events.append(("breaker", "orders", "closed", "open"))
        calls_at_trip = await orders_calls()

        # 3. failing, breaker cycling open -> half_open -> open: only trial calls reach
        #    the backend, everything else is a 503 that never touched it
        for _ in range(10):
            await run_round("failing")
        calls_failing = await orders_calls() - calls_at_trip
        await settled()                               # every event up to now is in `events`
        half_opens = sum(1 for e in events if e[1:] == ("orders", "open", "half_open"))
        failing = per_phase["failing"]
        orders_failing = sum(n for (svc, _), n in failing.items() if svc == "orders")
        assert failing[("orders", 502)] == calls_failing          # each backend call: a 502
        assert failing[("orders", 503)] == orders_failing - calls_failing
        assert calls_failing <= half_opens * max_trials           # trials only
        assert failing[("orders", 503)] > 0
        assert failing[("orders", 200)] == 0

        # 4. recovery: the next half-open trial succeeds and closes the breaker
        await gw.http_request(port, "POST", "/admin/recover/orders")
        calls_at_recovery = await orders_calls()
        for _ in range(200):
            state = await settled()
            if state == "closed":
                break
            if state == "open":                       # wait for reset_timeout to pass
                ev = await assert_receive(("breaker", "orders", "open", "half_open"), timeout=5)
                events.append(ev)
                continue
            await run_round("recovering")               # half-open: a trial goes through
        assert state == "closed"
        assert events[-1] == ("breaker", "orders", "half_open", "closed")
        recovering = per_phase.get("recovering", Counter())
        assert set(recovering) <= {(s, 200) for s in gw.SERVICES} | {("orders", 503)}
        assert recovering[("orders", 200)] == await orders_calls() - calls_at_recovery

        # 5. recovered: everything 200 again, every request reaches its backend
        calls_at_closed = await orders_calls()
        while rounds < ROUNDS or "recovered" not in per_phase:
            await run_round("recovered")
        recovered = per_phase["recovered"]
        assert set(recovered) == {(svc, 200) for svc in gw.SERVICES}
        assert recovered[("orders", 200)] == await orders_calls() - calls_at_closed
    finally:
        for c in clients:
            c.jobs.put(None)

    # throughout: only these statuses; users and inventory untouched by the orders failure
    everything = sum(per_phase.values(), Counter())
    assert {status for _, status in everything} <= {200, 502, 503}
    assert sum(everything.values()) == rounds * CLIENTS >= ROUNDS * CLIENTS
    for svc in ("users", "inventory"):
        assert everything[(svc, 200)] == sent[svc]
        assert (await gw.Backends.stats(svc))["calls"] == sent[svc]
    await settled()
    assert {e[1] for e in events} == {"orders"}     # no other breaker ever changed state
    # every orders request either reached the backend or was rejected with a 503
    assert everything[("orders", 503)] + await orders_calls() == sent["orders"]
    for c in clients:
        c.thread.join(timeout=10)
        assert not c.thread.is_alive()


class _AnyState:
    def __eq__(self, other):
        return other in ("open", "half_open")


ANY_STATE = _AnyState()


# -----------------------------------------------------------------------------------------
# The program

def test_main_summary():
    s = pyotp.run(gw.main)
    seen = dict(s["seen"])
    assert seen["GET /users/1"] == 200 and seen["GET /payments/1"] == 404
    assert seen["malformed"] == 400 and seen["POST /orders"] == 201
    assert s["rejected"] == 503 and s["backend_calls_while_open"] == 0
    assert s["health_open"]["breakers"]["orders"] == "open"
    assert s["recovered"] == 200
    assert s["health_closed"] == {"status": "ok", "breakers": dict.fromkeys(gw.SERVICES, "closed")}
    assert s["transitions"][0] == ("orders", "closed", "open")
    assert s["transitions"][-1] == ("orders", "half_open", "closed")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = child_pythonpath()
    return env


def test_script_runs_and_ends_by_itself():
    out = subprocess.run([sys.executable, str(_PATH)], capture_output=True, text=True,
                         timeout=60, env=_env())
    assert out.returncode == 0, out.stderr
    assert "api gateway listening on http://127.0.0.1:" in out.stdout
    assert "-> 503" in out.stdout
    assert out.stdout.strip().endswith("done: breaker opened (503) and closed again (200)")
    assert "circuit orders: closed -> open" in out.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_serve_mode_serves_until_sigint():
    proc = subprocess.Popen([sys.executable, str(_PATH), "--serve"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        line = proc.stdout.readline()
        assert line.startswith("api gateway listening on http://127.0.0.1:"), line
        port = int(line.split(":")[2].split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
        conn.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip().endswith("stopped (SIGINT)")
