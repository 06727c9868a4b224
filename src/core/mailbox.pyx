# mailbox.pyx: a process's message queue.
#
# Owns: the message node (Msg), the lock-free outer queue and the private inner queue.
# Invariants:
#  - Producers (any OS thread) only ever touch `q` via pyotp_mpsc_push. Everything else in a
#    Mailbox belongs to the scheduler thread (the single consumer).
#  - Messages are received in arrival order per sender; the inner queue holds, in order,
#    messages already taken out of `q` but not yet consumed (selective receive skipped
#    them). Consumption always takes the inner queue before `q`.
#  - `save` is the last inner node a pending selective receive examined; a scan resumes
#    after it, so a receive that waits examines each message once (Erlang's save pointer).
#    Any new receive resets it.
#  - A node owns one reference to each non-NULL object field.
#  - `limit` (max_mailbox, 0 = off) is written on the scheduler thread only. While it is
#    set, producers count their pushes into `outer` (atomically) and the consumer counts
#    what it takes out of `q`, so `outer + length` is the queue's length; approximate (a
#    push racing with setting the limit is not counted), never more than that: it only
#    decides when to kill or warn, on the scheduler thread (scheduler.pyx _mbx_check).
#  - `received` counts the messages taken out of `q` (by the consumer, so no atomics):
#    with the ones still in `q` (mb_length drains them first) it is the number of
#    messages that ever arrived (process_info's messages_received).

cdef enum:
    K_MSG = 0       # plain message: a
    K_CAST = 1      # GenServer cast: a = request
    K_CALL = 2      # GenServer call: a = request, b = from_ tuple (pid, ref)
    K_STOP = 3      # GenServer.stop: a = reason, b = from_ tuple of the stopper
    K_SYS = 4       # system request (pyotp.sys): a = OTP's request term (get_state, ...), b = from_

cdef struct Msg:
    pyotp_qnode link          # first member: a Msg* is a pyotp_qnode*
    int kind
    PyObject* a
    PyObject* b

cdef struct Mailbox:
    pyotp_mpsc q
    Msg* head
    Msg* tail
    Py_ssize_t length
    Msg* save
    long limit                # max_mailbox: 0 = off
    long outer                # while limit is set: messages in q (approximately)
    uint64_t received         # messages taken out of q so far (consumer side)


cdef inline Msg* msg_new(int kind, object a, object b) except NULL:
    cdef Msg* m = <Msg*>PyMem_Malloc(sizeof(Msg))
    if m == NULL:
        raise MemoryError()
    m.kind = kind
    Py_INCREF(a)
    m.a = <PyObject*>a
    if b is None:
        m.b = NULL
    else:
        Py_INCREF(b)
        m.b = <PyObject*>b
    return m


cdef inline void msg_free(Msg* m) noexcept:
    Py_XDECREF(m.a)
    Py_XDECREF(m.b)
    PyMem_Free(m)


cdef inline object msg_object(Msg* m):
    """The message as a receiving coroutine sees it (OTP's wire shapes for gen messages)."""
    cdef object a = <object>m.a
    if m.kind == K_MSG:
        return a
    if m.kind == K_CAST:
        return ("$gen_cast", a)
    if m.kind == K_CALL:
        return ("$gen_call", <object>m.b, a)
    if m.kind == K_STOP:
        return ("$gen_stop", a, None if m.b == NULL else <object>m.b)
    return ("system", <object>m.b, a)


cdef inline void mb_init(Mailbox* mb) noexcept:
    pyotp_mpsc_init(&mb.q)
    mb.head = NULL
    mb.tail = NULL
    mb.length = 0
    mb.save = NULL
    mb.limit = 0
    mb.outer = 0
    mb.received = 0


cdef inline void mb_push(Mailbox* mb, Msg* m) noexcept nogil:
    pyotp_mpsc_push(&mb.q, <pyotp_qnode*>m)


cdef inline void mb_append_inner(Mailbox* mb, Msg* m) noexcept:
    m.link.next = NULL
    if mb.tail == NULL:
        mb.head = m
    else:
        mb.tail.link.next = <pyotp_qnode*>m
    mb.tail = m
    mb.length += 1


cdef inline void mb_push_front(Mailbox* mb, Msg* m) noexcept:
    """Put m back before everything queued (a message taken but not consumed)."""
    m.link.next = <pyotp_qnode*>mb.head
    mb.head = m
    if mb.tail == NULL:
        mb.tail = m
    mb.length += 1


cdef inline int mb_drain(Mailbox* mb) noexcept:
    """Move everything from the lock-free queue to the inner queue. Returns 1 when a
    producer was caught mid-push (the caller must look again later)."""
    cdef pyotp_qnode* n
    cdef int r
    while True:
        r = pyotp_mpsc_pop(&mb.q, &n)
        if r == PYOTP_Q_ITEM:
            mb_append_inner(mb, <Msg*>n)
            mb.received += 1
            if mb.limit:
                pyotp_add_int(&mb.outer, -1)
        else:
            return r == PYOTP_Q_BUSY


cdef inline Msg* mb_pop(Mailbox* mb) noexcept:
    """Take the oldest message, or NULL."""
    cdef Msg* m = mb.head
    cdef pyotp_qnode* n
    if m != NULL:
        mb.head = <Msg*>m.link.next
        if mb.head == NULL:
            mb.tail = NULL
        mb.length -= 1
        PYOTP_ASSERT(mb.length >= 0 and (mb.head == NULL) == (mb.tail == NULL))
        if mb.save == m:
            mb.save = NULL
        return m
    if pyotp_mpsc_pop(&mb.q, &n) == PYOTP_Q_ITEM:
        mb.received += 1
        if mb.limit:
            pyotp_add_int(&mb.outer, -1)
        return <Msg*>n
    return NULL


cdef inline bint mb_nonempty(Mailbox* mb) noexcept:
    return mb.head != NULL or pyotp_mpsc_nonempty(&mb.q)


cdef inline bint mb_has_unseen(Mailbox* mb) noexcept:
    """Anything a waiting selective receive has not examined yet?"""
    if pyotp_mpsc_nonempty(&mb.q):
        return True
    if mb.save == NULL:
        return mb.head != NULL
    return mb.save.link.next != NULL


cdef inline void mb_unlink_after(Mailbox* mb, Msg* prev, Msg* m) noexcept:
    if prev == NULL:
        mb.head = <Msg*>m.link.next
    else:
        prev.link.next = m.link.next
    if mb.tail == m:
        mb.tail = prev
    mb.length -= 1


cdef Msg* mb_take_matching(Mailbox* mb, object match) except? NULL:
    """Selective receive: the first message (after the save position) for which
    match(message) is true, unlinked; NULL when none matches (save is then at the end)."""
    cdef Msg* prev
    cdef Msg* m
    mb_drain(mb)
    prev = mb.save
    m = mb.head if prev == NULL else <Msg*>prev.link.next
    while m != NULL:
        if match(msg_object(m)):
            mb_unlink_after(mb, prev, m)
            mb.save = NULL
            return m
        prev = m
        m = <Msg*>m.link.next
    mb.save = prev
    return NULL


cdef Py_ssize_t mb_length(Mailbox* mb) noexcept:
    mb_drain(mb)
    return mb.length


cdef void mb_clear(Mailbox* mb) noexcept:
    """Free every queued message (the owner is dead; nothing will read them)."""
    cdef Msg* m
    mb_drain(mb)
    m = mb.head
    while m != NULL:
        nxt = <Msg*>m.link.next
        msg_free(m)
        m = nxt
    mb.head = NULL
    mb.tail = NULL
    mb.length = 0
    mb.save = NULL


cdef list mb_snapshot(Mailbox* mb):
    """The queued messages in order (process_info, tests)."""
    cdef list out = []
    cdef Msg* m
    mb_drain(mb)
    m = mb.head
    while m != NULL:
        out.append(msg_object(m))
        m = <Msg*>m.link.next
    return out


cdef int mb_remove_first(Mailbox* mb, object match) except -1:
    """Remove the first queued message matching (used by demonitor(flush=True))."""
    cdef Msg* prev = NULL
    cdef Msg* m
    mb_drain(mb)
    m = mb.head
    while m != NULL:
        if match(msg_object(m)):
            if mb.save == m:
                mb.save = prev
            mb_unlink_after(mb, prev, m)
            msg_free(m)
            return 1
        prev = m
        m = <Msg*>m.link.next
    return 0
