"""A distribution connection fed bytes without a socket: a fake transport (the carrier
contract of pyotp/dist/transport.py) runs the handshake with the Connection, which then
hands the transport to its compiled channel (set_protocol); frames split at every
position, big frames, the control operations and malformed input go to whichever is the
transport's protocol, exactly as a socket's reads would."""
from __future__ import annotations

import asyncio
import random
import socket
import struct
import sys
from typing import Any, List, Tuple

import pytest

import pyotp
from pyotp.dist import handshake as hs
from pyotp.dist import run_node
from pyotp.dist.connection import Connection
from pyotp.dist.rpc import REQ
from pyotp.dist.kernel import _await_with_timeout, kernel
from pyotp.etf import Atom, Pid, Reference, decode_with_version, term_to_binary
from dist_helpers import COOKIE, unique

EMPTY = Atom("")


class FakeTransport:
    """Collects what the node writes; closing reports connection_lost as asyncio does."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.aborted = self.closed = self.lost = False
        self.proto: Any = None
        self.gone = asyncio.get_running_loop().create_future()   # connection_lost was called

    def write(self, data: Any) -> None:
        self.out += data

    def writelines(self, chunks: Any) -> None:
        for c in chunks:
            self.out += c

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            asyncio.get_running_loop().call_soon(self._lost)

    def _lost(self) -> None:
        self.proto.connection_lost(None)
        self.gone.set_result(True)

    def set_protocol(self, proto: Any) -> None:
        self.proto = proto

    def get_protocol(self) -> Any:
        return self.proto

    def close(self) -> None:
        self.closed = True
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class SockTransport(FakeTransport):
    """A FakeTransport that reports one end of a socketpair as its socket: the channel may
    send frames on it itself while get_write_buffer_size() (``pending``) is 0; what it
    hands to write() still lands in ``out``."""

    def __init__(self) -> None:
        super().__init__()
        self.sock, self.other = socket.socketpair()
        self.sock.setblocking(False)
        self.other.setblocking(False)
        self.pending = 0

    def get_write_buffer_size(self) -> int:
        return self.pending

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default

    def sent(self) -> bytes:
        """What the channel sent on the socket itself so far (not yet taken)."""
        got = bytearray()
        while True:
            try:
                chunk = self.other.recv(1 << 16)
            except BlockingIOError:
                return bytes(got)
            if not chunk:
                return bytes(got)
            got += chunk


class Peer:
    """A hand-driven peer node on a FakeTransport."""

    def __init__(self, t: Any = None) -> None:
        self.name = unique("fake")
        self.creation = 9
        self.pid = Pid(self.name, 1, 0, self.creation)
        self.t = t if t is not None else FakeTransport()
        self.conn = Connection(kernel(), False)
        self.t.proto = self.conn
        self.conn.connection_made(self.t)
        self.read_at = 0
        self.backlog: List[Tuple[Any, Any]] = []     # frames read, not yet taken (next_frame)

    def feed(self, data: bytes, cuts: Tuple[int, ...] = ()) -> None:
        """Hand ``data`` to the connection as reads that end at the offsets ``cuts``."""
        bounds = [c for c in cuts if 0 < c < len(data)] + [len(data)]
        start = 0
        for end in bounds:
            while start < end:
                proto = self.t.proto       # the Connection, then its channel
                buf = memoryview(proto.get_buffer(end - start))
                n = min(len(buf), end - start)
                buf[:n] = data[start:start + n]
                buf.release()
                proto.buffer_updated(n)
                start += n

    def read2(self) -> bytes:
        out = self.t.out
        (n,) = struct.unpack_from(">H", out, self.read_at)
        msg = bytes(out[self.read_at + 2:self.read_at + 2 + n])
        self.read_at += 2 + n
        return msg

    def handshake(self, flags: int = hs.OUR_FLAGS) -> None:
        self.feed(hs.send_name(flags, self.creation, self.name))
        assert self.read2() == b"sok"
        ch = hs.parse_challenge(self.read2())
        self.feed(hs.send_challenge_reply(4242, hs.digest(ch.challenge, COOKIE)))
        ack = self.read2()
        assert ack[:1] == b"a" and hs.check_digest(ack[1:], 4242, COOKIE)
        assert kernel().conns.get(self.name) is self.conn
        assert self.t.proto is self.conn.ch          # the channel owns the connection now

    def frames(self, flush: bool = True) -> List[Tuple[Any, Any]]:
        """The frames the node wrote since the last call (ticks skipped); with ``flush``
        after it wrote what it holds."""
        if flush:
            self.conn.ch.flush_now()
        out, got = self.t.out, []
        while self.read_at + 4 <= len(out):
            (n,) = struct.unpack_from(">I", out, self.read_at)
            body = bytes(out[self.read_at + 4:self.read_at + 4 + n])
            self.read_at += 4 + n
            if n:
                ctrl, off = decode_with_version(body, 1)
                got.append((ctrl, decode_with_version(body, off)[0] if off < len(body) else None))
        return got


def frame(ctrl: Any, msg: Any = None, with_msg: bool = False) -> bytes:
    body = b"p" + term_to_binary(ctrl) + (term_to_binary(msg) if with_msg or msg is not None else b"")
    return struct.pack(">I", len(body)) + body


async def collector(n: int, report: Pid) -> None:
    got = [await pyotp.receive(timeout=10) for _ in range(n)]
    pyotp.send(report, ("got", got))


async def died(pid: Pid) -> None:
    """Kill ``pid`` and wait for its DOWN here (its remote monitors fire in the same exit)."""
    mref = pyotp.monitor(pid)
    pyotp.exit(pid, "kill")
    await pyotp.receive(lambda m: type(m) is tuple and m[0] == "DOWN" and m[1] == mref, timeout=10)


def run(main: Any) -> Any:
    return run_node(main, node=unique("a"), cookie=COOKIE)


def test_frames_split_at_every_position():
    async def main():
        p = Peer()
        p.handshake()
        size = len(b"".join(frame((2, EMPTY, pyotp.self()), (Atom("m"), i)) for i in range(3)))
        n_cuts = 0
        for cut in range(1, size):
            pid = pyotp.spawn(collector, 3, pyotp.self())
            data = b"".join(frame((2, EMPTY, pid), (Atom("m"), i)) for i in range(3))
            assert len(data) == size
            p.feed(data, (cut, cut + 3))
            got = await pyotp.receive(timeout=10)
            assert got == ("got", [("m", 0), ("m", 1), ("m", 2)]), (cut, got)
            n_cuts += 1
        return n_cuts, p.t.aborted
    n_cuts, aborted = run(main)
    assert n_cuts > 100 and not aborted


def decode_frames(data: bytes) -> List[Tuple[Any, Any]]:
    """Every frame in ``data`` (complete frames only), as (control, message)."""
    got, at = [], 0
    while at < len(data):
        (n,) = struct.unpack_from(">I", data, at)
        body = data[at + 4:at + 4 + n]
        assert len(body) == n, "a frame cut short"
        at += 4 + n
        if n:
            ctrl, off = decode_with_version(body, 1)
            got.append((ctrl, decode_with_version(body, off)[0] if off < len(body) else None))
    return got


@pytest.mark.skipif(sys.platform == "win32", reason="the channel sends on sockets only on POSIX")
def test_frames_sent_on_the_socket_while_the_transport_holds_nothing():
    """With nothing unsent in the transport the channel sends its frames on the socket
    itself; while the transport holds bytes, and for what the socket does not take at
    once, the frames go to the transport's write (after the part already sent)."""
    async def main():
        t = SockTransport()
        p = Peer(t)
        p.handshake()                  # the handshake's messages go through write()
        at = len(t.out)
        pyotp.send(p.pid, ("m", 1))
        p.conn.ch.flush_now()
        direct = decode_frames(t.sent())
        to_transport = len(t.out) - at
        t.pending = 1                  # the transport holds bytes: they go first
        pyotp.send(p.pid, ("m", 2))
        p.conn.ch.flush_now()
        held = p.frames()
        nothing_sent = t.sent()
        # a frame larger than the socket takes at once: the rest goes to write()
        t.pending = 0
        t.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = tuple(range(100000))
        pyotp.send(p.pid, ("m", big))
        at = len(t.out)
        p.conn.ch.flush_now()
        head = t.sent()
        tail = bytes(t.out[at:])
        t.sock.close()
        t.other.close()
        return (direct, to_transport, held, nothing_sent, head, tail, big, pyotp.self(),
                p.pid, t.aborted)
    direct, to_transport, held, nothing_sent, head, tail, big, me, peer, aborted = run(main)

    def sends(frames):      # the SENDs to the peer's process (the node sends others: pg)
        return [(ctrl[2], msg) for ctrl, msg in frames if ctrl[0] == 2]
    assert sends(direct) == [(peer, (b"m", 1))] and to_transport == 0
    assert sends(held) == [(peer, (b"m", 2))] and nothing_sent == b""
    assert 0 < len(head) and 0 < len(tail)          # sent in part, the rest written
    assert sends(decode_frames(head + tail)) == [(peer, (b"m", big))]
    assert not aborted


@pytest.mark.skipif(sys.platform == "win32", reason="the channel sends on sockets only on POSIX")
def test_no_send_on_the_socket_of_a_closing_transport():
    """A closing transport may have closed its fd already (and the number may belong to
    another socket by then): frames go to its write(), never to the fd."""
    async def main():
        t = SockTransport()
        p = Peer(t)
        p.handshake()
        p.conn.ch.flush_now()
        t.sent()                       # what the node sent on its own after the handshake
        at = len(t.out)
        t.closed = True                # close() called, connection_lost not yet
        pyotp.send(p.pid, ("m", 3))
        p.conn.ch.flush_now()
        on_socket = t.sent()
        written = decode_frames(bytes(t.out[at:]))
        t.sock.close()
        t.other.close()
        return on_socket, written, p.pid
    on_socket, written, peer = run(main)
    assert on_socket == b""
    assert [(c[2], m) for c, m in written if c[0] == 2] == [(peer, (b"m", 3))]


def test_big_frames_in_pieces():
    async def main():
        p = Peer()
        p.handshake()
        out = []
        for size, step in ((70 << 10, 1 << 10), (300 << 10, 7 << 10), (2 << 20, 64 << 10)):
            pid = pyotp.spawn(collector, 1, pyotp.self())
            blob = bytes(range(256)) * (size // 256)
            data = frame((2, EMPTY, pid), blob)
            p.feed(data, (1, 2, 3, 4, 5) + tuple(range(step, len(data), step)))
            got = await pyotp.receive(timeout=10)
            out.append(got[1][0] == blob)
        return out, p.t.aborted
    assert run(main) == ([True, True, True], False)


def test_control_operations():
    async def main():
        p = Peer()
        p.handshake()
        me = pyotp.self()
        # REG_SEND
        pyotp.register("chan_test_target", me)
        p.feed(frame((6, p.pid, EMPTY, Atom("chan_test_target")), "by name"))
        r1 = await pyotp.receive(timeout=10)
        pyotp.unregister("chan_test_target")
        # LINK, then EXIT over the link (the local process traps exits)
        pyotp.process_flag("trap_exit", True)
        p.feed(frame((1, p.pid, me)))
        p.feed(frame((3, p.pid, me, Atom("boom"))))
        r2 = await pyotp.receive(timeout=10)
        # LINK again, then UNLINK_ID: the node acknowledges with UNLINK_ID_ACK
        p.feed(frame((1, p.pid, me)))
        p.feed(frame((35, 7, p.pid, me)))
        acks = [f[0] for f in p.frames() if f[0][0] == 36]
        # MONITOR_P of a local process that then ends: MONITOR_P_EXIT goes out
        victim = pyotp.spawn(pyotp.receive)
        ref = Reference(p.name, p.creation, (5, 6, 7))
        p.feed(frame((19, p.pid, victim, ref)))
        await died(victim)
        # the peer offered EXIT_PAYLOAD (OTP 22+): the reason is the payload
        ctrl, reason = [f for f in p.frames() if f[0][0] == 28][0]
        r3 = (ctrl[0], ctrl[1], ctrl[2], ctrl[3], reason)
        # MONITOR_P then DEMONITOR_P: no MONITOR_P_EXIT when the process ends
        victim2 = pyotp.spawn(pyotp.receive)
        ref2 = Reference(p.name, p.creation, (8, 9, 10))
        p.feed(frame((19, p.pid, victim2, ref2)))
        p.feed(frame((20, p.pid, victim2, ref2)))
        await died(victim2)
        # EXIT2 kills an untrapped local process
        target = pyotp.spawn(pyotp.receive)
        mref = pyotp.monitor(target)
        p.feed(frame((8, p.pid, target, Atom("stop_it"))))
        r4 = await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == mref, timeout=10)
        later = [f for f in p.frames() if f[0][0] in (21, 28)]
        # SEND_SENDER
        p.feed(frame((22, p.pid, me), "with sender"))
        r5 = await pyotp.receive(timeout=10)
        return r1, r2, r3, r4[4], later, r5, p.t.aborted, p.name, acks, me
    r1, r2, r3, r4, later, r5, aborted, name, acks, me = run(main)
    assert len(acks) == 1 and acks[0][1] == 7 and acks[0][2] == me and acks[0][3].node == name
    assert r1 == b"by name"         # an Erlang binary, from a non-pyotp peer
    assert r2[0] == "EXIT" and r2[1].node == name and r2[2] == "boom"
    assert r3[0] == 28 and r3[1].node != name and r3[2].node == name and r3[4] == "killed"
    assert r4 == "stop_it"
    assert later == []
    assert r5 == b"with sender"
    assert not aborted


def test_malformed_input_closes_only_that_connection():
    bad_frames = {
        "unknown frame type": struct.pack(">I", 3) + b"zzz",
        "unknown operation": None,           # filled in below (needs the peer's pid)
        "wrong arity": None,
        "truncated term": struct.pack(">I", 4) + b"p\x83h\x05",
        "oversized frame": struct.pack(">I", 0xFFFFFFF0) + b"p",
        "not a control tuple": frame(Atom("hello")),
        "ALIAS_SEND to a non-reference": None,
        "ALIAS_SEND without a payload": None,
        "GROUP_LEADER to an atom": None,
        "SPAWN_REQUEST with a malformed MFA": None,
        "MONITOR_P_EXIT of the wrong arity": None,
        "garbage after the message": None,
        "a big frame of an unknown operation": None,
        "LINK from a pid of this node": None,
    }

    async def main():
        out = {}
        for what in bad_frames:
            p = Peer()
            p.handshake()
            data = bad_frames[what]
            if what == "unknown operation":
                data = frame((99, p.pid, p.pid))
            elif what == "wrong arity":
                data = frame((2, EMPTY), "x")
            elif what == "ALIAS_SEND to a non-reference":
                data = frame((33, p.pid, Atom("not_a_ref")), "x")
            elif what == "ALIAS_SEND without a payload":
                data = frame((33, p.pid, pyotp.make_ref()))
            elif what == "GROUP_LEADER to an atom":
                data = frame((7, p.pid, Atom("x")))
            elif what == "SPAWN_REQUEST with a malformed MFA":
                data = frame((29, pyotp.make_ref(), p.pid, p.pid, Atom("not_mfa"), []), [])
            elif what == "MONITOR_P_EXIT of the wrong arity":
                data = frame((21, p.pid, pyotp.self(), pyotp.make_ref()))
            elif what == "garbage after the message":
                data = frame((2, EMPTY, pyotp.self()), "x")
                data = struct.pack(">I", len(data) - 4 + 3) + data[4:] + b"zzz"
            elif what == "a big frame of an unknown operation":
                data = frame((99, p.pid, p.pid), b"x" * (100 << 10))
            elif what == "LINK from a pid of this node":
                data = frame((1, pyotp.self(), pyotp.self()))
            p.feed(data, (1, 3))
            await _await_with_timeout(p.t.gone, 10)
            out[what] = (p.t.aborted, p.name in kernel().conns)
        ok = Peer()                 # the node still takes connections
        ok.handshake()
        return out, ok.name in kernel().conns
    out, alive = run(main)
    assert out == {w: (True, False) for w in bad_frames}, out
    assert alive


def test_repeated_send_control_terms():
    """The channel matches a SEND's control term by its bytes when it repeats the last
    one (only the payload is decoded) and encodes the head of a SEND once per target:
    alternating targets, SEND_SENDER, splits, and a bad frame after a matched one."""
    async def main():
        p = Peer()
        p.handshake()
        me = pyotp.self()
        a = pyotp.spawn(collector, 5, me)
        b = pyotp.spawn(collector, 2, me)
        data = b"".join([frame((2, EMPTY, a), (Atom("m"), 0)), frame((2, EMPTY, a), (Atom("m"), 1)),
                         frame((2, EMPTY, b), (Atom("m"), 2)), frame((2, EMPTY, a), "three"),
                         frame((22, p.pid, a), (Atom("m"), 4)), frame((22, p.pid, a), [5]),
                         frame((2, EMPTY, b), (Atom("m"), 6))])
        p.feed(data, tuple(range(7, len(data), 13)))
        got = sorted([await pyotp.receive(timeout=10) for _ in range(2)], key=lambda g: len(g[1]))
        # this node's SENDs: the head follows the target (equal pids share one encoding)
        other = Pid(p.name, 2, 0, p.creation)
        for to in (p.pid, p.pid, other, Pid(p.name, 1, 0, p.creation), Pid(p.name, 1, 0, 3), p.pid):
            pyotp.send(to, (Atom("out"), to.creation))
        sent = [(c, m) for c, m in p.frames() if c[0] == 2]
        # a matched control term followed by garbage: that connection closes
        good = frame((2, EMPTY, a), "x")
        p.feed(good + struct.pack(">I", len(good) - 4 + 3) + good[4:] + b"zzz")
        await _await_with_timeout(p.t.gone, 10)
        return got, sent, p.pid, other, p.t.aborted
    got, sent, peer_pid, other, aborted = run(main)
    assert got == [("got", [("m", 2), ("m", 6)]),
                   ("got", [("m", 0), ("m", 1), b"three", ("m", 4), [5]])]
    assert [(c[2], m) for c, m in sent] == [
        (peer_pid, ("out", 9)), (peer_pid, ("out", 9)), (other, ("out", 9)),
        (peer_pid, ("out", 9)), (Pid(peer_pid.node, 1, 0, 3), ("out", 3)), (peer_pid, ("out", 9))]
    assert sent[4][0][2].creation == 3
    assert aborted


# -- the control operations the channel handles itself, and those it hands to Python ----

def spawned_here(to: Any, msg: Any) -> None:
    """What a peer's SPAWN_REQUEST runs here (this module, by name)."""
    pyotp.send(to, msg)


async def next_frame(p: Peer, op: int, seen: List[Tuple[Any, Any]]) -> Tuple[Any, Any]:
    """The first frame with operation ``op`` the node wrote and this did not return yet
    (processes get turns while there is none); every frame read is also added to
    ``seen``."""
    for _ in range(10000):
        got = p.frames()
        seen.extend(got)
        p.backlog.extend(got)
        for i, f in enumerate(p.backlog):
            if f[0][0] == op:
                del p.backlog[i]
                return f
        await asyncio.sleep(0)
    raise AssertionError("the node wrote no frame with operation %d" % op)


async def report_call(server: Any, req: Any, report: Pid) -> None:
    try:
        r: Any = ("ok", await pyotp.GenServer.call(server, req, timeout=10))
    except pyotp.Exit as e:
        r = ("exit", e.reason)
    pyotp.send(report, ("call", r))


async def report_spawn(node: str, report: Pid) -> None:
    from pyotp.dist import Node
    try:
        r: Any = ("ok", await Node.spawn(node, ("remote_mod", "remote_fun"), 1))
    except Exception as e:
        r = ("error", str(e))
    pyotp.send(report, ("spawn", r))


async def report_rpc(node: str, report: Pid) -> None:
    from pyotp.dist import rpc
    pyotp.send(report, ("rpc", await rpc.call(node, "remote_mod", "remote_fun", [2], timeout=10)))


def test_group_leader_alias_send_and_trace_token_forms():
    async def main():
        p = Peer()
        p.handshake()
        me = pyotp.self()
        token = Atom("token")
        # GROUP_LEADER: checked and accepted (pyotp keeps no group leader per process)
        p.feed(frame((7, p.pid, me)))
        # ALIAS_SEND to an active alias of this process, and its _TT form
        a = pyotp.alias()
        p.feed(frame((33, p.pid, a), "to the alias"))
        r1 = await pyotp.receive(timeout=10)
        p.feed(frame((34, p.pid, a, token), "to the alias, traced"))
        r2 = await pyotp.receive(timeout=10)
        # ... to an alias that is gone: dropped
        pyotp.unalias(a)
        p.feed(frame((33, p.pid, a), "dropped"))
        # SEND_TT, SEND_SENDER_TT, REG_SEND_TT
        p.feed(frame((12, EMPTY, me, token), "send tt"))
        p.feed(frame((23, p.pid, me, token), "send sender tt"))
        pyotp.register("chan_tt_target", me)
        p.feed(frame((16, p.pid, EMPTY, Atom("chan_tt_target"), token), "reg send tt"))
        r3 = [await pyotp.receive(timeout=10) for _ in range(3)]
        pyotp.unregister("chan_tt_target")
        # EXIT_TT over a link, and PAYLOAD_EXIT2 (reason as the payload)
        pyotp.process_flag("trap_exit", True)
        p.feed(frame((1, p.pid, me)))
        p.feed(frame((13, p.pid, me, token, Atom("tt_boom"))))
        r4 = await pyotp.receive(timeout=10)
        target = pyotp.spawn(pyotp.receive)
        mref = pyotp.monitor(target)
        p.feed(frame((26, p.pid, target), (Atom("payload_stop"), 1)))
        r5 = await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == mref, timeout=10)
        return r1, r2, r3, r4, r5[4], p.t.aborted, p.name
    r1, r2, r3, r4, r5, aborted, name = run(main)
    assert (r1, r2) == (b"to the alias", b"to the alias, traced")
    assert r3 == [b"send tt", b"send sender tt", b"reg send tt"]
    assert r4[0] == "EXIT" and r4[1].node == name and r4[2] == "tt_boom"
    assert r5 == ("payload_stop", 1)       # an Erlang peer's atoms arrive as str
    assert not aborted


def test_monitors_links_and_calls_written_by_the_channel():
    async def main():
        p = Peer()
        p.handshake()
        me = pyotp.self()
        seen: List[Any] = []
        # a monitor on the peer's process: MONITOR_P out, MONITOR_P_EXIT in -> DOWN
        ref = pyotp.monitor(p.pid)
        mon, _ = await next_frame(p, 19, seen)
        p.feed(frame((21, p.pid, me, ref, Atom("went_away"))))
        down = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "DOWN", timeout=10)
        # the payload form, for a monitor by name
        ref2 = pyotp.monitor(("named", p.name))
        mon2, _ = await next_frame(p, 19, seen)
        p.feed(frame((28, Atom("named"), me, ref2), (Atom("gone"), 2)))
        down2 = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "DOWN", timeout=10)
        # a demonitor before any DOWN: DEMONITOR_P out
        ref3 = pyotp.monitor(p.pid)
        await next_frame(p, 19, seen)
        pyotp.demonitor(ref3)
        demon, _ = await next_frame(p, 20, seen)
        # a link, then the local process exits: LINK then EXIT (payload form) out
        linked = pyotp.spawn(pyotp.receive)
        pyotp.send(linked, "never matched")    # keeps it waiting
        from pyotp.dist import rpc  # noqa: F401  (the node's rpc service is loaded)
        pyotp.link(p.pid)
        link, _ = await next_frame(p, 1, seen)
        pyotp.unlink(p.pid)
        unlink, _ = await next_frame(p, 35, seen)           # UNLINK_ID (negotiated)
        # MONITOR_P from the peer on a name nobody has: the DOWN (noproc) comes at once
        nref = Reference(p.name, p.creation, (1, 2, 3))
        p.feed(frame((19, p.pid, Atom("nobody_here"), nref)))
        noproc = await next_frame(p, 28, seen)
        # ... on a registered name whose process then dies: the DOWN names the name
        victim = pyotp.spawn(pyotp.receive)
        pyotp.register("chan_named_victim", victim)
        vref = Reference(p.name, p.creation, (4, 5, 6))
        p.feed(frame((19, p.pid, Atom("chan_named_victim"), vref)))
        await died(victim)
        named = await next_frame(p, 28, seen)
        # a GenServer call to the peer: MONITOR_P + $gen_call out, ALIAS_SEND reply in,
        # DEMONITOR_P out
        pyotp.spawn(report_call, p.pid, "ping", me)
        cmon, _ = await next_frame(p, 19, seen)
        cref = cmon[3]
        p.feed(frame((33, p.pid, cref), (cref, Atom("pong"))))
        got = await pyotp.receive(lambda m: m[0] == "call", timeout=10)
        cdemon, _ = await next_frame(p, 20, seen)
        # a call whose server dies: MONITOR_P_EXIT in, the caller exits with the reason
        pyotp.spawn(report_call, p.pid, "ping", me)
        cmon2, _ = await next_frame(p, 19, seen)
        p.feed(frame((21, p.pid, cmon2[1], cmon2[3], Atom("server_died"))))
        got2 = await pyotp.receive(lambda m: m[0] == "call", timeout=10)
        return (mon, ref, down, mon2, down2, demon, ref3, link, unlink, noproc, named, vref,
                cmon, cdemon, got, got2, me, p.pid, p.t.aborted, seen)
    (mon, ref, down, mon2, down2, demon, ref3, link, unlink, noproc, named, vref, cmon, cdemon,
     got, got2, me, peer, aborted, seen) = run(main)
    assert mon == (19, me, peer, ref)
    assert down[1] == ref and down[3] == peer and down[4] == "went_away"
    assert mon2[2] == Atom("named") and down2[1] == mon2[3] and down2[4] == ("gone", 2)
    assert demon == (20, me, peer, ref3)
    assert link == (1, me, peer) and unlink[0] == 35 and unlink[2:] == (me, peer)
    assert noproc[0][1:3] == (Atom("nobody_here"), peer) and noproc[1] == Atom("noproc")
    assert named[0][1] == Atom("chan_named_victim") and named[0][3] == vref
    assert named[1] == Atom("killed")
    assert cmon[1] != me and cmon[2] == peer
    assert any(f[0][0] == 2 and f[1][0] == Atom("$gen_call") for f in seen)   # the request
    assert got == ("call", ("ok", "pong")) and cdemon[3] == cmon[3]
    assert got2[1][0] == "exit" and "server_died" in repr(got2[1][1])
    assert not aborted


def test_a_calls_demonitor_waits_for_the_next_write():
    """The DEMONITOR_P that ends a call when its reply arrives is not written by that read:
    it goes out ahead of the node's next frame to the peer, or with the tick."""
    async def main():
        p = Peer()
        p.handshake()
        me = pyotp.self()
        seen: List[Any] = []
        out = []
        for then in ("send", "tick"):
            pyotp.spawn(report_call, p.pid, "ping", me)
            cmon, _ = await next_frame(p, 19, seen)
            p.feed(frame((33, p.pid, cmon[3]), (cmon[3], Atom("pong"))))
            got = await pyotp.receive(lambda m: m[0] == "call", timeout=10)
            held = p.frames(flush=False)          # what the node wrote: not the DEMONITOR_P
            if then == "send":
                pyotp.send(p.pid, "next")
                after: List[Any] = []
                for _ in range(10000):            # the end of the loop turn writes it
                    after += p.frames(flush=False)
                    if any(c[0] == 2 for c, _ in after):
                        break
                    await asyncio.sleep(0)
            else:
                assert p.conn.ch.tick() is False
                after = p.frames(flush=False)
            out.append((got, [c[0] for c, _ in held],
                        [(c[0], c[3] if c[0] == 20 else None) for c, _ in after], cmon[3]))
        return out, p.t.aborted
    out, aborted = run(main)
    for got, held, after, ref in out:
        assert got == ("call", ("ok", "pong")) and 20 not in held
        assert (20, ref) in after
    ops = [c for c, _ in out[0][2]]
    assert ops.index(20) < ops.index(2)              # ahead of the send
    assert not aborted


def test_many_ended_calls_demonitors_wait_up_to_a_bound():
    """Replies to several calls in one read: their DEMONITOR_Ps wait for the next write
    while they are few; past a bound (4 KiB of them) the read writes them all."""
    async def main():
        p = Peer()
        p.handshake()
        me = pyotp.self()
        seen: List[Any] = []
        out = []
        for n in (10, 200):
            for _ in range(n):
                pyotp.spawn(report_call, p.pid, "ping", me)
            refs = [(await next_frame(p, 19, seen))[0][3] for _ in range(n)]
            p.feed(b"".join(frame((33, p.pid, r), (r, Atom("pong"))) for r in refs))
            got = [await pyotp.receive(lambda m: m[0] == "call", timeout=10) for _ in range(n)]
            held = [c[3] for c, _ in p.frames(flush=False) if c[0] == 20]
            rest = [c[3] for c, _ in p.frames() if c[0] == 20]
            out.append((got, refs, held, rest))
        return out, p.t.aborted
    out, aborted = run(main)
    (got, refs, held, rest), (got2, refs2, held2, rest2) = out
    assert got == [("call", ("ok", "pong"))] * 10 and got2 == [("call", ("ok", "pong"))] * 200
    assert held == [] and sorted(rest, key=repr) == sorted(refs, key=repr)
    assert sorted(held2, key=repr) == sorted(refs2, key=repr) and rest2 == []
    assert not aborted


def mutated(good: bytes, keep: int, rng: random.Random) -> bytes:
    """``good`` (one frame) with the bytes after its first ``keep`` body bytes flipped,
    cut, extended or replaced, and its length header fixed to the new body."""
    body = bytearray(good[4:])
    head, tail = body[:keep], bytearray(body[keep:])
    how = rng.randrange(4)
    if how == 0 and tail:
        for _ in range(rng.randint(1, 3)):
            tail[rng.randrange(len(tail))] ^= 1 << rng.randrange(8)
    elif how == 1:
        del tail[rng.randrange(len(tail) + 1):]
    elif how == 2:
        tail += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    else:
        tail = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 60)))
    body = head + tail
    return struct.pack(">I", len(body)) + bytes(body)


def test_fuzzed_payloads_where_the_channel_takes_shortcuts():
    """Hostile payloads behind a control term the channel matches by its bytes (a SEND
    repeating the last one) and in the reply to a call (whose DEMONITOR_P may wait for the
    next write): each connection either delivers what stays well-formed or closes, read
    split anywhere; the caller gets a reply or an exit; the node keeps serving."""
    rng = random.Random(20261206)

    async def main():
        me = pyotp.self()
        closed = delivered = replies = exits = 0     # closed: SEND cases whose connection closed
        for i in range(120):
            p = Peer()
            p.handshake()
            seen: List[Any] = []
            if i % 2 == 0:
                good = frame((2, EMPTY, me), ("fz", i))
                keep = len(b"p" + term_to_binary((2, EMPTY, me)))
                data = good + mutated(good, keep, rng) + frame((2, EMPTY, me), ("fz-end", i))
                p.feed(data, (rng.randrange(1, len(data)),))
                if p.t.aborted:
                    closed += 1
                    continue
                await pyotp.receive(lambda m: m == (b"fz-end", i), timeout=10)
                delivered += 1
            else:
                pyotp.spawn(report_call, p.pid, "ping", me)
                cmon, _ = await next_frame(p, 19, seen)
                ref = cmon[3]
                ctrl = (33, p.pid, ref)
                good = frame(ctrl, (ref, Atom("pong")))
                p.feed(mutated(good, len(b"p" + term_to_binary(ctrl)), rng))
                if not p.t.aborted:
                    p.feed(good)         # the caller may still wait: the real reply
                got = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "call", timeout=10)
                if got[1][0] == "ok":
                    replies += 1
                else:
                    assert got[1][0] == "exit", got
                    exits += 1
        # a fresh connection still works
        p = Peer()
        p.handshake()
        p.feed(frame((2, EMPTY, me), "alive"))
        return closed, delivered, replies, exits, await pyotp.receive(lambda m: m == b"alive", timeout=10)
    closed, delivered, replies, exits, alive = run(main)
    assert alive == b"alive"
    # every case ended one of the ways named, and the fuzz reached each of them
    assert closed + delivered == 60 and replies + exits == 60
    assert closed and delivered and replies and exits, (closed, delivered, replies, exits)


def test_spawn_requests_both_ways_and_an_rpc():
    async def main():
        p = Peer()
        p.handshake()
        me = pyotp.self()
        seen: List[Any] = []
        # the peer spawns here (this module's spawned_here), linked: SPAWN_REPLY out
        req = Reference(p.name, p.creation, (7, 7, 7))
        p.feed(frame((29, req, p.pid, p.pid, (Atom(__name__), Atom("spawned_here"), 2), [Atom("link")]),
                     [me, Atom("spawned")]))
        r1 = await pyotp.receive(timeout=10)
        reply, _ = await next_frame(p, 31, seen)
        # ... a malformed one (args not a list): SPAWN_REPLY badarg
        req2 = Reference(p.name, p.creation, (8, 8, 8))
        p.feed(frame((29, req2, p.pid, p.pid, (Atom(__name__), Atom("spawned_here"), 2), []), "no list"))
        badarg, _ = await next_frame(p, 31, seen)
        # we spawn there: SPAWN_REQUEST out, SPAWN_REPLY in
        pyotp.spawn(report_spawn, p.name, me)
        sreq, args = await next_frame(p, 29, seen)
        new_pid = Pid(p.name, 42, 0, p.creation)
        p.feed(frame((31, sreq[1], sreq[2], 0, new_pid)))
        r2 = await pyotp.receive(lambda m: m[0] == "spawn", timeout=10)
        # ... refused
        pyotp.spawn(report_spawn, p.name, me)
        sreq2, _ = await next_frame(p, 29, seen)
        p.feed(frame((31, sreq2[1], sreq2[2], 0, Atom("not_allowed"))))
        r3 = await pyotp.receive(lambda m: m[0] == "spawn", timeout=10)
        # an rpc: erpc's SPAWN_REQUEST (monitored), SPAWN_REPLY, then the monitor's
        # MONITOR_P_EXIT carries the result
        pyotp.spawn(report_rpc, p.name, me)
        rreq, rargs = await next_frame(p, 29, seen)
        worker = Pid(p.name, 43, 0, p.creation)
        p.feed(frame((31, rreq[1], rreq[2], 2, worker)))
        p.feed(frame((21, worker, rreq[2], rreq[1], (rargs[0], Atom("return"), 42))))
        r4 = await pyotp.receive(lambda m: m[0] == "rpc", timeout=10)
        return r1, reply, req, badarg, req2, sreq, args, r2, new_pid, r3, rreq, rargs, r4, p.t.aborted
    r1, reply, req, badarg, req2, sreq, args, r2, new_pid, r3, rreq, rargs, r4, aborted = run(main)
    assert r1 == "spawned"
    assert reply[1] == req and reply[3] == 1 and type(reply[4]) is Pid      # flags: link
    assert badarg[1] == req2 and badarg[4] == Atom("badarg")
    assert sreq[4] == (Atom("remote_mod"), Atom("remote_fun"), 1) and args == [1]
    assert r2 == ("spawn", ("ok", new_pid))
    assert r3[1][0] == "error" and "not_allowed" in r3[1][1]
    assert rreq[4] == (Atom("erpc"), Atom("execute_call"), 4) and rreq[5] == [Atom("monitor")]
    assert rargs[1:] == [Atom("remote_mod"), Atom("remote_fun"), [2]]
    assert r4 == ("rpc", 42)
    assert not aborted


def test_ticks_and_requests_at_nodedown():
    async def main():
        p = Peer()
        p.handshake()
        me = pyotp.self()
        ch = p.conn.ch
        ch.flush_now()
        ch.tick()                   # a period begins (what the node wrote so far counted)
        before = len(p.t.out)
        assert ch.tick() is False and ch.tick() is False    # idle: a tick goes out each time
        ticks = bytes(p.t.out[before:])
        p.read_at = len(p.t.out)
        p.feed(b"\x00\x00\x00\x00")                         # the peer's tick counts as traffic
        alive = [ch.tick() for _ in range(4)]
        dead = ch.tick()                                    # four periods without a frame
        # a call in flight when the connection goes: it fails with noconnection
        pyotp.spawn(report_call, p.pid, "ping", me)
        cmon, _ = await next_frame(p, 19, [])
        tracked = ch.tracked(cmon[3])
        p.t.abort()
        got = await pyotp.receive(lambda m: m[0] == "call", timeout=10)
        return ticks, alive, dead, got, tracked, ch.tracked(cmon[3]), p.name in kernel().conns
    ticks, alive, dead, got, tracked, after, still = run(main)
    assert tracked is not None and tracked[0] == REQ["call"] and after is None
    assert ticks == b"\x00\x00\x00\x00" * 2
    assert alive == [False] * 4 and dead is True
    assert got[1][0] == "exit" and "noconnection" in repr(got[1][1])
    assert not still
