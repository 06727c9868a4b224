# wait_policy.pyx: the one component that decides whether, and for how long, a thread of
# this runtime may spin before it sleeps (BEAM's scheduler busy wait, `+sbwt`).
#
# Owns: the spin budget of every place that polls before sleeping (today the distribution
# channels' read spin; any new spinner asks here too), the measured outcome of past spins,
# and the machine facts that make spinning harmful: usable CPUs (affinity and cgroup v2
# `cpu.max` quota), runnable threads machine-wide (/proc/loadavg), and this thread's
# involuntary context switches.
# Why: spinning wins only when the awaited peer runs on another, otherwise idle core. When
# the cores are busy (a one-CPU container, a busy loop beside the nodes, a pool with a node
# on every core) the spinner holds the core its peer needs, and throughput collapses ~8x.
# Invariants:
#  - Loop thread only (one policy per runtime process; channels call it with the GIL).
#  - budget_us() is O(1) and allocation-free except at a probe (at most every PROBE_MS),
#    which reads two small files and one getrusage. Machine facts count only when they
#    persist: two crowded probes in a row, preemptions as a rate per probe interval, and
#    once confirmed pause the spin for a time that grows while they recur.
#  - mode "none" never spins; a fixed number always spins that long (the user asked for
#    it); "auto" spins at most AUTO_MAX_US and only while: more than one CPU is usable, the
#    machine is not oversubscribed, spins have been succeeding (from the second miss in a
#    row, spinning backs off exponentially), and the budget follows the waits that
#    succeeded (4x their moving average), so a spin never lasts much longer than a reply
#    usually takes.
#  - A single bad sample never stops spinning: one miss (a reply delayed by a GC or a
#    timer), one crowded load sample or one probe interval with many preemptions is
#    what a quiet 2-core machine running two spinning nodes sees now and then, and
#    pausing the spin for it cost a quarter of the quiet call rate. Every fact counts
#    only when the next sample confirms it; a real busy loop confirms it at once.
#  - Wake-ups we cause are not contention: writing a doorbell (a shared-memory ring's
#    bell) wakes the peer, and on a 2-core machine the kernel often runs the woken peer on
#    the waker's core and preempts the waker: one involuntary switch per wake-up, about
#    a third of them here. Counted as preemption, they stopped the spin of a quiet 2-node
#    pool, and without the spin every call rings a bell, so the count stayed high and the
#    spin stayed off (half the call rate). The probe subtracts the wake-ups this thread
#    caused (_wp_woke, counted where the bell rings) from its involuntary switches; a
#    busy loop's preemptions come on top of them and still count.

cdef enum:
    _WP_NONE = 0
    _WP_FIXED = 1
    _WP_AUTO = 2

# why auto does not spin (counted per refused spin, for info()["denied"])
cdef enum:
    _WPD_ONE_CPU = 0
    _WPD_OVERSUB = 1
    _WPD_PREEMPT = 2
    _WPD_BACKOFF = 3
    _WPD_N = 4

cdef double _WP_AUTO_MAX_US = 100.0     # auto's ceiling: today's default busy_wait
cdef double _WP_MIN_US = 5.0            # a budget below this cannot catch a reply
cdef double _WP_PROBE_MS = 50.0         # machine facts are re-read this often while spinning
cdef double _WP_CPUS_MS = 1000.0        # affinity and quota: re-read this often (on change)
cdef double _WP_BACKOFF_MAX_MS = 1000.0
cdef long _WP_NIVCSW_LIMIT = 8          # involuntary switches per probe that mean contention (a core shared with a busy thread: ~12-16 per 50 ms)
cdef double _WP_PREEMPT_PAUSE_MAX_MS = 2000.0
cdef int _WP_CALM_PROBES = 20           # a second of probes without preemption forgets the pauses
cdef long long _wp_wakeups = 0         # peers this process woke (doorbells rung), loop thread only


cdef inline void _wp_woke() noexcept:
    """A doorbell was rung for a sleeping peer (see the header: not contention)."""
    global _wp_wakeups
    _wp_wakeups += 1


cdef double _wp_cpus_at = -1.0e18    # when _wp_read_machine last read the CPU facts (ms)
cdef tuple _wp_cpus = (1, 1)           # (usable, online) as read then


cdef tuple _wp_read_cpus():
    """(usable, online): affinity and cgroup v2 quota; re-read at most every CPUS_MS (the
    policy uses them no more often, and each costs a file or two)."""
    global _wp_cpus_at, _wp_cpus
    cdef double now = pyotp_monotonic_ms()
    if now - _wp_cpus_at < _WP_CPUS_MS:
        return _wp_cpus
    import os
    online = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = online
    try:
        with open("/sys/fs/cgroup/cpu.max", "rb") as f:
            quota, period = f.read().split()[:2]
        if quota != b"max":
            usable = min(usable, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    _wp_cpus = (usable, online)
    _wp_cpus_at = now
    return _wp_cpus


def _wp_read_machine():
    """The real probe: (usable_cpus, online_cpus, runnable_threads, involuntary_switches,
    wakeups_caused). Any fact the platform does not offer is None."""
    import os
    usable, online = _wp_read_cpus()
    runnable = None
    try:
        # raw reads (no text layer): this runs every PROBE_MS while a node spins
        fd = os.open("/proc/loadavg", os.O_RDONLY)
        try:
            runnable = int(os.read(fd, 128).split()[3].split(b"/")[0])
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        pass
    nivcsw = None
    try:
        import resource
        nivcsw = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
    except (ImportError, AttributeError, OSError):
        pass
    return usable, online, runnable, nivcsw, _wp_wakeups


def _wp_parse(setting):
    """busy_wait setting -> (mode, microseconds); ValueError/TypeError naming the problem."""
    if setting is None or setting == "auto":
        return _WP_AUTO, _WP_AUTO_MAX_US
    if setting == "none":
        return _WP_NONE, 0.0
    if isinstance(setting, bool) or not isinstance(setting, (int, float)):
        raise TypeError('busy_wait must be "auto", "none" or microseconds (a number), got %r'
                        % (setting,))
    if not 0 <= setting <= 10_000:
        raise ValueError("busy_wait must be microseconds from 0 to 10000, got %r" % (setting,))
    if setting == 0:
        return _WP_NONE, 0.0
    return _WP_FIXED, float(setting)


cdef class WaitPolicy:
    """How long a thread may spin before sleeping; see the file's header.

    ``WaitPolicy(setting="auto", clock=None, probe=None)``: ``setting`` is "auto", "none" or
    microseconds (0..10000). ``clock`` (ms, float) and ``probe`` (a function returning
    ``(usable_cpus, online_cpus, runnable_threads, involuntary_switches[, wakeups_caused])``)
    replace the real ones in tests. ``floor_us`` (default 5) is the least budget "auto"
    gives after a success (30 at the "shm", "thread_loop" and "thread_caller" sites).

    >>> p = WaitPolicy("auto")
    >>> p.info()["mode"]
    'auto'
    """
    cdef int mode
    cdef double max_us
    cdef double budget             # current auto budget (us)
    cdef double avg_wait           # moving average of successful waits (us)
    cdef int misses                # consecutive spins that ended without data
    cdef double off_until          # ms: no spinning before this (back-off)
    cdef double next_probe         # ms
    cdef double next_cpus          # ms
    cdef int usable, online
    cdef long last_nivcsw
    cdef long long last_woke       # wake-ups caused, at the last probe (-1: none yet)
    cdef long excused              # involuntary switches the last probe put down to them
    cdef double preempt_pause      # ms: the current pause for confirmed preemption (0: none)
    cdef double preempt_until      # ms: no spinning before this (preemption)
    cdef int calm                  # probes without preemption since the last pause
    cdef int pause_why             # _WPD_OVERSUB or _WPD_PREEMPT: what the current pause is for
    cdef str preempt_reason
    cdef double last_probe         # ms
    cdef int crowded               # consecutive probes that saw more runnable threads than CPUs
    cdef int preempted             # consecutive probes with many involuntary switches
    cdef bint oversub
    cdef int why                   # _WPD_* while oversub
    cdef long long denied[_WPD_N]
    cdef str reason
    cdef object clock
    cdef object probe
    cdef long long spins, hits, total_misses
    cdef double spun_us
    cdef readonly object setting
    cdef public double floor_us    # the least budget auto gives after a success (us)
    cdef WaitPolicy machine        # another site's policy whose machine facts this one uses
    cdef bint loop_site            # used on the loop thread: may probe the machine facts

    def __init__(self, setting="auto", clock=None, probe=None):
        if clock is not None and not callable(clock):
            raise TypeError("WaitPolicy: clock must be callable, got %r" % (clock,))
        if probe is not None and not callable(probe):
            raise TypeError("WaitPolicy: probe must be callable, got %r" % (probe,))
        self.clock = clock
        self.probe = probe
        self.usable = self.online = 0
        self.last_nivcsw = -1
        self.last_woke = -1
        self.excused = 0
        self.floor_us = _WP_MIN_US
        self.machine = None
        self.configure(setting)

    def configure(self, setting):
        """Change the setting ("auto", "none" or microseconds); statistics restart. The
        runtime's policy passes it on to the policies of its other spin sites."""
        cdef int i
        mode, us = _wp_parse(setting)
        self.setting = setting
        self.mode = mode
        self.max_us = us
        self.budget = us
        self.avg_wait = 0.0
        self.misses = 0
        self.off_until = 0.0
        self.next_probe = 0.0
        self.next_cpus = 0.0
        self.oversub = False
        self.crowded = 0
        self.preempted = 0
        self.preempt_pause = self.preempt_until = 0.0
        self.calm = 0
        self.pause_why = _WPD_PREEMPT
        self.preempt_reason = ""
        self.why = 0
        for i in range(_WPD_N):
            self.denied[i] = 0
        self.last_probe = 0.0
        self.reason = "" if mode == _WP_AUTO else ("off" if mode == _WP_NONE else "fixed")
        self.spins = self.hits = self.total_misses = 0
        self.spun_us = 0.0
        if self is _wait_policy:
            for site in _wp_sites:
                (<WaitPolicy>site).configure(setting)

    cdef inline double _now(self) except? -1.0:
        if self.clock is None:
            return pyotp_monotonic_ms()
        return float(self.clock())

    cdef int _probe(self, double now) except -1:
        cdef object facts = _wp_read_machine() if self.probe is None else self.probe()
        if len(facts) == 5:
            usable, online, runnable, nivcsw, woke = facts
        else:
            usable, online, runnable, nivcsw = facts
            woke = None
        if now >= self.next_cpus or self.usable == 0:
            self.usable = int(usable) if usable else 1
            self.online = int(online) if online else self.usable
            self.next_cpus = now + _WP_CPUS_MS
        self.next_probe = now + _WP_PROBE_MS
        # preemptions per probe interval, however long ago the previous probe was
        cdef double span = max(now - self.last_probe, _WP_PROBE_MS) if self.last_probe else _WP_PROBE_MS
        cdef long switched = -1
        cdef long long raw, caused
        if nivcsw is not None and self.last_nivcsw >= 0:
            raw = int(nivcsw) - self.last_nivcsw
            caused = 0
            if woke is not None and self.last_woke >= 0:
                caused = min(raw, max(0, int(woke) - self.last_woke))
            self.excused = <long>caused
            switched = <long>((raw - caused) * _WP_PROBE_MS / span + 0.5)
        if woke is not None:
            self.last_woke = int(woke)
        self.last_probe = now
        # A single crowded sample is often a passing kernel thread, and a single interval
        # with many involuntary switches a burst of other work: each counts when the next
        # probe confirms it. A confirmed fact pauses the spin: 50 ms, doubled at each new
        # confirmation (up to 2 s) and forgotten after a second of calm probes. The pause
        # matters because both facts vanish once we stop spinning: beside a busy loop a
        # sleeping node is rarely preempted (its wake-ups excused), and with every core
        # busy our spinners are the runnable threads that crowd the machine (two busy
        # loops beside two spinning pool nodes: 4 runnable, 2 when they sleep). Without
        # it the spin came back every other probe and collapsed again: pool calls with
        # both cores busy spread 10-63 k calls/s from run to run.
        cdef bint crowded_now = runnable is not None and int(runnable) > self.online + 1
        cdef bint paused = now < self.preempt_until
        if paused:
            self.preempted = self.crowded = 0
        else:
            self.preempted = self.preempted + 1 if switched > _WP_NIVCSW_LIMIT else 0
            # clearly more runnable threads than cores (ours counted; one extra is often
            # the peer node itself or a passing kernel thread): a spin takes a core from
            # someone, often the very peer whose reply it waits for
            self.crowded = self.crowded + 1 if crowded_now else 0
            if self.preempted >= 2 or self.crowded >= 2:
                self.preempt_pause = _WP_PROBE_MS if self.preempt_pause == 0.0 else \
                    min(2.0 * self.preempt_pause, _WP_PREEMPT_PAUSE_MAX_MS)
                self.preempt_until = now + self.preempt_pause
                if self.crowded >= 2:
                    self.pause_why = _WPD_OVERSUB
                    self.preempt_reason = "oversubscribed (%d runnable, %d CPUs)" % (
                        int(runnable), self.online)
                else:
                    self.pause_why = _WPD_PREEMPT
                    self.preempt_reason = "preempted (%d involuntary switches per %d ms)" % (
                        switched, <int>_WP_PROBE_MS)
                self.preempted = self.crowded = self.calm = 0
                paused = True
            elif self.preempt_pause > 0.0:
                self.calm = 0 if (switched > _WP_NIVCSW_LIMIT or crowded_now) else self.calm + 1
                if self.calm >= _WP_CALM_PROBES:
                    self.preempt_pause = 0.0
                    self.calm = 0
        if self.usable <= 1:
            self.oversub, self.reason, self.why = True, "one usable CPU", _WPD_ONE_CPU
        elif paused:
            self.oversub, self.reason, self.why = True, self.preempt_reason, self.pause_why
        else:
            self.oversub, self.reason = False, ""
        if nivcsw is not None:
            self.last_nivcsw = int(nivcsw)
        return 0

    cdef inline long cores(self) noexcept:
        """How many threads may spin at once (the callers of a site count themselves
        against it): the usable CPUs under "auto", any number under a fixed setting."""
        return self.usable if self.mode == _WP_AUTO else 1 << 30

    cpdef double budget_us(self) except -1.0:
        """Microseconds the caller may spin now (0: sleep at once)."""
        return self._budget(True)

    cdef double _budget(self, bint count) except -1.0:
        cdef double now
        if self.mode != _WP_AUTO:
            return self.max_us
        now = self._now()
        if self.machine is not None:
            # a site of the runtime's policy: its machine facts (probed on the loop
            # thread only: RUSAGE_THREAD there is the spinner's own count)
            if self.loop_site and now >= self.machine.next_probe and now >= self.off_until:
                self.machine._probe(now)
            self.oversub, self.why = self.machine.oversub, self.machine.why
            self.usable = self.machine.usable
            if self.usable == 0:
                return 0.0          # no facts yet (the loop thread has not probed)
        elif now >= self.next_probe and now >= self.off_until:
            # (not while backing off: no spin would follow, and a probe costs a file
            # read and a getrusage: a paced trickle asked here after every read)
            self._probe(now)
        if self.oversub:
            if count:
                self.denied[self.why] += 1
            return 0.0
        if now < self.off_until:
            if count:
                self.denied[_WPD_BACKOFF] += 1
            return 0.0
        return self.budget

    cdef double polite_budget_us(self) except -1.0:
        """The budget of a spin that yields its core between checks (more spinning threads
        than cores: calls from other threads): the setting and the record of past spins
        count, not the machine's load or this thread's preemptions, since such a spin gives
        way to any other runnable thread (and our own calling threads are what crowd it)."""
        cdef double b = self._budget(False)
        if b > 0.0 or self.mode != _WP_AUTO or self.usable == 0:
            return b
        if self.usable <= 1:
            self.denied[_WPD_ONE_CPU] += 1
            return 0.0
        if self._now() < self.off_until:
            self.denied[_WPD_BACKOFF] += 1
            return 0.0
        return self.budget

    cpdef int record(self, bint got, double waited_us) except -1:
        """The outcome of one spin: data arrived (``got``) after ``waited_us``."""
        cdef double backoff
        self.spins += 1
        self.spun_us += waited_us
        if got:
            self.hits += 1
            self.misses = 0
            self.off_until = 0.0
            self.avg_wait = waited_us if self.avg_wait == 0.0 else \
                0.875 * self.avg_wait + 0.125 * waited_us
        else:
            self.total_misses += 1
            self.misses += 1
        if self.mode != _WP_AUTO:
            return 0
        if got:
            self.budget = min(self.max_us, max(self.floor_us, 4.0 * self.avg_wait))
        else:
            # A miss means the waits got longer: widen the budget back to the ceiling so a
            # slower peer is still caught. One miss among hits is a delayed reply (a GC, a
            # timer): spin on. From the second in a row each miss doubles a pause (1, 2,
            # 4 ... ms, at most 1 s); one success ends it.
            self.budget = self.max_us
            if self.misses >= 2:
                backoff = min(_WP_BACKOFF_MAX_MS, <double>(1 << min(self.misses - 2, 10)))
                self.off_until = self._now() + backoff
        return 0

    @property
    def spinning(self):
        """Whether a spin would be allowed now (``budget_us() > 0``)."""
        return self._budget(False) > 0.0

    def info(self):
        """The policy's state, for operators and tests:
        ``{"mode", "spinning", "reason", "budget_us", "usable_cpus", "spins", "hits",
        "misses", "spun_us", "denied", "excused"}``; ``denied`` counts the spins refused,
        by why (``one_cpu``, ``oversubscribed``, ``preempted``, ``backoff``); ``excused``:
        the involuntary switches of the last probe interval put down to wake-ups this
        process caused (not counted as preemption)."""
        cdef double b = self._budget(False)
        cdef str reason = self.reason
        if self.machine is not None:
            reason = self.machine.reason
        if self.mode == _WP_AUTO and b == 0.0 and not self.oversub:
            reason = "backing off after %d missed spins" % self.misses
        return {"mode": ("none", "fixed", "auto")[self.mode], "spinning": b > 0.0,
                "reason": reason, "budget_us": b, "usable_cpus": self.usable or None,
                "spins": self.spins, "hits": self.hits, "misses": self.total_misses,
                "spun_us": self.spun_us,
                "excused": (self.machine.excused if self.machine is not None else self.excused),
                "denied": {"one_cpu": self.denied[_WPD_ONE_CPU],
                           "oversubscribed": self.denied[_WPD_OVERSUB],
                           "preempted": self.denied[_WPD_PREEMPT],
                           "backoff": self.denied[_WPD_BACKOFF]}}


cdef tuple _wp_sites = ()
cdef WaitPolicy _wait_policy = WaitPolicy("auto")


cdef WaitPolicy _wp_site(bint loop_site):
    """A policy for another spin site: the runtime policy's setting and machine facts,
    its own record of waits (replies over a socket and answers to another thread's call
    take different times)."""
    global _wp_sites
    cdef WaitPolicy p = WaitPolicy(_wait_policy.setting)
    p.machine = _wait_policy
    p.loop_site = loop_site
    _wp_sites = _wp_sites + (p,)
    return p


# calls from other OS threads (scheduler.pyx, gen_server.pyx): the loop thread waiting
# for the next call of a thread it just answered, and a calling thread waiting for its
# answer
cdef WaitPolicy _tq_policy = _wp_site(True)
cdef WaitPolicy _tcall_policy = _wp_site(False)
# the shared-memory rings' readers (shm_ring.pyx): a ring's waits are its own (no
# socket, no system call), so they do not mix with the distribution sockets' record
cdef WaitPolicy _shm_policy = _wp_site(True)
# A ring's reply comes in 3-6 us, but now and then a GC or a longer dispatch delays one by
# 10-30 us; a reader that gave up then sleeps and costs a doorbell and a wake-up (tens of
# us, and a missed spin counts towards the back-off). With budgets of 4x the average (12-25
# us) a quiet 2-node pool made 0.9x the calls of the fixed 100 us spin; from 30 us up, as
# many (measured, docs/benchmarks.md "Pool nodes on a busy machine").
_shm_policy.floor_us = 30.0
# Calls from another thread: the same pattern (answers in a few us, now and then one late
# by a GC, and a reader that gave up pays a wake-up); tried with the ring's floor.
_tq_policy.floor_us = 30.0
_tcall_policy.floor_us = 30.0


def wait_policy():
    """The runtime's one waiting policy (configured by ``Node.start(busy_wait=...)``).

    >>> wait_policy().info()["mode"]
    'auto'
    """
    return _wait_policy


def wait_policies():
    """Every spin site's policy by name: ``"dist"`` (the runtime's, distribution reads),
    ``"thread_loop"`` (the loop thread waiting for the next call of a thread it just
    answered), ``"thread_caller"`` (a calling thread waiting for its answer) and ``"shm"``
    (a pool node's shared-memory ring reader waiting for more bytes). All follow the
    runtime's setting and its machine facts.

    >>> sorted(wait_policies())
    ['dist', 'shm', 'thread_caller', 'thread_loop']
    """
    return {"dist": _wait_policy, "thread_loop": _tq_policy, "thread_caller": _tcall_policy,
            "shm": _shm_policy}
