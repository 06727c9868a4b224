"""PubSub: subscribe/unsubscribe/broadcast(_from), local broadcasts, cleanup on exit, the
remote-members seam, and broadcasts from other threads."""
import threading

import pytest

import pyotp
from pyotp import BadArg, StartError
from pyotp import pubsub as pubsub_mod
from pyotp.pubsub import PubSub
from pyotp.registry import Registry


async def subscriber(parent, topics, n_expected):
    """Subscribes to topics, says ready, collects n_expected messages, reports them."""
    for t in topics:
        PubSub.subscribe("PS", t)
    pyotp.send(parent, ("ready", pyotp.self()))
    got = [await pyotp.receive() for _ in range(n_expected)]
    pyotp.send(parent, ("got", pyotp.self(), got))
    await pyotp.receive()


async def spawn_ready(topics, n):
    pid, ref = pyotp.spawn_monitor(subscriber, pyotp.self(), topics, n)
    await pyotp.receive(lambda m: m == ("ready", pid))
    return pid, ref


async def collect(pid):
    _, _, got = await pyotp.receive(lambda m: m[0] == "got" and m[1] == pid)
    return got


def test_subscribe_broadcast_unsubscribe_and_duplicates():
    async def main():
        await PubSub.start_link(name="PS")
        assert PubSub.subscribe("PS", "a") == "ok"
        PubSub.subscribe("PS", "b")
        PubSub.subscribe("PS", "b")                 # twice: delivered twice (Phoenix)
        assert PubSub.broadcast("PS", "a", ("msg", 1)) == "ok"
        PubSub.broadcast("PS", "b", ("msg", 2))
        PubSub.broadcast("PS", "nobody", ("msg", 3))
        got = [await pyotp.receive() for _ in range(3)]
        assert PubSub.unsubscribe("PS", "b") == "ok"
        PubSub.broadcast("PS", "b", ("msg", 4))
        PubSub.broadcast("PS", "a", ("msg", 5))
        got.append(await pyotp.receive())
        return got
    assert pyotp.run(main) == [("msg", 1), ("msg", 2), ("msg", 2), ("msg", 5)]


def test_broadcast_from_and_local_broadcasts_skip_the_sender():
    async def main():
        me = pyotp.self()
        await PubSub.start_link(name="PS")
        PubSub.subscribe("PS", "t")
        other, ref = await spawn_ready(["t"], 4)
        PubSub.broadcast_from("PS", me, "t", "from-me")
        PubSub.local_broadcast("PS", "t", "local")
        PubSub.local_broadcast_from("PS", me, "t", "local-from-me")
        PubSub.direct_broadcast(pyotp.local_node(), "PS", "t", "direct")
        theirs = await collect(other)
        mine = [await pyotp.receive(lambda m: isinstance(m, str)) for _ in range(2)]
        pyotp.send(me, "end")
        rest = await pyotp.receive(lambda m: isinstance(m, str))
        return theirs, mine, rest
    theirs, mine, rest = pyotp.run(main)
    assert theirs == ["from-me", "local", "local-from-me", "direct"]
    assert mine == ["local", "direct"] and rest == "end"


def test_every_subscriber_gets_every_message_in_order():
    N, M = 500, 20

    async def main():
        await PubSub.start_link(name="PS")
        subs = [await spawn_ready(["news"], M) for _ in range(N)]
        for i in range(M):
            PubSub.broadcast("PS", "news", i)
        return [await collect(pid) for pid, _ in subs]
    results = pyotp.run(main)
    assert len(results) == N and all(r == list(range(M)) for r in results)


def test_subscriptions_vanish_when_subscriber_exits():
    async def main():
        await PubSub.start_link(name="PS")
        subs = [await spawn_ready(["t"], 1) for _ in range(10)]
        for pid, ref in subs[:5]:
            pyotp.exit(pid, "kill")
            await pyotp.receive(lambda m, ref=ref: m[0] == "DOWN" and m[1] == ref)
        live = sorted(p for p, _ in Registry.lookup("PS", "t"))
        PubSub.broadcast("PS", "t", "after")
        got = [await collect(pid) for pid, _ in subs[5:]]
        await Registry._sync("PS")
        return live == sorted(p for p, _ in subs[5:]), got, Registry.count("PS")
    same, got, count = pyotp.run(main)
    assert same and got == [["after"]] * 5 and count == 5


def test_metadata_is_stored_with_the_subscription():
    async def main():
        await PubSub.start_link("PS")
        PubSub.subscribe("PS", "t", metadata={"user": "ann"})
        return Registry.lookup("PS", "t") == [(pyotp.self(), {"user": "ann"})]
    assert pyotp.run(main) is True


def test_unknown_pubsub_name_clashes_and_stop():
    async def main():
        with pytest.raises(BadArg):
            PubSub.broadcast("Nope", "t", 1)
        with pytest.raises(BadArg):
            PubSub.subscribe("Nope", "t")
        with pytest.raises(BadArg):
            await PubSub.start_link(name="")
        with pytest.raises(TypeError):
            await PubSub.start_link({"name": "X", "adapter": "redis"})
        await Registry.start_link(keys="unique", name="Taken")
        with pytest.raises(StartError) as e0:
            await PubSub.start(name="Taken")       # not start_link: the failure would kill us
        taken = e0.value.reason
        pid = await PubSub.start_link(name="PS")
        with pytest.raises(StartError) as e:
            await PubSub.start_link(name="PS")
        again = e.value.reason == ("already_started", pid)
        node = PubSub.node_name("PS")
        assert await PubSub.stop("PS") == "ok"
        with pytest.raises(BadArg):
            PubSub.broadcast("PS", "t", 1)
        with pytest.raises(BadArg):
            Registry.lookup("PS", "t")
        pid2 = await PubSub.start_link({"name": "PS", "partitions": 2})
        PubSub.subscribe("PS", "t")
        PubSub.broadcast("PS", "t", "back")
        return taken[0], again, node, pid2 != pid, await pyotp.receive()
    assert pyotp.run(main) == ("already_started", True, "nonode@nohost", True, "back")


def test_direct_broadcast_to_another_node_needs_distribution():
    async def main():
        await PubSub.start_link(name="PS")
        with pytest.raises(BadArg) as e:
            PubSub.direct_broadcast("other@host", "PS", "t", 1)
        return "not distributed" in str(e.value)
    assert pyotp.run(main) is True


def test_forwarded_broadcast_reaches_local_subscribers():
    """What another node's PubSub sends to this node's server (the distribution seam)."""
    async def main():
        await PubSub.start_link(name="PS")
        a, _ = await spawn_ready(["t"], 2)
        b, _ = await spawn_ready(["t"], 1)
        server = pyotp.whereis("PS.Server")
        pyotp.send(server, ("$pubsub_forward", "t", "remote-1", None))
        pyotp.send(server, ("$pubsub_forward", "t", "remote-2", b))   # broadcast_from b
        return await collect(a), await collect(b)
    assert pyotp.run(main) == (["remote-1", "remote-2"], ["remote-1"])


def test_broadcast_forwards_once_to_each_remote_member():
    """With a remote-members provider installed (distribution does this with pg), a
    broadcast sends one forward per member; local_broadcast sends none."""
    async def member(parent):
        pyotp.send(parent, ("member", pyotp.self()))
        while True:
            msg = await pyotp.receive()
            pyotp.send(parent, ("forwarded", pyotp.self(), msg))

    async def main():
        await PubSub.start_link(name="PS")
        m1 = pyotp.spawn(member, pyotp.self())
        m2 = pyotp.spawn(member, pyotp.self())
        await pyotp.receive(lambda m: m == ("member", m1))
        await pyotp.receive(lambda m: m == ("member", m2))
        before = pubsub_mod.remote_members("PS")
        pubsub_mod.set_remote_members_provider(lambda name: [m1, m2] if name == "PS" else [])
        try:
            PubSub.subscribe("PS", "t")
            PubSub.local_broadcast("PS", "t", "local-only")
            PubSub.broadcast_from("PS", pyotp.self(), "t", "everywhere")
            got = [await pyotp.receive(lambda m: m[0] == "forwarded") for _ in range(2)]
            local = await pyotp.receive(lambda m: m == "local-only")
        finally:
            pubsub_mod.set_remote_members_provider(None)
        return before, sorted(g[1] for g in got) == sorted([m1, m2]), got[0][2], local
    before, both, fwd, local = pyotp.run(main)
    assert before == [] and both and local == "local-only"
    assert fwd[0] == "$pubsub_forward" and fwd[1:3] == ("t", "everywhere")


def test_broadcast_from_another_thread():
    node = pyotp.Runtime.start_thread()
    try:
        box = {}
        ready = threading.Event()

        async def sub():
            PubSub.subscribe("PS", "t")
            ready.set()
            box["got"] = [await pyotp.receive() for _ in range(100)]

        async def start():
            await PubSub.start(name="PS")
            return pyotp.spawn(sub)
        pid = node.call_in_loop(start)
        ready.wait(5)
        for i in range(100):
            PubSub.broadcast("PS", "t", i)          # from this (non-loop) thread

        async def wait_done():
            ref = pyotp.monitor(pid)
            await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
            return box["got"]
        got = node.call_in_loop(_await_process, wait_done)
        assert got == list(range(100))
    finally:
        node.stop()


async def _await_process(fn):
    """Run fn as a process on the node (we are on its loop thread) and return its result."""
    import asyncio
    fut = asyncio.get_running_loop().create_future()

    async def body():
        try:
            fut.set_result(await fn())
        except BaseException as e:  # pragma: no cover - surfaced by the assert
            fut.set_exception(e)
    pyotp.spawn(body)
    return await fut


def test_pubsub_under_a_supervisor():
    from pyotp.supervisor import Supervisor

    async def main():
        sup = await Supervisor.start_link([(PubSub, "PS"), (PubSub, {"name": "PS2"})],
                                          strategy="one_for_one")
        ids = sorted(c[0] for c in await Supervisor.which_children(sup))
        PubSub.subscribe("PS", "t")
        PubSub.subscribe("PS2", "t")
        PubSub.broadcast("PS", "t", 1)
        PubSub.broadcast("PS2", "t", 2)
        got = [await pyotp.receive(), await pyotp.receive()]
        await Supervisor.stop(sup)
        with pytest.raises(BadArg):
            PubSub.broadcast("PS", "t", 3)
        return ids, got
    assert pyotp.run(main) == (["PS", "PS2"], [1, 2])
