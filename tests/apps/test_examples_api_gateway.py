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

_PATH = Path(__file__).resolve().parents[2] / "examples" / "api_gateway.py"
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
    """Send raw bytes on a fresh connection and return everything read until the
    gateway closes it (send ``Connection: close`` or something it refuses; uvicorn
    takes a client's half-close as the end of the connection, so we do not send one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# -----------------------------------------------------------------------------------------
# Configuration

def test_config_is_checked():
    with pytest.raises(ValueError, match="port"):
        gw.GatewayConfig(port=70000)
    with pytest.raises(ValueError, match="reset_timeout"):
        gw.GatewayConfig(reset_timeout=-1)
    with pytest.raises(ValueError, match="unknown services"):
        gw.GatewayConfig(seed={"payments": {}})
    with pytest.raises(ValueError, match="idle_timeout"):
        gw.GatewayConfig(idle_timeout=0)
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
    # malformed HTTP: uvicorn (h11) answers 400 and closes the connection
    for bad in (b"HELLO\r\n\r\n",
                b"GET / HTTP/1.1\r\n\r\n",                                   # no Host
                b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"):                     # space before colon
        out = await raw(port, bad)
        assert status_of(out) == 400 and b"Connection: close" in out, bad
    # bodies: not JSON 400, too large 413 (declared, or while streaming chunks), chunked fine
    close = b"Host: x\r\nConnection: close\r\n"
    out = await raw(port, b"POST /orders HTTP/1.1\r\n" + close + b"Content-Length: 9\r\n\r\n{not json")
    assert status_of(out) == 400 and b"invalid_json" in out
    out = await raw(port, b"POST /orders HTTP/1.1\r\n" + close + b"Content-Length: %d\r\n\r\n"
                    % (gw.MAX_BODY + 1))
    assert status_of(out) == 413 and b"body_too_large" in out
    chunk = b"%x\r\n%s\r\n" % (32768, b"x" * 32768)
    out = await raw(port, b"POST /orders HTTP/1.1\r\n" + close + b"Transfer-Encoding: chunked\r\n\r\n"
                    + chunk * 3 + b"0\r\n\r\n")
    assert status_of(out) == 413
    out = await raw(port, b"POST /users HTTP/1.1\r\n" + close + b"Transfer-Encoding: chunked\r\n\r\n"
                    b"a\r\n{\"id\": \"7\"\r\n1\r\n}\r\n0\r\n\r\n")
    assert status_of(out) == 201 and out.endswith(b'{"id":"7"}')
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
        assert (status, payload) == (200, EXPECTED[svc]) and "connection" not in headers
    # then nothing: the keep-alive timeout (idle_timeout) closes the connection
    assert await reader.read() == b""
    writer.close()
    # HTTP/1.0 closes after one response
    out = await raw(port, b"GET /users/1 HTTP/1.0\r\n\r\nGET /users/1 HTTP/1.0\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in out
    # Connection: close on HTTP/1.1 is honoured after the pipelined request before it
    out = await raw(port, b"GET /users/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /users/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 2 and out.endswith(b'"Grace"}')
    stats = await GenServer.call(gw.LISTENER, "stats")
    assert stats == {"requests": 6, "open_connections": 0}


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
    # one keep-alive connection; each request runs in a process of its own
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    statuses = []
    for _ in range(3):
        writer.write(b"GET /inventory/widget HTTP/1.1\r\nHost: x\r\n\r\n")
        statuses.append((await gw.read_response(reader))[0])
    assert statuses == [504, 504, 503]
    await assert_receive(("breaker", "inventory", "closed", "open"))
    assert (await gw.Backends.stats("inventory"))["calls"] == 2
    # the timed-out calls did not end the connection: it still serves
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
    # the listener process owns the uvicorn server: killing it closes its keep-alive
    # connections (a linked guard process aborts them, as a port closes with its owner);
    # rest_for_one restarts only the listener (it is the last child)
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


@pytest.mark.pyotp
async def test_a_crash_while_routing_fails_only_that_request(monkeypatch, caplog):
    port = await start_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def broken():
        raise KeyError("broken health check")

    monkeypatch.setattr(gw, "_health", broken)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, payload = await gw.read_response(reader)
    assert status == 500 and payload["error"] == "internal_error"
    assert "broken health check" in caplog.text and payload["request_id"] in caplog.text
    # the same connection, the listener and the other routes carry on
    writer.write(b"GET /users/1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await gw.read_response(reader) == (200, ANY_HEADERS, EXPECTED["users"])
    writer.close()
