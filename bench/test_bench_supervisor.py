"""Supervisor restart latency, beside same-run baselines.

    pytest bench/test_bench_supervisor.py --benchmark-group-by=group [--bench-quick]

Group ``supervisor-restart``. A round kills a supervised child ``n`` times; after each kill
the driver process asks for the child's pid again, which is answered only once the child
has been restarted (the restart is handled before the question, in mailbox order), and
kills the new pid. So one operation is: kill, notice the exit, start a fresh GenServer
(its ``init`` included), answer the driver. Implementations:

* ``pyotp-supervisor``: ``Supervisor`` (one_for_one, the child among 9 idle siblings),
  ``Supervisor.which_children`` as the question.
* ``pyotp-dynamic``: ``DynamicSupervisor`` with one child, ``which_children``.
* ``hand-written`` (the baseline): a plain pyotp process trapping exits that restarts its
  one linked GenServer child on its EXIT and answers ``("which", from)`` messages: the
  same work with none of the supervisor's bookkeeping (specs, intensity, reports).
* ``spawn_monitor-loop`` (the floor): the driver itself ``spawn_monitor``s a plain
  process, kills it and waits for the DOWN; no GenServer, no supervisor.

Each round checks that every kill produced a new, live pid. ``extra_info`` has the rate
(restarts/s) and the latency (microseconds per restart). No speed is asserted.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import pytest

from bench import workloads as W

import pyotp
from pyotp import GenServer
from pyotp.dynamic_supervisor import DynamicSupervisor
from pyotp.supervisor import Supervisor

SIZES = {"quick": 500, "full": 3000}
GROUP = "supervisor-restart"


class Child(GenServer):
    def init(self, n: Any) -> Any:
        return ("ok", n)


def _run(benchmark: Any, impl: str, mode: str, round_fn: Callable[[], None], n: int) -> None:
    m = W.MODES[mode]
    benchmark.group = GROUP
    benchmark.pedantic(round_fn, rounds=m.rounds, warmup_rounds=m.warmup, iterations=1)
    info = {"impl": impl, "mode": mode, "ops_per_round": n, "unit": "restarts/s"}
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        info["rate"] = n / stats.stats.median
        info["latency_us"] = stats.stats.median / n * 1e6
    benchmark.extra_info.update(info)


@pytest.fixture
def quiet() -> Any:
    # every kill is a child_terminated report at ERROR: keep the log out of the timing
    log = logging.getLogger("pyotp")
    old = log.level
    log.setLevel(logging.CRITICAL)
    yield
    log.setLevel(old)


def _bench_supervisor(benchmark: Any, mode: str, impl: str, start: Callable[[], Any],
                      which: Callable[[Any], Any], pick: Callable[[Any], Any]) -> None:
    n = SIZES[mode]
    host = W.PyotpHost("default")
    try:
        sup = host.run(start)

        async def one_round() -> int:
            pid = pick(await which(sup))
            seen = 0
            for _ in range(n):
                pyotp.exit(pid, "kill")
                new = pick(await which(sup))
                if new != pid and pyotp.is_alive(new):
                    seen += 1
                pid = new
            return seen

        def round_() -> None:
            seen = host.run(one_round)
            W.check(seen == n, "%s: %d of %d restarts seen" % (impl, seen, n))
        _run(benchmark, impl, mode, round_, n)
    finally:
        host.close()


def test_pyotp_supervisor(benchmark: Any, mode: str, quiet: Any) -> None:
    _bench_supervisor(benchmark, mode, "pyotp-supervisor", _start_unlinked(
        lambda: Supervisor.start_link([{"id": i, "start": (Child.start_link, (i,))} for i in range(10)],
                                      strategy="one_for_one", max_restarts=10 ** 9, max_seconds=3600)),
        Supervisor.which_children, lambda ch: ch[4][1])


def test_pyotp_dynamic_supervisor(benchmark: Any, mode: str, quiet: Any) -> None:
    async def start_dyn() -> Any:
        sup = await DynamicSupervisor.start_link(max_restarts=10 ** 9, max_seconds=3600)
        await DynamicSupervisor.start_child(sup, (Child, 0))
        return sup
    _bench_supervisor(benchmark, mode, "pyotp-dynamic", _start_unlinked(start_dyn),
                      DynamicSupervisor.which_children, lambda ch: ch[0][1])


def _start_unlinked(start: Callable[[], Any]) -> Callable[[], Any]:
    """Start the supervisor from a short-lived process without keeping the link (a round's
    driver process must not own it: it ends after each round)."""
    async def starter() -> Any:
        sup = await start()
        pyotp.unlink(sup)
        return sup
    return starter


async def _hand_written_supervisor() -> None:
    """The baseline: restart one linked GenServer child on its EXIT, answer questions."""
    pyotp.process_flag("trap_exit", True)
    child = await Child.start_link(0)
    while True:
        msg = await pyotp.receive()
        if msg[0] == "EXIT" and msg[1] == child:
            child = await Child.start_link(0)
        elif msg[0] == "which":
            pyotp.send(msg[1], ("child", child))


def test_baseline_hand_written(benchmark: Any, mode: str) -> None:
    async def start() -> Any:
        return pyotp.spawn(_hand_written_supervisor)

    async def which(sup: Any) -> Any:
        pyotp.send(sup, ("which", pyotp.self()))
        return (await pyotp.receive(lambda m: m[0] == "child"))[1]
    _bench_supervisor(benchmark, mode, "hand-written", start, which, lambda pid: pid)


async def _idle() -> None:
    await pyotp.receive(lambda m: False)


def test_baseline_spawn_monitor_loop(benchmark: Any, mode: str) -> None:
    n = SIZES[mode]
    host = W.PyotpHost("default")
    try:
        async def one_round() -> int:
            pid, ref = pyotp.spawn_monitor(_idle)
            seen = 0
            for _ in range(n):
                pyotp.exit(pid, "kill")
                await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] is ref)
                new, ref = pyotp.spawn_monitor(_idle)
                if new != pid and pyotp.is_alive(new):
                    seen += 1
                pid = new
            pyotp.exit(pid, "kill")
            return seen

        def round_() -> None:
            seen = host.run(one_round)
            W.check(seen == n, "spawn_monitor-loop: %d of %d restarts seen" % (seen, n))
        _run(benchmark, "spawn_monitor-loop", mode, round_, n)
    finally:
        host.close()
