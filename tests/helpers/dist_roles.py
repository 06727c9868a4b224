"""Code that runs on the child nodes of the distribution tests (imported by them by name;
kept free of pytest so a child node starts fast). Roles are started by
``dist_helpers.NodeProc``; the other functions are spawned or rpc'd by the tests."""
from __future__ import annotations

import dataclasses
import os
import time

import pyotp
from pyotp import Exit, GenServer
from pyotp.dist import Node
from pyotp.etf import Atom
from dist_helpers import emit, stdin_line




class Echo(GenServer):
    def init(self, arg):
        return ("ok", [])

    def handle_call(self, req, from_, casts):
        if req == "casts":
            return ("reply", list(casts), casts)
        if req == "crash":
            raise ValueError("crashed on request")
        if type(req) is tuple and req[0] == "later":
            pyotp.send_after(pyotp.self(), ("reply_later", from_, req[1]), req[2])
            return ("noreply", casts)
        return ("reply", ("echo", req, Node.self()), casts)

    def handle_cast(self, req, casts):
        return ("noreply", casts + [req])

    def handle_info(self, msg, casts):
        if type(msg) is tuple and msg[0] == "reply_later":
            GenServer.reply(msg[1], msg[2])
        return ("noreply", casts)


async def role_peer():
    await Echo.start(None, name="echo")
    emit("ready", Node.self())
    await pyotp.receive(lambda m: m == "stop")


async def agent(report_to, trap=False):
    """A remotely controlled process: obeys commands, forwards everything else."""
    if trap:
        pyotp.process_flag("trap_exit", True)
    pyotp.send(report_to, ("agent_up", pyotp.self()))
    while True:
        m = await pyotp.receive()
        if type(m) is tuple and m and m[0] == "cmd":
            op = m[1]
            if op == "exit":
                raise Exit(m[2])
            if op == "crash":
                raise RuntimeError("agent crashed")
            if op == "link":
                pyotp.link(m[2])
                pyotp.send(report_to, ("done", "link"))
            elif op == "unlink":
                pyotp.unlink(m[2])
                pyotp.send(report_to, ("done", "unlink"))
            elif op == "monitor":
                pyotp.send(report_to, ("done", pyotp.monitor(m[2])))
            elif op == "exit_signal":
                pyotp.exit(m[2], m[3])
                pyotp.send(report_to, ("done", "exit_signal"))
            elif op == "echo":
                pyotp.send(report_to, ("echo", m[2]))
        else:
            pyotp.send(report_to, ("got", m))


def plain_add(a, b):
    return a + b


def sys_bump(state):
    """A state function for :sys.replace_state(pid, &:dist_roles.sys_bump/1) from BEAM."""
    return [x + 1 for x in state]


def sys_note(to, event, proc_state):
    """A sys debug function for :sys.install(pid, {&:dist_roles.sys_note/3, self()}) from
    BEAM: tells ``to`` each event and the state after it."""
    pyotp.send(to, (pyotp.Atom("noted"), event, proc_state))
    return to


async def async_mul(a, b):
    await pyotp.sleep(0.001)
    return a * b


def raiser(msg):
    raise KeyError(msg)


def exiter(reason):
    raise Exit(reason)


async def sleeper(seconds):
    await pyotp.sleep(seconds)
    return "slept"


def getpid():
    return os.getpid()


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: str



async def role_watcher():
    """Reports nodeup/nodedown lines; serves 'echo'."""
    await Echo.start(None, name="echo")
    Node.monitor_nodes(True)
    emit("ready", Node.self())
    while True:
        m = await pyotp.receive()
        emit(m[0], m[1])


async def role_sink(other):
    """Simultaneous connect: on each 'go' line, connect to `other` and send it a hello."""
    me = pyotp.self()
    pyotp.register("sink", me)
    emit("ready", Node.self())
    rnd = 0
    while True:
        line = await stdin_line()
        if line != "go":
            return
        rnd += 1
        pyotp.send(("sink", other), ("hello", rnd, Node.self()))
        ok = await Node.connect(other)
        got = await pyotp.receive(lambda m: m[0] == "hello" and m[1] == rnd, timeout=20)
        emit("round", (rnd, ok, got[2] == other, Node.list()))
        await stdin_line()
        Node.disconnect(other)
        emit("disconnected", rnd)




# -- global names and pg ------------------------------------------------------------------

async def holder():
    await pyotp.receive(lambda m: m == "never")


async def role_global_holder(name):
    """Registers a process globally (and locally as 'holder') before any connection."""
    from pyotp.dist import global_names
    pid = pyotp.spawn(holder)
    pyotp.register("holder", pid)
    emit("ready", global_names.register_name(name, pid))
    await pyotp.receive(lambda m: m == "stop")


async def global_whereis(name):
    from pyotp.dist import global_names
    await global_names.sync()
    return global_names.whereis_name(name)


async def role_global_server(name):
    await Echo.start(None, name=("global", name))
    emit("ready", Node.self())
    await pyotp.receive(lambda m: m == "stop")


async def role_pg(group, n):
    from pyotp.dist import pg
    pids = [pyotp.spawn(holder) for _ in range(n)]
    pg.join(group, pids)
    emit("ready", Node.self())
    await pyotp.receive(lambda m: m == "stop")


def pg_members(group):
    from pyotp.dist import pg
    return pg.get_members(group)


async def role_idle():
    emit("ready", Node.self())
    await pyotp.receive(lambda m: m == "stop")


# -- benchmark peers (bench/test_bench_dist.py) ------------------------------------------

class Sink(GenServer):
    """Counts messages; ("done", pid) -> pid gets ("count", n) and the count resets. The
    tags are atoms (equal to the str for pyotp callers), so an Erlang driver can use it
    too (bench/erlang/distpeer.erl matches {count, N} and pong)."""

    def init(self, arg):
        return ("ok", 0)

    def handle_info(self, msg, n):
        if type(msg) is tuple and len(msg) == 2 and msg[0] == "done":
            pyotp.send(msg[1], (Atom("count"), n))
            return ("noreply", 0)
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "array":
            arr = msg[2]
            pyotp.send(msg[1], ("array", arr.nbytes, int(arr[::1 << 20].sum())))
            return ("noreply", n)
        return ("noreply", n + 1)

    def handle_call(self, req, from_, n):
        if req == "policy":             # the sink node's waiting policy (bench diagnostics)
            return ("reply", pyotp._core.wait_policy().info(), n)
        return ("reply", Atom("pong"), n)


async def role_sink_bench():
    await Sink.start(None, name="sink")
    emit("ready", Node.self())
    await pyotp.receive(lambda m: m == "stop")


async def role_call_driver():
    """The pyotp side of bench/test_bench_busy.py's driver (distpeer.erl's driver/0 is the
    BEAM side): reads commands, prints ``@@result Seconds`` for each.
    ``call N Node``: N sequential calls ``ping`` to {sink, Node};
    ``paced N Node Ms``: the same with a pause of Ms milliseconds before each call."""
    emit("ready", Node.self())
    while True:
        words = (await stdin_line()).split()
        if not words or words[0] == "quit":
            return
        if words[0] == "policy":       # ours, and the sink's when a node is given
            mine = pyotp._core.wait_policy().info()
            theirs = await GenServer.call(("sink", words[1]), "policy") if len(words) > 1 else None
            emit("policy", (mine, theirs))
            continue
        n, dest = int(words[1]), ("sink", words[2])
        pause = float(words[3]) / 1000.0 if words[0] == "paced" else 0.0
        t0 = time.perf_counter()
        for _ in range(n):
            if pause:
                await pyotp.sleep(pause)
            r = await GenServer.call(dest, "ping", 30)
            assert r == "pong", r
        emit("result", "%f" % (time.perf_counter() - t0))


async def blast(dest_name, node, n, me):
    """Send n small messages to (dest_name, node), then ("done", me)."""
    dest = (dest_name, node)
    for i in range(n):
        pyotp.send(dest, ("msg", i))
    pyotp.send(dest, ("done", me))


async def lock_holder(lock, report_to):
    """Takes a global lock (no retries), reports, releases it on "release", then idles."""
    from pyotp.dist import global_names
    ok = await global_names.set_lock(tuple(lock), retries=0)
    pyotp.send(report_to, ("locked", ok, pyotp.self()))
    if await pyotp.receive() == "release":
        await global_names.del_lock(tuple(lock))
        pyotp.send(report_to, ("released", pyotp.self()))
    await pyotp.receive()


def spawn_lock_holder(lock, report_to):
    return pyotp.spawn(lock_holder, lock, report_to)


async def role_visible_registrar(name):
    """A visible pyotp node holding ``name`` (an atom) globally; on ("race", names) from
    the test it registers each of them for the same holder at once."""
    from pyotp.dist import global_names
    pid = pyotp.spawn(holder)
    pyotp.register("holder", pid)
    pyotp.register("registrar", pyotp.self())
    emit("ready", global_names.register_name(pyotp.Atom(name), pid))
    while True:
        m = await pyotp.receive()
        if m == "stop":
            return
        if type(m) is tuple and m[0] == "race":
            raced = [global_names.register_name(n, pid) for n in m[2]]
            await global_names.sync()        # told to the BEAM nodes too
            pyotp.send(m[1], ("raced", raced))


async def global_owners(names):
    """Each name's owner after global_names.sync(), as a list of (name, pid or None)."""
    from pyotp.dist import global_names
    await global_names.sync()
    return [(n, global_names.whereis_name(n)) for n in names]
