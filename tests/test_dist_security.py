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
                await rpc.call(me, "erlang", "node", []))
    assert run(main) == (120, True, None, undef("erlang", "node", []))


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
