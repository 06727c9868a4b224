"""A connection once its handshake is done: the compiled channel as the transport's
protocol, the hand-over that starts it (OTP's ``erlang:setnode``) and the channel's way
back to Python.

:class:`~pyotp.dist.connection.Connection` runs the handshake; when the peer has proven
the cookie it calls :meth:`UpConnection._setnode`, which turns the negotiated flags into
the channel's settings, starts the channel (``_core.DistChannel``,
src/core/dist_channel.pyx) with the bytes that followed the last handshake message and
makes it the transport's protocol. From then on the channel alone owns the framing,
buffers, writes, ticks, the request table and every control message that needs no
Python; it calls back only through the three methods of :class:`UpConnection`
(``on_control``, ``on_payload_error``, ``on_error``) and ``connection_lost``.

Invariants:

- Loop thread only.
- A malformed frame (bad framing, bad ETF, an unknown control operation, a control
  message of the wrong arity or element types) closes this connection with a logged
  reason; it never raises into the loop, never stops the node.
- A pickled payload that names a global the node does not allow (its restricted
  unpickler, docs/distribution.md "Security") closes the connection with a logged reason
  naming it, wherever the message was addressed; one that fails to unpickle otherwise (an
  allowed module the receiver lacks) drops that one message with a log line, as does a
  term nested deeper than ``max_term_depth``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Optional, Tuple

from .. import _core
from ..etf import DecodeError, PayloadRefused, TermTooDeep, no_pickles
from . import handshake as hs

if TYPE_CHECKING:  # pragma: no cover
    from .kernel import NetKernel

_log = logging.getLogger("pyotp.dist")

BUF_SIZE = 1 << 18          # the channel's receive buffer

#: A peer broke the protocol; the connection is closed with this reason.
ProtocolError = _core.DistProtocolError


class Channel(_core.DistChannel, asyncio.BufferedProtocol):
    """The compiled channel as a transport's protocol: asyncio's (and uvloop's)
    transports read with ``get_buffer``/``buffer_updated`` only when the protocol
    handed to ``set_protocol`` is an ``asyncio.BufferedProtocol``."""
    __slots__ = ()


class UpConnection:
    """What a connection is once up: the negotiated settings, the hand-over to the
    channel and the channel's interface back to Python. The base of ``Connection``,
    which supplies ``kernel``, ``peer``, ``transport``, ``ch`` and ``abort``."""

    kernel: "NetKernel"
    peer: Optional[str]
    transport: Optional[asyncio.Transport]
    ch: Channel

    pyotp = False                    # both sides set the PYOTP flag: exact str
    python = False                   # both accept pickled Python payloads
    loads: Any = None                # how this side decodes a pickle
    hidden = True
    payload_exits = False
    unlink_id = False

    def abort(self, reason: str, log: bool = True) -> None:  # pragma: no cover
        raise NotImplementedError

    def _new_channel(self) -> Channel:
        k = self.kernel
        return Channel(self, k.loop, k.virtual, BUF_SIZE, k.max_frame_size,
                       k.max_inflated_size, k.max_term_depth)

    def _setnode(self, both: int, rest: bytes) -> None:
        """Hand the transport to the channel: ``both`` are the flags both sides set,
        ``rest`` the bytes that came after the last handshake message."""
        self.pyotp = bool(both & hs.PYOTP)
        # pickles only when both sides configured them: our bit is set only when this
        # node has an unpickler, so a peer's bit alone changes nothing here
        unpickler = self.kernel.unpickler
        self.python = self.pyotp and bool(both & hs.PYOTP_PICKLE) and unpickler is not None
        self.loads = unpickler.loads if self.python and unpickler is not None else no_pickles
        self.hidden = not (both & hs.PUBLISHED)
        self.payload_exits = bool(both & hs.EXIT_PAYLOAD)
        self.unlink_id = bool(both & hs.UNLINK_ID)
        ch = self.ch
        # header frames / fragments as negotiated (src/core/dist_header.pyx)
        _core._dist_header_setup(ch, both, self.pyotp, ch.max_frame, ProtocolError)
        ch.start(self.transport, self.peer, 1 if self.python else 2 if self.pyotp else 0,
                 self.loads if self.pyotp else None, self.kernel.kernel_pid,
                 bool(both & hs.ALIAS), self.payload_exits, self.unlink_id, rest)
        assert self.transport is not None
        self.transport.set_protocol(ch)
        self.kernel.conn_up(self)  # type: ignore[arg-type]
        if ch.up:
            ch.resume()

    # -- the channel's interface back to Python ---------------------------------------------

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
