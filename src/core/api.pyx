# api.pyx: the public process API, thin wrappers over the components above.
#
# Calling convention (DESIGN.md): what waits returns an awaitable (receive, sleep, call);
# what does not wait is a plain function. Functions that change the process table
# (spawn, link, monitor, register, exit signals, timers) run on the node's loop thread;
# send and cast are safe from any thread.

cdef object _MISSING = object()


cdef inline Process _self_proc(str what):
    cdef Process p = _current_here()
    if p is None:
        raise CallbackError("%s must be called inside a pyotp process" % what)
    return p


cdef inline void _on_loop_thread(Scheduler s, str what) except *:
    if pyotp_thread_id() != s.loop_tid:
        raise RuntimeError("%s must run on the node's loop thread; from other threads use "
                           "the node handle (pyotp.Runtime.start_thread())" % what)


cdef inline Scheduler _loop_sched(str what):
    """The scheduler, for code that changes or walks the node's state (timer wheel,
    process table, mailboxes): only its loop thread may."""
    cdef Scheduler s = _need_sched()
    _on_loop_thread(s, what)
    return s


def self():
    """The pid of the calling process (Erlang's ``self()``).

    >>> me = pyotp.self()
    """
    return _self_proc("pyotp.self()").pid


cdef Process _spawn(object fn, tuple args):
    cdef Scheduler s = _need_sched()
    _on_loop_thread(s, "spawn")
    if not callable(fn):
        raise TypeError("spawn expects a callable (an async def function), got %r" % (fn,))
    cdef Process p = s.new_process(PK_CORO)
    p.init_arg = fn
    p.spawn_args = args
    p.scheduled = 1
    s.enqueue(p)
    return p


def spawn(fn, *args):
    """Start a process running ``fn(*args)`` (normally an ``async def`` function) and
    return its pid.

    >>> async def hello(who):
    ...     print("hello", who)
    >>> pid = pyotp.spawn(hello, "world")
    """
    return _spawn(fn, args).pid


def spawn_link(fn, *args):
    """Like spawn, linked to the calling process.

    >>> async def worker(n=0):
    ...     await pyotp.receive()
    >>> pid = pyotp.spawn_link(worker, 1)
    """
    cdef Process me = _self_proc("spawn_link")
    cdef Process p = _spawn(fn, args)
    _link(me, p.pid)
    return p.pid


def spawn_monitor(fn, *args):
    """Like spawn, monitored by the calling process; returns (pid, ref).

    >>> async def worker(n=0):
    ...     await pyotp.receive()
    >>> pid, ref = pyotp.spawn_monitor(worker)
    """
    cdef Process me = _self_proc("spawn_monitor")
    cdef Process p = _spawn(fn, args)
    return (p.pid, _monitor(me, p.pid))


def spawn_opt(fn, *args, link=False, monitor=False, max_mailbox=None):
    """Like spawn, with options (Erlang's ``spawn_opt``): ``link=True`` links it to the
    caller, ``monitor=True`` monitors it and returns ``(pid, ref)``, ``max_mailbox`` sets
    its mailbox limit (see ``process_flag("max_mailbox", ...)``).

    >>> async def worker(n=0):
    ...     await pyotp.receive()
    >>> pid = pyotp.spawn_opt(worker, 1, max_mailbox=10_000)
    >>> pid, ref = pyotp.spawn_opt(worker, 2, monitor=True, max_mailbox={"size": 100, "kill": False})
    """
    cdef Process me = None
    cdef tuple spec = None
    if link or monitor:
        me = _self_proc("spawn_opt(link/monitor)")
    if max_mailbox is not None:
        spec = _mbx_parse(max_mailbox, "spawn_opt")
    cdef Process p = _spawn(fn, args)
    if spec is not None:
        _mbx_set(p, spec)
    if link:
        _link(me, p.pid)
    if monitor:
        return (p.pid, _monitor(me, p.pid))
    return p.pid


def send(dest, msg):
    """Send ``msg`` to a pid, a registered name, ``(name, node)``, ``("global", name)``,
    ``("via", module, key)`` or an alias (``pyotp.alias()``, or a BEAM process's).
    Returns msg. Sending to a dead pid does nothing (OTP); to an
    unregistered name raises BadArg. Safe from any thread.

    >>> pyotp.send(pid, ("hello", 1))
    ('hello', 1)
    """
    if _current is not None and _current.tracer is not None:
        _trace(_current, "send", (dest, msg))
    if _to_local_pid(dest, K_MSG, msg):
        return msg
    if type(dest) is Pid:
        _remote_send(dest, msg)
        return msg
    if type(dest) is Reference:       # an alias (alias.pyx)
        _alias_send(dest, msg)
        return msg
    _need_sched()
    cdef object target = _whereis_any(dest)
    if target is None:
        if type(dest) is Pid or (type(dest) is tuple and len(dest) == 2 and not _is(dest[0], "global")):
            return msg
        raise BadArg("send: no process is registered as %r" % (dest,))
    if type(target) is Process:
        _deliver(<Process>target, msg_new(K_MSG, msg, None))
    else:
        _remote_send(target, msg)
    return msg


cdef void _send_quiet(object dest, object msg) except *:
    try:
        send(dest, msg)
    except BadArg:
        pass


def receive(match=None, timeout=None):
    """Wait for the first message (or the first for which ``match(msg)`` is true; the
    others stay queued in order). ``timeout`` in seconds; on expiry raises TimeoutError.
    Nothing happens until it is awaited (a forgotten ``await`` takes no message and
    warns ``pyotp.receive(...) was never awaited``).

    >>> ref = pyotp.make_ref()
    >>> for m in ("hello", (ref, "reply")):
    ...     _ = pyotp.send(pyotp.self(), m)
    >>> msg = await pyotp.receive()
    >>> reply = await pyotp.receive(lambda m: m[0] == ref, timeout=1.0)
    """
    cdef Process p = _caller_for_wait("receive()")
    if p is None:
        raise CallbackError("receive() must be awaited inside a pyotp process")
    return _armed(p, OP_RECEIVE, NULL if match is None else <PyObject*>match,
                  NULL if timeout is None else <PyObject*>timeout, NULL)


cdef object _receive_begin(Process p, object match, object timeout):
    """The awaited receive (deferred.pyx): the message when one is queued, else _TOKEN
    with the process set to wait for it."""
    cdef Msg* m
    cdef object v
    if match is None:
        m = mb_pop(&p.mb)
    else:
        p.mb.save = NULL
        m = mb_take_matching(&p.mb, match)
    if m != NULL:
        v = msg_object(m)
        msg_free(m)
        p.handled += 1
        if p.tracer is not None:
            _trace(p, "receive", v)
        return v
    if timeout is not None:
        timeout = _timeout_arg(timeout, "receive")
    if timeout is not None:
        if timeout == 0:
            raise TimeoutError("receive timed out")
        p.timer = _sched.start_timer(TK_WAKE, timeout, None, None, p)
    p.wait = W_RECEIVE
    p.match = match
    return _TOKEN


def sleep(seconds):
    """Suspend the calling process for ``seconds`` (on the timer wheel). ``sleep(0)``
    yields: the process runs again once the event loop has had its turn (other
    processes, I/O, queued writes), as ``asyncio.sleep(0)`` does for a task, without
    waiting for the wheel's next millisecond. Outside a process it is asyncio.sleep.
    Nothing happens until it is awaited.

    >>> await pyotp.sleep(0.1)
    """
    cdef Process p = _caller_for_wait("sleep()")
    if (type(seconds) is not int and type(seconds) is not float) or seconds < 0:
        raise BadArg("sleep expects seconds >= 0, got %r" % (seconds,))
    if p is None:
        return _asyncio.sleep(seconds)
    return _armed(p, OP_SLEEP, <PyObject*>seconds, NULL, NULL)


cdef object _sleep_begin(Process p, object seconds):
    cdef Timer t
    p.wait = W_SLEEP
    if seconds == 0:
        # a yield: the wheel's millisecond ticks would park a producer that yields every
        # few thousand messages for half a millisecond on average. The wake is a timer
        # outside the wheel (cancel() ignores it; _fire checks it is still p's timer),
        # so a kill or cancel meanwhile leaves the queued callback harmless.
        t = Timer.__new__(Timer)
        t.kind = TK_WAKE
        t.proc = p
        p.timer = t
        _sched.loop.call_soon(_sleep0_fire, t)
        return _TOKEN
    p.timer = _sched.start_timer(TK_WAKE, seconds, None, None, p)
    return _TOKEN


def _sleep0_fire(Timer t):
    # as the wheel's own callback does: the woken process runs in this same loop callback
    cdef Scheduler s = _sched
    cdef bint claimed = s is not None and pyotp_cas_int(&s.wake_pending, 0, 1)
    try:
        _fire(t)
    finally:
        if claimed:
            s.run_turn()


# ---------------------------------------------------------------------------------------
# Names

cdef void _register(object name, Process p) except *:
    if not isinstance(name, str) or not name or name == "undefined":
        raise BadArg("register: %r is not a valid name (a non-empty str other than 'undefined')" % (name,))
    if name in _sched.names:
        raise BadArg("register: the name %r is already registered to %r" % (name, (<Process>_sched.names[name]).pid))
    if not _alive(p):
        raise BadArg("register: the process is not alive")
    if p.name is not None:
        raise BadArg("register: %r is already registered as %r" % (p.pid, p.name))
    _sched.names[name] = p
    p.name = name


def register(name, pid):
    """Register ``name`` for a local pid (Erlang's ``register/2``). Raises BadArg when the
    name is taken, the pid is dead or already named.

    >>> pyotp.register("logger", pyotp.self())
    True
    """
    cdef Scheduler s = _need_sched()
    _on_loop_thread(s, "register")
    if type(pid) is not Pid or not (<Pid>pid).is_local():
        raise BadArg("register: %r is not a local pid" % (pid,))
    _register(name, (<Pid>pid)._proc)
    return True


def unregister(name):
    """Remove a registered name. BadArg if it is not registered.

    >>> pyotp.register("logger", pyotp.self())
    True
    >>> pyotp.unregister("logger")
    True
    """
    cdef Scheduler s = _need_sched()
    _on_loop_thread(s, "unregister")
    cdef object p = s.names.pop(name, None)
    if p is None:
        raise BadArg("unregister: %r is not a registered name" % (name,))
    (<Process>p).name = None
    return True


def whereis(name):
    """The pid registered as ``name``, or None.

    >>> pyotp.whereis("logger")
    """
    if _sched is None:
        return None
    cdef object p = _sched.names.get(name)
    return None if p is None else (<Process>p).pid


def registered():
    """All locally registered names."""
    return list(_loop_sched("registered").names)


# ---------------------------------------------------------------------------------------
# Links, monitors, exits

def link(pid):
    """Link the calling process to ``pid``. Linking to a dead process sends the caller an
    exit signal with reason ``noproc`` (OTP).

    >>> worker = pyotp.spawn(pyotp.receive)
    >>> pyotp.link(worker)
    True
    """
    _link(_self_proc("link"), pid)
    return True


def unlink(pid):
    """Remove a link (both directions).

    >>> worker = pyotp.spawn(pyotp.receive)
    >>> pyotp.unlink(worker)
    True
    """
    _unlink(_self_proc("unlink"), pid)
    return True


def monitor(target):
    """Monitor a pid, a registered name or (name, node). Returns a reference; when the
    target dies the caller gets ``("DOWN", ref, "process", pid_or_name, reason)``; a
    target that is already dead gives reason ``noproc`` at once.

    >>> ref = pyotp.monitor(pid)
    """
    return _monitor(_self_proc("monitor"), target)


def demonitor(ref, flush=False):
    """Stop a monitor; with flush=True also remove its DOWN message if one is queued.

    >>> ref = pyotp.monitor(pid)
    >>> pyotp.demonitor(ref, flush=True)
    True
    """
    if type(ref) is not Reference:
        raise BadArg("demonitor: %r is not a reference" % (ref,))
    return _demonitor(_self_proc("demonitor"), <Reference>ref, flush)


def exit(pid_or_reason, reason=_MISSING):
    """``exit(reason)`` ends the calling process (raises pyotp.Exit); ``exit(pid, reason)``
    sends an exit signal: ``"kill"`` always kills (the victim's reason is ``"killed"``),
    ``"normal"`` is ignored unless the target traps exits, anything else kills a process
    that does not trap exits and is a message ``("EXIT", from, reason)`` to one that does.

    >>> worker = pyotp.spawn(pyotp.receive)
    >>> pyotp.exit(worker, "shutdown")
    True
    """
    if reason is _MISSING:
        raise Exit(pid_or_reason)
    cdef Scheduler s = _need_sched()
    _on_loop_thread(s, "exit/2")
    cdef object from_pid = _current.pid if _current is not None else None
    cdef object pid = pid_or_reason
    if type(pid) is not Pid:
        raise BadArg("exit: %r is not a pid" % (pid,))
    if not (<Pid>pid).is_local():
        _remote_hook("exit2", from_pid, pid, reason)
        return True
    cdef Process t = (<Pid>pid)._proc
    if _alive(t):
        _exit_signal(t, from_pid, reason, False)
    return True


def process_flag(flag, value):
    """Set a process flag of the calling process and return its old value.

    - ``"trap_exit"``: exit signals become ``("EXIT", from, reason)`` messages.
    - ``"max_mailbox"``: a limit on the messages queued in the mailbox, in the spirit of
      OTP's ``max_heap_size``: an int (0: no limit), or a dict ``{"size": n, "kill": bool,
      "log": bool}`` (both default True). Past the limit the process is killed with reason
      ``("max_mailbox", n)`` (``kill``) and an error is logged (``log``); with
      ``kill=False`` a warning is logged once. The old value comes back as such a dict.

    >>> pyotp.process_flag("trap_exit", True)
    False
    >>> pyotp.process_flag("max_mailbox", 100_000)
    {'size': 0, 'kill': True, 'log': True}
    """
    cdef Process p = _self_proc("process_flag")
    cdef dict old_mbx
    if flag == "max_mailbox":
        spec = _mbx_parse(value, "process_flag")
        old_mbx = _mbx_get(p.mb.limit, p.mbx_kill or p.mb.limit == 0, p.mbx_log or p.mb.limit == 0)
        _mbx_set(p, spec)
        return old_mbx
    if flag != "trap_exit":
        raise BadArg("process_flag: unsupported flag %r (trap_exit, max_mailbox)" % (flag,))
    old = p.trap_exit
    p.trap_exit = bool(value)
    return old


def is_alive(pid):
    """True while the local process ``pid`` runs."""
    return type(pid) is Pid and (<Pid>pid).is_local() and _alive((<Pid>pid)._proc)


cdef object _local_pid(object id, object serial):
    cdef object p = None if _sched is None else _sched.procs.get(id)
    if p is not None and (<Process>p).pid.serial == serial:
        return (<Process>p).pid
    cdef Pid pid = Pid.__new__(Pid)       # a dead (or never seen) local pid
    pid.id = id
    pid.serial = serial
    return pid


def processes():
    """The pids of all live processes on this node, oldest first."""
    cdef Scheduler s = _loop_sched("processes")
    return [(<Process>p).pid for p in s.procs.values()]


cdef str _status_name(Process p):
    if p.status == ST_RUNNING:
        return "running"
    if p.wait == W_WOKEN or (p.scheduled and not p.parked):
        return "runnable"
    return "waiting"


_INFO_KEYS = frozenset((
    "status", "message_queue_len", "messages", "links", "monitors", "monitored_by",
    "registered_name", "trap_exit", "messages_handled", "messages_received", "reductions",
    "memory", "behaviour", "initial_call", "parent"))


cdef object _initial_call(Process p):
    """(module, function, arity) the process started in, as Erlang's initial_call.

    Read from what the process already keeps (its callback object or its coroutine): no
    field is added to the process for this."""
    cdef object fn
    if p.kind == PK_GEN and p.mod is not None:
        t = type(p.mod)
        return (t.__module__, t.__qualname__ + ".init", 1)
    fn = p.init_arg
    if fn is not None and p.kind == PK_CORO:       # not started yet
        return (getattr(fn, "__module__", None), getattr(fn, "__qualname__", repr(fn)),
                len(p.spawn_args or ()))
    if p.coro is not None:
        code = getattr(p.coro, "cr_code", None)
        frame = getattr(p.coro, "cr_frame", None)
        mod = frame.f_globals.get("__name__") if frame is not None else None
        return (mod, getattr(p.coro, "__qualname__", type(p.coro).__name__),
                code.co_argcount if code is not None else 0)
    return None


def process_info(pid, keys=None):
    """A dict describing a live local process, or None if it is dead.

    Keys: status ('running', 'runnable' or 'waiting'), message_queue_len, messages,
    links, monitors, monitored_by, registered_name, trap_exit, messages_handled (taken out
    of the mailbox), messages_received (arrived in the mailbox, queued ones included),
    reductions (callbacks run plus coroutine resumptions: work done, as BEAM's reductions),
    memory (bytes, an estimate), behaviour, initial_call ((module, function, arity) or
    None), parent (the starter's pid or None: a supervisor's children name it).
    ``keys`` (an iterable of those names) limits the answer to them; an unknown key is a
    BadArg. The counters cost one integer add per message or callback, on the loop thread.

    >>> pyotp.process_info(pyotp.self())["status"]
    'running'
    >>> pyotp.process_info(pyotp.self(), ["status", "message_queue_len"])
    {'status': 'running', 'message_queue_len': 0}
    """
    if type(pid) is not Pid or not (<Pid>pid).is_local():
        raise BadArg("process_info: %r is not a local pid" % (pid,))
    if _sched is None:
        return None
    _on_loop_thread(_sched, "process_info")      # it reads the mailbox (loop thread only)
    cdef object want = None
    if keys is not None:
        if isinstance(keys, (str, bytes)):
            raise BadArg("process_info: keys must be a list of key names, got %r" % (keys,))
        want = list(keys)
        for k in want:
            if k not in _INFO_KEYS:
                raise BadArg("process_info: unknown key %r (known: %s)"
                             % (k, ", ".join(sorted(_INFO_KEYS))))
    cdef Process p = (<Pid>pid)._proc
    if not _alive(p):
        return None
    cdef Py_ssize_t qlen = mb_length(&p.mb)
    if want is not None and "memory" not in want:
        mem = 0
    else:
        import sys
        mem = sys.getsizeof(p) + sys.getsizeof(p.pid) + qlen * sizeof(Msg)
        for x in (p.links, p.monitors, p.monitored_by, p.mod, p.coro):
            if x is not None:
                mem += sys.getsizeof(x)
        if p.mod is not None and hasattr(p.mod, "__dict__"):
            mem += sys.getsizeof(p.mod.__dict__)
    info = {
        "status": _status_name(p),
        "message_queue_len": qlen,
        "messages": mb_snapshot(&p.mb) if want is None or "messages" in want else None,
        "links": sorted(p.links) if p.links else [],
        "monitors": [("process", t if type(t) is not tuple else (t[0], t[1])) for t in (p.monitors or {}).values()],
        "monitored_by": [(<Process>w).pid if type(w) is Process else w for w in (p.monitored_by or {}).values()],
        "registered_name": p.name,
        "trap_exit": p.trap_exit,
        "messages_handled": p.handled,
        "messages_received": p.mb.received,
        "reductions": p.reductions,
        "memory": mem,
        "behaviour": type(p.mod).__name__ if p.kind == PK_GEN else None,
        "initial_call": _initial_call(p),
        "parent": p.parent if type(p.parent) is Pid else None,
    }
    if want is not None:
        return {k: info[k] for k in want}
    return info


_KIND_NAMES = ("message", "cast", "call", "stop", "sys")


cdef void _trace(Process p, str event, object data) noexcept:
    """Give one trace event to p's tracer. A tracer that raises is removed: tracing never
    breaks the traced process (pyotp.tracing bounds the rate and the output)."""
    cdef object fn = p.tracer
    try:
        fn(p.pid, event, data)
    except BaseException:
        p.tracer = None


def set_tracer(pid, tracer):
    """Trace the local process ``pid``: ``tracer(pid, event, data)`` runs in the traced
    process at each ``"send"`` (data: (dest, msg)), ``"receive"`` (the message; for a
    behaviour (kind, request) unless a plain message), ``"call"`` and ``"cast"`` (data:
    (server, request)). None stops tracing. Returns the previous tracer. See pyotp.tracing
    for a rate-bounded tracer.

    >>> pyotp._core.set_tracer(pid, lambda pid, ev, data: print(ev, data))
    """
    if type(pid) is not Pid or not (<Pid>pid).is_local():
        raise BadArg("set_tracer: %r is not a local pid" % (pid,))
    if tracer is not None and not callable(tracer):
        raise BadArg("set_tracer: tracer must be callable or None, got %r" % (tracer,))
    cdef Process p = (<Pid>pid)._proc
    if not _alive(p):
        raise BadArg("set_tracer: %r is not alive" % (pid,))
    old = p.tracer
    p.tracer = tracer
    return old


# ---------------------------------------------------------------------------------------
# Timers

cdef double _seconds(object t, str what) except -1:
    if (type(t) is not int and type(t) is not float) or t < 0 or t != t:
        raise BadArg("%s: time must be seconds >= 0, got %r" % (what, t))
    return t


def send_after(dest, msg, seconds):
    """Send ``msg`` to ``dest`` after ``seconds``; returns a Timer for cancel_timer.

    >>> t = pyotp.send_after(pyotp.self(), "tick", 1.0)
    """
    cdef Scheduler s = _loop_sched("send_after")
    return s.start_timer(TK_SEND, _seconds(seconds, "send_after"), dest, msg, None)


def start_timer(dest, msg, seconds):
    """Like send_after, but delivers ``("timeout", timer, msg)`` (Erlang's start_timer).

    >>> t = pyotp.start_timer(pyotp.self(), "poll", 0.5)
    """
    cdef Scheduler s = _loop_sched("start_timer")
    return s.start_timer(TK_START, _seconds(seconds, "start_timer"), dest, msg, None)


def apply_after(seconds, fn, *args):
    """Call ``fn(*args)`` on the loop thread after ``seconds`` (timer wheel); returns a
    Timer. Used by the behaviours for their timeouts.

    >>> t = pyotp.apply_after(1.0, print, "later")
    """
    cdef Scheduler s = _loop_sched("apply_after")
    if not callable(fn):
        raise TypeError("apply_after expects a callable, got %r" % (fn,))
    return s.start_timer(TK_CALLBACK, _seconds(seconds, "apply_after"), fn, args, None)


def cancel_timer(timer):
    """Cancel a timer: returns the seconds that were left, or False if it already fired
    or was cancelled (its message, if it fired, may already be queued, as in OTP).

    >>> t = pyotp.send_after(pyotp.self(), "tick", 10.0)
    >>> 9.0 < pyotp.cancel_timer(t) <= 10.0
    True
    """
    if type(timer) is not Timer:
        raise BadArg("cancel_timer: %r is not a timer" % (timer,))
    cdef Scheduler s = _loop_sched("cancel_timer")
    cdef double left = s.wheel.remaining(<Timer>timer, False)
    if not s.wheel.cancel(<Timer>timer):
        return False
    return left


def read_timer(timer):
    """Seconds left on a timer, or False if it is not running.

    >>> t = pyotp.send_after(pyotp.self(), "tick", 10.0)
    >>> 9.0 < pyotp.read_timer(t) <= 10.0
    True
    """
    if type(timer) is not Timer:
        raise BadArg("read_timer: %r is not a timer" % (timer,))
    cdef double left = _loop_sched("read_timer").wheel.remaining(<Timer>timer)
    return False if left < 0 else left


# ---------------------------------------------------------------------------------------
# Node lifecycle (driven by pyotp.runtime)

def _node_attach(loop, max_mailbox=None):
    """Start the node's scheduler on `loop` (the calling thread must be the loop's);
    ``max_mailbox`` is the default of every process it spawns (None: no limit)."""
    global _sched
    cdef tuple spec = None
    if _sched is not None:
        raise RuntimeError("a pyotp node is already running in this OS process")
    if max_mailbox is not None:
        spec = _mbx_parse(max_mailbox, "max_mailbox")
    cdef Scheduler s = Scheduler(loop)
    if spec is not None:
        s.mbx_size = spec[0]
        s.mbx_kill = spec[1]
        s.mbx_log = spec[2]
    _sched = s


def _node_detach():
    """Forget the scheduler (after shutdown). Leftover processes are killed silently."""
    global _sched
    cdef Scheduler s = _sched
    if s is None:
        return
    _on_loop_thread(s, "_node_detach")
    for p in list(s.procs.values()):
        _schedule_exit(<Process>p, _KILLED)
    s.cancel_timers()
    s.closed = True
    s.drain_thread_calls()      # calls queued by other threads too late: they fail now
    _sched = None
    _dist_forget_channels()     # a channel never outlives its node's scheduler


def _node_running():
    return _sched is not None


def _shutdown_all(reason="shutdown"):
    """Ask every process to stop, newest first: behaviours get a stop request (their
    terminate runs), others an exit signal. Returns a future resolved when none is left."""
    cdef Scheduler s = _loop_sched("_shutdown_all")
    fut = s.loop.create_future()
    if not s.procs:
        fut.set_result(None)
        return fut
    s.all_exited = fut
    for p in reversed(list(s.procs.values())):
        if (<Process>p).kind == PK_GEN:
            _deliver(<Process>p, msg_new(K_STOP, reason, None))
        else:
            _exit_signal(<Process>p, None, reason, False)
    return fut


def _kill_all():
    cdef Scheduler s = _loop_sched("_kill_all")
    for p in reversed(list(s.procs.values())):
        _schedule_exit(<Process>p, _KILLED)


def _await_exit(pid):
    """A future of (exit reason, result) of the local process pid, for code outside the
    runtime (pyotp.run waiting for main). A process that is already gone gives
    ("noproc", None): dead processes keep neither (see process.pyx)."""
    return _gen_stop_monitor(pid)


cdef object _gen_stop_monitor(object pid):
    cdef Scheduler s = _loop_sched("_await_exit")
    cdef Process t = (<Pid>pid)._proc if type(pid) is Pid else None
    fut = s.loop.create_future()
    if not _alive(t):
        fut.set_result(("noproc", None))
        return fut
    cdef Process w = _external_caller(fut)
    cdef Reference ref = _new_ref()
    _watch(t, ref, w)
    _park(w, ref, WK_EXIT, t, (pid, None, None), None)
    return fut


def _stats():
    """Counters for tests and the demo."""
    cdef Scheduler s = _loop_sched("_stats")
    return {"processes": len(s.procs), "timers": s.wheel.count, "dispatched": s.dispatched}


def _timer_source():
    """What arms this node's timer wheel, for tests: "timerfd" (one kernel timer fd the
    loop watches), "loop" (the loop's call_later) or None (not decided: no timer armed
    yet)."""
    cdef Scheduler s = _loop_sched("_timer_source")
    if s.tfd >= 0:
        return "timerfd"
    return None if s.tfd == TFD_UNTRIED else "loop"


def _allow_timerfd(bint allowed):
    """Tests: whether nodes started from now on may arm their timers with a timerfd
    (False: as where none can be made). Returns the previous setting."""
    global _timerfd_allowed
    cdef bint was = _timerfd_allowed
    _timerfd_allowed = allowed
    return was


def node_stats():
    """Counters of this node, cheap to read: processes, run_queue (processes runnable now),
    timers, dispatched (messages/callbacks the scheduler has run since start; the
    difference of two readings over time is the node's message rate).

    >>> sorted(pyotp._core.node_stats())
    ['dispatched', 'processes', 'run_queue', 'timers']
    """
    cdef Scheduler s = _need_sched()
    cdef Py_ssize_t rq = 0
    for p in s.procs.values():
        if (<Process>p).status != ST_RUNNING and ((<Process>p).wait == W_WOKEN or
                ((<Process>p).scheduled and not (<Process>p).parked)):
            rq += 1
    return {"processes": len(s.procs), "run_queue": rq, "timers": s.wheel.count,
            "dispatched": s.dispatched}
