"""ServiceDiscovery across pyotp nodes running as separate OS processes."""
from __future__ import annotations

import pyotp
from pyotp.dist import Node, rpc, run_node
from pyotp.service_discovery import ServiceDiscovery
from dist_helpers import COOKIE, NodeProc, unique


def run(main, *args, **kw):
    return run_node(main, *args, node=unique("a"), cookie=COOKIE, **kw)


async def instance(service, endpoint, metadata, report_to):
    await ServiceDiscovery.register(service, endpoint=endpoint, metadata=metadata)
    pyotp.send(report_to, ("registered", pyotp.self()))
    await pyotp.receive(lambda m: m == "never")


def up_or_down(m):
    return type(m) is tuple and m[0] in ("service_up", "service_down")


def test_register_on_b_discover_on_a_and_owner_death_removes_it():
    with NodeProc("b", role="sd_roles:role_provider", args=["db", 2]) as b:
        b.expect("ready")

        async def main():
            await ServiceDiscovery.start_link()
            assert await ServiceDiscovery.watch("db") == []
            assert await Node.ping(b.name) == "pong"
            ups = [await pyotp.receive(up_or_down, timeout=10) for _ in range(2)]
            found = await ServiceDiscovery.discover("db")
            # a local instance on a: b sees it as soon as a's later rpc reply reaches it
            mine = pyotp.spawn(instance, "db", "local-ep", {"here": True}, pyotp.self())
            await pyotp.receive(lambda m: m == ("registered", mine), timeout=5)
            local_up = await pyotp.receive(up_or_down, timeout=5)
            on_b = await rpc.call(b.name, "sd_roles", "discover", ["db"])
            # kill one of b's instances from here: it vanishes on a, watchers are told
            victim = found[0][0]
            pyotp.exit(victim, "kill")
            down = await pyotp.receive(up_or_down, timeout=10)
            after = await ServiceDiscovery.discover("db")
            on_b2 = await rpc.call(b.name, "sd_roles", "discover", ["db"])
            return (sorted((m[0], m[3]) for m in ups),
                    sorted((p.node == b.name, ep, meta) for p, ep, meta in found),
                    local_up == ("service_up", "db", mine, "local-ep"),
                    sorted(map(repr, on_b)) == sorted(map(repr, found + [(mine, "local-ep", {"here": True})])),
                    down == ("service_down", "db", victim),
                    [e for e in after if e[0] == victim], len(after),
                    victim in [e[0] for e in on_b2], len(on_b2))
        got = run(main)
        assert got == ([("service_up", (b.name, 0)), ("service_up", (b.name, 1))],
                       [(True, (b.name, 0), {"i": 0}), (True, (b.name, 1), {"i": 1})],
                       True, True, True, [], 2, False, 2)


def test_sigkill_of_a_node_removes_its_entries_and_watchers_get_service_down():
    with NodeProc("b", role="sd_roles:role_provider", args=["api", 2]) as b, \
            NodeProc("c", role="sd_roles:role_provider", args=["api", 1]) as c:
        b.expect("ready")
        c.expect("ready")

        async def main():
            await ServiceDiscovery.start_link()
            await ServiceDiscovery.watch("api")
            Node.monitor_nodes(True)
            await Node.ping(b.name)
            await Node.ping(c.name)
            ups = [await pyotp.receive(up_or_down, timeout=10) for _ in range(3)]
            before = await ServiceDiscovery.discover("api")
            b.proc.kill()                                  # SIGKILL: no goodbye
            downs = [await pyotp.receive(up_or_down, timeout=30) for _ in range(2)]
            after = await ServiceDiscovery.discover("api")
            on_c = await rpc.call(c.name, "sd_roles", "discover", ["api"])
            return ([m[0] for m in ups], sorted(str(e[0].node) for e in before),
                    sorted((m[0], str(m[2].node)) for m in downs),
                    [(str(p.node), ep, meta) for p, ep, meta in after], on_c == after)
        got = run(main)
        assert got == (["service_up"] * 3, sorted([b.name, b.name, c.name]),
                       [("service_down", b.name)] * 2,
                       [(c.name, (c.name, 0), {"i": 0})], True)


def test_started_before_distribution_joins_the_cluster_later():
    """ServiceDiscovery started on a plain node, then Node.start: a peer's entries reach
    the server as plain messages, and it joins the cluster's replication then."""
    with NodeProc("b", role="sd_roles:role_provider", args=["q", 1]) as b:
        b.expect("ready")

        async def main():
            await ServiceDiscovery.start_link()
            await ServiceDiscovery.register("q", endpoint="from-a")
            assert await ServiceDiscovery.watch("q") == [(pyotp.self(), "from-a", {})]
            await Node.start(aname, cookie=COOKIE)
            try:
                await Node.ping(b.name)
                up = await pyotp.receive(up_or_down, timeout=10)
                here = await ServiceDiscovery.discover("q")
                on_b = await rpc.call(b.name, "sd_roles", "discover", ["q"])
                return (up[0], str(up[2].node), up[3], [(str(p.node), ep) for p, ep, _ in here],
                        sorted((str(p.node), ep) for p, ep, _ in on_b))
            finally:
                Node.stop()
        aname = unique("a")
        got = pyotp.run(main)
        both = sorted([(aname, "from-a"), (b.name, (b.name, 0))])
        assert got == ("service_up", b.name, (b.name, 0), [(aname, "from-a"), (b.name, (b.name, 0))], both)


def test_disconnect_and_reconnect_entries_go_and_come_back():
    with NodeProc("b", role="sd_roles:role_provider", args=["r", 1]) as b:
        b.expect("ready")

        async def main():
            await ServiceDiscovery.start_link()
            await ServiceDiscovery.watch("r")
            Node.monitor_nodes(True)
            await Node.ping(b.name)
            up1 = await pyotp.receive(up_or_down, timeout=10)
            Node.disconnect(b.name)
            down = await pyotp.receive(up_or_down, timeout=10)
            gone = await ServiceDiscovery.discover("r")
            await Node.ping(b.name)
            up2 = await pyotp.receive(up_or_down, timeout=10)
            back = await ServiceDiscovery.discover("r")
            return (up1[0], down == ("service_down", "r", up1[2]), gone, up2 == up1,
                    [(p == up1[2], ep, meta) for p, ep, meta in back])
        assert run(main) == ("service_up", True, [], True, [(True, (b.name, 0), {"i": 0})])
