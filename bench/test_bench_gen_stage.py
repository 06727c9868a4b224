"""GenStage: throughput through three stages, and peak memory behind a slow consumer.

    pytest bench/test_bench_gen_stage.py --benchmark-group-by=group [--bench-quick]

Group ``gen_stage-3-stages``: N ints through producer -> producer_consumer (doubles
them) -> consumer (sums them; the sum is checked every round), by:

* ``pyotp-gen_stage``: GenStage, ``max_demand`` 1000 on both subscriptions (events move in
  batches of up to 1000, one message per batch);
* ``pyotp-messages``: three plain pyotp processes sending the same batches of 1000 with
  ``pyotp.send``, no demand at all (no back-pressure: what GenStage costs on top);
* ``pyotp-messages-1``: the same with one message per event;
* ``asyncio-queue``: three asyncio tasks joined by bounded ``asyncio.Queue(1000)``s, one
  item per put/get (the usual asyncio pipeline).

Group ``gen_stage-slow-consumer-memory``: the same topologies when the consumer is 10x
slower than the producer (per event, the producer runs ``work(P)`` and the consumer
``work(10 * P)``, the same function: the consumer's work per event costs ten times the
producer's); the figure is the peak Python heap growth (tracemalloc) during the run, less
the same run's peak with a single event (the node and its processes):
``extra_info["peak_event_bytes"]``, beside the bound GenStage promises,
``bound_bytes`` = max_demand x stages x bytes per event, and the input's size,
``input_bytes``. The rate is in ``extra_info["rate"]`` (events/s). No speed is asserted.
"""
from __future__ import annotations

import asyncio
import sys
import tracemalloc
from itertools import repeat
from typing import Any, Callable, List

import pytest

from bench import workloads as W

import pyotp
from pyotp import GenStage

SIZES = {"quick": 200_000, "full": 2_000_000}
MEM_SIZES = {"quick": 20_000, "full": 100_000}
BATCH = 1000
P_WORK = 50            # the producer's work per event in the memory runs; the consumer's: 10x


def work(k: int) -> None:
    # CPU time without allocating (tracemalloc watches the memory runs)
    for _ in repeat(None, k):
        pass


# ---------------------------------------------------------------------------------------
# GenStage

class Source(GenStage):
    def init(self, arg: Any) -> Any:
        self.n, self.cost = arg
        return ("producer", 0)

    def handle_demand(self, demand: int, i: int) -> Any:
        end = min(i + demand, self.n)
        if self.cost:
            for _ in range(end - i):
                work(self.cost)
        return ("noreply", list(range(i, end)), end)


class Double(GenStage):
    def init(self, p: Any) -> Any:
        return ("producer_consumer", None, {"subscribe_to": [(p, {"max_demand": BATCH})]})

    def handle_events(self, ev: List[int], f: Any, s: Any) -> Any:
        return ("noreply", [x * 2 for x in ev], s)


class Sink(GenStage):
    def init(self, arg: Any) -> Any:
        p, self.n, self.to, self.cost = arg
        self.seen = 0
        return ("consumer", 0, {"subscribe_to": [(p, {"max_demand": BATCH})]})

    def handle_events(self, ev: List[int], f: Any, total: int) -> Any:
        if self.cost:
            for _ in ev:
                work(self.cost)
        total += sum(ev)
        self.seen += len(ev)
        if self.seen >= self.n:
            pyotp.send(self.to, ("done", total))
        return ("noreply", [], total)


async def _gen_stage_main(n: int, pcost: int, ccost: int) -> int:
    p = await Source.start((n, pcost))
    pc = await Double.start(p)
    c = await Sink.start((pc, n, pyotp.self(), ccost))
    total = (await pyotp.receive(lambda m: type(m) is tuple and m[0] == "done"))[1]
    for pid in (c, pc, p):
        pyotp.exit(pid, "kill")
    return total


# ---------------------------------------------------------------------------------------
# Plain pyotp messages, no back-pressure

async def _msg_sink(n: int, to: Any, ccost: int) -> None:
    seen = total = 0
    while seen < n:
        ev = await pyotp.receive()
        if type(ev) is list:
            if ccost:
                for _ in ev:
                    work(ccost)
            total += sum(ev)
            seen += len(ev)
        else:
            if ccost:
                work(ccost)
            total += ev
            seen += 1
    pyotp.send(to, ("done", total))


async def _msg_double(to: Any, n: int) -> None:
    seen = 0
    while seen < n:
        ev = await pyotp.receive()
        if type(ev) is list:
            pyotp.send(to, [x * 2 for x in ev])
            seen += len(ev)
        else:
            pyotp.send(to, ev * 2)
            seen += 1


async def _messages_main(n: int, batch: int, pcost: int, ccost: int) -> int:
    me = pyotp.self()
    sink = pyotp.spawn(_msg_sink, n, me, ccost)
    mid = pyotp.spawn(_msg_double, sink, n)
    send = pyotp.send
    for i in range(0, n, batch):
        end = min(i + batch, n)
        if pcost:
            for _ in range(end - i):
                work(pcost)
        if batch == 1:
            send(mid, i)
        else:
            send(mid, list(range(i, end)))
    return (await pyotp.receive(lambda m: type(m) is tuple and m[0] == "done"))[1]


# ---------------------------------------------------------------------------------------
# asyncio bounded queues

async def _asyncio_main(n: int, pcost: int, ccost: int) -> int:
    q1: asyncio.Queue = asyncio.Queue(BATCH)
    q2: asyncio.Queue = asyncio.Queue(BATCH)

    async def prod() -> None:
        for i in range(n):
            if pcost:
                work(pcost)
            await q1.put(i)

    async def mid() -> None:
        for _ in range(n):
            await q2.put((await q1.get()) * 2)

    async def sink() -> int:
        total = 0
        for _ in range(n):
            total += await q2.get()
            if ccost:
                work(ccost)
        return total
    return (await asyncio.gather(prod(), mid(), sink()))[2]


def run_impl(impl: str, n: int, pcost: int = 0, ccost: int = 0) -> int:
    if impl == "pyotp-gen_stage":
        return pyotp.run(_gen_stage_main, n, pcost, ccost)
    if impl == "pyotp-messages":
        return pyotp.run(_messages_main, n, BATCH, pcost, ccost)
    if impl == "pyotp-messages-1":
        return pyotp.run(_messages_main, n, 1, pcost, ccost)
    if impl == "asyncio-queue":
        return asyncio.run(_asyncio_main(n, pcost, ccost))
    raise ValueError(impl)


IMPLS = ["pyotp-gen_stage", "pyotp-messages", "pyotp-messages-1", "asyncio-queue"]


def _round(impl: str, n: int, pcost: int = 0, ccost: int = 0) -> Callable[[], None]:
    def one() -> None:
        total = run_impl(impl, n, pcost, ccost)
        W.check(total == n * (n - 1), "%s: the sink summed %r, expected %r" % (impl, total, n * (n - 1)))
    return one


def _record(benchmark: Any, group: str, impl: str, mode: str, n: int, extra: Any = None) -> None:
    info = {"impl": impl, "mode": mode, "ops_per_round": n, "unit": "events/s"}
    info.update(extra or {})
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        info["rate"] = n / stats.stats.median
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("impl", IMPLS)
def test_three_stages(benchmark: Any, mode: str, impl: str) -> None:
    n = SIZES[mode] if impl in ("pyotp-gen_stage", "pyotp-messages") else SIZES[mode] // 5
    m = W.MODES[mode]
    benchmark.group = "gen_stage-3-stages"
    benchmark.pedantic(_round(impl, n), rounds=m.rounds, warmup_rounds=m.warmup, iterations=1)
    _record(benchmark, benchmark.group, impl, mode, n)


def event_bytes() -> int:
    """What one event costs on the heap in these runs (an int in a list slot)."""
    return sys.getsizeof(123_456) + 8


def peak_bytes(impl: str, n: int) -> int:
    """Peak Python heap growth during one slow-consumer run of n events."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        _round(impl, n, P_WORK, 10 * P_WORK)()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("impl", IMPLS)
def test_slow_consumer_peak_memory(benchmark: Any, mode: str, impl: str) -> None:
    n = MEM_SIZES[mode]
    peaks: List[int] = []
    benchmark.group = "gen_stage-slow-consumer-memory"
    # a warm-up round first: the first run of a node in a process allocates once for good
    benchmark.pedantic(lambda: peaks.append(peak_bytes(impl, n)), rounds=2, warmup_rounds=1, iterations=1)
    peak = min(peaks[1:])
    # the same run with a single event: the node, its processes and the loop, without data
    empty = min(peak_bytes(impl, 1) for _ in range(2))
    _record(benchmark, benchmark.group, impl, mode, n, {
        "peak_bytes": peak, "peak_bytes_one_event": empty,
        "peak_event_bytes": peak - empty, "events": n,
        "bound_bytes": BATCH * 3 * event_bytes(),   # max_demand x stages x bytes per event
        "input_bytes": n * event_bytes()})
