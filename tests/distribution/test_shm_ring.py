"""The shared-memory ring pair (core/shm_ring.pyx) and its transport, at the byte level:
two OS processes, wrap-around, data larger than the ring, a hostile peer, peer death."""
import asyncio
import logging
import os
import socket
import subprocess
import sys

import pytest

from pyotp import _core
from pyotp.dist.shm_transport import ShmTransport

from pathutil import TESTS, child_pythonpath

pytestmark = pytest.mark.skipif(not _core.shm_available, reason="no anonymous shared memory")

CAP = 1 << 12        # a small ring: everything below wraps around many times


def _dev_shm():
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _child(role, fd, bell, *args, stdin=None):
    env = dict(os.environ, PYTHONPATH=child_pythonpath(str(TESTS)))
    return subprocess.Popen(
        [sys.executable, str(TESTS / "helpers" / "shm_roles.py"), role, str(fd), str(bell.fileno()), str(CAP),
         *map(str, args)], pass_fds=(fd, bell.fileno()), env=env, stdin=stdin,
        stdout=subprocess.PIPE)


def _pattern(start, n):
    return bytes((start + i) % 251 for i in range(n))


def test_capacity_and_segment_are_validated():
    with pytest.raises(ValueError, match="power of two"):
        _core.shm_segment(5000)
    with pytest.raises(ValueError, match="power of two"):
        _core.shm_segment(1024)
    with pytest.raises(TypeError, match="int"):
        _core.shm_segment("big")
    fd = _core.shm_segment(CAP)
    try:
        # a peer that hands us a segment too small for the capacity we expect
        with pytest.raises(_core.ShmRingError, match="needs"):
            _core.ShmRingPair(fd, CAP * 2, 0)
        with pytest.raises(ValueError, match="side"):
            _core.ShmRingPair(fd, CAP, 2)
    finally:
        os.close(fd)


def test_in_process_wrap_around_and_flags():
    fd = _core.shm_segment(CAP)
    a, b = _core.ShmRingPair(fd, CAP, 0), _core.ShmRingPair(fd, CAP, 1)
    os.close(fd)
    sent = got = 0
    out = bytearray()
    buf = bytearray(3000)
    while got < 20 * CAP:
        sent += a.write(_pattern(sent, 1777))
        k = b.readinto(buf)
        out += buf[:k]
        got += k
    assert bytes(out) == _pattern(0, len(out))
    # full ring: the writer's wait flag is taken by exactly one read
    a.write(b"x" * CAP)
    assert a.writable() == 0 and a.write(b"y") == 0
    assert a.wait_space() is True
    assert b.readinto(bytearray(10)) == 10
    assert b.wake_writer() is True and b.wake_writer() is False
    # a reader that publishes sleeping while bytes wait stays awake
    assert b.sleep() is False
    b.readinto(bytearray(CAP))
    assert b.sleep() is True
    assert a.write(b"z") == 1 and a.wake_reader() is True and a.wake_reader() is False
    a.release()
    b.release()
    with pytest.raises(ValueError, match="released"):
        a.write(b"q")


def test_hostile_indices_raise():
    fd = _core.shm_segment(CAP)
    a, b = _core.ShmRingPair(fd, CAP, 0), _core.ShmRingPair(fd, CAP, 1)
    os.close(fd)
    a.write(b"abc")
    a._poke("head", CAP + 10)               # more than a ring's worth "written"
    with pytest.raises(_core.ShmRingError, match="bad head"):
        b.readable()
    with pytest.raises(_core.ShmRingError, match="bad head"):
        b.readinto(bytearray(8))
    a._poke("head", 2**64 - 1)              # behind the reader's tail
    with pytest.raises(_core.ShmRingError):
        b.readable()
    # a hostile consumer: b publishes a tail in the ring a writes (b reads it)
    fd = _core.shm_segment(CAP)
    w, r = _core.ShmRingPair(fd, CAP, 0), _core.ShmRingPair(fd, CAP, 1)
    os.close(fd)
    w.write(b"12345")
    r.readinto(bytearray(5))
    assert w.writable() == CAP              # w has seen tail 5
    r._poke("tail", 2, inbound=True)        # backwards
    with pytest.raises(_core.ShmRingError, match="bad tail"):
        w.write(b"more")
    r._poke("tail", 99, inbound=True)       # past what was written
    with pytest.raises(_core.ShmRingError, match="bad tail"):
        w.writable()


def test_put_rings_the_bell_once_per_sleep_and_drain_feeds_the_protocol():
    fd = _core.shm_segment(CAP)
    a, b = _core.ShmRingPair(fd, CAP, 0), _core.ShmRingPair(fd, CAP, 1)
    os.close(fd)
    sa, sb = socket.socketpair()
    sa.setblocking(False)
    sb.setblocking(False)
    with pytest.raises(ValueError, match="no doorbell"):
        a.put(b"x")
    with pytest.raises(ValueError, match="doorbell descriptor"):
        a.attach_bell(-1)
    a.attach_bell(sa.fileno())
    b.attach_bell(sb.fileno())
    assert a.put(b"awake") == 5             # b never said it sleeps: no bell
    assert b.take_bells() is True           # nothing waiting is not EOF
    with pytest.raises(BlockingIOError):
        sb.recv(16)

    class T:                                # what drain reads of its transport
        _reading, _lost, _peer_gone, _buffered = True, False, False, False

        class _protocol:
            got = []

            @classmethod
            def data_received(cls, data):
                cls.got.append(data)
    b.drain(T)                              # reads, then (nothing more) publishes sleep
    assert T._protocol.got == [b"awake"]
    assert a.put(b"one") == 3 and a.put(bytearray(b"two")) == 3 and a.put(memoryview(b"3")) == 1
    assert sb.recv(16) == b"\x01"           # one wake-up for the burst
    b.drain(T)
    assert b"".join(T._protocol.got) == b"awakeonetwo3"
    sa.close()
    assert b.take_bells() is False          # the peer closed its end: EOF
    sb.close()
    a.release()
    b.release()


def test_two_processes_blocking_writer_wraps_and_streams_big_data():
    fd = _core.shm_segment(CAP)
    ring = _core.ShmRingPair(fd, CAP, 0)
    mine, theirs = socket.socketpair()
    total = 40 * CAP + 123                  # many wraps; pieces up to 3x the ring
    p = _child("writer", fd, theirs, total, 3 * CAP + 7)
    os.close(fd)
    theirs.close()
    try:
        got = bytearray()
        buf = bytearray(5000)
        mine.settimeout(30)
        while len(got) < total:
            k = ring.readinto(buf)
            if k:
                got += buf[:k]
                if ring.wake_writer():
                    mine.send(b"\x01")
                continue
            if ring.sleep():
                assert mine.recv(64), "writer died"
        assert bytes(got) == _pattern(0, total)
        mine.send(b"\x01")                  # "have it all"
        assert p.wait(30) == 0
    finally:
        p.kill()
        p.wait()
        ring.release()


def test_transport_echo_through_a_child_process():
    async def run():
        loop = asyncio.get_running_loop()
        fd = _core.shm_segment(CAP)
        ring = _core.ShmRingPair(fd, CAP, 0)
        mine, theirs = socket.socketpair()
        p = _child("echo", fd, theirs)
        os.close(fd)
        theirs.close()
        want = b"".join(_pattern(i, 1 + (i * 37) % (2 * CAP)) for i in range(300))
        got = bytearray()
        done = loop.create_future()
        lost = loop.create_future()

        class P(asyncio.Protocol):
            def data_received(self, data):
                got.extend(data)
                if len(got) >= len(want) and not done.done():
                    done.set_result(None)

            def connection_lost(self, exc):
                lost.set_result(exc)

        t = ShmTransport(ring, mine, P())
        for i in range(0, len(want), 5000):
            t.write(want[i:i + 5000])
        await asyncio.wait_for(done, 60)
        assert bytes(got) == want
        t.close()                           # the child sees EOF on the bell and ends
        await asyncio.wait_for(lost, 10)
        assert await loop.run_in_executor(None, p.wait, 30) == 0
    before = _dev_shm()
    asyncio.run(run())
    assert _dev_shm() == before


def test_peer_killed_ends_the_connection_and_leaves_no_segment():
    async def run():
        loop = asyncio.get_running_loop()
        fd = _core.shm_segment(CAP)
        ring = _core.ShmRingPair(fd, CAP, 0)
        mine, theirs = socket.socketpair()
        p = _child("hang", fd, theirs, stdin=subprocess.PIPE)
        os.close(fd)
        theirs.close()
        assert (await loop.run_in_executor(None, p.stdout.readline)).strip() == b"ready"
        lost = loop.create_future()

        class P(asyncio.Protocol):
            def connection_lost(self, exc):
                lost.set_result(exc)

        t = ShmTransport(ring, mine, P())
        t.write(b"x" * (3 * CAP))           # more than fits: the writer waits for space
        p.kill()
        await asyncio.wait_for(lost, 10)
        assert t.is_closing()
        await loop.run_in_executor(None, p.wait)
    before = _dev_shm()
    mine_before = _ring_fds()
    asyncio.run(run())
    assert _dev_shm() == before
    # the segment is gone with its last mapping: no new memfd among our descriptors (other
    # code in this test process, e.g. the doctests of shm_segment, may hold its own)
    assert _ring_fds() <= mine_before


def _ring_fds():
    fds = set()
    for f in os.listdir("/proc/self/fd"):
        try:
            if "pyotp-ring" in os.readlink("/proc/self/fd/" + f):
                fds.add(f)
        except OSError:
            pass
    return fds


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_garbage_from_the_peer_closes_only_that_connection():
    # our own handler on the transport's logger: other tests may reconfigure logging
    log = logging.getLogger("pyotp.dist")
    seen = _Collect()
    old = (log.level, log.disabled)
    log.addHandler(seen)
    log.setLevel(logging.ERROR)
    log.disabled = False

    async def run():
        loop = asyncio.get_running_loop()
        results = {}
        for name, role in (("bad", "garbage"), ("good", "echo")):
            fd = _core.shm_segment(CAP)
            ring = _core.ShmRingPair(fd, CAP, 0)
            mine, theirs = socket.socketpair()
            p = _child(role, fd, theirs, *((CAP * 5,) if role == "garbage" else ()),
                       stdin=subprocess.PIPE)
            os.close(fd)
            theirs.close()
            lost = loop.create_future()
            got = bytearray()
            echoed = loop.create_future()

            class P(asyncio.Protocol):
                def data_received(self, data, got=got, echoed=echoed):
                    got.extend(data)
                    if got == b"still here":
                        echoed.set_result(None)

                def connection_lost(self, exc, lost=lost):
                    lost.set_result(exc)

            results[name] = (ShmTransport(ring, mine, P()), lost, p, echoed)
        bad_t, bad_lost, bad_p, _ = results["bad"]
        await asyncio.wait_for(bad_lost, 10)
        good_t, good_lost, good_p, echoed = results["good"]
        assert not good_t.is_closing()
        good_t.write(b"still here")
        await asyncio.wait_for(echoed, 10)
        good_t.close()
        await asyncio.wait_for(good_lost, 10)
        for _, _, p, _ in results.values():
            p.kill()
            await loop.run_in_executor(None, p.wait)
    try:
        asyncio.run(run())
    finally:
        log.removeHandler(seen)
        log.level, log.disabled = old
    assert any("bad head index" in line for line in seen.lines)
