"""ServiceDiscovery on a single (non-distributed) node."""
from __future__ import annotations

import pytest

import pyotp
from pyotp import GenServer, Supervisor
from pyotp.service_discovery import SERVER, ServiceDiscovery, ServiceDiscoveryError


async def instance(service, endpoint, metadata, report_to):
    """Registers, reports, then obeys ("unregister",) / ("stop", reason)."""
    r = await ServiceDiscovery.register(service, endpoint=endpoint, metadata=metadata)
    pyotp.send(report_to, ("registered", pyotp.self(), r))
    while True:
        m = await pyotp.receive()
        if m == "unregister":
            pyotp.send(report_to, ("unregistered", ServiceDiscovery.unregister(service)))
        elif type(m) is tuple and m[0] == "reregister":
            await ServiceDiscovery.register(service, endpoint=m[1], metadata=m[2])
            pyotp.send(report_to, ("reregistered",))
        elif type(m) is tuple and m[0] == "stop":
            raise pyotp.Exit(m[1])


async def start_instance(service, endpoint, metadata=None):
    me = pyotp.self()
    pid = pyotp.spawn(instance, service, endpoint, metadata, me)
    msg = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "registered" and m[1] == pid, timeout=5)
    assert msg[2] == "ok"
    return pid


@pytest.mark.pyotp
async def test_register_discover_with_metadata_and_defaults():
    await ServiceDiscovery.start_link()
    a = await start_instance("db", ("10.0.0.1", 5432), {"role": "primary"})
    b = await start_instance("db", ("10.0.0.2", 5432))
    c = await start_instance(("cache", "eu"), a)          # an endpoint may be a pid
    found = await ServiceDiscovery.discover("db")
    assert ((found == [(a, ("10.0.0.1", 5432), {"role": "primary"}), (b, ("10.0.0.2", 5432), {})],
            await ServiceDiscovery.discover(("cache", "eu")) == [(c, a, {})],
            await ServiceDiscovery.discover("nothing"),
            sorted(map(repr, ServiceDiscovery.services())))) == (True, True, [], sorted([repr("db"), repr(("cache", "eu"))]))


@pytest.mark.pyotp
async def test_metadata_is_copied_and_own_registration_is_visible_at_once():
    await ServiceDiscovery.start_link()
    meta = {"v": 1}
    r = await ServiceDiscovery.register("svc", endpoint="ep", metadata=meta)
    meta["v"] = 2                      # the caller's dict is not the stored one
    found = await ServiceDiscovery.discover("svc")
    assert r == "ok" and len(found) == 1 and found[0][1:] == ("ep", {"v": 1})


def test_unregister_removes_the_entry_and_notifies_watchers():
    async def main():
        await ServiceDiscovery.start_link()
        assert await ServiceDiscovery.watch("db") == []
        a = await start_instance("db", "ep-a")
        up = await pyotp.receive(timeout=5)
        pyotp.send(a, "unregister")
        r = await pyotp.receive(lambda m: m[0] == "unregistered", timeout=5)
        down = await pyotp.receive(timeout=5)
        again = ServiceDiscovery.unregister("db")      # main never registered it
        return up == ("service_up", "db", a, "ep-a"), r, down == ("service_down", "db", a), \
            await ServiceDiscovery.discover("db"), again, pyotp.is_alive(a)
    assert pyotp.run(main) == (True, ("unregistered", "ok"), True, [], "not_registered", True)


@pytest.mark.pyotp
async def test_owner_death_removes_entry_and_watchers_get_service_down():
    await ServiceDiscovery.start_link()
    a = await start_instance("db", "ep-a")
    b = await start_instance("db", "ep-b")
    now = await ServiceDiscovery.watch("db")
    ref = pyotp.monitor(a)
    pyotp.send(a, ("stop", "boom"))
    down = await pyotp.receive(lambda m: m[0] == "service_down", timeout=5)
    await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref, timeout=5)
    found = await ServiceDiscovery.discover("db")
    pyotp.exit(b, "kill")
    down2 = await pyotp.receive(lambda m: m[0] == "service_down", timeout=5)
    assert ((now == [(a, "ep-a", {}), (b, "ep-b", {})], down == ("service_down", "db", a),
            found == [(b, "ep-b", {})], down2 == ("service_down", "db", b),
            await ServiceDiscovery.discover("db"), ServiceDiscovery.services())) == (True, True, True, True, [], [])


@pytest.mark.pyotp
async def test_reregister_updates_endpoint_and_watchers_see_it():
    await ServiceDiscovery.start_link()
    await ServiceDiscovery.watch("api")
    a = await start_instance("api", ("h", 1))
    up1 = await pyotp.receive(timeout=5)
    pyotp.send(a, ("reregister", ("h", 2), {"gen": 2}))
    up2 = await pyotp.receive(lambda m: m[0] == "service_up", timeout=5)
    await pyotp.receive(lambda m: m == ("reregistered",), timeout=5)
    found = await ServiceDiscovery.discover("api")
    assert up1 == ("service_up", "api", a, ("h", 1))
    assert up2 == ("service_up", "api", a, ("h", 2))
    assert found == [(a, ("h", 2), {"gen": 2})]


@pytest.mark.pyotp
async def test_watch_only_its_service_and_unwatch_stops_notifications():
    await ServiceDiscovery.start_link()
    await ServiceDiscovery.watch("x")
    await start_instance("y", "ep-y")               # not watched: no message
    b = await start_instance("x", "ep-x")
    first = await pyotp.receive(timeout=5)
    assert await ServiceDiscovery.unwatch("x") == "ok"
    pyotp.exit(b, "kill")
    # a call to the server after the kill's EXIT has been handled: nothing was sent to us
    await ServiceDiscovery.watch("z")
    await ServiceDiscovery.discover("x")
    try:
        extra = await pyotp.receive(timeout=0.05)
    except TimeoutError:
        extra = None
    assert (first == ("service_up", "x", b, "ep-x"), extra) == (True, None)


@pytest.mark.pyotp
async def test_watcher_death_is_cleaned_up():
    async def watcher(report_to):
        await ServiceDiscovery.watch("s")
        pyotp.send(report_to, "watching")
        await pyotp.receive(lambda m: m == "never")

    await ServiceDiscovery.start_link()
    w = pyotp.spawn(watcher, pyotp.self())
    await pyotp.receive(lambda m: m == "watching", timeout=5)
    pyotp.exit(w, "kill")
    await start_instance("s", "ep")
    state = await pyotp.sys.get_state(SERVER)
    assert (state["watchers"], state["wmon"]) == ({}, {})


@pytest.mark.pyotp
async def test_bad_input_errors():
    await ServiceDiscovery.start_link()
    errors = []
    for kw in [dict(service=["a"], endpoint="e"), dict(service=None, endpoint="e"),
               dict(service="s", endpoint=None), dict(service="s", endpoint="e", metadata=[1])]:
        service = kw.pop("service")
        try:
            await ServiceDiscovery.register(service, **kw)
            errors.append(None)
        except (TypeError, ValueError) as e:
            errors.append((type(e).__name__, str(e)))
    try:
        await ServiceDiscovery.discover({"a": 1})
    except TypeError as e:
        errors.append(("TypeError", str(e)))
    assert [e[0] for e in errors] == ["TypeError", "ValueError", "ValueError", "TypeError", "TypeError"]
    assert "hashable" in errors[0][1]
    assert "endpoint is required" in errors[2][1]
    assert "metadata must be a dict" in errors[3][1]


@pytest.mark.pyotp
async def test_not_started_is_a_clear_error():
    out = []
    for op in (lambda: ServiceDiscovery.discover("s"), lambda: ServiceDiscovery.register("s", endpoint=1),
               lambda: ServiceDiscovery.watch("s")):
        try:
            await op()
            out.append(None)
        except ServiceDiscoveryError as e:
            out.append("not started" in str(e))
    try:
        ServiceDiscovery.unregister("s")
    except ServiceDiscoveryError:
        out.append(True)
    assert out == [True, True, True, True]


def test_starting_twice_fails():
    async def main():
        pid = await ServiceDiscovery.start_link()
        try:
            await ServiceDiscovery.start_link()
        except pyotp.StartError as e:
            return e.reason == ("already_started", pid)
    assert pyotp.run(main) is True


@pytest.mark.pyotp
async def test_under_a_supervisor_a_crash_restarts_it_and_registrants_are_told():
    async def registrant(report_to):
        pyotp.process_flag("trap_exit", True)
        await ServiceDiscovery.register("s", endpoint="e1")
        pyotp.send(report_to, "registered")
        m = await pyotp.receive(lambda m: m[0] == "EXIT")
        pyotp.send(report_to, ("registrant_got_exit", m[2]))

    sup = await Supervisor.start_link([ServiceDiscovery], strategy="one_for_one")
    first = pyotp.whereis(SERVER)
    pyotp.spawn(registrant, pyotp.self())
    await pyotp.receive(lambda m: m == "registered", timeout=5)
    before = [e[1] for e in await ServiceDiscovery.discover("s")]
    pyotp.exit(first, "kill")
    got = await pyotp.receive(lambda m: m[0] == "registrant_got_exit", timeout=5)
    # the supervisor restarted it: a fresh, empty registry that works
    children = await Supervisor.which_children(sup)
    second = children[0][1]
    after = await ServiceDiscovery.discover("s")
    await ServiceDiscovery.register("s", endpoint="e2")
    again = [e[1] for e in await ServiceDiscovery.discover("s")]
    assert (before, got, second != first and pyotp.whereis(SERVER) == second, after, again) == (["e1"], ("registrant_got_exit", "killed"), True, [], ["e2"])


@pytest.mark.pyotp
async def test_child_spec_and_stop():
    spec = ServiceDiscovery.child_spec()
    pid = await ServiceDiscovery.start()
    await ServiceDiscovery.stop()
    assert (spec["id"], pyotp.is_alive(pid), pyotp.whereis(SERVER)) == ("ServiceDiscovery", False, None)
