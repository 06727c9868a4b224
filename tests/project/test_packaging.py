"""Packaging invariants that hold both in a source checkout and for an installed wheel:
one version, typing files shipped next to the package, and a `_core.pyi` stub that
matches the compiled core (every name, every function's parameters)."""
import ast
import importlib.metadata
import inspect
import re
from pathlib import Path

import pyotp
import pyotp._core as core
from pyotp import _version

PKG_DIR = Path(pyotp.__file__).resolve().parent
STUB = PKG_DIR / "_core.pyi"


def _stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"))


def _stub_names() -> set:
    names = set()
    for node in _stub_tree().body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _stub_functions() -> dict:
    """name -> ast.FunctionDef for module-level functions that are not overloaded."""
    seen: dict = {}
    overloaded = set()
    for node in _stub_tree().body:
        if isinstance(node, ast.FunctionDef):
            if any(isinstance(d, ast.Name) and d.id == "overload" for d in node.decorator_list):
                overloaded.add(node.name)
            seen[node.name] = node
    return {n: f for n, f in seen.items() if n not in overloaded}


def _runtime_names() -> set:
    return {n for n in dir(core)
            if not n.startswith("__") and not inspect.ismodule(getattr(core, n))}


def test_version_has_a_single_source():
    assert pyotp.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", pyotp.__version__)
    try:
        dist = importlib.metadata.distribution("pyotp-actors")
    except importlib.metadata.PackageNotFoundError:
        return      # a source checkout on PYTHONPATH: nothing installed to compare with
    installed_init = Path(str(dist.locate_file("pyotp/__init__.py"))).resolve()
    if installed_init == Path(pyotp.__file__).resolve():
        assert dist.version == pyotp.__version__


def test_typing_files_ship_with_the_package():
    assert (PKG_DIR / "py.typed").is_file()
    assert STUB.is_file()


def test_stub_declares_every_public_name_of_the_core():
    missing = sorted(n for n in _runtime_names() - _stub_names() if not n.startswith("_"))
    assert missing == [], "add these to src/pyotp/_core.pyi: %s" % missing


def test_stub_declares_nothing_the_core_lacks():
    extra = sorted(_stub_names() - _runtime_names())
    assert extra == [], "src/pyotp/_core.pyi declares names pyotp._core does not have: %s" % extra


def test_stub_declares_every_core_name_the_python_layer_uses():
    used = set()
    for path in PKG_DIR.rglob("*.py"):
        used.update(re.findall(r"\b_core\.(\w+)", path.read_text(encoding="utf-8")))
    missing = sorted(used - _stub_names())
    assert missing == [], "the Python layer uses pyotp._core names missing from the stub: %s" % missing


def test_stub_parameters_match_the_compiled_functions():
    mismatches = []
    for name, fn in _stub_functions().items():
        obj = getattr(core, name, None)
        if obj is None or not callable(obj):
            continue
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            continue
        a = fn.args
        stub_params = ([p.arg for p in a.posonlyargs + a.args]
                       + (["*" + a.vararg.arg] if a.vararg else [])
                       + [p.arg for p in a.kwonlyargs])
        rt_params = []
        for p in sig.parameters.values():
            if p.kind is p.VAR_POSITIONAL:
                rt_params.append("*" + p.name)
            elif p.kind is not p.VAR_KEYWORD:
                rt_params.append(p.name)
        if stub_params != rt_params:
            mismatches.append("%s: stub %s, core %s" % (name, stub_params, rt_params))
    assert mismatches == []


def test_an_unbuilt_source_tree_on_the_path_says_how_to_fix_it(tmp_path: Path) -> None:
    # what a newcomer gets with PYTHONPATH=src on a checkout that was never built
    import shutil
    import subprocess
    import sys
    shutil.copytree(PKG_DIR, tmp_path / "pyotp",
                    ignore=shutil.ignore_patterns("_core.*.so", "_core.*.pyd", "_core.so", "__pycache__"))
    proc = subprocess.run([sys.executable, "-c", "import pyotp"], capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path), "PATH": ""}, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: pyotp's compiled core (pyotp._core) is not built in %s."
                           % (tmp_path / "pyotp")), proc.stderr
    assert "make build" in last and "PYTHONPATH" in last


REPO_URL = "https://github.com/pyotp-actors/pyotp-actors"


def test_project_urls_and_the_readme_links_work_on_pypi() -> None:
    # README.md is the PyPI page, where a relative link leads nowhere
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert links and [u for u in links if not u.startswith("https://")] == []
    assert all(u.startswith((REPO_URL + "/", "https://raw.githubusercontent.com/pyotp-actors/"))
               for u in links if "github" in u)
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        try:
            import tomllib
        except ImportError:   # Python 3.10
            import tomli as tomllib
        urls = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["urls"]
    else:                     # the wheel tests: the installed metadata
        urls = dict(u.split(", ", 1) for u in
                    importlib.metadata.metadata("pyotp-actors").get_all("Project-URL") or [])
    assert urls["Source"] == REPO_URL and {"Homepage", "Documentation", "Issues", "Changelog"} <= set(urls)
