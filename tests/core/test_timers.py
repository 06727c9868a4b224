"""Timer wheel: send_after, start_timer, cancel/read, sleep, ordering, cancel races."""
import random

import pytest

import pyotp
from pyotp import BadArg


def test_send_after_delivers_in_deadline_order():
    async def main():
        me = pyotp.self()
        pyotp.send_after(me, "c", 0.03)
        pyotp.send_after(me, "a", 0.01)
        pyotp.send_after(me, "b", 0.02)
        pyotp.send_after(me, "a2", 0.01)      # same deadline: creation order
        return [await pyotp.receive() for _ in range(4)]
    assert pyotp.run(main) == ["a", "a2", "b", "c"]


def test_start_timer_message_carries_the_timer():
    async def main():
        t = pyotp.start_timer(pyotp.self(), "poll", 0.001)
        msg = await pyotp.receive()
        return msg[0] == "timeout" and msg[1] is t and msg[2] == "poll"
    assert pyotp.run(main) is True


def test_cancelled_timer_never_delivers():
    async def main():
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
        return cancelled, got
    cancelled, got = pyotp.run(main)
    assert sorted(got) == sorted(set(range(1000)) - cancelled)
    assert got == sorted(got)


def test_cancel_and_read_after_fire_return_false():
    async def main():
        t = pyotp.send_after(pyotp.self(), "x", 0)
        await pyotp.receive()
        return pyotp.cancel_timer(t), pyotp.read_timer(t), t.active
    assert pyotp.run(main) == (False, False, False)


def test_read_timer_counts_down():
    async def main():
        t = pyotp.send_after(pyotp.self(), "x", 10.0)
        left = pyotp.read_timer(t)
        pyotp.cancel_timer(t)
        return 9.0 < left <= 10.0, pyotp.read_timer(t)
    assert pyotp.run(main) == (True, False)


def test_long_and_short_timers_across_wheel_levels():
    # deadlines spread over several wheel levels must still fire in order (cascading)
    async def main():
        me = pyotp.self()
        delays = [0.001, 0.07, 0.005, 0.3, 0.065, 0.0, 0.13]
        for d in delays:
            pyotp.send_after(me, d, d)
        return [await pyotp.receive() for _ in delays]
    out = pyotp.run(main)
    assert out == sorted(out)


def test_timer_never_fires_early():
    import time

    async def main():
        early = 0
        for d in (0.002, 0.004, 0.011):
            for _ in range(5):
                start = time.monotonic()
                pyotp.send_after(pyotp.self(), "x", d)
                await pyotp.receive()
                if time.monotonic() - start < d:
                    early += 1
        return early
    # not a speed assertion: a lower bound that holds by construction of the wheel
    assert pyotp.run(main) == 0


def test_sleep_and_receive_timeout_use_the_wheel():
    async def main():
        await pyotp.sleep(0.001)
        await pyotp.sleep(0)
        with pytest.raises(TimeoutError):
            await pyotp.receive(timeout=0.002)
        return pyotp._core._stats()["timers"]
    assert pyotp.run(main) == 0     # nothing left armed


def test_apply_after_calls_function_on_loop():
    async def main():
        me = pyotp.self()
        pyotp.apply_after(0.001, pyotp.send, me, "applied")
        return await pyotp.receive()
    assert pyotp.run(main) == "applied"


def test_bad_timer_arguments():
    async def main():
        with pytest.raises(BadArg):
            pyotp.send_after(pyotp.self(), "x", -1)
        with pytest.raises(BadArg):
            pyotp.send_after(pyotp.self(), "x", "soon")
        with pytest.raises(BadArg):
            pyotp.cancel_timer("not a timer")
        return True
    assert pyotp.run(main)


def test_million_timers_insert_and_cancel():
    async def main():
        me = pyotp.self()
        for _ in range(1_000_000):
            pyotp.cancel_timer(pyotp.send_after(me, "x", 30.0))
        return pyotp._core._stats()["timers"]
    assert pyotp.run(main) == 0
