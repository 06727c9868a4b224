"""pyotp.tracing and pyotp.sys.trace: send/receive/call/cast events, outputs (process,
file, log), the rate bound, a failing tracer removed."""
import logging

import pytest

import pyotp
from pyotp import GenServer, tracing
from servers import Echo

pytestmark = pytest.mark.pyotp


async def client(server, me):
    await GenServer.call(server, "ping")
    GenServer.cast(server, "c")
    pyotp.send(me, "done")
    await pyotp.receive()


async def test_events_to_a_process():
    me = pyotp.self()
    srv = await Echo.start_link(None)
    tracing.trace(srv, to=me)
    c = pyotp.spawn(client, srv, me)
    tracing.trace(c, to=me)
    evs = []
    while len(evs) < 5:
        m = await pyotp.receive(lambda m: m[0] == "trace", timeout=10)
        evs.append((m[1], m[2], m[3]))
    assert tracing.stop(c) and not tracing.stop(c)
    from_srv = [(e, d) for p, e, d in evs if p == srv]
    from_c = [(e, d) for p, e, d in evs if p == c]
    assert from_srv[0] == ("receive", ("call", "ping"))
    assert from_srv[1] == ("receive", ("cast", "c"))
    assert from_c[:2] == [("call", (srv, "ping")), ("cast", (srv, "c"))]
    assert from_c[2][0] == "send" and from_c[2][1][1] == "done"


async def chatter(n):
    for i in range(n):
        pyotp.send(pyotp.self(), i)
        await pyotp.receive()


async def test_rate_bound_and_file(tmp_path):
    path = str(tmp_path / "trace.log")

    p = pyotp.spawn(chatter, 1000)
    t = tracing.trace(p, to=("file", path), rate=10)
    ref = pyotp.monitor(p)
    await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
    dropped = t.dropped
    lines = open(path).read().splitlines()
    # 2000 events (a send and a receive each) in well under a second: 10 written
    assert len(lines) <= 20 and dropped + len(lines) >= 2000 - 10


async def test_sys_trace_logs(caplog):
    caplog.set_level(logging.INFO, logger="pyotp.trace")
    srv = await Echo.start_link(None)
    pyotp.sys.trace(srv, True)
    await GenServer.call(srv, "hello")
    pyotp.sys.trace(srv, False)
    await GenServer.call(srv, "quiet")
    with pytest.raises(TypeError, match="True or False"):
        pyotp.sys.trace(srv, "yes")
    msgs = [r.getMessage() for r in caplog.records if r.name == "pyotp.trace"]
    assert len(msgs) == 1 and "receive ('call', 'hello')" in msgs[0]


async def test_failing_tracer_is_removed_and_bad_args():
    def bad(pid, ev, data):
        raise RuntimeError("tracer broke")
    p = pyotp.spawn(chatter, 3)
    pyotp._core.set_tracer(p, bad)
    ref = pyotp.monitor(p)
    down = await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
    with pytest.raises(pyotp.BadArg, match="callable"):
        pyotp._core.set_tracer(pyotp.self(), 3)
    with pytest.raises(ValueError, match="rate"):
        tracing.trace(pyotp.self(), rate=0)
    with pytest.raises(ValueError, match="to must be"):
        tracing.trace(pyotp.self(), to="stdout")
    assert down[4] == "normal"
