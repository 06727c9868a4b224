"""How the scheduler arms its timer wheel on the event loop: on Linux one timerfd the loop
watches (armed at the next tick's absolute time), elsewhere, or where that fd cannot be
had, the loop's own call_later. Each case runs a whole node, on asyncio's loop and on
uvloop where it is installed; the checks are about order and state, never about time."""
import asyncio
import os
import select
import sys
import threading

import pytest

import pyotp
from pyotp import GenServer

try:
    import uvloop  # noqa: F401
    LOOPS = [False, True]
except ImportError:
    LOOPS = [False]

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
loops = pytest.mark.parametrize("use_uvloop", LOOPS, ids=lambda u: "uvloop" if u else "asyncio")


def _timerfds():
    """The fds of this process that are timerfds."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + name) == "anon_inode:[timerfd]":
                out.append(int(name))
        except OSError:
            pass                    # the fd of the listdir itself, gone by now
    return out


async def _order_and_rearm():
    me = pyotp.self()
    first = pyotp._core._timer_source()             # None: nothing armed yet
    # armed for a far deadline first, then re-armed earlier twice, then later ones join
    pyotp.send_after(me, "far", 0.05)
    pyotp.send_after(me, "mid", 0.02)
    pyotp.send_after(me, "near", 0.001)
    pyotp.send_after(me, "mid2", 0.02)               # same deadline: creation order
    pyotp.send_after(me, "later", 0.03)
    got = [await pyotp.receive() for _ in range(5)]
    # a cancelled earliest timer: the wheel's timer still fires, finds nothing and re-arms
    cancelled = pyotp.send_after(me, "cancelled", 0.002)
    pyotp.send_after(me, "after", 0.006)
    pyotp.cancel_timer(cancelled)
    got.append(await pyotp.receive())
    await pyotp.sleep(0.001)                         # a sleep is a wheel timer too
    return got, (first, pyotp._core._timer_source())


@linux
@loops
def test_timers_fire_in_order_through_the_timerfd(use_uvloop):
    got, source = pyotp.run(_order_and_rearm, use_uvloop=use_uvloop)
    assert got == ["near", "mid", "mid2", "later", "far", "after"]
    assert source == (None, "timerfd")


@loops
def test_timers_fire_in_order_on_loop_timers_when_no_timerfd(use_uvloop):
    was = pyotp._core._allow_timerfd(False)
    try:
        before = _timerfds() if sys.platform.startswith("linux") else []
        got, source = pyotp.run(_order_and_rearm, use_uvloop=use_uvloop)
        assert (got, source) == (["near", "mid", "mid2", "later", "far", "after"], ("loop", "loop"))
        if sys.platform.startswith("linux"):
            assert _timerfds() == before
    finally:
        pyotp._core._allow_timerfd(was)


class _NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop that cannot watch fds (as Windows' proactor): the scheduler must fall back."""

    def add_reader(self, fd, callback, *args):
        raise NotImplementedError


def test_a_loop_without_add_reader_falls_back_to_loop_timers():
    before = _timerfds() if sys.platform.startswith("linux") else []
    loop = _NoReaderLoop()

    async def amain():
        async with pyotp.Runtime() as rt:
            return await rt.run_process(_order_and_rearm)
    try:
        got, source = loop.run_until_complete(amain())
    finally:
        loop.close()
    assert (got, source) == (["near", "mid", "mid2", "later", "far", "after"], (None, "loop"))
    if sys.platform.startswith("linux"):
        assert _timerfds() == before            # the fd it made was closed at once


async def _fd_state():
    me = pyotp.self()
    pyotp.send_after(me, "x", 0.001)
    await pyotp.receive()
    during = _timerfds()
    # the wheel is empty now; once the timer callback has returned (a yield), the fd must
    # be disarmed, not left readable (the loop would call the callback again and again)
    await pyotp.sleep(0)
    readable = [fd for fd in during if select.select([fd], [], [], 0)[0]]
    return during, readable


@linux
@loops
def test_the_timerfd_is_disarmed_when_nothing_is_due_and_closed_at_stop(use_uvloop):
    before = _timerfds()
    during, readable = pyotp.run(_fd_state, use_uvloop=use_uvloop)
    assert len(set(during) - set(before)) == 1          # one timerfd for the node
    assert readable == []
    assert _timerfds() == before                        # stopping the node closed it
    # and again: a second node in the same process makes (and closes) its own
    during2, _ = pyotp.run(_fd_state, use_uvloop=use_uvloop)
    assert len(set(during2) - set(before)) == 1
    assert _timerfds() == before


class _Silent(GenServer):
    async def init(self, arg):
        return "ok", None

    async def handle_call(self, req, frm, state):
        return "noreply", state


@loops
def test_a_call_from_another_thread_times_out_on_the_wheel(use_uvloop):
    # a blocking call from a plain thread puts its timeout on the node's wheel (the loop
    # thread inserts it for the caller): the timer must be armed and fire
    node = pyotp.Runtime.start_thread(use_uvloop=use_uvloop)
    try:
        pid = node.call_in_loop(lambda: _Silent.start(None))
        pid = pid[1] if isinstance(pid, tuple) else pid
        errors = []

        def caller():
            try:
                node.call(pid, "hello", timeout=0.01)
            except Exception as e:          # the call's timeout, whatever its class
                errors.append(e)
        t = threading.Thread(target=caller)
        t.start()
        t.join(30)
        assert not t.is_alive() and len(errors) == 1
        assert "timeout" in type(errors[0]).__name__.lower() or "timeout" in repr(errors[0]).lower()
        source = node.call_in_loop(pyotp._core._timer_source)
        assert source == ("timerfd" if sys.platform.startswith("linux") else "loop")
    finally:
        node.stop()
