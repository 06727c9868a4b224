"""Attacks on the distribution port, seen from the wire (issue 11, findings 3-9): a raw
client (blocking sockets, in the test thread) against a pyotp node in a background thread
that runs with small limits.

Covers: an unauthenticated connection that claims a connected node's name (``alive``)
or only sends a name changes nothing; max_handshakes; a huge frame header allocates
nothing up front and max_frame_size closes the connection; closed connections are freed
by reference counting alone; max_inflated_size (decompression bombs); every unknown or
malformed control message closes its connection with a logged reason, while well-formed
rare ones (ALIAS_SEND to an unknown alias, MONITOR_P_EXIT, UNLINK_ID) are accepted; the
in-node EPMD's limits; option validation.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import socket
import struct
from typing import Any, Callable

import pytest

import pyotp
from pyotp.dist import Node, epmd
from pyotp.dist import handshake as hs
from pyotp.dist.connection import Connection
from pyotp.dist.node import NetKernel, kernel
from pyotp.etf import Atom, Reference, term_to_binary
from dist_helpers import COOKIE, ensure_epmd, unique
from test_dist_handshake import TIMEOUT, RawPeer

FIRST_BIG = pyotp._core.DIST_FIRST_BIG   # a new big-frame buffer starts this large

MAX_FRAME = 16 << 20
MAX_INFLATED = 1 << 20
MAX_HANDSHAKES = 4


async def _sink() -> None:
    """Answers (pid, data) with (len, head, tail) of data."""
    while True:
        msg = await pyotp.receive()
        pyotp.send(msg[0], (len(msg[1]), msg[1][:4], msg[1][-4:]))


@pytest.fixture(scope="module")
def node():
    ensure_epmd()
    rt = pyotp.Runtime.start_thread()
    name = unique("lim")
    rt.call_in_loop(lambda: Node.start(name, cookie=COOKIE, net_ticktime=60, max_frame_size=MAX_FRAME,
                                       max_inflated_size=MAX_INFLATED, max_handshakes=MAX_HANDSHAKES))
    port = rt.call_in_loop(lambda: kernel().port)
    rt.call_in_loop(lambda: pyotp.register("limits_sink", pyotp.spawn(_sink)))
    try:
        yield rt, name, port
    finally:
        rt.call_in_loop(Node.stop)
        rt.stop()


@pytest.fixture(scope="module")
def good(node):
    rt, name, port = node
    p = RawPeer(port)
    p.handshake(name)
    yield p
    p.close()


def _until(rt: Any, cond: Callable[[], Any]) -> Any:
    """Ask the node's loop until ``cond()`` (run there) is true: each try is a round trip
    through the loop, after what the node had already queued."""
    for _ in range(20000):
        v = rt.call_in_loop(cond)
        if v:
            return v
    raise AssertionError("the node never reached the expected state")


def _settled(rt: Any) -> None:
    """The node has processed every handshake that was closed."""
    _until(rt, lambda: not kernel().handshaking)


def _closed(p: RawPeer) -> bool:
    """True when the node closes this connection (False on a timeout: still open)."""
    try:
        while p.sock.recv(65536):
            pass
        return True
    except ConnectionError:
        return True
    except socket.timeout:
        return False


def _alive_claim(p: RawPeer) -> None:
    """Send the name of a connected node, answer 'alive' with true: the node goes on with
    the challenge (read here)."""
    p.sock.sendall(hs.send_name(hs.OUR_FLAGS, p.creation, p.name))
    assert p.read2() == b"salive"
    p.sock.sendall(hs.frame2(b"strue"))
    hs.parse_challenge(p.read2())


# -- findings 3, 4: nothing changes before the cookie is proven ----------------------------

def test_alive_claim_without_the_cookie_keeps_the_real_connection(node, caplog):
    rt, name, port = node
    real = RawPeer(port)
    real.handshake(name)
    conn = rt.call_in_loop(lambda: kernel().conns[real.name])
    fake = RawPeer(port, name=real.name)
    _alive_claim(fake)
    # the real connection is still the node's and still serves
    assert rt.call_in_loop(lambda: kernel().conns.get(real.name)) is conn
    assert real.is_auth(name) == "yes"
    with caplog.at_level(logging.ERROR, logger="pyotp.dist"):
        fake.sock.sendall(hs.send_challenge_reply(1, b"\0" * 16))      # no cookie
        assert _closed(fake)
    assert real.is_auth(name) == "yes"
    assert rt.call_in_loop(lambda: kernel().conns.get(real.name)) is conn
    fake.close()
    real.close()


def test_alive_claim_with_the_cookie_replaces_the_stale_connection(node):
    rt, name, port = node
    old = RawPeer(port)
    old.handshake(name)
    new = RawPeer(port, name=old.name)          # the same node, restarted
    new.sock.sendall(hs.send_name(hs.OUR_FLAGS, new.creation, new.name))
    assert new.read2() == b"salive"
    new.sock.sendall(hs.frame2(b"strue"))
    ch = hs.parse_challenge(new.read2())
    new.sock.sendall(hs.send_challenge_reply(5, hs.digest(ch.challenge, COOKIE)))
    ack = new.read2()
    assert hs.check_digest(ack[1:], 5, COOKIE)
    assert _closed(old)                          # replaced once the new one proved the cookie
    assert new.is_auth(name) == "yes"
    old.close()
    new.close()


def test_a_name_only_connection_does_not_block_the_real_node(node):
    rt, name, port = node
    for real_name in ("a" + unique("nm"), "z" + unique("nm")):    # either side of our name
        blocker = RawPeer(port, name=real_name)
        blocker.sock.sendall(hs.send_name(hs.OUR_FLAGS, blocker.creation, blocker.name))
        assert blocker.read2() == b"sok"
        real = RawPeer(port, name=real_name)
        status, _ = real.handshake(name)
        assert status == "sok"
        assert real.is_auth(name) == "yes"
        blocker.close()
        real.close()
    _settled(rt)


def test_max_handshakes_closes_extra_unauthenticated_connections(node, good, caplog):
    rt, name, port = node
    _settled(rt)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(MAX_HANDSHAKES)]
    try:
        with caplog.at_level(logging.WARNING, logger="pyotp.dist"):
            extra = RawPeer(port)
            assert _closed(extra)
            extra.close()
        assert any("max_handshakes" in r.getMessage() for r in caplog.records)
        assert good.is_auth(name) == "yes"      # authenticated connections are not counted
    finally:
        for s in idle:
            s.close()
    _settled(rt)
    p = RawPeer(port)
    assert p.handshake(name)[0] == "sok"        # room again once they are gone
    p.close()


# -- finding 5: frame size --------------------------------------------------------------

def test_a_big_frame_header_allocates_only_what_arrives(node):
    rt, name, port = node
    p = RawPeer(port)
    p.handshake(name)
    data = bytes(range(256)) * (12 << 12)       # 12 MiB
    body = (b"p" + term_to_binary((6, p.pid, Atom(""), Atom("limits_sink")))
            + term_to_binary((p.pid, data)))
    p.sock.sendall(struct.pack(">I", len(body)) + body[:100])
    conn = rt.call_in_loop(lambda: kernel().conns[p.name])
    _until(rt, lambda: conn.ch.big is not None)
    first = conn.ch.big
    assert len(first) <= FIRST_BIG < len(body)
    p.sock.sendall(body[100:])
    ctrl, reply = p.read_frame()
    assert reply == (len(data), data[:4], data[-4:])
    # it grew in place (no copy of what had arrived), and is kept for reuse
    assert rt.call_in_loop(lambda: any(b is first and len(b) == len(body) for b in conn.ch.spare_buffers()))
    p.close()


def test_a_frame_over_max_frame_size_closes_the_connection(node, good, caplog):
    rt, name, port = node
    p = RawPeer(port)
    p.handshake(name)
    with caplog.at_level(logging.WARNING, logger="pyotp.dist"):
        p.sock.sendall(struct.pack(">I", (1 << 31) - 1) + b"p\x83")
        assert _closed(p)
    assert any("max_frame_size" in r.getMessage() for r in caplog.records)
    p.close()
    assert good.is_auth(name) == "yes"


# -- finding 6: closed connections are freed by reference counting ----------------------

def _count(cls: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is cls)


def test_closed_connections_are_freed_without_the_cyclic_gc(node):
    rt, name, port = node
    _settled(rt)
    gc.collect()
    gc.disable()
    try:
        before = _count(Connection), _count(pyotp._core.DistChannel)
        names = []
        for i in range(10):
            bad = RawPeer(port)                  # refused in the handshake (bad name)
            bad.sock.sendall(hs.send_name(hs.OUR_FLAGS, 1, "no-at-sign"))
            assert _closed(bad)
            bad.close()
            half = RawPeer(port)                 # only a name, then gone
            half.sock.sendall(hs.send_name(hs.OUR_FLAGS, 1, half.name))
            assert half.read2() == b"sok"
            half.close()
            up = RawPeer(port)                   # authenticated, used, then gone
            up.handshake(name)
            assert up.is_auth(name) == "yes"
            names.append(up.name)
            up.close()
        _settled(rt)
        _until(rt, lambda: not any(n in kernel().conns for n in names))
        after = rt.call_in_loop(lambda: (_count(Connection), _count(pyotp._core.DistChannel)))
        assert after == before
    finally:
        gc.enable()


# -- finding 8: compressed terms ----------------------------------------------------------

def test_a_decompression_bomb_closes_the_connection(node, good, caplog):
    rt, name, port = node
    p = RawPeer(port)
    p.handshake(name)
    bomb = term_to_binary(b"\0" * (4 * MAX_INFLATED), compressed=9)
    assert len(bomb) < 10000
    with caplog.at_level(logging.WARNING, logger="pyotp.dist"):
        p.send_frame(b"p" + term_to_binary((6, p.pid, Atom(""), Atom("limits_sink"))) + bomb)
        assert _closed(p)
    assert any("over the limit" in r.getMessage() for r in caplog.records)
    p.close()
    assert good.is_auth(name) == "yes"
    # under the limit, a compressed message is delivered
    q = RawPeer(port)
    q.handshake(name)
    q.send_frame(b"p" + term_to_binary((6, q.pid, Atom(""), Atom("limits_sink")))
                 + term_to_binary((q.pid, b"\1" * (MAX_INFLATED // 2)), compressed=True))
    assert q.read_frame()[1] == (MAX_INFLATED // 2, b"\1" * 4, b"\1" * 4)
    q.close()


# -- finding 9: control messages ----------------------------------------------------------

def _junk(p: RawPeer) -> Any:
    ref = Reference(p.name, p.creation, (1, 2, 3))
    return {
        "unknown op": (99, p.pid),
        "SEND to a non-pid": ((2, Atom(""), Atom("net_kernel")), "hello"),
        "DEMONITOR_P junk": (20, 1, 2, 3),
        "DEMONITOR_P with a non-ref": (20, p.pid, Atom("net_kernel"), 5),
        "MONITOR_P_EXIT junk": (21, 1, 2, 3, 4),
        "UNLINK_ID junk": (35, Atom("a"), 1, 2),
        "short ALIAS_SEND": ((33, p.pid), "hello"),
        "ALIAS_SEND to a non-ref": ((33, p.pid, p.pid), "hello"),
        "LINK without its payload shape": (1, p.pid),
        "MONITOR_P_EXIT with a payload": ((21, p.pid, p.pid, ref, Atom("normal")), "extra"),
        "SEND without a payload": (2, Atom(""), p.pid),
    }


_JUNK_CASES = ["unknown op", "SEND to a non-pid", "DEMONITOR_P junk", "DEMONITOR_P with a non-ref",
               "MONITOR_P_EXIT junk", "UNLINK_ID junk", "short ALIAS_SEND", "ALIAS_SEND to a non-ref",
               "LINK without its payload shape", "MONITOR_P_EXIT with a payload",
               "SEND without a payload"]


@pytest.mark.parametrize("case", _JUNK_CASES)
def test_a_malformed_control_message_closes_the_connection(node, good, caplog, case):
    rt, name, port = node
    p = RawPeer(port)
    p.handshake(name)
    junk = _junk(p)[case]
    if type(junk[0]) is tuple:
        frame = b"p" + term_to_binary(junk[0]) + term_to_binary(junk[1])
    else:
        frame = b"p" + term_to_binary(junk)
    with caplog.at_level(logging.WARNING, logger="pyotp.dist"):
        p.send_frame(frame)
        assert _closed(p)
    assert any("protocol error from %s" % p.name in r.getMessage() for r in caplog.records)
    p.close()
    assert good.is_auth(name) == "yes"


def test_well_formed_rare_control_messages_are_accepted(node):
    rt, name, port = node
    p = RawPeer(port)
    p.handshake(name)
    ref = Reference(p.name, p.creation, (4, 5, 6))
    nk = rt.call_in_loop(lambda: pyotp.whereis("net_kernel"))
    # an ALIAS_SEND to an alias nobody has is dropped, as BEAM does
    p.send_frame(b"p" + term_to_binary((33, p.pid, ref)) + term_to_binary("lost"))
    p.send_frame(b"p" + term_to_binary((34, p.pid, ref, Atom("token"))) + term_to_binary("lost"))
    # a DOWN for a monitor we do not have is ignored
    p.send_frame(b"p" + term_to_binary((21, p.pid, nk, ref, Atom("normal"))))
    # UNLINK_ID is acknowledged
    p.send_frame(b"p" + term_to_binary((35, 7, p.pid, nk)))
    ctrl, _ = p.read_frame()
    assert ctrl == (36, 7, nk, p.pid)
    assert p.is_auth(name) == "yes"
    p.close()


# -- finding 7: the in-node EPMD ----------------------------------------------------------

def test_epmd_limits_registrations_per_host_and_connections(node):
    async def main() -> None:
        srv = await epmd.EpmdServer.start("127.0.0.1", 0, max_per_host=3, max_connections=6)
        try:
            regs = [await epmd.register("r%d" % i, 5000 + i, port=srv.port) for i in range(3)]
            with pytest.raises(epmd.EpmdError):
                await epmd.register("r3", 5003, port=srv.port)
            assert sorted(n for n, _ in await epmd.names(port=srv.port)) == ["r0", "r1", "r2"]
            regs.pop().close()
            again = await epmd.register("r3", 5003, port=srv.port)   # a slot was freed
            # 3 registrations hold 3 connections: 3 more idle ones fill max_connections
            idle = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(3)]
            r, w = await asyncio.open_connection("127.0.0.1", srv.port)
            assert await asyncio.wait_for(r.read(), TIMEOUT) == b""         # closed at once
            w.close()
            for _, iw in idle:
                iw.close()
            for reg in regs + [again]:
                reg.close()
        finally:
            srv.close()
    node[0].call_in_loop(main)


def test_epmd_limit_options_are_checked(node):
    async def main() -> None:
        with pytest.raises(ValueError, match="max_per_host"):
            await epmd.EpmdServer.start("127.0.0.1", 0, max_per_host=0)
        with pytest.raises(TypeError, match="max_connections"):
            await epmd.EpmdServer.start("127.0.0.1", 0, max_connections="10")  # type: ignore[arg-type]
    node[0].call_in_loop(main)


@pytest.mark.parametrize("option,value,exc", [
    ("max_frame_size", 1000, ValueError), ("max_frame_size", "big", TypeError),
    ("max_inflated_size", -1, ValueError), ("max_handshakes", 0, ValueError),
    ("max_handshakes", 2.5, TypeError), ("epmd_max_per_host", 0, ValueError),
    ("epmd_max_connections", True, TypeError)])
def test_limit_options_are_checked(node, option, value, exc):
    async def main() -> None:
        with pytest.raises(exc, match=option):
            NetKernel("x@127.0.0.1", "c", hidden=False, listen_host="127.0.0.1", port=0,
                      net_ticktime=60, epmd="auto", tls=None, rpc_allow=None, setup_time=7.0,
                      python_payloads=True, **{option: value})
    node[0].call_in_loop(main)


def test_a_failed_simultaneous_handshake_makes_the_node_dial_again(node):
    """A connection that claims the name of a node we are dialling (and wins the tie
    break, as OTP's rule says) makes us drop our attempt; when it then fails, never
    having proven the cookie, the node dials again instead of giving up."""
    rt, name, port = node
    fake = "z" + unique("sim")                  # sorts after the node's name: theirs wins
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(2)
    lst.settimeout(TIMEOUT)
    reg = rt.call_in_loop(epmd.register, fake.split("@")[0], lst.getsockname()[1])
    try:
        rt.call_in_loop(lambda: pyotp.send(("inbox", fake), "queued"))   # the node dials
        first, _ = lst.accept()
        first.settimeout(TIMEOUT)
        assert first.recv(2)                    # its name message is on its way
        claim = RawPeer(port, name=fake)
        claim.sock.sendall(hs.send_name(hs.OUR_FLAGS, claim.creation, claim.name))
        assert claim.read2() == b"sok_simultaneous"
        claim.close()                           # never proves the cookie
        again, _ = lst.accept()                 # the node dials once more
        again.settimeout(TIMEOUT)
        assert again.recv(2)
        again.close()
        first.close()
    finally:
        rt.call_in_loop(reg.close)
        lst.close()


def test_decode_with_version_refuses_a_compressed_term_over_max_inflated():
    from pyotp.etf import DecodeError, decode_with_version
    data = term_to_binary(b"x" * 1000, compressed=True)
    assert decode_with_version(data, max_inflated=1005)[0] == b"x" * 1000
    with pytest.raises(DecodeError, match="over the limit of 1004"):
        decode_with_version(data, max_inflated=1004)
    with pytest.raises(ValueError, match="max_inflated"):
        decode_with_version(data, max_inflated=-1)


def test_pyotp_run_passes_the_limits_to_node_start():
    """pyotp.run(node=...) takes the limits (checked in a child: one node per process)."""
    import subprocess
    import sys
    from dist_helpers import child_env
    code = ("import pyotp\n"
            "async def main():\n"
            "    return 'started'\n"
            "try:\n"
            "    pyotp.run(main, node=%r, cookie='c', epmd='none', port=1, max_handshakes=0)\n"
            "except ValueError as e:\n"
            "    print('refused:', e)\n" % unique("run"))
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True,
                         text=True, timeout=60)
    assert "refused: max_handshakes must be from 1" in out.stdout, out.stderr
