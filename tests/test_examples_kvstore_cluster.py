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


def live_members(port: int) -> set:
    c = redis.Redis(port=port)
    try:
        v = c.info("replication")["live_members"]      # redis-py splits "a,b" into a list
        return set(v if isinstance(v, list) else v.split(","))
    finally:
        c.close()


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
        jepsen(a, b)


def jepsen(a: KvNode, b: KvNode) -> None:
    acked = {}
    lock = threading.Condition()
    stop = threading.Event()
    errors = []
    failed = []

    def client(t: int) -> None:
        # no client-side retries or backoff: a refused connection is just a failed write
        conns = {p: redis.Redis(port=p, socket_timeout=30, retry=Retry(NoBackoff(), 0))
                 for p in (a.port, b.port)}
        i = 0
        while not stop.is_set():
            key, value = "c%d:%d" % (t, i), "v%d-%d" % (t, i)
            port = (a.port, b.port)[(t + i) % 2]
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
        poll(lambda: live_members(a.port) == {a.node}, "the survivor to notice")
        # the surviving replica answers reads of everything acknowledged before the kill
        keys = sorted(before_kill)
        assert ca.mget(keys) == [before_kill[k] for k in keys]
        wait_acked(len(before_kill) + 300)              # writes go on with one node
        b.restart()                                     # replays its log, catches up from a
        poll(lambda: live_members(a.port) == {a.node, b.node}, "the restarted node to rejoin")
        wait_acked(len(acked) + 300)
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    assert not errors, errors
    assert failed, "the kill never hit a client (the check proves nothing then)"
    assert "replayed" in b.output()                    # the restart started from its log
    ca, cb = redis.Redis(port=a.port), redis.Redis(port=b.port)
    keys = sorted(acked)
    want = [acked[k] for k in keys]
    assert ca.mget(keys) == want
    assert cb.mget(keys) == want
    # and b holds them itself (not by forwarding): its own key count covers them all
    assert cb.info("keyspace")["db0"]["keys"] >= len(keys)
    ca.close()
    cb.close()


def test_nodes_option_starts_a_three_node_cluster():
    import signal
    import socket
    import sys
    from dist_helpers import ensure_epmd
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

    ensure_epmd()
    port = three_free_ports()
    prefix = unique("kvn").split("@")[0] + "x"
    proc = Proc([sys.executable, "-u", "-m", "examples.kvstore", "--port", str(port), "--nodes", "3",
                 "--name-prefix", prefix], "kvstore --nodes 3")
    try:
        proc.wait_log("kvstore ready on", 3)
        names = {"%s%d@127.0.0.1" % (prefix, i) for i in (1, 2, 3)}
        for p in range(port, port + 3):
            poll(lambda: live_members(p) == names, "all three nodes live on %d" % p)
        cs = [redis.Redis(port=p) for p in range(port, port + 3)]
        cs[0].mset({"k%d" % i: i for i in range(300)})
        for c in cs:
            assert c.mget(["k%d" % i for i in range(300)]) == [b"%d" % i for i in range(300)]
            assert c.dbsize() == 300
        held = [c.info("keyspace")["db0"]["keys"] for c in cs]
        assert sum(held) == 600 and max(held) < 300       # replication factor 2 of 3 nodes
        for c in cs:
            c.close()
    finally:
        proc.proc.send_signal(signal.SIGTERM)             # the launcher stops its nodes
        proc.proc.wait(60)
    assert proc.output().count("kvstore ready on") == 3
