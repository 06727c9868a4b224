"""Carriers under the distribution channel (pyotp.dist.transport): two pyotp nodes over
Unix domain sockets (no EPMD, no port), and the ``transport`` option's validation."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile

import pytest

import pyotp
from pyotp import GenServer
from pyotp.dist import DistError, Node, rpc, run_node
from pyotp.dist.transport import Carrier, TcpCarrier, TlsCarrier, UnixCarrier, carrier_for
from dist_helpers import COOKIE, NodeProc, unique


@pytest.fixture(scope="module")
def sockdir():
    d = tempfile.mkdtemp(prefix="pyotp-uds-", dir="/tmp")    # short: sun_path is ~108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_two_nodes_over_unix_sockets(sockdir):
    with NodeProc("b", role="dist_roles:role_peer", transport="unix:" + sockdir) as b:
        b.expect("ready")
        assert stat.S_ISSOCK(os.stat(os.path.join(sockdir, b.name)).st_mode)

        async def main():
            pong = await Node.ping(b.name)
            r = await GenServer.call(("echo", b.name), "over uds")
            big = await GenServer.call(("echo", b.name), b"x" * (300 << 10))   # a big frame
            fact = await rpc.call(b.name, "math", "factorial", [10])
            return pong, r, big[1] == b"x" * (300 << 10), fact, Node.list()

        pong, r, big_ok, fact, peers = run_node(main, node=unique("a"), cookie=COOKIE,
                                                transport="unix:" + sockdir)
        assert pong == "pong"
        assert r == ("echo", "over uds", b.name)
        assert big_ok
        assert fact == 3628800
        assert peers == [b.name]


def test_unix_carrier_refuses_a_missing_peer(sockdir):
    async def main():
        return await Node.ping(unique("nobody"))
    assert run_node(main, node=unique("a"), cookie=COOKIE, transport="unix:" + sockdir) == "pang"


def test_transport_option():
    assert type(carrier_for(None, None, None)) is TcpCarrier
    assert type(carrier_for("tcp", None, None)) is TcpCarrier
    assert type(carrier_for("tcp", "s", "c")) is TlsCarrier
    u = carrier_for("unix:/tmp/x", None, None)
    assert type(u) is UnixCarrier and not u.needs_port and u.path("a@h") == "/tmp/x/a@h"
    custom = UnixCarrier("/tmp/y")
    assert carrier_for(custom, None, None) is custom
    for bad in ("udp", "unix:", 5):
        with pytest.raises(ValueError, match="transport must be"):
            carrier_for(bad, None, None)
    with pytest.raises(ValueError, match="tls applies to the tcp transport"):
        carrier_for("unix:/tmp/x", "s", "c")
    with pytest.raises(ValueError, match="cannot name a socket file"):
        u.path("../etc@h")
    with pytest.raises(NotImplementedError):
        pyotp.run(lambda: Carrier().connect(None, None, "a@h", "h", 1))   # type: ignore[arg-type]

    async def main():
        await Node.start(unique("a"), cookie=COOKIE, transport="carrier-pigeon")
    with pytest.raises(DistError, match="transport must be"):
        pyotp.run(main)
