"""Every public function of pyotp, pyotp.etf and pyotp._core (its importable underscore
functions and its classes' methods too) called with a grid of bad arguments: with no
runtime, from another thread, and inside a process on the loop thread. Exceptions are
expected; the interpreter must never die of a signal, and nothing may hang (driver:
tests/helpers/badarg_grid.py, which names the function it was in when it stops)."""
import os
import subprocess
import sys

from pathutil import TESTS, child_pythonpath


def test_no_function_crashes_the_interpreter_on_bad_arguments():
    env = dict(os.environ, PYTHONPATH=child_pythonpath(), PYTHONFAULTHANDLER="1")
    proc = subprocess.run([sys.executable, str(TESTS / "helpers" / "badarg_grid.py")], env=env,
                          capture_output=True, text=True, timeout=300)
    last = [l for l in proc.stderr.splitlines()
            if l.startswith(("no-runtime ", "other-thread ", "loop-thread "))][-1:]
    assert proc.returncode >= 0, "killed by signal %d in %s\n%s" % (
        -proc.returncode, last, proc.stderr[-3000:])
    assert proc.returncode == 0 and "grid ok" in proc.stdout, proc.stderr[-3000:]
