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

A script (the pool's nodes are OS processes that import it, so it cannot run at a
prompt)::

    import pyotp
    from pyotp.dist import Node

    async def main():
        return sorted(Node.list())

    if __name__ == "__main__":
        print(pyotp.run(main, nodes=2))     # ['pyotp4242_w1@127.0.0.1']
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
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, cast

from . import _core

__all__ = ["usable_cores", "check_nodes", "pool_nodes", "worker_node", "start_link_on", "wait_for_node",
           "async_stream", "map", "MAX_RESTARTS", "RESTART_PERIOD"]

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


def stopping() -> bool:
    """Whether this node's pool is shutting down (no new work should go to its nodes)."""
    return _stopping[0]


_stopping = [False]


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


# -- placement: start a process on a chosen pool node --------------------------------------

def _named(fn: Any) -> Tuple[str, str]:
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, type):          # Counter.start_link: a classmethod bound to Counter
        m, q = owner.__module__, owner.__qualname__ + "." + fn.__name__
    else:
        m = str(getattr(fn, "__module__", None) or "")
        q = str(getattr(fn, "__qualname__", None) or "")
    if not m or not q or "<" in q:
        raise TypeError("a start function for another node must be a module-level function or "
                        "a method of a module-level class, got %r" % (fn,))
    return m, q


def _resolve(m: str, q: str) -> Any:
    import importlib
    obj: Any = importlib.import_module(m)
    for part in q.split("."):
        obj = getattr(obj, part)
    return obj


async def remote_starter(caller: Any, tag: Any, m: str, q: str, args: Tuple[Any, ...],
                   kwargs: Dict[str, Any]) -> None:
    """Runs on the chosen node: start the process linked to this starter, hand its pid to
    the caller (which links to it), wait for the caller's word, then step out of the link."""
    try:
        r = await _resolve(m, q)(*args, **kwargs)
    except (Exception, _core.Exit) as e:
        _core.send(caller, (tag, "error", repr(e)))
        return
    pid = r[1] if isinstance(r, tuple) and len(r) == 2 and r[0] == "ok" else r
    _core.send(caller, (tag, "ok", r))
    if isinstance(pid, _core.Pid):
        await _core.receive(lambda msg: msg == (tag, "linked"), timeout=30)
        _core.unlink(pid)


async def start_link_on(node: str, start: Callable[..., Awaitable[Any]], *args: Any,
                        timeout: float = 30.0, **kwargs: Any) -> Any:
    """Run ``start(*args, **kwargs)`` (e.g. ``Counter.start_link``) on pool node ``node``
    and link the started process to the caller, as if the caller had started it here:
    what ``start`` returns (its pid). For a supervisor child placed on another node.

    In a pool of two or more nodes (on this node itself, ``start`` just runs here)::

        pid = await pool.start_link_on(pool.pool_nodes()[1], Counter.start_link, 0)
    """
    from .dist.node import Node
    if node == str(_core.local_node()):
        return await start(*args, **kwargs)
    if node in _members:
        await wait_for_node(node, timeout)
    m, q = _named(start)
    tag = _core.make_ref()
    me = _core.self()
    starter = await Node.spawn(node, remote_starter, me, tag, m, q, tuple(args), kwargs)
    msg = await _core.receive(lambda x: isinstance(x, tuple) and len(x) == 3 and x[0] == tag,
                              timeout=timeout)
    if msg[1] == "error":
        raise _core.StartError(("start_failed_on", node, msg[2]))
    r = msg[2]
    pid = r[1] if isinstance(r, tuple) and len(r) == 2 and r[0] == "ok" else r
    if isinstance(pid, _core.Pid):
        _core.link(pid)
        _core.send(starter, (tag, "linked"))
    return r


async def wait_for_node(node: str, timeout: float = 30.0) -> bool:
    """Wait until pool node ``node`` is connected (a restarting worker comes back under
    its name); True once it is, False after ``timeout`` seconds.

    In a pool of two or more nodes::

        await pool.wait_for_node(pool.pool_nodes()[1])     # -> True

    >>> await wait_for_node(str(pyotp.local_node()))      # this node: at once
    True
    """
    from .dist.node import kernel
    if node == str(_core.local_node()):
        return True
    k = kernel()
    if node in k.conns:
        return True
    fut = asyncio.get_running_loop().create_future()

    def up(name: str, _conn: Any) -> None:
        if name == node and not fut.done():
            fut.set_result(True)

    service = "pyotp_pool_wait_%d" % id(fut)
    k.add_service(service, on_nodeup=up)
    try:
        return bool(await asyncio.wait_for(fut, timeout))
    except asyncio.TimeoutError:
        return False
    finally:
        k.remove_service(service)


# -- parallel map over the pool (Task.async_stream) ------------------------------------------

_MAPPER = "pyotp_pool_mapper"


async def _mapper() -> None:
    """Each pool node's mapper: applies functions to items, one at a time (a node is one
    thread), and answers each with (tag, index, ("ok", value) | ("exit", reason))."""
    import inspect
    cache: Dict[Tuple[str, str], Any] = {}
    while True:
        msg = await _core.receive()
        if not (isinstance(msg, tuple) and len(msg) == 5 and msg[0] == "map"):
            continue
        _, reply_to, tag, batch, mq = msg
        fn = cache.get(mq)
        if fn is None:
            try:
                fn = cache[mq] = _resolve(*mq)
            except Exception as e:
                for i, _item in batch:
                    _core.send(reply_to, (tag, i, ("exit", ("undef", repr(e)))))
                continue
        out = []
        for i, item in batch:
            try:
                v = fn(item)
                if inspect.isawaitable(v):
                    v = await v
                out.append((i, ("ok", v)))
            except Exception as e:
                out.append((i, ("exit", repr(e))))
        _core.send(reply_to, (tag, out))


def _start_mapper() -> None:
    if _core.whereis(_MAPPER) is None:
        _core.register(_MAPPER, _core.spawn(_mapper))


async def async_stream(fn: Callable[[Any], Any], items: Any, *, max_concurrency: Optional[int] = None,
                       timeout: Optional[float] = 5.0, batch: int = 1) -> Any:
    """Elixir's ``Task.async_stream`` over the pool: apply ``fn`` (a module-level
    function, sync or async) to each item on the pool's nodes, yielding
    ``("ok", value)`` or ``("exit", reason)`` in the items' order. At most
    ``max_concurrency`` items are in flight (default: 2 per pool node, so every node has
    its next item queued), ``batch`` items go per message; an item not answered within
    ``timeout`` seconds (per batch) raises ``pyotp.Exit(("timeout", ...))`` as Elixir's
    default ``on_timeout: :exit`` does. Items in flight on a pool node that dies are not
    retried (``fn`` may be what killed it): each gives ``("exit", ("noconnection",
    node))``, naming the lost node (``pool.map`` raises ``pyotp.Exit`` with that reason),
    and that node gets no more items from this stream.

    ``fn`` must be importable by name on the other nodes (``math.factorial``, or a
    function of your module); outside a pool every item is computed on this node.

    >>> import math
    >>> from pyotp import pool
    >>> async for r in pool.async_stream(math.factorial, range(4)):
    ...     print(r)
    ('ok', 1)
    ('ok', 1)
    ('ok', 2)
    ('ok', 6)
    """
    nodes = pool_nodes() or [str(_core.local_node())]
    if max_concurrency is None:
        max_concurrency = 2 * len(nodes) * batch
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ValueError("max_concurrency must be an int >= 1, got %r" % (max_concurrency,))
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError("batch must be an int >= 1, got %r" % (batch,))
    mq = _named(fn)
    if len(nodes) == 1 or not _members:
        _start_mapper()
    tag = _core.make_ref()
    me = _core.self()
    here = str(_core.local_node())
    nodes = list(nodes)
    watch: Dict[Any, str] = {}          # monitor ref -> the pool node whose mapper it watches
    where: Dict[str, Dict[int, None]] = {}  # pool node -> indices in flight there
    it = iter(enumerate(items))
    results: Dict[int, Any] = {}
    inflight = 0
    nxt = 0
    turn = 0
    exhausted = False
    while True:
        while not exhausted and inflight < max_concurrency:
            chunk = []
            for pair in it:
                chunk.append(pair)
                if len(chunk) >= min(batch, max_concurrency - inflight):
                    break
            if not chunk:
                exhausted = True
                break
            node = nodes[turn % len(nodes)]
            turn += 1
            remote = node != here and bool(_members)
            if remote and node not in where:
                watch[_core.monitor((_MAPPER, node))] = node
            where.setdefault(node, {}).update((i, None) for i, _ in chunk)
            _core.send((_MAPPER, node) if remote else _MAPPER, ("map", me, tag, chunk, mq))
            inflight += len(chunk)
        while nxt in results:
            yield results.pop(nxt)
            nxt += 1
        if exhausted and inflight == 0:
            for ref in watch:
                _core.demonitor(ref, True)
            return
        try:
            msg = await _core.receive(
                lambda m: isinstance(m, tuple) and ((len(m) == 2 and m[0] == tag) or
                                                    (len(m) == 5 and m[0] == "DOWN" and m[1] in watch)),
                timeout=timeout)
        except TimeoutError:
            raise _core.Exit(("timeout", ("pool.async_stream", fn.__qualname__))) from None
        if len(msg) == 5:
            # the node died ("noconnection") or, rarely, its mapper did: name both
            lost = watch.pop(msg[1])
            for i in where.pop(lost, {}):
                results[i] = ("exit", (msg[4], lost))
                inflight -= 1
            where[lost] = {}                # known: not watched again
            if lost in nodes and len(nodes) > 1:
                nodes.remove(lost)
            continue
        for i, r in msg[1]:
            for pending in where.values():
                if i in pending:            # else: already failed with its lost node
                    del pending[i]
                    results[i] = r
                    inflight -= 1
                    break


async def map(fn: Callable[[Any], Any], items: Any, **options: Any) -> List[Any]:
    """``[fn(x) for x in items]`` computed over the pool (``async_stream``'s options); a
    failed item raises ``pyotp.Exit(reason)``.

    >>> import math
    >>> from pyotp import pool
    >>> await pool.map(math.factorial, range(5))
    [1, 1, 2, 6, 24]
    """
    out = []
    async for r in async_stream(fn, items, **options):
        if r[0] != "ok":
            raise _core.Exit(r[1])
        out.append(r[1])
    return out


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
    the sockets then carry the data, after a logged notice). PYOTP_POOL_TRANSPORT=socket (or tcp)
    in the environment forces Unix (or loopback TCP) sockets, to compare or to rule the
    rings out."""
    from .dist.shm_transport import RING_SIZE, fallback_notice
    forced = os.environ.get("PYOTP_POOL_TRANSPORT")
    if forced == "tcp":                 # benchmarks: the same links over loopback TCP
        with socket.create_server(("127.0.0.1", 0)) as srv:
            a = socket.create_connection(srv.getsockname())
            b, _ = srv.accept()
        return a, b, None
    a, b = socket.socketpair()
    try:
        if forced == "socket":
            raise OSError("PYOTP_POOL_TRANSPORT=socket")
        fd = _core.shm_segment(RING_SIZE)
    except OSError as e:
        fallback_notice(e)
        fd = None
    return a, b, fd


def _attach(peer: str, side: int, sock: socket.socket, ring_fd: Optional[int]) -> None:
    from .dist.kernel import attach_local_link
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
            k.set_peer(w.name, cookie=self.secret)
        k.remove_service("pyotp_pool_head")      # a pool of an earlier run in this process
        k.add_service("pyotp_pool_head", on_nodeup=self._nodeup)
        # every node also listens on a fixed loopback port, known to all: a link that
        # closed while both nodes live is dialled again over TCP (same secret)
        self.settings["ports"] = ports = {self.head: k.port}
        for w in self.workers:
            ports[w.name] = _free_port()
            k.set_peer(w.name, port=ports[w.name])
        for w in self.workers:
            self._spawn(w)
        await asyncio.gather(*(cast("asyncio.Future[None]", w.ready) for w in self.workers))
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
        proc = ctx.Process(target=_worker_entry, name="pyotp pool " + w.name,
                           args=(theirs, w.name, self.head, self.secret, self.names,
                                 os.getpid(), self.settings))
        try:
            proc.start()
        except BaseException:
            mine.close()
            w.ctrl = None
            raise
        finally:
            theirs.close()
        w.proc = proc           # only a started process: stop() joins it
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

    def _close_ctrl(self, w: _Worker) -> None:
        """Stop watching and close the worker's control socket (if it still has one)."""
        if w.ctrl is None:
            return
        try:
            self.loop.remove_reader(w.ctrl.fileno())
        except (ValueError, OSError):
            pass
        w.ctrl.close()
        w.ctrl = None

    def _on_exit(self, w: _Worker) -> None:
        self.loop.remove_reader(w.proc.sentinel)
        w.proc.join(0)
        code = w.proc.exitcode
        self._close_ctrl(w)
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
        name = w.name
        t.add_done_callback(lambda _t: self.restarting.pop(name, None))

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
            self._close_ctrl(w)
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
        _stopping[0] = False
        _members[:] = p.names
        try:
            await p.start()
            _start_mapper()
            return await main(*a)
        finally:
            # main's links to processes on workers must not kill it while the pool ends
            _core.process_flag("trap_exit", True)
            _stopping[0] = True
            p.stop()
            _pool = None
            _members.clear()          # _stopping stays set: supervisors may still react

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
    try:
        os.setpgrp()        # a terminal's Ctrl-C reaches the head only: it ends the pool
    except OSError:
        pass
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
    ports = settings.get("ports", {})
    opts = {"python_payloads": settings["python_payloads"], "busy_wait": settings["busy_wait"]}
    try:
        await Node.start(name, cookie=secret, epmd="none", port=ports.get(name) or _free_port(),
                         **opts)
    except OSError:
        # the port was taken meanwhile: the pool links do not need it (only a redial does)
        await Node.start(name, cookie=secret, epmd="none", port=_free_port(), **opts)
    _members[:] = names
    _start_mapper()
    k = kernel()
    for other, port in ports.items():
        if other != name:
            k.set_peer(other, port=port)
    done: "asyncio.Future[None]" = loop.create_future()

    def nodeup(peer: str, _conn: Any) -> None:
        try:
            _send(ctrl, ("up", peer))
        except OSError:
            pass

    k.add_service("pyotp_pool_worker", on_nodeup=nodeup)

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
    try:
        _send(ctrl, ("ready",))
    except OSError:
        return                  # the head is already gone
    await done
    # the head is gone or done with us: leave promptly whatever is still running
    threading.Timer(EXIT_GRACE, os._exit, (0,)).start()
