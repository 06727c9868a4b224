"""Applications: a unit of code with its own supervision tree, configuration (the
*application environment*) and dependencies, started and stopped as a whole, as OTP's
``application`` behaviour and Elixir's ``Application`` module.

Write one by subclassing ``Application`` and defining the callbacks:

=============================  ===========================================================
callback                       what it does
=============================  ===========================================================
start(start_type, args)        start the top process (normally a supervisor) *linked to the
                               caller* and return its pid, ``("ok", pid)`` or
                               ``("ok", pid, state)``; ``("error", reason)`` (or raising)
                               fails the start. ``start_type`` is ``"normal"``, ``args`` is
                               the class attribute ``start_args``. Plain or ``async def``.
prep_stop(state)               optional; runs before the top process is stopped; returns
                               the state given to ``stop``.
stop(state)                    runs after the top process has stopped (cleanup).
config_change(changed, new,    after ``pyotp.config.reload_config``: ``changed`` and ``new``
  removed)                     are dicts key -> value, ``removed`` a list of keys.
=============================  ===========================================================

Class attributes: ``name`` (the application name, the key of its configuration table;
default: the class name in snake_case, ``MyApp`` -> ``"my_app"``), ``dependencies``
(Application classes, registered application names, or ``"module:Class"`` strings; they
are started first and must be running), ``env`` (default environment; configured values
win), ``start_args`` (passed to ``start``; default None). A class that does not define
``start`` is a *library application*: it has environment and dependencies, no processes.

The API is called on ``Application`` itself (``Application.start`` / ``Application.stop``
are the API there and the callbacks on instances):

>>> class MyApp(Application):
...     name = "my_app"
...     env = {"greeting": "hello"}
...     async def start(self, start_type, args):
...         return await Supervisor.start_link([(Greeter, None)], strategy="one_for_one")
>>> async def main():
...     started = await Application.ensure_all_started(MyApp)   # -> ["my_app"]
...     greeting = Application.get_env("my_app", "greeting")
...     await Application.stop("my_app")
...     return started, greeting
>>> pyotp.run(main)
(['my_app'], 'hello')

Each running application has a *master* process that calls ``start``, is linked to the top
process and traps exits. ``Application.stop(name)`` makes it call ``prep_stop``, send the
top process an exit signal ``"shutdown"`` (a supervisor then stops its children in reverse
order), wait for it to exit, and call ``stop``. Started applications are stopped in
reverse start order by ``Application.stop_all()``.

When the top process exits by itself, the master calls ``prep_stop`` and ``stop`` and the
application is gone. What happens next depends on the restart type given when it was
started, as in OTP:

* ``"temporary"`` (the default): an INFO log ``application <name> exited: <reason>``;
  nothing else is affected.
* ``"transient"``: like temporary if the reason is ``"normal"``; otherwise as permanent.
* ``"permanent"``: an ERROR log, and a *system stop* is requested with reason
  ``("application_terminated", name, reason)`` (OTP stops the whole node). Whoever runs
  the node waits for that with ``await Application.await_system_stop()``; the command-line
  runner (``python -m pyotp run``) does, then stops all applications in reverse order and
  exits with status 1.

Stopping an application explicitly never affects the others, whatever its type (OTP).

The application environment (``get_env``, ``put_env``, ...) is one table per OS process,
like OTP's per node, and is readable and writable from any thread, before or after a node
runs; ``pyotp.config`` fills it from TOML files.
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import re
import threading
from typing import (Any, Awaitable, Callable, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple, Type, TypeVar, Union, cast)

from . import _core
from ._core import CallbackError, Exit, Pid, StartError

_log = logging.getLogger("pyotp")

__all__ = ["Application", "ApplicationStartError", "ApplicationEnvError", "RESTART_TYPES"]

RESTART_TYPES = ("temporary", "transient", "permanent")

AppRef = Union[str, type]
"""An application: its name, its class, or a ``"module:Class"`` string."""

AppClass = Type["Application"]
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------
# Errors

class ApplicationStartError(StartError):
    """An application could not be started. ``app`` is the application that failed,
    ``app_reason`` why; ``reason`` is ``(app, app_reason)``, Elixir's
    ``{:error, {app, reason}}``.

    >>> try:
    ...     await Application.ensure_all_started(Broken)
    ... except ApplicationStartError as e:
    ...     e.app, e.app_reason
    ('broken', ('bad_return', 42))
    """

    def __init__(self, app: str, reason: Any) -> None:
        StartError.__init__(self, (app, reason))
        self.app = app
        self.app_reason = reason

    def __str__(self) -> str:
        reason = self.app_reason
        if type(reason) is tuple and len(reason) == 2 and reason[0] == "exception":
            exc = reason[1]
            return "application %s failed to start: %s: %s" % (self.app, type(exc).__name__, exc)
        return "application %s failed to start: %r" % (self.app, reason)


class ApplicationEnvError(KeyError):
    """``Application.fetch_env_strict`` found no value (Elixir's ``fetch_env!``). A
    ``KeyError``; ``app`` and ``key`` name what was missing.

    >>> Application.load(MyApp)
    'ok'
    >>> Application.fetch_env_strict("my_app", "missing")
    Traceback (most recent call last):
    ApplicationEnvError: could not fetch application environment 'missing' for application 'my_app' because configuration at 'missing' was not set
    """

    def __init__(self, app: str, key: Any, why: str) -> None:
        KeyError.__init__(self, key)
        self.app = app
        self.key = key
        self.message = ("could not fetch application environment %r for application %r "
                        "because %s" % (key, app, why))

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------------------------------
# The environment table (process-wide, thread-safe)

_env_lock = threading.RLock()
_env: Dict[str, Dict[Any, Any]] = {}
_loaded: Dict[str, AppClass] = {}          # name -> class, for applications loaded
_classes: Dict[str, AppClass] = {}         # name -> class, every Application subclass defined


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


def _app_name(app: Any) -> str:
    if isinstance(app, type) and issubclass(app, Application):
        return app.name
    if isinstance(app, str) and app:
        if ":" in app:
            return resolve_application(app).name
        return app
    raise TypeError("expected an application name (str) or an Application subclass, got %r" % (app,))


def resolve_application(app: AppRef) -> AppClass:
    """The Application class for a class, a registered name, or ``"module:Class"``
    (the module is imported). Raises LookupError / TypeError naming the problem.

    >>> resolve_application("examples.my_app.application:MyApp").name
    'my_app'
    """
    if isinstance(app, type):
        if issubclass(app, Application) and app is not Application:
            return app
        raise TypeError("%r is not an Application subclass" % (app,))
    if not isinstance(app, str) or not app:
        raise TypeError("expected an application name, class or 'module:Class', got %r" % (app,))
    if ":" in app:
        mod_name, _, attr = app.partition(":")
        if not mod_name or not attr:
            raise LookupError("application path %r must look like 'package.module:Class'" % (app,))
        module = importlib.import_module(mod_name)
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise LookupError("module %r has no attribute %r" % (mod_name, attr)) from None
        return resolve_application(obj)
    cls = _classes.get(app)
    if cls is None:
        raise LookupError("unknown application %r (no Application subclass with that name has "
                          "been defined; import its module or use 'module:Class')" % (app,))
    return cls


# ---------------------------------------------------------------------------------------
# Running applications, per node

class _Entry:
    """One started (or starting) application."""
    __slots__ = ("cls", "name", "type", "app", "master", "status", "waiters", "top", "state")

    def __init__(self, cls: AppClass, restart_type: str) -> None:
        self.cls = cls
        self.name: str = cls.name
        self.type = restart_type
        self.app: Any = None
        self.master: Any = None
        self.status = "starting"        # -> "started" -> "stopping"
        self.waiters: List[Tuple[Any, Any]] = []
        self.top: Any = None
        self.state: Any = None


# name -> entry, in start order. Entries are removed by their master process as it ends
# (also when the node is torn down: a killed process's coroutine is closed, its finally
# blocks run), so a table never outlives the node that owns the masters.
_running: Dict[str, _Entry] = {}


class _SystemStop:
    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.pending: List[Any] = []
        self.waiters: List[Any] = []


_system: Optional[_SystemStop] = None


def _system_state() -> _SystemStop:
    global _system
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError("system stop must be requested on a running node's loop thread") from None
    if _system is None or _system.loop is not loop:
        _system = _SystemStop(loop)
    return _system


def _live(entry: _Entry) -> bool:
    return entry.master is not None and _core.is_alive(entry.master)


async def _invoke(fn: Callable[..., Any], *args: Any) -> Any:
    r = fn(*args)
    if inspect.isawaitable(r):
        r = await r
    return r


def _in_process() -> bool:
    try:
        _core.self()
        return True
    except CallbackError:
        return False


async def _as_process(fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
    """Run the coroutine function inside a process (a helper one when the caller is not a
    pyotp process, e.g. an asyncio task of a Runtime)."""
    if _in_process():
        return await fn(*args)

    async def helper() -> Tuple[str, Any]:
        try:
            return ("ok", await fn(*args))
        except Exception as e:
            return ("raise", e)

    pid = _core.spawn(helper)
    reason, result = await _core._await_exit(pid)
    if reason != "normal":
        raise Exit(reason)
    if result[0] == "raise":
        raise result[1]
    return cast(_T, result[1])


def _is_library(cls: type) -> bool:
    for klass in cls.__mro__:
        if "start" in klass.__dict__:
            return klass is Application
    return True  # pragma: no cover - Application defines start


def _notify(entry: _Entry, result: Any) -> None:
    waiters, entry.waiters = entry.waiters, []
    for pid, ref in waiters:
        _core.send(pid, ("$app_started", ref, result))


def _forget(entry: _Entry) -> None:
    if _running.get(entry.name) is entry:
        del _running[entry.name]


def _shutdown_links(me: Any) -> None:
    info = _core.process_info(me)
    for pid in (info or {}).get("links", []):
        _core.exit(pid, "shutdown")


def _is_exit_from(msg: Any, pid: Any) -> bool:
    return type(msg) is tuple and len(msg) == 3 and msg[0] == "EXIT" and msg[1] == pid


async def _master(entry: _Entry) -> None:
    """The application master: starts the application, then waits for its top process to
    exit or for a stop request."""
    me = _core.self()
    entry.master = me
    _core.process_flag("trap_exit", True)
    try:
        ok, value = await _start_phase(entry)
        if not ok:
            _shutdown_links(me)
            _forget(entry)
            _notify(entry, ("error", value))
            return
        entry.status = "started"
        _notify(entry, "ok")
        await _run_phase(entry)
    finally:
        _forget(entry)


async def _start_phase(entry: _Entry) -> Tuple[bool, Any]:
    cls = entry.cls
    if _is_library(cls):
        entry.app = cls()
        return True, None
    try:
        entry.app = cls()
        r = await _invoke(entry.app.start, "normal", cls.start_args)
    except StartError as e:
        return False, e.reason
    except Exit as e:
        return False, e.reason
    except Exception as e:
        _log.error("application %s: start callback raised", entry.name, exc_info=True)
        return False, ("exception", e)
    if type(r) is Pid:
        top, state = r, None
    elif type(r) is tuple and len(r) in (2, 3) and r[0] == "ok" and type(r[1]) is Pid:
        top, state = r[1], (r[2] if len(r) == 3 else None)
    elif type(r) is tuple and len(r) == 2 and r[0] == "error":
        return False, r[1]
    else:
        return False, ("bad_return", r)
    entry.top, entry.state = top, state
    _core.link(top)        # as OTP's application master does; harmless if already linked
    return True, None


async def _run_phase(entry: _Entry) -> None:
    top = entry.top
    while True:
        msg = await _core.receive()
        if type(msg) is not tuple or not msg:
            continue
        if msg[0] == "$app_stop" and len(msg) == 3:
            entry.status = "stopping"
            await _stop_sequence(entry, "shutdown")
            _forget(entry)
            _core.send(msg[1], (msg[2], "ok"))
            return
        if msg[0] == "EXIT" and len(msg) == 3:
            sender, reason = msg[1], msg[2]
            if top is not None and sender == top:
                entry.status = "stopping"
                await _callback_stop(entry)
                _forget(entry)
                _report_exit(entry, reason)
                return
            if sender is None or reason != "normal":
                # The node is shutting down (exit signal without sender), someone sent us
                # an exit signal, or a process linked by start() crashed: the application
                # goes down with that reason.
                entry.status = "stopping"
                await _stop_sequence(entry, reason)
                _forget(entry)
                _log.info("application %s stopped: %r", entry.name, reason)
                return


async def _stop_sequence(entry: _Entry, reason: Any) -> None:
    app = entry.app
    try:
        entry.state = await _invoke(app.prep_stop, entry.state)
    except Exception:
        _log.error("application %s: prep_stop raised", entry.name, exc_info=True)
    top = entry.top
    if top is not None and _core.is_alive(top):
        _core.exit(top, reason if reason != "normal" else "shutdown")
        await _core.receive(lambda m: _is_exit_from(m, top))
    await _stop_callback(entry)


async def _callback_stop(entry: _Entry) -> None:
    try:
        entry.state = await _invoke(entry.app.prep_stop, entry.state)
    except Exception:
        _log.error("application %s: prep_stop raised", entry.name, exc_info=True)
    await _stop_callback(entry)


async def _stop_callback(entry: _Entry) -> None:
    try:
        await _invoke(entry.app.stop, entry.state)
    except Exception:
        _log.error("application %s: stop callback raised", entry.name, exc_info=True)


def _report_exit(entry: _Entry, reason: Any) -> None:
    fatal = entry.type == "permanent" or (entry.type == "transient" and reason != "normal")
    if not fatal:
        _log.info("application %s exited: %r, type: %s", entry.name, reason, entry.type)
        return
    _log.error("application %s exited: %r, type: %s; stopping the system",
               entry.name, reason, entry.type)
    _request_system_stop(("application_terminated", entry.name, reason))


def _request_system_stop(reason: Any) -> None:
    st = _system_state()
    waiters, st.waiters = st.waiters, []
    live = [w for w in waiters if _core.is_alive(w)]
    if not live:
        st.pending.append(reason)
    for w in live:
        _core.send(w, ("$system_stop", reason))


async def _await_start(entry: _Entry) -> Any:
    ref = _core.monitor(entry.master)
    entry.waiters.append((_core.self(), ref))
    msg = await _core.receive(
        lambda m: type(m) is tuple and len(m) >= 3 and (
            (m[0] == "$app_started" and m[1] == ref) or (m[0] == "DOWN" and m[1] == ref)))
    _core.demonitor(ref, flush=True)
    if msg[0] == "DOWN":
        return ("error", msg[4])
    return msg[2]


def _load(cls: AppClass) -> None:
    with _env_lock:
        prev = _loaded.get(cls.name)
        _loaded[cls.name] = cls
        if prev is cls:
            return
        env = _env.setdefault(cls.name, {})
        for k, v in dict(cls.env).items():
            env.setdefault(k, v)


async def _start_one(cls: AppClass, restart_type: str) -> bool:
    """Start `cls` if it is not running; True if this call started it."""
    entry = _running.get(cls.name)
    if entry is not None and not _live(entry):
        _forget(entry)
        entry = None
    if entry is None:
        _load(cls)
        entry = _Entry(cls, restart_type)
        _running[entry.name] = entry
        entry.master = _core.spawn(_master, entry)
        mine = True
    else:
        if entry.status != "starting":
            return False
        mine = False
    result = await _await_start(entry)
    if result != "ok":
        raise ApplicationStartError(cls.name, result[1])
    return mine


def _start_order(apps: Sequence[AppRef]) -> List[AppClass]:
    order: List[AppClass] = []
    done: Dict[str, AppClass] = {}
    path: List[str] = []

    def visit(ref: AppRef, parent: Optional[str]) -> None:
        try:
            cls = resolve_application(ref)
        except (LookupError, TypeError, ImportError) as e:
            who = parent if parent is not None else str(ref)
            raise ApplicationStartError(who, ("bad_application", str(ref), str(e))) from None
        name = cls.name
        if name in done:
            return
        if name in path:
            cycle = path[path.index(name):] + [name]
            raise ApplicationStartError(name, ("circular_dependencies", cycle))
        path.append(name)
        deps = cls.dependencies
        if isinstance(deps, (str, type)) or not isinstance(deps, Iterable):
            raise ApplicationStartError(name, ("bad_dependencies", deps))
        for dep in deps:
            visit(dep, name)
        path.pop()
        done[name] = cls
        order.append(cls)

    for a in apps:
        visit(a, None)
    return order


def _check_type(restart_type: str) -> None:
    if restart_type not in RESTART_TYPES:
        raise ValueError("restart type must be one of %s, got %r"
                         % (", ".join(RESTART_TYPES), restart_type))


async def _stop_by_name(name: str) -> Any:
    entry = _running.get(name)
    if entry is not None and not _live(entry):
        _forget(entry)
        entry = None
    if entry is None:
        return ("error", ("not_started", name))
    if entry.status == "starting":
        if await _await_start(entry) != "ok":
            return ("error", ("not_started", name))
    ref = _core.monitor(entry.master)
    _core.send(entry.master, ("$app_stop", _core.self(), ref))
    await _core.receive(lambda m: type(m) is tuple and len(m) >= 2 and (
        m[0] == ref or (m[0] == "DOWN" and m[1] == ref)))
    _core.demonitor(ref, flush=True)
    return "ok"


# ---------------------------------------------------------------------------------------
# The behaviour class

class _Hybrid:
    """``Application.start`` / ``Application.stop``: the API function when looked up on a
    class, the callback (the given default, or the subclass's override) on an instance."""

    def __init__(self, api: Callable[..., Any], callback: Callable[..., Any]) -> None:
        self.api = api
        self.callback = callback
        self.__doc__ = api.__doc__

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        if instance is None:
            return self.api
        return self.callback.__get__(instance, owner)


async def _api_start(app: AppRef, restart_type: str = "temporary") -> str:
    """Start one application whose dependencies are already running; returns "ok".
    Raises ApplicationStartError with ``("already_started", name)``, ``("not_started",
    dep)`` or the start failure (Elixir's ``Application.start/2``).

    >>> await Application.start(MyApp)        # MyApp depends on Metrics
    Traceback (most recent call last):
    ApplicationStartError: application my_app failed to start: ('not_started', 'metrics')
    >>> await Application.start(Metrics)
    'ok'
    >>> await Application.start(MyApp)
    'ok'
    """
    _check_type(restart_type)
    cls = resolve_application(app)

    async def go() -> str:
        e = _running.get(cls.name)
        if e is not None and _live(e):
            raise ApplicationStartError(cls.name, ("already_started", cls.name))
        for dep in cls.dependencies:
            dname = _app_name(dep)
            d = _running.get(dname)
            if d is None or not _live(d) or d.status != "started":
                raise ApplicationStartError(cls.name, ("not_started", dname))
        await _start_one(cls, restart_type)
        return "ok"

    return await _as_process(go)


async def _api_stop(app: AppRef) -> Any:
    """Stop a running application: ``prep_stop``, then its top process is stopped
    (exit signal ``"shutdown"``), then ``stop``. Returns ``"ok"``, or
    ``("error", ("not_started", name))`` (Elixir's ``Application.stop/1``). Applications
    that depend on it keep running, as in OTP.

    >>> await Application.ensure_all_started(MyApp)
    ['metrics', 'my_app']
    >>> await Application.stop("my_app")
    'ok'
    >>> await Application.stop("my_app")
    ('error', ('not_started', 'my_app'))
    """
    name = _app_name(app)
    return await _as_process(_stop_by_name, name)


def _default_start(self: Any, start_type: str, args: Any) -> Any:
    raise NotImplementedError("%s does not define start(start_type, args)" % type(self).__name__)


def _default_stop(self: Any, state: Any) -> Any:
    return "ok"


class Application:
    """Base class of applications; see the module documentation.

    >>> class Metrics(Application):
    ...     name = "metrics"
    ...     env = {"interval": 1.0}
    ...     def start(self, start_type, args):
    ...         return Collector.start_link(Application.get_env("metrics", "interval"))
    """

    name: str = "application"
    dependencies: Sequence[AppRef] = ()
    env: Mapping[Any, Any] = {}
    start_args: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = _snake(cls.__name__)
        if not isinstance(cls.name, str) or not cls.name:
            raise TypeError("%s.name must be a non-empty str, got %r" % (cls.__name__, cls.name))
        if not isinstance(cls.env, Mapping):
            raise TypeError("%s.env must be a mapping, got %r" % (cls.__name__, cls.env))
        _classes[cls.name] = cls

    # -- callbacks (start and stop are hybrids: see _Hybrid) ------------------------------

    start = _Hybrid(_api_start, _default_start)
    stop = _Hybrid(_api_stop, _default_stop)

    def prep_stop(self, state: Any) -> Any:
        """Called before the top process is stopped; returns the state for ``stop``."""
        return state

    def config_change(self, changed: Dict[Any, Any], new: Dict[Any, Any], removed: List[Any]) -> Any:
        """Called after a configuration reload changed this application's environment."""
        return "ok"

    # -- starting and stopping ------------------------------------------------------------

    @staticmethod
    async def ensure_all_started(apps: Union[AppRef, Sequence[AppRef]],
                                 type: str = "temporary") -> List[str]:
        """Start the application(s) and every dependency not yet running, dependencies
        first; returns the names this call started, in start order. If one fails, those
        already started by this call are stopped again (reverse order) and
        ApplicationStartError is raised. ``type`` is the restart type (module doc).

        >>> await Application.ensure_all_started(MyApp)
        ['metrics', 'my_app']
        >>> await Application.ensure_all_started(MyApp)
        []
        """
        _check_type(type)
        roots: List[AppRef] = (list(apps) if isinstance(apps, (list, tuple))
                               else [cast(AppRef, apps)])
        order = _start_order(roots)

        async def go() -> List[str]:
            started: List[str] = []
            try:
                for cls in order:
                    if await _start_one(cls, type):
                        started.append(cls.name)
            except Exception:
                for name in reversed(started):
                    await _stop_by_name(name)
                raise
            return started

        return await _as_process(go)

    @staticmethod
    async def ensure_started(app: AppRef, type: str = "temporary") -> str:
        """Start ``app`` unless it is running (its dependencies must be); returns "ok".

        >>> await Application.ensure_started(Metrics)
        'ok'
        >>> await Application.ensure_started(MyApp)
        'ok'
        >>> await Application.ensure_started(MyApp)
        'ok'
        """
        _check_type(type)
        cls = resolve_application(app)

        async def go() -> str:
            e = _running.get(cls.name)
            if e is not None and _live(e):
                if e.status == "starting" and await _await_start(e) != "ok":
                    raise ApplicationStartError(cls.name, ("not_started", cls.name))
                return "ok"
            await _api_start(cls, type)
            return "ok"

        return await _as_process(go)

    @staticmethod
    async def stop_all() -> List[str]:
        """Stop every running application, newest first; returns their names in the order
        stopped (what ``python -m pyotp run`` does on shutdown).

        >>> await Application.ensure_all_started(MyApp)
        ['metrics', 'my_app']
        >>> await Application.stop_all()
        ['my_app', 'metrics']
        """
        async def go() -> List[str]:
            stopped: List[str] = []
            for name in reversed(list(_running)):
                if await _stop_by_name(name) == "ok":
                    stopped.append(name)
            return stopped

        return await _as_process(go)

    @staticmethod
    def started_applications() -> List[str]:
        """Names of the running applications, oldest first.

        >>> await Application.ensure_all_started(MyApp)
        ['metrics', 'my_app']
        >>> Application.started_applications()
        ['metrics', 'my_app']
        """
        return [n for n, e in _running.items() if e.status != "starting" and _live(e)]

    @staticmethod
    def loaded_applications() -> List[str]:
        """Names of the applications loaded (their default ``env`` merged in), by
        ``load`` or by being started.

        >>> Application.load(Metrics), Application.load(MyApp)
        ('ok', 'ok')
        >>> Application.loaded_applications()
        ['metrics', 'my_app']
        """
        with _env_lock:
            return list(_loaded)

    @staticmethod
    def load(app: AppRef) -> str:
        """Load an application without starting it: its default ``env`` is merged under
        what is configured. Returns "ok" (also if it was loaded already).

        >>> Application.load(MyApp)
        'ok'
        """
        _load(resolve_application(app))
        return "ok"

    @staticmethod
    def application_class(app: AppRef) -> AppClass:
        """The Application class for a name, class or ``"module:Class"``.

        >>> Application.application_class("my_app") is MyApp
        True
        """
        return resolve_application(app)

    # -- system stop ------------------------------------------------------------------------

    @staticmethod
    def system_stop(reason: Any = "stop") -> None:
        """Ask whoever runs this node to stop it (like Elixir's ``System.stop``): wakes the
        processes in ``await_system_stop``, or is remembered for the next one. Call it on
        the node's loop thread (signal handlers installed with ``loop.add_signal_handler``
        run there).

        >>> Application.system_stop(("signal", "SIGTERM"))
        """
        _request_system_stop(reason)

    @staticmethod
    async def await_system_stop() -> Any:
        """Wait until a system stop is requested (by ``system_stop`` or a permanent
        application exiting) and return its reason.

        >>> Application.system_stop(("signal", "SIGTERM"))     # from elsewhere, usually
        >>> reason = await Application.await_system_stop()
        >>> reason
        ('signal', 'SIGTERM')
        """
        st = _system_state()
        if st.pending:
            return st.pending.pop(0)
        me = _core.self()
        st.waiters.append(me)
        msg = await _core.receive(lambda m: type(m) is tuple and len(m) == 2 and m[0] == "$system_stop")
        return msg[1]

    # -- the environment ----------------------------------------------------------------------

    @staticmethod
    def get_env(app: AppRef, key: Any, default: Any = None) -> Any:
        """The value of ``key`` in ``app``'s environment, or ``default``.

        >>> Application.load(MyApp)
        'ok'
        >>> Application.get_env("my_app", "greeting", "hi")
        'hello'
        >>> Application.get_env("my_app", "colour", "blue")
        'blue'
        """
        name = _app_name(app)
        with _env_lock:
            return _env.get(name, {}).get(key, default)

    @staticmethod
    def fetch_env(app: AppRef, key: Any) -> Any:
        """``("ok", value)`` or ``"error"``.

        >>> Application.load(MyApp)
        'ok'
        >>> Application.fetch_env("my_app", "greeting")
        ('ok', 'hello')
        >>> Application.fetch_env("my_app", "colour")
        'error'
        """
        name = _app_name(app)
        with _env_lock:
            env = _env.get(name)
            if env is None or key not in env:
                return "error"
            return ("ok", env[key])

    @staticmethod
    def fetch_env_strict(app: AppRef, key: Any) -> Any:
        """The value, or raise ApplicationEnvError (a KeyError) naming app and key
        (Elixir's ``fetch_env!``).

        >>> Application.load(MyApp)
        'ok'
        >>> Application.fetch_env_strict("my_app", "greeting")
        'hello'
        """
        name = _app_name(app)
        with _env_lock:
            env = _env.get(name)
            if env is not None and key in env:
                return env[key]
            if name not in _loaded and not env:
                why = "the application was not loaded nor configured"
            else:
                why = "configuration at %r was not set" % (key,)
        raise ApplicationEnvError(name, key, why)

    @staticmethod
    def put_env(app: AppRef, key: Any, value: Any) -> None:
        """Set ``key`` in ``app``'s environment.

        >>> Application.put_env("my_app", "greeting", "bonjour")
        """
        name = _app_name(app)
        with _env_lock:
            _env.setdefault(name, {})[key] = value

    @staticmethod
    def put_all_env(config: Mapping[Any, Mapping[Any, Any]]) -> None:
        """``put_env`` for every app -> {key: value} in ``config`` (as Elixir's).

        >>> Application.put_all_env({"my_app": {"greeting": "hej", "port": 4000}})
        """
        if not isinstance(config, Mapping):
            raise TypeError("put_all_env expects a mapping app -> {key: value}, got %r" % (config,))
        with _env_lock:
            for app, kv in config.items():
                if not isinstance(kv, Mapping):
                    raise TypeError("put_all_env: the environment of %r must be a mapping, got %r"
                                    % (app, kv))
                env = _env.setdefault(_app_name(app), {})
                env.update(kv)

    @staticmethod
    def delete_env(app: AppRef, key: Any) -> None:
        """Remove ``key`` from ``app``'s environment (no error if absent).

        >>> Application.delete_env("my_app", "greeting")
        """
        name = _app_name(app)
        with _env_lock:
            env = _env.get(name)
            if env is not None:
                env.pop(key, None)

    @staticmethod
    def get_all_env(app: AppRef) -> Dict[Any, Any]:
        """A copy of ``app``'s whole environment.

        >>> Application.load(MyApp)
        'ok'
        >>> Application.get_all_env("my_app")
        {'greeting': 'hello', 'port': 4000}
        """
        name = _app_name(app)
        with _env_lock:
            return dict(_env.get(name, {}))


# ---------------------------------------------------------------------------------------
# Used by pyotp.config

def _replace_envs(new_envs: Mapping[str, Dict[Any, Any]]) -> Dict[str, Dict[Any, Any]]:
    """Replace whole environments; returns the old ones (of the names given)."""
    with _env_lock:
        old = {}
        for name, env in new_envs.items():
            old[name] = dict(_env.get(name, {}))
            _env[name] = dict(env)
        return old


def _defaults_of_loaded() -> Dict[str, Dict[Any, Any]]:
    with _env_lock:
        return {name: dict(cls.env) for name, cls in _loaded.items()}


async def _call_config_change(name: str, changed: Dict[Any, Any], new: Dict[Any, Any],
                              removed: List[Any]) -> Any:
    entry = _running.get(name)
    if entry is None or entry.status != "started" or not _live(entry):
        return None
    try:
        return await _invoke(entry.app.config_change, changed, new, removed)
    except Exception as e:
        _log.error("application %s: config_change raised", name, exc_info=True)
        return ("error", e)


def _running_names() -> List[str]:
    return [n for n, e in _running.items() if e.status == "started" and _live(e)]
