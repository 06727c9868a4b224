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
try:
    from ._core import (
        Atom, Pid, Reference, Timer,
        Exit, BadArg, CallbackError, StartError,
        self, spawn, spawn_link, spawn_monitor, spawn_opt, send, receive, sleep, make_ref,
        alias, unalias,
        register, unregister, whereis, registered,
        link, unlink, monitor, demonitor, exit, process_flag, is_alive,
        process_info, processes,
        send_after, start_timer, apply_after, cancel_timer, read_timer,
        local_node,
    )
except ModuleNotFoundError as _e:
    if _e.name != "pyotp._core":
        raise
    # The usual cause: a source checkout's src/ on PYTHONPATH, never built (or built for
    # another Python), shadowing an installed pyotp-actors. Say so instead of a bare
    # "No module named 'pyotp._core'".
    import os as _os
    raise ImportError(
        "pyotp's compiled core (pyotp._core) is not built in %s. In a source checkout run "
        "`make build` (needs Cython>=3.0.10 and setuptools>=77); if pyotp-actors is "
        "installed, take that directory off PYTHONPATH so the installed package is used"
        % _os.path.dirname(_os.path.abspath(__file__)), name="pyotp._core") from None
from . import gen as _gen  # installs the name hooks
from .gen_server import GenServer
from .runtime import Runtime, NodeThread, run, register_launcher as _register_launcher
from typing import TYPE_CHECKING as _TYPE_CHECKING, Any as _Any

if _TYPE_CHECKING:   # imported on first use (below, __getattr__): distribution costs import time
    from .dist.service_discovery import ServiceDiscovery, ServiceDiscoveryError


def _run_node(*args: _Any, **kw: _Any) -> _Any:
    # pyotp.run(node=...): distribution sits above the runtime, so the runtime does not
    # import it; this package, which imports both, hands it the launcher
    from .dist import run_node
    return run_node(*args, **kw)


_register_launcher("node", _run_node)
from .gen_statem import GenStateMachine
from .gen_event import EventHandler, EventManager
from .supervisor import Supervisor, SupervisorError, ChildSpecError
from .dynamic_supervisor import DynamicSupervisor
from .task import Task, TaskSupervisor
from .registry import Registry
from .pubsub import PubSub
from .application import Application, ApplicationStartError, ApplicationEnvError
from .circuit_breaker import CircuitBreaker, CircuitOpenError
from .etf import DecodeError
from .gen_stage import (GenStage, ConsumerSupervisor, DemandDispatcher, BroadcastDispatcher,
                        PartitionDispatcher, GenStageError)
from .pipeline import Pipeline, Message, PipelineError
from . import config, sys, etf, observer, dashboard, telemetry, tracing

__all__ = [
    "__version__", "Atom", "Pid", "Reference", "Timer",
    "Exit", "BadArg", "CallbackError", "StartError",
    "self", "spawn", "spawn_link", "spawn_monitor", "spawn_opt", "send", "receive", "sleep", "make_ref",
    "alias", "unalias",
    "register", "unregister", "whereis", "registered",
    "link", "unlink", "monitor", "demonitor", "exit", "process_flag", "is_alive",
    "process_info", "processes",
    "send_after", "start_timer", "apply_after", "cancel_timer", "read_timer", "local_node",
    "GenServer", "Runtime", "NodeThread", "run",
    "GenStateMachine", "EventHandler", "EventManager", "Supervisor", "SupervisorError",
    "ChildSpecError", "DynamicSupervisor", "Task", "TaskSupervisor", "Registry", "PubSub",
    "Application", "ApplicationStartError", "ApplicationEnvError", "CircuitBreaker",
    "CircuitOpenError", "DecodeError", "ServiceDiscovery", "ServiceDiscoveryError",
    "GenStage", "ConsumerSupervisor", "DemandDispatcher", "BroadcastDispatcher",
    "PartitionDispatcher", "GenStageError", "Pipeline", "Message", "PipelineError",
]


def __getattr__(name: str) -> object:
    # distribution is imported on first use: it costs ~90 ms at import time
    if name in ("Node", "rpc"):
        from . import dist
        return getattr(dist, name)
    if name in ("ServiceDiscovery", "ServiceDiscoveryError"):
        from .dist import service_discovery
        return getattr(service_discovery, name)
    if name == "otel":          # needs the optional OpenTelemetry packages
        import importlib
        return importlib.import_module(".otel", __name__)
    raise AttributeError("module 'pyotp' has no attribute %r" % (name,))


# `pyotp.sys` and `pyotp.config` are reachable as attributes but stay out of __all__ so
# that `from pyotp import *` never shadows the standard library's `sys`.
