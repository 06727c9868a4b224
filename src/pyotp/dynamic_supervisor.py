"""DynamicSupervisor: a supervisor that starts with no children and gets them on demand
(Elixir's ``DynamicSupervisor``).

Children are added with ``start_child(sup, spec)`` and identified by pid (the spec's
``id`` is required but ignored); strategy is always ``one_for_one``; restart intensity,
restart types and shutdown work as in ``Supervisor``. Options:

* ``max_children``: at most this many children (``"infinity"`` by default); past it
  ``start_child`` raises ``StartError("max_children")`` (Elixir returns
  ``{:error, :max_children}``; ``pyotp`` raises, as every start error).
* ``extra_arguments``: a list prepended to every child's start arguments, so one
  supervisor can hand the same context to all its children.
* ``max_restarts`` / ``max_seconds``: restart intensity (defaults 3 and 5).

On shutdown all children are stopped *concurrently* (each gets ``exit(pid, "shutdown")``,
and is killed when its own ``shutdown`` seconds have passed), as Elixir does, since a
dynamic supervisor may have very many.

>>> async def main():
...     sup = await DynamicSupervisor.start_link(strategy="one_for_one", max_children=2)
...     a = await DynamicSupervisor.start_child(sup, (Counter, 1))
...     b = await DynamicSupervisor.start_child(sup, (Counter, 2))
...     try:
...         await DynamicSupervisor.start_child(sup, (Counter, 3))
...     except pyotp.StartError as e:
...         return e.reason, (await DynamicSupervisor.count_children(sup))["active"]
>>> pyotp.run(main)
('max_children', 2)

Module form, as ``Supervisor``::

    class RoomSupervisor(DynamicSupervisor):
        def init(self, arg):
            return DynamicSupervisor.init(max_children=1000, extra_arguments=[arg])
"""
from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

from . import _core
from ._core import Pid, Reference, StartError
from .child_spec import sys_state
from .child_spec import (Child, ChildSpecError, RestartIntensity, SupervisorError, _is_down, _override,
                         callback_module, check_intensity, is_shutdown_reason, report, report_started,
                         start_child_fn, unlink_flush, validate_child)
from .gen_server import GenServer

_log = logging.getLogger("pyotp")

__all__ = ["DynamicSupervisor"]

_FLAG_KEYS = ("strategy", "max_restarts", "max_seconds", "max_children", "extra_arguments")


def _check_flags(flags: Any) -> Dict[str, Any]:
    if not isinstance(flags, dict):
        raise ChildSpecError("DynamicSupervisor flags must be a dict, got %r" % (flags,))
    for k in flags:
        if k not in _FLAG_KEYS:
            raise ChildSpecError("unknown DynamicSupervisor option %r (allowed: %s)"
                                 % (k, ", ".join(_FLAG_KEYS)))
    f = {"strategy": flags.get("strategy", "one_for_one"),
         "max_restarts": flags.get("max_restarts", 3), "max_seconds": flags.get("max_seconds", 5),
         "max_children": flags.get("max_children", "infinity"),
         "extra_arguments": flags.get("extra_arguments", [])}
    if f["strategy"] != "one_for_one":
        raise ChildSpecError("invalid strategy %r: a DynamicSupervisor supports only 'one_for_one'"
                             % (f["strategy"],))
    check_intensity(f["max_restarts"], f["max_seconds"])
    mc = f["max_children"]
    if not (mc == "infinity" or (isinstance(mc, int) and not isinstance(mc, bool) and mc >= 0)):
        raise ChildSpecError("invalid max_children %r: expected an int >= 0 or 'infinity'" % (mc,))
    ea = f["extra_arguments"]
    if not isinstance(ea, (list, tuple)):
        raise ChildSpecError("invalid extra_arguments %r: expected a list" % (ea,))
    f["extra_arguments"] = tuple(ea)
    return f


class _DynChild:
    """Internal: one dynamic child (spec without id, plus restarting flag)."""

    __slots__ = ("child", "restarting")

    def __init__(self, child: Child, restarting: bool = False) -> None:
        self.child = child
        self.restarting = restarting


def _is_kill_timer(tags: Dict[Any, Any]) -> Any:
    return lambda m: (type(m) is tuple and len(m) == 2 and type(m[1]) is Reference
                      and m[0] == "$dsup_kill" and m[1] in tags)


class _DynamicSupervisorServer(GenServer):
    """The DynamicSupervisor process (a GenServer trapping exits); state on the instance."""
    behaviour_name = "DynamicSupervisor"

    def system_get_state(self, state: Any) -> Any:
        return sys_state("one_for_one", [(None, pid, c.child.type) for pid, c in self.children.items()])

    def system_replace_state(self, fun: Any, state: Any) -> Any:
        raise NotImplementedError("a DynamicSupervisor's state cannot be replaced")

    async def init(self, arg: Tuple[Any, Any, Any]) -> Any:
        module, init_arg, name = arg
        _core.process_flag("trap_exit", True)
        self.label = repr(name) if name is not None else "%r (%s)" % (
            _core.self(), getattr(module, "__qualname__", "DynamicSupervisor"))
        # pid -> _DynChild, insertion ordered; a child whose restart failed stays under its
        # old (dead) pid with restarting=True until the retry succeeds
        self.children: Dict[Any, _DynChild] = {}
        if module is None:
            result = init_arg
        else:
            result = module().init(init_arg)
            if inspect.isawaitable(result):
                result = await result
        if isinstance(result, str) and result == "ignore":
            return "ignore"
        if not (type(result) is tuple and len(result) == 2 and result[0] == "ok"):
            return ("stop", ("bad_return", (module, "init", result)))
        try:
            f = _check_flags(result[1])
        except ChildSpecError as e:
            return ("stop", ("supervisor_data", e))
        self.max_children = f["max_children"]
        self.extra: Tuple[Any, ...] = f["extra_arguments"]
        self.intensity = RestartIntensity(f["max_restarts"], f["max_seconds"])
        return ("ok", None)

    async def _start(self, c: Child) -> Tuple[str, Any]:
        args = self.extra + c.args if self.extra else c.args
        st, v = await start_child_fn(c.fn, args, c.kwargs)
        if st == "ok":
            report_started(self.label, None, v)
        return st, v

    # -- requests ---------------------------------------------------------------------

    async def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if req == "which_children":
            return ("reply", [(None, "restarting" if d.restarting else pid, d.child.type, d.child.modules)
                              for pid, d in self.children.items()], None)
        if req == "count_children":
            active = sups = workers = 0
            for d in self.children.values():
                if not d.restarting:
                    active += 1
                if d.child.type == "supervisor":
                    sups += 1
                else:
                    workers += 1
            return ("reply", {"specs": len(self.children), "active": active,
                              "supervisors": sups, "workers": workers}, None)
        if type(req) is tuple and len(req) == 2:
            op, arg = req
            if op == "start_child":
                return ("reply", await self._start_child(arg), None)
            if op == "terminate_child":
                found = self.children.get(arg) if type(arg) is Pid else None
                if found is None:
                    return ("reply", ("error", "not_found"), None)
                await self._terminate_children({arg: found})
                del self.children[arg]
                return ("reply", "ok", None)
        return ("reply", ("error", ("unknown_request", req)), None)

    async def _start_child(self, spec: Any) -> Any:
        try:
            c = validate_child(spec)
        except ChildSpecError as e:
            return ("error", e)
        if self.max_children != "infinity" and len(self.children) >= self.max_children:
            return ("error", "max_children")
        st, v = await self._start(c)
        if st == "ok":
            self.children[v] = _DynChild(c)
            return ("ok", v)
        if st == "ignore":
            return ("ok", None)
        return ("error", v)

    # -- exits and restarts -----------------------------------------------------------

    async def handle_info(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and len(msg) == 3 and isinstance(msg[0], str) and msg[0] == "EXIT":
            pid, reason = msg[1], msg[2]
            d = self.children.get(pid) if type(pid) is Pid else None
            if d is None or d.restarting:
                return ("noreply", None)
            c = d.child
            if c.restart == "permanent":
                report(self.label, "child_terminated", reason, None, pid)
                return await self._restart(pid, d)
            if is_shutdown_reason(reason):
                del self.children[pid]
                return ("noreply", None)
            report(self.label, "child_terminated", reason, None, pid)
            if c.restart == "transient":
                return await self._restart(pid, d)
            del self.children[pid]
            return ("noreply", None)
        if type(msg) is tuple and len(msg) == 2 and msg[0] == "$gen_restart":
            d = self.children.get(msg[1])
            if d is not None and d.restarting:
                return await self._restart(msg[1], d)
            return ("noreply", None)
        _log.error("DynamicSupervisor %s received unexpected message: %r", self.label, msg)
        return ("noreply", None)

    async def _restart(self, old_pid: Any, d: _DynChild) -> Any:
        if not self.intensity.add(time.monotonic()):
            report(self.label, "shutdown", "reached_max_restart_intensity", None, old_pid)
            del self.children[old_pid]
            return ("stop", "shutdown", None)
        st, v = await self._start(d.child)
        if st == "error":
            report(self.label, "start_error", v, None, ("restarting", old_pid))
            d.restarting = True
            _core.send(_core.self(), ("$gen_restart", old_pid))
            return ("noreply", None)
        del self.children[old_pid]
        if st == "ok":
            self.children[v] = _DynChild(d.child)
        return ("noreply", None)

    # -- stopping ---------------------------------------------------------------------

    async def _terminate_children(self, children: Dict[Any, _DynChild]) -> None:
        """Elixir's terminate_children: monitor and unlink every child, send each its
        shutdown signal, then collect the DOWNs; children still alive after their own
        ``shutdown`` seconds are killed (one timer per distinct shutdown value)."""
        waiting: Dict[Any, Tuple[Any, _DynChild]] = {}    # monitor ref -> (pid, child)
        by_time: Dict[Any, List[Any]] = {}
        errors: List[Tuple[Any, Any]] = []
        for pid, d in children.items():
            if d.restarting:
                continue
            c = d.child
            ref = _core.monitor(pid)
            if not _core.is_alive(pid):
                # already dead: its EXIT (queued, we are linked) holds the real reason
                m = await _core.receive(_is_down(ref))
                reason = await unlink_flush(pid, m[4])
                if not (reason == "normal" and c.restart != "permanent"):
                    errors.append((pid, reason))
                continue
            _core.unlink(pid)
            if c.shutdown == "brutal_kill":
                _core.exit(pid, "kill")
            else:
                _core.exit(pid, "shutdown")
                if c.shutdown != "infinity":
                    by_time.setdefault(c.shutdown, []).append(pid)
            waiting[ref] = (pid, d)
        timers: Dict[Any, Tuple[Any, List[Any]]] = {}
        for seconds, pids in by_time.items():
            tag = _core.make_ref()
            timers[tag] = (_core.send_after(_core.self(), ("$dsup_kill", tag), seconds), pids)
        is_timer = _is_kill_timer(timers)
        match = lambda m: ((type(m) is tuple and len(m) == 5 and type(m[1]) is Reference
                            and m[1] in waiting and m[0] == "DOWN") or is_timer(m))
        while waiting:
            m = await _core.receive(match)
            if len(m) == 2:
                for pid in timers.pop(m[1])[1]:
                    _core.exit(pid, "kill")
                continue
            pid, d = waiting.pop(m[1])
            reason, c = m[4], d.child
            if c.shutdown == "brutal_kill":
                ok = reason == "killed"
            else:
                ok = reason == "shutdown" or (type(reason) is tuple and len(reason) == 2
                                              and reason[0] == "shutdown") \
                    or (reason == "normal" and c.restart != "permanent")
            if not ok:
                errors.append((pid, reason))
        for tag, (timer, _pids) in timers.items():
            if _core.cancel_timer(timer) is False:
                try:
                    await _core.receive(_is_kill_timer({tag: None}), 0)
                except TimeoutError:
                    pass
        for pid, reason in errors:
            report(self.label, "shutdown_error", reason, None, pid)

    async def terminate(self, reason: Any, state: Any) -> Any:
        if getattr(self, "children", None):
            await self._terminate_children(self.children)
            self.children = {}
        return "ok"


def _raise(r: Any) -> Any:
    if type(r) is tuple and len(r) == 2 and r[0] == "ok":
        return r[1]
    if r == "ok":
        return "ok"
    if isinstance(r[1], ChildSpecError):
        raise r[1]
    if r[1] == "not_found":
        raise SupervisorError("not_found")
    raise StartError(r[1])


class DynamicSupervisor:
    """Base class of module-based dynamic supervisors, and the API (see the module
    documentation). Subclasses define ``init(self, arg)`` returning
    ``DynamicSupervisor.init(...)``.

    >>> sup = await DynamicSupervisor.start_link(name="rooms")
    >>> pid = await DynamicSupervisor.start_child("rooms", (Counter, 0))
    """

    @staticmethod
    def init(*, strategy: str = "one_for_one", max_restarts: int = 3, max_seconds: float = 5,
             max_children: Any = "infinity", extra_arguments: Sequence[Any] = ()) -> Tuple[str, Dict[str, Any]]:
        """Elixir's ``DynamicSupervisor.init/1``: the flags a module's ``init`` returns.

        >>> DynamicSupervisor.init(max_children=10)[0]
        'ok'
        """
        return ("ok", {"strategy": strategy, "max_restarts": max_restarts, "max_seconds": max_seconds,
                       "max_children": max_children,
                       "extra_arguments": (list(extra_arguments) if isinstance(extra_arguments, (list, tuple))
                                           else extra_arguments)})

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Any = None, timeout: Optional[float] = None,
                         **options: Any) -> Optional[Pid]:
        """Start a dynamic supervisor linked to the caller. ``DynamicSupervisor.start_link(
        strategy="one_for_one", max_children="infinity", extra_arguments=[], max_restarts=3,
        max_seconds=5, name=None)``, or ``MyDynSup.start_link(arg, name=None)`` for a module.

        >>> sup = await DynamicSupervisor.start_link(max_children=100, name="workers")
        """
        if cls is DynamicSupervisor:
            if arg is not None:
                raise TypeError("DynamicSupervisor.start_link takes options as keywords only, "
                                "got the positional %r" % (arg,))
            result = DynamicSupervisor.init(**options)
            _check_flags(result[1])
            module = None
            init_arg: Any = result
        else:
            module, init_arg = callback_module(cls, DynamicSupervisor, arg, options,
                                               "DynamicSupervisor.init(...)")
        return cast(Optional[Pid], await _DynamicSupervisorServer.start_link(
            (module, init_arg, name), name=name, timeout=timeout))

    @classmethod
    def child_spec(cls, arg: Any = None, **overrides: Any) -> Dict[str, Any]:
        """On a subclass: id the class, start ``(cls.start_link, (arg,))``, type supervisor.
        On DynamicSupervisor itself ``arg`` is a dict of start_link options (as Elixir's
        ``{DynamicSupervisor, opts}``), the id being the name if one is given.

        >>> DynamicSupervisor.child_spec({"name": "rooms"})["id"]
        'rooms'
        """
        if cls is DynamicSupervisor:
            opts = dict(arg or {})
            name = opts.get("name")
            cid: Any = DynamicSupervisor if name is None else (name[1] if isinstance(name, tuple) else name)
            spec = {"id": cid, "start": (DynamicSupervisor.start_link, (), opts), "type": "supervisor"}
        else:
            spec = {"id": cls, "start": (cls.start_link, (arg,)), "type": "supervisor"}
        return _override(spec, overrides)

    @staticmethod
    async def start_child(supervisor: Any, spec: Any) -> Optional[Pid]:
        """Start a child under the supervisor (its start args get ``extra_arguments``
        prepended); returns its pid, or None if its start returned "ignore". Raises
        StartError("max_children"), StartError(reason) if the start failed, or
        ChildSpecError.

        >>> pid = await DynamicSupervisor.start_child(sup, (Counter, 0))
        """
        c = validate_child(spec)
        return cast(Optional[Pid], _raise(await _core.call(supervisor, ("start_child", c.to_spec()), None)))

    @staticmethod
    async def terminate_child(supervisor: Any, pid: Pid) -> str:
        """Stop the child ``pid`` (as the supervisor would on shutdown) and forget it;
        "ok" or SupervisorError("not_found").

        >>> dsup = await DynamicSupervisor.start_link()
        >>> pid = await DynamicSupervisor.start_child(dsup, (Counter, 0))
        >>> await DynamicSupervisor.terminate_child(dsup, pid)
        'ok'
        """
        return cast(str, _raise(await _core.call(supervisor, ("terminate_child", pid), None)))

    @staticmethod
    async def which_children(supervisor: Any) -> List[Tuple[Any, Any, str, Any]]:
        """``[(None, pid | "restarting", type, modules)]`` (the id is always None, Elixir's
        ``:undefined``).

        >>> [(_id, pid, kind, modules)] = await DynamicSupervisor.which_children(sup)
        """
        return cast(List[Tuple[Any, Any, str, Any]], await _core.call(supervisor, "which_children", None))

    @staticmethod
    async def count_children(supervisor: Any) -> Dict[str, int]:
        """``{"specs", "active", "supervisors", "workers"}``.

        >>> (await DynamicSupervisor.count_children(sup))["active"]
        1
        """
        return cast(Dict[str, int], await _core.call(supervisor, "count_children", None))

    @staticmethod
    async def stop(supervisor: Any, reason: Any = "normal", timeout: Optional[float] = None) -> str:
        """Stop the supervisor (children first) and wait; "ok" or pyotp.Exit.

        >>> await DynamicSupervisor.stop(sup)
        'ok'
        """
        return await GenServer.stop(supervisor, reason, timeout)
