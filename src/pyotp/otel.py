"""OpenTelemetry metrics from pyotp's telemetry events and node counters.

``OpenTelemetryMetrics`` turns the events of ``pyotp.telemetry`` into OpenTelemetry
instruments on a meter of the given (or the global) ``MeterProvider``, so any OpenTelemetry
exporter (OTLP, Prometheus, console) ships them. Needs the optional extra:
``pip install "pyotp-actors[otel]"`` (opentelemetry-api and -sdk).

Instruments (OpenTelemetry naming; attributes in brackets):

- ``pyotp.supervisor.restarts`` counter [supervisor (its name, else its pid), child_id]
- ``pyotp.dist.connections.up`` / ``pyotp.dist.connections.down`` counters [peer]
- ``pyotp.gen_server.call.duration`` histogram, seconds [server (a name, or "pid"), error]
  (from ``pyotp.telemetry.call``)
- ``pyotp.process.mailbox_over`` counter (from a ``telemetry.MailboxWatch``)
- observable gauges ``pyotp.processes``, ``pyotp.run_queue``, ``pyotp.timers``,
  ``pyotp.memory`` and observable counters ``pyotp.dispatched`` and
  ``pyotp.dist.bytes_in/bytes_out/msgs_in/msgs_out`` [peer], read from the last
  ``sample()``: node counters can only be read on the node's loop thread, and exporters
  collect from their own thread, so ``start()`` runs a process that samples every
  ``interval`` seconds (``sample()`` does one reading at once).

>>> import pyotp
>>> from opentelemetry.sdk.metrics import MeterProvider
>>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
>>> reader = InMemoryMetricReader()
>>> async def main():
...     m = pyotp.otel.OpenTelemetryMetrics(MeterProvider(metric_readers=[reader])).attach()
...     m.sample()
...     pyotp.telemetry.execute(("pyotp", "supervisor", "restart"), {"count": 1},
...                             {"supervisor": "my_sup", "child_id": "w"})
...     m.detach()
>>> pyotp.run(main)
>>> data = reader.get_metrics_data()
"""
from typing import Any, Dict, Iterable, List, Optional

from . import _core, telemetry
from ._version import __version__

__all__ = ["OpenTelemetryMetrics"]


def _attr(x: Any) -> str:
    """An attribute value: names as they are, other terms as their text."""
    return x if type(x) is str else str(x)


def _sup(x: Any) -> str:
    """A supervisor: its registered name, else its pid's text (supervisors are few)."""
    if type(x) is _core.Pid and x.node == _core.local_node():
        info = _core.process_info(x, ["registered_name"])
        if info is not None and info["registered_name"] is not None:
            return _attr(info["registered_name"])
    return _attr(x)


def _server(x: Any) -> str:
    """A call's server: its name; every pid is "pid" (one series per pid would grow
    without bound)."""
    return "pid" if type(x) is _core.Pid else _attr(x)


class OpenTelemetryMetrics:
    """The bridge: ``attach()`` to start counting events, ``detach()`` to stop,
    ``await start(interval)`` to keep the node gauges fresh (see the module doc)."""

    def __init__(self, meter_provider: Any = None, name: str = "pyotp") -> None:
        try:
            from opentelemetry import metrics
            from opentelemetry.metrics import CallbackOptions, Observation
        except ImportError as e:
            raise ImportError("pyotp.otel needs OpenTelemetry: pip install "
                              "'pyotp-actors[otel]' (opentelemetry-api, opentelemetry-sdk)") from e
        self._Observation = Observation
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(name, __version__)
        self.restarts = meter.create_counter(
            "pyotp.supervisor.restarts", unit="{restart}", description="children restarted by supervisors")
        self.conn_up = meter.create_counter(
            "pyotp.dist.connections.up", unit="{connection}", description="distribution connections set up")
        self.conn_down = meter.create_counter(
            "pyotp.dist.connections.down", unit="{connection}", description="distribution connections lost")
        self.call_duration = meter.create_histogram(
            "pyotp.gen_server.call.duration", unit="s", description="GenServer.call durations (telemetry.call)")
        self.mailbox_over = meter.create_counter(
            "pyotp.process.mailbox_over", unit="{event}", description="mailboxes found over their threshold")
        self._node: Optional[Dict[str, Any]] = None
        for key, desc in (("processes", "live processes"), ("run_queue", "runnable processes"),
                          ("timers", "active timers"), ("memory", "process memory estimate")):
            meter.create_observable_gauge("pyotp." + key, callbacks=[self._gauge(key)],
                                          unit="By" if key == "memory" else "1", description=desc)
        meter.create_observable_counter("pyotp.dispatched", callbacks=[self._gauge("dispatched")],
                                        description="messages and callbacks run")
        for key in ("bytes_in", "bytes_out", "msgs_in", "msgs_out"):
            meter.create_observable_counter("pyotp.dist." + key, callbacks=[self._conn(key)],
                                            unit="By" if key.startswith("bytes") else "{message}",
                                            description="distribution traffic per connection")
        self._id = ("pyotp.otel.OpenTelemetryMetrics", id(self))
        self._sampler: Any = None

    # -- observable instruments: they read the last sample ------------------------------

    def _gauge(self, key: str) -> Any:
        def cb(options: Any) -> Iterable[Any]:
            node = self._node
            if node is None or node.get(key) is None:
                return []
            return [self._Observation(node[key], {"node": node["name"]})]
        return cb

    def _conn(self, key: str) -> Any:
        def cb(options: Any) -> Iterable[Any]:
            node = self._node
            if node is None:
                return []
            return [self._Observation(c[key], {"node": node["name"], "peer": c["node"]})
                    for c in node.get("connections", ())]
        return cb

    def sample(self) -> Dict[str, Any]:
        """Read the node's counters now (on the node's loop thread); returns them."""
        from .observer import node_info
        node = node_info()
        self._node = node
        return node

    async def start(self, interval: float = 5.0) -> Any:
        """Spawn a process that calls ``sample()`` every ``interval`` seconds; its pid."""
        if not isinstance(interval, (int, float)) or isinstance(interval, bool) or interval <= 0:
            raise ValueError("OpenTelemetryMetrics.start: interval must be > 0, got %r" % (interval,))

        async def loop() -> None:
            while True:
                self.sample()
                await _core.sleep(interval)
        self._sampler = _core.spawn(loop)
        return self._sampler

    # -- events ---------------------------------------------------------------------------

    def _on(self, event: telemetry.Event, m: Dict[str, Any], md: Dict[str, Any], cfg: Any) -> None:
        ev = telemetry.EVENTS
        if event == ev[0]:
            self.restarts.add(m.get("count", 1), {"supervisor": _sup(md.get("supervisor")),
                                                  "child_id": _attr(md.get("child_id"))})
        elif event == ev[1]:
            self.conn_up.add(1, {"peer": _attr(md.get("peer"))})
        elif event == ev[2]:
            self.conn_down.add(1, {"peer": _attr(md.get("peer"))})
        elif event == ev[3]:
            attrs: Dict[str, str] = {"server": _server(md.get("server"))}
            if "error" in md:
                attrs["error"] = _attr(md["error"])[:100]
            self.call_duration.record(m["duration"], attrs)
        elif event == ev[4]:
            self.mailbox_over.add(1)

    def attach(self) -> "OpenTelemetryMetrics":
        telemetry.attach_many(self._id, telemetry.EVENTS, self._on)
        return self

    def detach(self) -> None:
        telemetry.detach(self._id)
        if self._sampler is not None:
            if _core.is_alive(self._sampler):
                _core.exit(self._sampler, "kill")
            self._sampler = None

