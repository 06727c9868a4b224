"""Fault injection: kill random workers and mid-level supervisors of a 3-level tree
thousands of times (seeded), and check after every kill that the tree is back in its
declared shape, that each strategy restarted exactly what it should, and that no process
leaked; then check that restart intensity is honoured at both levels.

Waiting is deterministic: a kill is synchronous in the core (the supervisor's EXIT is queued
before exit() returns), and a supervisor answers calls in mailbox order, so a
which_children call made after a kill is answered after the restart. The settle loop still
polls until every expected child is alive, and fails after a bounded number of rounds.
"""
import logging
import random

import pytest

import pyotp
from pyotp import GenServer, Pid
from pyotp.supervisor import Supervisor

KILLS = 5000


class W(GenServer):
    def init(self, name):
        return ("ok", name)

    def handle_call(self, req, from_, name):
        return ("reply", name, name)

    def handle_cast(self, req, name):
        raise RuntimeError("injected fault in %s" % (name,))


class ModuleMid(Supervisor):
    """A module-based mid-level supervisor (the others use the list form)."""

    def init(self, arg):
        i, n, max_restarts = arg
        return Supervisor.init(workers(i, n), strategy="rest_for_one", max_restarts=max_restarts,
                               max_seconds=3600)


def workers(i, n):
    return [{"id": "w%d.%d" % (i, j), "start": (W.start_link, ("w%d.%d" % (i, j),)),
             "restart": "permanent" if j % 2 == 0 else "transient",
             "shutdown": "brutal_kill" if j % 3 == 0 else 1}
            for j in range(n)]


# (strategy, number of workers) of each mid-level supervisor; "module" is ModuleMid
LAYOUT = [("one_for_one", 5), ("one_for_all", 4), ("rest_for_one", 6), ("module", 4), ("one_for_one", 3)]


def mid_specs(max_restarts):
    specs = []
    for i, (strategy, n) in enumerate(LAYOUT):
        if strategy == "module":
            specs.append(ModuleMid.child_spec((i, n, max_restarts), id="mid%d" % i))
        else:
            specs.append({"id": "mid%d" % i, "type": "supervisor",
                          "start": (Supervisor.start_link, (workers(i, n),),
                                    {"strategy": strategy, "max_restarts": max_restarts, "max_seconds": 3600})})
    return specs


def strategy_of(mid_index):
    s = LAYOUT[mid_index][0]
    return "rest_for_one" if s == "module" else s


async def snapshot(top):
    """{mid_id: (mid_pid, [(worker_id, worker_pid)])} once every child is alive."""
    for _round in range(50):
        tree = {}
        for mid_id, mid_pid, kind, _m in await Supervisor.which_children(top):
            if type(mid_pid) is not Pid or kind != "supervisor":
                break
            ws = await Supervisor.which_children(mid_pid)
            if not all(type(p) is Pid and pyotp.is_alive(p) for _i, p, _t, _m in ws):
                break
            tree[mid_id] = (mid_pid, [(wid, p) for wid, p, _t, _m in ws])
        else:
            return tree
    raise AssertionError("the tree did not settle")


def check_shape(tree):
    assert list(tree) == ["mid%d" % i for i in range(len(LAYOUT))]
    for i, (mid_id, (mid_pid, ws)) in enumerate(tree.items()):
        assert [wid for wid, _p in ws] == ["w%d.%d" % (i, j) for j in range(LAYOUT[i][1])]


def expected_processes():
    return 1 + 1 + len(LAYOUT) + sum(n for _s, n in LAYOUT)     # main, top, mids, workers


async def down_of(ref):
    return await pyotp.receive(lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN" and m[1] == ref)


@pytest.fixture
def quiet_logs():
    # thousands of crash and supervisor reports: keep them out of the run (and its time)
    log = logging.getLogger("pyotp")
    old = log.level
    log.setLevel(logging.CRITICAL)
    yield
    log.setLevel(old)


@pytest.mark.pyotp
async def test_random_kills_keep_the_declared_shape(quiet_logs):
    rng = random.Random(20240607)

    top = await Supervisor.start_link(mid_specs(10 ** 6), strategy="one_for_one",
                                      max_restarts=10 ** 6, max_seconds=3600, name="top")
    tree = await snapshot(top)
    check_shape(tree)
    assert len(pyotp.processes()) == expected_processes()
    stats = {"worker": 0, "mid": 0, "raise": 0, "exit": 0}
    for _ in range(KILLS):
        mids = list(tree.items())
        mi = rng.randrange(len(mids))
        mid_id, (mid_pid, ws) = mids[mi]
        if rng.random() < 0.15:
            # a mid-level supervisor dies (killed, or stopped with an abnormal reason):
            # its workers die with it, top restarts it. (An exit signal that is not
            # "kill" would be a message to a supervisor, ignored unless from its parent.)
            if rng.random() < 0.5:
                pyotp.exit(mid_pid, "kill")
            else:
                assert await Supervisor.stop(mid_pid, "injected") == "ok"
            new = await snapshot(top)
            for other_id, (other_pid, other_ws) in tree.items():
                if other_id == mid_id:
                    assert new[other_id][0] != mid_pid
                    assert all(not pyotp.is_alive(p) for _w, p in other_ws)
                    assert all(p != q for (_w, p), (_w2, q) in zip(other_ws, new[other_id][1]))
                else:
                    assert new[other_id] == (other_pid, other_ws)
            stats["mid"] += 1
        else:
            wi = rng.randrange(len(ws))
            victim = ws[wi][1]
            how = rng.choice(["kill", "exit", "raise"])
            if how == "raise":
                ref = pyotp.monitor(victim)
                GenServer.cast(victim, "fail")
                await down_of(ref)
                stats["raise"] += 1
            else:
                pyotp.exit(victim, "kill" if how == "kill" else ("injected", wi))
                stats["exit"] += 1
            new = await snapshot(top)
            strategy = strategy_of(mi)
            before, after = ws, new[mid_id][1]
            for j, ((_w, p), (_w2, q)) in enumerate(zip(before, after)):
                restarted = (j == wi or strategy == "one_for_all" or (strategy == "rest_for_one" and j > wi))
                assert (p != q) == restarted, (strategy, wi, j)
            for other_id in tree:
                if other_id != mid_id:
                    assert new[other_id] == tree[other_id]
            stats["worker"] += 1
        tree = new
        assert len(pyotp.processes()) == expected_processes()
    check_shape(tree)
    # every supervisor is linked to exactly its parent and its children
    assert len(pyotp.process_info(top)["links"]) == 1 + len(LAYOUT)
    for i, (mid_pid, ws) in enumerate(tree.values()):
        assert sorted(pyotp.process_info(mid_pid)["links"]) == sorted([top] + [p for _w, p in ws])
    counts = await Supervisor.count_children(top)
    await Supervisor.stop(top)
    left = len(pyotp.processes())
    assert counts == {"specs": len(LAYOUT), "active": len(LAYOUT), "supervisors": len(LAYOUT), "workers": 0}
    assert left == 1
    assert stats["worker"] + stats["mid"] == KILLS and min(stats.values()) > 100


@pytest.mark.pyotp
async def test_restart_intensity_is_honoured_at_each_level(quiet_logs):
    rng = random.Random(7)

    pyotp.process_flag("trap_exit", True)
    # mids allow 2 restarts, top allows 3: a mid that exceeds its intensity shuts down
    # ("shutdown") and is restarted by top (counting against top's intensity)
    top = await Supervisor.start_link(mid_specs(2), strategy="one_for_one", max_restarts=3, max_seconds=3600)
    top_ref = pyotp.monitor(top)
    tree = await snapshot(top)
    mid_id = "mid%d" % rng.randrange(len(LAYOUT))
    mid_pid = tree[mid_id][0]
    mid_ref = pyotp.monitor(mid_pid)
    for _ in range(2):                               # within the mid's intensity
        pyotp.exit(tree[mid_id][1][0][1], "kill")
        tree = await snapshot(top)
        assert tree[mid_id][0] == mid_pid
    pyotp.exit(tree[mid_id][1][0][1], "kill")         # the third restart in the window
    mid_down = await down_of(mid_ref)
    tree = await snapshot(top)                        # top restarted the mid
    check_shape(tree)
    assert len(pyotp.processes()) == expected_processes()
    # two more mid deaths are within top's intensity (3), the third is not
    for _ in range(2):
        victim = tree["mid0"][0]
        pyotp.exit(victim, "kill")
        tree = await snapshot(top)
        assert tree["mid0"][0] != victim
    pyotp.exit(tree["mid0"][0], "kill")
    top_down = await down_of(top_ref)
    mid_reason = mid_down[4]
    top_reason = top_down[4]
    left = len(pyotp.processes())
    assert mid_reason == "shutdown" and top_reason == "shutdown"
    assert left == 1                                     # the whole tree is gone, nothing leaked
