# deferred.pyx: what an awaited receive()/GenServer.call()/sleep() does, and the warning
# for one that was never awaited.
#
# Owns: the table of deferred operations (OP_*) that a process's reusable awaitable
# (suspend.h) is armed with, the `begin` that suspend.h runs at its first send, and
# _never_awaited.
# Why deferred: the API call only records its arguments in the awaitable; the side effect
# (a message popped, a request sent, a timer started) happens when the awaitable is
# awaited, so a forgotten `await` does nothing, as a forgotten coroutine does, and is
# reported by name ("RuntimeWarning: GenServer.call(...) was never awaited") instead of
# surfacing later as a request whose reply is dropped or a message that vanished.
# Invariants:
#  - begin runs inside the process that armed the awaitable (its own coroutine step, so
#    `_current` is that process); awaited from anywhere else it raises RuntimeError.
#  - begin returns _TOKEN when the process now waits (p.wait set, the scheduler resumes it
#    with the value), or the value itself when it is ready at once.
#  - Errors a caller can see without waiting (a plain callback that must be async, the
#    wrong thread, a bad argument to sleep) still raise at the call, not at the await.

DEF OP_RECEIVE = 0
DEF OP_CALL = 1
DEF OP_SLEEP = 2

cdef tuple _OP_NAMES = ("pyotp.receive(...)", "GenServer.call(...)", "pyotp.sleep(...)")

import warnings as _warnings
cdef object _warn = _warnings.warn
cdef object _warn_explicit = _warnings.warn_explicit


cdef object _susp_begin(object s, int op, object a, object b, object c):
    if _current is None or _current.susp is not s:
        raise RuntimeError("%s must be awaited by the process that called it"
                           % (_OP_NAMES[op] if 0 <= op < len(_OP_NAMES) else "a pyotp wait"))
    if op == OP_RECEIVE:
        return _receive_begin(_current, a, b)
    if op == OP_CALL:
        return _call_begin(_current, a, b, c)
    if op == OP_SLEEP:
        return _sleep_begin(_current, a)
    raise SystemError("pyotp: unknown deferred operation %d" % op)


# CPython 3.12+ inlines only native generators where a coroutine awaits: what the awaitable
# hands CPython there (suspend.h's am_await), made from source so that they are plain
# Python generators (Cython's would take the slow path too)
cdef dict _susp_gens = {}
exec(compile("def wait(token):\n    return (yield token)\n"
             "def ready(value):\n    return value\n    yield\n", "<pyotp wait>", "exec"),
     _susp_gens)
cdef object _SUSP_WAIT_CODE = _susp_gens["wait"].__code__
pyotp_susp_set(_susp_begin, _OP_NAMES, _susp_gens["wait"], _susp_gens["ready"])


cdef object _inner_frame(object coro):
    """The innermost suspended frame of a coroutine chain (where the process waits now)."""
    cdef object frame = None, f
    while coro is not None:
        f = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if f is None or f.f_code is _SUSP_WAIT_CODE:     # (3.12+: the awaitable's generator)
            break
        frame = f
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frame


cdef void _never_awaited(Process p, bint rearm, object fn=None) except *:
    """p's awaitable is still armed: the API call that armed it was never awaited. Disarm
    it (nothing ran) and warn, at the best place known: the caller's line when the process
    arms it again (that is the next wait after the forgotten one), else where the process
    stands now (its next await, or its function)."""
    cdef str msg = "%s was never awaited" % pyotp_susp_disarm(p.susp)
    if rearm:
        _warn(msg + " (found at the process's next wait)", RuntimeWarning, 1)
        return
    frame = _inner_frame(p.coro)
    if frame is not None:
        _warn_explicit(msg + " (found when the process went on to wait here)", RuntimeWarning,
                       frame.f_code.co_filename, frame.f_lineno)
        return
    code = getattr(p.coro, "cr_code", None) or getattr(fn, "__code__", None)
    if code is not None:
        _warn_explicit(msg + " (found when %s ended)" % code.co_name, RuntimeWarning,
                       code.co_filename, code.co_firstlineno)
    else:
        _warn(msg, RuntimeWarning, 1)
