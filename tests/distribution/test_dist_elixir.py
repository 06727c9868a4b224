"""Interop with real Elixir nodes (``elixir`` from Debian), as an Elixir user meets a
pyotp node: a pyotp node must behave as a BEAM node in the same place would (issue 14).
Marked ``erlang``: skipped with the reason where Erlang is absent (the wheel tests on
macOS/Windows runners), failed instead where it is required (PYOTP_REQUIRE_SERVICES:
.ci/run, CI's Erlang jobs, which install elixir too).

The test process is the pyotp node; an ``elixir --name`` child evaluates a script that
prints ``@@tag value`` lines, which the test reads in order.
"""
from __future__ import annotations

import asyncio
import logging

import pytest

import pyotp
from pyotp import Atom, GenServer
from pyotp.dist import rpc, run_node
from dist_helpers import COOKIE, ExNode, unique

pytestmark = pytest.mark.erlang


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
    with caplog.at_level(logging.ERROR, logger="pyotp.dist"):
        out = run_node(main, node=me, cookie=COOKIE, max_term_depth=5000)
    assert out == {"first": "{:small, 1}", "deep_ok": "true", "nodedown": "false", "connected": "true"}
    logged = [r.getMessage() for r in caplog.records if r.name == "pyotp.dist"]
    assert any("dropped a message" in m and "nested deeper than 5000" in m for m in logged), logged


class PyCounter(GenServer):
    """What Elixir inspects: a list state, a cast that adds, format_status that hides."""

    def init(self, arg):
        return ("ok", arg)

    def handle_call(self, req, from_, state):
        return ("reply", state, state)

    def handle_cast(self, req, state):
        return ("noreply", state + [req[1]])

    def terminate(self, reason, state):
        pyotp.send("watcher", ("terminated", reason))

    def format_status(self, status):
        return dict(status, state=(Atom("hidden"), len(status["state"])))


SYS_SCRIPT = r'''
p = :"%s"
srv = {:pycounter, p}
IO.puts("@@get_state #{inspect(:sys.get_state(srv))}")
IO.puts("@@replace #{inspect(:sys.replace_state(srv, &:dist_roles.sys_bump/1))}")
r = try do :sys.replace_state(srv, fn s -> s end) catch kind, e -> {kind, elem(e, 0)} end
IO.puts("@@closure #{inspect(r)}")
{:status, pid, {:module, mod}, [pdict, sys_state, _parent, _dbg, misc]} = :sys.get_status(srv)
[{:header, header}, {:data, data}, {:data, [{'State', shown}]}] = misc
IO.puts("@@status #{inspect({node(pid) == p, mod, sys_state, to_string(header), data, shown})}")
IO.puts("@@initial_call #{inspect(pdict[:"$initial_call"])}")
IO.puts("@@rpc_initial_call #{inspect(:rpc.call(p, :proc_lib, :translate_initial_call, [pid]))}")
:ok = :sys.suspend(srv)
GenServer.cast(srv, {:add, 7})
IO.puts("@@while_suspended #{inspect({:sys.get_state(srv), elem(:sys.get_status(srv), 3) |> Enum.at(1)})}")
:ok = :sys.resume(srv)
IO.puts("@@resumed #{inspect(GenServer.call(srv, :get))}")
IO.puts("@@stop #{inspect(GenServer.stop(srv, {:shutdown, :bye}))}")
IO.puts("@@alive #{inspect(:rpc.call(p, :erlang, :is_process_alive, [pid]))}")
'''


def test_elixir_sys_and_genserver_stop_on_a_pyotp_server():
    # :sys.get_state / replace_state / get_status / suspend / resume and GenServer.stop
    # from Elixir all used to time out (the system messages were logged as unexpected)
    me = unique("py")

    async def main():
        pyotp.register("watcher", pyotp.self())
        await PyCounter.start([1, 2], name="pycounter")
        ex = ExNode("ex", SYS_SCRIPT % me).start()
        try:
            out = {t: await in_thread(ex.expect, t)
                   for t in ["get_state", "replace", "closure", "status", "initial_call",
                             "rpc_initial_call", "while_suspended", "resumed", "stop"]}
            out["terminated"] = await pyotp.receive(timeout=15)
            return out
        finally:
            ex.kill()
    out = run_node(main, node=me, cookie=COOKIE)
    assert out["get_state"] == "[1, 2]"
    assert out["replace"] == "[2, 3]"
    assert out["closure"] == "{:error, :callback_failed}"
    assert out["status"].startswith('{true, :gen_server, :running, "Status for generic server pycounter", [')
    assert out["status"].endswith(', {:hidden, 2}}')
    assert out["initial_call"] == "{:\"test_dist_elixir.PyCounter\", :init, 1}"
    assert out["rpc_initial_call"] == "{:\"test_dist_elixir.PyCounter\", :init, 1}"
    assert out["while_suspended"] == "{[2, 3], :suspended}"      # the cast waits
    assert out["resumed"] == "[2, 3, 7]"
    assert out["stop"] == ":ok"
    assert out["terminated"] == ("terminated", ("shutdown", "bye"))


class Light(pyotp.GenStateMachine):
    def init(self, arg):
        return ("ok", Atom("red"), arg)

    def handle_event(self, event_type, content, state, data):
        return "keep_state_and_data"


class Note(pyotp.EventHandler):
    def init(self, arg):
        return ("ok", arg)

    def handle_event(self, event, state):
        return ("ok", state)


BEHAVIOURS_SCRIPT = r'''
p = :"%s"
for name <- [:light, :events, :sup, :dsup, :tsup] do
  srv = {name, p}
  {:status, _, {:module, mod}, [_, :running | _]} = :sys.get_status(srv)
  :ok = :sys.suspend(srv)
  {:status, _, _, [_, s | _]} = :sys.get_status(srv)
  :ok = :sys.resume(srv)
  st = :sys.get_state(srv)
  IO.puts("@@#{name} #{inspect({mod, s, st, GenServer.stop(srv)})}")
end
'''


def test_every_behaviour_answers_sys_and_stop_from_elixir():
    me = unique("py")
    names = ["light", "events", "sup", "dsup", "tsup"]

    async def main():
        pyotp.process_flag("trap_exit", True)
        await Light.start_link(0, name="light")
        ev = await pyotp.EventManager.start_link(name="events")
        await pyotp.EventManager.add_handler(ev, Note, 5)
        await pyotp.Supervisor.start_link([(PyCounter, [])], strategy="one_for_one", name="sup")
        await pyotp.DynamicSupervisor.start_link(name="dsup")
        await pyotp.TaskSupervisor.start_link(name="tsup")
        ex = ExNode("ex", BEHAVIOURS_SCRIPT % me).start()
        try:
            out = {t: await in_thread(ex.expect, t) for t in names}
            out["alive"] = [pyotp.whereis(n) for n in names]
            return out
        finally:
            ex.kill()
    out = run_node(main, node=me, cookie=COOKIE)
    assert out["light"] == "{:gen_statem, :suspended, {:red, 0}, :ok}"
    assert out["events"] == '{:gen_event, :suspended, [{:"test_dist_elixir.Note", nil, 5}], :ok}'
    assert out["sup"].startswith("{:gen_server, :suspended, {\"one_for_one\", "
                                 "[{\"<class 'test_dist_elixir.PyCounter'>\", #PID<")
    assert out["sup"].endswith('>, "worker"}]}, :ok}')
    assert out["dsup"] == out["tsup"] == '{:gen_server, :suspended, {"one_for_one", []}, :ok}'
    assert out["alive"] == [None] * 5          # GenServer.stop stopped each of them


EX_STATEFUL = r'''
defmodule ExState do
  use GenServer
  def init(s), do: {:ok, s}
  def handle_call(:get, _from, s), do: {:reply, s, s}
  def handle_cast({:push, x}, s), do: {:noreply, [x | s]}
  def terminate(reason, _s), do: IO.puts("@@terminate #{inspect(reason)}")
end
{:ok, _} = GenServer.start(ExState, [1, 2], name: :exstate)
IO.puts("@@ready ok")
Process.sleep(:infinity)
'''


def test_pyotp_sys_on_an_elixir_server():
    # pyotp.sys sends gen:call's {system, {Pid, Ref}, Request} to BEAM processes
    from pyotp import sys as otp_sys
    from pyotp.etf import ExportFun

    async def main():
        ex = ExNode("ex", EX_STATEFUL).start()
        try:
            await in_thread(ex.expect, "ready")
            srv = ("exstate", ex.name)
            out = {"state": await otp_sys.get_state(srv)}
            out["replaced"] = await otp_sys.replace_state(srv, ExportFun("lists", "reverse", 1))
            st = await otp_sys.get_status(srv)
            out["status"] = (st["module"], st["behaviour"], st["status"], st["state"], st["pid"].node)
            out["suspend"] = await otp_sys.suspend(srv)
            GenServer.cast(srv, (Atom("push"), 0))
            out["suspended"] = ((await otp_sys.get_status(srv))["status"], await otp_sys.get_state(srv))
            out["resume"] = await otp_sys.resume(srv)
            out["after"] = await GenServer.call(srv, Atom("get"))
            out["stats_on"] = (await otp_sys.statistics(srv, True), await otp_sys.log(srv, True))
            await GenServer.call(srv, Atom("get"))
            st = await otp_sys.statistics(srv, "get")
            out["stats"] = (st["messages_in"], st["messages_out"], len(st["start_time"]))
            out["log"] = [ev[0] for ev in await otp_sys.log(srv, "get")]
            out["stats_off"] = (await otp_sys.statistics(srv, False), await otp_sys.statistics(srv, "get"))
            try:
                await otp_sys.replace_state(srv, lambda s: s)
            except TypeError as e:
                out["python_fun"] = "TypeError"
            ref = pyotp.monitor(srv)
            out["terminate"] = await otp_sys.terminate(srv, (Atom("shutdown"), Atom("sys")))
            out["down"] = (await pyotp.receive(lambda m: m[0] == "DOWN", timeout=15))[4]
            out["terminate_cb"] = await in_thread(ex.expect, "terminate")
            return out
        finally:
            ex.kill()
    out = run_node(main, node=unique("py"), cookie=COOKIE)
    assert out["state"] == [1, 2]
    assert out["replaced"] == [2, 1]
    assert out["status"][:4] == ("gen_server", "Elixir.ExState", "running", [2, 1])
    assert out["suspend"] == "ok" and out["resume"] == "ok"
    assert out["suspended"] == ("suspended", [2, 1])     # the cast waits while suspended
    assert out["after"] == [0, 2, 1]
    assert out["python_fun"] == "TypeError"
    assert out["stats_on"] == ("ok", "ok")
    assert out["stats"] == (1, 1, 2)
    assert out["log"] == ["in", "out"]
    assert out["stats_off"] == ("ok", None)
    assert out["terminate"] == "ok"
    assert out["down"] == ("shutdown", "sys")
    assert out["terminate_cb"] == "{:shutdown, :sys}"


class Slow(GenServer):
    """Holds a call's from_ until told to answer (a late reply without sleeps)."""

    def init(self, arg):
        return ("ok", None)

    def handle_call(self, req, from_, state):
        return ("noreply", from_)

    def handle_cast(self, req, from_):
        GenServer.reply(from_, Atom("late"))           # the caller gave up long ago
        pyotp.send(req[1], Atom("marker"))            # same connection, after the reply
        return ("noreply", None)


ALIAS_SCRIPT = r'''
p = :"%s"
r = try do GenServer.call({:slow, p}, :hello, 300) catch :exit, {reason, _} -> reason end
IO.puts("@@call #{inspect(r)}")
GenServer.cast({:slow, p}, {:answer, self()})
receive do :marker -> :ok end
stray = receive do {[:alias | _], _} = m -> m after 0 -> :none end
IO.puts("@@stray #{inspect(stray)}")
# aliases both ways: Elixir's alias used from pyotp, pyotp's alias used from Elixir
a = :erlang.alias()
send({:aliaser, p}, {:your_turn, self(), a})
receive do {:via_alias, pa} ->
  IO.puts("@@from_pyotp_alias ok")
  send(pa, :to_pyotp_alias)
end
receive do :unaliased -> :ok end
:erlang.unalias(a)
send({:aliaser, p}, :send_again)
receive do :marker -> :ok end
IO.puts("@@after_unalias #{inspect(receive do :via_alias_again -> :received after 0 -> :none end)}")
'''


async def _aliaser():
    _, elixir, their_alias = await pyotp.receive()
    mine = pyotp.alias()
    pyotp.send(their_alias, (Atom("via_alias"), mine))          # ALIAS_SEND to Elixir
    got = await pyotp.receive()
    pyotp.unalias(mine)
    pyotp.send(elixir, Atom("unaliased"))
    await pyotp.receive()                                      # :send_again
    pyotp.send(their_alias, Atom("via_alias_again"))           # dropped by BEAM
    pyotp.send(elixir, Atom("marker"))
    pyotp.send("alias_test", ("aliaser_got", got))


def test_aliases_with_elixir_late_replies_dropped():
    # a pyotp server's reply to a timed-out Elixir call used to land in the caller's
    # mailbox as {[:alias | ref], reply}: it now goes to the call's alias (ALIAS_SEND)
    me = unique("py")

    async def main():
        pyotp.register("alias_test", pyotp.self())
        await Slow.start(None, name="slow")
        pyotp.register("aliaser", pyotp.spawn(_aliaser))
        ex = ExNode("ex", ALIAS_SCRIPT % me).start()
        try:
            out = {t: await in_thread(ex.expect, t)
                   for t in ["call", "stray", "from_pyotp_alias", "after_unalias"]}
            out["aliaser"] = await pyotp.receive(timeout=15)
            return out
        finally:
            ex.kill()
    out = run_node(main, node=me, cookie=COOKIE)
    assert out == {"call": ":timeout", "stray": ":none", "from_pyotp_alias": "ok",
                   "after_unalias": ":none", "aliaser": ("aliaser_got", Atom("to_pyotp_alias"))}


EX_HOLDER = r'''
defmodule ExHolder do
  use GenServer
  def init(_), do: {:ok, nil}
  def handle_call(:hold, from, _), do: {:noreply, from}
  def handle_call(:tag, {_pid, tag}, s), do: {:reply, tag, s}
  def handle_cast({:answer, to}, from) do
    GenServer.reply(from, :late)
    send(to, :marker)
    {:noreply, nil}
  end
end
{:ok, _} = GenServer.start(ExHolder, nil, name: :holder)
IO.puts("@@ready ok")
Process.sleep(:infinity)
'''


def test_calls_to_elixir_use_an_alias_and_drop_late_replies():
    async def main():
        ex = ExNode("ex", EX_HOLDER).start()
        try:
            await in_thread(ex.expect, "ready")
            srv = ("holder", ex.name)
            tag = await GenServer.call(srv, Atom("tag"))
            try:
                await GenServer.call(srv, Atom("hold"), timeout=0.3)
            except pyotp.Exit as e:
                timed_out = e.reason[0]
            GenServer.cast(srv, (Atom("answer"), pyotp.self()))
            first = await pyotp.receive(timeout=15)
            return tag, timed_out, first
        finally:
            ex.kill()
    tag, timed_out, first = run_node(main, node=unique("py"), cookie=COOKIE)
    assert type(tag) is pyotp.etf.ImproperList and tag.items == ("alias",)
    assert type(tag.tail) is pyotp.Reference
    assert timed_out == "timeout"
    assert first == "marker"          # the late reply (sent before it) was dropped


PG_SCRIPT = r'''
p = :"%s"
{:ok, _} = :pg.start_link()
me = self()
e = spawn(fn -> receive do :bye -> send(me, :bye_done) end end)
:ok = :pg.join(:workers, e)
{ref, [^e]} = :pg.monitor(:workers)
true = Node.connect(p)
pm = receive do {^ref, :join, :workers, [pm]} -> pm end
IO.puts("@@beam_sees #{inspect({node(pm) == p, length(:pg.get_members(:workers))})}")
send({:pgtest, p}, {:elixir_member, e})
receive do {^ref, :leave, :workers, [^pm]} -> IO.puts("@@beam_leave #{inspect(:pg.get_members(:workers) == [e])}") end
send(e, :bye)
receive do :bye_done -> :ok end
receive do :done -> :ok end
'''


def test_pg_scope_shared_with_elixir():
    # Erlang's pg and pyotp's pg in the same scope: members seen both ways, a dying
    # member leaves on the other node (they used to be two separate worlds)
    from pyotp.dist import pg
    me = unique("py")

    async def member():
        await pyotp.receive()

    async def main():
        pyotp.register("pgtest", pyotp.self())
        ref, _ = pg.monitor(Atom("workers"))
        m = pyotp.spawn(member)
        pg.join(Atom("workers"), m)
        ex = ExNode("ex", PG_SCRIPT % me).start()
        try:
            out = {}
            j = await pyotp.receive(lambda x: x[0] == ref and x[1] == "join" and x[3][0] != m, timeout=15)
            e = j[3][0]
            out["py_sees"] = (e.node == ex.name, sorted(map(str, pg.get_members(Atom("workers")))) ==
                              sorted(map(str, [m, e])))
            out["beam_sees"] = await in_thread(ex.expect, "beam_sees")
            await pyotp.receive(lambda x: x[0] == "elixir_member", timeout=15)
            pyotp.exit(m, "kill")                                 # our member dies
            out["beam_leave"] = await in_thread(ex.expect, "beam_leave")
            lv = await pyotp.receive(lambda x: x[0] == ref and x[1] == "leave" and x[3] == [e], timeout=15)
            out["py_leave"] = pg.get_members(Atom("workers"))
            return out
        finally:
            ex.kill()
    out = run_node(main, node=me, cookie=COOKIE)
    assert out == {"py_sees": (True, True), "beam_sees": "{true, 2}", "beam_leave": "true",
                   "py_leave": []}


class Opaque(GenServer):
    def init(self, arg):
        return ("ok", {1, 2})          # a set: ETF cannot carry it to BEAM


def test_a_state_beam_cannot_receive_is_an_error_reply_not_a_crash():
    me = unique("py")
    script = r'''
p = :"%s"
r = try do :sys.get_state({:opaque, p}) catch kind, e -> {kind, elem(e, 0)} end
IO.puts("@@get_state #{inspect(r)}")
'''

    async def main():
        pid = await Opaque.start(None, name="opaque")
        ex = ExNode("ex", script % me).start()
        try:
            got = await in_thread(ex.expect, "get_state")
            return got, pyotp.is_alive(pid)
        finally:
            ex.kill()
    assert run_node(main, node=me, cookie=COOKIE) == ("{:error, :unencodable_reply}", True)


class StatSrv(GenServer):
    """The same server as ExStat below, for sys's debug options from Elixir."""

    def init(self, arg):
        return ("ok", arg)

    def handle_call(self, req, from_, state):
        return ("reply", state, state)

    def handle_cast(self, req, state):
        return ("noreply", state + [req[1]])

    def handle_info(self, msg, state):
        return ("noreply", state)


SYS_DEBUG_SCRIPT = r'''
defmodule ExStat do
  use GenServer
  def init(s), do: {:ok, s}
  def handle_call(_req, _from, s), do: {:reply, s, s}
  def handle_cast({:add, x}, s), do: {:noreply, s ++ [x]}
  def handle_info(_msg, s), do: {:noreply, s}
end
defmodule Probe do
  def norm({:in, {:"$gen_call", {pid, [:alias | _]}, req}}), do: {:in_call, pid == self(), req}
  def norm({:out, reply, {pid, [:alias | _]}, st}), do: {:out, reply, pid == self(), st}
  def norm(other), do: other
  def run(srv, tag) do
    off = :sys.statistics(srv, :get)
    :ok = :sys.statistics(srv, true)
    :ok = :sys.statistics(srv, true)
    [1] = GenServer.call(srv, :get)
    GenServer.cast(srv, {:add, 2})
    send(srv, :an_info)
    {:ok, st} = :sys.statistics(srv, :get)
    {{_, _, _}, {_, _, _}} = st[:start_time]
    true = st[:current_time] >= st[:start_time] and st[:reductions] > 0
    stats = {off, Keyword.keys(st), st[:messages_in], st[:messages_out]}
    stats_off = {:sys.statistics(srv, false), :sys.statistics(srv, :get)}
    IO.puts("@@#{tag}_stats #{inspect({stats, stats_off})}")
    log0 = :sys.log(srv, :get)
    :ok = :sys.log(srv, {true, 3})
    GenServer.call(srv, :get)
    GenServer.cast(srv, {:add, 3})
    send(srv, :another)
    {:ok, log} = :sys.log(srv, :get)
    :ok = :sys.log(srv, false)
    IO.puts("@@#{tag}_log #{inspect({log0, Enum.map(log, &norm/1), :sys.log(srv, :get)})}")
    IO.puts("@@#{tag}_unknown #{inspect(:sys.statistics(srv, :bogus))}")
  end
end
p = :"%s"
{:ok, _} = GenServer.start(ExStat, [1], name: :exstat)
Probe.run(:exstat, "beam")
Probe.run({:statsrv, p}, "pyotp")
srv = {:statsrv, p}
:ok = :sys.install(srv, {&:dist_roles.sys_note/3, self()})
GenServer.cast(srv, {:add, 4})
noted = for _ <- 1..2, do: (receive do {:noted, ev, name} -> {ev, name} after 10000 -> :timeout end)
:ok = :sys.remove(srv, &:dist_roles.sys_note/3)
GenServer.cast(srv, {:add, 5})
[1, 2, 3, 4, 5] = GenServer.call(srv, :get)
again = receive do {:noted, _, _} -> :noted_after_remove after 0 -> :none end
closure = :sys.install(srv, {fn s, _e, _st -> s end, 0})
IO.puts("@@install #{inspect({noted, again, elem(closure, 0), elem(elem(closure, 1), 0)})}")
IO.puts("@@no_debug #{inspect(:sys.no_debug(srv))}")
'''


def test_sys_statistics_log_install_from_elixir_as_on_a_beam_server():
    # the same probe runs against an Elixir GenServer and a pyotp one: same answers
    me = unique("py")

    async def main():
        await StatSrv.start([1], name="statsrv")
        ex = ExNode("ex", SYS_DEBUG_SCRIPT % me).start()
        try:
            return {t: await in_thread(ex.expect, t)
                    for t in ["beam_stats", "beam_log", "beam_unknown", "pyotp_stats",
                              "pyotp_log", "pyotp_unknown", "install", "no_debug"]}
        finally:
            ex.kill()
    out = run_node(main, node=me, cookie=COOKIE)
    assert out["beam_stats"] == ("{{{:ok, :no_statistics}, [:start_time, :current_time, :reductions, "
                                 ":messages_in, :messages_out], 3, 1}, {:ok, {:ok, :no_statistics}}}")
    assert out["pyotp_stats"] == out["beam_stats"]
    # the log keeps the last 3 events (oldest first), system messages are not events
    assert out["beam_log"] == ("{{:ok, []}, [noreply: [1, 2, 3], in: :another, "
                               "noreply: [1, 2, 3]], {:ok, []}}")
    assert out["pyotp_log"] == out["beam_log"]
    assert out["beam_unknown"] == out["pyotp_unknown"] == ":unknown_debug"
    # the function gets each event and the server's name, as BEAM's gen_server gives it
    assert out["install"] == ("{[{{:in, {:\"$gen_cast\", {:add, 4}}}, :statsrv}, "
                              "{{:noreply, [1, 2, 3, 4]}, :statsrv}], :none, :error, :callback_failed}")
    assert out["no_debug"] == ":ok"
