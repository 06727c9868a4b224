"""``MyApp.Application``: an application whose top supervisor runs two workers configured
from TOML, and which depends on a small ``metrics`` application.

* ``Counter`` (a GenServer named ``"my_app.counter"``) starts at the configured
  ``counter_start`` and counts greetings.
* ``Greeter`` (named ``"my_app.greeter"``) answers ``("greet", name)`` with the configured
  ``greeting``, cutting names to ``limits.max_name_length``; it bumps the counter and
  reports to metrics. A configuration reload changes its greeting in place
  (``MyApp.config_change``).
* ``Metrics`` is another application (started first, stopped last) with one server
  counting events when ``[metrics] enabled = true``.

Configuration lives in ``examples/my_app/config/`` (``config.toml`` plus ``dev``,
``prod`` and ``test`` overlays). Run it::

    python -m pyotp run examples.my_app.application:MyApp \\
        --config examples/my_app/config/config.toml --env prod

or in a program:

>>> async def main():
...     pyotp.config.configure("examples/my_app/config/config.toml", env="test")
...     await Application.ensure_all_started(MyApp)
...     return await greet("Ada"), await count()
>>> pyotp.run(main)
('Hello from test, Ada!', 43)
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from pyotp import GenServer, Pid
from pyotp.application import Application
from pyotp.supervisor import Supervisor

_log = logging.getLogger("my_app")

COUNTER = "my_app.counter"
GREETER = "my_app.greeter"
METRICS = "metrics.server"


# ---------------------------------------------------------------------------------------
# The metrics application (a dependency)

class MetricsServer(GenServer):
    """Counts ``("event", name)`` casts while ``[metrics] enabled`` is true."""

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Any = METRICS,
                         timeout: Optional[float] = None, max_mailbox: Any = None) -> Pid:
        return await super().start_link(arg, name=name, timeout=timeout, max_mailbox=max_mailbox)

    def init(self, _arg: Any) -> Any:
        return ("ok", {"enabled": bool(Application.get_env("metrics", "enabled", True)),
                       "counts": {}})

    def handle_cast(self, msg: Any, state: Dict[str, Any]) -> Any:
        if msg[0] == "event" and state["enabled"]:
            counts = state["counts"]
            counts[msg[1]] = counts.get(msg[1], 0) + 1
        elif msg[0] == "enabled":
            state["enabled"] = bool(msg[1])
        return ("noreply", state)

    def handle_call(self, req: Any, from_: Any, state: Dict[str, Any]) -> Any:
        if req == "counts":
            return ("reply", dict(state["counts"]), state)
        return ("reply", ("error", ("unknown_call", req)), state)


class Metrics(Application):
    """The ``metrics`` application: a supervisor with one MetricsServer."""
    name = "metrics"
    env = {"enabled": True}

    async def start(self, start_type: str, args: Any) -> Any:
        return await Supervisor.start_link([MetricsServer], strategy="one_for_one",
                                           name="metrics.supervisor")

    def config_change(self, changed: Dict[str, Any], new: Dict[str, Any], removed: List[Any]) -> Any:
        if "enabled" in changed or "enabled" in new:
            GenServer.cast(METRICS, ("enabled", {**changed, **new}["enabled"]))
        return "ok"


# ---------------------------------------------------------------------------------------
# MyApp's workers

class Counter(GenServer):
    """Starts at ``counter_start``; ``"increment"`` (cast), ``"value"`` (call)."""

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Any = COUNTER,
                         timeout: Optional[float] = None, max_mailbox: Any = None) -> Pid:
        return await super().start_link(arg, name=name, timeout=timeout, max_mailbox=max_mailbox)

    def init(self, _arg: Any) -> Any:
        start = Application.fetch_env_strict("my_app", "counter_start")
        if not isinstance(start, int):
            return ("stop", ("bad_config", "counter_start", start))
        return ("ok", start)

    def handle_cast(self, msg: Any, n: int) -> Any:
        if msg == "increment":
            return ("noreply", n + 1)
        return ("noreply", n)

    def handle_call(self, req: Any, from_: Any, n: int) -> Any:
        if req == "value":
            return ("reply", n, n)
        return ("reply", ("error", ("unknown_call", req)), n)


class Greeter(GenServer):
    """``("greet", name)`` -> ``"<greeting>, <name>!"``."""

    @classmethod
    async def start_link(cls, arg: Any = None, *, name: Any = GREETER,
                         timeout: Optional[float] = None, max_mailbox: Any = None) -> Pid:
        return await super().start_link(arg, name=name, timeout=timeout, max_mailbox=max_mailbox)

    def init(self, _arg: Any) -> Any:
        limits = Application.get_env("my_app", "limits", {})
        return ("ok", {"greeting": Application.fetch_env_strict("my_app", "greeting"),
                       "max": int(limits.get("max_name_length", 40))})

    def handle_call(self, req: Any, from_: Any, state: Dict[str, Any]) -> Any:
        if type(req) is tuple and len(req) == 2 and req[0] == "greet":
            who = str(req[1])[: state["max"]]
            GenServer.cast(COUNTER, "increment")
            GenServer.cast(METRICS, ("event", "greeting"))
            return ("reply", "%s, %s!" % (state["greeting"], who), state)
        return ("reply", ("error", ("unknown_call", req)), state)

    def handle_cast(self, msg: Any, state: Dict[str, Any]) -> Any:
        if type(msg) is tuple and msg[0] == "set_greeting":
            state["greeting"] = msg[1]
        elif type(msg) is tuple and msg[0] == "set_limits":
            state["max"] = int(msg[1].get("max_name_length", state["max"]))
        return ("noreply", state)


class MyApp(Application):
    """``MyApp.Application``: a one_for_one supervisor over Counter and Greeter."""
    name = "my_app"
    dependencies = [Metrics]
    env = {"greeting": "Hello", "counter_start": 0}

    async def start(self, start_type: str, args: Any) -> Any:
        children = [Counter, Greeter]
        sup = await Supervisor.start_link(children, strategy="one_for_one",
                                          name="my_app.supervisor")
        _log.info("my_app started (%s)", start_type)
        return ("ok", sup, {"started_as": start_type})

    def config_change(self, changed: Dict[str, Any], new: Dict[str, Any], removed: List[Any]) -> Any:
        updated = {**changed, **new}
        if "greeting" in updated:
            GenServer.cast(GREETER, ("set_greeting", updated["greeting"]))
        if "limits" in updated:
            GenServer.cast(GREETER, ("set_limits", updated["limits"]))
        return "ok"

    def stop(self, state: Any) -> Any:
        _log.info("my_app stopped (%r)", state)
        return "ok"


# ---------------------------------------------------------------------------------------
# The client API

async def greet(name: str) -> str:
    """Greet ``name`` with the configured greeting.

    >>> await greet("Ada")
    'Hello, Ada!'
    """
    greeting: str = await GenServer.call(GREETER, ("greet", name))
    return greeting


async def count() -> int:
    """How many greetings so far, on top of ``counter_start``.

    >>> await count()
    1
    """
    n: int = await GenServer.call(COUNTER, "value")
    return n


async def metrics() -> Dict[str, int]:
    """Events counted by the metrics application.

    >>> await metrics()
    {'greeting': 1}
    """
    counts: Dict[str, int] = await GenServer.call(METRICS, "counts")
    return counts
