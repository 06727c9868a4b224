"""Operating a running node (issue 21): the BEAM introspection calls over rpc, compared
with a real BEAM node through Erlang's own ``erl_call``; the remote console under a
pseudo-terminal; ``python -m pyotp rpc`` / ``stop``; ``init:stop`` and ``halt``."""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from typing import Any, List, Optional, Tuple

import pytest

import pyotp
from pyotp.dist import beam_api
from pyotp.etf import Atom

from dist_helpers import COOKIE, HERE, WAIT, ErlNode, NodeProc, child_env, ensure_epmd, require_erl, unique


# ---------------------------------------------------------------------------------------
# helpers

def erl_call_path() -> str:
    require_erl()
    found = sorted(glob.glob("/usr/lib/erlang/lib/erl_interface-*/bin/erl_call")
                   + glob.glob("/usr/local/lib/erlang/lib/erl_interface-*/bin/erl_call"))
    if not found:
        raise AssertionError("these tests need erl_call (Debian's erlang-base ships it under "
                             "/usr/lib/erlang/lib/erl_interface-*/bin)")
    return found[-1]


def erl_call(node: str, apply: Optional[str] = None, expr: Optional[str] = None,
             cookie: str = COOKIE) -> str:
    cmd = [erl_call_path(), "-name", node, "-c", cookie]
    cmd += ["-a", apply] if apply is not None else ["-e"]
    r = subprocess.run(cmd, input=expr, capture_output=True, text=True, timeout=WAIT)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r.stdout


class RunProc(NodeProc):
    """``python -m pyotp run ops_apps:OpsApp --name ... [extra]`` in a child process."""

    def __init__(self, prefix: str, extra: Optional[List[str]] = None,
                 app: str = "ops_apps:OpsApp") -> None:
        super().__init__(prefix, role="")
        self.extra = extra or []
        self.app = app

    def start(self) -> "RunProc":
        import threading
        ensure_epmd()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "pyotp", "run", self.app, "--name", self.name,
             "--cookie", self.cookie] + self.extra,
            env=child_env(), cwd=HERE, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._reader, daemon=True).start()
        self.wait_log("pyotp: started ops_app")
        return self


def pyotp_cli(*args: str, home: Optional[str] = None) -> subprocess.CompletedProcess:
    env = child_env({"HOME": home} if home else None)
    return subprocess.run([sys.executable, "-m", "pyotp"] + list(args), env=env,
                          capture_output=True, text=True, timeout=WAIT)


# A reader for what erl_call prints (ei_print_term): enough of Erlang's term syntax to
# compare result shapes.

_TOKEN = re.compile(r"""\s*(?:
    (?P<float>-?\d+\.\d+(?:e[-+]?\d+)?) | (?P<int>-?\d+) |
    (?P<qatom>'(?:[^'\\]|\\.)*') | (?P<str>"(?:[^"\\]|\\.)*") |
    (?P<bin><<.*?>>) | (?P<ref>\#Ref<[^>]*>) | (?P<pid><[^<>]*>) |
    (?P<atom>[a-z][A-Za-z0-9_@.]*) | (?P<p>\#\{|=>|[{}\[\],|]))""", re.X)


class _Atom(str):
    pass


class _Str(str):
    pass


class _Pid(str):
    pass


def parse_term(text: str) -> Any:
    toks: List[Tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m is not None and m.end() > pos, "cannot read %r at %d" % (text, pos)
        kind = m.lastgroup
        assert kind is not None
        toks.append((kind, m.group(kind)))
        pos = m.end()
    i = 0

    def term() -> Any:
        nonlocal i
        kind, v = toks[i]
        i += 1
        if kind == "int":
            return int(v)
        if kind == "float":
            return float(v)
        if kind in ("atom", "qatom"):
            return _Atom(v.strip("'"))
        if kind == "str":
            return _Str(v[1:-1])
        if kind in ("pid", "ref", "bin"):
            return _Pid(kind)
        if v == "{":
            return tuple(seq("}"))
        if v == "[":
            return seq("]")
        if v == "#{":
            items = seq("}")
            return dict(items)
        raise AssertionError("unexpected %r in %r" % (v, text))

    def seq(close: str) -> List[Any]:
        nonlocal i
        out: List[Any] = []
        while toks[i][1] != close:
            x = term()
            if toks[i][1] == "=>":
                i += 1
                x = (x, term())
            out.append(x)
            if toks[i][1] in (",", "|"):
                i += 1
        i += 1
        return out

    t = term()
    assert i == len(toks), "trailing text in %r" % text
    return t


def compatible(a: Any, b: Any, where: str = "") -> Optional[str]:
    """None when a and b have the same shape (see test doc), else where they differ."""
    def is_list(x: Any) -> bool:
        return isinstance(x, list) or isinstance(x, _Str)
    if is_list(a) and is_list(b):
        la = a if isinstance(a, list) else [0] * len(a)
        lb = b if isinstance(b, list) else [0] * len(b)
        if not la or not lb:
            return None
        for x in la:
            if all(compatible(x, y, where) for y in lb):
                return "%s: no element like %r in %r" % (where, x, lb)
        for y in lb:
            if all(compatible(x, y, where) for x in la):
                return "%s: no element like %r in %r" % (where, y, la)
        return None
    if isinstance(a, tuple) and isinstance(b, tuple):
        if len(a) != len(b):
            return "%s: tuple sizes %r / %r" % (where, a, b)
        if len(a) == 2 and isinstance(a[0], _Atom) and a[0] != b[0]:
            return "%s: tags %r / %r" % (where, a[0], b[0])
        for k, (x, y) in enumerate(zip(a, b)):
            d = compatible(x, y, "%s/%s" % (where, a[0] if len(a) == 2 else k))
            if d:
                return d
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return "%s: map keys %r / %r" % (where, sorted(a), sorted(b))
        for k in a:
            d = compatible(a[k], b[k], "%s/%s" % (where, k))
            if d:
                return d
        return None
    if type(a) is not type(b):
        return "%s: %r / %r" % (where, a, b)
    if isinstance(a, _Pid) and a != b:
        return "%s: %r / %r" % (where, a, b)
    return None


def test_shape_reader_tells_shapes_apart():
    same = parse_term("[{total, 1}, {links, [<a@b.1.0>]}, {x, \"25\"}, {m, #{k => true}}]")
    other = parse_term("[{total, 1}, {links, []}, {x, \"pyotp\"}, {m, #{k => false}}]")
    assert compatible(same, other) is None
    assert compatible(parse_term("{ok, 1}"), parse_term("{error, 1}"))
    assert compatible(parse_term("[{total, 1}]"), parse_term("[{total, 1}, {ets, 2}]"))
    assert compatible(parse_term("{1, 2}"), parse_term("{1, 2, 3}"))
    assert compatible(parse_term("#{a => 1}"), parse_term("#{b => 1}"))
    assert compatible(parse_term("1"), parse_term("a"))


# ---------------------------------------------------------------------------------------
# item 1: the same erl_call commands against a pyotp node and a BEAM node

APPLY_CALLS = [
    "erlang node []",
    "erlang nodes []",
    "erlang nodes [connected]",
    "erlang nodes [[visible,hidden]]",
    "erlang is_alive []",
    "erlang whereis [rex]",
    "erlang whereis [no_such_name]",
    "erlang registered []",
    "erlang processes []",
    "erlang memory []",
    "erlang memory [total]",
    "erlang memory [[total,processes]]",
    "erlang system_info [process_count]",
    "erlang system_info [process_limit]",
    "erlang system_info [otp_release]",
    "erlang system_info [schedulers]",
    "erlang statistics [run_queue]",
    "erlang statistics [reductions]",
    "erlang statistics [wall_clock]",
    "erlang statistics [runtime]",
    "global registered_names []",
    "global whereis_name [no_such_name]",
    "application which_applications []",
    "net_adm ping [nonode@nohost]",
    "erlang no_such_function [1]",
    "erlang node [1,2]",
    "erlang whereis [1]",
    "erlang system_info [no_such_item]",
]

# evaluated on the BEAM node with N bound to the node under test: the calls whose
# arguments erl_call -a cannot write (pids)
EXPR_CALLS = """
R = fun(M, F, A) -> rpc:call(N, M, F, A) end,
Rex = R(erlang, whereis, [rex]),
{group_leader, GL} = R(erlang, process_info, [Rex, group_leader]),
[R(erlang, node, [Rex]),
 R(erlang, process_info, [Rex]),
 R(erlang, process_info, [Rex, status]),
 R(erlang, process_info, [Rex, registered_name]),
 R(erlang, process_info, [GL, registered_name]),
 R(erlang, process_info, [Rex, [status, memory, registered_name, links, monitors,
                                message_queue_len, reductions, messages, trap_exit,
                                current_function, initial_call, dictionary, monitored_by,
                                group_leader, heap_size, total_heap_size]]),
 R(erlang, process_info, [Rex, no_such_item]),
 R(erlang, net_adm, [])].
"""


@pytest.mark.erlang
def test_erl_call_gets_beam_shapes_from_a_pyotp_node():
    beam = ErlNode("beam", 'io:format("@@ready~n").').start()
    py = RunProc("py").start()
    try:
        beam.expect("ready")
        for call in APPLY_CALLS:
            got = parse_term(erl_call(py.name, apply=call))
            want = parse_term(erl_call(beam.name, apply=call))
            diff = compatible(got, want, call)
            assert diff is None, "%s\npyotp: %r\nBEAM:  %r" % (diff, got, want)
        # node names normalised, an unknown function fails exactly as on BEAM
        assert (erl_call(py.name, apply="erlang no_such_function [abc]")
                == erl_call(beam.name, apply="erlang no_such_function [abc]")
                == "{badrpc, {'EXIT', {undef, [{erlang, no_such_function, [abc], []}]}}}")
        assert erl_call(py.name, apply="erlang node []").strip("'") == py.name
        assert erl_call(py.name, apply="erlang system_info [otp_release]") == '"pyotp-%s"' % pyotp.__version__
        # both know each other
        assert erl_call(py.name, apply="net_adm ping ['%s']" % beam.name) == "pong"
        assert erl_call(beam.name, apply="net_adm ping ['%s']" % py.name) == "pong"
        assert "ops_app" in erl_call(py.name, apply="application which_applications []")
        got = parse_term(erl_call(beam.name, expr="N = '%s', %s" % (py.name, EXPR_CALLS)))
        want = parse_term(erl_call(beam.name, expr="N = '%s', %s" % (beam.name, EXPR_CALLS)))
        assert got[0] == want[0] == "ok"
        diff = compatible(got[1], want[1], "process_info")
        assert diff is None, "%s\npyotp: %r\nBEAM:  %r" % (diff, got[1], want[1])
        assert len(got[1]) == len(want[1])
        # Erlang's spawn(Node, M, F, A) (a SPAWN_REQUEST of the function itself) too
        spawn = ("{_, R} = spawn_monitor('%s', erlang, whereis, [rex]), "
                 "receive {'DOWN', R, process, _, Why} -> Why end.\n")
        assert erl_call(beam.name, expr=spawn % py.name) == erl_call(beam.name, expr=spawn % beam.name) \
            == "{ok, normal}"
        for g, w in zip(got[1], want[1]):
            # each result is the same kind of term, item for item (a list of pairs keeps
            # BEAM's keys and order)
            if isinstance(w, list) and w and isinstance(w[0], tuple):
                assert [x[0] for x in g] == [x[0] for x in w]
    finally:
        py.kill()
        beam.kill()


async def role_idle():
    from dist_helpers import emit
    emit("ready", "")
    await pyotp.receive(lambda m: False)


@pytest.mark.erlang
def test_beam_calls_obey_rpc_allow():
    with NodeProc("ra", role="test_operations:role_idle", rpc_allow=["os"]) as n:
        n.expect("ready")
        out = erl_call(n.name, apply="erlang node []")
        assert out.startswith("{badrpc, {'EXIT', {{not_allowed, erlang}"), out
        assert erl_call(n.name, apply="os getpid []") == str(n.proc.pid)


# ---------------------------------------------------------------------------------------
# the handlers in-process (pyotp peers get the same answers)

@pytest.mark.pyotp
async def test_handlers_in_process():
    me = pyotp.self()
    info = beam_api.lookup("erlang", "process_info", [me])(me)
    assert [k for k, _ in info][:3] == ["current_function", "initial_call", "status"]
    assert dict(info)["status"] == "running"
    assert beam_api.lookup("erlang", "process_info", [me, "status"])(me, "status") == ("status", "running")
    assert beam_api.lookup("erlang", "process_info", [me, []])(me, ["registered_name"]) == [("registered_name", [])]
    assert beam_api.HANDLERS[("erlang", "whereis", 1)]("no_such") == "undefined"
    assert beam_api.HANDLERS[("erlang", "is_alive", 0)]() is False
    total, procs = beam_api.HANDLERS[("erlang", "memory", 1)](["total", "processes"])
    assert total[1] >= procs[1] > 0
    assert beam_api.lookup("erlang", "node", [1, 2]) is None        # node/2: undef
    with pytest.raises(pyotp.Exit) as e:
        beam_api.HANDLERS[("erlang", "system_info", 1)]("bogus")
    assert e.value.reason == ("badarg", [("erlang", "system_info", ["bogus"], [])])
    with pytest.raises(pyotp.Exit) as e:
        beam_api.HANDLERS[("erlang", "memory", 1)](["total", "nope"])
    assert e.value.reason[0] == "badarg"


# ---------------------------------------------------------------------------------------
# rpc and stop from the command line; init:stop and halt

@pytest.mark.erlang
def test_cli_rpc_exit_codes(tmp_path):
    with RunProc("cr") as n:
        (tmp_path / ".erlang.cookie").write_text(COOKIE + "\n")
        r = pyotp_cli("rpc", n.name, "erlang", "node", home=str(tmp_path))   # cookie from the file
        assert (r.returncode, r.stdout) == (0, "Atom(%r)\n" % n.name), r
        r = pyotp_cli("rpc", n.name, "erlang", "whereis", "worker_first", "--cookie", COOKIE)
        assert r.returncode == 0 and r.stdout.startswith("#PID<"), r
        r = pyotp_cli("rpc", n.name, "erlang", "no_such", "--cookie", COOKIE)
        assert r.returncode == 1 and "undef" in r.stderr, r
        r = pyotp_cli("rpc", n.name, "operator", "add", "2", "40", "--cookie", COOKIE)
        assert (r.returncode, r.stdout) == (0, "42\n"), r
        r = pyotp_cli("rpc", unique("gone"), "erlang", "node", "--cookie", COOKIE)
        assert r.returncode == 1 and "nodedown" in r.stderr, r
        r = pyotp_cli("rpc", n.name, "erlang", "node", "--cookie", "wrong-cookie")
        assert r.returncode == 1 and "nodedown" in r.stderr, r
        r = pyotp_cli("rpc", "no-at-sign", "erlang", "node", "--cookie", COOKIE)
        assert r.returncode == 2 and "name@host" in r.stderr, r


def test_cli_over_tls(tmp_path):
    """A node run with --tls-* is reached by rpc/stop given the same files, not without."""
    from test_dist_epmd_tls import _make_certs
    tls = _make_certs(tmp_path)
    opts = ["--tls-certfile", tls["certfile"], "--tls-keyfile", tls["keyfile"],
            "--tls-cafile", tls["cafile"]]
    n = RunProc("tl", opts).start()
    try:
        r = pyotp_cli("rpc", n.name, "erlang", "whereis", "worker_third", "--cookie", COOKIE, *opts)
        assert r.returncode == 0 and r.stdout.startswith("#PID<"), r
        r = pyotp_cli("rpc", n.name, "erlang", "node", "--cookie", COOKIE, "--timeout", "5")
        assert r.returncode == 1 and "nodedown" in r.stderr, r
        r = pyotp_cli("stop", n.name, "--cookie", COOKIE, *opts)
        assert r.returncode == 0, r
        _assert_stopped_in_order(n, "init:stop")
    finally:
        n.kill()


def _assert_stopped_in_order(n: NodeProc, how: str) -> None:
    assert n.wait() == 0
    out = "".join(n.log)
    lines = [x for x in out.splitlines() if x.startswith(("terminated", "pyotp: stopped"))]
    assert lines == ["terminated third shutdown", "terminated second shutdown",
                     "terminated first shutdown",
                     "pyotp: stopped ops_app (%s; stopped ops_app)" % how], out


@pytest.mark.erlang
def test_init_stop_from_erl_call_runs_the_shutdown():
    n = RunProc("is").start()
    try:
        assert erl_call(n.name, apply="init stop []") == "ok"
        _assert_stopped_in_order(n, "init:stop")
    finally:
        n.kill()


@pytest.mark.erlang
def test_cli_stop_runs_the_shutdown():
    n = RunProc("cs").start()
    try:
        r = pyotp_cli("stop", n.name, "--cookie", COOKIE)
        assert r.returncode == 0, r
        _assert_stopped_in_order(n, "init:stop")
    finally:
        n.kill()
    r = pyotp_cli("stop", n.name, "--cookie", COOKIE)
    assert r.returncode == 1 and "cannot connect" in r.stderr, r


@pytest.mark.erlang
def test_halt_stops_then_exits_with_the_status():
    n = RunProc("ht").start()
    try:
        erl_call(n.name, apply="erlang halt [3]")
        assert n.wait() == 3
        assert "pyotp: stopped ops_app (halt(3); stopped ops_app)" in "".join(n.log)
        assert "terminated first shutdown" in "".join(n.log)
    finally:
        n.kill()


@pytest.mark.erlang
def test_init_stop_ends_a_plain_pyotp_run_node():
    """A node whose main does not await Application.await_system_stop(): init:stop ends
    main with reason shutdown and pyotp.run returns normally."""
    with NodeProc("pr", role="test_operations:role_idle") as n:
        n.expect("ready")
        assert erl_call(n.name, apply="init stop []") == "ok"
        assert n.wait() == 0
        assert "crashed" not in "".join(n.log)


# ---------------------------------------------------------------------------------------
# the console, under a pseudo-terminal

def _remsh(node: str, home: Any, cookie: str = COOKIE) -> Any:
    try:
        import pexpect
    except ImportError:
        raise AssertionError("the console tests drive a pty with pexpect: pip install pexpect "
                             "(it is in the test extras)") from None
    env = child_env({"HOME": str(home)})     # the history file goes there
    c = pexpect.spawn(sys.executable, ["-m", "pyotp", "remsh", node, "--cookie", cookie],
                      env=env, encoding="utf-8", timeout=WAIT, dimensions=(24, 200))
    return c


@pytest.mark.erlang
def test_remsh_console(tmp_path):
    import pexpect
    with RunProc("rc", ["--console"]) as n:
        c = _remsh(n.name, tmp_path)
        c.expect(r"console on %s" % re.escape(n.name))
        c.expect(">>> ")
        # define a function (a compound statement over several lines)
        c.sendline("def double(x):")
        c.expect(r"\.\.\. ")
        c.sendline("    return 2 * x")
        c.expect(r"\.\.\. ")
        c.sendline("")
        c.expect(">>> ")
        c.sendline("double(21)")
        c.expect("\r\n42\r\n")
        c.expect(">>> ")
        # call a GenServer of the running application
        c.sendline("await GenServer.call('worker_second', 'tag')")
        c.expect("'second'")
        c.expect(">>> ")
        # await a receive in the statement's own process
        c.sendline("pyotp.send(pyotp.self(), ('hello', 7)); await pyotp.receive()")
        c.expect(r"\('hello', 7\)")
        c.expect(">>> ")
        # Ctrl-C out of a long sleep: the node says when the statement is running
        c.sendline("import sys; sys.stdout.write('SLEEPING\\n'); sys.stdout.flush(); "
                   "await asyncio.sleep(3600); woke = True")
        n.wait_log("SLEEPING")
        c.sendintr()
        c.expect("KeyboardInterrupt")
        c.expect(">>> ")
        c.sendline("'woke' in dir(), double(5)")
        c.expect(r"\(False, 10\)")
        c.expect(">>> ")
        # errors come back as tracebacks, print output comes back, the session lives on
        c.sendline("print('out', 1); 1 / 0")
        c.expect("out 1")
        c.expect("ZeroDivisionError")
        c.expect(">>> ")
        # completion from the node's namespace
        c.send("doub\t")
        c.expect("double")
        c.sendline("1)")      # rlcompleter completes a callable with "("
        c.expect("\r\n2\r\n")
        c.expect(">>> ")
        # Ctrl-D leaves without touching the node
        c.sendeof()
        c.expect(pexpect.EOF)
        c.close()
        assert c.exitstatus == 0
        assert n.proc is not None and n.proc.poll() is None
        r = pyotp_cli("rpc", n.name, "erlang", "whereis", "worker_first", "--cookie", COOKIE)
        assert r.returncode == 0, r
        assert "double(21)" in (tmp_path / ".pyotp_remsh_history").read_text()


@pytest.mark.erlang
def test_remsh_leaves_when_the_node_goes_away(tmp_path):
    import pexpect
    with RunProc("rl", ["--console"]) as n:
        c = _remsh(n.name, tmp_path)
        c.expect(">>> ")
        c.sendline("import sys; sys.stdout.write('SLEEPING\\n'); sys.stdout.flush(); "
                   "await asyncio.sleep(3600)")
        n.wait_log("SLEEPING")
        n.kill()
        c.expect("lost the console")
        c.expect(pexpect.EOF)
        c.close()
        assert c.exitstatus == 1


@pytest.mark.erlang
def test_remsh_refused_without_console(tmp_path):
    import pexpect
    with RunProc("rn") as n:
        c = _remsh(n.name, tmp_path)
        c.expect("does not run the console service")
        c.expect(pexpect.EOF)
        c.close()
        assert c.exitstatus == 1
        assert n.proc is not None and n.proc.poll() is None


def test_remsh_needs_a_cookie(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pyotp", "remsh", "x@127.0.0.1"],
                       env=child_env({"HOME": str(tmp_path)}), capture_output=True, text=True,
                       timeout=WAIT)
    assert r.returncode == 2 and ".erlang.cookie" in r.stderr, r


def test_parse_arg():
    from pyotp.remsh import parse_arg
    assert parse_arg("rex") == "rex" and type(parse_arg("rex")) is Atom
    assert parse_arg("42") == 42 and parse_arg("'rex'") == "rex" and type(parse_arg("'rex'")) is str
    assert parse_arg("[1, 'a']") == [1, "a"]


def test_console_flags_need_a_name():
    r = pyotp_cli("run", "ops_apps:OpsApp", "--console")
    assert r.returncode == 2 and "--name" in r.stderr, r

