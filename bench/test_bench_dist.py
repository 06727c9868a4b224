"""Distribution benchmarks: pyotp<->pyotp and pyotp<->BEAM on loopback, beside same-run
BEAM<->BEAM baselines.

    pytest bench/test_bench_dist.py --benchmark-group-by=group [--bench-quick]

Groups (rate = operations / median round time; the rate is in each result's extra_info
and in the summary printed at the end, with the issue's targets):

* ``dist-oneway`` (msg/s): one process sends N small messages ``("msg", i)`` to a
  registered sink on the other node, then ``("done", self())``; the sink answers with its
  count (checked == N). Time from the first send to the count.
* ``dist-call`` (calls/s): N sequential ``GenServer.call(("sink", node), "ping")`` (the
  Erlang sink answers the ``'$gen_call'`` protocol directly).
* ``dist-numpy-100MB`` (MB/s): one 100 MB payload per round, answered by the receiver
  after it has it whole. pyotp->pyotp sends a numpy array (python-mode out-of-band
  buffers: sent without copying, received into a reused buffer, decoded as a zero-copy
  view); towards Erlang the payload is a 100 MB binary (``bytes``).

Implementations (``A->B`` = sender/caller on node A, the sink on node B; A and B are
separate OS processes):

* ``pyotp->pyotp``: this process is node A (``Runtime.start_thread()``), B is a pyotp node
  in a child process (``tests/helpers/dist_roles.py:role_sink_bench``).
* ``pyotp->pyotp(busy_wait=0)`` (dist-call only): the same with the connection's busy
  wait off on both sides (``Node.start(busy_wait=0)`` for B, A's process-wide waiting
  policy set to "none" for the case), to show what the busy wait buys.
* ``pyotp->beam``: B is ``erl`` running ``bench/erlang/distpeer.erl``'s sink.
* ``beam->pyotp``: the Erlang driver (``distpeer.erl``) against the pyotp sink, timed
  inside the Erlang driver.
* ``beam->beam``: both ends Erlang (``distpeer.erl`` driver and sink): the same work,
  measured inside the Erlang driver.
* ``beam->beam(distbench)``: the reference tool ``distbench.erl`` (``$PYOTP_DISTBENCH_ERL``,
  default ``/work/shared/peers/erl/distbench.erl``; not part of the repository): its
  ``run/2`` prints msg/s for sends and calls/s for ``erpc:call(B, erlang, node, [])``.
* ``tcp-echo`` (dist-call only): a raw asyncio request/response over loopback TCP between
  two processes, no distribution at all: the floor set by this machine's syscalls and
  scheduling, to read the call figures against.

Erlang cases need ``erl``/``erlc`` (erlang-base); without them they are reported as not
run. No speed is asserted.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from bench import workloads as W

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))   # dist_helpers and the roles

import pyotp                                                    # noqa: E402
from pyotp import GenServer                                     # noqa: E402
from pyotp.dist import Node                                     # noqa: E402
from pyotp.etf import Atom                                      # noqa: E402
from dist_helpers import COOKIE, ErlNode, NodeProc, unique      # noqa: E402

SIZES = {"quick": {"dist-oneway": 50_000, "dist-call": 2_000, "dist-numpy-100MB": 1},
         "full": {"dist-oneway": 200_000, "dist-call": 10_000, "dist-numpy-100MB": 1}}
TARGETS = {"dist-oneway": 300_000, "dist-call": 20_000, "dist-numpy-100MB": 500}
UNITS = {"dist-oneway": "msg/s", "dist-call": "calls/s", "dist-numpy-100MB": "MB/s"}
BIG = 100_000_000
DISTBENCH = Path(os.environ.get("PYOTP_DISTBENCH_ERL", "/work/shared/peers/erl/distbench.erl"))

_RESULTS: List[Dict[str, Any]] = []
_NOT_RUN: List[Tuple[str, str, str]] = []


# ---------------------------------------------------------------------------------------
# the nodes


class _A:
    """Node A: a pyotp node on a background thread; rounds run as pyotp processes."""

    def __init__(self) -> None:
        self.rt = pyotp.Runtime.start_thread()
        self.name = unique("bench")
        # the numpy case pickles arrays: both nodes accept numpy's classes
        self.rt.call_in_loop(lambda: Node.start(self.name, cookie=COOKIE, python_payloads=["numpy"]))

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float = 600) -> Any:
        """Run the async fn(*args) as a process on A; return its result."""
        done: "concurrent.futures.Future[Any]" = concurrent.futures.Future()

        async def body() -> None:
            try:
                done.set_result(await fn(*args))
            except BaseException as e:   # surfaced in the test thread
                done.set_exception(e)

        self.rt.call_in_loop(pyotp.spawn, body)
        return done.result(timeout)

    def busy_wait(self, setting: Any) -> Any:
        """Set A's waiting policy (the process-wide one Node.start configures; this
        process can only be one node); returns the previous setting."""
        policy = pyotp._core.wait_policy()
        old = policy.setting
        self.rt.call_in_loop(policy.configure, setting)
        return old

    def stop(self) -> None:
        self.rt.call_in_loop(Node.stop)
        self.rt.stop()


@pytest.fixture(scope="module")
def node_a():
    a = _A()
    yield a
    a.stop()


@pytest.fixture(scope="module")
def py_b():
    with NodeProc("sinkpy", role="dist_roles:role_sink_bench", python_payloads=["numpy"]) as b:
        b.expect("ready")
        yield b


@pytest.fixture(scope="module")
def py_b0():
    with NodeProc("sinkpy0", role="dist_roles:role_sink_bench", busy_wait=0) as b:
        b.expect("ready")
        yield b


@pytest.fixture(scope="module")
def beams():
    """Compiled Erlang modules: {"dir": path, "distbench": bool} or None (reason recorded)."""
    if not shutil.which("erl") or not shutil.which("erlc"):
        return None
    d = tempfile.mkdtemp(prefix="pyotp-bench-erl-")
    subprocess.run(["erlc", "-o", d, str(ROOT / "bench" / "erlang" / "distpeer.erl")], check=True)
    have_distbench = DISTBENCH.exists()
    if have_distbench:
        subprocess.run(["erlc", "-o", d, str(DISTBENCH)], check=True)
    yield {"dir": d, "distbench": have_distbench}
    shutil.rmtree(d, ignore_errors=True)


def _erl(prefix: str, expr: str, beams: Dict[str, Any]) -> ErlNode:
    e = ErlNode(prefix, expr, extra_args=["-pa", beams["dir"]]).start()
    e.expect("ready")
    return e


@pytest.fixture(scope="module")
def erl_sink(beams):
    if beams is None:
        yield None
        return
    e = _erl("sinkerl", "distpeer:sink().", beams)
    yield e
    e.kill()


@pytest.fixture(scope="module")
def erl_driver(beams):
    if beams is None:
        yield None
        return
    e = _erl("drv", "distpeer:driver().", beams)
    yield e
    e.kill()


@pytest.fixture(scope="module")
def distbench_sink(beams):
    if beams is None or not beams["distbench"]:
        yield None
        return
    e = ErlNode("dbsink", "distbench:sink().", extra_args=["-pa", beams["dir"]]).start()
    # distbench's sink prints nothing: make sure it is registered before use
    probe = ErlNode("probe", 'P = list_to_atom("%s"), '
                    'F = fun W(0) -> io:format("@@ready no~n"); W(K) -> '
                    'case rpc:call(P, erlang, whereis, [sink]) of Pid when is_pid(Pid) -> '
                    'io:format("@@ready ok~n"); _ -> timer:sleep(50), W(K - 1) end end, '
                    'F(200), halt().' % e.name).start()
    ok = probe.expect("ready")
    probe.kill()
    if ok != "ok":
        e.kill()
        yield None
        return
    yield e
    e.kill()


# ---------------------------------------------------------------------------------------
# round bodies (run as processes on node A)


async def _oneway(dest: Any, n: int) -> None:
    me = pyotp.self()
    send = pyotp.send
    for i in range(n):
        send(dest, ("msg", i))
    send(dest, (Atom("done"), me))
    tag, count = await pyotp.receive(lambda m: type(m) is tuple and len(m) == 2 and m[0] == "count",
                                     timeout=120)
    W.check(count == n, "sink counted %d of %d messages" % (count, n))


async def _calls(dest: Any, n: int, req: Any) -> None:
    call = GenServer.call
    for _ in range(n):
        r = await call(dest, req, 30)
        W.check(r == "pong", "call answered %r" % (r,))


async def _big_py(dest: Any, arr: Any) -> None:
    pyotp.send(dest, ("array", pyotp.self(), arr))
    tag, nbytes, checksum = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "array", timeout=120)
    W.check(nbytes == arr.nbytes and checksum == int(arr[::1 << 20].sum()), "array arrived damaged")


async def _big_erl(dest: Any, blob: bytes) -> None:
    pyotp.send(dest, blob)
    pyotp.send(dest, (Atom("done"), pyotp.self()))
    tag, count = await pyotp.receive(lambda m: type(m) is tuple and len(m) == 2 and m[0] == "count", timeout=120)
    W.check(count == 1, "the binary did not arrive")


def _erl_round(driver: ErlNode, cmd: str) -> float:
    driver.send_line(cmd)
    return float(driver.expect("result", timeout=600))


# ---------------------------------------------------------------------------------------
# TCP echo calibration (dist-call only)


_ECHO_SERVER = r'''
import asyncio, sys
async def main():
    async def h(r, w):
        while True:
            d = await r.read(64)
            if not d:
                return
            w.write(d)
    s = await asyncio.start_server(h, "127.0.0.1", 0)
    print(s.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''


@pytest.fixture(scope="module")
def echo_port():
    p = subprocess.Popen([sys.executable, "-c", _ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    port = int(p.stdout.readline())
    yield port
    p.kill()
    p.wait()


async def _tcp_echo(port: int, n: int) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(n):
            w.write(b"ping")
            got = await r.readexactly(4)
            W.check(got == b"ping", "echo answered %r" % got)
    finally:
        w.close()


# ---------------------------------------------------------------------------------------
# the cases

CASES = [
    ("dist-oneway", "pyotp->pyotp"), ("dist-oneway", "pyotp->beam"), ("dist-oneway", "beam->pyotp"),
    ("dist-oneway", "beam->beam"), ("dist-oneway", "beam->beam(distbench)"),
    ("dist-call", "pyotp->pyotp"), ("dist-call", "pyotp->pyotp(busy_wait=0)"), ("dist-call", "pyotp->beam"),
    ("dist-call", "beam->pyotp"), ("dist-call", "beam->beam"), ("dist-call", "beam->beam(distbench)"),
    ("dist-call", "tcp-echo"),
    ("dist-numpy-100MB", "pyotp->pyotp"), ("dist-numpy-100MB", "pyotp->beam"),
    ("dist-numpy-100MB", "beam->pyotp"), ("dist-numpy-100MB", "beam->beam"),
]


def _record(benchmark: Any, group: str, impl: str, mode: str, ops: float, rate: Optional[float],
            **extra: Any) -> None:
    info = {"group": group, "impl": impl, "mode": mode, "ops_per_round": ops, "unit": UNITS[group]}
    if rate is None:
        stats = getattr(benchmark, "stats", None)
        if stats is not None and getattr(stats, "stats", None) is not None:
            rate = ops / stats.stats.median
    info["rate"] = rate
    info.update(extra)
    benchmark.extra_info.update(info)
    _RESULTS.append(info)


@pytest.mark.parametrize("group,impl", CASES, ids=["%s-%s" % c for c in CASES])
def test_dist(benchmark: Any, mode: str, group: str, impl: str, request: Any) -> None:
    m = W.MODES[mode]
    n = SIZES[mode][group]
    benchmark.group = group
    needs_erl = "beam" in impl
    if needs_erl and request.getfixturevalue("beams") is None:
        _NOT_RUN.append((group, impl, "erl/erlc not installed (apt-get install erlang-base)"))
        pytest.skip("erl/erlc not installed")
    if impl == "beam->beam(distbench)" and request.getfixturevalue("distbench_sink") is None:
        _NOT_RUN.append((group, impl, "distbench.erl not found at %s" % DISTBENCH))
        pytest.skip("distbench.erl not available")
    a = request.getfixturevalue("node_a") if impl.startswith("pyotp") or impl == "tcp-echo" else None

    if impl == "tcp-echo":
        port = request.getfixturevalue("echo_port")
        benchmark.pedantic(lambda: a.run(_tcp_echo, port, n), rounds=m.rounds, warmup_rounds=m.warmup,
                           iterations=1)
        _record(benchmark, group, impl, mode, n, None)
        return

    if impl.startswith("pyotp"):
        if impl == "pyotp->pyotp(busy_wait=0)":
            sink = request.getfixturevalue("py_b0")
            request.addfinalizer(lambda old=a.busy_wait("none"): a.busy_wait(old))
        else:
            sink = request.getfixturevalue("py_b") if impl == "pyotp->pyotp" else request.getfixturevalue("erl_sink")
        dest = ("sink", sink.name)
        W.check(a.run(Node.connect, sink.name), "cannot connect to %s" % sink.name)
        if group == "dist-oneway":
            fn: Callable[[], Any] = lambda: a.run(_oneway, dest, n)
            ops: float = n
        elif group == "dist-call":
            req = Atom("ping") if impl == "pyotp->beam" else "ping"
            fn = lambda: a.run(_calls, dest, n, req)
            ops = n
        else:
            if impl == "pyotp->pyotp":
                np = pytest.importorskip("numpy")
                payload: Any = np.arange(BIG // 8, dtype=np.int64)
                fn = lambda: a.run(_big_py, dest, payload)
            else:
                payload = bytes(BIG)
                fn = lambda: a.run(_big_erl, dest, payload)
            ops = BIG / 1e6
        benchmark.pedantic(fn, rounds=m.rounds, warmup_rounds=m.warmup, iterations=1)
        _record(benchmark, group, impl, mode, ops, None)
        return

    driver = request.getfixturevalue("erl_driver")
    if impl in ("beam->beam", "beam->pyotp"):
        sink = request.getfixturevalue("erl_sink" if impl == "beam->beam" else "py_b")
        cmd = {"dist-oneway": "oneway %d %s" % (n, sink.name), "dist-call": "call %d %s" % (n, sink.name),
               "dist-numpy-100MB": "big %s" % sink.name}[group]
        times: List[float] = []
        benchmark.pedantic(lambda: times.append(_erl_round(driver, cmd)), rounds=m.rounds,
                           warmup_rounds=m.warmup, iterations=1)
        ops = BIG / 1e6 if group == "dist-numpy-100MB" else n
        measured = times[m.warmup:] or times
        _record(benchmark, group, impl, mode, ops, ops / statistics.median(measured),
                note="rate from the Erlang driver's own timing")
        return

    # distbench: its run/2 prints "erlang dist send X msg/s" and "erlang dist erpc Y calls/s"
    dsink = request.getfixturevalue("distbench_sink")
    figures: List[float] = []
    pat = re.compile(r"erlang dist %s\s+(\d+)" % ("send" if group == "dist-oneway" else "erpc"))

    def round_() -> None:
        driver.send_line("distbench %d %s" % (n if group == "dist-oneway" else 1000, dsink.name))
        out = driver.expect("distbench", timeout=600)
        mt = pat.search(out)
        W.check(mt is not None, "distbench printed %r" % out)
        figures.append(float(mt.group(1)))  # type: ignore[union-attr]
    benchmark.pedantic(round_, rounds=m.rounds, warmup_rounds=m.warmup, iterations=1)
    measured = figures[m.warmup:] or figures
    _record(benchmark, group, impl, mode, n, statistics.median(measured),
            note="rate printed by distbench.erl (calls are erpc:call(B, erlang, node, []))")


@pytest.fixture(scope="module", autouse=True)
def _summary(request: Any):
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is None or not _RESULTS:
        return
    cap = request.config.pluginmanager.get_plugin("capturemanager")
    if cap is not None:
        with cap.global_and_fixture_disabled():
            _print_summary(tr)
    else:
        _print_summary(tr)


def _print_summary(tr: Any) -> None:
    tr.write_line("")
    tr.section("pyotp distribution bench: rates (ops / median round)")
    for group in ("dist-oneway", "dist-call", "dist-numpy-100MB"):
        tr.write_line("%s (target for pyotp->pyotp: >= %s %s)" % (group, f"{TARGETS[group]:,}", UNITS[group]))
        for r in (x for x in _RESULTS if x["group"] == group):
            rate = r.get("rate")
            tr.write_line("  %-24s %14s %s" % (r["impl"], "%.0f" % rate if rate else "-", UNITS[group]))
    if _NOT_RUN:
        tr.section("pyotp distribution bench: not run")
        for group, impl, why in _NOT_RUN:
            tr.write_line("  %-18s %-24s %s" % (group, impl, why))
