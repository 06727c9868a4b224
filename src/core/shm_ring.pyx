# shm_ring.pyx: the shared-memory byte rings between two pool nodes on one host.
#
# Owns: one end of a pair of single-producer/single-consumer byte rings in an anonymous
# shared segment (one ring per direction), the segment's creation (`shm_segment`: memfd on
# Linux, shm_open + immediate shm_unlink on macOS, a clear OSError elsewhere so the caller
# falls back to a socket), the copy in and out, the sleeping/waiting flags that decide
# when the other side must be woken, and the bounded spin of an idle reader. The wake-up
# itself is a byte on a socket both event loops watch (`bell`, rung and emptied here); the
# asyncio side (flow control, closing, connection_lost) belongs to the transport
# (pyotp/dist/shm_transport.py), which calls `drain` and `put` for the bytes: the read loop
# (ring -> protocol buffer -> spin -> sleep) and the write (copy, wake) run here without
# Python per batch, so a call's round trip pays no interpreted transport code.
# Layout of one ring (offsets in bytes; each field alone on its 64-byte cache line, so the
# producer's and the consumer's stores never share a line):
#     0 magic   64 head (producer)   128 tail (consumer)   192 consumer sleeping
#   256 producer waiting   320.. data (capacity bytes, a power of two)
# A segment holds two rings: ring 0 (side 0 writes) at 0, ring 1 at RING_HDR + capacity.
# Invariants:
#  - The peer is untrusted: it can write anything anywhere in the segment at any time.
#    Each side keeps its own index privately and only publishes it; the peer's index is
#    read once per operation and validated (0 <= head - tail <= capacity, never moving
#    backwards); a bad one raises ShmRingError and the transport closes that connection.
#    Bytes are copied out before anyone parses them; the capacity comes from our own
#    configuration, never from the segment, and the segment's size is checked on mapping.
#  - No lost wake-up: the consumer stores "sleeping" (seq_cst), re-reads head and sleeps
#    only if it did not move; the producer publishes head, then (seq_cst) takes the flag
#    with a CAS 1 -> 0 and rings only when it took it (one wake-up per sleep). The same
#    protocol, mirrored, wakes a producer waiting for space.
#  - Loop thread only per end; the spin releases the GIL and is bounded by the budget of
#    the runtime's WaitPolicy site "shm" (wait_policy.pyx); every bell rung is reported
#    to it (_wp_woke), since the peer it wakes may preempt this thread without any
#    contention.
#  - Doorbells are coalesced by the flags: a writer rings only when it took the reader's
#    sleeping flag, so a burst costs at most one wake-up and an awake reader none.

from libc.string cimport memcpy
from libc.stdint cimport uint64_t, uint32_t, int64_t
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE

cdef extern from "platform.h":
    int PYOTP_HAS_SHM
    int pyotp_shm_anon(size_t size) nogil
    void* pyotp_shm_map(int fd, size_t size) nogil
    int pyotp_shm_unmap(void* p, size_t size) nogil
    uint64_t pyotp_ld_acq_u64(uint64_t* p) nogil
    void pyotp_st_rel_u64(uint64_t* p, uint64_t v) nogil
    uint64_t pyotp_ld_sc_u64(uint64_t* p) nogil
    uint32_t pyotp_ld_sc_u32(uint32_t* p) nogil
    void pyotp_st_sc_u32(uint32_t* p, uint32_t v) nogil
    int pyotp_cas_sc_u32(uint32_t* p, uint32_t expected, uint32_t desired) nogil
    void pyotp_fence_sc() nogil
    int pyotp_spin_u64(uint64_t* idx, uint64_t seen, double max_us) nogil
    void pyotp_bell_ring(int fd) nogil
    long pyotp_bell_take(int fd) nogil

cdef extern from "errno.h":
    int errno

cdef enum:
    _RING_MAGIC_OFF = 0
    _RING_HEAD_OFF = 64
    _RING_TAIL_OFF = 128
    _RING_SLEEP_OFF = 192
    _RING_WAIT_OFF = 256
    _RING_HDR = 320
    _RING_MIN = 4096
    _RING_MAX = 1 << 30
    _RING_READ_CHUNK = 1 << 18      # what a plain (non-buffered) protocol gets at most at once

RING_HDR = _RING_HDR
shm_available = bool(PYOTP_HAS_SHM)


class ShmRingError(Exception):
    """The peer broke the ring's invariants (a bad index): close that connection."""


def _ring_check_capacity(capacity):
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError("ring capacity must be an int, got %r" % (capacity,))
    if not _RING_MIN <= capacity <= _RING_MAX or capacity & (capacity - 1):
        raise ValueError("ring capacity must be a power of two from %d to %d bytes, got %d"
                         % (_RING_MIN, _RING_MAX, capacity))


def shm_segment_size(capacity):
    """Bytes of a segment holding two rings of ``capacity`` bytes each."""
    _ring_check_capacity(capacity)
    return 2 * (_RING_HDR + capacity)


def shm_segment(capacity):
    """A new anonymous shared segment for a ring pair, as a file descriptor (close it when
    both ends have mapped it; the segment lives while a process maps or holds it).
    OSError (ENOSYS) where the platform has no anonymous shared memory.

    >>> fd = shm_segment(1 << 16); import os; os.close(fd)
    """
    cdef size_t size = shm_segment_size(capacity)
    cdef int fd
    with nogil:
        fd = pyotp_shm_anon(size)
    if fd < 0:
        import os
        e = errno
        raise OSError(e, "anonymous shared memory is not available here (%s)" % os.strerror(e))
    return fd


cdef class ShmRingPair:
    """One end (``side`` 0 or 1) of a ring pair in the segment ``fd`` (see the file header).
    Non-blocking: ``write`` takes what fits, ``readinto`` gives what is there.

    >>> import os
    >>> fd = shm_segment(1 << 16)
    >>> a = ShmRingPair(fd, 1 << 16, 0); b = ShmRingPair(fd, 1 << 16, 1); os.close(fd)
    >>> a.write(b"hello")
    5
    >>> buf = bytearray(8); b.readinto(buf)
    5
    >>> bytes(buf[:5])
    b'hello'
    >>> a.release(); b.release()
    """
    cdef char* base
    cdef size_t size
    cdef readonly uint64_t capacity
    cdef uint64_t mask
    cdef char* out                    # the ring we write (header, then data)
    cdef char* inp                    # the ring we read
    cdef uint64_t whead               # our producer index (private copy, published)
    cdef uint64_t wtail_seen          # the consumer's tail as last validated
    cdef uint64_t rtail               # our consumer index (private copy, published)
    cdef readonly int side
    cdef readonly int bell            # the doorbell socket's descriptor, -1 before attach_bell

    def __cinit__(self):
        self.base = NULL
        self.bell = -1

    def __init__(self, int fd, capacity, int side):
        import os
        cdef size_t size
        cdef void* p
        cdef char* r0
        cdef char* r1
        _ring_check_capacity(capacity)
        if side not in (0, 1):
            raise ValueError("side must be 0 or 1, got %r" % (side,))
        size = shm_segment_size(capacity)
        if os.fstat(fd).st_size < <Py_ssize_t>size:
            # mapping past the end would fault (SIGBUS) on first touch
            raise ShmRingError("shared segment is %d bytes, a ring pair of %d needs %d"
                               % (os.fstat(fd).st_size, capacity, size))
        with nogil:
            p = pyotp_shm_map(fd, size)
        if p == NULL:
            e = errno
            raise OSError(e, "cannot map the shared segment: %s" % os.strerror(e))
        self.base = <char*>p
        self.size = size
        self.capacity = capacity
        self.mask = capacity - 1
        self.side = side
        r0 = self.base
        r1 = self.base + _RING_HDR + self.capacity
        self.out = r0 if side == 0 else r1
        self.inp = r1 if side == 0 else r0
        # start from whatever the segment says (a fresh one is zero); validated from here
        self.whead = pyotp_ld_acq_u64(<uint64_t*>(self.out + _RING_HEAD_OFF))
        self.wtail_seen = self.whead
        self.rtail = pyotp_ld_acq_u64(<uint64_t*>(self.inp + _RING_TAIL_OFF))

    def __dealloc__(self):
        if self.base != NULL:
            pyotp_shm_unmap(self.base, self.size)
            self.base = NULL

    def release(self):
        """Unmap the segment (idempotent); the end is unusable afterwards."""
        self.bell = -1
        if self.base != NULL:
            pyotp_shm_unmap(self.base, self.size)
            self.base = NULL

    cdef inline int _live(self) except -1:
        if self.base == NULL:
            raise ValueError("ring pair released")
        return 0

    cdef uint64_t _free(self) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t t = pyotp_ld_acq_u64(<uint64_t*>(self.out + _RING_TAIL_OFF))
        if <int64_t>(t - self.wtail_seen) < 0 or self.whead - t > self.capacity:
            raise ShmRingError("peer published a bad tail index (%d, head %d)" % (t, self.whead))
        self.wtail_seen = t
        return self.capacity - (self.whead - t)

    cdef uint64_t _avail(self) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t h = pyotp_ld_acq_u64(<uint64_t*>(self.inp + _RING_HEAD_OFF))
        if h - self.rtail > self.capacity:
            raise ShmRingError("peer published a bad head index (%d, tail %d)" % (h, self.rtail))
        return h - self.rtail

    def writable(self):
        """Bytes that fit now."""
        self._live()
        return self._free()

    def readable(self):
        """Bytes waiting now (ShmRingError if the peer's index is bad)."""
        self._live()
        return self._avail()

    cdef uint64_t _put(self, const char* src, uint64_t n) except? 0xFFFFFFFFFFFFFFFF:
        """Copy as much of src[:n] as fits and publish it; the count."""
        cdef uint64_t free = self._free()
        cdef uint64_t at, first
        cdef char* data0 = self.out + _RING_HDR
        if n > free:
            n = free
        if n == 0:
            return 0
        at = self.whead & self.mask
        first = self.capacity - at
        if first > n:
            first = n
        memcpy(data0 + at, src, first)
        if n > first:
            memcpy(data0, src + first, n - first)
        self.whead += n
        pyotp_st_rel_u64(<uint64_t*>(self.out + _RING_HEAD_OFF), self.whead)
        return n

    cdef uint64_t _take(self, char* dst, uint64_t n) except? 0xFFFFFFFFFFFFFFFF:
        """Copy up to n waiting bytes to dst and publish the new tail; the count."""
        cdef uint64_t avail = self._avail()
        cdef uint64_t at, first
        cdef char* data0 = self.inp + _RING_HDR
        if n > avail:
            n = avail
        if n == 0:
            return 0
        at = self.rtail & self.mask
        first = self.capacity - at
        if first > n:
            first = n
        memcpy(dst, data0 + at, first)
        if n > first:
            memcpy(dst + first, data0, n - first)
        self.rtail += n
        pyotp_st_rel_u64(<uint64_t*>(self.inp + _RING_TAIL_OFF), self.rtail)
        return n

    cdef uint64_t _put_obj(self, object data) except? 0xFFFFFFFFFFFFFFFF:
        cdef Py_buffer view
        cdef uint64_t n
        if type(data) is bytearray:     # the channel's write buffer: no buffer export
            return self._put(PyByteArray_AS_STRING(data), <uint64_t>PyByteArray_GET_SIZE(data))
        if type(data) is bytes:
            return self._put(PyBytes_AS_STRING(data), <uint64_t>PyBytes_GET_SIZE(data))
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            n = self._put(<const char*>view.buf, <uint64_t>view.len)
        finally:
            PyBuffer_Release(&view)
        return n

    cdef uint64_t _take_obj(self, object buf) except? 0xFFFFFFFFFFFFFFFF:
        cdef Py_buffer view
        cdef uint64_t n
        PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
        try:
            n = self._take(<char*>view.buf, <uint64_t>view.len)
        finally:
            PyBuffer_Release(&view)
        return n

    def write(self, data):
        """Copy as much of ``data`` (a contiguous buffer) as fits; the count (0 when full)."""
        self._live()
        return self._put_obj(data)

    def readinto(self, buf):
        """Copy waiting bytes into ``buf`` (a writable buffer); the count (0: none)."""
        self._live()
        return self._take_obj(buf)

    # -- the transport's data path (one call per batch, no Python in between) --------------

    def attach_bell(self, int fd):
        """Use the connected stream socket ``fd`` (owned by the caller, non-blocking) as this
        end's doorbell for ``put``, ``drain`` and ``take_bells``."""
        self._live()
        if fd < 0:
            raise ValueError("doorbell descriptor must be >= 0, got %d" % fd)
        self.bell = fd

    cdef inline int _bell_live(self) except -1:
        self._live()
        if self.bell < 0:
            raise ValueError("no doorbell attached (attach_bell)")
        return 0

    cdef inline bint _took_flag(self, char* ring, int off) noexcept:
        pyotp_fence_sc()
        return pyotp_cas_sc_u32(<uint32_t*>(ring + off), 1, 0) != 0

    def put(self, data):
        """``write``, then ring the bell if the peer's reader sleeps: the count taken (the
        rest did not fit; ``wait_space`` before retrying)."""
        self._bell_live()
        cdef uint64_t n = self._put_obj(data)
        if n and self._took_flag(self.out, _RING_SLEEP_OFF):
            pyotp_bell_ring(self.bell)
            _wp_woke()
        return n

    def take_bells(self):
        """Empty the doorbell: False when the peer closed it or died (EOF), else True
        (OSError for another failure)."""
        self._bell_live()
        cdef long got = pyotp_bell_take(self.bell)
        if got == -2:
            import os
            e = errno
            raise OSError(e, os.strerror(e))
        return got != 0

    def drain(self, transport):
        """Hand the waiting bytes to ``transport._protocol`` (``get_buffer``/``buffer_updated``
        when ``transport._buffered``, else ``data_received``) while ``transport._reading``
        and not ``transport._lost``; after a read, spin for more as the runtime's waiting
        policy allows; then publish that this end sleeps (the peer's next ``put`` rings).
        Returns when asleep, stopped, or (``transport._peer_gone``) the ring is empty.
        Raises ShmRingError for a bad peer index, or what the protocol raised."""
        self._bell_live()
        cdef WaitPolicy policy = _shm_policy
        cdef uint64_t n, k
        cdef bint got_any = False
        cdef double budget, t0
        cdef int ok
        cdef uint64_t* head = <uint64_t*>(self.inp + _RING_HEAD_OFF)
        cdef uint64_t seen
        cdef uint32_t* sleeping = <uint32_t*>(self.inp + _RING_SLEEP_OFF)
        cdef object proto, buf
        while transport._reading and not transport._lost:
            if self.base == NULL:
                return          # released by a callback (the connection ended)
            n = self._avail()
            if n:
                got_any = True
                proto = transport._protocol
                if transport._buffered:
                    buf = proto.get_buffer(n)
                    k = self._take_obj(buf)
                    buf = None
                    if self._took_flag(self.inp, _RING_WAIT_OFF):
                        pyotp_bell_ring(self.bell)
                        _wp_woke()
                    proto.buffer_updated(k)
                else:
                    if n > _RING_READ_CHUNK:
                        n = _RING_READ_CHUNK
                    buf = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
                    k = self._take(PyBytes_AS_STRING(buf), n)
                    if k < n:
                        buf = buf[:k]
                    if self._took_flag(self.inp, _RING_WAIT_OFF):
                        pyotp_bell_ring(self.bell)
                        _wp_woke()
                    proto.data_received(buf)
                    buf = None
                continue
            if transport._peer_gone:
                return
            if got_any:
                got_any = False
                budget = policy.budget_us()
                if budget > 0.0:
                    seen = self.rtail
                    t0 = pyotp_monotonic_ms()
                    with nogil:
                        ok = pyotp_spin_u64(head, seen, budget)
                    policy.record(ok, (pyotp_monotonic_ms() - t0) * 1000.0)
                    if ok:
                        continue
            pyotp_st_sc_u32(sleeping, 1)
            if self._avail() == 0:
                return
            pyotp_st_sc_u32(sleeping, 0)

    def wake_reader(self):
        """After a write: True if the peer's reader was asleep and must be woken now (this
        call took its flag: exactly one wake-up per sleep)."""
        self._live()
        pyotp_fence_sc()
        return bool(pyotp_cas_sc_u32(<uint32_t*>(self.out + _RING_SLEEP_OFF), 1, 0))

    def wake_writer(self):
        """After a read: True if the peer's writer waits for space and must be woken now."""
        self._live()
        pyotp_fence_sc()
        return bool(pyotp_cas_sc_u32(<uint32_t*>(self.inp + _RING_WAIT_OFF), 1, 0))

    def sleep(self):
        """The reader goes idle: True if it may sleep (nothing arrived after it published
        that it sleeps), False if bytes are waiting (then it stays awake)."""
        self._live()
        cdef uint32_t* flag = <uint32_t*>(self.inp + _RING_SLEEP_OFF)
        pyotp_st_sc_u32(flag, 1)
        if self._avail() == 0:
            return True
        pyotp_st_sc_u32(flag, 0)
        return False

    def wait_space(self):
        """The writer has bytes that did not fit: True if it must wait for a wake-up (its
        flag is published), False if space appeared meanwhile."""
        self._live()
        cdef uint32_t* flag = <uint32_t*>(self.out + _RING_WAIT_OFF)
        pyotp_st_sc_u32(flag, 1)
        if self._free() == 0:
            return True
        pyotp_st_sc_u32(flag, 0)
        return False

    def spin(self, double max_us):
        """Spin (GIL released) up to ``max_us`` microseconds for bytes to arrive: True if
        they did."""
        self._live()
        cdef uint64_t* head = <uint64_t*>(self.inp + _RING_HEAD_OFF)
        cdef uint64_t seen = self.rtail
        cdef int got
        if pyotp_ld_acq_u64(head) != seen:
            return True
        with nogil:
            got = pyotp_spin_u64(head, seen, max_us)
        return bool(got)

    def _poke(self, which, value, inbound=False):
        """Tests only: overwrite a field ("head", "tail", "sleep", "wait") of the ring we
        write (or, ``inbound``, of the ring we read), as a hostile peer would."""
        self._live()
        cdef char* ring = self.inp if inbound else self.out
        off = {"head": _RING_HEAD_OFF, "tail": _RING_TAIL_OFF}.get(which)
        if off is not None:
            (<uint64_t*>(ring + <int>off))[0] = value
        else:
            (<uint32_t*>(ring + <int>{"sleep": _RING_SLEEP_OFF, "wait": _RING_WAIT_OFF}[which]))[0] = value
