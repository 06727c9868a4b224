"""GenStateMachine (gen_statem): callback modes, every event type, return form and action,
postpone and next_event ordering, the three kinds of timeout, state enter calls, errors,
async callbacks, and many machines holding timeouts."""
import logging
import time

import pytest

import pyotp
import pyotp.sys
from pyotp import Exit, StartError, CallbackError
from pyotp._core import _stats
from pyotp.gen_statem import GenStateMachine

pytestmark = [pytest.mark.pyotp, pytest.mark.filterwarnings("ignore")]


# ---------------------------------------------------------------------------------------
# A scripted machine: reports every event and its terminate to its owner; a cast or call
# whose content is ("do", fn) returns fn(event_type, state, data).

class Script(GenStateMachine):
    def init(self, args):
        self.owner, self.mode, ret = args
        return ret

    def callback_mode(self):
        return self.mode

    def handle_event(self, event_type, content, state, data):
        pyotp.send(self.owner, ("ev", event_type, content, state, data))
        if type(content) is tuple and len(content) == 2 and content[0] == "do":
            return content[1](event_type, state, data)
        return "keep_state_and_data"

    def terminate(self, reason, state, data):
        pyotp.send(self.owner, ("terminate", reason, state, data))


async def script(state="a", data=0, actions=None, mode="handle_event_function"):
    ret = ("ok", state, data) if actions is None else ("ok", state, data, actions)
    return await Script.start_link((pyotp.self(), mode, ret))


def do(fn):
    return ("do", fn)


def ret(value):
    return ("do", lambda et, s, d: value)


async def ev():
    """The next reported event as (type, content, state, data); a call's type is "call"
    and a scripted content is "do"."""
    m = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "ev", timeout=5)
    et, content = m[1], m[2]
    if type(et) is tuple and et[0] == "call":
        et = "call"
    if type(content) is tuple and len(content) == 2 and content[0] == "do":
        content = "do"
    return (et, content, m[3], m[4])


async def evs_until(content):
    """Reported events up to and including the one whose content is `content`."""
    out = []
    while True:
        e = await ev()
        out.append(e)
        if e[1] == content:
            return out


async def terminated():
    m = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "terminate", timeout=5)
    return m[1:]


def probe(seconds=0.05):
    """A generic timeout used as a sentinel: anything that fires before it has been
    reported by the time it is."""
    return (("timeout", "probe"), seconds, "probe")


# ---------------------------------------------------------------------------------------
# Callback modes

class Switch(GenStateMachine):
    def callback_mode(self):
        return "state_functions"

    def init(self, count):
        return ("ok", "off", count)

    def off(self, event_type, content, data):
        if event_type == "cast" and content == "flip":
            return ("next_state", "on", data + 1)
        return self.common(event_type, content, data)

    def on(self, event_type, content, data):
        if event_type == "cast" and content == "flip":
            return ("next_state", "off", data)
        return self.common(event_type, content, data)

    def common(self, event_type, content, data):
        if type(event_type) is tuple and event_type[0] == "call":
            if content == "count":
                return ("keep_state_and_data", [("reply", event_type[1], data)])
            if content == "later":
                GenStateMachine.reply(event_type[1], "replied with reply()")
                return "keep_state_and_data"
            if content == "goto":
                return ("next_state", "nowhere", data, [("reply", event_type[1], "ok")])
        if event_type == "info":
            return ("keep_state", data + 100)
        return "keep_state_and_data"


async def test_state_functions_cast_call_info_and_reply():
    pid = await Switch.start_link(0)
    for _ in range(3):
        GenStateMachine.cast(pid, "flip")
    pyotp.send(pid, "plain message")
    count = await GenStateMachine.call(pid, "count")
    later = await GenStateMachine.call(pid, "later")
    state = await pyotp.sys.get_state(pid)
    assert count == 102
    assert later == "replied with reply()"
    assert state == ("on", 102)


async def test_state_functions_missing_state_function_crashes():
    pyotp.process_flag("trap_exit", True)
    pid = await Switch.start_link(0)
    assert await GenStateMachine.call(pid, "goto") == "ok"
    GenStateMachine.cast(pid, "flip")
    m = await pyotp.receive(lambda m: m[0] == "EXIT")
    reason = m[2]
    assert isinstance(reason, AttributeError) and "nowhere" in str(reason)


class Tuples(GenStateMachine):
    # handle_event_function (the default mode): states can be any term
    def init(self, _):
        return ("ok", ("floor", 0), [])

    def handle_event(self, event_type, content, state, data):
        if event_type == "cast":
            return ("next_state", ("floor", state[1] + content), data + [state])
        return ("keep_state_and_data", ("reply", event_type[1], (state, data)))


async def test_handle_event_function_with_any_terms_as_states():
    pid = await Tuples.start_link(None)
    GenStateMachine.cast(pid, 2)
    GenStateMachine.cast(pid, 3)
    assert await GenStateMachine.call(pid, "where") == (("floor", 5), [("floor", 0), ("floor", 2)])


class Defaults(GenStateMachine):
    pass


async def test_defaults_init_takes_state_and_data_and_handle_event_stops():
    pyotp.process_flag("trap_exit", True)
    pid = await Defaults.start_link(("idle", 7))
    st = await pyotp.sys.get_state(pid)
    GenStateMachine.cast(pid, "anything")
    m = await pyotp.receive(lambda m: m[0] == "EXIT")
    assert st == ("idle", 7)
    assert m[2] == "bad_event"


async def test_bad_callback_mode_fails_the_start():
    class Bad(GenStateMachine):
        def callback_mode(self):
            return ["state_enter"]      # no mode

        def init(self, _):
            return ("ok", "s", None)

    pyotp.process_flag("trap_exit", True)
    with pytest.raises(StartError) as e:
        await Bad.start_link(None)
    assert e.value.reason == ("bad_return_from_callback_mode", ["state_enter"])


async def test_reserved_and_private_names_are_not_state_functions():
    class M(GenStateMachine):
        def callback_mode(self):
            return "state_functions"

        def init(self, state):
            return ("ok", state, None)

    pyotp.process_flag("trap_exit", True)
    out = []
    for state in ("terminate", "call", "start_link", "__init__", 42):
        pid = await M.start_link(state)
        GenStateMachine.cast(pid, "x")
        m = await pyotp.receive(lambda m: m[0] == "EXIT")
        out.append(type(m[2]).__name__)
    assert out == ["AttributeError"] * 4 + ["TypeError"]


# ---------------------------------------------------------------------------------------
# init

async def test_init_returns():
    class I(GenStateMachine):
        def init(self, r):
            if r == "raise":
                raise ValueError("boom")
            return r

    pyotp.process_flag("trap_exit", True)
    out = [await I.start_link("ignore")]
    for r in (("stop", "nope"), ("ok", "only_state"), "raise", ("ok", "s", 1, ["bad action"])):
        try:
            await I.start_link(r)
            out.append("started")
        except StartError as e:
            out.append(e.reason if not isinstance(e.reason, Exception) else type(e.reason).__name__)
    assert out[:4] == [None, "nope", ("bad_return_value", ("ok", "only_state")), "ValueError"]
    # a bad init action is found after the start returned (OTP runs init's actions in the
    # machine's loop, after acknowledging the start)
    assert out[4] == "started"


async def test_init_actions_state_timeout_and_next_event():
    await script("a", 0, [("state_timeout", 0.01, "init timeout"),
                           ("next_event", "internal", "first")])
    assert [await ev(), await ev()] == [("internal", "first", "a", 0), ("state_timeout", "init timeout", "a", 0)]


# ---------------------------------------------------------------------------------------
# Every return form

async def test_return_forms():
    pid = await script("a", 0)
    seen = []
    steps = [
        ret(("next_state", "b", 1)),
        ret(("next_state", "c", 2, [])),
        ret(("keep_state", 3)),
        ret(("keep_state", 4, ("next_event", "internal", "ks"))),
        ret("keep_state_and_data"),
        ret(("keep_state_and_data", [("next_event", "internal", "ksad")])),
    ]
    for s in steps:
        GenStateMachine.cast(pid, s)
    seen = await evs_until("ksad")
    seen.append(await pyotp.sys.get_state(pid))
    assert seen == [
        ("cast", "do", "a", 0), ("cast", "do", "b", 1), ("cast", "do", "c", 2),
        ("cast", "do", "c", 3), ("internal", "ks", "c", 4), ("cast", "do", "c", 4),
        ("cast", "do", "c", 4), ("internal", "ksad", "c", 4), ("c", 4)]


async def test_repeat_state_forms_keep_going():
    pid = await script("a", 0)
    for r in (("repeat_state", 5), ("repeat_state", 6, []), "repeat_state_and_data",
              ("repeat_state_and_data", [])):
        GenStateMachine.cast(pid, ret(r))
    GenStateMachine.cast(pid, "end")
    assert [e[3] for e in await evs_until("end")] == [0, 5, 6, 6, 6]


@pytest.mark.parametrize("result, reason, data", [
    ("stop", "normal", 0),
    (("stop", "shutdown"), "shutdown", 0),
    (("stop", ("shutdown", "x"), 9), ("shutdown", "x"), 9),
    (("next_state",), ("bad_return_value", ("next_state",)), 0),
    ("keep_state", ("bad_return_value", "keep_state"), 0),
    (None, ("bad_return_value", None), 0),
    (("keep_state", 1, ["nonsense"]), ("bad_action_from_state_function", "nonsense"), 1),
    (("keep_state_and_data", ("reply", "not a from", 1)),
     ("bad_action_from_state_function", ("reply", "not a from", 1)), 0),
    (("keep_state_and_data", ("next_event", "bogus_type", 1)),
     ("bad_action_from_state_function", ("next_event", "bogus_type", 1)), 0),
    (("keep_state_and_data", ("state_timeout", -1, "x")),
     ("bad_action_from_state_function", ("state_timeout", -1, "x")), 0),
    (("keep_state_and_data", ("state_timeout", 1, "x", {"abs": "yes"})),
     ("bad_action_from_state_function", ("state_timeout", 1, "x", {"abs": "yes"})), 0),
    (("keep_state_and_data", -0.5), ("bad_action_from_state_function", -0.5), 0),
    (("stop_and_reply", "normal", ["junk"]), ("bad_reply_action_from_state_function", "junk"), 0),
])
async def test_stop_and_bad_returns(result, reason, data):
    pyotp.process_flag("trap_exit", True)
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(result))
    await ev()
    t = await terminated()
    m = await pyotp.receive(lambda m: m[0] == "EXIT")
    exit_reason = m[2]
    assert t == (reason, "a", data)
    assert exit_reason == reason


async def test_stop_and_reply_replies_then_stops():
    pyotp.process_flag("trap_exit", True)
    pid = await script("a", 0)
    r = await GenStateMachine.call(pid, do(lambda et, s, d: (
        "stop_and_reply", "normal", [("reply", et[1], "bye")], 42)))
    t = await terminated()
    assert r == "bye"
    assert t == ("normal", "a", 42)


async def test_stop_and_reply_single_reply_three_tuple():
    pyotp.process_flag("trap_exit", True)
    pid = await script("a", 0)
    r = await GenStateMachine.call(pid, do(lambda et, s, d: (
        "stop_and_reply", "shutdown", ("reply", et[1], "one"))))
    assert r == "one"
    assert await terminated() == ("shutdown", "a", 0)


async def test_crash_in_callback_runs_terminate_with_the_exception():
    def boom(et, s, d):
        raise KeyError("k")

    pyotp.process_flag("trap_exit", True)
    pid = await script("a", 0)
    GenStateMachine.cast(pid, do(boom))
    t = await terminated()
    m = await pyotp.receive(lambda m: m[0] == "EXIT")
    assert type(t[0]).__name__ == "KeyError"
    assert t[1:] == ("a", 0)
    assert m[2] is t[0]


# ---------------------------------------------------------------------------------------
# Actions

class Batch(GenStateMachine):
    """Answers calls three at a time, with one list of reply actions."""

    def init(self, _):
        return ("ok", "collecting", [])

    def handle_event(self, et, content, state, froms):
        froms = froms + [et[1]]
        if len(froms) < 3:
            return ("keep_state", froms)
        return ("keep_state", [], [("reply", f, ("answer", i)) for i, f in enumerate(froms)])


async def test_reply_actions_single_in_list_and_several_at_once():
    pid = await script("a", 0)
    r1 = await GenStateMachine.call(pid, do(lambda et, s, d: ("keep_state_and_data", ("reply", et[1], 1))))
    r2 = await GenStateMachine.call(pid, do(lambda et, s, d: ("next_state", "b", d, [("reply", et[1], 2)])))
    batch = await Batch.start_link(None)
    me = pyotp.self()

    async def caller():
        pyotp.send(me, ("got", await GenStateMachine.call(batch, "q")))
    for _ in range(3):
        pyotp.spawn(caller)
    got = sorted([(await pyotp.receive(lambda m: m[0] == "got"))[1] for _ in range(3)])
    assert r1 == 1
    assert r2 == 2
    assert got == [("answer", 0), ("answer", 1), ("answer", 2)]


async def test_hibernate_is_accepted():
    pid = await script("a", 0)
    for r in (("keep_state", 1, "hibernate"), ("keep_state", 2, [("hibernate", True)]),
              ("keep_state", 3, [("hibernate", False), "hibernate"])):
        GenStateMachine.cast(pid, ret(r))
    assert await GenStateMachine.call(pid, do(lambda et, s, d: ("keep_state_and_data", ("reply", et[1], d)))) == 3


async def test_postpone_retried_after_state_change_in_order():
    pid = await script("a", 0)
    postpone = ret(("keep_state_and_data", "postpone"))
    GenStateMachine.cast(pid, ("do", lambda et, s, d: ("keep_state", d, [("postpone", True)])))
    GenStateMachine.cast(pid, postpone)
    # staying in the state (keep, repeat, next_state to the same state) retries nothing
    GenStateMachine.cast(pid, ret(("keep_state", 1)))
    GenStateMachine.cast(pid, ret(("repeat_state", 2)))
    GenStateMachine.cast(pid, ret(("next_state", "a", 3)))
    GenStateMachine.cast(pid, ret(("next_state", "b", 4)))
    GenStateMachine.cast(pid, "after")
    assert [(e[0], e[2], e[3]) for e in await evs_until("after")] == [
        ("cast", "a", 0), ("cast", "a", 0), ("cast", "a", 0), ("cast", "a", 1), ("cast", "a", 2),
        ("cast", "a", 3),
        # the two postponed events, in order, in the new state, before "after"
        ("cast", "b", 4), ("cast", "b", 4), ("cast", "b", 4)]


async def test_postponed_event_retried_immediately_when_postponing_event_changes_state():
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("next_state", "b", 1, "postpone")))
    GenStateMachine.cast(pid, "after")
    assert [(e[0], e[1], e[2]) for e in await evs_until("after")] == [("cast", "do", "a"), ("cast", "do", "b"), ("cast", "after", "b")]


async def test_postponed_call_answered_after_state_change():
    class Lock(GenStateMachine):
        def init(self, _):
            return ("ok", "locked", None)

        def handle_event(self, et, content, state, data):
            if et == "cast" and content == "unlock":
                return ("next_state", "open", data)
            if state == "locked":
                return ("keep_state_and_data", "postpone")
            return ("keep_state_and_data", ("reply", et[1], ("opened for", content)))

    pid = await Lock.start_link(None)
    results = []

    async def caller(n):
        results.append(await GenStateMachine.call(pid, n))
        pyotp.send(me, "done")
    me = pyotp.self()
    for n in range(3):
        pyotp.spawn(caller, n)
    await pyotp.sleep(0)          # let the callers queue their calls
    GenStateMachine.cast(pid, "unlock")
    for _ in range(3):
        await pyotp.receive(lambda m: m == "done")
    assert sorted(results) == [("opened for", 0), ("opened for", 1), ("opened for", 2)]


async def test_next_event_order_postpone_and_zero_timeouts_match_otp():
    """The same machine in Erlang/OTP 25 (gen_statem, handle_event_function + state_enter)
    produces exactly this event sequence."""
    class Ord(GenStateMachine):
        def init(self, _):
            return ("ok", "a", [])

        def callback_mode(self):
            return ["handle_event_function", "state_enter"]

        def handle_event(self, t, c, s, log):
            if t == "enter":
                return ("keep_state", log + [("enter", c, s)])
            if t == "cast" and c == "go" and s == "a":
                return ("next_state", "b", log + ["go"], [
                    ("next_event", "internal", "i1"), ("next_event", "internal", "i2"),
                    ("state_timeout", 0, "z"), ("timeout", 0, "ev0"), (("timeout", "g"), 0, "g0")])
            if t == "cast" and s == "a":
                return ("keep_state", log + [("postponed", c)], ["postpone"])
            if type(t) is tuple and t[0] == "call":
                if s == "b":
                    return ("keep_state_and_data", [("reply", t[1], log)])
                return ("keep_state_and_data", ["postpone"])
            return ("keep_state", log + [(t, c, s)])

    pid = await Ord.start(None)
    for e in ("e1", "e2", "go"):
        GenStateMachine.cast(pid, e)
    assert await GenStateMachine.call(pid, "log") == [
        ("enter", "a", "a"), ("postponed", "e1"), ("postponed", "e2"), "go", ("enter", "a", "b"),
        ("internal", "i1", "b"), ("internal", "i2", "b"), ("cast", "e1", "b"), ("cast", "e2", "b"),
        ("state_timeout", "z", "b"), (("timeout", "g"), "g0", "b")]


async def test_next_event_runs_before_queued_messages_in_action_order():
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("keep_state_and_data", [
        ("next_event", "internal", 1), ("next_event", "cast", 2), ("next_event", "info", 3),
        ("next_event", ("timeout", "x"), 4), ("next_event", "state_timeout", 5),
        ("next_event", "timeout", 6)])))
    GenStateMachine.cast(pid, "queued")
    assert [(e[0], e[1]) for e in await evs_until("queued")] == [("cast", "do"), ("internal", 1), ("cast", 2), ("info", 3),
                               (("timeout", "x"), 4), ("state_timeout", 5), ("timeout", 6),
                               ("cast", "queued")]


async def test_next_event_call_can_be_replied():
    pid = await script("a", 0)
    # the call is re-inserted as an internal copy of itself and answered from there
    assert await GenStateMachine.call(pid, do(lambda et, s, d: (
        "keep_state_and_data", ("next_event", et, ("do", lambda et2, s2, d2: (
            "keep_state_and_data", ("reply", et2[1], "answered from next_event"))))))) == "answered from next_event"


# ---------------------------------------------------------------------------------------
# Timeouts

async def test_state_timeout_fires_with_its_content():
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("keep_state_and_data", ("state_timeout", 0.01, "tick"))))
    assert (await evs_until("tick"))[-1] == ("state_timeout", "tick", "a", 0)


async def test_state_timeout_cancelled_by_state_change_not_by_events():
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("keep_state_and_data", [("state_timeout", 0.02, "in a"),
                                                           probe(0.06)])))
    GenStateMachine.cast(pid, ret(("next_state", "b", 1)))
    GenStateMachine.cast(pid, ret(("keep_state_and_data", ("state_timeout", 0.01, "in b"))))
    GenStateMachine.cast(pid, "event in b")   # does not cancel the state timeout
    assert [(e[0], e[1], e[2]) for e in await evs_until("probe")] == [
        ("cast", "do", "a"), ("cast", "do", "a"), ("cast", "do", "b"), ("cast", "event in b", "b"),
        ("state_timeout", "in b", "b"), (("timeout", "probe"), "probe", "b")]


async def test_state_timeout_restart_replaces_and_infinity_and_cancel_cancel():
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("keep_state_and_data", [("state_timeout", 0.01, "first"),
                                                           probe(0.08)])))
    GenStateMachine.cast(pid, ret(("keep_state_and_data", ("state_timeout", 0.03, "second"))))
    first = [e[1] for e in await evs_until("second")]
    GenStateMachine.cast(pid, ret(("keep_state_and_data", [("state_timeout", 0.01, "x"),
                                                           ("state_timeout", "infinity", "y")])))
    GenStateMachine.cast(pid, ret(("keep_state_and_data", ("state_timeout", 0.01, "z"))))
    GenStateMachine.cast(pid, ret(("keep_state_and_data", ("state_timeout", "cancel"))))
    rest = [e[1] for e in await evs_until("probe")]
    assert first == ["do", "do", "second"]
    assert rest == ["do", "do", "do", "probe"]


async def test_timeout_update_changes_content_or_fires_now():
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("keep_state_and_data", ("state_timeout", 0.02, "old"))))
    GenStateMachine.cast(pid, ret(("keep_state_and_data", ("state_timeout", "update", "new"))))
    a = await evs_until("new")
    # not running: an update fires at once (a zero timeout), before the next message
    GenStateMachine.cast(pid, ret(("keep_state_and_data", (("timeout", "n"), "update", "now"))))
    GenStateMachine.cast(pid, "next message")
    b = await evs_until("next message")
    assert [e[:2] for e in a] == [("cast", "do"), ("cast", "do"), ("state_timeout", "new")]
    assert [e[:2] for e in b] == [("cast", "do"), (("timeout", "n"), "now"), ("cast", "next message")]


async def test_event_timeout_fires_when_idle_and_is_cancelled_by_any_event():
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("keep_state_and_data", [("timeout", 0.02, "idle"), probe(0.06)])))
    GenStateMachine.cast(pid, "poke")           # cancels it
    cancelled = [e[1] for e in await evs_until("probe")]
    GenStateMachine.cast(pid, ret(("keep_state_and_data", ("timeout", 0.01, "idle"))))
    fired = (await evs_until("idle"))[-1]
    # a bare number is an event timeout whose content is the number
    GenStateMachine.cast(pid, ret(("keep_state_and_data", 0.01)))
    bare = (await evs_until(0.01))[-1]
    # "infinity" cancels it
    GenStateMachine.cast(pid, ret(("keep_state_and_data", [0.01, "infinity", probe(0.04)])))
    after_infinity = [e[1] for e in await evs_until("probe")]
    assert cancelled == ["do", "poke", "probe"]
    assert fired[:2] == ("timeout", "idle")
    assert bare[:2] == ("timeout", 0.01)
    assert after_infinity == ["do", "probe"]


async def test_event_timeout_cancelled_by_inserted_and_postponed_events_too():
    pid = await script("a", 0)
    # the event timeout set with next_event is cancelled by that (internal) event
    GenStateMachine.cast(pid, ret(("keep_state_and_data", [
        ("timeout", 0, "zero"), ("next_event", "internal", "inserted"), probe(0.03)])))
    assert [e[1] for e in await evs_until("probe")] == ["do", "inserted", "probe"]


async def test_event_timeout_zero_fires_before_next_message():
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("keep_state_and_data", ("timeout", 0, "zero"))))
    GenStateMachine.cast(pid, "next")
    assert [e[:2] for e in await evs_until("next")] == [("cast", "do"), ("timeout", "zero"), ("cast", "next")]


async def test_named_timeouts_survive_events_and_state_changes_and_cancel_by_name():
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("keep_state_and_data", [
        (("timeout", "x"), 0.02, "X"), (("timeout", "y"), 0.01, "Y"),
        (("timeout", "z"), 0.01, "Z"), probe(0.06)])))
    GenStateMachine.cast(pid, ret(("next_state", "b", 1)))
    GenStateMachine.cast(pid, ret(("keep_state_and_data", (("timeout", "z"), "infinity", None))))
    GenStateMachine.cast(pid, "poke")
    assert [(e[0], e[1], e[2]) for e in await evs_until("probe")] == [
        ("cast", "do", "a"), ("cast", "do", "a"), ("cast", "do", "b"), ("cast", "poke", "b"),
        (("timeout", "y"), "Y", "b"), (("timeout", "x"), "X", "b"), (("timeout", "probe"), "probe", "b")]


async def test_last_timeout_action_of_a_type_wins():
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("keep_state_and_data", [
        ("state_timeout", 0.01, "one"), ("state_timeout", 0.02, "two"), probe(0.05)])))
    assert [e[1] for e in await evs_until("probe")] == ["do", "two", "probe"]


async def test_absolute_timeouts():
    pid = await script("a", 0)
    now = time.monotonic()
    GenStateMachine.cast(pid, ret(("keep_state_and_data", [
        ("state_timeout", now + 0.02, "abs dict", {"abs": True}),
        (("timeout", "n"), now - 1.0, "abs in the past", [("abs", True)]),
        (("timeout", "rel"), 0.01, "relative", ("abs", False)),
        probe(0.06)])))
    assert [e[1] for e in await evs_until("probe")] == ["do", "abs in the past", "relative", "abs dict", "probe"]


async def test_timeout_events_sent_raw_or_by_user_timers_are_info():
    pid = await script("a", 0)
    # the machine's own pyotp.start_timer with a key that looks like ours: info
    GenStateMachine.cast(pid, do(lambda et, s, d: (
        "keep_state_and_data", pyotp.start_timer(pyotp.self(), "state_timeout", 0.01) and [])))
    pyotp.send(pid, ("timeout", "not a timer", "state_timeout"))
    GenStateMachine.cast(pid, ret(("keep_state_and_data", probe(0.04))))
    assert [e[0] for e in await evs_until("probe")] == ["cast", "info", "cast", "info", ("timeout", "probe")]


class Blocker(GenStateMachine):
    """An async callback waits for "unblock" while its state timeout fires: the timeout's
    message is queued when the state change cancels it, and must be dropped."""

    def callback_mode(self):
        return "state_functions"

    def init(self, owner):
        return ("ok", "a", owner, ("state_timeout", 0.01, "in a"))

    async def a(self, et, content, owner):
        if et == "cast" and content == "block":
            await pyotp.receive(lambda m: m == "unblock")
            return ("next_state", "b", owner, probe(0.03))
        pyotp.send(owner, ("ev", et, content, "a", None))
        return "keep_state_and_data"

    def b(self, et, content, owner):
        pyotp.send(owner, ("ev", et, content, "b", None))
        return "keep_state_and_data"


async def test_cancelled_timeout_already_queued_never_fires():
    me = pyotp.self()
    pid = await Blocker.start_link(me)
    GenStateMachine.cast(pid, "block")
    # fires after the machine's 0.01 s state timeout (the wheel fires in deadline
    # order), so that timeout's message is already in the blocked machine's mailbox
    pyotp.send_after(me, "passed", 0.03)
    await pyotp.receive(lambda m: m == "passed")
    pyotp.send(pid, "unblock")
    events = [e[:3] for e in await evs_until("probe")]
    timers = _stats()["timers"]
    assert events == [(("timeout", "probe"), "probe", "b")]
    assert timers == 0


# ---------------------------------------------------------------------------------------
# State enter calls

class Enter(GenStateMachine):
    def callback_mode(self):
        return ["state_functions", "state_enter"]

    def init(self, owner):
        return ("ok", "one", owner)

    def one(self, et, content, owner):
        pyotp.send(owner, ("ev", et, content, "one", None))
        if et == "enter":
            return ("keep_state_and_data", ("state_timeout", 0.01, "leave one"))
        if et == "state_timeout":
            return ("next_state", "two", owner)
        return "keep_state_and_data"

    def two(self, et, content, owner):
        pyotp.send(owner, ("ev", et, content, "two", None))
        if et == "enter":
            return ("next_state", "two", owner)       # the same state: allowed
        if et == "cast" and content == "repeat":
            return "repeat_state_and_data"
        if et == "cast" and content == "stay":
            return ("next_state", "two", owner)
        if et == "cast" and content == "back":
            return ("next_state", "one", owner)
        return "keep_state_and_data"


async def test_state_enter_on_init_each_change_and_repeat_state():
    pid = await Enter.start_link(pyotp.self())
    first = await evs_until("leave one")
    nxt = [await ev()]                       # enter two
    GenStateMachine.cast(pid, "stay")        # same state: no enter call
    GenStateMachine.cast(pid, "repeat")      # enter call again
    GenStateMachine.cast(pid, "back")
    rest = await evs_until("leave one")
    assert [e[:3] for e in first + nxt + rest] == [
        ("enter", "one", "one"), ("state_timeout", "leave one", "one"), ("enter", "one", "two"),
        ("cast", "stay", "two"), ("cast", "repeat", "two"), ("enter", "two", "two"),
        ("cast", "back", "two"), ("enter", "two", "one"), ("state_timeout", "leave one", "one")]


@pytest.mark.parametrize("enter_result, reason", [
    (("next_state", "elsewhere", 0), ("bad_state_enter_return_from_state_function",
                                      ("next_state", "elsewhere", 0))),
    (("keep_state_and_data", "postpone"), ("bad_state_enter_action_from_state_function", "postpone")),
    (("keep_state_and_data", [("postpone", True)]),
     ("bad_state_enter_action_from_state_function", ("postpone", True))),
    (("keep_state_and_data", ("next_event", "internal", 1)),
     ("bad_state_enter_action_from_state_function", ("next_event", "internal", 1))),
])
async def test_state_enter_rules(enter_result, reason):
    class E(GenStateMachine):
        def callback_mode(self):
            return ["handle_event_function", "state_enter"]

        def init(self, _):
            return ("ok", "start", 0)

        def handle_event(self, et, content, state, data):
            if et == "enter" and state == "target":
                return enter_result
            if et == "cast":
                return ("next_state", "target", data)
            return "keep_state_and_data"

    pyotp.process_flag("trap_exit", True)
    pid = await E.start_link(None)
    GenStateMachine.cast(pid, "go")
    m = await pyotp.receive(lambda m: m[0] == "EXIT")
    assert m[2] == reason


async def test_enter_call_actions_and_timeouts_apply_to_new_state():
    class E(GenStateMachine):
        def callback_mode(self):
            return ["handle_event_function", "state_enter"]

        def init(self, owner):
            self.owner = owner
            return ("ok", "a", 0)

        def handle_event(self, et, content, state, data):
            pyotp.send(self.owner, ("ev", et, content, state, data))
            if et == "enter" and state == "b":
                return ("keep_state", data + 10, [("state_timeout", 0.01, "b timeout"),
                                                  ("reply", content_from[0], "from enter")])
            if type(et) is tuple:
                content_from.append(et[1])
                return ("next_state", "b", data + 1)
            return "keep_state_and_data"
    content_from = []
    pid = await E.start_link(pyotp.self())
    r = await GenStateMachine.call(pid, "go")
    events = await evs_until("b timeout")
    assert r == "from enter"
    assert [e[:4] for e in events if e[0] != "call"] == [("enter", "a", "a", 0), ("enter", "a", "b", 1), ("state_timeout", "b timeout", "b", 11)]


# ---------------------------------------------------------------------------------------
# API: start, names, calls and their errors, stop, terminate, sys

async def test_named_machine_and_already_started():
    pid = await Switch.start_link(5, name="switch")
    GenStateMachine.cast("switch", "flip")
    n = await GenStateMachine.call("switch", "count")
    with pytest.raises(StartError) as e:
        await Switch.start_link(0, name="switch")
    info = pyotp.process_info(pid)
    assert n == 6
    assert e.value.reason == ("already_started", pid)
    assert info["behaviour"] == "Switch"


async def test_call_errors_noproc_timeout_and_exit_reason():
    pyotp.process_flag("trap_exit", True)
    out = []
    try:
        await GenStateMachine.call("nobody", "x", timeout=0.5)
    except Exit as e:
        out.append(e.reason[0])
    pid = await script("a", 0)
    try:    # never answered (postponed forever)
        await GenStateMachine.call(pid, ret(("keep_state_and_data", "postpone")), timeout=0.02)
    except Exit as e:
        out.append(e.reason[0])
    try:    # the machine stops without answering
        await GenStateMachine.call(pid, ret(("stop", "gone")))
    except Exit as e:
        out.append(e.reason[0])
    try:
        await GenStateMachine.call(pid, "x")
    except Exit as e:
        out.append(e.reason[0])
    assert out == ["noproc", "timeout", "gone", "noproc"]


async def test_plain_callback_cannot_wait():
    pyotp.process_flag("trap_exit", True)
    other = await Switch.start_link(0)
    pid = await script("a", 0)
    GenStateMachine.cast(pid, do(lambda et, s, d: GenStateMachine.call(other, "count")))
    m = await pyotp.receive(lambda m: m[0] == "EXIT" and m[1] == pid)
    assert isinstance(m[2], CallbackError)


async def test_stop_runs_terminate_and_cancels_timeouts():
    pyotp.process_flag("trap_exit", True)
    pid = await script("a", 0, [("state_timeout", 30, "s"), (("timeout", "g"), 30, "g"),
                                ("timeout", 30, "e")])
    await pyotp.sys.get_state(pid)       # init actions have run
    before = _stats()["timers"]
    r = await GenStateMachine.stop(pid, "shutdown")
    assert before == 3
    assert r == "ok"
    assert await terminated() == ("shutdown", "a", 0)
    assert _stats()["timers"] == 0
    assert not pyotp.is_alive(pid)


async def test_stop_errors():
    out = []
    try:
        await GenStateMachine.stop("nobody")
    except Exit as e:
        out.append(e.reason[0])
    pid = await script("a", 0)

    class Slow(GenStateMachine):
        async def terminate(self, reason, state, data):
            await pyotp.sleep(0.1)
    slow = await Slow.start(("s", None))
    try:
        await GenStateMachine.stop(slow, "normal", 0.01)
    except Exit as e:
        out.append(e.reason[0])
    out.append(await GenStateMachine.stop(pid))
    assert out == ["noproc", "timeout", "ok"]


async def test_exit_from_parent_when_trapping_runs_terminate():
    me = pyotp.self()

    class T(GenStateMachine):
        def init(self, _):
            pyotp.process_flag("trap_exit", True)
            return ("ok", "s", "d")

        def terminate(self, reason, state, data):
            pyotp.send(me, ("terminate", reason, state, data))

    async def parent():
        await T.start_link(None)
        pyotp.send(me, "started")
        await pyotp.receive()
    p = pyotp.spawn(parent)
    await pyotp.receive(lambda m: m == "started")
    pyotp.exit(p, "bye")
    assert await terminated() == ("bye", "s", "d")


async def test_sys_replace_state_is_seen_by_the_machine():
    pid = await Switch.start_link(0)
    await pyotp.sys.replace_state(pid, lambda sd: ("on", 41))
    GenStateMachine.cast(pid, "flip")          # on -> off
    GenStateMachine.cast(pid, "flip")          # off -> on, 42
    assert await GenStateMachine.call(pid, "count") == 42
    assert await pyotp.sys.get_state(pid) == ("on", 42)


async def test_sys_replace_state_with_a_bad_value_crashes_the_machine_clearly():
    pyotp.process_flag("trap_exit", True)
    pid = await Switch.start_link(0)
    await pyotp.sys.replace_state(pid, lambda sd: "not a pair")
    GenStateMachine.cast(pid, "flip")
    m = await pyotp.receive(lambda m: m[0] == "EXIT")
    reason = m[2]
    assert isinstance(reason, TypeError) and "(state, data) pair" in str(reason)


async def test_plain_callback_returning_a_coroutine_is_a_bad_return():
    async def later(et, content, data):
        return "keep_state_and_data"

    class M(GenStateMachine):
        def callback_mode(self):
            return "state_functions"

        def init(self, _):
            return ("ok", "s", None)

        s = staticmethod(lambda self, et, content, data: later(et, content, data))

    pyotp.process_flag("trap_exit", True)
    pid = await M.start_link(None)
    GenStateMachine.cast(pid, "x")
    m = await pyotp.receive(lambda m: m[0] == "EXIT")
    reason = m[2]
    assert reason[0] == "bad_return_value" and "coroutine" in reason[1]


async def test_crash_report_is_logged(caplog):
    caplog.set_level(logging.ERROR, logger="pyotp")
    pyotp.process_flag("trap_exit", True)
    pid = await script("a", 0)
    GenStateMachine.cast(pid, ret(("bogus",)))
    await pyotp.receive(lambda m: m[0] == "EXIT")
    assert any("bad_return_value" in r.getMessage() and "State: ('a', 0)" in r.getMessage()
               for r in caplog.records)


async def test_not_a_machine_class():
    with pytest.raises(TypeError):
        await GenStateMachine.start_link.__func__(int, None)
    assert True


# ---------------------------------------------------------------------------------------
# async callbacks

class AsyncMachine(GenStateMachine):
    def callback_mode(self):
        return ["state_functions", "state_enter"]

    async def init(self, helper):
        n = await GenStateMachine.call(helper, "count")
        return ("ok", "idle", {"helper": helper, "n": n, "log": []})

    async def idle(self, et, content, data):
        if et == "enter":
            data["log"].append(("enter idle", content))
            return "keep_state_and_data"
        if et == "cast":
            GenStateMachine.cast(data["helper"], "flip")
            data["n"] = await GenStateMachine.call(data["helper"], "count")
            return ("next_state", "busy", data, ("state_timeout", 0.01, "done"))
        return ("keep_state_and_data", ("reply", et[1], data["log"] + [data["n"]]))

    def busy(self, et, content, data):              # plain and async mix
        if et == "enter":
            data["log"].append(("enter busy", content))
            return "keep_state_and_data"
        if et == "state_timeout":
            return ("next_state", "idle", data)
        return ("keep_state_and_data", "postpone")

    async def terminate(self, reason, state, data):
        await GenStateMachine.call(data["helper"], "count")
        pyotp.send(self.owner, ("terminate", reason, state, data["n"]))


async def test_async_callbacks():
    helper = await Switch.start_link(10)
    pid = await AsyncMachine.start_link(helper)
    GenStateMachine.cast(pid, "work")
    log = await GenStateMachine.call(pid, "log")   # postponed while busy
    assert log == [("enter idle", "idle"), ("enter busy", "idle"), ("enter idle", "busy"), 11]


async def test_async_terminate_and_stop():
    helper = await Switch.start_link(3)
    pid = await AsyncMachine.start_link(helper)
    await pyotp.sys.replace_state(pid, lambda sd: sd)   # machine ready
    AsyncMachine.owner = pyotp.self()
    try:
        await GenStateMachine.stop(pid, "normal")
        assert await terminated() == ("normal", "idle", 3)
    finally:
        del AsyncMachine.owner


# ---------------------------------------------------------------------------------------
# Many machines

class Waiter(GenStateMachine):
    def callback_mode(self):
        return "state_functions"

    def init(self, args):
        owner, seconds = args
        return ("ok", "waiting", owner, ("state_timeout", seconds, "wake"))

    def waiting(self, et, content, owner):
        if et == "state_timeout":
            pyotp.send(owner, ("fired", pyotp.self()))
            return ("next_state", "done", owner)
        return "keep_state_and_data"

    def done(self, et, content, owner):
        if et == "state_timeout":
            pyotp.send(owner, ("fired twice", pyotp.self()))
        return "keep_state_and_data"


async def test_100k_machines_hold_state_timeouts_then_stop_cleanly():
    me = pyotp.self()
    procs0 = len(pyotp.processes())
    timers0 = _stats()["timers"]
    pids = [await Waiter.start((me, 30.0)) for _ in range(100_000)]
    # every machine has run its init actions once this call to the last one returns
    await pyotp.sys.get_state(pids[-1])
    armed = _stats()["timers"] - timers0
    alive = len(pyotp.processes()) - procs0
    for pid in pids:
        await GenStateMachine.stop(pid)
    try:
        fired = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "fired", timeout=0)
    except TimeoutError:
        fired = None
    assert armed == 100_000
    assert alive == 100_000
    assert _stats()["timers"] - timers0 == 0
    assert len(pyotp.processes()) - procs0 == 0
    assert fired is None


async def test_10k_short_state_timeouts_fire_exactly_once():
    me = pyotp.self()
    timers0 = _stats()["timers"]
    pids = [await Waiter.start((me, 0.02)) for _ in range(10_000)]
    fired = set()
    for _ in range(10_000):
        m = await pyotp.receive(lambda m: type(m) is tuple and m[0] in ("fired", "fired twice"))
        assert m[0] == "fired"
        fired.add(m[1])
    # a later timer: anything still due would have been delivered before it
    pyotp.send_after(me, "sentinel", 0.05)
    await pyotp.receive(lambda m: m == "sentinel")
    leftovers = []
    while True:
        try:
            leftovers.append(await pyotp.receive(
                lambda m: type(m) is tuple and m[0] in ("fired", "fired twice"), timeout=0))
        except TimeoutError:
            break
    for pid in pids:
        await GenStateMachine.stop(pid)
    assert fired == set(pids)
    assert leftovers == []
    assert _stats()["timers"] - timers0 == 0
