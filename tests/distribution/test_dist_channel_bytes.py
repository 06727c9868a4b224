"""A distribution connection fed bytes without a socket: a fake transport (the carrier
contract of pyotp/dist/transport.py) runs the handshake, then frames split at every
position, big frames, the control operations and malformed input go through the
connection and its compiled channel exactly as a socket's reads would."""
from __future__ import annotations

import asyncio
import struct
from typing import Any, List, Tuple

import pyotp
from pyotp.dist import handshake as hs
from pyotp.dist import run_node
from pyotp.dist.connection import Connection
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


class Peer:
    """A hand-driven peer node on a FakeTransport."""

    def __init__(self) -> None:
        self.name = unique("fake")
        self.creation = 9
        self.pid = Pid(self.name, 1, 0, self.creation)
        self.t = FakeTransport()
        self.conn = Connection(kernel(), False)
        self.t.proto = self.conn
        self.conn.connection_made(self.t)
        self.read_at = 0

    def feed(self, data: bytes, cuts: Tuple[int, ...] = ()) -> None:
        """Hand ``data`` to the connection as reads that end at the offsets ``cuts``."""
        bounds = [c for c in cuts if 0 < c < len(data)] + [len(data)]
        start = 0
        for end in bounds:
            while start < end:
                buf = memoryview(self.conn.get_buffer(end - start))
                n = min(len(buf), end - start)
                buf[:n] = data[start:start + n]
                buf.release()
                self.conn.buffer_updated(n)
                start += n

    def read2(self) -> bytes:
        out = self.t.out
        (n,) = struct.unpack_from(">H", out, self.read_at)
        msg = bytes(out[self.read_at + 2:self.read_at + 2 + n])
        self.read_at += 2 + n
        return msg

    def handshake(self) -> None:
        self.feed(hs.send_name(hs.OUR_FLAGS, self.creation, self.name))
        assert self.read2() == b"sok"
        ch = hs.parse_challenge(self.read2())
        self.feed(hs.send_challenge_reply(4242, hs.digest(ch.challenge, COOKIE)))
        ack = self.read2()
        assert ack[:1] == b"a" and hs.check_digest(ack[1:], 4242, COOKIE)
        assert kernel().conns.get(self.name) is self.conn

    def frames(self) -> List[Tuple[Any, Any]]:
        """The frames the node wrote since the last call (ticks skipped)."""
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
            p.feed(data, (1, 3))
            await _await_with_timeout(p.t.gone, 10)
            out[what] = (p.t.aborted, p.name in kernel().conns)
        ok = Peer()                 # the node still takes connections
        ok.handshake()
        return out, ok.name in kernel().conns
    out, alive = run(main)
    assert out == {w: (True, False) for w in bad_frames}, out
    assert alive
