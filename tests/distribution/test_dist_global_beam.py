"""A pyotp node started with ``beam_visible=True`` among real Erlang nodes (issue 14):
listed in their ``nodes()``, reported by plain ``net_kernel:monitor_nodes(true)``, part
of Erlang's ``global`` (names both ways, owners dying, ``global:sync()``, clashes resolved
as ``random_exit_name`` does) and of the mesh global keeps. Erlang nodes print
``@@tag value`` lines the test reads in order; they wait for messages from the test
(sent to their registered process ``t``) rather than sleeping.
"""
from __future__ import annotations

import asyncio
import logging

import pytest

import pyotp
from pyotp import Atom
from pyotp.dist import Node, global_names, run_node
from dist_helpers import COOKIE, ErlNode, ExNode, unique

pytestmark = pytest.mark.erlang


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def until(cond, what, timeout=15.0):
    """Wait for a condition the node reaches by itself (a monitor firing on another node,
    a connection global sets up); fails naming ``what``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("never happened: " + what)
        await pyotp.sleep(0.02)


async def holder():
    await pyotp.receive()


def tell(node, msg):
    pyotp.send((Atom("t"), node), msg)


def test_visible_node_in_nodes_monitor_nodes_and_global_names_both_ways():
    me = unique("py")
    expr = r'''
register(t, self()),
P = '%s',
ok = net_kernel:monitor_nodes(true),
pong = net_adm:ping(P),
receive {nodeup, P} -> io:format("@@nodeup ~p~n", [P]) after 15000 -> io:format("@@nodeup none~n") end,
io:format("@@visible ~p~n", [lists:member(P, nodes())]),
io:format("@@sync ~p~n", [global:sync()]),
Owner = spawn(fun() -> receive stop -> ok end end),
yes = global:register_name(erl_svc, Owner),
io:format("@@owner ~p~n", [Owner]),
receive {check, PyPid} ->
  io:format("@@py_svc ~p~n", [global:whereis_name(<<"py_svc">>) =:= PyPid]),
  io:format("@@names ~p~n", [lists:sort(global:registered_names())])
end,
Owner ! stop,
receive py_owner_killed -> ok end,
W = fun W(0) -> timeout; W(N) -> case global:whereis_name(<<"py_svc">>) of undefined -> gone; _ -> timer:sleep(20), W(N - 1) end end,
io:format("@@py_gone ~p~n", [W(500)]),
receive {nodedown, P} -> io:format("@@nodedown ~p~n", [P]) after 15000 -> io:format("@@nodedown none~n") end,
io:format("@@visible_after ~p~n", [lists:member(P, nodes())]),
halt().
''' % me

    async def main():
        e = ErlNode("erl", expr).start()
        try:
            assert await in_thread(e.expect, "nodeup") == "'%s'" % me
            assert await in_thread(e.expect, "visible") == "true"
            assert await in_thread(e.expect, "sync") == "ok"
            await in_thread(e.expect, "owner")
            assert e.name in Node.list()            # the BEAM node is visible here too
            await global_names.sync()
            erl_owner = global_names.whereis_name("erl_svc")
            assert erl_owner is not None and erl_owner.node == e.name
            h = pyotp.spawn(holder)
            assert global_names.register_name("py_svc", h) == "yes"
            await global_names.sync()               # told to the BEAM node under global's lock
            tell(e.name, (Atom("check"), h))
            assert await in_thread(e.expect, "py_svc") == "true"
            assert await in_thread(e.expect, "names") == '[erl_svc,<<"py_svc">>]'
            # the Erlang owner stopped: its name leaves this node's table too
            await until(lambda: global_names.whereis_name("erl_svc") is None, "erl_svc gone here")
            pyotp.exit(h, "kill")
            tell(e.name, Atom("py_owner_killed"))
            assert await in_thread(e.expect, "py_gone") == "gone"
            assert global_names.whereis_name("py_svc") is None
            Node.disconnect(e.name)
            assert await in_thread(e.expect, "nodedown") == "'%s'" % me
            assert await in_thread(e.expect, "visible_after") == "false"
        finally:
            e.kill()
    run_node(main, node=me, cookie=COOKIE, beam_visible=True)


def test_hidden_by_default_towards_beam():
    me = unique("py")
    expr = r'''
register(t, self()),
P = '%s',
pong = net_adm:ping(P),
io:format("@@lists ~p~n", [{lists:member(P, nodes()), lists:member(P, nodes(hidden))}]),
halt().
''' % me

    async def main():
        e = ErlNode("erl", expr).start()
        try:
            assert await in_thread(e.expect, "lists") == "{false,true}"
        finally:
            e.kill()
    run_node(main, node=me, cookie=COOKIE)


CLASH = r'''
register(t, self()),
Pid = spawn(fun() -> receive _ -> ok end end),
yes = global:register_name(clash, Pid),
io:format("@@ready ~p~n", [Pid]),
receive check -> ok end,
ok = global:sync(),
W = global:whereis_name(clash),
io:format("@@view ~p~n", [{node(W), is_process_alive(Pid)}]),
receive stop -> ok end,
halt().
'''


@pytest.mark.parametrize("prefix", ["apy", "zpy"])
def test_name_clash_resolved_as_random_exit_name(prefix):
    # the same name registered on both sides before they meet: global keeps the
    # registration whose pid is on the node with the smaller name and kills the other.
    # "apy..." < "erl...": pyotp resolves the clash (its resolver); "zpy...": BEAM does
    # (an exit signal kills the pyotp process)
    me = unique(prefix)

    async def main():
        e = ErlNode("erl", CLASH).start()
        try:
            await in_thread(e.expect, "ready")
            h = pyotp.spawn(holder)
            mon = pyotp.monitor(h)
            assert global_names.register_name(Atom("clash"), h) == "yes"
            assert await Node.connect(e.name)
            await global_names.sync()
            tell(e.name, Atom("check"))
            view = await in_thread(e.expect, "view")
            if me < e.name:
                assert view == "{'%s',false}" % me
                assert global_names.whereis_name("clash") == h
                assert pyotp.is_alive(h)
            else:
                assert view == "{'%s',true}" % e.name
                down = await pyotp.receive(lambda m: type(m) is tuple and m[1] == mon, timeout=15)
                assert down[4] == "killed"
                await until(lambda: global_names.whereis_name("clash") is not None
                            and global_names.whereis_name("clash").node == e.name,
                            "the BEAM registration wins here")
            tell(e.name, Atom("stop"))
        finally:
            e.kill()
    run_node(main, node=me, cookie=COOKIE, beam_visible=True)


def test_mesh_join_through_one_beam_node():
    # B is connected to A; pyotp connects to A only and ends up connected to B as well
    # (global connects to the nodes its peers know), with B's names
    me = unique("py")
    a_expr = r'''
register(t, self()),
io:format("@@up ok~n"),
receive check -> ok end,
io:format("@@a_nodes ~p~n", [lists:sort(nodes())]),
receive stop -> ok end,
halt().
'''
    a = ErlNode("erla", a_expr)
    b_expr = r'''
register(t, self()),
true = net_kernel:connect_node('%s'),
ok = global:sync(),
Pid = spawn(fun() -> receive _ -> ok end end),
yes = global:register_name(b_name, Pid),
io:format("@@ready ~p~n", [Pid]),
receive check -> ok end,
ok = global:sync(),
io:format("@@b_nodes ~p~n", [lists:member('%s', nodes())]),
receive stop -> ok end,
halt().
''' % (a.name, me)
    b = ErlNode("erlb", b_expr)

    async def main():
        a.start()
        await in_thread(a.expect, "up")          # registered with EPMD: B may dial it
        b.start()
        try:
            await in_thread(b.expect, "ready")
            assert await Node.connect(a.name)
            await until(lambda: b.name in Node.list(), "connected to B through global")
            await global_names.sync()
            bp = global_names.whereis_name("b_name")
            assert bp is not None and bp.node == b.name
            tell(b.name, Atom("check"))
            assert await in_thread(b.expect, "b_nodes") == "true"
            tell(a.name, Atom("check"))
            a_nodes = await in_thread(a.expect, "a_nodes")
            assert me in a_nodes and b.name in a_nodes
            for n in (a.name, b.name):
                tell(n, Atom("stop"))
        finally:
            a.kill()
            b.kill()
    run_node(main, node=me, cookie=COOKIE, beam_visible=True)


def test_malformed_global_messages_are_logged_and_ignored(caplog):
    me = unique("py")
    expr = r'''
register(t, self()),
P = '%s',
S = {global_name_server, P},
true = net_kernel:connect_node(P),
ok = global:sync(),
gen_server:cast(S, {init_connect, bad_vsn, node(), x}),
gen_server:cast(S, {init_connect, {8, 1}, node(), {locker, x, #{}, not_a_pid}}),
gen_server:cast(S, {exchange, node(), not_a_list, [], 12345}),
gen_server:cast(S, {resolved, node(), bad, bad, unused, [], 1}),
gen_server:cast(S, {new_nodes, node(), [{insert, garbage}, {delete}], [], [junk, {a, b}], []}),
gen_server:cast(S, {lock_set, not_a_pid, true, [], 1}),
gen_server:cast(S, not_a_tuple),
S ! {lost_connection, 1, 2, 3},
S ! {init_connect_ack, 1, 2},
S ! {remove_connection, 42},
S ! garbage,
io:format("@@bad_call ~w~n", [catch gen_server:call(S, {set_lock, not_a_tuple}, 500)]),
Pid = spawn(fun() -> receive _ -> ok end end),
yes = global:register_name(after_garbage, Pid),
io:format("@@sent ~p~n", [Pid]),
receive stop -> ok end,
halt().
''' % me

    async def main():
        e = ErlNode("erl", expr).start()
        try:
            bad_call = await in_thread(e.expect, "bad_call")
            assert "timeout" in bad_call             # global does not answer it either
            await in_thread(e.expect, "sent")
            await global_names.sync()
            p = global_names.whereis_name("after_garbage")
            assert p is not None and p.node == e.name
            assert e.name in Node.list()
            assert await Node.ping(e.name) == "pong"
            tell(e.name, Atom("stop"))
        finally:
            e.kill()
    with caplog.at_level(logging.INFO, logger="pyotp.dist.global"):
        run_node(main, node=me, cookie=COOKIE, beam_visible=True)
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "pyotp.dist.global")
    assert "unexpected message" in logged
    assert "Illegal global protocol version" in logged


def test_global_locks_set_by_beam_span_the_pyotp_node():
    # global:set_lock/del_lock on a list of nodes that includes the pyotp node: pyotp's
    # global_name_server keeps global's lock table (a second requester is refused until
    # the first releases, or dies: its lock goes with it)
    me = unique("py")
    expr = r'''
register(t, self()),
P = '%s',
true = net_kernel:connect_node(P),
ok = global:sync(),
Self = self(),
A1 = spawn(fun() -> Self ! {a1, global:set_lock({res, a1}, [P], 0)}, receive release -> global:del_lock({res, a1}, [P]), Self ! released, receive die -> ok end end end),
receive {a1, R1} -> io:format("@@a1 ~p~n", [R1]) end,
io:format("@@a2 ~p~n", [global:set_lock({res, a2}, [P], 0)]),
A1 ! release, receive released -> ok end,
io:format("@@a2_after_release ~p~n", [global:set_lock({res, a2}, [P], 0)]),
global:del_lock({res, a2}, [P]),
A3 = spawn(fun() -> Self ! {a3, global:set_lock({res, a3}, [P], 0)}, receive die -> ok end end),
receive {a3, R3} -> io:format("@@a3 ~p~n", [R3]) end,
R = erlang:monitor(process, A3), A3 ! die, receive {'DOWN', R, _, _, _} -> ok end,
W = fun W(0) -> false; W(N) -> case global:set_lock({res, a4}, [P], 0) of true -> true; false -> timer:sleep(20), W(N - 1) end end,
io:format("@@a4_after_holder_died ~p~n", [W(500)]),
halt().
''' % me

    async def main():
        e = ErlNode("erl", expr).start()
        try:
            assert await in_thread(e.expect, "a1") == "true"
            assert await in_thread(e.expect, "a2") == "false"
            assert await in_thread(e.expect, "a2_after_release") == "true"
            assert await in_thread(e.expect, "a3") == "true"
            assert await in_thread(e.expect, "a4_after_holder_died") == "true"
        finally:
            e.kill()
    run_node(main, node=me, cookie=COOKIE, beam_visible=True)


def test_pg_scope_shared_over_a_visible_connection():
    # visible, BEAM's pg discovers the pyotp scope by name (as it does any visible node):
    # pyotp answers as a BEAM scope does, and members are seen both ways
    from pyotp.dist import pg
    me = unique("py")
    expr = r'''
register(t, self()),
{ok, _} = pg:start_link(),
M = spawn(fun() -> receive _ -> ok end end),
ok = pg:join(workers, M),
P = '%s',
true = net_kernel:connect_node(P),
io:format("@@member ~p~n", [M]),
W = fun W(0) -> timeout; W(N) -> case length(pg:get_members(workers)) of 2 -> ok; _ -> timer:sleep(20), W(N - 1) end end,
io:format("@@beam_sees ~p~n", [W(500)]),
receive stop -> ok end,
halt().
''' % me

    async def member():
        await pyotp.receive()

    async def main():
        m = pyotp.spawn(member)
        pg.join(Atom("workers"), m)
        e = ErlNode("erl", expr).start()
        try:
            await in_thread(e.expect, "member")
            await until(lambda: len(pg.get_members(Atom("workers"))) == 2, "the BEAM member seen here")
            assert await in_thread(e.expect, "beam_sees") == "ok"
            assert e.name in Node.list()
            tell(e.name, Atom("stop"))
        finally:
            e.kill()
    run_node(main, node=me, cookie=COOKIE, beam_visible=True)


PEER = r'''
register(t, self()),
case '%s' of none -> ok; A -> true = net_kernel:connect_node(A), ok = global:sync() end,
io:format("@@up ok~n"),
L = fun L() ->
  receive
    {lost, Target, About} ->
      {global_name_server, Target} ! {lost_connection, node(), 1, erlang:unique_integer([positive]), About},
      L();
    {nodes, From} -> From ! {nodes, node(), nodes()}, L();
    stop -> halt()
  end
end,
L().
'''


async def nodes_of(node):
    pyotp.send((Atom("t"), node), (Atom("nodes"), pyotp.self()))
    m = await pyotp.receive(lambda m: type(m) is tuple and m[:2] == ("nodes", node), timeout=15)
    return [str(n) for n in m[2]]


async def mesh_of_three(a, b):
    a.start()
    await in_thread(a.expect, "up")
    b.start()
    await in_thread(b.expect, "up")
    assert await Node.connect(a.name)
    await until(lambda: b.name in Node.list(), "connected to B through global")
    await global_names.sync()


def test_lost_connection_reported_to_the_beam_nodes():
    # OTP 25's prevent-overlapping-partitions: this node losing A tells B, which then
    # drops A too (fully connected partitions form, as among BEAM nodes). A itself runs
    # without the fix, so that only this node's report reaches B (A's own report of
    # losing us would race it, and either partition is right)
    me = unique("py")
    a = ErlNode("erla", PEER % "none",
                extra_args=["-kernel", "prevent_overlapping_partitions", "false"])
    b = ErlNode("erlb", PEER % a.name)

    async def main():
        try:
            await mesh_of_three(a, b)
            assert a.name in await nodes_of(b.name)
            Node.disconnect(a.name)
            seen = []

            async def b_lost_a():
                seen[:] = await nodes_of(b.name)
                return a.name not in seen
            loop = asyncio.get_running_loop()
            end = loop.time() + 15
            while not await b_lost_a():
                assert loop.time() < end, "B kept its connection to A: %r" % seen
                await pyotp.sleep(0.05)
            assert me in seen
            for n in (a.name, b.name):
                tell(n, Atom("stop"))
        finally:
            a.kill()
            b.kill()
    run_node(main, node=me, cookie=COOKIE, beam_visible=True)


def test_lost_connection_from_a_beam_node_is_obeyed():
    # A reports it lost B: this node drops B as a BEAM node would
    me = unique("py")
    a = ErlNode("erla", PEER % "none")
    b = ErlNode("erlb", PEER % a.name)

    async def main():
        try:
            await mesh_of_three(a, b)
            tell(a.name, (Atom("lost"), Atom(me), Atom(b.name)))
            await until(lambda: b.name not in Node.list(), "B disconnected here")
            for n in (a.name, b.name):
                tell(n, Atom("stop"))
        finally:
            a.kill()
            b.kill()
    run_node(main, node=me, cookie=COOKIE, beam_visible=True)


class Echo(pyotp.GenServer):
    def init(self, arg):
        return ("ok", arg)

    def handle_call(self, req, from_, state):
        return ("reply", (Atom("echo"), req), state)


EX_GLOBAL = r'''
defmodule ExGlobal do
  use GenServer
  def init(s), do: {:ok, s}
  def handle_call(:ping, _from, s), do: {:reply, :pong, s}
end
p = :"%s"
Process.register(self(), :t)
:ok = :net_kernel.monitor_nodes(true)
true = Node.connect(p)
receive do {:nodeup, ^p} -> IO.puts("@@nodeup ok") after 15000 -> IO.puts("@@nodeup none") end
IO.puts("@@list #{inspect(p in Node.list())}")
:ok = :global.sync()
{:ok, _} = GenServer.start(ExGlobal, nil, name: {:global, :ex_srv})
IO.puts("@@registered ok")
receive do :check -> :ok end
IO.puts("@@call #{inspect(GenServer.call({:global, :py_srv}, :hello))}")
receive do :stop -> :ok end
'''


def test_elixir_global_names_with_a_visible_pyotp_node():
    # GenServer names {:global, name} resolve across Elixir and pyotp in both directions
    me = unique("py")

    async def main():
        await Echo.start(None, name=("global", Atom("py_srv")))
        ex = ExNode("ex", EX_GLOBAL % me).start()
        try:
            assert await in_thread(ex.expect, "nodeup") == "ok"
            assert await in_thread(ex.expect, "list") == "true"
            await in_thread(ex.expect, "registered")
            await global_names.sync()
            assert await pyotp.GenServer.call(("global", Atom("ex_srv")), Atom("ping")) == "pong"
            tell(ex.name, Atom("check"))
            assert await in_thread(ex.expect, "call") == "{:echo, :hello}"
            tell(ex.name, Atom("stop"))
        finally:
            ex.kill()
    run_node(main, node=me, cookie=COOKIE, beam_visible=True)
