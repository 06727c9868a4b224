"""Telemetry-style events (as Erlang's ``telemetry`` library) and a Prometheus exporter.

An event is a tuple of names, with measurements and metadata dicts. Handlers attached to
an event run synchronously where the event is emitted; a handler that raises is detached
(as telemetry does) and logged, so a faulty handler never breaks the emitter.

Events pyotp emits:

- ``("pyotp", "supervisor", "restart")``: ``{"count": 1}``, ``{"supervisor", "child_id"}``
- ``("pyotp", "dist", "connection_up")`` / ``("pyotp", "dist", "connection_down")``:
  ``{"count": 1}``, ``{"node", "peer"}``
- ``("pyotp", "gen_server", "call", "stop")``: ``{"duration": seconds}``,
  ``{"server", "request"}`` from ``telemetry.call`` (a timed GenServer.call; the plain
  compiled call is left untouched, so it costs nothing when not wanted)
- ``("pyotp", "process", "mailbox_over")``: ``{"message_queue_len": n}``, ``{"pid"}``
  from a ``MailboxWatch`` (a sampling process, nothing on the per-message path)

>>> import pyotp
>>> seen = []
>>> pyotp.telemetry.attach("t", ("my", "event"), lambda ev, m, md, cfg: seen.append((ev, m)))
>>> pyotp.telemetry.execute(("my", "event"), {"n": 1}, {})
>>> seen
[(('my', 'event'), {'n': 1})]
>>> pyotp.telemetry.detach("t")
True
"""
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from . import _core

__all__ = ["attach", "attach_many", "detach", "execute", "list_handlers", "call",
           "MailboxWatch", "Metrics", "EVENTS"]

_log = logging.getLogger("pyotp.telemetry")

Event = Tuple[str, ...]
Handler = Callable[[Event, Dict[str, Any], Dict[str, Any], Any], None]

EVENTS: Tuple[Event, ...] = (
    ("pyotp", "supervisor", "restart"),
    ("pyotp", "dist", "connection_up"),
    ("pyotp", "dist", "connection_down"),
    ("pyotp", "gen_server", "call", "stop"),
    ("pyotp", "process", "mailbox_over"),
)

_handlers: Dict[Any, Tuple[Tuple[Event, ...], Handler, Any]] = {}
_by_event: Dict[Event, List[Tuple[Any, Handler, Any]]] = {}


def _event(e: Any) -> Event:
    if not isinstance(e, (tuple, list)) or not e or not all(isinstance(x, str) for x in e):
        raise ValueError("telemetry: an event is a non-empty tuple of str, got %r" % (e,))
    return tuple(e)


def _rebuild() -> None:
    _by_event.clear()
    for hid, (events, fn, cfg) in _handlers.items():
        for e in events:
            _by_event.setdefault(e, []).append((hid, fn, cfg))


def attach_many(handler_id: Any, events: Sequence[Sequence[str]], fn: Handler,
                config: Any = None) -> None:
    """Run ``fn(event, measurements, metadata, config)`` at each of ``events``.
    ``handler_id`` must be new (ValueError otherwise, as telemetry's already_exists)."""
    if handler_id in _handlers:
        raise ValueError("telemetry: handler %r already exists" % (handler_id,))
    if not callable(fn):
        raise TypeError("telemetry: handler must be callable, got %r" % (fn,))
    _handlers[handler_id] = (tuple(_event(e) for e in events), fn, config)
    _rebuild()


def attach(handler_id: Any, event: Sequence[str], fn: Handler, config: Any = None) -> None:
    """``attach_many(handler_id, [event], fn, config)``."""
    attach_many(handler_id, [event], fn, config)


def detach(handler_id: Any) -> bool:
    """Remove a handler; False if there was none."""
    if _handlers.pop(handler_id, None) is None:
        return False
    _rebuild()
    return True


def list_handlers(prefix: Sequence[str] = ()) -> List[Tuple[Any, Event]]:
    """(handler_id, event) pairs whose event starts with ``prefix``."""
    p = tuple(prefix)
    return [(hid, e) for hid, (events, _, _) in _handlers.items() for e in events if e[:len(p)] == p]


def execute(event: Sequence[str], measurements: Dict[str, Any], metadata: Dict[str, Any]) -> None:
    """Emit ``event`` to its handlers (nothing to do, and cheap, when there are none)."""
    hs = _by_event.get(tuple(event))
    if not hs:
        return
    for hid, fn, cfg in list(hs):
        try:
            fn(tuple(event), measurements, metadata, cfg)
        except Exception:
            _log.exception("telemetry: handler %r failed on %r; detached", hid, event)
            detach(hid)


async def call(server: Any, request: Any, timeout: Optional[float] = 5.0) -> Any:
    """GenServer.call that emits ``("pyotp", "gen_server", "call", "stop")`` with its
    duration (also when the call exits: metadata ``error`` holds the reason)."""
    t0 = time.perf_counter()
    try:
        r = await _core.call(server, request, timeout)
    except _core.Exit as e:
        execute(EVENTS[3], {"duration": time.perf_counter() - t0},
                {"server": server, "request": request, "error": e.reason})
        raise
    execute(EVENTS[3], {"duration": time.perf_counter() - t0}, {"server": server, "request": request})
    return r


class MailboxWatch:
    """A process that reads every local mailbox length each ``interval`` seconds and emits
    ``("pyotp", "process", "mailbox_over")`` for those over ``threshold`` (once per
    crossing, again after it has dropped below).

    >>> async def main():
    ...     pid = await pyotp.telemetry.MailboxWatch.start(threshold=1000, interval=1.0)
    ...     return pyotp.is_alive(pid)
    >>> pyotp.run(main)
    True
    """

    @staticmethod
    async def start(threshold: int, interval: float = 1.0) -> Any:
        if type(threshold) is not int or threshold < 0:
            raise ValueError("MailboxWatch: threshold must be an int >= 0, got %r" % (threshold,))
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError("MailboxWatch: interval must be > 0, got %r" % (interval,))

        async def loop() -> None:
            over: Set[Any] = set()
            me = _core.self()
            while True:
                now: Set[Any] = set()
                for pid in _core.processes():
                    if pid == me:
                        continue
                    info = _core.process_info(pid, ["message_queue_len"])
                    if info is not None and info["message_queue_len"] > threshold:
                        now.add(pid)
                        if pid not in over:
                            execute(EVENTS[4], {"message_queue_len": info["message_queue_len"]},
                                    {"pid": pid, "threshold": threshold})
                over = now
                await _core.sleep(interval)
        return _core.spawn_link(loop)


def _escape(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Counters fed by the events above, rendered in Prometheus's text format together
    with the node's gauges (``pyotp.observer.node_info``). ``attach()`` starts counting,
    ``detach()`` stops; ``render()`` is the text for a ``/metrics`` endpoint (the dashboard
    serves it).

    >>> m = pyotp.telemetry.Metrics().attach()
    >>> pyotp.telemetry.execute(("pyotp", "supervisor", "restart"), {"count": 1}, {})
    >>> m.counters["pyotp_supervisor_restarts_total"]
    1
    >>> m.detach()
    """

    def __init__(self) -> None:
        self.counters: Dict[str, float] = {
            "pyotp_supervisor_restarts_total": 0, "pyotp_dist_connections_up_total": 0,
            "pyotp_dist_connections_down_total": 0, "pyotp_gen_server_calls_total": 0,
            "pyotp_gen_server_call_seconds_total": 0.0, "pyotp_mailbox_over_total": 0}
        self._id = ("pyotp.telemetry.Metrics", id(self))

    def _on(self, event: Event, m: Dict[str, Any], md: Dict[str, Any], cfg: Any) -> None:
        c = self.counters
        if event == EVENTS[0]:
            c["pyotp_supervisor_restarts_total"] += 1
        elif event == EVENTS[1]:
            c["pyotp_dist_connections_up_total"] += 1
        elif event == EVENTS[2]:
            c["pyotp_dist_connections_down_total"] += 1
        elif event == EVENTS[3]:
            c["pyotp_gen_server_calls_total"] += 1
            c["pyotp_gen_server_call_seconds_total"] += m.get("duration", 0.0)
        elif event == EVENTS[4]:
            c["pyotp_mailbox_over_total"] += 1

    def attach(self) -> "Metrics":
        attach_many(self._id, EVENTS, self._on)
        return self

    def detach(self) -> None:
        detach(self._id)

    def render(self) -> str:
        from .observer import node_info
        node = node_info()
        lines = []
        label = '{node="%s"}' % _escape(node["name"])
        for key, help_ in (("processes", "live processes"), ("run_queue", "runnable processes"),
                           ("timers", "active timers"), ("memory", "process memory estimate, bytes")):
            lines += ["# HELP pyotp_%s %s" % (key, help_), "# TYPE pyotp_%s gauge" % key,
                      "pyotp_%s%s %s" % (key, label, node[key])]
        lines += ["# HELP pyotp_dispatched_total messages and callbacks run",
                  "# TYPE pyotp_dispatched_total counter",
                  "pyotp_dispatched_total%s %s" % (label, node["dispatched"])]
        for name, v in self.counters.items():
            lines += ["# TYPE %s counter" % name, "%s%s %s" % (name, label, v)]
        return "\n".join(lines) + "\n"
