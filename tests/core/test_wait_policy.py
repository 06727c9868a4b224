"""The runtime's waiting policy (src/core/wait_policy.pyx): when a thread may spin before
it sleeps. Its decisions are checked with a fake clock and fake machine facts (no timing),
and a pair of real nodes pinned to one CPU checks that calls complete with the policy off."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pyotp import _core
from pyotp.dist import DistError, Node

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "helpers"))
from dist_helpers import COOKIE, WAIT, child_env, unique  # noqa: E402


class Machine:
    """Fake clock (ms) and machine facts for a WaitPolicy."""

    def __init__(self, usable=4, online=4, runnable=1, nivcsw=0):
        self.now = 1000.0
        self.usable, self.online, self.runnable, self.nivcsw = usable, online, runnable, nivcsw
        self.probes = 0
        self.woke = None                  # doorbells this process rang (None: not reported)

    def clock(self):
        return self.now

    def probe(self):
        self.probes += 1
        if self.woke is None:
            return self.usable, self.online, self.runnable, self.nivcsw
        return self.usable, self.online, self.runnable, self.nivcsw, self.woke

    def policy(self, setting="auto"):
        return _core.WaitPolicy(setting, clock=self.clock, probe=self.probe)



def _assert_growing_pauses(allowed):
    """The probes that allowed a spin come between pauses that grow from one probe (50 ms)
    to 40 (2 s), and they are a small part of the time."""
    gaps, run = [], 0
    for a in allowed:
        if a and run:
            gaps.append(run)
        run = 0 if a else run + 1
    assert gaps == sorted(gaps) and gaps[0] == 1 and max(gaps) == 40, gaps   # 50 ms .. 2 s
    assert sum(allowed) <= 40, sum(allowed)

def test_quiet_machine_spins_up_to_the_ceiling():
    m = Machine()
    p = m.policy()
    assert p.budget_us() == 100.0
    info = p.info()
    assert info["mode"] == "auto" and info["spinning"] and info["usable_cpus"] == 4


def test_budget_follows_the_waits_that_succeed():
    m = Machine()
    p = m.policy()
    for _ in range(40):
        p.record(True, 10.0)
    assert p.budget_us() == pytest.approx(40.0)      # 4x the moving average of the waits
    for _ in range(40):
        p.record(True, 1.0)
    assert p.budget_us() == 5.0                       # never below a useful minimum
    assert p.info()["hits"] == 80
    p.floor_us = 30.0                                 # a site whose late replies cost more asleep
    p.record(True, 1.0)
    assert p.budget_us() == 30.0
    assert _core.wait_policies()["shm"].floor_us == 30.0


def test_one_usable_cpu_never_spins():
    m = Machine(usable=1, online=8)
    p = m.policy()
    assert p.budget_us() == 0.0
    info = p.info()
    assert not info["spinning"] and info["reason"] == "one usable CPU"


def test_oversubscribed_machine_stops_spinning_and_recovers():
    m = Machine(usable=2, online=2, runnable=4)        # two busy loops beside two nodes
    p = m.policy()
    assert p.budget_us() == 100.0                     # one crowded sample may be a passing thread
    m.now += 50.0
    assert p.budget_us() == 0.0                       # two in a row: oversubscribed
    assert "oversubscribed" in p.info()["reason"]
    assert p.info()["denied"] == {"one_cpu": 0, "oversubscribed": 1, "preempted": 0, "backoff": 0}
    m.runnable = 3                                    # one extra thread is tolerated
    m.now += 10.0
    assert p.budget_us() == 0.0                       # facts are re-read only every 50 ms
    m.now += 50.0
    assert p.budget_us() == 100.0


def test_confirmed_crowding_pauses_longer_each_time_although_it_vanishes_while_paused():
    # Two busy loops beside two pool nodes on two cores: 4 runnable threads while the nodes
    # spin, 3 while they sleep (not "crowded"). Without a growing pause the spin came back
    # every other probe and collapsed again (pool calls spread 10-63 k calls/s).
    m = Machine(usable=2, online=2, runnable=3)
    p = m.policy()
    allowed = []
    for _ in range(400):                  # 20 s of fake time, a probe every 50 ms
        m.runnable = 4 if p.spinning else 3
        b = p.budget_us()
        allowed.append(b > 0.0)
        m.now += 50.0
    _assert_growing_pauses(allowed)
    info = p.info()
    assert "oversubscribed" in info["reason"]
    assert info["denied"]["oversubscribed"] >= 350 and info["denied"]["preempted"] == 0
    # the busy loops end: after the pause, spinning resumes and stays on
    m.runnable = 2
    calm = []
    for _ in range(100):
        calm.append(p.budget_us() > 0.0)
        m.now += 50.0
    assert all(calm[45:]) and p.info()["spinning"]


def test_rising_involuntary_switches_stop_spinning():
    m = Machine(nivcsw=100)
    p = m.policy()
    assert p.budget_us() == 100.0
    m.now += 50.0
    m.nivcsw = 120                                    # preempted 20 times since the last probe
    assert p.budget_us() == 100.0                     # one such interval may be work passing by
    m.now += 50.0
    m.nivcsw = 135                                    # and again: this thread shares its core
    assert p.budget_us() == 0.0
    assert "preempted (15 involuntary switches per 50 ms)" == p.info()["reason"]
    assert p.info()["denied"]["preempted"] == 1       # the budget_us() call above
    m.now += 60.0                                     # no new preemption: spinning may resume
    assert p.budget_us() == 100.0
    m.now += 5000.0
    m.nivcsw = 155                                    # 20 more over 5 s: a low rate, not contention
    assert p.budget_us() == 100.0
    m.now += 50.0
    assert p.budget_us() == 100.0


def test_isolated_bad_samples_do_not_stop_a_quiet_machine_spinning():
    # Two nodes on a 2-core machine: both spin, and now and then a reply is late (a GC),
    # a load sample catches a passing thread, or one interval sees a burst of
    # preemptions. None of these alone pauses the spin; each is followed by normal samples.
    m = Machine(usable=2, online=2, runnable=2, nivcsw=0)
    p = m.policy()
    spun = refused = 0
    for i in range(4000):                 # 4000 calls, one per 0.1 ms of fake time: a probe
        if i % 1000 == 0:                 # every 500 calls
            m.runnable = 4                # one crowded sample (the probe at i)
        elif i % 1000 == 1:
            m.runnable = 2
        elif i % 1000 == 500:
            m.nivcsw += 30                # one interval with a burst of preemptions
        b = p.budget_us()
        if b > 0.0:
            spun += 1
            p.record(i % 50 != 0, 20.0 if i % 50 else b)   # every 50th reply comes late
        else:
            refused += 1
        m.now += 0.1
    info = p.info()
    assert refused == 0 and spun == 4000, info
    assert info["misses"] == 80 and info["spinning"]
    assert sum(info["denied"].values()) == 0


def test_preemptions_caused_by_our_own_wake_ups_do_not_stop_the_spin():
    # Two pool nodes on a 2-core machine, calling each other over the shared-memory rings
    # while they sleep between calls: every call rings a doorbell, and about a third of
    # the wake-ups preempt the waker (the woken peer runs on its core). 300 involuntary
    # switches per 50 ms for 800 doorbells rung is the doorbell, not contention.
    m = Machine(usable=2, online=2, runnable=2)
    m.woke = 0
    p = m.policy()
    for _ in range(10):
        assert p.budget_us() == 100.0, p.info()
        m.now += 50.0
        m.nivcsw += 300
        m.woke += 800
    info = p.info()
    assert info["spinning"] and info["denied"]["preempted"] == 0 and info["excused"] == 300
    # the same switches without the doorbell count (an older probe): contention
    m2 = Machine(usable=2, online=2, runnable=2)
    p2 = m2.policy()
    for _ in range(2):
        p2.budget_us()
        m2.now += 50.0
        m2.nivcsw += 300
    assert p2.budget_us() == 0.0 and p2.info()["reason"].startswith("preempted (300")


def test_preemptions_beyond_our_wake_ups_still_count():
    # a busy loop shares the core: 15 preemptions per interval, only 2 of them after a
    # doorbell this thread rang
    m = Machine(usable=2, online=2, runnable=3)
    m.woke = 0
    p = m.policy()
    for _ in range(2):
        assert p.budget_us() == 100.0
        m.now += 50.0
        m.nivcsw += 15
        m.woke += 2
    assert p.budget_us() == 0.0
    assert p.info()["reason"] == "preempted (13 involuntary switches per 50 ms)"
    assert p.info()["excused"] == 2


def test_confirmed_preemption_pauses_longer_each_time_and_calm_resets_it():
    # Beside a busy loop a node that stopped spinning is rarely preempted while it sleeps:
    # without a growing pause it would spin again (and collapse) every other probe.
    m = Machine(usable=2, online=2, runnable=3)
    m.woke = 0
    p = m.policy()
    allowed = []
    for _ in range(400):                  # 20 s of fake time, a probe every 50 ms
        b = p.budget_us()
        allowed.append(b > 0.0)
        m.now += 50.0
        if b > 0.0:
            m.nivcsw += 15                # spinning beside the busy loop: preempted
    # pauses of 50, 100, 200 ... ms up to 2 s, each after two preempted probes: spinning
    # a small and shrinking part of the time
    _assert_growing_pauses(allowed)
    assert p.info()["denied"]["preempted"] >= 350
    # the busy loop ends: once the pause is over, spinning resumes and stays on
    calm = []
    for _ in range(200):
        calm.append(p.budget_us() > 0.0)
        m.now += 50.0
    assert all(calm[45:]) and p.info()["spinning"]
    # after a calm second the pauses start again from 50 ms
    for _ in range(2):
        p.budget_us()
        m.now += 50.0
        m.nivcsw += 15
    assert p.budget_us() == 0.0           # confirmed again: paused 50 ms
    m.now += 50.0
    assert p.budget_us() == 100.0


def test_missed_spins_back_off_exponentially_and_a_hit_ends_it():
    m = Machine()
    p = m.policy()
    p.record(False, 100.0)                            # one miss among hits: spin on, widely
    assert p.budget_us() == 100.0
    pauses = []
    for _ in range(5):
        p.record(False, 100.0)
        start = m.now
        while p.budget_us() == 0.0:
            m.now += 0.25
        pauses.append(m.now - start)
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert "backing off" not in p.info()["reason"]
    p.record(False, 100.0)
    assert p.info()["reason"].startswith("backing off after 7")
    assert p.info()["denied"]["backoff"] > 0
    p.record(True, 20.0)                              # a success ends the back-off at once
    m.now += 0.25
    assert p.budget_us() == 80.0
    p.record(False, 100.0)                            # the count of misses in a row restarts
    assert p.budget_us() == 100.0
    for _ in range(30):                               # the pause is capped at one second
        p.record(False, 100.0)
    m.now += 999.0
    assert p.budget_us() == 0.0
    m.now += 1.0
    assert p.budget_us() == 100.0


def test_fixed_and_none_settings_ignore_the_machine():
    m = Machine(usable=1, runnable=50)
    fixed = m.policy(250)
    assert fixed.budget_us() == 250.0 and m.probes == 0
    fixed.record(False, 250.0)
    assert fixed.budget_us() == 250.0                 # the user asked for it: no back-off
    assert fixed.info()["mode"] == "fixed"
    for off in ("none", 0):
        p = m.policy(off)
        assert p.budget_us() == 0.0 and p.info()["mode"] == "none"


def test_configure_changes_the_setting_and_restarts_statistics():
    m = Machine()
    p = m.policy()
    p.record(True, 10.0)
    p.configure("none")
    assert p.setting == "none" and p.budget_us() == 0.0 and p.info()["spins"] == 0
    p.configure("auto")
    assert p.budget_us() == 100.0


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (10_001, ValueError), ("fast", TypeError),
                                      (True, TypeError), ([], TypeError), (float("nan"), ValueError)])
def test_bad_settings_are_refused_with_a_clear_error(bad, exc):
    with pytest.raises(exc, match="busy_wait"):
        _core.WaitPolicy(bad)
    before = _core.wait_policy().setting
    with pytest.raises(exc, match="busy_wait"):
        _core.wait_policy().configure(bad)
    assert _core.wait_policy().setting is before      # a refused setting changes nothing


def test_bad_clock_or_probe_is_refused():
    with pytest.raises(TypeError, match="clock"):
        _core.WaitPolicy("auto", clock=3)
    with pytest.raises(TypeError, match="probe"):
        _core.WaitPolicy("auto", probe="x")


def test_real_machine_probe_reports_what_it_knows():
    usable, online, runnable, nivcsw, woke = _core._wp_read_machine()
    assert 1 <= usable <= online and woke >= 0
    if sys.platform.startswith("linux"):
        assert runnable >= 1 and nivcsw >= 0
        assert usable == len(os.sched_getaffinity(0)) or os.path.exists("/sys/fs/cgroup/cpu.max")


@pytest.mark.pyotp
async def test_node_start_validates_busy_wait():
    import pyotp

    errors = []
    for bad in ("sometimes", -5, False):
        try:
            await Node.start(unique("wp"), cookie=COOKIE, busy_wait=bad)
        except DistError as e:
            errors.append("busy_wait" in str(e))
    await Node.start(unique("wp"), cookie=COOKIE, busy_wait="none")
    off = _core.wait_policy().info()["mode"]
    await Node.stop()
    await Node.start(unique("wp"), cookie=COOKIE)          # the default is auto
    auto = _core.wait_policy().info()["mode"]
    await Node.stop()
    assert errors == [True] * 3
    assert off == "none"
    assert auto == "auto"


PINNED = r"""
import json, os, sys
os.sched_setaffinity(0, {0})          # this process and the peer it starts share one CPU
import pyotp
from pyotp import GenServer, _core
from dist_helpers import NodeProc, COOKIE, unique

async def main():
    from pyotp.dist import Node
    await Node.start(unique("pin"), cookie=COOKIE)
    with NodeProc("pinb", role="dist_roles:role_peer") as b:
        b.expect("ready")
        replies = [await GenServer.call(("echo", b.name), i) for i in range(300)]
        info = _core.wait_policy().info()
        pyotp.send(("echo", b.name), "stop")
    await Node.stop()
    return len(replies), replies[-1][1], info

n, last, info = pyotp.run(main)
print("@@" + json.dumps({"n": n, "last": last, "info": info}))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_two_nodes_pinned_to_one_cpu_complete_their_calls_without_spinning():
    out = subprocess.run([sys.executable, "-c", PINNED], env=child_env(), capture_output=True,
                         text=True, timeout=WAIT * 6)
    lines = [x for x in out.stdout.splitlines() if x.startswith("@@")]
    assert out.returncode == 0 and lines, out.stdout + out.stderr
    res = json.loads(lines[-1][2:])
    assert res["n"] == 300 and res["last"] == 299
    info = res["info"]
    assert info["mode"] == "auto" and not info["spinning"]
    assert info["reason"] == "one usable CPU" and info["usable_cpus"] == 1
    assert info["spun_us"] == 0.0


def test_spin_sites_follow_the_runtime_setting():
    sites = _core.wait_policies()
    assert set(sites) == {"dist", "thread_loop", "thread_caller", "shm"}
    assert sites["dist"] is _core.wait_policy()
    before = _core.wait_policy().setting
    try:
        _core.wait_policy().configure(40)
        assert [p.setting for p in sites.values()] == [40, 40, 40, 40]
        assert sites["thread_caller"].budget_us() == 40.0
        _core.wait_policy().configure("none")
        assert all(p.budget_us() == 0.0 for p in sites.values())
    finally:
        _core.wait_policy().configure(before)
    assert sites["thread_loop"].setting == before


@pytest.mark.parametrize("setting, threads", [(200, 1), (200, 4), ("none", 1), ("auto", 4)])
def test_thread_calls_answer_right_whether_they_spin_or_sleep(setting, threads):
    # A fixed setting spins on both sides at every call (the caller for its answer, the
    # loop thread for the next call), "none" never: each call gets its own answer either way.
    import threading
    import pyotp
    from pyotp import GenServer

    class Echo(GenServer):
        def init(self, arg):
            return ("ok", 0)

        def handle_call(self, req, from_, n):
            return ("reply", req, n + 1)

    before = _core.wait_policy().setting
    _core.wait_policy().configure(setting)
    node = pyotp.Runtime.start_thread()
    try:
        pid = node.call_in_loop(Echo.start_link, None)
        caller0 = _core.wait_policies()["thread_caller"].info()["spins"]
        loop0 = _core.wait_policies()["thread_loop"].info()["spins"]
        bad = []

        def worker(k):
            for i in range(500):
                got = node.call(pid, (k, i))
                if got != (k, i):
                    bad.append((k, i, got))
        ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert bad == []
        caller = _core.wait_policies()["thread_caller"].info()["spins"] - caller0
        loop = _core.wait_policies()["thread_loop"].info()["spins"] - loop0
        if setting == "none":
            assert caller == loop == 0
        elif setting == 200 and threads == 1:
            assert caller == 500 and loop > 0
        with pytest.raises(pyotp.Exit):                  # a timed-out call retires its waiter
            node.call(pid, ("sleep",), timeout=0)
        assert node.call(pid, "after") == "after"
    finally:
        node.stop()
        _core.wait_policy().configure(before)
