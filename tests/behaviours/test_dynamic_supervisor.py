"""DynamicSupervisor: start_child, max_children, extra_arguments, restarts, intensity,
terminate_child, concurrent shutdown, module form, errors."""
import logging

import pytest

import pyotp
from pyotp import GenServer, StartError
from pyotp.child_spec import ChildSpecError, SupervisorError
from pyotp.dynamic_supervisor import DynamicSupervisor
from pyotp.supervisor import Supervisor
from servers import Ignores, Refuses, Worker


class Pair(GenServer):
    """Started with extra arguments: start_link(ctx, arg) -> state (ctx, arg)."""

    @classmethod
    async def start_link2(cls, ctx, arg):
        return await cls.start_link((ctx, arg))

    def init(self, arg):
        return ("ok", arg)

    def handle_call(self, req, from_, st):
        return ("reply", st, st)


class Trapper(GenServer):
    def init(self, log):
        pyotp.process_flag("trap_exit", True)
        return ("ok", log)

    async def terminate(self, reason, log):
        await pyotp.sleep(0.005)
        log.append(reason)


class Stubborn(GenServer):
    def init(self, log):
        pyotp.process_flag("trap_exit", True)
        return ("ok", log)

    async def terminate(self, reason, log):
        log.append("terminating")
        await pyotp.receive(lambda m: m == "never sent")


async def down_of(ref):
    return await pyotp.receive(lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == ref)


async def stop_and_wait(pid, reason):
    ref = pyotp.monitor(pid)
    GenServer.cast(pid, reason)
    return (await down_of(ref))[4]


@pytest.mark.pyotp
async def test_start_children_and_inspect_them():
    sup = await DynamicSupervisor.start_link(name="dyn")
    a = await DynamicSupervisor.start_child("dyn", (Worker, 1))
    b = await DynamicSupervisor.start_child("dyn", {"id": "ignored", "start": (Worker.start_link, (2,)),
                                                    "type": "supervisor"})
    children = await DynamicSupervisor.which_children(sup)
    counts = await DynamicSupervisor.count_children(sup)
    va = await GenServer.call(a, "get")
    vb = await GenServer.call(b, "get")
    assert children == [(None, a, "worker", [Worker]), (None, b, "supervisor", [Worker])]
    assert counts == {"specs": 2, "active": 2, "supervisors": 1, "workers": 1}
    assert (va, vb) == (1, 2)


@pytest.mark.pyotp
async def test_max_children():
    sup = await DynamicSupervisor.start_link(max_children=2)
    await DynamicSupervisor.start_child(sup, (Worker, 1))
    b = await DynamicSupervisor.start_child(sup, (Worker, 2))
    with pytest.raises(StartError) as e:
        await DynamicSupervisor.start_child(sup, (Worker, 3))
    await DynamicSupervisor.terminate_child(sup, b)
    c = await DynamicSupervisor.start_child(sup, (Worker, 4))     # room again
    assert (e.value.reason, pyotp.is_alive(c), (await DynamicSupervisor.count_children(sup))["active"]) == ("max_children", True, 2)


@pytest.mark.pyotp
async def test_extra_arguments_are_prepended():
    sup = await DynamicSupervisor.start_link(extra_arguments=["ctx"])
    pid = await DynamicSupervisor.start_child(sup, {"id": Pair, "start": (Pair.start_link2, ("mine",))})
    # restarts keep the extra arguments too
    pyotp.exit(pid, "kill")
    [(_, pid2, _, _)] = await DynamicSupervisor.which_children(sup)
    assert (await GenServer.call(pid, "get") if pyotp.is_alive(pid) else None, await GenServer.call(pid2, "get")) == (None, ("ctx", "mine"))


@pytest.mark.pyotp
async def test_restart_types():
    sup = await DynamicSupervisor.start_link()
    perm = await DynamicSupervisor.start_child(sup, (Worker, "p"))
    trans = await DynamicSupervisor.start_child(sup, {"id": 1, "start": (Worker.start_link, ("t",)),
                                                      "restart": "transient"})
    trans2 = await DynamicSupervisor.start_child(sup, {"id": 2, "start": (Worker.start_link, ("t2",)),
                                                       "restart": "transient"})
    temp = await DynamicSupervisor.start_child(sup, {"id": 3, "start": (Worker.start_link, ("x",)),
                                                     "restart": "temporary"})
    await stop_and_wait(perm, "normal")            # permanent: restarted anyway
    await stop_and_wait(trans, "normal")           # transient, normal: gone
    await stop_and_wait(trans2, "crash")           # transient, abnormal: restarted
    await stop_and_wait(temp, "crash")             # temporary: gone
    children = await DynamicSupervisor.which_children(sup)
    assert sorted([await GenServer.call(pid, "get") for (_, pid, _, _) in children]) == ["p", "t2"]


@pytest.mark.pyotp
async def test_terminate_child_and_not_found():
    log = []

    sup = await DynamicSupervisor.start_link()
    pid = await DynamicSupervisor.start_child(sup, (Trapper, log))
    r = await DynamicSupervisor.terminate_child(sup, pid)
    with pytest.raises(SupervisorError) as e:
        await DynamicSupervisor.terminate_child(sup, pid)
    assert (r, e.value.reason, pyotp.is_alive(pid), await DynamicSupervisor.which_children(sup), list(log)) == ("ok", "not_found", False, [], ["shutdown"])


@pytest.mark.pyotp
async def test_intensity_shuts_it_down():
    pyotp.process_flag("trap_exit", True)
    sup = await DynamicSupervisor.start_link(max_restarts=1, max_seconds=3600)
    ref = pyotp.monitor(sup)
    others = [await DynamicSupervisor.start_child(sup, (Worker, i)) for i in range(3)]
    pyotp.exit(others[0], "kill")
    [(_, again, _, _)] = [c for c in await DynamicSupervisor.which_children(sup)
                             if c[1] not in others]
    pyotp.exit(again, "kill")
    assert ((await down_of(ref))[4], [pyotp.is_alive(p) for p in others], len(pyotp.processes())) == ("shutdown", [False, False, False], 1)


@pytest.mark.pyotp
async def test_stop_terminates_all_children_concurrently():
    log = []

    sup = await DynamicSupervisor.start_link()
    pids = [await DynamicSupervisor.start_child(sup, (Trapper, log)) for _ in range(20)]
    pids.append(await DynamicSupervisor.start_child(sup, {"id": "k", "start": (Worker.start_link, (0,)),
                                                          "shutdown": "brutal_kill"}))
    await DynamicSupervisor.stop(sup)
    alive = [pyotp.is_alive(p) for p in pids]
    log_ = list(log)
    nprocs = len(pyotp.processes())
    assert not any(alive) and log_ == ["shutdown"] * 20 and nprocs == 1


@pytest.mark.pyotp
async def test_stubborn_child_is_killed_after_its_shutdown_time(caplog):
    caplog.set_level(logging.ERROR, logger="pyotp")
    log = []

    sup = await DynamicSupervisor.start_link()
    s1 = await DynamicSupervisor.start_child(sup, {"id": 1, "start": (Stubborn.start_link, (log,)), "shutdown": 0.01})
    s2 = await DynamicSupervisor.start_child(sup, {"id": 2, "start": (Stubborn.start_link, (log,)), "shutdown": 0.02})
    ok = await DynamicSupervisor.start_child(sup, (Trapper, log))
    await DynamicSupervisor.stop(sup)
    alive = [pyotp.is_alive(p) for p in (s1, s2, ok)]
    log_ = sorted(log)
    stubborn = (s1, s2)
    assert alive == [False, False, False]
    assert log_ == ["shutdown", "terminating", "terminating"]
    errs = [r.pyotp_report for r in caplog.records if getattr(r, "pyotp_report", {}).get("context") == "shutdown_error"]
    assert sorted(e["pid"] for e in errs) == sorted(stubborn)
    assert all(e["reason"] == "killed" for e in errs)


@pytest.mark.pyotp
async def test_child_already_dead_at_shutdown_is_reported_with_its_real_reason(caplog):
    caplog.set_level(logging.ERROR, logger="pyotp")

    class LinkedTo(GenServer):
        def init(self, other):
            pyotp.link(other)               # dies with `other` (does not trap exits)
            return ("ok", other)

    sup = await DynamicSupervisor.start_link()
    a = await DynamicSupervisor.start_child(sup, (Worker, 0))
    b = await DynamicSupervisor.start_child(sup, {"id": 1, "start": (LinkedTo.start_link, (a,))})
    # stopping a (first) kills b through their link before the supervisor gets to b:
    # b's EXIT, already queued, tells the supervisor why it died
    await DynamicSupervisor.stop(sup)
    alive = pyotp.is_alive(b)
    assert alive is False
    errs = [r.pyotp_report for r in caplog.records if getattr(r, "pyotp_report", {}).get("context") == "shutdown_error"]
    assert [(e["pid"], e["reason"]) for e in errs] == [(b, "shutdown")]


@pytest.mark.pyotp
async def test_ignore_failure_and_bad_specs():
    pyotp.process_flag("trap_exit", True)
    sup = await DynamicSupervisor.start_link()
    ign = await DynamicSupervisor.start_child(sup, (Ignores, None))
    with pytest.raises(StartError) as failed:
        await DynamicSupervisor.start_child(sup, (Refuses, "nope"))
    with pytest.raises(ChildSpecError, match="invalid 'shutdown'"):
        await DynamicSupervisor.start_child(sup, {"id": 1, "start": (Worker.start_link, (0,)), "shutdown": "soon"})
    with pytest.raises(ChildSpecError, match="significant"):
        await DynamicSupervisor.start_child(sup, {"id": 1, "start": (Worker.start_link, (0,)),
                                                  "restart": "transient", "significant": True})
    assert (ign, failed.value.reason, await DynamicSupervisor.count_children(sup)) == (None, "nope", {"specs": 0, "active": 0, "supervisors": 0, "workers": 0})


@pytest.mark.parametrize("opts,needle", [
    ({"strategy": "one_for_all"}, "only 'one_for_one'"),
    ({"max_children": -1}, "max_children -1"),
    ({"max_children": "lots"}, "max_children 'lots'"),
    ({"extra_arguments": "x"}, "extra_arguments 'x'"),
    ({"max_restarts": 1.5}, "max_restarts 1.5"),
    ({"max_seconds": -2}, "max_seconds -2"),
])
@pytest.mark.pyotp
async def test_bad_options(opts, needle):
    with pytest.raises(ChildSpecError) as e:
        await DynamicSupervisor.start_link(**opts)
    assert needle in str(e.value)


class Rooms(DynamicSupervisor):
    def init(self, ctx):
        return DynamicSupervisor.init(max_children=5, extra_arguments=[ctx])


class BadRooms(DynamicSupervisor):
    def init(self, _):
        return DynamicSupervisor.init(max_children="many")


@pytest.mark.pyotp
async def test_module_form_and_as_a_child():
    pyotp.process_flag("trap_exit", True)
    top = await Supervisor.start_link([(Rooms, "hotel"),
                                       (DynamicSupervisor, {"name": "loose", "max_children": 1})],
                                      strategy="one_for_one")
    [(rid, rooms, rtype, rmods), (lid, loose, _, _)] = await Supervisor.which_children(top)
    room = await DynamicSupervisor.start_child(rooms, {"id": "r", "start": (Pair.start_link2, ("101",))})
    with pytest.raises(StartError) as bad:
        await BadRooms.start_link(None)
    ids = (rid, rtype, rmods, lid, loose == pyotp.whereis("loose"))
    state = await GenServer.call(room, "get")
    bad = bad.value.reason[0]
    assert ids == (Rooms, "supervisor", [Rooms], "loose", True)
    assert state == ("hotel", "101")
    assert bad == "supervisor_data"


@pytest.mark.pyotp
async def test_failed_restart_shows_restarting_then_recovers():
    starts = []

    async def flaky(arg):
        starts.append(arg)
        if len(starts) == 2:
            raise StartError("not_yet")
        return await Worker.start_link(arg)

    sup = await DynamicSupervisor.start_link()
    pid = await DynamicSupervisor.start_child(sup, {"id": 0, "start": (flaky, ("f",))})
    pyotp.exit(pid, "kill")
    during = await DynamicSupervisor.which_children(sup)
    after = await DynamicSupervisor.which_children(sup)
    counts = await DynamicSupervisor.count_children(sup)
    assert during == [(None, "restarting", "worker", [flaky])]
    assert isinstance(after[0][1], pyotp.Pid) and counts["active"] == 1 and len(starts) == 3


@pytest.mark.pyotp
async def test_many_children():
    sup = await DynamicSupervisor.start_link()
    for i in range(2000):
        await DynamicSupervisor.start_child(sup, (Worker, i))
    counts = await DynamicSupervisor.count_children(sup)
    await DynamicSupervisor.stop(sup)
    assert (counts["active"], len(pyotp.processes())) == (2000, 1)
