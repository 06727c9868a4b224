"""Supervisor: child specs, start order, strategies, restart types, intensity, shutdown,
the child API, module-based supervisors and reports."""
import logging

import pytest

import pyotp
from pyotp import Exit, GenServer, StartError
from pyotp.child_spec import (ChildSpecError, RestartIntensity, SupervisorError, child_spec,
                              default_child_spec, normalize_child)
from pyotp.supervisor import Supervisor
from servers import Ignores, Refuses


class Rec(GenServer):
    """A worker that records its start and stop in a list shared with the test."""

    def init(self, arg):
        name, log = arg
        log.append(("start", name))
        return ("ok", (name, log))

    def handle_call(self, req, from_, st):
        if req == "name":
            return ("reply", st[0], st)
        return ("reply", ("unknown", req), st)

    def handle_cast(self, req, st):
        if req[0] == "stop":                  # ("stop", reason): exit with that reason
            return ("stop", req[1], st)
        return ("noreply", st)

    def terminate(self, reason, st):
        st[1].append(("stop", st[0], reason))


class TrapRec(Rec):
    """Traps exits, so a supervisor's "shutdown" runs its terminate."""

    def init(self, arg):
        pyotp.process_flag("trap_exit", True)
        return super().init(arg)


class Stubborn(GenServer):
    """Traps exits and never finishes terminate (only "kill" ends it)."""

    def init(self, log):
        pyotp.process_flag("trap_exit", True)
        return ("ok", log)

    async def terminate(self, reason, log):
        log.append(("terminating", reason))
        await pyotp.receive(lambda m: m == "never sent")


def w(name, log, cls=Rec, **extra):
    spec = {"id": name, "start": (cls.start_link, ((name, log),))}
    spec.update(extra)
    return spec


async def pids(sup):
    return {cid: pid for (cid, pid, _t, _m) in await Supervisor.which_children(sup)}


async def stop_and_wait(pid, reason):
    """Make a Rec exit with reason and wait until it is dead (its supervisor has the EXIT
    queued by then: links are signalled before monitors)."""
    ref = pyotp.monitor(pid)
    GenServer.cast(pid, ("stop", reason))
    return (await down_of(ref))[4]


async def down_of(ref):
    return await pyotp.receive(lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == ref)


# ---------------------------------------------------------------------------------------
# Starting and stopping


@pytest.mark.pyotp
async def test_children_start_in_order_and_stop_in_reverse():
    log = []

    sup = await Supervisor.start_link([w("a", log, TrapRec), w("b", log, TrapRec), w("c", log, TrapRec)],
                                      strategy="one_for_one")
    started = list(log)
    children = await Supervisor.which_children(sup)
    assert await Supervisor.stop(sup) == "ok"
    ids = [c[0] for c in children]
    stopped = log[3:]
    nprocs = len(pyotp.processes())
    assert started == [("start", "a"), ("start", "b"), ("start", "c")]
    assert ids == ["a", "b", "c"]
    assert stopped == [("stop", "c", "shutdown"), ("stop", "b", "shutdown"), ("stop", "a", "shutdown")]
    assert nprocs == 1


@pytest.mark.pyotp
async def test_which_children_and_count_children():
    log = []

    inner = {"id": "inner", "start": (Supervisor.start_link, ([w("x", log)],), {"strategy": "one_for_one"}),
             "type": "supervisor"}
    sup = await Supervisor.start_link([w("a", log), inner], strategy="one_for_one")
    children = await Supervisor.which_children(sup)
    counts = await Supervisor.count_children(sup)
    inner_pid = children[1][1]
    inner_children = await Supervisor.which_children(inner_pid)
    spec = await Supervisor.get_childspec(sup, "inner")
    (aid, apid, atype, amods), (iid, ipid, itype, imods) = children
    assert (aid, atype, amods) == ("a", "worker", [Rec])
    assert isinstance(apid, pyotp.Pid) and isinstance(ipid, pyotp.Pid)
    assert (iid, itype, imods) == ("inner", "supervisor", [Supervisor])
    assert counts == {"specs": 2, "active": 2, "supervisors": 1, "workers": 1}
    assert [c[0] for c in inner_children] == ["x"]
    assert spec["shutdown"] == "infinity" and spec["restart"] == "permanent"


@pytest.mark.pyotp
async def test_registered_name_and_calls_by_name():
    sup = await Supervisor.start_link([(Rec, ("a", []))], strategy="one_for_one", name="the_sup")
    assert pyotp.whereis("the_sup") == sup
    assert [c[0] for c in await Supervisor.which_children("the_sup")] == [Rec]


@pytest.mark.pyotp
async def test_stop_with_other_reason_and_parent_exit_stop_children():
    log = []

    # a parent that dies abnormally takes its supervisor (and the children) down
    async def parent():
        sup = await Supervisor.start_link([w("a", log, TrapRec)], strategy="one_for_one")
        pyotp.send(main_pid, ("sup", sup))
        await pyotp.receive(lambda m: m == "die")
        raise Exit("parent_gone")

    main_pid = pyotp.self()
    p = pyotp.spawn(parent)
    _, sup = await pyotp.receive(lambda m: m[0] == "sup")
    ref = pyotp.monitor(sup)
    pyotp.send(p, "die")
    down = await down_of(ref)
    reason = down[4]
    log_ = list(log)
    nprocs = len(pyotp.processes())
    assert reason == "parent_gone"
    assert log_ == [("start", "a"), ("stop", "a", "shutdown")]
    assert nprocs == 1


# ---------------------------------------------------------------------------------------
# Strategies


def test_one_for_one_restarts_only_the_dead_child():
    log = []

    async def main():
        sup = await Supervisor.start_link([w("a", log), w("b", log), w("c", log)], strategy="one_for_one")
        before = await pids(sup)
        pyotp.exit(before["b"], "kill")
        after = await pids(sup)
        return before, after

    before, after = pyotp.run(main)
    assert after["a"] == before["a"] and after["c"] == before["c"]
    assert after["b"] != before["b"] and pyotp.Pid is type(after["b"])
    assert log == [("start", "a"), ("start", "b"), ("start", "c"), ("start", "b")]


@pytest.mark.pyotp
async def test_one_for_all_restarts_everyone_in_order():
    log = []

    sup = await Supervisor.start_link([w("a", log, TrapRec), w("b", log, TrapRec), w("c", log, TrapRec)],
                                      strategy="one_for_all")
    before = await pids(sup)
    del log[:]
    await stop_and_wait(before["b"], "oops")
    after = await pids(sup)
    log = list(log)
    assert all(after[k] != before[k] for k in "abc")
    assert log == [("stop", "b", "oops"),
                   ("stop", "c", "shutdown"), ("stop", "a", "shutdown"),
                   ("start", "a"), ("start", "b"), ("start", "c")]


@pytest.mark.pyotp
async def test_rest_for_one_restarts_the_dead_child_and_those_after_it():
    log = []

    sup = await Supervisor.start_link([w(k, log, TrapRec) for k in "abcd"], strategy="rest_for_one")
    before = await pids(sup)
    del log[:]
    pyotp.exit(before["b"], "kill")
    after = await pids(sup)
    log = list(log)
    assert after["a"] == before["a"]
    assert all(after[k] != before[k] for k in "bcd")
    assert log == [("stop", "d", "shutdown"), ("stop", "c", "shutdown"),
                   ("start", "b"), ("start", "c"), ("start", "d")]


@pytest.mark.pyotp
async def test_one_for_all_drops_temporary_siblings():
    log = []

    sup = await Supervisor.start_link([w("a", log), w("t", log, restart="temporary"), w("c", log)],
                                      strategy="one_for_all")
    before = await pids(sup)
    pyotp.exit(before["a"], "kill")
    children = await Supervisor.which_children(sup)
    assert [c[0] for c in children] == ["a", "c"]
    assert all(isinstance(c[1], pyotp.Pid) for c in children)


# ---------------------------------------------------------------------------------------
# Restart types


@pytest.mark.parametrize("reason,restarted", [
    ("normal", False), ("shutdown", False), (("shutdown", "bye"), False), ("crashed", True),
])
@pytest.mark.pyotp
async def test_transient_restarts_only_after_abnormal_exit(reason, restarted):
    log = []

    sup = await Supervisor.start_link([w("t", log, restart="transient")], strategy="one_for_one")
    before = await pids(sup)
    await stop_and_wait(before["t"], reason)
    after = await pids(sup)
    counts = await Supervisor.count_children(sup)
    if restarted:
        assert isinstance(after["t"], pyotp.Pid) and after["t"] != before["t"]
        assert counts["active"] == 1
    else:
        assert after == {"t": None}              # the spec stays, no process
        assert counts == {"specs": 1, "active": 0, "supervisors": 0, "workers": 1}


@pytest.mark.parametrize("reason", ["normal", "crashed"])
@pytest.mark.pyotp
async def test_temporary_is_never_restarted_and_is_forgotten(reason):
    log = []

    sup = await Supervisor.start_link([w("t", log, restart="temporary"), w("p", log)], strategy="one_for_one")
    before = await pids(sup)
    await stop_and_wait(before["t"], reason)
    after = await pids(sup)
    assert list(after) == ["p"]
    assert log.count(("start", "t")) == 1


@pytest.mark.pyotp
async def test_permanent_is_restarted_even_after_normal_exit():
    log = []

    sup = await Supervisor.start_link([w("p", log)], strategy="one_for_one")
    before = await pids(sup)
    await stop_and_wait(before["p"], "normal")
    after = await pids(sup)
    assert (before["p"] != after["p"] and isinstance(after["p"], pyotp.Pid)) is True


# ---------------------------------------------------------------------------------------
# Restart intensity


def test_restart_intensity_unit_sliding_window():
    r = RestartIntensity(2, 10)
    assert [r.add(t) for t in (0.0, 1.0)] == [True, True]
    assert r.add(2.0) is False                   # 3 restarts within 10 s
    r = RestartIntensity(2, 10)
    assert [r.add(t) for t in (0.0, 1.0, 11.5)] == [True, True, True]   # 0.0 left the window
    assert r.add(11.6) is True                   # 1.0 left it too: 11.5 and 11.6
    assert r.add(11.7) is False
    assert RestartIntensity(0, 5).add(0.0) is False


@pytest.mark.pyotp
async def test_exceeding_max_restarts_shuts_the_supervisor_down(caplog):
    caplog.set_level(logging.ERROR, logger="pyotp")
    log = []

    pyotp.process_flag("trap_exit", True)      # the supervisor's "shutdown" exit would end us
    sup = await Supervisor.start_link([w("a", log, TrapRec), w("b", log, TrapRec)], strategy="one_for_one",
                                      max_restarts=2, max_seconds=3600)
    ref = pyotp.monitor(sup)
    for i in range(2):
        pyotp.exit((await pids(sup))["a"], "kill")
    assert pyotp.is_alive(sup)
    alive = await Supervisor.count_children(sup)
    pyotp.exit((await pids(sup))["a"], "kill")      # the third restart in the window
    down = await down_of(ref)
    reason = down[4]
    nprocs = len(pyotp.processes())
    assert alive["active"] == 2
    assert reason == "shutdown"
    assert nprocs == 1                                    # b was terminated too
    assert ("stop", "b", "shutdown") in log
    reports = [r.pyotp_report for r in caplog.records if hasattr(r, "pyotp_report")]
    assert [r["context"] for r in reports].count("child_terminated") == 3
    assert {"context": "shutdown", "reason": "reached_max_restart_intensity"}.items() <= reports[-1].items()


@pytest.mark.pyotp
async def test_max_restarts_zero_means_the_first_crash_stops_it():
    pyotp.process_flag("trap_exit", True)      # the supervisor's "shutdown" exit would end us
    sup = await Supervisor.start_link([(Rec, ("a", []))], strategy="one_for_all", max_restarts=0)
    ref = pyotp.monitor(sup)
    pyotp.exit((await Supervisor.which_children(sup))[0][1], "kill")
    assert (await down_of(ref))[4] == "shutdown"


@pytest.mark.pyotp
async def test_failed_restart_is_retried_and_shows_restarting():
    attempts = []

    async def flaky_start():
        attempts.append(1)
        if len(attempts) == 2:                    # the first restart fails
            raise StartError("not_now")
        return await Rec.start_link(("f", []))

    sup = await Supervisor.start_link([{"id": "f", "start": (flaky_start, ())}], strategy="one_for_one")
    first = await pids(sup)
    pyotp.exit(first["f"], "kill")
    during = await pids(sup)                  # handled after the failed restart
    after = await pids(sup)                   # handled after the retry
    assert during == {"f": "restarting"}
    assert isinstance(after["f"], pyotp.Pid) and after["f"] != first["f"]
    assert len(attempts) == 3


@pytest.mark.pyotp
async def test_restart_that_always_fails_ends_in_shutdown():
    starts = []

    async def start_once():
        starts.append(1)
        if len(starts) > 1:
            return ("error", "broken")
        return await Rec.start_link(("f", []))

    pyotp.process_flag("trap_exit", True)      # the supervisor's "shutdown" exit would end us
    sup = await Supervisor.start_link([{"id": "f", "start": (start_once, ())}], strategy="one_for_one",
                                      max_restarts=3, max_seconds=3600)
    ref = pyotp.monitor(sup)
    pyotp.exit((await pids(sup))["f"], "kill")
    assert (await down_of(ref))[4] == "shutdown"
    assert len(starts) == 1 + 3                   # three restarts allowed, the fourth stops it


# ---------------------------------------------------------------------------------------
# Start failures and ignore


@pytest.mark.pyotp
async def test_child_start_failure_fails_the_supervisor_start():
    log = []

    pyotp.process_flag("trap_exit", True)
    with pytest.raises(StartError) as ei:
        await Supervisor.start_link([w("a", log, TrapRec), {"id": "bad", "start": (Refuses.start_link, ("nope",))},
                                     w("c", log)], strategy="one_for_one")
    exit_msg = await pyotp.receive(lambda m: m[0] == "EXIT")
    reason = ei.value.reason
    exit_reason = exit_msg[2]
    nprocs = len(pyotp.processes())
    assert reason == ("shutdown", ("failed_to_start_child", "bad", "nope"))
    assert exit_reason == reason
    assert log == [("start", "a"), ("stop", "a", "shutdown")]     # c never started, a stopped
    assert nprocs == 1


@pytest.mark.pyotp
async def test_supervisor_start_failure_kills_a_caller_that_does_not_trap_exits():
    async def starter():
        await Supervisor.start_link([{"id": "bad", "start": (Refuses.start_link, ("nope",))}],
                                    strategy="one_for_one")
        return "survived"

    pid, ref = pyotp.spawn_monitor(starter)
    assert (await down_of(ref))[4] == ("shutdown", ("failed_to_start_child", "bad", "nope"))


@pytest.mark.pyotp
async def test_start_function_results_and_crashes():
    async def returns_ok_tuple():
        return ("ok", await Rec.start_link(("t", [])))

    def raises():
        raise RuntimeError("cannot start")

    sup = await Supervisor.start_link([{"id": "tuple", "start": (returns_ok_tuple, ())},
                                       {"id": "ign", "start": (Ignores.start_link, (None,))},
                                       {"id": "tmp_ign", "start": (Ignores.start_link, (None,)),
                                        "restart": "temporary"}],
                                      strategy="one_for_one")
    children = await pids(sup)
    pyotp.process_flag("trap_exit", True)
    with pytest.raises(StartError) as ei:
        await Supervisor.start_link([{"id": "x", "start": (raises, ())}], strategy="one_for_one")
    reason = ei.value.reason
    assert isinstance(children["tuple"], pyotp.Pid)
    assert children["ign"] is None and "tmp_ign" not in children
    assert reason[0] == "shutdown"
    kind, cid, err = reason[1]
    assert (kind, cid) == ("failed_to_start_child", "x") and isinstance(err, RuntimeError)


# ---------------------------------------------------------------------------------------
# The child API


@pytest.mark.pyotp
async def test_start_child_appends_and_reports_duplicates():
    log = []

    sup = await Supervisor.start_link([w("a", log)], strategy="rest_for_one")
    b = await Supervisor.start_child(sup, w("b", log))
    with pytest.raises(StartError) as dup:
        await Supervisor.start_child(sup, w("b", log))
    await Supervisor.terminate_child(sup, "b")
    with pytest.raises(StartError) as present:
        await Supervisor.start_child(sup, w("b", log))
    with pytest.raises(StartError) as failed:
        await Supervisor.start_child(sup, {"id": "r", "start": (Refuses.start_link, ("no",))})
    ign = await Supervisor.start_child(sup, {"id": "i", "start": (Ignores.start_link, (None,))})
    dup = dup.value.reason
    present = present.value.reason
    failed = failed.value.reason
    children = await pids(sup)
    assert dup == ("already_started", b)
    assert present == "already_present"
    assert failed[0] == "no" and failed[1]["id"] == "r"
    assert ign is None
    assert list(children) == ["a", "b", "i"] and children["b"] is None and children["i"] is None


@pytest.mark.pyotp
async def test_terminate_restart_delete_child():
    log = []

    sup = await Supervisor.start_link([w("a", log, TrapRec), w("t", log, restart="temporary")],
                                      strategy="one_for_one")
    out = {}
    with pytest.raises(SupervisorError) as e:
        await Supervisor.delete_child(sup, "a")
    out["delete_running"] = e.value.reason
    with pytest.raises(SupervisorError) as e:
        await Supervisor.restart_child(sup, "a")
    out["restart_running"] = e.value.reason
    out["terminate"] = await Supervisor.terminate_child(sup, "a")
    out["after_terminate"] = await pids(sup)
    out["restart"] = await Supervisor.restart_child(sup, "a")
    out["after_restart"] = await pids(sup)
    await Supervisor.terminate_child(sup, "a")
    out["delete"] = await Supervisor.delete_child(sup, "a")
    await Supervisor.terminate_child(sup, "t")            # temporary: spec dropped too
    out["final"] = await pids(sup)
    for call in (Supervisor.terminate_child, Supervisor.restart_child, Supervisor.delete_child,
                 Supervisor.get_childspec):
        with pytest.raises(SupervisorError) as e:
            await call(sup, "missing")
        assert e.value.reason == "not_found"
    assert out["delete_running"] == "running" and out["restart_running"] == "running"
    assert out["terminate"] == "ok" and out["after_terminate"]["a"] is None
    assert out["after_restart"]["a"] == out["restart"]
    assert out["delete"] == "ok" and out["final"] == {}
    assert ("stop", "a", "shutdown") in log


@pytest.mark.pyotp
async def test_restarting_child_cannot_be_deleted_or_restarted():
    tries = []

    async def failing_after_first():
        tries.append(1)
        if len(tries) > 1:
            raise StartError("down")
        return await Rec.start_link(("f", []))

    sup = await Supervisor.start_link([{"id": "f", "start": (failing_after_first, ())}],
                                      strategy="one_for_one", max_restarts=10 ** 9, max_seconds=3600)
    # it retries (a cast to itself) between our requests, failing every time
    pyotp.exit((await pids(sup))["f"], "kill")
    out = []
    for call in (Supervisor.delete_child, Supervisor.restart_child):
        with pytest.raises(SupervisorError) as e:
            await call(sup, "f")
        out.append(e.value.reason)
    out.append(await Supervisor.terminate_child(sup, "f"))   # stops the retries
    out.append(await pids(sup))
    assert out == ["restarting", "restarting", "ok", {"f": None}]
    assert len(tries) > 2


# ---------------------------------------------------------------------------------------
# Shutdown


def test_shutdown_timeout_then_kill(caplog):
    caplog.set_level(logging.ERROR, logger="pyotp")
    log = []

    async def main():
        sup = await Supervisor.start_link([{"id": "s", "start": (Stubborn.start_link, (log,)), "shutdown": 0.02}],
                                          strategy="one_for_one")
        pid = (await pids(sup))["s"]
        r = await Supervisor.terminate_child(sup, "s")
        return r, pyotp.is_alive(pid)

    r, alive = pyotp.run(main)
    assert (r, alive) == ("ok", False)
    assert log == [("terminating", "shutdown")]
    errs = [x.pyotp_report for x in caplog.records if getattr(x, "pyotp_report", {}).get("context") == "shutdown_error"]
    assert len(errs) == 1 and errs[0]["reason"] == "killed" and errs[0]["id"] == "s"


@pytest.mark.pyotp
async def test_brutal_kill_does_not_run_terminate():
    log = []

    sup = await Supervisor.start_link([w("b", log, TrapRec, shutdown="brutal_kill")], strategy="one_for_one")
    await Supervisor.stop(sup)
    assert len(pyotp.processes()) == 1
    assert log == [("start", "b")]


@pytest.mark.pyotp
async def test_infinity_waits_for_a_slow_terminate():
    log = []

    class Slow(GenServer):
        def init(self, _):
            pyotp.process_flag("trap_exit", True)
            return ("ok", None)

        async def terminate(self, reason, st):
            await pyotp.sleep(0.01)
            log.append(("done", reason))

    sup = await Supervisor.start_link([{"id": "s", "start": (Slow.start_link, (None,)), "shutdown": "infinity"}],
                                      strategy="one_for_one")
    await Supervisor.stop(sup)
    assert list(log) == [("done", "shutdown")]


# ---------------------------------------------------------------------------------------
# Module-based supervisors


class AppSup(Supervisor):
    def init(self, arg):
        log, strategy = arg
        return Supervisor.init([w("a", log), w("b", log)], strategy=strategy, max_restarts=5, max_seconds=10)


class AsyncInitSup(Supervisor):
    async def init(self, log):
        await pyotp.sleep(0)
        return Supervisor.init([(Rec, ("x", log))], strategy="one_for_one")


class IgnoreSup(Supervisor):
    def init(self, _):
        return "ignore"


class BadReturnSup(Supervisor):
    def init(self, _):
        return ("ok", "not flags and children")


class BadSpecSup(Supervisor):
    def init(self, _):
        return ("ok", ({"strategy": "one_for_one"}, [{"id": "a", "start": (Rec.start_link, (("a", []),)),
                                                      "restart": "sometimes"}]))


class BadFlagsSup(Supervisor):
    def init(self, _):
        return Supervisor.init([], strategy="one_for_none")


class NoInitSup(Supervisor):
    pass


@pytest.mark.pyotp
async def test_module_based_supervisor():
    log = []

    sup = await AppSup.start_link((log, "one_for_all"), name="app_sup")
    before = await pids("app_sup")
    pyotp.exit(before["a"], "kill")
    after = await pids("app_sup")
    a2 = await AsyncInitSup.start_link(log)
    ids = [c[0] for c in await Supervisor.which_children(a2)]
    assert before["b"] != after["b"]              # one_for_all came from init
    assert ids == [Rec]


@pytest.mark.pyotp
async def test_module_based_supervisor_as_a_child_and_nested_shutdown():
    log = []

    top = await Supervisor.start_link([(AppSup, (log, "one_for_one")), w("z", log, TrapRec)],
                                      strategy="one_for_one")
    [(cid, mid, kind, mods), _z] = await Supervisor.which_children(top)
    inner = await pids(mid)
    await Supervisor.stop(top)
    inner = sorted(inner)
    nprocs = len(pyotp.processes())
    assert (cid, kind, mods) == (AppSup, "supervisor", [AppSup])
    assert inner == ["a", "b"] and nprocs == 1
    assert log[-1] == ("stop", "z", "shutdown")       # the Rec children do not trap exits


@pytest.mark.pyotp
async def test_module_init_ignore_bad_return_bad_spec_bad_flags():
    pyotp.process_flag("trap_exit", True)
    out = [await IgnoreSup.start_link(None)]
    for cls in (BadReturnSup, BadSpecSup, BadFlagsSup):
        with pytest.raises(StartError) as e:
            await cls.start_link(None)
        out.append(e.value.reason)
    ignored, bad_return, bad_spec, bad_flags = out
    assert ignored is None
    assert bad_return == ("bad_return", (BadReturnSup, "init", ("ok", "not flags and children")))
    assert bad_spec[0] == "start_spec" and "restart" in str(bad_spec[1]) and "sometimes" in str(bad_spec[1])
    assert bad_flags[0] == "supervisor_data" and "one_for_none" in str(bad_flags[1])


@pytest.mark.pyotp
async def test_module_without_init_or_with_options_is_a_type_error():
    with pytest.raises(TypeError, match="must define init"):
        await NoInitSup.start_link(None)
    with pytest.raises(TypeError, match="unexpected strategy"):
        await AppSup.start_link(None, strategy="one_for_one")
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'strategy'"):
        await Supervisor.start_link([])


# ---------------------------------------------------------------------------------------
# Child specs


class Custom(GenServer):
    @classmethod
    def child_spec(cls, arg):
        return default_child_spec(cls, arg, restart="transient", shutdown=1, id=("custom", arg))


def test_shorthands_and_default_child_spec():
    assert normalize_child(Rec) == {"id": Rec, "start": (Rec.start_link, (None,)), "restart": "permanent",
                                    "shutdown": 5, "type": "worker", "modules": [Rec], "significant": False}
    assert normalize_child((Rec, 3))["start"] == (Rec.start_link, (3,))
    assert normalize_child((Custom, 1))["id"] == ("custom", 1)
    assert normalize_child((Custom, 1))["restart"] == "transient"
    assert child_spec((Rec, 3), id="r3")["id"] == "r3"
    assert Supervisor.child_spec(Rec, restart="temporary")["restart"] == "temporary"
    assert AppSup.child_spec(1) == {"id": AppSup, "start": (AppSup.start_link, (1,)), "type": "supervisor"}
    sup_spec = normalize_child({"id": "s", "start": (AppSup.start_link, (1,)), "type": "supervisor"})
    assert sup_spec["shutdown"] == "infinity"


@pytest.mark.parametrize("spec,needle", [
    ({"id": "a", "start": (Rec.start_link, ()), "colour": "red"}, "unknown key 'colour'"),
    ({"start": (Rec.start_link, ())}, "has no 'id'"),
    ({"id": "a"}, "has no 'start'"),
    ({"id": "a", "start": Rec.start_link}, "invalid 'start'"),
    ({"id": "a", "start": ("not callable", ())}, "invalid 'start'"),
    ({"id": "a", "start": (Rec.start_link, ()), "restart": "sometimes"}, "invalid 'restart' 'sometimes'"),
    ({"id": "a", "start": (Rec.start_link, ()), "shutdown": -1}, "invalid 'shutdown' -1"),
    ({"id": "a", "start": (Rec.start_link, ()), "shutdown": "later"}, "invalid 'shutdown' 'later'"),
    ({"id": "a", "start": (Rec.start_link, ()), "type": "manager"}, "invalid 'type' 'manager'"),
    ({"id": ["unhashable"], "start": (Rec.start_link, ())}, "must be hashable"),
    ({"id": "a", "start": (Rec.start_link, ()), "significant": True}, "significant"),
    ("a string", "supervisors expect each child"),
    (object, "has no start_link"),
])
@pytest.mark.pyotp
async def test_invalid_specs_name_the_problem(spec, needle):
    with pytest.raises(ChildSpecError) as e:
        await Supervisor.start_link([spec], strategy="one_for_one")
    assert needle in str(e.value)


@pytest.mark.pyotp
async def test_duplicate_ids_and_bad_options():
    out = []
    for children, opts in (([Rec, Rec], {"strategy": "one_for_one"}),
                           ([], {"strategy": "simple_one_for_one"}),
                           ([], {"strategy": "one_for_one", "max_restarts": -1}),
                           ([], {"strategy": "one_for_one", "max_seconds": 0}),
                           ([], {"strategy": "one_for_one", "auto_shutdown": "sometimes"})):
        with pytest.raises(ChildSpecError) as e:
            await Supervisor.start_link(children, **opts)
        out.append(str(e.value))
    with pytest.raises(ChildSpecError, match="unknown key 'bogus'"):
        Supervisor.child_spec(Rec, bogus=1)
    sup = await Supervisor.start_link([], strategy="one_for_one")
    with pytest.raises(ChildSpecError, match="invalid 'restart'"):
        await Supervisor.start_child(sup, {"id": "x", "start": (Rec.start_link, ()), "restart": "no"})
    dup, strat, mr, ms, auto = out
    assert "duplicate child id" in dup
    assert "simple_one_for_one" in strat and "DynamicSupervisor" in strat
    assert "max_restarts -1" in mr and "max_seconds 0" in ms and "auto_shutdown 'sometimes'" in auto


@pytest.mark.pyotp
async def test_start_with_kwargs():
    sup = await Supervisor.start_link([{"id": "n", "start": (Rec.start_link, (("n", []),), {"name": "named_rec"})}],
                                      strategy="one_for_one")
    assert ((await pids(sup))["n"] == pyotp.whereis("named_rec"), await GenServer.call("named_rec", "name")) == (True, "n")


# ---------------------------------------------------------------------------------------
# auto_shutdown, stray messages, reports


@pytest.mark.parametrize("mode,stops_after", [("any_significant", 1), ("all_significant", 2)])
@pytest.mark.pyotp
async def test_auto_shutdown_with_significant_children(mode, stops_after):
    pyotp.process_flag("trap_exit", True)      # the supervisor's "shutdown" exit would end us
    sup = await Supervisor.start_link(
        [w("s1", [], restart="transient", significant=True), w("s2", [], restart="temporary", significant=True),
         w("p", [])], strategy="one_for_one", auto_shutdown=mode)
    ref = pyotp.monitor(sup)
    children = await pids(sup)
    await stop_and_wait(children["s1"], "normal")
    alive_after_one = None
    if mode == "all_significant":
        await Supervisor.count_children(sup)      # s1's exit has been handled
        alive_after_one = pyotp.is_alive(sup)
        await stop_and_wait(children["s2"], "normal")
    down = await down_of(ref)
    reason = down[4]
    nprocs = len(pyotp.processes())
    assert reason == "shutdown" and nprocs == 1
    if stops_after == 2:
        assert alive_after_one is True


@pytest.mark.pyotp
async def test_stray_exit_is_ignored_and_unexpected_message_is_reported(caplog):
    caplog.set_level(logging.ERROR, logger="pyotp")

    sup = await Supervisor.start_link([(Rec, ("a", []))], strategy="one_for_one")
    stranger, ref = pyotp.spawn_monitor(pyotp.sleep, 0)
    await down_of(ref)
    pyotp.send(sup, ("EXIT", stranger, "whatever"))    # not a child (nor the parent)
    pyotp.send(sup, "hello?")
    pyotp.send(sup, ("EXIT", ["unhashable"], "x"))
    assert ((await Supervisor.count_children(sup))["active"], pyotp.is_alive(sup)) == (1, True)
    assert any("unexpected message: 'hello?'" in r.getMessage() for r in caplog.records)


def test_reports_progress_and_child_terminated(caplog):
    caplog.set_level(logging.INFO, logger="pyotp")

    async def main():
        sup = await Supervisor.start_link([(Rec, ("a", []))], strategy="one_for_one", name="reporting_sup")
        pid = (await Supervisor.which_children(sup))[0][1]
        await stop_and_wait(pid, "bad_thing")
        await Supervisor.count_children(sup)
        return pid

    pid = pyotp.run(main)
    reports = [r for r in caplog.records if hasattr(r, "pyotp_report")]
    contexts = [(r.levelno, r.pyotp_report["context"]) for r in reports]
    assert contexts == [(logging.INFO, "progress"), (logging.ERROR, "child_terminated"), (logging.INFO, "progress")]
    term = reports[1]
    assert term.pyotp_report["reason"] == "bad_thing" and term.pyotp_report["id"] == Rec
    assert term.pyotp_report["pid"] == pid
    assert "reporting_sup" in term.getMessage() and "bad_thing" in term.getMessage()
