"""The EventLogger example (examples/event_logger.py): two handlers on one manager, a call
that returns the collected logs, and a crashing handler removed while the other goes on."""
import importlib.util
import logging
from pathlib import Path

import pytest

import pyotp

_PATH = Path(__file__).resolve().parents[2] / "examples" / "event_logger.py"
_spec = importlib.util.spec_from_file_location("example_event_logger", _PATH)
ex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ex)


def test_event_logger_main(capsys, caplog):
    with caplog.at_level(logging.ERROR, logger="pyotp"):
        r = pyotp.run(ex.main)
    assert r["logs"] == [("info", "server started"), ("debug", "loaded 3 plugins"),
                         ("warning", "disk 91% full"), ("error", "request 17 failed"),
                         ("info", "checkpoint")]
    assert r["counts"] == {"debug": 1, "info": 2, "warning": 1, "error": 1}
    assert r["handlers_after_crash"] == [ex.LogCollector]
    assert r["logs_after_crash"] == r["logs"] + [("critical", "core meltdown")]
    assert r["returned_by_delete"] == r["logs_after_crash"]
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "[INFO] server started"
    assert "[CRITICAL] core meltdown" in out
    crash = [rec for rec in caplog.records if "LevelCounter" in rec.getMessage()]
    assert len(crash) == 1 and "unknown level 'critical'" in crash[0].getMessage()


@pytest.mark.pyotp
async def test_many_events_reach_both_handlers_in_order():
    mgr = await ex.EventManager.start_link()
    await ex.EventManager.add_handler(mgr, ex.LogCollector, {})
    await ex.EventManager.add_handler(mgr, ex.LevelCounter, None)
    levels = ex.LevelCounter.LEVELS
    for i in range(2000):
        ex.log(mgr, levels[i % 4], "event %d" % i)
    logs = await ex.EventManager.call(mgr, ex.LogCollector, "get_logs")
    counts = await ex.EventManager.call(mgr, ex.LevelCounter, "counts")
    cleared = await ex.EventManager.call(mgr, ex.LogCollector, "clear")
    empty = await ex.EventManager.call(mgr, ex.LogCollector, "get_logs")
    assert [t for _, t in logs] == ["event %d" % i for i in range(2000)]
    assert counts == {"debug": 500, "info": 500, "warning": 500, "error": 500}
    assert cleared == 2000 and empty == []
