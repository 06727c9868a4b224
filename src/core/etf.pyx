# etf.pyx: the Erlang External Term Format codec (the distribution hot path).
#
# Owns: term_to_binary / binary_to_term and their lower-level forms for the distribution
# layer (decode_term, decode_with_version, encode_term_into, term_to_iovec), the term types
# Erlang has and Python lacks (ImproperList, BitString, Port, ExportFun, OpaqueFun, and
# ListKey / MapKey, the hashable forms Erlang lists and maps take inside map keys),
# DecodeError, and the python=True extension that carries any picklable Python value
# between two pyotp nodes inside ordinary ETF. docs/etf.md is the reference for the type
# mapping and for the exact bytes of the extension.
#
# Invariants:
#  - The decoder never reads outside [buf, buf + end): every read is preceded by a bounds
#    check, and every declared length or count is checked against the bytes that remain
#    BEFORE anything is allocated for it (each element of a tuple, list or map takes at
#    least one byte, so a count larger than what is left is a lie, not a reason to
#    allocate). Compressed terms are inflated incrementally, so memory follows the bytes
#    actually produced, not the declared size.
#  - Neither direction recurses in C for tuples, lists or maps: open containers are frames
#    on an explicit stack (a small on-stack array, then the heap), bounded by
#    ETF_MAX_DEPTH, so neither a hostile frame nor a cyclic Python container can overflow
#    the C stack, on any thread. Proper-list tails (Erlang's [1 | [2 | ...]] chains) are
#    spliced in the same frame and do not count as depth. The only C recursion is one
#    level per nested NEW_FUN environment, capped at _ETF_FUN_DEPTH.
#  - The decoder unpickles only when its caller passed python=True; with python=False a
#    python-extension term is just a tuple.
#  - Output is all-or-nothing: term_to_binary builds in a private buffer, and
#    encode_term_into truncates the bytearray back to its old length on error.
#  - All C-level state here (the atom cache) is touched only with the GIL held.

from libc.string cimport memcpy, memcmp
from libc.math cimport isfinite
from libc.stdint cimport int32_t
from cpython.mem cimport PyMem_Realloc
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM, PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.dict cimport PyDict_Next, PyDict_SetItem, PyDict_Size
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_FromUnsignedLongLong

import pickle as _etf_pickle
import zlib as _etf_zlib

cdef extern from "Python.h":
    const char* _etf_utf8 "PyUnicode_AsUTF8AndSize"(object, Py_ssize_t*) except NULL
    const char* _etf_utf8_noexc "PyUnicode_AsUTF8AndSize"(object, Py_ssize_t*)
    object _etf_decode_utf8 "PyUnicode_DecodeUTF8"(const char*, Py_ssize_t, const char*)
    object _etf_decode_latin1 "PyUnicode_DecodeLatin1"(const char*, Py_ssize_t, const char*)
    Py_ssize_t _etf_ulen "PyUnicode_GET_LENGTH"(object)
    long long _etf_as_ll "PyLong_AsLongLongAndOverflow"(object, int*) except? -1
    int _etf_ba_resize "PyByteArray_Resize"(object, Py_ssize_t) except -1
    char* _etf_ba_str "PyByteArray_AS_STRING"(object)
    Py_ssize_t _etf_ba_size "PyByteArray_GET_SIZE"(object)
    void _etf_err_clear "PyErr_Clear"()

# Encoding into a caller's bytearray keeps a raw pointer to its storage while Python code
# may run (pickle's __reduce__, an int subclass's __index__, a finalizer): the bytearray is
# pinned meanwhile, as an exported buffer pins it, so that code gets BufferError from any
# resize instead of leaving the encoder writing into freed memory. Only the encoder's own
# growth unpins it for the moment of its resize.
cdef extern from *:
    """
    static inline void pyotp_ba_pin(PyObject *b) { ((PyByteArrayObject *)b)->ob_exports++; }
    static inline void pyotp_ba_unpin(PyObject *b) { ((PyByteArrayObject *)b)->ob_exports--; }
    """
    void _etf_ba_pin "pyotp_ba_pin"(object) noexcept
    void _etf_ba_unpin "pyotp_ba_unpin"(object) noexcept


# ---------------------------------------------------------------------------------------
# Tags (erl_ext_dist) and limits
# ---------------------------------------------------------------------------------------

cdef enum:
    _ETF_VERSION = 131
    _ETF_COMPRESSED = 80
    _ETF_NEW_FLOAT = 70
    _ETF_BIT_BINARY = 77
    _ETF_ATOM_CACHE_REF = 82
    _ETF_NEW_PID = 88
    _ETF_NEW_PORT = 89
    _ETF_NEWER_REFERENCE = 90
    _ETF_SMALL_INTEGER = 97
    _ETF_INTEGER = 98
    _ETF_FLOAT = 99
    _ETF_ATOM = 100
    _ETF_REFERENCE = 101
    _ETF_PORT = 102
    _ETF_PID = 103
    _ETF_SMALL_TUPLE = 104
    _ETF_LARGE_TUPLE = 105
    _ETF_NIL = 106
    _ETF_STRING = 107
    _ETF_LIST = 108
    _ETF_BINARY = 109
    _ETF_SMALL_BIG = 110
    _ETF_LARGE_BIG = 111
    _ETF_NEW_FUN = 112
    _ETF_EXPORT = 113
    _ETF_NEW_REFERENCE = 114
    _ETF_SMALL_ATOM = 115
    _ETF_MAP = 116
    _ETF_ATOM_UTF8 = 118
    _ETF_SMALL_ATOM_UTF8 = 119
    _ETF_V4_PORT = 120

    # nesting limit, both directions (the decoder's is per call: max_depth). BEAM itself
    # has none (its codec is iterative too); a million levels is far past what Erlang
    # programs send (a 20000-deep term is ordinary there) while bounding the decoder's
    # frame stack at some 64 MiB. Distribution sets it per connection (Node.start's
    # max_term_depth), and a message over it is dropped alone, not the connection.
    _ETF_DEPTH = 1000000
    _ETF_STACK_BUF = 512        # encoder's on-stack first buffer
    _ETF_OOB_MIN = 65536        # python mode: pickle buffers this big travel out of band
    # encoder python levels (_EtfEnc.python): off, on, and on without pickle (between
    # pyotp nodes that have not both configured Python payloads: exact str, no pickles)
    _ETF_PY_OFF = 0
    _ETF_PY_ON = 1
    _ETF_PY_NOPICKLE = 2
    _ETF_AC_SIZE = 4096         # atom cache slots (power of two)

ETF_MAX_DEPTH = _ETF_DEPTH
"""Deepest nesting of tuples/lists/maps the codec accepts by default (both directions;
the decoders take ``max_depth`` to lower or raise it per call)."""

PYOTP_EXT_MARKER = "$pyotp"
"""First element (an atom) of a python-extension tuple; see docs/etf.md."""

# The python-extension marker atom, exactly as we encode it: SMALL_ATOM_UTF8_EXT "$pyotp".
cdef bytes _ETF_MARKER = b"\x77\x06$pyotp"

# Names from terms.pyx, bound once so the hot paths do not look them up by name.
cdef object _etf_Atom = Atom
cdef object _etf_pickle_dumps = _etf_pickle.dumps
cdef object _etf_pickle_loads = _etf_pickle.loads


class DecodeError(ValueError):
    """Malformed External Term Format input. The message names the byte offset (from the
    start of the buffer given to the decoder) and what was wrong; ``offset`` holds it too.

    >>> pyotp.etf.binary_to_term(b"\\x83\\x6d\\x00\\x00\\x00\\x05ab")
    Traceback (most recent call last):
    DecodeError: truncated input at offset 6: binary needs 5 bytes, 2 left
    """

    def __init__(self, message, offset=None):
        ValueError.__init__(self, message)
        self.offset = offset


class TermTooDeep(DecodeError):
    """A well-formed term nested deeper than the decoder's ``max_depth``. Distribution
    drops that one message (with a logged error) and keeps the connection, unlike other
    DecodeErrors, which mean the peer is broken or hostile.

    >>> pyotp.etf.binary_to_term(b"\\x83h\\x01h\\x01a\\x00", max_depth=1)
    Traceback (most recent call last):
    TermTooDeep: term nested deeper than 1 levels at offset 3
    """


# ---------------------------------------------------------------------------------------
# Term types Erlang has and Python lacks
# ---------------------------------------------------------------------------------------

@cython.final
@cython.freelist(32)
cdef class ImproperList:
    """An Erlang list whose tail is not a list: ``[1, 2 | 3]``.

    ``items`` is a non-empty tuple of the elements, ``tail`` the non-list tail. OTP's
    ``gen_server:call`` sends ``{'$gen_call', {Pid, [alias | Ref]}, Req}``, which decodes
    to a tuple holding ``ImproperList([Atom('alias')], ref)``.

    >>> ImproperList([1, 2], 3)
    ImproperList([1, 2], 3)
    >>> binary_to_term(term_to_binary(ImproperList([1], Atom("x")))).tail
    Atom('x')
    """
    cdef readonly tuple items
    cdef readonly object tail

    def __init__(self, items, tail):
        items = tuple(items)
        if type(tail) is ImproperList:
            items = items + (<ImproperList>tail).items
            tail = (<ImproperList>tail).tail
        if isinstance(tail, (list, ListKey)):
            raise ValueError("ImproperList tail is a list: use a plain list instead")
        if not items:
            raise ValueError("ImproperList needs at least one element before the tail")
        self.items = items
        self.tail = tail

    def __eq__(self, other):
        if type(other) is not ImproperList:
            return NotImplemented
        return self.items == (<ImproperList>other).items and self.tail == (<ImproperList>other).tail

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self):
        return hash(("ImproperList", self.items, self.tail))

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __repr__(self):
        return "ImproperList(%r, %r)" % (list(self.items), self.tail)

    def __reduce__(self):
        return (ImproperList, (self.items, self.tail))


cdef class _EtfValue:
    """Equality, hashing and pickling shared by the codec's plain value classes: a value
    is its constructor arguments (``_args``), and equals only a value of its own type."""

    cdef tuple _args(self):
        raise NotImplementedError

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._args() == (<_EtfValue>other)._args()

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self):
        return hash((type(self).__name__,) + self._args())

    def __reduce__(self):
        return (type(self), self._args())


@cython.final
cdef class BitString(_EtfValue):
    """An Erlang bitstring whose size is not a whole number of bytes: ``<<5:3>>``.

    ``data`` holds the bits high-aligned (as Erlang does); ``bits`` (1..8) says how many
    bits of the last byte are used. Unused low bits are cleared on construction.

    >>> BitString(b"\\xa0", 3)        # <<5:3>>
    BitString(b'\\xa0', 3)
    >>> BitString(b"\\xa7", 3) == BitString(b"\\xa0", 3)
    True
    """
    cdef readonly bytes data
    cdef readonly int bits

    def __init__(self, data, int bits):
        data = bytes(data)
        if not data:
            raise ValueError("BitString needs at least one byte (an empty bitstring is b'')")
        if bits < 1 or bits > 8:
            raise ValueError("BitString bits must be 1..8, got %d" % bits)
        cdef unsigned char last = (<bytes>data)[len(data) - 1]
        cdef unsigned char mask = <unsigned char>(0xFF << (8 - bits))
        if last & ~mask:
            data = data[:len(data) - 1] + bytes([last & mask])
        self.data = data
        self.bits = bits

    @property
    def bit_size(self):
        """Total number of bits: ``(len(data) - 1) * 8 + bits``."""
        return (len(self.data) - 1) * 8 + self.bits

    cdef tuple _args(self):
        return (self.data, self.bits)

    def __repr__(self):
        return "BitString(%r, %d)" % (self.data, self.bits)


@cython.final
cdef class Port(_EtfValue):
    """An Erlang port identifier, ``#Port<0.7>``. pyotp has no ports of its own; this
    carries ports that Erlang nodes send, so they can be sent back unchanged.

    >>> Port("a@host", 7, 1)
    Port('a@host', 7, 1)
    """
    cdef readonly object node
    cdef readonly uint64_t id
    cdef readonly uint32_t creation

    def __init__(self, node, uint64_t id, uint32_t creation=0):
        if not isinstance(node, str):
            raise TypeError("Port node must be a str, got %r" % (node,))
        self.node = _etf_Atom(node)
        self.id = id
        self.creation = creation

    cdef tuple _args(self):
        return (str(self.node), self.id, self.creation)

    def __repr__(self):
        return "Port(%r, %d, %d)" % self._args()


@cython.final
cdef class ExportFun(_EtfValue):
    """An external fun, Erlang's ``fun Module:Function/Arity`` (EXPORT_EXT).

    >>> ExportFun("lists", "map", 2)
    ExportFun('lists', 'map', 2)
    """
    cdef readonly object module
    cdef readonly object function
    cdef readonly int arity

    def __init__(self, module, function, int arity):
        if not isinstance(module, str) or not isinstance(function, str):
            raise TypeError("ExportFun module and function must be str")
        if arity < 0 or arity > 255:
            raise ValueError("ExportFun arity must be 0..255, got %d" % arity)
        self.module = _etf_Atom(module)
        self.function = _etf_Atom(function)
        self.arity = arity

    cdef tuple _args(self):
        return (str(self.module), str(self.function), self.arity)

    def __repr__(self):
        return "ExportFun(%r, %r, %d)" % self._args()


@cython.final
cdef class OpaqueFun(_EtfValue):
    """A local Erlang fun (NEW_FUN_EXT), kept as its exact bytes (tag 112 included) so it
    can be sent back to Erlang unchanged. It cannot be called from Python.

    >>> erlang_fun = bytes.fromhex(   # term_to_binary(fun(X) -> X end) from a module m
    ...     "83700000004501c36433ee4f89eeab2ffd6a5b4122dba300000000000000006400016d61"
    ...     "0062061b219f5864000d6e6f6e6f6465406e6f686f7374000000090000000000000000")
    >>> f = binary_to_term(erlang_fun)
    >>> f.module, f.arity
    (Atom('m'), 1)
    >>> term_to_binary(f) == erlang_fun
    True
    """
    cdef readonly bytes data

    def __init__(self, data):
        data = bytes(data)
        if len(data) < 31 or data[0] != _ETF_NEW_FUN:
            raise ValueError("OpaqueFun data must be a NEW_FUN_EXT term starting with tag 112")
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
        if _etf_rd32(p + 1) != <uint32_t>(len(data) - 1):
            raise ValueError("OpaqueFun size field does not match the data length")
        self.data = data

    @property
    def arity(self):
        """The fun's arity."""
        return self.data[5]

    @property
    def module(self):
        """The module the fun was defined in (an Atom)."""
        return decode_term(self.data, 30)[0]

    cdef tuple _args(self):
        return (self.data,)

    def __repr__(self):
        try:
            return "<OpaqueFun %s/%d, %d bytes>" % (self.module, self.arity, len(self.data))
        except Exception:
            return "<OpaqueFun %d bytes>" % len(self.data)


@cython.final
cdef class ListKey:
    """An Erlang list inside a map key. Python lists cannot be dict keys, so a list that
    is (part of) an Erlang map key decodes as ListKey; it encodes back as a list. It is
    equal to a ListKey or list with the same elements (never to a tuple: Erlang tells
    ``[1]`` from ``{1}``).

    >>> binary_to_term(term_to_binary({ListKey([1, 2]): "v"}))
    {ListKey([1, 2]): b'v'}
    >>> ListKey("ab") == [97, 98] or ListKey([97, 98]) == [97, 98]
    True
    """
    cdef readonly tuple items

    def __init__(self, items=()):
        self.items = tuple(items)

    def __eq__(self, other):
        if type(other) is ListKey:
            return self.items == (<ListKey>other).items
        if isinstance(other, list):
            return list(self.items) == other
        return NotImplemented

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self):
        return hash(("ListKey", self.items))

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def __repr__(self):
        return "ListKey(%r)" % (list(self.items),)

    def __reduce__(self):
        return (ListKey, (self.items,))


@cython.final
cdef class MapKey:
    """An Erlang map inside a map key (dicts cannot be dict keys). ``items`` is a tuple
    of ``(key, value)`` pairs in wire order; equality ignores order, as for maps. Encodes
    back as a map; ``to_dict()`` gives a plain dict.

    >>> MapKey({"a": 1}) == MapKey([("a", 1)]) == {"a": 1}
    True
    """
    cdef readonly tuple items

    def __init__(self, items=()):
        if isinstance(items, dict):
            items = items.items()
        items = tuple((k, v) for k, v in items)
        if len(dict(items)) != len(items):
            raise ValueError("MapKey has duplicate keys")
        self.items = items

    def to_dict(self):
        """The map as a plain dict."""
        return dict(self.items)

    def __eq__(self, other):
        if type(other) is MapKey:
            return dict(self.items) == dict((<MapKey>other).items)
        if isinstance(other, dict):
            return dict(self.items) == other
        return NotImplemented

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self):
        return hash(("MapKey", frozenset(self.items)))

    def __len__(self):
        return len(self.items)

    def __repr__(self):
        return "MapKey(%r)" % (dict(self.items),)

    def __reduce__(self):
        return (MapKey, (self.items,))


# ---------------------------------------------------------------------------------------
# Byte helpers
# ---------------------------------------------------------------------------------------

cdef inline uint32_t _etf_rd32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0]) << 24) | ((<uint32_t>p[1]) << 16) | ((<uint32_t>p[2]) << 8) | p[3]

cdef inline uint32_t _etf_rd16(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0]) << 8) | p[1]

cdef inline uint64_t _etf_rd64(const unsigned char* p) noexcept nogil:
    return ((<uint64_t>_etf_rd32(p)) << 32) | _etf_rd32(p + 4)

cdef inline void _etf_wr32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v

cdef inline void _etf_wr16(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v

cdef inline void _etf_wr64(unsigned char* p, uint64_t v) noexcept nogil:
    _etf_wr32(p, <uint32_t>(v >> 32))
    _etf_wr32(p + 4, <uint32_t>v)


# ---------------------------------------------------------------------------------------
# Encoder
#
# One _EtfEnc lives on the C stack per public call. Bytes go to `data`: first a stack
# buffer, then a PyMem heap block, or (encode_term_into) straight into the caller's
# bytearray. In iovec mode (`chunks` set) large out-of-band pickle buffers are not copied:
# the bytes so far are flushed as one chunk and the buffer's memoryview is appended.
# ---------------------------------------------------------------------------------------

cdef struct _EtfEnc:
    unsigned char* data
    Py_ssize_t len
    Py_ssize_t cap
    unsigned char* heap       # owned PyMem block, or NULL
    PyObject* bytearray       # borrowed: data lives in this bytearray, or NULL
    PyObject* chunks          # borrowed list: iovec mode, or NULL
    int python                # _ETF_PY_OFF / _ETF_PY_ON / _ETF_PY_NOPICKLE
    int keymode               # encoding (part of) a map key


cdef int _etf_grow(_EtfEnc* e, Py_ssize_t need) except -1:
    cdef Py_ssize_t want = e.len + need
    cdef Py_ssize_t newcap = e.cap * 2
    cdef unsigned char* p
    if need < 0 or want < e.len:
        raise MemoryError("term too large to encode")
    if newcap < want:
        newcap = want + 64
    if e.bytearray != NULL:
        _etf_ba_unpin(<object>e.bytearray)
        try:
            _etf_ba_resize(<object>e.bytearray, newcap)
        finally:
            _etf_ba_pin(<object>e.bytearray)
        e.data = <unsigned char*>_etf_ba_str(<object>e.bytearray)
    elif e.heap == NULL:
        p = <unsigned char*>PyMem_Malloc(newcap)
        if p == NULL:
            raise MemoryError()
        memcpy(p, e.data, e.len)
        e.heap = p
        e.data = p
    else:
        p = <unsigned char*>PyMem_Realloc(e.heap, newcap)
        if p == NULL:
            raise MemoryError()
        e.heap = p
        e.data = p
    e.cap = newcap
    return 0


cdef inline unsigned char* _etf_reserve(_EtfEnc* e, Py_ssize_t n) except NULL:
    """Room for n more bytes; returns where to write them (caller bumps e.len)."""
    if e.cap - e.len < n:
        _etf_grow(e, n)
    return e.data + e.len


cdef inline int _etf_put_bytes(_EtfEnc* e, const void* src, Py_ssize_t n) except -1:
    cdef unsigned char* p = _etf_reserve(e, n)
    memcpy(p, src, n)
    e.len += n
    return 0


cdef int _etf_flush_chunk(_EtfEnc* e) except -1:
    if e.len:
        (<list>e.chunks).append(PyBytes_FromStringAndSize(<char*>e.data, e.len))
        e.len = 0
    return 0


cdef int _etf_enc_atom(_EtfEnc* e, object s) except -1:
    """s: any str, written as an atom (SMALL_ATOM_UTF8_EXT, or ATOM_UTF8_EXT if >255 bytes)."""
    cdef Py_ssize_t n
    cdef const char* u
    cdef unsigned char* p
    if _etf_ulen(s) > 255:
        raise ValueError("atom too long: %d characters (Erlang allows 255)" % _etf_ulen(s))
    u = _etf_utf8(s, &n)
    if n < 256:
        p = _etf_reserve(e, n + 2)
        p[0] = _ETF_SMALL_ATOM_UTF8
        p[1] = <unsigned char>n
        memcpy(p + 2, u, n)
        e.len += n + 2
    else:
        p = _etf_reserve(e, n + 3)
        p[0] = _ETF_ATOM_UTF8
        _etf_wr16(p + 1, <uint32_t>n)
        memcpy(p + 3, u, n)
        e.len += n + 3
    return 0


cdef int _etf_enc_binary(_EtfEnc* e, const void* src, Py_ssize_t n) except -1:
    cdef unsigned char* p
    if <uint64_t>n > 0xFFFFFFFFULL:
        raise ValueError("binary of %d bytes is too large for the external term format" % n)
    p = _etf_reserve(e, n + 5)
    p[0] = _ETF_BINARY
    _etf_wr32(p + 1, <uint32_t>n)
    memcpy(p + 5, src, n)
    e.len += n + 5
    return 0


cdef int _etf_enc_buffer(_EtfEnc* e, object x, bint may_defer) except -1:
    """A binary from any contiguous buffer; in iovec mode big ones become their own chunk."""
    cdef Py_buffer view
    cdef unsigned char* p
    try:
        PyObject_GetBuffer(x, &view, PyBUF_SIMPLE)
    except BufferError:
        return _etf_enc_buffer(e, memoryview(x).tobytes(), 0)
    try:
        if may_defer and e.chunks != NULL and view.len >= _ETF_OOB_MIN:
            if <uint64_t>view.len > 0xFFFFFFFFULL:
                raise ValueError("binary of %d bytes is too large for the external term format" % view.len)
            p = _etf_reserve(e, 5)
            p[0] = _ETF_BINARY
            _etf_wr32(p + 1, <uint32_t>view.len)
            e.len += 5
            _etf_flush_chunk(e)
            mv = memoryview(x)
            if mv.format != "B" or mv.ndim != 1:
                mv = mv.cast("B")
            (<list>e.chunks).append(mv)
        else:
            _etf_enc_binary(e, view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int _etf_enc_int(_EtfEnc* e, object x) except -1:
    cdef int overflow = 0
    cdef long long v = _etf_as_ll(x, &overflow)
    cdef unsigned long long mag
    cdef unsigned char* p
    cdef int n, i
    if overflow == 0:
        if 0 <= v <= 255:
            p = _etf_reserve(e, 2)
            p[0] = _ETF_SMALL_INTEGER
            p[1] = <unsigned char>v
            e.len += 2
            return 0
        if -2147483648LL <= v <= 2147483647LL:
            p = _etf_reserve(e, 5)
            p[0] = _ETF_INTEGER
            _etf_wr32(p + 1, <uint32_t>(<int64_t>v))
            e.len += 5
            return 0
        mag = (<unsigned long long>0 - <unsigned long long>v) if v < 0 else <unsigned long long>v
        n = 0
        while (mag >> (8 * n)) and n < 8:
            n += 1
        p = _etf_reserve(e, 3 + n)
        p[0] = _ETF_SMALL_BIG
        p[1] = <unsigned char>n
        p[2] = 1 if v < 0 else 0
        for i in range(n):
            p[3 + i] = <unsigned char>(mag >> (8 * i))
        e.len += 3 + n
        return 0
    # |x| >= 2**63: rare, let Python do the digit work
    neg = overflow < 0
    m = -x if neg else x
    nbytes = (m.bit_length() + 7) // 8
    digits = (<object>m).to_bytes(nbytes, "little")
    if nbytes <= 255:
        p = _etf_reserve(e, 3)
        p[0] = _ETF_SMALL_BIG
        p[1] = <unsigned char>nbytes
        p[2] = 1 if neg else 0
        e.len += 3
    else:
        if nbytes > 0xFFFFFFFF:
            raise ValueError("integer too large for the external term format")
        p = _etf_reserve(e, 6)
        p[0] = _ETF_LARGE_BIG
        _etf_wr32(p + 1, <uint32_t>nbytes)
        p[5] = 1 if neg else 0
        e.len += 6
    _etf_put_bytes(e, PyBytes_AS_STRING(digits), PyBytes_GET_SIZE(digits))
    return 0


cdef int _etf_enc_float(_EtfEnc* e, double f) except -1:
    cdef uint64_t u
    cdef unsigned char* p
    if not isfinite(f):
        raise ValueError("cannot encode non-finite float %r: Erlang floats are finite" % f)
    memcpy(&u, &f, 8)
    p = _etf_reserve(e, 9)
    p[0] = _ETF_NEW_FLOAT
    _etf_wr64(p + 1, u)
    e.len += 9
    return 0


# Containers are encoded without C recursion: each open container is a frame on an
# explicit stack (a small array on the C stack, moved to the heap when it grows), so a
# deep or cyclic term costs at most ETF_MAX_DEPTH frames of heap, never C stack.

cdef enum:
    _EK_TUPLE = 0       # tuple (or subclass)
    _EK_LIST = 1        # list (or subclass); NIL written when done
    _EK_DICT = 2        # dict (or subclass)
    _EK_IMPROPER = 3    # ImproperList: obj = items tuple, pending = tail
    _EK_PAIRS = 4       # MapKey: obj = tuple of (key, value) pairs


cdef struct _EtfEFrame:
    PyObject* obj        # owned: the container being walked
    PyObject* pending    # owned: dict value waiting for its key, or the improper tail
    PyObject* key        # owned: current dict key (only while `seen` is in use)
    PyObject* seen       # owned: set of encoded keys (plain-mode collision check) or NULL
    Py_ssize_t i
    Py_ssize_t n
    Py_ssize_t pos       # PyDict_Next position
    Py_ssize_t keystart  # offset in e.data where the current key's bytes start
    int kind
    int km               # keymode the container was opened in
    int stage


cdef struct _EtfEStack:
    _EtfEFrame* f
    Py_ssize_t top
    Py_ssize_t cap
    bint heap


cdef _EtfEFrame* _etf_epush(_EtfEStack* st, int kind, object obj, Py_ssize_t n, int km) except NULL:
    cdef _EtfEFrame* nf
    cdef _EtfEFrame* fr
    if st.top >= _ETF_DEPTH:
        raise ValueError("term nested deeper than %d levels (a cyclic container?)" % _ETF_DEPTH)
    if st.top == st.cap:
        nf = <_EtfEFrame*>PyMem_Malloc(st.cap * 2 * sizeof(_EtfEFrame))
        if nf == NULL:
            raise MemoryError()
        memcpy(nf, st.f, st.top * sizeof(_EtfEFrame))
        if st.heap:
            PyMem_Free(st.f)
        st.f = nf
        st.cap *= 2
        st.heap = True
    fr = &st.f[st.top]
    Py_INCREF(obj)
    fr.obj = <PyObject*>obj
    fr.pending = NULL
    fr.key = NULL
    fr.seen = NULL
    fr.i = 0
    fr.n = n
    fr.pos = 0
    fr.keystart = 0
    fr.kind = kind
    fr.km = km
    fr.stage = 0
    st.top += 1
    return fr


cdef void _etf_epop(_EtfEStack* st) noexcept:
    cdef _EtfEFrame* fr
    st.top -= 1
    fr = &st.f[st.top]
    Py_XDECREF(fr.obj)
    Py_XDECREF(fr.pending)
    Py_XDECREF(fr.key)
    Py_XDECREF(fr.seen)


cdef int _etf_open_tuple(_EtfEnc* e, object x, _EtfEStack* st) except -1:
    cdef Py_ssize_t n = PyTuple_GET_SIZE(x)
    cdef unsigned char* p
    if n < 256:
        p = _etf_reserve(e, 2)
        p[0] = _ETF_SMALL_TUPLE
        p[1] = <unsigned char>n
        e.len += 2
    else:
        if <uint64_t>n > 0xFFFFFFFFULL:
            raise ValueError("tuple too large")
        p = _etf_reserve(e, 5)
        p[0] = _ETF_LARGE_TUPLE
        _etf_wr32(p + 1, <uint32_t>n)
        e.len += 5
    if n:
        _etf_epush(st, _EK_TUPLE, x, n, e.keymode)
    return 0


cdef int _etf_open_list(_EtfEnc* e, object x, _EtfEStack* st) except -1:
    """Any list (exact or subclass): STRING_EXT when every element is an int in 0..255
    and there are at most 65535 (as Erlang does), else LIST_EXT ... NIL."""
    cdef Py_ssize_t n = PyList_GET_SIZE(x)
    cdef Py_ssize_t i
    cdef unsigned char* p
    cdef PyObject* it
    cdef bint bytelike
    cdef long long v
    cdef int ovf = 0
    if n == 0:
        p = _etf_reserve(e, 1)
        p[0] = _ETF_NIL
        e.len += 1
        return 0
    bytelike = n <= 65535
    if bytelike:
        for i in range(n):
            it = PyList_GET_ITEM(x, i)
            if type(<object>it) is not int:
                bytelike = False
                break
            v = _etf_as_ll(<object>it, &ovf)
            if v < 0 or v > 255 or ovf:
                bytelike = False
                break
    if bytelike:
        p = _etf_reserve(e, 3 + n)
        p[0] = _ETF_STRING
        _etf_wr16(p + 1, <uint32_t>n)
        for i in range(n):
            p[3 + i] = <unsigned char>_etf_as_ll(<object>PyList_GET_ITEM(x, i), &ovf)
        e.len += 3 + n
        return 0
    if <uint64_t>n > 0xFFFFFFFFULL:
        raise ValueError("list too large")
    p = _etf_reserve(e, 5)
    p[0] = _ETF_LIST
    _etf_wr32(p + 1, <uint32_t>n)
    e.len += 5
    _etf_epush(st, _EK_LIST, x, n, e.keymode)
    return 0


cdef int _etf_key_class(object k) except -1:
    """For the plain-mode duplicate-key check: which Erlang-colliding family a key is in."""
    cdef type t = type(k)
    if t is int or t is float or t is Pid or t is Reference:
        return 0
    if t is _etf_Atom:
        if k == "true" or k == "false" or k == "nil":
            return 4
        return 0
    if t is str:
        return 1
    if t is bytes or t is bytearray or t is memoryview:
        return 2
    if t is bool or k is None:
        return 8
    return 16


cdef int _etf_open_map(_EtfEnc* e, object x, _EtfEStack* st) except -1:
    cdef Py_ssize_t n = PyDict_Size(x)
    cdef Py_ssize_t pos = 0
    cdef PyObject* kp
    cdef PyObject* vp
    cdef unsigned char* p
    cdef int classes = 0
    cdef _EtfEFrame* fr
    if <uint64_t>n > 0xFFFFFFFFULL:
        raise ValueError("dict too large")
    p = _etf_reserve(e, 5)
    p[0] = _ETF_MAP
    _etf_wr32(p + 1, <uint32_t>n)
    e.len += 5
    if n == 0:
        return 0
    fr = _etf_epush(st, _EK_DICT, x, n, e.keymode)
    if not e.python and n >= 2:
        # Distinct Python keys can encode to the same Erlang term ("a" and b"a" are both
        # <<"a">>; True and Atom("true") are both 'true'), which Erlang rejects. Only
        # key mixes that can collide pay for the check.
        while PyDict_Next(x, &pos, &kp, &vp):
            classes |= _etf_key_class(<object>kp)
        if (classes & 16) or (classes & 3) == 3 or (classes & 12) == 12:
            seen = set()
            Py_INCREF(seen)
            fr.seen = <PyObject*>seen
    return 0


cdef int _etf_enc_next(_EtfEnc* e, _EtfEStack* st, PyObject** out) except -1:
    """Advance the innermost open container: set *out (a new reference) to the next
    object to encode and return 1, or return 0 when every container is finished. Closing
    bytes (NIL) and end-of-container checks happen here."""
    cdef _EtfEFrame* f
    cdef PyObject* k
    cdef PyObject* v
    cdef PyObject* o
    cdef unsigned char* p
    while st.top:
        f = &st.f[st.top - 1]
        if f.kind == _EK_TUPLE or f.kind == _EK_IMPROPER:
            if f.i < f.n:
                o = PyTuple_GET_ITEM(<object>f.obj, f.i)
                Py_INCREF(<object>o)
                out[0] = o
                f.i += 1
                e.keymode = f.km
                return 1
            if f.kind == _EK_IMPROPER and f.stage == 0:
                f.stage = 1
                out[0] = f.pending
                f.pending = NULL
                e.keymode = f.km
                return 1
        elif f.kind == _EK_LIST:
            if PyList_GET_SIZE(<object>f.obj) != f.n:
                raise RuntimeError("list changed size during encoding")
            if f.i < f.n:
                o = PyList_GET_ITEM(<object>f.obj, f.i)
                Py_INCREF(<object>o)
                out[0] = o
                f.i += 1
                e.keymode = f.km
                return 1
            p = _etf_reserve(e, 1)
            p[0] = _ETF_NIL
            e.len += 1
        elif f.kind == _EK_DICT:
            if f.stage == 1:
                # the key is fully written: check it, then hand out its value
                if f.seen != NULL:
                    kb = PyBytes_FromStringAndSize(<char*>e.data + f.keystart, e.len - f.keystart)
                    if kb in <set>f.seen:
                        raise ValueError("dict keys collide in Erlang: %r encodes like an earlier key"
                                         % (<object>f.key,))
                    (<set>f.seen).add(kb)
                f.stage = 0
                out[0] = f.pending
                f.pending = NULL
                e.keymode = f.km
                return 1
            if PyDict_Next(<object>f.obj, &f.pos, &k, &v):
                f.i += 1
                Py_INCREF(<object>v)
                f.pending = v
                if f.seen != NULL:
                    Py_INCREF(<object>k)
                    Py_XDECREF(f.key)
                    f.key = k
                f.keystart = e.len
                f.stage = 1
                e.keymode = 1
                Py_INCREF(<object>k)
                out[0] = k
                return 1
            if f.i != f.n or PyDict_Size(<object>f.obj) != f.n:
                raise RuntimeError("dict changed size during encoding")
        else:   # _EK_PAIRS
            if f.i < f.n:
                o = PyTuple_GET_ITEM(<object>PyTuple_GET_ITEM(<object>f.obj, f.i), f.stage)
                Py_INCREF(<object>o)
                out[0] = o
                if f.stage == 0:
                    f.stage = 1
                    e.keymode = 1
                else:
                    f.stage = 0
                    f.i += 1
                    e.keymode = f.km
                return 1
        _etf_epop(st)
    return 0


# Pid/Reference fields are read directly (same module) instead of through their node /
# creation properties, mirroring them exactly: `_node is None` means local, and then the
# node and creation are the local node's current ones (terms.pyx's invariant).

cdef int _etf_enc_pid(_EtfEnc* e, Pid pid) except -1:
    cdef unsigned char* p
    cdef uint64_t pid_id = pid.id
    cdef uint32_t creation = _local_creation if pid._node is None else pid._creation
    if pid_id > 0xFFFFFFFFULL:
        raise ValueError("pid id %d does not fit the external term format" % pid_id)
    p = _etf_reserve(e, 1)
    p[0] = _ETF_NEW_PID
    e.len += 1
    _etf_enc_atom(e, _local_node if pid._node is None else pid._node)
    p = _etf_reserve(e, 12)
    _etf_wr32(p, <uint32_t>pid_id)
    _etf_wr32(p + 4, pid.serial)
    _etf_wr32(p + 8, creation)
    e.len += 12
    return 0


cdef int _etf_enc_ref(_EtfEnc* e, Reference ref) except -1:
    cdef unsigned char* p
    cdef tuple ids = ref._ids if ref._ids is not None else ref.ids
    cdef Py_ssize_t n = PyTuple_GET_SIZE(ids), i
    if n < 1 or n > 5:
        raise ValueError("reference must have 1..5 id words, got %d" % n)
    p = _etf_reserve(e, 3)
    p[0] = _ETF_NEWER_REFERENCE
    _etf_wr16(p + 1, <uint32_t>n)
    e.len += 3
    _etf_enc_atom(e, _local_node if ref._node is None else ref._node)
    p = _etf_reserve(e, 4 + 4 * n)
    _etf_wr32(p, _local_creation if ref._node is None else ref._creation)
    for i in range(n):
        _etf_wr32(p + 4 + 4 * i, <uint32_t>(<object>PyTuple_GET_ITEM(ids, i)))
    e.len += 4 + 4 * n
    return 0


cdef int _etf_enc_port(_EtfEnc* e, Port port) except -1:
    cdef unsigned char* p
    p = _etf_reserve(e, 1)
    p[0] = _ETF_NEW_PORT if port.id <= 0xFFFFFFFFULL else _ETF_V4_PORT
    e.len += 1
    _etf_enc_atom(e, port.node)
    if port.id <= 0xFFFFFFFFULL:
        p = _etf_reserve(e, 8)
        _etf_wr32(p, <uint32_t>port.id)
        _etf_wr32(p + 4, port.creation)
        e.len += 8
    else:
        p = _etf_reserve(e, 12)
        _etf_wr64(p, port.id)
        _etf_wr32(p + 8, port.creation)
        e.len += 12
    return 0


cdef int _etf_enc_bitstring(_EtfEnc* e, BitString b) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b.data)
    cdef unsigned char* p
    if b.bits == 8:
        return _etf_enc_binary(e, PyBytes_AS_STRING(b.data), n)
    if <uint64_t>n > 0xFFFFFFFFULL:
        raise ValueError("bitstring too large")
    p = _etf_reserve(e, 6 + n)
    p[0] = _ETF_BIT_BINARY
    _etf_wr32(p + 1, <uint32_t>n)
    p[5] = <unsigned char>b.bits
    memcpy(p + 6, PyBytes_AS_STRING(b.data), n)
    e.len += 6 + n
    return 0


cdef int _etf_enc_export(_EtfEnc* e, ExportFun f) except -1:
    cdef unsigned char* p = _etf_reserve(e, 1)
    p[0] = _ETF_EXPORT
    e.len += 1
    _etf_enc_atom(e, f.module)
    _etf_enc_atom(e, f.function)
    p = _etf_reserve(e, 2)
    p[0] = _ETF_SMALL_INTEGER
    p[1] = <unsigned char>f.arity
    e.len += 2
    return 0


@cython.final
cdef class _EtfOOB:
    """pickle buffer_callback: big contiguous buffers go out of band (returned False)."""
    cdef list bufs

    def __cinit__(self):
        self.bufs = []

    def __call__(self, pb):
        try:
            raw = pb.raw()
        except BufferError:
            return True
        if raw.nbytes >= _ETF_OOB_MIN:
            self.bufs.append(raw)
            return False
        return True


cdef int _etf_enc_pickle(_EtfEnc* e, object x) except -1:
    """python mode: {'$pyotp', 1, Pickle} or {'$pyotp', 2, Pickle, [Buffer, ...]}."""
    cdef _EtfOOB oob = _EtfOOB()
    cdef unsigned char* p
    cdef Py_ssize_t nb, i
    if e.python == _ETF_PY_NOPICKLE:
        raise TypeError("cannot send %s to this node: it is no Erlang term and Python payloads "
                        "are off on this connection (both nodes need python_payloads)"
                        % type(x).__qualname__)
    try:
        payload = _etf_pickle_dumps(x, 5, buffer_callback=oob)
    except Exception as exc:
        raise TypeError("cannot encode %s even with python=True: %s" % (type(x).__qualname__, exc)) from exc
    nb = len(oob.bufs)
    p = _etf_reserve(e, 2 + 8 + 2)
    p[0] = _ETF_SMALL_TUPLE
    p[1] = 3 if nb == 0 else 4
    memcpy(p + 2, PyBytes_AS_STRING(_ETF_MARKER), 8)
    p[10] = _ETF_SMALL_INTEGER
    p[11] = 1 if nb == 0 else 2
    e.len += 12
    _etf_enc_binary(e, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
    if nb:
        p = _etf_reserve(e, 5)
        p[0] = _ETF_LIST
        _etf_wr32(p + 1, <uint32_t>nb)
        e.len += 5
        for i in range(nb):
            _etf_enc_buffer(e, oob.bufs[i], 1)
        p = _etf_reserve(e, 1)
        p[0] = _ETF_NIL
        e.len += 1
    return 0


cdef int _etf_enc_pystr(_EtfEnc* e, object x) except -1:
    """python mode str: {'$pyotp', 0, <<UTF-8>>}; strings that are not valid UTF-8
    (lone surrogates) are pickled instead."""
    cdef Py_ssize_t n
    cdef const char* u = _etf_utf8_noexc(x, &n)
    cdef unsigned char* p
    if u == NULL:
        _etf_err_clear()
        return _etf_enc_pickle(e, x)
    p = _etf_reserve(e, 12)
    p[0] = _ETF_SMALL_TUPLE
    p[1] = 3
    memcpy(p + 2, PyBytes_AS_STRING(_ETF_MARKER), 8)
    p[10] = _ETF_SMALL_INTEGER
    p[11] = 0
    e.len += 12
    return _etf_enc_binary(e, u, n)


cdef inline bint _etf_special_atom(object a):
    # atoms whose name would decode to something else (true/false/nil)
    cdef Py_ssize_t n = _etf_ulen(a)
    return (n == 4 or n == 5 or n == 3) and (a == "true" or a == "false" or a == "nil")


cdef int _etf_enc_item(_EtfEnc* e, object x, _EtfEStack* st) except -1:
    """Write one term: scalars completely; containers their header, pushing a frame for
    their elements (which _etf_enc_next then hands out one by one)."""
    cdef type t = type(x)
    cdef unsigned char* p
    cdef Py_ssize_t n
    cdef const char* u
    if t is tuple:
        if e.python and PyTuple_GET_SIZE(x) and type(<object>PyTuple_GET_ITEM(x, 0)) is _etf_Atom \
                and <object>PyTuple_GET_ITEM(x, 0) == "$pyotp":
            return _etf_enc_pickle(e, x)      # the marker is reserved: escape such tuples
        return _etf_open_tuple(e, x, st)
    if t is _etf_Atom:
        if e.python and _etf_special_atom(x):
            return _etf_enc_pickle(e, x)
        return _etf_enc_atom(e, x)
    if t is int:
        return _etf_enc_int(e, x)
    if t is bytes:
        return _etf_enc_binary(e, PyBytes_AS_STRING(x), PyBytes_GET_SIZE(x))
    if t is str:
        if e.python:
            return _etf_enc_pystr(e, x)
        u = _etf_utf8(x, &n)
        return _etf_enc_binary(e, u, n)
    if t is list:
        return _etf_open_list(e, x, st)
    if t is dict:
        return _etf_open_map(e, x, st)
    if x is None or t is bool:
        p = _etf_reserve(e, 7)
        p[0] = _ETF_SMALL_ATOM_UTF8
        if x is None:
            p[1] = 3
            memcpy(p + 2, <const char*>b"nil", 3)
        elif x is True:
            p[1] = 4
            memcpy(p + 2, <const char*>b"true", 4)
        else:
            p[1] = 5
            memcpy(p + 2, <const char*>b"false", 5)
        e.len += 2 + p[1]
        return 0
    if t is float:
        if e.python and not isfinite(PyFloat_AS_DOUBLE(x)):
            return _etf_enc_pickle(e, x)
        return _etf_enc_float(e, PyFloat_AS_DOUBLE(x))
    if t is Pid:
        return _etf_enc_pid(e, <Pid>x)
    if t is Reference:
        return _etf_enc_ref(e, <Reference>x)
    if t is ImproperList:
        n = PyTuple_GET_SIZE((<ImproperList>x).items)
        p = _etf_reserve(e, 5)
        p[0] = _ETF_LIST
        _etf_wr32(p + 1, <uint32_t>n)
        e.len += 5
        _etf_epush(st, _EK_IMPROPER, (<ImproperList>x).items, n, e.keymode).pending = \
            <PyObject*>(<ImproperList>x).tail
        Py_INCREF((<ImproperList>x).tail)
        return 0
    if t is BitString:
        if e.python and (<BitString>x).bits == 8:
            return _etf_enc_pickle(e, x)
        return _etf_enc_bitstring(e, <BitString>x)
    if t is Port:
        return _etf_enc_port(e, <Port>x)
    if t is ExportFun:
        return _etf_enc_export(e, <ExportFun>x)
    if t is OpaqueFun:
        return _etf_put_bytes(e, PyBytes_AS_STRING((<OpaqueFun>x).data),
                              PyBytes_GET_SIZE((<OpaqueFun>x).data))
    if t is ListKey and (e.keymode or not e.python):
        return _etf_open_list(e, list((<ListKey>x).items), st)
    if t is MapKey and (e.keymode or not e.python):
        n = PyTuple_GET_SIZE((<MapKey>x).items)
        p = _etf_reserve(e, 5)
        p[0] = _ETF_MAP
        _etf_wr32(p + 1, <uint32_t>n)
        e.len += 5
        if n:
            _etf_epush(st, _EK_PAIRS, (<MapKey>x).items, n, e.keymode)
        return 0
    return _etf_enc_other(e, x, st)


cdef int _etf_enc(_EtfEnc* e, object term) except -1:
    """Encode `term` (no version byte) into e: the container walk without recursion."""
    cdef _EtfEFrame local[24]
    cdef _EtfEStack st
    cdef PyObject* nxt = NULL
    st.f = local
    st.top = 0
    st.cap = 24
    st.heap = False
    x = term
    try:
        while True:
            _etf_enc_item(e, x, &st)
            if not _etf_enc_next(e, &st, &nxt):
                return 0
            x = <object>nxt
            Py_XDECREF(nxt)
            nxt = NULL
    finally:
        while st.top:
            _etf_epop(&st)
        if st.heap:
            PyMem_Free(st.f)


cdef int _etf_enc_other(_EtfEnc* e, object x, _EtfEStack* st) except -1:
    """Types without an exact-type fast path: subclasses, buffers, and (python mode)
    everything else, which is pickled."""
    if e.python:
        if type(x) is memoryview:            # not picklable; arrives as bytes
            return _etf_enc_buffer(e, x, 0)
        return _etf_enc_pickle(e, x)
    if isinstance(x, _etf_Atom):
        return _etf_enc_atom(e, x)
    if isinstance(x, str):
        return _etf_enc_binary_str(e, x)
    if isinstance(x, int):
        return _etf_enc_int(e, int(x))
    if isinstance(x, float):
        return _etf_enc_float(e, float(x))
    if isinstance(x, (bytes, bytearray, memoryview)):
        return _etf_enc_buffer(e, x, 0)
    if isinstance(x, tuple):
        return _etf_open_tuple(e, x, st)
    if isinstance(x, list):
        return _etf_open_list(e, x, st)
    if isinstance(x, dict):
        return _etf_open_map(e, x, st)
    raise TypeError("cannot encode %s as an Erlang term (python=True pickles it between pyotp nodes)"
                    % type(x).__qualname__)


cdef int _etf_enc_binary_str(_EtfEnc* e, object x) except -1:
    cdef Py_ssize_t n
    cdef const char* u = _etf_utf8(x, &n)
    return _etf_enc_binary(e, u, n)


cdef inline void _etf_enc_init(_EtfEnc* e, unsigned char* stackbuf, Py_ssize_t cap, int python) noexcept:
    e.data = stackbuf
    e.len = 0
    e.cap = cap
    e.heap = NULL
    e.bytearray = NULL
    e.chunks = NULL
    e.python = python
    e.keymode = 0


cdef int _etf_level(object compressed) except -2:
    """compressed argument -> zlib level, 0 for none."""
    if compressed is False or compressed is None:
        return 0
    if compressed is True:
        return 6
    level = int(compressed)
    if level < 0 or level > 9:
        raise ValueError("compressed must be a bool or a zlib level 0..9, got %r" % (compressed,))
    return level


def term_to_binary(term, *, compressed=False, bint python=False):
    """Encode ``term`` in the External Term Format: ``b"\\x83" + ...`` (docs/etf.md has the
    type mapping). ``compressed`` (True, or a zlib level 1..9) uses tag 80 when that makes
    the result smaller, as Erlang does. ``python=True`` encodes values that plain ETF
    cannot carry exactly as python-extension terms (only for pyotp-to-pyotp links).

    >>> term_to_binary((Atom("ok"), 1))
    b'\\x83h\\x02w\\x02oka\\x01'
    """
    cdef _EtfEnc e
    cdef unsigned char stackbuf[_ETF_STACK_BUF]
    cdef int level = _etf_level(compressed)
    cdef unsigned char* p
    _etf_enc_init(&e, stackbuf, _ETF_STACK_BUF, python)
    try:
        e.data[0] = _ETF_VERSION
        e.len = 1
        _etf_enc(&e, term)
        if level:
            body = PyBytes_FromStringAndSize(<char*>e.data + 1, e.len - 1)
            z = _etf_zlib.compress(body, level)
            if PyBytes_GET_SIZE(z) + 4 < e.len - 1 and e.len - 1 <= 0xFFFFFFFF:
                out = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(z) + 6)
                p = <unsigned char*>PyBytes_AS_STRING(out)
                p[0] = _ETF_VERSION
                p[1] = _ETF_COMPRESSED
                _etf_wr32(p + 2, <uint32_t>(e.len - 1))
                memcpy(p + 6, PyBytes_AS_STRING(z), PyBytes_GET_SIZE(z))
                return out
        return PyBytes_FromStringAndSize(<char*>e.data, e.len)
    finally:
        if e.heap != NULL:
            PyMem_Free(e.heap)


def encode_term_into(bytearray buf not None, term, bint python=False):
    """Append ``131`` + the encoding of ``term`` to ``buf`` (no intermediate bytes object),
    for building distribution frames in place. Returns the number of bytes appended. On
    error ``buf`` is left as it was.

    >>> frame = bytearray(b"p")
    >>> encode_term_into(frame, (Atom("ok"), 1))
    9
    """
    return _etf_append(buf, term, python)


cdef Py_ssize_t _etf_append(bytearray buf, object term, int python) except -1:
    """encode_term_into's body, for the core's distribution channel."""
    return _etf_append_v(buf, term, python, True)


cdef Py_ssize_t _etf_append_v(bytearray buf, object term, int python, bint version) except -1:
    """_etf_append, with the version byte or (distribution header frames) without."""
    return _etf_append_pre(buf, None, term, python, version)


cdef Py_ssize_t _etf_append_pre(bytearray buf, bytes pre, object term, int python,
                                bint version) except -1:
    """_etf_append_v after the bytes ``pre`` (None: nothing), in one growth of ``buf``
    (a distribution frame's encoded head, then its payload)."""
    cdef _EtfEnc e
    cdef Py_ssize_t old = _etf_ba_size(buf)
    cdef Py_ssize_t npre = 0 if pre is None else PyBytes_GET_SIZE(pre)
    _etf_enc_init(&e, NULL, 0, python)
    e.bytearray = <PyObject*>buf
    _etf_ba_resize(buf, old + npre + 64)
    e.data = <unsigned char*>_etf_ba_str(buf)
    e.cap = old + npre + 64
    e.len = old
    if npre:
        memcpy(e.data + old, PyBytes_AS_STRING(pre), npre)
        e.len += npre
    _etf_ba_pin(buf)
    try:
        if version:
            e.data[e.len] = _ETF_VERSION
            e.len += 1
        _etf_enc(&e, term)
    except BaseException:
        _etf_ba_unpin(buf)
        _etf_ba_resize(buf, old)
        raise
    _etf_ba_unpin(buf)
    _etf_ba_resize(buf, e.len)
    return e.len - old


def term_to_iovec(term, *, bint python=False):
    """Like ``term_to_binary`` (no compression) but returns a list of bytes-like chunks
    whose concatenation is exactly ``term_to_binary(term, python=python)``. In python mode
    the raw memory of large pickle buffers (numpy arrays, bytearrays; >= 64 KiB) appears
    as memoryview chunks instead of being copied, ready for ``transport.writelines``.
    The memoryviews reference the original objects: do not mutate them until sent.
    """
    cdef _EtfEnc e
    cdef unsigned char stackbuf[_ETF_STACK_BUF]
    cdef list chunks = []
    _etf_enc_init(&e, stackbuf, _ETF_STACK_BUF, python)
    e.chunks = <PyObject*>chunks
    try:
        e.data[0] = _ETF_VERSION
        e.len = 1
        _etf_enc(&e, term)
        _etf_flush_chunk(&e)
        return chunks
    finally:
        if e.heap != NULL:
            PyMem_Free(e.heap)


# ---------------------------------------------------------------------------------------
# Decoder
#
# _EtfDec reads [buf + pos, buf + end). `owner` is the object whose memory buf is (kept
# alive by the caller for the whole call); `view` is a memoryview of it made only when a
# python-extension term needs zero-copy slices. `zoff` >= 0 marks a decoder running over
# the inflated body of a compressed term at that offset (for error messages).
# ---------------------------------------------------------------------------------------

cdef struct _EtfDec:
    const unsigned char* buf
    Py_ssize_t end
    Py_ssize_t pos
    int python
    int keymode
    PyObject* loads     # python mode: borrowed loads(payload, buffers) callable, or NULL (pickle.loads)
    PyObject* owner
    PyObject* view
    Py_ssize_t zoff
    int funs            # NEW_FUN nesting (each level is one C recursion)
    Py_ssize_t zmax     # a compressed term may inflate to at most this many bytes
    Py_ssize_t maxdepth # containers nested deeper than this are a TermTooDeep
    # ATOM_CACHE_REF (tag 82) resolution, set only for distribution header frames
    # (dist_header.pyx): borrowed arrays of the frame's atoms (as atoms, and as a term
    # decodes them: true/false/nil mapped), valid for the whole decode
    PyObject** atoms
    PyObject** mapped
    Py_ssize_t natoms
    int bare            # header frames: terms carry no version byte (one is tolerated)


cdef object _etf_where(_EtfDec* d, Py_ssize_t off):
    if d.zoff >= 0:
        return "offset %d of the term compressed at offset %d" % (off, d.zoff)
    return "offset %d" % off


cdef object _etf_fail(_EtfDec* d, Py_ssize_t off, msg):
    raise DecodeError("%s at %s" % (msg, _etf_where(d, off)), off)


cdef int _etf_truncated(_EtfDec* d, Py_ssize_t n, const char* what) except -1:
    raise DecodeError("truncated input at %s: %s needs %d bytes, %d left"
                      % (_etf_where(d, d.pos), (<bytes>what).decode(), n, d.end - d.pos), d.pos)


cdef inline int _etf_need(_EtfDec* d, uint64_t n, const char* what) except -1:
    if <uint64_t>(d.end - d.pos) < n:
        _etf_truncated(d, <Py_ssize_t>n, what)
    return 0


cdef PyObject* _etf_ac_key[_ETF_AC_SIZE]      # raw atom bytes (bytes objects, owned)
cdef PyObject* _etf_ac_val[_ETF_AC_SIZE]      # the Atom (owned)
cdef unsigned char _etf_ac_latin[_ETF_AC_SIZE]


cdef object _etf_make_atom(_EtfDec* d, const unsigned char* s, Py_ssize_t n, bint latin, Py_ssize_t off):
    """The Atom for n raw bytes (UTF-8, or Latin-1 for the legacy tags), via the cache."""
    cdef uint32_t h = 2166136261U ^ latin
    cdef Py_ssize_t i
    cdef PyObject* k
    for i in range(n):
        h = (h ^ s[i]) * 16777619U
    i = h & (_ETF_AC_SIZE - 1)
    k = _etf_ac_key[i]
    if k != NULL and PyBytes_GET_SIZE(<object>k) == n and _etf_ac_latin[i] == latin \
            and memcmp(PyBytes_AS_STRING(<object>k), s, n) == 0:
        return <object>_etf_ac_val[i]
    if latin:
        name = _etf_decode_latin1(<const char*>s, n, NULL)
    else:
        try:
            name = _etf_decode_utf8(<const char*>s, n, NULL)
        except UnicodeDecodeError:
            _etf_fail(d, off, "invalid utf-8 in atom")
    if _etf_ulen(name) > 255:
        _etf_fail(d, off, "atom too long (%d characters, max 255)" % _etf_ulen(name))
    atom = _etf_Atom(name)
    if n <= 255:
        key = PyBytes_FromStringAndSize(<const char*>s, n)
        Py_XDECREF(_etf_ac_key[i])
        Py_XDECREF(_etf_ac_val[i])
        Py_INCREF(key)
        Py_INCREF(atom)
        _etf_ac_key[i] = <PyObject*>key
        _etf_ac_val[i] = <PyObject*>atom
        _etf_ac_latin[i] = latin
    return atom


cdef object _etf_dec_atom_body(_EtfDec* d, unsigned char tag, bint mapped):
    """Atom whose tag (100/115/118/119) was just consumed. mapped: true/false/nil become
    True/False/None (term position); pid/port/fun parts keep the Atom."""
    cdef Py_ssize_t off = d.pos - 1
    cdef Py_ssize_t n
    cdef const unsigned char* s
    if tag == _ETF_SMALL_ATOM_UTF8 or tag == _ETF_SMALL_ATOM:
        _etf_need(d, 1, b"atom length")
        n = d.buf[d.pos]
        d.pos += 1
    else:
        _etf_need(d, 2, b"atom length")
        n = _etf_rd16(d.buf + d.pos)
        d.pos += 2
    _etf_need(d, n, b"atom")
    s = d.buf + d.pos
    d.pos += n
    if mapped and 3 <= n <= 5:
        if n == 4 and memcmp(s, b"true", 4) == 0:
            return True
        if n == 5 and memcmp(s, b"false", 5) == 0:
            return False
        if n == 3 and memcmp(s, b"nil", 3) == 0:
            return None
    return _etf_make_atom(d, s, n, tag == _ETF_ATOM or tag == _ETF_SMALL_ATOM, off)


cdef object _etf_dec_atom(_EtfDec* d, const char* what):
    """An atom that is part of a pid/ref/port/fun: must be an atom tag, never mapped."""
    cdef unsigned char tag
    _etf_need(d, 1, what)
    tag = d.buf[d.pos]
    d.pos += 1
    if tag == _ETF_SMALL_ATOM_UTF8 or tag == _ETF_ATOM_UTF8 or tag == _ETF_ATOM or tag == _ETF_SMALL_ATOM:
        return _etf_dec_atom_body(d, tag, 0)
    if tag == _ETF_ATOM_CACHE_REF:
        return _etf_dec_cache_ref(d, d.pos - 1, False)
    _etf_fail(d, d.pos - 1, "bad tag %d for %s (expected an atom)" % (tag, (<bytes>what).decode()))


cdef object _etf_dec_cache_ref(_EtfDec* d, Py_ssize_t off, bint mapped):
    """ATOM_CACHE_REF (tag at off just consumed): an index into the frame's atom
    cache references (its distribution header)."""
    cdef unsigned char i
    _etf_need(d, 1, b"atom cache reference index")
    i = d.buf[d.pos]
    d.pos += 1
    if d.atoms == NULL:
        _etf_fail(d, off, "atom cache reference (tag 82) outside a distribution header frame")
    if i >= d.natoms:
        _etf_fail(d, off, "atom cache reference %d, but the frame's header has %d" % (i, d.natoms))
    return <object>(d.mapped[i] if mapped else d.atoms[i])


# The last node atom found not to be the local node (and the local node it was compared
# with): pids and refs of one peer arrive in bursts, so most checks become two pointer
# compares instead of a string compare.
cdef object _etf_last_remote = None
cdef object _etf_last_local = None


cdef inline bint _etf_is_local_node(object node):
    global _etf_last_remote, _etf_last_local
    if node is _etf_last_remote and _local_node is _etf_last_local:
        return False
    if node == _local_node:
        return True
    _etf_last_remote = node
    _etf_last_local = _local_node
    return False


cdef object _etf_pid(object node, uint32_t id, uint32_t serial, uint32_t creation):
    """A decoded pid. Pids naming this node go through terms.pyx's _make_pid (a C call)
    so they resolve to the live process; for any other node _make_pid is exactly
    Pid(node, id, serial, creation), built here without re-wrapping the (already cached)
    node Atom: this is the distribution hot path."""
    cdef Pid pid
    if _etf_is_local_node(node):
        return _make_pid(node, id, serial, creation)
    pid = Pid.__new__(Pid)
    pid._node = node
    pid.id = id
    pid.serial = serial
    pid._creation = creation
    return pid


cdef object _etf_ref(object node, uint32_t creation, tuple ids):
    """A decoded reference; same split as _etf_pid (local ones via _make_reference)."""
    cdef Reference ref
    if _etf_is_local_node(node):
        return _make_reference(node, creation, ids)
    ref = Reference.__new__(Reference)
    ref._node = node
    ref._creation = creation
    ref._ids = ids
    return ref


cdef object _etf_dec_bigint(_EtfDec* d, Py_ssize_t n, int sign, Py_ssize_t off):
    cdef uint64_t u = 0
    cdef Py_ssize_t i
    cdef const unsigned char* s
    if sign > 1:
        _etf_fail(d, off, "bad bignum sign byte %d" % sign)
    _etf_need(d, n, b"bignum digits")
    s = d.buf + d.pos
    d.pos += n
    if n <= 8:
        for i in range(n):
            u |= (<uint64_t>s[i]) << (8 * i)
        v = PyLong_FromUnsignedLongLong(u)
    else:
        v = int.from_bytes(PyBytes_FromStringAndSize(<const char*>s, n), "little")
    return -v if sign else v


cdef object _etf_slice(_EtfDec* d, Py_ssize_t a, Py_ssize_t b):
    """Zero-copy memoryview of input bytes [a, b)."""
    if d.view == NULL:
        mv = memoryview(<object>d.owner)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        Py_INCREF(mv)
        d.view = <PyObject*>mv
    return (<object>d.view)[a:b]


cdef Py_ssize_t _etf_marker_len(_EtfDec* d) noexcept:
    """Bytes of the '$pyotp' atom at d.pos in any atom encoding, or 0 if not there."""
    cdef Py_ssize_t left = d.end - d.pos
    cdef const unsigned char* p = d.buf + d.pos
    if left >= 8 and (p[0] == _ETF_SMALL_ATOM_UTF8 or p[0] == _ETF_SMALL_ATOM) and p[1] == 6 \
            and memcmp(p + 2, b"$pyotp", 6) == 0:
        return 8
    if left >= 9 and (p[0] == _ETF_ATOM_UTF8 or p[0] == _ETF_ATOM) and p[1] == 0 and p[2] == 6 \
            and memcmp(p + 3, b"$pyotp", 6) == 0:
        return 9
    return 0


cdef Py_ssize_t _etf_ext_binary(_EtfDec* d, Py_ssize_t start, Py_ssize_t* n) except -1:
    """Inside a python-extension term: a BINARY_EXT; returns its data offset, sets *n."""
    _etf_need(d, 1, b"python-extension binary")
    if d.buf[d.pos] != _ETF_BINARY:
        _etf_fail(d, start, "malformed $pyotp extension term (expected a binary at offset %d)" % d.pos)
    _etf_need(d, 5, b"python-extension binary")
    n[0] = _etf_rd32(d.buf + d.pos + 1)
    d.pos += 5
    _etf_need(d, n[0], b"python-extension binary")
    d.pos += n[0]
    return d.pos - n[0]


# Set by the distribution channel while it decodes frames in its shared receive buffer,
# which the next read overwrites: out-of-band buffers are then copied (into bytearrays,
# writable as views of a bytearray are), so what a process receives owns its memory.
# Frames of 64 KiB or more arrive in a buffer of their own and keep zero-copy views.
cdef bint _etf_oob_copy = False


cdef object _etf_dec_pyext(_EtfDec* d, Py_ssize_t arity, Py_ssize_t start, Py_ssize_t mlen):
    """python mode: {'$pyotp', Kind, ...} (docs/etf.md, "Python extension")."""
    cdef int kind
    cdef Py_ssize_t at, n, cnt, i
    cdef list bufs
    d.pos += mlen
    _etf_need(d, 2, b"python-extension kind")
    if d.buf[d.pos] != _ETF_SMALL_INTEGER:
        _etf_fail(d, start, "malformed $pyotp extension term (kind is not a small integer)")
    kind = d.buf[d.pos + 1]
    d.pos += 2
    if kind == 0 and arity == 3:
        at = _etf_ext_binary(d, start, &n)
        try:
            return _etf_decode_utf8(<const char*>d.buf + at, n, NULL)
        except UnicodeDecodeError:
            _etf_fail(d, at, "invalid utf-8 in python-extension string")
    if kind == 1 and arity == 3:
        at = _etf_ext_binary(d, start, &n)
        payload = (PyBytes_FromStringAndSize(<const char*>d.buf + at, n) if n < _ETF_OOB_MIN
                   else _etf_slice(d, at, at + n))
        bufs = None
    elif kind == 2 and arity == 4:
        at = _etf_ext_binary(d, start, &n)
        payload = _etf_slice(d, at, at + n)
        _etf_need(d, 1, b"python-extension buffer list")
        bufs = []
        if d.buf[d.pos] == _ETF_LIST:
            _etf_need(d, 5, b"python-extension buffer list")
            cnt = _etf_rd32(d.buf + d.pos + 1)
            d.pos += 5
            for i in range(cnt):
                at = _etf_ext_binary(d, start, &n)
                if _etf_oob_copy:
                    bufs.append(PyByteArray_FromStringAndSize(<const char*>d.buf + at, n))
                else:
                    bufs.append(_etf_slice(d, at, at + n))
            _etf_need(d, 1, b"python-extension buffer list")
        if d.buf[d.pos] != _ETF_NIL:
            _etf_fail(d, d.pos, "malformed $pyotp extension term (bad buffer list)")
        d.pos += 1
    else:
        _etf_fail(d, start, "malformed $pyotp extension term (kind %d, arity %d)" % (kind, arity))
    try:
        if d.loads != NULL:
            return (<object>d.loads)(payload, bufs)
        if bufs is None:
            return _etf_pickle_loads(payload)
        return _etf_pickle_loads(payload, buffers=bufs)
    except Exception as exc:
        raise DecodeError("python payload at %s could not be unpickled: %s: %s"
                          % (_etf_where(d, start), type(exc).__name__, exc), start) from exc


cdef object _etf_dec_newfun(_EtfDec* d):
    """NEW_FUN_EXT: checked for shape (so garbage is not echoed to Erlang), kept opaque."""
    cdef Py_ssize_t start = d.pos - 1
    cdef uint32_t size, numfree, i
    cdef Py_ssize_t stop
    cdef int oldkey = d.keymode
    cdef list parts = [] if d.atoms != NULL else None   # see below
    _etf_need(d, 4, b"fun size")
    size = _etf_rd32(d.buf + d.pos)
    if size < 29:
        _etf_fail(d, start, "fun size %d too small" % size)
    _etf_need(d, size, b"fun")
    if d.funs >= _ETF_FUN_DEPTH:
        _etf_fail(d, start, "funs nested deeper than %d levels" % _ETF_FUN_DEPTH)
    stop = d.pos + size
    numfree = _etf_rd32(d.buf + d.pos + 25)
    d.pos += 29
    d.funs += 1
    try:
        d.keymode = 0
        x = _etf_dec_atom(d, b"fun module")
        if parts is not None:
            parts.append(x)
        for i in range(2):              # OldIndex, OldUniq: integers
            x = _etf_dec(d)
            if type(x) is not int:
                _etf_fail(d, start, "malformed fun (index/uniq is not an integer)")
            if parts is not None:
                parts.append(x)
        d.keymode = 0
        x = _etf_dec(d)                 # creator pid
        if type(x) is not Pid:
            _etf_fail(d, start, "malformed fun (creator is not a pid)")
        if parts is not None:
            parts.append(x)
        for i in range(numfree):
            if d.pos >= stop:
                break
            d.keymode = 0
            x = _etf_dec(d)
            if parts is not None:
                parts.append(x)
    finally:
        d.funs -= 1
        d.keymode = oldkey
    if d.pos != stop:
        _etf_fail(d, start, "malformed fun (size field says %d bytes, contents take %d)"
                  % (size, d.pos - start - 1))
    f = OpaqueFun.__new__(OpaqueFun)
    if parts is not None:
        # a distribution header frame: its atoms may be cache refs, which mean nothing
        # outside that frame; the kept bytes are rebuilt with every atom inline
        raw = bytearray(PyBytes_FromStringAndSize(<const char*>d.buf + start, 30))
        for x in parts:
            _etf_append_v(raw, x, 0, False)
        _etf_wr32(<unsigned char*>_etf_ba_str(raw) + 1, <uint32_t>(len(raw) - 1))
        (<OpaqueFun>f).data = bytes(raw)
        return f
    (<OpaqueFun>f).data = PyBytes_FromStringAndSize(<const char*>d.buf + start, stop - start)
    return f


# Containers are decoded without C recursion, like the encoder: each open tuple, list or
# map is a frame on an explicit stack, and a finished value is delivered to the frame
# below it. C recursion happens only for funs (their environment is decoded by a nested
# walk), and fun nesting is capped by _ETF_FUN_DEPTH.

cdef enum:
    _DK_TUPLE = 0
    _DK_LIST = 1
    _DK_MAP = 2
    _ETF_FUN_DEPTH = 64


cdef struct _EtfDFrame:
    PyObject* obj        # owned: the tuple / dict / result list being built
    PyObject* chunk      # owned: list: the LIST_EXT cell being filled (obj itself at first)
    PyObject* key        # owned: map: a decoded key waiting for its value
    Py_ssize_t i
    Py_ssize_t n
    Py_ssize_t koff      # map: offset of the current key (duplicate-key errors)
    int kind
    int km               # keymode the container was opened in (inside a map key?)
    int tail             # list: the (non-list) tail term is being decoded


cdef struct _EtfDStack:
    _EtfDFrame* f
    Py_ssize_t top
    Py_ssize_t cap
    bint heap


cdef _EtfDFrame* _etf_dpush(_EtfDec* d, _EtfDStack* st, int kind, object obj, Py_ssize_t n,
                            Py_ssize_t off) except NULL:
    cdef _EtfDFrame* nf
    cdef _EtfDFrame* fr
    if st.top >= d.maxdepth:
        raise TermTooDeep("term nested deeper than %d levels at %s" % (d.maxdepth, _etf_where(d, off)), off)
    if st.top == st.cap:
        nf = <_EtfDFrame*>PyMem_Malloc(st.cap * 2 * sizeof(_EtfDFrame))
        if nf == NULL:
            raise MemoryError()
        memcpy(nf, st.f, st.top * sizeof(_EtfDFrame))
        if st.heap:
            PyMem_Free(st.f)
        st.f = nf
        st.cap *= 2
        st.heap = True
    fr = &st.f[st.top]
    Py_INCREF(obj)
    fr.obj = <PyObject*>obj
    fr.chunk = NULL
    fr.key = NULL
    fr.i = 0
    fr.n = n
    fr.koff = d.pos
    fr.kind = kind
    fr.km = d.keymode
    fr.tail = 0
    st.top += 1
    return fr


cdef void _etf_dpop(_EtfDStack* st) noexcept:
    cdef _EtfDFrame* fr
    st.top -= 1
    fr = &st.f[st.top]
    Py_XDECREF(fr.obj)
    Py_XDECREF(fr.chunk)
    Py_XDECREF(fr.key)


cdef int _etf_list_more(_EtfDec* d, _EtfDFrame* f) except -1:
    """A LIST_EXT cell is full: splice it in and read what follows. Returns 1 when the
    list is complete (NIL or STRING_EXT tail), 0 when more must be decoded into it:
    another cell (a list tail is spliced, Erlang's [1 | [2]] is [1, 2]) or a non-list
    tail term (f.tail set)."""
    cdef uint32_t n, i
    cdef unsigned char tag
    cdef const unsigned char* p
    if f.chunk != f.obj:
        (<list>f.obj).extend(<list>f.chunk)
    Py_XDECREF(f.chunk)
    f.chunk = NULL
    while True:
        _etf_need(d, 1, b"list tail")
        tag = d.buf[d.pos]
        if tag == _ETF_NIL:
            d.pos += 1
            return 1
        if tag == _ETF_STRING:
            d.pos += 1
            _etf_need(d, 2, b"string length")
            n = _etf_rd16(d.buf + d.pos)
            d.pos += 2
            _etf_need(d, n, b"string")
            p = d.buf + d.pos
            d.pos += n
            for i in range(n):
                (<list>f.obj).append(<long>p[i])
            return 1
        if tag == _ETF_LIST:
            d.pos += 1
            _etf_need(d, 4, b"list length")
            n = _etf_rd32(d.buf + d.pos)
            d.pos += 4
            if <uint64_t>n + 1 > <uint64_t>(d.end - d.pos):
                _etf_fail(d, d.pos - 4, "list length %d exceeds the %d bytes left" % (n, d.end - d.pos))
            if n == 0:
                continue
            chunk = PyList_New(n)
            Py_INCREF(chunk)
            f.chunk = <PyObject*>chunk
            f.i = 0
            f.n = n
            return 0
        f.tail = 1
        return 0


cdef object _etf_list_value(_EtfDFrame* f):
    if f.km:
        lk = ListKey.__new__(ListKey)
        (<ListKey>lk).items = tuple(<list>f.obj)
        return lk
    return <object>f.obj


cdef object _etf_improper_value(_EtfDFrame* f, object tail):
    cdef list items = <list>f.obj
    if type(tail) is list:          # only via a python-extension tail: still a proper list
        items.extend(<list>tail)
        return _etf_list_value(f)
    if type(tail) is ListKey:
        items.extend((<ListKey>tail).items)
        return _etf_list_value(f)
    if not items:
        return tail                 # [ | X] is just X, as in Erlang
    il = ImproperList.__new__(ImproperList)
    (<ImproperList>il).items = tuple(items)
    if type(tail) is ImproperList:
        (<ImproperList>il).items = (<ImproperList>il).items + (<ImproperList>tail).items
        (<ImproperList>il).tail = (<ImproperList>tail).tail
    else:
        (<ImproperList>il).tail = tail
    return il


cdef int _etf_map_put(_EtfDec* d, _EtfDFrame* f, object value) except -1:
    cdef object k = <object>f.key
    cdef Py_ssize_t size = PyDict_Size(<object>f.obj)
    Py_XDECREF(f.key)
    f.key = NULL
    try:
        PyDict_SetItem(<object>f.obj, k, value)
    except TypeError as exc:
        _etf_fail(d, f.koff, "unhashable map key (%s)" % exc)
    if PyDict_Size(<object>f.obj) == size:
        _etf_fail(d, f.koff, "duplicate map key %r" % (k,))
    return 0


cdef object _etf_dec(_EtfDec* d):
    """Decode one term at d.pos (no version byte)."""
    cdef _EtfDFrame local[16]
    cdef _EtfDStack st
    cdef _EtfDFrame* f
    cdef unsigned char tag
    cdef Py_ssize_t off, mlen
    cdef uint32_t n
    cdef bint list_done
    cdef object value
    st.f = local
    st.top = 0
    st.cap = 16
    st.heap = False
    try:
        while True:
            # -- one term head: a scalar is decoded whole, a container is opened --
            off = d.pos
            if d.pos >= d.end:
                _etf_truncated(d, 1, b"term tag")
            tag = d.buf[d.pos]
            d.pos += 1
            list_done = False
            if tag == _ETF_SMALL_TUPLE or tag == _ETF_LARGE_TUPLE:
                mlen = 0
                if tag == _ETF_SMALL_TUPLE:
                    _etf_need(d, 1, b"tuple arity")
                    n = d.buf[d.pos]
                    d.pos += 1
                    if d.python and n >= 1:
                        mlen = _etf_marker_len(d)
                else:
                    _etf_need(d, 4, b"tuple arity")
                    n = _etf_rd32(d.buf + d.pos)
                    d.pos += 4
                if mlen:
                    value = _etf_dec_pyext(d, n, off, mlen)
                elif n == 0:
                    value = ()
                else:
                    if <uint64_t>n > <uint64_t>(d.end - d.pos):
                        _etf_fail(d, off, "tuple arity %d exceeds the %d bytes left" % (n, d.end - d.pos))
                    _etf_dpush(d, &st, _DK_TUPLE, PyTuple_New(n), n, off)
                    continue
            elif tag == _ETF_LIST:
                _etf_need(d, 4, b"list length")
                n = _etf_rd32(d.buf + d.pos)
                d.pos += 4
                if <uint64_t>n + 1 > <uint64_t>(d.end - d.pos):
                    _etf_fail(d, off, "list length %d exceeds the %d bytes left" % (n, d.end - d.pos))
                lst = PyList_New(n)
                f = _etf_dpush(d, &st, _DK_LIST, lst, n, off)
                Py_INCREF(lst)
                f.chunk = <PyObject*>lst
                if n:
                    continue
                list_done = True
            elif tag == _ETF_MAP:
                _etf_need(d, 4, b"map size")
                n = _etf_rd32(d.buf + d.pos)
                d.pos += 4
                if <uint64_t>n * 2 > <uint64_t>(d.end - d.pos):
                    _etf_fail(d, off, "map size %d exceeds the %d bytes left" % (n, d.end - d.pos))
                if n == 0:
                    value = MapKey.__new__(MapKey) if d.keymode else {}
                    if d.keymode:
                        (<MapKey>value).items = ()
                else:
                    _etf_dpush(d, &st, _DK_MAP, {}, n, off)
                    d.keymode = 1
                    continue
            elif tag == _ETF_SMALL_INTEGER:
                _etf_need(d, 1, b"small integer")
                value = <long>d.buf[d.pos]
                d.pos += 1
            elif tag == _ETF_SMALL_ATOM_UTF8:
                value = _etf_dec_atom_body(d, tag, 1)
            elif tag == _ETF_ATOM_CACHE_REF:      # BEAM's atoms in header frames
                value = _etf_dec_cache_ref(d, off, True)
            elif tag == _ETF_BINARY:
                _etf_need(d, 4, b"binary length")
                n = _etf_rd32(d.buf + d.pos)
                d.pos += 4
                _etf_need(d, n, b"binary")
                value = PyBytes_FromStringAndSize(<const char*>d.buf + d.pos, n)
                d.pos += n
            elif tag == _ETF_NEW_PID or tag == _ETF_NEWER_REFERENCE or tag == _ETF_PID \
                    or tag == _ETF_NEW_REFERENCE or tag == _ETF_REFERENCE:
                value = _etf_dec_pidref(d, tag, off)
            else:
                value = _etf_dec_scalar(d, tag, off)
            # -- deliver the finished value upwards until a container wants more --
            while True:
                if list_done:
                    list_done = False
                    f = &st.f[st.top - 1]
                    if not _etf_list_more(d, f):
                        d.keymode = f.km
                        break
                    value = _etf_list_value(f)
                    _etf_dpop(&st)
                if st.top == 0:
                    return value
                f = &st.f[st.top - 1]
                if f.kind == _DK_TUPLE:
                    Py_INCREF(value)
                    PyTuple_SET_ITEM(<tuple>f.obj, f.i, value)
                    f.i += 1
                    if f.i < f.n:
                        d.keymode = f.km
                        break
                    value = <object>f.obj
                    _etf_dpop(&st)
                elif f.kind == _DK_MAP:
                    if f.key == NULL:
                        Py_INCREF(value)
                        f.key = <PyObject*>value
                        d.keymode = f.km
                        break
                    _etf_map_put(d, f, value)
                    f.i += 1
                    if f.i < f.n:
                        f.koff = d.pos
                        d.keymode = 1
                        break
                    if f.km:
                        value = MapKey.__new__(MapKey)
                        (<MapKey>value).items = tuple((<dict>f.obj).items())
                    else:
                        value = <object>f.obj
                    _etf_dpop(&st)
                elif f.tail:
                    value = _etf_improper_value(f, value)
                    _etf_dpop(&st)
                else:
                    Py_INCREF(value)
                    PyList_SET_ITEM(<list>f.chunk, f.i, value)
                    f.i += 1
                    if f.i < f.n:
                        d.keymode = f.km
                        break
                    list_done = True
    finally:
        while st.top:
            _etf_dpop(&st)
        if st.heap:
            PyMem_Free(st.f)


cdef object _etf_dec_pidref(_EtfDec* d, unsigned char tag, Py_ssize_t off):
    """Pids and references (tag at off just consumed): hot in distribution traffic, so
    kept out of the big _etf_dec_scalar."""
    cdef const unsigned char* p
    cdef uint32_t n, u32
    cdef Py_ssize_t i
    cdef object w
    if tag == _ETF_NEW_PID or tag == _ETF_PID:
        node = _etf_dec_atom(d, b"pid node")
        if tag == _ETF_NEW_PID:
            _etf_need(d, 12, b"pid")
            d.pos += 12
            p = d.buf + d.pos - 12
            return _etf_pid(node, _etf_rd32(p), _etf_rd32(p + 4), _etf_rd32(p + 8))
        _etf_need(d, 9, b"pid")
        d.pos += 9
        p = d.buf + d.pos - 9
        return _etf_pid(node, _etf_rd32(p), _etf_rd32(p + 4), p[8])
    elif tag == _ETF_NEWER_REFERENCE or tag == _ETF_NEW_REFERENCE:
        _etf_need(d, 2, b"reference length")
        n = _etf_rd16(d.buf + d.pos)
        d.pos += 2
        if n < 1 or n > 5:
            _etf_fail(d, off, "reference with %d id words (1..5 allowed)" % n)
        node = _etf_dec_atom(d, b"reference node")
        if tag == _ETF_NEWER_REFERENCE:
            _etf_need(d, 4 + 4 * n, b"reference")
            u32 = _etf_rd32(d.buf + d.pos)
            d.pos += 4
        else:
            _etf_need(d, 1 + 4 * n, b"reference")
            u32 = d.buf[d.pos]
            d.pos += 1
        ids = PyTuple_New(n)
        for i in range(n):
            w = _etf_rd32(d.buf + d.pos + 4 * i)
            Py_INCREF(w)
            PyTuple_SET_ITEM(ids, i, w)
        d.pos += 4 * n
        return _etf_ref(node, u32, ids)
    else:    # _ETF_REFERENCE
        node = _etf_dec_atom(d, b"reference node")
        _etf_need(d, 5, b"reference")
        d.pos += 5
        return _etf_ref(node, d.buf[d.pos - 1], (_etf_rd32(d.buf + d.pos - 5),))


cdef object _etf_dec_scalar(_EtfDec* d, unsigned char tag, Py_ssize_t off):
    """Any term but a tuple, list or map, whose tag (at off) was just consumed."""
    cdef uint32_t n, u32
    cdef uint64_t u64
    cdef double f
    cdef Py_ssize_t i
    cdef const unsigned char* p
    cdef list lst
    cdef object item, w
    if tag == _ETF_SMALL_INTEGER:
        _etf_need(d, 1, b"small integer")
        d.pos += 1
        return <long>d.buf[d.pos - 1]
    elif tag == _ETF_INTEGER:
        _etf_need(d, 4, b"integer")
        d.pos += 4
        return <long>(<int32_t>_etf_rd32(d.buf + d.pos - 4))
    elif tag == _ETF_SMALL_ATOM_UTF8 or tag == _ETF_ATOM_UTF8 or tag == _ETF_ATOM or tag == _ETF_SMALL_ATOM:
        return _etf_dec_atom_body(d, tag, 1)
    elif tag == _ETF_BINARY:
        _etf_need(d, 4, b"binary length")
        n = _etf_rd32(d.buf + d.pos)
        d.pos += 4
        _etf_need(d, n, b"binary")
        d.pos += n
        return PyBytes_FromStringAndSize(<const char*>d.buf + d.pos - n, n)
    elif tag == _ETF_NIL:
        if d.keymode:
            return ListKey.__new__(ListKey)
        return []
    elif tag == _ETF_NEW_FLOAT:
        _etf_need(d, 8, b"float")
        u64 = _etf_rd64(d.buf + d.pos)
        memcpy(&f, &u64, 8)
        if not isfinite(f):
            _etf_fail(d, off, "non-finite float")
        d.pos += 8
        return f
    elif tag == _ETF_STRING:
        _etf_need(d, 2, b"string length")
        n = _etf_rd16(d.buf + d.pos)
        d.pos += 2
        _etf_need(d, n, b"string")
        p = d.buf + d.pos
        d.pos += n
        lst = PyList_New(n)
        for i in range(n):
            item = <long>p[i]
            Py_INCREF(item)
            PyList_SET_ITEM(lst, i, item)
        if d.keymode:
            lk = ListKey.__new__(ListKey)
            (<ListKey>lk).items = tuple(lst)
            return lk
        return lst
    elif tag == _ETF_SMALL_BIG:
        _etf_need(d, 2, b"bignum header")
        d.pos += 2
        return _etf_dec_bigint(d, d.buf[d.pos - 2], d.buf[d.pos - 1], off)
    elif tag == _ETF_LARGE_BIG:
        _etf_need(d, 5, b"bignum header")
        d.pos += 5
        return _etf_dec_bigint(d, _etf_rd32(d.buf + d.pos - 5), d.buf[d.pos - 1], off)
    elif tag == _ETF_NEW_PORT or tag == _ETF_V4_PORT or tag == _ETF_PORT:
        node = _etf_dec_atom(d, b"port node")
        port = Port.__new__(Port)
        (<Port>port).node = node
        if tag == _ETF_NEW_PORT:
            _etf_need(d, 8, b"port")
            (<Port>port).id = _etf_rd32(d.buf + d.pos)
            (<Port>port).creation = _etf_rd32(d.buf + d.pos + 4)
            d.pos += 8
        elif tag == _ETF_V4_PORT:
            _etf_need(d, 12, b"port")
            (<Port>port).id = _etf_rd64(d.buf + d.pos)
            (<Port>port).creation = _etf_rd32(d.buf + d.pos + 8)
            d.pos += 12
        else:
            _etf_need(d, 5, b"port")
            (<Port>port).id = _etf_rd32(d.buf + d.pos)
            (<Port>port).creation = d.buf[d.pos + 4]
            d.pos += 5
        return port
    elif tag == _ETF_BIT_BINARY:
        _etf_need(d, 5, b"bit binary header")
        n = _etf_rd32(d.buf + d.pos)
        u32 = d.buf[d.pos + 4]
        d.pos += 5
        _etf_need(d, n, b"bit binary")
        if n == 0:
            if u32 != 0:
                _etf_fail(d, off, "empty bit binary with %d bits in its last byte" % u32)
            return b""
        if u32 < 1 or u32 > 8:
            _etf_fail(d, off, "bit binary with %d bits in its last byte (1..8 allowed)" % u32)
        d.pos += n
        data = PyBytes_FromStringAndSize(<const char*>d.buf + d.pos - n, n)
        if u32 == 8:
            return data
        return BitString(data, u32)
    elif tag == _ETF_EXPORT:
        module = _etf_dec_atom(d, b"export module")
        function = _etf_dec_atom(d, b"export function")
        _etf_need(d, 2, b"export arity")
        if d.buf[d.pos] != _ETF_SMALL_INTEGER:
            _etf_fail(d, d.pos, "export arity is not a small integer (tag %d)" % d.buf[d.pos])
        fn = ExportFun.__new__(ExportFun)
        (<ExportFun>fn).module = module
        (<ExportFun>fn).function = function
        (<ExportFun>fn).arity = d.buf[d.pos + 1]
        d.pos += 2
        return fn
    elif tag == _ETF_NEW_FUN:
        return _etf_dec_newfun(d)
    elif tag == _ETF_FLOAT:
        f = 0.0
        _etf_need(d, 31, b"float string")
        raw = PyBytes_FromStringAndSize(<const char*>d.buf + d.pos, 31)
        d.pos += 31
        try:
            f = float(raw.split(b"\0", 1)[0])
        except ValueError:
            _etf_fail(d, off, "bad float string %r" % raw.rstrip(b"\0"))
        if not isfinite(f):
            _etf_fail(d, off, "non-finite float")
        return f
    elif tag == _ETF_ATOM_CACHE_REF:
        return _etf_dec_cache_ref(d, off, True)
    elif tag == _ETF_COMPRESSED:
        _etf_fail(d, off, "compressed term (tag 80) is only allowed right after the version byte")
    elif tag == _ETF_VERSION:
        _etf_fail(d, off, "unexpected version byte 131 inside a term")
    _etf_fail(d, off, "bad tag %d" % tag)


cdef inline void _etf_dec_init(_EtfDec* d, const unsigned char* buf, Py_ssize_t end, Py_ssize_t pos,
                               bint python, PyObject* owner) noexcept:
    d.buf = buf
    d.end = end
    d.pos = pos
    d.python = python
    d.keymode = 0
    d.loads = NULL
    d.owner = owner
    d.view = NULL
    d.zoff = -1
    d.funs = 0
    d.zmax = 0xFFFFFFFF
    d.maxdepth = _ETF_DEPTH
    d.atoms = NULL
    d.mapped = NULL
    d.natoms = 0
    d.bare = 0


cdef object _etf_dec_compressed(_EtfDec* d):
    """After 131 80: UncompressedSize:32 then a zlib stream holding the term. The stream
    may be followed by more data (a message after a control term); d.pos ends right after
    the stream."""
    cdef Py_ssize_t off = d.pos - 1
    cdef uint32_t size
    cdef _EtfDec sub
    _etf_need(d, 4, b"uncompressed size")
    size = _etf_rd32(d.buf + d.pos)
    d.pos += 4
    if <Py_ssize_t>size > d.zmax:
        # refused before inflating anything (and zlib never inflates past size + 1)
        _etf_fail(d, off, "compressed term inflates to %d bytes, over the limit of %d"
                  % (size, d.zmax))
    z = _etf_zlib.decompressobj()
    src = memoryview(<object>d.owner)
    if src.ndim != 1 or src.format != "B":
        src = src.cast("B")
    try:
        body = z.decompress(src[d.pos:d.end], <Py_ssize_t>size + 1)
    except _etf_zlib.error as exc:
        _etf_fail(d, off, "bad zlib data in compressed term (%s)" % exc)
    if not z.eof:
        _etf_fail(d, off, "compressed term inflates to more than its declared %d bytes or is truncated"
                  % size)
    if PyBytes_GET_SIZE(body) != size:
        _etf_fail(d, off, "compressed term inflates to %d bytes, declared %d"
                  % (PyBytes_GET_SIZE(body), size))
    d.pos = d.end - len(z.unused_data)
    _etf_dec_init(&sub, <const unsigned char*>PyBytes_AS_STRING(body), size, 0, d.python, <PyObject*>body)
    sub.loads = d.loads
    sub.zoff = off
    sub.maxdepth = d.maxdepth
    sub.atoms = d.atoms
    sub.mapped = d.mapped
    sub.natoms = d.natoms
    try:
        term = _etf_dec(&sub)
        if sub.pos != sub.end:
            _etf_fail(&sub, sub.pos, "%d bytes of trailing garbage after the term" % (sub.end - sub.pos))
        return term
    finally:
        Py_XDECREF(sub.view)


cdef object _etf_dec_versioned(_EtfDec* d):
    _etf_need(d, 1, b"version byte")
    if d.bare and d.buf[d.pos] != _ETF_VERSION:
        return _etf_dec(d)
    if d.buf[d.pos] != _ETF_VERSION:
        _etf_fail(d, d.pos, "bad version byte %d (expected 131)" % d.buf[d.pos])
    d.pos += 1
    if d.pos < d.end and d.buf[d.pos] == _ETF_COMPRESSED:
        d.pos += 1
        return _etf_dec_compressed(d)
    return _etf_dec(d)


cdef object _etf_decode(object data, Py_ssize_t offset, bint python, bint versioned, bint whole,
                        object loads=None, Py_ssize_t zmax=0xFFFFFFFF, Py_ssize_t maxdepth=_ETF_DEPTH):
    """Shared body of the public decoders: returns term (whole) or (term, new_offset)."""
    cdef _EtfDec d
    cdef Py_buffer view
    cdef bint have_view = False
    if type(data) is bytes:
        _etf_dec_init(&d, <const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                      offset, python, <PyObject*>data)
    else:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        have_view = True
        _etf_dec_init(&d, <const unsigned char*>view.buf, view.len, offset, python, <PyObject*>data)
    if loads is not None:
        d.loads = <PyObject*>loads
    d.zmax = zmax
    if maxdepth < 0:
        raise ValueError("max_depth must be >= 0, got %d" % maxdepth)
    d.maxdepth = maxdepth
    try:
        if offset < 0 or offset > d.end:
            raise IndexError("offset %d outside the %d-byte buffer" % (offset, d.end))
        term = _etf_dec_versioned(&d) if versioned else _etf_dec(&d)
        if whole:
            if d.pos != d.end:
                _etf_fail(&d, d.pos, "%d bytes of trailing garbage after the term" % (d.end - d.pos))
            return term
        return (term, d.pos)
    finally:
        Py_XDECREF(d.view)
        if have_view:
            PyBuffer_Release(&view)


def binary_to_term(data, *, bint python=False, loads=None, Py_ssize_t max_depth=_ETF_DEPTH):
    """Decode one whole External Term Format value (``131`` first; compressed terms are
    inflated). ``data`` is bytes, bytearray or memoryview; bytes after the term are an
    error. Raises DecodeError for malformed input. ``python=True`` also decodes
    python-extension terms; their large buffers are zero-copy views of ``data``. Pickled
    values go to ``loads(payload, buffers)`` (``buffers`` None or a list), by default
    plain ``pickle.loads``, which runs whatever the data asks for: for data you did not
    make, pass ``pyotp.etf.SafeUnpickler(...).loads`` (what distribution uses).
    Tuples, lists and maps nested deeper than ``max_depth`` (default ETF_MAX_DEPTH)
    raise TermTooDeep.

    >>> binary_to_term(b"\\x83h\\x02w\\x02oka\\x01")
    (Atom('ok'), 1)
    """
    cdef _EtfDec d
    if type(data) is bytes and not python and loads is None and max_depth == _ETF_DEPTH:
        # fast path: no buffer to release, no memoryview can be made
        _etf_dec_init(&d, <const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                      0, 0, <PyObject*>data)
        term = _etf_dec_versioned(&d)
        if d.pos != d.end:
            _etf_fail(&d, d.pos, "%d bytes of trailing garbage after the term" % (d.end - d.pos))
        return term
    return _etf_decode(data, 0, python, 1, 1, loads, 0xFFFFFFFF, max_depth)


def decode_term(data, Py_ssize_t offset=0, *, bint python=False, loads=None):
    """Decode one term that starts at ``offset`` with its tag (no version byte). Returns
    ``(term, new_offset)``; bytes after the term are left for the caller. ``python`` and
    ``loads`` as for binary_to_term."""
    return _etf_decode(data, offset, python, 0, 0, loads)


def decode_with_version(data, Py_ssize_t offset=0, *, bint python=False, loads=None,
                        Py_ssize_t max_inflated=0xFFFFFFFF, Py_ssize_t max_depth=_ETF_DEPTH):
    """Decode ``131`` + one term (possibly compressed) at ``offset``; returns
    ``(term, new_offset)``. For distribution frames, where a control term and a message
    follow each other, each with its own version byte. ``python`` and ``loads`` as for
    binary_to_term. A compressed term that declares more than ``max_inflated`` bytes is a
    DecodeError (nothing is inflated); one nested deeper than ``max_depth``, TermTooDeep.

    >>> decode_with_version(term_to_binary(b"x" * 100, compressed=True), max_inflated=50)
    Traceback (most recent call last):
    DecodeError: compressed term inflates to 105 bytes, over the limit of 50 at offset 1
    """
    if max_inflated < 0:
        raise ValueError("max_inflated must be >= 0, got %d" % max_inflated)
    return _etf_decode(data, offset, python, 1, 0, loads, max_inflated, max_depth)
