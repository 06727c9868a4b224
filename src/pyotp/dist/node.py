"""The node's distribution kernel (Erlang's ``net_kernel`` and friends) and its public face,
:class:`Node`.

One pyotp node per OS process, so the kernel is a module-level singleton that exists
between ``Node.start`` and ``Node.stop``. It owns:

- the listener, the EPMD registration (or pyotp's own EPMD server), the tick timer;
- the table of connections (``conns``) and of connections being set up (``pending``:
  signals sent meanwhile are queued and replayed in order once the node is up, or turned
  into ``noconnection`` exits / DOWNs if it never comes up);
- the core's remote-signal handler (``_set_remote_handler``): every link, monitor, exit
  signal that involves a remote pid arrives here and leaves as a control message, and so
  do sends, calls and replies while their node is not connected or from another thread
  (once a node is connected, the core hands those straight to its connection's compiled
  channel, ``_core.DistChannel``, registered here in ``conn_up``);
- the bookkeeping the wire needs and the core does not keep: calls in flight (so a reply
  wakes the right caller, a late reply is dropped, and the remote monitor is removed),
  monitors we hold on remote processes (for the DOWN's object), spawn and rpc requests
  waiting for their reply;
- the processes every node runs: ``net_kernel`` (answers ``net_adm:ping``), ``rex``
  (answers old-style ``rpc`` requests), a group leader for Erlang IO, the global name
  server and the default ``pg`` scope.

Everything runs on the node's loop thread; the one entry point that may be called from
other threads (the remote handler, for ``pyotp.send`` from a thread) hops to the loop.

>>> async def main():
...     await Node.start("a@127.0.0.1", cookie="secret")
...     print(await Node.ping("b@127.0.0.1"))
...     await Node.stop()
>>> pyotp.run(main)
pong
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import random
import sys
import threading
import traceback
from typing import (Any, Callable, Dict, Generator, Iterable, List, Optional, Sequence, Set, Tuple, Union,
                    cast)

from .. import _core, telemetry
from ..etf import Atom, Pid, Reference, SafeUnpickler, encode_term_into
from ..gen_server import GenServer
from . import beam_api
from . import epmd as _epmd
from . import handshake as hs
from .connection import Connection, ProtocolError, from_erl, to_erl

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


def _node_of(dest: Any) -> Optional[str]:
    if type(dest) is Pid:
        return dest.node
    if type(dest) is tuple and len(dest) == 2:
        return str(dest[1])
    return None


def _wire_target(dest: Any) -> Any:
    """A monitor/send target as it goes on the wire: a pid, or the name as an atom."""
    if type(dest) is Pid:
        return dest
    return Atom(dest[0])


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


class _Rpc:
    __slots__ = ("future", "node", "eref", "pid")

    def __init__(self, future: "asyncio.Future[Any]", node: str, eref: Reference) -> None:
        self.future = future
        self.node = node
        self.eref = eref
        self.pid: Optional[Pid] = None


# ---------------------------------------------------------------------------------------
# The processes every distributed node runs


class _NetKernelServer(GenServer):
    """Registered as ``net_kernel``: answers ``{is_auth, Node}`` (net_adm:ping) with yes."""

    def init(self, arg: Any) -> Any:
        return ("ok", None)

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if type(req) is tuple and len(req) == 2 and req[0] == "is_auth":
            return ("reply", A_YES, state)
        return ("reply", A_ERROR, state)

    def handle_cast(self, req: Any, state: Any) -> Any:
        return ("noreply", state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        return ("noreply", state)


class _Rex(GenServer):
    """Registered as ``rex``: old-style rpc requests (``gen_server:call({rex, N},
    {call, M, F, A, GL})``, the C-node form ``{From, {call, M, F, A, GL}}`` and casts)."""

    def init(self, arg: Any) -> Any:
        return ("ok", None)

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if type(req) is tuple and len(req) == 5 and req[0] == "call":
            _core.spawn(_rex_worker, req[1], req[2], req[3], ("reply", from_))
            return ("noreply", state)
        return ("reply", (A_BADRPC, Atom("unknown_request")), state)

    def handle_cast(self, req: Any, state: Any) -> Any:
        if type(req) is tuple and len(req) == 5 and req[0] == "cast":
            _core.spawn(_rex_worker, req[1], req[2], req[3], None)
        return ("noreply", state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if (type(msg) is tuple and len(msg) == 2 and type(msg[0]) is Pid and type(msg[1]) is tuple
                and len(msg[1]) == 5 and msg[1][0] == "call"):
            _core.spawn(_rex_worker, msg[1][1], msg[1][2], msg[1][3], ("send", msg[0]))
        return ("noreply", state)


async def _rex_worker(m: Any, f: Any, a: Any, reply_to: Any) -> None:
    k = _kernel
    result = await k.apply_rpc(m, f, a) if k is not None else (A_BADRPC, A_NODEDOWN)
    if reply_to is None:
        return
    if reply_to[0] == "reply":
        GenServer.reply(reply_to[1], result)
    else:
        _core.send(reply_to[1], (A_REX, result))


async def _group_leader() -> None:
    """A minimal Erlang IO server: processes that Erlang nodes spawn here (rpc) have it as
    group leader. Output requests are written to stdout; input requests get an error."""
    while True:
        msg = await _core.receive()
        if type(msg) is tuple and len(msg) == 4 and msg[0] == "io_request":
            _from, reply_as, req = msg[1], msg[2], msg[3]
            result: Any = A_OK
            try:
                text = _io_text(req)
                if text is None:
                    result = (A_ERROR, Atom("request"))
                else:
                    sys.stdout.write(text)
                    sys.stdout.flush()
            except Exception:
                result = (A_ERROR, Atom("request"))
            try:
                _core.send(_from, (Atom("io_reply"), reply_as, result))
            except Exception:
                pass


def _io_text(req: Any) -> Optional[str]:
    if type(req) is tuple:
        if req and req[0] == "put_chars":
            chars = req[-1] if len(req) in (2, 3) else None
            if len(req) == 5:     # {put_chars, Enc, Mod, Fun, Args}: cannot run Erlang code
                return "%s:%s%r\n" % (req[2], req[3], req[4])
            return _chars(chars)
        if req and req[0] == "requests":
            out = [_io_text(r) for r in req[1]]
            return "".join(x for x in out if x)
    return None


def _chars(chars: Any) -> str:
    if isinstance(chars, (bytes, bytearray)):
        return bytes(chars).decode("utf-8", "replace")
    if isinstance(chars, str):
        return chars
    if isinstance(chars, list):
        return "".join(_chars(c) if not isinstance(c, int) else chr(c) for c in chars)
    return str(chars)


# ---------------------------------------------------------------------------------------
# The kernel


class _Done:
    """An awaitable that is already complete (what ``Node.stop`` returns)."""
    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())   # type: ignore[return-value]


_DONE = _Done()


class NetKernel:
    """The distribution state of this node (see the module documentation). Users go
    through :class:`Node`."""

    def __init__(self, name: str, cookie: str, *, hidden: bool, listen_host: str, port: int,
                 net_ticktime: float, epmd: Union[str, int], tls: Any,
                 rpc_allow: Optional[Iterable[str]], setup_time: float,
                 python_payloads: Union[bool, Iterable[str]],
                 busy_wait: Union[str, float] = BUSY_WAIT_DEFAULT,
                 max_frame_size: int = MAX_FRAME_SIZE, max_inflated_size: int = MAX_INFLATED_SIZE,
                 max_handshakes: int = MAX_HANDSHAKES,
                 epmd_max_per_host: int = _epmd.MAX_PER_HOST,
                 epmd_max_connections: int = _epmd.MAX_CONNECTIONS) -> None:
        if not isinstance(name, str) or name.count("@") != 1 or not all(name.split("@")):
            raise DistError("node name must look like 'name@host', got %r" % (name,))
        if not isinstance(cookie, str) or not cookie:
            raise DistError("cookie must be a non-empty str")
        if not (isinstance(net_ticktime, (int, float)) and net_ticktime > 0):
            raise DistError("net_ticktime must be seconds > 0, got %r" % (net_ticktime,))
        if not (epmd in ("auto", "none") or (isinstance(epmd, int) and 0 < epmd < 65536)):
            raise DistError("epmd must be 'auto', 'none' or a port number, got %r" % (epmd,))
        if epmd == "none" and not port:
            raise DistError("epmd='none' needs a fixed port (port=...)")
        try:
            _core._wp_parse(busy_wait)
        except (TypeError, ValueError) as e:
            raise DistError(str(e)) from None
        _check_limit("max_frame_size", max_frame_size, 1 << 16, 0xFFFFFFFF)
        _check_limit("max_inflated_size", max_inflated_size, 0, 0xFFFFFFFF)
        _check_limit("max_handshakes", max_handshakes, 1, 1 << 20)
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
        self.cookies: Dict[str, str] = {}
        self.hidden = hidden
        self.listen_host = listen_host
        self.port = port
        self.ticktime = float(net_ticktime)
        self.epmd_mode = epmd
        self.epmd_port = epmd if isinstance(epmd, int) else _epmd.default_port()
        self.server_ssl, self.client_ssl = _make_tls(tls)
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
        # remote calls: ref -> (caller, server, node). node None: the caller timed out and
        # the monitor was ended then; the entry stays so that a late reply is recognised
        # and dropped, until the tick removes it
        self.calls: Dict[Reference, Tuple[Pid, Any, Optional[str]]] = {}
        self.monitors: Dict[Reference, Tuple[Pid, Any, str]] = {}
        self.name_monitors: Dict[Reference, Tuple[Atom, str]] = {}
        self.spawns: Dict[Reference, Tuple["asyncio.Future[Any]", Optional[Pid], str]] = {}
        self.rpcs: Dict[Reference, _Rpc] = {}
        self.node_watchers: Dict[Pid, bool] = {}
        self.up_callbacks: List[Callable[[str, Connection], None]] = []
        self.down_callbacks: List[Callable[[str], None]] = []
        self.peer_ports: Dict[str, int] = {}
        # names whose messages from other nodes are handled at receipt, in wire order
        # (global's and pg's replication protocols): name -> handler(conn, msg)
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

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        _core.wait_policy().configure(self.busy_wait)
        self.server = await self.loop.create_server(
            lambda: Connection(self, False), self.listen_host, self.port,
            ssl=self.server_ssl, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
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
        self.kernel_pid = await _NetKernelServer.start(None, name="net_kernel")
        self.system_pids.append(self.kernel_pid)
        self.system_pids.append(await _Rex.start(None, name="rex"))
        self.gl_pid = _core.spawn(_group_leader)
        self.system_pids.append(self.gl_pid)
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
            self._node_down(name, "node stopping")
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

    # -- cookies, flags --------------------------------------------------------------------

    def cookie_for(self, node: Optional[str]) -> str:
        return self.cookies.get(node or "", self.cookie)

    def flags_for(self, peer_is_pyotp: bool, peer_published: Optional[bool] = None) -> int:
        f = hs.OUR_FLAGS | hs.PYOTP
        if self.unpickler is not None:
            f |= hs.PYOTP_PICKLE
        if not self.hidden and peer_is_pyotp and peer_published is not False:
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
            if self.epmd_mode == "none":
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
            await asyncio.wait_for(self.loop.create_connection(
                lambda: Connection(self, True, node, is_pyotp), host, port,
                ssl=self.client_ssl, server_hostname=host if self.client_ssl else None),
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
            p.ops.clear()
            self._node_down(p.node, reason, was_up=False)

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
            self._node_down(name, "replaced")
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
                    getattr(conn, meth)(*args)
                except Exception as e:
                    _log.error("pyotp dist: dropped a queued %s to %s: %s", meth, name, e)
            p.ops.clear()
            if not p.future.done():
                p.future.set_result(True)
        telemetry.execute(("pyotp", "dist", "connection_up"), {"count": 1},
                          {"node": str(_core.local_node()), "peer": name})
        for w in list(self.node_watchers):
            self._notify_watcher(w, ("nodeup", name))
        for cb in list(self.up_callbacks):
            try:
                cb(name, conn)
            except Exception:
                _log.exception("pyotp dist: nodeup callback failed")

    def conn_down(self, conn: Connection, reason: Any) -> None:
        name = conn.peer
        if name is None or self.conns.get(name) is not conn:
            return
        del self.conns[name]
        _log.info("pyotp dist: connection to %s lost: %s", name, reason)
        self._node_down(name, reason)

    def _node_down(self, name: str, reason: Any, was_up: bool = True) -> None:
        running = _core._node_running()
        if running:
            _core._dist_node_down(name)
        for ref, c in list(self.calls.items()):
            if c[2] == name:
                del self.calls[ref]
                if running:
                    # callers outside any process (an asyncio task's GenServer.call) are
                    # not among the processes _dist_node_down walks: fail their wait here
                    # (a no-op for processes it already woke)
                    _core._dist_down(c[0], ref, c[1], "noconnection")
        for ref, m in list(self.monitors.items()):
            if m[2] == name:
                del self.monitors[ref]
        for ref, nm in list(self.name_monitors.items()):
            if nm[1] == name:
                del self.name_monitors[ref]
        for ref, r in list(self.rpcs.items()):
            if r.node == name:
                del self.rpcs[ref]
                if not r.future.done():
                    r.future.set_result((A_BADRPC, A_NODEDOWN))
        for ref, s in list(self.spawns.items()):
            if s[2] == name:
                del self.spawns[ref]
                if not s[0].done():
                    s[0].set_exception(DistError("spawn on %s failed: noconnection" % name))
        if was_up:
            telemetry.execute(("pyotp", "dist", "connection_down"), {"count": 1},
                              {"node": str(_core.local_node()), "peer": name, "reason": reason})
            for w in list(self.node_watchers):
                self._notify_watcher(w, ("nodedown", name))
            for cb in list(self.down_callbacks):
                try:
                    cb(name)
                except Exception:
                    _log.exception("pyotp dist: nodedown callback failed")

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
        self._node_down(node, "disconnect")
        return True

    # -- ticks -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self._tick_handle = self.loop.call_later(self.ticktime / 4, self._tick)
        for c in list(self.conns.values()):
            if c.received == c.last_checked:
                c.idle_ticks += 1
                if c.idle_ticks >= 4:
                    c.abort("%s: no traffic for %.1fs (net_tick_timeout)" % (c.peer, self.ticktime))
                    continue
            else:
                c.idle_ticks = 0
                c.last_checked = c.received
            if not c.wrote:
                c.send_tick()
            c.wrote = False
            if not c.spare_used:
                c._spares.clear()        # big receive buffers unused for a tick period
            c.spare_used = False
        if self.calls:
            for ref, (caller, target, node) in list(self.calls.items()):
                w = _core._dist_remote_wait(caller)
                if w is None or w[0] != ref:
                    del self.calls[ref]
                    cc = self.conns.get(node) if node is not None else None
                    if cc is not None:
                        cc.demonitor(caller, _wire_target(target), ref)

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
            getattr(out, meth)(*args)
        else:
            out.ops.append((meth, args))

    def remote_hook(self, op: str, frm: Any, to: Any, arg: Any) -> None:
        if threading.get_ident() != self.loop_tid:
            self.loop.call_soon_threadsafe(self.remote_hook, op, frm, to, arg)
            return
        if op == "send":
            if type(to) is Pid:
                node = to.node
                c = self.conns.get(node)
                if c is not None:
                    c.send(to, arg)
                    return
                if node == self.name:
                    return                  # a pid of an earlier incarnation of this node
                self._queue(node, "send", (to, arg))
            else:
                node = to[1]
                c = self.conns.get(node)
                if c is not None:
                    c.send_named(to[0], arg)
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

    def _op_call(self, frm: Pid, to: Any, arg: Any) -> None:
        ref, request = arg
        node = cast(str, _node_of(to))
        if node == self.name:           # stale pid of an earlier incarnation
            _core._dist_down(frm, ref, to, "noproc")
            return
        c = self.conns.get(node)
        if c is not None:
            c.ch.call(frm, to, ref, request)
            return
        # queued until connected: a request that cannot be encoded fails now, in the
        # caller, rather than being dropped at connect time (a timeout for the caller)
        encode_term_into(bytearray(), request, True)
        self.calls[ref] = (frm, to, node)
        target = _wire_target(to)
        msg = (A_GEN_CALL, (frm, ref), request)
        self._queue(node, "monitor", (frm, target, ref))
        if type(to) is Pid:
            self._queue(node, "send", (to, msg))
        else:
            self._queue(node, "reg_send", (frm, to[0], msg))

    def _op_reply(self, frm: Any, to: Pid, arg: Any) -> None:
        c = self.conns.get(to.node)
        if c is not None:
            c.ch.reply(to, arg)

    def _op_link(self, frm: Pid, to: Pid, arg: Any) -> None:
        if to.node == self.name:
            _core._dist_exit(to, frm, "noproc", True)
            return
        self._queue(to.node, "link", (frm, to))

    def _op_unlink(self, frm: Pid, to: Pid, arg: Any) -> None:
        self._queue(to.node, "unlink", (frm, to), auto=False)

    def _op_monitor(self, frm: Pid, to: Any, ref: Reference) -> None:
        node = cast(str, _node_of(to))
        if node == self.name:
            _core._dist_down(frm, ref, to, "noproc")
            return
        self.monitors[ref] = (frm, to, node)
        self._queue(node, "monitor", (frm, _wire_target(to), ref))

    def _op_demonitor(self, frm: Pid, to: Any, ref: Reference) -> None:
        m = self.monitors.pop(ref, None)
        node = _node_of(to)
        if m is not None and node is not None:
            self._queue(node, "demonitor", (frm, _wire_target(to), ref), auto=False)

    def _op_exit2(self, frm: Optional[Pid], to: Pid, reason: Any) -> None:
        if to.node == self.name:
            return
        self._queue(to.node, "exit", (frm if frm is not None else self.kernel_pid, to, reason, False))

    def _op_link_exit(self, frm: Pid, to: Pid, reason: Any) -> None:
        c = self.conns.get(to.node)
        if c is not None:
            self._safe_exit(c, frm, to, reason, True)

    def _op_down(self, frm: Pid, to: Pid, arg: Any) -> None:
        ref, reason = arg
        c = self.conns.get(to.node)
        nm = self.name_monitors.pop(ref, None)
        if c is None:
            return
        obj = nm[0] if nm is not None else frm
        try:
            c.down(obj, to, ref, reason)
        except Exception:
            c.down(obj, to, ref, _printable(reason))

    def _safe_exit(self, c: Connection, frm: Pid, to: Pid, reason: Any, linked: bool) -> None:
        try:
            c.exit(frm, to, reason, linked)
        except Exception:
            c.exit(frm, to, _printable(reason), linked)

    # -- signals from the wire -------------------------------------------------------------

    def deliver(self, conn: Connection, to: Any, msg: Any) -> None:
        conn.ch.deliver(to, msg)

    def deliver_name(self, conn: Connection, frm: Any, name: Any, msg: Any) -> None:
        if type(name) is not Atom and type(name) is not str:
            raise ProtocolError("REG_SEND to %r, which is not an atom" % (name,))
        conn.ch.deliver_name(name, msg)

    def deliver_alias(self, conn: Connection, alias: Any, msg: Any) -> None:
        # We do not advertise ALIAS; a peer that sends to an alias anyway is answering a
        # call: route by the call table.
        entry = self.calls.get(alias) if type(alias) is Reference else None
        if entry is not None:
            self.deliver(conn, entry[0], msg)

    def on_link(self, conn: Connection, frm: Pid, to: Pid) -> None:
        if type(frm) is not Pid or type(to) is not Pid:
            raise ProtocolError("LINK between %r and %r" % (frm, to))
        if not _core._dist_link(frm, to):
            self._safe_exit(conn, to, frm, "noproc", True)

    def on_unlink(self, conn: Connection, frm: Pid, to: Pid) -> None:
        _core._dist_unlink(frm, to)

    def on_exit(self, conn: Connection, frm: Any, to: Any, reason: Any, linked: bool) -> None:
        if type(to) is not Pid:
            raise ProtocolError("EXIT to %r" % (to,))
        _core._dist_exit(frm, to, reason, linked)

    def on_monitor(self, conn: Connection, frm: Pid, target: Any, ref: Reference) -> None:
        if type(frm) is not Pid or (type(target) is not Atom and type(target) is not Pid):
            raise ProtocolError("MONITOR_P of %r by %r" % (target, frm))
        conn.ch.monitor_in(frm, target, ref)

    def on_demonitor(self, conn: Connection, frm: Pid, target: Any, ref: Reference) -> None:
        conn.ch.demonitor_in(frm, target, ref)

    def on_down(self, conn: Connection, frm: Any, to: Any, ref: Any, raw_reason: Any) -> None:
        entry = self.calls.pop(ref, None)
        if entry is not None:
            caller = entry[0]
            w = _core._dist_remote_wait(caller)
            if w is not None and w[0] == ref:
                _core._dist_down(caller, ref, entry[1], conn.reason_in(raw_reason))
            return
        r = self.rpcs.pop(ref, None)
        if r is not None:
            if not r.future.done():
                r.future.set_result(_rpc_result(r.eref, raw_reason, conn.python))
            return
        m = self.monitors.pop(ref, None)
        if m is not None:
            _core._dist_down(m[0], ref, m[1], conn.reason_in(raw_reason))

    # -- spawn -----------------------------------------------------------------------------

    def allowed(self, module: str) -> bool:
        if self.rpc_allow is None:
            return True
        if module in self.rpc_allow:
            return True
        return any(module.startswith(a + ".") for a in self.rpc_allow)

    def on_spawn_request(self, conn: Connection, req: Any, frm: Any, gl: Any, mfa: Any,
                         opts: Any, args: Any) -> None:
        if (type(mfa) is not tuple or len(mfa) != 3 or type(frm) is not Pid
                or not isinstance(mfa[0], str) or not isinstance(mfa[1], str)):
            raise ProtocolError("malformed SPAWN_REQUEST %r" % ((req, frm, mfa, opts),))
        if type(args) is not list or type(opts) is not list:
            conn.spawn_reply(req, frm, 0, A_BADARG)
            return
        m, f = str(mfa[0]), str(mfa[1])
        link = any(o == "link" for o in opts)
        mon = any(o == "monitor" for o in opts)
        if m == "erpc" and f == "execute_call" and len(args) == 4:
            pid = _core.spawn(_erpc_process, self, conn.peer, frm, req, args[0], args[1], args[2], args[3])
        elif m == "erpc" and f == "execute_cast" and len(args) == 3:
            pid = _core.spawn(_erpc_process, self, conn.peer, None, None, None, args[0], args[1], args[2])
        else:
            pid = _core.spawn(_spawned_process, self, m, f, args)
        flags = 0
        if link:
            _core._dist_link(frm, pid)
            flags |= SPAWN_FLAG_LINK
        if mon:
            _core._dist_monitor(frm, pid, req)
            flags |= SPAWN_FLAG_MONITOR
        conn.spawn_reply(req, frm, flags, pid)

    def on_spawn_reply(self, conn: Connection, req: Any, to: Any, flags: Any, result: Any) -> None:
        s = self.spawns.pop(req, None)
        if s is not None:
            fut, frm, _node = s
            if type(result) is Pid:
                if flags & SPAWN_FLAG_LINK and frm is not None:
                    if not _core._dist_link(result, frm):
                        conn.exit(frm, result, "noproc", True)
                if flags & SPAWN_FLAG_MONITOR and frm is not None:
                    # the peer monitors the new process for frm, tagged with the request ref
                    if _core._dist_add_monitor(frm, result, req):
                        self.monitors[req] = (frm, result, cast(str, conn.peer))
                    else:
                        conn.demonitor(frm, result, req)
                if not fut.done():
                    fut.set_result(result)
            elif not fut.done():
                fut.set_exception(DistError("spawn on %s failed: %s" % (conn.peer, result)))
            return
        r = self.rpcs.get(req)
        if r is not None:
            if type(result) is Pid:
                r.pid = result
            else:
                del self.rpcs[req]
                if not r.future.done():
                    r.future.set_result((A_BADRPC, result if result != "badarg" else A_NOTSUP))

    async def spawn(self, node: str, fn: Any, args: Sequence[Any], link: bool,
                    monitor: bool = False) -> Any:
        """Node.spawn/spawn_link/spawn_monitor: a pid, or (pid, ref) with ``monitor``."""
        if callable(fn) and not isinstance(fn, tuple):
            m, f = fn.__module__, fn.__qualname__
            if "." in f or "<" in f:
                raise DistError("Node.spawn needs a module-level function, got %r" % (fn,))
        elif isinstance(fn, tuple) and len(fn) == 2 and all(isinstance(x, str) for x in fn):
            m, f = fn
        else:
            raise DistError("Node.spawn expects a module-level function or a (module, function) "
                            "pair, got %r" % (fn,))
        try:
            me = _core.self()
        except _core.CallbackError:
            if link or monitor:
                raise DistError("Node.%s must be called inside a pyotp process"
                                % ("spawn_link" if link else "spawn_monitor")) from None
            me = None
        if node == self.name:
            if callable(fn):
                fnobj = fn
            elif not self.allowed(m):
                raise DistError("spawn of %s:%s refused: not_allowed" % (m, f))
            else:
                try:
                    fnobj = _resolve(m, f)
                except _Undef:
                    raise DistError("spawn of %s:%s failed: undef" % (m, f)) from None
            if monitor:
                return _core.spawn_monitor(_as_async, fnobj, tuple(args))
            pid = _core.spawn(_as_async, fnobj, tuple(args))
            if link:
                _core.link(pid)
            return pid
        if not await self.connect(node):
            raise DistError("spawn on %s failed: noconnection" % node)
        c = self.conns.get(node)
        if c is None:
            raise DistError("spawn on %s failed: noconnection" % node)
        req = _core.make_ref()
        fut: "asyncio.Future[Any]" = self.loop.create_future()
        self.spawns[req] = (fut, me, node)
        frm = me if me is not None else self.kernel_pid
        opts = ([A_LINK] if link else []) + ([A_MONITOR] if monitor else [])
        c.spawn_request(req, frm, self.gl_pid, (Atom(m), Atom(f), len(args)), opts, list(args))
        pid = cast(Pid, await fut)
        return (pid, req) if monitor else pid

    # -- rpc -------------------------------------------------------------------------------

    async def apply_rpc(self, m: Any, f: Any, a: Any) -> Any:
        """Run m.f(*a) here with rpc:call's result conventions."""
        tag = _core.make_ref()
        r = await _apply(self, m, f, a, tag, True)
        return _rpc_result(tag, r, True)

    async def rpc_call(self, node: str, m: str, f: str, args: Sequence[Any],
                       timeout: Optional[float]) -> Any:
        if node == self.name:
            fut: "asyncio.Future[Any]" = self.loop.create_future()
            _core.spawn(_local_rpc, self, m, f, list(args), fut)
            r = await _await_with_timeout(fut, timeout)
            return (A_BADRPC, A_TIMEOUT) if r is _TIMED_OUT else r
        if not await self.connect(node):
            return (A_BADRPC, A_NODEDOWN)
        c = self.conns.get(node)
        if c is None:
            return (A_BADRPC, A_NODEDOWN)
        req = _core.make_ref()
        eref = _core.make_ref()
        fut = self.loop.create_future()
        w = _Rpc(fut, node, eref)
        self.rpcs[req] = w
        try:
            c.spawn_request(req, self.kernel_pid, self.gl_pid, (A_ERPC, A_EXECUTE_CALL, 4), [A_MONITOR],
                            [eref, Atom(m), Atom(f), list(args)])
        except BaseException:
            del self.rpcs[req]
            raise
        r = await _await_with_timeout(fut, timeout)
        if r is _TIMED_OUT:
            self.rpcs.pop(req, None)
            c2 = self.conns.get(node)
            if w.pid is not None and c2 is not None:
                c2.demonitor(self.kernel_pid, w.pid, req)
            return (A_BADRPC, A_TIMEOUT)
        return r

    def rpc_cast(self, node: str, m: str, f: str, args: Sequence[Any]) -> None:
        if node == self.name:
            _core.spawn(_erpc_process, self, None, None, None, None, m, f, list(args))
            return
        req = _core.make_ref()
        self._queue(node, "spawn_request", (req, self.kernel_pid, self.gl_pid,
                                            (A_ERPC, A_EXECUTE_CAST, 3), [],
                                            [Atom(m), Atom(f), list(args)]))

    def erpc_done(self, me: Pid, peer: str, frm: Pid, req: Reference, result: Any) -> None:
        _core._dist_demonitor(me, req)
        c = self.conns.get(peer)
        if c is None:
            return
        try:
            c.down(me, frm, req, result, raw=True)
        except Exception as e:
            bad: Any = (result[0], A_ERROR, (Atom("unencodable_result"), repr(e).encode()), [])
            c.down(me, frm, req, bad, raw=True)


def _printable(reason: Any) -> Any:
    return ("unencodable_reason", repr(reason))


class _Undef(Exception):
    """m:f is not a function rpc may run (Erlang's ``undef``)."""


def _resolve(m: str, f: str) -> Any:
    """The function rpc/spawn runs for ``m:f``, as Erlang's M:F names an exported function of
    module M: ``f`` is a plain public name (no dots, no leading ``_``) whose module-level
    value is callable and is the module's own: defined there (its ``__module__`` is ``m``;
    a C function whose ``__self__`` is the module counts too) or exported explicitly in
    the module's ``__all__``. Anything else raises _Undef; errors raised while importing
    ``m`` propagate."""
    if not f.isidentifier() or f.startswith("_") or not _is_module_name(m):
        raise _Undef
    try:
        mod = importlib.import_module(m)
    except ImportError as e:
        if e.name is not None and (e.name == m or m.startswith(e.name + ".")):
            raise _Undef from None      # the module itself (or a parent package) is missing
        raise
    obj = mod.__dict__.get(f, _MISSING)
    if obj is _MISSING or not callable(obj):
        raise _Undef
    if getattr(obj, "__module__", None) == mod.__name__ or getattr(obj, "__self__", None) is mod:
        return obj
    exported = mod.__dict__.get("__all__")
    if isinstance(exported, (list, tuple)) and f in exported:
        return obj
    raise _Undef


_MISSING = object()


def _is_module_name(m: str) -> bool:
    return bool(m) and all(part.isidentifier() for part in m.split("."))


async def _as_async(fn: Any, args: Tuple[Any, ...]) -> Any:
    r = fn(*args)
    if inspect.isawaitable(r):
        r = await r
    return r


async def _apply(k: NetKernel, m: Any, f: Any, a: Any, eref: Any, pyotp_peer: bool) -> Any:
    """m.f(*a) -> erpc's exit reason {Ref, return, V} | {Ref, throw|exit, R} | {Ref, error, R, Stack}."""
    if not isinstance(m, str) or not isinstance(f, str) or not isinstance(a, (list, tuple)):
        return (eref, A_ERROR, A_BADARG, [])
    m, f = str(m), str(f)
    if not k.allowed(m):
        return (eref, A_ERROR, (A_NOT_ALLOWED, Atom(m)), [])
    try:
        fn = beam_api.lookup(m, f, a) or _resolve(m, f)
    except _Undef:
        return (eref, A_ERROR, A_UNDEF, [(Atom(m), Atom(f), list(a), [])])
    except Exception as e:
        return _error_reason(eref, e, pyotp_peer)
    try:
        v = fn(*a)
        if inspect.isawaitable(v):
            v = await v
    except _core.Exit as e:
        return (eref, A_EXIT_CLASS, e.reason if pyotp_peer else to_erl(e.reason))
    except Exception as e:
        return _error_reason(eref, e, pyotp_peer)
    return (eref, A_RETURN, v)


def _error_reason(eref: Any, e: BaseException, pyotp_peer: bool) -> Any:
    stack = [(Atom(fr.filename.rsplit("/", 1)[-1]), Atom(fr.name), 0,
              [(Atom("file"), fr.filename), (Atom("line"), fr.lineno or 0)])
             for fr in traceback.extract_tb(e.__traceback__)][-8:]
    if pyotp_peer:
        return (eref, A_ERROR, e, stack)
    return (eref, A_ERROR, to_erl(e), stack)


def _rpc_result(eref: Any, reason: Any, pyotp_peer: bool) -> Any:
    """erpc's monitor exit reason -> rpc:call's result."""
    if type(reason) is tuple and len(reason) >= 3 and reason[0] == eref:
        tag = reason[1]
        if tag == "return" or tag == "throw":
            return reason[2]
        if tag == "exit":
            return (A_BADRPC, (A_EXIT, reason[2]))
        if tag == "error":
            return (A_BADRPC, (A_EXIT, (reason[2], reason[3] if len(reason) > 3 else [])))
    if reason == "noconnection":
        return (A_BADRPC, A_NODEDOWN)
    return (A_BADRPC, (A_EXIT, reason if pyotp_peer else from_erl(reason)))


async def _erpc_process(k: NetKernel, peer: Optional[str], frm: Optional[Pid], req: Any, eref: Any,
                        m: Any, f: Any, a: Any) -> None:
    c = k.conns.get(peer) if peer is not None else None
    pyotp_peer = c.python if c is not None else True
    result = await _apply(k, m, f, a, eref, pyotp_peer)
    if frm is not None and peer is not None:
        k.erpc_done(_core.self(), peer, frm, req, result)
    elif frm is None and result[1] == "error":
        _log.error("pyotp dist: rpc cast %s:%s failed: %r", m, f, result[2])


async def _local_rpc(k: NetKernel, m: str, f: str, a: List[Any], fut: "asyncio.Future[Any]") -> None:
    eref = _core.make_ref()
    r = await _apply(k, m, f, a, eref, True)
    if not fut.done():
        fut.set_result(_rpc_result(eref, r, True))


async def _spawned_process(k: NetKernel, m: str, f: str, args: List[Any]) -> Any:
    if not k.allowed(m):
        raise _core.Exit(("not_allowed", m))
    try:
        fn = beam_api.lookup(m, f, args) or _resolve(m, f)
    except _Undef:
        raise _core.Exit(("undef", [(m, f, args, [])])) from None
    r = fn(*args)
    if inspect.isawaitable(r):
        r = await r
    return r


# ---------------------------------------------------------------------------------------
# The public face


class Node:
    """This node's distribution: start/stop, connections, node monitoring, remote spawn.
    All methods are static (one node per OS process).

    >>> async def main():
    ...     await Node.start("a@127.0.0.1", cookie="secret")
    ...     Node.self()
    ...     await Node.connect("b@127.0.0.1")
    ...     Node.list()
    ...     await Node.stop()
    """

    @staticmethod
    async def start(name: str, *, cookie: str, hidden: bool = False, listen_host: str = "127.0.0.1",
                    port: int = 0, net_ticktime: float = 60, epmd: Union[str, int] = "auto",
                    tls: Any = None, rpc_allow: Optional[Iterable[str]] = None,
                    setup_time: float = 7.0, python_payloads: Union[bool, Iterable[str]] = False,
                    busy_wait: Union[str, float] = BUSY_WAIT_DEFAULT,
                    console: bool = False, max_frame_size: int = MAX_FRAME_SIZE,
                    max_inflated_size: int = MAX_INFLATED_SIZE, max_handshakes: int = MAX_HANDSHAKES,
                    epmd_max_per_host: int = _epmd.MAX_PER_HOST,
                    epmd_max_connections: int = _epmd.MAX_CONNECTIONS) -> str:
        """Make this node distributed as ``name`` ("alive@host").

        - ``cookie``: the shared secret (compared in constant time).
        - ``hidden``: do not appear in other nodes' visible lists (connections to Erlang
          nodes are always hidden: pyotp does not speak ``global``'s protocol to Erlang).
        - ``listen_host`` / ``port``: where to accept connections (port 0 picks one).
        - ``net_ticktime``: seconds; a peer silent that long is declared down; ticks are
          sent every ``net_ticktime / 4``.
        - ``epmd``: "auto" (use the running EPMD, or start pyotp's own in this process),
          a port number (same, on that port), or "none" (no EPMD: peers listen on ``port``
          too, or on what ``Node.set_peer_port`` says).
        - ``tls``: None, ``(server_ssl_context, client_ssl_context)`` or a dict with
          ``certfile``, ``keyfile``, ``cafile`` (mutual TLS), optional ``verify``.
        - ``rpc_allow``: modules (and their submodules) whose functions rpc/spawn requests
          may run; None allows any module (the cookie is full trust, as in Erlang). Either
          way an rpc ``M:F`` runs only a function of module ``M`` itself: a public name
          defined there or listed in its ``__all__`` (never a dotted name, a ``_`` name or
          something the module imported); anything else is ``undef``.
        - ``python_payloads``: pickled Python values between two pyotp nodes (values
          plain ETF cannot carry: sets, exceptions, class instances, numpy arrays). Off
          (False) by default; True accepts the fixed safe set of ``pyotp.etf.SAFE_GLOBALS``;
          a list of module names (``["numpy", "myapp.models"]``) accepts their classes
          and functions too. Pickles flow only when both nodes enable this; they are
          decoded by ``pyotp.etf.SafeUnpickler``, and a pickle naming anything else
          closes the connection. Without it, ``str`` still arrives as ``str`` between
          pyotp nodes, and sending a value ETF cannot carry raises TypeError. See
          docs/distribution.md, "Security".
        - ``busy_wait``: how long a connection may spin (without the GIL, nothing else
          runnable) for its next read when one is due at once: after a remote call is
          written, or when reads arrive in quick succession. Like BEAM's scheduler busy
          wait (``+sbwt``). ``"auto"`` (default): up to 100 us, only while spinning pays
          and the machine has a free core (see docs/distribution.md, "Busy or small
          machines"); ``"none"`` (or 0): never; a number: always that many microseconds
          (0..10000). One policy for the whole process: the last ``Node.start`` sets it.
          TLS connections (and Windows) never spin.
        - ``console``: run the console service, so ``python -m pyotp remsh`` can run
          Python code in this node (off by default; whoever has the cookie gets full
          control, as with Erlang's remote shell; see docs/operations.md).
        - Limits (docs/distribution.md, "Limits"; a bad value is a TypeError or
          ValueError naming the option): ``max_frame_size`` (bytes of one frame after the
          handshake, default 256 MiB, at least 64 KiB), ``max_inflated_size`` (bytes a
          compressed term may inflate to, default 64 MiB), ``max_handshakes`` (incoming
          connections in their handshake at once, default 64), ``epmd_max_per_host`` and
          ``epmd_max_connections`` (for the EPMD this node may host: registrations from
          one address, default 128, and connections at once, default 512). A peer over a
          limit has its connection closed, with a logged reason.

        Returns the node name.

        >>> await Node.start("a@127.0.0.1", cookie="secret", net_ticktime=8)
        'a@127.0.0.1'
        """
        global _kernel
        if _kernel is not None:
            raise DistError("this node is already distributed as %s" % _kernel.name)
        if not _core._node_running():
            raise DistError("Node.start needs a running pyotp node (inside pyotp.run or Runtime)")
        k = NetKernel(name, cookie, hidden=hidden, listen_host=listen_host, port=port,
                      net_ticktime=net_ticktime, epmd=epmd, tls=tls, rpc_allow=rpc_allow,
                      setup_time=setup_time, python_payloads=python_payloads,
                      busy_wait=busy_wait, max_frame_size=max_frame_size,
                      max_inflated_size=max_inflated_size, max_handshakes=max_handshakes,
                      epmd_max_per_host=epmd_max_per_host,
                      epmd_max_connections=epmd_max_connections)
        await k.start()
        _kernel = k
        try:
            from . import global_names, pg
            await global_names._start(k)
            await pg._start(k)
            if console:
                from . import console as _console
                await _console.start()
        except BaseException:
            _kernel = None
            k.stop()
            raise
        return name

    @staticmethod
    def stop() -> "_Done":
        """Stop distribution: close every connection (peers see nodedown; local links and
        monitors to remote processes get ``noconnection``), unregister from EPMD. The
        work is done when it returns; the result may be awaited (``await Node.stop()``)
        or ignored.

        >>> await Node.stop()
        """
        global _kernel
        k = _kernel
        if k is None:
            return _DONE
        try:
            from . import console, global_names, pg
            global_names._stop()
            pg._stop()
            console.stop()
        finally:
            _kernel = None
            k.stop()
        return _DONE

    @staticmethod
    def self() -> str:
        """This node's name ("nonode@nohost" when not distributed).

        >>> Node.self()
        'a@127.0.0.1'
        """
        return str(_core.local_node())

    @staticmethod
    def alive() -> bool:
        """True while the node is distributed."""
        return _kernel is not None

    @staticmethod
    def list(kind: str = "visible") -> List[str]:
        """Connected nodes: "visible" (default), "hidden", "connected" (both), or "known"
        (connected plus this node).

        >>> Node.list("connected")
        ['b@127.0.0.1']
        """
        if kind not in ("visible", "hidden", "connected", "known", "this"):
            raise ValueError("Node.list kind must be visible, hidden, connected, known or this")
        if kind == "this":
            return [Node.self()]
        k = _kernel
        if k is None:
            return []
        if kind == "visible":
            return [n for n, c in k.conns.items() if not c.hidden]
        if kind == "hidden":
            return [n for n, c in k.conns.items() if c.hidden]
        out = list(k.conns)
        return out + [k.name] if kind == "known" else out

    @staticmethod
    async def connect(node: str) -> bool:
        """Connect to ``node`` (no-op if connected); True on success.

        >>> await Node.connect("b@127.0.0.1")
        True
        """
        return await kernel().connect(node)

    @staticmethod
    def disconnect(node: str) -> bool:
        """Close the connection to ``node`` (both sides see nodedown). False if not connected.

        >>> Node.disconnect("b@127.0.0.1")
        True
        """
        return kernel().disconnect(node)

    @staticmethod
    def set_cookie(cookie: str, node: Optional[str] = None) -> None:
        """Set this node's cookie, or (with ``node``) the cookie used with that node only.

        >>> Node.set_cookie("other", node="c@127.0.0.1")
        """
        if not isinstance(cookie, str) or not cookie:
            raise ValueError("cookie must be a non-empty str")
        k = kernel()
        if node is None:
            k.cookie = cookie
        else:
            k.cookies[node] = cookie

    @staticmethod
    def get_cookie() -> str:
        """This node's cookie."""
        return kernel().cookie

    @staticmethod
    def set_peer_port(node: str, port: int) -> None:
        """EPMD-less mode: the port ``node`` listens on (default: our own port).

        >>> Node.set_peer_port("b@127.0.0.1", 9101)
        """
        kernel().peer_ports[node] = int(port)

    @staticmethod
    async def ping(node: str, timeout: float = 7.0) -> str:
        """``net_adm:ping``: "pong" if ``node`` answers, else "pang".

        >>> await Node.ping("b@127.0.0.1")
        'pong'
        """
        k = kernel()
        if node == k.name:
            return "pong"
        try:
            if not await k.connect(node):
                return "pang"
            r = await _external_call(("net_kernel", node), (Atom("is_auth"), Atom(k.name)), timeout)
        except (_core.Exit, DistError):
            return "pang"
        return "pong" if r == "yes" else "pang"

    @staticmethod
    def monitor_nodes(flag: bool = True) -> None:
        """Subscribe (or unsubscribe) the calling process to ``("nodeup", node)`` and
        ``("nodedown", node)`` messages.

        >>> Node.monitor_nodes(True)
        >>> msg = await pyotp.receive()      # ("nodeup", "b@127.0.0.1")
        """
        me = _core.self()
        k = kernel()
        if flag:
            k.node_watchers[me] = True
        else:
            k.node_watchers.pop(me, None)

    @staticmethod
    async def spawn(node: str, fn: Any, *args: Any) -> Pid:
        """Start ``fn(*args)`` as a process on ``node``; returns its pid. ``fn`` is a
        module-level function (sent by module and name: the remote node imports it) or a
        ``(module, function)`` pair (for Erlang nodes: ``("erlang", "apply")`` ...).

        >>> pid = await Node.spawn("b@127.0.0.1", workers.echo, "hello")
        """
        return cast(Pid, await kernel().spawn(node, fn, args, False))

    @staticmethod
    async def spawn_link(node: str, fn: Any, *args: Any) -> Pid:
        """Like spawn, linked to the calling process (which must be a pyotp process).

        >>> pid = await Node.spawn_link("b@127.0.0.1", workers.loop)
        """
        return cast(Pid, await kernel().spawn(node, fn, args, True))

    @staticmethod
    async def spawn_monitor(node: str, fn: Any, *args: Any) -> Tuple[Pid, Reference]:
        """Like spawn, monitored by the calling process (which must be a pyotp process);
        returns ``(pid, ref)``. The monitor is set up together with the process (Erlang's
        ``spawn_request`` with the ``monitor`` option), so even a process that dies at
        once gives its real exit reason: ``("DOWN", ref, "process", pid, reason)``.

        >>> pid, ref = await Node.spawn_monitor("b@127.0.0.1", workers.job, 42)
        """
        return cast(Tuple[Pid, Reference], await kernel().spawn(node, fn, args, False, True))


# ==== LOCAL LINK HOOK (issue 13, local node pools) =====================================
# The ONLY place the node pool (pyotp/pool.py) touches the distribution code. A pool
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
