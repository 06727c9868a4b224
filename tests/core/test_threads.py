"""Other OS threads: lock-free sends into one mailbox, blocking calls through a node handle."""
import threading

import pytest

import pyotp
from pyotp import Exit, GenServer
from servers import Counter, Echo


def test_eight_threads_send_into_one_mailbox_nothing_lost_or_duplicated():
    N, T = 20_000, 8

    async def collector(parent):
        seen = {}
        for _ in range(N * T):
            tid, i = await pyotp.receive()
            seen.setdefault(tid, []).append(i)
        pyotp.send(parent, seen)

    async def main():
        pid = pyotp.spawn(collector, pyotp.self())
        barrier = threading.Barrier(T)

        def producer(tid):
            barrier.wait()
            for i in range(N):
                pyotp.send(pid, (tid, i))

        threads = [threading.Thread(target=producer, args=(t,)) for t in range(T)]
        for t in threads:
            t.start()
        seen = await pyotp.receive()
        for t in threads:
            t.join()
        return seen
    seen = pyotp.run(main)
    assert sorted(seen) == list(range(T))
    for tid, items in seen.items():
        assert items == list(range(N)), tid      # per-sender order kept, nothing lost/duplicated


def test_node_thread_blocking_api():
    node = pyotp.Runtime.start_thread()
    try:
        pid = node.call_in_loop(Counter.start, 0)
        for _ in range(100):
            node.cast(pid, "inc")
        assert node.call(pid, "get") == 100

        results = []

        def caller():
            for _ in range(200):
                results.append(node.call(pid, "get"))

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [100] * 800
        with pytest.raises(Exit) as e:
            node.call("nobody", "x")
        assert e.value.reason[0] == "noproc"

        got = []
        done = threading.Event()

        async def listener():
            got.append(await pyotp.receive())
            done.set()
        lp = node.spawn(listener)
        node.send(lp, "hello from a thread")
        assert done.wait(10)
        assert got == ["hello from a thread"]
    finally:
        node.stop()


def test_call_from_another_thread_times_out_with_exit():
    class Mute(GenServer):
        def handle_call(self, req, from_, s):
            return ("noreply", s)

    node = pyotp.Runtime.start_thread()
    try:
        pid = node.call_in_loop(Mute.start, None)
        with pytest.raises(Exit) as e:
            node.call(pid, "x", timeout=0.01)
        assert e.value.reason[0] == "timeout"
    finally:
        node.stop()


def test_four_threads_burst_of_blocking_calls_each_gets_its_own_answer():
    """Calls from several threads share one queue and one wake-up per burst (issue 15):
    every call must still get its own answer, in order per thread, and an error answer
    must not leak into the thread's next call."""
    node = pyotp.Runtime.start_thread()
    try:
        pid = node.call_in_loop(Echo.start, None)
        T, N = 4, 2000
        got = {}
        barrier = threading.Barrier(T)

        def caller(t):
            barrier.wait()
            out = []
            for i in range(N):
                if i == N // 2:
                    with pytest.raises(Exit):
                        node.call("no_such_server", "x")     # noproc, answered by the loop
                    continue
                out.append(node.call(pid, (t, i)))
            got[t] = out

        threads = [threading.Thread(target=caller, args=(t,)) for t in range(T)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for t in range(T):
            assert got[t] == [(t, i) for i in range(N) if i != N // 2]
    finally:
        node.stop()


def test_blocking_call_after_the_node_stopped_raises():
    node = pyotp.Runtime.start_thread()
    pid = node.call_in_loop(Echo.start, None)
    assert node.call(pid, "x") == "x"
    node.stop()
    with pytest.raises(RuntimeError):
        node.call(pid, "x")


def test_gil_turn_decisions():
    """The GIL turn of calling threads (issue 15): a waiter gives back only its own turn,
    takes a free one (or keeps its own), and takes over one held past its budget or held
    long by its holder."""
    from pyotp import _core
    step = _core._gil_turn_step
    assert step(0, 7, "take") == (1, 7)         # free: taken
    assert step(7, 7, "take") == (1, 7)         # already ours
    assert step(3, 7, "take") == (0, 7)         # held by another past the budget: taken over
    # held long by its holder (it is doing something else): taken over whatever the budget
    assert step(3, 7, "take", held_us=1e6, budget_us=1e9) == (0, 7)
    assert step(-1, 7, "take", held_us=1e6, budget_us=1e9) == (0, 7)    # the loop thread's too
    assert step(7, 7, "give") == (0, 0)
    assert step(3, 7, "give") == (0, 3)         # not ours: left alone
    assert step(0, 7, "give") == (0, 0)
    with pytest.raises(ValueError):
        step(0, 7, "steal")


def test_more_calling_threads_than_cores_each_answered_in_order():
    """More calling threads than cores (the yielding path with the GIL turn): every call
    answered, in order per thread, also while one thread stops calling between two calls
    (holding the turn) and after a call that timed out and one answered with an error."""
    import os

    class Mute(GenServer):
        def handle_call(self, req, from_, s):
            return ("noreply", s)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    T, N = max(4, cores + 2), 500
    node = pyotp.Runtime.start_thread()
    try:
        pid = node.call_in_loop(Echo.start, None)
        mute = node.call_in_loop(Mute.start, None)
        got = {}
        barrier = threading.Barrier(T)
        paused, resume = threading.Event(), threading.Event()

        def caller(t):
            barrier.wait()
            out = []
            for i in range(N):
                if t == 0 and i == N // 4:
                    paused.set()
                    resume.wait()        # between two calls, holding the turn if it had it
                if t == 1 and i == N // 2:
                    with pytest.raises(Exit):
                        node.call(mute, "x", timeout=0.01)
                if t == 2 and i == N // 2:
                    with pytest.raises(Exit):
                        node.call("no_such_server", "x")
                out.append(node.call(pid, (t, i)))
            got[t] = out

        threads = [threading.Thread(target=caller, args=(t,)) for t in range(T)]
        for th in threads:
            th.start()
        paused.wait()
        for th in threads[1:]:
            th.join()                    # the others finish while thread 0 is paused
        resume.set()
        threads[0].join()
        for t in range(T):
            assert got[t] == [(t, i) for i in range(N)], t
    finally:
        node.stop()
