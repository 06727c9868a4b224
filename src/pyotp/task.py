"""Task and TaskSupervisor: run one function in its own process and collect its result
(Elixir's ``Task`` and ``Task.Supervisor``).

``async``, ``await`` and ``yield`` are Python keywords, so the functions Elixir calls
``Task.async``, ``Task.await``, ``Task.yield`` and ``Task.Supervisor.async`` are spelled
**``Task.async_``, ``Task.await_``, ``Task.yield_``, ``TaskSupervisor.async_``** here;
everything else keeps its Elixir name.

* ``Task.async_(fn, *args)`` starts a process *linked* to the caller and *monitored* by
  it, running ``fn(*args)`` (a plain function or an ``async def``). It returns a ``Task``
  (``.pid``, ``.ref``, ``.owner``). The task sends ``(task.ref, result)`` to its owner and
  exits normally; ``await Task.await_(task, timeout)`` receives that message and
  demonitors with flush, exactly as Elixir does. A crashing task takes its owner down
  through the link (trap exits, or use ``TaskSupervisor.async_nolink``, to survive it).
* ``await_`` raises ``pyotp.Exit(("timeout", ("Task", "await", [task, timeout])))`` when
  the timeout passes, and ``pyotp.Exit((reason, ...))`` when the task died (the caller
  exits, as in Elixir, unless it catches the exception).
* ``yield_`` returns ``("ok", result)``, ``("exit", reason)`` or None on timeout, and can
  be called again later; ``shutdown`` stops a task and reports what it had done.
* Only the process that created a task may await, yield or shut it down.

Timeouts are seconds; None (or ``"infinity"``) waits for ever.

>>> async def main():
...     t = Task.async_(lambda x: x * 2, 21)
...     return await Task.await_(t)
>>> pyotp.run(main)
42

TaskSupervisor is a DynamicSupervisor whose children are tasks (temporary by default):
``TaskSupervisor.async_`` (linked to the caller), ``async_nolink`` (only monitored: a
crash reaches the caller as a DOWN, the way to run risky work from a GenServer) and
``start_child`` (fire and forget)::

    sup = await TaskSupervisor.start_link(name="tasks")
    t = await TaskSupervisor.async_nolink("tasks", fetch, url)
    match await Task.yield_(t, 1.0):   # ("ok", body) | ("exit", reason) | None
        ...
"""
from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, cast

from . import _core
from ._core import Exit, Pid, Reference, StartError
from .child_spec import _override
from .dynamic_supervisor import DynamicSupervisor

__all__ = ["Task", "TaskSupervisor"]


def _timeout(t: Any) -> Optional[float]:
    if t is None or (isinstance(t, str) and t == "infinity"):
        return None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
        raise _core.BadArg("timeout must be seconds >= 0, None or 'infinity', got %r" % (t,))
    return t


async def _run(fn: Callable[..., Any], args: Tuple[Any, ...]) -> Any:
    r = fn(*args)
    if inspect.isawaitable(r):
        r = await r
    return r


async def _async_body(owner: Pid, box: List[Any], fn: Callable[..., Any], args: Tuple[Any, ...]) -> None:
    # box[0] is the owner's monitor ref: filled in by Task.async_ before this process first
    # runs (a spawned process only runs once its creator yields to the scheduler)
    result = await _run(fn, args)
    _core.send(owner, (box[0], result))


async def _noreply_body(fn: Callable[..., Any], args: Tuple[Any, ...]) -> Any:
    return await _run(fn, args)


def _is_reply(ref: Reference) -> Callable[[Any], bool]:
    return lambda m: (type(m) is tuple and len(m) == 2
                      and (m[0] is ref or (type(m[0]) is Reference and m[0] == ref)))


def _is_reply_or_down(ref: Reference) -> Callable[[Any], bool]:
    return lambda m: (type(m) is tuple
                      and ((len(m) == 2 and (m[0] is ref or (type(m[0]) is Reference and m[0] == ref)))
                           or (len(m) == 5 and (m[1] is ref or (type(m[1]) is Reference and m[1] == ref))
                               and m[0] == "DOWN")))


def _is_down(ref: Reference) -> Callable[[Any], bool]:
    return lambda m: (type(m) is tuple and len(m) == 5
                      and (m[1] is ref or (type(m[1]) is Reference and m[1] == ref)) and m[0] == "DOWN")


class Task:
    """A running task (Elixir's ``%Task{}``) and the Task API. Create tasks with
    ``Task.async_``, ``TaskSupervisor.async_`` / ``async_nolink`` or ``Task.completed``.

    >>> def compute(a, b):
    ...     return a + b
    >>> t = Task.async_(compute, 1, 2)
    >>> await Task.await_(t, 5.0)
    3
    """

    __slots__ = ("pid", "ref", "owner", "fn")

    def __init__(self, pid: Optional[Pid], ref: Reference, owner: Pid, fn: Any = None) -> None:
        self.pid = pid
        self.ref = ref
        self.owner = owner
        self.fn = fn

    def __repr__(self) -> str:
        return "Task(pid=%r, ref=%r, owner=%r, fn=%s)" % (
            self.pid, self.ref, self.owner, getattr(self.fn, "__qualname__", repr(self.fn)))

    def _check_owner(self, what: str) -> None:
        me = _core.self()
        if self.owner != me:
            raise _core.BadArg("Task.%s: task %r must be queried from its owner %r, not %r"
                               % (what, self, self.owner, me))

    # -- starting ------------------------------------------------------------------------

    @staticmethod
    def async_(fn: Callable[..., Any], *args: Any) -> "Task":
        """Elixir's ``Task.async``: run ``fn(*args)`` in a new process linked to and
        monitored by the caller; await the result with ``Task.await_``.

        >>> t = Task.async_(sum, [1, 2, 3])
        >>> await Task.await_(t)
        6
        """
        if not callable(fn):
            raise TypeError("Task.async_ expects a callable, got %r" % (fn,))
        owner = _core.self()
        box: List[Any] = [None]
        pid = _core.spawn_link(_async_body, owner, box, fn, args)
        ref = _core.monitor(pid)
        box[0] = ref
        return Task(pid, ref, owner, fn)

    @staticmethod
    def completed(result: Any) -> "Task":
        """A task that has already finished with ``result`` (no process).

        >>> await Task.await_(Task.completed(1))
        1
        """
        ref = _core.make_ref()
        me = _core.self()
        _core.send(me, (ref, result))
        return Task(None, ref, me, None)

    @staticmethod
    def start(fn: Callable[..., Any], *args: Any) -> Pid:
        """Run ``fn(*args)`` in a new process that nobody awaits (not linked); returns
        its pid.

        >>> pid = Task.start(print, "boot")
        """
        if not callable(fn):
            raise TypeError("Task.start expects a callable, got %r" % (fn,))
        return _core.spawn(_noreply_body, fn, args)

    @staticmethod
    def start_link(fn: Callable[..., Any], *args: Any) -> Pid:
        """Like ``start``, linked to the caller: the form supervisors use (see
        ``Task.child_spec``).

        >>> async def poll_forever():
        ...     while True:
        ...         await pyotp.sleep(1.0)
        >>> pid = Task.start_link(poll_forever)
        """
        if not callable(fn):
            raise TypeError("Task.start_link expects a callable, got %r" % (fn,))
        return _core.spawn_link(_noreply_body, fn, args)

    @classmethod
    def child_spec(cls, arg: Any = None, **overrides: Any) -> Dict[str, Any]:
        """A temporary child running ``arg`` (a callable, or a ``(callable, *args)``
        tuple) with ``Task.start_link``: ``(Task, fn)`` in a children list.

        >>> Task.child_spec(print)["restart"]
        'temporary'
        """
        if isinstance(arg, tuple) and arg and callable(arg[0]):
            args: Tuple[Any, ...] = arg
        elif callable(arg):
            args = (arg,)
        else:
            raise TypeError("Task.child_spec expects a callable or (callable, *args), got %r" % (arg,))
        return _override({"id": Task, "start": (Task.start_link, args), "restart": "temporary"}, overrides)

    # -- collecting results -----------------------------------------------------------

    @staticmethod
    async def await_(task: "Task", timeout: Any = 5.0) -> Any:
        """Elixir's ``Task.await``: the task's result. Raises ``pyotp.Exit((reason,
        ("Task", "await", [task, timeout])))`` if the task died and ``pyotp.Exit(("timeout",
        ...))`` after ``timeout`` seconds (the task keeps running; if it is linked and the
        caller lets the exception end it, the task dies with it).

        >>> await Task.await_(Task.async_(lambda: "done"), 1.0)
        'done'
        """
        task._check_owner("await_")
        t = _timeout(timeout)
        ref = task.ref
        try:
            m = await _core.receive(_is_reply_or_down(ref), t)
        except TimeoutError:
            _core.demonitor(ref, True)
            raise Exit(("timeout", ("Task", "await", [task, timeout]))) from None
        if len(m) == 2:
            _core.demonitor(ref, True)
            return m[1]
        raise Exit((m[4], ("Task", "await", [task, timeout])))

    @staticmethod
    async def yield_(task: "Task", timeout: Any = 5.0) -> Optional[Tuple[str, Any]]:
        """Elixir's ``Task.yield``: ``("ok", result)``, ``("exit", reason)`` if the task
        died, or None if ``timeout`` passed (the task keeps running; yield again, or
        ``shutdown`` it).

        >>> slow_task = Task.async_(pyotp.sleep, 10)
        >>> await Task.yield_(slow_task, 0.01) or await Task.shutdown(slow_task)
        """
        task._check_owner("yield_")
        t = _timeout(timeout)
        try:
            m = await _core.receive(_is_reply_or_down(task.ref), t)
        except TimeoutError:
            return None
        if len(m) == 2:
            _core.demonitor(task.ref, True)
            return ("ok", m[1])
        return ("exit", m[4])

    @staticmethod
    async def await_many(tasks: Iterable["Task"], timeout: Any = 5.0) -> List[Any]:
        """All the tasks' results, in order; exits like ``await_`` if any task dies or
        the whole ``timeout`` passes.

        >>> await Task.await_many([Task.async_(abs, -i) for i in range(3)])
        [0, 1, 2]
        """
        tasks = list(tasks)
        waiting: Dict[Reference, int] = {}
        for i, task in enumerate(tasks):
            task._check_owner("await_many")
            waiting[task.ref] = i
        t = _timeout(timeout)
        deadline = None if t is None else time.monotonic() + t
        replies: List[Any] = [None] * len(tasks)

        def match(m: Any) -> bool:
            if type(m) is not tuple:
                return False
            if len(m) == 2:
                return type(m[0]) is Reference and m[0] in waiting
            return len(m) == 5 and type(m[1]) is Reference and m[1] in waiting and m[0] == "DOWN"

        while waiting:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                m = await _core.receive(match, left)
            except TimeoutError:
                for ref in waiting:
                    _core.demonitor(ref, True)
                raise Exit(("timeout", ("Task", "await_many", [tasks, timeout]))) from None
            if len(m) == 2:
                replies[waiting.pop(m[0])] = m[1]
                _core.demonitor(m[0], True)
            else:
                for ref in waiting:
                    _core.demonitor(ref, True)
                raise Exit((m[4], ("Task", "await_many", [tasks, timeout])))
        return replies

    @staticmethod
    async def yield_many(tasks: Iterable["Task"], timeout: Any = 5.0, *,
                         on_timeout: str = "nothing") -> List[Tuple["Task", Optional[Tuple[str, Any]]]]:
        """``[(task, ("ok", r) | ("exit", reason) | None)]`` after at most ``timeout``
        seconds; ``on_timeout`` ("nothing", "ignore" or "kill_task") says what to do
        with the tasks still running.

        >>> tasks = [Task.async_(abs, -i) for i in range(3)]
        >>> [res for task, res in await Task.yield_many(tasks, 1.0, on_timeout="kill_task")]
        [('ok', 0), ('ok', 1), ('ok', 2)]
        """
        if on_timeout not in ("nothing", "ignore", "kill_task"):
            raise _core.BadArg("on_timeout must be 'nothing', 'ignore' or 'kill_task', got %r" % (on_timeout,))
        tasks = list(tasks)
        results: Dict[Reference, Any] = {}
        waiting = set()
        for task in tasks:
            task._check_owner("yield_many")
            waiting.add(task.ref)
        t = _timeout(timeout)
        deadline = None if t is None else time.monotonic() + t

        def match(m: Any) -> bool:
            if type(m) is not tuple:
                return False
            if len(m) == 2:
                return type(m[0]) is Reference and m[0] in waiting
            return len(m) == 5 and type(m[1]) is Reference and m[1] in waiting and m[0] == "DOWN"

        timed_out = False
        while waiting:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                m = await _core.receive(match, left)
            except TimeoutError:
                timed_out = True
                break
            if len(m) == 2:
                waiting.discard(m[0])
                _core.demonitor(m[0], True)
                results[m[0]] = ("ok", m[1])
            else:
                waiting.discard(m[1])
                results[m[1]] = ("exit", m[4])
        out: List[Tuple[Task, Optional[Tuple[str, Any]]]] = []
        for task in tasks:
            r = results.get(task.ref)
            if r is None and timed_out:
                if on_timeout == "kill_task":
                    r = await Task.shutdown(task, "brutal_kill")
                elif on_timeout == "ignore":
                    r = await Task.ignore(task)
            out.append((task, r))
        return out

    @staticmethod
    async def ignore(task: "Task") -> Optional[Tuple[str, Any]]:
        """Stop caring about a task: unlink and demonitor it (it keeps running). Returns
        ``("ok", r)`` / ``("exit", reason)`` if it had already finished, else None.

        >>> t = Task.async_(pyotp.sleep, 10)
        >>> await Task.ignore(t)
        """
        task._check_owner("ignore")
        try:
            m = await _core.receive(_is_reply_or_down(task.ref), 0)
        except TimeoutError:
            if task.pid is not None:
                _core.unlink(task.pid)
            _core.demonitor(task.ref, True)
            return None
        if len(m) == 2:
            if task.pid is not None:
                _core.unlink(task.pid)
            _core.demonitor(task.ref, True)
            return ("ok", m[1])
        return ("exit", m[4])

    @staticmethod
    async def shutdown(task: "Task", shutdown: Any = 5.0) -> Optional[Tuple[str, Any]]:
        """Unlink and stop the task: ``exit(pid, "shutdown")``, kill it after ``shutdown``
        seconds (or at once with ``"brutal_kill"``). Returns ``("ok", r)`` if it had
        finished meanwhile, ``("exit", reason)`` if it died some other way, else None.

        >>> t = Task.async_(pyotp.sleep, 10)
        >>> await Task.shutdown(t, "brutal_kill")
        """
        if task.pid is None:
            return await Task.ignore(task)
        task._check_owner("shutdown")
        pid, ref = task.pid, task.ref
        brutal = isinstance(shutdown, str) and shutdown == "brutal_kill"
        t = None if brutal else _timeout(shutdown)
        mon = _core.monitor(pid)
        # unlink + exit happen with no other process running in between (one scheduler
        # thread), so Elixir's "enforcer" process for that race is not needed
        _core.unlink(pid)
        _core.exit(pid, "kill" if brutal else "shutdown")
        kind = "kill" if brutal else "shutdown"
        try:
            m = await _core.receive(_is_down(mon), t)
        except TimeoutError:
            _core.exit(pid, "kill")
            kind = "timeout_kill"
            m = await _core.receive(_is_down(mon))
        reason = m[4]
        if (reason == "shutdown" and kind != "kill") or (reason == "killed" and kind == "kill"):
            _core.demonitor(ref, True)
            return await _flush_reply(ref)
        if reason == "noproc":
            # it was already gone: its own DOWN (on task.ref) holds the real reason
            r: Any
            try:
                d = await _core.receive(_is_down(ref), 0)
            except TimeoutError:
                _core.demonitor(ref, True)
                r = ("exit", "noproc")
            else:
                dr = d[4]
                if (dr == "shutdown" and kind != "kill") or (dr == "killed" and kind == "kill"):
                    r = None
                else:
                    r = ("exit", dr)
            return await _flush_reply(ref) or r
        _core.demonitor(ref, True)
        return await _flush_reply(ref) or ("exit", reason)


async def _flush_reply(ref: Reference) -> Optional[Tuple[str, Any]]:
    try:
        m = await _core.receive(_is_reply(ref), 0)
    except TimeoutError:
        return None
    return ("ok", m[1])


# ---------------------------------------------------------------------------------------
# TaskSupervisor


async def _supervised_reply(owner: Pid) -> Any:
    """A TaskSupervisor async task: wait for the owner's go (with its ref and the function),
    run, reply, exit. If the owner dies first, exit ("shutdown", reason) (Elixir)."""
    mref = _core.monitor(owner)

    def match(m: Any) -> bool:
        if type(m) is not tuple:
            return False
        if len(m) == 4:
            return m[0] == "$task_go" and type(m[1]) is Pid and m[1] == owner
        return len(m) == 5 and m[1] is mref and m[0] == "DOWN"
    try:
        m = await _core.receive(match, 5.0)
    except TimeoutError:
        raise Exit("timeout") from None
    if len(m) == 5:
        raise Exit(("shutdown", m[4]))
    _core.demonitor(mref, True)
    _tag, _owner, ref, fa = m
    result = await _run(fa[0], fa[1])
    _core.send(owner, (ref, result))


def _supervised_start_link(owner: Pid) -> Pid:
    return _core.spawn_link(_supervised_reply, owner)


def _supervised_noreply(fn: Callable[..., Any], *args: Any) -> Pid:
    return _core.spawn_link(_noreply_body, fn, args)


class TaskSupervisor(DynamicSupervisor):
    """Elixir's ``Task.Supervisor``: a DynamicSupervisor for tasks.

    >>> def risky(x):
    ...     return 1 / x
    >>> sup = await TaskSupervisor.start_link(name="tasks")
    >>> t = await TaskSupervisor.async_nolink("tasks", risky, 1)
    >>> await Task.yield_(t, 1.0)
    ('ok', ...)
    """

    def init(self, opts: Dict[str, Any]) -> Any:   # type: ignore[override]
        return DynamicSupervisor.init(**opts)

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Any = None,   # type: ignore[override]
                         timeout: Optional[float] = None, max_children: Any = "infinity",
                         max_restarts: int = 3, max_seconds: float = 5) -> Optional[Pid]:
        """Start a task supervisor linked to the caller.

        >>> sup = await TaskSupervisor.start_link(name="tasks", max_children=100)
        """
        if arg is not None:
            raise TypeError("TaskSupervisor.start_link takes keyword options only, got %r" % (arg,))
        opts = {"max_children": max_children, "max_restarts": max_restarts, "max_seconds": max_seconds}
        return await super().start_link(opts, name=name, timeout=timeout)

    @classmethod
    def child_spec(cls, arg: Any = None, **overrides: Any) -> Dict[str, Any]:
        """``(TaskSupervisor, {"name": "tasks"})`` in a children list.

        >>> TaskSupervisor.child_spec({"name": "tasks"})["id"]
        'tasks'
        """
        opts = dict(arg or {})
        name = opts.get("name")
        cid: Any = cls if name is None else (name[1] if isinstance(name, tuple) else name)
        return _override({"id": cid, "start": (cls.start_link, (), opts), "type": "supervisor"}, overrides)

    @staticmethod
    async def _async(sup: Any, link: bool, fn: Callable[..., Any], args: Tuple[Any, ...],
                     shutdown: Any) -> Task:
        if not callable(fn):
            raise TypeError("TaskSupervisor.async_ expects a callable, got %r" % (fn,))
        owner = _core.self()
        pid = await DynamicSupervisor.start_child(sup, {
            "id": Task, "start": (_supervised_start_link, (owner,)), "restart": "temporary",
            "shutdown": shutdown, "modules": [Task]})
        if pid is None:      # pragma: no cover - the supervised start never ignores
            raise StartError("ignore")
        if link:
            _core.link(pid)
        ref = _core.monitor(pid)
        _core.send(pid, ("$task_go", owner, ref, (fn, args)))
        return Task(pid, ref, owner, fn)

    @staticmethod
    async def async_(supervisor: Any, fn: Callable[..., Any], *args: Any, shutdown: Any = 5.0) -> Task:
        """Elixir's ``Task.Supervisor.async``: a task under ``supervisor``, linked to and
        monitored by the caller. Raises StartError("max_children") when full.

        >>> def fetch(url):
        ...     return "body of " + url
        >>> sup = await TaskSupervisor.start_link(name="tasks")
        >>> t = await TaskSupervisor.async_("tasks", fetch, "http://example.com")
        >>> body = await Task.await_(t)
        """
        return await TaskSupervisor._async(supervisor, True, fn, args, shutdown)

    @staticmethod
    async def async_nolink(supervisor: Any, fn: Callable[..., Any], *args: Any,
                           shutdown: Any = 5.0) -> Task:
        """Like ``async_`` but only monitored: if the task crashes the caller gets a DOWN
        (``await_`` raises, ``yield_`` gives ("exit", reason)) instead of dying.

        >>> def risky():
        ...     return 1 / 0
        >>> sup = await TaskSupervisor.start_link(name="tasks")
        >>> t = await TaskSupervisor.async_nolink("tasks", risky)
        >>> await Task.yield_(t)
        ('exit', ...)
        """
        return await TaskSupervisor._async(supervisor, False, fn, args, shutdown)

    @staticmethod
    async def start_child(supervisor: Any, fn: Callable[..., Any], *args: Any,
                          restart: str = "temporary", shutdown: Any = 5.0) -> Pid:
        """Start a task nobody awaits under ``supervisor``; ``restart="transient"``
        re-runs it if it crashes. Returns its pid.

        >>> sup = await TaskSupervisor.start_link(name="tasks")
        >>> pid = await TaskSupervisor.start_child("tasks", abs, -1)
        """
        if not callable(fn):
            raise TypeError("TaskSupervisor.start_child expects a callable, got %r" % (fn,))
        return cast(Pid, await DynamicSupervisor.start_child(supervisor, {
            "id": Task, "start": (_supervised_noreply, (fn,) + args), "restart": restart,
            "shutdown": shutdown, "modules": [Task]}))

    @staticmethod
    async def children(supervisor: Any) -> List[Pid]:
        """The pids of the supervisor's running tasks.

        >>> sup = await TaskSupervisor.start_link(name="tasks")
        >>> await TaskSupervisor.children("tasks")
        []
        """
        return [pid for (_id, pid, _t, _m) in await DynamicSupervisor.which_children(supervisor)
                if type(pid) is Pid]
