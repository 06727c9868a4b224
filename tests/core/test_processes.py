"""Processes: spawn, send/receive, selective receive, names, links, exits, monitors."""
import logging

import pytest

import pyotp
from pyotp import Exit, BadArg, CallbackError


def run(main, *args):
    return pyotp.run(main, *args)


def test_run_returns_main_result():
    async def main(x):
        return x * 2
    assert run(main, 21) == 42


def test_run_reraises_main_exception():
    async def main():
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        run(main)


@pytest.mark.pyotp
async def test_spawn_send_receive_echo():
    async def echo():
        while True:
            frm, msg = await pyotp.receive()
            pyotp.send(frm, ("echo", msg))

    pid = pyotp.spawn(echo)
    out = []
    for i in range(5):
        pyotp.send(pid, (pyotp.self(), i))
        out.append(await pyotp.receive())
    assert out == [("echo", i) for i in range(5)]


@pytest.mark.pyotp
async def test_selective_receive_keeps_order_of_skipped_messages():
    me = pyotp.self()
    for m in ["a", 1, "b", 2, "c"]:
        pyotp.send(me, m)
    first_int = await pyotp.receive(lambda m: isinstance(m, int))
    second_int = await pyotp.receive(lambda m: isinstance(m, int))
    rest = [await pyotp.receive() for _ in range(3)]
    assert first_int == 1
    assert second_int == 2
    assert rest == ["a", "b", "c"]


@pytest.mark.pyotp
async def test_selective_receive_waits_for_matching_message():
    async def sender(to):
        for m in ["x", "y", ("want", 1), "z"]:
            pyotp.send(to, m)

    pyotp.spawn(sender, pyotp.self())
    got = await pyotp.receive(lambda m: isinstance(m, tuple))
    rest = [await pyotp.receive() for _ in range(3)]
    assert got == ("want", 1)
    assert rest == ["x", "y", "z"]


@pytest.mark.pyotp
async def test_receive_timeout_raises_and_keeps_messages():
    pyotp.send(pyotp.self(), "unrelated")
    with pytest.raises(TimeoutError):
        await pyotp.receive(lambda m: m == "never", timeout=0.01)
    with pytest.raises(TimeoutError):
        await pyotp.receive(lambda m: m == "never", timeout=0)
    assert await pyotp.receive(timeout=0.5) == "unrelated"


@pytest.mark.pyotp
async def test_make_ref_unique_and_hashable():
    refs = {pyotp.make_ref() for _ in range(1000)}
    assert len(refs) == 1000


@pytest.mark.pyotp
async def test_register_whereis_unregister_and_badarg():
    me = pyotp.self()
    assert pyotp.register("main", me) is True
    assert pyotp.whereis("main") == me
    assert "main" in pyotp.registered()
    with pytest.raises(BadArg, match="already registered"):
        pyotp.register("main", pyotp.spawn(pyotp.receive))
    with pytest.raises(BadArg):
        pyotp.register("other", me)         # a process has one name
    with pytest.raises(BadArg):
        pyotp.register("undefined", pyotp.spawn(pyotp.receive))
    pyotp.send("main", "by name")
    got = await pyotp.receive()
    pyotp.unregister("main")
    assert pyotp.whereis("main") is None
    with pytest.raises(BadArg):
        pyotp.unregister("main")
    with pytest.raises(BadArg, match="no process is registered"):
        pyotp.send("main", "x")
    assert got == "by name"


@pytest.mark.pyotp
async def test_name_released_when_process_dies():
    async def short():
        return None

    pid = pyotp.spawn(pyotp.receive)
    pyotp.register("svc", pid)
    ref = pyotp.monitor(pid)
    pyotp.exit(pid, "kill")
    down = await pyotp.receive()
    assert down[4] == "killed"
    assert pyotp.whereis("svc") is None


@pytest.mark.pyotp
async def test_send_to_dead_pid_is_silent():
    pid, ref = pyotp.spawn_monitor(lambda: None)
    await pyotp.receive()
    pyotp.send(pid, "into the void")
    assert pyotp.is_alive(pid) is False


@pytest.mark.pyotp
async def test_link_crash_propagates_and_trap_exit_turns_into_message():
    async def crasher():
        raise RuntimeError("die")

    async def middle(report):
        pyotp.spawn_link(crasher)
        await pyotp.receive()                  # killed by the link before this returns

    pyotp.process_flag("trap_exit", True)
    m = pyotp.spawn_link(middle, pyotp.self())
    msg = await pyotp.receive()
    assert msg[0] == "EXIT" and isinstance(msg[2], RuntimeError)


@pytest.mark.pyotp
async def test_normal_exit_does_not_kill_linked():
    async def quick():
        return "done"

    pyotp.spawn_link(quick)
    pyotp.process_flag("trap_exit", True)
    pyotp.spawn_link(quick)
    msg = await pyotp.receive()
    assert msg[0] == "EXIT" and msg[2] == "normal"


@pytest.mark.pyotp
async def test_exit_signal_semantics():
    async def sleeper():
        await pyotp.receive()

    async def trapper(parent):
        pyotp.process_flag("trap_exit", True)
        pyotp.send(parent, "ready")
        while True:
            m = await pyotp.receive()
            pyotp.send(parent, ("trapped", m[2]))

    a, ra = pyotp.spawn_monitor(sleeper)
    pyotp.exit(a, "normal")                     # ignored
    pyotp.exit(a, "custom")
    d1 = await pyotp.receive()
    t, rt = pyotp.spawn_monitor(trapper, pyotp.self())
    assert await pyotp.receive() == "ready"
    pyotp.exit(t, "normal")
    pyotp.exit(t, "custom")
    m1 = await pyotp.receive()
    m2 = await pyotp.receive()
    pyotp.exit(t, "kill")                      # untrappable
    d2 = await pyotp.receive()
    assert d1[4] == "custom"
    assert m1 == ("trapped", "normal")
    assert m2 == ("trapped", "custom")
    assert d2[4] == "killed"


@pytest.mark.pyotp
async def test_linked_kill_arrives_as_killed():
    pyotp.process_flag("trap_exit", True)
    child = pyotp.spawn_link(pyotp.receive)
    pyotp.exit(child, "kill")
    msg = await pyotp.receive()
    assert msg[2] == "killed"


@pytest.mark.pyotp
async def test_link_to_dead_process_gives_noproc():
    pid, _ = pyotp.spawn_monitor(lambda: None)
    await pyotp.receive()
    pyotp.process_flag("trap_exit", True)
    pyotp.link(pid)
    msg = await pyotp.receive()
    assert msg[0] == "EXIT" and msg[2] == "noproc"


@pytest.mark.pyotp
async def test_long_link_chain_dies_without_recursion_error():
    async def link_next(n, parent):
        if n:
            pyotp.spawn_link(link_next, n - 1, parent)
        else:
            pyotp.send(parent, ("bottom", pyotp.self()))
        await pyotp.receive()

    pyotp.process_flag("trap_exit", True)
    top = pyotp.spawn_link(link_next, 5000, pyotp.self())
    _, bottom = await pyotp.receive(lambda m: m[0] == "bottom")
    n_before = len(pyotp.processes())
    pyotp.exit(bottom, "boom")
    msg = await pyotp.receive(lambda m: m[0] == "EXIT")
    reason = msg[2]
    n_after = len(pyotp.processes())
    assert n_before == 5002 and reason == "boom" and n_after == 1


@pytest.mark.pyotp
async def test_monitor_down_and_dead_target_noproc():
    pid = pyotp.spawn(pyotp.receive)
    ref = pyotp.monitor(pid)
    pyotp.send(pid, "go")
    down = await pyotp.receive()
    ref2 = pyotp.monitor(pid)
    down2 = await pyotp.receive()
    ref3 = pyotp.monitor("nobody")
    down3 = await pyotp.receive()
    assert down == ("DOWN", ref, "process", pid, "normal")
    assert down2 == ("DOWN", ref2, "process", pid, "noproc")
    assert down3 == ("DOWN", ref3, "process", ("nobody", pyotp.local_node()), "noproc")


@pytest.mark.pyotp
async def test_demonitor_and_flush():
    pid = pyotp.spawn(pyotp.receive)
    ref = pyotp.monitor(pid)
    pyotp.demonitor(ref)
    pyotp.send(pid, "go")
    ref2 = pyotp.monitor(pyotp.spawn(lambda: None))
    # wait for the second monitor's DOWN, which proves the first process is gone too
    await pyotp.receive(lambda m: m[1] == ref2)
    pid3 = pyotp.spawn(pyotp.receive)
    ref3 = pyotp.monitor(pid3)
    pyotp.send(pid3, "go")
    ref4 = pyotp.monitor(pyotp.spawn(lambda: None))
    await pyotp.receive(lambda m: m[1] == ref4)
    pyotp.demonitor(ref3, flush=True)
    pyotp.send(pyotp.self(), "marker")
    assert await pyotp.receive() == "marker"


def test_crash_report_logged_once(caplog):
    async def crasher():
        raise KeyError("k")

    async def main():
        pid, ref = pyotp.spawn_monitor(crasher)
        return await pyotp.receive()
    with caplog.at_level(logging.ERROR, logger="pyotp"):
        down = run(main)
    assert isinstance(down[4], KeyError)
    reports = [r for r in caplog.records if "terminating" in r.getMessage()]
    assert len(reports) == 1 and reports[0].exc_info is not None


def test_exit_reason_from_exit_raise_is_not_logged(caplog):
    async def quitter():
        pyotp.exit("my_reason")

    async def main():
        pyotp.spawn_monitor(quitter)
        return await pyotp.receive()
    with caplog.at_level(logging.ERROR, logger="pyotp"):
        down = run(main)
    assert down[4] == "my_reason"
    assert not [r for r in caplog.records if "terminating" in r.getMessage()]


@pytest.mark.pyotp
async def test_process_info_and_processes():
    pid = pyotp.spawn(pyotp.receive, lambda m: m == "never")
    pyotp.register("info_target", pid)
    ref = pyotp.monitor(pid)
    pyotp.send(pid, "queued")
    await pyotp.sleep(0)
    info = pyotp.process_info(pid)
    assert pid in pyotp.processes()
    pyotp.exit(pid, "kill")
    await pyotp.receive()
    dead = pyotp.process_info(pid)
    assert info["message_queue_len"] == 1 and info["messages"] == ["queued"]
    assert info["registered_name"] == "info_target"
    assert info["status"] == "waiting" and info["memory"] > 0
    assert len(info["monitored_by"]) == 1
    assert dead is None


@pytest.mark.pyotp
async def test_hundred_thousand_processes_spawn_and_exit_without_leaks():
    async def child(parent, i):
        pyotp.send(parent, i)

    me = pyotp.self()
    for i in range(100_000):
        pyotp.spawn(child, me, i)
    total = 0
    for _ in range(100_000):
        total += await pyotp.receive()
    pid, ref = pyotp.spawn_monitor(lambda: None)
    await pyotp.receive(lambda m: isinstance(m, tuple))
    live = len(pyotp.processes())
    assert total == sum(range(100_000))
    assert live == 1


def test_waiting_outside_process_is_a_clear_error():
    async def main():
        return 1
    with pytest.raises(RuntimeError, match="no pyotp node"):
        pyotp.spawn(main)


@pytest.mark.pyotp
async def test_awaiting_asyncio_inside_a_process():
    import asyncio

    await asyncio.sleep(0)
    fut = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(fut.set_result, "from asyncio")
    assert await fut == "from asyncio"


@pytest.mark.pyotp
async def test_killed_process_unwinds_its_coroutine():
    async def guarded(parent):
        try:
            await pyotp.receive()
        finally:
            pyotp.send(parent, "cleaned up")

    pid = pyotp.spawn(guarded, pyotp.self())
    await pyotp.sleep(0)
    pyotp.exit(pid, "kill")
    assert await pyotp.receive() == "cleaned up"


def test_keyboard_interrupt_in_a_process_stops_the_node():
    async def main():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pyotp.run(main)

    class Quitter(pyotp.GenServer):
        def handle_cast(self, msg, s):
            raise SystemExit(3)

    async def main2():
        pid = await Quitter.start(None)
        pyotp.GenServer.cast(pid, "quit")
        await pyotp.receive()

    with pytest.raises(SystemExit):
        pyotp.run(main2)
    # the node was detached: a new one starts cleanly
    async def main3():
        return "fresh"
    assert pyotp.run(main3) == "fresh"


def test_dead_processes_are_freed_even_after_crashes_with_tracebacks():
    # Process and Pid are invisible to the cyclic GC: a crash whose traceback refers to
    # the process's own pid must still free everything (no cycle may survive exit).
    import gc
    import tracemalloc

    class Boom(pyotp.GenServer):
        def init(self, me):
            self.me = pyotp.self()                 # instance -> own pid
            return ("ok", [pyotp.self()])          # state -> own pid

        def handle_cast(self, msg, state):
            mine = pyotp.self()                    # a frame local that the traceback keeps
            raise RuntimeError(("crash", mine))

    async def crasher(parent):
        me = pyotp.self()
        raise ValueError(me)

    async def batch(n):
        for _ in range(n):
            pid = await Boom.start(None)
            ref = pyotp.monitor(pid)
            pyotp.GenServer.cast(pid, "boom")
            await pyotp.receive(lambda m: m[1] == ref)
            pid2, ref2 = pyotp.spawn_monitor(crasher, pyotp.self())
            await pyotp.receive(lambda m: m[1] == ref2)

    async def main():
        import logging
        logging.getLogger("pyotp").disabled = True
        try:
            await batch(200)                       # warm up caches and freelists
            gc.collect()
            # Count only memory allocated beneath this test's own frames: threads left
            # behind by earlier tests (servers, loggers) allocate in the same window.
            tracemalloc.start(64)
            mine = [tracemalloc.Filter(True, __file__, all_frames=True)]
            before = tracemalloc.take_snapshot().filter_traces(mine)
            await batch(2000)
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(mine)
            tracemalloc.stop()
        finally:
            logging.getLogger("pyotp").disabled = False
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        return grown / 2000
    per_round = pyotp.run(main)
    # two dead processes per round, each with an exception and traceback: if they leaked,
    # that would be several KiB per round
    assert per_round < 200, per_round
