"""GenStage: demand-driven stages that exchange events with back-pressure (Elixir's
``GenStage``).

A stage is a process of one of three types, chosen by ``init``:

* ``producer``: emits events when consumers ask (``handle_demand``);
* ``consumer``: subscribes to producers and receives their events (``handle_events``);
* ``producer_consumer``: both; it handles a batch only while its own consumers have
  demand, so a slow end of the pipeline slows every stage before it.

Consumers ask for events (``max_demand`` at first, then more each time ``max_demand -
min_demand`` of them were handled), producers never send more than was asked: a fast
producer cannot fill a slow consumer's mailbox. Demand and events are ordinary messages
(``("$gen_producer", (pid, ref), ("ask", n))``, ``("$gen_consumer", (pid, ref), [events])``,
the protocol of Elixir's GenStage), so stages work across pool and distributed nodes, and
events travel in lists: one message per batch, never one per event.

=============================================  ============================================
callback                                       accepted returns
=============================================  ============================================
init(arg)                                      ("producer" | "consumer" |
                                               "producer_consumer", state[, opts]) |
                                               "ignore" | ("stop", reason)
handle_demand(demand, state)        (producer) ("noreply", events, state[, extra]) |
handle_events(events, from_, state)            ("stop", reason, state)
handle_info / handle_cast(msg, state)
handle_continue(x, state) (may be ``async``)
handle_call(req, from_, state)                 ("reply", reply, events, state[, extra]) |
                                               the above | ("stop", reason, reply, state)
handle_subscribe(kind, opts, from_, state)     ("automatic" | "manual", state) |
                                               ("stop", reason, state)
handle_cancel(("cancel" | "down", reason),     ("noreply", events, state[, extra]) |
              from_, state)                    ("stop", reason, state)
terminate(reason, state)                       anything
=============================================  ============================================

``extra`` is ``"hibernate"`` or ``("continue", x)``; ``events`` is a list (a consumer must
return ``[]``). Callbacks are plain ``def`` except ``handle_continue``, which may be
``async def`` for work that has to await (the stage handles no message meanwhile).

Options returned by ``init`` (a dict): producers take ``dispatcher`` (a class or
``(class, opts)``; ``DemandDispatcher`` by default), ``buffer_size`` (10000 for a producer,
``"infinity"`` for a producer_consumer), ``buffer_keep`` (``"last"`` or ``"first"``) and
``demand`` (``"forward"`` or ``"accumulate"``); consumers take ``subscribe_to``, a list of
producers or ``(producer, opts)``. Subscription options: ``max_demand`` (1000),
``min_demand`` (75% of max), ``cancel`` (``"permanent"``, ``"transient"`` or
``"temporary"``), plus the dispatcher's (``partition``, ``selector``).

>>> class Counter(GenStage):
...     def init(self, n): return ("producer", n)
...     def handle_demand(self, demand, n):
...         return ("noreply", list(range(n, n + demand)), n + demand)
>>> class Printer(GenStage):
...     def init(self, producer):
...         return ("consumer", 0, {"subscribe_to": [(producer, {"max_demand": 10})]})
...     def handle_events(self, events, from_, seen):
...         return ("noreply", [], seen + len(events))
>>> async def main():
...     producer = await Counter.start_link(0)
...     return [e async for e in GenStage.stream([(producer, {"max_demand": 5})], take=7)]
>>> pyotp.run(main)
[0, 1, 2, 3, 4, 5, 6]
"""
from __future__ import annotations

import inspect
import itertools
import logging
import random
from collections import deque
from typing import (Any, AsyncIterator, Callable, Deque, Dict, Iterable, Iterator, List,
                    Optional, Tuple, Union, cast)

from . import _core
from ._core import Atom, BadArg, Exit, Pid, Reference
from .gen import start_result
from .gen_server import GenServer

_log = logging.getLogger("pyotp")

__all__ = ["GenStage", "DemandDispatcher", "BroadcastDispatcher", "PartitionDispatcher",
           "ConsumerSupervisor", "GenStageError"]

_PRODUCER = Atom("$gen_producer")
_CONSUMER = Atom("$gen_consumer")
_SUBSCRIBE = Atom("subscribe")
_ASK = Atom("ask")
_CANCEL = Atom("cancel")
_TYPES = ("producer", "consumer", "producer_consumer")
_CANCEL_MODES = ("permanent", "transient", "temporary")
_SUB_KEYS = ("to", "max_demand", "min_demand", "cancel", "partition", "selector")
_PRODUCER_OPTS = ("dispatcher", "buffer_size", "buffer_keep", "demand")


class GenStageError(ValueError):
    """A malformed GenStage option, subscription or demand (the message names it)."""


def _is_quiet(reason: Any) -> bool:
    return reason in ("normal", "shutdown") or (
        type(reason) is tuple and len(reason) == 2 and reason[0] == "shutdown")


def _pos_int(x: Any) -> bool:
    return type(x) is int and x > 0


def _name(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _check_sub_opts(opts: Any) -> Dict[str, Any]:
    """Validate subscription options (a dict, or a keyword list from the wire)."""
    if isinstance(opts, (list, tuple)):
        try:
            opts = {_name(k): v for k, v in opts}
        except (TypeError, ValueError):
            raise GenStageError("subscription options must be a dict, got %r" % (opts,)) from None
    if not isinstance(opts, dict):
        raise GenStageError("subscription options must be a dict, got %r" % (opts,))
    for k in opts:
        if k not in _SUB_KEYS:
            raise GenStageError("unknown subscription option %r (allowed: %s)" % (k, ", ".join(_SUB_KEYS)))
    mx = opts.get("max_demand", 1000)
    if not _pos_int(mx):
        raise GenStageError("max_demand must be an int > 0, got %r" % (mx,))
    mn = opts.get("min_demand", mx * 3 // 4)
    if type(mn) is not int or mn < 0 or mn >= mx:
        raise GenStageError("min_demand must be an int >= 0 and < max_demand (%d), got %r" % (mx, mn))
    cancel = _name(opts.get("cancel", "permanent"))
    if cancel not in _CANCEL_MODES:
        raise GenStageError("cancel must be one of %s, got %r" % (", ".join(_CANCEL_MODES), cancel))
    out = dict(opts)
    out.update(max_demand=mx, min_demand=mn, cancel=cancel)
    return out


def _wire_opts(opts: Dict[str, Any]) -> List[Tuple[Atom, Any]]:
    # Elixir sends a keyword list; atoms keep their type across the wire (a str would not)
    return [(Atom(k), Atom(v) if k == "cancel" else v) for k, v in opts.items() if k != "to"]


# ---------------------------------------------------------------------------------------
# Dispatchers
#
# A dispatcher lives inside a producer and decides which consumer gets which events. The
# interface is Elixir's GenStage.Dispatcher, with the state kept in the object:
#   subscribe(opts, from_) -> demand (raise GenStageError to refuse the subscription)
#   cancel(from_) -> demand;  ask(counter, from_) -> demand for handle_demand
#   dispatch(events, length) -> the events it could not send yet (the producer buffers them)

class Dispatcher:
    """Base class of dispatchers (Elixir's ``GenStage.Dispatcher`` behaviour)."""
    options: Tuple[str, ...] = ()

    def __init__(self, **opts: Any) -> None:
        for k in opts:
            if k not in self.options:
                raise GenStageError("unknown %s option %r (allowed: %s)"
                                    % (type(self).__name__, k, ", ".join(self.options) or "none"))
        self.me: Any = None             # the producer's pid, set when the stage starts

    def _send(self, pid: Any, ref: Any, events: List[Any]) -> None:
        _core.send(pid, (_CONSUMER, (self.me, ref), events))

    def subscribe(self, opts: Dict[str, Any], from_: Tuple[Any, Any]) -> int:
        raise NotImplementedError

    def cancel(self, from_: Tuple[Any, Any]) -> int:
        raise NotImplementedError

    def ask(self, counter: int, from_: Tuple[Any, Any]) -> int:
        raise NotImplementedError

    def dispatch(self, events: List[Any], length: int) -> List[Any]:
        raise NotImplementedError


class DemandDispatcher(Dispatcher):
    """Sends each batch to the consumer with the highest pending demand (the default).

    All consumers should share one ``max_demand``; a different one is logged, as Elixir
    does, since a greedy consumer would then starve the others.

    >>> d = DemandDispatcher()
    """
    options = ("shuffle_demands_on_first_dispatch", "max_demand")

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        self.demands: List[List[Any]] = []      # [counter, pid, ref], highest counter first
        self.pending = 0                        # demand already forwarded by cancelled consumers
        self.max: Optional[int] = opts.get("max_demand")
        self.shuffle = bool(opts.get("shuffle_demands_on_first_dispatch", False))

    def _add(self, entry: List[Any]) -> None:
        ds = self.demands
        i = 0
        n = len(ds)
        while i < n and ds[i][0] >= entry[0]:
            i += 1
        ds.insert(i, entry)

    def _pop(self, ref: Any) -> Optional[List[Any]]:
        for i, e in enumerate(self.demands):
            if e[2] == ref:
                del self.demands[i]
                return e
        return None

    def subscribe(self, opts: Dict[str, Any], from_: Tuple[Any, Any]) -> int:
        self.demands.append([0, from_[0], from_[1]])
        return 0

    def cancel(self, from_: Tuple[Any, Any]) -> int:
        e = self._pop(from_[1])
        if e is not None:
            self.pending += e[0]
        return 0

    def ask(self, counter: int, from_: Tuple[Any, Any]) -> int:
        if self.max is None:
            self.max = counter
        elif counter > self.max:
            _log.warning("GenStage producer DemandDispatcher expects a maximum demand of %d; "
                         "using different maximum demands will overload greedy consumers "
                         "(got demand %d from %r)", self.max, counter, from_[0])
        e = self._pop(from_[1])
        if e is None:
            return 0
        e[0] += counter
        self._add(e)
        sent = min(self.pending, counter)
        self.pending -= sent
        return counter - sent

    def dispatch(self, events: List[Any], length: int) -> List[Any]:
        if self.shuffle:
            self.shuffle = False
            random.shuffle(self.demands)
        ds = self.demands
        while length and ds:
            e = ds[0]
            counter = e[0]
            if counter == 0:
                break
            if counter >= length:
                now, events = events, []
                n = length
            else:
                now, events = events[:counter], events[counter:]
                n = counter
            self._send(e[1], e[2], now)
            length -= n
            del ds[0]
            e[0] = counter - n
            self._add(e)
        return events


class BroadcastDispatcher(Dispatcher):
    """Sends every event to every consumer, as fast as the slowest one asks. A consumer may
    subscribe with ``selector`` (a function ``event -> bool``) to receive only some events
    (the others still count as delivered to it).

    >>> d = BroadcastDispatcher()
    """
    options = ()

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        # [counter, pid, ref, selector]; counters are relative to `waiting` (Elixir's scheme)
        self.demands: List[List[Any]] = []
        self.waiting = 0

    def subscribe(self, opts: Dict[str, Any], from_: Tuple[Any, Any]) -> int:
        sel = opts.get("selector")
        if sel is not None and not callable(sel):
            raise GenStageError("selector must be a function event -> bool, got %r" % (sel,))
        if any(d[1] == from_[0] for d in self.demands):
            raise GenStageError("already_subscribed")
        self.demands.append([-self.waiting, from_[0], from_[1], sel])
        return 0

    def _settle(self) -> int:
        if not self.demands:
            return 0
        m: int = min(d[0] for d in self.demands)
        if m > 0:
            for d in self.demands:
                d[0] -= m
            self.waiting += m
            return m
        return 0

    def cancel(self, from_: Tuple[Any, Any]) -> int:
        self.demands = [d for d in self.demands if d[2] != from_[1]]
        return self._settle()

    def ask(self, counter: int, from_: Tuple[Any, Any]) -> int:
        for d in self.demands:
            if d[2] == from_[1]:
                d[0] += counter
                break
        return self._settle()

    def dispatch(self, events: List[Any], length: int) -> List[Any]:
        if self.waiting == 0 or not self.demands:
            return events
        if length > self.waiting:
            now, later = events[:self.waiting], events[self.waiting:]
            self.waiting = 0
        else:
            now, later = events, []
            self.waiting -= length
        for d in self.demands:
            sel = d[3]
            batch = now if sel is None else [e for e in now if sel(e)]
            if batch:
                self._send(d[1], d[2], batch)
        return later


class PartitionDispatcher(Dispatcher):
    """Sends each event to the consumer of its partition. ``partitions``: a count
    (partitions ``0..n-1``) or a list of partition names; ``hash``: a function
    ``event -> (event, partition)`` or ``None`` to discard the event (default:
    ``(event, hash(event) % n)`` over integer partitions). Each consumer subscribes with
    ``partition``. Events for a partition without demand wait in that partition's queue.

    >>> d = PartitionDispatcher(partitions=4, hash=lambda e: (e, e % 4))
    """
    options = ("partitions", "hash")

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        parts = opts.get("partitions")
        if _pos_int(parts):
            names: List[Any] = list(range(int(parts)))  # type: ignore[arg-type]
        elif isinstance(parts, (list, tuple)) and parts:
            names = list(parts)
        else:
            raise GenStageError("PartitionDispatcher needs partitions: an int > 0 or a non-empty list, got %r"
                                % (parts,))
        h = opts.get("hash")
        if h is None:
            if not all(type(n) is int for n in names) or names != list(range(len(names))):
                raise GenStageError("PartitionDispatcher with named partitions needs a hash function")
            count = len(names)
            h = lambda e: (e, hash(e) % count)   # noqa: E731
        elif not callable(h):
            raise GenStageError("hash must be a function event -> (event, partition) | None, got %r" % (h,))
        self.hash = h
        # partition -> [pid | None, ref | None, demand, deque of waiting events]
        self.parts: Dict[Any, List[Any]] = {n: [None, None, 0, deque()] for n in names}
        self.refs: Dict[Any, Any] = {}
        self.pending = 0

    def subscribe(self, opts: Dict[str, Any], from_: Tuple[Any, Any]) -> int:
        if "partition" not in opts:
            raise GenStageError("PartitionDispatcher: the subscription needs a partition (one of %r)"
                                % (list(self.parts),))
        p = opts["partition"]
        part = self.parts.get(p)
        if part is None:
            raise GenStageError("PartitionDispatcher: unknown partition %r (partitions: %r)"
                                % (p, list(self.parts)))
        if part[0] is not None:
            raise GenStageError("PartitionDispatcher: partition %r already has a consumer" % (p,))
        part[0], part[1], part[2] = from_[0], from_[1], 0
        self.refs[from_[1]] = p
        return 0

    def cancel(self, from_: Tuple[Any, Any]) -> int:
        p = self.refs.pop(from_[1], None)
        if p is not None:
            part = self.parts[p]
            self.pending += part[2]
            part[0] = part[1] = None
            part[2] = 0
        return 0

    def ask(self, counter: int, from_: Tuple[Any, Any]) -> int:
        p = self.refs.get(from_[1])
        if p is None:
            return 0
        part = self.parts[p]
        q = part[3]
        if q:
            k = min(counter, len(q))
            self._send(part[0], part[1], [q.popleft() for _ in range(k)])
            counter -= k      # those events were produced already: not demanded twice
        part[2] += counter
        sent = min(self.pending, counter)
        self.pending -= sent
        return counter - sent

    def dispatch(self, events: List[Any], length: int) -> List[Any]:
        out: Dict[Any, List[Any]] = {}
        h = self.hash
        for e in events:
            r = h(e)
            if r is None:
                continue
            ev, p = r
            lst = out.get(p)
            if lst is None:
                if p not in self.parts:
                    raise GenStageError("PartitionDispatcher: hash returned unknown partition %r" % (p,))
                out[p] = lst = []
            lst.append(ev)
        for p, lst in out.items():
            part = self.parts[p]
            d = part[2]
            if part[0] is not None and d > 0 and not part[3]:
                if d >= len(lst):
                    self._send(part[0], part[1], lst)
                    part[2] = d - len(lst)
                    continue
                self._send(part[0], part[1], lst[:d])
                lst = lst[d:]
                part[2] = 0
            part[3].extend(lst)
        return []


def _make_dispatcher(spec: Any) -> Dispatcher:
    if spec is None:
        return DemandDispatcher()
    if isinstance(spec, Dispatcher):
        return spec
    if isinstance(spec, type) and issubclass(spec, Dispatcher):
        return spec()
    if (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], type)
            and issubclass(spec[0], Dispatcher) and isinstance(spec[1], dict)):
        return spec[0](**spec[1])
    raise GenStageError("dispatcher must be a Dispatcher class or (class, opts dict), got %r" % (spec,))


# ---------------------------------------------------------------------------------------
# The stage process

class _ProducerSub:
    """A consumer's view of one subscription to a producer."""
    __slots__ = ("pid", "cancel", "manual", "demand", "min", "max")

    def __init__(self, pid: Any, opts: Dict[str, Any]) -> None:
        self.pid = pid
        self.cancel = opts["cancel"]
        self.manual = False
        self.demand = 0
        self.min = opts["min_demand"]
        self.max = opts["max_demand"]


class _StageServer(GenServer):
    """The GenServer that runs a GenStage module (the user's instance is ``self.mod``)."""
    behaviour_name = "GenStage"

    # -- start -----------------------------------------------------------------------

    def init(self, arg: Tuple[type, Any]) -> Any:
        cls, uarg = arg
        self.mod = mod = cls()
        mod._stage = self          # for pyotp's own stages (Pipeline) that read their buffers
        self.me = _core.self()
        self.producers: Dict[Any, _ProducerSub] = {}
        self.consumers: Dict[Any, Tuple[Any, Any]] = {}    # ref -> (pid, monitor ref)
        self.cmons: Dict[Any, Any] = {}                     # monitor ref -> ref
        self.buffer: List[Any] = []
        self.dropped = 0
        self.pc_queue: Deque[Tuple[Any, Any]] = deque()      # (from_, events) | (_QueuedCancel, args)
        self.pc_demand = 0
        self.acc_demand = 0
        self.accumulate = False
        self.dispatcher: Optional[Dispatcher] = None
        self.infos: List[List[Any]] = []       # [events still ahead of it, msg] (async_info)
        r = mod.init(uarg)
        if r == "ignore":
            return "ignore"
        if type(r) is not tuple or len(r) not in (2, 3):
            return ("stop", ("bad_return_value", r))
        if r[0] == "stop" and len(r) == 2:
            return r
        kind = r[0]
        if kind not in _TYPES:
            return ("stop", ("bad_return_value", r))
        self.kind = kind
        self.ustate = r[1]
        opts = r[2] if len(r) == 3 else {}
        try:
            subs = self._configure(kind, opts)
            for s in subs:
                to, sopts = (s if isinstance(s, tuple) and len(s) == 2 and isinstance(s[1], dict)
                             else (s, {}))
                self._subscribe(to, _check_sub_opts(sopts))
        except GenStageError as e:
            return ("stop", ("bad_opts", str(e)))
        except _StopStage as s:
            return ("stop", s.ret[1])
        return ("ok", self.ustate)

    def _configure(self, kind: str, opts: Any) -> List[Any]:
        if not isinstance(opts, dict):
            raise GenStageError("init options must be a dict, got %r" % (opts,))
        allowed = (("subscribe_to",) if kind != "producer" else ()) + (
            _PRODUCER_OPTS if kind != "consumer" else ())
        for k in opts:
            if k not in allowed:
                raise GenStageError("unknown option %r for a %s (allowed: %s)" % (k, kind, ", ".join(allowed)))
        if kind != "consumer":
            self.dispatcher = _make_dispatcher(opts.get("dispatcher"))
            self.dispatcher.me = self.me
            bs = opts.get("buffer_size", "infinity" if kind == "producer_consumer" else 10000)
            if not (bs == "infinity" or (type(bs) is int and bs >= 0)):
                raise GenStageError("buffer_size must be an int >= 0 or 'infinity', got %r" % (bs,))
            self.buffer_size = None if bs == "infinity" else bs
            keep = opts.get("buffer_keep", "last")
            if keep not in ("first", "last"):
                raise GenStageError("buffer_keep must be 'first' or 'last', got %r" % (keep,))
            self.keep_last = keep == "last"
            dm = opts.get("demand", "forward")
            if dm not in ("forward", "accumulate"):
                raise GenStageError("demand must be 'forward' or 'accumulate', got %r" % (dm,))
            self.accumulate = dm == "accumulate"
        subs = opts.get("subscribe_to", [])
        if not isinstance(subs, (list, tuple)):
            raise GenStageError("subscribe_to must be a list, got %r" % (subs,))
        return list(subs)

    # -- GenServer callbacks --------------------------------------------------------

    def handle_info(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and len(msg) == 3:
            tag = msg[0]
            if tag == _CONSUMER:
                body = msg[2]
                sub = self.producers.get(msg[1][1])
                if type(body) is list:
                    if sub is None:
                        return ("noreply", self.ustate)     # late events of a cancelled subscription
                    return self._consumer_receive(msg[1], sub, body)
                if type(body) is tuple and len(body) == 2 and body[0] == _CANCEL:
                    return self._consumer_cancelled(msg[1][1], "cancel", body[1])
            elif tag == _PRODUCER:
                return self._producer_msg(msg[1], msg[2])
        elif type(msg) is tuple and len(msg) == 2 and msg[0] is _QueuedCancel:
            return ("stop", msg[1], self.ustate)
        elif type(msg) is tuple and len(msg) == 5 and msg[0] == "DOWN":
            ref = msg[1]
            if ref in self.producers:
                return self._consumer_cancelled(ref, "down", msg[4])
            sref = self.cmons.pop(ref, None)
            if sref is not None:
                return self._producer_cancel(sref, "down", msg[4], notify=False)
        return self._noreply(self.mod.handle_info(msg, self.ustate))

    def handle_cast(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and len(msg) == 2 and msg[0] == "$gen_stage":
            return self._internal_cast(msg[1])
        return self._noreply(self.mod.handle_cast(msg, self.ustate))

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if type(req) is tuple and len(req) == 2 and req[0] == "$gen_stage":
            return self._internal_call(req[1])
        r = self.mod.handle_call(req, from_, self.ustate)
        if type(r) is tuple and len(r) in (4, 5) and r[0] == "reply":
            out = self._noreply(("noreply",) + r[2:])
            if out[0] == "noreply":
                _core.reply(from_, r[1])
            return out
        if type(r) is tuple and len(r) == 4 and r[0] == "stop":
            return r
        return self._noreply(r)

    async def handle_continue(self, x: Any, state: Any) -> Any:
        r = self.mod.handle_continue(x, self.ustate)
        if inspect.isawaitable(r):
            r = await r
        return self._noreply(r)

    def terminate(self, reason: Any, state: Any) -> Any:
        mod = getattr(self, "mod", None)
        if mod is not None and hasattr(self, "ustate"):
            return mod.terminate(reason, self.ustate)
        return "ok"

    # -- returns ---------------------------------------------------------------------

    def _noreply(self, r: Any) -> Any:
        """Apply a stage callback's return; gives the GenServer return."""
        if type(r) is tuple:
            n = len(r)
            if r[0] == "noreply" and n in (3, 4) and type(r[1]) is list:
                self.ustate = r[2]
                if r[1]:
                    if self.dispatcher is None:
                        _log.error("GenStage consumer %r cannot dispatch events (an empty list must "
                                   "be returned): %r", self.me, r[1][:10])
                    else:
                        self._dispatch(r[1])
                return ("noreply", r[2]) if n == 3 else ("noreply", r[2], r[3])
            if r[0] == "stop" and n == 3:
                return r
        return ("stop", ("bad_return_value", r), self.ustate)

    # -- producer side -----------------------------------------------------------------

    def _producer_msg(self, from_: Any, body: Any) -> Any:
        if type(body) is not tuple or not body:
            _log.error("GenStage %r received a malformed $gen_producer message: %r", self.me, body)
            return ("noreply", self.ustate)
        op = body[0]
        ref = from_[1]
        if op == _ASK and len(body) == 2:
            if ref not in self.consumers:
                return ("noreply", self.ustate)
            n = body[1]
            if not _pos_int(n):
                _log.error("GenStage producer %r got an invalid demand %r from %r: cancelling it",
                           self.me, n, from_[0])
                return self._producer_cancel(ref, "cancel", ("bad_demand", n), notify=True)
            return self._producer_ask(from_, n)
        if op == _SUBSCRIBE and len(body) == 3:
            return self._producer_subscribe(from_, body[2])
        if op == _CANCEL and len(body) == 2:
            return self._producer_cancel(ref, "cancel", body[1], notify=True)
        _log.error("GenStage %r received a malformed $gen_producer message: %r", self.me, body)
        return ("noreply", self.ustate)

    def _producer_subscribe(self, from_: Any, opts: Any) -> Any:
        pid, ref = from_
        if self.dispatcher is None:
            _log.error("GenStage consumer %r cannot be subscribed to by %r", self.me, pid)
            _core.send(pid, (_CONSUMER, (self.me, ref), (_CANCEL, "not_a_producer")))
            return ("noreply", self.ustate)
        try:
            opts = _check_sub_opts(opts)
            r = self.mod.handle_subscribe("consumer", opts, from_, self.ustate)
            if type(r) is tuple and len(r) == 3 and r[0] == "stop":
                return r
            if type(r) is not tuple or len(r) != 2 or r[0] != "automatic":
                return ("stop", ("bad_return_value", r), self.ustate)
            self.ustate = r[1]
            demand = self.dispatcher.subscribe(opts, from_)
        except GenStageError as e:
            _log.error("GenStage producer %r refused the subscription of %r: %s", self.me, pid, e)
            _core.send(pid, (_CONSUMER, (self.me, ref), (_CANCEL, ("bad_opts", str(e)))))
            return ("noreply", self.ustate)
        mref = _core.monitor(pid)
        self.consumers[ref] = (pid, mref)
        self.cmons[mref] = ref
        if demand > 0:
            self._demand(demand)
        return ("noreply", self.ustate)

    def _producer_ask(self, from_: Any, n: int) -> Any:
        counter = self.dispatcher.ask(n, from_)   # type: ignore[union-attr]
        if counter > 0:
            return self._demand(counter)
        return ("noreply", self.ustate)

    def _demand(self, counter: int) -> Any:
        if self.buffer:
            counter = self._take_from_buffer(counter)
            if counter == 0:
                return ("noreply", self.ustate)
        if self.kind == "producer_consumer":
            self.pc_demand += counter
            return self._take_pc_events()
        if self.accumulate:
            self.acc_demand += counter
            return ("noreply", self.ustate)
        return self._noreply(self.mod.handle_demand(counter, self.ustate))

    def _take_from_buffer(self, counter: int) -> int:
        buf = self.buffer
        k = min(counter, len(buf))
        now = buf[:k]
        del buf[:k]
        left = self.dispatcher.dispatch(now, k)  # type: ignore[union-attr]
        if left:
            buf[:0] = left
        sent = k - len(left)
        if self.infos:
            self._infos_passed(sent)
        return counter - sent

    def _infos_passed(self, sent: int) -> None:
        keep = []
        for ent in self.infos:
            ent[0] -= sent
            if ent[0] <= 0:
                _core.send(self.me, ent[1])
            else:
                keep.append(ent)
        self.infos = keep

    def _dispatch(self, events: List[Any]) -> None:
        n = len(events)
        if self.kind == "producer_consumer":
            self.pc_demand = max(self.pc_demand - n, 0)
        if self.buffer:        # order: what waits in the buffer goes first
            self._buffer(events)
            return
        left = self.dispatcher.dispatch(events, n)  # type: ignore[union-attr]
        if left:
            self._buffer(left)

    def _buffer(self, events: List[Any]) -> None:
        buf = self.buffer
        buf.extend(events)
        cap = self.buffer_size
        if cap is not None and len(buf) > cap:
            over = len(buf) - cap
            if self.keep_last:
                del buf[:over]
            else:
                del buf[cap:]
            self.dropped += over
            _log.warning("GenStage producer %r has discarded %d events from buffer "
                         "(buffer_size %d, %d discarded in all)", self.me, over, cap, self.dropped)

    def _producer_cancel(self, ref: Any, kind: str, reason: Any, notify: bool) -> Any:
        entry = self.consumers.pop(ref, None)
        if entry is None:
            return ("noreply", self.ustate)
        pid, mref = entry
        if notify:
            self.cmons.pop(mref, None)
            _core.demonitor(mref, True)
            _core.send(pid, (_CONSUMER, (self.me, ref), (_CANCEL, reason)))
        demand = self.dispatcher.cancel((pid, ref))  # type: ignore[union-attr]
        out = self._noreply(self.mod.handle_cancel((kind, reason), (pid, ref), self.ustate))
        if out[0] == "noreply" and demand > 0:
            return self._demand(demand)
        return out

    # -- consumer side -----------------------------------------------------------------

    def _subscribe(self, to: Any, opts: Dict[str, Any]) -> Any:
        if self.kind == "producer":
            raise GenStageError("a producer cannot subscribe to another stage")
        target = GenServer.whereis(to) if not isinstance(to, tuple) or to[0] in ("global", "via") else to
        if target is None:
            # as Elixir: the subscription exists and is cancelled at once with "noproc"
            ref = _core.make_ref()
            self.producers[ref] = _ProducerSub(to, opts)
            _core.send(self.me, ("DOWN", ref, "process", to, "noproc"))
            return ref
        ref = _core.monitor(target)
        sub = _ProducerSub(target, opts)
        self.producers[ref] = sub
        _core.send(target, (_PRODUCER, (self.me, ref), (_SUBSCRIBE, None, _wire_opts(opts))))
        r = self.mod.handle_subscribe("producer", opts, (target, ref), self.ustate)
        if type(r) is tuple and len(r) == 2 and r[0] in ("automatic", "manual"):
            self.ustate = r[1]
            if r[0] == "manual":
                sub.manual = True
            else:
                sub.demand = sub.max
                _core.send(target, (_PRODUCER, (self.me, ref), (_ASK, sub.max)))
            return ref
        if type(r) is tuple and len(r) == 3 and r[0] == "stop":
            raise _StopStage(r)
        raise _StopStage(("stop", ("bad_return_value", r), self.ustate))

    def _consumer_receive(self, from_: Any, sub: _ProducerSub, events: List[Any]) -> Any:
        if self.kind == "producer_consumer":
            if self.pc_demand > 0 and not self.pc_queue:
                return self._pc_events(from_, sub, events)
            self.pc_queue.append((from_, events))
            return ("noreply", self.ustate)
        return self._handle_events(from_, sub, events)

    def _handle_events(self, from_: Any, sub: _ProducerSub, events: List[Any]) -> Any:
        handle = self.mod.handle_events
        if sub.manual:
            return self._noreply(handle(events, from_, self.ustate))
        n = len(events)
        step = sub.max - sub.min
        i = 0
        out: Any = ("noreply", self.ustate)
        while i < n:
            batch = events if (i == 0 and n <= step) else events[i:i + step]
            size = len(batch)
            i += size
            d = sub.demand - size
            if d < 0:
                _log.error("GenStage consumer %r has received %d events in excess from %r",
                           self.me, -d, from_[0])
                d = 0
            ask = 0
            if d <= sub.min:
                ask = sub.max - d
                d = sub.max
            sub.demand = d
            out = self._noreply(handle(batch, from_, self.ustate))
            if out[0] != "noreply":
                return out
            if ask and from_[1] in self.producers:
                _core.send(sub.pid, (_PRODUCER, (self.me, from_[1]), (_ASK, ask)))
        return out

    def _pc_events(self, from_: Any, sub: Optional[_ProducerSub], events: List[Any]) -> Any:
        if sub is None:      # cancelled meanwhile: still handle what arrived (Elixir does)
            return self._noreply(self.mod.handle_events(events, from_, self.ustate))
        return self._handle_events(from_, sub, events)

    def _take_pc_events(self) -> Any:
        out: Any = ("noreply", self.ustate)
        q = self.pc_queue
        while self.pc_demand > 0 and q:
            from_, events = q.popleft()
            if from_ is _QueuedCancel:
                ref, kind, reason = events    # a queued cancellation, not events
                out = self._consumer_cancelled(ref, kind, reason, now=True)
                if out[0] != "noreply":
                    return out
                continue
            out = self._pc_events(from_, self.producers.get(from_[1]), events)
            if out[0] != "noreply":
                return out
        return out

    def _consumer_cancelled(self, ref: Any, kind: str, reason: Any, now: bool = False) -> Any:
        if not now and self.pc_queue and ref in self.producers:
            # events of this producer still wait for downstream demand: the cancellation
            # takes effect after them, in arrival order
            self.pc_queue.append((_QueuedCancel, (ref, kind, reason)))
            return ("noreply", self.ustate)
        sub = self.producers.pop(ref, None)
        if sub is None:
            return ("noreply", self.ustate)
        if kind == "cancel":
            _core.demonitor(ref, True)
        out = self._noreply(self.mod.handle_cancel((kind, reason), (sub.pid, ref), self.ustate))
        if out[0] != "noreply":
            return out
        if sub.cancel == "permanent" or (sub.cancel == "transient" and not _is_quiet(reason)):
            if self.buffer:
                # what this stage made from its producer's events still goes out first
                self.infos.append([len(self.buffer), (_QueuedCancel, reason)])
                return out
            return ("stop", reason, self.ustate)
        return out

    # -- internal requests ---------------------------------------------------------------

    def _internal_call(self, req: Any) -> Any:
        op = req[0]
        if op == "subscribe":
            try:
                opts = _check_sub_opts(req[1])
                ref = self._subscribe(req[1].get("to"), opts)
            except GenStageError as e:
                return ("reply", ("error", str(e)), self.ustate)
            except _StopStage as s:
                return s.ret
            return ("reply", ("ok", ref), self.ustate)
        if op == "demand":
            if req[1] is None:
                return ("reply", "accumulate" if self.accumulate else "forward", self.ustate)
            return self._set_demand(req[1], reply=True)
        if op == "estimate_buffered_count":
            return ("reply", len(self.buffer), self.ustate)
        if op == "stats":
            return ("reply", {"type": self.kind, "buffered": len(self.buffer), "dropped": self.dropped,
                              "producers": {r: s.demand for r, s in self.producers.items()},
                              "consumers": len(self.consumers), "queued_batches": len(self.pc_queue),
                              "downstream_demand": self.pc_demand}, self.ustate)
        return ("reply", ("error", ("unknown_request", op)), self.ustate)

    def _internal_cast(self, req: Any) -> Any:
        op = req[0]
        if op == "subscribe":
            try:
                self._subscribe(req[1].get("to"), _check_sub_opts(req[1]))
            except GenStageError as e:
                _log.error("GenStage %r: async_subscribe failed: %s", self.me, e)
            except _StopStage as s:
                return s.ret
            return ("noreply", self.ustate)
        if op == "demand":
            return self._set_demand(req[1], reply=False)
        if op == "info":
            if self.buffer:
                self.infos.append([len(self.buffer), req[1]])
            else:
                _core.send(self.me, req[1])
            return ("noreply", self.ustate)
        if op == "cancel_consumers":
            for ref in list(self.consumers):
                self._producer_cancel(ref, "cancel", req[1], notify=True)
            return ("noreply", self.ustate)
        if op == "cancel":
            ref, reason = req[1], req[2]
            sub = self.producers.get(ref)
            if sub is not None:
                _core.send(sub.pid, (_PRODUCER, (self.me, ref), (_CANCEL, reason)))
            return ("noreply", self.ustate)
        return ("noreply", self.ustate)

    def _set_demand(self, mode: Any, reply: bool) -> Any:
        if mode not in ("forward", "accumulate") or self.dispatcher is None:
            err = ("error", "demand mode must be 'forward' or 'accumulate' on a producer, got %r" % (mode,))
            return ("reply", err, self.ustate) if reply else ("noreply", self.ustate)
        self.accumulate = mode == "accumulate"
        out: Any = ("noreply", self.ustate)
        if not self.accumulate and self.acc_demand:
            d, self.acc_demand = self.acc_demand, 0
            out = self._demand(d)
        if reply and out[0] == "noreply":
            return ("reply", "ok") + out[1:]
        return out


class _QueuedCancel:
    """Marks a cancellation queued behind a producer_consumer's waiting events."""


class _StopStage(Exception):
    def __init__(self, ret: Any) -> None:
        super().__init__(ret)
        self.ret = ret


# ---------------------------------------------------------------------------------------
# The public API

class GenStage:
    """Base class of stages, and the API (see the module documentation)."""

    # -- the callbacks' defaults (as Elixir's `use GenStage`) -------------------------

    def init(self, arg: Any) -> Any:
        raise NotImplementedError("%s must define init/1" % type(self).__name__)

    def handle_demand(self, demand: int, state: Any) -> Any:
        raise RuntimeError("%s is a producer but defines no handle_demand/2" % type(self).__name__)

    def handle_events(self, events: List[Any], from_: Any, state: Any) -> Any:
        raise RuntimeError("%s is a consumer but defines no handle_events/3" % type(self).__name__)

    def handle_subscribe(self, kind: str, opts: Dict[str, Any], from_: Any, state: Any) -> Any:
        return ("automatic", state)

    def handle_cancel(self, reason: Any, from_: Any, state: Any) -> Any:
        return ("noreply", [], state)

    def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        raise RuntimeError("attempted to call GenStage %r but no handle_call/3 clause was provided"
                           % (_core.self(),))

    def handle_cast(self, request: Any, state: Any) -> Any:
        raise RuntimeError("attempted to cast GenStage %r but no handle_cast/2 clause was provided"
                           % (_core.self(),))

    def handle_info(self, msg: Any, state: Any) -> Any:
        return ("noreply", [], state)

    def handle_continue(self, x: Any, state: Any) -> Any:
        raise RuntimeError("%s did not define handle_continue/2" % type(self).__name__)

    def terminate(self, reason: Any, state: Any) -> Any:
        return "ok"

    # -- start / stop ----------------------------------------------------------------

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Any = None,
                         timeout: Optional[float] = None) -> Any:
        """Start the stage linked to the caller; its pid once ``init`` returned.

        >>> class Numbers(GenStage):
        ...     def init(self, n):
        ...         return ("producer", n)
        ...     def handle_demand(self, demand, n):
        ...         return ("noreply", list(range(n, n + demand)), n + demand)
        >>> producer = await Numbers.start_link(0)
        """
        return start_result(await _core._gen_start(_StageServer, (cls, arg), name, True, timeout))

    @classmethod
    async def start(cls, arg: Any = None, *, name: Any = None, timeout: Optional[float] = None) -> Any:
        """Like start_link, without the link.

        >>> producer = await Counter.start(0)
        """
        return start_result(await _core._gen_start(_StageServer, (cls, arg), name, False, timeout))

    @classmethod
    def child_spec(cls, arg: Any = None) -> Dict[str, Any]:
        return {"id": cls, "start": (cls.start_link, (arg,))}

    call = staticmethod(_core.call)
    cast = staticmethod(_core.cast)
    reply = staticmethod(_core.reply)
    stop = staticmethod(GenServer.stop)

    # -- subscriptions ---------------------------------------------------------------

    @staticmethod
    async def sync_subscribe(stage: Any, timeout: Optional[float] = 5.0, **opts: Any) -> Reference:
        """Subscribe ``stage`` (a consumer) to ``opts["to"]``; returns the subscription ref.
        Raises GenStageError for bad options.

        >>> ref = await GenStage.sync_subscribe(consumer, to=producer, max_demand=50)
        """
        _check_sub_opts({k: v for k, v in opts.items() if k != "to"})
        if "to" not in opts:
            raise GenStageError("sync_subscribe needs to=<producer>")
        r = await _core.call(stage, ("$gen_stage", ("subscribe", opts)), timeout)
        if r[0] == "ok":
            ref: Reference = r[1]
            return ref
        raise GenStageError(r[1])

    @staticmethod
    def async_subscribe(stage: Any, **opts: Any) -> str:
        """Like sync_subscribe, without waiting (a cast).

        >>> GenStage.async_subscribe(consumer, to=producer)
        'ok'
        """
        if "to" not in opts:
            raise GenStageError("async_subscribe needs to=<producer>")
        _check_sub_opts({k: v for k, v in opts.items() if k != "to"})
        return _core.cast(stage, ("$gen_stage", ("subscribe", opts)))

    @staticmethod
    def ask(from_: Tuple[Any, Any], demand: int) -> str:
        """From inside a consumer with a ``manual`` subscription: ask the producer of
        ``from_`` for ``demand`` more events.

        In a consumer's callback (``from_`` as handle_subscribe got it)::

            GenStage.ask(from_, 10)
        """
        if not _pos_int(demand):
            raise GenStageError("demand must be an int > 0, got %r" % (demand,))
        if type(from_) is not tuple or len(from_) != 2:
            raise GenStageError("ask needs the subscription's from_ (producer, ref), got %r" % (from_,))
        _core.send(from_[0], (_PRODUCER, (_core.self(), from_[1]), (_ASK, demand)))
        return "ok"

    @staticmethod
    def cancel(from_: Tuple[Any, Any], reason: Any, stage: Any = None) -> str:
        """Cancel the subscription ``from_`` = (producer, ref) with ``reason``; the consumer
        then gets handle_cancel(("cancel", reason), ...) and applies its cancel mode. Called
        inside the consumer, or from outside with ``stage`` (the consumer).

        In a consumer's callback (``from_`` as handle_subscribe got it)::

            GenStage.cancel(from_, "normal")
        """
        if stage is not None:
            return _core.cast(stage, ("$gen_stage", ("cancel", from_[1], reason)))
        _core.send(from_[0], (_PRODUCER, (_core.self(), from_[1]), (_CANCEL, reason)))
        return "ok"

    @staticmethod
    def async_info(stage: Any, msg: Any) -> str:
        """Queue ``msg`` for the producer's ``handle_info``, behind the events its buffer
        holds now: it arrives once they have all been dispatched.

        >>> GenStage.async_info(pyotp.self(), "all_sent")
        'ok'
        """
        return _core.cast(stage, ("$gen_stage", ("info", msg)))

    @staticmethod
    async def demand(stage: Any, mode: Optional[str] = None) -> Any:
        """Read (``mode=None``) or set a producer's demand mode, ``"forward"`` or
        ``"accumulate"`` (demand is kept, not handled, until set back to forward).

        >>> await GenStage.demand(producer, "forward")
        'ok'
        """
        r = await _core.call(stage, ("$gen_stage", ("demand", mode)), 5.0)
        if type(r) is tuple and r[0] == "error":
            raise GenStageError(r[1])
        return r

    @staticmethod
    async def estimate_buffered_count(stage: Any, timeout: Optional[float] = 5.0) -> int:
        """How many events wait in a producer's buffer.

        >>> await GenStage.estimate_buffered_count(producer)
        0
        """
        return int(await _core.call(stage, ("$gen_stage", ("estimate_buffered_count",)), timeout))

    @staticmethod
    async def stats(stage: Any, timeout: Optional[float] = 5.0) -> Dict[str, Any]:
        """A stage's counters: type, buffered, dropped, per-producer pending demand,
        consumers, queued batches, downstream demand (for progress displays).

        >>> (await GenStage.stats(producer))["dropped"]
        0
        """
        return dict(await _core.call(stage, ("$gen_stage", ("stats",)), timeout))

    # -- adapters ----------------------------------------------------------------------

    @staticmethod
    async def from_enumerable(items: Any, *, name: Any = None, link: bool = True,
                              **opts: Any) -> Pid:
        """Start a producer emitting the items of an iterable or async iterable, then
        stopping normally once they are all dispatched. ``opts`` are producer options
        (``dispatcher``, ``buffer_size``...).

        >>> producer = await GenStage.from_enumerable(range(100))
        """
        start = _Enumerable.start_link if link else _Enumerable.start
        pid: Pid = await start((items, opts), name=name)
        return pid

    @staticmethod
    def stream(subscriptions: List[Any], *, take: Optional[int] = None) -> AsyncIterator[Any]:
        """Consume producers as an async iterator (Elixir's ``GenStage.stream``): each
        subscription is a producer or ``(producer, opts)``. It ends when every producer has
        finished normally, or after ``take`` events; a producer's abnormal exit raises
        ``pyotp.Exit``.

        >>> [event async for event in GenStage.stream([producer], take=3)]
        [0, 1, 2]
        """
        return _stream(subscriptions, take)

    @staticmethod
    def blocking_stream(node: Any, subscriptions: List[Any], *, take: Optional[int] = None,
                        timeout: Optional[float] = None) -> Iterator[Any]:
        """``GenStage.stream`` for plain threads: a (blocking) iterator over the events of
        stages running on ``node``, a ``pyotp.Runtime.start_thread()`` handle. Each batch
        is asked for as the iteration reaches it, so a slow loop holds the producers back.
        ``timeout`` (seconds) bounds each wait for a batch.

        From a plain thread (outside any node)::

            node = pyotp.Runtime.start_thread()
            producer = node.call_in_loop(lambda: GenStage.from_enumerable(range(10), link=False))
            list(GenStage.blocking_stream(node, [producer]))   # [0, 1, ..., 9]
        """
        if take is not None and (type(take) is not int or take < 0):
            raise GenStageError("take must be an int >= 0, got %r" % (take,))
        return _blocking_stream(node, list(subscriptions), take, timeout)


# ---------------------------------------------------------------------------------------
# from_enumerable and stream

class _Pump:
    """Sentinel for the async-iterable pump's messages."""


async def _pump(stage: Pid, aiter: AsyncIterator[Any]) -> None:
    # Reads an async iterable for an _Enumerable producer: it never reads further than the
    # demand it was given, so a slow consumer stops the reading.
    while True:
        msg = await _core.receive(lambda m: type(m) is tuple and len(m) == 2 and m[0] is _Pump)
        n = msg[1]
        batch: List[Any] = []
        done = False
        try:
            while len(batch) < n:
                batch.append(await aiter.__anext__())
        except StopAsyncIteration:
            done = True
        _core.send(stage, (_Pump, batch, done))
        if done:
            return


class _Enumerable(GenStage):
    def init(self, arg: Any) -> Any:
        items, opts = arg
        self.done = False
        self.pump = None
        self.iter: Any = None
        if hasattr(items, "__aiter__"):
            self.pump = _core.spawn_link(_pump, _core.self(), items.__aiter__())
            self.asked = 0
        else:
            self.iter = iter(items)
        return ("producer", None, opts)

    def handle_demand(self, demand: int, state: Any) -> Any:
        if self.pump is not None:
            self.asked += demand
            _core.send(self.pump, (_Pump, demand))
            return ("noreply", [], state)
        events = list(itertools.islice(self.iter, demand))
        if len(events) < demand and not self.done:
            self.done = True
            GenStage.async_info(_core.self(), (_Pump, "done"))
        return ("noreply", events, state)

    def handle_info(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and msg and msg[0] is _Pump:
            if len(msg) == 3:
                if msg[2]:
                    self.done = True
                    GenStage.async_info(_core.self(), (_Pump, "done"))
                return ("noreply", msg[1], state)
            if msg[1] == "done":       # queued behind every buffered event: all sent
                return ("stop", "normal", state)
        return ("noreply", [], state)


class _StreamConsumer(GenStage):
    """The consumer behind GenStage.stream: keeps the batches until the iterator takes them."""

    def init(self, subs: List[Any]) -> Any:
        self.batches: Deque[Tuple[Any, List[Any]]] = deque()
        self.waiting: Any = None
        self.live = 0
        self.failed: Any = None
        out = []
        for s in subs:
            to, o = (s if isinstance(s, tuple) and len(s) == 2 and isinstance(s[1], dict) else (s, {}))
            o = dict(o)
            o["cancel"] = "temporary"
            out.append((to, o))
        self.live = len(out)
        return ("consumer", None, {"subscribe_to": out})

    def handle_subscribe(self, kind: str, opts: Dict[str, Any], from_: Any, state: Any) -> Any:
        GenStage.ask(from_, opts["max_demand"])
        return ("manual", state)

    def handle_events(self, events: List[Any], from_: Any, state: Any) -> Any:
        self.batches.append((from_, events))
        self._serve()
        return ("noreply", [], state)

    def handle_cancel(self, reason: Any, from_: Any, state: Any) -> Any:
        self.live -= 1
        if not _is_quiet(reason[1]) and self.failed is None:
            self.failed = reason[1]
        self._serve()
        return ("noreply", [], state)

    def _serve(self) -> None:
        if self.waiting is None:
            return
        if self.batches:
            from_, events = self.batches.popleft()
            GenStage.ask(from_, len(events)) if events else None
            _core.reply(self.waiting, ("events", events))
        elif self.failed is not None:
            _core.reply(self.waiting, ("exit", self.failed))
        elif self.live <= 0:
            _core.reply(self.waiting, ("done",))
        else:
            return
        self.waiting = None

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        self.waiting = from_
        self._serve()
        return ("noreply", [], state)


def _blocking_stream(node: Any, subs: List[Any], take: Optional[int],
                     timeout: Optional[float]) -> Iterator[Any]:
    if take == 0:
        return
    consumer = node.call_in_loop(_StreamConsumer.start, subs)
    left = take
    try:
        while True:
            r = _core._thread_call(consumer, "next", timeout)
            if r[0] == "done":
                return
            if r[0] == "exit":
                raise Exit(r[1])
            for e in r[1]:
                yield e
                if left is not None:
                    left -= 1
                    if left == 0:
                        return
    finally:
        try:
            node.call_in_loop(_core.exit, consumer, "shutdown", timeout=5.0)
        except RuntimeError:       # the node has stopped: so has the consumer
            pass


async def _stream(subs: List[Any], take: Optional[int]) -> AsyncIterator[Any]:
    if take is not None and (type(take) is not int or take < 0):
        raise GenStageError("take must be an int >= 0, got %r" % (take,))
    if take == 0:
        return
    consumer = await _StreamConsumer.start(list(subs))
    left = take
    try:
        while True:
            r = await _core.call(consumer, "next", None)
            if r[0] == "done":
                return
            if r[0] == "exit":
                raise Exit(r[1])
            for e in r[1]:
                yield e
                if left is not None:
                    left -= 1
                    if left == 0:
                        return
    finally:
        if _core.is_alive(consumer):
            _core.exit(consumer, "shutdown")


# ---------------------------------------------------------------------------------------
# ConsumerSupervisor

class ConsumerSupervisor(GenStage):
    """A consumer that starts one child per event (Elixir's ``ConsumerSupervisor``).

    ``ConsumerSupervisor.start_link(child, subscribe_to=[...], max_restarts=3,
    max_seconds=5)``: ``child`` is a child spec template (see ``pyotp.child_spec``)
    whose start args get the event appended; its restart must be ``"temporary"`` (the
    default here) or ``"transient"`` (restarted after an abnormal exit). At most
    ``max_demand`` children of one producer run at once: demand is given back to the
    producer as children exit.

    >>> def work(event):
    ...     pass
    >>> sup = await ConsumerSupervisor.start_link(
    ...     {"id": "w", "start": (Task.start_link, (work,))}, subscribe_to=[(producer, {"max_demand": 10})])
    """

    def init(self, arg: Any) -> Any:
        from .child_spec import validate_child
        child, opts = arg
        opts = dict(opts)
        subs = opts.pop("subscribe_to", [])
        self.max_restarts = opts.pop("max_restarts", 3)
        self.max_seconds = opts.pop("max_seconds", 5)
        opts.pop("strategy", "one_for_one")
        if opts:
            return ("stop", ("bad_opts", "unknown ConsumerSupervisor options %r" % (sorted(opts),)))
        spec = dict(child) if isinstance(child, dict) else None
        if spec is not None:
            spec.setdefault("restart", "temporary")
        c = validate_child(spec if spec is not None else child)
        if c.restart == "permanent":
            return ("stop", ("bad_opts", "ConsumerSupervisor children must be temporary or transient"))
        self.child = c
        self.children: Dict[Any, Tuple[Any, Any]] = {}     # pid -> (from_, event)
        self.todo: Deque[Tuple[Any, Any]] = deque()
        self.returned: Dict[Any, List[Any]] = {}             # producer ref -> [from_, count, step]
        self.restarts: Deque[float] = deque()
        _core.process_flag("trap_exit", True)
        return ("consumer", None, {"subscribe_to": subs})

    def handle_subscribe(self, kind: str, opts: Dict[str, Any], from_: Any, state: Any) -> Any:
        self.returned[from_[1]] = [from_, 0, max(opts["max_demand"] - opts["min_demand"], 1)]
        GenStage.ask(from_, opts["max_demand"])
        return ("manual", state)

    def handle_cancel(self, reason: Any, from_: Any, state: Any) -> Any:
        self.returned.pop(from_[1], None)
        return ("noreply", [], state)

    def handle_events(self, events: List[Any], from_: Any, state: Any) -> Any:
        self.todo.extend((from_, e) for e in events)
        return ("noreply", [], state, ("continue", "start"))

    async def handle_continue(self, x: Any, state: Any) -> Any:
        c = self.child
        while self.todo:
            from_, event = self.todo.popleft()
            try:
                r = c.fn(*c.args, event, **(c.kwargs or {}))
                if inspect.isawaitable(r):
                    r = await r
            except Exception as e:
                _log.error("ConsumerSupervisor %r: child for %r failed to start: %r", _core.self(), event, e)
                r = None
            if type(r) is tuple and r and r[0] == "ok":
                r = r[1]
            if isinstance(r, Pid):
                self.children[r] = (from_, event)
            else:
                self._give_back(from_)
        return ("noreply", [], state)

    def _give_back(self, from_: Any) -> None:
        ent = self.returned.get(from_[1])
        if ent is None:
            return
        ent[1] += 1
        if ent[1] >= ent[2]:
            GenStage.ask(ent[0], ent[1])
            ent[1] = 0

    def handle_info(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and len(msg) == 3 and msg[0] == "EXIT":
            got = self.children.pop(msg[1], None)
            if got is not None:
                if self.child.restart == "transient" and not _is_quiet(msg[2]):
                    import time
                    now = time.monotonic()
                    self.restarts.append(now)
                    while self.restarts and now - self.restarts[0] > self.max_seconds:
                        self.restarts.popleft()
                    if len(self.restarts) > self.max_restarts:
                        return ("stop", "shutdown", state)
                    self.todo.append(got)
                    return ("noreply", [], state, ("continue", "start"))
                self._give_back(got[0])
                return ("noreply", [], state)
            if msg[2] != "normal":     # a producer linked to us, or our parent: stop with it
                return ("stop", msg[2], state)
        return ("noreply", [], state)

    def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if req == "which_children":
            return ("reply", [(None, p, "worker", "dynamic") for p in self.children], [], state)
        if req == "count_children":
            n = len(self.children)
            return ("reply", {"specs": 1, "active": n, "supervisors": 0, "workers": n}, [], state)
        return ("reply", ("error", "unknown_request"), [], state)

    def terminate(self, reason: Any, state: Any) -> Any:
        for pid in self.children:
            _core.exit(pid, "shutdown")
        return "ok"

    @classmethod
    async def start_link(cls, child: Any = None, *, name: Any = None,   # type: ignore[override]
                         timeout: Optional[float] = None, **opts: Any) -> Any:
        """Start a consumer supervisor (see the class documentation)."""
        return start_result(await _core._gen_start(_StageServer, (cls, (child, opts)), name, True, timeout))

    @staticmethod
    async def which_children(sup: Any) -> List[Tuple[Any, Any, str, Any]]:
        """``[(None, pid, "worker", "dynamic")]`` for every running child."""
        return list(await _core.call(sup, "which_children", 5.0))

    @staticmethod
    async def count_children(sup: Any) -> Dict[str, int]:
        """``{"specs", "active", "supervisors", "workers"}``."""
        return dict(await _core.call(sup, "count_children", 5.0))
