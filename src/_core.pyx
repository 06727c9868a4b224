# cython: language_level=3
"""pyotp._core: the compiled runtime. One component per included file:

- core/decl.pxi      C-level declarations shared by every component (platform.h, CPython API)
- core/dist_iface.pxi the distribution interface the local core uses (declared in one place)
- core/terms.pyx     Atom, Pid, Reference: the identities that cross nodes
- core/errors.pyx    the exception types of the public API
- core/mailbox.pyx   lock-free MPSC mailbox + private queue with a save position
- core/timer.pyx     hierarchical timer wheel, one loop timer armed for the next deadline
- core/process.pyx   the Process object: links, monitors, exit signals, names
- core/scheduler.pyx run queue, coroutine driver, the node's lifecycle
- core/deferred.pyx  what an awaited receive/call/sleep does; the never-awaited warning
- core/gen_server.pyx the GenServer message loop (callbacks dispatched from C)
- core/api.pyx       the public process API (spawn, send, receive, ...)
- core/dist_entry.pyx entry points for signals arriving from other nodes
- core/etf.pyx       the External Term Format codec
- core/wait_policy.pyx how long a thread may spin before it sleeps (busy wait)
- core/dist_header.pyx distribution header frames: the atom cache, fragmented messages
- core/dist_channel.pyx the per-message data path of a distribution connection
- core/alias.pyx     process aliases (alias/unalias, replies to alias-tagged calls)
- core/resp.pyx      the Redis protocol (RESP2/RESP3) parser and encoder (pyotp.resp)
- core/shm_ring.pyx   shared-memory byte rings between pool nodes on one host
"""
include "core/decl.pxi"
include "core/dist_iface.pxi"
include "core/terms.pyx"
include "core/errors.pyx"
include "core/mailbox.pyx"
include "core/timer.pyx"
include "core/process.pyx"
include "core/scheduler.pyx"
include "core/deferred.pyx"
include "core/gen_server.pyx"
include "core/api.pyx"
include "core/dist_entry.pyx"
include "core/etf.pyx"
include "core/wait_policy.pyx"
include "core/dist_header.pyx"
include "core/dist_channel.pyx"
include "core/alias.pyx"
include "core/resp.pyx"
include "core/shm_ring.pyx"
