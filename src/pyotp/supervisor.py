"""Supervisor: a process that starts, watches and restarts other processes (OTP's
``supervisor``, with Elixir's API).

A supervisor starts its children in order, traps exits, and when a child exits it applies
the child's restart type (``permanent`` / ``transient`` / ``temporary``) and the
supervisor's strategy:

=============  ==========================================================================
strategy       when a child has to be restarted
=============  ==========================================================================
one_for_one    only that child is restarted
one_for_all    all other children are terminated (in reverse start order), then all are
               started again in order
rest_for_one   the children started after it are terminated (in reverse), then it and
               they are started again in order
=============  ==========================================================================

Restart intensity: more than ``max_restarts`` restarts within ``max_seconds`` (defaults 3
and 5, as Elixir) make the supervisor terminate all its children and exit with reason
``"shutdown"`` (reported as ``reached_max_restart_intensity``). A supervisor stops its
children in reverse start order: ``exit(child, "shutdown")``, wait up to the child's
``shutdown`` seconds for it to die, then ``exit(child, "kill")`` (``"brutal_kill"`` kills at
once, ``"infinity"`` waits for ever, the default for child supervisors).

Two ways to start one, as in Elixir. The list form::

    sup = await Supervisor.start_link([Counter, (Stack, []), {"id": "w", "start": (w, ())}],
                                      strategy="one_for_one", name="my_sup")

and the module form, whose ``init`` returns ``Supervisor.init(...)``::

    class MySup(Supervisor):
        def init(self, arg):
            return Supervisor.init([(Counter, arg)], strategy="one_for_all",
                                   max_restarts=3, max_seconds=5)

    sup = await MySup.start_link(0, name="my_sup")

Child specs and their shorthands are described in ``pyotp.child_spec``. Errors are
exceptions carrying Elixir's ``{:error, reason}`` term in ``.reason``: ``StartError`` when a
child cannot be started (or its id is taken: ``("already_started", pid)`` /
``"already_present"``), ``SupervisorError`` for ``"not_found"``, ``"running"``,
``"restarting"``, and ``ChildSpecError`` (a ValueError) for malformed specs. A child that
fails to start while the supervisor starts makes ``start_link`` raise
``StartError(("shutdown", ("failed_to_start_child", id, reason)))``; being linked, the caller
also receives that exit signal, so a caller that does not trap exits dies with it (OTP).

Reports go to the stdlib logger ``"pyotp"``: each child start at INFO ("progress"), and at
ERROR ``child_terminated`` (a child exited and is handled by its restart type),
``start_error``, ``shutdown_error`` and ``shutdown`` (``reached_max_restart_intensity``).
Each record has a ``pyotp_report`` dict attribute with the fields.

>>> async def main():
...     sup = await Supervisor.start_link([(Counter, 0)], strategy="one_for_one")
...     [(cid, pid, kind, mods)] = await Supervisor.which_children(sup)
...     pyotp.exit(pid, "kill")                       # the supervisor restarts it
...     return (await Supervisor.count_children(sup))["active"]
>>> pyotp.run(main)
1
"""
from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

from . import _core, telemetry
from ._core import Pid, StartError
from .child_spec import sys_state
from .child_spec import (RESTARTING, Child, ChildSpecError, RestartIntensity, SupervisorError,
                         _expand, _override, callback_module, check_intensity, child_spec,
                         is_shutdown_reason, report, report_started, shutdown_child,
                         start_child_fn, validate_child, validate_children)
from .gen_server import GenServer

_log = logging.getLogger("pyotp")

__all__ = ["Supervisor", "SupervisorError", "ChildSpecError"]

_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
_AUTO_SHUTDOWN = ("never", "any_significant", "all_significant")
_RESTART_EVENT = ("pyotp", "supervisor", "restart")
_FLAG_KEYS = ("strategy", "max_restarts", "max_seconds", "auto_shutdown")


def _check_flags(flags: Any) -> Dict[str, Any]:
    if not isinstance(flags, dict):
        raise ChildSpecError("supervisor flags must be a dict, got %r" % (flags,))
    for k in flags:
        if k not in _FLAG_KEYS:
            raise ChildSpecError("unknown supervisor flag %r (allowed: %s)" % (k, ", ".join(_FLAG_KEYS)))
    f = {"strategy": flags.get("strategy"), "max_restarts": flags.get("max_restarts", 3),
         "max_seconds": flags.get("max_seconds", 5), "auto_shutdown": flags.get("auto_shutdown", "never")}
    if not isinstance(f["strategy"], str) or f["strategy"] not in _STRATEGIES:
        raise ChildSpecError("invalid strategy %r: expected one of %s (for dynamic children use "
                             "DynamicSupervisor)" % (f["strategy"], ", ".join(_STRATEGIES)))
    check_intensity(f["max_restarts"], f["max_seconds"])
    if not isinstance(f["auto_shutdown"], str) or f["auto_shutdown"] not in _AUTO_SHUTDOWN:
        raise ChildSpecError("invalid auto_shutdown %r: expected one of %s"
                             % (f["auto_shutdown"], ", ".join(_AUTO_SHUTDOWN)))
    return f


def _sup_label(name: Any, module: Any) -> str:
    if name is not None:
        return repr(name)
    return "%r (%s)" % (_core.self(), getattr(module, "__qualname__", "Supervisor"))


class _SupervisorServer(GenServer):
    """The supervisor process: a GenServer trapping exits. Its state lives on the instance
    (one per process); the GenServer state is unused. Callbacks are ``async def`` because
    starting and stopping children waits (child init, the child's DOWN)."""
    behaviour_name = "Supervisor"

    def system_get_state(self, state: Any) -> Any:
        return sys_state(self.strategy, [(c.id, c.pid, c.type) for c in self.children])

    def system_replace_state(self, fun: Any, state: Any) -> Any:
        raise NotImplementedError("a Supervisor's state cannot be replaced")

    # -- start ------------------------------------------------------------------------

    async def init(self, arg: Tuple[Any, Any, Any]) -> Any:
        module, init_arg, name = arg
        _core.process_flag("trap_exit", True)
        self.label = _sup_label(name, module)
        self.children: List[Child] = []          # start order
        self.by_id: Dict[Any, Child] = {}
        self.by_pid: Dict[Any, Child] = {}
        if module is None:
            result = init_arg                     # built (and checked) by Supervisor.start_link
        else:
            result = module().init(init_arg)
            if inspect.isawaitable(result):
                result = await result
        if isinstance(result, str) and result == "ignore":
            return "ignore"
        if not (type(result) is tuple and len(result) == 2 and result[0] == "ok"
                and type(result[1]) is tuple and len(result[1]) == 2):
            return ("stop", ("bad_return", (module, "init", result)))
        flags, specs = result[1]
        try:
            f = _check_flags(flags)
        except ChildSpecError as e:
            return ("stop", ("supervisor_data", e))
        self.strategy: str = f["strategy"]
        self.auto_shutdown: str = f["auto_shutdown"]
        self.intensity = RestartIntensity(f["max_restarts"], f["max_seconds"])
        try:
            children = validate_children(specs, self.auto_shutdown)
        except ChildSpecError as e:
            return ("stop", ("start_spec", e))
        for c in children:
            st, v = await self._start(c)
            if st == "error":
                report(self.label, "start_error", v, c.id, None)
                await self._terminate_all()
                return ("stop", ("shutdown", ("failed_to_start_child", c.id, v)))
            if st == "ignore" and c.restart == "temporary":
                continue
            self._add(c, v)
        return ("ok", None)

    async def _start(self, c: Child) -> Tuple[str, Any]:
        st, v = await start_child_fn(c.fn, c.args, c.kwargs)
        if st == "ok":
            report_started(self.label, c.id, v)
        return st, v

    # -- the children table -----------------------------------------------------------

    def _add(self, c: Child, pid: Any) -> None:
        self.children.append(c)
        self.by_id[c.id] = c
        self._set_pid(c, pid)

    def _set_pid(self, c: Child, pid: Any) -> None:
        if type(c.pid) is Pid:
            self.by_pid.pop(c.pid, None)
        c.pid = pid
        if type(pid) is Pid:
            self.by_pid[pid] = c

    def _remove(self, c: Child) -> None:
        self._set_pid(c, None)
        self.children.remove(c)
        del self.by_id[c.id]

    def _del_child(self, c: Child) -> None:
        """A child is gone: temporary children are forgotten, others keep their spec."""
        if c.restart == "temporary":
            self._remove(c)
        else:
            self._set_pid(c, None)

    # -- exits and restarts -----------------------------------------------------------

    async def handle_info(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and len(msg) == 3 and isinstance(msg[0], str) and msg[0] == "EXIT":
            c = self.by_pid.get(msg[1]) if type(msg[1]) is Pid else None
            if c is None:
                return ("noreply", None)          # not (or no longer) a child: ignore, as OTP
            return await self._child_exited(c, msg[1], msg[2])
        _log.error("Supervisor %s received unexpected message: %r", self.label, msg)
        return ("noreply", None)

    async def _child_exited(self, c: Child, pid: Any, reason: Any) -> Any:
        if c.restart == "permanent":
            report(self.label, "child_terminated", reason, c.id, pid)
            self._set_pid(c, None)
            return await self._restart(c)
        if is_shutdown_reason(reason):
            self._del_child(c)
            return self._auto_shutdown(c)
        report(self.label, "child_terminated", reason, c.id, pid)
        if c.restart == "transient":
            self._set_pid(c, None)
            return await self._restart(c)
        self._del_child(c)
        return self._auto_shutdown(c)

    def _auto_shutdown(self, c: Child) -> Any:
        if self.auto_shutdown == "never" or not c.significant:
            return ("noreply", None)
        if self.auto_shutdown == "all_significant":
            for x in self.children:
                if x.significant and x.pid is not None:
                    return ("noreply", None)
        return ("stop", "shutdown", None)

    async def _restart(self, c: Child) -> Any:
        # observed by pyotp.observer (restart counts in the tree)
        self.restart_total = getattr(self, "restart_total", 0) + 1
        telemetry.execute(_RESTART_EVENT, {"count": 1}, {"supervisor": _core.self(), "child_id": c.id})
        if not self.intensity.add(time.monotonic()):
            report(self.label, "shutdown", "reached_max_restart_intensity", c.id, c.pid)
            self._del_child(c)
            return ("stop", "shutdown", None)
        if self.strategy == "one_for_one":
            st, v = await self._start(c)
            if st == "error":
                report(self.label, "start_error", v, c.id, c.pid)
                self._set_pid(c, RESTARTING)
                self._try_again(c)
            else:
                self._set_pid(c, v)
            return ("noreply", None)
        if self.strategy == "rest_for_one":
            group = self.children[self.children.index(c):]
        else:
            group = list(self.children)
        failed = await self._restart_group(c, group)
        if failed is not None:
            self._try_again(failed)
        return ("noreply", None)

    async def _restart_group(self, c: Child, group: List[Child]) -> Optional[Child]:
        """Terminate the group (reverse order; temporary members are dropped), then start
        it in order. Returns the child that failed to start, if any (it is marked
        restarting; the ones after it stay stopped until the retry)."""
        for x in reversed(group):
            if type(x.pid) is Pid:
                await self._terminate(x)
            if x.restart == "temporary" and x is not c:
                self._remove(x)
            else:
                self._set_pid(x, None)
        for x in group:
            if self.by_id.get(x.id) is not x:
                continue
            st, v = await self._start(x)
            if st == "error":
                report(self.label, "start_error", v, x.id, None)
                self._set_pid(x, RESTARTING)
                return x
            self._set_pid(x, v)
        return None

    def _try_again(self, c: Child) -> None:
        # as supervisor.erl: cast to ourselves so that queued requests (a stop, a
        # terminate_child) get their turn between attempts; each attempt counts as a restart
        _core.cast(_core.self(), ("$try_again_restart", c.id))

    async def handle_cast(self, msg: Any, state: Any) -> Any:
        if type(msg) is tuple and len(msg) == 2 and msg[0] == "$try_again_restart":
            c = self.by_id.get(msg[1])
            if c is not None and isinstance(c.pid, str):
                return await self._restart(c)
            return ("noreply", None)
        _log.error("Supervisor %s received unexpected cast: %r", self.label, msg)
        return ("noreply", None)

    # -- stopping children ------------------------------------------------------------

    async def _terminate(self, c: Child) -> None:
        err = await shutdown_child(c.pid, c.shutdown, c.restart)
        if err is not None:
            report(self.label, "shutdown_error", err, c.id, c.pid)

    async def _terminate_all(self) -> None:
        for c in reversed(self.children):
            if type(c.pid) is Pid:
                await self._terminate(c)
                self._set_pid(c, None)

    async def terminate(self, reason: Any, state: Any) -> Any:
        if hasattr(self, "children"):
            await self._terminate_all()
        return "ok"

    # -- requests ---------------------------------------------------------------------

    async def handle_call(self, req: Any, from_: Any, state: Any) -> Any:
        if req == "which_children":
            return ("reply", [(c.id, c.pid, c.type, c.modules) for c in self.children], None)
        if req == "count_children":
            return ("reply", self._count(), None)
        if req == "restart_total":
            return ("reply", getattr(self, "restart_total", 0), None)
        if type(req) is tuple and len(req) == 2:
            op, arg = req
            if op == "start_child":
                return ("reply", await self._start_child(arg), None)
            if op == "terminate_child":
                return ("reply", await self._terminate_child(arg), None)
            if op == "restart_child":
                return ("reply", await self._restart_child(arg), None)
            if op == "delete_child":
                return ("reply", self._delete_child(arg), None)
            if op == "get_childspec":
                c = self.by_id.get(arg)
                return ("reply", ("error", "not_found") if c is None else ("ok", c.to_spec()), None)
        return ("reply", ("error", ("unknown_request", req)), None)

    def _count(self) -> Dict[str, int]:
        specs = active = sups = workers = 0
        for c in self.children:
            specs += 1
            if type(c.pid) is Pid and _core.is_alive(c.pid):
                active += 1
            if c.type == "supervisor":
                sups += 1
            else:
                workers += 1
        return {"specs": specs, "active": active, "supervisors": sups, "workers": workers}

    async def _start_child(self, spec: Any) -> Any:
        try:
            c = validate_child(spec, auto_shutdown=self.auto_shutdown)
        except ChildSpecError as e:
            return ("error", e)
        old = self.by_id.get(c.id)
        if old is not None:
            if type(old.pid) is Pid:
                return ("error", ("already_started", old.pid))
            return ("error", "already_present")
        st, v = await self._start(c)
        if st == "error":
            if type(v) is tuple and len(v) == 2 and v[0] == "already_started":
                return ("error", v)
            return ("error", (v, c.to_spec()))
        if st == "ignore" and c.restart == "temporary":
            return ("ok", None)
        self._add(c, v)
        return ("ok", v)

    async def _terminate_child(self, cid: Any) -> Any:
        c = self.by_id.get(cid)
        if c is None:
            return ("error", "not_found")
        if type(c.pid) is Pid:
            await self._terminate(c)
        self._del_child(c)
        return "ok"

    async def _restart_child(self, cid: Any) -> Any:
        c = self.by_id.get(cid)
        if c is None:
            return ("error", "not_found")
        if type(c.pid) is Pid:
            return ("error", "running")
        if c.pid is not None:
            return ("error", "restarting")
        st, v = await self._start(c)
        if st == "error":
            return ("error", v)
        self._set_pid(c, v)
        return ("ok", v)

    def _delete_child(self, cid: Any) -> Any:
        c = self.by_id.get(cid)
        if c is None:
            return ("error", "not_found")
        if type(c.pid) is Pid:
            return ("error", "running")
        if c.pid is not None:
            return ("error", "restarting")
        self._remove(c)
        return "ok"


def _ok_or_raise(r: Any, start: bool) -> Any:
    if type(r) is tuple and len(r) == 2 and r[0] == "ok":
        return r[1]
    if r == "ok":
        return "ok"
    reason = r[1]
    if isinstance(reason, ChildSpecError):
        raise reason
    if start and reason not in ("not_found", "running", "restarting"):
        raise StartError(reason)
    raise SupervisorError(reason)


class Supervisor:
    """Base class of module-based supervisors, and the supervisor API (see the module
    documentation). Subclasses define ``init(self, arg)`` returning ``Supervisor.init(...)``
    (or ``"ignore"``); ``init`` may be ``async def``.

    >>> class MySup(Supervisor):
    ...     def init(self, arg):
    ...         return Supervisor.init([(Counter, arg)], strategy="one_for_one")
    >>> sup = await MySup.start_link(0, name="my_sup")
    """

    @staticmethod
    def init(children: Sequence[Any], *, strategy: str, max_restarts: int = 3,
             max_seconds: float = 5, auto_shutdown: str = "never") -> Tuple[str, Tuple[Dict[str, Any], List[Any]]]:
        """Elixir's ``Supervisor.init/2``: the value a module-based supervisor's ``init``
        returns. ``strategy`` is required; shorthands are expanded here (``Counter`` ->
        ``Counter.child_spec(None)``), the full check happens when the supervisor starts.

        >>> Supervisor.init([Counter], strategy="one_for_one")[0]
        'ok'
        """
        if isinstance(children, (str, bytes, dict)):
            raise ChildSpecError("children must be a list of child specs, got %r" % (children,))
        flags = {"strategy": strategy, "max_restarts": max_restarts, "max_seconds": max_seconds,
                 "auto_shutdown": auto_shutdown}
        return ("ok", (flags, [_expand(c) for c in children]))

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Any = None, timeout: Optional[float] = None,
                         **options: Any) -> Optional[Pid]:
        """Start a supervisor linked to the caller; returns its pid once every child has
        started (None if a module's init returned "ignore"). List form:
        ``Supervisor.start_link(children, strategy=..., max_restarts=3, max_seconds=5,
        name=None)``; module form: ``MySup.start_link(arg, name=None)``. Raises
        ChildSpecError (bad specs, list form) or StartError.

        >>> sup = await Supervisor.start_link([Counter], strategy="one_for_one", name="my_sup")
        """
        if cls is Supervisor:
            if arg is None or isinstance(arg, (str, bytes, dict)):
                raise TypeError("Supervisor.start_link(children, strategy=..., name=...) needs a "
                                "list of children, got %r" % (arg,))
            result = Supervisor.init(arg, **options)
            flags, specs = result[1]
            f = _check_flags(flags)
            validate_children(specs, f["auto_shutdown"])
            module = None
            init_arg: Any = result
        else:
            module, init_arg = callback_module(cls, Supervisor, arg, options,
                                               "Supervisor.init(children, strategy=...)")
        return cast(Optional[Pid], await _SupervisorServer.start_link((module, init_arg, name), name=name,
                                                                      timeout=timeout))

    @classmethod
    def child_spec(cls, arg: Any = None, **overrides: Any) -> Dict[str, Any]:
        """On a subclass: the spec to run it under another supervisor (id the class,
        type supervisor, shutdown infinity). On ``Supervisor`` itself: Elixir's
        ``Supervisor.child_spec/2`` (expand a shorthand or copy a dict, apply overrides).

        >>> class MySup(Supervisor):
        ...     def init(self, arg):
        ...         return Supervisor.init([(Counter, arg)], strategy="one_for_one")
        >>> MySup.child_spec(0)["type"]
        'supervisor'
        >>> Supervisor.child_spec((Counter, 0), id="other")["id"]
        'other'
        """
        if cls is Supervisor:
            return child_spec(arg, **overrides)
        return _override({"id": cls, "start": (cls.start_link, (arg,)), "type": "supervisor"}, overrides)

    # -- the API (every call waits for ever, as OTP's supervisor calls do) --------------

    @staticmethod
    async def start_child(supervisor: Any, spec: Any) -> Optional[Pid]:
        """Add a child (appended to the start order) and start it; returns its pid (None
        if its start returned "ignore"). Raises StartError: ("already_started", pid) or
        "already_present" for a taken id, (reason, spec) if the start failed.

        >>> pid = await Supervisor.start_child(sup, (Counter, 5))
        """
        c = validate_child(spec, auto_shutdown="any_significant")
        return cast(Optional[Pid], _ok_or_raise(await _core.call(supervisor, ("start_child", c.to_spec()), None), True))

    @staticmethod
    async def terminate_child(supervisor: Any, child_id: Any) -> str:
        """Stop a child (its spec is kept unless it is temporary); "ok" or
        SupervisorError("not_found").

        >>> await Supervisor.terminate_child(sup, "worker")
        'ok'
        """
        return cast(str, _ok_or_raise(await _core.call(supervisor, ("terminate_child", child_id), None), False))

    @staticmethod
    async def restart_child(supervisor: Any, child_id: Any) -> Optional[Pid]:
        """Start again a child that is not running (after terminate_child); returns its
        pid. SupervisorError "not_found" / "running" / "restarting", StartError if it fails.

        >>> await Supervisor.terminate_child(sup, "worker")
        'ok'
        >>> pid = await Supervisor.restart_child(sup, "worker")
        """
        return cast(Optional[Pid], _ok_or_raise(await _core.call(supervisor, ("restart_child", child_id), None), True))

    @staticmethod
    async def delete_child(supervisor: Any, child_id: Any) -> str:
        """Forget the spec of a child that is not running; "ok" or SupervisorError
        ("not_found", "running", "restarting").

        >>> await Supervisor.terminate_child(sup, "worker")
        'ok'
        >>> await Supervisor.delete_child(sup, "worker")
        'ok'
        """
        return cast(str, _ok_or_raise(await _core.call(supervisor, ("delete_child", child_id), None), False))

    @staticmethod
    async def get_childspec(supervisor: Any, child_id: Any) -> Dict[str, Any]:
        """The full child spec of ``child_id`` (SupervisorError("not_found")).

        >>> (await Supervisor.get_childspec(sup, "worker"))["restart"]
        'permanent'
        """
        return cast(Dict[str, Any], _ok_or_raise(await _core.call(supervisor, ("get_childspec", child_id), None), False))

    @staticmethod
    async def which_children(supervisor: Any) -> List[Tuple[Any, Any, str, Any]]:
        """``[(id, pid | "restarting" | None, type, modules)]`` in start order (None: not
        running, Erlang's ``undefined``).

        >>> [(cid, pid, kind, modules)] = await Supervisor.which_children(sup)
        """
        return cast(List[Tuple[Any, Any, str, Any]], await _core.call(supervisor, "which_children", None))

    @staticmethod
    async def count_children(supervisor: Any) -> Dict[str, int]:
        """``{"specs", "active", "supervisors", "workers"}`` counts.

        >>> await Supervisor.count_children(sup)
        {'specs': 1, 'active': 1, 'supervisors': 0, 'workers': 1}
        """
        return cast(Dict[str, int], await _core.call(supervisor, "count_children", None))

    @staticmethod
    async def stop(supervisor: Any, reason: Any = "normal", timeout: Optional[float] = None) -> str:
        """Stop the supervisor (its children first, in reverse order) and wait; "ok", or
        pyotp.Exit if it exited with another reason.

        >>> await Supervisor.stop(sup)
        'ok'
        """
        return await GenServer.stop(supervisor, reason, timeout)
