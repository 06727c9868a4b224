"""Task and TaskSupervisor: async_/await_/yield_, failures through links and monitors,
shutdown, await_many/yield_many, owner checks, supervised tasks."""
import logging

import pytest

import pyotp
from pyotp import BadArg, Exit, GenServer, StartError
from pyotp.supervisor import Supervisor
from pyotp.task import Task, TaskSupervisor

pytestmark = pytest.mark.pyotp


def double(x):
    return x * 2


async def slow_double(x):
    await pyotp.sleep(0.01)
    return x * 2


async def forever():
    await pyotp.receive(lambda m: m == "never sent")


def boom():
    raise ValueError("boom")


async def down_of(ref):
    return await pyotp.receive(lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == ref)


async def test_async_await_with_plain_and_async_functions():
    t1 = Task.async_(double, 21)
    t2 = Task.async_(slow_double, 5)
    r = (await Task.await_(t1), await Task.await_(t2, None))
    info = pyotp.process_info(pyotp.self())
    owner_ok = t1.owner == pyotp.self()
    qlen = info["message_queue_len"]
    monitors = info["monitors"]
    assert r == (42, 10) and owner_ok
    assert qlen == 0 and monitors == []          # reply taken, monitor gone, DOWN flushed


async def test_reply_message_is_ref_result_like_elixir():
    t = Task.async_(double, 4)
    msg = await pyotp.receive(lambda m: type(m) is tuple and len(m) == 2 and m[0] == t.ref)
    pyotp.demonitor(t.ref, flush=True)
    assert msg == (t.ref, 8)


async def test_await_timeout_exits_and_the_task_keeps_running():
    t = Task.async_(forever)
    with pytest.raises(Exit) as e:
        await Task.await_(t, 0.01)
    alive = pyotp.is_alive(t.pid)
    pyotp.unlink(t.pid)
    pyotp.exit(t.pid, "kill")
    (tag, (mod, fn, args)), alive, t = e.value.reason, alive, t
    assert (tag, mod, fn) == ("timeout", "Task", "await") and args[1] == 0.01
    assert alive is True


async def test_crashing_task_takes_a_non_trapping_owner_down():
    async def owner():
        t = Task.async_(boom)
        await Task.await_(t)
        return "unreachable"

    pid, ref = pyotp.spawn_monitor(owner)
    reason = (await down_of(ref))[4]
    assert isinstance(reason, ValueError) and str(reason) == "boom"


async def test_trapping_owner_gets_an_exit_from_await():
    pyotp.process_flag("trap_exit", True)
    t = Task.async_(boom)
    with pytest.raises(Exit) as e:
        await Task.await_(t)
    exit_msg = await pyotp.receive(lambda m: m[0] == "EXIT")
    (reason, mfa), exit_msg = e.value.reason, exit_msg
    assert isinstance(reason, ValueError) and mfa[:2] == ("Task", "await")
    assert exit_msg[2] is reason


async def test_yield_none_then_ok_and_exit():
    pyotp.process_flag("trap_exit", True)
    gate = []

    async def waits():
        await pyotp.receive(lambda m: m == "go")
        return "done"

    t = Task.async_(waits)
    first = await Task.yield_(t, 0)
    pyotp.send(t.pid, "go")
    second = await Task.yield_(t, None)
    crashed = await Task.yield_(Task.async_(boom), 1.0)
    assert first is None and second == ("ok", "done")
    assert crashed[0] == "exit" and isinstance(crashed[1], ValueError)


async def test_await_many_and_its_failures():
    out = [await Task.await_many([Task.async_(slow_double, i) for i in range(5)])]
    pyotp.process_flag("trap_exit", True)
    with pytest.raises(Exit) as e:
        await Task.await_many([Task.async_(double, 1), Task.async_(boom)])
    out.append(type(e.value.reason[0]).__name__)
    with pytest.raises(Exit) as e:
        await Task.await_many([Task.async_(double, 1), Task.async_(forever)], 0.01)
    out.append(e.value.reason[0])
    assert out == [[0, 2, 4, 6, 8], "ValueError", "timeout"]


async def test_yield_many_with_on_timeout():
    pyotp.process_flag("trap_exit", True)
    tasks = [Task.async_(double, 1), Task.async_(forever), Task.async_(boom)]
    res = await Task.yield_many(tasks, 0.02, on_timeout="kill_task")
    results = [r if r is None or r[0] == "ok" else ("exit", type(r[1]).__name__) for _, r in res]
    same_order = [t for t, _ in res] == tasks
    alive = pyotp.is_alive(tasks[1].pid)
    assert results == [("ok", 2), None, ("exit", "ValueError")]
    assert same_order and alive is False


async def test_shutdown_cases():
    pyotp.process_flag("trap_exit", True)
    running = Task.async_(forever)
    r_running = await Task.shutdown(running)
    finished = Task.async_(double, 3)
    ref = pyotp.monitor(finished.pid)          # let it finish without collecting its reply
    await down_of(ref)
    r_finished = await Task.shutdown(finished)
    crashed = Task.async_(boom)
    ref = pyotp.monitor(crashed.pid)
    await down_of(ref)
    r_crashed = await Task.shutdown(crashed, "brutal_kill")
    brutal = Task.async_(forever)
    r_brutal = await Task.shutdown(brutal, "brutal_kill")
    assert r_running is None
    assert not pyotp.is_alive(running.pid)
    assert r_finished == ("ok", 6)
    assert r_crashed[0] == "exit"
    assert type(r_crashed[1]).__name__ == "ValueError"
    assert r_brutal is None
    assert not pyotp.is_alive(brutal.pid)


async def test_shutdown_kills_a_task_that_ignores_shutdown():
    async def stubborn():
        pyotp.process_flag("trap_exit", True)
        await pyotp.receive(lambda m: m == "never sent")

    t = Task.async_(stubborn)
    await pyotp.sleep(0)                      # let it set trap_exit
    r = await Task.shutdown(t, 0.01)
    assert r == ("exit", "killed")
    assert not pyotp.is_alive(t.pid)


async def test_only_the_owner_may_await():
    t = Task.async_(double, 1)

    me = pyotp.self()

    async def other():
        try:
            await Task.await_(t)
        except BadArg as e:
            pyotp.send(me, ("refused", str(e)))

    pyotp.spawn(other)
    _, message = await pyotp.receive(lambda m: m[0] == "refused")
    value = await Task.await_(t)
    assert "must be queried from its owner" in message and value == 2


async def test_completed_start_start_link_and_ignore():
    out = [await Task.await_(Task.completed("ready"))]
    me = pyotp.self()
    Task.start(pyotp.send, me, "from start")
    out.append(await pyotp.receive())
    Task.start_link(pyotp.send, me, "from start_link")
    out.append(await pyotp.receive())
    linked, unlinked = Task.start_link(forever), Task.start(forever)
    links = pyotp.process_info(me)["links"]
    out.append((linked in links, unlinked in links))
    pyotp.unlink(linked)
    pyotp.exit(linked, "kill")
    pyotp.exit(unlinked, "kill")
    t = Task.async_(forever)
    out.append(await Task.ignore(t))
    out.append(t.pid in pyotp.process_info(me)["links"])
    pyotp.exit(t.pid, "kill")
    assert out == ["ready", "from start", "from start_link", (True, False), None, False]


async def test_task_as_a_supervisor_child():
    me = pyotp.self()
    sup = await Supervisor.start_link([(Task, (pyotp.send, me, "ran")), Task.child_spec(forever, id="f")],
                                      strategy="one_for_one")
    msg = await pyotp.receive()
    children = await Supervisor.which_children(sup)
    spec = await Supervisor.get_childspec(sup, "f")
    assert msg == "ran"
    assert [c[0] for c in children] == ["f"]
    assert spec["restart"] == "temporary"


async def test_bad_arguments():
    out = []
    for call in (lambda: Task.async_(42), lambda: Task.start(None), lambda: Task.child_spec(3)):
        with pytest.raises(TypeError):
            call()
        out.append(True)
    with pytest.raises(BadArg, match="timeout"):
        await Task.await_(Task.async_(double, 1), -1)
    assert out == [True, True, True]


# ---------------------------------------------------------------------------------------
# TaskSupervisor


async def test_task_supervisor_async_and_nolink():
    sup = await TaskSupervisor.start_link(name="tasks")
    t = await TaskSupervisor.async_("tasks", slow_double, 4)
    linked = t.pid in pyotp.process_info(pyotp.self())["links"]
    r1 = await Task.await_(t)
    n = await TaskSupervisor.async_nolink(sup, boom)
    r2 = await Task.yield_(n, 1.0)
    children = await TaskSupervisor.children(sup)
    assert r1 == 8
    assert linked
    assert r2[0] == "exit"
    assert type(r2[1]).__name__ == "ValueError"
    assert children == []
    assert pyotp.is_alive(sup)


async def test_task_supervisor_async_crash_reaches_a_linked_owner():
    sup = await TaskSupervisor.start_link()

    async def owner():
        await Task.await_(await TaskSupervisor.async_(sup, boom))

    pid, ref = pyotp.spawn_monitor(owner)
    assert type((await down_of(ref))[4]).__name__ == "ValueError"
    assert pyotp.is_alive(sup)


async def test_task_supervisor_start_child_children_and_transient_restart():
    runs = []

    async def flaky(me):
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        pyotp.send(me, ("ran", len(runs)))

    sup = await TaskSupervisor.start_link()
    me = pyotp.self()
    await TaskSupervisor.start_child(sup, flaky, me, restart="transient")
    msg = await pyotp.receive()
    waiting = await TaskSupervisor.start_child(sup, forever)
    kids = await TaskSupervisor.children(sup)
    r = await TaskSupervisor.terminate_child(sup, waiting)
    assert msg == ("ran", 2)
    assert kids == [waiting]
    assert r == "ok"
    assert await TaskSupervisor.children(sup) == []


async def test_task_supervisor_max_children_and_as_a_child():
    top = await Supervisor.start_link([(TaskSupervisor, {"name": "ts", "max_children": 1})],
                                      strategy="one_for_one")
    [(cid, _pid, kind, _m)] = await Supervisor.which_children(top)
    t = await TaskSupervisor.async_nolink("ts", forever)
    with pytest.raises(StartError) as e:
        await TaskSupervisor.async_nolink("ts", double, 1)
    await Task.shutdown(t)
    t2 = await TaskSupervisor.async_nolink("ts", double, 2)
    assert cid == "ts"
    assert kind == "supervisor"
    assert e.value.reason == "max_children"
    assert await Task.await_(t2) == 4


class Fetcher(GenServer):
    """The Elixir pattern: run risky work with async_nolink from a GenServer and handle
    the ({ref, result}) and DOWN messages in handle_info."""

    def init(self, sup):
        return ("ok", {"sup": sup, "pending": {}, "results": []})

    async def handle_call(self, req, from_, st):
        if req[0] == "run":
            t = await TaskSupervisor.async_nolink(st["sup"], req[1], *req[2:])
            st["pending"][t.ref] = t
            return ("reply", "ok", st)
        return ("reply", list(st["results"]), st)

    def handle_info(self, msg, st):
        if len(msg) == 2 and msg[0] in st["pending"]:
            pyotp.demonitor(msg[0], flush=True)
            del st["pending"][msg[0]]
            st["results"].append(("ok", msg[1]))
        elif msg[0] == "DOWN" and msg[1] in st["pending"]:
            del st["pending"][msg[1]]
            st["results"].append(("failed", type(msg[4]).__name__))
        return ("noreply", st)


async def test_async_nolink_from_a_gen_server(caplog):
    caplog.set_level(logging.CRITICAL, logger="pyotp")

    sup = await TaskSupervisor.start_link()
    f = await Fetcher.start_link(sup)
    await GenServer.call(f, ("run", double, 5))
    await GenServer.call(f, ("run", boom))
    # wait for both tasks to end, then ask
    for pid in await TaskSupervisor.children(sup):
        await down_of(pyotp.monitor(pid))
    assert sorted(await GenServer.call(f, ("results",))) == [("failed", "ValueError"), ("ok", 10)]
    assert pyotp.is_alive(f)
