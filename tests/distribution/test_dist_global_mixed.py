"""A mixed cluster: two pyotp nodes started with ``beam_visible=True`` and one Erlang
node, all in one global: a name registered on any of them resolves on all three, and the
same names registered at once from the three sides end with one owner each, the same on
every node (as global settles it)."""
from __future__ import annotations

import asyncio

import pytest

import pyotp
from pyotp import Atom
from pyotp.dist import Node, global_names, rpc, run_node
from dist_helpers import COOKIE, ErlNode, NodeProc, unique

pytestmark = pytest.mark.erlang

RACE = [Atom("race%d" % i) for i in range(12)]
B_RACE = RACE[:8]           # b and the Erlang node race for these (a only watches)
A_RACE = RACE[8:]           # a and the Erlang node race for these


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def holder():
    await pyotp.receive()


def test_two_visible_pyotp_nodes_and_a_beam_node_share_global():
    a, b = unique("pya"), unique("pyb")
    expr = r'''
register(t, self()),
[A, B] = ['%s', '%s'],
true = net_kernel:connect_node(A),
true = net_kernel:connect_node(B),
ok = global:sync(),
Owner = spawn(fun() -> receive stop -> ok end end),
yes = global:register_name(erl_name, Owner),
io:format("@@owner ~p~n", [Owner]),
Names = %s,
BNames = %s,
receive {go, APid} -> {registrar, B} ! {race, APid, BNames} end,
%% one process per name: global refuses a second name for a pid (global_multi_name_action)
Raced = lists:reverse([global:register_name(N, spawn(fun() -> receive stop -> ok end end)) || N <- lists:reverse(Names)]),
ok = global:sync(),
receive {report, To} ->
  To ! {erl_view, [{N, global:whereis_name(N)} || N <- [a_name, b_name, erl_name | Names]], Raced, Owner}
end,
receive stop -> ok end,
halt().
''' % (a, b, "[" + ", ".join(str(n) for n in RACE) + "]", "[" + ", ".join(str(n) for n in B_RACE) + "]")

    with NodeProc("b", role="dist_roles:role_visible_registrar", args=["b_name"], name=b,
                  beam_visible=True) as pb:
        assert pb.expect("ready") == "yes"

        async def main():
            mine = pyotp.spawn(holder)
            assert global_names.register_name(Atom("a_name"), mine) == "yes"
            await Node.ping(b)
            e = ErlNode("erl", expr).start()
            try:
                erl_owner = await in_thread(e.expect, "owner")
                await global_names.sync()
                names = [Atom("a_name"), Atom("b_name"), Atom("erl_name")]
                views = {"a": [(n, global_names.whereis_name(n)) for n in names],
                         "b": await rpc.call(b, "dist_roles", "global_owners", [names])}
                # the race: the Erlang node, b and a register the same names at once
                # (the Erlang node starts b's registrations, then makes its own)
                pyotp.send((Atom("t"), e.name), (Atom("go"), pyotp.self()))
                a_raced = [global_names.register_name(n, mine) for n in A_RACE]
                b_raced = (await pyotp.receive(lambda m: m[0] == "raced", timeout=30))[1]
                await global_names.sync()
                pyotp.send((Atom("t"), e.name), (Atom("report"), pyotp.self()))
                _, erl_view, erl_raced, owner = await pyotp.receive(lambda m: m[0] == "erl_view", timeout=60)
                everything = names + RACE
                await global_names.sync()
                after = {"a": [(n, global_names.whereis_name(n)) for n in everything],
                         "b": await rpc.call(b, "dist_roles", "global_owners", [everything]),
                         "erl": [(n, None if p == "undefined" else p) for n, p in erl_view]}
                pyotp.send((Atom("t"), e.name), Atom("stop"))
                # pids as text, compared here (a local pid's node reads nonode@nohost once
                # the node has stopped)
                same = {k: [p == mine if p is not None and p.node == a else p is not None
                            for _, p in v] for k, v in list(views.items()) + [("after_" + k, v) for k, v in after.items()]}
                same["erl_owner"] = [views["a"][2][1] == owner]
                as_text = lambda v: {k: [(str(n), None if p is None else (str(p.node), p.id, p.serial))
                                         for n, p in x] for k, x in v.items()}
                return (as_text(views), as_text(after), (a_raced, b_raced, erl_raced),
                        [str(p.node) for _, p in views["a"]], e.name, same)
            finally:
                e.kill()
        views, after, raced, nodes, erl, same = run_node(main, node=a, cookie=COOKIE, beam_visible=True)
    # before the race: every name resolves on every node, to its registrant
    assert views["a"] == views["b"]
    assert nodes == [a, b, erl]
    assert all(all(v) for v in same.values()), (same, views, after, raced)
    # after it: one owner per name, the same on all three nodes
    assert after["a"] == after["b"] == after["erl"], after
    for name, pid in after["a"][3:]:
        assert pid is not None, name
    # each registrant was told "yes" for the names it ended up owning (a pyotp node answers
    # at once, so a pyotp registrant may also have been told "yes" for a name the Erlang
    # node's locked registration then took: see docs/interop.md)
    a_raced, b_raced, erl_raced = raced
    owners = [p[0] for _, p in after["a"][3:]]
    for i, node in enumerate(owners):
        if node == erl:
            assert erl_raced[i] == "yes", (i, raced, owners)
        elif node == b:
            assert i < 8 and b_raced[i] == "yes", (i, raced, owners)
        else:
            assert node == a and i >= 8 and a_raced[i - 8] == "yes", (i, raced, owners)

