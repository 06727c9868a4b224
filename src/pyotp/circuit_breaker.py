"""CircuitBreaker: one GenServer per protected service, with closed / open / half-open
states.

* **closed**: calls go through; ``failure_threshold`` consecutive failures open it.
* **open**: calls fail fast with ``CircuitOpenError`` and never reach the service; after
  ``reset_timeout`` seconds (a timer on the core's wheel) it goes half-open.
* **half_open**: up to ``half_open_max_calls`` trial calls go through at once (others fail
  fast); a successful trial closes the circuit, a failed one opens it again.

A failure is an exception from the service, a call that exceeds ``call_timeout``, or a
result ``("error", reason)``. The breaker only admits calls and counts outcomes: the
protected call itself runs in the *caller's* process (so a slow service never blocks
the breaker, and every caller's timeout is its own). The service is an ``async`` or plain
callable, or a GenServer (pid or name) that receives the request through
``GenServer.call``. State changes are published to an optional event manager as
``("circuit_breaker", name, old_state, new_state)``.

>>> async def fetch_price(symbol):
...     if symbol == "ACME":
...         return 42
...     raise ConnectionError("no quote for %s" % symbol)
>>> breaker = await CircuitBreaker.start_link(service=fetch_price, name="prices",
...                                            failure_threshold=3, reset_timeout=5.0)
>>> await CircuitBreaker.call("prices", "ACME")
42
>>> for _ in range(3):
...     try:
...         await CircuitBreaker.call("prices", "NOPE")
...     except ConnectionError:
...         pass
>>> await CircuitBreaker.state("prices")
'open'
>>> await CircuitBreaker.call("prices", "ACME")
Traceback (most recent call last):
    ...
CircuitOpenError: circuit 'prices' is open: call rejected without reaching the service
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

from . import _core
from ._core import Pid
from .gen_server import GenServer


class CircuitOpenError(Exception):
    """The circuit is open (or half-open with every trial slot taken): the call was not
    attempted. ``name`` is the breaker, ``state`` its state."""

    def __init__(self, name: Any, state: str) -> None:
        Exception.__init__(self, "circuit %r is %s: call rejected without reaching the service"
                           % (name, state))
        self.name = name
        self.state = state


class CircuitBreaker(GenServer):
    """See the module documentation.

    >>> def flaky(symbol):
    ...     return 42
    >>> pid = await CircuitBreaker.start_link(service=flaky, failure_threshold=2,
    ...                                       reset_timeout=1.0, events="alerts")
    >>> await CircuitBreaker.state(pid)
    'closed'
    """

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Optional[Any] = None,
                         timeout: Optional[float] = None, service: Any = None,
                         failure_threshold: int = 5, reset_timeout: float = 30.0,
                         half_open_max_calls: int = 1, call_timeout: Optional[float] = 5.0,
                         events: Any = None, max_mailbox: Any = None) -> Pid:
        """Start a breaker for ``service`` (keywords as in the module doc; ``arg``, if
        given, is a dict of the same options)."""
        opts = _options(arg, dict(service=service, failure_threshold=failure_threshold,
                                  reset_timeout=reset_timeout, half_open_max_calls=half_open_max_calls,
                                  call_timeout=call_timeout, events=events, name=name))
        return await GenServer.start_link.__func__(cls, opts, name=name, timeout=timeout,  # type: ignore[attr-defined,no-any-return]
                                                   max_mailbox=max_mailbox)

    @classmethod
    def child_spec(cls, arg: Dict[str, Any]) -> Dict[str, Any]:
        """Child spec for supervisors: ``(CircuitBreaker, {"service": f, "name": ...})``."""
        return {"id": arg.get("name", cls), "start": (_start_from_dict, (cls, arg))}

    # -- callbacks --------------------------------------------------------------------

    def init(self, opts: Dict[str, Any]) -> Any:
        return ("ok", {"opts": opts, "state": "closed", "failures": 0, "trials": 0,
                       "timer": None, "gen": 0})

    def handle_call(self, req: Any, from_: Any, s: Dict[str, Any]) -> Any:
        if req == "ask":
            st = s["state"]
            opts = s["opts"]
            if st == "closed":
                return ("reply", ("ok", s["gen"], opts["service"], opts["call_timeout"]), s)
            if st == "half_open" and s["trials"] < opts["half_open_max_calls"]:
                s["trials"] += 1
                return ("reply", ("ok", s["gen"], opts["service"], opts["call_timeout"]), s)
            return ("reply", ("rejected", st), s)
        if req == "state":
            return ("reply", s["state"], s)
        if req == "info":
            return ("reply", {k: s[k] for k in ("state", "failures", "trials")}, s)
        if req == "reset":
            self._move(s, "closed")
            return ("reply", "ok", s)
        return ("reply", ("error", ("unknown_call", req)), s)

    def handle_cast(self, msg: Any, s: Dict[str, Any]) -> Any:
        kind, gen = msg
        if gen != s["gen"]:
            return ("noreply", s)   # an outcome from before the last state change
        if kind == "success":
            if s["state"] == "half_open":
                self._move(s, "closed")
            else:
                s["failures"] = 0
        else:
            if s["state"] == "half_open":
                self._move(s, "open")
            elif s["state"] == "closed":
                s["failures"] += 1
                if s["failures"] >= s["opts"]["failure_threshold"]:
                    self._move(s, "open")
        return ("noreply", s)

    def handle_info(self, msg: Any, s: Dict[str, Any]) -> Any:
        if type(msg) is tuple and msg[0] == "half_open" and msg[1] == s["gen"] and s["state"] == "open":
            self._move(s, "half_open")
        return ("noreply", s)

    def _move(self, s: Dict[str, Any], new: str) -> None:
        old = s["state"]
        if s["timer"] is not None:
            _core.cancel_timer(s["timer"])
            s["timer"] = None
        s["state"] = new
        s["gen"] += 1
        s["failures"] = 0
        s["trials"] = 0
        if new == "open":
            s["timer"] = _core.send_after(_core.self(), ("half_open", s["gen"]),
                                          s["opts"]["reset_timeout"])
        events = s["opts"]["events"]
        if events is not None and old != new:
            _notify(events, ("circuit_breaker", s["opts"]["name"], old, new))

    # -- the API ----------------------------------------------------------------------

    @staticmethod
    async def call(breaker: Any, *args: Any, timeout: Optional[float] = None) -> Any:  # type: ignore[override]
        """Call the protected service with ``args`` through the breaker. Raises
        ``CircuitOpenError`` when the circuit rejects the call; otherwise returns what the
        service returned (including ``("error", reason)`` results, which count as
        failures) or re-raises its exception. ``timeout`` overrides ``call_timeout``.

        >>> pid = await CircuitBreaker.start_link(service=lambda symbol: 42, name="prices")
        >>> await CircuitBreaker.call("prices", "ACME")
        42
        """
        answer = await GenServer.call(breaker, "ask")
        if answer[0] == "rejected":
            raise CircuitOpenError(breaker, answer[1])
        _ok, gen, service, call_timeout = answer
        limit = call_timeout if timeout is None else timeout
        try:
            result = await _invoke(service, args, limit)
        except BaseException:
            GenServer.cast(breaker, ("failure", gen))
            raise
        failed = type(result) is tuple and len(result) == 2 and result[0] == "error"
        GenServer.cast(breaker, ("failure" if failed else "success", gen))
        return result

    @staticmethod
    async def state(breaker: Any) -> str:
        """"closed", "open" or "half_open"."""
        return await GenServer.call(breaker, "state")  # type: ignore[no-any-return]

    @staticmethod
    async def info(breaker: Any) -> Dict[str, Any]:
        """state, consecutive failures and trials in flight."""
        return await GenServer.call(breaker, "info")  # type: ignore[no-any-return]

    @staticmethod
    async def reset(breaker: Any) -> str:
        """Force the circuit closed."""
        return await GenServer.call(breaker, "reset")  # type: ignore[no-any-return]


def _options(arg: Any, kw: Dict[str, Any]) -> Dict[str, Any]:
    opts = dict(kw)
    if arg is not None:
        if not isinstance(arg, dict):
            raise TypeError("CircuitBreaker options must be a dict, got %r" % (arg,))
        opts.update(arg)
    if opts["service"] is None:
        raise ValueError("CircuitBreaker needs a service (a callable or a GenServer name/pid)")
    for key in ("failure_threshold", "half_open_max_calls"):
        if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 1:
            raise ValueError("CircuitBreaker %s must be an int >= 1, got %r" % (key, opts[key]))
    for key in ("reset_timeout", "call_timeout"):
        v = opts[key]
        if v is None and key == "call_timeout":
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ValueError("CircuitBreaker %s must be seconds >= 0, got %r" % (key, v))
    return opts


async def _start_from_dict(cls: Any, arg: Dict[str, Any]) -> Any:
    return await cls.start_link(arg, name=arg.get("name"))


def _notify(events: Any, event: Any) -> None:
    from .gen_event import EventManager
    EventManager.notify(events, event)


async def _invoke(service: Any, args: Any, limit: Optional[float]) -> Any:
    if callable(service) and not isinstance(service, (str, tuple, _core.Pid)):
        if inspect.iscoroutinefunction(service):
            if limit is None:
                return await service(*args)
            return await _with_timeout(service(*args), limit)
        return service(*args)
    request = args[0] if len(args) == 1 else args
    return await GenServer.call(service, request, limit)


async def _with_timeout(coro: Any, limit: float) -> Any:
    """Run an async service with a deadline on the timer wheel. It runs as an asyncio task
    (so it can be cancelled at the deadline), not as part of the calling process."""
    import asyncio
    task = asyncio.ensure_future(coro)
    me = _core.self()
    t = _core.send_after(me, ("$cb_deadline", id(task)), limit)
    task.add_done_callback(lambda _t: _core.send(me, ("$cb_done", id(task))))
    msg = await _core.receive(lambda m: type(m) is tuple and len(m) == 2
                              and m[0] in ("$cb_deadline", "$cb_done") and m[1] == id(task))
    _core.cancel_timer(t)
    if msg[0] == "$cb_deadline":
        task.cancel()
        raise _core.Exit(("timeout", ("CircuitBreaker", "call", limit)))
    return task.result()
