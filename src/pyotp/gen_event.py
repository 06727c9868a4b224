"""EventManager: OTP's ``gen_event``, one process hosting many event handlers.

An event manager is a process; *event handlers* are objects installed in it. Every event
notified to the manager is passed to each installed handler in turn (in the manager's own
process, no extra process per handler). A handler that raises or returns something it
should not is removed (its ``terminate`` runs with ``("error", ...)``, the crash is logged
to the ``"pyotp"`` logger) and the other handlers keep running, as in OTP.

>>> class Collect(EventHandler):
...     def init(self, args):
...         return ("ok", [])
...     def handle_event(self, event, seen):
...         return ("ok", seen + [event])
...     def handle_call(self, request, seen):
...         return ("ok", seen, seen)
>>> async def main():
...     mgr = await EventManager.start_link(name="events")
...     await EventManager.add_handler(mgr, Collect, None)
...     EventManager.notify(mgr, "hello")
...     await EventManager.sync_notify(mgr, "world")
...     return await EventManager.call(mgr, Collect, "get")
>>> pyotp.run(main)
['hello', 'world']

Handler callbacks (plain ``def``: they run inside the manager's message loop, so a handler
cannot wait; to do slow work, send a message to another process):

==========================  ===============================================================
callback                    accepted returns
==========================  ===============================================================
init(args)                  ("ok", state) | ("ok", state, "hibernate"); anything else is
                            returned to ``add_handler`` and the handler is not installed
handle_event(event, state)  ("ok", state) | ("ok", state, "hibernate") | "remove_handler" |
                            ("swap_handler", args1, state, handler2, args2)
handle_call(request, state) ("ok", reply, state[, "hibernate"]) | ("remove_handler", reply)
                            | ("swap_handler", reply, args1, state, handler2, args2)
handle_info(msg, state)     as handle_event
terminate(arg, state)       anything: returned by ``delete_handler`` (and passed to the new
                            handler's ``init`` by ``swap_handler``)
==========================  ===============================================================

``terminate``'s ``arg`` says why the handler goes: the ``args`` of ``delete_handler`` /
``swap_handler``; ``"remove_handler"`` when a callback asked for it; ``("error", ("EXIT",
reason))`` when a callback raised (``reason`` is the exception, or the reason of
``pyotp.exit(reason)``); ``("error", value)`` after a bad return ``value``; ``"stop"`` when
the manager stops; ``("stop", reason)`` when the process supervising the handler
(``add_sup_handler``) exited with ``reason``.

A *handler id* is the handler class, or ``(HandlerClass, id)`` to install the same class
several times. As in OTP, the newest handler comes first in ``which_handlers`` and sees each
event first, and installing an id twice is not refused (the newest shadows the older one
until it is removed).

Supervised handlers: ``add_sup_handler`` links the manager and the calling process. When
the handler is later removed, that process receives ``("gen_event_EXIT", handler_id,
reason)`` with ``reason`` ``"normal"`` (deleted, or a callback returned remove_handler),
``"shutdown"`` (the manager is stopping), ``("swapped", new_handler_id, supervisor_pid)``,
or the error term (``("EXIT", exception)`` or the bad return value). When the supervising
process exits, its handlers are removed (``terminate(("stop", reason), state)``), and every
remaining handler then sees ``("EXIT", pid, reason)`` in ``handle_info``. Unlike OTP, the
manager drops its link to a supervising process as soon as none of its handlers is
supervised by that process any more (OTP keeps the stale link).
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Dict, List, Optional, Tuple

from . import _core
from ._core import Atom, Pid
from .gen_server import GenServer

__all__ = ["EventHandler", "EventManager"]

_log = logging.getLogger("pyotp")

HandlerId = Any  # a handler class, or (handler class, id)

_CALLBACKS = ("init", "handle_event", "handle_call", "handle_info", "terminate")


class EventHandler:
    """Base class of event handlers; override the callbacks you need (see the module doc).

    The manager creates one instance per installed handler (without calling
    ``__init__``, as for GenServer) and keeps the handler's ``state`` for it.

    >>> class Counter(EventHandler):
    ...     def init(self, start):
    ...         return ("ok", start)
    ...     def handle_event(self, event, n):
    ...         return ("ok", n + 1)
    ...     def handle_call(self, request, n):
    ...         return ("ok", n, n)
    """

    def init(self, args: Any) -> Any:
        """Called when the handler is added; ``("ok", state)`` installs it."""
        return ("ok", args)

    def handle_event(self, event: Any, state: Any) -> Any:
        """Called for each notified event; the default ignores it."""
        return ("ok", state)

    def handle_call(self, request: Any, state: Any) -> Any:
        """Called for ``EventManager.call(mgr, handler, request)``."""
        raise RuntimeError("attempted to call event handler %s but no handle_call/2 clause "
                           "was provided" % type(self).__name__)

    def handle_info(self, msg: Any, state: Any) -> Any:
        """Called for any other message the manager receives; the default logs a warning."""
        _log.warning("event handler %s received unexpected message in handle_info: %r",
                     type(self).__name__, msg)
        return ("ok", state)

    def terminate(self, arg: Any, state: Any) -> Any:
        """Called when the handler is removed; the result goes to ``delete_handler``."""
        return "ok"

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        return ("ok", state)


def _parse_handler(handler: Any) -> Tuple[type, Any]:
    """(class, id) of a handler id; TypeError for anything else."""
    if isinstance(handler, type):
        cls, hid = handler, None
    elif type(handler) is tuple and len(handler) == 2 and isinstance(handler[0], type):
        cls, hid = handler
    else:
        raise TypeError("%r is not an event handler: expected an EventHandler subclass or "
                        "(EventHandler subclass, id)" % (handler,))
    if not issubclass(cls, EventHandler):
        raise TypeError("%s is not an EventHandler subclass" % cls.__name__)
    for name in _CALLBACKS:
        if inspect.iscoroutinefunction(getattr(cls, name)):
            raise TypeError("%s.%s is async: event handler callbacks run inside the "
                            "manager's loop and must be plain def" % (cls.__name__, name))
    return cls, hid


class _Handler:
    """One installed handler: its callbacks bound once, its state, its supervisor."""

    __slots__ = ("cls", "id", "hid", "state", "sup", "init", "event", "call", "info", "term")

    def __init__(self, cls: type, hid: Any, sup: Any) -> None:
        factory: Any = cls
        mod = factory.__new__(cls)          # no __init__, as for GenServer
        self.cls = cls
        self.id = hid
        self.hid: Any = cls if hid is None else (cls, hid)
        self.state: Any = None
        self.sup = sup
        self.init = mod.init
        self.event = mod.handle_event
        self.call = mod.handle_call
        self.info = mod.handle_info
        self.term = mod.terminate


def _handler_atom(h: _Handler) -> Atom:
    return Atom("%s.%s" % (h.cls.__module__, h.cls.__qualname__))


def _classify(h: _Handler, r: Any) -> Tuple[Any, Any]:
    """A handle_event/handle_info return other than ("ok", state): (None, None) if it was
    still fine (the state is updated), else (why the handler leaves, extra)."""
    if type(r) is tuple:
        n = len(r)
        if n == 3 and r[0] == "ok" and r[2] == "hibernate":
            h.state = r[1]
            return None, None
        if n == 5 and r[0] == "swap_handler":
            return "swap", r
    elif r == "remove_handler":
        return "remove_handler", None
    return ("error", r), None


def _exit_reason(e: BaseException) -> Any:
    """What OTP's ``catch`` would give: ("EXIT", reason)."""
    return ("EXIT", e.reason if isinstance(e, _core.Exit) else e)


class EventManager(GenServer):
    """An event manager process (OTP ``gen_event``); see the module documentation.

    >>> async def main():
    ...     mgr = await EventManager.start_link()
    ...     await EventManager.add_handler(mgr, Collect, None)
    ...     EventManager.notify(mgr, ("user_logged_in", "ann"))
    ...     return await EventManager.which_handlers(mgr)
    >>> pyotp.run(main)
    [<class '...Collect'>]
    """
    behaviour_name = "EventManager"
    otp_behaviour = "gen_event"

    # -- the API -------------------------------------------------------------------------

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Optional[Any] = None,
                         timeout: Optional[float] = None, max_mailbox: Any = None) -> Pid:
        """Start an event manager linked to the calling process and return its pid.
        ``name`` is a str, ``("global", n)`` or ``("via", module, key)``; ``arg`` is not
        used (it lets supervisors start a manager from the ``(EventManager, arg)``
        shorthand). Raises ``pyotp.StartError(("already_started", pid))`` if the name is
        taken.

        >>> mgr = await EventManager.start_link(name="alarms2")
        """
        return await super().start_link((name, _self_or_none()), name=name, timeout=timeout,
                                        max_mailbox=max_mailbox)

    @classmethod
    async def start(cls, arg: Any = None, *, name: Optional[Any] = None,
                    timeout: Optional[float] = None, max_mailbox: Any = None) -> Pid:
        """Like start_link, without the link.

        >>> mgr = await EventManager.start(name="alarms2")
        """
        return await super().start((name, None), name=name, timeout=timeout,
                                   max_mailbox=max_mailbox)

    @classmethod
    def child_spec(cls, arg: Any = None) -> Dict[str, Any]:
        """The child spec for ``(EventManager, name)`` in a supervisor: ``arg`` is the
        manager's name (a str, ``("global", n)``, ``("via", mod, key)``), a dict
        ``{"name": name}``, or None for an unnamed manager; the id is the name.

        >>> sup = await Supervisor.start_link([(EventManager, "alarms2")], strategy="one_for_one")
        """
        name = arg.get("name") if isinstance(arg, dict) else arg
        return {"id": name if name is not None else cls,
                "start": (cls.start_link, (), {"name": name})}

    @staticmethod
    async def add_handler(manager: Any, handler: HandlerId, args: Any) -> Any:
        """Install ``handler`` (a class or ``(class, id)``); its ``init(args)`` runs in the
        manager. Returns ``"ok"``; if ``init`` raised, ``("EXIT", exception)``; if it
        returned anything else than ``("ok", state)``, that value (e.g. ``("error", r)``),
        and the handler is not installed.

        >>> await EventManager.add_handler(mgr, Collect, None)
        'ok'
        """
        _parse_handler(handler)
        return await _rpc(manager, "add_handler", ("add_handler", handler, args, None))

    @staticmethod
    async def add_sup_handler(manager: Any, handler: HandlerId, args: Any) -> Any:
        """Like add_handler, and the handler is supervised by the calling process: it
        gets ``("gen_event_EXIT", handler, reason)`` when the handler is removed, and the
        handler is removed when it exits.

        >>> await EventManager.add_sup_handler(mgr, Collect, None)
        'ok'
        """
        _parse_handler(handler)
        me = _core.self()
        return await _rpc(manager, "add_sup_handler", ("add_handler", handler, args, me))

    @staticmethod
    async def delete_handler(manager: Any, handler: HandlerId, args: Any) -> Any:
        """Remove ``handler``: its ``terminate(args, state)`` runs and its result is
        returned, or ``("error", "module_not_found")`` if it is not installed.

        >>> await EventManager.delete_handler(mgr, Collect, "bye")
        'ok'
        """
        _parse_handler(handler)
        return await _rpc(manager, "delete_handler", ("delete_handler", handler, args))

    @staticmethod
    async def swap_handler(manager: Any, old: Tuple[HandlerId, Any],
                           new: Tuple[HandlerId, Any]) -> Any:
        """Replace ``old = (handler1, args1)`` by ``new = (handler2, args2)``:
        ``handler1.terminate(args1, state)`` runs, then ``handler2.init((args2, result))``
        with that result (``"error"`` if handler1 was not installed). A supervised
        handler1 passes its supervision on to handler2. Returns ``"ok"`` or
        ``("error", what_init_returned)``.

        >>> await EventManager.swap_handler(mgr, (Collect, None), (Collect, "again"))
        'ok'
        """
        (h1, a1), (h2, a2) = _pair(old, "old"), _pair(new, "new")
        _parse_handler(h1)
        _parse_handler(h2)
        return await _rpc(manager, "swap_handler", ("swap_handler", h1, a1, h2, a2, None))

    @staticmethod
    async def swap_sup_handler(manager: Any, old: Tuple[HandlerId, Any],
                               new: Tuple[HandlerId, Any]) -> Any:
        """Like swap_handler, and handler2 is supervised by the calling process.

        >>> await EventManager.swap_sup_handler(mgr, (Collect, None), (Collect, "again"))
        'ok'
        """
        (h1, a1), (h2, a2) = _pair(old, "old"), _pair(new, "new")
        _parse_handler(h1)
        _parse_handler(h2)
        me = _core.self()
        return await _rpc(manager, "swap_sup_handler", ("swap_handler", h1, a1, h2, a2, me))

    @staticmethod
    async def which_handlers(manager: Any) -> List[HandlerId]:
        """The installed handler ids, newest first.

        >>> await EventManager.which_handlers(mgr)
        [<class '...Collect'>]
        """
        result: List[HandlerId] = await _rpc(manager, "which_handlers", ("which_handlers",))
        return result

    @staticmethod
    def notify(manager: Any, event: Any) -> str:
        """Send ``event`` to every handler, asynchronously. Never fails and never waits,
        even if the manager does not exist (safe from any thread).

        >>> EventManager.notify(mgr, ("disk_full", "/var"))
        'ok'
        """
        _core.cast(manager, ("notify", event))
        return "ok"

    @staticmethod
    async def sync_notify(manager: Any, event: Any) -> str:
        """Send ``event`` to every handler and return ``"ok"`` once all have handled it.

        >>> await EventManager.sync_notify(mgr, "flush")
        'ok'
        """
        result: str = await _rpc(manager, "sync_notify", ("sync_notify", event))
        return result

    @staticmethod
    async def call(manager: Any, handler: HandlerId, request: Any,  # type: ignore[override]
                   timeout: Optional[float] = 5.0) -> Any:
        """Call one handler's ``handle_call(request, state)`` and return its reply;
        ``("error", "bad_module")`` if the handler is not installed, ``("error", ("EXIT",
        exception))`` if it raised (it is then removed), ``("error", value)`` after a bad
        return. Raises ``pyotp.Exit((reason, ("EventManager", "call", [...])))`` if the
        manager does not answer (``"noproc"``, ``"timeout"``, its exit reason).

        >>> await EventManager.call(mgr, Collect, "get")
        ['hello']
        """
        _parse_handler(handler)
        try:
            return await _core.call(manager, ("call", handler, request), timeout)
        except _core.Exit as e:
            raise _relocate(e, "call", [manager, handler, request, timeout]) from None

    @staticmethod
    async def stop(manager: Any, reason: Any = "normal",
                   timeout: Optional[float] = None) -> str:
        """Stop the manager: every handler's ``terminate("stop", state)`` runs first.

        >>> await EventManager.stop(mgr)
        'ok'
        """
        return await GenServer.stop(manager, reason, timeout)

    # -- the GenServer callbacks (plain def: the fast path) ----------------------------------

    def system_get_state(self, handlers: List[_Handler]) -> Any:
        """As gen_event's: ``[(module, id, state)]`` per handler (module is the handler
        class's dotted name as an atom)."""
        return [(_handler_atom(h), h.id, h.state) for h in handlers]

    def system_replace_state(self, fun: Any, handlers: List[_Handler]) -> Any:
        """As gen_event's: ``fun((module, id, state))`` for each handler must give
        ``(module, id, new_state)``."""
        new = []
        for h in handlers:
            r = fun((_handler_atom(h), h.id, h.state))
            if not (type(r) is tuple and len(r) == 3 and r[0] == _handler_atom(h) and r[1] == h.id):
                raise ValueError("replace_state: %r is not (module, id, state) of handler %r" % (r, h.hid))
            new.append(r[2])
        for h, s in zip(handlers, new):
            h.state = s
        return self.system_get_state(handlers), handlers

    def init(self, arg: Any) -> Any:
        name, parent = arg
        self._name = name
        self._parent = parent
        _core.process_flag("trap_exit", True)
        handlers: List[_Handler] = []
        # the handler list is only ever mutated in place, so one return tuple serves all
        self._noreply = ("noreply", handlers)
        return ("ok", handlers)

    def handle_cast(self, msg: Any, handlers: List[_Handler]) -> Any:
        # notify's fast path: every handler returns ("ok", state); anything else (or an
        # exception) hands the event over to _notify, which starts again from that handler
        if type(msg) is tuple and len(msg) == 2 and msg[0] == "notify":
            event = msg[1]
            i = 0
            for h in handlers:
                i += 1
                try:
                    r = h.event(event, h.state)
                except Exception as e:
                    self._notify(event, handlers, False, i,
                                 [(h, ("error", _exit_reason(e)), e)])
                    break
                if type(r) is tuple and len(r) == 2 and r[0] == "ok":
                    h.state = r[1]
                    continue
                why, extra = _classify(h, r)
                if why is not None:
                    self._notify(event, handlers, False, i, [(h, why, extra)])
                    break
        else:
            _log.warning("EventManager %r ignored unexpected cast %r", self._name, msg)
        return self._noreply

    def handle_call(self, req: Any, from_: Any, handlers: List[_Handler]) -> Any:
        try:
            return self._request(req, handlers)
        except (TypeError, IndexError) as e:   # a malformed raw request must not kill us
            return ("reply", ("error", ("bad_request", req, str(e))), handlers)

    def _request(self, req: Any, handlers: List[_Handler]) -> Any:
        tag = req[0] if type(req) is tuple and req else None
        if tag == "sync_notify":
            self._notify(req[1], handlers, False)
            return ("reply", "ok", handlers)
        if tag == "call":
            return ("reply", self._call(req[1], req[2], handlers), handlers)
        if tag == "add_handler":
            cls, hid = _parse_handler(req[1])
            sup = req[3]
            if sup is not None:
                _core.link(sup)
            reply = self._add(cls, hid, req[2], sup, handlers)
            if reply != "ok" and sup is not None:
                self._maybe_unlink(sup, handlers)
            return ("reply", reply, handlers)
        if tag == "delete_handler":
            cls, hid = _parse_handler(req[1])
            h = _take(cls, hid, handlers)
            if h is None:
                return ("reply", ("error", "module_not_found"), handlers)
            return ("reply", self._terminate(h, req[2], "normal", "delete", handlers), handlers)
        if tag == "swap_handler":
            return ("reply", self._swap(req[1], req[2], req[3], req[4], req[5], handlers),
                    handlers)
        if tag == "which_handlers":
            return ("reply", [h.hid for h in handlers], handlers)
        return ("reply", ("error", ("unknown_request", req)), handlers)

    def handle_info(self, msg: Any, handlers: List[_Handler]) -> Any:
        if type(msg) is tuple:
            if len(msg) == 3 and msg[0] == "EXIT":
                # the parent's EXIT never gets here: the core stops the manager for it
                pid, reason = msg[1], msg[2]
                for h in [h for h in handlers if h.sup == pid]:
                    handlers.remove(h)
                    self._terminate(h, ("stop", reason), "shutdown",
                                    ("parent_terminated", (pid, reason)), handlers,
                                    unlink=False)
            elif len(msg) == 2 and msg[0] == "notify":     # OTP's raw {notify, Event}
                self._notify(msg[1], handlers, False)
                return self._noreply
        self._notify(msg, handlers, True)
        return self._noreply

    def terminate(self, reason: Any, handlers: List[_Handler]) -> Any:
        sups = set()
        for h in list(handlers):
            self._terminate(h, "stop", "shutdown", "stop", handlers, unlink=False)
            if h.sup is not None:
                sups.add(h.sup)
        handlers.clear()
        for sup in sups:                 # supervisors must not die of the manager's exit
            if sup != self._parent:
                _core.unlink(sup)
        return "ok"

    # -- the handler list ------------------------------------------------------------------

    def _notify(self, event: Any, handlers: List[_Handler], info: bool, start: int = 0,
                leaving: Optional[List[Tuple[_Handler, Any, Any]]] = None) -> None:
        """Run the handlers' handle_event (or handle_info) on `event`, from index `start`
        on (`leaving` holds what the fast path already found). The loop only updates
        states; handlers that must leave are dealt with afterwards, in order."""
        for h in handlers[start:] if start else handlers:
            try:
                r = (h.info if info else h.event)(event, h.state)
            except Exception as e:
                why: Any = ("error", _exit_reason(e))
                extra: Any = e
            else:
                if type(r) is tuple and len(r) == 2 and r[0] == "ok":
                    h.state = r[1]
                    continue
                why, extra = _classify(h, r)
                if why is None:
                    continue
            if leaving is None:
                leaving = []
            leaving.append((h, why, extra))
        if leaving is None:
            return
        for h, why, extra in leaving:
            if why == "swap":
                _, args1, state1, h2, args2 = extra
                h.state = state1
                self._swap_in_place(h, args1, h2, args2, handlers, event)
                continue
            handlers.remove(h)
            if why == "remove_handler":
                self._terminate(h, "remove_handler", "normal", "remove", handlers)
            else:
                self._terminate(h, why, why[1], event, handlers, exc=extra)

    def _call(self, handler: Any, request: Any, handlers: List[_Handler]) -> Any:
        try:
            cls, hid = _parse_handler(handler)
        except TypeError:
            return ("error", "bad_module")
        h = _find(cls, hid, handlers)
        if h is None:
            return ("error", "bad_module")
        try:
            r = h.call(request, h.state)
        except Exception as e:
            handlers.remove(h)
            why = ("error", _exit_reason(e))
            self._terminate(h, why, why[1], request, handlers, exc=e)
            return why
        if type(r) is tuple:
            n = len(r)
            if n == 3 and r[0] == "ok" or n == 4 and r[0] == "ok" and r[3] == "hibernate":
                h.state = r[2]
                return r[1]
            if n == 2 and r[0] == "remove_handler":
                handlers.remove(h)
                self._terminate(h, "remove_handler", "normal", "remove", handlers)
                return r[1]
            if n == 6 and r[0] == "swap_handler":
                _, reply, args1, state1, h2, args2 = r
                h.state = state1
                self._swap_in_place(h, args1, h2, args2, handlers, request)
                return reply
        handlers.remove(h)
        self._terminate(h, ("error", r), r, request, handlers)
        return ("error", r)

    def _add(self, cls: type, hid: Any, args: Any, sup: Any, handlers: List[_Handler],
             index: int = 0) -> Any:
        h = _Handler(cls, hid, sup)
        try:
            r = h.init(args)
        except Exception as e:
            return _exit_reason(e)
        if type(r) is tuple and (len(r) == 2 and r[0] == "ok"
                                 or len(r) == 3 and r[0] == "ok" and r[2] == "hibernate"):
            h.state = r[1]
            handlers.insert(index, h)
            return "ok"
        return r

    def _swap(self, h1: Any, args1: Any, h2: Any, args2: Any, sup: Any,
              handlers: List[_Handler]) -> Any:
        cls1, id1 = _parse_handler(h1)
        cls2, id2 = _parse_handler(h2)
        old = _take(cls1, id1, handlers)
        old_sup = old.sup if old is not None else None
        new_sup = sup if sup is not None else old_sup
        state2: Any = "error"          # OTP: what handler2.init sees when handler1 is absent
        if old is not None:
            state2 = self._terminate(old, args1, ("swapped", h2, new_sup), "swapped", handlers,
                                     unlink=False)
        if sup is not None:
            _core.link(sup)
        r = self._add(cls2, id2, (args2, state2), new_sup, handlers)
        if old_sup is not None and old_sup != new_sup:
            self._maybe_unlink(old_sup, handlers)
        if r == "ok":
            return "ok"
        if new_sup is not None:
            self._maybe_unlink(new_sup, handlers)
        return ("error", r)

    def _swap_in_place(self, h: _Handler, args1: Any, h2: Any, args2: Any,
                       handlers: List[_Handler], last_in: Any) -> None:
        """A callback returned swap_handler: h leaves, h2 takes its place and supervisor."""
        index = handlers.index(h)
        handlers.pop(index)
        try:
            cls2, id2 = _parse_handler(h2)
        except TypeError as e:
            self._terminate(h, ("error", _exit_reason(e)), ("EXIT", e), last_in, handlers, exc=e)
            return
        state2 = self._terminate(h, args1, ("swapped", h2, h.sup), "swapped", handlers,
                                 unlink=False)
        r = self._add(cls2, id2, (args2, state2), h.sup, handlers, index)
        if r != "ok":
            _log.error("** gen_event handler %r could not replace %r in %r: init returned %r",
                       h2, h.hid, self._name, r)
            if h.sup is not None:
                _core.send(h.sup, ("gen_event_EXIT", (cls2 if id2 is None else (cls2, id2)), r))
                self._maybe_unlink(h.sup, handlers)

    def _terminate(self, h: _Handler, arg: Any, reason: Any, last_in: Any,
                   handlers: List[_Handler], *, exc: Optional[BaseException] = None,
                   unlink: bool = True) -> Any:
        """Run h.terminate(arg, state) (h is already out of `handlers`), report the crash
        if it is one, tell its supervisor. Returns terminate's result."""
        try:
            res = h.term(arg, h.state)
        except Exception as e:
            _log.error("** gen_event handler %r raised in terminate(%r): %r", h.hid, arg, e,
                       exc_info=e)
            res = _exit_reason(e)
        if not (reason == "normal" or reason == "shutdown"
                or (type(reason) is tuple and reason and reason[0] == "swapped")):
            self._report(h, reason, last_in, exc)
        if h.sup is not None:
            _core.send(h.sup, ("gen_event_EXIT", h.hid, reason))
            if unlink:
                self._maybe_unlink(h.sup, handlers)
        return res

    def _report(self, h: _Handler, reason: Any, last_in: Any, exc: Optional[BaseException]) -> None:
        try:
            _log.error("** gen_event handler %r crashed.\n** Was installed in %r\n"
                       "** Last event was: %r\n** When handler state == %r\n** Reason == %r",
                       h.hid, self._name if self._name is not None else _core.self(),
                       last_in, h.state, reason,
                       exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None)
        except Exception:  # pragma: no cover - a broken __repr__ must not kill the manager
            pass

    def _maybe_unlink(self, sup: Any, handlers: List[_Handler]) -> None:
        if sup == self._parent:
            return
        for h in handlers:
            if h.sup == sup:
                return
        _core.unlink(sup)


# ---------------------------------------------------------------------------------------

def _self_or_none() -> Any:
    try:
        return _core.self()
    except _core.CallbackError:
        return None


def _pair(x: Any, what: str) -> Tuple[Any, Any]:
    if type(x) is not tuple or len(x) != 2:
        raise TypeError("swap_handler: %s must be (handler, args), got %r" % (what, x))
    return x[0], x[1]


def _find(cls: type, hid: Any, handlers: List[_Handler]) -> Optional[_Handler]:
    for h in handlers:
        if h.cls is cls and h.id == hid:
            return h
    return None


def _take(cls: type, hid: Any, handlers: List[_Handler]) -> Optional[_Handler]:
    h = _find(cls, hid, handlers)
    if h is not None:
        handlers.remove(h)
    return h


def _relocate(e: Any, op: str, args: List[Any]) -> Any:
    """Re-raise a failed GenServer.call as ("reason", ("EventManager", op, args))."""
    reason = e.reason
    if type(reason) is tuple and len(reason) == 2 and type(reason[1]) is tuple \
            and len(reason[1]) == 3 and reason[1][0] == "GenServer":
        return _core.Exit((reason[0], ("EventManager", op, args)))
    return e


async def _rpc(manager: Any, op: str, request: Any) -> Any:
    try:
        return await _core.call(manager, request, None)
    except _core.Exit as e:
        raise _relocate(e, op, [manager] + list(request[1:])) from None
