"""Distribution between pyotp nodes in separate OS processes: connect/ping, sends, remote
GenServer call/cast, exact Python values, remote spawn, links, monitors, exit signals, rpc.

The test process is node "a" (a fresh name per test); a peer node "b" runs in a child
process for the whole module (role ``role_peer``). Code that must run on b is a
module-level function here, sent by name with ``Node.spawn`` (b imports this module).
"""
from __future__ import annotations

import os

import pytest

import pyotp
from pyotp import Exit, GenServer
from pyotp.dist import DistError, Node, abcast, multi_call, rpc, run_node
from dist_helpers import COOKIE, NodeProc, unique
from dist_roles import Echo, Point, agent, exiter


# ---------------------------------------------------------------------------------------
# fixtures


# exact Python values between the nodes: both accept pickles of numpy and dist_roles
# (Point) besides the safe set (tests/distribution/test_dist_security.py covers the default, off)
PAYLOADS = ["numpy", "dist_roles"]


@pytest.fixture(scope="module")
def peer():
    with NodeProc("b", role="dist_roles:role_peer", python_payloads=PAYLOADS) as b:
        b.expect("ready")
        yield b


def run(main, *args, **kw):
    kw.setdefault("python_payloads", PAYLOADS)
    return run_node(main, *args, node=unique("a"), cookie=COOKIE, **kw)


async def spawn_agent(node, trap=False, link=False):
    me = pyotp.self()
    fn = Node.spawn_link if link else Node.spawn
    pid = await fn(node, agent, me, trap)
    up = await pyotp.receive(lambda m: m[0] == "agent_up", timeout=10)
    assert up[1] == pid
    return pid


# ---------------------------------------------------------------------------------------
# tests


def test_ping_connect_list(peer):
    async def main():
        pong = await Node.ping(peer.name)
        missing = await Node.ping(unique("nobody"))
        return pong, missing, Node.list(), Node.list("hidden"), Node.self().startswith("a")
    assert run(main) == ("pong", "pang", [peer.name], [], True)


def test_remote_call_cast_by_name_and_pid(peer):
    async def main():
        srv = ("echo", peer.name)
        r1 = await GenServer.call(srv, "hi")
        GenServer.cast(srv, "c1")
        GenServer.cast(srv, ("c2", 2))
        casts = await GenServer.call(srv, "casts")
        pid = await rpc.call(peer.name, "pyotp", "whereis", ["echo"])
        r2 = await GenServer.call(pid, "by pid")
        return r1, casts[-2:], r2, pid.node
    r1, casts, r2, node = run(main)
    assert r1 == ("echo", "hi", peer.name)
    assert casts == ["c1", ("c2", 2)]
    assert r2 == ("echo", "by pid", peer.name)
    assert node == peer.name


def test_python_values_round_trip_exactly(peer):
    value = {"s": "text", "b": b"bytes", "t": (1, 2.5, None, True), "set": frozenset({1, 2}),
             "p": Point(3, "y"), "big": 2 ** 100, "nested": [["x"], {"k": ("v",)}]}

    async def main():
        return await GenServer.call(("echo", peer.name), value)
    tag, got, node = run(main)
    assert got == value and type(got["p"]) is Point and type(got["s"]) is str


def test_remote_call_errors(peer):
    async def main():
        out = []
        try:
            await GenServer.call(("nosuch", peer.name), "x", timeout=5)
        except Exit as e:
            out.append(e.reason[0])
        try:
            await GenServer.call(("echo", peer.name), ("later", "late", 0.2), timeout=0.05)
        except Exit as e:
            out.append(e.reason[0])
        # the late reply must not show up as a message; a new call works
        out.append(await GenServer.call(("echo", peer.name), "after"))
        try:
            await pyotp.receive(timeout=0.3)
            out.append("unexpected message")
        except TimeoutError:
            out.append("no stray reply")
        # a call that times out ends its monitor at once (OTP's gen:call demonitors), not
        # when a reply comes (this one never does) or at the next tick
        try:
            await GenServer.call(("echo", peer.name), ("later", "never", 3600), timeout=0.05)
        except Exit as e:
            out.append(e.reason[0])
        echo = await rpc.call(peer.name, "pyotp", "whereis", ["echo"])
        out.append((await rpc.call(peer.name, "pyotp", "process_info", [echo]))["monitored_by"])
        # so does a caller killed while it waits
        async def caller():
            await GenServer.call(("echo", peer.name), ("later", "never", 3600), timeout=None)
        victim, vref = pyotp.spawn_monitor(caller)
        while not (await rpc.call(peer.name, "pyotp", "process_info", [echo]))["monitored_by"]:
            pass                # the call's monitor is in place once the server sees it
        pyotp.exit(victim, "kill")
        await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == vref, timeout=10)
        out.append((await rpc.call(peer.name, "pyotp", "process_info", [echo]))["monitored_by"])
        return out
    assert run(main) == ["noproc", "timeout", ("echo", "after", peer.name), "no stray reply",
                         "timeout", [], []]


def test_send_to_pid_and_name(peer):
    async def main():
        pid = await spawn_agent(peer.name)
        pyotp.send(pid, ("cmd", "echo", "by pid"))
        r1 = await pyotp.receive(timeout=10)
        pyotp.send(pid, "anything")
        r2 = await pyotp.receive(timeout=10)
        pyotp.send(pid, ("cmd", "exit", "normal"))
        return r1, r2
    assert run(main) == (("echo", "by pid"), ("got", "anything"))


def test_remote_spawn_runs_module_function(peer):
    async def main():
        pid = await Node.spawn(peer.name, agent, pyotp.self())
        up = await pyotp.receive(timeout=10)
        ref = pyotp.monitor(pid)
        pyotp.send(pid, ("cmd", "exit", ("custom", 42)))
        down = await pyotp.receive(lambda m: m[0] == "DOWN", timeout=10)
        return up == ("agent_up", pid), down == ("DOWN", ref, "process", pid, ("custom", 42))
    assert run(main) == (True, True)


def test_spawn_link_and_remote_crash_reason(peer):
    async def main():
        pyotp.process_flag("trap_exit", True)
        pid = await spawn_agent(peer.name, link=True)
        pyotp.send(pid, ("cmd", "exit", ("shutdown", "bye")))
        return await pyotp.receive(lambda m: m[0] == "EXIT", timeout=10), pid
    (tag, frm, reason), pid = run(main)
    assert (tag, frm, reason) == ("EXIT", pid, ("shutdown", "bye"))


def test_spawn_monitor_gives_the_real_reason_and_can_be_demonitored(peer):
    async def main():
        # a process that dies at once: the monitor came with it, so the reason is its own
        pid1, ref1 = await Node.spawn_monitor(peer.name, exiter, ("shutdown", "quick"))
        down1 = await pyotp.receive(lambda m: m[0] == "DOWN", timeout=10)
        # demonitor: its death then delivers nothing
        me = pyotp.self()
        pid2, ref2 = await Node.spawn_monitor(peer.name, agent, me, False)
        await pyotp.receive(lambda m: m[0] == "agent_up", timeout=10)
        pyotp.demonitor(ref2)
        pyotp.send(pid2, ("cmd", "exit", "bye"))
        pyotp.send(pid2, "after exit")              # lost: the agent is gone
        pid3, ref3 = await Node.spawn_monitor(peer.name, exiter, "third")
        down3 = await pyotp.receive(lambda m: m[0] == "DOWN", timeout=10)
        return (pid1, ref1, down1), ref2, (pid3, ref3, down3)
    (pid1, ref1, down1), ref2, (pid3, ref3, down3) = run(main)
    assert pid1.node == peer.name and down1 == ("DOWN", ref1, "process", pid1, ("shutdown", "quick"))
    assert down3 == ("DOWN", ref3, "process", pid3, "third")   # first DOWN after ref2's: none for ref2


def test_spawn_monitor_on_this_node():
    async def main():
        pid, ref = await Node.spawn_monitor(Node.self(), exiter, "local")
        return await pyotp.receive(lambda m: m[0] == "DOWN", timeout=10), pid, ref
    down, pid, ref = run(main)
    assert down == ("DOWN", ref, "process", pid, "local")


def test_spawn_errors(peer):
    async def main():
        with pytest.raises(DistError):
            await Node.spawn(peer.name, lambda: None)
        pyotp.process_flag("trap_exit", True)
        pid = await Node.spawn_link(peer.name, ("no_such_module_xyz", "f"))
        return await pyotp.receive(timeout=10), pid
    (tag, pid2, reason), pid = run(main)
    assert (tag, pid2) == ("EXIT", pid)
    assert reason[0] == "undef"


def test_links_both_directions(peer):
    async def local_victim():
        await pyotp.receive(lambda m: m == "die")
        raise Exit("local_reason")

    async def main():
        pyotp.process_flag("trap_exit", True)
        agent_pid = await spawn_agent(peer.name, trap=True)
        # remote agent links to a local process which then dies: agent sees EXIT
        victim = pyotp.spawn(local_victim)
        pyotp.send(agent_pid, ("cmd", "link", victim))
        assert await pyotp.receive(timeout=10) == ("done", "link")
        pyotp.send(victim, "die")
        got = await pyotp.receive(timeout=10)
        # local process links to the remote agent, which crashes
        pyotp.link(agent_pid)
        pyotp.send(agent_pid, ("cmd", "crash"))
        ex = await pyotp.receive(lambda m: m[0] == "EXIT", timeout=10)
        return got, victim, ex, agent_pid
    got, victim, ex, agent_pid = run(main)
    assert got == ("got", ("EXIT", victim, "local_reason"))
    assert ex[0] == "EXIT" and ex[1] == agent_pid
    assert isinstance(ex[2], RuntimeError) and str(ex[2]) == "agent crashed"


def test_unlink_across_nodes(peer):
    async def main():
        pyotp.process_flag("trap_exit", True)
        agent_pid = await spawn_agent(peer.name)
        pyotp.link(agent_pid)
        pyotp.unlink(agent_pid)
        pyotp.send(agent_pid, ("cmd", "echo", 1))      # ordering: after the unlink
        await pyotp.receive(timeout=10)
        ref = pyotp.monitor(agent_pid)
        pyotp.send(agent_pid, ("cmd", "exit", "boom"))
        down = await pyotp.receive(timeout=10)
        try:
            extra = await pyotp.receive(timeout=0.2)
        except TimeoutError:
            extra = None
        return down[0], down[4], extra
    assert run(main) == ("DOWN", "boom", None)


def test_monitor_remote_by_name_and_noproc(peer):
    async def main():
        r1 = pyotp.monitor(("nosuch", peer.name))
        d1 = await pyotp.receive(timeout=10)
        r2 = pyotp.monitor(("echo", peer.name))
        pyotp.demonitor(r2)
        pid = await spawn_agent(peer.name)
        r3 = pyotp.monitor(pid)
        pyotp.exit(pid, "kill")                       # remote exit signal
        d3 = await pyotp.receive(timeout=10)
        return d1 == ("DOWN", r1, "process", ("nosuch", peer.name), "noproc"), d3 == ("DOWN", r3, "process", pid, "killed")
    assert run(main) == (True, True)


def test_remote_process_monitors_local(peer):
    async def local():
        await pyotp.receive(lambda m: m == "die")
        raise Exit(("bye", 1))

    async def main():
        agent_pid = await spawn_agent(peer.name)
        victim = pyotp.spawn(local)
        pyotp.send(agent_pid, ("cmd", "monitor", victim))
        _, ref = await pyotp.receive(timeout=10)
        pyotp.send(victim, "die")
        got = await pyotp.receive(timeout=10)
        return got == ("got", ("DOWN", ref, "process", victim, ("bye", 1)))
    assert run(main) is True


def test_exit_signals_from_remote(peer):
    async def main():
        pyotp.process_flag("trap_exit", True)
        agent_pid = await spawn_agent(peer.name)
        me = pyotp.self()
        pyotp.send(agent_pid, ("cmd", "exit_signal", me, "stop_it"))
        a = await pyotp.receive(lambda m: m[0] == "EXIT", timeout=10)
        return a == ("EXIT", agent_pid, "stop_it")
    assert run(main) is True


def test_fast_and_slow_frames_keep_their_order(peer):
    # the agent's echo and "done" are SENDs (the compiled path), the exit signal between
    # them an EXIT2 (the Python path): written in one burst, they arrive in order
    async def main():
        pyotp.process_flag("trap_exit", True)
        agent_pid = await spawn_agent(peer.name)
        me = pyotp.self()
        pyotp.send(agent_pid, ("cmd", "echo", 1))
        pyotp.send(agent_pid, ("cmd", "exit_signal", me, "x"))
        pyotp.send(agent_pid, ("cmd", "echo", 2))
        got = [await pyotp.receive(timeout=10) for _ in range(4)]
        pyotp.send(agent_pid, ("cmd", "exit", "normal"))
        return got, agent_pid
    got, agent_pid = run(main)
    assert got == [("echo", 1), ("EXIT", agent_pid, "x"), ("done", "exit_signal"), ("echo", 2)]


def test_burst_of_small_medium_and_big_frames_arrives_whole_and_in_order(peer):
    # frames that straddle reads, one bigger than the shared receive buffer's big-frame
    # threshold in the middle of small ones
    payloads = [b"a", os.urandom(40_000), b"b", os.urandom(300_000), ("c", 3), os.urandom(70_000), b"d"]

    async def main():
        agent_pid = await spawn_agent(peer.name)
        for p in payloads:
            pyotp.send(agent_pid, ("cmd", "echo", p))
        got = [(await pyotp.receive(timeout=10))[1] for _ in payloads]
        pyotp.send(agent_pid, ("cmd", "exit", "normal"))
        return got
    assert run(main) == payloads


def test_call_with_an_unencodable_request_raises_and_loses_nothing(peer):
    import threading

    async def main():
        srv = ("echo", peer.name)
        out = []
        try:      # not connected yet: the request is checked before it is queued
            await GenServer.call(srv, threading.Lock())
        except Exception as e:
            out.append(str(e))
        assert await Node.connect(peer.name)
        GenServer.cast(srv, "queued before")    # still in the send buffer when the call fails
        try:
            await GenServer.call(srv, threading.Lock())
            err = "no error"
        except Exception as e:
            err = str(e)
        casts = await GenServer.call(srv, "casts")
        after = await GenServer.call(srv, "after")
        # the failed call left no monitor behind on the server
        echo = await rpc.call(peer.name, "pyotp", "whereis", ["echo"])
        info = await rpc.call(peer.name, "pyotp", "process_info", [echo])
        return out + [err], casts[-1], after, info["monitored_by"]
    errs, last_cast, after, info = run(main)
    assert len(errs) == 2 and all("pickle" in e and "lock" in e for e in errs), errs
    assert last_cast == "queued before"
    assert after == ("echo", "after", peer.name)
    assert info == []


@pytest.mark.pyotp
async def test_busy_wait_option_is_validated():
    errors = []
    for bad in (-1, "fast", True, 20_000):
        try:
            await Node.start(unique("bw"), cookie=COOKIE, busy_wait=bad)
            errors.append("accepted %r" % (bad,))
        except DistError as e:
            errors.append("busy_wait" in str(e))
    name = await Node.start(unique("bw"), cookie=COOKIE, busy_wait=0)   # nothing left started
    await Node.stop()
    assert (errors, name.startswith("bw")) == ([True] * 4, True)


def test_calls_and_bursts_without_busy_wait(peer):
    async def main():
        srv = ("echo", peer.name)
        replies = [await GenServer.call(srv, i) for i in range(200)]
        agent_pid = await spawn_agent(peer.name)
        for i in range(500):
            pyotp.send(agent_pid, ("cmd", "echo", i))
        echoed = [(await pyotp.receive(timeout=10))[1] for _ in range(500)]
        pyotp.send(agent_pid, ("cmd", "exit", "normal"))
        return replies, echoed
    replies, echoed = run(main, busy_wait=0)
    assert replies == [("echo", i, peer.name) for i in range(200)]
    assert echoed == list(range(500))


def test_rpc_results_and_errors(peer):
    async def main():
        n = peer.name
        out = [
            await rpc.call(n, "dist_roles", "plain_add", [2, 3]),
            await rpc.call(n, "dist_roles", "async_mul", [4, 5]),
            await rpc.call(n, "dist_roles", "no_such_fn", []),
            await rpc.call(n, "dist_roles", "raiser", ["k"]),
            await rpc.call(n, "dist_roles", "exiter", [("why", 1)]),
            await rpc.call(n, "dist_roles", "sleeper", [5], timeout=0.05),
            await rpc.call(unique("nobody"), "os", "getpid", []),
            await rpc.call(Node.self(), "dist_roles", "plain_add", ["a", "b"]),
        ]
        return out
    out = run(main)
    assert out[0] == 5 and out[1] == 20
    assert out[2][0] == "badrpc" and out[2][1][0] == "EXIT" and out[2][1][1][0] == "undef"
    exc = out[3][1][1][0]
    assert out[3][0] == "badrpc" and isinstance(exc, KeyError) and exc.args == ("k",)
    assert out[4] == ("badrpc", ("EXIT", ("why", 1)))
    assert out[5] == ("badrpc", "timeout")
    assert out[6] == ("badrpc", "nodedown")
    assert out[7] == "ab"


def test_rpc_cast_multicall_multi_call_abcast(peer):
    async def main():
        n = peer.name
        me = Node.self()
        rpc.cast(n, "pyotp", "send", [pyotp.self(), "cast arrived"])
        got = await pyotp.receive(timeout=10)
        res, bad = await rpc.multicall([n, me, unique("nobody")], "dist_roles", "getpid", [])
        abcast([n], "echo", "ab")
        replies, bad2 = await multi_call([n, unique("nobody")], "echo", "casts", timeout=5)
        return got, res, len(bad), replies, bad2
    got, res, nbad, replies, bad2 = run(main)
    assert got == "cast arrived"
    assert len(res) == 2 and res[1] == os.getpid() and res[0] != os.getpid()
    assert nbad == 1
    assert replies[0][0] == peer.name and replies[0][1][-1] == "ab"
    assert len(bad2) == 1


def test_multi_call_mixed_local_and_remote(peer):
    async def main():
        await Echo.start(None, name="echo_local")
        me = Node.self()
        replies, bad = await multi_call([peer.name, me], "echo_local", "x", timeout=5)
        return replies == [(me, ("echo", "x", me))], bad == [peer.name]
    assert run(main) == (True, True)


def test_large_buffers_round_trip_and_receive_buffers_are_not_reused_while_alive(peer):
    np = __import__("numpy")

    async def main():
        kept = []
        for i in range(5):
            arr = np.full(50_000 + i, i, dtype=np.int64)            # 400 KB: a big frame
            tag, (_, back), node = await GenServer.call(("echo", peer.name), ("arr", arr))
            kept.append(back)
        blob = bytes(range(256)) * 1000
        tag, back_blob, node = await GenServer.call(("echo", peer.name), ("blob", blob))
        return [(len(a), int(a.min()), int(a.max())) for a in kept], back_blob == ("blob", blob)
    shapes, blob_ok = run(main)
    assert shapes == [(50_000 + i, i, i) for i in range(5)]
    assert blob_ok


def test_send_to_remote_pid_from_another_os_thread(peer):
    import asyncio

    async def main():
        pid = await spawn_agent(peer.name)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, pyotp.send, pid, ("cmd", "echo", "from a thread"))
        return await pyotp.receive(timeout=10)
    assert run(main) == ("echo", "from a thread")


def test_rpc_allow_list_restricts_rpc_and_spawn():
    with NodeProc("r", role="dist_roles:role_peer", rpc_allow=["dist_roles"]) as r:
        r.expect("ready")

        async def main():
            ok = await rpc.call(r.name, "dist_roles", "plain_add", [1, 2])
            refused = await rpc.call(r.name, "os", "getpid", [])
            pyotp.process_flag("trap_exit", True)
            pid = await Node.spawn_link(r.name, ("os", "getpid"))
            ex = await pyotp.receive(timeout=10)
            return ok, refused, ex == ("EXIT", pid, ("not_allowed", "os"))
        ok, refused, spawn_refused = run(main)
        assert ok == 3
        assert refused == ("badrpc", ("EXIT", (("not_allowed", "os"), [])))
        assert spawn_refused


def test_channel_stats_count_small_and_big_frames(peer):
    # DistChannel.stats() (pyotp.observer.connections): frames sent through the compiled
    # path and the big-frame path (a 300 kB payload goes by iovec, and comes back through
    # the Connection's big buffer) are each counted once, with their bytes
    payloads = [b"a", os.urandom(300_000), ("c", 3), os.urandom(70_000)]

    async def main():
        agent_pid = await spawn_agent(peer.name)
        before = {c["node"]: c for c in pyotp.observer.connections()}[peer.name]
        for p in payloads:
            pyotp.send(agent_pid, ("cmd", "echo", p))
        got = [(await pyotp.receive(timeout=10))[1] for _ in payloads]
        after = {c["node"]: c for c in pyotp.observer.connections()}[peer.name]
        pyotp.send(agent_pid, ("cmd", "exit", "normal"))
        return got, before, after
    got, before, after = run(main)
    assert got == payloads
    assert after["pyotp"] is True
    assert after["msgs_out"] - before["msgs_out"] == len(payloads)
    assert after["msgs_in"] - before["msgs_in"] == len(payloads)
    assert after["bytes_out"] - before["bytes_out"] >= 370_000
    assert after["bytes_in"] - before["bytes_in"] >= 370_000
