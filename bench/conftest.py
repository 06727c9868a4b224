"""pytest-benchmark configuration for pyotp's benchmark suite.

    pytest bench --benchmark-group-by=group              # full sizes
    pytest bench --benchmark-group-by=group --bench-quick  # small sizes, 3 rounds
    PYOTP_BENCH_MODE=quick pytest bench ...              # the same, from the environment

At the end of the run a summary prints each group's rates (ops/s, as pytest-benchmark's own
table shows seconds per round), the memory figures, and the peers or workloads that were
not run, with the reason.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

import pytest

from bench import workloads as W

_RESULTS: List[Dict[str, Any]] = []
# Records of the bench files with their own groups (test_bench_busy.py): printed at the end
# as "group impl rate unit [note]".
EXTRA_RESULTS: List[Dict[str, Any]] = []


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--bench-quick", action="store_true", default=False,
                     help="pyotp bench: small sizes and 3 rounds (python -m bench.compare --quick uses it)")


def bench_mode(config: Any) -> str:
    if config.getoption("--bench-quick") or os.environ.get("PYOTP_BENCH_MODE") == "quick":
        return "quick"
    return "full"


@pytest.fixture(scope="session")
def mode(pytestconfig: Any) -> str:
    return bench_mode(pytestconfig)


def run_benchmark(benchmark: Any, workload: str, impl: str, mode: str) -> None:
    """Run one (workload, impl) under pytest-benchmark: pedantic rounds with warm-up; the
    rate and the sizes go to extra_info (and so to --benchmark-json)."""
    m = W.MODES[mode]
    n = W.size(workload, impl, mode)
    b = W.make(workload, impl, n)
    benchmark.group = workload
    b.setup()
    try:
        benchmark.pedantic(b.run, setup=b.before_round, rounds=m.rounds,
                           warmup_rounds=m.warmup, iterations=1)
        b.measure()
    finally:
        b.teardown()
    ops = W.ops_per_round(workload, n)
    info = {"workload": workload, "impl": impl, "mode": mode, "n": n, "ops_per_round": ops,
            "unit": W.WORKLOADS[workload].unit}
    info.update(b.extra)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        info["median_s"] = stats.stats.median
        info["rate"] = ops / stats.stats.median
    benchmark.extra_info.update(info)
    _RESULTS.append(info)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tr = terminalreporter
    if EXTRA_RESULTS:
        tr.section("pyotp bench: other groups (same run)")
        for r in EXTRA_RESULTS:
            tr.write_line("  %-18s %-34s %12.0f %s   %s" % (r["group"], r["impl"], r["rate"], r["unit"],
                                                          r.get("note", "")))
    if not _RESULTS:
        return
    tr.section("pyotp bench: rates (ops / median round)")
    for w in W.WORKLOADS.values():
        rows = [r for r in _RESULTS if r["workload"] == w.id]
        if not rows:
            continue
        tr.write_line("%s (%s)" % (w.title, w.id))
        for r in rows:
            rate = r.get("rate")
            line = "  %-14s %14s %s   n=%d" % (
                r["impl"], "%.0f" % rate if rate else "-", rate and _rate_unit(w) or "", r["n"])
            if w.id == "memory":
                line += "   %s B/proc (tracemalloc), %s B/proc (RSS)" % (
                    r.get("bytes_per_process_tracemalloc", "-"), r.get("bytes_per_process_rss", "-"))
            tr.write_line(line)
    tr.section("pyotp bench: not run")
    for w, i, why in W.skipped_cases():
        if i == "erlang":
            continue   # the escript is run by python -m bench.compare
        tr.write_line("  %-14s %-14s %s" % (w, i, why))
    tr.write_line("  %-14s %-14s %s" % ("*", "erlang", "run by python -m bench.compare (escript)"))
    bs = getattr(tr.config, "_benchmarksession", None)
    groups = sorted({b.group for b in getattr(bs, "benchmarks", []) if b.group}) if bs else None
    for wid, title, why in W.missing_workloads(groups):
        tr.write_line("  %-14s %-14s missing: %s (%s)" % (wid, "*", title, why))


def _rate_unit(w: W.Workload) -> str:
    return "starts/s" if w.id == "memory" else w.unit
