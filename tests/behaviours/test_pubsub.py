"""PubSub: subscribe/unsubscribe/broadcast(_from), local broadcasts, cleanup on exit, the
remote-members seam, and broadcasts from other threads. The async tests run as the first
process of a fresh node (the pyotp pytest plugin)."""
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


@pytest.mark.pyotp
async def test_subscribe_broadcast_unsubscribe_and_duplicates():
    await PubSub.start_link(name="PS")
    assert PubSub.subscribe("PS", "a") == "ok"
    PubSub.subscribe("PS", "b")
    PubSub.subscribe("PS", "b")                 # twice: delivered twice (Phoenix)
    assert PubSub.broadcast("PS", "a", ("msg", 1)) == "ok"
    PubSub.broadcast("PS", "b", ("msg", 2))
    PubSub.broadcast("PS", "nobody", ("msg", 3))
    assert [await pyotp.receive() for _ in range(3)] == [("msg", 1), ("msg", 2), ("msg", 2)]
    assert PubSub.unsubscribe("PS", "b") == "ok"
    PubSub.broadcast("PS", "b", ("msg", 4))
    PubSub.broadcast("PS", "a", ("msg", 5))
    assert await pyotp.receive() == ("msg", 5)


@pytest.mark.pyotp
async def test_broadcast_from_and_local_broadcasts_skip_the_sender():
    me = pyotp.self()
    await PubSub.start_link(name="PS")
    PubSub.subscribe("PS", "t")
    other, ref = await spawn_ready(["t"], 4)
    PubSub.broadcast_from("PS", me, "t", "from-me")
    PubSub.local_broadcast("PS", "t", "local")
    PubSub.local_broadcast_from("PS", me, "t", "local-from-me")
    PubSub.direct_broadcast(pyotp.local_node(), "PS", "t", "direct")
    assert await collect(other) == ["from-me", "local", "local-from-me", "direct"]
    mine = [await pyotp.receive(lambda m: isinstance(m, str)) for _ in range(2)]
    assert mine == ["local", "direct"]
    pyotp.send(me, "end")
    assert await pyotp.receive(lambda m: isinstance(m, str)) == "end"


@pytest.mark.pyotp
async def test_every_subscriber_gets_every_message_in_order():
    N, M = 500, 20
    await PubSub.start_link(name="PS")
    subs = [await spawn_ready(["news"], M) for _ in range(N)]
    for i in range(M):
        PubSub.broadcast("PS", "news", i)
    results = [await collect(pid) for pid, _ in subs]
    assert len(results) == N and all(r == list(range(M)) for r in results)


@pytest.mark.pyotp
async def test_subscriptions_vanish_when_subscriber_exits():
    await PubSub.start_link(name="PS")
    subs = [await spawn_ready(["t"], 1) for _ in range(10)]
    for pid, ref in subs[:5]:
        pyotp.exit(pid, "kill")
        await pyotp.receive(lambda m, ref=ref: m[0] == "DOWN" and m[1] == ref)
    assert sorted(p for p, _ in Registry.lookup("PS", "t")) == sorted(p for p, _ in subs[5:])
    PubSub.broadcast("PS", "t", "after")
    assert [await collect(pid) for pid, _ in subs[5:]] == [["after"]] * 5
    await Registry._sync("PS")
    assert Registry.count("PS") == 5


@pytest.mark.pyotp
async def test_metadata_is_stored_with_the_subscription():
    await PubSub.start_link("PS")
    PubSub.subscribe("PS", "t", metadata={"user": "ann"})
    assert Registry.lookup("PS", "t") == [(pyotp.self(), {"user": "ann"})]


@pytest.mark.pyotp
async def test_unknown_pubsub_name_clashes_and_stop():
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
    assert e0.value.reason[0] == "already_started"
    pid = await PubSub.start_link(name="PS")
    with pytest.raises(StartError) as e:
        await PubSub.start_link(name="PS")
    assert e.value.reason == ("already_started", pid)
    assert PubSub.node_name("PS") == "nonode@nohost"
    assert await PubSub.stop("PS") == "ok"
    with pytest.raises(BadArg):
        PubSub.broadcast("PS", "t", 1)
    with pytest.raises(BadArg):
        Registry.lookup("PS", "t")
    pid2 = await PubSub.start_link({"name": "PS", "partitions": 2})
    assert pid2 != pid
    PubSub.subscribe("PS", "t")
    PubSub.broadcast("PS", "t", "back")
    assert await pyotp.receive() == "back"


@pytest.mark.pyotp
async def test_direct_broadcast_to_another_node_needs_distribution():
    await PubSub.start_link(name="PS")
    with pytest.raises(BadArg, match="not distributed"):
        PubSub.direct_broadcast("other@host", "PS", "t", 1)


@pytest.mark.pyotp
async def test_forwarded_broadcast_reaches_local_subscribers():
    """What another node's PubSub sends to this node's server (the distribution seam)."""
    await PubSub.start_link(name="PS")
    a, _ = await spawn_ready(["t"], 2)
    b, _ = await spawn_ready(["t"], 1)
    server = pyotp.whereis("PS.Server")
    pyotp.send(server, ("$pubsub_forward", "t", "remote-1", None))
    pyotp.send(server, ("$pubsub_forward", "t", "remote-2", b))   # broadcast_from b
    assert await collect(a) == ["remote-1", "remote-2"]
    assert await collect(b) == ["remote-1"]


@pytest.mark.pyotp
async def test_broadcast_forwards_once_to_each_remote_member():
    """With a remote-members provider installed (distribution does this with pg), a
    broadcast sends one forward per member; local_broadcast sends none."""
    async def member(parent):
        pyotp.send(parent, ("member", pyotp.self()))
        while True:
            msg = await pyotp.receive()
            pyotp.send(parent, ("forwarded", pyotp.self(), msg))

    await PubSub.start_link(name="PS")
    m1 = pyotp.spawn(member, pyotp.self())
    m2 = pyotp.spawn(member, pyotp.self())
    await pyotp.receive(lambda m: m == ("member", m1))
    await pyotp.receive(lambda m: m == ("member", m2))
    assert pubsub_mod.remote_members("PS") == []
    pubsub_mod.set_remote_members_provider(lambda name: [m1, m2] if name == "PS" else [])
    try:
        PubSub.subscribe("PS", "t")
        PubSub.local_broadcast("PS", "t", "local-only")
        PubSub.broadcast_from("PS", pyotp.self(), "t", "everywhere")
        got = [await pyotp.receive(lambda m: m[0] == "forwarded") for _ in range(2)]
        assert await pyotp.receive(lambda m: m == "local-only") == "local-only"
    finally:
        pubsub_mod.set_remote_members_provider(None)
    assert sorted(g[1] for g in got) == sorted([m1, m2])
    fwd = got[0][2]
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


@pytest.mark.pyotp
async def test_pubsub_under_a_supervisor():
    from pyotp.supervisor import Supervisor

    sup = await Supervisor.start_link([(PubSub, "PS"), (PubSub, {"name": "PS2"})],
                                      strategy="one_for_one")
    assert sorted(c[0] for c in await Supervisor.which_children(sup)) == ["PS", "PS2"]
    PubSub.subscribe("PS", "t")
    PubSub.subscribe("PS2", "t")
    PubSub.broadcast("PS", "t", 1)
    PubSub.broadcast("PS2", "t", 2)
    assert [await pyotp.receive(), await pyotp.receive()] == [1, 2]
    await Supervisor.stop(sup)
    with pytest.raises(BadArg):
        PubSub.broadcast("PS", "t", 3)
