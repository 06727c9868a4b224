"""A dbg-style tracer: the sends, receives, calls and casts of chosen processes, at a
bounded rate, to a process, a file or the log.

``trace(pid, to="log", rate=100)`` starts tracing a local process; ``stop(pid)`` ends it.
At most ``rate`` events a second are written; the others are counted and reported as one
``("dropped", n)`` event when writing resumes, so a busy process or a slow output can
never flood the node. A tracer whose output fails is removed (the traced process is not
affected). The hook in the core is one C check per message when no tracer is set.

Output: ``to="log"`` (logger ``pyotp.trace``, INFO), ``to=pid`` (messages
``("trace", traced_pid, event, data)``), ``to="path/file.log"`` given as
``to=("file", path)`` (one line per event, appended).

>>> async def main():
...     pid = pyotp.spawn(pyotp.receive)
...     pyotp.tracing.trace(pid, to=pyotp.self())
...     pyotp.send(pid, "hello")
...     return await pyotp.receive()
>>> pyotp.run(main)[2:]
('receive', 'hello')
"""
import logging
import time
from typing import Any, Optional, TextIO

from . import _core

__all__ = ["trace", "stop", "Tracer"]

_log = logging.getLogger("pyotp.trace")


class Tracer:
    """The callable the core runs at each event of a traced process (see ``trace``)."""

    def __init__(self, to: Any = "log", rate: int = 100) -> None:
        if type(rate) is not int or rate <= 0:
            raise ValueError("tracing: rate must be an int > 0 (events per second), got %r" % (rate,))
        self.file: Optional[TextIO] = None
        if to == "log" or type(to) is _core.Pid:
            self.to = to
        elif type(to) is tuple and len(to) == 2 and to[0] == "file" and isinstance(to[1], str):
            self.to = "file"
            self.file = open(to[1], "a", encoding="utf-8")
        else:
            raise ValueError("tracing: to must be 'log', a pid or ('file', path), got %r" % (to,))
        self.rate = rate
        self.window = 0.0
        self.count = 0
        self.dropped = 0
        self.busy = False

    def __call__(self, pid: Any, event: str, data: Any) -> None:
        if self.busy:               # the tracer's own send to its output: not traced
            return
        now = time.monotonic()
        if now - self.window >= 1.0:
            self.window = now
            self.count = 0
            if self.dropped:
                n, self.dropped = self.dropped, 0
                self._out(pid, "dropped", n)
                self.count = 1
        if self.count >= self.rate:
            self.dropped += 1
            return
        self.count += 1
        self._out(pid, event, data)

    def _out(self, pid: Any, event: str, data: Any) -> None:
        self.busy = True
        try:
            self._write(pid, event, data)
        finally:
            self.busy = False

    def _write(self, pid: Any, event: str, data: Any) -> None:
        if self.to == "log":
            _log.info("*DBG* %s %s %s", pid, event, _short(data))
        elif self.to == "file":
            assert self.file is not None
            self.file.write("%s %s %s\n" % (pid, event, _short(data)))
            self.file.flush()
        else:
            if self.to == pid and event == "receive" and type(data) is tuple and data[:1] == ("trace",):
                return                   # a process tracing to itself: its trace messages
            _core.send(self.to, ("trace", pid, event, data))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _short(x: Any) -> str:
    r = repr(x)
    return r if len(r) <= 500 else r[:497] + "..."


def trace(pid: Any, to: Any = "log", rate: int = 100) -> Tracer:
    """Trace the local process ``pid`` (replacing any tracer it had); returns the Tracer."""
    t = Tracer(to, rate)
    try:
        old = _core.set_tracer(pid, t)
    except BaseException:
        t.close()
        raise
    if isinstance(old, Tracer):
        old.close()
    return t


def stop(pid: Any) -> bool:
    """Stop tracing ``pid``; False if it was not traced (or is dead)."""
    if not _core.is_alive(pid):
        return False
    old = _core.set_tracer(pid, None)
    if isinstance(old, Tracer):
        old.close()
    return old is not None
