"""global_names.set_lock / del_lock / trans (OTP's global locks): between pyotp nodes, and
on a ``beam_visible`` node shared with real Erlang nodes (a lock taken on one side blocks
the other). No sleeps: a released or dead holder's lock is waited for with set_lock's own
retries."""
from __future__ import annotations

import asyncio

import pytest

import pyotp
from pyotp import Atom
from pyotp.dist import Node, global_names, rpc, run_node
from dist_helpers import COOKIE, ErlNode, NodeProc, unique


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_locks_between_pyotp_nodes():
    with NodeProc("b", role="dist_roles:role_idle") as b:
        b.expect("ready")

        async def main():
            await Node.ping(b.name)
            await global_names.sync()
            me = pyotp.self()
            out = {}
            await rpc.call(b.name, "dist_roles", "spawn_lock_holder", [("res", "b"), me])
            tag, ok, bholder = await pyotp.receive(timeout=15)
            out["b_locked"] = ok
            out["other_requester"] = await global_names.set_lock(("res", "a"), retries=0)
            out["same_requester"] = await global_names.set_lock(("res", "b"), retries=0)
            out["del"] = await global_names.del_lock(("res", "b"))
            out["trans_aborted"] = await global_names.trans(("res", "a"), lambda: 1, retries=1)
            pyotp.send(bholder, "release")
            await pyotp.receive(lambda m: m[0] == "released", timeout=15)

            async def work():
                return 42
            out["trans"] = await global_names.trans(("res", "a"), work)
            # the lock is free again everywhere: b's holder can take it
            await rpc.call(b.name, "dist_roles", "spawn_lock_holder", [("res", "b2"), me])
            out["b_again"] = (await pyotp.receive(timeout=15))[1]
            # a holder that dies takes its lock with it, on every node
            await rpc.call(b.name, "dist_roles", "spawn_lock_holder", [("res2", "b"), me])
            _, ok2, victim = await pyotp.receive(timeout=15)
            pyotp.exit(victim, "kill")
            out["after_death"] = (ok2, await global_names.set_lock(("res2", "a")))   # retries until freed
            with pytest.raises(TypeError):
                await global_names.set_lock("not a pair")
            return out
        out = run_node(main, node=unique("a"), cookie=COOKIE)
    assert out == {"b_locked": True, "other_requester": False, "same_requester": True,
                   "del": True, "trans_aborted": "aborted", "trans": 42, "b_again": True,
                   "after_death": (True, True)}


@pytest.mark.erlang
def test_pyotp_and_beam_locks_block_each_other():
    me = unique("py")
    expr = r'''
register(t, self()),
P = '%s',
true = net_kernel:connect_node(P),
ok = global:sync(),
io:format("@@synced ok~n"),
receive pyotp_holds -> ok end,
io:format("@@beam_other ~p~n", [global:set_lock({res, beam}, [node(), P], 0)]),
io:format("@@beam_same ~p~n", [global:set_lock({res, py}, [node(), P], 0)]),
global:del_lock({res, py}, [node(), P]),
{py, P} ! beam_tried,
receive py_released -> ok end,
io:format("@@beam_after ~p~n", [global:set_lock({res, beam}, [node(), P], 0)]),
{py, P} ! beam_holds,
receive pyotp_tried -> ok end,
global:del_lock({res, beam}, [node(), P]),
{py, P} ! beam_released,
receive {dead_holder_lock, _} -> ok end,
W = fun W() -> case global:set_lock({res2, beam}, [node(), P], 0) of true -> true; false -> receive after 20 -> W() end end end,
io:format("@@beam_after_death ~p~n", [W()]),
receive stop -> ok end,
halt().
''' % me

    async def main():
        pyotp.register("py", pyotp.self())
        e = ErlNode("erl", expr).start()
        try:
            assert await in_thread(e.expect, "synced") == "ok"
            await global_names.sync()
            out = {"py_set": await global_names.set_lock(("res", Atom("py")))}
            pyotp.send((Atom("t"), e.name), Atom("pyotp_holds"))
            out["beam_other"] = await in_thread(e.expect, "beam_other")
            out["beam_same"] = await in_thread(e.expect, "beam_same")
            await pyotp.receive(lambda m: m == "beam_tried", timeout=15)
            await global_names.del_lock(("res", Atom("py")))
            pyotp.send((Atom("t"), e.name), Atom("py_released"))
            out["beam_after"] = await in_thread(e.expect, "beam_after")
            await pyotp.receive(lambda m: m == "beam_holds", timeout=15)
            out["py_blocked"] = await global_names.set_lock(("res", Atom("py")), retries=0)
            out["py_trans_aborted"] = await global_names.trans(("res", Atom("py")), lambda: 1, retries=1)
            pyotp.send((Atom("t"), e.name), Atom("pyotp_tried"))
            await pyotp.receive(lambda m: m == "beam_released", timeout=15)
            out["py_trans"] = await global_names.trans(("res", Atom("py")), lambda: Atom("done"))
            # a pyotp holder that dies: BEAM's global sees its lock go
            pyotp.spawn(_holder_then_die, ("res2", Atom("py")), pyotp.self())
            _, ok, victim = await pyotp.receive(timeout=15)
            ref = pyotp.monitor(victim)
            pyotp.exit(victim, "kill")
            await pyotp.receive(lambda m: m[0] == "DOWN", timeout=15)
            pyotp.send((Atom("t"), e.name), (Atom("dead_holder_lock"), ok))
            out["beam_after_death"] = await in_thread(e.expect, "beam_after_death")
            pyotp.send((Atom("t"), e.name), Atom("stop"))
            return out
        finally:
            e.kill()
    out = run_node(main, node=me, cookie=COOKIE, beam_visible=True)
    assert out == {"py_set": True, "beam_other": "false", "beam_same": "true", "beam_after": "true",
                   "py_blocked": False, "py_trans_aborted": "aborted", "py_trans": "done",
                   "beam_after_death": "true"}


async def _holder_then_die(lock, report_to):
    ok = await global_names.set_lock(lock, retries=0)
    pyotp.send(report_to, ("locked", ok, pyotp.self()))
    await pyotp.receive()


@pytest.mark.pyotp
async def test_locks_on_a_node_that_is_not_distributed():
    # as OTP's global on a non-distributed node: the locks are this node's
    me = pyotp.self()
    pyotp.spawn(_holder_then_die, ("res", "h"), me)
    _, ok, victim = await pyotp.receive(timeout=5)
    out = [ok, await global_names.set_lock(("res", "me"), retries=0)]
    ref = pyotp.monitor(victim)
    pyotp.exit(victim, "kill")
    await pyotp.receive(lambda m: m[0] == "DOWN", timeout=5)
    out.append(await global_names.set_lock(("res", "me")))        # freed by the death
    out.append(await global_names.trans(("res", "other"), lambda: 1, retries=0))
    out.append(await global_names.del_lock(("res", "me")))
    out.append(await global_names.trans(("res", "other"), lambda: 1, retries=0))
    with pytest.raises(RuntimeError):
        await global_names.set_lock(("res", "me"), nodes=["elsewhere@host"])
    assert out == [True, False, True, "aborted", True, 1]
