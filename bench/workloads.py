"""The benchmark workloads, for pyotp and for every peer, in one place.

Both ``bench/test_*.py`` (pytest-benchmark) and ``bench/compare.py`` use this module; nothing
here depends on pytest.

Each workload is implemented once per *implementation* ("impl"):

==============  ===========================================================================
impl            what it is
==============  ===========================================================================
pyotp           pyotp on the loop ``pyotp.run`` picks (uvloop when installed)
pyotp-asyncio   pyotp on the stdlib asyncio loop (to compare like for like with ``asyncio``)
asyncio         the baseline: a hand-written actor on the stdlib loop (an ``asyncio.Queue``
                per actor, a task draining it, futures for replies) with GenServer-shaped
                callbacks, so it does the same per-message work as a pyotp GenServer
uvloop          the same hand-written actor on uvloop
pykka           Pykka ``ThreadingActor`` (a thread per actor)
thespian        Thespian's in-process ``simpleSystemBase``
xoscar          xoscar actors in an in-process main pool (``n_process=0``)
erlang          Erlang/OTP, through ``bench/erlang/bench.escript`` (run by compare.py)
==============  ===========================================================================

A benchmark object (``Bench``) has ``setup()`` (untimed), ``run()`` (one timed round of
``n`` operations, which checks its own result and raises ``BenchError`` if any work is
missing), optionally ``before_round()`` (untimed, between rounds), ``measure()`` (untimed,
after the rounds: memory figures) and ``teardown()``.

The message shapes are the same for every implementation: casts carry ``"inc"``, calls carry
``"ping"`` (answered ``"pong"``) and ``"take"`` (answers the count and resets it), ring
tokens are ints. Every server counts what it handled, and every round checks the count.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import importlib
import importlib.util
import json
import os
import platform
import queue
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

try:  # the benchmarks run against the installed package, or the source tree
    import pyotp
except ImportError:  # pragma: no cover - depends on how the suite is started
    sys.path.insert(0, str(ROOT / "src"))
    import pyotp
from pyotp import GenServer


class BenchError(AssertionError):
    """A round did not do all of its work (a lost message, a wrong count)."""


def check(cond: bool, what: str) -> None:
    """Raise BenchError(what) unless cond: every round verifies its own result."""
    if not cond:
        raise BenchError(what)


# =========================================================================================
# Workloads, sizes, modes

@dataclass(frozen=True)
class Workload:
    """One benchmark group."""
    id: str
    title: str
    unit: str                      # what one operation is, per second ("msg/s", ...)
    what: str                      # one-paragraph description (docs and report)
    target: Optional[float] = None  # issue 2's target for pyotp, in `unit` (None: no target)
    target_text: str = ""
    lower_is_better: bool = False   # memory: bytes per process


WORKLOADS: Dict[str, Workload] = {w.id: w for w in [
    Workload("cast", "GenServer cast throughput", "msg/s",
             "One process casts N `\"inc\"` messages to a GenServer whose handle_cast returns "
             "`(\"noreply\", n + 1)`, then one call `\"take\"` returns the count (checked == N) "
             "and resets it. Time from the first cast to the reply.",
             3_000_000, ">= 3 M msg/s and >= 2.5x asyncio"),
    Workload("call", "call round trip between two processes", "calls/s",
             "A coroutine process awaits `GenServer.call(server, \"ping\")` N times in a loop "
             "(each answered `\"pong\"`, checked); the server counts the calls (checked == N).",
             700_000, ">= 700 k calls/s"),
    Workload("thread_call", "call from another OS thread", "calls/s",
             "A plain thread outside the runtime makes N blocking calls `\"ping\"` to a server "
             "running on the node's loop thread (pyotp: `pyotp.Runtime.start_thread()` handle's "
             "`.call`). Checked as for call.",
             50_000, ">= 50 k calls/s"),
    Workload("spawn", "spawn + exit", "procs/s",
             "A process spawns N trivial `async def` processes, each monitored "
             "(`spawn_monitor`), and waits for all N `DOWN` messages with reason `normal` "
             "(counted). Peers: start N actors and stop them, waiting until all have exited.",
             300_000, ">= 300 k procs/s"),
    Workload("ring_receive", "1000-process ring, coroutine processes (receive)", "hops/s",
             "1000 coroutine processes in a ring, each `await receive()` then `send(next, m)`. "
             "An int token goes round the ring L times (one token in flight); each lap is "
             "checked by the ring's home process. Rate = 1000 * L / time.",
             3_000_000, ">= 3 M hops/s (best of both ring styles)"),
    Workload("ring_genserver", "1000-process ring, GenServer handle_info", "hops/s",
             "As ring_receive, but the 999 forwarding processes are GenServers whose "
             "handle_info sends the token on and returns `(\"noreply\", next)`.",
             3_000_000, ">= 3 M hops/s (best of both ring styles)"),
    Workload("timers", "timers inserted and cancelled", "timers/s",
             "Inside a process, N times: `t = send_after(self(), \"t\", d)` with d cycling over "
             "1..11 s, then `cancel_timer(t)` (checked to return the seconds left, never False). "
             "Afterwards the mailbox is checked to be empty.",
             3_000_000, ">= 3 M insert+cancel/s"),
    Workload("memory", "memory per idle GenServer", "bytes/proc",
             "Start K idle GenServers (state: an int) and keep them. The time is the start "
             "rate; the figure is the memory per process: Python heap growth measured with "
             "tracemalloc in this process, and RSS growth measured in a fresh subprocess. "
             "Erlang: `erlang:memory(processes)` growth.",
             1024, "<= 1 KiB per idle GenServer", lower_is_better=True),
]}

# Workloads of other issues, benchmarked in their own bench/test_bench_*.py files (they use
# this module's modes and helpers): (id, title, pyotp module, substring of the
# pytest-benchmark group that covers it). Reported as missing while no such group ran.
PLANNED: List[Tuple[str, str, str, str]] = [
    ("fanout", "fan-out broadcast to 10k subscribers", "src/pyotp/pubsub.py", "pubsub-broadcast"),
    ("supervisor_restart", "supervisor restart", "src/pyotp/supervisor.py", "supervisor"),
    ("statem_timeout", "gen_statem state-timeout churn", "src/pyotp/gen_statem.py", "state-timeout"),
    ("dist_send", "distribution one-way messages between two OS processes", "src/pyotp/dist", "dist-oneway"),
    ("dist_call", "distribution remote calls between two OS processes", "src/pyotp/dist", "dist-call"),
]

IMPLS: List[str] = ["pyotp", "pyotp-asyncio", "asyncio", "uvloop", "pykka", "thespian", "xoscar"]
PYOTP_IMPLS = ("pyotp", "pyotp-asyncio")
PEER_MODULES = {"uvloop": "uvloop", "pykka": "pykka", "thespian": "thespian", "xoscar": "xoscar"}


@dataclass(frozen=True)
class Mode:
    name: str
    rounds: int
    warmup: int


MODES = {"quick": Mode("quick", 3, 1), "full": Mode("full", 7, 2)}

# Operations per round: base size for fast implementations, and smaller sizes for the peers
# that run at a few thousand per second (so a round stays near 0.1-0.5 s for everybody).
# The rate is always ops / median round time, so rates stay comparable.
_SIZES: Dict[str, Dict[str, Dict[str, int]]] = {
    #                 impl -> ops per round; "*" is the default
    "cast":           {"quick": {"*": 100_000, "pykka": 20_000, "thespian": 20_000, "xoscar": 2_000},
                       "full":  {"*": 300_000, "pykka": 50_000, "thespian": 50_000, "xoscar": 5_000}},
    "call":           {"quick": {"*": 20_000, "pykka": 5_000, "thespian": 5_000, "xoscar": 1_000},
                       "full":  {"*": 100_000, "asyncio": 50_000, "uvloop": 50_000,
                                 "pykka": 10_000, "thespian": 10_000, "xoscar": 3_000}},
    "thread_call":    {"quick": {"*": 5_000, "pykka": 3_000, "xoscar": 1_000},
                       "full":  {"*": 20_000, "pyotp-asyncio": 10_000, "asyncio": 10_000, "uvloop": 10_000,
                                 "pykka": 10_000, "xoscar": 2_000}},
    "spawn":          {"quick": {"*": 20_000, "pykka": 300, "thespian": 2_000, "xoscar": 300},
                       "full":  {"*": 50_000, "pykka": 500, "thespian": 2_000, "xoscar": 500}},
    # ring sizes are laps of the 1000-process ring (hops = 1000 * laps)
    "ring_receive":   {"quick": {"*": 100, "asyncio": 30, "uvloop": 30},
                       "full":  {"*": 300, "asyncio": 50, "uvloop": 50}},
    "ring_genserver": {"quick": {"*": 100, "asyncio": 30, "uvloop": 30, "pykka": 3, "thespian": 20, "xoscar": 1},
                       "full":  {"*": 300, "asyncio": 50, "uvloop": 50, "pykka": 10, "thespian": 50, "xoscar": 3}},
    "timers":         {"quick": {"*": 200_000, "asyncio": 50_000, "uvloop": 50_000},
                       "full":  {"*": 1_000_000, "asyncio": 100_000, "uvloop": 100_000}},
    # memory sizes are processes kept alive at once
    "memory":         {"quick": {"*": 10_000, "pykka": 300, "thespian": 2_000, "xoscar": 300},
                       "full":  {"*": 50_000, "asyncio": 20_000, "uvloop": 20_000,
                                 "pykka": 500, "thespian": 2_000, "xoscar": 500}},
}

RING_SIZE = 1000


def size(workload: str, impl: str, mode: str) -> int:
    """Operations per round for (workload, impl) in mode "quick" or "full"."""
    s = _SIZES[workload][mode]
    return s.get(impl, s["*"])


def ops_per_round(workload: str, n: int) -> int:
    """Operations a round of size n performs (ring sizes are laps)."""
    return n * RING_SIZE if workload.startswith("ring") else n


# =========================================================================================
# Registry of implementations

_REGISTRY: Dict[Tuple[str, str], Callable[..., "Bench"]] = {}
NOT_APPLICABLE: Dict[Tuple[str, str], str] = {
    ("ring_receive", "pykka"): "no receive inside an actor (handler-only model)",
    ("ring_receive", "thespian"): "no receive inside an actor (handler-only model)",
    ("ring_receive", "xoscar"): "no receive inside an actor (method-call model)",
    ("timers", "pykka"): "no timer API",
    ("timers", "thespian"): "wakeupAfter cannot be cancelled",
    ("timers", "xoscar"): "no timer API",
    ("thread_call", "erlang"): "no OS threads calling into the VM",
}


def register(workload: str, *impls: str) -> Callable[[Callable[..., "Bench"]], Callable[..., "Bench"]]:
    def deco(cls: Callable[..., "Bench"]) -> Callable[..., "Bench"]:
        for impl in impls:
            _REGISTRY[(workload, impl)] = cls
        return cls
    return deco


def peer_status(impl: str) -> Optional[str]:
    """None if impl can run here, else why not (e.g. "not installed: pip install pykka")."""
    mod = PEER_MODULES.get(impl)
    if impl == "pyotp":
        return None
    if impl == "pyotp-asyncio":
        return None
    if impl == "erlang":
        return None if shutil.which("escript") else "escript not found (apt-get install erlang-base)"
    if mod is not None and importlib.util.find_spec(mod) is None:
        return "not installed (pip install %s, or pip install .[bench])" % mod
    return None


def cases() -> List[Tuple[str, str]]:
    """Every (workload, impl) this machine can run, in report order."""
    return [(w, i) for w in WORKLOADS for i in IMPLS
            if (w, i) in _REGISTRY and peer_status(i) is None]


def skipped_cases() -> List[Tuple[str, str, str]]:
    """(workload, impl, why) for every pair that is not run: missing peers, not applicable."""
    out = []
    for w in WORKLOADS:
        for i in IMPLS + ["erlang"]:
            if (w, i) in NOT_APPLICABLE:
                out.append((w, i, "n/a: " + NOT_APPLICABLE[(w, i)]))
            elif i != "erlang" and (w, i) not in _REGISTRY:
                out.append((w, i, "n/a: not implemented for this peer"))
            elif peer_status(i) is not None:
                out.append((w, i, "missing: " + str(peer_status(i))))
    return out


def missing_workloads(groups: Optional[List[str]] = None) -> List[Tuple[str, str, str]]:
    """(id, title, why) of the planned workloads that no benchmark group covered. `groups`:
    the groups that ran (None: only look at which modules exist)."""
    out = []
    for wid, title, path, key in PLANNED:
        if groups is not None and any(key in g for g in groups):
            continue
        where = ROOT / path
        if not where.exists() or (where.is_dir() and not any(where.glob("*.py"))):
            out.append((wid, title, "%s does not exist yet" % path))
        elif groups is None:
            out.append((wid, title, "%s exists; see its bench/test_bench_*.py group, if any" % path))
        else:
            out.append((wid, title, "%s exists but no benchmark group matching %r ran" % (path, key)))
    return out


def make(workload: str, impl: str, n: int) -> "Bench":
    """A fresh benchmark object for (workload, impl) doing n operations per round."""
    b = _REGISTRY[(workload, impl)](n)
    b.workload, b.impl = workload, impl
    return b


class Bench:
    """One (workload, impl) pair; see the module documentation."""
    workload = ""
    impl = ""

    def __init__(self, n: int) -> None:
        self.n = n
        self.extra: Dict[str, Any] = {}

    def setup(self) -> None:
        pass

    def before_round(self) -> None:
        pass

    def run(self) -> None:
        raise NotImplementedError

    def measure(self) -> None:
        pass

    def teardown(self) -> None:
        pass


# =========================================================================================
# Driving a benchmark without pytest (compare.py's fallback and the self-check)

def run_direct(workload: str, impl: str, mode: str) -> Dict[str, Any]:
    """Run one (workload, impl) with the mode's warmup and rounds; return its figures."""
    m = MODES[mode]
    n = size(workload, impl, mode)
    b = make(workload, impl, n)
    b.setup()
    times = []
    try:
        for i in range(m.warmup + m.rounds):
            b.before_round()
            t0 = time.perf_counter()
            b.run()
            dt = time.perf_counter() - t0
            if i >= m.warmup:
                times.append(dt)
        b.measure()
    finally:
        b.teardown()
    return result_record(workload, impl, n, times, b.extra)


def result_record(workload: str, impl: str, n: int, times: List[float],
                  extra: Dict[str, Any]) -> Dict[str, Any]:
    med = statistics.median(times)
    ops = ops_per_round(workload, n)
    rec = {"workload": workload, "impl": impl, "n": n, "ops_per_round": ops,
           "rounds": len(times), "median_s": med, "min_s": min(times),
           "rate": ops / med, "unit": WORKLOADS[workload].unit}
    rec.update(extra)
    return rec


# =========================================================================================
# Event loops

def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A fresh loop: "uvloop", "asyncio", or "default" (uvloop when installed, as pyotp.run)."""
    if kind in ("uvloop", "default"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


class LoopThread:
    """An event loop running in a background thread (for the thread_call workload)."""

    def __init__(self, kind: str) -> None:
        self.loop = new_loop(kind)
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True, name="bench-loop")
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Any, timeout: Optional[float] = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
        try:
            self.run(cancel_rest(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


# =========================================================================================
# pyotp

class PCounter(GenServer):
    """The counter every cast/call workload talks to."""

    def init(self, n: int) -> Any:
        return ("ok", n)

    def handle_cast(self, msg: Any, n: int) -> Any:
        return ("noreply", n + 1)

    def handle_call(self, msg: Any, from_: Any, n: int) -> Any:
        if msg == "ping":
            return ("reply", "pong", n + 1)
        if msg == "take":
            return ("reply", n, 0)
        return ("reply", ("error", msg), n)


class PRingNode(GenServer):
    """A ring member: forwards every token to the next process; -1 also stops it."""

    def init(self, nxt: Any) -> Any:
        return ("ok", nxt)

    def handle_info(self, m: Any, nxt: Any) -> Any:
        pyotp.send(nxt, m)
        if m == -1:
            return ("stop", "normal", nxt)
        return ("noreply", nxt)


class PyotpHost:
    """A pyotp node on a loop owned by the benchmark thread; rounds run as processes."""

    def __init__(self, kind: str) -> None:
        self.loop = new_loop(kind)
        self.rt = pyotp.Runtime()
        self.loop.run_until_complete(self.rt.__aenter__())

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.loop.run_until_complete(self.rt.run_process(fn, *args))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.rt.shutdown())
        finally:
            self.loop.close()


class PyotpBench(Bench):
    def setup(self) -> None:
        self.host = PyotpHost("asyncio" if self.impl == "pyotp-asyncio" else "default")
        self.extra["loop"] = loop_name(self.host.loop)
        self.host.run(self.start)

    async def start(self) -> None:
        pass

    def teardown(self) -> None:
        self.host.close()


@register("cast", *PYOTP_IMPLS)
class PyotpCast(PyotpBench):
    async def start(self) -> None:
        self.pid = await PCounter.start(0)

    def run(self) -> None:
        got = self.host.run(self._round, self.pid, self.n)
        check(got == self.n, "cast: server counted %r of %d casts" % (got, self.n))

    @staticmethod
    async def _round(pid: Any, n: int) -> Any:
        cast = GenServer.cast
        for _ in range(n):
            cast(pid, "inc")
        return await GenServer.call(pid, "take")


@register("call", *PYOTP_IMPLS)
class PyotpCall(PyotpCast):
    @staticmethod
    async def _round(pid: Any, n: int) -> Any:
        call = GenServer.call
        pongs = 0
        for _ in range(n):
            if await call(pid, "ping") == "pong":
                pongs += 1
        served = await call(pid, "take")
        return pongs if served == n else ("served", served)


@register("thread_call", *PYOTP_IMPLS)
class PyotpThreadCall(Bench):
    def setup(self) -> None:
        self.node = pyotp.Runtime.start_thread(use_uvloop=self.impl == "pyotp")
        self.extra["loop"] = loop_name(self.node._loop)
        self.pid = self.node.call_in_loop(PCounter.start, 0)

    threads = 1      # bench/test_bench_threads.py also runs it with several calling threads

    def run(self) -> None:
        if self.threads == 1:
            pongs = self._calls(self.n)
        else:
            share = [self.n // self.threads + (i < self.n % self.threads) for i in range(self.threads)]
            got: List[int] = [0] * self.threads

            def worker(i: int) -> None:
                got[i] = self._calls(share[i])
            ts = [threading.Thread(target=worker, args=(i,)) for i in range(self.threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            pongs = sum(got)
        served = self.node.call(self.pid, "take")
        check(pongs == self.n and served == self.n,
              "thread_call: %d pongs, server counted %r, expected %d" % (pongs, served, self.n))

    def _calls(self, n: int) -> int:
        call, pid = self.node.call, self.pid
        pongs = 0
        for _ in range(n):
            if call(pid, "ping") == "pong":
                pongs += 1
        return pongs

    def teardown(self) -> None:
        self.node.stop()


async def _p_noop() -> None:
    return None


@register("spawn", *PYOTP_IMPLS)
class PyotpSpawn(PyotpBench):
    def run(self) -> None:
        got = self.host.run(self._round, self.n)
        check(got == self.n, "spawn: %r normal DOWNs of %d" % (got, self.n))

    @staticmethod
    async def _round(n: int) -> int:
        sm, receive = pyotp.spawn_monitor, pyotp.receive
        for _ in range(n):
            sm(_p_noop)
        down = 0
        for _ in range(n):
            m = await receive()
            if m[0] == "DOWN" and m[4] == "normal":
                down += 1
        return down


async def _p_ring_node(nxt: Any) -> None:
    receive, send = pyotp.receive, pyotp.send
    while True:
        m = await receive()
        send(nxt, m)
        if m == -1:
            return


async def _p_ring_home(size: int, gen: bool) -> int:
    """The ring's home process: builds the ring (itself + size-1 members) and runs laps on
    request: ("go", laps, reply_to) -> ("done", laps_ok); "stop" stops the ring."""
    me = pyotp.self()
    nxt = me
    for _ in range(size - 1):
        nxt = (await PRingNode.start(nxt)) if gen else pyotp.spawn(_p_ring_node, nxt)
    first = nxt
    receive, send = pyotp.receive, pyotp.send
    while True:
        cmd = await receive()
        if cmd == "stop":
            send(first, -1)
            await receive(lambda m: m == -1)
            return 0
        _, laps, reply_to = cmd
        ok = 0
        for lap in range(laps):
            send(first, lap)
            if await receive() == lap:
                ok += 1
        send(reply_to, ("done", ok))


@register("ring_receive", *PYOTP_IMPLS)
class PyotpRing(PyotpBench):
    gen = False

    async def start(self) -> None:
        self.home = pyotp.spawn(_p_ring_home, RING_SIZE, self.gen)

    def run(self) -> None:
        got = self.host.run(self._round, self.home, self.n)
        check(got == ("done", self.n), "ring: %r, expected %d laps" % (got, self.n))

    @staticmethod
    async def _round(home: Any, laps: int) -> Any:
        pyotp.send(home, ("go", laps, pyotp.self()))
        return await pyotp.receive()

    def teardown(self) -> None:
        self.host.run(self._stop, self.home)
        self.host.close()

    @staticmethod
    async def _stop(home: Any) -> None:
        ref = pyotp.monitor(home)
        pyotp.send(home, "stop")
        await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)


@register("ring_genserver", *PYOTP_IMPLS)
class PyotpRingGen(PyotpRing):
    gen = True


_DELAYS = [1.0 + (i % 1000) / 100.0 for i in range(1024)]


@register("timers", *PYOTP_IMPLS)
class PyotpTimers(PyotpBench):
    def run(self) -> None:
        got = self.host.run(self._round, self.n)
        check(got == (self.n, "empty"), "timers: %r, expected %d cancelled and no message" % (got, self.n))

    @staticmethod
    async def _round(n: int) -> Any:
        me = pyotp.self()
        send_after, cancel = pyotp.send_after, pyotp.cancel_timer
        delays = _DELAYS
        ok = 0
        for i in range(n):
            t = send_after(me, "t", delays[i & 1023])
            if cancel(t) is not False:
                ok += 1
        try:
            await pyotp.receive(timeout=0)
            return (ok, "a cancelled timer delivered its message")
        except TimeoutError:
            return (ok, "empty")


class MemoryMixin:
    """Memory workloads: keep K idle servers; tracemalloc here, RSS in a subprocess."""
    n: int
    extra: Dict[str, Any]
    impl: str

    def start_many(self, k: int) -> Any:      # start k idle servers, return a handle
        raise NotImplementedError

    def stop_many(self, handle: Any) -> None:
        raise NotImplementedError

    def count_alive(self, handle: Any) -> int:   # how many of handle's servers are alive
        raise NotImplementedError

    def measure(self) -> None:
        self.before_round()          # stop the last round's servers
        k = self.n
        warm = self.start_many(min(100, k))  # code paths and class caches warmed up
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            h = self.start_many(k)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.extra["bytes_per_process_tracemalloc"] = round((after - before) / k, 1)
        self.stop_many(h)
        self.stop_many(warm)
        rss = rss_in_subprocess(self.impl, k)
        if rss is not None:
            self.extra["bytes_per_process_rss"] = rss
        self.extra["processes"] = k


def rss_in_subprocess(impl: str, k: int) -> Optional[float]:
    """RSS growth per idle server, measured in a fresh interpreter (see _rss_main)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")] if p)
    try:
        out = subprocess.run([sys.executable, "-m", "bench.workloads", "rss", impl, str(k)],
                             capture_output=True, text=True, timeout=300, env=env, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return None
    m = re.search(r"RSS_PER_PROCESS ([0-9.]+)", out.stdout)
    if not m:
        sys.stderr.write("rss subprocess for %s failed:\n%s\n" % (impl, out.stderr[-2000:]))
        return None
    return float(m.group(1))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_main(impl: str, k: int) -> None:
    b = make("memory", impl, k)
    b.setup()
    try:
        warm = b.start_many(min(100, k))
        gc.collect()
        before = _rss_bytes()
        h = b.start_many(k)
        gc.collect()
        after = _rss_bytes()
        check(b.count_alive(h) == k, "memory: servers died")
        print("RSS_PER_PROCESS %.1f" % ((after - before) / k))
        b.stop_many(h)
        b.stop_many(warm)
    finally:
        b.teardown()


@register("memory", *PYOTP_IMPLS)
class PyotpMemory(MemoryMixin, PyotpBench):
    def setup(self) -> None:
        super().setup()
        self.held: List[Any] = []

    def before_round(self) -> None:
        if self.held:
            self.stop_many(self.held)
            self.held = []

    def run(self) -> None:
        self.held = self.start_many(self.n)
        alive = self.count_alive(self.held)
        check(alive == self.n, "memory: %d of %d servers alive" % (alive, self.n))

    def start_many(self, k: int) -> Any:
        return self.host.run(self._start, k)

    @staticmethod
    async def _start(k: int) -> List[Any]:
        start = PCounter.start
        return [await start(0) for _ in range(k)]

    def stop_many(self, pids: Any) -> None:
        self.host.run(self._kill, pids)

    @staticmethod
    async def _kill(pids: List[Any]) -> None:
        refs = set()
        for p in pids:
            refs.add(pyotp.monitor(p))
            pyotp.exit(p, "kill")
        while refs:
            m = await pyotp.receive()
            refs.discard(m[1])

    def count_alive(self, pids: Any) -> int:
        return sum(1 for p in pids if pyotp.is_alive(p))

    def teardown(self) -> None:
        self.before_round()
        super().teardown()


# =========================================================================================
# The baseline: a hand-written asyncio actor (asyncio and uvloop)

_CAST, _CALL, _INFO = 0, 1, 2


class AioServer:
    """A GenServer-shaped actor written by hand on asyncio: one Queue, one task draining it,
    a future per call. Callbacks and returns as pyotp's, so it does the same work per
    message."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.q: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._main())

    async def _main(self) -> Any:
        get = self.q.get
        while True:
            kind, msg, fut = await get()
            if kind == _CALL:
                r = self.handle_call(msg, fut, self.state)
                if r[0] == "reply":
                    fut.set_result(r[1])
                    self.state = r[2]
                    continue
            elif kind == _CAST:
                r = self.handle_cast(msg, self.state)
            else:
                r = self.handle_info(msg, self.state)
            if r[0] == "noreply":
                self.state = r[1]
            elif r[0] == "stop":
                return r[1]

    def handle_call(self, msg: Any, fut: Any, state: Any) -> Any:
        raise NotImplementedError

    def handle_cast(self, msg: Any, state: Any) -> Any:
        raise NotImplementedError

    def handle_info(self, msg: Any, state: Any) -> Any:
        return ("noreply", state)

    def cast(self, msg: Any) -> None:
        self.q.put_nowait((_CAST, msg, None))

    def send(self, msg: Any) -> None:
        self.q.put_nowait((_INFO, msg, None))

    async def call(self, msg: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.q.put_nowait((_CALL, msg, fut))
        return await fut

    def call_from_thread(self, loop: asyncio.AbstractEventLoop, msg: Any) -> Any:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        loop.call_soon_threadsafe(self.q.put_nowait, (_CALL, msg, fut))
        return fut.result()


class AioCounter(AioServer):
    def handle_cast(self, msg: Any, n: int) -> Any:
        return ("noreply", n + 1)

    def handle_call(self, msg: Any, fut: Any, n: int) -> Any:
        if msg == "ping":
            return ("reply", "pong", n + 1)
        if msg == "take":
            return ("reply", n, 0)
        return ("reply", ("error", msg), n)


class AioRingNode(AioServer):
    def handle_info(self, m: Any, nxt: Any) -> Any:
        nxt.send(m)
        if m == -1:
            return ("stop", "normal")
        return ("noreply", nxt)


class _QueueBox:
    """The ring's home seen as a ring member: send() puts into the driver's queue."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[Any] = asyncio.Queue()
        self.send = self.q.put_nowait


class AioBench(Bench):
    def setup(self) -> None:
        self.loop = new_loop(self.impl)
        self.extra["loop"] = loop_name(self.loop)
        self.loop.run_until_complete(self.start())

    async def start(self) -> None:
        pass

    def go(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.go(self.stop())
        self.loop.close()

    async def stop(self) -> None:
        pass


@register("cast", "asyncio", "uvloop")
class AioCast(AioBench):
    async def start(self) -> None:
        self.srv = AioCounter(0)

    async def stop(self) -> None:
        self.srv.task.cancel()

    def run(self) -> None:
        got = self.go(self._round())
        check(got == self.n, "cast: server counted %r of %d" % (got, self.n))

    async def _round(self) -> Any:
        cast = self.srv.cast
        for _ in range(self.n):
            cast("inc")
        return await self.srv.call("take")


@register("call", "asyncio", "uvloop")
class AioCall(AioCast):
    async def _round(self) -> Any:
        call = self.srv.call
        pongs = 0
        for _ in range(self.n):
            if await call("ping") == "pong":
                pongs += 1
        served = await call("take")
        return pongs if served == self.n else ("served", served)


@register("thread_call", "asyncio", "uvloop")
class AioThreadCall(Bench):
    def setup(self) -> None:
        self.lt = LoopThread(self.impl)
        self.extra["loop"] = loop_name(self.lt.loop)

        async def mk() -> AioCounter:
            return AioCounter(0)
        self.srv = self.lt.run(mk())

    def run(self) -> None:
        call, loop = self.srv.call_from_thread, self.lt.loop
        pongs = 0
        for _ in range(self.n):
            if call(loop, "ping") == "pong":
                pongs += 1
        served = call(loop, "take")
        check(pongs == self.n and served == self.n,
              "thread_call: %d pongs, server counted %r, expected %d" % (pongs, served, self.n))

    def teardown(self) -> None:
        self.lt.close()     # cancels the server's task


async def _aio_noop() -> None:
    return None


@register("spawn", "asyncio", "uvloop")
class AioSpawn(AioBench):
    def run(self) -> None:
        got = self.go(self._round())
        check(got == self.n, "spawn: %r of %d tasks finished" % (got, self.n))

    async def _round(self) -> int:
        create = asyncio.get_running_loop().create_task
        tasks = [create(_aio_noop()) for _ in range(self.n)]
        done, _ = await asyncio.wait(tasks)
        return sum(1 for t in done if t.exception() is None)


async def _aio_ring_node(inbox: "asyncio.Queue[Any]", out: "asyncio.Queue[Any]") -> None:
    get, put = inbox.get, out.put_nowait
    while True:
        m = await get()
        put(m)
        if m == -1:
            return


@register("ring_receive", "asyncio", "uvloop")
class AioRing(AioBench):
    async def start(self) -> None:
        self.home: asyncio.Queue[Any] = asyncio.Queue()
        nxt = self.home
        self.tasks = []
        loop = asyncio.get_running_loop()
        for _ in range(RING_SIZE - 1):
            q: asyncio.Queue[Any] = asyncio.Queue()
            self.tasks.append(loop.create_task(_aio_ring_node(q, nxt)))
            nxt = q
        self.first = nxt

    def run(self) -> None:
        got = self.go(self._round())
        check(got == self.n, "ring: %d of %d laps" % (got, self.n))

    async def _round(self) -> int:
        ok = 0
        put, get = self.first.put_nowait, self.home.get
        for lap in range(self.n):
            put(lap)
            if await get() == lap:
                ok += 1
        return ok

    async def stop(self) -> None:
        self.first.put_nowait(-1)
        check(await self.home.get() == -1, "ring: stop token lost")
        await asyncio.gather(*self.tasks)


@register("ring_genserver", "asyncio", "uvloop")
class AioRingGen(AioBench):
    async def start(self) -> None:
        self.home = _QueueBox()
        nxt: Any = self.home
        self.nodes = []
        for _ in range(RING_SIZE - 1):
            nxt = AioRingNode(nxt)
            self.nodes.append(nxt)
        self.first = nxt

    run = AioRing.run

    async def _round(self) -> int:
        ok = 0
        send, get = self.first.send, self.home.q.get
        for lap in range(self.n):
            send(lap)
            if await get() == lap:
                ok += 1
        return ok

    async def stop(self) -> None:
        self.first.send(-1)
        check(await self.home.q.get() == -1, "ring: stop token lost")
        await asyncio.gather(*(x.task for x in self.nodes))


def _aio_timer_cb() -> None:
    raise BenchError("a cancelled asyncio timer fired")


@register("timers", "asyncio", "uvloop")
class AioTimers(AioBench):
    def run(self) -> None:
        got = self.go(self._round())
        check(got == self.n, "timers: %d of %d cancelled" % (got, self.n))

    async def _round(self) -> int:
        call_later = asyncio.get_running_loop().call_later
        delays = _DELAYS
        ok = 0
        for i in range(self.n):
            h = call_later(delays[i & 1023], _aio_timer_cb)
            h.cancel()
            if h.cancelled():
                ok += 1
        return ok


@register("memory", "asyncio", "uvloop")
class AioMemory(MemoryMixin, AioBench):
    async def start(self) -> None:
        self.held: List[Any] = []

    def before_round(self) -> None:
        if self.held:
            self.stop_many(self.held)
            self.held = []

    def run(self) -> None:
        self.held = self.start_many(self.n)
        alive = self.count_alive(self.held)
        check(alive == self.n, "memory: %d of %d actors alive" % (alive, self.n))

    def start_many(self, k: int) -> Any:
        async def mk() -> List[AioCounter]:
            out = [AioCounter(0) for _ in range(k)]
            await asyncio.sleep(0)      # let every task start and park in q.get()
            return out
        return self.go(mk())

    def stop_many(self, servers: Any) -> None:
        async def stop() -> None:
            for s in servers:
                s.task.cancel()
            await asyncio.gather(*(s.task for s in servers), return_exceptions=True)
        self.go(stop())

    def count_alive(self, servers: Any) -> int:
        return sum(1 for s in servers if not s.task.done())

    async def stop(self) -> None:
        self.before_round()  # type: ignore[misc]


# =========================================================================================
# Pykka (a thread per actor)

def _pykka() -> Any:
    import pykka
    return pykka


class _PykkaClasses:
    """Pykka actor classes, made on first use so that importing this module never needs
    Pykka."""
    made: Dict[str, Any] = {}

    @classmethod
    def get(cls) -> Dict[str, Any]:
        if cls.made:
            return cls.made
        pykka = _pykka()

        class Counter(pykka.ThreadingActor):
            def __init__(self) -> None:
                super().__init__()
                self.n = 0

            def on_receive(self, msg: Any) -> Any:
                if msg == "inc":
                    self.n += 1
                elif msg == "ping":
                    self.n += 1
                    return "pong"
                elif msg == "take":
                    n, self.n = self.n, 0
                    return n
                return None

        class Pinger(pykka.ThreadingActor):
            def on_receive(self, msg: Any) -> Any:
                _, k, target = msg
                pongs = 0
                for _ in range(k):
                    if target.ask("ping") == "pong":
                        pongs += 1
                return pongs

        class Noop(pykka.ThreadingActor):
            def on_receive(self, msg: Any) -> Any:
                return None

        class RingNode(pykka.ThreadingActor):
            def __init__(self, nxt: Any) -> None:
                super().__init__()
                self.nxt = nxt

            def on_receive(self, m: Any) -> Any:
                self.nxt.tell(m)
                return None

        class Home(pykka.ThreadingActor):
            def __init__(self, q: "queue.SimpleQueue[Any]") -> None:
                super().__init__()
                self.q = q

            def on_receive(self, m: Any) -> Any:
                self.q.put(m)
                return None

        cls.made.update(Counter=Counter, Pinger=Pinger, Noop=Noop, RingNode=RingNode, Home=Home)
        return cls.made


class PykkaBench(Bench):
    def setup(self) -> None:
        self.A = _PykkaClasses.get()
        self.refs: List[Any] = []

    def teardown(self) -> None:
        for r in self.refs:
            r.stop()


@register("cast", "pykka")
class PykkaCast(PykkaBench):
    def setup(self) -> None:
        super().setup()
        self.c = self.A["Counter"].start()
        self.refs.append(self.c)

    def run(self) -> None:
        tell = self.c.tell
        for _ in range(self.n):
            tell("inc")
        got = self.c.ask("take")
        check(got == self.n, "cast: counted %r of %d" % (got, self.n))


@register("call", "pykka")
class PykkaCall(PykkaCast):
    def setup(self) -> None:
        super().setup()
        self.p = self.A["Pinger"].start()
        self.refs.append(self.p)

    def run(self) -> None:
        pongs = self.p.ask(("run", self.n, self.c))
        served = self.c.ask("take")
        check(pongs == self.n and served == self.n, "call: %r pongs, %r served" % (pongs, served))


@register("thread_call", "pykka")
class PykkaThreadCall(PykkaCast):
    def run(self) -> None:
        ask = self.c.ask
        pongs = sum(1 for _ in range(self.n) if ask("ping") == "pong")
        served = ask("take")
        check(pongs == self.n and served == self.n, "thread_call: %r pongs, %r served" % (pongs, served))


@register("spawn", "pykka")
class PykkaSpawn(PykkaBench):
    def run(self) -> None:
        Noop = self.A["Noop"]
        refs = [Noop.start() for _ in range(self.n)]
        futs = [r.stop(block=False) for r in refs]
        stopped = sum(1 for f in futs if f.get(timeout=60))
        alive = sum(1 for r in refs if r.is_alive())
        check(stopped == self.n and alive == 0, "spawn: %d stopped, %d alive" % (stopped, alive))


@register("ring_genserver", "pykka")
class PykkaRing(PykkaBench):
    def setup(self) -> None:
        super().setup()
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        nxt = self.A["Home"].start(self.q)
        self.refs.append(nxt)
        for _ in range(RING_SIZE - 1):
            nxt = self.A["RingNode"].start(nxt)
            self.refs.append(nxt)
        self.first = nxt

    def run(self) -> None:
        ok = 0
        tell, get = self.first.tell, self.q.get
        for lap in range(self.n):
            tell(lap)
            if get(timeout=60) == lap:
                ok += 1
        check(ok == self.n, "ring: %d of %d laps" % (ok, self.n))


@register("memory", "pykka")
class PykkaMemory(MemoryMixin, PykkaBench):
    def before_round(self) -> None:
        self.stop_many(self.refs)
        self.refs = []

    def run(self) -> None:
        self.refs = self.start_many(self.n)
        check(self.count_alive(self.refs) == self.n, "memory: actors died")

    def start_many(self, k: int) -> Any:
        C = self.A["Counter"]
        return [C.start() for _ in range(k)]

    def stop_many(self, refs: Any) -> None:
        for f in [r.stop(block=False) for r in refs]:
            f.get(timeout=60)

    def count_alive(self, refs: Any) -> int:
        return sum(1 for r in refs if r.is_alive())


# =========================================================================================
# Thespian (in-process simpleSystemBase)

class _ThespianClasses:
    made: Dict[str, Any] = {}

    @classmethod
    def get(cls) -> Dict[str, Any]:
        if cls.made:
            return cls.made
        from thespian.actors import Actor, ActorExitRequest

        class Counter(Actor):
            n = 0

            def receiveMessage(self, msg: Any, sender: Any) -> None:
                if msg == "inc":
                    self.n += 1
                elif msg == "ping":
                    self.n += 1
                    self.send(sender, "pong")
                elif msg == "take":
                    self.send(sender, self.n)
                    self.n = 0

        class Pinger(Actor):
            """Call round trip as Thespian does it: send, and the reply is a message."""
            left = 0
            pongs = 0
            origin = None
            target = None

            def receiveMessage(self, msg: Any, sender: Any) -> None:
                if isinstance(msg, tuple) and msg[0] == "run":
                    _, self.left, self.target = msg
                    self.origin, self.pongs = sender, 0
                    self.send(self.target, "ping")
                elif msg == "pong":
                    self.pongs += 1
                    self.left -= 1
                    if self.left:
                        self.send(self.target, "ping")
                    else:
                        self.send(self.origin, self.pongs)

        class Noop(Actor):
            exits = 0

            def receiveMessage(self, msg: Any, sender: Any) -> None:
                if isinstance(msg, ActorExitRequest):
                    type(self).exits += 1

        class RingNode(Actor):
            nxt = None

            def receiveMessage(self, m: Any, sender: Any) -> None:
                if isinstance(m, int):
                    self.send(self.nxt, m)
                elif isinstance(m, tuple) and m[0] == "next":
                    self.nxt = m[1]
                elif m == "home":
                    self.nxt = sender
                    self.send(sender, "ok")

        cls.made.update(Counter=Counter, Pinger=Pinger, Noop=Noop, RingNode=RingNode,
                        ActorExitRequest=ActorExitRequest)
        return cls.made


class ThespianBench(Bench):
    def setup(self) -> None:
        from thespian.actors import ActorSystem
        self.A = _ThespianClasses.get()
        self.asys = ActorSystem("simpleSystemBase")
        self.extra["base"] = "simpleSystemBase"

    def ask(self, addr: Any, msg: Any) -> Any:
        return self.asys.ask(addr, msg, 60)

    def teardown(self) -> None:
        self.asys.shutdown()


@register("cast", "thespian")
class ThespianCast(ThespianBench):
    def setup(self) -> None:
        super().setup()
        self.c = self.asys.createActor(self.A["Counter"])

    def run(self) -> None:
        tell, c = self.asys.tell, self.c
        for _ in range(self.n):
            tell(c, "inc")
        got = self.ask(c, "take")
        check(got == self.n, "cast: counted %r of %d" % (got, self.n))


@register("call", "thespian")
class ThespianCall(ThespianCast):
    def setup(self) -> None:
        super().setup()
        self.p = self.asys.createActor(self.A["Pinger"])

    def run(self) -> None:
        pongs = self.ask(self.p, ("run", self.n, self.c))
        served = self.ask(self.c, "take")
        check(pongs == self.n and served == self.n, "call: %r pongs, %r served" % (pongs, served))


@register("thread_call", "thespian")
class ThespianThreadCall(ThespianCast):
    """simpleSystemBase runs actors in the caller's thread: this is "call from outside the
    runtime" (ActorSystem.ask), there is no other thread."""

    def run(self) -> None:
        c = self.c
        pongs = sum(1 for _ in range(self.n) if self.ask(c, "ping") == "pong")
        served = self.ask(c, "take")
        check(pongs == self.n and served == self.n, "thread_call: %r pongs, %r served" % (pongs, served))


@register("spawn", "thespian")
class ThespianSpawn(ThespianBench):
    def run(self) -> None:
        Noop, Exit = self.A["Noop"], self.A["ActorExitRequest"]
        before = Noop.exits
        create, tell = self.asys.createActor, self.asys.tell
        addrs = [create(Noop) for _ in range(self.n)]
        for a in addrs:
            tell(a, Exit())
        got = Noop.exits - before
        check(got == self.n, "spawn: %d of %d actors exited" % (got, self.n))


@register("ring_genserver", "thespian")
class ThespianRing(ThespianBench):
    def setup(self) -> None:
        super().setup()
        RingNode = self.A["RingNode"]
        nodes = [self.asys.createActor(RingNode) for _ in range(RING_SIZE - 1)]
        for a, b in zip(nodes, nodes[1:]):
            self.asys.tell(a, ("next", b))
        check(self.ask(nodes[-1], "home") == "ok", "ring: home not set")
        self.first = nodes[0]

    def run(self) -> None:
        ok = 0
        for lap in range(self.n):
            if self.ask(self.first, lap) == lap:
                ok += 1
        check(ok == self.n, "ring: %d of %d laps" % (ok, self.n))


@register("memory", "thespian")
class ThespianMemory(MemoryMixin, ThespianBench):
    def setup(self) -> None:
        super().setup()
        self.held: List[Any] = []

    def before_round(self) -> None:
        self.stop_many(self.held)
        self.held = []

    def run(self) -> None:
        self.held = self.start_many(self.n)
        check(len(self.held) == self.n, "memory: actors missing")

    def start_many(self, k: int) -> Any:
        C = self.A["Counter"]
        out = [self.asys.createActor(C) for _ in range(k)]
        return out

    def stop_many(self, addrs: Any) -> None:
        Exit = self.A["ActorExitRequest"]
        for a in addrs:
            self.asys.tell(a, Exit())

    def count_alive(self, addrs: Any) -> int:
        return len(addrs)      # creation returned an address for each (it raises otherwise)


# =========================================================================================
# xoscar (in-process main pool)

_XO_HOMES: Dict[str, "asyncio.Queue[Any]"] = {}


class _XoscarClasses:
    made: Dict[str, Any] = {}

    @classmethod
    def get(cls) -> Dict[str, Any]:
        if cls.made:
            return cls.made
        import xoscar as xo

        class Counter(xo.Actor):
            def __init__(self) -> None:
                super().__init__()
                self.n = 0

            def inc(self) -> None:
                self.n += 1

            def ping(self) -> str:
                self.n += 1
                return "pong"

            def take(self) -> int:
                n, self.n = self.n, 0
                return n

        class Pinger(xo.Actor):
            async def run(self, k: int, target: Any) -> int:
                pongs = 0
                for _ in range(k):
                    if await target.ping() == "pong":
                        pongs += 1
                return pongs

        class Noop(xo.Actor):
            pass

        class RingNode(xo.Actor):
            def __init__(self, nxt: Any) -> None:
                super().__init__()
                self.nxt = nxt

            async def hop(self, m: int) -> None:
                await self.nxt.hop.tell(m)

        class Home(xo.Actor):
            def __init__(self, key: str) -> None:
                super().__init__()
                self.key = key

            def hop(self, m: int) -> None:
                _XO_HOMES[self.key].put_nowait(m)

        cls.made.update(xo=xo, Counter=Counter, Pinger=Pinger, Noop=Noop, RingNode=RingNode, Home=Home)
        return cls.made


class XoscarBench(Bench):
    def setup(self) -> None:
        self.A = _XoscarClasses.get()
        self.xo = self.A["xo"]
        self.lt = LoopThread("asyncio")
        self.extra["loop"] = "asyncio"
        self.pool = self.lt.run(self.xo.create_actor_pool("127.0.0.1", n_process=0))
        self.addr = self.pool.external_address
        self.lt.run(self.start())

    async def start(self) -> None:
        pass

    def go(self, coro: Any) -> Any:
        return self.lt.run(coro, timeout=600)

    def teardown(self) -> None:
        try:
            self.lt.run(self.pool.stop())
        finally:
            self.lt.close()


@register("cast", "xoscar")
class XoscarCast(XoscarBench):
    async def start(self) -> None:
        self.c = await self.xo.create_actor(self.A["Counter"], address=self.addr, uid="counter")

    def run(self) -> None:
        got = self.go(self._round())
        check(got == self.n, "cast: counted %r of %d" % (got, self.n))

    async def _round(self) -> Any:
        tell = self.c.inc.tell
        for _ in range(self.n):
            await tell()
        return await self.c.take()


@register("call", "xoscar")
class XoscarCall(XoscarCast):
    async def start(self) -> None:
        await super().start()
        self.p = await self.xo.create_actor(self.A["Pinger"], address=self.addr, uid="pinger")

    async def _round(self) -> Any:
        pongs = await self.p.run(self.n, self.c)
        served = await self.c.take()
        return pongs if served == self.n else ("served", served)


@register("thread_call", "xoscar")
class XoscarThreadCall(XoscarCast):
    def run(self) -> None:
        loop, ping = self.lt.loop, self.c.ping
        pongs = 0
        for _ in range(self.n):
            if asyncio.run_coroutine_threadsafe(ping(), loop).result() == "pong":
                pongs += 1
        served = self.go(self.c.take())
        check(pongs == self.n and served == self.n, "thread_call: %r pongs, %r served" % (pongs, served))


@register("spawn", "xoscar")
class XoscarSpawn(XoscarBench):
    rounds_done = 0

    def run(self) -> None:
        got = self.go(self._round())
        check(got == self.n, "spawn: %d of %d actors created and destroyed" % (got, self.n))

    async def _round(self) -> int:
        xo, Noop = self.xo, self.A["Noop"]
        self.rounds_done += 1
        tag = "r%d_" % self.rounds_done
        done = 0
        for i in range(self.n):
            ref = await xo.create_actor(Noop, address=self.addr, uid=tag + str(i))
            await xo.destroy_actor(ref)
            done += 1
        if await xo.has_actor(ref):
            return -1
        return done


@register("ring_genserver", "xoscar")
class XoscarRing(XoscarBench):
    async def start(self) -> None:
        xo = self.xo
        self.key = "ring%d" % id(self)
        self.home_q: asyncio.Queue[Any] = asyncio.Queue()
        _XO_HOMES[self.key] = self.home_q
        nxt = await xo.create_actor(self.A["Home"], self.key, address=self.addr, uid="home")
        for i in range(RING_SIZE - 1):
            nxt = await xo.create_actor(self.A["RingNode"], nxt, address=self.addr, uid="n%d" % i)
        self.first = nxt

    def run(self) -> None:
        got = self.go(self._round())
        check(got == self.n, "ring: %d of %d laps" % (got, self.n))

    async def _round(self) -> int:
        ok = 0
        for lap in range(self.n):
            await self.first.hop.tell(lap)
            if await self.home_q.get() == lap:
                ok += 1
        return ok


@register("memory", "xoscar")
class XoscarMemory(MemoryMixin, XoscarBench):
    async def start(self) -> None:
        self.held: List[Any] = []
        self.made = 0

    def before_round(self) -> None:
        self.stop_many(self.held)
        self.held = []

    def run(self) -> None:
        self.held = self.start_many(self.n)
        check(len(self.held) == self.n, "memory: actors missing")

    def start_many(self, k: int) -> Any:
        async def mk() -> List[Any]:
            out = []
            for _ in range(k):
                self.made += 1
                out.append(await self.xo.create_actor(self.A["Counter"], address=self.addr,
                                                      uid="m%d" % self.made))
            return out
        return self.go(mk())

    def stop_many(self, refs: Any) -> None:
        async def rm() -> None:
            for r in refs:
                await self.xo.destroy_actor(r)
        self.go(rm())

    def count_alive(self, addrs: Any) -> int:
        return len(addrs)      # creation returned an address for each (it raises otherwise)


# =========================================================================================
# Erlang/OTP through bench/erlang/bench.escript

ESCRIPT = HERE / "erlang" / "bench.escript"


def erlang_version() -> Optional[str]:
    erl = shutil.which("erl")
    if not erl:
        return None
    try:
        out = subprocess.run([erl, "-noshell", "-eval",
                              'io:format("~s ~s", [erlang:system_info(otp_release), '
                              'erlang:system_info(version)]), halt().'],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    return "OTP %s (erts %s)" % (parts[0], parts[1]) if len(parts) == 2 else None


ERLANG_WORKLOADS = ["cast", "call", "spawn", "ring_receive", "ring_genserver", "timers", "memory"]


def run_erlang(mode: str) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """Run the escript; returns (records as result_record gives, error or None).

    The escript prints one line per workload:
    ``RESULT <workload> <n> <ops_per_round> <s1>,<s2>,... [key=value ...]``."""
    why = peer_status("erlang")
    if why:
        return [], why
    m = MODES[mode]
    args = ["escript", str(ESCRIPT), str(m.rounds), str(m.warmup)]
    for w in ERLANG_WORKLOADS:
        args.append("%s=%d" % (w, size(w, "erlang", mode)))
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return [], "escript timed out"
    recs = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if not parts or parts[0] != "RESULT":
            continue
        w, n, _ops = parts[1], int(parts[2]), int(parts[3])
        times = [float(x) for x in parts[4].split(",")]
        extra: Dict[str, Any] = {}
        for kv in parts[5:]:
            k, _, v = kv.partition("=")
            try:
                extra[k] = float(v)
            except ValueError:
                extra[k] = v
        recs.append(result_record(w, "erlang", n, times, extra))
    if out.returncode != 0 or not recs:
        return recs, "escript failed (exit %d): %s" % (out.returncode, out.stderr.strip()[-500:])
    return recs, None


# =========================================================================================
# Machine and versions

def machine_info() -> Dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    vers: Dict[str, Optional[str]] = {}
    for impl, mod in [("pyotp", "pyotp-actors")] + [(k, v) for k, v in PEER_MODULES.items()]:
        try:
            import importlib.metadata as md
            vers[impl] = md.version(mod)
        except Exception:
            vers[impl] = None
    vers["pyotp"] = vers["pyotp"] or getattr(pyotp, "__version__", None)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor() or platform.machine(),
        "python": "%s %s" % (platform.python_implementation(), platform.python_version()),
        "platform": platform.platform(),
        "versions": vers,
        "otp": erlang_version(),
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "rss":
        _rss_main(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "run":
        # python -m bench.workloads run <workload> <impl> [quick|full]
        print(json.dumps(run_direct(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "quick")))
    else:
        sys.exit("usage: python -m bench.workloads rss <impl> <k> | run <workload> <impl> [quick|full]")
