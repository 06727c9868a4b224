"""pytest-benchmark tests: one group per workload, pyotp and every installed peer side by
side (``pytest bench --benchmark-group-by=group``). The workloads are in bench/workloads.py;
each round checks its own result, so a lost message fails the test."""
from __future__ import annotations

from typing import Any, List

import pytest

from bench import workloads as W
from bench.conftest import run_benchmark


def _impls(workload: str) -> List[str]:
    return [i for w, i in W.cases() if w == workload]


@pytest.mark.parametrize("impl", _impls("cast"))
def test_cast(benchmark: Any, impl: str, mode: str) -> None:
    run_benchmark(benchmark, "cast", impl, mode)


@pytest.mark.parametrize("impl", _impls("call"))
def test_call(benchmark: Any, impl: str, mode: str) -> None:
    run_benchmark(benchmark, "call", impl, mode)


@pytest.mark.parametrize("impl", _impls("thread_call"))
def test_thread_call(benchmark: Any, impl: str, mode: str) -> None:
    run_benchmark(benchmark, "thread_call", impl, mode)


@pytest.mark.parametrize("impl", _impls("spawn"))
def test_spawn(benchmark: Any, impl: str, mode: str) -> None:
    run_benchmark(benchmark, "spawn", impl, mode)


@pytest.mark.parametrize("impl", _impls("ring_receive"))
def test_ring_receive(benchmark: Any, impl: str, mode: str) -> None:
    run_benchmark(benchmark, "ring_receive", impl, mode)


@pytest.mark.parametrize("impl", _impls("ring_genserver"))
def test_ring_genserver(benchmark: Any, impl: str, mode: str) -> None:
    run_benchmark(benchmark, "ring_genserver", impl, mode)


@pytest.mark.parametrize("impl", _impls("timers"))
def test_timers(benchmark: Any, impl: str, mode: str) -> None:
    run_benchmark(benchmark, "timers", impl, mode)


@pytest.mark.parametrize("impl", _impls("memory"))
def test_memory(benchmark: Any, impl: str, mode: str) -> None:
    run_benchmark(benchmark, "memory", impl, mode)
