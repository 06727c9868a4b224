"""Python payloads that misbehave, between two pyotp nodes (python payloads configured on
both, explicitly):

- an encoder that calls back into the node while its message is being encoded (a
  ``__reduce__`` that disconnects, flushes or sends on the same connection): that send
  fails with an exception, the connection's send buffer stays consistent, what was queued
  before it is delivered in order and the node keeps working (it used to crash the
  interpreter, or desynchronise the stream silently);
- an out-of-band buffer received in a small frame owns its memory (it used to be a view
  of the shared receive buffer, overwritten by the next frames).

The scenarios that used to crash run in child nodes (a crash must fail the test, not kill
pytest); the peer "b" runs for the whole module.
"""
from __future__ import annotations

import ast
import pickle
import struct

import pytest

import pyotp
from pyotp import GenServer
from pyotp.dist import Node, run_node
from pyotp.etf import Atom, encode_term_into
from dist_helpers import COOKIE, NodeProc, emit, unique

PY = {"python_payloads": ["test_dist_payload_safety"]}   # its Holder and CallsBack classes


@pytest.fixture(scope="module")
def peer():
    with NodeProc("b", role="dist_roles:role_peer", **PY) as b:
        b.expect("ready")
        yield b


class CallsBack:
    """Pickling it runs `mode` against the connection to `peer` first."""

    def __init__(self, peer: str, mode: str) -> None:
        self.peer = peer
        self.mode = mode

    def __reduce__(self):
        from pyotp.dist.node import kernel
        if self.mode == "disconnect":
            Node.disconnect(self.peer)
        elif self.mode == "flush":
            kernel().conns[self.peer].ch.flush_now()
        elif self.mode == "send":
            pyotp.send(("echo", self.peer), ("$gen_cast", "inner"))
        return (str, ("reduced-" + self.mode,))


async def role_reentry(peer: str, mode: str) -> None:
    assert await Node.ping(peer) == "pong"
    # about 1 MB queued on the connection, not written yet (the flush is at the end of
    # this loop turn)
    for i in range(1000):
        GenServer.cast(("echo", peer), ("q", mode, i, b"x" * 1000))
    try:
        pyotp.send(("echo", peer), ("$gen_cast", CallsBack(peer, mode)))
        outcome = "sent"
    except Exception as e:
        outcome = "%s: %s" % (type(e).__name__, e)
    # the node still serves that peer (reconnecting after a disconnect), in sync
    casts = await GenServer.call(("echo", peer), "casts", timeout=10)
    mine = [c for c in casts if type(c) is tuple and c[:2] == ("q", mode)]
    rest = [c for c in casts if type(c) is str]
    emit("result", repr((outcome, [c[2] for c in mine] == list(range(1000)),
                         all(c[3] == b"x" * 1000 for c in mine), rest)))
    again = await GenServer.call(("echo", peer), "after", timeout=10)
    emit("after", repr(again[:2]))


def _reentry(peer, mode):
    with NodeProc("a", role="test_dist_payload_safety:role_reentry", args=[peer.name, mode],
                  **PY) as a:
        outcome, in_order, intact, rest = ast.literal_eval(a.expect("result"))
        assert ast.literal_eval(a.expect("after")) == ("echo", "after")
        assert a.proc.poll() is None          # alive
    return outcome, in_order, intact, rest


def test_disconnect_from_an_encoder_fails_that_send_and_loses_nothing_queued(peer):
    outcome, in_order, intact, rest = _reentry(peer, "disconnect")
    assert outcome.startswith("RuntimeError") and "closed while a message" in outcome
    assert in_order and intact          # the 1000 frames queued before went out first
    assert "reduced-disconnect" not in rest


def test_flush_from_an_encoder_keeps_the_stream_in_sync(peer):
    outcome, in_order, intact, rest = _reentry(peer, "flush")
    assert outcome == "sent"
    assert in_order and intact
    assert rest[-1:] == ["reduced-flush"]     # after the queued ones, decoded intact


def test_send_from_an_encoder_fails_both_sends_cleanly(peer):
    outcome, in_order, intact, rest = _reentry(peer, "send")
    assert "re-entrant use of the connection" in outcome
    assert in_order and intact
    assert "inner" not in rest and "reduced-send" not in rest


# ---------------------------------------------------------------------------------------
# out-of-band buffers


class Holder:
    """Keeps the very buffer object pickle hands its reconstructor (as numpy does)."""

    def __init__(self, buf):
        self.buf = buf

    def __reduce_ex__(self, protocol):
        return (Holder, (pickle.PickleBuffer(self.buf),))


async def oob_sender(to, to_node):
    """On b: a SEND of a Holder whose buffer travels out of band, in a small frame (a
    frame b would only build this way for a 64 KiB buffer), then, once `to` has it,
    frames that reuse the receiver's buffer."""
    from pyotp.dist.node import kernel
    bufs = []
    payload = pickle.dumps(Holder(bytearray(b"A" * 100)), protocol=5,
                           buffer_callback=lambda pb: bufs.append(bytes(pb.raw())) or False)
    frame = bytearray(b"\0\0\0\0p")
    encode_term_into(frame, (2, Atom(""), to))
    encode_term_into(frame, (Atom("$pyotp"), 2, payload, bufs))
    struct.pack_into(">I", frame, 0, len(frame) - 4)
    conn = kernel().conns[to_node]
    conn.ch.flush_now()
    conn.transport.write(bytes(frame))
    assert await pyotp.receive() == "got it"
    for i in range(20):
        pyotp.send(to, ("fill", i, b"Z" * len(frame)))


def test_out_of_band_buffer_from_a_small_frame_owns_its_memory(peer):
    async def main():
        me = pyotp.self()
        pid = await Node.spawn(peer.name, oob_sender, me, Node.self())
        h = await pyotp.receive(lambda m: isinstance(m, Holder), timeout=10)
        before = bytes(h.buf)
        pyotp.send(pid, "got it")
        for i in range(20):
            assert (await pyotp.receive(timeout=10))[:2] == ("fill", i)
        return before, bytes(h.buf)

    before, after = run_node(main, node=unique("a"), cookie=COOKIE, **PY)
    assert before == b"A" * 100
    assert after == before


ENCODE_INTO_RESIZE = r'''
from pyotp.etf import encode_term_into
buf = bytearray(b"p" * 10)

class Grows:
    def __reduce__(self):
        buf.extend(b"x" * 1_000_000)     # would move the storage the encoder writes into
        return (str, ("a",))

try:
    encode_term_into(buf, [b"y" * 100, Grows(), b"z" * 100_000], python=True)
    print("encoded")
except Exception as e:
    print(type(e).__name__, type(e.__cause__).__name__, bytes(buf) == b"p" * 10)
'''


def test_encode_term_into_target_cannot_be_resized_by_the_encoder():
    import subprocess
    import sys
    from pathutil import child_pythonpath
    import os
    proc = subprocess.run([sys.executable, "-c", ENCODE_INTO_RESIZE], capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=child_pythonpath()))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["TypeError", "BufferError", "True"]
