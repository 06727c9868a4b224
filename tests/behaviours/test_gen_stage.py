"""GenStage: demand accounting, producer_consumer back-pressure, dispatchers (demand,
broadcast with selectors, partition), cancel modes, buffers, manual and accumulated demand,
stream/from_enumerable, ConsumerSupervisor, bad input. Ports the ideas of Elixir
GenStage's own test suite; no sleeps: every wait is on a message."""
import logging

import pytest

import pyotp
from pyotp import (BroadcastDispatcher, ConsumerSupervisor, DemandDispatcher, GenStage, GenStageError,
                   PartitionDispatcher, StartError)

pytestmark = pytest.mark.pyotp


def is_down(ref):
    return lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == ref


class Counter(GenStage):
    """Emits consecutive ints; reports every demand to `report` as ("demand", n)."""

    def init(self, arg):
        start, report, opts = arg
        self.report = report
        return ("producer", start, opts)

    def handle_demand(self, demand, n):
        if self.report is not None:
            pyotp.send(self.report, ("demand", demand))
        return ("noreply", list(range(n, n + demand)), n + demand)

    def handle_call(self, req, from_, n):
        if req[0] == "emit":          # a producer may dispatch from any callback
            return ("reply", "ok", req[1], n)
        return ("reply", n, [], n)

    def handle_cast(self, req, n):
        if req[0] == "emit":
            return ("noreply", req[1], n)
        return ("stop", req[1], n)


class Silent(GenStage):
    """A producer that only emits what it is told to (handle_cast/handle_call)."""

    def init(self, opts):
        return ("producer", None, opts)

    def handle_demand(self, demand, st):
        return ("noreply", [], st)

    def handle_cast(self, req, st):
        if req[0] == "emit":
            return ("noreply", req[1], st)
        return ("stop", req[1], st)

    def handle_call(self, req, from_, st):
        return ("reply", "ok", [], st)


class Forwarder(GenStage):
    """A consumer sending ("events", self, events) to `to` for every batch."""

    def init(self, arg):
        to, subs = arg
        self.to = to
        return ("consumer", None, {"subscribe_to": subs})

    def handle_events(self, events, from_, st):
        pyotp.send(self.to, ("events", pyotp.self(), list(events)))
        return ("noreply", [], st)

    def handle_cancel(self, reason, from_, st):
        pyotp.send(self.to, ("cancelled", pyotp.self(), reason))
        return ("noreply", [], st)

    def handle_call(self, req, from_, st):
        return ("reply", "alive", [], st)


class Doubler(GenStage):
    def init(self, subs):
        return ("producer_consumer", None, {"subscribe_to": subs})

    def handle_events(self, events, from_, st):
        return ("noreply", [e * 2 for e in events], st)


async def collect(n, sender=None):
    """Receive ("events", pid, list) messages until n events have arrived."""
    out = []
    while len(out) < n:
        m = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "events"
                                and (sender is None or m[1] == sender))
        out += m[2]
    return out


async def test_demand_accounting_max_then_max_minus_min():
    me = pyotp.self()
    p = await Counter.start_link((0, me, {}))
    await Forwarder.start_link((me, [(p, {"max_demand": 10, "min_demand": 5})]))
    events = await collect(30)
    assert events == list(range(30))
    demands = []
    while len(demands) < 5:
        demands.append((await pyotp.receive(lambda m: m[0] == "demand"))[1])
    # Elixir's accounting: max_demand first, then max - min each time min was reached
    assert demands == [10, 5, 5, 5, 5]


async def test_batches_never_exceed_max_minus_min():
    me = pyotp.self()
    p = await Counter.start_link((0, None, {}))
    await Forwarder.start_link((me, [(p, {"max_demand": 100, "min_demand": 80})]))
    for _ in range(20):
        m = await pyotp.receive(lambda m: m[0] == "events")
        assert 1 <= len(m[2]) <= 20


async def test_three_stage_pipeline_keeps_order_and_values():
    me = pyotp.self()
    p = await GenStage.from_enumerable(range(5000))
    pc = await Doubler.start_link([(p, {"max_demand": 100})])
    await Forwarder.start_link((me, [(pc, {"max_demand": 50})]))
    assert await collect(5000) == [2 * i for i in range(5000)]


async def test_producer_consumer_waits_for_downstream_demand():
    # with no consumer downstream, the producer_consumer handles nothing: the producer
    # is asked max_demand once and then nothing more
    me = pyotp.self()
    p = await Counter.start_link((0, me, {}))
    pc = await Doubler.start_link([(p, {"max_demand": 7})])
    assert (await pyotp.receive(lambda m: m[0] == "demand")) == ("demand", 7)
    stats = await GenStage.stats(pc)
    assert stats["queued_batches"] == 1 and stats["downstream_demand"] == 0
    await Forwarder.start_link((me, [(pc, {"max_demand": 3, "min_demand": 0})]))
    assert await collect(3) == [0, 2, 4]


async def test_demand_dispatcher_shares_between_consumers():
    me = pyotp.self()
    p = await Counter.start_link((0, None, {"dispatcher": DemandDispatcher}))
    a = await Forwarder.start_link((me, [(p, {"max_demand": 10, "min_demand": 5})]))
    b = await Forwarder.start_link((me, [(p, {"max_demand": 10, "min_demand": 5})]))
    got = {a: [], b: []}
    while min(len(v) for v in got.values()) < 50:
        m = await pyotp.receive(lambda m: m[0] == "events")
        got[m[1]] += m[2]
    seen = got[a] + got[b]
    assert len(seen) == len(set(seen))           # no event delivered twice
    assert set(got[a]).isdisjoint(got[b])


async def test_broadcast_dispatcher_with_selector():
    me = pyotp.self()
    p = await Silent.start_link({"dispatcher": BroadcastDispatcher})
    a = await Forwarder.start_link((me, [(p, {"max_demand": 10})]))
    b = await Forwarder.start_link((me, [(p, {"max_demand": 10, "selector": lambda e: e % 2 == 0})]))
    await GenStage.call(p, "sync")     # both subscriptions and asks are in
    GenStage.cast(p, ("emit", list(range(6))))
    assert await collect(6, a) == [0, 1, 2, 3, 4, 5]
    assert await collect(3, b) == [0, 2, 4]


async def test_broadcast_sends_only_what_the_slowest_asked():
    me = pyotp.self()
    p = await Silent.start_link({"dispatcher": BroadcastDispatcher})

    class AsksThreeOnce(Forwarder):
        def handle_subscribe(self, kind, opts, from_, st):
            GenStage.ask(from_, 3)
            return ("manual", st)

    b = await AsksThreeOnce.start_link((me, [p]))
    a = await Forwarder.start_link((me, [(p, {"max_demand": 10})]))
    await GenStage.call(p, "sync")
    GenStage.cast(p, ("emit", list(range(5))))
    assert await collect(3, a) == [0, 1, 2]
    assert await collect(3, b) == [0, 1, 2]
    assert await GenStage.estimate_buffered_count(p) == 2


async def test_partition_dispatcher_routes_by_hash():
    me = pyotp.self()
    p = await Silent.start_link({"dispatcher": (PartitionDispatcher, {"partitions": 2,
                                                                      "hash": lambda e: (e, e % 2)})})
    even = await Forwarder.start_link((me, [(p, {"max_demand": 10, "partition": 0})]))
    odd = await Forwarder.start_link((me, [(p, {"max_demand": 10, "partition": 1})]))
    await GenStage.call(p, "sync")
    GenStage.cast(p, ("emit", list(range(10))))
    assert await collect(5, even) == [0, 2, 4, 6, 8]
    assert await collect(5, odd) == [1, 3, 5, 7, 9]


async def test_partition_dispatcher_named_partitions_and_discard():
    me = pyotp.self()
    disp = (PartitionDispatcher, {"partitions": ["a", "b"],
                                  "hash": lambda e: None if e < 0 else (e, "a" if e < 5 else "b")})
    p = await Silent.start_link({"dispatcher": disp})
    a = await Forwarder.start_link((me, [(p, {"partition": "a"})]))
    await GenStage.call(p, "sync")
    GenStage.cast(p, ("emit", [-1, 1, 7, 2]))
    assert await collect(2, a) == [1, 2]
    # "b" has no consumer yet: its event waits in the partition's queue
    b = await Forwarder.start_link((me, [(p, {"partition": "b"})]))
    assert await collect(1, b) == [7]


@pytest.mark.parametrize("mode,reason,survives", [
    ("permanent", "normal", False), ("permanent", "boom", False),
    ("transient", "normal", True), ("transient", "boom", False),
    ("temporary", "normal", True), ("temporary", "boom", True),
])
async def test_cancel_modes(mode, reason, survives):
    me = pyotp.self()
    pyotp.process_flag("trap_exit", True)
    p = await Silent.start({})
    c = await Forwarder.start((me, [(p, {"cancel": mode})]))
    cref = pyotp.monitor(c)
    pref = pyotp.monitor(p)
    GenStage.cast(p, ("stop", reason))
    await pyotp.receive(is_down(pref))
    got = await pyotp.receive(lambda m: m[0] == "cancelled")
    assert got[2] == ("down", reason)
    if survives:
        assert await GenStage.call(c, "alive?") == "alive"
    else:
        assert (await pyotp.receive(is_down(cref)))[4] == reason


async def test_consumer_cancel_reaches_producer_and_stops_permanent_consumer():
    me = pyotp.self()
    p = await Silent.start({})
    ref_holder = []

    class Canceller(GenStage):
        def init(self, _):
            return ("consumer", None, {"subscribe_to": [p]})

        def handle_subscribe(self, kind, opts, from_, st):
            ref_holder.append(from_)
            return ("automatic", st)

        def handle_events(self, events, from_, st):
            return ("noreply", [], st)

    c = await Canceller.start(None)
    ref = pyotp.monitor(c)
    GenStage.cancel(ref_holder[0], "bye", stage=c)
    assert (await pyotp.receive(is_down(ref)))[4] == "bye"
    assert me is not None


@pytest.mark.parametrize("keep,expected", [("last", [5, 6, 7, 8, 9]), ("first", [0, 1, 2, 3, 4])])
async def test_buffer_overflow_drops_and_logs(caplog, keep, expected):
    me = pyotp.self()
    p = await Silent.start_link({"buffer_size": 5, "buffer_keep": keep})
    with caplog.at_level(logging.WARNING, logger="pyotp"):
        GenStage.cast(p, ("emit", list(range(10))))      # no consumer: everything is buffered
        assert await GenStage.estimate_buffered_count(p) == 5
    assert any("discarded 5 events" in r.getMessage() for r in caplog.records)
    assert (await GenStage.stats(p))["dropped"] == 5
    await Forwarder.start_link((me, [(p, {"max_demand": 10})]))
    assert await collect(5) == expected


async def test_buffered_events_go_before_new_ones():
    me = pyotp.self()
    p = await Counter.start_link((100, None, {}))
    GenStage.cast(p, ("emit", [1, 2, 3]))
    await Forwarder.start_link((me, [(p, {"max_demand": 5, "min_demand": 0})]))
    assert await collect(5) == [1, 2, 3, 100, 101]


async def test_manual_demand():
    me = pyotp.self()
    p = await Counter.start_link((0, me, {}))

    class Manual(GenStage):
        def init(self, _):
            return ("consumer", None, {"subscribe_to": [p]})

        def handle_subscribe(self, kind, opts, from_, st):
            GenStage.ask(from_, 2)
            return ("manual", from_)

        def handle_events(self, events, from_, st):
            pyotp.send(me, ("events", pyotp.self(), events))
            return ("noreply", [], st)

        def handle_cast(self, n, from_):
            GenStage.ask(from_, n)
            return ("noreply", [], from_)

    c = await Manual.start_link(None)
    assert await collect(2) == [0, 1]
    assert (await pyotp.receive(lambda m: m[0] == "demand")) == ("demand", 2)
    GenStage.cast(c, 3)
    assert await collect(3) == [2, 3, 4]
    assert (await pyotp.receive(lambda m: m[0] == "demand")) == ("demand", 3)


async def test_accumulated_demand_is_handled_when_forwarded():
    me = pyotp.self()
    p = await Counter.start_link((0, me, {"demand": "accumulate"}))
    await Forwarder.start_link((me, [(p, {"max_demand": 4, "min_demand": 0})]))
    assert await GenStage.demand(p) == "accumulate"
    assert (await GenStage.stats(p))["consumers"] == 1
    assert await GenStage.demand(p, "forward") == "ok"
    assert (await pyotp.receive(lambda m: m[0] == "demand")) == ("demand", 4)
    assert await collect(4) == [0, 1, 2, 3]


async def test_events_from_handle_call():
    me = pyotp.self()
    p = await Silent.start_link({})
    await Forwarder.start_link((me, [p]))
    await GenStage.call(p, "sync")
    assert await GenStage.call(p, ("ping",)) == "ok"

    p2 = await Counter.start_link((0, None, {"demand": "accumulate"}))
    await Forwarder.start_link((me, [(p2, {"max_demand": 2, "min_demand": 0})]))
    assert await GenStage.call(p2, ("emit", ["x", "y"])) == "ok"
    assert await collect(2) == ["x", "y"]


async def test_sync_and_async_subscribe():
    me = pyotp.self()
    p = await Counter.start_link((0, None, {}))
    c = await Forwarder.start_link((me, []))
    ref = await GenStage.sync_subscribe(c, to=p, max_demand=3, min_demand=0)
    assert isinstance(ref, pyotp.Reference)
    assert (await collect(3))[:3] == [0, 1, 2]
    p2 = await Counter.start_link((1000, None, {}))
    c2 = await Forwarder.start_link((me, []))
    GenStage.async_subscribe(c2, to=p2, max_demand=2, min_demand=0)
    assert (await collect(2, c2))[:2] == [1000, 1001]


async def test_subscribe_to_missing_producer_stops_permanent_consumer():
    pyotp.process_flag("trap_exit", True)
    c = await Forwarder.start((pyotp.self(), ["no_such_stage"]))
    ref = pyotp.monitor(c)
    assert (await pyotp.receive(is_down(ref)))[4] == "noproc"


async def test_stream_and_from_enumerable():
    p = await GenStage.from_enumerable(range(2500))
    assert [e async for e in GenStage.stream([(p, {"max_demand": 100})])] == list(range(2500))

    async def agen():
        for i in range(7):
            yield i * i
    p = await GenStage.from_enumerable(agen())
    assert [e async for e in GenStage.stream([p])] == [i * i for i in range(7)]

    p = await Counter.start_link((0, None, {}))
    assert [e async for e in GenStage.stream([p], take=3)] == [0, 1, 2]


async def test_stream_raises_on_abnormal_producer_exit():
    p = await Silent.start({})
    got = []
    GenStage.cast(p, ("emit", [1, 2]))
    with pytest.raises(pyotp.Exit) as e:
        async for x in GenStage.stream([p]):
            got.append(x)
            if len(got) == 2:
                GenStage.cast(p, ("stop", "boom"))
    assert e.value.reason == "boom" and got == [1, 2]


class Worker(GenStage):
    pass


async def test_consumer_supervisor_runs_a_child_per_event_bounded_by_demand():
    me = pyotp.self()
    p = await GenStage.from_enumerable(range(20))

    async def work(event):
        pyotp.send(me, ("started", pyotp.self(), event))
        await pyotp.receive(lambda m: m == "go")
        pyotp.send(me, ("done", event))

    def start(event):
        return pyotp.spawn_link(work, event)

    sup = await ConsumerSupervisor.start_link({"id": "w", "start": (start, ())},
                                              subscribe_to=[(p, {"max_demand": 4, "min_demand": 2})])
    started = [await pyotp.receive(lambda m: m[0] == "started") for _ in range(4)]
    assert sorted(e for _, _, e in started) == [0, 1, 2, 3]
    # at most max_demand children at once: no fifth child until some finish
    assert (await ConsumerSupervisor.count_children(sup))["active"] == 4
    done = set()
    pending = {pid for _, pid, _ in started}
    while len(done) < 20:
        for pid in pending:
            pyotp.send(pid, "go")
        pending = set()
        m = await pyotp.receive(lambda m: m[0] in ("started", "done"))
        if m[0] == "started":
            pending.add(m[1])
        else:
            done.add(m[1])
        while True:
            try:
                m = await pyotp.receive(lambda m: m[0] == "started", timeout=0)
            except TimeoutError:
                break
            pending.add(m[1])
    assert done == set(range(20))


async def test_consumer_supervisor_rejects_permanent_children():
    pyotp.process_flag("trap_exit", True)
    with pytest.raises(StartError) as e:
        await ConsumerSupervisor.start_link({"id": "w", "start": (pyotp.spawn_link, (print,)),
                                             "restart": "permanent"}, subscribe_to=[])
    assert "temporary or transient" in str(e.value.reason)


# -- bad input -------------------------------------------------------------------------

async def test_negative_demand_is_refused():
    with pytest.raises(GenStageError, match="demand must be an int > 0"):
        GenStage.ask((pyotp.self(), pyotp.make_ref()), -1)
    p = await Counter.start_link((0, None, {}))
    c = await Forwarder.start_link((pyotp.self(), []))
    with pytest.raises(GenStageError, match="max_demand"):
        await GenStage.sync_subscribe(c, to=p, max_demand=-5)
    with pytest.raises(GenStageError, match="min_demand"):
        await GenStage.sync_subscribe(c, to=p, max_demand=5, min_demand=5)
    with pytest.raises(GenStageError, match="unknown subscription option"):
        await GenStage.sync_subscribe(c, to=p, maxdemand=5)


async def test_producer_cancels_a_subscription_that_asks_negative_demand(caplog):
    me = pyotp.self()
    p = await Silent.start_link({})
    ref = pyotp.make_ref()
    with caplog.at_level(logging.ERROR, logger="pyotp"):
        pyotp.send(p, (pyotp.Atom("$gen_producer"), (me, ref), (pyotp.Atom("subscribe"), None, [])))
        pyotp.send(p, (pyotp.Atom("$gen_producer"), (me, ref), (pyotp.Atom("ask"), -3)))
        m = await pyotp.receive(lambda m: m[0] == "$gen_consumer")
    assert m[2] == ("cancel", ("bad_demand", -3))
    assert any("invalid demand -3" in r.getMessage() for r in caplog.records)


async def test_events_returned_by_a_consumer_are_an_error(caplog):
    me = pyotp.self()
    p = await Counter.start_link((0, None, {}))

    class Bad(GenStage):
        def init(self, _):
            return ("consumer", None, {"subscribe_to": [(p, {"max_demand": 2, "min_demand": 0})]})

        def handle_events(self, events, from_, st):
            pyotp.send(me, "handled")
            return ("noreply", events, st)

    with caplog.at_level(logging.ERROR, logger="pyotp"):
        await Bad.start_link(None)
        await pyotp.receive(lambda m: m == "handled")
        await pyotp.receive(lambda m: m == "handled")
    assert any("cannot dispatch events" in r.getMessage() for r in caplog.records)


async def test_unknown_dispatcher_and_stage_options():
    pyotp.process_flag("trap_exit", True)
    with pytest.raises(GenStageError, match="unknown PartitionDispatcher option 'bogus'"):
        PartitionDispatcher(partitions=2, bogus=1)
    with pytest.raises(StartError) as e:
        await Silent.start_link({"dispatcher": (BroadcastDispatcher, {"selector": 1})})
    assert e.value.reason[0] == "bad_opts" and "unknown BroadcastDispatcher option" in e.value.reason[1]
    with pytest.raises(StartError) as e:
        await Silent.start_link({"buffer_size": -1})
    assert "buffer_size" in e.value.reason[1]
    with pytest.raises(StartError) as e:
        await Silent.start_link({"subscribe_to": []})
    assert "unknown option 'subscribe_to' for a producer" in e.value.reason[1]
    with pytest.raises(GenStageError, match="partitions"):
        PartitionDispatcher(partitions=0)


async def test_partition_subscription_errors_cancel_the_consumer():
    me = pyotp.self()
    p = await Silent.start_link({"dispatcher": (PartitionDispatcher, {"partitions": 2})})
    await Forwarder.start((me, [(p, {"partition": 7, "cancel": "temporary"})]))
    m = await pyotp.receive(lambda m: m[0] == "cancelled")
    assert m[2][0] == "cancel" and "unknown partition 7" in m[2][1][1]


async def test_bad_callback_return_stops_the_stage():
    pyotp.process_flag("trap_exit", True)

    class Wrong(GenStage):
        def init(self, _):
            return ("producer", None)

        def handle_demand(self, d, st):
            return ("noreply", "not a list", st)

    p = await Wrong.start_link(None)
    ref = pyotp.monitor(p)
    await Forwarder.start((pyotp.self(), [(p, {"cancel": "temporary"})]))
    reason = (await pyotp.receive(is_down(ref)))[4]
    assert reason[0] == "bad_return_value"


class Busy(GenStage):
    """A consumer whose every batch costs real CPU time (about a millisecond)."""

    def init(self, arg):
        p, self.n, self.to = arg
        return ("consumer", 0, {"subscribe_to": [(p, {"max_demand": 10, "min_demand": 5})]})

    def handle_events(self, events, from_, seen):
        sum(range(20_000))
        seen += len(events)
        if seen >= self.n:
            pyotp.send(self.to, "done")
        return ("noreply", [], seen)


async def test_a_long_batch_heavy_run_does_not_starve_timers():
    # A few thousand heavy messages fit in one scheduler turn's message count: the turn's
    # time limit is what lets the loop fire a timer in the middle of the run.
    p = await Counter.start_link((0, None, {}))
    await Busy.start_link((p, 3000, pyotp.self()))
    pyotp.send_after(pyotp.self(), "timer", 0.005)
    first = await pyotp.receive(lambda m: m in ("timer", "done"))
    assert first == "timer"
    await pyotp.receive(lambda m: m == "done")


class Kilobytes(GenStage):
    """Emits 1 KiB payloads, each made only when asked for."""

    def init(self, _):
        return ("producer", 0)

    def handle_demand(self, demand, i):
        return ("noreply", [bytes([j % 256]) * 1024 for j in range(i, i + demand)], i + demand)


class Pass(GenStage):
    def init(self, p):
        return ("producer_consumer", None, {"subscribe_to": [(p, {"max_demand": 50})]})

    def handle_events(self, events, from_, st):
        return ("noreply", events, st)


class CountSink(GenStage):
    def init(self, arg):
        p, self.n, self.to = arg
        return ("consumer", 0, {"subscribe_to": [(p, {"max_demand": 50})]})

    def handle_events(self, events, from_, seen):
        seen += len(events)
        if seen >= self.n:
            pyotp.send(self.to, "done")
        return ("noreply", [], seen)


async def _plain_sink(n, to):
    for _ in range(n):
        await pyotp.receive()
    pyotp.send(to, "done")


async def test_memory_is_bounded_by_demand_not_by_the_input():
    import tracemalloc
    n = 5000                        # 5 MiB of events through the pipeline
    bound = 3 * 50 * (1024 + 64)    # stages x max_demand x an event
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        p = await Kilobytes.start_link(n)
        pc = await Pass.start_link(p)
        await CountSink.start_link((pc, n, pyotp.self()))
        await pyotp.receive(lambda m: m == "done")
        staged = tracemalloc.get_traced_memory()[1] - base
        # the same events as plain messages, no demand: the sender runs ahead of the
        # receiver (here, all of them are sent before it runs) and they wait in its mailbox
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        sink = pyotp.spawn(_plain_sink, n, pyotp.self())
        for j in range(n):
            pyotp.send(sink, bytes([j % 256]) * 1024)
        await pyotp.receive(lambda m: m == "done")
        plain = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert staged < bound + 256 * 1024, (staged, bound)
    assert plain > n * 1024, plain


def test_blocking_stream_from_a_plain_thread():
    node = pyotp.Runtime.start_thread()
    try:
        p = node.call_in_loop(lambda: GenStage.from_enumerable(range(2500), link=False))
        assert list(GenStage.blocking_stream(node, [(p, {"max_demand": 100})])) == list(range(2500))
        c = node.call_in_loop(Counter.start, (0, None, {}))
        assert list(GenStage.blocking_stream(node, [c], take=5)) == [0, 1, 2, 3, 4]
        s = node.call_in_loop(Silent.start, {})
        it = GenStage.blocking_stream(node, [s], timeout=10)
        node.cast(s, ("emit", [7]))
        assert next(it) == 7
        node.cast(s, ("stop", "boom"))
        with pytest.raises(pyotp.Exit) as e:
            next(it)
        assert e.value.reason == "boom"
        with pytest.raises(GenStageError, match="take"):
            GenStage.blocking_stream(node, [c], take=-1)
    finally:
        node.stop()
