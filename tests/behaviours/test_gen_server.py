"""GenServer: callbacks, returns, start/stop, call errors, deferred replies, async callbacks."""
import logging

import pytest

import pyotp
from pyotp import GenServer, Exit, StartError, CallbackError


class Counter(GenServer):
    def init(self, n):
        return ("ok", n)

    def handle_call(self, req, from_, n):
        if req == "get":
            return ("reply", n, n)
        if req == "stop_with_reply":
            return ("stop", "normal", "bye", n)
        if req == "crash":
            raise RuntimeError("crash in call")
        if req == "bad":
            return ("weird",)
        if req == ("sleep_then_reply",):
            return ("noreply", n)
        return ("reply", ("unknown", req), n)

    def handle_cast(self, req, n):
        if req == "inc":
            return ("noreply", n + 1)
        if isinstance(req, tuple) and req[0] == "add":
            return ("noreply", n + req[1])
        return ("stop", ("bad_cast", req), n)

    def handle_info(self, msg, n):
        return ("noreply", n + 100)


@pytest.mark.pyotp
async def test_cast_call_info():
    pid = await Counter.start_link(0)
    for _ in range(10):
        GenServer.cast(pid, "inc")
    GenServer.cast(pid, ("add", 5))
    pyotp.send(pid, "some info")
    assert await GenServer.call(pid, "get") == 115


@pytest.mark.pyotp
async def test_messages_with_gen_shapes_sent_raw_are_understood():
    pid = await Counter.start(0)
    pyotp.send(pid, ("$gen_cast", "inc"))
    ref = pyotp.make_ref()
    pyotp.send(pid, ("$gen_call", (pyotp.self(), ref), "get"))
    tag, value = await pyotp.receive()
    assert value == 1


@pytest.mark.pyotp
async def test_named_server_and_already_started():
    pid = await Counter.start_link(7, name="counter")
    assert pyotp.whereis("counter") == pid
    v = await GenServer.call("counter", "get")
    with pytest.raises(StartError) as ei:
        await Counter.start_link(0, name="counter")
    assert (v, ei.value.reason == ("already_started", pid)) == (7, True)


@pytest.mark.pyotp
async def test_call_noproc_and_timeout_and_late_reply_dropped():
    class Slow(GenServer):
        def init(self, _):
            return ("ok", None)

        def handle_call(self, req, from_, pending):
            if req == "ping":
                return ("reply", "pong", pending)
            return ("noreply", from_)          # answer later, after the caller gave up

        def handle_info(self, msg, pending):
            GenServer.reply(pending, "late")
            return ("noreply", None)

    with pytest.raises(Exit) as e1:
        await GenServer.call("nobody", "x")
    assert e1.value.reason == ("noproc", ("GenServer", "call", ["nobody", "x", 5.0]))
    pid = await Slow.start_link(None)
    with pytest.raises(Exit) as e2:
        await GenServer.call(pid, "q", timeout=0)
    assert e2.value.reason == ("timeout", ("GenServer", "call", [pid, "q", 0]))
    with pytest.raises(Exit) as e3:
        await GenServer.call(pid, "q2", timeout=0.01)
    assert e3.value.reason[0] == "timeout"
    pyotp.send(pid, "release")                  # the server now replies "late"
    assert await GenServer.call(pid, "ping") == "pong"
    pyotp.send(pyotp.self(), "marker")
    assert await pyotp.receive() == "marker"


@pytest.mark.pyotp
async def test_call_to_server_that_dies_mid_call_raises_its_reason():
    pid = await Counter.start(0)
    with pytest.raises(Exit) as e:
        await GenServer.call(pid, "crash")
    reason = e.value.reason
    assert (isinstance(reason[0], RuntimeError), reason[1][0:2], pyotp.is_alive(pid)) == (True, ("GenServer", "call"), False)


@pytest.mark.pyotp
async def test_bad_return_value_stops_server():
    pyotp.process_flag("trap_exit", True)
    pid = await Counter.start_link(0)
    with pytest.raises(Exit) as e:
        await GenServer.call(pid, "bad")
    exit_msg = await pyotp.receive(lambda m: m[0] == "EXIT")
    r1 = e.value.reason[0]
    r2 = exit_msg[2]
    assert r1 == ("bad_return_value", ("weird",)) == r2


@pytest.mark.pyotp
async def test_stop_with_reply_replies_after_terminate():
    events = []

    class T(GenServer):
        def init(self, _):
            return ("ok", 0)

        def handle_call(self, req, from_, s):
            return ("stop", "normal", "bye", s)

        def terminate(self, reason, s):
            events.append(("terminate", reason))

    pid = await T.start(None)
    r = await GenServer.call(pid, "x")
    events.append(("reply", r))
    assert pyotp.is_alive(pid) is False
    assert events == [("terminate", "normal"), ("reply", "bye")]


@pytest.mark.pyotp
async def test_init_variants():
    class I(GenServer):
        def init(self, arg):
            if arg == "ignore":
                return "ignore"
            if arg == "stop":
                return ("stop", "nope")
            if arg == "raise":
                raise ValueError("bad init")
            if arg == "bad":
                return 42
            if arg == "continue":
                return ("ok", [], ("continue", "more"))
            return ("ok", arg)

        def handle_continue(self, c, s):
            return ("noreply", s + [c])

        def handle_call(self, r, f, s):
            return ("reply", s, s)

    out = {}
    out["ignore"] = await I.start("ignore")
    for a in ("stop", "raise", "bad"):
        with pytest.raises(StartError) as e:
            await I.start(a)
        out[a] = e.value.reason
    pid = await I.start("continue")
    out["continue"] = await GenServer.call(pid, "get")
    assert out["ignore"] is None
    assert out["stop"] == "nope"
    assert isinstance(out["raise"], ValueError)
    assert out["bad"] == ("bad_return_value", 42)
    assert out["continue"] == ["more"]


@pytest.mark.pyotp
async def test_start_link_init_failure_kills_non_trapping_caller_like_otp():
    class Fails(GenServer):
        def init(self, _):
            return ("stop", "no_way")

    async def starter(parent):
        try:
            await Fails.start_link(None)
        finally:
            pyotp.send(parent, "starter unwound")

    pid, ref = pyotp.spawn_monitor(starter, pyotp.self())
    down = await pyotp.receive(lambda m: m[0] == "DOWN")
    assert down[4] == "no_way"


@pytest.mark.pyotp
async def test_idle_timeout_and_message_cancels_it():
    class T(GenServer):
        def init(self, parent):
            return ("ok", parent, 0.01)

        def handle_info(self, msg, parent):
            pyotp.send(parent, ("info", msg))
            if msg == "timeout":
                return ("noreply", parent)
            return ("noreply", parent, 0.01)

    pid = await T.start_link(pyotp.self())
    first = await pyotp.receive()
    pyotp.send(pid, "poke")
    second = await pyotp.receive()
    third = await pyotp.receive()
    assert (first, second, third) == (("info", "timeout"), ("info", "poke"), ("info", "timeout"))


@pytest.mark.pyotp
async def test_deferred_reply_with_genserver_reply():
    class D(GenServer):
        def init(self, _):
            return ("ok", [])

        def handle_call(self, req, from_, waiting):
            if req == "wait":
                return ("noreply", waiting + [from_])
            for f in waiting:
                GenServer.reply(f, "released")
            return ("reply", len(waiting), [])

    async def waiter(server, parent):
        pyotp.send(parent, await GenServer.call(server, "wait"))

    pid = await D.start_link(None)
    for _ in range(3):
        pyotp.spawn(waiter, pid, pyotp.self())
    # make sure all three calls are queued before releasing
    while pyotp.process_info(pid)["messages_handled"] < 3:
        await pyotp.sleep(0)
    n = await GenServer.call(pid, "release")
    got = [await pyotp.receive() for _ in range(3)]
    assert (n, got) == (3, ["released"] * 3)


@pytest.mark.pyotp
async def test_async_callbacks_can_call_other_servers():
    class Front(GenServer):
        def init(self, backend):
            return ("ok", backend)

        async def handle_call(self, req, from_, backend):
            v = await GenServer.call(backend, "get")
            return ("reply", v * 2, backend)

    back = await Counter.start_link(21)
    front = await Front.start_link(back)
    assert await GenServer.call(front, "double") == 42


@pytest.mark.pyotp
async def test_plain_callback_that_waits_gets_clear_error():
    class Wrong(GenServer):
        def init(self, other):
            return ("ok", other)

        def handle_call(self, req, from_, other):
            GenServer.call(other, "get")
            return ("reply", "unreachable", other)

    back = await Counter.start(1)
    pid = await Wrong.start(back)
    with pytest.raises(Exit) as e:
        await GenServer.call(pid, "go")
    err = e.value.reason[0]
    assert isinstance(err, CallbackError) and "async def" in str(err)


@pytest.mark.pyotp
async def test_stop_runs_terminate_and_reports_reason():
    seen = []

    class S(GenServer):
        def init(self, _):
            pyotp.process_flag("trap_exit", True)
            return ("ok", None)

        def terminate(self, reason, state):
            seen.append(reason)

    pid = await S.start_link(None)
    r1 = await GenServer.stop(pid)
    pid2 = await S.start(None)       # not linked: a "shutdown" exit would kill us (OTP)
    r2 = await GenServer.stop(pid2, "shutdown")
    with pytest.raises(Exit) as e:
        await GenServer.stop(pid2)
    assert (r1, r2, e.value.reason[0]) == ("ok", "ok", "noproc")
    assert seen == ["normal", "shutdown"]


@pytest.mark.pyotp
async def test_parent_exit_stops_trapping_server_with_terminate():
    seen = []

    class S(GenServer):
        def init(self, parent):
            pyotp.process_flag("trap_exit", True)
            return ("ok", parent)

        def terminate(self, reason, parent):
            pyotp.send(parent, ("terminated", reason))

    async def parent_proc(top):
        await S.start_link(top)
        pyotp.send(top, "started")
        await pyotp.receive()

    p = pyotp.spawn(parent_proc, pyotp.self())
    assert await pyotp.receive() == "started"
    pyotp.exit(p, "shutdown")
    assert await pyotp.receive() == ("terminated", "shutdown")


def test_crash_report_for_abnormal_stop(caplog):
    async def main():
        pid = await Counter.start(0)
        ref = pyotp.monitor(pid)
        GenServer.cast(pid, "unexpected")
        return await pyotp.receive()
    with caplog.at_level(logging.ERROR, logger="pyotp"):
        down = pyotp.run(main)
    assert down[4] == ("bad_cast", "unexpected")
    assert len([r for r in caplog.records if "GenServer" in r.getMessage()]) == 1


def test_calls_from_asyncio_tasks_in_hosted_runtime():
    import asyncio

    async def amain():
        async with pyotp.Runtime():
            pid = await Counter.start_link(5)
            GenServer.cast(pid, "inc")
            results = await asyncio.gather(*(GenServer.call(pid, "get") for _ in range(10)))
            await GenServer.stop(pid)
            return results
    assert asyncio.run(amain()) == [6] * 10


@pytest.mark.pyotp
async def test_call_self_is_an_error():
    class Selfish(GenServer):
        async def handle_call(self, req, from_, s):
            await GenServer.call(pyotp.self(), "again")

    pid = await Selfish.start(None)
    with pytest.raises(Exit) as e:
        await GenServer.call(pid, "x")
    assert e.value.reason[0][0] == "calling_self"


@pytest.mark.pyotp
async def test_async_init_and_terminate():
    events = []

    class A(GenServer):
        async def init(self, arg):
            await pyotp.sleep(0.001)
            return ("ok", arg)

        def handle_call(self, req, from_, s):
            return ("reply", s, s)

        async def terminate(self, reason, s):
            await pyotp.sleep(0.001)
            events.append(reason)

    pid = await A.start_link("ready")
    v = await GenServer.call(pid, "get")
    await GenServer.stop(pid, "normal")
    assert v == "ready"
    assert events == ["normal"]


@pytest.mark.pyotp
async def test_kill_during_async_callback_unwinds_it_without_terminate():
    events = []

    class Busy(GenServer):
        async def handle_call(self, req, from_, parent):
            try:
                pyotp.send(parent, "inside")
                await pyotp.receive(lambda m: m == "never")
            finally:
                events.append("unwound")

        def terminate(self, reason, s):
            events.append("terminate")

    async def caller(pid):
        await GenServer.call(pid, "go", timeout=None)

    pid = await Busy.start(pyotp.self())
    pyotp.spawn(caller, pid)
    assert await pyotp.receive() == "inside"
    ref = pyotp.monitor(pid)
    pyotp.exit(pid, "kill")
    assert (await pyotp.receive())[4] == "killed"
    assert events == ["unwound"]


@pytest.mark.pyotp
async def test_hibernate_continue_from_call_and_extras():
    class H(GenServer):
        def init(self, _):
            return ("ok", [], "hibernate")

        def handle_call(self, req, from_, s):
            return ("reply", "queued", s + ["call"], ("continue", "after-call"))

        def handle_continue(self, c, s):
            return ("noreply", s + [c], "hibernate")

        def handle_cast(self, req, s):
            return ("noreply", s + [req], ("continue", "after-cast"))

        def handle_info(self, msg, s):
            pyotp.send(msg, s)
            return ("noreply", s)

    pid = await H.start_link(None)
    r = await GenServer.call(pid, "x")
    GenServer.cast(pid, "c")
    pyotp.send(pid, pyotp.self())
    assert (r, await pyotp.receive()) == ("queued", ["call", "after-call", "c", "after-cast"])


@pytest.mark.pyotp
async def test_bad_extra_in_return_is_bad_return_value():
    class B(GenServer):
        def handle_cast(self, req, s):
            return ("noreply", s, "sometimes")

    pid = await B.start(0)
    ref = pyotp.monitor(pid)
    GenServer.cast(pid, "x")
    assert (await pyotp.receive())[4] == ("bad_return_value", ("noreply", 0, "sometimes"))


@pytest.mark.pyotp
async def test_start_timeout_kills_slow_init():
    class Slow(GenServer):
        async def init(self, _):
            await pyotp.receive(lambda m: m == "never")

    with pytest.raises(StartError) as e:
        await Slow.start(None, timeout=0.01)
    assert (e.value.reason, len(pyotp.processes())) == ("timeout", 1)


@pytest.mark.pyotp
async def test_cast_to_unknown_names_never_fails():
    assert ((GenServer.cast("nobody", "x"), GenServer.cast(("global", "nobody"), "x"),
            GenServer.cast(("nobody", "other@host"), "x"),
            GenServer.cast(pyotp.Pid("other@host", 1, 0, 1), "x"))) == ("ok", "ok", "ok", "ok")


@pytest.mark.pyotp
async def test_global_and_via_names_without_distribution():
    class Reg:
        table = {}

        @classmethod
        def register_name(cls, key, pid):
            if key in cls.table:
                return "no"
            cls.table[key] = pid
            return "yes"

        @classmethod
        def unregister_name(cls, key):
            cls.table.pop(key, None)

        @classmethod
        def whereis_name(cls, key):
            pid = cls.table.get(key)
            return pid if pid is not None and pyotp.is_alive(pid) else None

    g = await Counter.start(1, name=("global", "g1"))
    v = await Counter.start(2, name=("via", Reg, "k"))
    with pytest.raises(StartError):
        await Counter.start(3, name=("via", Reg, "k"))
    GenServer.cast(("via", Reg, "k"), "inc")
    assert ((await GenServer.call(("global", "g1"), "get"),
            await GenServer.call(("via", Reg, "k"), "get"),
            GenServer.whereis(("via", Reg, "k")) == v)) == (1, 3, True)


@pytest.mark.pyotp
async def test_call_reply_bypasses_a_long_mailbox():
    # The reply is handed to the waiting caller directly (matched by its reference), so a
    # caller with 100k unrelated messages queued neither scans nor reorders them.
    pid = await Counter.start_link(3)
    me = pyotp.self()
    for i in range(100_000):
        pyotp.send(me, ("noise", i))
    got = await GenServer.call(pid, "get")
    info = pyotp.process_info(me)
    first = await pyotp.receive()
    assert (got, info["message_queue_len"], first) == (3, 100_000, ("noise", 0))


@pytest.mark.pyotp
async def test_a_busy_process_does_not_starve_others():
    # A server that keeps sending itself messages never goes idle; the per-visit budget
    # must still let other processes run (without it this test would never finish).
    class Spinner(GenServer):
        def init(self, _):
            pyotp.send(pyotp.self(), "spin")
            return ("ok", 0)

        def handle_info(self, msg, n):
            pyotp.send(pyotp.self(), "spin")
            return ("noreply", n + 1)

        def handle_call(self, req, from_, n):
            return ("reply", n, n)

    spinner = await Spinner.start_link(None)
    other = await Counter.start_link(0)
    for _ in range(100):
        GenServer.cast(other, "inc")
    got = await GenServer.call(other, "get")
    spins = await GenServer.call(spinner, "count")
    assert (got, spins > 0) == (100, True)
