"""Main scripts for tests/behaviours/test_pool.py: run as `python pool_apps.py <role> [args]`, so that
the pool's workers import this file as their main module (multiprocessing spawn). A role
reports with one `@@tag value` line per fact on stdout."""
import asyncio
import json
import os
import sys

import pyotp
from pyotp import GenServer
from pyotp.dist import Node


def emit(tag, value=None):
    print("@@%s %s" % (tag, json.dumps(value)), flush=True)


class Counter(GenServer):
    def init(self, n):
        return ("ok", n)

    def handle_call(self, req, frm, n):
        if req == "get":
            return ("reply", n, n)
        if req == "node":
            return ("reply", str(Node.self()), n)
        if req == "pid":
            return ("reply", os.getpid(), n)
        return ("reply", ("unknown", req), n)

    def handle_cast(self, req, n):
        return ("noreply", n + req)


class Box:                   # a main-script class crossing nodes as a pickle
    def __init__(self, v):
        self.v = v


async def where(reply_to, box):
    pyotp.send(reply_to, (str(Node.self()), os.getpid(), box.v * 2, type(box).__name__))


async def start_counter(reply_to):
    pid = await Counter.start(0)
    pyotp.send(reply_to, ("counter", pid))
    await pyotp.receive(lambda m: m == "never")


async def forever():
    await pyotp.receive(lambda m: m == "never")


async def role_basic():
    nodes = sorted(Node.list())
    emit("nodes", nodes)
    me = pyotp.self()
    for n in nodes:
        await Node.spawn(n, where, me, Box(21))
    seen = []
    for _ in nodes:
        seen.append(await pyotp.receive(timeout=30))
    emit("seen", sorted(map(list, seen)))
    # a GenServer on a worker: call and cast from the head
    await Node.spawn(nodes[0], start_counter, me)
    _, counter = await pyotp.receive(lambda m: isinstance(m, tuple) and m[0] == "counter", timeout=30)
    for i in range(100):
        GenServer.cast(counter, 1)
    emit("count", await GenServer.call(counter, "get"))
    emit("counter_node", await GenServer.call(counter, "node"))
    return "done"


async def role_kill_worker():
    nodes = sorted(Node.list())
    Node.monitor_nodes(True)
    me = pyotp.self()
    await Node.spawn(nodes[0], start_counter, me)
    _, counter = await pyotp.receive(lambda m: isinstance(m, tuple) and m[0] == "counter", timeout=30)
    wpid = await GenServer.call(counter, "pid")
    ref = pyotp.monitor(counter)
    emit("worker_pid", wpid)
    os.kill(wpid, 9)
    down = await pyotp.receive(lambda m: isinstance(m, tuple) and m[0] == "DOWN", timeout=30)
    emit("down_reason", down[-1])
    await pyotp.receive(lambda m: m == ("nodedown", nodes[0]), timeout=30)
    emit("nodedown", nodes[0])
    await pyotp.receive(lambda m: m == ("nodeup", nodes[0]), timeout=30)
    # the restarted worker works again
    await Node.spawn(nodes[0], start_counter, me)
    _, c2 = await pyotp.receive(lambda m: isinstance(m, tuple) and m[0] == "counter", timeout=30)
    new_pid = await GenServer.call(c2, "pid")
    emit("restarted", new_pid != wpid)
    emit("segments", [_ring_fds(), len(Node.list())])
    return "done"


def _ring_fds():
    """Ring segments mapped by this process (one per live local link)."""
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "pyotp-ring" in line)


async def role_worker_pids():
    pids = []
    me = pyotp.self()
    for n in sorted(Node.list()):
        await Node.spawn(n, start_counter, me)
        _, c = await pyotp.receive(lambda m: isinstance(m, tuple) and m[0] == "counter", timeout=30)
        pids.append(await GenServer.call(c, "pid"))
    emit("worker_pids", pids)
    await pyotp.receive(lambda m: m == "never")     # until killed


async def collector(reply_to, senders, per):
    last = {}
    got = 0
    bad = 0
    while got < senders * per:
        s, i = await pyotp.receive(timeout=60)
        if last.get(s, -1) + 1 != i:
            bad += 1
        last[s] = i
        got += 1
    pyotp.send(reply_to, ("collected", got, bad, str(Node.self())))


async def producer(to, s, per):
    for i in range(per):
        pyotp.send(to, (s, i))


async def spawn_collector(senders, per):
    me = pyotp.self()
    target = sorted(Node.list())[0]
    return await Node.spawn(target, collector, me, senders, per)


async def role_order():
    per = 5000
    col = await spawn_collector(8, per)
    for s in range(8):
        pyotp.spawn(producer, col, s, per)
    emit("collected", list(await pyotp.receive(timeout=120))[1:3])
    return "done"


async def role_threads():
    import threading
    per = 3000
    col = await spawn_collector(8, per)

    def produce(s):
        for i in range(per):
            pyotp.send(col, (s, i))

    threads = [threading.Thread(target=produce, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    emit("collected", list(await pyotp.receive(timeout=120))[1:3])
    for t in threads:
        t.join()
    return "done"


def square(x):
    return x * x


def boom(x):
    if x == 3:
        raise ValueError("three")
    return x


def slow(x):
    import time as _t
    _t.sleep(x)        # a CPU-less stand-in for a long task (the timeout case)
    return x


async def role_partitions():
    from pyotp.partition_supervisor import PartitionSupervisor
    from pyotp import pool
    await PartitionSupervisor.start_link(child_spec=(Counter, 0), name="parts")
    emit("partitions", PartitionSupervisor.partitions("parts"))
    kids = await PartitionSupervisor.which_children("parts")
    emit("children", [[k[0], str(k[1].node) if hasattr(k[1], "node") else None] for k in kids])
    emit("count", await PartitionSupervisor.count_children("parts"))
    for key in ["a", "b", "c", 7, 8]:
        GenServer.cast(("via", PartitionSupervisor, ("parts", key)), 1)
    totals = []
    for i in range(PartitionSupervisor.partitions("parts")):
        totals.append(await GenServer.call(("via", PartitionSupervisor, ("parts", i)), "get"))
    emit("total", sum(totals))
    where = await GenServer.call(("via", PartitionSupervisor, ("parts", 1)), "node")
    emit("p1_node", where)
    # a partition whose node dies is restarted (once its node is back)
    wpid = await GenServer.call(("via", PartitionSupervisor, ("parts", 1)), "pid")
    Node.monitor_nodes(True)
    os.kill(wpid, 9)
    await pyotp.receive(lambda m: m == ("nodeup", where), timeout=60)
    # the supervisor restarts partition 1 as soon as its node is back: poll the condition
    # (bounded), nothing here assumes how long that takes
    for _ in range(600):
        c = await PartitionSupervisor.count_children("parts")
        p = PartitionSupervisor.whereis_name(("parts", 1))
        if c["active"] == 2 and p is not None and await _answers(p):
            break
        await asyncio.sleep(0.05)
    emit("after_restart", [c["active"], await GenServer.call(("via", PartitionSupervisor, ("parts", 1)), "node")])
    # parallel map
    emit("map", await pool.map(square, range(50)))
    emit("stream", [r async for r in pool.async_stream(boom, range(5), max_concurrency=1)])
    try:
        await pool.map(slow, [0, 2], timeout=0.5)
        emit("timeout", None)
    except pyotp.Exit as e:
        emit("timeout", str(e.reason[0]))
    # start on a chosen node, linked
    pid = await pool.start_link_on(pool.pool_nodes()[1], Counter.start_link, 5)
    emit("on_node", [str(pid.node), await GenServer.call(pid, "get")])
    return "done"


async def _answers(p):
    try:
        await GenServer.call(p, "get", 1.0)
        return True
    except Exception:
        return False


async def ps_subscriber(reply_to):
    from pyotp import PubSub
    await PubSub.start_link(name="ps")
    PubSub.subscribe("ps", "news")
    pyotp.send(reply_to, ("subscribed", str(Node.self())))
    while True:
        msg = await pyotp.receive()
        pyotp.send(reply_to, ("got", str(Node.self()), msg))


async def exits_with(reason):
    await pyotp.receive(lambda m: m == "go", timeout=30)
    raise pyotp.Exit(reason)


async def role_links_pubsub():
    from pyotp import PubSub
    me = pyotp.self()
    await PubSub.start_link(name="ps")
    nodes = sorted(Node.list())
    for n in nodes:
        await Node.spawn(n, ps_subscriber, me)
    for _ in nodes:
        await pyotp.receive(lambda m: m[0] == "subscribed", timeout=30)
    PubSub.broadcast("ps", "news", "hello")
    got = sorted([(await pyotp.receive(lambda m: m[0] == "got", timeout=30))[1] for _ in nodes])
    emit("pubsub", got == nodes)
    pyotp.process_flag("trap_exit", True)
    pid = await Node.spawn_link(nodes[0], exits_with, "custom_reason")
    pyotp.send(pid, "go")
    ex = await pyotp.receive(lambda m: isinstance(m, tuple) and m[0] == "EXIT", timeout=30)
    emit("link_exit", [ex[1] == pid, ex[2]])
    return "done"


async def corrupt_link_to(node):
    """On a worker: act as a hostile peer on its ring to `node` (a bad head index)."""
    from pyotp.dist.node import kernel
    await pyotp.receive(lambda m: m == "go", timeout=30)
    t = kernel().conns[node].transport
    t._ring._poke("head", 1 << 40)
    t._bell.send(b"\x01")      # its doorbell: the peer looks at the ring now


async def role_garbage():
    nodes = sorted(Node.list())
    Node.monitor_nodes(True)
    pid = await Node.spawn(nodes[0], corrupt_link_to, str(Node.self()))
    pyotp.send(pid, "go")
    await pyotp.receive(lambda m: m == ("nodedown", nodes[0]), timeout=30)
    emit("after", [nodes[1] in Node.list(), nodes[0] in Node.list()])
    emit("ping", await Node.ping(nodes[0]))        # dialled again (TCP, same secret)
    return "done"


async def report_policy(reply_to):
    info = pyotp._core.wait_policy().info()
    pyotp.send(reply_to, ("policy", info["spinning"], info["reason"]))


async def role_policy():
    from pyotp import pool
    me = pyotp.self()
    nodes = sorted(Node.list())
    await Node.spawn(nodes[0], start_counter, me)
    _, c = await pyotp.receive(lambda m: isinstance(m, tuple) and m[0] == "counter", timeout=30)
    for _ in range(2000):
        await GenServer.call(c, "get")
    await Node.spawn(nodes[0], report_policy, me)
    _, spinning, reason = await pyotp.receive(lambda m: m[0] == "policy", timeout=30)
    mine = pyotp._core.wait_policy().info()
    emit("policy", [mine["spinning"], mine["reason"], spinning, reason, pool.usable_cores()])
    return "done"


def dies_on_a_worker(x):
    """A map function that kills the worker node it runs on at item 1."""
    if x == 1 and pyotp.pool.pool_nodes()[0] != str(Node.self()):
        os._exit(3)
    return x * 10


async def role_map_lost_node():
    from pyotp import pool
    worker = pool.pool_nodes()[1]
    got = [r async for r in pool.async_stream(dies_on_a_worker, range(4), max_concurrency=4,
                                                timeout=60)]
    emit("stream", [list(r[:1]) + [list(r[1]) if isinstance(r[1], tuple) else r[1]] for r in got])
    emit("worker", worker)
    return "done"


async def role_external():
    peer = os.environ["PEER"]
    reply = await GenServer.call(("echo", peer), ("hello", 1))
    emit("external", [sorted(Node.list()), str(Node.self()), list(reply)])
    return "done"


if __name__ == "__main__":
    role = sys.argv[1]
    nodes = sys.argv[2] if len(sys.argv) > 2 else "2"
    nodes = nodes if nodes == "auto" else int(nodes)
    kw = {}
    if os.environ.get("HEAD"):
        kw = {"node": os.environ["HEAD"], "cookie": os.environ["COOKIE"]}
    emit("result", pyotp.run(globals()["role_" + role], nodes=nodes, **kw))
