# scheduler.pyx: the run queue, the coroutine driver and the node's lifecycle.
#
# Owns: Scheduler (one per OS process, bound to one asyncio loop), delivery of messages
# and wakeups, firing of timers, and the loop timer that arms the wheel: on Linux one
# timerfd the loop watches (made at the first arming, closed by cancel_timers when the
# node stops), else (another OS, a loop without add_reader, no fd) loop.call_later.
# Invariants:
#  - The run queue is a lock-free MPSC of processes (intrusive, via Process.rq). A process
#    is in it at most once: whoever flips `scheduled` 0 -> 1 enqueues it; the scheduler
#    clears it only after a process has no runnable work, then re-checks (so a message that
#    raced with going idle is never stranded).
#  - A *parked* process (waiting for a reply, a timer or a future) keeps scheduled == 1 so
#    ordinary messages do not wake it; the one wake that matters pushes it directly.
#  - `wake_pending` is 1 while a scheduler turn is posted or running; producers post a turn
#    only when they flip it 0 -> 1 (call_soon on the loop thread, call_soon_threadsafe from
#    any other thread). A turn clears it last and re-checks the queue.
#  - Each turn runs at most TURN_LIMIT message dispatches, each process at most BUDGET per
#    visit, then the loop gets control back for I/O: many messages per loop turn, fairly.
#    A turn also ends after TURN_MS of work (checked between process visits): messages
#    that each carry a big batch (GenStage events) would otherwise hold the loop, its
#    timers and its sockets for seconds within one count.
#  - `_current` is the process whose code is running (None outside the runtime).
#  - Timers are inserted, armed and fired on the loop thread only (other threads reach
#    the wheel through a turn: a thread call's timeout is inserted by drain_thread_calls).
#    The timerfd is set for `armed_tick` (absolute, CLOCK_MONOTONIC, as the wheel's clock)
#    while armed; its callback resets armed_tick first and, if nothing re-armed it,
#    disarms it, which also clears its expiry: a readable fd left behind would make the
#    (level-triggered) loop call back at once, for ever.
#  - Blocking calls from other OS threads arrive on `tq`, a second lock-free MPSC (of
#    _ThreadCall), and share `wake_pending`: a thread posts a turn only when it flips it
#    0 -> 1, so a burst of calls costs one wake-up and a busy loop (a turn posted or
#    running) none. Every turn drains `tq` first and re-checks it when it clears the flag.
#  - A thread's answer is published when the turn that produced it ends (`answered`), just
#    before the loop thread lets go of the GIL, so that the woken thread does not wake
#    only to wait for the GIL. After a turn that answered a thread, the loop thread may
#    spin briefly without the GIL for that thread's next call (the `thread_loop` waiting
#    policy), holding `wake_pending` meanwhile so the caller posts no wake-up: a thread
#    making call after call then costs neither a self-pipe write nor a poll wake-up.
#  - More calling threads than cores: a turn that answered k threads waits (still without
#    the GIL) until k calls are queued again or the spin budget is spent, so the next
#    turn serves the whole batch with one GIL hand-over; the callers wait for their
#    answers yielding the core (sched_yield) between checks rather than sleeping on their
#    lock. On this VM a core that goes idle costs tens of us to wake, and a thread that
#    sleeps on a lock or on the GIL takes such a wake-up: 4 threads on 2 cores made a
#    median 41-45 k calls/s sleeping, 88-94 k yielding (docs/benchmarks.md, issue 15,
#    round 4). Such a spin gives way to any runnable thread, so the machine's load does
#    not stop it (WaitPolicy.polite_budget_us); the setting and past misses do.
#  - A caller that spun for its answer also waits its turn for the GIL (`gil_turn`,
#    _turn_take), so that it takes a free GIL rather than sleeping in CPython's GIL wait
#    (the loop thread publishes answers while it still holds the GIL, and the answered
#    callers of a batch all go for it at once; each such sleep costs an idle core's
#    wake-up). One turn: the loop thread holds it while it serves the calls it spun for
#    (taken at the end of that spin, given as it lets go of the GIL for the next spin, and
#    when _run ends); a caller holds it from its answer until its next call's wait lets
#    go of the GIL. A model of this hand-over (4 threads, no-op server) made 105-147 k
#    calls/s with the GIL taken plainly and 530-650 k with the turn; pyotp's own path
#    went from 39-147 k to 184-266 k, 1 and 4 threads (docs/benchmarks.md, issue 15,
#    round 5). A turn held TURN_HOLD_MS (its holder is doing something else: I/O between
#    two calls, no more calls, a long turn of the loop), or for the waiter's whole spin
#    budget, is taken over.

import asyncio as _asyncio
from asyncio.tasks import _enter_task, _leave_task
import asyncio.tasks as _aio_tasks

# asyncio's table of current tasks (loop -> task), when it is the plain dict that the C
# _enter_task/_leave_task maintain (CPython 3.7-3.13): _resume then sets and clears the
# entry itself, saving two calls per resume on the ring's hot path. Elsewhere (a future
# CPython keeping it per thread) the functions are called.
cdef object _cur_tasks_obj = getattr(_aio_tasks, "_current_tasks", None)
cdef dict _cur_tasks = _cur_tasks_obj if type(_cur_tasks_obj) is dict and \
    type(_enter_task).__name__ == "builtin_function_or_method" else None

DEF BUDGET = 256
DEF TURN_LIMIT = 30000
DEF TURN_MS = 2.0
DEF INT64_MAX = 0x7FFFFFFFFFFFFFFF
DEF _LOOP_TURN = -1      # Scheduler.gil_turn while the loop thread holds it (spin_for_threads)
# A GIL turn held longer than this is taken over at once: our own code holds it a few us (a
# caller from its answer to its next call, the loop thread for a batch of calls); longer,
# its holder is doing something else (I/O between two calls: threads that each slept 50 us
# between calls made 14.4 k calls/s against main's 16.9 k while a holder kept it through
# that sleep).
DEF TURN_HOLD_MS = 0.03
DEF FAR_MS = 1000        # a loop timer this far beyond a nearer one stays armed (arm_timer)
DEF TFD_UNTRIED = -2     # Scheduler.tfd: no timerfd made yet (the first arming tries)
DEF TFD_NONE = -1        # none: the loop's own timers (call_later) arm the wheel

# Ctrl-C and sys.exit() inside any process stop the whole node (they propagate out of the
# scheduler into the event loop), rather than ending just the process that ran them.
cdef tuple _FATAL = (KeyboardInterrupt, SystemExit)

cdef Scheduler _sched = None
cdef bint _timerfd_allowed = True    # False: schedulers made from now on use loop timers
cdef Process _current = None
cdef object _TOKEN = object()
pyotp_susp_ready()

# Real Python generators (not Cython ones): `await` on them goes through CPython's fast
# generator-delegation path and their return needs no StopIteration object.
_gens = {}
exec(compile('''
import types
@types.coroutine
def _suspend(token):
    return (yield token)
@types.coroutine
def _ready(value):
    return value
    yield
@types.coroutine
def _drive(awaitable):
    return (yield from awaitable)
''', "<pyotp._core>", "exec"), _gens)
cdef object _suspend = _gens["_suspend"]
cdef object _ready = _gens["_ready"]
cdef object _drive = _gens["_drive"]
del _gens


cdef inline object _suspended():
    return _suspend(_TOKEN)


cdef inline object _armed(Process p, int op, PyObject* a, PyObject* b, PyObject* c):
    """The process's reusable awaitable (suspend.h), armed for op(a, b, c) (NULL: None):
    nothing runs until it is awaited (deferred.pyx)."""
    cdef object s = p.susp
    if s is None or pyotp_susp_armed(s):
        s = _armed_slow(p)
    return pyotp_susp_arm(s, op, a, b, c)


cdef object _armed_slow(Process p):
    if p.susp is None:
        p.susp = pyotp_susp_new(_TOKEN)
    else:
        _never_awaited(p, True)     # still armed from before: that one was never awaited
    return p.susp


cdef extern from "platform.h":
    void pyotp_cpu_relax() nogil

cdef extern from *:
    """
    #if defined(_WIN32)
    #define pyotp_os_yield() ((void)SwitchToThread())
    #else
    #include <sched.h>
    #define pyotp_os_yield() ((void)sched_yield())
    #endif
    """
    void pyotp_os_yield() nogil


cdef inline void _spin_pause(bint polite) noexcept nogil:
    """The pause between two checks of a spin: yield the core (polite: more spinning
    threads than cores) or relax the CPU."""
    if polite:
        pyotp_os_yield()
    else:
        pyotp_cpu_relax()


cdef inline bint _spin_step(unsigned int* i, double until, bint polite) noexcept nogil:
    """One step of a bounded spin: pause (_spin_pause), then 1 once the deadline has
    passed. A polite step reads the clock every time (a yield already costs a system
    call); a busy one every 16 steps."""
    _spin_pause(polite)
    if polite:
        i[0] = 15
    i[0] += 1
    return (i[0] & 15) == 0 and pyotp_monotonic_ms() > until


cdef inline int _spin_queues(pyotp_mpsc* a, pyotp_mpsc* b, double max_us,
                             bint polite) noexcept nogil:
    """Spin until either queue has an item (1) or max_us passed (0); polite: yield the
    core between checks."""
    cdef double until = pyotp_monotonic_ms() + max_us / 1000.0
    cdef unsigned int i = 0
    while True:
        if pyotp_mpsc_nonempty(a) or pyotp_mpsc_nonempty(b):
            return 1
        if _spin_step(&i, until, polite):
            return 0


cdef inline void _gather_calls(long* n, long want, pyotp_mpsc* rq, double max_us,
                               bint polite) noexcept nogil:
    """Spin until *n reaches want, the run queue has work, or max_us passed."""
    cdef double until = pyotp_monotonic_ms() + max_us / 1000.0
    cdef unsigned int i = 0
    while pyotp_load_int(n) < want and not pyotp_mpsc_nonempty(rq):
        if _spin_step(&i, until, polite):
            return


@cython.final
cdef class Scheduler:
    cdef pyotp_mpsc rq
    cdef pyotp_mpsc tq         # _ThreadCall requests from other OS threads
    cdef long tq_len           # counted requests pushed on tq and not yet drained
    cdef long wake_pending
    cdef readonly object loop
    cdef unsigned long loop_tid
    cdef TimerWheel wheel
    cdef object timer_handle
    cdef int64_t armed_tick
    cdef object far_handle     # a loop timer left armed for a far tick (see arm_timer)
    cdef int64_t far_tick
    cdef int tfd               # the timerfd (>= 0), TFD_UNTRIED, or TFD_NONE: loop timers
    cdef bint tfd_live         # tfd is an open fd (0 in a half-made object is not one)
    cdef object tfd_cb
    cdef dict procs            # pid id -> Process (live, not external)
    cdef dict names            # registered name -> Process
    cdef uint64_t next_id
    cdef object run_cb
    cdef object timer_cb
    cdef object far_cb
    cdef object all_exited     # future set when procs becomes empty during shutdown
    cdef bint closed
    cdef readonly uint64_t dispatched
    cdef long tcallers          # threads inside a blocking call (gen_server.pyx)
    cdef long gil_turn          # the calling thread that holds or is taking the GIL
                                # after an answer (its waiter's id; 0: none; _turn_take)
    cdef double gil_turn_at     # when its holder took it (ms)
    cdef Py_ssize_t tserved     # thread calls started in the current turn
    cdef bint in_turn
    cdef bint task_held         # a process is in asyncio's current-task table (see _resume)
    cdef list answered          # _ThreadWaiters answered in this turn, published at its end
    cdef long mbx_size                  # the node's default max_mailbox (0: none)
    cdef bint mbx_kill
    cdef bint mbx_log
    cdef object mbx_cb

    def __cinit__(self, loop):
        pyotp_mpsc_init(&self.rq)
        pyotp_mpsc_init(&self.tq)
        self.wake_pending = 0
        self.tq_len = 0
        self.loop = loop
        self.loop_tid = pyotp_thread_id()
        self.wheel = TimerWheel()
        self.timer_handle = None
        self.armed_tick = INT64_MAX
        self.far_handle = None
        self.far_tick = INT64_MAX
        self.tfd = TFD_UNTRIED if _timerfd_allowed else TFD_NONE
        self.tfd_cb = self._on_timerfd
        self.procs = {}
        self.names = {}
        self.next_id = 0
        self.run_cb = self._run
        self.timer_cb = self._on_timer
        self.far_cb = self._on_far_timer
        self.all_exited = None
        self.closed = False
        self.mbx_cb = self._mbx_exceeded
        self.tcallers = 0
        self.gil_turn = 0
        self.gil_turn_at = 0.0
        self.tserved = 0
        self.in_turn = False
        self.task_held = False
        self.answered = []

    cdef Process new_process(self, int kind):
        cdef Process p = Process.__new__(Process)
        cdef Pid pid = Pid.__new__(Pid)
        self.next_id += 1
        pid.id = self.next_id & 0xFFFFFFFF
        pid.serial = <uint32_t>(self.next_id >> 32)
        pid._proc = p
        p.pid = pid
        p.kind = kind
        if kind != PK_EXTERNAL:
            self.procs[pid.id] = p
            if self.mbx_size:
                p.mb.limit = self.mbx_size
                p.mbx_kill = self.mbx_kill
                p.mbx_log = self.mbx_log
        return p

    def _mbx_exceeded(self, Process p not None):
        """On the loop thread, once per arming: p's mailbox went over its max_mailbox."""
        cdef long limit = p.mb.limit
        if p.status == ST_DEAD or limit == 0:
            return
        cdef Py_ssize_t n = _mbx_count(p)
        if p.mbx_log:
            (_log.error if p.mbx_kill else _log.warning)(
                "Process %r%s %s: %d messages in its mailbox, more than max_mailbox %d%s",
                p.pid, "" if p.name is None else " (%s)" % (p.name,),
                "killed" if p.mbx_kill else "over its mailbox limit", n, limit,
                "" if p.mbx_kill else " (logged once)")
        if p.mbx_kill:
            _schedule_exit(p, ("max_mailbox", limit))

    cdef void on_exit(self, Process p):
        if self.all_exited is not None and not self.procs and not self.all_exited.done():
            self.all_exited.set_result(None)

    # -- scheduling ------------------------------------------------------------------

    cdef inline void enqueue(self, Process p) noexcept:
        Py_INCREF(p)
        pyotp_mpsc_push(&self.rq, <pyotp_qnode*>&p.rq)
        # a plain load first: inside a turn the flag is 1 and a CAS that fails costs a locked
        # instruction per send (reading 1 is what a failed CAS tells too)
        if pyotp_load_int(&self.wake_pending) == 0 and pyotp_cas_int(&self.wake_pending, 0, 1):
            self.post()

    cdef void post(self) noexcept:
        try:
            if pyotp_thread_id() == self.loop_tid:
                self.loop.call_soon(self.run_cb)
            else:
                self.loop.call_soon_threadsafe(self.run_cb)
        except RuntimeError:
            pass   # the loop is closed: the node has stopped, messages are dropped

    def _run(self):
        self.run_turn()
        if self.tserved:
            try:
                self.spin_for_threads()
            finally:
                # the turn is the loop thread's only between two spins of one _run
                _turn_give(&self.gil_turn, _LOOP_TURN)

    cdef void spin_for_threads(self) except *:
        """The turn just answered other threads' calls: wait (without the GIL) for their
        next calls while the waiting policy says it pays; when it answered several, until
        as many are queued (one turn, one GIL hand-over for the batch). At most 64 rounds
        or TURN_MS here, then the event loop gets its turn back (timers, sockets)."""
        cdef double until = pyotp_monotonic_ms() + TURN_MS
        cdef double spin, t0
        cdef int ok, rounds
        cdef long want
        cdef bint polite
        for rounds in range(64):
            if not self.tserved or self.closed or pyotp_mpsc_nonempty(&self.rq) \
                    or pyotp_monotonic_ms() > until:
                return
            # more calling threads than cores besides this one: yield the core between
            # checks (a caller may need it), whatever the machine's load
            polite = pyotp_load_int(&self.tcallers) >= _tq_policy.cores()
            spin = _tq_policy.polite_budget_us() if polite else _tq_policy.budget_us()
            if spin <= 0.0:
                return
            if not pyotp_cas_int(&self.wake_pending, 0, 1):
                return              # a turn is posted already
            want = self.tserved
            t0 = pyotp_monotonic_ms()
            with nogil:
                # the callers just answered go for the GIL one by one, each once this
                # thread has let go of it (the turn it held since the last spin)
                _turn_give(&self.gil_turn, _LOOP_TURN)
                ok = _spin_queues(&self.tq, &self.rq, spin, polite)
                if ok and want > 1:
                    _gather_calls(&self.tq_len, want, &self.rq, spin, polite)
                if ok:
                    _turn_take(&self.gil_turn, &self.gil_turn_at, _LOOP_TURN, spin, polite)
            _tq_policy.record(ok, (pyotp_monotonic_ms() - t0) * 1000.0)
            if not ok:
                pyotp_store_int(&self.wake_pending, 0)
                if (pyotp_mpsc_nonempty(&self.rq) or pyotp_mpsc_nonempty(&self.tq)) and \
                        pyotp_cas_int(&self.wake_pending, 0, 1):
                    self.post()
                return
            self.run_turn()     # clears wake_pending as it ends

    cdef void publish_answers(self) except *:
        cdef list done = self.answered
        if done:
            self.answered = []
            for w in done:
                (<_ThreadWaiter>w).publish()

    cdef void run_turn(self) except *:
        cdef bint outer = not self.in_turn
        self.in_turn = True
        self.tserved = 0
        try:
            self.run_queues()
        finally:
            if outer:
                self.in_turn = False
                if self.task_held:
                    _task_release(self)
                self.publish_answers()

    cdef void run_queues(self) except *:
        cdef pyotp_qnode* node
        cdef Process p
        cdef Py_ssize_t n = 0
        cdef int r
        cdef double until = pyotp_monotonic_ms() + TURN_MS
        cdef unsigned int visits = 0
        cdef Py_ssize_t checked = 0
        if pyotp_mpsc_nonempty(&self.tq):
            self.drain_thread_calls()
        while n < TURN_LIMIT:
            r = pyotp_mpsc_pop(&self.rq, &node)
            if r != PYOTP_Q_ITEM:
                break
            p = <Process>(<RqNode*>node).owner
            Py_DECREF(p)          # the queue's reference; `p` holds one now
            PYOTP_ASSERT(p.scheduled == 1 and not p.parked)
            n += self.run_process(p)
            visits += 1
            # the clock costs ~20 ns: read it every 16 visits, or after a visit that ran many
            # messages (each may be a whole batch)
            if ((visits & 15) == 0 or n - checked >= 32):
                checked = n
                if pyotp_monotonic_ms() >= until:
                    break
        self.dispatched += n
        self.release_wakeup()
        self.arm_timer()

    cdef inline void release_wakeup(self) noexcept:
        """Give up the claimed wakeup; post a turn for what was queued meanwhile."""
        pyotp_store_int(&self.wake_pending, 0)
        if (pyotp_mpsc_nonempty(&self.rq) or pyotp_mpsc_nonempty(&self.tq)) and \
                pyotp_cas_int(&self.wake_pending, 0, 1):
            self.post()

    cdef void drain_thread_calls(self) except *:
        """Start every queued call from another thread (their servers then run in this
        same turn). A popped request owns the queue's reference."""
        cdef pyotp_qnode* node
        cdef _ThreadCall tc
        while pyotp_mpsc_pop(&self.tq, &node) == PYOTP_Q_ITEM:
            tc = <_ThreadCall>(<RqNode*>node).owner
            Py_DECREF(tc)
            if tc.counted:
                pyotp_add_int(&self.tq_len, -1)
            if self.closed:
                tc.waiter.fail(RuntimeError("the pyotp node has stopped"))
            else:
                self.tserved += 1
                _thread_call_begin(tc)

    cdef void push_thread_call(self, _ThreadCall tc) noexcept:
        """Any thread: queue tc; post a turn only if none is posted or running."""
        tc.node.owner = <PyObject*>tc
        Py_INCREF(tc)
        if tc.counted:
            pyotp_add_int(&self.tq_len, 1)
        pyotp_mpsc_push(&self.tq, <pyotp_qnode*>&tc.node)
        if pyotp_cas_int(&self.wake_pending, 0, 1):
            self.post()

    cdef Py_ssize_t run_process(self, Process p) except -1:
        global _current
        cdef Py_ssize_t count = 1
        if p.status == ST_DEAD:
            return 1              # stays scheduled forever: nobody enqueues it again
        _current = p
        p.status = ST_RUNNING
        try:
            if p.coro is not None or p.kind == PK_CORO:
                count = _coro_step(p)
            if p.kind == PK_GEN and p.coro is None and p.status != ST_DEAD and not p.has_pending_exit:
                if self.task_held:
                    _task_release(self)     # a plain handler is no task (current_task(): None)
                count += _gen_run(p, BUDGET)
        finally:
            _current = None
        if p.has_pending_exit:
            _schedule_exit(p, p.pending_exit)
        if p.status == ST_DEAD:
            return count
        p.status = ST_WAITING
        if p.wait == W_REPLY or p.wait == W_SLEEP or p.wait == W_FUTURE:
            p.parked = True
            return count
        if _has_work(p):
            self.enqueue_again(p)
            return count
        pyotp_store_int(&p.scheduled, 0)
        if _has_work(p) and pyotp_cas_int(&p.scheduled, 0, 1):
            self.enqueue_again(p)
        return count

    cdef inline void enqueue_again(self, Process p) noexcept:
        Py_INCREF(p)
        pyotp_mpsc_push(&self.rq, <pyotp_qnode*>&p.rq)

    # -- timers ------------------------------------------------------------------------

    cdef void arm_timer(self, double at_least=0.0) except *:
        cdef int64_t nxt = self.wheel.next_event()
        cdef double at
        if nxt < 0:
            return
        if self.tfd >= 0 or (self.tfd == TFD_UNTRIED and self.open_timerfd()):
            # One timerfd, armed at the tick's absolute time: armed_tick is the tick it is
            # set for, until its callback runs (INT64_MAX then). Re-arming is one
            # timerfd_settime and leaves no handle behind, so a far tick needs none of
            # the loop timers' far_handle care below. (uvloop closes each fired
            # call_later's libuv timer, and a closing handle makes the next poll a
            # non-blocking one: a loop iteration per fired timer that this saves.)
            if nxt >= self.armed_tick:
                return
            self.armed_tick = nxt
            # + 1 us: the callback's clock read must land in the tick, not a rounding
            # error short of it (which would look like an early wake-up)
            at = self.wheel.epoch_ms + <double>nxt + 0.001
            if at_least > 0.0:
                at = max(at, pyotp_monotonic_ms() + at_least * 1000.0)
            if pyotp_timerfd_set(self.tfd, at) != 0:
                self.armed_tick = INT64_MAX
                self.drop_timerfd()
                self.arm_timer(at_least)        # the loop's timers from now on
            return
        # The loop's timers: a call_later handle per arming.
        if self.timer_handle is not None:
            if nxt >= self.armed_tick:
                return
            if self.armed_tick - nxt >= FAR_MS and self.far_handle is None:
                # A far tick (a call's timeout, a cascade) that a nearer timer now
                # precedes: keep its loop timer instead of cancelling it. A remote call
                # with a timeout, then a sleep, is a trickle's every call: two loop timers
                # made and one cancelled per call, and both mostly for nothing, since the
                # call's timeout is cancelled by its reply.
                self.far_handle = self.timer_handle
                self.far_tick = self.armed_tick
            else:
                self.timer_handle.cancel()
        elif self.far_handle is not None and nxt >= self.far_tick:
            return              # the far loop timer is early enough
        self.armed_tick = nxt
        cdef double delay = (<double>nxt - self.wheel.now_ms()) / 1000.0
        self.timer_handle = self.loop.call_later(delay if delay > at_least else at_least, self.timer_cb)

    cdef bint open_timerfd(self) except *:
        """Make the scheduler's timerfd and watch it (first arming, on the loop thread).
        False, for good, where it cannot be had: not Linux, out of fds, a loop without
        add_reader (Windows' proactor) or one that cannot watch it."""
        cdef int fd = pyotp_timerfd_open()
        self.tfd = TFD_NONE
        if fd < 0:
            return False
        try:
            self.loop.add_reader(fd, self.tfd_cb)
        except Exception:
            pyotp_timerfd_close(fd)
            return False
        self.tfd = fd
        self.tfd_live = True
        return True

    cdef void drop_timerfd(self) except *:
        """Stop watching and close the timerfd; the loop's timers take over."""
        cdef int fd = self.tfd
        self.tfd = TFD_NONE
        if fd < 0:
            return
        self.tfd_live = False
        try:
            if not self.loop.is_closed():
                self.loop.remove_reader(fd)
        finally:
            pyotp_timerfd_close(fd)

    def __dealloc__(self):
        if self.tfd_live:       # never stopped (_node_detach drops it): at least no fd leak
            pyotp_timerfd_close(self.tfd)

    cdef void cancel_timers(self) except *:
        if self.timer_handle is not None:
            self.timer_handle.cancel()
        if self.far_handle is not None:
            self.far_handle.cancel()
            self.far_handle = None
        self.drop_timerfd()

    cdef inline void timer_inserted(self, Timer t) except *:
        if t.expires < self.armed_tick:
            self.arm_timer()

    def _on_timer(self):
        self.timer_handle = None
        self.armed_tick = INT64_MAX
        self.timers_due()

    def _on_timerfd(self):
        self.armed_tick = INT64_MAX
        try:
            self.timers_due()
        finally:
            if self.armed_tick == INT64_MAX and self.tfd >= 0:
                # nothing re-armed it: disarming clears the expiry, else the fd stays
                # readable and the loop would call this again at once, for ever
                pyotp_timerfd_set(self.tfd, 0.0)

    def _on_far_timer(self):
        self.far_handle = None
        self.far_tick = INT64_MAX
        self.timers_due()

    cdef void timers_due(self) except *:
        # Processes woken by these timers run right after them, in this same callback:
        # claiming the wakeup first keeps their wake-ups from posting a turn of their own
        # (a handle, and a loop iteration, per timer that wakes a process).
        cdef bint claimed = pyotp_cas_int(&self.wake_pending, 0, 1)
        cdef list fired
        cdef Timer t
        try:
            fired = self.wheel.advance(self.wheel.now_tick())
            for t in fired:
                try:
                    _fire(t)
                except Exception:
                    _log.exception("pyotp: timer action failed")
        except BaseException:
            if claimed:
                self.release_wakeup()
            raise
        if claimed and (fired or pyotp_mpsc_nonempty(&self.rq) or pyotp_mpsc_nonempty(&self.tq)):
            self.run_turn()         # clears the wakeup and arms the next timer
            return
        if claimed:
            self.release_wakeup()
        if fired:
            self.arm_timer()
        else:
            # Woken before the next tick is due: the loop's clock has millisecond
            # granularity (libuv) and fired a little early (loop timers; the timerfd
            # fires at the tick, and lands here only when its timer was cancelled).
            # Re-arming with the sub-ms rest would spin through zero-timeout polls until
            # the tick passes; wait the rest of a millisecond instead (a timer never fires
            # early either way).
            self.arm_timer(0.001)

    cdef Timer start_timer(self, int kind, double seconds, object dest, object msg, Process proc):
        cdef Timer t = Timer.__new__(Timer)
        t.kind = kind
        t.dest = dest
        t.msg = msg
        t.proc = proc
        self.wheel.insert(t, seconds)
        if t.expires < self.armed_tick:
            self.arm_timer()
        return t


cdef inline bint _has_work(Process p):
    if p.wait == W_WOKEN or p.wait == W_GOT:
        return True
    if p.wait == W_RECEIVE:
        return mb_has_unseen(&p.mb)
    if p.kind == PK_GEN and p.coro is None:
        if p.run_flags & RUN_GEN_SUSPENDED:
            return mb_has_unseen(&p.mb)     # only a system message can wake it
        return mb_nonempty(&p.mb) or p.timeout_fired or p.pending_continue is not None
    return False


# ---------------------------------------------------------------------------------------
# Delivery and wakeups

cdef inline void _deliver(Process p, Msg* m) noexcept:
    """Queue m for p (any thread). A dead process drops it."""
    if p.status == ST_DEAD:
        msg_free(m)
        return
    mb_push(&p.mb, m)
    if p.mb.limit:            # max_mailbox: the one compare a send pays when it is off
        _mbx_pushed(p)
    if pyotp_cas_int(&p.scheduled, 0, 1):
        _sched.enqueue(p)


cdef inline Py_ssize_t _mbx_count(Process p) noexcept:
    cdef long outer = pyotp_load_int(&p.mb.outer)
    return p.mb.length + (outer if outer > 0 else 0)


cdef void _mbx_pushed(Process p) noexcept:
    """A push while max_mailbox is set (any thread): count it; the first time the count
    passes the limit, the loop thread is asked to act (the kill must happen there)."""
    cdef long outer = pyotp_add_int(&p.mb.outer, 1)
    if p.mb.length + outer > p.mb.limit and pyotp_cas_int(&p.mbx_tripped, 0, 1):
        _mbx_post(p)


cdef void _mbx_post(Process p) noexcept:
    cdef Scheduler s = _sched
    if s is None:
        return
    try:
        if pyotp_thread_id() == s.loop_tid:
            s.loop.call_soon(s.mbx_cb, p)
        else:
            s.loop.call_soon_threadsafe(s.mbx_cb, p)
    except BaseException:
        pass        # the loop is closed: the node is gone


cdef tuple _mbx_parse(object value, str what):
    """max_mailbox as (size, kill, log): an int, or a dict {"size", "kill", "log"} (the
    shape of OTP's max_heap_size, error_logger spelled log)."""
    cdef object size, kill = True, log = True
    if type(value) is dict:
        extra = [k for k in value if k not in ("size", "kill", "log")]
        if extra:
            raise BadArg("%s: unknown max_mailbox key(s) %r (allowed: size, kill, log)" % (what, extra))
        if "size" not in value:
            raise BadArg("%s: a max_mailbox dict needs 'size'" % (what,))
        size = value["size"]
        kill = value.get("kill", True)
        log = value.get("log", True)
        if type(kill) is not bool or type(log) is not bool:
            raise BadArg("%s: max_mailbox 'kill' and 'log' must be True or False, got %r" % (what, value))
    else:
        size = value
    if type(size) is not int or size < 0 or size > 0x7FFFFFFF:
        raise BadArg("%s: max_mailbox must be a message count 0..2**31-1 (0: no limit) or a dict "
                     "{'size': n, 'kill': bool, 'log': bool}, got %r" % (what, value))
    return (size, kill, log)


cdef dict _mbx_get(long size, bint kill, bint log):
    return {"size": size, "kill": kill, "log": log}


cdef void _mbx_set(Process p, tuple spec) except *:
    """Set p's max_mailbox (on the loop thread). The count restarts from the queue as it is
    now; a mailbox already over the new limit trips it at once."""
    cdef long size = (<tuple>spec)[0]
    mb_drain(&p.mb)
    p.mb.limit = 0
    pyotp_store_int(&p.mb.outer, 0)
    p.mbx_kill = (<tuple>spec)[1]
    p.mbx_log = (<tuple>spec)[2]
    pyotp_store_int(&p.mbx_tripped, 0)
    p.mb.limit = size
    if size and _mbx_count(p) > size and pyotp_cas_int(&p.mbx_tripped, 0, 1):
        _mbx_post(p)


cdef inline bint _to_local_pid(object dest, int kind, object msg) except -1:
    """The hot path of send and cast: dest is a local pid -> deliver (a dead one drops the
    message, as OTP) and return True; anything else -> False, nothing done."""
    cdef Process p
    if type(dest) is not Pid or (<Pid>dest)._node is not None:
        return False
    p = (<Pid>dest)._proc
    if p is not None and p.status != ST_DEAD:
        if p.wait == W_RECEIVE and kind == K_MSG and _handoff(p, msg):
            return True
        _deliver(p, msg_new(kind, msg, None))
    return True


cdef inline bint _handoff(Process p, object msg) except -1:
    """A plain message for a process waiting in a receive() that takes any message, with
    nothing queued: on the loop thread, hand it over as the value the process resumes with
    (as a wake does) instead of queueing a node it would pop at once: no node, no mailbox
    push or pop. False (nothing done) where the mailbox has to see it: another thread, a
    pattern, a max_mailbox count, a trace, or queued messages (they come first). The
    process waits in W_GOT until it runs; a Process.cancel() meanwhile puts the message
    back in its mailbox (_cancel_wait)."""
    if p.match is not None or p.mb.limit or p.tracer is not None or mb_nonempty(&p.mb) \
            or pyotp_thread_id() != _sched.loop_tid:
        return False
    # a message from another thread that lands in the mailbox from here on is later than
    # this one, which is what its order against this send would be anyway
    if p.timer is not None:
        _sched.wheel.cancel(p.timer)
        p.timer = None
    p.wait = W_GOT
    p.wake_value = msg
    p.mb.received += 1
    p.handled += 1
    if pyotp_cas_int(&p.scheduled, 0, 1):
        _sched.enqueue(p)
    return True


cdef void _wake(Process p, object value, object exc) except *:
    """Resume a waiting process with value (or by throwing exc into it)."""
    if p.status == ST_DEAD:
        return
    if p.timer is not None:
        _sched.wheel.cancel(p.timer)
        p.timer = None
    p.wait = W_WOKEN
    p.wake_value = value
    p.wake_exc = exc
    if p.kind == PK_EXTERNAL:
        _external_resolve(p)
        return
    if p.parked:
        PYOTP_ASSERT(p.scheduled == 1)
        p.parked = False
        _sched.enqueue(p)
    elif p is not _current and pyotp_cas_int(&p.scheduled, 0, 1):
        _sched.enqueue(p)


cdef void _wake_down(Process waiter, object reason) except *:
    """The process a waiter's call/stop monitors went down."""
    waiter.wait_target = None
    if waiter.wait_kind == WK_STOP:
        _wake(waiter, reason, None)      # GenServer.stop: the DOWN reason is the answer
    else:
        _wake(waiter, None, Exit((reason, _call_mfa(waiter))))


cdef object _call_mfa(Process waiter):
    cdef tuple info = waiter.wait_info
    return ("GenServer", "stop" if waiter.wait_kind == WK_STOP else "call", list(info))


cdef void _fire(Timer t) except *:
    cdef Process p
    if t.kind == TK_SEND:
        _send_quiet(t.dest, t.msg)
    elif t.kind == TK_START:
        _send_quiet(t.dest, ("timeout", t, t.msg))
    elif t.kind == TK_WAKE:
        p = t.proc
        if p.timer is not t or p.status == ST_DEAD:
            return
        p.timer = None
        if p.wait == W_RECEIVE:
            p.match = None
            _wake(p, None, TimeoutError("receive timed out"))
        elif p.wait == W_SLEEP:
            _wake(p, None, None)
        elif p.wait == W_REPLY:
            _call_timed_out(p)
    elif t.kind == TK_IDLE:
        p = t.proc
        if p.timer is not t or p.status == ST_DEAD:
            return
        p.timer = None
        if not mb_nonempty(&p.mb):
            p.timeout_fired = True
            if pyotp_cas_int(&p.scheduled, 0, 1):
                _sched.enqueue(p)
    elif t.kind == TK_CALLBACK:
        t.dest(*t.msg)


cdef void _call_timed_out(Process p) except *:
    cdef Process target = p.wait_target
    p.wait_target = None
    if p.wait_kind == WK_START:
        # OTP kills a server whose init did not answer in time
        target.ack = None
        _schedule_exit(target, _KILLED)
        _wake(p, ("error", "timeout"), None)
        return
    if target is not None and target.monitored_by is not None:
        target.monitored_by.pop(p.wait_ref, None)
    cdef object ref = p.wait_ref
    cdef object server = None
    if target is None and p.wait_kind == WK_CALL and p.wait_info is not None:
        server = (<tuple>p.wait_info)[0]
    _wake(p, None, Exit(("timeout", _call_mfa(p))))
    if server is not None and _dist_connected():
        _remote_call_gave_up(p.pid, ref, server)


# ---------------------------------------------------------------------------------------
# The coroutine driver

cdef Py_ssize_t _coro_step(Process p) except -1:
    cdef Msg* m
    cdef object value, exc
    if p.wait == W_RECEIVE:
        if p.match is None:
            m = mb_pop(&p.mb)
        else:
            m = mb_take_matching(&p.mb, p.match)
        if m == NULL:
            return 1
        if p.timer is not None:
            _sched.wheel.cancel(p.timer)
            p.timer = None
        p.wait = W_NONE
        p.match = None
        value = msg_object(m)
        msg_free(m)
        p.handled += 1
        if p.tracer is not None:
            _trace(p, "receive", value)
        _resume(p, value, None)
        return 1
    if p.wait == W_WOKEN or p.wait == W_GOT:
        value = p.wake_value
        exc = p.wake_exc
        p.wake_value = None
        p.wake_exc = None
        p.wait = W_NONE
        _resume(p, value, exc)
        return 1
    if p.wait == W_NONE:
        if p.coro is None:
            _coro_start(p)
        else:
            _resume(p, None, None)
        return 1
    return 1


cdef void _coro_start(Process p) except *:
    """First run of a spawned body: call it inside the process, then drive what it returns."""
    cdef object fn = p.init_arg
    cdef tuple args = p.spawn_args
    p.init_arg = None
    p.spawn_args = None
    try:
        r = fn(*args)
    except BaseException as e:
        if isinstance(e, _FATAL):
            raise
        _coro_failed(p, e)
        return
    if pyotp_susp_check(r):
        r = _drive(r)       # the body was receive() itself: a coroutine to drive it
    elif p.susp is not None and pyotp_susp_armed(p.susp):
        _never_awaited(p, False, fn)    # a plain body that called receive()/call() and dropped it
    if hasattr(r, "send") and hasattr(r, "throw"):
        p.coro = r
        _resume(p, None, None)
    else:
        p.result = r
        _schedule_exit(p, _NORMAL)


cdef void _cancel_wait(Process p, object msg) except *:
    """Process.cancel(): end the current wait with CancelledError (asyncio semantics)."""
    cdef object exc = _asyncio.CancelledError() if msg is None else _asyncio.CancelledError(msg)
    if p.wait == W_FUTURE and p.fut is not None:
        p.fut.cancel()            # its done-callback resumes the process, which then raises
        return
    if p.wait == W_REPLY:
        if p.wait_target is not None and p.wait_target.monitored_by is not None:
            p.wait_target.monitored_by.pop(p.wait_ref, None)
        p.wait_target = None
    if p.wait == W_GOT:
        # a message was handed to its receive(): back in the mailbox, first, as if the
        # cancel had come before it
        mb_push_front(&p.mb, msg_new(K_MSG, p.wake_value, None))
        p.wake_value = None
        p.handled -= 1
        p.wait = W_RECEIVE
    if p.wait == W_RECEIVE or p.wait == W_REPLY or p.wait == W_SLEEP:
        p.match = None
        _wake(p, None, exc)
    else:
        p.must_cancel = True      # running or already woken: raise at the next resume


cdef inline void _task_release(Scheduler s) except *:
    """Take the process _resume left in asyncio's current-task table out of it."""
    s.task_held = False
    if _cur_tasks is not None:
        _cur_tasks.pop(s.loop, None)


cdef void _resume(Process p, object value, object exc) except *:
    cdef PyObject* res = NULL
    cdef PySendResult status
    cdef object coro = p.coro
    cdef object y
    cdef Scheduler s = _sched
    cdef object loop = s.loop
    cdef bint keep
    p.reductions += 1
    if p.must_cancel and exc is None:
        p.must_cancel = False
        exc = _asyncio.CancelledError()
    # The process is asyncio's current task while its coroutine runs (see Process.cancel).
    # Inside a turn the entry stays from one resume to the next (one dict store per resume,
    # instead of an insert and a delete that also make the dict resize every few rounds);
    # run_turn takes it out before the loop runs anything else, and run_process before a
    # plain GenServer handler runs. Outside a turn (or without the dict) it is set and
    # cleared around the step, as asyncio's _enter_task/_leave_task do.
    cdef dict tasks = _cur_tasks
    if tasks is not None and (s.task_held or loop not in tasks):
        tasks[loop] = p
        keep = s.in_turn
        s.task_held = keep
    else:
        tasks = None
        keep = False
        _enter_task(loop, p)
    try:
        if exc is None:
            status = PyIter_Send(coro, value, &res)
            y = <object>res
            Py_DECREF(y)          # PyIter_Send gave us a new reference; `y` holds one
        else:
            try:
                y = coro.throw(exc)
                status = PYGEN_NEXT
            except StopIteration as si:
                y = si.value
                status = PYGEN_RETURN
    except BaseException as e:
        if tasks is not None:
            if not keep:
                tasks.pop(loop, None)
        else:
            _leave_task(loop, p)
        if p.susp is not None and pyotp_susp_armed(p.susp):
            _never_awaited(p, False)
        p.coro = None
        if isinstance(e, _FATAL):
            raise
        _coro_failed(p, e)
        return
    if tasks is not None:
        if not keep:
            tasks.pop(loop, None)
    else:
        _leave_task(loop, p)
    if p.susp is not None and pyotp_susp_armed(p.susp):
        _never_awaited(p, False)    # the step ended with an API wait not awaited
    if status == PYGEN_NEXT:
        if y is _TOKEN:
            return
        _yielded_other(p, y)
        return
    p.coro = None
    if p.kind == PK_GEN:
        _gen_coro_done(p, y)
    else:
        p.result = y
        _schedule_exit(p, _NORMAL)


cdef void _yielded_other(Process p, object y) except *:
    """The coroutine awaited something that is not ours: an asyncio future, or a bare yield."""
    if y is None:
        p.wait = W_WOKEN        # asyncio.sleep(0) and friends: run again next turn
        return
    if getattr(y, "_asyncio_future_blocking", None) is not None:
        y._asyncio_future_blocking = False
        p.wait = W_FUTURE
        p.fut = y
        y.add_done_callback(p._future_done)
        return
    _resume(p, None, RuntimeError(
        "a pyotp process awaited %r, which is neither a pyotp wait nor an asyncio future" % (y,)))


cdef void _coro_failed(Process p, BaseException e) except *:
    cdef object reason
    if p.kind == PK_GEN:
        _gen_coro_failed(p, e)
        return
    if isinstance(e, Exit):
        reason = e.reason
    elif isinstance(e, GeneratorExit):
        reason = _KILLED
    else:
        reason = e
        _crash_report(p, e, "Process")
    _schedule_exit(p, reason)


# ---------------------------------------------------------------------------------------
# External waiters: callers that are not processes (an asyncio task in a hosted node, or
# another OS thread) get a PK_EXTERNAL stand-in whose wake resolves a future or a lock.

from _thread import allocate_lock as _new_lock


cdef class _ThreadWaiter:
    # One per calling thread, reused call after call (see _thread_call). `state`: 0 while
    # the call is pending, 1 once answered, 2 when the caller gave up spinning and sleeps
    # on `lock` (held while no answer is there; the answer releases it). The answer is
    # published (publish()) when the loop's turn ends, just before the loop thread lets
    # go of the GIL. A wait that gives up retires the waiter so a late answer cannot
    # release the thread's next call.
    # (Spinning on the state pays only because the answer is published as the loop thread
    # releases the GIL: published mid-turn, the caller would see it and then wait for the
    # GIL until the turn ends, as a sleeper does; and even then the answered callers would
    # race for the GIL and all but one sleep in CPython's GIL wait: hence the GIL turn.)
    cdef object lock
    cdef long state
    cdef long id                 # in Scheduler.gil_turn while this thread holds the turn
    cdef public object value
    cdef public object exc

    def __cinit__(self):
        global _waiter_ids
        self.lock = _new_lock()
        self.lock.acquire()
        self.state = 0
        _waiter_ids += 1
        self.id = _waiter_ids

    cdef void answer(self, object value, object exc) except *:
        self.value = value
        self.exc = exc
        cdef Scheduler s = _sched
        if s is not None and s.in_turn:
            s.answered.append(self)
        else:
            self.publish()

    cdef void publish(self) except *:
        if not pyotp_cas_int(&self.state, 0, 1):
            pyotp_store_int(&self.state, 1)      # it sleeps on the lock (state 2)
            self.lock.release()

    cdef void fail(self, object exc) except *:
        self.answer(None, exc)

    cdef object wait(self, Scheduler s, object timeout, double spin, bint polite):
        """The calling thread: spin up to ``spin`` us without the GIL for the answer (when
        the waiting policy allows; ``polite``: yielding the core between checks), and
        answered so, wait for the GIL turn (see the file's header); else sleep on the lock.
        None: no time limit."""
        cdef int ok = 0
        cdef double t0
        cdef long* turn = &s.gil_turn
        if spin > 0.0:
            t0 = pyotp_monotonic_ms()
            with nogil:
                _turn_give(turn, self.id)      # held since the last call's answer
                ok = _spin_answer(&self.state, spin, polite)
                if ok:
                    _turn_take(turn, &s.gil_turn_at, self.id, spin, polite)
            _tcall_policy.record(ok, (pyotp_monotonic_ms() - t0) * 1000.0)
        else:
            _turn_give(turn, self.id)
        if pyotp_cas_int(&self.state, 0, 2):
            # Lock.acquire spells "no limit" -1
            if not self.lock.acquire(True, -1 if timeout is None else timeout):
                raise Exit("timeout")
        cdef object exc = self.exc
        cdef object value = self.value
        self.exc = None
        self.value = None            # the lock is held again: ready for the next call
        self.state = 0
        if exc is not None:
            raise exc
        return value


cdef inline int _spin_answer(long* state, double max_us, bint polite) noexcept nogil:
    """Spin until *state is set (1) or max_us passed (0); polite: yield the core between
    checks (more spinning threads than cores)."""
    cdef double until = pyotp_monotonic_ms() + max_us / 1000.0
    cdef unsigned int i = 0
    while pyotp_load_int(state) == 0:
        if _spin_step(&i, until, polite):
            return pyotp_load_int(state) != 0
    return 1


cdef inline void _turn_give(long* turn, long me) noexcept nogil:
    """Give back the GIL turn if this waiter (id ``me``) holds it."""
    if pyotp_load_int(turn) == me:
        pyotp_cas_int(turn, me, 0)


cdef inline int _turn_take(long* turn, double* taken_at, long me, double max_us,
                           bint polite) noexcept nogil:
    """Wait for the GIL turn (polite: yielding the core between checks) and take it: 1
    when it was free (or already ours), 0 when it was taken over from a holder that has
    held it TURN_HOLD_MS, or kept it while this waiter spent max_us."""
    cdef double now = pyotp_monotonic_ms()
    cdef double until = now + max_us / 1000.0
    cdef long cur
    while True:
        cur = pyotp_load_int(turn)
        if cur == me or (cur == 0 and pyotp_cas_int(turn, 0, me)):
            taken_at[0] = now
            return 1
        if (now - taken_at[0] > TURN_HOLD_MS or now > until) and pyotp_cas_int(turn, cur, me):
            taken_at[0] = now
            return 0
        _spin_pause(polite)
        now = pyotp_monotonic_ms()


def _gil_turn_step(long turn, long me, str op, double held_us=0.0, double budget_us=0.0):
    """Tests: the GIL turn's decisions on a given state; returns (result, new state).
    ``op``: "give" or "take"; for "take", ``held_us``: how long its holder has held it,
    ``budget_us``: this waiter's spin budget (a held turn is taken over once either
    limit is passed; with neither passed this would spin until the budget is)."""
    cdef long t = turn
    cdef double at = pyotp_monotonic_ms() - held_us / 1000.0
    cdef int r = 0
    if op == "give":
        _turn_give(&t, me)
    elif op == "take":
        r = _turn_take(&t, &at, me, budget_us, True)
    else:
        raise ValueError("op must be 'give' or 'take', not %r" % (op,))
    return r, t


cdef long _waiter_ids = 0       # ids of _ThreadWaiters (counted with the GIL held)


@cython.final
cdef class _ThreadCall:
    """A blocking call from another OS thread, queued on Scheduler.tq."""
    cdef RqNode node
    cdef object server
    cdef object request
    cdef object timeout
    cdef _ThreadWaiter waiter
    cdef bint counted            # in Scheduler.tq_len: made while more threads call than
                                 # there are cores (one thread alone pays no atomic for it)


cdef void _external_resolve(Process p) except *:
    cdef object w = p.ext
    cdef object value = p.wake_value
    cdef object exc = p.wake_exc
    p.ext = None
    p.wake_value = None
    p.wake_exc = None
    p.status = ST_DEAD
    p.pid._proc = None          # break the cycle; a late reply to this pid finds nobody
    if w is None:
        return
    if type(w) is _ThreadWaiter:
        (<_ThreadWaiter>w).answer(value, exc)
    elif not w.done():
        if exc is not None:
            w.set_exception(exc)
        else:
            w.set_result(value)


cdef void _external_discard(Process p) noexcept:
    """A stand-in whose wait never started (the call failed up front)."""
    p.ext = None
    p.status = ST_DEAD
    p.pid._proc = None


cdef Process _external_caller(object waiter):
    cdef Process p = _sched.new_process(PK_EXTERNAL)
    p.ext = waiter
    p.status = ST_WAITING
    p.scheduled = 1
    return p


cdef inline Scheduler _need_sched():
    if _sched is None:
        raise RuntimeError("no pyotp node is running: use pyotp.run(), "
                           "`async with pyotp.Runtime()`, or pyotp.Runtime.start_thread()")
    return _sched


cdef inline Process _current_here():
    """The running process when the caller is its code; None elsewhere, and on every other
    OS thread: `_current` is global and other threads run (the GIL switches) while a
    process step is in progress, but they must never act as that process (its mailbox has
    one consumer, the loop thread)."""
    cdef Process p = _current
    if p is not None and (_sched is None or pyotp_thread_id() != _sched.loop_tid):
        return None
    return p


cdef Process _caller_for_wait(str what):
    """The process that is about to wait, or None (the caller is not a process). Raises
    the 'make it async' error for plain callbacks."""
    cdef Process p = _current_here()
    if p is not None:
        if p.sync_cb:
            raise CallbackError(
                "%s has to wait, but it was called from a plain `def` callback of %r; "
                "make that callback `async def` and `await` it" % (what, p.mod if p.mod is not None else p.pid))
        return p
    return None
