"""A missing `await` is caught at once: every awaitable the API returns is a coroutine
that does nothing until awaited and warns, as any un-awaited coroutine does
("RuntimeWarning: coroutine '...' was never awaited"), when it is dropped."""
import gc
import warnings

import pytest

import pyotp
from pyotp import GenServer, Supervisor, Task
from pyotp.dist import rpc
from pyotp.gen_statem import GenStateMachine
from servers import Counter, Recorder


class Light(GenStateMachine):
    def init(self, seen):
        return ("ok", "on", seen)

    def handle_event(self, event_type, content, state, seen):
        seen.append(content)
        return ("keep_state_and_data", [("reply", event_type[1], "ok")])


def _dropped(make):
    """Call make() and drop its result; the warnings that gives."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        make()
        gc.collect()
    return [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]


def test_unawaited_calls_warn_and_do_nothing():
    seen = []

    async def worker():
        await pyotp.receive()

    async def main():
        srv = await Recorder.start_link(seen)
        light = await Light.start_link(seen)
        sup = await Supervisor.start_link([], strategy="one_for_one")
        task = Task.async_(lambda: 42)
        cases = {
            "GenServer.call": lambda: GenServer.call(srv, "lost"),
            "GenStateMachine.call": lambda: GenStateMachine.call(light, "lost"),
            "receive": lambda: pyotp.receive(),
            "sleep": lambda: pyotp.sleep(0),
            "start_link": lambda: Recorder.start_link(seen, name="never"),
            "GenServer.stop": lambda: GenServer.stop(srv),
            "Supervisor.stop": lambda: Supervisor.stop(sup),
            "Task.await_": lambda: Task.await_(task),
            "rpc.call": lambda: rpc.call("nonode@nohost", "math", "floor", [1.5]),
        }
        warned = {name: _dropped(make) for name, make in cases.items()}
        pyotp.send(pyotp.self(), "still here")
        # nothing happened: no request reached the servers, nothing was started or
        # stopped, the task's reply and our message are still ours to receive
        after = (list(seen), GenServer.whereis("never"), pyotp.is_alive(srv),
                 pyotp.is_alive(sup), await Task.await_(task), await pyotp.receive(),
                 await GenServer.call(srv, "real"))
        return warned, after

    warned, after = pyotp.run(main)
    for name, messages in warned.items():
        assert any("was never awaited" in m for m in messages), (name, messages)
    # (under -X dev the message goes on with where the coroutine was created)
    assert any(m.startswith("coroutine 'GenServer.call' was never awaited")
               for m in warned["GenServer.call"])
    assert after == ([], None, True, True, 42, "still here", 1)


def test_a_forgotten_await_fails_where_the_value_is_used():
    async def main():
        pid = await Counter.start_link(1)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with pytest.raises(TypeError, match="coroutine"):
                GenServer.call(pid, "get") + 1
            gc.collect()
        return [str(x.message) for x in w]

    assert any(m.startswith("coroutine 'GenServer.call' was never awaited") for m in pyotp.run(main))
