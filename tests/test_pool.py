"""Local node pools (pyotp.run(main, nodes=N)): start/stop, what crosses pool nodes,
worker death and restart, head death, ordering, bad settings. Each pool runs as its own
OS process (tests/pool_apps.py is its main script, so its workers import it)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import pyotp
from pyotp import pool

from pathutil import TESTS, child_pythonpath

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="checks /proc (the pool itself runs on macOS too)")


def _start(role, nodes="2"):
    env = dict(os.environ, PYTHONPATH=child_pythonpath(str(TESTS)))
    return subprocess.Popen([sys.executable, str(TESTS / "pool_apps.py"), role, str(nodes)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _facts(p, until="result", timeout=120):
    """The role's `@@tag value` lines, up to `until` (read line by line: no sleeps)."""
    facts = {}
    deadline = time.monotonic() + timeout
    for line in p.stdout:
        if line.startswith("@@"):
            tag, _, value = line[2:].partition(" ")
            facts[tag] = json.loads(value)
            if tag == until:
                break
        assert time.monotonic() < deadline, "role too slow: %r" % facts
    return facts


def _run(role, nodes="2"):
    p = _start(role, nodes)
    try:
        facts = _facts(p)
        assert p.wait(60) == 0, p.stderr.read()
        return facts, p.stderr.read()
    finally:
        p.kill()
        p.wait()


def _gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] in ("Z", "X")   # exited, not reaped yet
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_bad_nodes_values_are_clear_errors():
    async def main():
        return 1
    with pytest.raises(ValueError, match="nodes must be >= 1"):
        pyotp.run(main, nodes=0)
    with pytest.raises(ValueError, match="nodes must be >= 1"):
        pyotp.run(main, nodes=-3)
    with pytest.raises(TypeError, match='nodes must be an int >= 1 or "auto"'):
        pyotp.run(main, nodes="x")
    with pytest.raises(TypeError, match="nodes must be"):
        pyotp.run(main, nodes=True)
    with pytest.raises(TypeError, match="nodes must be"):
        pyotp.run(main, nodes=2.0)
    assert pyotp.run(main, nodes=1) == 1            # today's behaviour
    assert pool.check_nodes("auto") == pool.usable_cores() >= 1
    assert pool.usable_cores() <= len(os.sched_getaffinity(0))


def test_pool_of_three_spawn_call_cast_and_main_script_values():
    facts, _ = _run("basic", 3)
    nodes = facts["nodes"]
    assert len(nodes) == 2 and all("_w" in n for n in nodes)
    # each worker ran a main-script function on a main-script value, in its own process
    seen = facts["seen"]
    assert [s[0] for s in seen] == nodes
    assert len({s[1] for s in seen}) == 2 and all(s[2] == 42 and s[3] == "Box" for s in seen)
    assert facts["count"] == 100
    assert facts["counter_node"] == nodes[0]
    assert facts["result"] == "done"


def test_killed_worker_is_nodedown_then_restarted_without_leaking_segments():
    facts, err = _run("kill_worker", 3)
    assert facts["down_reason"] == "noconnection"
    assert facts["nodedown"]
    assert facts["restarted"] is True
    mapped, links = facts["segments"]
    assert mapped == links == 2          # the dead link's segment was unmapped
    assert "restarting it" in err


def test_killed_head_takes_every_worker_with_it():
    p = _start("worker_pids", 3)
    try:
        pids = _facts(p, until="worker_pids")["worker_pids"]
        assert len(pids) == 2 and not any(_gone(x) for x in pids)
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.monotonic() + 2.0
        while not all(_gone(x) for x in pids):
            assert time.monotonic() < deadline, "workers outlived their head by 2 s"
            time.sleep(0.01)     # polling the pids (the check itself), not a synchronisation
    finally:
        p.kill()
        p.wait()


def test_per_sender_order_across_pool_nodes():
    facts, _ = _run("order", 2)
    assert facts["collected"] == [40000, 0]      # all of them, none out of order


def test_eight_threads_into_a_pool_node_lose_nothing():
    facts, _ = _run("threads", 2)
    assert facts["collected"] == [24000, 0]
