"""pyotp.telemetry: handlers, the events pyotp emits, the Prometheus exporter."""
import asyncio

import pytest

import pyotp
from pyotp import Supervisor, telemetry
from servers import Worker


@pytest.fixture
def events():
    seen = []
    telemetry.attach_many("test", telemetry.EVENTS, lambda e, m, md, c: seen.append((e, m, md)))
    yield seen
    telemetry.detach("test")


def test_attach_rules():
    telemetry.attach("x", ("a",), lambda *a: None)
    try:
        with pytest.raises(ValueError, match="already exists"):
            telemetry.attach("x", ("a",), lambda *a: None)
        with pytest.raises(ValueError, match="tuple of str"):
            telemetry.attach("y", "a", lambda *a: None)
        assert telemetry.list_handlers(("a",)) == [("x", ("a",))]
    finally:
        assert telemetry.detach("x") and not telemetry.detach("x")


def test_failing_handler_is_detached():
    def bad(*a):
        raise RuntimeError("boom")
    telemetry.attach("bad", ("e",), bad)
    telemetry.execute(("e",), {}, {})          # does not raise
    assert telemetry.list_handlers(("e",)) == []


def test_restart_call_and_mailbox_events(events):
    async def main():
        sup = await Supervisor.start_link([{"id": "w", "start": (Worker.start_link, [5])}],
                                          strategy="one_for_one")
        [(_, w, _, _)] = await Supervisor.which_children(sup)
        assert await telemetry.call(w, "get") == 5
        pyotp.exit(w, "kill")
        while not any(e[0] == telemetry.EVENTS[0] for e in events):
            await pyotp.sleep(0.001)
        slow = pyotp.spawn(pyotp.receive, lambda m: m == "never")
        for i in range(5):
            pyotp.send(slow, i)
        await telemetry.MailboxWatch.start(threshold=3, interval=0.001)
        while not any(e[0] == telemetry.EVENTS[4] for e in events):
            await pyotp.sleep(0.001)
        return sup, slow
    sup, slow = pyotp.run(main)
    kinds = [e[0] for e in events]
    restart = events[kinds.index(telemetry.EVENTS[0])]
    assert restart[2] == {"supervisor": sup, "child_id": "w"}
    call = events[kinds.index(telemetry.EVENTS[3])]
    assert call[1]["duration"] >= 0 and call[2]["request"] == "get"
    over = [e for e in events if e[0] == telemetry.EVENTS[4]]
    assert len(over) == 1 and over[0][2]["pid"] == slow and over[0][1]["message_queue_len"] == 5


@pytest.mark.pyotp
async def test_prometheus_text_on_dashboard():
    d = await pyotp.dashboard.start(0)
    try:
        sup = await Supervisor.start_link([{"id": "w", "start": (Worker.start_link, [5])}],
                                          strategy="one_for_one")
        [(_, w, _, _)] = await Supervisor.which_children(sup)
        pyotp.exit(w, "kill")
        while d.metrics.counters["pyotp_supervisor_restarts_total"] < 1:
            await pyotp.sleep(0.001)
        r, wr = await asyncio.open_connection("127.0.0.1", d.port)
        wr.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        data = await r.read()
        wr.close()
        text = data.decode()
    finally:
        d.close()
    assert "text/plain; version=0.0.4" in text
    assert 'pyotp_supervisor_restarts_total{node="nonode@nohost"} 1' in text
    assert "# TYPE pyotp_processes gauge" in text
