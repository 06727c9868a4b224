"""The TrafficLight: a GenStateMachine cycling red -> green -> yellow -> red.

    python examples/traffic_light.py

Each colour is a state with its own method (callback mode ``state_functions``) and its own
``state_timeout``: when it fires, the light moves on. Entering a state (``state_enter``)
arms that state's timeout, so the timeout is restarted on every change, whatever caused it.
A ``"next"`` call skips ahead at once and answers with the new colour, using a
``("reply", from_, new_state)`` action: a gen_statem call is always answered with a reply
action (or ``GenStateMachine.reply``), never by the callback's return value. Calls also
answer ``"state"`` with the current colour and ``"log"`` with the transitions seen.

The program prints each transition, drives the light twice around by its timeouts, presses
``next`` three times, and ends by itself.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

try:
    import pyotp
except ImportError:  # running from a source checkout: python examples/traffic_light.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    import pyotp

from pyotp.gen_statem import GenStateMachine

# How long each colour lasts, in seconds (short: this is a demo).
DURATIONS: Dict[str, float] = {"red": 0.03, "green": 0.02, "yellow": 0.01}
NEXT: Dict[str, str] = {"red": "green", "green": "yellow", "yellow": "red"}

Transition = Tuple[str, str, str]     # (old colour, new colour, "timeout" | "next")


class TrafficLight(GenStateMachine):
    """A traffic light. ``data`` is a dict: ``log`` (the transitions so far), ``cause``
    (why the light is changing), ``watcher`` (a pid sent ``("transition", old, new,
    cause, light_pid)`` on every change, or None) and ``echo`` (print transitions)."""

    def callback_mode(self) -> Any:
        return ["state_functions", "state_enter"]

    def init(self, opts: Dict[str, Any]) -> Any:
        data: Dict[str, Any] = {"log": [], "cause": "start", "watcher": opts.get("watcher"),
                "echo": bool(opts.get("echo"))}
        return ("ok", "red", data)

    # -- one method per colour ------------------------------------------------------------

    def red(self, event_type: Any, content: Any, data: Dict[str, Any]) -> Any:
        return self.light("red", event_type, content, data)

    def green(self, event_type: Any, content: Any, data: Dict[str, Any]) -> Any:
        return self.light("green", event_type, content, data)

    def yellow(self, event_type: Any, content: Any, data: Dict[str, Any]) -> Any:
        return self.light("yellow", event_type, content, data)

    # -- what every colour does -------------------------------------------------------------

    def light(self, colour: str, event_type: Any, content: Any, data: Dict[str, Any]) -> Any:
        if event_type == "enter":
            # `content` is the previous colour (the initial state's enter call gets itself)
            self.announce(content, colour, data)
            return ("keep_state_and_data", ("state_timeout", DURATIONS[colour], "change"))
        if event_type == "state_timeout":
            data["cause"] = "timeout"
            return ("next_state", NEXT[colour], data)
        if type(event_type) is tuple and event_type[0] == "call":
            from_ = event_type[1]
            if content == "next":
                data["cause"] = "next"
                return ("next_state", NEXT[colour], data, [("reply", from_, NEXT[colour])])
            if content == "state":
                return ("keep_state_and_data", [("reply", from_, colour)])
            if content == "log":
                return ("keep_state_and_data", [("reply", from_, list(data["log"]))])
            return ("keep_state_and_data", [("reply", from_, ("error", ("unknown_call", content)))])
        return "keep_state_and_data"          # casts and stray messages are ignored

    def announce(self, old: str, new: str, data: Dict[str, Any]) -> None:
        if old == new:                       # the initial enter call
            if data["echo"]:
                print("light starts at %s" % new)
            return
        t = (old, new, data["cause"])
        data["log"].append(t)
        if data["echo"]:
            print("%-6s -> %-6s (%s)" % t)
        if data["watcher"] is not None:
            pyotp.send(data["watcher"], ("transition",) + t + (pyotp.self(),))


async def main(echo: bool = True) -> Dict[str, Any]:
    """Run the demo; returns what happened (the test checks it)."""
    me = pyotp.self()
    light = await TrafficLight.start_link({"watcher": me, "echo": echo}, name="traffic_light")
    # twice around by the state timeouts alone
    by_timeout: List[Transition] = []
    while len(by_timeout) < 6:
        msg = await pyotp.receive(lambda m: type(m) is tuple and m[0] == "transition")
        by_timeout.append(msg[1:4])
    # then press "next" three times: each reply is the colour the light switched to
    replies = []
    for _ in range(3):
        colour = await GenStateMachine.call("traffic_light", "next")
        replies.append(colour)
        if echo:
            print("next -> %s" % colour)
    log = await GenStateMachine.call(light, "log")
    await GenStateMachine.stop(light)
    return {"by_timeout": by_timeout, "replies": replies, "log": log}


if __name__ == "__main__":
    pyotp.run(main)
