"""The atom cache and fragmented messages against real peers (issue 14 item 8): an OTP 25
node and a pyotp node negotiate DIST_HDR_ATOM_CACHE and FRAGMENTS, BEAM sends pyotp its
atoms through the cache and its 100 MB messages in fragments, pyotp sends BEAM 100 MB
in fragments, and every term round-trips equal (``=:=``). Two pyotp nodes fragment their
big messages between each other too. Byte-level cases: tests/distribution/test_dist_header_bytes.py."""
from __future__ import annotations

import asyncio

import pytest

import pyotp
from pyotp import _core
from pyotp.dist import Node, run_node
from pyotp.dist.kernel import kernel
from pyotp.etf import Atom
from dist_helpers import COOKIE, ErlNode, NodeProc, emit, unique

N_ATOMS = 300
BIG_WORDS = 25_000_000                 # <<1,2,3,4>> repeated: 100 MB


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def _echo():
    while True:
        frm, term = await pyotp.receive()
        pyotp.send(frm, (Atom("echoed"), term))


BEAM_SIDE = r'''
P = list_to_atom("%s"),
true = net_kernel:connect_node(P),
Atoms = [list_to_atom("hdr_atom_" ++ integer_to_list(I)) || I <- lists:seq(1, %d)],
Big = {big, binary:copy(<<1,2,3,4>>, %d), Atoms},
Echo = fun(T) -> {echo, P} ! {self(), T},
                 receive {echoed, B} -> B =:= T after 60000 -> timeout end end,
X = 5,
io:format("@@small ~p~n", [Echo({hello, [1, 2.5, <<"bin">>], #{a => true, b => nil}})]),
io:format("@@atoms ~p~n", [Echo(Atoms)]),
io:format("@@atoms_again ~p~n", [Echo({again, lists:reverse(Atoms)})]),
io:format("@@fun ~p~n", [Echo({f, fun(S) -> S + X end})]),
io:format("@@big ~p~n", [Echo(Big)]),
register(cmp, self()),
io:format("@@cmp_ready ok~n"),
receive {From, T} -> From ! {eq, T =:= Big} after 60000 -> io:format("@@cmp timeout~n") end,
receive stop -> ok after 60000 -> ok end,
halt().
'''


@pytest.mark.erlang
def test_beam_and_pyotp_exchange_100mb_and_many_atoms_through_the_cache():
    me = unique("py")

    async def main():
        pyotp.register("echo", pyotp.spawn(_echo))
        erl = ErlNode("hdr", BEAM_SIDE % (me, N_ATOMS, BIG_WORDS)).start()
        try:
            out = {t: await in_thread(erl.expect, t, 120)
                   for t in ["small", "atoms", "atoms_again", "fun", "big", "cmp_ready"]}
            # pyotp builds the same 100 MB term and sends it: BEAM compares it with its own
            big = (Atom("big"), bytes([1, 2, 3, 4]) * BIG_WORDS,
                   [Atom("hdr_atom_%d" % i) for i in range(1, N_ATOMS + 1)])
            pyotp.send(("cmp", erl.name), (pyotp.self(), big))
            out["pyotp_big"] = await pyotp.receive(timeout=120)
            conn = kernel().conns[erl.name]
            out["stats"] = _core._dist_header_stats(conn.ch)
            return out
        finally:
            erl.kill()
    out = run_node(main, node=me, cookie=COOKIE)
    st = out.pop("stats")
    assert out == {"small": "true", "atoms": "true", "atoms_again": "true", "fun": "true",
                   "big": "true", "cmp_ready": "ok", "pyotp_big": (Atom("eq"), True)}
    # BEAM put its atoms in the cache once, then referred to them: cache hits
    assert st["cache_new_in"] >= N_ATOMS
    assert st["cache_refs_in"] - st["cache_new_in"] >= N_ATOMS      # (at most 255 refs a frame)
    # the 100 MB messages travelled in fragments both ways
    assert st["fragmented_msgs_in"] >= 1 and st["fragments_in"] >= BIG_WORDS * 4 // 65536
    assert st["fragmented_msgs_out"] >= 2 and st["fragments_out"] >= 2 * BIG_WORDS * 4 // 65536
    assert st["reassembling"] == 0 and st["reassembly_bytes"] == 0


async def role_echo():
    pyotp.register("echo", pyotp.spawn(_echo))
    emit("ready", Node.self())
    await pyotp.receive(lambda m: m == "stop")


async def _small_sender(dest, n, report):
    for i in range(n):
        pyotp.send(dest, (report, ("small", i)))      # echoed to report
    pyotp.send(report, "sent")


def test_pyotp_nodes_fragment_big_messages_and_keep_each_senders_order():
    async def main():
        b = NodeProc("hdrb", role="test_dist_header:role_echo").start()
        try:
            await in_thread(b.expect, "ready")
            dest = ("echo", b.name)
            blob = bytes(range(256)) * (40 << 12)             # 40 MiB
            me = pyotp.self()
            pyotp.send(dest, (me, ("big", blob)))
            pyotp.send(dest, (me, "after big"))               # same sender: after the big one
            pyotp.spawn(_small_sender, dest, 3, me)           # another sender
            got = [await pyotp.receive(timeout=60) for _ in range(6)]
            st = _core._dist_header_stats(kernel().conns[b.name].ch)
            return got, blob, st
        finally:
            b.kill()
    got, blob, st = run_node(main, node=unique("a"), cookie=COOKIE)
    msgs = [m for m in got if m != "sent"]
    echoed = [m[1] for m in msgs]
    assert ("big", blob) in echoed
    assert echoed.index(("big", blob)) + 1 == echoed.index("after big")
    assert [m for m in echoed if type(m) is tuple and m[0] == "small"] == [("small", i) for i in range(3)]
    assert st["fragmented_msgs_out"] == 1 and st["fragmented_msgs_in"] == 1
    assert st["cache_refs_in"] == 0          # pyotp sends no cache refs
