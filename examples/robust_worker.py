"""The RobustWorker: errors the worker expects are answered, crashes are supervised.

    python examples/robust_worker.py

``RobustWorker`` is a GenServer that processes data on request. Work that fails in a way
the worker expects (bad input) is caught in ``handle_call`` and answered with
``("error", reason)``: the worker keeps running, keeps its state, and counts the error.
A failure it does not expect (here, an explicit ``("crash", why)`` request) is *not*
caught: the callback raises, the GenServer process crashes (with a crash report in the
log), the caller's ``GenServer.call`` raises ``pyotp.Exit``, and the worker's
``Supervisor`` starts a fresh one, with fresh state, under the same name. That is the
"let it crash" split: handle what you understand, let the supervisor handle the rest.

The program processes a few inputs, crashes the worker once, shows it was restarted, and
ends by itself. ``main`` returns a summary (the tests check it).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

try:
    import pyotp
except ImportError:  # running from a source checkout: python examples/robust_worker.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import pyotp

from pyotp import Exit, GenServer
from pyotp.supervisor import Supervisor

log = logging.getLogger("robust_worker")

NAME = "robust_worker"


def process_data(data: Any) -> float:
    """The work: 100 divided by the number in ``data`` (raises on bad input)."""
    return 100 / int(data)


class RobustWorker(GenServer):
    """Answers ``("process", data)`` with ``("ok", result)`` or ``("error", reason)``;
    ``"stats"`` with its counters; ``("crash", why)`` crashes it on purpose."""

    @classmethod
    def child_spec(cls, arg: Any) -> Dict[str, Any]:
        return {"id": cls, "start": (cls.start_link, (arg,), {"name": NAME})}

    def init(self, _opts: Any) -> Any:
        return ("ok", {"processed": 0, "errors": 0})

    def handle_call(self, request: Any, from_: Any, state: Dict[str, int]) -> Any:
        match request:
            case ("process", data):
                try:
                    result = process_data(data)
                except (ValueError, ZeroDivisionError) as e:
                    log.warning("processing %r failed: %s", data, e)
                    return ("reply", ("error", "%s: %s" % (type(e).__name__, e)),
                            {**state, "errors": state["errors"] + 1})
                return ("reply", ("ok", result), {**state, "processed": state["processed"] + 1})
            case "stats":
                return ("reply", dict(state), state)
            case ("crash", why):
                raise RuntimeError(why)          # not handled here: the supervisor's job
        return ("reply", ("error", ("unknown_request", request)), state)


async def main() -> Dict[str, Any]:
    sup = await Supervisor.start_link([(RobustWorker, None)], strategy="one_for_one", name="robust_sup")
    first_pid = pyotp.whereis(NAME)
    replies: List[Tuple[Any, Any]] = []
    for data in ["4", "abc", "0", "25"]:
        reply = await GenServer.call(NAME, ("process", data))
        replies.append((data, reply))
        print("process(%r) -> %r" % (data, reply))
    stats_before = await GenServer.call(NAME, "stats")
    print("stats:", stats_before, "same process:", pyotp.whereis(NAME) == first_pid)

    ref = pyotp.monitor(first_pid)
    try:
        await GenServer.call(NAME, ("crash", "something unexpected"))
        crash = "no crash?"
    except Exit as e:
        crash = e.reason[0]
        print("the call failed with %r: the worker crashed" % (crash,))
    await pyotp.receive(lambda m: m[0] == "DOWN" and m[1] == ref)
    # the supervisor got the worker's EXIT before our next call: answered after the restart
    [(_id, new_pid, _type, _mods)] = await Supervisor.which_children(sup)
    restarted = new_pid != first_pid and new_pid == pyotp.whereis(NAME)
    stats_after = await GenServer.call(NAME, "stats")
    after = await GenServer.call(NAME, ("process", "5"))
    print("restarted as %r (was %r), fresh stats %r, process('5') -> %r"
          % (new_pid, first_pid, stats_after, after))
    await Supervisor.stop(sup)
    return {"replies": replies, "stats_before": stats_before, "crash": crash,
            "restarted": restarted,
            "stats_after": stats_after, "after": after}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    summary = pyotp.run(main)
    print("done:", "restarted" if summary["restarted"] else "NOT restarted")
