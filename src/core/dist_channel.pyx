# dist_channel.pyx: the compiled data path of one distribution connection.
#
# Owns: everything per message once a connection is up. Receiving: complete frames are
# parsed out of the connection's receive buffer and the frequent control messages
# (SEND, SEND_SENDER, REG_SEND, MONITOR_P, DEMONITOR_P, and replies to remote calls) are
# dispatched here. Sending: frames are encoded straight into one bytearray that is
# written once per loop turn, or at once for a call or a reply (someone waits for it).
# The core's send/call/reply reach the channel of the destination node directly
# (`_dist_channels`), without a Python-level hop. Processes woken by a read run at the end
# of that read; a busy link may poll its socket briefly for the next read (busy wait).
# Invariants:
#  - Loop thread only. A node's channel is in `_dist_channels` exactly while its
#    connection is up (the kernel adds it in conn_up, after its duplicate checks; the
#    channel removes itself in stop(), when the connection closes or is aborted).
#  - The fast path never reports an error: any frame it does not fully understand (other
#    operations, a malformed term, an undecodable payload) goes, whole and untouched, to
#    the Python Connection (`conn._frame(view)`), which validates it and reports precisely.
#  - `wbuf` holds only complete frames: an encoding error leaves it as it was.
#  - Encoding a term can run Python code (pickle's __reduce__, __index__, finalizers), which
#    can call back into the node. While a frame is being encoded (`enc_at` >= 0) wbuf is
#    never replaced or shortened: a send on this channel raises RuntimeError (which fails
#    the outer send too), a flush writes only the complete frames before the one being
#    encoded (they are cut from wbuf once the encoding ends), and a frame whose connection
#    went down meanwhile is dropped with RuntimeError. The encoder pins wbuf (etf.pyx), so
#    nothing else can resize it either.
#  - Traffic counters (stats()): one add per read, per write and per frame, on the loop
#    thread. bytes_in counts every byte read once the connection is up (ticks too);
#    bytes_out every byte of frames written (ticks, written by the Connection, are not);
#    msgs_in/msgs_out count frames other than ticks.

from libc.string cimport memmove

# The control message operations (OTP's dist.h). Defined here only: connection.py and
# the tests read them from DIST_OPS.
cdef enum:
    _DC_LINK = 1
    _DC_SEND = 2
    _DC_EXIT = 3
    _DC_UNLINK = 4
    _DC_REG_SEND = 6
    _DC_GROUP_LEADER = 7
    _DC_EXIT2 = 8
    _DC_SEND_TT = 12
    _DC_EXIT_TT = 13
    _DC_REG_SEND_TT = 16
    _DC_EXIT2_TT = 18
    _DC_MONITOR_P = 19
    _DC_DEMONITOR_P = 20
    _DC_MONITOR_P_EXIT = 21
    _DC_SEND_SENDER = 22
    _DC_SEND_SENDER_TT = 23
    _DC_PAYLOAD_EXIT = 24
    _DC_PAYLOAD_EXIT_TT = 25
    _DC_PAYLOAD_EXIT2 = 26
    _DC_PAYLOAD_EXIT2_TT = 27
    _DC_PAYLOAD_MONITOR_P_EXIT = 28
    _DC_SPAWN_REQUEST = 29
    _DC_SPAWN_REQUEST_TT = 30
    _DC_SPAWN_REPLY = 31
    _DC_SPAWN_REPLY_TT = 32
    _DC_ALIAS_SEND = 33
    _DC_ALIAS_SEND_TT = 34
    _DC_UNLINK_ID = 35
    _DC_UNLINK_ID_ACK = 36

cdef enum:
    _DC_BIG = 1 << 16         # python-mode payloads holding a buffer this large go by iovec

DIST_OPS = {
    "LINK": _DC_LINK, "SEND": _DC_SEND, "EXIT": _DC_EXIT, "UNLINK": _DC_UNLINK,
    "REG_SEND": _DC_REG_SEND, "GROUP_LEADER": _DC_GROUP_LEADER, "EXIT2": _DC_EXIT2,
    "SEND_TT": _DC_SEND_TT, "EXIT_TT": _DC_EXIT_TT, "REG_SEND_TT": _DC_REG_SEND_TT,
    "EXIT2_TT": _DC_EXIT2_TT, "MONITOR_P": _DC_MONITOR_P, "DEMONITOR_P": _DC_DEMONITOR_P,
    "MONITOR_P_EXIT": _DC_MONITOR_P_EXIT, "SEND_SENDER": _DC_SEND_SENDER,
    "SEND_SENDER_TT": _DC_SEND_SENDER_TT, "PAYLOAD_EXIT": _DC_PAYLOAD_EXIT,
    "PAYLOAD_EXIT_TT": _DC_PAYLOAD_EXIT_TT, "PAYLOAD_EXIT2": _DC_PAYLOAD_EXIT2,
    "PAYLOAD_EXIT2_TT": _DC_PAYLOAD_EXIT2_TT, "PAYLOAD_MONITOR_P_EXIT": _DC_PAYLOAD_MONITOR_P_EXIT,
    "SPAWN_REQUEST": _DC_SPAWN_REQUEST, "SPAWN_REQUEST_TT": _DC_SPAWN_REQUEST_TT,
    "SPAWN_REPLY": _DC_SPAWN_REPLY, "SPAWN_REPLY_TT": _DC_SPAWN_REPLY_TT,
    "ALIAS_SEND": _DC_ALIAS_SEND, "ALIAS_SEND_TT": _DC_ALIAS_SEND_TT,
    "UNLINK_ID": _DC_UNLINK_ID, "UNLINK_ID_ACK": _DC_UNLINK_ID_ACK,
}

cdef object _DC_EMPTY = Atom("")
cdef object _DC_GEN_CALL = Atom("$gen_call")
cdef object _DC_ALIAS = Atom("alias")
cdef object _DC_NO_MSG = object()

_dist_no_msg = _DC_NO_MSG


def _dist_channel_up(node, DistChannel ch not None):
    """The connection to `node` completed its handshake: route to its channel."""
    _on_loop_thread(_need_sched(), "_dist_channel_up")
    if type(node) is not Atom and type(node) is not str:
        raise TypeError("_dist_channel_up: node must be a str, got %r" % (node,))
    _dist_channels[node] = ch


def _dist_channel_down(node, DistChannel ch not None):
    if _dist_channels.get(node) is ch:
        del _dist_channels[node]


cdef inline DistChannel _dc_for(object dest):
    """The channel for a remote pid or (name, node), when this thread may use it."""
    cdef object node
    if not _dist_channels or _sched is None or pyotp_thread_id() != _sched.loop_tid:
        return None
    if type(dest) is Pid:
        node = (<Pid>dest)._node
    elif type(dest) is Reference:
        node = (<Reference>dest)._node
    elif type(dest) is tuple and len(<tuple>dest) == 2:
        node = (<tuple>dest)[1]
    else:
        return None
    return <DistChannel>_dist_channels.get(node)


cdef int _remote_send(object to, object msg) except -1:
    """Send to a remote pid or (name, node)."""
    cdef DistChannel ch = _dc_for(to)
    if ch is None:
        _remote_hook("send", None, to, msg)
    elif type(to) is Pid:
        ch.send(to, msg)
    elif type(to) is Reference:
        ch.alias_send(to, msg)
    else:
        ch.send_named((<tuple>to)[0], msg)
    return 0


cdef inline object _dc_alias_of(object tag):
    """The alias in a reply tag [alias | Ref] (gen:call's since OTP 24), or None."""
    cdef ImproperList il
    if type(tag) is not ImproperList:
        return None
    il = <ImproperList>tag
    if len(il.items) == 1 and type(il.tail) is Reference and _is(il.items[0], "alias"):
        return il.tail
    return None


cdef int _remote_reply(object to, object msg) except -1:
    cdef DistChannel ch = _dc_for(to)
    if ch is None:
        _remote_hook("reply", None, to, msg)
    else:
        ch.reply(to, msg)
    return 0


cdef int _remote_call(object frm, object to, object ref, object request, object label) except -1:
    """A call (label '$gen_call') or a system request (label 'system', from pyotp.sys):
    gen:call's {Label, {Pid, Tag}, Request}."""
    cdef DistChannel ch = _dc_for(to)
    if ch is None:
        _remote_handler("call", frm, to, (ref, request, label))
    else:
        ch.call(frm, to, ref, request, label)
    return 0


cdef int _remote_call_gave_up(object caller, object ref, object server) except -1:
    """A call to a remote server ended without its reply (timeout, or the caller died):
    end its monitor at once, as OTP does. The entry stays, with node None, so that a late
    reply is still recognised and dropped (a decoded ref is not the caller's alias
    object); the tick removes it."""
    cdef DistChannel ch = _dc_for(server)
    cdef object entry
    if ch is None:
        return 0
    entry = ch.calls.get(ref)
    if entry is not None and (<tuple>entry)[2] is not None:
        ch.calls[ref] = ((<tuple>entry)[0], (<tuple>entry)[1], None)
        ch._frame((_DC_DEMONITOR_P, caller, _dc_wire_target(server), ref), _DC_NO_MSG)
    return 0


cdef bint _dc_maybe_big(object msg) except -1:
    """Does this python-mode payload (or one of its top-level elements) hold a large
    buffer (a numpy array, bytes, ...)? Those are written as chunks, without a copy."""
    cdef object t = type(msg)
    cdef object x, tx
    cdef Py_ssize_t i, n
    if t is tuple or t is list:
        n = len(msg)
        if n > 8:
            return False
        for i in range(n):
            x = (<tuple>msg)[i] if t is tuple else (<list>msg)[i]
            tx = type(x)
            if tx is int or tx is str or tx is Atom or tx is float or tx is Pid:
                continue
            if tx is bytes or tx is bytearray:
                if len(x) >= _DC_BIG:
                    return True
            elif getattr(x, "nbytes", 0) >= _DC_BIG:
                return True
        return False
    if t is int or t is str or t is Atom or t is float:
        return False
    if t is bytes or t is bytearray:
        return len(msg) >= _DC_BIG
    return getattr(msg, "nbytes", 0) >= _DC_BIG


cdef inline object _dc_wire_target(object dest):
    """A monitor/send target as it goes on the wire: a pid, or the name as an atom."""
    if type(dest) is Pid:
        return dest
    return Atom(dest[0])


def _dist_wire_target(dest):
    """A monitor/send target (a pid or ``(name, node)``) as it goes on the wire: the pid,
    or the name as an atom. The kernel's copy of the channel's rule."""
    if not (type(dest) is Pid or (type(dest) is tuple and len(<tuple>dest) == 2
                                  and isinstance((<tuple>dest)[0], str))):
        raise TypeError("_dist_wire_target: a pid or (name, node) with a str name, got %r" % (dest,))
    return _dc_wire_target(dest)


@cython.auto_pickle(False)     # its state is a live connection's: never rebuilt from data
cdef class DistChannel:
    """The per-message half of a distribution connection (internal: made and driven by
    ``pyotp.dist.connection.Connection``).

    >>> ch = DistChannel(conn, loop, kernel.calls, kernel.name_monitors, kernel.virtual, 1 << 18)
    >>> ch.start(transport, "b@127.0.0.1", 0, None, kernel.kernel_pid)
    """
    cdef public object conn           # the Python Connection: handshake, big and rare frames
    cdef public object transport
    cdef public object peer           # the peer's node name
    cdef public int python            # payloads: 0 plain ETF, 1 python extension with
                                      # pickles, 2 python extension without pickles
    cdef public object loads          # python mode: loads(payload, buffers) for pickles
    cdef public bint up
    cdef public bint alias            # both sides set DFLAG_ALIAS: ALIAS_SEND may be used
    cdef public Py_ssize_t received   # frames received, ticks included (tick check)
    cdef public bint wrote            # something was written since the last tick check
    cdef readonly bytearray rbuf      # the shared receive buffer; bytes [r, w) are unparsed
    cdef object rmv                   # a view of rbuf, kept: get_buffer hands out its slices
    cdef public Py_ssize_t r
    cdef public Py_ssize_t w
    cdef public object big_mv         # a big frame's own buffer while it arrives (Connection)
    cdef public Py_ssize_t big_fill
    cdef public Py_ssize_t max_inflated   # the largest compressed term (tag 80) accepted, inflated
    cdef public Py_ssize_t max_depth      # deeper terms are dropped by the slow path (TermTooDeep)
    cdef int fd                       # the plain TCP socket, or -1 (TLS, Windows: no busy wait)
    cdef double last_read             # when the previous read arrived (ms)
    cdef bint called                  # a call was written since this read arrived
    cdef object loop
    cdef bint feeding                 # inside _dispatch(): it writes what is queued when done
    cdef bytearray wbuf
    cdef object flush_handle
    cdef object flush_cb
    cdef dict calls                   # the kernel's: ref -> (caller, server, node or None)
    cdef dict name_monitors           # the kernel's: ref -> (name atom, node)
    cdef dict virtual                 # the kernel's: name -> handler(conn, msg)
    cdef object kernel_pid
    cdef dict reg_heads               # name -> encoded head of a REG_SEND frame
    cdef Py_ssize_t enc_at            # offset in wbuf of the frame being encoded, or -1
    cdef Py_ssize_t enc_sent          # wbuf[:enc_sent] was written while it was encoded
    cdef uint64_t bytes_in, bytes_out, msgs_in, msgs_out   # stats()
    cdef public object hdr            # header frames and fragments (dist_header.pyx), or None
    cdef bint bare                    # frames go out as 131,68 header frames (BEAM peers)

    def __init__(self, conn, loop, dict calls, dict name_monitors, dict virtual, Py_ssize_t bufsize):
        self.conn = conn
        self.fd = -1
        self.rbuf = bytearray(bufsize)
        self.rmv = memoryview(self.rbuf)
        self.loop = loop
        self.calls = calls
        self.name_monitors = name_monitors
        self.virtual = virtual
        self.wbuf = bytearray()
        self.flush_cb = self._flush
        self.reg_heads = {}
        self.max_inflated = 0xFFFFFFFF
        self.max_depth = _ETF_DEPTH
        self.enc_at = -1

    def stats(self):
        """This connection's traffic so far: ``{"bytes_in", "bytes_out", "msgs_in",
        "msgs_out"}`` (frames other than ticks; bytes_in includes ticks).

        >>> conn.ch.stats()["msgs_out"]
        3
        """
        return {"bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "msgs_in": self.msgs_in, "msgs_out": self.msgs_out}

    def release(self):
        """The connection is closed: drop the buffers and the references back to it (the
        connection and this channel must not form a cycle left to the cyclic GC)."""
        self.stop()
        self.conn = None
        self.transport = None
        self.flush_cb = None
        self.big_mv = None
        if self.rmv is not None:
            try:
                self.rmv.release()
            except BufferError:     # still exported: it goes with its last reference
                pass
            self.rmv = None
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.r = self.w = self.big_fill = 0
        self.reg_heads = {}
        self.hdr = None

    def resize(self, bytearray buf not None, Py_ssize_t size):
        """Resize ``buf`` in place (BufferError while something views it): a big frame's
        buffer grows as its bytes arrive."""
        if size < 0:
            raise ValueError("resize: size must be >= 0, got %d" % size)
        _etf_ba_resize(buf, size)

    def start(self, transport, peer, int python, loads, kernel_pid):
        """The handshake is done: frames may flow. ``python``: 0 plain ETF (Erlang
        peers), 1 python extension with pickles decoded by ``loads(payload, buffers)``
        (the node's restricted unpickler), 2 python extension without pickles (``loads``
        refuses them). ``kernel_pid`` (net_kernel) is the sender of REG_SENDs from the
        node itself."""
        if python < 0 or python > 2 or (python and not callable(loads)):
            raise ValueError("DistChannel.start: python must be 0, 1 or 2 (with a loads callable)")
        self.kernel_pid = kernel_pid
        self.transport = transport
        self.fd = -1
        if PYOTP_CAN_SPIN and transport.get_extra_info("ssl_object") is None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self.fd = sock.fileno()
        self.peer = peer
        self.python = python
        self.loads = loads
        self.up = True

    def stop(self):
        """The connection is going down: nothing more is written or dispatched."""
        self.up = False
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        if self.peer is not None:
            _dist_channel_down(self.peer, self)

    # -- sending -----------------------------------------------------------------------

    cdef Py_ssize_t _open(self) except -1:
        cdef Py_ssize_t start = _etf_ba_size(self.wbuf)
        cdef unsigned char* p
        if self.bare:
            return _dh_open(self)       # i14b: 131,68 header frame (dist_header.pyx)
        _etf_ba_resize(self.wbuf, start + 5)
        p = <unsigned char*>_etf_ba_str(self.wbuf) + start
        p[0] = 0
        p[1] = 0
        p[2] = 0
        p[3] = 0
        p[4] = 112
        return start

    cdef int _close(self, Py_ssize_t start) except -1:
        cdef Py_ssize_t n = _etf_ba_size(self.wbuf) - start - 4
        if n > <Py_ssize_t>0xFFFFFFFF:
            _etf_ba_resize(self.wbuf, start)
            raise ValueError("a distribution frame of %d bytes exceeds 4 GiB" % n)
        if self.hdr is not None and _dh_divert(self, start, n):
            return 0                    # i14b: goes out in fragments (dist_header.pyx)
        _etf_wr32(<unsigned char*>_etf_ba_str(self.wbuf) + start, <uint32_t>n)
        self.msgs_out += 1
        if self.flush_handle is None and not self.feeding and self.flush_cb is not None:
            self.flush_handle = self.loop.call_soon(self.flush_cb)
        return 0

    cdef int _reentered(self) except -1:
        raise RuntimeError(
            "re-entrant use of the connection to %s: code that ran while a message for it was "
            "being encoded (a __reduce__, __index__ or finalizer) sent on it; both sends fail"
            % (self.peer,))

    cdef inline Py_ssize_t _encoding(self) except -1:
        """A frame starts at the end of wbuf: refuse re-entry, mark it."""
        if self.enc_at >= 0:
            self._reentered()
        self.enc_at = _etf_ba_size(self.wbuf)
        return self.enc_at

    cdef inline Py_ssize_t _encoded(self, Py_ssize_t start, bint ok, bint was_up) except -1:
        """The frame at `start` is encoded (ok) or failed. Returns its start in wbuf."""
        self.enc_at = -1
        if ok and self.enc_sent == 0 and (self.up or not was_up):
            return start          # the usual case: nothing called back
        return self._encoded_slow(start, ok, was_up)

    cdef Py_ssize_t _encoded_slow(self, Py_ssize_t start, bint ok, bint was_up) except -1:
        """Cut what a flush during the encoding already wrote; drop the frame if it failed
        or its connection went down meanwhile (then raise)."""
        cdef Py_ssize_t sent = self.enc_sent
        self.enc_sent = 0
        if sent:
            del self.wbuf[:sent]
            start -= sent
        if not ok or (was_up and not self.up):
            if _etf_ba_size(self.wbuf) > start:
                _etf_ba_resize(self.wbuf, start)
            if ok:
                raise RuntimeError("the connection to %s closed while a message for it was "
                                   "being encoded (its encoder called back into the node)"
                                   % (self.peer,))
        return start

    cdef int _frame(self, object ctrl, object msg) except -1:
        """Queue 'p' + ctrl (+ msg unless _DC_NO_MSG)."""
        cdef bint was_up = self.up
        cdef Py_ssize_t start = self._encoding()
        try:
            self._open()
            _etf_append_v(self.wbuf, ctrl, False, not self.bare)
            if msg is not _DC_NO_MSG:
                _etf_append_v(self.wbuf, msg, self.python, not self.bare)
        except BaseException:
            self._encoded(start, False, was_up)
            raise
        return self._close(self._encoded(start, True, was_up))

    cdef int _big(self, tuple ctrl, object msg) except -1:
        """A python-mode payload holding large buffers: the Connection writes its chunks
        without copying them (pickling it can call back into the node as well)."""
        cdef bint was_up = self.up
        cdef Py_ssize_t start
        if self.hdr is not None and _dh_behind(self):
            return self._frame(ctrl, msg)   # i14b: after its sender's fragments (dist_header.pyx)
        start = self._encoding()
        try:
            n = self.conn._write_big(ctrl, msg)
        except BaseException:
            self._encoded(start, False, was_up)
            raise
        self._encoded(start, True, was_up)
        self.msgs_out += 1
        if type(n) is int:
            self.bytes_out += <uint64_t>n
        return 0

    def control(self, ctrl, msg=_DC_NO_MSG):
        """Queue a frame: 'p' + control term (+ payload term). Raises, queueing nothing,
        when a term cannot be encoded."""
        self._frame(ctrl, msg)

    cpdef send(self, to, msg):
        """SEND ``msg`` to the remote pid ``to``."""
        if self.python == _ETF_PY_ON and _dc_maybe_big(msg):
            self._big((_DC_SEND, _DC_EMPTY, to), msg)
        else:
            self._frame((_DC_SEND, _DC_EMPTY, to), msg)

    cpdef reg_send(self, frm, name, msg):
        """REG_SEND from the local pid ``frm`` to the peer's registered ``name``."""
        cdef tuple ctrl = (_DC_REG_SEND, frm, _DC_EMPTY, Atom(name))
        if self.python == _ETF_PY_ON and _dc_maybe_big(msg):
            self._big(ctrl, msg)
        else:
            self._frame(ctrl, msg)

    cpdef send_named(self, name, msg):
        """REG_SEND from the node (``pyotp.send((name, node), msg)``): the frame head is
        encoded once per name."""
        cdef object head = self.reg_heads.get(name)
        cdef bytearray hb
        cdef Py_ssize_t start
        if self.python == _ETF_PY_ON and _dc_maybe_big(msg):
            self.reg_send(self.kernel_pid, name, msg)
            return
        if head is None:
            hb = bytearray(b"\x00\x00\x00\x00\x83D\x00" if self.bare else b"\x00\x00\x00\x00p")
            _etf_append_v(hb, (_DC_REG_SEND, self.kernel_pid, _DC_EMPTY, Atom(name)), False, not self.bare)
            head = bytes(hb)
            if len(self.reg_heads) > 1024:
                self.reg_heads.clear()
            self.reg_heads[name] = head
        cdef bint was_up = self.up
        start = self._encoding()
        try:
            self.wbuf += <bytes>head
            _etf_append_v(self.wbuf, msg, self.python, not self.bare)
        except BaseException:
            self._encoded(start, False, was_up)
            raise
        self._close(self._encoded(start, True, was_up))

    cpdef call(self, frm, to, ref, request, label=_DC_GEN_CALL):
        """A GenServer call from local ``frm`` to the remote server ``to`` (pid or
        (name, node)): MONITOR_P then the '$gen_call' (or another gen:call label:
        'system'), written at once. The reply and a DOWN are matched by ``ref`` in the
        kernel's call table."""
        cdef Py_ssize_t mark = _etf_ba_size(self.wbuf)
        self.calls[ref] = (frm, to, self.peer)
        try:
            self._frame((_DC_MONITOR_P, frm, _dc_wire_target(to), ref), _DC_NO_MSG)
            # with aliases, the tag is OTP 24's [alias | Ref]: the peer replies to the
            # alias (ALIAS_SEND), which is dropped once the caller gave up
            msg = (label, (frm, ImproperList((_DC_ALIAS,), ref) if self.alias else ref), request)
            if type(to) is Pid:
                self.send(to, msg)
            else:
                self.reg_send(frm, to[0], msg)
        except BaseException:
            if _etf_ba_size(self.wbuf) > mark:
                _etf_ba_resize(self.wbuf, mark)
            self.calls.pop(ref, None)
            raise
        self.called = True
        self.flush_now()

    cpdef reply(self, to, msg):
        """A GenServer reply to a remote caller: written at once. A reply tagged
        [alias | Ref] goes to the alias (ALIAS_SEND), as gen:reply does, so a caller that
        gave up (its alias is gone) never sees it."""
        cdef object a = _dc_alias_of((<tuple>msg)[0]) if self.alias and type(msg) is tuple \
            and len(<tuple>msg) == 2 else None
        if a is not None:
            self.alias_send(a, msg)
        else:
            self.send(to, msg)
        self.flush_now()

    cpdef alias_send(self, ref, msg):
        """ALIAS_SEND ``msg`` to the peer's alias ``ref`` (from the running process, or
        the node). Dropped when the peer did not negotiate aliases: it could not route it."""
        if not self.alias:
            return
        frm = _current.pid if _current is not None else self.kernel_pid
        self._frame((_DC_ALIAS_SEND, frm, ref), msg)

    def _flush(self):
        self.flush_handle = None
        self._write()

    cpdef flush_now(self):
        """Write what is queued now instead of at the end of the loop turn."""
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        self._write()

    cdef int _write(self) except -1:
        cdef bytearray b = self.wbuf
        if self.enc_at >= 0:
            # a flush from inside an encoder: the complete frames before the one being
            # encoded go now (closing the connection must not lose them), in a copy
            if self.enc_at > self.enc_sent and self.up and self.transport is not None:
                self.transport.write(b[self.enc_sent:self.enc_at])
                self.bytes_out += <uint64_t>(self.enc_at - self.enc_sent)
                self.enc_sent = self.enc_at
                self.wrote = True
            return 0
        if _etf_ba_size(b) and self.up and self.transport is not None:
            self.wbuf = bytearray()
            self.transport.write(b)
            self.bytes_out += <uint64_t>_etf_ba_size(b)
            self.wrote = True
        if self.hdr is not None and (<_DistHdr>self.hdr).rr:
            _dh_pump(self)              # i14b: fragments between the small frames
        return 0

    # -- receiving ---------------------------------------------------------------------

    def get_buffer(self, Py_ssize_t sizehint):
        """asyncio.BufferedProtocol.get_buffer: where the transport writes the next read."""
        if self.big_mv is not None:
            if self.big_fill == len(self.big_mv):
                self.conn._grow_big()      # full, the frame is not: it grows as bytes come
            return self.big_mv[self.big_fill:]
        self._check_offsets()
        if _etf_ba_size(self.rbuf) - self.w < 8192:
            self._compact()
        return self.rmv[self.w:]

    cdef void _compact(self) noexcept:
        """Move the unparsed bytes [r, w) to the start of the receive buffer."""
        cdef char* p
        if self.r:
            p = _etf_ba_str(self.rbuf)
            memmove(p, p + self.r, self.w - self.r)
            self.w -= self.r
            self.r = 0

    def buffer_updated(self, Py_ssize_t nbytes):
        """asyncio.BufferedProtocol.buffer_updated: ``nbytes`` more bytes arrived."""
        cdef Py_ssize_t frames
        if self.big_mv is not None or not self.up:
            if self.big_mv is None:         # the handshake: not counted
                self.conn._updated(nbytes)
                return
            self.bytes_in += <uint64_t>nbytes
            frames = self.received
            self.conn._updated(nbytes)
            self.msgs_in += <uint64_t>(self.received - frames)    # the big frame completed
            return
        self.bytes_in += <uint64_t>nbytes
        cdef double now = pyotp_monotonic_ms()
        cdef bint busy = (now - self.last_read) * 1000.0 < 4.0 * _wait_policy.max_us
        self.last_read = now
        self.called = False
        self.w += nbytes
        try:
            self._feed()
            if self.fd >= 0 and _wait_policy.mode != _WP_NONE:
                self._spin(busy)
        except BaseException as e:
            self.conn._failed(e)

    cdef int _spin(self, bint busy) except -1:
        """Busy-wait (briefly, without the GIL) for the next read when it is likely to
        come at once: a call was just written on this channel (its reply is due), or
        reads arrive in quick succession. Sleeping in the event loop and being woken
        costs more than the wait itself at these gaps; BEAM's schedulers spin likewise
        before they sleep. Nothing else is runnable meanwhile (the run queue is empty),
        and after 64 reads or 2 ms here the event loop gets its turn back (timers, other
        connections)."""
        cdef int rounds, ok, fd = self.fd
        cdef double spin, t0
        cdef double until = pyotp_monotonic_ms() + 2.0
        cdef long got
        cdef Scheduler s
        for rounds in range(64):
            s = _sched
            if not (busy or self.called) or not self.up or self.big_mv is not None \
                    or s is None or pyotp_mpsc_nonempty(&s.rq) or pyotp_monotonic_ms() > until:
                return 0
            spin = _wait_policy.budget_us()     # the runtime's policy: 0 when it does not pay
            if spin <= 0.0:
                return 0
            t0 = pyotp_monotonic_ms()
            with nogil:
                ok = pyotp_spin_readable(fd, spin)
            _wait_policy.record(ok, (pyotp_monotonic_ms() - t0) * 1000.0)
            if not ok:
                return 0
            self._check_offsets()
            self._compact()
            if _etf_ba_size(self.rbuf) - self.w < 4096:
                return 0            # a large frame is building up: the loop reads it
            got = pyotp_recv_nb(fd, _etf_ba_str(self.rbuf) + self.w, _etf_ba_size(self.rbuf) - self.w)
            if got <= 0:
                return 0
            self.last_read = pyotp_monotonic_ms()
            busy = True
            self.called = False
            self.w += got
            self.bytes_in += <uint64_t>got
            self._feed()
        return 0

    def resume(self):
        """The handshake just completed: dispatch the frames already received."""
        self._feed()

    cdef int _check_offsets(self) except -1:
        # r and w are public (the Connection parses the handshake with them): offsets
        # that do not fit the buffer are refused rather than read or written through
        if not (0 <= self.r <= self.w <= _etf_ba_size(self.rbuf)):
            raise ValueError("DistChannel: receive offsets r=%d, w=%d do not fit the %d-byte buffer"
                             % (self.r, self.w, _etf_ba_size(self.rbuf)))
        return 0

    cdef int _feed(self) except -1:
        self._check_offsets()
        self.r = self._dispatch(self.r, self.w)
        if self.r == self.w:
            self.r = self.w = 0
        elif self.up and self.w - self.r >= 4 and \
                _etf_rd32(<const unsigned char*>_etf_ba_str(self.rbuf) + self.r) >= _DC_BIG << self.bare:
            # (i14b: BEAM's 64 KiB fragments stay in rbuf; they have no zero-copy buffers)
            self.conn._start_big()
        return 0

    cdef Py_ssize_t _dispatch(self, Py_ssize_t r, Py_ssize_t w) except -1:
        """Dispatch the complete frames in ``rbuf[r:w]``; return the offset of the first
        byte not consumed (the start of an incomplete frame). Stops early when the
        channel goes down."""
        global _etf_oob_copy
        cdef bytearray buf = self.rbuf
        cdef uint32_t n
        cdef Py_ssize_t end
        cdef Py_ssize_t count = 0, ticks = 0
        cdef Scheduler s = _sched
        # Processes woken by these frames run right after them, in this same callback
        # (as timers do): claiming the scheduler's wakeup saves a loop iteration per read.
        cdef bint claimed = s is not None and pyotp_cas_int(&s.wake_pending, 0, 1)
        cdef bint oob_copy = _etf_oob_copy
        self.feeding = True
        _etf_oob_copy = True      # rbuf is reused: decoded out-of-band buffers are copies
        try:
            while w - r >= 4 and self.up:
                n = _etf_rd32(<const unsigned char*>_etf_ba_str(buf) + r)
                if n == 0:
                    r += 4
                    count += 1
                    ticks += 1
                    continue
                end = r + 4 + <Py_ssize_t>n
                if end > w:
                    break
                count += 1
                if not self._hot(buf, r + 4, end):
                    self.r = end      # the slow path may raise: the frame is consumed
                    self.conn._frame(self.rmv[r + 4:end])
                r = end
        finally:
            _etf_oob_copy = oob_copy
            self.received += count
            self.msgs_in += <uint64_t>(count - ticks)
            try:
                if claimed:
                    s.run_turn()
            finally:
                self.feeding = False
                self._write()     # what this read (and the processes it woke) queued here
        return r

    cdef bint _hot(self, bytearray buf, Py_ssize_t start, Py_ssize_t end) except -1:
        """Dispatch one frame if it is a frequent, well-formed one; False otherwise."""
        cdef const unsigned char* base = <const unsigned char*>_etf_ba_str(buf)
        cdef _EtfDec d
        if base[start] != 112:
            return _dh_hot(self, buf, start, end)   # i14b: header frames (dist_header.pyx)
        _etf_dec_init(&d, base, end, start + 1, False, <PyObject*>buf)
        return self._hot_dec(&d, end)

    cdef bint _hot_dec(self, _EtfDec* d, Py_ssize_t end) except -1:
        """_hot once the decoder stands at the control term (version byte optional in a
        header frame, whose atoms may be cache refs)."""
        cdef tuple t
        cdef Py_ssize_t k
        cdef long op
        d.zmax = self.max_inflated
        d.maxdepth = self.max_depth
        try:
            ctrl = _etf_dec_versioned(d)
        except Exception:
            return False
        if type(ctrl) is not tuple:
            return False
        t = <tuple>ctrl
        k = len(t)
        if k < 3 or type(t[0]) is not int:
            return False
        op = t[0]
        if (op == _DC_SEND or (op == _DC_SEND_SENDER and type(t[1]) is Pid)) and k == 3 \
                and type(t[2]) is Pid:
            msg = self._payload(d)
            if msg is _DC_NO_MSG:
                return False
            self.deliver(t[2], msg)
            return True
        if op == _DC_REG_SEND and k == 4 and type(t[3]) is Atom and type(t[1]) is Pid:
            msg = self._payload(d)
            if msg is _DC_NO_MSG:
                return False
            self.deliver_name(t[3], msg)
            return True
        if op == _DC_ALIAS_SEND and k == 3 and type(t[1]) is Pid and type(t[2]) is Reference:
            msg = self._payload(d)
            if msg is _DC_NO_MSG:
                return False
            self.deliver_alias(t[2], msg)
            return True
        if d.pos != end or k != 4 or type(t[1]) is not Pid or type(t[3]) is not Reference:
            return False
        if op == _DC_MONITOR_P and (type(t[2]) is Atom or type(t[2]) is Pid):
            self.monitor_in(t[1], t[2], t[3])
            return True
        if op == _DC_DEMONITOR_P and (type(t[2]) is Atom or type(t[2]) is Pid):
            self.demonitor_in(t[1], t[2], t[3])
            return True
        return False

    cdef object _payload(self, _EtfDec* d):
        """The message term that ends the frame, or _DC_NO_MSG (for the slow path)."""
        cdef Py_ssize_t end = d.end
        if d.pos >= end:
            return _DC_NO_MSG
        d.python = self.python != 0
        d.loads = <PyObject*>self.loads if self.python else NULL
        try:
            msg = _etf_dec_versioned(d)
        except Exception:
            msg = _DC_NO_MSG
        finally:
            Py_XDECREF(d.view)
            d.view = NULL
        if d.pos != end:
            return _DC_NO_MSG
        return msg

    cpdef deliver(self, to, msg):
        """A message for local ``to`` (pid or name). A reply to one of our remote calls
        wakes the caller (if it still waits) and ends the call's monitor."""
        cdef object entry, a
        if type(msg) is tuple and len(<tuple>msg) == 2 and type((<tuple>msg)[0]) is ImproperList \
                and self.calls:
            a = _dc_alias_of((<tuple>msg)[0])   # {[alias | Ref], Reply} sent to the pid
            if a is not None and a in self.calls:
                msg = (a, (<tuple>msg)[1])
        if type(msg) is tuple and len(<tuple>msg) == 2 and type((<tuple>msg)[0]) is Reference and self.calls:
            ref = (<tuple>msg)[0]
            entry = self.calls.pop(ref, None)
            if entry is not None:
                caller = (<tuple>entry)[0]
                if _dist_awaits(caller, ref):
                    _dist_deliver_c(caller, msg)
                if (<tuple>entry)[2] is not None:     # else: demonitored when it gave up
                    self._frame((_DC_DEMONITOR_P, caller, _dc_wire_target((<tuple>entry)[1]), ref),
                                _DC_NO_MSG)
                return
        _dist_deliver_c(to, msg)

    cpdef deliver_alias(self, ref, msg):
        """ALIAS_SEND to the local alias ``ref``: the reply to one of our calls made with
        an alias tag ({[alias | Ref], Reply}), or a message for a pyotp.alias()."""
        if ref in self.calls:
            self.deliver(self.calls[ref][0],
                         (ref, (<tuple>msg)[1] if type(msg) is tuple and len(<tuple>msg) == 2 else msg))
            return
        _alias_deliver(ref, msg)

    cpdef deliver_name(self, name, msg):
        """REG_SEND to the registered ``name`` (an atom): a virtual process of the
        distribution layer (net_kernel, rex, ...) or a local process."""
        h = self.virtual.get(name)
        if h is not None:
            h(self.conn, msg)
        else:
            _dist_deliver_c(name, msg)

    cpdef monitor_in(self, frm, target, ref):
        """MONITOR_P from the remote ``frm`` on a local pid or name (an atom)."""
        got = _dist_monitor_c(frm, str(target) if type(target) is Atom else target, ref)
        if got is None:
            self.conn.down(target, frm, ref, "noproc")
        elif type(target) is Atom:
            self.name_monitors[ref] = (target, self.peer)

    cpdef demonitor_in(self, frm, target, ref):
        self.name_monitors.pop(ref, None)
        _dist_demonitor_c(str(target) if type(target) is Atom else target, ref)
