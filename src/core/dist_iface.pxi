# dist_iface.pxi: the distribution interface of the local core, declared in one place.
#
# The core is one Cython module made of included files (src/_core.pyx), so there is one
# namespace and Cython cannot enforce a boundary: a real .pxd per component is not
# possible (Cython reads only src/pyotp/_core.pxd for the pyotp._core extension, and an
# included file cannot cimport a sibling). This file is the boundary by convention,
# checked by tests/core/test_core_interfaces.py: process.pyx, scheduler.pyx, api.pyx and
# gen_server.pyx reach the distribution layer only through the names declared here, and
# the distribution files (dist_channel.pyx, dist_entry.pyx) own their definitions.
#
#   _dist_connected()        is any node connected (a channel registered)? cheap
#   _dist_forget_channels()  the scheduler ended: drop every channel
#   _remote_send(to, msg)    a send to a remote pid or (name, node)
#   _remote_reply(to, msg)   a GenServer reply to a remote caller
#   _remote_call(frm, to, ref, request, label)  a GenServer call (label '$gen_call') or a
#                                            sys request (label 'system') to a remote server
#   _remote_call_gave_up(caller, ref, server) a remote call ended without its reply
#   _remote_hook(op, frm, to, arg)           every other signal involving a remote pid
#                                            (link, unlink, monitor, demonitor, exit2,
#                                            link_exit, down): written by the node's
#                                            channel when connected, else to the Python
#                                            kernel (queued while connecting, or a thread)
#   _set_remote_handler(handler)             the Python kernel installs itself (Python API)
#   _remote_handler          read only: not None while the node is distributed

cdef dict _dist_channels = {}    # node name -> DistChannel, while connected (dist_channel.pyx)


cdef inline bint _dist_connected():
    return len(_dist_channels) != 0


cdef inline void _dist_forget_channels():
    _dist_channels.clear()


# Defined in dist_channel.pyx with these signatures (Cython 3 refuses a forward
# declaration of a cdef function in the same module, so they are listed here only):
#   cdef int _remote_send(object to, object msg) except -1
#   cdef int _remote_reply(object to, object msg) except -1
#   cdef int _remote_call(object frm, object to, object ref, object request, object label) except -1
#   cdef int _remote_call_gave_up(object caller, object ref, object server) except -1
#   cdef void _remote_hook(str op, object frm, object to, object arg) except *

# The Python kernel's handler for the signals that need it (pyotp/dist/kernel.py,
# NetKernel.remote_hook); None while the node is not distributed.
cdef object _remote_handler = None


def _set_remote_handler(handler):
    """Internal (distribution): handler(op, from_pid, to, arg) for remote signals, and
    handler("send", None, dest, msg) for remote sends."""
    global _remote_handler
    _remote_handler = handler

