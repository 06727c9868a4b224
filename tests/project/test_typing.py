"""Typing: mypy --strict passes over the package and over examples/ (a user's programs
against pyotp's stubs), and the stubs catch what a newcomer gets wrong: a missing
`await` (un-awaited coroutine, or a coroutine where a value is used), and they carry
types through (`start_link` gives a Pid, `pyotp.run` returns main's result type)."""
import os
import subprocess
import sys

import pytest

from pathutil import ROOT


def _env():
    return dict(os.environ, MYPYPATH=str(ROOT / "src"))


@pytest.mark.skipif(not (ROOT / "src" / "pyotp").is_dir(),
                    reason="type-checks the source tree (src/pyotp), absent beside a wheel")
def test_package_and_examples_type_check_strictly():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "typecheck.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.stdout.count("Success: no issues found") == proc.stdout.count("$ MYPYPATH")


def test_stubs_catch_a_forgotten_await(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(
        "import pyotp\n"
        "from pyotp import GenServer\n"
        "\n"
        "async def main() -> int:\n"
        "    pid = await GenServer.start_link(0)\n"
        "    reveal_type(pid)\n"
        "    GenServer.call(pid, 'get')\n"                # line 7: result dropped
        "    n = GenServer.call(pid, 'get')\n"
        "    return n + 1\n"                               # line 9: a coroutine + 1
        "\n"
        "reveal_type(pyotp.run(main))\n")                  # line 11
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(prog)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 1, out
    assert 'prog.py:6: note: Revealed type is "pyotp._core.Pid"' in out, out
    assert "prog.py:7: error" in out and "[unused-coroutine]" in out, out
    assert "prog.py:9: error" in out, out
    assert ('prog.py:11: note: Revealed type is "builtins.int"' in out
            or 'prog.py:11: note: Revealed type is "int"' in out), out
