"""A forgotten `await` is loud and harmless: GenServer.call, pyotp.receive and pyotp.sleep
hand out the process's compiled reusable awaitable armed with their arguments (src/core/
suspend.h, deferred.pyx); nothing is sent, taken or started until it is awaited, and one
never awaited warns "RuntimeWarning: GenServer.call(...) was never awaited" when the process
arms it again or its step ends. The API's `async def` functions (start_link, stop, ...) are
native coroutines, which CPython itself reports the same way."""
import asyncio
import gc
import warnings

import pytest

import pyotp
from pyotp import GenServer
from pyotp.gen_statem import GenStateMachine


class Counting(GenServer):
    """Counts the calls that reach it."""

    def init(self, n):
        return ("ok", n)

    def handle_call(self, request, from_, n):
        if request == "count":
            return ("reply", n, n)
        return ("reply", n + 1, n + 1)


class Light(GenStateMachine):
    def init(self, n):
        return ("ok", "on", n)

    def handle_event(self, event_type, content, state, n):
        if content == "count":
            return ("keep_state_and_data", [("reply", event_type[1], n)])
        return ("keep_state", n + 1, [("reply", event_type[1], "ok")])


def _messages(record):
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def test_an_unawaited_call_sends_nothing_and_warns_at_the_next_wait():
    async def main():
        srv = await Counting.start_link(0)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            GenServer.call(srv, "bump")                 # forgotten await
            count = await GenServer.call(srv, "count")  # re-arms: reports the first
        return count, _messages(record)

    count, msgs = pyotp.run(main)
    assert count == 0                                   # the server never saw "bump"
    assert len(msgs) == 1 and msgs[0].startswith("GenServer.call(...) was never awaited"), msgs


def test_the_warning_points_at_the_callers_file():
    async def main():
        srv = await Counting.start_link(0)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            GenServer.call(srv, "bump")
            await GenServer.call(srv, "count")
        return [(w.filename, str(w.message)) for w in record]

    (filename, msg), = pyotp.run(main)
    assert filename == __file__, (filename, msg)


def test_an_unawaited_call_is_reported_when_the_process_waits_elsewhere_or_ends():
    async def worker(srv, parent):
        GenServer.call(srv, "bump")             # forgotten, then an asyncio wait
        await asyncio.sleep(0)
        GenServer.call(srv, "bump")             # forgotten, then the body returns
        return "done"

    async def main():
        srv = await Counting.start_link(0)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            pid, ref = pyotp.spawn_monitor(worker, srv, pyotp.self())
            down = await pyotp.receive(lambda m: m[0] == "DOWN")
        return down[4], await GenServer.call(srv, "count"), _messages(record)

    reason, count, msgs = pyotp.run(main)
    assert reason == "normal" and count == 0
    assert len([m for m in msgs if m.startswith("GenServer.call(...) was never awaited")]) == 2, msgs


def test_the_same_for_gen_statem_call_receive_and_sleep():
    async def main():
        light = await Light.start_link(0)
        me = pyotp.self()
        pyotp.send(me, "kept")
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            GenStateMachine.call(light, "bump")
            pyotp.receive()                     # takes nothing
            pyotp.sleep(10)                     # starts no timer
            got = await pyotp.receive()         # reports the sleep (the last one armed)
            counted = await GenStateMachine.call(light, "count")
        return got, counted, _messages(record), pyotp.node_stats() if hasattr(pyotp, "node_stats") else None

    got, counted, msgs, _ = pyotp.run(main)
    assert got == "kept" and counted == 0
    assert [m.split(" was")[0] for m in msgs] == ["GenServer.call(...)", "pyotp.receive(...)",
                                                  "pyotp.sleep(...)"], msgs


def test_a_forgotten_await_fails_where_the_value_is_used_and_warns():
    async def main():
        srv = await Counting.start_link(1)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            with pytest.raises(TypeError):
                GenServer.call(srv, "count") + 1
            n = await GenServer.call(srv, "count")
        return n, _messages(record)

    n, msgs = pyotp.run(main)
    assert n == 1 and msgs and msgs[0].startswith("GenServer.call(...) was never awaited")


def test_an_awaitable_is_awaited_once():
    async def main():
        srv = await Counting.start_link(0)
        aw = GenServer.call(srv, "bump")
        assert await aw == 1
        with pytest.raises(RuntimeError, match="already awaited"):
            await aw
        return await GenServer.call(srv, "count")

    assert pyotp.run(main) == 1


def test_async_api_functions_are_coroutines_that_warn():
    async def main():
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            Counting.start_link(0, name="never")
            gc.collect()
        return GenServer.whereis("never"), _messages(record)

    where, msgs = pyotp.run(main)
    assert where is None
    assert any("start_link' was never awaited" in m for m in msgs), msgs


def test_plain_callbacks_still_fail_at_once():
    class Plain(GenServer):
        def init(self, _):
            return ("ok", None)

        def handle_call(self, request, from_, state):
            GenServer.call(request, "count")
            return ("reply", "unreachable", state)

    async def main():
        srv = await Counting.start_link(0)
        p = await Plain.start(None)
        with pytest.raises(pyotp.Exit) as e:
            await GenServer.call(p, srv)
        return str(e.value.reason)

    assert "make that callback `async def`" in pyotp.run(main)


def test_outside_a_process_a_call_is_a_coroutine_too():
    import asyncio as aio

    async def host():
        async with pyotp.Runtime():
            srv = await Counting.start(0)
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                GenServer.call(srv, "bump")             # an asyncio task forgot the await
                gc.collect()
            return await GenServer.call(srv, "count"), _messages(record)

    count, msgs = aio.run(host())
    assert count == 0
    assert any("coroutine 'GenServer.call' was never awaited" in m for m in msgs), msgs
