"""Registry: unique and duplicate keys, reads in place, cleanup on exit, partitions, and
("via", Registry, (name, key)) names for GenServers. The tests marked pyotp run as the
first process of a fresh node (the pyotp pytest plugin)."""
import pytest

import pyotp
from pyotp import BadArg, CallbackError, Exit, GenServer, StartError
from pyotp.registry import Registry


async def holder(parent, registry, key, value):
    """Registers key, reports the result, then waits to be told to exit."""
    r = Registry.register(registry, key, value)
    pyotp.send(parent, ("registered", pyotp.self(), r))
    msg = await pyotp.receive()
    if msg == "unregister":
        Registry.unregister(registry, key)
        pyotp.send(parent, ("unregistered", pyotp.self()))
        await pyotp.receive()
    pyotp.exit(msg if msg != "unregister" else "normal")


async def start_holder(registry, key, value=None):
    pid, ref = pyotp.spawn_monitor(holder, pyotp.self(), registry, key, value)
    _, _, r = await pyotp.receive(lambda m: m[0] == "registered" and m[1] == pid)
    return pid, ref, r


async def kill_and_wait(pid, ref):
    pyotp.send(pid, "gone")
    await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)


@pytest.mark.pyotp
async def test_unique_register_lookup_keys_values_unregister():
    me = pyotp.self()
    reg = await Registry.start_link(keys="unique", name="U")
    assert pyotp.whereis("U") == reg
    ok, owner = Registry.register("U", "hello", "world")
    assert ok == "ok" and owner in pyotp.process_info(me)["links"]
    assert Registry.register("U", "hello", "later") == ("error", ("already_registered", me))
    other, ref, r = await start_holder("U", "hello", "x")
    assert r == ("error", ("already_registered", me))
    assert Registry.lookup("U", "hello") == [(me, "world")]
    assert Registry.lookup("U", "nope") == []
    Registry.register("U", ("tuple", 1), 2)
    assert sorted(map(repr, Registry.keys("U", me))) == sorted(map(repr, ["hello", ("tuple", 1)]))
    assert Registry.values("U", "hello", me) == ["world"]
    assert Registry.values("U", "hello", other) == []
    assert Registry.count("U") == 2
    assert Registry.unregister("U", "hello") == "ok"
    assert Registry.lookup("U", "hello") == []
    assert Registry.unregister("U", "never") == "ok"
    assert (await start_holder("U", "hello", "x2"))[2][0] == "ok"
    assert Registry.count("U") == 2


@pytest.mark.pyotp
async def test_duplicate_keys_allow_many_and_repeated_registrations():
    me = pyotp.self()
    await Registry.start_link(keys="duplicate", name="D")
    assert Registry.register("D", "topic", 1)[0] == "ok"
    assert Registry.register("D", "topic", 2)[0] == "ok"
    assert Registry.register("D", "other", 3)[0] == "ok"
    p, ref, r = await start_holder("D", "topic", 10)
    assert r[0] == "ok"
    assert sorted(Registry.lookup("D", "topic"), key=lambda e: e[1]) == [(me, 1), (me, 2), (p, 10)]
    assert sorted(Registry.keys("D", me)) == ["other", "topic", "topic"]
    assert sorted(Registry.values("D", "topic", me)) == [1, 2]
    assert Registry.count("D") == 4
    Registry.unregister("D", "topic")          # both of mine, not p's
    assert Registry.lookup("D", "topic") == [(p, 10)]
    assert Registry.keys("D", me) == ["other"]
    assert Registry.count("D") == 2


@pytest.mark.pyotp
async def test_entries_vanish_when_the_owner_exits():
    await Registry.start_link(keys="unique", name="U")
    await Registry.start_link(keys="duplicate", name="D")
    p, ref, _ = await start_holder("U", "k", "v")
    q, qref, _ = await start_holder("D", "t", "v")
    assert Registry.lookup("U", "k") == [(p, "v")]
    await kill_and_wait(p, ref)
    await kill_and_wait(q, qref)
    # reads skip dead owners at once, even before the registry handled the exit
    assert (Registry.lookup("U", "k"), Registry.lookup("D", "t"), Registry.keys("U", p),
            Registry.values("U", "k", p)) == ([], [], [], [])
    # and the key is free again straight away
    assert Registry.register("U", "k", "mine")[0] == "ok"
    await Registry._sync("U")
    await Registry._sync("D")
    lookup = Registry.lookup("U", "k")
    assert len(lookup) == 1 and lookup[0][1] == "mine"
    assert (Registry.count("U"), Registry.count("D")) == (1, 0)


@pytest.mark.pyotp
async def test_stale_entry_replaced_then_late_exit_does_not_remove_new_owner():
    await Registry.start_link(keys="unique", name="U")
    p, ref, _ = await start_holder("U", "k")
    await kill_and_wait(p, ref)
    # the partition has not handled p's EXIT yet; take the key over
    q, qref, r = await start_holder("U", "k", "new")
    await Registry._sync("U")                   # now p's EXIT has been handled
    r = r[0]
    lookup = Registry.lookup("U", "k")
    count = Registry.count("U")
    assert r == "ok" and lookup == [(q, "new")] and count == 1


@pytest.mark.pyotp
async def test_unregistering_last_key_unlinks_the_owner():
    me = pyotp.self()
    await Registry.start_link(keys="duplicate", name="D")
    _, owner = Registry.register("D", "a", None)
    Registry.register("D", "b", None)
    Registry.unregister("D", "a")
    still = owner in pyotp.process_info(me)["links"]
    Registry.unregister("D", "b")
    gone = owner not in pyotp.process_info(me)["links"]
    assert still
    assert gone


@pytest.mark.pyotp
async def test_match_count_match_unregister_match_and_select():
    me = pyotp.self()
    await Registry.start_link(keys="duplicate", name="D")
    Registry.register("D", "news", {"lang": "en", "n": 1})
    Registry.register("D", "news", {"lang": "fr", "n": 2})
    Registry.register("D", "news", {"lang": "en", "n": 3})
    Registry.register("D", "sport", "plain")
    assert sorted(v["n"] for _, v in Registry.match("D", "news", lambda v: v["lang"] == "en")) == [1, 3]
    assert Registry.match("D", "sport", "plain") == [(me, "plain")]
    assert Registry.match("D", "sport", "other") == []
    assert Registry.count_match("D", "news", lambda v: v["n"] > 1) == 2
    assert Registry.count_match("D", "news", {"lang": "fr", "n": 2}) == 1
    Registry.unregister_match("D", "news", lambda v: v["lang"] == "en")
    assert Registry.lookup("D", "news") == [(me, {"lang": "fr", "n": 2})]
    assert sorted(Registry.select("D"), key=repr) == sorted(
        [("news", me, {"lang": "fr", "n": 2}), ("sport", me, "plain")], key=repr)
    assert Registry.select("D", lambda k, pid, v: k == "sport") == [("sport", me, "plain")]


@pytest.mark.pyotp
async def test_dispatch_unique_duplicate_and_empty():
    me = pyotp.self()
    await Registry.start_link(keys="unique", name="U")
    await Registry.start_link(keys="duplicate", name="D")
    calls = []
    Registry.dispatch("U", "k", calls.append)
    Registry.dispatch("D", "k", calls.append)
    empty = list(calls)
    Registry.register("U", "k", 1)
    Registry.register("D", "k", 2)
    Registry.register("D", "k", 3)
    r = Registry.dispatch("U", "k", calls.append)
    Registry.dispatch("D", "k", calls.append)
    # the classic use: send to every subscriber
    Registry.dispatch("D", "k", lambda es: [pyotp.send(p, ("hi", v)) for p, v in es])
    got = [await pyotp.receive(), await pyotp.receive()]
    assert empty == [] and r == "ok"
    assert calls == [[(me, 1)], [(me, 2), (me, 3)]]
    assert got == [("hi", 2), ("hi", 3)]


@pytest.mark.pyotp
async def test_update_value():
    await Registry.start_link(keys="unique", name="U")
    await Registry.start_link(keys="duplicate", name="D")
    Registry.register("U", "n", 1)
    r1 = Registry.update_value("U", "n", lambda v: v + 1)
    r2 = Registry.update_value("U", "missing", lambda v: v + 1)
    p, ref, _ = await start_holder("U", "theirs", 5)
    r3 = Registry.update_value("U", "theirs", lambda v: v + 1)
    with pytest.raises(BadArg):
        Registry.update_value("D", "n", lambda v: v)
    assert r1 == (2, 1)
    assert r2 == "error"
    assert r3 == "error"
    assert Registry.lookup("U", "n")[0][1] == 2
    assert Registry.lookup("U", "theirs")[0][1] == 5


@pytest.mark.pyotp
async def test_meta():
    await Registry.start_link(keys="unique", name="U", meta={"owner": "chat"})
    a = Registry.meta("U", "owner")
    b = Registry.meta("U", "nope")
    Registry.put_meta("U", ("t", 1), 42)
    c = Registry.meta("U", ("t", 1))
    Registry.delete_meta("U", "owner")
    assert a == ("ok", "chat")
    assert b == "error"
    assert c == ("ok", 42)
    assert Registry.meta("U", "owner") == "error"


@pytest.mark.pyotp
async def test_unknown_registry_bad_options_and_name_clash():
    errors = []
    for fn in (lambda: Registry.lookup("Nope", 1), lambda: Registry.count("Nope"),
               lambda: Registry.register("Nope", 1, 2), lambda: Registry.lookup(42, 1)):
        with pytest.raises(BadArg) as e:
            fn()
        errors.append(str(e.value))
    for kwargs in ({"keys": "both", "name": "X"}, {"keys": "unique"},
                   {"keys": "unique", "name": "X", "partitions": 0},
                   {"keys": "unique", "name": ""}):
        with pytest.raises(BadArg):
            await Registry.start_link(**kwargs)
    with pytest.raises(TypeError):
        await Registry.start_link({"keys": "unique", "name": "X", "colour": "red"})
    pid = await Registry.start_link({"keys": "unique", "name": "X"})
    with pytest.raises(StartError) as e:
        await Registry.start_link(keys="duplicate", name="X")
    clash = e.value.reason
    await Registry.stop("X")
    with pytest.raises(BadArg):
        Registry.lookup("X", 1)
    err = errors[0]
    clash = clash == ("already_started", pid)
    alive = pyotp.is_alive(pid)
    assert "unknown registry: 'Nope'" in err and clash and not alive


def test_register_outside_a_process_is_a_clear_error():
    node = pyotp.Runtime.start_thread()
    try:
        async def start():
            return await Registry.start(keys="unique", name="T")
        node.call_in_loop(start)
        with pytest.raises(CallbackError) as e:
            node.call_in_loop(Registry.register, "T", "k", 1)
        assert "inside a pyotp process" in str(e.value)
        assert node.call_in_loop(Registry.lookup, "T", "k") == []
    finally:
        node.stop()


@pytest.mark.pyotp
async def test_server_registering_itself_in_init_plain_def():
    class Worker(GenServer):
        def init(self, key):
            Registry.register("Workers", key, {"started": True})
            return ("ok", key)

        def handle_call(self, req, from_, key):
            return ("reply", key, key)

    await Registry.start_link(keys="unique", name="Workers")
    pids = [await Worker.start(i) for i in range(5)]
    found = [Registry.lookup("Workers", i)[0][0] for i in range(5)]
    await GenServer.stop(pids[2])
    await Registry._sync("Workers")
    assert found == pids
    assert Registry.count("Workers") == 4
    assert Registry.lookup("Workers", 2) == []


@pytest.mark.pyotp
async def test_registry_stopping_abnormally_reaches_registered_processes():
    pyotp.process_flag("trap_exit", True)
    reg = await Registry.start(keys="unique", name="U")
    _, owner = Registry.register("U", "me", None)
    await Registry.stop("U", "shutdown")
    msg = await pyotp.receive(lambda m: m[0] == "EXIT")
    assert msg == ("EXIT", owner, "shutdown")
    assert not pyotp.is_alive(owner)
    assert not pyotp.is_alive(reg)


@pytest.mark.pyotp
async def test_partitions_unique_and_duplicate_cleanup():
    await Registry.start_link(keys="unique", name="PU", partitions=4)
    await Registry.start_link(keys="duplicate", name="PD", partitions=4)
    me = pyotp.self()
    owners = set()
    for i in range(40):
        owners.add(Registry.register("PU", ("k", i), i)[1])
        Registry.register("PD", "topic", i)
    holders = [await start_holder("PU", ("h", i), i) for i in range(20)]
    dholders = [await start_holder("PD", "topic", 100 + i) for i in range(20)]
    calls = []
    Registry.dispatch("PD", "topic", lambda es: calls.append(len(es)))
    before = (Registry.count("PU"), Registry.count("PD"), len(Registry.lookup("PD", "topic")),
              sum(calls), len(Registry.keys("PU", me)))
    for pid, ref, _ in holders[:10] + dholders[:10]:
        await kill_and_wait(pid, ref)
    await Registry._sync("PU")
    await Registry._sync("PD")
    after = (Registry.count("PU"), Registry.count("PD"), len(Registry.lookup("PD", "topic")),
             sorted(v for _, v in Registry.lookup("PD", "topic"))[-10:])
    lookups = all(Registry.lookup("PU", ("k", i)) == [(me, i)] for i in range(40))
    gone = all(Registry.lookup("PU", ("h", i)) == [] for i in range(10))
    assert len(owners) == 1          # one caller: one pid partition owns its bookkeeping
    assert before == (60, 60, 60, 60, 40)
    assert after == (50, 50, 50, list(range(110, 120)))
    assert lookups and gone


@pytest.mark.pyotp
async def test_many_processes_half_die_lookup_is_exact():
    N = 1000

    async def sub(parent):
        Registry.register("D", "all", None)
        pyotp.send(parent, "up")
        await pyotp.receive()

    await Registry.start_link(keys="duplicate", name="D")
    procs = [pyotp.spawn_monitor(sub, pyotp.self()) for _ in range(N)]
    for _ in range(N):
        await pyotp.receive(lambda m: m == "up")
    for pid, ref in procs[::2]:
        pyotp.exit(pid, "kill")
    for pid, ref in procs[::2]:
        await pyotp.receive(lambda m, ref=ref: m[0] == "DOWN" and m[1] == ref)
    live = {pid for pid, _ in procs[1::2]}
    seen = {pid for pid, _ in Registry.lookup("D", "all")}
    await Registry._sync("D")
    assert seen == live
    assert Registry.count("D") == N // 2


# ---------------------------------------------------------------------------------------
# via names

class Room(GenServer):
    def init(self, name):
        if name == "refuse":
            return ("stop", "refused")
        return ("ok", {"name": name, "log": []})

    def handle_call(self, req, from_, st):
        if req == "log":
            return ("reply", list(st["log"]), st)
        return ("reply", (st["name"], req), st)

    def handle_cast(self, req, st):
        st["log"].append(("cast", req))
        return ("noreply", st)

    def handle_info(self, msg, st):
        st["log"].append(("info", msg))
        return ("noreply", st)


def via(key):
    return ("via", Registry, ("Rooms", key))


@pytest.mark.pyotp
async def test_via_start_call_cast_send_and_already_started():
    await Registry.start_link(keys="unique", name="Rooms")
    pid = await Room.start_link("lobby", name=via("lobby"))
    assert Registry.whereis_name(("Rooms", "lobby")) == pid
    assert Registry.lookup("Rooms", "lobby") == [(pid, None)]
    assert GenServer.whereis(via("lobby")) == pid
    assert await GenServer.call(via("lobby"), "hi") == ("lobby", "hi")
    GenServer.cast(via("lobby"), "c1")
    pyotp.send(via("lobby"), "s1")
    Registry.send(("Rooms", "lobby"), "s2")
    assert await GenServer.call(via("lobby"), "log") == [("cast", "c1"), ("info", "s1"), ("info", "s2")]
    with pytest.raises(StartError) as e:
        await Room.start_link("lobby", name=via("lobby"))
    assert e.value.reason == ("already_started", pid)
    with pytest.raises(Exit) as e2:
        await GenServer.call(via("nobody"), "hi")
    assert e2.value.reason[0] == "noproc"
    assert GenServer.cast(via("nobody"), "x") == "ok"
    with pytest.raises(BadArg):
        Registry.send(("Rooms", "nobody"), "x")
    with pytest.raises(BadArg):
        pyotp.send(via("nobody"), "x")


@pytest.mark.pyotp
async def test_via_name_is_freed_on_death_and_reusable():
    await Registry.start_link(keys="unique", name="Rooms")
    pid = await Room.start("lobby", name=via("lobby"))
    ref = pyotp.monitor(pid)
    pyotp.exit(pid, "kill")
    await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
    free_at_once = GenServer.whereis(via("lobby")) is None
    pid2 = await Room.start("lobby", name=via("lobby"))
    answer = await GenServer.call(via("lobby"), "again")
    await GenServer.stop(via("lobby"))
    await Registry._sync("Rooms")
    assert free_at_once
    assert pid2 != pid
    assert answer == ("lobby", "again")
    assert Registry.count("Rooms") == 0


@pytest.mark.pyotp
async def test_via_failed_init_frees_the_name():
    await Registry.start_link(keys="unique", name="Rooms")
    with pytest.raises(StartError) as e:
        await Room.start("refuse", name=via("refuse"))
    await Registry._sync("Rooms")
    assert e.value.reason == "refused"
    assert Registry.lookup("Rooms", "refuse") == []
    assert Registry.count("Rooms") == 0


@pytest.mark.pyotp
async def test_via_with_value_unregister_name_and_duplicate_rejected():
    await Registry.start_link(keys="unique", name="Rooms")
    await Registry.start_link(keys="duplicate", name="Dup")
    pid = await Room.start("x", name=("via", Registry, ("Rooms", "x", {"topic": "py"})))
    value = Registry.lookup("Rooms", "x")
    Registry.unregister_name(("Rooms", "x"))
    after = Registry.whereis_name(("Rooms", "x"))
    alive = pyotp.is_alive(pid)
    with pytest.raises(BadArg):
        Registry.register_name(("Dup", "k"), pid)
    with pytest.raises(BadArg):
        Registry.whereis_name("not-a-tuple")
    assert value == [(pid, {"topic": "py"})]
    assert after is None
    assert alive


@pytest.mark.pyotp
async def test_many_via_named_servers_and_cleanup():
    await Registry.start_link(keys="unique", name="Rooms")
    pids = [await Room.start(i, name=via(i)) for i in range(300)]
    answers = [await GenServer.call(via(i), "n") for i in range(300)]
    for p in pids[:150]:
        await GenServer.stop(p)
    await Registry._sync("Rooms")
    left = [GenServer.whereis(via(i)) for i in range(300)]
    assert answers == [(i, "n") for i in range(300)]
    assert Registry.count("Rooms") == 150
    assert left[:150] == [None] * 150
    assert left[150:] == pids[150:]


@pytest.mark.pyotp
async def test_dispatch_sees_every_change_of_the_table():
    me = pyotp.self()
    await Registry.start_link(keys="duplicate", name="D", partitions=2)

    def seen():
        out = []
        Registry.dispatch("D", "k", lambda es: out.extend(es))
        return sorted(v for _, v in out)
    steps = [seen()]
    Registry.register("D", "k", 1)
    steps.append(seen())
    p, ref, _ = await start_holder("D", "k", 2)
    steps.append(seen())
    Registry.register("D", "k", 3)
    steps.append(seen())
    Registry.unregister_match("D", "k", 1)
    steps.append(seen())
    await kill_and_wait(p, ref)
    await Registry._sync("D")
    steps.append(seen())
    Registry.unregister("D", "k")
    steps.append(seen())
    assert steps == [[], [1], [1, 2], [1, 2, 3], [2, 3], [3], []]


@pytest.mark.pyotp
async def test_under_a_supervisor_and_via_names_for_every_behaviour():
    from pyotp.gen_event import EventHandler, EventManager
    from pyotp.gen_statem import GenStateMachine
    from pyotp.supervisor import Supervisor

    class Light(GenStateMachine):
        def callback_mode(self):
            return "handle_event_function"

        def init(self, _):
            return ("ok", "off", [])

        def handle_event(self, event_type, content, state, data):
            if event_type == "cast" or event_type == "info":
                return ("next_state", "on" if state == "off" else "off", data + [content])
            return ("keep_state_and_data", ("reply", event_type[1], (state, data)))

    class Seen(EventHandler):
        def init(self, _):
            return ("ok", [])

        def handle_event(self, event, seen):
            return ("ok", seen + [event])

        def handle_call(self, req, seen):
            return ("ok", seen, seen)

    def v(key):
        return ("via", Registry, ("Names", key))

    sup = await Supervisor.start_link(
        [(Registry, {"keys": "unique", "name": "Names"}),
         (Registry, {"keys": "duplicate", "name": "Groups"})],
        strategy="one_for_one")
    ids = sorted(c[0] for c in await Supervisor.which_children(sup))
    # gen_statem through a via name
    light = await Light.start_link(None, name=v("light"))
    GenStateMachine.cast(v("light"), "flip")
    pyotp.send(v("light"), "flop")
    light_state = await GenStateMachine.call(v("light"), "get")
    # an event manager through a via name
    mgr = await EventManager.start_link(name=v("events"))
    await EventManager.add_handler(v("events"), Seen, None)
    EventManager.notify(v("events"), "e1")
    seen = await EventManager.call(v("events"), Seen, "get")
    # a supervisor through a via name
    inner = await Supervisor.start_link([], strategy="one_for_one", name=v("inner"))
    inner_children = await Supervisor.which_children(v("inner"))
    names = sorted(k for k, _, _ in Registry.select("Names"))
    found = [Registry.whereis_name(("Names", k)) for k in ("light", "events", "inner")]
    found = found == [light, mgr, inner]
    assert ids == ["Groups", "Names"]
    assert light_state == ("off", ["flip", "flop"])
    assert seen == ["e1"] and inner_children == []
    assert names == ["events", "inner", "light"] and found
