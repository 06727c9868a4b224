"""Global names and process groups across pyotp nodes in separate OS processes."""
from __future__ import annotations

import pyotp
from pyotp import Exit, GenServer
from pyotp.dist import Node, global_names, pg, rpc, run_node
from dist_helpers import COOKIE, NodeProc, unique
from dist_roles import Echo, holder


def run(main, *args, **kw):
    return run_node(main, *args, node=unique("a"), cookie=COOKIE, **kw)


def test_global_server_call_send_and_death():
    with NodeProc("b", role="dist_roles:role_global_server", args=["gsrv"]) as b:
        b.expect("ready")

        async def main():
            assert await Node.ping(b.name) == "pong"
            await global_names.sync()
            pid = global_names.whereis_name("gsrv")
            r = await GenServer.call(("global", "gsrv"), "hello")
            GenServer.cast(("global", "gsrv"), "c")
            casts = await GenServer.call(("global", "gsrv"), "casts")
            taken = global_names.register_name("gsrv", pyotp.self())
            ref = pyotp.monitor(pid)
            pyotp.exit(pid, "kill")
            down = await pyotp.receive(timeout=10)
            await global_names.sync()
            gone = global_names.whereis_name("gsrv")
            # the name is free again: register it here, b sees it
            mine = global_names.register_name("gsrv", pyotp.self())
            seen = await rpc.call(b.name, "dist_roles", "global_whereis", ["gsrv"])
            return (pid.node, r, casts, taken, down[4], gone, mine, seen == pyotp.self())
        assert run(main) == (b.name, ("echo", "hello", b.name), ["c"], "no", "killed", None, "yes", True)


def test_global_names_vanish_with_their_node():
    with NodeProc("b", role="dist_roles:role_global_holder", args=["x"]) as b:
        assert b.expect("ready") == "yes"

        async def main():
            Node.monitor_nodes(True)
            await Node.ping(b.name)
            await pyotp.receive(timeout=10)          # nodeup
            await global_names.sync()
            before = global_names.whereis_name("x")
            b.proc.kill()
            await pyotp.receive(timeout=20)          # nodedown
            return before is not None and before.node == b.name, global_names.whereis_name("x")
        assert run(main) == (True, None)


def test_global_name_conflict_when_partitions_merge():
    nb, nc = unique("b"), unique("c")                 # nb < nc: b's registration wins
    assert nb < nc
    with NodeProc("b", role="dist_roles:role_global_holder", args=["dup"], name=nb) as b, \
            NodeProc("c", role="dist_roles:role_global_holder", args=["dup"], name=nc) as c:
        assert b.expect("ready") == "yes"
        assert c.expect("ready") == "yes"

        async def main():
            await Node.ping(nc)                     # a knows only c: c's holder has the name
            await global_names.sync()
            first = global_names.whereis_name("dup")
            ref = pyotp.monitor(("holder", nc))
            await Node.ping(nb)                     # b joins: a tells b about c, they connect
            down = await pyotp.receive(timeout=20)
            await global_names.sync()
            here = global_names.whereis_name("dup")
            on_b = await rpc.call(nb, "dist_roles", "global_whereis", ["dup"])
            on_c = await rpc.call(nc, "dist_roles", "global_whereis", ["dup"])
            return first.node, down[1] == ref, down[4], here.node, on_b == here, on_c == here, sorted(Node.list())
        got = run(main)
        assert got == (nc, True, "killed", nb, True, True, sorted([nb, nc]))
        assert "name conflict" in c.wait_log("name conflict")


def test_pg_membership_across_nodes_and_after_node_death():
    with NodeProc("b", role="dist_roles:role_pg", args=["workers", 2]) as b:
        b.expect("ready")

        async def main():
            ref, groups = pg.monitor_scope()
            assert groups == {}
            await Node.ping(b.name)
            ev1 = await pyotp.receive(timeout=10)
            remote = pg.get_members("workers")
            # a local member: b sees it (the join is ordered before the rpc on the wire)
            mine = pyotp.spawn(holder)
            pg.join("workers", mine)
            ev2 = await pyotp.receive(timeout=10)
            on_b = await rpc.call(b.name, "dist_roles", "pg_members", ["workers"])
            # a member dies: it leaves, b sees that too
            pyotp.exit(mine, "kill")
            ev3 = await pyotp.receive(timeout=10)
            on_b2 = await rpc.call(b.name, "dist_roles", "pg_members", ["workers"])
            local = pg.get_local_members("workers")
            b.proc.kill()
            ev4 = await pyotp.receive(timeout=20)
            return (ev1[1:3], len(ev1[3]), len(remote), {p.node for p in remote} == {b.name},
                    ev2[1:], len(on_b), mine in on_b, ev3[1:], mine in on_b2, len(on_b2), local,
                    ev4[1:3], len(ev4[3]), pg.get_members("workers"), pg.which_groups(), mine)
        got = run(main)
        mine = got[-1]
        assert got[:-1] == (("join", "workers"), 2, 2, True,
                            ("join", "workers", [mine]), 3, True, ("leave", "workers", [mine]), False, 2, [],
                            ("leave", "workers"), 2, [], [])


def test_pg_local_only_api_errors():
    async def main():
        await pg.start("solo")
        me = pyotp.self()
        pg.join("g", [me, me], scope="solo")
        two = pg.get_members("g", scope="solo")
        r1 = pg.leave("g", me, scope="solo")
        r2 = pg.leave("nope", me, scope="solo")
        try:
            pg.join("g", pyotp.Pid("other@host", 1, 0, 1), scope="solo")
            bad = None
        except pyotp.BadArg as e:
            bad = "not a local pid" in str(e)
        return len(two), r1, r2, pg.get_members("g", scope="solo") == [me], bad
    assert run(main) == (2, "ok", "not_joined", True, True)


def test_global_conflict_with_a_holder_on_a_dead_node_is_healed_by_its_nodedown():
    """A registration from c that loses against b's (b's node is down but its nodedown has
    not arrived yet) is kept in the shadows and takes over when b's nodedown comes."""
    from pyotp.dist.global_names import _merge, _nodedown

    async def main():
        pb, pc = pyotp.Pid("b9@h", 1, 0, 1), pyotp.Pid("c9@h", 2, 0, 1)
        _merge("svc", pb)
        _merge("svc", pc)
        first = global_names.whereis_name("svc")
        _nodedown("b9@h")
        second = global_names.whereis_name("svc")
        _nodedown("c9@h")
        return first == pb, second == pc, global_names.whereis_name("svc")
    assert run(main) == (True, True, None)
