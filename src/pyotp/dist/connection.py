"""One distribution connection: an asyncio BufferedProtocol that runs the handshake as a
state machine, then carries control messages in ``'p'`` pass-through frames.

Design notes (invariants):

- Everything here runs on the node's loop thread.
- The per-message work of a connection that is up is compiled: ``_core.DistChannel``
  (src/core/dist_channel.pyx) parses the frames in the receive buffer, dispatches the
  frequent control messages and owns the send buffer; the core's send/call/reply go to
  it directly. This class keeps the handshake, the buffers' lifecycle, the rare control
  messages (``_frame``, which the channel hands every frame it does not handle) and
  the validation and error reports.
- Receiving: the transport writes straight into our buffer (``get_buffer``). A frame of
  64 KiB or more gets a buffer of its own (a recent one reused, or a new one that grows
  geometrically, in place, as the bytes arrive: a frame header alone never allocates
  what it announces), so python-mode out-of-band buffers (numpy arrays) can stay
  zero-copy views of it. The shared receive buffer is therefore only ever viewed by
  frames the decoder copies out of. A frame over ``max_frame_size`` closes the
  connection.
- Nothing a peer sends before it has proven the cookie changes the node's state: an
  incoming handshake reserves no name, and one that answers ``alive`` replaces the old
  connection only once it is authenticated (``NetKernel.conn_up``).
- A closed connection breaks its reference cycle with its channel and drops its buffers
  at once (``connection_lost``), so its memory is freed by reference counting.
- Handshake messages are handled synchronously inside ``buffer_updated``, so the switch
  from 2-byte to 4-byte framing happens exactly at the last handshake message: bytes the
  peer sent right after it, in the same TCP segment, are parsed as connected frames.
- Sending: the channel encodes frames straight into one bytearray; the first frame of a
  loop turn schedules a flush, so a burst of sends becomes one write (a call or a reply
  is written at once). Large python-mode payloads go out with ``writelines`` of the
  codec's chunks (numpy buffers are not copied).
- A malformed frame (bad framing, bad ETF, an unknown control operation, a control
  message of the wrong arity or element types) closes this connection with a logged
  reason; it never raises into the loop, never stops the node.
  A pickled payload that names a global the node does not allow (its restricted
  unpickler, docs/distribution.md "Security") closes the connection with a logged reason
  naming it, wherever the message was addressed; one that fails to unpickle otherwise (an
  allowed module the receiver lacks) drops that one message with a log line.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import sys
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from .. import _core
from ..etf import (Atom, DecodeError, PayloadRefused, Pid, Reference, TermTooDeep, decode_with_version,
                   encode_term_into, no_pickles, term_to_iovec)
from . import handshake as hs

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import NetKernel

_log = logging.getLogger("pyotp.dist")

_pack_into = struct.pack_into
_U32 = struct.Struct(">I").unpack_from
_getrefcount = sys.getrefcount
_HEADER = b"\x00\x00\x00\x00p"
_TICK = b"\x00\x00\x00\x00"

BUF_SIZE = 1 << 18          # shared receive buffer
FIRST_BIG = 1 << 20         # a new big-frame buffer starts this large (or twice what came)

# control message operations (dist.h), defined once, in the channel (dist_channel.pyx)
_OPS = _core.DIST_OPS
LINK = _OPS["LINK"]
SEND = _OPS["SEND"]
EXIT = _OPS["EXIT"]
UNLINK = _OPS["UNLINK"]
REG_SEND = _OPS["REG_SEND"]
GROUP_LEADER = _OPS["GROUP_LEADER"]
EXIT2 = _OPS["EXIT2"]
SEND_TT = _OPS["SEND_TT"]
EXIT_TT = _OPS["EXIT_TT"]
REG_SEND_TT = _OPS["REG_SEND_TT"]
EXIT2_TT = _OPS["EXIT2_TT"]
MONITOR_P = _OPS["MONITOR_P"]
DEMONITOR_P = _OPS["DEMONITOR_P"]
MONITOR_P_EXIT = _OPS["MONITOR_P_EXIT"]
SEND_SENDER = _OPS["SEND_SENDER"]
SEND_SENDER_TT = _OPS["SEND_SENDER_TT"]
PAYLOAD_EXIT = _OPS["PAYLOAD_EXIT"]
PAYLOAD_EXIT_TT = _OPS["PAYLOAD_EXIT_TT"]
PAYLOAD_EXIT2 = _OPS["PAYLOAD_EXIT2"]
PAYLOAD_EXIT2_TT = _OPS["PAYLOAD_EXIT2_TT"]
PAYLOAD_MONITOR_P_EXIT = _OPS["PAYLOAD_MONITOR_P_EXIT"]
SPAWN_REQUEST = _OPS["SPAWN_REQUEST"]
SPAWN_REQUEST_TT = _OPS["SPAWN_REQUEST_TT"]
SPAWN_REPLY = _OPS["SPAWN_REPLY"]
SPAWN_REPLY_TT = _OPS["SPAWN_REPLY_TT"]
ALIAS_SEND = _OPS["ALIAS_SEND"]
ALIAS_SEND_TT = _OPS["ALIAS_SEND_TT"]
UNLINK_ID = _OPS["UNLINK_ID"]
UNLINK_ID_ACK = _OPS["UNLINK_ID_ACK"]

# The shape of every control message pyotp accepts: op -> (what follows the op, one
# letter per element, and whether a payload term follows). p: a pid, a: an atom, x: a pid
# or an atom (a process or a registered name), r: a reference, i: an integer, *: any term
# (unused fields, trace tokens, reasons, MFAs). Anything else closes the connection.
SHAPES = {
    LINK: ("pp", False), SEND: ("*p", True), EXIT: ("pp*", False), UNLINK: ("pp", False),
    REG_SEND: ("p*a", True), GROUP_LEADER: ("pp", False), EXIT2: ("pp*", False),
    SEND_TT: ("*p*", True), EXIT_TT: ("pp**", False), REG_SEND_TT: ("p*a*", True),
    EXIT2_TT: ("pp**", False), MONITOR_P: ("pxr", False), DEMONITOR_P: ("pxr", False),
    MONITOR_P_EXIT: ("xpr*", False), SEND_SENDER: ("pp", True), SEND_SENDER_TT: ("pp*", True),
    PAYLOAD_EXIT: ("pp", True), PAYLOAD_EXIT_TT: ("pp*", True), PAYLOAD_EXIT2: ("pp", True),
    PAYLOAD_EXIT2_TT: ("pp*", True), PAYLOAD_MONITOR_P_EXIT: ("xpr", True),
    SPAWN_REQUEST: ("rpp**", True), SPAWN_REQUEST_TT: ("rpp***", True),
    SPAWN_REPLY: ("rpi*", False), SPAWN_REPLY_TT: ("rpi**", False),
    ALIAS_SEND: ("pr", True), ALIAS_SEND_TT: ("pr*", True),
    UNLINK_ID: ("ipp", False), UNLINK_ID_ACK: ("ipp", False),
}
_OP_NAMES = {v: k for k, v in _OPS.items()}


def _check_shape(ctrl: Tuple[Any, ...], has_payload: bool) -> None:
    """Raise ProtocolError unless ``ctrl`` (a tuple with an int first) is a control
    message pyotp knows, with its elements of the right types, and a payload term follows
    exactly when its operation carries one."""
    op = ctrl[0]
    shape = SHAPES.get(op)
    if shape is None:
        raise ProtocolError("unknown control message operation %d: %.200r" % (op, ctrl))
    spec, payload = shape
    name = _OP_NAMES.get(op, str(op))
    if len(ctrl) != len(spec) + 1:
        raise ProtocolError("%s should have %d elements: %.200r" % (name, len(spec) + 1, ctrl))
    if payload != has_payload:
        raise ProtocolError("%s %s: %.200r" % (
            name, "lacks its payload" if payload else "carries a payload it should not", ctrl))
    for i in range(len(spec)):
        c = spec[i]
        if c == "*":
            continue
        t = type(ctrl[i + 1])
        if not ((c == "p" and t is Pid) or (c == "a" and t is Atom) or (c == "r" and t is Reference)
                or (c == "x" and (t is Pid or t is Atom)) or (c == "i" and t is int)):
            raise ProtocolError("%s: element %d is not %s: %.200r" % (
                name, i + 1, {"p": "a pid", "a": "an atom", "r": "a reference",
                              "x": "a pid or an atom", "i": "an integer"}[c], ctrl))


# handshake states
(HS_NAME, HS_STATUS, HS_ALIVE, HS_CHALLENGE, HS_COMPLEMENT, HS_REPLY, HS_ACK, UP,
 CLOSED) = range(9)

_NO_MSG = _core._dist_no_msg


class ProtocolError(Exception):
    """A peer broke the protocol; the connection is closed with this reason."""


def to_erl(term: Any) -> Any:
    """Adapt an exit reason (or similar small term) for an Erlang peer: ``str`` becomes an
    atom (pyotp uses plain str for atoms), exceptions become ``{ExceptionName, <<Text>>}``,
    tuples and lists are converted element by element.

    >>> to_erl(("shutdown", "x"))
    (Atom('shutdown'), Atom('x'))
    """
    t = type(term)
    if t is str:
        return Atom(term)
    if t is tuple:
        return tuple([to_erl(x) for x in term])
    if t is list:
        return [to_erl(x) for x in term]
    if isinstance(term, BaseException):
        return (Atom(type(term).__name__), str(term).encode("utf-8", "replace"))
    return term


def from_erl(term: Any) -> Any:
    """Adapt an exit reason from an Erlang peer for pyotp's core: atoms become plain str
    (so ``normal``, ``kill`` and ``shutdown`` mean what they mean locally); tuples and
    lists are converted element by element.

    >>> from_erl((Atom("shutdown"), 1))
    ('shutdown', 1)
    """
    t = type(term)
    if t is Atom:
        return str(term)
    if t is tuple:
        return tuple([from_erl(x) for x in term])
    if t is list:
        return [from_erl(x) for x in term]
    return term


class Connection(asyncio.BufferedProtocol):
    """A distribution connection (one per connected node). Created by the node's listener
    (acceptor) or by ``NetKernel.connect`` (initiator). Users never touch it directly."""

    def __init__(self, kernel: "NetKernel", initiator: bool, peer: Optional[str] = None,
                 peer_is_pyotp: bool = False) -> None:
        self.kernel = kernel
        self.loop = kernel.loop
        self.initiator = initiator
        self.peer: Optional[str] = peer
        self.peer_atom: Optional[Atom] = Atom(peer) if peer else None
        self.peer_flags = 0
        self.peer_creation = 0
        self.expect_pyotp = peer_is_pyotp     # initiator: EPMD said the peer is pyotp
        self.pyotp = False                    # both sides set the PYOTP flag: exact str
        self.python = False                   # both accept pickled Python payloads
        self.loads: Any = None                # how this side decodes a pickle
        self.hidden = True
        self.payload_exits = False
        self.unlink_id = False
        self.state = HS_STATUS if initiator else HS_NAME
        self.transport: Optional[asyncio.Transport] = None
        self.close_reason: Any = None
        self.refused_nok = False
        self.superseded = False               # our attempt lost a simultaneous connect
        self.replaces = False                 # answered 'alive' with true: replaces the
                                              # old connection once authenticated
        self.our_flags = 0
        self._my_challenge = 0
        self._peer_challenge = 0
        self._hs_timer: Optional[asyncio.TimerHandle] = None
        self._v5 = False
        # receive side (the shared buffer is the channel's)
        self._big: Optional[bytearray] = None
        self._big_need = 0                      # the size of the big frame arriving
        self.max_frame = kernel.max_frame_size
        self.max_inflated = kernel.max_inflated_size
        self.max_depth = kernel.max_term_depth
        self._spares: List[bytearray] = []      # recent big-frame buffers, for reuse
        self.spare_used = False
        self.last_checked = 0
        self.idle_ticks = 0
        self.unlink_seq = 0
        # the compiled data path (both directions) once the handshake is done
        self.ch = ch = _core.DistChannel(self, self.loop, kernel.calls, kernel.name_monitors,
                                         kernel.virtual, BUF_SIZE)
        # the transport calls these for every read: the compiled ones
        self.get_buffer = ch.get_buffer            # type: ignore[method-assign]
        self.buffer_updated = ch.buffer_updated    # type: ignore[method-assign]
        ch.max_inflated = kernel.max_inflated_size
        ch.max_depth = kernel.max_term_depth

    @property
    def received(self) -> int:
        """Frames (ticks included) received so far: the tick check reads it."""
        return int(self.ch.received)

    @property
    def wrote(self) -> bool:
        """Something was written since the tick check last cleared this."""
        return bool(self.ch.wrote)

    @wrote.setter
    def wrote(self, value: bool) -> None:
        self.ch.wrote = value

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.initiator and not self.kernel.admit(self):
            self.abort("too many connections in their handshake (max_handshakes=%d): "
                       "refused one" % self.kernel.max_handshakes, log=False)
            return
        try:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                import socket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        self._hs_timer = self.loop.call_later(self.kernel.setup_time, self._hs_timeout)
        if self.initiator:
            self.our_flags = self.kernel.flags_for(self.expect_pyotp)
            self._raw_write(hs.send_name(self.our_flags, self.kernel.creation, self.kernel.name))
            self.kernel.attempt_started(self)

    # -- receiving: the channel's get_buffer/buffer_updated call these when the
    #    connection is not up yet (handshake) or a big frame is arriving

    def _updated(self, nbytes: int) -> None:
        ch = self.ch
        try:
            if ch.big_mv is not None:
                ch.big_fill += nbytes
                if ch.big_fill == self._big_need:
                    self._big_done()
                return
            ch.w += nbytes
            self._parse()
        except BaseException as e:
            self._failed(e)

    def _failed(self, e: BaseException) -> None:
        """Receiving raised: close this connection (only) with the reason."""
        if isinstance(e, ProtocolError):
            self.abort("protocol error from %s: %s" % (self.peer or "unknown peer", e))
        elif isinstance(e, hs.HandshakeError):
            self.abort("handshake with %s failed: %s" % (self.peer or "unknown peer", e))
        elif isinstance(e, Exception):   # a bug or a malformed term
            _log.error("pyotp dist: closing the connection to %s after an error", self.peer,
                       exc_info=e)
            self.abort("error: %r" % (e,))
        else:
            raise e

    def _big_done(self) -> None:
        ch = self.ch
        big = ch.big_mv
        buf = self._big
        assert big is not None and buf is not None
        self._big = ch.big_mv = None
        ch.big_fill = 0
        ch.received += 1
        try:
            self._frame(big)
        finally:
            big.release() if _getrefcount(big) <= 3 else None
            del big
            self._spares.append(buf)
            if len(self._spares) > 2:
                del self._spares[0]
            self.spare_used = True

    def _parse(self) -> None:
        """Handshake messages (2-byte length prefix), until the connection is up."""
        ch = self.ch
        buf = ch.rbuf
        while self.state != CLOSED:
            if self.state == UP:
                ch.resume()
                break
            r = ch.r
            avail = ch.w - r
            if avail < 2:
                break
            n = (buf[r] << 8) | buf[r + 1]
            if avail - 2 < n:
                break
            ch.r = r + 2 + n
            if n == 0:
                raise hs.HandshakeError("empty handshake message")
            self._handshake(bytes(buf[r + 2:r + 2 + n]))
        if ch.r == ch.w:
            ch.r = ch.w = 0

    def _start_big(self) -> None:
        """The channel met the head of a frame of 64 KiB or more: it gets a
        buffer of its own, which the transport fills directly."""
        ch = self.ch
        r = ch.r
        n = _U32(ch.rbuf, r)[0]
        if n > self.max_frame:
            raise ProtocolError("a frame of %d bytes exceeds max_frame_size (%d)" % (n, self.max_frame))
        with memoryview(ch.rbuf) as rmv:
            self._take_big(n, rmv[r + 4:ch.w])
        ch.r = ch.w = 0

    def _take_big(self, n: int, have: memoryview) -> None:
        # reuse a recent big buffer when nothing decoded from it is alive any more (its
        # only references: the spare list, `sp` and getrefcount's argument): no allocation and,
        # above all, no page faults on fresh memory. Two are kept, because the process
        # that got the last message usually still holds it.
        self._big = None
        spares = self._spares
        for i in range(len(spares)):
            sp = spares[i]
            if n <= len(sp) <= 2 * n and _getrefcount(sp) == 3:
                del spares[i]
                self._big = sp
                self.ch.big_mv = memoryview(sp)[:n]
                break
        if self._big is None:
            # what the header announces is not trusted: the buffer grows as bytes come
            self._big = bytearray(min(n, max(FIRST_BIG, 2 * len(have))))
            self.ch.big_mv = memoryview(self._big)
        self._big_need = n
        mvb = self.ch.big_mv
        assert mvb is not None
        mvb[0:len(have)] = have
        self.ch.big_fill = len(have)

    def _grow_big(self) -> None:
        """The big frame's buffer is full but the frame is not: make it up to four times
        larger (in place when nothing else views it, so the bytes are not copied). The
        channel's get_buffer calls this, when the transport holds no view of it."""
        ch = self.ch
        buf = self._big
        assert buf is not None and ch.big_mv is not None
        size = min(self._big_need, 4 * len(buf))
        mv = ch.big_mv
        ch.big_mv = None
        try:
            mv.release()
            ch.resize(buf, size)
        except BufferError:      # something still views it: move to a new buffer
            new = bytearray(size)
            new[:ch.big_fill] = memoryview(buf)[:ch.big_fill]
            self._big = buf = new
        ch.big_mv = memoryview(buf)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        was = self.state
        self.state = CLOSED
        self.ch.stop()
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        reason = self.close_reason or (exc and str(exc)) or "connection closed"
        if was == HS_ACK and self.close_reason is None:
            # The peer checks our challenge reply and, on a wrong digest, closes without a
            # word (the protocol has no message for it; OTP logs it on that side only).
            # Say it here too, or the connecting side sees nothing but pang/noconnection.
            reason = ("%s closed the connection after checking our cookie: the cookies "
                      "differ (set the same cookie on both nodes: cookie=..., --cookie or "
                      "~/.erlang.cookie)" % self.peer)
            _log.warning("pyotp dist: cannot connect to %s", reason)
        try:
            if was == UP:
                self.kernel.conn_down(self, reason)
            else:
                self.kernel.attempt_failed(self, reason)
        finally:
            # free the buffers now and break the cycle with the channel, so that this
            # connection goes with its last reference, not at the next cyclic collection
            self.ch.release()
            self._big = None
            self._spares = []

    def pause_writing(self) -> None:  # the peer is slow: the transport buffers for us
        _core._dist_header_writing(self.ch, False)    # i14b: fragments wait (dist_header.pyx)

    def resume_writing(self) -> None:
        _core._dist_header_writing(self.ch, True)

    def abort(self, reason: str, log: bool = True) -> None:
        """Close this connection at once (logged unless ``log`` is False)."""
        if self.state == CLOSED:
            return
        if self.close_reason is None:
            self.close_reason = reason
            if log:
                _log.warning("pyotp dist: %s", reason)
        self.ch.stop()
        if self.transport is not None:
            self.transport.abort()
        else:  # pragma: no cover
            self.connection_lost(None)

    def close(self, reason: str = "disconnected") -> None:
        """Close after flushing what is queued."""
        if self.state == CLOSED:
            return
        if self.close_reason is None:
            self.close_reason = reason
        self.ch.flush_now()
        self.ch.stop()
        if self.transport is not None:
            self.transport.close()

    # -- handshake -------------------------------------------------------------------------

    def _hs_timeout(self) -> None:
        self._hs_timer = None
        if self.state not in (UP, CLOSED):
            self.abort("handshake with %s timed out" % (self.peer or "an unknown peer"))

    def _raw_write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _handshake(self, msg: bytes) -> None:
        k = self.kernel
        st = self.state
        if st == HS_NAME:                                   # acceptor, step 1
            nm = hs.parse_name(msg)
            if nm.version == 5 and not nm.flags & hs.HANDSHAKE_23:
                raise hs.HandshakeError("%s is too old (no HANDSHAKE_23 flag)" % nm.name)
            if nm.flags & hs.NAME_ME:
                raise hs.HandshakeError("%s asked for a dynamic name (NAME_ME), not supported" % nm.name)
            self._check_flags(nm.flags, nm.name)
            if "@" not in nm.name:
                raise hs.HandshakeError("bad node name %r" % nm.name)
            self.peer = nm.name
            self.peer_atom = Atom(nm.name)
            self.peer_flags = nm.flags
            self.peer_creation = nm.creation
            self._v5 = nm.version == 5
            status = k.accept_status(self)
            self._raw_write(hs.send_status(status))
            if status in ("nok", "not_allowed"):
                self.close_reason = "refused (%s)" % status
                self.state = CLOSED
                self.transport.close()  # type: ignore[union-attr]
                return
            if status == "alive":
                self.state = HS_ALIVE
                return
            self._send_challenge()
        elif st == HS_ALIVE:                                # acceptor: answer to 'alive'
            if msg == b"strue":
                # the old connection stays until this one has proven the cookie
                self.replaces = True
                self._send_challenge()
            else:
                self.close_reason = "peer declined (alive)"
                self.transport.close()  # type: ignore[union-attr]
                self.state = CLOSED
        elif st == HS_STATUS:                               # initiator, step 2
            if msg[:1] != b"s":
                raise hs.HandshakeError("expected a status message, got %r" % msg[:8])
            status = msg[1:].decode("ascii", "replace")
            if status in ("ok", "ok_simultaneous"):
                self.state = HS_CHALLENGE
            elif status == "alive":
                self._raw_write(hs.send_status("true"))
                self.state = HS_CHALLENGE
            elif status == "nok":
                self.refused_nok = True
                self.close_reason = "nok (simultaneous connect)"
                self.state = CLOSED
                self.transport.close()  # type: ignore[union-attr]
            else:
                raise hs.HandshakeError("%s refused the connection (%s)" % (self.peer, status))
        elif st == HS_CHALLENGE:                            # initiator, step 3
            ch = hs.parse_challenge(msg)
            if ch.name != self.peer:
                raise hs.HandshakeError("dialled %s but %s answered" % (self.peer, ch.name))
            self._check_flags(ch.flags, ch.name)
            self.peer_flags = ch.flags
            self.peer_creation = ch.creation
            self._my_challenge = hs.new_challenge()
            self._raw_write(hs.send_challenge_reply(
                self._my_challenge, hs.digest(ch.challenge, k.cookie_for(self.peer))))
            self.state = HS_ACK
        elif st == HS_ACK:                                  # initiator, step 5
            if msg[:1] != b"a" or len(msg) != 17:
                raise hs.HandshakeError("malformed challenge ack")
            if not hs.check_digest(msg[1:], self._my_challenge, k.cookie_for(self.peer)):
                raise hs.HandshakeError("%s: wrong cookie (its digest did not match)" % self.peer)
            self._up()
        elif st == HS_COMPLEMENT:                           # acceptor, v5 initiator
            hi, creation = hs.parse_complement(msg)
            self.peer_flags |= hi << 32
            self.peer_creation = creation
            self.state = HS_REPLY
        elif st == HS_REPLY:                                # acceptor, step 4
            peer_ch, dig = hs.parse_challenge_reply(msg)
            cookie = k.cookie_for(self.peer)
            if not hs.check_digest(dig, self._my_challenge, cookie):
                _log.error("pyotp dist: connection attempt from %s refused: wrong cookie", self.peer)
                self.close_reason = "wrong cookie"
                self.state = CLOSED
                self.transport.abort()  # type: ignore[union-attr]
                return
            self._raw_write(hs.send_challenge_ack(hs.digest(peer_ch, cookie)))
            self._up()
        else:  # pragma: no cover
            raise hs.HandshakeError("unexpected handshake message in state %d" % st)

    def _check_flags(self, flags: int, name: str) -> None:
        missing = hs.missing_mandatory(flags)
        if missing:
            raise hs.HandshakeError("%s lacks mandatory distribution flags 0x%x" % (name, missing))

    def _send_challenge(self) -> None:
        self.our_flags = self.kernel.flags_for(bool(self.peer_flags & hs.PYOTP),
                                               bool(self.peer_flags & hs.PUBLISHED))
        self._my_challenge = hs.new_challenge()
        self._raw_write(hs.send_challenge(self.our_flags, self._my_challenge,
                                          self.kernel.creation, self.kernel.name))
        self.state = HS_COMPLEMENT if self._v5 else HS_REPLY

    def _up(self) -> None:
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        both = self.our_flags & self.peer_flags
        self.pyotp = bool(both & hs.PYOTP)
        # pickles only when both sides configured them: our bit is set only when this
        # node has an unpickler, so a peer's bit alone changes nothing here
        unpickler = self.kernel.unpickler
        self.python = self.pyotp and bool(both & hs.PYOTP_PICKLE) and unpickler is not None
        self.loads = unpickler.loads if self.python and unpickler is not None else no_pickles
        self.hidden = not (both & hs.PUBLISHED)
        self.payload_exits = bool(both & hs.EXIT_PAYLOAD)
        self.unlink_id = bool(both & hs.UNLINK_ID)
        self.ch.alias = bool(both & hs.ALIAS)
        # i14b: header frames / fragments as negotiated (src/core/dist_header.pyx)
        _core._dist_header_setup(self.ch, both, self.pyotp, self.max_frame, ProtocolError)
        self.state = UP
        self.ch.start(self.transport, self.peer, 1 if self.python else 2 if self.pyotp else 0,
                      self.loads if self.pyotp else None, self.kernel.kernel_pid)
        self.kernel.conn_up(self)

    # -- receiving -------------------------------------------------------------------------

    def _frame(self, mv: memoryview) -> None:
        if mv[0] != 112:
            if mv[0] == 131:     # i14b: header frames and fragments (src/core/dist_header.pyx)
                try:
                    _core._dist_header_frame(self.ch, mv)
                except _core.DistHeaderError as e:
                    raise ProtocolError(str(e)) from None
                return
            raise ProtocolError("unknown frame type %d" % mv[0])
        try:
            ctrl, off = decode_with_version(mv, 1, max_inflated=self.max_inflated,
                                            max_depth=self.max_depth)
        except DecodeError as e:
            raise ProtocolError("bad control message: %s" % e) from None
        if type(ctrl) is not tuple or not ctrl or type(ctrl[0]) is not int:
            raise ProtocolError("control message is not a tuple with an operation: %r" % (ctrl,))
        _check_shape(ctrl, off < len(mv))
        op = ctrl[0]
        k = self.kernel
        if op == SEND or op == SEND_SENDER or op == SEND_TT or op == SEND_SENDER_TT:
            msg = self._payload(mv, off)
            if msg is not _NO_MSG:
                k.deliver(self, ctrl[2], msg)
        elif op == REG_SEND or op == REG_SEND_TT:
            msg = self._payload(mv, off)
            if msg is not _NO_MSG:
                k.deliver_name(self, ctrl[1], ctrl[3], msg)
        elif op == LINK:
            k.on_link(self, ctrl[1], ctrl[2])
        elif op == EXIT or op == EXIT2:
            k.on_exit(self, ctrl[1], ctrl[2], self._reason(ctrl[3]), op == EXIT)
        elif op == PAYLOAD_EXIT or op == PAYLOAD_EXIT2 or op == PAYLOAD_EXIT_TT or op == PAYLOAD_EXIT2_TT:
            r = self._payload(mv, off)
            if r is not _NO_MSG:
                k.on_exit(self, ctrl[1], ctrl[2], self._reason(r),
                          op == PAYLOAD_EXIT or op == PAYLOAD_EXIT_TT)
        elif op == EXIT_TT or op == EXIT2_TT:
            k.on_exit(self, ctrl[1], ctrl[2], self._reason(ctrl[4]), op == EXIT_TT)
        elif op == MONITOR_P:
            k.on_monitor(self, ctrl[1], ctrl[2], ctrl[3])
        elif op == DEMONITOR_P:
            k.on_demonitor(self, ctrl[1], ctrl[2], ctrl[3])
        elif op == MONITOR_P_EXIT:
            k.on_down(self, ctrl[1], ctrl[2], ctrl[3], ctrl[4])
        elif op == PAYLOAD_MONITOR_P_EXIT:
            r = self._payload(mv, off)
            if r is not _NO_MSG:
                k.on_down(self, ctrl[1], ctrl[2], ctrl[3], r)
        elif op == UNLINK_ID:
            k.on_unlink(self, ctrl[2], ctrl[3])
            self.control((UNLINK_ID_ACK, ctrl[1], ctrl[3], ctrl[2]))
        elif op == UNLINK:
            k.on_unlink(self, ctrl[1], ctrl[2])
        elif op == SPAWN_REQUEST or op == SPAWN_REQUEST_TT:
            args = self._payload(mv, off)
            if args is not _NO_MSG:
                k.rpc.on_spawn_request(k, self, ctrl[1], ctrl[2], ctrl[3], ctrl[4], ctrl[5], args)
        elif op == SPAWN_REPLY or op == SPAWN_REPLY_TT:
            k.rpc.on_spawn_reply(k, self, ctrl[1], ctrl[2], ctrl[3], ctrl[4])
        elif op == ALIAS_SEND or op == ALIAS_SEND_TT:
            msg = self._payload(mv, off)
            if msg is not _NO_MSG:
                k.deliver_alias(self, ctrl[2], msg)
        # UNLINK_ID_ACK, GROUP_LEADER: nothing to do once their shape is checked

    def _payload(self, mv: memoryview, off: int) -> Any:
        if off >= len(mv):
            raise ProtocolError("control message lacks its payload")
        try:
            msg, end = decode_with_version(mv, off, python=self.pyotp, loads=self.loads,
                                           max_inflated=self.max_inflated, max_depth=self.max_depth)
        except TermTooDeep as e:
            return self._too_deep(e)
        except DecodeError as e:
            if isinstance(e.__cause__, PayloadRefused):
                raise ProtocolError(str(e.__cause__)) from None
            if e.__cause__ is not None and not isinstance(e.__cause__, DecodeError):
                _log.error("pyotp dist: dropped a message from %s: %s", self.peer, e)
                return _NO_MSG
            raise ProtocolError("bad message term: %s" % e) from None
        if end != len(mv):
            raise ProtocolError("%d bytes of garbage after the message" % (len(mv) - end))
        return msg

    def _too_deep(self, e: TermTooDeep) -> Any:
        """A well-formed message nested deeper than max_term_depth: only that message is
        lost (its frame length is known, so the stream stays in step), as a BEAM node
        would keep the connection; the peer is not broken, the limit is ours."""
        _log.error("pyotp dist: dropped a message from %s: %s (Node.start's max_term_depth=%d)",
                   self.peer, e, self.max_depth)
        return _NO_MSG

    def reason_in(self, r: Any) -> Any:
        """An exit reason as received, adapted for the core (see from_erl)."""
        return r if self.python else from_erl(r)

    def _reason(self, r: Any) -> Any:
        return r if self.python else from_erl(r)

    # -- sending ---------------------------------------------------------------------------

    def flush_now(self) -> None:
        """Write what is queued at once."""
        self.ch.flush_now()

    def control(self, ctrl: Tuple[Any, ...], msg: Any = _NO_MSG) -> None:
        """Queue a frame: ``'p'`` + control term (+ payload term). Raises (and queues
        nothing) if a term cannot be encoded."""
        self.ch.control(ctrl, msg)

    def _write_big(self, ctrl: Tuple[Any, ...], msg: Any) -> int:
        """A python-mode payload holding large buffers: its chunks go to the transport
        as they are (the channel calls this). Returns the bytes written (its stats)."""
        head = bytearray(_HEADER)
        encode_term_into(head, ctrl)
        chunks: List[Any] = term_to_iovec(msg, python=True)
        total = len(head) - 4 + sum(len(c) if not isinstance(c, memoryview) else c.nbytes for c in chunks)
        _pack_into(">I", head, 0, total)
        self.ch.flush_now()
        if self.transport is not None and self.state == UP:
            self.transport.writelines([head] + chunks)
            self.ch.wrote = True
            return total + 4
        return 0

    def send_tick(self) -> None:
        if self.transport is not None and self.state == UP:
            self.ch.flush_now()
            self.transport.write(_TICK)

    # the operations, as the kernel calls them

    def send(self, to: Pid, msg: Any) -> None:
        self.ch.send(to, msg)

    def alias_send(self, ref: Reference, msg: Any) -> None:
        self.ch.alias_send(ref, msg)

    def call(self, frm: Pid, to: Any, ref: Reference, request: Any, label: Any) -> None:
        """A call queued while this node was being connected (see DistChannel.call)."""
        self.ch.call(frm, to, ref, request, label)

    def reg_send(self, frm: Pid, name: Any, msg: Any) -> None:
        self.ch.reg_send(frm, name, msg)

    def send_named(self, name: str, msg: Any) -> None:
        """REG_SEND from the node (``pyotp.send((name, node), msg)``)."""
        self.ch.send_named(name, msg)

    def link(self, frm: Pid, to: Pid) -> None:
        self.control((LINK, frm, to))

    def unlink(self, frm: Pid, to: Pid) -> None:
        if self.unlink_id:
            self.unlink_seq += 1
            self.control((UNLINK_ID, self.unlink_seq, frm, to))
        else:
            self.control((UNLINK, frm, to))

    def exit(self, frm: Pid, to: Pid, reason: Any, linked: bool) -> None:
        if self.payload_exits:
            self.control((PAYLOAD_EXIT if linked else PAYLOAD_EXIT2, frm, to), self._out_reason(reason))
        else:
            self.control((EXIT if linked else EXIT2, frm, to, to_erl(reason)))

    def monitor(self, frm: Pid, target: Any, ref: Reference) -> None:
        self.control((MONITOR_P, frm, target, ref))

    def demonitor(self, frm: Pid, target: Any, ref: Reference) -> None:
        self.control((DEMONITOR_P, frm, target, ref))

    def down(self, frm: Any, to: Pid, ref: Reference, reason: Any, raw: bool = False) -> None:
        """MONITOR_P_EXIT; ``raw`` sends the reason as given (erpc results), otherwise it
        is adapted for Erlang peers (to_erl)."""
        if not raw:
            reason = self._out_reason(reason)
        if self.payload_exits:
            self.control((PAYLOAD_MONITOR_P_EXIT, frm, to, ref), reason)
        else:
            self.control((MONITOR_P_EXIT, frm, to, ref, reason))

    def spawn_request(self, req: Reference, frm: Pid, gl: Pid, mfa: Tuple[Any, ...], opts: List[Any], args: List[Any]) -> None:
        self.control((SPAWN_REQUEST, req, frm, gl, mfa, opts), args)

    def spawn_reply(self, req: Reference, to: Pid, flags: int, result: Any) -> None:
        self.control((SPAWN_REPLY, req, to, flags, result))

    def _out_reason(self, reason: Any) -> Any:
        if self.python:
            return reason
        return to_erl(reason)

    def __repr__(self) -> str:
        return "<Connection %s %s>" % (self.peer, "up" if self.state == UP else "state %d" % self.state)
