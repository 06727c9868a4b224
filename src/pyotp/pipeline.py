"""Pipeline: Broadway-style data ingestion on GenStage.

A pipeline is a supervised topology of stages::

    producer(s) --> processors (concurrency N) --> batcher(s) --> batch processors
     (module)        handle_message/3               batch_size,     handle_batch/4
        ^                                           batch_timeout        |
        +---------------- acknowledgements (successful, failed) --------+

Subclass ``Pipeline``, define ``handle_message(processor, message, context)`` (returns the
message, possibly ``message.failed(reason)`` or ``message.put_batcher(name)``) and, with
batchers, ``handle_batch(batcher, messages, batch_info, context)``; optionally
``handle_failed(messages, context)``. Then::

    pid = await MyPipeline.start_link(
        producer={"module": (IterableProducer, {"items": range(100)}), "concurrency": 1,
                  "rate_limiting": {"allowed_messages": 1000, "interval": 1.0}},
        processors={"default": {"concurrency": 4, "max_demand": 10}},
        batchers={"default": {"batch_size": 100, "batch_timeout": 1.0, "concurrency": 2}},
        context=None, name="my_pipeline")
    await Pipeline.stop(pid)      # graceful drain: every in-flight message is handled, acked

Every message is acknowledged exactly once to its producer's acknowledger, as successful or
failed, by the last stage that handles it: an exception in ``handle_message`` or
``handle_batch`` fails those messages only, never the pipeline. A stage that crashes is
restarted by the pipeline's supervisor (``rest_for_one``: the stages after it restart too);
the messages it held are not acknowledged (a broker redelivers them). ``Pipeline.stop``
drains: producers stop producing, every message already produced is handled and
acknowledged, then the stages exit. Counters (``Pipeline.counters``): received, processed,
failed, acked, batches, in_flight. Telemetry events (``pyotp.telemetry.attach``):
``("pyotp", "pipeline", "processor", "stop")`` per batch of messages a processor handled,
measurements ``{"duration", "count", "failed"}``, metadata ``{"pipeline", "processor",
"index"}``; ``("pyotp", "pipeline", "batch_processor", "stop")`` per batch,
``{"duration", "size", "failed"}``, ``{"pipeline", "batcher", "batch_key", "trigger"}``.

Producers shipped: ``IterableProducer`` (an iterable, plus messages pushed with
``Pipeline.push_messages``), ``FileProducer`` (tails a growing file, one message per line)
and ``RabbitMQProducer`` (an AMQP queue through aio-pika). A producer is a GenStage
producer module whose events are ``Message`` objects; ``prepare_for_draining(state)``
(optional) is called before a drain. Durations are seconds.

>>> class Upcase(Pipeline):
...     def handle_message(self, processor, message, context):
...         return message.update_data(str.upper)
>>> async def main():
...     got = []
...     pid = await Upcase.start_link(
...         producer={"module": (IterableProducer, {"items": ["a", "b"], "ack_to": pyotp.self()})},
...         processors={"default": {"concurrency": 2}})
...     while len(got) < 2:
...         _, ok, failed = await pyotp.receive(lambda m: m[0] == "ack")
...         got += ok
...     await Pipeline.stop(pid)
...     return sorted(got)
>>> pyotp.run(main)
['A', 'B']
"""
from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

from . import _core, telemetry
from ._core import Pid
from .gen_stage import GenStage, GenStageError, PartitionDispatcher
from .supervisor import Supervisor

_log = logging.getLogger("pyotp")

__all__ = ["Pipeline", "Message", "BatchInfo", "Acknowledger", "NoopAcknowledger",
           "IterableProducer", "FileProducer", "RabbitMQProducer", "PipelineError"]


class PipelineError(ValueError):
    """A malformed pipeline option (the message names it)."""


# ---------------------------------------------------------------------------------------
# Messages and acknowledgement

class Acknowledger:
    """How a producer learns the fate of its messages (Broadway.Acknowledger). A message's
    ``acknowledger`` is ``(acknowledger, ack_ref, ack_data)``; the pipeline calls
    ``acknowledger.ack(ack_ref, successful, failed)`` once per group of messages sharing
    the acknowledger and ack_ref, from the stage that handled them last."""

    def ack(self, ack_ref: Any, successful: List["Message"], failed: List["Message"]) -> None:
        raise NotImplementedError


class NoopAcknowledger(Acknowledger):
    """Acknowledges nothing (messages built from plain data)."""

    def ack(self, ack_ref: Any, successful: List["Message"], failed: List["Message"]) -> None:
        return None


_NOOP = NoopAcknowledger()


class Message:
    """One message through a pipeline (Broadway.Message).

    >>> m = Message("x").update_data(str.upper).put_batcher("s3")
    >>> (m.data, m.batcher, m.status)
    ('X', 's3', 'ok')
    """
    __slots__ = ("data", "metadata", "acknowledger", "batcher", "batch_key", "status")

    def __init__(self, data: Any, metadata: Optional[Dict[str, Any]] = None,
                 acknowledger: Tuple[Any, Any, Any] = (_NOOP, None, None)) -> None:
        self.data = data
        self.metadata = metadata if metadata is not None else {}
        self.acknowledger = acknowledger
        self.batcher = "default"
        self.batch_key: Any = "default"
        self.status: Any = "ok"

    def failed(self, reason: Any) -> "Message":
        """Mark the message failed (it is acknowledged as failed; processing continues)."""
        self.status = ("failed", reason)
        return self

    def put_batcher(self, batcher: str) -> "Message":
        self.batcher = batcher
        return self

    def put_batch_key(self, key: Any) -> "Message":
        self.batch_key = key
        return self

    def put_data(self, data: Any) -> "Message":
        self.data = data
        return self

    def update_data(self, fn: Callable[[Any], Any]) -> "Message":
        self.data = fn(self.data)
        return self

    def __repr__(self) -> str:
        return "Message(%r, status=%r)" % (self.data, self.status)


class BatchInfo:
    """What handle_batch is told about its batch."""
    __slots__ = ("batcher", "batch_key", "size", "trigger")

    def __init__(self, batcher: str, batch_key: Any, size: int, trigger: str) -> None:
        self.batcher, self.batch_key, self.size, self.trigger = batcher, batch_key, size, trigger

    def __repr__(self) -> str:
        return "BatchInfo(%r, %r, size=%d, trigger=%r)" % (self.batcher, self.batch_key, self.size, self.trigger)


def ack_messages(successful: List[Message], failed: List[Message]) -> None:
    """Group the messages by (acknowledger, ack_ref) and call each acknowledger once."""
    groups: Dict[Tuple[int, Any], List[Any]] = {}
    for lst, i in ((successful, 0), (failed, 1)):
        for m in lst:
            ackr, ref, _ = m.acknowledger
            key = (id(ackr), ref)
            g = groups.get(key)
            if g is None:
                groups[key] = g = [ackr, ref, [], []]
            g[2 + i].append(m)
    for ackr, ref, ok, bad in groups.values():
        try:
            ackr.ack(ref, ok, bad)
        except Exception:
            _log.exception("pipeline acknowledger %r failed", ackr)


class _Counters:
    __slots__ = ("received", "processed", "failed", "acked", "batches", "name")

    def __init__(self, name: Any = None) -> None:
        self.received = self.processed = self.failed = self.acked = self.batches = 0
        self.name = name          # the pipeline's name (telemetry metadata)

    def snapshot(self) -> Dict[str, int]:
        d = {k: getattr(self, k) for k in self.__slots__ if k != "name"}
        d["in_flight"] = self.received - self.acked
        return d


_pipelines: Dict[Any, Dict[str, Any]] = {}     # supervisor pid -> topology info

# telemetry events (Broadway's [:broadway, :processor | :batch_processor, :stop])
PROCESSOR_STOP = ("pyotp", "pipeline", "processor", "stop")
BATCH_STOP = ("pyotp", "pipeline", "batch_processor", "stop")


def _ack(counters: _Counters, ok: List[Message], bad: List[Message]) -> None:
    counters.acked += len(ok) + len(bad)
    counters.failed += len(bad)
    ack_messages(ok, bad)


# ---------------------------------------------------------------------------------------
# Stages

def _drain_step(stage: Any, live: int) -> bool:
    """A draining stage with no live producers left: once nothing waits in it, cancel its
    consumers (they got every event first: messages are ordered) and say it may stop."""
    srv = stage._stage
    if live > 0 or srv.pc_queue:
        return False
    if srv.buffer:
        GenStage.async_info(srv.me, "$pipeline_drained")
        return False
    GenStage.cast(srv.me, ("$gen_stage", ("cancel_consumers", "shutdown")))
    return True


class _ProducerStage(GenStage):
    """Wraps a user producer module: rate limiting, draining, counting."""

    def init(self, arg: Any) -> Any:
        (mod_cls, mod_arg), rate, counters = arg
        _core.process_flag("trap_exit", True)   # the supervisor's shutdown waits behind acks
        self.inner = mod_cls()
        self.counters = counters
        self.draining = False
        self.held: Deque[Any] = deque()
        self.rate = rate
        r = self.inner.init(mod_arg)
        if type(r) is not tuple or r[0] != "producer":
            return ("stop", ("bad_return_value", r))
        if rate is not None:
            self.allowance = rate["allowed_messages"]
            _core.send_after(_core.self(), "$pipeline_tick", rate["interval"])
        return ("producer", r[1]) + tuple(r[2:])

    def _out(self, r: Any) -> Any:
        if type(r) is tuple and r[0] == "noreply" and len(r) >= 3 and type(r[1]) is list and r[1]:
            events = [e if isinstance(e, Message) else Message(e) for e in r[1]]
            if self.rate is not None:
                if self.held or len(events) > self.allowance:
                    self.held.extend(events)
                    events = self._release()
                else:
                    self.allowance -= len(events)
                    self.counters.received += len(events)
            else:
                self.counters.received += len(events)
            return ("noreply", events) + tuple(r[2:])
        return r

    def _release(self) -> List[Any]:
        k = min(self.allowance, len(self.held))
        self.allowance -= k
        self.counters.received += k
        return [self.held.popleft() for _ in range(k)]

    def handle_demand(self, demand: int, state: Any) -> Any:
        if self.draining:
            return ("noreply", [], state)
        return self._out(self.inner.handle_demand(demand, state))

    def handle_info(self, msg: Any, state: Any) -> Any:
        if msg == "$pipeline_tick":
            self.allowance = self.rate["allowed_messages"]
            _core.send_after(_core.self(), "$pipeline_tick", self.rate["interval"])
            out = self._release()
            if self.draining and not self.held:
                GenStage.async_info(_core.self(), "$pipeline_drained")
            return ("noreply", out, state)
        if msg == "$pipeline_drained":
            if self.held:
                return ("noreply", [], state)     # the next tick releases the rest
            GenStage.cast(_core.self(), ("$gen_stage", ("cancel_consumers", "shutdown")))
            return ("noreply", [], state)
        r = self.inner.handle_info(msg, state)     # EXITs of linked helpers too (pumps)
        if self.draining:
            return ("noreply", [], r[-1] if type(r) is tuple and r[0] == "noreply" else state)
        return self._out(r)

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if req == "$pipeline_drain":
            self.draining = True
            prep = getattr(self.inner, "prepare_for_draining", None)
            out: List[Any] = []
            if prep is not None:
                r = prep(state)
                if type(r) is tuple and r[0] == "noreply":
                    state = r[2]
                    out = self._out(r)[1]
            GenStage.async_info(_core.self(), "$pipeline_drained")
            return ("reply", "ok", out, state)
        return self.inner.handle_call(req, from_, state)

    def handle_cast(self, req: Any, state: Any) -> Any:
        return self._out(self.inner.handle_cast(req, state))

    def terminate(self, reason: Any, state: Any) -> Any:
        t = getattr(self.inner, "terminate", None)
        return t(reason, state) if t is not None else "ok"


class _ProcessorStage(GenStage):
    def init(self, arg: Any) -> Any:
        cls, name, index, producers, opts, batchers, context, counters = arg
        self.mod = cls()
        self.name = name
        self.index = index
        self.context = context
        self.counters = counters
        self.batchers = batchers
        self.live = len(producers)
        self.done = False
        sub = {"max_demand": opts.get("max_demand", 10), "min_demand": opts.get("min_demand"),
               "cancel": "temporary"}
        if sub["min_demand"] is None:
            sub["min_demand"] = sub["max_demand"] // 2
        subs = [(p, sub) for p in producers]
        if batchers:
            disp = (PartitionDispatcher, {"partitions": list(batchers), "hash": self._route})
            return ("producer_consumer", None, {"subscribe_to": subs, "dispatcher": disp})
        return ("consumer", None, {"subscribe_to": subs})

    def _route(self, m: Message) -> Any:
        return (m, m.batcher)

    def handle_events(self, events: List[Message], from_: Any, state: Any) -> Any:
        t0 = time.perf_counter()
        handle = self.mod.handle_message
        ok: List[Message] = []
        bad: List[Message] = []
        for m in events:
            try:
                m2 = handle(self.name, m, self.context)
                if not isinstance(m2, Message):
                    raise PipelineError("handle_message must return a Message, got %r" % (m2,))
                m = m2
            except Exception as e:
                _log.error("pipeline processor %s: handle_message failed for %r: %r", self.name, m, e)
                m.failed(e)
            if m.status == "ok" and (not self.batchers or m.batcher in self.batchers):
                ok.append(m)
            else:
                if m.status == "ok":
                    m.failed(("unknown_batcher", m.batcher))
                bad.append(m)
        self.counters.processed += len(events)
        nbad = len(bad)
        if bad:
            bad = self._failed(bad)
        if self.batchers:
            if bad:
                _ack(self.counters, [], bad)
            out: List[Message] = ok
        else:
            _ack(self.counters, ok, bad)
            out = []
        if self.live == 0 and not self.done:
            GenStage.async_info(_core.self(), "$pipeline_drained") if self.batchers else None
        telemetry.execute(PROCESSOR_STOP, {"duration": time.perf_counter() - t0, "count": len(events),
                                           "failed": nbad},
                          {"pipeline": self.counters.name, "processor": self.name, "index": self.index})
        return ("noreply", out, state)

    def _failed(self, bad: List[Message]) -> List[Message]:
        hf = getattr(self.mod, "handle_failed", None)
        if hf is None:
            return bad
        try:
            r = hf(bad, self.context)
            return list(r) if r is not None else bad
        except Exception as e:
            _log.error("pipeline handle_failed raised %r", e)
            return bad

    def handle_cancel(self, reason: Any, from_: Any, state: Any) -> Any:
        if reason != ("cancel", "shutdown"):      # a producer crashed: restart with it
            return ("stop", reason[1], state)
        self.live -= 1
        return self._maybe_stop(state)

    def _maybe_stop(self, state: Any) -> Any:
        if self.live > 0 or self.done:
            return ("noreply", [], state)
        if not self.batchers:
            self.done = True
            return ("stop", "normal", state)
        if _drain_step(self, self.live):
            self.done = True
            GenStage.cast(_core.self(), "$pipeline_stop")
        return ("noreply", [], state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if msg == "$pipeline_drained":
            return self._maybe_stop(state)
        return ("noreply", [], state)

    def handle_cast(self, msg: Any, state: Any) -> Any:
        return ("stop", "normal", state)


class _BatcherStage(GenStage):
    """Groups messages by batch key into batches of batch_size, or smaller when
    batch_timeout passes; emits each batch (a list) as one event."""

    def init(self, arg: Any) -> Any:
        name, processors, opts = arg
        self.name = name
        self.size = opts.get("batch_size", 100)
        self.timeout = opts.get("batch_timeout", 1.0)
        self.live = len(processors)
        self.pending: Dict[Any, List[Message]] = {}
        self.timers: Dict[Any, Any] = {}
        self.done = False
        sub = {"max_demand": max(self.size, 2), "partition": name, "cancel": "temporary"}
        return ("producer_consumer", None, {"subscribe_to": [(p, sub) for p in processors]})

    def handle_events(self, events: List[Message], from_: Any, state: Any) -> Any:
        out = []
        for m in events:
            key = m.batch_key
            b = self.pending.get(key)
            if b is None:
                self.pending[key] = b = []
                self.timers[key] = _core.send_after(_core.self(), ("$pipeline_timeout", key), self.timeout)
            b.append(m)
            if len(b) >= self.size:
                out.append(self._take(key, "size"))
        return ("noreply", out, state)

    def _take(self, key: Any, trigger: str) -> Tuple[Any, ...]:
        b = self.pending.pop(key)
        t = self.timers.pop(key, None)
        if t is not None:
            _core.cancel_timer(t)
        return (BatchInfo(self.name, key, len(b), trigger), b)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and len(msg) == 2 and msg[0] == "$pipeline_timeout":
            if msg[1] in self.pending:
                return ("noreply", [self._take(msg[1], "timeout")], state)
            return ("noreply", [], state)
        if msg == "$pipeline_drained":
            return self._maybe_stop(state)
        return ("noreply", [], state)

    def handle_cancel(self, reason: Any, from_: Any, state: Any) -> Any:
        if reason != ("cancel", "shutdown"):
            return ("stop", reason[1], state)
        self.live -= 1
        if self.live == 0:
            out = [self._take(k, "flush") for k in list(self.pending)]
            GenStage.async_info(_core.self(), "$pipeline_drained")
            return ("noreply", out, state)
        return ("noreply", [], state)

    def _maybe_stop(self, state: Any) -> Any:
        if not self.done and _drain_step(self, self.live):
            self.done = True
            GenStage.cast(_core.self(), "$pipeline_stop")
        return ("noreply", [], state)

    def handle_cast(self, msg: Any, state: Any) -> Any:
        return ("stop", "normal", state)


class _BatchProcessorStage(GenStage):
    def init(self, arg: Any) -> Any:
        cls, batcher, context, counters = arg
        self.mod = cls()
        self.context = context
        self.counters = counters
        return ("consumer", None, {"subscribe_to": [(batcher, {"max_demand": 1, "min_demand": 0,
                                                               "cancel": "temporary"})]})

    def handle_events(self, events: List[Any], from_: Any, state: Any) -> Any:
        for info, batch in events:
            t0 = time.perf_counter()
            try:
                r = self.mod.handle_batch(info.batcher, batch, info, self.context)
                r = list(r)
            except Exception as e:
                _log.error("pipeline batcher %s: handle_batch failed: %r", info.batcher, e)
                r = [m.failed(e) for m in batch]
            ok = [m for m in r if m.status == "ok"]
            bad = [m for m in r if m.status != "ok"]
            if bad:
                hf = getattr(self.mod, "handle_failed", None)
                if hf is not None:
                    try:
                        bad = list(hf(bad, self.context))
                    except Exception as e:
                        _log.error("pipeline handle_failed raised %r", e)
            self.counters.batches += 1
            _ack(self.counters, ok, bad)
            telemetry.execute(BATCH_STOP, {"duration": time.perf_counter() - t0, "size": len(batch),
                                           "failed": len(bad)},
                              {"pipeline": self.counters.name, "batcher": info.batcher,
                               "batch_key": info.batch_key, "trigger": info.trigger})
        return ("noreply", [], state)

    def handle_cancel(self, reason: Any, from_: Any, state: Any) -> Any:
        return ("stop", "normal" if reason == ("cancel", "shutdown") else reason[1], state)


# ---------------------------------------------------------------------------------------
# The API

_counter = itertools.count()


def _check(d: Any, allowed: Tuple[str, ...], what: str) -> Dict[str, Any]:
    if not isinstance(d, dict):
        raise PipelineError("%s must be a dict, got %r" % (what, d))
    for k in d:
        if k not in allowed:
            raise PipelineError("unknown %s option %r (allowed: %s)" % (what, k, ", ".join(allowed)))
    return d


def _pos(d: Dict[str, Any], key: str, default: Any, what: str, number: bool = False) -> Any:
    v = d.get(key, default)
    ok = (isinstance(v, (int, float)) and v > 0) if number else (type(v) is int and v > 0)
    if not ok:
        raise PipelineError("%s %s must be %s > 0, got %r" % (what, key, "a number" if number else "an int", v))
    return v


class Pipeline:
    """Base class of pipelines, and the API (see the module documentation)."""

    def handle_message(self, processor: str, message: Message, context: Any) -> Message:
        raise NotImplementedError("%s must define handle_message/3" % type(self).__name__)

    def handle_batch(self, batcher: str, messages: List[Message], batch_info: BatchInfo,
                     context: Any) -> List[Message]:
        raise NotImplementedError("%s uses batchers but defines no handle_batch/4" % type(self).__name__)

    @classmethod
    async def start_link(cls, *, producer: Dict[str, Any], processors: Dict[str, Any],
                         batchers: Optional[Dict[str, Any]] = None, context: Any = None,
                         name: Optional[str] = None, max_restarts: int = 3,
                         max_seconds: float = 5) -> Pid:
        """Start the pipeline's supervision tree linked to the caller; returns the
        supervisor's pid. Raises PipelineError for bad options.

        >>> class MyPipeline(Pipeline):
        ...     def handle_message(self, processor, message, context):
        ...         return message
        >>> data = range(10)
        >>> pid = await MyPipeline.start_link(producer={"module": (IterableProducer, {"items": data})},
        ...                                   processors={"default": {"concurrency": 2}})
        """
        _check(producer, ("module", "concurrency", "rate_limiting"), "producer")
        mod = producer.get("module")
        if not (isinstance(mod, tuple) and len(mod) == 2 and isinstance(mod[0], type)):
            raise PipelineError("producer module must be (ProducerClass, arg), got %r" % (mod,))
        pconc = _pos(producer, "concurrency", 1, "producer")
        rate = producer.get("rate_limiting")
        if rate is not None:
            _check(rate, ("allowed_messages", "interval"), "rate_limiting")
            rate = {"allowed_messages": _pos(rate, "allowed_messages", None, "rate_limiting"),
                    "interval": _pos(rate, "interval", None, "rate_limiting", number=True)}
        _check(processors, ("default",), "processors")
        popts = _check(processors.get("default", {}), ("concurrency", "max_demand", "min_demand"),
                       "processors default")
        conc = _pos(popts, "concurrency", os.cpu_count() or 1, "processors")
        _pos(popts, "max_demand", 10, "processors")
        batchers = dict(batchers or {})
        for bname, b in batchers.items():
            _check(b, ("concurrency", "batch_size", "batch_timeout"), "batcher %r" % (bname,))
            _pos(b, "concurrency", 1, "batcher %r" % (bname,))
            _pos(b, "batch_size", 100, "batcher %r" % (bname,))
            _pos(b, "batch_timeout", 1.0, "batcher %r" % (bname,), number=True)
        base = name or "pipeline_%d_%d" % (os.getpid(), next(_counter))
        counters = _Counters(base)
        pnames = ["%s.Producer_%d" % (base, i) for i in range(pconc)]
        cnames = ["%s.Processor_default_%d" % (base, i) for i in range(conc)]
        children: List[Any] = []
        for pn in pnames:
            children.append({"id": pn, "restart": "transient",
                             "start": (_ProducerStage.start_link, ((mod, rate, counters),), {"name": pn})})
        for i, cn in enumerate(cnames):
            children.append({"id": cn, "restart": "transient", "start": (
                _ProcessorStage.start_link,
                ((cls, "default", i, pnames, popts, list(batchers), context, counters),), {"name": cn})})
        terminals: List[str] = [] if batchers else list(cnames)
        for bname, b in batchers.items():
            bn = "%s.Batcher_%s" % (base, bname)
            children.append({"id": bn, "restart": "transient",
                             "start": (_BatcherStage.start_link, ((bname, cnames, b),), {"name": bn})})
            for i in range(b.get("concurrency", 1)):
                bpn = "%s.BatchProcessor_%s_%d" % (base, bname, i)
                terminals.append(bpn)
                children.append({"id": bpn, "restart": "transient", "start": (
                    _BatchProcessorStage.start_link, ((cls, bn, context, counters),), {"name": bpn})})
        sup = await Supervisor.start_link(children, strategy="rest_for_one", max_restarts=max_restarts,
                                          max_seconds=max_seconds,
                                          name=name)
        assert sup is not None        # the list form never returns "ignore"
        _pipelines[sup] = {"producers": pnames, "processors": cnames, "terminals": terminals,
                           "counters": counters, "names": [c["id"] for c in children]}
        return sup

    @staticmethod
    def _info(pipeline: Any) -> Dict[str, Any]:
        pid = pipeline if isinstance(pipeline, Pid) else _core.whereis(pipeline)
        info = _pipelines.get(pid)
        if info is None:
            raise PipelineError("%r is not a running pipeline" % (pipeline,))
        return info

    @staticmethod
    def counters(pipeline: Any) -> Dict[str, int]:
        """received, processed, failed, acked, batches, in_flight (received - acked).

        >>> class MyPipeline(Pipeline):
        ...     def handle_message(self, processor, message, context):
        ...         return message
        >>> pid = await MyPipeline.start_link(producer={"module": (IterableProducer, {"items": []})},
        ...                                   processors={"default": {"concurrency": 1}})
        >>> Pipeline.counters(pid)["acked"]
        0
        """
        counters: _Counters = Pipeline._info(pipeline)["counters"]
        return counters.snapshot()

    @staticmethod
    def producer_names(pipeline: Any) -> List[str]:
        """The registered names of the pipeline's producer stages."""
        return list(Pipeline._info(pipeline)["producers"])

    @staticmethod
    def stage_names(pipeline: Any) -> List[str]:
        """The registered names of all its stages, in start order."""
        return list(Pipeline._info(pipeline)["names"])

    @staticmethod
    def push_messages(pipeline: Any, data: Iterable[Any]) -> None:
        """Hand data to the first producer (an ``IterableProducer``), as Broadway's
        ``test_message``: each item becomes a message acknowledged like the others."""
        GenStage.cast(Pipeline._info(pipeline)["producers"][0], ("$push", list(data)))

    @staticmethod
    async def stop(pipeline: Any, timeout: Optional[float] = 30.0) -> str:
        """Drain and stop: producers stop producing; every message already produced is
        handled and acknowledged; then the whole tree stops. "ok".

        >>> class MyPipeline(Pipeline):
        ...     def handle_message(self, processor, message, context):
        ...         return message
        >>> pid = await MyPipeline.start_link(producer={"module": (IterableProducer, {"items": [1, 2]})},
        ...                                   processors={"default": {"concurrency": 1}})
        >>> await Pipeline.stop(pid)
        'ok'
        """
        info = Pipeline._info(pipeline)
        sup = pipeline if isinstance(pipeline, Pid) else _core.whereis(pipeline)
        refs = {}
        for t in info["terminals"]:
            pid = _core.whereis(t)
            if pid is not None:
                refs[_core.monitor(pid)] = t
        for p in info["producers"]:
            try:
                await GenStage.call(p, "$pipeline_drain", timeout)
            except _core.Exit:
                pass
        while refs:
            m = await _core.receive(lambda m: type(m) is tuple and len(m) == 5 and m[0] == "DOWN"
                                    and m[1] in refs, timeout)
            del refs[m[1]]
        _pipelines.pop(sup, None)
        await Supervisor.stop(sup, "normal", timeout)
        return "ok"


# ---------------------------------------------------------------------------------------
# Producers

class _PidAcknowledger(Acknowledger):
    """Sends ("$ack", successful, failed) to the producer that made the messages."""

    def ack(self, ack_ref: Any, successful: List[Message], failed: List[Message]) -> None:
        _core.send(ack_ref, ("$ack", successful, failed))


_PID_ACK = _PidAcknowledger()


class IterableProducer(GenStage):
    """A producer of the items of an iterable, plus pushed items
    (``Pipeline.push_messages``). Options: ``items`` (default none), ``ack_to`` (a pid
    sent ``("ack", [data...], [(data, reason)...])`` for each acknowledgement).
    Acknowledged counts are in ``stats``."""

    def init(self, opts: Any) -> Any:
        opts = dict(opts or {})
        self.it = iter(opts.pop("items", ()))
        self.ack_to = opts.pop("ack_to", None)
        if opts:
            raise PipelineError("unknown IterableProducer options %r" % (sorted(opts),))
        self.queue: Deque[Any] = deque()
        self.wanted = 0
        self.me = _core.self()
        self.acked = [0, 0]
        return ("producer", None)

    def _take(self, n: int) -> List[Message]:
        ack = (_PID_ACK, self.me, None)
        out = [Message(d, None, ack) for d in itertools.islice(self.it, n)]
        while len(out) < n and self.queue:
            out.append(Message(self.queue.popleft(), None, ack))
        return out

    def handle_demand(self, demand: int, state: Any) -> Any:
        self.wanted += demand
        out = self._take(self.wanted)
        self.wanted -= len(out)
        return ("noreply", out, state)

    def handle_cast(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and msg[0] == "$push":
            self.queue.extend(msg[1])
            out = self._take(self.wanted)
            self.wanted -= len(out)
            return ("noreply", out, state)
        return ("noreply", [], state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "$ack":
            self.acked[0] += len(msg[1])
            self.acked[1] += len(msg[2])
            if self.ack_to is not None:
                _core.send(self.ack_to, ("ack", [m.data for m in msg[1]],
                                         [(m.data, m.status[1]) for m in msg[2]]))
        return ("noreply", [], state)


class FileProducer(GenStage):
    """Tails a file: one message per complete line (bytes without the newline), from the
    start (``from_start=True``) or the end; at the end of the file it looks again every
    ``poll`` seconds (0.1), so lines appended later are read too. ``metadata["offset"]`` is
    the line's byte offset; acknowledged lines advance ``committed``, the offset below
    which every line was acknowledged (where a restart may resume: ``start_offset``)."""

    def init(self, opts: Any) -> Any:
        opts = dict(opts or {})
        path = opts.pop("path", None)
        if path is None:
            raise PipelineError("FileProducer needs path=")
        self.poll = opts.pop("poll", 0.1)
        from_start = opts.pop("from_start", True)
        start = opts.pop("start_offset", None)
        self.ack_to = opts.pop("ack_to", None)
        if opts:
            raise PipelineError("unknown FileProducer options %r" % (sorted(opts),))
        self.f = open(path, "rb")
        if start is not None:
            self.f.seek(start)
        elif not from_start:
            self.f.seek(0, 2)
        self.pos = self.f.tell()
        self.committed = self.pos
        self.acked: Dict[int, int] = {}       # offset -> next offset, acknowledged beyond committed
        self.wanted = 0
        self.polling = False
        self.me = _core.self()
        return ("producer", None)

    def _read(self) -> List[Message]:
        out: List[Message] = []
        f = self.f
        ack = (_PID_ACK, self.me, None)
        while len(out) < self.wanted:
            line = f.readline()
            if not line:
                break
            if not line.endswith(b"\n"):      # a line still being written: read it later
                f.seek(self.pos)
                break
            out.append(Message(line[:-1], {"offset": self.pos, "next": self.pos + len(line)}, ack))
            self.pos += len(line)
        self.wanted -= len(out)
        if self.wanted > 0 and not self.polling:
            self.polling = True
            _core.send_after(self.me, "$poll", self.poll)
        return out

    def handle_demand(self, demand: int, state: Any) -> Any:
        self.wanted += demand
        return ("noreply", self._read(), state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if msg == "$poll":
            self.polling = False
            return ("noreply", self._read() if self.wanted else [], state)
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "$ack":
            for m in itertools.chain(msg[1], msg[2]):
                self.acked[m.metadata["offset"]] = m.metadata["next"]
            while self.committed in self.acked:
                self.committed = self.acked.pop(self.committed)
            if self.ack_to is not None:
                _core.send(self.ack_to, ("ack", [m.data for m in msg[1]],
                                         [(m.data, m.status[1]) for m in msg[2]]))
        return ("noreply", [], state)

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if req == "committed":
            return ("reply", self.committed, [], state)
        return ("reply", ("error", "unknown_request"), [], state)

    def terminate(self, reason: Any, state: Any) -> Any:
        self.f.close()
        return "ok"


class _AmqpAcknowledger(Acknowledger):
    def ack(self, ack_ref: Any, successful: List[Message], failed: List[Message]) -> None:
        _core.send(ack_ref, ("$amqp_ack", [m.metadata["delivery_tag"] for m in successful],
                             [m.metadata["delivery_tag"] for m in failed]))


_AMQP_ACK = _AmqpAcknowledger()


async def _amqp_pump(stage: Pid, url: str, queue: str, prefetch: int, declare: bool,
                     requeue: bool) -> None:
    # Owns the AMQP connection: consumes with a prefetch window (the broker never has
    # more than `prefetch` unacknowledged messages out: that is the back-pressure), hands
    # messages to the producer stage, and settles the acks the pipeline sends back. When
    # the connection closes, for whatever reason, the broker requeues every message not
    # acked yet: a crash loses nothing, and a message is delivered again only if its ack
    # never reached the broker.
    import aio_pika
    me = _core.self()
    _core.process_flag("trap_exit", True)     # close the connection whatever stops the stage
    conn = await aio_pika.connect(url)
    try:
        def lost(_sender: Any = None, exc: Any = None, *_: Any) -> None:
            _core.send(me, ("$amqp_lost", repr(exc)))
        conn.close_callbacks.add(lost)
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=prefetch)
        q = await (channel.declare_queue(queue, durable=True) if declare
                   else channel.get_queue(queue, ensure=True))
        pending: Dict[int, Any] = {}

        async def on_message(m: Any) -> None:
            pending[m.delivery_tag] = m
            _core.send(stage, ("$amqp", m.body, m.delivery_tag, bool(m.redelivered), m.routing_key))

        tag = await q.consume(on_message)
        while True:
            msg = await _core.receive()
            if type(msg) is not tuple or not msg:
                continue
            op = msg[0]
            if op == "$amqp_ack":
                for t in msg[1]:
                    m = pending.pop(t, None)
                    if m is not None:
                        await m.ack()
                for t in msg[2]:
                    m = pending.pop(t, None)
                    if m is not None:
                        await m.reject(requeue=requeue)
            elif op == "$amqp_cancel":
                await q.cancel(tag)
                _core.send(stage, ("$amqp_cancelled",))
            elif op == "$amqp_close":
                return
            elif op == "$amqp_lost":
                raise _core.Exit(("amqp_connection_lost", msg[1]))
            elif op == "EXIT" and msg[1] == stage:
                return
    finally:
        if not conn.is_closed:
            conn.close_callbacks.discard(lost)
            await conn.close()


class RabbitMQProducer(GenStage):
    """Consumes a RabbitMQ queue through aio-pika (``pip install aio-pika``), as
    BroadwayRabbitMQ does. Options: ``url`` (``amqp://guest:guest@localhost/``), ``queue``
    (required), ``prefetch_count`` (50: the broker never has more than that many
    unacknowledged messages out, which bounds the producer's buffer: that is the
    back-pressure), ``declare`` (True: declare the queue durable; False: it must exist),
    ``on_failure`` (``"reject_and_requeue"``, Broadway's default, or ``"reject"``).

    Successful messages are acked, failed ones rejected (requeued by default: they come
    back with ``metadata["redelivered"]`` true). On ``Pipeline.stop`` the consumer is
    cancelled first, every message already received is handled and acknowledged, then
    the connection closes; the broker requeues what was never acknowledged (a crashed
    stage's messages), so nothing acknowledged is lost and a message is handled twice only
    if its ack was lost. If the connection is lost the producer stops with
    ``("amqp_connection_lost", why)`` and its supervisor restarts it (a new connection).
    ``metadata``: delivery_tag, redelivered, routing_key.

    With a broker at ``url`` (``MyPipeline`` a Pipeline subclass)::

        pid = await MyPipeline.start_link(
            producer={"module": (RabbitMQProducer, {"queue": "events", "url": url})},
            processors={"default": {"concurrency": 2}})
    """

    def init(self, opts: Any) -> Any:
        opts = dict(opts or {})
        queue = opts.pop("queue", None)
        if not queue or not isinstance(queue, str):
            raise PipelineError("RabbitMQProducer needs queue= (a queue name), got %r" % (queue,))
        url = opts.pop("url", "amqp://guest:guest@localhost/")
        prefetch = opts.pop("prefetch_count", 50)
        if type(prefetch) is not int or prefetch <= 0:
            raise PipelineError("RabbitMQProducer prefetch_count must be an int > 0, got %r" % (prefetch,))
        declare = opts.pop("declare", True)
        on_failure = opts.pop("on_failure", "reject_and_requeue")
        if on_failure not in ("reject", "reject_and_requeue"):
            raise PipelineError("on_failure must be 'reject' or 'reject_and_requeue', got %r" % (on_failure,))
        if opts:
            raise PipelineError("unknown RabbitMQProducer options %r" % (sorted(opts),))
        self.pump = _core.spawn_link(_amqp_pump, _core.self(), url, queue, prefetch, bool(declare),
                                     on_failure == "reject_and_requeue")
        # received messages go out at once; those without demand wait in the stage's
        # buffer (at most prefetch_count of them), which a drain empties before it stops
        return ("producer", None, {"buffer_size": "infinity"})

    def handle_demand(self, demand: int, state: Any) -> Any:
        return ("noreply", [], state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and len(msg) == 5 and msg[0] == "$amqp":
            meta = {"delivery_tag": msg[2], "redelivered": msg[3], "routing_key": msg[4]}
            return ("noreply", [Message(msg[1], meta, (_AMQP_ACK, self.pump, None))], state)
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "EXIT" and msg[1] == self.pump:
            return ("stop", msg[2] if msg[2] != "normal" else ("amqp_pump_exited", "normal"), state)
        return ("noreply", [], state)

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if req == "pump":
            return ("reply", self.pump, [], state)
        return ("reply", ("error", "unknown_request"), [], state)

    def prepare_for_draining(self, state: Any) -> Any:
        _core.send(self.pump, ("$amqp_cancel",))
        return ("noreply", [], state)

    def terminate(self, reason: Any, state: Any) -> Any:
        _core.send(self.pump, ("$amqp_close",))
        return "ok"
