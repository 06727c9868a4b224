"""The stream-processing exercise (examples/stream_pipeline.py): a generated event file
through Reader -> Parser -> Enricher -> Aggregator, the Enricher killed in the middle and
restarted by the supervisor, and the windowed aggregates equal to a plain single-pass
reference. A smaller file than the example's default million lines keeps CI short (the
million-line figure is in docs/gen_stage.md)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pyotp

from dist_helpers import child_env

_PATH = Path(__file__).resolve().parents[2] / "examples" / "stream_pipeline.py"
_spec = importlib.util.spec_from_file_location("example_stream_pipeline", _PATH)
ex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ex)


def test_killed_stage_is_restarted_and_aggregates_equal_the_reference(tmp_path):
    lines = 60_000
    r = pyotp.run(ex.main, lines, 3, str(tmp_path), 0.4, 30.0, True)
    assert r["equal"] is True
    victim, after = r["killed"]
    assert lines * 0.4 <= after < lines                      # in the middle of the run
    enrichers = r["starts"]["enricher"]
    assert len(enrichers) == 2 and enrichers[0] == victim and enrichers[1] != victim
    assert len(r["starts"]["reader"]) == 2                   # one_for_all: replay from the checkpoint
    assert r["events_handled"] > lines                       # the open window was replayed...
    rows = (tmp_path / "windows.csv").read_text().splitlines()
    keys = [tuple(row.split(",")[:3]) for row in rows]
    assert len(keys) == len(set(keys))
    assert r["rows"] == r["reference_rows"] == len(rows)     # ...and written once


def test_without_a_kill_and_a_wrong_reference_is_noticed(tmp_path):
    r = pyotp.run(ex.main, 5_000, 1, str(tmp_path), None, 10.0, True)
    assert r["equal"] is True and r["killed"] is None and len(r["starts"]["enricher"]) == 1
    assert r["events_handled"] == 5_000 + 1                  # the events and the end marker
    # the check compares for real: one changed row makes it fail
    path = tmp_path / "windows.csv"
    text = path.read_text().splitlines()
    w, region, etype, count, cents = text[0].split(",")
    text[0] = ",".join([w, region, etype, count, str(int(cents) + 1)])
    path.write_text("\n".join(text) + "\n")
    assert ex.read_results(path) != ex.reference(tmp_path / "events.csv", 10_000)


def test_the_program_prints_progress_and_the_verdict(tmp_path):
    p = subprocess.run([sys.executable, str(_PATH), "--lines", "40000", "--workdir", str(tmp_path)],
                       env=child_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "killing the enricher" in out and "supervisor restarted the stages" in out
    assert "aggregates equal the reference: True" in out
    progress = [l for l in out.splitlines() if "ev/s" in l and "in flight" in l]
    assert progress and "demand: parser" in progress[-1] and "aggregator" in progress[-1]
