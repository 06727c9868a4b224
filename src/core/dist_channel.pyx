# dist_channel.pyx: one distribution connection once its handshake is done.
#
# Owns (as OTP's VM owns a socket after erlang:setnode): the connection's framing, its
# receive buffer and big-frame buffers, write batching, ticks, the connection's table of
# requests in flight, and every control message that needs no Python: SEND,
# SEND_SENDER, REG_SEND, ALIAS_SEND (and their _TT forms), LINK, UNLINK, UNLINK_ID(_ACK),
# EXIT, EXIT2, PAYLOAD_EXIT*, MONITOR_P, DEMONITOR_P (the DOWN for a dead or unknown
# target is written here), MONITOR_P_EXIT, GROUP_LEADER. The Connection (Python, the
# handshake state machine, connection.py) makes the channel the transport's protocol once
# the peer has proven the cookie (channel.py's _setnode: start(), then
# `transport.set_protocol(channel)`); from then on the channel calls Python only through
# the connection's small interface (channel.py, UpConnection):
#   conn.on_control(ctrl, payload)   SPAWN_REQUEST(_TT), SPAWN_REPLY(_TT), and the
#                                    MONITOR_P_EXIT of an rpc request (rpc.py)
#   conn.on_payload_error(exc)       a payload that did not decode: log and drop (returns)
#                                    or close (raises)
#   conn.on_error(exc)               receiving failed: the connection closes with exc
#   conn.connection_lost(exc)        the transport closed (forwarded)
#   services' handlers               REG_SEND to a name added with kernel.add_service
# The core's send/call/reply/signals reach the channel of the destination node directly
# (`_dist_channels`), without a Python-level hop. Processes woken by a read run at the end
# of that read; a busy link may poll its socket briefly for the next read (busy wait).
# Invariants:
#  - Loop thread only. A node's channel is in `_dist_channels` exactly while its
#    connection is up (the kernel adds it in conn_up, after its duplicate checks; the
#    channel removes itself in stop(), when the connection closes or is aborted).
#  - The receive cursors (r, w, the big frame's fill) are private: only the transport's
#    get_buffer/buffer_updated calls move them. Frames below 64 KiB are parsed in place
#    in `rbuf`; a frame of 64 KiB or more gets a buffer of its own (a recent one reused
#    when nothing decoded from it is alive, else a new one that grows as bytes arrive:
#    a header alone never allocates what it announces), so python-mode out-of-band
#    buffers (numpy arrays) stay zero-copy views of it. Over max_frame: closed.
#  - The fast path (_hot) never reports an error: a frame it does not fully understand
#    goes to the checked path (_slow), which validates every control message's shape
#    and raises DistProtocolError for anything malformed (the connection closes with a
#    logged reason; the node lives).
#  - Repeated SENDs skip their control term: _hot keeps the bytes of the last SEND's
#    control term it decoded (rx_key) and, for a frame that starts with those bytes,
#    decodes only the payload (equal bytes are the same term: the encoding is
#    prefix-free); _send keeps the encoded head of the last SEND it wrote (tx_head). A
#    frame the cached path does not accept goes the usual way, so both paths see the
#    same frames the same.
#  - `requests` is this connection's one table of requests in flight, by reference:
#    our calls (_DR_CALL; _DR_GONE once the caller gave up, so a late reply is dropped),
#    monitors we hold on the peer's processes (_DR_MON), monitors the peer holds on our
#    registered names (_DR_NAME, keyed by its ref), spawn and rpc requests (_DR_SPAWN,
#    _DR_RPC, filled by rpc.py through track/untrack). Only this channel and its
#    track/untrack/take_requests API change it; when the connection goes the kernel
#    takes it whole (take_requests) and fails what waits.
#  - `wbuf` holds only complete frames: an encoding error leaves it as it was.
#  - The DEMONITOR_P that ends a call when its reply arrives may wait for the channel's
#    next write (`lazy`: wbuf[:lazy] holds nothing else): the read that brought the reply
#    then writes nothing, and the peer gets it with the caller's next frame (at a paced
#    trickle of calls, the next call's) instead of a wake-up of its own. Every frame goes
#    out after it, so nothing the node sends the peer later can see the monitor still in
#    place; the tick writes it at the latest, and more than _DC_LAZY_MAX bytes of them go
#    at once. Only on 'p' frame channels with no fragments queued (not towards BEAM).
#  - Encoding a term can run Python code (pickle's __reduce__, __index__, finalizers), which
#    can call back into the node. While a frame is being encoded (`enc_at` >= 0) wbuf is
#    never replaced or shortened: a send on this channel raises RuntimeError (which fails
#    the outer send too), a flush writes only the complete frames before the one being
#    encoded (they are cut from wbuf once the encoding ends), and a frame whose connection
#    went down meanwhile is dropped with RuntimeError. The encoder pins wbuf (etf.pyx), so
#    nothing else can resize it either.
#  - Traffic counters (stats()): one add per read, per write and per frame, on the loop
#    thread. bytes_in counts every byte read once the connection is up (ticks too);
#    bytes_out every byte of frames written (not ticks); msgs_in/msgs_out count frames other
#    than ticks.

from libc.string cimport memmove, memcmp, memcpy
from cpython.ref cimport Py_REFCNT

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
    _DC_RX_KEY = 128          # longest SEND control term whose bytes are cached (_hot)

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
        ch._send(to, msg)
    elif type(to) is Reference:
        ch._alias_send(to, msg)
    else:
        ch._send_named((<tuple>to)[0], msg)
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
        ch._reply(to, msg)
    return 0


cdef int _remote_call(object frm, object to, object ref, object request, object label) except -1:
    """A call (label '$gen_call') or a system request (label 'system', from pyotp.sys):
    gen:call's {Label, {Pid, Tag}, Request}."""
    cdef DistChannel ch = _dc_for(to)
    if ch is None:
        _remote_handler("call", frm, to, (ref, request, label))
    else:
        ch._call(frm, to, ref, request, label)
    return 0


cdef int _remote_call_gave_up(object caller, object ref, object server) except -1:
    """A call to a remote server ended without its reply (timeout, or the caller died):
    end its monitor at once, as OTP does. The entry stays, as _DR_GONE, so that a late
    reply is still recognised and dropped (a decoded ref is not the caller's alias
    object); the tick removes it."""
    cdef DistChannel ch = _dc_for(server)
    cdef object entry
    if ch is None:
        return 0
    entry = ch.requests.get(ref)
    if entry is not None and (<tuple>entry)[0] == _DR_CALL:
        ch.requests[ref] = (_DR_GONE, caller, server)
        ch._frame((_DC_DEMONITOR_P, caller, _dc_wire_target(server), ref), _DC_NO_MSG)
    return 0


cdef void _remote_hook(str op, object frm, object to, object arg) except *:
    """Every signal involving a remote pid other than send/reply/call (link, unlink,
    monitor, demonitor, exit2, link_exit, down): written by the destination node's
    channel when it is connected and this is the loop thread; otherwise the Python
    kernel queues it (node being connected) or hops to the loop (another thread)."""
    cdef DistChannel ch
    if op != "send" and op != "reply":
        ch = _dc_for(to)
        if ch is not None and ch.up:
            ch._signal(op, frm, to, arg)
            return
    if _remote_handler is None:
        if op == "send":
            raise BadArg("cannot send to %r: this node is not distributed" % (to,))
        if op in ("link", "monitor"):
            raise BadArg("cannot %s %r: this node is not distributed" % (op, to))
        return
    _remote_handler(op, frm, to, arg)


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



# -- the checked path's helpers ---------------------------------------------------------

class DistProtocolError(Exception):
    """A peer broke the distribution protocol; its connection is closed with this reason
    (``pyotp.dist.channel.ProtocolError`` is this class)."""


# The shape of every control message pyotp accepts: op -> (what follows the op, one
# letter per element, and whether a payload term follows). p: a pid, a: an atom, x: a pid
# or an atom (a process or a registered name), r: a reference, i: an integer, *: any term
# (unused fields, trace tokens, reasons, MFAs). Anything else closes the connection.
DIST_SHAPES = {
    _DC_LINK: ("pp", False), _DC_SEND: ("*p", True), _DC_EXIT: ("pp*", False),
    _DC_UNLINK: ("pp", False), _DC_REG_SEND: ("p*a", True), _DC_GROUP_LEADER: ("pp", False),
    _DC_EXIT2: ("pp*", False), _DC_SEND_TT: ("*p*", True), _DC_EXIT_TT: ("pp**", False),
    _DC_REG_SEND_TT: ("p*a*", True), _DC_EXIT2_TT: ("pp**", False),
    _DC_MONITOR_P: ("pxr", False), _DC_DEMONITOR_P: ("pxr", False),
    _DC_MONITOR_P_EXIT: ("xpr*", False), _DC_SEND_SENDER: ("pp", True),
    _DC_SEND_SENDER_TT: ("pp*", True), _DC_PAYLOAD_EXIT: ("pp", True),
    _DC_PAYLOAD_EXIT_TT: ("pp*", True), _DC_PAYLOAD_EXIT2: ("pp", True),
    _DC_PAYLOAD_EXIT2_TT: ("pp*", True), _DC_PAYLOAD_MONITOR_P_EXIT: ("xpr", True),
    _DC_SPAWN_REQUEST: ("rpp**", True), _DC_SPAWN_REQUEST_TT: ("rpp***", True),
    _DC_SPAWN_REPLY: ("rpi*", False), _DC_SPAWN_REPLY_TT: ("rpi**", False),
    _DC_ALIAS_SEND: ("pr", True), _DC_ALIAS_SEND_TT: ("pr*", True),
    _DC_UNLINK_ID: ("ipp", False), _DC_UNLINK_ID_ACK: ("ipp", False),
}
cdef dict _DC_SHAPES = DIST_SHAPES
cdef dict _DC_OP_NAMES = {v: k for k, v in DIST_OPS.items()}
cdef dict _DC_WHAT = {"p": "a pid", "a": "an atom", "r": "a reference",
                      "x": "a pid or an atom", "i": "an integer"}


cdef int _dc_check_shape(tuple ctrl, bint has_payload) except -1:
    """DistProtocolError unless ``ctrl`` (a tuple with an int first) is a control
    message pyotp knows, with elements of the right types, and a payload term follows
    exactly when its operation carries one."""
    cdef object shape = _DC_SHAPES.get(ctrl[0])
    cdef str spec, c
    cdef Py_ssize_t i
    if shape is None:
        raise DistProtocolError("unknown control message operation %d: %.200r" % (ctrl[0], ctrl))
    spec = (<tuple>shape)[0]
    name = _DC_OP_NAMES.get(ctrl[0], str(ctrl[0]))
    if len(ctrl) != len(spec) + 1:
        raise DistProtocolError("%s should have %d elements: %.200r" % (name, len(spec) + 1, ctrl))
    if (<tuple>shape)[1] != has_payload:
        raise DistProtocolError("%s %s: %.200r" % (
            name, "lacks its payload" if (<tuple>shape)[1] else "carries a payload it should not",
            ctrl))
    for i in range(len(spec)):
        c = spec[i]
        if c == "*":
            continue
        t = type(ctrl[i + 1])
        if not ((c == "p" and t is Pid) or (c == "a" and t is Atom) or (c == "r" and t is Reference)
                or (c == "x" and (t is Pid or t is Atom)) or (c == "i" and t is int)):
            raise DistProtocolError("%s: element %d is not %s: %.200r" % (name, i + 1, _DC_WHAT[c], ctrl))
    return 0


def dist_to_erl(term):
    """Adapt an exit reason (or similar small term) for an Erlang peer: ``str`` becomes an
    atom (pyotp uses plain str for atoms), exceptions become ``{ExceptionName, <<Text>>}``,
    tuples and lists are converted element by element (``pyotp.dist.rpc.to_erl``).

    >>> dist_to_erl(("shutdown", "x"))
    (Atom('shutdown'), Atom('x'))
    """
    t = type(term)
    if t is str:
        return Atom(term)
    if t is tuple:
        return tuple([dist_to_erl(x) for x in <tuple>term])
    if t is list:
        return [dist_to_erl(x) for x in <list>term]
    if isinstance(term, BaseException):
        return (Atom(type(term).__name__), str(term).encode("utf-8", "replace"))
    return term


def dist_from_erl(term):
    """Adapt an exit reason from an Erlang peer for pyotp's core: atoms become plain str
    (so ``normal``, ``kill`` and ``shutdown`` mean what they mean locally); tuples and
    lists are converted element by element (``pyotp.dist.rpc.from_erl``).

    >>> dist_from_erl((Atom("shutdown"), 1))
    ('shutdown', 1)
    """
    t = type(term)
    if t is Atom:
        return str(term)
    if t is tuple:
        return tuple([dist_from_erl(x) for x in <tuple>term])
    if t is list:
        return [dist_from_erl(x) for x in <list>term]
    return term


# The kinds of entries in a channel's request table (DistChannel.requests)
cdef enum:
    _DR_CALL = 1       # (kind, caller, server): our GenServer call, waiting for its reply
    _DR_GONE = 2       # (kind, caller, server): the caller gave up; a late reply is dropped
    _DR_MON = 3        # (kind, watcher, target): a monitor we hold on the peer's process
    _DR_NAME = 4       # (kind, name atom, None): the peer monitors our registered name
    _DR_SPAWN = 5      # (kind, future, caller): our SPAWN_REQUEST (rpc.py)
    _DR_RPC = 6        # (kind, rpc record, None): our erpc request (rpc.py)

DIST_REQUESTS = {"call": _DR_CALL, "gone": _DR_GONE, "monitor": _DR_MON, "name": _DR_NAME,
                 "spawn": _DR_SPAWN, "rpc": _DR_RPC}

cdef enum:
    _DC_FIRST_BIG = 1 << 20      # a new big-frame buffer starts this large (or twice what came)

DIST_FIRST_BIG = _DC_FIRST_BIG
cdef bytes _DC_TICK = b"\x00\x00\x00\x00"
cdef Py_ssize_t _DC_LAZY_MAX = 4096
cdef object _DC_NOPROC = Atom("noproc")


@cython.auto_pickle(False)     # its state is a live connection's: never rebuilt from data
cdef class DistChannel:
    """One distribution connection after its handshake (internal: made and started by
    ``pyotp.dist.channel``, whose ``Channel`` subclasses it as the transport's
    asyncio.BufferedProtocol; see the file's note for the interface back to Python).

    What the connection does once the handshake with the peer's socket is done (a plain
    example: it needs a connected transport and the node's kernel)::

        ch = Channel(conn, loop, kernel.virtual, 1 << 18, max_frame, max_inflated, max_depth)
        ch.start(transport, "b@127.0.0.1", 0, None, kernel.kernel_pid, True, True, True, b"")
        transport.set_protocol(ch)
    """
    cdef readonly object conn         # the Connection: handshake, rare frames, errors
    cdef readonly object transport
    cdef readonly object peer         # the peer's node name
    cdef public int python            # payloads: 0 plain ETF, 1 python extension with
                                      # pickles, 2 python extension without pickles
    cdef readonly object loads        # python mode: loads(payload, buffers) for pickles
    cdef readonly bint up
    cdef readonly bint alias          # both sides set DFLAG_ALIAS: ALIAS_SEND may be used
    cdef readonly bint payload_exits  # both sides set EXIT_PAYLOAD
    cdef readonly bint unlink_id      # both sides set UNLINK_ID
    cdef readonly Py_ssize_t received # frames received, ticks included (tick check)
    cdef bint wrote                   # something was written since the last tick check
    cdef Py_ssize_t last_checked      # `received` at the last tick check
    cdef int idle_ticks               # tick periods without a frame
    cdef uint64_t unlink_seq          # the last UNLINK_ID's id
    cdef bytearray rbuf               # the shared receive buffer; bytes [r, w) are unparsed
    cdef object rmv                   # a view of rbuf, kept: get_buffer hands out its slices
    cdef Py_ssize_t r
    cdef Py_ssize_t w
    cdef readonly bytearray big       # a big frame's own buffer while it arrives
    cdef object big_mv                # the view of `big` the transport fills
    cdef Py_ssize_t big_fill, big_need
    cdef list spares                  # recent big-frame buffers, for reuse
    cdef bint spare_used
    cdef readonly Py_ssize_t max_frame      # a longer frame closes the connection
    cdef readonly Py_ssize_t max_inflated   # the largest compressed term (tag 80) accepted, inflated
    cdef readonly Py_ssize_t max_depth      # deeper messages are dropped (TermTooDeep)
    cdef int fd                       # the plain TCP socket, or -1 (TLS, Windows: no busy wait)
    cdef bint raw_send                # fd >= 0 and the transport reports what it holds unsent
    cdef double last_read             # when the previous read arrived (ms)
    cdef bint called                  # a call was written since this read arrived
    cdef object loop
    cdef bint feeding                 # inside a dispatch: it writes what is queued when done
    cdef bytearray wbuf
    cdef Py_ssize_t lazy              # wbuf[:lazy]: only ended calls' DEMONITOR_Ps (see the note)
    cdef object flush_handle
    cdef object flush_cb
    cdef dict requests                # this connection's requests in flight (see the note)
    cdef dict virtual                 # the kernel's services: name -> handler(conn, msg) (read only)
    cdef object kernel_pid
    cdef dict reg_heads               # name -> encoded head of a REG_SEND frame
    cdef Py_ssize_t enc_at            # offset in wbuf of the frame being encoded, or -1
    cdef Py_ssize_t enc_sent          # wbuf[:enc_sent] was written while it was encoded
    cdef uint64_t bytes_in, bytes_out, msgs_in, msgs_out   # stats()
    cdef public object hdr            # header frames and fragments (dist_header.pyx), or None
    cdef bint bare                    # frames go out as 131,68 header frames (BEAM peers)
    # The control term of the last SEND/SEND_SENDER received in a 'p' frame, as its bytes
    # (version byte included) and its target: a frame starting with these same bytes
    # holds that same term (a term's encoding is prefix-free), so only its payload is
    # decoded. One sender streaming to one process repeats it frame after frame.
    cdef unsigned char rx_key[_DC_RX_KEY]
    cdef Py_ssize_t rx_len            # 0: nothing cached
    cdef object rx_to
    cdef Py_ssize_t rx_mark           # set by _hot_dec: where a SEND's control term ended
    # The head ('p' frame header + control term) of the last SEND written, and its target
    cdef bytes tx_head
    cdef Pid tx_to

    def __init__(self, conn, loop, dict virtual not None, Py_ssize_t bufsize, Py_ssize_t max_frame,
                 Py_ssize_t max_inflated, Py_ssize_t max_depth):
        if bufsize < 1 << 17 or max_frame < _DC_BIG or max_inflated < 0 or max_depth < 1:
            raise ValueError("DistChannel: bufsize >= 128 KiB, max_frame >= 64 KiB, "
                             "max_inflated >= 0 and max_depth >= 1 are needed")
        self.conn = conn
        self.fd = -1
        self.rbuf = bytearray(bufsize)
        self.rmv = memoryview(self.rbuf)
        self.loop = loop
        self.virtual = virtual
        self.requests = {}
        self.spares = []
        self.wbuf = bytearray()
        self.flush_cb = self._flush
        self.reg_heads = {}
        self.max_frame = max_frame
        self.max_inflated = max_inflated
        self.max_depth = max_depth
        self.enc_at = -1

    def stats(self):
        """This connection's traffic so far: ``{"bytes_in", "bytes_out", "msgs_in",
        "msgs_out"}`` (frames other than ticks; bytes_in includes ticks).

        On a connection that has sent three messages (plain example: it needs a
        connected peer)::

            conn.ch.stats()["msgs_out"]     # 3
        """
        return {"bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "msgs_in": self.msgs_in, "msgs_out": self.msgs_out}

    def spare_buffers(self):
        """The big-frame buffers kept for reuse (a copy of the list; for tests)."""
        return list(self.spares)

    def release(self):
        """The connection is closed: drop the buffers and the references back to it (the
        connection and this channel must not form a cycle left to the cyclic GC)."""
        self.stop()
        self.conn = None
        self.transport = None
        self.flush_cb = None
        self.big_mv = None
        self.big = None
        self.spares = []
        if self.rmv is not None:
            try:
                self.rmv.release()
            except BufferError:     # still exported: it goes with its last reference
                pass
            self.rmv = None
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.lazy = 0
        self.r = self.w = self.big_fill = self.big_need = 0
        self.reg_heads = {}
        self.requests = {}        # the kernel took what it needed (take_requests)
        self.hdr = None

    def start(self, transport, peer, int python, loads, kernel_pid, bint alias,
              bint payload_exits, bint unlink_id, initial):
        """The handshake is done: this channel takes the connection over. ``python``: 0
        plain ETF (Erlang peers), 1 python extension with pickles decoded by
        ``loads(payload, buffers)`` (the node's restricted unpickler), 2 python extension
        without pickles (``loads`` refuses them). ``kernel_pid`` (net_kernel) is the
        sender of REG_SENDs from the node itself; ``alias``, ``payload_exits`` and
        ``unlink_id``: what both sides negotiated. ``initial``: the bytes that came after
        the last handshake message (connected frames), parsed by resume(). The caller
        then makes this channel the transport's protocol."""
        if python < 0 or python > 2 or (python and not callable(loads)):
            raise ValueError("DistChannel.start: python must be 0, 1 or 2 (with a loads callable)")
        if self.up or self.rbuf is None or self.conn is None:
            raise RuntimeError("DistChannel.start: already started or released")
        cdef Py_ssize_t n = len(initial)
        if n > _etf_ba_size(self.rbuf):
            raise ValueError("DistChannel.start: %d initial bytes do not fit the receive buffer" % n)
        self.rmv[0:n] = initial
        self.r = 0
        self.w = n
        self.kernel_pid = kernel_pid
        self.transport = transport
        self.fd = -1
        if PYOTP_CAN_SPIN and transport.get_extra_info("ssl_object") is None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                self.fd = sock.fileno()
        self.raw_send = self.fd >= 0 and callable(getattr(transport, "get_write_buffer_size", None))
        self.peer = peer
        self.python = python
        self.loads = loads
        self.alias = alias
        self.payload_exits = payload_exits
        self.unlink_id = unlink_id
        self.up = True

    def stop(self):
        """The connection is going down: nothing more is written or dispatched."""
        self.up = False
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        if self.peer is not None:
            _dist_channel_down(self.peer, self)

    # -- the request table (rpc.py's spawn and rpc requests) ----------------------------

    def track(self, ref, int kind, a, b):
        """Record a request in flight by its reference (``kind`` from DIST_REQUESTS)."""
        if type(ref) is not Reference or kind < _DR_CALL or kind > _DR_RPC:
            raise TypeError("track: a reference and a DIST_REQUESTS kind, got %r, %r" % (ref, kind))
        self.requests[ref] = (kind, a, b)

    def untrack(self, ref):
        """Remove and return the entry ``(kind, a, b)`` of ``ref``, or None."""
        return self.requests.pop(ref, None)

    def tracked(self, ref):
        """The entry ``(kind, a, b)`` of ``ref``, or None."""
        return self.requests.get(ref)

    def take_requests(self):
        """The connection is gone: every entry ``(ref, (kind, a, b))``, the table emptied."""
        out = list(self.requests.items())
        self.requests = {}
        return out

    # -- ticks ---------------------------------------------------------------------------

    def tick(self):
        """The kernel's tick (every net_ticktime / 4). True when nothing arrived for four
        periods (the caller closes the connection: net_tick_timeout). Otherwise: a tick
        goes out if nothing else was written, big buffers unused for a period are freed,
        and the calls whose callers no longer wait are forgotten (their monitor ended)."""
        cdef object ref, e
        if self.received == self.last_checked:
            self.idle_ticks += 1
            if self.idle_ticks >= 4:
                return True
        else:
            self.idle_ticks = 0
            self.last_checked = self.received
        if self.lazy and self.up:
            self._flush_now()             # ended calls' DEMONITOR_Ps wait no longer
        if not self.wrote and self.up and self.transport is not None:
            self._flush_now()
            self.transport.write(_DC_TICK)
        self.wrote = False
        if not self.spare_used:
            self.spares.clear()
        self.spare_used = False
        for ref, e in list(self.requests.items()):
            if ((<tuple>e)[0] == _DR_CALL or (<tuple>e)[0] == _DR_GONE) \
                    and not _dist_awaits((<tuple>e)[1], ref):
                del self.requests[ref]
                if (<tuple>e)[0] == _DR_CALL and self.up:
                    self._frame((_DC_DEMONITOR_P, (<tuple>e)[1], _dc_wire_target((<tuple>e)[2]), ref),
                                _DC_NO_MSG)
        return False

    # -- sending -----------------------------------------------------------------------

    cdef Py_ssize_t _open(self) except -1:
        cdef Py_ssize_t start = _etf_ba_size(self.wbuf)
        cdef unsigned char* p
        if self.bare:
            return _dh_open(self)       # 131,68 header frame (dist_header.pyx)
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
            return 0                    # goes out in fragments (dist_header.pyx)
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
        """A python-mode payload holding large buffers: its chunks go to the transport as
        they are, without a copy (pickling it can call back into the node as well)."""
        cdef bint was_up = self.up
        cdef Py_ssize_t start
        cdef Py_ssize_t n
        if self.hdr is not None and _dh_behind(self):
            return self._frame(ctrl, msg)   # after its sender's fragments (dist_header.pyx)
        start = self._encoding()
        try:
            n = self._write_big(ctrl, msg)
        except BaseException:
            self._encoded(start, False, was_up)
            raise
        self._encoded(start, True, was_up)
        self.msgs_out += 1
        self.bytes_out += <uint64_t>n
        return 0

    cdef Py_ssize_t _write_big(self, tuple ctrl, object msg) except -1:
        cdef bytearray head = bytearray(b"\x00\x00\x00\x00p")
        cdef Py_ssize_t total
        _etf_append(head, ctrl, False)
        chunks = term_to_iovec(msg, python=True)
        total = len(head) - 4
        for c in chunks:
            total += c.nbytes if type(c) is memoryview else len(c)
        if total > <Py_ssize_t>0xFFFFFFFF:
            raise ValueError("a distribution frame of %d bytes exceeds 4 GiB" % total)
        _etf_wr32(<unsigned char*>_etf_ba_str(head), <uint32_t>total)
        self._flush_now()
        if self.transport is not None and self.up:
            self.transport.writelines([head] + list(chunks))
            self.wrote = True
            return total + 4
        return 0

    def control(self, ctrl, msg=_DC_NO_MSG):
        """Queue a frame: 'p' + control term (+ payload term). Raises, queueing nothing,
        when a term cannot be encoded."""
        self._frame(ctrl, msg)

    cdef int _send(self, object to, object msg) except -1:
        if self.python == _ETF_PY_ON and _dc_maybe_big(msg):
            self._big((_DC_SEND, _DC_EMPTY, to), msg)
        elif self.bare or type(to) is not Pid or (<Pid>to)._node is None:
            self._frame((_DC_SEND, _DC_EMPTY, to), msg)
        else:
            self._frame_head(self._send_head(<Pid>to), msg)
        return 0

    cdef bytes _send_head(self, Pid to):
        """The head of a SEND frame to the remote pid ``to`` ('p' frame header and
        control term), encoded once while the target stays the same."""
        cdef Pid last = self.tx_to
        cdef bytearray hb
        if last is not to and (last is None or last.id != to.id or last.serial != to.serial
                               or last._creation != to._creation
                               or not (last._node is to._node or last._node == to._node)):
            hb = bytearray(b"\x00\x00\x00\x00p")
            _etf_append_v(hb, (_DC_SEND, _DC_EMPTY, to), False, True)
            self.tx_head = bytes(hb)
            self.tx_to = to
        return self.tx_head

    cdef int _frame_head(self, bytes head, object msg) except -1:
        """Queue a frame whose head (length placeholder, frame type, control term) is
        already encoded, then its payload ``msg``."""
        cdef bint was_up = self.up
        cdef Py_ssize_t start = self._encoding()
        try:
            _etf_append_pre(self.wbuf, head, msg, self.python, not self.bare)
        except BaseException:
            self._encoded(start, False, was_up)
            raise
        return self._close(self._encoded(start, True, was_up))

    def send(self, to, msg):
        """SEND ``msg`` to the remote pid ``to``."""
        self._send(to, msg)

    def reg_send(self, frm, name, msg):
        """REG_SEND from the local pid ``frm`` to the peer's registered ``name``."""
        self._reg_send(frm, name, msg)

    cdef int _reg_send(self, object frm, object name, object msg) except -1:
        cdef tuple ctrl = (_DC_REG_SEND, frm, _DC_EMPTY, Atom(name))
        if self.python == _ETF_PY_ON and _dc_maybe_big(msg):
            self._big(ctrl, msg)
        else:
            self._frame(ctrl, msg)
        return 0

    def send_named(self, name, msg):
        """REG_SEND from the node (``pyotp.send((name, node), msg)``)."""
        self._send_named(name, msg)

    cdef int _send_named(self, object name, object msg) except -1:
        """The frame head is encoded once per name."""
        cdef object head = self.reg_heads.get(name)
        cdef bytearray hb
        if self.python == _ETF_PY_ON and _dc_maybe_big(msg):
            self._reg_send(self.kernel_pid, name, msg)
            return 0
        if head is None:
            hb = bytearray(b"\x00\x00\x00\x00\x83D\x00" if self.bare else b"\x00\x00\x00\x00p")
            _etf_append_v(hb, (_DC_REG_SEND, self.kernel_pid, _DC_EMPTY, Atom(name)), False, not self.bare)
            head = bytes(hb)
            if len(self.reg_heads) > 1024:
                self.reg_heads.clear()
            self.reg_heads[name] = head
        self._frame_head(<bytes>head, msg)
        return 0

    def call(self, frm, to, ref, request, label=_DC_GEN_CALL):
        """A GenServer call from local ``frm`` to the remote server ``to`` (pid or
        (name, node)): MONITOR_P then the '$gen_call' (or another gen:call label:
        'system'), written at once. The reply and a DOWN are matched by ``ref`` in the
        request table."""
        self._call(frm, to, ref, request, label)

    cdef int _call(self, object frm, object to, object ref, object request, object label) except -1:
        cdef Py_ssize_t mark = _etf_ba_size(self.wbuf)
        cdef bint feeding = self.feeding
        self.requests[ref] = (_DR_CALL, frm, to)
        # written below, at once: no flush for the end of the loop turn (a call_soon
        # cancelled right away still costs the loop an iteration)
        self.feeding = True
        try:
            self._frame((_DC_MONITOR_P, frm, _dc_wire_target(to), ref), _DC_NO_MSG)
            # with aliases, the tag is OTP 24's [alias | Ref]: the peer replies to the
            # alias (ALIAS_SEND), which is dropped once the caller gave up
            msg = (label, (frm, ImproperList((_DC_ALIAS,), ref) if self.alias else ref), request)
            if type(to) is Pid:
                self._send(to, msg)
            else:
                self._reg_send(frm, to[0], msg)
        except BaseException:
            if _etf_ba_size(self.wbuf) > mark:
                _etf_ba_resize(self.wbuf, mark)
            self.requests.pop(ref, None)
            raise
        finally:
            self.feeding = feeding
        self.called = True
        self._flush_now()
        return 0

    def reply(self, to, msg):
        """A GenServer reply to a remote caller: written at once."""
        self._reply(to, msg)

    cdef int _reply(self, object to, object msg) except -1:
        """A reply tagged [alias | Ref] goes to the alias (ALIAS_SEND), as gen:reply does,
        so a caller that gave up (its alias is gone) never sees it."""
        cdef object a = _dc_alias_of((<tuple>msg)[0]) if self.alias and type(msg) is tuple \
            and len(<tuple>msg) == 2 else None
        cdef bint feeding = self.feeding
        self.feeding = True         # written at once, as a call (_call)
        try:
            if a is not None:
                self._alias_send(a, msg)
            else:
                self._send(to, msg)
        finally:
            self.feeding = feeding
        self._flush_now()
        return 0

    def alias_send(self, ref, msg):
        """ALIAS_SEND ``msg`` to the peer's alias ``ref`` (from the running process, or
        the node). Dropped when the peer did not negotiate aliases: it could not route it."""
        self._alias_send(ref, msg)

    cdef int _alias_send(self, object ref, object msg) except -1:
        if not self.alias:
            return 0
        frm = _current.pid if _current is not None else self.kernel_pid
        self._frame((_DC_ALIAS_SEND, frm, ref), msg)
        return 0

    def signal(self, str op not None, frm, to, arg):
        """A signal the core hands the distribution layer (``_remote_hook``'s ops: link,
        unlink, monitor, demonitor, exit2, link_exit, down), written as its control
        message (what the kernel replays once a node being connected is up)."""
        if not self._signal(op, frm, to, arg):
            raise ValueError("DistChannel.signal: unknown operation %r" % (op,))

    cdef bint _signal(self, str op, object frm, object to, object arg) except -1:
        cdef object e
        if op == "link":
            self._frame((_DC_LINK, frm, to), _DC_NO_MSG)
        elif op == "unlink":
            if self.unlink_id:
                self.unlink_seq += 1
                self._frame((_DC_UNLINK_ID, self.unlink_seq, frm, to), _DC_NO_MSG)
            else:
                self._frame((_DC_UNLINK, frm, to), _DC_NO_MSG)
        elif op == "monitor":
            self.requests[arg] = (_DR_MON, frm, to)
            try:
                self._frame((_DC_MONITOR_P, frm, _dc_wire_target(to), arg), _DC_NO_MSG)
            except BaseException:
                self.requests.pop(arg, None)
                raise
        elif op == "demonitor":
            e = self.requests.get(arg)
            if e is not None and (<tuple>e)[0] == _DR_MON:
                del self.requests[arg]
                self._frame((_DC_DEMONITOR_P, frm, _dc_wire_target(to), arg), _DC_NO_MSG)
        elif op == "exit2":
            self._exit_out(frm if frm is not None else self.kernel_pid, to, arg, False)
        elif op == "link_exit":
            self._exit_out(frm, to, arg, True)
        elif op == "down":
            e = self.requests.get((<tuple>arg)[0])
            if e is not None and (<tuple>e)[0] == _DR_NAME:
                del self.requests[(<tuple>arg)[0]]
                frm = (<tuple>e)[1]
            try:
                self._down_out(frm, to, (<tuple>arg)[0], (<tuple>arg)[1], False)
            except Exception:
                self._down_out(frm, to, (<tuple>arg)[0], _dc_printable((<tuple>arg)[1]), False)
        else:
            return False
        return True

    cdef inline object _out_reason(self, object reason):
        return reason if self.python == _ETF_PY_ON else dist_to_erl(reason)

    def exit_out(self, frm, to, reason, bint linked):
        """EXIT (``linked``) or EXIT2 from local ``frm`` to the peer's ``to``."""
        self._exit_out(frm, to, reason, linked)

    cdef int _exit_out(self, object frm, object to, object reason, bint linked) except -1:
        try:
            self._exit_frame(frm, to, reason, linked)
        except Exception:
            self._exit_frame(frm, to, _dc_printable(reason), linked)
        return 0

    cdef int _exit_frame(self, object frm, object to, object reason, bint linked) except -1:
        if self.payload_exits:
            self._frame((_DC_PAYLOAD_EXIT if linked else _DC_PAYLOAD_EXIT2, frm, to),
                        self._out_reason(reason))
        else:
            self._frame((_DC_EXIT if linked else _DC_EXIT2, frm, to, dist_to_erl(reason)), _DC_NO_MSG)
        return 0

    def down_out(self, obj, to, ref, reason, bint raw=False):
        """MONITOR_P_EXIT of ``obj`` (a local pid or name) to the peer's watcher ``to``;
        ``raw`` sends the reason as given (erpc results), otherwise it is adapted for
        Erlang peers (dist_to_erl)."""
        self._down_out(obj, to, ref, reason, raw)

    cdef int _down_out(self, object obj, object to, object ref, object reason, bint raw) except -1:
        if not raw:
            reason = self._out_reason(reason)
        if self.payload_exits:
            self._frame((_DC_PAYLOAD_MONITOR_P_EXIT, obj, to, ref), reason)
        else:
            self._frame((_DC_MONITOR_P_EXIT, obj, to, ref, reason), _DC_NO_MSG)
        return 0

    def _flush(self):
        self.flush_handle = None
        self._write()

    def flush_now(self):
        """Write what is queued now instead of at the end of the loop turn."""
        self._flush_now()

    cdef int _flush_now(self) except -1:
        # cdef, not cpdef: the channel is subclassed in Python (channel.Channel), and
        # a cpdef method would look for an override at every call
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        self._write()
        return 0

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
                self.lazy = 0
            return 0
        cdef Py_ssize_t n = _etf_ba_size(b)
        cdef long sent = -1
        if n and self.up and self.transport is not None:
            # On a plain socket whose transport holds nothing unsent, the frames go out
            # with one send() of wbuf itself, which is then reused: the transport's write
            # would take the buffer over (a new wbuf per write) and wrap it in views and a
            # list for a write that nearly always completes at once. What the socket does
            # not take now (a full socket buffer, an error) goes to the transport, so its
            # order, back-pressure (pause_writing) and error reporting stay the same.
            # A closing transport may already have closed the fd (libuv closes a stream's
            # fd at once, connection_lost comes later) and the number may be reused.
            if self.raw_send and self.transport.get_write_buffer_size() == 0 \
                    and not self.transport.is_closing():
                sent = pyotp_send_nb(self.fd, _etf_ba_str(b), <size_t>n)
            if sent == n:
                _etf_ba_resize(b, 0)
            else:
                self.wbuf = bytearray()
                self.transport.write(b if sent <= 0 else b[sent:])
            self.bytes_out += <uint64_t>n
            self.wrote = True
        self.lazy = 0
        if self.hdr is not None and (<_DistHdr>self.hdr).rr:
            _dh_pump(self)              # fragments between the small frames
        return 0

    # -- the transport's protocol (asyncio.BufferedProtocol) -------------------------------

    def get_buffer(self, Py_ssize_t sizehint):
        """Where the transport writes the next read."""
        if self.big_mv is not None:
            if self.big_fill == len(self.big_mv):
                self._grow_big()      # full, the frame is not: it grows as bytes come
            return self.big_mv[self.big_fill:]
        if self.rmv is None:
            return memoryview(bytearray(1 << 16))    # released: what still comes is dropped
        if self.w == 0:
            return self.rmv           # the usual case (all parsed): no slice to make
        if _etf_ba_size(self.rbuf) - self.w < 8192:
            self._compact()
            if self.w == 0:
                return self.rmv
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
        """``nbytes`` more bytes arrived at the start of the last get_buffer's buffer."""
        cdef Py_ssize_t room
        if not self.up:
            return                  # closing: what still comes is dropped
        try:
            if self.big_mv is not None:
                room = len(self.big_mv) - self.big_fill
            else:
                room = _etf_ba_size(self.rbuf) - self.w
            if nbytes < 0 or nbytes > room:
                raise RuntimeError("DistChannel.buffer_updated: %d bytes reported, %d fit"
                                   % (nbytes, room))
            self.bytes_in += <uint64_t>nbytes
            if self.big_mv is not None:
                self.big_fill += nbytes
                if self.big_fill == self.big_need:
                    self._big_done()
                return
            self._read(nbytes)
        except BaseException as e:
            self._error(e)

    cdef int _error(self, object e) except -1:
        conn = self.conn
        if conn is not None:
            conn.on_error(e)
        elif not isinstance(e, Exception):
            raise e
        return 0

    def connection_lost(self, exc):
        """The transport closed: the Connection reports it and releases this channel."""
        self.up = False
        conn = self.conn
        if conn is not None:
            conn.connection_lost(exc)

    def eof_received(self):
        return None                 # the transport closes itself

    def pause_writing(self):        # the peer is slow: the transport buffers for us,
        _dist_header_writing(self, False)     # and fragments wait (dist_header.pyx)

    def resume_writing(self):
        _dist_header_writing(self, True)

    cdef int _read(self, Py_ssize_t nbytes) except -1:
        cdef double now = pyotp_monotonic_ms()
        cdef bint busy = (now - self.last_read) * 1000.0 < 4.0 * _wait_policy.max_us
        self.last_read = now
        self.called = False
        self.w += nbytes
        self._feed()
        if self.fd >= 0 and _wait_policy.mode != _WP_NONE:
            self._spin(busy)
        return 0

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
        """Just started: dispatch the frames that came with the last handshake message."""
        try:
            self._feed()
        except BaseException as e:
            self._error(e)

    cdef int _feed(self) except -1:
        self.r = self._dispatch(self.r, self.w)
        if self.r == self.w:
            self.r = self.w = 0
        elif self.up and self.w - self.r >= 4 and \
                _etf_rd32(<const unsigned char*>_etf_ba_str(self.rbuf) + self.r) >= _DC_BIG << self.bare:
            # (towards BEAM the threshold is doubled: its 64 KiB fragments stay in rbuf)
            self._start_big()
        return 0

    # -- big frames ----------------------------------------------------------------------

    cdef int _start_big(self) except -1:
        """The head of a frame of 64 KiB or more: it gets a buffer of its own, which the
        transport then fills directly."""
        cdef Py_ssize_t n = _etf_rd32(<const unsigned char*>_etf_ba_str(self.rbuf) + self.r)
        cdef Py_ssize_t have = self.w - self.r - 4
        cdef Py_ssize_t i
        cdef bytearray sp
        if n > self.max_frame:
            raise DistProtocolError("a frame of %d bytes exceeds max_frame_size (%d)" % (n, self.max_frame))
        # reuse a recent big buffer when nothing decoded from it is alive any more (its
        # only references: the spare list and `sp`): no allocation and, above all, no page
        # faults on fresh memory. Two are kept, because the process that got the last
        # message usually still holds it.
        self.big = None
        for i in range(len(self.spares)):
            sp = <bytearray>self.spares[i]
            if n <= _etf_ba_size(sp) <= 2 * n and Py_REFCNT(sp) == 2:
                del self.spares[i]
                self.big = sp
                self.big_mv = memoryview(sp)[:n]
                break
        if self.big is None:
            # what the header announces is not trusted: the buffer grows as bytes come
            self.big = bytearray(min(n, max(<Py_ssize_t>_DC_FIRST_BIG, 2 * have)))
            self.big_mv = memoryview(self.big)
        self.big_need = n
        self.big_mv[0:have] = self.rmv[self.r + 4:self.w]
        self.big_fill = have
        self.r = self.w = 0
        return 0

    cdef int _grow_big(self) except -1:
        """The big frame's buffer is full but the frame is not: make it up to four times
        larger (in place when nothing else views it, so the bytes are not copied)."""
        cdef bytearray buf = self.big
        cdef Py_ssize_t size = min(self.big_need, 4 * _etf_ba_size(buf))
        mv = self.big_mv
        self.big_mv = None
        try:
            mv.release()
            _etf_ba_resize(buf, size)
        except BufferError:      # something still views it: move to a new buffer
            new = bytearray(size)
            new[:self.big_fill] = memoryview(buf)[:self.big_fill]
            self.big = buf = new
        self.big_mv = memoryview(buf)
        return 0

    cdef int _big_done(self) except -1:
        global _etf_oob_copy
        cdef bytearray big = self.big
        cdef Py_ssize_t n = self.big_need
        cdef bint oob_copy = _etf_oob_copy
        mv = self.big_mv
        self.big = None
        self.big_mv = None
        self.big_fill = self.big_need = 0
        mv.release()
        del mv
        self.received += 1
        self.msgs_in += 1
        cdef Scheduler s = _sched
        cdef bint claimed = s is not None and pyotp_cas_int(&s.wake_pending, 0, 1)
        self.feeding = True
        _etf_oob_copy = False     # this buffer is the frame's own: views of it may live on
        try:
            if not self._hot(big, 0, n):
                self._slow(big, 0, n)
        finally:
            _etf_oob_copy = oob_copy
            self.spares.append(big)
            if len(self.spares) > 2:
                del self.spares[0]
            self.spare_used = True
            try:
                if claimed:
                    s.run_turn()
            finally:
                self.feeding = False
                self._write()
        return 0

    # -- receiving -------------------------------------------------------------------------

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
                    self.r = end      # the checked path may raise: the frame is consumed
                    self._slow(buf, r + 4, end)
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
                # what this read (and the processes it woke) queued here, unless that is
                # only ended calls' DEMONITOR_Ps (they wait for the next write)
                if not self.lazy or self.lazy != _etf_ba_size(self.wbuf) \
                        or (self.hdr is not None and (<_DistHdr>self.hdr).rr):
                    self._write()
        return r

    cdef bint _hot(self, bytearray buf, Py_ssize_t start, Py_ssize_t end) except -1:
        """Dispatch one frame if it is a frequent, well-formed one; False otherwise."""
        cdef const unsigned char* base = <const unsigned char*>_etf_ba_str(buf)
        cdef _EtfDec d
        cdef Py_ssize_t n = self.rx_len
        if base[start] != 112:
            return _dh_hot(self, buf, start, end)   # header frames (dist_header.pyx)
        if n and end - start - 1 > n and memcmp(base + start + 1, self.rx_key, n) == 0:
            # the same control term as the last SEND: only the payload is decoded
            _etf_dec_init(&d, base, end, start + 1 + n, False, <PyObject*>buf)
            d.zmax = self.max_inflated
            d.maxdepth = self.max_depth
            msg = self._payload(&d)
            if msg is _DC_NO_MSG:
                return False
            self._deliver(self.rx_to, msg)
            return True
        _etf_dec_init(&d, base, end, start + 1, False, <PyObject*>buf)
        self.rx_mark = 0
        if not self._hot_dec(&d, end):
            return False
        n = self.rx_mark - start - 1
        if self.rx_mark and n <= _DC_RX_KEY:
            memcpy(self.rx_key, base + start + 1, n)
            self.rx_len = n
        return True

    cdef bint _hot_dec(self, _EtfDec* d, Py_ssize_t end) except -1:
        """_hot once the decoder stands at the control term (version byte optional in a
        header frame, whose atoms may be cache refs)."""
        cdef tuple t
        cdef Py_ssize_t k, ctrl_end
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
            ctrl_end = d.pos
            msg = self._payload(d)
            if msg is _DC_NO_MSG:
                return False
            self.rx_len = 0           # (re-entry safe: set again below once delivered)
            self._deliver(t[2], msg)
            self.rx_to = t[2]
            self.rx_mark = ctrl_end
            return True
        if op == _DC_REG_SEND and k == 4 and type(t[3]) is Atom and type(t[1]) is Pid:
            msg = self._payload(d)
            if msg is _DC_NO_MSG:
                return False
            self._deliver_name(t[3], msg)
            return True
        if op == _DC_ALIAS_SEND and k == 3 and type(t[1]) is Pid and type(t[2]) is Reference:
            msg = self._payload(d)
            if msg is _DC_NO_MSG:
                return False
            self._deliver_alias(t[2], msg)
            return True
        if d.pos != end or k != 4 or type(t[1]) is not Pid or type(t[3]) is not Reference:
            return False
        if op == _DC_MONITOR_P and (type(t[2]) is Atom or type(t[2]) is Pid):
            self._monitor_in(t[1], t[2], t[3])
            return True
        if op == _DC_DEMONITOR_P and (type(t[2]) is Atom or type(t[2]) is Pid):
            self._demonitor_in(t[1], t[2], t[3])
            return True
        return False

    cdef object _payload(self, _EtfDec* d):
        """The message term that ends the frame, or _DC_NO_MSG (for the checked path)."""
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

    cdef int _slow(self, bytearray buf, Py_ssize_t start, Py_ssize_t end) except -1:
        """The checked path: every control message, validated; DistProtocolError for
        anything malformed."""
        cdef const unsigned char* base = <const unsigned char*>_etf_ba_str(buf)
        cdef _EtfDec d
        cdef tuple t
        cdef long op
        cdef bint has
        if base[start] != 112:
            if base[start] == 131:      # a header frame or fragment (dist_header.pyx)
                try:
                    _dist_header_frame(self, memoryview(buf)[start:end])
                except DistHeaderError as e:
                    raise DistProtocolError(str(e)) from None
                return 0
            raise DistProtocolError("unknown frame type %d" % base[start])
        _etf_dec_init(&d, base, end, start + 1, False, <PyObject*>buf)
        d.zmax = self.max_inflated
        d.maxdepth = self.max_depth
        try:
            ctrl = _etf_dec_versioned(&d)
        except DecodeError as e:
            raise DistProtocolError("bad control message: %s" % e) from None
        finally:
            Py_XDECREF(d.view)
            d.view = NULL
        if type(ctrl) is not tuple or not ctrl or type((<tuple>ctrl)[0]) is not int:
            raise DistProtocolError("control message is not a tuple with an operation: %.200r" % (ctrl,))
        t = <tuple>ctrl
        has = d.pos < end
        _dc_check_shape(t, has)
        op = t[0]
        msg = self._slow_payload(&d, buf) if has else _DC_NO_MSG
        if op == _DC_SEND or op == _DC_SEND_SENDER or op == _DC_SEND_TT or op == _DC_SEND_SENDER_TT:
            if msg is not _DC_NO_MSG:
                self._deliver(t[2], msg)
        elif op == _DC_REG_SEND or op == _DC_REG_SEND_TT:
            if msg is not _DC_NO_MSG:
                self._deliver_name(t[3], msg)
        elif op == _DC_ALIAS_SEND or op == _DC_ALIAS_SEND_TT:
            if msg is not _DC_NO_MSG:
                self._deliver_alias(t[2], msg)
        elif op == _DC_LINK:
            if not _dist_link(t[1], t[2]):
                self._exit_out(t[2], t[1], "noproc", True)
        elif op == _DC_UNLINK:
            _dist_unlink(t[1], t[2])
        elif op == _DC_UNLINK_ID:
            _dist_unlink(t[2], t[3])
            self._frame((_DC_UNLINK_ID_ACK, t[1], t[3], t[2]), _DC_NO_MSG)
        elif op == _DC_EXIT or op == _DC_EXIT2:
            _dist_exit(t[1], t[2], self._reason_in(t[3]), op == _DC_EXIT)
        elif op == _DC_EXIT_TT or op == _DC_EXIT2_TT:
            _dist_exit(t[1], t[2], self._reason_in(t[4]), op == _DC_EXIT_TT)
        elif op == _DC_PAYLOAD_EXIT or op == _DC_PAYLOAD_EXIT2 or op == _DC_PAYLOAD_EXIT_TT \
                or op == _DC_PAYLOAD_EXIT2_TT:
            if msg is not _DC_NO_MSG:
                _dist_exit(t[1], t[2], self._reason_in(msg),
                           op == _DC_PAYLOAD_EXIT or op == _DC_PAYLOAD_EXIT_TT)
        elif op == _DC_MONITOR_P:
            self._monitor_in(t[1], t[2], t[3])
        elif op == _DC_DEMONITOR_P:
            self._demonitor_in(t[1], t[2], t[3])
        elif op == _DC_MONITOR_P_EXIT:
            self._down_in(t, t[4])
        elif op == _DC_PAYLOAD_MONITOR_P_EXIT:
            if msg is not _DC_NO_MSG:
                self._down_in(t, msg)
        elif op == _DC_SPAWN_REQUEST or op == _DC_SPAWN_REQUEST_TT:
            if msg is not _DC_NO_MSG:
                self.conn.on_control(t, msg)
        elif op == _DC_SPAWN_REPLY or op == _DC_SPAWN_REPLY_TT:
            self.conn.on_control(t, _DC_NO_MSG)
        # GROUP_LEADER (pyotp keeps no group leader per process) and UNLINK_ID_ACK:
        # nothing to do once their shape is checked
        return 0

    cdef object _slow_payload(self, _EtfDec* d, bytearray buf):
        """The payload term ending the frame; _DC_NO_MSG when the Connection dropped it
        (too deep, or a pickle of a module the node lacks); raises to close."""
        cdef Py_ssize_t end = d.end
        d.python = self.python != 0
        d.loads = <PyObject*>self.loads if self.python else NULL
        try:
            msg = _etf_dec_versioned(d)
        except DecodeError as e:
            self.conn.on_payload_error(e)
            return _DC_NO_MSG
        finally:
            Py_XDECREF(d.view)
            d.view = NULL
        if d.pos != end:
            raise DistProtocolError("%d bytes of garbage after the message" % (end - d.pos))
        return msg

    cdef inline object _reason_in(self, object r):
        return r if self.python == _ETF_PY_ON else dist_from_erl(r)

    cdef int _down_in(self, tuple t, object raw) except -1:
        """MONITOR_P_EXIT from the peer for one of our requests: a call's server died (the
        caller wakes with the reason), a monitor fired, or an rpc's process ended."""
        cdef object ref = t[3]
        cdef object e = self.requests.get(ref)
        cdef int kind
        if e is None:
            return 0
        kind = (<tuple>e)[0]
        if kind == _DR_CALL or kind == _DR_GONE:
            del self.requests[ref]
            if _dist_awaits((<tuple>e)[1], ref):
                _dist_down((<tuple>e)[1], ref, (<tuple>e)[2], self._reason_in(raw))
        elif kind == _DR_MON:
            del self.requests[ref]
            _dist_down((<tuple>e)[1], ref, (<tuple>e)[2], self._reason_in(raw))
        elif kind == _DR_RPC:
            self.conn.on_control(t, raw)
        return 0

    def deliver(self, to, msg):
        """A message for local ``to`` (pid or name), as a SEND from the peer."""
        self._deliver(to, msg)

    cdef int _deliver(self, object to, object msg) except -1:
        """A reply to one of our remote calls wakes the caller (if it still waits) and
        ends the call's monitor."""
        cdef object entry, a, ref
        cdef bint lazy
        if type(msg) is tuple and len(<tuple>msg) == 2 and type((<tuple>msg)[0]) is ImproperList \
                and self.requests:
            a = _dc_alias_of((<tuple>msg)[0])   # {[alias | Ref], Reply} sent to the pid
            if a is not None and a in self.requests:
                msg = (a, (<tuple>msg)[1])
        if type(msg) is tuple and len(<tuple>msg) == 2 and type((<tuple>msg)[0]) is Reference \
                and self.requests:
            ref = (<tuple>msg)[0]
            entry = self.requests.get(ref)
            if entry is not None and ((<tuple>entry)[0] == _DR_CALL or (<tuple>entry)[0] == _DR_GONE):
                del self.requests[ref]
                caller = (<tuple>entry)[1]
                if _dist_awaits(caller, ref):
                    _dist_deliver_c(caller, msg)
                if (<tuple>entry)[0] == _DR_CALL:     # else: demonitored when it gave up
                    lazy = self.feeding and not self.bare and self.lazy == _etf_ba_size(self.wbuf) \
                        and self.lazy < _DC_LAZY_MAX \
                        and (self.hdr is None or not (<_DistHdr>self.hdr).rr)
                    self._frame((_DC_DEMONITOR_P, caller, _dc_wire_target((<tuple>entry)[2]), ref),
                                _DC_NO_MSG)
                    if lazy:
                        self.lazy = _etf_ba_size(self.wbuf)   # may wait for the next write
                return 0
        _dist_deliver_c(to, msg)
        return 0

    cdef int _deliver_alias(self, object ref, object msg) except -1:
        """ALIAS_SEND to the local alias ``ref``: the reply to one of our calls made with
        an alias tag ({[alias | Ref], Reply}), or a message for a pyotp.alias()."""
        cdef object e = self.requests.get(ref)
        if e is not None and ((<tuple>e)[0] == _DR_CALL or (<tuple>e)[0] == _DR_GONE):
            self._deliver((<tuple>e)[1],
                          (ref, (<tuple>msg)[1] if type(msg) is tuple and len(<tuple>msg) == 2 else msg))
            return 0
        _alias_deliver(ref, msg)
        return 0

    cdef int _deliver_name(self, object name, object msg) except -1:
        """REG_SEND to the registered ``name`` (an atom): a service of the distribution
        layer (net_kernel, rex, global, pg, ...) or a local process."""
        h = self.virtual.get(name)
        if h is not None:
            h(self.conn, msg)
        else:
            _dist_deliver_c(name, msg)
        return 0

    cdef int _monitor_in(self, object frm, object target, object ref) except -1:
        """MONITOR_P from the remote ``frm`` on a local pid or name (an atom); a target
        that does not exist gets its DOWN (noproc) at once."""
        # an Atom finds its str-keyed name as is (a str subclass with str's hash and
        # equality, its hash cached by the decoder's atom cache): no str copy per call
        got = _dist_monitor_c(frm, target, ref)
        if got is None:
            self._down_out(target, frm, ref, _DC_NOPROC if self.python != _ETF_PY_ON else "noproc", True)
        elif type(target) is Atom and ref not in self.requests:
            self.requests[ref] = (_DR_NAME, target, None)
        return 0

    cdef int _demonitor_in(self, object frm, object target, object ref) except -1:
        cdef object e = self.requests.get(ref)
        if e is not None and (<tuple>e)[0] == _DR_NAME:
            del self.requests[ref]
        _dist_demonitor_c(target, ref)
        return 0


cdef object _dc_printable(object reason):
    return ("unencodable_reason", repr(reason))
