"""Processes and asyncio: a running process is asyncio's current task, so asyncio's own
timeouts (wait_for, asyncio.timeout) and libraries built on current_task() work inside
processes on every Python version."""
import asyncio
import sys

import pytest

import pyotp

pytestmark = pytest.mark.pyotp


async def test_wait_for_inside_a_process():
    ok = await asyncio.wait_for(asyncio.sleep(0, "x"), 1.0)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.sleep(10), 0.01)
    assert ok == "x"
    assert pyotp.is_alive(pyotp.self())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in Python 3.11")
async def test_asyncio_timeout_interrupts_a_pyotp_wait():
    async with asyncio.timeout(1.0):
        await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await pyotp.receive(lambda m: m == "never")     # a pyotp wait, not a future
    pyotp.send(pyotp.self(), "still works")
    assert await pyotp.receive() == "still works"


async def test_current_task_is_the_process_and_cancel_interrupts_it():
    async def sleeper(parent):
        pyotp.send(parent, ("task", asyncio.current_task()))
        try:
            await pyotp.receive(lambda m: m == "never")
        except asyncio.CancelledError:
            pyotp.send(parent, "cancelled")
            return "handled"

    assert asyncio.current_task() is not None
    assert asyncio.current_task().get_loop() is asyncio.get_running_loop()
    pid, ref = pyotp.spawn_monitor(sleeper, pyotp.self())
    _, task = await pyotp.receive(lambda m: m[0] == "task")
    assert task.cancel() is True and task.cancelling() == 1
    got = await pyotp.receive(lambda m: m == "cancelled")
    down = await pyotp.receive(lambda m: m[0] == "DOWN")
    assert got == "cancelled"
    assert down[4] == "normal"
    assert task.done()
