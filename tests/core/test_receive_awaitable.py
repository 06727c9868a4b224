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
