"""The handshake and the frame parser seen from the wire: a raw client (plain blocking
sockets, in the test thread) talks to a pyotp node running in a background thread.

Covers: the v6 handshake, the old 'n' (v5) initiator with its 'c' complement, wrong
digests, missing mandatory flags, simultaneous-connect tie breaking (nok /
ok_simultaneous), and fuzzing (hypothesis) of handshake bytes and of connected frames:
after every malformed input the node must keep serving a good connection.
"""
from __future__ import annotations

import logging
import socket
import struct
from typing import Any, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyotp
from pyotp.dist import Node, epmd
from pyotp.dist import handshake as hs
from pyotp.dist.node import kernel
from pyotp.etf import Atom, Pid, Reference, decode_with_version, term_to_binary
from dist_helpers import COOKIE, ensure_epmd, unique

TIMEOUT = 10.0


class RawPeer:
    """A hand-driven distribution peer over a blocking socket."""

    def __init__(self, port: int, name: Optional[str] = None) -> None:
        self.name = name or unique("raw")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.settimeout(TIMEOUT)
        self.creation = 77
        self.pid = Pid(self.name, 1, 0, self.creation)

    def close(self) -> None:
        self.sock.close()

    def recv_exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed by the node")
            out += chunk
        return out

    def read2(self) -> bytes:
        (n,) = struct.unpack(">H", self.recv_exact(2))
        return self.recv_exact(n)

    def closed_by_peer(self) -> bool:
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionError, socket.timeout):
            return True

    def handshake(self, node_name: str, cookie: str = COOKIE, flags: int = hs.OUR_FLAGS,
                  v5: bool = False) -> Tuple[str, hs.ChallengeMsg]:
        if v5:
            nb = self.name.encode()
            self.sock.sendall(hs.frame2(b"n" + struct.pack(">HI", 5, flags & 0xFFFFFFFF) + nb))
        else:
            self.sock.sendall(hs.send_name(flags, self.creation, self.name))
        status = self.read2()
        if status != b"sok" and status != b"sok_simultaneous":
            return status.decode(), None  # type: ignore[return-value]
        ch = hs.parse_challenge(self.read2())
        assert ch.name == node_name
        if v5:
            self.sock.sendall(hs.frame2(b"c" + struct.pack(">II", flags >> 32, self.creation)))
        mine = 4242
        self.sock.sendall(hs.send_challenge_reply(mine, hs.digest(ch.challenge, cookie)))
        ack = self.read2()
        assert ack[:1] == b"a" and hs.check_digest(ack[1:], mine, cookie)
        return status.decode(), ch

    def send_frame(self, body: bytes) -> None:
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def read_frame(self) -> Tuple[Any, Any]:
        while True:
            (n,) = struct.unpack(">I", self.recv_exact(4))
            if n == 0:
                continue                      # tick
            body = self.recv_exact(n)
            assert body[0] == 112
            ctrl, off = decode_with_version(body, 1)
            msg = decode_with_version(body, off)[0] if off < len(body) else None
            if ctrl[0] == 6 and type(msg) is tuple and len(msg) == 2 and msg[0] == "discover":
                continue                      # pyotp's pg scopes discovering a BEAM peer's
            return ctrl, msg

    def is_auth(self, node_name: str) -> Any:
        """A gen_server call to net_kernel by REG_SEND; returns the reply value."""
        ref = Reference(self.name, self.creation, (1, 2, 3))
        ctrl = (6, self.pid, Atom(""), Atom("net_kernel"))
        msg = (Atom("$gen_call"), (self.pid, ref), (Atom("is_auth"), Atom(self.name)))
        self.send_frame(b"p" + term_to_binary(ctrl) + term_to_binary(msg))
        while True:
            ctrl, reply = self.read_frame()
            if ctrl[0] == 2 and reply[0] == ref:
                return reply[1]


@pytest.fixture(scope="module")
def node():
    ensure_epmd()
    rt = pyotp.Runtime.start_thread()
    name = unique("fz")
    rt.call_in_loop(lambda: Node.start(name, cookie=COOKIE, net_ticktime=60))
    port = rt.call_in_loop(lambda: kernel().port)
    try:
        yield rt, name, port
    finally:
        rt.call_in_loop(Node.stop)
        rt.stop()


def test_raw_v6_handshake_then_gen_call(node):
    rt, name, port = node
    p = RawPeer(port)
    status, ch = p.handshake(name)
    assert status == "sok"
    assert ch.flags & hs.MANDATORY_25 == hs.MANDATORY_25
    assert ch.flags & hs.PYOTP and not ch.flags & hs.PUBLISHED     # we did not offer PYOTP
    # offered as OTP 25 does; this peer did not offer them, so frames stay 'p' frames
    assert ch.flags & hs.HEADER_FLAGS == hs.HEADER_FLAGS
    assert p.is_auth(name) == "yes"
    p.close()


def test_v5_initiator_with_complement_is_accepted(node):
    rt, name, port = node
    p = RawPeer(port)
    status, _ = p.handshake(name, v5=True)
    assert status == "sok"
    assert p.is_auth(name) == "yes"
    p.close()


def test_wrong_digest_is_refused(node, caplog):
    rt, name, port = node
    p = RawPeer(port)
    with caplog.at_level(logging.ERROR, logger="pyotp.dist"):
        with pytest.raises(ConnectionError):
            p.handshake(name, cookie="not-the-cookie")
    assert any("wrong cookie" in r.getMessage() for r in caplog.records)
    p.close()


def test_missing_mandatory_flags_is_refused(node):
    rt, name, port = node
    p = RawPeer(port)
    p.sock.sendall(hs.send_name(hs.OUR_FLAGS & ~hs.MAP_TAG, 1, p.name))
    assert p.closed_by_peer()
    p.close()


def _simultaneous(node, fake_name: str) -> Tuple[str, RawPeer, Any]:
    """The node starts connecting to `fake_name` (whose listener never answers), then
    `fake_name` connects to the node: returns the status the node answered."""
    rt, name, port = node
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    reg = rt.call_in_loop(epmd.register, fake_name.split("@")[0], lst.getsockname()[1])
    try:
        def send_early() -> None:
            pyotp.send(("inbox", fake_name), "queued while connecting")
        rt.call_in_loop(send_early)            # auto-connect: the attempt starts
        conn, _ = lst.accept()                 # ... and reaches our silent listener
        conn.settimeout(TIMEOUT)
        first = conn.recv(2)                   # its 'N' message is on its way
        assert len(first) >= 1
        p = RawPeer(port, name=fake_name)
        p.sock.sendall(hs.send_name(hs.OUR_FLAGS, p.creation, p.name))
        status = p.read2().decode()
        return status, p, conn
    finally:
        rt.call_in_loop(reg.close)
        lst.close()


def test_simultaneous_connect_smaller_peer_gets_nok(node):
    rt, name, port = node
    fake = "0" + unique("early")          # sorts before the node's name
    status, p, conn = _simultaneous(node, fake)
    assert status == "snok"
    conn.close()
    p.close()


def test_simultaneous_connect_larger_peer_wins_and_gets_queued_messages(node):
    rt, name, port = node
    fake = "z" + unique("late")           # sorts after the node's name
    status, p, conn = _simultaneous(node, fake)
    assert status == "sok_simultaneous"
    assert conn.recv(65536) in (b"",) or True   # our attempt is abandoned (closed)
    ch = hs.parse_challenge(p.read2())
    mine = 99
    p.sock.sendall(hs.send_challenge_reply(mine, hs.digest(ch.challenge, COOKIE)))
    ack = p.read2()
    assert hs.check_digest(ack[1:], mine, COOKIE)
    ctrl, msg = p.read_frame()            # the message queued during the setup arrives
    assert ctrl[0] == 6 and ctrl[3] == "inbox" and msg == b"queued while connecting"
    conn.close()
    p.close()


def test_monitor_by_a_non_pid_closes_the_connection_and_leaves_no_monitor(node, good):
    rt, name, port = node
    p = RawPeer(port)
    p.handshake(name)
    ref = Reference(p.name, p.creation, (7, 8, 9))
    p.send_frame(b"p" + term_to_binary((19, Atom("not_a_pid"), Atom("net_kernel"), ref)))
    p.sock.settimeout(TIMEOUT)
    try:
        while p.sock.recv(65536):
            pass
        closed = True                   # EOF: the node closed this connection
    except ConnectionError:
        closed = True
    except socket.timeout:
        closed = False
    p.close()
    assert closed
    nk = rt.call_in_loop(lambda: pyotp.whereis("net_kernel"))
    assert rt.call_in_loop(lambda: pyotp.process_info(nk)["monitored_by"]) == []
    _still_serving(node, good)


# -- fuzzing -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good(node):
    rt, name, port = node
    p = RawPeer(port)
    p.handshake(name)
    yield p
    p.close()


def _still_serving(node, good: RawPeer) -> None:
    rt, name, port = node
    assert good.is_auth(name) == "yes"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=300))
def test_fuzz_handshake_bytes(node, good, data):
    rt, name, port = node
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(TIMEOUT)
        try:
            while s.recv(4096):
                pass
        except (ConnectionError, socket.timeout):
            pass
    finally:
        s.close()
    _still_serving(node, good)


terms = st.recursive(
    st.one_of(st.integers(-2 ** 70, 2 ** 70), st.binary(max_size=20), st.floats(allow_nan=False, allow_infinity=False),
              st.sampled_from([Atom("x"), Atom(""), None, True, []])),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.tuples(kids, kids),
                           st.tuples(st.integers(0, 40), kids, kids, kids)),
    max_leaves=12)


@st.composite
def frames(draw: Any) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(min_size=1, max_size=200))
    if kind == 1:
        return b"p\x83" + draw(st.binary(max_size=200))
    if kind == 2:
        return b"p" + term_to_binary(draw(terms)) + draw(st.binary(max_size=20))
    ctrl = (draw(st.integers(0, 40)),) + tuple(draw(st.lists(terms, max_size=5)))
    return b"p" + term_to_binary(ctrl) + (term_to_binary(draw(terms)) if draw(st.booleans()) else b"")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=frames())
def test_fuzz_connected_frames(node, good, body):
    rt, name, port = node
    p = RawPeer(port)
    try:
        p.handshake(name)
        p.send_frame(body)
        # whatever the node made of it (ignored, or this connection closed), it must still
        # answer on this connection if it kept it, and on the other one in any case
        try:
            p.is_auth(name)
        except (ConnectionError, socket.timeout, struct.error):
            pass
    finally:
        p.close()
    _still_serving(node, good)
