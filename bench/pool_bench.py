"""Multi-core benchmarks (issue 13, issue 20's pool rows): run one case per process.

    python -m bench.pool_bench <case> [args]       # prints one JSON line: {"case", ...}

Cases:
* ``aggregate N M``: a pool of N nodes; on every node at once a producer casts M small
  messages to a counter on the same node, then calls it (so all M were handled). The
  figure is all messages / (last end - first start), wall clock across the processes.
* ``pair M``: the same pair in a plain single node (one OS process; the "ceiling" case
  runs N of these side by side, no interaction).
* ``oneway M`` / ``call M``: two pool nodes; the head sends M messages ``("msg", i)`` to a
  sink on the worker (which answers its count), or makes M sequential GenServer.calls.
  PYOTP_POOL_TRANSPORT=socket|tcp selects the link (default: shared memory);
  PYOTP_BENCH_BUSY_WAIT sets the nodes' ``busy_wait`` ("auto", "none" or microseconds).
  ``oneway`` also reports the wall time and each end's CPU time per message (ns).
* ``oneway_local M`` / ``call_local M``: the same loops with the sink on the same node (one
  OS process, no link): the ceiling of what the Python on both ends allows per message,
  were the link free (two nodes run the two ends in parallel, one node runs them in turn).
* ``ring_pingpong M``: two OS processes and a bare ring pair (pyotp._core.ShmRingPair, no
  node, no event loop): an 8-byte ping answered by an 8-byte pong, M times, both ends
  spinning: the ceiling of a round trip through the rings from Python.
* ``map N ITEMS``: pyotp.pool.map over N nodes of a small CPU-bound function, against
  multiprocessing.Pool.map and concurrent.futures.ProcessPoolExecutor.map (N workers
  each, same function and data), all in this process's run.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from typing import Any, List

import pyotp
from pyotp import GenServer, pool
from pyotp.dist import Node


class Counter(GenServer):
    def init(self, n: Any) -> Any:
        return ("ok", n)

    def handle_cast(self, msg: Any, n: int) -> Any:
        return ("noreply", n + 1)

    def handle_call(self, req: Any, frm: Any, n: int) -> Any:
        return ("reply", n, n)


async def pair(m: int) -> List[float]:
    c = await Counter.start(0)
    t0 = time.time()
    cast = GenServer.cast
    for i in range(m):
        cast(c, i)
        if i & 1023 == 0:
            await pyotp.sleep(0)       # let the counter run: bounded mailboxes
    n = await GenServer.call(c, "get", 60)
    t1 = time.time()
    assert n == m, (n, m)
    return [t0, t1]


async def pair_on(reply_to: Any, m: int) -> None:
    pyotp.send(reply_to, ("pair", await pair(m)))


async def aggregate(n: int, m: int) -> dict:
    me = pyotp.self()
    nodes = pool.pool_nodes() or [str(Node.self())] if n > 1 else []
    if n == 1:
        t0, t1 = await pair(m)
        return {"rate": m / (t1 - t0)}
    for node in nodes:
        await Node.spawn(node, pair_on, me, m)
    spans = [(await pyotp.receive(lambda x: x[0] == "pair", timeout=300))[1] for _ in nodes]
    start = min(s[0] for s in spans)
    end = max(s[1] for s in spans)
    return {"rate": m * len(nodes) / (end - start)}


class Sink(GenServer):
    def init(self, _: Any) -> Any:
        return ("ok", 0)

    def handle_call(self, req: Any, frm: Any, n: int) -> Any:
        if req == "cpu":                # this node's CPU seconds so far (the receiver's cost)
            return ("reply", time.process_time(), n)
        return ("reply", n, n)

    def handle_info(self, msg: Any, n: int) -> Any:
        if msg[0] == "done":
            pyotp.send(msg[1], ("count", n))
            return ("noreply", 0)
        return ("noreply", n + 1)


async def start_sink(reply_to: Any) -> None:
    pid = await Sink.start(None)
    pyotp.send(reply_to, ("sink", pid))
    await pyotp.receive(lambda x: x == "never")


async def _sink() -> Any:
    me = pyotp.self()
    await Node.spawn(pool.pool_nodes()[1], start_sink, me)
    return (await pyotp.receive(lambda x: x[0] == "sink", timeout=60))[1]


async def _oneway_to(sink: Any, m: int) -> dict:
    """The rate, and each end's CPU time per message (ns; within one node the sender's
    figure covers both ends): a figure below the wall time per message means that end
    waited for the other."""
    send = pyotp.send
    for _ in range(3):           # warm-up rounds, then the measured one
        me = pyotp.self()
        rc0 = await GenServer.call(sink, "cpu")
        c0 = time.process_time()
        t0 = time.perf_counter()
        for i in range(m):
            send(sink, ("msg", i))
            if i & 4095 == 0:
                await pyotp.sleep(0)
        send(sink, ("done", me))
        _, n = await pyotp.receive(lambda x: x[0] == "count", timeout=300)
        t1 = time.perf_counter()
        c1 = time.process_time()
        rc1 = await GenServer.call(sink, "cpu")
        assert n == m, (n, m)
    return {"rate": m / (t1 - t0), "wall_ns": 1e9 * (t1 - t0) / m,
            "sender_cpu_ns": 1e9 * (c1 - c0) / m, "receiver_cpu_ns": 1e9 * (rc1 - rc0) / m}


async def _calls_to(sink: Any, m: int) -> dict:
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(m):
            await GenServer.call(sink, "get")
        best = max(best, m / (time.perf_counter() - t0))
    return {"rate": best}


async def oneway(m: int) -> dict:
    return await _oneway_to(await _sink(), m)


async def call(m: int) -> dict:
    r = await _calls_to(await _sink(), m)
    info = pyotp._core.wait_policies()["shm"].info()
    return dict(r, policy=info["reason"], denied=info["denied"])


async def oneway_local(m: int) -> dict:
    return await _oneway_to(await Sink.start(None), m)


async def call_local(m: int) -> dict:
    return await _calls_to(await Sink.start(None), m)


_RING = 1 << 16


def _ring_echo(ring: Any, m: int) -> None:
    buf = bytearray(8)
    for _ in range(m):
        while not ring.readinto(buf):
            ring.spin(10_000.0)
        ring.write(buf)


def ring_pingpong(m: int) -> dict:
    import subprocess
    from pyotp import _core
    fd = _core.shm_segment(_RING)
    ring = _core.ShmRingPair(fd, _RING, 0)
    peer = subprocess.Popen([sys.executable, "-m", "bench.pool_bench", "ring_peer", str(fd), str(m)],
                            pass_fds=[fd])
    os.close(fd)
    buf = bytearray(8)
    ping = b"pingping"
    t0 = time.perf_counter()
    for _ in range(m):
        ring.write(ping)
        while not ring.readinto(buf):
            ring.spin(10_000.0)
    rate = m / (time.perf_counter() - t0)
    peer.wait(60)
    return {"rate": rate}


def work(x: int) -> int:
    """A small CPU-bound task (~20 us)."""
    s = 0
    for i in range(300):
        s += (x * i) % 7
    return s


async def pmap(items: int) -> dict:
    data = list(range(items))
    t0 = time.perf_counter()
    out = await pool.map(work, data)
    t1 = time.perf_counter()
    assert out == [work(x) for x in data]
    t2 = time.perf_counter()
    await pool.map(work, data, batch=64)
    t3 = time.perf_counter()
    return {"rate": items / (t1 - t0), "rate_batch": items / (t3 - t2)}


def baselines(n: int, items: int) -> dict:
    import concurrent.futures
    import multiprocessing
    data = list(range(items))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(n) as p:
        p.map(work, data[:100])          # started and warm
        t0 = time.perf_counter()
        a = p.map(work, data)
        mp = items / (time.perf_counter() - t0)
    with concurrent.futures.ProcessPoolExecutor(n, mp_context=ctx) as ex:
        list(ex.map(work, data[:100]))
        t0 = time.perf_counter()
        b = list(ex.map(work, data))
        ppe = items / (time.perf_counter() - t0)
    assert a == b
    return {"mp_pool": mp, "ppe": ppe}


def _busy_wait() -> Any:
    bw = os.environ.get("PYOTP_BENCH_BUSY_WAIT", "auto")
    return float(bw) if bw[:1].isdigit() else bw


def main(argv: List[str]) -> None:
    case = argv[0]
    args = [int(a) for a in argv[1:]]
    if case == "aggregate":
        r = pyotp.run(aggregate, args[0], args[1], nodes=args[0])
    elif case == "pair":
        t0, t1 = pyotp.run(pair, args[0])
        r = {"rate": args[0] / (t1 - t0), "span": [t0, t1]}
    elif case == "oneway":
        r = pyotp.run(oneway, args[0], nodes=2)
    elif case == "call":
        r = pyotp.run(call, args[0], nodes=2, busy_wait=_busy_wait())
    elif case == "oneway_local":
        r = pyotp.run(oneway_local, args[0])
    elif case == "call_local":
        r = pyotp.run(call_local, args[0])
    elif case == "ring_pingpong":
        r = ring_pingpong(args[0])
    elif case == "ring_peer":
        from pyotp import _core
        _ring_echo(_core.ShmRingPair(args[0], _RING, 1), args[1])
        return
    elif case == "map":
        r = pyotp.run(pmap, args[1], nodes=args[0])
        r.update(baselines(args[0], args[1]))
    else:
        raise SystemExit("unknown case %r" % case)
    r["case"] = case
    r["transport"] = os.environ.get("PYOTP_POOL_TRANSPORT", "shm")
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
