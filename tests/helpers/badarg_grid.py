"""Driver for tests/core/test_badarg_grid.py: call every public function of pyotp, pyotp.etf
and pyotp._core (its underscore functions too: they are importable) with a grid of bad
arguments, in three situations: no runtime, a runtime on another thread (calls from this
one), and inside a process on the node's loop thread. Exceptions are fine; the test only
asserts that this interpreter never dies of a signal and never hangs.

Before each function its name goes to stderr, so a crash names its culprit.
"""
from __future__ import annotations

import inspect
import itertools
import sys
import threading

import pyotp
import pyotp.etf
from pyotp import _core

# Never called with the grid, and why:
SKIP = {
    "run",                # runs a whole node: covered by its own tests (bad main -> exception)
    "__getattr__",        # module attribute hook, not an API
    "_node_attach",       # would attach a second scheduler to a foreign loop (it refuses, but
    "_node_detach",       #   detaching/killing the node under the grid ends the phase early)
    "_kill_all",
    "_shutdown_all",
    "_new_lock",          # _thread.allocate_lock, not ours
    "_enter_task",        # asyncio.tasks internals imported by the core, not ours
    "_leave_task",
}


def _grid() -> list:
    return [None, 0, -1, 2 ** 200, -(2 ** 200), 1.5, float("nan"), "x", "", b"",
            b"\x83" * (1 << 20), bytearray(), [], {}, (), object(), pyotp.Atom("a")]


def _targets() -> list:
    out = []
    seen = set()
    for mod in (pyotp, pyotp.etf, _core):
        for name in sorted(dir(mod)):
            fn = getattr(mod, name)
            if not callable(fn) or isinstance(fn, type) or name in SKIP:
                continue
            if name.startswith("__") and name != "__pyx_unpickle_DistChannel" \
                    and name != "__pyx_unpickle_GenSpec":
                continue
            if id(fn) in seen:
                continue
            seen.add(id(fn))
            out.append(("%s.%s" % (mod.__name__, name), fn))
    return out


def _classes() -> list:
    """The core's classes (internal ones included: they are importable) and an instance
    of each that its constructor accepts, for calling its methods with the grid."""
    import asyncio
    out = []
    for name in sorted(dir(_core)):
        cls = getattr(_core, name)
        if not isinstance(cls, type) or issubclass(cls, BaseException):
            continue
        inst = None
        for args in ((), (None,), ("a",), (None, None, {}, {}, {}, 1024)):
            try:
                inst = cls(*args)
                break
            except Exception:
                continue
        if isinstance(inst, _core.DistChannel):
            inst.conn = None
        out.append((name, cls, inst))
    return out


def _call(fn, args) -> object:
    try:
        r = fn(*args)
    except BaseException as e:       # exceptions are the point; Exit is a BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return None
    close = getattr(r, "close", None)   # an awaitable that would wait: never awaited
    if inspect.iscoroutine(r) or (inspect.isgenerator(r) and close is not None):
        close()
    elif hasattr(r, "cancel") and hasattr(r, "done") and not isinstance(r, (_core.Timer, _core.Process)):
        r.cancel()
    return r


def _methods() -> list:
    out = []
    for name, cls, inst in _classes():
        out.append(("_core.%s()" % name, cls))
        if inst is None:
            continue
        for m in sorted(dir(inst)):
            if m.startswith("__") or m in METHOD_SKIP.get(name, ()):
                continue
            try:
                fn = getattr(inst, m)
            except Exception:
                continue
            if callable(fn) and not isinstance(fn, type):
                out.append(("_core.%s().%s" % (name, m), fn))
    return out


# methods that would hand the grid's garbage to asyncio or the OS rather than to pyotp
METHOD_SKIP = {
    "Process": ("get_coro",),
    "_ThreadWaiter": ("wait",),     # blocks until released, by design (a lock)
}


def run_grid(tag: str) -> None:
    g = _grid()
    small = g[:8]
    for qual, fn in _targets() + _methods():
        sys.stderr.write("%s %s\n" % (tag, qual))
        sys.stderr.flush()
        _call(fn, ())
        for a in g:
            _call(fn, (a,))
        for a, b in itertools.product(g, g):
            _call(fn, (a, b))
        for a, b, c in itertools.product(small, small, small):
            _call(fn, (a, b, c))
        for a, b, c, d in itertools.product(small[:3], repeat=4):
            _call(fn, (a, b, c, d))


def main() -> None:
    run_grid("no-runtime")
    node = pyotp.Runtime.start_thread(use_uvloop=False)
    try:
        run_grid("other-thread")

        async def in_process() -> str:
            run_grid("loop-thread")
            return "done"

        assert node.call_in_loop(_run_in_process, in_process, timeout=60) == "done"
    finally:
        node.stop()
    sys.stdout.write("grid ok\n")


async def _run_in_process(body):
    pid = _core.spawn(body)
    reason, result = await _core._await_exit(pid)
    if reason != "normal":
        raise RuntimeError("the loop-thread grid process exited with %r" % (reason,))
    return result


if __name__ == "__main__":
    threading.stack_size(1 << 24)
    main()
