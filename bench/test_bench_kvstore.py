"""examples/kvstore against a real redis-server, measured with redis-benchmark in the same
run (issue 22).

    flock /tmp/pyotp-bench.lock env PYTHONPATH=src pytest bench/test_bench_kvstore.py \\
        --benchmark-group-by=group [--bench-quick]

Each case is ``redis-benchmark -t set|get -n N -c 50 [-P 16] --csv`` (N = 200000, or 20000
with --bench-quick) against:

* ``redis-server``: Debian's redis-server, in memory (no RDB, no AOF);
* ``pyotp 1 node``: ``python -m examples.kvstore`` alone, no log;
* ``pyotp 2 nodes (RF 2)``: two nodes joined by pyotp distribution, replication factor 2,
  redis-benchmark connected to the first: every SET is acknowledged only after both nodes
  applied it (half the keys' primary is the other node: forwarded);
* ``pyotp 2-node pool (RF 2)``: the same on a local node pool (``--nodes 2``: the head and
  one worker process, linked by shared memory).

Groups ``kvstore-get``, ``kvstore-set``, ``kvstore-get-P16``, ``kvstore-set-P16``; each
record has rate (requests/s, redis-benchmark's own figure) and p50/p99 latency (ms).
The issue's targets (GET >= 0.5x redis-server, SET with RF 2 >= 0.25x, no pipelining) are
printed as ratios of the same run by ``python -m bench.compare``; no speed is asserted.
"""
from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))   # dist_helpers and the roles

from bench.conftest import EXTRA_RESULTS                      # noqa: E402

IMPLS = ["redis-server", "pyotp 1 node", "pyotp 2 nodes (RF 2)", "pyotp 2-node pool (RF 2)"]
_cache: Dict[Tuple[str, int], Dict[str, Dict[str, float]]] = {}


def redis_benchmark(port: int, tests: str, n: int, pipeline: int) -> Dict[str, Dict[str, float]]:
    """{"SET": {...}, ...}: rps and latency percentiles (ms) of one redis-benchmark run."""
    out = subprocess.run([shutil.which("redis-benchmark") or "redis-benchmark", "-p", str(port),
                          "-t", tests, "-n", str(n), "-c", "50", "-P", str(pipeline), "--csv"],
                         capture_output=True, text=True, timeout=900, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    if {r["test"] for r in rows} != set(tests.upper().split(",")):
        raise RuntimeError("unexpected redis-benchmark output: %r" % out)
    return {r["test"]: {"rps": float(r["rps"]), "p50": float(r["p50_latency_ms"]),
                        "p99": float(r["p99_latency_ms"])} for r in rows}


@pytest.fixture(scope="module")
def servers() -> Iterator[Dict[str, int]]:
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        pytest.skip("redis-server / redis-benchmark not installed (Debian redis-server, redis-tools)")
    from kvstore_helpers import KvNode, RedisServer, live_members_of, poll, unique
    real = RedisServer()
    one = KvNode()
    a_name, b_name = unique("kvba"), unique("kvbb")
    a = KvNode(node=a_name, peers=[b_name])
    b = KvNode(node=b_name, peers=[a_name])
    # --nodes 2: the head and one worker of a local node pool (shared-memory links)
    pool = KvNode("--nodes", "2", "--name-prefix", unique("kvp").split("@")[0])
    try:
        poll(lambda: live_members_of(a.port) == {a_name, b_name}, "the two nodes to join")
        poll(lambda: len(live_members_of(pool.port)) == 2, "the pool's two nodes to join")
        yield {"redis-server": real.port, "pyotp 1 node": one.port, "pyotp 2 nodes (RF 2)": a.port,
               "pyotp 2-node pool (RF 2)": pool.port}
    finally:
        for p in (pool, b, a, one, real):
            p.stop()


# SET before GET (so the GETs find the key), and per setting the three implementations
# back to back, so each ratio compares runs made moments apart
CASES = [(op, pipeline, impl) for pipeline in (1, 16) for op in ("set", "get") for impl in IMPLS]


@pytest.mark.parametrize("op, pipeline, impl", CASES,
                         ids=["%s-P%d-%s" % (o, p, i.split(" (")[0].replace(" ", "")) for o, p, i in CASES])
def test_kvstore_redis_benchmark(benchmark: Any, servers: Dict[str, int], op: str, pipeline: int, impl: str,
                                 mode: str) -> None:
    n = 20000 if mode == "quick" else 200000
    got: Dict[str, Dict[str, float]] = {}

    def run() -> None:
        got.update(redis_benchmark(servers[impl], op, n, pipeline))
    benchmark.pedantic(run, rounds=1, iterations=1)
    r = got[op.upper()]
    info = {"group": "kvstore-%s%s" % (op, "" if pipeline == 1 else "-P%d" % pipeline), "impl": impl,
            "mode": mode, "rate": r["rps"], "unit": "req/s", "p50_ms": r["p50"], "p99_ms": r["p99"], "n": n,
            "note": "p50 %.3f ms, p99 %.3f ms" % (r["p50"], r["p99"])}
    benchmark.group = info["group"]
    benchmark.extra_info.update(info)
    EXTRA_RESULTS.append(info)
