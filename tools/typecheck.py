"""mypy --strict over the package and over examples/ (a user's programs against the
stubs): what CI's typing job and tests/project/test_typing.py run.

    python tools/typecheck.py            # from the repository root

The examples need two runs: most are importable as ``examples.*`` from the root (and
examples/api_gateway.py imports ``examples.user_service``), while the distributed ones
import their shared ``distributed_nodes`` module as scripts do, from examples/.
"""
import os
import subprocess
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
SCRIPT_STYLE = ("distributed_", "service_discovery.py")


def runs() -> List[List[str]]:
    ex = ROOT / "examples"
    by_script = sorted(str(p.relative_to(ROOT)) for p in ex.glob("*.py")
                       if p.name.startswith(SCRIPT_STYLE))
    by_package = sorted(str(p.relative_to(ROOT)) for p in ex.iterdir()
                        if (p.suffix == ".py" and not p.name.startswith(SCRIPT_STYLE))
                        or (p.is_dir() and (p / "__init__.py").exists()))
    out = []
    if (ROOT / "src" / "pyotp").is_dir() and (ROOT / "pyproject.toml").is_file():
        out.append(["src"])                         # [tool.mypy] files: src/pyotp, strict
    # (where only tests/, examples/ and tools/ were copied, as for the wheel tests, the
    # examples are checked against the installed package's stubs)
    out.append(["src" + os.pathsep + ".", "--strict", "--explicit-package-bases", *by_package])
    out.append(["src" + os.pathsep + "examples", "--strict", *by_script])
    return out


def main() -> int:
    status = 0
    for path, *args in runs():
        env = dict(os.environ, MYPYPATH=path)
        cmd = [sys.executable, "-m", "mypy", *args]
        print("$ MYPYPATH=%s %s" % (path, " ".join(cmd[1:])), flush=True)
        status |= subprocess.run(cmd, cwd=ROOT, env=env).returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
