"""The EventLogger: one event manager, two handlers.

    python examples/event_logger.py

* ``LogCollector`` keeps every log event (``("log", level, text)``) it sees, prints it
  when asked to, and answers the ``"get_logs"`` call with what it collected.
* ``LevelCounter`` counts the events per level and answers ``"counts"``.

Both are installed on one ``EventManager`` named ``"event_logger"``; ``notify`` sends each
event to both (without waiting), ``sync_notify`` waits until both have handled it, and
``EventManager.call`` asks one handler a question. A handler that crashes on a bad event is
removed and the other one keeps going: the program shows that too, then ends by itself.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

try:
    import pyotp
except ImportError:  # running from a source checkout: python examples/event_logger.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import pyotp

from pyotp.gen_event import EventHandler, EventManager

LogEvent = Tuple[str, str, str]   # ("log", level, text)


class LogCollector(EventHandler):
    """Collects log events; ``init({"echo": True})`` also prints each one."""

    def init(self, opts: Dict[str, Any]) -> Any:
        return ("ok", {"echo": bool(opts.get("echo")), "logs": []})

    def handle_event(self, event: Any, st: Dict[str, Any]) -> Any:
        if event[0] == "log":
            _, level, text = event
            st["logs"].append((level, text))
            if st["echo"]:
                print("[%s] %s" % (level.upper(), text))
        return ("ok", st)

    def handle_call(self, request: Any, st: Dict[str, Any]) -> Any:
        if request == "get_logs":
            return ("ok", list(st["logs"]), st)
        if request == "clear":
            return ("ok", len(st["logs"]), dict(st, logs=[]))
        return ("ok", ("error", ("unknown_request", request)), st)

    def terminate(self, arg: Any, st: Dict[str, Any]) -> Any:
        return list(st["logs"])      # delete_handler returns what was collected


class LevelCounter(EventHandler):
    """Counts log events per level. Only knows four levels: anything else crashes it."""

    LEVELS = ("debug", "info", "warning", "error")

    def init(self, _: Any) -> Any:
        return ("ok", {level: 0 for level in self.LEVELS})

    def handle_event(self, event: Any, counts: Dict[str, int]) -> Any:
        if event[0] == "log":
            level = event[1]
            if level not in counts:
                raise ValueError("unknown level %r" % (level,))
            counts[level] += 1
        return ("ok", counts)

    def handle_call(self, request: Any, counts: Dict[str, int]) -> Any:
        return ("ok", dict(counts), counts)


def log(manager: Any, level: str, text: str) -> None:
    EventManager.notify(manager, ("log", level, text))


async def main(echo: bool = True) -> Dict[str, Any]:
    mgr = await EventManager.start_link(name="event_logger")
    await EventManager.add_handler(mgr, LogCollector, {"echo": echo})
    await EventManager.add_handler(mgr, LevelCounter, None)

    log(mgr, "info", "server started")
    log(mgr, "debug", "loaded 3 plugins")
    log(mgr, "warning", "disk 91% full")
    log(mgr, "error", "request 17 failed")
    await EventManager.sync_notify(mgr, ("log", "info", "checkpoint"))

    logs: List[Tuple[str, str]] = await EventManager.call(mgr, LogCollector, "get_logs")
    counts = await EventManager.call(mgr, LevelCounter, "counts")

    # a level LevelCounter does not know: it crashes and is removed; the collector goes on
    await EventManager.sync_notify(mgr, ("log", "critical", "core meltdown"))
    handlers_after = await EventManager.which_handlers(mgr)
    logs_after = await EventManager.call(mgr, LogCollector, "get_logs")

    final = await EventManager.delete_handler(mgr, LogCollector, "shutdown")
    await EventManager.stop(mgr)
    return {"logs": logs, "counts": counts, "handlers_after_crash": handlers_after,
            "logs_after_crash": logs_after, "returned_by_delete": final}


if __name__ == "__main__":
    r = pyotp.run(main)
    print("collected:", len(r["logs"]), "events; counts:", r["counts"])
    print("after the bad event, handlers:", [h.__name__ for h in r["handlers_after_crash"]])
