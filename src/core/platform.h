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
#endif

#if defined(_WIN32)
#define pyotp_thread_id() ((unsigned long)GetCurrentThreadId())
#else
#include <pthread.h>
#define pyotp_thread_id() ((unsigned long)(uintptr_t)pthread_self())
#endif

#endif /* PYOTP_PLATFORM_H */
