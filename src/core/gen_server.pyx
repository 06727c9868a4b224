# gen_server.pyx: the GenServer message loop, run by the scheduler without a coroutine.
#
# Owns: GenSpec (a behaviour class's callbacks, looked up once per class), dispatch of
# casts/calls/infos/continues/timeouts, the accepted callback returns, start/stop/call/
# cast/reply.
# Invariants:
#  - A behaviour process has no stack: the scheduler pops a message and calls the Python
#    callback directly. An `async def` callback turns into the process's `coro` until it
#    returns; messages wait in the mailbox meanwhile (as in OTP, a server handles one
#    message at a time).
#  - Accepted returns are exactly Elixir's; anything else stops the server with
#    ("bad_return_value", value) after calling terminate.
#  - `terminate` runs when the server stops itself, crashes in a callback, is stopped by
#    GenServer.stop, or gets an EXIT from its parent while trapping exits; not when it is
#    killed by an untrapped exit signal (OTP).
#  - System messages (OTP's {system, From, Request}: sys, proc_lib:stop, GenServer.stop
#    from BEAM, pyotp.sys) are answered between two messages by pyotp.sys's handler (one
#    place for every behaviour, as OTP's sys:handle_system_msg); while suspended, the loop
#    takes only those (and its parent's EXIT) from the mailbox, the rest stays queued in order.
#  - A call is: monitor the server (the monitor ref doubles as the reply alias), queue the
#    request, park. The reply, the DOWN, or the timeout wakes the caller; whichever comes
#    first removes the others' effect, so a late reply is dropped, never queued.

cdef enum:
    CB_INIT = 0
    CB_CALL = 1
    CB_CAST = 2
    CB_INFO = 3
    CB_CONTINUE = 4
    CB_TERMINATE = 5

cdef tuple _CB_NAMES = ("init", "handle_call", "handle_cast", "handle_info", "handle_continue", "terminate")

cdef object _NOREPLY = "noreply"
cdef object _REPLY = "reply"
cdef object _STOP = "stop"
cdef object _OK = "ok"
# what goes on the wire to another node: an atom tag, as gen_server:cast sends (a plain
# str would reach a BEAM server as a binary, which its gen_server treats as an info)
cdef object _GEN_CAST_TAG = Atom("$gen_cast")


@cython.final
@cython.auto_pickle(False)
cdef class GenSpec:
    """The callbacks of one behaviour class, resolved once."""
    cdef object cls
    cdef object cbs             # tuple of functions indexed by CB_*
    cdef int async_mask

    def __init__(self, cls):
        import inspect
        self.cls = cls
        fns = []
        self.async_mask = 0
        for i, name in enumerate(_CB_NAMES):
            f = getattr(cls, name, None)
            if f is None:
                raise TypeError("%s must define %s" % (cls.__name__, name))
            fns.append(f)
            if inspect.iscoroutinefunction(f):
                self.async_mask |= 1 << i
        self.cbs = tuple(fns)


cdef dict _specs = {}


cdef GenSpec _spec_for(object cls):
    cdef object s = _specs.get(cls)
    if s is None:
        s = GenSpec(cls)
        _specs[cls] = s
    return <GenSpec>s


cdef inline bint _is(object x, object tag):
    return x is tag or (isinstance(x, str) and x == tag)


# ---------------------------------------------------------------------------------------
# The loop

cdef Py_ssize_t _gen_run(Process p, Py_ssize_t budget) except -1:
    cdef Py_ssize_t n = 0
    cdef Msg* m
    cdef int kind
    cdef object a, b, c
    if p.run_flags & RUN_GEN_INIT:
        p.run_flags &= ~RUN_GEN_INIT
        _gen_callback(p, CB_INIT, p.init_arg, None)
        p.init_arg = None
        n = 1
    while n < budget:
        if p.coro is not None or p.status == ST_DEAD or p.has_pending_exit or p.run_flags & RUN_GEN_INIT:
            break
        if p.pending_continue is not None:
            c = p.pending_continue
            p.pending_continue = None
            _gen_callback(p, CB_CONTINUE, (<tuple>c)[0], None)
            n += 1
            continue
        if p.run_flags & RUN_GEN_SUSPENDED:
            m = _gen_take_system(p)
            if m == NULL:
                break
        else:
            m = mb_pop(&p.mb)
        if m == NULL:
            if p.timeout_fired:
                p.timeout_fired = False
                _gen_callback(p, CB_INFO, "timeout", None)
                n += 1
                continue
            break
        if p.timer is not None:          # any message cancels the idle timeout
            _sched.wheel.cancel(p.timer)
            p.timer = None
        p.timeout_fired = False
        kind = m.kind
        a = <object>m.a
        b = None if m.b == NULL else <object>m.b
        msg_free(m)
        p.handled += 1
        p.last_msg = a
        n += 1
        if p.tracer is not None:
            _trace(p, "receive", (_KIND_NAMES[kind], a) if kind != K_MSG else a)
        if p.sysdbg is not None and kind != K_SYS and kind != K_STOP:
            _sys_in(p, kind, a, b)
        if kind == K_CAST:
            _gen_callback(p, CB_CAST, a, None)
        elif kind == K_CALL:
            _gen_callback(p, CB_CALL, a, b)
        elif kind == K_STOP:
            _gen_stop(p, a, p.state, None, None)
        elif kind == K_SYS:
            _gen_sys(p, a, b)
        else:
            _gen_info(p, a)
        if p.coro is None:
            p.last_msg = None   # handled: do not keep (possibly large) messages alive
    return n


cdef object _sys_hook = None
cdef object _SYSTEM_TAG = Atom("system")
cdef object _GEN_CALL_TAG = Atom("$gen_call")
cdef object _IN = Atom("in")
cdef object _OUT = Atom("out")
cdef object _NOREPLY_EV = Atom("noreply")


def _set_sys_hook(hook):
    """Internal: pyotp.sys installs hook(mod, state, request, suspended, parent, remote,
    debug) -> (action, reply, new_state, new_debug), action None, "suspend", "resume" or
    ("terminate", reason): OTP's sys:handle_system_msg for every behaviour. ``debug`` is
    the process's sys debug record (None without one); the core gives it every {in, Msg},
    {out, Reply, To, State} and {noreply, State} event."""
    global _sys_hook
    _sys_hook = hook


cdef bint _is_system_msg(object x, object parent):
    """What a suspended behaviour still handles (OTP's sys:suspend_loop): system
    messages, GenServer.stop, and its parent's EXIT."""
    if type(x) is not tuple or len(<tuple>x) != 3:
        return False
    if _is(x[0], "system") or _is(x[0], "$gen_stop"):
        return True
    return _is(x[0], "EXIT") and parent is not None and x[1] == parent


cdef Msg* _gen_take_system(Process p) except? NULL:
    cdef object parent = p.parent if p.trap_exit else None
    return mb_take_matching(&p.mb, lambda x: _is_system_msg(x, parent))


cdef void _sys_in(Process p, int kind, object a, object b) except *:
    """sys's {in, Msg} event for a message the behaviour handles (not a system message,
    as OTP's decode_msg), in the form it has on BEAM."""
    if kind == K_CAST:
        a = (_GEN_CAST_TAG, a)
    elif kind == K_CALL:
        a = (_GEN_CALL_TAG, b, a)
    elif _is_system_msg(a, p.parent if p.trap_exit else None):
        return
    _sys_event(p, (_IN, a))


cdef void _sys_event(Process p, object ev) except *:
    """Give one event to the process's sys debug record; a record that raises is
    removed (debugging never crashes a server)."""
    cdef object dbg = p.sysdbg
    try:
        dbg.event(ev)
    except Exception:
        p.sysdbg = None


cdef void _gen_sys(Process p, object req, object from_) except *:
    """A system message, local (pyotp.sys, K_SYS) or from another node ({system, From,
    Request}), answered between two messages. Errors are answered, not raised: sys
    operations never crash a server."""
    cdef object action = None
    cdef bint remote = type(from_) is not tuple or len(<tuple>from_) != 2 or \
        type((<tuple>from_)[0]) is not Pid or (<Pid>(<tuple>from_)[0])._node is not None
    if _sys_hook is None:
        reply = ("error", "sys_not_loaded")
    else:
        try:
            action, reply, p.state, p.sysdbg = _sys_hook(p.mod, p.state, req,
                                                         bool(p.run_flags & RUN_GEN_SUSPENDED),
                                                         p.parent, remote, p.sysdbg)
        except Exception as e:
            action = None
            reply = ("error", e)
    try:
        _reply(from_, reply)
    except (TypeError, ValueError, OverflowError) as e:
        if not remote:
            raise
        # a state ETF cannot carry (a Python object): the BEAM caller gets a reason
        _reply(from_, (Atom("error"), (Atom("unencodable_reply"), str(e).encode("utf-8", "replace"))))
    if action is None:
        return
    if _is(action, "suspend"):
        p.run_flags |= RUN_GEN_SUSPENDED
    elif _is(action, "resume"):
        p.run_flags &= ~RUN_GEN_SUSPENDED
        p.mb.save = NULL
    elif type(action) is tuple and len(<tuple>action) == 2 and _is(action[0], "terminate"):
        p.run_flags &= ~RUN_GEN_SUSPENDED
        _gen_stop(p, action[1], p.state, None, None)


cdef void _gen_info(Process p, object msg) except *:
    cdef tuple t
    if type(msg) is tuple:
        t = <tuple>msg
        if len(t) == 3:
            if _is(t[0], "$gen_call"):
                _gen_callback(p, CB_CALL, t[2], t[1])
                return
            if _is(t[0], "EXIT") and p.trap_exit and t[1] == p.parent:
                _gen_stop(p, t[2], p.state, None, None)
                return
            if _is(t[0], "system") and type(t[1]) is tuple and len(<tuple>t[1]) == 2:
                _gen_sys(p, t[2], t[1])
                return
        elif len(t) == 2 and _is(t[0], "$gen_cast"):
            _gen_callback(p, CB_CAST, t[1], None)
            return
    _gen_callback(p, CB_INFO, msg, None)


cdef void _gen_callback(Process p, int cb, object a, object from_) except *:
    cdef GenSpec spec = p.spec
    cdef object f = (<tuple>spec.cbs)[cb]
    cdef object r
    cdef bint is_async = (spec.async_mask >> cb) & 1
    p.sync_cb = not is_async
    p.reductions += 1
    try:
        if cb == CB_CAST or cb == CB_INFO or cb == CB_CONTINUE:
            r = f(p.mod, a, p.state)
        elif cb == CB_CALL:
            r = f(p.mod, a, from_, p.state)
        elif cb == CB_INIT:
            r = f(p.mod, a)
        else:
            r = f(p.mod, a, p.state)
    except BaseException as e:
        p.sync_cb = False
        if isinstance(e, _FATAL):
            raise
        p.cb_kind = cb
        _gen_failed(p, cb, e)
        return
    p.sync_cb = False
    if is_async:
        p.coro = r
        p.cb_kind = cb
        p.cb_from = from_
        _resume(p, None, None)
        return
    _gen_result(p, cb, from_, r)


cdef void _gen_coro_done(Process p, object r) except *:
    cdef int cb = p.cb_kind
    cdef object from_ = p.cb_from
    p.cb_from = None
    _gen_result(p, cb, from_, r)


cdef void _gen_coro_failed(Process p, BaseException e) except *:
    p.cb_from = None
    _gen_failed(p, p.cb_kind, e)


cdef void _gen_failed(Process p, int cb, BaseException e) except *:
    cdef object reason = e.reason if isinstance(e, Exit) else e
    if cb == CB_INIT:
        _gen_ack(p, ("error", reason))
        if not isinstance(e, Exit):
            _crash_report(p, reason, "GenServer")
        _schedule_exit(p, reason)
    elif cb == CB_TERMINATE:
        _gen_finish(p, reason)
    else:
        _gen_stop(p, reason, p.state, None, None)


cdef void _gen_result(Process p, int cb, object from_, object r) except *:
    cdef tuple t
    cdef Py_ssize_t n
    cdef object tag
    if cb == CB_INIT:
        _gen_init_result(p, r)
        return
    if cb == CB_TERMINATE:
        _gen_finish(p, p.exit_reason)
        return
    if type(r) is tuple:
        t = <tuple>r
        n = len(t)
        if n >= 2:
            tag = t[0]
            if _is(tag, _NOREPLY):
                if n == 2:
                    p.state = t[1]
                    if p.sysdbg is not None:
                        _sys_event(p, (_NOREPLY_EV, p.state))
                    return
                if n == 3:
                    p.state = t[1]
                    if p.sysdbg is not None:
                        _sys_event(p, (_NOREPLY_EV, p.state))
                    if _gen_ext(p, t[2]):
                        return
            elif _is(tag, _REPLY):
                if cb == CB_CALL and (n == 3 or n == 4):
                    p.state = t[2]
                    _reply(from_, t[1])
                    if p.sysdbg is not None:
                        _sys_event(p, (_OUT, t[1], from_, p.state))
                    if n == 3 or _gen_ext(p, t[3]):
                        return
            elif _is(tag, _STOP):
                if n == 3:
                    _gen_stop(p, t[1], t[2], None, None)
                    return
                if n == 4 and cb == CB_CALL:
                    _gen_stop(p, t[1], t[3], from_, t[2])
                    return
    _gen_stop(p, ("bad_return_value", r), p.state, None, None)


cdef bint _gen_ext(Process p, object ext) except -1:
    """Apply a return's trailing element: timeout, "hibernate" or ("continue", x)."""
    if type(ext) is int or type(ext) is float:
        if ext < 0:
            return False
        p.timer = _sched.start_timer(TK_IDLE, ext, None, None, p)
        return True
    if isinstance(ext, str):
        return ext == "hibernate" or ext == "infinity"
    if type(ext) is tuple and len(<tuple>ext) == 2 and _is((<tuple>ext)[0], "continue"):
        p.pending_continue = ((<tuple>ext)[1],)
        return True
    return ext is None


cdef void _gen_init_result(Process p, object r) except *:
    cdef tuple t
    if type(r) is tuple:
        t = <tuple>r
        if len(t) in (2, 3) and _is(t[0], _OK):
            p.state = t[1]
            if len(t) == 3 and not _gen_ext(p, t[2]):
                _gen_init_fail(p, ("bad_return_value", r))
                return
            _gen_ack(p, ("ok", p.pid))
            return
        if len(t) == 2 and _is(t[0], _STOP):
            _gen_ack(p, ("error", t[1]))
            if not _is_quiet_reason(t[1]):
                _crash_report(p, t[1], "GenServer")
            _schedule_exit(p, t[1])
            return
    elif _is(r, "ignore"):
        _gen_ack(p, "ignore")
        _schedule_exit(p, _NORMAL)
        return
    _gen_init_fail(p, ("bad_return_value", r))


cdef void _gen_init_fail(Process p, object reason) except *:
    _gen_ack(p, ("error", reason))
    _crash_report(p, reason, "GenServer")
    _schedule_exit(p, reason)


cdef void _gen_ack(Process p, object value) except *:
    """Answer the process waiting in start/start_link (once)."""
    cdef object ack = p.ack
    cdef Process w
    if ack is None:
        return
    p.ack = None
    w = <Process>(<tuple>ack)[0]
    if w.wait == W_REPLY and w.wait_ref is (<tuple>ack)[1]:
        w.wait_target = None
        _wake(w, value, None)


cdef void _gen_stop(Process p, object reason, object state, object reply_to, object reply) except *:
    """Stop: terminate(reason, state), then reply (if a call asked for it), then exit."""
    p.state = state
    p.exit_reason = reason
    if reply_to is not None:
        p.stop_from = (reply_to, reply)
    _gen_callback(p, CB_TERMINATE, reason, None)


cdef void _gen_finish(Process p, object reason) except *:
    cdef object sf = p.stop_from
    p.stop_from = None
    if sf is not None:
        _reply(sf[0], sf[1])
    if not _is_quiet_reason(reason):
        _crash_report(p, reason, "GenServer")
    _schedule_exit(p, reason)


# ---------------------------------------------------------------------------------------
# Names: str locally; ("global", name) and ("via", module, key) through hooks that the
# Python layer installs (gen.py), so the core never imports the behaviours.

cdef object _name_hook = None


def _set_name_hook(hook):
    """Internal: hook(op, name, pid) with op in {"whereis", "register", "unregister"} for
    ("global", name) and ("via", mod, key) names; whereis returns a Pid or None, register
    returns True or the pid already holding the name."""
    global _name_hook
    _name_hook = hook


cdef object _whereis_any(object dest):
    """Resolve a destination to a local Process, a remote Pid / (name, node), or None."""
    cdef object p
    cdef Pid pid
    if type(dest) is Pid:
        pid = <Pid>dest
        if pid._node is None:
            return pid._proc if _alive(pid._proc) else None
        return dest
    if isinstance(dest, str):
        return _sched.names.get(dest)
    if type(dest) is tuple:
        if len(dest) == 2:
            if _is(dest[0], "global"):
                return _whereis_any(_name_hook("whereis", dest, None)) if _name_hook is not None else None
            if isinstance(dest[0], str) and isinstance(dest[1], str):
                if dest[1] == _local_node:
                    return _sched.names.get(dest[0])
                return dest
        elif len(dest) == 3 and _is(dest[0], "via"):
            if _name_hook is None:
                return None
            return _whereis_any(_name_hook("whereis", dest, None))
    if dest is None:
        return None
    raise BadArg("%r is not a pid, a registered name, {name, node}, ('global', name) or ('via', module, key)" % (dest,))


# ---------------------------------------------------------------------------------------
# Calls
#
# call, start, stop and the runtime's exit wait all park the waiter the same way: a
# W_REPLY wait on a ref, optionally watched through the target's monitored_by (so the
# target's death answers it), with its timeout on the wheel.

cdef object _timeout_arg(object timeout, str what):
    """Seconds (int/float >= 0), or None for None/"infinity"; anything else is BadArg."""
    if timeout is None or _is(timeout, "infinity"):
        return None
    if (type(timeout) is not int and type(timeout) is not float) or not (timeout >= 0):
        raise BadArg("%s timeout must be seconds >= 0 or None/'infinity', got %r" % (what, timeout))
    return timeout


cdef inline void _watch(Process target, Reference ref, object watcher) except *:
    if target.monitored_by is None:
        target.monitored_by = {}
    target.monitored_by[ref] = watcher


cdef void _park(Process waiter, Reference ref, int kind, Process target, object info,
                object timeout) except *:
    waiter.wait = W_REPLY
    waiter.wait_kind = kind
    waiter.wait_ref = ref
    waiter.wait_target = target
    waiter.wait_info = info
    if timeout is not None:
        waiter.timer = _sched.start_timer(TK_WAKE, timeout, None, None, waiter)


cdef object _begin_call(Process caller, object server, object request, object timeout, int kind=K_CALL):
    """Set up caller's wait for a call (or a K_SYS request). Returns None when parked,
    else raises."""
    cdef object target = _whereis_any(server)
    cdef Process t
    cdef Reference ref
    timeout = _timeout_arg(timeout, "call")
    if target is None:
        raise Exit(("noproc", ("GenServer", "call", [server, request, timeout])))
    ref = _new_ref()
    ref.alias = True
    if type(target) is not Process:
        if _remote_handler is None:
            raise Exit(("noconnection", ("GenServer", "call", [server, request, timeout])))
        _remote_call(caller.pid, target, ref, request, _SYSTEM_TAG if kind == K_SYS else _GEN_CALL_TAG)
        t = None
    else:
        t = <Process>target
        if t is caller:
            raise Exit(("calling_self", ("GenServer", "call", [server, request, timeout])))
        _watch(t, ref, caller)
        _deliver(t, msg_new(kind, request, (caller.pid, ref)))
        if timeout == 0:
            # OTP's `after 0`: the reply cannot be there yet; the request stays delivered
            del t.monitored_by[ref]
            raise Exit(("timeout", ("GenServer", "call", [server, request, timeout])))
    _park(caller, ref, WK_CALL, t, (server, request, timeout), timeout)
    return None


def call(server, request, timeout=5.0):
    """GenServer.call: send `request` to `server` and wait for its reply (seconds;
    None or "infinity" waits forever). Raises pyotp.Exit with ("noproc", ...),
    ("timeout", ...) or the server's exit reason, as OTP does.

    Nothing is sent until it is awaited: a forgotten ``await`` sends nothing and warns
    ``GenServer.call(...) was never awaited``.

    >>> n = await GenServer.call(counter, "get")
    """
    cdef Process p = _current_here()
    if p is not None:
        if p.sync_cb:
            _caller_for_wait("GenServer.call()")
        return _armed(p, OP_CALL, <PyObject*>server, <PyObject*>request, <PyObject*>timeout)
    _external_check()
    return _external_call_coro(server, request, timeout)


cdef object _call_begin(Process p, object server, object request, object timeout):
    """The awaited call of a process (deferred.pyx): the request goes out now."""
    if p.tracer is not None:
        _trace(p, "call", (server, request))
    _begin_call(p, server, request, timeout)
    return _TOKEN


cdef Scheduler _external_check():
    cdef Scheduler s = _need_sched()
    if pyotp_thread_id() != s.loop_tid:
        raise RuntimeError("GenServer.call from another thread: use the node handle's "
                           "blocking call (pyotp.Runtime.start_thread().call)")
    return s


def _external_call_start(server, request, timeout):
    return _external_call(server, request, timeout)


# A caller outside any process (an asyncio task of a hosted node) gets a native coroutine:
# the request goes out when it is awaited, and CPython warns "coroutine 'GenServer.call'
# was never awaited" for a forgotten one (this path is not the hot one).
_ext_ns = {"_start": _external_call_start}
exec(compile('''
async def call(server, request, timeout):
    return await _start(server, request, timeout)
call.__qualname__ = "GenServer.call"
''', "<pyotp._core>", "exec"), _ext_ns)
cdef object _external_call_coro = _ext_ns["call"]
del _ext_ns


cdef object _external_call(object server, object request, object timeout):
    cdef Scheduler s = _external_check()
    fut = s.loop.create_future()
    cdef Process proxy = _external_caller(fut)
    try:
        _begin_call(proxy, server, request, timeout)
    except BaseException:
        _external_discard(proxy)
        raise
    return fut


cdef void _thread_call_begin(_ThreadCall tc) except *:
    """On the loop thread (a scheduler turn): start a call queued by another thread."""
    cdef _ThreadWaiter waiter = tc.waiter
    cdef Process proxy = _external_caller(waiter)
    try:
        _begin_call(proxy, tc.server, tc.request, tc.timeout)
    except BaseException as e:
        _external_discard(proxy)
        if isinstance(e, _FATAL):
            raise
        waiter.fail(e)


import threading as _threading
_thread_waiters = _threading.local()


def _thread_call(server, request, timeout=5.0):
    """Blocking GenServer.call from a thread that is not the node's loop thread.

    The request goes on the scheduler's lock-free thread queue; the thread then spins
    briefly without the GIL (as the waiting policy allows) and sleeps on its own reusable
    lock until the loop answers. Answered while spinning, it waits its turn for the GIL
    (Scheduler.gil_turn, see scheduler.pyx's header) and keeps it until its next call."""
    cdef Scheduler s = _need_sched()
    if pyotp_thread_id() == s.loop_tid:
        raise RuntimeError("a blocking GenServer call on the node's own loop thread would "
                           "deadlock: await GenServer.call(...) instead")
    if s.closed or s.loop.is_closed():
        raise RuntimeError("the pyotp node has stopped")
    _timeout_arg(timeout, "call")
    cdef _ThreadWaiter w
    try:
        w = _thread_waiters.w
    except AttributeError:
        w = _thread_waiters.w = _ThreadWaiter()
    cdef object wait_for = None if timeout is None or timeout == "infinity" else timeout + 5.0
    cdef _ThreadCall tc = _ThreadCall.__new__(_ThreadCall)
    tc.server = server
    tc.request = request
    tc.timeout = timeout
    tc.waiter = w
    # Spin while the policy says it pays; yielding the core between checks unless each
    # calling thread can have a core besides the loop thread's (tcallers counts this one).
    cdef bint polite = pyotp_add_int(&s.tcallers, 1) >= _tcall_policy.cores()
    cdef double spin = _tcall_policy.polite_budget_us() if polite else _tcall_policy.budget_us()
    tc.counted = polite
    try:
        s.push_thread_call(tc)
        return w.wait(s, wait_for, spin, polite)
    except BaseException:
        # the wait gave up (or was interrupted) before the answer, or the answer is an
        # error: either way retire w, whose lock a late answer may still release (and
        # give back the GIL turn it may hold: the new waiter has another id)
        _turn_give(&s.gil_turn, w.id)
        _thread_waiters.w = _ThreadWaiter()
        raise
    finally:
        pyotp_add_int(&s.tcallers, -1)


def _sys_request(server, request, timeout=5.0):
    """Internal (pyotp.sys): send a system request (OTP's term: get_state, ...) to a
    behaviour process, here (answered between two of its messages) or on another node
    (gen:call's {system, {Pid, Ref}, Request}), and await the reply."""
    cdef Process p = _current_here()
    if p is not None:
        if p.sync_cb:
            _caller_for_wait("a pyotp.sys request")
        _begin_call(p, server, request, timeout, K_SYS)
        return _suspended()
    cdef Scheduler s = _need_sched()
    _on_loop_thread(s, "a pyotp.sys request")
    fut = s.loop.create_future()
    cdef Process proxy = _external_caller(fut)
    try:
        _begin_call(proxy, server, request, timeout, K_SYS)
    except BaseException:
        _external_discard(proxy)
        raise
    return fut


def reply(from_, value):
    """GenServer.reply: answer a call later than its handle_call returned.

    >>> def handle_call(self, req, from_, state):
    ...     pyotp.GenServer.reply(from_, "done")
    ...     return ("noreply", state)
    """
    _reply(from_, value)
    return "ok"


def _statem_reply(from_, value):
    """Internal (GenStateMachine's reply actions): reply, and give the process's sys debug
    record gen_statem's {out, Reply, To} event (sys:statistics counts it)."""
    _reply(from_, value)
    if _current is not None and _current.sysdbg is not None:
        _sys_event(_current, (_OUT, value, from_))
    return "ok"


cdef void _reply(object from_, object value) except *:
    cdef object pid, tag
    cdef Process w
    if type(from_) is not tuple or len(<tuple>from_) != 2:
        raise BadArg("reply: %r is not a from_ tuple (pid, tag)" % (from_,))
    pid = (<tuple>from_)[0]
    tag = (<tuple>from_)[1]
    if type(pid) is Pid and (<Pid>pid)._node is None:
        w = (<Pid>pid)._proc
        if w is None or w.status == ST_DEAD:
            return
        if w.wait == W_REPLY and (w.wait_ref is tag or w.wait_ref == tag):
            if w.wait_target is not None:
                if w.wait_target.monitored_by is not None:
                    w.wait_target.monitored_by.pop(w.wait_ref, None)
                w.wait_target = None
            _wake(w, value, None)
            return
        if type(tag) is Reference and (<Reference>tag).alias:
            return          # the caller gave up (timeout): a late reply is dropped
        _deliver(w, msg_new(K_MSG, (tag, value), None))
        return
    _remote_reply(pid, (tag, value))


def cast(server, request):
    """GenServer.cast: queue `request` for the server's handle_cast; never fails, never
    waits (OTP). Safe from any thread.

    >>> GenServer.cast(counter, ("add", 1))
    'ok'
    """
    cdef object target
    if _current is not None and _current.tracer is not None:
        _trace(_current, "cast", (server, request))
    if _to_local_pid(server, K_CAST, request):
        return "ok"
    if _sched is None:
        return "ok"
    try:
        target = _whereis_any(server)
    except BadArg:
        return "ok"
    if target is None:
        return "ok"
    if type(target) is Process:
        _deliver(<Process>target, msg_new(K_CAST, request, None))
    elif _remote_handler is not None:
        _remote_send(target, (_GEN_CAST_TAG, request))
    return "ok"


# ---------------------------------------------------------------------------------------
# Start and stop

def _gen_start(cls, arg, name, bint link, timeout, max_mailbox=None):
    """Internal (GenServer.start/start_link): spawn a behaviour process, run init in it,
    and return an awaitable of ("ok", pid) | "ignore" | ("error", reason)."""
    cdef Scheduler s = _need_sched()
    cdef tuple mbx = None if max_mailbox is None else _mbx_parse(max_mailbox, "start")
    cdef Process caller = _caller_for_wait("GenServer.start_link()")
    cdef Process p
    cdef object existing, fut = None
    cdef Reference ref
    timeout = _timeout_arg(timeout, "start")
    spec = _spec_for(cls)
    if name is not None:
        existing = _whereis_any(name)
        if existing is not None:
            return _ready(("error", ("already_started", existing.pid if type(existing) is Process else existing)))
    if caller is None:
        if pyotp_thread_id() != s.loop_tid:
            raise RuntimeError("GenServer.start from another thread: use the node handle")
        fut = s.loop.create_future()
        caller = _external_caller(fut)
    p = s.new_process(PK_GEN)
    if mbx is not None:
        _mbx_set(p, mbx)
    p.spec = spec
    p.mod = cls.__new__(cls)
    p.init_arg = arg
    p.run_flags = RUN_GEN_INIT
    p.parent = caller.pid if caller.kind != PK_EXTERNAL else None
    if name is not None:
        if isinstance(name, str):
            _register(name, p)
        elif _name_hook is not None:
            existing = _name_hook("register", name, p.pid)
            if existing is not True:
                _do_exit(p, _NORMAL)
                return _ready(("error", ("already_started", existing)))
        else:
            _do_exit(p, _NORMAL)
            raise BadArg("name %r needs pyotp's name registries (import pyotp)" % (name,))
    if link and caller.kind != PK_EXTERNAL:
        _link(caller, p.pid)
    ref = _new_ref()
    p.ack = (caller, ref)
    _park(caller, ref, WK_START, p, None, timeout)
    p.scheduled = 1
    s.enqueue(p)
    return fut if fut is not None else _suspended()


def _gen_stop_request(server, reason, timeout):
    """Internal (GenServer.stop): ask the server to terminate with `reason`; the awaitable
    gives the reason it actually exited with."""
    cdef Scheduler s = _need_sched()
    cdef Process caller = _caller_for_wait("GenServer.stop()")
    cdef object target = _whereis_any(server)
    cdef Process t
    cdef Reference ref
    cdef object fut = None
    timeout = _timeout_arg(timeout, "stop")
    if target is None:
        raise Exit(("noproc", ("GenServer", "stop", [server, reason, timeout])))
    if type(target) is not Process:
        raise Exit(("not_supported", ("GenServer", "stop", [server, reason, timeout])))
    t = <Process>target
    if t is caller:
        raise Exit(("calling_self", ("GenServer", "stop", [server, reason, timeout])))
    if caller is None:
        fut = s.loop.create_future()
        caller = _external_caller(fut)
    ref = _new_ref()
    _watch(t, ref, caller)
    if t.kind == PK_GEN:
        _deliver(t, msg_new(K_STOP, reason, None))
    else:
        _exit_signal(t, caller.pid, reason, False)
    _park(caller, ref, WK_STOP, t, (server, reason, timeout), timeout)
    return fut if fut is not None else _suspended()
