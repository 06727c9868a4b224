"""Pipeline (Broadway-style): acknowledgement of successes and failures, per-message
failure, batchers, crash of a stage, drain on shutdown, file producer, bad options."""
import pytest

import pyotp
from pyotp import Message, Pipeline, PipelineError
from pyotp.pipeline import FileProducer, IterableProducer

pytestmark = pytest.mark.pyotp


class Crash(BaseException):
    """Escapes handle_message's per-message error handling: crashes the processor."""


class Pipe(Pipeline):
    def handle_message(self, processor, m, ctx):
        if m.data == "crash":
            raise Crash()
        if isinstance(m.data, int) and m.data % 7 == 0:
            raise ValueError("seven")
        if isinstance(m.data, int):
            m.put_batcher("even" if m.data % 2 == 0 else "odd")
        return m

    def handle_batch(self, batcher, messages, info, ctx):
        if any(m.data == 15 for m in messages):
            raise RuntimeError("bad batch")
        pyotp.send(ctx, ("batch", batcher, info.size, info.trigger))
        return messages


async def acks(n):
    ok, bad = [], []
    while len(ok) + len(bad) < n:
        _, o, b = await pyotp.receive(lambda m: m[0] == "ack")
        ok += o
        bad += b
    return ok, bad


async def test_every_message_acked_once_failures_do_not_stop_the_pipeline():
    me = pyotp.self()
    pid = await Pipe.start_link(producer={"module": (IterableProducer, {"items": range(100), "ack_to": me})},
                                processors={"default": {"concurrency": 3}},
                                batchers={"even": {"batch_size": 10}, "odd": {"batch_size": 5, "concurrency": 2}},
                                context=me)
    ok, bad = await acks(100)
    assert sorted(ok + [d for d, _ in bad]) == list(range(100))
    failed = {d for d, _ in bad}
    sevens = {i for i in range(100) if i % 7 == 0}
    assert sevens <= failed
    assert 15 in failed                      # its whole batch failed: nothing else
    assert all(isinstance(r, (ValueError, RuntimeError)) for _, r in bad)
    c = Pipeline.counters(pid)
    assert c["acked"] == 100 and c["in_flight"] == 0 and c["failed"] == len(bad)
    assert await Pipeline.stop(pid) == "ok"


async def test_drain_on_shutdown_acks_everything_in_flight():
    me = pyotp.self()
    pid = await Pipe.start_link(producer={"module": (IterableProducer, {"ack_to": me})},
                                processors={"default": {"concurrency": 2, "max_demand": 4}},
                                batchers={"even": {"batch_size": 1000, "batch_timeout": 60},
                                          "odd": {"batch_size": 1000, "batch_timeout": 60}},
                                context=me)
    Pipeline.push_messages(pid, [1, 2, 3, 4, 5, 6, 8, 9])
    await Pipeline.stop(pid)        # batches are flushed by the drain, not by size or timeout
    ok, bad = await acks(8)
    assert sorted(ok) == [1, 2, 3, 4, 5, 6, 8, 9] and bad == []
    triggers = set()
    while True:
        try:
            triggers.add((await pyotp.receive(lambda m: m[0] == "batch", timeout=0))[3])
        except TimeoutError:
            break
    assert triggers == {"flush"}
    assert not pyotp.is_alive(pid)


async def test_batch_timeout_flushes_partial_batch():
    me = pyotp.self()
    pid = await Pipe.start_link(producer={"module": (IterableProducer, {"items": [2, 4, 6], "ack_to": me})},
                                processors={"default": {"concurrency": 1}},
                                batchers={"even": {"batch_size": 10, "batch_timeout": 0.01}}, context=me)
    assert (await pyotp.receive(lambda m: m[0] == "batch")) == ("batch", "even", 3, "timeout")
    await Pipeline.stop(pid)


async def test_crashed_processor_is_restarted_and_its_messages_are_not_acked():
    me = pyotp.self()
    pid = await Pipe.start_link(producer={"module": (IterableProducer, {"ack_to": me})},
                                processors={"default": {"concurrency": 1, "max_demand": 1, "min_demand": 0}},
                                context=me)
    proc = pyotp.whereis(Pipeline.stage_names(pid)[1])
    ref = pyotp.monitor(proc)
    Pipeline.push_messages(pid, ["a", "crash", "b"])
    ok, _ = await acks(1)
    assert ok == ["a"]
    await pyotp.receive(lambda m: type(m) is tuple and m[0] == "DOWN" and m[1] == ref)
    ok, _ = await acks(1)               # the restarted processor subscribes and goes on
    assert ok == ["b"]
    assert Pipeline.counters(pid)["in_flight"] == 1      # "crash": never acknowledged
    await Pipeline.stop(pid)


async def test_rate_limiting_holds_messages_until_the_next_interval():
    me = pyotp.self()
    pid = await Pipe.start_link(producer={"module": (IterableProducer, {"items": ["x"] * 6, "ack_to": me}),
                                          "rate_limiting": {"allowed_messages": 4, "interval": 0.3}},
                                processors={"default": {"concurrency": 1}}, context=me)
    await acks(4)
    assert Pipeline.counters(pid)["received"] == 4      # the other 2 wait for the next interval
    await acks(2)
    await Pipeline.stop(pid)


async def test_file_producer_tails_a_growing_file(tmp_path):
    me = pyotp.self()
    path = tmp_path / "log.txt"
    path.write_bytes(b"one\ntwo\nthr")
    pid = await Pipe.start_link(producer={"module": (FileProducer, {"path": str(path), "poll": 0.01,
                                                                    "ack_to": me})},
                                processors={"default": {"concurrency": 1}}, context=me)
    ok, _ = await acks(2)
    assert ok == [b"one", b"two"]
    with open(path, "ab") as f:
        f.write(b"ee\nfour\n")
    ok, _ = await acks(2)
    assert ok == [b"three", b"four"]
    producer = Pipeline.producer_names(pid)[0]
    assert await pyotp.GenStage.call(producer, "committed") == path.stat().st_size
    await Pipeline.stop(pid)


async def test_bad_options():
    with pytest.raises(PipelineError, match="unknown processors default option 'concurency'"):
        await Pipe.start_link(producer={"module": (IterableProducer, {})},
                              processors={"default": {"concurency": 1}})
    with pytest.raises(PipelineError, match="producer module"):
        await Pipe.start_link(producer={"module": IterableProducer}, processors={"default": {}})
    with pytest.raises(PipelineError, match="batch_size"):
        await Pipe.start_link(producer={"module": (IterableProducer, {})}, processors={"default": {}},
                              batchers={"b": {"batch_size": 0}})


def test_message_helpers():
    m = Message(1).update_data(lambda x: x + 1).put_batch_key("k")
    assert (m.data, m.batch_key, m.status) == (2, "k", "ok")
    assert m.failed("why").status == ("failed", "why")


async def test_telemetry_events_per_processor_batch_and_per_batch():
    me = pyotp.self()
    seen = []
    pyotp.telemetry.attach_many("pipe-test", [("pyotp", "pipeline", "processor", "stop"),
                                              ("pyotp", "pipeline", "batch_processor", "stop")],
                                lambda ev, m, md, cfg: seen.append((ev[2], m, md)), None)
    try:
        pid = await Pipe.start_link(producer={"module": (IterableProducer, {"items": [2, 4, 7, 8], "ack_to": me})},
                                    processors={"default": {"concurrency": 1}},
                                    batchers={"even": {"batch_size": 3}}, context=me, name="telepipe")
        await acks(4)
        await Pipeline.stop(pid)
    finally:
        pyotp.telemetry.detach("pipe-test")
    procs = [(m, md) for kind, m, md in seen if kind == "processor"]
    batches = [(m, md) for kind, m, md in seen if kind == "batch_processor"]
    assert sum(m["count"] for m, _ in procs) == 4 and sum(m["failed"] for m, _ in procs) == 1   # 7
    assert all(md == {"pipeline": "telepipe", "processor": "default", "index": 0} for _, md in procs)
    assert [m["size"] for m, _ in batches] == [3]
    assert batches[0][1]["batcher"] == "even" and batches[0][1]["trigger"] == "size"
    assert all(m["duration"] >= 0 for m, _ in procs + batches)
