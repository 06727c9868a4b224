"""Registry lookup and dispatch, PubSub fan-out to 10k subscribers, beside same-run
baselines.

    pytest bench/test_bench_registry_pubsub.py --benchmark-group-by=group [--bench-quick]

Groups:

* ``registry-lookup``: ``Registry.lookup`` of random keys among 10k unique keys, and the
  ``via`` hook ``Registry.whereis_name``, beside a plain dict lookup giving the same
  ``[(pid, value)]`` shape (the baseline). Rate: lookups/s.
* ``registry-dispatch``: ``Registry.dispatch`` on a duplicate key with 100 live
  entries (the callback only counts them), beside a dict of lists handed to the same
  callback. Rate: dispatches/s.
* ``pubsub-broadcast-10k``: ``PubSub.broadcast`` to 10,000 subscriber processes, beside a
  hand-written loop of ``pyotp.send`` to the same 10,000 pids, and an asyncio equivalent
  (10,000 tasks, each draining its own ``asyncio.Queue``). Each round broadcasts 10
  messages and waits until every subscriber has handled all of them; each subscriber
  counts what it got and the round checks every count. Rate: deliveries/s.

Reads (lookup, dispatch) need no process and no message: the benchmark thread calls them
directly, as any process on the node would. No speed is asserted.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any, Callable, Dict, List

import pytest

from bench import workloads as W

import pyotp
from pyotp import GenServer
from pyotp.pubsub import PubSub
from pyotp.registry import Registry

KEYS = 10_000
DISPATCH_ENTRIES = 100
SUBSCRIBERS = 10_000
MESSAGES = 10
SIZES = {"quick": {"lookup": 100_000, "dispatch": 10_000},
         "full": {"lookup": 500_000, "dispatch": 50_000}}


def _run(benchmark: Any, group: str, impl: str, mode: str, round_fn: Callable[[], None],
         ops: int, unit: str) -> None:
    m = W.MODES[mode]
    benchmark.group = group
    benchmark.pedantic(round_fn, rounds=m.rounds, warmup_rounds=m.warmup, iterations=1)
    info = {"impl": impl, "mode": mode, "ops_per_round": ops, "unit": unit}
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        info["rate"] = ops / stats.stats.median
    benchmark.extra_info.update(info)


async def _hold(parent: Any, registry: str, keys: List[Any]) -> None:
    for k in keys:
        Registry.register(registry, k, ("value", k))
    pyotp.send(parent, "registered")
    await pyotp.receive()


# ---------------------------------------------------------------------------------------
# registry-lookup

@pytest.fixture(scope="module")
def node() -> Any:
    """One pyotp node for the module (a node per OS process at a time)."""
    host = W.PyotpHost("default")
    yield host
    host.close()


@pytest.fixture(scope="module")
def lookup_node(node: Any) -> Any:
    async def start() -> Any:
        await Registry.start(keys="unique", name="BenchU")
        pyotp.spawn(_hold, pyotp.self(), "BenchU", [("key", i) for i in range(KEYS)])
        await pyotp.receive()
        return {("key", i): Registry.lookup("BenchU", ("key", i))[0] for i in range(KEYS)}
    return node, node.run(start)


def _probe(n: int) -> List[Any]:
    rng = random.Random(1)
    return [("key", rng.randrange(KEYS)) for _ in range(n)]


@pytest.mark.parametrize("impl", ["pyotp-Registry.lookup", "pyotp-whereis_name", "baseline-dict"])
def test_registry_lookup(benchmark: Any, mode: str, lookup_node: Any, impl: str) -> None:
    host, table = lookup_node
    n = SIZES[mode]["lookup"]
    probe = _probe(n)
    if impl == "pyotp-Registry.lookup":
        def round_() -> None:
            lookup = Registry.lookup
            hits = 0
            for k in probe:
                if lookup("BenchU", k):
                    hits += 1
            W.check(hits == n, "lookup: %d of %d found" % (hits, n))
    elif impl == "pyotp-whereis_name":
        names = [("BenchU", k) for k in probe]

        def round_() -> None:
            whereis = Registry.whereis_name
            hits = 0
            for name in names:
                if whereis(name) is not None:
                    hits += 1
            W.check(hits == n, "whereis_name: %d of %d found" % (hits, n))
    else:
        d = dict(table)

        def round_() -> None:
            get = d.get
            hits = 0
            for k in probe:
                e = get(k)
                if [e] if e is not None else []:
                    hits += 1
            W.check(hits == n, "dict: %d of %d found" % (hits, n))
    _run(benchmark, "registry-lookup", impl, mode, round_, n, "lookups/s")


# ---------------------------------------------------------------------------------------
# registry-dispatch

@pytest.fixture(scope="module")
def dispatch_node(node: Any) -> Any:
    async def start() -> Any:
        await Registry.start(keys="duplicate", name="BenchD")
        for _ in range(DISPATCH_ENTRIES):
            pyotp.spawn(_hold, pyotp.self(), "BenchD", ["topic"])
        for _ in range(DISPATCH_ENTRIES):
            await pyotp.receive()
        return Registry.lookup("BenchD", "topic")
    return node, node.run(start)


@pytest.mark.parametrize("impl", ["pyotp-Registry.dispatch", "baseline-dict-of-lists"])
def test_registry_dispatch(benchmark: Any, mode: str, dispatch_node: Any, impl: str) -> None:
    host, entries = dispatch_node
    n = SIZES[mode]["dispatch"]
    seen = [0]

    def count(es: List[Any]) -> None:
        seen[0] += len(es)

    if impl == "pyotp-Registry.dispatch":
        def round_() -> None:
            seen[0] = 0
            dispatch = Registry.dispatch
            for _ in range(n):
                dispatch("BenchD", "topic", count)
            W.check(seen[0] == n * DISPATCH_ENTRIES, "dispatch saw %d" % seen[0])
    else:
        d: Dict[str, List[Any]] = {"topic": list(entries)}

        def round_() -> None:
            seen[0] = 0
            get = d.get
            for _ in range(n):
                es = get("topic")
                if es:
                    count(es)
            W.check(seen[0] == n * DISPATCH_ENTRIES, "dict saw %d" % seen[0])
    _run(benchmark, "registry-dispatch", impl, mode, round_, n, "dispatches/s")


# ---------------------------------------------------------------------------------------
# pubsub-broadcast-10k

class Tally:
    """Shared by the subscribers of one benchmark: per-subscriber counts and how many
    deliveries are still expected this round; the last delivery wakes the round."""

    def __init__(self, n: int) -> None:
        self.got = [0] * n
        self.left = 0
        self.done: Any = None       # a pid to send "done" to, or an asyncio future

    def arm(self, deliveries: int, done: Any) -> None:
        self.got = [0] * len(self.got)
        self.left = deliveries
        self.done = done

    def check(self, what: str) -> None:
        bad = [i for i, g in enumerate(self.got) if g != MESSAGES]
        W.check(not bad, "%s: %d subscribers missed messages (e.g. #%s got %s)"
                % (what, len(bad), bad[:1], [self.got[i] for i in bad[:1]]))


class Subscriber(GenServer):
    def init(self, arg: Any) -> Any:
        tally, i, pubsub = arg
        if pubsub is not None:
            PubSub.subscribe(pubsub, "fanout")
        return ("ok", (tally, i))

    def handle_info(self, msg: Any, st: Any) -> Any:
        tally, i = st
        tally.got[i] += 1
        tally.left -= 1
        if tally.left == 0:
            pyotp.send(tally.done, "done")
        return ("noreply", st)


@pytest.mark.parametrize("impl", ["pyotp-PubSub.broadcast", "pyotp-send-loop", "asyncio-queues"])
def test_pubsub_broadcast_10k(benchmark: Any, mode: str, node: Any, impl: str) -> None:
    deliveries = SUBSCRIBERS * MESSAGES
    tally = Tally(SUBSCRIBERS)
    if impl == "asyncio-queues":
        _asyncio_fanout(benchmark, mode, tally)
        return
    host = node
    use_pubsub = impl == "pyotp-PubSub.broadcast"
    ps = "BenchPS-" + impl

    async def start() -> List[Any]:
        await PubSub.start(name=ps)
        return [await Subscriber.start((tally, i, ps if use_pubsub else None))
                for i in range(SUBSCRIBERS)]

    async def stop(pids: List[Any]) -> None:
        for pid in pids:
            await GenServer.stop(pid)
        await PubSub.stop(ps)
    pids = host.run(start)
    try:
        if use_pubsub:
            W.check(len(Registry.lookup(ps, "fanout")) == SUBSCRIBERS, "subscribed")

        async def one_round() -> None:
            tally.arm(deliveries, pyotp.self())
            if use_pubsub:
                broadcast = PubSub.broadcast
                for m in range(MESSAGES):
                    broadcast(ps, "fanout", m)
            else:
                send = pyotp.send
                for m in range(MESSAGES):
                    for pid in pids:
                        send(pid, m)
            await pyotp.receive(lambda x: x == "done")

        def round_() -> None:
            host.run(one_round)
            tally.check(impl)
        _run(benchmark, "pubsub-broadcast-10k", impl, mode, round_, deliveries, "deliveries/s")
    finally:
        host.run(stop, pids)


def _asyncio_fanout(benchmark: Any, mode: str, tally: Tally) -> None:
    loop = W.new_loop("default")
    try:
        queues: List["asyncio.Queue[Any]"] = [asyncio.Queue() for _ in range(SUBSCRIBERS)]

        async def subscriber(i: int, q: "asyncio.Queue[Any]") -> None:
            while True:
                await q.get()
                tally.got[i] += 1
                tally.left -= 1
                if tally.left == 0:
                    tally.done.set_result(None)

        tasks = [loop.create_task(subscriber(i, q)) for i, q in enumerate(queues)]

        async def one_round() -> None:
            fut = loop.create_future()
            tally.arm(SUBSCRIBERS * MESSAGES, fut)
            for m in range(MESSAGES):
                for q in queues:
                    q.put_nowait(m)
            await fut

        def round_() -> None:
            loop.run_until_complete(one_round())
            tally.check("asyncio-queues")
        _run(benchmark, "pubsub-broadcast-10k", "asyncio-queues", mode, round_,
             SUBSCRIBERS * MESSAGES, "deliveries/s")
        for t in tasks:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    finally:
        loop.close()
