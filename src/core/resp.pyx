# resp.pyx: the Redis serialization protocol (RESP2 and RESP3), for servers that Redis
# clients (redis-cli, redis-benchmark, redis-py) talk to. The public face is pyotp.resp.
#
# Owns: RespParser (client requests: multibulk "*N\r\n$len\r\n...\r\n" and inline
# commands, incrementally, across any split of the byte stream), RespProtocolError (the
# Redis error text of a protocol violation; the connection must be closed after sending
# it, as Redis does), RespErrorReply (a str that encodes as a "-" error reply) and
# resp_encode / resp_encode_into (Python values to RESP2 or RESP3 replies).
#
# Invariants:
#  - Input is hostile. Nothing is allocated from a declared length: a bulk is sliced out
#    only once all its bytes have arrived, so memory follows the bytes actually received.
#    A bulk length over max_bulk (512 MiB by default, Redis's proto-max-bulk-len), a
#    multibulk count over max_args, or a header/inline line longer than max_inline without
#    its terminator is a RespProtocolError with Redis's own wording.
#  - A partly received command keeps its state (args read so far, the pending bulk length)
#    between feeds, so a command trickled in byte by byte costs O(n), not O(n^2).
#  - Consumed bytes are dropped from the front of the buffer once they are most of it, so
#    the buffer holds at most one unparsed command plus one received chunk.
#  - After a RespProtocolError the parser is poisoned: every later feed raises again.
#  - The encoder does not recurse in C beyond _RESP_MAX_DEPTH nested containers.

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from libc.string cimport memchr

cdef Py_ssize_t _RESP_MAX_DEPTH = 64


class RespProtocolError(ValueError):
    """The client broke the protocol. ``str(e)`` is Redis's error text (``"Protocol
    error: invalid bulk length"``); reply ``-ERR <text>`` and close the connection.

    >>> try:
    ...     RespParser().feed(b"*1\\r\\n$1073741824\\r\\n")
    ... except RespProtocolError as e:
    ...     print(e)
    Protocol error: invalid bulk length
    """


class RespErrorReply(str):
    """An error reply: ``resp_encode(RespErrorReply("ERR no such key"))`` is
    ``b"-ERR no such key\\r\\n"``. The text must not contain CR or LF (they are replaced
    by spaces)."""
    __slots__ = ()


cdef inline bint _parse_ll(const char* s, Py_ssize_t n, long long* out) noexcept:
    # Redis's string2ll: optional '-', digits, no '+', no spaces, no leading zeros
    # (other than "0" itself), no overflow.
    cdef Py_ssize_t i = 0
    cdef bint neg = False
    cdef unsigned long long v = 0
    cdef unsigned long long lim
    if n <= 0 or n > 20:
        return False
    if s[0] == 45:  # '-'
        neg = True
        i = 1
        if n == 1:
            return False
    if s[i] == 48 and n - i > 1:  # leading zero
        return False
    while i < n:
        if s[i] < 48 or s[i] > 57:
            return False
        if v > 922337203685477580ULL:
            return False
        v = v * 10 + <unsigned long long>(s[i] - 48)
        i += 1
    lim = 9223372036854775808ULL if neg else 9223372036854775807ULL
    if v > lim:
        return False
    out[0] = -<long long>v if neg else <long long>v
    return True


cdef class RespParser:
    """Incremental parser of client requests. ``feed(data)`` returns the list of complete
    commands in ``data`` plus what was buffered before (each command a list of bytes
    arguments); an incomplete tail is kept for the next feed. A protocol violation raises
    RespProtocolError; the commands complete before it are returned first (as Redis runs
    them), with ``error`` set, and the next feed raises.

    >>> p = RespParser()
    >>> p.feed(b"*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n*1\\r\\n$4\\r\\nPI")
    [[b'GET', b'k']]
    >>> p.feed(b"NG\\r\\n")
    [[b'PING']]
    """
    cdef bytearray buf
    cdef Py_ssize_t pos
    cdef list cur              # arguments of the multibulk being read, or None
    cdef Py_ssize_t remaining  # arguments still expected in cur
    cdef long long bulk_len    # declared length of the next argument, -1 before its header
    cdef str poisoned
    cdef readonly Py_ssize_t max_bulk
    cdef readonly Py_ssize_t max_inline
    cdef readonly Py_ssize_t max_args

    def __init__(self, Py_ssize_t max_bulk=512 * 1024 * 1024, Py_ssize_t max_inline=64 * 1024,
                 Py_ssize_t max_args=1024 * 1024):
        if max_bulk < 1 or max_inline < 16 or max_args < 1:
            raise ValueError("RespParser limits must be positive (max_inline >= 16)")
        self.buf = bytearray()
        self.pos = 0
        self.cur = None
        self.remaining = 0
        self.bulk_len = -1
        self.poisoned = None
        self.max_bulk = max_bulk
        self.max_inline = max_inline
        self.max_args = max_args

    @property
    def buffered(self):
        """Bytes received and not yet returned as part of a command."""
        return PyByteArray_GET_SIZE(self.buf) - self.pos

    @property
    def error(self):
        """The protocol violation met so far (Redis's text), or None."""
        return self.poisoned

    cdef _fail(self, str msg):
        self.poisoned = msg
        self.buf = bytearray()
        self.pos = 0
        self.cur = None
        raise RespProtocolError(msg)

    def feed(self, data):
        cdef list out = []
        try:
            self._feed(data, out)
        except RespProtocolError:
            if not out:
                raise
        return out

    cdef _feed(self, data, list out):
        cdef const char* p
        cdef const char* nl
        cdef Py_ssize_t n, pos, start
        cdef long long ll = 0
        if self.poisoned is not None:
            raise RespProtocolError(self.poisoned)
        self.buf += data
        n = PyByteArray_GET_SIZE(self.buf)
        pos = self.pos
        while True:
            p = PyByteArray_AS_STRING(self.buf)
            if self.remaining == 0:
                if pos >= n:
                    break
                if p[pos] == 42:  # '*'
                    nl = <const char*>memchr(p + pos, 13, n - pos)
                    if nl == NULL:
                        if n - pos > self.max_inline:
                            self._fail("Protocol error: too big mbulk count string")
                        break
                    if nl + 1 >= p + n:
                        break  # the '\n' has not arrived yet
                    if not _parse_ll(p + pos + 1, (nl - p) - pos - 1, &ll) or ll > self.max_args:
                        self._fail("Protocol error: invalid multibulk length")
                    pos = (nl - p) + 2
                    if ll <= 0:
                        continue
                    self.remaining = <Py_ssize_t>ll
                    self.cur = []
                    self.bulk_len = -1
                else:
                    nl = <const char*>memchr(p + pos, 10, n - pos)
                    if nl == NULL:
                        if n - pos > self.max_inline:
                            self._fail("Protocol error: too big inline request")
                        break
                    start = pos
                    pos = (nl - p) + 1
                    line = PyBytes_FromStringAndSize(p + start, (nl - p) - start)
                    args = _split_inline(line)
                    if args is None:
                        self._fail("Protocol error: unbalanced quotes in request")
                    if args:
                        out.append(args)
                continue
            if self.bulk_len < 0:
                if pos >= n:
                    break
                if p[pos] != 36:  # '$'
                    self._fail("Protocol error: expected '$', got '%s'" % chr(<unsigned char>p[pos]))
                nl = <const char*>memchr(p + pos, 13, n - pos)
                if nl == NULL:
                    if n - pos > self.max_inline:
                        self._fail("Protocol error: too big bulk count string")
                    break
                if nl + 1 >= p + n:
                    break
                if not _parse_ll(p + pos + 1, (nl - p) - pos - 1, &ll) or ll < 0 or ll > self.max_bulk:
                    self._fail("Protocol error: invalid bulk length")
                self.bulk_len = ll
                pos = (nl - p) + 2
            if n - pos < self.bulk_len + 2:
                break
            self.cur.append(PyBytes_FromStringAndSize(p + pos, <Py_ssize_t>self.bulk_len))
            pos += <Py_ssize_t>self.bulk_len + 2
            self.bulk_len = -1
            self.remaining -= 1
            if self.remaining == 0:
                out.append(self.cur)
                self.cur = None
        if pos >= n:
            self.buf = bytearray()
            pos = 0
        elif pos > 65536 and pos * 2 > n:
            del self.buf[:pos]
            pos = 0
        self.pos = pos


cdef object _split_inline(bytes line):
    # sdssplitargs, as Redis splits an inline command: whitespace-separated words, "..."
    # with backslash escapes (\n \r \t \b \a \\ \" \xHH) and '...' (only \' escaped); a
    # closing quote must be followed by whitespace or the end. None on unbalanced quotes.
    cdef list args = []
    cdef Py_ssize_t i = 0, n = len(line)
    cdef unsigned char c, q
    cdef bytearray cur
    while True:
        while i < n and line[i] in b" \t\r\n\v\f\x00":
            i += 1
        if i >= n:
            return args
        cur = bytearray()
        c = line[i]
        if c == 34 or c == 39:  # '"' or "'"
            q = c
            i += 1
            while True:
                if i >= n:
                    return None
                c = line[i]
                if q == 34 and c == 92 and i + 1 < n:  # backslash in "..."
                    c = line[i + 1]
                    if c == 120 and i + 3 < n and _ishex(line[i + 2]) and _ishex(line[i + 3]):
                        cur.append(int(line[i + 2:i + 4], 16))
                        i += 4
                        continue
                    cur.append({110: 10, 114: 13, 116: 9, 98: 8, 97: 7}.get(c, c))
                    i += 2
                    continue
                if q == 39 and c == 92 and i + 1 < n and line[i + 1] == 39:
                    cur.append(39)
                    i += 2
                    continue
                if c == q:
                    i += 1
                    if i < n and line[i] not in b" \t\r\n\v\f\x00":
                        return None
                    break
                cur.append(c)
                i += 1
        else:
            while i < n and line[i] not in b" \t\r\n\v\f\x00":
                cur.append(line[i])
                i += 1
        args.append(bytes(cur))


cdef inline bint _ishex(unsigned char c) noexcept:
    return (48 <= c <= 57) or (65 <= c <= 70) or (97 <= c <= 102)


cdef bytes _CRLF = b"\r\n"


cdef _enc_line(bytearray out, bytes kind, object text):
    out += kind
    out += (<str>text).replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")
    out += _CRLF


cdef int _enc(bytearray out, object v, int proto, Py_ssize_t depth) except -1:
    cdef Py_ssize_t n
    cdef type t = type(v)
    if depth > _RESP_MAX_DEPTH:
        raise ValueError("resp_encode: containers nested deeper than %d" % _RESP_MAX_DEPTH)
    if t is bytes:
        n = len(<bytes>v)
        out += b"$%d\r\n" % n
        out += <bytes>v
        out += _CRLF
    elif t is int:
        out += b":%d\r\n" % <object>v
    elif v is None:
        out += b"_\r\n" if proto >= 3 else b"$-1\r\n"
    elif t is str:
        _enc_line(out, b"+", v)
    elif isinstance(v, RespErrorReply):
        _enc_line(out, b"-", v)
    elif t is list or t is tuple:
        out += b"*%d\r\n" % len(v)
        for x in v:
            _enc(out, x, proto, depth + 1)
    elif t is bool:
        if proto >= 3:
            out += b"#t\r\n" if v else b"#f\r\n"
        else:
            out += b":1\r\n" if v else b":0\r\n"
    elif t is float:
        s = repr(<double>v).encode() if v == v and v not in (float("inf"), float("-inf")) else (
            b"nan" if v != v else (b"inf" if v > 0 else b"-inf"))
        if proto >= 3:
            out += b","
            out += s
            out += _CRLF
        else:
            out += b"$%d\r\n" % len(s)
            out += s
            out += _CRLF
    elif t is dict:
        out += (b"%%%d\r\n" if proto >= 3 else b"*%d\r\n") % (len(v) if proto >= 3 else 2 * len(v))
        for k, x in (<dict>v).items():
            _enc(out, k, proto, depth + 1)
            _enc(out, x, proto, depth + 1)
    elif t is set or t is frozenset:
        out += (b"~%d\r\n" if proto >= 3 else b"*%d\r\n") % len(v)
        for x in v:
            _enc(out, x, proto, depth + 1)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _enc(out, bytes(v), proto, depth)
    elif isinstance(v, int):
        _enc(out, int(v), proto, depth)
    elif isinstance(v, str):
        _enc_line(out, b"+", v)
    else:
        raise TypeError("resp_encode: no RESP form for %s" % type(v).__name__)
    return 0


def resp_encode(v, int proto=2):
    """A reply as RESP bytes: bytes -> bulk string, str -> simple string, int -> integer,
    None -> null, list/tuple -> array, dict -> map (RESP2: flat array), set -> set (RESP2:
    array), bool and float (RESP2: integer and bulk string), RespErrorReply -> error.

    >>> resp_encode([b"a", 1, None, "OK"])
    b'*4\\r\\n$1\\r\\na\\r\\n:1\\r\\n$-1\\r\\n+OK\\r\\n'
    >>> resp_encode({b"proto": 3}, 3)
    b'%1\\r\\n$5\\r\\nproto\\r\\n:3\\r\\n'
    """
    cdef bytearray out = bytearray()
    _enc(out, v, proto, 0)
    return bytes(out)


def resp_encode_into(bytearray out, v, int proto=2):
    """Append the RESP form of ``v`` to ``out`` (all or nothing: on error ``out`` is left
    as it was).

    >>> buf = bytearray(); resp_encode_into(buf, b"x"); bytes(buf)
    b'$1\\r\\nx\\r\\n'
    """
    cdef Py_ssize_t n0 = PyByteArray_GET_SIZE(out)
    try:
        _enc(out, v, proto, 0)
    except BaseException:
        del out[n0:]
        raise
