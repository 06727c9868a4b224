"""Small-message latency while a 100 MB message is in flight on the same connection,
without and with fragments (issue 14 item 8; src/core/dist_header.pyx).

    flock /tmp/pyotp-bench.lock env PYTHONPATH=src pytest bench/test_bench_dist_fragments.py [--bench-quick]

One round, run as processes on node A (this process, ``Runtime.start_thread()``): a
process sends one 100 MB binary to ``sink`` on node B, then ``done``; meanwhile another
process makes sequential ``GenServer.call(("sink", B), "ping")`` round trips on the same
connection until the sink has counted the big message. Reported per round: the calls that
completed while the big message travelled, their median and worst round trip, and the
transfer time. ``rate`` (the summary's figure) is the pings completed per second of
transfer.

Cases (``headers`` = DIST_HDR_ATOM_CACHE + FRAGMENTS negotiated or not; "off" is what
every pyotp connection did before: one 100 MB ``'p'`` frame that every later frame
waits behind):

* ``pyotp->pyotp`` off / on: B is a pyotp node in a child process.
* ``pyotp->beam`` off / on: B is ``erl`` running ``bench/erlang/distpeer.erl``'s sink.

A's side of the negotiation is switched per connection (one B node per case), so both
settings run in the same process and the same run. No speed is asserted.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from bench import workloads as W
from bench.conftest import EXTRA_RESULTS
from bench.test_bench_dist import _A, _erl, beams  # noqa: F401  (beams: a fixture)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))   # dist_helpers and the roles

import pyotp                                                    # noqa: E402
from pyotp import GenServer                                     # noqa: E402
from pyotp.dist import Node                                     # noqa: E402
from pyotp.dist import handshake as hs                          # noqa: E402
from pyotp.etf import Atom                                      # noqa: E402
from dist_helpers import NodeProc                               # noqa: E402

BIG = 100_000_000
ROUNDS = {"quick": 2, "full": 4}
CASES = [("pyotp->pyotp", "off"), ("pyotp->pyotp", "on"), ("pyotp->beam", "off"), ("pyotp->beam", "on")]


@pytest.fixture(scope="module")
def node_a():
    a = _A()
    yield a
    a.stop()


async def _big_sender(dest: Any, blob: bytes, report: Any) -> None:
    pyotp.send(dest, blob)
    pyotp.send(dest, (Atom("done"), report))


async def _round(dest: Any, blob: bytes, req: Any) -> Dict[str, Any]:
    """One big message in flight, pings meanwhile; returns the round's figures."""
    me = pyotp.self()
    for _ in range(20):                           # idle round trips first
        await GenServer.call(dest, req, 30)
    idle: List[float] = []
    for _ in range(100):
        t = time.perf_counter()
        await GenServer.call(dest, req, 30)
        idle.append(time.perf_counter() - t)
    t0 = time.perf_counter()
    pyotp.spawn(_big_sender, dest, blob, me)
    during: List[float] = []
    while True:
        t = time.perf_counter()
        r = await GenServer.call(dest, req, 120)
        during.append(time.perf_counter() - t)
        W.check(r == "pong", "ping answered %r" % (r,))
        try:
            tag, count = await pyotp.receive(
                lambda m: type(m) is tuple and len(m) == 2 and m[0] == "count", timeout=0)
            break
        except TimeoutError:
            continue
    transfer = time.perf_counter() - t0
    W.check(count == 1, "the sink counted %d messages, not the big one" % count)
    return {"transfer_s": transfer, "pings": len(during), "median_ms": statistics.median(during) * 1e3,
            "max_ms": max(during) * 1e3, "idle_median_ms": statistics.median(idle) * 1e3}


def _connect(a: _A, node: str, headers: bool) -> None:
    """Connect A to ``node`` offering the header flags or not (read at the handshake)."""
    def flags() -> None:
        hs.HEADER_FLAGS = (hs.DIST_HDR_ATOM_CACHE | hs.FRAGMENTS) if headers else 0
    a.rt.call_in_loop(flags)
    try:
        W.check(a.run(Node.connect, node), "cannot connect to %s" % node)
    finally:
        a.rt.call_in_loop(lambda: setattr(hs, "HEADER_FLAGS", hs.DIST_HDR_ATOM_CACHE | hs.FRAGMENTS))


@pytest.mark.parametrize("impl,headers", CASES, ids=["%s-headers-%s" % c for c in CASES])
def test_latency_under_a_100mb_message(benchmark: Any, mode: str, impl: str, headers: str,
                                       node_a: _A, request: Any) -> None:
    benchmark.group = "dist-latency-under-100MB"
    if impl == "pyotp->beam":
        b = request.getfixturevalue("beams")
        if b is None:
            pytest.skip("erl/erlc not installed")
        peer = _erl("fragsink", "distpeer:sink().", b)
        req: Any = Atom("ping")
    else:
        peer = NodeProc("fragsink", role="dist_roles:role_sink_bench").start()
        peer.expect("ready")
        req = "ping"
    try:
        _connect(node_a, peer.name, headers == "on")
        blob = bytes(BIG)
        dest = ("sink", peer.name)
        rounds: List[Dict[str, Any]] = []
        benchmark.pedantic(lambda: rounds.append(node_a.run(_round, dest, blob, req)),
                           rounds=ROUNDS[mode], warmup_rounds=0, iterations=1)
    finally:
        peer.kill()
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    info = {"group": benchmark.group, "impl": "%s headers %s" % (impl, headers),
            "rate": med["pings"] / med["transfer_s"], "unit": "pings/s during transfer",
            "note": "median of %d rounds: %d pings in %.2f s, ping median %.2f ms, max %.1f ms "
                    "(idle %.3f ms)" % (len(rounds), med["pings"], med["transfer_s"], med["median_ms"],
                                        med["max_ms"], med["idle_median_ms"]), **med}
    benchmark.extra_info.update(info)
    EXTRA_RESULTS.append(info)
