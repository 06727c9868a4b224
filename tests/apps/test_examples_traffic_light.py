"""The TrafficLight example (examples/traffic_light.py): red -> green -> yellow -> red by
state timeouts, and a "next" call answered with a reply action carrying the new colour."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import pyotp

_PATH = Path(__file__).resolve().parents[2] / "examples" / "traffic_light.py"
_spec = importlib.util.spec_from_file_location("example_traffic_light", _PATH)
ex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ex)

CYCLE = [("red", "green", "timeout"), ("green", "yellow", "timeout"), ("yellow", "red", "timeout")]


def check_log(log, replies):
    """Every transition follows the cycle from where the last one ended, and the "next"
    transitions are exactly the replies, in order."""
    where = "red"
    for old, new, cause in log:
        assert old == where and new == ex.NEXT[old]
        where = new
    assert [new for _old, new, cause in log if cause == "next"] == replies


def test_traffic_light_main(capsys):
    r = pyotp.run(ex.main, False)
    assert r["by_timeout"] == CYCLE * 2
    assert r["log"][:6] == CYCLE * 2
    assert len(r["replies"]) == 3
    check_log(r["log"], r["replies"])
    assert capsys.readouterr().out == ""


@pytest.mark.pyotp
async def test_next_reply_is_the_new_state_and_restarts_its_timeout():
    light = await ex.TrafficLight.start_link({"watcher": pyotp.self()})
    # before red's 0.03 s timeout: next -> green, answered with "green"
    reply = await ex.GenStateMachine.call(light, "next")
    t = await pyotp.receive(lambda m: m[0] == "transition")
    # green's own timeout then moves it on
    t2 = await pyotp.receive(lambda m: m[0] == "transition")
    unknown = await ex.GenStateMachine.call(light, "dance")
    t = t[1:4]
    t2 = t2[1:4]
    assert reply == t[1] == "green" and t == ("red", "green", "next")
    assert t2 == ("green", "yellow", "timeout")
    assert unknown == ("error", ("unknown_call", "dance"))


def test_many_lights_cycle_independently():
    async def main():
        me = pyotp.self()
        lights = [await ex.TrafficLight.start_link({"watcher": me}) for _ in range(200)]
        seen = {p: [] for p in lights}
        waiting = set(lights)
        while waiting:
            m = await pyotp.receive(lambda m: m[0] == "transition")
            seen[m[4]].append(m[1:4])
            if len(seen[m[4]]) == 3:
                waiting.discard(m[4])
        logs = [await ex.GenStateMachine.call(p, "log") for p in lights]
        for p in lights:
            await ex.GenStateMachine.stop(p)
        return [(seen[p], log[:3]) for p, log in zip(lights, logs)]
    for seen, log in pyotp.run(main):
        assert seen[:3] == log == CYCLE


def test_runs_as_a_script():
    out = subprocess.run([sys.executable, str(_PATH)], capture_output=True, text=True,
                         timeout=60, cwd=str(_PATH.parent))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "light starts at red"
    assert lines[1:7] == ["%-6s -> %-6s (%s)" % t for t in CYCLE * 2]
    nexts = [line.split("-> ")[1] for line in lines if line.startswith("next -> ")]
    assert len(nexts) == 3
    for colour in nexts:
        i = lines.index("next -> " + colour)
        assert lines[i - 1].split()[2] == colour and lines[i - 1].endswith("(next)")
