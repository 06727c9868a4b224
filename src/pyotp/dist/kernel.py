"""The node's distribution kernel (Erlang's ``net_kernel``): connections, node monitors,
ticks and the core's remote-signal handler. Users go through :class:`pyotp.dist.Node`
(node.py); rpc/spawn/erpc live in rpc.py and the processes every node runs (net_kernel,
rex, the group leader) in system.py.

One pyotp node per OS process, so the kernel is a module-level singleton (``_kernel``,
read it with :func:`kernel`) that exists between ``Node.start`` and ``Node.stop``. It owns:

- the listener, the EPMD registration (or pyotp's own EPMD server), the tick timer;
- the table of connections (``conns``) and of connections being set up (``pending``:
  signals sent meanwhile are queued and replayed in order once the node is up, or turned
  into ``noconnection`` exits / DOWNs if it never comes up);
- the core's remote-signal handler (``_set_remote_handler``): every link, monitor, exit
  signal that involves a remote pid arrives here and leaves as a control message, and so
  do sends, calls and replies while their node is not connected or from another thread
  (once a node is connected, the core hands those straight to its connection's compiled
  channel, ``_core.DistChannel``, registered here in ``conn_up``);
- per-peer settings (``set_peer``: a cookie, a port when there is no EPMD).

What is in flight on a connection (calls, monitors, spawn and rpc requests) is in that
connection's channel, in one table by reference (``DistChannel.track``); when the
connection goes, ``_node_down`` takes that table and fails what waits.

Imports go one way: node.py -> system.py -> rpc.py -> kernel.py -> connection.py ->
channel.py (rpc.py imports channel.py's ProtocolError too). The kernel reaches rpc only
through ``self.rpc`` (the rpc module, handed in by ``Node.start``).

Everything runs on the node's loop thread; the one entry point that may be called from
other threads (the remote handler, for ``pyotp.send`` from a thread) hops to the loop.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
from typing import (Any, Callable, Dict, Generator, Iterable, List, Optional, Set, Tuple, Union,
                    cast)

from .. import _core, telemetry
from ..etf import Atom, Pid, Reference, SafeUnpickler, encode_term_into
from . import epmd as _epmd
from . import handshake as hs
from .connection import Connection
from .transport import Carrier, carrier_for

_log = logging.getLogger("pyotp.dist")

A_YES = Atom("yes")
A_BADRPC = Atom("badrpc")
A_EXIT = Atom("EXIT")
A_NODEDOWN = Atom("nodedown")
A_TIMEOUT = Atom("timeout")
A_RETURN = Atom("return")
A_THROW = Atom("throw")
A_EXIT_CLASS = Atom("exit")
A_ERROR = Atom("error")
A_ERPC = Atom("erpc")
A_EXECUTE_CALL = Atom("execute_call")
A_EXECUTE_CAST = Atom("execute_cast")
A_MONITOR = Atom("monitor")
A_LINK = Atom("link")
A_UNDEF = Atom("undef")
A_NOT_ALLOWED = Atom("not_allowed")
A_REX = Atom("rex")
A_OK = Atom("ok")
A_GEN_CALL = Atom("$gen_call")
BUSY_WAIT_DEFAULT = "auto"  # Node.start's default busy_wait (see core/wait_policy.pyx)
# Node.start's default limits (docs/distribution.md, "Limits")
MAX_FRAME_SIZE = 256 << 20        # bytes of one frame after the handshake
MAX_INFLATED_SIZE = 64 << 20      # bytes a compressed term (tag 80) may inflate to
MAX_HANDSHAKES = 64               # incoming connections in their handshake at once
MAX_TERM_DEPTH = _core.ETF_MAX_DEPTH   # nesting of a received message (deeper: dropped)
A_GEN_CAST = Atom("$gen_cast")
A_NOTSUP = Atom("notsup")
A_BADARG = Atom("badarg")

SPAWN_FLAG_LINK = 1
SPAWN_FLAG_MONITOR = 2

_TIMED_OUT = object()

_kernel: Optional["NetKernel"] = None


class DistError(RuntimeError):
    """Distribution misuse or failure: the node is not started, started twice, a bad node
    name, a spawn that the remote node refused.

    >>> raise DistError("the node is not distributed: call await Node.start(...) first")
    Traceback (most recent call last):
    DistError: the node is not distributed: call await Node.start(...) first
    """


def _check_limit(option: str, value: Any, lo: int, hi: int) -> None:
    """A Node.start limit: an int in [lo, hi], else TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int, got %r" % (option, value))
    if not lo <= value <= hi:
        raise ValueError("%s must be from %d to %d, got %d" % (option, lo, hi, value))


def kernel() -> "NetKernel":
    """The running distribution kernel (DistError if the node is not distributed)."""
    if _kernel is None:
        raise DistError("the node is not distributed: call `await Node.start(name, cookie=...)` first")
    return _kernel


def running() -> Optional["NetKernel"]:
    """The running kernel, or None while the node is not distributed (what services and
    beam_api read instead of the module global)."""
    return _kernel


def _node_of(dest: Any) -> Optional[str]:
    if type(dest) is Pid:
        return dest.node
    if type(dest) is tuple and len(dest) == 2:
        return str(dest[1])
    return None


# a monitor/send target as it goes on the wire: the channel's rule
_wire_target = _core._dist_wire_target
# the kinds of entries in a channel's request table
_REQ_CALL = _core.DIST_REQUESTS["call"]
_REQ_SPAWN = _core.DIST_REQUESTS["spawn"]
_REQ_RPC = _core.DIST_REQUESTS["rpc"]


async def _await_with_timeout(fut: "asyncio.Future[Any]", timeout: Any) -> Any:
    """Await fut; after `timeout` seconds give _TIMED_OUT. Works inside pyotp processes
    (which are not asyncio tasks, so asyncio.wait_for/timeout cannot be used there)."""
    if timeout is None or timeout == "infinity":
        return await fut
    loop = asyncio.get_running_loop()

    def expire() -> None:
        if not fut.done():
            fut.set_result(_TIMED_OUT)
    h = loop.call_later(max(0.0, float(timeout)), expire)
    try:
        return await fut
    finally:
        h.cancel()


def _make_tls(tls: Any) -> Tuple[Any, Any]:
    """tls: None | (server_ctx, client_ctx) | dict(certfile, keyfile, cafile, verify=True,
    check_hostname=False). Returns (server ssl.SSLContext, client ssl.SSLContext)."""
    if tls is None:
        return None, None
    import ssl
    if isinstance(tls, tuple) and len(tls) == 2:
        return tls[0], tls[1]
    if isinstance(tls, dict):
        cert, key, ca = tls.get("certfile"), tls.get("keyfile"), tls.get("cafile")
        if not cert:
            raise DistError("tls needs at least a certfile (and keyfile, cafile)")
        verify = tls.get("verify", True)
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
        server.load_cert_chain(cert, key)
        server.verify_mode = ssl.CERT_REQUIRED if (verify and ca) else ssl.CERT_NONE
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        client.load_cert_chain(cert, key)
        client.check_hostname = bool(tls.get("check_hostname", False))
        client.verify_mode = ssl.CERT_REQUIRED if (verify and ca) else ssl.CERT_NONE
        return server, client
    raise DistError("tls must be None, (server_ssl_context, client_ssl_context) or a dict "
                    "with certfile/keyfile/cafile, got %r" % (tls,))


class _Pending:
    """A node being connected: queued signals and whoever waits for the outcome."""
    __slots__ = ("node", "ops", "future", "attempt", "task", "timer", "superseded", "redialed")

    def __init__(self, node: str, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.ops: List[Tuple[str, Tuple[Any, ...]]] = []
        self.future: "asyncio.Future[bool]" = loop.create_future()
        self.attempt: Optional[Connection] = None
        self.task: Optional["asyncio.Task[None]"] = None
        self.timer: Optional[asyncio.TimerHandle] = None
        self.superseded = False
        self.redialed = False




class _Done:
    """An awaitable that is already complete (what ``Node.stop`` returns)."""
    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())   # type: ignore[return-value]


_DONE = _Done()


class NetKernel:
    """The distribution state of this node (see the module documentation). Users go
    through :class:`Node`."""

    # Node.start(beam_visible=True): visible to BEAM nodes too (global_beam.py speaks
    # global's protocol to them); otherwise connections to BEAM nodes are hidden
    beam_visible = False

    def __init__(self, name: str, cookie: str, *, hidden: bool, listen_host: str, port: int,
                 net_ticktime: float, epmd: Union[str, int], tls: Any,
                 rpc_allow: Optional[Iterable[str]], setup_time: float,
                 python_payloads: Union[bool, Iterable[str]],
                 busy_wait: Union[str, float] = BUSY_WAIT_DEFAULT,
                 max_frame_size: int = MAX_FRAME_SIZE, max_inflated_size: int = MAX_INFLATED_SIZE,
                 max_handshakes: int = MAX_HANDSHAKES, max_term_depth: int = MAX_TERM_DEPTH,
                 epmd_max_per_host: int = _epmd.MAX_PER_HOST,
                 epmd_max_connections: int = _epmd.MAX_CONNECTIONS, transport: Any = None) -> None:
        if not isinstance(name, str) or name.count("@") != 1 or not all(name.split("@")):
            raise DistError("node name must look like 'name@host', got %r" % (name,))
        if not isinstance(cookie, str) or not cookie:
            raise DistError("cookie must be a non-empty str")
        if not (isinstance(net_ticktime, (int, float)) and net_ticktime > 0):
            raise DistError("net_ticktime must be seconds > 0, got %r" % (net_ticktime,))
        if not (epmd in ("auto", "none") or (isinstance(epmd, int) and 0 < epmd < 65536)):
            raise DistError("epmd must be 'auto', 'none' or a port number, got %r" % (epmd,))
        server_ssl, client_ssl = _make_tls(tls)
        try:
            self.carrier: Carrier = carrier_for(transport, server_ssl, client_ssl)
        except ValueError as e:
            raise DistError(str(e)) from None
        if not self.carrier.needs_port:
            epmd = "none"        # peers are found by name (a Unix socket path): no EPMD
        elif epmd == "none" and not port:
            raise DistError("epmd='none' needs a fixed port (port=...)")
        try:
            _core._wp_parse(busy_wait)
        except (TypeError, ValueError) as e:
            raise DistError(str(e)) from None
        _check_limit("max_frame_size", max_frame_size, 1 << 16, 0xFFFFFFFF)
        _check_limit("max_inflated_size", max_inflated_size, 0, 0xFFFFFFFF)
        _check_limit("max_handshakes", max_handshakes, 1, 1 << 20)
        _check_limit("max_term_depth", max_term_depth, 16, 1 << 30)
        self.max_term_depth = max_term_depth
        _check_limit("epmd_max_per_host", epmd_max_per_host, 1, 1 << 20)
        _check_limit("epmd_max_connections", epmd_max_connections, 1, 1 << 20)
        self.max_frame_size = max_frame_size
        self.max_inflated_size = max_inflated_size
        self.max_handshakes = max_handshakes
        self.epmd_limits = {"max_per_host": epmd_max_per_host,
                            "max_connections": epmd_max_connections}
        self._refused_handshakes = 0
        self.name = name
        self.alive, self.host = name.split("@")
        self.cookie = cookie
        self.cookies: Dict[str, str] = {}        # per peer (set_peer); else self.cookie
        self.hidden = hidden
        self.listen_host = listen_host
        self.port = port
        self.ticktime = float(net_ticktime)
        self.epmd_mode = epmd
        self.epmd_port = epmd if isinstance(epmd, int) else _epmd.default_port()
        self.rpc_allow = None if rpc_allow is None else frozenset(rpc_allow)
        self.setup_time = setup_time
        # None: no Python payloads (a pickle from a peer closes its connection)
        self.unpickler: Optional[SafeUnpickler] = (
            None if python_payloads is False or python_payloads is None
            else SafeUnpickler(() if python_payloads is True else python_payloads))
        self.busy_wait = busy_wait
        self.loop = asyncio.get_running_loop()
        self.loop_tid = threading.get_ident()
        self.creation = 0
        self.conns: Dict[str, Connection] = {}
        self.pending: Dict[str, _Pending] = {}
        # incoming connections in their handshake: they reserve nothing (no name) until
        # they prove the cookie; at most max_handshakes at once
        self.handshaking: Set[Connection] = set()
        self.node_watchers: Dict[Pid, bool] = {}
        # distribution services (add_service): name -> (on_message, on_nodeup, on_nodedown)
        self.services: Dict[str, Tuple[Any, Any, Any]] = {}
        self.peer_ports: Dict[str, int] = {}     # per peer (set_peer), without EPMD
        # the services' names whose messages from other nodes are handled at receipt, in
        # wire order: name -> on_message(conn, msg). The channels read it (REG_SEND);
        # only add_service/remove_service change it
        self.virtual: Dict[str, Callable[[Connection, Any], None]] = {}
        self.server: Optional[asyncio.AbstractServer] = None
        self.registration: Optional[_epmd.Registration] = None
        self.epmd_server: Optional[_epmd.EpmdServer] = None
        self.kernel_pid: Pid = cast(Pid, None)      # set by start()
        self.gl_pid: Pid = cast(Pid, None)
        self.system_pids: List[Pid] = []
        self._tick_handle: Optional[asyncio.TimerHandle] = None
        self._rereg_task: Optional["asyncio.Task[None]"] = None
        self.stopping = False
        # the rpc/spawn service: the module pyotp.dist.rpc, handed in by Node.start (rpc
        # imports this module, so the kernel reaches it only through this attribute)
        self.rpc: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        _core.wait_policy().configure(self.busy_wait)
        self.server, self.port = await self.carrier.listen(
            self.loop, lambda: Connection(self, False), self.name, self.listen_host, self.port)
        try:
            if self.epmd_mode == "none":
                self.creation = random.randint(1, 0xFFFFFFFE)
            else:
                await self._register()
        except BaseException:
            self.server.close()
            raise
        _core._set_local_node(self.name, self.creation)
        _core._set_remote_handler(self.remote_hook)
        self._tick_handle = self.loop.call_later(self.ticktime / 4, self._tick)
        _log.info("pyotp dist: node %s up on %s:%d (creation %d)", self.name, self.listen_host,
                  self.port, self.creation)

    @property
    def epmd_host(self) -> str:
        h = self.listen_host
        return "127.0.0.1" if h in ("", "0.0.0.0", "::", None) else h

    async def _register(self) -> None:
        hidden_epmd = False
        try:
            self.registration = await _epmd.register(self.alive, self.port, hidden=hidden_epmd,
                                                     host=self.epmd_host, port=self.epmd_port)
        except _epmd.EpmdError as e:
            if "no EPMD" not in str(e):
                raise
            try:
                self.epmd_server = await _epmd.EpmdServer.start(self.epmd_host, self.epmd_port,
                                                              **self.epmd_limits)
                _log.info("pyotp dist: no EPMD was running; started pyotp's own on %s:%d",
                          self.epmd_host, self.epmd_port)
            except OSError as oe:
                _log.info("pyotp dist: could not start an EPMD on port %d (%s); retrying", self.epmd_port, oe)
            self.registration = await _epmd.register(self.alive, self.port, hidden=hidden_epmd,
                                                     host=self.epmd_host, port=self.epmd_port)
        self.creation = self.registration.creation
        self.registration.lost.add_done_callback(self._registration_lost)

    def _registration_lost(self, _f: Any) -> None:
        if self.stopping:
            return
        _log.warning("pyotp dist: lost the EPMD registration of %s; registering again", self.name)
        self._rereg_task = self.loop.create_task(self._reregister())

    async def _reregister(self) -> None:
        for attempt in range(20):
            if self.stopping:
                return
            try:
                try:
                    reg = await _epmd.register(self.alive, self.port, host=self.epmd_host, port=self.epmd_port)
                except _epmd.EpmdError as e:
                    if "no EPMD" not in str(e):
                        raise
                    try:
                        self.epmd_server = await _epmd.EpmdServer.start(self.epmd_host, self.epmd_port,
                                                              **self.epmd_limits)
                    except OSError:
                        pass
                    reg = await _epmd.register(self.alive, self.port, host=self.epmd_host, port=self.epmd_port)
                self.registration = reg
                reg.lost.add_done_callback(self._registration_lost)
                _log.warning("pyotp dist: %s registered with EPMD again%s", self.name,
                             " (now hosting it)" if self.epmd_server is not None else "")
                return
            except _epmd.EpmdError as e:
                _log.info("pyotp dist: EPMD re-registration failed (%s)", e)
            except Exception as e:  # never let this task die silently
                _log.warning("pyotp dist: EPMD re-registration failed (%r)", e)
                await asyncio.sleep(0.05 * (attempt + 1) + random.random() * 0.05)
        _log.error("pyotp dist: could not register %s with EPMD again; other nodes cannot find it",
                   self.name)

    def stop(self) -> None:
        self.stopping = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._rereg_task is not None:
            self._rereg_task.cancel()
        if self.server is not None:
            self.server.close()
        for p in list(self.pending.values()):
            self._fail_pending(p, "node stopping")
        for c in list(self.handshaking):
            c.abort("node stopping")
        for name, c in list(self.conns.items()):
            c.close("node stopping")
            self.conns.pop(name, None)
            self._node_down(name, "node stopping", conn=c)
        if self.registration is not None:
            self.registration.close()
        if self.epmd_server is not None:
            self.epmd_server.close()
        for pid in self.system_pids:
            try:
                if _core.is_alive(pid):
                    _core.exit(pid, "kill")
            except Exception:
                pass
        _core._set_remote_handler(None)
        _core._set_local_node("nonode@nohost", 0)

    # -- services --------------------------------------------------------------------------

    def add_service(self, name: str, *, on_message: Optional[Callable[[Connection, Any], None]] = None,
                    on_nodeup: Optional[Callable[[str, Connection], None]] = None,
                    on_nodedown: Optional[Callable[[str], None]] = None) -> None:
        """Plug a distribution service (global names, a pg scope, service discovery, ...)
        into this kernel, on the loop thread:

        - ``on_message(conn, msg)``: a message from another node sent to the registered
          name ``name`` (REG_SEND) is handed to it at receipt, in wire order, instead of
          going to a process's mailbox (as OTP's global and pg protocols need);
        - ``on_nodeup(node, conn)``: a connection came up (after the kernel's own
          bookkeeping; ``conn.pyotp`` and ``conn.hidden`` describe the peer);
        - ``on_nodedown(node)``: that connection went down.

        Handlers run on the loop thread and must not block; one that raises is logged
        and the others still run. The services are called in the order they were added.
        A name is taken once (ValueError); :meth:`remove_service` frees it.

        On a distributed node (``kernel()`` is its NetKernel)::

            kernel().add_service("my_service", on_nodeup=lambda node, conn: print("up", node))
            kernel().remove_service("my_service")       # True
        """
        if not isinstance(name, str) or not name:
            raise TypeError("add_service: name must be a non-empty str, got %r" % (name,))
        for h in (on_message, on_nodeup, on_nodedown):
            if h is not None and not callable(h):
                raise TypeError("add_service: handlers must be callable, got %r" % (h,))
        if name in self.services:
            raise ValueError("add_service: a service named %r is already added" % (name,))
        self.services[name] = (on_message, on_nodeup, on_nodedown)
        if on_message is not None:
            self.virtual[name] = on_message

    def remove_service(self, name: str) -> bool:
        """Unplug the service ``name``: False if there was none."""
        entry = self.services.pop(name, None)
        if entry is None:
            return False
        if entry[0] is not None and self.virtual.get(name) is entry[0]:
            del self.virtual[name]
        return True

    # -- cookies, flags --------------------------------------------------------------------

    def set_peer(self, node: str, *, cookie: Optional[str] = None, port: Optional[int] = None) -> None:
        """Settings for one peer node: the ``cookie`` to use with it instead of the node's
        own (Erlang's ``erlang:set_cookie(Node, Cookie)``), and the ``port`` it listens on
        when nodes are found without EPMD (``epmd="none"``). Takes effect at the next
        connection to that node.

        >>> _ = await Node.start("a@127.0.0.1", cookie="secret")
        >>> kernel().set_peer("b@127.0.0.1", cookie="other", port=4370)
        """
        if not isinstance(node, str) or node.count("@") != 1:
            raise DistError("%r is not a node name ('name@host')" % (node,))
        if cookie is not None:
            if not isinstance(cookie, str) or not cookie:
                raise DistError("cookie must be a non-empty str, got %r" % (cookie,))
            self.cookies[node] = cookie
        if port is not None:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise DistError("port must be an int from 1 to 65535, got %r" % (port,))
            self.peer_ports[node] = port

    def cookie_for(self, node: Optional[str]) -> str:
        return self.cookies.get(node or "", self.cookie)

    def flags_for(self, peer_is_pyotp: bool, peer_published: Optional[bool] = None) -> int:
        f = hs.OUR_FLAGS | hs.HEADER_FLAGS | hs.PYOTP
        if self.unpickler is not None:
            f |= hs.PYOTP_PICKLE
        if not self.hidden and (peer_is_pyotp or self.beam_visible) and peer_published is not False:
            f |= hs.PUBLISHED
        return f

    # -- connection setup ------------------------------------------------------------------

    async def connect(self, node: str) -> bool:
        if not isinstance(node, str) or node.count("@") != 1:
            raise DistError("%r is not a node name ('name@host')" % (node,))
        if node == self.name:
            return True
        if node in self.conns:
            return True
        if self.stopping:
            return False
        p = self._pending_for(node)
        return await asyncio.shield(p.future)

    def _pending_for(self, node: str) -> _Pending:
        p = self.pending.get(node)
        if p is None:
            p = _Pending(node, self.loop)
            self.pending[node] = p
            if self._incoming(node):
                # that node is connecting to us right now: wait for its handshake instead of
                # racing it with a second connection (its queued signals go out on it); if
                # that handshake fails, we dial (attempt_failed)
                p.superseded = True
            else:
                p.task = self.loop.create_task(self._connect_task(p))
            p.timer = self.loop.call_later(self.setup_time + 0.5, self._pending_timeout, p)
        return p

    def _pending_timeout(self, p: _Pending) -> None:
        if self.pending.get(p.node) is p:
            if p.attempt is not None:
                p.attempt.abort("connection setup to %s timed out" % p.node)
            self._fail_pending(p, "setup timeout")

    async def _connect_task(self, p: _Pending) -> None:
        node = p.node
        alive, host = node.split("@")
        try:
            if not self.carrier.needs_port:
                port = 0
                is_pyotp = True
            elif self.epmd_mode == "none":
                port = self.peer_ports.get(node, self.port)
                is_pyotp = True
            else:
                entry = await _epmd.port_please(alive, host, port=self.epmd_port,
                                                timeout=self.setup_time)
                if entry is None:
                    raise ConnectionError("%s is not registered with EPMD on %s" % (alive, host))
                port = entry.port
                is_pyotp = entry.extra.startswith(_epmd.PYOTP_EXTRA)
            if p.superseded or self.pending.get(node) is not p:
                return
            await asyncio.wait_for(self.carrier.connect(
                self.loop, lambda: Connection(self, True, node, is_pyotp), node, host, port),
                self.setup_time)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if self.pending.get(node) is p and not p.superseded and p.attempt is None:
                _log.info("pyotp dist: cannot connect to %s: %s", node, e)
                self._fail_pending(p, str(e))

    def attempt_started(self, conn: Connection) -> None:
        p = self.pending.get(conn.peer)  # type: ignore[arg-type]
        if p is None or p.superseded or (p.attempt is not None and p.attempt is not conn):
            conn.superseded = True
            conn.abort("no longer wanted")
            return
        p.attempt = conn

    def admit(self, conn: Connection) -> bool:
        """A connection was accepted: may it start its handshake (max_handshakes)?"""
        if len(self.handshaking) >= self.max_handshakes:
            self._refused_handshakes += 1
            if self._refused_handshakes & (self._refused_handshakes - 1) == 0:   # 1, 2, 4, ...
                _log.warning("pyotp dist: %d connections are in their handshake "
                             "(max_handshakes); refused %d connection(s) so far",
                             len(self.handshaking), self._refused_handshakes)
            return False
        self.handshaking.add(conn)
        return True

    def _incoming(self, name: str, but: Optional[Connection] = None) -> bool:
        """Is an incoming handshake from ``name`` in progress (other than ``but``)?"""
        return any(c.peer == name and c is not but for c in self.handshaking)

    def accept_status(self, conn: Connection) -> str:
        # Nothing here changes the node's state for good before the peer proves the
        # cookie: names are not reserved and connections are not replaced (conn_up).
        name = conn.peer
        assert name is not None
        if self.stopping or name == self.name:
            return "not_allowed"
        if name in self.conns:
            return "alive"
        p = self.pending.get(name)
        if p is not None and not p.superseded:
            if self.name > name:
                return "nok"           # our own attempt wins
            # theirs wins (OTP's rule): drop ours, keep the queued signals; should this
            # handshake fail, attempt_failed dials again
            p.superseded = True
            if p.attempt is not None:
                p.attempt.superseded = True
                p.attempt.abort("simultaneous connect from %s: theirs wins" % name)
                p.attempt = None
            return "ok_simultaneous"
        return "ok"

    def attempt_failed(self, conn: Connection, reason: Any) -> None:
        name = conn.peer
        if not conn.initiator:
            self.handshaking.discard(conn)
            if name is not None:
                p = self.pending.get(name)
                if p is not None and p.superseded and not self._incoming(name):
                    # the handshake we waited for failed (or was not the real node's):
                    # dial ourselves, once, with a fresh setup time
                    if p.redialed or self.stopping:
                        self._fail_pending(p, reason)
                    else:
                        p.redialed = True
                        p.superseded = False
                        if p.timer is not None:
                            p.timer.cancel()
                        if p.task is not None and not p.task.done():
                            p.task.cancel()
                        p.timer = self.loop.call_later(self.setup_time + 0.5, self._pending_timeout, p)
                        p.task = self.loop.create_task(self._connect_task(p))
            return
        p = self.pending.get(name)  # type: ignore[arg-type]
        if p is None or p.attempt is not conn:
            return
        p.attempt = None
        if conn.superseded or p.superseded:
            return
        if conn.refused_nok:
            p.superseded = True         # the peer's own attempt is coming our way
            return
        _log.info("pyotp dist: connection to %s failed: %s", name, reason)
        self._fail_pending(p, reason)

    def _fail_pending(self, p: _Pending, reason: Any) -> None:
        if self.pending.get(p.node) is p:
            del self.pending[p.node]
        if p.timer is not None:
            p.timer.cancel()
        if p.task is not None and not p.task.done():
            p.task.cancel()
        if not p.future.done():
            p.future.set_result(False)
        if p.ops:
            ops = list(p.ops)
            p.ops.clear()
            self._node_down(p.node, reason, was_up=False)
            if _core._node_running():
                for meth, args in ops:
                    if meth == "call":
                        # callers outside any process (an asyncio task's GenServer.call)
                        # are not among those _dist_node_down woke
                        frm, to, ref = args[0], args[1], args[2]
                        _core._dist_down(frm, ref, to, "noconnection")

    def conn_up(self, conn: Connection) -> None:
        """``conn`` proved the cookie: only now may it take the name."""
        name = conn.peer
        assert name is not None
        self.handshaking.discard(conn)
        if self.stopping:
            conn.abort("node stopping")
            return
        old = self.conns.get(name)
        if old is not None and old is not conn:
            if not conn.replaces:
                conn.abort("duplicate connection to %s" % name)
                return
            # the peer answered 'alive' with true and is authenticated: the old
            # connection is stale (the peer restarted before we noticed)
            del self.conns[name]
            old.abort("replaced by a new connection from %s" % name)
            self._node_down(name, "replaced", conn=old)
        self.conns[name] = conn
        _core._dist_channel_up(name, conn.ch)
        p = self.pending.pop(name, None)
        if p is not None and p.attempt is not None and p.attempt is not conn:
            p.attempt.superseded = True
            p.attempt.abort("connected to %s by its own connection" % name)
            p.attempt = None
        _log.info("pyotp dist: connected to %s (%s%s)", name, "pyotp" if conn.pyotp else "erlang",
                  ", hidden" if conn.hidden else "")
        if p is not None:
            if p.timer is not None:
                p.timer.cancel()
            if p.task is not None and not p.task.done():
                p.task.cancel()
            for meth, args in p.ops:
                try:
                    getattr(conn.ch, meth)(*args)       # a DistChannel method
                except Exception as e:
                    _log.error("pyotp dist: dropped a queued %s to %s: %s", meth, name, e)
            p.ops.clear()
            if not p.future.done():
                p.future.set_result(True)
        telemetry.execute(("pyotp", "dist", "connection_up"), {"count": 1},
                          {"node": str(_core.local_node()), "peer": name})
        for w in list(self.node_watchers):
            self._notify_watcher(w, ("nodeup", name))
        for sname, (_m, up, _d) in list(self.services.items()):
            if up is not None:
                try:
                    up(name, conn)
                except Exception:
                    _log.exception("pyotp dist: the nodeup handler of service %s failed", sname)

    def conn_down(self, conn: Connection, reason: Any) -> None:
        name = conn.peer
        if name is None or self.conns.get(name) is not conn:
            return
        del self.conns[name]
        _log.info("pyotp dist: connection to %s lost: %s", name, reason)
        self._node_down(name, reason, conn=conn)

    def _node_down(self, name: str, reason: Any, was_up: bool = True,
                   conn: Optional[Connection] = None) -> None:
        running = _core._node_running()
        if running:
            _core._dist_node_down(name)
        # what was in flight on that connection: one table, taken whole
        for ref, (kind, a, b) in (conn.ch.take_requests() if conn is not None else ()):
            if kind == _REQ_CALL:
                if running:
                    # callers outside any process (an asyncio task's GenServer.call) are
                    # not among the processes _dist_node_down walks: fail their wait here
                    # (a no-op for processes it already woke)
                    _core._dist_down(a, ref, b, "noconnection")
            elif kind == _REQ_RPC:
                if not a.future.done():
                    a.future.set_result((A_BADRPC, A_NODEDOWN))
            elif kind == _REQ_SPAWN:
                if not a.done():
                    a.set_exception(DistError("spawn on %s failed: noconnection" % name))
        if was_up:
            telemetry.execute(("pyotp", "dist", "connection_down"), {"count": 1},
                              {"node": str(_core.local_node()), "peer": name, "reason": reason})
            for w in list(self.node_watchers):
                self._notify_watcher(w, ("nodedown", name))
            for sname, (_m, _u, down) in list(self.services.items()):
                if down is not None:
                    try:
                        down(name)
                    except Exception:
                        _log.exception("pyotp dist: the nodedown handler of service %s failed", sname)

    def peers(self) -> List[str]:
        """Connected visible pyotp nodes (the members of global's and pg's clusters)."""
        return [n for n, c in self.conns.items() if c.pyotp and not c.hidden]

    def send_name(self, node: str, name: str, msg: Any) -> None:
        """REG_SEND msg to name on node (queued if the node is being connected)."""
        self._queue(node, "reg_send", (self.kernel_pid, name, msg))

    def _notify_watcher(self, w: Pid, msg: Any) -> None:
        if not _core.is_alive(w):
            self.node_watchers.pop(w, None)
            return
        _core.send(w, msg)

    def disconnect(self, node: str) -> bool:
        c = self.conns.get(node)
        if c is None:
            return False
        del self.conns[node]
        c.close("disconnected")
        self._node_down(node, "disconnect", conn=c)
        return True

    # -- ticks -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self._tick_handle = self.loop.call_later(self.ticktime / 4, self._tick)
        for c in list(self.conns.values()):
            if c.ch.tick():         # the channel's own checks (DistChannel.tick)
                c.abort("%s: no traffic for %.1fs (net_tick_timeout)" % (c.peer, self.ticktime))

    # -- the core's remote handler ---------------------------------------------------------

    def _out(self, node: str, auto: bool = True) -> Any:
        c = self.conns.get(node)
        if c is not None:
            return c
        if not auto or self.stopping:
            return None
        return self._pending_for(node)

    def _queue(self, node: str, meth: str, args: Tuple[Any, ...], auto: bool = True) -> None:
        out = self._out(node, auto)
        if out is None:
            return
        if type(out) is Connection:
            getattr(out.ch, meth)(*args)
        else:
            out.ops.append((meth, args))

    def remote_hook(self, op: str, frm: Any, to: Any, arg: Any) -> None:
        if threading.get_ident() != self.loop_tid:
            self.loop.call_soon_threadsafe(self.remote_hook, op, frm, to, arg)
            return
        if op == "send":
            if type(to) is Reference:
                self._send_to_alias(to, arg)
                return
            if type(to) is Pid:
                node = to.node
                c = self.conns.get(node)
                if c is not None:
                    c.ch.send(to, arg)
                    return
                if node == self.name:
                    return                  # a pid of an earlier incarnation of this node
                self._queue(node, "send", (to, arg))
            else:
                node = to[1]
                c = self.conns.get(node)
                if c is not None:
                    c.ch.send_named(to[0], arg)
                    return
                if node == self.name:
                    return
                self._queue(node, "send_named", (to[0], arg))
            return
        handler = getattr(self, "_op_" + op, None)
        if handler is None:  # pragma: no cover
            _log.error("pyotp dist: unknown remote operation %r", op)
            return
        handler(frm, to, arg)

    def _send_to_alias(self, ref: Reference, msg: Any) -> None:
        """send() to another node's alias (from a thread, or before that node is
        connected): ALIAS_SEND once connected."""
        node = ref.node
        c = self.conns.get(node)
        if c is not None:
            c.ch.alias_send(ref, msg)
        elif node != self.name:
            self._queue(node, "alias_send", (ref, msg))

    def _op_call(self, frm: Pid, to: Any, arg: Any) -> None:
        ref, request, label = arg       # label: '$gen_call', or 'system' (pyotp.sys)
        node = cast(str, _node_of(to))
        if node == self.name:           # stale pid of an earlier incarnation
            _core._dist_down(frm, ref, to, "noproc")
            return
        c = self.conns.get(node)
        if c is not None:
            c.ch.call(frm, to, ref, request, label)
            return
        # queued until connected: a request that cannot be encoded fails now, in the
        # caller, rather than being dropped at connect time (a timeout for the caller)
        encode_term_into(bytearray(), request, True)
        # replayed as a whole once connected: its tag depends on the flags the peer
        # negotiates (an alias tag when both sides have ALIAS)
        self._queue(node, "call", (frm, to, ref, request, label))

    def _op_reply(self, frm: Any, to: Pid, arg: Any) -> None:
        c = self.conns.get(to.node)
        if c is not None:
            c.ch.reply(to, arg)

    # The other signals reach here only while their node is not connected, or from
    # another thread: the channel writes them (DistChannel.signal); queued meanwhile.

    def _signal(self, op: str, frm: Any, to: Any, arg: Any, auto: bool = True) -> None:
        node = cast(str, _node_of(to))
        c = self.conns.get(node)
        if c is not None:
            c.ch.signal(op, frm, to, arg)
        elif auto:
            self._queue(node, "signal", (op, frm, to, arg))
        elif node in self.pending:      # after what was queued before it
            self.pending[node].ops.append(("signal", (op, frm, to, arg)))

    def _op_link(self, frm: Pid, to: Pid, arg: Any) -> None:
        if to.node == self.name:
            _core._dist_exit(to, frm, "noproc", True)
            return
        self._signal("link", frm, to, arg)

    def _op_unlink(self, frm: Pid, to: Pid, arg: Any) -> None:
        self._signal("unlink", frm, to, arg, auto=False)

    def _op_monitor(self, frm: Pid, to: Any, ref: Reference) -> None:
        if _node_of(to) == self.name:
            _core._dist_down(frm, ref, to, "noproc")
            return
        self._signal("monitor", frm, to, ref)

    def _op_demonitor(self, frm: Pid, to: Any, ref: Reference) -> None:
        self._signal("demonitor", frm, to, ref, auto=False)

    def _op_exit2(self, frm: Optional[Pid], to: Pid, reason: Any) -> None:
        if to.node == self.name:
            return
        self._signal("exit2", frm, to, reason)

    def _op_link_exit(self, frm: Pid, to: Pid, reason: Any) -> None:
        self._signal("link_exit", frm, to, reason, auto=False)

    def _op_down(self, frm: Pid, to: Pid, arg: Any) -> None:
        self._signal("down", frm, to, arg, auto=False)


# ==== LOCAL LINK HOOK (issue 13, local node pools) =====================================
# The ONLY place the node pool (pyotp/pool.py) touches the distribution code (it lives
# here because the kernel owns connections and pending dials). A pool
# link arrives already connected (a shared-memory ring pair plus its doorbell socket, or a
# plain socket where shared memory is missing, both handed over by descriptor): start an
# ordinary Connection on it, as if it had been dialled (``initiator``) or accepted. The
# handshake, framing and everything after are unchanged. To port onto a new transport
# interface, keep this signature and build that interface's connection here.
def attach_local_link(peer: str, initiator: bool, sock: Any, ring: Any) -> None:
    """Run a distribution connection to ``peer`` over a local link (see above)."""
    from .shm_transport import open_local_link
    k = kernel()
    if peer in k.conns:                     # already connected (a dial won the race)
        sock.close()
        if ring is not None:
            ring.release()
        return
    p = k.pending.get(peer)
    if p is None:
        p = k.pending[peer] = _Pending(peer, k.loop)
        p.timer = k.loop.call_later(k.setup_time + 0.5, k._pending_timeout, p)
    if p.task is not None and not p.task.done():
        p.task.cancel()                     # this link replaces a dial in progress
    if p.attempt is not None:
        p.attempt.superseded = True
        p.attempt.abort("replaced by a local link to %s" % peer)
        p.attempt = None
    # the initiator's handshake is the pending attempt; the acceptor waits for it
    p.superseded = not initiator
    open_local_link(sock, ring, Connection(k, initiator, peer if initiator else None,
                                           peer_is_pyotp=True))
# ==== end of LOCAL LINK HOOK =============================================================


async def _external_call(server: Any, request: Any, timeout: Optional[float]) -> Any:
    """GenServer.call usable from anywhere, concurrently (runs as an asyncio task, so the
    core treats the caller as external)."""
    async def go() -> Any:
        return await _core.call(server, request, timeout)
    return await asyncio.ensure_future(go())

