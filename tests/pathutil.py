"""Paths for tests that start Python subprocesses: children must import the very same
pyotp as the test run (the installed wheel in CI, src/ in a development checkout), never
blindly the source tree, whose compiled core may not be built."""
import os
from pathlib import Path

import pyotp

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PYOTP_HOME = str(Path(pyotp.__file__).resolve().parent.parent)


def child_pythonpath(*extra: str) -> str:
    """PYTHONPATH for a child: where pyotp came from, then `extra`, then the caller's."""
    parts = [PYOTP_HOME, *extra]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)
