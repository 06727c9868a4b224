"""GenStateMachine benchmarks, each beside its baselines in the same run:

    pytest bench/test_bench_gen_statem.py --benchmark-group-by=group [--bench-quick]

Groups (the rate, ops / median round, is in each result's extra_info and is printed with
``-s``):

* ``gen_statem-events``: one process casts N ``"flip"`` events to a two-state machine
  (off <-> on, counting flips), then one call ``"take"`` returns the count (checked == N).
  Implementations: the machine in ``state_functions`` mode, the same machine in
  ``handle_event_function`` mode, and the baselines: an equivalent GenServer (state
  ``(colour, count)``) and a hand-written asyncio-queue actor doing the same.
* ``gen_statem-state-timeout-churn``: N events, each re-arming a 10 s state timeout (which
  never fires); then ``"take"``. The machine either stays in its state (``keep_state`` with
  a ``state_timeout`` action) or changes state on every event, its enter call arming the
  new state's timeout (the old one is cancelled by the state change). Baselines: a
  GenServer cancelling and restarting a ``pyotp.start_timer`` per message (and ignoring
  stale timer messages by reference, as the machine does), and the asyncio actor
  cancelling and re-creating a ``loop.call_later`` handle per message. After each round the
  node must hold exactly one armed timer for the server (checked).

No assertion is made on speed; every round checks its own result.
"""
from __future__ import annotations

import asyncio
from typing import Any, Dict

import pytest

from bench import workloads as W
from bench.workloads import AioServer, PyotpHost, check, loop_name, new_loop

import pyotp
from pyotp import GenServer
from pyotp._core import _stats
from pyotp.gen_statem import GenStateMachine

_SIZES = {"gen_statem-events": {"quick": 100_000, "full": 300_000},
          "gen_statem-state-timeout-churn": {"quick": 50_000, "full": 200_000}}

TIMEOUT = 10.0   # seconds: long enough never to fire during a round


# ---------------------------------------------------------------------------------------
# gen_statem-events

class FlipStates(GenStateMachine):
    def callback_mode(self) -> Any:
        return "state_functions"

    def init(self, _: Any) -> Any:
        return ("ok", "off", 0)

    def off(self, event_type: Any, content: Any, n: int) -> Any:
        if event_type == "cast":
            return ("next_state", "on", n + 1)
        return self.take(event_type, n)

    def on(self, event_type: Any, content: Any, n: int) -> Any:
        if event_type == "cast":
            return ("next_state", "off", n + 1)
        return self.take(event_type, n)

    def take(self, event_type: Any, n: int) -> Any:
        return ("keep_state", 0, [("reply", event_type[1], n)])


class FlipEvent(GenStateMachine):
    def init(self, _: Any) -> Any:
        return ("ok", "off", 0)

    def handle_event(self, event_type: Any, content: Any, state: str, n: int) -> Any:
        if event_type == "cast":
            return ("next_state", "on" if state == "off" else "off", n + 1)
        return ("keep_state", 0, [("reply", event_type[1], n)])


class FlipServer(GenServer):
    """The GenServer baseline: the same two states and count, as a (state, count) pair."""

    def init(self, _: Any) -> Any:
        return ("ok", ("off", 0))

    def handle_cast(self, msg: Any, st: Any) -> Any:
        state, n = st
        return ("noreply", ("on" if state == "off" else "off", n + 1))

    def handle_call(self, msg: Any, from_: Any, st: Any) -> Any:
        return ("reply", st[1], (st[0], 0))


class AioFlip(AioServer):
    """The hand-written asyncio-queue actor baseline (bench/workloads.py's AioServer)."""

    def handle_cast(self, msg: Any, st: Any) -> Any:
        state, n = st
        return ("noreply", ("on" if state == "off" else "off", n + 1))

    def handle_call(self, msg: Any, fut: Any, st: Any) -> Any:
        return ("reply", st[1], (st[0], 0))


# ---------------------------------------------------------------------------------------
# gen_statem-state-timeout-churn

class ChurnKeep(GenStateMachine):
    """Stays in "waiting"; every event re-arms the state timeout."""

    def callback_mode(self) -> Any:
        return "state_functions"

    def init(self, _: Any) -> Any:
        return ("ok", "waiting", 0, ("state_timeout", TIMEOUT, "expired"))

    def waiting(self, event_type: Any, content: Any, n: int) -> Any:
        if event_type == "cast":
            return ("keep_state", n + 1, ("state_timeout", TIMEOUT, "expired"))
        if event_type == "state_timeout":
            raise RuntimeError("the state timeout fired during the benchmark")
        return ("keep_state", 0, [("reply", event_type[1], n)])


class ChurnEnter(GenStateMachine):
    """Alternates between "a" and "b"; each state's enter call arms its timeout, and the
    state change cancels the previous one."""

    def callback_mode(self) -> Any:
        return ["handle_event_function", "state_enter"]

    def init(self, _: Any) -> Any:
        return ("ok", "a", 0)

    def handle_event(self, event_type: Any, content: Any, state: str, n: int) -> Any:
        if event_type == "cast":
            return ("next_state", "b" if state == "a" else "a", n + 1)
        if event_type == "enter":
            return ("keep_state_and_data", ("state_timeout", TIMEOUT, "expired"))
        if event_type == "state_timeout":
            raise RuntimeError("the state timeout fired during the benchmark")
        return ("keep_state", 0, [("reply", event_type[1], n)])


class ChurnServer(GenServer):
    """The GenServer baseline: cancel and restart a timer per message; a timeout message
    counts only if it carries the current timer (stale ones are ignored)."""

    def init(self, _: Any) -> Any:
        self.timer = pyotp.start_timer(pyotp.self(), "expired", TIMEOUT)
        return ("ok", 0)

    def handle_cast(self, msg: Any, n: int) -> Any:
        pyotp.cancel_timer(self.timer)
        self.timer = pyotp.start_timer(pyotp.self(), "expired", TIMEOUT)
        return ("noreply", n + 1)

    def handle_call(self, msg: Any, from_: Any, n: int) -> Any:
        return ("reply", n, 0)

    def handle_info(self, msg: Any, n: int) -> Any:
        if type(msg) is tuple and msg[0] == "timeout" and msg[1] is self.timer:
            raise RuntimeError("the timeout fired during the benchmark")
        return ("noreply", n)


class AioChurn(AioServer):
    """The asyncio actor baseline: a loop.call_later handle cancelled and re-created per
    message."""

    def __init__(self, state: Any) -> None:
        super().__init__(state)
        self.loop = asyncio.get_running_loop()
        self.handle = self.loop.call_later(TIMEOUT, self.expired)

    def expired(self) -> None:
        raise RuntimeError("the timeout fired during the benchmark")

    def handle_cast(self, msg: Any, n: int) -> Any:
        self.handle.cancel()
        self.handle = self.loop.call_later(TIMEOUT, self.expired)
        return ("noreply", n + 1)

    def handle_call(self, msg: Any, fut: Any, n: int) -> Any:
        return ("reply", n, 0)


# ---------------------------------------------------------------------------------------
# Drivers

async def _pyotp_round(pid: Any, n: int) -> Any:
    cast = GenServer.cast
    for _ in range(n):
        cast(pid, "flip")
    return await GenServer.call(pid, "take")


class PyotpDriver:
    def __init__(self, cls: type, n: int, one_timer: bool) -> None:
        self.cls, self.n, self.one_timer = cls, n, one_timer
        self.extra: Dict[str, Any] = {}

    def setup(self) -> None:
        self.host = PyotpHost("default")
        self.extra["loop"] = loop_name(self.host.loop)

        async def start() -> Any:
            return await self.cls.start(None)
        self.pid = self.host.run(start)

    def run(self) -> None:
        got = self.host.run(_pyotp_round, self.pid, self.n)
        check(got == self.n, "%s counted %r of %d events" % (self.cls.__name__, got, self.n))
        if self.one_timer:
            timers = _stats()["timers"]
            check(timers == 1, "%s: %d timers armed after the round, expected 1"
                  % (self.cls.__name__, timers))

    def teardown(self) -> None:
        self.host.close()


class AioDriver:
    def __init__(self, cls: type, n: int, initial: Any) -> None:
        self.cls, self.n, self.initial = cls, n, initial
        self.extra: Dict[str, Any] = {}

    def setup(self) -> None:
        self.loop = new_loop("asyncio")
        self.extra["loop"] = loop_name(self.loop)

        async def start() -> Any:
            return self.cls(self.initial)
        self.srv = self.loop.run_until_complete(start())

    def run(self) -> None:
        got = self.loop.run_until_complete(self._round())
        check(got == self.n, "%s counted %r of %d events" % (self.cls.__name__, got, self.n))

    async def _round(self) -> Any:
        cast = self.srv.cast
        for _ in range(self.n):
            cast("flip")
        return await self.srv.call("take")

    def teardown(self) -> None:
        self.srv.task.cancel()
        handle = getattr(self.srv, "handle", None)
        if handle is not None:
            handle.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


_IMPLS = {
    "gen_statem-events": {
        "gen_statem": lambda n: PyotpDriver(FlipStates, n, False),
        "gen_statem-handle_event": lambda n: PyotpDriver(FlipEvent, n, False),
        "genserver": lambda n: PyotpDriver(FlipServer, n, False),
        "asyncio": lambda n: AioDriver(AioFlip, n, ("off", 0)),
    },
    "gen_statem-state-timeout-churn": {
        "gen_statem-keep_state": lambda n: PyotpDriver(ChurnKeep, n, True),
        "gen_statem-state_enter": lambda n: PyotpDriver(ChurnEnter, n, True),
        "genserver": lambda n: PyotpDriver(ChurnServer, n, True),
        "asyncio": lambda n: AioDriver(AioChurn, n, 0),
    },
}


def _cases():
    return [(g, i) for g, impls in _IMPLS.items() for i in impls]


@pytest.mark.parametrize("group, impl", _cases())
def test_gen_statem_bench(benchmark: Any, group: str, impl: str, mode: str) -> None:
    m = W.MODES[mode]
    n = _SIZES[group][mode]
    b = _IMPLS[group][impl](n)
    benchmark.group = group
    b.setup()
    try:
        benchmark.pedantic(b.run, rounds=m.rounds, warmup_rounds=m.warmup, iterations=1)
    finally:
        b.teardown()
    info: Dict[str, Any] = {"workload": group, "impl": impl, "mode": mode, "n": n,
                            "ops_per_round": n, "unit": "events/s"}
    info.update(b.extra)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        info["median_s"] = stats.stats.median
        info["rate"] = n / stats.stats.median
        print("\n%-32s %-26s %12.0f events/s" % (group, impl, info["rate"]))
    benchmark.extra_info.update(info)
