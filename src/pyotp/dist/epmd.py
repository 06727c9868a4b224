"""EPMD, the Erlang Port Mapper Daemon: a client (register a node, look a node's port up,
list names) and a small asyncio server that pyotp starts in-process when no EPMD runs.

Every request travels on its own TCP connection, prefixed by a 2-byte length:

- ``ALIVE2_REQ`` (120) registers a node; the reply ``ALIVE2_X_RESP`` (118) carries the
  node's *creation*. The connection stays open: closing it unregisters the node.
- ``PORT_PLEASE2_REQ`` (122) asks for a node's port; the reply is ``PORT2_RESP`` (119).
- ``NAMES_REQ`` (110) lists ``name X at port N`` lines.

pyotp nodes register with the ``extra`` field set to ``b"pyotp"``, so an initiating pyotp
node knows before its handshake whether the peer is another pyotp node (it then offers the
python-value extension and a visible connection) or an Erlang node (hidden connection).

Every network step has a timeout: an unreachable EPMD, or a port 4369 held by something
that does not speak EPMD, gives :class:`EpmdError` with a clear message, never a hang.

>>> server = await EpmdServer.start("127.0.0.1", 0)
>>> reg = await register("demo", 4242, port=server.port)
>>> await port_please("demo", "127.0.0.1", port=server.port)
EpmdEntry(name='demo', port=4242, node_type=77, protocol=0, highest=6, lowest=6, extra=b'pyotp')
>>> reg.close(); server.close()
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

_log = logging.getLogger("pyotp.dist")

EPMD_PORT = 4369
"""The standard EPMD port (``ERL_EPMD_PORT`` overrides it, as for Erlang)."""

ALIVE2_REQ = 120
ALIVE2_X_RESP = 118
ALIVE2_RESP = 121
PORT_PLEASE2_REQ = 122
PORT2_RESP = 119
NAMES_REQ = 110

NODE_NORMAL = 77
NODE_HIDDEN = 72

PYOTP_EXTRA = b"pyotp"
"""The EPMD ``extra`` field pyotp nodes register with."""

DEFAULT_TIMEOUT = 3.0


class EpmdError(ConnectionError):
    """EPMD could not be reached, refused a request, or something else answered.

    >>> raise EpmdError("no EPMD on 127.0.0.1:4369")
    Traceback (most recent call last):
    EpmdError: no EPMD on 127.0.0.1:4369
    """


def default_port() -> int:
    """The EPMD port: ``ERL_EPMD_PORT`` from the environment, else 4369.

    >>> default_port()
    4369
    """
    v = os.environ.get("ERL_EPMD_PORT")
    if v:
        try:
            return int(v)
        except ValueError:
            raise EpmdError("ERL_EPMD_PORT=%r is not a port number" % v) from None
    return EPMD_PORT


@dataclass(frozen=True)
class EpmdEntry:
    """What EPMD knows about a node (the PORT2_RESP fields)."""
    name: str
    port: int
    node_type: int
    protocol: int
    highest: int
    lowest: int
    extra: bytes


async def _open(host: str, port: int, timeout: float) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except asyncio.TimeoutError:
        raise EpmdError("EPMD at %s:%d did not accept a connection within %.1fs" % (host, port, timeout)) from None
    except OSError as e:
        raise EpmdError("no EPMD at %s:%d (%s)" % (host, port, e.strerror or e)) from None


class Registration:
    """A node's registration with EPMD: keep it (its socket) open for the node's lifetime;
    :meth:`close` unregisters. ``lost`` is a future that completes if EPMD drops the
    connection (EPMD stopped): the node then registers again.
    """

    def __init__(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader, creation: int) -> None:
        self.creation = creation
        self._writer = writer
        loop = asyncio.get_running_loop()
        self.lost: "asyncio.Future[None]" = loop.create_future()
        self._watch = loop.create_task(self._watch_eof(reader))

    async def _watch_eof(self, reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(64):
                pass
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if not self.lost.done():
                self.lost.set_result(None)

    def close(self) -> None:
        """Unregister (close the socket)."""
        self._watch.cancel()
        try:
            self._writer.close()
        except Exception:  # pragma: no cover - closing a dead socket
            pass


async def register(name: str, node_port: int, *, hidden: bool = False, extra: bytes = PYOTP_EXTRA,
                   host: str = "127.0.0.1", port: Optional[int] = None,
                   timeout: float = DEFAULT_TIMEOUT) -> Registration:
    """Register ``name`` (the part before ``@``) listening on ``node_port``.

    >>> server = await EpmdServer.start("127.0.0.1", 0)     # an EPMD of our own
    >>> reg = await register("a", 40001, port=server.port)
    >>> reg.creation > 0
    True
    >>> reg.close(); server.close()
    """
    port = default_port() if port is None else port
    nb = name.encode("utf-8")
    body = struct.pack(">BHBBHHH", ALIVE2_REQ, node_port, NODE_HIDDEN if hidden else NODE_NORMAL,
                       0, 6, 6, len(nb)) + nb + struct.pack(">H", len(extra)) + extra
    reader, writer = await _open(host, port, timeout)
    try:
        writer.write(struct.pack(">H", len(body)) + body)
        try:
            head = await asyncio.wait_for(reader.readexactly(2), timeout)
        except asyncio.TimeoutError:
            raise EpmdError("port %d on %s is in use by something that is not EPMD (no answer to "
                            "ALIVE2_REQ within %.1fs)" % (port, host, timeout)) from None
        except (asyncio.IncompleteReadError, OSError):
            raise EpmdError("EPMD at %s:%d closed the connection when registering %r (is the "
                            "port held by something that is not EPMD?)" % (host, port, name)) from None
        tag, result = head[0], head[1]
        try:
            if tag == ALIVE2_X_RESP:
                creation = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), timeout))[0]
            elif tag == ALIVE2_RESP:
                creation = struct.unpack(">H", await asyncio.wait_for(reader.readexactly(2), timeout))[0]
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
            raise EpmdError("EPMD at %s:%d sent a truncated ALIVE2 reply" % (host, port)) from None
        if tag not in (ALIVE2_X_RESP, ALIVE2_RESP):
            raise EpmdError("port %d on %s is in use by something that is not EPMD (answered %r)"
                            % (port, host, head))
        if result != 0:
            raise EpmdError("EPMD refused to register %r (result %d): the name is already in use "
                            "on this host" % (name, result))
    except BaseException:
        writer.close()
        raise
    return Registration(writer, reader, creation or 1)


async def port_please(name: str, host: str, *, port: Optional[int] = None,
                      timeout: float = DEFAULT_TIMEOUT) -> Optional[EpmdEntry]:
    """Look ``name`` up in the EPMD on ``host``: its entry, or None if not registered.

    >>> server = await EpmdServer.start("127.0.0.1", 0)     # an EPMD of our own
    >>> reg = await register("a", 40001, port=server.port)
    >>> (await port_please("a", "127.0.0.1", port=server.port)).port
    40001
    >>> reg.close(); server.close()
    """
    port = default_port() if port is None else port
    nb = name.encode("utf-8")
    reader, writer = await _open(host, port, timeout)
    try:
        writer.write(struct.pack(">HB", 1 + len(nb), PORT_PLEASE2_REQ) + nb)
        try:
            data = await asyncio.wait_for(reader.read(65536 + 16), timeout)
            while True:
                more = await asyncio.wait_for(reader.read(65536), timeout)
                if not more:
                    break
                data += more
        except asyncio.TimeoutError:
            raise EpmdError("EPMD at %s:%d did not answer PORT_PLEASE2_REQ within %.1fs"
                            % (host, port, timeout)) from None
        except OSError as e:
            raise EpmdError("EPMD at %s:%d failed: %s" % (host, port, e)) from None
    finally:
        writer.close()
    if len(data) < 2 or data[0] != PORT2_RESP:
        raise EpmdError("unexpected answer from EPMD at %s:%d: %r" % (host, port, data[:16]))
    if data[1] != 0:
        return None
    try:
        nport, ntype, proto, hi, lo, nlen = struct.unpack_from(">HBBHHH", data, 2)
        nm = data[12:12 + nlen].decode("utf-8")
        (elen,) = struct.unpack_from(">H", data, 12 + nlen)
        extra = bytes(data[14 + nlen:14 + nlen + elen])
    except (struct.error, UnicodeDecodeError):
        raise EpmdError("malformed PORT2_RESP from EPMD at %s:%d" % (host, port)) from None
    return EpmdEntry(nm, nport, ntype, proto, hi, lo, extra)


async def names(host: str = "127.0.0.1", *, port: Optional[int] = None,
                timeout: float = DEFAULT_TIMEOUT) -> List[Tuple[str, int]]:
    """The nodes registered with the EPMD on ``host``, as (name, port) pairs.

    >>> server = await EpmdServer.start("127.0.0.1", 0)     # an EPMD of our own
    >>> reg = await register("a", 40001, port=server.port)
    >>> await names(port=server.port)
    [('a', 40001)]
    >>> reg.close(); server.close()
    """
    port = default_port() if port is None else port
    reader, writer = await _open(host, port, timeout)
    try:
        writer.write(struct.pack(">HB", 1, NAMES_REQ))
        try:
            data = await asyncio.wait_for(reader.read(), timeout)
        except asyncio.TimeoutError:
            raise EpmdError("EPMD at %s:%d did not answer NAMES_REQ" % (host, port)) from None
        except OSError as e:
            raise EpmdError("EPMD at %s:%d failed: %s" % (host, port, e)) from None
    finally:
        writer.close()
    out = []
    for line in data[4:].decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "name" and parts[2] == "at" and parts[3] == "port":
            out.append((parts[1], int(parts[4])))
    return out


# ---------------------------------------------------------------------------------------
# The server


MAX_PER_HOST = 128        # EpmdServer: registrations from one address
MAX_CONNECTIONS = 512     # EpmdServer: connections at once (registrations hold theirs)


class EpmdServer:
    """An in-process EPMD (ALIVE2_REQ, PORT_PLEASE2_REQ, NAMES_REQ), for hosts where no
    EPMD runs. Erlang nodes can use it as well as pyotp nodes.

    Bounded: at most ``max_per_host`` registrations from one address (more get the
    ALIVE2 error answer) and ``max_connections`` connections at once (more are closed at
    once), so that registrations cannot use up the hosting node's file descriptors.

    >>> srv = await EpmdServer.start("127.0.0.1", 0, max_per_host=16)   # 0: any free port
    >>> srv.port > 0
    True
    >>> srv.close()
    """

    def __init__(self, max_per_host: int = MAX_PER_HOST, max_connections: int = MAX_CONNECTIONS) -> None:
        self.max_per_host = max_per_host
        self.max_connections = max_connections
        self.connections = 0
        self._per_host: Dict[str, int] = {}
        self._refused = 0
        self.nodes: Dict[str, EpmdEntry] = {}
        self._owners: Dict[str, asyncio.StreamWriter] = {}
        self._creation = random.randint(1, 0x7FFFFFFF)
        self._server: Optional[asyncio.AbstractServer] = None
        self.port = 0
        self.host = ""

    @classmethod
    async def start(cls, host: str = "127.0.0.1", port: Optional[int] = None, *,
                    max_per_host: int = MAX_PER_HOST,
                    max_connections: int = MAX_CONNECTIONS) -> "EpmdServer":
        """Listen on host:port (port 0 picks a free one; see ``.port``). Raises OSError if
        the port is taken."""
        for opt, v in (("max_per_host", max_per_host), ("max_connections", max_connections)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError("%s must be an int, got %r" % (opt, v))
            if v < 1:
                raise ValueError("%s must be >= 1, got %d" % (opt, v))
        self = cls(max_per_host, max_connections)
        port = default_port() if port is None else port
        self._server = await asyncio.start_server(self._client, host, port, reuse_address=True)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        """Stop listening and drop every registration."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._owners.values()):
            w.close()
        self._owners.clear()
        self.nodes.clear()

    def _refuse(self, what: str) -> None:
        self._refused += 1
        if self._refused & (self._refused - 1) == 0:       # 1, 2, 4, ...: not a log flood
            _log.warning("pyotp EPMD: refused %s (%d refusals so far)", what, self._refused)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= self.max_connections:
            self._refuse("a connection: %d open (max_connections)" % self.connections)
            writer.transport.abort()
            return
        self.connections += 1
        registered: Optional[str] = None
        host = ""
        try:
            peer = writer.get_extra_info("peername")
            host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
            head = await asyncio.wait_for(reader.readexactly(2), 10.0)
            (n,) = struct.unpack(">H", head)
            if n == 0:
                return
            body = await asyncio.wait_for(reader.readexactly(n), 10.0)
            op = body[0]
            if op == ALIVE2_REQ:
                if self._per_host.get(host, 0) >= self.max_per_host:
                    self._refuse("a registration from %s: it has %d (max_per_host)"
                                 % (host, self._per_host[host]))
                    writer.write(struct.pack(">BBI", ALIVE2_X_RESP, 1, 0))
                    return
                registered = self._alive2(body, writer)
                if registered is None:
                    return
                self._per_host[host] = self._per_host.get(host, 0) + 1
                while await reader.read(4096):        # held open while the node lives
                    pass
            elif op == PORT_PLEASE2_REQ:
                self._port_please(body[1:].decode("utf-8", "replace"), writer)
            elif op == NAMES_REQ:
                lines = "".join("name %s at port %d\n" % (e.name, e.port) for e in self.nodes.values())
                writer.write(struct.pack(">I", self.port) + lines.encode("utf-8"))
            else:
                _log.info("pyotp EPMD: ignoring request %d", op)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError, struct.error,
                IndexError, UnicodeDecodeError):
            pass
        finally:
            self.connections -= 1
            if registered is not None:
                left = self._per_host.get(host, 0) - 1
                if left > 0:
                    self._per_host[host] = left
                else:
                    self._per_host.pop(host, None)
            if registered is not None and self._owners.get(registered) is writer:
                del self._owners[registered]
                self.nodes.pop(registered, None)
            try:
                await writer.drain()
            except Exception:
                pass
            writer.close()

    def _alive2(self, body: bytes, writer: asyncio.StreamWriter) -> Optional[str]:
        nport, ntype, proto, hi, lo, nlen = struct.unpack_from(">HBBHHH", body, 1)
        name = body[11:11 + nlen].decode("utf-8")
        (elen,) = struct.unpack_from(">H", body, 11 + nlen)
        extra = bytes(body[13 + nlen:13 + nlen + elen])
        if name in self.nodes or not name:
            writer.write(struct.pack(">BBI", ALIVE2_X_RESP, 1, 0))
            return None
        self._creation = self._creation % 0xFFFFFFFE + 1
        self.nodes[name] = EpmdEntry(name, nport, ntype, proto, hi, lo, extra)
        self._owners[name] = writer
        writer.write(struct.pack(">BBI", ALIVE2_X_RESP, 0, self._creation))
        return name

    def _port_please(self, name: str, writer: asyncio.StreamWriter) -> None:
        e = self.nodes.get(name)
        if e is None:
            writer.write(bytes([PORT2_RESP, 1]))
            return
        nb = e.name.encode("utf-8")
        writer.write(struct.pack(">BBHBBHHH", PORT2_RESP, 0, e.port, e.node_type, e.protocol,
                                 e.highest, e.lowest, len(nb)) + nb
                     + struct.pack(">H", len(e.extra)) + e.extra)


async def _main(host: str, port: int) -> None:  # pragma: no cover - manual tool
    srv = await EpmdServer.start(host, port)
    print("pyotp EPMD listening on %s:%d" % (host, srv.port), flush=True)
    await asyncio.Event().wait()


# `python -m pyotp.dist.epmd` runs this file as __main__ after `import pyotp.dist` has
# already imported it as pyotp.dist.epmd; runpy warns about that ("found in sys.modules
# ... unpredictable behaviour") unless the module has a __path__. The __main__ copy only
# serves EPMD, so the warning says nothing useful to the user: an empty __path__ silences it.
__path__: "list[str]" = []


def main(argv: "list[str] | None" = None) -> int:  # pragma: no cover - manual tool
    """``python -m pyotp.dist.epmd [port]``: serve EPMD until Ctrl-C (exit status 0)."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    try:
        port = int(args[0]) if args else default_port()
    except ValueError:
        print("usage: python -m pyotp.dist.epmd [port]", file=sys.stderr)
        return 2
    try:
        asyncio.run(_main("0.0.0.0", port))
    except KeyboardInterrupt:
        print("pyotp EPMD stopped", flush=True)
    except OSError as e:
        print("pyotp EPMD: cannot listen on port %d: %s" % (port, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - `python -m pyotp.dist.epmd [port]`
    import sys
    sys.exit(main())
