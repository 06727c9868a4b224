/* platform.h: the only place pyotp's core touches compiler atomics and OS clocks.
 *
 * Owns: a Vyukov intrusive multi-producer single-consumer queue (used by every mailbox and
 * by the scheduler's run queue), a compare-and-swap on int flags, and a monotonic
 * millisecond clock.
 *
 * Invariants:
 *  - push() may be called from any OS thread at any time; pop() only by the queue's single
 *    consumer (the scheduler thread). No locks anywhere.
 *  - pop() can report PYOTP_Q_BUSY when a producer is between its exchange and its link
 *    store; the consumer must treat that as "not empty, try again soon", never as empty.
 *  - GCC/Clang use the __atomic builtins; MSVC uses the Interlocked intrinsics (full
 *    barriers, correct on x64 and ARM64).
 */
#ifndef PYOTP_PLATFORM_H
#define PYOTP_PLATFORM_H

#include <stdint.h>
#include <stddef.h>

/* Every Windows compiler (MSVC, clang-cl, MinGW) needs <windows.h> for the clock and the
 * thread id below, not only MSVC for the Interlocked intrinsics. */
#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static __forceinline void *pyotp_xchg_ptr(void *volatile *p, void *v) {
    return InterlockedExchangePointer((PVOID volatile *)p, v);
}
static __forceinline void *pyotp_load_ptr(void *volatile *p) {
    return InterlockedCompareExchangePointer((PVOID volatile *)p, NULL, NULL);
}
static __forceinline void pyotp_store_ptr(void *volatile *p, void *v) {
    (void)InterlockedExchangePointer((PVOID volatile *)p, v);
}
static __forceinline int pyotp_cas_int(volatile long *p, long expected, long desired) {
    return InterlockedCompareExchange(p, desired, expected) == expected;
}
static __forceinline void pyotp_store_int(volatile long *p, long v) {
    (void)InterlockedExchange(p, v);
}
static __forceinline long pyotp_load_int(volatile long *p) {
    return InterlockedCompareExchange(p, 0, 0);
}
static __forceinline long pyotp_add_int(volatile long *p, long d) {   /* the new value */
    return InterlockedExchangeAdd(p, d) + d;
}
#else
static inline void *pyotp_xchg_ptr(void *volatile *p, void *v) {
    return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL);
}
static inline void *pyotp_load_ptr(void *volatile *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void pyotp_store_ptr(void *volatile *p, void *v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline int pyotp_cas_int(volatile long *p, long expected, long desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}
static inline void pyotp_store_int(volatile long *p, long v) {
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}
static inline long pyotp_load_int(volatile long *p) {
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}
static inline long pyotp_add_int(volatile long *p, long d) {   /* the new value */
    return __atomic_add_fetch(p, d, __ATOMIC_ACQ_REL);
}
#endif

/* ---- intrusive MPSC queue (Dmitry Vyukov's algorithm) ---- */
typedef struct pyotp_qnode {
    struct pyotp_qnode *volatile next;
} pyotp_qnode;

typedef struct {
    pyotp_qnode *volatile head; /* producers exchange here */
    pyotp_qnode *tail;          /* consumer only */
    pyotp_qnode stub;
} pyotp_mpsc;

#define PYOTP_Q_EMPTY 0
#define PYOTP_Q_ITEM 1
#define PYOTP_Q_BUSY 2

static inline void pyotp_mpsc_init(pyotp_mpsc *q) {
    q->stub.next = NULL;
    q->head = &q->stub;
    q->tail = &q->stub;
}

static inline void pyotp_mpsc_push(pyotp_mpsc *q, pyotp_qnode *n) {
    pyotp_qnode *prev;
    n->next = NULL;
    prev = (pyotp_qnode *)pyotp_xchg_ptr((void *volatile *)&q->head, n);
    pyotp_store_ptr((void *volatile *)&prev->next, n);
}

/* Consumer side. Returns PYOTP_Q_ITEM and sets *out, or EMPTY, or BUSY. */
static inline int pyotp_mpsc_pop(pyotp_mpsc *q, pyotp_qnode **out) {
    pyotp_qnode *tail = q->tail;
    pyotp_qnode *next = (pyotp_qnode *)pyotp_load_ptr((void *volatile *)&tail->next);
    pyotp_qnode *head;
    if (tail == &q->stub) {
        if (next == NULL) {
            head = (pyotp_qnode *)pyotp_load_ptr((void *volatile *)&q->head);
            return head == tail ? PYOTP_Q_EMPTY : PYOTP_Q_BUSY;
        }
        q->tail = next;
        tail = next;
        next = (pyotp_qnode *)pyotp_load_ptr((void *volatile *)&tail->next);
    }
    if (next != NULL) {
        q->tail = next;
        *out = tail;
        return PYOTP_Q_ITEM;
    }
    head = (pyotp_qnode *)pyotp_load_ptr((void *volatile *)&q->head);
    if (tail != head)
        return PYOTP_Q_BUSY;
    pyotp_mpsc_push(q, &q->stub);
    next = (pyotp_qnode *)pyotp_load_ptr((void *volatile *)&tail->next);
    if (next != NULL) {
        q->tail = next;
        *out = tail;
        return PYOTP_Q_ITEM;
    }
    return PYOTP_Q_BUSY;
}

/* Non-destructive "is anything queued or being queued" check for the consumer. */
static inline int pyotp_mpsc_nonempty(pyotp_mpsc *q) {
    pyotp_qnode *tail = q->tail;
    if (tail != &q->stub)
        return 1;
    if (pyotp_load_ptr((void *volatile *)&tail->next) != NULL)
        return 1;
    return pyotp_load_ptr((void *volatile *)&q->head) != (void *)tail;
}

/* ---- monotonic clock in integer milliseconds (plus the fraction for ceil) ---- */
#if defined(_WIN32)
static inline double pyotp_monotonic_ms(void) {
    static LARGE_INTEGER freq;
    LARGE_INTEGER now;
    if (freq.QuadPart == 0)
        QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    return (double)now.QuadPart * 1000.0 / (double)freq.QuadPart;
}
#else
#include <time.h>
static inline double pyotp_monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}
#endif

/* One-shot kernel timer as a pollable fd (the scheduler's loop timer, see scheduler.pyx's
 * arm_timer): armed at an absolute time of the clock above, so it fires at that time, not
 * up to a millisecond early or late as an event loop's millisecond timers do, and it is
 * one persistent fd rather than a loop timer handle per arming. Re-arming (or disarming)
 * clears an expiry not yet read. Linux only: elsewhere open() fails and the scheduler
 * keeps using the loop's timers. */
#if defined(__linux__)
#include <sys/timerfd.h>
#include <unistd.h>
#include <string.h>
#include <math.h>
static inline int pyotp_timerfd_open(void) {
    return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
}
/* at_ms > 0: fire once at that pyotp_monotonic_ms() time; at_ms <= 0: disarm. */
static inline int pyotp_timerfd_set(int fd, double at_ms) {
    struct itimerspec its;
    long long ns;
    memset(&its, 0, sizeof its);
    if (at_ms <= 0)
        return timerfd_settime(fd, 0, &its, NULL);
    ns = (long long)ceil(at_ms * 1e6);
    its.it_value.tv_sec = (time_t)(ns / 1000000000LL);
    its.it_value.tv_nsec = (long)(ns % 1000000000LL);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;       /* all zero would disarm */
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL);
}
static inline int pyotp_timerfd_close(int fd) { return close(fd); }
#else
static inline int pyotp_timerfd_open(void) { return -1; }
static inline int pyotp_timerfd_set(int fd, double at_ms) { (void)fd; (void)at_ms; return -1; }
static inline int pyotp_timerfd_close(int fd) { (void)fd; return -1; }
#endif

/* A pause hint for spin loops (lets the sibling hyperthread run, saves power). */
#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_IX86))
#define pyotp_cpu_relax() _mm_pause()
#elif defined(__x86_64__) || defined(__i386__)
#define pyotp_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define pyotp_cpu_relax() __asm__ __volatile__("yield")
#else
#define pyotp_cpu_relax() ((void)0)
#endif

/* Busy-waiting on a socket (the distribution receive path, like BEAM's scheduler busy
 * wait): pyotp_spin_readable polls with a non-blocking MSG_PEEK for at most max_us
 * microseconds and returns 1 when bytes are waiting, 0 otherwise (time is up, EOF, an
 * error, or no support on this platform: the event loop then sees the socket as usual).
 * pyotp_recv_nb is a non-blocking recv: > 0 bytes read, else nothing was consumed that
 * the event loop would have needed. Both run without the GIL. */
#if defined(_WIN32)
#define PYOTP_CAN_SPIN 0    /* SOCKET handles are not ints: connections never spin */
static inline int pyotp_spin_readable(int fd, double max_us) { (void)fd; (void)max_us; return 0; }
static inline long pyotp_recv_nb(int fd, char *buf, size_t n) { (void)fd; (void)buf; (void)n; return -1; }
static inline long pyotp_send_nb(int fd, const char *buf, size_t n) { (void)fd; (void)buf; (void)n; return -1; }
#else
#define PYOTP_CAN_SPIN 1
#include <sys/types.h>
#include <sys/socket.h>
#include <errno.h>
static inline int pyotp_spin_readable(int fd, double max_us) {
    char c;
    double deadline = pyotp_monotonic_ms() + max_us / 1000.0;
    for (;;) {
        ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0)
            return 1;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return 0;
        if (pyotp_monotonic_ms() >= deadline)
            return 0;
        pyotp_cpu_relax();
    }
}
static inline long pyotp_recv_nb(int fd, char *buf, size_t n) {
    return (long)recv(fd, buf, n, MSG_DONTWAIT);
}
/* pyotp_send_nb: a non-blocking send of what the event loop's transport would write (the
 * caller checked that the transport holds nothing unsent): the bytes written, or -1 with
 * nothing written (the caller then hands everything to the transport, which reports the
 * error the usual way). No SIGPIPE: a peer that closed gives EPIPE. */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif
static inline long pyotp_send_nb(int fd, const char *buf, size_t n) {
    ssize_t k;
    do {
        k = send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (k < 0 && errno == EINTR);
    return (long)k;
}
#endif

/* ---- shared-memory byte rings (shm_ring.pyx) ----
 * pyotp_shm_anon: a new anonymous shared segment of `size` bytes as a descriptor that
 * has no name anywhere (Linux memfd_create; macOS shm_open then shm_unlink at once), so
 * it dies with the last process holding it, even on SIGKILL. -1 with errno set on
 * failure, ENOSYS where the platform has no such segment.
 * The ring indices are 64-bit counters in the segment: acquire/release for the data
 * handoff, sequentially consistent for the sleeping flags (a store-then-load pairing on
 * both sides, so no wake-up is lost). */
#if defined(_WIN32)
#include <errno.h>
#define PYOTP_HAS_SHM 0     /* no rings: pools fall back to sockets (never reached below) */
static inline int pyotp_shm_anon(size_t size) { (void)size; errno = ENOSYS; return -1; }
static inline void *pyotp_shm_map(int fd, size_t size) { (void)fd; (void)size; return NULL; }
static inline int pyotp_shm_unmap(void *p, size_t size) { (void)p; (void)size; return 0; }
static inline uint64_t pyotp_ld_acq_u64(volatile uint64_t *p) { return *p; }
static inline void pyotp_st_rel_u64(volatile uint64_t *p, uint64_t v) { *p = v; }
static inline uint64_t pyotp_ld_sc_u64(volatile uint64_t *p) { return *p; }
static inline uint32_t pyotp_ld_sc_u32(volatile uint32_t *p) { return *p; }
static inline void pyotp_st_sc_u32(volatile uint32_t *p, uint32_t v) { *p = v; }
static inline int pyotp_cas_sc_u32(volatile uint32_t *p, uint32_t e, uint32_t d) { if (*p != e) return 0; *p = d; return 1; }
static inline void pyotp_fence_sc(void) { }
static inline int pyotp_spin_u64(volatile uint64_t *i, uint64_t s, double m) { (void)m; return *i != s; }
static inline void pyotp_bell_ring(int fd) { (void)fd; }
static inline long pyotp_bell_take(int fd) { (void)fd; return 0; }
#else
#include <sys/mman.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#if (defined(__linux__) && defined(SYS_memfd_create)) || defined(__APPLE__)
#define PYOTP_HAS_SHM 1
#else
#define PYOTP_HAS_SHM 0
#endif
static inline int pyotp_shm_anon(size_t size) {
    int fd = -1;
#if defined(__linux__) && defined(SYS_memfd_create)
    fd = (int)syscall(SYS_memfd_create, "pyotp-ring", 1u /* MFD_CLOEXEC */);
#elif defined(__APPLE__)
    static unsigned counter;
    char name[48];
    for (int tries = 0; fd < 0 && tries < 16; tries++) {
        snprintf(name, sizeof name, "/pyotp.%d.%u", (int)getpid(),
                 __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
        fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0)
            shm_unlink(name);   /* nameless from here on: nothing can leak */
        else if (errno != EEXIST)
            return -1;
    }
#else
    (void)size;
    errno = ENOSYS;
    return -1;
#endif
    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
static inline void *pyotp_shm_map(int fd, size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}
static inline int pyotp_shm_unmap(void *p, size_t size) { return munmap(p, size); }
static inline uint64_t pyotp_ld_acq_u64(volatile uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void pyotp_st_rel_u64(volatile uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t pyotp_ld_sc_u64(volatile uint64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline uint32_t pyotp_ld_sc_u32(volatile uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void pyotp_st_sc_u32(volatile uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline int pyotp_cas_sc_u32(volatile uint32_t *p, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline void pyotp_fence_sc(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
/* Spin (without the GIL) until *idx differs from `seen` or max_us passed: 1 if it moved. */
static inline int pyotp_spin_u64(volatile uint64_t *idx, uint64_t seen, double max_us) {
    double deadline = pyotp_monotonic_ms() + max_us / 1000.0;
    unsigned n = 0;
    for (;;) {
        if (__atomic_load_n(idx, __ATOMIC_ACQUIRE) != seen)
            return 1;
        if ((++n & 63) == 0 && pyotp_monotonic_ms() >= deadline)
            return 0;
        pyotp_cpu_relax();
    }
}
/* The doorbell of a ring pair (a connected stream socket): one byte wakes the peer.
 * pyotp_bell_ring never blocks; a full socket means wake-ups are already waiting there
 * and a gone peer shows as EOF on our side, so errors are ignored. pyotp_bell_take
 * empties it: > 0 bytes taken, 0 at EOF (the peer closed or died), -1 nothing waiting,
 * -2 another error (errno set). */
#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif
static inline void pyotp_bell_ring(int fd) {
    char c = 1;
    (void)send(fd, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}
static inline long pyotp_bell_take(int fd) {
    char buf[256];
    long total = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            total += n;
            if ((size_t)n < sizeof buf)
                return total;
            continue;
        }
        if (n == 0)
            return total ? total : 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return total ? total : -1;
        return total ? total : -2;
    }
}
#endif

#if defined(_WIN32)
#define pyotp_thread_id() ((unsigned long)GetCurrentThreadId())
#else
#include <pthread.h>
#define pyotp_thread_id() ((unsigned long)(uintptr_t)pthread_self())
#endif

#endif /* PYOTP_PLATFORM_H */
