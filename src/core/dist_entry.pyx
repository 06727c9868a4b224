# dist_entry.pyx: the core's side of node distribution.
#
# Owns: the entry points the distribution layer (pyotp.dist) calls when a signal arrives
# from another node, and node-down cleanup.
# Invariants:
#  - Called on the scheduler's loop thread only.
#  - A remote pid in a local process's `links` set means the remote side linked too; the
#    distribution layer keeps that symmetric with LINK/UNLINK_ID signals.
#  - Remote watchers sit in `monitored_by` as Pids (not Processes); on death the core hands
#    them to the remote handler ("down") instead of queueing a DOWN locally.
#  - A reply to a call made to a remote server arrives as a plain message `(ref, value)`;
#    if the caller is waiting for exactly that ref it is woken at once (O(1), never queued),
#    and a late one (the caller gave up) is dropped because the ref is an alias.
#  - The Python-visible entry points (the `def`s, importable from pyotp._core although
#    internal) check the node is running, the thread and their arguments' types, and raise
#    otherwise: nothing reachable from Python may crash the interpreter.

cdef int _dist_entry(str what) except -1:
    _on_loop_thread(_need_sched(), what)
    return 0


cdef int _dist_need(object x, type t, str what, str arg) except -1:
    if type(x) is not t:
        raise TypeError("%s: %s must be a %s, got %r" % (what, arg, t.__name__, x))
    return 0


cdef int _dist_need_remote(object pid, str what, str arg) except -1:
    if type(pid) is not Pid or (<Pid>pid).is_local():
        raise TypeError("%s: %s must be a remote pid, got %r" % (what, arg, pid))
    return 0


cdef inline Process _local_proc(object pid):
    if type(pid) is not Pid or not (<Pid>pid).is_local():
        return None
    cdef Process p = (<Pid>pid)._proc
    return p if _alive(p) else None


def _dist_deliver(to, msg):
    """A message from another node for the local pid or registered name `to`."""
    _dist_entry("_dist_deliver")
    return _dist_deliver_c(to, msg)


cdef bint _dist_deliver_c(object to, object msg) except -1:
    cdef Process p
    if type(to) is Pid:
        p = _local_proc(to)
    else:
        p = _sched.names.get(to) if _sched is not None else None
    if p is None:
        return False
    if (p.wait == W_REPLY and type(msg) is tuple and len(<tuple>msg) == 2
            and p.wait_ref is not None and (<tuple>msg)[0] == p.wait_ref):
        _reply((p.pid, p.wait_ref), (<tuple>msg)[1])
        return True
    if (type(msg) is tuple and len(<tuple>msg) == 2 and type((<tuple>msg)[0]) is Reference
            and (<Reference>(<tuple>msg)[0]).alias and (<Reference>(<tuple>msg)[0])._node is None):
        return False          # a late reply to a call that gave up
    _deliver(p, msg_new(K_MSG, msg, None))
    return True


def _dist_link(remote_pid, local_pid):
    """LINK from remote_pid: returns False if the local process is dead (the caller then
    answers with an EXIT noproc)."""
    _dist_entry("_dist_link")
    _dist_need_remote(remote_pid, "_dist_link", "remote_pid")
    cdef Process p = _local_proc(local_pid)
    if p is None:
        return False
    _links_add(p, remote_pid)
    return True


def _dist_unlink(remote_pid, local_pid):
    _dist_entry("_dist_unlink")
    cdef Process p = _local_proc(local_pid)
    if p is not None:
        _links_discard(p, remote_pid)


def _dist_exit(remote_pid, local_pid, reason, linked):
    """EXIT (linked=True) or EXIT2 (linked=False) from remote_pid."""
    _dist_entry("_dist_exit")
    cdef Process p = _local_proc(local_pid)
    if p is None:
        return
    if linked:
        if not _links_discard(p, remote_pid):
            return            # unlinked meanwhile: OTP drops the signal
    _exit_signal(p, remote_pid, reason, linked)


def _dist_monitor(remote_pid, target, ref):
    """MONITOR_P from remote_pid on a local pid or name. Returns the monitored Pid, or
    None when the target does not exist (the caller answers with DOWN noproc)."""
    _dist_entry("_dist_monitor")
    _dist_need_remote(remote_pid, "_dist_monitor", "remote_pid")
    _dist_need(ref, Reference, "_dist_monitor", "ref")
    return _dist_monitor_c(remote_pid, target, ref)


cdef object _dist_monitor_c(object remote_pid, object target, object ref):
    cdef Process p
    if type(target) is Pid:
        p = _local_proc(target)
    elif _sched is None:
        return None
    else:
        p = _sched.names.get(target)
    if p is None:
        return None
    _watch(p, ref, remote_pid)
    return p.pid


def _dist_add_monitor(local_pid, target, ref):
    """A monitor the peer set up for local_pid on its process `target` (SPAWN_REQUEST's
    monitor option): record it so the DOWN tagged `ref` is delivered. False when
    local_pid is dead."""
    _dist_entry("_dist_add_monitor")
    _dist_need(ref, Reference, "_dist_add_monitor", "ref")
    cdef Process w = _local_proc(local_pid)
    if w is None:
        return False
    if w.monitors is None:
        w.monitors = {}
    w.monitors[ref] = target
    return True


def _dist_demonitor(target, ref):
    _dist_entry("_dist_demonitor")
    _dist_demonitor_c(target, ref)


cdef int _dist_demonitor_c(object target, object ref) except -1:
    cdef Process p
    if type(target) is Pid:
        p = _local_proc(target)
    elif _sched is None:
        return 0
    else:
        p = _sched.names.get(target)
    if p is not None and p.monitored_by is not None:
        p.monitored_by.pop(ref, None)
    return 0


def _dist_down(local_pid, ref, obj, reason):
    """MONITOR_P_EXIT for a monitor that local_pid holds on a remote process `obj`."""
    _dist_entry("_dist_down")
    cdef Process w = _local_proc(local_pid)
    cdef bint known
    if w is None:
        return
    known = w.monitors is not None and w.monitors.pop(ref, None) is not None
    if w.wait == W_REPLY and w.wait_ref == ref:
        _wake_down(w, reason)
        return
    if known:            # a DOWN for a monitor already removed (demonitor raced it) is dropped
        _deliver(w, msg_new(K_MSG, ("DOWN", ref, "process", obj, reason), None))


def _dist_node_down(node):
    """The connection to `node` is gone: every link to it delivers `noconnection`, every
    monitor on it a DOWN with `noconnection`, every call waiting on it fails."""
    cdef Process p
    cdef list work = []
    _dist_entry("_dist_node_down")
    for p in list(_sched.procs.values()):
        if p.links:
            for other in list(p.links):
                if type(other) is Pid and (<Pid>other)._node == node:
                    work.append((p, other, None))
        if p.monitors:
            for ref, target in list(p.monitors.items()):
                if (type(target) is Pid and (<Pid>target)._node == node) or \
                   (type(target) is tuple and len(target) == 2 and target[1] == node):
                    work.append((p, target, ref))
        if p.monitored_by:
            for ref, w in list(p.monitored_by.items()):
                if type(w) is Pid and (<Pid>w)._node == node:
                    del p.monitored_by[ref]
        if p.wait == W_REPLY and p.wait_target is None and p.wait_kind == WK_CALL \
                and p.wait_info is not None:
            server = (<tuple>p.wait_info)[0]
            if (type(server) is Pid and (<Pid>server)._node == node) or \
               (type(server) is tuple and len(server) == 2 and server[1] == node):
                work.append((p, None, p.wait_ref))
    for p, other, ref in work:
        if ref is None:
            if _links_discard(p, other):
                _exit_signal(p, other, "noconnection", True)
        else:
            _dist_down(p.pid, ref, other if other is not None else None, "noconnection")


cdef bint _dist_awaits(object pid, object ref) except -1:
    """Is local `pid` waiting for the reply tagged `ref`?"""
    cdef Process p = _local_proc(pid)
    return p is not None and p.wait == W_REPLY and p.wait_ref == ref


def _dist_remote_wait(pid):
    """(ref, server) of the remote call local `pid` is waiting for, or None."""
    _dist_entry("_dist_remote_wait")
    cdef Process p = _local_proc(pid)
    if p is None or p.wait != W_REPLY:
        return None
    return (p.wait_ref, None if p.wait_info is None else (<tuple>p.wait_info)[0])
