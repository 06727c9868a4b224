# alias.pyx: process aliases (OTP 24's erlang:alias/0,1 and unalias/1).
#
# Owns: the table of active aliases, alias()/unalias(), sending to an alias (here, or to
# another node as ALIAS_SEND), and delivering an ALIAS_SEND that arrived.
# Invariants:
#  - Loop thread only (alias/unalias need a current process; sends from other threads
#    hop to the loop through the remote hook like any remote send).
#  - An entry maps an active alias (a local Reference) to (owner Process, once). A message
#    sent to an alias that is not in the table (never made, unaliased, used up, or its
#    owner dead) is dropped silently: that is what makes a late reply vanish.
#  - Entries of dead owners are removed when looked up and by a sweep each time the
#    table doubles, so they cost at most a constant factor of the live ones.

cdef dict _aliases = {}          # Reference -> (Process, bint once)
cdef Py_ssize_t _alias_sweep_at = 1024


cdef int _alias_sweep() except -1:
    global _alias_sweep_at
    cdef list dead = [r for r, e in _aliases.items() if not _alive(<Process>(<tuple>e)[0])]
    for r in dead:
        del _aliases[r]
    _alias_sweep_at = max(1024, 2 * len(_aliases))
    return 0


def alias(mode="explicit_unalias"):
    """A new alias of the calling process (Erlang's ``alias/1``): a reference that
    ``pyotp.send(alias, msg)`` delivers to this process, from this node or any other
    (pyotp or BEAM), until :func:`unalias`. ``mode="reply"`` makes it one-shot: the
    first message through it deactivates it (what a call's reply tag wants).

    >>> a = pyotp.alias()
    >>> pyotp.send(a, "hi")
    'hi'
    >>> await pyotp.receive()
    'hi'
    >>> pyotp.unalias(a)
    True
    """
    cdef Process p = _current_here()
    if p is None:
        raise CallbackError("alias() must be called inside a pyotp process")
    if not (_is(mode, "explicit_unalias") or _is(mode, "reply")):
        raise BadArg("alias: mode must be 'explicit_unalias' or 'reply', got %r" % (mode,))
    cdef Reference ref = _new_ref()
    if len(_aliases) >= _alias_sweep_at:
        _alias_sweep()
    _aliases[ref] = (p, _is(mode, "reply"))
    return ref


def unalias(ref):
    """Deactivate an alias the calling process made (Erlang's ``unalias/1``); True if it
    was active. Messages sent to it afterwards are dropped.

    >>> a = pyotp.alias()
    >>> pyotp.unalias(a)
    True
    """
    cdef Process p = _current_here()
    if type(ref) is not Reference:
        raise BadArg("unalias: %r is not a reference" % (ref,))
    entry = _aliases.get(ref)
    if entry is None or (<tuple>entry)[0] is not p:
        return False
    del _aliases[ref]
    return True


cdef bint _alias_deliver(object ref, object msg) except -1:
    """A message for the local alias `ref`: queue it for its owner while the alias is
    active; False when dropped."""
    entry = _aliases.get(ref)
    if entry is None:
        return False
    cdef Process p = <Process>(<tuple>entry)[0]
    if not _alive(p):
        del _aliases[ref]
        return False
    if (<tuple>entry)[1]:
        del _aliases[ref]
    _deliver(p, msg_new(K_MSG, msg, None))
    return True


def _dist_alias_deliver(ref, msg):
    """Internal (ALIAS_SEND from another node): deliver to the local alias `ref`."""
    _dist_entry("_dist_alias_deliver")
    return _alias_deliver(ref, msg)


cdef int _alias_send(object ref, object msg) except -1:
    """send() to a reference: a local alias, or an alias of a process on another node."""
    if (<Reference>ref)._node is None or (<Reference>ref)._node == _local_node:
        if _sched is not None and pyotp_thread_id() == _sched.loop_tid:
            _alias_deliver(ref, msg)
        elif _sched is not None:
            _sched.loop.call_soon_threadsafe(_alias_deliver_py, ref, msg)
        return 0
    _remote_send(ref, msg)
    return 0


def _alias_deliver_py(ref, msg):
    _alias_deliver(ref, msg)
