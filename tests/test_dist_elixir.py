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
