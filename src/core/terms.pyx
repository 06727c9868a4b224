# terms.pyx: the identities that cross process and node boundaries.
#
# Owns: Atom, Pid, Reference and the local node's identity (name, creation).
# Invariants:
#  - A Pid or Reference made on this node answers `node` with the *current* local node
#    name, so identities made before distribution started stay valid after it did (as in
#    Erlang). Their hash never depends on the node name for that reason.
#  - Pid equality is (node, id, serial, creation); a local Pid additionally holds its
#    Process (or None once the id has been looked up and found dead) for O(1) sends.
#  - A Reference with `alias` set was made for a call: replies tagged with it are delivered
#    only while the caller still waits for it, so late replies vanish (OTP's aliases).

class Atom(str):
    """An Erlang atom. Plain ``str`` is used for atoms throughout the Python API; this
    subclass exists for the places where Erlang must tell an atom from a binary (the term
    codec encodes ``Atom`` as an atom and ``str`` as a UTF-8 binary).

    >>> Atom("ok") == "ok"
    True
    """
    __slots__ = ()

    def __repr__(self):
        return "Atom(%s)" % str.__repr__(self)

    def __reduce__(self):
        # a function, not the class: pyotp's restricted unpickler then never hands a
        # payload this (mutable) class, whose attributes a crafted BUILD could set
        return (_make_atom, (str(self),))


def _make_atom(name):
    """Atom(name) for unpickling (see Atom.__reduce__)."""
    if type(name) is not str:
        raise TypeError("an atom is made from a str, not %s" % type(name).__name__)
    return Atom(name)


cdef object _local_node = Atom("nonode@nohost")
cdef uint32_t _local_creation = 0
cdef uint64_t _ref_counter = 0


def local_node():
    """The name of the local node (``"nonode@nohost"`` until distribution starts)."""
    return _local_node


def _set_local_node(name, creation):
    """Used by distribution when the node gets (or loses) a name."""
    global _local_node, _local_creation
    _local_node = Atom(name)
    _local_creation = creation


@cython.final
@cython.freelist(64)
@cython.no_gc      # a Pid refers only to a str and its Process; see process.pyx on cycles
cdef class Pid:
    """A process identifier: ``#PID<0.42.0>`` for a local process.

    Pids are made by ``spawn`` and friends; constructing one by hand (``Pid(node, id,
    serial, creation)``) is for codecs and tests, and names a process on that node.

    >>> pid = pyotp.self()          # inside a process
    >>> str(pid.node)
    'nonode@nohost'
    """
    cdef object _node          # None for local pids: node is read from _local_node
    cdef readonly uint64_t id
    cdef readonly uint32_t serial
    cdef uint32_t _creation
    cdef Process _proc         # local pids only

    def __init__(self, node, id, serial=0, creation=0):
        if not isinstance(node, str):
            raise TypeError("Pid node must be a str, got %r" % (node,))
        self._node = Atom(node)
        self.id = id
        self.serial = serial
        self._creation = creation

    @property
    def node(self):
        return _local_node if self._node is None else self._node

    @property
    def creation(self):
        return _local_creation if self._node is None else self._creation

    cdef inline bint is_local(self):
        return self._node is None

    def __hash__(self):
        return hash((self.id, self.serial))

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, Pid):
            return NotImplemented
        cdef Pid o = <Pid>other
        return (self.id == o.id and self.serial == o.serial and self.node == o.node
                and self.creation == o.creation)

    def __lt__(self, other):
        if not isinstance(other, Pid):
            return NotImplemented
        return self._key() < (<Pid>other)._key()

    cdef tuple _key(self):
        return (self.node, self.id, self.serial, self.creation)

    def __reduce__(self):
        return (_make_pid, (str(self.node), self.id, self.serial, self.creation))

    def __repr__(self):
        if self._node is None:
            return "#PID<0.%d.%d>" % (self.id, self.serial)
        return "#PID<%s.%d.%d>" % (self._node, self.id, self.serial)


cpdef object _make_pid(object node, object id, object serial, object creation):
    """Rebuild a pid (pickling, codecs): a pid naming this node resolves to the local process."""
    if node == _local_node and creation == _local_creation:
        return _local_pid(id, serial)
    return Pid(node, id, serial, creation)


@cython.final
@cython.freelist(256)
@cython.no_gc      # holds a node name and a tuple of ints: it cannot be part of a cycle
cdef class Reference:
    """A unique reference (``make_ref()``), like Erlang's ``#Ref<0.1.2.3>``.

    >>> r = pyotp.make_ref()
    >>> r == r, r == pyotp.make_ref()
    (True, False)
    """
    cdef object _node          # None: local
    cdef uint32_t _creation
    cdef uint64_t n            # local refs: a counter; remote refs: unused
    cdef tuple _ids            # remote refs: the id words as received
    cdef public bint alias     # made for a call: replies vanish once the caller stops waiting

    def __init__(self, node, creation, ids):
        self._node = Atom(node)
        self._creation = creation
        self._ids = tuple(ids)

    @property
    def node(self):
        return _local_node if self._node is None else self._node

    @property
    def creation(self):
        return _local_creation if self._node is None else self._creation

    @property
    def ids(self):
        """The reference's id words (3 for local refs), as in the external term format."""
        if self._ids is not None:
            return self._ids
        return (<uint32_t>(self.n & 0x3FFFF), <uint32_t>((self.n >> 18) & 0xFFFFFFFF),
                <uint32_t>(self.n >> 50))

    def __hash__(self):
        if self._node is None:
            return <Py_hash_t>(self.n ^ (self.n >> 32))
        return hash(self._ids)

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, Reference):
            return NotImplemented
        cdef Reference o = <Reference>other
        if self._node is None and o._node is None:
            return self.n == o.n
        return self.ids == o.ids and self.node == o.node and self.creation == o.creation

    def __reduce__(self):
        return (_make_reference, (str(self.node), self.creation, self.ids))

    def __repr__(self):
        i = self.ids
        if self._node is None:
            return "#Ref<0.%d.%d.%d>" % (i[2], i[1], i[0])
        return "#Ref<%s.%s>" % (self._node, ".".join(str(x) for x in reversed(i)))


cpdef object _make_reference(object node, object creation, object ids):
    ids = tuple(ids)
    # only ids that fit the local 64-bit counter layout (18 + 32 + 14 bits) are rebuilt as
    # local refs; anything else (an Erlang ref from a node with our name) keeps its words
    if (node == _local_node and creation == _local_creation and len(ids) == 3
            and ids[0] < (1 << 18) and ids[1] < (1 << 32) and ids[2] < (1 << 14)):
        r = _new_ref()
        r.n = (<uint64_t>ids[0]) | ((<uint64_t>ids[1]) << 18) | ((<uint64_t>ids[2]) << 50)
        return r
    return Reference(node, creation, ids)


cdef inline Reference _new_ref():
    global _ref_counter
    cdef Reference r = Reference.__new__(Reference)
    _ref_counter += 1
    r.n = _ref_counter
    return r


def make_ref():
    """A new unique reference (Erlang's ``make_ref()``).

    >>> ref = pyotp.make_ref()
    """
    return _new_ref()
