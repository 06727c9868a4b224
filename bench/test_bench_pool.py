"""Multi-core benchmarks (issue 13; the pool rows of issue 20's busy machine): local node
pools over shared memory, against sockets, independent processes and process pools.

    pytest bench/test_bench_pool.py --benchmark-group-by=group [--bench-quick]

Each case runs ``python -m bench.pool_bench ...`` (see that module) in its own process, so
pools start and end inside the case. Groups (rates; same run, so read them as ratios):

* ``pool-aggregate-cast`` (msg/s): one producer -> counter pair per node, nodes=1..cores
  (``pyotp/nodes=N``), beside ``independent/N``: N single-node OS processes doing the
  same with no interaction at all (the machine's ceiling for N).
* ``pool-oneway`` (msg/s) and ``pool-call`` (calls/s): between two pool nodes over
  ``shm`` (the rings), ``socket`` (a Unix socket pair) and ``tcp`` (loopback).
  Beside them, the ceilings (``ceiling/...``): the same loops within one node
  (``one-node``), and a bare ring ping-pong between two processes with no node
  (``ring-pingpong``, pool-call only).
* ``pool-map`` (items/s): ``pyotp.pool.map`` of a ~20 us CPU-bound function over
  nodes=cores, ``multiprocessing.Pool.map`` and ``ProcessPoolExecutor.map`` with as many
  workers, same function and data.
* ``busy-pool-call`` (calls/s): ``pool-call`` over shm with 0, cores/2 and cores
  busy-loop processes beside the pool, and with the whole pool pinned to one CPU (issue
  20's scenarios, bench/test_bench_busy.py's ``machine``), under ``busy_wait="auto"``
  (``pyotp/shm/<scenario>``) and the fixed spin ``busy_wait=100``
  (``pyotp(busy_wait=100)/shm/<scenario>``), beside ``beam/<scenario>``:
  two BEAM nodes doing sequential gen_server calls under the same load (the driver and
  sink of bench/test_bench_busy.py's dist rows, rate from the driver's own timing).
No speed is asserted.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from bench.conftest import EXTRA_RESULTS
from bench.test_bench_busy import _round, beams, machine, pair  # noqa: F401 (beams: a fixture)

ROOT = Path(__file__).resolve().parent.parent
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
SIZES = {"quick": {"agg": 200_000, "oneway": 100_000, "call": 5_000, "map": 5_000, "rounds": 1},
         "full": {"agg": 1_000_000, "oneway": 300_000, "call": 20_000, "map": 20_000, "rounds": 3}}


def _case(*args: Any, env: Dict[str, str] = {}) -> Dict[str, Any]:
    e = dict(os.environ, **env)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), e.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-m", "bench.pool_bench", *map(str, args)], env=e,
                         cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError("pool_bench %s failed: %s" % (args, out.stderr[-2000:]))
    return json.loads(lines[-1])


def _independent(n: int, m: int) -> float:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), e.get("PYTHONPATH", "")])
    procs = [subprocess.Popen([sys.executable, "-m", "bench.pool_bench", "pair", str(m)], env=e,
                              cwd=str(ROOT), stdout=subprocess.PIPE, text=True) for _ in range(n)]
    spans = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        spans.append(json.loads([x for x in out.splitlines() if x.startswith("{")][-1])["span"])
    return n * m / (max(s[1] for s in spans) - min(s[0] for s in spans))


def _record(benchmark: Any, group: str, impl: str, mode: str, rates: List[float], unit: str,
            **extra: Any) -> None:
    rate = statistics.median(rates)
    info = {"group": group, "impl": impl, "mode": mode, "rate": rate, "unit": unit,
            "note": "rounds: %s" % [round(r) for r in rates]}
    info.update(extra)
    benchmark.group = group
    benchmark.extra_info.update(info)
    EXTRA_RESULTS.append(info)


def _rounds(benchmark: Any, mode: str, fn: Any) -> List[float]:
    rates: List[float] = []
    benchmark.pedantic(lambda: rates.append(fn()), rounds=SIZES[mode]["rounds"], warmup_rounds=0,
                       iterations=1)
    return rates


@pytest.mark.parametrize("nodes", list(range(1, CORES + 1)))
def test_pool_aggregate_cast(benchmark: Any, nodes: int, mode: str) -> None:
    m = SIZES[mode]["agg"]
    rates = _rounds(benchmark, mode, lambda: _case("aggregate", nodes, m)["rate"])
    _record(benchmark, "pool-aggregate-cast", "pyotp/nodes=%d" % nodes, mode, rates, "msg/s")


@pytest.mark.parametrize("n", list(range(1, CORES + 1)))
def test_independent_processes_ceiling(benchmark: Any, n: int, mode: str) -> None:
    m = SIZES[mode]["agg"]
    rates = _rounds(benchmark, mode, lambda: _independent(n, m))
    _record(benchmark, "pool-aggregate-cast", "independent/%d" % n, mode, rates, "msg/s")


@pytest.mark.parametrize("transport", ["shm", "socket", "tcp"])
@pytest.mark.parametrize("kind", ["oneway", "call"])
def test_pool_link(benchmark: Any, kind: str, transport: str, mode: str) -> None:
    n = SIZES[mode][kind]
    env = {} if transport == "shm" else {"PYOTP_POOL_TRANSPORT": transport}
    rates = _rounds(benchmark, mode, lambda: _case(kind, n, env=env)["rate"])
    _record(benchmark, "pool-" + kind, "pyotp/" + transport, mode, rates,
            "msg/s" if kind == "oneway" else "calls/s")


@pytest.mark.parametrize("case", ["oneway_local", "call_local", "ring_pingpong"])
def test_pool_link_ceilings(benchmark: Any, case: str, mode: str) -> None:
    kind = "oneway" if case == "oneway_local" else "call"
    n = SIZES[mode][kind] * (5 if case == "ring_pingpong" else 1)
    rates = _rounds(benchmark, mode, lambda: _case(case, n)["rate"])
    _record(benchmark, "pool-" + kind, "ceiling/" + ("ring-pingpong" if case == "ring_pingpong"
                                                     else "one-node"), mode, rates,
            "msg/s" if kind == "oneway" else "calls/s")


def test_pool_map(benchmark: Any, mode: str) -> None:
    n = SIZES[mode]["map"]
    results: List[Dict[str, Any]] = []
    benchmark.pedantic(lambda: results.append(_case("map", CORES, n)), rounds=SIZES[mode]["rounds"],
                       warmup_rounds=0, iterations=1)
    for key, impl in (("rate", "pyotp.pool.map"), ("rate_batch", "pyotp.pool.map(batch=64)"),
                      ("mp_pool", "multiprocessing.Pool.map"),
                      ("ppe", "ProcessPoolExecutor.map")):
        info = {"group": "pool-map", "impl": "%s/%d" % (impl, CORES), "mode": mode,
                "rate": statistics.median(r[key] for r in results), "unit": "items/s"}
        EXTRA_RESULTS.append(info)
    benchmark.group = "pool-map"


@pytest.mark.parametrize("scenario", ["quiet", "busy-half", "busy-all", "pinned"])
@pytest.mark.parametrize("impl", ["pyotp", "pyotp(busy_wait=100)", "beam"])
def test_busy_pool_call(benchmark: Any, impl: str, scenario: str, mode: str,
                        beams: Any) -> None:  # noqa: F811 (the fixture)
    n = SIZES[mode]["call"]
    infos: List[Dict[str, Any]] = []
    if impl == "beam":
        with machine(scenario), pair("beam", beams) as (driver, sink):
            cmd = "call %d %s" % (n, sink.name)
            _round(driver, "call 200 %s" % sink.name)            # connect and warm up
            rates = _rounds(benchmark, mode, lambda: n / _round(driver, cmd))
        _record(benchmark, "busy-pool-call", "beam/" + scenario, mode, rates, "calls/s")
        return
    env = {"PYOTP_BENCH_BUSY_WAIT": "100"} if impl == "pyotp(busy_wait=100)" else {}
    with machine(scenario):
        rates = _rounds(benchmark, mode,
                        lambda: (infos.append(_case("call", n, env=env)), infos[-1]["rate"])[1])
    _record(benchmark, "busy-pool-call", impl + "/shm/" + scenario, mode, rates, "calls/s",
            policy=infos[-1].get("policy"), denied=infos[-1].get("denied"))
