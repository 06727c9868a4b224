"""Sequential GenServer calls from a BEAM node into pyotp, against BEAM -> BEAM, repeated
in one run (issue 15 item 3).

    pytest bench/test_bench_dist_beam_calls.py -s [--bench-quick]

One Erlang driver (``bench/erlang/distpeer.erl``) makes N sequential
``gen_server:call({sink, Node}, ping)`` into a pyotp sink and into an Erlang sink,
alternating (pyotp first in odd repetitions, BEAM first in even ones, so drift on a shared
machine does not favour one side), REPS times. Rates come from the driver's own timing.
It prints every repetition's pair, the ratio beam->pyotp / beam->beam, how many
repetitions pyotp won, and the spread (min / median / max of each side): a single best run
says little on a busy machine. Nothing is asserted about speed.

The comparison runs twice: on the machine as it is, then beside one busy loop (a child
process spinning on one core for the case's duration). The two differ in kind, not only
in degree: on a quiet machine an idle core sleeps, and waking it is most of a round trip
here, so the side that keeps its core awake between calls (pyotp's waiting policy spins
while the machine is not crowded; BEAM's schedulers sleep after a short spin) wins; with
a core kept busy nobody pays that wake-up, both sides run several times faster, and what
is left is each side's own work per call. Earlier rounds' spread (pyotp won 0, 4 or 2 of
5) came from the machine's load moving between these two states from run to run.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
from typing import Any, List, Tuple

import pytest

from bench.conftest import EXTRA_RESULTS
from bench.test_bench_dist import _erl_round, beams, erl_driver, erl_sink, py_b  # noqa: F401 (fixtures)

REPS = 5
CALLS = {"quick": 2_000, "full": 20_000}


def _compare(label: str, mode: str, erl_driver: Any, erl_sink: Any, py_b: Any, capsys: Any) -> None:
    n = CALLS[mode]
    for sink in (py_b, erl_sink):           # connect both and warm up
        _erl_round(erl_driver, "call 500 %s" % sink.name)
    pairs: List[Tuple[float, float]] = []
    for rep in range(REPS):
        order = [("pyotp", py_b), ("beam", erl_sink)]
        if rep % 2:
            order.reverse()
        got = {}
        for name, sink in order:
            got[name] = n / _erl_round(erl_driver, "call %d %s" % (n, sink.name))
        pairs.append((got["pyotp"], got["beam"]))
    wins = sum(1 for p, b in pairs if p >= b)
    py = sorted(p for p, _ in pairs)
    be = sorted(b for _, b in pairs)
    lines = ["beam->pyotp vs beam->beam%s, %d sequential calls, %d repetitions" % (label, n, REPS)]
    lines += ["  rep %d: beam->pyotp %8.0f  beam->beam %8.0f  ratio %.2f" % (i + 1, p, b, p / b)
              for i, (p, b) in enumerate(pairs)]
    lines.append("  pyotp >= beam in %d of %d; beam->pyotp min/median/max %.0f/%.0f/%.0f, "
                 "beam->beam %.0f/%.0f/%.0f calls/s" % (wins, REPS, py[0], statistics.median(py), py[-1],
                                                        be[0], statistics.median(be), be[-1]))
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    for impl, rates in (("beam->pyotp", py), ("beam->beam", be)):
        EXTRA_RESULTS.append({"group": "dist-call-repeated" + label.replace(" ", "-"), "impl": impl,
                              "mode": mode, "rate": statistics.median(rates), "unit": "calls/s",
                              "note": "min %.0f max %.0f over %d reps; pyotp won %d" % (
                                  rates[0], rates[-1], REPS, wins)})


def test_beam_calls_into_pyotp_vs_beam(mode: str, erl_driver: Any, erl_sink: Any, py_b: Any,  # noqa: F811
                                       capsys: Any) -> None:
    if erl_driver is None:
        pytest.skip("erl/erlc not installed")
    _compare("", mode, erl_driver, erl_sink, py_b, capsys)


def test_beam_calls_into_pyotp_vs_beam_beside_busy_loop(mode: str, erl_driver: Any,  # noqa: F811
                                                        erl_sink: Any, py_b: Any,  # noqa: F811
                                                        capsys: Any) -> None:
    if erl_driver is None:
        pytest.skip("erl/erlc not installed")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        _compare(" beside a busy loop", mode, erl_driver, erl_sink, py_b, capsys)
    finally:
        hog.kill()
        hog.wait()
