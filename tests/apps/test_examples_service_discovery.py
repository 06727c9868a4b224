"""The ServiceDiscovery example (examples/service_discovery.py): two backend nodes as OS
processes register echo instances; the client discovers, calls, picks by metadata, and
sees a SIGKILLed backend's instance go (service_down) while the other keeps answering."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dist_helpers import ensure_epmd
from pathutil import child_pythonpath

_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_PATH = _EXAMPLES / "service_discovery.py"
sys.path.insert(0, str(_EXAMPLES))


def test_demo_discovers_calls_and_follows_a_node_death():
    ensure_epmd()
    import service_discovery as ex
    out = ex.demo()
    b, c = out["b"], out["c"]
    assert out["known_before_connecting"] == []
    assert sorted(out["events"][:2]) == sorted([("service_up", b), ("service_up", c)])
    assert out["events"][2:] == [("service_down", b)]
    assert out["replies"] == sorted([("echo", "hi", b, "eu"), ("echo", "hi", c, "us")])
    assert out["eu_reply"] == ("echo", "hello eu", b, "eu")
    assert out["left"] == [(c, {"zone": "us"})]
    assert out["last"] == [("echo", "still there?", c, "us")]


def test_script_runs_and_ends_by_itself():
    ensure_epmd()
    env = dict(os.environ)
    env["PYTHONPATH"] = child_pythonpath()
    out = subprocess.run([sys.executable, str(_PATH)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "('service_down', 'b" in out.stdout
    assert "left                     [('c" in out.stdout
