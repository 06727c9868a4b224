"""Pipeline's RabbitMQProducer against a real RabbitMQ broker (Debian's rabbitmq-server),
started here with a private home, data and log directories, free ports and its own node
name (so it cannot clash with the Erlang nodes other tests start), and killed with its
process group at the end.

What is checked, with the broker as the witness: successful messages are acked (the queue
ends empty), failed ones rejected and requeued (they come back redelivered), a drain on
shutdown acks everything it handled and leaves the rest in the queue (nothing acked is
lost, nothing handled twice), and a crashed producer's unacknowledged messages are
redelivered to its restarted successor.

Marked ``erlang`` (the broker is an Erlang program) and ``rabbitmq``: skipped with the
reason where Erlang or rabbitmq-server is absent (the wheel tests on macOS/Windows
runners), failed instead where they are required (PYOTP_REQUIRE_SERVICES, set by .ci/run
and CI's Erlang jobs; see tests/helpers/services.py)."""
import os
import signal
import socket
import subprocess
import time

import pytest

import pyotp
from pyotp import Pipeline
from pyotp.pipeline import RabbitMQProducer

from dist_helpers import ensure_epmd, free_port
from services import executable

pytestmark = [pytest.mark.pyotp, pytest.mark.erlang, pytest.mark.rabbitmq]

aio_pika = pytest.importorskip("aio_pika", reason="aio-pika is in the test extras: pip install '.[test]'")

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def _amqp_ready(port):
    # The AMQP 0-9-1 protocol header; a ready broker answers with connection.start (a
    # method frame: type 1)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(1)[:1] == b"\x01"
    except OSError:
        return False


@pytest.fixture(scope="module")
def amqp_url(tmp_path_factory):
    server = SERVER if os.path.exists(SERVER) else executable("rabbitmq", "rabbitmq-server")
    if server is None:
        pytest.fail("rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server; "
                    ".ci/run installs it)")
    base = tmp_path_factory.mktemp("rabbitmq")
    for d in ("home", "mnesia", "log"):
        (base / d).mkdir()
    (base / "enabled_plugins").write_text("")
    port, dist = free_port(), free_port()
    env = dict(os.environ)
    env.update(HOME=str(base / "home"), RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
               RABBITMQ_LOG_BASE=str(base / "log"),
               RABBITMQ_NODENAME="pyotp_test_rmq_%d_%d@localhost" % (os.getpid(), port),
               RABBITMQ_NODE_IP_ADDRESS="127.0.0.1", RABBITMQ_NODE_PORT=str(port),
               RABBITMQ_DIST_PORT=str(dist), RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
               RABBITMQ_CONFIG_FILE=str(base / "none"), RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "none.config"))
    ensure_epmd()       # the shared epmd the other Erlang tests use; the node name is ours
    log = open(base / "server.out", "wb")
    proc = subprocess.Popen([server], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _amqp_ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("rabbitmq-server did not start:\n%s" % (base / "server.out").read_text()[-3000:])
            time.sleep(0.2)      # polling an external server's port: not a synchronisation
        yield "amqp://guest:guest@127.0.0.1:%d/" % port
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        log.close()


async def publish(url, queue, bodies):
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel()
        await ch.declare_queue(queue, durable=True)
        for b in bodies:
            await ch.default_exchange.publish(aio_pika.Message(b), routing_key=queue)
    finally:
        await conn.close()


async def queue_count(url, queue):
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, durable=True, passive=True)
        return q.declaration_result.message_count
    finally:
        await conn.close()


class Recorder(Pipeline):
    """Sends every handled message to the test; fails the numbers in the context's set the
    first time they are delivered."""

    def handle_message(self, processor, m, ctx):
        to, fail_first = ctx
        n = int(m.data)
        if n in fail_first and not m.metadata["redelivered"]:
            pyotp.send(to, ("failed", n))
            return m.failed("first delivery fails")
        pyotp.send(to, ("handled", n, m.metadata["redelivered"]))
        return m


async def handled(n):
    seen = []
    while len(seen) < n:
        m = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "handled", 30)
        seen.append(m[1])
    return seen


async def stop_and_wait_connection_closed(pid):
    pump = await pyotp.GenStage.call(Pipeline.producer_names(pid)[0], "pump")
    ref = pyotp.monitor(pump)
    await Pipeline.stop(pid)
    await pyotp.receive(lambda m: type(m) is tuple and m[0] == "DOWN" and m[1] == ref, 30)


async def test_acks_successes_and_requeues_failures(amqp_url):
    q = "pyotp_acks"
    await publish(amqp_url, q, [b"%d" % i for i in range(200)])
    fail = set(range(3, 200, 10))
    pid = await Recorder.start_link(
        producer={"module": (RabbitMQProducer, {"url": amqp_url, "queue": q, "prefetch_count": 20})},
        processors={"default": {"concurrency": 2, "max_demand": 5}},
        context=(pyotp.self(), fail))
    seen = await handled(200)
    assert sorted(seen) == list(range(200))           # each handled successfully once
    for n in fail:                                     # failed first, then came back
        assert (await pyotp.receive(lambda m: m == ("failed", n), 0)) == ("failed", n)
    c = Pipeline.counters(pid)
    assert c["failed"] == len(fail) and c["acked"] == 200 + len(fail) and c["in_flight"] == 0
    await stop_and_wait_connection_closed(pid)
    assert await queue_count(amqp_url, q) == 0         # every success acked at the broker


async def test_reject_without_requeue_drops_failures(amqp_url):
    q = "pyotp_reject"
    await publish(amqp_url, q, [b"%d" % i for i in range(20)])
    pid = await Recorder.start_link(
        producer={"module": (RabbitMQProducer, {"url": amqp_url, "queue": q, "on_failure": "reject"})},
        processors={"default": {"concurrency": 1}},
        context=(pyotp.self(), {5, 6}))
    seen = await handled(18)
    assert sorted(seen) == [i for i in range(20) if i not in (5, 6)]
    await stop_and_wait_connection_closed(pid)
    assert await queue_count(amqp_url, q) == 0


async def test_drain_acks_what_it_handled_and_leaves_the_rest(amqp_url):
    q = "pyotp_drain"
    total = 300
    await publish(amqp_url, q, [b"%d" % i for i in range(total)])
    pid = await Recorder.start_link(
        producer={"module": (RabbitMQProducer, {"url": amqp_url, "queue": q, "prefetch_count": 30})},
        processors={"default": {"concurrency": 2, "max_demand": 4}},
        context=(pyotp.self(), set()))
    first = await handled(50)
    await stop_and_wait_connection_closed(pid)         # drains what is in flight
    while True:                                        # what the drain handled after the 50th
        try:
            first.append((await pyotp.receive(lambda m: type(m) is tuple and m[0] == "handled", 0))[1])
        except TimeoutError:
            break
    left = await queue_count(amqp_url, q)
    assert left == total - len(first)                  # acked ones gone, the rest requeued
    assert len(set(first)) == len(first)
    pid2 = await Recorder.start_link(
        producer={"module": (RabbitMQProducer, {"url": amqp_url, "queue": q})},
        processors={"default": {"concurrency": 2}},
        context=(pyotp.self(), set()))
    second = await handled(left)
    assert sorted(first + second) == list(range(total))    # nothing lost, nothing twice
    await stop_and_wait_connection_closed(pid2)
    assert await queue_count(amqp_url, q) == 0


async def test_crashed_producer_messages_are_redelivered(amqp_url):
    q = "pyotp_crash"
    total = 100
    await publish(amqp_url, q, [b"%d" % i for i in range(total)])
    pid = await Recorder.start_link(
        producer={"module": (RabbitMQProducer, {"url": amqp_url, "queue": q, "prefetch_count": 10})},
        processors={"default": {"concurrency": 1, "max_demand": 2}},
        context=(pyotp.self(), set()))
    name = Pipeline.producer_names(pid)[0]
    seen = await handled(10)
    old = pyotp.whereis(name)
    pump = await pyotp.GenStage.call(name, "pump")
    ref = pyotp.monitor(pump)
    pyotp.exit(old, "kill")                            # the stage dies; the pump closes the connection
    await pyotp.receive(lambda m: type(m) is tuple and m[0] == "DOWN" and m[1] == ref, 30)
    redelivered = []
    while len(set(seen)) < total:
        m = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "handled", 30)
        seen.append(m[1])
        if m[2]:
            redelivered.append(m[1])
    assert pyotp.whereis(name) not in (None, old)      # restarted by the pipeline's supervisor
    assert sorted(set(seen)) == list(range(total))
    assert redelivered                                # the unacked window came back
    # a message handled twice was redelivered: its ack had not reached the broker
    twice = {n for n in seen if seen.count(n) > 1}
    assert twice <= set(redelivered)
    await stop_and_wait_connection_closed(pid)
    assert await queue_count(amqp_url, q) == 0


async def test_bad_options(amqp_url):
    pyotp.process_flag("trap_exit", True)
    with pytest.raises(Exception, match="prefetch_count"):
        await Recorder.start_link(
            producer={"module": (RabbitMQProducer, {"url": amqp_url, "queue": "x", "prefetch_count": 0})},
            processors={"default": {"concurrency": 1}}, context=None)
