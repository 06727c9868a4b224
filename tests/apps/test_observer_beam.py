"""The observer attached to a real Erlang node (``erl``): ``python -m pyotp dashboard
--node`` and ``python -m pyotp top --node`` read it through rpc (pyotp.observer_beam), and
the distribution channel counts the traffic of a connection (DistChannel.stats)."""
import json
import re
import sys
import urllib.request

import pytest

import pyotp
import pyotp.dist
from pyotp import Atom
from dist_helpers import COOKIE, WAIT, ErlNode, child_env, unique

# A registered process that only takes binaries (so an atom stays in its mailbox for the
# preview), prints what it takes, and whose death the node reports.
TARGET = (
    'P = spawn(fun() -> (fun L() -> receive B when is_binary(B) -> '
    'io:format("@@got ~p~n", [B]), L() end end)() end), '
    'register(h18_target, P), P ! queued_atom, erlang:monitor(process, P), '
    'io:format("@@ready ~p~n", [node()]), '
    'receive {\'DOWN\', _, process, P, R} -> io:format("@@down ~p~n", [R]) end, '
    'receive stop -> halt() end.')


def _get(url):
    return json.load(urllib.request.urlopen(url, timeout=WAIT))


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"X-Pyotp-Confirm": "yes"})
    return json.load(urllib.request.urlopen(req, timeout=WAIT))


@pytest.mark.erlang
def test_dashboard_attached_to_an_erlang_node():
    import pexpect
    with ErlNode("beam", TARGET) as erl:
        erl.expect("ready")
        c = pexpect.spawn(sys.executable, ["-m", "pyotp", "dashboard", "--node", erl.name,
                                           "--cookie", COOKIE, "--port", "0"],
                          env=child_env(), encoding="utf-8", timeout=WAIT)
        try:
            c.expect(r"pyotp dashboard: %s on (http://127.0.0.1:\d+/)" % re.escape(erl.name))
            url = c.match.group(1)
            snap = _get(url + "api/snapshot?n=1000&sort=memory")
            node = snap["node"]
            assert node["name"] == erl.name and node["kind"] == "beam"
            assert node["rate_unit"] == "reductions" and node["processes"] == len(snap["top"])
            names = {r["name"]: r for r in snap["top"]}
            assert {"code_server", "application_controller", "h18_target"} <= set(names)
            assert names["h18_target"]["message_queue_len"] == 1
            mems = [r["memory"] for r in snap["top"]]
            assert mems == sorted(mems, reverse=True)
            # the node list: the dashboard's own (hidden) connection, with its traffic
            conns = node["connections"]
            assert len(conns) == 1 and conns[0]["hidden"] and conns[0]["node"].startswith("pyotp_cli_")
            assert conns[0]["msgs_in"] > 0 and conns[0]["bytes_out"] > 0

            trees = _get(url + "api/trees")
            kernel = [t for t in trees if t["application"] == "kernel"]
            assert kernel and kernel[0]["name"] == "kernel_sup"
            assert any(ch["id"] == "logger_sup" and ch["type"] == "supervisor"
                       for ch in kernel[0]["children"])

            pid = names["h18_target"]["pid"]
            page = _get(url + "api/process/" + urllib.request.quote(pid))
            assert page["registered_name"] == "h18_target" and page["status"] == "waiting"
            assert any("queued_atom" in m for m in page["messages"])
            assert page["links"] == [] and page["message_queue_len"] == 1

            assert _post(url + "api/process/%s/send" % urllib.request.quote(pid),
                         {"message": "hello"}) == {"ok": True}
            erl.expect("got")          # the Erlang process took the binary
            assert _post(url + "api/process/%s/kill" % urllib.request.quote(pid), {}) == {"ok": True}
            assert erl.expect("down") == "killed"
            with pytest.raises(urllib.error.HTTPError) as e:
                _get(url + "api/process/" + urllib.request.quote(pid))
            assert e.value.code == 404
        finally:
            c.terminate(force=True)


@pytest.mark.erlang
def test_top_on_an_erlang_node_under_a_pty():
    import pexpect
    with ErlNode("beamtop", TARGET) as erl:
        erl.expect("ready")
        c = pexpect.spawn(sys.executable, ["-m", "pyotp", "top", "--node", erl.name, "--cookie",
                                           COOKIE, "--iterations", "2", "--interval", "0.05",
                                           "--sort", "memory", "-n", "100"],
                          env=child_env(), encoding="utf-8", timeout=WAIT, dimensions=(120, 160))
        c.expect(r"pyotp top - %s  processes (\d+)" % re.escape(erl.name))
        c.expect(r"sorted by memory")
        c.expect(r"pyotp_cli_\d+@127.0.0.1 +msgs in \d+ out \d+  bytes in \d+ out \d+")
        c.expect("REDUCTIONS")
        c.expect("code_server")
        c.expect(r"\x1b\[H\x1b\[2J")                 # the second screen
        c.expect(r"reductions/s \d+")                 # BEAM's rate, from two readings
        c.expect(pexpect.EOF)
        c.close()
        assert c.exitstatus == 0


def test_top_and_dashboard_name_the_node_once():
    import subprocess
    for cmd in (["top"], ["top", "a@h", "--node", "b@h"], ["dashboard"]):
        r = subprocess.run([sys.executable, "-m", "pyotp"] + cmd, env=child_env(),
                           capture_output=True, text=True, timeout=WAIT)
        assert r.returncode != 0 and "name the node once" in r.stderr, r.stderr


ECHO = ('register(echo, self()), io:format("@@ready ~p~n", [node()]), '
        '(fun L() -> receive {From, M} -> From ! M, L(); stop -> halt() end end)().')


@pytest.mark.erlang
def test_connection_stats_count_frames_and_bytes():
    """DistChannel.stats() through pyotp.observer.connections(): each message sent and
    received over the connection to an Erlang node is counted, with its bytes."""
    with ErlNode("echo", ECHO) as erl:
        erl.expect("ready")

        async def main():
            assert await pyotp.dist.Node.ping(erl.name) == "pong"
            before = {c["node"]: c for c in pyotp.observer.connections()}[erl.name]
            me = pyotp.self()
            for i in range(10):
                pyotp.send((Atom("echo"), erl.name), (me, b"x" * 1000))
            for i in range(10):
                assert await pyotp.receive(timeout=WAIT) == b"x" * 1000
            after = {c["node"]: c for c in pyotp.observer.connections()}[erl.name]
            info = pyotp.observer.node_info()
            return before, after, info
        before, after, info = pyotp.run(main, node=unique("stats"), cookie=COOKIE)
    assert after["msgs_out"] - before["msgs_out"] == 10
    assert after["msgs_in"] - before["msgs_in"] == 10
    assert after["bytes_out"] - before["bytes_out"] >= 10 * 1000
    assert after["bytes_in"] - before["bytes_in"] >= 10 * 1000
    assert after["pyotp"] is False and isinstance(after["hidden"], bool)
    assert [c["node"] for c in info["connections"]] == [erl.name]


@pytest.mark.erlang
def test_a_nodes_dashboard_shows_a_connected_erlang_node():
    """?node=NAME: a node's own dashboard shows another node it is connected to (here an
    Erlang one, read through BeamSource); an unconnected node is a 404."""
    from urllib.parse import quote
    from test_dashboard import get, post
    with ErlNode("beamview", TARGET) as erl:
        erl.expect("ready")

        async def main():
            d = await pyotp.dashboard.start(0)
            try:
                st_before, _ = await get(d.port, "/api/snapshot?node=" + quote(erl.name))
                assert await pyotp.dist.Node.ping(erl.name) == "pong"
                home = await get(d.port, "/api/snapshot?n=5")
                there = await get(d.port, "/api/snapshot?n=1000&node=" + quote(erl.name))
                trees = await get(d.port, "/api/trees?node=" + quote(erl.name))
                target = [r for r in there[1]["top"] if r["name"] == "h18_target"][0]["pid"]
                page = await get(d.port, "/api/process/%s?node=%s" % (quote(target, safe=""),
                                                                     quote(erl.name)))
                killed = await post(d.port, "/api/process/%s/kill?node=%s"
                                    % (quote(target, safe=""), quote(erl.name)))
                nobody = await get(d.port, "/api/snapshot?node=nobody%40127.0.0.1")
                events = await get(d.port, "/events?node=nobody%40127.0.0.1")
                return st_before, home, there, trees, page, killed, nobody, events
            finally:
                d.close()
        st_before, home, there, trees, page, killed, nobody, events = pyotp.run(
            main, node=unique("view"), cookie=COOKIE)
        assert erl.expect("down") == "killed"
    assert st_before == 404                           # not connected yet: no connecting
    assert home[1]["node"]["connections"][0]["node"] == erl.name
    assert there[1]["node"]["name"] == erl.name and there[1]["node"]["kind"] == "beam"
    assert [t["name"] for t in trees[1] if t["application"] == "kernel"] == ["kernel_sup"]
    assert page[1]["registered_name"] == "h18_target"
    assert killed[0] == 200
    assert nobody[0] == 404 and "not connected" in nobody[1]["error"]
    assert events[0] == 404
