"""SIGINT/SIGTERM handling shared by ``pyotp.run`` and ``python -m pyotp run``.

While a ``stop_on_signals`` block is active, the first SIGINT or SIGTERM calls the
innermost block's ``on_signal(signum)`` on the loop thread, which starts an orderly stop;
a second one (to any block) while stopping exits the process at once with status
128 + signal number, as a shell reports a process killed by that signal. Handlers can only
be installed on the main thread: elsewhere the block does nothing.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator, List

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_callbacks: List[Callable[[int], None]] = []
_received: List[int] = []
_restore: List[Callable[[], Any]] = []


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # pragma: no cover
        return "signal %d" % signum


def _dispatch(signum: int) -> None:
    _received.append(signum)
    if len(_received) > 1:
        print("pyotp: received %s again while stopping, exiting now" % signal_name(signum),
              file=sys.stderr, flush=True)
        os._exit(128 + signum)
    if _callbacks:
        _callbacks[-1](signum)


def _install(loop: asyncio.AbstractEventLoop) -> None:
    for sig in SIGNALS:
        try:
            loop.add_signal_handler(sig, _dispatch, int(sig))
            _restore.append(functools.partial(loop.remove_signal_handler, sig))
        except (NotImplementedError, RuntimeError, ValueError):
            # Windows event loops have no add_signal_handler: a plain handler that hands
            # over to the loop thread.
            def handler(signum: int, frame: Any) -> None:
                loop.call_soon_threadsafe(_dispatch, signum)
            try:
                old = signal.signal(sig, handler)
            except (ValueError, OSError):  # pragma: no cover - not the main thread
                continue
            _restore.append(functools.partial(signal.signal, sig, old))


def _uninstall() -> None:
    while _restore:
        try:
            _restore.pop()()
        except Exception:  # pragma: no cover
            pass
    del _received[:]


@contextlib.contextmanager
def stop_on_signals(loop: asyncio.AbstractEventLoop, on_signal: Callable[[int], None]) -> Iterator[bool]:
    """See the module documentation. Yields whether the handlers are active (False off the
    main thread). Blocks nest: the innermost one's ``on_signal`` is called.

    Inside a coroutine running on ``loop`` (``stop`` a future of that loop)::

        with stop_on_signals(loop, lambda signum: stop.set_result(signum)):
            await something()
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    if not _callbacks:
        _install(loop)
    _callbacks.append(on_signal)
    try:
        yield True
    finally:
        _callbacks.remove(on_signal)
        if not _callbacks:
            _uninstall()
