"""``python -m pyotp top`` under a pseudo-terminal and ``python -m pyotp dashboard``
attached to a running node through rpc."""
import json
import re
import sys
import urllib.request

import pytest

from dist_helpers import COOKIE, WAIT, child_env
from test_operations import RunProc


@pytest.mark.erlang
def test_top_under_a_pty():
    import pexpect
    with RunProc("top") as n:
        c = pexpect.spawn(sys.executable, ["-m", "pyotp", "top", n.name, "--cookie", COOKIE,
                                           "--iterations", "2", "--interval", "0.05"],
                          env=child_env(), encoding="utf-8", timeout=WAIT, dimensions=(30, 160))
        c.expect(r"pyotp top - %s  processes (\d+)" % re.escape(n.name))
        c.expect("REDUCTIONS")
        c.expect(r"\x1b\[H\x1b\[2J")                 # the second screen
        c.expect(r"messages/s \d+")                   # a rate from two readings
        c.expect(pexpect.EOF)
        c.close()
        assert c.exitstatus == 0


@pytest.mark.erlang
def test_top_unreachable_node_exits_1():
    import pexpect
    c = pexpect.spawn(sys.executable, ["-m", "pyotp", "top", "nobody_here@127.0.0.1",
                                       "--cookie", COOKIE], env=child_env(), encoding="utf-8",
                      timeout=WAIT)
    c.expect("pyotp top: cannot read nobody_here@127.0.0.1")
    c.expect(pexpect.EOF)
    c.close()
    assert c.exitstatus == 1


@pytest.mark.erlang
def test_dashboard_attached_through_rpc():
    import pexpect
    with RunProc("dash") as n:
        c = pexpect.spawn(sys.executable, ["-m", "pyotp", "dashboard", n.name, "--cookie", COOKIE,
                                           "--port", "0"], env=child_env(), encoding="utf-8",
                          timeout=WAIT)
        try:
            c.expect(r"pyotp dashboard: %s on (http://127.0.0.1:\d+/)" % re.escape(n.name))
            url = c.match.group(1)
            snap = json.load(urllib.request.urlopen(url + "api/snapshot?n=3", timeout=WAIT))
            trees = json.load(urllib.request.urlopen(url + "api/trees", timeout=WAIT))
            assert snap["node"]["name"] == n.name and len(snap["top"]) == 3
            assert trees and all(t["type"] == "supervisor" for t in trees)
            # the process page of a remote behaviour carries its state (sys, over rpc)
            full = json.load(urllib.request.urlopen(url + "api/snapshot?n=1000", timeout=WAIT))
            beh = [r for r in full["top"] if r["behaviour"] == "_SupervisorServer"][0]
            page = json.load(urllib.request.urlopen(
                url + "api/process/" + urllib.request.quote(beh["pid"], safe=""), timeout=WAIT))
            assert page["behaviour"] == "_SupervisorServer" and "state" in page
            assert not page["state"].startswith("(unavailable")
            assert page["messages_received"] >= page["message_queue_len"]
        finally:
            c.terminate(force=True)


@pytest.mark.erlang
def test_dist_connection_telemetry_events():
    import pyotp
    from pyotp import telemetry
    from pyotp.dist import Node
    from dist_helpers import unique
    seen = []
    telemetry.attach_many("dist-test", [("pyotp", "dist", "connection_up"),
                                        ("pyotp", "dist", "connection_down")],
                          lambda e, m, md, c: seen.append((e[2], md["peer"])))
    try:
        with RunProc("tele") as n:
            async def main():
                assert await Node.connect(n.name)
                assert Node.disconnect(n.name)
            pyotp.run(main, node=unique("tele_client"), cookie=COOKIE)
    finally:
        telemetry.detach("dist-test")
    assert seen == [("connection_up", n.name), ("connection_down", n.name)]
