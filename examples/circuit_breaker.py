"""The CircuitBreaker: protect a flaky service, fail fast while it is down.

    python examples/circuit_breaker.py

The reference example wrote a breaker GenServer by hand; pyotp ships it as a library
module (``pyotp.CircuitBreaker``, see ``src/pyotp/circuit_breaker.py``), so this example
*uses* it, the way an application would:

* ``fetch_price`` is the protected service: an ``async`` function that fails (raises
  ``ConnectionError``) while the ``"price_feed"`` switch is off. It counts its calls, so
  the program can show that calls made while the circuit is open never reach it.
* the breaker ``"prices"`` opens after 3 consecutive failures, stays open for
  ``reset_timeout`` seconds (a timer on the core's timer wheel), then lets one trial call
  through (half-open): success closes it, failure opens it again.
* every state change is published to the event manager ``"alerts"``; ``AlertPrinter``
  prints it, ``Forward`` relays it to the program, which waits for the changes it
  expects with ``receive`` (no polling, no sleeping).

The program ends by itself; ``main`` returns a summary (the tests check it).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List

try:
    import pyotp
except ImportError:  # running from a source checkout: python examples/circuit_breaker.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import pyotp

from pyotp.circuit_breaker import CircuitBreaker, CircuitOpenError
from pyotp.gen_event import EventHandler, EventManager
from pyotp.supervisor import Supervisor

BREAKER = "prices"
ALERTS = "alerts"

# the "outside world" the service talks to: on/off, and how often it was reached
feed: Dict[str, Any] = {"up": True, "calls": 0}


async def fetch_price(symbol: str) -> float:
    """The protected service. Raises ConnectionError while the feed is down.

    >>> await fetch_price("ACME")
    42.0
    """
    feed["calls"] += 1
    if not feed["up"]:
        raise ConnectionError("price feed unreachable")
    return 42.0 + len(symbol) - 4


class AlertPrinter(EventHandler):
    """Prints every breaker state change."""

    def handle_event(self, event: Any, state: Any) -> Any:
        if type(event) is tuple and event[0] == "circuit_breaker":
            _, name, old, new = event
            print("  [alert] circuit %r: %s -> %s" % (name, old, new))
        return ("ok", state)


class Forward(EventHandler):
    """Sends every event to a process (the handler's state)."""

    def handle_event(self, event: Any, pid: Any) -> Any:
        pyotp.send(pid, event)
        return ("ok", pid)


async def get_price(symbol: str) -> Any:
    """What the application calls: ``("ok", price)``, ``("error", why)`` when the service
    failed, ``("unavailable", state)`` when the breaker rejected the call."""
    try:
        return ("ok", await CircuitBreaker.call(BREAKER, symbol))
    except CircuitOpenError as e:
        return ("unavailable", e.state)
    except ConnectionError as e:
        return ("error", str(e))


async def main(reset_timeout: float = 0.2) -> Dict[str, Any]:
    feed.update(up=True, calls=0)
    sup = await Supervisor.start_link([
        (EventManager, ALERTS),
        (CircuitBreaker, {"name": BREAKER, "service": fetch_price, "failure_threshold": 3,
                          "reset_timeout": reset_timeout, "events": ALERTS}),
    ], strategy="rest_for_one")
    await EventManager.add_handler(ALERTS, AlertPrinter, None)
    await EventManager.add_handler(ALERTS, Forward, pyotp.self())

    def change(old: str, new: str) -> Any:
        return lambda m: m == ("circuit_breaker", BREAKER, old, new)

    answers: List[Any] = []

    async def ask(note: str) -> Any:
        answer = await get_price("ACME")
        answers.append(answer)
        print("get_price -> %-40r (%s)" % (answer, note))
        return answer

    await ask("feed up, circuit closed")
    print("-- the price feed goes down")
    feed["up"] = False
    for i in range(3):
        await ask("failure %d of 3" % (i + 1))
    await pyotp.receive(change("closed", "open"), timeout=5)
    calls_when_open = feed["calls"]
    await ask("open: rejected at once")
    await ask("open: rejected at once")
    reached_while_open = feed["calls"] - calls_when_open
    print("service calls while open: %d" % reached_while_open)

    await pyotp.receive(change("open", "half_open"), timeout=5)
    await ask("half-open trial, feed still down")
    await pyotp.receive(change("half_open", "open"), timeout=5)

    print("-- the price feed comes back")
    feed["up"] = True
    await pyotp.receive(change("open", "half_open"), timeout=5)
    await ask("half-open trial succeeds")
    await pyotp.receive(change("half_open", "closed"), timeout=5)
    await ask("closed again")
    state = await CircuitBreaker.state(BREAKER)
    await Supervisor.stop(sup)
    return {"answers": answers, "reached_while_open": reached_while_open,
            "service_calls": feed["calls"], "final_state": state}


if __name__ == "__main__":
    summary = pyotp.run(main)
    print("done: the service was reached %d times, %d of them while the circuit was open"
          % (summary["service_calls"], summary["reached_while_open"]))
