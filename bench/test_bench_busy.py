"""Calls on a busy or small machine: the waiting policy (src/core/wait_policy.pyx) against
BEAM under the same load, in the same run.

    pytest bench/test_bench_busy.py --benchmark-group-by=group [--bench-quick]

Scenarios (each case starts its own nodes inside the scenario):

* ``quiet``: nothing else runs;
* ``busy-half``: cores/2 busy-loop processes (at least one) beside the nodes;
* ``busy-all``: one busy-loop process per core;
* ``pinned``: both nodes on one CPU (started with affinity {first CPU}, as in a one-CPU
  container), nothing else.

Groups:

* ``busy-dist-call`` (calls/s): sequential ``GenServer.call`` ping -> pong between two
  nodes in separate OS processes: ``pyotp`` (both pyotp, default ``busy_wait="auto"``),
  ``pyotp(busy_wait=100)`` (the fixed spin that was the default before the policy) and
  ``beam`` (``bench/erlang/distpeer.erl``'s driver and sink). Rates from the drivers' own
  timing.
* ``busy-thread-call`` (calls/s): blocking calls from a plain thread into a
  ``Runtime.start_thread()`` node (bench/workloads.py's thread_call).
* ``busy-trickle-cpu`` (calls per CPU second, higher is better): a paced trickle of calls
  (one every 3 ms, ~300/s) on a quiet machine; CPU of both node processes, all their
  threads, from /proc/PID/task/*/schedstat (nanoseconds). ``pyotp(busy_wait=none)``
  never spins: the floor, what the calls cost without any spin.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from bench import workloads as W
from bench.conftest import EXTRA_RESULTS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))   # dist_helpers and the roles

from dist_helpers import ErlNode, NodeProc  # noqa: E402

SCENARIOS = ["quiet", "busy-half", "busy-all", "pinned"]
SIZES = {"quick": {"call": 2_000, "thread": 5_000, "trickle": 300, "rounds": 3},
         "full": {"call": 10_000, "thread": 20_000, "trickle": 1_000, "rounds": 5}}
PAUSE_MS = 3


def _cpus() -> List[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@contextlib.contextmanager
def machine(scenario: str) -> Iterator[None]:
    """Busy loops beside what starts inside, or (pinned) one CPU for what starts inside."""
    cpus = _cpus()
    loops = {"busy-half": max(1, len(cpus) // 2), "busy-all": len(cpus)}.get(scenario, 0)
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(loops)]
    pinned = scenario == "pinned"
    if pinned:
        if not hasattr(os, "sched_setaffinity"):
            pytest.skip("pinning needs sched_setaffinity (Linux)")
        os.sched_setaffinity(0, {cpus[0]})      # inherited by the processes started inside
    try:
        yield
    finally:
        if pinned:
            os.sched_setaffinity(0, set(cpus))
        for p in procs:
            p.kill()
            p.wait()


def _cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid``: /proc/PID/task/*/schedstat (nanoseconds; the
    clock ticks of /proc/PID/stat are 10 ms, a few per trickle round), else the ticks."""
    total, found = 0, False
    for task in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(task) as f:
                total += int(f.read().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            pass
    if found:
        return total / 1e9
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def beams() -> Iterator[Optional[str]]:
    if not shutil.which("erl") or not shutil.which("erlc"):
        yield None
        return
    d = tempfile.mkdtemp(prefix="pyotp-bench-busy-")
    subprocess.run(["erlc", "-o", d, str(ROOT / "bench" / "erlang" / "distpeer.erl")], check=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def pair(impl: str, beams: Optional[str]) -> Iterator[Any]:
    """(driver, sink) started where this is entered; the driver answers ``@@result s``."""
    if impl == "beam":
        if beams is None:
            pytest.skip("erl/erlc not installed")
        sink: Any = ErlNode("bsink", "distpeer:sink().", extra_args=["-pa", beams]).start()
        driver: Any = ErlNode("bdrv", "distpeer:driver().", extra_args=["-pa", beams]).start()
    else:
        kw = {"pyotp(busy_wait=100)": {"busy_wait": 100},
              "pyotp(busy_wait=none)": {"busy_wait": "none"}}.get(impl, {})
        sink = NodeProc("psink", role="dist_roles:role_sink_bench", **kw).start()
        driver = NodeProc("pdrv", role="dist_roles:role_call_driver", **kw).start()
    try:
        sink.expect("ready")
        driver.expect("ready")
        yield driver, sink
    finally:
        driver.kill()
        sink.kill()


def _round(driver: Any, cmd: str) -> float:
    driver.send_line(cmd)
    return float(driver.expect("result", timeout=600))


def _record(benchmark: Any, group: str, impl: str, mode: str, rate: float, unit: str,
            **extra: Any) -> None:
    info = {"group": group, "impl": impl, "mode": mode, "rate": rate, "unit": unit}
    info.update(extra)
    benchmark.group = group
    benchmark.extra_info.update(info)
    EXTRA_RESULTS.append(info)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("impl", ["pyotp", "pyotp(busy_wait=100)", "beam"])
def test_busy_dist_call(benchmark: Any, impl: str, scenario: str, mode: str, beams: Optional[str]) -> None:
    s = SIZES[mode]
    times: List[float] = []
    with machine(scenario), pair(impl, beams) as (driver, sink):
        cmd = "call %d %s" % (s["call"], sink.name)
        _round(driver, "call 200 %s" % sink.name)            # connect and warm up
        benchmark.pedantic(lambda: times.append(_round(driver, cmd)), rounds=s["rounds"],
                           warmup_rounds=0, iterations=1)
    _record(benchmark, "busy-dist-call", "%s/%s" % (impl, scenario), mode,
            s["call"] / statistics.median(times), "calls/s",
            note="rounds: %s calls/s" % [round(s["call"] / t) for t in times])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_busy_thread_call(benchmark: Any, scenario: str, mode: str) -> None:
    s = SIZES[mode]
    with machine(scenario):
        b = W.make("thread_call", "pyotp", s["thread"])
        b.setup()
        try:
            benchmark.pedantic(b.run, setup=b.before_round, rounds=s["rounds"], warmup_rounds=1,
                               iterations=1)
            b.measure()
        finally:
            b.teardown()
    _record(benchmark, "busy-thread-call", "pyotp/%s" % scenario, mode,
            s["thread"] / benchmark.stats.stats.median, "calls/s")


@pytest.mark.parametrize("impl", ["pyotp", "pyotp(busy_wait=100)", "pyotp(busy_wait=none)", "beam"])
def test_busy_trickle_cpu(benchmark: Any, impl: str, mode: str, beams: Optional[str]) -> None:
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("CPU time of other processes needs /proc")
    n = SIZES[mode]["trickle"]
    cpu: List[float] = []
    with pair(impl, beams) as (driver, sink):
        _round(driver, "call 200 %s" % sink.name)
        pids = [driver.proc.pid, sink.proc.pid]

        def one() -> None:
            before = sum(_cpu_seconds(p) for p in pids)
            _round(driver, "paced %d %s %d" % (n, sink.name, PAUSE_MS))
            cpu.append(sum(_cpu_seconds(p) for p in pids) - before)
        benchmark.pedantic(one, rounds=SIZES[mode]["rounds"], warmup_rounds=0, iterations=1)
    per_call = statistics.median(cpu) / n
    _record(benchmark, "busy-trickle-cpu", impl, mode, 1.0 / per_call if per_call else 0.0,
            "calls per CPU second", cpu_s_per_1000_calls=round(per_call * 1000, 3),
            note="%.3f CPU s per 1000 calls (both nodes)" % (per_call * 1000))
