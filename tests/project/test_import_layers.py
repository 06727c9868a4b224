"""Imports go one way between the runtime and distribution (issue 12): pyotp.dist imports
the runtime, the runtime never imports pyotp.dist, and ``import pyotp`` leaves
distribution unloaded until it is used. Each check runs in a fresh interpreter so that
modules other tests loaded do not hide an import."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PYOTP = SRC / "pyotp"


def _fresh(code: str) -> object:
    import pyotp     # the child imports the same pyotp as this run (source tree or installed)
    where = str(Path(pyotp.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([where, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _imports(path: Path) -> list:
    """Every module path ``path`` imports (at any depth: lazy imports count), absolute."""
    pkg = ".".join(path.relative_to(SRC).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append(mod)
            found += [mod + "." + a.name for a in node.names]
    return found


def test_import_pyotp_leaves_distribution_unloaded():
    loaded = _fresh("import sys, json, pyotp; "
                    "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pyotp.dist'))))")
    assert loaded == []


def test_lazy_names_still_resolve():
    got = _fresh("import sys, json, pyotp; a = 'pyotp.dist' in sys.modules; "
                 "sd = pyotp.ServiceDiscovery; n = pyotp.Node; "
                 "print(json.dumps([a, 'pyotp.dist' in sys.modules, sd.__module__, n.__name__]))")
    assert got == [False, True, "pyotp.dist.service_discovery", "Node"]


@pytest.mark.parametrize("module", ["runtime.py", "_signals.py"])
def test_runtime_does_not_import_distribution(module):
    bad = [m for m in _imports(PYOTP / module) if m == "pyotp.dist" or m.startswith("pyotp.dist.")]
    assert bad == [], "%s imports %s: the runtime must not depend on distribution" % (module, bad)


def test_distribution_imports_the_runtime_one_way():
    # dist/__init__ imports the runtime (run_node runs on it) ...
    assert "pyotp.runtime" in _imports(PYOTP / "dist" / "__init__.py")
    # ... and importing it first works: no half-initialised module on either side
    got = _fresh("import sys, json; import pyotp.dist as d; import pyotp.runtime as r; "
                 "print(json.dumps([callable(d.run_node), r._launchers['node'].__module__]))")
    assert got == [True, "pyotp"]


def test_run_without_a_launcher_says_so():
    from pyotp import runtime
    old = runtime._launchers.pop("node")
    try:
        with pytest.raises(RuntimeError, match="no launcher registered for 'node'"):
            runtime.run(lambda: None, node="a@127.0.0.1", cookie="x")
    finally:
        runtime.register_launcher("node", old)
    with pytest.raises(TypeError, match="must be callable"):
        runtime.register_launcher("node", 42)
