"""Introspection for the observer: process_info keys, node_stats, observer snapshot, top,
supervision tree with restart counts, and the same over rpc."""
import pytest

import pyotp
from pyotp import GenServer, Supervisor
from servers import Worker


async def body(a, b):
    await pyotp.receive()


@pytest.mark.pyotp
async def test_process_info_keys_and_initial_call():
    w = await Worker.start_link(1)
    for _ in range(3):
        await GenServer.call(w, "x")
    p = pyotp.spawn(body, 1, 2)
    await pyotp.sleep(0)
    wi = pyotp.process_info(w, ["initial_call", "reductions", "parent", "status"])
    pi = pyotp.process_info(p, ["initial_call"])
    with pytest.raises(pyotp.BadArg, match="unknown key 'nope'"):
        pyotp.process_info(w, ["nope"])
    with pytest.raises(pyotp.BadArg, match="list of key names"):
        pyotp.process_info(w, "status")
    me = pyotp.self()
    assert wi["initial_call"] == ("servers", "Worker.init", 1)
    assert wi["reductions"] >= 3          # the 3 calls
    assert wi["parent"] == me and wi["status"] == "waiting"
    assert list(wi) == ["initial_call", "reductions", "parent", "status"]
    assert pi["initial_call"] == (__name__, "body", 2)


@pytest.mark.pyotp
async def test_node_stats_and_snapshot_count_processes():
    before = pyotp._core.node_stats()["processes"]
    ps = [pyotp.spawn(body, 0, 0) for _ in range(5)]
    snap = pyotp.observer.snapshot(top=3, sort="memory")
    with pytest.raises(ValueError, match="sort must be one of"):
        pyotp.observer.top(sort="bogus")
    assert snap["node"]["processes"] == before + 5
    assert len(snap["top"]) == 3
    mems = [r["memory"] for r in snap["top"]]
    assert mems == sorted(mems, reverse=True)


def test_supervision_tree_counts_restarts():
    async def main():
        sup = await Supervisor.start_link(
            [{"id": "w", "start": (Worker.start_link, [0])},
             {"id": "inner", "type": "supervisor",
              "start": (Supervisor.start_link, [[{"id": "v", "start": (Worker.start_link, [0])}]],
                        {"strategy": "one_for_one"})}],
            strategy="one_for_one")
        t0 = await pyotp.observer.supervision_tree(sup)
        old = t0["children"][0]["pid"]
        pyotp.exit(old, "kill")
        while True:
            t1 = await pyotp.observer.supervision_tree(sup)
            if t1["children"][0]["pid"] not in (None, old):
                return t0, t1
            await pyotp.sleep(0.001)
    t0, t1 = pyotp.run(main)
    assert t0["restarts"] == 0 and t1["restarts"] == 1
    assert t1["children"][1]["id"] == "inner"
    assert t1["children"][1]["children"][0]["id"] == "v"


class Counter(GenServer):
    def init(self, arg):
        return ("ok", 0, ("continue", "boot"))

    def handle_continue(self, what, n):
        return ("noreply", n)

    def handle_cast(self, msg, n):
        return ("noreply", n + 1)

    def handle_call(self, req, from_, n):
        return ("reply", n, n)


@pytest.mark.pyotp
async def test_messages_received_and_reductions_are_separate_counters():
    """messages_received counts arrivals (queued ones too), messages_handled what was
    taken out, reductions every callback run (init and handle_continue included)."""
    me = pyotp.self()
    for i in range(4):
        pyotp.send(me, i)
    mine = pyotp.process_info(me, ["messages_received", "messages_handled", "message_queue_len"])
    await pyotp.receive()
    mine2 = pyotp.process_info(me, ["messages_received", "messages_handled", "message_queue_len"])
    c = await Counter.start_link(None)
    for _ in range(5):
        GenServer.cast(c, "inc")
    assert await GenServer.call(c, "get") == 5
    c = pyotp.process_info(c, ["messages_received", "messages_handled", "reductions"])
    assert mine == {"messages_received": 4, "messages_handled": 0, "message_queue_len": 4}
    assert mine2 == {"messages_received": 4, "messages_handled": 1, "message_queue_len": 3}
    # 5 casts + 1 call arrived and were handled; init + continue + 6 callbacks ran
    assert c == {"messages_received": 6, "messages_handled": 6, "reductions": 8}


def test_trees_name_the_application_of_a_top_supervisor():
    class ObsApp(pyotp.Application):
        name = "obs_app"

        async def start(self, start_type, args):
            return await Supervisor.start_link(
                [{"id": "w", "start": (Worker.start_link, [0])}], strategy="one_for_one")

    async def main():
        loose = await Supervisor.start_link([], strategy="one_for_one")
        await pyotp.Application.ensure_all_started(ObsApp)
        try:
            return loose, await pyotp.observer.trees()
        finally:
            await pyotp.Application.stop("obs_app")
    loose, trees = pyotp.run(main)
    by_app = {t.get("application"): t for t in trees}
    assert by_app["obs_app"]["children"][0]["id"] == "w"
    assert by_app[None]["pid"] == loose
