"""One distribution connection: the handshake state machine (an asyncio BufferedProtocol),
which hands the transport to the compiled channel once the peer has proven the cookie,
as OTP's ``dist_util`` hands the socket to the VM (``erlang:setnode``).

Design notes (invariants):

- Everything here runs on the node's loop thread.
- Until the handshake is done this object is the transport's protocol: the handshake
  messages (2-byte length prefix) are read into a small buffer of its own and handled
  synchronously inside ``buffer_updated``, so the switch to 4-byte framing happens exactly
  at the last handshake message. Then ``_up`` starts the channel (``Channel``, the
  compiled ``_core.DistChannel``) with the bytes that came after that message, and makes
  it the transport's protocol (``transport.set_protocol``): from then on the channel
  alone owns the connection's framing, buffers, writes, ticks, request table and every
  control message that needs no Python (src/core/dist_channel.pyx).
- The channel calls back here only through ``on_control`` (spawn requests and replies,
  the DOWN of an rpc: rpc.py), ``on_payload_error`` (a payload that did not decode),
  ``on_error`` (close with a logged reason) and ``connection_lost``.
- Nothing a peer sends before it has proven the cookie changes the node's state: an
  incoming handshake reserves no name, and one that answers ``alive`` replaces the old
  connection only once it is authenticated (``NetKernel.conn_up``).
- A closed connection breaks its reference cycle with its channel and drops its buffers
  at once (``connection_lost``), so its memory is freed by reference counting.
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
from typing import TYPE_CHECKING, Any, Optional, Tuple

from .. import _core
from ..etf import Atom, DecodeError, PayloadRefused, TermTooDeep, no_pickles
from . import handshake as hs

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import NetKernel

_log = logging.getLogger("pyotp.dist")

BUF_SIZE = 1 << 18          # the channel's receive buffer
HS_BUF_SIZE = 1 << 17       # the handshake's (a handshake message is at most 65537 bytes)

# handshake states
(HS_NAME, HS_STATUS, HS_ALIVE, HS_CHALLENGE, HS_COMPLEMENT, HS_REPLY, HS_ACK, UP,
 CLOSED) = range(9)

#: A peer broke the protocol; the connection is closed with this reason.
ProtocolError = _core.DistProtocolError


class Channel(_core.DistChannel, asyncio.BufferedProtocol):
    """The compiled channel as a transport's protocol: asyncio's (and uvloop's)
    transports read with ``get_buffer``/``buffer_updated`` only when the protocol
    handed to ``set_protocol`` is an ``asyncio.BufferedProtocol``."""
    __slots__ = ()


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
        # the handshake's receive buffer: bytes [_hr, _hw) are unparsed
        self._hbuf: Optional[bytearray] = bytearray(HS_BUF_SIZE)
        self._hmv: Optional[memoryview] = memoryview(self._hbuf)
        self._hr = self._hw = 0
        # the compiled channel, the transport's protocol once the handshake is done
        self.ch = Channel(self, self.loop, kernel.virtual, BUF_SIZE, kernel.max_frame_size,
                          kernel.max_inflated_size, kernel.max_term_depth)

    # -- asyncio callbacks (the handshake) ---------------------------------------------------

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

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.state == UP:
            # a transport that looked its protocol up once for a whole read loop (the
            # shared-memory one) still calls here after set_protocol: the channel reads
            return self.ch.get_buffer(sizehint)
        buf, mv = self._hbuf, self._hmv
        if buf is None or mv is None:
            return memoryview(bytearray(1 << 16))   # closed: what still comes is dropped
        if len(buf) - self._hw < 8192 and self._hr:
            n = self._hw - self._hr
            buf[:n] = buf[self._hr:self._hw]
            self._hr, self._hw = 0, n
        return mv[self._hw:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.state == UP:
            self.ch.buffer_updated(nbytes)          # see get_buffer
            return
        try:
            if self._hbuf is None:
                return              # closed (or up: the channel reads from now on)
            if not 0 <= nbytes <= len(self._hbuf) - self._hw:
                raise RuntimeError("buffer_updated: %d bytes reported, %d fit"
                                   % (nbytes, len(self._hbuf) - self._hw))
            self._hw += nbytes
            self._parse()
        except BaseException as e:
            self.on_error(e)

    def _parse(self) -> None:
        """Handshake messages (2-byte length prefix), until the connection is up."""
        while self.state != CLOSED and self.state != UP:
            buf = self._hbuf
            if buf is None:
                return
            r = self._hr
            avail = self._hw - r
            if avail < 2:
                break
            n = (buf[r] << 8) | buf[r + 1]
            if avail - 2 < n:
                break
            self._hr = r + 2 + n
            if n == 0:
                raise hs.HandshakeError("empty handshake message")
            self._handshake(bytes(buf[r + 2:r + 2 + n]))
        if self._hr == self._hw:
            self._hr = self._hw = 0

    # -- the channel's interface back to Python ------------------------------------------------

    def on_error(self, e: BaseException) -> None:
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

    def on_payload_error(self, e: DecodeError) -> None:
        """A message term did not decode. Too deep (our limit, not the peer's fault) or a
        pickle of something the node lacks: that message is dropped with a log line.
        A refused pickle or malformed bytes: ProtocolError (the connection closes)."""
        if isinstance(e, TermTooDeep):
            # its frame length is known, so the stream stays in step, as a BEAM node
            # would keep the connection
            _log.error("pyotp dist: dropped a message from %s: %s (Node.start's max_term_depth=%d)",
                       self.peer, e, self.ch.max_depth)
            return
        if isinstance(e.__cause__, PayloadRefused):
            raise ProtocolError(str(e.__cause__)) from None
        if e.__cause__ is not None and not isinstance(e.__cause__, DecodeError):
            _log.error("pyotp dist: dropped a message from %s: %s", self.peer, e)
            return
        raise ProtocolError("bad message term: %s" % e) from None

    def on_control(self, ctrl: Tuple[Any, ...], payload: Any) -> None:
        """The control messages the channel leaves to Python (spawn requests and replies,
        the DOWN of an rpc) belong to the rpc service: ``rpc.on_control``."""
        self.kernel.rpc.on_control(self.kernel, self, ctrl, payload)

    # -- closing ----------------------------------------------------------------------------

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
            self._hbuf = self._hmv = None

    def pause_writing(self) -> None:  # during the handshake; the channel's once it is up
        pass

    def resume_writing(self) -> None:
        pass

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
        """The peer proved the cookie: hand the transport to the channel (setnode)."""
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
        assert self._hbuf is not None and self.transport is not None
        rest = bytes(self._hbuf[self._hr:self._hw])     # frames right after the last message
        self._hbuf = self._hmv = None
        self._hr = self._hw = 0
        # header frames / fragments as negotiated (src/core/dist_header.pyx)
        _core._dist_header_setup(self.ch, both, self.pyotp, self.ch.max_frame, ProtocolError)
        self.state = UP
        ch = self.ch
        ch.start(self.transport, self.peer, 1 if self.python else 2 if self.pyotp else 0,
                 self.loads if self.pyotp else None, self.kernel.kernel_pid,
                 bool(both & hs.ALIAS), self.payload_exits, self.unlink_id, rest)
        self.transport.set_protocol(ch)
        self.kernel.conn_up(self)
        if ch.up:
            ch.resume()

    def __repr__(self) -> str:
        return "<Connection %s %s>" % (self.peer, "up" if self.state == UP else "state %d" % self.state)
