# dist_header.pyx: distribution header frames (DFLAG_DIST_HDR_ATOM_CACHE) and fragmented
# messages (DFLAG_FRAGMENTS) on one distribution connection (issue 14, item 8).
#
# Owns: the per-connection atom cache that a peer fills through the headers of its frames
# (131,68: NumberOfAtomCacheRefs, flag nibbles, the refs), the reassembly of fragmented
# messages (131,69 first fragment, 131,70 the following ones, per sequence id), and, on
# the send side, the cutting of large outgoing frames into fragments written between the
# small frames of other senders, so that one 100 MB message no longer holds up the rest
# of its connection. DistChannel (dist_channel.pyx) calls in at three marked hooks: where
# a frame's bytes start being parsed (_hot -> _dh_hot), where an outgoing frame is
# complete (_close -> _dh_divert) and after each write (_write -> _dh_pump).
# Invariants:
#  - Loop thread only, like the channel; the state lives in the channel's `hdr`.
#  - A header is parsed whole before its refs are used: an out-of-range ref, an empty
#    cache slot, a bad fragment order or an over-limit reassembly raises DistHeaderError,
#    and the channel closes that one connection with the reason (the node stays up).
#  - Memory a peer can make us hold for unfinished fragmented messages is bounded by
#    max_bytes (the node's max_frame_size) in total and by _DH_MAX_SEQS sequences.
#  - Cache slots hold owned references; an entry replaced while a frame's table still
#    points at it is kept alive in `graveyard` until the next header is parsed (decoding
#    runs no frame dispatch, so no table outlives that).
#  - Send side: frames of one sender (the running process, or the node) leave in the
#    order they were made: once a sender has a message in fragments, its later frames
#    queue behind it. Fragments are written only while the transport is not paused
#    (pause_writing/resume_writing), so small frames of other senders wait behind at most
#    about one fragment plus what the socket already holds.
#  - The atom cache is used on receive only: pyotp sends headers with zero cache refs
#    (legal; measured not to pay on loopback, see docs/interop.md).

from collections import deque as _dh_deque

cdef enum:
    _DH_CACHE = 2048          # OTP's atom cache: 8 segments of 256 slots
    _DH_FRAG = 65536 - 64     # message bytes per outgoing fragment: a fragment frame stays
                              # under the channel's 64 KiB big-frame threshold
    _DH_MAX_SEQS = 1024       # fragmented messages arriving at once on one connection
    _DH_BURST = 4             # fragments written per loop callback: reads, timers and the
                              # run queue get the loop between bursts
    _DH_HDR = 131
    _DH_NORMAL = 68
    _DH_FIRST = 69
    _DH_CONT = 70
    _DH_ATOM_CACHE_FLAG = 0x2000     # DFLAG_DIST_HDR_ATOM_CACHE
    _DH_FRAGMENTS_FLAG = 0x800000    # DFLAG_FRAGMENTS


class DistHeaderError(Exception):
    """A malformed distribution header or fragment: the connection is closed with it."""


cdef object _dh_true_atom = Atom("true")
cdef object _dh_false_atom = Atom("false")
cdef object _dh_nil_atom = Atom("nil")


@cython.final
@cython.auto_pickle(False)
cdef class _DhSeq:
    """One fragmented message being reassembled."""
    cdef bytearray buf        # b"p" + the message's bytes (a 'p' frame when they carry
                              # version bytes, as pyotp peers send them)
    cdef uint64_t next        # the fragment id expected next
    cdef tuple atoms          # the first fragment's atom cache refs
    cdef tuple mapped


@cython.final
@cython.auto_pickle(False)
cdef class _DhOut:
    """One outgoing message in fragments."""
    cdef object mv            # a view of the frame's bytearray (the channel's send buffer
                              # it was encoded in, taken over: no copy)
    cdef Py_ssize_t at        # the next fragment starts here in mv
    cdef Py_ssize_t end
    cdef uint64_t seq
    cdef uint64_t left        # fragments still to write (the next one's id)
    cdef bint started         # the first fragment (131,69) was written


@cython.final
@cython.auto_pickle(False)
cdef class _DistHdr:
    """Per-connection header state (internal: made by _dist_header_setup)."""
    cdef PyObject* atoms[_DH_CACHE]
    cdef PyObject* mapped[_DH_CACHE]
    cdef list graveyard
    cdef dict seqs                  # sequence id -> _DhSeq
    cdef Py_ssize_t held            # bytes held by unfinished sequences
    cdef Py_ssize_t max_bytes
    cdef bint fragments             # FRAGMENTS negotiated: big outgoing frames are cut
    cdef bint bare                  # outgoing frames are header frames (BEAM peers)
    cdef dict out                   # sender -> deque of _DhOut and whole frames (bytes)
    cdef list rr                    # senders with queued output, in round-robin order
    cdef uint64_t seq
    cdef bint paused                # the transport asked us to stop writing
    cdef object pump_handle
    cdef object err                 # the exception class for malformed input (the
                                    # Connection's ProtocolError: closes, logs the reason)
    cdef uint64_t refs_in, new_in, frames_in, frag_in, frag_msgs_in, frag_out, frag_msgs_out

    def __cinit__(self):
        cdef int i
        for i in range(_DH_CACHE):
            self.atoms[i] = NULL
            self.mapped[i] = NULL
        self.graveyard = []
        self.seqs = {}
        self.out = {}
        self.rr = []

    def __dealloc__(self):
        cdef int i
        for i in range(_DH_CACHE):
            Py_XDECREF(self.atoms[i])
            Py_XDECREF(self.mapped[i])
            self.atoms[i] = NULL
            self.mapped[i] = NULL

    def stats(self):
        """Counters of this connection's header traffic."""
        return {"cache_refs_in": self.refs_in, "cache_new_in": self.new_in,
                "header_frames_in": self.frames_in, "fragments_in": self.frag_in,
                "fragmented_msgs_in": self.frag_msgs_in, "fragments_out": self.frag_out,
                "fragmented_msgs_out": self.frag_msgs_out, "reassembling": len(self.seqs),
                "reassembly_bytes": self.held, "queued_senders": len(self.rr)}


def _dist_header_setup(DistChannel ch not None, uint64_t both, bint pyotp, Py_ssize_t max_bytes,
                       err=None):
    """The handshake is done (``both``: the flags both sides set): header frames and
    fragments as negotiated; ``err``: the exception class malformed input raises (default
    DistHeaderError). Towards BEAM every frame is a header frame (OTP refuses 'p'
    frames once the atom cache flag is set); towards pyotp small frames stay 'p' frames
    (a pyotp node reads both) and only fragments carry headers."""
    cdef _DistHdr h
    if not (both & _DH_ATOM_CACHE_FLAG):
        ch.hdr = None
        ch.bare = False
        return
    h = _DistHdr.__new__(_DistHdr)
    h.max_bytes = max_bytes
    h.err = DistHeaderError if err is None else err
    h.fragments = (both & _DH_FRAGMENTS_FLAG) != 0
    h.bare = not pyotp
    ch.hdr = h
    ch.bare = h.bare


def _dist_header_stats(DistChannel ch not None):
    """The header counters of a connection (None when headers were not negotiated), e.g.
    ``_dist_header_stats(conn.ch)["cache_refs_in"]``: atoms BEAM sent by cache ref."""
    return None if ch.hdr is None else (<_DistHdr>ch.hdr).stats()


def _dist_header_writing(DistChannel ch not None, bint resume):
    """The transport's pause_writing (resume False) / resume_writing (True)."""
    cdef _DistHdr h = ch.hdr
    if h is None:
        return
    h.paused = not resume
    if resume and h.rr:
        _dh_pump(ch)


# -- receiving -----------------------------------------------------------------------------

cdef Py_ssize_t _dh_refs(_DistHdr h, _EtfDec* d, PyObject** atoms, PyObject** mapped) except -1:
    """Parse NumberOfAtomCacheRefs, Flags and AtomCacheRefs at d.pos into atoms/mapped
    (borrowed from the cache); apply new entries. Returns the number of refs."""
    cdef Py_ssize_t n, i, fpos, slot, off
    cdef unsigned int nib, ln
    cdef bint long_atoms
    cdef object a, m
    if h.graveyard:
        h.graveyard.clear()
    _etf_need(d, 1, b"NumberOfAtomCacheRefs")
    n = d.buf[d.pos]
    d.pos += 1
    if n == 0:
        return 0
    _etf_need(d, n // 2 + 1, b"atom cache flags")
    fpos = d.pos
    d.pos += n // 2 + 1
    nib = d.buf[fpos + n // 2]
    long_atoms = ((nib >> 4) if n & 1 else nib) & 1
    for i in range(n):
        nib = d.buf[fpos + i // 2]
        nib = (nib >> 4) if i & 1 else (nib & 15)
        _etf_need(d, 1, b"atom cache index")
        slot = ((nib & 7) << 8) | d.buf[d.pos]
        d.pos += 1
        if nib & 8:
            off = d.pos
            if long_atoms:
                _etf_need(d, 2, b"atom length")
                ln = _etf_rd16(d.buf + d.pos)
                d.pos += 2
            else:
                _etf_need(d, 1, b"atom length")
                ln = d.buf[d.pos]
                d.pos += 1
            _etf_need(d, ln, b"atom text")
            a = _etf_make_atom(d, d.buf + d.pos, ln, False, off)
            d.pos += ln
            m = True if a == _dh_true_atom else False if a == _dh_false_atom \
                else None if a == _dh_nil_atom else a
            if h.atoms[slot] != NULL:
                h.graveyard.append(<object>h.atoms[slot])
                h.graveyard.append(<object>h.mapped[slot])
                Py_DECREF(<object>h.atoms[slot])
                Py_DECREF(<object>h.mapped[slot])
            Py_INCREF(a)
            Py_INCREF(m)
            h.atoms[slot] = <PyObject*>a
            h.mapped[slot] = <PyObject*>m
            h.new_in += 1
        elif h.atoms[slot] == NULL:
            raise h.err("atom cache reference %d names the empty cache slot %d"
                                  % (i, slot))
        atoms[i] = h.atoms[slot]
        mapped[i] = h.mapped[slot]
    h.refs_in += <uint64_t>n
    return n


cdef inline void _dh_dec_setup(DistChannel ch, _EtfDec* d, PyObject** atoms, PyObject** mapped,
                               Py_ssize_t n) noexcept:
    d.atoms = atoms if n else NULL
    d.mapped = mapped if n else NULL
    d.natoms = n
    d.bare = 1


cdef bint _dh_hot(DistChannel ch, bytearray buf, Py_ssize_t start, Py_ssize_t end) except -1:
    """Hook of DistChannel._hot for frames that are not 'p' frames: a 131,68 frame whose
    control message is a frequent one is dispatched here; anything else (fragments, rare
    operations, errors) returns False and goes to the checked path (_slow -> _dist_header_frame)."""
    cdef _DistHdr h = ch.hdr
    cdef const unsigned char* base = <const unsigned char*>_etf_ba_str(buf)
    cdef PyObject* atoms[256]
    cdef PyObject* mapped[256]
    cdef _EtfDec d
    cdef Py_ssize_t n
    if h is None or end - start < 3 or base[start] != _DH_HDR:
        return False
    if base[start + 1] == _DH_FIRST or base[start + 1] == _DH_CONT:
        if not h.fragments:
            return False
        _dh_fragment(ch, h, memoryview(buf)[start:end], end - start, base[start + 1] == _DH_FIRST)
        return True
    if base[start + 1] != _DH_NORMAL:
        return False
    _etf_dec_init(&d, base, end, start + 2, False, <PyObject*>buf)
    try:
        n = _dh_refs(h, &d, atoms, mapped)
    except Exception:
        return False              # the slow path parses it again and reports
    _dh_dec_setup(ch, &d, atoms, mapped, n)
    if ch._hot_dec(&d, end):
        h.frames_in += 1
        return True
    return False


def _dist_header_frame(DistChannel ch not None, mv):
    """A 131 frame the fast path did not take (DistChannel._slow's hook): a header frame
    with a rare operation, or a fragment. Raises DistHeaderError for malformed input."""
    cdef _DistHdr h = ch.hdr
    if mv is None:
        raise TypeError("_dist_header_frame: a frame's bytes, not None")
    cdef const unsigned char[::1] v = mv
    cdef Py_ssize_t end = v.shape[0]
    if h is None:
        raise DistHeaderError("distribution header frame (atom cache) was not negotiated")
    if end < 2 or v[0] != _DH_HDR:
        raise h.err("bad distribution header")
    if v[1] == _DH_NORMAL:
        _dh_normal(ch, h, mv, end)
    elif v[1] == _DH_FIRST or v[1] == _DH_CONT:
        if not h.fragments:
            raise h.err("fragmented message, but fragments were not negotiated")
        _dh_fragment(ch, h, mv, end, v[1] == _DH_FIRST)
    else:
        raise h.err("unknown distribution header type %d" % v[1])


cdef int _dh_normal(DistChannel ch, _DistHdr h, object mv, Py_ssize_t end) except -1:
    cdef PyObject* atoms[256]
    cdef PyObject* mapped[256]
    cdef Py_buffer view
    cdef _EtfDec d
    cdef Py_ssize_t n
    PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
    try:
        _etf_dec_init(&d, <const unsigned char*>view.buf, end, 2, False, <PyObject*>mv)
        try:
            n = _dh_refs(h, &d, atoms, mapped)
        except DecodeError as e:
            raise h.err("bad distribution header: %s" % e) from None
        h.frames_in += 1
        _dh_body(ch, mv, <const unsigned char*>view.buf, d.pos, end, atoms, mapped, n)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int _dh_body(DistChannel ch, object owner, const unsigned char* base, Py_ssize_t pos,
                  Py_ssize_t end, PyObject** atoms, PyObject** mapped, Py_ssize_t n) except -1:
    """A whole message after its header (no version bytes, atoms by cache ref): the fast
    dispatch if it takes it, else rebuilt as a 'p' frame for the channel's checked path (_slow),
    which validates and reports every operation."""
    cdef _EtfDec d
    cdef bytearray frame
    _etf_dec_init(&d, base, end, pos, False, <PyObject*>owner)
    _dh_dec_setup(ch, &d, atoms, mapped, n)
    if ch._hot_dec(&d, end):
        return 0
    _etf_dec_init(&d, base, end, pos, False, <PyObject*>owner)
    _dh_dec_setup(ch, &d, atoms, mapped, n)
    d.zmax = ch.max_inflated
    d.maxdepth = ch.max_depth
    # the payload is decoded without its python extension (a plain tuple), so re-encoding
    # it gives back the same bytes, which the slow path decodes as it would any 'p' frame
    try:
        ctrl = _etf_dec_versioned(&d)
        msg = _etf_dec_versioned(&d) if d.pos < end else _DC_NO_MSG
    except TermTooDeep as e:
        _dh_log_dropped(ch, e)
        return 0
    except DecodeError as e:
        raise (<_DistHdr>ch.hdr).err("bad term in a header frame: %s" % e) from None
    finally:
        Py_XDECREF(d.view)
        d.view = NULL
    if d.pos != end:
        raise (<_DistHdr>ch.hdr).err("%d bytes of garbage after the message" % (end - d.pos))
    frame = bytearray(b"p")
    _etf_append(frame, ctrl, False)
    if msg is not _DC_NO_MSG:
        _etf_append(frame, msg, False)
    ch._slow(frame, 0, len(frame))
    return 0


cdef int _dh_log_dropped(DistChannel ch, object e) except -1:
    import logging
    logging.getLogger("pyotp.dist").error(
        "pyotp dist: dropped a message from %s: %s (Node.start's max_term_depth=%d)",
        ch.peer, e, ch.max_depth)
    return 0


cdef int _dh_fragment(DistChannel ch, _DistHdr h, object mv, Py_ssize_t end, bint first) except -1:
    cdef PyObject* atoms[256]
    cdef PyObject* mapped[256]
    cdef Py_buffer view
    cdef _EtfDec d
    cdef Py_ssize_t n = 0, i, size
    cdef uint64_t seq, fid
    cdef _DhSeq s
    PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
    try:
        _etf_dec_init(&d, <const unsigned char*>view.buf, end, 2, False, <PyObject*>mv)
        try:
            _etf_need(&d, 16, b"fragment sequence and fragment ids")
            seq = _etf_rd64(d.buf + 2)
            fid = _etf_rd64(d.buf + 10)
            d.pos = 18
            if first:
                n = _dh_refs(h, &d, atoms, mapped)
        except DecodeError as e:
            raise h.err("bad fragment header: %s" % e) from None
        h.frag_in += 1
        size = end - d.pos
        if fid == 0:
            raise h.err("fragment id 0 in sequence %d" % seq)
        if first:
            if seq in h.seqs:
                raise h.err("fragmented message %d started twice" % seq)
            h.frag_msgs_in += 1
            if fid == 1:           # a message in one fragment
                _dh_body(ch, mv, <const unsigned char*>view.buf, d.pos, end, atoms, mapped, n)
                return 0
            if len(h.seqs) >= _DH_MAX_SEQS:
                raise h.err("more than %d fragmented messages at once" % _DH_MAX_SEQS)
            s = _DhSeq.__new__(_DhSeq)
            s.buf = bytearray(b"p")
            s.next = fid
            s.atoms = tuple([<object>atoms[i] for i in range(n)])
            s.mapped = tuple([<object>mapped[i] for i in range(n)])
            h.seqs[seq] = s
        else:
            s = h.seqs.get(seq)
            if s is None:
                raise h.err("fragment %d of sequence %d, which never started" % (fid, seq))
            if fid != s.next:
                raise h.err("fragment %d of sequence %d out of order (expected %d)"
                                      % (fid, seq, s.next))
        if h.held + size > h.max_bytes:
            raise h.err("fragmented messages would hold %d bytes, over max_frame_size (%d)"
                                  % (h.held + size, h.max_bytes))
        s.next = fid - 1
        s.buf += (<const char*>view.buf + d.pos)[:size]
        h.held += size
    finally:
        PyBuffer_Release(&view)
    if s.next == 0:
        del h.seqs[seq]
        h.held -= len(s.buf) - 1
        _dh_complete(ch, s)
    return 0


cdef int _dh_complete(DistChannel ch, _DhSeq s) except -1:
    """The last fragment arrived: dispatch the whole message."""
    cdef bytearray b = s.buf
    cdef PyObject* atoms[256]
    cdef PyObject* mapped[256]
    cdef Py_ssize_t i, n = len(s.atoms)
    if n == 0 and len(b) > 1 and (<const unsigned char*>_etf_ba_str(b))[1] == _ETF_VERSION:
        # version bytes: a 'p' frame as a pyotp peer makes it
        if not ch._hot(b, 0, len(b)):
            ch._slow(b, 0, len(b))
        return 0
    for i in range(n):
        atoms[i] = <PyObject*>s.atoms[i]
        mapped[i] = <PyObject*>s.mapped[i]
    _dh_body(ch, b, <const unsigned char*>_etf_ba_str(b), 1, len(b), atoms, mapped, n)
    return 0


# -- sending -------------------------------------------------------------------------------

cdef Py_ssize_t _dh_open(DistChannel ch) except -1:
    """DistChannel._open for header frames: length, then 131,68 with no cache refs."""
    cdef Py_ssize_t start = _etf_ba_size(ch.wbuf)
    cdef unsigned char* p
    _etf_ba_resize(ch.wbuf, start + 7)
    p = <unsigned char*>_etf_ba_str(ch.wbuf) + start
    p[0] = p[1] = p[2] = p[3] = 0
    p[4] = _DH_HDR
    p[5] = _DH_NORMAL
    p[6] = 0
    return start


cdef bint _dh_divert(DistChannel ch, Py_ssize_t start, Py_ssize_t n) except -1:
    """Hook of DistChannel._close: the frame at wbuf[start:] (``n`` bytes after its
    length) is complete. A large one leaves wbuf to go out in fragments; a frame of a
    sender whose earlier message is still in fragments queues behind it. True when the
    frame was taken out of wbuf."""
    cdef _DistHdr h = ch.hdr
    cdef object key
    cdef _DhOut o
    cdef bytearray w = ch.wbuf
    cdef Py_ssize_t hl
    cdef const unsigned char* p
    if not h.fragments or (n <= _DH_FRAG and not h.out):
        return False
    key = _current.pid if _current is not None else None
    q = h.out.get(key)
    if n <= _DH_FRAG and q is None:
        return False
    p = <const unsigned char*>_etf_ba_str(w) + start
    if n <= _DH_FRAG:
        _etf_wr32(<unsigned char*>p, <uint32_t>n)
        q.append(bytes(w[start:]))
        _etf_ba_resize(w, start)
    else:
        hl = 3 if p[4] == _DH_HDR else 1       # 131,68,0 or 'p'
        o = _DhOut.__new__(_DhOut)
        # the big frame keeps its buffer; the frames before it move to a new one
        ch.wbuf = bytearray(w[:start]) if start else bytearray()
        o.mv = memoryview(w)
        o.at = start + 4 + hl
        o.end = len(w)
        h.seq += 1
        o.seq = h.seq
        o.left = (o.end - o.at + _DH_FRAG - 1) // _DH_FRAG
        h.frag_msgs_out += 1
        if q is None:
            q = _dh_deque()
            h.out[key] = q
            h.rr.append(key)
        q.append(o)
    if h.pump_handle is None and ch.flush_cb is not None:
        h.pump_handle = ch.loop.call_soon(_dh_pump_soon, ch)
    return True


cdef bint _dh_behind(DistChannel ch) except -1:
    """Has the running process (or the node) output queued behind fragments? Its python-mode
    big frames, otherwise written at once without a copy, must then queue as well."""
    cdef _DistHdr h = ch.hdr
    return bool(h.out) and (_current.pid if _current is not None else None) in h.out


def _dh_pump_soon(DistChannel ch not None):
    cdef _DistHdr h = ch.hdr
    if h is not None:
        h.pump_handle = None
        ch.flush_now()


cdef int _dh_pump(DistChannel ch) except -1:
    """Hook at the end of DistChannel._write: write queued fragments (one per sender in
    turn) and the frames queued behind them, until the transport pauses us."""
    cdef _DistHdr h = ch.hdr
    cdef _DhOut o
    cdef bytearray f
    cdef Py_ssize_t k, a, b
    cdef bint first
    cdef int burst = 0
    if not ch.up or ch.transport is None:
        h.out.clear()
        h.rr.clear()
        return 0
    t = ch.transport
    while h.rr and not h.paused:
        if burst >= _DH_BURST:
            if h.pump_handle is None:
                h.pump_handle = ch.loop.call_soon(_dh_pump_soon, ch)
            return 0
        burst += 1
        k = 0
        while k < len(h.rr) and not h.paused:
            key = h.rr[k]
            q = h.out[key]
            item = q[0]
            if type(item) is bytes:
                q.popleft()
                t.write(item)
                ch.bytes_out += <uint64_t>len(<bytes>item)
            else:
                o = <_DhOut>item
                a = o.at
                b = min(a + _DH_FRAG, o.end)
                first = not o.started
                o.started = True
                f = bytearray(4 + 18 + (1 if first else 0))
                _etf_wr32(<unsigned char*>_etf_ba_str(f), <uint32_t>(len(f) - 4 + b - a))
                f[4] = _DH_HDR
                f[5] = _DH_FIRST if first else _DH_CONT
                _etf_wr64(<unsigned char*>_etf_ba_str(f) + 6, o.seq)
                _etf_wr64(<unsigned char*>_etf_ba_str(f) + 14, o.left)
                o.at = b
                o.left -= 1
                h.frag_out += 1
                if o.left == 0:
                    q.popleft()
                    ch.msgs_out += 1
                t.writelines((f, o.mv[a:b]))
                ch.bytes_out += <uint64_t>(len(f) + b - a)
            ch.wrote = True
            if not q:
                del h.out[key]
                del h.rr[k]
            else:
                k += 1
    return 0
