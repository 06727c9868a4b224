"""GenStage throughput: producer -> producer_consumer -> consumer (max_demand 1000), beside
the same pipeline on asyncio bounded queues (one item per put/get).

    pytest bench/test_bench_gen_stage.py --benchmark-group-by=group [--bench-quick]

Group ``gen_stage-3-stages``; the rate (events/s) is in each result's ``extra_info``. No
speed is asserted. (Peak memory with a 10x slower consumer is not measured here yet.)
"""
from __future__ import annotations

import asyncio
from typing import Any

from bench import workloads as W

import pyotp
from pyotp import GenStage

SIZES = {"quick": 200_000, "full": 2_000_000}


class Source(GenStage):
    def init(self, n: int) -> Any:
        return ("producer", n)

    def handle_demand(self, demand: int, n: int) -> Any:
        return ("noreply", list(range(n, n + demand)), n + demand)


class Double(GenStage):
    def init(self, p: Any) -> Any:
        return ("producer_consumer", None, {"subscribe_to": [(p, {"max_demand": 1000})]})

    def handle_events(self, ev: Any, f: Any, s: Any) -> Any:
        return ("noreply", [x * 2 for x in ev], s)


class Sink(GenStage):
    def init(self, arg: Any) -> Any:
        p, self.n, self.to = arg
        return ("consumer", 0, {"subscribe_to": [(p, {"max_demand": 1000})]})

    def handle_events(self, ev: Any, f: Any, s: int) -> Any:
        s += len(ev)
        if s >= self.n:
            pyotp.send(self.to, "done")
            return ("stop", "normal", s)
        return ("noreply", [], s)


def _gen_stage(n: int) -> None:
    async def main() -> None:
        p = await Source.start(0)
        pc = await Double.start(p)
        await Sink.start((pc, n, pyotp.self()))
        await pyotp.receive(lambda m: m == "done")
        pyotp.exit(p, "kill")
    pyotp.run(main)


def _asyncio_queues(n: int) -> None:
    async def main() -> None:
        q1: asyncio.Queue = asyncio.Queue(1000)
        q2: asyncio.Queue = asyncio.Queue(1000)

        async def prod() -> None:
            for i in range(n):
                await q1.put(i)

        async def mid() -> None:
            for _ in range(n):
                await q2.put((await q1.get()) * 2)

        async def sink() -> None:
            for _ in range(n):
                await q2.get()
        await asyncio.gather(prod(), mid(), sink())
    asyncio.run(main())


def _run(benchmark: Any, impl: str, mode: str, fn: Any) -> None:
    n = SIZES[mode]
    m = W.MODES[mode]
    benchmark.group = "gen_stage-3-stages"
    benchmark.pedantic(lambda: fn(n), rounds=m.rounds, warmup_rounds=m.warmup, iterations=1)
    info = {"impl": impl, "mode": mode, "ops_per_round": n, "unit": "events/s"}
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        info["rate"] = n / stats.stats.median
    benchmark.extra_info.update(info)


def test_pyotp_gen_stage(benchmark: Any, mode: str) -> None:
    _run(benchmark, "pyotp", mode, _gen_stage)


def test_asyncio_queues(benchmark: Any, mode: str) -> None:
    _run(benchmark, "asyncio-queue", mode, _asyncio_queues)
