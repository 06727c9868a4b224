"""A live web dashboard for a node: node load, supervision trees with restart counts, a
top table of processes, charts, and a process page with send/kill.

Served by the node itself (``pyotp.run(main, dashboard=8080)``) or by a separate client
attached through rpc (``python -m pyotp dashboard --node NAME@HOST --cookie ...``) to a
pyotp node (``RemoteSource``: ``pyotp.observer`` there) or a BEAM node (``BeamSource``
in ``pyotp.observer_beam``: erlang/kernel calls only); ``source_for`` picks one. A small
HTTP/1.1 server on asyncio streams, no dependencies; the page is plain JS + SVG shipped
as package data (``pyotp/dashboard_static``).

Endpoints (JSON unless said): ``GET /`` (the page), ``GET /static/<file>``,
``GET /api/snapshot?n=20&sort=reductions``, ``GET /api/trees``, ``GET /api/process/<pid>``,
``GET /events`` (server-sent events: one snapshot a second), ``GET /metrics``
(Prometheus text format, local node only), ``POST /api/process/<pid>/kill``
and ``POST /api/process/<pid>/send`` (body ``{"message": "text"}``). POSTs need the header
``X-Pyotp-Confirm: yes`` (a plain cross-site form cannot set it). A pid is named by its
text (``#PID<0.12.0>``) as the dashboard has shown it. Bad requests get 400/404/405/413.
The API and the event stream take ``?node=NAME`` to show another node this node is
connected to (pyotp or BEAM; 404 if not connected).

Listens on 127.0.0.1 unless ``host`` says otherwise; any other host needs a ``token``,
then sent as ``?token=`` or ``Authorization: Bearer``.
"""
import asyncio
import hmac
import ipaddress
import json
import os
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from . import _core, observer
from .observer_beam import BeamError

__all__ = ["Dashboard", "LocalSource", "RemoteSource", "start", "DashboardError", "source_for"]

STATIC = os.path.join(os.path.dirname(__file__), "dashboard_static")
# index.htm, not .html: the wheel excludes *.html (Cython's annotation pages)
_TYPES = {".htm": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}
MAX_HEADER = 16384
MAX_BODY = 65536
MAX_PIDS = 100000


class DashboardError(Exception):
    """A dashboard that cannot start as asked (a public address without a token)."""


class _HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


class LocalSource:
    """The node the dashboard runs on."""

    async def snapshot(self, n: int, sort: str) -> Any:
        return observer.snapshot(n, sort)

    async def trees(self) -> Any:
        return await observer.trees()

    async def process(self, pid: Any) -> Any:
        return await observer.process_page(pid)

    async def kill(self, pid: Any) -> None:
        _core.exit(pid, "kill")

    async def send(self, pid: Any, msg: str) -> None:
        _core.send(pid, msg)


class RemoteSource(LocalSource):
    """Another node, read through rpc (``pyotp.observer`` on that node)."""

    def __init__(self, node: str, timeout: float = 5.0) -> None:
        self.node = node
        self.timeout = timeout

    async def _rpc(self, m: str, f: str, args: List[Any]) -> Any:
        from .dist import rpc
        r = await rpc.call(self.node, m, f, args, self.timeout)
        if type(r) is tuple and len(r) == 2 and r[0] == "badrpc":
            raise _HttpError(502, "rpc to %s failed: %r" % (self.node, r[1]))
        return r

    async def snapshot(self, n: int, sort: str) -> Any:
        return await self._rpc("pyotp.observer", "snapshot", [n, sort])

    async def trees(self) -> Any:
        return await self._rpc("pyotp.observer", "trees", [])

    async def process(self, pid: Any) -> Any:
        return await self._rpc("pyotp.observer", "process_page", [pid])

    async def kill(self, pid: Any) -> None:
        await self._rpc("pyotp", "exit", [pid, _core.Atom("kill")])

    async def send(self, pid: Any, msg: str) -> None:
        await self._rpc("pyotp", "send", [pid, msg])


async def source_for(node: str, timeout: float = 5.0) -> Any:
    """The source for the running node ``node`` (this node must be distributed):
    ``RemoteSource`` for a pyotp node, ``BeamSource`` for an Erlang/Elixir one. Raises
    DashboardError when the node cannot be reached."""
    from .dist import Node
    from .dist import node as dist_node
    from .observer_beam import BeamSource
    if await Node.ping(node, timeout) != "pong":
        raise DashboardError("cannot connect to %s (is it running? same cookie?)" % (node,))
    conn = dist_node.kernel().conns.get(node)
    if conn is not None and not conn.pyotp:
        return BeamSource(node, timeout)
    return RemoteSource(node, timeout)


class Dashboard:
    """The HTTP server. ``await Dashboard(port=0).start()``; ``.port`` is the bound port;
    ``close()`` stops it.

    >>> async def main():
    ...     d = await pyotp.dashboard.start(0)
    ...     d.close()
    ...     return d.host
    >>> pyotp.run(main)
    '127.0.0.1'
    """

    def __init__(self, port: int = 8080, host: str = "127.0.0.1", token: Optional[str] = None,
                 source: Optional[LocalSource] = None, interval: float = 1.0) -> None:
        if type(port) is not int or not 0 <= port <= 65535:
            raise DashboardError("dashboard port must be an int in 0..65535, got %r" % (port,))
        if not _is_loopback(host) and not token:
            raise DashboardError("dashboard on %r (not loopback) needs token=..." % (host,))
        self.host, self.port, self.token = host, port, token
        self.source = source or LocalSource()
        self.interval = interval
        self.pids: Dict[str, Any] = {}
        self.sources: Dict[str, Any] = {}      # other nodes viewed (?node=), by name
        self._server: Optional[asyncio.AbstractServer] = None
        self.metrics: Any = None

    async def start(self) -> "Dashboard":
        self._server = await asyncio.start_server(self._client, self.host, self.port,
                                                  limit=MAX_HEADER)
        self.port = self._server.sockets[0].getsockname()[1]
        if type(self.source) is LocalSource:
            from .telemetry import Metrics
            self.metrics = Metrics().attach()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.metrics is not None:
            self.metrics.detach()
            self.metrics = None

    @property
    def url(self) -> str:
        return "http://%s:%d/" % (self.host, self.port)

    def _remember(self, x: Any) -> Any:
        # pids seen in answers, so that a page can name them back (bounded)
        if type(x) is _core.Pid:
            if len(self.pids) >= MAX_PIDS:
                self.pids.clear()
            self.pids[str(x)] = x
        elif isinstance(x, dict):
            for v in x.values():
                self._remember(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                self._remember(v)
        return x

    def _pid(self, text: str) -> Any:
        pid = self.pids.get(text)
        if pid is None:
            raise _HttpError(404, "unknown pid %r (not shown by this dashboard)" % (text,))
        return pid

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except _HttpError as e:
            self._reply(writer, e.status, json.dumps({"error": str(e)}).encode(), "application/json")
        except BeamError as e:          # the observed BEAM node did not answer
            self._reply(writer, 502, json.dumps({"error": str(e)}).encode(), "application/json")
        except (asyncio.LimitOverrunError, ValueError):
            self._reply(writer, 431, b'{"error": "headers too large"}', "application/json")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            try:
                await writer.drain()
            except (ConnectionError, RuntimeError):
                pass
            writer.close()

    def _reply(self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str) -> None:
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  405: "Method Not Allowed", 413: "Payload Too Large",
                  431: "Request Header Fields Too Large", 502: "Bad Gateway"}.get(status, "Error")
        writer.write(("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                      "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
                      % (status, reason, ctype, len(body))).encode() + body)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise _HttpError(400, "malformed request line") from None
        if not version.startswith("HTTP/1."):
            raise _HttpError(400, "unsupported protocol %r" % (version,))
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, sep, v = line.partition(":")
                if not sep:
                    raise _HttpError(400, "malformed header line")
                headers[k.strip().lower()] = v.strip()
        url = urlsplit(target)
        query = parse_qs(url.query)
        if self.token is not None:
            given = (query.get("token") or [""])[0]
            auth = headers.get("authorization", "")
            if auth.startswith("Bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                raise _HttpError(401, "missing or wrong token")
        body = b""
        if method == "POST":
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _HttpError(400, "bad Content-Length") from None
            if length < 0 or length > MAX_BODY:
                raise _HttpError(413, "body over %d bytes" % MAX_BODY)
            body = await reader.readexactly(length)
        elif method != "GET":
            raise _HttpError(405, "method %r not allowed" % (method,))
        path = url.path
        if path == "/events" and method == "GET":
            return await self._events(writer, query)
        status, data, ctype = await self._route(method, path, query, headers, body)
        self._reply(writer, status, data, ctype)

    def _source(self, query: Dict[str, List[str]]) -> Any:
        """The source a request reads: the dashboard's own, or with ``?node=NAME`` that of
        another node this node is connected to (pyotp or BEAM), as LiveDashboard's node
        selector. An unconnected node is a 404: a request never makes the node connect."""
        name = (query.get("node") or [""])[0]
        home = getattr(self.source, "node", None) or str(_core.local_node())
        if not name or name == home:
            return self.source
        from .dist import node as dist_node
        from .observer_beam import BeamSource
        k = getattr(dist_node, "_kernel", None)
        conn = k.conns.get(name) if k is not None else None
        if conn is None:
            raise _HttpError(404, "not connected to node %r" % (name,))
        want = RemoteSource if conn.pyotp else BeamSource
        src = self.sources.get(name)
        if type(src) is not want:
            if len(self.sources) >= 1000:
                self.sources.clear()
            src = self.sources[name] = want(name)
        return src

    async def _route(self, method: str, path: str, query: Dict[str, List[str]],
                     headers: Dict[str, str], body: bytes) -> Tuple[int, bytes, str]:
        parts = [unquote(p) for p in path.split("/") if p]
        if method == "GET" and path in ("/", "/index.html"):
            return self._static("index.htm")
        if method == "GET" and len(parts) == 2 and parts[0] == "static":
            return self._static(parts[1])
        if method == "GET" and path == "/api/snapshot":
            return self._json(await self._snapshot(query))
        if method == "GET" and path == "/metrics":
            if self.metrics is None:
                raise _HttpError(404, "no metrics here (a remote dashboard reads no events)")
            return 200, self.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8"
        if method == "GET" and path == "/api/trees":
            return self._json(self._remember(await self._source(query).trees()))
        if len(parts) >= 3 and parts[:2] == ["api", "process"]:
            pid = self._pid(parts[2])
            source = self._source(query)
            if method == "GET" and len(parts) == 3:
                info = await source.process(pid)
                if info is None:
                    raise _HttpError(404, "process %s is dead" % parts[2])
                return self._json(self._remember(dict(info, pid=pid)))
            if method == "POST" and len(parts) == 4 and parts[3] in ("kill", "send"):
                if headers.get("x-pyotp-confirm") != "yes":
                    raise _HttpError(400, "missing header X-Pyotp-Confirm: yes")
                if parts[3] == "kill":
                    await source.kill(pid)
                    return self._json({"ok": True})
                try:
                    msg = json.loads(body.decode("utf-8"))["message"]
                except (ValueError, KeyError, TypeError):
                    raise _HttpError(400, 'body must be JSON {"message": "text"}') from None
                if not isinstance(msg, str):
                    raise _HttpError(400, "message must be a string")
                await source.send(pid, msg)
                return self._json({"ok": True})
            raise _HttpError(405 if len(parts) in (3, 4) else 404, "no such action")
        if method == "POST":
            raise _HttpError(405, "POST not allowed on %s" % path)
        raise _HttpError(404, "no such page %r" % path)

    async def _snapshot(self, query: Dict[str, List[str]]) -> Any:
        sort = (query.get("sort") or ["reductions"])[0]
        if sort not in observer.SORT_KEYS:
            raise _HttpError(400, "sort must be one of %s" % ", ".join(observer.SORT_KEYS))
        try:
            n = int((query.get("n") or ["20"])[0])
        except ValueError:
            raise _HttpError(400, "n must be an integer") from None
        if not 0 <= n <= 1000:
            raise _HttpError(400, "n must be in 0..1000")
        return self._remember(await self._source(query).snapshot(n, sort))

    def _json(self, x: Any) -> Tuple[int, bytes, str]:
        return 200, json.dumps(_jsonable(x)).encode(), "application/json"

    def _static(self, name: str) -> Tuple[int, bytes, str]:
        ext = os.path.splitext(name)[1]
        if name not in os.listdir(STATIC) or ext not in _TYPES:
            raise _HttpError(404, "no static file %r" % name)
        with open(os.path.join(STATIC, name), "rb") as f:
            return 200, f.read(), _TYPES[ext]

    async def _events(self, writer: asyncio.StreamWriter, query: Dict[str, List[str]]) -> None:
        snap = await self._snapshot(query)      # a bad query fails before the stream starts
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-store\r\nConnection: close\r\n\r\n")
        while True:
            trees = self._remember(await self._source(query).trees())
            data = json.dumps(_jsonable({"snapshot": snap, "trees": trees}))
            writer.write(b"data: " + data.encode() + b"\n\n")
            await writer.drain()
            await asyncio.sleep(self.interval)
            snap = await self._snapshot(query)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def start(port: int = 8080, host: str = "127.0.0.1", token: Optional[str] = None,
                source: Optional[LocalSource] = None, interval: float = 1.0) -> Dashboard:
    """Start a dashboard on the running node's loop; returns it (``.url``, ``.close()``)."""
    return await Dashboard(port, host, token, source, interval).start()


def with_dashboard(main: Callable[..., Awaitable[Any]], port: int, host: str = "127.0.0.1",
                   token: Optional[str] = None) -> Callable[..., Awaitable[Any]]:
    """``main`` wrapped so that a dashboard serves while it runs (``pyotp.run(dashboard=)``)."""
    async def main_with_dashboard(*args: Any) -> Any:
        d = await start(port, host, token)
        try:
            return await main(*args)
        finally:
            d.close()
    return main_with_dashboard
