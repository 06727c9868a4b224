"""The dashboard's HTTP endpoints: JSON views, server-sent events, kill/send, 4xx for bad
requests, loopback-only without a token."""
import asyncio
import json
from urllib.parse import quote

import pytest

import pyotp
from pyotp import Supervisor
from pyotp import dashboard
from servers import Worker


async def request(port, raw):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(raw)
    await w.drain()
    data = await r.read()
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def get(port, path):
    status, body = await request(port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return status, (json.loads(body) if body.startswith((b"{", b"[")) else body)


async def post(port, path, body=b"{}", confirm=True):
    h = b"X-Pyotp-Confirm: yes\r\n" if confirm else b""
    return await request(port, b"POST " + path.encode() + b" HTTP/1.1\r\n" + h +
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)


async def demo_tree():
    return await Supervisor.start_link([{"id": "worker", "start": (Worker.start_link, [7])}],
                                       strategy="one_for_one")


def test_views_kill_and_restart():
    async def main():
        sup = await demo_tree()
        d = await dashboard.start(0)
        try:
            st, page = await get(d.port, "/")
            st_js, _ = await get(d.port, "/static/app.js")
            _, snap = await get(d.port, "/api/snapshot?n=2&sort=memory")
            _, trees = await get(d.port, "/api/trees")
            [tree] = [t for t in trees if t["pid"] == str(sup)]
            old = tree["children"][0]["pid"]
            _, info = await get(d.port, "/api/process/" + quote(old, safe=""))
            st_send, _ = await post(d.port, "/api/process/%s/send" % quote(old, safe=""), b'{"message": "hi"}')
            st_kill, _ = await post(d.port, "/api/process/%s/kill" % quote(old, safe=""))
            while True:
                _, trees = await get(d.port, "/api/trees")
                [tree] = [t for t in trees if t["pid"] == str(sup)]
                new = tree["children"][0]["pid"]
                if new not in (None, old):
                    break
                await asyncio.sleep(0.001)
            return st, page, st_js, snap, info, st_send, st_kill, tree
        finally:
            d.close()
    st, page, st_js, snap, info, st_send, st_kill, tree = pyotp.run(main)
    assert st == 200 and b"<title>pyotp dashboard</title>" in page and st_js == 200
    assert len(snap["top"]) == 2 and snap["node"]["processes"] == 3
    assert info["state"] == "7" and info["behaviour"] == "Worker"
    assert st_send == 200 and st_kill == 200
    assert tree["restarts"] == 1


def test_events_stream_snapshots():
    async def main():
        d = await dashboard.start(0, interval=0.01)
        try:
            r, w = await asyncio.open_connection("127.0.0.1", d.port)
            w.write(b"GET /events?n=3 HTTP/1.1\r\n\r\n")
            head = await r.readuntil(b"\r\n\r\n")
            first = json.loads((await r.readuntil(b"\n\n"))[6:])
            ps = [pyotp.spawn(pyotp.receive) for _ in range(4)]
            while True:
                ev = json.loads((await r.readuntil(b"\n\n"))[6:])
                if ev["snapshot"]["node"]["processes"] == first["snapshot"]["node"]["processes"] + 4:
                    break
            w.close()
            return head, first
        finally:
            d.close()
    head, first = pyotp.run(main)
    assert b"text/event-stream" in head and len(first["snapshot"]["top"]) <= 3


@pytest.mark.parametrize("raw,status", [
    (b"GET /nope HTTP/1.1\r\n\r\n", 404),
    (b"GET /static/../dashboard.py HTTP/1.1\r\n\r\n", 404),
    (b"GET /static/dashboard.py HTTP/1.1\r\n\r\n", 404),
    (b"GET /api/snapshot?sort=evil HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/snapshot?n=x HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/snapshot?n=100000 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/process/%23PID%3C9.9.9%3E HTTP/1.1\r\n\r\n", 404),
    (b"DELETE / HTTP/1.1\r\n\r\n", 405),
    (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
    (b"POST /api/snapshot HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    (b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 413),
    (b"POST /x HTTP/1.1\r\nContent-Length: z\r\n\r\n", 400),
    (b"garbage\r\n\r\n", 400),
    (b"GET / SPDY/3\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nno-colon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
])
def test_bad_requests_get_4xx(raw, status):
    async def main():
        d = await dashboard.start(0)
        try:
            got, _ = await request(d.port, raw)
            _, snap = await get(d.port, "/api/snapshot")     # still serving
            return got, snap
        finally:
            d.close()
    got, snap = pyotp.run(main)
    assert got == status and "node" in snap


def test_post_needs_confirmation_and_json():
    async def main():
        w = await Worker.start_link(1)
        d = await dashboard.start(0)
        try:
            await get(d.port, "/api/snapshot?n=1000")        # the dashboard has shown w
            a, _ = await post(d.port, "/api/process/%s/kill" % quote(str(w), safe=""), confirm=False)
            b, _ = await post(d.port, "/api/process/%s/send" % quote(str(w), safe=""), b"not json")
            c, _ = await post(d.port, "/api/process/%s/send" % quote(str(w), safe=""), b'{"message": 3}')
            e, _ = await post(d.port, "/api/process/%s/explode" % quote(str(w), safe=""))
            return a, b, c, e, pyotp.is_alive(w)
        finally:
            d.close()
    assert pyotp.run(main) == (400, 400, 400, 405, True)


def test_public_address_needs_token():
    with pytest.raises(dashboard.DashboardError, match="needs token"):
        dashboard.Dashboard(0, host="0.0.0.0")
    with pytest.raises(dashboard.DashboardError, match="port"):
        dashboard.Dashboard(70000)

    async def main():
        d = await dashboard.start(0, token="s3cret")
        try:
            no, _ = await get(d.port, "/api/snapshot")
            bad, _ = await get(d.port, "/api/snapshot?token=wrong")
            ok, _ = await get(d.port, "/api/snapshot?token=s3cret")
            bearer, _ = await request(d.port, b"GET /api/snapshot HTTP/1.1\r\n"
                                              b"Authorization: Bearer s3cret\r\n\r\n")
            return no, bad, ok, bearer
        finally:
            d.close()
    assert pyotp.run(main) == (401, 401, 200, 200)


def test_run_with_dashboard():
    # the dashboard of pyotp.run(dashboard=) is up while main runs
    async def main2(port_holder):
        st, _ = await get(port_holder, "/api/snapshot")
        return st
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert pyotp.run(main2, port, dashboard=port) == 200
