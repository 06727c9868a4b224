"""Paths for tests that start Python subprocesses: children must import the very same
pyotp as the test run (the installed wheel in CI, src/ in a development checkout), never
blindly the source tree, whose compiled core may not be built."""
import os
from pathlib import Path

import pyotp

def _tests_root() -> Path:
    """tests/, wherever this helper sits in it (tests/ or tests/helpers/, see
    tools/relayout_tests.py): the nearest folder up named tests."""
    here = Path(__file__).resolve().parent
    return next((p for p in (here, *here.parents) if p.name == "tests"), here)


TESTS = _tests_root()
# every folder of the suite holding modules (children import roles and helpers by name)
TEST_DIRS = [str(TESTS)] + sorted(str(p) for p in TESTS.iterdir()
                                  if p.is_dir() and not p.name.startswith((".", "_")))
ROOT = TESTS.parent
PYOTP_HOME = str(Path(pyotp.__file__).resolve().parent.parent)


def child_pythonpath(*extra: str) -> str:
    """PYTHONPATH for a child: where pyotp came from, then `extra`, then the caller's."""
    parts = [PYOTP_HOME, *extra]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)
