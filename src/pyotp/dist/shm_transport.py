"""An asyncio transport over a shared-memory ring pair (pyotp._core.ShmRingPair).

To the distribution code it is a socket transport: ``write``/``writelines``/``close``/
``abort``/``get_extra_info``/flow control, and it drives a ``BufferedProtocol``
(``get_buffer``/``buffer_updated``) or a plain ``Protocol`` (``data_received``), then
``connection_lost``. Bytes travel through the rings; a connected stream socket (one end
per node, inherited or passed by descriptor) is only the doorbell: one byte wakes a peer
that sleeps on an empty ring or waits for space, and its EOF tells that the peer closed
or died (the kernel closes it even on SIGKILL). Where the platform has no anonymous
shared memory the same socket carries the data instead (``open_local_link``), after a
logged notice.

The ring is untrusted input: a bad index from the peer closes this connection with a
logged reason (ShmRingError), never the node.

>>> import asyncio, socket
>>> from pyotp import _core
>>> from pyotp.dist.shm_transport import ShmTransport
>>> async def demo():
...     s0, s1 = socket.socketpair()
...     fd = _core.shm_segment(1 << 16)
...     got = asyncio.get_running_loop().create_future()
...     class P(asyncio.Protocol):
...         def data_received(self, data): got.set_result(data)
...     a = ShmTransport(_core.ShmRingPair(fd, 1 << 16, 0), s0, asyncio.Protocol())
...     b = ShmTransport(_core.ShmRingPair(fd, 1 << 16, 1), s1, P())
...     a.write(b"hi")
...     return await got
>>> asyncio.run(demo())
b'hi'
"""
import asyncio
import logging
import socket
from typing import Any, Dict, List, Optional, Union

from .. import _core

__all__ = ["ShmTransport", "RING_SIZE", "open_local_link", "fallback_notice"]

_log = logging.getLogger("pyotp.dist")

RING_SIZE = 1 << 20             # bytes per direction: a few loop turns of flushed frames
_HIGH_WATER = 4 * RING_SIZE     # queued beyond the ring: pause the protocol's writing
_notice_logged = False


class ShmTransport(asyncio.Transport):
    """A transport over one end of a ring pair, woken through ``bell`` (see the module)."""

    def __init__(self, ring: Any, bell: socket.socket, protocol: asyncio.BaseProtocol,
                 loop: Optional[asyncio.AbstractEventLoop] = None,
                 extra: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(extra)
        self._loop = loop or asyncio.get_running_loop()
        self._ring = ring
        self._bell = bell
        bell.setblocking(False)
        self._fd = bell.fileno()
        ring.attach_bell(self._fd)
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._pending: List[bytes] = []     # what did not fit in the ring yet, in order
        self._pending_size = 0
        self._high = _HIGH_WATER
        self._low = _HIGH_WATER // 4
        self._paused_writing = False
        self._reading = True
        self._closing = False
        self._lost = False
        self._peer_gone = False
        self._loop.add_reader(self._fd, self._on_bell)
        self._loop.call_soon(self._start)

    # -- asyncio.BaseTransport -----------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("shm", self._fd)
        if name in ("socket", "ssl_object", "sslcontext"):
            return None     # no socket to tune or spin on: the ring spins for itself
        return super().get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close after the queued bytes went into the ring (the peer still reads them)."""
        if self._closing:
            return
        self._closing = True
        if not self._pending:
            self._finish(None)

    def abort(self) -> None:
        self._closing = True
        self._pending.clear()
        self._pending_size = 0
        self._finish(None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # -- reading ---------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._loop.call_soon(self._drain)

    def _start(self) -> None:
        if self._lost:
            return
        self._protocol.connection_made(self)
        self._drain()

    def _on_bell(self) -> None:
        try:
            alive = self._ring.take_bells()
        except OSError as e:
            self._peer_closed(e)
            return
        except ValueError:
            return              # released: the connection already ended
        if not alive:
            self._peer_closed(None)
            return
        self._pump()
        self._drain()

    def _peer_closed(self, exc: Optional[BaseException]) -> None:
        # everything the peer wrote before it closed or died is in the ring: deliver it
        self._peer_gone = True
        self._loop.remove_reader(self._fd)
        self._drain()
        self._finish(exc)

    def _drain(self) -> None:
        """Hand what is in the ring to the protocol; spin briefly while it keeps coming
        (as the runtime's waiting policy allows), then publish that we sleep. The loop
        itself is compiled (ShmRingPair.drain): no Python runs here per batch."""
        if self._lost:
            return
        try:
            self._ring.drain(self)
        except _core.ShmRingError as e:
            _log.error("pyotp dist: closing a shared-memory connection: %s", e)
            self.abort()
        except Exception as e:
            # the protocol's own failure while consuming: as a socket transport does
            _log.error("pyotp dist: shared-memory transport read failed: %r", e)
            self._fatal(e)

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: Union[bytes, bytearray, memoryview]) -> None:
        if self._closing or self._lost or not data:
            return
        if self._pending:
            self._queue(bytes(data))
            return
        try:
            n = self._ring.put(data)        # copies, and rings if the peer sleeps
        except _core.ShmRingError as e:
            _log.error("pyotp dist: closing a shared-memory connection: %s", e)
            self.abort()
            return
        if n < len(data):
            # the caller may reuse its buffer: keep a copy of the rest
            self._queue(bytes(memoryview(data).cast("B")[n:]))
            self._pump()

    def writelines(self, list_of_data: Any) -> None:
        for d in list_of_data:
            self.write(d)

    def _queue(self, b: bytes) -> None:
        self._pending.append(b)
        self._pending_size += len(b)
        if not self._paused_writing and self._pending_size > self._high:
            self._paused_writing = True
            try:
                self._protocol.pause_writing()
            except Exception:
                _log.exception("pyotp dist: pause_writing failed")

    def _pump(self) -> None:
        """Move queued bytes into the ring; wait for a wake-up when it is full."""
        ring = self._ring
        try:
            while self._pending and not self._lost:
                head = self._pending[0]
                n = ring.put(head)
                if n:
                    self._pending_size -= n
                    if n == len(head):
                        self._pending.pop(0)
                    else:
                        self._pending[0] = head[n:]
                    continue
                if ring.wait_space():
                    return          # the reader rings when it made room
        except _core.ShmRingError as e:
            _log.error("pyotp dist: closing a shared-memory connection: %s", e)
            self.abort()
            return
        if self._paused_writing and self._pending_size <= self._low:
            self._paused_writing = False
            try:
                self._protocol.resume_writing()
            except Exception:
                _log.exception("pyotp dist: resume_writing failed")
        if self._closing and not self._pending:
            self._finish(None)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a shared-memory transport cannot half-close")

    def get_write_buffer_size(self) -> int:
        return self._pending_size

    def get_write_buffer_limits(self) -> "tuple[int, int]":
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        if high is None:
            high = _HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError("high (%r) must be >= low (%r) must be >= 0" % (high, low))
        self._high, self._low = high, low

    # -- the end -----------------------------------------------------------------------------

    def _fatal(self, exc: BaseException) -> None:
        self._closing = True
        self._pending.clear()
        self._finish(exc)

    def _finish(self, exc: Optional[BaseException]) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        try:
            self._loop.remove_reader(self._fd)
        except (ValueError, OSError):
            pass
        try:
            self._bell.close()      # the peer's EOF: it drains what we wrote, then ends
        except OSError:
            pass
        self._loop.call_soon(self._lost_cb, exc)

    def _lost_cb(self, exc: Optional[BaseException]) -> None:
        try:
            self._protocol.connection_lost(exc if exc is None or isinstance(exc, Exception)
                                           else ConnectionError(repr(exc)))
        finally:
            self._ring.release()


def open_local_link(sock: socket.socket, ring: Any, protocol: asyncio.BaseProtocol) -> None:
    """Start ``protocol`` on one end of a local link: over ``ring`` (a ShmRingPair end,
    ``sock`` then only rings the bell) or, with ``ring`` None, over ``sock`` itself (the
    fallback where the platform has no anonymous shared memory). Runs on the loop thread
    and returns at once; the protocol's ``connection_made`` follows from the loop."""
    loop = asyncio.get_running_loop()
    if ring is not None:
        ShmTransport(ring, sock, protocol, loop)
        return

    async def over_socket() -> None:
        try:
            await loop.connect_accepted_socket(lambda: protocol, sock)
        except OSError as e:
            _log.error("pyotp dist: a local link failed to start: %s", e)
            sock.close()

    loop.create_task(over_socket())


def fallback_notice(reason: BaseException) -> None:
    """Log, once per process, that local links use sockets instead of shared memory."""
    global _notice_logged
    if not _notice_logged:
        _notice_logged = True
        _log.warning("pyotp: no shared memory for local node links (%s): using Unix "
                     "sockets instead", reason)
