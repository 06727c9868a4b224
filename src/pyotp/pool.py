"""Local node pools: one pyotp node per core, as BEAM uses one scheduler per core.

``pyotp.run(main, nodes=N)`` starts N-1 worker nodes as child OS processes of the same
interpreter (multiprocessing's *spawn* start method: the main script is imported on each
worker as ``__mp_main__``, so its functions and classes resolve there; guard the script's
entry with ``if __name__ == "__main__":``). The nodes are connected to each other (a full
mesh) by shared-memory rings handed over by descriptor: no EPMD, and no cookie crosses
anything but the inherited control socket (the pool's secret is random per run). Every
node of the pool is an ordinary distributed node to the others: ``Node.list()``,
``Node.spawn``, remote ``GenServer.call/cast``, links, monitors, ``via`` names and PubSub
work as between any distributed nodes.

The head (the process that called ``pyotp.run``) supervises its workers: a worker that
dies is a ``nodedown`` for every other node (links and monitors fire with
``noconnection``) and is started again under the same name (at most ``MAX_RESTARTS``
within ``RESTART_PERIOD`` seconds, then it stays down with a logged error). When the head
returns or dies, every worker exits within 2 s: on Linux the kernel kills them with the
head (``PR_SET_PDEATHSIG``), and everywhere they end on the EOF of their control socket.

>>> async def main():
...     return sorted(Node.list())
>>> if __name__ == "__main__":
...     pyotp.run(main, nodes=2)
['pyotp4242_w1@127.0.0.1']
"""
from __future__ import annotations

import asyncio
import logging
import os
import pickle
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from . import _core

__all__ = ["usable_cores", "check_nodes", "pool_nodes", "worker_node", "MAX_RESTARTS",
           "RESTART_PERIOD"]

_log = logging.getLogger("pyotp.pool")

MAX_RESTARTS = 5            # worker restarts allowed within RESTART_PERIOD seconds
RESTART_PERIOD = 10.0
EXIT_GRACE = 1.5            # seconds a worker is given to stop before it is killed
_HDR = struct.Struct("!I")

_pool: Optional["_Pool"] = None      # the head's pool while it runs
_members: List[str] = []             # every node of this pool, head first (head and workers)


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity and cgroup v2 quota (what
    ``nodes="auto"`` starts).

    >>> usable_cores() >= 1
    True
    """
    usable = _core._wp_read_machine()[0]
    return max(1, int(usable or 1))


def check_nodes(nodes: Any) -> int:
    """Validate ``pyotp.run``'s ``nodes=`` (an int >= 1 or "auto"): the pool's size."""
    if nodes == "auto" and isinstance(nodes, str):
        return usable_cores()
    if isinstance(nodes, bool) or not isinstance(nodes, int):
        raise TypeError('nodes must be an int >= 1 or "auto", got %r' % (nodes,))
    if nodes < 1:
        raise ValueError('nodes must be >= 1 (1 = this process only) or "auto", got %r' % (nodes,))
    if nodes > 1024:
        raise ValueError("nodes=%d is more than a pool can hold (1024)" % nodes)
    return nodes


def pool_nodes() -> List[str]:
    """The nodes of this node's pool, head first ([] outside a pool).

    >>> pool_nodes()
    []
    """
    return list(_members)


def worker_node(key: Any) -> str:
    """The pool node for ``key`` (stable while the pool's size is): spreads work and
    partitions over the pool; the local node outside a pool."""
    if not _members:
        return str(_core.local_node())
    return _members[hash(key) % len(_members)]


# -- control messages (head <-> worker): a length-prefixed pickle; descriptors ride on the
#    first byte, so each message is read header first (its descriptors come with it) ------

def _send(sock: socket.socket, msg: Any, fds: Tuple[int, ...] = ()) -> None:
    body = pickle.dumps(msg)
    data = _HDR.pack(len(body)) + body
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def _recv(sock: socket.socket) -> Tuple[Any, List[int]]:
    """One message (blocking; the sender writes whole messages). EOFError at the end."""
    head, fds, _flags, _addr = socket.recv_fds(sock, _HDR.size, 4)
    while len(head) < _HDR.size:
        if not head:
            for fd in fds:
                os.close(fd)
            raise EOFError
        more = sock.recv(_HDR.size - len(head))
        if not more:
            raise EOFError
        head += more
    (n,) = _HDR.unpack(head)
    if n > 1 << 20:
        raise EOFError
    body = b""
    while len(body) < n:
        more = sock.recv(n - len(body))
        if not more:
            raise EOFError
        body += more
    return pickle.loads(body), fds


def _new_link() -> Tuple[socket.socket, socket.socket, Optional[int]]:
    """A doorbell socket pair and a ring segment (None where shared memory is missing:
    the sockets then carry the data, after a logged notice)."""
    from .dist.shm_transport import RING_SIZE, fallback_notice
    a, b = socket.socketpair()
    try:
        fd = _core.shm_segment(RING_SIZE)
    except OSError as e:
        fallback_notice(e)
        fd = None
    return a, b, fd


def _attach(peer: str, side: int, sock: socket.socket, ring_fd: Optional[int]) -> None:
    from .dist.node import attach_local_link
    from .dist.shm_transport import RING_SIZE
    ring = None
    if ring_fd is not None:
        try:
            ring = _core.ShmRingPair(ring_fd, RING_SIZE, side)
        finally:
            os.close(ring_fd)
    attach_local_link(peer, side == 0, sock, ring)


# -- the head ------------------------------------------------------------------------------

class _Worker:
    __slots__ = ("index", "name", "proc", "ctrl", "ready", "restarts")

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.proc: Any = None
        self.ctrl: Optional[socket.socket] = None
        self.ready: Optional["asyncio.Future[None]"] = None
        self.restarts: List[float] = []


class _Pool:
    def __init__(self, head: str, size: int, secret: str, settings: Dict[str, Any]) -> None:
        alive, host = head.split("@")
        self.head = head
        self.secret = secret
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.workers = [_Worker(i, "%s_w%d@%s" % (alive, i, host)) for i in range(1, size)]
        self.names = [head] + [w.name for w in self.workers]
        self.stopping = False
        self.up: Dict[str, "asyncio.Future[None]"] = {}
        self.restarting: Dict[str, "asyncio.Task[None]"] = {}

    async def start(self) -> None:
        from .dist.node import kernel
        k = kernel()
        for w in self.workers:
            k.cookies[w.name] = self.secret
        k.up_callbacks.append(self._nodeup)
        for w in self.workers:
            self._spawn(w)
        await asyncio.gather(*(w.ready for w in self.workers))     # type: ignore[misc]
        for i, a in enumerate(self.names):
            for b in self.names[i + 1:]:
                self._link(a, b)
        await self._all_up()

    async def _all_up(self) -> None:
        # every link's both ends report their nodeup to the head (workers via their ctrl)
        pending = [f for f in self.up.values() if not f.done()]
        if pending:
            await asyncio.wait_for(asyncio.gather(*pending), 30)

    def _nodeup(self, name: str, _conn: Any) -> None:
        self._mark_up((self.head, name))

    def _mark_up(self, pair: Tuple[str, str]) -> None:
        f = self.up.get("%s|%s" % pair)
        if f is not None and not f.done():
            f.set_result(None)

    def _spawn(self, w: _Worker) -> None:
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = socket.socketpair()
        w.ctrl = mine
        w.ready = self.loop.create_future()
        w.proc = ctx.Process(target=_worker_entry, name="pyotp pool " + w.name,
                             args=(theirs, w.name, self.head, self.secret, self.names,
                                   os.getpid(), self.settings))
        w.proc.start()
        theirs.close()
        self.loop.add_reader(mine.fileno(), self._on_ctrl, w)
        self.loop.add_reader(w.proc.sentinel, self._on_exit, w)

    def _on_ctrl(self, w: _Worker) -> None:
        assert w.ctrl is not None
        try:
            msg, fds = _recv(w.ctrl)
        except (EOFError, OSError):
            self.loop.remove_reader(w.ctrl.fileno())
            return
        for fd in fds:
            os.close(fd)
        if msg[0] == "ready":
            if w.ready is not None and not w.ready.done():
                w.ready.set_result(None)
        elif msg[0] == "up":
            self._mark_up((w.name, msg[1]))

    def _link(self, a: str, b: str) -> None:
        """Connect pool nodes a and b (a initiates): each end gets its socket and the
        segment by descriptor."""
        sa, sb, fd = _new_link()
        for x, y in ((a, b), (b, a)):
            self.up.setdefault("%s|%s" % (x, y), self.loop.create_future())
        try:
            for name, sock, side, peer in ((a, sa, 0, b), (b, sb, 1, a)):
                if name == self.head:
                    dup = None if fd is None else os.dup(fd)
                    _attach(peer, side, sock, dup)
                else:
                    w = self.workers[self.names.index(name) - 1]
                    fds = (sock.fileno(),) + (() if fd is None else (fd,))
                    if w.ctrl is not None:
                        _send(w.ctrl, ("link", peer, side, fd is not None), fds)
                    sock.close()
        finally:
            if fd is not None:
                os.close(fd)

    def _on_exit(self, w: _Worker) -> None:
        self.loop.remove_reader(w.proc.sentinel)
        w.proc.join(0)
        code = w.proc.exitcode
        if w.ctrl is not None:
            try:
                self.loop.remove_reader(w.ctrl.fileno())
            except (ValueError, OSError):
                pass
            w.ctrl.close()
            w.ctrl = None
        if self.stopping:
            return
        now = time.monotonic()
        w.restarts = [t for t in w.restarts if now - t < RESTART_PERIOD] + [now]
        if len(w.restarts) > MAX_RESTARTS:
            _log.error("pyotp pool: worker %s exited (%s) %d times in %.0f s: not restarted",
                       w.name, code, len(w.restarts), RESTART_PERIOD)
            return
        _log.warning("pyotp pool: worker %s exited (%s): restarting it", w.name, code)
        t = self.restarting[w.name] = self.loop.create_task(self._restart(w))
        t.add_done_callback(lambda _t, n=w.name: self.restarting.pop(n, None))

    async def _restart(self, w: _Worker) -> None:
        from .dist.node import kernel
        k = kernel()
        # its old connections must be gone here before the new one takes the name
        c = k.conns.get(w.name)
        if c is not None:
            c.abort("pool worker %s exited" % w.name)
        for key in [key for key in self.up if w.name in key.split("|")]:
            del self.up[key]
        self._spawn(w)
        try:
            await asyncio.wait_for(w.ready, 30)     # type: ignore[arg-type]
            for other in self.names:
                if other != w.name and (other == self.head or self._alive(other)):
                    a, b = sorted((other, w.name), key=self.names.index)
                    self._link(a, b)
            await self._all_up()
        except Exception as e:
            _log.error("pyotp pool: restarting %s failed: %r", w.name, e)

    def _alive(self, name: str) -> bool:
        w = self.workers[self.names.index(name) - 1]
        return w.ctrl is not None and w.proc is not None and w.proc.is_alive()

    def stop(self) -> None:
        """End every worker (control EOF; killed after EXIT_GRACE)."""
        self.stopping = True
        for t in list(self.restarting.values()):
            t.cancel()
        for w in self.workers:
            if w.proc is not None:
                try:
                    self.loop.remove_reader(w.proc.sentinel)
                except (ValueError, OSError):
                    pass
            if w.ctrl is not None:
                try:
                    self.loop.remove_reader(w.ctrl.fileno())
                except (ValueError, OSError):
                    pass
                w.ctrl.close()
                w.ctrl = None
        deadline = time.monotonic() + EXIT_GRACE
        for w in self.workers:
            if w.proc is not None:
                w.proc.join(max(0.0, deadline - time.monotonic()))
                if w.proc.is_alive():
                    w.proc.kill()
                    w.proc.join(1.0)


def run_pool(main: Callable[..., Awaitable[Any]], *args: Any, nodes: int, node: Optional[str],
             cookie: Optional[str], run_kw: Dict[str, Any], dist: Dict[str, Any]) -> Any:
    """pyotp.run(main, *args, nodes=N) with N > 1 (see the module documentation)."""
    from .dist import run_node
    secret = secrets.token_hex(16)
    head = node if node is not None else "pyotp%d@127.0.0.1" % os.getpid()
    payloads = dist.pop("python_payloads", None)
    settings = {"python_payloads": _pool_payloads(payloads),
                "busy_wait": dist.get("busy_wait", "auto"),
                "max_mailbox": run_kw.get("max_mailbox")}
    if node is None:
        dist.setdefault("epmd", "none")
        if dist["epmd"] == "none" and not dist.get("port"):
            dist["port"] = _free_port()
    dist["python_payloads"] = settings["python_payloads"]

    async def head_main(*a: Any) -> Any:
        global _pool
        p = _Pool(head, nodes, secret, settings)
        _pool = p
        _members[:] = p.names
        try:
            await p.start()
            return await main(*a)
        finally:
            p.stop()
            _pool = None
            _members.clear()

    return run_node(head_main, *args, node=head, cookie=cookie if cookie is not None else secret,
                    **run_kw, **dist)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def _pool_payloads(user: Any) -> Any:
    """Pool nodes exchange pickles of the main script's values (and what the user allows)."""
    mains = ["__main__", "__mp_main__"]
    if user is True:
        return mains
    if user in (None, False):
        return mains
    return list(user) + mains


# -- a worker ------------------------------------------------------------------------------

def _die_with_parent(head_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)        # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != head_pid:        # the head died before the line above
        os._exit(1)


def _worker_entry(ctrl: socket.socket, name: str, head: str, secret: str, names: List[str],
                  head_pid: int, settings: Dict[str, Any]) -> None:
    """A worker process's life: a distributed node under ``name`` that takes its links
    from the head and ends with the head."""
    _die_with_parent(head_pid)
    if os.environ.get("PYOTP_POOL_LOG"):
        logging.basicConfig(level=logging.DEBUG, format=name + " %(message)s")
    from . import runtime
    runtime.run(_worker_main, ctrl, name, head, secret, names, settings,
                max_mailbox=settings.get("max_mailbox"), shutdown_timeout=EXIT_GRACE / 2)
    os._exit(0)


async def _worker_main(ctrl: socket.socket, name: str, head: str, secret: str, names: List[str],
                       settings: Dict[str, Any]) -> None:
    from .dist.node import Node, kernel
    loop = asyncio.get_running_loop()
    await Node.start(name, cookie=secret, epmd="none", port=_free_port(),
                     python_payloads=settings["python_payloads"],
                     busy_wait=settings["busy_wait"])
    _members[:] = names
    k = kernel()
    done: "asyncio.Future[None]" = loop.create_future()

    def nodeup(peer: str, _conn: Any) -> None:
        try:
            _send(ctrl, ("up", peer))
        except OSError:
            pass

    k.up_callbacks.append(nodeup)

    def on_ctrl() -> None:
        # take every message waiting, so that all the links the head sent at once are
        # attached before any of their handshakes can complete
        import select
        while True:
            try:
                ctrl.setblocking(True)
                msg, fds = _recv(ctrl)
            except (EOFError, OSError):
                loop.remove_reader(ctrl.fileno())
                if not done.done():
                    done.set_result(None)
                return
            if msg[0] == "link":
                _, peer, side, has_ring = msg
                sock = socket.socket(fileno=fds[0])
                ring_fd = fds[1] if has_ring else None
                _attach(peer, side, sock, ring_fd)
            if not select.select([ctrl], [], [], 0)[0]:
                return

    loop.add_reader(ctrl.fileno(), on_ctrl)
    _send(ctrl, ("ready",))
    await done
    # the head is gone or done with us: leave promptly whatever is still running
    threading.Timer(EXIT_GRACE, os._exit, (0,)).start()
