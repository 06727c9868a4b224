"""docs/interop.md stays true: every feature it says works (or works with a stated
difference) names a test that runs it against real Erlang/Elixir, and that test exists."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rows():
    with open(os.path.join(ROOT, "docs", "interop.md"), encoding="utf-8") as f:
        for line in f:
            if not line.startswith("| ") or line.startswith("| ---") or line.startswith("| feature"):
                continue
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            yield cells


def test_every_working_feature_names_an_existing_test():
    rows = list(_rows())
    assert len(rows) > 20
    for feature, status, _notes, test in rows:
        assert status in ("works", "differs", "no"), (feature, status)
        if status == "no":
            continue
        m = re.fullmatch(r"`(tests/[\w/]+\.py)::(\w+)`", test)
        assert m, "%r (%s) names no test" % (feature, status)
        with open(os.path.join(ROOT, m.group(1)), encoding="utf-8") as f:
            assert re.search(r"^(?:async )?def %s\(" % m.group(2), f.read(), re.M), "%s is gone" % test
