"""Interop with real Erlang nodes (``erl`` from erlang-base; CI installs it: these tests
are marked `erlang`: skipped without Erlang unless required: PYOTP_REQUIRE_SERVICES, as CI sets).

The test process is the pyotp node; an ``erl -name`` child evaluates an Erlang script
that prints ``@@tag value`` lines (``~w``), which the test reads in order.
"""
from __future__ import annotations

import asyncio

import pytest

import pyotp
from pyotp import Atom, Exit, GenServer
from pyotp.dist import Node, rpc, run_node
from dist_helpers import COOKIE, ErlNode, require_erl, unique, unique_short

pytestmark = pytest.mark.erlang


class PyServ(GenServer):
    """The server Erlang calls: echoes requests, hands out victim processes."""

    def init(self, arg):
        return ("ok", None)

    def handle_call(self, req, from_, state):
        if req == "victim":
            return ("reply", pyotp.spawn(victim), state)
        return ("reply", ("got", req, type(from_[1]).__name__), state)


async def victim():
    msg = await pyotp.receive()
    raise Exit(msg[1])


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_erlang_drives_pyotp():
    require_erl()
    me = unique("py")
    script = r'''
P = list_to_atom("%s"),
io:format("@@ping ~w~n", [net_adm:ping(P)]),
io:format("@@call ~w~n", [gen_server:call({pyserv, P}, {hello, <<"bin">>, [1,2,3]}, 5000)]),
io:format("@@rpc ~w~n", [rpc:call(P, dist_roles, plain_add, [2, 3], 5000)]),
io:format("@@rpc_undef ~w~n", [rpc:call(P, dist_roles, nope, [], 5000)]),
{badrpc, {'EXIT', {Err, _Stack}}} = rpc:call(P, dist_roles, raiser, [<<"k">>], 5000),
io:format("@@rpc_error ~w~n", [Err]),
io:format("@@rpc_exit ~w~n", [rpc:call(P, dist_roles, exiter, [why], 5000)]),
io:format("@@erpc ~w~n", [erpc:call(P, dist_roles, async_mul, [6, 7], 5000)]),
rpc:cast(P, pyotp, send, [self(), casted]),
receive casted -> io:format("@@cast ok~n") after 5000 -> io:format("@@cast timeout~n") end,
process_flag(trap_exit, true),
V = gen_server:call({pyserv, P}, victim, 5000),
link(V),
V ! {die, custom_reason},
receive {'EXIT', V, Why} -> io:format("@@link_exit ~w~n", [Why]) after 5000 -> io:format("@@link_exit timeout~n") end,
V2 = gen_server:call({pyserv, P}, victim, 5000),
Ref = erlang:monitor(process, V2),
V2 ! {die, {shutdown, x}},
receive {'DOWN', Ref, process, V2, Why2} -> io:format("@@down ~w~n", [Why2]) after 5000 -> io:format("@@down timeout~n") end,
V3 = gen_server:call({pyserv, P}, victim, 5000),
link(V3), unlink(V3),
Ref3 = erlang:monitor(process, V3),
V3 ! {die, boom},
receive {'DOWN', Ref3, process, V3, W3} -> ok after 5000 -> W3 = timeout end,
Stray = receive {'EXIT', V3, _} -> stray_exit after 0 -> none end,
io:format("@@unlinked ~w~n", [{W3, Stray}]),
A = spawn(P, dist_roles, agent, [self(), false]),
receive {<<"agent_up">>, A} -> ok after 5000 -> ok end,
A ! {cmd, echo, hi},
receive {<<"echo">>, E} -> io:format("@@spawned ~w~n", [{node(A) =:= P, E}]) after 5000 -> io:format("@@spawned timeout~n") end,
io:format("@@hidden ~w~n", [{lists:member(P, nodes(hidden)), lists:member(P, nodes())}]),
monitor_node(P, true),
io:format("@@waiting ok~n"),
receive {nodedown, P} -> io:format("@@nodedown ok~n") after 20000 -> io:format("@@nodedown timeout~n") end,
halt().
''' % me

    async def main():
        await PyServ.start(None, name="pyserv")
        erl = ErlNode("erl", script).start()
        out = {}
        for tag in ["ping", "call", "rpc", "rpc_undef", "rpc_error", "rpc_exit", "erpc", "cast",
                    "link_exit", "down", "unlinked", "spawned", "hidden", "waiting"]:
            out[tag] = await in_thread(erl.expect, tag)
        return out, erl
    out, erl = run_node(main, node=me, cookie=COOKIE)
    try:
        assert out["ping"] == "pong"
        assert out["call"] == "{<<103,111,116>>,{hello,<<98,105,110>>,[1,2,3]},<<73,109,112,114,111,112,101,114,76,105,115,116>>}"
        assert out["rpc"] == "5"
        assert out["rpc_undef"] == "{badrpc,{'EXIT',{undef,[{dist_roles,nope,[],[]}]}}}"
        assert out["rpc_error"] == "{'KeyError',<<98,39,107,39>>}"
        assert out["rpc_exit"] == "{badrpc,{'EXIT',why}}"
        assert out["erpc"] == "42"
        assert out["cast"] == "ok"
        assert out["link_exit"] == "custom_reason"
        assert out["down"] == "{shutdown,x}"
        assert out["unlinked"] == "{boom,none}"
        assert out["spawned"] == "{true,hi}"
        assert out["hidden"] == "{true,false}"
        assert erl.expect("nodedown") == "ok"        # run_node stopped distribution
    finally:
        erl.kill()


def test_pyotp_drives_erlang():
    require_erl()
    script = r'''
Srv = fun Loop() ->
    receive
        {From, {exit_with, R}} when is_pid(From) -> exit(R);
        {From, Msg} when is_pid(From) -> From ! {reply_from_erl, Msg}, Loop()
    end
end,
register(erlsrv, spawn(Srv)),
register(other, spawn(Srv)),
io:format("@@ready ok~n"),
receive stop -> ok end,
halt().
'''

    async def main():
        erl = ErlNode("erl", script).start()
        await in_thread(erl.expect, "ready")
        n = erl.name
        me = Node.self()
        out = {"ping": await Node.ping(n)}
        out["is_auth"] = await GenServer.call(("net_kernel", n), (Atom("is_auth"), Atom(me)))
        out["rex"] = await GenServer.call(("rex", n), (Atom("call"), Atom("erlang"), Atom("node"), [], Atom("user")))
        out["rpc_node"] = await rpc.call(n, "erlang", "node", [])
        out["rpc_rev"] = await rpc.call(n, "lists", "reverse", [[1, "two", b"3"]])
        out["rpc_err"] = await rpc.call(n, "erlang", "error", [Atom("boom")])
        out["rpc_undef"] = await rpc.call(n, "nomod", "f", [])
        pyotp.send(("erlsrv", n), (pyotp.self(), ("hello", 1.5)))
        out["send"] = await pyotp.receive(timeout=10)
        pyotp.process_flag("trap_exit", True)
        srv = await rpc.call(n, "erlang", "whereis", [Atom("erlsrv")])
        pyotp.link(srv)
        pyotp.send(srv, (pyotp.self(), (Atom("exit_with"), (Atom("shutdown"), Atom("x")))))
        out["link"] = await pyotp.receive(lambda m: m[0] == "EXIT", timeout=10)
        other = await rpc.call(n, "erlang", "whereis", [Atom("other")])
        ref = pyotp.monitor(other)
        pyotp.send(other, (pyotp.self(), (Atom("exit_with"), Atom("gone"))))
        out["down"] = await pyotp.receive(timeout=10)
        spawned = await Node.spawn_link(n, ("erlang", "exit"), Atom("bye"))
        out["spawn_link"] = await pyotp.receive(lambda m: m[0] == "EXIT", timeout=10)
        mpid, mref = await Node.spawn_monitor(n, ("erlang", "exit"), Atom("at_once"))
        out["spawn_monitor"] = (await pyotp.receive(lambda m: m[0] == "DOWN", timeout=10), mpid, mref)
        try:
            await GenServer.call(("no_such_server", n), "x", timeout=5)
        except Exit as e:
            out["call_noproc"] = e.reason[0]
        Node.monitor_nodes(True)
        erl.kill()
        out["nodedown"] = await pyotp.receive(lambda m: m[0] == "nodedown", timeout=20)
        return out, srv, ref, other, spawned, n, me
    out, srv, ref, other, spawned, n, me = run_node(main, node=unique("py"), cookie=COOKIE)
    assert out["ping"] == "pong"
    assert out["is_auth"] == "yes" and type(out["is_auth"]) is Atom
    assert out["rex"] == n and out["rpc_node"] == n
    assert out["rpc_rev"] == [b"3", b"two", 1]
    assert out["rpc_err"][0] == "badrpc" and out["rpc_err"][1][0] == "EXIT" and out["rpc_err"][1][1][0] == "boom"
    assert out["rpc_undef"][1][1][0] == "undef"
    assert out["send"] == (Atom("reply_from_erl"), (b"hello", 1.5))
    assert out["link"] == ("EXIT", srv, ("shutdown", "x"))
    assert out["down"] == ("DOWN", ref, "process", other, "gone")
    assert out["spawn_link"] == ("EXIT", spawned, "bye")
    down, mpid, mref = out["spawn_monitor"]
    assert down == ("DOWN", mref, "process", mpid, "at_once") and mpid.node == n
    assert out["call_noproc"] == "noproc"
    assert out["nodedown"] == ("nodedown", n)


def test_erlang_sees_nodedown_when_a_pyotp_node_is_killed():
    require_erl()
    from dist_helpers import NodeProc
    with NodeProc("pyk", role="dist_roles:role_idle") as py:
        py.expect("ready")
        script = r'''
P = list_to_atom("%s"),
pong = net_adm:ping(P),
monitor_node(P, true),
io:format("@@watching ok~n"),
receive {nodedown, P} -> io:format("@@nodedown ok~n") after 20000 -> io:format("@@nodedown timeout~n") end,
halt().
''' % py.name
        with ErlNode("erlw", script) as erl:
            assert erl.expect("watching") == "ok"
            py.kill()
            assert erl.expect("nodedown") == "ok"


def test_short_names_both_ways():
    # `erl -sname` nodes and a pyotp node named alive@shorthost see each other
    require_erl()
    me = unique_short("pys")
    script = r'''
register(es, self()),
io:format("@@ping ~w~n", [net_adm:ping(list_to_atom("%s"))]),
receive {hello, From} -> From ! {hi, node()} after 10000 -> ok end,
receive bye -> ok after 10000 -> ok end,
halt().
''' % me
    erl = ErlNode("es", script, short=True)

    async def main():
        erl.start()
        erl_ping = await in_thread(erl.expect, "ping")
        pong = await Node.ping(erl.name)
        pyotp.send(("es", erl.name), (Atom("hello"), pyotp.self()))
        hi = await pyotp.receive(timeout=10)
        pyotp.send(("es", erl.name), Atom("bye"))    # halt() would drop unsent output
        return erl_ping, pong, hi
    try:
        # all interfaces: the short host name may resolve to the machine's address
        erl_ping, pong, hi = run_node(main, node=me, cookie=COOKIE, listen_host="0.0.0.0")
    finally:
        erl.kill()
    assert "@" in me and "." not in me.split("@")[1]
    assert (erl_ping, pong) == ("pong", "pong")
    assert hi == ("hi", erl.name)
