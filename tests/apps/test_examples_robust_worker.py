"""The RobustWorker example (examples/robust_worker.py): expected errors are answered and
the worker keeps running; a crash is handled by its supervisor, which restarts it."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyotp
from pyotp import Exit, GenServer
from pyotp.supervisor import Supervisor
from pathutil import child_pythonpath

_PATH = Path(__file__).resolve().parents[2] / "examples" / "robust_worker.py"
_spec = importlib.util.spec_from_file_location("example_robust_worker", _PATH)
robust = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(robust)


def test_main_summary():
    s = pyotp.run(robust.main)
    assert [r for _d, r in s["replies"]][0] == ("ok", 25.0)
    assert s["replies"][1][1][0] == "error" and "ValueError" in s["replies"][1][1][1]
    assert s["replies"][2][1] == ("error", "ZeroDivisionError: division by zero")
    assert s["stats_before"] == {"processed": 2, "errors": 2}
    assert isinstance(s["crash"], RuntimeError)
    assert s["restarted"] is True
    assert s["stats_after"] == {"processed": 0, "errors": 0}
    assert s["after"] == ("ok", 20.0)


@pytest.mark.pyotp
async def test_error_replies_keep_the_same_process_and_raises_restart_it():
    sup = await Supervisor.start_link([(robust.RobustWorker, None)], strategy="one_for_one",
                                      max_restarts=100, max_seconds=3600)
    pid = pyotp.whereis(robust.NAME)
    for bad in ["x", "0", None, "1.5"] * 25:
        reply = await GenServer.call(robust.NAME, ("process", bad)) if bad is not None else None
        assert reply is None or reply[0] == "error"
    same = pyotp.whereis(robust.NAME) == pid
    errors = (await GenServer.call(robust.NAME, "stats"))["errors"]
    pids = {pid}
    for i in range(10):
        ref = pyotp.monitor(pyotp.whereis(robust.NAME))
        try:
            await GenServer.call(robust.NAME, ("crash", i))
        except Exit:
            pass
        await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
        await Supervisor.count_children(sup)          # the restart has happened
        pids.add(pyotp.whereis(robust.NAME))
    assert (same, errors, len(pids), (await Supervisor.count_children(sup))["active"]) == (True, 75, 11, 1)


def test_runs_as_a_script():
    env = dict(os.environ)
    env["PYTHONPATH"] = child_pythonpath()
    out = subprocess.run([sys.executable, str(_PATH)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "process('abc') -> ('error'" in out.stdout
    assert "the worker crashed" in out.stdout
    assert out.stdout.strip().endswith("done: restarted")
    assert "child_terminated" in out.stderr
