"""Entry points: ``pyotp.run``, the ``Runtime`` async context manager, and a node running
in a background thread with blocking methods.

All durations in pyotp's Python API are **seconds** (int or float), like asyncio.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any, Awaitable, Callable, Dict, Optional, TypeVar, cast

_T = TypeVar("_T")

from . import _core, _signals
from ._core import Exit

_log = logging.getLogger("pyotp")


def _new_loop(use_uvloop: Optional[bool]) -> asyncio.AbstractEventLoop:
    if use_uvloop is not False:
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            if use_uvloop:
                raise
        else:
            return cast(asyncio.AbstractEventLoop, uvloop.new_event_loop())
    return asyncio.new_event_loop()


class Runtime:
    """Hosts a pyotp node inside a running asyncio program.

    >>> async def amain():
    ...     async with pyotp.Runtime() as rt:
    ...         pid = await Counter.start_link(0)
    ...         print(await GenServer.call(pid, "get"))

    On exit every process is asked to stop (newest first; behaviours run ``terminate``),
    and whatever has not stopped after ``shutdown_timeout`` seconds is killed.
    """

    def __init__(self, *, shutdown_timeout: float = 5.0, max_mailbox: Any = None) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.max_mailbox = max_mailbox
        self.loop: Optional[asyncio.AbstractEventLoop] = None

    async def __aenter__(self) -> "Runtime":
        self.loop = asyncio.get_running_loop()
        _core._node_attach(self.loop, self.max_mailbox)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop every process (see class doc), then detach the node from the loop."""
        if not _core._node_running() or asyncio.get_running_loop() is not self.loop:
            # not this runtime's node: a run interrupted by a signal leaves its coroutine
            # suspended inside `async with Runtime`, and when the garbage collector closes
            # it later, inside another node's loop, it must not stop that node
            return
        try:
            fut = _core._shutdown_all("shutdown")
            try:
                await asyncio.wait_for(asyncio.shield(fut), self.shutdown_timeout)
            except asyncio.TimeoutError:
                _log.warning("pyotp: processes still running after %.1fs, killing them",
                             self.shutdown_timeout)
                _core._kill_all()
        finally:
            _core._node_detach()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> "_core.Pid":
        """Start a process (see ``pyotp.spawn``)."""
        return _core.spawn(fn, *args)

    async def run_process(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` as a process and return its result; if it exits abnormally,
        re-raise its exception (or raise ``pyotp.Exit(reason)``)."""
        pid = _core.spawn(fn, *args)
        reason, result = await _core._await_exit(pid)
        if reason == "normal":
            return result
        if isinstance(reason, BaseException):
            raise reason
        raise Exit(reason)

    @staticmethod
    def start_thread(*, use_uvloop: Optional[bool] = None, max_mailbox: Any = None) -> "NodeThread":
        """Run a node in a background thread; returns a handle whose methods block.

        >>> node = pyotp.Runtime.start_thread()
        >>> pid = node.call_in_loop(Counter.start_link, 0)
        >>> node.call(pid, "get")
        0
        >>> node.stop()
        """
        return NodeThread(use_uvloop, max_mailbox=max_mailbox)


# How run() starts a node that this module cannot start alone. The layers built on the
# runtime register here, so that imports go one way (pyotp.dist imports the runtime, never
# the reverse); pyotp/__init__.py registers the distributed node's launcher, which imports
# pyotp.dist on first use.
_launchers: Dict[str, Callable[..., Any]] = {}


def register_launcher(kind: str, launcher: Callable[..., Any]) -> Optional[Callable[..., Any]]:
    """Make ``launcher`` start the nodes of ``kind`` for :func:`run` (``"node"``: a
    distributed node, called as ``launcher(main, *args, node=..., cookie=..., **options)``
    and returning main's result); returns the launcher it replaces (or None).

    >>> old = register_launcher("node", lambda main, *a, **kw: "started " + kw["node"])
    >>> run(lambda: None, node="a@127.0.0.1", cookie="secret")
    'started a@127.0.0.1'
    >>> _ = register_launcher("node", old)
    """
    if not callable(launcher):
        raise TypeError("register_launcher: the launcher must be callable, got %r" % (launcher,))
    old = _launchers.get(kind)
    _launchers[kind] = launcher
    return old


def _launcher(kind: str) -> Callable[..., Any]:
    try:
        return _launchers[kind]
    except KeyError:
        raise RuntimeError("pyotp.run: no launcher registered for %r nodes (import pyotp, which "
                           "registers the distributed one)" % (kind,)) from None


def run(main: Callable[..., Awaitable[_T]], *args: Any, use_uvloop: Optional[bool] = None,
        shutdown_timeout: float = 5.0, node: Optional[str] = None, cookie: Optional[str] = None,
        max_mailbox: Any = None, dashboard: Optional[int] = None, dashboard_host: str = "127.0.0.1",
        dashboard_token: Optional[str] = None, nodes: Any = 1, **dist: Any) -> _T:
    """Start a node, run ``main(*args)`` as its first process, return its result, then shut
    everything down in order (like ``asyncio.run``). uvloop is used when installed unless
    ``use_uvloop=False``. ``max_mailbox`` is the default mailbox limit of every process
    (None, the default: no limit; the values of ``pyotp.process_flag("max_mailbox", ...)``).

    Signals (main thread only): SIGINT or SIGTERM stops the node in order, as when ``main``
    returns: every process is asked to stop, newest first, so supervisors stop their
    children and behaviours run ``terminate`` (``shutdown_timeout`` seconds, then the rest
    is killed). Then SIGINT raises ``KeyboardInterrupt`` (as ``asyncio.run`` does) and
    SIGTERM raises ``SystemExit(128 + SIGTERM)`` (exit status 143, what a shell reports
    for a process killed by SIGTERM). A second signal while stopping exits the process
    at once (``os._exit(128 + signum)``, no further cleanup). ``python -m pyotp run``
    uses the same mechanism (``pyotp._signals``).

    ``nodes=N`` (an int >= 1, or ``"auto"`` for the usable cores) runs a local node pool:
    N-1 worker nodes as child processes connected by shared memory (``pyotp.pool``,
    docs/multicore.md); 1, the default, is this process alone.

    ``dashboard=8080`` serves the web dashboard (``pyotp.dashboard``) on that port while
    ``main`` runs, on 127.0.0.1 unless ``dashboard_host`` (then ``dashboard_token`` too).

    >>> async def main():
    ...     pid = await Counter.start_link(0)
    ...     GenServer.cast(pid, "inc")
    ...     return await GenServer.call(pid, "get")
    >>> pyotp.run(main)
    1
    """
    from .pool import check_nodes
    size = check_nodes(nodes)
    if dashboard is not None:
        from .dashboard import with_dashboard
        main = with_dashboard(main, dashboard, dashboard_host, dashboard_token)
    if size > 1:
        from .pool import run_pool
        return cast(_T, run_pool(main, *args, nodes=size, node=node, cookie=cookie,
                                 run_kw={"use_uvloop": use_uvloop,
                                         "shutdown_timeout": shutdown_timeout,
                                         "max_mailbox": max_mailbox}, dist=dist))
    if node is not None:
        # a distributed node: "name@host", with the cookie and the options of Node.start
        if cookie is None:
            raise TypeError("pyotp.run(node=%r) needs cookie=... (the distribution secret)" % (node,))
        return cast(_T, _launcher("node")(main, *args, node=node, cookie=cookie, use_uvloop=use_uvloop,
                                          shutdown_timeout=shutdown_timeout, max_mailbox=max_mailbox,
                                          **dist))
    if dist or cookie is not None:
        raise TypeError("cookie and distribution options need node='name@host'")
    if _core._node_running():
        # one node per OS process: a second one would take over the first one's scheduler
        raise RuntimeError("pyotp.run: a node is already running in this process; inside "
                           "it, start processes (pyotp.spawn, start_link) instead")
    loop = _new_loop(use_uvloop)

    async def _amain() -> Any:
        stop: "asyncio.Future[int]" = loop.create_future()

        def on_signal(signum: int) -> None:
            if not stop.done():
                stop.set_result(signum)

        # the handlers cover the whole life of the node, its final shutdown included
        with _signals.stop_on_signals(loop, on_signal):
            async with Runtime(shutdown_timeout=shutdown_timeout, max_mailbox=max_mailbox) as rt:
                task = asyncio.ensure_future(rt.run_process(main, *args))
                await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
                if stop.done():
                    _log.info("pyotp: received %s, shutting down",
                              _signals.signal_name(stop.result()))
                    await rt.shutdown()
        if not stop.done():
            return task.result()
        if not task.done():
            task.cancel()
        elif not task.cancelled():
            task.exception()           # main was stopped by the shutdown: not an error
        if stop.result() == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + stop.result())

    try:
        return cast(_T, loop.run_until_complete(_amain()))
    finally:
        if _core._node_running():
            # interrupted (Ctrl-C / SystemExit escaped the loop): no orderly shutdown ran
            _core._node_detach()
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


class NodeThread:
    """A node running on its own thread. Every method blocks the calling thread and is
    safe from any thread except the node's own.

    >>> async def worker():
    ...     await pyotp.receive()
    >>> node = pyotp.Runtime.start_thread()
    >>> pid = node.spawn(worker)
    >>> node.send(pid, "hello")
    'hello'
    >>> node.stop()
    """

    def __init__(self, use_uvloop: Optional[bool] = None, *, max_mailbox: Any = None) -> None:
        self._max_mailbox = max_mailbox
        self._loop = _new_loop(use_uvloop)
        self._ready = threading.Event()
        self._done: Optional[asyncio.Future[None]] = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._main, name="pyotp-node", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._amain())
        finally:
            self._loop.close()

    async def _amain(self) -> None:
        self._done = self._loop.create_future()
        try:
            async with Runtime(max_mailbox=self._max_mailbox):
                self._ready.set()
                await self._done
        except BaseException as e:  # pragma: no cover - surfaced to the starter
            self._error = e
            self._ready.set()

    def call_in_loop(self, fn: Callable[..., Any], *args: Any, timeout: Optional[float] = None) -> Any:
        """Run ``fn(*args)`` on the node's loop thread (awaiting it if it returns an
        awaitable) and return the result."""
        async def runner() -> Any:
            r = fn(*args)
            if hasattr(r, "__await__"):
                r = await r
            return r
        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(timeout)

    def call(self, server: Any, request: Any, timeout: Optional[float] = 5.0) -> Any:
        """Blocking GenServer.call."""
        return _core._thread_call(server, request, timeout)

    def cast(self, server: Any, request: Any) -> str:
        """GenServer.cast (does not block)."""
        return _core.cast(server, request)

    def send(self, dest: Any, msg: Any) -> Any:
        """pyotp.send (does not block)."""
        return _core.send(dest, msg)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> "_core.Pid":
        """Start a process on the node and return its pid."""
        return cast(_core.Pid, self.call_in_loop(_core.spawn, fn, *args))

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the node down (orderly, as pyotp.run does) and join its thread."""
        done = self._done
        if done is not None and not self._loop.is_closed():
            def finish() -> None:
                if not done.done():
                    done.set_result(None)
            self._loop.call_soon_threadsafe(finish)
        self._thread.join(timeout)
