"""The public face of the node's distribution, :class:`Node` (start/stop, connections,
node monitoring, remote spawn).

The work is done elsewhere, one job per module: kernel.py (the kernel: connections, node
monitors, ticks, the core's remote-signal handler), rpc.py (rpc, erpc and remote spawn),
system.py (the processes every node runs: net_kernel, rex, a group leader), connection.py
(one connection's handshake). ``NetKernel``, ``kernel`` and ``DistError`` are re-exported
here, where they were defined before the split.

With a second node ``b@127.0.0.1`` running (with cookie ``secret``)::

    async def main():
        await Node.start("a@127.0.0.1", cookie="secret")
        print(await Node.ping("b@127.0.0.1"))       # pong
        await Node.stop()

    pyotp.run(main)
"""
from __future__ import annotations

from typing import Any, Iterable, List, Optional, Tuple, Union, cast

from .. import _core
from .. import pubsub as _pubsub
from ..etf import Atom, Pid, Reference
from . import epmd as _epmd
from . import kernel as _kmod
from . import rpc, system
from .kernel import (BUSY_WAIT_DEFAULT, MAX_FRAME_SIZE, MAX_HANDSHAKES, MAX_INFLATED_SIZE, MAX_TERM_DEPTH, DistError,
                     NetKernel, _Done, _DONE, _external_call, kernel)

__all__ = ["Node", "DistError", "NetKernel", "kernel"]


def __getattr__(name: str) -> Any:
    # ``node._kernel`` (the running kernel) lives in kernel.py since the split; code that
    # read it here keeps working
    if name == "_kernel":
        return _kmod._kernel
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


class Node:
    """This node's distribution: start/stop, connections, node monitoring, remote spawn.
    All methods are static (one node per OS process).

    With a second node ``b@127.0.0.1`` running::

        async def main():
            await Node.start("a@127.0.0.1", cookie="secret")
            Node.self()                           # 'a@127.0.0.1'
            await Node.connect("b@127.0.0.1")     # True
            Node.list()                           # ['b@127.0.0.1']
            await Node.stop()
    """

    @staticmethod
    async def start(name: str, *, cookie: str, hidden: bool = False, listen_host: str = "127.0.0.1",
                    port: int = 0, net_ticktime: float = 60, epmd: Union[str, int] = "auto",
                    tls: Any = None, rpc_allow: Optional[Iterable[str]] = None,
                    setup_time: float = 7.0, python_payloads: Union[bool, Iterable[str]] = False,
                    busy_wait: Union[str, float] = BUSY_WAIT_DEFAULT,
                    console: bool = False, max_frame_size: int = MAX_FRAME_SIZE,
                    max_inflated_size: int = MAX_INFLATED_SIZE, max_handshakes: int = MAX_HANDSHAKES,
                    max_term_depth: int = MAX_TERM_DEPTH,
                    epmd_max_per_host: int = _epmd.MAX_PER_HOST,
                    epmd_max_connections: int = _epmd.MAX_CONNECTIONS, transport: Any = None,
                    beam_visible: bool = False) -> str:
        """Make this node distributed as ``name`` ("alive@host").

        - ``cookie``: the shared secret (compared in constant time).
        - ``hidden``: do not appear in other nodes' visible lists.
        - ``beam_visible``: connect to Erlang/Elixir nodes as a visible node too (off by
          default: connections to BEAM nodes are then hidden). A visible pyotp node is in
          their ``nodes()`` and ``monitor_nodes`` reports, takes part in Erlang's
          ``global`` (names, locks, ``global:sync()``) and joins the mesh: connecting to
          one BEAM node of a cluster connects it to the others. See docs/distribution.md,
          "Visible to BEAM nodes", for the trade-offs. Not with ``hidden=True``.
        - ``listen_host`` / ``port``: where to accept connections (port 0 picks one).
        - ``net_ticktime``: seconds; a peer silent that long is declared down; ticks are
          sent every ``net_ticktime / 4``.
        - ``epmd``: "auto" (use the running EPMD, or start pyotp's own in this process),
          a port number (same, on that port), or "none" (no EPMD: peers listen on ``port``
          too, or on what ``Node.set_peer_port`` says).
        - ``tls``: None, ``(server_ssl_context, client_ssl_context)`` or a dict with
          ``certfile``, ``keyfile``, ``cafile`` (mutual TLS), optional ``verify``.
        - ``transport``: how connections are carried (pyotp.dist.transport): "tcp" (the
          default; TLS when ``tls`` is given), ``"unix:<directory>"`` (Unix domain
          sockets ``<directory>/<node name>``, for nodes of one machine; no port, no
          EPMD) or a ``Carrier`` instance.
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
          limit has its connection closed, with a logged reason. ``max_term_depth``
          (nesting of tuples, lists and maps in a received message, default one million;
          BEAM has no such limit) is the exception: a message nested deeper is dropped
          alone, with a logged error, and the connection stays up.

        Returns the node name.

        Inside a running node (``pyotp.run(main)``)::

            await Node.start("a@127.0.0.1", cookie="secret", net_ticktime=8)   # 'a@127.0.0.1'
        """
        if _kmod._kernel is not None:
            raise DistError("this node is already distributed as %s" % _kmod._kernel.name)
        if not _core._node_running():
            raise DistError("Node.start needs a running pyotp node (inside pyotp.run or Runtime)")
        k = NetKernel(name, cookie, hidden=hidden, listen_host=listen_host, port=port,
                      net_ticktime=net_ticktime, epmd=epmd, tls=tls, rpc_allow=rpc_allow,
                      setup_time=setup_time, python_payloads=python_payloads,
                      busy_wait=busy_wait, max_frame_size=max_frame_size,
                      max_inflated_size=max_inflated_size, max_handshakes=max_handshakes,
                      max_term_depth=max_term_depth,
                      epmd_max_per_host=epmd_max_per_host,
                      epmd_max_connections=epmd_max_connections, transport=transport)
        if beam_visible and hidden:
            raise DistError("beam_visible=True and hidden=True contradict each other")
        k.beam_visible = bool(beam_visible)
        k.rpc = rpc
        await k.start()
        _kmod._kernel = k
        try:
            await system.start(k)
            from . import global_names, pg
            await global_names._start(k)
            if beam_visible:
                from . import global_beam
                await global_beam.start(k)
            await pg._start(k)
            _pubsub.set_remote_members_provider(_pubsub_peers)
            if console:
                from . import console as _console
                await _console.start()
        except BaseException:
            _kmod._kernel = None
            k.stop()
            raise
        return name

    @staticmethod
    def stop() -> "_Done":
        """Stop distribution: close every connection (peers see nodedown; local links and
        monitors to remote processes get ``noconnection``), unregister from EPMD. The
        work is done when it returns; the result may be awaited (``await Node.stop()``)
        or ignored.

        On a distributed node::

            await Node.stop()
        """
        k = _kmod._kernel
        if k is None:
            return _DONE
        try:
            from . import console, global_names, pg
            _pubsub.set_remote_members_provider(None)
            global_names._stop()
            from . import global_beam
            global_beam.stop()
            pg._stop()
            console.stop()
        finally:
            _kmod._kernel = None
            k.stop()
        return _DONE

    @staticmethod
    def self() -> str:
        """This node's name ("nonode@nohost" when not distributed).

        >>> Node.self()
        'nonode@nohost'
        """
        return str(_core.local_node())

    @staticmethod
    def alive() -> bool:
        """True while the node is distributed."""
        return _kmod._kernel is not None

    @staticmethod
    def list(kind: str = "visible") -> List[str]:
        """Connected nodes: "visible" (default), "hidden", "connected" (both), or "known"
        (connected plus this node).

        >>> Node.list("connected")        # with no connection yet
        []
        >>> Node.list("this")
        ['nonode@nohost']
        """
        if kind not in ("visible", "hidden", "connected", "known", "this"):
            raise ValueError("Node.list kind must be visible, hidden, connected, known or this")
        if kind == "this":
            return [Node.self()]
        k = _kmod._kernel
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

        On a distributed node, with ``b@127.0.0.1`` running::

            await Node.connect("b@127.0.0.1")      # True
        """
        return await kernel().connect(node)

    @staticmethod
    def disconnect(node: str) -> bool:
        """Close the connection to ``node`` (both sides see nodedown). False if not connected.

        On a distributed node connected to ``b@127.0.0.1``::

            Node.disconnect("b@127.0.0.1")         # True
        """
        return kernel().disconnect(node)

    @staticmethod
    def set_cookie(cookie: str, node: Optional[str] = None) -> None:
        """Set this node's cookie, or (with ``node``) the cookie used with that node only.

        On a distributed node::

            Node.set_cookie("other", node="c@127.0.0.1")
        """
        if not isinstance(cookie, str) or not cookie:
            raise ValueError("cookie must be a non-empty str")
        k = kernel()
        if node is None:
            k.cookie = cookie
        else:
            k.set_peer(node, cookie=cookie)

    @staticmethod
    def get_cookie() -> str:
        """This node's cookie."""
        return kernel().cookie

    @staticmethod
    def set_peer_port(node: str, port: int) -> None:
        """EPMD-less mode: the port ``node`` listens on (default: our own port).

        On a node started with ``epmd="none"``::

            Node.set_peer_port("b@127.0.0.1", 9101)
        """
        kernel().set_peer(node, port=int(port))

    @staticmethod
    async def ping(node: str, timeout: float = 7.0) -> str:
        """``net_adm:ping``: "pong" if ``node`` answers, else "pang".

        On a distributed node, with ``b@127.0.0.1`` running::

            await Node.ping("b@127.0.0.1")         # 'pong'
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

        On a distributed node::

            Node.monitor_nodes(True)
            msg = await pyotp.receive()      # ("nodeup", "b@127.0.0.1") once b connects
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

        With ``b@127.0.0.1`` running and a module ``workers`` importable there::

            pid = await Node.spawn("b@127.0.0.1", workers.echo, "hello")
        """
        return cast(Pid, await rpc.spawn(kernel(), node, fn, args, False))

    @staticmethod
    async def spawn_link(node: str, fn: Any, *args: Any) -> Pid:
        """Like spawn, linked to the calling process (which must be a pyotp process).

        As for spawn::

            pid = await Node.spawn_link("b@127.0.0.1", workers.loop)
        """
        return cast(Pid, await rpc.spawn(kernel(), node, fn, args, True))

    @staticmethod
    async def spawn_monitor(node: str, fn: Any, *args: Any) -> Tuple[Pid, Reference]:
        """Like spawn, monitored by the calling process (which must be a pyotp process);
        returns ``(pid, ref)``. The monitor is set up together with the process (Erlang's
        ``spawn_request`` with the ``monitor`` option), so even a process that dies at
        once gives its real exit reason: ``("DOWN", ref, "process", pid, reason)``.

        As for spawn::

            pid, ref = await Node.spawn_monitor("b@127.0.0.1", workers.job, 42)
        """
        return cast(Tuple[Pid, Reference], await rpc.spawn(kernel(), node, fn, args, False, True))


def _pubsub_peers(pubsub: str) -> List[Any]:
    """PubSub across nodes (installed by Node.start, removed by Node.stop): a broadcast is
    forwarded once to the PubSub server of the same name on every visible node (registered
    there as "<name>.Server"); a node that does not run that PubSub drops it, as a send to
    an unregistered remote name is dropped. Moved from dist/__init__.py, where importing
    pyotp.dist installed it."""
    return [(pubsub + ".Server", node) for node in Node.list("visible")]
