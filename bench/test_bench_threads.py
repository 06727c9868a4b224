"""Blocking calls from several OS threads into one node (issue 15): the thread_call
workload of bench/workloads.py with 1 and with 4 calling threads, in the same run.

    pytest bench/test_bench_threads.py --benchmark-group-by=group [--bench-quick]

Group ``thread-call-threads`` (calls/s, aggregate over the threads): ``pyotp/1-thread``
and ``pyotp/4-threads``. Requests from other threads go through the scheduler's lock-free
thread queue with coalesced wake-ups (src/core/scheduler.pyx), so several threads share
one loop wake-up per burst; the 4-thread figure shows what that buys.
"""
from __future__ import annotations

from typing import Any

import pytest

from bench import workloads as W
from bench.conftest import EXTRA_RESULTS

SIZES = {"quick": 5_000, "full": 20_000}


@pytest.mark.parametrize("threads", [1, 4])
def test_thread_call_threads(benchmark: Any, threads: int, mode: str) -> None:
    n = SIZES[mode]
    b = W.make("thread_call", "pyotp", n)
    b.threads = threads
    b.setup()
    try:
        benchmark.pedantic(b.run, setup=b.before_round, rounds=W.MODES[mode].rounds,
                           warmup_rounds=1, iterations=1)
    finally:
        b.teardown()
    info = {"group": "thread-call-threads", "impl": "pyotp/%d-thread%s" % (threads, "s" if threads > 1 else ""),
            "mode": mode, "rate": n / benchmark.stats.stats.median, "unit": "calls/s"}
    benchmark.group = info["group"]
    benchmark.extra_info.update(info)
    EXTRA_RESULTS.append(info)
