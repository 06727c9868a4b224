"""Child specifications, shared by ``Supervisor``, ``DynamicSupervisor`` and ``TaskSupervisor``.

A child specification says how a supervisor starts, restarts and stops one child. It is a
dict with the keys of Elixir's ``%{id:, start:, restart:, shutdown:, type:, modules:}``:

============  ==========================================================================
key           meaning
============  ==========================================================================
id            any hashable value naming the child inside its supervisor (required)
start         ``(callable, args)`` or ``(callable, args, kwargs)`` (required). The callable
              (usually an async ``start_link``) must start a process *linked to the caller*
              and return its pid; it may also return ``None``/``"ignore"``, ``("ok", pid)``
              or ``("error", reason)``, or raise (``StartError`` included)
restart       ``"permanent"`` (default: always restarted), ``"transient"`` (restarted only
              after an abnormal exit, i.e. not ``normal``/``shutdown``/``("shutdown", x)``)
              or ``"temporary"`` (never restarted, forgotten when it exits)
shutdown      seconds to wait after ``exit(child, "shutdown")`` before killing it,
              ``"brutal_kill"`` (kill at once) or ``"infinity"``; default 5 for workers,
              ``"infinity"`` for supervisors
type          ``"worker"`` (default) or ``"supervisor"``
modules       a list (default: the class owning the start callable, or the callable) or
              ``"dynamic"``; informative only
significant   ``False`` (default) or ``True`` for a non-permanent child whose exit shuts
              its supervisor down (``auto_shutdown``; static supervisors only)
============  ==========================================================================

Wherever a supervisor takes a child spec it also takes the Elixir shorthands:

* ``Counter`` (a class): ``Counter.child_spec(None)``;
* ``(Counter, arg)``: ``Counter.child_spec(arg)``.

A class with its own ``child_spec(arg)`` classmethod decides its spec; any other class with
a ``start_link`` (every ``GenServer`` subclass) gets the default one, as ``use GenServer``
gives in Elixir: ``{"id": cls, "start": (cls.start_link, (arg,))}``, permanent, 5 seconds,
worker. Durations are seconds.

>>> child_spec((Counter, 0), id="c1")["id"]
'c1'
>>> default_child_spec(Counter, 7)["start"] == (Counter.start_link, (7,))
True
"""
from __future__ import annotations

import inspect
import logging
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Tuple

from . import _core
from ._core import Exit, Pid, Reference, StartError

_log = logging.getLogger("pyotp")

__all__ = ["ChildSpecError", "SupervisorError", "child_spec", "default_child_spec",
           "normalize_child", "validate_child"]

_KEYS = ("id", "start", "restart", "shutdown", "type", "modules", "significant")
_RESTARTS = ("permanent", "transient", "temporary")
_TYPES = ("worker", "supervisor")

RESTARTING = "restarting"   # which_children's marker for a child whose restart failed


class ChildSpecError(ValueError):
    """A child specification (or supervisor option) is malformed; the message names the
    bad key and value.

    >>> def f(): pass
    >>> await Supervisor.start_link([{"id": "a", "start": (f, ()), "restart": "sometimes"}],
    ...                             strategy="one_for_one")
    Traceback (most recent call last):
    ...
    ChildSpecError: invalid 'restart' 'sometimes' in child spec 'a': ...
    """


class SupervisorError(Exception):
    """A supervisor refused a request; ``reason`` is what Elixir returns as
    ``{:error, reason}``: ``"not_found"``, ``"running"`` or ``"restarting"``.

    >>> try:
    ...     await Supervisor.delete_child(sup, "nope")
    ... except SupervisorError as e:
    ...     e.reason
    'not_found'
    """

    def __init__(self, reason: Any) -> None:
        Exception.__init__(self, reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------
# Building specs


def default_child_spec(cls: type, arg: Any = None, **overrides: Any) -> Dict[str, Any]:
    """The spec ``use GenServer`` would give ``cls``: id ``cls``, start
    ``(cls.start_link, (arg,))``, permanent, 5 s shutdown, worker; ``overrides`` replace
    keys. Use it inside a custom ``child_spec`` classmethod.

    >>> class Worker(GenServer):
    ...     @classmethod
    ...     def child_spec(cls, arg):
    ...         return default_child_spec(cls, arg, restart="transient")
    """
    start_link = getattr(cls, "start_link", None)
    if start_link is None or not callable(start_link):
        raise ChildSpecError("%s has no start_link, so it cannot be a supervisor child; "
                             "give a child spec dict with 'id' and 'start'" % _name(cls))
    spec: Dict[str, Any] = {"id": cls, "start": (start_link, (arg,)), "restart": "permanent",
                            "shutdown": 5, "type": "worker"}
    return _override(spec, overrides)


def child_spec(spec: Any, **overrides: Any) -> Dict[str, Any]:
    """Elixir's ``Supervisor.child_spec/2``: expand a shorthand (``Module`` or
    ``(Module, arg)``) or copy a spec dict, then apply ``overrides`` (only the spec keys
    are allowed). Typically used to give the same class several ids.

    >>> child_spec(Counter, id="counter_b")["id"]
    'counter_b'
    """
    return _override(dict(_expand(spec)), overrides)


def _override(spec: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    for key, value in overrides.items():
        if key not in _KEYS:
            raise ChildSpecError("unknown key %r in child specification override (allowed: %s)"
                                 % (key, ", ".join(_KEYS)))
        spec[key] = value
    return spec


def _expand(spec: Any) -> Dict[str, Any]:
    """Shorthand -> dict (not yet validated)."""
    if isinstance(spec, dict):
        return spec
    if isinstance(spec, type):
        return _from_module(spec, None)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], type):
        return _from_module(spec[0], spec[1])
    raise ChildSpecError(
        "supervisors expect each child to be a class (with child_spec or start_link), a "
        "(class, arg) tuple, or a child spec dict with at least 'id' and 'start'; got %r" % (spec,))


def _from_module(cls: type, arg: Any) -> Dict[str, Any]:
    cs = getattr(cls, "child_spec", None)
    if cs is not None and callable(cs):
        spec = cs(arg)
        if not isinstance(spec, dict):
            raise ChildSpecError("%s.child_spec(%r) returned %r, not a child spec dict"
                                 % (_name(cls), arg, spec))
        return spec
    return default_child_spec(cls, arg)


def _name(x: Any) -> str:
    return getattr(x, "__qualname__", None) or getattr(x, "__name__", None) or repr(x)


# ---------------------------------------------------------------------------------------
# Validation


class Child:
    """Internal: one validated child of a supervisor (and, for static supervisors, its pid:
    a Pid, None when not running, or RESTARTING)."""

    __slots__ = ("id", "fn", "args", "kwargs", "restart", "shutdown", "type", "modules",
                 "significant", "pid")

    def __init__(self, id: Any, fn: Callable[..., Any], args: Tuple[Any, ...],
                 kwargs: Optional[Dict[str, Any]], restart: str, shutdown: Any, type: str,
                 modules: Any, significant: bool) -> None:
        self.id = id
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.restart = restart
        self.shutdown = shutdown
        self.type = type
        self.modules = modules
        self.significant = significant
        self.pid: Any = None

    def to_spec(self) -> Dict[str, Any]:
        start: Tuple[Any, ...] = (self.fn, self.args) if not self.kwargs else (self.fn, self.args, dict(self.kwargs))
        return {"id": self.id, "start": start, "restart": self.restart, "shutdown": self.shutdown,
                "type": self.type, "modules": self.modules, "significant": self.significant}

    def __repr__(self) -> str:
        return "<Child id=%r pid=%r %s %s>" % (self.id, self.pid, self.restart, self.type)


def validate_child(spec: Any, *, auto_shutdown: Optional[str] = None) -> Child:
    """Expand and validate one child spec; raises ChildSpecError naming the bad key/value.
    ``auto_shutdown`` (the supervisor's flag) decides whether ``significant=True`` is allowed;
    None means the caller does not support significant children at all."""
    d = _expand(spec)
    for key in d:
        if key not in _KEYS:
            raise ChildSpecError("unknown key %r in child spec %r (allowed: %s)"
                                 % (key, d, ", ".join(_KEYS)))
    if "id" not in d:
        raise ChildSpecError("child spec %r has no 'id'" % (d,))
    cid = d["id"]
    try:
        hash(cid)
    except TypeError:
        raise ChildSpecError("invalid 'id' %r: a child id must be hashable" % (cid,)) from None
    if "start" not in d:
        raise ChildSpecError("child spec %r has no 'start'" % (cid,))
    fn, args, kwargs = _check_start(cid, d["start"])
    restart = d.get("restart", "permanent")
    if not isinstance(restart, str) or restart not in _RESTARTS:
        raise ChildSpecError("invalid 'restart' %r in child spec %r: expected 'permanent', "
                             "'transient' or 'temporary'" % (restart, cid))
    ctype = d.get("type", "worker")
    if not isinstance(ctype, str) or ctype not in _TYPES:
        raise ChildSpecError("invalid 'type' %r in child spec %r: expected 'worker' or 'supervisor'"
                             % (ctype, cid))
    shutdown = d.get("shutdown", 5 if ctype == "worker" else "infinity")
    if isinstance(shutdown, str):
        if shutdown not in ("brutal_kill", "infinity"):
            raise ChildSpecError("invalid 'shutdown' %r in child spec %r: expected seconds >= 0, "
                                 "'brutal_kill' or 'infinity'" % (shutdown, cid))
    elif isinstance(shutdown, bool) or not isinstance(shutdown, (int, float)) or not shutdown >= 0:
        raise ChildSpecError("invalid 'shutdown' %r in child spec %r: expected seconds >= 0, "
                             "'brutal_kill' or 'infinity'" % (shutdown, cid))
    modules = d.get("modules")
    if modules is None:
        owner = getattr(fn, "__self__", None)
        modules = [owner if isinstance(owner, type) else fn]
    elif modules != "dynamic" and not isinstance(modules, (list, tuple)):
        raise ChildSpecError("invalid 'modules' %r in child spec %r: expected a list or 'dynamic'"
                             % (modules, cid))
    elif isinstance(modules, tuple):
        modules = list(modules)
    significant = d.get("significant", False)
    if not isinstance(significant, bool):
        raise ChildSpecError("invalid 'significant' %r in child spec %r: expected True or False"
                             % (significant, cid))
    if significant:
        if auto_shutdown is None:
            raise ChildSpecError("child spec %r is significant, but this supervisor does not "
                                 "support auto_shutdown" % (cid,))
        if auto_shutdown == "never":
            raise ChildSpecError("child spec %r is significant, but the supervisor's "
                                 "auto_shutdown is 'never'" % (cid,))
        if restart == "permanent":
            raise ChildSpecError("child spec %r: a permanent child cannot be significant" % (cid,))
    return Child(cid, fn, args, kwargs, restart, shutdown, ctype, modules, significant)


def _check_start(cid: Any, start: Any) -> Tuple[Callable[..., Any], Tuple[Any, ...], Optional[Dict[str, Any]]]:
    if isinstance(start, (tuple, list)) and len(start) in (2, 3) and callable(start[0]) \
            and isinstance(start[1], (tuple, list)) \
            and (len(start) == 2 or isinstance(start[2], dict)):
        return start[0], tuple(start[1]), (dict(start[2]) if len(start) == 3 and start[2] else None)
    raise ChildSpecError("invalid 'start' %r in child spec %r: expected (callable, args) or "
                         "(callable, args, kwargs), e.g. (Counter.start_link, (0,))" % (start, cid))


def normalize_child(spec: Any) -> Dict[str, Any]:
    """Expand a shorthand and validate it; returns the complete spec dict (all keys).

    >>> normalize_child(Counter)["restart"]
    'permanent'
    """
    return validate_child(spec, auto_shutdown="any_significant").to_spec()


def validate_children(specs: Iterable[Any], auto_shutdown: Optional[str]) -> List[Child]:
    """Validate a static supervisor's children; duplicate ids are an error."""
    if isinstance(specs, (str, bytes, dict)) or not isinstance(specs, Iterable):
        raise ChildSpecError("children must be a list of child specs, got %r" % (specs,))
    out: List[Child] = []
    seen = set()
    for s in specs:
        c = validate_child(s, auto_shutdown=auto_shutdown)
        if c.id in seen:
            raise ChildSpecError(
                "duplicate child id %r: every child of a supervisor needs its own id; to run "
                "the same module twice give each an id, e.g. Supervisor.child_spec((%s, arg), "
                "id=\"%s_2\") or a child spec dict {\"id\": ..., \"start\": ...}"
                % (c.id, getattr(c.id, "__name__", "Module"),
                   str(getattr(c.id, "__name__", c.id)).lower()))
        seen.add(c.id)
        out.append(c)
    return out


def callback_module(cls: type, base: type, arg: Any, options: Dict[str, Any],
                    returning: str) -> Tuple[type, Any]:
    """``start_link`` of a supervisor module (a subclass of ``base``): its options come
    from its ``init``, which it must define. Returns ``(module, init_arg)``."""
    if options:
        raise TypeError("%s.start_link takes only (arg, name=, timeout=); its options come "
                        "from its init: unexpected %s" % (cls.__qualname__, ", ".join(options)))
    if cls.init is base.init:  # type: ignore[attr-defined]
        raise TypeError("%s must define init(self, arg) returning %s" % (cls.__qualname__, returning))
    return cls, arg


def check_intensity(max_restarts: Any, max_seconds: Any) -> None:
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ChildSpecError("invalid max_restarts %r: expected an int >= 0" % (max_restarts,))
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not max_seconds > 0:
        raise ChildSpecError("invalid max_seconds %r: expected seconds > 0" % (max_seconds,))


# ---------------------------------------------------------------------------------------
# Machinery shared by the supervisors (runs inside the supervisor process)


class RestartIntensity:
    """OTP's restart intensity: at most ``max_restarts`` restarts in any ``max_seconds``
    window. ``add(now)`` records one restart and says whether it is still allowed.

    >>> r = RestartIntensity(1, 5)
    >>> r.add(0.0), r.add(1.0), r.add(10.0)
    (True, False, True)
    """

    __slots__ = ("max_restarts", "max_seconds", "restarts")

    def __init__(self, max_restarts: int, max_seconds: float) -> None:
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self.restarts: Deque[float] = deque()   # oldest first

    def add(self, now: float) -> bool:
        r = self.restarts
        threshold = now - self.max_seconds
        while r and r[0] < threshold:
            r.popleft()
        r.append(now)
        # more than max_restarts + 1 entries never matter (and keep memory bounded)
        if len(r) > self.max_restarts + 1:
            r.popleft()
        return len(r) <= self.max_restarts


def is_shutdown_reason(reason: Any) -> bool:
    """normal, shutdown and ("shutdown", x): the exits a transient child is not restarted for."""
    if isinstance(reason, str):
        return reason == "normal" or reason == "shutdown"
    return type(reason) is tuple and len(reason) == 2 and isinstance(reason[0], str) and reason[0] == "shutdown"


async def start_child_fn(fn: Callable[..., Any], args: Tuple[Any, ...],
                         kwargs: Optional[Dict[str, Any]]) -> Tuple[str, Any]:
    """Run a child's start function inside the supervisor: ("ok", pid) | ("ignore", None)
    | ("error", reason), as supervisor.erl's do_start_child_i."""
    try:
        r = fn(*args, **kwargs) if kwargs else fn(*args)
        if inspect.isawaitable(r):
            r = await r
    except StartError as e:
        return ("error", e.reason)
    except Exit as e:
        return ("error", e.reason)
    except Exception as e:
        return ("error", e)
    if type(r) is Pid:
        return ("ok", r)
    if r is None or (isinstance(r, str) and r == "ignore"):
        return ("ignore", None)
    if type(r) is tuple and len(r) in (2, 3) and isinstance(r[0], str):
        if r[0] == "ok" and type(r[1]) is Pid:
            return ("ok", r[1])
        if r[0] == "error" and len(r) == 2:
            return ("error", r[1])
    return ("error", r)


def _is_exit_from(pid: Any) -> Callable[[Any], bool]:
    return lambda m: (type(m) is tuple and len(m) == 3 and type(m[1]) is Pid and m[1] == pid
                      and m[0] == "EXIT")


def _is_down(ref: Any) -> Callable[[Any], bool]:
    return lambda m: (type(m) is tuple and len(m) == 5 and (m[1] is ref or (type(m[1]) is Reference and m[1] == ref))
                      and m[0] == "DOWN")


async def unlink_flush(pid: Any, default: Any) -> Any:
    """Unlink pid and take its EXIT message if one is queued (its real exit reason)."""
    _core.unlink(pid)
    try:
        m = await _core.receive(_is_exit_from(pid), 0)
    except TimeoutError:
        return default
    return m[2]


async def shutdown_child(pid: Any, shutdown: Any, restart: str) -> Any:
    """supervisor.erl's shutdown/1, run inside the supervisor: stop one child the OTP way
    and return None if it ended as asked, else the unexpected reason (to be reported).

    brutal_kill: exit(pid, "kill"); seconds: exit(pid, "shutdown"), wait that long for the
    DOWN, then kill; "infinity": wait for ever."""
    ref = _core.monitor(pid)
    down = _is_down(ref)
    if shutdown == "brutal_kill":
        _core.exit(pid, "kill")
        m = await _core.receive(down)
        reason = await unlink_flush(pid, m[4])
        if reason == "killed" or (restart != "permanent" and is_shutdown_reason(reason)):
            return None
        return reason
    _core.exit(pid, "shutdown")
    try:
        m = await _core.receive(down, None if shutdown == "infinity" else shutdown)
    except TimeoutError:
        _core.exit(pid, "kill")
        m = await _core.receive(down)
    reason = await unlink_flush(pid, m[4])
    if reason == "shutdown" or (restart != "permanent" and is_shutdown_reason(reason)):
        return None
    return reason


def report(sup_name: Any, context: str, reason: Any, child_id: Any, pid: Any,
           level: int = logging.ERROR) -> None:
    """A supervisor report through logging (logger "pyotp"), OTP's single-line layout.
    ``record.pyotp_report`` carries the fields as a dict for handlers and tests."""
    if not _log.isEnabledFor(level):
        return
    _log.log(level, "Supervisor: %s. Context: %s. Reason: %r. Offender: id=%r,pid=%r.",
             sup_name, context, reason, child_id, pid,
             extra={"pyotp_report": {"supervisor": sup_name, "context": context,
                                     "reason": reason, "id": child_id, "pid": pid}})


def report_started(sup_name: Any, child_id: Any, pid: Any) -> None:
    """OTP's progress report (info level)."""
    if _log.isEnabledFor(logging.INFO):
        _log.info("Supervisor: %s. Started: id=%r,pid=%r.", sup_name, child_id, pid,
                  extra={"pyotp_report": {"supervisor": sup_name, "context": "progress",
                                          "reason": None, "id": child_id, "pid": pid}})


def sys_state(strategy: str, children: Iterable[Tuple[Any, Any, str]]) -> Tuple[str, List[Tuple[Any, Any, str]]]:
    """What sys:get_state shows of a supervisor (Supervisor and DynamicSupervisor):
    ``(strategy, [(id, pid or None, type)])``, ids other than str/int shown by repr so
    that a BEAM node can receive it. Its state cannot be replaced (sys:replace_state
    answers callback_failed)."""
    out = []
    for cid, pid, kind in children:
        out.append((cid if isinstance(cid, (str, int)) else repr(cid),
                    pid if isinstance(pid, Pid) else None, kind))
    return strategy, out
