"""gen_event notify throughput with 1 and 10 handlers, beside same-run baselines.

    pytest bench/test_bench_gen_event.py --benchmark-group-by=group [--bench-quick]

Groups ``gen_event-notify-1`` and ``gen_event-notify-10``. Every implementation runs the
same handler objects (``CountHandler.handle_event``) on every event, so the difference is
the dispatch machinery:

* ``pyotp``: an ``EventManager`` process; a round notifies ``n`` events, then a
  ``sync_notify`` waits until every handler has handled them all.
* ``asyncio-queue`` (the baseline): a hand-written event manager, an ``asyncio.Queue``
  drained by a task that calls every handler per event, on the same kind of loop.
* ``direct-calls``: calling the handlers in a plain loop, no process or queue at all (the
  floor: what the handlers themselves cost).

Each round checks that every handler counted exactly the round's events. The rate
(events/s) is in each result's ``extra_info``. No speed is asserted.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable, List

import pytest

from bench import workloads as W

import pyotp
from pyotp.gen_event import EventHandler, EventManager

SIZES = {"quick": {1: 50_000, 10: 10_000}, "full": {1: 200_000, 10: 50_000}}


class CountHandler(EventHandler):
    def init(self, _: Any) -> Any:
        return ("ok", 0)

    def handle_event(self, event: Any, n: int) -> Any:
        return ("ok", n + 1)

    def handle_call(self, request: Any, n: int) -> Any:
        return ("ok", n, 0)            # "take": the count, reset


def _run(benchmark: Any, group: str, impl: str, mode: str, round_fn: Callable[[], None],
         ops: int) -> None:
    m = W.MODES[mode]
    benchmark.group = group
    benchmark.pedantic(round_fn, rounds=m.rounds, warmup_rounds=m.warmup, iterations=1)
    info = {"impl": impl, "mode": mode, "ops_per_round": ops, "unit": "events/s"}
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        info["rate"] = ops / stats.stats.median
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("handlers", [1, 10])
def test_pyotp(benchmark: Any, mode: str, handlers: int) -> None:
    n = SIZES[mode][handlers]
    host = W.PyotpHost("default")
    try:
        async def start() -> Any:
            mgr = await EventManager.start(name="bench_events")
            for i in range(handlers):
                await EventManager.add_handler(mgr, (CountHandler, i), None)
            return mgr
        mgr = host.run(start)

        async def one_round() -> List[int]:
            notify = EventManager.notify
            for i in range(n):
                notify(mgr, i)
            await EventManager.sync_notify(mgr, "last")
            return [await EventManager.call(mgr, (CountHandler, i), "take") for i in range(handlers)]

        def round_() -> None:
            counts = host.run(one_round)
            W.check(counts == [n + 1] * handlers, "gen_event: handlers counted %r" % (counts,))
        _run(benchmark, "gen_event-notify-%d" % handlers, "pyotp", mode, round_, n)
    finally:
        host.close()


@pytest.mark.parametrize("handlers", [1, 10])
def test_baseline_asyncio_queue(benchmark: Any, mode: str, handlers: int) -> None:
    n = SIZES[mode][handlers]
    loop = W.new_loop("default")
    try:
        hs = [CountHandler() for _ in range(handlers)]
        states = [0] * handlers
        q: "asyncio.Queue[Any]" = asyncio.Queue()

        async def manager() -> None:       # the hand-written event manager
            while True:
                ev = await q.get()
                if type(ev) is tuple and ev and ev[0] == "$sync":
                    ev[1].set_result(list(states))
                    for i in range(handlers):
                        states[i] = 0
                    continue
                for i in range(handlers):
                    r = hs[i].handle_event(ev, states[i])
                    states[i] = r[1]

        task = loop.create_task(manager())

        async def one_round() -> List[int]:
            put = q.put_nowait
            for i in range(n):
                put(i)
            fut = loop.create_future()
            put(("$sync", fut))
            return await fut

        def round_() -> None:
            counts = loop.run_until_complete(one_round())
            W.check(counts == [n] * handlers, "asyncio-queue: handlers counted %r" % (counts,))
        _run(benchmark, "gen_event-notify-%d" % handlers, "asyncio-queue", mode, round_, n)
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()


@pytest.mark.parametrize("handlers", [1, 10])
def test_baseline_direct_calls(benchmark: Any, mode: str, handlers: int) -> None:
    n = SIZES[mode][handlers]
    hs = [CountHandler() for _ in range(handlers)]

    def round_() -> None:
        states = [0] * handlers
        for ev in range(n):
            for i in range(handlers):
                states[i] = hs[i].handle_event(ev, states[i])[1]
        W.check(states == [n] * handlers, "direct: handlers counted %r" % (states,))
    _run(benchmark, "gen_event-notify-%d" % handlers, "direct-calls", mode, round_, n)
