# process.pyx: the Process object and everything that changes who is alive.
#
# Owns: Process, the process table and name registry operations, links, monitors, exit
# signals, crash reports.
# Invariants:
#  - Only the scheduler thread touches anything here except Process.mb's lock-free queue
#    and the `scheduled` flag (see scheduler.pyx).
#  - A process is in the table (and may own a registered name) exactly while status != DEAD.
#  - Links are symmetric: p in q.links <=> q in p.links, for live local processes.
#  - monitored_by maps monitor ref -> watcher (a Process, or a remote Pid); the watcher's
#    `monitors` maps the same ref -> what it watches. Call monitors (made by GenServer.call)
#    live only in the target's monitored_by.
#  - Process and Pid are invisible to the cyclic GC (no_gc): with hundreds of thousands
#    of processes the collector's walks over them dominated spawn-heavy loads. That is
#    only safe because nothing can keep a dead process in a cycle: _do_exit clears every
#    object field (the Pid -> Process pointer stays, the way back is cut), and the exit
#    reason and result go to whoever awaits them instead of staying on the process. A
#    live process is reachable from the process table anyway.
#  - Exit propagation is iterative (a work list), so a long chain of links cannot blow the
#    C stack, and a process that is running when a fatal signal arrives dies as soon as its
#    current callback or coroutine step returns (has_pending_exit).

import logging as _logging
import sys as _sys
import traceback as _traceback

cdef object _log = _logging.getLogger("pyotp")

cdef enum:
    ST_RUNNABLE = 0
    ST_WAITING = 1
    ST_RUNNING = 2
    ST_DEAD = 3

cdef enum:
    PK_CORO = 0       # a spawned coroutine body
    PK_GEN = 1        # a callback-driven behaviour (GenServer message loop in the core)
    PK_EXTERNAL = 2   # stands in for a caller outside the runtime (asyncio task, thread)

cdef enum:
    W_NONE = 0        # running, runnable, or idle behaviour
    W_RECEIVE = 1     # coroutine in receive(match)
    W_REPLY = 2       # waiting for a reply/ack/DOWN tagged wait_ref
    W_SLEEP = 3       # sleep(); woken by its timer
    W_FUTURE = 4      # awaiting an asyncio future
    W_WOKEN = 5       # woken; wake_value/wake_exc hold what to resume with
    W_GOT = 6         # a message handed to its receive() (scheduler.pyx _handoff): wake_value

cdef enum:
    RUN_GEN_INIT = 1  # a behaviour that has not run init yet
    RUN_GEN_SUSPENDED = 2  # sys:suspend: only system messages (and the parent's EXIT) run

cdef enum:
    WK_CALL = 0
    WK_START = 1
    WK_STOP = 2
    WK_EXIT = 3     # pyotp.run waiting for its main process: wakes with (reason, result)


cdef struct RqNode:
    pyotp_qnode link
    PyObject* owner


@cython.final
@cython.no_gc
cdef class Process:
    """Internal: one pyotp process. Users hold its Pid, never this object."""
    cdef Mailbox mb
    cdef RqNode rq
    cdef long scheduled             # 1 while queued/running/parked: producers need not schedule
    cdef bint parked                # waiting for a targeted wake (reply, timer, future), not queued
    cdef readonly Pid pid
    cdef int status
    cdef int kind
    cdef int wait
    cdef int run_flags
    cdef bint trap_exit
    cdef bint sync_cb               # inside a plain-def callback: waiting is an error
    cdef bint has_pending_exit
    cdef bint timeout_fired         # GenServer idle timeout expired while the mailbox was empty
    cdef uint64_t handled           # messages taken out of the mailbox and handled
    cdef uint64_t reductions        # callbacks run + coroutine resumptions (BEAM's reductions: work done)
    cdef object name
    cdef object coro                # coroutine being driven (spawn body or async callback)
    cdef object susp                # the reusable awaitable of a waiting receive (suspend.h)
    cdef object match               # W_RECEIVE predicate (None: any)
    cdef Reference wait_ref         # W_REPLY: the awaited tag
    cdef Process wait_target        # W_REPLY: who holds the call monitor (to drop it)
    cdef int wait_kind              # W_REPLY: WK_CALL, WK_START or WK_STOP
    cdef object wait_info           # W_REPLY: (server, request, timeout) for error reasons
    cdef object wake_value
    cdef object wake_exc
    cdef Timer timer                # the timeout of the current wait (or GenServer idle)
    cdef object fut                 # W_FUTURE: the awaited future
    cdef object links               # None, a list (<= 16 links: far smaller) or a set
    cdef dict monitors
    cdef dict monitored_by
    cdef object exit_reason
    cdef object pending_exit
    # behaviour (PK_GEN) fields
    cdef object mod                 # the callback object (a GenServer instance)
    cdef GenSpec spec
    cdef object state
    cdef object cb_from             # from_ of the call an async callback is handling
    cdef int cb_kind                # which callback the running coroutine belongs to
    cdef object pending_continue
    cdef object last_msg            # the message being handled (for crash reports)
    cdef object parent              # Pid of the starter (EXIT from it stops a trapping server)
    cdef object init_arg            # GenServer: init's argument; spawned body: the function
    cdef tuple spawn_args           # spawned body: its arguments
    cdef object stop_from           # who asked GenServer.stop (reply after terminate)
    cdef object ext                 # PK_EXTERNAL: the waiter to resolve
    cdef object result              # a coroutine body's return value
    cdef object ack                 # (waiter Process, ref) until init has answered start
    cdef int cancel_requests        # asyncio-style cancel() calls not yet uncancel()ed
    cdef bint must_cancel           # cancel() while running: throw CancelledError at the next resume
    cdef long mbx_tripped           # max_mailbox exceeded and reported (CAS 0 -> 1, any thread)
    cdef bint mbx_kill              # max_mailbox: kill when exceeded
    cdef bint mbx_log               # max_mailbox: log when exceeded
    cdef object tracer              # None, or fn(pid, event, data) (pyotp.tracing): one C check per message
    cdef object sysdbg              # None, or pyotp.sys's debug record (sys:statistics/log/install): one C check per message

    def _future_done(self, fut):
        if self.fut is fut and self.wait == W_FUTURE:
            self.fut = None
            _wake(self, None, None)

    # -- the asyncio Task face of a process ------------------------------------------
    # While a process's coroutine runs, asyncio.current_task() returns its Process, so
    # asyncio.timeout / wait_for (which need a current task from Python 3.12 on) and
    # libraries built on current_task() work inside processes. These are the Task
    # methods they use.

    def cancel(self, msg=None):
        """Throw asyncio.CancelledError into the process at its current await (as
        Task.cancel). Returns False if the process is dead."""
        if self.status == ST_DEAD:
            return False
        if _sched is not None:
            _on_loop_thread(_sched, "Process.cancel")
        self.cancel_requests += 1
        _cancel_wait(self, msg)
        return True

    def cancelling(self):
        return self.cancel_requests

    def uncancel(self):
        if self.cancel_requests > 0:
            self.cancel_requests -= 1
        return self.cancel_requests

    def done(self):
        return self.status == ST_DEAD

    def cancelled(self):
        return False

    def get_loop(self):
        return _sched.loop if _sched is not None else None

    def get_coro(self):
        return self.coro

    def get_name(self):
        return repr(self.pid)

    def __cinit__(self):
        mb_init(&self.mb)
        self.rq.owner = <PyObject*>self
        self.scheduled = 0

    def __dealloc__(self):
        mb_clear(&self.mb)

    def __repr__(self):
        return "<Process %r %s>" % (self.pid, ("runnable", "waiting", "running", "dead")[self.status])


cdef inline bint _alive(Process p):
    return p is not None and p.status != ST_DEAD


# Link sets: most processes have one or two links (their parent), and an empty `set` costs
# 216 bytes against a 1-item list's 64, so small link sets are lists, promoted to a set
# once they outgrow LINKS_AS_LIST (supervisors with many children stay O(1)).
DEF LINKS_AS_LIST = 16

cdef void _links_add(Process p, object pid) except *:
    cdef object l = p.links
    if l is None:
        p.links = [pid]
    elif type(l) is list:
        if pid not in <list>l:
            (<list>l).append(pid)
            if len(<list>l) > LINKS_AS_LIST:
                p.links = set(<list>l)
    else:
        (<set>l).add(pid)


cdef bint _links_discard(Process p, object pid) except -1:
    """Remove pid from p's links; True if it was there."""
    cdef object l = p.links
    if l is None:
        return False
    if type(l) is list:
        try:
            (<list>l).remove(pid)
        except ValueError:
            return False
        return True
    if pid in <set>l:
        (<set>l).discard(pid)
        return True
    return False


cdef inline bint _links_has(Process p, object pid) except -1:
    return p.links is not None and pid in p.links


# ---------------------------------------------------------------------------------------
# Exit reasons

cdef object _NORMAL = "normal"
cdef object _KILL = "kill"
cdef object _KILLED = "killed"
cdef object _SHUTDOWN = "shutdown"


cdef inline bint _is_normal(object reason):
    return reason is _NORMAL or (type(reason) is str and reason == "normal")


cdef bint _is_quiet_reason(object reason):
    """normal, shutdown and ("shutdown", _) end a process without a crash report (OTP)."""
    if type(reason) is str:
        return reason == "normal" or reason == "shutdown"
    return type(reason) is tuple and len(<tuple>reason) == 2 and (<tuple>reason)[0] == "shutdown"


cdef void _crash_report(Process p, object reason, str what):
    """Log once why p is terminating; behaviours add their last message and state as
    their format_status callback presents them (OTP's format_status/1)."""
    cdef object tb
    cdef str extra = ""
    try:
        if p.kind == PK_GEN and p.mod is not None:
            # a behaviour built on the GenServer loop names itself (e.g. GenStateMachine)
            what = getattr(p.mod, "behaviour_name", what)
            status = {"state": p.state, "message": p.last_msg, "reason": reason}
            try:
                status = p.mod.format_status(status)
            except Exception:
                pass
            extra = "\nLast message: %r\nState: %r" % (status.get("message"), status.get("state"))
        if isinstance(reason, BaseException):
            _log.error("%s %r%s terminating: %s: %s%s", what, p.pid,
                       "" if p.name is None else " (%s)" % (p.name,), type(reason).__name__,
                       reason, extra, exc_info=(type(reason), reason, reason.__traceback__))
        else:
            _log.error("%s %r%s terminating with reason %r%s", what, p.pid,
                       "" if p.name is None else " (%s)" % (p.name,), reason, extra)
    except Exception:
        pass


# ---------------------------------------------------------------------------------------
# Death: the work list keeps long link chains iterative.

cdef list _exit_work = []
cdef bint _exit_draining = False


cdef void _schedule_exit(Process p, object reason) except *:
    """p must die with `reason`. Runs now unless p is the running process, in which case
    it dies when its current step returns."""
    global _exit_draining
    if p.status == ST_DEAD:
        return
    if p is _current:
        if not p.has_pending_exit:
            p.has_pending_exit = True
            p.pending_exit = reason
        return
    _exit_work.append((p, reason))
    if _exit_draining:
        return
    _exit_draining = True
    try:
        while _exit_work:
            q, r = _exit_work.pop()
            _do_exit(<Process>q, r)
    finally:
        _exit_draining = False


cdef void _do_exit(Process p, object reason) except *:
    """Tear p down: the coroutine, timers, name, table entry, then signal links and
    monitors. Exit signals to others go through _exit_signal (which may queue more work)."""
    cdef object coro, fut, ref, watcher, other
    cdef Process o
    if p.status == ST_DEAD:
        return
    p.status = ST_DEAD
    p.exit_reason = reason
    p.has_pending_exit = False
    if p.timer is not None:
        _sched.wheel.cancel(p.timer)
        p.timer = None
    fut = p.fut
    p.fut = None
    if fut is not None and not fut.done():
        fut.cancel()
    coro = p.coro
    p.coro = None
    if coro is not None:
        _close_coro(p, coro)
    if p.kind == PK_EXTERNAL:
        return
    if p.name is not None:
        _sched.names.pop(p.name, None)
        p.name = None
    _sched.procs.pop(p.pid.id, None)
    if p.ack is not None:
        _gen_ack(p, ("error", reason))
    if p.wait == W_REPLY and p.wait_target is not None and p.wait_target.monitored_by is not None:
        p.wait_target.monitored_by.pop(p.wait_ref, None)
    elif p.wait == W_REPLY and p.wait_kind == WK_CALL and p.wait_info is not None and _dist_connected():
        _remote_call_gave_up(p.pid, p.wait_ref, (<tuple>p.wait_info)[0])   # died in a remote call
    p.wait = W_NONE
    if p.links:
        links = p.links
        p.links = None
        for other in links:
            if type(other) is Pid and (<Pid>other)._proc is not None:
                o = (<Pid>other)._proc
                _links_discard(o, p.pid)
                _exit_signal(o, p.pid, reason, True)
            else:
                _remote_hook("link_exit", p.pid, other, reason)
    if p.monitors:
        mons = p.monitors
        p.monitors = None
        for ref, target in mons.items():
            _drop_monitor(p, ref, target)
    if p.monitored_by:
        mb = p.monitored_by
        p.monitored_by = None
        for ref, watcher in mb.items():
            if type(watcher) is Process:
                _deliver_down(<Process>watcher, ref, p, reason)
            else:
                _remote_hook("down", p.pid, watcher, (ref, reason))
    mb_clear(&p.mb)
    _sched.on_exit(p)
    p.mod = None
    p.state = None
    p.match = None
    p.wait_target = None
    _clear_fields(p)


cdef void _clear_fields(Process p) noexcept:
    """Drop every reference a dead process holds (see the no_gc note at the top). The Pid
    keeps pointing here, so a dead pid still answers "dead"; nothing points back."""
    p.wait_info = None
    p.last_msg = None
    p.cb_from = None
    p.wait_ref = None
    p.wake_value = None
    p.wake_exc = None
    p.timer = None
    p.fut = None
    p.links = None
    p.monitors = None
    p.monitored_by = None
    p.pending_continue = None
    p.parent = None
    p.init_arg = None
    p.spawn_args = None
    p.stop_from = None
    p.ext = None
    p.ack = None
    p.name = None
    p.exit_reason = None
    p.result = None
    p.pending_exit = None
    p.coro = None
    p.pid = None


cdef void _close_coro(Process p, object coro) except *:
    """Unwind a suspended coroutine (its finally blocks run), as asyncio does on cancel."""
    global _current
    cdef Process saved = _current
    _current = p
    try:
        coro.close()
    except BaseException as e:
        _log.error("process %r ignored its exit while unwinding: %r", p.pid, e)
    finally:
        _current = saved


cdef void _deliver_down(Process watcher, object ref, Process target, object reason) except *:
    cdef object obj
    if watcher.status == ST_DEAD:
        return
    if watcher.monitors is not None:
        obj = watcher.monitors.pop(ref, None)
    else:
        obj = None
    if watcher.wait == W_REPLY and watcher.wait_ref is ref:
        # a call (or stop/start) waiting on this monitor: fail it now, O(1)
        if watcher.wait_kind == WK_EXIT:
            watcher.wait_target = None
            _wake(watcher, (reason, target.result), None)
        else:
            _wake_down(watcher, reason)
        return
    if type(obj) is tuple:           # monitor by name reports {Name, Node}
        obj = (obj[0], obj[1])
    else:
        obj = target.pid
    _deliver(watcher, msg_new(K_MSG, ("DOWN", ref, "process", obj, reason), None))


cdef void _exit_signal(Process target, object from_pid, object reason, bint linked) except *:
    """Deliver an exit signal from `from_pid` to `target` with OTP's rules."""
    if target.status == ST_DEAD:
        return
    if not linked and type(reason) is str and reason == "kill":
        _schedule_exit(target, _KILLED)
        return
    if target.trap_exit:
        _deliver(target, msg_new(K_MSG, ("EXIT", from_pid, reason), None))
        return
    if _is_normal(reason):
        if not linked and from_pid == target.pid:
            _schedule_exit(target, _NORMAL)
        return
    _schedule_exit(target, reason)


# ---------------------------------------------------------------------------------------
# Links and monitors

cdef void _link(Process a, object b_pid) except *:
    cdef Process b
    if type(b_pid) is not Pid:
        raise TypeError("link() expects a pid, got %r" % (b_pid,))
    if not (<Pid>b_pid).is_local():
        _links_add(a, b_pid)
        _remote_hook("link", a.pid, b_pid, None)
        return
    b = (<Pid>b_pid)._proc
    if b is a:
        return
    if not _alive(b):
        _exit_signal(a, b_pid, "noproc", True)
        return
    _links_add(a, b.pid)
    _links_add(b, a.pid)


cdef void _unlink(Process a, object b_pid) except *:
    cdef Process b
    _links_discard(a, b_pid)
    if type(b_pid) is Pid:
        if (<Pid>b_pid).is_local():
            b = (<Pid>b_pid)._proc
            if b is not None:
                _links_discard(b, a.pid)
        else:
            _remote_hook("unlink", a.pid, b_pid, None)


cdef Reference _monitor(Process watcher, object target):
    """monitor(process, target): target is a pid, a registered name or (name, node)."""
    cdef Reference ref = _new_ref()
    cdef Process t = None
    cdef object obj = target
    if type(target) is Pid:
        if not (<Pid>target).is_local():
            if watcher.monitors is None:
                watcher.monitors = {}
            watcher.monitors[ref] = target
            _remote_hook("monitor", watcher.pid, target, ref)
            return ref
        t = (<Pid>target)._proc
    elif isinstance(target, str):
        t = _sched.names.get(target)
        obj = (target, _local_node, t)
    elif type(target) is tuple and len(target) == 2 and isinstance(target[0], str):
        if target[1] != _local_node:
            if watcher.monitors is None:
                watcher.monitors = {}
            watcher.monitors[ref] = target
            _remote_hook("monitor", watcher.pid, target, ref)
            return ref
        t = _sched.names.get(target[0])
        obj = (target[0], _local_node, t)
    else:
        raise BadArg("monitor: %r is not a pid, a registered name or {name, node}" % (target,))
    if not _alive(t):
        if type(obj) is tuple:
            down_obj = (obj[0], obj[1])
        else:
            down_obj = target
        _deliver(watcher, msg_new(K_MSG, ("DOWN", ref, "process", down_obj, "noproc"), None))
        return ref
    if watcher.monitors is None:
        watcher.monitors = {}
    watcher.monitors[ref] = obj if type(obj) is tuple else t.pid
    _watch(t, ref, watcher)
    return ref


cdef void _drop_monitor(Process watcher, object ref, object target) except *:
    """Forget the target side of a monitor that `watcher` held (its own side is gone)."""
    cdef Process t = None
    if type(target) is Pid and (<Pid>target)._proc is not None:
        t = (<Pid>target)._proc
    elif type(target) is tuple and len(target) == 3:      # (name, node, proc): by name
        t = target[2]
    elif target is not None:
        _remote_hook("demonitor", watcher.pid, target, ref)
    if t is not None and t.monitored_by is not None:
        t.monitored_by.pop(ref, None)


cdef bint _demonitor(Process watcher, Reference ref, bint flush) except -1:
    if watcher.monitors is not None:
        _drop_monitor(watcher, ref, watcher.monitors.pop(ref, None))
    if flush:
        mb_remove_first(&watcher.mb, lambda m: type(m) is tuple and len(m) == 5
                        and m[0] == "DOWN" and m[1] == ref)
    return True


# The distribution hook (_remote_hook, _set_remote_handler) is in dist_iface.pxi.
