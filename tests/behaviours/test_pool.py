"""Local node pools (pyotp.run(main, nodes=N)): start/stop, what crosses pool nodes,
worker death and restart, head death, ordering, bad settings. Each pool runs as its own
OS process (tests/helpers/pool_apps.py is its main script, so its workers import it)."""
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


def _start(role, nodes="2", cpus=None, **env_extra):
    env = dict(os.environ, PYTHONPATH=child_pythonpath(str(TESTS)), **env_extra)
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    return subprocess.Popen([sys.executable, str(TESTS / "helpers" / "pool_apps.py"), role, str(nodes)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=pin)


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


def _run(role, nodes="2", cpus=None, **env_extra):
    p = _start(role, nodes, cpus, **env_extra)
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


def test_map_items_in_flight_on_a_dead_worker_fail_naming_it():
    facts, _ = _run("map_lost_node")
    w = facts["worker"]
    assert facts["stream"] == [["ok", 0], ["exit", ["noconnection", w]], ["ok", 20],
                               ["exit", ["noconnection", w]]]


def test_eight_threads_into_a_pool_node_lose_nothing():
    facts, _ = _run("threads", 2)
    assert facts["collected"] == [24000, 0]


def test_partition_supervisor_routing_restart_parallel_map_and_placement():
    facts, _ = _run("partitions", 2)
    assert facts["partitions"] == 2                     # defaults to the pool's size
    (p0, n0), (p1, n1) = facts["children"]
    assert (p0, p1) == (0, 1) and n0 != n1 and "_w1" in n1   # spread over the pool
    assert facts["count"] == {"specs": 2, "active": 2, "supervisors": 0, "workers": 2}
    assert facts["total"] == 5                          # every cast reached one partition
    assert facts["p1_node"] == n1
    assert facts["after_restart"] == [2, n1]            # restarted on its node once back
    assert facts["map"] == [x * x for x in range(50)]   # ordered
    assert facts["stream"] == [["ok", 0], ["ok", 1], ["ok", 2], ["exit", "ValueError('three')"],
                               ["ok", 4]]
    assert facts["timeout"] == "timeout"
    assert facts["on_node"] == [n1, 5]


@pytest.mark.pyotp
async def test_partition_supervisor_in_one_node_and_bad_options():
    from pyotp import GenServer
    from pyotp.partition_supervisor import PartitionSupervisor

    class Acc(GenServer):
        def init(self, arg):
            return ("ok", arg)

        def handle_call(self, req, frm, s):
            return ("reply", s, s)

    await PartitionSupervisor.start_link(
        child_spec=(Acc, 0), name="acc", partitions=3,
        with_arguments=lambda args, i: [i * 10])
    got = [await GenServer.call(("via", PartitionSupervisor, ("acc", k)), "x")
           for k in (0, 1, 2, 4, -5)]
    same = [PartitionSupervisor.whereis_name(("acc", "key")) ==
            PartitionSupervisor.whereis_name(("acc", "key")) for _ in range(3)]
    kids = await PartitionSupervisor.which_children("acc")
    with pytest.raises(ValueError, match="partitions"):
        await PartitionSupervisor.start_link(child_spec=Acc, name="x", partitions=0)
    with pytest.raises(TypeError, match="name"):
        await PartitionSupervisor.start_link(child_spec=Acc, name=None)
    with pytest.raises(pyotp.BadArg, match="no PartitionSupervisor"):
        PartitionSupervisor.partitions("nope")
    same = all(same)
    ids = [k[0] for k in kids]
    n = PartitionSupervisor.partitions("acc")
    assert got == [0, 10, 20, 10, 20] and same and ids == [0, 1, 2] and n == 3


def test_without_shared_memory_the_pool_falls_back_to_sockets_with_a_notice():
    facts, err = _run("basic", 3, PYOTP_POOL_TRANSPORT="socket")
    assert "no shared memory for local node links" in err
    assert facts["count"] == 100 and len(facts["seen"]) == 2


def test_pubsub_and_links_across_pool_nodes():
    facts, _ = _run("links_pubsub", 3)
    assert facts["pubsub"] is True              # a broadcast on the head reached both workers
    assert facts["link_exit"] == [True, "custom_reason"]


def test_head_is_also_a_node_of_an_ordinary_cluster():
    from dist_helpers import COOKIE, NodeProc, unique
    head = unique("pool")
    with NodeProc("peer", role="dist_roles:role_peer") as peer:
        peer.expect("ready")
        facts, _ = _run("external", 2, HEAD=head, COOKIE=COOKIE, PEER=peer.name)
    nodes, me, reply = facts["external"]
    assert me == head
    assert peer.name in nodes and head.split("@")[0] + "_w1@127.0.0.1" in nodes
    assert reply[0] == "echo" and list(reply[1]) == ["hello", 1] and reply[2] == peer.name


def test_garbage_in_a_ring_closes_only_that_link():
    facts, err = _run("garbage", 3)
    assert "bad head index" in err
    assert facts["after"] == [True, False]      # the other worker stayed connected
    assert facts["ping"] == "pong"              # and the victim is reachable again


def test_pool_on_one_cpu_completes_with_the_spin_off():
    # as in a one-CPU container (taskset -c 0): the rings never spin there (issue 20)
    cpu = min(os.sched_getaffinity(0))
    facts, _ = _run("policy", 2, cpus={cpu})
    head_spin, head_reason, worker_spin, worker_reason, usable = facts["policy"]
    assert usable == 1
    assert head_spin is False and worker_spin is False
    assert head_reason == worker_reason == "one usable CPU"
