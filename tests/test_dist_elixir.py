"""Interop with real Elixir nodes (``elixir`` from Debian; CI installs it: these tests
fail, never skip, when it is missing), as an Elixir user meets a pyotp node: a pyotp
node must behave as a BEAM node in the same place would (issue 14).

The test process is the pyotp node; an ``elixir --name`` child evaluates a script that
prints ``@@tag value`` lines, which the test reads in order.
"""
from __future__ import annotations

import asyncio

import pyotp
from pyotp import Atom, GenServer
from pyotp.dist import rpc, run_node
from dist_helpers import COOKIE, ExNode, unique


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


EX_SERVER = r'''
defmodule ExSrv do
  use GenServer
  def init(s), do: {:ok, s}
  def handle_cast({:note, pid, tag}, s) do
    send(pid, {:cast_seen, tag})
    {:noreply, s}
  end
  def handle_info(msg, s) do
    IO.puts("@@unexpected #{inspect(msg)}")
    {:noreply, s}
  end
end
{:ok, _} = GenServer.start(ExSrv, nil, name: :exsrv)
IO.puts("@@ready ok")
Process.sleep(:infinity)
'''


def test_cast_and_abcast_reach_an_elixir_handle_cast():
    # the '$gen_cast' tag must be an atom: as a binary, Elixir's GenServer takes the
    # message for an info and handle_cast never runs
    async def main():
        ex = ExNode("ex", EX_SERVER).start()
        try:
            await in_thread(ex.expect, "ready")
            me = pyotp.self()
            GenServer.cast(("exsrv", ex.name), (Atom("note"), me, 1))
            got1 = await pyotp.receive(timeout=15)
            rpc.abcast([ex.name], "exsrv", (Atom("note"), me, 2))
            got2 = await pyotp.receive(timeout=15)
            return got1, got2
        finally:
            ex.kill()
    got1, got2 = run_node(main, node=unique("py"), cookie=COOKIE)
    assert got1 == (Atom("cast_seen"), 1)
    assert got2 == (Atom("cast_seen"), 2)


def test_rpc_block_call_and_undef_shapes():
    # :rpc.block_call goes to rex as {block_call, M, F, A, GL} (it used to answer
    # {:badrpc, :unknown_request}); undef reasons carry {M, F, Args, []} as BEAM's do
    me = unique("py")
    script = r'''
p = :"%s"
true = Node.connect(p)
IO.puts("@@block #{inspect(:rpc.block_call(p, :dist_roles, :plain_add, [2, 3], 5000))}")
IO.puts("@@block_undef #{inspect(:rpc.block_call(p, :nomod, :f, [1], 5000))}")
IO.puts("@@call_undef #{inspect(:rpc.call(p, :dist_roles, :nope, [1], 5000))}")
{pid, ref} = Node.spawn_monitor(p, :nomod, :f, [1])
receive do {:DOWN, ^ref, :process, ^pid, r} -> IO.puts("@@spawn_undef #{inspect(r)}") after 5000 -> IO.puts("@@spawn_undef timeout") end
Process.flag(:trap_exit, true)
pid = Node.spawn_link(p, :dist_roles, :nope, [])
receive do {:EXIT, ^pid, r} -> IO.puts("@@link_undef #{inspect(r)}") after 5000 -> IO.puts("@@link_undef timeout") end
''' % me

    async def main():
        ex = ExNode("ex", script).start()
        try:
            return {t: await in_thread(ex.expect, t)
                    for t in ["block", "block_undef", "call_undef", "spawn_undef", "link_undef"]}
        finally:
            ex.kill()
    out = run_node(main, node=me, cookie=COOKIE)
    assert out["block"] == "5"
    assert out["block_undef"] == "{:badrpc, {:EXIT, {:undef, [{:nomod, :f, [1], []}]}}}"
    assert out["call_undef"] == "{:badrpc, {:EXIT, {:undef, [{:dist_roles, :nope, [1], []}]}}}"
    assert out["spawn_undef"] == "{:undef, [{:nomod, :f, [1], []}]}"
    assert out["link_undef"] == "{:undef, [{:dist_roles, :nope, [], []}]}"


async def _echo():
    while True:
        frm, term = await pyotp.receive()
        pyotp.send(frm, (Atom("echoed"), term))


DEEP = r'''
p = :"%s"
true = Node.connect(p)
:erlang.monitor_node(p, true)
tup = fn n -> Enum.reduce(1..n, :leaf, fn _, acc -> {acc} end) end
lst = fn n -> Enum.reduce(1..n, :leaf, fn i, acc -> [acc, i] end) end
map = fn n -> Enum.reduce(1..n, :leaf, fn _, acc -> %%{k: acc} end) end
echo = fn t ->
  send({:echo, p}, {self(), t})
  receive do {:echoed, back} -> back === t after 20000 -> :timeout end
end
for {tag, t} <- %s do
  IO.puts("@@#{tag} #{inspect(echo.(t))}")
end
IO.puts("@@nodedown #{inspect(receive do {:nodedown, ^p} -> true after 0 -> false end)}")
IO.puts("@@connected #{inspect(p in Node.list(:hidden))}")
'''


def test_deep_terms_round_trip_with_beam():
    # BEAM has no nesting limit: 20000-deep terms are ordinary there (they used to drop
    # the whole connection at pyotp's old limit of 10000)
    me = unique("py")
    cases = '[{"tuple20k", tup.(20000)}, {"list20k", lst.(20000)}, {"map20k", map.(20000)}, {"tuple300k", tup.(300000)}]'

    async def main():
        pyotp.register("echo", pyotp.spawn(_echo))
        ex = ExNode("ex", DEEP % (me, cases)).start()
        try:
            return {t: await in_thread(ex.expect, t)
                    for t in ["tuple20k", "list20k", "map20k", "tuple300k", "nodedown", "connected"]}
        finally:
            ex.kill()
    out = run_node(main, node=me, cookie=COOKIE)
    assert out == {"tuple20k": "true", "list20k": "true", "map20k": "true", "tuple300k": "true",
                   "nodedown": "false", "connected": "true"}


def test_a_term_over_max_term_depth_drops_that_message_only(caplog):
    # the too-deep message is dropped with a logged error; the one sent after it on the
    # same connection is echoed first (wire order), and the connection never went down
    me = unique("py")
    script = r'''
p = :"%s"
true = Node.connect(p)
:erlang.monitor_node(p, true)
tup = fn n -> Enum.reduce(1..n, :leaf, fn _, acc -> {acc} end) end
send({:echo, p}, {self(), tup.(6000)})
send({:echo, p}, {self(), {:small, 1}})
receive do {:echoed, back} -> IO.puts("@@first #{inspect(back)}") end
t = tup.(4000)
send({:echo, p}, {self(), t})
receive do {:echoed, back} -> IO.puts("@@deep_ok #{inspect(back === t)}") end
IO.puts("@@nodedown #{inspect(receive do {:nodedown, ^p} -> true after 0 -> false end)}")
IO.puts("@@connected #{inspect(p in Node.list(:hidden))}")
''' % me

    async def main():
        pyotp.register("echo", pyotp.spawn(_echo))
        ex = ExNode("ex", script).start()
        try:
            return {t: await in_thread(ex.expect, t) for t in ["first", "deep_ok", "nodedown", "connected"]}
        finally:
            ex.kill()
    out = run_node(main, node=me, cookie=COOKIE, max_term_depth=5000)
    assert out == {"first": "{:small, 1}", "deep_ok": "true", "nodedown": "false", "connected": "true"}
    logged = [r.getMessage() for r in caplog.records if r.name == "pyotp.dist"]
    assert any("dropped a message" in m and "nested deeper than 5000" in m for m in logged), logged
