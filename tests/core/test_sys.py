"""pyotp.sys: get_state, replace_state, get_status (format_status), change_code; crash
reports carry the last message and the formatted state."""
import logging

import pytest

import pyotp
from pyotp import GenServer
from pyotp import sys as otp_sys

pytestmark = pytest.mark.pyotp


class Versioned(GenServer):
    def init(self, n):
        return ("ok", {"n": n, "secret": "hunter2"})

    def handle_call(self, req, from_, s):
        return ("reply", s["n"], s)

    def handle_cast(self, req, s):
        raise RuntimeError("cast crash")

    def code_change(self, old_vsn, s, extra):
        if old_vsn == "bad":
            return ("error", "cannot")
        return ("ok", dict(s, vsn=(old_vsn, extra)))

    def format_status(self, status):
        state = dict(status["state"], secret="***")
        return dict(status, state=state)


async def test_sys_operations():
    pid = await Versioned.start_link(1)
    s1 = await otp_sys.get_state(pid)
    s2 = await otp_sys.replace_state(pid, lambda s: dict(s, n=5))
    n = await GenServer.call(pid, "get")
    st = await otp_sys.get_status(pid)
    ok = await otp_sys.change_code(pid, "1.0", "x")
    bad = await otp_sys.change_code(pid, "bad")
    s3 = await otp_sys.get_state(pid)
    err = await otp_sys.replace_state(pid, lambda s: 1 / 0)
    still = await GenServer.call(pid, "get")
    s1 = s1["n"]
    s2 = s2["n"]
    vsn = s3["vsn"]
    err = err[0]
    assert (s1, s2, n) == (1, 5, 5)
    assert st["behaviour"] == "Versioned" and st["state"]["secret"] == "***"
    assert ok == "ok" and bad == ("error", "cannot") and vsn == ("1.0", "x")
    assert err == "error" and still == 5


async def test_sys_on_dead_server_is_noproc():
    with pytest.raises(pyotp.Exit) as e:
        await otp_sys.get_state("nobody")
    assert e.value.reason[0] == "noproc"


async def test_crash_report_has_last_message_and_formatted_state(caplog):
    caplog.set_level(logging.ERROR, logger="pyotp")
    pid = await Versioned.start(1)
    ref = pyotp.monitor(pid)
    GenServer.cast(pid, ("boom", 7))
    await pyotp.receive()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Last message: ('boom', 7)" in text
    assert "***" in text and "hunter2" not in text


class Acc(GenServer):
    def init(self, n):
        return ("ok", n)

    def handle_call(self, req, from_, n):
        return ("reply", n, n)

    def handle_cast(self, req, n):
        return ("noreply", n + req)

    def terminate(self, reason, n):
        if pyotp.whereis("sys_watcher") is not None:
            pyotp.send("sys_watcher", ("terminated", reason, n))


async def test_suspend_resume_terminate_and_status():
    pyotp.register("sys_watcher", pyotp.self())
    pid = await Acc.start(1)
    out = [await otp_sys.suspend(pid, timeout=10)]
    GenServer.cast(pid, 10)                       # waits in the mailbox, in order
    GenServer.cast(pid, 100)
    out.append(await otp_sys.get_state(pid))      # system messages still run
    out.append((await otp_sys.get_status(pid))["status"])
    out.append(await otp_sys.resume(pid))
    out.append(await GenServer.call(pid, "get"))
    out.append((await otp_sys.get_status(pid))["status"])
    out.append(await otp_sys.change_code(pid, "0"))
    pyotp.monitor(pid)
    out.append(await otp_sys.terminate(pid, ("shutdown", "x")))
    out.append(await pyotp.receive(lambda m: m[0] == "terminated", timeout=10))
    out.append((await pyotp.receive(lambda m: m[0] == "DOWN", timeout=10))[4])
    with pytest.raises(pyotp.Exit):
        await otp_sys.get_state(pid)
    assert out == ["ok", 1, "suspended", "ok", 111, "running", "ok", "ok",
                   ("terminated", ("shutdown", "x"), 111), ("shutdown", "x")]


async def test_stop_reaches_a_suspended_server_and_unknown_requests_are_errors():
    pid = await Acc.start(1)
    await otp_sys.suspend(pid)
    bad = await pyotp._core._sys_request(pid, "no_such_request", 5.0)
    stopped = await GenServer.stop(pid)
    assert bad == ("error", ("unknown_system_msg", "no_such_request")) and stopped == "ok"


class Bag(GenServer):
    def init(self, items):
        return ("ok", items)

    def handle_call(self, req, from_, s):
        return ("reply", s, s)

    def handle_cast(self, item, s):
        return ("noreply", s + [item])

    def handle_info(self, msg, s):
        return ("noreply", s)


async def test_statistics_log_install_and_no_debug_on_a_local_server():
    pid = await Bag.start_link([])
    out = {"off": await otp_sys.statistics(pid, "get")}
    out["on"] = await otp_sys.statistics(pid, True)
    await GenServer.call(pid, "get")
    GenServer.cast(pid, "a")
    pyotp.send(pid, "info")
    await otp_sys.get_state(pid)                  # a system message: not counted
    st = await otp_sys.statistics(pid, "get")
    out["stats"] = (sorted(st), st["messages_in"], st["messages_out"], st["reductions"] > 0)
    out["stat_off"] = (await otp_sys.statistics(pid, False), await otp_sys.statistics(pid, "get"))
    out["log_on"] = await otp_sys.log(pid, ("true", 2))
    GenServer.cast(pid, "b")
    await GenServer.call(pid, "get")
    out["log"] = [ev[0] for ev in await otp_sys.log(pid, "get")]
    seen = []
    out["install"] = await otp_sys.install(pid, lambda n, ev, name: seen.append((n, ev[0], name)) or n + 1, 0)
    GenServer.cast(pid, "c")
    await GenServer.call(pid, "get")
    out["seen"] = seen[:]
    out["no_debug"] = await otp_sys.no_debug(pid)
    GenServer.cast(pid, "d")
    await GenServer.call(pid, "get")
    out["after"] = (len(seen), await otp_sys.log(pid, "get"), await otp_sys.statistics(pid, "get"))
    with pytest.raises(TypeError):
        await otp_sys.statistics(pid, "sometimes")
    assert out["off"] is None and out["on"] == "ok"
    assert out["stats"] == (["current_time", "messages_in", "messages_out", "reductions",
                             "start_time"], 3, 1, True)
    assert out["stat_off"] == ("ok", None)
    assert out["log_on"] == "ok"
    assert out["log"] == ["in", "out"]                # the last 2 of in, noreply, in, out
    assert out["install"] == "ok"
    assert out["seen"] == [(0, "in", pid), (1, "noreply", pid), (2, "in", pid), (3, "out", pid)]
    assert out["no_debug"] == "ok"
    assert out["after"] == (4, [], None)


class Idle(pyotp.GenStateMachine):
    def init(self, arg):
        return ("ok", "idle", 0)

    def handle_event(self, event_type, content, state, data):
        if event_type == "cast":
            return ("keep_state", data + 1)
        return ("keep_state_and_data", ("reply", event_type[1], data))


async def test_statistics_count_a_state_machines_reply_actions():
    # as OTP's gen_statem: 2 calls and a cast are 3 in, the 2 reply actions 2 out
    pid = await Idle.start_link(None)
    await otp_sys.statistics(pid, True)
    await pyotp.GenStateMachine.call(pid, "get")
    pyotp.GenStateMachine.cast(pid, "x")
    await pyotp.GenStateMachine.call(pid, "get")
    st = await otp_sys.statistics(pid, "get")
    assert st["messages_in"] == 3
    assert st["messages_out"] == 2
