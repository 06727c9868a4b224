"""Lay tests/ out like the code (issue 16, item 10): test files into tests/core/,
tests/behaviours/, tests/distribution/, tests/apps/ and tests/project/, the shared helper
modules (dist_helpers, pathutil, the roles that child nodes run, ...) into tests/helpers/.

    python tools/relayout_tests.py [--dry-run] [REPO]     # default REPO: this checkout

Idempotent: files already in place are left alone, so it can run again after new flat
test files arrived (from branches written before the move). It uses `git mv` inside a git
work tree (history follows the files), a plain move elsewhere.

Where a file goes: by RULES (first matching prefix), else by KEYWORDS in its name, else
to core/ with a note printed, so a person can move it by hand. Helpers are every non-test
module except conftest.py (which stays in tests/ and puts tests/helpers on sys.path).
Tests still import helpers by bare name (`from dist_helpers import ...`), and the
helpers find the repository root and the suite's folders wherever they sit (pathutil,
dist_helpers): nothing in them changes. A moved test file is one folder deeper, so the
few expressions that locate the repository root or the helpers from `__file__` are
rewritten (REWRITES), as are paths to a helper script (`TESTS / "badarg_grid.py"`); a
child process finds roles in any of the suite's folders (dist_helpers.TEST_DIRS), and
tests/conftest.py puts them all on sys.path. Other files (tests/doctest_pending.txt)
stay in tests/.

References to a test file or helper by its old flat path (`tests/test_x.py` in the docs,
the Makefile, docstrings, other tests) are rewritten to where the file now sits, for every
file of the suite's folders, not only those moved in this run: a branch merged after the
move may bring docs naming an old path (REFERENCE_SUFFIXES says which files are read).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

FOLDERS = ("core", "behaviours", "distribution", "apps", "project")
HELPERS = "helpers"

# (file name prefix, folder); the first match wins
RULES: List[Tuple[str, str]] = [
    ("test_dist_", "distribution"),
    ("test_shm_", "distribution"),            # shared-memory ring and transport
    ("test_examples_", "apps"),
    ("test_editor_", "apps"),
    ("test_user_service", "apps"),
    ("test_dashboard", "apps"),
    ("test_observer", "apps"),
    ("test_demo", "apps"),
    ("test_gen_", "behaviours"),
    ("test_supervis", "behaviours"),          # supervisor, supervision_fault_injection
    ("test_dynamic_supervisor", "behaviours"),
    ("test_task", "behaviours"),
    ("test_registry", "behaviours"),
    ("test_pubsub", "behaviours"),
    ("test_application", "behaviours"),
    ("test_config", "behaviours"),
    ("test_circuit_breaker", "behaviours"),
    ("test_pipeline", "behaviours"),
    ("test_service_discovery", "behaviours"),
    ("test_pool", "behaviours"),
    ("test_partition", "behaviours"),
    ("test_packaging", "project"),
    ("test_cli", "project"),
    ("test_operations", "project"),
    ("test_doc", "project"),                  # doc_blocks, doctests
    ("test_typing", "project"),
    ("test_first_hour", "project"),
    ("test_testing_plugin", "project"),
    ("test_badarg", "core"),
    ("test_processes", "core"),
    ("test_timers", "core"),
    ("test_thread", "core"),                  # threads, thread_misuse
    ("test_mailbox", "core"),
    ("test_etf", "core"),
    ("test_wait_policy", "core"),
    ("test_asyncio", "core"),
    ("test_tracing", "core"),
    ("test_sys", "core"),
    ("test_telemetry", "core"),
    ("test_run_", "core"),
    ("test_unawaited", "core"),
    ("test_alias", "core"),
    ("test_receive", "core"),
    ("test_core_", "core"),                   # core_interfaces
    ("test_otel", "core"),                    # telemetry as OpenTelemetry metrics
    ("test_resp", "core"),                    # the compiled RESP parser
]

# a new file no rule names: the first keyword found in its name decides
KEYWORDS: List[Tuple[str, str]] = [
    ("doc", "project"), ("packag", "project"), ("wheel", "project"), ("typing", "project"),
    ("mypy", "project"), ("stub", "project"), ("readme", "project"),
    ("example", "apps"), ("editor", "apps"), ("dashboard", "apps"), ("observer", "apps"),
    ("kvstore", "apps"), ("user_service", "apps"),
    ("dist", "distribution"), ("node", "distribution"), ("epmd", "distribution"),
    ("rpc", "distribution"), ("erlang", "distribution"), ("elixir", "distribution"),
    ("beam", "distribution"), ("interop", "distribution"), ("cluster", "distribution"),
    ("global", "distribution"), ("atom_cache", "distribution"), ("fragment", "distribution"),
    ("channel", "distribution"), ("handshake", "distribution"), ("net_kernel", "distribution"),
    ("shm", "distribution"), ("transport", "distribution"), ("tls", "distribution"),
    ("remsh", "distribution"),
    ("gen_", "behaviours"), ("supervis", "behaviours"), ("stage", "behaviours"),
    ("statem", "behaviours"), ("event", "behaviours"), ("task", "behaviours"),
    ("registry", "behaviours"), ("pubsub", "behaviours"), ("pool", "behaviours"),
    ("partition", "behaviours"), ("application", "behaviours"), ("config", "behaviours"),
    ("await", "core"), ("thread", "core"), ("wait", "core"), ("mailbox", "core"),
    ("timer", "core"), ("process", "core"), ("etf", "core"), ("signal", "core"),
]

# In a test file moved one folder down: (pattern, replacement), applied in order.
REWRITES: List[Tuple[str, str]] = [
    # the repository root
    (r"Path\(__file__\)\.resolve\(\)\.parent\.parent\b", "Path(__file__).resolve().parents[2]"),
    (r"Path\(__file__\)\.resolve\(\)\.parents\[1\]", "Path(__file__).resolve().parents[2]"),
    (r"os\.path\.dirname\(os\.path\.dirname\(os\.path\.abspath\(__file__\)\)\)",
     "os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))"),
    # "my own folder" meant tests/, where the helpers were: now tests/helpers
    (r"Path\(__file__\)\.resolve\(\)\.parent(?![\w.\[])",
     'Path(__file__).resolve().parents[1] / "%s"' % HELPERS),
    (r"os\.path\.dirname\(__file__\)",
     'os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "%s")' % HELPERS),
]


# text files whose references to tests/NAME.py are rewritten (plus files without suffix
# such as Makefile and .ci/run); the tool itself and anything under .git are left alone
REFERENCE_SUFFIXES = {".py", ".pyi", ".pyx", ".pxi", ".pxd", ".md", ".rst", ".txt",
                      ".toml", ".cfg", ".ini", ".yml", ".yaml", ".sh", ".json", ""}


def folder_for(name: str) -> Tuple[str, bool]:
    """(folder, known): where test file `name` goes, and whether a rule named it."""
    for prefix, folder in RULES:
        if name.startswith(prefix):
            return folder, True
    for word, folder in KEYWORDS:
        if word in name[len("test_"):]:
            return folder, False
    return "core", False


def plan(tests: Path) -> Dict[Path, Path]:
    """source -> destination for every flat file of tests/ not yet in place."""
    moves: Dict[Path, Path] = {}
    for p in sorted(tests.iterdir()):
        if not p.is_file() or p.suffix != ".py" or p.name == "conftest.py":
            continue
        if p.name.startswith("test_"):
            moves[p] = tests / folder_for(p.name)[0] / p.name
        else:
            moves[p] = tests / HELPERS / p.name
    return moves


def rewrite(text: str, helpers: List[str]) -> str:
    for pattern, repl in REWRITES:
        text = re.sub(pattern, lambda m: repl, text)
    # a helper run as a script by its path from the tests folder: TESTS / "badarg_grid.py"
    for name in helpers:
        text = re.sub(r'(\bTESTS\s*/\s*)"%s"' % re.escape(name),
                      lambda m: '%s"%s" / "%s"' % (m.group(1), HELPERS, name), text)
    return text


def _text_files(repo: Path, in_git: bool) -> List[Path]:
    if in_git:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True,
                             check=True).stdout.decode("utf-8", "surrogateescape")
        files = [repo / f for f in out.split("\0") if f]
    else:
        files = [p for p in repo.rglob("*") if ".git" not in p.relative_to(repo).parts]
    me = Path(__file__).resolve()
    return [p for p in files if p.is_file() and not p.is_symlink()
            and p.suffix in REFERENCE_SUFFIXES and p.resolve() != me]


def placed(tests: Path) -> Dict[str, str]:
    """file name -> its folder, for every module already in a folder of the suite."""
    where: Dict[str, str] = {}
    for folder in (*FOLDERS, HELPERS):
        d = tests / folder
        if d.is_dir():
            for p in d.glob("*.py"):
                where[p.name] = folder
    return where


def rewrite_references(repo: Path, in_git: bool, where: Dict[str, str],
                       dry_run: bool) -> List[str]:
    """`tests/NAME.py` -> `tests/FOLDER/NAME.py` in the repository's text files, for each
    NAME -> FOLDER of `where`."""
    if not where:
        return []
    names = "|".join(re.escape(n) for n in sorted(where, key=len, reverse=True))
    # not part of a longer path or name (x_tests/a.py, tests/a.pyc): a path's own slash
    # before tests/ is fine (/abs/path/tests/a.py)
    pattern = re.compile(r"(?<![\w.-])tests/(%s)(?![\w.])" % names)
    report = []
    for path in _text_files(repo, in_git):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        new, n = pattern.subn(lambda m: "tests/%s/%s" % (where[m.group(1)], m.group(1)), text)
        if n:
            report.append("%s: %s %d reference(s) to moved test files"
                          % (path.relative_to(repo), "would rewrite" if dry_run else "rewrote", n))
            if not dry_run:
                path.write_text(new, encoding="utf-8")
    return report


def _git_tracked(repo: Path, path: Path) -> bool:
    r = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=repo,
                       capture_output=True)
    return r.returncode == 0


def relayout(repo: Path, dry_run: bool = False) -> List[str]:
    tests = repo / "tests"
    if not (tests / "conftest.py").is_file():
        raise SystemExit("%s has no tests/conftest.py: not a pyotp checkout" % repo)
    in_git = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=repo,
                            capture_output=True).returncode == 0
    report = []
    moves = plan(tests)
    helpers = sorted(p.name for p in (tests / HELPERS).glob("*.py")) if (tests / HELPERS).is_dir() else []
    helpers = sorted(set(helpers) | {d.name for d in moves.values() if d.parent.name == HELPERS})
    already = placed(tests)
    for src, dst in moves.items():
        folder = dst.parent.name
        # the same name in any folder of the suite: a branch that changed the file before
        # the move and a merge that did not follow the rename; pytest would also refuse
        # two test modules of one name
        if src.name in already:
            raise SystemExit("tests/%s/%s exists already: merge the changes of %s into it "
                             "by hand (then delete %s)" % (already[src.name], src.name,
                                                           src.relative_to(repo), src.relative_to(repo)))
        note = ""
        if src.name.startswith("test_") and not folder_for(src.name)[1]:
            note = "  (no rule names it: placed by keyword/default, check it)"
        report.append("%s -> %s%s" % (src.relative_to(repo), dst.relative_to(repo), note))
        if dry_run:
            continue
        dst.parent.mkdir(exist_ok=True)
        if dst.exists():
            raise SystemExit("%s exists already: merge %s by hand" % (dst, src))
        if in_git and _git_tracked(repo, src):
            subprocess.run(["git", "mv", str(src), str(dst)], cwd=repo, check=True)
        else:
            shutil.move(str(src), str(dst))
        if src.name.startswith("test_"):
            text = dst.read_text(encoding="utf-8")
            new = rewrite(text, helpers)
            if new != text:
                dst.write_text(new, encoding="utf-8")
                report.append("    rewrote the paths found from __file__")
    stale = [p for p in tests.glob("__pycache__")]
    for p in stale:
        if not dry_run:
            shutil.rmtree(p, ignore_errors=True)
    # the references, to every file in a folder now (moved earlier or in this run)
    where = {**placed(tests), **{s.name: d.parent.name for s, d in moves.items()}}
    report += rewrite_references(repo, in_git, where, dry_run)
    if not report:
        report.append("nothing to move: tests/ is laid out already")
    return report


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repo", nargs="?", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")
    args = ap.parse_args(argv)
    for line in relayout(Path(args.repo).resolve(), args.dry_run):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
