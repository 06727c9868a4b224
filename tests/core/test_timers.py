"""Timer wheel: send_after, start_timer, cancel/read, sleep, ordering, cancel races. Each
test runs as the first process of a fresh node (the pyotp pytest plugin)."""
import random
import time

import pytest

import pyotp
from pyotp import BadArg

pytestmark = pytest.mark.pyotp


async def test_send_after_delivers_in_deadline_order():
    me = pyotp.self()
    pyotp.send_after(me, "c", 0.03)
    pyotp.send_after(me, "a", 0.01)
    pyotp.send_after(me, "b", 0.02)
    pyotp.send_after(me, "a2", 0.01)      # same deadline: creation order
    assert [await pyotp.receive() for _ in range(4)] == ["a", "a2", "b", "c"]


async def test_start_timer_message_carries_the_timer():
    t = pyotp.start_timer(pyotp.self(), "poll", 0.001)
    msg = await pyotp.receive()
    assert msg[0] == "timeout" and msg[1] is t and msg[2] == "poll"


async def test_cancelled_timer_never_delivers():
    me = pyotp.self()
    timers = [pyotp.send_after(me, ("t", i), 0.005) for i in range(1000)]
    rng = random.Random(7)
    cancelled = set()
    for i in rng.sample(range(1000), 500):
        left = pyotp.cancel_timer(timers[i])
        assert left is not False and 0 <= left <= 0.005
        cancelled.add(i)
    # a sentinel that fires after all of them: everything before it has been delivered
    pyotp.send_after(me, "end", 0.02)
    got = []
    while True:
        m = await pyotp.receive()
        if m == "end":
            break
        got.append(m[1])
    assert sorted(got) == sorted(set(range(1000)) - cancelled)
    assert got == sorted(got)


async def test_cancel_and_read_after_fire_return_false():
    t = pyotp.send_after(pyotp.self(), "x", 0)
    await pyotp.receive()
    assert (pyotp.cancel_timer(t), pyotp.read_timer(t), t.active) == (False, False, False)


async def test_read_timer_counts_down():
    t = pyotp.send_after(pyotp.self(), "x", 10.0)
    left = pyotp.read_timer(t)
    pyotp.cancel_timer(t)
    assert 9.0 < left <= 10.0
    assert pyotp.read_timer(t) is False


async def test_long_and_short_timers_across_wheel_levels():
    # deadlines spread over several wheel levels must still fire in order (cascading)
    me = pyotp.self()
    delays = [0.001, 0.07, 0.005, 0.3, 0.065, 0.0, 0.13]
    for d in delays:
        pyotp.send_after(me, d, d)
    out = [await pyotp.receive() for _ in delays]
    assert out == sorted(out)


async def test_timer_never_fires_early():
    # not a speed assertion: a lower bound that holds by construction of the wheel
    early = 0
    for d in (0.002, 0.004, 0.011):
        for _ in range(5):
            start = time.monotonic()
            pyotp.send_after(pyotp.self(), "x", d)
            await pyotp.receive()
            if time.monotonic() - start < d:
                early += 1
    assert early == 0


async def test_sleep_and_receive_timeout_use_the_wheel():
    await pyotp.sleep(0.001)
    await pyotp.sleep(0)
    with pytest.raises(TimeoutError):
        await pyotp.receive(timeout=0.002)
    assert pyotp._core._stats()["timers"] == 0     # nothing left armed


async def _report_after_yield(to):
    await pyotp.sleep(0)
    pyotp.send(to, "resumed")


async def test_sleep_zero_yields_without_a_timer():
    """sleep(0) lets every other runnable process (and the loop) run once, then
    resumes; it arms no timer. A process killed while it yields stays dead."""
    me = pyotp.self()
    pyotp.spawn(lambda: pyotp.send(me, ("timers while it yields", pyotp._core._stats()["timers"])))
    await pyotp.sleep(0)
    assert await pyotp.receive(timeout=0) == ("timers while it yields", 0)
    victim = pyotp.spawn(_report_after_yield, me)
    await pyotp.sleep(0)            # the victim now waits in its own sleep(0)
    mref = pyotp.monitor(victim)
    pyotp.exit(victim, "kill")
    down = await pyotp.receive(lambda m: m[0] == "DOWN", timeout=5)
    assert down[1] == mref and down[4] == "killed"
    await pyotp.sleep(0)            # the victim's queued wake-up has run by now
    await pyotp.sleep(0)
    with pytest.raises(TimeoutError):
        await pyotp.receive(lambda m: m == "resumed", timeout=0)


async def test_apply_after_calls_function_on_loop():
    pyotp.apply_after(0.001, pyotp.send, pyotp.self(), "applied")
    assert await pyotp.receive() == "applied"


async def test_bad_timer_arguments():
    with pytest.raises(BadArg):
        pyotp.send_after(pyotp.self(), "x", -1)
    with pytest.raises(BadArg):
        pyotp.send_after(pyotp.self(), "x", "soon")
    with pytest.raises(BadArg):
        pyotp.cancel_timer("not a timer")


async def test_million_timers_insert_and_cancel():
    me = pyotp.self()
    for _ in range(1_000_000):
        pyotp.cancel_timer(pyotp.send_after(me, "x", 30.0))
    assert pyotp._core._stats()["timers"] == 0
