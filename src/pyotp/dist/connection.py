"""One distribution connection's handshake state machine (an asyncio BufferedProtocol).
Once the peer has proven the cookie it hands the transport to the compiled channel, as
OTP's ``dist_util`` hands the socket to the VM (``erlang:setnode``): channel.py
(``UpConnection``, this class's base) has that hand-over and the channel's interface
back to Python; handshake.py has the messages.

States: the acceptor goes HS_NAME -> (HS_ALIVE) -> (HS_COMPLEMENT, a version-5 peer) ->
HS_REPLY -> UP; the initiator HS_STATUS -> HS_CHALLENGE -> HS_ACK -> UP; any -> CLOSED.

Invariants:

- Loop thread only.
- Until UP this object is the transport's protocol: handshake messages (2-byte length
  prefix) are read into a buffer of its own and handled inside ``buffer_updated``, so the
  switch to 4-byte framing happens exactly at the last handshake message; the bytes after
  it go to the channel, the transport's protocol from then on.
- Nothing a peer sends before it has proven the cookie changes the node's state: an
  incoming handshake reserves no name, and one that answers ``alive`` replaces the old
  connection only once it is authenticated (``NetKernel.conn_up``).
- A handshake that breaks the protocol or outlasts the kernel's ``setup_time`` closes
  this connection (only) with a logged reason.
- A closed connection breaks its reference cycle with its channel and drops its buffers
  at once (``connection_lost``), so its memory is freed by reference counting.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Optional

from ..etf import Atom
from . import handshake as hs
from .channel import ProtocolError, UpConnection
from .transport import no_delay

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import NetKernel

__all__ = ["Connection", "ProtocolError"]

_log = logging.getLogger("pyotp.dist")

HS_BUF_SIZE = 1 << 17       # the handshake's (a handshake message is at most 65537 bytes)

# handshake states
(HS_NAME, HS_STATUS, HS_ALIVE, HS_CHALLENGE, HS_COMPLEMENT, HS_REPLY, HS_ACK, UP,
 CLOSED) = range(9)


class Connection(UpConnection, asyncio.BufferedProtocol):
    """A distribution connection (one per connected node). Created by the node's listener
    (acceptor) or by ``NetKernel.connect`` (initiator). Users never touch it directly."""

    def __init__(self, kernel: "NetKernel", initiator: bool, peer: Optional[str] = None,
                 peer_is_pyotp: bool = False) -> None:
        self.kernel = kernel
        self.initiator = initiator
        self.peer: Optional[str] = peer
        self.peer_atom: Optional[Atom] = Atom(peer) if peer else None
        self.peer_flags = 0
        self.peer_creation = 0
        self.expect_pyotp = peer_is_pyotp     # initiator: EPMD said the peer is pyotp
        self.state = HS_STATUS if initiator else HS_NAME
        self.transport: Optional[asyncio.Transport] = None
        self.close_reason: Any = None
        self.refused_nok = False
        self.superseded = False               # our attempt lost a simultaneous connect
        self.replaces = False                 # answered 'alive' with true: replaces the
                                              # old connection once authenticated
        self.our_flags = 0
        self._my_challenge = 0
        self._hs_timer: Optional[asyncio.TimerHandle] = None
        self._v5 = False
        # the handshake's receive buffer: bytes [_hr, _hw) are unparsed
        self._hbuf: Optional[bytearray] = bytearray(HS_BUF_SIZE)
        self._hmv: Optional[memoryview] = memoryview(self._hbuf)
        self._hr = self._hw = 0
        # the compiled channel, the transport's protocol once the handshake is done
        self.ch = self._new_channel()

    # -- asyncio callbacks (the handshake) ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.initiator and not self.kernel.admit(self):
            self.abort("too many connections in their handshake (max_handshakes=%d): "
                       "refused one" % self.kernel.max_handshakes, log=False)
            return
        no_delay(transport)
        self._hs_timer = self.kernel.loop.call_later(self.kernel.setup_time, self._hs_timeout)
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

    # -- closing ----------------------------------------------------------------------------

    def connection_lost(self, exc: Optional[Exception]) -> None:
        was = self.state
        self.state = CLOSED
        self.ch.stop()
        self._stop_timer()
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

    def _stop_timer(self) -> None:
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None

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
                self._refuse("refused (%s)" % status)
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
                self._refuse("peer declined (alive)")
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
                self._refuse("nok (simultaneous connect)")
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
                self._refuse("wrong cookie", at_once=True)
                return
            self._raw_write(hs.send_challenge_ack(hs.digest(peer_ch, cookie)))
            self._up()
        else:  # pragma: no cover
            raise hs.HandshakeError("unexpected handshake message in state %d" % st)

    def _refuse(self, reason: str, at_once: bool = False) -> None:
        """End the handshake with ``reason`` (not logged): after what was written, or
        ``at_once`` (the peer gets no answer)."""
        self.close_reason = reason
        self.state = CLOSED
        assert self.transport is not None
        if at_once:
            self.transport.abort()
        else:
            self.transport.close()

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
        self._stop_timer()
        assert self._hbuf is not None and self.transport is not None
        rest = bytes(self._hbuf[self._hr:self._hw])     # frames right after the last message
        self._hbuf = self._hmv = None
        self._hr = self._hw = 0
        self.state = UP
        self._setnode(self.our_flags & self.peer_flags, rest)

    def __repr__(self) -> str:
        return "<Connection %s %s>" % (self.peer, "up" if self.state == UP else "state %d" % self.state)
