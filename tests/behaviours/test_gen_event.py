"""EventManager (gen_event): handlers, notify/sync_notify/call, removal, swapping,
supervised handlers, crashes isolated to one handler."""
import logging

import pytest

import pyotp
from pyotp import Exit
from pyotp.gen_event import EventHandler, EventManager

pytestmark = pytest.mark.pyotp


class Collect(EventHandler):
    """Collects events; reports terminate to the pid in args (if any)."""

    def init(self, args):
        return ("ok", {"seen": [], "report": args})

    def handle_event(self, event, st):
        if event == "crash_collect":
            raise ValueError("collect crashed")
        if event == "leave_collect":
            return "remove_handler"
        if event == "bad_collect":
            return ("weird", 1)
        st["seen"].append(event)
        return ("ok", st)

    def handle_call(self, req, st):
        if req == "get":
            return ("ok", list(st["seen"]), st)
        if req == "get_hib":
            return ("ok", list(st["seen"]), st, "hibernate")
        if req == "leave":
            return ("remove_handler", "left")
        if req == "crash":
            raise KeyError("call crashed")
        if req == "bad":
            return "nonsense"
        return ("ok", ("unknown", req), st)

    def handle_info(self, msg, st):
        st["seen"].append(("info", msg))
        return ("ok", st)

    def terminate(self, arg, st):
        if st["report"] is not None:
            pyotp.send(st["report"], ("terminated", type(self).__name__, arg))
        return ("final", list(st["seen"]))


class Count(EventHandler):
    def init(self, n):
        return ("ok", n)

    def handle_event(self, event, n):
        return ("ok", n + 1, "hibernate")

    def handle_call(self, req, n):
        return ("ok", n, n)


class Order(EventHandler):
    """Appends (its id, event) to a shared list: shows the order handlers run in."""

    def init(self, args):
        return ("ok", args)             # (tag, shared log)

    def handle_event(self, event, st):
        st[1].append((st[0], event))
        return ("ok", st)


async def test_notify_sync_notify_call_and_which_handlers():
    mgr = await EventManager.start_link(name="events")
    assert await EventManager.which_handlers(mgr) == []
    assert await EventManager.add_handler(mgr, Collect, None) == "ok"
    assert await EventManager.add_handler("events", Count, 10) == "ok"
    for i in range(5):
        assert EventManager.notify("events", i) == "ok"
    assert await EventManager.sync_notify(mgr, "last") == "ok"
    handlers = await EventManager.which_handlers(mgr)
    seen = await EventManager.call(mgr, Collect, "get")
    n = await EventManager.call(mgr, Count, "n")
    seen2 = await EventManager.call(mgr, Collect, "get_hib")
    assert handlers == [Count, Collect]                  # newest first, as OTP
    assert seen == [0, 1, 2, 3, 4, "last"] == seen2
    assert n == 16


async def test_newest_handler_sees_each_event_first():
    log = []
    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, (Order, "a"), ("a", log))
    await EventManager.add_handler(mgr, (Order, "b"), ("b", log))
    EventManager.notify(mgr, "e1")
    await EventManager.sync_notify(mgr, "e2")
    handlers = await EventManager.which_handlers(mgr)
    assert log == [("b", "e1"), ("a", "e1"), ("b", "e2"), ("a", "e2")]
    assert handlers == [(Order, "b"), (Order, "a")]


async def test_handler_ids_allow_several_instances_and_delete_returns_terminate_result():
    me = pyotp.self()
    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, (Collect, 1), me)
    await EventManager.add_handler(mgr, (Collect, 2), me)
    await EventManager.sync_notify(mgr, "x")
    r1 = await EventManager.delete_handler(mgr, (Collect, 1), "bye")
    term = await pyotp.receive()
    missing = await EventManager.delete_handler(mgr, (Collect, 1), "again")
    missing_plain = await EventManager.delete_handler(mgr, Collect, "plain")
    await EventManager.sync_notify(mgr, "y")
    got2 = await EventManager.call(mgr, (Collect, 2), "get")
    gone = await EventManager.call(mgr, (Collect, 1), "get")
    handlers = await EventManager.which_handlers(mgr)
    assert r1 == ("final", ["x"])
    assert term == ("terminated", "Collect", "bye")
    assert missing == ("error", "module_not_found") == missing_plain
    assert got2 == ["x", "y"]
    assert gone == ("error", "bad_module")
    assert handlers == [(Collect, 2)]


async def test_remove_handler_return_removes_only_that_handler():
    me = pyotp.self()
    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, Collect, me)
    await EventManager.add_handler(mgr, Count, 0)
    await EventManager.sync_notify(mgr, "a")
    await EventManager.sync_notify(mgr, "leave_collect")
    term = await pyotp.receive()
    await EventManager.sync_notify(mgr, "b")
    handlers = await EventManager.which_handlers(mgr)
    n = await EventManager.call(mgr, Count, 0)
    assert term == ("terminated", "Collect", "remove_handler")
    assert handlers == [Count]
    assert n == 3


async def test_crashing_handler_is_removed_logged_and_others_keep_running(caplog):
    caplog.set_level(logging.ERROR, logger="pyotp")
    me = pyotp.self()
    mgr = await EventManager.start_link(name="crashy")
    await EventManager.add_handler(mgr, Count, 0)
    await EventManager.add_handler(mgr, Collect, me)
    EventManager.notify(mgr, "before")
    EventManager.notify(mgr, "crash_collect")
    EventManager.notify(mgr, "after")
    term = await pyotp.receive()
    handlers = await EventManager.which_handlers(mgr)
    n = await EventManager.call(mgr, Count, "n")
    alive = pyotp.is_alive(mgr)
    tag, name, arg = term
    assert (tag, name) == ("terminated", "Collect")
    assert arg[0] == "error" and arg[1][0] == "EXIT"
    assert isinstance(arg[1][1], ValueError) and str(arg[1][1]) == "collect crashed"
    assert handlers == [Count] and n == 3 and alive
    reports = [r for r in caplog.records if "gen_event handler" in r.getMessage()]
    assert len(reports) == 1
    msg = reports[0].getMessage()
    assert "crash_collect" in msg and "crashy" in msg
    assert reports[0].exc_info is not None


async def test_bad_return_value_removes_handler_with_error_term():
    me = pyotp.self()
    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, Collect, me)
    EventManager.notify(mgr, "bad_collect")
    term = await pyotp.receive()
    handlers = await EventManager.which_handlers(mgr)
    assert term == ("terminated", "Collect", ("error", ("weird", 1)))
    assert handlers == []


async def test_handler_that_exits_gives_exit_reason():
    class Quitter(EventHandler):
        def init(self, report):
            return ("ok", report)

        def handle_event(self, event, report):
            pyotp.exit(("gave_up", event))

        def terminate(self, arg, report):
            pyotp.send(report, arg)

    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, Quitter, pyotp.self())
    EventManager.notify(mgr, 7)
    assert await pyotp.receive() == ("error", ("EXIT", ("gave_up", 7)))


async def test_call_errors_crash_bad_remove_and_missing():
    me = pyotp.self()
    mgr = await EventManager.start_link()
    out = {}
    out["missing"] = await EventManager.call(mgr, Collect, "get")
    await EventManager.add_handler(mgr, Collect, me)
    out["crash"] = await EventManager.call(mgr, Collect, "crash")
    out["term_crash"] = await pyotp.receive()
    await EventManager.add_handler(mgr, Collect, me)
    out["bad"] = await EventManager.call(mgr, Collect, "bad")
    out["term_bad"] = await pyotp.receive()
    await EventManager.add_handler(mgr, Collect, me)
    out["leave"] = await EventManager.call(mgr, Collect, "leave")
    out["term_leave"] = await pyotp.receive()
    out["handlers"] = await EventManager.which_handlers(mgr)
    assert out["missing"] == ("error", "bad_module")
    assert out["crash"][0] == "error" and out["crash"][1][0] == "EXIT"
    assert isinstance(out["crash"][1][1], KeyError)
    assert out["term_crash"][2] == out["crash"]
    assert out["bad"] == ("error", "nonsense")
    assert out["term_bad"] == ("terminated", "Collect", ("error", "nonsense"))
    assert out["leave"] == "left"
    assert out["term_leave"] == ("terminated", "Collect", "remove_handler")
    assert out["handlers"] == []


async def test_add_handler_init_failures_are_returned_and_nothing_installed():
    class Picky(EventHandler):
        def init(self, args):
            if args == "raise":
                raise RuntimeError("init failed")
            if args == "error":
                return ("error", "not_today")
            if args == "weird":
                return 42
            return ("ok", args, "hibernate")

    mgr = await EventManager.start_link()
    r_raise = await EventManager.add_handler(mgr, Picky, "raise")
    r_error = await EventManager.add_handler(mgr, Picky, "error")
    r_weird = await EventManager.add_handler(mgr, Picky, "weird")
    before = await EventManager.which_handlers(mgr)
    r_ok = await EventManager.add_handler(mgr, Picky, "fine")
    after = await EventManager.which_handlers(mgr)
    assert r_raise[0] == "EXIT" and isinstance(r_raise[1], RuntimeError)
    assert r_error == ("error", "not_today")
    assert r_weird == 42
    assert before == [] and r_ok == "ok" and after == [Picky]


class Swapped(EventHandler):
    def init(self, args):
        return ("ok", args)             # (args2, result of the old handler's terminate)

    def handle_call(self, req, st):
        return ("ok", st, st)


async def test_swap_handler_passes_terminate_result_to_new_init():
    me = pyotp.self()
    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, Collect, me)
    await EventManager.sync_notify(mgr, "e")
    r = await EventManager.swap_handler(mgr, (Collect, "swap-args"), (Swapped, "new-args"))
    term = await pyotp.receive()
    st = await EventManager.call(mgr, Swapped, "state")
    # handler1 absent: handler2.init gets (args2, "error") and is still added
    r2 = await EventManager.swap_handler(mgr, ((Collect, 9), None), ((Swapped, 2), "x"))
    st2 = await EventManager.call(mgr, (Swapped, 2), "state")
    handlers = await EventManager.which_handlers(mgr)
    assert r == "ok" and term == ("terminated", "Collect", "swap-args")
    assert st == ("new-args", ("final", ["e"]))
    assert r2 == "ok" and st2 == ("x", "error")
    assert handlers == [(Swapped, 2), Swapped]


async def test_swap_handler_to_failing_init_returns_error():
    class NoInit(EventHandler):
        def init(self, args):
            return ("error", args)

    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, Count, 0)
    r = await EventManager.swap_handler(mgr, (Count, None), (NoInit, "nope"))
    handlers = await EventManager.which_handlers(mgr)
    assert r == ("error", ("error", ("nope", "ok")))   # Count.terminate gives "ok"
    assert handlers == []


async def test_handle_event_can_swap_itself():
    class First(EventHandler):
        def init(self, args):
            return ("ok", 0)

        def handle_event(self, event, n):
            if event == "upgrade":
                return ("swap_handler", "t-args", n, Swapped, "s-args")
            return ("ok", n + 1)

        def terminate(self, arg, n):
            return ("count", n, arg)

    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, Count, 0)
    await EventManager.add_handler(mgr, First, None)
    await EventManager.add_handler(mgr, (Count, "top"), 0)
    EventManager.notify(mgr, "a")
    EventManager.notify(mgr, "upgrade")
    handlers = await EventManager.which_handlers(mgr)
    st = await EventManager.call(mgr, Swapped, "st")
    assert handlers == [(Count, "top"), Swapped, Count]     # keeps its place
    assert st == ("s-args", ("count", 1, "t-args"))


async def test_info_messages_go_to_every_handler():
    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, (Collect, 1), None)
    await EventManager.add_handler(mgr, (Collect, 2), None)
    pyotp.send(mgr, {"some": "info"})
    pyotp.send(mgr, ("notify", "raw"))       # OTP's raw {notify, Event}
    a = await EventManager.call(mgr, (Collect, 1), "get")
    b = await EventManager.call(mgr, (Collect, 2), "get")
    assert a == b == [("info", {"some": "info"}), "raw"]


async def test_stop_terminates_every_handler_with_stop():
    me = pyotp.self()
    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, (Collect, 1), me)
    await EventManager.add_handler(mgr, (Collect, 2), me)
    r = await EventManager.stop(mgr)
    t1 = await pyotp.receive()
    t2 = await pyotp.receive()
    alive = pyotp.is_alive(mgr)
    assert r == "ok" and not alive
    assert t1 == t2 == ("terminated", "Collect", "stop")


async def test_sup_handler_reports_normal_removal_and_errors():
    mgr = await EventManager.start_link()
    assert await EventManager.add_sup_handler(mgr, Collect, None) == "ok"
    await EventManager.delete_handler(mgr, Collect, None)
    m1 = await pyotp.receive()
    await EventManager.add_sup_handler(mgr, Collect, None)
    EventManager.notify(mgr, "crash_collect")
    m2 = await pyotp.receive()
    await EventManager.add_sup_handler(mgr, Collect, None)
    EventManager.notify(mgr, "leave_collect")
    m3 = await pyotp.receive()
    assert m1 == ("gen_event_EXIT", Collect, "normal")
    assert m2[:2] == ("gen_event_EXIT", Collect) and m2[2][0] == "EXIT"
    assert isinstance(m2[2][1], ValueError)
    assert m3 == ("gen_event_EXIT", Collect, "normal")


async def test_sup_handler_gets_shutdown_when_manager_stops_and_survives():
    async def supervisor(parent, mgr):
        await EventManager.add_sup_handler(mgr, Collect, None)
        pyotp.send(parent, "added")
        msg = await pyotp.receive()
        pyotp.send(parent, ("got", msg))
        await pyotp.receive()             # stay alive until told

    mgr = await EventManager.start()
    sup, ref = pyotp.spawn_monitor(supervisor, pyotp.self(), mgr)
    assert await pyotp.receive() == "added"
    await EventManager.stop(mgr, "shutdown")
    got = await pyotp.receive()
    alive = pyotp.is_alive(sup)
    pyotp.send(sup, "done")
    down = await pyotp.receive(lambda m: m[0] == "DOWN")
    reason = down[4]
    assert got == ("got", ("gen_event_EXIT", Collect, "shutdown"))
    assert alive and reason == "normal"


async def test_supervisor_death_removes_its_handlers_and_others_see_exit():
    async def supervisor(parent, mgr):
        await EventManager.add_sup_handler(mgr, (Collect, "sup"), parent)
        pyotp.send(parent, "added")
        await pyotp.receive()
        pyotp.exit("boom")

    me = pyotp.self()
    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, (Collect, "plain"), me)
    sup, ref = pyotp.spawn_monitor(supervisor, me, mgr)
    assert await pyotp.receive() == "added"
    pyotp.send(sup, "die")
    await pyotp.receive(lambda m: m[0] == "DOWN")
    term = await pyotp.receive(lambda m: m[0] == "terminated")
    handlers = await EventManager.which_handlers(mgr)
    seen = await EventManager.call(mgr, (Collect, "plain"), "get")
    assert term == ("terminated", "Collect", ("stop", "boom"))
    assert handlers == [(Collect, "plain")]
    assert seen == [("info", ("EXIT", sup, "boom"))]


async def test_sup_handler_link_is_dropped_after_removal():
    mgr = await EventManager.start()
    await EventManager.add_sup_handler(mgr, Collect, None)
    linked = mgr in pyotp.process_info(pyotp.self())["links"]
    await EventManager.delete_handler(mgr, Collect, None)
    await pyotp.receive()                          # gen_event_EXIT
    unlinked = mgr not in pyotp.process_info(pyotp.self())["links"]
    assert linked
    assert unlinked


async def test_swap_of_supervised_handler_reports_swapped_and_keeps_supervision():
    me = pyotp.self()
    mgr = await EventManager.start_link()
    await EventManager.add_sup_handler(mgr, Collect, None)
    r = await EventManager.swap_handler(mgr, (Collect, 1), (Swapped, 2))
    m1 = await pyotp.receive()
    await EventManager.delete_handler(mgr, Swapped, None)
    m2 = await pyotp.receive()
    # swap_sup_handler: an unsupervised handler becomes supervised by the caller
    await EventManager.add_handler(mgr, Count, 0)
    r3 = await EventManager.swap_sup_handler(mgr, (Count, None), (Swapped, 3))
    await EventManager.delete_handler(mgr, Swapped, None)
    m3 = await pyotp.receive()
    assert r == "ok" and m1 == ("gen_event_EXIT", Collect, ("swapped", Swapped, me))
    assert m2 == ("gen_event_EXIT", Swapped, "normal")
    assert r3 == "ok" and m3 == ("gen_event_EXIT", Swapped, "normal")


async def test_notify_never_fails_and_call_to_dead_manager_raises():
    r1 = EventManager.notify("no_such_manager", "x")
    mgr = await EventManager.start()
    await EventManager.stop(mgr)
    r2 = EventManager.notify(mgr, "x")
    with pytest.raises(Exit) as e1:
        await EventManager.call(mgr, Collect, "get")
    with pytest.raises(Exit) as e2:
        await EventManager.add_handler(mgr, Collect, None)
    reason1 = e1.value.reason
    reason2 = e2.value.reason
    assert r1 == r2 == "ok"
    assert reason1 == ("noproc", ("EventManager", "call", [mgr, Collect, "get", 5.0]))
    assert reason2 == ("noproc", ("EventManager", "add_handler", [mgr, Collect, None, None]))


async def test_call_timeout():
    class Stuck(EventHandler):
        def handle_call(self, req, st):
            return ("ok", "late", st)

    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, Stuck, None)
    with pytest.raises(Exit) as e:
        await EventManager.call(mgr, Stuck, "x", timeout=0)
    assert e.value.reason[0] == "timeout"
    assert e.value.reason[1][:2] == ("EventManager", "call")
    assert await EventManager.call(mgr, Stuck, "y") == "late"


async def test_bad_handlers_raise_clear_errors_in_the_caller():
    class NotAHandler:
        pass

    class AsyncHandler(EventHandler):
        async def handle_event(self, event, state):
            return ("ok", state)

    mgr = await EventManager.start_link()
    errors = []
    for h in (NotAHandler, "Collect", (Collect,), AsyncHandler):
        with pytest.raises(TypeError) as e:
            await EventManager.add_handler(mgr, h, None)
        errors.append(str(e.value))
    with pytest.raises(TypeError):
        await EventManager.swap_handler(mgr, Collect, (Count, 0))
    handlers = await EventManager.which_handlers(mgr)
    assert "not an EventHandler subclass" in errors[0]
    assert "is not an event handler" in errors[1] and "is not an event handler" in errors[2]
    assert "must be plain def" in errors[3]
    assert handlers == []


async def test_handler_that_waits_gets_a_clear_error_and_is_removed():
    class Waits(EventHandler):
        def init(self, report):
            return ("ok", report)

        def handle_event(self, event, report):
            pyotp.GenServer.call("somewhere", "x")   # cannot wait in a handler
            return ("ok", report)

        def terminate(self, arg, report):
            pyotp.send(report, arg)

    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, Waits, pyotp.self())
    EventManager.notify(mgr, "go")
    arg = await pyotp.receive()
    assert arg[0] == "error" and isinstance(arg[1][1], pyotp.CallbackError)


async def test_manager_stops_with_its_parent():
    async def owner(parent):
        mgr = await EventManager.start_link()
        await EventManager.add_handler(mgr, Collect, parent)
        pyotp.send(parent, ("mgr", mgr))
        await pyotp.receive()
        pyotp.exit("owner_quit")

    pid = pyotp.spawn(owner, pyotp.self())
    _, mgr = await pyotp.receive()
    ref = pyotp.monitor(mgr)
    pyotp.send(pid, "quit")
    term = await pyotp.receive(lambda m: m[0] == "terminated")
    down = await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
    assert term == ("terminated", "Collect", "stop")
    assert down[4] == "owner_quit"


async def test_terminate_that_raises_is_caught_and_returned():
    class BadTerm(EventHandler):
        def terminate(self, arg, st):
            raise RuntimeError("terminate failed")

    mgr = await EventManager.start_link()
    await EventManager.add_handler(mgr, BadTerm, None)
    r = await EventManager.delete_handler(mgr, BadTerm, None)
    handlers = await EventManager.which_handlers(mgr)
    alive = pyotp.is_alive(mgr)
    assert r[0] == "EXIT" and isinstance(r[1], RuntimeError)
    assert handlers == [] and alive


async def test_event_manager_under_a_supervisor_is_restarted_empty():
    from pyotp.supervisor import Supervisor

    sup = await Supervisor.start_link([(EventManager, "alarms"), EventManager],
                                      strategy="one_for_one")
    ids = [c[0] for c in await Supervisor.which_children(sup)]
    first = pyotp.whereis("alarms")
    await EventManager.add_handler("alarms", Count, 0)
    ref = pyotp.monitor(first)
    pyotp.exit(first, "kill")
    await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
    await Supervisor.which_children(sup)        # the restart happened before this reply
    second = pyotp.whereis("alarms")
    restarted = second is not None and second != first
    handlers = await EventManager.which_handlers("alarms")
    assert sorted(map(repr, ids)) == sorted(map(repr, ["alarms", EventManager]))
    assert restarted and handlers == []


async def test_malformed_raw_requests_get_an_error_reply_and_the_manager_survives():
    mgr = await EventManager.start_link()
    r1 = await pyotp.GenServer.call(mgr, ("add_handler", "NotAClass", None, None))
    r2 = await pyotp.GenServer.call(mgr, ("delete_handler",))
    r3 = await pyotp.GenServer.call(mgr, "hello")
    handlers = await EventManager.which_handlers(mgr)
    assert r1[0] == "error" and r1[1][:2] == ("bad_request", ("add_handler", "NotAClass", None, None))
    assert "not an event handler" in r1[1][2]
    assert r2[0] == "error" and r2[1][:2] == ("bad_request", ("delete_handler",))
    assert r3 == ("error", ("unknown_request", "hello")) and handlers == []
