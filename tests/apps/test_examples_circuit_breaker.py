"""The CircuitBreaker example (examples/circuit_breaker.py): a flaky async service behind
the library breaker; closed -> open (fail fast, service not reached) -> half_open ->
open -> half_open -> closed, every change waited for through the event manager."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pyotp
from pathutil import child_pythonpath

_PATH = Path(__file__).resolve().parents[2] / "examples" / "circuit_breaker.py"
_spec = importlib.util.spec_from_file_location("example_circuit_breaker", _PATH)
cb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cb)


def test_main_summary():
    # a reset timeout long enough that the two calls right after the trip are made
    # while the circuit is still open
    s = pyotp.run(cb.main, 1.0)
    down = ("error", "price feed unreachable")
    assert s["answers"] == [("ok", 42.0), down, down, down,
                            ("unavailable", "open"), ("unavailable", "open"),
                            down, ("ok", 42.0), ("ok", 42.0)]
    assert s["reached_while_open"] == 0
    assert s["service_calls"] == 7          # the two rejected calls never reached it
    assert s["final_state"] == "closed"


def test_script_runs_and_ends_by_itself():
    env = dict(os.environ)
    env["PYTHONPATH"] = child_pythonpath()
    out = subprocess.run([sys.executable, str(_PATH)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "[alert] circuit 'prices': closed -> open" in out.stdout
    assert "[alert] circuit 'prices': half_open -> closed" in out.stdout
    assert out.stdout.strip().endswith("0 of them while the circuit was open")
