"""A waiting receive() (and GenServer.call) hands out the process's reusable awaitable
(src/core/suspend.h) instead of a generator per wait: it must behave as the generator did,
also under a tracer (CPython then resumes it through its send() method), after a wait
that ended by a timeout, and when a process body is receive() itself."""
import sys

import pytest

import pyotp
from pyotp import GenServer
from servers import Echo


async def _exchange():
    me = pyotp.self()
    got = []

    async def echo(parent):
        while True:
            m = await pyotp.receive()
            pyotp.send(parent, ("echo", m))
            if m == "stop":
                return

    pid = pyotp.spawn(echo, me)
    for m in (None, 0, "x", (1, 2), None, "stop"):
        pyotp.send(pid, m)
        got.append(await pyotp.receive())
    try:
        await pyotp.receive(timeout=0.01)
    except TimeoutError:
        got.append("timeout")
    pyotp.send(me, "after")                 # the awaitable is re-armed after a timeout
    got.append(await pyotp.receive())
    server = await Echo.start(None)
    got.append(await GenServer.call(server, None))
    got.append(await GenServer.call(server, "y"))
    return got


EXPECTED = [("echo", None), ("echo", 0), ("echo", "x"), ("echo", (1, 2)), ("echo", None),
            ("echo", "stop"), "timeout", "after", None, "y"]


def test_receive_and_call_resume_with_every_kind_of_value():
    assert pyotp.run(_exchange) == EXPECTED


def test_receive_and_call_under_a_tracer():
    def tracer(frame, event, arg):
        return tracer
    sys.settrace(tracer)
    try:
        assert pyotp.run(_exchange) == EXPECTED
    finally:
        sys.settrace(None)


@pytest.mark.pyotp
async def test_a_process_whose_body_is_receive_itself():
    pid, ref = pyotp.spawn_monitor(pyotp.receive, lambda m: m == "go")
    pyotp.send(pid, "noise")
    pyotp.send(pid, "go")
    down = await pyotp.receive(lambda m: m[0] == "DOWN")
    assert down[4] == "normal"


# A plain message for a process waiting in a receive() without a pattern is handed to it
# directly (scheduler.pyx _handoff), not queued: it must look the same from outside.

@pytest.mark.pyotp
async def test_a_message_handed_to_a_waiting_receive_keeps_order_and_counts():
    async def collect(parent, n):
        pyotp.send(parent, "ready")
        got = [await pyotp.receive(timeout=30.0)]       # a timer that must not fire later
        for _ in range(n - 1):
            got.append(await pyotp.receive())
        info = pyotp.process_info(pyotp.self(), ["messages_received", "message_queue_len"])
        pyotp.send(parent, ("got", got, info))

    pid = pyotp.spawn(collect, pyotp.self(), 4)
    assert await pyotp.receive() == "ready"     # collect now waits in its first receive
    for m in (1, None, "three", (4,)):
        pyotp.send(pid, m)
    _, got, info = await pyotp.receive(lambda m: m[0] == "got")
    assert got == [1, None, "three", (4,)]
    assert info == {"messages_received": 4, "message_queue_len": 0}


@pytest.mark.pyotp
async def test_a_waiting_receive_with_a_pattern_still_skips_what_does_not_match():
    async def picky(parent):
        pyotp.send(parent, "ready")
        first = await pyotp.receive(lambda m: m == "wanted")
        rest = [await pyotp.receive(), await pyotp.receive()]
        pyotp.send(parent, (first, rest))

    pid = pyotp.spawn(picky, pyotp.self())
    assert await pyotp.receive() == "ready"
    for m in ("other", "wanted", "last"):
        pyotp.send(pid, m)
    assert await pyotp.receive() == ("wanted", ["other", "last"])


class _TaskProbe(GenServer):
    def init(self, parent):
        return ("ok", parent)

    def handle_info(self, msg, parent):
        import asyncio
        pyotp.send(parent, ("handler", asyncio.current_task()))
        return ("noreply", parent)


@pytest.mark.pyotp
async def test_a_plain_handler_right_after_a_coroutine_process_has_no_current_task():
    import asyncio

    async def poke(server, parent):
        pyotp.send(parent, ("poker", asyncio.current_task()))
        pyotp.send(server, "x")        # the handler runs after this step, in the same turn

    server = await _TaskProbe.start(pyotp.self())
    pid = pyotp.spawn(poke, server, pyotp.self())
    _, task = await pyotp.receive(lambda m: m[0] == "poker")
    assert task is not None and task is not asyncio.current_task()
    assert await pyotp.receive(lambda m: m[0] == "handler") == ("handler", None)
    # and plain asyncio tasks still run (the table holds no process between turns)
    assert await asyncio.get_running_loop().create_task(asyncio.sleep(0, "ok")) == "ok"
    assert pid is not None


@pytest.mark.pyotp
async def test_a_cancel_right_after_a_handed_message_leaves_it_in_the_mailbox():
    import asyncio

    async def victim(parent):
        pyotp.send(parent, ("task", asyncio.current_task()))
        try:
            got = await pyotp.receive()
            pyotp.send(parent, ("not cancelled", got))
        except asyncio.CancelledError:
            pyotp.send(parent, ("after the cancel", await pyotp.receive(),
                                pyotp.process_info(pyotp.self(), ["messages_received"])))

    pid = pyotp.spawn(victim, pyotp.self())
    _, task = await pyotp.receive(lambda m: m[0] == "task")    # victim waits in receive()
    pyotp.send(pid, "m")
    pyotp.send(pid, "n")
    assert task.cancel() is True       # before victim ran again
    got = await pyotp.receive(lambda m: m[0] != "task")
    assert got == ("after the cancel", "m", {"messages_received": 2})
