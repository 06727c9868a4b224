"""CircuitBreaker: closed -> open -> half_open -> closed/open, fail fast, events, timeouts."""
import pytest

import pyotp
from pyotp import GenServer
from pyotp.circuit_breaker import CircuitBreaker, CircuitOpenError
from pyotp.gen_event import EventHandler, EventManager


class Flaky:
    def __init__(self):
        self.fail = True
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        if self.fail:
            raise ConnectionError("down")
        return ("ok", x)


class Collect(EventHandler):
    def init(self, parent):
        return ("ok", parent)

    def handle_event(self, event, parent):
        pyotp.send(parent, event)
        return ("ok", parent)


@pytest.mark.pyotp
async def test_trips_fails_fast_and_recovers():
    svc = Flaky()

    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, Collect, pyotp.self())
    cb = await CircuitBreaker.start_link(service=svc, name="cb", failure_threshold=3,
                                         reset_timeout=0.02, events=mgr)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await CircuitBreaker.call(cb, 1)
    assert await pyotp.receive() == ("circuit_breaker", "cb", "closed", "open")
    calls_when_open = svc.calls
    with pytest.raises(CircuitOpenError):
        await CircuitBreaker.call(cb, 2)
    assert svc.calls == calls_when_open          # never reached the service
    assert await pyotp.receive() == ("circuit_breaker", "cb", "open", "half_open")
    with pytest.raises(ConnectionError):          # failed trial: open again
        await CircuitBreaker.call(cb, 3)
    assert await pyotp.receive() == ("circuit_breaker", "cb", "half_open", "open")
    assert await pyotp.receive() == ("circuit_breaker", "cb", "open", "half_open")
    svc.fail = False
    r = await CircuitBreaker.call(cb, 4)
    assert await pyotp.receive() == ("circuit_breaker", "cb", "half_open", "closed")
    assert (r, await CircuitBreaker.state(cb)) == (("ok", 4), "closed")


@pytest.mark.pyotp
async def test_error_results_count_and_successes_reset_the_count():
    results = iter([("error", "x"), ("error", "y"), "fine", ("error", 1), ("error", 2), ("error", 3)])

    cb = await CircuitBreaker.start_link(service=lambda: next(results), failure_threshold=3)
    for _ in range(5):
        await CircuitBreaker.call(cb)
    s1 = await CircuitBreaker.state(cb)
    await CircuitBreaker.call(cb)
    assert (s1, await CircuitBreaker.state(cb)) == ("closed", "open")


@pytest.mark.pyotp
async def test_half_open_limits_trials():
    class Gate(GenServer):
        async def handle_call(self, req, from_, s):
            if req == "hold":
                await pyotp.receive(lambda m: m == "go")
            return ("reply", "done", s)

    async def trial(cb, parent):
        try:
            pyotp.send(parent, ("trial", await CircuitBreaker.call(cb, "hold")))
        except CircuitOpenError:
            pyotp.send(parent, ("trial", "rejected"))

    gate = await Gate.start_link(None)
    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, Collect, pyotp.self())
    cb = await CircuitBreaker.start_link(service=gate, failure_threshold=1, reset_timeout=0.01,
                                         events=mgr)
    with pytest.raises(pyotp.Exit):
        await CircuitBreaker.call(cb, "unknown", timeout=0)     # a timeout is a failure
    await pyotp.receive(lambda m: m[3] == "half_open")
    pyotp.spawn(trial, cb, pyotp.self())
    while (await CircuitBreaker.info(cb))["trials"] < 1:
        await pyotp.sleep(0)
    with pytest.raises(CircuitOpenError):                       # only one trial at a time
        await CircuitBreaker.call(cb, "hold")
    pyotp.send(gate, "go")
    assert await pyotp.receive(lambda m: m[0] == "trial") == ("trial", "done")


@pytest.mark.pyotp
async def test_bad_options():
    with pytest.raises(ValueError, match="service"):
        await CircuitBreaker.start_link()
    with pytest.raises(ValueError, match="failure_threshold"):
        await CircuitBreaker.start_link(service=print, failure_threshold=0)
    assert True
