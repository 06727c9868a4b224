"""Node failure between pyotp nodes: SIGKILL, traffic stop (SIGSTOP + short net_ticktime),
orderly stop, wrong cookie, simultaneous connects. Every test runs its own peer process."""
from __future__ import annotations

import asyncio
import signal

import pyotp
from pyotp import Exit, GenServer
from pyotp.dist import Node, run_node
from dist_helpers import COOKIE, NodeProc, unique
from dist_roles import agent


def run(main, *args, **kw):
    return run_node(main, *args, node=unique("a"), cookie=COOKIE, **kw)


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_sigkill_gives_nodedown_noconnection_everywhere():
    with NodeProc("b", role="dist_roles:role_watcher") as b:
        b.expect("ready")

        async def pending_call(report):
            pyotp.send(report, "calling")     # the call below starts in this same step
            try:
                await GenServer.call(("echo", b.name), ("later", "never", 60), timeout=None)
            except Exit as e:
                pyotp.send(report, ("call_failed", e.reason[0]))

        async def main():
            Node.monitor_nodes(True)
            pyotp.process_flag("trap_exit", True)
            assert await Node.ping(b.name) == "pong"
            up = await pyotp.receive(timeout=10)
            apid = await Node.spawn_link(b.name, agent, pyotp.self())
            await pyotp.receive(lambda m: m[0] == "agent_up", timeout=10)
            ref = pyotp.monitor(apid)
            pyotp.spawn(pending_call, pyotp.self())
            await pyotp.receive(lambda m: m == "calling", timeout=10)
            b.proc.kill()
            got = set()
            for _ in range(4):
                m = await pyotp.receive(timeout=20)
                if m[0] == "nodedown":
                    got.add(("nodedown", m[1] == b.name))
                elif m[0] == "EXIT":
                    got.add(("EXIT", m[1] == apid, m[2]))
                elif m[0] == "DOWN":
                    got.add(("DOWN", m[1] == ref, m[4]))
                else:
                    got.add(m)
            return up, got, Node.list("connected")
        up, got, nodes = run(main)
        assert up == ("nodeup", b.name)
        assert got == {("nodedown", True), ("EXIT", True, "noconnection"),
                       ("DOWN", True, "noconnection"), ("call_failed", "noconnection")}
        assert nodes == []


def test_traffic_stop_detected_by_ticks():
    with NodeProc("b", role="dist_roles:role_watcher", net_ticktime=2) as b:
        b.expect("ready")

        async def main():
            Node.monitor_nodes(True)
            assert await Node.ping(b.name) == "pong"
            assert await pyotp.receive(timeout=10) == ("nodeup", b.name)
            b.signal(signal.SIGSTOP)
            try:
                down = await pyotp.receive(timeout=20)
            finally:
                b.signal(signal.SIGCONT)
            return down
        assert run(main, net_ticktime=2) == ("nodedown", b.name)


def test_both_sides_see_nodeup_and_nodedown_on_orderly_stop():
    with NodeProc("b", role="dist_roles:role_watcher") as b:
        b.expect("ready")

        async def main():
            assert await Node.ping(b.name) == "pong"
            return Node.self()
        me = run(main)
        assert b.expect("nodeup") == me
        assert b.expect("nodedown") == me


def test_wrong_cookie_is_refused_and_logged():
    with NodeProc("b", role="dist_roles:role_watcher", cookie="another-cookie") as b:
        b.expect("ready")

        async def main():
            return await Node.ping(b.name), Node.list("connected")
        assert run(main) == ("pang", [])
        assert "wrong cookie" in b.wait_log("wrong cookie")


def test_per_node_cookie():
    with NodeProc("b", role="dist_roles:role_watcher", cookie="another-cookie") as b:
        b.expect("ready")

        async def main():
            Node.set_cookie("another-cookie", node=b.name)
            return await Node.ping(b.name)
        assert run(main) == "pong"


def test_simultaneous_connects_end_with_one_working_connection():
    nb, nc = unique("b"), unique("c")
    with NodeProc("b", role="dist_roles:role_sink", args=[nc], name=nb) as b, \
            NodeProc("c", role="dist_roles:role_sink", args=[nb], name=nc) as c:
        b.expect("ready")
        c.expect("ready")
        for rnd in range(1, 9):
            b.send_line("go")
            c.send_line("go")
            rb, rc = b.expect("round"), c.expect("round")
            assert rb == repr((rnd, True, True, [nc])), b.log
            assert rc == repr((rnd, True, True, [nb])), c.log
            b.send_line("next")
            c.send_line("next")
            b.expect("disconnected")
            c.expect("disconnected")


def test_call_from_an_asyncio_task_fails_with_noconnection_when_the_node_dies():
    """A GenServer.call made outside any pyotp process (a plain asyncio task) waiting on a
    node that dies gets noconnection at once, as a process's call does."""
    import asyncio as _asyncio
    with NodeProc("ext", role="dist_roles:role_peer") as peer:
        peer.expect("ready")

        async def main():
            assert await Node.connect(peer.name)
            async def outside():      # runs as an asyncio task: no pyotp process
                return await GenServer.call(("echo", peer.name), ("later", "x", 3600), None)
            task = _asyncio.ensure_future(outside())
            assert (await GenServer.call(("echo", peer.name), "sync")) is not None
            peer.kill()
            try:
                await _asyncio.wait_for(task, 30)
            except Exit as e:
                return e.reason
            return "no exit"
        reason = run_node(main, node=unique("extcall"), cookie=COOKIE)
    assert reason[0] == "noconnection", reason
