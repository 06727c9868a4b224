"""The ``>>>`` examples of pyotp's docstrings run (tests/helpers/doctest_runner.py: inside a node,
top-level ``await`` allowed, shared servers in DOC_WORLD). The docstrings listed in
tests/doctest_pending.txt do not run yet: they are strict xfails, so one that starts
to run fails the suite until its line is removed."""
import re

import pytest

import doctest_runner
from pathutil import TESTS as _TESTS

_PENDING_FILE = _TESTS / "doctest_pending.txt"


def _key(name: str) -> str:
    # Cython names a docstring by its .pyx line too ("... (line 143)"): not stable
    return re.sub(r" \(line \d+\)$", "", name)


def _pending():
    lines = _PENDING_FILE.read_text(encoding="utf-8").splitlines()
    return {l.strip() for l in lines if l.strip() and not l.startswith("#")}


PENDING = _pending()
TESTS = doctest_runner.doctests()
PARAMS = [pytest.param(t, id=_key(t.name), marks=[pytest.mark.xfail(
              strict=True, reason="listed in tests/doctest_pending.txt")] if _key(t.name) in PENDING else [])
          for t in TESTS]


def test_there_are_docstring_examples():
    assert len(TESTS) >= 300
    assert sum(len(t.examples) for t in TESTS) >= 400


def test_pending_names_exist():
    # a stale line (the docstring was renamed or removed) is dropped from the list
    names = {_key(t.name) for t in TESTS}
    assert sorted(PENDING - names) == []


@pytest.mark.parametrize("test", PARAMS)
def test_docstring_examples(test):
    result = doctest_runner.run(test)
    assert result.ok, "\n".join(result.failures)
