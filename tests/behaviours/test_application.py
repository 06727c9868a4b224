"""Application behaviour: start returns, callbacks order, dependencies, restart types,
system stop, the environment API."""
import asyncio
import logging
import sys
from pathlib import Path

import pytest

import pyotp
from pyotp import GenServer, StartError
from pyotp.application import (Application, ApplicationEnvError, ApplicationStartError,
                                resolve_application)
from servers import Refuses

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)      # for examples.my_app


class Top(GenServer):
    """A stand-in top process: replies to "ping", stops on ("stop", reason)."""

    def init(self, arg):
        return ("ok", arg)

    def handle_call(self, req, from_, state):
        if req == "ping":
            return ("reply", "pong", state)
        return ("reply", state, state)

    def handle_cast(self, req, state):
        if req[0] == "stop":
            return ("stop", req[1], state)
        return ("noreply", state)


class Recorder(Application):
    """Reports every callback to the pid in start_args."""
    name = "ta_recorder"
    start_args = None
    result = "pid"

    async def start(self, start_type, args):
        pyotp.send(args, ("start", self.name, start_type))
        top = await Top.start_link(self.name)
        if self.result == "pid":
            return top
        if self.result == "ok2":
            return ("ok", top)
        return ("ok", top, {"state_of": self.name})

    def prep_stop(self, state):
        pyotp.send(type(self).start_args, ("prep_stop", self.name, state))
        return ("prepped", state)

    def stop(self, state):
        pyotp.send(type(self).start_args, ("stop", self.name, state))
        return "ok"


def drain():
    """All messages queued for the calling process (it must be inside a process)."""
    async def go():
        out = []
        while True:
            try:
                out.append(await pyotp.receive(timeout=0))
            except TimeoutError:
                return out
    return go()


@pytest.mark.pyotp
async def test_start_pid_then_stop_runs_prep_stop_then_stop():
    class App(Recorder):
        name = "ta_basic"

    App.start_args = pyotp.self()
    started = await Application.ensure_all_started(App)
    running = Application.started_applications()
    await Application.stop("ta_basic")
    events = await drain()
    after = Application.started_applications()
    assert started == ["ta_basic"]
    assert "ta_basic" in running
    assert events == [("start", "ta_basic", "normal"),
                      ("prep_stop", "ta_basic", None),
                      ("stop", "ta_basic", ("prepped", None))]
    assert "ta_basic" not in after


@pytest.mark.parametrize("form,state", [("pid", None), ("ok2", None),
                                        ("ok3", {"state_of": "ta_forms"})])
@pytest.mark.pyotp
async def test_start_return_forms_and_state_reaches_prep_stop(form, state):
    class App(Recorder):
        name = "ta_forms"
        result = form

    App.start_args = pyotp.self()
    await Application.ensure_all_started(App)
    await Application.stop(App)
    events = await drain()
    assert events[1] == ("prep_stop", "ta_forms", state)
    assert events[2] == ("stop", "ta_forms", ("prepped", state))


@pytest.mark.pyotp
async def test_stopping_the_application_stops_its_top_process():
    class App(Application):
        name = "ta_top_stops"

        async def start(self, start_type, args):
            return await Top.start_link(None, name="ta_top_stops.top")

    await Application.ensure_all_started(App)
    top = pyotp.whereis("ta_top_stops.top")
    ref = pyotp.monitor(top)
    r = await Application.stop("ta_top_stops")
    down = await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
    assert (r, down[4], pyotp.whereis("ta_top_stops.top")) == ("ok", "shutdown", None)


@pytest.mark.pyotp
async def test_plain_def_start_returning_ok_tuple_with_a_linked_pid():
    class App(Application):
        name = "ta_plain"

        def start(self, start_type, args):
            return ("ok", pyotp.spawn(self.body))

        @staticmethod
        async def body():
            await pyotp.receive()

    await Application.ensure_all_started(App)
    running = Application.started_applications()
    await Application.stop("ta_plain")
    assert ("ta_plain" in running, "ta_plain" in Application.started_applications()) == (True, False)


class _Boom(Exception):
    pass


@pytest.mark.parametrize("kind,check", [
    ("error", lambda r: r == "nope"),
    ("bad", lambda r: r == ("bad_return", 42)),
    ("raise", lambda r: r[0] == "exception" and isinstance(r[1], _Boom)),
    ("init_fails", lambda r: r == "no_way"),
    ("dead_pid_return", lambda r: r[0] == "bad_return"),
])
def test_failed_starts_raise_application_start_error(kind, check, caplog):
    class App(Application):
        name = "ta_fail"

        async def start(self, start_type, args):
            if kind == "error":
                return ("error", "nope")
            if kind == "bad":
                return 42
            if kind == "raise":
                raise _Boom("boom")
            if kind == "init_fails":
                return await Refuses.start_link("no_way")
            return ("ok", "not a pid")

    async def main():
        pyotp.process_flag("trap_exit", True)
        try:
            await Application.ensure_all_started(App)
        except ApplicationStartError as e:
            return e, Application.started_applications()
        return None, None

    with caplog.at_level(logging.CRITICAL, logger="pyotp"):
        err, running = pyotp.run(main)
    assert isinstance(err, StartError)
    assert err.app == "ta_fail" and check(err.app_reason), err.app_reason
    assert err.reason == ("ta_fail", err.app_reason)
    assert "ta_fail" in str(err)
    assert "ta_fail" not in running


@pytest.mark.pyotp
async def test_processes_linked_by_a_failed_start_are_shut_down():
    class App(Application):
        name = "ta_fail_cleanup"

        async def start(self, start_type, args):
            await Top.start_link(None, name="ta_fail_cleanup.helper")
            return ("error", "later")

    with pytest.raises(ApplicationStartError):
        await Application.ensure_all_started(App)
    assert pyotp.whereis("ta_fail_cleanup.helper") is None


# ---------------------------------------------------------------------------------------
# Dependencies

def make_chain(prefix, fail=None):
    """c <- b <- a (a depends on b and, by name, on c; b on c)."""
    class C(Recorder):
        name = prefix + "_c"

    class B(Recorder):
        name = prefix + "_b"
        dependencies = [C]

    class A(Recorder):
        name = prefix + "_a"
        dependencies = [B, prefix + "_c"]

        async def start(self, start_type, args):
            if fail:
                pyotp.send(args, ("start", self.name, start_type))
                return ("error", fail)
            return await Recorder.start(self, start_type, args)

    return A, B, C


@pytest.mark.pyotp
async def test_dependencies_start_first_and_stop_all_goes_in_reverse():
    A, B, C = make_chain("ta_dep")

    for cls in (A, B, C):
        cls.start_args = pyotp.self()
    started = await Application.ensure_all_started(A)
    again = await Application.ensure_all_started([A, B])
    running = Application.started_applications()
    stopped = await Application.stop_all()
    events = await drain()
    assert started == ["ta_dep_c", "ta_dep_b", "ta_dep_a"]
    assert again == []
    assert [n for n in running if n.startswith("ta_dep")] == started
    assert [n for n in stopped if n.startswith("ta_dep")] == ["ta_dep_a", "ta_dep_b", "ta_dep_c"]
    starts = [e[1] for e in events if e[0] == "start"]
    stops = [e[1] for e in events if e[0] == "stop"]
    assert starts == started and stops == list(reversed(started))


@pytest.mark.pyotp
async def test_failure_stops_the_applications_this_call_started():
    A, B, C = make_chain("ta_depfail", fail="bad_config")

    for cls in (A, B, C):
        cls.start_args = pyotp.self()
    await Application.ensure_all_started(C)       # already running: stays running
    try:
        await Application.ensure_all_started(A)
    except ApplicationStartError as e:
        err = e
    running = Application.started_applications()
    events = await drain()
    assert (err.app, err.app_reason) == ("ta_depfail_a", "bad_config")
    assert "ta_depfail_b" not in running and "ta_depfail_c" in running
    assert ("stop", "ta_depfail_b", ("prepped", None)) in events
    assert not any(e[0] == "stop" and e[1] == "ta_depfail_c" for e in events)


@pytest.mark.pyotp
async def test_circular_and_unknown_dependencies_are_reported():
    class X(Application):
        name = "ta_cyc_x"
        dependencies = ["ta_cyc_y"]

    class Y(Application):
        name = "ta_cyc_y"
        dependencies = [X]

    class Z(Application):
        name = "ta_unknown_dep"
        dependencies = ["ta_no_such_app"]

    out = []
    for app in (X, Z):
        try:
            await Application.ensure_all_started(app)
        except ApplicationStartError as e:
            out.append((e.app, e.app_reason))
    (cyc, unknown) = out
    assert cyc == ("ta_cyc_x", ("circular_dependencies", ["ta_cyc_x", "ta_cyc_y", "ta_cyc_x"]))
    assert unknown[0] == "ta_unknown_dep"
    assert unknown[1][0] == "bad_application" and "ta_no_such_app" in unknown[1][2]


@pytest.mark.pyotp
async def test_start_api_needs_running_dependencies_and_refuses_a_second_start():
    A, B, C = make_chain("ta_startapi")

    for cls in (A, B, C):
        cls.start_args = pyotp.self()
    out = []
    try:
        await Application.start(B)
    except ApplicationStartError as e:
        out.append(e.app_reason)
    out.append(await Application.start(C))
    out.append(await Application.start("ta_startapi_b", "transient"))
    try:
        await Application.start(C)
    except ApplicationStartError as e:
        out.append(e.app_reason)
    out.append(await Application.ensure_started(C))
    out.append(await Application.stop("ta_startapi_nope"))
    assert out == [("not_started", "ta_startapi_c"), "ok", "ok",
                               ("already_started", "ta_startapi_c"), "ok",
                               ("error", ("not_started", "ta_startapi_nope"))]


@pytest.mark.pyotp
async def test_library_application_has_env_and_no_processes():
    class Lib(Application):
        name = "ta_lib"
        env = {"pool": 5}

    class User(Application):
        name = "ta_lib_user"
        dependencies = [Lib]

        async def start(self, start_type, args):
            return await Top.start_link(Application.get_env("ta_lib", "pool"),
                                        name="ta_lib_user.top")

    before = len(pyotp.processes())
    await Application.ensure_all_started(Lib)
    lib_procs = len(pyotp.processes()) - before
    await Application.ensure_all_started(User)
    pool = await GenServer.call("ta_lib_user.top", "state")
    running = Application.started_applications()
    stopped = await Application.stop_all()
    assert running[-2:] == ["ta_lib", "ta_lib_user"]
    assert pool == 5
    assert lib_procs == 1          # only the master process
    assert stopped[:2] == ["ta_lib_user", "ta_lib"]


@pytest.mark.pyotp
async def test_concurrent_ensure_all_started_starts_once():
    class Slow(Recorder):
        name = "ta_concurrent"

    async def starter(parent):
        r = await Application.ensure_all_started(Slow)
        pyotp.send(parent, ("done", r))

    Slow.start_args = pyotp.self()
    for _ in range(3):
        pyotp.spawn(starter, pyotp.self())
    results = [(await pyotp.receive(lambda m: m[0] == "done"))[1] for _ in range(3)]
    starts = [m for m in await drain() if m[0] == "start"]
    await Application.stop(Slow)
    results = sorted(results)
    assert results == [[], [], ["ta_concurrent"]]
    assert starts == [("start", "ta_concurrent", "normal")]


def test_callable_from_an_asyncio_task_hosting_a_runtime():
    class App(Application):
        name = "ta_runtime"

        async def start(self, start_type, args):
            return await Top.start(None)

    async def amain():
        async with pyotp.Runtime():
            started = await Application.ensure_all_started(App)
            running = Application.started_applications()
            stopped = await Application.stop("ta_runtime")
            return started, "ta_runtime" in running, stopped

    assert asyncio.run(amain()) == (["ta_runtime"], True, "ok")


def test_node_shutdown_stops_running_applications():
    class App(Recorder):
        name = "ta_node_shutdown"

    collected = []

    async def collector():
        while True:
            collected.append(await pyotp.receive())

    async def main():
        App.start_args = pyotp.spawn(collector)
        await Application.ensure_all_started(App)
        return "started"

    assert pyotp.run(main) == "started"
    assert [e[0] for e in collected if e[1] == "ta_node_shutdown"][:1] == ["start"]
    assert "ta_node_shutdown" not in Application.started_applications()


# ---------------------------------------------------------------------------------------
# The top process exiting by itself, per restart type

def exit_case(restart_type, reason):
    class App(Recorder):
        name = "ta_exit_" + restart_type

        async def start(self, start_type, args):
            return await Top.start_link(None, name=self.name + ".top")

    async def main():
        App.start_args = pyotp.self()
        await Application.ensure_all_started(App, type=restart_type)
        GenServer.cast(App.name + ".top", ("stop", reason))
        stopped = await pyotp.receive(lambda m: m[0] == "stop")
        Application.system_stop("probe")
        return stopped, Application.started_applications(), await Application.await_system_stop()

    return App.name, main


@pytest.mark.parametrize("restart_type,reason,system_stop", [
    ("temporary", "crashed", False),
    ("temporary", "normal", False),
    ("transient", "normal", False),
    ("transient", "crashed", True),
    ("permanent", "normal", True),
    ("permanent", "crashed", True),
])
def test_top_process_exit(restart_type, reason, system_stop, caplog):
    name, main = exit_case(restart_type, reason)
    with caplog.at_level(logging.INFO, logger="pyotp"):
        stopped, running, first_stop = pyotp.run(main)
    assert stopped == ("stop", name, ("prepped", None))
    assert name not in running
    if system_stop:
        assert first_stop == ("application_terminated", name, reason)
    else:
        assert first_stop == "probe"
    msgs = [r.getMessage() for r in caplog.records]
    assert any("application %s exited: %r, type: %s" % (name, reason, restart_type) in m
               for m in msgs), msgs


@pytest.mark.pyotp
async def test_await_system_stop_wakes_a_waiting_process():
    async def waiter(parent):
        pyotp.send(parent, ("waiting",))
        pyotp.send(parent, ("woke", await Application.await_system_stop()))

    pyotp.spawn(waiter, pyotp.self())
    await pyotp.receive(lambda m: m == ("waiting",))
    Application.system_stop(("signal", "SIGTERM"))
    assert await pyotp.receive(lambda m: m[0] == "woke") == ("woke", ("signal", "SIGTERM"))


# ---------------------------------------------------------------------------------------
# Names, the hybrid start/stop, validation

def test_default_name_is_snake_case_and_resolution():
    class MyHTTPServerApp(Application):
        pass

    assert MyHTTPServerApp.name == "my_http_server_app"
    assert resolve_application("my_http_server_app") is MyHTTPServerApp
    with pytest.raises(LookupError, match="unknown application 'ta_nope'"):
        resolve_application("ta_nope")
    with pytest.raises(TypeError, match="not an Application subclass"):
        resolve_application(int)
    with pytest.raises(LookupError, match="has no attribute"):
        resolve_application("pyotp.application:Nope")
    assert resolve_application(MyHTTPServerApp) is MyHTTPServerApp
    assert resolve_application("examples.my_app.application:MyApp").name == "my_app"


def test_start_and_stop_are_the_api_on_the_class_and_callbacks_on_instances():
    assert Application.stop.__name__ == "_api_stop"
    assert Application.start.__name__ == "_api_start"
    assert Application().stop("state") == "ok"     # default stop callback
    assert Application().prep_stop(7) == 7
    assert Application().config_change({}, {}, []) == "ok"


def test_bad_declarations_and_arguments():
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        class Bad(Application):
            name = ""
    with pytest.raises(TypeError, match="env must be a mapping"):
        class Bad2(Application):
            env = [("a", 1)]
    with pytest.raises(ValueError, match="restart type must be one of"):
        asyncio.run(Application.ensure_all_started("x", type="forever"))
    with pytest.raises(TypeError, match="application name"):
        Application.get_env(3, "k")


# ---------------------------------------------------------------------------------------
# The environment

def test_env_api():
    app = "ta_env"
    Application.put_env(app, "a", 1)
    Application.put_env(app, "nested", {"x": 1})
    assert Application.get_env(app, "a") == 1
    assert Application.get_env(app, "missing") is None
    assert Application.get_env(app, "missing", "dflt") == "dflt"
    assert Application.fetch_env(app, "a") == ("ok", 1)
    assert Application.fetch_env(app, "missing") == "error"
    assert Application.fetch_env_strict(app, "nested") == {"x": 1}
    assert Application.get_all_env(app) == {"a": 1, "nested": {"x": 1}}
    Application.delete_env(app, "a")
    Application.delete_env(app, "never_there")
    assert Application.fetch_env(app, "a") == "error"
    Application.put_all_env({app: {"b": 2}, "ta_env2": {"c": 3}})
    assert Application.get_all_env(app) == {"nested": {"x": 1}, "b": 2}
    assert Application.get_env("ta_env2", "c") == 3
    copy = Application.get_all_env(app)
    copy["b"] = 99
    assert Application.get_env(app, "b") == 2


def test_fetch_env_strict_names_app_and_key():
    Application.put_env("ta_strict", "present", True)
    with pytest.raises(ApplicationEnvError) as ei:
        Application.fetch_env_strict("ta_strict", "absent")
    assert isinstance(ei.value, KeyError)
    assert (ei.value.app, ei.value.key) == ("ta_strict", "absent")
    assert str(ei.value) == ("could not fetch application environment 'absent' for application "
                             "'ta_strict' because configuration at 'absent' was not set")
    with pytest.raises(KeyError, match="was not loaded nor configured"):
        Application.fetch_env_strict("ta_never_heard_of", "k")


def test_default_env_does_not_override_configured_values():
    class App(Application):
        name = "ta_env_defaults"
        env = {"a": "default", "b": "default"}

    Application.put_env("ta_env_defaults", "a", "configured")
    assert Application.load(App) == "ok"
    assert Application.get_all_env(App) == {"a": "configured", "b": "default"}
    assert "ta_env_defaults" in Application.loaded_applications()
