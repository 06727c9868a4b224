"""Distribution header frames (DFLAG_DIST_HDR_ATOM_CACHE) and fragments (DFLAG_FRAGMENTS)
fed to a connection byte by byte, as an OTP 25 peer makes them: atom cache entries and
refs, long atoms, fragmented messages interleaved per sequence id, malformed headers and
fragments (each closes only its connection), and what the node writes back (header frames
with zero cache refs, big messages cut into fragments between other senders' frames).
The same against real BEAM peers: tests/distribution/test_dist_header.py."""
from __future__ import annotations

import asyncio
import struct
from typing import Any, Dict, List, Optional, Tuple

import pyotp
from pyotp import _core
from pyotp.dist import handshake as hs
from pyotp.dist.kernel import _await_with_timeout, kernel
from pyotp.etf import Atom, Pid, decode_term, term_to_binary
from test_dist_channel_bytes import FakeTransport, Peer, run

HDR = hs.OUR_FLAGS | hs.HEADER_FLAGS     # what an OTP 25 node offers (both header flags)


def bare(term: Any) -> bytes:
    """A term as it follows a distribution header: no version byte."""
    return term_to_binary(term)[1:]


def cref(i: int) -> bytes:
    return b"R" + bytes([i])


def pid_by_ref(node_ref: int, pid: Pid) -> bytes:
    """NEW_PID_EXT whose node atom is an atom cache ref."""
    return b"X" + cref(node_ref) + struct.pack(">III", pid.id, pid.serial, pid.creation)


def refs_header(refs: List[Tuple[int, Any]], long_atoms: bool = False) -> bytes:
    """NumberOfAtomCacheRefs, Flags, AtomCacheRefs for ``refs``: (cache slot, atom text to
    store there, or None for a slot the peer already filled)."""
    n = len(refs)
    if n == 0:
        return b"\x00"
    nibs = [(8 if text is not None else 0) | (slot >> 8) for slot, text in refs] + [1 if long_atoms else 0]
    flags = bytearray(n // 2 + 1)
    for i, nib in enumerate(nibs):
        flags[i // 2] |= nib << (4 * (i & 1))
    out = bytearray([n]) + flags
    for slot, text in refs:
        out.append(slot & 255)
        if text is not None:
            raw = text if isinstance(text, bytes) else text.encode()
            out += struct.pack(">H", len(raw)) if long_atoms else bytes([len(raw)])
            out += raw
    return bytes(out)


def framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def hdr_frame(refs: List[Tuple[int, Optional[str]]], body: bytes, long_atoms: bool = False) -> bytes:
    return framed(b"\x83D" + refs_header(refs, long_atoms) + body)


def frag_frames(seq: int, refs: List[Tuple[int, Optional[str]]], body: bytes, parts: int) -> List[bytes]:
    """``body`` as ``parts`` fragments of sequence ``seq`` (ids counting down to 1)."""
    step = -(-len(body) // parts)
    chunks = [body[i * step:(i + 1) * step] for i in range(parts)]
    out = [framed(b"\x83E" + struct.pack(">QQ", seq, parts) + refs_header(refs) + chunks[0])]
    for k in range(1, parts):
        out.append(framed(b"\x83F" + struct.pack(">QQ", seq, parts - k) + chunks[k]))
    return out


def send_body(to: Pid, msg_bytes: bytes, empty_ref: int = 0, node_ref: int = 1) -> bytes:
    """SEND {2, '', To} (atoms by cache ref) + a bare message."""
    return b"h\x03a\x02" + cref(empty_ref) + pid_by_ref(node_ref, to) + msg_bytes


async def collector(n: int, report: Pid) -> None:
    got = [await pyotp.receive(timeout=10) for _ in range(n)]
    pyotp.send(report, ("got", got))


def stats(p: Peer) -> Dict[str, int]:
    s = _core._dist_header_stats(p.conn.ch)
    assert s is not None
    return s


def test_atom_cache_entries_refs_and_long_atoms():
    long_name = "\u00e9" * 200                       # 400 bytes of UTF-8: a long atom
    async def main():
        p = Peer()
        p.handshake(HDR)
        me = pyotp.self()
        node = str(me.node)
        pid = pyotp.spawn(collector, 4, me)
        # new entries in segments 0, 1, 7 and 2; true/false come back as Python bools
        refs = [(5, ""), (256 + 7, node), (7 * 256 + 255, "hello"), (512, "true")]
        msg = b"h\x03" + cref(2) + cref(3) + b"a\x07"
        p.feed(hdr_frame(refs, send_body(pid, msg)), (1, 5, 7, 9))
        # the same slots, by reference only
        refs2 = [(5, None), (256 + 7, None), (512, None), (7 * 256 + 255, None)]
        p.feed(hdr_frame(refs2, send_body(pid, b"l\x00\x00\x00\x02" + cref(2) + cref(3) + b"j")))
        # a slot overwritten, and a long atom (2-byte lengths)
        refs3 = [(5, None), (256 + 7, None), (7 * 256 + 255, long_name)]
        p.feed(hdr_frame(refs3, send_body(pid, cref(2)), long_atoms=True))
        # inline atoms still work inside a header frame (as BEAM sends past 255 refs)
        p.feed(hdr_frame(refs3[:2], send_body(pid, bare((Atom("inline"), 1)))))
        got = await pyotp.receive(timeout=10)
        return got, stats(p), p.t.aborted
    got, st, aborted = run(main)
    assert got == ("got", [(Atom("hello"), True, 7), [True, Atom("hello")], Atom("\u00e9" * 200),
                           (Atom("inline"), 1)])
    assert st["cache_new_in"] == 5 and st["cache_refs_in"] == 13 and st["header_frames_in"] == 4
    assert not aborted


def test_fragments_interleaved_by_sequence_and_with_rare_operations():
    async def main():
        p = Peer()
        p.handshake(HDR)
        me = pyotp.self()
        pid = pyotp.spawn(collector, 4, me)
        refs = [(1, ""), (2, str(me.node))]
        blob_a = bytes(range(256)) * 1200           # 300 KiB
        blob_b = b"b" * 70000
        fa = frag_frames(11, refs, send_body(pid, bare(("a", blob_a))), 5)
        fb = frag_frames(12, [(1, None), (2, None)], send_body(pid, bare(("b", blob_b))), 3)
        # a one-fragment message, and a small header frame between the fragments
        f1 = frag_frames(13, [(1, None), (2, None)], send_body(pid, bare("one")), 1)
        small = hdr_frame([(1, None), (2, None)], send_body(pid, bare("small")))
        stream = [fa[0], fb[0], fa[1], small, fb[1], fa[2], f1[0], fa[3], fb[2], fa[4]]
        data = b"".join(stream)
        p.feed(data, tuple(range(1000, len(data), 65536 + 3)))
        got = await pyotp.receive(timeout=10)
        # a rare operation in a header frame takes the slow path: LINK, then EXIT
        pyotp.process_flag("trap_exit", True)
        link = b"h\x03a\x01" + pid_by_ref(1, p.pid) + pid_by_ref(0, me)
        p.feed(hdr_frame([(5, str(me.node)), (6, p.name)], link))
        ex = b"h\x04a\x03" + pid_by_ref(1, p.pid) + pid_by_ref(0, me) + cref(2)
        p.feed(hdr_frame([(5, None), (6, None), (7, "boom")], ex))
        exit_msg = await pyotp.receive(timeout=10)
        return got, exit_msg, stats(p), p.t.aborted, blob_a, blob_b
    got, exit_msg, st, aborted, blob_a, blob_b = run(main)
    assert got == ("got", [b"small", b"one", (b"b", blob_b), (b"a", blob_a)])
    assert exit_msg[0] == "EXIT" and exit_msg[2] == "boom"
    assert st["fragmented_msgs_in"] == 3 and st["fragments_in"] == 9
    assert st["reassembling"] == 0 and st["reassembly_bytes"] == 0
    assert not aborted


def _bad_cases(me: Pid) -> Dict[str, List[bytes]]:
    node = str(me.node)
    ok = [(1, ""), (2, node)]
    body = send_body(me, bare("x"))
    return {
        "ref beyond the header's refs": [hdr_frame(ok, b"h\x03a\x02" + cref(9) + pid_by_ref(1, me) + bare(1))],
        "ref to an empty cache slot": [hdr_frame([(1, ""), (300, None)], body)],
        "truncated header": [framed(b"\x83D\x05\x88")],
        "bad utf-8 in a new entry": [hdr_frame([(1, b"\xc3\x28")], body)],
        "unknown header type": [framed(b"\x83Z\x00")],
        "fragment out of order": frag_frames(3, ok, body, 3)[:1] + frag_frames(3, ok, body, 3)[2:],
        "continuation never started": frag_frames(4, ok, body, 2)[1:],
        "sequence started twice": frag_frames(5, ok, body, 2)[:1] * 2,
        "fragment id 0": [framed(b"\x83E" + struct.pack(">QQ", 6, 0) + refs_header(ok) + body)],
        "reassembly over max_frame_size": frag_frames(7, ok, send_body(me, bare(b"z" * 90000)), 2),
        "too many sequences": [f for s in range(1025) for f in frag_frames(100 + s, ok, body, 2)[:1]],
        "garbage after the message": [hdr_frame(ok, body + b"\x01")],
    }


def test_malformed_headers_and_fragments_close_only_that_connection():
    async def main():
        me = pyotp.self()
        out = {}
        for what, frames in _bad_cases(me).items():
            p = Peer()
            p.handshake(HDR)
            p.feed(b"".join(frames))
            await _await_with_timeout(p.t.gone, 10)
            out[what] = (p.t.aborted, p.name in kernel().conns, p.conn.close_reason)
        # header frames or fragments the peer did not negotiate
        for what, flags, data in (
                ("header not negotiated", HDR & ~(hs.DIST_HDR_ATOM_CACHE | hs.FRAGMENTS),
                 hdr_frame([], send_body(me, bare(1)))),
                ("fragments not negotiated", HDR & ~hs.FRAGMENTS,
                 frag_frames(1, [], bare(1), 2)[0])):
            p = Peer()
            p.handshake(flags)
            p.feed(data)
            await _await_with_timeout(p.t.gone, 10)
            out[what] = (p.t.aborted, p.name in kernel().conns, p.conn.close_reason)
        ok = Peer()                  # the node still takes connections and header frames
        ok.handshake(HDR)
        ok.feed(hdr_frame([(1, ""), (2, str(me.node))], send_body(me, bare("alive"))))
        return out, await pyotp.receive(timeout=10)
    out, alive = run_limited(main)
    reasons = {w: r for w, (_a, _c, r) in out.items()}
    assert all(a and not c for a, c, _r in out.values()), out
    assert "atom cache reference 9" in reasons["ref beyond the header's refs"]
    assert "empty cache slot 300" in reasons["ref to an empty cache slot"]
    assert "out of order (expected 2)" in reasons["fragment out of order"]
    assert "never started" in reasons["continuation never started"]
    assert "started twice" in reasons["sequence started twice"]
    assert "fragment id 0" in reasons["fragment id 0"]
    assert "over max_frame_size" in reasons["reassembly over max_frame_size"]
    assert "more than 1024 fragmented messages" in reasons["too many sequences"]
    assert "garbage" in reasons["garbage after the message"]
    assert "not negotiated" in reasons["header not negotiated"]
    assert "fragments were not negotiated" in reasons["fragments not negotiated"]
    assert alive == b"alive"


def run_limited(main: Any) -> Any:
    from dist_helpers import COOKIE, unique
    from pyotp.dist import run_node
    return run_node(main, node=unique("a"), cookie=COOKIE, max_frame_size=1 << 16)


# -- sending -------------------------------------------------------------------------------

class Pausing(FakeTransport):
    """Pauses its protocol past 64 KiB not yet taken by the test, as asyncio's transports
    do past their high-water mark."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.taken = 0

    def write(self, data: Any) -> None:
        super().write(data)
        if not self.paused and len(self.out) - self.taken > 65536:
            self.paused = True
            self.proto.pause_writing()

    def drain(self, upto: int) -> None:
        self.taken = upto
        if self.paused:
            self.paused = False
            self.proto.resume_writing()


class PausingPeer(Peer):
    def __init__(self) -> None:
        super().__init__()
        old = self.t
        self.t = Pausing()
        self.t.proto = self.conn
        self.conn.transport = self.t      # nothing was written yet: the handshake starts now
        assert not old.out


def parse_out(buf: bytearray, at: int) -> Tuple[List[Tuple[str, Any]], int]:
    """Frames the node wrote from ``at``: ("hdr", (ctrl, msg)), ("first"/"cont", (seq, id,
    chunk)) or ("p", ...) for pass-through frames."""
    got = []
    while at + 4 <= len(buf):
        (n,) = struct.unpack_from(">I", buf, at)
        if at + 4 + n > len(buf):
            break
        body = bytes(buf[at + 4:at + 4 + n])
        at += 4 + n
        if n == 0:
            continue
        assert n < 65536, n
        if body[:3] == b"\x83D\x00":
            ctrl, off = decode_term(body, 3)
            got.append(("hdr", (ctrl, decode_term(body, off)[0] if off < len(body) else None)))
        elif body[:2] == b"\x83E":
            seq, fid = struct.unpack_from(">QQ", body, 2)
            assert body[18] == 0                    # no atom cache refs
            got.append(("first", (seq, fid, body[19:])))
        elif body[:2] == b"\x83F":
            seq, fid = struct.unpack_from(">QQ", body, 2)
            got.append(("cont", (seq, fid, body[18:])))
        else:
            got.append(("p", body))
    return got, at


async def sender(to: Pid, msgs: List[Any], report: Pid) -> None:
    for m in msgs:
        pyotp.send(to, m)
    pyotp.send(report, "sent")


def test_node_sends_header_frames_and_interleaves_fragments():
    async def main():
        me = pyotp.self()
        p = PausingPeer()
        p.handshake(HDR)
        big = bytes(range(256)) * 4096               # 1 MiB: 17 fragments
        a = pyotp.spawn(sender, p.pid, [("big", big), "a-after-big"], me)
        assert await pyotp.receive(timeout=10) == "sent"
        b = pyotp.spawn(sender, p.pid, ["b-small"], me)
        assert await pyotp.receive(timeout=10) == "sent"
        frames: List[Tuple[str, Any]] = []
        at = p.read_at
        while True:
            p.conn.ch.flush_now()
            got, at = parse_out(p.t.out, at)
            frames += got
            if any(k == "hdr" and f[1] == b"a-after-big" for k, f in got):
                break
            p.t.drain(at)
            await asyncio.sleep(0)                  # the pump runs on the loop
        return frames, big, a, b, stats(p)
    frames, big, a, b, st = run(main)
    kinds = [k for k, _ in frames]
    # b's small message went out between a's fragments, not after all of them
    b_at = [i for i, (k, f) in enumerate(frames) if k == "hdr" and f[1] == b"b-small"][0]
    assert 0 < b_at < len(frames) - 5, kinds
    assert kinds.count("first") == 1 and kinds.count("cont") == 16
    # a's next message waits for its big one: frames of one sender keep their order
    assert frames[-1][0] == "hdr" and frames[-1][1][1] == b"a-after-big"
    frag = [f for k, f in frames if k in ("first", "cont")]
    assert [fid for _s, fid, _c in frag] == list(range(17, 0, -1))
    body = b"".join(c for _s, _f, c in frag)
    ctrl, off = decode_term(body, 0)
    assert ctrl[0] == 2 and decode_term(body, off)[0] == (b"big", big)
    assert st["fragmented_msgs_out"] == 1 and st["fragments_out"] == 17
