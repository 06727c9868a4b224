"""Annotate the compiled core with ``cython -a``, one report per component.

``src/_core.pyx`` is a list of ``include`` lines, and Cython's HTML report only shows the
lines of the file it was given, so the report of ``_core.pyx`` itself says nothing about
the components. This script inlines the includes into one module under ``build/annotate``
(the same code Cython compiles), annotates it, and prints, per component, the lines with
the highest Python-interaction score (Cython's "yellowness": the number of C lines that
call into the CPython API), so a hot loop that turned yellow stands out.

    python tools/annotate.py                 # summary of every component
    python tools/annotate.py dist_channel    # one component, more lines
    # then open build/annotate/core.html in a browser

Usage in CI is not intended: it is a developer check (see docs/benchmarks.md).
"""
from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
OUT = ROOT / "build" / "annotate"


def flatten() -> Path:
    """Write build/annotate/core.pyx with every include inlined (marked by file)."""
    OUT.mkdir(parents=True, exist_ok=True)
    parts: List[str] = []
    for line in (SRC / "_core.pyx").read_text().splitlines(keepends=True):
        m = re.match(r'include "(.*)"', line)
        if m:
            parts.append("# ==== FILE %s\n" % m.group(1))
            parts.append((SRC / m.group(1)).read_text())
        else:
            parts.append(line)
    for header in (SRC / "core").glob("*.h"):
        shutil.copy(header, OUT / header.name)
    target = OUT / "core.pyx"
    target.write_text("".join(parts))
    return target


def scores(report: Path) -> Dict[str, List[Tuple[int, int, str]]]:
    """component -> [(score, line number in the component, code)] for scored lines."""
    text = report.read_text()
    per: Dict[str, List[Tuple[int, int, str]]] = {}
    current, base = "_core.pyx", 0
    for m in re.finditer(r'<pre class="cython line score-(\d+)"[^>]*>(.*?)</pre>', text, re.S):
        score = int(m.group(1))
        raw = html.unescape(re.sub("<[^>]+>", "", m.group(2)))
        num_code = raw.lstrip("+").split(":", 1)
        if len(num_code) != 2:
            continue
        num, code = int(num_code[0]), num_code[1].rstrip()
        f = re.match(r"\s*# ==== FILE (.*)", code)
        if f:
            current, base = f.group(1), num
            continue
        # signatures and attribute declarations score their argument parsing and property
        # accessors, which are not the code of the line: leave them out
        if score and not code.lstrip().startswith(("def ", "cdef class", "cpdef ", "class ",
                                                   "cdef public ", "cdef readonly ")):
            per.setdefault(current, []).append((score, num - base, code))
    return per


def main(argv: List[str]) -> int:
    src = flatten()
    r = subprocess.run([sys.executable, "-m", "cython", "-3", "-a", str(src), "-o", str(OUT / "core.c")],
                       capture_output=True, text=True)
    if r.returncode:
        sys.stderr.write(r.stderr)
        return r.returncode
    per = scores(OUT / "core.html")
    only = argv[0] if argv else None
    for comp, rows in per.items():
        if only and only not in comp:
            continue
        rows.sort(reverse=True)
        print("%s: %d lines touch the CPython API; heaviest:" % (comp, len(rows)))
        for score, num, code in rows[:25 if only else 5]:
            print("  %4d  line %4d  %s" % (score, num, code.strip()[:90]))
    print("report: %s" % (OUT / "core.html"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
