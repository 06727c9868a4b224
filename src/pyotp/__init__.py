"""pyotp: Erlang/OTP for Python, with a compiled (Cython) core.

Processes, mailboxes with selective receive, links and monitors, timers and the
GenServer behaviour, on an asyncio event loop. Durations are always **seconds**.

>>> import pyotp
>>> from pyotp import GenServer
>>> class Counter(GenServer):
...     def init(self, n): return ("ok", n)
...     def handle_cast(self, msg, n): return ("noreply", n + 1)
...     def handle_call(self, msg, from_, n): return ("reply", n, n)
>>> async def main():
...     pid = await Counter.start_link(0)
...     GenServer.cast(pid, "inc")
...     return await GenServer.call(pid, "get")
>>> pyotp.run(main)
1
"""
from ._version import __version__
from ._core import (
    Atom, Pid, Reference, Timer,
    Exit, BadArg, CallbackError, StartError,
    self, spawn, spawn_link, spawn_monitor, send, receive, sleep, make_ref,
    register, unregister, whereis, registered,
    link, unlink, monitor, demonitor, exit, process_flag, is_alive,
    process_info, processes,
    send_after, start_timer, apply_after, cancel_timer, read_timer,
    local_node,
)
from . import gen as _gen  # installs the name hooks
from .gen_server import GenServer
from .runtime import Runtime, NodeThread, run

__all__ = [
    "__version__", "Atom", "Pid", "Reference", "Timer",
    "Exit", "BadArg", "CallbackError", "StartError",
    "self", "spawn", "spawn_link", "spawn_monitor", "send", "receive", "sleep", "make_ref",
    "register", "unregister", "whereis", "registered",
    "link", "unlink", "monitor", "demonitor", "exit", "process_flag", "is_alive",
    "process_info", "processes",
    "send_after", "start_timer", "apply_after", "cancel_timer", "read_timer", "local_node",
    "GenServer", "Runtime", "NodeThread", "run",
]
