"""The distributed examples, each run across real node processes."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples"))

from dist_helpers import ensure_epmd  # noqa: E402


def test_distributed_example():
    ensure_epmd()
    import distributed_example as ex
    out = ex.demo()
    assert out["ping"] == "pong"
    assert out["colors"] == {"red", "green"}
    assert out["greeting"].startswith("hello from client")
    assert out["remote_pid"] != os.getpid()
    node, sq = out["spawned"]
    assert node.startswith("store") and sq == 144
    assert out["down_reason"] == "noconnection"
    assert out["nodedown"][0] == "nodedown" and out["nodedown"][1] == node


def test_distributed_registry_failover():
    ensure_epmd()
    import distributed_registry as ex
    out = ex.demo()
    assert out["answers"] == [(out["b"], 1), (out["c"], 1)]
    assert out["leader_now"] == out["c"]


def test_cluster_manager_sees_joins_and_leaves():
    ensure_epmd()
    import distributed_cluster_manager as ex
    out = ex.demo()
    assert out["members"] == [out["kept"]]
    joined = [n for ev, n in out["history"] if ev == "joined"]
    left = [n for ev, n in out["history"] if ev == "left"]
    assert sorted(joined) == sorted([out["kept"], out["killed"], out["stopped"]])
    assert left == [out["killed"], out["stopped"]]
