"""Security rules of distribution (docs/distribution.md, "Security"): what an rpc may run
(a module's own functions, never a walk through its attributes), Python payloads (off
unless both nodes configure them, decoded by a restricted unpickler).

Every bypass tried here would create a marker file; the tests check the file is absent
after the node has answered (or logged) the refusal.
"""
from __future__ import annotations

import os

import pytest

import pyotp
from pyotp import GenServer
from pyotp.dist import DistError, Node, rpc, run_node
from dist_helpers import COOKIE, ErlNode, NodeProc, require_erl, unique


def run(main, *args, **kw):
    return run_node(main, *args, node=unique("a"), cookie=COOKIE, **kw)


def undef(m, f, args):
    return ("badrpc", ("EXIT", ("undef", [(m, f, args, [])])))


def bypasses(marker):
    """(module, function, args) triples that ran code (or read files) before the fix."""
    code = "open(%r, 'w').write('pwned')" % marker
    return [
        ("json", "codecs.builtins.exec", [code]),
        ("sec_roles", "os.system", ["touch " + marker]),
        ("sec_roles", "system", ["touch " + marker]),          # imported into sec_roles
        ("json", "__loader__.get_data", ["/etc/hostname"]),
        ("json", "__loader__", []),
        ("sec_roles", "__builtins__", []),
        ("sec_roles", "_private", [1]),
        ("json", "codecs", []),                                  # an imported module
        ("json", "", []),
    ]


# ---------------------------------------------------------------------------------------
# rpc: the function must be the module's own


@pytest.fixture(scope="module")
def guarded():
    with NodeProc("b", role="sec_roles:role_allow", rpc_allow=["json", "sec_roles"]) as b:
        b.expect("ready")
        yield b


def test_rpc_call_refuses_attribute_walks(guarded, tmp_path):
    marker = str(tmp_path / "marker")

    async def main():
        n = guarded.name
        out = [await rpc.call(n, m, f, a) for m, f, a in bypasses(marker)]
        ok = await rpc.call(n, "sec_roles", "safe_add", [2, 3])
        dumps = await rpc.call(n, "json", "dumps", [[1]])
        refused = await rpc.call(n, "os", "system", ["touch " + marker])
        return out, ok, dumps, refused
    out, ok, dumps, refused = run(main)
    assert out == [undef(m, f, a) for m, f, a in bypasses(marker)]
    assert (ok, dumps) == (5, "[1]")
    assert refused == ("badrpc", ("EXIT", (("not_allowed", "os"), [])))
    assert not os.path.exists(marker)


def test_rpc_multicall_and_local_call_refuse_walks(guarded, tmp_path):
    marker = str(tmp_path / "marker")

    async def main():
        nodes = [guarded.name, Node.self()]
        out = [await rpc.multicall(nodes, m, f, a) for m, f, a in bypasses(marker)]
        return out
    out = run(main, rpc_allow=["json", "sec_roles"])
    for (m, f, a), (good, bad) in zip(bypasses(marker), out):
        assert good == [undef(m, f, a), undef(m, f, a)] and bad == []
    assert not os.path.exists(marker)


def test_rpc_cast_refuses_walks(guarded, tmp_path):
    marker = str(tmp_path / "marker")

    async def main():
        n = guarded.name
        assert await Node.connect(n)
        for m, f, a in bypasses(marker)[:3]:
            assert rpc.cast(n, m, f, a) is True
        # the casts went out before this call on the same connection
        return await rpc.call(n, "sec_roles", "safe_add", [1, 1])
    assert run(main) == 2
    # the peer logs each refused cast; nothing ran
    for m, f, _a in bypasses(marker)[:3]:
        guarded.wait_log("rpc cast %s:%s failed: Atom('undef')" % (m, f))
    assert not os.path.exists(marker)


def test_remote_spawn_refuses_walks(guarded, tmp_path):
    marker = str(tmp_path / "marker")

    async def main():
        reasons = []
        for m, f, a in bypasses(marker)[:4]:
            pid, ref = await Node.spawn_monitor(guarded.name, (m, f), *a)
            down = await pyotp.receive(lambda x: type(x) is tuple and x[0] == "DOWN" and x[1] == ref,
                                       timeout=10)
            reasons.append(down[4])
        with pytest.raises(DistError, match="undef"):
            await Node.spawn(Node.self(), ("json", "codecs.builtins.exec"), "1")
        return reasons
    reasons = run(main, rpc_allow=["json", "sec_roles"])
    assert reasons == [("undef", [(m, f, a, [])]) for m, f, a in bypasses(marker)[:4]]
    assert not os.path.exists(marker)


def test_rpc_builtin_functions_stay_callable():
    """C functions count as their module's own (``math.factorial``), and names a module
    exports in ``__all__`` are callable (``os.getpid`` is ``posix.getpid``)."""
    async def main():
        me = Node.self()
        return (await rpc.call(me, "math", "factorial", [5]),
                await rpc.call(me, "os", "getpid", []) == os.getpid(),
                await rpc.call(me, "pyotp", "whereis", ["nobody"]),
                await rpc.call(me, "erlang", "node", []) == me,      # beam_api answers it
                await rpc.call(me, "erlang", "no_such_function", []))
    assert run(main) == (120, True, None, True, undef("erlang", "no_such_function", []))


@pytest.mark.erlang
def test_erlang_rpc_erpc_spawn_refuse_walks(tmp_path):
    require_erl()
    marker = str(tmp_path / "marker")
    me = unique("py")
    script = r'''
P = list_to_atom("%(me)s"),
Code = <<"open('%(marker)s', 'w').write('pwned')">>,
io:format("@@rpc ~w~n", [rpc:call(P, json, 'codecs.builtins.exec', [Code], 5000)]),
io:format("@@rpc2 ~w~n", [rpc:call(P, sec_roles, 'os.system', [<<"touch %(marker)s">>], 5000)]),
io:format("@@rpc3 ~w~n", [rpc:call(P, sec_roles, system, [<<"touch %(marker)s">>], 5000)]),
io:format("@@erpc ~w~n", [catch erpc:call(P, json, '__loader__.get_data', [<<"/etc/hostname">>], 5000)]),
{_Pid, Ref} = spawn_monitor(P, json, 'codecs.builtins.exec', [Code]),
receive {'DOWN', Ref, process, _, Why} -> io:format("@@spawn ~w~n", [Why]) after 5000 -> io:format("@@spawn timeout~n") end,
io:format("@@node ~w~n", [rpc:call(P, erlang, node, [], 5000)]),
io:format("@@ok ~w~n", [rpc:call(P, sec_roles, safe_add, [1, 2], 5000)]),
halt().
''' % {"me": me, "marker": marker}

    async def in_thread(fn, *args):
        import asyncio
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def main():
        erl = ErlNode("erl", script).start()
        return {tag: await in_thread(erl.expect, tag)
                for tag in ["rpc", "rpc2", "rpc3", "erpc", "spawn", "node", "ok"]}
    out = run_node(main, node=me, cookie=COOKIE, rpc_allow=["json", "sec_roles"])
    assert out["rpc"] == ("{badrpc,{'EXIT',{undef,[{json,'codecs.builtins.exec',[<<%s>>],[]}]}}}"
                          % ",".join(str(b) for b in ("open('%s', 'w').write('pwned')" % marker).encode()))
    assert out["rpc2"].startswith("{badrpc,{'EXIT',{undef,[{sec_roles,'os.system',")
    assert out["rpc3"].startswith("{badrpc,{'EXIT',{undef,[{sec_roles,system,")
    assert out["erpc"].startswith("{'EXIT',{{exception,undef,[{json,'__loader__.get_data',")
    assert out["spawn"].startswith("{undef,[{json,'codecs.builtins.exec',")
    assert out["node"] == "{badrpc,{'EXIT',{{not_allowed,erlang},[]}}}"
    assert out["ok"] == "3"
    assert not os.path.exists(marker)


# ---------------------------------------------------------------------------------------
# Python payloads: off by default, both sides, restricted unpickler


class Evil:
    """Pickles as a call of os.system: unpickling it anywhere runs the command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


def _conn(node):
    from pyotp.dist import node as _node
    return _node._kernel.conns[node]


async def _attack(peer, dest_name, value, force=False):
    """Send ``value`` to ``dest_name`` on ``peer``, pickled (``force``: even though the
    connection did not agree on pickles, as a hostile peer would), and wait until the
    peer drops the connection."""
    Node.monitor_nodes(True)
    assert await Node.connect(peer)
    c = _conn(peer)
    if force:
        c.ch.python = 1
    pyotp.send((dest_name, peer), value)
    down = await pyotp.receive(lambda m: m == ("nodedown", peer), timeout=10)
    Node.monitor_nodes(False)
    return down, c.close_reason


@pytest.fixture(scope="module")
def peer_off():
    with NodeProc("boff", role="dist_roles:role_peer") as b:
        b.expect("ready")
        yield b


@pytest.fixture(scope="module")
def peer_on():
    with NodeProc("bon", role="dist_roles:role_peer", python_payloads=True) as b:
        b.expect("ready")
        yield b


@pytest.fixture(scope="module")
def peer_numpy():
    with NodeProc("bnp", role="dist_roles:role_peer", python_payloads=["numpy"]) as b:
        b.expect("ready")
        yield b


def _log_count(proc, text):
    with proc.cond:
        return sum(text in line for line in proc.log)


def _wait_log_count(proc, text, n):
    """Wait until ``text`` appears in ``n`` lines of the node's output."""
    with proc.cond:
        assert proc.cond.wait_for(lambda: sum(text in line for line in proc.log) >= n, 30), \
            "".join(proc.log)


@pytest.mark.parametrize("dest", ["echo", "nobody_registered_here"])
def test_pickled_os_system_is_refused_and_closes_the_connection(peer_on, tmp_path, dest):
    marker = str(tmp_path / "marker")
    text = "Python payload refused: it names posix.system, which is not in python_payloads"
    before = _log_count(peer_on, text)

    async def main():
        assert await Node.connect(peer_on.name)
        assert _conn(peer_on.name).python        # both sides enabled pickles
        return await _attack(peer_on.name, dest, Evil(marker))
    down, _ = run(main, python_payloads=True)
    assert down == ("nodedown", peer_on.name)
    _wait_log_count(peer_on, text, before + 1)
    assert not os.path.exists(marker)


def test_a_peers_flag_alone_does_not_enable_pickles(peer_off, tmp_path):
    """This node enables Python payloads, the peer does not: no pickles either way; str
    still arrives as str; a hostile node that sends a pickle anyway is disconnected."""
    marker = str(tmp_path / "marker")
    text = "Python payload refused: this node does not accept pickled values"
    before = _log_count(peer_off, text)

    async def main():
        srv = ("echo", peer_off.name)
        reply = await GenServer.call(srv, ("h\u00e9", b"b", (1, 2.5)))
        c = _conn(peer_off.name)
        with pytest.raises(TypeError, match="Python payloads are off on this connection"):
            await GenServer.call(srv, {1, 2})
        flags = (c.pyotp, c.python)
        down = await _attack(peer_off.name, "nobody_registered_here", Evil(marker), force=True)
        return reply, flags, down[0]
    reply, flags, down = run(main, python_payloads=True)
    assert reply[:2] == ("echo", ("h\u00e9", b"b", (1, 2.5))) and type(reply[1][0]) is str
    assert flags == (True, False)
    assert down == ("nodedown", peer_off.name)
    _wait_log_count(peer_off, text, before + 1)
    assert not os.path.exists(marker)


def test_configured_module_round_trips(peer_numpy):
    np = pytest.importorskip("numpy")

    async def main():
        srv = ("echo", peer_numpy.name)
        small = np.arange(10, dtype=np.int32)
        big = np.arange(1 << 15, dtype=np.float64)            # out-of-band buffer
        r = await GenServer.call(srv, [small, big, {1, 2}, KeyError("k")])
        return small, big, r
    small, big, r = run(main, python_payloads=["numpy"])
    got = r[1]
    assert (got[0] == small).all() and got[0].dtype == small.dtype
    assert (got[1] == big).all()
    assert got[2] == {1, 2} and type(got[3]) is KeyError and got[3].args == ("k",)


def test_class_of_an_unconfigured_module_is_refused(peer_numpy):
    from dist_roles import Point
    text = "Python payload refused: it names dist_roles.Point, which is not in python_payloads"
    before = _log_count(peer_numpy, text)

    async def main():
        return await _attack(peer_numpy.name, "echo", Point(1, 2))
    down, _ = run(main, python_payloads=["numpy", "dist_roles"])
    assert down == ("nodedown", peer_numpy.name)
    _wait_log_count(peer_numpy, text, before + 1)


# ---------------------------------------------------------------------------------------
# SafeUnpickler itself (no nodes)


def _global_call(module, name, arg="true"):
    """A protocol-0 pickle that calls module.name(arg) on load."""
    return ("c%s\n%s\n(S'%s'\ntR." % (module, name, arg)).encode()


def test_safe_unpickler_round_trips_the_safe_set():
    import collections
    import datetime
    import decimal
    import pickle
    from pyotp.etf import Atom, BitString, ImproperList, SafeUnpickler
    values = [{1, 2}, frozenset([3]), 1 + 2j, range(1, 9, 2), slice(1, 5), bytearray(b"ab"),
              collections.OrderedDict(a=1), collections.deque([1, 2]),
              collections.defaultdict(list, {"k": [1]}), datetime.datetime(2024, 1, 2, 3, 4, 5),
              datetime.date(2024, 1, 2), datetime.timedelta(seconds=3),
              datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc), decimal.Decimal("1.25"),
              Ellipsis, Atom("ok"), BitString(b"\xff", 3), ImproperList([1], 2)]
    u = SafeUnpickler()
    for v in values:
        assert u.loads(pickle.dumps(v, 5)) == v, v
    for exc in (KeyError("k"), OSError(2, "no"), pyotp.Exit(("shutdown", 1))):
        out = u.loads(pickle.dumps(exc, 5))
        assert type(out) is type(exc) and out.args == exc.args
    assert u.loads(pickle.dumps(pyotp.Exit("why"), 5)).reason == "why"


@pytest.mark.parametrize("module,name", [
    ("os", "system"), ("posix", "system"), ("subprocess", "getoutput"), ("builtins", "eval"),
    ("builtins", "exec"), ("builtins", "getattr"), ("builtins", "__import__"),
    ("builtins", "open"), ("copyreg", "_reconstructor"), ("pyotp._core", "Atom"),
    ("importlib", "import_module"), ("sec_roles", "system"), ("sec_roles", "os"),
    ("sec_roles", "safe_add.__globals__"), ("pyotp.dist.node", "_resolve"),
])
def test_safe_unpickler_refuses(module, name, tmp_path):
    from pyotp.etf import PayloadRefused, SafeUnpickler
    u = SafeUnpickler(["sec_roles", "numpy"])
    with pytest.raises(PayloadRefused, match=r"names %s\.%s" % (module, name.replace(".", r"\."))):
        u.loads(_global_call(module, name, "touch " + str(tmp_path / "marker")))
    assert not (tmp_path / "marker").exists()


def test_safe_unpickler_allows_configured_modules_only():
    from pyotp.etf import PayloadRefused, SafeUnpickler
    import sec_roles
    assert SafeUnpickler(["sec_roles"]).loads(b"csec_roles\nsafe_add\n(I1\nI2\ntR.") == 3
    with pytest.raises(PayloadRefused, match="sec_roles.safe_add, which is not in python_payloads"):
        SafeUnpickler(["sec_rol"]).loads(b"csec_roles\nsafe_add\n(I1\nI2\ntR.")
    with pytest.raises(AttributeError):           # allowed module, missing name: not a refusal
        SafeUnpickler(["sec_roles"]).loads(b"csec_roles\nno_such\n(tR.")
    with pytest.raises(TypeError):
        SafeUnpickler("numpy")
    with pytest.raises(ValueError, match="not a module name"):
        SafeUnpickler(["os.path; rm"])
    assert sec_roles.safe_add(1, 1) == 2
