"""max_mailbox: a per-process limit on queued messages, in the spirit of OTP's
max_heap_size (process_flag, spawn_opt, GenServer start options, a node-wide default)."""
import asyncio
import logging
import queue

import pytest

import pyotp
from pyotp import BadArg, GenServer
from servers import Counter


async def loop_turn():
    """Let the event loop run the callbacks queued so far (the limit acts from one)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_soon(fut.set_result, None)
    await fut


async def idle(parent=None, flag=None):
    if flag is not None:
        pyotp.process_flag("max_mailbox", flag)
    if parent is not None:
        pyotp.send(parent, ("ready", pyotp.self()))
    await pyotp.receive(lambda m: m == "never")


async def linked_watcher(parent, victim):
    pyotp.process_flag("trap_exit", True)
    pyotp.link(victim)
    pyotp.send(parent, "linked")
    pyotp.send(parent, ("watcher", await pyotp.receive(lambda m: m[0] == "EXIT")))


@pytest.mark.pyotp
async def test_over_the_limit_the_process_is_killed_links_and_monitors_see_why(caplog):
    caplog.set_level(logging.ERROR, logger="pyotp")
    me = pyotp.self()
    victim = pyotp.spawn(idle, me, 10)
    await pyotp.receive(lambda m: m == ("ready", victim))
    ref = pyotp.monitor(victim)
    pyotp.spawn(linked_watcher, me, victim)
    await pyotp.receive(lambda m: m == "linked")
    for i in range(10):
        pyotp.send(victim, i)
    await loop_turn()
    at_limit = pyotp.is_alive(victim), pyotp.process_info(victim)["message_queue_len"]
    pyotp.send(victim, 10)
    down = await pyotp.receive(lambda m: m[0] == "DOWN", timeout=5)
    watcher = await pyotp.receive(lambda m: m[0] == "watcher", timeout=5)
    assert at_limit == (True, 10)
    assert down[4] == ("max_mailbox", 10)
    assert watcher[1] == ("EXIT", victim, ("max_mailbox", 10))
    errors = [r.getMessage() for r in caplog.records if "max_mailbox" in r.getMessage()]
    assert len(errors) == 1 and "killed" in errors[0] and "11 messages" in errors[0]


@pytest.mark.pyotp
async def test_log_only_warns_once_and_keeps_the_process(caplog):
    caplog.set_level(logging.WARNING, logger="pyotp")
    me = pyotp.self()
    victim = pyotp.spawn(idle, me, {"size": 5, "kill": False})
    await pyotp.receive(lambda m: m == ("ready", victim))
    for i in range(20):
        pyotp.send(victim, i)
    await loop_turn()
    for i in range(20):
        pyotp.send(victim, i)
    await loop_turn()
    assert pyotp.is_alive(victim)
    assert pyotp.process_info(victim)["message_queue_len"] == 40
    warnings = [r for r in caplog.records if "max_mailbox" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "logged once" in warnings[0].getMessage()


@pytest.mark.pyotp
async def test_off_by_default():
    victim = pyotp.spawn(idle)
    for i in range(100_000):
        pyotp.send(victim, i)
    await loop_turn()
    assert pyotp.is_alive(victim)
    assert pyotp.process_flag("max_mailbox", 0) == {"size": 0, "kill": True, "log": True}


@pytest.mark.pyotp
async def test_process_flag_returns_the_old_setting_and_zero_turns_it_off():
    a = pyotp.process_flag("max_mailbox", 7)
    b = pyotp.process_flag("max_mailbox", {"size": 3, "kill": False, "log": False})
    c = pyotp.process_flag("max_mailbox", 0)
    for i in range(10):
        pyotp.send(pyotp.self(), i)     # no limit any more: nothing happens
    await loop_turn()
    assert a == {"size": 0, "kill": True, "log": True}
    assert b == {"size": 7, "kill": True, "log": True}
    assert c == {"size": 3, "kill": False, "log": False}


@pytest.mark.pyotp
async def test_spawn_opt_and_genserver_start_options(caplog):
    caplog.set_level(logging.ERROR, logger="pyotp")
    victim, ref = pyotp.spawn_opt(idle, monitor=True, max_mailbox=4)
    srv = await Counter.start(0, max_mailbox={"size": 4, "log": False})
    sref = pyotp.monitor(srv)
    for i in range(5):
        pyotp.send(victim, i)
        GenServer.cast(srv, i)      # the server runs only when this process waits
    d1 = await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref, timeout=5)
    d2 = await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == sref, timeout=5)
    assert d1[4] == ("max_mailbox", 4)
    assert d2[4] == ("max_mailbox", 4)
    assert len([r for r in caplog.records if "max_mailbox" in r.getMessage()]) == 1  # log=False


def test_node_wide_default():
    async def main():
        victim = pyotp.spawn(idle)
        ref = pyotp.monitor(victim)
        for i in range(4):
            pyotp.send(victim, i)
        return (await pyotp.receive(lambda m: m[0] == "DOWN", timeout=5))[4]

    assert pyotp.run(main, max_mailbox=3) == ("max_mailbox", 3)


def test_sends_from_other_threads_are_counted_and_the_kill_happens_on_the_loop():
    node = pyotp.Runtime.start_thread(use_uvloop=False, max_mailbox=50)
    got: "queue.Queue[object]" = queue.Queue()

    async def watcher(victim):
        ref = pyotp.monitor(victim)
        got.put("watching")
        got.put((await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref))[4])

    try:
        victim = node.call_in_loop(lambda: pyotp.spawn_opt(idle, max_mailbox=1000))
        default = node.spawn(idle)      # the handle's node-wide default (below) applies
        node.spawn(watcher, default)
        assert got.get(timeout=10) == "watching"
        for i in range(51):
            node.send(default, i)
        assert got.get(timeout=10) == ("max_mailbox", 50)
        node.spawn(watcher, victim)
        assert got.get(timeout=10) == "watching"
        for i in range(5000):
            node.send(victim, i)
        assert got.get(timeout=10) == ("max_mailbox", 1000)
    finally:
        node.stop()


@pytest.mark.parametrize("bad", [-1, 2 ** 31, 2 ** 200, 1.5, "10", True,
                                 {"size": 1, "bogus": 1}, {"kill": True}, {"size": 1, "kill": "yes"},
                                 {"size": -3}])
def test_bad_values_are_clear_errors(bad):
    async def main():
        out = []
        for call in (lambda: pyotp.process_flag("max_mailbox", bad),
                     lambda: pyotp.spawn_opt(idle, max_mailbox=bad)):
            try:
                call()
                out.append("accepted")
            except BadArg as e:
                out.append("max_mailbox" in str(e))
        try:
            await GenServer.start(None, max_mailbox=bad)
            out.append("accepted")
        except BadArg as e:
            out.append("max_mailbox" in str(e))
        return out

    assert pyotp.run(main) == [True, True, True]
    with pytest.raises(BadArg, match="max_mailbox"):
        pyotp.run(idle, max_mailbox=bad)
    with pytest.raises(BadArg, match="max_mailbox"):
        pyotp.Runtime.start_thread(use_uvloop=False, max_mailbox=bad)
