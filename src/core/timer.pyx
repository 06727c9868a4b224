# timer.pyx: the hierarchical timer wheel behind every timeout in pyotp.
#
# Owns: Timer (also the user-visible timer reference of send_after/start_timer) and
# TimerWheel.
# Invariants:
#  - Ticks are integer milliseconds of the monotonic clock since the wheel's epoch. A timer
#    inserted at time t with delay d gets expires = ceil(t + d) and fires only once the
#    wheel has advanced to floor(now) >= expires, so it never fires early.
#  - A linked timer sits in exactly one slot list (or the overflow or due list) and the
#    wheel holds one strong reference to it; `level < 0` means unlinked. Insert and cancel
#    are O(1): a doubly linked list splice plus a bitmap bit.
#  - Level l holds timers whose expiry differs from `cur` first in base-64 digit l, so
#    level-0 slot s holds exactly the timers expiring at tick (cur & ~63) | s, and a
#    level-l slot is re-distributed (cascaded) when `cur` reaches its first tick.
#    `advance` jumps from event to event with the occupancy bitmaps, never tick by tick.
#  - Firing happens only in advance(), on the scheduler thread; cancel() after firing is a
#    no-op returning False, so a cancelled timer's action can never run.

DEF WHEEL_BITS = 6
DEF WHEEL_SLOTS = 64
DEF WHEEL_LEVELS = 6          # 64**6 ms, about 2.2 years; longer timers wait in `overflow`
DEF LIST_DUE = WHEEL_LEVELS   # pseudo level for the due list
DEF LIST_OVERFLOW = WHEEL_LEVELS + 1

cdef extern from *:
    """
    #if defined(_MSC_VER) && !defined(__clang__)
    #include <intrin.h>
    static __inline int pyotp_ctz64(unsigned long long x) { unsigned long i; _BitScanForward64(&i, x); return (int)i; }
    static __inline int pyotp_bitlen64(unsigned long long x) { unsigned long i; if (!x) return 0; _BitScanReverse64(&i, x); return (int)i + 1; }
    #else
    static inline int pyotp_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    static inline int pyotp_bitlen64(unsigned long long x) { return x ? 64 - __builtin_clzll(x) : 0; }
    #endif
    """
    int pyotp_ctz64(uint64_t x) nogil
    int pyotp_bitlen64(uint64_t x) nogil

cdef enum:
    TK_SEND = 0        # send_after: deliver msg to dest
    TK_START = 1       # start_timer: deliver (\"timeout\", timer, msg) to dest
    TK_WAKE = 2        # a process's wait timeout (receive, call, sleep, start)
    TK_IDLE = 3        # a GenServer's idle timeout
    TK_CALLBACK = 4    # call fn(*args) (Python layers: gen_statem timeouts, ...)

cdef inline double _ceil_ms(double x) noexcept:
    cdef int64_t i = <int64_t>x
    return <double>(i + 1) if <double>i < x else <double>i


@cython.final
@cython.freelist(512)
cdef class Timer:
    """A running timer, as returned by ``send_after`` and ``start_timer``; pass it to
    ``cancel_timer`` or ``read_timer``.

    >>> t = pyotp.send_after(pyotp.self(), "tick", 0.5)
    >>> pyotp.cancel_timer(t)      # seconds that were left, or False
    0.5
    """
    cdef PyObject* next     # borrowed: the wheel owns one reference per linked timer
    cdef PyObject* prev
    cdef int64_t expires
    cdef double deadline_ms  # exact deadline; `expires` is its ceiling in ticks
    cdef int level
    cdef int slot
    cdef int kind
    cdef object dest        # TK_SEND/TK_START: destination; TK_CALLBACK: the callable
    cdef object msg         # TK_SEND/TK_START: message;     TK_CALLBACK: args tuple
    cdef Process proc       # TK_WAKE/TK_IDLE: the process to wake

    def __cinit__(self):
        self.level = -1

    @property
    def active(self):
        """True while the timer is armed (neither fired nor cancelled)."""
        return self.level >= 0

    def __repr__(self):
        return "#Ref<timer.%x>" % (<uintptr_t><void*>self)


from libc.stdint cimport uintptr_t

DEF NLISTS = WHEEL_LEVELS + 2


@cython.final
cdef class TimerWheel:
    cdef PyObject* heads[NLISTS][WHEEL_SLOTS]   # rows 0..5: levels; row 6: due; row 7: overflow
    cdef PyObject* tails[NLISTS][WHEEL_SLOTS]   # FIFO lists: equal expiries fire in insertion order
    cdef uint64_t occupied[WHEEL_LEVELS]
    cdef readonly int64_t cur
    cdef double epoch_ms
    cdef double last_now_ms   # the clock as last read by insert(): cancel() reports from it
    cdef readonly Py_ssize_t count

    def __cinit__(self):
        cdef int l, s
        self.epoch_ms = pyotp_monotonic_ms()
        self.cur = 0
        self.count = 0
        for l in range(NLISTS):
            for s in range(WHEEL_SLOTS):
                self.heads[l][s] = NULL
                self.tails[l][s] = NULL
        for l in range(WHEEL_LEVELS):
            self.occupied[l] = 0

    def __dealloc__(self):
        cdef int l, s
        cdef PyObject* p
        cdef PyObject* n
        for l in range(NLISTS):
            for s in range(WHEEL_SLOTS):
                p = self.heads[l][s]
                while p != NULL:
                    n = (<Timer>p).next
                    (<Timer>p).next = NULL
                    (<Timer>p).prev = NULL
                    (<Timer>p).level = -1
                    Py_DECREF(<object>p)
                    p = n

    cdef inline double now_ms(self) noexcept:
        return pyotp_monotonic_ms() - self.epoch_ms

    cdef inline int64_t now_tick(self) noexcept:
        return <int64_t>self.now_ms()

    cdef inline void _link(self, Timer t, int level, int slot) noexcept:
        cdef PyObject* tail = self.tails[level][slot]
        t.level = level
        t.slot = slot
        t.next = NULL
        t.prev = tail
        if tail == NULL:
            self.heads[level][slot] = <PyObject*>t
        else:
            (<Timer>tail).next = <PyObject*>t
        self.tails[level][slot] = <PyObject*>t
        if level < WHEEL_LEVELS:
            self.occupied[level] |= (<uint64_t>1) << slot

    cdef inline void _place(self, Timer t) noexcept:
        cdef uint64_t diff
        cdef int level
        if t.expires <= self.cur:
            self._link(t, LIST_DUE, 0)
            return
        diff = <uint64_t>(t.expires ^ self.cur)
        level = (pyotp_bitlen64(diff) - 1) // WHEEL_BITS
        if level >= WHEEL_LEVELS:
            self._link(t, LIST_OVERFLOW, 0)
            return
        self._link(t, level, <int>((t.expires >> (WHEEL_BITS * level)) & (WHEEL_SLOTS - 1)))

    cdef void insert(self, Timer t, double seconds) noexcept:
        """Arm t to expire `seconds` from now (negative counts as 0). The wheel keeps a
        reference until it fires or is cancelled."""
        cdef double deadline
        if t.level >= 0:
            self.cancel(t)
        if seconds < 0:
            seconds = 0
        self.last_now_ms = self.now_ms()
        deadline = self.last_now_ms + seconds * 1000.0
        if deadline > 9.0e15:
            deadline = 9.0e15
        t.deadline_ms = deadline
        t.expires = <int64_t>_ceil_ms(deadline)
        Py_INCREF(t)
        self._place(t)
        self.count += 1

    cdef bint cancel(self, Timer t) noexcept:
        """Unlink t. False when it was not armed (already fired or cancelled)."""
        cdef int level = t.level
        cdef int slot = t.slot
        if level < 0:
            return False
        PYOTP_ASSERT(level < NLISTS and self.count > 0)
        if t.prev == NULL:
            self.heads[level][slot] = t.next
        else:
            (<Timer>t.prev).next = t.next
        if t.next == NULL:
            self.tails[level][slot] = t.prev
        else:
            (<Timer>t.next).prev = t.prev
        if self.heads[level][slot] == NULL and level < WHEEL_LEVELS:
            self.occupied[level] &= ~((<uint64_t>1) << slot)
        t.next = NULL
        t.prev = NULL
        t.level = -1
        self.count -= 1
        Py_DECREF(t)
        return True

    cdef double remaining(self, Timer t, bint precise=True) noexcept:
        """Seconds until t fires (0 if due), or -1 when not armed. Imprecise reads use the
        clock of the last insert (cancel_timer's report: an upper bound, never used for
        firing, and it saves a clock read per cancel)."""
        if t.level < 0:
            return -1.0
        cdef double now = self.now_ms() if precise else self.last_now_ms
        cdef double r = (t.deadline_ms - now) / 1000.0
        return r if r > 0 else 0.0

    cdef int64_t next_event(self) noexcept:
        """The earliest tick at which advance() has work (a firing or a cascade), or -1."""
        cdef int64_t best = -1, tick
        cdef int l, digit, s
        cdef uint64_t mask
        if self.heads[LIST_DUE][0] != NULL:
            return self.cur
        for l in range(WHEEL_LEVELS):
            mask = self.occupied[l]
            if mask == 0:
                continue
            # an occupied slot's digit is always above cur's (see _place); masking the
            # rest strictly keeps advance() from spinning if that were ever violated
            digit = <int>((self.cur >> (WHEEL_BITS * l)) & (WHEEL_SLOTS - 1))
            mask &= ~(((<uint64_t>2) << digit) - 1)
            if mask == 0:
                continue
            s = pyotp_ctz64(mask)
            tick = ((self.cur >> (WHEEL_BITS * (l + 1))) << (WHEEL_BITS * (l + 1))) | ((<int64_t>s) << (WHEEL_BITS * l))
            if best < 0 or tick < best:
                best = tick
        if self.heads[LIST_OVERFLOW][0] != NULL:
            tick = ((self.cur >> (WHEEL_BITS * WHEEL_LEVELS)) + 1) << (WHEEL_BITS * WHEEL_LEVELS)
            if best < 0 or tick < best:
                best = tick
        return best

    cdef PyObject* _take_list(self, int level, int slot) noexcept:
        cdef PyObject* head = self.heads[level][slot]
        self.heads[level][slot] = NULL
        self.tails[level][slot] = NULL
        if level < WHEEL_LEVELS:
            self.occupied[level] &= ~((<uint64_t>1) << slot)
        return head

    cdef list advance(self, int64_t target):
        """Move time forward to `target` and return the timers that expired, in expiry
        order. Returned timers are unlinked (level -1); the list holds them."""
        cdef list fired = []
        cdef int64_t nxt
        cdef int l
        self._collect(self._take_list(LIST_DUE, 0), fired)
        while True:
            nxt = self.next_event()
            if nxt < 0 or nxt > target:
                break
            if nxt > self.cur:
                self.cur = nxt
            if (self.cur & ((<int64_t>1 << (WHEEL_BITS * WHEEL_LEVELS)) - 1)) == 0:
                self._cascade(self._take_list(LIST_OVERFLOW, 0))
            for l in range(WHEEL_LEVELS - 1, 0, -1):
                if (self.cur & ((<int64_t>1 << (WHEEL_BITS * l)) - 1)) == 0:
                    self._cascade(self._take_list(l, <int>((self.cur >> (WHEEL_BITS * l)) & (WHEEL_SLOTS - 1))))
            self._collect(self._take_list(0, <int>(self.cur & (WHEEL_SLOTS - 1))), fired)
            self._collect(self._take_list(LIST_DUE, 0), fired)
        if target > self.cur:
            self.cur = target
        return fired

    cdef void _cascade(self, PyObject* p) noexcept:
        # the wheel's reference moves with the timer: no refcount change
        cdef PyObject* n
        while p != NULL:
            n = (<Timer>p).next
            self._place(<Timer>p)
            p = n

    cdef void _collect(self, PyObject* p, list out):
        cdef PyObject* n
        cdef Timer t
        while p != NULL:
            t = <Timer>p
            n = t.next
            t.next = NULL
            t.prev = NULL
            t.level = -1
            self.count -= 1
            out.append(t)
            Py_DECREF(t)       # the list now holds it
            p = n
