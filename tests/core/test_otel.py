"""pyotp.otel: telemetry events and node counters as OpenTelemetry metrics, read with the
SDK's in-memory metric reader."""
import pytest

import pyotp
from pyotp import Supervisor, telemetry

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from servers import Worker


def _points(reader):
    """{metric name: [(attributes, value or histogram (count, sum))]}"""
    out = {}
    data = reader.get_metrics_data()
    for rm in (data.resource_metrics if data is not None else []):
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                pts = []
                for p in m.data.data_points:
                    v = (p.count, p.sum) if hasattr(p, "bucket_counts") else p.value
                    pts.append((dict(p.attributes), v))
                out[m.name] = pts
    return out


def test_events_and_node_counters_reach_opentelemetry():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    async def main():
        m = pyotp.otel.OpenTelemetryMetrics(provider).attach()
        try:
            sup = await Supervisor.start_link([{"id": "w", "start": (Worker.start_link, [7])}],
                                              strategy="one_for_one", name="otel_sup")
            w = (await Supervisor.which_children(sup))[0][1]
            ref = pyotp.monitor(w)
            with pytest.raises(pyotp.Exit):
                await telemetry.call(w, "crash")
            await pyotp.receive(lambda msg: msg[0] == "DOWN" and msg[1] == ref)
            w2 = (await Supervisor.which_children(sup))[0][1]
            for _ in range(3):
                assert await telemetry.call(w2, "get") == 7
            ps = [pyotp.spawn(pyotp.receive) for _ in range(4)]
            node = m.sample()
            for p in ps:
                pyotp.exit(p, "kill")
            return node
        finally:
            m.detach()
    node = pyotp.run(main)
    pts = _points(reader)
    assert pts["pyotp.supervisor.restarts"] == [({"supervisor": "otel_sup", "child_id": "w"}, 1)]
    calls = pts["pyotp.gen_server.call.duration"]
    assert {a["server"] for a, _ in calls} == {"pid"}
    assert sum(count for _, (count, _) in calls) == 4   # 3 answered + 1 crashed
    assert all(total > 0 for _, (_, total) in calls)
    errs = [a for a, _ in pts["pyotp.gen_server.call.duration"] if "error" in a]
    assert len(errs) == 1 and "asked to" in errs[0]["error"]
    [(attrs, procs)] = pts["pyotp.processes"]
    assert attrs == {"node": node["name"]} and procs == node["processes"]
    assert pts["pyotp.dispatched"] == [({"node": node["name"]}, node["dispatched"])]
    assert pts["pyotp.memory"][0][1] == node["memory"] > 0
    assert "pyotp.dist.bytes_in" not in pts          # not distributed: no connection series


def test_detached_bridge_counts_nothing_and_missing_sdk_is_explained(monkeypatch):
    reader = InMemoryMetricReader()
    m = pyotp.otel.OpenTelemetryMetrics(MeterProvider(metric_readers=[reader])).attach()
    m.detach()
    telemetry.execute(("pyotp", "supervisor", "restart"), {"count": 1}, {"supervisor": "s", "child_id": 1})
    assert "pyotp.supervisor.restarts" not in _points(reader)
    import sys
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pyotp-actors\[otel\]"):
        pyotp.otel.OpenTelemetryMetrics()


@pytest.mark.erlang
def test_connection_traffic_series_per_peer():
    from dist_helpers import COOKIE, WAIT, ErlNode, unique
    from test_observer_beam import ECHO
    import pyotp.dist
    reader = InMemoryMetricReader()
    with ErlNode("otelecho", ECHO) as erl:
        erl.expect("ready")

        async def main():
            m = pyotp.otel.OpenTelemetryMetrics(MeterProvider(metric_readers=[reader])).attach()
            try:
                assert await pyotp.dist.Node.ping(erl.name) == "pong"
                pyotp.send((pyotp.Atom("echo"), erl.name), (pyotp.self(), b"y" * 500))
                assert await pyotp.receive(timeout=WAIT) == b"y" * 500
                return m.sample()
            finally:
                m.detach()
        node = pyotp.run(main, node=unique("otel"), cookie=COOKIE)
    pts = _points(reader)
    [conn] = node["connections"]
    for key in ("bytes_in", "bytes_out", "msgs_in", "msgs_out"):
        assert pts["pyotp.dist." + key] == [({"node": node["name"], "peer": erl.name}, conn[key])]
    assert conn["bytes_in"] >= 500 and conn["msgs_in"] >= 1
    assert [a for a, _ in pts["pyotp.dist.connections.up"]] == [{"peer": erl.name}]
