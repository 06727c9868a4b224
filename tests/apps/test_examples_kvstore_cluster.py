"""examples/kvstore as a cluster: nodes in separate OS processes joined by pyotp
distribution, keys sharded by consistent hashing with replication factor 2, and a
Jepsen-style check that no acknowledged write is lost when a node is SIGKILLed and
restarted while clients write."""
from __future__ import annotations

import contextlib
import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kvstore_helpers import KvNode, free_port, poll, unique
from kvstore_helpers import live_members_of as live_members


@contextlib.contextmanager
def pair(tmp_path=None, *args):
    """Two nodes that know each other, both live; stopped (or killed) on the way out."""
    a_name, b_name = unique("kva"), unique("kvb")
    nodes = []
    try:
        nodes.append(KvNode(*args, node=a_name, peers=[b_name], data=str(tmp_path / "a") if tmp_path else None))
        nodes.append(KvNode(*args, node=b_name, peers=[a_name], data=str(tmp_path / "b") if tmp_path else None))
        a, b = nodes
        poll(lambda: live_members(a.port) == {a_name, b_name} == live_members(b.port), "both nodes live")
        yield a, b
    finally:
        for n in nodes:
            n.stop()


def test_two_nodes_replicate_and_forward():
    with pair() as (a, b):
        ca, cb = redis.Redis(port=a.port), redis.Redis(port=b.port)
        for i in range(200):
            assert ca.set("k%d" % i, "v%d" % i) is True
        assert cb.mget(["k%d" % i for i in range(200)]) == [b"v%d" % i for i in range(200)]
        assert cb.incr("n") == 1 and ca.incr("n") == 2 and cb.get("n") == b"2"
        assert ca.dbsize() == cb.dbsize() == 201
        assert set(cb.keys("k1?")) == {b"k1%d" % i for i in range(10)}
        assert set(ca.scan_iter(count=13)) == set(cb.keys("*"))
        assert cb.delete("k0", "k1") == 2 and ca.exists("k0", "k1") == 0
        cb.set("t", "v", ex=100)
        assert 99 <= ca.ttl("t") <= 100
        p = cb.pipeline(transaction=False)
        for i in range(300):
            p.set("p%d" % i, i)
            p.get("p%d" % i)
        out = p.execute()
        assert out[1::2] == [b"%d" % i for i in range(300)]
        assert ca.flushdb() is True and cb.dbsize() == 0 and ca.dbsize() == 0
        ca.close()
        cb.close()


def test_replication_factor_one_shards_the_keys():
    with pair(None, "--replicas", "1") as (a, b):
        ca, cb = redis.Redis(port=a.port), redis.Redis(port=b.port)
        ca.mset({"k%d" % i: i for i in range(100)})
        assert cb.mget(["k%d" % i for i in range(100)]) == [b"%d" % i for i in range(100)]
        held_a = ca.info("keyspace")["db0"]["keys"]
        held_b = cb.info("keyspace")["db0"]["keys"]
        assert held_a + held_b == 100 and 10 < held_a < 90      # each node holds its share only
        ca.close()
        cb.close()


def test_jepsen_sigkill_and_restart_loses_no_acknowledged_write(tmp_path):
    with pair(tmp_path) as (a, b):
        jepsen([a, b], b)


def test_jepsen_three_nodes_replication_factor_two(tmp_path):
    names = [unique("kv3") for _ in range(3)]
    nodes = []
    try:
        for i, n in enumerate(names):
            nodes.append(KvNode(node=n, peers=[m for m in names if m != n], data=str(tmp_path / str(i))))
        for nd in nodes:
            poll(lambda: live_members(nd.port) == set(names), "all three nodes live")
        jepsen(nodes, nodes[1])
    finally:
        for nd in nodes:
            nd.stop()


def jepsen(nodes, b: KvNode) -> None:
    """Clients write unique values to every node; ``b`` is SIGKILLed and restarted
    meanwhile; every acknowledged write is then read back from every node."""
    a = next(n for n in nodes if n is not b)
    ports = [n.port for n in nodes]
    everyone = {n.node for n in nodes}
    acked = {}
    lock = threading.Condition()
    stop = threading.Event()
    errors = []
    failed = []

    def client(t: int) -> None:
        # no client-side retries or backoff: a refused connection is just a failed write
        conns = {p: redis.Redis(port=p, socket_timeout=30, retry=Retry(NoBackoff(), 0)) for p in ports}
        i = 0
        while not stop.is_set():
            key, value = "c%d:%d" % (t, i), "v%d-%d" % (t, i)
            port = ports[(t + i) % len(ports)]
            i += 1
            try:
                ok = conns[port].set(key, value)
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                with lock:
                    failed.append(key)   # not acknowledged: may or may not be there
                continue
            except Exception as e:   # noqa: BLE001
                errors.append(e)
                return
            if ok is True:
                with lock:
                    acked[key] = value.encode()
                    lock.notify_all()
        for c in conns.values():
            c.close()

    def wait_acked(n: int) -> None:
        with lock:
            assert lock.wait_for(lambda: len(acked) >= n or errors, 120), "writes stalled"
        assert not errors, errors

    threads = [threading.Thread(target=client, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    try:
        wait_acked(300)
        b.kill()                                        # SIGKILL while writes are in flight
        with lock:
            before_kill = dict(acked)
        ca = redis.Redis(port=a.port)
        poll(lambda: live_members(a.port) == everyone - {b.node}, "the survivors to notice")
        # the surviving replica answers reads of everything acknowledged before the kill
        keys = sorted(before_kill)
        assert ca.mget(keys) == [before_kill[k] for k in keys]
        ca.close()
        wait_acked(len(before_kill) + 300)              # writes go on with one node
        b.restart()                                     # replays its log, catches up from a
        for n in nodes:
            poll(lambda: live_members(n.port) == everyone, "the restarted node to rejoin")
        wait_acked(len(acked) + 300)
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    assert not errors, errors
    assert failed, "the kill never hit a client (the check proves nothing then)"
    assert "replayed" in b.output()                    # the restart started from its log
    keys = sorted(acked)
    want = [acked[k] for k in keys]
    for n in nodes:
        c = redis.Redis(port=n.port)
        assert c.mget(keys) == want, n.node
        c.close()
    # and every key is held by rf=2 nodes (b among them for its share): count the copies
    held = 0
    for n in nodes:
        c = redis.Redis(port=n.port)
        held += c.info("keyspace")["db0"]["keys"]
        c.close()
    assert held >= 2 * len(keys)


def test_nodes_option_runs_the_store_on_a_three_node_pool(tmp_path):
    """--nodes 3: the head and two pool workers each serve on their own port and log; a
    SIGKILLed worker is restarted by the pool, its store started again, and it catches up."""
    import os
    import signal
    import socket
    import sys
    from kvstore_helpers import Proc

    def three_free_ports() -> int:
        for _ in range(50):
            base = free_port()
            socks = []
            try:
                for p in range(base, base + 3):
                    s = socket.socket()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", p))
                    socks.append(s)
                return base
            except OSError:
                continue
            finally:
                for s in socks:
                    s.close()
        raise RuntimeError("no three consecutive free ports")

    port = three_free_ports()
    prefix = unique("kvn").split("@")[0] + "x"
    proc = Proc([sys.executable, "-u", "-m", "examples.kvstore", "--port", str(port), "--nodes", "3",
                 "--name-prefix", prefix, "--data", str(tmp_path)], "kvstore --nodes 3")
    head = "%s1@127.0.0.1" % prefix
    names = {head, "%s1_w1@127.0.0.1" % prefix, "%s1_w2@127.0.0.1" % prefix}
    try:
        proc.wait_log("kvstore ready on", 3)
        for p in range(port, port + 3):
            poll(lambda: live_members(p) == names, "all three nodes live on %d" % p)
        cs = [redis.Redis(port=p) for p in range(port, port + 3)]
        pids = {c.info("server")["process_id"] for c in cs}
        assert len(pids) == 3 and proc.proc.pid in pids      # the head and two worker processes
        assert {c.info("server")["node"] for c in cs} == names
        cs[0].mset({"k%d" % i: i for i in range(300)})
        for c in cs:
            assert c.mget(["k%d" % i for i in range(300)]) == [b"%d" % i for i in range(300)]
            assert c.dbsize() == 300
        held = [c.info("keyspace")["db0"]["keys"] for c in cs]
        assert sum(held) == 600 and max(held) < 300       # replication factor 2 of 3 nodes
        assert sorted(os.listdir(tmp_path)) == sorted(n.split("@")[0] for n in names)

        w1 = cs[1].info("server")["process_id"]
        cs[1].close()
        os.kill(w1, signal.SIGKILL)

        def mset() -> bool:         # TRYAGAIN while w1 drops out mid-request, as Redis Cluster
            try:
                return bool(cs[2].mset({"n%d" % i: i for i in range(100)}))
            except redis.exceptions.TryAgainError:
                return False
        poll(mset, "a write while w1 is away (or back)")

        def w1_back() -> bool:
            try:
                return redis.Redis(port=port + 1).info("server")["process_id"] != w1
            except redis.ConnectionError:
                return False
        poll(w1_back, "the pool to restart w1 and its store")
        for p in range(port, port + 3):
            poll(lambda: live_members(p) == names, "the restarted w1 live on %d" % p)
        c1 = redis.Redis(port=port + 1)
        assert c1.mget(["n%d" % i for i in range(100)]) == [b"%d" % i for i in range(100)]
        assert c1.get("k7") == b"7" and c1.dbsize() == 400
        c1.set("after", "x")
        assert cs[0].get("after") == b"x"
        for c in cs + [c1]:
            c.close()
    finally:
        proc.proc.send_signal(signal.SIGTERM)             # the pool's head ends its workers
        proc.proc.wait(60)
    assert proc.output().count("kvstore ready on") == 4


def test_a_returning_node_catches_up_deletes_and_flushes(tmp_path):
    with pair(tmp_path) as (a, b):
        ca = redis.Redis(port=a.port)
        ca.mset({"k%d" % i: i for i in range(100)})
        b.kill()
        poll(lambda: live_members(a.port) == {a.node}, "a to notice")
        assert ca.delete(*["k%d" % i for i in range(50)]) == 50     # b's log still has them
        ca.set("new", "x")
        b.restart()
        poll(lambda: live_members(a.port) == {a.node, b.node}, "b to rejoin")
        cb = redis.Redis(port=b.port)
        assert cb.info("keyspace")["db0"]["keys"] == 51            # b's own table: no resurrection
        assert cb.mget("k0", "k49", "k50", "new") == [None, None, b"50", b"x"]
        b.kill()
        poll(lambda: live_members(a.port) == {a.node}, "a to notice again")
        assert ca.flushdb() is True
        b.restart()
        poll(lambda: live_members(a.port) == {a.node, b.node}, "b to rejoin again")
        cb = redis.Redis(port=b.port)
        assert cb.dbsize() == 0 and "db0" not in cb.info("keyspace")
        ca.close()
        cb.close()
