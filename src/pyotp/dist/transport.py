"""Carriers: how the bytes of a distribution connection get between two nodes.

The layers of one connection, bottom up (docs/distribution.md, "Architecture"):

1. a **carrier** (this module) listens for peers and dials them; each connection it
   makes is an asyncio-style transport driving a protocol;
2. the protocol is a :class:`~pyotp.dist.connection.Connection`: it runs the handshake,
   then (pyotp.dist.channel) makes its compiled channel (``_core.DistChannel``) the
   transport's protocol (``set_protocol``), which owns the frames, buffers and control
   messages from then on;
   the channel only ever sees the transport through the contract below, so a new
   carrier (shared memory, ...) plugs in without touching frames.

The contract a carrier's transports keep with the protocol (asyncio's
``BufferedProtocol``/``Transport`` contract, the subset the connection uses):

- it calls ``protocol.connection_made(transport)`` once, then for every read
  ``buf = protocol.get_buffer(sizehint)`` (a writable buffer) and
  ``protocol.buffer_updated(nbytes)`` after writing ``nbytes`` bytes at the start of
  ``buf``, in stream order, on the node's loop thread; finally
  ``protocol.connection_lost(exc_or_None)`` once;
- the protocol calls ``transport.write(bytes_like)``, ``transport.writelines(chunks)``
  (bytes-likes, written in order; the transport must not keep a view of a chunk after the
  call returns unless it copied it), ``transport.close()`` (after what was written),
  ``transport.abort()`` (at once), ``transport.is_closing()``,
  ``transport.set_protocol(protocol)`` (from inside ``buffer_updated``: the next read goes
  to the new protocol, an ``asyncio.BufferedProtocol``) and
  ``transport.get_extra_info(name)``: ``"socket"`` (the socket that carries the stream
  as it is, which the channel may poll and read for a busy wait, and send on directly while
  ``transport.get_write_buffer_size()`` is 0; or None) and ``"ssl_object"`` (not None: the
  channel never touches the socket); unknown names give None;
- ``pause_writing``/``resume_writing`` may be called (flow control; the connection lets
  the transport buffer).

A carrier (:class:`Carrier`) has ``listen`` and ``connect``; ``needs_port`` says whether
peers are found by port (EPMD, or ``Node.set_peer_port``) or by the node name alone.

>>> carrier = UnixCarrier("/tmp/pyotp-nodes")
>>> carrier.path("a@127.0.0.1")
'/tmp/pyotp-nodes/a@127.0.0.1'
"""
from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, Callable

__all__ = ["Carrier", "TcpCarrier", "TlsCarrier", "UnixCarrier", "carrier_for", "no_delay"]

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class Carrier:
    """How a node listens for and dials its peers. Subclasses implement :meth:`listen`
    and :meth:`connect`; the kernel calls them on its loop."""

    #: peers are found by (host, port): EPMD or ``Node.set_peer_port``
    needs_port = True
    name = "carrier"

    async def listen(self, loop: asyncio.AbstractEventLoop, factory: ProtocolFactory, node: str,
                     host: str, port: int) -> "tuple[asyncio.AbstractServer, int]":
        """Start accepting connections for this node (``factory()`` makes the protocol of
        each); return the server (``close()`` stops it) and the port bound (0 when the
        carrier has none)."""
        raise NotImplementedError

    async def connect(self, loop: asyncio.AbstractEventLoop, factory: ProtocolFactory, node: str,
                      host: str, port: int) -> None:
        """Dial ``node`` (at ``host``/``port`` when :attr:`needs_port`); the protocol
        ``factory()`` makes drives the new connection."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return "<%s>" % type(self).__name__


class TcpCarrier(Carrier):
    """Plain TCP, Erlang's ``inet_tcp_dist``: the default."""
    name = "tcp"

    def _ssl(self, server: bool) -> Any:
        return None

    async def listen(self, loop: asyncio.AbstractEventLoop, factory: ProtocolFactory, node: str,
                     host: str, port: int) -> "tuple[asyncio.AbstractServer, int]":
        server = await loop.create_server(factory, host, port, ssl=self._ssl(True), reuse_address=True)
        return server, server.sockets[0].getsockname()[1]

    async def connect(self, loop: asyncio.AbstractEventLoop, factory: ProtocolFactory, node: str,
                      host: str, port: int) -> None:
        ctx = self._ssl(False)
        await loop.create_connection(factory, host, port, ssl=ctx,
                                     server_hostname=host if ctx is not None else None)


class TlsCarrier(TcpCarrier):
    """TCP with TLS (Erlang's ``inet_tls_dist``): ``server`` is the ``ssl.SSLContext`` of
    accepted connections, ``client`` that of dialled ones."""
    name = "tls"

    def __init__(self, server: Any, client: Any) -> None:
        self.server = server
        self.client = client

    def _ssl(self, server: bool) -> Any:
        return self.server if server else self.client


class UnixCarrier(Carrier):
    """Unix domain sockets between nodes of one machine: a node listens on
    ``<directory>/<node name>`` and dials its peers there, so it needs no port and no
    EPMD (start it with ``epmd="none"``). The directory's permissions decide who may
    connect; the cookie is checked as on TCP."""
    name = "unix"
    needs_port = False

    def __init__(self, directory: str) -> None:
        if not isinstance(directory, str) or not directory:
            raise ValueError("UnixCarrier needs a directory, got %r" % (directory,))
        self.directory = directory

    def path(self, node: str) -> str:
        """The socket path of ``node``."""
        if "/" in node or node.startswith("."):
            raise ValueError("%r cannot name a socket file" % (node,))
        return os.path.join(self.directory, node)

    async def listen(self, loop: asyncio.AbstractEventLoop, factory: ProtocolFactory, node: str,
                     host: str, port: int) -> "tuple[asyncio.AbstractServer, int]":
        path = self.path(node)
        try:
            os.unlink(path)          # a socket file left by an earlier run of this node
        except FileNotFoundError:
            pass
        server = await loop.create_unix_server(factory, path)
        return server, 0

    async def connect(self, loop: asyncio.AbstractEventLoop, factory: ProtocolFactory, node: str,
                      host: str, port: int) -> None:
        await loop.create_unix_connection(factory, self.path(node))

    def __repr__(self) -> str:
        return "<UnixCarrier %s>" % self.directory


def no_delay(transport: Any) -> None:
    """Send each write at once (TCP_NODELAY) where the transport has a TCP socket:
    distribution batches its frames itself, and Nagle's delay would hold a call's request
    until the reply to an earlier one came back. Other carriers are left as they are."""
    try:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


def carrier_for(transport: Any, server_ssl: Any, client_ssl: Any) -> Carrier:
    """``Node.start``'s ``transport`` option as a carrier: None or ``"tcp"`` (TCP, or TLS
    when ``tls`` was given), ``"unix:<directory>"``, or a :class:`Carrier`.

    >>> carrier_for("unix:/tmp/nodes", None, None)
    <UnixCarrier /tmp/nodes>
    """
    if isinstance(transport, Carrier):
        return transport
    if transport is None or transport == "tcp":
        if server_ssl is not None or client_ssl is not None:
            return TlsCarrier(server_ssl, client_ssl)
        return TcpCarrier()
    if isinstance(transport, str) and transport.startswith("unix:") and len(transport) > 5:
        if server_ssl is not None or client_ssl is not None:
            raise ValueError("tls applies to the tcp transport, not to %r" % (transport,))
        return UnixCarrier(transport[5:])
    raise ValueError("transport must be 'tcp', 'unix:<directory>' or a pyotp.dist.transport.Carrier, "
                     "got %r" % (transport,))
