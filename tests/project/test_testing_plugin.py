"""The pytest plugin itself: async tests as processes, start_supervised, assert_receive."""
import pytest

import pyotp
from pyotp import GenServer
from pyotp.testing import (ANY, assert_receive, assert_received, matches, refute_receive,
                           refute_received, start_supervised)
from servers import Refuses

stopped = []


class Counter(GenServer):
    def init(self, n):
        return ("ok", n)

    def handle_call(self, req, from_, n):
        return ("reply", n, n)

    def handle_cast(self, req, n):
        return ("noreply", n + 1)

    def terminate(self, reason, n):
        stopped.append(reason)


def test_matches():
    assert matches(("ok", ANY), ("ok", 1))
    assert not matches(("ok", ANY), ("ok", 1, 2))
    assert not matches(("ok", ANY), ["ok", 1])
    assert matches({"a": 1}, {"a": 1, "b": 2})
    assert matches(lambda m: m > 3, 4)
    assert matches([1, ANY], [1, "x"])


@pytest.mark.pyotp
async def test_async_test_runs_as_a_process():
    me = pyotp.self()
    pyotp.send(me, ("hello", 1))
    msg = await assert_receive(("hello", ANY))
    assert msg == ("hello", 1)
    await refute_receive(ANY, timeout=0.001)


@pytest.mark.pyotp
async def test_start_supervised_and_cleanup_order():
    stopped.clear()
    a = await start_supervised((Counter, 1))
    b = await start_supervised(Counter)
    GenServer.cast(a, "inc")
    assert await GenServer.call(a, "get") == 2
    assert await GenServer.call(b, "get") is None
    with pytest.raises(pyotp.StartError):
        await start_supervised((Refuses, "nope"))
    assert pyotp.is_alive(pyotp.self())


def test_children_were_stopped_after_previous_test():
    assert stopped == ["shutdown", "shutdown"]


@pytest.mark.pyotp
async def test_assert_and_refute_received():
    pyotp.send(pyotp.self(), "queued")
    refute_received("other")
    assert assert_received("queued") == "queued"
    refute_received("queued")
    with pytest.raises(AssertionError, match="no message matching"):
        await assert_receive("never", timeout=0.001)
    pyotp.send(pyotp.self(), "surprise")
    with pytest.raises(AssertionError, match="unexpectedly received"):
        await refute_receive("surprise", timeout=0.01)


def test_pyotp_node_fixture(pyotp_node):
    pid = pyotp_node.call_in_loop(Counter.start, 41)
    pyotp_node.cast(pid, "inc")
    assert pyotp_node.call(pid, "get") == 42


@pytest.mark.pyotp
async def test_start_supervised_takes_every_child_spec_form():
    a = await start_supervised({"id": "named", "start": (Counter.start_link, (5,), {"name": "sup_named"})})
    assert pyotp.whereis("sup_named") == a
    with pytest.raises(ValueError, match="start"):
        await start_supervised({"id": "bad", "start": "nope"})
